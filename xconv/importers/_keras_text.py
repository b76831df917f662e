"""A Keras text encoder's inputs and what reads them, for the importer: which input is the token ids, the
padding mask and the token types (by name, else by what reads them); the tensors of a model of any sequence
length seen at the length it is ported at; and the layers that read the mask or the types (attention with the
mask's keys, an embedding of the types added to the tokens) or select one token. Anything else that reads a
mask or types is refused by name."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends._tf_env import keras
from ..errors import UnsupportedLayerError
from ..spec import TokenTypeEmbedding
from ._graph import Names, Raw
from ._keras_folds import _tensor_op

#: the index the padding mask input stands at (no node: only attention layers read it)
_MASK = -2

#: the index the token types input stands at (no node: only token-type embeddings read it), and that of an
#: Embedding's lookup of them (added to the tokens by the sum that reads it)
_TYPES, _TYPED = -4, -5

#: the index of the padding mask as a MultiHeadAttention's ``attention_mask`` reads it, (N, 1, L): the keys
#: each query may attend to, the same for every query
_MASK_KEYS = -3


def _takes_side_inputs(model: Any) -> bool:
    """Whether the model's inputs other than its token ids are a text encoder's padding mask and token types
    (see :func:`input_roles`), one of each at most."""
    roles = input_roles(model)
    ids = ids_input(model)
    sides = [r for r in roles if r != "ids"]
    return 1 <= len(sides) == len(set(sides)) <= 2 and all(
        _is_padding_mask(t, ids) for t, r in zip(model.inputs, roles) if r != "ids"
    )


#: the names (a dict input's key, or the input's own) that mark a text encoder's inputs when they come as a
#: dict: its token ids, its padding mask and its token types (keras-hub's and Hugging Face's names)
_ROLE_NAMES = {
    "ids": ("token_ids", "input_ids", "ids", "input"),
    "padding_mask": ("padding_mask", "attention_mask"),
    "token_types": ("token_types", "segment_ids", "token_type_ids"),
}


def input_roles(model: Any) -> list[str]:
    """What each of a model's inputs is, in the order of ``model.inputs``: ``"ids"`` (a model's only input,
    the first of a list, or the dict entry named as token ids are: ``token_ids``, ``input_ids``), then
    ``"padding_mask"`` or ``"token_types"``: named so (as xconv builds them, or as keras-hub and Hugging Face
    name them), or the token types when a layer that looks up ids (an ``Embedding``) reads the input, else the
    padding mask. What reads each is checked where it is read (a mask only by attention, token types only by
    an embedding added to the tokens)."""
    inputs = list(model.inputs)
    struct = getattr(model, "_inputs_struct", None)
    key_of = {id(t): k for k, t in struct.items()} if isinstance(struct, dict) else {}
    names = [str(key_of.get(id(t), t.name)) for t in inputs]
    first = 0
    if key_of and len(inputs) > 1:
        found = [i for i, n in enumerate(names) if n in _ROLE_NAMES["ids"]]
        if len(found) != 1:
            raise UnsupportedLayerError(
                f"from_keras: the model takes a dict of inputs {sorted(names)}; xconv reads a text encoder's "
                f"token ids from the entry named {' or '.join(_ROLE_NAMES['ids'][:2])}"
            )
        first = found[0]
    roles = []
    for i, (t, name) in enumerate(zip(inputs, names)):
        named = next((role for role, known in _ROLE_NAMES.items() if name in known and role != "ids"), None)
        if i == first:
            roles.append("ids")
        elif named is not None:
            roles.append(named)
        else:
            readers = [node.operation for node in t._keras_history.operation._outbound_nodes]
            looked_up = any(isinstance(r, keras.layers.Embedding) for r in readers)
            roles.append("token_types" if looked_up else "padding_mask")
    return roles


def ids_input(model: Any) -> Any:
    """The model's input of token ids (or its one input)."""
    return model.inputs[input_roles(model).index("ids")] if len(model.inputs) > 1 else model.inputs[0]


