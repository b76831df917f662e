"""xconv.testing: the numpy reference backend, per-layer comparison with gradients across numpy, torch and
tf, and fault injection showing each known-wrong mapping is reported at the right layer."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xconv as xc
import xconv.shapes
from xconv import layout
from xconv.testing import assert_equivalent, compare_layerwise, strategies

_to_keras = layout.to_keras


def unpermuted_dense(kind, x, source, ops=layout.NUMPY_OPS):
    """The classic converter bug: a Dense kernel that is only transposed, its inputs left in C,H,W order."""
    return _to_keras(kind, x, None if kind == "linear" else source, ops)


SPEC = xc.Sequential(
    xc.Conv2d(2, 4, 3, stride=2, padding="same"),
    xc.ReLU(),
    xc.Conv2d(4, 4, 3, padding=1, groups=2, padding_mode="replicate"),
    xc.Flatten(),
    xc.Linear(None, 5),
    input_shape=(2, 8, 8),
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(data=st.data())
def test_three_backends_agree_on_outputs_and_gradients(both_backends, dtype, data):
    spec = data.draw(strategies.specs(max_layers=5, batch_stats=dtype == "float64"))
    assert_equivalent(spec, data.draw(strategies.weights(spec)), data.draw(strategies.inputs(spec)), dtype=dtype)


@pytest.mark.parametrize("name", ["seed-convnet", "awkward"])
def test_float32_gradients_on_fixed_specs(both_backends, name):
    from xconv.demo import seed_convnet

    from .test_backends import AWKWARD

    spec = {"seed-convnet": seed_convnet(size=8), "awkward": AWKWARD}[name]
    rows = assert_equivalent(spec, dtype="float32", seed=3)
    assert any(r.what == "grad weight" for r in rows)


def test_numpy_backend_is_a_model_like_the_others():
    model = xc.build(SPEC, "numpy", seed=0)
    assert model.dtype == "float64"
    assert xc.spec_of(model) == xc.shapes.resolve(SPEC)[0]
    w = xc.get_weights(model)
    assert list(w) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    y = model(np.zeros((3, 2, 8, 8)))
    assert y.shape == (3, 5)
    other = xc.build(SPEC, "numpy")
    xc.transfer_weights(model, other)
    np.testing.assert_array_equal(xc.get_weights(other)["4.weight"], w["4.weight"])


def test_numpy_backend_imports_no_framework():
    import subprocess

    code = (
        "import sys, numpy as np, xconv as xc\n"
        "from xconv.testing import assert_equivalent\n"
        "s = xc.Sequential(xc.Conv2d(1, 2, 3), xc.Flatten(), xc.Linear(None, 2), input_shape=(1, 4, 4))\n"
        "m = xc.build(s, 'numpy', seed=0); m(np.zeros((1, 1, 4, 4)))\n"
        "assert_equivalent(s, backends=('numpy', 'numpy'))\n"
        "print('LOADED', sorted(k for k in ('torch', 'tensorflow', 'keras') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def _fails_at(monkeypatch_apply, layer: int, what: str, dtype="float64", spec=SPEC):
    monkeypatch_apply()
    with pytest.raises(AssertionError) as info:
        assert_equivalent(spec, dtype=dtype, seed=1)
    message = str(info.value)
    kind = spec.layers[layer].kind
    assert f"first part at layer {layer} ({kind}), {what}" in message, message
    assert "<-- FAIL" in message
    return message


def test_reports_a_wrong_flatten_permutation_at_the_linear(both_backends, monkeypatch):
    _fails_at(lambda: monkeypatch.setattr(layout, "to_keras", unpermuted_dense), 4, "output")


def test_reports_same_as_symmetric_padding_at_the_conv(both_backends, monkeypatch):
    from xconv.backends import torch_backend

    real = torch_backend._BUILDERS[xc.Conv2d]

    def symmetric(info, factory):
        if info.layer.padding == "same":
            info = type(info)(**{**info.__dict__, "padding": ((1, 1), (1, 1))})
        return real(info, factory)

    _fails_at(lambda: monkeypatch.setitem(torch_backend._BUILDERS, xc.Conv2d, symmetric), 0, "output")


def test_reports_one_nudged_weight_at_its_layer(both_backends, monkeypatch):
    from xconv.backends.tf import weights as tf_backend

    real = tf_backend.from_canonical

    def nudged(info, name, value):
        out = real(info, name, value)
        if info.index == 2 and name == "weight":
            out = out.copy()
            out.flat[5] += 1e-3
        return out

    _fails_at(lambda: monkeypatch.setattr(tf_backend, "from_canonical", nudged), 2, "output")


def test_reports_a_gradient_only_fault(both_backends, monkeypatch):
    """A backward pass that is wrong while the forward pass is right is reported as a gradient row."""
    from xconv.backends import numpy_backend

    real = numpy_backend._BACKWARD[xc.ReLU]
    monkeypatch.setitem(numpy_backend._BACKWARD, xc.ReLU, lambda info, p, x, go, mode: (go * (x >= -0.1), {}))
    with pytest.raises(AssertionError, match=r"first part at layer 0 \(Conv2d\), grad"):
        assert_equivalent(SPEC, seed=1)
    monkeypatch.setitem(numpy_backend._BACKWARD, xc.ReLU, real)
    assert_equivalent(SPEC, seed=1)


def test_nan_is_never_a_pass(both_backends):
    w = xc.get_weights(xc.build(SPEC, "numpy", seed=0))
    w["4.bias"] = w["4.bias"].copy()
    w["4.bias"][0] = np.nan
    with pytest.raises(AssertionError, match="first part at layer 4"):
        assert_equivalent(SPEC, weights=w)


def test_compare_layerwise_rows_are_data(both_backends):
    rows = compare_layerwise(SPEC, backends=("numpy", "torch", "tf"), dtype="float64")
    assert [(r.layer, r.what) for r in rows][:3] == [(0, "output"), (0, "grad weight"), (0, "grad bias")]
    assert rows[-1].what == "grad input"
    assert all(r.ok for r in rows) and set(rows[0].diffs) == {"torch", "tf"}
    assert max(rel for r in rows for _, rel in r.diffs.values()) < 1e-12
    with pytest.raises(ValueError, match="at least two backends"):
        compare_layerwise(SPEC, backends=("torch",))


def test_grouped_one_tap_dilated_conv_has_finite_gradients(both_backends):
    """TF 2.21's XLA grouped conv returns non-finite kernel gradients for kernel 1 with dilation > 1 in about
    half the calls; xconv builds such axes with dilation 1 (exact for a single tap)."""
    spec = xc.Sequential(
        xc.Conv2d(2, 4, 1, padding=((3, 1), (1, 1)), dilation=(2, 3), groups=2, bias=False),
        xc.Flatten(),
        xc.Linear(None, 2),
        input_shape=(2, 2, 6),
    )
    for seed in range(20):
        assert_equivalent(spec, dtype="float64", seed=seed)


@pytest.mark.parametrize(
    "layer",
    [
        "xc.Conv2d(c, o, 1, stride=2)",
        # the transposed conv's filter gradient is the same oneDNN kernel; it fails once the output has rows or
        # columns past the last input pixel (output_padding)
        "xc.ConvTranspose2d(c, o, 1, stride=(2, 1 + i % 2), output_padding=(1, i % 2))",
    ],
    ids=["Conv2d", "ConvTranspose2d"],
)
def test_strided_pointwise_conv_gradients_do_not_corrupt_the_heap(both_backends, layer):
    """TF 2.21 + oneDNN corrupts the heap in the float32 filter gradient of a strided 1x1 kernel (under glibc's
    malloc checks "free(): invalid pointer", a segfault or a failed oneDNN reorder within a few hundred calls).
    xconv never emits that op: a strided 1x1 conv subsamples and convolves at stride 1, a strided 1x1 transposed
    conv is a per-pixel product and zero insertion. A child process runs many such gradients with the checks on
    and must exit cleanly."""
    code = textwrap.dedent(
        f"""
        import numpy as np
        import tensorflow as tf
        import xconv as xc
        rng = np.random.default_rng(0)
        for i in range(600):
            c, o, n = (int(v) for v in rng.integers(1, 7, 3))
            h, w = (int(v) for v in rng.integers(1, 13, 2))
            model = xc.build(xc.Sequential({layer}, input_shape=(c, h, w)), "tf", seed=i)
            x = tf.constant(rng.standard_normal((n % 3 + 1, h, w, c)).astype("float32"))
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = model(x)
                loss = tf.reduce_sum(y * y)
            tape.gradient(loss, [x, *model.trainable_variables])
        print("CLEAN")
        """
    )
    env = dict(os.environ, MALLOC_CHECK_="3", TF_CPP_MIN_LOG_LEVEL="3")
    debug = pathlib.Path("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")
    if debug.exists():
        env["LD_PRELOAD"] = str(debug)
    child = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=pathlib.Path(__file__).resolve().parent.parent,
    )
    assert child.returncode == 0 and "CLEAN" in child.stdout, (child.returncode, child.stderr[-2000:])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flat_input_specs_work_everywhere(both_backends, dtype):
    spec = xc.Sequential(xc.Linear(None, 5), xc.ReLU(), xc.Flatten(), xc.Linear(None, 3), input_shape=(7,))
    assert_equivalent(spec, dtype=dtype)
    km = xc.build(spec, "tf", dtype=dtype)
    assert km.input_shape == (None, 7)
    assert xc.from_keras(km) == xc.shapes.resolve(spec)[0]
