"""Run every benchmark module's CASES and print one table: avfusion, peer, ratio."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from rich.console import Console
from rich.table import Table

import benchmarks
from benchmarks.harness import Case, Result, run_case
from benchmarks.memory import MemoryCase, run_memory_case


def all_cases() -> list[tuple[str, Case]]:
    cases = []
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            cases.extend((info.name, case) for case in module.CASES)
    return cases


def all_memory_cases() -> list[tuple[str, MemoryCase]]:
    """(module, case) for every ``MEMORY_CASES`` entry of the bench_* modules."""
    out = []
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            out.extend((module.__name__, c) for c in getattr(module, "MEMORY_CASES", ()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="input size relative to the full benchmark"
    )
    parser.add_argument("-k", default="", help="only cases whose name contains this text")
    args = parser.parse_args(argv)
    console = Console(width=max(120, Console().width))
    table = Table(title=f"avfusion vs peers (best of N, same input, same run; scale {args.scale})")
    for col in ("benchmark", "peer", "avfusion (ms)", "peer (ms)", "ratio peer/avfusion"):
        table.add_column(col, justify="right" if "ms" in col or "ratio" in col else "left")
    results: list[Result] = []
    for _, case in all_cases():
        if args.k not in case.name:
            continue
        with console.status(case.name):
            res = run_case(case, args.scale)
        results.append(res)
        table.add_row(
            res.name,
            res.peer_name,
            f"{res.ours_s * 1e3:.2f}",
            f"{res.peer_s * 1e3:.2f}",
            f"{res.ratio:.2f}x",
        )
    console.print(table)
    mem = Table(
        title="peak memory, same input (tracemalloc in-process; RSS growth in a fresh process)"
    )
    for col in (
        "benchmark",
        "avfusion (MB)",
        "peer (MB)",
        "ratio",
        "RSS avfusion / peer (MB)",
        "RSS ratio",
    ):
        mem.add_column(col, justify="left" if col == "benchmark" else "right")
    memory_cases = [(m, c) for m, c in all_memory_cases() if args.k in c.name]
    for module, mcase in memory_cases:
        with console.status(f"{mcase.name} (memory)"):
            m = run_memory_case(module, mcase, args.scale)
        rss = f"{(m.ours_rss or 0) / 1e6:.1f} / {(m.peer_rss or 0) / 1e6:.1f}"
        mem.add_row(m.name, f"{m.ours_traced / 1e6:.1f}", f"{m.peer_traced / 1e6:.1f}",
                    f"{m.traced_ratio:.2f}x", rss, f"{m.rss_ratio or 0:.2f}x")  # fmt: skip
    if memory_cases:
        console.print(mem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
