"""The command line refuses bad input and bad outputs with one line and exit 2, before doing any work, and never
leaves a half-written or overwritten file behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import stat
import sys
import threading
import time

import pytest

import xconv as xc
from xconv import cli, demo

SPEC = xc.Sequential(xc.Conv2d(1, 2, 3), xc.ReLU(), xc.Flatten(), xc.Linear(8, 3), input_shape=(1, 4, 4))


def _checkpoint(tmp_path):
    path = tmp_path / "m.safetensors"
    xc.save(path, SPEC, xc.get_weights(xc.build(SPEC, "numpy", seed=0)))
    return path


def _spec_json(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC.to_dict()))
    return path


def _refused(argv, capsys, message):
    """``argv`` exits 2 with one line on stderr holding ``message``, and no traceback."""
    assert cli.main([str(a) for a in argv]) == 2, argv
    err = capsys.readouterr().err
    assert message in err, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@contextlib.contextmanager
def _fifo_feeding(path, text):
    """A FIFO at ``path`` that hands ``text`` to a reader if one ever opens it, so reading it cannot hang."""
    os.mkfifo(path)
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.01)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(5)


def test_convert_refuses_to_write_over_its_input(tmp_path, capsys):
    src = _checkpoint(tmp_path)
    before = src.read_bytes()
    (tmp_path / "link.safetensors").symlink_to(src)
    os.link(src, tmp_path / "hard.safetensors")
    (tmp_path / "sub").mkdir()
    for out in (src, tmp_path / "link.safetensors", tmp_path / "hard.safetensors", tmp_path / "sub" / ".." / src.name):
        _refused(["convert", src, "--to", "safetensors", "-o", out], capsys, "is the input file")
    assert src.read_bytes() == before and stat.S_ISLNK(os.lstat(tmp_path / "link.safetensors").st_mode)


def test_convert_refuses_an_output_extension_that_does_not_match_to(tmp_path, capsys):
    src = _checkpoint(tmp_path)
    for to, name, found in (
        ("safetensors", "o.pt", "ends in '.pt'"),
        ("torch", "o.keras", "ends in '.keras'"),
        ("tf", "o.pt", "ends in '.pt'"),
        ("tf", "o", "has no extension"),
        ("torch", "o.safetensors", "ends in '.safetensors'"),
    ):
        _refused(["convert", src, "--to", to, "-o", tmp_path / name], capsys, f"--to {to} writes")
        assert not (tmp_path / name).exists()
    _refused(["convert", src, "--to", "safetensors", "-o", tmp_path / "o.pt"], capsys, "o.pt ends in '.pt'")


@pytest.mark.parametrize("to,name", [("torch", "o.pt"), ("tf", "o.keras"), ("safetensors", "o.safetensors")])
def test_convert_writes_through_a_temporary_file(both_backends, tmp_path, capsys, monkeypatch, to, name):
    import keras

    from xconv import checkpoint
    from xconv.backends import get_backend

    src = _checkpoint(tmp_path)
    out = tmp_path / "out" / name
    out.parent.mkdir()
    out.write_bytes(b"old")
    os.chmod(out, 0o640)

    def half_write(*args):
        path = next(a for a in args if isinstance(a, (str, os.PathLike)))
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        if to == "torch":
            m.setattr(get_backend("torch"), "write_state_dict", half_write)
        elif to == "tf":
            m.setattr(keras.Model, "save", lambda self, path, *a, **k: half_write(path))
        else:
            m.setattr(checkpoint, "save", half_write)
        _refused(["convert", src, "--to", to, "-o", out], capsys, "RuntimeError: disk full")
    assert out.read_bytes() == b"old" and os.listdir(out.parent) == [name]
    # a real conversion replaces the file whole, keeping its permissions; a new file gets the usual ones
    assert cli.main(["convert", str(src), "--to", to, "-o", str(out)]) == 0
    assert os.listdir(out.parent) == [name] and stat.S_IMODE(os.stat(out).st_mode) == 0o640
    fresh = tmp_path / "out" / ("fresh" + os.path.splitext(name)[1])
    assert cli.main(["convert", str(src), "--to", to, "-o", str(fresh)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~umask
    assert sorted(os.listdir(out.parent)) == sorted([name, fresh.name])
    if to == "safetensors":
        _, weights = xc.load(out)
        assert set(weights) == set(xc.load(src)[1])
    capsys.readouterr()


def test_convert_refuses_an_output_place_it_cannot_write(tmp_path, capsys):
    src = _checkpoint(tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.safetensors").mkdir()
    _refused(
        ["convert", src, "--to", "safetensors", "-o", tmp_path / "missing" / "o.safetensors"], capsys, "does not exist"
    )
    _refused(
        ["convert", src, "--to", "safetensors", "-o", tmp_path / "file" / "o.safetensors"], capsys, "is not a folder"
    )
    _refused(
        ["convert", src, "--to", "safetensors", "-o", tmp_path / "dir.safetensors"], capsys, "is not a regular file"
    )
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):  # not writable, even by root
        _refused(
            ["convert", src, "--to", "safetensors", "-o", "/proc/self/o.safetensors"],
            capsys,
            "cannot write /proc/self/o.safetensors",
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
        try:
            _refused(["convert", src, "--to", "safetensors", "-o", ro / "o.safetensors"], capsys, "not writable")
        finally:
            os.chmod(ro, 0o755)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".xconv")]


@pytest.fixture
def no_training(monkeypatch):
    """Loading the data, the first piece of the demo's work, is recorded and stopped."""
    started = []

    def load(*args, **kwargs):
        started.append(args)
        raise RuntimeError("the work started")

    monkeypatch.setattr(demo, "load_digits", load)
    monkeypatch.setattr(demo, "load_cifar10", load)
    return started