class _Sized:
    """A tensor of the graph seen at a given sequence length: its shape with the length in place of None; the
    tensor's own attributes otherwise."""

    def __init__(self, t: Any, shape: tuple[Any, ...]) -> None:
        self.t, self.shape = t, shape

    def __getattr__(self, name: str) -> Any:
        return getattr(self.t, name)


def _at(t: Any, length: int, sized: dict[int, Any]) -> Any:
    """``t`` with its sequence axis (the first after the batch) at ``length`` where it is None: one stand-in
    per tensor (``sized``), so that a tensor is the same object wherever it is read."""
    shape = tuple(getattr(t, "shape", ()) or ())
    if len(shape) < 2 or shape[1] is not None:
        return t
    if id(t) not in sized:
        sized[id(t)] = _Sized(t, (shape[0], int(length), *shape[2:]))
    return sized[id(t)]


def smallest_table(model: Any) -> int:
    """The rows of the smallest embedding table of a Keras model (1 for none): token types are drawn below."""
    from ..kinds.token._keras import TokenTypeEmbeddingLayer

    sizes = [int(layer.input_dim) for layer in model._flatten_layers() if isinstance(layer, keras.layers.Embedding)]
    sizes += [layer.types for layer in model._flatten_layers() if isinstance(layer, TokenTypeEmbeddingLayer)]
    return min(sizes, default=1)


def _is_padding_mask(t: Any, ids: Any) -> bool:
    """Whether a model's input after the first may be a padding mask or token types: an integer input (L,)
    beside token ids (L,), as xconv builds one (``keras.Input((L,), dtype="int64", name="padding_mask",
    optional=True)``) or a hand-written one. What reads it is checked where it is read."""
    layer = t._keras_history.operation
    return (
        type(layer).__name__ == "InputLayer"
        and len(t.shape) == 2
        and tuple(t.shape) == tuple(ids.shape)
        and str(t.dtype).startswith("int")
        and str(ids.dtype).startswith("int")
    )


def _token_type_reader(
    layer: Any,
    inputs: list[Any],
    ids: list[int],
    out: Any,
    where: str,
    name: str,
    typed: dict[int, tuple[Any, str]],
    add: Any,
    names: Names,
) -> int:
    """A layer that reads the model's token types: xconv's token-type layer called with (tokens, types), an
    ``Embedding`` looking them up (``_TYPED``: waiting for the sum), or the sum of tokens and that lookup; each
    is a TokenTypeEmbedding reading the token types. Anything else is refused."""
    from ..kinds.token._keras import TokenTypeEmbeddingLayer, _keras_embedding

    if type(layer) is TokenTypeEmbeddingLayer and len(ids) == 2 and ids[1] == _TYPES and ids[0] >= 0:
        if layer.token_type:
            raise UnsupportedLayerError(f"from_keras: {where} reads token types but has token_type={layer.token_type}")
        spec = TokenTypeEmbedding(layer.types, int(layer.weight.shape[1]), token_types=True, name=name)
        return int(add(Raw(name, "layer", [ids[0]], layer=spec), {"weight": np.asarray(layer.weight.numpy())}))
    if isinstance(layer, keras.layers.Embedding) and ids == [_TYPES]:
        typed[id(out)] = (layer, where)
        return _TYPED
    is_sum = type(layer) is keras.layers.Add or _tensor_op(layer, ids) == "add"
    lookups = [t for t in inputs if id(t) in typed]
    if is_sum and len(ids) >= 2 and len(lookups) == 1 and ids.count(_TYPED) == 1 and min(ids) >= _TYPED:
        others = [i for i in ids if i != _TYPED]  # (keras-hub's BERT adds tokens, positions and types at once)
        tokens = others[0] if len(others) == 1 else int(add(Raw(names.take(f"{name}_tokens"), "add", others)))
        embedding, said = typed.pop(id(lookups[0]))
        spec, arrays = _keras_embedding(embedding, said, (int(inputs[0].shape[1]),))
        if spec.padding_idx is not None:
            raise UnsupportedLayerError(f"from_keras: {said} looks up token types with a padding row")
        layer_spec = TokenTypeEmbedding(spec.num_embeddings, spec.embed_dim, token_types=True, name=name)
        return int(add(Raw(name, "layer", [tokens], layer=layer_spec, owned=True), arrays))
    raise UnsupportedLayerError(
        f"from_keras: {where} reads the token types; an Embedding that looks them up, added to the tokens, "
        "reads them, nothing else"
    )


