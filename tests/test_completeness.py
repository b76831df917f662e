"""Every layer kind and combinator is handled everywhere: shape rule, numpy reference forward and backward,
each backend's builder, the random-spec strategies, and each importer (or listed there as refused, with the
reason). A kind added to the spec without one of these fails here, by name."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings

import xconv as xc
from xconv.spec import COMBINATORS, LAYER_TYPES
from xconv.testing import max_rel_diff, strategies

KINDS = sorted([*LAYER_TYPES, *COMBINATORS])

#: one small example of every kind: (spec items, input shape)
EXAMPLES = {
    "Conv2d": ([xc.Conv2d(2, 3, 3, stride=2, padding=1)], (2, 5, 5)),
    "ReLU": ([xc.ReLU()], (2, 3, 3)),
    "Flatten": ([xc.Flatten()], (2, 3, 3)),
    "FlattenChannelsLast": ([xc.Conv2d(2, 3, 1), xc.Flatten(channels_last=True)], (2, 3, 3)),
    "FrozenBatchNorm": ([xc.BatchNorm2d(2, frozen=True), xc.Flatten(), xc.BatchNorm1d(18, frozen=True)], (2, 3, 3)),
    "GroupNorm": (
        [xc.GroupNorm(2, 4, eps=1e-3), xc.GroupNorm(4, 4, affine=False), xc.GroupNorm(1, 4, bias=False)],
        (4, 3, 3),
    ),
    "GlobalResponseNorm": (
        [xc.Conv2d(2, 3, 1), xc.GlobalResponseNorm(3), xc.GlobalResponseNorm(3, eps=1e-3)],
        (2, 3, 3),
    ),
    "PReLU": ([xc.PReLU(2), xc.PReLU(), xc.Flatten(), xc.PReLU(18), xc.PReLU(1)], (2, 3, 3)),
    "StarReLU": ([xc.StarReLU(), xc.ToTokens(), xc.StarReLU()], (2, 3, 3)),
    "Square": ([xc.Square(), xc.ToTokens(), xc.ReLU(), xc.Square()], (2, 3, 3)),
    "Linear": ([xc.Flatten(), xc.Linear(None, 4)], (2, 3, 3)),
    "MaxPool2d": ([xc.MaxPool2d(3, stride=2, padding=1)], (2, 5, 5)),
    "AvgPool2d": ([xc.AvgPool2d(2)], (2, 4, 4)),
    "AdaptiveAvgPool2d": ([xc.AdaptiveAvgPool2d((2, 3))], (2, 5, 7)),
    "BatchNorm2d": ([xc.BatchNorm2d(2)], (2, 3, 3)),
    "BatchNorm1d": ([xc.ToTokens(), xc.BatchNorm1d(2), xc.Flatten(), xc.BatchNorm1d(18)], (2, 3, 3)),
    "Dropout": ([xc.Dropout(0.3)], (2, 3, 3)),
    "LeakyReLU": ([xc.LeakyReLU(0.2)], (2, 3, 3)),
    "Sigmoid": ([xc.Sigmoid()], (2, 3, 3)),
    "Tanh": ([xc.Tanh()], (2, 3, 3)),
    "GELU": ([xc.GELU()], (2, 3, 3)),
    "ELU": ([xc.ELU()], (2, 3, 3)),
    "SiLU": ([xc.SiLU()], (2, 3, 3)),
    "Softmax": ([xc.Softmax(1)], (2, 3, 3)),
    "Identity": ([xc.Identity()], (2, 3, 3)),
    "ZeroPad2d": ([xc.ZeroPad2d((1, 0, 2, 1)), xc.MaxPool2d(2)], (2, 3, 3)),
    "Hardtanh": ([xc.Hardtanh(0.0, 6.0), xc.Hardtanh(-0.5, 0.5)], (2, 3, 3)),
    "Hardsigmoid": ([xc.Hardsigmoid()], (2, 3, 3)),
    "Hardswish": ([xc.Hardswish()], (2, 3, 3)),
    "StochasticDepth": ([xc.StochasticDepth(0.2)], (2, 3, 3)),
    "Rescaling": ([xc.Rescaling(1 / 255, -1.0), xc.Rescaling((2.0, 0.5), (0.1, 0.2))], (2, 3, 3)),
    "Normalization": ([xc.Normalization(2)], (2, 3, 3)),
    "LayerNorm": ([xc.LayerNorm(2, eps=1e-6), xc.Flatten(), xc.LayerNorm(18, elementwise_affine=False)], (2, 3, 3)),
    "ChannelLinear": ([xc.ChannelLinear(2, 4)], (2, 3, 3)),
    "LayerScale": ([xc.LayerScale(2), xc.ToTokens(), xc.LayerScale(2)], (2, 3, 3)),
    "PositionEmbedding2d": ([xc.PositionEmbedding2d(2, 3, 3)], (2, 3, 3)),
    "Narrow": (
        [xc.Narrow(1, 1, 2), xc.Narrow(-1, 0, 2), xc.ToTokens(), xc.Narrow(1, 2, 4), xc.Narrow(1, 1, 1, groups=2)],
        (3, 3, 3),
    ),
    "ChannelShuffle": ([xc.ChannelShuffle(2)], (4, 3, 3)),
    "Upsample": (
        [
            xc.Upsample(scale_factor=2),
            xc.Upsample(scale_factor=1.5, mode="bilinear"),
            xc.Upsample((4, 7), mode="bilinear", align_corners=True),
            xc.Upsample(scale_factor=(0.7, 1.3), mode="nearest-exact"),
        ],
        (2, 3, 3),
    ),
    "ConvTranspose2d": (
        [
            xc.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1),
            xc.ConvTranspose2d(4, 2, (2, 3), stride=(1, 2), dilation=(2, 1), groups=2, output_padding=(1, 0)),
        ],
        (2, 3, 3),
    ),
    "ToTokens": ([xc.ToTokens()], (2, 3, 4)),
    "ToMap": ([xc.ToTokens(), xc.LayerNorm(2), xc.ToMap(3, 4), xc.Conv2d(2, 2, 3)], (2, 3, 4)),
    "Embedding": ([xc.Embedding(5, 3, padding_idx=1), xc.PositionEmbedding(4, 3, rows=6), xc.LayerNorm(3)], (4,)),
    "TokenTypeEmbedding": ([xc.Embedding(5, 3), xc.TokenTypeEmbedding(3, 3, token_type=2)], (4,)),
    "PaddedPositions": ([xc.PaddedPositions(1), xc.Embedding(6, 3, padding_idx=1)], (4,)),
    "ClassToken": ([xc.ToTokens(), xc.ClassToken(2), xc.ClassToken(2, count=3)], (2, 3, 3)),
    "PositionEmbedding": ([xc.ToTokens(), xc.PositionEmbedding(9, 2)], (2, 3, 3)),
    "SelfAttention": (
        [
            xc.Conv2d(2, 4, 1),
            xc.ToTokens(),
            xc.SelfAttention(4, 2),
            xc.SelfAttention(4, 1, qkv_bias=False, proj_bias=False, scale=0.3),
            xc.SelfAttention(4, 2, projection=False),
        ],
        (2, 3, 3),
    ),
    "SelectToken": ([xc.ToTokens(), xc.SelectToken(4)], (2, 3, 3)),
    "TokenMean": ([xc.ToTokens(), xc.TokenMean()], (2, 3, 3)),
    "WindowAttention": (
        [
            xc.WindowAttention(2, 2, 2),
            xc.WindowAttention(2, 1, (2, 3), shift_size=(1, 1), qkv_bias=False),
            xc.WindowAttention(2, 2, 2, position_bias=False),
        ],
        (2, 3, 5),
    ),
    "WindowAttentionStateIndex": ([xc.WindowAttention(2, 2, 2, state_index=True)], (2, 4, 4)),
    "PatchMerging": ([xc.PatchMerging(2), xc.PatchMerging(4, 3, norm_first=False)], (2, 5, 4)),
    "Add": ([xc.Add(xc.Conv2d(2, 2, 1), xc.Identity())], (2, 3, 3)),
    "Concat": ([xc.Concat(xc.Conv2d(2, 1, 1), xc.Identity())], (2, 3, 3)),
    "Multiply": ([xc.Multiply(xc.Identity(), xc.AdaptiveAvgPool2d(1))], (2, 3, 3)),
    "Subtract": ([xc.Subtract(xc.Conv2d(2, 2, 1), xc.AdaptiveAvgPool2d(1))], (2, 3, 3)),
    "DotProductAttention": (
        [
            xc.ToTokens(),
            xc.DotProductAttention(xc.Linear(2, 4), xc.Linear(2, 4), xc.Linear(2, 6), num_heads=2),
            xc.DotProductAttention(xc.Identity(), xc.Narrow(2, 0, 6), xc.Narrow(2, 2, 4), scale=0.5, dropout=0.1),
            xc.Linear(4, 12),
            xc.DotProductAttention(
                *(xc.Narrow(2, start, 2, groups=2) for start in (0, 2, 4)),
                num_heads=2,
                bias_grid=(3, 3),
                state_index=True,
            ),
            xc.Linear(4, 8),
            xc.DotProductAttention(
                xc.Sequential(xc.ToMap(3, 3), xc.AvgPool2d(1, stride=2), xc.ToTokens()),
                xc.Identity(),
                xc.Identity(),
                bias_grid=(3, 3),
                bias_stride=2,
            ),
        ],
        (2, 3, 3),
    ),
}

#: kinds an importer does not bring back as themselves, with the reason (none today: every kind imports)
REFUSED_BY_TORCH_IMPORT: dict[str, str] = {}
REFUSED_BY_KERAS_IMPORT: dict[str, str] = {}


#: examples of a kind's variants that change what is built or imported: (kind, what must come back)
VARIANTS = {
    "FlattenChannelsLast": ("Flatten", "channels_last"),
    "FrozenBatchNorm": ("BatchNorm2d", "frozen"),
    "WindowAttentionStateIndex": ("WindowAttention", "state_index"),
}


def test_every_kind_has_an_example():
    assert sorted(set(EXAMPLES) - set(VARIANTS)) == KINDS


def test_every_layer_type_is_a_registered_kind():
    from xconv.kinds import KINDS as REGISTERED

    assert sorted(cls.__name__ for cls in REGISTERED) == sorted(LAYER_TYPES)


@pytest.mark.parametrize("kind", sorted(LAYER_TYPES))
def test_every_kind_has_its_parts_in_its_family(kind):
    """The spec class, shape rule and numpy reference of a kind sit in its family's package, its torch and Keras
    builders in the family's _torch and _keras modules: one place per kind."""
    from xconv._info import elementwise
    from xconv.kinds import KINDS as REGISTERED
    from xconv.kinds import framework_table

    cls = LAYER_TYPES[kind]
    entry = REGISTERED[cls]
    assert cls.__module__ == entry.family
    assert entry.shape is elementwise or entry.shape.__module__ == entry.family, kind  # the shared rule, or its own
    for part in (entry.forward, entry.backward):
        assert callable(part) and part.__module__ == entry.family, (kind, part)
    for framework in ("torch", "keras"):
        builder = framework_table(framework, "BUILDERS").get(cls)
        assert builder is not None, f"{kind}: no {framework} builder"
        assert builder.__module__ == f"{entry.family}._{framework}", (kind, framework, builder.__module__)


