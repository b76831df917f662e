"""Ports that were wrong while verification passed: in-place statements, flattened outputs, unchecked specs.

Each test builds the model the way a user writes it, ports it, and runs both native models on inputs that
reach the failure (large values, exact zeros), so that a dropped operation or a permuted vector shows."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xconv as xc
from xconv.testing import max_rel_diff


def _torch_out(model, x):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _keras_out(model, x):
    y = np.asarray(model(xc.to_nhwc(x) if x.ndim == 4 else x, training=False))
    return xc.to_nchw(y) if y.ndim == 4 else y


def _batches(shape, dtype="float32"):
    """A standard-normal batch, one at scale 100, and one with an all-zero border (a black frame)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, *shape))
    framed = x.copy()
    if len(shape) == 3:
        framed[:, :, :2], framed[:, :, :, :2] = 0.0, 0.0
    return [b.astype(dtype) for b in (x, 100 * x, framed)]


def _in_place_models():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

    class ClampMethod(Base):
        def forward(self, x):
            y = self.conv(x)
            y.clamp_(-6, 6)
            return y

    class FunctionalInplace(Base):
        def forward(self, x):
            y = self.conv(x)
            F.hardtanh(y, -6.0, 6.0, True)  # inplace passed positionally
            return y

    class TorchRelu(Base):
        def forward(self, x):
            y = self.conv(x)
            torch.relu_(y)
            return y.flatten(1)

    class InplaceModule(Base):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU6(inplace=True)

        def forward(self, x):
            y = self.conv(x)
            self.act(y)  # the result is not assigned
            return y

    class Chain(Base):
        def forward(self, x):
            y = self.conv(x)
            y.relu_()
            y.clamp_(0.0, 5.0)
            return y

    return {
        "clamp_": ClampMethod,
        "F.hardtanh(inplace=True)": FunctionalInplace,
        "torch.relu_": TorchRelu,
        "nn.ReLU6(inplace=True)": InplaceModule,
        "relu_ then clamp_": Chain,
    }


@pytest.mark.parametrize("name", list(_in_place_models()))
def test_in_place_statements_are_imported(both_backends, name):
    """An in-place write whose result is not assigned is on the output's path: imported, never dropped."""
    model = _in_place_models()[name]().eval()
    km = xc.port(model, "tf", (3, 8, 8))
    for x in _batches((3, 8, 8)):
        a, b = _torch_out(model, x), _keras_out(km, x)
        assert max_rel_diff(a, b) < 1e-5, (name, float(np.abs(x).max()))
    assert max(_batches((3, 8, 8))[1].max(), 0) > 6  # the large batch reaches the clamp


def test_in_place_writes_that_cannot_be_imported_are_refused(both_backends):
    import torch
    from torch import nn

    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

    class IntoSlice(Base):
        def forward(self, x):
            y = self.conv(x)
            y[:, :2].clamp_(-6, 6)
            return y

    class MaskedFill(Base):
        def forward(self, x):
            y = self.conv(x)
            y.masked_fill_(y > 1e9, 0.0)
            return y

    class OutArgument(Base):
        def forward(self, x):
            y = self.conv(x)
            torch.add(y, 1.0, out=y)
            return y

    class Buffer(Base):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))

        def forward(self, x):
            self.count.add_(1)
            return self.conv(x)

    class ViewThenWrite(Base):
        def forward(self, x):
            y = self.conv(x)
            v = y.view(y.size(0), -1)
            y.relu_()
            return v

    cases = {
        IntoSlice: "reads afterwards through another view",
        MaskedFill: "masked_fill_|in place|'gt'",
        OutArgument: "out=",
        Buffer: "own (buffer|tensor) 'count'",
        ViewThenWrite: "reads afterwards through another view",
    }
    for cls, match in cases.items():
        model = cls().eval()
        with pytest.raises(xc.UnsupportedLayerError, match=match):
            xc.port(model, "tf", (3, 8, 8))
        if cls is Buffer:  # tracing ran the write for real; the buffer is put back
            assert float(model.count) == 0.0


def test_a_forward_replaced_on_an_instance_imports_as_what_it_computes(both_backends):
    """The exported program records the forward that runs, a replaced one too; the module is then mapped by what
    its calls compute, not by its class. The torch.fx front-end (for modules that cannot be exported) refuses
    it instead."""
    import torch
    from torch import nn

    from xconv.importers.torch_fx import _import_traced

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    model[0].forward = lambda x: nn.functional.conv2d(x, model[0].weight) * 2
    spec, weights = xc.from_torch(model, (3, 8, 8), return_weights=True)
    assert [i.kind for i in xc.infer(spec)] == ["Conv2d", "Rescaling", "ReLU"]
    assert set(weights) == {"0.weight"}
    km = xc.port(model, "tf", (3, 8, 8))
    for x in _batches((3, 8, 8)):
        assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < 1e-5
    with pytest.raises(xc.UnsupportedLayerError, match=r"module '0' \(Conv2d\) has its forward replaced"):
        _import_traced(model, (3, 8, 8), None, "")
    inner = nn.Sequential(nn.Sequential(nn.ReLU()), nn.Flatten())
    inner[0][0].forward = lambda x: x * 3
    assert [i.kind for i in xc.infer(xc.from_torch(inner, (3, 4, 4)))] == ["Rescaling", "Flatten"]
    with torch.no_grad():
        x = torch.randn(2, 3, 4, 4)
        assert torch.equal(xc.port(inner, "torch", (3, 4, 4))(x), inner(x))
    with pytest.raises(xc.UnsupportedLayerError, match="forward replaced"):
        _import_traced(inner, (3, 4, 4), None, "")


def test_global_forward_hooks_are_refused(both_backends):
    import torch
    from torch import nn

    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
    try:
        with pytest.raises(xc.UnsupportedLayerError, match="global forward hooks"):
            xc.from_torch(nn.Sequential(nn.ReLU()), (3, 4, 4))
    finally:
        handle.remove()