def _selected_token(op: Any, inputs: list[Any], ids: list[int]) -> int | None:
    """i for the operation ``x[:, i, :]`` (or ``x[:, i]``) of tokens (N, L, C), 0 <= i < L; else None."""
    if type(op).__name__ != "GetItem" or not type(op).__module__.startswith("keras.src.ops") or len(ids) != 1:
        return None
    node = op._inbound_nodes[0]
    args = list(getattr(node.arguments, "args", ()) or ())
    if len(args) != 2 or len(inputs[0].shape) != 3 or not isinstance(args[1], tuple):
        return None
    key = args[1]
    everything = slice(None)
    if len(key) not in (2, 3) or key[0] != everything or key[2:] not in ((), (everything,)):
        return None
    i, length = key[1], inputs[0].shape[1]
    if isinstance(i, bool) or not isinstance(i, int) or length is None or not 0 <= i < int(length):
        return None
    return i


def _mask_op(op: Any, ids: list[int], where: str) -> int:
    """An operation on the padding mask: a cast keeps it; ``mask[:, None, :]`` or ``expand_dims(mask, 1)``
    makes it the keys every query attends to (what ``MultiHeadAttention(attention_mask=...)`` reads). Anything
    else is refused."""
    kind = type(op).__name__
    node = op._inbound_nodes[0]
    args = list(getattr(node.arguments, "args", ()) or ())
    keys = (slice(None), None, slice(None)), (slice(None), None)
    if len(ids) == 1 and type(op).__module__.startswith("keras.src.ops"):
        if kind == "Cast":
            return ids[0]
        if ids[0] == _MASK and (
            kind == "ExpandDims"
            and getattr(op, "axis", None) in (1, -2)
            or kind == "GetItem"
            and args[1:] in ([k] for k in keys)
        ):
            return _MASK_KEYS
    raise UnsupportedLayerError(
        f"from_keras: {where} reads the padding mask (the model's second input); supported: a cast, and "
        "mask[:, None, :] or expand_dims(mask, 1) given to MultiHeadAttention as its attention_mask"
    )


def _call_flags(layer: Any) -> list[str]:
    """The options a MultiHeadAttention was called with besides its query, value and key (masks, scores), by
    name; a mask given as a constant is no tensor of the graph: it is read from the call's arguments."""
    node = layer._inbound_nodes[0]
    names = ("query", "value", "key", "query_mask", "value_mask", "key_mask", "attention_mask")
    given = {**dict(zip(names, getattr(node.arguments, "args", ()) or ())), **(node.arguments.kwargs or {})}
    return [k for k, v in given.items() if k not in (*names[:3], "training") and v is not None and v is not False]


def _self_attention_input(layer: Any, ids: list[int], where: str) -> tuple[list[int], bool]:
    """A MultiHeadAttention's one input when it is called as self-attention: query, value (and key) the same
    tensor, no mask but the padding mask's keys as its ``attention_mask`` (then also True)."""
    if not layer._inbound_nodes and len(set(ids)) == 1:  # called inside a keras-hub layer as mha(x, x)
        return ids[:1], False
    if not layer._inbound_nodes and len(ids) == 3 and ids[0] == ids[1] >= 0 and ids[2] == _MASK_KEYS:
        return ids[:1], True  # (and with the padding mask's keys: keras-hub's TransformerEncoder)
    flags = _call_flags(layer)
    masked = flags == ["attention_mask"] and ids[-1] == _MASK_KEYS and _MASK_KEYS not in ids[:-1]
    if masked:
        flags, ids = [], ids[:-1]
    if len(set(ids)) != 1 or flags or _MASK_KEYS in ids:
        raise UnsupportedLayerError(
            f"from_keras: {where}: MultiHeadAttention is supported as self-attention only: query, value and key "
            f"the same tensor, without masks or attention scores ({len(set(ids))} distinct inputs"
            f"{', given ' if flags else ''}{', '.join(flags)})"
        )
    return ids[:1], masked


