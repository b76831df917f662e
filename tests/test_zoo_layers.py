"""The modern-CNN layers (hard activations, depthwise and separable convolutions, stochastic depth, spatial
means): exact both ways, and the mappings that look right but are not are caught at their node."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.testing import assert_equivalent, max_rel_diff

MOBILE = xc.Sequential(
    xc.Conv2d(3, 6, 3, stride=2, padding=1, bias=False),
    xc.BatchNorm2d(6),
    xc.Hardswish(),
    xc.Add(
        xc.Sequential(xc.Conv2d(6, 12, 3, padding=1, groups=6), xc.Hardtanh(0.0, 6.0), xc.Conv2d(12, 6, 1)),
        xc.Identity(),
    ),
    xc.Multiply(xc.Identity(), xc.Sequential(xc.AdaptiveAvgPool2d(1), xc.Conv2d(6, 6, 1), xc.Hardsigmoid())),
    xc.StochasticDepth(0.2),
    xc.Conv2d(6, 6, 3, stride=2, padding="same", groups=6),
    xc.Hardtanh(-1.0, 1.0),
    input_shape=(3, 9, 8),
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mobile_layers_agree(both_backends, dtype):
    assert_equivalent(MOBILE, dtype=dtype, seed=4)


def test_keras_uses_native_depthwise_and_relu6(both_backends):
    km = xc.build(MOBILE, "tf")
    kinds = [type(layer).__name__ for layer in km.layers]
    assert kinds.count("DepthwiseConv2D") == 2 and "ReLU" in kinds and "GroupedConv2D" not in kinds


def test_catches_keras_2_hard_sigmoid_constants(both_backends, monkeypatch):
    """Keras 2 defined hard_sigmoid as clip(0.2 x + 0.5, 0, 1), not torch's (x + 3) / 6."""
    import tensorflow as tf

    from xconv.kinds.activation import _keras as layers

    real = layers.TorchActivation.call

    def keras2(self, x):
        if self.function == "hardsigmoid":
            return tf.clip_by_value(0.2 * x + 0.5, 0.0, 1.0)
        return real(self, x)

    monkeypatch.setattr(layers.TorchActivation, "call", keras2)
    spec = xc.Sequential(xc.Conv2d(2, 2, 1), xc.Hardsigmoid(), input_shape=(2, 4, 4))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(Hardsigmoid\), output"):
        assert_equivalent(spec, backends=("numpy", "tf"), x=np.random.default_rng(0).standard_normal((2, 2, 4, 4)) * 3)


def test_catches_a_depthwise_kernel_in_the_wrong_layout(both_backends, monkeypatch):
    """(kh, kw, multiplier, C) instead of DepthwiseConv2D's (kh, kw, C, multiplier)."""
    from xconv import layout

    real = layout.to_keras

    def swapped(kind, x, source, ops=layout.NUMPY_OPS):
        out = real(kind, x, source, ops)
        if kind == "depthwise":
            kh, kw, c, m = out.shape
            out = np.ascontiguousarray(np.asarray(out).reshape(kh, kw, m, c).transpose(0, 1, 3, 2))
        return out

    monkeypatch.setattr(layout, "to_keras", swapped)
    spec = xc.Sequential(xc.Conv2d(3, 6, 3, groups=3, padding=1), input_shape=(3, 5, 5))
    with pytest.raises(AssertionError, match=r"first part at layer 0 \(Conv2d\), output"):
        assert_equivalent(spec, backends=("numpy", "tf"))


def test_stochastic_depth_statistics(both_backends):
    """In training whole samples are dropped with probability p and the rest scaled by 1 / (1 - p), in every
    backend (masks differ by nature: the statistics are compared)."""
    import torch

    spec = xc.Sequential(xc.StochasticDepth(0.3), input_shape=(2, 3, 3))
    x = np.ones((4000, 2, 3, 3), dtype=np.float32)
    tm, km, nm = (xc.build(spec, b, dtype="float32") for b in ("torch", "tf", "numpy"))
    tm.train()
    outs = {
        "torch": tm(torch.from_numpy(x)).detach().numpy(),
        "tf": xc.to_nchw(np.asarray(km(xc.to_nhwc(x), training=True))),
        "numpy": nm.train()(x),
    }
    for name, y in outs.items():
        per_sample = y.reshape(len(y), -1)
        assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1)), name  # whole samples
        kept = per_sample[:, 0] > 0
        assert abs(kept.mean() - 0.7) < 0.03, (name, kept.mean())
        np.testing.assert_allclose(per_sample[kept, 0], 1 / 0.7, rtol=1e-6)


