"""A tiny side-by-side timing harness: every case times avfusion and a peer on the same input.

Absolute times on shared 2-core machines are noisy, so each case reports the best of several
repeats for both sides, measured in the same run, and the ratio peer / avfusion (> 1 means
avfusion is faster). Each case also checks that both sides computed the same answer, so a
benchmark can never time a shortcut.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    """One row of the table.

    ``setup(scale)`` builds the shared input (scale 1.0 = the full benchmark size; tests use a
    small scale). ``ours`` and ``peer`` take that input; ``check(ours_out, peer_out)`` raises if
    they disagree.
    """

    name: str
    peer_name: str
    setup: Callable[[float], Any]
    ours: Callable[[Any], Any]
    peer: Callable[[Any], Any]
    check: Callable[[Any, Any], None]
    repeats: int = 5


@dataclass(frozen=True)
class Result:
    name: str
    peer_name: str
    ours_s: float
    peer_s: float

    @property
    def ratio(self) -> float:
        return self.peer_s / self.ours_s if self.ours_s > 0 else float("inf")


def _best_of(fn: Callable[[Any], Any], arg: Any, repeats: int) -> tuple[float, Any]:
    best = float("inf")
    out: Any = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(arg)
        best = min(best, time.perf_counter() - start)
    return best, out


def run_case(case: Case, scale: float = 1.0, repeats: int | None = None) -> Result:
    data = case.setup(scale)
    n = case.repeats if repeats is None else repeats
    case.ours(data)  # warm-up: numba compilation, caches, page faults
    case.peer(data)
    ours_s, ours_out = _best_of(case.ours, data, n)
    peer_s, peer_out = _best_of(case.peer, data, n)
    case.check(ours_out, peer_out)
    return Result(case.name, case.peer_name, ours_s, peer_s)