def cross_attention(layer: Any, ids: list[int], name: str, where: str, names: Names, add: Any) -> int | None:
    """``keras.layers.MultiHeadAttention`` called with queries other than its values (cross-attention, ``mha(q,
    v)`` or ``mha(q, v, key=k)``), without masks: its q, k and v projections (EinsumDense kernels (E, heads,
    head_dim)) as Linears, a DotProductAttention at Keras' scale (1 / sqrt(key_dim) rounded through float32, as
    Keras computes it, with its dropout), its output projection (heads, head_dim, E) as a Linear; the index of
    that last node.
    None where it is called as self-attention (read as a SelfAttention)."""
    from ..kinds.token._keras import _KNOWN_ATTENTION_CONFIG
    from ..spec import Linear

    if type(layer) is not keras.layers.MultiHeadAttention or not layer._inbound_nodes:
        return None
    if len(set(ids)) == 1 or _MASK_KEYS in ids or len(ids) not in (2, 3):
        return None
    flags = _call_flags(layer)
    config = layer.get_config()
    unknown = sorted(set(config) - _KNOWN_ATTENTION_CONFIG)
    axes = layer.attention_axes
    problems = [
        (bool(flags), f"{', '.join(flags)} given"),
        (bool(unknown), f"the option {unknown[0] if unknown else ''} (not known to xconv)"),
        (bool(config.get("use_gate")) or config.get("sliding_window") is not None, "a gate or a sliding window"),
        (layer._output_shape is not None, f"output_shape={layer._output_shape}"),
        (axes is not None and tuple(axes) not in ((1,), (-2,)), f"attention_axes={axes}"),
        (
            any(len(t.kernel.shape) != 3 for t in (layer.query_dense, layer.key_dense, layer.value_dense)),
            "inputs of other ranks",
        ),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(
            f"from_keras: {where}: MultiHeadAttention called as cross-attention is supported over token tensors "
            f"without masks; here {bad[0]}"
        )
    sources = {"query": ids[0], "value": ids[1], "key": ids[2] if len(ids) == 3 else ids[1]}
    made: dict[str, int] = {}
    for part, dense in (("query", layer.query_dense), ("key", layer.key_dense), ("value", layer.value_dense)):
        kernel = np.asarray(dense.kernel.numpy())
        e, width = int(kernel.shape[0]), int(kernel.shape[1] * kernel.shape[2])
        arrays: dict[str, np.ndarray] = {"weight": kernel.reshape(e, width)}
        if layer.use_bias:
            arrays["bias"] = np.asarray(dense.bias.numpy()).reshape(-1)
        part_name = names.take(f"{name}.{part}")
        linear = Linear(e, width, bias=layer.use_bias, name=part_name)
        made[part] = add(Raw(part_name, "layer", [sources[part]], layer=linear), arrays)
    heads, head_dim = int(layer.num_heads), int(layer.key_dim)
    scale = float(np.float32(1.0 / np.sqrt(head_dim)))
    attend = names.take(f"{name}.attention")
    payload = (heads, None if scale == head_dim**-0.5 else scale, float(layer.dropout))
    at = add(Raw(attend, "attn", [made["query"], made["key"], made["value"]], payload=payload, owned=True))
    out = layer.output_dense
    kernel = np.asarray(out.kernel.numpy())
    arrays = {"weight": kernel.reshape(-1, kernel.shape[-1])}  # (heads, head_dim, E) as (heads * head_dim, E)
    if layer.use_bias:
        arrays["bias"] = np.asarray(out.bias.numpy()).reshape(-1)
    out_name = names.take(f"{name}.attention_output")
    linear = Linear(int(arrays["weight"].shape[0]), int(kernel.shape[-1]), bias=layer.use_bias, name=out_name)
    return int(add(Raw(out_name, "layer", [at], layer=linear), arrays))
