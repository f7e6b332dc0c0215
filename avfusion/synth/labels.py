"""Truth labels: 3D boxes, 2D boxes from rendered visibility, point counts, visibility levels and
the analytic Occ3D occupancy.

* 3D boxes are the objects' truth boxes (world frame) of every annotated class at an instant.
* 2D boxes come from the rendered primitive-id image: the tight pixel extent of every visible
  pixel of an object (``[x0, y0, x1, y1]`` in pixel-edge coordinates: a box around pixels
  columns c0..c1 is ``[c0 − 0.5, r0 − 0.5, c1 + 0.5, r1 + 0.5]``), kept when at least
  ``MIN_BOX2D_PIXELS`` pixels are visible.
* Point counts follow nuscenes-devkit ``points_in_box``: a point counts when its coordinates in
  the box frame are within ±size/2 (inclusive), using the pose and extrinsic *as written*.
* Visibility (nuScenes levels 1–4 for 0–40, 40–60, 60–80, 80–100 %) is the fraction of 64 rays
  from the LiDAR to random points of the box that reach the object unoccluded, among those that
  hit it when it is alone.
* Occupancy (Occ3D-nuScenes grid, ego frame at the keyframe LiDAR time): a voxel is occupied
  when a surface passes through it or a solid overlaps it. It takes an object's class when one
  of the object's primitives overlaps it (boxes: an exact separating-axis test; ellipsoids: a
  5×5×5 lattice spanning the voxel, faces included); otherwise the class of the ground
  (driveable surface / sidewalk / terrain, from the column centre) when the ground surface
  passes through it (its z range over a 5×5 lattice of the column's footprint meets the voxel's
  z range); otherwise 17 (free). Voxels below the surface are free, as Occ3D labels only the
  surface layer. ``mask_lidar`` and ``mask_camera`` are all ones: the truth is known
  everywhere (an evaluation computes the camera mask of this truth from the keyframe's cameras
  with ``fusion.voxel.camera_visibility``, as ``tests/fusion/test_occupancy.py`` does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from avfusion.calibration.transforms import Transform
from avfusion.fusion.kernels import box_overlaps_voxel
from avfusion.synth.raycast import cast_rays
from avfusion.synth.world import (
    CLASSES,
    OCC3D_FREE,
    PRIM_BOX,
    World,
    ground_height,
    ground_material,
)
from avfusion.types import Boxes3D

__all__ = [
    "MIN_BOX2D_PIXELS",
    "OCC_GRID_SHAPE",
    "OCC_RANGE_M",
    "OCC_VOXEL_M",
    "boxes2d_from_prim_image",
    "boxes_at",
    "occupancy",
    "points_in_boxes",
    "visibility_levels",
]

MIN_BOX2D_PIXELS = 20
OCC_RANGE_M = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)
OCC_VOXEL_M = 0.4
OCC_GRID_SHAPE = (200, 200, 16)


def annotated_indices(world: World) -> list[int]:
    """Indices of the objects nuScenes would annotate with 3D boxes."""
    return [i for i, o in enumerate(world.objects) if o.info.annotated]


def boxes_at(world: World, t_ns: int, indices: list[int] | None = None) -> Boxes3D:
    """Truth boxes (world frame) of the annotated objects at ``t_ns``.

    ``attrs``: ``object_index`` (int), ``attribute`` (nuScenes attribute name), ``category``.
    """
    idx = annotated_indices(world) if indices is None else indices
    centers, sizes, quats, labels, tracks, vels = [], [], [], [], [], []
    for i in idx:
        obj = world.objects[i]
        tf = world.box_transform(obj, t_ns)
        centers.append(tf.translation)
        sizes.append(obj.box_size)
        quats.append(tf.quaternion)
        labels.append(obj.info.category)
        tracks.append(obj.track_id)
        vels.append(world.object_velocity(obj, t_ns))
    n = len(idx)
    return Boxes3D(
        np.asarray(centers).reshape(n, 3), np.asarray(sizes, dtype=np.float64).reshape(n, 3), np.asarray(quats).reshape(n, 4),
        np.asarray(labels, dtype=np.str_), np.asarray(tracks, dtype=np.str_), "world", np.asarray(vels).reshape(n, 3),
        attrs={
            "object_index": np.asarray(idx, dtype=np.int64),
            "attribute": np.asarray([world.objects[i].attribute for i in idx], dtype=np.str_),
        },
    )  # fmt: skip


def points_in_boxes(points: npt.NDArray[np.floating], boxes: Boxes3D) -> npt.NDArray[np.int64]:
    """Number of ``points`` (N, 3, same frame as ``boxes``) inside each box (inclusive faces)."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    if len(points) == 0:
        return counts
    p = np.asarray(points, dtype=np.float64)
    rot = boxes.rotation_matrices()
    for k in range(len(boxes)):
        local = (p - boxes.center[k]) @ rot[k]
        half = boxes.size[k] / 2.0
        counts[k] = int(np.count_nonzero(np.all(np.abs(local) <= half, axis=1)))
    return counts


