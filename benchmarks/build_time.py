"""Keras build time of a deep real network: ResNet-152's spec (imported once with
``xc.from_keras(keras.applications.ResNet152(weights=None))``) built with ``xc.build(spec, "tf")`` against
``keras.applications.ResNet152(weights=None)`` built in the same process. Interleaved pairs (order
alternating), medians of per-pair ratios; target <= 1.2. Prints the figures and writes
benchmarks/results/build_time.json.

    .venv/bin/python benchmarks/build_time.py [--repeats N]
"""

from __future__ import annotations

import argparse
import gc

from _timing import machine, paired, write

import xconv as xc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import keras

    spec = xc.from_keras(keras.applications.ResNet152(weights=None))
    layers = len(xc.infer(spec))
    gc.collect()

    def xconv_build() -> None:
        xc.build(spec, "tf")
        gc.collect()

    def keras_build() -> None:
        keras.applications.ResNet152(weights=None)
        gc.collect()

    r, a, b = paired(xconv_build, keras_build, args.repeats)
    print(f"ResNet-152 ({layers} spec layers); {machine()}; {args.repeats} interleaved pairs, medians")
    print(f"{'xc.build(spec, tf)':<44} {a:>7.2f} s")
    print(f"{'keras.applications.ResNet152(weights=None)':<44} {b:>7.2f} s")
    print(f"ratio {r:.2f}, target <= 1.2: {'reached' if r <= 1.2 else 'NOT reached'}")
    write(
        "build_time",
        {"model": "ResNet152", "layers": layers, "repeats": args.repeats, "xconv_s": a, "keras_s": b, "ratio": r},
    )


if __name__ == "__main__":
    main()
