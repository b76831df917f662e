"""Hypothesis strategies for valid random xconv specs, inputs and weights.

>>> from hypothesis import given
>>> from xconv.testing import strategies
>>> @given(strategies.specs())
... def test_my_spec_property(spec): ...
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np
from hypothesis import strategies as st

from .. import shapes
from ..errors import SpecError
from ..graph import token_vocabulary
from ..kinds import fixed_values
from ..spec import (
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Concat,
    Conv2d,
    Flatten,
    Identity,
    Linear,
    MaxPool2d,
    Multiply,
    Normalization,
    ReLU,
    Rescaling,
    Sequential,
    Sigmoid,
    Subtract,
    Use,
    ZeroPad2d,
)
from ._layer_strategies import (
    _ACTIVATIONS,
    ALL_KINDS,
    CHANNEL_KINDS,
    COMBINATOR_KINDS,
    CORE_KINDS,
    PADDING_FORMS,
    PADDING_MODES,
    _batchnorm_options,
    _layernorm,
    activations,
    channel_layers,
    conv2d_layers,
    conv_transpose_layers,
    pool_layers,
    upsample_layers,
)
from ._token_strategies import (
    TOKEN_KINDS,
    attention_blocks,
    padding_masks,
    text_encoder_specs,
    token_types,
    transformer_specs,
    window_specs,
)

__all__ = [
    "ALL_KINDS",
    "CHANNEL_KINDS",
    "COMBINATOR_KINDS",
    "CORE_KINDS",
    "TOKEN_KINDS",
    "activations",
    "attention_blocks",
    "blocks",
    "channel_layers",
    "conv2d_layers",
    "conv_transpose_layers",
    "inputs",
    "padding_masks",
    "pool_layers",
    "specs",
    "text_encoder_specs",
    "token_types",
    "transformer_specs",
    "upsample_layers",
    "weights",
    "window_specs",
]


def _valid(items: list[Any], shape: tuple[int, ...]) -> bool:
    try:
        shapes.infer(Sequential(*items, input_shape=shape))
        return True
    except SpecError:
        return False


def _out_shape(items: list[Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    return shapes.infer(Sequential(*items, input_shape=shape))[-1].output_shape


@st.composite
def _same_size_branch(
    draw: Any, shape: tuple[int, int, int], c_out: int, kinds: tuple[str, ...], depth: int, batch_stats: bool
) -> Any:
    """A branch that keeps H and W and gives ``c_out`` channels: a skip (when the channels agree), a
    stride-1 'same' conv with extras after it, a nested block, or a 3x3 stride-1 pool; 1..3 layers."""
    c, _h, _w = shape
    options = ["conv", "conv"]
    if c_out == c:
        options += ["skip", "pool", "act"] + (["block"] if depth < 2 else [])
    choice = draw(st.sampled_from(options))
    if choice == "skip":
        return Identity()
    if choice == "act":
        return draw(activations(kinds)) or Identity()
    if choice == "pool":
        if "MaxPool2d" in kinds and draw(st.booleans()):
            return MaxPool2d(3, stride=1, padding=1)
        return (
            AvgPool2d(3, stride=1, padding=1, count_include_pad=draw(st.booleans()))
            if "AvgPool2d" in kinds
            else Identity()
        )
    if choice == "block":
        return draw(blocks(shape, kinds=kinds, depth=depth + 1, batch_stats=batch_stats, keep_shape=True))
    k = draw(st.integers(1, 3))
    items: list[Any] = [
        Conv2d(c, c_out, k, padding="same", bias=draw(st.booleans()), dilation=draw(st.sampled_from([1, 1, 2])))
    ]
    for _ in range(draw(st.integers(0, 2))):
        extra = draw(st.sampled_from(["act", "bn", "conv"]))
        if extra == "bn" and "BatchNorm2d" in kinds:
            # running statistics only: a batch-statistics BatchNorm right after another one makes the first one's
            # weight gradient analytically zero (normalising removes its scale), and the frameworks return
            # cancellation noise there (measured 2.6e-9 in float64, against a 1e-9 bound scaled by max(1, |0|))
            items.append(BatchNorm2d(c_out, **{**draw(_batchnorm_options(batch_stats)), "track_running_stats": True}))
        elif extra == "conv":
            items.append(Conv2d(c_out, c_out, 3, padding=1, bias=draw(st.booleans())))
        else:
            items.append(draw(activations(kinds)) or ReLU())
    return items[0] if len(items) == 1 else Sequential(*items)


@st.composite
def blocks(
    draw: Any,
    shape: tuple[int, int, int],
    *,
    kinds: tuple[str, ...] = ALL_KINDS,
    depth: int = 0,
    max_channels: int = 6,
    batch_stats: bool = True,
    keep_shape: bool = False,
) -> Any:
    """A fork-join block valid for a (C, H, W) input: ``Add`` or ``Multiply`` of 2-3 same-size branches, a
    ``Subtract`` of two (or of the map and its per-channel mean)
    (skips, convs with extras, pools, nested blocks: branches of different depths), a squeeze-excitation
    ``Multiply`` (a (C, 1, 1) sigmoid gate broadcast over the map), or a ``Concat`` along channels (any channel
    counts) or along H or W. ``keep_shape``: only blocks whose output has the input's shape."""
    c, _h, _w = shape
    options = [k for k in COMBINATOR_KINDS if k in kinds and not (keep_shape and k == "Concat")] or ["Add"]
    kind = draw(st.sampled_from(options))
    n = draw(st.integers(2, 3))
    if kind == "Concat":
        dim = draw(st.sampled_from([1, 1, 1, 2, 3, -3]))
        if dim == 1 or dim == -3:
            outs = [draw(st.integers(1, max_channels)) for _ in range(n)]
            outs[0] = c if draw(st.booleans()) else outs[0]
        else:
            outs = [c] * n
        branches = [draw(_same_size_branch(shape, o, kinds, depth, batch_stats)) for o in outs]
        return Concat(*branches, dim=dim)
    if kind == "Multiply" and draw(st.booleans()):
        gate = Sequential(AdaptiveAvgPool2d(1), Conv2d(c, c, 1), Sigmoid())
        return Multiply(draw(_same_size_branch(shape, c, kinds, depth, batch_stats)), gate)
    c_out = c if keep_shape or draw(st.booleans()) else draw(st.integers(1, max_channels))
    if kind == "Multiply" and not batch_stats:
        # float32 suites: two factors. The gradient of one factor of a product sums terms scaled by all the
        # others; three factors after a BatchNorm with a small running variance (1/sqrt(var + eps) up to 100)
        # make float32 gradient terms ~100x their sum, and TF's float32 gradients then differ by ~1e-4 of the
        # output scale (measured 1.2e-4; torch 6e-7) without any mapping being wrong. float64 draws three.
        n = 2
    if kind == "Subtract":  # a - b: two branches, or the map minus a broadcast (C, 1, 1) one (x - mean(x))
        first = draw(_same_size_branch(shape, c, kinds, depth, batch_stats))
        if draw(st.booleans()):
            return Subtract(first, AdaptiveAvgPool2d(1))
        return Subtract(first, draw(_same_size_branch(shape, c, kinds, depth, batch_stats)))
    branches = [draw(_same_size_branch(shape, c_out, kinds, depth, batch_stats)) for _ in range(n)]
    return (Add if kind == "Add" else Multiply)(*branches)


