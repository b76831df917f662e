"""keras-hub's ViT and DeiT backbones, with every weight random, port to torch and back: their own layers are
read as the Keras layers they call. What xconv does not know of keras-hub is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.errors import PortError, UnsupportedLayerError, XconvError
from xconv.testing import TOLERANCE, max_rel_diff


def _randomized(model, scale: float = 0.3):
    rng = np.random.default_rng(0)
    for v in model.weights:  # class and distillation tokens and position tables too: zeros would hide a fault
        v.assign(rng.standard_normal(v.shape) * scale)
    return model


def _backbone(kind: str, dtype: str = "float32", **options):
    import keras_hub

    small = {"image_shape": (16, 16, 3), "patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 16}
    if kind == "ViTBackbone":
        return _randomized(keras_hub.models.ViTBackbone(**small, mlp_dim=24, dtype=dtype, **options))
    return _randomized(keras_hub.models.DeiTBackbone(**small, intermediate_dim=24, dtype=dtype, **options))


@pytest.mark.parametrize(
    ("kind", "options"),
    [("ViTBackbone", {}), ("ViTBackbone", {"use_class_token": False}), ("DeiTBackbone", {})],
)
def test_keras_hub_vision_transformers_port_both_ways(both_backends, kind, options):
    import torch

    model = _backbone(kind, **options)
    torch_model = xc.port(model, to="torch")
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype("float32")
    want = np.asarray(model(x))
    with torch.no_grad():
        got = torch_model(torch.from_numpy(xc.to_nchw(x))).numpy()
    assert max_rel_diff(want, got) <= TOLERANCE["float32"]
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, np.asarray(back(x))) <= TOLERANCE["float32"]
    kinds = [i.kind for i in xc.infer(xc.spec_of(back))]
    assert kinds[:2] == ["Conv2d", "ToTokens"] and kinds.count("SelfAttention") == 2
    assert ("ClassToken" in kinds) == options.get("use_class_token", True)
    # every keras-hub number is in the port, bit for bit, and nothing else (kernels transposed, q/k/v fused)
    ported = np.sort(np.concatenate([w.ravel() for w in xc.get_weights(back).values()]))
    source = np.sort(np.concatenate([np.ravel(v.numpy()) for v in model.weights]))
    assert np.array_equal(ported, source)


def test_keras_hub_vit_in_float64_is_refused_for_keras_gelu(both_backends):
    """keras-hub's MLP uses Keras' GELU activation, which on TensorFlow is 5e-9 off the exact GELU in float64:
    the ported model computes the exact one, and port's verification refuses the difference."""
    with pytest.raises(PortError, match="The tf model computes something its imported spec does not"):
        xc.port(_backbone("ViTBackbone", "float64"), to="torch")


def test_keras_hub_tokens_in_another_order_are_caught(both_backends, monkeypatch):
    """An importer that put DeiT's distillation token before its class token: port's verification refuses it."""
    from xconv.importers import _keras_hub

    real = _keras_hub._weighted

    def swapped(layer, shape, values):
        if "token" in values and values["token"].shape[1] == 2:
            values = {"token": values["token"][:, ::-1]}
        return real(layer, shape, values)

    monkeypatch.setattr(_keras_hub, "_weighted", swapped)
    with pytest.raises(PortError):
        xc.port(_backbone("DeiTBackbone"), to="torch")


def test_keras_hub_layers_xconv_does_not_know_are_refused_by_name(both_backends):
    import keras
    import keras_hub

    inputs = keras.Input((6, 16))
    y = keras_hub.layers.TransformerEncoder(intermediate_dim=24, num_heads=2)(inputs)
    with pytest.raises(UnsupportedLayerError, match="keras-hub TransformerEncoder"):
        xc.from_keras(keras.Model(inputs, y))
    bert = keras_hub.models.BertBackbone(
        vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=8
    )
    with pytest.raises(XconvError, match="takes 3 input"):  # token ids, segment ids and a padding mask
        xc.from_keras(bert)
