"""Backends: names, native models, spec_of, Keras graph without transposes, .keras files, import hygiene."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xconv as xc
from xconv.testing import max_rel_diff

from .test_shapes import seed_spec

# Needs every Keras helper layer: explicit pads, a reflect pad, a cropped stride (oneDNN workaround),
# a stride together with a dilation (subsampled), TF-'same' at stride 2 (4-sided in torch).
AWKWARD = xc.Sequential(
    xc.Conv2d(1, 3, 3, stride=2, dilation=2, padding=2, padding_mode="reflect"),  # (3, 6, 6)
    xc.ReLU(),
    xc.Conv2d(3, 6, 2, stride=2, padding="same", groups=3),  # (6, 3, 3)
    xc.Conv2d(6, 1, 1, padding=((1, 0), (0, 2)), padding_mode="circular"),  # (1, 4, 5)
    xc.Conv2d(1, 3, 3, stride=(1, 3)),  # (3, 2, 1)
    xc.Flatten(),
    xc.Linear(None, 5),
    input_shape=(1, 12, 12),
)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(
        ValueError, match="unknown backend 'jax'; valid names: 'numpy', 'torch', 'pytorch', 'tf', 'tensorflow', 'keras'"
    ):
        xc.build(seed_spec(), "jax")


@pytest.mark.parametrize(
    "alias, canonical", [("pytorch", "torch"), ("tensorflow", "tf"), ("keras", "tf"), ("TF", "tf")]
)
def test_aliases(both_backends, alias, canonical):
    assert type(xc.build(AWKWARD, alias)) is type(xc.build(AWKWARD, canonical))


def test_bad_dtype(backend):
    with pytest.raises(xc.XconvError, match="dtype must be one of float32, float64. Received: dtype='float16'"):
        xc.build(AWKWARD, backend, dtype="float16")


def test_models_are_native(both_backends):
    import keras
    from torch import nn

    tm = xc.build(seed_spec(), "torch", seed=0)
    assert type(tm) is nn.Sequential
    assert [type(m) for m in tm] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear]
    km = xc.build(seed_spec(), "tf", seed=0)
    assert isinstance(km, keras.Model)
    assert km.input_shape == (None, 32, 32, 3)
    assert [layer.name for layer in km.layers] == [
        "input",
        "conv2d_0",
        "conv2d_2",
        "flatten_4",
        "linear_5",
    ]  # ReLUs fused


def test_spec_of_returns_the_resolved_spec(backend):
    spec = xc.Sequential(xc.Conv2d(3, 4, 3), xc.Flatten(), xc.Linear(out_features=2))
    model = xc.build(spec, backend, input_shape=(3, 5, 5))
    assert xc.spec_of(model) == xc.Sequential(xc.Conv2d(3, 4, 3), xc.Flatten(), xc.Linear(36, 2), input_shape=(3, 5, 5))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_awkward_spec_agrees(both_backends, dtype):
    w = xc.get_weights(xc.build(AWKWARD, "torch", seed=1, dtype="float64"))
    x = np.random.default_rng(0).standard_normal((3, 1, 12, 12))
    tm, km = xc.build(AWKWARD, "torch", dtype=dtype), xc.build(AWKWARD, "tf", dtype=dtype)
    xc.set_weights(tm, w)
    xc.set_weights(km, w)
    tol = {"float32": 1e-5, "float64": 1e-10}[dtype]
    assert max_rel_diff(xc.predict(tm, x.astype(dtype)), xc.predict(km, x.astype(dtype))) <= tol


def _graph_op_types(model, shape):
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((None, *shape), model.inputs[0].dtype)).graph
    return {op.type for op in graph.get_operations()}


def test_keras_graph_has_no_transpose(both_backends):
    for spec in (seed_spec(), AWKWARD):
        c, h, w = spec.input_shape
        ops = _graph_op_types(xc.build(spec, "tf"), (h, w, c))
        assert not {o for o in ops if "Transpose" in o or "Permute" in o}, ops
        assert "Conv2D" in ops or any("Conv" in o for o in ops)


def test_keras_file_round_trip_with_custom_layers(both_backends, tmp_path):
    import keras

    km = xc.build(AWKWARD, "tf", seed=0)
    path = tmp_path / "awkward.keras"
    km.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(km(x)))
    assert {type(l).__name__ for l in loaded.layers} >= {"GatherPad2D", "Subsample2D", "Cropping2D"}


def test_keras_model_trains_with_fit(both_backends):
    km = xc.build(
        xc.Sequential(xc.Conv2d(1, 2, 3), xc.Flatten(), xc.Linear(None, 3), input_shape=(1, 5, 5)), "tf", seed=0
    )
    km.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    history = km.fit(rng.standard_normal((8, 5, 5, 1)), rng.integers(0, 3, 8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_torch_model_scripts_and_exports(both_backends):
    import torch

    tm = xc.build(AWKWARD, "torch", seed=0).eval()
    x = torch.randn(2, 1, 12, 12)
    exported = torch.export.export(tm, (x,))
    torch.testing.assert_close(exported.module()(x), tm(x), rtol=0, atol=0)


def _run_fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_import_xconv_imports_no_framework():
    result = _run_fresh(
        """
        import json, sys
        import xconv as xc
        spec = xc.Sequential(xc.Conv2d(3, 4, 3, padding="same"), xc.ReLU(), xc.Flatten(), xc.Linear(None, 2),
                             input_shape=(3, 8, 8))
        xc.summary(spec, print_fn=None)
        assert xc.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        xc.to_nhwc(__import__("numpy").zeros((1, 3, 2, 2)))
        try:
            xc.infer(xc.Sequential(xc.Conv2d(4, 4, 3), input_shape=(3, 8, 8)))
        except xc.SpecError:
            pass
        loaded = sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules)
        print("LOADED", loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_frameworks_are_imported_by_two_modules():
    """Two modules of the backends import a framework, ``xconv/backends/_torch_env.py`` and
    ``xconv/backends/_tf_env.py`` (which also refuses a Keras on another backend); the backends, the kinds'
    framework parts and the importer front-ends take torch, keras and tensorflow from them."""
    import pathlib
    import re

    root = pathlib.Path(xc.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+(torch|tensorflow|keras)\b", re.MULTILINE)
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if str(p.relative_to(root)) not in ("demo.py", "backends/_tf_env.py", "backends/_torch_env.py")
        and pattern.search(p.read_text())
    ]
    assert offenders == []


def test_other_keras_backend_is_a_clear_error():
    result = _run_fresh(
        """
        import xconv as xc
        try:
            xc.build(xc.Sequential(xc.ReLU(), input_shape=(1, 2, 2)), "tf")
        except xc.BackendUnavailable as e:
            print("ERROR", e)
        """,
        KERAS_BACKEND="jax",
    )
    assert result.returncode == 0, result.stderr
    assert "ERROR backend 'tf' builds Keras 3 models on TensorFlow, but KERAS_BACKEND='jax'" in result.stdout


def test_deep_spec_builds_in_keras(both_backends):
    """Keras walks functional graphs recursively; 1,000 layers exceed Python's default recursion limit."""
    spec = xc.Sequential(xc.Conv2d(1, 2, 1), *[xc.Sigmoid() for _ in range(999)], input_shape=(1, 2, 2))
    limit = sys.getrecursionlimit()
    km = xc.build(spec, "tf", seed=0)
    assert sys.getrecursionlimit() == limit
    assert len(km.layers) == 1001


def test_shape_errors_come_before_any_framework_import():
    result = _run_fresh(
        """
        import sys
        import xconv as xc
        bad = xc.Sequential(xc.Conv2d(4, 4, 3), input_shape=(3, 8, 8))
        for backend in ("torch", "tf"):
            try:
                xc.build(bad, backend)
            except xc.SpecError as e:
                print("ERROR", e)
        print("LOADED", sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ERROR layer 0 (Conv2d): in_channels=4 but its input has 3 channels") == 2
    assert "LOADED []" in result.stdout


@pytest.mark.parametrize(
    "imports",
    ["import xconv; import keras", "import keras; import xconv", "import xconv; import tensorflow; import keras"],
    ids=["xconv-first", "keras-first", "tensorflow-first"],
)
def test_keras_file_loads_in_a_fresh_process_after_import_xconv(both_backends, tmp_path, imports):
    path = tmp_path / "awkward.keras"
    xc.build(AWKWARD, "tf", seed=0).save(path)
    result = _run_fresh(
        f"""
        {imports}
        model = keras.models.load_model({str(path)!r})
        print("LOADED", sorted({{type(l).__name__ for l in model.layers}} & {{"GatherPad2D", "Subsample2D"}}))
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED ['GatherPad2D', 'Subsample2D']" in result.stdout