def _flat_torch_heads():
    from torch import nn

    def conv():
        return nn.Conv2d(3, 4, 3)

    return {
        "Flatten": lambda: nn.Sequential(conv(), nn.Flatten()),
        "Flatten-BatchNorm1d": lambda: nn.Sequential(conv(), nn.Flatten(), nn.BatchNorm1d(4 * 6 * 6)),
        "Flatten-LayerNorm-Softmax": lambda: nn.Sequential(conv(), nn.Flatten(), nn.LayerNorm(144), nn.Softmax(1)),
        "Flatten-ReLU": lambda: nn.Sequential(conv(), nn.Flatten(), nn.ReLU()),
    }


@pytest.mark.parametrize("name", list(_flat_torch_heads()))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_flattened_output_is_the_same_vector_in_keras(both_backends, tmp_path, name, dtype):
    """The ported Keras model itself returns the torch model's C,H,W-ordered vector (one gather at the end);
    its .keras file imports back to the same spec, and the torch model ported from it returns it too."""
    import keras
    import torch

    model = _flat_torch_heads()[name]()
    if dtype == "float64":
        model = model.double()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    model.eval()
    km = xc.port(model, "tf", (3, 8, 8))
    tol = 1e-5 if dtype == "float32" else 1e-10
    for x in _batches((3, 8, 8), dtype):
        a, b = _torch_out(model, x), np.asarray(km(xc.to_nhwc(x), training=False))  # the native call
        assert max_rel_diff(a, b) < tol
    path = tmp_path / "m.keras"
    km.save(path)
    back = xc.port(keras.models.load_model(path), "torch")
    x = _batches((3, 8, 8), dtype)[0]
    assert max_rel_diff(_torch_out(model, x), _torch_out(back, x)) < tol


def test_a_built_spec_ending_in_flatten_returns_torch_order(both_backends):
    spec = xc.Sequential(xc.Conv2d(2, 3, 3), xc.Flatten(), input_shape=(2, 5, 5))
    tm, km = xc.build(spec, "torch", seed=0), xc.build(spec, "tf", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype("float32")
    assert max_rel_diff(_torch_out(tm, x), np.asarray(km(xc.to_nhwc(x)))) < 1e-5
    # and the Keras graph still has no Transpose of activations: the order is one gather at the end
    assert [type(layer).__name__ for layer in km.layers][-1] == "FeatureOrder"


def _flat_keras_heads():
    import keras

    def conv():
        return keras.layers.Conv2D(4, 3)

    return {
        "Flatten": lambda: [conv(), keras.layers.Flatten()],
        "Flatten-BatchNormalization": lambda: [conv(), keras.layers.Flatten(), keras.layers.BatchNormalization()],
        "Flatten-Softmax": lambda: [conv(), keras.layers.Flatten(), keras.layers.Softmax()],
        "Flatten-Dense": lambda: [conv(), keras.layers.Flatten(), keras.layers.Dense(5)],
    }


@pytest.mark.parametrize("name", list(_flat_keras_heads()))
def test_a_keras_flattened_output_is_the_same_vector_in_torch(both_backends, tmp_path, name):
    import keras

    km = keras.Sequential([keras.Input((8, 8, 3)), *_flat_keras_heads()[name]()])
    for v in km.non_trainable_weights:  # moving statistics that are not the identity
        v.assign(np.random.default_rng(1).uniform(0.5, 2, v.shape).astype("float32"))
    tm = xc.port(km, "torch")
    for x in _batches((3, 8, 8)):
        assert max_rel_diff(_keras_out(km, x), _torch_out(tm, x)) < 1e-5
    path = tmp_path / "m.keras"
    km.save(path)
    from xconv import cli

    assert cli.main(["convert", str(path), "--to", "safetensors", "-o", str(tmp_path / "m.safetensors")]) == 0
    loaded = xc.load_model(tmp_path / "m.safetensors", backend="torch")
    x = _batches((3, 8, 8))[1]
    assert max_rel_diff(_keras_out(km, x), _torch_out(loaded, x)) < 1e-5


def test_keras_flattened_features_joined_with_a_dense_output_import_channels_last(both_backends):
    """A Keras Flatten's H,W,C vector added to a Dense's output (which has no map order) cannot be read as a
    C,H,W Flatten: every Flatten is then read channels-last, and the model ports exactly (a property test found
    this spec)."""
    spec = xc.Sequential(
        xc.Flatten(channels_last=True),
        xc.LayerNorm(8, bias=False),
        xc.Add(xc.Identity(), xc.Linear(8, 8, bias=False)),
        xc.Linear(8, 1, bias=False),
        input_shape=(2, 2, 2),
    )
    km = xc.build(spec, "tf", seed=0)
    assert [layer.channels_last for layer in xc.from_keras(km) if layer.kind == "Flatten"] == [True]
    tm = xc.port(km, "torch")  # verify=True
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 2)).astype("float32")
    assert max_rel_diff(xc.predict(km, x), xc.predict(tm, x)) <= xc.testing.TOLERANCE["float32"]


def test_a_wrong_feature_order_layer_is_refused(both_backends):
    import keras

    from xconv.kinds.dense._keras import FeatureOrder

    inp = keras.Input((3, 3, 2))
    flat = keras.layers.Flatten()(keras.layers.Conv2D(2, 1)(inp))
    order = list(range(18))[::-1]
    with pytest.raises(xc.UnsupportedLayerError, match="FeatureOrder"):
        xc.from_keras(keras.Model(inp, FeatureOrder(order)(flat)))


def test_a_layer_norm_is_checked_when_a_dead_line_defeats_shape_propagation(both_backends):
    """A line the output does not need (x.nonzero() cannot run on fake tensors) no longer switches the layout
    checks off: LayerNorm(W) on an NCHW map is still refused, and a needed line that cannot be checked is
    refused by name."""
    from torch import nn

    class DeadLine(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 4, 3), nn.LayerNorm(6)

        def forward(self, x):
            y = self.conv(x)
            x.nonzero()
            return self.norm(y)

    with pytest.raises(xc.UnsupportedLayerError, match=r"module 'norm' \(LayerNorm\) acts on the last axis"):
        xc.from_torch(DeadLine().eval(), (3, 8, 8))

    class Needed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) + x.nonzero().sum()

    with pytest.raises(xc.UnsupportedLayerError, match="nonzero"):
        xc.from_torch(Needed().eval(), (3, 8, 8))


