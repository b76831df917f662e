"""The seed's experiment end to end: one ConvNet spec trained in PyTorch, ported to Keras, and trained again in
Keras from the same initial weights on the same batches, with the evidence printed and written to disk.

Run with ``make demo`` or ``xconv demo [--data DIR] [--steps N] [--out DIR]``. By default the data is
scikit-learn's bundled digits (1,797 8x8 greyscale images; nothing is downloaded); ``--data DIR`` reads the
CIFAR-10 binary batches (``data_batch_1.bin`` ... ``data_batch_5.bin``) from DIR, the seed's own setting.
Exits 1 if the frameworks disagree beyond tolerance, 2 for bad arguments or data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import xconv as xc
from xconv._compare import TOLERANCE, max_rel_diff
from xconv.backends import get_backend

#: CIFAR-10 per-channel mean and std of the seed notebook's ``T.Normalize`` (pixels scaled to [0, 1] first)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_RECORD = 1 + 3 * 32 * 32


def seed_convnet(in_channels: int = 3, size: int = 32, classes: int = 10) -> xc.Sequential:
    """Conv(->32, 5x5, pad 2), ReLU, Conv(->16, 3x3, pad 1), ReLU, Flatten, Linear(->classes)."""
    return xc.Sequential(
        xc.Conv2d(in_channels, 32, kernel_size=5, padding=2),
        xc.ReLU(),
        xc.Conv2d(32, 16, kernel_size=3, padding=1),
        xc.ReLU(),
        xc.Flatten(),
        xc.Linear(16 * size * size, classes),
        input_shape=(in_channels, size, size),
    )


@dataclass
class Data:
    name: str
    x_train: np.ndarray  # NCHW float32, normalised
    y_train: np.ndarray  # int64
    x_val: np.ndarray
    y_val: np.ndarray


class DataError(Exception):
    """The arguments or the data given with --data cannot be used (exit code 2)."""


def load_digits(seed: int = 0, n_val: int = 297) -> Data:
    """scikit-learn's digits as (N, 1, 8, 8), split by a permutation drawn from ``seed`` into 1,500 training
    and ``n_val`` validation images, standardised with the training set's mean and std."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = digits.images.astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x_train, x_val = x[:-n_val], x[-n_val:]
    mean, std = x_train.mean(), x_train.std()
    return Data("digits", (x_train - mean) / std, y[:-n_val], (x_val - mean) / std, y[-n_val:])


