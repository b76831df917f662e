"""Models with several outputs: ``Sequential(outputs=[...])`` returns the listed parts' outputs as a list, in
every backend; imports of models that return lists (timm's ``features_only``) or several dict entries."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xconv as xc
from xconv.graph import model_outputs
from xconv.testing import TOLERANCE, compare_layerwise, max_rel_diff, train_parity

from .zoo_support import FEATURES_ZOO, port_entry


def pyramid(outputs=("block", "act", "head", "side")):
    """A stem, a strided conv with a residual block, and a side conv reading the stem's activation again."""
    return xc.Sequential(
        xc.Conv2d(3, 4, 3, padding=1, name="stem"),
        xc.ReLU(name="act"),
        xc.Conv2d(4, 6, 3, stride=2, padding=1, name="c2"),
        xc.Add(xc.Conv2d(6, 6, 3, padding=1), xc.Identity(), name="block"),
        xc.Flatten(name="flat"),
        xc.Linear(None, 5, name="head"),
        xc.Use("act"),
        xc.Conv2d(4, 2, 1, name="side"),
        input_shape=(3, 8, 8),
        outputs=list(outputs),
    )


# ---- the spec ----


def test_outputs_round_trip_and_are_checked():
    spec = pyramid(("block", "act", "flat", "head", "side"))
    assert xc.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    names = {k: getattr(xc, k) for k in ("Sequential", "Conv2d", "ReLU", "Add", "Identity", "Flatten", "Linear", "Use")}
    assert eval(repr(spec), names) == spec
    assert "outputs" not in xc.Sequential(xc.ReLU(), input_shape=(1, 2, 2)).to_dict()
    assert [i.key for i in model_outputs(xc.infer(spec))] == ["block", "act", "flat", "head", "side"]
    with pytest.raises(xc.SpecError, match="only the top-level Sequential"):
        xc.Sequential(xc.Sequential(xc.ReLU(), outputs=["0"]))
    with pytest.raises(xc.SpecError, match="names 'act' twice"):
        pyramid(("act", "act", "side"))
    with pytest.raises(xc.SpecError, match="must be a list of part keys"):
        xc.Sequential(xc.ReLU(name="r"), outputs="r")
    with pytest.raises(xc.SpecError, match="non-empty list"):
        xc.Sequential(xc.ReLU(name="r"), outputs=[])
    with pytest.raises(xc.SpecError, match=r"names 'nope', which is no part's key.*act"):
        xc.infer(pyramid(("nope", "side")))
    with pytest.raises(xc.SpecError, match="is never read.*not one of the outputs"):
        xc.infer(pyramid(("act", "side")))  # the head is computed and returned by nothing
    same = xc.Sequential(
        xc.Sequential(xc.Conv2d(1, 1, 1, name="inner"), name="outer"), input_shape=(1, 2, 2), outputs=["outer", "inner"]
    )
    with pytest.raises(xc.SpecError, match="the same tensor"):
        xc.infer(same)
    summary = xc.summary(pyramid(), print_fn=None)
    assert "outputs: block, act, head, side" in summary


def test_every_backend_returns_the_list_and_agrees(both_backends):
    spec = pyramid()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    expected = [(6, 4, 4), (4, 8, 8), (5,), (2, 8, 8)]
    outs = {}
    for backend in ("numpy", "torch", "tf"):
        model = xc.build(spec, backend, seed=0, dtype="float64")
        outs[backend] = xc.predict(model, x)
        assert isinstance(outs[backend], list), backend
        assert [tuple(y.shape[1:]) for y in outs[backend]] == expected, backend
    for backend in ("torch", "tf"):
        assert max_rel_diff(outs["numpy"], outs[backend]) <= TOLERANCE["float64"]
    rows = compare_layerwise(spec, backends=("numpy", "torch", "tf"), dtype="float64")
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    calls = [r.key for r in rows if r.what == "model call"]
    assert calls == ["block", "act", "head", "side"]


def test_a_list_of_one_output_is_a_list(both_backends):
    spec = xc.Sequential(xc.Conv2d(1, 2, 1, name="c"), input_shape=(1, 3, 3), outputs=["c"])
    x = np.ones((1, 1, 3, 3))
    for backend in ("numpy", "torch", "tf"):
        y = xc.predict(xc.build(spec, backend, seed=0, dtype="float64"), x)
        assert isinstance(y, list) and len(y) == 1 and y[0].shape == (1, 2, 3, 3), backend


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_the_checker_catches_outputs_returned_in_another_order(both_backends, monkeypatch, backend):
    """The stem before and after its ReLU are two outputs of one shape: returned swapped, every layer still
    agrees, and only the model-call rows see it."""
    from xconv.backends import torch_backend
    from xconv.backends.tf import builders

    module = torch_backend if backend == "torch" else builders
    real = module.model_outputs

    def swapped(infos):
        out = real(infos)
        return [out[1], out[0], *out[2:]] if len(out) > 1 else out

    spec = pyramid(("stem", "act", "block", "head", "side"))
    monkeypatch.setattr(module, "model_outputs", swapped)
    rows = compare_layerwise(spec, backends=("numpy", backend), dtype="float64", grads=False)
    bad = [(r.key, r.what) for r in rows if not r.ok]
    assert bad == [("stem", "model call"), ("act", "model call")]


