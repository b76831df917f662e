"""Run-time overhead on real models: torchvision's resnet50, mobilenet_v3_large, efficientnet_b0 and
convnext_tiny imported with ``xc.from_torch`` and built again with ``xc.build(spec, "torch")`` +
``xc.set_weights``, against the original module (eager, eval, no_grad); keras.applications' ResNet50,
MobileNetV2 and EfficientNetB0 imported with ``xc.from_keras`` and built again with ``xc.build(spec, "tf")``,
against the original (eager call ``model(x, training=False)`` and the same call inside ``tf.function``).
Batch 8 of 3x128x128, random weights (nothing downloaded). Pairs are interleaved and each figure is a median
of per-pair ratios (rebuilt time / original time; target <= 1.02). Each rebuilt model is checked against its
original on the timed batch (max |a - b| / max(1, max |a|)).

Also counts the layout changes each model runs: ``permute`` calls in one torch forward (counted by a ``TorchFunctionMode``) and,
for Keras, Permute/Transpose layers in the model and Transpose ops in its traced ``tf.function`` graph.
torchvision's ConvNeXt itself permutes to channels-last around each block's LayerNorm and Linear layers; the
rebuilt model keeps NCHW, runs each LayerNorm over the channels as permute -> layer_norm -> permute (xconv's
``ChannelLayerNorm``) and each per-pixel Linear as the 1x1 convolution it is.
Prints a table and writes benchmarks/results/real_models.json.

    .venv/bin/python benchmarks/real_models.py [--repeats N] [--threads N]

On a machine shared with other work, torch's OpenMP workers wait at every operator's barrier while a core is
taken, and every model then takes about the same time whatever it computes; ``--threads 1`` measures
single-threaded torch instead (results in real_models_threads1.json).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from _timing import machine, paired, write

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# (the zoo's seeded models live with the tests that port them)
import xconv as xc
from tests.zoo_support import torchvision_model
from xconv.testing import max_rel_diff

TORCHVISION = ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny")
KERAS = ("ResNet50", "MobileNetV2", "EfficientNetB0")
BATCH, SHAPE = 8, (3, 128, 128)


def torch_permutes(model: object, x: object) -> int:
    """``permute`` calls (``Tensor.permute`` or ``torch.permute``) in one forward of ``model``."""
    import torch
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if getattr(func, "__name__", "") == "permute":
                self.n += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count() as count:
        model(x)  # type: ignore[operator]
    return count.n


def keras_permutes(model: object) -> tuple[int, int]:
    """Permute/Transpose layers in a Keras model, and Transpose ops in its traced inference graph."""
    import tensorflow as tf

    layers = sum(
        1
        for layer in model._flatten_layers()  # type: ignore[attr-defined]
        if any(w in type(layer).__name__ for w in ("Permute", "Transpose"))
        and "Conv" not in type(layer).__name__  # Conv2DTranspose is a convolution, not a layout change
    )
    graph = (
        tf.function(lambda v: model(v, training=False))  # type: ignore[operator]
        .get_concrete_function(tf.TensorSpec((None, *SHAPE[1:], SHAPE[0]), tf.float32))
        .graph
    )
    ops = sum(1 for op in graph.get_operations() if op.type in ("Transpose", "ConjugateTranspose"))
    return layers, ops


def keras_application(name: str) -> object:
    import inspect

    import keras

    keras.utils.set_random_seed(0)
    build = getattr(keras.applications, name)
    extra = {"include_preprocessing": False} if "include_preprocessing" in inspect.signature(build).parameters else {}
    return build(weights=None, input_shape=(*SHAPE[1:], SHAPE[0]), **extra)


def torch_row(name: str, xt: object, repeats: int) -> tuple:
    import torch

    original = torchvision_model(name)
    spec, weights = xc.from_torch(original, SHAPE, return_weights=True)
    rebuilt = xc.build(spec, "torch").eval()
    xc.set_weights(rebuilt, weights)
    with torch.no_grad():
        err = max_rel_diff(original(xt).numpy(), rebuilt(xt).numpy())
        r, a, b = paired(lambda: rebuilt(xt), lambda: original(xt), repeats)
    perm = f"{torch_permutes(rebuilt, xt)} / {torch_permutes(original, xt)}"
    return (f"torchvision {name}", "torch eager", a, b, r, err, perm)


def keras_rows(name: str, xk: object, repeats: int) -> list[tuple]:
    import tensorflow as tf

    original = keras_application(name)
    spec, weights = xc.from_keras(original, return_weights=True)
    rebuilt = xc.build(spec, "tf")
    xc.set_weights(rebuilt, weights)
    err = max_rel_diff(np.asarray(original(xk, training=False)), np.asarray(rebuilt(xk, training=False)))
    (lr, opr), (lo, opo) = keras_permutes(rebuilt), keras_permutes(original)
    perm = f"layers {lr} / {lo}, graph ops {opr} / {opo}"
    label = f"keras.applications {name}"
    r, a, b = paired(lambda: rebuilt(xk, training=False), lambda: original(xk, training=False), repeats)
    rows = [(label, "Keras eager call", a, b, r, err, perm)]
    fr = tf.function(lambda v: rebuilt(v, training=False))
    fo = tf.function(lambda v: original(v, training=False))
    r, a, b = paired(lambda: fr(xk), lambda: fo(xk), repeats)
    rows.append((label, "Keras tf.function", a, b, r, err, perm))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own)")
    args = parser.parse_args()
    import tensorflow as tf
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    x = np.random.default_rng(0).standard_normal((BATCH, *SHAPE)).astype(np.float32)
    xt = torch.from_numpy(x)
    xk = tf.constant(xc.to_nhwc(x))
    rows = []
    for name in TORCHVISION:
        rows.append(torch_row(name, xt, args.repeats))
    for name in KERAS:
        rows += keras_rows(name, xk, args.repeats)

    print(
        f"batch {BATCH} of {'x'.join(map(str, SHAPE))}, float32; {machine()}; torch threads "
        f"{torch.get_num_threads()}; {args.repeats} interleaved pairs, medians; "
        "rebuilt = from_torch/from_keras -> build -> set_weights"
    )
    print(
        f"{'model':<34} {'path':<18} {'rebuilt ms':>10} {'original ms':>11} {'ratio':>6}  target <= 1.02  "
        "max rel diff | permutes rebuilt / original"
    )
    for model, path, a, b, r, err, perm in rows:
        print(
            f"{model:<34} {path:<18} {a * 1e3:>10.1f} {b * 1e3:>11.1f} {r:>6.3f}  "
            f"{'reached' if r <= 1.02 else 'NOT reached':<14}  {err:.1e} | {perm}"
        )
    write(
        f"real_models_threads{args.threads}" if args.threads else "real_models",
        {
            "torch_threads": torch.get_num_threads(),
            "batch": BATCH,
            "input": list(SHAPE),
            "repeats": args.repeats,
            "rows": [
                {
                    "model": m,
                    "path": p,
                    "rebuilt_s": a,
                    "original_s": b,
                    "ratio": r,
                    "max_rel_diff": err,
                    "permutes_rebuilt_vs_original": perm,
                }
                for m, p, a, b, r, err, perm in rows
            ],
        },
    )


if __name__ == "__main__":
    main()
