"""`make demo` runs `xconv demo`: the seed's experiment must pass, print its evidence and write its files."""

import json
import os

import numpy as np

from xconv import cli, demo


def test_demo_trains_ports_and_agrees(both_backends, tmp_path, capsys):
    out = tmp_path / "out"
    assert demo.main(["--steps", "12", "--print-every", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Iteration 0, loss = " in text and "Iteration 10, loss = " in text
    assert "weights bit-exact: True" in text and "MISMATCH" not in text
    assert sorted(os.listdir(out)) == sorted(
        ["curves.png", "convnet.safetensors", "convnet.keras", "convnet.pt", "metrics.json"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ok"] and metrics["argmax_agreement"] == 1.0
    assert metrics["val_accuracy_torch"] == metrics["val_accuracy_keras_ported"]
    assert len(metrics["torch_losses"]) == len(metrics["keras_losses"]) == 12
    # the loss went down: the demo really trains
    assert np.mean(metrics["torch_losses"][-3:]) < metrics["torch_losses"][0]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_cifar(folder, per_file=30, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        rec = rng.integers(0, 256, size=(per_file, 1 + 3072), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 10, size=per_file)
        rec.tofile(folder / f"data_batch_{i}.bin")


def test_demo_reads_cifar_binary_batches(both_backends, tmp_path, capsys):
    _fake_cifar(tmp_path)
    data = demo.load_cifar10(str(tmp_path))
    assert data.x_train.shape == (120, 3, 32, 32) and data.x_val.shape == (30, 3, 32, 32)
    # the record layout: label byte, then 1024 red, 1024 green, 1024 blue bytes, row-major
    raw = np.fromfile(tmp_path / "data_batch_1.bin", dtype=np.uint8).reshape(-1, 3073)
    assert data.y_train[0] == raw[0, 0]
    expected = (raw[0, 1 + 1024 + 5 * 32 + 7] / 255.0 - demo.CIFAR_MEAN[1]) / demo.CIFAR_STD[1]
    assert np.isclose(data.x_train[0, 1, 5, 7], expected, rtol=1e-6)
    assert cli.main(["demo", "--data", str(tmp_path), "--steps", "2", "--quiet", "--out", str(tmp_path / "o")]) == 0
    assert "CIFAR-10, 120 training / 30 validation images of 3x32x32" in capsys.readouterr().out


def test_demo_refuses_bad_data(tmp_path, capsys):
    assert demo.main(["--data", str(tmp_path)]) == 2
    assert "missing data_batch_1.bin" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    for i in range(1, 6):
        (tmp_path / "x" / f"data_batch_{i}.bin").write_bytes(b"\x00" * 100)
    assert demo.main(["--data", str(tmp_path / "x")]) == 2
    assert "is not a CIFAR-10 binary batch (100 bytes)" in capsys.readouterr().err
    assert demo.main(["--steps", "0"]) == 2


def test_batches_cover_each_epoch_once():
    batches = demo.batch_indices(10, 4, 7, seed=3)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    assert sorted(np.concatenate(batches[:3])) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(batches, demo.batch_indices(10, 4, 7, seed=3)))
