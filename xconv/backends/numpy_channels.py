"""numpy reference forward and backward of the channel-axis kinds (LayerNorm, GroupNorm, PReLU, ChannelLinear,
LayerScale, Narrow, ChannelShuffle); merged into the reference backend's tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..shapes import LayerInfo, narrow_axis, shuffle_order
from ..spec import ChannelLinear, ChannelShuffle, GroupNorm, LayerNorm, LayerScale, Narrow, PReLU


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


def _gn_parts(info: LayerInfo, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(xhat, 1 / sqrt(var + eps)) with x seen as (N, groups, C / groups, H, W), normalised per sample and group."""
    n, c, h, w = x.shape
    g = info.layer.num_groups  # type: ignore[attr-defined]
    xg = x.reshape(n, g, c // g, h, w)
    mean = xg.mean(axis=(2, 3, 4), keepdims=True)
    invstd = 1.0 / np.sqrt(xg.var(axis=(2, 3, 4), keepdims=True) + info.layer.eps)  # type: ignore[attr-defined]
    return (xg - mean) * invstd, invstd


def _gn_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Any) -> np.ndarray:
    xhat, _ = _gn_parts(info, x)
    y = xhat.reshape(x.shape)
    return y * _per_channel(p["weight"], x) + _per_channel(p["bias"], x) if "weight" in p else y


def _gn_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Any) -> Any:
    xhat, invstd = _gn_parts(info, x)
    gxhat = (go * _per_channel(p["weight"], x) if "weight" in p else go).reshape(xhat.shape)
    m = xhat[0, 0].size
    axes = (2, 3, 4)
    gx = (
        invstd
        / m
        * (m * gxhat - gxhat.sum(axis=axes, keepdims=True) - xhat * (gxhat * xhat).sum(axis=axes, keepdims=True))
    )
    grads = {}
    if "weight" in p:
        grads["weight"] = (go * xhat.reshape(x.shape)).sum(axis=(0, 2, 3))
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return gx.reshape(x.shape), grads


def _slope(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return p["weight"].reshape(()) if p["weight"].size == 1 else _per_channel(p["weight"], x)


def _prelu_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Any) -> Any:
    negative = np.minimum(x, 0.0)
    axes = tuple(a for a in range(x.ndim) if a != 1 or p["weight"].size == 1)
    gw = (go * negative).sum(axis=axes).reshape(p["weight"].shape)
    return np.where(x > 0, go, go * _slope(p, x)), {"weight": gw}


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
    GroupNorm: _gn_forward,
    PReLU: lambda info, p, x, mode: np.where(x >= 0, x, x * _slope(p, x)),
    ChannelLinear: _cl_forward,
    LayerScale: lambda info, p, x, mode: x * p["layer_scale"],
    Narrow: lambda info, p, x, mode: x[_narrow_index(info, x.ndim)],
    ChannelShuffle: lambda info, p, x, mode: x[:, _order(info)],
}

BACKWARD: dict[type, Any] = {
    LayerNorm: _ln_backward,
    GroupNorm: _gn_backward,
    PReLU: _prelu_backward,
    ChannelLinear: _cl_backward,
    LayerScale: lambda info, p, x, go, mode: (
        go * p["layer_scale"],
        {"layer_scale": (go * x).sum(axis=(0, 2, 3))[:, None, None]},
    ),
    Narrow: lambda info, p, x, go, mode: (_narrow_backward(info, x, go), {}),
    ChannelShuffle: lambda info, p, x, go, mode: (go[:, np.argsort(_order(info))], {}),
}
