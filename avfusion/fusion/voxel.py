"""Voxel grids for occupancy ground truth: the grid, voxelisation, LiDAR ray casting, camera
visibility and points in oriented boxes (the building blocks of ``fusion/occupancy.py``).

The grid (``GridSpec``) is axis-aligned in whatever frame the caller works in (Occ3D: the ego
frame of the keyframe), covers ``[range_min_m, range_max_m)`` with cubic voxels of
``voxel_size_m``, and is indexed ``[x, y, z]``. The voxel of a point is, per axis,
``floor((p - range_min_m) * (1 / voxel_size_m))`` computed in float64; it is in the grid when
that lies in ``[0, n)`` on all three axes. Every function here (and ``GridSpec.index_of``) uses
this one rule, so a LiDAR return's hit voxel is exactly the voxel it is counted in when
voxelised. Linear voxel indices are C order over ``shape`` (``np.unravel_index(i, shape)``).

* ``voxelize``: points per voxel and the majority semantic class per voxel (ties: the lowest
  class id, or the order given as ``tie_priority``); outside and non-finite points are counted
  and reported, never written.
* ``cast_rays``: LiDAR rays from their sensor origins (one origin, or one per point) to their
  returns, walked voxel by voxel (3D DDA, Amanatides & Woo 1987): ``hits`` at each in-grid end
  point's voxel, ``free`` on every voxel the ray crosses before it. A ray whose origin is
  outside enters at the grid boundary; a ray whose return is outside is walked until it leaves.
* ``camera_visibility``: Occ3D's camera mask: rays from each camera centre through its pixels;
  along a ray, the voxels passed and the first occupied voxel are observed, voxels behind it are
  not. Ray density: Occ3D casts one ray per pixel of each image; ``stride_px=1`` does exactly
  that. By default one ray is cast per ``stride × stride`` block of pixels (through the block
  centre), with the largest stride that keeps neighbouring rays at most half a voxel apart at the
  farthest grid corner seen from the camera (``ray_spacing_voxels``): for the nuScenes cameras
  (f ≈ 1266 px) and the Occ3D grid this is a stride of 4: 16× fewer rays than per pixel. What
  it costs: on ``sample_data``'s six 1600 × 900 cameras, stride 4 observes 97.3 % of the voxels
  the per-pixel rays observe (stride 2: 98.8 %); the rest are seen only through gaps narrower
  than the ray spacing. Pass ``stride_px=1`` where the exact Occ3D mask matters more than time (~16×).
* ``points_in_boxes``: which oriented boxes (full 3D rotation, optional per-axis scale and
  margin) hold each point; a point in several boxes is assigned to the lowest box index, and the
  per-box counts and the optional (N, B) mask count it in every box that holds it.

All heavy lifting is in numba kernels (``fusion/kernels.py``), parallel over chunks of the input
with one count grid per chunk, summed at the end: results are exact integers, deterministic and
independent of the thread count.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, ConfigError
from avfusion.fusion.kernels import (
    DENSE_MAX_COPIES,
    DENSE_VOXEL_BYTES,
    RAY_HIT,
    RAY_INVALID,
    RAY_MISSED,
    RAY_PASSED,
    camera_visibility_kernel,
    count_points_kernel,
    points_in_boxes_kernel,
    raycast_kernel,
    voxel_slab_bounds,
    voxelize_dense_kernel,
    voxelize_kernel,
)
from avfusion.types import Boxes3D

__all__ = [
    "OCC3D_FREE_LABEL",
    "OCC3D_NUM_CLASSES",
    "RAY_HIT",
    "RAY_INVALID",
    "RAY_MISSED",
    "RAY_PASSED",
    "CameraVisibility",
    "GridSpec",
    "PointsInBoxes",
    "RayCasting",
    "Voxelization",
    "camera_rays",
    "camera_visibility",
    "cast_rays",
    "points_in_boxes",
    "voxelize",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: Occ3D-nuScenes semantic classes 0 (others) ... 16 (vegetation); 17 is free.
OCC3D_NUM_CLASSES = 17
OCC3D_FREE_LABEL = 17
#: Per-chunk scratch grids are bounded to this many bytes in all (fewer chunks beyond it).
_SCRATCH_BYTES = 512 * 1024 * 1024
#: Most voxels a grid may have (linear indices are int32).
_MAX_VOXELS = 2**31 - 1
#: Largest dense class-counter block (``voxelize_dense_kernel``: 24 counter bytes a voxel per
#: copy, one copy per thread, and one flag byte a voxel) kept per calling thread for reuse: the
#: Occ3D grid (640k voxels) takes 16 MB a copy, so up to 4 copies (31 MB on two threads); a
#: grid whose one copy does not fit (2.7M voxels) or more than 23 classes use the compact
#: histogram instead. Faulting in and zeroing a fresh block on every call would cost more than
#: the dense method saves.
_DENSE_MAX_BYTES = 64 * 1024 * 1024
_DENSE_SCRATCH = threading.local()


def _dense_copies(n_points: int, n_voxels: int) -> int:
    """Counter copies for ``voxelize_dense_kernel``: one per thread, but one per 100k points at
    most (each copy adds its counters' gathers to the finish) and within
    ``_DENSE_MAX_BYTES``; 0 when not even one fits."""
    fits = max(0, (_DENSE_MAX_BYTES - n_voxels) // max(n_voxels * DENSE_VOXEL_BYTES, 1))
    return int(min(numba.get_num_threads(), max(1, n_points // 100_000), fits, DENSE_MAX_COPIES))


def _dense_counters(
    n_voxels: int, copies: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """This thread's reusable (counters (copies, n_voxels × 24), touched flags (n_voxels,)):
    all zeros, as ``voxelize_dense_kernel`` needs them and leaves them (it zeroes what it
    reads). The block only grows, and any part of an all-zeros block is all zeros."""
    split = copies * n_voxels * DENSE_VOXEL_BYTES
    block: npt.NDArray[np.uint8] | None = getattr(_DENSE_SCRATCH, "block", None)
    if block is None or block.shape[0] < split + n_voxels:
        block = np.zeros(split + n_voxels, dtype=np.uint8)
        _DENSE_SCRATCH.block = block
    return block[:split].reshape(copies, -1), block[split : split + n_voxels]


def _voxel_index_scratch(n_points: int) -> npt.NDArray[np.int32]:
    """An (n_points,) int32 array for each point's voxel when the caller did not ask for them:
    this thread's reusable one up to ``_DENSE_MAX_BYTES`` (a fresh 4 MB per 1M points would
    cost ~0.4 ms of page faults a call), else a new one."""
    if 4 * n_points > _DENSE_MAX_BYTES:
        return np.empty(n_points, dtype=np.int32)
    block: npt.NDArray[np.int32] | None = getattr(_DENSE_SCRATCH, "voxel_of", None)
    if block is None or block.shape[0] < n_points:
        block = np.empty(max(n_points, 1 << 16), dtype=np.int32)
        _DENSE_SCRATCH.voxel_of = block
    return block[:n_points]


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(
            f"GridSpec: {name} must be three numbers (x, y, z), got {value!r}"
        ) from None
    if arr.shape != (3,):
        raise ConfigError(f"GridSpec: {name} must be three numbers (x, y, z), got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"GridSpec: {name} must be finite, got {arr.tolist()}")
    return float(arr[0]), float(arr[1]), float(arr[2])


@dataclass(frozen=True)
class GridSpec:
    """An axis-aligned voxel grid: ``[range_min_m, range_max_m)`` in cubes of ``voxel_size_m``.

    The default is Occ3D-nuScenes (``GridSpec.occ3d()``): range [-40, -40, -1, 40, 40, 5.4] m,
    0.4 m voxels, shape (200, 200, 16). The extent on every axis must be a whole number of
    voxels (to 1e-6 voxel); ``shape`` is derived and the grid's exact upper bound is
    ``hi = range_min_m + shape * voxel_size_m``. Invalid values raise ``ConfigError``.
    """

    range_min_m: tuple[float, float, float] = (-40.0, -40.0, -1.0)
    range_max_m: tuple[float, float, float] = (40.0, 40.0, 5.4)
    voxel_size_m: float = 0.4
    shape: tuple[int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        lo = _triple(self.range_min_m, "range_min_m")
        hi = _triple(self.range_max_m, "range_max_m")
        v = self.voxel_size_m
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            raise ConfigError(f"GridSpec: voxel_size_m must be a number, got {v!r}")
        v = float(v)
        if not (math.isfinite(v) and v > 0.0):
            raise ConfigError(f"GridSpec: voxel_size_m must be finite and > 0, got {v}")
        shape = []
        for axis, a, b in zip("xyz", lo, hi, strict=True):
            if not b > a:
                raise ConfigError(
                    f"GridSpec: range_max_m {axis} = {b} must be greater than range_min_m {axis} = {a}"
                )
            cells = (b - a) / v
            n = round(cells)
            if not math.isfinite(cells) or abs(cells - n) > 1e-6 or n < 1:
                raise ConfigError(
                    f"GridSpec: the {axis} extent {b - a:g} m is not a whole number of "
                    f"{v:g} m voxels ({cells:g})"
                )
            shape.append(int(n))
        total = shape[0] * shape[1] * shape[2]
        if total > _MAX_VOXELS:
            raise ConfigError(
                f"GridSpec: {shape[0]}x{shape[1]}x{shape[2]} = {total} voxels, more than the "
                f"{_MAX_VOXELS} supported"
            )
        object.__setattr__(self, "range_min_m", lo)
        object.__setattr__(self, "range_max_m", hi)
        object.__setattr__(self, "voxel_size_m", v)
        object.__setattr__(self, "shape", (shape[0], shape[1], shape[2]))

    @classmethod
    def occ3d(cls) -> GridSpec:
        """Occ3D-nuScenes: [-40, -40, -1, 40, 40, 5.4] m, 0.4 m voxels, (200, 200, 16)."""
        return cls()

    @classmethod
    def from_range(cls, point_cloud_range: Sequence[float], voxel_size_m: float) -> GridSpec:
        """From an Occ3D / mmdet3d style ``[x_min, y_min, z_min, x_max, y_max, z_max]``."""
        r = np.asarray(point_cloud_range, dtype=np.float64).reshape(-1)
        if r.shape != (6,):
            raise ConfigError(
                f"GridSpec: point_cloud_range must have 6 values (x, y, z min then max), got {r.size}"
            )
        return cls(tuple(r[:3]), tuple(r[3:]), voxel_size_m)

    @property
    def lo(self) -> F64:
        """Lower grid corner (3,) float64 (a new array)."""
        return np.array(self.range_min_m, dtype=np.float64)

    @property
    def hi(self) -> F64:
        """Upper grid corner ``lo + shape * voxel_size_m`` (3,) float64."""
        return self.lo + np.array(self.shape, dtype=np.float64) * self.voxel_size_m

    @property
    def n_voxels(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def inv_voxel(self) -> float:
        """``1 / voxel_size_m``: the factor of the voxel rule."""
        return 1.0 / self.voxel_size_m

    def index_of(self, points: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Voxel indices (N, 3) int64 of points (N, 3); rows of -1 for points outside the grid
        or not finite. ``floor((p - range_min_m) * (1 / voxel_size_m))`` in float64, as the
        kernels compute it."""
        p = np.asarray(points)
        if p.ndim != 2 or p.shape[1] != 3:
            raise AVFusionError(f"GridSpec.index_of: points must be (N, 3), got shape {p.shape}")
        with np.errstate(invalid="ignore", over="ignore"):
            f = (p.astype(np.float64) - self.lo) * self.inv_voxel
            inside = np.all((f >= 0.0) & (f < np.array(self.shape)), axis=1)
        out = np.full(p.shape, -1, dtype=np.int64)
        out[inside] = f[inside].astype(np.int64)
        return out

    def centers(self, ijk: npt.ArrayLike) -> F64:
        """Centres (N, 3) of voxels ``ijk`` (N, 3) (integer indices; not range checked)."""
        idx = np.asarray(ijk, dtype=np.float64)
        return self.lo + (idx + 0.5) * self.voxel_size_m


