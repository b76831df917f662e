"""Activations: ReLU, LeakyReLU, Sigmoid, Tanh, GELU, ELU, SiLU, Softmax, Identity, Hardtanh, Hardsigmoid, Hardswish, PReLU,
StarReLU, Square."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._info import LayerInfo, Shape, _Ctx, elementwise
from ..._layer import Layer
from ..._normalize import (
    as_choice,
    as_float,
    as_int,
)
from ...errors import SpecError
from .._numpy import Mode, per_channel
from .._registry import register


@dataclass(frozen=True, repr=False)
class ReLU(Layer):
    """Elementwise max(x, 0).

    >>> ReLU()
    ReLU()
    """


@dataclass(frozen=True, repr=False)
class LeakyReLU(Layer):
    """x if x > 0 else negative_slope * x (any real slope, as in torch).

    >>> LeakyReLU(0.2)
    LeakyReLU(0.2)
    """

    negative_slope: float = 0.01

    _positional = ("negative_slope",)

    def _validate(self) -> None:
        self._set("negative_slope", as_float("LeakyReLU", "negative_slope", self.negative_slope))


@dataclass(frozen=True, repr=False)
class Sigmoid(Layer):
    """1 / (1 + exp(-x)).

    >>> Sigmoid()
    Sigmoid()
    """


@dataclass(frozen=True, repr=False)
class Tanh(Layer):
    """tanh(x).

    >>> Tanh()
    Tanh()
    """


@dataclass(frozen=True, repr=False)
class GELU(Layer):
    """x * Phi(x) (``approximate="none"``, torch's default) or its tanh approximation (``"tanh"``).

    >>> GELU("tanh")
    GELU(approximate='tanh')
    """

    approximate: str = "none"

    def _validate(self) -> None:
        self._set("approximate", as_choice("GELU", "approximate", self.approximate, ("none", "tanh")))


@dataclass(frozen=True, repr=False)
class ELU(Layer):
    """x if x > 0 else alpha * (exp(x) - 1).

    >>> ELU(0.5)
    ELU(0.5)
    """

    alpha: float = 1.0

    _positional = ("alpha",)

    def _validate(self) -> None:
        self._set("alpha", as_float("ELU", "alpha", self.alpha))


@dataclass(frozen=True, repr=False)
class SiLU(Layer):
    """x * sigmoid(x).

    >>> SiLU()
    SiLU()
    """


@dataclass(frozen=True, repr=False)
class Softmax(Layer):
    """Softmax over ``dim`` of the NCHW (or (N, F)) tensor: 1 is the channel / feature axis (the last axis on
    the Keras side), 2 and 3 are H and W; negative dims count from the end. The batch axis (0) is refused.

    >>> Softmax(1)  # over the channels of (N, C, H, W), the last axis of Keras' (N, H, W, C)
    Softmax(1)
    """

    dim: int = 1

    _positional = ("dim",)

    def _validate(self) -> None:
        self._set("dim", as_int("Softmax", "dim", self.dim))
        if self.dim in (0, -4):
            raise SpecError("Softmax: `dim` must not be the batch axis. Received: dim=" + repr(self.dim))


@dataclass(frozen=True, repr=False)
class Identity(Layer):
    """Returns its input.

    >>> Identity(name="skip")
    Identity(name='skip')
    """


@dataclass(frozen=True, repr=False)
class Hardtanh(Layer):
    """min(max(x, min_val), max_val), torch's defaults (-1, 1). torch's ``ReLU6`` is ``Hardtanh(0.0, 6.0)``
    (Keras: ``ReLU(max_value=6)``).

    >>> Hardtanh(0.0, 6.0)
    Hardtanh(0.0, 6.0)
    """

    min_val: float = -1.0
    max_val: float = 1.0

    _positional = ("min_val", "max_val")

    def _validate(self) -> None:
        self._set("min_val", as_float("Hardtanh", "min_val", self.min_val))
        self._set("max_val", as_float("Hardtanh", "max_val", self.max_val))
        if self.max_val <= self.min_val:
            raise SpecError(
                f"Hardtanh: `max_val` must be greater than `min_val`. Received: min_val={self.min_val}, "
                f"max_val={self.max_val}"
            )


@dataclass(frozen=True, repr=False)
class Hardsigmoid(Layer):
    """torch's hard sigmoid: min(max(x + 3, 0), 6) / 6 (Keras 3's ``hard_sigmoid`` is the same function).

    >>> Hardsigmoid()
    Hardsigmoid()
    """


@dataclass(frozen=True, repr=False)
class Hardswish(Layer):
    """torch's hard swish: x * min(max(x + 3, 0), 6) / 6 (Keras 3's ``hard_swish``).

    >>> Hardswish()
    Hardswish()
    """


@dataclass(frozen=True, repr=False)
class PReLU(Layer):
    """torch's ``nn.PReLU``: x where x >= 0, else ``weight`` times x, with one learned slope (``num_parameters=1``)
    or one per channel (the channels of a map, the features of a flat input). Keras' ``PReLU`` with the other
    axes shared.

    >>> PReLU(16)
    PReLU(16)
    """

    num_parameters: int = 1

    _positional = ("num_parameters",)

    def _validate(self) -> None:
        self._set("num_parameters", as_int("PReLU", "num_parameters", self.num_parameters, minimum=1))


@dataclass(frozen=True, repr=False)
class StarReLU(Layer):
    """MetaFormer's StarReLU (timm's ``StarReLU``): ``scale * relu(x) ** 2 + bias``, with a learned ``scale``
    and ``bias`` of shape (1,) each, shared by every element.

    >>> StarReLU()
    StarReLU()
    """


@dataclass(frozen=True, repr=False)
class Square(Layer):
    """x * x, elementwise (``torch.square``, ``x ** 2``; MetaFormer's squared ReLU is a ReLU then this).

    >>> Square()
    Square()
    """


def _star_relu(ctx: _Ctx, layer: StarReLU, source: Shape | None) -> LayerInfo:
    keep = source if len(ctx.shape) == 1 else None
    params: dict[str, Shape] = {"scale": (1,), "bias": (1,)}
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params, input_source=keep, output_source=keep)


def _star_relu_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    r = np.maximum(x, 0)
    grads = {"scale": (go * r * r).sum().reshape(1), "bias": go.sum().reshape(1)}
    return go * p["scale"].reshape(()) * 2 * r, grads


def _softmax(ctx: _Ctx, layer: Softmax, source: Shape | None) -> LayerInfo:
    rank = len(ctx.shape) + 1
    if not -rank <= layer.dim < rank or layer.dim % rank == 0:
        axes = "1 or -1" if rank == 2 else "1, 2, 3 or -1, -2, -3"
        raise ctx.error(f"dim={layer.dim} is not a non-batch axis of its (N, *{ctx.shape}) input; use {axes}")
    return elementwise(ctx, layer, source)


def _prelu(ctx: _Ctx, layer: PReLU, source: Shape | None) -> LayerInfo:
    n = ctx.shape[0]
    if layer.num_parameters not in (1, n):
        what = "channels" if len(ctx.shape) == 3 else "features"
        raise ctx.error(f"num_parameters={layer.num_parameters} must be 1 or the input's {n} {what}")
    keep = source if len(ctx.shape) == 1 else None
    params: dict[str, Shape] = {"weight": (layer.num_parameters,)}
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params, input_source=keep, output_source=keep)


def softmax_axis(info: LayerInfo) -> int:
    """The NCHW (or (N, F)) axis, 1..3, of a Softmax layer."""
    rank = len(info.input_shape) + 1
    return info.layer.dim % rank  # type: ignore[attr-defined, no-any-return]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        out: np.ndarray = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return out


_erf = np.frompyfunc(math.erf, 1, 1)


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu(info: LayerInfo, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gelu(x), gelu'(x))"""
    if info.layer.approximate == "tanh":  # type: ignore[attr-defined]
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
        t = np.tanh(inner)
        y = 0.5 * x * (1 + t)
        return y, 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x**2)
    cdf = 0.5 * (1 + np.asarray(_erf(x / math.sqrt(2))).astype(x.dtype))
    pdf = np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    return x * cdf, cdf + x * pdf


