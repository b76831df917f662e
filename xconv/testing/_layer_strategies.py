"""Hypothesis strategies for single layers of every kind (the parts that ``strategies.specs`` composes)."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import strategies as st

from .. import shapes
from ..errors import SpecError
from ..layout import same_padding
from ..spec import (
    ELU,
    GELU,
    AdaptiveAvgPool2d,
    AvgPool2d,
    ChannelLinear,
    ChannelShuffle,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    GlobalResponseNorm,
    GroupNorm,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    Layer,
    LayerNorm,
    LayerScale,
    LeakyReLU,
    MaxPool2d,
    Narrow,
    PositionEmbedding2d,
    PReLU,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Square,
    StarReLU,
    StochasticDepth,
    Tanh,
    Upsample,
)

#: the core layers: convolution, ReLU, Flatten, Linear
CORE_KINDS = ("Conv2d", "ReLU", "Flatten", "Linear")


#: every layer kind xconv has (the default of :func:`specs`); every backend builds all of them
ALL_KINDS = CORE_KINDS + (
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "BatchNorm2d",
    "BatchNorm1d",
    "Dropout",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "GELU",
    "ELU",
    "SiLU",
    "Softmax",
    "Identity",
    "ZeroPad2d",
    "Add",
    "Concat",
    "Multiply",
    "Subtract",
    "Hardtanh",
    "Hardsigmoid",
    "Hardswish",
    "StochasticDepth",
    "Rescaling",
    "Normalization",
    "LayerNorm",
    "ChannelLinear",
    "LayerScale",
    "PositionEmbedding2d",
    "Narrow",
    "ChannelShuffle",
    "GroupNorm",
    "PReLU",
    "StarReLU",
    "Square",
    "GlobalResponseNorm",
    "Upsample",
    "ConvTranspose2d",
)


#: the channel-axis kinds, drawn by :func:`channel_layers`
CHANNEL_KINDS = (
    "LayerNorm",
    "ChannelLinear",
    "LayerScale",
    "PositionEmbedding2d",
    "Narrow",
    "ChannelShuffle",
    "GroupNorm",
    "PReLU",
    "GlobalResponseNorm",
)


#: the fork-join combinators, drawn by :func:`blocks`
COMBINATOR_KINDS = ("Add", "Concat", "Multiply", "Subtract")


_ACTIVATIONS = (
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "GELU",
    "ELU",
    "SiLU",
    "Identity",
    "Dropout",
    "Hardtanh",
    "Hardsigmoid",
    "Hardswish",
    "StochasticDepth",
    "StarReLU",
    "Square",
)


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
    # every form but 'same' is stored as explicit ((top, bottom), (left, right))
    explicit = (
        None
        if form == "same"
        else cast("tuple[tuple[int, int], tuple[int, int]]", Conv2d(1, 1, 1, padding=padding).padding)
    )
    padded_h = None if explicit is None else h + sum(explicit[0])
    padded_w = None if explicit is None else w + sum(explicit[1])
    axis_h = draw(_axis(padded_h, kernel_max, strides, dilations))
    if draw(st.booleans()) and _fits(axis_h, padded_w):
        axis_w = axis_h
    else:
        axis_w = draw(_axis(padded_w, kernel_max, strides, dilations))
    (kh, sh, dh), (kw, sw, dw) = axis_h, axis_w
    pads = explicit or (same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw))
    mode = draw(st.sampled_from(modes))
    limit = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(mode)
    if limit is not None and (max(pads[0]) > limit[0] or max(pads[1]) > limit[1]):
        mode = "zeros" if "zeros" in modes else "replicate"
    g = draw(st.sampled_from([1, 1, 2, 3, c])) if groups else 1  # c: depthwise (Keras' DepthwiseConv2D)
    if c % g:
        g = 1
    out = g * draw(st.integers(1, max(1, max_channels // g)))
    return Conv2d(
        c,
        out,
        (kh, kw),
        stride=(sh, sw),
        padding=padding,
        dilation=(dh, dw),
        groups=g,
        bias=draw(st.booleans()),
        padding_mode=mode,
    )


@st.composite
def activations(draw: Any, kinds: tuple[str, ...] = ALL_KINDS, flat: bool = False) -> Layer | None:
    """One elementwise layer (or Softmax) of the allowed ``kinds``, with awkward parameters: negative and
    steep LeakyReLU slopes, ELU alphas other than 1, both GELU forms, Softmax over every non-batch axis."""
    options = [k for k in (*_ACTIVATIONS, "Softmax") if k in kinds]
    if not options:
        return None
    kind = draw(st.sampled_from(options))
    if kind == "LeakyReLU":
        return LeakyReLU(draw(st.sampled_from([0.01, 0.2, 0.0, -0.5, 1.5])))
    if kind == "ELU":
        return ELU(draw(st.sampled_from([1.0, 0.5, 2.0])))
    if kind == "GELU":
        return GELU(draw(st.sampled_from(["none", "tanh"])))
    if kind == "Dropout":
        return Dropout(draw(st.sampled_from([0.0, 0.5, 0.9])))
    if kind == "StochasticDepth":
        return StochasticDepth(draw(st.sampled_from([0.0, 0.2, 0.9])), draw(st.sampled_from(["row", "batch"])))
    if kind == "Hardtanh":  # ReLU6 (Keras' ReLU(max_value=6)) and other bounds
        low, high = draw(st.sampled_from([(0.0, 6.0), (0.0, 6.0), (-1.0, 1.0), (-0.5, 2.5)]))
        return Hardtanh(low, high)
    if kind == "Softmax":
        return Softmax(draw(st.sampled_from([1, -1] if flat else [1, 2, 3, -1, -2, -3])))
    return {
        "ReLU": ReLU,
        "Sigmoid": Sigmoid,
        "Tanh": Tanh,
        "SiLU": SiLU,
        "Identity": Identity,
        "Hardsigmoid": Hardsigmoid,
        "Hardswish": Hardswish,
        "StarReLU": StarReLU,
        "Square": Square,
    }[kind]()


@st.composite
def _layernorm(draw: Any, features: int, batch_stats: bool = True) -> LayerNorm:
    # float32 suites (batch_stats=False) draw eps = 0.1: normalising a pixel's few channels whose values nearly
    # coincide (one feature: exactly) divides float32 rounding of x - mean by sqrt(var + eps), up to 1 / sqrt(eps),
    # as for BatchNorm with batch statistics; with eps 1e-3 (x31.6) Keras and torch differed by 1.3e-5 of the
    # output scale on a one-feature LayerNorm (measured). float64 draws torch's and ConvNeXt's small eps too
    eps = draw(st.sampled_from([1e-5, 1e-6, 1e-3] if batch_stats else [0.1]))
    affine = draw(st.sampled_from([True, True, False]))
    return LayerNorm(features, eps=eps, elementwise_affine=affine, bias=affine and draw(st.booleans()))


@st.composite
def channel_layers(
    draw: Any,
    shape: tuple[int, int, int],
    kinds: tuple[str, ...] = ALL_KINDS,
    *,
    max_channels: int = 6,
    batch_stats: bool = True,
) -> Layer | None:
    """A channel-axis layer valid for a (C, H, W) input: LayerNorm over the channels, ChannelLinear,
    LayerScale, PositionEmbedding2d, Narrow along any non-batch axis (negative dims too; sometimes the slice of
    each of several groups), ChannelShuffle and GroupNorm with any
    divisor of C (GroupNorm's eps as LayerNorm's: 0.1 in float32 suites), PReLU with one slope or one per
    channel, GlobalResponseNorm."""
    options = [k for k in CHANNEL_KINDS if k in kinds]
    if not options:
        return None
    kind = draw(st.sampled_from(options))
    c, _h, _w = shape
    if kind == "LayerNorm":
        return draw(_layernorm(c, batch_stats))  # type: ignore[no-any-return]
    if kind == "ChannelLinear":
        return ChannelLinear(c, draw(st.integers(1, max_channels)), bias=draw(st.booleans()))
    if kind == "LayerScale":
        return LayerScale(c)
    if kind == "PositionEmbedding2d":
        return PositionEmbedding2d(c, _h, _w)
    if kind == "Narrow":
        dim = draw(st.sampled_from([1, 1, 2, 3, -1, -2, -3]))
        size = shape[dim % 4 - 1]
        groups = draw(st.sampled_from([1, 1, *(g for g in range(2, size + 1) if size % g == 0)]))
        start = draw(st.integers(0, size // groups - 1))
        return Narrow(dim, start, draw(st.integers(1, size // groups - start)), groups=groups)
    if kind == "GroupNorm" and c * _h * _w > 1:  # (a group of one value is refused: it normalises to 0)
        groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0 and c // g * _h * _w > 1]))
        eps = draw(st.sampled_from([1e-5, 1e-3] if batch_stats else [0.1]))
        affine, bias = draw(st.sampled_from([(True, True), (True, True), (False, False), (True, False)]))
        return GroupNorm(groups, c, eps=eps, affine=affine, bias=bias)
    if kind == "GlobalResponseNorm":
        return GlobalResponseNorm(c, eps=draw(st.sampled_from([1e-6, 1e-3])))
    if kind in ("PReLU", "GroupNorm"):
        return PReLU(draw(st.sampled_from([1, c])))
    return ChannelShuffle(draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0])))


@st.composite
def pool_layers(draw: Any, shape: tuple[int, int, int], kinds: tuple[str, ...] = ALL_KINDS) -> Layer | None:
    """A MaxPool2d / AvgPool2d / AdaptiveAvgPool2d valid for ``shape``: kernels 1..4, strides 1..3 (often 2),
    padding up to half the kernel, ceil_mode, count_include_pad, dilation (max pool), adaptive sizes that
    divide evenly and that do not."""
    options = [k for k in ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d") if k in kinds]
    if not options:
        return None
    kind = draw(st.sampled_from(options))
    _, h, w = shape
    if kind == "AdaptiveAvgPool2d":
        return AdaptiveAvgPool2d((draw(st.integers(1, min(h, 4))), draw(st.integers(1, min(w, 4)))))
    k = draw(st.integers(1, 4))
    kernel = (k, k) if draw(st.booleans()) else (k, draw(st.integers(1, 4)))
    stride = draw(st.sampled_from([None, 1, 2, 2, 3]))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    try:
        if kind == "MaxPool2d":
            dilation = draw(st.sampled_from([1, 1, 2]))
            layer: Layer = MaxPool2d(kernel, stride, padding, dilation, ceil_mode)
        else:
            layer = AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad=draw(st.booleans()))
        shapes.infer(Sequential(layer, input_shape=shape))
        return layer
    except SpecError:  # kernel too large for this map: the smallest pool of the kind
        return MaxPool2d(1) if kind == "MaxPool2d" else AvgPool2d(1)


@st.composite
def upsample_layers(draw: Any, shape: tuple[int, int, int], max_size: int = 12) -> Upsample:
    """An Upsample valid for ``shape``: every mode (bilinear with both align_corners), explicit sizes (smaller and
    larger than the input, per axis), integer and non-integer scale factors (e.g. 1.3, 2.5, 1/3: torch's output
    floor(n * f) with source positions at 1 / f); an output side grows to at most 2 * ``max_size``."""
    _, h, w = shape

    def limit(n: int) -> int:
        return max(n, 2 * max_size)

    mode = draw(st.sampled_from(["nearest", "nearest", "nearest-exact", "bilinear", "bilinear"]))
    corners = draw(st.booleans()) if mode == "bilinear" else None
    if draw(st.booleans()):
        size = (draw(st.integers(1, limit(h))), draw(st.integers(1, limit(w))))
        return Upsample(size, mode=mode, align_corners=corners)
    options = [
        f
        for f in (1.0, 2.0, 3.0, 0.5, 1.3, 1.5, 2.5, 1 / 3, 0.7, 1.7, 2.05)
        if 1 <= int(min(h, w) * f) and int(max(h, w) * f) <= limit(max(h, w))
    ]
    factor = (draw(st.sampled_from(options)), draw(st.sampled_from(options)))
    return Upsample(scale_factor=factor if factor[0] != factor[1] else factor[0], mode=mode, align_corners=corners)


@st.composite
def conv_transpose_layers(
    draw: Any, shape: tuple[int, int, int], max_channels: int = 6, groups: bool = True
) -> ConvTranspose2d:
    """A ConvTranspose2d valid for ``shape``: kernels 1..4, strides and dilations 1..3, every output_padding torch
    accepts (below the stride or the dilation), paddings up to what leaves one output position, groups."""
    c, h, w = shape
    axes = []
    for n in (h, w):
        k, s, d = draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 2, 3])), draw(st.sampled_from([1, 1, 2, 3]))
        op = draw(st.integers(0, max(s, d) - 1))
        full = (n - 1) * s + d * (k - 1) + 1 + op
        p = draw(st.integers(0, min(3, (full - 1) // 2)))
        axes.append((k, s, d, op, p))
    g = draw(st.sampled_from([1, 1, 2, c])) if groups else 1
    g = g if c % g == 0 else 1
    out = g * draw(st.integers(1, max(1, max_channels // g)))
    (kh, sh, dh, oh, ph), (kw, sw, dw, ow, pw) = axes
    return ConvTranspose2d(
        c,
        out,
        (kh, kw),
        stride=(sh, sw),
        padding=(ph, pw),
        output_padding=(oh, ow),
        groups=g,
        bias=draw(st.booleans()),
        dilation=(dh, dw),
    )


@st.composite
def _batchnorm_options(draw: Any, batch_stats: bool = True) -> dict[str, Any]:
    options = {
        "eps": draw(st.sampled_from([1e-5, 1e-5, 1e-3, 0.1])),
        "momentum": draw(st.sampled_from([0.1, 0.1, 0.5, None])),
        "affine": draw(st.sampled_from([True, True, False])),
        "scale": draw(st.sampled_from([True, True, False])),  # Keras' scale=False / center=False
        "center": draw(st.sampled_from([True, True, False])),
        "track_running_stats": draw(st.sampled_from([True, True, True, False] if batch_stats else [True])),
    }
    # frozen (Keras' trainable=False): running statistics in training too, nothing learned
    options["frozen"] = options["track_running_stats"] and draw(st.sampled_from([False, False, False, True]))
    return options
