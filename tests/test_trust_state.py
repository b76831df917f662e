"""What xconv saves, loads, ports and converts is the model the user has, or a clear error: models edited after
their build, tampered checkpoint headers, mixed float dtypes, and output paths the command line cannot write."""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import time

import numpy as np
import pytest

import xconv as xc
from xconv import checkpoint, cli

CHAIN = xc.Sequential(
    xc.Conv2d(2, 4, 3, padding=1), xc.ReLU(), xc.Conv2d(4, 3, 3, padding=1), xc.ReLU(), input_shape=(2, 6, 6)
)
GRAPH = xc.Sequential(
    xc.Conv2d(2, 4, 3, padding=1),
    xc.Add(xc.Sequential(xc.Conv2d(4, 4, 3, padding=1), xc.ReLU()), xc.Identity()),
    input_shape=(2, 6, 6),
)


def _batch(shape=(2, 6, 6), seed=1):
    return np.random.default_rng(seed).standard_normal((3, *shape)).astype("float32")


def _assert_same_function(model, other, shape=(2, 6, 6)):
    x = _batch(shape)
    a, b = xc.predict(model, x), xc.predict(other, x)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max())


def _refused(argv, capsys, *messages):
    """``argv`` exits 2 with one line on stderr holding every one of ``messages``, and no traceback."""
    assert cli.main([str(a) for a in argv]) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "unexpected" not in err, err
    for message in messages:
        assert message in err, (argv, message, err)
    return err


# ---- models edited after xconv.build: save, load_model and port follow the model as it is now ----


def _torch_edits():
    import torch
    from torch import nn

    def stride(tm):
        tm[2].stride = (2, 2)

    def dilation(tm):
        tm[2].dilation, tm[2].padding = (2, 2), (2, 2)

    def padding_mode(tm):
        tm[0].padding_mode = "circular"

    def replace(tm):
        tm[1] = nn.Tanh()

    def slope(tm):
        tm[3] = nn.LeakyReLU(0.25)

    def append(tm):
        tm.append(nn.Sigmoid())

    def delete(tm):
        del tm[3]

    def new_weight_shape(tm):
        tm[2].out_channels = 5
        tm[2].weight = nn.Parameter(torch.randn(5, 4, 3, 3))
        tm[2].bias = nn.Parameter(torch.randn(5))

    return [stride, dilation, padding_mode, replace, slope, append, delete, new_weight_shape]


@pytest.mark.parametrize("edit", _torch_edits(), ids=lambda f: f.__name__)
def test_an_edited_torch_model_saves_loads_and_ports_as_it_is_now(both_backends, tmp_path, edit):
    tm = xc.build(CHAIN, "torch", seed=0)
    edit(tm)
    assert xc.spec_of(tm) != xc.spec_of(xc.build(CHAIN, "torch"))
    path = tmp_path / "m.safetensors"
    xc.save(path, tm)
    _assert_same_function(tm, xc.load_model(path, "torch"))
    _assert_same_function(tm, xc.port(tm, "tf"))
    assert set(xc.get_weights(tm)) == set(tm.state_dict())


def test_an_edited_branch_of_a_torch_graph_model_is_seen(both_backends, tmp_path):
    from torch import nn

    tm = xc.build(GRAPH, "torch", seed=0)
    tm.get_submodule("1.0").add_module("1", nn.Tanh())  # the ReLU inside the residual branch
    path = tmp_path / "m.safetensors"
    xc.save(path, tm)
    assert "Tanh" in repr(xc.load(path)[0])
    _assert_same_function(tm, xc.load_model(path, "torch"))
    _assert_same_function(tm, xc.port(tm, "tf"))