def test_demo_refuses_an_unwritable_out_before_training(tmp_path, capsys, no_training):
    (tmp_path / "file").write_text("x")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "convnet.keras").mkdir()
    cases = [
        (tmp_path / "file", "it exists and is not one"),
        (tmp_path / "file" / "sub", "is not a folder"),
        (tmp_path / "o", "convnet.keras there is not a regular file"),
    ]
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        cases.append(("/proc/self/xconv-demo", "cannot write in /proc/self"))
    for out, message in cases:
        _refused(["demo", "--steps", "1", "--out", out], capsys, message)
    assert no_training == [] and not (tmp_path / "file" / "sub").exists()
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--lr", "nan"], "--lr must be a positive finite number. Received: nan"),
        (["--lr", "inf"], "--lr must be a positive finite number. Received: inf"),
        (["--lr", "-1"], "--lr must be a positive finite number. Received: -1.0"),
        (["--lr", "0"], "--lr must be a positive finite number"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "-5"], "--steps must be at least 1"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--print-every", "0"], "--print-every must be at least 1"),
        (["--seed", "-1"], "--seed must not be negative"),
    ],
)
def test_demo_refuses_bad_hyperparameters_before_training(tmp_path, capsys, no_training, argv, message):
    _refused(["demo", *argv, "--out", tmp_path / "o"], capsys, message)
    assert no_training == [] and not (tmp_path / "o").exists()


