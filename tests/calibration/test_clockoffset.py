"""Clock-offset estimation between the LiDAR and each camera, against the synthetic truth."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from avfusion import CalibrationError, ConfigError, SyncError
from avfusion.calibration import ClockOffsetEstimate, Trajectory
from avfusion.calibration.clockoffset import (
    ClockOffsetSettings,
    edge_distance_image,
    edge_map,
    estimate_clock_offset,
    estimate_clock_offsets,
    lidar_depth_edges,
)
from avfusion.io.nuscenes import NuScenesLog

REPO = Path(__file__).resolve().parents[2]
CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "THERMAL_FRONT")
MS = 1_000_000
#: The issue's bound: every camera and the thermal camera within 2 ms of the truth.
TOLERANCE_NS = 2 * MS


@pytest.fixture(scope="session")
def sample_root() -> Path:
    from avfusion.synth import ensure_sample_data

    return ensure_sample_data(REPO / "sample_data")


@pytest.fixture(scope="session")
def log(sample_root: Path) -> NuScenesLog:
    return NuScenesLog(sample_root)


@pytest.fixture(scope="session")
def truth(sample_root: Path) -> dict[str, Any]:
    calib: dict[str, Any] = json.loads((sample_root / "truth" / "calibration.json").read_text())
    return calib["sensors"]


@pytest.fixture(scope="session")
def estimates(log: NuScenesLog) -> dict[str, ClockOffsetEstimate]:
    """Every camera of the sample log, with the default settings (the LiDAR work is shared)."""
    return estimate_clock_offsets(log)


class WrappedLog:
    """A log that answers like ``inner`` except for the overridden attributes."""

    def __init__(self, inner: NuScenesLog, **overrides: Any) -> None:
        self._inner = inner
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._inner, name)


def static_track(log: NuScenesLog) -> Trajectory:
    """The first pose of the log, held for its whole duration: an ego that never moves."""
    p = log.poses
    return Trajectory(
        np.array([p.start_ns, p.end_ns]),
        np.repeat(p.quaternions[:1], 2, axis=0),
        np.repeat(p.translations[:1], 2, axis=0),
        "static",
    )


# --------------------------------------------------------------------------------------------
# The sample log: recovered offsets against the truth
# --------------------------------------------------------------------------------------------


def test_the_log_believes_zero_offsets_and_exact_extrinsics(
    log: NuScenesLog, truth: dict[str, Any]
) -> None:
    """The estimate must come from the data: the log states 0 for every offset, while the true
    offsets differ; the believed extrinsics are not perturbed for any sensor used here."""
    for name in (*CAMERAS, "LIDAR_TOP"):
        assert log.sensors[name].time_offset_ns == 0
        assert truth[name]["perturbation"]["rotvec_rad"] == [0.0, 0.0, 0.0]
        assert truth[name]["perturbation"]["translation_m"] == [0.0, 0.0, 0.0]
    assert truth["LIDAR_TOP"]["clock_offset_ns"] == 0
    assert {truth[c]["clock_offset_ns"] for c in CAMERAS} == {4 * MS, -3 * MS, 7 * MS, 25 * MS}


def test_every_image_sensor_is_estimated(estimates: dict[str, ClockOffsetEstimate]) -> None:
    assert sorted(estimates) == sorted(CAMERAS)


@pytest.mark.parametrize("camera", CAMERAS)
def test_recovers_the_true_offset_within_2_ms(
    camera: str, estimates: dict[str, ClockOffsetEstimate], truth: dict[str, Any]
) -> None:
    est = estimates[camera]
    true_ns = truth[camera]["clock_offset_ns"]
    assert est.observable, est.reason
    assert est.offset_ns is not None
    assert abs(est.offset_ns - true_ns) <= TOLERANCE_NS, (camera, est.offset_ns, true_ns)
    # The reported quality says so too: a tight spread, a confident verdict, a clear dip.
    assert est.std_ns < 1.0 * MS
    assert est.confidence >= 0.9
    assert est.tolerance_ns == TOLERANCE_NS
    assert est.contrast > 0.02
    assert est.image_motion_px_per_ms > 0.1
    assert est.n_frames >= 40 and est.n_points >= 1000
    assert est.reason == ""
    assert est.believed_offset_ns == 0 and est.correction_ns == est.offset_ns
    # The cost curve (coarse + fine, sorted) has its minimum next to the estimate.
    assert est.offsets_ns.shape == est.cost.shape and np.all(np.diff(est.offsets_ns) >= 0)
    assert est.offsets_ns[0] <= -60 * MS and est.offsets_ns[-1] >= 60 * MS
    assert abs(int(est.offsets_ns[np.argmin(est.cost)]) - est.offset_ns) <= MS


def test_result_summary_is_json_ready(estimates: dict[str, ClockOffsetEstimate]) -> None:
    est = estimates["CAM_FRONT_LEFT"]
    d = json.loads(json.dumps(est.as_dict()))
    assert d["camera"] == "CAM_FRONT_LEFT" and d["lidar"] == "LIDAR_TOP"
    assert d["observable"] is True and d["offset_ns"] == est.offset_ns
    assert d["correction_ns"] == est.offset_ns
    assert "CAM_FRONT_LEFT vs LIDAR_TOP" in repr(est) and "ms" in repr(est)


# --------------------------------------------------------------------------------------------
# Not observable: a clear answer instead of a number
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["poses argument", "log with a constant pose track"])
def test_static_ego_is_not_observable(log: NuScenesLog, how: str) -> None:
    track = static_track(log)
    if how == "poses argument":
        est = estimate_clock_offset(log, "CAM_FRONT_RIGHT", poses=track, max_frames=24)
    else:
        wrapped = WrappedLog(log, poses=track)
        est = estimate_clock_offset(wrapped, "CAM_FRONT_RIGHT", max_frames=24)  # type: ignore[arg-type]
    assert not est.observable
    assert est.offset_ns is None and est.correction_ns is None
    assert est.confidence == 0.0 and est.std_ns == float("inf")
    assert "does not move" in est.reason and "CAM_FRONT_RIGHT" in est.reason
    assert est.image_motion_px_per_ms < 1e-6
    assert "not observable" in repr(est)


def test_too_few_frames_is_not_observable(log: NuScenesLog) -> None:
    est = estimate_clock_offset(log, "CAM_FRONT", max_frames=3)
    assert not est.observable and est.offset_ns is None
    assert est.n_frames == 3
    assert "only 3 usable frames" in est.reason and "at least 8" in est.reason
    assert est.skipped["beyond max_frames"] > 0


def test_offset_outside_the_search_range_is_not_observable(log: NuScenesLog) -> None:
    """The truth (+7 ms) lies outside the range: the guard band shows the curve still falls
    beyond it, so no (secondary) dip inside the range is reported as the answer."""
    est = estimate_clock_offset(
        log, "CAM_FRONT_RIGHT", search_ns=(-60 * MS, -10 * MS), max_frames=24
    )
    assert not est.observable and est.offset_ns is None
    assert "outside the search range" in est.reason
    assert est.cost.size and est.offsets_ns.size == est.cost.size


def test_a_short_search_range_without_the_truth_is_not_observable(log: NuScenesLog) -> None:
    """CAM_FRONT_RIGHT's curve has a secondary dip near +24 ms; searching only +12..+60 ms
    must not report it."""
    est = estimate_clock_offset(log, "CAM_FRONT_RIGHT", search_ns=(12 * MS, 60 * MS), max_frames=24)
    assert not est.observable and est.offset_ns is None


def test_points_without_per_point_times_are_warned_about(
    log: NuScenesLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A log that cannot give per-point LiDAR times still runs, with the points at the sweep
    stamp, and says so."""
    wrapped = WrappedLog(log, get=None, blob_path=None)  # the sidecar files cannot be found
    with caplog.at_level(logging.WARNING, logger="avfusion.calibration.clockoffset"):
        est = estimate_clock_offset(wrapped, "CAM_FRONT_LEFT", max_frames=12)  # type: ignore[arg-type]
    assert "no per-point times" in caplog.text and "LIDAR_TOP" in caplog.text
    assert est.n_frames >= 8


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_unknown_sensors_are_rejected(log: NuScenesLog) -> None:
    with pytest.raises(CalibrationError, match=r"unknown camera 'CAM_BACK' \(sensors: CAM_FRONT"):
        estimate_clock_offset(log, "CAM_BACK")
    with pytest.raises(CalibrationError, match="unknown LiDAR 'LIDAR_LEFT'"):
        estimate_clock_offset(log, "CAM_FRONT", "LIDAR_LEFT")
    with pytest.raises(CalibrationError, match="unknown camera 'CAM_BACK'"):
        estimate_clock_offsets(log, ["CAM_FRONT", "CAM_BACK"])
    with pytest.raises(CalibrationError, match="must be a list of names"):
        estimate_clock_offsets(log, "CAM_FRONT")


