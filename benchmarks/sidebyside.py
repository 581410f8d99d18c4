"""Shared helpers of the benchmark scripts: the machine's name and side-by-side (alternating) timing."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def machine() -> str:
    """CPU model and core count, e.g. ``AMD EPYC, 2 cores``."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def alternate(arms: dict[K, Callable[[], float]], repeats: int) -> dict[K, list[float]]:
    """Every arm once per round, in alternating order (A B, B A, ...); each arm's results by round."""
    results: dict[K, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            results[name].append(arms[name]())
    return results


def paired_ratio(results: dict[K, list[float]], arm: K, base: K) -> float:
    """Median over rounds of ``arm / base`` measured in the same round."""
    return statistics.median(a / b for a, b in zip(results[arm], results[base], strict=True))
