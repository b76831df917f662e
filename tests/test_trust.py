"""Nothing silently wrong: transfers share no memory, importers map only the exact known layers, and `xconv
check` runs the model stored in a .keras file itself."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import xconv as xc
from xconv.testing import max_rel_diff

#: 16 MiB of float32 weights (the zero-copy transfer path) with size-1 axes that make transposes reshapes
LARGE = xc.Sequential(xc.Conv2d(1, 1, 1), xc.Conv2d(1, 64, 1), xc.Flatten(), xc.Linear(None, 1024),
                      xc.BatchNorm1d(1024), xc.Linear(1024, 1), input_shape=(1, 8, 8))
SMALL = xc.Sequential(xc.Conv2d(2, 3, 3), xc.BatchNorm2d(3), xc.Flatten(), xc.Linear(None, 1), input_shape=(2, 5, 5))


@pytest.mark.parametrize("spec", [LARGE, SMALL], ids=["large", "small"])
@pytest.mark.parametrize("direction", ["torch->tf", "tf->torch"])
def test_transferred_models_share_no_memory(both_backends, spec, direction):
    import torch

    tm, km = xc.build(spec, "torch", seed=0), xc.build(spec, "tf", seed=1)
    src, dst = (tm, km) if direction == "torch->tf" else (km, tm)
    xc.transfer_weights(src, dst)
    before = xc.get_weights(dst)
    if direction == "torch->tf":  # mutate every tensor of the source in place
        with torch.no_grad():
            for t in tm.state_dict().values():
                t.add_(1)
    else:
        for v in km.weights:
            v.assign_add(np.ones(v.shape, dtype=v.dtype))
    after = xc.get_weights(dst)
    assert [k for k in before if not np.array_equal(before[k], after[k])] == []


def test_keras_importer_maps_only_keras_own_activations_and_layers(both_backends):
    import keras

    def relu(x):  # a user function that is not Keras' relu
        return keras.ops.maximum(x, 0.0) * 2.0

    inp = keras.Input((4, 4, 2))
    with pytest.raises(xc.UnsupportedLayerError, match="activation .*relu.* is not one of Keras' own"):
        xc.from_keras(keras.Model(inp, keras.layers.Conv2D(2, 3, activation=relu)(inp)))
    with pytest.raises(xc.UnsupportedLayerError, match="is not one of Keras' own"):
        xc.from_keras(keras.Model(inp, keras.layers.Activation(relu)(inp)))

    class HalfReLU(keras.layers.ReLU):
        def call(self, x):
            return super().call(x) * 0.5

    class FlattenTwice(keras.layers.Flatten):
        def call(self, x):
            return super().call(x) * 2.0

    for layer in (HalfReLU(), FlattenTwice()):
        with pytest.raises(xc.UnsupportedLayerError, match="not supported"):
            xc.from_keras(keras.Model(inp, layer(inp)))


def test_torch_importer_traces_subclasses_and_refuses_hooks(both_backends):
    import torch
    from torch import nn

    class ResidualSequential(nn.Sequential):  # a Sequential subclass whose forward adds a residual
        def forward(self, x):
            return x + super().forward(x)

    m = ResidualSequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()).eval()
    spec = xc.from_torch(m, (2, 5, 5))
    assert [item.kind for item in spec.layers] == ["Add"]
    km = xc.port(m, to="tf", input_shape=(2, 5, 5))
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    with torch.no_grad():
        assert max_rel_diff(m(torch.from_numpy(x)).numpy(), xc.predict(km, x)) < 1e-5

    class ShiftedConv(nn.Conv2d):  # its own forward: traced, and the constant refused
        def forward(self, x):
            return super().forward(x) + 1.0

    with pytest.raises(xc.UnsupportedLayerError, match="no constants"):
        xc.from_torch(nn.Sequential(ShiftedConv(2, 2, 1)), (2, 3, 3))
    hooked = nn.Sequential(nn.ReLU())
    hooked[0].register_forward_pre_hook(lambda mod, inp: (inp[0] * 2,))
    with pytest.raises(xc.UnsupportedLayerError, match="hooks"):
        xc.from_torch(hooked, (2, 3, 3))


def _edited_keras_file(tmp_path):
    spec = xc.Sequential(xc.Conv2d(2, 3, 3, padding=1), xc.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
                         xc.Flatten(), xc.Linear(None, 2), input_shape=(2, 6, 6))
    path, edited = tmp_path / "m.keras", tmp_path / "edited.keras"
    xc.build(spec, "tf", seed=0).save(path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])

    def double_scale(o):
        if isinstance(o, dict):
            if o.get("class_name") == "TorchAvgPool2D":
                o["config"]["scale"] = [[2 * v for v in row] for row in o["config"]["scale"]]
            for v in o.values():
                double_scale(v)
        elif isinstance(o, list):
            for v in o:
                double_scale(v)

    double_scale(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(edited, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path, edited


def test_check_runs_the_model_stored_in_a_keras_file(both_backends, tmp_path, capsys):
    from xconv import cli

    path, edited = _edited_keras_file(tmp_path)
    assert cli.main(["check", str(path)]) == 0
    assert cli.main(["check", str(edited)]) == 1
    assert "does not compute what its layers' configurations say" in capsys.readouterr().out
    assert cli.main(["convert", str(edited), "--to", "torch", "-o", str(tmp_path / "out.pt")]) == 2
    assert not (tmp_path / "out.pt").exists()
