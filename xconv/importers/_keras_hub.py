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

__all__ = ["expand_calls", "first_output_only"]

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
        )
        if known is None:
            if layer is not None and cls.__module__.startswith("keras_hub."):
                raise UnsupportedLayerError(
                    f"from_keras: layer {layer.name!r} (keras-hub {cls.__name__}) is not supported; of keras-hub's "
                    f"own layers xconv reads {', '.join(name for name, _ in _EXPANSIONS)}"
                )
            out.append((layer, inputs, result))
            continue
        out += known(layer, inputs, result, names)
    return out, names