def test_frozen_keras_batchnorm_stays_frozen_in_torch(both_backends):
    """Keras' fine-tuning recipe: BatchNormalization(trainable=False) normalises with its moving statistics in
    training too. The torch port does the same, learns nothing there, and its running statistics do not move."""
    import keras
    import torch

    km = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(trainable=False),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    bn = km.layers[1]
    bn.moving_mean.assign(np.linspace(-1, 1, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2, 4).astype("float32"))
    tm = xc.port(km, "torch")  # verify compares training mode too for a Keras source
    assert xc.from_keras(km).layers[1].frozen
    tm.train()
    before = {k: v.clone() for k, v in tm.state_dict().items()}
    x = _batches((3, 6, 6))[0]
    assert max_rel_diff(np.asarray(km(xc.to_nhwc(x), training=True)), _torch_out(tm, x)) < 1e-5
    assert all(torch.equal(before[k], v) for k, v in tm.state_dict().items())
    assert not any(p.requires_grad for n, p in tm.named_parameters() if n.startswith(bn.name))
    back = xc.port(tm, "tf", (3, 6, 6))  # and back: a Keras layer that is not trainable
    assert not back.get_layer(bn.name).trainable


def test_a_live_batchnorm_ported_from_a_frozen_one_is_caught(both_backends, monkeypatch):
    """The fault the training-mode check exists for: a frozen BatchNorm imported as a live one."""
    import keras

    from xconv.importers import keras_graph

    km = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    km.layers[1].trainable = False
    km.layers[1].moving_variance.assign(np.full(4, 3.0, "float32"))
    real = keras_graph._plain_layer

    def live(layer, where, current):
        spec_layer, weights = real(layer, where, current)
        import dataclasses

        return (dataclasses.replace(spec_layer, frozen=False) if hasattr(spec_layer, "frozen") else spec_layer), weights

    monkeypatch.setattr(keras_graph, "_plain_layer", live)
    with pytest.raises(xc.PortError, match="in training mode"):
        xc.port(km, "torch")


def test_port_leaves_every_module_mode_and_buffer_as_it_was(both_backends):
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    model.train()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    xc.port(model, "tf", (3, 8, 8))  # in training mode: compared in training mode, statistics put back
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    model[1].eval()  # a BatchNorm frozen by hand inside a training model
    modes = [m.training for m in model.modules()]
    with pytest.raises(xc.PortError, match="in training mode.*computes something its imported spec does not"):
        xc.port(model, "tf", (3, 8, 8))
    assert [m.training for m in model.modules()] == modes  # not reset by the failed port either
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.eval()
    model[2].train()  # an MC-dropout style module left in training inside an eval model
    modes = [m.training for m in model.modules()]
    xc.port(model, "tf", (3, 8, 8))
    assert [m.training for m in model.modules()] == modes


def test_verification_compares_large_values_and_zeros(both_backends, monkeypatch):
    """A fault only large inputs reach (a clamp at 6 dropped) and one only exact zeros reach are caught."""
    from torch import nn

    from xconv.backends import torch_backend

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardtanh(-6.0, 6.0)).eval()
    real = torch_backend._BUILDERS[xc.Hardtanh]
    monkeypatch.setitem(torch_backend._BUILDERS, xc.Hardtanh, lambda info, factory: nn.Identity())
    with pytest.raises(xc.PortError, match="times 100"):
        xc.port(model, "torch", (3, 8, 8))
    monkeypatch.setitem(torch_backend._BUILDERS, xc.Hardtanh, real)
    xc.port(model, "torch", (3, 8, 8))

    class ZeroIsOne(nn.Module):  # differs from ReLU only at exact zeros
        def forward(self, x):
            return x.relu() + (x == 0).to(x.dtype)

    monkeypatch.setitem(torch_backend._BUILDERS, xc.ReLU, lambda info, factory: ZeroIsOne())
    with pytest.raises(xc.PortError, match="an input with exact zeros"):
        xc.port(nn.Sequential(nn.ReLU()).eval(), "torch", (3, 8, 8))


def test_unclear_inputs_get_one_sentence(both_backends):
    import keras
    import torch
    from torch import nn

    inp = keras.Input((4, 4, 3))
    conv = keras.layers.Conv2D(2, 1)(inp)
    with pytest.raises(xc.XconvError, match="returns a dict of 1 output"):
        xc.port(keras.Model(inp, {"a": conv}), "torch")
    with pytest.raises(xc.XconvError, match="returns one tensor twice"):
        xc.port(keras.Model(inp, [conv, conv]), "torch")
    with pytest.raises(xc.XconvError, match=r"returns a list of 2 output\(s\).*flat list"):
        xc.port(keras.Model(inp, [conv, [conv]]), "torch")
    with pytest.raises(xc.XconvError, match=r"has no input yet .*keras.Input"):
        xc.port(keras.Sequential([keras.layers.Conv2D(2, 1)]), "torch")
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(3, 3, 1))
    with pytest.raises(xc.XconvError, match="'0.weight' is on the meta device"):
        xc.port(meta, "tf", (3, 4, 4))
    with pytest.raises(xc.XconvError, match="not initialised yet .*LazyConv2d"):
        xc.port(nn.Sequential(nn.LazyConv2d(3, 1)), "tf", (3, 4, 4))
    for bad in ("a", -1, 1.5, True):
        with pytest.raises(xc.XconvError, match="`seed` must be a non-negative integer"):
            xc.port(nn.Sequential(nn.ReLU()), "tf", (3, 4, 4), seed=bad)
        with pytest.raises(xc.XconvError, match="`seed` must be a non-negative integer"):
            xc.build(xc.Sequential(xc.ReLU(), input_shape=(3, 4, 4)), "torch", seed=bad)
    with pytest.raises(xc.UnsupportedLayerError, match=r"\(Maximum\) takes 2 inputs; .*Add, Subtract, Multiply"):
        xc.from_keras(keras.Model(inp, keras.layers.Maximum()([conv, conv])))
    mixed = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1, dtype="mixed_float16")])
    with pytest.raises(xc.XconvError, match=r"'conv2d.*' computes in float16 \(dtype policy 'mixed_float16'\)"):
        xc.port(mixed, "torch")
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    dense.quantize("int8")
    with pytest.raises(xc.UnsupportedLayerError, match=r"\(Dense\) is quantized \(int8\)"):
        xc.from_keras(dense)