def test_wrong_sensor_kinds_are_rejected(log: NuScenesLog) -> None:
    with pytest.raises(CalibrationError, match="'RADAR_FRONT' is a radar sensor, not a camera"):
        estimate_clock_offset(log, "RADAR_FRONT")
    with pytest.raises(
        CalibrationError, match="reference 'CAM_FRONT_LEFT' is a camera sensor, not a LiDAR"
    ):
        estimate_clock_offset(log, "CAM_FRONT", "CAM_FRONT_LEFT")


def test_camera_without_intrinsics_is_rejected(log: NuScenesLog) -> None:
    sensors = dict(log.sensors)
    sensors["CAM_FRONT"] = SimpleNamespace(
        name="CAM_FRONT", modality="camera", camera=None, time_offset_ns=0
    )
    wrapped = WrappedLog(log, sensors=sensors)
    with pytest.raises(CalibrationError, match="camera 'CAM_FRONT' has no intrinsics"):
        estimate_clock_offset(wrapped, "CAM_FRONT")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ((60 * MS, -60 * MS), r"low < high, got \(60000000, -60000000\)"),
        ((0, 0), "low < high"),
        ((-60e6, 60e6), "search_ns low must be integer nanoseconds, got float"),
        ((-2_000_000_000, 60 * MS), r"reaches beyond ±500000000 ns"),
        ((0, 2 * MS), "spans less than 4 coarse steps"),
        (5, "must be a pair"),
        ((1, 2, 3), "must be a pair"),
    ],
)
def test_bad_search_ranges_are_rejected(log: NuScenesLog, search: Any, message: str) -> None:
    with pytest.raises(SyncError, match=message) as info:
        estimate_clock_offset(log, "CAM_FRONT", search_ns=search)
    assert "CAM_FRONT" in str(info.value)
    with pytest.raises(SyncError, match=message):
        estimate_clock_offsets(log, search_ns=search)


