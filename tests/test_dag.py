"""Any DAG: ``Use`` references let one tensor feed several joins. The spec form round-trips, builds natively in
both frameworks and agrees with the reference; importers write graphs that are not fork-join nestings with it
(HRNet's fusions, VoVNet's and DLA's aggregations); a wrong reference is caught."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv.testing import max_rel_diff, strategies

from .test_equivalence import check_agree
from .test_faults import run_property


def _shared():
    """stem -> a; a + stem; (that) ++ stem ++ input: the stem's output and the input are each read by two joins."""
    return xc.Sequential(
        xc.Conv2d(3, 4, 3, padding=1, name="stem"),
        xc.Add(xc.Conv2d(4, 4, 3, padding=1), xc.Identity(), name="block"),
        xc.Add(xc.Sequential(xc.Use("stem"), xc.ReLU()), xc.Identity()),
        xc.Concat(xc.Use("block"), xc.Use("stem"), xc.Use()),
        input_shape=(3, 6, 6),
    )


def _expected(weights, x):
    """What the spec of stem, block and the concatenation computes, written out."""

    def conv(key, t):
        import torch

        w, b = torch.from_numpy(weights[f"{key}.weight"]), torch.from_numpy(weights[f"{key}.bias"])
        return torch.nn.functional.conv2d(torch.from_numpy(t), w, b, padding=1).numpy()

    stem = conv("stem", x)
    block = conv("block.0", stem) + stem
    return np.concatenate([block, stem, x], axis=1)


def test_use_round_trips_builds_in_both_frameworks_and_computes_the_dag(both_backends):
    spec = xc.Sequential(*_shared().layers[:2], _shared().layers[3], input_shape=(3, 6, 6))
    assert xc.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    names = {k: getattr(xc, k) for k in ("Sequential", "Conv2d", "Add", "Identity", "Concat", "Use")}
    assert eval(repr(spec), names) == spec
    weights = {k: np.random.default_rng(0).standard_normal(v).astype("float64") for k, v in _param_shapes(spec)}
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    expect = _expected(weights, x)
    for backend in ("numpy", "torch", "tf"):
        model = xc.build(spec, backend, dtype="float64")
        xc.set_weights(model, weights)
        assert max_rel_diff(expect, xc.predict(model, x)) < 1e-12, backend
        assert xc.spec_of(model) == spec
    assert xc.infer(spec)[-1].output_shape == (11, 6, 6)


def _param_shapes(spec):
    return [(f"{i.key}.{n}", s) for i in xc.infer(spec) for n, s in i.params.items()]


def test_a_part_read_by_a_later_reference_and_a_chain_ends_where_it_must(both_backends):
    spec = _shared()  # its third part's output is never read
    with pytest.raises(xc.SpecError, match=r"output of 2 \(Add\) is never read"):
        xc.infer(spec)
    with pytest.raises(xc.SpecError, match="no part named 'later' is computed before it"):
        xc.infer(xc.Sequential(xc.Use("later"), xc.Conv2d(3, 3, 1, name="later"), input_shape=(3, 4, 4)))
    with pytest.raises(xc.SpecError, match="ends with a Use"):
        xc.infer(xc.Sequential(xc.Conv2d(3, 3, 1, name="a"), xc.ReLU(), xc.Use("a"), input_shape=(3, 4, 4)))
    with pytest.raises(xc.SpecError, match="`name` must be"):
        xc.Use("a b")
    with pytest.raises(xc.SpecError, match="Use.*no other fields"):
        xc.from_dict({"format": "xconv.spec", "version": 2, "layers": [{"kind": "Use", "source": None, "x": 1}]})


@settings(max_examples=40)
@given(data=st.data())
def test_drawn_dags_agree_across_backends(both_backends, data):
    """The spec strategy draws joins that read an earlier tensor again (Use), often one tensor by several."""
    spec = data.draw(strategies.specs(kinds=("Conv2d", "ReLU", "Add", "Concat", "Flatten", "Linear"), max_layers=7))
    check_agree(spec, data.draw(strategies.weights(spec)), data.draw(strategies.inputs(spec)), "float64")


def test_the_strategy_draws_shared_tensors():
    seen = 0

    @settings(max_examples=200, database=None, derandomize=True)  # (a count of draws: the same draws each run)
    @given(strategies.specs(kinds=("Conv2d", "ReLU", "Add", "Concat"), max_layers=8))
    def count(spec):
        nonlocal seen
        readers: dict[int, int] = {}
        for info in xc.infer(spec):
            for i in info.inputs:
                readers[i] = readers.get(i, 0) + int(info.is_join)
        seen += any(n >= 2 for n in readers.values())

    count()
    assert seen >= 5  # of 200 drawn specs, some hold a tensor read by two or more joins


def test_catches_a_reference_read_from_the_wrong_node(both_backends, monkeypatch):
    """One backend wires a join to the node before the one its Use names (where both have one shape, so nothing
    fails to run): the property search reports it."""
    from xconv.backends import torch_backend

    real = torch_backend.build

    def miswired(spec, infos, weights, dtype):
        wrong = []
        for info in infos:
            skips = [  # read through a Use, with a node of the same shape before it: a silent mix-up
                i for i in info.inputs if 1 <= i < info.index - 1 and infos[i - 1].output_shape == infos[i].output_shape
            ]
            if info.is_join and skips:
                k = skips[0]
                info = type(info)(**{**info.__dict__, "inputs": tuple(k - 1 if i == k else i for i in info.inputs)})
            wrong.append(info)
        return real(spec, wrong, weights, dtype)

    monkeypatch.setattr(torch_backend, "build", miswired)
    with pytest.raises(AssertionError, match="torch vs tf differ|differs from its layers"):
        run_property(kinds=("Conv2d", "ReLU", "Add", "Concat"), max_layers=7)


def _torch_dags():
    from torch import nn

    class Fusion(nn.Module):
        """HRNet-like: ``t`` is read by two joins in different branches and by the final concatenation."""

        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b, self.c, self.d = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            import torch

            t = self.a(x)
            u = self.b(t) + t
            v = self.c(u) + t
            return torch.cat([self.bn(self.d(v)), u, t], 1)

    return Fusion


def test_a_tensor_read_by_several_joins_imports_from_torch(both_backends):
    import torch

    model = _torch_dags()().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2)
    spec, weights = xc.from_torch(model, (3, 8, 8), return_weights=True)
    assert set(weights) == set(model.state_dict())
    assert sum(isinstance(b, xc.Use) for item in spec.layers for b in getattr(item, "branches", ())) >= 3
    for target in ("tf", "torch"):
        ported = xc.port(model, target, (3, 8, 8))  # verified
        xc.set_weights(ported, model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    km = xc.port(model, "tf", (3, 8, 8))
    assert max_rel_diff(expect, xc.predict(km, x)) < 1e-5
    assert max_rel_diff(expect, xc.predict(xc.port(km, "torch"), x)) < 1e-5  # and back, through Keras' graph