def boxes2d_from_prim_image(
    prim_image: npt.NDArray[np.int32], prim_object: npt.NDArray[np.int32], wanted: set[int]
) -> dict[int, tuple[tuple[float, float, float, float], int]]:
    """Object index → (xyxy pixel-edge box, visible pixel count) for objects in ``wanted``."""
    valid = prim_image >= 0
    obj_img = np.full(prim_image.shape, -1, dtype=np.int64)
    obj_img[valid] = prim_object[prim_image[valid]]
    rows, cols = np.nonzero(obj_img >= 0)
    ids = obj_img[rows, cols]
    out: dict[int, tuple[tuple[float, float, float, float], int]] = {}
    if ids.size == 0:
        return out
    order = np.argsort(ids, kind="stable")
    ids, rows, cols = ids[order], rows[order], cols[order]
    uniq, start, counts = np.unique(ids, return_index=True, return_counts=True)
    for oid, s, c in zip(uniq.tolist(), start.tolist(), counts.tolist(), strict=True):
        if oid not in wanted or c < MIN_BOX2D_PIXELS:
            continue
        r = rows[s : s + c]
        q = cols[s : s + c]
        out[oid] = (
            (
                float(q.min()) - 0.5,
                float(r.min()) - 0.5,
                float(q.max()) + 0.5,
                float(r.max()) + 0.5,
            ),
            c,
        )
    return out


def visibility_levels(
    world: World,
    prims: dict[str, npt.NDArray[Any]],
    origin: npt.NDArray[np.float64],
    t_ns: int,
    indices: list[int],
    seed: int,
) -> npt.NDArray[np.int64]:
    """nuScenes visibility level (1–4) of each object seen from ``origin`` (world)."""
    rng = np.random.default_rng([seed, 4242])
    levels = np.ones(len(indices), dtype=np.int64)
    n_rays = 64
    for k, oi in enumerate(indices):
        obj = world.objects[oi]
        tf = world.box_transform(obj, t_ns)
        pts = np.asarray(
            tf.apply((rng.random((n_rays, 3)) - 0.5) * np.array(obj.box_size) * 0.9),
            dtype=np.float64,
        )
        dirs = pts - origin
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        origins = np.broadcast_to(origin, dirs.shape).copy()
        sel = np.flatnonzero(prims["object"] == oi)
        alone = {key: prims[key][sel] for key in ("kind", "center", "half", "yaw", "velocity")}
        _t_alone, p_alone, _ = cast_rays(
            origins, dirs, alone, world.params, max_range_m=1e4, with_ground=False
        )
        _, p_full, _ = cast_rays(origins, dirs, prims, world.params, max_range_m=1e4)
        hit_alone = p_alone >= 0
        n_alone = int(np.count_nonzero(hit_alone))
        if n_alone == 0:
            continue
        seen = int(
            np.count_nonzero(
                hit_alone & (p_full >= 0) & (prims["object"][np.maximum(p_full, 0)] == oi)
            )
        )
        frac = seen / n_alone
        levels[k] = 1 if frac < 0.4 else 2 if frac < 0.6 else 3 if frac < 0.8 else 4
    return levels


# --------------------------------------------------------------------------------------------
# Occupancy
# --------------------------------------------------------------------------------------------

