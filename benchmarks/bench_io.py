"""Readers: nuScenes table loading (100k sample_data rows) and multi-sweep LiDAR aggregation."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case
from benchmarks.memory import MemoryCase
from benchmarks.peers import DevkitNuScenes, devkit_multisweep

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
BENCH_VERSION = "v1.0-bench"

# --------------------------------------------------------------------------------------------
# Synthetic nuScenes tables in the proportions of v1.0-trainval
# --------------------------------------------------------------------------------------------

#: channel, modality, rate (Hz): nuScenes' rig (one LiDAR, 6 cameras, 5 radars)
_RIG = (
    ("LIDAR_TOP", "lidar", 20),
    *((f"CAM_{p}", "camera", 12) for p in ("FRONT", "FRONT_RIGHT", "BACK_RIGHT", "BACK", "BACK_LEFT", "FRONT_LEFT")),
    *((f"RADAR_{p}", "radar", 13) for p in ("FRONT", "FRONT_LEFT", "FRONT_RIGHT", "BACK_LEFT", "BACK_RIGHT")),
)  # fmt: skip
_SCENE_S = 20
_SAMPLES_PER_SCENE = 40  # keyframes at 2 Hz
_INSTANCES_PER_SCENE = 76  # v1.0-trainval: 64386 instances / 850 scenes
_ANNS_PER_INSTANCE = 18  # → ~1370 annotations per scene, as in v1.0-trainval
_SD_PER_SCENE = sum(rate * _SCENE_S for _, _, rate in _RIG)  # 3140
_CATEGORIES = ("vehicle.car", "human.pedestrian.adult", "vehicle.truck", "movable_object.barrier")
_ATTRIBUTES = ("vehicle.moving", "vehicle.parked", "pedestrian.moving")
_CENTRE = np.array([400.0, 1100.0, 1.0])  # boxes around the ego path
_K = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]


def _tok(*key: object) -> str:
    return hashlib.md5(repr(key).encode()).hexdigest()


def write_bench_tables(
    root: Path, n_sample_data: int = 100_000, *, seed: int = 0, blobs: bool = False
) -> dict[str, Any]:
    """Write a nuScenes v1.0 table folder ``root/v1.0-bench`` with about ``n_sample_data``
    sample_data rows (whole 20 s scenes of the nuScenes rig), one ego_pose per sample_data
    row, 40 samples and ~1370 annotations per scene, as the devkit's JSON (``indent=0``).

    ``blobs=True`` also writes the map image and the keyframe files of the middle sample
    (LiDAR ``.pcd.bin`` and 1600×900 camera JPEGs), enough for ``devkit-check``.
    Returns ``{"root", "version", "sample_token" (the middle sample), "counts"}``.
    """
    rng = np.random.default_rng(seed)
    n_scenes = max(1, round(n_sample_data / _SD_PER_SCENE))
    t: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ch, modality, _ in _RIG:
        t["sensor"].append({"token": _tok("sensor", ch), "channel": ch, "modality": modality})
    for i, name in enumerate(_CATEGORIES):
        t["category"].append({"token": _tok("category", name), "name": name, "description": "", "index": i})  # fmt: skip
    for name in _ATTRIBUTES:
        t["attribute"].append({"token": _tok("attribute", name), "name": name, "description": ""})
    for i, level in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), 1):
        t["visibility"].append({"description": "", "token": str(i), "level": level})
    log_token = _tok("log")
    t["log"].append({"token": log_token, "logfile": "bench", "vehicle": "n015", "date_captured": "2018-07-24", "location": "singapore-onenorth"})  # fmt: skip
    t["map"].append({"category": "semantic_prior", "token": _tok("map"), "filename": "maps/bench.png", "log_tokens": [log_token]})  # fmt: skip
    t0 = 1_532_402_927_647_951  # µs
    for s in range(n_scenes):
        scene_t0 = t0 + s * 30_000_000
        scene_token = _tok("scene", s)
        samples = [_tok("sample", s, i) for i in range(_SAMPLES_PER_SCENE)]
        sample_t = [scene_t0 + i * 500_000 for i in range(_SAMPLES_PER_SCENE)]
        t["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(samples), "first_sample_token": samples[0], "last_sample_token": samples[-1], "name": f"scene-{s:04d}", "description": "synthetic"})  # fmt: skip
        for i, tok in enumerate(samples):
            t["sample"].append({"token": tok, "timestamp": sample_t[i], "prev": samples[i - 1] if i else "", "next": samples[i + 1] if i + 1 < len(samples) else "", "scene_token": scene_token})  # fmt: skip
        yaw0 = rng.uniform(-np.pi, np.pi)
        for ch, modality, rate in _RIG:
            cs_token = _tok("calibrated_sensor", s, ch)
            t["calibrated_sensor"].append({"token": cs_token, "sensor_token": _tok("sensor", ch), "translation": rng.normal(0, 1, 3).round(6).tolist(), "rotation": [0.5, -0.5, 0.5, -0.5] if modality == "camera" else [0.7071068, 0.0, 0.0, -0.7071068], "camera_intrinsic": _K if modality == "camera" else []})  # fmt: skip
            n = rate * _SCENE_S
            step = n // _SAMPLES_PER_SCENE
            ext = {"lidar": "pcd.bin", "radar": "pcd", "camera": "jpg"}[modality]
            tokens = [_tok("sample_data", s, ch, j) for j in range(n)]
            for j, tok in enumerate(tokens):
                ts = scene_t0 + j * 1_000_000 // rate + int(rng.integers(0, 2000))
                key = j % step == 0 and j // step < _SAMPLES_PER_SCENE
                sample = samples[min(j // step, _SAMPLES_PER_SCENE - 1)]
                folder = "samples" if key else "sweeps"
                yaw = yaw0 + 0.01 * j / rate
                t["ego_pose"].append({"token": tok, "timestamp": ts, "rotation": [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))], "translation": [float(400 + 5 * (ts - scene_t0) * 1e-6), float(1100 + rng.normal()), 0.0]})  # fmt: skip
                t["sample_data"].append({"token": tok, "sample_token": sample, "ego_pose_token": tok, "calibrated_sensor_token": cs_token, "timestamp": ts, "fileformat": ext.split(".")[0], "is_key_frame": key, "height": 900 if modality == "camera" else 0, "width": 1600 if modality == "camera" else 0, "filename": f"{folder}/{ch}/n015-2018-07-24-11-22-45+0800__{ch}__{ts}.{ext}", "prev": tokens[j - 1] if j else "", "next": tokens[j + 1] if j + 1 < n else ""})  # fmt: skip
        for k in range(_INSTANCES_PER_SCENE):
            inst = _tok("instance", s, k)
            anns = [_tok("sample_annotation", s, k, i) for i in range(_ANNS_PER_INSTANCE)]
            first = int(rng.integers(0, _SAMPLES_PER_SCENE - _ANNS_PER_INSTANCE + 1))
            t["instance"].append({"token": inst, "category_token": _tok("category", _CATEGORIES[k % len(_CATEGORIES)]), "nbr_annotations": len(anns), "first_annotation_token": anns[0], "last_annotation_token": anns[-1]})  # fmt: skip
            for i, ann in enumerate(anns):
                yaw = float(rng.uniform(-np.pi, np.pi))
                t["sample_annotation"].append({"token": ann, "sample_token": samples[first + i], "instance_token": inst, "visibility_token": str(1 + i % 4), "attribute_tokens": [_tok("attribute", _ATTRIBUTES[k % len(_ATTRIBUTES)])], "translation": [float(v) for v in rng.normal(0, 30, 3) + _CENTRE], "size": rng.uniform(0.5, 5, 3).tolist(), "rotation": [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))], "prev": anns[i - 1] if i else "", "next": anns[i + 1] if i + 1 < len(anns) else "", "num_lidar_pts": int(rng.integers(0, 500)), "num_radar_pts": int(rng.integers(0, 5))})  # fmt: skip
    table_dir = Path(root) / BENCH_VERSION
    table_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in t.items():
        (table_dir / f"{name}.json").write_text(json.dumps(rows, indent=0))
    middle = t["sample"][len(t["sample"]) // 2]["token"]
    if blobs:
        _write_blobs(Path(root), t, middle, rng)
    return {
        "root": str(root),
        "version": BENCH_VERSION,
        "sample_token": middle,
        "counts": {name: len(rows) for name, rows in t.items()},
    }


def _write_blobs(
    root: Path, t: dict[str, list[dict[str, Any]]], sample: str, rng: np.random.Generator
) -> None:
    import cv2

    (root / "maps").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "maps" / "bench.png"), np.zeros((8, 8), np.uint8))
    for sd in t["sample_data"]:
        if sd["sample_token"] != sample or not sd["is_key_frame"]:
            continue
        path = root / sd["filename"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if sd["fileformat"] == "pcd" and path.name.endswith(".pcd.bin"):
            pts = np.zeros((4000, 5), np.float32)
            pts[:, :3] = rng.normal(0, 15, (4000, 3)) * [1, 1, 0.1]
            pts[:, 3] = rng.uniform(0, 100, 4000)
            pts.tofile(path)
        elif sd["fileformat"] == "jpg":
            cv2.imwrite(str(path), np.zeros((900, 1600, 3), np.uint8))


_TEMP_DIRS: list[tempfile.TemporaryDirectory[str]] = []
_TABLES: dict[int, dict[str, Any]] = {}


def _tables_setup(scale: float) -> dict[str, Any]:
    """Tables of ``100k × scale`` sample_data rows in a temporary folder (made once per size)."""
    n = max(_SD_PER_SCENE, int(100_000 * scale))
    if n not in _TABLES:
        tmp = tempfile.TemporaryDirectory(prefix="avfusion-bench-tables-")
        _TEMP_DIRS.append(tmp)
        info = write_bench_tables(Path(tmp.name), n)
        _TABLES[n] = {k: info[k] for k in ("root", "version", "sample_token")}
    return _TABLES[n]


def _tables_ours(d: dict[str, Any]) -> dict[str, Any]:
    """Open the log and get what a frame request needs, without reading blobs: per-channel
    streams, the sample's keyframe tokens and their ego poses, its boxes."""
    from avfusion.io.nuscenes import NuScenesLog

    log = NuScenesLog(d["root"], d["version"])
    sample = d["sample_token"]
    data = log.keyframe_data(sample)
    return {
        "streams": {ch: log.timestamps(ch) for ch in sorted(log.sensors)},
        "data": data,
        "poses": {ch: log.ego_pose(tok).translation for ch, tok in data.items()},
        "boxes": log.boxes3d(sample).token.tolist(),
    }


