"""Geometry primitives: camera projection, pose interpolation, box corners."""

from __future__ import annotations

from typing import Any

import numpy as np

from avfusion import Boxes3D, CameraModel, Trajectory, Transform
from benchmarks.harness import Case

K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
DIST = np.array([-0.28, 0.09, 0.0012, -0.0008, -0.013])


def _projection_setup(scale: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = max(1000, int(1_000_000 * scale))
    z = rng.uniform(1.0, 80.0, n)
    pts = np.c_[rng.uniform(-0.6, 0.6, (n, 2)) * z[:, None], z]
    return {"points": pts, "camera": CameraModel.radtan(K, DIST, 1600, 900)}


def _projection_ours(d: dict[str, Any]) -> np.ndarray:
    uv, _, _ = d["camera"].project(d["points"])
    return uv


def _projection_peer(d: dict[str, Any]) -> np.ndarray:
    import cv2

    uv, _ = cv2.projectPoints(d["points"], np.zeros(3), np.zeros(3), K, DIST)
    return uv.reshape(-1, 2)


def _close(atol: float) -> Any:
    def check(a: np.ndarray, b: np.ndarray) -> None:
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)

    return check


def _slerp_setup(scale: float) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    n_poses = 2000
    t = np.cumsum(rng.integers(9_000_000, 11_000_000, n_poses)).astype(np.int64)
    yaw = np.cumsum(rng.normal(0, 0.01, n_poses))
    tfs = [
        Transform.from_euler_zyx(y, 0.01 * np.sin(y), 0.0, (float(i), 0.0, 0.0))
        for i, y in enumerate(yaw)
    ]
    traj = Trajectory.from_transforms(t, tfs)
    q = rng.integers(int(t[0]), int(t[-1]), max(1000, int(200_000 * scale))).astype(np.int64)
    return {"traj": traj, "query": q}


def _slerp_ours(d: dict[str, Any]) -> np.ndarray:
    rot, _ = d["traj"].interpolate_many(d["query"])
    return rot


def _slerp_peer(d: dict[str, Any]) -> np.ndarray:
    from scipy.spatial.transform import Rotation, Slerp

    traj = d["traj"]
    q = traj.quaternions
    slerp = Slerp(traj.t_ns.astype(np.float64), Rotation.from_quat(q[:, [1, 2, 3, 0]]))
    return slerp(d["query"].astype(np.float64)).as_matrix()


def _corners_setup(scale: float) -> Boxes3D:
    rng = np.random.default_rng(2)
    n = max(100, int(20_000 * scale))
    yaw = rng.uniform(-np.pi, np.pi, n)
    q = np.c_[np.cos(yaw / 2), np.zeros(n), np.zeros(n), np.sin(yaw / 2)]
    return Boxes3D(
        rng.normal(0, 30, (n, 3)),
        rng.uniform(0.5, 5, (n, 3)),
        q,
        np.full(n, "car"),
        np.arange(n).astype(str),
        "ego",
    )


def _corners_ours(b: Boxes3D) -> np.ndarray:
    return b.corners()


def _corners_peer(b: Boxes3D) -> np.ndarray:
    """The nuscenes-devkit's Box.corners(): one pyquaternion rotation per box, (w, l, h) order."""
    from pyquaternion import Quaternion

    out = np.empty((len(b), 8, 3))
    for i in range(len(b)):
        width, length, h = b.size[i, 1], b.size[i, 0], b.size[i, 2]
        x = length / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1])
        y = width / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
        z = h / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
        corners = np.vstack((x, y, z))
        corners = Quaternion(b.rotation[i]).rotation_matrix @ corners + b.center[i][:, None]
        out[i] = corners.T
    return out


CASES = [
    Case(
        "camera projection, radtan, 1M points",
        "cv2.projectPoints",
        _projection_setup,
        _projection_ours,
        _projection_peer,
        _close(1e-6),
    ),
    Case(
        "pose interpolation, 200k times",
        "scipy Slerp",
        _slerp_setup,
        _slerp_ours,
        _slerp_peer,
        _close(1e-9),
    ),
    Case(
        "box corners, 20k boxes",
        "devkit Box.corners loop",
        _corners_setup,
        _corners_ours,
        _corners_peer,
        _close(1e-9),
        repeats=3,
    ),
]
