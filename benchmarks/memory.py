"""Peak memory of avfusion and a peer doing the same work, printed as a ratio.

Two measures per side, on the same input:

* ``traced``: the peak of Python-level allocations during one call (``tracemalloc``; numpy
  and msgspec report theirs to it), after a warm-up call, in this process;
* ``rss``: how far the peak resident set grows above the resident set at the start of one
  call, in a fresh subprocess that has already imported ``case.imports`` (Linux: VmHWM after
  resetting it through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss``). This also counts
  what tracemalloc cannot see (memory-mapped files touched, allocator slack).

A ``MemoryCase``'s ``setup(scale)`` must return a JSON-serialisable value (paths as str), so
the subprocess can repeat the call on the same input; its ``ours``/``peer`` must be
module-level functions of the module that lists the case in ``MEMORY_CASES``.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MemoryCase:
    name: str
    peer_name: str
    setup: Callable[[float], Any]
    ours: Callable[[Any], Any]
    peer: Callable[[Any], Any]
    imports: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemoryResult:
    name: str
    peer_name: str
    ours_traced: int
    peer_traced: int
    ours_rss: int | None = None
    peer_rss: int | None = None

    @property
    def traced_ratio(self) -> float:
        return self.peer_traced / self.ours_traced if self.ours_traced else float("inf")

    @property
    def rss_ratio(self) -> float | None:
        if self.ours_rss is None or self.peer_rss is None:
            return None
        return self.peer_rss / self.ours_rss if self.ours_rss > 0 else float("inf")


def traced_peak(fn: Callable[[Any], Any], arg: Any) -> int:
    """Peak bytes allocated (tracemalloc) while ``fn(arg)`` runs, its result included."""
    gc.collect()
    tracemalloc.start()
    try:
        out = fn(arg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del out
    return peak


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _start_peak() -> int:
    """Reset the peak-RSS mark (Linux) and return the current RSS in bytes."""
    try:  # "5" resets VmHWM to the current RSS; ru_maxrss cannot be reset and even carries
        # the parent's peak across fork + exec
        Path("/proc/self/clear_refs").write_text("5")
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss * 1024
    except OSError:
        pass
    return _peak_bytes()


def _peak_bytes() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * (1 if sys.platform == "darwin" else 1024)


def rss_growth(module: str, case_name: str, side: str, data: Any) -> int:
    """Growth of the peak RSS while one side runs once, in a fresh interpreter."""
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, json; from benchmarks.memory import _child; "
        "_child(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.stdin.read()))"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, module, case_name, side],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env=env,
    )
    return int(proc.stdout.strip().splitlines()[-1])


def _child(module: str, case_name: str, side: str, data: Any) -> None:
    mod = importlib.import_module(module)
    case = next(c for c in mod.MEMORY_CASES if c.name == case_name)
    for name in case.imports:
        importlib.import_module(name)
    gc.collect()
    before = _start_peak()
    out = (case.ours if side == "ours" else case.peer)(data)
    after = _peak_bytes()
    del out
    sys.stdout.write(f"{after - before}\n")


def run_memory_case(
    module: str, case: MemoryCase, scale: float = 1.0, *, subprocess_rss: bool = True
) -> MemoryResult:
    data = case.setup(scale)
    case.ours(data)  # warm-up: imports, caches
    case.peer(data)
    ours = traced_peak(case.ours, data)
    peer = traced_peak(case.peer, data)
    ours_rss = peer_rss = None
    if subprocess_rss:
        ours_rss = rss_growth(module, case.name, "ours", data)
        peer_rss = rss_growth(module, case.name, "peer", data)
    return MemoryResult(case.name, case.peer_name, ours, peer, ours_rss, peer_rss)