def _tables_peer(d: dict[str, Any]) -> dict[str, Any]:
    """The same with the devkit: ``NuScenes(version, dataroot)``, then its lookups."""
    nusc = DevkitNuScenes(d["version"], d["root"])
    by_channel: dict[str, list[int]] = defaultdict(list)
    for sd in nusc.sample_data:
        by_channel[sd["channel"]].append(sd["timestamp"])
    sample = nusc.get("sample", d["sample_token"])
    data = dict(sample["data"])
    poses = {}
    for ch, tok in data.items():
        pose = nusc.get("ego_pose", nusc.get("sample_data", tok)["ego_pose_token"])
        poses[ch] = np.array(pose["translation"])
    streams = {ch: np.sort(np.array(ts, np.int64)) * 1000 for ch, ts in by_channel.items()}
    return {
        "streams": dict(sorted(streams.items())),
        "data": data,
        "poses": poses,
        "boxes": list(sample["anns"]),
    }


def _same_tables(ours: dict[str, Any], peer: dict[str, Any]) -> None:
    assert list(ours["streams"]) == list(peer["streams"])
    for ch, ts in ours["streams"].items():
        np.testing.assert_array_equal(ts, peer["streams"][ch])
    assert ours["data"] == peer["data"] and ours["boxes"] == peer["boxes"]
    for ch, tr in ours["poses"].items():
        np.testing.assert_array_equal(tr, peer["poses"][ch])


