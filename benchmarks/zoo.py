"""The model zoo table: every torchvision model the tests port to Keras and every keras.applications model they
port to torch, with random weights (nothing downloaded): parameters, port time (import, build, weights, one
verification batch; the framework warmed up by a first small port), and the max relative difference of the
ported model's output from the original's on a fresh batch of 4: max |a - b| / max(1, max |a|) for torchvision
(float32 and float64), max |a - b| / max |a| for keras.applications (float32; their random-weight logits can be
1e-19); and the attention models (Swin, Swin V2, MaxViT; PVT v2, SegFormer; small configurations, relative
position tables drawn), torch -> Keras in float32 and float64. Prints a Markdown table and writes
benchmarks/results/zoo.json.

    .venv/bin/python benchmarks/zoo.py [--attention] [--features]

(``--attention``: the attention models' rows alone, replacing theirs in the results file; ``--features``: the same
for the backbones that return several feature maps, timm's ``features_only`` and torchvision's extractor.)

Inputs are 3x64x64 (torchvision's inception_v3 3x75x75, Keras' Xception 71x71 and InceptionV3 75x75, the
segmentation models 3x96x96, their "out" entry compared).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
from _timing import write

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# (the zoo's definitions live with the tests that port it; this script measures the same models)
import xconv as xc
from tests.zoo_support import (
    BIAS_ZOO,
    FEATURES_ZOO,
    KERAS_APPLICATIONS,
    REDUCTION_ZOO,
    SEGMENTATION,
    TORCHVISION,
    WINDOW_ZOO,
    keras_model,
    segmentation_model,
    torchvision_model,
)
from xconv.testing import max_rel_diff


def _measure(model: object, shape: tuple[int, ...], output: object, run: object) -> tuple[float, float, float]:
    """(port time, float32 difference, float64 difference) of a torch model ported to Keras; ``run(model, x)``
    is the original's output as numpy."""
    import torch

    t = time.perf_counter()
    km = xc.port(model, to="tf", input_shape=shape, output=output)
    seconds = time.perf_counter() - t
    x = np.random.default_rng(1).standard_normal((4, *shape)).astype("float32")
    with torch.no_grad():
        err32 = max_rel_diff(run(model, x), xc.predict(km, x))  # type: ignore[operator]
        m64 = model.double()  # type: ignore[attr-defined]
        km64 = xc.port(m64, to="tf", input_shape=shape, output=output)
        err64 = max_rel_diff(run(m64, x.astype("float64")), xc.predict(km64, x.astype("float64")))  # type: ignore[operator]
    return seconds, err32, err64


def torch_row(name: str, segmentation: bool = False) -> dict:
    import torch

    model = segmentation_model(name) if segmentation else torchvision_model(name)
    shape = SEGMENTATION[name] if segmentation else TORCHVISION[name][1]
    output = "out" if segmentation else None

    def run(m: object, x: np.ndarray) -> np.ndarray:
        y = m(torch.from_numpy(x))  # type: ignore[operator]
        return (y["out"] if segmentation else y).numpy()

    seconds, err32, err64 = _measure(model, shape, output, run)
    params = sum(p.numel() for p in model.parameters())
    return {
        "model": f"torchvision {'segmentation.' if segmentation else ''}{name}",
        "direction": "torch -> Keras",
        "params": params,
        "port_s": seconds,
        "rel_diff_float32": err32,
        "rel_diff_float64": err64,
    }


#: the attention models: windowed (Swin, MaxViT), spatial-reduction (PVT v2, SegFormer) and with a learned bias
#: per relative offset (EfficientFormer, LeViT); and the backbones that return several feature maps
ATTENTION = {**WINDOW_ZOO, **REDUCTION_ZOO, **BIAS_ZOO}
ROWS = {**ATTENTION, **FEATURES_ZOO}


def _numpy(y: object, output: object) -> object:
    """A torch model's result as ``port`` reads it: the entry (or entries) ``output`` of a dict, a list of
    tensors as the list of their arrays."""
    if isinstance(output, list):
        return [y[k].numpy() for k in output]  # type: ignore[index]
    if output is not None:
        y = y[output]  # type: ignore[index]
    if isinstance(y, (list, tuple)):
        return [t.numpy() for t in y]
    return y.numpy()  # type: ignore[attr-defined]


def window_row(name: str) -> dict:
    import torch

    make, shape, output, _ = ROWS[name]
    model = make().float().eval()

    def run(m: object, x: np.ndarray) -> object:
        return _numpy(m(torch.from_numpy(x)), output)  # type: ignore[operator]

    seconds, err32, err64 = _measure(model, shape, output, run)
    return {
        "model": name,
        "direction": "torch -> Keras",
        "params": sum(p.numel() for p in model.parameters()),
        "port_s": seconds,
        "rel_diff_float32": err32,
        "rel_diff_float64": err64,
    }


def keras_row(name: str) -> dict:
    model = keras_model(name)
    t = time.perf_counter()
    tm = xc.port(model, to="torch")
    seconds = time.perf_counter() - t
    h, w, c = KERAS_APPLICATIONS[name]
    x = np.random.default_rng(1).standard_normal((4, c, h, w)).astype("float32")
    if "+preprocessing" in name or name == "EfficientNetB0":
        x = x * 60 + 120  # pixel values for the model's own Rescaling
    expect = np.asarray(model(xc.to_nhwc(x), training=False))
    # against the logits' own scale: some of these give logits of 1e-19 with random weights
    err32 = float(np.abs(expect - xc.predict(tm, x)).max() / np.abs(expect).max())
    return {
        "model": f"keras.applications {name}",
        "direction": "Keras -> torch",
        "params": int(model.count_params()),
        "port_s": seconds,
        "rel_diff_float32": err32,
        "rel_diff_float64": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attention", action="store_true", help="the attention models' rows alone")
    parser.add_argument("--features", action="store_true", help="the several-output backbones' rows alone")
    args = parser.parse_args()
    xc.port(torchvision_model("squeezenet1_1"), to="tf", input_shape=(3, 64, 64))  # warm up
    if args.attention or args.features:
        chosen = {**(ATTENTION if args.attention else {}), **(FEATURES_ZOO if args.features else {})}
        path = pathlib.Path(__file__).resolve().parent / "results" / "zoo.json"
        kept = [r for r in json.loads(path.read_text())["rows"] if r["model"] not in chosen] if path.exists() else []
        rows = kept + [window_row(n) for n in chosen]
    else:
        rows = [torch_row(n) for n in TORCHVISION] + [keras_row(n) for n in KERAS_APPLICATIONS]
        rows += [torch_row(n, segmentation=True) for n in SEGMENTATION] + [window_row(n) for n in ROWS]
    print("| model | direction | parameters | port time | max rel. diff float32 | float64 |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        f64 = "" if r["rel_diff_float64"] is None else f"{r['rel_diff_float64']:.1e}"
        params = f"{r['params'] / 1e6:.1f}M" if r["params"] >= 1e5 else f"{r['params'] / 1e3:.0f}k"
        print(
            f"| {r['model']} | {r['direction']} | {params} | {r['port_s']:.1f} s | "
            f"{r['rel_diff_float32']:.1e} | {f64} |"
        )
    write("zoo", {"input": "3x64x64 (Xception 71x71, Inception v3 75x75, segmentation 3x96x96)", "rows": rows})


if __name__ == "__main__":
    main()