def test_torch_functional_forms_and_spatial_means_import(both_backends):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, groups=1)
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = F.hardswish(self.conv(x))
            x = F.relu6(self.dw(x)) * F.hardsigmoid(x.mean((2, 3), keepdim=True))
            return self.fc(F.hardtanh(x, -2.0, 2.0).mean([2, 3]))

    m = Head().eval()
    _spec, weights = xc.from_torch(m, (3, 6, 6), return_weights=True)
    assert list(weights) == list(m.state_dict())
    km = xc.port(m, to="tf", input_shape=(3, 6, 6))
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32) * 3
    with torch.no_grad():
        assert max_rel_diff(m(torch.from_numpy(x)).numpy(), xc.predict(km, x)) < 1e-5


def test_keras_separable_depthwise_relu6_and_stochastic_depth_import(both_backends):
    import keras

    inp = keras.Input((8, 8, 3))
    h = keras.layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, activation="relu")(inp)
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(h)
    h = keras.layers.ReLU(6.0)(h)
    h = keras.layers.Activation("hard_swish")(h)
    s = keras.layers.Dropout(0.2, noise_shape=(None, 1, 1, 1))(keras.layers.Conv2D(6, 1)(h))
    h = keras.layers.Add()([h, s])
    out = keras.layers.Activation("hard_sigmoid")(h)
    model = keras.Model(inp, out)
    spec, _weights = xc.from_keras(model, return_weights=True)
    kinds = [i.kind for i in xc.infer(spec)]
    assert {"Hardtanh", "Hardswish", "Hardsigmoid", "StochasticDepth"} <= set(kinds)
    tm = xc.port(model, to="torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert max_rel_diff(xc.to_nchw(np.asarray(model(xc.to_nhwc(x)))), xc.predict(tm, x)) < 1e-5


def test_keras_operation_nodes_and_reshapes(both_backends):
    """MobileNetV3 writes hard sigmoid as x + 3, ReLU(6), * (1/6); squeeze-excitation reshapes (C,) to (1, 1, C)
    after a global pooling; MobileNet ends with a Reshape of a 1x1 map. Other constants and reshapes are refused
    with their names."""
    import keras

    inp = keras.Input((6, 6, 4))
    pooled = keras.layers.GlobalAveragePooling2D()(inp)
    gate = keras.layers.Reshape((1, 1, 4))(pooled)
    gate = keras.layers.Conv2D(4, 1)(gate)
    gate = keras.layers.ReLU(6.0)(gate + 3.0) * (1.0 / 6.0)
    h = keras.layers.Multiply()([inp, gate])
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    out = keras.layers.Reshape((4,))(keras.layers.Conv2D(4, 1)(h))
    model = keras.Model(inp, out)
    spec = xc.from_keras(model)
    assert "Hardsigmoid" in {i.kind for i in xc.infer(spec)}
    tm = xc.port(model, to="torch")
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32) * 3
    assert max_rel_diff(np.asarray(model(xc.to_nhwc(x))), xc.predict(tm, x)) < 1e-5
    scaled = keras.Model(inp, inp * 2.0 - 1.0)  # other arithmetic with numbers: Rescaling layers
    assert [i.kind for i in xc.infer(xc.from_keras(scaled))] == ["Rescaling", "Rescaling"]
    assert (
        max_rel_diff(xc.to_nchw(np.asarray(scaled(xc.to_nhwc(x)))), xc.predict(xc.port(scaled, to="torch"), x)) < 1e-6
    )
    with pytest.raises(xc.UnsupportedLayerError, match="could not be folded"):
        xc.from_keras(keras.Model(inp, keras.layers.Reshape((3, 12, 4))(inp)))


