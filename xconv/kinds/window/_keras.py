"""Windowed attention and patch merging: the Keras parts (built layers on NHWC maps and their weight layouts).

The relative position bias is read from the table through a fixed 0/1 matrix (one row per pair of tokens, a 1
at its table row): a product that is exact, whose gradient is dense and the same in every Keras backend."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ..._info import LayerInfo
from ...backends._tf_env import keras
from .._keras_names import keras_name
from . import MERGE_ORDER, PatchMerging, WindowAttention, geometry, partition_plan, relative_position_index, shift_mask

ops = keras.ops


@keras.saving.register_keras_serializable(package="xconv", name="WindowAttention")
class WindowAttentionLayer(keras.layers.Layer):
    """Swin's (shifted) window attention on an NHWC map (see :class:`xconv.WindowAttention`): ``qkv_kernel``
    (C, 3C), ``qkv_bias``, ``proj_kernel`` (C, C), ``proj_bias``, ``bias_table`` ((2wh-1)(2ww-1), heads); with
    ``cosine`` (Swin V2) ``logit_scale`` (heads, 1, 1), the position-bias MLP's ``cpb0_kernel`` (2, hidden),
    ``cpb0_bias``, ``cpb2_kernel`` (hidden, heads) and the non-trainable ``coords`` in place of the table."""

    def __init__(
        self,
        num_heads: int,
        window_size: tuple[int, int],
        shift_size: tuple[int, int] = (0, 0),
        qkv_bias: bool = True,
        proj_bias: bool = True,
        dropout: float = 0.0,
        cosine: bool = False,
        cpb_hidden: int = 512,
        grid: bool = False,
        scale: float | None = None,
        state_index: bool = False,
        roll_first: bool = False,
        position_bias: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.roll_first, self.position_bias = bool(roll_first), bool(position_bias)
        self.grid, self.scale = bool(grid), None if scale is None else float(scale)
        self.state_index = bool(state_index)  # (the index is a constant here: whether the weights hold it)
        self.num_heads, self.cosine, self.cpb_hidden = int(num_heads), bool(cosine), int(cpb_hidden)
        self.window_size = (int(window_size[0]), int(window_size[1]))
        self.shift_size = (int(shift_size[0]), int(shift_size[1]))
        self.qkv_bias, self.proj_bias, self.dropout = bool(qkv_bias), bool(proj_bias), float(dropout)
        self.seed_generator = keras.random.SeedGenerator() if self.dropout > 0 else None

    def build(self, input_shape: Any) -> None:
        _, h, w, c = input_shape
        self.size = (int(h), int(w))
        add = self.add_weight
        self.qkv_kernel = add(name="qkv_kernel", shape=(c, 3 * c), initializer="zeros")
        self.qkv_bias_weight = add(name="qkv_bias", shape=(3 * c,), initializer="zeros") if self.qkv_bias else None
        self.proj_kernel = add(name="proj_kernel", shape=(c, c), initializer="zeros")
        self.proj_bias_weight = add(name="proj_bias", shape=(c,), initializer="zeros") if self.proj_bias else None
        wh, ww = self.window_size
        rows = (2 * wh - 1) * (2 * ww - 1)
        if self.cosine:
            hidden, heads = self.cpb_hidden, self.num_heads
            self.logit_scale = add(name="logit_scale", shape=(heads, 1, 1), initializer="zeros")
            self.cpb0_kernel = add(name="cpb0_kernel", shape=(2, hidden), initializer="zeros")
            self.cpb0_bias = add(name="cpb0_bias", shape=(hidden,), initializer="zeros")
            self.cpb2_kernel = add(name="cpb2_kernel", shape=(hidden, heads), initializer="zeros")
            shape = (1, 2 * wh - 1, 2 * ww - 1, 2)
            self.coords = add(name="coords", shape=shape, initializer="zeros", trainable=False)
        elif self.position_bias:
            self.bias_table = add(name="bias_table", shape=(rows, self.num_heads), initializer="zeros")
        spec = WindowAttention(
            int(c), self.num_heads, self.window_size, self.shift_size, grid=self.grid, scale=self.scale
        )
        self._score_scale = spec.score_scale
        index = relative_position_index(self.window_size)
        self._pick = np.eye(rows)[index]  # (N*N, rows): row i*N + j is one-hot at token pair (i, j)'s table row
        self._mask = shift_mask(spec, *self.size)
        self._geometry = geometry(spec, *self.size)

    def call(self, x: Any, training: Any = None) -> Any:
        h, w = self.size
        c = int(x.shape[-1])
        ph, pw, _, _ = self._geometry
        wh, ww = self.window_size
        n, heads = wh * ww, self.num_heads
        t = self._roll(x, -1) if self.roll_first else x  # (timm's order: roll, then pad)
        t = ops.pad(t, ((0, 0), (0, ph - h), (0, pw - w), (0, 0))) if (ph, pw) != (h, w) else t
        t = self._partition(t if self.roll_first else self._roll(t, -1))
        qkv = ops.matmul(t, ops.cast(self.qkv_kernel, x.dtype))
        if self.qkv_bias_weight is not None:
            bias_used = ops.cast(self.qkv_bias_weight, x.dtype)
            if self.cosine:  # (Swin V2: no k bias)
                bias_used = ops.concatenate([bias_used[:c], ops.zeros_like(bias_used[c : 2 * c]), bias_used[2 * c :]])
            qkv = qkv + bias_used
        qkv = ops.transpose(ops.reshape(qkv, (-1, n, 3, heads, c // heads)), (2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.cosine:
            scores = ops.matmul(self._unit(q), ops.transpose(self._unit(k), (0, 1, 3, 2)))
            limit = ops.convert_to_tensor(np.log(100.0), dtype=x.dtype)
            scores = scores * ops.exp(ops.minimum(ops.cast(self.logit_scale, x.dtype), limit))
            hidden = ops.reshape(ops.cast(self.coords, x.dtype), (-1, 2))
            hidden = ops.relu(
                ops.matmul(hidden, ops.cast(self.cpb0_kernel, x.dtype)) + ops.cast(self.cpb0_bias, x.dtype)
            )
            table = 16 * ops.sigmoid(ops.matmul(hidden, ops.cast(self.cpb2_kernel, x.dtype)))
        else:
            scale = ops.convert_to_tensor(self._score_scale, dtype=x.dtype)
            scores = ops.matmul(q * scale, ops.transpose(k, (0, 1, 3, 2)))
            table = ops.cast(self.bias_table, x.dtype) if self.position_bias else None
        if table is not None:
            pick = ops.convert_to_tensor(self._pick, dtype=x.dtype)
            scores = scores + ops.transpose(ops.reshape(ops.matmul(pick, table), (n, n, heads)), (2, 0, 1))
        if self._mask is not None:
            windows = self._mask.shape[0]
            mask = ops.convert_to_tensor(self._mask[None, :, None], dtype=x.dtype)
            scores = ops.reshape(ops.reshape(scores, (-1, windows, heads, n, n)) + mask, (-1, heads, n, n))
        weights = ops.softmax(scores, axis=-1)
        if training and self.seed_generator is not None:
            weights = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        o = ops.reshape(ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3)), (-1, n, c))
        o = ops.matmul(o, ops.cast(self.proj_kernel, x.dtype))
        if self.proj_bias_weight is not None:
            o = o + ops.cast(self.proj_bias_weight, x.dtype)
        o = self._reverse(o)
        o = o if self.roll_first else self._roll(o, 1)
        o = o[:, :h, :w] if (ph, pw) != (h, w) else o
        return self._roll(o, 1) if self.roll_first else o

    @staticmethod
    def _unit(t: Any) -> Any:
        """t / max(|t|, 1e-12) over its last axis (torch's ``F.normalize``)."""
        norm = ops.sqrt(ops.sum(ops.square(t), axis=-1, keepdims=True))
        return t / ops.maximum(norm, ops.convert_to_tensor(1e-12, dtype=t.dtype))

    def _roll(self, t: Any, sign: int) -> Any:
        """The padded map rolled by ``sign`` times the shift (-1 on the way in, 1 on the way out)."""
        _, _, sh, sw = self._geometry
        return ops.roll(ops.roll(t, sign * sh, axis=1), sign * sw, axis=2) if sh or sw else t

    def _partition(self, t: Any) -> Any:
        """(N, pH, pW, C) -> (N * windows, wh*ww, C), windows and their tokens row-major."""
        ph, pw, _, _ = self._geometry
        (wh, ww), c = self.window_size, int(t.shape[-1])
        (view, perm), _ = partition_plan(ph, pw, self.window_size, self.grid)
        return ops.reshape(ops.transpose(ops.reshape(t, (-1, *view, c)), perm), (-1, wh * ww, c))

    def _reverse(self, o: Any) -> Any:
        """The inverse of :meth:`_partition`."""
        ph, pw, _, _ = self._geometry
        c = int(o.shape[-1])
        _, (view, perm) = partition_plan(ph, pw, self.window_size, self.grid)
        return ops.reshape(ops.transpose(ops.reshape(o, (-1, *view, c)), perm), (-1, ph, pw, c))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "window_size": list(self.window_size),
            "shift_size": list(self.shift_size),
            "qkv_bias": self.qkv_bias,
            "proj_bias": self.proj_bias,
            "dropout": self.dropout,
            "cosine": self.cosine,
            "cpb_hidden": self.cpb_hidden,
            "grid": self.grid,
            "scale": self.scale,
            "state_index": self.state_index,
            "roll_first": self.roll_first,
            "position_bias": self.position_bias,
        }


