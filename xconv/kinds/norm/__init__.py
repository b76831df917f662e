"""Normalisations: BatchNorm2d, BatchNorm1d, LayerNorm and GroupNorm."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._info import LayerInfo, Shape, _Ctx
from ..._layer import LAYER_TYPES, Layer
from ..._normalize import (
    as_bool,
    as_float,
    as_int,
)
from ...errors import SpecError
from .._numpy import Mode, per_channel
from .._registry import register


@dataclass(frozen=True, repr=False)
class _BatchNorm(Layer):
    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    #: with ``affine``: False keeps the gain at 1 (no ``weight``), as Keras' ``BatchNormalization(scale=False)``
    scale: bool = True
    #: with ``affine``: False keeps the shift at 0 (no ``bias``), as Keras' ``center=False``
    center: bool = True
    #: always normalise with the running statistics, in training too, and learn nothing (the gain, shift and
    #: statistics are buffers): Keras' ``BatchNormalization(trainable=False)``, the fine-tuning recipe
    frozen: bool = False

    _positional = ("num_features",)

    def _validate(self) -> None:
        me = self.kind
        self._set("num_features", as_int(me, "num_features", self.num_features, minimum=1))
        self._set("eps", as_float(me, "eps", self.eps, low=0.0, low_open=True))
        if self.momentum is not None:
            self._set("momentum", as_float(me, "momentum", self.momentum, low=0.0, high=1.0))
        self._set("affine", as_bool(me, "affine", self.affine))
        self._set("track_running_stats", as_bool(me, "track_running_stats", self.track_running_stats))
        self._set("scale", as_bool(me, "scale", self.scale))
        self._set("center", as_bool(me, "center", self.center))
        self._set("frozen", as_bool(me, "frozen", self.frozen))
        if self.frozen and not self.track_running_stats:
            raise SpecError(f"{me}: frozen=True normalises with running statistics; it needs track_running_stats")
        if not (self.scale or self.center):
            self._set("affine", False)
        if not self.affine:  # nothing learned: one spelling
            self._set("scale", True)
            self._set("center", True)

    @property
    def affine_params(self) -> tuple[str, ...]:
        """The learned parameters: ("weight", "bias"), one of them, or none."""
        if not self.affine:
            return ()
        return tuple(n for n, on in (("weight", self.scale), ("bias", self.center)) if on)


LAYER_TYPES.pop("_BatchNorm")  # the shared base is no kind of its own


@dataclass(frozen=True, repr=False)
class BatchNorm2d(_BatchNorm):
    """Batch normalisation over the channels of a (C, H, W) map, PyTorch's defaults (eps 1e-5, momentum 0.1,
    unbiased running variance; ``momentum=None`` is torch's cumulative average).

    >>> BatchNorm2d(16)
    BatchNorm2d(16)
    """


@dataclass(frozen=True, repr=False)
class BatchNorm1d(_BatchNorm):
    """Batch normalisation over the features of a flat input (after Linear or Flatten), PyTorch's defaults.
    On tokens (L, E), over each feature of every token of the batch: torch's ``bn(x.flatten(0, 1))
    .reshape_as(x)`` (timm's LeViT), Keras' ``BatchNormalization(axis=-1)`` on (N, L, E).

    >>> BatchNorm1d(64, momentum=None)
    BatchNorm1d(64, momentum=None)
    """


@dataclass(frozen=True, repr=False)
class LayerNorm(Layer):
    """Layer normalisation over the channel axis: the features of a flat input (torch's ``nn.LayerNorm(F)``),
    or the channels at every pixel of a (C, H, W) map (torchvision's ``LayerNorm2d``, torch's permute ->
    ``nn.LayerNorm(C)`` -> permute; Keras' ``LayerNormalization(axis=-1)`` on NHWC). (x - mean) / sqrt(var + eps)
    with the biased variance, then ``weight`` and ``bias`` of shape (num_features,) when ``elementwise_affine``.

    >>> LayerNorm(96, eps=1e-6)
    LayerNorm(96, eps=1e-06)
    """

    num_features: int
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    _positional = ("num_features",)

    def _validate(self) -> None:
        me = "LayerNorm"
        self._set("num_features", as_int(me, "num_features", self.num_features, minimum=1))
        self._set("eps", as_float(me, "eps", self.eps, low=0.0, low_open=True))
        self._set("elementwise_affine", as_bool(me, "elementwise_affine", self.elementwise_affine))
        self._set("bias", as_bool(me, "bias", self.bias) and self.elementwise_affine)


@dataclass(frozen=True, repr=False)
class GroupNorm(Layer):
    """torch's ``nn.GroupNorm``: the channels of a (C, H, W) map cut into ``num_groups`` runs of C / num_groups
    channels, each run normalised over its channels and pixels, (x - mean) / sqrt(var + eps) with the biased
    variance, then a per-channel ``weight`` and ``bias`` when ``affine`` (``bias=False``: the weight alone,
    timm's ``GroupNorm1NoBias``). ``nn.InstanceNorm2d`` without running statistics is ``GroupNorm(C, C)``;
    Keras' ``GroupNormalization(groups, axis=-1)`` is the same function.

    >>> GroupNorm(8, 32)
    GroupNorm(8, 32)
    """

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True

    _positional = ("num_groups", "num_channels")

    def _validate(self) -> None:
        me = "GroupNorm"
        self._set("num_groups", as_int(me, "num_groups", self.num_groups, minimum=1))
        self._set("num_channels", as_int(me, "num_channels", self.num_channels, minimum=1))
        if self.num_channels % self.num_groups:
            raise SpecError(f"{me}: num_channels={self.num_channels} is not divisible by num_groups={self.num_groups}")
        self._set("eps", as_float(me, "eps", self.eps, low=0.0, low_open=True))
        self._set("affine", as_bool(me, "affine", self.affine))
        self._set("bias", as_bool(me, "bias", self.bias) and self.affine)


def _batchnorm(ctx: _Ctx, layer: _BatchNorm, source: Shape | None) -> LayerInfo:
    if isinstance(layer, BatchNorm2d):
        features = ctx.need_map()[0]
        what = "channels"
    else:
        if len(ctx.shape) not in (1, 2):
            raise ctx.error(
                f"BatchNorm1d needs a flat input (after Linear or Flatten) or tokens (L, E), but its input has shape "
                f"{ctx.shape}; use BatchNorm2d on (C, H, W) maps"
            )
        if len(ctx.shape) == 2 and layer.frozen:
            raise ctx.error("frozen=True is supported on a flat input, not on tokens")
        features, what = ctx.shape[-1], "features" if len(ctx.shape) == 1 else "features per token"
    if layer.num_features != features:
        raise ctx.error(f"num_features={layer.num_features} but its input has {features} {what}")
    n = (layer.num_features,)
    params: dict[str, Shape] = {name: n for name in layer.affine_params}
    buffers: tuple[str, ...] = ()
    if layer.track_running_stats:
        params.update(running_mean=n, running_var=n, num_batches_tracked=())
        buffers = ("running_mean", "running_var", "num_batches_tracked")
    if layer.frozen:  # nothing is learned: the gain and shift are held like the statistics
        buffers = (*layer.affine_params, *buffers)
    keep = source if len(ctx.shape) == 1 else None
    return LayerInfo(
        ctx.index, layer, ctx.shape, ctx.shape, params, input_source=keep, output_source=keep, buffers=buffers
    )


def _layernorm(ctx: _Ctx, layer: LayerNorm, source: Shape | None) -> LayerInfo:
    features = ctx.shape[-1] if len(ctx.shape) == 2 else ctx.shape[0]
    if layer.num_features != features:
        what = {3: "channels", 2: "features per token"}.get(len(ctx.shape), "features")
        raise ctx.error(f"num_features={layer.num_features} but its input has {features} {what}")
    n: tuple[int, ...] = (layer.num_features,)
    params = {"weight": n} if layer.elementwise_affine else {}
    if layer.bias:
        params["bias"] = n
    keep = source if len(ctx.shape) == 1 else None
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params, input_source=keep, output_source=keep)


def _groupnorm(ctx: _Ctx, layer: GroupNorm, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if layer.num_channels != c:
        raise ctx.error(f"num_channels={layer.num_channels} but its input has {c} channels")
    if c // layer.num_groups * h * w == 1:
        raise ctx.error(
            f"each of its {layer.num_groups} groups holds one value of a {ctx.shape} map, which normalises to 0 "
            "(torch refuses it for a batch of one); use fewer groups or a larger map"
        )
    params: dict[str, Shape] = {"weight": (c,), "bias": (c,)} if layer.affine else {}
    if not layer.bias:
        params.pop("bias", None)
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params)


def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0, 2, 3) if x.ndim == 4 else (0,)


def _bn_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, -1, 1, 1) if x.ndim == 4 else (1, -1)


def _bn_stats(
    info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mean, variance, from the batch?) that normalise ``x``."""
    layer = info.layer
    if (mode.training and not layer.frozen) or not layer.track_running_stats:  # type: ignore[attr-defined]
        axes = _bn_axes(x)
        return x.mean(axis=axes), x.var(axis=axes), True
    return p["running_mean"], p["running_var"], False


def _bn_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    if len(info.input_shape) == 2:  # tokens: the (N * L, E) batch of their features
        return _bn_forward(
            dataclasses.replace(info, input_shape=info.input_shape[1:]), p, x.reshape(-1, x.shape[-1]), mode
        ).reshape(x.shape)
    layer = info.layer
    mean, var, batch = _bn_stats(info, p, x, mode)
    if batch and mode.training and layer.track_running_stats and mode.update:  # type: ignore[attr-defined]
        n = x.size // x.shape[1]
        if n < 2:
            raise ValueError(f"BatchNorm: expected more than 1 value per channel when training, got {n}")
        p["num_batches_tracked"][...] += 1
        m = layer.momentum  # type: ignore[attr-defined]
        f = 1.0 / int(p["num_batches_tracked"]) if m is None else m
        p["running_mean"][...] = (1 - f) * p["running_mean"] + f * mean
        p["running_var"][...] = (1 - f) * p["running_var"] + f * var * (n / (n - 1))
    shape = _bn_shape(x)
    y: np.ndarray = (x - mean.reshape(shape)) / np.sqrt(var + layer.eps).reshape(shape)  # type: ignore[attr-defined]
    if "weight" in p:
        y = y * p["weight"].reshape(shape)
    if "bias" in p:
        y = y + p["bias"].reshape(shape)
    return y


def _bn_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    if len(info.input_shape) == 2:  # tokens: the (N * L, E) batch of their features
        flat = dataclasses.replace(info, input_shape=info.input_shape[1:])
        gx, grads = _bn_backward(flat, p, x.reshape(-1, x.shape[-1]), go.reshape(-1, go.shape[-1]), mode)
        return gx.reshape(x.shape), grads
    layer = info.layer
    mean, var, batch = _bn_stats(info, p, x, mode)
    shape, axes = _bn_shape(x), _bn_axes(x)
    invstd = (1.0 / np.sqrt(var + layer.eps)).reshape(shape)  # type: ignore[attr-defined]
    xhat = (x - mean.reshape(shape)) * invstd
    gxhat = go * p["weight"].reshape(shape) if "weight" in p else go
    if batch:  # mean and variance depend on x too
        n = x.size // x.shape[1]
        gx = (
            invstd
            / n
            * (n * gxhat - gxhat.sum(axis=axes).reshape(shape) - xhat * (gxhat * xhat).sum(axis=axes).reshape(shape))
        )
    else:
        gx = gxhat * invstd
    grads = {}
    if "weight" in p:
        grads["weight"] = (go * xhat).sum(axis=axes)
    if "bias" in p:
        grads["bias"] = go.sum(axis=axes)
    return gx, grads


def _ln_axis(info: LayerInfo) -> int:
    """The normalised axis: 1 (channels, or the features of a flat input), or the last (a token's features)."""
    return -1 if len(info.input_shape) == 2 else 1


def _ln_gain(info: LayerInfo, value: np.ndarray, x: np.ndarray) -> np.ndarray:
    return value if len(info.input_shape) == 2 else per_channel(value, x)


def _ln_parts(info: LayerInfo, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(xhat, 1 / sqrt(var + eps)), normalised over the feature axis (see ``_ln_axis``)."""
    axis = _ln_axis(info)
    mean = x.mean(axis=axis, keepdims=True)
    invstd = 1.0 / np.sqrt(x.var(axis=axis, keepdims=True) + info.layer.eps)  # type: ignore[attr-defined]
    return (x - mean) * invstd, invstd


def _ln_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    y, _ = _ln_parts(info, x)
    if "weight" in p:
        y = y * _ln_gain(info, p["weight"], x)
    if "bias" in p:
        y = y + _ln_gain(info, p["bias"], x)
    return y


def _ln_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    xhat, invstd = _ln_parts(info, x)
    gxhat = go * _ln_gain(info, p["weight"], x) if "weight" in p else go
    a = _ln_axis(info)
    n = x.shape[a]
    gx = invstd / n * (n * gxhat - gxhat.sum(axis=a, keepdims=True) - xhat * (gxhat * xhat).sum(axis=a, keepdims=True))
    axes = tuple(i for i in range(x.ndim) if i != a % x.ndim)
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


def _gn_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    xhat, _ = _gn_parts(info, x)
    y = xhat.reshape(x.shape)
    if "weight" in p:
        y = y * per_channel(p["weight"], x)
    return y + per_channel(p["bias"], x) if "bias" in p else y


def _gn_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    xhat, invstd = _gn_parts(info, x)
    gxhat = (go * per_channel(p["weight"], x) if "weight" in p else go).reshape(xhat.shape)
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
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return gx.reshape(x.shape), grads


_RULES: dict[type, Any] = {
    BatchNorm2d: _batchnorm,
    BatchNorm1d: _batchnorm,
    LayerNorm: _layernorm,
    GroupNorm: _groupnorm,
}


_FORWARD: dict[type, Any] = {
    BatchNorm2d: _bn_forward,
    BatchNorm1d: _bn_forward,
}


_FORWARD_C: dict[type, Any] = {
    LayerNorm: _ln_forward,
    GroupNorm: _gn_forward,
}


_BACKWARD: dict[type, Any] = {
    BatchNorm2d: _bn_backward,
    BatchNorm1d: _bn_backward,
}


_BACKWARD_C: dict[type, Any] = {
    LayerNorm: _ln_backward,
    GroupNorm: _gn_backward,
}


for _kind in (
    BatchNorm2d,
    BatchNorm1d,
    LayerNorm,
    GroupNorm,
):
    register(
        _kind,
        _RULES[_kind],
        {**_FORWARD, **_FORWARD_C}[_kind],
        {**_BACKWARD, **_BACKWARD_C}[_kind],
        tokens=_kind in (LayerNorm, BatchNorm1d),
    )


@dataclass(frozen=True, repr=False)
class GlobalResponseNorm(Layer):
    """ConvNeXt V2's global response normalisation of a (C, H, W) map. With N_c the L2 norm of channel c over
    the pixels, ``y = x + weight * x * N_c / (mean over channels of N + eps) + bias``, per sample, with a
    per-channel ``weight`` and ``bias`` of shape (C,). timm's ``GlobalResponseNorm`` and Hugging Face's
    ``ConvNextV2GRN`` import as it (on the channels-last tensor of a ConvNeXt block, as they are written for).

    >>> GlobalResponseNorm(32)
    GlobalResponseNorm(32)
    """

    num_features: int
    eps: float = 1e-6

    _positional = ("num_features",)

    def _validate(self) -> None:
        me = "GlobalResponseNorm"
        self._set("num_features", as_int(me, "num_features", self.num_features, minimum=1))
        self._set("eps", as_float(me, "eps", self.eps, low=0.0, low_open=True))


def _grn_shape(ctx: _Ctx, layer: GlobalResponseNorm, source: Shape | None) -> LayerInfo:
    c = ctx.need_map()[0]
    if layer.num_features != c:
        raise ctx.error(f"num_features={layer.num_features} but its input has {c} channels")
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {"weight": (c,), "bias": (c,)})


def _grn_parts(info: LayerInfo, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N: each channel's L2 norm over the pixels, (n, C, 1, 1); the divisor mean_c N + eps, (n, 1, 1, 1))"""
    norms = np.sqrt((x * x).sum(axis=(2, 3), keepdims=True))
    return norms, norms.mean(axis=1, keepdims=True) + info.layer.eps  # type: ignore[attr-defined]


def _grn_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    norms, divisor = _grn_parts(info, x)
    out: np.ndarray = x + per_channel(p["weight"], x) * (x * (norms / divisor)) + per_channel(p["bias"], x)
    return out


def _grn_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    norms, divisor = _grn_parts(info, x)
    weight = per_channel(p["weight"], x)
    scale = norms / divisor
    # the loss through the per-channel factor n_c = N_c / (mean N + eps), then through N_c = ||x_c||
    through_n = (go * weight * x).sum(axis=(2, 3), keepdims=True)
    through_norm = through_n / divisor - (through_n * norms).sum(axis=1, keepdims=True) / (
        x.shape[1] * divisor * divisor
    )
    # d||x_c|| / dx = x / ||x_c||; a channel that is all zeros gets 0, as torch's norm gives
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    gx = go * (1 + weight * scale) + through_norm * unit
    return gx, {"weight": (go * x * scale).sum(axis=(0, 2, 3)), "bias": go.sum(axis=(0, 2, 3))}


register(GlobalResponseNorm, _grn_shape, _grn_forward, _grn_backward)