def test_bad_spec_json_is_exit_2(tmp_path, capsys):
    cases = {
        "latin1.json": (b'{"name": "caf\xe9"}', "is not UTF-8 text"),
        "deep.json": (b"[" * 100_000, "nested too deeply"),
        "list.json": (b"[1, 2]", "expected a dict"),
        "broken.json": (b'{"format": ', "is not JSON"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        _refused(["summary", tmp_path / name], capsys, message)


def test_files_that_are_not_keras_files_are_exit_2(both_backends, tmp_path, capsys):
    (tmp_path / "text.keras").write_text("hello")
    with open(tmp_path / "pickle.keras", "wb") as f:
        pickle.dump({"layers": [1, 2]}, f)
    (tmp_path / "empty.keras").write_bytes(b"")
    for name in ("text.keras", "pickle.keras", "empty.keras"):
        for argv in (
            ["summary", tmp_path / name],
            ["check", tmp_path / name],
            ["convert", tmp_path / name, "--to", "torch", "-o", tmp_path / "o.pt"],
        ):
            _refused(argv, capsys, f"{name} is not a readable .keras file")
    assert not (tmp_path / "o.pt").exists()


def test_inputs_that_are_not_regular_files_are_refused(tmp_path, capsys):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    (tmp_path / "zero.safetensors").symlink_to(os.devnull)
    (tmp_path / "folder.json").mkdir()
    with _fifo_feeding(tmp_path / "fifo.json", json.dumps(SPEC.to_dict())):
        _refused(["summary", tmp_path / "fifo.json"], capsys, "fifo.json is not a regular file")
        _refused(["check", tmp_path / "fifo.json"], capsys, "fifo.json is not a regular file")
    _refused(["summary", tmp_path / "zero.safetensors"], capsys, "zero.safetensors is not a regular file")
    _refused(["summary", os.devnull], capsys, "is not a regular file")
    _refused(["summary", tmp_path / "folder.json"], capsys, "folder.json is not a regular file")


def test_a_fifo_given_as_spec_is_refused(both_backends, tmp_path, capsys):
    import torch

    torch.save(xc.build(SPEC, "torch", seed=0).state_dict(), tmp_path / "w.pt")
    with _fifo_feeding(tmp_path / "fifo.json", json.dumps(SPEC.to_dict())):
        _refused(
            [
                "convert",
                tmp_path / "w.pt",
                "--spec",
                tmp_path / "fifo.json",
                "--to",
                "safetensors",
                "-o",
                tmp_path / "o.safetensors",
            ],
            capsys,
            "fifo.json is not a regular file",
        )
    assert not (tmp_path / "o.safetensors").exists()


def test_check_refuses_a_huge_batch_and_a_negative_seed(tmp_path, capsys):
    src = _checkpoint(tmp_path)
    _refused(["check", src, "--batch", 10**12], capsys, "is too large")
    _refused(["check", src, "--seed", -1], capsys, "--seed must not be negative. Received: -1")
    conv = tmp_path / "conv.json"
    conv.write_text(json.dumps(xc.Sequential(xc.Conv2d(1, 1, 1), input_shape=(1, 4, 4)).to_dict()))
    _refused(["check", conv, "--batch", 1, "--input-shape", "1,1000000,1000000"], capsys, "is too large")


def test_summary_and_check_take_spec_for_a_state_dict(both_backends, tmp_path, capsys):
    import torch

    spec = _spec_json(tmp_path)
    torch.save(xc.build(SPEC, "torch", seed=0).state_dict(), tmp_path / "w.pt")
    _refused(["summary", tmp_path / "w.pt"], capsys, "needs --spec spec.json")
    assert cli.main(["summary", str(tmp_path / "w.pt"), "--spec", str(spec)]) == 0
    assert "total parameters: 47" in capsys.readouterr().out
    assert cli.main(["check", str(tmp_path / "w.pt"), "--spec", str(spec), "--batch", "2"]) == 0
    assert "OK: torch and tf agree on every layer" in capsys.readouterr().out
    _refused(["summary", spec, "--spec", spec], capsys, "--spec is only for torch state_dict")


def test_an_unexpected_failure_is_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    from xconv import _api

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(_api, "summary", boom)
    spec = _spec_json(tmp_path)
    err = _refused(["summary", spec], capsys, "RuntimeError: boom")
    assert "--debug" in err
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--debug", "summary", str(spec)])


def test_version_and_quiet_output(tmp_path):
    """``xconv --version``; a command that imports TensorFlow prints none of its native start-up lines."""
    import pathlib
    import subprocess

    exe = pathlib.Path(sys.executable).with_name("xconv")
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"xconv {xc.__version__}"
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC.to_dict()))
    done = subprocess.run([str(exe), "check", str(spec), "--batch", "2"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "absl::InitializeLog" not in done.stderr and "I0000" not in done.stderr and "oneDNN" not in done.stderr
    assert "agree on every layer" in done.stdout
