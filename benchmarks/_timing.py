"""Timing helpers shared by the benchmark scripts: interleaved pairs, medians, JSON results."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

RESULTS = pathlib.Path(__file__).parent / "results"


def once(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def paired(fn_a: Callable[[], Any], fn_b: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """Median ratio a/b over interleaved pairs (order alternating), and the median times of a and b."""
    fn_a(), fn_b()  # warm up
    ratios, ta, tb = [], [], []
    for i in range(repeats):
        if i % 2:
            b, a = once(fn_b), once(fn_a)
        else:
            a, b = once(fn_a), once(fn_b)
        ratios.append(a / b)
        ta.append(a)
        tb.append(b)
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write(name: str, data: dict[str, Any]) -> pathlib.Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path
