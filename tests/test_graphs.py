"""Graphs: residual, concatenating and gating networks as specs, built natively, imported and proven like chains."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv import layout
from xconv.testing import assert_equivalent, max_rel_diff, strategies, train_parity


def basic_block(c_in, c_out, stride):
    body = xc.Sequential(
        xc.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        xc.BatchNorm2d(c_out),
        xc.ReLU(),
        xc.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        xc.BatchNorm2d(c_out),
    )
    skip = (
        xc.Identity()
        if stride == 1 and c_in == c_out
        else xc.Sequential(xc.Conv2d(c_in, c_out, 1, stride=stride, bias=False), xc.BatchNorm2d(c_out))
    )
    return xc.Sequential(xc.Add(body, skip), xc.ReLU())


def resnet(size=16, width=8):
    return xc.Sequential(
        xc.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
        xc.BatchNorm2d(width),
        xc.ReLU(),
        xc.MaxPool2d(3, stride=2, padding=1),
        basic_block(width, width, 1),
        basic_block(width, 2 * width, 2),
        xc.AdaptiveAvgPool2d(1),
        xc.Flatten(),
        xc.Linear(2 * width, 10),
        input_shape=(3, size, size),
    )


SE = xc.Sequential(  # squeeze-excitation gate, a concat of different-depth branches, a flat concat
    xc.Conv2d(3, 6, 3, padding=1),
    xc.Multiply(xc.Identity(), xc.Sequential(xc.AdaptiveAvgPool2d(1), xc.Conv2d(6, 6, 1), xc.Sigmoid())),
    xc.Concat(xc.Identity(), xc.Sequential(xc.Conv2d(6, 2, 3, padding="same"), xc.ReLU(), xc.Conv2d(2, 3, 1))),
    xc.Concat(xc.Flatten(), xc.Sequential(xc.Conv2d(9, 2, 1), xc.Flatten())),
    xc.Linear(None, 4),
    input_shape=(3, 5, 4),
)


# ---- specs ----


def test_positional_and_named_keys():
    spec = xc.Sequential(
        xc.Conv2d(3, 4, 3, padding=1),
        xc.Add(xc.Sequential(xc.Conv2d(4, 4, 3, padding=1), xc.BatchNorm2d(4)), xc.Identity()),
        xc.Add(xc.Conv2d(4, 4, 1), xc.Identity()),
        xc.Conv2d(4, 2, 1, name="head.proj"),
        input_shape=(3, 6, 6),
    )
    keys = list(xc.weights.expected_shapes(xc.infer(spec)))
    assert keys == [
        "0.weight",
        "0.bias",
        "1.0.0.weight",
        "1.0.0.bias",
        "1.0.1.weight",
        "1.0.1.bias",
        "1.0.1.running_mean",
        "1.0.1.running_var",
        "1.0.1.num_batches_tracked",
        "2.0.weight",
        "2.0.bias",
        "head.proj.weight",
        "head.proj.bias",
    ]


def test_chains_keep_their_keys_and_nested_named_sequentials_prefix_them():
    chain = xc.Sequential(
        xc.Conv2d(1, 2, 3), xc.Sequential(xc.ReLU(), xc.Flatten()), xc.Linear(None, 3), input_shape=(1, 4, 4)
    )
    assert [i.key for i in xc.infer(chain)] == ["0", "1", "2", "3"]
    named = xc.Sequential(xc.Sequential(xc.Conv2d(1, 2, 3), xc.ReLU(), name="stem"), input_shape=(1, 4, 4))
    assert [i.key for i in xc.infer(named)] == ["stem.0", "stem.1"]


def test_combinator_errors_name_the_path_and_shapes():
    with pytest.raises(xc.SpecError, match=r"Add 1: dimensions must be equal or 1.*\(4, 6, 6\), \(3, 6, 6\)"):
        xc.infer(xc.Sequential(xc.Conv2d(3, 4, 1), xc.Add(xc.Identity(), xc.Conv2d(4, 3, 1)), input_shape=(3, 6, 6)))
    with pytest.raises(xc.SpecError, match="same rank"):
        xc.infer(xc.Sequential(xc.Add(xc.Identity(), xc.Flatten()), input_shape=(3, 2, 2)))
    with pytest.raises(xc.SpecError, match="Concat 0: outputs must agree in every dimension but dim 1"):
        xc.infer(xc.Sequential(xc.Concat(xc.Identity(), xc.MaxPool2d(2)), input_shape=(3, 4, 4)))
    with pytest.raises(xc.SpecError, match="at least two branches"):
        xc.Add(xc.ReLU())
    with pytest.raises(xc.SpecError, match="batch axis"):
        xc.Concat(xc.ReLU(), xc.ReLU(), dim=0)
    with pytest.raises(xc.SpecError, match="no '/'"):
        xc.ReLU(name="a/b")
    with pytest.raises(xc.SpecError, match="the key 'x' names two parts"):
        xc.infer(xc.Sequential(xc.ReLU(name="x"), xc.ReLU(name="x"), input_shape=(2,)))
    with pytest.raises(xc.SpecError, match="the key '0' names two parts"):  # a name equal to a positional key
        xc.infer(xc.Sequential(xc.ReLU(), xc.ReLU(name="0"), input_shape=(2,)))
    with pytest.raises(xc.SpecError, match="carry no input shape"):
        xc.Add(xc.Sequential(xc.ReLU(), input_shape=(2,)), xc.ReLU())


def test_broadcasting_gate_and_flat_orders():
    infos = xc.infer(SE)
    assert [i.output_shape for i in infos if i.is_join] == [(6, 5, 4), (9, 5, 4), (9 * 20 + 2 * 20,)]
    # features flattened from different maps cannot be added: their NHWC orders differ
    with pytest.raises(xc.SpecError, match="different orders"):
        xc.infer(
            xc.Sequential(
                xc.Add(xc.Flatten(), xc.Sequential(xc.Conv2d(2, 2, 1), xc.Flatten(), xc.Linear(None, 8))),
                input_shape=(2, 2, 2),
            )
        )


def test_nested_specs_round_trip_through_json_repr_and_hash():
    spec = resnet()
    back = xc.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and hash(back) == hash(spec)
    names = {k: getattr(xc, k) for k in (*xc.spec.LAYER_TYPES, "Sequential", "Add", "Concat", "Multiply")}
    assert eval(repr(SE), names) == SE
    v1 = {"format": "xconv.spec", "version": 1, "input_shape": [2], "layers": [{"kind": "ReLU"}]}
    assert xc.from_dict(v1) == xc.Sequential(xc.ReLU(), input_shape=(2,))


def test_summary_is_an_indented_tree():
    text = xc.summary(resnet(), print_fn=None)
    lines = text.splitlines()
    assert any(line.startswith("4 ") and " Add " in line for line in lines)
    assert any(line.startswith("    4.0.0 ") and "Conv2d(8, 8" in line for line in lines)  # two levels down
    assert "total parameters" in lines[-1] and "joins" in lines[-1]


@settings(
    max_examples=200, derandomize=True, phases=[Phase.generate], deadline=None, suppress_health_check=list(HealthCheck)
)
@given(spec=strategies.specs())
def _draw(spec):
    _draw.seen.append(any(i.is_join for i in xc.infer(spec)))


def test_at_least_thirty_percent_of_drawn_specs_hold_a_combinator():
    _draw.seen = []
    _draw()
    share = sum(_draw.seen) / len(_draw.seen)
    assert share >= 0.3, share


# ---- backends ----


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["resnet", "se-concat"])
def test_fixed_graphs_agree_in_all_backends(both_backends, name, dtype):
    spec = {"resnet": resnet(), "se-concat": SE}[name]
    rows = assert_equivalent(spec, dtype=dtype, seed=1)
    assert any(r.kind == "Add" or r.kind == "Multiply" for r in rows)


def test_torch_model_is_a_plain_module_with_the_canonical_keys(both_backends):
    import torch

    spec = resnet()
    tm = xc.build(spec, "torch", seed=0)
    assert list(tm.state_dict()) == list(xc.get_weights(tm))
    assert isinstance(tm, torch.fx.GraphModule) and not tm.training
    x = torch.randn(2, 3, 16, 16)
    traced = torch.jit.trace(tm, x)
    assert torch.allclose(traced(x), tm(x))
    exported = torch.export.export(tm, (x,))
    assert torch.allclose(exported.module()(x), tm(x))
    assert isinstance(xc.build(xc.Sequential(xc.ReLU(), input_shape=(2,)), "torch"), torch.nn.Sequential)


def test_keras_model_is_the_dag_and_saves(both_backends, tmp_path):
    import keras

    spec = resnet()
    km = xc.build(spec, "tf", seed=0)
    kinds = {type(layer).__name__ for layer in km.layers}
    assert "Add" in kinds and not kinds & {"Permute", "Transpose"}
    path = tmp_path / "m.keras"
    km.save(path)
    back = keras.models.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(km(x)))
    imported, weights = xc.from_keras(back, return_weights=True)
    assert [i.kind for i in xc.infer(imported)] == [i.kind for i in xc.infer(spec)]
    assert list(weights) == list(xc.get_weights(km))  # the same positional keys
    assert_equivalent(imported, weights, dtype="float32")


def test_relu_is_fused_only_when_it_is_the_one_reader(both_backends):
    spec = xc.Sequential(
        xc.Conv2d(2, 2, 3, padding=1),
        xc.Add(xc.ReLU(), xc.Identity()),
        xc.Conv2d(2, 2, 1),
        xc.ReLU(),
        input_shape=(2, 4, 4),
    )
    km = xc.build(spec, "tf")
    activations = {layer.name: getattr(layer, "activation", None) for layer in km.layers}
    assert activations["conv2d_0"].__name__ == "linear"  # its output also feeds the skip
    assert activations["conv2d_2"].__name__ == "relu"
    assert_equivalent(spec, dtype="float64")


def test_graph_checkpoints_round_trip(both_backends, tmp_path):
    tm = xc.build(SE, "torch", seed=3)
    xc.save(tmp_path / "se.safetensors", tm)
    km = xc.load_model(tmp_path / "se.safetensors", backend="tf")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype("float32")
    assert max_rel_diff(xc.predict(tm, x), xc.predict(km, x)) < 1e-5
    xc.transfer_weights(km, tm)
    for k, v in xc.get_weights(km).items():
        np.testing.assert_array_equal(v, xc.get_weights(tm)[k])


def test_training_parity_on_a_small_resnet(both_backends):
    result = train_parity(resnet(size=12, width=4), steps=5, batch=4, dtype="float64")
    assert result.max_param_diff <= 1e-9, result.param_diffs


# ---- the checker catches graph faults at the right node ----


def test_catches_swapped_concat_branches(both_backends, monkeypatch):
    from xconv.backends.tf import builders

    real = builders._join
    monkeypatch.setattr(builders, "_join", lambda info, args, dtype: real(info, args[::-1], dtype))
    with pytest.raises(AssertionError, match=r"first part at layer 2 \(Concat\), output"):
        assert_equivalent(SE, backends=("numpy", "tf"))


def test_catches_a_relu_fused_into_a_conv_whose_output_feeds_a_skip(both_backends, monkeypatch):
    from xconv.backends.tf import builders, run

    def greedy(infos):  # fuses whenever a ReLU reads the conv, whoever else does
        return {
            i.index: j.index
            for i in infos
            for j in infos
            if i.kind == "Conv2d" and j.kind == "ReLU" and j.inputs == (i.index,)
        }

    monkeypatch.setattr(builders, "fused_relus", greedy)
    monkeypatch.setattr(run, "fused_relus", greedy)
    spec = xc.Sequential(xc.Conv2d(2, 2, 3, padding=1), xc.Add(xc.ReLU(), xc.Identity()), input_shape=(2, 4, 4))
    # the skip reads the conv's output after the ReLU: the first node that sees it
    with pytest.raises(AssertionError, match=r"first part at layer 1.1 \(Identity\), output"):
        assert_equivalent(spec, backends=("numpy", "tf"))


def test_catches_a_fan_out_gradient_not_added_up(both_backends, monkeypatch):
    from xconv.backends import numpy_backend

    monkeypatch.setattr(numpy_backend, "_accumulate", lambda pending, source, g: pending.__setitem__(source, g))
    spec = xc.Sequential(
        xc.Conv2d(2, 2, 3, padding=1), xc.Add(xc.Conv2d(2, 2, 1), xc.Identity()), input_shape=(2, 4, 4)
    )
    with pytest.raises(AssertionError, match=r"first part at layer 0 \(Conv2d\), grad"):
        assert_equivalent(spec, backends=("numpy", "torch"))


def test_catches_a_block_permutation_dropped_after_a_concat(both_backends, monkeypatch):
    real = layout.flatten_permutation
    monkeypatch.setattr(
        layout,
        "flatten_permutation",
        lambda source: None if source is not None and not isinstance(source[0], int) else real(source),
    )
    with pytest.raises(AssertionError, match=r"first part at layer 3 \(Concat\), output"):
        assert_equivalent(SE, backends=("numpy", "tf"))


# ---- importing graphs ----


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class BasicBlock(nn.Module):  # torchvision's shape: one ReLU module called twice, out += identity
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.downsample = (
                None
                if stride == 1 and c_in == c_out
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            )

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class Dense(nn.Module):  # DenseNet's growing list of features
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Conv2d(4 + 2 * i, 2, 3, padding=1) for i in range(3)])

        def forward(self, x):
            features = [x]
            for layer in self.layers:
                features.append(F.relu(layer(torch.cat(features, 1)), inplace=True))
            return torch.cat(features, 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(3, 4, 3, stride=2))
            self.layer1 = nn.Sequential(BasicBlock(4, 4, 1), BasicBlock(4, 6, 2))
            self.squeeze = nn.Conv2d(6, 4, 1)
            self.dense = Dense()
            self.gate = nn.Conv2d(10, 10, 1)
            self.fc = nn.Linear(10, 3)

        def forward(self, x):
            x = self.dense(self.squeeze(self.layer1(self.stem(x))))
            x = x * torch.sigmoid(self.gate(F.adaptive_avg_pool2d(x, 1)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return Net, BasicBlock


def test_torch_graphs_import_with_the_state_dict_keys(both_backends):
    import torch

    Net, _ = _torch_modules()
    torch.manual_seed(0)
    m = Net().eval()
    for module in m.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
    spec, weights = xc.from_torch(m, (3, 16, 16), return_weights=True)
    assert list(weights) == list(m.state_dict())
    km = xc.port(m, to="tf", input_shape=(3, 16, 16))
    xc.set_weights(km, m.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expect = m(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) < 1e-5
    tm = xc.port(km, to="torch")
    assert max_rel_diff(expect, xc.predict(tm, x)) < 1e-5
    assert_equivalent(spec, weights, dtype="float64")


def test_torch_graph_refusals_name_the_node(both_backends):
    import torch
    from torch import nn

    class SharedConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(xc.UnsupportedLayerError, match="module 'conv' .* called more than once"):
        xc.from_torch(SharedConv(), (2, 4, 4))

    class NotNested(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            a = self.a(x)
            d = self.b(a) + self.c(x)
            return d + a * self.c(x).sigmoid()

    with pytest.raises(xc.UnsupportedLayerError, match="called more than once|feeds two branches|not a nesting"):
        xc.from_torch(NotNested(), (2, 4, 4))

    class InPlace(nn.Module):  # read before it is overwritten in place: the reader keeps the old values
        def forward(self, x):
            a = x.sigmoid()
            torch.relu_(x)
            return x + a

    spec = xc.from_torch(InPlace(), (2, 4, 4))
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    expected = np.maximum(x, 0) + 1 / (1 + np.exp(-x))
    assert np.abs(xc.predict(xc.build(spec, "numpy"), x) - expected).max() < 1e-12

    # a hook's work is recorded by the exported program: imported as what the hooked module computes
    m = nn.Sequential(nn.Conv2d(2, 2, 1))
    m.register_forward_hook(lambda mod, inp, out: out * 2)
    assert [i.kind for i in xc.infer(xc.from_torch(m, (2, 4, 4)))] == ["Conv2d", "Rescaling"]


def test_skip_past_a_join_is_expressed_exactly(both_backends):
    import torch
    from torch import nn

    class SkipPast(nn.Module):  # c = a + b; d = c + a
        def __init__(self):
            super().__init__()
            self.f = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, a):
            c = a + self.f(a)
            return c + a

    m = SkipPast().eval()
    km = xc.port(m, to="tf", input_shape=(2, 5, 5))
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    with torch.no_grad():
        assert max_rel_diff(m(torch.from_numpy(x)).numpy(), xc.predict(km, x)) < 1e-5


def test_keras_graphs_import(both_backends):
    import keras

    inp = keras.Input((8, 8, 3))
    h = keras.layers.ZeroPadding2D(1)(inp)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="stem")(h)
    b = keras.layers.Conv2D(4, 3, padding="same", name="body")(h)
    b = keras.layers.BatchNormalization(epsilon=1.001e-5)(b)
    h = keras.layers.Add(name="res")([h, b])
    g = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    g = keras.layers.Conv2D(4, 1, activation="sigmoid")(g)
    h = keras.layers.Multiply()([h, g])
    h = keras.layers.Concatenate()([h, keras.layers.MaxPooling2D(3, 1, padding="same")(h)])
    h = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(h)
    h = keras.layers.MaxPooling2D(2)(h)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    spec, weights = xc.from_keras(model, return_weights=True)
    assert "stem.weight" in weights and "body.weight" in weights
    assert [i.kind for i in xc.infer(spec)].count("ZeroPad2d") == 1  # the first folds into the conv
    tm = xc.port(model, to="torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert max_rel_diff(np.asarray(model(xc.to_nhwc(x))), xc.predict(tm, x)) < 1e-5


@settings(max_examples=40, deadline=None)
@given(spec=strategies.specs(max_layers=4))
def test_random_graph_models_import_back_from_torch(both_backends, spec):
    """A torch model built from a random graph spec imports to the same function with the same keys."""
    tm = xc.build(spec, "torch", dtype="float64", seed=0)
    imported, weights = xc.from_torch(tm, spec.input_shape, return_weights=True)
    assert list(weights) == list(tm.state_dict())
    back = xc.build(imported, "numpy", dtype="float64")
    xc.set_weights(back, weights)
    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape))
    assert max_rel_diff(xc.predict(tm, x), xc.predict(back, x)) <= 1e-10


@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_training_mode_graphs_agree(both_backends, data):
    spec = data.draw(
        strategies.specs(
            max_layers=4, kinds=tuple(k for k in strategies.ALL_KINDS if k not in ("Dropout", "StochasticDepth"))
        )
    )
    x = data.draw(strategies.inputs(spec, training=True))
    assert_equivalent(spec, data.draw(strategies.weights(spec)), x, dtype="float64", training=True)