@pytest.mark.parametrize("kind", KINDS + sorted(VARIANTS))
def test_every_kind_builds_in_every_backend_and_imports_back(both_backends, kind):
    variant = VARIANTS.get(kind)
    items, shape = EXAMPLES[kind]
    spec = xc.Sequential(*items, input_shape=shape)
    ids = isinstance(items[0], (xc.Embedding, xc.PaddedPositions))  # (a model that takes token ids)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (2, *shape)) if ids else rng.standard_normal((2, *shape))
    reference = xc.predict(xc.build(spec, "numpy", seed=0), x)
    for backend, importer, refused in (
        ("torch", "from_torch", REFUSED_BY_TORCH_IMPORT),
        ("tf", "from_keras", REFUSED_BY_KERAS_IMPORT),
    ):
        model = xc.build(spec, backend, seed=0, dtype="float64")
        assert max_rel_diff(reference, xc.predict(model, x)) <= 1e-10, (kind, backend)
        if kind in refused:
            continue
        args = (model, shape) if importer == "from_torch" else (model,)
        imported, weights = getattr(xc, importer)(*args, return_weights=True)
        kinds = {i.kind for i in xc.infer(imported)}
        if variant is not None:  # the variant's flag comes back on every layer of that kind
            flags = [getattr(i.layer, variant[1]) for i in xc.infer(imported) if i.kind == variant[0]]
            assert flags and all(flags), f"{importer} does not bring {kind} back: {imported}"
        else:
            assert kind in kinds, f"{importer} does not bring {kind} back: got {sorted(kinds)}"
        back = xc.build(imported, "numpy")
        xc.set_weights(back, weights)
        assert max_rel_diff(reference, xc.predict(back, x)) <= 1e-10, (kind, importer)


