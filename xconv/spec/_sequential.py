"""Containers: the Sequential chain, the fork-join combinators (Add, Concat, Multiply, Subtract, and the attention
of three token tensors, DotProductAttention), the named
reference ``Use`` that lets any part read any earlier tensor (a DAG), and their JSON form."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from .._layer import LAYER_TYPES, Layer
from .._normalize import as_bool, as_float, as_int, as_name, as_pair, as_shape
from ..errors import SpecError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Add",
    "Combinator",
    "Concat",
    "DotProductAttention",
    "Item",
    "Multiply",
    "Sequential",
    "Subtract",
    "Use",
    "from_dict",
]

FORMAT = "xconv.spec"
#: 2: nested containers, combinators and names; version 1 files (flat chains) still load
FORMAT_VERSION = 2
#: the version of a spec with ``outputs`` (a model returning a list): a reader that knows only version 2
#: refuses it, where it would drop the outputs and return the last part's alone
OUTPUTS_VERSION = 3


@dataclasses.dataclass(frozen=True, init=False)
class Use:
    """A named reference: the chain goes on from the output of the earlier part named ``source`` (a layer's,
    a named Sequential's or a combinator's key), or from the model's input when ``source`` is None, instead
    of from the item before it. As in Keras' functional API, this lets one tensor be read by any number of
    later parts, so a spec holds any DAG; the fork-join combinators are the nested case, where every tensor
    is read inside one block.

    A ``Use`` computes nothing and has no weights. The part it names must come before it (in the order the
    spec is read: a combinator's branches in order, then its join).

    >>> from xconv import Add, Conv2d, Identity, ReLU
    >>> spec = Sequential(
    ...     Conv2d(3, 8, 3, padding=1, name="stem"),
    ...     Add(Conv2d(8, 8, 3, padding=1), Identity(), name="block1"),
    ...     Add(Sequential(Use("stem"), ReLU()), Identity()),  # reads the stem's output a second time
    ...     input_shape=(3, 8, 8),
    ... )
    >>> spec.layers[2].branches[0].layers[0]
    Use(source='stem')
    """

    source: str | None

    def __init__(self, source: str | None = None) -> None:
        object.__setattr__(self, "source", as_name("Use", source))

    @property
    def kind(self) -> str:
        return "Use"

    @property
    def name(self) -> None:
        """A reference has no name of its own (nothing can refer to it)."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "Use", "source": self.source}


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Sequential:
    """A chain of layer specs, combinators and named sub-chains, optionally with its logical input shape
    ``(C, H, W)`` (or ``(features,)``) and a ``name``.

    An unnamed nested ``Sequential`` is flattened into its parent (so chains keep their positional keys
    ``"0.weight"``, ``"1.weight"``, ...); a named one stays one element. The input shape may instead be given
    to ``build`` or ``summary``.

    The model's output is its last part's. With ``outputs`` (the top-level Sequential only), the model returns
    a list instead: the outputs of the parts with those keys (layers, named Sequentials, combinators), in that
    order, as a backbone's feature maps for a dense-prediction head. Every part must then lead to one of them.

    >>> from xconv import Conv2d, ReLU, Flatten, Linear
    >>> spec = Sequential(Conv2d(3, 8, 3, padding=1), ReLU(), Flatten(), Linear(None, 10), input_shape=(3, 8, 8))
    >>> len(spec)
    4
    """

    layers: tuple[Item, ...]
    input_shape: tuple[int, ...] | None
    name: str | None
    #: the keys of the parts whose outputs the model returns, as a list, in order (None: the last part's alone)
    outputs: tuple[str, ...] | None

    def __init__(
        self,
        *layers: Item,
        input_shape: Iterable[int] | None = None,
        name: str | None = None,
        outputs: Iterable[str] | None = None,
    ) -> None:
        flat: list[Item] = []
        for position, layer in enumerate(layers):
            if isinstance(layer, Sequential) and layer.outputs is not None:
                raise SpecError(
                    f"Sequential: the nested Sequential at position {position} has outputs={list(layer.outputs)}; "
                    "only the top-level Sequential says which parts the model returns"
                )
            if isinstance(layer, Sequential):
                if layer.input_shape is not None and position > 0:
                    raise SpecError(
                        f"Sequential: a nested Sequential at position {position} has input_shape="
                        f"{layer.input_shape}; only the first one may carry an input shape"
                    )
                if layer.input_shape is not None and input_shape is None:
                    input_shape = layer.input_shape
                if not layer.layers:
                    raise SpecError(f"Sequential: the nested Sequential at position {position} is empty")
                if layer.name is None:
                    flat.extend(layer.layers)
                else:
                    flat.append(layer.with_input_shape(None, drop=True))
            elif isinstance(layer, (Layer, Combinator, Use)):
                flat.append(layer)
            else:
                raise SpecError(
                    f"Sequential: position {position} must be a layer spec such as xconv.Conv2d(...), a "
                    f"Sequential, a combinator (Add, Concat, Multiply) or a Use. Received: {layer!r} of type "
                    f"{type(layer).__name__}"
                )
        object.__setattr__(self, "layers", tuple(flat))
        shape = None if input_shape is None else as_shape("Sequential", input_shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "name", as_name("Sequential", name))
        object.__setattr__(self, "outputs", _outputs(outputs))

    @property
    def kind(self) -> str:
        return "Sequential"

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.layers)

    def __getitem__(self, index: int) -> Item:
        return self.layers[index]

    def __repr__(self) -> str:
        return _repr(self, 0)

    def with_input_shape(self, input_shape: Iterable[int] | None, drop: bool = False) -> Sequential:
        """The same layers with ``input_shape`` replaced (``None`` keeps the current one, or with ``drop``
        removes it)."""
        if input_shape is None and not drop:
            return self
        out = object.__new__(Sequential)
        object.__setattr__(out, "layers", self.layers)
        object.__setattr__(out, "input_shape", None if input_shape is None else as_shape("Sequential", input_shape))
        object.__setattr__(out, "name", self.name)
        object.__setattr__(out, "outputs", self.outputs)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``xconv.from_dict`` turns it back into an equal spec."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION if self.outputs is None else OUTPUTS_VERSION,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "name": self.name,
            "layers": [_item_dict(layer) for layer in self.layers],
            **({} if self.outputs is None else {"outputs": list(self.outputs)}),
        }


