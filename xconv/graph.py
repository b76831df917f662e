"""The one graph form every pass shares: a spec (nested Sequentials, fork-join combinators and the named
references ``Use``) unrolled into nodes in topological order. Each node is a :class:`~xconv.shapes.LayerInfo`: a layer or a join (Add, Concat,
Multiply), the indices of the nodes it reads (-1 for the model's input), its key, positional path and shapes.
A chain is the one-path case: node i reads node i - 1 and its key is ``str(i)``.

Shape inference, every backend, the canonical weights, the equivalence checker and the importers work on this
list; nothing else walks the nested spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import layout
from ._info import LayerInfo, Shape, _Ctx
from .errors import SpecError
from .kinds import KINDS
from .spec import Layer, Sequential
from .spec._sequential import Combinator, Concat, DotProductAttention, Use

__all__ = [
    "SIDE_INPUTS",
    "Graph",
    "build_graph",
    "consumers",
    "is_chain",
    "model_outputs",
    "reads_side",
    "returns_list",
    "side_inputs",
    "takes_padding_mask",
    "token_type_count",
    "token_vocabulary",
    "upstreams",
]

Graph = list[LayerInfo]


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[LayerInfo] = []
        self.keys: dict[str, str] = {}  # key -> positional path that took it
        self.outputs: dict[str, int] = {}  # key -> the node computing that part's output (for Use)

    def claim(self, key: str, path: str, what: str) -> None:
        if key in self.keys:
            other = self.keys[key]
            raise SpecError(
                f"the key {key!r} names two parts of the spec ({what} at path {path or '(top)'} and the part at path "
                f"{other}); names must be unique and must not equal another part's positional path"
            )
        self.keys[key] = path

    def shape(self, node: int, input_shape: Shape) -> Shape:
        return input_shape if node < 0 else self.nodes[node].output_shape

    def source(self, node: int) -> Any:
        return None if node < 0 else self.nodes[node].output_source

    def item(self, item: Any, node: int, key: str, path: str, input_shape: Shape) -> tuple[int, Any]:
        """Append the nodes of ``item`` reading node ``node``; (its output node, the resolved item)."""
        if isinstance(item, Use):
            if item.source is None:
                return -1, item
            if item.source not in self.outputs:
                known = "an earlier part's key" if not self.outputs else f"one of {sorted(self.outputs)[:8]}"
                raise SpecError(
                    f"Use at path {path}: no part named {item.source!r} is computed before it; a Use reads an "
                    f"earlier layer's, named Sequential's or combinator's output ({known})"
                )
            return self.outputs[item.source], item
        if isinstance(item, Layer):
            if item.name is not None:
                key = item.name
            self.claim(key, path, f"{item.kind}")
            kind = KINDS.get(type(item))
            if kind is None:
                raise SpecError(f"layer {key} ({item.kind}): no shape rule for this layer kind")
            shape = self.shape(node, input_shape)
            if kind.ids and node >= 0 and not _makes_ids(self.nodes[node]):
                raise SpecError(
                    f"layer {key} ({item.kind}): it reads token ids, which only the model's input (and the ids "
                    "computed from it, PaddedPositions) holds; it must read those (put it first, or read the input "
                    "with Use())"
                )
            if node >= 0 and _makes_ids(self.nodes[node]) and not kind.ids:
                raise SpecError(
                    f"layer {key} ({item.kind}): its input is token ids ({self.nodes[node].label}); only layers "
                    "that look ids up (Embedding) read them"
                )
            if len(shape) == 2 and not kind.tokens:
                raise SpecError(
                    f"layer {key} ({item.kind}): its input is a token tensor {shape} (tokens, features), which "
                    f"a {item.kind} does not take"
                )
            info = kind.shape(_Ctx(len(self.nodes), item, shape, key), item, self.source(node))
            info = dataclasses.replace(info, key=key, path=path, inputs=(node,), input_shapes=(shape,))
            self.nodes.append(info)
            self.outputs[key] = len(self.nodes) - 1
            return len(self.nodes) - 1, info.layer
        if isinstance(item, Sequential):
            if item.name is not None:
                key = item.name
                self.claim(key, path, "Sequential")
            parts = []
            for i, child in enumerate(item.layers):
                node, resolved = self.item(child, node, _join(key, i), _join(path, i), input_shape)
                parts.append(resolved)
            if item.name is not None:
                self.outputs[key] = node
            return node, Sequential(*parts, name=item.name)
        assert isinstance(item, Combinator)
        if item.name is not None:
            key = item.name
        outs, parts = [], []
        for i, branch in enumerate(item.branches):
            out, resolved = self.item(branch, node, _join(key, i), _join(path, i), input_shape)
            outs.append(out)
            parts.append(resolved)
        self.claim(key, path, item.kind)
        shapes_in = [self.shape(o, input_shape) for o in outs]
        info = join_rule(item, key, len(self.nodes), shapes_in, [self.source(o) for o in outs])
        info = dataclasses.replace(info, key=key, path=path, inputs=tuple(outs), input_shapes=tuple(shapes_in))
        self.nodes.append(info)
        self.outputs[key] = len(self.nodes) - 1
        return len(self.nodes) - 1, item.rebuild(parts, item.name)


def _join(prefix: str, index: int) -> str:
    return f"{prefix}.{index}" if prefix else str(index)


def build_graph(spec: Sequential, input_shape: Shape) -> tuple[Graph, Sequential]:
    """(nodes in topological order, the spec with inferred fields filled in and ``input_shape`` set)."""
    builder = _Builder()
    parts = []
    node = -1
    for i, item in enumerate(spec.layers):
        node, resolved = builder.item(item, node, str(i), str(i), input_shape)
        parts.append(resolved)
    if node != len(builder.nodes) - 1 or not builder.nodes:
        raise SpecError(
            "the spec ends with a Use of an earlier part (or of the input): its last part must compute the "
            "model's output"
        )
    places = _places(spec, builder)
    for node, place in places.items():
        builder.nodes[node] = dataclasses.replace(builder.nodes[node], output=place)
    readers = consumers(builder.nodes)
    last = len(builder.nodes) - 1
    unread = [info for info in builder.nodes if not readers[info.index] and info.index not in places]
    unread = [info for info in unread if info.index != last or places]
    if unread:
        returned = "one of the model's outputs" if places else "the model's output"
        raise SpecError(
            f"the output of {unread[0].label} is never read: a Use after it goes on from another part, and no "
            f"later part reads it{' and it is not one of the outputs' if places else ''} (every part must lead "
            f"to {returned})"
        )
    # a layer scale is a parameter of the torch module at its key (torchvision's CNBlock.layer_scale), not a
    # module: other parts may sit under its key, but not under its parameter's
    layer_keys = {info.key for info in builder.nodes if not info.is_join and info.kind != "LayerScale"}
    scale_keys = {f"{info.key}.layer_scale" for info in builder.nodes if info.kind == "LayerScale"}
    layer_keys |= scale_keys
    for key in builder.keys:
        parts_of = key.split(".")
        for cut in range(1, len(parts_of) + 1):
            prefix = ".".join(parts_of[:cut])
            if prefix in (layer_keys if cut < len(parts_of) else scale_keys):
                raise SpecError(
                    f"the key {key!r} lies under the layer {prefix!r}: a layer's key cannot also be the prefix of "
                    "another part's key (in torch the layer would have to contain it)"
                )
    _check_source_keys(builder.nodes)
    _check_ids(builder.nodes, readers)
    _check_padding_masks(builder.nodes, input_shape)
    return builder.nodes, Sequential(*parts, input_shape=input_shape, name=spec.name, outputs=spec.outputs)


def _places(spec: Sequential, builder: _Builder) -> dict[int, int]:
    """node -> its place in the list the model returns (a spec with ``outputs``; else empty)."""
    places: dict[int, int] = {}
    for place, key in enumerate(spec.outputs or ()):
        if key not in builder.outputs:
            known = sorted(builder.outputs)
            raise SpecError(
                f"outputs names {key!r}, which is no part's key; a model returns the outputs of its layers, named "
                f"Sequentials or combinators, by key (the spec has {len(known)}: {', '.join(known[:8])}"
                f"{', ...' if len(known) > 8 else ''})"
            )
        node = builder.outputs[key]
        if node in places:
            other = next(k for k in spec.outputs or () if builder.outputs[k] == node)
            raise SpecError(f"outputs names {other!r} and {key!r}, which are the same tensor; each output is one")
        places[node] = place
    return places


def model_outputs(graph: Graph) -> list[LayerInfo]:
    """The nodes whose outputs the model returns, in order: a spec's ``outputs``, else its last node alone."""
    listed = sorted((info for info in graph if info.output is not None), key=lambda info: int(info.output or 0))
    return listed or [graph[-1]]


