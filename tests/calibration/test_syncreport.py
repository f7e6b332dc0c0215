"""Sync-quality report: injected duplicates, reversals, gaps and pose holes are reported exactly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from avfusion import (
    CameraModel,
    Frame,
    Log,
    LogFormatError,
    Sensor,
    SyncError,
    Trajectory,
    Transform,
)
from avfusion.calibration.syncreport import (
    FORMAT_VERSION,
    MAX_POSITIONS,
    pair_sync,
    stream_sync,
    sync_report,
    write_sync_report,
)
from avfusion.calibration.timesync import duplicate_positions, find_gaps, reversal_positions

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def regular(n: int, period_ns: int, start: int = T0) -> npt.NDArray[np.int64]:
    return start + period_ns * np.arange(n, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Raw-stream diagnostics (timesync)
# --------------------------------------------------------------------------------------------


def test_duplicates_and_reversals_by_position() -> None:
    t = np.array([0, 10, 10, 20, 15, 30, 10, 40], np.int64)
    # 2 repeats 1; 6 repeats 1 (anywhere earlier counts); 4 (15 < 20) and 6 (10 < 30) go back.
    assert duplicate_positions(t).tolist() == [2, 6]
    assert reversal_positions(t).tolist() == [4, 6]
    assert duplicate_positions(np.array([5, 7, 5, 5], np.int64)).tolist() == [2, 3]
    assert duplicate_positions(np.zeros(0, np.int64)).size == 0
    assert reversal_positions(np.array([3], np.int64)).size == 0


def test_find_gaps_positions_and_missing_counts() -> None:
    t = regular(20, 50 * MS)
    t = np.delete(t, [5, 12, 13, 14])  # one dropped message after index 4, three after index 10
    gaps = find_gaps(t)
    assert len(gaps) == 2 and gaps.n_missing == 4
    assert gaps.index_before.tolist() == [4, 10] and gaps.index_after.tolist() == [5, 11]
    assert gaps.period_ns.tolist() == [100 * MS, 200 * MS]
    assert gaps.missing.tolist() == [1, 3]
    assert gaps.median_period_ns == 50 * MS
    # In any recorded order the gap is found on the timeline and named by recorded position.
    shuffled = t[[1, 0, *range(2, t.size)]]
    g2 = find_gaps(shuffled)
    assert g2.index_before.tolist() == [4, 10] and g2.n_missing == 4
    with pytest.raises(SyncError, match=r"cam: gap_factor must be a finite number > 1, got 1"):
        find_gaps(t, 1.0, what="cam")
    with pytest.raises(SyncError, match="integer nanoseconds"):
        find_gaps(np.array([0.5, 1.0]))


# --------------------------------------------------------------------------------------------
# One stream
# --------------------------------------------------------------------------------------------


def test_stream_sync_counts_every_injected_fault() -> None:
    t = regular(100, 50 * MS)
    t = np.delete(t, [30, 31])  # drop 2 messages -> one gap after index 29
    t = np.insert(t, 10, t[9])  # duplicate at position 10
    t[50], t[51] = t[51], t[50]  # swap -> reversal at 51
    s = stream_sync("LIDAR_TOP", t, modality="lidar")
    assert s.count == 99
    assert s.duplicates.tolist() == [10]
    assert s.reversals.tolist() == [51]
    assert len(s.gaps) == 1 and s.drops == 2
    gap = s.gaps[0]
    assert (gap["index_before"], gap["index_after"], gap["period_ns"], gap["missing"]) == (
        30,
        31,
        150 * MS,
        2,
    )
    assert s.rate_hz == pytest.approx(20.0)
    assert s.jitter_std_ns == 0.0 and s.jitter_mad_ns == 0.0  # gaps excluded from jitter
    assert s.period_max_ns == 150 * MS and s.period_min_ns == 50 * MS
    assert s.duration_s == pytest.approx(99 * 0.05)


def test_stream_sync_jitter_and_short_streams() -> None:
    rng = np.random.default_rng(0)
    t = regular(2000, 100 * MS) + rng.normal(0, 0.5 * MS, 2000).round().astype(np.int64)
    s = stream_sync("RADAR", t)
    # period = difference of two independent jitters: σ·√2; MAD of a normal = 0.6745·σ.
    assert s.jitter_std_ns == pytest.approx(np.sqrt(2) * 0.5 * MS, rel=0.05)
    assert s.jitter_mad_ns == pytest.approx(0.6745 * np.sqrt(2) * 0.5 * MS, rel=0.08)
    assert s.rate_hz == pytest.approx(10.0, rel=1e-3) and s.drops == 0
    one = stream_sync("CAM", np.array([T0], np.int64)).as_dict()
    assert one["count"] == 1 and one["rate_hz"] is None and one["jitter_std_ns"] is None
    empty = stream_sync("CAM", np.zeros(0, np.int64)).as_dict()
    assert empty["count"] == 0 and empty["t_first_ns"] is None and empty["duration_s"] is None
    with pytest.raises(SyncError, match=r"stream 'X': stamps must be integer nanoseconds"):
        stream_sync("X", np.array([1.0, 2.0]))
    with pytest.raises(SyncError, match=r"stream 'X': expected a 1-D array"):
        stream_sync("X", np.zeros((2, 2), np.int64))


def test_pose_coverage_and_record_delay() -> None:
    poses = Trajectory(
        np.array([T0 + 100 * MS, T0 + 300 * MS]), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3))
    )
    t = regular(10, 50 * MS)  # 0 .. 450 ms
    record = t + np.array([2, 3, 4, 5, 6, 7, 8, 9, 10, -1]) * MS
    s = stream_sync("CAM", t, time_offset_ns=20 * MS, poses=poses, record_ns=record)
    # ego times 20 .. 470 ms: 20, 70 before; 120 .. 270 inside (4); 320 .. 470 after (4).
    assert s.pose_coverage == {
        "fraction": 0.4,
        "n_inside": 4,
        "n_before": 2,
        "n_after": 4,
        "first_outside": [0, 1, 6, 7, 8, 9],
    }
    assert s.record_delay == {
        "count": 10,
        "median_ns": 5.5 * MS,
        "max_ns": 10 * MS,
        "min_ns": -1 * MS,
        "n_negative": 1,
    }
    with pytest.raises(SyncError, match=r"stream 'CAM': record_times has shape \(3,\)"):
        stream_sync("CAM", t, record_ns=record[:3])


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


def test_pair_sync_distribution_and_tolerance() -> None:
    ref = regular(10, 50 * MS)
    other = ref + np.array([1, -2, 3, 4, -5, 6, 30, 2, -1, 0]) * MS
    p = pair_sync("LIDAR", ref, "CAM", other, 10 * MS)
    assert (p.n_ref, p.n_matched, p.match_rate) == (10, 9, 0.9)
    matched = np.array([1, -2, 3, 4, -5, 6, 2, -1, 0]) * MS
    assert p.dt_median_ns == np.median(matched)
    assert p.dt_p5_ns == pytest.approx(np.percentile(matched, 5))
    assert p.dt_p95_ns == pytest.approx(np.percentile(matched, 95))
    assert p.dt_max_abs_ns == 6 * MS
    none = pair_sync("LIDAR", ref, "CAM", ref + 40 * MS, 1 * MS).as_dict()
    assert none["n_matched"] == 0 and none["match_rate"] == 0.0 and none["dt_median_ns"] is None


def test_pair_sync_needs_monotonic_input() -> None:
    ref = regular(5, 50 * MS)
    with pytest.raises(
        SyncError, match=r"stream 'CAM'.*stamp 3 .* goes back in time after stamp 2"
    ):
        pair_sync("LIDAR", ref, "CAM", ref[[0, 1, 3, 2, 4]], 10 * MS)
    with pytest.raises(SyncError, match=r"stream 'LIDAR'.*goes back in time"):
        pair_sync("LIDAR", ref[::-1], "CAM", ref, 10 * MS)


# --------------------------------------------------------------------------------------------
# A whole log
# --------------------------------------------------------------------------------------------


class FakeLog(Log):
    """A minimal Log with raw (unsorted) streams, an optional pose track and record times."""

    timestamps_are_raw = True

    def __init__(
        self,
        streams: Mapping[str, npt.NDArray[np.int64]],
        poses: Trajectory | None,
        record: Mapping[str, npt.NDArray[np.int64]] | None = None,
        offsets: Mapping[str, int] | None = None,
    ) -> None:
        cam = CameraModel(np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]]), 100, 80)
        self._streams = dict(streams)
        self._poses = poses
        self._record = record
        self._sensors = {
            name: Sensor(
                name,
                "lidar" if name.startswith("LIDAR") else "camera",
                Transform(),
                None if name.startswith("LIDAR") else cam,
                (offsets or {}).get(name, 0),
            )
            for name in streams
        }

    @property
    def sensors(self) -> Mapping[str, Sensor]:
        return self._sensors

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Frame:
        raise IndexError(index)

    def timestamps(self, sensor: str) -> npt.NDArray[np.int64]:
        return self._streams[sensor]

    @property
    def poses(self) -> Trajectory:
        if self._poses is None:
            raise LogFormatError("fake: no ego poses")
        return self._poses

    def record_times(self, sensor: str) -> npt.NDArray[np.int64]:
        if self._record is None or sensor not in self._record:
            raise LogFormatError(f"fake: no record times for '{sensor}'")
        return self._record[sensor]


def _faulty_log() -> FakeLog:
    lidar = regular(40, 50 * MS)  # 0 .. 1950 ms
    cam = regular(24, 83 * MS, T0 + 5 * MS)
    cam = np.insert(cam, 7, cam[6])  # duplicate at position 7
    cam[15], cam[16] = cam[16], cam[15]  # reversal at 16
    radar = np.delete(regular(26, 77 * MS, T0 + 3 * MS), [8, 9, 10])  # 3 drops after position 7
    poses = Trajectory(
        np.array([T0 - 10 * MS, T0 + 1000 * MS]),
        np.tile([1.0, 0, 0, 0], (2, 1)),
        np.zeros((2, 3)),
        "track",
    )
    record = {"LIDAR_TOP": lidar + 3 * MS, "CAM_FRONT": cam[:5]}  # CAM_FRONT misaligned
    return FakeLog({"LIDAR_TOP": lidar, "CAM_FRONT": cam, "RADAR": radar}, poses, record)


def test_sync_report_on_a_faulty_log(tmp_path: Path) -> None:
    report = sync_report(_faulty_log(), tolerance_ns=20 * MS, name="faulty")
    assert report.ref_sensor == "LIDAR_TOP" and report.timestamps_raw is True
    cam, radar, lidar = (report.streams[n] for n in ("CAM_FRONT", "RADAR", "LIDAR_TOP"))
    assert cam.duplicates.tolist() == [7] and cam.reversals.tolist() == [16]
    assert cam.drops == 0 and radar.drops == 3 and len(radar.gaps) == 1
    assert radar.gaps[0]["index_before"] == 7 and radar.gaps[0]["period_ns"] == 4 * 77 * MS
    assert lidar.record_delay is not None and lidar.record_delay["median_ns"] == 3 * MS
    assert cam.record_delay is None and radar.record_delay is None
    # Pose track covers [-10, 1000] ms: LiDAR stamps 0 .. 1000 inside (21 of 40).
    assert lidar.pose_coverage is not None
    assert lidar.pose_coverage["n_inside"] == 21 and lidar.pose_coverage["n_after"] == 19
    assert lidar.pose_coverage["fraction"] == pytest.approx(21 / 40)
    assert any("CAM_FRONT" in n and "record_times has shape (5,)" in n for n in report.notes)
    assert any("RADAR" in n and "no record times" in n for n in report.notes)
    pairs = {p.other: p for p in report.pairs}
    assert pairs["CAM_FRONT"].sorted_for_matching and not pairs["RADAR"].sorted_for_matching
    assert pairs["RADAR"].n_ref == 40 and pairs["RADAR"].dt_max_abs_ns is not None
    assert pairs["RADAR"].dt_max_abs_ns <= 20 * MS

    path = write_sync_report(report, tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["format_version"] == FORMAT_VERSION == 1
    assert data["log"] == "faulty" and data["reader"] == "FakeLog"
    assert data["streams"]["CAM_FRONT"]["duplicates"] == {"count": 1, "positions": [7]}
    assert data["streams"]["CAM_FRONT"]["reversals"] == {"count": 1, "positions": [16]}
    assert data["streams"]["RADAR"]["drops"] == 3
    assert data["streams"]["RADAR"]["gaps"]["items"][0]["missing"] == 3
    assert {p["other"] for p in data["pairs"]} == {"CAM_FRONT", "RADAR"}
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic write left nothing behind


def test_sync_report_without_poses_offsets_and_positions_cap() -> None:
    lidar = regular(10, 50 * MS)
    cam = np.repeat(regular(10, 50 * MS), 150)  # 1490 duplicates
    log = FakeLog({"LIDAR_TOP": lidar, "CAM_FRONT": cam}, None, offsets={"CAM_FRONT": 7 * MS})
    report = sync_report(log, tolerance_ns={"CAM_FRONT": 60 * MS})
    assert any("no pose track: fake: no ego poses" in n for n in report.notes)
    assert report.pose_track is None and report.streams["LIDAR_TOP"].pose_coverage is None
    d = report.as_dict()["streams"]["CAM_FRONT"]["duplicates"]
    assert d["count"] == 1490 and len(d["positions"]) == MAX_POSITIONS
    pair = report.pairs[0]
    # The camera clock is 7 ms behind: in the ego clock it is 7 ms later than its stamps.
    assert pair.dt_median_ns == 7 * MS and pair.n_matched == 10


def test_sync_report_errors_and_reader_notes() -> None:
    log = _faulty_log()
    with pytest.raises(
        SyncError, match=r"reference sensor 'GPS' has no stream .*CAM_FRONT, LIDAR_TOP, RADAR"
    ):
        sync_report(log, ref_sensor="GPS")
    with pytest.raises(SyncError, match="gap_factor must be a finite number > 1"):
        sync_report(log, gap_factor=0.5)
    cam_ref = sync_report(log, ref_sensor="CAM_FRONT")
    assert cam_ref.ref_sensor == "CAM_FRONT" and len(cam_ref.pairs) == 2

    class SortingLog(FakeLog):  # a reader that sorts its streams says so
        timestamps_are_raw = False

    sorted_log = SortingLog({"LIDAR_TOP": regular(3, MS)}, None)
    report = sync_report(sorted_log)
    assert report.timestamps_raw is False
    assert any("reversed stamps cannot be seen" in n for n in report.notes)
