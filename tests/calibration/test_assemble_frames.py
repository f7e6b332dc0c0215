"""Frame assembly around a reference sensor: matches, differences and missing sensors."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.timesync import assemble_frames
from avfusion.errors import SyncError

MS = 1_000_000


def test_matches_each_sensor_and_reports_missing() -> None:
    streams = {
        "LIDAR": np.array([0, 50, 100, 150]) * MS,
        "CAM": np.array([3, 49, 160]) * MS,  # nothing near 100
    }
    fa = assemble_frames(streams, "LIDAR", 10 * MS)
    assert len(fa) == 4
    np.testing.assert_array_equal(fa.index["CAM"], [0, 1, -1, 2])
    np.testing.assert_array_equal(fa.diff_ns["CAM"], [3 * MS, -1 * MS, 0, 10 * MS])
    assert fa.missing(2) == ("CAM",)
    assert fa.matched(0) == {"LIDAR": 0, "CAM": 0}
    assert fa.time_diffs_ns(3) == {"LIDAR": 0, "CAM": 10 * MS}
    assert fa.match_rate()["CAM"] == pytest.approx(0.75)


def test_clock_offsets_apply_before_matching() -> None:
    # The camera clock runs 30 ms behind the ego clock: its stamps 30 ms early.
    streams = {"LIDAR": np.array([100, 200]) * MS, "CAM": np.array([71, 169]) * MS}
    without = assemble_frames(streams, "LIDAR", 5 * MS)
    assert without.missing(0) == ("CAM",)
    fa = assemble_frames(streams, "LIDAR", 5 * MS, time_offsets_ns={"CAM": 30 * MS})
    np.testing.assert_array_equal(fa.diff_ns["CAM"], [1 * MS, -1 * MS])
    assert fa.missing(0) == () and fa.missing(1) == ()


def test_per_sensor_tolerance_and_latest_before_policy() -> None:
    streams = {"L": np.array([100]) * MS, "A": np.array([95, 104]) * MS, "B": np.array([80]) * MS}
    fa = assemble_frames(streams, "L", {"A": 10 * MS, "B": 25 * MS}, policy="latest_before")
    assert fa.matched(0) == {"L": 0, "A": 0, "B": 0}
    assert fa.time_diffs_ns(0) == {"L": 0, "A": -5 * MS, "B": -20 * MS}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ref_sensor": "RADAR"}, "reference sensor 'RADAR' has no stream"),
        ({"policy": "closest"}, "unknown policy 'closest'"),
        ({"tolerance_ns": {"X": 1}}, r"no tolerance given for sensors \['CAM'\]"),
        ({"time_offsets_ns": {"GPS": 1}}, r"unknown sensors \['GPS'\]"),
        ({"tolerance_ns": 1.5}, "non-negative integer"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"ref_sensor": "LIDAR", "tolerance_ns": MS, **kwargs}
    with pytest.raises(SyncError, match=message):
        assemble_frames({"LIDAR": np.array([0]), "CAM": np.array([0])}, **args)  # type: ignore[arg-type]


def test_non_monotonic_stream_is_rejected_with_its_name() -> None:
    with pytest.raises(SyncError, match=r"stream 'CAM'.*goes back in time"):
        assemble_frames({"LIDAR": np.array([0, 10]), "CAM": np.array([5, 1])}, "LIDAR", 10)
