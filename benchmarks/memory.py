"""Peak memory of a port: ``xc.port(model, to="tf", verify=False)`` of torchvision's fcn_resnet50 (the largest
model the tests port: segmentation, no auxiliary head, its "out" entry, 3x96x96), convnext_tiny (3x64x64) and
VGG-16 (138M parameters, 3x64x64: its classifier's adaptive pool takes any size), each in a fresh child process.

In the child: torch, TensorFlow, Keras and xconv are imported and warmed up by a tiny port (10 MiB of weights,
so that it takes the same transfer path), the source model is built, then the peak resident set size is reset
(``/proc/self/clear_refs``, so that the peak counts from there) and read as the baseline; after the port the
peak (``VmHWM``, the same figure ``getrusage(RUSAGE_SELF).ru_maxrss`` gives) is read again. Reported:
(peak - baseline) / bytes of the Keras model's weights; target <= 1.3 (1.0 is the new model's own weights).
Where the peak cannot be reset, the baseline is the child's peak so far (``ru_maxrss`` before the port).
For scale, a last child builds ``keras.applications.VGG16(weights=None)`` (the same layers, 224x224) the
same way. A second child per model runs port's steps one by one (``from_torch`` with the weights, ``xc.build``,
``set_weights``) and reads the peak after each, to show where the memory goes.
Prints a table and writes benchmarks/results/memory.json.

    .venv/bin/python benchmarks/memory.py
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import resource
import subprocess
import sys

from _timing import machine, write

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = {  # name -> (input (C, H, W), dict entry to port)
    "fcn_resnet50": ((3, 96, 96), "out"),
    "convnext_tiny": ((3, 64, 64), None),
    "vgg16": ((3, 64, 64), None),
}


def status_kib() -> dict[str, int]:
    """VmRSS and VmHWM (the peak resident set size) of this process, KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def weight_bytes(model: object) -> int:
    """Bytes of a Keras model's weights (from their shapes and dtypes: nothing is materialised)."""
    import numpy as np

    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)  # type: ignore[attr-defined]


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    gc.collect()
    return True


def child(name: str, stages: bool) -> dict:
    import keras
    import tensorflow  # noqa: F401
    import torch

    sys.path.insert(0, str(ROOT))
    import xconv as xc
    from tests.zoo_support import import_torchvision, segmentation_model, torchvision_model

    tiny = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 16 * 16, 640)
    ).eval()
    xc.port(tiny, to="tf", input_shape=(3, 16, 16))  # warm-up
    del tiny
    if name == "keras.applications.VGG16":  # the floor: Keras building the same layers itself
        gc.collect()
        reset_peak()
        baseline = status_kib()["VmHWM"]
        km = keras.applications.VGG16(weights=None)
        peak = status_kib()["VmHWM"]
        return {"model": name, "target_bytes": weight_bytes(km), "ratio": (peak - baseline) * 1024 / weight_bytes(km)}
    shape, output = MODELS[name]
    if name == "vgg16":  # not in the tests' zoo (no BatchNorm): seeded random weights
        torch.manual_seed(0)
        model = import_torchvision().models.vgg16(weights=None).eval()
    else:
        model = segmentation_model(name) if name == "fcn_resnet50" else torchvision_model(name)
    gc.collect()
    peak_so_far = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = reset_peak()
    before = status_kib()
    baseline = before["VmHWM"] if reset else peak_so_far
    steps = {}
    with torch.no_grad():
        if not stages:
            km = xc.port(model, to="tf", input_shape=shape, verify=False, output=output)
        else:  # the same steps one by one, the peak above the baseline after each
            spec, weights = xc.from_torch(model, shape, return_weights=True, output=output)
            steps["import"] = status_kib()["VmHWM"] - baseline
            km = xc.build(spec, "tf", dtype="float32")
            steps["build"] = status_kib()["VmHWM"] - baseline
            xc.set_weights(km, weights)
            steps["weights"] = status_kib()["VmHWM"] - baseline
            del weights, spec
            gc.collect()
    after = status_kib()
    peak = max(after["VmHWM"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    target_bytes = weight_bytes(km)
    source_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {
        "model": f"torchvision {'segmentation.' if output else ''}{name}",
        "input": list(shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "source_bytes": source_bytes,
        "target_bytes": target_bytes,
        "peak_reset": reset,
        "peak_before_reset_kib": peak_so_far,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "rss_after_kib": after["VmRSS"],
        "step_peaks_above_baseline_kib": steps,
        "ratio": (peak - baseline) * 1024 / target_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=[*MODELS, "keras.applications.VGG16"], help=argparse.SUPPRESS)
    parser.add_argument("--stages", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.stages)))
        return

    def run(name: str, *extra: str) -> dict:
        done = subprocess.run(
            [sys.executable, __file__, "--child", name, *extra], capture_output=True, text=True, check=False
        )
        if done.returncode:
            sys.exit(f"{name}: the child process failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    rows = []
    for name in MODELS:
        rows.append(run(name))
        rows[-1]["steps"] = run(name, "--stages")["step_peaks_above_baseline_kib"]
    native = run("keras.applications.VGG16")
    mib = 1024
    print(f"peak RSS of xc.port(model, to='tf', verify=False) in a fresh child process; {machine()}")
    print(
        f"{'model':<36} {'params':>7} {'Keras weights MiB':>18} {'baseline MiB':>13} {'peak MiB':>9} "
        f"{'peak - baseline':>16} {'/ weights':>10}  target <= 1.3"
    )
    for r in rows:
        delta = (r["peak_kib"] - r["baseline_kib"]) / mib
        print(
            f"{r['model']:<36} {r['parameters'] / 1e6:>6.1f}M {r['target_bytes'] / 2**20:>18.0f} "
            f"{r['baseline_kib'] / mib:>13.0f} {r['peak_kib'] / mib:>9.0f} {delta:>16.0f} {r['ratio']:>10.2f}  "
            f"{'reached' if r['ratio'] <= 1.3 else 'NOT reached'}"
        )
    print("the same steps one by one (from_torch, build, set_weights), peak above the baseline after each, / weights:")
    for r in rows:
        print(
            f"  {r['model']:<34} " + ", ".join(f"{k} {v * 1024 / r['target_bytes']:.2f}" for k, v in r["steps"].items())
        )
    print(
        f"for scale: keras.applications.VGG16(weights=None) built alone (same warm-up): peak - baseline = "
        f"{native['ratio']:.2f} x its weights ({native['target_bytes'] / 2**20:.0f} MiB)"
    )
    if not all(r["peak_reset"] for r in rows):
        print("(the peak could not be reset here: baseline = the child's peak before the port)")
    write("memory", {"rows": rows, "keras_applications_vgg16_build": native})


if __name__ == "__main__":
    main()
