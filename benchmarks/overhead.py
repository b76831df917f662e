"""Run-time overhead of xconv-built models against hand-written native models: the seed ConvNet at batch 64
and 256, torch eager, Keras eager call and Keras inside tf.function. Pairs are interleaved and each figure is a
median of per-pair ratios (xconv time / native time; target <= 1.02). Also counts Transpose/Permute ops in the
Keras model's traced graph (target 0). Prints a table and writes benchmarks/results/overhead.json.

    .venv/bin/python benchmarks/overhead.py [--repeats N]

Torch timings at batch 256 depend on glibc's allocator (large activations page-fault afresh on every call);
they are reported as measured, with the environment's MALLOC_MMAP_THRESHOLD_ (unset unless you set it).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np
from _timing import paired

import xconv as xc
from xconv.demo import seed_convnet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    import torch
    from torch import nn

    spec = seed_convnet()
    hand_torch = nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2),
        nn.ReLU(),
        nn.Conv2d(32, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 32 * 32, 10),
    ).eval()
    hand_keras = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 5, padding="same", activation="relu"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    tm = xc.build(spec, "torch", seed=0).eval()
    km = xc.build(spec, "tf", seed=0)

    rows = []
    for batch in (64, 256):
        x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        xt, xk = torch.from_numpy(x), tf.constant(xc.to_nhwc(x))
        with torch.no_grad():
            r, a, b = paired(lambda xt=xt: tm(xt), lambda xt=xt: hand_torch(xt), args.repeats)
        rows.append(("torch eager", batch, a, b, r))
        r, a, b = paired(
            lambda xk=xk: km(xk, training=False), lambda xk=xk: hand_keras(xk, training=False), args.repeats
        )
        rows.append(("keras eager call", batch, a, b, r))
        fa = tf.function(lambda v: km(v, training=False))
        fb = tf.function(lambda v: hand_keras(v, training=False))
        r, a, b = paired(lambda fa=fa, xk=xk: fa(xk), lambda fb=fb, xk=xk: fb(xk), args.repeats)
        rows.append(("keras tf.function", batch, a, b, r))

    graph = (
        tf.function(lambda v: km(v, training=False))
        .get_concrete_function(tf.TensorSpec((None, 32, 32, 3), tf.float32))
        .graph
    )
    transposes = sum(1 for op in graph.get_operations() if "Transpose" in op.type or "Permute" in op.type)

    print(
        f"seed ConvNet, {os.cpu_count()} cores, {args.repeats} interleaved pairs, medians; "
        f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}"
    )
    print(f"{'path':<20} {'batch':>5} {'xconv ms':>10} {'native ms':>10} {'ratio':>7}  target <= 1.02")
    for path, batch, a, b, r in rows:
        print(f"{path:<20} {batch:>5} {a * 1e3:>10.2f} {b * 1e3:>10.2f} {r:>7.3f}")
    print(f"Transpose/Permute ops in the traced Keras graph: {transposes} (target 0)")
    out = pathlib.Path(__file__).parent / "results" / "overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": [{"path": p, "batch": bt, "xconv_s": a, "native_s": b, "ratio": r} for p, bt, a, b, r in rows],
                "transposes": transposes,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
