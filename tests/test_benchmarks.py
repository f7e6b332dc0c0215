"""Every benchmark case runs at a small scale, and both sides agree on the answer."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import all_cases
from benchmarks.harness import run_case

CASES = all_cases()


@pytest.mark.parametrize(("module", "case"), CASES, ids=[c.name for _, c in CASES])
def test_benchmark_case_runs_and_agrees(module: str, case: object) -> None:
    res = run_case(case, scale=0.01, repeats=1)  # type: ignore[arg-type]
    assert res.ours_s > 0 and res.peer_s > 0
