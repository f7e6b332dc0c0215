"""A small nuScenes-style root written with json in a tmp dir: random sweeps, poses and labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avfusion.io.nuscenes import NUSCENES_TABLES
from avfusion.io.pcd import write_pcd

VERSION = "v1.0-test"


def _q_yaw(yaw: float, roll: float = 0.0) -> list[float]:
    # rotation about z then a small roll about x: q = qz * qx
    cz, sz, cx, sx = np.cos(yaw / 2), np.sin(yaw / 2), np.cos(roll / 2), np.sin(roll / 2)
    return [cz * cx, cz * sx, sz * sx, sz * cx]


def build_root(root: Path, *, n_lidar: int = 13, seed: int = 0) -> dict[str, Any]:
    """Two scenes; scene A has keyframes every 6 LiDAR sweeps. Returns the written tables."""
    rng = np.random.default_rng(seed)
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in NUSCENES_TABLES}
    tables["log"].append(
        {
            "token": "log0",
            "logfile": "synthetic",
            "vehicle": "v",
            "date_captured": "2024-01-01",
            "location": "here",
        }
    )
    tables["map"].append(
        {
            "token": "map0",
            "category": "semantic_prior",
            "filename": "maps/none.png",
            "log_tokens": ["log0"],
        }
    )
    tables["visibility"] = [
        {"token": str(i), "level": lvl, "description": ""}
        for i, lvl in enumerate(["v0-40", "v40-60", "v60-80", "v80-100"], 1)
    ]
    tables["category"] = [
        {"token": "cat_car", "name": "vehicle.car", "description": "", "index": 17}
    ]
    tables["attribute"] = [{"token": "att_moving", "name": "vehicle.moving", "description": ""}]
    channels = {
        "LIDAR_TOP": ("lidar", [0.9, 0.0, 1.8], _q_yaw(-np.pi / 2, 0.01), []),
        "CAM_FRONT": (
            "camera",
            [1.7, 0.0, 1.5],
            [0.5, -0.5, 0.5, -0.5],
            [[1000.0, 0, 320.0], [0, 1000.0, 240.0], [0, 0, 1]],
        ),
        "CAM_THERMAL": (
            "camera",
            [1.6, 0.1, 1.5],
            [0.5, -0.5, 0.5, -0.5],
            [[500.0, 0, 80.0], [0, 500.0, 60.0], [0, 0, 1]],
        ),
        "RADAR_FRONT": ("radar", [3.4, 0.0, 0.5], _q_yaw(0.02), []),
    }
    for ch, (mod, t, q, k) in channels.items():
        tables["sensor"].append({"token": f"sen_{ch}", "channel": ch, "modality": mod})
        tables["calibrated_sensor"].append(
            {
                "token": f"cs_{ch}",
                "sensor_token": f"sen_{ch}",
                "translation": t,
                "rotation": q,
                "camera_intrinsic": k,
            }
        )

    t0 = 1_600_000_000_000_000  # µs
    lidar_dt = 50_000
    keyframe_idx = [0, 6, 12]
    samples = [f"s{i}" for i in range(len(keyframe_idx))]
    for i, (tok, li) in enumerate(zip(samples, keyframe_idx, strict=True)):
        tables["sample"].append(
            {
                "token": tok,
                "timestamp": t0 + li * lidar_dt,
                "scene_token": "scA",
                "prev": samples[i - 1] if i else "",
                "next": samples[i + 1] if i + 1 < len(samples) else "",
            }
        )
    tables["sample"].append(
        {"token": "sB", "timestamp": t0 + 10**7, "scene_token": "scB", "prev": "", "next": ""}
    )
    tables["scene"] = [
        {
            "token": "scA",
            "name": "scene-A",
            "log_token": "log0",
            "nbr_samples": 3,
            "first_sample_token": "s0",
            "last_sample_token": "s2",
            "description": "",
        },
        {
            "token": "scB",
            "name": "scene-B",
            "log_token": "log0",
            "nbr_samples": 1,
            "first_sample_token": "sB",
            "last_sample_token": "sB",
            "description": "",
        },
    ]

    def pose(t_us: int) -> tuple[list[float], list[float]]:
        s = (t_us - t0) * 1e-6
        yaw = 0.3 + 0.2 * s
        return [1000.0 + 8.0 * s, 2000.0 + 3.0 * s + 0.5 * s * s, 0.1 * s], _q_yaw(yaw, 0.002 * s)

    def add_sd(
        token: str,
        ch: str,
        t_us: int,
        sample: str,
        key: bool,
        filename: str,
        fmt: str,
        wh: tuple[int, int],
        prev: str,
        nxt: str,
    ) -> None:
        tr, rot = pose(t_us)
        tables["ego_pose"].append(
            {"token": f"ep_{token}", "timestamp": t_us, "translation": tr, "rotation": rot}
        )
        tables["sample_data"].append(
            {
                "token": token,
                "sample_token": sample,
                "ego_pose_token": f"ep_{token}",
                "calibrated_sensor_token": f"cs_{ch}",
                "timestamp": t_us,
                "fileformat": fmt,
                "is_key_frame": key,
                "width": wh[0],
                "height": wh[1],
                "filename": filename,
                "prev": prev,
                "next": nxt,
            }
        )

    points: dict[str, np.ndarray] = {}
    lidar_tokens = [f"lid{i}" for i in range(n_lidar)]
    for i, tok in enumerate(lidar_tokens):
        t = t0 + i * lidar_dt
        key = i in keyframe_idx
        sample = samples[min(range(len(keyframe_idx)), key=lambda j: abs(keyframe_idx[j] - i))]
        folder = "samples" if key else "sweeps"
        fn = f"{folder}/LIDAR_TOP/lidar_{t}.pcd.bin"
        n = int(rng.integers(200, 400))
        pts = np.empty((n, 5), np.float32)
        pts[:, :3] = rng.uniform(-60, 60, (n, 3)) * [1, 1, 0.1]
        pts[:20, :2] = rng.uniform(-1.2, 1.2, (20, 2))  # some close points to remove
        pts[:, 3] = rng.uniform(0, 100, n)
        pts[:, 4] = rng.integers(0, 32, n)
        (root / fn).parent.mkdir(parents=True, exist_ok=True)
        pts.tofile(root / fn)
        points[tok] = pts
        add_sd(
            tok,
            "LIDAR_TOP",
            t,
            sample,
            key,
            fn,
            "pcd",
            (0, 0),
            lidar_tokens[i - 1] if i else "",
            lidar_tokens[i + 1] if i + 1 < n_lidar else "",
        )
    # cameras, thermal and radar at each keyframe
    for j, (sample, li) in enumerate(zip(samples, keyframe_idx, strict=True)):
        t = t0 + li * lidar_dt
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        img[:, :, 0] = 200  # B channel in OpenCV order → R=?; checked as RGB in tests
        img[:, :, 2] = 10
        fn = f"samples/CAM_FRONT/cam_{t}.jpg"
        (root / fn).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / fn), img)
        add_sd(f"cam{j}", "CAM_FRONT", t - 20_000, sample, True, fn, "jpg", (64, 48), "", "")
        th = (rng.integers(20000, 30000, (12, 16))).astype(np.uint16)
        fn = f"samples/CAM_THERMAL/th_{t}.png"
        (root / fn).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / fn), th)
        add_sd(f"th{j}", "CAM_THERMAL", t - 10_000, sample, True, fn, "png", (16, 12), "", "")
        fn = f"samples/RADAR_FRONT/radar_{t}.pcd"
        (root / fn).parent.mkdir(parents=True, exist_ok=True)
        nr = 30
        cols = {a: rng.normal(0, 20, nr).astype(np.float32) for a in "xyz"}
        cols |= {
            "dyn_prop": rng.integers(0, 8, nr).astype(np.int8),
            "invalid_state": rng.integers(0, 3, nr).astype(np.int8),
            "ambig_state": rng.integers(2, 5, nr).astype(np.int8),
        }
        write_pcd(root / fn, cols, encoding="binary_compressed")
        add_sd(f"rad{j}", "RADAR_FRONT", t + 5_000, sample, True, fn, "pcd", (0, 0), "", "")
    # scene B: one keyframe with a LiDAR only
    fn = "samples/LIDAR_TOP/lidar_B.pcd.bin"
    np.zeros((7, 5), np.float32).tofile(root / fn)
    add_sd("lidB", "LIDAR_TOP", t0 + 10**7, "sB", True, fn, "pcd", (0, 0), "", "")

    # one car annotated in the three keyframes (moving), one static car only in s1
    tables["instance"] = [
        {
            "token": "inst0",
            "category_token": "cat_car",
            "nbr_annotations": 3,
            "first_annotation_token": "a0",
            "last_annotation_token": "a2",
        },
        {
            "token": "inst1",
            "category_token": "cat_car",
            "nbr_annotations": 1,
            "first_annotation_token": "b1",
            "last_annotation_token": "b1",
        },
    ]
    for j, sample in enumerate(samples):
        s = keyframe_idx[j] * lidar_dt * 1e-6
        tables["sample_annotation"].append(
            {
                "token": f"a{j}",
                "sample_token": sample,
                "instance_token": "inst0",
                "visibility_token": "4",
                "attribute_tokens": ["att_moving"],
                "translation": [1010.0 + 10.0 * s, 2005.0 - 2.0 * s * s, 0.9],
                "size": [1.9, 4.5, 1.6],
                "rotation": _q_yaw(0.4),
                "prev": f"a{j - 1}" if j else "",
                "next": f"a{j + 1}" if j + 1 < len(samples) else "",
                "num_lidar_pts": 10 + j,
                "num_radar_pts": j,
            }
        )
    tables["sample_annotation"].append(
        {
            "token": "b1",
            "sample_token": "s1",
            "instance_token": "inst1",
            "visibility_token": "",
            "attribute_tokens": [],
            "translation": [1020.0, 2010.0, 1.0],
            "size": [2.0, 5.0, 1.7],
            "rotation": _q_yaw(1.0),
            "prev": "",
            "next": "",
            "num_lidar_pts": 0,
            "num_radar_pts": 0,
        }
    )

    table_dir = root / VERSION
    table_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (table_dir / f"{name}.json").write_text(json.dumps(rows))
    # extensions
    ext = [
        {
            "calibrated_sensor_token": "cs_CAM_THERMAL",
            "channel": "CAM_THERMAL",
            "modality": "thermal",
            "distortion_model": "radtan",
            "distortion_coeffs": [-0.1, 0.01, 0.0, 0.0, 0.0],
            "width": 16,
            "height": 12,
            "time_offset_ns": 1500,
            "counts_to_kelvin": {"gain": 0.01, "offset": 0.0},
        }
    ]
    (table_dir / "avfusion_sensor.json").write_text(json.dumps(ext))
    box2d = [
        {
            "token": "bb0",
            "sample_data_token": "cam1",
            "sample_annotation_token": "a1",
            "instance_token": "inst0",
            "category_name": "vehicle.car",
            "bbox": [10, 5, 30, 25],
        }
    ]
    (table_dir / "avfusion_box2d.json").write_text(json.dumps(box2d))
    labels = rng.integers(0, 32, len(points["lid6"])).astype(np.uint8)
    (root / "lidarseg" / VERSION).mkdir(parents=True)
    labels.tofile(root / "lidarseg" / VERSION / "lid6_lidarseg.bin")
    (table_dir / "lidarseg.json").write_text(
        json.dumps(
            [
                {
                    "token": "lid6",
                    "sample_data_token": "lid6",
                    "filename": f"lidarseg/{VERSION}/lid6_lidarseg.bin",
                }
            ]
        )
    )
    return {"tables": tables, "points": points, "lidarseg": labels, "keyframe_idx": keyframe_idx}
