"""Shape inference: one pure function per layer kind, shared by ``summary`` and every backend.

Shapes are logical, without batch: (C, H, W) for maps, (F,) for features. Problems are found here, before
any framework is touched, and raise :class:`SpecError` naming the layer index and kind.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SpecError
from .layout import same_padding, source_blocks
from .spec import (
    ELEMENTWISE,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelLinear,
    ChannelShuffle,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    GroupNorm,
    Layer,
    LayerNorm,
    LayerScale,
    Linear,
    MaxPool2d,
    Narrow,
    Normalization,
    PReLU,
    Rescaling,
    Sequential,
    Softmax,
    Upsample,
    ZeroPad2d,
)
from .spec._layers import _BatchNorm
from .spec._normalize import Padding, as_shape
from .spec._sequential import Combinator, Concat

__all__ = ["LayerInfo", "infer", "resolve"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    """What shape inference knows about one layer of a spec.

    >>> import xconv as xc
    >>> info = xc.infer(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)))[0]
    >>> info.key, info.input_shape, info.output_shape, info.params
    ('0', (3, 8, 8), (8, 6, 6), {'weight': (8, 3, 3, 3), 'bias': (8,)})
    """

    index: int
    #: the layer with inferred fields filled in (``Linear.in_features``)
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    #: canonical state name (without the index prefix) -> shape, in state_dict order: parameters and buffers
    params: dict[str, Shape]
    #: Conv2d: the explicit ((top, bottom), (left, right)) padding for this input size. MaxPool2d / AvgPool2d:
    #: the padding on each side plus, bottom / right, what ceil_mode's last window reaches beyond it
    padding: Padding | None = None
    #: for a flat input: the (C, H, W) map it was flattened from (through elementwise layers), else None
    input_source: Shape | None = None
    #: the same for the output
    output_source: Shape | None = None
    #: names in ``params`` that are buffers (BatchNorm running statistics), not trainable parameters
    buffers: tuple[str, ...] = ()
    #: the prefix of this node's canonical weight keys, its torch module path and (unnamed: with the kind in
    #: front) its Keras layer name: the layer's ``name``, else its positional path ("4", "1.0.2")
    key: str = ""
    #: the positional path (index in its Sequential, branch index in a combinator, joined by dots)
    path: str = ""
    #: indices of the nodes whose outputs this node reads (-1: the model's input), in order
    inputs: tuple[int, ...] = ()
    #: the shapes of those inputs (``input_shape`` is the first)
    input_shapes: tuple[Shape, ...] = ()

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def name(self) -> str | None:
        return self.layer.name

    @property
    def is_join(self) -> bool:
        """Whether this node joins branches (Add, Concat, Multiply) rather than applying a layer."""
        return isinstance(self.layer, Combinator)

    @property
    def label(self) -> str:
        """How messages name the node: ``layer3.1.bn2 (BatchNorm2d)``, ``4 (Conv2d)``."""
        return f"{self.key} ({self.kind})"

    @property
    def param_count(self) -> int:
        """Trainable parameters (buffers not counted)."""
        return sum(math.prod(s) for n, s in self.params.items() if n not in self.buffers)

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(n for n in self.params if n not in self.buffers)


class _Ctx:
    def __init__(self, index: int, layer: Layer, shape: Shape, key: str | None = None) -> None:
        self.index, self.layer, self.shape = index, layer, shape
        self.key = str(index) if key is None else key

    def error(self, message: str) -> SpecError:
        return SpecError(f"layer {self.key} ({self.layer.kind}): {message}")

    def need_map(self) -> tuple[int, int, int]:
        if len(self.shape) != 3:
            raise self.error(
                f"expects a (C, H, W) input but its input is flat with {self.shape[0]} features; "
                f"a {self.layer.kind} cannot follow Flatten or Linear"
            )
        c, h, w = self.shape
        return c, h, w


def _describe(shape: Shape, source: Any) -> str:
    if source is None:
        return str(shape[0])
    return f"{' + '.join('*'.join(map(str, b)) for b in source_blocks(source))}={shape[0]}"


def _conv2d(ctx: _Ctx, layer: Conv2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.in_channels:
        raise ctx.error(f"in_channels={layer.in_channels} but its input has {c} channels (input shape {ctx.shape})")
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    if layer.padding == "same":
        padding: Padding = (same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw))
    else:
        padding = layer.padding  # type: ignore[assignment]
    out = []
    for axis, size, (before, after), k, s, d in (
        ("height", h, padding[0], kh, sh, dh),
        ("width", w, padding[1], kw, sw, dw),
    ):
        mode = layer.padding_mode
        if mode == "reflect" and max(before, after) >= size:
            raise ctx.error(
                f"reflect padding needs each pad smaller than the input {axis}; padding {axis} "
                f"({before}, {after}) vs input {axis} {size}"
            )
        if mode == "circular" and max(before, after) > size:
            raise ctx.error(
                f"circular padding needs each pad at most the input {axis}; padding {axis} "
                f"({before}, {after}) vs input {axis} {size}"
            )
        extent = (k - 1) * d + 1
        padded = size + before + after
        if extent > padded:
            raise ctx.error(
                f"kernel {axis} {k} (dilated extent {extent}) is larger than the padded input {axis} {padded} "
                f"(input {size} + padding {before}+{after})"
            )
        out.append((padded - extent) // s + 1)
    params: dict[str, Shape] = {"weight": (layer.out_channels, c // layer.groups, kh, kw)}
    if layer.bias:
        params["bias"] = (layer.out_channels,)
    return LayerInfo(ctx.index, layer, ctx.shape, (layer.out_channels, out[0], out[1]), params, padding=padding)


def _elementwise(ctx: _Ctx, layer: Layer, source: Shape | None) -> LayerInfo:
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {}, input_source=source, output_source=source)


def _flatten(ctx: _Ctx, layer: Flatten, source: Shape | None) -> LayerInfo:
    if len(ctx.shape) == 1:
        return _elementwise(ctx, layer, source)
    # a channels-last flatten gives features in H,W,C order in both frameworks: no order to reconcile after it
    source_out = None if layer.channels_last else ctx.shape
    return LayerInfo(ctx.index, layer, ctx.shape, (math.prod(ctx.shape),), {}, output_source=source_out)


def _linear(ctx: _Ctx, layer: Linear, source: Shape | None) -> LayerInfo:
    if len(ctx.shape) != 1:
        raise ctx.error(f"needs a flat input but its input has shape {ctx.shape}; add Flatten() before it")
    features = ctx.shape[0]
    if layer.in_features is None:
        layer = dataclasses.replace(layer, in_features=features)
    elif layer.in_features != features:
        raise ctx.error(f"in_features={layer.in_features} but its input has {_describe(ctx.shape, source)} features")
    params: dict[str, Shape] = {"weight": (layer.out_features, features)}
    if layer.bias:
        params["bias"] = (layer.out_features,)
    return LayerInfo(ctx.index, layer, ctx.shape, (layer.out_features,), params, input_source=source)


def pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling output length: floor (or ceil) of (size + 2p - d(k-1) - 1) / s, plus 1; with ceil_mode
    a last window must start inside the input or its left padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def tap_slices(
    kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], out: tuple[int, int]
) -> list[tuple[int, int, slice, slice]]:
    """For each kernel tap (i, j) of a conv or pool over an already padded input: (i, j, rows, cols), the
    strided slices of that input it reads for ``out`` = (out_h, out_w) outputs, taps in row-major order."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    return [
        (i, j, slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))
        for i in range(kh)
        for j in range(kw)
    ]