def test_an_edit_xconv_cannot_import_or_does_not_see_is_refused(both_backends, tmp_path):
    import torch
    from torch import nn

    class Cumsum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1)

    tm = xc.build(CHAIN, "torch", seed=0)
    tm[1] = Cumsum()
    path = tmp_path / "m.safetensors"
    for call in (lambda: xc.save(path, tm), lambda: xc.port(tm, "tf"), lambda: xc.get_weights(tm)):
        with pytest.raises(xc.XconvError, match=r"edited after xconv\.build \('1' replaced: ReLU -> Cumsum\)"):
            call()
    assert not path.exists()

    # in a non-zeros padding mode torch's conv pads by _reversed_padding_repeated_twice, made from `padding` at
    # construction; the importer reads `padding`: setting either afterwards is an edit the import does not see
    for padding, pads, message in (((0, 0), None, "output shape"), ((1, 1), [2, 0, 1, 1], "relative on a random")):
        tm = xc.build(CHAIN, "torch", seed=0)
        tm[0].padding_mode, tm[0].padding = "reflect", padding
        if pads is not None:
            tm[0]._reversed_padding_repeated_twice = pads
        with pytest.raises(
            xc.XconvError, match=rf"\('0' \(Conv2d\) changed\) in a way xconv's importer does not see.*{message}"
        ):
            xc.save(path, tm)
        assert not path.exists()


def _hook(module, args, output):
    return None


