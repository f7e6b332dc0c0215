"""Occupancy building blocks: voxelisation, LiDAR ray casting and points in boxes.

Input (the same for both sides, in the ego frame of ``sample_data``'s middle LIDAR_TOP keyframe,
the Occ3D grid [-40, -40, -1, 40, 40, 5.4] m at 0.4 m): the keyframe aggregated with its
earlier sweeps (``NuScenesLog.aggregate_sweeps``; ~22k points a sweep).

* Voxelisation, ~1M points (45 sweeps): ``voxelize`` (points per voxel; in the second row also
  the majority class of 17) against Open3D ``VoxelGrid.create_from_point_cloud_within_bounds``
  (including the numpy → ``Vector3dVector`` conversion its users pay). Labels: the synthetic
  sweeps have no lidarseg, so each point gets the class of a 1.3 m cell (hashed), a spatially
  coherent field whose cell borders cut through voxels (mixed voxels at every border: 8.7k of
  the 23.5k occupied voxels, holding half the points). The check compares the occupied voxel
  sets.
  Earlier methods, for the record (2-core VM, best of N; the VM's speed swings by up to 2×
  from hour to hour): a counting sort, then one pass into compact per-chunk histograms
  (5.3-12.7× Open3D), then dense uint8 class counters in x-slabs where every thread computed
  the voxel of every point in scalar code (10.2-10.6× in one process, 5-11× here), then each
  point's voxel first in a vectorised pass and the counters filled per x-slab, every slab's
  thread going through all points' voxels (3.0-3.4 ms: 15.4-19.1× here in a fresh process,
  but 12.4× against an Open3D warmed up by the ground-truth case, 37-42 ms).
  Now (``voxelize_dense_kernel``): one counter copy per thread, each thread finding the voxels
  of its own chunk of points a block at a time (vectorised) and counting them at once into
  its copy; the finish adds the copies per occupied voxel in 16-bit lanes. No per-point voxel
  array is written and read back, and no thread reads another's points. Measured 2026-11-22,
  quiet machine: with the majority class 2.0-2.5 ms best of 15-30 in one process (the old
  method 3.0-3.4 ms in the same runs); this harness, fresh process: 20.0-26.8×, after the
  ground-truth case (``-k occupancy``) 20.7× and 17.6× (Open3D 71 and 41 ms); in one process
  with both sides under the malloc settings that warm Open3D up (37-46 ms), 16.6-17.8× min
  to min. Counts only (``count_points_kernel``: voxel indices, then counts per x-slab):
  17.6-33.9×.
* Ray casting, ~220k rays (10 sweeps, each from its own sensor origin): ``cast_rays`` (one call,
  per-point origins) against pyoctomap ``OcTree(0.4).insertPointCloud`` once per sweep with the
  sweep's origin, its update box limited to the grid (``useBBXLimit``, its fastest set-up here).
  The OctoMap side gets the points shifted by ``-range_min`` so its key grid (voxel borders at
  multiples of 0.4 m) is the Occ3D grid. The check states the agreement: the fraction of our
  hit voxels that OctoMap calls occupied, of our free-only voxels that it calls free, and of
  its occupied voxels that we hit. (OctoMap fuses log-odds per scan, so a voxel hit in one sweep
  and passed through by later ones can end up free there; our counts keep both.)
* Points in boxes, ~300k points × 100 boxes (the sample's annotated boxes plus random boxes
  with full 3D rotations around the ego): ``points_in_boxes`` (first box per point and per-box
  counts) against the nuscenes-devkit ``points_in_box`` loop (``peers.py``: per box its
  corners, the edge vectors i, j, k and the dot-product tests), which also fills both outputs.
"""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pyquaternion import Quaternion

from avfusion.fusion.voxel import (
    GridSpec,
    PointsInBoxes,
    RayCasting,
    Voxelization,
    cast_rays,
    points_in_boxes,
    voxelize,
)
from avfusion.io import NuScenesLog
from avfusion.synth import ensure_sample_data
from avfusion.types import Boxes3D
from benchmarks.harness import Case
from benchmarks.peers import DevkitBox, devkit_points_in_box

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
SPEC = GridSpec.occ3d()
VOXEL_SWEEPS = 45
RAY_SWEEPS = 10
PIB_POINTS = 300_000
N_BOXES = 100
N_CLASSES = 17