def _outputs(outputs: Iterable[str] | None) -> tuple[str, ...] | None:
    if outputs is None:
        return None
    if isinstance(outputs, str) or not isinstance(outputs, Iterable):
        raise SpecError(f"Sequential: outputs must be a list of part keys. Received: {outputs!r}")
    keys = tuple(outputs)
    bad = [k for k in keys if not isinstance(k, str) or not k]
    if not keys or bad:
        raise SpecError(
            f"Sequential: outputs must be a non-empty list of part keys (strings). Received: {list(keys)!r}"
        )
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SpecError(f"Sequential: outputs names {twice[0]!r} twice; each output is one part's")
    return keys


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Combinator:
    """Base of the fork-join combinators: every branch receives the combinator's input; the branch outputs
    are joined. A branch is a layer spec, a ``Sequential`` without input shape, or another combinator."""

    branches: tuple[Item, ...]
    name: str | None

    def __init__(self, *branches: Item, name: str | None = None) -> None:
        me = type(self).__name__
        if len(branches) < 2:
            raise SpecError(f"{me}: needs at least two branches. Received: {len(branches)}")
        out: list[Item] = []
        for position, branch in enumerate(branches):
            if isinstance(branch, Sequential):
                if branch.input_shape is not None:
                    raise SpecError(
                        f"{me}: branch {position} is a Sequential with input_shape={branch.input_shape}; "
                        "branches take the combinator's input and carry no input shape"
                    )
                if not branch.layers:
                    raise SpecError(f"{me}: branch {position} is an empty Sequential; use xconv.Identity() for a skip")
            elif not isinstance(branch, (Layer, Combinator, Use)):
                raise SpecError(
                    f"{me}: branch {position} must be a layer spec, a Sequential, a combinator or a Use. Received: "
                    f"{branch!r} of type {type(branch).__name__}"
                )
            out.append(branch)
        object.__setattr__(self, "branches", tuple(out))
        object.__setattr__(self, "name", as_name(me, name))

    @property
    def kind(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return _repr(self, 0)

    def _extra(self) -> dict[str, Any]:
        return {}

    def rebuild(self, branches: Iterable[Item], name: str | None) -> Combinator:
        """The same combinator (kind and dim) over other branches and name."""
        return type(self)(*branches, name=name, **self._extra())


class Add(Combinator):
    """The sum of the branches' outputs. Size-1 dimensions broadcast as in numpy on the logical shape (a
    ``(C, 1, 1)`` branch adds to a ``(C, H, W)`` one); ranks must agree.

    >>> from xconv import Conv2d, Identity
    >>> Add(Conv2d(8, 8, 3, padding=1), Identity())
    Add(
        Conv2d(8, 8, kernel_size=3, padding=1),
        Identity(),
    )
    """


class Multiply(Combinator):
    """The elementwise product of the branches' outputs, broadcasting size-1 dimensions as :class:`Add` does
    (squeeze-excitation: a ``(C, 1, 1)`` gate times the ``(C, H, W)`` map).

    >>> from xconv import AdaptiveAvgPool2d, Conv2d, Identity, Sigmoid
    >>> Multiply(Identity(), Sequential(AdaptiveAvgPool2d(1), Conv2d(8, 8, 1), Sigmoid()))  # a (8, 1, 1) gate
    Multiply(
        Identity(),
        Sequential(
            AdaptiveAvgPool2d(1),
            Conv2d(8, 8, kernel_size=1),
            Sigmoid(),
        ),
    )
    """


class Subtract(Combinator):
    """The first branch's output minus the second's (exactly two branches), broadcasting as :class:`Add` does:
    torch's ``a - b``, Keras' ``Subtract``.

    >>> from xconv import AdaptiveAvgPool2d, Identity
    >>> Subtract(Identity(), AdaptiveAvgPool2d(1))  # each channel minus its mean
    Subtract(
        Identity(),
        AdaptiveAvgPool2d(1),
    )
    """

    def __init__(self, *branches: Item, name: str | None = None) -> None:
        if len(branches) != 2:
            raise SpecError(f"Subtract: needs exactly two branches (a - b). Received: {len(branches)}")
        super().__init__(*branches, name=name)


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Concat(Combinator):
    """The branches' outputs concatenated along ``dim``, numbered as torch numbers the (N, C, H, W) / (N, F)
    tensor: 1 is channels (features of a flat input), 2 and 3 are H and W; negative dims count from the end.
    The other dimensions must agree.

    >>> from xconv import Conv2d, Identity
    >>> Concat(Identity(), Conv2d(16, 8, 1))  # (16, H, W) -> (24, H, W)
    Concat(
        Identity(),
        Conv2d(16, 8, kernel_size=1),
        dim=1,
    )
    """

    dim: int

    def __init__(self, *branches: Item, dim: int = 1, name: str | None = None) -> None:
        super().__init__(*branches, name=name)
        d = as_int("Concat", "dim", dim)
        if d in (0, -4):
            raise SpecError(f"Concat: `dim` must not be the batch axis. Received: dim={dim!r}")
        object.__setattr__(self, "dim", d)

    def _extra(self) -> dict[str, Any]:
        return {"dim": self.dim}


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class DotProductAttention(Combinator):
    """Multi-head scaled dot-product attention of three token tensors, the outputs of its branches: queries
    (L, E), keys (S, E) and values (S, Ev). Each is cut into ``num_heads`` heads of consecutive features
    (head h is features h*d to (h+1)*d); per head, ``softmax(q k^T * scale) v`` over the S keys, with
    ``scale`` = d ** -0.5 unless given (d: the queries' features per head); ``dropout`` drops attention
    weights in training (as ``dropout_p`` does); the heads' outputs side by side give (L, Ev). torch's
    ``F.scaled_dot_product_attention`` on the heads split out by ``x.reshape(N, L, heads, d).transpose(1, 2)``
    and merged back by ``.transpose(1, 2).reshape(N, L, Ev)``;
    in Keras, xconv's layer on [queries, keys, values], in ``keras.ops``. The projections are the branches' own
    layers (spatial-reduction attention computes its keys from a strided conv of the map).

    ``bias_grid=(H, W)``: the keys are the H*W tokens of a map, row by row, and a learned bias per head and
    relative offset is added to the scores (LeViT's, EfficientFormer's, TinyViT's ``attention_biases``): the
    weight ``attention_biases`` (heads, H*W); between query i, at the point (y, x) * ``bias_stride`` of the
    map (the queries: the map's points taken every ``bias_stride`` rows and columns, row by row), and key j at
    (y', x'), the bias ``attention_biases[:, |y - y'| * W + |x - x'|]``. torch:
    ``attention_biases[:, attention_bias_idxs]`` added to the scores (sdpa's ``attn_mask``). The index is
    fixed data; ``state_index=True`` keeps it in the weights too, as the buffer ``attention_bias_idxs`` of
    (L, S) int64 entries (EfficientFormer keeps it in its state_dict).

    >>> from xconv import Linear, Use
    >>> DotProductAttention(Linear(8, 8), Linear(8, 8), Linear(8, 8), num_heads=2)
    DotProductAttention(
        Linear(8, 8),
        Linear(8, 8),
        Linear(8, 8),
        num_heads=2,
    )
    """

    num_heads: int
    scale: float | None
    dropout: float
    bias_grid: tuple[int, int] | None
    bias_stride: int
    state_index: bool

    def __init__(
        self,
        *branches: Item,
        num_heads: int = 1,
        scale: float | None = None,
        dropout: float = 0.0,
        bias_grid: int | tuple[int, int] | None = None,
        bias_stride: int = 1,
        state_index: bool = False,
        name: str | None = None,
    ) -> None:
        if len(branches) != 3:
            raise SpecError(
                f"DotProductAttention: needs exactly three branches (queries, keys, values). Received: {len(branches)}"
            )
        super().__init__(*branches, name=name)
        object.__setattr__(self, "num_heads", as_int("DotProductAttention", "num_heads", num_heads, minimum=1))
        if scale is not None:
            scale = as_float("DotProductAttention", "scale", scale, low=0.0, low_open=True)
        object.__setattr__(self, "scale", scale)
        rate = as_float("DotProductAttention", "dropout", dropout, low=0.0, high=1.0, high_open=True)
        object.__setattr__(self, "dropout", rate)
        me = "DotProductAttention"
        grid = None if bias_grid is None else as_pair(me, "bias_grid", bias_grid, minimum=1)
        object.__setattr__(self, "bias_grid", grid)
        object.__setattr__(self, "bias_stride", as_int(me, "bias_stride", bias_stride, minimum=1))
        object.__setattr__(self, "state_index", as_bool(me, "state_index", state_index))
        if grid is None and (self.bias_stride != 1 or self.state_index):
            raise SpecError(
                f"{me}: bias_stride and state_index describe the learned bias, which needs bias_grid. Received: "
                f"bias_stride={bias_stride!r}, state_index={state_index!r}"
            )

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"num_heads": self.num_heads}
        if self.scale is not None:
            extra["scale"] = self.scale
        if self.dropout:
            extra["dropout"] = self.dropout
        if self.bias_grid is not None:
            extra["bias_grid"] = self.bias_grid
        if self.bias_stride != 1:
            extra["bias_stride"] = self.bias_stride
        if self.state_index:
            extra["state_index"] = True
        return extra


