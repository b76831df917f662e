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
LARGE = xc.Sequential(
    xc.Conv2d(1, 1, 1),
    xc.Conv2d(1, 64, 1),
    xc.Flatten(),
    xc.Linear(None, 1024),
    xc.BatchNorm1d(1024),
    xc.Linear(1024, 1),
    input_shape=(1, 8, 8),
)
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

    class ShiftedConv(nn.Conv2d):  # its own forward: traced (the conv, then x + 1 as a Rescaling)
        def forward(self, x):
            return super().forward(x) + 1.0

    shifted = nn.Sequential(ShiftedConv(2, 2, 1)).eval()
    assert [i.kind for i in xc.infer(xc.from_torch(shifted, (2, 3, 3)))] == ["Conv2d", "Rescaling"]

    class SummedConv(nn.Conv2d):  # its own forward: traced, and what it adds refused
        def forward(self, x):
            return super().forward(x).cumsum(1)

    with pytest.raises(xc.UnsupportedLayerError, match="cumsum"):
        xc.from_torch(nn.Sequential(SummedConv(2, 2, 1)), (2, 3, 3))
    # a hook's work is in the exported program: the hooked module is mapped by what its calls compute
    hooked = nn.Sequential(nn.ReLU())
    hooked[0].register_forward_pre_hook(lambda mod, inp: (inp[0] * 2,))
    assert [i.kind for i in xc.infer(xc.from_torch(hooked, (2, 3, 3)))] == ["Rescaling", "ReLU"]
    x = np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)
    with torch.no_grad():
        assert max_rel_diff(hooked(torch.from_numpy(x)).numpy(), xc.predict(xc.port(hooked, "tf", (2, 3, 3)), x)) < 1e-6
    from xconv.importers.torch_fx import _import_traced

    with pytest.raises(xc.UnsupportedLayerError, match="hooks"):  # the torch.fx front-end refuses it
        _import_traced(hooked, (2, 3, 3), None, "")


def _edited_keras_file(tmp_path):
    spec = xc.Sequential(
        xc.Conv2d(2, 3, 3, padding=1),
        xc.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        xc.Flatten(),
        xc.Linear(None, 2),
        input_shape=(2, 6, 6),
    )
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


# ---- checkpoints: digest, file modes, caps ----


