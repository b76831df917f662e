"""Framework-neutral layer specs: frozen, normalised and validated at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ._normalize import Pair, Padding, as_bool, as_choice, as_int, as_pair, as_padding, compact

__all__ = ["Layer", "Conv2d", "ReLU", "Flatten", "Linear", "LAYER_TYPES"]

#: kind name -> layer class, filled as classes are defined; used by ``from_dict``.
LAYER_TYPES: dict[str, type["Layer"]] = {}

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class Layer:
    """Base class of layer specs. Subclasses are frozen dataclasses whose fields hold normalised values."""

    #: fields printed positionally by ``repr`` (the required arguments)
    _positional = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        LAYER_TYPES[cls.__name__] = cls

    @property
    def kind(self) -> str:
        return type(self).__name__

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"kind": ..., field: value, ...}`` with tuples as lists."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._positional:
                parts.append(repr(compact(value)))
            elif value != f.default:
                parts.append(f"{f.name}={compact(value)!r}")
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

    def __post_init__(self) -> None:
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
    """Elementwise max(x, 0)."""


@dataclass(frozen=True, repr=False)
class Flatten(Layer):
    """Flattens (C, H, W) to C*H*W features in C,H,W order (PyTorch's order; Keras layouts are permuted
    at weight-transfer time, never at run time)."""


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

    def __post_init__(self) -> None:
        me = "Linear"
        if self.in_features is not None:
            self._set("in_features", as_int(me, "in_features", self.in_features, minimum=1))
        if self.out_features is None:
            raise SpecError("Linear: `out_features` is required. Received: out_features=None")
        self._set("out_features", as_int(me, "out_features", self.out_features, minimum=1))
        self._set("bias", as_bool(me, "bias", self.bias))
