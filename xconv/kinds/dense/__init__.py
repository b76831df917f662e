"""Dense layers and flattening: Linear, ChannelLinear and Flatten."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._info import LayerInfo, Shape, _Ctx, _describe, elementwise
from ..._layer import Layer
from ..._normalize import (
    as_bool,
    as_int,
)
from ...errors import SpecError
from .._numpy import Mode, per_channel
from .._registry import register


@dataclass(frozen=True, repr=False)
class Flatten(Layer):
    """Flattens (C, H, W) to C*H*W features in C,H,W order (PyTorch's order; Keras layouts are permuted
    at weight-transfer time, never at run time).

    ``channels_last=True`` flattens in H,W,C order instead, Keras' ``Flatten``: what a Keras model returns when
    its flattened features reach the output with no Dense to absorb the order. The torch module permutes the
    map to channels-last before flattening (one transpose at run time, so that the torch model returns the
    same vector as the Keras one); features after it are in H,W,C order in both frameworks.

    >>> Flatten()
    Flatten()
    >>> Flatten(channels_last=True)
    Flatten(channels_last=True)
    """

    channels_last: bool = False

    def _validate(self) -> None:
        self._set("channels_last", as_bool(self.kind, "channels_last", self.channels_last))


@dataclass(frozen=True, repr=False)
class Linear(Layer):
    """Fully connected layer, on the features of a flat input or of every token of a token tensor (L, E)
    (``nn.Linear`` and Keras' ``Dense`` both act on the last axis). ``in_features=None`` is inferred from the
    input shape.

    >>> Linear(16 * 32 * 32, 10)
    Linear(16384, 10)
    >>> Linear(out_features=10)
    Linear(None, 10)
    """

    in_features: int | None = None
    out_features: int = field(default=None)  # type: ignore[assignment]
    bias: bool = True

    _positional = ("in_features", "out_features")

    def _validate(self) -> None:
        me = "Linear"
        if self.in_features is not None:
            self._set("in_features", as_int(me, "in_features", self.in_features, minimum=1))
        if self.out_features is None:
            raise SpecError("Linear: `out_features` is required. Received: out_features=None")
        self._set("out_features", as_int(me, "out_features", self.out_features, minimum=1))
        self._set("bias", as_bool(me, "bias", self.bias))


@dataclass(frozen=True, repr=False)
class ChannelLinear(Layer):
    """A Linear map of the channels at every pixel of a (C, H, W) map: torch's permute -> ``nn.Linear`` ->
    permute (ConvNeXt's pointwise layers), Keras' ``Dense`` on an NHWC map. ``weight`` is (out, in) as in
    ``nn.Linear``. (``Linear`` itself needs a flat input.)

    >>> ChannelLinear(96, 384)
    ChannelLinear(96, 384)
    """

    in_features: int
    out_features: int
    bias: bool = True

    _positional = ("in_features", "out_features")

    def _validate(self) -> None:
        me = "ChannelLinear"
        self._set("in_features", as_int(me, "in_features", self.in_features, minimum=1))
        self._set("out_features", as_int(me, "out_features", self.out_features, minimum=1))
        self._set("bias", as_bool(me, "bias", self.bias))


def _flatten(ctx: _Ctx, layer: Flatten, source: Shape | None) -> LayerInfo:
    if len(ctx.shape) == 1:
        return elementwise(ctx, layer, source)
    # a channels-last flatten gives features in H,W,C order in both frameworks: no order to reconcile after it
    source_out = None if layer.channels_last else ctx.shape
    return LayerInfo(ctx.index, layer, ctx.shape, (math.prod(ctx.shape),), {}, output_source=source_out)


def _linear(ctx: _Ctx, layer: Linear, source: Shape | None) -> LayerInfo:
    if len(ctx.shape) == 3:
        raise ctx.error(f"needs a flat input but its input has shape {ctx.shape}; add Flatten() before it")
    features = ctx.shape[-1]
    if layer.in_features is None:
        layer = dataclasses.replace(layer, in_features=features)
    elif layer.in_features != features:
        raise ctx.error(f"in_features={layer.in_features} but its input has {_describe(ctx.shape, source)} features")
    params: dict[str, Shape] = {"weight": (layer.out_features, features)}
    if layer.bias:
        params["bias"] = (layer.out_features,)
    out = (*ctx.shape[:-1], layer.out_features)  # on tokens: each token's features
    return LayerInfo(ctx.index, layer, ctx.shape, out, params, input_source=source)


def _channel_linear(ctx: _Ctx, layer: ChannelLinear, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.in_features:
        raise ctx.error(f"in_features={layer.in_features} but its input has {c} channels")
    params: dict[str, Shape] = {"weight": (layer.out_features, c)}
    if layer.bias:
        params["bias"] = (layer.out_features,)
    return LayerInfo(ctx.index, layer, ctx.shape, (layer.out_features, h, w), params)


def _linear_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    y = x @ p["weight"].T
    out: np.ndarray = y + p["bias"] if "bias" in p else y
    return out


def _linear_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    grads = {"weight": go.reshape(-1, go.shape[-1]).T @ x.reshape(-1, x.shape[-1])}
    if "bias" in p:
        grads["bias"] = go.reshape(-1, go.shape[-1]).sum(axis=0)
    return go @ p["weight"], grads


def _cl_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    y: np.ndarray = np.einsum("nchw,oc->nohw", x, p["weight"])
    return y + per_channel(p["bias"], y) if "bias" in p else y


def _cl_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    grads = {"weight": np.einsum("nohw,nchw->oc", go, x)}
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return np.einsum("nohw,oc->nchw", go, p["weight"]), grads


_RULES: dict[type, Any] = {
    Flatten: _flatten,
    Linear: _linear,
    ChannelLinear: _channel_linear,
}


_FORWARD: dict[type, Any] = {
    Flatten: lambda info, p, x, mode: (
        x.transpose(0, 2, 3, 1) if info.layer.channels_last and x.ndim == 4 else x
    ).reshape(x.shape[0], -1),
    Linear: _linear_forward,
}


_FORWARD_C: dict[type, Any] = {
    ChannelLinear: _cl_forward,
}


_BACKWARD: dict[type, Any] = {
    Flatten: lambda info, p, x, go, mode: (
        (
            go.reshape(x.shape[0], x.shape[2], x.shape[3], x.shape[1]).transpose(0, 3, 1, 2)
            if info.layer.channels_last and x.ndim == 4
            else go.reshape(x.shape)
        ),
        {},
    ),
    Linear: _linear_backward,
}


_BACKWARD_C: dict[type, Any] = {
    ChannelLinear: _cl_backward,
}


for _kind in (
    Flatten,
    Linear,
    ChannelLinear,
):
    register(
        _kind,
        _RULES[_kind],
        {**_FORWARD, **_FORWARD_C}[_kind],
        {**_BACKWARD, **_BACKWARD_C}[_kind],
        tokens=_kind in (Linear, Flatten),
    )