def _checkpoint(tmp_path, name="m.safetensors"):
    spec = xc.Sequential(xc.Linear(3, 2), input_shape=(3,))
    path = tmp_path / name
    xc.save(path, spec, {"0.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "0.bias": np.ones(2, np.float32)})
    return path


def test_a_flipped_byte_in_tensor_data_is_an_error(tmp_path):
    path = _checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    one = np.float32(1.0).tobytes()  # a bias value: flip a byte of it
    at = data.rindex(one)
    data[at + 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(xc.XconvError, match="does not match the digest"):
        xc.load(path)


def test_files_without_a_digest_load(tmp_path, capsys):
    import safetensors.numpy

    from xconv import checkpoint, cli

    path = _checkpoint(tmp_path)
    spec, weights = xc.load(path)
    assert checkpoint.has_digest(path)
    meta = {"format": "xconv.checkpoint", "format_version": "1", "spec": json.dumps(spec.to_dict())}
    safetensors.numpy.save_file(weights, str(tmp_path / "other.safetensors"), meta)
    assert not checkpoint.has_digest(tmp_path / "other.safetensors")
    assert list(xc.load(tmp_path / "other.safetensors")[1]) == list(weights)
    assert cli.main(["summary", str(tmp_path / "other.safetensors")]) == 0
    assert "no digest" in capsys.readouterr().out
    assert cli.main(["summary", str(path)]) == 0
    assert "no digest" not in capsys.readouterr().out


def test_save_follows_the_umask_keeps_modes_writes_through_links_and_refuses_read_only(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = _checkpoint(tmp_path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        _checkpoint(tmp_path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        link = tmp_path / "link.safetensors"
        link.symlink_to(path)
        _checkpoint(tmp_path, "link.safetensors")
        assert link.is_symlink() and xc.load(link)[0] == xc.load(path)[0]
        path.chmod(0o444)
        with pytest.raises(xc.XconvError, match="read-only"):
            _checkpoint(tmp_path)
    finally:
        os.umask(old)


def test_a_deep_spec_in_a_checkpoint_is_refused_before_parsing(tmp_path):
    import safetensors.numpy

    deep = "[" * 100_000 + "]" * 100_000
    meta = {"format": "xconv.checkpoint", "format_version": "1", "spec": deep}
    safetensors.numpy.save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "deep.safetensors"), meta)
    with pytest.raises(xc.XconvError, match="deeper"):
        xc.load(tmp_path / "deep.safetensors")


# ---- every API error is an XconvError ----


def test_api_errors_are_xconv_errors(both_backends):
    import keras
    import torch
    from torch import nn

    bad = [
        lambda: xc.from_dict({"format": "xconv.spec", "version": 2, "layers": [{"kind": "Conv2d"}]}),
        lambda: xc.from_dict({"format": "xconv.spec", "version": 2, "layers": [], "input_shape": 5}),
        lambda: xc.load(None),
        lambda: xc.from_torch(nn.Linear(2, 2), None),
        lambda: xc.from_torch(nn.Linear(2, 2).to(torch.bfloat16), (2,)),
        lambda: xc.port(nn.Linear(2, 2).half(), to="tf", input_shape=(2,)),
        lambda: xc.from_keras(None),
        lambda: xc.save(
            "x.safetensors",
            xc.Sequential(xc.Linear(2, 2), input_shape=(2,)),
            {"0.weight": torch.zeros(2, 2, dtype=torch.bfloat16), "0.bias": np.zeros(2, np.float32)},
        ),
        lambda: xc.set_weights(
            xc.build(xc.Sequential(xc.BatchNorm1d(2), input_shape=(2,)), "numpy"),
            {
                "0.weight": np.ones(2),
                "0.bias": np.zeros(2),
                "0.running_mean": np.zeros(2),
                "0.running_var": np.ones(2),
                "0.num_batches_tracked": np.array(2**64 - 1, np.uint64),
            },
        ),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(xc.XconvError):
            call()
    assert keras is not None
    model = xc.build(xc.Sequential(xc.Linear(2, 2), input_shape=(2,)), "torch", dtype=np.float32)  # the class
    assert xc.predict(model, np.ones((3, 2), np.float64)).dtype == np.float32  # cast to the model's dtype
    with pytest.raises(xc.XconvError, match=r"\(N, 2\)"):
        xc.predict(model, np.ones((3, 4)))


def test_testing_toolkit_imports_without_hypothesis():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "from xconv.testing import assert_equivalent, max_rel_diff\nprint('OK')"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.stdout.strip() == "OK", out.stderr


# ---- fuzz: random bytes, truncations and random JSON give XconvError only ----

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_KEYS = [
    "format",
    "version",
    "layers",
    "input_shape",
    "name",
    "branches",
    "dim",
    "in_channels",
    "out_channels",
    "kernel_size",
    "padding",
    "in_features",
    "out_features",
]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_from_dict_fuzz(data):
    kinds = st.sampled_from([*xc.spec.LAYER_TYPES, "Sequential", "Add", "Concat", "Multiply", "Nope"])
    layer = st.fixed_dictionaries({"kind": kinds}, optional={k: _json for k in _KEYS})
    doc = data.draw(
        st.one_of(
            _json,
            st.fixed_dictionaries(
                {
                    "format": st.just("xconv.spec"),
                    "version": st.sampled_from([1, 2, 3]),
                    "layers": st.lists(layer, max_size=4),
                },
                optional={"input_shape": _json},
            ),
        )
    )
    try:
        xc.from_dict(doc)
    except xc.XconvError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_load_fuzz(tmp_path_factory, data):
    good = _checkpoint(tmp_path_factory.mktemp("fuzz")).read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        blob = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        at = data.draw(st.integers(0, len(good) - 1))
        blob = good[:at] + bytes([good[at] ^ data.draw(st.integers(1, 255))]) + good[at + 1 :]
    else:
        blob = data.draw(st.binary(max_size=200))
    path = tmp_path_factory.mktemp("fuzz") / "f.safetensors"
    path.write_bytes(blob)
    try:
        spec, weights = xc.load(path)
    except xc.XconvError:
        return
    # what loads must be the original: a truncation never loads, and a flipped byte only where it changes nothing
    # (the header's alignment spaces, a space turned into another JSON whitespace)
    assert how == "flip" or how == "random" and blob == good
    original_spec, original = xc.load(_checkpoint(tmp_path_factory.mktemp("ref")))
    assert spec == original_spec and all(np.array_equal(weights[k], original[k]) for k in original)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_cli_fuzz_is_exit_2(tmp_path_factory, data, capsys):
    """Random bytes, truncated checkpoints and random JSON given to the CLI: exit 2 or a clean run, never a
    traceback."""
    from xconv import cli

    folder = tmp_path_factory.mktemp("cli")
    good = _checkpoint(folder).read_bytes()
    ext = data.draw(st.sampled_from([".safetensors", ".json", ".keras", ".pt"]))
    how = data.draw(st.sampled_from(["truncate", "random", "json"]))
    if how == "truncate":
        blob = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "random":
        blob = data.draw(st.binary(max_size=300))
    else:
        blob = json.dumps(data.draw(_json)).encode()
    path = folder / f"f{ext}"
    path.write_bytes(blob)
    command = data.draw(st.sampled_from(["summary", "check", "convert"]))
    args = [command, str(path)]
    if command == "convert":
        args += ["--to", "safetensors", "-o", str(folder / "out.safetensors")]
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in captured.err, (args, code, captured.err)


def test_layer_subclasses_and_a_full_disk_are_clear(both_backends, tmp_path, monkeypatch):
    import errno

    import safetensors.numpy
    from torch import nn

    class Gate(nn.Sigmoid):  # a subclass without its own forward: traced, imported as the sigmoid it is
        pass

    assert [layer.kind for layer in xc.from_torch(nn.Sequential(Gate()), (3,)).layers] == ["Sigmoid"]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    with pytest.raises(xc.XconvError, match="No space left"):
        _checkpoint(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left behind


def test_keras_folds_refuse_what_they_cannot_make_exact(both_backends):
    """A crop folds into a conv only where one output position remains; a subsampling after a 'same' conv does
    not fold; a Reshape back to (1, 1, C) undoes only a Flatten of a 1x1 map; a depthwise kernel keeps its own
    layout whatever strides the built model uses."""
    import keras

    from xconv.kinds.conv._keras import Subsample2D

    inp = keras.Input((10, 10, 3))
    crop = keras.layers.Conv2D(4, 3)(keras.layers.Cropping2D(((0, 1), (0, 0)))(inp))
    with pytest.raises(xc.UnsupportedLayerError, match="crop before a conv folds only"):
        xc.from_keras(keras.Model(inp, keras.layers.GlobalAveragePooling2D()(crop)))
    same = Subsample2D((2, 2))(keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2)(inp))
    with pytest.raises(xc.UnsupportedLayerError, match="subsampling after a 'same' conv"):
        xc.from_keras(keras.Model(inp, same))
    small = keras.Input((2, 2, 3))
    back = keras.layers.Reshape((1, 1, 12))(keras.layers.Flatten()(small))
    with pytest.raises(xc.UnsupportedLayerError, match="could not be folded"):
        xc.from_keras(keras.Model(small, keras.layers.ReLU()(back)))
    tall = keras.Input((9, 4, 3))  # one output row: the built model computes that axis at stride 1
    model = keras.Model(tall, keras.layers.DepthwiseConv2D(3, strides=2)(tall))
    tm = xc.port(model, to="torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 4)).astype(np.float32)
    assert max_rel_diff(xc.to_nchw(np.asarray(model(xc.to_nhwc(x)))), xc.predict(tm, x)) < 1e-5


def test_torch_layer_subclasses_kept_whole_by_fx_are_refused(both_backends):
    import torch
    from torch import nn

    qat = torch.ao.nn.qat.Conv2d(2, 2, 3, qconfig=torch.ao.quantization.get_default_qat_qconfig("x86"))
    with pytest.raises(xc.UnsupportedLayerError, match="is not supported"):
        xc.from_torch(nn.Sequential(qat), (2, 5, 5))
