"""Layer specs that grow a map: ``Upsample`` (torch's ``nn.Upsample``) and ``ConvTranspose2d``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ._layers import Layer
from ._normalize import Pair, PairLike, as_bool, as_choice, as_float, as_int, as_pair

__all__ = ["ConvTranspose2d", "Upsample"]

UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear")


def _factors(value: Any) -> tuple[float, float]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(
                f"Upsample: `scale_factor` must be a number or a pair (h, w). Received: scale_factor={value!r}"
            )
        h, w = value
    else:
        h = w = value
    return (
        as_float("Upsample", "scale_factor", h, low=0.0, low_open=True),
        as_float("Upsample", "scale_factor", w, low=0.0, low_open=True),
    )


@dataclass(frozen=True, repr=False)
class Upsample(Layer):
    """torch's ``nn.Upsample`` on a (C, H, W) map: exactly one of ``size`` (int or (h, w)) and ``scale_factor``
    (a positive number or (h, w); the output is floor(input * factor) and the source positions use 1 / factor,
    torch's default ``recompute_scale_factor=None``). ``mode``: "nearest" (torch's floor rule), "nearest-exact"
    (half-pixel centres: TensorFlow's nearest resize) or "bilinear" with ``align_corners`` False (half-pixel
    centres, the default) or True. The index rules live in :mod:`xconv.resample`.

    >>> Upsample(scale_factor=2)
    Upsample(scale_factor=2.0)
    >>> Upsample((7, 9), mode="bilinear", align_corners=True)
    Upsample(size=(7, 9), mode='bilinear', align_corners=True)
    """

    size: Pair | None = None
    scale_factor: tuple[float, float] | None = None
    mode: str = "nearest"
    align_corners: bool | None = None

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            size: PairLike | None = ...,
            scale_factor: float | Sequence[float] | None = ...,
            mode: str = ...,
            align_corners: bool | None = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        me = "Upsample"
        if (self.size is None) == (self.scale_factor is None):
            raise SpecError(
                f"{me}: give exactly one of `size` and `scale_factor`, as in torch. Received: "
                f"size={self.size!r}, scale_factor={self.scale_factor!r}"
            )
        if self.size is not None:
            self._set("size", as_pair(me, "size", self.size, minimum=1))
        else:
            self._set("scale_factor", _factors(self.scale_factor))
        self._set("mode", as_choice(me, "mode", self.mode, UPSAMPLE_MODES))
        if self.mode == "bilinear":
            self._set(
                "align_corners",
                False if self.align_corners is None else as_bool(me, "align_corners", self.align_corners),
            )
        elif self.align_corners is not None:
            raise SpecError(
                f"{me}: `align_corners` applies to mode='bilinear' only, as in torch. Received: "
                f"mode={self.mode!r}, align_corners={self.align_corners!r}"
            )


@dataclass(frozen=True, repr=False)
class ConvTranspose2d(Layer):
    """torch's ``nn.ConvTranspose2d``: weight (in_channels, out_channels // groups, kh, kw), the output
    (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 per axis. ``padding`` crops that
    many positions from both ends of the full output; ``output_padding`` (smaller than the stride or the
    dilation, as torch requires) adds positions at the bottom / right.

    >>> ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    ConvTranspose2d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    """

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    output_padding: Pair = (0, 0)
    groups: int = 1
    bias: bool = True
    dilation: Pair = (1, 1)

    _positional = ("in_channels", "out_channels")

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: PairLike,
            stride: PairLike = ...,
            padding: PairLike = ...,
            output_padding: PairLike = ...,
            groups: int = ...,
            bias: bool = ...,
            dilation: PairLike = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        me = "ConvTranspose2d"
        self._set("in_channels", as_int(me, "in_channels", self.in_channels, minimum=1))
        self._set("out_channels", as_int(me, "out_channels", self.out_channels, minimum=1))
        self._set("kernel_size", as_pair(me, "kernel_size", self.kernel_size, minimum=1))
        self._set("stride", as_pair(me, "stride", self.stride, minimum=1))
        if isinstance(self.padding, str):
            raise SpecError(
                f"{me}: `padding` must be an int or (ph, pw); torch's transposed convs take no "
                f"'same' or 'valid'. Received: padding={self.padding!r}"
            )
        self._set("padding", as_pair(me, "padding", self.padding, minimum=0))
        self._set("output_padding", as_pair(me, "output_padding", self.output_padding, minimum=0))
        self._set("groups", as_int(me, "groups", self.groups, minimum=1))
        self._set("bias", as_bool(me, "bias", self.bias))
        self._set("dilation", as_pair(me, "dilation", self.dilation, minimum=1))
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise SpecError(
                    f"{me}: `output_padding` must be smaller than either `stride` or `dilation`, as in "
                    f"torch. Received: output_padding={self.output_padding}, stride={self.stride}, "
                    f"dilation={self.dilation}"
                )
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise SpecError(
                    f"{me}: `{name}` (={getattr(self, name)}) must be divisible by `groups` (={self.groups})"
                )
