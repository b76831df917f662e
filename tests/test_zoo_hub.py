"""The libraries most PyTorch vision models come from: timm (one model per architecture family) and Hugging Face
transformers' CNNs built from small configs, ported to Keras through their exported programs, verified, with
the original's own state_dict keys. Random weights; nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.testing import max_rel_diff

from .zoo_support import TIMM, TIMM_FLOAT64, TIMM_REFUSED, hf_model, import_torchvision, timm_model

import_torchvision()  # (timm imports torchvision: through the shim beside the CPU torch)


def _check(model, shape, dtype):
    import torch

    if dtype == "float64":
        model = model.double()
    km = xc.port(model, to="tf", input_shape=shape)  # verify=True: three batch groups and training mode
    # the original's own state_dict loads as it is: strict, so its keys are exactly the ported model's
    xc.set_weights(km, model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(dtype)
    with torch.no_grad():
        expect = model(torch.from_numpy(x))
    expect = (expect["logits"] if isinstance(expect, dict) else expect).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE[dtype]


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_ports_to_keras(both_backends, name):
    _check(timm_model(name), TIMM[name], "float32")


@pytest.mark.parametrize("name", TIMM_FLOAT64)
def test_timm_ports_to_keras_in_float64(both_backends, name):
    _check(timm_model(name), TIMM[name], "float64")


@pytest.mark.parametrize("name", list(TIMM_REFUSED))
def test_timm_cnns_not_ported_are_refused_by_name(both_backends, name):
    with pytest.raises(xc.UnsupportedLayerError, match=f"operation '{TIMM_REFUSED[name]}"):
        xc.from_torch(timm_model(name), (3, 64, 64))


def test_timm_weight_standardised_convs_port_folded(both_backends, monkeypatch):
    """NFNet's ScaledStdConv2d ports folded: from_torch's weights hold the standardised kernels, under keys of
    their own, so the source's state_dict (raw kernels and gains) is refused by key, not loaded as if
    standardised. An importer that kept the raw kernel is caught by port's verification."""
    import torch

    from xconv.importers import torch_layers

    model = timm_model("nf_regnet_b0")
    _, weights = xc.from_torch(model, (3, 64, 64), return_weights=True)
    assert "stem.conv.standardized.weight" in weights and "stem.conv.gain" not in weights
    km = xc.port(model, to="tf", input_shape=(3, 64, 64))
    xc.set_weights(km, weights)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype("float32")
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE["float32"]
    with pytest.raises(xc.WeightError, match=r"missing 'stem\.conv\.standardized\.weight'"):
        xc.set_weights(km, model.state_dict())

    def raw(m, name, where):
        layer, state = real(m, name, where)
        return layer, {**state, "weight": m.weight}

    [(match, real)] = [entry for entry in torch_layers._MATCHERS if entry[1].__name__ == "_timm_std_conv"]
    monkeypatch.setattr(torch_layers, "_MATCHERS", [(match, raw)])
    with pytest.raises(xc.PortError, match="computes something its imported spec does not"):
        xc.port(model, to="tf", input_shape=(3, 64, 64))


HF_PORTED = ("ResNet", "RegNet", "MobileNetV1", "MobileNetV2", "EfficientNet", "ConvNext", "ConvNextV2", "PoolFormer")


@pytest.mark.parametrize("name", HF_PORTED)
def test_hugging_face_cnns_port_to_keras(both_backends, name):
    _check(hf_model(name), (3, 64, 64), "float32")


def test_timm_batchnorm_act_ports_and_a_dropped_activation_is_caught(both_backends, monkeypatch):
    """timm's BatchNormAct2d (F.batch_norm on its own buffers, then its act module) ports as BatchNorm2d and the
    activation; an importer that dropped the activation is caught by port's verification."""
    import timm.layers
    from torch import nn

    from xconv.importers import torch_fx

    model = nn.Sequential(nn.Conv2d(3, 4, 3), timm.layers.BatchNormAct2d(4, act_layer=nn.SiLU), nn.Flatten())
    model = _trained(model)
    assert [i.kind for i in xc.infer(xc.from_torch(model, (3, 8, 8)))] == ["Conv2d", "BatchNorm2d", "SiLU", "Flatten"]
    xc.port(model, "tf", (3, 8, 8))
    real = torch_fx._layer

    def dropped(m, name, where):
        if isinstance(m, nn.SiLU):
            m = nn.Identity()
        return real(m, name, where)

    monkeypatch.setattr(torch_fx, "_layer", dropped)
    assert "Identity" in [i.kind for i in xc.infer(xc.from_torch(model, (3, 8, 8)))]
    with pytest.raises(xc.PortError, match="differs from the source torch model"):
        xc.port(model, "tf", (3, 8, 8))


def test_mode_flags_come_from_one_eager_run_and_a_second_export_where_it_does_not_line_up(both_backends, monkeypatch):
    """BatchNormAct2d's F.batch_norm takes its training flag from the module's mode: one eager run in the other
    mode shows that (one export in all); where the eager record does not line up with the program, the module
    is exported once more, and the spec is the same."""
    import timm.layers
    from torch import nn

    from xconv.importers import torch_export

    model = _trained(nn.Sequential(nn.Conv2d(3, 4, 3), timm.layers.BatchNormAct2d(4), nn.Dropout(0.2)))
    real, exports = torch_export.export, []

    def counted(*args):
        exports.append(1)
        return real(*args)

    monkeypatch.setattr(torch_export, "export", counted)
    spec = xc.from_torch(model, (3, 8, 8))
    assert "BatchNorm2d" in [i.kind for i in xc.infer(spec)] and len(exports) == 1
    exports.clear()
    monkeypatch.setattr(torch_export, "eager_calls", lambda *args: [])  # (a record that lines up with nothing)
    assert xc.from_torch(model, (3, 8, 8)) == spec and len(exports) == 2


def _trained(model):
    from .zoo_support import _trained_statistics

    return _trained_statistics(model)


def test_timm_star_relu_read_with_scale_and_bias_swapped_is_caught(both_backends, monkeypatch):
    """An importer that read StarReLU's scale as its bias and back: refused, each weight read is checked to be
    the model's own tensor of that key."""
    from xconv.importers import torch_layers

    [(match, real)] = [entry for entry in torch_layers._MATCHERS if entry[1].__name__ == "_timm_star_relu"]

    def swapped(m, name, where):
        layer, state = real(m, name, where)
        return layer, {"scale": state["bias"], "bias": state["scale"]}

    monkeypatch.setattr(torch_layers, "_MATCHERS", [(match, swapped), *torch_layers._MATCHERS])
    with pytest.raises(xc.UnsupportedLayerError, match=r"act1.scale' is not the model's own"):
        xc.port(timm_model("convformer"), to="tf", input_shape=TIMM["convformer"])


def test_timm_star_relu_with_a_fixed_parameter_is_refused(both_backends):
    model = timm_model("convformer")
    model.stages[0].blocks[0].mlp.act.scale.requires_grad_(False)
    with pytest.raises(xc.UnsupportedLayerError, match=r"StarReLU with a fixed scale \(requires_grad=False\)"):
        xc.from_torch(model, TIMM["convformer"])