def layer_taps(info: LayerInfo) -> list[tuple[int, int, slice, slice]]:
    """:func:`tap_slices` of a Conv2d, MaxPool2d or AvgPool2d layer, on its input padded by ``info.padding``."""
    layer = info.layer
    dilation = getattr(layer, "dilation", (1, 1))
    return tap_slices(layer.kernel_size, layer.stride, dilation, info.output_shape[1:])  # type: ignore[attr-defined, arg-type]


def avgpool_counts(size: int, out: int, k: int, s: int, p: int, count_include_pad: bool) -> np.ndarray:
    """Per output position along one axis, how many positions torch's AvgPool2d divides by: the window
    [o*s - p, o*s - p + k) cut at the padded input's end (size + p), and also at the input's own edges unless
    ``count_include_pad``. The divisor of a 2-D window is the product of the two axes' counts."""
    starts = np.arange(out) * s - p
    ends = np.minimum(starts + k, size + p)
    if not count_include_pad:
        starts, ends = np.maximum(starts, 0), np.minimum(ends, size)
    return (ends - starts).astype(np.int64)


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's AdaptiveAvgPool windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def avgpool_divisor(info: LayerInfo) -> np.ndarray:
    """torch's AvgPool2d divisor for each output position (out_h, out_w): the product of the two axes'
    :func:`avgpool_counts`."""
    layer: AvgPool2d = info.layer  # type: ignore[assignment]
    assert layer.stride is not None  # the kernel size when not given
    counts = [
        avgpool_counts(size, out, k, s, p, layer.count_include_pad)
        for size, out, k, s, p in zip(
            info.input_shape[1:], info.output_shape[1:], layer.kernel_size, layer.stride, layer.padding
        )
    ]
    return np.outer(counts[0], counts[1])