def test_gradients_sum_over_the_outputs():
    """The numpy backward of a model with several outputs takes one upstream per output; it matches finite
    differences of sum(output_i * upstream_i)."""
    spec = pyramid()
    model = xc.build(spec, "numpy", seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 8))
    ups = [rng.standard_normal(y.shape) for y in model(x)]
    with pytest.raises(ValueError, match="4 outputs, so the upstream gradient is a list of 4"):
        model.backward(x, ups[0])
    _, grads = model.backward(x, ups)
    key, at = "stem.weight", (1, 2, 0, 1)
    h = 1e-6

    def loss(delta):
        model.weights[key][at] += delta
        try:
            return sum(float((y * u).sum()) for y, u in zip(model(x), ups))
        finally:
            model.weights[key][at] -= delta

    numeric = (loss(h) - loss(-h)) / (2 * h)
    assert abs(numeric - grads[key][at]) <= 1e-6 * max(1.0, abs(numeric))


def test_train_parity_refuses_several_outputs():
    with pytest.raises(xc.SpecError, match="returns 4"):
        train_parity(pyramid())


# ---- imports ----


def _torch_net():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 6, 3, stride=2, padding=1)
            self.c = nn.Conv2d(6, 8, 3, stride=2, padding=1)
            self.side = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x1 = torch.relu(self.a(x))
            x2 = self.b(x1)
            return [x1, x2, self.side(x1), self.c(torch.relu(x2))]

    torch.manual_seed(0)
    return Net().eval()


def test_a_torch_model_returning_a_list_ports_both_ways(both_backends):
    net = _torch_net()
    spec = xc.from_torch(net, (3, 16, 16))
    assert len(spec.outputs) == 4
    km = xc.port(net, to="tf", input_shape=(3, 16, 16))
    assert len(km.outputs) == 4
    tm = xc.port(km, to="torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype("float32")
    import torch

    with torch.no_grad():
        expect = [y.numpy() for y in net(torch.from_numpy(x))]
    assert max_rel_diff(expect, xc.predict(tm, x)) <= TOLERANCE["float32"]
    assert max_rel_diff(expect, xc.predict(km, x)) <= TOLERANCE["float32"]


def test_dict_entries_are_chosen_by_a_list(both_backends):
    import torch
    from torch import nn

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.aux = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            h = self.conv(x)
            return {"out": h.relu(), "aux": self.aux(h), "pair": (h * 2, h.sigmoid())}

    torch.manual_seed(0)
    model = Heads().eval()
    km = xc.port(model, to="tf", input_shape=(3, 8, 8), output=["aux", "out"])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32")
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    assert max_rel_diff([y["aux"].numpy(), y["out"].numpy()], xc.predict(km, x)) <= TOLERANCE["float32"]
    pair = xc.port(model, to="tf", input_shape=(3, 8, 8), output="pair")  # (an entry that is a tuple)
    assert max_rel_diff([t.numpy() for t in y["pair"]], xc.predict(pair, x)) <= TOLERANCE["float32"]
    with pytest.raises(xc.UnsupportedLayerError, match="choose one with output=.*several"):
        xc.from_torch(model, (3, 8, 8))
    with pytest.raises(xc.UnsupportedLayerError, match="names 'nope', which is not an entry"):
        xc.from_torch(model, (3, 8, 8), output=["out", "nope"])
    for bad in ([], ["out", "out"], [1]):
        with pytest.raises(xc.XconvError, match="a list of distinct names"):
            xc.from_torch(model, (3, 8, 8), output=bad)


def test_verify_catches_one_wrong_output_of_several(both_backends):
    """The port check compares every output: the side conv's weights nudged in the target fail it."""
    from xconv._api import build_with_weights
    from xconv._verify import verify_port

    net = _torch_net()
    spec, weights = xc.from_torch(net, (3, 16, 16), return_weights=True)
    verify_port(net, build_with_weights(spec, "tf", weights), spec, weights, ("torch", "tf"), "float32", 0)
    bad = {k: v.copy() for k, v in weights.items()}
    bad["side.weight"][0, 1] += 0.05
    with pytest.raises(xc.PortError, match="differs from the source torch model"):
        verify_port(net, build_with_weights(spec, "tf", bad), spec, weights, ("torch", "tf"), "float32", 0)


def test_a_keras_model_with_several_outputs_ports(both_backends):
    import keras

    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="c1")(inp)
    g = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(h)
    flat = keras.layers.Flatten(name="f")(g)
    d = keras.layers.Dense(3, name="d")(flat)
    model = keras.Model(inp, [h, flat, d])
    spec = xc.from_keras(model)
    assert spec.outputs == ("c1", "f", "d")
    tm = xc.port(model, to="torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32")
    expect = [np.asarray(y) for y in model(xc.to_nhwc(x))]
    expect[0] = xc.to_nchw(expect[0])
    assert max_rel_diff(expect, xc.predict(tm, x)) <= TOLERANCE["float32"]  # (the flat output in Keras' order)
    km = xc.port(tm, to="tf")
    assert xc.from_keras(km).outputs is not None
    named = keras.Model(inp, {"a": h, "b": d})
    assert xc.from_keras(named, output=["b", "a"]).outputs == ("d", "c1")