def test_a_port_error_says_which_side_is_off(both_backends, monkeypatch):
    """An import that misses what the source computes (simulated: Tanh imported as Sigmoid) is blamed on the
    source's import; a backend that builds the spec wrong (Sigmoid built as Tanh in torch) on the ported model."""
    from torch import nn

    from xconv.importers import torch_layers

    monkeypatch.setitem(torch_layers._IMPORTS, nn.Tanh, lambda m, name, where: xc.Sigmoid(name=name))
    with pytest.raises(xc.PortError, match="The torch model computes something its imported spec does not"):
        xc.port(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh()).eval(), "tf", (3, 8, 8))
    monkeypatch.undo()
    import keras

    from xconv.backends.tf import builders

    monkeypatch.setitem(
        builders._BUILDERS,
        xc.Sigmoid,
        lambda info, x, dtype: keras.layers.Activation("tanh", dtype=dtype, name=builders.keras_name(info))(x),
    )
    with pytest.raises(xc.PortError, match="The ported tf model does not compute its own spec"):
        xc.port(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid()).eval(), "tf", (3, 8, 8))


def test_set_weights_skips_unused_keys_on_request(both_backends):
    from torch import nn

    class WithAux(nn.Module):  # an auxiliary head used only in training, as in GoogLeNet and Inception
        def __init__(self):
            super().__init__()
            self.conv, self.aux = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            return y + self.aux(y.mean((2, 3))).sum() if self.training else y

    model = WithAux().eval()
    km = xc.port(model, "tf", (3, 8, 8))
    with pytest.raises(xc.WeightError, match="unexpected key 'aux.weight'"):
        xc.set_weights(km, model.state_dict())
    assert xc.set_weights(km, model.state_dict(), strict=False) == ["aux.bias", "aux.weight"]
    with pytest.raises(xc.WeightError, match="missing"):  # missing keys are still an error
        xc.set_weights(km, {"aux.weight": model.aux.weight}, strict=False)


def test_root_parameters_keep_their_own_keys(both_backends):
    """Parameters of the model's root used through F.conv2d (keys ``w`` and ``b``, no module of their own) are
    a Conv2d under a key of its own whose ``keys`` name them: the source's state_dict loads into the ported
    model strictly, in both frameworks, and computes the same."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = nn.Parameter(torch.randn(4, 3, 3, 3)), nn.Parameter(torch.randn(4))
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(F.relu(F.conv2d(x, self.w, self.b, padding=1)))

    model = Root().eval()
    spec = xc.from_torch(model, (3, 6, 6))
    assert spec[0].keys == (("bias", "b"), ("weight", "w")) and "keys={'bias': 'b', 'weight': 'w'}" in repr(spec)
    assert xc.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype("float32")
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    for to in ("torch", "tf"):
        ported = xc.port(model, to, (3, 6, 6))
        other = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
        assert xc.set_weights(ported, other) == []  # strict, the source's own keys
        xc.set_weights(ported, model.state_dict())
        assert max_rel_diff(expect, xc.predict(ported, x)) <= xc.testing.TOLERANCE["float32"]
    with pytest.raises(xc.WeightError, match="missing 'conv2d.weight'"):  # the key is still required
        xc.set_weights(ported, {k: v for k, v in model.state_dict().items() if k != "w"})


def test_weights_shared_through_views_and_clashing_keys_are_refused(both_backends):
    """One parameter used by two convs through views (tied weights), a canonical key that is the source's key
    of another tensor, and a buffer times a map (not a learned scale) are refused, never ported untied or
    loaded from the wrong tensor."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(108))

        def forward(self, x):
            return F.conv2d(x, self.w.view(4, 3, 3, 3)) + F.conv2d(x, self.w.view(4, 3, 3, 3))

    with pytest.raises(xc.UnsupportedLayerError, match="shared weights"):
        xc.from_torch(Tied(), (3, 6, 6))

    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.blk = nn.Module()
            self.blk.gamma = nn.Parameter(torch.rand(4))
            self.blk.layer_scale = nn.Parameter(torch.full((4, 1, 1), -7.0))  # unused, but in the state_dict

        def forward(self, x):
            return self.conv(x) * self.blk.gamma.view(1, -1, 1, 1)

    with pytest.raises(xc.UnsupportedLayerError, match="not the model's own 'blk.layer_scale'"):
        xc.from_torch(Clash(), (3, 6, 6))

    class Buffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.register_buffer("scale", torch.rand(4, 1, 1), persistent=False)

        def forward(self, x):
            return self.conv(x) * self.scale

    with pytest.raises(xc.UnsupportedLayerError, match="not a parameter"):
        xc.from_torch(Buffer(), (3, 6, 6))


def test_source_keys_are_checked_in_the_spec(both_backends):
    with pytest.raises(xc.SpecError, match="'scale', which is not one of its weights"):
        xc.infer(xc.Sequential(xc.Conv2d(3, 4, 1, keys={"scale": "s"}), input_shape=(3, 2, 2)))
    with pytest.raises(xc.SpecError, match="already the key of another weight"):
        xc.infer(
            xc.Sequential(xc.Conv2d(3, 4, 1, keys={"weight": "1.weight"}), xc.Conv2d(4, 4, 1), input_shape=(3, 2, 2))
        )
    with pytest.raises(xc.SpecError, match="keys must map parameter names"):
        xc.Conv2d(3, 4, 1, keys={"weight": ""})