def load_cifar10(folder: str) -> Data:
    """The CIFAR-10 binary training batches in ``folder``: the last 1,000 images for validation and the first
    49,000 for training, as the seed does (smaller files: the last fifth for validation), normalised with the
    seed's per-channel mean and std."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise DataError(
            f"--data {folder}: expected the CIFAR-10 binary batches (cifar-10-batches-bin) there; missing "
            f"{', '.join(missing)}"
        )
    records = []
    for n in names:
        raw = np.fromfile(os.path.join(folder, n), dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            raise DataError(f"--data {folder}: {n} is not a CIFAR-10 binary batch ({raw.size} bytes)")
        records.append(raw.reshape(-1, CIFAR_RECORD))
    table = np.concatenate(records)
    y = table[:, 0].astype(np.int64)
    if y.max() > 9:
        raise DataError(f"--data {folder}: labels above 9; these are not CIFAR-10 batches")
    x = table[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    x = (x - np.asarray(CIFAR_MEAN, np.float32)[:, None, None]) / np.asarray(CIFAR_STD, np.float32)[:, None, None]
    n_train = len(x) - min(1000, len(x) // 5)
    if n_train < 1 or n_train == len(x):
        raise DataError(f"--data {folder}: {len(x)} images are too few to split into training and validation")
    return Data("CIFAR-10", x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def batch_indices(n: int, batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` mini-batches of indices into ``n`` examples: a fresh permutation from ``seed`` each epoch,
    the last batch of an epoch possibly smaller (like a shuffled DataLoader)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        order = rng.permutation(n)
        out.extend(order[i : i + batch] for i in range(0, n, batch))
    return out[:steps]


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str, width: int = 30) -> None:
        self.total, self.label, self.width = total, label, width
        self.enabled = sys.stderr.isatty()

    def update(self, done: int, loss: float) -> None:
        if not self.enabled:
            return
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        sys.stderr.write(f"\r  {self.label} [{bar}] {done}/{self.total} loss {loss:.4f}")
        if done == self.total:
            sys.stderr.write("\r" + " " * (self.width + len(self.label) + 40) + "\r")
        sys.stderr.flush()


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == y))


def _train(
    framework: str, model: Any, data: Data, batches: list[np.ndarray], lr: float, print_every: int, verbose: bool
) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """The seed's loop with the framework's native SGD (lr, momentum 0.9, Nesterov) and cross-entropy; prints
    "Iteration t, loss = ..." and the validation accuracy every ``print_every`` steps (and after the last).
    Returns the per-step losses and the validation accuracy curve, measured five times as often as printed."""
    backend = get_backend(framework)
    progress = Progress(len(batches), framework)
    curve: list[tuple[int, float]] = []

    every = max(1, print_every // 5)

    def on_step(t: int, loss: float) -> None:
        progress.update(t + 1, loss)
        last = t == len(batches) - 1
        if t % every == 0 or last:
            acc = _accuracy(xc.predict(model, data.x_val), data.y_val)
            curve.append((t, acc))
            if verbose and (t % print_every == 0 or last):
                if progress.enabled:
                    sys.stderr.write("\r")
                correct = round(acc * len(data.y_val))
                print(f"Iteration {t}, loss = {loss:.4f}")
                print(f"Got {correct} / {len(data.y_val)} correct ({100 * acc:.2f})")

    optimizer = {"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": True}
    pairs = ((data.x_train[i], data.y_train[i]) for i in batches)
    losses = backend.train(model, pairs, optimizer, on_step)
    return losses, curve


def _plot(
    path: str,
    torch_losses: np.ndarray,
    tf_losses: np.ndarray,
    torch_acc: list[tuple[int, float]],
    tf_acc: list[tuple[int, float]],
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(len(torch_losses))
    ax1.plot(steps, torch_losses, label="PyTorch", linewidth=2.5, alpha=0.6)
    ax1.plot(steps, tf_losses, "--", label="Keras", linewidth=1.2, color="black")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("training loss (cross-entropy)")
    ax1.set_yscale("log")
    ax1.legend()
    for curve, label, style in (
        (torch_acc, "PyTorch", {"linewidth": 2.5, "alpha": 0.6}),
        (tf_acc, "Keras", {"linestyle": "--", "linewidth": 1.2, "color": "black"}),
    ):
        ax2.plot([t for t, _ in curve], [100 * a for _, a in curve], label=label, **style)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("validation accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR", help="folder with the CIFAR-10 binary batches (default: digits)")
    parser.add_argument("--steps", type=int, help="training steps (default: 300 on digits, one epoch on CIFAR-10)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64, the seed's)")
    parser.add_argument("--lr", type=float, default=1e-2, help="SGD learning rate (default 1e-2, the seed's)")
    parser.add_argument("--print-every", type=int, help="steps between progress lines (default 50; 100 on CIFAR)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights, data split and batch order")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--out", default="demo-out", help="output folder (default demo-out/)")
    parser.add_argument("--quiet", action="store_true", help="no per-iteration lines")


OUTPUT_FILES = ("curves.png", "convnet.safetensors", "convnet.keras", "convnet.pt", "metrics.json")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse hyperparameters that cannot train and an output folder that cannot be written, before any work."""
    if args.steps is not None and args.steps < 1:
        raise DataError(f"--steps must be at least 1. Received: {args.steps}")
    if args.batch < 1:
        raise DataError(f"--batch must be at least 1. Received: {args.batch}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise DataError(f"--lr must be a positive finite number. Received: {args.lr}")
    if args.print_every is not None and args.print_every < 1:
        raise DataError(f"--print-every must be at least 1. Received: {args.print_every}")
    if args.seed < 0:
        raise DataError(f"--seed must not be negative. Received: {args.seed}")
    check_out_folder(args.out)


def check_out_folder(out: str) -> None:
    """Refuse an ``--out`` that is not a folder, lies under something that is not one, cannot be written, or
    holds something other than a regular file where an output goes. Leaves nothing behind."""
    path = os.path.abspath(out)
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        if existing == path:
            raise DataError(f"--out {out} must be a folder; it exists and is not one")
        raise DataError(f"--out {out} cannot be made: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise DataError(f"--out {out}: cannot write in {existing} ({e.strerror})") from None
    if existing == path:
        for name in OUTPUT_FILES:
            file = os.path.join(path, name)
            if os.path.lexists(file) and not os.path.isfile(file):
                raise DataError(f"--out {out}: {name} there is not a regular file; cannot overwrite it")


def run(args: argparse.Namespace, echo: Callable[..., Any] = print) -> int:
    check_arguments(args)
    import torch

    started = time.perf_counter()
    data = load_cifar10(args.data) if args.data else load_digits(args.seed)
    steps = args.steps or (300 if args.data is None else -(-len(data.x_train) // args.batch))
    print_every = args.print_every or (50 if args.data is None else 100)
    x_train = data.x_train.astype(args.dtype)
    data = Data(data.name, x_train, data.y_train, data.x_val.astype(args.dtype), data.y_val)
    channels, size = data.x_train.shape[1], data.x_train.shape[2]
    spec = seed_convnet(channels, size, classes=10)
    tol = TOLERANCE[args.dtype]
    echo(
        f"Data: {data.name}, {len(data.x_train):,} training / {len(data.x_val):,} validation images of "
        f"{channels}x{size}x{size}; {args.dtype}"
    )
    echo("The seed's ConvNet as one xconv spec:\n")
    xc.summary(spec, print_fn=echo)
    batches = batch_indices(len(data.x_train), args.batch, steps, args.seed)

    echo(
        f"\n1. Train in PyTorch: {steps} steps of {args.batch}, SGD(lr={args.lr:g}, momentum=0.9, nesterov=True), "
        "cross-entropy"
    )
    tm = xc.build(spec, backend="torch", seed=args.seed, dtype=args.dtype)
    initial = {k: v.copy() for k, v in xc.get_weights(tm).items()}
    t0 = time.perf_counter()
    torch_losses, torch_acc = _train("torch", tm, data, batches, args.lr, print_every, not args.quiet)
    torch_time = time.perf_counter() - t0

    echo("\n2. Port the trained model to Keras (xconv.port, verified on a random batch)")
    t0 = time.perf_counter()
    km = xc.port(tm, to="tf")
    port_time = time.perf_counter() - t0
    logits_t, logits_k = xc.predict(tm, data.x_val), xc.predict(km, data.x_val)
    logit_err = max_rel_diff(logits_t, logits_k)
    acc_t, acc_k = _accuracy(logits_t, data.y_val), _accuracy(logits_k, data.y_val)
    agree = logits_t.argmax(1) == logits_k.argmax(1)
    # A disagreement only counts when torch's top two logits are further apart than the tolerance allows.
    top2 = np.sort(logits_t, axis=1)[:, -2:]
    margin_ok = (top2[:, 1] - top2[:, 0]) <= 2 * tol * max(1.0, float(np.abs(logits_t).max()))
    argmax_ok = bool(np.all(agree | margin_ok))
    back = xc.build(spec, backend="torch", dtype=args.dtype)
    xc.transfer_weights(km, back)
    trained = xc.get_weights(tm)
    exact = all(np.array_equal(trained[k], v) for k, v in xc.get_weights(back).items())
    echo(f"  ported in {port_time:.2f} s")
    echo(f"  validation accuracy   PyTorch {100 * acc_t:.2f}%   Keras {100 * acc_k:.2f}%")
    echo(f"  argmax agreement      {100 * agree.mean():.2f}% of {len(agree)} images")
    echo(
        f"  max |logit difference| {np.abs(logits_t - logits_k).max():.3e} (relative {logit_err:.3e}, "
        f"tolerance {tol:g})"
    )
    echo(f"  torch -> Keras -> torch weights bit-exact: {exact}")

    echo(
        f"\n3. Train the same spec in Keras from the same initial weights on the same {steps} batches "
        "(keras.optimizers.SGD, same settings)"
    )
    kt = xc.build(spec, backend="tf", dtype=args.dtype)
    xc.set_weights(kt, initial)
    t0 = time.perf_counter()
    tf_losses, tf_acc = _train("tf", kt, data, batches, args.lr, print_every, verbose=False)
    tf_time = time.perf_counter() - t0
    loss_diff = float(np.abs(torch_losses - tf_losses).max())
    loss_scale = max(1.0, float(np.abs(torch_losses).max()))
    # Each step adds at most one forward pass's rounding; a curve may drift by steps * tol (of the loss scale).
    curve_tol = steps * tol
    curve_ok = loss_diff / loss_scale <= curve_tol and bool(np.isfinite(tf_losses).all())
    final_k = xc.get_weights(kt)
    param_diff = max(
        float(np.abs(trained[k] - final_k[k]).max() / max(np.abs(trained[k]).max(), 1e-30)) for k in trained
    )
    for (t, a), (_, b) in zip(torch_acc, tf_acc):
        if t % print_every and t != steps - 1:
            continue
        echo(
            f"  iteration {t:>5}   loss PyTorch {torch_losses[t]:.6f}  Keras {tf_losses[t]:.6f}   "
            f"val acc PyTorch {100 * a:6.2f}%  Keras {100 * b:6.2f}%"
        )
    echo(
        f"  max per-step loss difference {loss_diff:.3e} (relative {loss_diff / loss_scale:.3e}, allowed "
        f"{curve_tol:.1e} = steps x {tol:g})"
    )
    echo(f"  final parameters, max per-tensor relative difference {param_diff:.3e}")
    echo(f"  training time  PyTorch {torch_time:.1f} s   Keras {tf_time:.1f} s")

    os.makedirs(args.out, exist_ok=True)
    files = {
        "plot": os.path.join(args.out, "curves.png"),
        "checkpoint": os.path.join(args.out, "convnet.safetensors"),
        "keras": os.path.join(args.out, "convnet.keras"),
        "torch": os.path.join(args.out, "convnet.pt"),
        "metrics": os.path.join(args.out, "metrics.json"),
    }
    _plot(
        files["plot"],
        torch_losses,
        tf_losses,
        torch_acc,
        tf_acc,
        f"Seed ConvNet on {data.name}: PyTorch vs Keras, same spec, weights and batches",
    )
    xc.save(files["checkpoint"], tm)
    km.save(files["keras"])
    torch.save(tm.state_dict(), files["torch"])
    ok = logit_err <= tol and argmax_ok and exact and curve_ok and acc_t == acc_k
    metrics = {
        "data": data.name,
        "dtype": args.dtype,
        "steps": steps,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "val_accuracy_torch": acc_t,
        "val_accuracy_keras_ported": acc_k,
        "argmax_agreement": float(agree.mean()),
        "max_abs_logit_diff": float(np.abs(logits_t - logits_k).max()),
        "max_rel_logit_diff": logit_err,
        "weights_round_trip_bit_exact": exact,
        "torch_losses": torch_losses.tolist(),
        "keras_losses": tf_losses.tolist(),
        "max_loss_diff": loss_diff,
        "max_param_diff": param_diff,
        "val_accuracy_curve_torch": torch_acc,
        "val_accuracy_curve_keras": tf_acc,
        "ok": ok,
    }
    with open(files["metrics"], "w") as f:
        json.dump(metrics, f, indent=1)
    echo(f"\nWrote {', '.join(files.values())}")
    echo(
        f"\nresult: {'the two frameworks compute and train the same function' if ok else 'MISMATCH beyond tolerance'}"
        f" ({time.perf_counter() - started:.0f} s)"
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xconv demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DataError as e:
        print(f"xconv demo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