def test_training_modes_hooks_and_copies_are_no_edit(both_backends):
    import torch

    for spec in (CHAIN, GRAPH):
        tm = xc.build(spec, "torch", seed=0)
        stored = tm.xconv_spec
        optimizer = torch.optim.SGD(tm.parameters(), lr=0.1)
        tm.train()
        tm(torch.from_numpy(_batch())).square().mean().backward()
        optimizer.step()
        tm.eval()
        tm.requires_grad_(False)
        tm.register_forward_hook(_hook)
        xc.set_weights(tm, xc.get_weights(xc.build(spec, "torch", seed=1)))
        assert xc.spec_of(tm) is stored and not hasattr(tm, "xconv_edited")
        if spec is GRAPH:
            continue  # (torch copies and pickles a GraphModule as its code: the xconv attributes are not kept)
        assert xc.spec_of(copy.deepcopy(tm)) == stored
        buffer = io.BytesIO()
        torch.save(tm, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        assert xc.spec_of(loaded) == stored and not hasattr(loaded, "xconv_edited")


def test_an_edited_keras_model_saves_loads_and_ports_as_it_is_now(both_backends, tmp_path):
    import keras

    def activation(km):
        km.get_layer("conv2d_0").activation = keras.activations.tanh  # the conv's fused ReLU

    def stride(km):
        km.get_layer("conv2d_2").strides = (2, 2)

    for edit in (activation, stride):
        km = xc.build(CHAIN, "tf", seed=0)
        edit(km)
        path = tmp_path / f"{edit.__name__}.safetensors"
        xc.save(path, km)
        _assert_same_function(km, xc.load_model(path, "tf"))
        _assert_same_function(km, xc.port(km, "torch"))
    km = xc.build(CHAIN, "tf", seed=0)
    km.get_layer("conv2d_0").dtype_policy = "mixed_float16"  # computes in float16: no spec describes that
    with pytest.raises(xc.XconvError, match=r"edited after xconv\.build \('conv2d_0' \(Conv2D\) changed\)"):
        xc.save(tmp_path / "mixed.safetensors", km)


def test_training_freezing_and_compiling_a_keras_model_are_no_edit(both_backends):
    km = xc.build(CHAIN, "tf", seed=0)
    stored = km.xconv_spec
    xc.predict(km, _batch())
    km.compile(optimizer="sgd", loss="mse")
    km.fit(np.transpose(_batch(), (0, 2, 3, 1)), np.zeros((3, 6, 6, 3), "float32"), epochs=1, verbose=0)
    for layer in km.layers:
        layer.trainable = False
    xc.set_weights(km, xc.get_weights(xc.build(CHAIN, "numpy", seed=1)))
    assert xc.spec_of(km) is stored and not hasattr(km, "xconv_edited")


def test_recording_the_structure_is_cheap(both_backends):
    from xconv.backends import get_backend

    deep = xc.Sequential(
        *[layer for _ in range(25) for layer in (xc.Conv2d(4, 4, 3, padding=1), xc.ReLU())], input_shape=(4, 8, 8)
    )
    for name in ("torch", "tf"):
        model = xc.build(deep, name, seed=0)
        structure = get_backend(name).structure
        assert structure(model) == model.xconv_structure
        seconds = []
        for _ in range(5):
            start = time.perf_counter()
            structure(model)
            seconds.append(time.perf_counter() - start)
        assert min(seconds) < 0.05, (name, seconds)  # measured: well under 2 ms for these 50 layers


# ---- the checkpoint digest covers the header: spec, format, tensor names, dtypes and shapes ----


def _save(tmp_path, spec=CHAIN, name="m.safetensors"):
    path = tmp_path / name
    xc.save(path, xc.build(spec, "numpy", seed=0, dtype="float32"))
    return path


def _rewrite_header(path, change):
    """Apply ``change`` to the parsed safetensors header of ``path`` and write the file back, consistent (the
    header length updated), as a tool that edits the header would."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def _spec_change(change):
    def apply(header):
        spec = json.loads(header["__metadata__"]["spec"])
        change(spec)
        header["__metadata__"]["spec"] = json.dumps(spec)

    return apply


def _set(key, value):
    def apply(header):
        header["__metadata__"][key] = value

    return apply


HEADER_CHANGES = {
    "dilation 1 -> 3": _spec_change(lambda s: s["layers"][2].update(dilation=[3, 3], padding=[[3, 3], [3, 3]])),
    "ReLU -> Tanh": _spec_change(lambda s: s["layers"][1].update(kind="Tanh")),
    "a layer name": _spec_change(lambda s: s["layers"][1].update(name="act")),
    "a tensor's dtype": lambda h: h["0.bias"].update(dtype="I32"),
    "format version 2 -> 1": _set("format_version", "1"),
    "an unknown format version": _set("format_version", "3"),
    "the digest removed": lambda h: h["__metadata__"].pop("sha256"),
    "an entry added": _set("note", "hello"),
}


@pytest.mark.parametrize("change", list(HEADER_CHANGES), ids=list(HEADER_CHANGES))
def test_a_changed_header_is_an_error_on_load(tmp_path, capsys, change):
    path = _save(tmp_path)
    xc.load(path)
    _rewrite_header(path, HEADER_CHANGES[change])
    with pytest.raises(xc.XconvError, match="digest|format version"):
        xc.load(path)
    _refused(["summary", path], capsys, str(path))


def test_every_flipped_bit_of_the_header_is_an_error(tmp_path):
    path = _save(tmp_path, xc.Sequential(xc.Conv2d(1, 1, 1), xc.ReLU(), input_shape=(1, 2, 2)))
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    loaded = []
    for at in range(8 + n):
        for bit in (0x01, 0x08):
            flipped = bytearray(data)
            flipped[at] ^= bit
            path.write_bytes(bytes(flipped))
            try:
                xc.load(path)
            except xc.XconvError:
                continue
            loaded.append((at, bit, data[at : at + 1]))
    assert loaded == []


def test_format_1_files_still_load_with_their_tensor_digest(tmp_path, capsys):
    import safetensors.numpy

    spec, weights = xc.load(_save(tmp_path))
    meta = {"format": "xconv.checkpoint", "format_version": "1", "spec": json.dumps(spec.to_dict())}
    old = tmp_path / "old.safetensors"
    safetensors.numpy.save_file(weights, str(old), {**meta, "sha256": checkpoint.digest(weights)})
    assert checkpoint.format_version(old) == "1" and checkpoint.has_digest(old)
    assert xc.load(old)[0] == spec
    assert cli.main(["summary", str(old)]) == 0
    assert "format 1" in capsys.readouterr().out
    bad = dict(weights, **{"0.bias": weights["0.bias"] + 1})
    safetensors.numpy.save_file(bad, str(old), {**meta, "sha256": checkpoint.digest(weights)})
    with pytest.raises(xc.XconvError, match="does not match the digest"):
        xc.load(old)
    new = tmp_path / "new.safetensors"
    assert cli.main(["convert", str(_save(tmp_path)), "--to", "safetensors", "-o", str(new)]) == 0
    assert checkpoint.format_version(new) == checkpoint.CHECKPOINT_VERSION == "2"
    assert cli.main(["summary", str(new)]) == 0
    assert "note" not in capsys.readouterr().out


# ---- mixed float32 / float64 weights are refused, naming them, unless a dtype is chosen ----

SMALL = xc.Sequential(xc.Conv2d(1, 2, 3), xc.ReLU(), xc.Flatten(), xc.Linear(8, 3), input_shape=(1, 4, 4))


def _mixed_weights(odd="3.bias"):
    weights = xc.get_weights(xc.build(SMALL, "numpy", seed=0))  # float64
    weights[odd] = weights[odd].astype(np.float32)
    return weights


def test_the_library_refuses_mixed_weights_and_loads_them_as_a_chosen_dtype(tmp_path):
    import safetensors.numpy

    weights = _mixed_weights()
    with pytest.raises(xc.WeightError, match=r"'3\.bias' is float32, the other 3 float64; cast them"):
        xc.save(tmp_path / "m.safetensors", SMALL, weights)
    path = tmp_path / "mixed.safetensors"
    meta = {"format": "xconv.checkpoint", "format_version": "1", "spec": json.dumps(SMALL.to_dict())}
    safetensors.numpy.save_file(weights, str(path), meta)
    with pytest.raises(xc.WeightError, match=r"'3\.bias' is float32.*pass dtype='float64'"):
        xc.load(path)
    with pytest.raises(xc.WeightError, match="pass dtype="):
        xc.load_model(path, "numpy")
    exact = xc.load(path, dtype="float64")[1]
    assert all(exact[k].dtype == np.float64 and (exact[k] == weights[k]).all() for k in weights)
    assert xc.load(path, dtype=np.float32)[1]["0.weight"].dtype == np.float32
    assert xc.weights.single_dtype({"a": np.zeros(1, np.float16), "b": np.zeros(1, np.float32)}, "") == "float32"


@pytest.mark.parametrize("to, name", [("safetensors", "o.safetensors"), ("torch", "o.pt"), ("tf", "o.keras")])
def test_convert_refuses_mixed_dtypes_unless_dtype_is_given(both_backends, tmp_path, capsys, to, name):
    import torch

    spec_json = tmp_path / "spec.json"
    spec_json.write_text(json.dumps(SMALL.to_dict()))
    weights = _mixed_weights("0.weight")
    state = tmp_path / "in.pt"
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, state)
    out = tmp_path / name
    _refused(["convert", state, "--spec", spec_json, "--to", to, "-o", out], capsys, "'0.weight' is float32", "--dtype")
    assert not out.exists()
    for dtype in ("float64", "float32"):
        assert (
            cli.main(["convert", str(state), "--spec", str(spec_json), "--to", to, "-o", str(out), "--dtype", dtype])
            == 0
        )
        assert f"({to}, {dtype}," in capsys.readouterr().out
        if to == "safetensors":
            got = xc.load(out)[1]
        elif to == "torch":
            got = {k: v.numpy() for k, v in torch.load(out, weights_only=True).items()}
        else:
            import keras

            got = xc.from_keras(keras.models.load_model(out), return_weights=True)[1]
        assert {v.dtype.name for k, v in got.items()} == {dtype}
        if dtype == "float64":  # every value kept, the float32 one widened exactly
            assert all((got[k] == weights[k].astype(np.float64)).all() for k in weights)


# ---- the command line's output paths and .keras inputs: one sentence naming the argument ----


def _small_checkpoint(tmp_path):
    path = tmp_path / "m.safetensors"
    xc.save(path, SMALL, xc.get_weights(xc.build(SMALL, "numpy", seed=0)))
    return path


def test_convert_refuses_broken_and_looping_output_links(tmp_path, capsys):
    src = _small_checkpoint(tmp_path)
    (tmp_path / "to-nowhere.safetensors").symlink_to(tmp_path / "missing" / "x.safetensors")
    (tmp_path / "to-missing.pt").symlink_to("missing.pt")
    (tmp_path / "self.safetensors").symlink_to("self.safetensors")
    (tmp_path / "a.pt").symlink_to("b.pt")
    (tmp_path / "b.pt").symlink_to("a.pt")
    cases = [
        ("to-nowhere.safetensors", "safetensors", "is a broken symbolic link"),
        ("to-missing.pt", "torch", "is a broken symbolic link (to missing.pt"),
        ("self.safetensors", "safetensors", "loops back on itself"),
        ("a.pt", "torch", "loops back on itself"),
    ]
    before = sorted(os.listdir(tmp_path))
    for out, to, message in cases:
        _refused(["convert", src, "--to", to, "-o", tmp_path / out], capsys, f"-o {tmp_path / out} ", message)
    assert sorted(os.listdir(tmp_path)) == before and not (tmp_path / "missing.pt").exists()
    assert all((tmp_path / out).is_symlink() for out, _, _ in cases)


def test_save_through_broken_or_looping_links(tmp_path):
    weights = xc.get_weights(xc.build(SMALL, "numpy", seed=0))
    (tmp_path / "to-nowhere.safetensors").symlink_to(tmp_path / "missing" / "x.safetensors")
    (tmp_path / "self.safetensors").symlink_to("self.safetensors")
    (tmp_path / "to-new.safetensors").symlink_to("new.safetensors")
    with pytest.raises(xc.XconvError, match="to-nowhere.safetensors: it is a symbolic link to .*whose folder does"):
        xc.save(tmp_path / "to-nowhere.safetensors", SMALL, weights)
    with pytest.raises(xc.XconvError, match="self.safetensors: it is a symbolic link that loops"):
        xc.save(tmp_path / "self.safetensors", SMALL, weights)
    xc.save(tmp_path / "to-new.safetensors", SMALL, weights)  # into an existing folder: written, as torch.save does
    assert (tmp_path / "to-new.safetensors").is_symlink() and xc.load(tmp_path / "new.safetensors")[0] == SMALL


def test_keras_file_names_must_end_in_lower_case_keras(both_backends, tmp_path, capsys):
    src = _small_checkpoint(tmp_path)
    for out in ("OUT.KERAS", "out.Keras"):
        stem = out.split(".")[0]
        _refused(["convert", src, "--to", "tf", "-o", tmp_path / out], capsys, "lower-case .keras", f"{stem}.keras")
        assert not (tmp_path / out).exists()
    assert cli.main(["convert", str(src), "--to", "tf", "-o", str(tmp_path / "ok.keras")]) == 0
    os.rename(tmp_path / "ok.keras", tmp_path / "UP.KERAS")
    for command in ("summary", "check"):
        _refused([command, tmp_path / "UP.KERAS"], capsys, "rename it to", "UP.keras")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_precision_keras_file_is_named_as_such_not_as_edited(both_backends, tmp_path, capsys, policy):
    import keras

    path = tmp_path / "mixed.keras"
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(2, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, dtype=policy, name="head"),  # one layer is enough
        ]
    )
    model.save(path)
    out = tmp_path / "o.safetensors"
    for argv in (["convert", path, "--to", "safetensors", "-o", out], ["check", path]):
        err = _refused(argv, capsys, f"layer 'head' uses the '{policy}' dtype policy", "float32 or float64")
        assert "edited" not in err and "set_dtype_policy('float32')" in err
    assert not out.exists()
    assert cli.main(["summary", str(path)]) == 0  # the architecture can still be listed
