"""Transform, Trajectory and TransformTree: algebra, conversions, interpolation and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyquaternion import Quaternion
from scipy.spatial.transform import Rotation, Slerp

from avfusion import CalibrationError, SyncError, Trajectory, Transform, TransformTree
from avfusion.calibration.transforms import quaternion_from_matrix

finite = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False)
unit_q = st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 0.1
)


@st.composite
def transforms(draw: st.DrawFn) -> Transform:
    q = np.array(draw(unit_q))
    t = np.array([draw(finite), draw(finite), draw(finite)])
    return Transform.from_quaternion(q, t)


# -- algebra -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(transforms(), transforms(), transforms())
def test_compose_is_associative_and_matches_matrices(
    a: Transform, b: Transform, c: Transform
) -> None:
    ab_c = (a @ b) @ c
    a_bc = a @ (b @ c)
    assert ab_c.allclose(a_bc, atol=1e-9)
    np.testing.assert_allclose((a @ b).as_matrix(), a.as_matrix() @ b.as_matrix(), atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(transforms(), st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=20))
def test_inverse_round_trip(a: Transform, pts: list[tuple[float, float, float]]) -> None:
    p = np.array(pts)
    assert (a @ a.inverse()).allclose(Transform.identity(), atol=1e-9)
    assert (a.inverse() @ a).allclose(Transform.identity(), atol=1e-9)
    np.testing.assert_allclose(a.inverse().apply(a.apply(p)), p, atol=1e-9)
    np.testing.assert_allclose(a.apply(p), p @ a.rotation.T + a.translation, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(unit_q, st.tuples(finite, finite, finite))
def test_quaternion_round_trip_and_pyquaternion_agreement(
    q: list[float], t: tuple[float, float, float]
) -> None:
    qn = np.array(q) / np.linalg.norm(q)
    tf = Transform.from_quaternion(qn, t)
    back = tf.quaternion
    # q and -q are the same rotation; we return w >= 0.
    assert back[0] >= 0
    assert min(np.abs(back - qn).max(), np.abs(back + qn).max()) < 1e-9
    pq = Quaternion(*qn)
    np.testing.assert_allclose(tf.rotation, pq.rotation_matrix, atol=1e-12)
    assert Transform.from_pyquaternion(pq, t).allclose(tf, atol=1e-12)
    assert Quaternion.absolute_distance(tf.to_pyquaternion(), pq) < 1e-9
    np.testing.assert_allclose(
        tf.apply(np.array([1.0, 2.0, 3.0])), pq.rotate([1.0, 2.0, 3.0]) + np.array(t), atol=1e-9
    )


def test_quaternion_from_matrix_near_180_degrees() -> None:
    for axis in np.eye(3):
        r = Rotation.from_rotvec(axis * np.pi).as_matrix()
        q = quaternion_from_matrix(r)
        np.testing.assert_allclose(Transform.from_quaternion(q).rotation, r, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(transforms(), transforms(), st.floats(0.0, 1.0))
def test_interpolation_agrees_with_scipy_slerp(a: Transform, b: Transform, alpha: float) -> None:
    mid = a.interpolate(b, alpha)
    rots = Rotation.from_matrix(np.stack([a.rotation, b.rotation]))
    ref = Slerp([0.0, 1.0], rots)([alpha]).as_matrix()[0]
    np.testing.assert_allclose(mid.rotation, ref, atol=1e-8)
    np.testing.assert_allclose(
        mid.translation, (1 - alpha) * a.translation + alpha * b.translation, atol=1e-9
    )
    assert a.interpolate(b, 0.0).allclose(a, atol=1e-9)
    assert a.interpolate(b, 1.0).allclose(b, atol=1e-9)


def test_interpolation_midpoint_of_known_yaw() -> None:
    a = Transform.from_euler_zyx(0.0, 0.0, 0.0, (0.0, 0.0, 0.0))
    b = Transform.from_euler_zyx(np.pi / 2, 0.0, 0.0, (2.0, 4.0, 0.0))
    mid = a.interpolate(b, 0.5)
    assert mid.yaw == pytest.approx(np.pi / 4, abs=1e-12)
    np.testing.assert_allclose(mid.translation, [1.0, 2.0, 0.0])


def test_apply_keeps_dtype_and_input() -> None:
    tf = Transform.from_euler_zyx(0.3, 0.1, -0.2, (400.0, 1200.0, 3.0))
    p32 = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    keep = p32.copy()
    out = tf.apply(p32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(p32, keep)
    ref = p32.astype(np.float64) @ tf.rotation.T + tf.translation
    np.testing.assert_allclose(out, ref.astype(np.float32), rtol=0, atol=1e-4)
    assert tf.apply(p32.astype(np.float64)).dtype == np.float64
    nan = np.array([[np.nan, 0.0, 0.0]])
    assert np.isnan(tf.apply(nan)[0, 0])


def test_matrix_round_trip_and_rotvec() -> None:
    tf = Transform.from_rotvec([0.1, -0.2, 0.3], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(
        Transform.from_matrix(tf.as_matrix()).as_matrix(), tf.as_matrix(), atol=1e-12
    )
    np.testing.assert_allclose(tf.as_rotvec(), [0.1, -0.2, 0.3], atol=1e-12)
    np.testing.assert_allclose(
        tf.rotation, Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix(), atol=1e-12
    )
    noisy = tf.as_matrix().astype(np.float32).astype(np.float64)
    assert Transform.nearest_rigid(noisy).allclose(tf, atol=1e-6)


def test_transform_is_frozen() -> None:
    tf = Transform.identity()
    with pytest.raises(ValueError, match="read-only"):
        tf.translation[0] = 1.0
    with pytest.raises(AttributeError):
        tf.rotation = np.eye(3)  # type: ignore[misc]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rotation", "translation", "message"),
    [
        (np.eye(3) * 1.01, np.zeros(3), "not orthonormal"),
        (np.diag([1.0, 1.0, -1.0]), np.zeros(3), "reflection"),
        (np.array([[1.0, 0.1, 0], [0, 1, 0], [0, 0, 1]]), np.zeros(3), "not orthonormal"),
        (np.full((3, 3), np.nan), np.zeros(3), "non-finite"),
        (np.eye(3), np.array([0.0, np.inf, 0.0]), "non-finite"),
        (np.eye(2), np.zeros(3), "must be 3x3"),
        (np.eye(3), np.zeros(4), "3 values"),
    ],
)
def test_transform_rejects_bad_values(
    rotation: np.ndarray, translation: np.ndarray, message: str
) -> None:
    with pytest.raises(CalibrationError, match=message):
        Transform(rotation, translation)


def test_constructor_errors() -> None:
    with pytest.raises(CalibrationError, match="zero norm"):
        Transform.from_quaternion([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(CalibrationError, match="4 components"):
        Transform.from_quaternion([1.0, 0.0, 0.0])
    with pytest.raises(CalibrationError, match="last row"):
        Transform.from_matrix(np.ones((4, 4)))
    with pytest.raises(CalibrationError, match="4x4"):
        Transform.from_matrix(np.eye(3))
    with pytest.raises(CalibrationError, match="not close to a rotation"):
        Transform.nearest_rigid(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(CalibrationError, match=r"shape \(N, 3\)"):
        Transform().apply(np.zeros((4, 2)))
    with pytest.raises(CalibrationError, match="float32 or float64"):
        Transform().apply(np.zeros((4, 3), dtype=np.int32))
    with pytest.raises(CalibrationError, match="alpha must be finite"):
        Transform().interpolate(Transform(), float("nan"))


# -- trajectories ------------------------------------------------------------------------------


def _yaw_track() -> Trajectory:
    t = np.array([0, 1_000_000_000, 2_000_000_000], dtype=np.int64)
    tfs = [Transform.from_euler_zyx(0.1 * i, 0.0, 0.0, (10.0 * i, 0.0, 0.0)) for i in range(3)]
    return Trajectory.from_transforms(t, tfs, name="world_from_ego")


def test_trajectory_interpolates_and_extrapolates_within_tolerance() -> None:
    traj = _yaw_track()
    mid = traj.at(500_000_000)
    assert mid.yaw == pytest.approx(0.05, abs=1e-12)
    np.testing.assert_allclose(mid.translation, [5.0, 0.0, 0.0])
    assert traj.at(2_000_000_000).allclose(traj[2], atol=1e-12)
    ahead = traj.at(2_100_000_000, tolerance_ns=200_000_000)
    assert ahead.yaw == pytest.approx(0.21, abs=1e-12)
    np.testing.assert_allclose(ahead.translation, [21.0, 0.0, 0.0], atol=1e-9)
    rot, tr = traj.interpolate_many(np.array([0, 1_500_000_000], dtype=np.int64))
    np.testing.assert_allclose(tr[1], [15.0, 0.0, 0.0])
    assert rot.shape == (2, 3, 3)


def test_trajectory_errors() -> None:
    traj = _yaw_track()
    with pytest.raises(SyncError, match=r"outside the trajectory's range .* tolerance of 0 ns"):
        traj.at(2_000_000_001)
    with pytest.raises(SyncError, match="integer nanoseconds"):
        traj.at(1.5)  # type: ignore[arg-type]
    with pytest.raises(SyncError, match="increase strictly"):
        Trajectory(np.array([0, 5, 5]), np.tile([1.0, 0, 0, 0], (3, 1)), np.zeros((3, 3)), "gnss")
    with pytest.raises(SyncError, match="integer nanoseconds"):
        Trajectory(np.array([0.0, 1.0]), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3)))
    with pytest.raises(SyncError, match="translations of shape"):
        Trajectory(np.array([0, 1]), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((3, 3)))


def test_trajectory_takes_short_arc_across_sign_flip() -> None:
    q0 = Transform.from_euler_zyx(np.pi - 0.05, 0, 0).quaternion
    q1 = -Transform.from_euler_zyx(-np.pi + 0.05, 0, 0).quaternion
    traj = Trajectory(np.array([0, 10]), np.stack([q0, q1]), np.zeros((2, 3)))
    assert abs(abs(traj.at(5).yaw) - np.pi) < 1e-9


# -- tree --------------------------------------------------------------------------------------


def _tree() -> tuple[TransformTree, Transform, Transform, Trajectory]:
    tree = TransformTree()
    ego_from_lidar = Transform.from_euler_zyx(np.pi / 2, 0.0, 0.0, (0.9, 0.0, 1.8))
    ego_from_cam = Transform.from_euler_zyx(-np.pi / 2, 0.0, -np.pi / 2, (1.7, 0.0, 1.5))
    traj = _yaw_track()
    tree.add_static("ego", "LIDAR_TOP", ego_from_lidar)
    tree.add_static("ego", "CAM_FRONT", ego_from_cam)
    tree.add_trajectory("world", "ego", traj)
    return tree, ego_from_lidar, ego_from_cam, traj


def test_tree_lookup_composes_along_path() -> None:
    tree, ego_from_lidar, ego_from_cam, traj = _tree()
    cam_from_lidar = tree.lookup("CAM_FRONT", "LIDAR_TOP")
    assert cam_from_lidar.allclose(ego_from_cam.inverse() @ ego_from_lidar, atol=1e-12)
    t = 700_000_000
    world_from_cam = tree.lookup("world", "CAM_FRONT", t)
    assert world_from_cam.allclose(traj.at(t) @ ego_from_cam, atol=1e-12)
    lidar_from_world = tree.lookup("LIDAR_TOP", "world", t)
    assert lidar_from_world.allclose((traj.at(t) @ ego_from_lidar).inverse(), atol=1e-12)
    assert tree.lookup("ego", "ego").allclose(Transform.identity())
    assert tree.path("CAM_FRONT", "LIDAR_TOP") == ["LIDAR_TOP", "ego", "CAM_FRONT"]


def test_tree_errors() -> None:
    tree, *_ = _tree()
    with pytest.raises(
        CalibrationError,
        match=r"unknown frame 'RADAR_FRONT' \(known frames: CAM_FRONT, LIDAR_TOP, ego, world\)",
    ):
        tree.lookup("RADAR_FRONT", "ego")
    tree.add_static("map", "odom", Transform())
    with pytest.raises(CalibrationError, match="'odom' and 'ego' are not connected"):
        tree.lookup("ego", "odom")
    with pytest.raises(SyncError, match=r"'world' -> 'ego'.*outside the trajectory's range"):
        tree.lookup("world", "LIDAR_TOP", 5_000_000_000)
    assert tree.lookup("world", "LIDAR_TOP", 2_500_000_000, tolerance_ns=600_000_000) is not None
    with pytest.raises(SyncError, match="changes over time; lookup needs t_ns"):
        tree.lookup("world", "ego")
    with pytest.raises(CalibrationError, match="already has parent 'ego'"):
        tree.add_static("world", "LIDAR_TOP", Transform())
    with pytest.raises(CalibrationError, match="would close a loop"):
        tree.add_static("LIDAR_TOP", "world", Transform())
    with pytest.raises(CalibrationError, match="itself"):
        tree.add_static("x", "x", Transform())
