"""Time matching policies against brute-force references, and their error paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avfusion import SyncError
from avfusion.calibration.timesync import (
    check_monotonic,
    match_interpolate,
    match_latest_before,
    match_nearest,
    to_ego_clock,
)

stamps = st.lists(st.integers(0, 10_000), min_size=0, max_size=40).map(
    lambda v: np.array(sorted(v), np.int64)
)
refs = st.lists(st.integers(-500, 10_500), min_size=0, max_size=40).map(
    lambda v: np.array(v, np.int64)
)
tols = st.integers(0, 3000)


@settings(max_examples=300, deadline=None)
@given(refs, stamps, tols)
def test_match_nearest_is_brute_force_nearest(ref: np.ndarray, other: np.ndarray, tol: int) -> None:
    m = match_nearest(ref, other, tol)
    for i, r in enumerate(ref):
        if other.size == 0 or np.abs(other - r).min() > tol:
            assert m.index[i] == -1 and m.diff_ns[i] == 0
        else:
            best = np.abs(other - r).min()
            assert abs(other[m.index[i]] - r) == best
            assert m.diff_ns[i] == other[m.index[i]] - r


@settings(max_examples=300, deadline=None)
@given(refs, stamps, tols)
def test_match_latest_before_is_causal(ref: np.ndarray, other: np.ndarray, tol: int) -> None:
    m = match_latest_before(ref, other, tol)
    for i, r in enumerate(ref):
        earlier = other[(other <= r) & (other >= r - tol)]
        if earlier.size == 0:
            assert m.index[i] == -1
        else:
            assert other[m.index[i]] == earlier.max() and m.diff_ns[i] <= 0


@settings(max_examples=300, deadline=None)
@given(refs, stamps.map(np.unique), tols)
def test_match_interpolate_brackets(ref: np.ndarray, other: np.ndarray, tol: int) -> None:
    m = match_interpolate(ref, other, tol)
    for i, r in enumerate(ref):
        if m.before[i] < 0:
            assert np.isnan(m.alpha[i])
            hit = other[other == r]
            lo, hi = other[other <= r], other[other >= r]
            assert hit.size == 0 and (
                lo.size == 0 or hi.size == 0 or r - lo.max() > tol or hi.min() - r > tol
            )
            continue
        t0, t1 = other[m.before[i]], other[m.after[i]]
        assert t0 <= r <= t1 and r - t0 <= tol and t1 - r <= tol
        value = (1 - m.alpha[i]) * t0 + m.alpha[i] * t1
        assert value == pytest.approx(r)


def test_nearest_prefers_earlier_on_tie_and_reports_signed_diff() -> None:
    m = match_nearest(np.array([15, 40, 100], np.int64), np.array([10, 20, 45], np.int64), 5)
    assert m.index.tolist() == [0, 2, -1]
    assert m.diff_ns.tolist() == [-5, 5, 0]
    assert m.n_unmatched == 1


def test_clock_offset_is_applied_before_matching() -> None:
    cam_stamps = np.array([990, 1990], np.int64)  # camera clock runs 10 ns behind the ego clock
    ego = to_ego_clock(cam_stamps, 10)
    assert match_nearest(np.array([1000, 2000], np.int64), ego, 0).index.tolist() == [0, 1]


def test_errors() -> None:
    with pytest.raises(
        SyncError,
        match=r"CAM_FRONT: time stamps must be non-decreasing; stamp 2 \(5 ns\) goes back",
    ):
        match_nearest(np.array([1], np.int64), np.array([1, 10, 5], np.int64), 3, what="CAM_FRONT")
    with pytest.raises(SyncError, match="integer nanoseconds"):
        match_nearest(np.array([1.5]), np.array([1], np.int64), 3)
    with pytest.raises(SyncError, match="non-negative integer"):
        match_nearest(np.array([1], np.int64), np.array([1], np.int64), -1)
    with pytest.raises(SyncError, match="non-negative integer"):
        match_latest_before(np.array([1], np.int64), np.array([1], np.int64), 2.5)  # type: ignore[arg-type]
    with pytest.raises(SyncError, match="does not increase"):
        check_monotonic(np.array([1, 1], np.int64), "gps", strict=True)
    with pytest.raises(SyncError, match="1-D array"):
        match_nearest(np.zeros((2, 2), np.int64), np.array([1], np.int64), 1)