@pytest.mark.parametrize("form", ["view", "unsqueeze", "channels_last"])
def test_layer_scales_of_any_name_and_shape_port(both_backends, form):
    """A learned per-channel scale under its own name: timm's ``gamma.reshape(1, -1, 1, 1)``, Hugging Face's
    ``layer_scale.unsqueeze(-1).unsqueeze(-1)`` (PoolFormer) and ``layer_scale_parameter * x`` on a
    channels-last tensor (ConvNeXt). The source's (C,) parameter loads into the ported (C, 1, 1) one."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.linear = nn.Linear(4, 4) if form == "channels_last" else None
            self.gamma = nn.Parameter(torch.rand(4) + 0.5)

        def forward(self, x):
            y = self.conv(x)
            if form == "view":
                return y.mul(self.gamma.reshape(1, -1, 1, 1))
            if form == "unsqueeze":
                return self.gamma.unsqueeze(-1).unsqueeze(-1) * y
            return (self.gamma * self.linear(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)

    model = Block().eval()
    spec = xc.from_torch(model, (3, 6, 8))  # (C, H, W) = (4, 4, 6) after the conv: the axes told apart
    scale = [layer for layer in spec if layer.kind == "LayerScale"]
    assert len(scale) == 1 and scale[0].keys == (("layer_scale", "gamma"),)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 8)).astype("float32")
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    km = xc.port(model, "tf", (3, 6, 8))
    with torch.no_grad():
        model.gamma.mul_(-1)  # new values through the source's own key
        flipped = model(torch.from_numpy(x)).numpy()
    xc.set_weights(km, model.state_dict())
    assert max_rel_diff(flipped, xc.predict(km, x)) <= xc.testing.TOLERANCE["float32"]
    assert max_rel_diff(expect, flipped) > 0.1


@pytest.mark.parametrize("form", ["ReflectionPad2d", "ReplicationPad2d", "CircularPad2d", "F.pad reflect", "F.pad"])
def test_pads_of_every_mode_fold_into_the_conv(both_backends, form):
    import torch.nn.functional as F
    from torch import nn

    pads = {
        "ReflectionPad2d": nn.ReflectionPad2d((1, 2, 0, 1)),
        "ReplicationPad2d": nn.ReplicationPad2d(1),
        "CircularPad2d": nn.CircularPad2d((2, 0, 1, 1)),
    }

    class Functional(nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.mode, self.conv = mode, nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(F.pad(x, (1, 2, 0, 1), mode=self.mode))

    if form in pads:
        model = nn.Sequential(pads[form], nn.Conv2d(3, 4, 3, stride=2))
    else:
        model = Functional("reflect" if "reflect" in form else "constant")
    model.eval()
    for dtype in ("float32", "float64"):
        model = model.double() if dtype == "float64" else model.float()
        tm = xc.port(model, "torch", (3, 9, 8))
        km = xc.port(model, "tf", (3, 9, 8))
        for x in _batches((3, 9, 8), dtype):
            tol = 1e-5 if dtype == "float32" else 1e-10
            assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < tol
            assert max_rel_diff(_torch_out(model, x), _torch_out(tm, x)) < tol


def test_pads_that_cannot_fold_are_refused(both_backends):
    from torch import nn

    with pytest.raises(xc.UnsupportedLayerError, match="pads in 'reflect' mode; .*right before a Conv2d"):
        xc.from_torch(nn.Sequential(nn.ReflectionPad2d(1), nn.ReLU()), (3, 8, 8))
    with pytest.raises(xc.UnsupportedLayerError, match="pads in 'replicate' mode"):
        xc.from_torch(nn.Sequential(nn.ReplicationPad2d(1), nn.Conv2d(3, 4, 3, padding=1)), (3, 8, 8))
    with pytest.raises(xc.UnsupportedLayerError, match=r"'0' \(ConstantPad2d\): only a constant pad of zeros"):
        xc.from_torch(nn.Sequential(nn.ConstantPad2d(1, 0.5), nn.Conv2d(3, 4, 3)), (3, 8, 8))


@pytest.mark.parametrize(("size", "kernel", "stride"), [(8, 3, 2), (9, 3, 2), (7, 2, 2), (8, 5, 2), (9, 3, 1)])
def test_minus_inf_pads_fold_into_the_max_pool_after_them(both_backends, size, kernel, stride):
    """timm's "same" max pooling pads with -inf in forward (more at the bottom and right), then pools without
    padding: the pool's own padding and ceil_mode give the same windows, so the pad folds into it."""
    import torch
    from torch import nn

    from .zoo_support import import_torchvision

    import_torchvision()  # (timm imports torchvision: through the shim beside the CPU torch)
    from timm.layers import create_pool2d

    model = nn.Sequential(nn.Conv2d(3, 4, 1), create_pool2d("max", kernel, stride=stride, padding="same")).eval()
    spec = xc.from_torch(model, (3, size, size))
    assert [i.kind for i in xc.infer(spec)] == ["Conv2d", "MaxPool2d"]
    km = xc.port(model, "tf", (3, size, size))  # verify=True
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype("float32") - 3  # (a pad of 0 would win)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE["float32"]