Item = Layer | Sequential | Combinator | Use
COMBINATORS: dict[str, type[Combinator]] = {
    "Add": Add,
    "Concat": Concat,
    "DotProductAttention": DotProductAttention,
    "Multiply": Multiply,
    "Subtract": Subtract,
}
#: a combinator's own fields (beside its branches and name), as to_dict writes them
_FIELDS = {
    "Concat": ("dim",),
    "DotProductAttention": ("num_heads", "scale", "dropout", "bias_grid", "bias_stride", "state_index"),
}


def _repr(item: Any, depth: int) -> str:
    pad = "    " * (depth + 1)
    if isinstance(item, (Layer, Use)):
        return repr(item)
    if isinstance(item, Sequential):
        children, extra = item.layers, dict[str, Any]()
        if item.input_shape is not None:
            extra["input_shape"] = item.input_shape
        if item.outputs is not None:
            extra["outputs"] = list(item.outputs)
    else:
        children, extra = item.branches, item._extra()
    if item.name is not None:
        extra["name"] = item.name
    inner = "".join(f"\n{pad}{_repr(child, depth + 1)}," for child in children)
    tail = "".join(f"\n{pad}{k}={v!r}," for k, v in extra.items())
    return f"{item.kind}({inner}{tail}\n{'    ' * depth})"


