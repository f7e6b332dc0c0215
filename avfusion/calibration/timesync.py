"""Time matching between sensor streams: pure functions on int64 nanosecond arrays.

Every policy returns indices into ``other_ns`` aligned with ``ref_ns`` (-1 where nothing lies
within ``tolerance_ns``) and the signed time differences ``other − ref`` (0 where unmatched).
Clock offsets are applied by the caller *before* matching (``to_ego_clock``), so the functions
never guess which clock a stamp is in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from avfusion.errors import SyncError

__all__ = [
    "FrameAssembly",
    "Gaps",
    "InterpolationMatch",
    "Match",
    "assemble_frames",
    "check_monotonic",
    "duplicate_positions",
    "find_gaps",
    "int_ns",
    "match_interpolate",
    "match_latest_before",
    "match_nearest",
    "reversal_positions",
    "to_ego_clock",
]

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Match:
    """Result of matching ``ref`` stamps to ``other`` stamps.

    ``index[i]`` is the matched position in ``other`` (-1: none within tolerance) and
    ``diff_ns[i]`` is ``other[index[i]] − ref[i]`` (0 where unmatched).
    """

    index: I64
    diff_ns: I64

    @property
    def matched(self) -> npt.NDArray[np.bool_]:
        return self.index >= 0

    @property
    def n_unmatched(self) -> int:
        return int(np.count_nonzero(self.index < 0))


@dataclass(frozen=True, eq=False)
class InterpolationMatch:
    """``other`` samples bracketing each ``ref`` time: ``before``/``after`` indices (-1: none) and
    ``alpha`` in [0, 1] so that ``value = (1 − alpha)·other[before] + alpha·other[after]``."""

    before: I64
    after: I64
    alpha: npt.NDArray[np.float64]

    @property
    def matched(self) -> npt.NDArray[np.bool_]:
        return self.before >= 0


def int_ns(value: object, what: str) -> int:
    """One time or duration as a Python int of nanoseconds; ``SyncError`` for anything else
    (floats, bools, strings), naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SyncError(
            f"{what}: time must be integer nanoseconds, got {type(value).__name__} {value!r}"
        )
    return int(value)


