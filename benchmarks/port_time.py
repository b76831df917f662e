"""Port time of a real model against the floor of building the target framework's own model in the same
process: ``xc.port(torchvision resnet50, to="tf", input_shape=(3, 224, 224), verify=True)`` against
``keras.applications.ResNet50(weights=None)``, and ``xc.port(keras.applications.ResNet50(weights=None),
to="torch")`` against torchvision's ``resnet50(weights=None)``. Target: port <= 1.5x that build.

Each port is also taken apart into the steps ``port`` runs, timed one by one: import (``from_torch`` /
``from_keras`` with the weights), build (``xc.build`` in the target framework), weights (``set_weights``;
a model's first transfer in each direction traces its compiled transfer function, and every port builds a
new model) and verification (``port``'s check: three batch groups, five images in all, through both models in
one call each, compared group by group; for a Keras source also one training-mode call of two images each).
What the stronger check costs is printed beside it: "one-batch check" times the check ``port`` used to run
(one standard-normal batch of 2, compared), not counted in the sum. Both frameworks
are warmed up first by a small port each way; then each repeat times, in alternating order, the native build,
the steps one by one and the whole ``port``; figures are medians of the repeats, ratios medians of per-repeat
ratios. Prints a table and writes benchmarks/results/port_time.json.

    .venv/bin/python benchmarks/port_time.py [--repeats N]
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import machine, write

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# (the zoo's seeded models live with the tests that port them)
import xconv as xc
from tests.zoo_support import import_torchvision, torchvision_model
from xconv._verify import verify_port
from xconv.backends import get_backend
from xconv.testing import max_rel_diff

SHAPE = (3, 224, 224)
STEPS = ("import", "build", "weights", "verification")
EXTRA = ("one-batch check",)


def steps(model: Any, source: str, target: str) -> dict[str, float]:
    """The steps of ``xc.port(model, to=target)``, timed one by one."""
    times = {}
    t = time.perf_counter()
    if source == "torch":
        spec, weights = xc.from_torch(model, SHAPE, return_weights=True)
    else:
        spec, weights = xc.from_keras(model, return_weights=True)
    times["import"] = time.perf_counter() - t
    t = time.perf_counter()
    built = xc.build(spec, target, dtype="float32")
    times["build"] = time.perf_counter() - t
    t = time.perf_counter()
    xc.set_weights(built, weights)
    times["weights"] = time.perf_counter() - t
    t = time.perf_counter()
    verify_port(model, built, spec, weights, (source, target), "float32", 0)
    times["verification"] = time.perf_counter() - t
    t = time.perf_counter()
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype("float32")
    err = max_rel_diff(get_backend(source).forward(model, x), get_backend(target).forward(built, x))
    assert err <= 1e-5, err
    times["one-batch check"] = time.perf_counter() - t
    return times


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    gc.collect()
    return seconds


def direction(model: Any, source: str, target: str, native: Callable[[], Any], repeats: int) -> dict[str, Any]:
    to = "tf" if target == "tf" else "torch"
    runs: list[dict[str, float]] = []
    for i in range(repeats):
        run: dict[str, float] = {}
        order = ["native", "steps", "port"]
        for what in order if i % 2 == 0 else order[::-1]:
            if what == "native":
                run["native build"] = timed(native)
            elif what == "steps":
                run.update(steps(model, source, target))
                gc.collect()
            else:
                run["port"] = timed(lambda: xc.port(model, to=to, input_shape=SHAPE if source == "torch" else None))
        runs.append(run)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    ratio = {k: statistics.median(r[k] / r["native build"] for r in runs) for k in (*STEPS, *EXTRA, "port")}
    ratio["steps summed"] = statistics.median(sum(r[k] for k in STEPS) / r["native build"] for r in runs)
    med["steps summed"] = statistics.median(sum(r[k] for k in STEPS) for r in runs)
    return {"median_seconds": med, "ratio_to_native_build": ratio, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import keras
    import torch

    tv = import_torchvision()
    # warm-up: both frameworks imported and a first (small) port each way
    small = torchvision_model("resnet18")
    xc.port(xc.port(small, to="tf", input_shape=(3, 64, 64)), to="torch")
    keras.applications.ResNet50(weights=None)
    tv.models.resnet50(weights=None)
    gc.collect()

    tm = torchvision_model("resnet50")
    keras.utils.set_random_seed(0)
    km = keras.applications.ResNet50(weights=None)
    params_t = sum(p.numel() for p in tm.parameters())
    params_k = int(km.count_params())
    with torch.no_grad():
        to_tf = direction(tm, "torch", "tf", lambda: keras.applications.ResNet50(weights=None), args.repeats)
    with torch.no_grad():
        to_torch = direction(km, "tf", "torch", lambda: tv.models.resnet50(weights=None), args.repeats)

    print(
        f"ResNet-50 (torchvision {params_t / 1e6:.1f}M parameters, keras.applications {params_k / 1e6:.1f}M), "
        f"input 3x224x224, float32; {machine()}; {args.repeats} repeats, medians"
    )
    print(f"{'':<30} {'torch -> Keras':>22} {'Keras -> torch':>22}")
    print(f"{'step':<30} {'s':>9} {'x build':>12} {'s':>9} {'x build':>12}")
    for key in (*STEPS, "steps summed", "port", *EXTRA):
        a, b = to_tf, to_torch
        print(
            f"{key:<30} {a['median_seconds'][key]:>9.3f} {a['ratio_to_native_build'][key]:>12.2f} "
            f"{b['median_seconds'][key]:>9.3f} {b['ratio_to_native_build'][key]:>12.2f}"
        )
    print(
        f"{'native build (floor)':<30} {to_tf['median_seconds']['native build']:>9.3f} {'1.00':>12} "
        f"{to_torch['median_seconds']['native build']:>9.3f} {'1.00':>12}"
    )
    print("native build: keras.applications.ResNet50(weights=None) / torchvision resnet50(weights=None)")
    for label, d in (("torch -> Keras", to_tf), ("Keras -> torch", to_torch)):
        r = d["ratio_to_native_build"]["port"]
        print(f"{label}: port = {r:.2f}x the native build, target <= 1.5: {'reached' if r <= 1.5 else 'NOT reached'}")
    write(
        "port_time",
        {
            "model": "ResNet-50",
            "input": list(SHAPE),
            "repeats": args.repeats,
            "torch_to_keras": to_tf,
            "keras_to_torch": to_torch,
        },
    )


if __name__ == "__main__":
    main()