@settings(
    max_examples=600, derandomize=True, phases=[Phase.generate], deadline=None, suppress_health_check=list(HealthCheck)
)
@given(spec=strategies.specs())
def _collect(spec):
    _collect.kinds.update(i.kind for i in xc.infer(spec))


@settings(
    max_examples=100, derandomize=True, phases=[Phase.generate], deadline=None, suppress_health_check=list(HealthCheck)
)
@given(spec=strategies.transformer_specs())
def _collect_transformers(spec):
    _collect.kinds.update(i.kind for i in xc.infer(spec))


@settings(
    max_examples=50, derandomize=True, phases=[Phase.generate], deadline=None, suppress_health_check=list(HealthCheck)
)
@given(spec=strategies.text_encoder_specs())
def _collect_text_encoders(spec):
    _collect.kinds.update(i.kind for i in xc.infer(spec))


@settings(
    max_examples=50, derandomize=True, phases=[Phase.generate], deadline=None, suppress_health_check=list(HealthCheck)
)
@given(spec=strategies.window_specs())
def _collect_windows(spec):
    _collect.kinds.update(i.kind for i in xc.infer(spec))


def test_strategies_draw_every_kind():
    """A kind the strategies never draw is never property-tested."""
    assert set(strategies.ALL_KINDS) | set(strategies.TOKEN_KINDS) == set(KINDS)
    _collect.kinds = set()
    _collect()
    _collect_transformers()
    _collect_text_encoders()
    _collect_windows()
    assert set(KINDS) - _collect.kinds == set()


def test_every_backend_satisfies_the_backend_protocol(both_backends):
    from xconv.backends import BACKENDS, get_backend
    from xconv.backends._protocol import Backend, FastTransfer, Importer, Trainable

    for name in BACKENDS:
        assert isinstance(get_backend(name), Backend), name
    for name in ("torch", "tf"):
        module = get_backend(name)
        assert isinstance(module, Trainable) and isinstance(module, FastTransfer) and isinstance(module, Importer), name
