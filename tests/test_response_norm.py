"""ConvNeXt V2's global response normalisation: the same function in numpy, torch and Keras (forward,
gradients, a channel of zeros included), imported from xconv's own modules, timm's and Hugging Face's on the
layout each is written for and refused on the other, and a wrong mapping caught at its node."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.testing import assert_equivalent, max_rel_diff

from .zoo_support import import_torchvision

SPEC = xc.Sequential(
    xc.Conv2d(3, 4, 3),
    xc.GlobalResponseNorm(4),
    xc.ReLU(),
    xc.GlobalResponseNorm(4, eps=1e-3),
    input_shape=(3, 7, 7),
)


def _weights(zero_channel: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = {k: rng.standard_normal(v.shape) for k, v in xc.get_weights(xc.build(SPEC, "numpy", seed=0)).items()}
    if zero_channel:  # channel 2 all zeros after the conv: its norm is 0
        w["0.weight"][2] = 0.0
        w["0.bias"][2] = 0.0
    return w


@pytest.mark.parametrize("zero_channel", [False, True])
def test_response_norm_is_the_same_function_in_every_backend(both_backends, zero_channel):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 7))
    assert_equivalent(SPEC, _weights(zero_channel), x)
    assert_equivalent(SPEC, _weights(zero_channel), x, dtype="float32")


def test_response_norm_normalised_by_another_statistic_is_caught(both_backends, monkeypatch):
    """The norms divided by their largest value instead of their mean: caught at the first response norm."""
    import tensorflow as tf

    from xconv.backends.tf import builders
    from xconv.kinds.norm import _keras as norm_keras

    class ByMax(norm_keras.GlobalResponseNormLayer):
        def call(self, x):
            norms = tf.sqrt(tf.reduce_sum(tf.square(x), axis=[1, 2], keepdims=True))
            scale = norms / (tf.reduce_max(norms, axis=-1, keepdims=True) + self.epsilon)
            return x + self.gamma * (x * scale) + self.beta

    monkeypatch.setitem(
        builders._BUILDERS,
        xc.GlobalResponseNorm,
        lambda info, x, dtype: ByMax(info.layer.eps, dtype=dtype, name=builders.keras_name(info))(x),
    )
    with pytest.raises(AssertionError, match=r"first part at layer 1 \(GlobalResponseNorm\), output"):
        assert_equivalent(SPEC, _weights(), backends=("numpy", "tf"))


def _timm_block(channels_last: bool):
    import_torchvision()
    import torch
    from timm.layers.grn import GlobalResponseNorm
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.grn = GlobalResponseNorm(4, channels_last=channels_last)
            with torch.no_grad():
                self.grn.weight.normal_()
                self.grn.bias.normal_()

        def forward(self, x):
            y = self.conv(x)
            return self.grn(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if channels_last else self.grn(y)

    return Block().eval()


@pytest.mark.parametrize("channels_last", [True, False])
def test_timm_response_norm_imports_on_its_layout(both_backends, channels_last):
    import torch

    block = _timm_block(channels_last)
    spec, weights = xc.from_torch(block, (3, 7, 7), return_weights=True)
    assert [i.kind for i in xc.infer(spec)] == ["Conv2d", "GlobalResponseNorm"]
    assert sorted(weights) == sorted(block.state_dict())
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 7)).astype(np.float32)
    with torch.no_grad():
        expected = block(torch.from_numpy(x)).numpy()
    keras_model = xc.port(block, "tf", (3, 7, 7))
    assert max_rel_diff(expected, xc.predict(keras_model, x)) <= 1e-5


def test_a_response_norm_on_the_other_layout_is_refused(both_backends):
    """timm's channels-last GRN given an NCHW map whose width equals its channels (so torch runs it) computes
    norms over (C, H), not the pixels: refused by name."""
    import torch

    block = _timm_block(channels_last=True)
    block.forward = lambda x: block.grn(block.conv(x))  # no permute: the layout it is not written for
    with pytest.raises(xc.UnsupportedLayerError, match=r"grn.*written for another layout"):
        xc.from_torch(block, (3, 7, 6))  # conv output (4, 5, 4)
    with torch.no_grad():  # (what torch computes there: defined, and another function)
        assert block(torch.zeros(1, 3, 7, 6)).shape == (1, 4, 5, 4)


def test_hugging_face_response_norm_weights_of_shape_1_1_1_c_load_both_ways(both_backends):
    """Hugging Face keeps the weight and bias as (1, 1, 1, C): the import reads them as (C,), and set_weights
    takes the module's own state_dict."""
    import torch

    from .zoo_support import hf_model

    model = hf_model("ConvNextV2")
    spec, weights = xc.from_torch(model, (3, 32, 32), return_weights=True)
    grn = [k for k in weights if k.endswith("grn.weight")]
    assert grn and all(weights[k].ndim == 1 for k in grn)
    assert all(tuple(model.state_dict()[k].shape)[:3] == (1, 1, 1) for k in grn)
    built = xc.build(spec, "torch")
    xc.set_weights(built, model.state_dict())
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).logits.numpy()
    assert max_rel_diff(expected, xc.predict(built, x)) <= 1e-5