@pytest.mark.parametrize("pad", [(-1, 1, -1, 1), (1, -1, 0, -2), (-1, -1, -1, -1)])
def test_zero_pads_with_negative_sizes_crop(both_backends, pad):
    """``nn.ZeroPad2d((-1, 1, -1, 1))`` (NASNet's shift by one pixel) crops the sides of negative size and pads
    the others: Narrows of H and W, then a ZeroPad2d of the rest, exact in both frameworks."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ZeroPad2d(pad), nn.AvgPool2d(1, stride=2), nn.Conv2d(4, 2, 1))
    model = model.eval()
    kinds = [i.kind for i in xc.infer(xc.from_torch(model, (3, 8, 9)))]
    assert kinds[1:3] == ["Narrow", "Narrow"] and ("ZeroPad2d" in kinds) == (max(pad) > 0)
    km = xc.port(model, "tf", (3, 8, 9))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 9)).astype("float32")
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE["float32"]
    with pytest.raises(xc.UnsupportedLayerError, match="crops the whole map away"):
        xc.from_torch(nn.Sequential(nn.ZeroPad2d((0, 0, -4, -4)), nn.Conv2d(3, 2, 1)), (3, 8, 8))


def test_minus_inf_pads_that_are_no_max_pool_padding_are_refused(both_backends):
    import torch.nn.functional as F
    from torch import nn

    class Pad(nn.Module):
        def __init__(self, pad, then):
            super().__init__()
            self.pad, self.then = pad, then

        def forward(self, x):
            return self.then(F.pad(x, self.pad, value=float("-inf")))

    for pad, then in [((2, 2, 2, 2), nn.MaxPool2d(3)), ((1, 1, 1, 1), nn.Conv2d(3, 4, 3))]:
        with pytest.raises(xc.UnsupportedLayerError, match="pads with -inf; that is supported only right before"):
            xc.from_torch(Pad(pad, then), (3, 8, 8))


def test_global_and_adaptive_max_pooling_port_both_ways(both_backends):
    import keras
    import torch.nn.functional as F
    from torch import nn

    class Functional(nn.Module):
        def forward(self, x):
            return F.adaptive_max_pool2d(x, (2, 4)).flatten(1)

    for model in (
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2)),
        nn.Sequential(nn.AdaptiveMaxPool2d(4)),
        Functional(),
    ):
        km = xc.port(model.eval(), "tf", (3, 8, 8))
        for x in _batches((3, 8, 8)):
            assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < 1e-5
    with pytest.raises(xc.UnsupportedLayerError, match="8x8 map to 3x3: supported where the output size divides"):
        xc.from_torch(nn.Sequential(nn.AdaptiveMaxPool2d(3)), (3, 8, 8))
    for keep in (False, True):
        km = keras.Sequential(
            [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalMaxPooling2D(keepdims=keep)]
        )
        tm = xc.port(km, "torch")
        for x in _batches((3, 8, 8)):
            a = np.asarray(km(xc.to_nhwc(x))).reshape(2 if len(x) == 2 else 1, -1)
            assert max_rel_diff(a, _torch_out(tm, x).reshape(len(x), -1)) < 1e-5


def test_flatten_spellings_with_the_batch_inferred(both_backends):
    import torch
    from torch import nn

    class View(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(144, 2)

        def forward(self, x):
            return self.fc(self.conv(x).view(-1, 4 * 6 * 6))

    class FlattenAll(View):
        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1, 3))

    class WrongView(View):  # view(-1, 72) folds two samples' halves together: not a flatten
        def forward(self, x):
            return self.conv(x).view(-1, 72)

    for cls in (View, FlattenAll):
        model = cls().eval()
        km = xc.port(model, "tf", (3, 8, 8))
        x = _batches((3, 8, 8))[0]
        assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < 1e-5
    with pytest.raises(xc.UnsupportedLayerError, match="'view'"):
        xc.from_torch(WrongView().eval(), (3, 8, 8))


def test_keras_rescaling_is_read_as_keras_broadcasts_it(both_backends):
    """Rescaling(scale of shape (3, 1, 1)) scales the rows of an NHWC map, not the channels: refused; one value per
    channel, in any shape that broadcasts along the last axis, ports."""
    import keras

    for scale in ([0.5, 2.0, -1.0], np.array([[[0.5, 2.0, -1.0]]]), 0.25, [3.0]):
        km = keras.Sequential([keras.Input((4, 5, 3)), keras.layers.Rescaling(scale, offset=0.5)])
        tm = xc.port(km, "torch")
        for x in _batches((3, 4, 5)):
            assert max_rel_diff(_keras_out(km, x), _torch_out(tm, x)) < 1e-6
    km = keras.Sequential([keras.Input((3, 5, 3)), keras.layers.Rescaling(np.array([0.5, 2.0, -1.0]).reshape(3, 1, 1))])
    with pytest.raises(xc.UnsupportedLayerError, match=r"shape \(3, 1, 1\) broadcasts over other axes"):
        xc.from_keras(km)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_group_norm_instance_norm_and_prelu_port_both_ways(both_backends, dtype):
    import keras
    import torch
    from torch import nn

    tol = 1e-5 if dtype == "float32" else 1e-10
    models = [
        nn.Sequential(nn.Conv2d(3, 6, 3), nn.GroupNorm(3, 6, eps=1e-3), nn.PReLU(6), nn.GroupNorm(1, 6, affine=False)),
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True), nn.PReLU()),
        nn.Sequential(nn.InstanceNorm2d(3), nn.Flatten(), nn.Linear(192, 5), nn.PReLU(5), nn.PReLU()),
    ]
    for model in models:
        model = model.double() if dtype == "float64" else model
        with torch.no_grad():  # gains, shifts and slopes that are not the initial ones
            for p in model.parameters():
                p.uniform_(-1.5, 1.5)
        model.eval()
        km = xc.port(model, "tf", (3, 8, 8))
        back = xc.port(km, "torch")
        for x in _batches((3, 8, 8), dtype):
            assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < tol
            assert max_rel_diff(_torch_out(model, x), _torch_out(back, x)) < tol
        assert set(xc.get_weights(back)) == set(model.state_dict())
    with pytest.raises(xc.SpecError, match="groups holds one value"):  # normalises to 0; torch refuses it
        xc.infer(xc.Sequential(xc.GroupNorm(2, 2), input_shape=(2, 1, 1)))
    with pytest.raises(xc.UnsupportedLayerError, match="InstanceNorm2d with track_running_stats=True"):
        xc.from_torch(nn.Sequential(nn.InstanceNorm2d(3, track_running_stats=True)), (3, 8, 8))
    km = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.GroupNormalization(2, epsilon=1e-3),
            keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomUniform(-1, 1)),
            keras.layers.PReLU(shared_axes=[1, 2, 3], alpha_initializer="ones"),
        ]
    )
    tm = xc.port(km, "torch")
    x = _batches((3, 8, 8))[0]
    assert max_rel_diff(_keras_out(km, x), _torch_out(tm, x)) < 1e-5
    per_pixel = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.PReLU()])
    with pytest.raises(xc.UnsupportedLayerError, match=r"PReLU with slopes of shape \(8, 8, 3\)"):
        xc.from_keras(per_pixel)


def test_functional_dropout_follows_the_module_mode_or_is_refused(both_backends):
    import torch.nn.functional as F
    from torch import nn

    class Mode(nn.Module):  # the idiom: dropout in training only
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return F.dropout(self.conv(x), 0.3, training=self.training)

    class Never(Mode):
        def forward(self, x):
            return F.dropout(self.conv(x), 0.3, training=False)

    class Always(Mode):  # F.dropout's default training=True: it drops in eval too
        def forward(self, x):
            return F.dropout(self.conv(x), 0.3)

    for cls, kind in ((Mode, "Dropout"), (Never, "Identity")):
        for training in (False, True):
            model = cls().train(training)
            spec = xc.from_torch(model, (3, 8, 8))
            assert [i.kind for i in xc.infer(spec)] == ["Conv2d", kind], (cls, training)
            assert model.training == training  # the second trace put the mode back
    with pytest.raises(xc.UnsupportedLayerError, match="dropout"):
        xc.from_torch(Always().eval(), (3, 8, 8))


def test_subtract_ports_both_ways_in_order(both_backends):
    """a - b keeps its order (b - a is caught): torch's ``-``, ``torch.sub``, Keras' Subtract and ``x - y``."""
    import keras
    import torch
    from torch import nn

    class Centered(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            y = self.conv(x)
            return y - self.pool(y)

    class Sub(Centered):
        def forward(self, x):
            y = self.conv(x)
            return torch.sub(self.pool(y), y)

    for cls in (Centered, Sub):
        model = cls().eval()
        km = xc.port(model, "tf", (3, 8, 8))
        for x in _batches((3, 8, 8)):
            assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < 1e-5
        assert xc.from_torch(model, (3, 8, 8)).layers[-1].kind == "Subtract"
    inp = keras.Input((8, 8, 3))
    a, b = keras.layers.Conv2D(4, 3)(inp), keras.layers.Conv2D(4, 3)(inp)
    for out in (keras.layers.Subtract()([a, b]), b - a):
        km = keras.Model(inp, out)
        tm = xc.port(km, "torch")
        x = _batches((3, 8, 8))[0]
        assert max_rel_diff(_keras_out(km, x), _torch_out(tm, x)) < 1e-5


def test_a_subtraction_with_its_operands_swapped_is_caught(both_backends, monkeypatch):
    from xconv.backends import torch_backend

    spec = xc.Sequential(xc.Subtract(xc.Conv2d(2, 2, 1), xc.Identity()), input_shape=(2, 4, 4))
    real = torch_backend._join
    monkeypatch.setattr(
        torch_backend,
        "_join",
        lambda info, args, *mode: args[1] - args[0] if info.kind == "Subtract" else real(info, args, *mode),
    )
    from xconv.testing import assert_equivalent

    with pytest.raises(AssertionError):
        assert_equivalent(spec, backends=("numpy", "torch"))


def test_functional_batch_norm_on_the_module_own_tensors(both_backends):
    """timm's BatchNormAct2d: a BatchNorm2d subclass whose forward calls F.batch_norm on its own tensors with
    training=self.training, then its activation. Imported as that module's BatchNorm (its state_dict keys), the
    activation after it; the second trace in training mode leaves the batch counter as it was."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class BatchNormAct(nn.BatchNorm2d):
        def __init__(self, c):
            super().__init__(c)
            self.drop, self.act = nn.Identity(), nn.SiLU()

        def forward(self, x):
            if self.training and self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            x = F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1, self.eps
            )
            return self.act(self.drop(x))

    class WrongEps(BatchNormAct):
        def forward(self, x):
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1, 1e-3
            )

    class AlwaysBatch(BatchNormAct):
        def forward(self, x):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, 0.1, self.eps)

    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct(4), nn.Flatten(), nn.Linear(144, 2)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    spec, weights = xc.from_torch(model, (3, 8, 8), return_weights=True)
    assert set(weights) == set(model.state_dict())
    assert [i.kind for i in xc.infer(spec)][:3] == ["Conv2d", "BatchNorm2d", "SiLU"]  # (its drop is an Identity)
    assert float(model[1].num_batches_tracked) == 0.0
    km = xc.port(model, "tf", (3, 8, 8))
    for x in _batches((3, 8, 8)):
        assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < 1e-5
    for cls, match in ((WrongEps, "the module's own eps"), (AlwaysBatch, "training=self.training")):
        bad = nn.Sequential(nn.Conv2d(3, 4, 3), cls(4)).eval()
        with pytest.raises(xc.UnsupportedLayerError, match=match):
            xc.from_torch(bad, (3, 8, 8))


