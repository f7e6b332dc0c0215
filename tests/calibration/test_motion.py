"""Motion-compensated transforms: known answers on hand-built tracks, and the real nuScenes
keyframe, whose mmdet3d ``lidar2cam`` matrices include the ego motion between LiDAR and camera."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avfusion import CameraModel, Image, PointCloud, Sensor, SyncError, Trajectory, Transform
from avfusion.calibration.motion import (
    ego_pose_at_stamp,
    observation_target_from_source,
    static_target_from_source,
    target_from_source,
)

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
K = np.array([[1000.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]])
#: Camera axes (x right, y down, z forward) in a forward-looking ego frame.
EGO_FROM_CAM_ROT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

LIDAR = Sensor(
    "LIDAR_TOP", "lidar", Transform.from_euler_zyx(-np.pi / 2, 0.0, 0.0, (0.9, 0.0, 1.8))
)
CAM = Sensor(
    "CAM_FRONT",
    "camera",
    Transform(EGO_FROM_CAM_ROT, np.array([1.7, 0.0, 1.5])),
    CameraModel(K, 1600, 900),
    time_offset_ns=4 * MS,
)


def straight_track(speed_mps: float = 10.0) -> Trajectory:
    """Ego along world +x at constant speed, no rotation, sampled every 10 ms over 1 s."""
    t = T0 + 10 * MS * np.arange(101, dtype=np.int64)
    x = speed_mps * (t - T0) / 1e9
    tr = np.stack([x + 100.0, np.full_like(x, 50.0), np.zeros_like(x)], axis=1)
    return Trajectory(t, np.tile([1.0, 0.0, 0.0, 0.0], (t.size, 1)), tr, "straight")


def turning_track(yaw_rate: float = 0.5) -> Trajectory:
    """Ego turning on the spot at a constant yaw rate (rad/s), sampled every 20 ms over 1 s."""
    t = T0 + 20 * MS * np.arange(51, dtype=np.int64)
    yaw = yaw_rate * (t - T0) / 1e9
    tfs = [Transform.from_euler_zyx(float(a), 0.0, 0.0, (5.0, -3.0, 0.2)) for a in yaw]
    return Trajectory.from_transforms(t, tfs, "turning")


def test_straight_motion_known_answer_with_clock_offset() -> None:
    poses = straight_track(10.0)
    t_lidar, t_cam_stamp = T0 + 500 * MS, T0 + 461 * MS  # camera ego time 465 ms: 35 ms earlier
    cam_from_lidar = target_from_source(poses, CAM, t_cam_stamp, LIDAR, t_lidar)
    # ego_from_world(t_cam) · world_from_ego(t_lidar) moves forward by v·(t_lidar − t_cam_ego).
    shift = Transform(np.eye(3), np.array([10.0 * 0.035, 0.0, 0.0]))
    expected = CAM.ego_from_sensor.inverse() @ shift @ LIDAR.ego_from_sensor
    assert cam_from_lidar.allclose(expected, atol=1e-9)
    static = static_target_from_source(CAM, LIDAR)
    assert np.linalg.norm(static.translation - cam_from_lidar.translation) == pytest.approx(0.35)
    # A point 10 m ahead of the camera, seen by the LiDAR 35 ms later, is 0.35 m closer then.
    p_cam = np.array([0.0, 0.0, 10.0])
    p_lidar = cam_from_lidar.inverse().apply(p_cam)
    assert static.apply(p_lidar)[2] == pytest.approx(10.0 - 0.35)
    # Same instant in the ego clock: the static chain.
    same = target_from_source(poses, CAM, t_lidar - CAM.time_offset_ns, LIDAR, t_lidar)
    assert same.allclose(static, atol=1e-12)


def test_turning_motion_known_answer() -> None:
    poses = turning_track(0.5)
    t_a, t_b = T0 + 130 * MS, T0 + 770 * MS  # between samples: slerp of a constant-rate turn
    a_from_b = target_from_source(poses, LIDAR, t_a, LIDAR, t_b)
    rel = Transform.from_euler_zyx(0.5 * 0.64, 0.0, 0.0)  # ego_from_world(t_a)·world_from_ego(t_b)
    expected = LIDAR.ego_from_sensor.inverse() @ rel @ LIDAR.ego_from_sensor
    assert a_from_b.allclose(expected, atol=1e-12)
    assert np.degrees(a_from_b.rotation_angle_to(Transform())) == pytest.approx(np.degrees(0.32))


def test_vectorised_poses_match_single_lookups_and_refuse_alike() -> None:
    poses = turning_track(0.5)
    t = T0 + np.array([0, 7 * MS, 333 * MS, 999 * MS, 1000 * MS], np.int64)
    rot, tr = poses.interpolate_many(t)
    for i, ti in enumerate(t):
        single = poses.at(int(ti))
        assert np.allclose(rot[i], single.rotation, atol=1e-14)
        assert np.allclose(tr[i], single.translation, atol=1e-14)
    with pytest.raises(
        SyncError,
        match=rf"turning: time {T0 + 1001 * MS} ns is outside the trajectory's range "
        rf"\[{T0}, {T0 + 1000 * MS}\] ns by more than the tolerance of 0 ns",
    ):
        poses.interpolate_many(np.array([T0, T0 + 1001 * MS]))


def test_refusal_names_sensor_stamp_and_distance() -> None:
    poses = straight_track()
    end = poses.end_ns
    with pytest.raises(
        SyncError,
        match=rf"pose of 'CAM_FRONT' at stamp {end + 6 * MS} ns \(ego clock {end + 10 * MS} ns, "
        r"offset 4000000 ns\) is 10\.000 ms after the end of the pose track 'straight' .* "
        r"tolerance 5\.000 ms",
    ):
        target_from_source(poses, CAM, end + 6 * MS, LIDAR, end, tolerance_ns=5 * MS)
    with pytest.raises(SyncError, match=r"'LIDAR_TOP' .* 2\.500 ms before the start"):
        ego_pose_at_stamp(poses, LIDAR, T0 - 2_500_000)
    # Within the tolerance the end segment is extrapolated at its rate.
    pose = ego_pose_at_stamp(poses, CAM, end + 1 * MS, tolerance_ns=5 * MS)
    assert pose.translation[0] == pytest.approx(100.0 + 10.0 * 1.005)
    with pytest.raises(SyncError, match="integer nanoseconds"):
        ego_pose_at_stamp(poses, CAM, float(T0))  # type: ignore[arg-type]
    with pytest.raises(SyncError, match="tolerance_ns must be >= 0"):
        ego_pose_at_stamp(poses, CAM, T0, tolerance_ns=-1)


def test_observations_use_stored_poses_else_the_track() -> None:
    poses = straight_track(10.0)
    t_lidar, t_cam = T0 + 500 * MS, T0 + 461 * MS
    xyz = np.zeros((1, 3), np.float32)
    pixels = np.zeros((900, 1600, 3), np.uint8)
    cloud = PointCloud(xyz, LIDAR, t_lidar, token="lidar-tok")
    image = Image(CAM, t_cam, pixels_or_none=pixels, token="cam-tok")
    from_track = observation_target_from_source(image, cloud, poses)
    assert from_track.allclose(target_from_source(poses, CAM, t_cam, LIDAR, t_lidar), atol=1e-12)
    # Stored poses win over the track (here: both at the same place, so the static chain).
    here = poses.at(t_lidar)
    stored_cloud = PointCloud(xyz, LIDAR, t_lidar, world_from_ego=here)
    stored_image = Image(CAM, t_cam, here, pixels_or_none=pixels)
    same = observation_target_from_source(stored_image, stored_cloud, poses)
    assert same.allclose(static_target_from_source(CAM, LIDAR), atol=1e-12)
    with pytest.raises(
        SyncError,
        match=r"target observation of 'CAM_FRONT' at t=\d+ \(token cam-tok\) carries no world_from_ego",
    ):
        observation_target_from_source(image, stored_cloud)


# --------------------------------------------------------------------------------------------
# Real data: the nuScenes keyframe and mmdet3d's motion-compensated lidar2cam
# --------------------------------------------------------------------------------------------

INFO = "open-mmlab__mmdetection3d/demo/data/nuscenes/n015-2018-07-24-11-22-45+0800.derived.json"


def _keyframe(realdata: Path) -> tuple[object, dict[str, np.ndarray]]:
    from avfusion.io import NuScenesLog

    log = NuScenesLog(realdata / "nuscenes-keyframe")
    info = json.loads((realdata / INFO).read_text())["data_list"][0]
    l2c = {cam: np.array(v["lidar2cam"], dtype=np.float64) for cam, v in info["images"].items()}
    return log, l2c


@pytest.mark.realdata
def test_compensated_cam_from_lidar_reproduces_mmdet3d_lidar2cam(realdata: Path) -> None:
    log, l2c = _keyframe(realdata)
    frame = log[0]  # type: ignore[index]
    lidar = frame.points["LIDAR_TOP"]
    poses = log.poses  # type: ignore[attr-defined]
    assert len(l2c) == 6
    for cam, mat in l2c.items():
        image = frame.images[cam]
        dt_s = (image.t_ns - lidar.t_ns) / 1e9
        comp = observation_target_from_source(image, lidar)
        via_track = target_from_source(poses, image.sensor, image.t_ns, lidar.sensor, lidar.t_ns)
        static = static_target_from_source(image.sensor, lidar.sensor)
        ref = Transform(mat[:3, :3], mat[:3, 3])
        # The keyframe's camera ego poses were solved from lidar2cam (its README), so this checks
        # the composition (order, directions, clocks) to float32 precision of the info file.
        assert np.abs(comp.translation - ref.translation).max() < 1e-6, cam
        # (rotation matrices compared entry-wise: the float32 info matrices are orthonormal only to
        # ~1e-8, which arccos of the trace would blow up to ~2e-4 rad)
        assert np.abs(comp.rotation - ref.rotation).max() < 1e-6, cam
        assert via_track.allclose(comp, atol=1e-9), cam
        # The static chain misses by the ego motion: |Δt| × 9.2 m/s (MANIFEST §A).
        miss = float(np.linalg.norm(static.translation - ref.translation))
        assert miss == pytest.approx(abs(dt_s) * 9.25, abs=0.004), cam


@pytest.mark.realdata
def test_interpolated_pose_predicts_lidar2cam_leave_one_out(realdata: Path) -> None:
    """An independent check: drop a camera's own pose and interpolate it from the other six."""
    log, l2c = _keyframe(realdata)
    frame = log[0]  # type: ignore[index]
    lidar = frame.points["LIDAR_TOP"]
    poses = log.poses  # type: ignore[attr-defined]
    errors_m = {}
    for cam, mat in l2c.items():
        image = frame.images[cam]
        keep = poses.t_ns != image.t_ns
        others = Trajectory(poses.t_ns[keep], poses.quaternions[keep], poses.translations[keep])
        comp = target_from_source(
            others, image.sensor, image.t_ns, lidar.sensor, lidar.t_ns, tolerance_ns=10 * MS
        )
        errors_m[cam] = float(np.linalg.norm(comp.translation - mat[:3, 3]))
        assert np.abs(comp.rotation - mat[:3, :3]).max() < 1e-4, cam  # static: up to 1.2e-3
    assert max(errors_m.values()) < 5e-4, errors_m  # measured 0.07-0.16 mm