def upstreams(infos: Graph, upstream: Any) -> list[Any]:
    """One upstream array per output of the model (a list for a model with several, else the one array)."""
    if not returns_list(infos):
        return [upstream]
    count = len(model_outputs(infos))
    if not isinstance(upstream, (list, tuple)) or len(upstream) != count:
        raise ValueError(f"the model has {count} outputs, so the upstream gradient is a list of {count} arrays")
    return list(upstream)


def returns_list(graph: Graph) -> bool:
    """Whether the model returns a list of outputs (its spec names ``outputs``) rather than one tensor."""
    return any(info.output is not None for info in graph)


def _check_ids(graph: Graph, readers: dict[int, list[int]]) -> None:
    """A model's input is token ids or numbers: layers that read ids and other layers cannot share it. Ids
    computed from ids (positions) are looked up in tables that hold them."""
    for info in graph:
        if _makes_ids(info):
            bound = int(info.input_shape[0]) + int(info.layer.padding_idx)  # type: ignore[attr-defined]
            for j in readers[info.index]:
                rows = int(getattr(graph[j].layer, "num_embeddings", 0))
                if rows <= bound:
                    raise SpecError(
                        f"{graph[j].label} looks up the positions of {info.label}, which reach {bound}, in {rows} rows"
                    )
    first = [graph[i] for i in readers[-1]]
    ids = [info for info in first if _reads_ids(info)]
    if ids and len(ids) != len(first):
        other = next(info for info in first if info not in ids)
        raise SpecError(
            f"{other.label} reads the model's input, which {ids[0].label} reads as token ids (integers); "
            "only layers that look ids up (Embedding) may read token ids"
        )