def test_what_the_trace_does_not_record_is_refused(both_backends):
    """torch.fx records ``out += y`` as ``out + y``: another name for ``out`` that eager execution updates keeps
    the old value in the graph. The exported program records the write itself, and every later reader reads
    its result, so such models import exactly; in the torch.fx front-end (for modules that cannot be exported)
    the traced graph is run against the forward itself on one batch, so they are refused there, with
    verification on or off. Writes through ``.data`` are refused."""
    import torch
    from torch import nn

    from xconv.importers.torch_fx import _import_traced

    class Alias(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            out = self.c1(x)
            skip = out
            out += self.c2(out)  # in place: skip changes too
            return torch.cat([out, skip], 1)

    def residual_(t, branch):
        t += branch(t)  # a helper that updates its argument

    class IntoInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.head = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 4, 1)

        def forward(self, x):
            residual_(x, self.c)
            return self.head(x)

    class ThroughData(Alias):
        def forward(self, x):
            h = self.c1(x)
            h.data.clamp_(-0.1, 0.1)
            return self.c2(h)

    for cls in (Alias, IntoInput):
        model = cls().eval()
        km = xc.port(model, "tf", (3, 8, 8))
        for x in _batches((3, 8, 8)):
            assert max_rel_diff(_torch_out(model, x.copy()), _keras_out(km, x)) < 1e-5
        with pytest.raises(xc.UnsupportedLayerError, match="computes something else than the forward"):
            _import_traced(model, (3, 8, 8), None, "")
    for verify in (False, True):
        with pytest.raises(xc.UnsupportedLayerError, match="computes something else than the forward|view"):
            xc.port(ThroughData().eval(), "tf", (3, 8, 8), verify=verify)
    plain = nn.Sequential(nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(3, 4, 3, padding=1)).eval()
    km = xc.port(plain, "tf", (3, 8, 8))  # writes into its input: each model is given its own copy
    x = _batches((3, 8, 8))[0]
    assert max_rel_diff(_torch_out(plain, x.copy()), _keras_out(km, x)) < 1e-5

    class Swish(nn.Module):  # in place, read before the write: the reader keeps the old values, as in eager
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            h = self.c(x)
            return h.mul_(torch.sigmoid(h))

    km = xc.port(Swish().eval(), "tf", (3, 8, 8))


