"""Property tests: for random valid specs, weights and inputs, the torch and Keras models compute the same
function (max |a - b| / max(1, max |a|) within the dtype's tolerance)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import xconv as xc
from xconv._compare import output_shapes
from xconv.graph import model_outputs
from xconv.testing import TOLERANCE, compare_layerwise, max_rel_diff, strategies

DTYPES = ("float32", "float64")


def check_agree(spec: xc.Sequential, weights: dict, x: np.ndarray, dtype: str) -> float:
    """The models' outputs agree: max |a - b| / max(1, max |a|) within tolerance. Where the spec ends in an
    elementwise layer, its input's magnitude counts too (see compare_layerwise: tanh of inputs near 1e3 carries
    their float32 rounding into outputs of order 1)."""
    tm = xc.build(spec, "torch", dtype=dtype)
    km = xc.build(spec, "tf", dtype=dtype)
    xc.set_weights(tm, weights)
    xc.set_weights(km, weights)
    a = xc.predict(tm, x.astype(dtype))
    b = xc.predict(km, x.astype(dtype))
    sa, sb = output_shapes(a), output_shapes(b)
    assert sa == sb, f"torch vs tf shapes differ: {sa} vs {sb} for\n{spec!r}"
    err = max_rel_diff(a, b)  # (a spec with several outputs: the worst, each at its own scale)
    if err > TOLERANCE[dtype]:  # the per-layer view, with the carried scale of a final elementwise layer
        rows = compare_layerwise(spec, weights, x, backends=("torch", "tf"), dtype=dtype, grads=False)
        returned = {info.index for info in model_outputs(xc.infer(spec))}
        err = max(r.diffs["tf"][1] for r in rows if r.what == "output" and r.layer in returned)
        for call in [r for r in rows if r.what == "model call"]:  # (the layers traced one by one: the models too)
            assert call.ok, f"a model called as a whole differs from its layers: {call.diffs} for\n{spec!r}"
    assert err <= TOLERANCE[dtype], f"torch vs tf differ by {err:.3g} (tolerance {TOLERANCE[dtype]:g}) for\n{spec!r}"
    return err


@st.composite
def cases(draw, **spec_options):
    spec = draw(strategies.specs(**spec_options))
    return spec, draw(strategies.weights(spec)), draw(strategies.inputs(spec))


@given(case=cases(batch_stats=False))
def test_random_specs_agree_float32(both_backends, case):
    check_agree(*case, "float32")


@given(case=cases())
def test_random_specs_agree_float64(both_backends, case):
    check_agree(*case, "float64")


@given(case=cases(max_layers=4))
def test_output_shape_matches_inference(both_backends, case):
    spec, _weights, x = case
    expected = [info.output_shape for info in model_outputs(xc.infer(spec))]
    for backend in ("torch", "tf"):
        model = xc.build(spec, backend, dtype="float64")
        got = output_shapes(xc.predict(model, x))
        assert got == (expected if spec.outputs else expected[0]), backend


def test_errors_carried_through_a_cancellation_are_bounded_downstream(both_backends):
    """x - mean(x) of a constant channel is near 0 but known only to the rounding of values of the constant's size;
    a conv after it sums that error times |W|. Found by the float32 property test (1.03e-5 of an output near 0):
    the checker passes each node's error scale on to the nodes that read it."""
    spec = xc.Sequential(
        xc.ConvTranspose2d(5, 5, (1, 2), stride=(3, 1), groups=5, bias=False),
        xc.ReLU(),
        xc.Rescaling((0.0,) * 5, offset=(0.0, 0.0, 0.0, 0.0, 2.803717055315477)),
        xc.Subtract(xc.Identity(), xc.AdaptiveAvgPool2d(1)),
        xc.Conv2d(5, 5, 2, padding="same", groups=5, bias=False),
        input_shape=(5, 5, 7),
    )
    shapes = xc.get_weights(xc.build(spec, "numpy", seed=0))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        w = {k: rng.standard_normal(v.shape) for k, v in shapes.items()}
        rows = compare_layerwise(spec, w, rng.standard_normal((2, 5, 5, 7)), dtype="float32", grads=False)
        assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_float32_gradients_beyond_tolerance_are_measured_against_float64(monkeypatch):
    """With a gradient tolerance no float32 run meets, every gradient row is measured against the reference's
    float64 run (a BatchNorm's integer count kept an integer) and passes as rounding; the table shows it."""
    from xconv.testing import _equivalence

    monkeypatch.setitem(_equivalence._TOLERANCES, ("float32", "grad"), 1e-12)
    spec = xc.Sequential(
        xc.Conv2d(1, 4, 3, padding=1),
        xc.BatchNorm2d(4),
        xc.ReLU(),
        xc.Flatten(),
        xc.Linear(None, 3),
        input_shape=(1, 4, 4),
    )
    rows = compare_layerwise(spec, backends=("numpy", "torch"), dtype="float32", training=True)
    measured = [r for r in rows if r.rounding is not None]
    assert measured and all(r.ok for r in rows)
    assert all(r.what.startswith("grad ") for r in measured)
