"""Start-up costs: `import xconv` wall time (target <= 0.1 s, no framework imported) and `build` time for
specs of 10, 100 and 1,000 layers in each backend. Prints a table and writes benchmarks/results/startup.json.

    .venv/bin/python benchmarks/startup.py
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys
import time

CODE = (
    "import time, sys; t = time.perf_counter(); import xconv; print(time.perf_counter() - t, "
    "any(m in sys.modules for m in ('torch', 'tensorflow', 'keras')))"
)


def import_time(repeats: int = 7) -> tuple[float, bool]:
    runs = [
        subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
        for _ in range(repeats)
    ]
    return statistics.median(float(r[0]) for r in runs), any(r[1] == "True" for r in runs)


def deep_spec(n_layers: int):
    import xconv as xc

    layers = []
    while len(layers) < n_layers - 2:
        layers += [xc.Conv2d(4, 4, 3, padding=1), xc.ReLU()]
    return xc.Sequential(*layers[: n_layers - 2], xc.Flatten(), xc.Linear(None, 10), input_shape=(4, 8, 8))


def main() -> None:
    import xconv as xc

    seconds, leaked = import_time()
    rows = [("import xconv", "-", seconds, "target <= 0.1 s; framework imported: " + str(leaked))]
    for backend in ("numpy", "torch", "tf"):
        xc.build(deep_spec(10), backend)  # first call pays the framework import
        for n in (10, 100, 1000):
            spec = deep_spec(n)
            t = time.perf_counter()
            xc.build(spec, backend, seed=0)
            rows.append((f"build {n} layers", backend, time.perf_counter() - t, ""))
    print(f"{'what':<18} {'backend':<8} {'seconds':>10}  note")
    for what, backend, s, note in rows:
        print(f"{what:<18} {backend:<8} {s:>10.4f}  {note}")
    out = pathlib.Path(__file__).parent / "results" / "startup.json"
    out.write_text(json.dumps([{"what": w, "backend": b, "seconds": s, "note": n} for w, b, s, n in rows], indent=2))


if __name__ == "__main__":
    main()
