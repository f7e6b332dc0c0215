"""Targetless LiDAR→camera / LiDAR→thermal refinement, the miscalibration check, and
``calibration.json`` fed back to the reader.

The synthetic log's calibration equals its truth; perturbed variants are made with the
reader's ``calibration=`` keyword (the extrinsic of one sensor replaced, and every sensor's
true clock offset from ``truth/calibration.json``, so that ego motion between capture times is
compensated and not mistaken for extrinsic error).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.calibration.extrinsics import (
    RefineSettings,
    SensorCalibration,
    calibration_record,
    read_calibration,
    refine_extrinsic,
    refine_radar,
    write_calibration,
)
from avfusion.calibration.transforms import Transform
from avfusion.calibration.validation import (
    AlignmentData,
    AlignmentSettings,
    alignment_costs,
    check_sensor,
    check_settings,
    frame_check,
    prepare_alignment,
)
from avfusion.errors import CalibrationError, ConfigError
from avfusion.io import NuScenesLog

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "nuscenes"


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    from avfusion.synth import ensure_sample_data

    ensure_sample_data(SAMPLE.parent)
    sensors: dict[str, Any] = json.loads((SAMPLE / "truth" / "calibration.json").read_text())[
        "sensors"
    ]
    return sensors


def synth_log(truth: dict[str, Any], perturb: dict[str, Transform] | None = None) -> NuScenesLog:
    """The sample log with true clock offsets; ``perturb`` maps sensor → P with the believed
    extrinsic ``truth @ P`` (the synthetic truth's convention, in the sensor frame)."""
    base = NuScenesLog(SAMPLE)
    calib = {
        name: SensorCalibration(
            name,
            s.ego_from_sensor @ (perturb or {}).get(name, Transform()),
            int(truth[name]["clock_offset_ns"]),
        )
        for name, s in base.sensors.items()
    }
    return NuScenesLog(SAMPLE, calibration=calib)


PERTURBATION = {  # 1.5° about a skew axis, 15 cm along a skew direction (sensor frame)
    "CAM_FRONT": Transform.from_rotvec(
        np.radians(1.5) * np.array([0.48, -0.6, 0.64]), 0.15 * np.array([-0.58, 0.58, 0.57])
    ),
    "THERMAL_FRONT": Transform.from_rotvec(
        np.radians(1.5) * np.array([-0.6, 0.64, 0.48]), 0.15 * np.array([0.58, 0.57, -0.58])
    ),
}


@pytest.mark.parametrize(
    ("sensor", "max_deg", "max_m"), [("CAM_FRONT", 0.15, 0.03), ("THERMAL_FRONT", 0.3, 0.05)]
)
def test_refine_recovers_a_15_degree_15_cm_perturbation(
    truth: dict[str, Any], sensor: str, max_deg: float, max_m: float
) -> None:
    p = PERTURBATION[sensor]
    assert np.degrees(np.linalg.norm(p.as_rotvec())) == pytest.approx(1.5, abs=1e-3)
    assert np.linalg.norm(p.translation) == pytest.approx(0.15, abs=2e-3)
    log = synth_log(truth, {sensor: p})
    started = time.perf_counter()
    est = refine_extrinsic(log, sensor)
    elapsed = time.perf_counter() - started
    assert est.observable, est.reason
    assert est.ego_from_sensor is not None and est.cam_from_lidar is not None
    true_ego_from_sensor = NuScenesLog(SAMPLE).sensors[sensor].ego_from_sensor
    rot_err = np.degrees(est.ego_from_sensor.rotation_angle_to(true_ego_from_sensor))
    trans_err = float(
        np.linalg.norm(est.ego_from_sensor.translation - true_ego_from_sensor.translation)
    )
    print(
        f"\n{sensor}: recovered within {rot_err:.3f}° and {100 * trans_err:.2f} cm "
        f"(std {np.round(est.std_rotation_deg, 3)}°, {np.round(100 * est.std_translation_m, 2)} cm; "
        f"{est.n_frames} frames, {est.n_points} points, {elapsed:.1f} s)"
    )
    assert rot_err <= max_deg and trans_err <= max_m
    assert est.cost_after < est.cost_before
    cam_from_lidar = true_ego_from_sensor.inverse() @ log.sensors["LIDAR_TOP"].ego_from_sensor
    assert np.degrees(est.cam_from_lidar.rotation_angle_to(cam_from_lidar)) <= max_deg


def test_refine_radar_recovers_yaw_and_planar_translation(truth: dict[str, Any]) -> None:
    """RADAR_FRONT perturbed by 1.5° of yaw and (15, -10) cm, 80 radar sweeps (about 1400
    static detections). No accuracy target is stated for radar in the issue; measured: within
    0.15° and 4.7 cm, the same offset as for the unperturbed radar (0.13°, 4.5 cm), which is
    therefore a bias of the method (the std from the sweep-to-sweep scatter is 0.05°, 2.6 cm)."""
    p = Transform.from_rotvec([0.0, 0.0, np.radians(1.5)], [0.15, -0.10, 0.0])
    log = synth_log(truth, {"RADAR_FRONT": p})
    est = refine_radar(log)
    assert est.observable, est.reason
    assert est.ego_from_sensor is not None
    true = NuScenesLog(SAMPLE).sensors["RADAR_FRONT"].ego_from_sensor
    yaw_err = np.degrees(est.ego_from_sensor.rotation_angle_to(true))
    trans_err = float(np.linalg.norm(est.ego_from_sensor.translation - true.translation))
    print(
        f"\nRADAR_FRONT: recovered within {yaw_err:.3f}° and {100 * trans_err:.1f} cm (std "
        f"{est.std_yaw_deg:.3f}°, {np.round(100 * est.std_translation_m, 1)} cm; "
        f"{est.n_frames} sweeps, {est.n_points} detections, {est.elapsed_s:.1f} s)"
    )
    assert yaw_err <= 0.25 and trans_err <= 0.06
    assert est.correction_yaw_deg == pytest.approx(1.5, abs=0.25)
    assert est.cost_after < est.cost_before
    assert est.as_dict()["observable"] is True
    with pytest.raises(CalibrationError, match="'CAM_FRONT' is not a radar of the log"):
        refine_radar(log, "CAM_FRONT")


class _EmptyRoad:
    """The sample log with every LiDAR return above the road surface removed."""

    def __init__(self, log: NuScenesLog) -> None:
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def load_points(self, token: str, **kw: Any) -> Any:
        cloud = self._log.load_points(token, **kw)
        z_ego = cloud.sensor.ego_from_sensor.apply(cloud.xyz.astype(np.float64))[:, 2]
        times = {"t_rel_ns": np.asarray(cloud.attrs["point_time_ns"])}  # read before the sidecar
        return dataclasses.replace(cloud, attrs={**cloud.attrs, **times}).select(z_ego < 0.15)


def test_refine_refuses_when_the_data_do_not_constrain_it(truth: dict[str, Any]) -> None:
    log = _EmptyRoad(synth_log(truth))
    est = refine_extrinsic(log, "CAM_FRONT", alignment=AlignmentSettings(max_frames=8))
    assert not est.observable and est.ego_from_sensor is None
    assert "too little structure" in est.reason or "usable frames" in est.reason, est.reason
    print(f"\nempty road: {est.reason}")
    # Only points 30 m and more in front of the camera: a translation along the optical axis
    # barely moves them, so it is not determined and the answer is refused.
    full = synth_log(truth)
    data = prepare_alignment(full, "CAM_FRONT", settings=AlignmentSettings(max_frames=10))
    far = data.points_cam[:, 2] >= 30.0
    data = dataclasses.replace(
        data, points_cam=data.points_cam[far], frame_index=data.frame_index[far]
    )
    est = refine_extrinsic(full, "CAM_FRONT", data=data, settings=RefineSettings(min_points=100))
    print(f"only points beyond 30 m ({data.n_points}): {est.reason}")
    assert not est.observable and "translation along z" in est.reason, est.reason
    assert est.std_translation_m[2] > 0.03


@pytest.fixture(scope="module")
def checked(truth: dict[str, Any]) -> dict[str, AlignmentData]:
    log = synth_log(truth)
    s = check_settings(max_frames=40)  # check_calibration's settings, 40 images
    return {
        name: prepare_alignment(log, name, settings=s) for name in ("CAM_FRONT", "THERMAL_FRONT")
    }


def rotated(data: AlignmentData, rotvec: np.ndarray) -> AlignmentData:
    """The same data as if the believed extrinsic were off by ``rotvec`` (camera frame)."""
    err = Transform.from_rotvec(rotvec)
    return dataclasses.replace(data, points_cam=err.inverse().apply(data.points_cam))


def test_check_per_frame_false_alarms_and_recall(checked: dict[str, AlignmentData]) -> None:
    """Per frame over 40 images per sensor, each image with its 3 nearest sweeps; the decision
    for a frame uses the window of 5 consecutive images around it (``frame_check``). Correct
    calibration: flagged in 0 % (CAM_FRONT) / 0 % (THERMAL_FRONT) of frames (issue: <= 5 %).
    A 0.5° rotation error (the 6 signed camera axes and 6 random axes, 480 trials per sensor):
    flagged in 96.7 % / 98.1 % of frames (issue: >= 95 %). THERMAL_FRONT's edges are found
    after ``CHECK_THERMAL_BLUR_PX`` of pre-blur (thin, noisy thermal edges gave 7.5 % false
    alarms without it); the blur was chosen on this log (1.2-1.6 px all give <= 2.5 %)."""
    rng = np.random.default_rng(0)
    axes = [s * np.eye(3)[i] for i in range(3) for s in (1.0, -1.0)]
    axes += [a / np.linalg.norm(a) for a in rng.normal(size=(6, 3))]
    for name, data in checked.items():
        flagged, gain, _ = frame_check(data)
        false_alarm = float(np.mean(flagged))
        per_axis = [
            float(np.mean(frame_check(rotated(data, np.radians(0.5) * a))[0])) for a in axes
        ]
        recall = float(np.mean(per_axis))
        print(
            f"\n{name}: {data.n_frames} frames; false alarms {100 * false_alarm:.1f} %, recall "
            f"at 0.5° {100 * recall:.1f} % (per axis x+ x- y+ y- z+ z- then random: "
            f"{np.round(per_axis, 2).tolist()}), mean gain at the truth {np.mean(gain):.3f}"
        )
        assert recall >= 0.95
        assert false_alarm <= 0.05


def test_log_wide_check_says_ok_and_finds_half_a_degree(checked: dict[str, AlignmentData]) -> None:
    for name, all_frames in checked.items():
        data = all_frames.subset(np.arange(0, all_frames.n_frames, 2))  # 20 of the 40 images
        ok = check_sensor(data)
        print(f"\n{name}: {ok.verdict}; correction {np.round(ok.correction_rotation_deg, 3)}°")
        assert ok.ok, ok.verdict
        for axis in range(3) if name == "CAM_FRONT" else (2,):  # roll: the hardest
            err = np.radians(0.5) * np.eye(3)[axis]
            bad = check_sensor(rotated(data, err))
            print(f"{name} 0.5° about axis {axis}: {bad.verdict}")
            assert not bad.ok
            # the best nearby extrinsic lies 0.5° along the error from where it lies for the
            # correct calibration (that one is off by the cost's own bias: up to 0.15° of roll
            # for THERMAL_FRONT, 0.07° of pitch for CAM_FRONT)
            moved = bad.correction_rotation_deg - ok.correction_rotation_deg
            np.testing.assert_allclose(moved, 0.5 * np.eye(3)[axis], atol=0.05)
        d = bad.as_dict()
        assert d["ok"] is False and len(d["frames"]) == data.n_frames


def test_calibration_json_round_trip_and_reader_override(
    truth: dict[str, Any], tmp_path: Path
) -> None:
    base = NuScenesLog(SAMPLE)
    cam = base.sensors["CAM_FRONT"]
    moved = cam.ego_from_sensor @ Transform.from_rotvec([0.0, 0.01, 0.0], [0.1, 0.0, 0.0])
    assert cam.camera is not None
    rec = calibration_record(
        "CAM_FRONT", moved, camera_intrinsic=cam.camera.K, time_offset_ns=4_000_000
    )
    path = write_calibration({"CAM_FRONT": rec}, tmp_path, source={"log": str(SAMPLE)})
    doc = json.loads(path.read_text())
    cs = doc["sensors"]["CAM_FRONT"]["calibrated_sensor"]
    np.testing.assert_allclose(cs["rotation"], moved.quaternion)  # nuScenes: w, x, y, z
    tf = doc["sensors"]["CAM_FRONT"]["tf_static"]
    assert tf["header"]["frame_id"] == "base_link" and tf["child_frame_id"] == "CAM_FRONT"
    q = tf["transform"]["rotation"]
    np.testing.assert_allclose([q["w"], q["x"], q["y"], q["z"]], moved.quaternion)
    back = read_calibration(path)["CAM_FRONT"]
    assert back.ego_from_sensor.allclose(moved, atol=1e-12) and back.time_offset_ns == 4_000_000
    log = NuScenesLog(SAMPLE, calibration=path)
    assert log.sensors["CAM_FRONT"].ego_from_sensor.allclose(moved, atol=1e-12)
    assert log.sensors["CAM_FRONT"].time_offset_ns == 4_000_000
    frame = log[0]
    assert frame.images["CAM_FRONT"].sensor.ego_from_sensor.allclose(moved, atol=1e-12)
    assert frame.points["LIDAR_TOP"].sensor.ego_from_sensor.allclose(
        base.sensors["LIDAR_TOP"].ego_from_sensor
    )
    from avfusion.io import open_log

    assert open_log(SAMPLE, calibration=path).sensors["CAM_FRONT"].ego_from_sensor.allclose(moved)
    with pytest.raises(CalibrationError, match="names sensors the log does not have: CAM_BACK"):
        NuScenesLog(SAMPLE, calibration={"CAM_BACK": moved})
    with pytest.raises(CalibrationError, match="must be a Transform"):
        NuScenesLog(SAMPLE, calibration={"CAM_FRONT": 3})
    with pytest.raises(CalibrationError, match="no such calibration file"):
        read_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format_version": 1, "sensors": {"CAM_FRONT": {}}}')
    with pytest.raises(CalibrationError, match="sensor 'CAM_FRONT': bad calibration record"):
        read_calibration(tmp_path / "bad.json")


def test_alignment_errors(truth: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="max_frames must be >= 1"):
        AlignmentSettings(max_frames=0)
    with pytest.raises(ConfigError, match="sweeps_per_image must be >= 1"):
        AlignmentSettings(sweeps_per_image=0)
    with pytest.raises(ConfigError, match="tau_px must be in"):
        AlignmentSettings(tau_px=40.0)
    with pytest.raises(ConfigError, match=r"RefineSettings\.max_std_translation_m must be"):
        RefineSettings(max_std_translation_m=0.0)
    with pytest.raises(ConfigError, match=r"RefineSettings\.min_frames must be an integer"):
        RefineSettings(min_frames=0)
    log = NuScenesLog(SAMPLE)
    data = prepare_alignment(log, "THERMAL_FRONT", frames=[10, 11])
    assert data.n_frames == 2 and data.tokens == tuple(
        log.sample_data_tokens("THERMAL_FRONT")[10:12]
    )
    with pytest.raises(CalibrationError, match="window must be an integer >= 1"):
        frame_check(data, window=0)
    with pytest.raises(CalibrationError, match="tau_px must be in"):
        alignment_costs(data, np.zeros((1, 6)), 0.0)
    with pytest.raises(CalibrationError, match=r"frame index 999 outside 0\.\.58"):
        prepare_alignment(log, "THERMAL_FRONT", frames=[999])
    with pytest.raises(CalibrationError, match="unknown sensor 'CAM_BACK'"):
        prepare_alignment(log, "CAM_BACK")
    with pytest.raises(CalibrationError, match="'RADAR_FRONT' is a radar sensor"):
        prepare_alignment(log, "RADAR_FRONT")
    with pytest.raises(CalibrationError, match="reference 'RADAR_FRONT' is a radar sensor"):
        prepare_alignment(log, "CAM_FRONT", "RADAR_FRONT")


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyframe(realdata: Path) -> dict[str, AlignmentData]:
    log = NuScenesLog(realdata / "nuscenes-keyframe")
    s = AlignmentSettings(reject_moving=False)  # one sweep: no neighbours to compare with
    out = {}
    for name, sensor in sorted(log.sensors.items()):
        if sensor.modality == "camera":
            out[name] = prepare_alignment(log, name, settings=s, frames=[0])
    return out


def total_cost(data: dict[str, AlignmentData], deltas: np.ndarray, tau_px: float) -> np.ndarray:
    num = sum(alignment_costs(d, deltas, tau_px).sum(axis=1) for d in data.values())
    return np.asarray(num) / sum(d.n_points for d in data.values())


@pytest.mark.realdata
def test_nuscenes_keyframe_given_calibration_beats_random_one_degree_perturbations(
    keyframe: dict[str, AlignmentData],
) -> None:
    """Six cameras of the real keyframe, one cost summed over them; 500 random perturbations
    with each rotation axis uniform in ±1° (camera frame). Measured: 98.2 %. At ±0.5° about
    single axes this score separates pitch (1.018 / 1.054) and yaw (1.099 / 1.146) but not roll
    (1.000 / 1.004), like the score of tests/fusion/test_projection.py."""
    assert len(keyframe) == 6 and all(d.n_points >= 40 for d in keyframe.values())
    rng = np.random.default_rng(0)
    rot = np.radians(rng.uniform(-1.0, 1.0, size=(500, 3)))
    deltas = np.r_[np.zeros((1, 6)), np.c_[rot, np.zeros_like(rot)]]
    cost = total_cost(keyframe, deltas, 10.0)
    beaten = float(np.mean(cost[1:] > cost[0]))
    print(f"\ngiven calibration scores better than {100 * beaten:.1f} % of ±1° perturbations")
    assert beaten >= 0.95
