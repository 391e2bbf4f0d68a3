"""Timing helpers shared by the benchmarks: one way to measure, so figures compare."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def measure(run: Callable[[], T]) -> tuple[T, float, float]:
    """Run once after a garbage collection: (result, this process's CPU seconds, wall seconds)."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def best(run: Callable[[], T], repeat: int = 3) -> tuple[T, float]:
    """The result and the fastest wall time (seconds) of ``repeat`` runs."""
    fastest, result = float("inf"), None
    for _ in range(repeat):
        result, _, wall = measure(run)
        fastest = min(fastest, wall)
    assert result is not None
    return result, fastest