def token_vocabulary(graph: Graph) -> int | None:
    """When the model's input is token ids (read by Embedding layers): the number of ids valid for every one of
    them (the smallest vocabulary), which random batches draw below; None when the input is numbers."""
    readers = [info for info in graph if info.inputs == (-1,) and _reads_ids(info)]
    sizes = [int(getattr(info.layer, "num_embeddings", 0)) for info in readers]
    if any(sizes):
        return min(size for size in sizes if size)
    return 2**31 - 1 if readers else None  # (positions alone read the ids: any ids are valid)


#: What a text encoder may take beside its token ids, (N, L) integers each, in the order models take them (a
#: torch forward's arguments after the ids, a Keras model's inputs after the ids). Each is read by the layers
#: whose attribute of that name is True: SelfAttention's ``padding_mask`` (1 for a token, 0 for padding) and
#: TokenTypeEmbedding's ``token_types`` (each token's type).
SIDE_INPUTS = ("padding_mask", "token_types")


def reads_side(info: LayerInfo) -> str | None:
    """The side input (see :data:`SIDE_INPUTS`) the layer node ``info`` reads, if any."""
    if info.is_join:
        return None
    return next((name for name in SIDE_INPUTS if getattr(info.layer, name, False) is True), None)


def side_inputs(graph: Graph) -> tuple[str, ...]:
    """The side inputs the model takes (some layer reads each), in order."""
    read = {reads_side(info) for info in graph}
    return tuple(name for name in SIDE_INPUTS if name in read)


def takes_padding_mask(graph: Graph) -> bool:
    """Whether the model takes a padding mask beside its token ids (an attention reads it)."""
    return "padding_mask" in side_inputs(graph)


def token_type_count(graph: Graph) -> int | None:
    """When the model takes token types: how many types every layer that reads them holds (random types are
    drawn below it); None when it takes none."""
    sizes = [int(info.layer.types) for info in graph if reads_side(info) == "token_types"]  # type: ignore[attr-defined]
    return min(sizes) if sizes else None


def _check_padding_masks(graph: Graph, input_shape: Shape) -> None:
    """A padding mask and token types mark the model's token ids: a layer that reads one reads it for those
    tokens."""
    for info in graph:
        read = reads_side(info)
        if read is None:
            continue
        what = {"padding_mask": "a padding mask marks the padding", "token_types": "token types are the types"}
        if token_vocabulary(graph) is None:
            raise SpecError(
                f"{info.label}: {read}=True, but the model does not take token ids ({what[read]} among them; "
                "its input is read by Embedding layers)"
            )
        if info.input_shape[0] != input_shape[0]:
            raise SpecError(
                f"{info.label}: {read}=True over {info.input_shape[0]} tokens, but the model takes "
                f"{input_shape[0]} token ids: {read} marks those (a token put in front shifts them)"
            )


def _makes_ids(info: LayerInfo) -> bool:
    kind = None if info.is_join else KINDS.get(type(info.layer))
    return kind is not None and kind.makes_ids


def _reads_ids(info: LayerInfo) -> bool:
    kind = None if info.is_join else KINDS.get(type(info.layer))
    return kind is not None and kind.ids


def _check_source_keys(graph: Graph) -> None:
    """Each layer's ``keys`` name its own parameters, and no source key is another weight's key or used twice."""
    canonical = {f"{info.key}.{p}" for info in graph for p in info.params}
    seen: set[str] = set()
    for info in graph:
        for param, keys in getattr(info.layer, "keys", ()):
            if param not in info.params:
                raise SpecError(
                    f"{info.label}: keys names {param!r}, which is not one of its weights "
                    f"({', '.join(info.params) or 'it has none'})"
                )
            for key in (keys,) if isinstance(keys, str) else keys:
                if key in canonical or key in seen:
                    raise SpecError(f"{info.label}: the source key {key!r} is already the key of another weight")
                seen.add(key)


