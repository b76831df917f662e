"""Layer specs that act along the channel axis: the per-pixel LayerNorm and Linear of ConvNeXt, layer scale,
channel slices and channel shuffles. Registered in ``LAYER_TYPES`` like every other kind."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecError
from ._layers import Layer
from ._normalize import as_bool, as_float, as_int

__all__ = ["ChannelLinear", "ChannelShuffle", "GroupNorm", "LayerNorm", "LayerScale", "Narrow", "PReLU"]


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


@dataclass(frozen=True, repr=False)
class LayerScale(Layer):
    """A learned per-channel multiplier of a (C, H, W) map: torchvision's ``layer_scale * x`` (a parameter of
    shape (C, 1, 1), key ``"{name}.layer_scale"``), Keras' ``LayerScale`` (gamma of shape (C,)).

    In torch a graph holds it as a parameter of the module at its key, so other layers may be named under
    that key (``features.1.0.layer_scale`` next to ``features.1.0.block.0.weight``), as in torchvision.

    >>> LayerScale(96)
    LayerScale(96)
    """

    num_features: int

    _positional = ("num_features",)

    def _validate(self) -> None:
        self._set("num_features", as_int("LayerScale", "num_features", self.num_features, minimum=1))


@dataclass(frozen=True, repr=False)
class Narrow(Layer):
    """``length`` entries from ``start`` along ``dim`` of the NCHW tensor, torch's ``x.narrow(dim, start,
    length)``: ``x.chunk``, ``torch.split`` and ``x[:, a:b]`` import as Narrow layers. dim 1 is the channels
    (the features of a flat input), 2 and 3 are H and W; negative dims count from the end.

    >>> Narrow(1, 0, 16)
    Narrow(1, 0, 16)
    """

    dim: int
    start: int
    length: int

    _positional = ("dim", "start", "length")

    def _validate(self) -> None:
        me = "Narrow"
        self._set("dim", as_int(me, "dim", self.dim))
        if self.dim in (0, -4):
            raise SpecError(f"{me}: `dim` must not be the batch axis. Received: dim={self.dim!r}")
        self._set("start", as_int(me, "start", self.start, minimum=0))
        self._set("length", as_int(me, "length", self.length, minimum=1))


@dataclass(frozen=True, repr=False)
class ChannelShuffle(Layer):
    """torch's ``nn.ChannelShuffle(groups)``: the channels, seen as (groups, C / groups), transposed to
    (C / groups, groups) (ShuffleNet's view -> transpose -> view). A channel gather in Keras.

    >>> ChannelShuffle(2)
    ChannelShuffle(2)
    """

    groups: int

    _positional = ("groups",)

    def _validate(self) -> None:
        self._set("groups", as_int("ChannelShuffle", "groups", self.groups, minimum=1))


@dataclass(frozen=True, repr=False)
class GroupNorm(Layer):
    """torch's ``nn.GroupNorm``: the channels of a (C, H, W) map cut into ``num_groups`` runs of C / num_groups
    channels, each run normalised over its channels and pixels, (x - mean) / sqrt(var + eps) with the biased
    variance, then a per-channel ``weight`` and ``bias`` when ``affine``. ``nn.InstanceNorm2d`` without running
    statistics is ``GroupNorm(C, C)``; Keras' ``GroupNormalization(groups, axis=-1)`` is the same function.

    >>> GroupNorm(8, 32)
    GroupNorm(8, 32)
    """

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True

    _positional = ("num_groups", "num_channels")

    def _validate(self) -> None:
        me = "GroupNorm"
        self._set("num_groups", as_int(me, "num_groups", self.num_groups, minimum=1))
        self._set("num_channels", as_int(me, "num_channels", self.num_channels, minimum=1))
        if self.num_channels % self.num_groups:
            raise SpecError(f"{me}: num_channels={self.num_channels} is not divisible by num_groups={self.num_groups}")
        self._set("eps", as_float(me, "eps", self.eps, low=0.0, low_open=True))
        self._set("affine", as_bool(me, "affine", self.affine))


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
