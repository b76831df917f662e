"""keras-hub's own layers, read as the Keras layers they are made of.

A keras-hub backbone is a functional model whose layers are keras-hub classes (``ViTPatchingAndEmbedding``,
``ViTEncoder``) that call Keras layers of their own in Python. Each class known here, matched by its exact
class and checked option by option, is replaced by the calls its ``call`` makes, in order: its sublayers
(``Conv2D``, ``LayerNormalization``, ``MultiHeadAttention``, ``Dense``, ``Dropout``) as themselves, and the
arithmetic between them as the Keras or xconv layer that computes it (an ``Add`` for ``x + y``, a ``Reshape``,
xconv's ``ClassToken`` and ``PositionEmbedding`` layers holding keras-hub's weights). The importer then reads
those calls as it reads any functional model. A class not known here, or an option it does not know, is refused
by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends._tf_env import keras
from ..errors import UnsupportedLayerError

__all__ = ["MaskKeys", "expand_calls", "first_output_only"]

#: one layer call: (layer, its input tensors, its output tensor)
Call = tuple[Any, list[Any], Any]


class _Tensor:
    """A tensor between two of the calls a keras-hub layer makes: only its shape (with the batch) is read."""

    def __init__(self, shape: tuple[Any, ...]) -> None:
        self.shape = shape


def _module_of(layer: Any, name: str, family: str) -> bool:
    cls = type(layer)
    return cls.__name__ == name and cls.__module__ == f"keras_hub.src.models.{family}.{family}_layers"


def _refuse(layer: Any, problems: list[tuple[bool, str]]) -> None:
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(
            f"from_keras: layer {layer.name!r} (keras-hub {type(layer).__name__}) with {bad[0]} is not supported"
        )


def _weighted(layer: Any, shape: tuple[Any, ...], values: dict[str, np.ndarray]) -> Any:
    """xconv's own Keras layer ``layer`` standing in for keras-hub arithmetic, built and holding ``values``."""
    layer.build(shape)
    for attr, value in values.items():
        getattr(layer, attr).assign(value)
    return layer


def drop_path(layer: Any, rate: float, x: Any, name: str) -> tuple[list[Call], Any]:
    """A keras-hub drop path (``layer``, dropping whole samples at ``rate`` in training) on the tokens ``x``: a
    Dropout with ``noise_shape=(None, 1, 1)`` (stochastic depth), no call at rate 0; rates outside [0, 1)
    refused. Returns (the calls, their output)."""
    _refuse(layer, [(not 0.0 <= rate < 1.0, f"rate={rate}")])
    if rate == 0.0:
        return [], x
    out = _Tensor(x.shape)
    return [(keras.layers.Dropout(rate, noise_shape=(None, 1, 1), dtype=layer.dtype_policy, name=name), [x], out)], out


