"""Property-suite throughput: random specs fully checked per minute by ``xconv.testing.assert_equivalent``
across numpy, torch and tf (every layer's output, every weight and input gradient), in float32 and float64,
inference and training mode, drawn by ``strategies.specs()`` with default options, which include fork-join
graphs (Add, Multiply and Concat blocks; how many of the specs hold one is printed). Target: >= 1,500 specs per
minute (wall clock). Also prints the process' CPU seconds and specs per CPU-minute, a figure that other work on
a shared machine disturbs less. A spec that fails the check is counted, printed with the first line of its
report and not shrunk. Prints a table and writes benchmarks/results/suite_throughput.json.

    .venv/bin/python benchmarks/suite_throughput.py [--examples N]
"""

from __future__ import annotations

import argparse
import time

from _timing import machine, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xconv.spec import Combinator, Sequential
from xconv.testing import assert_equivalent, strategies

# training mode: no kind whose masks are random (they differ between frameworks by design)
NO_DROPOUT = tuple(k for k in strategies.ALL_KINDS if k not in ("Dropout", "StochasticDepth"))


def has_graph(item: object) -> bool:
    """Whether a spec (or branch) holds a fork-join block."""
    if isinstance(item, Combinator):
        return True
    return isinstance(item, Sequential) and any(has_graph(layer) for layer in item.layers)


def measure(examples: int, dtype: str, training: bool) -> tuple[int, float, float, int, list[str]]:
    checked = graphs = 0
    failures: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        nonlocal checked, graphs
        kinds = NO_DROPOUT if training else strategies.ALL_KINDS
        spec = data.draw(strategies.specs(max_layers=5, kinds=kinds, batch_stats=dtype == "float64"))
        x = data.draw(strategies.inputs(spec, training=training))
        weights = data.draw(strategies.weights(spec))
        try:
            assert_equivalent(spec, weights, x, dtype=dtype, training=training)
        except AssertionError as e:  # counted and shown, not shrunk: this measures the check, not the search
            first = str(e).splitlines()[0]
            failures.append(f"{dtype} {'training' if training else 'inference'}: {first}\n{spec!r}")
        checked += 1
        graphs += has_graph(spec)

    t, cpu = time.perf_counter(), time.process_time()
    prop()
    return checked, time.perf_counter() - t, time.process_time() - cpu, graphs, failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=200)
    args = parser.parse_args()
    measure(5, "float32", False)  # warm-up: imports and first builds
    rows, failures = [], []
    for dtype, training in (("float32", False), ("float64", False), ("float64", True)):
        n, seconds, cpu, graphs, failed = measure(args.examples, dtype, training)
        failures += failed
        rows.append((dtype, "training" if training else "inference", n, seconds, 60 * n / seconds, graphs, cpu))
    print(f"three backends (numpy, torch, tf), outputs and gradients per layer; {machine()}")
    print(
        f"{'dtype':<8} {'mode':<10} {'specs':>6} {'with graphs':>11} {'seconds':>8} {'specs/min':>10}  "
        f"target >= 1,500  {'CPU s':>6} {'per CPU-min':>11}"
    )
    for dtype, mode, n, seconds, rate, graphs, cpu in rows:
        verdict = "reached" if rate >= 1500 else "NOT reached"
        print(
            f"{dtype:<8} {mode:<10} {n:>6} {graphs:>11} {seconds:>8.1f} {rate:>10.0f}  {verdict:<15}  "
            f"{cpu:>6.1f} {60 * n / cpu:>11.0f}"
        )
    print("(specs per CPU-minute: this process' own CPU time, which other work on a shared machine inflates less)")
    print(f"specs that failed the check: {len(failures)}")
    for failure in failures:
        print(failure)
    write(
        "suite_throughput",
        {
            "rows": [
                {"dtype": d, "mode": m, "specs": n, "with_graphs": g, "seconds": s, "per_minute": r, "cpu_seconds": c}
                for d, m, n, s, r, g, c in rows
            ],
            "failures": failures,
        },
    )


if __name__ == "__main__":
    main()
