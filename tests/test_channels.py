"""The channel-axis layers (ConvNeXt's per-pixel LayerNorm and Linear, layer scale, channel slices and shuffles)
and Keras' partial-affine BatchNorm and nested models: exact both ways, every torch idiom that writes them
imports, whatever would act on another axis is refused, and the likely wrong mappings are caught at their node."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.errors import UnsupportedLayerError
from xconv.testing import TOLERANCE, assert_equivalent, max_rel_diff

CONVNEXT_LIKE = xc.Sequential(
    xc.Conv2d(4, 8, 2, stride=2, name="stem"),
    xc.LayerNorm(8, eps=1e-6, name="stem_norm"),
    xc.Add(
        xc.Sequential(
            xc.Conv2d(8, 8, 3, padding=1, groups=8, name="blk.dw"),
            xc.LayerNorm(8, eps=1e-6),
            xc.ChannelLinear(8, 16),
            xc.GELU(),
            xc.ChannelLinear(16, 8),
            xc.LayerScale(8, name="blk"),
        ),
        xc.Identity(),
    ),
    xc.Concat(xc.Narrow(1, 0, 3), xc.Sequential(xc.Narrow(1, 3, 5), xc.Conv2d(5, 5, 1), xc.ReLU())),
    xc.ChannelShuffle(2),
    xc.BatchNorm2d(8, scale=False),
    xc.BatchNorm2d(8, center=False),
    xc.AdaptiveAvgPool2d(1),
    xc.Flatten(),
    xc.LayerNorm(8),
    xc.Linear(8, 3),
    input_shape=(4, 10, 10),
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_channel_layers_agree(both_backends, dtype):
    assert_equivalent(CONVNEXT_LIKE, dtype=dtype, seed=3)


def test_channel_layers_agree_in_training(both_backends):
    assert_equivalent(CONVNEXT_LIKE, dtype="float64", seed=3, training=True)


def test_layer_scale_keys_sit_beside_the_layers_under_them(both_backends):
    """torchvision's CNBlock holds ``layer_scale`` next to its ``block.*`` submodules: a key under the layer
    scale's key is fine, one under its parameter's key is not."""
    tm = xc.build(CONVNEXT_LIKE, "torch")
    assert "blk.layer_scale" in tm.state_dict() and "blk.dw.weight" in tm.state_dict()
    bad = xc.Sequential(xc.LayerScale(2, name="a"), xc.Conv2d(2, 2, 1, name="a.layer_scale"), input_shape=(2, 3, 3))
    with pytest.raises(xc.SpecError, match="lies under"):
        xc.infer(bad)


def test_keras_graph_is_native_without_transposes(both_backends):
    km = xc.build(CONVNEXT_LIKE, "tf")
    kinds = {type(layer).__name__ for layer in km.layers}
    assert {"LayerNormalization", "Dense"} <= kinds and not {"Permute", "Transpose"} & kinds


def test_spec_validation():
    with pytest.raises(xc.SpecError, match="batch axis"):
        xc.Narrow(0, 0, 1)
    with pytest.raises(xc.SpecError, match="exceeds"):
        xc.infer(xc.Sequential(xc.Narrow(1, 2, 2), input_shape=(3, 2, 2)))
    with pytest.raises(xc.SpecError, match="divide"):
        xc.infer(xc.Sequential(xc.ChannelShuffle(2), input_shape=(3, 2, 2)))
    with pytest.raises(xc.SpecError, match="flattened from a map"):
        xc.infer(xc.Sequential(xc.Flatten(), xc.Narrow(1, 0, 2), input_shape=(2, 2, 2)))
    assert xc.BatchNorm2d(3, scale=False, center=False) == xc.BatchNorm2d(3, affine=False)
    assert xc.LayerNorm(3, elementwise_affine=False, bias=True).bias is False


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class LayerNorm2d(nn.LayerNorm):  # torchvision's: traced through to F.layer_norm on its own parameters
        def forward(self, x):
            return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
                0, 3, 1, 2
            )

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
            self.norm = nn.LayerNorm(c, eps=1e-6)
            self.pw1, self.pw2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)
            self.layer_scale = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.pw2(F.gelu(self.pw1(self.norm(y)))).permute(0, 3, 1, 2)
            return x + self.layer_scale * y

    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.norm = LayerNorm2d(8)
            self.block = Block(8)
            self.branch = nn.Conv2d(4, 4, 1)
            self.shuffle = nn.ChannelShuffle(4)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            x = self.block(self.norm(self.stem(x)))
            a, b = x.chunk(2, dim=1)
            x = torch.cat((a, self.branch(b)), dim=1)
            n, c, h, w = x.size()  # the view-transpose-view shuffle, sizes from the tensor
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
            p, q, r = torch.split(x, [2, 3, 3], dim=1)
            x = torch.cat([q, p, r[:, 1:]], dim=1)
            x = torch.cat([x, x.narrow(1, 0, 1)], dim=1)
            x = self.shuffle(x)
            return self.head(x.mean([2, 3]))

    return Shuffle


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_idioms_import_and_port(both_backends, dtype):
    import torch

    torch.manual_seed(0)
    model = _torch_modules()().eval()
    if dtype == "float64":
        model = model.double()
    spec, weights = xc.from_torch(model, (3, 6, 6), return_weights=True)
    kinds = [i.kind for i in xc.infer(spec)]
    assert {"LayerNorm", "ChannelLinear", "LayerScale", "Narrow", "ChannelShuffle"} <= set(kinds)
    assert kinds.count("ChannelShuffle") == 2
    assert sorted(weights) == sorted(model.state_dict())  # the original's keys, layer_scale and LayerNorm2d too
    km = xc.port(model, to="tf", input_shape=(3, 6, 6))  # verify=True
    xc.set_weights(km, model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(dtype)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE[dtype]


def _refused(forward, match):
    import torch
    from torch import nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.norm = nn.LayerNorm(4)
            self.linear = nn.Linear(4, 4)
            self.flat = nn.Parameter(torch.ones(4))

    M.forward = forward
    with pytest.raises(xc.UnsupportedLayerError, match=match):
        xc.from_torch(M(), (4, 4, 4))


@pytest.mark.parametrize(
    "forward, match",
    [
        (lambda self, x: self.linear(self.conv(x)), "acts on the last axis"),  # nn.Linear on NCHW: over W
        (lambda self, x: self.norm(self.conv(x)), "acts on the last axis"),
        (lambda self, x: self.conv(x).permute(0, 2, 1, 3), r"permute\(0, 2, 1, 3\)"),
        (lambda self, x: self.conv(x).permute(0, 2, 3, 1), "channels-last"),  # returned permuted
        (lambda self, x: self.conv(x).permute(0, 2, 3, 1).relu().flatten(1), "channels-last"),
        (lambda self, x: self.flat * self.conv(x), "layer scale"),  # a (C,) parameter times NCHW scales W
        (lambda self, x: self.conv(x)[:, ::2], "step 1"),
        (
            lambda self, x: self.conv(x).view(x.size(0), 2, 2, 4, 4).transpose(1, 3).reshape(x.size(0), 4, 4, 4),
            "supported",
        ),
    ],
)
def test_torch_forms_that_act_on_another_axis_are_refused(both_backends, forward, match):
    _refused(forward, match)


def test_a_slice_of_two_axes_is_two_narrows(both_backends):
    """The exported program slices one axis at a time: ``x[:, 1:2, 1:3]`` is a Narrow of C, then one of H."""
    import torch
    from torch import nn

    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.conv(x)[:, 1:2, 1:3]

    model = Sliced().eval()
    assert [i.kind for i in xc.infer(xc.from_torch(model, (4, 4, 4)))] == ["Conv2d", "Narrow", "Narrow"]
    x = torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        assert xc.predict(xc.port(model, "tf", (4, 4, 4)), x.numpy()).shape == model(x).shape == (2, 1, 2, 4)


def _keras_model(nested):
    import keras

    inner = keras.Sequential(
        [
            keras.layers.Conv2D(6, 2, strides=2, name="inner_conv"),
            keras.layers.LayerNormalization(epsilon=1e-6, name="inner_norm"),
        ],
        name="stem",
    )
    x = keras.Input((8, 8, 3))
    y = inner(x) if nested else keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Conv2D(6, 2, strides=2)(x))
    z = keras.layers.Dense(12, name="pw1")(y)  # on the NHWC map: per pixel
    z = keras.layers.Activation("gelu")(z)
    z = keras.layers.Dense(6, name="pw2")(z)
    y = y + z  # an operation node, as in keras.applications' ConvNeXt
    y = keras.layers.BatchNormalization(scale=False, name="bn_shift")(y)
    y = keras.layers.BatchNormalization(center=False, name="bn_gain")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.LayerNormalization(name="head_norm")(y)
    return keras.Model(x, keras.layers.Dense(4)(y))


@pytest.mark.parametrize("nested", [False, True])
def test_keras_layers_and_nested_models_port(both_backends, nested):
    model = _keras_model(nested)
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-trivial gains, shifts and statistics
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
    spec = xc.from_keras(model)
    kinds = [i.kind for i in xc.infer(spec)]
    assert kinds.count("LayerNorm") == 2 and kinds.count("ChannelLinear") == 2 and "Add" in kinds
    bns = [i.layer for i in xc.infer(spec) if i.kind == "BatchNorm2d"]
    assert [(b.scale, b.center) for b in bns] == [(False, True), (True, False)]
    tm = xc.port(model, to="torch")  # verify=True
    x = rng.standard_normal((2, 3, 8, 8)).astype("float32")
    expect = np.asarray(model(xc.to_nhwc(x), training=False))
    assert max_rel_diff(expect, xc.predict(tm, x)) <= xc.testing.TOLERANCE["float32"]


def test_keras_forms_that_differ_are_refused(both_backends):
    import keras

    x = keras.Input((4, 4, 3))
    for layer, match in (
        (keras.layers.LayerNormalization(axis=1), "last"),
        (keras.layers.LayerNormalization(rms_scaling=True), "rms_scaling"),
        (keras.layers.LayerNormalization(scale=False), "scale"),
    ):
        with pytest.raises(xc.UnsupportedLayerError, match=match):
            xc.from_keras(keras.Model(x, layer(x)))


def test_catches_layer_norm_over_the_wrong_axis(both_backends, monkeypatch):
    """Normalising an NHWC map over W (axis -2) instead of the channels: caught at the LayerNorm."""
    import keras

    from xconv.backends.tf import builders

    def wrong_axis(info, x, dtype):
        return keras.layers.LayerNormalization(
            axis=-2, epsilon=info.layer.eps, dtype=dtype, name=builders.keras_name(info)
        )(x)

    monkeypatch.setitem(builders._BUILDERS, xc.LayerNorm, wrong_axis)
    spec = xc.Sequential(xc.Conv2d(3, 4, 1), xc.LayerNorm(4), input_shape=(3, 4, 4))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(LayerNorm\), output"):
        assert_equivalent(spec, backends=("numpy", "tf"))


def test_catches_shuffle_groups_transposed(both_backends, monkeypatch):
    """ChannelShuffle(g) built as ChannelShuffle(C / g), the idiom's two sizes swapped: caught at the shuffle."""
    from xconv.backends.tf import builders
    from xconv.kinds.channel import shuffle_order
    from xconv.kinds.channel._keras import ChannelGather

    def swapped(info, x, dtype):
        c = info.input_shape[0]
        return ChannelGather(shuffle_order(c, c // info.layer.groups), dtype=dtype, name=builders.keras_name(info))(x)

    monkeypatch.setitem(builders._BUILDERS, xc.ChannelShuffle, swapped)
    spec = xc.Sequential(xc.Conv2d(2, 6, 1), xc.ChannelShuffle(2), input_shape=(2, 3, 3))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(ChannelShuffle\), output"):
        assert_equivalent(spec, backends=("numpy", "tf"))


def test_catches_a_dropped_batchnorm_shift(both_backends, monkeypatch):
    """Keras' BatchNormalization(scale=False) imported as affine=False (its beta lost): port's check fails."""
    import dataclasses

    import keras

    from xconv.importers import keras_graph

    real = keras_graph._plain_layer

    def dropped(layer, where, current):
        spec_layer, weights = real(layer, where, current)
        if isinstance(spec_layer, xc.BatchNorm2d):
            weights.pop("bias", None)
            spec_layer = dataclasses.replace(spec_layer, affine=False)
        return spec_layer, weights

    monkeypatch.setattr(keras_graph, "_plain_layer", dropped)
    x = keras.Input((4, 4, 3))
    bn = keras.layers.BatchNormalization(scale=False)
    model = keras.Model(x, bn(keras.layers.Conv2D(3, 1)(x)))
    bn.beta.assign(np.ones(3, dtype="float32"))
    with pytest.raises(xc.PortError, match="BatchNorm2d"):
        xc.port(model, to="torch")


# ---- PositionEmbedding2d: a learned (1, C, H, W) tensor added to a map (timm's PiT) ----


def _map_plus_table(buffer: bool = False, shape: tuple[int, ...] = (1, 2, 3, 4)):
    import torch

    class PosEmbed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)
            table = torch.randn(shape)
            if buffer:
                self.register_buffer("pos_embed", table)
            else:
                self.pos_embed = torch.nn.Parameter(table)

        def forward(self, x):
            return self.conv(x) + self.pos_embed

    return PosEmbed().eval()


def test_a_map_plus_a_learned_table_ports_with_the_source_state_dict(both_backends):
    import torch

    model = _map_plus_table()
    spec = xc.from_torch(model, (3, 3, 4))
    assert [i.kind for i in xc.infer(spec)] == ["Conv2d", "PositionEmbedding2d"]
    km = xc.port(model, "tf", (3, 3, 4))
    xc.set_weights(km, model.state_dict())  # (its key is the source's pos_embed)
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE["float32"]


def test_a_map_plus_a_buffer_or_a_table_of_another_shape_is_refused(both_backends):
    with pytest.raises(UnsupportedLayerError, match="not a parameter of the model"):
        xc.from_torch(_map_plus_table(buffer=True), (3, 3, 4))
    with pytest.raises(UnsupportedLayerError, match="only a sum, difference or product of two tensors"):
        xc.from_torch(_map_plus_table(shape=(1, 2, 3, 1)), (3, 3, 4))  # (broadcast over the columns)


def test_a_keras_map_table_laid_out_otherwise_is_caught(both_backends, monkeypatch):
    """Keras' (1, H, W, C) table read as if it were (1, W, H, C) transposed: caught at that layer."""
    from xconv import layout
    from xconv.testing import strategies

    spec = xc.Sequential(xc.Conv2d(2, 3, 1), xc.PositionEmbedding2d(3, 3, 3), input_shape=(2, 3, 3))
    weights = strategies.weights(spec).example()
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    assert_equivalent(spec, weights, x, backends=("numpy", "tf"))
    real = layout.to_keras

    def swapped(kind, value, source, ops=layout.NUMPY_OPS):
        return ops.transpose(value, (0, 3, 2, 1)) if kind == "map" else real(kind, value, source, ops)

    monkeypatch.setattr(layout, "to_keras", swapped)
    with pytest.raises(AssertionError, match=r"\(PositionEmbedding2d\), output"):
        assert_equivalent(spec, weights, x, backends=("numpy", "tf"))
