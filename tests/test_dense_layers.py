"""Upsample and ConvTranspose2d: exact in every backend (forward and gradients, float32 and float64), native Keras
layers exactly where they are the same function, both importers both ways, and the mappings that look right but
are not are caught at their node."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv.testing import assert_equivalent, max_rel_diff, strategies

DECODER = xc.Sequential(
    xc.Conv2d(3, 4, 3, padding=1),
    xc.ReLU(),
    xc.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1),
    xc.Upsample(scale_factor=2),
    xc.Upsample(scale_factor=(1.3, 2.5), mode="bilinear"),
    xc.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(2, 1)),
    xc.Upsample((9, 40), mode="nearest-exact"),
    xc.Upsample(scale_factor=0.7),
    xc.Upsample((5, 11), mode="bilinear", align_corners=True),
    xc.ConvTranspose2d(6, 2, 3, padding=2, output_padding=1, dilation=2, bias=False),
    xc.Upsample(scale_factor=2, mode="bilinear"),
    input_shape=(3, 4, 5),
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_decoder_agrees_in_every_backend(both_backends, dtype):
    rows = assert_equivalent(DECODER, dtype=dtype, seed=3)
    worst = max(rel for r in rows for _, rel in r.diffs.values())
    assert worst <= (2e-6 if dtype == "float32" else 1e-14), worst


@settings(max_examples=25)
@given(data=st.data(), dtype=st.sampled_from(["float32", "float64"]))
def test_random_specs_with_the_new_kinds_agree_with_gradients(both_backends, data, dtype):
    spec = data.draw(
        strategies.specs(
            kinds=("Conv2d", "ReLU", "Flatten", "Linear", "Upsample", "ConvTranspose2d"),
            max_layers=4,
            max_size=8,
            graphs=False,
        )
    )
    weights = data.draw(strategies.weights(spec, dtype=dtype))
    x = data.draw(strategies.inputs(spec, dtype=dtype))
    assert_equivalent(spec, weights, x, dtype=dtype)


def _keras_layers(spec, dtype):
    return [type(layer).__name__ for layer in xc.build(spec, "tf", dtype=dtype).layers[1:]]


def test_keras_is_native_exactly_where_it_is_the_same_function(both_backends):
    def one(layer, shape=(2, 4, 5), dtype="float32"):
        return _keras_layers(xc.Sequential(layer, input_shape=shape), dtype)

    assert one(xc.Upsample(scale_factor=(2, 3))) == ["UpSampling2D"]
    assert one(xc.Upsample((8, 5), mode="nearest-exact")) == ["UpSampling2D"]  # a repeat too
    assert one(xc.Upsample(scale_factor=1.5)) == ["TorchUpsample2D"]
    assert one(xc.Upsample(scale_factor=2, mode="bilinear")) == ["UpSampling2D"]
    # TensorFlow computes resize weights in float32, also for float64 tensors (measured 1.6e-7 from torch)
    assert one(xc.Upsample(scale_factor=2, mode="bilinear"), dtype="float64") == ["TorchUpsample2D"]
    assert one(xc.Upsample(scale_factor=2, mode="bilinear", align_corners=True)) == ["TorchUpsample2D"]
    assert one(xc.Upsample(scale_factor=2.05, mode="bilinear"), (2, 10, 10)) == ["TorchUpsample2D"]  # 1/2.05, not 1/2
    assert one(xc.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)) == ["Conv2DTranspose", "Cropping2D"]
    assert one(xc.ConvTranspose2d(2, 3, (1, 3), stride=3, dilation=(4, 1))) == ["Conv2DTranspose"]  # one-tap axis
    assert one(xc.ConvTranspose2d(2, 4, 3, groups=2)) == ["TorchConvTranspose2D"]
    assert one(xc.ConvTranspose2d(2, 3, 3, dilation=2)) == ["TorchConvTranspose2D"]
    # a strided 1x1 kernel: TF's oneDNN filter gradient of it corrupts the heap, so a product and zero insertion
    assert one(xc.ConvTranspose2d(2, 3, 1, stride=2, output_padding=1)) == ["TorchConvTranspose2D"]
    assert one(xc.ConvTranspose2d(2, 3, 1, stride=(1, 2))) == ["TorchConvTranspose2D"]
    assert one(xc.ConvTranspose2d(2, 3, 1)) == ["Conv2DTranspose"]


def test_keras_graph_has_no_transpose(both_backends):
    import tensorflow as tf

    km = xc.build(DECODER, "tf", dtype="float32")
    fn = tf.function(lambda x: km(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((None, 4, 5, 3), tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert not {o for o in ops if "Transpose" in o or "Permute" in o}, ops


def test_keras_file_round_trip_and_import(both_backends, tmp_path):
    import keras

    km = xc.build(DECODER, "tf", seed=0, dtype="float64")
    km.save(tmp_path / "decoder.keras")
    loaded = keras.models.load_model(tmp_path / "decoder.keras")
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 3))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(km(x)))
    spec, weights = xc.from_keras(loaded, return_weights=True)
    assert spec.layers[1:] == DECODER.layers[1:]  # (the 3x3 stride-1 conv comes back with padding 'same')
    tm = xc.build(spec, "torch", dtype="float64")
    xc.set_weights(tm, weights)
    assert max_rel_diff(xc.to_nchw(np.asarray(km(x))), xc.predict(tm, xc.to_nchw(x))) <= 1e-13


# ---- importers ----


def test_torch_modules_port_to_keras_and_back(both_backends):
    import torch.nn.functional as F
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)
            self.dil = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=2, output_padding=1, dilation=2, groups=2)
            self.near = nn.Upsample(scale_factor=2)
            self.nn2d = nn.UpsamplingNearest2d(size=(13, 30))
            self.bil = nn.UpsamplingBilinear2d(scale_factor=1.5)

        def forward(self, x):
            x = self.near(self.dil(self.up(x)))
            x = F.interpolate(x, size=(17, 9), mode="bilinear")
            x = F.interpolate(x, scale_factor=(0.5, 3.0), mode="nearest-exact")
            return self.bil(self.nn2d(x))

    for dtype in ("float32", "float64"):
        m = Decoder().to(getattr(__import__("torch"), dtype)).eval()
        spec, weights = xc.from_torch(m, (3, 3, 4), return_weights=True)
        assert list(weights) == list(m.state_dict())
        assert [i.kind for i in xc.infer(spec)] == ["ConvTranspose2d"] * 2 + ["Upsample"] * 5
        km = xc.port(m, to="tf", input_shape=(3, 3, 4))  # verify=True: one batch through both
        back = xc.from_keras(km)
        assert back == xc.spec_of(km) or [i.layer for i in xc.infer(back)] == [i.layer for i in xc.infer(spec)]


def test_keras_models_port_to_torch(both_backends):
    import keras

    inp = keras.Input((5, 6, 3))
    h = keras.layers.Conv2DTranspose(4, 4, strides=2, padding="same")(inp)  # torch padding 1
    h = keras.layers.Conv2DTranspose(4, (4, 3), strides=(2, 3), padding="valid", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(2, 2, strides=3, padding="same")(h)  # torch output_padding 1
    h = keras.layers.Conv2DTranspose(2, 3, padding="same")(h)  # torch padding 1
    h = keras.layers.UpSampling2D((2, 1))(h)
    h = keras.layers.Resizing(17, 9, interpolation="nearest")(h)
    h = keras.layers.Resizing(13, 12, interpolation="bilinear")(h)
    h = keras.layers.UpSampling2D(2, interpolation="bilinear")(h)
    model = keras.Model(inp, h)
    spec = xc.from_keras(model)
    kinds = [i.kind for i in xc.infer(spec)]
    assert kinds == ["ConvTranspose2d"] * 2 + ["ReLU"] + ["ConvTranspose2d"] * 2 + ["Upsample"] * 4
    modes = [i.layer.mode for i in xc.infer(spec) if i.kind == "Upsample"]
    assert modes == ["nearest", "nearest-exact", "bilinear", "bilinear"]  # TF's nearest resize is nearest-exact
    tm = xc.port(model, to="torch")  # verify=True
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6)).astype(np.float32)
    assert max_rel_diff(xc.to_nchw(np.asarray(model(xc.to_nhwc(x)))), xc.predict(tm, x)) < 1e-6


def test_keras_same_crops_that_torch_cannot_express_are_refused(both_backends):
    """Keras 'same' with kernel 3, stride 2 keeps [0, 2n) of the full output (11 for n = 5); torch's padding=1,
    output_padding=1, the usual translation, keeps [1, 11): shifted by one row."""
    import keras

    inp = keras.Input((5, 5, 2))
    model = keras.Model(inp, keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="up")(inp))
    with pytest.raises(xc.UnsupportedLayerError, match=r"'up' \(Conv2DTranspose\).*keeps positions \[0, 10\)"):
        xc.from_keras(model)
    import torch
    from torch import nn

    t = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1).double()
    layer = model.get_layer("up")
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(np.asarray(layer.kernel.numpy(), dtype=np.float64).transpose(3, 2, 0, 1)))
        t.bias.copy_(torch.from_numpy(np.asarray(layer.bias.numpy(), dtype=np.float64)))
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    keras_out = xc.to_nchw(np.asarray(model(xc.to_nhwc(x.astype(np.float32)))))
    assert max_rel_diff(keras_out, t(torch.from_numpy(x)).detach().numpy()) > 0.1


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda k: k.layers.UpSampling2D(2, interpolation="bicubic", name="bad"), "'bad' \\(UpSampling2D\\)"),
        (lambda k: k.layers.Resizing(7, 3, crop_to_aspect_ratio=True, name="bad"), "'bad' \\(Resizing\\)"),
        (lambda k: k.layers.Resizing(7, 3, interpolation="area", name="bad"), "'bad' \\(Resizing\\)"),
        (
            lambda k: k.layers.Conv2DTranspose(2, 4, strides=1, padding="same", name="bad"),
            "'bad' \\(Conv2DTranspose\\)",
        ),
    ],
)
def test_keras_refusals_name_the_layer(both_backends, build, match):
    import keras

    inp = keras.Input((5, 6, 2))
    with pytest.raises(xc.UnsupportedLayerError, match=match):
        xc.from_keras(keras.Model(inp, build(keras)(inp)))


def test_torch_refusals_name_the_operation(both_backends):
    import torch.nn.functional as F
    from torch import nn

    class Interp(nn.Module):
        def __init__(self, **options):
            super().__init__()
            self.options = options

        def forward(self, x):
            return F.interpolate(x, **self.options)

    class OutputSize(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 2, 3, stride=2)

        def forward(self, x):
            return self.up(x, output_size=[12, 12])

    cases = [
        (Interp(scale_factor=2, mode="bilinear", antialias=True), "interpolate.*antialias|upsample_bilinear2d_aa"),
        (Interp(scale_factor=2, mode="bicubic"), "interpolate.*bicubic|upsample_bicubic2d"),
        (nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear")), "'0' \\(Upsample\\).*trilinear"),
        (
            nn.Sequential(nn.ConvTranspose2d(2, 2, 3, padding_mode="zeros"), nn.Flatten(), nn.Upsample(scale_factor=2)),
            "does not make a valid spec.*Upsample",
        ),
        (OutputSize(), "'up' \\(ConvTranspose2d\\).*output_size"),
    ]
    for module, match in cases:
        with pytest.raises(xc.UnsupportedLayerError, match=match):
            xc.from_torch(module, (2, 5, 5))
    # exact in the exported program: the size recomputed from the scale (torch then samples by in / out, as a
    # given size does), and area interpolation, which is adaptive average pooling
    kinds = [i.kind for i in xc.infer(xc.from_torch(Interp(scale_factor=2.5, recompute_scale_factor=True), (2, 5, 5)))]
    assert kinds == ["Upsample"]
    assert [i.kind for i in xc.infer(xc.from_torch(Interp(scale_factor=2, mode="area"), (2, 5, 5)))] == [
        "AdaptiveAvgPool2d"
    ]
    for module in (Interp(scale_factor=2.5, recompute_scale_factor=True), Interp(scale_factor=2, mode="area")):
        xc.port(module, "tf", (2, 5, 5))  # verified


def test_specs_validate_like_torch():
    for bad, match in [
        ({}, "exactly one"),
        ({"size": 2, "scale_factor": 2}, "exactly one"),
        ({"size": 2, "align_corners": False}, "mode='bilinear' only"),
        ({"scale_factor": -1}, "> 0"),
        ({"size": (2, 0)}, "positive"),
        ({"size": 2, "mode": "bicubic"}, "must be one of"),
    ]:
        with pytest.raises(xc.SpecError, match=match):
            xc.Upsample(**bad)
    for bad, match in [
        ({"stride": 2, "output_padding": 2}, "smaller than either"),
        ({"groups": 3}, "divisible"),
        ({"padding": "same"}, "no 'same'"),
    ]:
        with pytest.raises(xc.SpecError, match=match):
            xc.ConvTranspose2d(6, 4, 3, **bad)
    xc.ConvTranspose2d(2, 2, 3, output_padding=1, dilation=2)  # below the dilation: torch accepts it
    with pytest.raises(xc.SpecError, match="empty output"):
        xc.infer(xc.Sequential(xc.Upsample(scale_factor=0.3), input_shape=(1, 3, 3)))
    with pytest.raises(xc.SpecError, match="crops the whole output"):
        xc.infer(xc.Sequential(xc.ConvTranspose2d(1, 1, 1, padding=1), input_shape=(1, 2, 2)))
    spec = xc.Sequential(*DECODER.layers, input_shape=DECODER.input_shape)
    assert xc.from_dict(spec.to_dict()) == spec and eval(repr(spec), vars(xc)) == spec


# ---- faults: each injected at its one mechanism, caught at its node ----

X = np.random.default_rng(0).standard_normal((2, 2, 5, 4))


def _spec(*layers):
    return xc.Sequential(xc.Conv2d(2, 2, 1), *layers, input_shape=(2, 5, 4))


def test_catches_bilinear_with_the_other_align_corners(both_backends, monkeypatch):
    import dataclasses

    from xconv.backends import torch_backend

    real = torch_backend._BUILDERS[xc.Upsample]

    def flipped(info, factory):
        layer = dataclasses.replace(info.layer, align_corners=not info.layer.align_corners)
        return real(dataclasses.replace(info, layer=layer), factory)

    monkeypatch.setitem(torch_backend._BUILDERS, xc.Upsample, flipped)
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(Upsample\), output"):
        assert_equivalent(_spec(xc.Upsample(scale_factor=2, mode="bilinear")), x=X, backends=("numpy", "torch"))


def test_catches_corner_aligned_centres_for_half_pixel_ones(both_backends, monkeypatch):
    """The index rule is shared by the reference and the Keras layer; torch, built natively, still catches it."""
    from xconv import resample

    real = resample.taps

    def corner(size, out, mode, align_corners, scale):
        return real(size, out, mode, True if mode == "bilinear" else align_corners, scale)

    monkeypatch.setattr(resample, "taps", corner)
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(Upsample\), output"):
        assert_equivalent(_spec(xc.Upsample((7, 9), mode="bilinear")), x=X, backends=("torch", "numpy", "tf"))


def test_catches_nearest_exact_for_nearest(both_backends, monkeypatch):
    import dataclasses

    from xconv.backends.tf import builders

    real = builders._BUILDERS[xc.Upsample]

    def exact(info, x, dtype):
        return real(dataclasses.replace(info, layer=dataclasses.replace(info.layer, mode="nearest-exact")), x, dtype)

    monkeypatch.setitem(builders._BUILDERS, xc.Upsample, exact)
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(Upsample\), output"):
        assert_equivalent(_spec(xc.Upsample(scale_factor=1.5)), x=X, backends=("numpy", "tf"))


def test_catches_output_padding_on_the_top_left(both_backends, monkeypatch):
    import tensorflow as tf

    from xconv.kinds.conv import _keras as layers

    real_pad = tf.pad

    def top_left(x, paddings, *args, **kwargs):
        return real_pad(x, [[a + b, 0] for a, b in paddings], *args, **kwargs)

    real_call = layers.TorchConvTranspose2D.call

    def call(self, x):
        monkeypatch.setattr(tf, "pad", top_left)
        try:
            return real_call(self, x)
        finally:
            monkeypatch.setattr(tf, "pad", real_pad)

    monkeypatch.setattr(layers.TorchConvTranspose2D, "call", call)
    spec = _spec(xc.ConvTranspose2d(2, 4, 3, stride=2, output_padding=1, groups=2), xc.ReLU())
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(ConvTranspose2d\), output"):
        assert_equivalent(spec, x=X, backends=("numpy", "tf"))


@pytest.mark.parametrize("fault", ["flipped", "in-out swapped"])
def test_catches_a_transposed_kernel_in_the_wrong_layout(both_backends, monkeypatch, fault):
    from xconv import layout

    real = layout.to_keras

    def wrong(kind, x, source, ops=layout.NUMPY_OPS):
        out = real(kind, x, source, ops)
        if kind == "conv_transpose":
            out = np.asarray(out)
            out = out[::-1, ::-1] if fault == "flipped" else out.transpose(0, 1, 3, 2)
            out = np.ascontiguousarray(out)
        return out

    monkeypatch.setattr(layout, "to_keras", wrong)
    spec = _spec(xc.ConvTranspose2d(2, 2, 3, stride=2, padding=1), xc.ReLU())
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(ConvTranspose2d\), output"):
        assert_equivalent(spec, x=X, backends=("numpy", "tf"))


def test_a_one_tap_dilated_transposed_conv_with_output_padding(both_backends):
    """torch allows output_padding < dilation at stride 1; Keras' Conv2DTranspose needs output_padding < stride,
    so this one runs as xconv's layer, and reads back with its dilation (found by the random torch ports)."""
    spec = xc.Sequential(
        xc.ConvTranspose2d(1, 1, 1, output_padding=(0, 1), dilation=(1, 2), bias=False), input_shape=(1, 1, 1)
    )
    assert_equivalent(spec, dtype="float64")
    km = xc.port(xc.build(spec, "torch", dtype="float64"), to="tf")
    assert xc.from_keras(km) == spec


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "layer",
    [
        xc.ConvTranspose2d(4, 3, 1, stride=2),
        xc.ConvTranspose2d(4, 3, 1, stride=(3, 2), output_padding=(2, 1), padding=(1, 0)),
        xc.ConvTranspose2d(4, 6, 1, stride=2, output_padding=1, groups=2, bias=False),
        xc.ConvTranspose2d(4, 2, 1, stride=(2, 3), padding=(0, 2), output_padding=(1, 2), dilation=(3, 2), groups=2),
    ],
    ids=["plain", "padded", "grouped", "dilated"],
)
def test_strided_pointwise_transposed_convs_agree_and_read_back(both_backends, layer, dtype):
    """The per-pixel product and zero insertion that replace TF's strided 1x1 transposed conv are the same
    function as torch's, with the same gradients, and read back as the layer they came from."""
    spec = xc.Sequential(layer, xc.ReLU(), input_shape=(4, 5, 6))
    assert_equivalent(spec, dtype=dtype)
    km = xc.build(spec, "tf", dtype=dtype)
    assert [type(x).__name__ for x in km.layers[1:]] == ["TorchConvTranspose2D", "ReLU"]
    assert xc.from_keras(km) == spec
