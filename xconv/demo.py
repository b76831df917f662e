"""The seed's three-layer ConvNet as one spec, built in PyTorch and Keras, shown to compute the same function.

Run with ``make demo`` (or ``python -m xconv.demo``). Exits 1 if the frameworks disagree beyond tolerance.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import xconv as xc
from xconv.testing import TOLERANCE, max_rel_diff


def seed_convnet(in_channels: int = 3, size: int = 32, classes: int = 10) -> xc.Sequential:
    """Conv(->32, 5x5, pad 2), ReLU, Conv(->16, 3x3, pad 1), ReLU, Flatten, Linear(->classes)."""
    return xc.Sequential(
        xc.Conv2d(in_channels, 32, kernel_size=5, padding=2),
        xc.ReLU(),
        xc.Conv2d(32, 16, kernel_size=3, padding=1),
        xc.ReLU(),
        xc.Flatten(),
        xc.Linear(16 * size * size, classes),
        input_shape=(in_channels, size, size),
    )


def _report(label: str, a: np.ndarray, b: np.ndarray, dtype: str) -> bool:
    err = max_rel_diff(a, b)
    ok = err <= TOLERANCE[dtype]
    print(
        f"  {label:<44} max |torch - keras| = {np.abs(a - b).max():.3e}   relative {err:.3e}   "
        f"argmax agree {np.mean(a.argmax(1) == b.argmax(1)):.0%}   {'ok' if ok else 'MISMATCH'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xconv.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)

    import torch
    from torch import nn

    spec = seed_convnet()
    print("The seed's ConvNet as one xconv spec:\n")
    xc.summary(spec)
    print()

    x = np.random.default_rng(0).random((args.batch, 3, 32, 32)).astype(args.dtype)
    ok = True

    tm = xc.build(spec, backend="torch", seed=0, dtype=args.dtype)
    km = xc.build(spec, backend="tf", seed=0, dtype=args.dtype)
    print(f"One batch of {args.batch}, {args.dtype}; torch gets NCHW, Keras gets NHWC:")
    ok &= _report("built from the spec with seed=0", xc.predict(tm, x), xc.predict(km, x), args.dtype)

    # A hand-written nn.Sequential with torch's own default init: its state_dict loads as it is.
    hand = nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.Conv2d(32, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 32 * 32, 10),
    ).to(getattr(torch, args.dtype))
    xc.set_weights(km, hand.state_dict())
    with torch.no_grad():
        expected = hand(torch.from_numpy(x)).numpy()
    ok &= _report("hand-written nn.Sequential -> Keras", expected, xc.predict(km, x), args.dtype)

    xc.transfer_weights(km, tm)
    back = xc.get_weights(tm)
    exact = all(np.array_equal(v.detach().numpy(), back[k]) for k, v in hand.state_dict().items())
    print(f"  torch -> Keras -> torch weights bit-exact: {exact}")
    ok &= exact
    print("\nresult:", "the two frameworks compute the same function" if ok else "MISMATCH beyond tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