def _vit_embedding(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    """``ViTPatchingAndEmbedding``: the patch conv, its map read as tokens, the class token in front, then the
    position embeddings (a table of ``num_positions`` rows looked up at 0..L-1: all of it, added)."""
    from ..kinds.token._keras import ClassTokenLayer, PositionEmbeddingLayer

    conv, table = layer.patch_embedding, layer.position_embedding
    h, w = (int(d) for d in conv.compute_output_shape(inputs[0].shape)[1:3])
    e = int(layer.hidden_dim)
    length = h * w + (1 if layer.use_class_token else 0)
    _refuse(
        layer,
        [
            (layer.data_format != "channels_last", f"data_format={layer.data_format!r}"),
            (int(layer.num_positions) != length, f"num_positions={layer.num_positions} for {length} tokens"),
            (bool(getattr(table, "mask_zero", False)), "a masking position embedding"),
        ],
    )
    dtype = layer.dtype_policy
    tokens = _Tensor((None, h * w, e))
    calls: list[Call] = [(conv, inputs, _Tensor((None, h, w, e)))]
    calls.append((keras.layers.Reshape((h * w, e), dtype=dtype, name=f"{layer.name}.tokens"), [calls[-1][2]], tokens))
    if layer.use_class_token:
        token = ClassTokenLayer(1, dtype=dtype, name=f"{layer.name}.class_token")
        value = np.asarray(layer.class_token.numpy())
        calls.append((_weighted(token, (None, h * w, e), {"token": value}), [tokens], _Tensor((None, length, e))))
    positions = PositionEmbeddingLayer(dtype=dtype, name=f"{layer.name}.position_embedding")
    value = np.asarray(table.embeddings.numpy())[None]
    calls.append((_weighted(positions, (None, length, e), {"embedding": value}), [calls[-1][2]], out))
    names[id(conv)] = f"{layer.name}.patch_embedding"
    return calls


def _mlp(layer: Any, x: Any, prefix: str, names: dict[int, str]) -> tuple[list[Call], Any]:
    """keras-hub ViT's ``MLP``: Dense (GELU), dropout, Dense, dropout."""
    e = int(layer.hidden_dim)
    hidden = _Tensor((*x.shape[:-1], int(layer.mlp_dim)))
    a, b = _Tensor(hidden.shape), _Tensor((*x.shape[:-1], e))
    out = _Tensor(b.shape)
    names.update(
        {
            id(layer.dense_1): f"{prefix}.dense_1",
            id(layer.dense_2): f"{prefix}.dense_2",
            id(layer.dropout): f"{prefix}.dropout",
        }
    )
    return [
        (layer.dense_1, [x], hidden),
        (layer.dropout, [hidden], a),
        (layer.dense_2, [a], b),
        (layer.dropout, [b], out),
    ], out


def _vit_block(layer: Any, inputs: list[Any], out: Any, names: dict[int, str], prefix: str) -> list[Call]:
    """``ViTEncoderBlock``, pre-norm: x + dropout(mha(ln_1(x))), then that plus mlp(ln_2(that))."""
    x = inputs[0]
    mlp = layer.mlp
    _refuse(
        layer,
        [
            (type(mlp).__name__ != "MLP" or type(mlp).__module__ != type(layer).__module__, "another MLP"),
            (int(layer.num_heads) * int(layer.key_dim) != int(layer.hidden_dim), f"key_dim={layer.key_dim}"),
        ],
    )
    dtype = layer.dtype_policy
    t = [_Tensor(x.shape) for _ in range(5)]
    names.update(
        {
            id(layer.layer_norm_1): f"{prefix}.ln_1",
            id(layer.mha): f"{prefix}.mha",
            id(layer.dropout): f"{prefix}.dropout",
            id(layer.layer_norm_2): f"{prefix}.ln_2",
        }
    )
    calls: list[Call] = [
        (layer.layer_norm_1, [x], t[0]),
        (layer.mha, [t[0], t[0]], t[1]),
        (layer.dropout, [t[1]], t[2]),
        (keras.layers.Add(dtype=dtype), [t[2], x], t[3]),
        (layer.layer_norm_2, [t[3]], t[4]),
    ]
    mlp_calls, y = _mlp(mlp, t[4], f"{prefix}.mlp", names)
    return [*calls, *mlp_calls, (keras.layers.Add(dtype=dtype), [t[3], y], out)]


def _vit_encoder(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    """``ViTEncoder``: dropout, the blocks, the final LayerNorm."""
    x = inputs[0]
    h = _Tensor(x.shape)
    names[id(layer.dropout)] = f"{layer.name}.dropout"
    return [(layer.dropout, [x], h), *_blocks(layer, h, out, names, "ViTEncoderBlock", "vit", _vit_block)]


def _blocks(
    layer: Any, h: Any, out: Any, names: dict[int, str], block_class: str, family: str, block: Any
) -> list[Call]:
    """An encoder's blocks (each of class ``block_class``, read by ``block``) on ``h``, then its LayerNorm."""
    calls: list[Call] = []
    for i, sub in enumerate(layer.encoder_layers):
        if not _module_of(sub, block_class, family):
            raise UnsupportedLayerError(f"from_keras: layer {sub.name!r} ({type(sub).__name__}) is not supported")
        nxt = _Tensor(h.shape)
        calls += block(sub, [h], nxt, names, f"{layer.name}.{sub.name or f'block_{i}'}")
        h = nxt
    names[id(layer.layer_norm)] = f"{layer.name}.ln"
    calls.append((layer.layer_norm, [h], out))
    return calls


def _deit_embedding(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    """``DeiTEmbeddings``: the patch conv, its map read as tokens, the class and distillation tokens in front
    (in that order: one ClassToken of two), the position embedding (1, L, E) added, dropout."""
    from ..kinds.token._keras import ClassTokenLayer, PositionEmbeddingLayer

    conv = layer.patch_embedding
    h, w = (int(d) for d in conv.compute_output_shape(inputs[0].shape)[1:3])
    e = int(layer.hidden_dim)
    length = h * w + 2
    _refuse(
        layer,
        [
            (layer.data_format != "channels_last", f"data_format={layer.data_format!r}"),
            (int(layer.num_positions) != length, f"num_positions={layer.num_positions} for {length} tokens"),
        ],
    )
    dtype = layer.dtype_policy
    grid, tokens, with_tokens, added = (
        _Tensor((None, h, w, e)),
        _Tensor((None, h * w, e)),
        _Tensor((None, length, e)),
        _Tensor((None, length, e)),
    )
    both = np.concatenate([np.asarray(layer.class_token.numpy()), np.asarray(layer.distillation_token.numpy())], 1)
    token = _weighted(ClassTokenLayer(2, dtype=dtype, name=f"{layer.name}.tokens"), tokens.shape, {"token": both})
    positions = PositionEmbeddingLayer(dtype=dtype, name=f"{layer.name}.position_embedding")
    positions = _weighted(positions, with_tokens.shape, {"embedding": np.asarray(layer.position_embedding.numpy())})
    names.update({id(conv): f"{layer.name}.patch_embedding", id(layer.dropout): f"{layer.name}.dropout"})
    return [
        (conv, inputs, grid),
        (keras.layers.Reshape((h * w, e), dtype=dtype, name=f"{layer.name}.patches"), [grid], tokens),
        (token, [tokens], with_tokens),
        (positions, [with_tokens], added),
        (layer.dropout, [added], out),
    ]


def _deit_block(layer: Any, inputs: list[Any], out: Any, names: dict[int, str], prefix: str) -> list[Call]:
    """``DeiTEncoderBlock``, pre-norm: x + mha(ln_1(x)), then that plus dropout(output(mlp(ln_2(that))))."""
    x = inputs[0]
    mlp, output = layer.mlp, layer.output_layer
    _refuse(
        layer,
        [
            (not _module_of(mlp, "DeiTIntermediate", "deit"), "another MLP"),
            (not _module_of(output, "DeiTOutput", "deit"), "another output layer"),
            (int(layer.num_heads) * int(layer.key_dim) != int(layer.hidden_dim), f"key_dim={layer.key_dim}"),
        ],
    )
    dtype = layer.dtype_policy
    e = int(layer.hidden_dim)
    t = [_Tensor(x.shape) for _ in range(4)]
    hidden = _Tensor((*x.shape[:-1], int(mlp.intermediate_dim)))
    projected, dropped = _Tensor((*x.shape[:-1], e)), _Tensor((*x.shape[:-1], e))
    names.update(
        {
            id(layer.layer_norm_1): f"{prefix}.ln_1",
            id(layer.mha): f"{prefix}.mha",
            id(layer.layer_norm_2): f"{prefix}.ln_2",
            id(mlp.dense): f"{prefix}.mlp.dense",
            id(output.dense): f"{prefix}.output_layer.output",
            id(output.dropout): f"{prefix}.output_layer.dropout",
        }
    )
    return [
        (layer.layer_norm_1, [x], t[0]),
        (layer.mha, [t[0], t[0]], t[1]),
        (keras.layers.Add(dtype=dtype), [t[1], x], t[2]),
        (layer.layer_norm_2, [t[2]], t[3]),
        (mlp.dense, [t[3]], hidden),
        (output.dense, [hidden], projected),
        (output.dropout, [projected], dropped),
        (keras.layers.Add(dtype=dtype), [dropped, t[2]], out),
    ]


def _deit_encoder(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    """``DeiTEncoder`` for its first output (the tokens): the blocks, the final LayerNorm."""
    return _blocks(layer, inputs[0], out, names, "DeiTEncoderBlock", "deit", _deit_block)


class MaskKeys:
    """Stands for keras-hub's ``merge_padding_and_attention_mask`` of a padding mask alone: the mask's keys,
    ``expand_dims(mask, 1)``, as a ``MultiHeadAttention``'s ``attention_mask`` (its one input: the mask)."""

    name = "padding_mask_keys"


def _layer_of(layer: Any, name: str, module: str) -> bool:
    cls = type(layer)
    return cls.__name__ == name and cls.__module__ == f"keras_hub.src.layers.modeling.{module}"


def _node_arguments(layer: Any, out: Any) -> dict[str, Any]:
    """The arguments of the call of ``layer`` whose output is ``out``, by name (positional ones after the first
    as ``arg1``, ``arg2``...)."""
    for node in layer._inbound_nodes:
        if any(t is getattr(out, "t", out) for t in node.output_tensors):
            args = list(getattr(node.arguments, "args", ()) or ())
            return {**{f"arg{i}": v for i, v in enumerate(args[1:], 1)}, **(node.arguments.kwargs or {})}
    return {}


def _transformer_encoder(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    """keras-hub's ``TransformerEncoder`` (BERT's blocks), post-norm or pre-norm (``normalize_first``): x plus
    dropout(mha(x, x) with the padding mask's keys), a LayerNorm; that plus dropout(dense(dense(that))), a
    LayerNorm (each LayerNorm before its branch with ``normalize_first``)."""
    given = _node_arguments(layer, out)
    extra = {
        k: v for k, v in given.items() if v is not None and v is not False and k not in ("padding_mask", "training")
    }
    x = inputs[0]
    mask = inputs[1] if len(inputs) == 2 else None
    e = int(x.shape[-1])
    _refuse(
        layer,
        [
            (bool(extra), f"the argument {next(iter(extra), '')} (an attention mask, or attention scores returned)"),
            (len(inputs) > 2 or len(inputs) == 2 and given.get("padding_mask") is None, "a mask given otherwise"),
            (int(layer.num_heads) * (e // int(layer.num_heads)) != e, f"{layer.num_heads} heads of {e} features"),
            (bool(getattr(x, "_keras_mask", None) is not None), "a Keras mask on its input"),
        ],
    )
    dtype = layer.dtype_policy
    prefix = layer.name
    mha, ln1, drop1 = layer._self_attention_layer, layer._self_attention_layer_norm, layer._self_attention_dropout
    ln2, dense1, dense2 = (
        layer._feedforward_layer_norm,
        layer._feedforward_intermediate_dense,
        layer._feedforward_output_dense,
    )
    drop2 = layer._feedforward_dropout
    names.update(
        {
            id(mha): f"{prefix}.self_attention_layer",
            id(ln1): f"{prefix}.self_attention_layer_norm",
            id(drop1): f"{prefix}.self_attention_dropout",
            id(ln2): f"{prefix}.feedforward_layer_norm",
            id(dense1): f"{prefix}.feedforward_intermediate_dense",
            id(dense2): f"{prefix}.feedforward_output_dense",
            id(drop2): f"{prefix}.feedforward_dropout",
        }
    )
    first = bool(layer.normalize_first)
    calls: list[Call] = []
    keys = None
    if mask is not None:
        keys = _Tensor((None, 1, mask.shape[1]))
        calls.append((MaskKeys(), [mask], keys))

    def branch(h: Any, norm: Any, body: list[tuple[Any, tuple[Any, ...]]], result: Any) -> None:
        """h + body(norm(h) or h), then norm after it unless ``first``."""
        start = h
        if first:
            start = _Tensor(h.shape)
            calls.append((norm, [h], start))
        current = start
        for sub, shape in body:
            nxt = _Tensor(shape)
            reads = [current, current, *([keys] if keys is not None else [])] if sub is mha else [current]
            calls.append((sub, reads, nxt))
            current = nxt
        summed = result if first else _Tensor(h.shape)
        calls.append((keras.layers.Add(dtype=dtype), [current, h], summed))
        if not first:
            calls.append((norm, [summed], result))

    hidden = (*x.shape[:-1], int(layer.intermediate_dim))
    middle = _Tensor(x.shape)
    branch(x, ln1, [(mha, x.shape), (drop1, x.shape)], middle)
    branch(middle, ln2, [(dense1, hidden), (dense2, x.shape), (drop2, x.shape)], out)
    return calls


def _position_embedding(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    """keras-hub's ``PositionEmbedding``: the first L rows of its table, which a sum adds to the tokens it was
    called on (see :func:`_positions_added`); called otherwise (a start index, positions) it is refused."""
    given = _node_arguments(layer, out)
    _refuse(
        layer,
        [
            (bool(given.get("start_index") or given.get("arg1")), "a start index"),
            (given.get("positions") is not None or given.get("arg2") is not None, "positions given"),
        ],
    )
    return [(layer, inputs, out)]


def _positions_added(calls: list[Call]) -> list[Call]:
    """A keras-hub ``PositionEmbedding`` called on tokens and added to them by one sum (BERT adds tokens,
    positions and segments at once): xconv's PositionEmbedding layer on the tokens, holding its table, read by
    that sum in place of both. Its output read otherwise is refused."""
    from ..kinds.token._keras import PositionEmbeddingLayer

    pending = {
        id(out): (layer, ins[0])
        for layer, ins, out in calls
        if _layer_of(layer, "PositionEmbedding", "position_embedding")
    }
    done: list[Call] = []
    for layer, ins, out in calls:
        if id(out) in pending:
            continue
        read = [t for t in ins if id(t) in pending]
        if read:
            table, tokens = pending.pop(id(read[0]))
            is_sum = (
                type(layer) is keras.layers.Add
                or type(layer).__name__ == "Add"
                and type(layer).__module__.startswith("keras.src.ops")
            )
            if len(read) != 1 or not is_sum or not any(t is tokens for t in ins):
                raise UnsupportedLayerError(
                    f"from_keras: layer {table.name!r} (keras-hub PositionEmbedding) is read by {layer.name!r}; xconv "
                    "reads it added to the tokens it was called on"
                )
            rows = int(table.position_embeddings.shape[0])
            positions = PositionEmbeddingLayer(rows, dtype=table.dtype_policy, name=table.name)
            value = np.asarray(table.position_embeddings.numpy())[None]
            added = _Tensor(tokens.shape)
            done.append((_weighted(positions, tokens.shape, {"embedding": value}), [tokens], added))
            rest = list(ins)  # (the sum's other operands: one copy of the tokens and the positions each taken out)
            rest.pop(next(k for k, t in enumerate(rest) if t is read[0]))
            rest.pop(next(k for k, t in enumerate(rest) if t is tokens))
            if rest:
                done.append((layer, [added, *rest], out))
            else:
                done.append((keras.layers.Identity(dtype=table.dtype_policy), [added], out))
            continue
        done.append((layer, ins, out))
    if pending:
        table, _ = next(iter(pending.values()))
        raise UnsupportedLayerError(
            f"from_keras: layer {table.name!r} (keras-hub PositionEmbedding) is not added to its tokens"
        )
    return done


#: keras-hub's modeling layers (keras_hub.layers) -> their calls, by (class name, module)
_MODELING: dict[tuple[str, str], Callable[..., list[Call]]] = {
    ("TransformerEncoder", "transformer_encoder"): _transformer_encoder,
    ("PositionEmbedding", "position_embedding"): _position_embedding,
}

#: (keras-hub class name, family) -> its calls
_EXPANSIONS: dict[tuple[str, str], Callable[..., list[Call]]] = {
    ("ViTPatchingAndEmbedding", "vit"): _vit_embedding,
    ("ViTEncoder", "vit"): _vit_encoder,
    ("DeiTEmbeddings", "deit"): _deit_embedding,
    ("DeiTEncoder", "deit"): _deit_encoder,
}

#: the keras-hub layers with several outputs of which the importer reads the first only (the tokens; the others
#: are the hidden states and attention scores, empty unless asked for)
FIRST_OUTPUT_ONLY = {("DeiTEncoder", "deit")}


def first_output_only(layer: Any) -> bool:
    """Whether ``layer`` is a keras-hub layer whose first output alone is read (see FIRST_OUTPUT_ONLY)."""
    return any(_module_of(layer, name, family) for name, family in FIRST_OUTPUT_ONLY)


def expand_calls(calls: list[Call]) -> tuple[list[Call], dict[int, str]]:
    """``calls`` with each call of a known keras-hub layer replaced by the calls it makes; and the names to give
    its sublayers (by ``id``): their paths under it, dotted."""
    out: list[Call] = []
    names: dict[int, str] = {}
    for layer, inputs, result in calls:
        cls = type(layer)
        known = next(
            (fn for (name, family), fn in _EXPANSIONS.items() if layer is not None and _module_of(layer, name, family)),
            None,
        ) or next((fn for (name, module), fn in _MODELING.items() if _layer_of(layer, name, module)), None)
        if known is None:
            if layer is not None and cls.__module__.startswith("keras_hub."):
                known_names = [name for name, _ in (*_EXPANSIONS, *_MODELING)]
                raise UnsupportedLayerError(
                    f"from_keras: layer {layer.name!r} (keras-hub {cls.__name__}) is not supported; of keras-hub's "
                    f"own layers xconv reads {', '.join(known_names)}"
                )
            out.append((layer, inputs, result))
            continue
        out += known(layer, inputs, result, names)
    return _positions_added(out), names


def _register() -> None:
    """The families read in modules of their own."""
    from ._keras_hub_mit import MIT_EXPANSIONS
    from ._keras_hub_swin import SWIN_EXPANSIONS

    _EXPANSIONS.update({**MIT_EXPANSIONS, **SWIN_EXPANSIONS})


_register()