def _pool(ctx: _Ctx, layer: MaxPool2d | AvgPool2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    dilation = getattr(layer, "dilation", (1, 1))
    assert layer.stride is not None  # the kernel size when not given
    out, padding = [], []
    for axis, size, k, s, p, d in zip(
        ("height", "width"), (h, w), layer.kernel_size, layer.stride, layer.padding, dilation
    ):
        n = pool_output_size(size, k, s, p, d, layer.ceil_mode)
        if n < 1 or size + 2 * p < d * (k - 1) + 1:
            raise ctx.error(
                f"kernel {axis} {k} (dilated extent {d * (k - 1) + 1}) is larger than the padded input {axis} "
                f"{size + 2 * p} (input {size} + padding {p}+{p})"
            )
        extra = max(0, (n - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
        empty = [o for o in range(n) if not any(0 <= o * s - p + j * d < size for j in range(k))]
        if empty:  # only possible with dilation: the taps step over the input
            raise ctx.error(
                f"the {axis} window at output position {empty[0]} reads only padding (kernel {k}, dilation {d}, "
                f"padding {p}, input {size}); torch would output -inf there"
            )
        out.append(n)
        padding.append((p, p + extra))
    return LayerInfo(ctx.index, layer, ctx.shape, (c, out[0], out[1]), {}, padding=(padding[0], padding[1]))


def _adaptive(ctx: _Ctx, layer: AdaptiveAvgPool2d, source: Shape | None) -> LayerInfo:
    c, _, _ = ctx.need_map()
    return LayerInfo(ctx.index, layer, ctx.shape, (c, *layer.output_size), {})


def _batchnorm(ctx: _Ctx, layer: _BatchNorm, source: Shape | None) -> LayerInfo:
    if isinstance(layer, BatchNorm2d):
        features = ctx.need_map()[0]
        what = "channels"
    else:
        if len(ctx.shape) != 1:
            raise ctx.error(
                f"BatchNorm1d needs a flat input (after Linear or Flatten) but its input has shape {ctx.shape}; "
                "use BatchNorm2d on (C, H, W) maps"
            )
        features, what = ctx.shape[0], "features"
    if layer.num_features != features:
        raise ctx.error(f"num_features={layer.num_features} but its input has {features} {what}")
    n = (layer.num_features,)
    params: dict[str, Shape] = {name: n for name in layer.affine_params}
    buffers: tuple[str, ...] = ()
    if layer.track_running_stats:
        params.update(running_mean=n, running_var=n, num_batches_tracked=())
        buffers = ("running_mean", "running_var", "num_batches_tracked")
    if layer.frozen:  # nothing is learned: the gain and shift are held like the statistics
        buffers = (*layer.affine_params, *buffers)
    keep = source if len(ctx.shape) == 1 else None
    return LayerInfo(
        ctx.index, layer, ctx.shape, ctx.shape, params, input_source=keep, output_source=keep, buffers=buffers
    )


def _softmax(ctx: _Ctx, layer: Softmax, source: Shape | None) -> LayerInfo:
    rank = len(ctx.shape) + 1
    if not -rank <= layer.dim < rank or layer.dim % rank == 0:
        axes = "1 or -1" if rank == 2 else "1, 2, 3 or -1, -2, -3"
        raise ctx.error(f"dim={layer.dim} is not a non-batch axis of its (N, *{ctx.shape}) input; use {axes}")
    return _elementwise(ctx, layer, source)


def _channels(ctx: _Ctx) -> int:
    return ctx.shape[0]


def _rescaling(ctx: _Ctx, layer: Rescaling, source: Shape | None) -> LayerInfo:
    for name in ("scale", "offset"):
        value = getattr(layer, name)
        if isinstance(value, tuple) and len(value) not in (1, _channels(ctx)):
            raise ctx.error(f"{name} has {len(value)} values but its input has {_channels(ctx)} channels")
    if (
        len(ctx.shape) == 1
        and source is not None
        and any(isinstance(getattr(layer, n), tuple) and len(getattr(layer, n)) > 1 for n in ("scale", "offset"))
    ):
        raise ctx.error(
            "per-feature constants on features flattened from a map are not supported (their order "
            "differs between NCHW and NHWC)"
        )
    return _elementwise(ctx, layer, source)


def _normalization(ctx: _Ctx, layer: Normalization, source: Shape | None) -> LayerInfo:
    if layer.num_features != _channels(ctx):
        raise ctx.error(f"num_features={layer.num_features} but its input has {_channels(ctx)} channels")
    n = (layer.num_features,)
    keep = source if len(ctx.shape) == 1 else None
    return LayerInfo(
        ctx.index,
        layer,
        ctx.shape,
        ctx.shape,
        {"mean": n, "variance": n},
        input_source=keep,
        output_source=keep,
        buffers=("mean", "variance"),
    )


def _zeropad(ctx: _Ctx, layer: ZeroPad2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    (t, b), (l, r) = layer.padding
    return LayerInfo(ctx.index, layer, ctx.shape, (c, h + t + b, w + l + r), {}, padding=layer.padding)


def _layernorm(ctx: _Ctx, layer: LayerNorm, source: Shape | None) -> LayerInfo:
    if layer.num_features != _channels(ctx):
        what = "channels" if len(ctx.shape) == 3 else "features"
        raise ctx.error(f"num_features={layer.num_features} but its input has {_channels(ctx)} {what}")
    n: tuple[int, ...] = (layer.num_features,)
    params = {"weight": n} if layer.elementwise_affine else {}
    if layer.bias:
        params["bias"] = n
    keep = source if len(ctx.shape) == 1 else None
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params, input_source=keep, output_source=keep)


def _groupnorm(ctx: _Ctx, layer: GroupNorm, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if layer.num_channels != c:
        raise ctx.error(f"num_channels={layer.num_channels} but its input has {c} channels")
    if c // layer.num_groups * h * w == 1:
        raise ctx.error(
            f"each of its {layer.num_groups} groups holds one value of a {ctx.shape} map, which normalises to 0 "
            "(torch refuses it for a batch of one); use fewer groups or a larger map"
        )
    params: dict[str, Shape] = {"weight": (c,), "bias": (c,)} if layer.affine else {}
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params)


def _prelu(ctx: _Ctx, layer: PReLU, source: Shape | None) -> LayerInfo:
    n = _channels(ctx)
    if layer.num_parameters not in (1, n):
        what = "channels" if len(ctx.shape) == 3 else "features"
        raise ctx.error(f"num_parameters={layer.num_parameters} must be 1 or the input's {n} {what}")
    keep = source if len(ctx.shape) == 1 else None
    params: dict[str, Shape] = {"weight": (layer.num_parameters,)}
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params, input_source=keep, output_source=keep)


def _channel_linear(ctx: _Ctx, layer: ChannelLinear, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.in_features:
        raise ctx.error(f"in_features={layer.in_features} but its input has {c} channels")
    params: dict[str, Shape] = {"weight": (layer.out_features, c)}
    if layer.bias:
        params["bias"] = (layer.out_features,)
    return LayerInfo(ctx.index, layer, ctx.shape, (layer.out_features, h, w), params)


def _layer_scale(ctx: _Ctx, layer: LayerScale, source: Shape | None) -> LayerInfo:
    c, _, _ = ctx.need_map()
    if c != layer.num_features:
        raise ctx.error(f"num_features={layer.num_features} but its input has {c} channels")
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {"layer_scale": (c, 1, 1)})


def _narrow(ctx: _Ctx, layer: Narrow, source: Shape | None) -> LayerInfo:
    from .layout import flatten_permutation

    rank = len(ctx.shape) + 1
    if not -rank <= layer.dim < rank or layer.dim % rank == 0:
        raise ctx.error(f"dim={layer.dim} is not a non-batch axis of its (N, *{ctx.shape}) input")
    axis = layer.dim % rank
    size = ctx.shape[axis - 1]
    if layer.start + layer.length > size:
        raise ctx.error(f"start={layer.start} + length={layer.length} exceeds the size {size} of dim {axis}")
    if rank == 2 and flatten_permutation(source) is not None:
        raise ctx.error(
            "a slice of features flattened from a map is not supported (their order differs between NCHW and NHWC)"
        )
    out = list(ctx.shape)
    out[axis - 1] = layer.length
    return LayerInfo(ctx.index, layer, ctx.shape, tuple(out), {})


def _shuffle(ctx: _Ctx, layer: ChannelShuffle, source: Shape | None) -> LayerInfo:
    c, _, _ = ctx.need_map()
    if c % layer.groups:
        raise ctx.error(f"its input's {c} channels do not divide into groups={layer.groups}")
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {})


def shuffle_order(channels: int, groups: int) -> np.ndarray:
    """ChannelShuffle as a gather: output channel j reads input channel ``order[j]``."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


def narrow_axis(info: LayerInfo) -> int:
    """The NCHW (or (N, F)) axis, 1..3, of a Narrow layer."""
    rank = len(info.input_shape) + 1
    return info.layer.dim % rank  # type: ignore[attr-defined, no-any-return]


def _upsample(ctx: _Ctx, layer: Upsample, source: Shape | None) -> LayerInfo:
    from . import resample

    c, h, w = ctx.need_map()
    sizes = layer.size or (None, None)
    factors = layer.scale_factor or (None, None)
    out = [resample.output_length(n, o, s) for n, o, s in zip((h, w), sizes, factors)]
    if min(out) < 1:
        raise ctx.error(
            f"scale_factor={layer.scale_factor} gives an empty output for input size {(h, w)} "
            f"(floor(size * factor) = {tuple(out)})"
        )
    return LayerInfo(ctx.index, layer, ctx.shape, (c, out[0], out[1]), {})


def conv_transpose_length(size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """torch's transposed-conv output length: (size - 1) * s - 2p + d(k - 1) + op + 1."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _conv_transpose(ctx: _Ctx, layer: ConvTranspose2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.in_channels:
        raise ctx.error(f"in_channels={layer.in_channels} but its input has {c} channels (input shape {ctx.shape})")
    out = [
        conv_transpose_length(n, k, s, p, op, d)
        for n, k, s, p, op, d in zip(
            (h, w), layer.kernel_size, layer.stride, layer.padding, layer.output_padding, layer.dilation
        )
    ]
    if min(out) < 1:
        raise ctx.error(f"padding={layer.padding} crops the whole output (input {(h, w)}, output {tuple(out)})")
    params: dict[str, Shape] = {"weight": (c, layer.out_channels // layer.groups, *layer.kernel_size)}
    if layer.bias:
        params["bias"] = (layer.out_channels,)
    return LayerInfo(ctx.index, layer, ctx.shape, (layer.out_channels, out[0], out[1]), params)


def join_rule(combinator: Combinator, key: str, index: int, shapes_in: list[Shape], sources: list[Any]) -> LayerInfo:
    """Shape rule of an Add / Multiply (numpy broadcasting of size-1 dimensions, equal ranks) or Concat."""
    from . import layout

    def error(message: str) -> SpecError:
        listed = ", ".join(str(tuple(s)) for s in shapes_in)
        return SpecError(f"{combinator.kind} {key}: {message}; branch output shapes: {listed}")

    ranks = {len(s) for s in shapes_in}
    if len(ranks) != 1:
        raise error("branch outputs must have the same rank (all (C, H, W) maps or all flat)")
    rank = ranks.pop()
    if isinstance(combinator, Concat):
        axis = combinator.dim % (rank + 1) if -(rank + 1) <= combinator.dim <= rank else None
        if axis is None or axis == 0:
            raise error(f"dim={combinator.dim} is not a non-batch axis of an (N, *{shapes_in[0]}) tensor")
        others = {tuple(s[: axis - 1]) + tuple(s[axis:]) for s in shapes_in}
        if len(others) != 1:
            raise error(f"outputs must agree in every dimension but dim {axis}")
        out = list(shapes_in[0])
        out[axis - 1] = sum(s[axis - 1] for s in shapes_in)
        source = None
        if rank == 1 and any(src is not None for src in sources):
            source = tuple(b for s, src in zip(shapes_in, sources) for b in layout.source_blocks(src, s[0]))
        return LayerInfo(index, combinator, shapes_in[0], tuple(out), {}, input_source=None, output_source=source)  # type: ignore[arg-type]
    out = []
    for dim in zip(*shapes_in):
        sizes = {d for d in dim if d != 1}
        if len(sizes) > 1:
            raise error("dimensions must be equal or 1 (numpy broadcasting)")
        out.append(sizes.pop() if sizes else 1)
    source = None
    if rank == 1:
        full = [src for s, src in zip(shapes_in, sources) if s[0] == out[0] and out[0] > 1]
        perms = [layout.flatten_permutation(src) for src in full]
        if any((p is None) != (perms[0] is None) or (p is not None and not (p == perms[0]).all()) for p in perms):
            raise error(
                "flat branches hold features in different orders (flattened from different maps or "
                "concatenated differently); their sum or product is not the same function in NHWC"
            )
        source = full[0] if full else None
    return LayerInfo(index, combinator, shapes_in[0], tuple(out), {}, output_source=source)  # type: ignore[arg-type]


#: layer class -> its shape rule
RULES: dict[type[Layer], Callable[[_Ctx, Layer, Shape | None], LayerInfo]] = {
    Conv2d: _conv2d,  # type: ignore[dict-item]
    Flatten: _flatten,  # type: ignore[dict-item]
    Linear: _linear,  # type: ignore[dict-item]
    MaxPool2d: _pool,  # type: ignore[dict-item]
    AvgPool2d: _pool,  # type: ignore[dict-item]
    AdaptiveAvgPool2d: _adaptive,  # type: ignore[dict-item]
    BatchNorm2d: _batchnorm,  # type: ignore[dict-item]
    BatchNorm1d: _batchnorm,  # type: ignore[dict-item]
    Softmax: _softmax,  # type: ignore[dict-item]
    ZeroPad2d: _zeropad,  # type: ignore[dict-item]
    Rescaling: _rescaling,  # type: ignore[dict-item]
    Normalization: _normalization,  # type: ignore[dict-item]
    LayerNorm: _layernorm,  # type: ignore[dict-item]
    GroupNorm: _groupnorm,  # type: ignore[dict-item]
    PReLU: _prelu,  # type: ignore[dict-item]
    ChannelLinear: _channel_linear,  # type: ignore[dict-item]
    LayerScale: _layer_scale,  # type: ignore[dict-item]
    Narrow: _narrow,  # type: ignore[dict-item]
    ChannelShuffle: _shuffle,  # type: ignore[dict-item]
    Upsample: _upsample,  # type: ignore[dict-item]
    ConvTranspose2d: _conv_transpose,  # type: ignore[dict-item]
    **{kind: _elementwise for kind in ELEMENTWISE},
}


def softmax_axis(info: LayerInfo) -> int:
    """The NCHW (or (N, F)) axis, 1..3, of a Softmax layer."""
    rank = len(info.input_shape) + 1
    return info.layer.dim % rank  # type: ignore[attr-defined, no-any-return]


def concat_axis(info: LayerInfo) -> int:
    """The NCHW (or (N, F)) axis, 1..3, of a Concat node."""
    rank = len(info.input_shape) + 1
    return info.layer.dim % rank  # type: ignore[attr-defined, no-any-return]


def infer(spec: Sequential, input_shape: Shape | None = None) -> list[LayerInfo]:
    """The spec's graph: one :class:`LayerInfo` per node (layer or join) in topological order, each with its
    key, inputs, shapes and parameter shapes, for ``input_shape`` (default: the spec's own). The last node's
    output is the model's output.

    >>> import xconv as xc
    >>> spec = xc.Sequential(xc.Conv2d(3, 8, 3), xc.Flatten(), xc.Linear(None, 10), input_shape=(3, 8, 8))
    >>> [(i.kind, i.output_shape) for i in infer(spec)]
    [('Conv2d', (8, 6, 6)), ('Flatten', (288,)), ('Linear', (10,))]
    """
    from .graph import build_graph

    return build_graph(spec, _input_shape(spec, input_shape))[0]


def resolve(spec: Sequential, input_shape: Shape | None = None) -> tuple[Sequential, list[LayerInfo]]:
    """The spec with its input shape and inferred fields filled in, and its graph (see :func:`infer`)."""
    from .graph import build_graph

    infos, resolved = build_graph(spec, _input_shape(spec, input_shape))
    return resolved, infos


def _input_shape(spec: Sequential, input_shape: Shape | None) -> Shape:
    if not isinstance(spec, Sequential):
        raise SpecError(f"expected an xconv.Sequential spec. Received: {type(spec).__name__}")
    if input_shape is not None:
        return as_shape("input_shape", tuple(input_shape))
    if spec.input_shape is None:
        raise SpecError("the spec has no input_shape: pass input_shape=(C, H, W) here or to Sequential(...)")
    return spec.input_shape
