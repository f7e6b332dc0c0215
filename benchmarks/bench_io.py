"""Readers: multi-sweep LiDAR aggregation on the synthetic sample log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case
from benchmarks.peers import devkit_multisweep

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


def _multisweep_setup(scale: float) -> dict[str, Any]:
    from avfusion.io.nuscenes import NuScenesLog
    from avfusion.synth import ensure_sample_data

    root = ensure_sample_data(SAMPLE_DATA)
    log = NuScenesLog(root)
    tables_dir = next(root.glob("v1.0-*"))
    tables = {
        p.stem: json.loads(p.read_text())
        for p in tables_dir.glob("*.json")
        if not p.stem.startswith("avfusion")
    }
    n_keyframes = max(1, round(len(log) * min(scale * 100, 1.0)))
    samples = log.sample_tokens[len(log) - n_keyframes :]
    return {"root": root, "log": log, "tables": tables, "samples": samples}


def _multisweep_ours(d: dict[str, Any]) -> list[np.ndarray]:
    return [d["log"].aggregate_sweeps(s, n_sweeps=10).xyz for s in d["samples"]]


def _multisweep_peer(d: dict[str, Any]) -> list[np.ndarray]:
    out = []
    for s in d["samples"]:
        pts, _ = devkit_multisweep(d["root"], d["tables"], s, "LIDAR_TOP", "LIDAR_TOP", 10, 1.0)
        out.append(pts[:3].T)
    return out


def _same_clouds(ours: list[np.ndarray], peer: list[np.ndarray]) -> None:
    for a, b in zip(ours, peer, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


CASES = [
    Case(
        "multisweep aggregation, 10 sweeps per keyframe",
        "devkit from_file_multisweep maths",
        _multisweep_setup,
        _multisweep_ours,
        _multisweep_peer,
        _same_clouds,
        repeats=3,
    ),
]
