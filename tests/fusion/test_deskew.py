"""LiDAR deskew: the numba kernel against a numpy reference, its error paths, and the truth test
on the synthetic world (deskewed points land on the true surfaces, to the range noise)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from avfusion import AVFusionError, PointCloud, Sensor, SyncError, Trajectory, Transform
from avfusion.fusion.deskew import CAPTURE_TIME_ATTR, POINT_TIME_ATTR, deskew, deskew_cloud

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
REPO = Path(__file__).resolve().parents[2]


def random_track(rng: np.random.Generator, n: int = 40) -> Trajectory:
    """A wild track (random rotations, 5-20 ms apart) so that slerp is really exercised."""
    t = T0 + np.cumsum(rng.integers(5 * MS, 20 * MS, n)).astype(np.int64)
    q = rng.normal(size=(n, 4))
    tr = rng.normal(size=(n, 3)) * 5.0 + np.array([1200.0, -800.0, 30.0])
    return Trajectory(t, q, tr, "random track")


def reference_deskew(
    pts: npt.NDArray[Any],
    times: npt.NDArray[Any],
    t_ref: int,
    poses: Trajectory,
    ego_from_sensor: Transform,
    offset: int,
    t_target: int,
    tolerance_ns: int = 0,
) -> npt.NDArray[np.float64]:
    """Plain numpy: sensor_from_ego · ego_from_world(t_target) · world_from_ego(t_i) · ego_from_sensor."""
    rot, tr = poses.interpolate_many(t_ref + offset + times.astype(np.int64), tolerance_ns)
    p_ego = pts.astype(np.float64) @ ego_from_sensor.rotation.T + ego_from_sensor.translation
    p_world = np.einsum("nij,nj->ni", rot, p_ego) + tr
    world_from_target = poses.at(t_target + offset, tolerance_ns) @ ego_from_sensor
    return np.asarray(world_from_target.inverse().apply(p_world))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matches_numpy_reference(dtype: type) -> None:
    rng = np.random.default_rng(1)
    poses = random_track(rng)
    ego_from_sensor = Transform.from_rotvec(
        np.array([0.01, -0.02, -1.5]), np.array([0.9, 0.0, 1.8])
    )
    n = 5000
    pts = (rng.normal(size=(n, 3)) * 20.0).astype(dtype)
    t_ref = int(poses.t_ns[20])
    times = rng.integers(-25 * MS, 25 * MS, n).astype(np.int32)
    times[:3] = [0, -25 * MS, 25 * MS - 1]
    offset, t_target = 3 * MS, t_ref + 7 * MS
    pts_before = pts.copy()
    out = deskew(pts, times, t_ref, poses, ego_from_sensor, offset, t_target_ns=t_target)
    ref = reference_deskew(pts, times, t_ref, poses, ego_from_sensor, offset, t_target)
    assert out.dtype == dtype and out.shape == pts.shape
    tol = 1e-9 if dtype == np.float64 else 2e-5 * float(np.abs(ref).max())
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)
    np.testing.assert_array_equal(pts, pts_before)  # inputs untouched
    # Times beyond the track: refused, unless within the tolerance (end segment extrapolated).
    late = times.copy()
    late[5] = int(poses.end_ns - t_ref - offset + 4 * MS)
    with pytest.raises(
        SyncError,
        match=r"LIDAR_TOP x: point capture times reach .* outside the pose track 'random track'",
    ):
        deskew(pts, late, t_ref, poses, ego_from_sensor, offset, what="LIDAR_TOP x")
    out = deskew(pts, late, t_ref, poses, ego_from_sensor, offset, tolerance_ns=5 * MS)
    ref = reference_deskew(pts, late, t_ref, poses, ego_from_sensor, offset, t_ref, 5 * MS)
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)


def test_kernel_matches_reference_on_samples_and_beyond_both_ends() -> None:
    rng = np.random.default_rng(5)
    poses = random_track(rng, 400)
    sensor = Transform.from_rotvec(np.array([0.2, 0.1, -1.0]), np.array([0.5, 0.2, 1.5]))
    pts = rng.normal(size=(64, 3)) * 30.0
    tol = 30 * MS
    cases = {
        "on samples": (int(poses.t_ns[100]), poses.t_ns[95:105] - poses.t_ns[100]),
        "one instant": (int(poses.t_ns[7]), np.zeros(64, np.int64)),
        "before start": (poses.start_ns - 5 * MS, rng.integers(-20 * MS, 20 * MS, 64)),
        "after end": (poses.end_ns + 5 * MS, rng.integers(-20 * MS, 20 * MS, 64)),
        "all before": (poses.start_ns - 25 * MS, rng.integers(-2 * MS, 2 * MS, 64)),
    }
    for name, (t_ref, times) in cases.items():
        times = np.resize(np.asarray(times, np.int64), 64)
        out = deskew(pts, times, t_ref, poses, sensor, tolerance_ns=tol)
        ref = reference_deskew(pts, times, t_ref, poses, sensor, 0, t_ref, tol)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9, err_msg=name)


def test_static_and_single_sample_tracks() -> None:
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(100, 3)) * 10.0
    times = rng.integers(-25 * MS, 25 * MS, 100)
    one = Trajectory(np.array([T0]), np.array([[0.9, 0.1, 0.0, 0.4]]), np.array([[10.0, 2.0, 0.0]]))
    sensor = Transform.from_euler_zyx(0.3, 0.0, 0.0, (1.0, 0.0, 2.0))
    # One pose: the ego does not move, so nothing changes (needs a tolerance to reach ±25 ms).
    np.testing.assert_allclose(
        deskew(pts, times, T0, one, sensor, tolerance_ns=30 * MS), pts, atol=1e-12
    )
    # Pure translation at constant velocity: a point fired dt earlier moves by −v·dt... in ego x.
    t = T0 + 10 * MS * np.arange(-10, 11)
    tr = np.stack([10.0 * (t - T0) / 1e9, np.zeros(21), np.zeros(21)], axis=1)
    straight = Trajectory(t, np.tile([1.0, 0, 0, 0], (21, 1)), tr)
    out = deskew(pts, times, T0, straight, Transform())
    np.testing.assert_allclose(out[:, 0] - pts[:, 0], 10.0 * times / 1e9, atol=1e-12)
    np.testing.assert_allclose(out[:, 1:], pts[:, 1:], atol=1e-12)
    empty = deskew(np.zeros((0, 3), np.float32), np.zeros(0, np.int32), T0, straight, Transform())
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    nan = deskew(
        np.array([[np.nan, 0.0, 0.0], [1.0, 2.0, 3.0]]),
        np.zeros(2, np.int64),
        T0,
        straight,
        Transform(),
    )
    assert np.isnan(nan[0]).all() and np.isfinite(nan[1]).all()


def test_bad_input_is_named() -> None:
    track = Trajectory(
        np.array([T0, T0 + 100 * MS]), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3))
    )
    pts = np.zeros((4, 3))
    t4 = np.zeros(4, np.int64)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (
            {"points_sensor": np.zeros((4, 2))},
            AVFusionError,
            r"sweep A: points must be an \(N, 3\) array",
        ),
        (
            {"points_sensor": np.zeros((4, 3), np.int32)},
            AVFusionError,
            "float32 or float64, got int32",
        ),
        (
            {"point_time_ns": np.zeros(3, np.int64)},
            SyncError,
            r"shape \(4,\) like the points, got \(3,\)",
        ),
        ({"point_time_ns": np.zeros(4)}, SyncError, "point_time_ns must be integer nanoseconds"),
        ({"t_ref_ns": 1.5}, SyncError, "t_ref_ns: time must be integer nanoseconds"),
        ({"tolerance_ns": -1}, SyncError, "tolerance_ns must be >= 0"),
        ({"poses": Transform()}, AVFusionError, "poses must be a Trajectory"),
        ({"ego_from_sensor": np.eye(4)}, AVFusionError, "ego_from_sensor must be a Transform"),
        (
            {"t_ref_ns": T0 - MS},
            SyncError,
            r"sweep A: point capture times reach 1699999999999000000 ns",
        ),
        ({"t_target_ns": T0 + 200 * MS}, SyncError, r"sweep A: pose at the target time: .*outside"),
    ]
    for override, exc, message in cases:
        args: dict[str, Any] = {
            "points_sensor": pts,
            "point_time_ns": t4,
            "t_ref_ns": T0 + 50 * MS,
            "poses": track,
            "ego_from_sensor": Transform(),
            "tolerance_ns": 0,
            "what": "sweep A",
        }
        args.update(override)
        with pytest.raises(exc, match=message):
            deskew(**args)


def test_deskew_cloud_uses_the_attribute_sensor_and_clock() -> None:
    rng = np.random.default_rng(3)
    poses = random_track(rng)
    sensor = Sensor(
        "LIDAR_TOP",
        "lidar",
        Transform.from_euler_zyx(-1.57, 0.0, 0.0, (0.9, 0.0, 1.8)),
        time_offset_ns=2 * MS,
    )
    t_ref = int(poses.t_ns[10])
    xyz = (rng.normal(size=(300, 3)) * 15.0).astype(np.float32)
    times = rng.integers(-25 * MS, 25 * MS, 300).astype(np.int32)
    cloud = PointCloud(
        xyz,
        sensor,
        t_ref,
        {POINT_TIME_ATTR: times, "intensity": np.ones(300, np.float32)},
        token="tok1",
    )
    out = deskew_cloud(cloud, poses)
    expected = deskew(xyz, times, t_ref, poses, sensor.ego_from_sensor, 2 * MS)
    np.testing.assert_array_equal(out.xyz, expected)
    assert (
        out.t_ns == t_ref
        and out.token == "tok1"
        and out.attrs["intensity"] is cloud.attrs["intensity"]
    )
    assert out.world_from_ego is not None and out.world_from_ego.allclose(poses.at(t_ref + 2 * MS))
    assert POINT_TIME_ATTR not in out.attrs  # cannot be deskewed twice by mistake
    np.testing.assert_array_equal(out.attrs[CAPTURE_TIME_ATTR], times)
    later = deskew_cloud(cloud, poses, t_target_ns=t_ref + 10 * MS)
    assert later.t_ns == t_ref + 10 * MS
    np.testing.assert_array_equal(later.attrs[CAPTURE_TIME_ATTR], times.astype(np.int64) - 10 * MS)
    # The same world points, seen from the sensor 10 ms later.
    world_from_out = out.world_from_ego @ sensor.ego_from_sensor  # type: ignore[operator]
    world_from_later = later.world_from_ego @ sensor.ego_from_sensor  # type: ignore[operator]
    np.testing.assert_allclose(
        world_from_later.apply(later.xyz.astype(np.float64)),
        world_from_out.apply(out.xyz.astype(np.float64)),
        atol=1e-4,  # float32 points
    )
    with pytest.raises(SyncError, match="no per-point time attribute 'point_time_ns'"):
        deskew_cloud(out, poses)
    bare = PointCloud(xyz, sensor, t_ref, {"intensity": np.ones(300, np.float32)}, token="tok1")
    with pytest.raises(
        SyncError,
        match=r"deskew of 'LIDAR_TOP' sample_data tok1: the cloud has no per-point time attribute 'point_time_ns' \(attributes: intensity\)",
    ):
        deskew_cloud(bare, poses)


# --------------------------------------------------------------------------------------------
# Truth: the synthetic world knows where every surface is
# --------------------------------------------------------------------------------------------


def test_deskew_recovers_the_simulated_hit_points() -> None:
    """A simulated sweep knows each point's noise-free world hit: after deskew the only error left
    is the range noise along the beam, point for point."""
    from avfusion.synth.lidar import simulate_lidar
    from avfusion.synth.rig import LidarSpec, default_rig
    from avfusion.synth.world import build_world

    world = build_world(1.0, 3)
    lidar = default_rig()["LIDAR_TOP"]
    t = world.t0_ns + 500 * MS
    sweep = simulate_lidar(world, lidar, LidarSpec(), t, np.random.default_rng(1))
    world_from_sensor = world.world_from_ego.at(t) @ lidar.ego_from_sensor

    def error_m(points: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        p = np.asarray(world_from_sensor.apply(points.astype(np.float64)))
        return np.linalg.norm(p - sweep.world_truth, axis=1)

    before = error_m(sweep.xyz)
    after = error_m(
        deskew(sweep.xyz, sweep.time_offset_ns, t, world.world_from_ego, lidar.ego_from_sensor)
    )
    noise = np.abs(sweep.range_noise_m)
    # Measured: before mean 12.4 cm / max 31 cm; after = |range noise| (mean 1.60 cm) to 4 µm.
    assert before.mean() > 0.08 and before.max() > 0.2
    assert np.abs(after - noise).max() < 1e-4
    assert after.mean() == pytest.approx(noise.mean(), abs=1e-5)


@pytest.fixture(scope="module")
def sample_log() -> Path:
    from avfusion.synth import ensure_sample_data

    return ensure_sample_data(REPO / "sample_data")


def point_to_surface_m(
    points_sensor: npt.NDArray[Any],
    point_time_ns: npt.NDArray[Any],
    t_true_ns: int,
    truth: Trajectory,
    ego_from_lidar_true: Transform,
    world: Any,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Distance of each point (sensor frame at the sweep's true time) to the true surface.

    The surface is sampled where the sensor looked when it fired: a ray from the true sensor
    origin at the point's capture time, through the point, cast against the world at that time
    (moving objects where they were then). The distance is to the surface's tangent plane at the
    hit: |(p − hit) · n|. Returns (distance, |cos incidence|, hit mask).
    """
    from avfusion.synth.raycast import cast_rays

    t_i = t_true_ns + point_time_ns.astype(np.int64)
    rot, tr = truth.interpolate_many(t_i)
    origin = np.einsum("nij,j->ni", rot, ego_from_lidar_true.translation) + tr
    world_from_lidar = truth.at(t_true_ns) @ ego_from_lidar_true
    p = np.asarray(world_from_lidar.apply(points_sensor.astype(np.float64)))
    ray = p - origin
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    prims = world.primitive_arrays(t_true_ns)
    t_hit, _, normal = cast_rays(
        origin, ray, prims, world.params, times_s=(t_i - t_true_ns) / 1e9, max_range_m=120.0
    )
    hit = np.isfinite(t_hit)
    safe = np.where(hit, t_hit, 0.0)
    dist = np.abs(np.sum((p - (origin + ray * safe[:, None])) * normal, axis=1))
    return dist, np.abs(np.sum(ray * normal, axis=1)), hit


