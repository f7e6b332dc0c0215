"""Occupancy ground truth for one keyframe, Occ3D-nuScenes style, and its evaluation.

``occupancy_for_sample`` turns the sweeps gathered around a keyframe (``aggregate.py``) into:

* ``semantics`` (nx, ny, nz) uint8: a voxel holding at least ``min_points`` aggregated points is
  occupied; its class is the majority class of its labelled points; an occupied voxel with no
  labelled point takes the class of the nearest voxel that has one (within
  ``label_radius_m``), else 0 ``others``. The interior of every labelled box is filled with
  the box's class (voxel centre inside the box), so objects are solid rather than shells.
  Everything else is 17 ``free``.
* ``mask_lidar`` uint8 0/1: voxels a LiDAR ray crossed or ended in (every aggregated return,
  cast from the sensor origin it was seen from, at the time it was seen), plus the occupied
  voxels that hold points. Never reached → 0 (unobserved).
* ``mask_camera`` uint8 0/1: Occ3D's camera visibility: rays from every camera centre through
  its pixels stop at the first occupied voxel; the voxels passed and that first one are
  observed (``voxel.camera_visibility``; the keyframe images' poses).

The grid is ``GridSpec`` (default Occ3D's: [-40, -40, -1, 40, 40, 5.4] m, 0.4 m, 200×200×16) in
the ego frame at the keyframe's LiDAR time. ``labels.npz`` is written with fixed zip
timestamps, so the same input gives byte-identical files.

``OctoMapParams`` / ``log_odds`` add an OctoMap-style probabilistic grid from the ray counts.
``evaluate_occupancy`` scores a prediction against a truth within a mask (Occ3D's metric:
per-class IoU and mIoU over the 17 semantic classes, plus occupied-vs-free IoU and the
precision of free space).
"""

from __future__ import annotations

import io
import logging
import math
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, ConfigError
from avfusion.fusion.aggregate import (
    OCC3D_CLASSES,
    UNLABELLED,
    AggregatedSweeps,
    AggregationOptions,
    aggregate_keyframe,
)
from avfusion.fusion.kernels import fill_boxes_kernel
from avfusion.fusion.voxel import (
    OCC3D_FREE_LABEL,
    OCC3D_NUM_CLASSES,
    GridSpec,
    camera_visibility,
    cast_rays,
    voxelize,
)
from avfusion.runner import FrameResult, FrameTask
from avfusion.types import Boxes3D

__all__ = [
    "OccupancyGT",
    "OccupancyJob",
    "OccupancyMetrics",
    "OccupancyOptions",
    "OctoMapParams",
    "confusion_matrix",
    "evaluate_occupancy",
    "keyframe_cameras",
    "labels_npz_bytes",
    "log_odds",
    "metrics_from_confusion",
    "occupancy_for_sample",
    "occupancy_from_aggregate",
]

logger = logging.getLogger(__name__)

#: Occ3D classes from driveable_surface (11) on are ground and static scenery ("stuff").
_FIRST_STUFF_CLASS = 11