# ---- the zoo ----


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(FEATURES_ZOO))
def test_feature_backbones_port_to_keras(both_backends, name, dtype):
    """timm's ``features_only`` backbones, torchvision's feature extractor and a segmentation model with its
    auxiliary head: every output ported with verification, the source's state_dict loaded where its keys are
    the module's own, and the Keras model imports back."""
    output = FEATURES_ZOO[name][2]
    _, km, x, y = port_entry(FEATURES_ZOO[name], dtype)
    if isinstance(output, str):  # (an entry that is a tuple: Hugging Face's hidden states)
        y = y[output]
    expect = [y[k].numpy() for k in output] if isinstance(output, list) else [t.numpy() for t in y]
    got = xc.predict(km, x)
    assert len(got) == len(expect) > 1
    assert max_rel_diff(expect, got) <= TOLERANCE[dtype]
    if dtype == "float32":
        assert len(xc.from_keras(km).outputs) == len(expect)


# ---- found by review ----


def test_a_returned_pad_is_not_folded_into_the_conv_after_it(both_backends):
    """A fold that needs a tensor's one reader counts the model's return as a reader: the padded map stays an
    output of its own size, in torch and in Keras."""
    import keras
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)
            self.d = nn.Conv2d(4, 2, 3)

        def forward(self, x):
            p = F.pad(self.c(x), (1, 1, 1, 1))
            return p, self.d(p)

    torch.manual_seed(0)
    model = Padded().eval()
    spec = xc.from_torch(model, (3, 6, 6))
    assert [i.output_shape for i in model_outputs(xc.infer(spec))] == [(4, 8, 8), (2, 6, 6)]
    km = xc.port(model, to="tf", input_shape=(3, 6, 6))
    assert [tuple(t.shape[1:]) for t in km.outputs] == [(8, 8, 4), (6, 6, 2)]
    inp = keras.Input((5, 5, 3))
    padded = keras.layers.ZeroPadding2D(1, name="z")(keras.layers.Conv2D(4, 1, name="c")(inp))
    two = keras.Model(inp, [padded, keras.layers.Conv2D(2, 3, name="c2")(padded)])
    assert [i.output_shape for i in model_outputs(xc.infer(xc.from_keras(two)))] == [(4, 7, 7), (2, 5, 5)]
    xc.port(two, to="torch")


def test_verify_bounds_each_output_by_its_own_rounding(both_backends):
    """A deep output whose float32 rounding is large (a cancellation of terms of 1e4) must not lend its allowance
    to a shallow one: a bias 2e-4 off in the shallow output fails alone and beside it."""
    import torch
    from torch import nn

    from xconv._verify import verify_port

    class Two(nn.Module):
        def __init__(self, both):
            super().__init__()
            self.both = both
            self.l0, self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(2, 1)
            with torch.no_grad():
                w = torch.randn(1, 4) * 1e4
                self.l1.weight.copy_(torch.cat([w, w * (1 + 1e-6)]))
                self.l1.bias.zero_()
                self.l2.weight.copy_(torch.tensor([[1.0, -1.0]]))
                self.l2.bias.zero_()

        def forward(self, x):
            h = self.l0(x)
            return (h, self.l2(self.l1(h))) if self.both else h

    for both in (False, True):
        torch.manual_seed(0)
        model = Two(both).eval()
        spec, weights = xc.from_torch(model, (4,), return_weights=True)
        km = xc.port(model, to="tf", input_shape=(4,))
        bias = km.get_layer("l0").bias
        bias.assign(bias.numpy() + np.array([2e-4, 0, 0, 0], dtype="float32"))
        with pytest.raises(xc.PortError, match="the ported tf model 0.000"):
            verify_port(model, km, spec, weights, ("torch", "tf"), "float32", 0)


def test_a_spec_with_outputs_is_format_version_3():
    """A reader of version 2 would drop the outputs; version 3 makes it refuse. Unknown top-level fields (a
    misspelled ``output``) are refused too."""
    data = pyramid().to_dict()
    assert data["version"] == 3 and xc.Sequential(xc.ReLU(), input_shape=(1, 2, 2)).to_dict()["version"] == 2
    with pytest.raises(xc.SpecError, match="unknown top-level fields \\['output'\\]"):
        xc.from_dict({**{k: v for k, v in data.items() if k != "outputs"}, "output": data["outputs"]})
    with pytest.raises(xc.SpecError, match="`outputs` come with format version 3"):
        xc.from_dict({**data, "version": 2})