@pytest.mark.realdata
def test_motion_compensation_moves_projected_lidar_points_by_pixels(realdata: Path) -> None:
    log, _ = _keyframe(realdata)
    frame = log[0]  # type: ignore[index]
    lidar = frame.points["LIDAR_TOP"]
    xyz = lidar.xyz.astype(np.float64)
    shifts = {}
    for cam, image in frame.images.items():
        comp = observation_target_from_source(image, lidar)
        static = static_target_from_source(image.sensor, lidar.sensor)
        uv_c, _, ok_c = image.camera.project(comp.apply(xyz), 1.0)
        uv_s, _, ok_s = image.camera.project(static.apply(xyz), 1.0)
        both = ok_c & ok_s
        d = np.linalg.norm(uv_c[both] - uv_s[both], axis=1)
        shifts[cam] = (int(both.sum()), float(d.mean()), float(d.max()))
    # Measured (points, mean px, max px): FRONT 2876 / 14.9 / 60.7, FRONT_RIGHT 2988 / 24.1 / 82.1,
    # FRONT_LEFT 3509 / 43.0 / 136.2, BACK 4825 / 4.7 / 26.1, BACK_LEFT 4094 / 0.72 / 1.6,
    # BACK_RIGHT 3351 / 18.5 / 55.8.
    assert all(n > 2500 for n, _, _ in shifts.values()), shifts
    assert shifts["CAM_FRONT_LEFT"][1] > 30 and shifts["CAM_FRONT_LEFT"][2] > 100
    assert shifts["CAM_FRONT"][1] > 10 and shifts["CAM_BACK_LEFT"][1] < 1.5
    order = sorted(shifts, key=lambda c: shifts[c][1])
    assert order[0] == "CAM_BACK_LEFT" and order[-1] == "CAM_FRONT_LEFT"  # follows |Δt|