@cache
def _cloud(n_sweeps: int) -> dict[str, Any]:
    """Aggregated sweeps in the keyframe's ego frame, with each point's sensor origin."""
    log = NuScenesLog(ensure_sample_data(SAMPLE_DATA))
    k = len(log) // 2
    cloud = log.aggregate_sweeps(k, n_sweeps=n_sweeps)
    ego_from_lidar = cloud.sensor.ego_from_sensor
    ref_ego_from_world = log.ego_pose(cloud.token).inverse()
    origins = np.array(
        [
            (ref_ego_from_world @ log.ego_pose(tok) @ ego_from_lidar).translation
            for tok in log.sweeps(k, "LIDAR_TOP", n_sweeps)
        ]
    )
    sweep = cloud.attrs["sweep"].astype(np.int64)
    boxes = log.boxes3d(k).transformed(ref_ego_from_world, "ego")
    return {
        "points": np.ascontiguousarray(ego_from_lidar.apply(cloud.xyz), dtype=np.float32),
        "sweep": sweep,
        "origins": origins,
        "boxes": boxes,
    }


# --------------------------------------------------------------------------------------------
# Voxelisation vs Open3D
# --------------------------------------------------------------------------------------------


def _voxel_setup(scale: float) -> dict[str, Any]:
    c = _cloud(max(1, round(VOXEL_SWEEPS * scale)))
    n = max(1000, int(1_000_000 * scale))
    pts = c["points"][:n]
    cell = np.floor((pts.astype(np.float64) + 0.37) / 1.3).astype(np.int64)
    labels = ((cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (cell[:, 2] * 83492791)) % 17
    return {"points": pts, "points64": pts.astype(np.float64), "labels": labels.astype(np.uint8)}


def _voxel_ours(d: dict[str, Any]) -> Voxelization:
    return voxelize(d["points"], SPEC)


def _voxel_ours_semantic(d: dict[str, Any]) -> Voxelization:
    return voxelize(d["points"], SPEC, d["labels"], num_classes=N_CLASSES)


def _voxel_peer(d: dict[str, Any]) -> Any:
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(d["points64"]))
    return o3d.geometry.VoxelGrid.create_from_point_cloud_within_bounds(
        pcd, SPEC.voxel_size_m, SPEC.lo, SPEC.hi
    )


def _voxel_check(ours: Voxelization, grid: Any) -> None:
    idx = np.array([v.grid_index for v in grid.get_voxels()], dtype=np.int64).reshape(-1, 3)
    inside = np.all((idx >= 0) & (idx < np.array(SPEC.shape)), axis=1)
    theirs = np.zeros(SPEC.shape, bool)
    theirs[tuple(idx[inside].T)] = True
    mine = ours.occupied
    union = int(np.count_nonzero(mine | theirs))
    agree = np.count_nonzero(mine & theirs) / max(union, 1)
    print(
        f"    voxelisation: {int(mine.sum())} occupied voxels (Open3D {int(theirs.sum())}, "
        f"{int((~inside).sum())} of its voxels outside the grid); same set: {agree:.5f} (IoU)"
    )
    if agree < 0.999:
        raise AssertionError(f"occupied voxel sets differ: IoU {agree:.5f}")
    if ours.semantics is not None:
        sem = ours.semantics
        if np.any((sem == N_CLASSES) != ~mine) or sem.max() > N_CLASSES:
            raise AssertionError("semantics and occupancy disagree")


# --------------------------------------------------------------------------------------------
# Ray casting vs OctoMap
# --------------------------------------------------------------------------------------------


