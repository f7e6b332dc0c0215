"""Reference implementations of peers' maths, written from their documented behaviour.

The benchmarks time these against avfusion on the same input, and the tests use them as the
outside reference that avfusion must match. Nothing here is imported by the library.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
from pyquaternion import Quaternion


def _transform_matrix(
    translation: list[float], rotation: Quaternion, inverse: bool = False
) -> np.ndarray:
    """nuscenes-devkit geometry_utils.transform_matrix."""
    tm = np.eye(4)
    if inverse:
        rot_inv = rotation.rotation_matrix.T
        tm[:3, :3] = rot_inv
        tm[:3, 3] = rot_inv.dot(-np.array(translation))
    else:
        tm[:3, :3] = rotation.rotation_matrix
        tm[:3, 3] = np.array(translation)
    return tm


def devkit_multisweep(
    root: Path,
    tables: dict[str, list[dict[str, Any]]],
    sample_token: str,
    chan: str,
    ref_chan: str,
    nsweeps: int,
    min_distance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """LidarPointCloud.from_file_multisweep, written from the devkit's documented maths."""
    get = {name: {r["token"]: r for r in rows} for name, rows in tables.items()}
    data = {
        get["calibrated_sensor"][sd["calibrated_sensor_token"]]["sensor_token"]: sd
        for sd in tables["sample_data"]
        if sd["sample_token"] == sample_token and sd["is_key_frame"]
    }
    data = {get["sensor"][k]["channel"]: v for k, v in data.items()}
    points = np.zeros((4, 0), dtype=np.float32)
    all_times = np.zeros((1, 0))
    ref_sd = data[ref_chan]
    ref_pose = get["ego_pose"][ref_sd["ego_pose_token"]]
    ref_cs = get["calibrated_sensor"][ref_sd["calibrated_sensor_token"]]
    ref_time = 1e-6 * ref_sd["timestamp"]
    ref_from_car = _transform_matrix(
        ref_cs["translation"], Quaternion(ref_cs["rotation"]), inverse=True
    )
    car_from_global = _transform_matrix(
        ref_pose["translation"], Quaternion(ref_pose["rotation"]), inverse=True
    )
    current = data[chan]
    for _ in range(nsweeps):
        pc = np.fromfile(root / current["filename"], dtype=np.float32).reshape(-1, 5)[:, :4].T
        not_close = ~((np.abs(pc[0]) < min_distance) & (np.abs(pc[1]) < min_distance))
        pc = pc[:, not_close]
        pose = get["ego_pose"][current["ego_pose_token"]]
        global_from_car = _transform_matrix(pose["translation"], Quaternion(pose["rotation"]))
        cs = get["calibrated_sensor"][current["calibrated_sensor_token"]]
        car_from_current = _transform_matrix(cs["translation"], Quaternion(cs["rotation"]))
        trans = reduce(np.dot, [ref_from_car, car_from_global, global_from_car, car_from_current])
        pc[:3, :] = trans.dot(np.vstack((pc[:3, :], np.ones(pc.shape[1]))))[:3, :]
        all_times = np.hstack(
            (all_times, (ref_time - 1e-6 * current["timestamp"]) * np.ones((1, pc.shape[1])))
        )
        points = np.hstack((points, pc))
        if current["prev"] == "":
            break
        current = get["sample_data"][current["prev"]]
    return points, all_times