def test_deskew_brings_a_logged_sweep_onto_the_true_surfaces(sample_log: Path) -> None:
    """End to end on sample_data: the written sweep, its ``.time.bin``, the log's own pose track
    and calibration; judged against the truth (world geometry, 200 Hz pose, exact extrinsic)."""
    from avfusion.io import NuScenesLog
    from avfusion.synth.rig import LidarSpec
    from avfusion.synth.world import build_world

    log = NuScenesLog(sample_log)
    truth_dir = sample_log / "truth"
    scene = json.loads((truth_dir / "scene.json").read_text())
    world = build_world(scene["seconds"], scene["seed"], scene["t0_ns"])
    track = np.load(truth_dir / "ego_trajectory.npz")
    truth = Trajectory(track["t_ns"], track["quaternions"], track["translations"], "truth")
    true_times = json.loads((truth_dir / "sample_data_times.json").read_text())
    cal = json.loads((truth_dir / "calibration.json").read_text())["sensors"]["LIDAR_TOP"]
    ego_from_lidar = Transform.from_quaternion(
        np.array(cal["ego_from_sensor"]["rotation"]),
        np.array(cal["ego_from_sensor"]["translation"]),
    )
    sigma = LidarSpec().range_noise_m
    results = {}
    for k in (0, len(log) // 2):
        token = log.keyframe_data(k)["LIDAR_TOP"]
        cloud = log.load_points(token)
        path = log.blob_path(log.get("sample_data", token)["filename"], token)
        times = np.fromfile(f"{path}.time.bin", dtype="<i4")
        # the reader exposes the per-point times that avfusion_sensor.json declares
        np.testing.assert_array_equal(cloud.attrs[POINT_TIME_ATTR], times)
        deskewed = deskew_cloud(cloud, log.poses)
        t_true = int(true_times[token]["t_true_ns"])
        d0, _, hit0 = point_to_surface_m(cloud.xyz, times, t_true, truth, ego_from_lidar, world)
        d1, cos1, hit1 = point_to_surface_m(
            deskewed.xyz, times, t_true, truth, ego_from_lidar, world
        )
        both = hit0 & hit1
        assert both.mean() > 0.995  # a few raw points float in the sky: no surface behind them
        # The noise level of this measure: range noise N(0, σ) along the beam, seen through the
        # incidence angle: E|noise · cos| = σ·√(2/π)·mean|cos|.
        noise_level = sigma * np.sqrt(2 / np.pi) * float(cos1[both].mean())
        results[k] = (float(d0[both].mean()), float(d1[both].mean()), noise_level)
        before, after, _ = results[k]
        # Measured (keyframes 0 and 6): before 6.7 / 15.2 cm, after 7.9 / 9.5 mm, noise level
        # 7.9 / 9.2 mm.
        assert before > 4 * noise_level, results
        assert after == pytest.approx(noise_level, rel=0.1), results
        assert float(np.percentile(d1[both], 99.5)) < 4 * sigma, results


def test_reader_names_missing_or_short_per_point_times(sample_log: Path, tmp_path: Path) -> None:
    from avfusion.errors import LogFormatError
    from avfusion.io import NuScenesLog

    log = NuScenesLog(sample_log)
    lidar = log.sensors["LIDAR_TOP"]
    fake = tmp_path / "sweep.pcd.bin"
    with pytest.raises(
        LogFormatError, match=r"sweep\.pcd\.bin\.time\.bin: per-point times .* missing"
    ):
        log._point_times(fake, lidar, 10, "tok")
    np.zeros(9, "<i4").tofile(f"{fake}.time.bin")
    with pytest.raises(LogFormatError, match=r"9 per-point times for 10 points of sample_data tok"):
        log._point_times(fake, lidar, 10, "tok")