def _ray_setup(scale: float) -> dict[str, Any]:
    c = _cloud(max(1, round(RAY_SWEEPS * scale)))
    step = max(1, len(c["points"]) // max(1000, int(220_000 * scale)))
    pts = c["points"][::step]  # fewer rays per sweep at small scales, the sweeps' mix kept
    sweep = c["sweep"][::step]
    shift = -SPEC.lo
    order = np.argsort(sweep, kind="stable")
    shifted = pts[order].astype(np.float64) + shift
    bounds = np.searchsorted(sweep[order], np.arange(len(c["origins"]) + 1))
    return {
        "points": pts,
        "point_origins": np.ascontiguousarray(c["origins"][sweep]),
        # OctoMap: one scan per sweep, in the shifted frame
        "scans": [
            (np.ascontiguousarray(shifted[a:b]), c["origins"][s] + shift)
            for s, (a, b) in enumerate(itertools.pairwise(bounds))
            if b > a
        ],
        "shift": shift,
    }


def _ray_ours(d: dict[str, Any]) -> tuple[RayCasting, Any]:
    return cast_rays(d["points"], d["point_origins"], SPEC), d["shift"]


def _ray_peer(d: dict[str, Any]) -> Any:
    import pyoctomap

    tree = pyoctomap.OcTree(SPEC.voxel_size_m)
    tree.setBBXMin(np.full(3, 1e-6))
    tree.setBBXMax(SPEC.hi - SPEC.lo - 1e-6)
    tree.useBBXLimit(True)
    for pts, origin in d["scans"]:
        tree.insertPointCloud(pts, origin)
    return tree


def _octomap_states(tree: Any, mask: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """OctoMap's state at our voxels: 0 unknown, 1 free, 2 occupied."""
    centres = SPEC.centers(np.argwhere(mask)) + shift
    out = np.zeros(len(centres), np.int8)
    for i, c in enumerate(centres):
        node = tree.search(c)
        if node is not None:
            out[i] = 2 if tree.isNodeOccupied(node) else 1
    return out


def _ray_check(ours_out: tuple[RayCasting, Any], tree: Any) -> None:
    ours, shift = ours_out
    if ours.n_hit != int(ours.hits.sum()) or ours.n_invalid:
        raise AssertionError("hit counts do not add up")
    occupied = ours.hits > 0
    free = (ours.free > 0) & ~occupied
    at_occ = _octomap_states(tree, occupied, shift)
    at_free = _octomap_states(tree, free, shift)
    theirs = np.zeros(SPEC.shape, bool)  # OctoMap's occupied leaves, expanded to voxels
    v = SPEC.voxel_size_m
    for leaf in tree.begin_leafs():
        if not tree.isNodeOccupied(leaf.current_node):
            continue
        size = leaf.getSize()
        c = np.asarray(leaf.getCoordinate()) - shift
        lo = np.floor((c - size / 2 - SPEC.lo) / v + 0.5).astype(int)
        hi = lo + max(1, round(size / v))
        lo, hi = np.maximum(lo, 0), np.minimum(hi, SPEC.shape)
        if np.all(hi > lo):
            theirs[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    occ_agree = float(np.mean(at_occ == 2)) if at_occ.size else 1.0
    free_agree = float(np.mean(at_free == 1)) if at_free.size else 1.0
    back = np.count_nonzero(theirs & occupied) / max(int(theirs.sum()), 1)
    print(
        f"    ray casting: {ours.n_rays} rays; ours {int(occupied.sum())} hit / {int(free.sum())} "
        f"free-only voxels; OctoMap calls {occ_agree:.4f} of our hit voxels occupied "
        f"({float(np.mean(at_occ == 1)) if at_occ.size else 0:.4f} free), {free_agree:.4f} of our "
        f"free voxels free; {back:.4f} of its {int(theirs.sum())} occupied voxels are hit in ours"
    )
    if free_agree < 0.99 or occ_agree < 0.6 or back < 0.99:
        raise AssertionError(
            f"ray casting disagrees with OctoMap: free {free_agree:.4f}, occupied {occ_agree:.4f}, "
            f"theirs in ours {back:.4f}"
        )


# --------------------------------------------------------------------------------------------
# Points in boxes vs the devkit's points_in_box loop
# --------------------------------------------------------------------------------------------


def _pib_setup(scale: float) -> dict[str, Any]:
    c = _cloud(max(1, round(PIB_POINTS / 22_000 * scale)))
    n = max(1000, int(PIB_POINTS * scale))
    pts = c["points"][:n]
    rng = np.random.default_rng(7)
    real: Boxes3D = c["boxes"]
    extra = N_BOXES - len(real)
    yaw = rng.uniform(-np.pi, np.pi, extra)
    tilt = rng.normal(0.0, 0.1, (extra, 2))  # pitch and roll too: full rotations
    q = np.array(
        [
            (
                Quaternion(axis=[0, 0, 1], angle=y)
                * Quaternion(axis=[0, 1, 0], angle=p)
                * Quaternion(axis=[1, 0, 0], angle=r)
            ).elements
            for y, (p, r) in zip(yaw, tilt, strict=True)
        ]
    )
    centre = np.c_[rng.uniform(-35, 35, (extra, 2)), rng.uniform(-0.5, 1.5, extra)]
    size = np.c_[
        rng.uniform(3.5, 6.0, extra), rng.uniform(1.6, 2.4, extra), rng.uniform(1.4, 2.2, extra)
    ]
    boxes = Boxes3D(
        np.vstack([real.center, centre]),
        np.vstack([real.size, size]),
        np.vstack([real.rotation, q]),
        np.r_[real.label, np.full(extra, "car")],
        np.r_[real.track_id, np.arange(extra).astype(str)],
        "ego",
    )
    devkit_boxes = [
        DevkitBox(boxes.center[b], boxes.size[b, [1, 0, 2]], Quaternion(boxes.rotation[b]))
        for b in range(len(boxes))
    ]
    return {
        "points": pts,
        "boxes": boxes,
        "devkit_boxes": devkit_boxes,
        "points_3xn": np.ascontiguousarray(pts.T.astype(np.float64)),
    }


def _pib_ours(d: dict[str, Any]) -> PointsInBoxes:
    return points_in_boxes(d["points"], d["boxes"])


def _pib_peer(d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    pts = d["points_3xn"]
    first = np.full(pts.shape[1], -1, dtype=np.int64)
    counts = np.zeros(len(d["devkit_boxes"]), dtype=np.int64)
    for b, box in enumerate(d["devkit_boxes"]):
        mask = devkit_points_in_box(box, pts)
        counts[b] = np.count_nonzero(mask)
        first[mask & (first < 0)] = b
    return first, counts


def _pib_check(ours: PointsInBoxes, peer: tuple[np.ndarray, np.ndarray]) -> None:
    first, counts = peer
    # the devkit tests against corner 0 and edge vectors: a point within ~1e-12 m of a face may
    # land differently; anything more is a bug
    differ = int(np.count_nonzero(ours.box_index != first))
    if differ > 2 or np.abs(ours.counts - counts).sum() > 2 or counts.sum() < 100:
        raise AssertionError(f"points in boxes differ for {differ} points")


CASES = [
    Case(
        "occupancy: voxelise 1M points (counts)",
        "Open3D VoxelGrid within bounds",
        _voxel_setup,
        _voxel_ours,
        _voxel_peer,
        _voxel_check,
        repeats=15,
    ),
    Case(
        "occupancy: voxelise 1M points (counts + majority of 17 classes)",
        "Open3D VoxelGrid (counts only)",
        _voxel_setup,
        _voxel_ours_semantic,
        _voxel_peer,
        _voxel_check,
        repeats=15,
    ),
    Case(
        "occupancy: ray casting, 220k rays from 10 sweep origins",
        "pyoctomap insertPointCloud",
        _ray_setup,
        _ray_ours,
        _ray_peer,
        _ray_check,
        repeats=5,
    ),
    Case(
        "occupancy: points in 100 oriented boxes, 300k points",
        "devkit points_in_box loop",
        _pib_setup,
        _pib_ours,
        _pib_peer,
        _pib_check,
        repeats=5,
    ),
]