_GROUND_OCC = np.array(
    [CLASSES["driveable_surface"].occ3d, CLASSES["sidewalk"].occ3d, CLASSES["terrain"].occ3d],
    dtype=np.uint8,
)


@njit(cache=True)
def _inside(
    kind: int,
    px: float,
    py: float,
    pz: float,
    c: npt.NDArray[np.float64],
    h: npt.NDArray[np.float64],
    yaw: float,
) -> bool:
    dx, dy, dz = px - c[0], py - c[1], pz - c[2]
    cs, sn = np.cos(yaw), np.sin(yaw)
    lx = cs * dx + sn * dy
    ly = -sn * dx + cs * dy
    if kind == PRIM_BOX:
        return abs(lx) <= h[0] and abs(ly) <= h[1] and abs(dz) <= h[2]
    return (lx / h[0]) ** 2 + (ly / h[1]) ** 2 + (dz / h[2]) ** 2 <= 1.0


#: Ellipsoid-voxel overlap is tested on a lattice of SUB^3 points spanning the voxel, faces
#: included (spacing 0.1 m at 0.4 m voxels: an ellipsoid of radius r reaching less than
#: ~0.1^2 / (4 r) m into a voxel between lattice points is missed: < 2 mm for r >= 1 m).
_SUB = 5


@njit(cache=True)
def _occupancy_kernel(
    rot_we: npt.NDArray[np.float64], t_we: npt.NDArray[np.float64], lo: npt.NDArray[np.float64], voxel: float,
    kind: npt.NDArray[np.int32], center: npt.NDArray[np.float64], half: npt.NDArray[np.float64], yaw: npt.NDArray[np.float64],
    prim_class: npt.NDArray[np.uint8], prim_range: npt.NDArray[np.int64], ground_occ: npt.NDArray[np.uint8],
    params: npt.NDArray[np.float64], sem: npt.NDArray[np.uint8],
) -> None:  # fmt: skip
    nx, ny, nz = sem.shape
    # ground: a voxel is occupied where the surface z = h(x, y) passes through it. Per column,
    # the surface's ego z on a SUB x SUB lattice over the column's footprint; by continuity the
    # surface crosses every z between the lowest and the highest of them.
    a = rot_we[2, 2]
    for i in range(nx):
        for j in range(ny):
            z_lo = np.inf
            z_hi = -np.inf
            for u in range(_SUB):
                ex = lo[0] + (i + u / (_SUB - 1)) * voxel
                for w in range(_SUB):
                    ey = lo[1] + (j + w / (_SUB - 1)) * voxel
                    ez = 0.0
                    for _ in range(3):  # world xy of the surface point (the grid is tilted)
                        wx = rot_we[0, 0] * ex + rot_we[0, 1] * ey + rot_we[0, 2] * ez + t_we[0]
                        wy = rot_we[1, 0] * ex + rot_we[1, 1] * ey + rot_we[1, 2] * ez + t_we[1]
                        b = rot_we[2, 0] * ex + rot_we[2, 1] * ey + t_we[2]
                        ez = (ground_height(wx, wy, params) - b) / a
                    z_lo = min(z_lo, ez)
                    z_hi = max(z_hi, ez)
            ex = lo[0] + (i + 0.5) * voxel
            ey = lo[1] + (j + 0.5) * voxel
            wx = rot_we[0, 0] * ex + rot_we[0, 1] * ey + t_we[0]
            wy = rot_we[1, 0] * ex + rot_we[1, 1] * ey + t_we[1]
            cls = ground_occ[ground_material(wx, wy, params)]
            for k in range(nz):
                z0 = lo[2] + k * voxel
                if z_lo < z0 + voxel and z_hi >= z0:
                    sem[i, j, k] = cls
    # objects (override the ground): any overlap of a primitive with the voxel
    t = np.empty(3)
    rot = np.empty((3, 3))
    ha = 0.5 * voxel
    for p in range(kind.shape[0]):
        i0, i1, j0, j1, k0, k1 = prim_range[p]
        cs, sn = np.cos(yaw[p]), np.sin(yaw[p])
        # the primitive's centre and axes in the ego (grid) frame
        dx, dy, dz = center[p, 0] - t_we[0], center[p, 1] - t_we[1], center[p, 2] - t_we[2]
        ce = np.empty(3)
        for r in range(3):
            ce[r] = rot_we[0, r] * dx + rot_we[1, r] * dy + rot_we[2, r] * dz
            rot[r, 0] = rot_we[0, r] * cs + rot_we[1, r] * sn
            rot[r, 1] = -rot_we[0, r] * sn + rot_we[1, r] * cs
            rot[r, 2] = rot_we[2, r]
        for i in range(i0, i1):
            for j in range(j0, j1):
                for k in range(k0, k1):
                    vc0 = lo[0] + (i + 0.5) * voxel
                    vc1 = lo[1] + (j + 0.5) * voxel
                    vc2 = lo[2] + (k + 0.5) * voxel
                    if kind[p] == PRIM_BOX:
                        t[0], t[1], t[2] = ce[0] - vc0, ce[1] - vc1, ce[2] - vc2
                        hit = box_overlaps_voxel(t, rot, half[p], ha)
                    else:
                        hit = False
                        for a_ in range(_SUB):
                            if hit:
                                break
                            ex = lo[0] + (i + a_ / (_SUB - 1)) * voxel
                            for b_ in range(_SUB):
                                if hit:
                                    break
                                ey = lo[1] + (j + b_ / (_SUB - 1)) * voxel
                                for c_ in range(_SUB):
                                    ez = lo[2] + (k + c_ / (_SUB - 1)) * voxel
                                    wx = (
                                        rot_we[0, 0] * ex
                                        + rot_we[0, 1] * ey
                                        + rot_we[0, 2] * ez
                                        + t_we[0]
                                    )
                                    wy = (
                                        rot_we[1, 0] * ex
                                        + rot_we[1, 1] * ey
                                        + rot_we[1, 2] * ez
                                        + t_we[1]
                                    )
                                    wz = (
                                        rot_we[2, 0] * ex
                                        + rot_we[2, 1] * ey
                                        + rot_we[2, 2] * ez
                                        + t_we[2]
                                    )
                                    if _inside(kind[p], wx, wy, wz, center[p], half[p], yaw[p]):
                                        hit = True
                                        break
                    if hit:
                        sem[i, j, k] = prim_class[p]