def test_bad_poses_and_frame_caps_are_rejected(log: NuScenesLog) -> None:
    with pytest.raises(CalibrationError, match="poses must be a Trajectory"):
        estimate_clock_offset(log, "CAM_FRONT", poses="world")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_frames must be an integer >= 1"):
        estimate_clock_offset(log, "CAM_FRONT", max_frames=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fine_step_ns": 2 * MS}, r"fine_step_ns must be at most coarse_step_ns"),
        ({"coarse_step_ns": 1.0e6}, "coarse_step_ns must be integer nanoseconds > 0"),
        ({"guard_ns": -1}, "guard_ns must be integer nanoseconds >= 0"),
        ({"min_frames": 0}, "min_frames must be an integer >= 1"),
        ({"max_depth_m": 1.0}, "max_depth_m must be greater than min_depth_m"),
        ({"low_snr": 20.0}, "low_snr must be at most high_snr"),
        ({"min_agreement": 1.5}, r"min_agreement must be in \[0, 1\]"),
        ({"max_distance_px": -3.0}, "max_distance_px must be a finite number > 0, or None"),
        ({"min_jump_m": float("nan")}, "min_jump_m must be a finite number > 0"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClockOffsetSettings(**kwargs)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _ring_scan(step_deg: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One ring: a wall 20 m away with a 1 m wide pole 5 m away in front of it (centred on +x),
    and a gap in the wall (no returns) from 30° to 35°."""
    az = np.deg2rad(np.arange(-45.0, 45.0, step_deg))
    rng = np.full(az.size, 20.0)
    pole_half = np.arctan(0.5 / 5.0)
    rng[np.abs(az) < pole_half] = 5.0
    keep = ~((az > np.deg2rad(30.0)) & (az < np.deg2rad(35.0)))
    xyz = np.stack([rng * np.cos(az), rng * np.sin(az), np.zeros(az.size)], axis=1)[keep]
    return xyz, np.zeros(int(keep.sum()), np.int64)


def test_lidar_depth_edges_find_the_pole_boundaries_only() -> None:
    xyz, ring = _ring_scan()
    times = np.arange(xyz.shape[0], dtype=np.int64) * 1000
    edges = lidar_depth_edges(xyz, ring, times)
    # Two boundaries of the pole; the gap in the wall is not an edge.
    assert edges.xyz.shape == (2, 3)
    np.testing.assert_allclose(edges.range_m, 5.0)
    az = np.sort(np.rad2deg(np.arctan2(edges.xyz[:, 1], edges.xyz[:, 0])))
    pole_edge = np.rad2deg(np.arctan(0.5 / 5.0))
    # Placed half-way in angle between the pole's last return and the wall's first.
    np.testing.assert_allclose(np.abs(az), pole_edge, atol=0.5)
    assert set(edges.t_rel_ns.tolist()) <= set(times.tolist())
    # Input arrays are untouched and shapes are checked.
    with pytest.raises(CalibrationError, match="points but ring has shape"):
        lidar_depth_edges(xyz, ring[:-1])
    with pytest.raises(CalibrationError, match=r"points must be \(N, 3\)"):
        lidar_depth_edges(xyz[:, :2], ring)


def test_lidar_depth_edges_without_jumps_is_empty() -> None:
    az = np.linspace(-1.0, 1.0, 200)
    xyz = np.stack([10 * np.cos(az), 10 * np.sin(az), np.zeros(200)], axis=1)
    edges = lidar_depth_edges(xyz, np.zeros(200, np.int64))
    assert edges.xyz.shape == (0, 3) and edges.t_rel_ns.shape == (0,)


def test_edge_map_on_a_radiometric_image_ignores_noise_and_column_pattern() -> None:
    """16-bit counts (0.01 K each): a 1 K step between two halves, NETD 0.05 K and a fixed
    column pattern of 0.03 K. Only the step is an edge."""
    rng = np.random.default_rng(0)
    h, w = 120, 160
    kelvin = np.full((h, w), 293.0)
    kelvin[:, 80:] += 1.0
    kelvin += rng.normal(0.0, 0.05, (h, w)) + rng.normal(0.0, 0.03, w)[None, :]
    counts = np.rint(kelvin / 0.01).astype(np.uint16)
    edges = edge_map(counts)
    cols = np.flatnonzero(edges[10:-10].any(axis=0))
    assert cols.size and cols.min() >= 78 and cols.max() <= 81
    dist = edge_distance_image(counts)
    assert dist.dtype == np.float32 and dist.shape == (h, w)
    assert dist[60, 79] <= 1.0 and 18.0 <= dist[60, 60] <= 21.0


def test_edge_map_on_colour_and_on_a_blank_image() -> None:
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[20:40, 30:50] = (200, 120, 40)
    edges = edge_map(rgb)
    assert edges[30, 29:31].any() and edges[30, 49:51].any() and not edges[5, 5]
    blank = np.full((60, 80), 7, np.uint8)
    assert not edge_map(blank).any()
    np.testing.assert_allclose(edge_distance_image(blank), np.hypot(60, 80), rtol=1e-6)
    with pytest.raises(CalibrationError, match="expected an H×W grey"):
        edge_map(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.realdata
def test_a_single_real_keyframe_is_not_observable(realdata: Path) -> None:
    """The real nuScenes keyframe has one LiDAR sweep and one image per camera: too little to
    estimate a clock offset, and the answer must say so instead of guessing."""
    from avfusion.io import NuScenesLog

    log = NuScenesLog(realdata / "nuscenes-keyframe")
    est = estimate_clock_offset(log, "CAM_FRONT")
    assert not est.observable and est.offset_ns is None
    assert "usable frames of 'CAM_FRONT'" in est.reason and "need at least" in est.reason