def _softmax_forward(info: LayerInfo, x: np.ndarray) -> np.ndarray:
    axis = softmax_axis(info)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def _elu(info: LayerInfo, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, info.layer.alpha * np.expm1(np.minimum(x, 0)))  # type: ignore[attr-defined]


def _softmax_backward(info: LayerInfo, x: np.ndarray, go: np.ndarray) -> np.ndarray:
    y = _softmax_forward(info, x)
    out: np.ndarray = y * (go - (go * y).sum(axis=softmax_axis(info), keepdims=True))
    return out


def _silu_backward(x: np.ndarray, go: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    out: np.ndarray = go * s * (1 + x * (1 - s))
    return out


def _slope(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return p["weight"].reshape(()) if p["weight"].size == 1 else per_channel(p["weight"], x)


def _prelu_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    negative = np.minimum(x, 0.0)
    axes = tuple(a for a in range(x.ndim) if a != 1 or p["weight"].size == 1)
    gw = (go * negative).sum(axis=axes).reshape(p["weight"].shape)
    return np.where(x > 0, go, go * _slope(p, x)), {"weight": gw}


_RULES: dict[type, Any] = {
    **{kind: elementwise for kind in (ReLU, LeakyReLU, Sigmoid, Tanh, GELU, ELU, SiLU, Identity, Hardtanh)},
    **{kind: elementwise for kind in (Hardsigmoid, Hardswish, Square)},
    Softmax: _softmax,
    PReLU: _prelu,
    StarReLU: _star_relu,
}


_FORWARD: dict[type, Any] = {
    ReLU: lambda info, p, x, mode: np.maximum(x, 0),
    LeakyReLU: lambda info, p, x, mode: np.where(x > 0, x, x * info.layer.negative_slope),
    Sigmoid: lambda info, p, x, mode: _sigmoid(x),
    Tanh: lambda info, p, x, mode: np.tanh(x),
    GELU: lambda info, p, x, mode: _gelu(info, x)[0],
    ELU: lambda info, p, x, mode: _elu(info, x),
    SiLU: lambda info, p, x, mode: x * _sigmoid(x),
    Softmax: lambda info, p, x, mode: _softmax_forward(info, x),
    Identity: lambda info, p, x, mode: x,
    Hardtanh: lambda info, p, x, mode: np.clip(x, info.layer.min_val, info.layer.max_val),
    Hardsigmoid: lambda info, p, x, mode: np.minimum(np.maximum(x + 3, 0), 6) / 6,
    Hardswish: lambda info, p, x, mode: x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
    Square: lambda info, p, x, mode: x * x,
}


_FORWARD_C: dict[type, Any] = {
    PReLU: lambda info, p, x, mode: np.where(x >= 0, x, x * _slope(p, x)),
    StarReLU: lambda info, p, x, mode: p["scale"].reshape(()) * np.maximum(x, 0) ** 2 + p["bias"].reshape(()),
}


_BACKWARD: dict[type, Any] = {
    ReLU: lambda info, p, x, go, mode: (go * (x > 0), {}),
    LeakyReLU: lambda info, p, x, go, mode: (go * np.where(x > 0, 1, info.layer.negative_slope).astype(x.dtype), {}),
    Sigmoid: lambda info, p, x, go, mode: (go * _sigmoid(x) * (1 - _sigmoid(x)), {}),
    Tanh: lambda info, p, x, go, mode: (go * (1 - np.tanh(x) ** 2), {}),
    GELU: lambda info, p, x, go, mode: (go * _gelu(info, x)[1], {}),
    ELU: lambda info, p, x, go, mode: (go * np.where(x > 0, 1, _elu(info, x) + info.layer.alpha).astype(x.dtype), {}),
    SiLU: lambda info, p, x, go, mode: (_silu_backward(x, go), {}),
    Softmax: lambda info, p, x, go, mode: (_softmax_backward(info, x, go), {}),
    Identity: lambda info, p, x, go, mode: (go, {}),
    # torch's rules, boundaries included: hardtanh and hardsigmoid pass gradients strictly inside their ramp;
    # hardswish's is x / 3 + 1/2 on [-3, 3]
    Hardtanh: lambda info, p, x, go, mode: (go * ((x > info.layer.min_val) & (x < info.layer.max_val)), {}),
    Hardsigmoid: lambda info, p, x, go, mode: (go * ((x > -3) & (x < 3)) / 6, {}),
    Hardswish: lambda info, p, x, go, mode: (
        go * np.where(x < -3, 0, np.where(x <= 3, x / 3 + 0.5, 1)).astype(x.dtype),
        {},
    ),
    Square: lambda info, p, x, go, mode: (go * 2 * x, {}),
}


_BACKWARD_C: dict[type, Any] = {
    PReLU: _prelu_backward,
    StarReLU: _star_relu_backward,
}


for _kind in (
    ReLU,
    LeakyReLU,
    Sigmoid,
    Tanh,
    GELU,
    ELU,
    SiLU,
    Softmax,
    Identity,
    Hardtanh,
    Hardsigmoid,
    Hardswish,
    PReLU,
    StarReLU,
    Square,
):
    register(
        _kind,
        _RULES[_kind],
        {**_FORWARD, **_FORWARD_C}[_kind],
        {**_BACKWARD, **_BACKWARD_C}[_kind],
        tokens=_kind is not PReLU,
    )
