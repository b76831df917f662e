"""keras-hub's MiT (the SegFormer backbone, ``MiTBackbone``): its layers read as the Keras layers they are made of
(see :mod:`xconv.importers._keras_hub`).

- ``OverlappingPatchingAndEmbedding``: a zero pad of ``patch_size // 2``, the strided 'valid' conv, its map read
  as tokens, a LayerNorm.
- ``HierarchicalTransformerEncoder``: x + drop_path(attention(norm1(x))), then that + drop_path(mlp(norm2(that))).
- ``SegFormerMultiheadAttention``: Dense q, k and v (k and v from the tokens reduced by a strided conv and a
  LayerNorm where ``sr_ratio > 1``), softmax(q k^T * scale) with its dropout of the weights, then @ v (xconv's
  ``DotProductAttention`` layer), the output Dense and its dropout.
- ``MixFFN``: Dense, the tokens as a square map, a 3x3 depthwise conv, tokens again, GELU in its tanh form
  (``ops.nn.gelu``'s default), Dense.
- ``DropPath``: whole samples dropped in training (a Dropout with ``noise_shape=(None, 1, 1)``), nothing at rate 0.

keras-hub reads a square map from the tokens (H = W = int(sqrt(L))); tokens of any other count are refused.
"""

from __future__ import annotations

import math
from typing import Any

from ..backends._tf_env import keras
from ..errors import UnsupportedLayerError
from ._keras_hub import Call, _module_of, _refuse, _Tensor, drop_path

__all__ = ["MIT_EXPANSIONS"]


def _side(layer: Any, length: int) -> int:
    """The side of the square map keras-hub reads ``length`` tokens as (refused where they make none)."""
    side = int(math.sqrt(length))
    if side * side != length:
        raise UnsupportedLayerError(
            f"from_keras: layer {layer.name!r} (keras-hub {type(layer).__name__}) reads {length} tokens as a square "
            "map, which they do not make"
        )
    return side