@dataclass(frozen=True)
class OccupancyOptions:
    """Occupancy ground-truth settings (defaults: Occ3D-nuScenes).

    ``grid``: the voxel grid in the keyframe ego frame. ``aggregation``: which sweeps and how
    (``AggregationOptions``; ``sweeps`` = K for ±K). ``min_points``: points for a voxel to be
    occupied. ``fill_boxes``: fill labelled boxes' interiors with their class.
    ``label_radius_m``: how far an occupied voxel without labelled points looks for the class
    of a labelled one. ``cameras``: camera channels for the camera mask (None: every camera
    and thermal camera of the keyframe; empty: no camera mask, all zeros).
    ``camera_stride_px``: ray density of the camera mask (None: automatic, see
    ``voxel.camera_visibility``; 1: one ray per pixel as Occ3D).
    """

    grid: GridSpec = field(default_factory=GridSpec.occ3d)
    aggregation: AggregationOptions = field(default_factory=AggregationOptions)
    min_points: int = 1
    fill_boxes: bool = True
    label_radius_m: float = 3.0
    cameras: tuple[str, ...] | None = None
    camera_stride_px: int | None = None
    static_speed_mps: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.grid, GridSpec):
            raise ConfigError(
                f"OccupancyOptions.grid must be a GridSpec, got {type(self.grid).__name__}"
            )
        if not isinstance(self.aggregation, AggregationOptions):
            raise ConfigError("OccupancyOptions.aggregation must be an AggregationOptions")
        if (
            isinstance(self.min_points, bool)
            or not isinstance(self.min_points, int)
            or self.min_points < 1
        ):
            raise ConfigError(
                f"OccupancyOptions.min_points must be an integer >= 1, got {self.min_points!r}"
            )
        if not (math.isfinite(self.label_radius_m) and self.label_radius_m >= 0):
            raise ConfigError(
                f"OccupancyOptions.label_radius_m must be finite and >= 0, got {self.label_radius_m!r}"
            )

    @property
    def sweeps(self) -> int:
        return self.aggregation.sweeps

    def with_sweeps(self, sweeps: int) -> OccupancyOptions:
        return replace(self, aggregation=replace(self.aggregation, sweeps=sweeps))

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (what the manifest records, to tell runs apart)."""
        g, a = self.grid, self.aggregation
        return {
            "grid": {"range_min_m": list(g.lo), "range_max_m": list(g.hi),
                     "voxel_size_m": g.voxel_size_m, "shape": list(g.shape)},
            "aggregation": {"sweeps": a.sweeps, "lidar": a.lidar, "deskew": a.deskew,
                            "time_slices": a.time_slices, "box_margin_m": list(a.box_margin_m),
                            "track_tolerance_s": a.track_tolerance_s, "pose_tolerance_s": a.pose_tolerance_s,
                            "ego_box_m": list(a.ego_box_m), "ground_band_m": a.ground_band_m,
                            "snap_to_box": a.snap_to_box, "repair_boxes": a.repair_boxes,
                            "box_outlier_m": a.box_outlier_m, "min_class_points": a.min_class_points},
            "min_points": self.min_points, "fill_boxes": self.fill_boxes,
            "label_radius_m": self.label_radius_m,
            "cameras": None if self.cameras is None else list(self.cameras),
            "camera_stride_px": self.camera_stride_px,
        }  # fmt: skip


@dataclass(frozen=True, eq=False)
class OccupancyGT:
    """One keyframe's occupancy ground truth (arrays (nx, ny, nz) uint8) and what made it.

    ``stats``: point counts of the aggregation, voxel counts per class, rays cast, cameras
    used, and seconds per stage.
    """

    sample_token: str
    spec: GridSpec
    semantics: npt.NDArray[np.uint8]
    mask_lidar: npt.NDArray[np.uint8]
    mask_camera: npt.NDArray[np.uint8]
    world_from_grid: Transform
    stats: dict[str, Any] = field(default_factory=dict)

    def npz_bytes(self) -> bytes:
        return labels_npz_bytes(self.semantics, self.mask_lidar, self.mask_camera)


def labels_npz_bytes(
    semantics: npt.NDArray[np.uint8],
    mask_lidar: npt.NDArray[np.uint8],
    mask_camera: npt.NDArray[np.uint8],
) -> bytes:
    """Occ3D ``labels.npz`` (compressed; ``np.load`` reads it) with fixed zip timestamps, so
    the bytes depend on the arrays only."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in (("semantics", semantics), ("mask_lidar", mask_lidar),
                          ("mask_camera", mask_camera)):  # fmt: skip
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr, dtype=np.uint8),
                                      allow_pickle=False)  # fmt: skip
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


def _fill_boxes(
    semantics: npt.NDArray[np.uint8],
    boxes: Boxes3D,
    spec: GridSpec,
    keep_out: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], int]:
    """Voxels a box overlaps (exact oriented-box/voxel test) get the box's class
    (``boxes.attrs["occ3d"]``), except ``keep_out`` voxels; returns the filled mask and the
    number of boxes that reached the grid."""
    filled = np.zeros(spec.shape, dtype=np.uint8)
    if len(boxes) == 0:
        return filled.astype(bool), 0
    fill_boxes_kernel(
        spec.lo, spec.voxel_size_m, np.ascontiguousarray(boxes.center),
        np.ascontiguousarray(boxes.rotation_matrices()), np.ascontiguousarray(boxes.size * 0.5),
        np.asarray(boxes.attrs["occ3d"], dtype=np.uint8), np.ascontiguousarray(keep_out).view(np.uint8),
        semantics, filled,
    )  # fmt: skip
    corners = boxes.corners().reshape(-1, 3)
    inside = np.all((corners >= spec.lo) & (corners < spec.hi), axis=1).reshape(len(boxes), 8)
    return filled.astype(bool), int(inside.any(axis=1).sum())


