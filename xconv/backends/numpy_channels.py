"""numpy reference forward and backward of the channel-axis kinds (LayerNorm, ChannelLinear, LayerScale, Narrow,
ChannelShuffle); merged into the reference backend's tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..shapes import LayerInfo, narrow_axis, shuffle_order
from ..spec import ChannelLinear, ChannelShuffle, LayerNorm, LayerScale, Narrow


def _per_channel(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _ln_parts(info: LayerInfo, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(xhat, 1 / sqrt(var + eps)), normalised over axis 1 (channels, or the features of a flat input)."""
    mean = x.mean(axis=1, keepdims=True)
    invstd = 1.0 / np.sqrt(x.var(axis=1, keepdims=True) + info.layer.eps)  # type: ignore[attr-defined]
    return (x - mean) * invstd, invstd


def _ln_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Any) -> np.ndarray:
    y, _ = _ln_parts(info, x)
    if "weight" in p:
        y = y * _per_channel(p["weight"], x)
    if "bias" in p:
        y = y + _per_channel(p["bias"], x)
    return y


def _ln_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Any) -> Any:
    xhat, invstd = _ln_parts(info, x)
    gxhat = go * _per_channel(p["weight"], x) if "weight" in p else go
    n = x.shape[1]
    gx = invstd / n * (n * gxhat - gxhat.sum(axis=1, keepdims=True) - xhat * (gxhat * xhat).sum(axis=1, keepdims=True))
    axes = (0,) + tuple(range(2, x.ndim))
    grads = {}
    if "weight" in p:
        grads["weight"] = (go * xhat).sum(axis=axes)
    if "bias" in p:
        grads["bias"] = go.sum(axis=axes)
    return gx, grads


def _cl_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Any) -> np.ndarray:
    y: np.ndarray = np.einsum("nchw,oc->nohw", x, p["weight"])
    return y + _per_channel(p["bias"], y) if "bias" in p else y


def _cl_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Any) -> Any:
    grads = {"weight": np.einsum("nohw,nchw->oc", go, x)}
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return np.einsum("nohw,oc->nchw", go, p["weight"]), grads


def _narrow_index(info: LayerInfo, ndim: int) -> tuple[slice, ...]:
    layer = info.layer
    index = [slice(None)] * ndim
    index[narrow_axis(info)] = slice(layer.start, layer.start + layer.length)  # type: ignore[attr-defined]
    return tuple(index)


def _narrow_backward(info: LayerInfo, x: np.ndarray, go: np.ndarray) -> np.ndarray:
    gx = np.zeros_like(x)
    gx[_narrow_index(info, x.ndim)] = go
    return gx


def _order(info: LayerInfo) -> np.ndarray:
    return shuffle_order(info.input_shape[0], info.layer.groups)  # type: ignore[attr-defined]


FORWARD: dict[type, Any] = {
    LayerNorm: _ln_forward,
    ChannelLinear: _cl_forward,
    LayerScale: lambda info, p, x, mode: x * p["layer_scale"],
    Narrow: lambda info, p, x, mode: x[_narrow_index(info, x.ndim)],
    ChannelShuffle: lambda info, p, x, mode: x[:, _order(info)],
}

BACKWARD: dict[type, Any] = {
    LayerNorm: _ln_backward,
    ChannelLinear: _cl_backward,
    LayerScale: lambda info, p, x, go, mode: (
        go * p["layer_scale"],
        {"layer_scale": (go * x).sum(axis=(0, 2, 3))[:, None, None]},
    ),
    Narrow: lambda info, p, x, go, mode: (_narrow_backward(info, x, go), {}),
    ChannelShuffle: lambda info, p, x, go, mode: (go[:, np.argsort(_order(info))], {}),
}