def test_a_forward_that_writes_its_own_tensors_through_data_is_refused_and_restored(both_backends):
    import torch
    from torch import nn

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls.data.add_(1)
            return self.c(x)

    class Clip(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            self.c.weight.data.clamp_(-0.05, 0.05)
            return self.c(x)

    model = Counter().eval()
    with pytest.raises(xc.UnsupportedLayerError, match="own buffer 'calls'|own tensor 'calls'"):
        xc.port(model, "tf", (3, 8, 8))
    assert float(model.calls) == 0.0
    clip = Clip().eval()
    before = clip.c.weight.detach().clone()
    with pytest.raises(xc.UnsupportedLayerError, match="own tensor 'c.weight'"):
        xc.port(clip, "tf", (3, 8, 8))
    assert torch.equal(before, clip.c.weight)  # refused before anything ran


def test_a_model_that_cannot_be_deep_copied_ports(both_backends):
    import threading

    import torch
    from torch import nn

    class WithLock(nn.Module):
        def __init__(self, extra):
            super().__init__()
            self.c, self.extra = nn.Conv2d(3, 4, 3, padding=1), extra

        def forward(self, x):
            return self.c(x).relu()

    for extra in (torch.Generator(), threading.Lock()):
        xc.port(WithLock(extra).eval(), "tf", (3, 8, 8))


def test_hooks_on_a_built_torch_model_are_refused_by_port_and_save(both_backends, tmp_path):
    tm = xc.build(xc.Sequential(xc.Conv2d(3, 4, 3, padding=1), xc.ReLU(), input_shape=(3, 8, 8)), "torch", seed=0)
    handle = tm.register_forward_hook(lambda mod, inp, out: out * 2)
    with pytest.raises(xc.UnsupportedLayerError, match="has forward hooks"):
        xc.port(tm, "tf", verify=False)
    with pytest.raises(xc.UnsupportedLayerError, match="has forward hooks"):
        xc.save(tmp_path / "m.safetensors", tm)
    handle.remove()
    xc.save(tmp_path / "m.safetensors", tm)


def test_mode_dependent_calls_on_other_tensors_of_the_same_shape_are_refused(both_backends):
    """A forward that normalises (or drops) one branch in training and another of the same shape in eval: the
    calls of the two modes are not the same call, however alike their shapes, and are refused, never ported with
    the layer on the wrong branch."""
    import torch.nn.functional as F
    from torch import nn

    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.bn1, self.bn2 = (
                nn.Conv2d(3, 4, 1),
                nn.Conv2d(3, 4, 1),
                nn.BatchNorm2d(4),
                nn.BatchNorm2d(4),
            )

        def forward(self, x):
            a, b = self.c1(x), self.c2(x)
            if self.training:
                b = F.batch_norm(b, self.bn2.running_mean, self.bn2.running_var, self.bn2.weight, self.bn2.bias, True)
            else:
                a = F.batch_norm(a, self.bn1.running_mean, self.bn1.running_var, self.bn1.weight, self.bn1.bias, False)
            return a + b

    class Drops(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

        def forward(self, x):
            a, b = self.c1(x), self.c2(x)
            if self.training:
                b = F.dropout(b, 0.5, True)
            else:
                a = F.dropout(a, 0.5, False)
            return a + b

    with pytest.raises(xc.UnsupportedLayerError, match="F.batch_norm is supported on"):
        xc.from_torch(Norms().eval(), (3, 4, 4))
    with pytest.raises(xc.UnsupportedLayerError, match="calls dropout differently in training and in eval"):
        xc.from_torch(Drops().eval(), (3, 4, 4))


def test_dropout_calls_that_differ_between_the_modes_are_refused(both_backends):
    import torch.nn.functional as F
    from torch import nn

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            h = self.c(x)
            if self.training:
                return self.c2(F.dropout(h, 0.5, True))
            return F.dropout(self.c2(h), 0.1, False)

    with pytest.raises(xc.UnsupportedLayerError, match="calls dropout differently in training and in eval"):
        xc.from_torch(Branches().eval(), (3, 8, 8))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_arithmetic_with_numbers_is_a_rescaling(both_backends, dtype):
    import keras
    from torch import nn

    class Arithmetic(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.c(x)
            return 1.5 * (2.0 - (y * 0.5 + 1) / 3) - 1  # c * x, c - x, x * c, x + c, x / c, x - c

    model = Arithmetic().eval()
    model = model.double() if dtype == "float64" else model
    km = xc.port(model, "tf", (3, 8, 8))
    kinds = [i.kind for i in xc.infer(xc.from_torch(model, (3, 8, 8)))]
    assert kinds == ["Conv2d", *["Rescaling"] * 6]
    tol = 1e-5 if dtype == "float32" else 1e-10
    for x in _batches((3, 8, 8), dtype):
        assert max_rel_diff(_torch_out(model, x), _keras_out(km, x)) < tol
    with pytest.raises(xc.UnsupportedLayerError, match="division by a number|reciprocal"):

        class Reciprocal(Arithmetic):
            def forward(self, x):
                return 1.0 / self.c(x)

        xc.from_torch(Reciprocal().eval(), (3, 8, 8))
    inp = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3)(inp)
    k = keras.Model(inp, (y * 0.5 + 1.0) / 4.0 - 2.0)
    tm = xc.port(k, "torch")
    x = _batches((3, 8, 8))[0]
    assert max_rel_diff(_keras_out(k, x), _torch_out(tm, x)) < 1e-5


def test_prelu_gradient_at_zero_is_torch_s_in_keras(both_backends):
    """Keras' PReLU is relu(x) - alpha relu(-x), whose gradient at exactly 0 is 0; torch's is alpha. A strided
    transposed conv with a zero bias puts exact zeros in front of it (found by the property tests: 0.43 off)."""
    from xconv.testing import assert_equivalent

    spec = xc.Sequential(
        xc.BatchNorm2d(1), xc.ConvTranspose2d(1, 1, 1, stride=(2, 1)), xc.PReLU(1), input_shape=(1, 2, 1)
    )
    for dtype in ("float64", "float32"):
        assert_equivalent(spec, dtype=dtype)  # xconv's init: zero biases


def test_a_tensor_hung_on_a_parameter_free_module_is_not_its_weight(both_backends):
    """A buffer a user put on an nn.ReLU (here the conv's own bias) is not a ReLU weight: the model imports with
    the conv's weights only, as the ReLU computes nothing with it (the tensor being shared, the conv is read
    from the exported program as its functional call, with keys of its own)."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    model[1].register_buffer("kept", model[0].bias)
    _, weights = xc.from_torch(model, (3, 6, 6), return_weights=True)
    assert len(weights) == 2 and not any("kept" in k for k in weights)
    ported = xc.port(model, "tf", (3, 6, 6))
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype("float32")
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(ported, x)) <= 1e-6