def _propagate_labels(
    semantics: npt.NDArray[np.uint8],
    unresolved: npt.NDArray[np.bool_],
    labelled: npt.NDArray[np.bool_],
    spec: GridSpec,
    radius_m: float,
) -> int:
    """Occupied voxels without a labelled point take the class of the nearest labelled voxel
    within ``radius_m`` (ties: the lowest linear index), else 0 ``others``. Returns how many
    found a neighbour."""
    todo = np.argwhere(unresolved)
    if todo.size == 0:
        return 0
    have = np.argwhere(labelled)
    semantics[unresolved] = 0
    if have.size == 0 or radius_m <= 0:
        return 0
    tree = cKDTree(have.astype(np.float64))
    dist, nearest = tree.query(todo.astype(np.float64), k=1,
                               distance_upper_bound=radius_m / spec.voxel_size_m + 1e-9)  # fmt: skip
    ok = np.isfinite(dist)
    src = have[nearest[ok]]
    dst = todo[ok]
    semantics[dst[:, 0], dst[:, 1], dst[:, 2]] = semantics[src[:, 0], src[:, 1], src[:, 2]]
    return int(ok.sum())


def occupancy_from_aggregate(
    agg: AggregatedSweeps,
    cameras: Sequence[tuple[str, CameraModel, Transform]],
    options: OccupancyOptions | None = None,
) -> OccupancyGT:
    """Ground truth from gathered points. ``cameras``: (name, model, grid_from_camera)."""
    opts = options or OccupancyOptions()
    spec = opts.grid
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # one pass: points per voxel (all) and the majority class of the labelled ones
    occ_vox = voxelize(agg.points, spec, agg.labels, unlabelled=UNLABELLED,
                       empty_label=OCC3D_FREE_LABEL, what=f"occupancy {agg.sample_token}")  # fmt: skip
    if occ_vox.semantics is None:
        raise AVFusionError(f"occupancy {agg.sample_token}: voxelisation gave no semantics")
    occupied = occ_vox.counts >= opts.min_points
    semantics = np.full(spec.shape, OCC3D_FREE_LABEL, dtype=np.uint8)
    labelled = occupied & (occ_vox.semantics != OCC3D_FREE_LABEL)
    semantics[labelled] = occ_vox.semantics[labelled]
    found = _propagate_labels(semantics, occupied & ~labelled, labelled, spec, opts.label_radius_m)
    timings["voxelize_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # every ray once: the keyframe sweep's on their own (box carving of moving objects needs
    # them apart), the other sweeps' added to them
    kf = agg.sweep == agg.sweep_tokens.index(agg.keyframe_token)
    kf_rays = cast_rays(agg.ray_end[kf], agg.ray_origin[kf], spec,
                        what=f"occupancy keyframe rays {agg.sample_token}")  # fmt: skip
    other = cast_rays(agg.ray_end[~kf], agg.ray_origin[~kf], spec,
                      what=f"occupancy rays {agg.sample_token}")  # fmt: skip
    free, hits = kf_rays.free + other.free, kf_rays.hits + other.hits
    mask_lidar = ((free > 0) | (hits > 0) | occupied).astype(np.uint8)
    timings["raycast_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    filled = np.zeros(spec.shape, dtype=np.bool_)
    boxes_in_grid = 0
    if opts.fill_boxes and len(agg.boxes):
        # A box is filled where it overlaps a voxel, except where the data say otherwise:
        # voxels whose points are ground or static scenery, and space that rays crossed without
        # a return in it (box corners the object does not fill: under a car's body, beside its
        # cabin). Static boxes are carved by the rays of every sweep; moving ones only by the
        # keyframe sweep's (other sweeps saw the space before or after the object was there).
        stuff = labelled & (semantics >= _FIRST_STUFF_CLASS) & (semantics != OCC3D_FREE_LABEL)
        speed = (
            np.linalg.norm(np.nan_to_num(agg.boxes.velocity[:, :2], nan=np.inf), axis=1)
            if agg.boxes.velocity is not None
            else np.full(len(agg.boxes), np.inf)
        )
        static = speed <= opts.static_speed_mps
        for sel, (f_cnt, h_cnt) in (
            (static, (free, hits)),
            (~static, (kf_rays.free, kf_rays.hits)),
        ):
            if sel.any():
                keep_out = stuff | ((f_cnt > 0) & (h_cnt == 0))
                f, n = _fill_boxes(semantics, agg.boxes.select(sel), spec, keep_out)
                filled |= f
                boxes_in_grid += n
    timings["fill_boxes_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    solid = semantics != OCC3D_FREE_LABEL
    if cameras:
        vis = camera_visibility(solid, [(m, g) for _, m, g in cameras], spec,
                                stride_px=opts.camera_stride_px)  # fmt: skip
        mask_camera = vis.mask
        n_camera_rays = vis.n_rays
    else:
        mask_camera = np.zeros(spec.shape, dtype=np.uint8)
        n_camera_rays = 0
    timings["camera_mask_s"] = time.perf_counter() - t0

    per_class = np.bincount(semantics.ravel(), minlength=OCC3D_NUM_CLASSES + 1)
    stats: dict[str, Any] = {
        "points": dict(agg.counts),
        "points_in_grid": occ_vox.n_inside,
        "points_outside_grid": occ_vox.n_outside,
        "sweeps": len(agg.sweep_tokens),
        "occupied_voxels": int(solid.sum()),
        "voxels_from_points": int(occupied.sum()),
        "voxels_filled_from_boxes": int((filled & ~occupied).sum()),
        "voxels_labelled_by_neighbour": found,
        "voxels_others_without_label": int((occupied & ~labelled).sum()) - found,
        "boxes": len(agg.boxes),
        "boxes_in_grid": boxes_in_grid,
        "voxels_per_class": {OCC3D_CLASSES[c]: int(per_class[c]) for c in range(len(per_class)) if per_class[c]},
        "lidar_rays": kf_rays.n_rays + other.n_rays,
        "lidar_observed_voxels": int(mask_lidar.sum()),
        "cameras": [name for name, _, _ in cameras],
        "camera_rays": n_camera_rays,
        "camera_observed_voxels": int(mask_camera.sum()),
        "seconds": timings,
    }  # fmt: skip
    return OccupancyGT(agg.sample_token, spec, semantics, mask_lidar, mask_camera,
                       agg.world_from_grid, stats)  # fmt: skip


def keyframe_cameras(
    log: Any, sample: str | int, world_from_grid: Transform, names: Sequence[str] | None = None
) -> list[tuple[str, CameraModel, Transform]]:
    """(name, camera model, grid_from_camera) of the keyframe's cameras: each at its own
    capture pose (``world_from_ego`` of its image), all in the grid frame."""
    data = log.keyframe_data(sample)
    grid_from_world = world_from_grid.inverse()
    out = []
    for name in sorted(data) if names is None else names:
        if name not in data:
            raise AVFusionError(
                f"sample {log.sample_tokens[log.sample_index(sample)]}: no keyframe of camera '{name}'"
            )
        image = log.load_image(data[name]) if log.sensors[name].is_image else None
        if image is None:
            if names is not None:
                raise ConfigError(
                    f"occupancy camera '{name}' is a {log.sensors[name].modality} sensor, not a camera"
                )
            continue
        if image.world_from_ego is None:
            raise AVFusionError(f"camera '{name}' keyframe image has no ego pose")
        grid_from_cam = grid_from_world @ image.world_from_ego @ image.sensor.ego_from_sensor
        out.append((name, image.sensor.camera, grid_from_cam))
    return out


def occupancy_for_sample(
    log: Any, sample: str | int, options: OccupancyOptions | None = None
) -> OccupancyGT:
    """Occ3D-style ground truth for keyframe ``sample`` (token or index) of a nuScenes-style
    log: aggregate ±K sweeps, voxelise, fill boxes, cast LiDAR rays, cast camera rays."""
    opts = options or OccupancyOptions()
    t0 = time.perf_counter()
    agg = aggregate_keyframe(log, sample, opts.aggregation)
    t_agg = time.perf_counter() - t0
    cams = keyframe_cameras(log, sample, agg.world_from_grid, opts.cameras)
    gt = occupancy_from_aggregate(agg, cams, opts)
    gt.stats["seconds"] = {"aggregate_s": t_agg, **gt.stats["seconds"]}
    return gt


# --------------------------------------------------------------------------------------------
# OctoMap-style log-odds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OctoMapParams:
    """OctoMap's sensor model (Hornung et al. 2013; the library's defaults): a hit adds
    ``logit(prob_hit)``, a pass-through adds ``logit(prob_miss)``, and the log-odds are clamped
    to ``[logit(clamp_min), logit(clamp_max)]``. A voxel is occupied above
    ``logit(occupancy_threshold)``."""

    prob_hit: float = 0.7
    prob_miss: float = 0.4
    clamp_min: float = 0.1192
    clamp_max: float = 0.971
    occupancy_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("prob_hit", "prob_miss", "clamp_min", "clamp_max", "occupancy_threshold"):
            v = getattr(self, name)
            if not (0.0 < v < 1.0):
                raise ConfigError(f"OctoMapParams.{name} must be in (0, 1), got {v!r}")
        if not (self.prob_miss < 0.5 < self.prob_hit and self.clamp_min < self.clamp_max):
            raise ConfigError(
                "OctoMapParams: need prob_miss < 0.5 < prob_hit and clamp_min < clamp_max"
            )


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def log_odds(
    hits: npt.ArrayLike, free: npt.ArrayLike, params: OctoMapParams | None = None
) -> npt.NDArray[np.float32]:
    """Per-voxel log-odds of occupancy from hit and pass-through counts (``RayCasting``).

    OctoMap clamps after every single update, so its result depends on the order of the rays;
    from counts the order is unknown, and this applies all misses first and then all hits, each
    clamped (the order OctoMap's ``insertPointCloud`` uses within one scan: free cells first,
    then occupied). Unobserved voxels stay 0 (probability 0.5).
    """
    p = params or OctoMapParams()
    h = np.asarray(hits, dtype=np.float64)
    f = np.asarray(free, dtype=np.float64)
    if h.shape != f.shape:
        raise AVFusionError(f"log_odds: hits {h.shape} and free {f.shape} must have one shape")
    lo, hi = _logit(p.clamp_min), _logit(p.clamp_max)
    out = np.clip(f * _logit(p.prob_miss), lo, hi)
    out = np.where(h > 0, np.clip(out + h * _logit(p.prob_hit), lo, hi), out)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OccupancyMetrics:
    """Scores of a prediction against a truth inside a mask.

    ``iou_per_class`` (17,): IoU of each semantic class (NaN where the class is in neither);
    ``miou``: their mean over the classes present in the truth or the prediction (Occ3D's
    metric averages over all 17 classes of a whole dataset; on one scene the absent ones would
    count as 0 or be undefined). ``occupied_iou``: IoU of occupied vs free, ignoring class.
    ``free_precision``: of the voxels predicted free, the share free in truth; ``free_recall``
    the other way round. ``n_voxels``: voxels inside the mask.
    """

    iou_per_class: npt.NDArray[np.float64]
    miou: float
    occupied_iou: float
    free_precision: float
    free_recall: float
    n_voxels: int
    voxels_per_class: npt.NDArray[np.int64]

    def table(self) -> str:
        """A fixed-width per-class table (class, truth voxels, IoU)."""
        lines = [f"{'class':<22}{'truth voxels':>13}{'IoU':>8}"]
        for c in range(OCC3D_NUM_CLASSES):
            iou = self.iou_per_class[c]
            if not np.isnan(iou):
                lines.append(
                    f"{OCC3D_CLASSES[c]:<22}{int(self.voxels_per_class[c]):>13}{iou:>8.3f}"
                )
        lines.append(f"{'mIoU':<35}{self.miou:>8.3f}")
        lines.append(f"{'occupied IoU':<35}{self.occupied_iou:>8.3f}")
        lines.append(f"{'free precision':<35}{self.free_precision:>8.3f}")
        lines.append(f"{'free recall':<35}{self.free_recall:>8.3f}")
        return "\n".join(lines)


def confusion_matrix(
    predicted: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]:
    """(18, 18) counts of (truth class, predicted class) over the voxels inside ``mask``
    (non-zero = scored; None: everywhere); class 17 is free. Sum them over frames and pass the
    sum to ``metrics_from_confusion`` for a dataset-level score (Occ3D's way)."""
    pred = np.asarray(predicted)
    true = np.asarray(truth)
    if pred.shape != true.shape:
        raise AVFusionError(f"evaluate_occupancy: shapes differ: {pred.shape} vs {true.shape}")
    m = np.ones(pred.shape, dtype=bool) if mask is None else np.asarray(mask) != 0
    if m.shape != pred.shape:
        raise AVFusionError(f"evaluate_occupancy: mask shape {m.shape} is not {pred.shape}")
    p, t = pred[m].astype(np.int64), true[m].astype(np.int64)
    n_cls = OCC3D_NUM_CLASSES + 1
    if p.size and (p.max() >= n_cls or t.max() >= n_cls):
        raise AVFusionError(f"evaluate_occupancy: class ids must be 0..{n_cls - 1}")
    return np.bincount(t * n_cls + p, minlength=n_cls * n_cls).reshape(n_cls, n_cls)


def metrics_from_confusion(conf: npt.ArrayLike) -> OccupancyMetrics:
    """``OccupancyMetrics`` of an (18, 18) truth × prediction confusion matrix."""
    c = np.asarray(conf, dtype=np.int64)
    n_cls = OCC3D_NUM_CLASSES + 1
    if c.shape != (n_cls, n_cls):
        raise AVFusionError(
            f"metrics_from_confusion: expected a ({n_cls}, {n_cls}) matrix, got {c.shape}"
        )
    inter = np.diag(c).astype(np.float64)
    union = c.sum(axis=0) + c.sum(axis=1) - np.diag(c)
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)[:OCC3D_NUM_CLASSES]
    miou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
    free = OCC3D_FREE_LABEL
    occ_tp = int(c[:free, :free].sum())
    occ_union = int(c.sum() - c[free, free])
    pred_free, true_free = int(c[:, free].sum()), int(c[free, :].sum())
    return OccupancyMetrics(
        iou, miou, occ_tp / occ_union if occ_union else float("nan"),
        int(c[free, free]) / max(pred_free, 1), int(c[free, free]) / max(true_free, 1),
        int(c.sum()), c.sum(axis=1)[:OCC3D_NUM_CLASSES].astype(np.int64),
    )  # fmt: skip


def evaluate_occupancy(
    predicted: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike | None = None
) -> OccupancyMetrics:
    """Compare two Occ3D ``semantics`` grids (17 = free) inside ``mask`` (non-zero = scored;
    None: everywhere)."""
    return metrics_from_confusion(confusion_matrix(predicted, truth, mask))


# --------------------------------------------------------------------------------------------
# The dataset job (runner.py runs it locally or on Ray)
# --------------------------------------------------------------------------------------------

#: Logs opened in this process, by (path, scene) (each worker process opens its own, once).
_OPEN_LOGS: dict[tuple[str, str | None], Any] = {}


@dataclass(frozen=True)
class OccupancyJob:
    """Occupancy ground truth for every keyframe of a nuScenes-style log, as a ``runner``
    job: one task per sample, writing Occ3D's ``gts/<scene name>/<sample token>/labels.npz``.

    Picklable (a path and options); each worker opens the log itself, once. ``scene``
    restricts to one scene (name or token); ``limit`` to the first N keyframes.
    """

    log_path: str
    options: OccupancyOptions = field(default_factory=OccupancyOptions)
    scene: str | None = None
    limit: int | None = None
    name: str = "occupancy"

    def _log(self) -> Any:
        key = (self.log_path, self.scene)
        log = _OPEN_LOGS.get(key)
        if log is None:
            from avfusion.io.nuscenes import NuScenesLog

            log = _OPEN_LOGS[key] = NuScenesLog(self.log_path, scene=self.scene)
        return log

    def config(self) -> dict[str, Any]:
        # which frames (scene, limit) is a selection, not part of what a frame's output depends on
        return {"log": str(Path(self.log_path).resolve()), "options": self.options.describe()}

    def tasks(self) -> list[FrameTask]:
        log = self._log()
        tokens = log.sample_tokens[: self.limit] if self.limit is not None else log.sample_tokens
        return [FrameTask(t, {"scene": str(log.scene_of(t)["name"])}) for t in tokens]

    def __call__(self, task: FrameTask) -> FrameResult:
        log = self._log()
        gt = occupancy_for_sample(log, task.key, self.options)
        scene = task.meta.get("scene") or str(log.scene_of(task.key)["name"])
        info = {k: v for k, v in gt.stats.items() if k != "seconds"}
        info["scene"] = scene
        return FrameResult(task.key, {f"gts/{scene}/{task.key}/labels.npz": gt.npz_bytes()}, info)
