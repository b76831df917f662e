"""Transformers at model scale: torchvision's ``vit_b_16`` (3x224x224, batch 8 by default, random weights with
every parameter drawn) ported to Keras and back to torch. Prints the port time (import, build, weights,
verification), the max relative difference of each ported model against the original (max |a - b| /
max(1, max |a|), float32, and float64 with ``--float64``), and the run-time ratios, each a median over
interleaved pairs:

- torch eager: the model built back in torch (``F.scaled_dot_product_attention``) / the original (eval,
  no_grad); the target is <= 1.02;
- Keras: the ported model's call inside ``tf.function`` / the original torch model, a cross-framework figure
  (what a user moving the model pays or gains), not a target.

    .venv/bin/python benchmarks/transformers.py [--batch 8] [--repeats 5] [--float64]

Writes benchmarks/results/transformers.json.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
from _timing import paired, write

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import xconv as xc
from tests.zoo_support import import_torchvision
from xconv.testing import max_rel_diff


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--float64", action="store_true")
    args = parser.parse_args()
    import_torchvision()
    import tensorflow as tf
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    rows = {}
    for dtype in ("float32", "float64") if args.float64 else ("float32",):
        source = model.to(getattr(torch, dtype))
        t = time.perf_counter()
        keras_model = xc.port(source, to="keras", input_shape=(3, 224, 224))
        port_s = time.perf_counter() - t
        back = xc.port(keras_model, to="torch")
        x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(dtype)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            want = source(xt).numpy()
        rows[dtype] = {
            "port_s": port_s,
            "keras_diff": max_rel_diff(want, xc.predict(keras_model, x)),
            "torch_diff": max_rel_diff(want, xc.predict(back, x)),
        }
        print(
            f"vit_b_16 {dtype}: port to Keras {port_s:.1f} s; max rel. diff Keras {rows[dtype]['keras_diff']:.2g}, "
            f"torch built back {rows[dtype]['torch_diff']:.2g}"
        )
    model = model.float()
    back = xc.port(xc.port(model, to="keras", input_shape=(3, 224, 224)), to="torch")
    keras_model = xc.port(model, to="keras", input_shape=(3, 224, 224))
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype("float32")
    xt = torch.from_numpy(x)
    xk = tf.constant(xc.to_nhwc(x))
    call = tf.function(lambda v: keras_model(v, training=False))

    def original() -> None:
        with torch.no_grad():
            model(xt)

    def rebuilt() -> None:
        with torch.no_grad():
            back(xt)

    torch_ratio, t_back, t_orig = paired(rebuilt, original, args.repeats)
    keras_ratio, t_keras, _ = paired(lambda: call(xk).numpy(), original, args.repeats)
    print(
        f"run time, batch {args.batch}: torch built back / original {torch_ratio:.3f} ({t_back:.2f} s vs "
        f"{t_orig:.2f} s; target <= 1.02); Keras tf.function / torch original {keras_ratio:.3f} ({t_keras:.2f} s)"
    )
    path = write(
        "transformers",
        {
            "model": "vit_b_16",
            "batch": args.batch,
            "ports": rows,
            "torch_ratio": torch_ratio,
            "keras_ratio": keras_ratio,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
