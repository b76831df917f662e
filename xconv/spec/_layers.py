"""Framework-neutral layer specs: frozen, normalised and validated at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import SpecError
from ._normalize import (
    Padding,
    PaddingLike,
    Pair,
    PairLike,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_keys,
    as_name,
    as_padding,
    as_pair,
    compact,
)

__all__ = [
    "ELEMENTWISE",
    "ELU",
    "GELU",
    "LAYER_TYPES",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Normalization",
    "ReLU",
    "Rescaling",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "StochasticDepth",
    "Tanh",
    "ZeroPad2d",
]

#: kind name -> layer class, filled as classes are defined; used by ``from_dict``.
LAYER_TYPES: dict[str, type[Layer]] = {}

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class Layer:
    """Base class of layer specs. Subclasses are frozen dataclasses whose fields hold normalised values.

    >>> from xconv import Conv2d
    >>> layer = Conv2d(3, 8, 3, name="stem")
    >>> layer.kind, layer.to_dict()["kernel_size"]
    ('Conv2d', [3, 3])
    """

    #: fields printed positionally by ``repr`` (the required arguments)
    _positional: ClassVar[tuple[str, ...]] = ()
    #: field -> the field whose value it defaults to (``MaxPool2d.stride`` defaults to ``kernel_size``)
    _defaults_from: ClassVar[dict[str, str]] = {}  # read-only; a ClassVar, so no dataclass field

    #: optional name (a non-empty string without "/"; dots allowed): the layer's key in canonical weights
    #: (``"{name}.weight"``) and its Keras layer name; unnamed layers are keyed by their positional path
    name: str | None = field(default=None, kw_only=True)
    #: the source's own keys of weights that are not ``"{key}.{param}"``, as (param, key) pairs: a parameter of
    #: the model's root used through ``F.conv2d`` (``"w"``), a layer scale called ``gamma`` of shape (C,). The
    #: built models keep the canonical keys; ``set_weights`` also takes these (a shape that differs from the
    #: canonical one only by axes of length 1 too), and ``summary`` lists them
    keys: tuple[tuple[str, str], ...] = field(default=(), kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        LAYER_TYPES[cls.__name__] = cls

    def __post_init__(self) -> None:
        self._set("name", as_name(self.kind, self.name))
        self._set("keys", as_keys(self.kind, self.keys))
        self._validate()

    def _validate(self) -> None:
        """Normalise and check the fields (subclasses)."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"kind": ..., field: value, ...}`` with tuples as lists."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name != "keys" or self.keys:
                out[f.name] = dict(self.keys) if f.name == "keys" else _jsonable(getattr(self, f.name))
        return out

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "keys"):
                continue
            if f.name in self._positional:
                parts.append(repr(compact(value)))
            elif f.name in self._defaults_from and value == getattr(self, self._defaults_from[f.name]):
                continue
            elif value != f.default:
                parts.append(f"{f.name}={compact(value)!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        if self.keys:
            parts.append(f"keys={dict(self.keys)!r}")
        return f"{self.kind}({', '.join(parts)})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True, repr=False)
class Conv2d(Layer):
    """2-D convolution, PyTorch's vocabulary and defaults.

    ``kernel_size``, ``stride``, ``dilation``: int or (h, w). ``padding``: int, (ph, pw),
    ((top, bottom), (left, right)), ``"valid"`` (stored as zeros) or ``"same"`` (TensorFlow's rule at every
    stride: the extra pixel goes bottom/right). ``padding_mode``: zeros, reflect, replicate or circular.

    >>> Conv2d(3, 32, kernel_size=5, padding=2)
    Conv2d(3, 32, kernel_size=5, padding=2)
    """

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: Padding | str = ((0, 0), (0, 0))
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    _positional = ("in_channels", "out_channels")

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: PairLike,
            stride: PairLike = ...,
            padding: PaddingLike | str = ...,
            dilation: PairLike = ...,
            groups: int = ...,
            bias: bool = ...,
            padding_mode: str = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        me = "Conv2d"
        self._set("in_channels", as_int(me, "in_channels", self.in_channels, minimum=1))
        self._set("out_channels", as_int(me, "out_channels", self.out_channels, minimum=1))
        self._set("kernel_size", as_pair(me, "kernel_size", self.kernel_size, minimum=1))
        self._set("stride", as_pair(me, "stride", self.stride, minimum=1))
        self._set("padding", as_padding(me, self.padding))
        self._set("dilation", as_pair(me, "dilation", self.dilation, minimum=1))
        self._set("groups", as_int(me, "groups", self.groups, minimum=1))
        self._set("bias", as_bool(me, "bias", self.bias))
        self._set("padding_mode", as_choice(me, "padding_mode", self.padding_mode, PADDING_MODES))
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise SpecError(
                    f"Conv2d: `{name}` (={getattr(self, name)}) must be divisible by `groups` (={self.groups})"
                )


@dataclass(frozen=True, repr=False)
class ReLU(Layer):
    """Elementwise max(x, 0).

    >>> ReLU()
    ReLU()
    """


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
    """Fully connected layer. ``in_features=None`` is inferred from the input shape.

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


def _pool_common(self: Any, me: str) -> None:
    self._set("kernel_size", as_pair(me, "kernel_size", self.kernel_size, minimum=1))
    stride = self.kernel_size if self.stride is None else self.stride
    if isinstance(stride, (list, tuple)) and len(stride) == 0:  # torch accepts stride=[] for "the kernel"
        stride = self.kernel_size
    self._set("stride", as_pair(me, "stride", stride, minimum=1))
    self._set("padding", as_pair(me, "padding", self.padding, minimum=0))
    self._set("ceil_mode", as_bool(me, "ceil_mode", self.ceil_mode))


@dataclass(frozen=True, repr=False)
class MaxPool2d(Layer):
    """Max pooling, PyTorch's vocabulary and defaults: ``stride`` defaults to ``kernel_size``; ``padding``
    (int or (ph, pw), symmetric, at most half the kernel) pads with -inf; ``ceil_mode`` keeps a last
    window that starts inside the input (or its left padding).

    >>> MaxPool2d(2)
    MaxPool2d(2)
    """

    kernel_size: Pair
    stride: Pair | None = None
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False

    _positional = ("kernel_size",)
    _defaults_from: ClassVar[dict[str, str]] = {"stride": "kernel_size"}

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            kernel_size: PairLike,
            stride: PairLike | None = ...,
            padding: PairLike = ...,
            dilation: PairLike = ...,
            ceil_mode: bool = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        _pool_common(self, "MaxPool2d")
        self._set("dilation", as_pair("MaxPool2d", "dilation", self.dilation, minimum=1))
        for k, p in zip(self.kernel_size, self.padding):
            if p > k // 2:
                raise SpecError(
                    f"MaxPool2d: `padding` must be at most half of the kernel, as in torch. "
                    f"Received: padding={compact(self.padding)!r}, kernel_size={compact(self.kernel_size)!r}"
                )


@dataclass(frozen=True, repr=False)
class AvgPool2d(Layer):
    """Average pooling, PyTorch's vocabulary and defaults: zero ``padding`` (at most half the kernel), counted
    in the divisor when ``count_include_pad`` (torch's default; Keras' 'same' does not count pads);
    ``ceil_mode`` as in torch (the part of a last window beyond the padded input is never counted).

    >>> AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    """

    kernel_size: Pair
    stride: Pair | None = None
    padding: Pair = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True

    _positional = ("kernel_size",)
    _defaults_from: ClassVar[dict[str, str]] = {"stride": "kernel_size"}

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            kernel_size: PairLike,
            stride: PairLike | None = ...,
            padding: PairLike = ...,
            ceil_mode: bool = ...,
            count_include_pad: bool = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        _pool_common(self, "AvgPool2d")
        self._set("count_include_pad", as_bool("AvgPool2d", "count_include_pad", self.count_include_pad))
        for k, p in zip(self.kernel_size, self.padding):
            if p > k // 2:
                raise SpecError(
                    f"AvgPool2d: `padding` must be at most half of the kernel, as in torch. "
                    f"Received: padding={compact(self.padding)!r}, kernel_size={compact(self.kernel_size)!r}"
                )


@dataclass(frozen=True, repr=False)
class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed ``output_size`` (int or (h, w)) with torch's windows
    [floor(i*H/h), ceil((i+1)*H/h)). ``AdaptiveAvgPool2d(1)`` is global average pooling.

    >>> AdaptiveAvgPool2d(1)
    AdaptiveAvgPool2d(1)
    """

    output_size: Pair

    _positional = ("output_size",)

    if TYPE_CHECKING:  # the spellings the constructor accepts; the field holds the normal form

        def __init__(self, output_size: PairLike, *, name: str | None = ..., keys: Any = ...) -> None: ...

    def _validate(self) -> None:
        self._set("output_size", as_pair("AdaptiveAvgPool2d", "output_size", self.output_size, minimum=1))


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


LAYER_TYPES.pop("_BatchNorm")


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

    >>> BatchNorm1d(64, momentum=None)
    BatchNorm1d(64, momentum=None)
    """


@dataclass(frozen=True, repr=False)
class Dropout(Layer):
    """Zeroes each element with probability ``p`` in training and scales the rest by 1 / (1 - p); the identity
    in inference. ``p`` in [0, 1] (p = 1 zeroes everything, as in both frameworks).

    >>> Dropout(0.25)
    Dropout(0.25)
    """

    p: float = 0.5

    _positional = ("p",)

    def _validate(self) -> None:
        self._set("p", as_float("Dropout", "p", self.p, low=0.0, high=1.0))


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
class ZeroPad2d(Layer):
    """Zero padding of a (C, H, W) map, torch's ``nn.ZeroPad2d``: ``padding`` is an int (all four sides) or
    ``(left, right, top, bottom)``, stored as ((top, bottom), (left, right)) like Conv2d's explicit padding.

    >>> ZeroPad2d(1)
    ZeroPad2d(1)
    >>> ZeroPad2d((0, 1, 0, 1))
    ZeroPad2d((0, 1, 0, 1))
    """

    padding: Padding

    _positional = ("padding",)

    if TYPE_CHECKING:  # the spellings the constructor accepts; the field holds the normal form

        def __init__(self, padding: PaddingLike, *, name: str | None = ..., keys: Any = ...) -> None: ...

    def __repr__(self) -> str:
        (t, b), (l, r) = self.padding
        pad = t if t == b == l == r else (l, r, t, b)
        return f"ZeroPad2d({pad!r}" + ("" if self.name is None else f", name={self.name!r}") + ")"

    def _validate(self) -> None:
        me = "ZeroPad2d"
        value = self.padding
        if isinstance(value, (list, tuple)) and len(value) == 4:
            left, right, top, bottom = (as_int(me, "padding", v, minimum=0) for v in value)
            self._set("padding", ((top, bottom), (left, right)))
        elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (list, tuple)) for v in value):
            (top, bottom), (left, right) = (as_pair(me, "padding", v, minimum=0) for v in value)
            self._set("padding", ((top, bottom), (left, right)))
        elif isinstance(value, (list, tuple)):
            raise SpecError(
                f"{me}: `padding` must be an int or (left, right, top, bottom), as in torch. Received: padding={value!r}"
            )
        else:
            p = as_int(me, "padding", value, minimum=0)
            self._set("padding", ((p, p), (p, p)))


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
class StochasticDepth(Layer):
    """torchvision's stochastic depth: the identity in inference; in training each sample (``mode="row"``) or
    the whole batch (``"batch"``) is zeroed with probability ``p`` and the rest scaled by 1 / (1 - p). Keras:
    ``Dropout(p, noise_shape=(None, 1, 1, 1))``.

    >>> StochasticDepth(0.1, "row")
    StochasticDepth(0.1)
    """

    p: float = 0.5
    mode: str = "row"

    _positional = ("p",)

    def _validate(self) -> None:
        self._set("p", as_float("StochasticDepth", "p", self.p, low=0.0, high=1.0))
        self._set("mode", as_choice("StochasticDepth", "mode", self.mode, ("row", "batch")))


def _scalar_or_channels(owner: str, name: str, value: Any) -> float | tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise SpecError(f"{owner}: `{name}` must be a number or one number per channel. Received: {name}=()")
        return tuple(as_float(owner, name, v) for v in value)
    return as_float(owner, name, value)


@dataclass(frozen=True, repr=False)
class Rescaling(Layer):
    """x * scale + offset (Keras' ``Rescaling``, e.g. 1/255 inside keras.applications models): ``scale`` and
    ``offset`` a number or one number per channel (features of a flat input). Constants, not weights.

    >>> Rescaling(1 / 255)
    Rescaling(0.00392156862745098)
    """

    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0

    _positional = ("scale",)

    def _validate(self) -> None:
        self._set("scale", _scalar_or_channels("Rescaling", "scale", self.scale))
        self._set("offset", _scalar_or_channels("Rescaling", "offset", self.offset))

    def __repr__(self) -> str:  # the values as stored: a per-channel tuple is never shortened to a number
        parts = [repr(self.scale)]
        if self.offset != 0.0 or isinstance(self.offset, tuple):
            parts.append(f"offset={self.offset!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        return f"Rescaling({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class Normalization(Layer):
    """(x - mean) / max(sqrt(variance), 1e-7) per channel (Keras' ``Normalization`` over the channel axis); ``mean``
    and ``variance`` are buffers of shape (num_features,) in the canonical weights (``"{key}.mean"``), as BatchNorm's
    running statistics are.

    >>> Normalization(3)
    Normalization(3)
    """

    num_features: int

    _positional = ("num_features",)

    def _validate(self) -> None:
        self._set("num_features", as_int("Normalization", "num_features", self.num_features, minimum=1))


#: layers that keep their input's shape and act per element (or per feature vector, Softmax over dim 1)
ELEMENTWISE = (
    ReLU,
    Dropout,
    LeakyReLU,
    Sigmoid,
    Tanh,
    GELU,
    ELU,
    SiLU,
    Identity,
    Hardtanh,
    Hardsigmoid,
    Hardswish,
    StochasticDepth,
)