def _item_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, (Layer, Use)):
        return item.to_dict()
    if isinstance(item, Sequential):
        return {"kind": "Sequential", "name": item.name, "layers": [_item_dict(x) for x in item.layers]}
    return {"kind": item.kind, "name": item.name, **item._extra(), "branches": [_item_dict(b) for b in item.branches]}


def from_dict(data: Mapping[str, Any]) -> Sequential:
    """Rebuild a spec from ``Sequential.to_dict()`` output (after a JSON round trip too; version 1 files of
    flat chains load as well).

    >>> from xconv import Conv2d, ReLU
    >>> spec = Sequential(Conv2d(3, 8, 3), ReLU(), input_shape=(3, 8, 8))
    >>> from_dict(spec.to_dict()) == spec
    True
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise SpecError(f"from_dict: expected a dict with format={FORMAT!r}. Received: {str(data)[:200]}")
    version = data.get("version")
    if version not in (1, FORMAT_VERSION, OUTPUTS_VERSION):
        raise SpecError(
            f"from_dict: unsupported spec format version {version!r}; this xconv reads 1 to {OUTPUTS_VERSION}"
        )
    unknown = sorted(set(data) - {"format", "version", "input_shape", "name", "layers", "outputs"})
    if unknown:
        raise SpecError(
            f"from_dict: unknown top-level fields {unknown}; a spec has format, version, input_shape, "
            "name, layers and (version 3) outputs"
        )
    if "outputs" in data and version != OUTPUTS_VERSION:
        raise SpecError(
            f"from_dict: `outputs` come with format version {OUTPUTS_VERSION}. Received: version {version!r}"
        )
    layers_data = data.get("layers")
    if not isinstance(layers_data, list):
        raise SpecError(f"from_dict: `layers` must be a list. Received: {layers_data!r}")
    layers = [_item(item, str(index)) for index, item in enumerate(layers_data)]
    return Sequential(*layers, input_shape=data.get("input_shape"), name=data.get("name"), outputs=data.get("outputs"))


#: how deeply containers may nest in a spec read from data
MAX_DEPTH = 64


def _item(item: Any, where: str) -> Any:
    if where.count(".") >= MAX_DEPTH:
        raise SpecError(f"from_dict: item {where} is nested more than {MAX_DEPTH} levels deep")
    known = sorted([*LAYER_TYPES, "Sequential", "Use", *COMBINATORS])
    if not isinstance(item, Mapping) or item.get("kind") not in known:
        raise SpecError(
            f"from_dict: item {where} has an unknown kind; known kinds: {', '.join(known)}. Received: {str(item)[:200]}"
        )
    kind = item["kind"]
    if kind == "Use":
        if set(item) - {"kind", "source"}:
            raise SpecError(f"from_dict: item {where} (Use) has no other fields than 'source'. Received: {item}")
        try:
            return Use(item.get("source"))
        except SpecError as e:
            raise SpecError(f"from_dict: item {where}: {e}") from None
    if kind == "Sequential" or kind in COMBINATORS:
        children_key = "layers" if kind == "Sequential" else "branches"
        allowed = {"kind", "name", children_key} | set(_FIELDS.get(kind, ()))
        unknown = sorted(set(item) - allowed)
        children = item.get(children_key)
        if unknown or not isinstance(children, list):
            raise SpecError(
                f"from_dict: item {where} ({kind}) needs a list `{children_key}` and has no other fields "
                f"than {sorted(allowed)}. Received: {str(item)[:200]}"
            )
        parts = [_item(child, f"{where}.{i}") for i, child in enumerate(children)]
        extra = {k: item[k] for k in _FIELDS.get(kind, ()) if k in item}
        try:
            if kind == "Sequential":
                return Sequential(*parts, name=item.get("name"))
            return COMBINATORS[kind](*parts, name=item.get("name"), **extra)
        except SpecError as e:
            raise SpecError(f"from_dict: item {where}: {e}") from None
    fields = {k: v for k, v in item.items() if k != "kind"}
    cls = LAYER_TYPES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise SpecError(f"from_dict: layer {where} ({kind}) has unknown fields {unknown}")
    try:
        return cls(**fields)
    except SpecError as e:
        raise SpecError(f"from_dict: layer {where}: {e}") from None
    except TypeError as e:  # a required field missing
        raise SpecError(f"from_dict: layer {where} ({kind}): {e}") from None
