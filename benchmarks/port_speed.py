"""Port speed: ``transfer_weights`` torch -> Keras and Keras -> torch on a ResNet-50-sized spec, against
``np.copyto`` of the same bytes and against a naive transpose + ``keras set_weights`` port, side by side in one
run (interleaved pairs, medians of per-pair ratios). Target: transfer <= 4x the copy. Also prints the first
call in each direction, which traces the model's compiled transfer function. Prints a table and writes
benchmarks/results/port_speed.json.

    .venv/bin/python benchmarks/port_speed.py [--repeats N]

The spec has ResNet-50's layers in one chain: the 7x7 stem, BatchNorm, max pool, the 16 bottleneck blocks'
1x1 / 3x3 / 1x1 convs each with BatchNorm and ReLU, global average pooling and the 1000-way Linear. Sequential
specs have no residual branch, so the four 1x1 projection convs of the shortcuts are absent (2.8M parameters).
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import machine, paired, write

import xconv as xc


def resnet50_chain() -> xc.Sequential:
    layers: list = [
        xc.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        xc.BatchNorm2d(64),
        xc.ReLU(),
        xc.MaxPool2d(3, stride=2, padding=1),
    ]
    channels = 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers += [
                xc.Conv2d(channels, mid, 1, bias=False),
                xc.BatchNorm2d(mid),
                xc.ReLU(),
                xc.Conv2d(mid, mid, 3, stride=stride if b == 0 else 1, padding=1, bias=False),
                xc.BatchNorm2d(mid),
                xc.ReLU(),
                xc.Conv2d(mid, 4 * mid, 1, bias=False),
                xc.BatchNorm2d(4 * mid),
                xc.ReLU(),
            ]
            channels = 4 * mid
    layers += [xc.AdaptiveAvgPool2d(1), xc.Flatten(), xc.Linear(2048, 1000)]
    return xc.Sequential(*layers, input_shape=(3, 224, 224))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    import torch

    spec = resnet50_chain()
    tm = xc.build(spec, "torch", seed=0)
    km = xc.build(spec, "tf", seed=1)
    weights = xc.get_weights(tm)
    params = sum(v.size for k, v in weights.items() if not k.endswith("num_batches_tracked"))
    nbytes = sum(v.nbytes for v in weights.values())
    # the physical floor: copying the same arrays into preallocated buffers
    sources = list(weights.values())
    targets = [np.empty_like(v) for v in sources]

    def copy() -> None:
        for dst, src in zip(targets, sources):
            np.copyto(dst, src)

    # what a port written by hand does: numpy-transpose each kernel into Keras' weight order, then set_weights
    def naive() -> None:
        state = tm.state_dict()
        arrays = []
        for t in state.values():
            a = t.detach().numpy()
            arrays.append(np.transpose(a, (2, 3, 1, 0)) if a.ndim == 4 else (a.T if a.ndim == 2 else a))
        km.set_weights(arrays)

    import time

    first = {}
    for label, a, b in (("torch -> Keras", tm, km), ("Keras -> torch", km, tm)):
        t = time.perf_counter()
        xc.transfer_weights(a, b)  # the first call traces the model's compiled transfer function
        first[label] = time.perf_counter() - t
    rows = []
    for label, fn in (
        ("torch -> Keras transfer_weights", lambda: xc.transfer_weights(tm, km)),
        ("Keras -> torch transfer_weights", lambda: xc.transfer_weights(km, tm)),
    ):
        with torch.no_grad():
            r, a, b = paired(fn, copy, args.repeats)
        rows.append((label, a, b, r))
    r, a, b = paired(naive, copy, args.repeats)
    rows.append(("naive transpose + set_weights", a, b, r))

    print(
        f"ResNet-50-sized chain: {params / 1e6:.1f}M parameters, {nbytes / 2**20:.0f} MiB float32; {machine()}; "
        f"{args.repeats} interleaved pairs, medians"
    )
    print(f"{'path':<34} {'ms':>9} {'copy ms':>9} {'x copy':>8}  target <= 4")
    for label, a, b, r in rows:
        print(f"{label:<34} {a * 1e3:>9.1f} {b * 1e3:>9.1f} {r:>8.2f}")
    print(
        "first call of each direction on a model (traces its compiled transfer once): "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in first.items())
    )
    write(
        "port_speed",
        {
            "parameters": params,
            "bytes": nbytes,
            "repeats": args.repeats,
            "first_call_seconds": first,
            "rows": [{"path": p, "seconds": a, "copy_seconds": b, "ratio": r} for p, a, b, r in rows],
        },
    )


if __name__ == "__main__":
    main()