@st.composite
def specs(
    draw: Any,
    *,
    max_layers: int = 6,
    min_size: int = 1,
    max_size: int = 12,
    max_channels: int = 6,
    max_features: int = 800,
    kinds: tuple[str, ...] = ALL_KINDS,
    paddings: tuple[str, ...] = PADDING_FORMS,
    modes: tuple[str, ...] = PADDING_MODES,
    strides: tuple[int, ...] = (1, 2, 3),
    dilations: tuple[int, ...] = (1, 2, 3),
    groups: bool = True,
    batch_stats: bool = True,
    graphs: bool = True,
) -> Sequential:
    """A valid random ``Sequential`` with ``input_shape`` set: convs, pools, BatchNorm2d, activations and
    Dropout on a (C, H, W) map, then optionally Flatten with Linear, BatchNorm1d, activations and Dropout;
    1..max_layers layers (a fork-join block counts as one; ``graphs=False`` draws chains only, and one output;
    graphs return, one time in four, the outputs of one or two earlier parts with the last, ``outputs=``). Sizes odd and even, sometimes C == H == W, sometimes 1x1 maps before Flatten.
    ``kinds`` limits the layer kinds drawn (default: all, :data:`ALL_KINDS`; :data:`CORE_KINDS` for the
    core's four); ``groups=False`` draws only ungrouped convs. ``batch_stats=False`` draws no BatchNorm with
    ``track_running_stats=False`` (which normalises with batch statistics even in inference): in float32,
    x - mean cancels when a channel's batch spread is small against its mean, and outputs then differ by
    about ulp(|mean|) / sqrt(var + eps) relative (measured 2.2e-5 on two nearly equal samples) in every
    framework alike; float32 property tests use ``batch_stats=False``, float64 ones keep them."""
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
    has_pool = any(p in kinds for p in ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"))
    has_act = any(a in kinds for a in (*_ACTIVATIONS, "Softmax"))
    map_kinds = [
        k
        for k, ok in (
            ("Conv2d", "Conv2d" in kinds),
            ("Conv2d", "Conv2d" in kinds),
            ("pool", has_pool),
            ("BatchNorm2d", "BatchNorm2d" in kinds),
            ("activation", has_act),
            ("activation", has_act),
            ("ZeroPad2d", "ZeroPad2d" in kinds),
            ("Rescaling", "Rescaling" in kinds),
            ("Normalization", "Normalization" in kinds),
            ("channels", any(k in kinds for k in CHANNEL_KINDS)),
            ("channels", any(k in kinds for k in CHANNEL_KINDS)),  # (seven kinds share this entry)
            ("channels", any(k in kinds for k in CHANNEL_KINDS)),
            ("Upsample", "Upsample" in kinds),
            ("Upsample", "Upsample" in kinds),
            ("ConvTranspose2d", "ConvTranspose2d" in kinds),
        )
        if ok
    ]
    use_blocks = graphs and "Conv2d" in kinds and any(k in kinds for k in COMBINATOR_KINDS)
    if use_blocks:
        map_kinds += ["block", "block", "block"]
    if use_blocks and ("Add" in kinds or "Concat" in kinds):
        map_kinds += ["reference"]  # a join reading an earlier tensor again (a DAG: Use)
    outputs: list[tuple[int, tuple[int, ...]]] = [(-1, input_shape)]  # (position in layers, output shape)
    if not use_conv and map_kinds:  # a map part of pools, BatchNorm and activations only
        use_conv = True
        n_conv_part = n if not use_head else draw(st.integers(0, n))
    while len(layers) < n_conv_part:
        choice = draw(st.sampled_from(map_kinds))
        layer: Any = None
        if choice == "activation":
            layer = draw(activations(kinds))
        elif choice == "pool":
            layer = draw(pool_layers(shape, kinds))  # type: ignore[arg-type]
        elif choice == "BatchNorm2d":
            layer = BatchNorm2d(shape[0], **draw(_batchnorm_options(batch_stats)))
        elif choice == "ZeroPad2d":
            layer = ZeroPad2d(tuple(draw(st.integers(0, 2)) for _ in range(4)))
        elif choice == "Rescaling":  # a number or one per channel (1/255, ImageNet's standard deviations, ...)
            per_channel = st.lists(st.floats(-3, 3, allow_nan=False), min_size=shape[0], max_size=shape[0]).map(tuple)
            # scales of at least 0.05 in size: a scale of 0 makes a channel constant, and x - mean(x) of it after a
            # join is pure rounding, which a following normalisation (a response norm, a BatchNorm) scales up to
            # about 1e-5 of float32 outputs near 0 in every framework alike (measured: 1.1e-5)
            scales = st.one_of(st.floats(0.05, 3), st.floats(-3, -0.05))
            per_channel_scale = st.lists(scales, min_size=shape[0], max_size=shape[0]).map(tuple)
            layer = Rescaling(
                draw(st.one_of(st.sampled_from([1 / 255, 2.0, -0.5]), per_channel_scale)),
                draw(st.one_of(st.sampled_from([0.0, -1.0]), per_channel)),
            )
        elif choice == "Normalization":
            layer = Normalization(shape[0])
        elif choice == "channels":
            layer = draw(channel_layers(shape, kinds, max_channels=max_channels, batch_stats=batch_stats))  # type: ignore[arg-type]
        elif choice == "Upsample":
            layer = draw(upsample_layers(shape, max_size))  # type: ignore[arg-type]
        elif choice == "ConvTranspose2d":
            if max(shape[1:]) > max_size:  # keep maps small: a transposed conv grows them up to 3x
                layer = Conv2d(shape[0], shape[0], 3, stride=2, padding=1)
            else:
                layer = draw(conv_transpose_layers(shape, max_channels, groups))  # type: ignore[arg-type]
        elif choice == "block":
            layer = draw(blocks(shape, kinds=kinds, max_channels=max_channels, batch_stats=batch_stats))  # type: ignore[arg-type]
        elif choice == "reference":
            layer = draw(_reference(layers, outputs, shape, kinds))
        elif "Conv2d" in kinds:
            layer = draw(
                conv2d_layers(
                    cast("tuple[int, int, int]", shape),  # a (C, H, W) map here
                    paddings=paddings,
                    modes=modes,
                    strides=strides,
                    dilations=dilations,
                    max_channels=max_channels,
                    groups=groups,
                )
            )
        if layer is None:
            layer = draw(activations(kinds)) or Identity()
        layers.append(layer)
        shape = shapes.infer(Sequential(*layers, input_shape=input_shape))[-1].output_shape
        outputs.append((len(layers) - 1, shape))
    if len(layers) < n and use_head:
        features = int(np.prod(shape))
        if features > max_features:  # keep Linear layers small: bring the map down with a 1x1-output conv
            if "Conv2d" not in kinds:
                spec: Sequential = draw(
                    specs(
                        max_layers=max_layers,
                        min_size=1,
                        max_size=4,
                        max_channels=max_channels,
                        kinds=kinds,
                        paddings=paddings,
                        modes=modes,
                    )
                )
                return spec
            conv = Conv2d(shape[0], draw(st.integers(1, max_channels)), (shape[1], shape[2]))
            layers.append(conv)
            shape = (conv.out_channels, 1, 1)
        if use_blocks and "Concat" in kinds and "Conv2d" in kinds and draw(st.integers(0, 3)) == 0:
            # features flattened from two different maps, concatenated: a block permutation for the Linear
            c_extra = draw(st.integers(1, max_channels))
            layers.append(Concat(Flatten(), Sequential(Conv2d(shape[0], c_extra, 1), Flatten())))
            shape = (int(np.prod(shape)) + c_extra * shape[1] * shape[2],)
        else:  # sometimes in H,W,C order (Keras' Flatten): the torch model permutes first
            layers.append(Flatten(channels_last=draw(st.sampled_from([False, False, False, True]))))
            shape = (int(np.prod(shape)),)
        if "Linear" in kinds:
            for j in range(draw(st.integers(1, max(1, min(3, n - len(layers)))))):
                if draw(st.booleans()):  # between Flatten / Linear and the next Linear: the permutation looks through
                    extra = draw(activations(kinds, flat=True))
                    if "BatchNorm1d" in kinds and draw(st.booleans()):
                        extra = BatchNorm1d(shape[0], **draw(_batchnorm_options(batch_stats)))
                    elif "LayerNorm" in kinds and draw(st.integers(0, 3)) == 0:
                        extra = draw(_layernorm(shape[0], batch_stats))
                    if extra is not None:
                        layers.append(extra)
                in_features = None if draw(st.booleans()) else int(np.prod(shape))
                out = draw(st.integers(1, 12))
                if use_blocks and draw(st.integers(0, 4)) == 0:  # flat branches: a residual or a concat
                    residual = Add(Identity(), Linear(in_features, shape[0], bias=draw(st.booleans())))
                    if draw(st.booleans()) and "Add" in kinds and _valid([*layers, residual], input_shape):
                        # (features still in a flatten order cannot be added to a Linear's: refused, not drawn)
                        layers.append(residual)
                        continue
                    if "Concat" in kinds:
                        layers.append(Concat(Identity(), Linear(in_features, out)))
                        shape = (shape[0] + out,)
                        continue
                layers.append(Linear(in_features, out, bias=draw(st.booleans())))
                shape = (out,)
    if not layers:
        layers.append(ReLU() if "ReLU" in kinds else Flatten())
    returned = None
    if graphs and len(layers) > 1 and draw(st.integers(0, 3)) == 0:  # several outputs: earlier parts and the last
        picked = draw(st.lists(st.integers(0, len(layers) - 2), min_size=1, max_size=2, unique=True))
        returned = [_named(layers, k) for k in [*picked, len(layers) - 1]]
    return Sequential(*layers, input_shape=input_shape, outputs=returned)


def _named(layers: list[Any], k: int) -> str:
    """The name of top-level part ``k``, naming it ``t{k}`` first where it has none (for a Use or an output)."""
    part = layers[k]
    if part.name is None:
        named = f"t{k}"
        if isinstance(part, Sequential):
            layers[k] = Sequential(*part.layers, name=named)
        elif hasattr(part, "rebuild"):  # a combinator
            layers[k] = part.rebuild(part.branches, named)
        else:
            layers[k] = replace(part, name=named)
    return str(layers[k].name)


@st.composite
def _reference(
    draw: Any, layers: list[Any], outputs: list[tuple[int, tuple[int, ...]]], shape: tuple[int, ...], kinds: Any
) -> Any:
    """A join of the current map with an earlier one read through ``Use``: ``Add`` where the shapes agree,
    else ``Concat`` along channels where H and W do; the earlier part is named for the reference. Drawn again,
    or with a second ``Add`` reading the same tensor, one tensor feeds several joins. Without such an earlier
    map, an ``Identity``."""
    fits = [
        (k, s)
        for k, s in outputs[:-1]  # (not the part just before: that is the plain fork-join case)
        if s[1:] == shape[1:] and ("Concat" in kinds or s == shape and "Add" in kinds)
    ]
    if not fits:
        return Identity()
    k, earlier = draw(st.sampled_from(fits))
    source = _named(layers, k) if k >= 0 else None
    if earlier == shape and "Add" in kinds and (draw(st.booleans()) or "Concat" not in kinds):
        join: Any = Add(Identity(), Use(source))
        if draw(st.booleans()):  # the same tensor read by a second join at once
            join = Sequential(join, ReLU() if "ReLU" in kinds else Identity(), Add(Use(source), Identity()))
        return join
    return Concat(Use(source), Identity())


@st.composite
def inputs(
    draw: Any,
    spec: Sequential,
    *,
    batch: tuple[int, int] = (1, 3),
    dtype: str = "float64",
    scale: float = 1.0,
    training: bool = False,
) -> np.ndarray:
    """A batch for ``spec`` in logical layout (N, C, H, W) or (N, F): standard normal times ``scale``
    (negative values included), drawn from a hypothesis-chosen seed. The batch is at least 2 where a
    BatchNorm normalises with batch statistics (in ``training``, or without running statistics) over a
    single value per channel otherwise, which torch refuses. For a spec that takes token ids: int64 ids below
    its vocabulary (uniform, ``dtype`` and ``scale`` unused)."""
    assert spec.input_shape is not None, "the spec needs an input_shape"
    low, high = batch
    infos = shapes.infer(spec)
    vocabulary = token_vocabulary(infos)
    for info in infos:
        if (
            info.kind.startswith("BatchNorm")
            and (training or not info.layer.track_running_stats)  # type: ignore[attr-defined]
            and int(np.prod(info.input_shape[1:])) == 1
        ):
            low = max(low, 2)
    n = draw(st.integers(low, max(low, high)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng([seed, 1])  # inputs and weights: separate streams
    if vocabulary is not None:
        return rng.integers(0, vocabulary, (n, *spec.input_shape))
    return (rng.standard_normal((n, *spec.input_shape)) * scale).astype(dtype)


@st.composite
def weights(draw: Any, spec: Sequential, *, dtype: str = "float64") -> dict[str, np.ndarray]:
    """Canonical weights for ``spec``: Kaiming-scaled normal weights and, unlike xconv's initializer,
    non-zero biases (a zero bias would hide a bias mapped to the wrong channel); BatchNorm with random shift and
    running mean, running variances from 1e-4 to 10 (small ones make an eps mismatch large; 0.1 to 10 without
    affine parameters), scales drawn as
    N(0, 1) * sqrt(running_var + eps) so that each BatchNorm keeps activations near unit size as a trained one
    does (unscaled, chains of them grow values 100-fold per layer, and float32 rounding with them), and a
    random ``num_batches_tracked``."""
    infos = shapes.infer(spec)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng([seed, 2])  # (equal seeds must not give x == running_mean)
    out: dict[str, np.ndarray] = {}
    for info in infos:
        batchnorm = info.kind.startswith("BatchNorm")
        running_var = None
        if info.kind == "Normalization":  # a mean and a variance per channel, as adapt() would find
            out[f"{info.key}.mean"] = rng.standard_normal(info.params["mean"]).astype(dtype)
            out[f"{info.key}.variance"] = (10.0 ** rng.uniform(-1, 1, size=info.params["variance"])).astype(dtype)
            continue
        fixed = fixed_values(info)
        for name, shape in info.params.items():
            key = f"{info.key}.{name}"
            if name in fixed:  # (data the layer determines: its one value)
                out[key] = fixed[name].copy()
                continue
            if name == "num_batches_tracked":
                out[key] = np.asarray(rng.integers(0, 1000), dtype=np.int64)
                continue
            if batchnorm and name == "weight":
                value = rng.standard_normal(shape)  # scaled below, once running_var is known
            elif batchnorm and name == "running_var":
                # with a gain, from 1e-4 (an eps mismatch shows) to 10; without one (affine=False) nothing
                # rescales the output, so the variance is what a trained layer would have seen of inputs of
                # about unit size: 0.1 to 10 (1e-4 would amplify by 100 per layer, and float32 rounding with it)
                low = -4 if "weight" in info.params else -1
                value = running_var = 10.0 ** rng.uniform(low, 1, size=shape)
            elif batchnorm:  # bias, running_mean
                value = rng.standard_normal(shape)
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            out[key] = value.astype(dtype)
        if batchnorm and "weight" in info.params:
            var = running_var if running_var is not None else np.ones(info.params["weight"])
            out[f"{info.key}.weight"] = (out[f"{info.key}.weight"] * np.sqrt(var + info.layer.eps)).astype(dtype)  # type: ignore[attr-defined]
    return out
