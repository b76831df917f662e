"""The property test must fail when a mapping is wrong: each test injects one known-wrong conversion and
asserts the same random search reports it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv import layout
from xconv.testing import max_rel_diff, strategies

from .test_equivalence import check_agree

# Generate only (no shrinking: the failure is expected), a fixed example sequence, one report.
SEARCH = settings(
    max_examples=150, derandomize=True, phases=[Phase.generate], report_multiple_bugs=False, deadline=None
)


def run_property(dtype="float64", **spec_options):
    @SEARCH
    @given(data=st.data())
    def prop(data):
        spec = data.draw(strategies.specs(**spec_options))
        check_agree(spec, data.draw(strategies.weights(spec)), data.draw(strategies.inputs(spec)), dtype)

    prop()


def test_property_test_passes_without_a_fault(both_backends):
    run_property(kinds=("Conv2d", "Flatten", "Linear"), max_layers=3)


def test_catches_a_missing_flatten_permutation(both_backends, monkeypatch):
    monkeypatch.setattr(layout, "flatten_permutation", lambda source: None)
    with pytest.raises(AssertionError, match="torch vs tf differ"):
        run_property(kinds=("Conv2d", "Flatten", "Linear"), max_layers=3)


def test_catches_same_mapped_to_symmetric_padding(both_backends, monkeypatch):
    from xconv.backends import torch_backend

    real = torch_backend._BUILDERS[xc.Conv2d]

    def symmetric_same(info, factory):  # the common converter bug: 'same' as k//2 on each side
        if info.layer.padding == "same":
            (kh, kw), (dh, dw) = info.layer.kernel_size, info.layer.dilation
            ph, pw = (kh - 1) * dh // 2, (kw - 1) * dw // 2
            info = type(info)(**{**info.__dict__, "padding": ((ph, ph), (pw, pw))})
        return real(info, factory)

    monkeypatch.setitem(torch_backend._BUILDERS, xc.Conv2d, symmetric_same)
    # The measured pitfall: stride 2, even size, odd kernel -> the right shape and the wrong numbers.
    spec = xc.Sequential(xc.Conv2d(2, 3, 3, stride=2, padding="same"), input_shape=(2, 8, 8))
    w = xc.get_weights(xc.build(spec, "torch", seed=0, dtype="float64"))
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    with pytest.raises(AssertionError, match="torch vs tf differ"):
        check_agree(spec, w, x, "float64")
    # and the random search finds it (as a shape or a value mismatch) without being told where to look
    with pytest.raises(AssertionError, match="torch vs tf differ|shapes differ"):
        run_property(kinds=("Conv2d",), paddings=("same",), strides=(2,), dilations=(1,), max_layers=2)


def test_catches_the_onednn_bug_when_the_workaround_is_off(both_backends):
    """TF 2.21's oneDNN float32 conv is wrong for a 1-channel input, 1-column output, horizontal stride > 1;
    the float32 property test draws these shapes and fails without xconv's reformulation.

    The buggy kernel can also corrupt the heap (``free(): invalid next size``), so the run without the
    workaround happens in a child process: a wrong answer caught by the search, or the child killed by the
    allocator, both show the bug; a clean pass would mean the search does not reach these shapes."""
    options = {
        "dtype": "float32",
        "kinds": ("Conv2d",),
        "max_layers": 1,
        "max_channels": 1,
        "max_size": 6,
        "dilations": (1,),
    }
    run_property(**options)  # with the workaround: passes
    root = pathlib.Path(__file__).resolve().parent.parent
    probe = textwrap.dedent(
        """
        import numpy as np, xconv as xc
        from xconv.backends.tf import builders
        builders.ONEDNN_WORKAROUND = False
        spec = xc.Sequential(xc.Conv2d(1, 2, 3, stride=(1, 3)), input_shape=(1, 5, 4))
        x = np.random.default_rng(0).standard_normal((2, 1, 5, 4))
        ref = xc.predict(xc.build(spec, "torch", seed=0, dtype="float64"), x)
        print(float(np.abs(xc.predict(xc.build(spec, "tf", seed=0), x.astype("float32")) - ref).max()))
        """
    )
    raw = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, cwd=root)
    if raw.returncode == 0 and float(raw.stdout.split()[-1]) < 1e-5:
        # oneDNN picks its kernel by processor: where the raw conv is right, there is no bug to catch
        pytest.skip(f"this processor's oneDNN float32 conv has no such bug (raw error {raw.stdout.split()[-1]})")
    code = textwrap.dedent(
        f"""
        from xconv.backends.tf import builders as tf_backend
        from tests.test_faults import run_property
        tf_backend.ONEDNN_WORKAROUND = False
        try:
            run_property(**{options!r})
        except AssertionError as e:
            # caught comparing the two frameworks' layers, or the Keras model called whole with its layers
            caught = "torch vs tf differ" in str(e) or "called as a whole differs from its layers" in str(e)
            print("CAUGHT" if caught else "OTHER " + str(e)[:300])
        else:
            print("PASSED")
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=root, timeout=600
    )
    killed = child.returncode < 0 or child.returncode == 134
    assert "CAUGHT" in child.stdout or killed, (child.returncode, child.stdout[-500:], child.stderr[-2000:])


def test_onednn_shape_is_correct_in_float32(both_backends):
    spec = xc.Sequential(xc.Conv2d(1, 2, 3, stride=(1, 3)), input_shape=(1, 5, 4))
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 4))
    ref = xc.predict(xc.build(spec, "torch", seed=0, dtype="float64"), x)
    out = xc.predict(xc.build(spec, "tf", seed=0, dtype="float32"), x.astype(np.float32))
    assert max_rel_diff(ref, out) < 1e-6


def test_catches_one_weight_nudged(both_backends):
    spec = xc.Sequential(xc.Conv2d(2, 3, 3), xc.Flatten(), xc.Linear(None, 4), input_shape=(2, 5, 5))
    w = {k: v for k, v in xc.get_weights(xc.build(spec, "torch", seed=0, dtype="float64")).items()}
    tm = xc.build(spec, "torch", dtype="float64")
    km = xc.build(spec, "tf", dtype="float64")
    xc.set_weights(tm, w)
    w["0.weight"] = w["0.weight"].copy()
    w["0.weight"][1, 0, 2, 1] += 1e-3
    xc.set_weights(km, w)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    assert max_rel_diff(xc.predict(tm, x), xc.predict(km, x)) > 1e-6


def test_max_rel_diff_never_passes_nan_or_reordering():
    a = np.array([[1.0, 2.0, 3.0]])
    assert max_rel_diff(a, a) == 0.0
    assert max_rel_diff(a, a[:, ::-1]) == pytest.approx(2 / 3)  # unsorted: a permutation is a difference
    assert max_rel_diff(a, np.array([[1.0, np.nan, 3.0]])) == float("inf")
    assert max_rel_diff(np.array([np.inf]), np.array([np.inf])) == float("inf")
    assert max_rel_diff(np.array([0.5]), np.array([0.25])) == 0.25  # scaled by max(1, max |a|)
    with pytest.raises(AssertionError, match="shapes differ"):
        max_rel_diff(a, a.T)
