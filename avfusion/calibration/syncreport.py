"""Sync-quality report of a log: how regular every stream is and how well the streams line up.

``sync_report(log)`` works on any ``avfusion.types.Log``. It reads each stream's stamps with
``log.timestamps(sensor)`` in the order the reader gives them (they must be the raw recorded
order for reversals to be visible: a reader that sorts is named in ``notes``), the sensors'
``time_offset_ns`` (``t_ego = t_stamp + time_offset_ns``), the pose track ``log.poses`` and,
when the log has it, ``log.record_times(sensor)`` (bag readers: the time each message was
written, aligned with ``timestamps``). Nothing in the data makes it fail: duplicates, reversals,
gaps, streams outside the pose track and missing pose tracks are all *reported*.

``sync_report.json`` (``write_sync_report``), ``format_version`` 1. Times are int ns unless the
key says otherwise; a value that cannot be computed is ``null``::

    {
      "format_version": 1,
      "log": str,                       # what was analysed (path or repr)
      "reader": str,                    # class name of the Log
      "timestamps_raw": bool,           # whether the reader keeps the recorded order
      "ref_sensor": str,
      "gap_factor": float,              # a gap is a period > gap_factor × median period
      "pose_track": {"start_ns", "end_ns", "count"} | null,
      "streams": {sensor: {
          "modality": str, "time_offset_ns": int, "count": int,
          "t_first_ns", "t_last_ns": int | null,      # smallest / largest stamp (sensor clock)
          "duration_s": float | null,
          "rate_hz": float | null,                    # 1e9 / median period
          "period_median_ns", "period_min_ns", "period_max_ns": float | int | null,
          "jitter_std_ns", "jitter_mad_ns": float | null,   # std and median |period − median|
                                                            # of the periods that are not gaps
          "gaps": {"count": int, "items": [{"index_before", "index_after", "t_before_ns",
                   "t_after_ns", "period_ns", "missing"}]},
          "drops": int,                               # estimated missing messages (sum over gaps)
          "duplicates": {"count": int, "positions": [int]},  # stamp equal to an earlier one
          "reversals": {"count": int, "positions": [int]},   # stamp earlier than the one before
          "record_delay": {"count", "median_ns", "max_ns", "min_ns", "n_negative"} | null,
          "pose_coverage": {"fraction": float | null, "n_inside", "n_before", "n_after": int,
                            "first_outside": [int]} | null      # ego-clock stamps vs pose track
      }},
      "pairs": [{                        # reference sensor vs every other, nearest stamp
          "ref", "other": str, "tolerance_ns": int, "policy": "nearest",
          "n_ref", "n_matched": int, "match_rate": float | null,
          "dt_median_ns", "dt_p5_ns", "dt_p95_ns": float | null,  # other − ref, ego clock
          "dt_max_abs_ns": int | null, "sorted_for_matching": bool
      }],
      "notes": [str]
    }

Position lists hold at most ``MAX_POSITIONS`` entries (the counts are always complete).
Positions are indices into the stream as the reader returned it. Period statistics use the
stream's distinct stamps in time order (``timesync.find_gaps``); pair matching uses the sorted
stamps of both streams (``timesync.assemble_frames`` needs non-decreasing input), and says so
with ``sorted_for_matching``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.timesync import (
    assemble_frames,
    check_monotonic,
    duplicate_positions,
    find_gaps,
    reversal_positions,
)
from avfusion.calibration.transforms import Trajectory
from avfusion.errors import AVFusionError, SyncError
from avfusion.types import Log

__all__ = [
    "DEFAULT_GAP_FACTOR",
    "DEFAULT_TOLERANCE_NS",
    "FORMAT_VERSION",
    "MAX_POSITIONS",
    "PairSync",
    "StreamSync",
    "SyncReport",
    "pair_sync",
    "stream_sync",
    "sync_report",
    "write_sync_report",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_GAP_FACTOR = 1.5
#: Default matching tolerance for sensor pairs (as the demo's stream matching): 50 ms.
DEFAULT_TOLERANCE_NS = 50_000_000
MAX_POSITIONS = 1000
I64 = npt.NDArray[np.int64]


def _f(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _positions(pos: I64) -> dict[str, Any]:
    return {"count": int(pos.size), "positions": [int(p) for p in pos[:MAX_POSITIONS]]}


@dataclass(frozen=True)
class StreamSync:
    """Timing of one stream (see the module docstring for the meaning of each field)."""

    sensor: str
    modality: str
    time_offset_ns: int
    count: int
    t_first_ns: int | None
    t_last_ns: int | None
    period_median_ns: float | None
    period_min_ns: int | None
    period_max_ns: int | None
    jitter_std_ns: float | None
    jitter_mad_ns: float | None
    gaps: list[dict[str, int]]
    drops: int
    duplicates: I64
    reversals: I64
    record_delay: dict[str, Any] | None = None
    pose_coverage: dict[str, Any] | None = None

    @property
    def rate_hz(self) -> float | None:
        if self.period_median_ns is None or self.period_median_ns <= 0:
            return None
        return 1e9 / self.period_median_ns

    @property
    def duration_s(self) -> float | None:
        if self.t_first_ns is None or self.t_last_ns is None:
            return None
        return (self.t_last_ns - self.t_first_ns) / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "time_offset_ns": self.time_offset_ns,
            "count": self.count,
            "t_first_ns": self.t_first_ns,
            "t_last_ns": self.t_last_ns,
            "duration_s": self.duration_s,
            "rate_hz": self.rate_hz,
            "period_median_ns": self.period_median_ns,
            "period_min_ns": self.period_min_ns,
            "period_max_ns": self.period_max_ns,
            "jitter_std_ns": self.jitter_std_ns,
            "jitter_mad_ns": self.jitter_mad_ns,
            "gaps": {"count": len(self.gaps), "items": self.gaps[:MAX_POSITIONS]},
            "drops": self.drops,
            "duplicates": _positions(self.duplicates),
            "reversals": _positions(self.reversals),
            "record_delay": self.record_delay,
            "pose_coverage": self.pose_coverage,
        }


@dataclass(frozen=True)
class PairSync:
    """Matched time differences (other − ref, ego clock) of one sensor against the reference."""

    ref: str
    other: str
    tolerance_ns: int
    n_ref: int
    n_matched: int
    dt_median_ns: float | None
    dt_p5_ns: float | None
    dt_p95_ns: float | None
    dt_max_abs_ns: int | None
    sorted_for_matching: bool = False

    @property
    def match_rate(self) -> float | None:
        return None if self.n_ref == 0 else self.n_matched / self.n_ref

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "other": self.other,
            "tolerance_ns": self.tolerance_ns,
            "policy": "nearest",
            "n_ref": self.n_ref,
            "n_matched": self.n_matched,
            "match_rate": self.match_rate,
            "dt_median_ns": self.dt_median_ns,
            "dt_p5_ns": self.dt_p5_ns,
            "dt_p95_ns": self.dt_p95_ns,
            "dt_max_abs_ns": self.dt_max_abs_ns,
            "sorted_for_matching": self.sorted_for_matching,
        }


@dataclass(frozen=True)
class SyncReport:
    """The whole report; ``as_dict()`` is the ``sync_report.json`` content."""

    log: str
    reader: str
    timestamps_raw: bool
    ref_sensor: str
    gap_factor: float
    pose_track: dict[str, int] | None
    streams: dict[str, StreamSync]
    pairs: list[PairSync]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "log": self.log,
            "reader": self.reader,
            "timestamps_raw": self.timestamps_raw,
            "ref_sensor": self.ref_sensor,
            "gap_factor": self.gap_factor,
            "pose_track": self.pose_track,
            "streams": {name: s.as_dict() for name, s in self.streams.items()},
            "pairs": [p.as_dict() for p in self.pairs],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _pose_coverage(t_ego: I64, poses: Trajectory) -> dict[str, Any]:
    before = t_ego < poses.start_ns
    after = t_ego > poses.end_ns
    outside = np.flatnonzero(before | after)
    n = int(t_ego.size)
    return {
        "fraction": None if n == 0 else float(n - outside.size) / n,
        "n_inside": n - int(outside.size),
        "n_before": int(before.sum()),
        "n_after": int(after.sum()),
        "first_outside": [int(i) for i in outside[:MAX_POSITIONS]],
    }


def _record_delay(stamps: I64, record_ns: npt.ArrayLike, sensor: str) -> dict[str, Any]:
    rec = np.asarray(record_ns)
    if rec.shape != stamps.shape or (rec.size and not np.issubdtype(rec.dtype, np.integer)):
        raise SyncError(
            f"stream '{sensor}': record_times has shape {rec.shape} and dtype {rec.dtype}, "
            f"expected int64 ({stamps.size},) aligned with timestamps"
        )
    delay = rec.astype(np.int64) - stamps
    if delay.size == 0:
        return {"count": 0, "median_ns": None, "max_ns": None, "min_ns": None, "n_negative": 0}
    return {
        "count": int(delay.size),
        "median_ns": float(np.median(delay)),
        "max_ns": int(delay.max()),
        "min_ns": int(delay.min()),
        "n_negative": int(np.count_nonzero(delay < 0)),
    }


def stream_sync(
    sensor: str,
    stamps_ns: npt.ArrayLike,
    *,
    modality: str = "",
    time_offset_ns: int = 0,
    poses: Trajectory | None = None,
    record_ns: npt.ArrayLike | None = None,
    gap_factor: float = DEFAULT_GAP_FACTOR,
) -> StreamSync:
    """Timing of one stream from its raw stamps (sensor clock, any order; nothing is rejected).

    ``poses`` (ego clock) gives the pose coverage of ``stamps + time_offset_ns``; ``record_ns``
    (aligned with the stamps) the header-versus-record delay ``record − stamp``.
    """
    what = f"stream '{sensor}'"
    t = np.asarray(stamps_ns)
    if t.ndim != 1:
        raise SyncError(f"{what}: expected a 1-D array of stamps, got shape {t.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise SyncError(f"{what}: stamps must be integer nanoseconds, got dtype {t.dtype}")
    t = t.astype(np.int64)
    gaps = find_gaps(t, gap_factor, what)
    periods = gaps.periods_ns
    gap_items = [
        {
            "index_before": int(gaps.index_before[k]),
            "index_after": int(gaps.index_after[k]),
            "t_before_ns": int(gaps.t_before_ns[k]),
            "t_after_ns": int(gaps.t_after_ns[k]),
            "period_ns": int(gaps.period_ns[k]),
            "missing": int(gaps.missing[k]),
        }
        for k in range(len(gaps))
    ]
    if periods.size:
        median = gaps.median_period_ns
        regular = periods[periods <= gap_factor * median]
        jitter_std = _f(float(np.std(regular))) if regular.size else None
        jitter_mad = _f(float(np.median(np.abs(regular - median)))) if regular.size else None
        p_median: float | None = median
        p_min: int | None = int(periods.min())
        p_max: int | None = int(periods.max())
    else:
        jitter_std = jitter_mad = p_median = None
        p_min = p_max = None
    return StreamSync(
        sensor=sensor,
        modality=modality,
        time_offset_ns=int(time_offset_ns),
        count=int(t.size),
        t_first_ns=int(t.min()) if t.size else None,
        t_last_ns=int(t.max()) if t.size else None,
        period_median_ns=p_median,
        period_min_ns=p_min,
        period_max_ns=p_max,
        jitter_std_ns=jitter_std,
        jitter_mad_ns=jitter_mad,
        gaps=gap_items,
        drops=gaps.n_missing,
        duplicates=duplicate_positions(t, what),
        reversals=reversal_positions(t, what),
        record_delay=None if record_ns is None else _record_delay(t, record_ns, sensor),
        pose_coverage=None
        if poses is None
        else _pose_coverage(t + np.int64(time_offset_ns), poses),
    )


def pair_sync(
    ref: str,
    ref_ego_ns: npt.ArrayLike,
    other: str,
    other_ego_ns: npt.ArrayLike,
    tolerance_ns: int = DEFAULT_TOLERANCE_NS,
    *,
    sorted_for_matching: bool = False,
) -> PairSync:
    """Nearest-stamp matching of ``other`` to every ``ref`` stamp (both ego clock, non-decreasing).

    Out-of-order input raises ``SyncError`` naming the stream (``sync_report`` sorts first and
    records that in ``sorted_for_matching``).
    """
    ref_t = check_monotonic(ref_ego_ns, f"stream '{ref}'")
    other_t = check_monotonic(other_ego_ns, f"stream '{other}'")
    fa = assemble_frames({ref: ref_t, other: other_t}, ref, {other: tolerance_ns})
    matched = fa.index[other] >= 0
    dt = fa.diff_ns[other][matched].astype(np.float64)
    has = dt.size > 0
    return PairSync(
        ref=ref,
        other=other,
        tolerance_ns=int(tolerance_ns),
        n_ref=int(ref_t.size),
        n_matched=int(matched.sum()),
        dt_median_ns=float(np.median(dt)) if has else None,
        dt_p5_ns=float(np.percentile(dt, 5)) if has else None,
        dt_p95_ns=float(np.percentile(dt, 95)) if has else None,
        dt_max_abs_ns=int(np.abs(fa.diff_ns[other][matched]).max()) if has else None,
        sorted_for_matching=sorted_for_matching,
    )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _default_ref(log: Log, stamps: Mapping[str, I64]) -> str:
    lidars = sorted(n for n, s in log.sensors.items() if s.modality == "lidar" and n in stamps)
    if lidars:
        return lidars[0]
    if not stamps:
        raise SyncError("sync_report: the log has no sensor streams")
    return max(sorted(stamps), key=lambda n: stamps[n].size)


def sync_report(
    log: Log,
    *,
    ref_sensor: str | None = None,
    tolerance_ns: int | Mapping[str, int] = DEFAULT_TOLERANCE_NS,
    gap_factor: float = DEFAULT_GAP_FACTOR,
    name: str | None = None,
) -> SyncReport:
    """The sync-quality report of ``log`` (see the module docstring).

    ``ref_sensor`` (default: the first LiDAR by name, else the longest stream) is matched against
    every other sensor with ``tolerance_ns`` (one value, or per other sensor). ``name`` labels
    the log in the report (default ``repr(log)``).
    """
    notes: list[str] = []
    reader = type(log).__name__
    if not log.timestamps_are_raw:
        notes.append(
            f"{reader} returns each stream sorted by time: "
            "reversed stamps cannot be seen in this report; duplicates can"
        )

    try:
        poses: Trajectory | None = log.poses
    except AVFusionError as exc:
        poses = None
        notes.append(f"no pose track: {exc}")
        logger.warning("sync report: no pose track: %s", exc)

    stamps: dict[str, I64] = {}
    for sensor in sorted(log.sensors):
        try:
            stamps[sensor] = np.asarray(log.timestamps(sensor))
        except AVFusionError as exc:
            notes.append(f"stream '{sensor}': cannot read its stamps: {exc}")
            logger.warning("sync report: stream '%s': %s", sensor, exc)
    ref = _default_ref(log, stamps) if ref_sensor is None else ref_sensor
    if ref not in stamps:
        raise SyncError(
            f"sync_report: reference sensor '{ref}' has no stream in this log "
            f"(streams: {', '.join(sorted(stamps)) or 'none'})"
        )

    record_times = getattr(log, "record_times", None)
    streams: dict[str, StreamSync] = {}
    for sensor, t in stamps.items():
        info = log.sensors[sensor]
        record = None
        if callable(record_times):
            try:
                record = np.asarray(record_times(sensor))
            except AVFusionError as exc:
                notes.append(f"stream '{sensor}': no record times: {exc}")
        try:
            streams[sensor] = stream_sync(
                sensor,
                t,
                modality=info.modality,
                time_offset_ns=info.time_offset_ns,
                poses=poses,
                record_ns=record,
                gap_factor=gap_factor,
            )
        except SyncError as exc:
            if record is None:
                raise
            notes.append(f"{exc}; record delay not reported")
            streams[sensor] = stream_sync(
                sensor,
                t,
                modality=info.modality,
                time_offset_ns=info.time_offset_ns,
                poses=poses,
                gap_factor=gap_factor,
            )
        s = streams[sensor]
        if s.duplicates.size or s.reversals.size or s.gaps:
            logger.warning(
                "stream '%s': %d duplicate, %d reversed stamps, %d gaps (%d dropped)",
                sensor,
                s.duplicates.size,
                s.reversals.size,
                len(s.gaps),
                s.drops,
            )

    def ego_sorted(sensor: str) -> tuple[I64, bool]:
        t = stamps[sensor].astype(np.int64) + np.int64(log.sensors[sensor].time_offset_ns)
        unsorted = bool(np.any(np.diff(t) < 0))
        return (np.sort(t, kind="stable") if unsorted else t), unsorted

    ref_t, ref_unsorted = ego_sorted(ref)
    pairs: list[PairSync] = []
    for other in stamps:
        if other == ref:
            continue
        tol = tolerance_ns[other] if isinstance(tolerance_ns, Mapping) else tolerance_ns
        other_t, other_unsorted = ego_sorted(other)
        pairs.append(
            pair_sync(
                ref,
                ref_t,
                other,
                other_t,
                tol,
                sorted_for_matching=ref_unsorted or other_unsorted,
            )
        )
    pose_track = (
        None
        if poses is None
        else {"start_ns": poses.start_ns, "end_ns": poses.end_ns, "count": len(poses)}
    )
    return SyncReport(
        log=repr(log) if name is None else name,
        reader=reader,
        timestamps_raw=bool(log.timestamps_are_raw),
        ref_sensor=ref,
        gap_factor=float(gap_factor),
        pose_track=pose_track,
        streams=streams,
        pairs=pairs,
        notes=notes,
    )


def write_sync_report(report: SyncReport, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/sync_report.json`` atomically (temporary file, then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sync_report.json"
    fd, tmp = tempfile.mkstemp(prefix=".sync_report.", suffix=".json.tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report.as_dict(), f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s", path)
    return path
