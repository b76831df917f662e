"""Hypothesis strategies for valid random xconv specs, inputs and weights.

>>> from hypothesis import given
>>> from xconv.testing import strategies
>>> @given(strategies.specs())
... def test_my_spec_property(spec): ...
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from .. import shapes
from ..layout import same_padding
from ..spec import Conv2d, Flatten, Linear, ReLU, Sequential
from ..weights import expected_shapes

__all__ = ["specs", "inputs", "weights", "conv2d_layers"]

PADDING_FORMS = ("int", "pair", "sides", "same", "valid")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@st.composite
def _axis(draw: Any, padded: int | None, kernel_max: int, strides: tuple[int, ...], dilations: tuple[int, ...]) -> Any:
    """(kernel, stride, dilation) for one axis whose padded size is ``padded`` (None: 'same', any kernel)."""
    stride = draw(st.sampled_from(strides))
    dilation = draw(st.sampled_from(dilations))
    fit = kernel_max if padded is None else min(kernel_max, (padded - 1) // dilation + 1)
    return draw(st.integers(1, fit)), stride, dilation


def _fits(axis: tuple[int, int, int], padded: int | None) -> bool:
    k, _, d = axis
    return padded is None or (k - 1) * d + 1 <= padded


@st.composite
def conv2d_layers(
    draw: Any,
    shape: tuple[int, int, int],
    *,
    paddings: tuple[str, ...] = PADDING_FORMS,
    modes: tuple[str, ...] = PADDING_MODES,
    kernel_max: int = 7,
    strides: tuple[int, ...] = (1, 2, 3),
    dilations: tuple[int, ...] = (1, 2, 3),
    max_channels: int = 6,
    groups: bool = True,
) -> Conv2d:
    """A Conv2d valid for an input of logical ``shape`` (C, H, W): every padding form and mode, groups, bias
    on/off, kernels 1..kernel_max, strides and dilations per axis (often equal on both axes)."""
    c, h, w = shape
    form = draw(st.sampled_from(paddings))
    side = st.integers(0, 3)
    padding: Any
    if form == "same":
        padding = "same"
    elif form == "valid":
        padding = "valid"
    elif form == "int":
        padding = draw(side)
    elif form == "pair":
        padding = (draw(side), draw(side))
    else:
        padding = ((draw(side), draw(side)), (draw(side), draw(side)))
    explicit = None if form == "same" else Conv2d(1, 1, 1, padding=padding).padding
    padded_h = None if explicit is None else h + sum(explicit[0])  # type: ignore[index]
    padded_w = None if explicit is None else w + sum(explicit[1])  # type: ignore[index]
    axis_h = draw(_axis(padded_h, kernel_max, strides, dilations))
    if draw(st.booleans()) and _fits(axis_h, padded_w):
        axis_w = axis_h
    else:
        axis_w = draw(_axis(padded_w, kernel_max, strides, dilations))
    (kh, sh, dh), (kw, sw, dw) = axis_h, axis_w
    pads = explicit or (same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw))
    mode = draw(st.sampled_from(modes))
    limit = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(mode)
    if limit is not None and (max(pads[0]) > limit[0] or max(pads[1]) > limit[1]):  # type: ignore[index]
        mode = "zeros" if "zeros" in modes else "replicate"
    g = draw(st.sampled_from([1, 1, 2, 3])) if groups else 1
    if c % g:
        g = 1
    out = g * draw(st.integers(1, max(1, max_channels // g)))
    return Conv2d(
        c, out, (kh, kw), stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=g,
        bias=draw(st.booleans()), padding_mode=mode,
    )


@st.composite
def specs(
    draw: Any,
    *,
    max_layers: int = 6,
    min_size: int = 1,
    max_size: int = 12,
    max_channels: int = 6,
    max_features: int = 800,
    kinds: tuple[str, ...] = ("Conv2d", "ReLU", "Flatten", "Linear"),
    paddings: tuple[str, ...] = PADDING_FORMS,
    modes: tuple[str, ...] = PADDING_MODES,
    strides: tuple[int, ...] = (1, 2, 3),
    dilations: tuple[int, ...] = (1, 2, 3),
    groups: bool = True,
) -> Sequential:
    """A valid random ``Sequential`` with ``input_shape`` set: convs (with ReLUs) on a (C, H, W) map, then
    optionally Flatten and Linear layers; 1..max_layers layers. Sizes odd and even, sometimes C == H == W,
    sometimes 1x1 maps before Flatten. ``kinds`` limits the layer kinds drawn; ``groups=False`` draws only
    ungrouped convs."""
    if draw(st.integers(0, 5)) == 0:
        c = h = w = draw(st.integers(min_size, min(max_size, max_channels)))
    else:
        c = draw(st.integers(1, max_channels))
        h = draw(st.integers(min_size, max_size))
        w = draw(st.integers(min_size, max_size))
    input_shape: tuple[int, ...] = (c, h, w)
    shape: tuple[int, ...] = input_shape
    layers: list[Any] = []
    n = draw(st.integers(1, max_layers))
    use_conv = "Conv2d" in kinds
    use_head = "Linear" in kinds or "Flatten" in kinds
    n_conv_part = 0
    if use_conv:
        n_conv_part = n if not use_head else draw(st.integers(0, n))
    while len(layers) < n_conv_part:
        if "ReLU" in kinds and layers and not isinstance(layers[-1], ReLU) and draw(st.booleans()):
            layers.append(ReLU())
        else:
            layer = draw(conv2d_layers(shape, paddings=paddings, modes=modes, strides=strides, dilations=dilations,
                                       max_channels=max_channels, groups=groups))
            layers.append(layer)
        shape = shapes.infer(Sequential(*layers, input_shape=input_shape))[-1].output_shape
    if len(layers) < n and use_head:
        features = int(np.prod(shape))
        if features > max_features:  # keep Linear layers small: bring the map down with a 1x1-output conv
            if "Conv2d" not in kinds:
                return draw(specs(max_layers=max_layers, min_size=1, max_size=4, max_channels=max_channels,
                                  kinds=kinds, paddings=paddings, modes=modes))
            conv = Conv2d(shape[0], draw(st.integers(1, max_channels)), (shape[1], shape[2]))
            layers.append(conv)
            shape = (conv.out_channels, 1, 1)
        layers.append(Flatten())
        if "Linear" in kinds:
            for j in range(draw(st.integers(1, max(1, min(3, n - len(layers)))))):
                if j and "ReLU" in kinds and draw(st.booleans()):
                    layers.append(ReLU())
                in_features = None if draw(st.booleans()) else int(np.prod(shape))
                out = draw(st.integers(1, 12))
                layers.append(Linear(in_features, out, bias=draw(st.booleans())))
                shape = (out,)
    if not layers:
        layers.append(ReLU() if "ReLU" in kinds else Flatten())
    return Sequential(*layers, input_shape=input_shape)


@st.composite
def inputs(draw: Any, spec: Sequential, *, batch: tuple[int, int] = (1, 3), dtype: str = "float64", scale: float = 1.0) -> np.ndarray:
    """A batch for ``spec`` in logical layout (N, C, H, W) or (N, F): standard normal times ``scale``
    (negative values included), drawn from a hypothesis-chosen seed."""
    assert spec.input_shape is not None, "the spec needs an input_shape"
    n = draw(st.integers(*batch))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *spec.input_shape)) * scale).astype(dtype)


@st.composite
def weights(draw: Any, spec: Sequential, *, dtype: str = "float64") -> dict[str, np.ndarray]:
    """Canonical weights for ``spec``: Kaiming-scaled normal weights and, unlike xconv's initializer,
    non-zero biases (a zero bias would hide a bias mapped to the wrong channel)."""
    infos = shapes.infer(spec)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in expected_shapes(infos).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    return out
