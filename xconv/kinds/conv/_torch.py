"""Convolutions: Conv2d and ConvTranspose2d: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, Literal, cast

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from ...errors import UnsupportedLayerError
from . import Conv2d, ConvTranspose2d

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


class PaddedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose padding ``nn.Conv2d`` cannot express (4-sided, e.g. TensorFlow 'same' at
    stride 2) is applied by ``F.pad`` inside the same module, so its ``state_dict`` keys stay
    ``weight`` / ``bias``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        pad: tuple[int, int, int, int],
        pad_mode: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0, **kwargs)
        self.pad = pad  # F.pad order: (left, right, top, bottom)
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad, mode=self.pad_mode))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}, pad_mode={self.pad_mode!r}"  # type: ignore[no-untyped-call]  # untyped in torch


def _conv2d(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    (top, bottom), (left, right) = info.padding  # type: ignore[misc]
    common = dict(stride=layer.stride, dilation=layer.dilation, groups=layer.groups, bias=layer.bias, **factory)
    args = (layer.in_channels, layer.out_channels, layer.kernel_size)
    if top == bottom and left == right:
        mode = cast('Literal["zeros", "reflect", "replicate", "circular"]', layer.padding_mode)  # checked by the spec
        return nn.Conv2d(*args, padding=(top, left), padding_mode=mode, **common)
    return PaddedConv2d(*args, pad=(left, right, top, bottom), pad_mode=_PAD_MODES[layer.padding_mode], **common)


def _conv_transpose(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: ConvTranspose2d = info.layer  # type: ignore[assignment]
    return nn.ConvTranspose2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        output_padding=layer.output_padding,
        groups=layer.groups,
        bias=layer.bias,
        dilation=layer.dilation,
        **factory,
    )


BUILDERS: dict[type, Any] = {
    ConvTranspose2d: _conv_transpose,
    Conv2d: _conv2d,
}


def _padded_conv(m: Any, name: str, where: str) -> Conv2d:
    """xconv's own conv: its 4-sided padding is applied inside."""
    left, right, top, bottom = m.pad
    return Conv2d(
        m.in_channels,
        m.out_channels,
        m.kernel_size,
        stride=m.stride,
        padding=((top, bottom), (left, right)),
        dilation=m.dilation,
        groups=m.groups,
        bias=m.bias is not None,
        padding_mode={"constant": "zeros"}.get(m.pad_mode, m.pad_mode),
        name=name,
    )


def _torch_conv(m: nn.Conv2d, name: str, where: str) -> Conv2d:
    padding: Any = m.padding
    if isinstance(padding, str):
        padding = "same" if padding == "same" else (0, 0)  # torch allows 'same' only at stride 1: TF's rule
    return Conv2d(
        m.in_channels,
        m.out_channels,
        m.kernel_size,
        stride=m.stride,
        padding=padding,
        dilation=m.dilation,
        groups=m.groups,
        bias=m.bias is not None,
        padding_mode=m.padding_mode,
        name=name,
    )


def _torch_conv_transpose(m: nn.ConvTranspose2d, name: str, where: str) -> ConvTranspose2d:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise UnsupportedLayerError(f"from_torch: {where}: only zero padding given as numbers is supported")
    return ConvTranspose2d(
        m.in_channels,
        m.out_channels,
        m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        output_padding=m.output_padding,
        groups=m.groups,
        bias=m.bias is not None,
        dilation=m.dilation,
        name=name,
    )


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    PaddedConv2d: _padded_conv,
    nn.Conv2d: _torch_conv,
    nn.ConvTranspose2d: _torch_conv_transpose,
}


_STD_CONVS = ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")


def _is_timm_std_conv(m: nn.Module) -> bool:
    return type(m).__name__ in _STD_CONVS and type(m).__module__ == "timm.layers.std_conv"


def _timm_std_conv(m: Any, name: str, where: str) -> tuple[Conv2d, dict[str, Any]]:
    """timm's weight-standardised convs (NFNet's ScaledStdConv2d and the others): each output channel's kernel
    standardised over its fan-in in forward (mean 0, biased variance 1, eps added), times ``gain * scale`` in the
    scaled ones, then a plain convolution. Imported folded: a Conv2d whose weight is the standardised kernel,
    computed once here as the module's forward computes it. The same function; but trained, the folded conv
    learns its kernel directly, without the standardisation or the gain. So the layer is named
    ``{module}.standardized``: the module's own ``weight`` and ``gain`` are not this layer's weights, and
    ``set_weights`` refuses them by key rather than load a raw kernel as a standardised one."""
    if m.padding_mode != "zeros":
        raise UnsupportedLayerError(f"from_torch: {where}: only zero padding is supported")
    gain = (m.gain * m.scale).view(-1) if "Scaled" in type(m).__name__ else None
    with torch.no_grad():
        weight = F.batch_norm(
            m.weight.reshape(1, m.out_channels, -1),
            None,
            None,
            weight=gain,
            training=True,
            momentum=0.0,
            eps=m.eps,
        ).reshape_as(m.weight)
    padding: Any = m.padding
    if getattr(m, "same_pad", False):  # timm's dynamic "same": TensorFlow's rule, at any stride
        if tuple(m.padding) != (0, 0):
            raise UnsupportedLayerError(f"from_torch: {where}: a dynamic 'same' pad with a static one too")
        padding = "same"
    elif isinstance(padding, str):
        padding = "same" if padding == "same" else (0, 0)
    folded = f"{name}.standardized"
    layer = Conv2d(
        m.in_channels,
        m.out_channels,
        m.kernel_size,
        stride=m.stride,
        padding=padding,
        dilation=m.dilation,
        groups=m.groups,
        bias=m.bias is not None,
        name=folded,
    )
    state = {"weight": weight}
    if m.bias is not None:
        state["bias"] = m.bias
    return layer, state


#: (predicate on a module, its importer), for classes of other libraries matched by module and name
MATCHERS: list[Any] = [(_is_timm_std_conv, _timm_std_conv)]
