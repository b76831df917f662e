"""The ONNX route as its users run it, against ``xc.port``, on torchvision's resnet18 (3x224x224, seeded random
weights with BatchNorm statistics): ``torch.onnx.export(..., dynamo=False)`` to a file, then ``onnx2tf`` to a
TensorFlow model, in a fresh process, against ``xc.port(model, to="tf")`` (import, Keras build, weights and the
verification batch) in a fresh process. In each process the frameworks are imported and the torch model built
before the clock starts (the import time is reported beside). Reported: end-to-end seconds (target: xconv
>= 50x faster), each converted model's max difference from the torch model on a seeded batch of 1
(max |a - b| / max(1, max |a|)), and inference time of the two converted models side by side in one process
(interleaved pairs, medians; eager call and ``tf.function``; target: xconv's no slower).

onnx2tf pins its own TensorFlow (2.19) and more, so it lives in an environment of its own: ``make bench-peers``
creates ``.venv-peers`` and runs this script with ``--peers .venv-peers/bin/python``; xconv runs there from
this source tree, and xconv's end-to-end time is taken in both environments (the speed-up uses the one beside
onnx2tf). Without that environment the onnx2tf route is skipped with one line, and xconv's own end-to-end time
is still reported.

By default onnx2tf converts in memory (``disable_model_save=True``: the tf_keras model it returns, no files),
its fastest configuration; ``--full`` also times its default run, as its command line does it (SavedModel and
float32 / float16 TFLite files written), which takes minutes. onnx2tf fetches 20 sample images from the web to
check its conversion; this machine reaches no web, so the child puts a stand-in file of the same shape (uniform
random pixels) where onnx2tf looks first, in its working folder.

Prints a table and writes benchmarks/results/onnx_peers.json.

    .venv/bin/python benchmarks/onnx_peers.py [--peers PYTHON] [--full] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPE = (3, 224, 224)
MARK = "RESULT "


def _imports() -> float:
    t = time.perf_counter()
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
    import torch  # noqa: F401

    import xconv  # noqa: F401

    return time.perf_counter() - t


def child_xconv() -> dict:
    imports = _imports()
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    import xconv as xc
    from tests.zoo_support import torchvision_model

    model = torchvision_model("resnet18")
    t = time.perf_counter()
    with torch.no_grad():
        km = xc.port(model, to="tf", input_shape=SHAPE)
    seconds = time.perf_counter() - t
    del km, np
    return {"imports_s": imports, "port_s": seconds}


def child_onnx(full: bool) -> dict:
    import tempfile
    import warnings

    t = time.perf_counter()
    imports = _imports()
    import onnx  # noqa: F401
    import onnx2tf

    imports += time.perf_counter() - t
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import tensorflow as tf
    import torch
    from _timing import paired

    import xconv as xc
    from tests.zoo_support import torchvision_model
    from xconv.testing import max_rel_diff

    folder = tempfile.mkdtemp(prefix="onnx-peers-")
    os.chdir(folder)  # onnx2tf looks for its sample images here first; the web is out of reach
    rng = np.random.default_rng(0)
    np.save(
        "calibration_image_sample_data_20x128x128x3_float32.npy", rng.uniform(0, 1, (20, 128, 128, 3)).astype("float32")
    )
    model = torchvision_model("resnet18")
    x = rng.standard_normal((1, *SHAPE)).astype("float32")
    xt = torch.from_numpy(x)
    with torch.no_grad():
        expect = model(xt).numpy()

    runs = {}
    for save in (False, True) if full else (False,):
        path = os.path.join(folder, f"resnet18_{int(save)}.onnx")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (xt,), path, dynamo=False)
        t1 = time.perf_counter()
        converted = onnx2tf.convert(
            input_onnx_file_path=path,
            output_folder_path=os.path.join(folder, f"saved_model_{int(save)}"),
            non_verbose=True,
            disable_model_save=not save,
        )
        t2 = time.perf_counter()
        runs["files written (command-line default)" if save else "in memory (disable_model_save)"] = {
            "export_s": t1 - t0,
            "convert_s": t2 - t1,
            "end_to_end_s": t2 - t0,
        }

    xk = tf.constant(xc.to_nhwc(x))
    onnx_out = np.asarray(converted(xk, training=False))
    with torch.no_grad():
        km = xc.port(model, to="tf", input_shape=SHAPE)
    xconv_out = np.asarray(km(xk, training=False))
    rows = []
    r, a, b = paired(lambda: km(xk, training=False), lambda: converted(xk, training=False), 15)
    rows.append(("eager call", a, b, r))
    fk = tf.function(lambda v: km(v, training=False))
    fc = tf.function(lambda v: converted(v, training=False))
    r, a, b = paired(lambda: fk(xk), lambda: fc(xk), 15)
    rows.append(("tf.function", a, b, r))
    return {
        "imports_s": imports,
        "onnx2tf": onnx2tf.__version__,
        "tensorflow": tf.__version__,
        "runs": runs,
        "max_rel_diff": {"onnx2tf": max_rel_diff(expect, onnx_out), "xconv": max_rel_diff(expect, xconv_out)},
        "max_abs_diff": {
            "onnx2tf": float(np.abs(expect - onnx_out).max()),
            "xconv": float(np.abs(expect - xconv_out).max()),
        },
        "inference": [{"path": p, "xconv_s": a, "onnx2tf_s": b, "ratio": r} for p, a, b, r in rows],
    }


def run_child(python: str, mode: str, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [python, str(pathlib.Path(__file__).resolve()), "--child", mode, *extra],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode or not lines:
        sys.exit(f"the {mode} child ({python}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(MARK) :])


def has_onnx2tf(python: str) -> bool:
    if not os.path.exists(python):
        return False
    check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('onnx2tf') is None)"
    return subprocess.run([python, "-c", check], capture_output=True, check=False).returncode == 0


def xconv_cold(python: str, runs: int) -> dict:
    results = [run_child(python, "xconv") for _ in range(runs)]
    return {
        "port_s": statistics.median(r["port_s"] for r in results),
        "imports_s": statistics.median(r["imports_s"] for r in results),
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", default=str(ROOT / ".venv-peers" / "bin" / "python"), help="onnx2tf's python")
    parser.add_argument("--full", action="store_true", help="also time onnx2tf's default run (files written)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes for xconv's end-to-end time")
    parser.add_argument("--child", choices=("xconv", "onnx"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_xconv() if args.child == "xconv" else child_onnx(args.full)
        print(MARK + json.dumps(result), flush=True)
        return
    from _timing import machine, write

    ours = xconv_cold(sys.executable, args.runs)
    print(f"torchvision resnet18, input 3x224x224, float32; {machine()}; fresh processes, medians of {args.runs}")
    print(
        f"xconv end to end (xc.port to Keras, verify=True), this environment: {ours['port_s']:.2f} s "
        f"(imports before it: {ours['imports_s']:.1f} s)"
    )
    data: dict = {"model": "resnet18", "input": list(SHAPE), "xconv_here": ours}
    if not has_onnx2tf(args.peers):
        print(
            f"onnx2tf route skipped: onnx2tf is not installed for {args.peers} "
            "(`make bench-peers` creates .venv-peers with onnx2tf and its own TensorFlow, and runs this script)"
        )
        data["onnx2tf"] = None
        write("onnx_peers", data)
        return
    beside = xconv_cold(args.peers, args.runs)
    onnx = run_child(args.peers, "onnx", *(["--full"] if args.full else []))
    data.update(xconv_beside_onnx2tf=beside, onnx2tf=onnx)
    print(
        f"beside onnx2tf {onnx['onnx2tf']} (TensorFlow {onnx['tensorflow']}): xconv end to end {beside['port_s']:.2f} s "
        f"(imports {beside['imports_s']:.1f} s; onnx2tf's process imports {onnx['imports_s']:.1f} s)"
    )
    print(
        f"{'ONNX route':<40} {'export s':>9} {'onnx2tf s':>10} {'total s':>8} {'xconv s':>8} {'speed-up':>9}  target >= 50"
    )
    speedups = {}
    for label, r in onnx["runs"].items():
        speedups[label] = r["end_to_end_s"] / beside["port_s"]
        print(
            f"{label:<40} {r['export_s']:>9.2f} {r['convert_s']:>10.1f} {r['end_to_end_s']:>8.1f} "
            f"{beside['port_s']:>8.2f} {speedups[label]:>9.0f}  {'reached' if speedups[label] >= 50 else 'NOT reached'}"
        )
    rel, ab = onnx["max_rel_diff"], onnx["max_abs_diff"]
    print(
        f"max difference from torch (batch of 1): xconv {rel['xconv']:.1e} rel ({ab['xconv']:.1e} abs), "
        f"onnx2tf {rel['onnx2tf']:.1e} rel ({ab['onnx2tf']:.1e} abs); target: xconv no worse: "
        f"{'reached' if rel['xconv'] <= rel['onnx2tf'] else 'NOT reached'}"
    )
    print(
        f"{'inference, batch 1, one process':<32} {'xconv ms':>9} {'onnx2tf ms':>11} {'ratio':>7}  target <= 1 (no slower)"
    )
    for row in onnx["inference"]:
        print(f"{row['path']:<32} {row['xconv_s'] * 1e3:>9.1f} {row['onnx2tf_s'] * 1e3:>11.1f} {row['ratio']:>7.3f}")
    data["speedups"] = speedups
    write("onnx_peers", data)


if __name__ == "__main__":
    main()
