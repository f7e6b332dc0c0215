"""Occupancy ground truth for one whole keyframe, on one core.

avfusion: ``occupancy_for_sample`` on ``sample_data``'s middle keyframe with numba limited to one
thread: read the ±10 LiDAR sweeps from disk (21 sweeps, ~460k points), deskew them, repair the
keyframe boxes against their tracks (median size, interpolated missed boxes, outlier centres
against ±3 more keyframes of context, class from lidarseg), gather object points through the
interpolated box tracks (ground band kept out, margin returns snapped onto the box), voxelise
(counts and majority class), label by nearest neighbour, cast every LiDAR ray for the LiDAR
mask and the keyframe sweep's rays for box carving, fill the boxes, cast the camera rays of all
four cameras for the camera mask, and build ``labels.npz`` — the whole job the runner does per
frame. The issue's budget is 0.5 s.

Peer: the two steps public pipelines hand to libraries, on the same aggregated points given for
free (no reading, deskewing or box handling on its side): Open3D ``VoxelGrid`` over the points
and pyoctomap ``insertPointCloud`` of every sweep's rays from its sensor origin (the LiDAR-mask
step), with no camera mask at all (neither library has one). The check compares the occupied
voxels from points: ours and Open3D's must be the same set.

Numba cold start: ``python -m benchmarks.bench_groundtruth`` also times one keyframe in a fresh
process with the on-disk numba cache warm (what a CLI or a Ray worker pays on its first frame).

Measured on the 2-core development VM, quiet, best of 3, one numba thread (before the label
repair and the one-pass voxelisation): avfusion 0.43-0.45 s per keyframe (the budget is 0.5 s;
0.62-0.75 s with other jobs on both cores), the peer's two steps 1.33-1.44 s (3.1-3.2x). Where
avfusion's time goes (``OccupancyGT.stats["seconds"]``): aggregation ~0.2 s (reading and
deskewing 21 sweeps, box tracks), LiDAR rays ~0.07 s, camera mask ~0.09 s, voxelisation and
labels ~0.02 s, box filling ~0.01 s. Cold start: the first keyframe in a fresh process takes
1.6-2.1 s with numba's on-disk cache warm (import, cache load and the work), and 27 s when
every kernel compiles (empty cache: the first run after install).

Measured again 2026-11-22 with this code, the VM slower than above (the peer alone took
1.81-2.37 s, load 2.6-2.9 from other jobs): avfusion 0.48-0.63 s, ratio 3.7-3.8x (an
estimate, not a measurement: at the peer's quiet 1.33-1.44 s that ratio would put a keyframe at
~0.36-0.39 s; the VM was never quiet enough to confirm the 0.5 s budget). The label repair and the
ground band add 20-25 ms to the aggregation (in-process A/B with them off), one voxelisation
call instead of two saves a few ms; cold start 2.3-2.6 s under that load.

Measured again later that day, this code, with only a ``nice -n 19`` test job on the other core
(three runs): avfusion 0.432-0.466 s per keyframe (within the 0.5 s budget), peer
1.23-1.75 s (2.8-3.8x); cold start 1.6-2.2 s.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numba
import numpy as np

from avfusion.fusion.aggregate import aggregate_keyframe
from avfusion.fusion.occupancy import OccupancyGT, OccupancyOptions, occupancy_for_sample
from avfusion.fusion.voxel import GridSpec, voxelize
from avfusion.io import NuScenesLog
from avfusion.synth import ensure_sample_data
from benchmarks.harness import Case

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
SPEC = GridSpec.occ3d()


@cache
def _log() -> NuScenesLog:
    return NuScenesLog(ensure_sample_data(SAMPLE_DATA))


def _setup(scale: float) -> dict[str, Any]:
    log = _log()
    index = len(log) // 2
    sweeps = max(0, round(10 * scale))
    agg = aggregate_keyframe(log, index, OccupancyOptions().with_sweeps(sweeps).aggregation)
    scans = []
    for s in range(len(agg.sweep_tokens)):
        sel = agg.sweep == s
        if sel.any():
            scans.append((np.ascontiguousarray(agg.ray_end[sel] - SPEC.lo),
                          agg.ray_origin[sel].mean(axis=0) - SPEC.lo))  # fmt: skip
    return {"log": log, "index": index, "options": OccupancyOptions().with_sweeps(sweeps),
            "points": agg.points, "scans": scans}  # fmt: skip


def _ours(d: dict[str, Any]) -> OccupancyGT:
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        gt = occupancy_for_sample(d["log"], d["index"], d["options"])
        gt.npz_bytes()
        return gt
    finally:
        numba.set_num_threads(threads)


def _peer(d: dict[str, Any]) -> Any:
    import open3d as o3d
    import pyoctomap

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(d["points"]))
    grid = o3d.geometry.VoxelGrid.create_from_point_cloud_within_bounds(
        pcd, SPEC.voxel_size_m, SPEC.lo, SPEC.hi
    )
    tree = pyoctomap.OcTree(SPEC.voxel_size_m)
    tree.setBBXMin(np.full(3, 1e-6))
    tree.setBBXMax(SPEC.hi - SPEC.lo - 1e-6)
    tree.useBBXLimit(True)
    for pts, origin in d["scans"]:
        tree.insertPointCloud(pts, origin)
    return grid, tree, d["points"]


def _check(ours: OccupancyGT, peer: Any) -> None:
    grid, _tree, points = peer
    idx = np.array([v.grid_index for v in grid.get_voxels()], dtype=np.int64).reshape(-1, 3)
    theirs = np.zeros(SPEC.shape, bool)
    ok = np.all((idx >= 0) & (idx < SPEC.shape), axis=1)
    theirs[tuple(idx[ok].T)] = True
    mine = voxelize(points, SPEC).occupied
    # Open3D floors in float64 from the bounds' minimum exactly like GridSpec: allow only
    # points sitting on a voxel border within rounding
    differ = int(np.count_nonzero(mine != theirs))
    if differ > max(5, mine.sum() // 2000):
        raise AssertionError(f"occupied voxels differ between avfusion and Open3D: {differ}")
    filled = (ours.semantics != 17) & ~mine
    if np.count_nonzero(mine & (ours.semantics == 17)) or ours.mask_camera.sum() == 0:
        raise AssertionError("ground truth lost occupied voxels or has no camera mask")
    if int(filled.sum()) != ours.stats["voxels_filled_from_boxes"]:
        raise AssertionError("voxels without points are not the box-filled ones")


CASES = [
    Case(
        "occupancy: ground truth of one keyframe, ±10 sweeps, LiDAR + camera masks, 1 thread",
        "Open3D VoxelGrid + pyoctomap rays (points given)",
        _setup,
        _ours,
        _peer,
        _check,
        repeats=3,
    ),
]


def cold_start_seconds() -> float:
    """One keyframe in a fresh interpreter (numba cache on disk warm), import included."""
    code = (
        "import time; t=time.perf_counter(); import numba; numba.set_num_threads(1); "
        "from avfusion.fusion.occupancy import occupancy_for_sample; "
        "from avfusion.io import NuScenesLog; "
        f"log=NuScenesLog({str(_log().root)!r}); occupancy_for_sample(log, len(log)//2); "
        "print(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    from benchmarks.harness import run_case

    res = run_case(CASES[0])
    print(
        f"{res.name}: avfusion {res.ours_s:.3f} s, peer {res.peer_s:.3f} s, ratio {res.ratio:.2f}x"
    )
    print(
        f"first keyframe in a fresh process (import + numba cache load + work): {cold_start_seconds():.2f} s"
    )
