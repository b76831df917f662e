"""Convolutions: Conv2d and ConvTranspose2d: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, Literal, cast

from ..._info import LayerInfo
from ..._torch_env import F, nn, torch
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