def occupancy(
    world: World, prims: dict[str, npt.NDArray[Any]], world_from_ego: Transform
) -> npt.NDArray[np.uint8]:
    """Occ3D ``semantics`` (200, 200, 16) uint8 in the ego frame ``world_from_ego``."""
    lo = np.array(OCC_RANGE_M[:3])
    sem = np.full(OCC_GRID_SHAPE, OCC3D_FREE, dtype=np.uint8)
    ego_from_world = world_from_ego.inverse()
    c_ego = ego_from_world.apply(prims["center"]) if len(prims["kind"]) else np.zeros((0, 3))
    radius = np.linalg.norm(prims["half"], axis=1)
    shape = np.array(OCC_GRID_SHAPE)
    lo_idx = np.floor((c_ego - radius[:, None] - lo) / OCC_VOXEL_M).astype(np.int64)
    hi_idx = np.ceil((c_ego + radius[:, None] - lo) / OCC_VOXEL_M).astype(np.int64)
    lo_idx = np.clip(lo_idx, 0, shape)
    hi_idx = np.clip(hi_idx, 0, shape)
    prim_range = np.ascontiguousarray(
        np.stack(
            [lo_idx[:, 0], hi_idx[:, 0], lo_idx[:, 1], hi_idx[:, 1], lo_idx[:, 2], hi_idx[:, 2]],
            axis=1,
        )
    )
    otab = world.object_table()
    prim_class = otab["occ3d"][prims["object"]].astype(np.uint8)
    _occupancy_kernel(
        np.ascontiguousarray(world_from_ego.rotation), np.ascontiguousarray(world_from_ego.translation), lo, OCC_VOXEL_M,
        prims["kind"], prims["center"], prims["half"], prims["yaw"], prim_class, prim_range, _GROUND_OCC,
        world.params, sem,
    )  # fmt: skip
    return sem
