"""The memory side of the benchmarks: both measures run and see the same input."""

from __future__ import annotations

from benchmarks.__main__ import all_memory_cases
from benchmarks.memory import run_memory_case


def test_memory_cases_run_at_small_scale() -> None:
    cases = all_memory_cases()
    assert [c.name for _, c in cases] == ["nuScenes tables, 100k sample_data: open + frame lookups"]
    for module, case in cases:
        res = run_memory_case(module, case, scale=0.01)
        assert res.ours_traced > 0 and res.peer_traced > 0
        assert res.ours_rss is not None and res.peer_rss is not None
        assert res.ours_rss >= 0 and res.peer_rss > 0