def _as_points(points: Any, what: str, name: str = "points") -> npt.NDArray[np.floating[Any]]:
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] != 3:
        raise AVFusionError(
            f"{what}: {name} must be an (N, 3) array, got {getattr(points, 'shape', type(points).__name__)}"
        )
    if points.dtype not in (np.float32, np.float64):
        raise AVFusionError(f"{what}: {name} must be float32 or float64, got {points.dtype}")
    return np.ascontiguousarray(points)


def _check_spec(spec: Any, what: str) -> GridSpec:
    if not isinstance(spec, GridSpec):
        raise ConfigError(f"{what}: spec must be a GridSpec, got {type(spec).__name__}")
    return spec


def _n_chunks(n_items: int, grid_bytes: int) -> int:
    """Chunks (= per-chunk scratch grids) for a parallel kernel: one per thread, but only when
    there are enough items to pay for zeroing and summing the extra grids, and within
    ``_SCRATCH_BYTES``."""
    threads = numba.get_num_threads()
    by_memory = max(1, _SCRATCH_BYTES // max(grid_bytes, 1))
    by_work = max(1, n_items // max(grid_bytes // 16, 1))
    return int(max(1, min(threads, by_memory, by_work)))


# --------------------------------------------------------------------------------------------
# Voxelisation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Voxelization:
    """Points per voxel (and majority class) of one cloud.

    ``counts`` (nx, ny, nz) int32; ``semantics`` (nx, ny, nz) uint8 or None (no labels): the
    majority class, ``empty_label`` where a voxel has no point. ``point_voxel`` (N,) int32 (only
    when asked for, else None): each point's linear voxel index, -1 outside the grid, -2 not
    finite.
    """

    spec: GridSpec
    counts: npt.NDArray[np.int32]
    semantics: npt.NDArray[np.uint8] | None
    point_voxel: npt.NDArray[np.int32] | None
    n_points: int
    n_inside: int
    n_outside: int
    n_nonfinite: int

    @property
    def occupied(self) -> npt.NDArray[np.bool_]:
        return self.counts > 0


def _tie_rank(
    tie_priority: Sequence[int] | None, num_classes: int, what: str
) -> npt.NDArray[np.int64]:
    if tie_priority is None:
        return np.arange(num_classes, dtype=np.int64)
    order = np.asarray(tie_priority).reshape(-1)
    if (
        order.shape != (num_classes,)
        or not np.issubdtype(order.dtype, np.integer)
        or not np.array_equal(np.sort(order), np.arange(num_classes))
    ):
        raise ConfigError(
            f"{what}: tie_priority must list each class id 0..{num_classes - 1} once "
            f"(most preferred first), got {order.tolist()}"
        )
    rank = np.empty(num_classes, dtype=np.int64)
    rank[order.astype(np.int64)] = np.arange(num_classes)
    return rank


def _voxelize_compact(
    pts: npt.NDArray[np.floating[Any]],
    lab: npt.NDArray[np.uint8],
    spec: GridSpec,
    rank: npt.NDArray[np.int64],
    empty: int,
    counts: npt.NDArray[np.int32],
    point_voxel: npt.NDArray[np.int32],
    semantics: npt.NDArray[np.uint8],
) -> tuple[int, int, int]:
    """``voxelize_kernel``: labels with more than 23 classes, or grids too large for the dense
    counters. Returns (inside, non-finite, labels outside [0, C))."""
    n = pts.shape[0]
    chunks = _n_chunks(n, spec.n_voxels * 4)
    scratch = np.empty((chunks, *spec.shape), dtype=np.int32)
    # compact per-chunk histograms: a row per voxel a chunk meets (at most its points, at most
    # the grid) of C + 2 int32 (classes, labels out of range, the voxel); only rows in use are
    # ever touched, so the pages of the rest are never mapped
    rows = min(-(-n // chunks), spec.n_voxels)
    hist = np.empty((chunks, rows, rank.shape[0] + 2), dtype=np.int32)
    n_in, n_nan, n_bad = voxelize_kernel(
        pts, lab, spec.lo, spec.inv_voxel, rank, empty, scratch, counts, point_voxel, semantics,
        hist,
    )  # fmt: skip
    return int(n_in), int(n_nan), int(n_bad)


def voxelize(
    points: npt.NDArray[np.floating[Any]],
    spec: GridSpec | None = None,
    labels: npt.NDArray[np.integer[Any]] | None = None,
    *,
    num_classes: int = OCC3D_NUM_CLASSES,
    tie_priority: Sequence[int] | None = None,
    empty_label: int | None = None,
    unlabelled: int | None = None,
    point_voxel: bool = False,
    what: str = "voxelize",
) -> Voxelization:
    """Points per voxel of ``points`` (N, 3) (float32/float64, in the grid's frame) and, with
    ``labels`` (N,) integer class ids in ``[0, num_classes)``, the majority class per voxel.

    Ties between classes go to the lowest class id, or, with ``tie_priority`` (every class id
    once, most preferred first), to the earliest in that list. Voxels without points get
    ``empty_label`` (default ``num_classes``: Occ3D's free label 17 for its 17 classes).
    ``num_classes`` and ``empty_label`` must fit uint8. Points outside the grid or not finite
    are counted (``n_outside``, ``n_nonfinite``) and never written; a label outside
    ``[0, num_classes)`` on a point inside the grid raises ``AVFusionError``, except the value
    ``unlabelled`` (outside ``[0, num_classes)``): such points count in ``counts`` but do not
    vote, so a voxel whose points are all unlabelled gets ``empty_label`` (one call gives the
    points per voxel of a partly labelled cloud and the majority of its labelled points).
    uint8 labels go to the kernel as they are; other integer dtypes cost one conversion pass.
    ``point_voxel=True`` also returns each point's voxel (``Voxelization.point_voxel``; a fresh
    4 bytes a point, about a sixth of the time of a 1M-point call, so only on request).
    """
    spec = GridSpec() if spec is None else _check_spec(spec, what)
    pts = _as_points(points, what)
    n = pts.shape[0]
    if n > _MAX_VOXELS:
        raise AVFusionError(f"{what}: {n} points, more than the {_MAX_VOXELS} one call supports")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or not 1 <= num_classes <= 255
    ):
        raise ConfigError(
            f"{what}: num_classes must be an integer in [1, 255], got {num_classes!r}"
        )
    num_classes = int(num_classes)
    empty = num_classes if empty_label is None else empty_label
    if isinstance(empty, bool) or not isinstance(empty, int | np.integer) or not 0 <= empty <= 255:
        raise ConfigError(f"{what}: empty_label must be an integer in [0, 255], got {empty!r}")
    if unlabelled is not None and (
        isinstance(unlabelled, bool)
        or not isinstance(unlabelled, int | np.integer)
        or 0 <= unlabelled < num_classes
    ):
        raise ConfigError(
            f"{what}: unlabelled must be an integer outside [0, {num_classes}), got {unlabelled!r}"
        )
    rank = _tie_rank(tie_priority, num_classes, what)
    if labels is None:
        lab = np.zeros(0, dtype=np.uint8)
    else:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise AVFusionError(
                f"{what}: labels must have shape ({n},) like the points, got {lab.shape}"
            )
        if not np.issubdtype(lab.dtype, np.integer):
            raise AVFusionError(f"{what}: labels must be integer class ids, got dtype {lab.dtype}")
        if lab.dtype != np.uint8:  # one kernel signature: uint8, 255 = a label out of range
            lab = np.where((lab >= 0) & (lab < num_classes), lab, 255).astype(np.uint8)
        lab = np.ascontiguousarray(lab)
    with_labels = labels is not None and n > 0
    shape = spec.shape
    counts = np.empty(shape, dtype=np.int32)
    per_point = np.empty(n if point_voxel else 0, dtype=np.int32)
    semantics = np.empty(shape if with_labels else (0, 0, 0), dtype=np.uint8)
    copies = _dense_copies(n, spec.n_voxels) if num_classes < DENSE_VOXEL_BYTES else 0
    if with_labels and copies:
        try:
            n_in, n_nan, n_bad = voxelize_dense_kernel(
                pts,
                lab,
                spec.lo,
                spec.inv_voxel,
                rank,
                int(empty),
                max(1, min(numba.get_num_threads(), shape[0])),
                *_dense_counters(spec.n_voxels, copies),
                np.empty((copies, n // 256 + 1), dtype=np.int64),
                counts,
                per_point,
                semantics,
            )
        except BaseException:
            # a kernel stopped half way (out of memory) may leave counts in the block, which
            # must be all zeros for the next call: drop it
            _DENSE_SCRATCH.block = None
            raise
    elif with_labels:
        n_in, n_nan, n_bad = _voxelize_compact(
            pts, lab, spec, rank, int(empty), counts, per_point, semantics
        )
    else:
        # each point's voxel (kept when asked for), then counts per x-slab, a slab per thread
        slabs = max(1, min(numba.get_num_threads(), n // 100_000, shape[0]))
        bounds = voxel_slab_bounds(pts, float(spec.lo[0]), spec.inv_voxel, shape[0], slabs)
        voxel_of = per_point if point_voxel else _voxel_index_scratch(n)
        n_in, n_nan = count_points_kernel(pts, spec.lo, spec.inv_voxel, bounds, counts, voxel_of)
        n_bad = 0
        if n_in < 0:  # pragma: no cover - the arrays above always fit
            raise AVFusionError(f"{what}: voxelisation kernel refused its arrays")
    if n_bad and unlabelled is not None:
        # labels outside [0, C) are allowed when they are ``unlabelled``: a quick look at all
        # labels first, the exact one (points inside the grid only) when that finds others
        raw = np.asarray(labels)
        if not np.any(((raw < 0) | (raw >= num_classes)) & (raw != unlabelled)):
            n_bad = 0
    if n_bad:
        inside = per_point >= 0 if point_voxel else spec.index_of(pts)[:, 0] >= 0
        inside_labels = np.asarray(labels)[inside].astype(np.int64)
        wrong = inside_labels[(inside_labels < 0) | (inside_labels >= num_classes)]
        if unlabelled is not None:
            wrong = wrong[wrong != unlabelled]
        if wrong.size:
            raise AVFusionError(
                f"{what}: {wrong.size} points inside the grid have a label outside "
                f"[0, {num_classes}) (values {np.unique(wrong)[:10].tolist()})"
            )
    if labels is not None and n == 0:
        semantics = np.full(shape, empty, dtype=np.uint8)
    n_out = n - n_in - n_nan
    logger.debug(
        "%s: %d points, %d in the grid, %d outside, %d not finite", what, n, n_in, n_out, n_nan
    )
    return Voxelization(
        spec,
        counts,
        semantics if labels is not None else None,
        per_point if point_voxel else None,
        n,
        int(n_in),
        int(n_out),
        int(n_nan),
    )


# --------------------------------------------------------------------------------------------
# LiDAR ray casting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RayCasting:
    """Free and hit counts of a set of LiDAR rays.

    ``free``, ``hits`` (nx, ny, nz) int32: how many rays crossed each voxel before their end,
    and how many ended in it. ``ray_status`` (N,) int8 per ray: ``RAY_HIT`` (end point in the
    grid), ``RAY_PASSED`` (end outside, the ray crosses the grid), ``RAY_MISSED`` (does not
    cross the grid), ``RAY_INVALID`` (origin or end point not finite).
    ``hits.sum() == n_hit``.
    """

    spec: GridSpec
    free: npt.NDArray[np.int32]
    hits: npt.NDArray[np.int32]
    ray_status: npt.NDArray[np.int8]
    n_rays: int
    n_hit: int
    n_passed: int
    n_missed: int
    n_invalid: int

    @property
    def observed(self) -> npt.NDArray[np.bool_]:
        """Voxels some ray crossed or ended in (Occ3D's LiDAR mask)."""
        return (self.free > 0) | (self.hits > 0)


def cast_rays(
    points: npt.NDArray[np.floating[Any]],
    origins: npt.ArrayLike,
    spec: GridSpec | None = None,
    *,
    what: str = "cast_rays",
) -> RayCasting:
    """Walk LiDAR rays ``origins -> points`` through the grid (3D DDA).

    ``points`` (N, 3) float32/float64: the returns, in the grid's frame. ``origins``: the sensor
    origin of each ray in the same frame, (3,) for all rays or (N, 3) per ray (e.g. the sweep's
    sensor position for aggregated sweeps). Each ray ending in the grid adds a hit to its end
    voxel and a free count to every voxel it crosses before it; a ray ending outside adds free
    counts until it leaves the grid. Origins outside the grid are fine (the ray enters at the
    boundary). Rays with a non-finite origin or end point are counted (``n_invalid``), never
    walked. Deterministic: the counts do not depend on the thread count.
    """
    spec = GridSpec() if spec is None else _check_spec(spec, what)
    pts = _as_points(points, what)
    n = pts.shape[0]
    org = np.asarray(origins)
    if not np.issubdtype(org.dtype, np.number) or np.issubdtype(org.dtype, np.complexfloating):
        raise AVFusionError(f"{what}: origins must be real numbers, got dtype {org.dtype}")
    if org.shape == (3,):
        org = org.reshape(1, 3)
    if org.ndim != 2 or org.shape[1] != 3 or org.shape[0] not in (1, n):
        raise AVFusionError(
            f"{what}: origins must be (3,) or ({n}, 3) like the points, got shape {org.shape}"
        )
    org = np.ascontiguousarray(org, dtype=np.float64)
    shape = spec.shape
    chunks = _n_chunks(n * 8, spec.n_voxels * 8)
    scratch = np.empty((chunks, 2, *shape), dtype=np.int32)
    free = np.empty(shape, dtype=np.int32)
    hits = np.empty(shape, dtype=np.int32)
    status = np.empty(n, dtype=np.int8)
    raycast_kernel(
        pts, org, spec.lo, spec.voxel_size_m, spec.inv_voxel, scratch, free, hits, status
    )
    tally = np.bincount(status, minlength=4) if n else np.zeros(4, dtype=np.int64)
    result = RayCasting(
        spec,
        free,
        hits,
        status,
        n,
        int(tally[RAY_HIT]),
        int(tally[RAY_PASSED]),
        int(tally[RAY_MISSED]),
        int(tally[RAY_INVALID]),
    )
    logger.debug(
        "%s: %d rays: %d end in the grid, %d pass through, %d miss it, %d invalid",
        what,
        n,
        result.n_hit,
        result.n_passed,
        result.n_missed,
        result.n_invalid,
    )
    return result


# --------------------------------------------------------------------------------------------
# Camera visibility
# --------------------------------------------------------------------------------------------


def _auto_stride(
    camera: CameraModel, origin: F64, spec: GridSpec, ray_spacing_voxels: float
) -> int:
    corners = np.array(
        [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64
    )
    corners = spec.lo + corners * (spec.hi - spec.lo)
    d_max = float(np.max(np.linalg.norm(corners - origin, axis=1)))
    f = min(camera.fx, camera.fy)
    return max(1, int(ray_spacing_voxels * spec.voxel_size_m * f / max(d_max, 1e-9)))


#: Camera-frame pixel rays are cached per (camera model, stride) up to this many rays.
_RAY_CACHE_MAX_RAYS = 1_000_000


@functools.lru_cache(maxsize=16)
def _cached_pixel_rays(camera: CameraModel, stride_px: int) -> F64:
    return _pixel_rays(camera, stride_px)


def _pixel_rays(camera: CameraModel, s: int) -> F64:
    """Unit rays (R, 3) in the camera frame through the centres of the s x s pixel blocks
    (read-only)."""
    nu = max(camera.width // s, 1)
    nv = max(camera.height // s, 1)
    u = (np.arange(nu) + 0.5) * s - 0.5 if s > 1 else np.arange(nu, dtype=np.float64)
    v = (np.arange(nv) + 0.5) * s - 0.5 if s > 1 else np.arange(nv, dtype=np.float64)
    if camera.width < s:
        u = np.array([(camera.width - 1) / 2.0])
    if camera.height < s:
        v = np.array([(camera.height - 1) / 2.0])
    uu, vv = np.meshgrid(u, v)
    rays = camera.rays(np.stack([uu.ravel(), vv.ravel()], axis=1))
    rays.setflags(write=False)
    return rays


def camera_rays(
    camera: CameraModel,
    grid_from_camera: Transform,
    stride_px: int,
) -> tuple[F64, F64]:
    """Viewing rays of ``camera`` in the grid frame, one per ``stride_px`` × ``stride_px`` block
    of pixels (through the block centre; ``stride_px=1``: every pixel centre).

    Returns ``(origin (3,), directions (R, 3))``: the camera centre and unit directions (from
    ``CameraModel.rays``, so lens distortion is undone), row-major over the sampled pixels. The
    camera-frame rays are cached per camera model and stride (up to 1M rays each, 16 entries).
    """
    if isinstance(stride_px, bool) or not isinstance(stride_px, int | np.integer) or stride_px < 1:
        raise ConfigError(f"camera_rays: stride_px must be an integer >= 1, got {stride_px!r}")
    s = int(stride_px)
    n_rays = max(camera.width // s, 1) * max(camera.height // s, 1)
    rays_cam = (
        _cached_pixel_rays(camera, s) if n_rays <= _RAY_CACHE_MAX_RAYS else _pixel_rays(camera, s)
    )
    # R @ ray without a BLAS matmul: OpenBLAS threads keep spinning after a call and would
    # compete with the numba threads of the kernel that runs next (measured: 60% slower).
    rot = grid_from_camera.rotation
    directions = (
        rays_cam[:, 0:1] * rot[:, 0] + rays_cam[:, 1:2] * rot[:, 1] + rays_cam[:, 2:3] * rot[:, 2]
    )
    return np.array(grid_from_camera.translation, dtype=np.float64), np.ascontiguousarray(
        directions
    )


@dataclass(frozen=True, eq=False)
class CameraVisibility:
    """Occ3D's camera mask: ``mask`` (nx, ny, nz) uint8, 1 where some camera ray reached the
    voxel (passed through it, or stopped in it as the first occupied voxel on its way).

    Per ray: ``n_blocked`` stopped at an occupied voxel, ``n_through`` left the grid without
    meeting one, ``n_missed`` never met the grid, ``n_invalid`` had a non-finite direction (a
    pixel outside the lens model's valid range). ``strides_px``: the stride used per camera.
    """

    spec: GridSpec
    mask: npt.NDArray[np.uint8]
    n_rays: int
    n_blocked: int
    n_through: int
    n_missed: int
    n_invalid: int
    strides_px: tuple[int, ...]


def camera_visibility(
    occupied: npt.ArrayLike,
    cameras: Sequence[tuple[CameraModel, Transform]],
    spec: GridSpec | None = None,
    *,
    stride_px: int | None = None,
    ray_spacing_voxels: float = 0.5,
    what: str = "camera_visibility",
) -> CameraVisibility:
    """Voxels the cameras can see, given ``occupied`` (nx, ny, nz) (non-zero = occupied).

    ``cameras``: ``(CameraModel, grid_from_camera)`` pairs (camera frame x right, y down, z
    forward). From each camera centre a ray is cast through its pixels (``camera_rays``) and
    walked through the grid: every voxel it passes is observed, and so is the first occupied
    voxel it meets, where it stops; voxels behind that are not observed by this ray. The mask
    is the union over all rays of all cameras.

    Ray density: ``stride_px=1`` casts one ray per pixel, as Occ3D does. ``stride_px=None``
    (default) picks per camera the largest stride whose neighbouring rays are at most
    ``ray_spacing_voxels`` voxels apart at the farthest grid corner from the camera
    (``floor(ray_spacing_voxels * voxel_size_m * f / d_max)``, f the smaller focal length).
    """
    spec = GridSpec() if spec is None else _check_spec(spec, what)
    occ = np.asarray(occupied)
    if occ.shape != spec.shape:
        raise AVFusionError(
            f"{what}: occupied must have the grid's shape {spec.shape}, got {occ.shape}"
        )
    occ_u8 = np.ascontiguousarray(occ != 0).view(np.uint8)
    if not (math.isfinite(ray_spacing_voxels) and ray_spacing_voxels > 0):
        raise ConfigError(
            f"{what}: ray_spacing_voxels must be finite and > 0, got {ray_spacing_voxels}"
        )
    pairs: list[tuple[CameraModel, Transform]] = []
    for k, pair in enumerate(cameras):
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not isinstance(pair[0], CameraModel)
            or not isinstance(pair[1], Transform)
        ):
            raise AVFusionError(f"{what}: camera {k} must be a (CameraModel, Transform) pair")
        pairs.append(pair)
    mask = np.zeros(spec.shape, dtype=np.uint8)
    strides: list[int] = []
    tally = np.zeros(4, dtype=np.int64)  # blocked, through, missed, invalid
    for camera, grid_from_camera in pairs:
        origin = np.asarray(grid_from_camera.translation, dtype=np.float64)
        s = (
            _auto_stride(camera, origin, spec, ray_spacing_voxels)
            if stride_px is None
            else stride_px
        )
        o, dirs = camera_rays(camera, grid_from_camera, s)
        strides.append(int(s))
        n_cam = dirs.shape[0]
        chunks = _n_chunks(n_cam * 4, spec.n_voxels)
        scratch = np.empty((chunks, *spec.shape), dtype=np.uint8)
        ray_end = np.empty(n_cam, dtype=np.int32)
        camera_visibility_kernel(
            o.reshape(1, 3),
            dirs,
            occ_u8,
            spec.lo,
            spec.voxel_size_m,
            spec.inv_voxel,
            scratch,
            mask,
            ray_end,
        )
        tally += np.bincount(np.clip(-ray_end, 0, 3), minlength=4)
    n = int(tally.sum())
    result = CameraVisibility(
        spec, mask, n, int(tally[0]), int(tally[1]), int(tally[2]), int(tally[3]), tuple(strides)
    )
    logger.debug(
        "%s: %d cameras (strides %s px), %d rays: %d blocked, %d through, %d miss the grid, "
        "%d invalid",
        what,
        len(strides),
        strides,
        n,
        result.n_blocked,
        result.n_through,
        result.n_missed,
        result.n_invalid,
    )
    return result


# --------------------------------------------------------------------------------------------
# Points in oriented boxes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PointsInBoxes:
    """Which boxes hold which points.

    ``box_index`` (N,) int32: the lowest index of a box holding the point, -1 for none (and for
    non-finite points). ``counts`` (B,) int64: points in each box (a point in two overlapping
    boxes counts in both). ``mask`` (N, B) bool when asked for: every box holding each point.
    """

    box_index: npt.NDArray[np.int32]
    counts: npt.NDArray[np.int64]
    mask: npt.NDArray[np.bool_] | None


def _per_axis(value: Any, name: str, what: str) -> F64:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ConfigError(
            f"{what}: {name} must be a finite number or three (length, width, height), got {value!r}"
        )
    return arr


def points_in_boxes(
    points: npt.NDArray[np.floating[Any]],
    boxes: Boxes3D,
    *,
    scale: float | Sequence[float] = 1.0,
    margin_m: float | Sequence[float] = 0.0,
    return_mask: bool = False,
    what: str = "points_in_boxes",
) -> PointsInBoxes:
    """Points (N, 3) (float32/float64, in ``boxes.frame``) inside oriented ``boxes``.

    A box holds p when p, in the box's own axes (full 3D rotation), lies within its half-sizes
    enlarged as ``size / 2 * scale + margin_m`` on each axis (closed: the faces count).
    ``scale`` (> 0, the devkit's ``wlh_factor``) and ``margin_m`` (metres per side, may be
    negative as long as every enlarged size stays >= 0) are one number or three, in
    (length, width, height) order. ``return_mask`` adds the (N, B) bool mask.
    """
    pts = _as_points(points, what)
    if not isinstance(boxes, Boxes3D):
        raise AVFusionError(f"{what}: boxes must be Boxes3D, got {type(boxes).__name__}")
    sc = _per_axis(scale, "scale", what)
    if np.any(sc <= 0):
        raise ConfigError(f"{what}: scale must be > 0, got {sc.tolist()}")
    margin = _per_axis(margin_m, "margin_m", what)
    half = np.ascontiguousarray(boxes.size * 0.5 * sc + margin)
    if np.any(half < 0) or not np.all(np.isfinite(half)):
        bad = int(np.argmax(np.any(~(half >= 0), axis=1)))
        raise ConfigError(
            f"{what}: box {bad} (size {boxes.size[bad].tolist()}) has a negative or non-finite "
            f"enlarged half-size {half[bad].tolist()} (scale {sc.tolist()}, margin_m {margin.tolist()})"
        )
    n = pts.shape[0]
    n_boxes = len(boxes)
    box_from_frame = np.ascontiguousarray(boxes.rotation_matrices().transpose(0, 2, 1))
    centers = np.ascontiguousarray(boxes.center, dtype=np.float64)
    # xy bin size: about one typical box (each box then lands in ~4 bins, each point tests few)
    cell_m = float(np.median(2.0 * np.max(half[:, :2], axis=1))) if n_boxes else 1.0
    cell_m = max(cell_m, 0.5)
    chunks = max(1, min(numba.get_num_threads(), n // 1024 + 1))
    box_index = np.empty(n, dtype=np.int32)
    mask = np.zeros((n, n_boxes) if return_mask else (0, 0), dtype=np.bool_)
    counts = np.empty(n_boxes, dtype=np.int64)
    scratch = np.empty((chunks, n_boxes), dtype=np.int64)
    points_in_boxes_kernel(
        pts, centers, box_from_frame, half, cell_m, box_index, mask, counts, scratch
    )
    return PointsInBoxes(box_index, counts, mask if return_mask else None)