def _embedding(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    x = inputs[0]
    p = int(layer.patch_size) // 2
    _refuse(
        layer,
        [
            (tuple(map(tuple, layer.padding.padding)) != ((p, p), (p, p)), f"padding={layer.padding.padding}"),
            (layer.proj.data_format != "channels_last", f"data_format={layer.proj.data_format!r}"),
        ],
    )
    h, w, c = (int(d) for d in x.shape[1:])
    padded = _Tensor((None, h + 2 * p, w + 2 * p, c))
    grid = _Tensor(tuple(layer.proj.compute_output_shape(padded.shape)))
    gh, gw, e = (int(d) for d in grid.shape[1:])
    tokens = _Tensor((None, gh * gw, e))
    names.update(
        {
            id(layer.padding): f"{layer.name}.padding",
            id(layer.proj): f"{layer.name}.proj",
            id(layer.norm): f"{layer.name}.norm",
        }
    )
    reshape = keras.layers.Reshape((gh * gw, e), dtype=layer.dtype_policy, name=f"{layer.name}.tokens")
    return [
        (layer.padding, [x], padded),
        (layer.proj, [padded], grid),
        (reshape, [grid], tokens),
        (layer.norm, [tokens], out),
    ]


def _drop_path(layer: Any, x: Any, name: str) -> tuple[list[Call], Any]:
    if not _module_of(layer, "DropPath", "mit"):
        raise UnsupportedLayerError(f"from_keras: layer {layer.name!r} ({type(layer).__name__}) is not supported")
    return drop_path(layer, float(layer.rate), x, name)


def _attention(layer: Any, x: Any, prefix: str, names: dict[int, str]) -> tuple[list[Call], Any]:
    from ..kinds.token._keras import DotProductAttentionLayer

    if not _module_of(layer, "SegFormerMultiheadAttention", "mit"):
        raise UnsupportedLayerError(f"from_keras: layer {layer.name!r} ({type(layer).__name__}) is not supported")
    n, c = int(x.shape[1]), int(x.shape[2])
    heads, dtype = int(layer.num_heads), layer.dtype_policy
    e = int(layer.q.units)
    drop = layer.dropout
    _refuse(
        layer,
        [
            (e != c or c % heads != 0, f"{heads} heads of {e} features on tokens of {c}"),
            (type(drop) is not keras.layers.Dropout or drop.noise_shape is not None, f"the weights' dropout {drop!r}"),
        ],
    )
    side = _side(layer, n)
    names.update(
        {
            id(part): f"{prefix}.{key}"
            for key in ("q", "k", "v", "proj", "dropout", "proj_drop")
            for part in [getattr(layer, key)]
        }
    )
    q, k, v, a, p, out = (_Tensor((None, n, c)) for _ in range(6))
    calls: list[Call] = [(layer.q, [x], q)]
    source = x
    if int(layer.sr_ratio) > 1:
        names.update({id(layer.sr): f"{prefix}.sr", id(layer.norm): f"{prefix}.norm"})
        grid = _Tensor((None, side, side, c))
        reduced = _Tensor(tuple(layer.sr.compute_output_shape(grid.shape)))
        m = int(reduced.shape[1]) * int(reduced.shape[2])
        flat, source = _Tensor((None, m, c)), _Tensor((None, m, c))
        k, v = _Tensor((None, m, c)), _Tensor((None, m, c))
        calls += [
            (keras.layers.Reshape((side, side, c), dtype=dtype, name=f"{prefix}.map"), [x], grid),
            (layer.sr, [grid], reduced),
            (keras.layers.Reshape((m, c), dtype=dtype, name=f"{prefix}.reduced"), [reduced], flat),
            (layer.norm, [flat], source),
        ]
    attend = DotProductAttentionLayer(
        heads, float(layer.scale), float(layer.dropout.rate), dtype=dtype, name=f"{prefix}.attend"
    )
    calls += [
        (layer.k, [source], k),
        (layer.v, [source], v),
        (attend, [q, k, v], a),
        (layer.proj, [a], p),
        (layer.proj_drop, [p], out),
    ]
    return calls, out


def _mix_ffn(layer: Any, x: Any, prefix: str, names: dict[int, str]) -> tuple[list[Call], Any]:
    from ..kinds.activation._keras import TorchActivation

    if not _module_of(layer, "MixFFN", "mit"):
        raise UnsupportedLayerError(f"from_keras: layer {layer.name!r} ({type(layer).__name__}) is not supported")
    n, dtype = int(x.shape[1]), layer.dtype_policy
    mid, c = int(layer.fc1.units), int(layer.fc2.units)
    side = _side(layer, n)
    names.update({id(layer.fc1): f"{prefix}.fc1", id(layer.dwconv): f"{prefix}.dwconv", id(layer.fc2): f"{prefix}.fc2"})
    hidden, grid, conv, tokens, act, out = (
        _Tensor((None, n, mid)),
        _Tensor((None, side, side, mid)),
        _Tensor((None, side, side, mid)),
        _Tensor((None, n, mid)),
        _Tensor((None, n, mid)),
        _Tensor((None, n, c)),
    )
    gelu = TorchActivation("gelu_tanh", dtype=dtype, name=f"{prefix}.gelu")  # (ops.nn.gelu: approximate=True)
    return [
        (layer.fc1, [x], hidden),
        (keras.layers.Reshape((side, side, mid), dtype=dtype, name=f"{prefix}.map"), [hidden], grid),
        (layer.dwconv, [grid], conv),
        (keras.layers.Reshape((n, mid), dtype=dtype, name=f"{prefix}.tokens"), [conv], tokens),
        (gelu, [tokens], act),
        (layer.fc2, [act], out),
    ], out


def _encoder(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    x, prefix, dtype = inputs[0], layer.name, layer.dtype_policy
    names.update({id(layer.norm1): f"{prefix}.norm1", id(layer.norm2): f"{prefix}.norm2"})
    normed, mid, normed2 = _Tensor(x.shape), _Tensor(x.shape), _Tensor(x.shape)
    attn_calls, a = _attention(layer.attn, normed, f"{prefix}.attn", names)
    drop1, a = _drop_path(layer.drop_path, a, f"{prefix}.drop_path")
    mlp_calls, m = _mix_ffn(layer.mlp, normed2, f"{prefix}.mlp", names)
    drop2, m = _drop_path(layer.drop_path, m, f"{prefix}.drop_path_1")
    return [
        (layer.norm1, [x], normed),
        *attn_calls,
        *drop1,
        (keras.layers.Add(dtype=dtype, name=f"{prefix}.add"), [x, a], mid),
        (layer.norm2, [mid], normed2),
        *mlp_calls,
        *drop2,
        (keras.layers.Add(dtype=dtype, name=f"{prefix}.add_1"), [mid, m], out),
    ]


#: (class, keras-hub family) -> the calls its ``call`` makes
MIT_EXPANSIONS = {
    ("OverlappingPatchingAndEmbedding", "mit"): _embedding,
    ("HierarchicalTransformerEncoder", "mit"): _encoder,
}
