"""xconv's port against the ONNX route, side by side in one run: the seed ConvNet (3x32x32, float32) as a
torch model, ``xc.port(model, to="tf")`` (import, build the Keras model, copy the weights, verify on a batch)
against ``torch.onnx.export(model, ..., dynamo=False)`` to an in-memory buffer, which is only the first half
of that route (an ONNX -> Keras converter, which must also build the Keras model, would come after it).
Interleaved pairs, medians of per-pair ratios, warm; and the first call in a fresh process (frameworks
imported, not timed). Target: port >= 20x faster. Prints a table and writes
benchmarks/results/onnx_route.json.

    .venv/bin/python benchmarks/onnx_route.py [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import warnings

from _timing import machine, paired, write

import xconv as xc
from xconv.demo import seed_convnet

COLD = """
import io, sys, time, warnings
import torch, onnx, keras, tensorflow  # imports are not timed
import xconv as xc
from xconv.demo import seed_convnet
tm = xc.build(seed_convnet(), "torch", seed=0)
t = time.perf_counter()
if sys.argv[1] == "port":
    xc.port(tm, to="tf")
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm, (torch.zeros(1, 3, 32, 32),), io.BytesIO(), dynamo=False)
print(time.perf_counter() - t)
"""


def cold(which: str, runs: int = 3) -> float:
    """Median time of the first call in a fresh process (frameworks already imported)."""
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", COLD, which], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for _ in range(runs)
    ]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import torch

    tm = xc.build(seed_convnet(), "torch", seed=0)
    example = (torch.zeros(1, 3, 32, 32),)

    def onnx_export() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(tm, example, io.BytesIO(), dynamo=False)

    rows = []
    for label, fn in (
        ("xc.port(torch -> Keras), verify=True", lambda: xc.port(tm, to="tf")),
        ("xc.port(torch -> Keras), verify=False", lambda: xc.port(tm, to="tf", verify=False)),
    ):
        r, a, b = paired(fn, onnx_export, args.repeats)
        rows.append((label, a, b, 1 / r))
    cold_port, cold_onnx = cold("port"), cold("onnx")
    rows.append(("first call in a fresh process, verify=True", cold_port, cold_onnx, cold_onnx / cold_port))
    print(f"seed ConvNet (3x32x32, float32), {machine()}; {args.repeats} interleaved pairs, medians")
    print(f"{'path':<40} {'port ms':>9} {'onnx.export ms':>15} {'speed-up':>9}  target >= 20")
    for label, a, b, s in rows:
        print(f"{label:<40} {a * 1e3:>9.1f} {b * 1e3:>15.1f} {s:>9.1f}")
    write(
        "onnx_route",
        {
            "repeats": args.repeats,
            "rows": [{"path": p, "port_seconds": a, "onnx_export_seconds": b, "speedup": s} for p, a, b, s in rows],
        },
    )


if __name__ == "__main__":
    main()