PREPROCESS = xc.Sequential(
    xc.Rescaling(1 / 255),
    xc.Normalization(3),
    xc.Rescaling((2.0, 1.0, 0.5), -0.1),
    xc.Conv2d(3, 4, 3),
    xc.Flatten(),
    xc.Normalization(36),
    input_shape=(3, 5, 5),
)


def _preprocess_weights(dtype="float64"):
    w = xc.weights.init_weights(xc.infer(PREPROCESS), 0, dtype)
    w["1.mean"], w["1.variance"] = np.array([0.4, 0.5, 0.6]), np.array([0.05, 0.06, 0.07])
    w["5.mean"], w["5.variance"] = np.linspace(-1, 1, 36), np.linspace(0.1, 3.0, 36)
    return {k: np.asarray(v, dtype=np.int64 if v.dtype.kind == "i" else dtype) for k, v in w.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_preprocessing_layers_agree(both_backends, dtype):
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 5, 5))
    assert_equivalent(PREPROCESS, _preprocess_weights(dtype), x, dtype=dtype)


def test_catches_a_normalization_with_a_batchnorm_epsilon(both_backends, monkeypatch):
    """Keras' Normalization floors the standard deviation at 1e-7; sqrt(variance + 1e-3) looks alike."""
    import tensorflow as tf

    from xconv.kinds.channel import _keras as layers

    def eps(self, x):
        return (x - tf.cast(self.mean, x.dtype)) / tf.sqrt(tf.cast(self.variance, x.dtype) + 1e-3)

    monkeypatch.setattr(layers.ChannelNormalization, "call", eps)
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 5, 5))
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(Normalization\), output"):
        assert_equivalent(PREPROCESS, _preprocess_weights(), x, backends=("numpy", "tf"))


def test_keras_rescaling_and_normalization_import(both_backends):
    import keras

    inp = keras.Input((5, 5, 3))
    norm = keras.layers.Normalization(axis=-1, mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0])
    h = norm(keras.layers.Rescaling(1 / 255.0, offset=0.5)(inp))
    out = keras.layers.Conv2D(2, 3)(h)
    model = keras.Model(inp, out)
    spec, _weights = xc.from_keras(model, return_weights=True)
    assert [i.kind for i in xc.infer(spec)][:2] == ["Rescaling", "Normalization"]
    tm = xc.port(model, to="torch")
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 5, 5)).astype(np.float32)
    assert max_rel_diff(xc.to_nchw(np.asarray(model(xc.to_nhwc(x)))), xc.predict(tm, x)) < 1e-5


def _crop_and_scale_model():
    """NASNet's one-pixel shift (a pad, then a crop no conv absorbs) and Inception-ResNet's scaled residual."""
    import keras
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 7, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(y)
    y = keras.layers.Cropping2D(((1, 0), (1, 0)))(y)
    r = keras.layers.Conv2D(4, 1)(y)
    y = CustomScaleLayer(0.17)([y, r])
    y = keras.layers.Cropping2D(((2, 1), (0, 0)))(y)
    return keras.Model(x, y)


def test_keras_crops_as_slices_and_scaled_residuals_import(both_backends):
    model = _crop_and_scale_model()
    spec = xc.from_keras(model)
    kinds = [i.kind for i in xc.infer(spec)]
    assert kinds.count("Narrow") == 3 and "Rescaling" in kinds and "Add" in kinds
    tm = xc.port(model, "torch")  # verified against the Keras model
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 7)).astype("float32")
    expect = xc.to_nchw(np.asarray(model(xc.to_nhwc(x))))
    assert max_rel_diff(expect, xc.predict(tm, x)) <= 1e-5


def test_a_dropped_residual_scale_is_caught(both_backends, monkeypatch):
    """CustomScaleLayer imported as x + r (its scale lost): port's verification fails."""
    from xconv.importers import keras_graph

    monkeypatch.setattr(keras_graph, "Rescaling", lambda scale, name: xc.Rescaling(1.0, name=name))
    with pytest.raises(xc.PortError, match="computes something its imported spec does not"):
        xc.port(_crop_and_scale_model(), "torch")