def _as_ns(values: npt.ArrayLike, what: str) -> I64:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise SyncError(f"{what}: expected a 1-D array of times, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SyncError(f"{what}: times must be integer nanoseconds (int64), got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_monotonic(t_ns: npt.ArrayLike, what: str, strict: bool = False) -> I64:
    """Return ``t_ns`` as int64, raising ``SyncError`` naming the first step that goes back in time
    (or repeats, when ``strict``)."""
    t = _as_ns(t_ns, what)
    if t.size > 1:
        steps = np.diff(t)
        bad = np.flatnonzero(steps <= 0 if strict else steps < 0)
        if bad.size:
            i = int(bad[0])
            kind = "does not increase" if strict and steps[i] == 0 else "goes back in time"
            raise SyncError(
                f"{what}: time stamps must be {'strictly increasing' if strict else 'non-decreasing'}; "
                f"stamp {i + 1} ({int(t[i + 1])} ns) {kind} after stamp {i} ({int(t[i])} ns)"
            )
    return t


def _check_tolerance(tolerance_ns: int) -> int:
    if isinstance(tolerance_ns, float | np.floating) or int(tolerance_ns) < 0:
        raise SyncError(
            f"tolerance_ns must be a non-negative integer number of nanoseconds, got {tolerance_ns!r}"
        )
    return int(tolerance_ns)


def to_ego_clock(stamps_ns: npt.ArrayLike, time_offset_ns: int, what: str = "stamps") -> I64:
    """Sensor-clock stamps to the ego clock: ``t_ego = t_stamp + time_offset_ns``."""
    return _as_ns(stamps_ns, what) + np.int64(time_offset_ns)


def match_nearest(
    ref_ns: npt.ArrayLike, other_ns: npt.ArrayLike, tolerance_ns: int, what: str = "other"
) -> Match:
    """For each reference time, the nearest ``other`` time within ``tolerance_ns`` (ties: earlier)."""
    tol = _check_tolerance(tolerance_ns)
    ref = _as_ns(ref_ns, "reference")
    other = check_monotonic(other_ns, what)
    if other.size == 0:
        return Match(np.full(ref.size, -1, np.int64), np.zeros(ref.size, np.int64))
    right = np.searchsorted(other, ref, side="left")
    left = np.clip(right - 1, 0, other.size - 1)
    right = np.clip(right, 0, other.size - 1)
    d_left = np.abs(other[left] - ref)
    d_right = np.abs(other[right] - ref)
    idx = np.where(d_right < d_left, right, left).astype(np.int64)
    diff = other[idx] - ref
    ok = np.abs(diff) <= tol
    return Match(np.where(ok, idx, -1), np.where(ok, diff, 0))


def match_latest_before(
    ref_ns: npt.ArrayLike, other_ns: npt.ArrayLike, tolerance_ns: int, what: str = "other"
) -> Match:
    """For each reference time, the latest ``other`` time at or before it, no older than ``tolerance_ns``.

    The causal policy: what an online system could have used at the reference instant.
    """
    tol = _check_tolerance(tolerance_ns)
    ref = _as_ns(ref_ns, "reference")
    other = check_monotonic(other_ns, what)
    idx = (np.searchsorted(other, ref, side="right") - 1).astype(np.int64)
    has = idx >= 0
    safe = np.where(has, idx, 0)
    diff = np.where(has, other[safe] - ref if other.size else 0, 0)
    ok = has & (-diff <= tol)
    return Match(np.where(ok, idx, -1), np.where(ok, diff, 0))


def match_interpolate(
    ref_ns: npt.ArrayLike, other_ns: npt.ArrayLike, tolerance_ns: int, what: str = "other"
) -> InterpolationMatch:
    """For each reference time, the two ``other`` samples around it, each within ``tolerance_ns``.

    An exact hit gives ``before == after`` and alpha 0. Unmatched (no bracket, or a neighbour
    farther than the tolerance, i.e. a gap): -1 and alpha NaN.
    """
    tol = _check_tolerance(tolerance_ns)
    ref = _as_ns(ref_ns, "reference")
    other = check_monotonic(other_ns, what, strict=True)
    n = other.size
    before = (np.searchsorted(other, ref, side="right") - 1).astype(np.int64)
    after = before + 1
    exact = (
        (before >= 0) & (other[np.clip(before, 0, max(n - 1, 0))] == ref)
        if n
        else np.zeros(ref.size, bool)
    )
    after = np.where(exact, before, after)
    inside = (before >= 0) & (after < n)
    b = np.clip(before, 0, max(n - 1, 0))
    a = np.clip(after, 0, max(n - 1, 0))
    if n:
        ok = inside & (ref - other[b] <= tol) & (other[a] - ref <= tol)
        span = (other[a] - other[b]).astype(np.float64)
        alpha = np.where(span > 0, (ref - other[b]) / np.where(span > 0, span, 1.0), 0.0)
    else:
        ok = np.zeros(ref.size, bool)
        alpha = np.zeros(ref.size)
    return InterpolationMatch(
        np.where(ok, before, -1), np.where(ok, after, -1), np.where(ok, alpha, np.nan)
    )


# --------------------------------------------------------------------------------------------
# Frame assembly
# --------------------------------------------------------------------------------------------

#: Matching policies by name, for configuration files and the command line.
POLICIES = {"nearest": match_nearest, "latest_before": match_latest_before}


@dataclass(frozen=True, eq=False)
class FrameAssembly:
    """Which observation of every sensor belongs to each frame of a reference sensor.

    ``t_ns`` (F,) are the reference sensor's capture times in the ego clock; per sensor,
    ``index[name]`` (F,) points into that sensor's stream (-1: nothing within its tolerance)
    and ``diff_ns[name]`` (F,) is (its ego-clock time − the frame time), 0 where unmatched.
    The reference sensor matches itself with index ``arange(F)`` and differences 0.
    """

    ref_sensor: str
    t_ns: I64
    index: Mapping[str, I64]
    diff_ns: Mapping[str, I64]
    tolerance_ns: Mapping[str, int]

    def __len__(self) -> int:
        return int(self.t_ns.size)

    def matched(self, frame: int) -> dict[str, int]:
        """Sensor → index into its stream, for the sensors that matched in ``frame``."""
        return {name: int(idx[frame]) for name, idx in self.index.items() if idx[frame] >= 0}

    def time_diffs_ns(self, frame: int) -> dict[str, int]:
        """Sensor → (its time − frame time) in ns, for the sensors that matched in ``frame``."""
        return {
            name: int(self.diff_ns[name][frame])
            for name, idx in self.index.items()
            if idx[frame] >= 0
        }

    def missing(self, frame: int) -> tuple[str, ...]:
        """The sensors with no observation inside their tolerance in ``frame`` (sorted)."""
        return tuple(sorted(name for name, idx in self.index.items() if idx[frame] < 0))

    def match_rate(self) -> dict[str, float]:
        """Per sensor, the fraction of frames it matched."""
        n = max(len(self), 1)
        return {name: float(np.count_nonzero(idx >= 0)) / n for name, idx in self.index.items()}


def assemble_frames(
    streams: Mapping[str, npt.ArrayLike],
    ref_sensor: str,
    tolerance_ns: int | Mapping[str, int],
    *,
    time_offsets_ns: Mapping[str, int] | None = None,
    policy: str = "nearest",
) -> FrameAssembly:
    """Group per-sensor stamps into frames around ``ref_sensor``.

    ``streams`` maps sensor → its stamps (int64 ns, sensor clock, non-decreasing);
    ``time_offsets_ns`` (sensor → offset, ``t_ego = t_stamp + offset``; default 0) moves every
    stream to the ego clock before matching. ``tolerance_ns`` is one value for all sensors or a
    per-sensor mapping (which must name every non-reference sensor). ``policy`` is ``nearest``
    or ``latest_before``. Nothing is substituted: a sensor without a stamp inside its tolerance
    is reported missing in that frame.
    """
    if ref_sensor not in streams:
        raise SyncError(
            f"assemble_frames: reference sensor '{ref_sensor}' has no stream (have: {', '.join(sorted(streams))})"
        )
    if policy not in POLICIES:
        raise SyncError(
            f"assemble_frames: unknown policy '{policy}' (expected one of {', '.join(POLICIES)})"
        )
    match = POLICIES[policy]
    offsets = dict(time_offsets_ns or {})
    unknown = sorted(set(offsets) - set(streams))
    if unknown:
        raise SyncError(f"assemble_frames: time offsets given for unknown sensors {unknown}")
    if isinstance(tolerance_ns, Mapping):
        missing_tol = sorted(set(streams) - {ref_sensor} - set(tolerance_ns))
        if missing_tol:
            raise SyncError(f"assemble_frames: no tolerance given for sensors {missing_tol}")
        tolerances = {
            name: _check_tolerance(tolerance_ns[name]) for name in streams if name != ref_sensor
        }
    else:
        tol = _check_tolerance(tolerance_ns)
        tolerances = {name: tol for name in streams if name != ref_sensor}
    ego = {
        name: to_ego_clock(
            check_monotonic(stamps, f"stream '{name}'"), offsets.get(name, 0), f"stream '{name}'"
        )
        for name, stamps in streams.items()
    }
    ref = ego[ref_sensor]
    index: dict[str, I64] = {ref_sensor: np.arange(ref.size, dtype=np.int64)}
    diff: dict[str, I64] = {ref_sensor: np.zeros(ref.size, np.int64)}
    for name, t in ego.items():
        if name == ref_sensor:
            continue
        m = match(ref, t, tolerances[name], f"stream '{name}'")
        index[name], diff[name] = m.index, m.diff_ns
    return FrameAssembly(ref_sensor, ref, index, diff, {ref_sensor: 0, **tolerances})


# --------------------------------------------------------------------------------------------
# Raw-stream diagnostics (used by the sync report): they accept any order and never raise on it
# --------------------------------------------------------------------------------------------


def duplicate_positions(t_ns: npt.ArrayLike, what: str = "stamps") -> I64:
    """Positions (ascending) of stamps equal to an earlier stamp of the stream (anywhere before it).

    The first occurrence of a value is not counted; ``[5, 7, 5, 5]`` gives ``[2, 3]``.
    """
    t = _as_ns(t_ns, what)
    if t.size < 2:
        return np.zeros(0, np.int64)
    order = np.argsort(t, kind="stable")  # equal values keep their recorded order
    repeat = t[order][1:] == t[order][:-1]
    return np.sort(order[1:][repeat]).astype(np.int64)


def reversal_positions(t_ns: npt.ArrayLike, what: str = "stamps") -> I64:
    """Positions ``i`` where a stamp goes back in time: ``t[i] < t[i − 1]`` (recorded order)."""
    t = _as_ns(t_ns, what)
    if t.size < 2:
        return np.zeros(0, np.int64)
    return (np.flatnonzero(np.diff(t) < 0) + 1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Gaps:
    """Periods longer than ``gap_factor`` × the median period of a stream's timeline.

    The timeline is the stream's distinct stamps in time order (duplicates and reversals are
    diagnosed apart, by position). Per gap: ``index_before``/``index_after`` are the recorded
    positions of the two stamps around it, ``t_before_ns``/``t_after_ns`` their times,
    ``period_ns`` their distance and ``missing`` the estimated number of dropped messages,
    ``max(round(period / median) − 1, 1)``. ``periods_ns`` are all periods of the timeline and
    ``median_period_ns`` their median (NaN with fewer than two distinct stamps).
    """

    index_before: I64
    index_after: I64
    t_before_ns: I64
    t_after_ns: I64
    period_ns: I64
    missing: I64
    periods_ns: I64
    median_period_ns: float
    gap_factor: float

    def __len__(self) -> int:
        return int(self.period_ns.size)

    @property
    def n_missing(self) -> int:
        return int(self.missing.sum())


def find_gaps(t_ns: npt.ArrayLike, gap_factor: float = 1.5, what: str = "stamps") -> Gaps:
    """The gaps of a stream (see ``Gaps``); the stamps may be in any order."""
    if not np.isfinite(gap_factor) or gap_factor <= 1.0:
        raise SyncError(f"{what}: gap_factor must be a finite number > 1, got {gap_factor!r}")
    t = _as_ns(t_ns, what)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    first = np.ones(ts.size, bool)
    first[1:] = ts[1:] != ts[:-1]
    pos, ts = order[first].astype(np.int64), ts[first]
    periods = np.diff(ts)
    empty = np.zeros(0, np.int64)
    if periods.size == 0:
        return Gaps(empty, empty, empty, empty, empty, empty, periods, float("nan"), gap_factor)
    median = float(np.median(periods))
    k = np.flatnonzero(periods > gap_factor * median)
    missing = np.maximum(np.rint(periods[k] / median).astype(np.int64) - 1, 1)
    return Gaps(
        pos[k], pos[k + 1], ts[k], ts[k + 1], periods[k], missing, periods, median, gap_factor
    )