# --------------------------------------------------------------------------------------------
# Multi-sweep aggregation
# --------------------------------------------------------------------------------------------


def _multisweep_setup(scale: float) -> dict[str, Any]:
    from avfusion.io.nuscenes import NuScenesLog
    from avfusion.synth import ensure_sample_data

    root = ensure_sample_data(SAMPLE_DATA)
    log = NuScenesLog(root)
    nusc = DevkitNuScenes(next(root.glob("v1.0-*")).name, root)  # built once, as nusc is
    n_keyframes = max(1, round(len(log) * min(scale * 100, 1.0)))
    samples = log.sample_tokens[len(log) - n_keyframes :]
    return {"root": root, "log": log, "nusc": nusc, "samples": samples}


def _multisweep_ours(d: dict[str, Any]) -> list[np.ndarray]:
    return [d["log"].aggregate_sweeps(s, n_sweeps=10).xyz for s in d["samples"]]


def _multisweep_peer(d: dict[str, Any]) -> list[np.ndarray]:
    out = []
    for s in d["samples"]:
        pts, _ = devkit_multisweep(d["root"], d["nusc"], s, "LIDAR_TOP", "LIDAR_TOP", 10, 1.0)
        out.append(pts[:3].T)
    return out


def _same_clouds(ours: list[np.ndarray], peer: list[np.ndarray]) -> None:
    for a, b in zip(ours, peer, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


CASES = [
    Case(
        "nuScenes tables, 100k sample_data: open + frame lookups",
        "devkit NuScenes() json + reverse index",
        _tables_setup,
        _tables_ours,
        _tables_peer,
        _same_tables,
        repeats=3,
    ),
    Case(
        "multisweep aggregation, 10 sweeps per keyframe",
        "devkit from_file_multisweep maths",
        _multisweep_setup,
        _multisweep_ours,
        _multisweep_peer,
        _same_clouds,
        repeats=5,  # ~40 ms a run; more repeats steady the best-of on a shared machine
    ),
]

MEMORY_CASES = [
    MemoryCase(
        CASES[0].name,
        CASES[0].peer_name,
        _tables_setup,
        _tables_ours,
        _tables_peer,
        imports=("avfusion.io.nuscenes", "benchmarks.peers", "json"),
    ),
]