def consumers(graph: Graph) -> dict[int, list[int]]:
    """Node index (-1: the input) -> the indices of the nodes that read it, in order (with repeats)."""
    out: dict[int, list[int]] = {i: [] for i in range(-1, len(graph))}
    for info in graph:
        for j in info.inputs:
            out[j].append(info.index)
    return out


def is_chain(graph: Graph) -> bool:
    """Whether the graph is a plain chain of positionally keyed layers (node i reads node i - 1, key "i")."""
    return all(info.inputs == (info.index - 1,) and info.key == str(info.index) for info in graph)


def join_rule(combinator: Combinator, key: str, index: int, shapes_in: list[Shape], sources: list[Any]) -> LayerInfo:
    """Shape rule of an Add / Multiply (numpy broadcasting of size-1 dimensions, equal ranks), Concat or
    DotProductAttention."""

    def error(message: str) -> SpecError:
        listed = ", ".join(str(tuple(s)) for s in shapes_in)
        return SpecError(f"{combinator.kind} {key}: {message}; branch output shapes: {listed}")

    if isinstance(combinator, DotProductAttention):
        if any(len(s) != 2 for s in shapes_in):
            raise error("queries, keys and values must be token tensors (tokens, features)")
        (length, e), (s_k, e_k), (s_v, e_v) = shapes_in
        heads = combinator.num_heads
        if e != e_k or s_k != s_v:
            raise error("the keys must have the queries' features and the values' number of tokens")
        if e % heads or e_v % heads:
            raise error(f"num_heads={heads} must divide the queries' {e} and the values' {e_v} features")
        params: dict[str, Shape] = {}
        fixed: tuple[str, ...] = ()
        if combinator.bias_grid is not None:
            (h, w), stride = combinator.bias_grid, combinator.bias_stride
            queries = -(-h // stride) * -(-w // stride)
            if s_k != h * w or length != queries:
                raise error(
                    f"bias_grid={combinator.bias_grid} with bias_stride={stride} needs {h * w} keys and "
                    f"{queries} queries; it has {s_k} and {length}"
                )
            params["attention_biases"] = (heads, h * w)
            if combinator.state_index:
                params["attention_bias_idxs"] = (length, s_k)
                fixed = ("attention_bias_idxs",)
        return LayerInfo(index, combinator, shapes_in[0], (length, e_v), params, buffers=fixed, fixed=fixed)  # type: ignore[arg-type]
    ranks = {len(s) for s in shapes_in}
    if len(ranks) != 1:
        raise error("branch outputs must have the same rank (all (C, H, W) maps or all flat)")
    rank = ranks.pop()
    if isinstance(combinator, Concat):
        axis = combinator.dim % (rank + 1) if -(rank + 1) <= combinator.dim <= rank else None
        if axis is None or axis == 0:
            raise error(f"dim={combinator.dim} is not a non-batch axis of an (N, *{shapes_in[0]}) tensor")
        others = {tuple(s[: axis - 1]) + tuple(s[axis:]) for s in shapes_in}
        if len(others) != 1:
            raise error(f"outputs must agree in every dimension but dim {axis}")
        out = list(shapes_in[0])
        out[axis - 1] = sum(s[axis - 1] for s in shapes_in)
        source = None
        if rank == 1 and any(src is not None for src in sources):
            source = tuple(b for s, src in zip(shapes_in, sources) for b in layout.source_blocks(src, s[0]))
        return LayerInfo(index, combinator, shapes_in[0], tuple(out), {}, input_source=None, output_source=source)  # type: ignore[arg-type]
    out = []
    for dim in zip(*shapes_in):
        sizes = {d for d in dim if d != 1}
        if len(sizes) > 1:
            raise error("dimensions must be equal or 1 (numpy broadcasting)")
        out.append(sizes.pop() if sizes else 1)
    source = None
    if rank == 1:
        full = [src for s, src in zip(shapes_in, sources) if s[0] == out[0] and out[0] > 1]
        perms = [layout.flatten_permutation(src) for src in full]
        if any((p is None) != (perms[0] is None) or (p is not None and not (p == perms[0]).all()) for p in perms):
            raise error(
                "flat branches hold features in different orders (flattened from different maps or "
                "concatenated differently); their sum or product is not the same function in NHWC"
            )
        source = full[0] if full else None
    return LayerInfo(index, combinator, shapes_in[0], tuple(out), {}, output_source=source)  # type: ignore[arg-type]


def concat_axis(info: LayerInfo) -> int:
    """The NCHW (or (N, F)) axis, 1..3, of a Concat node."""
    rank = len(info.input_shape) + 1
    return info.layer.dim % rank  # type: ignore[attr-defined, no-any-return]
