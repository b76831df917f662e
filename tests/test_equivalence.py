"""Property tests: for random valid specs, weights and inputs, the torch and Keras models compute the same
function (max |a - b| / max(1, max |a|) within the dtype's tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xconv as xc
from xconv.testing import TOLERANCE, max_rel_diff, strategies

DTYPES = ("float32", "float64")


def check_agree(spec: xc.Sequential, weights: dict, x: np.ndarray, dtype: str) -> float:
    tm = xc.build(spec, "torch", dtype=dtype)
    km = xc.build(spec, "tf", dtype=dtype)
    xc.set_weights(tm, weights)
    xc.set_weights(km, weights)
    a = xc.predict(tm, x.astype(dtype))
    b = xc.predict(km, x.astype(dtype))
    err = max_rel_diff(a, b)
    assert err <= TOLERANCE[dtype], f"torch vs tf differ by {err:.3g} (tolerance {TOLERANCE[dtype]:g}) for\n{spec!r}"
    return err


@st.composite
def cases(draw, **spec_options):
    spec = draw(strategies.specs(**spec_options))
    return spec, draw(strategies.weights(spec)), draw(strategies.inputs(spec))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPES)
@given(case=cases())
def test_random_specs_agree(both_backends, dtype, case):
    check_agree(*case, dtype)


@given(case=cases(max_layers=4))
def test_output_shape_matches_inference(both_backends, case):
    spec, weights, x = case
    expected = (x.shape[0], *xc.infer(spec)[-1].output_shape)
    for backend in ("torch", "tf"):
        model = xc.build(spec, backend, dtype="float64")
        assert xc.predict(model, x).shape == expected, backend
