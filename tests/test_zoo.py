"""The standard model zoos port both ways, verified: torchvision's classification models to Keras, with the
original's own state_dict loading into the ported model, and keras.applications' models to torch."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.testing import max_rel_diff

from .zoo_support import (
    KERAS_APPLICATIONS,
    SEGMENTATION,
    TORCHVISION,
    TORCHVISION_FLOAT64,
    keras_model,
    segmentation_model,
    torchvision_model,
)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(n, "float32") for n in TORCHVISION] + [(n, "float64") for n in TORCHVISION_FLOAT64],
)
def test_torchvision_ports_to_keras(both_backends, name, dtype):
    import torch

    model = torchvision_model(name)
    if dtype == "float64":
        model = model.double()
    shape = TORCHVISION[name][1]
    km = xc.port(model, to="tf", input_shape=shape)  # verify=True: a random batch through both
    xc.set_weights(km, model.state_dict())  # the original's own keys load as they are
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(dtype)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE[dtype]
    assert not {"Permute", "Transpose"} & {type(layer).__name__ for layer in km.layers}


@pytest.mark.parametrize(
    ("name", "dtype"), [(n, "float32") for n in SEGMENTATION] + [("lraspp_mobilenet_v3_large", "float64")]
)
def test_torchvision_segmentation_ports_to_keras(both_backends, name, dtype):
    """Dense prediction: dilated backbones, ASPP's pooled branch upsampled back with a size read from the input,
    LR-ASPP's gate, bilinear upsampling to the input size; the model returns {"out": ...}."""
    import torch

    model = segmentation_model(name)
    if dtype == "float64":
        model = model.double()
    shape = SEGMENTATION[name]
    km = xc.port(model, to="tf", input_shape=shape, output="out")  # verify=True
    xc.set_weights(km, model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(dtype)
    with torch.no_grad():
        expect = model(torch.from_numpy(x))["out"].numpy()
    got = xc.predict(km, x)
    assert got.shape == expect.shape == (2, 21, *shape[1:])
    assert max_rel_diff(expect, got) <= xc.testing.TOLERANCE[dtype]
    assert not {"Permute", "Transpose"} & {type(layer).__name__ for layer in km.layers}


def test_a_dict_output_needs_its_entry_named(both_backends):
    model = segmentation_model("lraspp_mobilenet_v3_large")
    spec = xc.from_torch(model, (3, 64, 64))  # one entry: taken
    assert xc.infer(spec)[-1].output_shape == (21, 64, 64)
    with pytest.raises(xc.UnsupportedLayerError, match="not an entry"):
        xc.from_torch(model, (3, 64, 64), output="aux")


def _own_scale_diff(expect: np.ndarray, got: np.ndarray) -> float:
    """max |a - b| / max |a|: some keras.applications models give logits of 1e-19 with random weights, where
    the usual max(1, max |a|) scale would let any output pass."""
    scale = float(np.abs(expect).max())
    assert scale > 0
    return float(np.abs(expect - got).max()) / scale


@pytest.mark.parametrize("name", list(KERAS_APPLICATIONS))
def test_keras_applications_port_to_torch(both_backends, name):
    model = keras_model(name)
    tm = xc.port(model, to="torch")
    h, w, c = KERAS_APPLICATIONS[name]
    x = np.random.default_rng(1).standard_normal((2, c, h, w)).astype("float32")
    if "+preprocessing" in name or name == "EfficientNetB0":
        x = x * 60 + 120  # pixel values, as the model's own Rescaling expects
    expect = np.asarray(model(xc.to_nhwc(x), training=False))
    assert _own_scale_diff(expect, xc.predict(tm, x)) <= xc.testing.TOLERANCE["float32"]
    km = xc.port(tm, to="tf")  # and back: the same function again
    assert _own_scale_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE["float32"]


def test_the_keras_zoo_check_fails_when_a_weight_is_wrong(both_backends):
    """The comparison above is able to fail on the smallest-logit model: one depthwise kernel value nudged by
    1% in the torch copy shows in the output."""
    import torch

    model = keras_model("MobileNet")
    tm = xc.port(model, to="torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype("float32")
    expect = np.asarray(model(xc.to_nhwc(x), training=False))
    with torch.no_grad():
        weight = next(p for k, p in tm.named_parameters() if "conv_dw_7" in k and k.endswith("weight"))
        weight.view(-1)[0] *= 1.01
    assert _own_scale_diff(expect, xc.predict(tm, x)) > xc.testing.TOLERANCE["float32"]


def test_torchvision_state_dict_keys_are_the_canonical_keys(both_backends):
    model = torchvision_model("resnet18")
    _, weights = xc.from_torch(model, (3, 64, 64), return_weights=True)
    assert list(weights) == list(model.state_dict())


def test_the_zoo_check_fails_when_a_weight_is_wrong(both_backends):
    """The zoo comparison is able to fail: one nudged BatchNorm statistic shows in the ported model's output."""
    import torch

    model = torchvision_model("resnet18")
    km = xc.port(model, to="tf", input_shape=(3, 64, 64))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["layer2.0.bn1.running_var"][0] *= 4
    xc.set_weights(km, state)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype("float32")
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) > xc.testing.TOLERANCE["float32"]


def test_a_deep_model_ports_within_its_own_float32_rounding(both_backends):
    """keras.applications EfficientNetV2S with logits is deep enough that float32 rounding alone moves its
    output by about 1e-5 of the logits' scale (measured against the same function in float64: Keras 0.5-2e-5,
    torch 2-7e-6), so the two models can differ by more than the fixed 1e-5. port then compares both with the
    float64 reference and allows ten times a float32 build's rounding: it ports, and the ported model is
    within that allowance."""
    import keras

    from xconv import _port

    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetV2S(
        weights=None, input_shape=(64, 64, 3), include_preprocessing=False, classifier_activation=None
    )
    tm = xc.port(model, to="torch")  # verify=True
    spec, weights = xc.from_keras(model, return_weights=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype("float32")
    a, b = np.asarray(model(xc.to_nhwc(x), training=False)), xc.predict(tm, x)
    ok, detail, _ = _port._rounding_check(spec, weights, x, a, b, ("tf", "torch"))
    assert ok, detail
