"""LiDAR deskew: every point moved to the sweep time through its own interpolated pose.

Peer: the usual Python route (as in many ROS/numpy deskew scripts): SciPy ``Slerp`` and
``np.interp`` evaluate world_from_ego at every point's time, then numpy rotates each point
into the world and back into the sensor frame at the sweep time. Input: the middle keyframe
sweep of ``sample_data`` (about 22k points, per-point times from the log) tiled to ~350k points
(ten sweeps' worth), with the log's own pose track and extrinsic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case

REPO = Path(__file__).resolve().parents[1]


def _setup(scale: float) -> dict[str, Any]:
    from avfusion.io import NuScenesLog
    from avfusion.synth import ensure_sample_data

    log = NuScenesLog(ensure_sample_data(REPO / "sample_data"))
    cloud = log.frame(len(log) // 2, with_boxes=False).points["LIDAR_TOP"]
    reps = max(1, round(16 * scale))
    return {
        "xyz": np.ascontiguousarray(np.tile(cloud.xyz, (reps, 1))),
        "times": np.tile(cloud.attrs["point_time_ns"], reps),
        "t_ns": cloud.t_ns,
        "poses": log.poses,
        "ego_from_sensor": cloud.sensor.ego_from_sensor,
    }


def _ours(d: dict[str, Any]) -> np.ndarray:
    from avfusion.fusion.deskew import deskew

    return deskew(d["xyz"], d["times"], d["t_ns"], d["poses"], d["ego_from_sensor"])


def _peer(d: dict[str, Any]) -> np.ndarray:
    from scipy.spatial.transform import Rotation, Slerp

    poses = d["poses"]
    t_pose = (poses.t_ns - poses.t_ns[0]).astype(np.float64)
    q_xyzw = np.roll(poses.quaternions, -1, axis=1)
    slerp = Slerp(t_pose, Rotation.from_quat(q_xyzw))
    t_pts = (d["t_ns"] + d["times"].astype(np.int64) - poses.t_ns[0]).astype(np.float64)
    rot = slerp(t_pts)
    trans = np.stack([np.interp(t_pts, t_pose, poses.translations[:, k]) for k in range(3)], 1)
    e = d["ego_from_sensor"]
    p_ego = d["xyz"].astype(np.float64) @ e.rotation.T + e.translation
    p_world = rot.apply(p_ego) + trans
    t_ref = float(d["t_ns"] - poses.t_ns[0])
    r_ref = slerp([t_ref])[0]
    tr_ref = np.array([np.interp(t_ref, t_pose, poses.translations[:, k]) for k in range(3)])
    p_ego_ref = r_ref.inv().apply(p_world - tr_ref)
    return ((p_ego_ref - e.translation) @ e.rotation).astype(np.float32)


def _check(ours: np.ndarray, peer: np.ndarray) -> None:
    np.testing.assert_allclose(ours, peer, rtol=0, atol=1e-4)


CASES = [
    Case(
        "LiDAR deskew, ~350k points with per-point times",
        "scipy Slerp + numpy per point",
        _setup,
        _ours,
        _peer,
        _check,
    ),
]