@keras.saving.register_keras_serializable(package="xconv", name="PatchMerging")
class PatchMergingLayer(keras.layers.Layer):
    """Swin's patch merging on an NHWC map (see :class:`xconv.PatchMerging`): ``reduction_kernel`` (4C, out),
    ``norm_gamma``, ``norm_beta``."""

    def __init__(self, out_dim: int, eps: float = 1e-5, norm_first: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_dim, self.eps, self.norm_first = int(out_dim), float(eps), bool(norm_first)

    def build(self, input_shape: Any) -> None:
        c = int(input_shape[-1])
        normed = 4 * c if self.norm_first else self.out_dim
        self.reduction_kernel = self.add_weight(
            name="reduction_kernel", shape=(4 * c, self.out_dim), initializer="zeros"
        )
        self.norm_gamma = self.add_weight(name="norm_gamma", shape=(normed,), initializer="ones")
        self.norm_beta = self.add_weight(name="norm_beta", shape=(normed,), initializer="zeros")

    def _norm(self, z: Any) -> Any:
        mean = ops.mean(z, axis=-1, keepdims=True)
        var = ops.mean(ops.square(z - mean), axis=-1, keepdims=True)
        eps = ops.convert_to_tensor(self.eps, dtype=z.dtype)
        zhat = (z - mean) / ops.sqrt(var + eps)
        return zhat * ops.cast(self.norm_gamma, z.dtype) + ops.cast(self.norm_beta, z.dtype)

    def call(self, x: Any) -> Any:
        h, w = int(x.shape[1]), int(x.shape[2])
        if h % 2 or w % 2:
            x = ops.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        z = ops.concatenate(self._neighbourhood(x), axis=-1)
        kernel = ops.cast(self.reduction_kernel, x.dtype)
        return ops.matmul(self._norm(z), kernel) if self.norm_first else self._norm(ops.matmul(z, kernel))

    def _neighbourhood(self, x: Any) -> list[Any]:
        """The four pixels of every 2x2 neighbourhood, in Swin's order."""
        return [x[:, r::2, c::2] for r, c in MERGE_ORDER]

    def compute_output_shape(self, input_shape: Any) -> Any:
        n, h, w, _ = input_shape
        return (n, -(-h // 2), -(-w // 2), self.out_dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_dim": self.out_dim, "eps": self.eps, "norm_first": self.norm_first}


def _window_attention(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer = cast(WindowAttention, info.layer)
    return WindowAttentionLayer(
        layer.num_heads,
        layer.window_size,
        layer.shift_size,
        layer.qkv_bias,
        layer.proj_bias,
        layer.dropout,
        layer.cosine,
        layer.cpb_hidden,
        layer.grid,
        layer.scale,
        layer.state_index,
        layer.roll_first,
        layer.position_bias,
        dtype=dtype,
        name=keras_name(info),
    )(x)


def _patch_merging(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer = cast(PatchMerging, info.layer)
    return PatchMergingLayer(layer.features, layer.eps, layer.norm_first, dtype=dtype, name=keras_name(info))(x)


BUILDERS: dict[type, Any] = {
    WindowAttention: _window_attention,
    PatchMerging: _patch_merging,
}

_WINDOW_VARIABLES = {
    "qkv.weight": "qkv_kernel",
    "qkv.bias": "qkv_bias_weight",
    "proj.weight": "proj_kernel",
    "proj.bias": "proj_bias_weight",
    "relative_position_bias_table": "bias_table",
    "logit_scale": "logit_scale",
    "cpb_mlp.0.weight": "cpb0_kernel",
    "cpb_mlp.0.bias": "cpb0_bias",
    "cpb_mlp.2.weight": "cpb2_kernel",
    "relative_coords_table": "coords",
}
_MERGING_VARIABLES = {"reduction.weight": "reduction_kernel", "norm.weight": "norm_gamma", "norm.bias": "norm_beta"}

VARIABLES: dict[type, Any] = {
    WindowAttention: lambda layer, info: {
        name: getattr(layer, _WINDOW_VARIABLES[name]) for name in info.params if name not in info.fixed
    },
    PatchMerging: lambda layer, info: {name: getattr(layer, _MERGING_VARIABLES[name]) for name in info.params},
}

LAYOUTS: dict[type, Any] = {
    WindowAttention: lambda info, name: "linear" if name.endswith(".weight") else "same",
    PatchMerging: lambda info, name: "linear" if name == "reduction.weight" else "same",
}


def _arrays(layer: Any, names: dict[str, str]) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(layer, v).numpy()) for k, v in names.items() if getattr(layer, v, None) is not None}


def _own_window_attention(layer: WindowAttentionLayer, where: str, current: tuple[int, ...]) -> Any:
    c = int(layer.qkv_kernel.shape[0])
    spec = WindowAttention(
        c, layer.num_heads, layer.window_size, layer.shift_size, layer.qkv_bias, layer.proj_bias, layer.dropout,
        cosine=layer.cosine, cpb_hidden=layer.cpb_hidden, grid=layer.grid, scale=layer.scale,
        state_index=layer.state_index, roll_first=layer.roll_first, position_bias=layer.position_bias,
    )  # fmt: skip
    arrays = _arrays(layer, _WINDOW_VARIABLES)
    if layer.state_index:  # (a constant of the layer, in the weights as the source of its spec keeps it)
        arrays["relative_position_index"] = relative_position_index(layer.window_size)
    return spec, arrays


def _own_patch_merging(layer: PatchMergingLayer, where: str, current: tuple[int, ...]) -> Any:
    c = int(layer.reduction_kernel.shape[0]) // 4
    return PatchMerging(c, layer.out_dim, layer.eps, layer.norm_first), _arrays(layer, _MERGING_VARIABLES)


KERAS_IMPORTS: dict[type, Any] = {
    WindowAttentionLayer: _own_window_attention,
    PatchMergingLayer: _own_patch_merging,
}
