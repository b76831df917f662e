"""keras-hub's Swin Transformer (``SwinTransformerBackbone``): its layers read as the Keras layers they are made of
(see :mod:`xconv.importers._keras_hub`).

- ``PatchEmbedding``: the strided 'valid' patch conv, its map read as tokens, the LayerNorm (where it has one).
- ``SwinTransformerStage``: its blocks, then its ``PatchMerging`` (where it has one).
- ``SwinTransformerBlock``: x + drop_path(window attention(norm1(x))) on the tokens read as an (H, W) map, then
  that + drop_path(mlp(norm2(that))). The window attention (roll, partition, fused qkv, relative position bias,
  shift mask, reverse, roll back, crop) is xconv's ``WindowAttention`` layer holding keras-hub's weights; its
  relative position index is checked to be Swin's.
- ``PatchMerging``: xconv's ``PatchMerging`` layer (Swin V1 order: the four pixels of each 2x2 neighbourhood,
  LayerNorm, then the reduction).
- ``Mlp``: Dense, Keras' GELU, Dense.
- ``DropPath``: whole samples dropped in training, nothing at rate 0.

keras-hub builds a shifted block's mask on the map before its padding (the padding in region 0), which is
Swin's mask only where the windows divide the map: a shifted block on a map its windows do not divide is
refused. Dropout inside the blocks (``dropout_rate``, ``attention_dropout``) is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends._tf_env import keras
from ..errors import UnsupportedLayerError
from ._keras_hub import Call, _module_of, _refuse, _Tensor, _weighted, drop_path

__all__ = ["SWIN_EXPANSIONS"]

_FAMILY = "swin_transformer"


def _is(layer: Any, name: str) -> bool:
    return _module_of(layer, name, _FAMILY)


def _embedding(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    _refuse(layer, [(layer.data_format != "channels_last", f"data_format={layer.data_format!r}")])
    x, dtype = inputs[0], layer.dtype_policy
    grid = _Tensor(tuple(layer.proj.compute_output_shape(x.shape)))
    gh, gw, e = (int(d) for d in grid.shape[1:])
    names[id(layer.proj)] = f"{layer.name}.proj"
    tokens = _Tensor((None, gh * gw, e)) if layer.norm is not None else out
    calls: list[Call] = [
        (layer.proj, [x], grid),
        (keras.layers.Reshape((gh * gw, e), dtype=dtype, name=f"{layer.name}.tokens"), [grid], tokens),
    ]
    if layer.norm is not None:
        names[id(layer.norm)] = f"{layer.name}.norm"
        calls.append((layer.norm, [tokens], out))
    return calls


def _drop_path(layer: Any, x: Any, name: str) -> tuple[list[Call], Any]:
    if type(layer) is keras.layers.Identity:
        return [], x
    if not _is(layer, "DropPath"):
        raise UnsupportedLayerError(f"from_keras: layer {layer.name!r} ({type(layer).__name__}) is not supported")
    return drop_path(layer, float(layer.drop_prob), x, name)


def _window_attention(block: Any, x: Any, prefix: str, names: dict[int, str]) -> tuple[list[Call], Any]:
    """The block's map attention: tokens as the (H, W) map, xconv's WindowAttention layer, tokens again."""
    from ..kinds.window import relative_position_index
    from ..kinds.window._keras import WindowAttentionLayer

    attn, dtype = block.attn, block.dtype_policy
    if not _is(attn, "WindowAttention"):
        raise UnsupportedLayerError(f"from_keras: layer {attn.name!r} ({type(attn).__name__}) is not supported")
    h, w = (int(d) for d in block.input_resolution)
    c, heads, size, shift = int(x.shape[-1]), int(attn.num_heads), int(block.window_size), int(block.shift_size)
    index = np.asarray(keras.ops.convert_to_numpy(attn.relative_position_index)).reshape(-1)
    _refuse(
        block,
        [
            (int(attn.head_dim) * heads != c, f"{heads} heads of {attn.head_dim} on {c} features"),
            (float(attn.scale) != float(attn.head_dim) ** -0.5, f"qk_scale={attn.scale}"),
            (float(attn.attn_drop_rate) != 0.0 or float(attn.proj_drop_rate) != 0.0, "dropout"),
            (tuple(attn.window_size) != (size, size), f"window_size={attn.window_size} in a block of {size}"),
            (not np.array_equal(index, relative_position_index((size, size))), "another relative position index"),
            (
                shift > 0 and (h % size != 0 or w % size != 0),
                f"a shift on a {h}x{w} map its windows of {size} do not divide",
            ),
            (int(x.shape[1]) != h * w, f"{x.shape[1]} tokens for a {h}x{w} map"),
        ],
    )
    layer = WindowAttentionLayer(
        heads, (size, size), (shift, shift), qkv_bias=bool(attn.qkv_bias), dtype=dtype, name=f"{prefix}.attn"
    )
    values = {
        "qkv_kernel": np.asarray(attn.qkv.kernel.numpy()),
        "proj_kernel": np.asarray(attn.proj.kernel.numpy()),
        "proj_bias_weight": np.asarray(attn.proj.bias.numpy()),
        "bias_table": np.asarray(attn.relative_position_bias_table.numpy()),
    }
    if attn.qkv_bias:
        values["qkv_bias_weight"] = np.asarray(attn.qkv.bias.numpy())
    grid, attended, out = _Tensor((None, h, w, c)), _Tensor((None, h, w, c)), _Tensor((None, h * w, c))
    return [
        (keras.layers.Reshape((h, w, c), dtype=dtype, name=f"{prefix}.map"), [x], grid),
        (_weighted(layer, grid.shape, values), [grid], attended),
        (keras.layers.Reshape((h * w, c), dtype=dtype, name=f"{prefix}.tokens"), [attended], out),
    ], out


def _mlp(layer: Any, x: Any, prefix: str, names: dict[int, str]) -> tuple[list[Call], Any]:
    _refuse(
        layer,
        [
            (not _is(layer, "Mlp"), "another MLP"),
            (layer.act_layer is not keras.activations.gelu, f"the activation {layer.act_layer!r}"),
            (layer.dropout is not None, "dropout"),
        ],
    )
    names.update({id(layer.fc1): f"{prefix}.fc1", id(layer.fc2): f"{prefix}.fc2"})
    dtype = layer.dtype_policy
    hidden, out = _Tensor((*x.shape[:-1], int(layer.fc1.units))), _Tensor((*x.shape[:-1], int(layer.fc2.units)))
    act = _Tensor(hidden.shape)
    gelu = keras.layers.Activation("gelu", dtype=dtype, name=f"{prefix}.gelu")  # (approximate=False, as called)
    return [(layer.fc1, [x], hidden), (gelu, [hidden], act), (layer.fc2, [act], out)], out


def _block(block: Any, x: Any, out: Any, names: dict[int, str], prefix: str) -> list[Call]:
    dtype = block.dtype_policy
    _refuse(block, [(block.act_layer is not keras.activations.gelu, f"the activation {block.act_layer!r}")])
    names.update({id(block.norm1): f"{prefix}.norm1", id(block.norm2): f"{prefix}.norm2"})
    normed, mid, normed2 = _Tensor(x.shape), _Tensor(x.shape), _Tensor(x.shape)
    attn_calls, a = _window_attention(block, normed, prefix, names)
    drop1, a = _drop_path(block.drop_path, a, f"{prefix}.drop_path")
    mlp_calls, m = _mlp(block.mlp, normed2, f"{prefix}.mlp", names)
    drop2, m = _drop_path(block.drop_path, m, f"{prefix}.drop_path_1")
    return [
        (block.norm1, [x], normed),
        *attn_calls,
        *drop1,
        (keras.layers.Add(dtype=dtype, name=f"{prefix}.add"), [x, a], mid),
        (block.norm2, [mid], normed2),
        *mlp_calls,
        *drop2,
        (keras.layers.Add(dtype=dtype, name=f"{prefix}.add_1"), [mid, m], out),
    ]


def _merging(layer: Any, x: Any, h: int, w: int, out: Any, prefix: str) -> list[Call]:
    from ..kinds.window._keras import PatchMergingLayer

    if not _is(layer, "PatchMerging"):
        raise UnsupportedLayerError(f"from_keras: layer {layer.name!r} ({type(layer).__name__}) is not supported")
    c, dtype = int(x.shape[-1]), layer.dtype_policy
    _refuse(layer, [(bool(layer.reduction.use_bias), "a bias in its reduction")])
    merge = PatchMergingLayer(2 * c, float(layer.norm.epsilon), True, dtype=dtype, name=f"{prefix}.downsample")
    values = {
        "reduction_kernel": np.asarray(layer.reduction.kernel.numpy()),
        "norm_gamma": np.asarray(layer.norm.gamma.numpy()),
        "norm_beta": np.asarray(layer.norm.beta.numpy()),
    }
    oh, ow = (h + 1) // 2, (w + 1) // 2
    grid, merged = _Tensor((None, h, w, c)), _Tensor((None, oh, ow, 2 * c))
    return [
        (keras.layers.Reshape((h, w, c), dtype=dtype, name=f"{prefix}.downsample_map"), [x], grid),
        (_weighted(merge, grid.shape, values), [grid], merged),
        (keras.layers.Reshape((oh * ow, 2 * c), dtype=dtype, name=f"{prefix}.downsample_tokens"), [merged], out),
    ]


def _stage(layer: Any, inputs: list[Any], out: Any, names: dict[int, str]) -> list[Call]:
    x = inputs[0]
    calls: list[Call] = []
    for i, block in enumerate(layer.blocks):
        if not _is(block, "SwinTransformerBlock"):
            raise UnsupportedLayerError(f"from_keras: layer {block.name!r} ({type(block).__name__}) is not supported")
        last = i == len(layer.blocks) - 1 and layer.downsample is None
        nxt = out if last else _Tensor(x.shape)
        calls += _block(block, x, nxt, names, f"{layer.name}.{block.name}")
        x = nxt
    if layer.downsample is not None:
        h, w = (int(d) for d in layer.input_resolution)
        calls += _merging(layer.downsample, x, h, w, out, layer.name)
    if not calls:  # (a stage of no blocks and no merging: its input)
        calls.append((keras.layers.Identity(dtype=layer.dtype_policy, name=f"{layer.name}.identity"), [x], out))
    return calls


#: (class, keras-hub family) -> the calls its ``call`` makes
SWIN_EXPANSIONS = {
    ("PatchEmbedding", _FAMILY): _embedding,
    ("SwinTransformerStage", _FAMILY): _stage,
}
