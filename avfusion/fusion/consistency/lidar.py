"""3D boxes against the LiDAR returns in and around them, and LiDAR clusters inside no box.

Two checks, each returning a :class:`~.findings.CheckResult` with one item per box (or cluster):

:func:`check_box_lidar` (kinds ``box_empty``, ``box_sparse``, ``box_undersized``,
``box_oversized``, ``box_offset``, ``box_heading_flipped``)
    The keyframe LiDAR sweep is deskewed (ego motion, per-point times) to its stamp and put in
    the ego frame; points near a box are also moved back along the box's velocity to the sample
    time (object motion within the 50 ms sweep). Then, per box:

    * **Expected returns** come from the beam geometry, not a constant: every beam (ring
      elevation, estimated from the sweep's ``ring`` attribute) × azimuth step that would hit
      the box if it were a solid cuboid is cast (slab test), and looked up in a range image of
      the sweep: a ray whose return lies in front of the box is *occluded*, one whose return lies
      inside the box (or just before it) *hits*, one with no return or a return beyond the box's
      exit *sees through*. ``expected = hits + see-through`` (the unoccluded beams).
      ``box_empty``: no return inside and ``expected >= min_expected_empty`` with most unoccluded
      rays seeing through; ``box_sparse``: returns < ``sparse_ratio`` × expected with
      ``expected >= min_expected_sparse`` and most unoccluded rays seeing through.
    * **Fit** (boxes with at least ``min_fit_points`` object returns, or, for a box few beams
      can reach, at least ``fit_expected_fraction`` of its expected returns and never fewer
      than ``min_fit_floor``: a small or half-hidden object far away is well observed by
      23 returns when the beam model expects 33; such a *sparse fit* reports only
      ``box_offset``, see below): the object's returns are
      the points within the box enlarged by ``shell_m`` horizontally, above the ground band
      (``ground_band_m`` over the box bottom) and inside no other box (a return in the shells
      of two boxes goes to the nearer one). A box whose bottom lies more than
      ``sunk_tolerance_m`` below the road measured around it (a low quantile of the ground
      returns in a ``ground_ring_m`` ring beyond the shell, never above the returns inside the
      footprint) reaches into the road: its ground band starts at the measured ground
      (``ground_m``). Per horizontal face the
      signed discrepancy ``e`` (object extreme minus face, outward positive) is measured on the
      faces whose position the sweep actually pins: a face seen head-on (its normal toward the
      sensor) pins its own axis exactly; a face seen side-on pins the two ends of the
      perpendicular axis only up to the azimuth sampling (half a step at that range is added).
      A face nobody sees gives no figure (occlusion by the object itself): LiDAR sees only the
      near faces. Three hypotheses are fitted by least squares to the pinned ``e``: a uniform
      scale error ``k`` (``e = k·size/2`` on every end), a centre offset ``(dx, dy)``
      (``e = ±d`` on opposite ends), and the clean box (``e = 0``). A few returns (fewer than
      ``min_face_support``) beyond the face and a gap, in front of a supported face, are not the
      end. With only two perpendicular faces seen head-on the offset fits any figures exactly;
      there the scale model is kept within ``face_margin_m`` (natural face margins) instead of
      ``fit_noise_m``. The better of scale/offset
      must explain the figures clearly better than the clean box (RMS residual below
      ``explain_ratio`` of the clean RMS) and exceed the magnitude thresholds:
      ``|k| >= size_ratio`` → ``box_undersized`` (k > 0) / ``box_oversized`` (k < 0);
      offset ``>= offset_m`` → ``box_offset``. Protrusions are always evidence; margins only on
      pinned faces. A sparse fit (fewer than ``min_fit_points`` returns) reports no size error:
      its extremes are as coarse as the beam sampling of a small object (a thin barrier in a
      thicker box, a bicycle rack's open end look like a box 10-20 % too large), while a
      centre offset of ``offset_m`` or more moves the returns well past a face.
    * **Heading**: the motion direction of the track (centre difference to the neighbouring
      keyframes of the same instance in the labels under test, else the box ``velocity``
      column) against the box's x axis: a box moving faster than ``heading_min_speed_mps``
      against its heading (cosine below ``-heading_cos``) is ``box_heading_flipped``. Boxes
      with no motion evidence are not judged for heading (counted in ``skipped``).

:func:`check_unlabelled` (kind ``missing_box``)
    Ground removal on a grid of ``ground_cell_m`` cells (a point is ground when it lies within
    ``ground_band_m`` of its cell's lowest return, or below ``ground_max_z_m`` in the ego frame
    relative to the cell floor), Euclidean clustering of the rest (voxel connectivity,
    ``cluster_m``), then every cluster with at least ``min_cluster_points`` points, a height of at
    least ``min_cluster_height_m`` and a footprint below ``max_cluster_extent_m`` that has fewer
    than ``covered_fraction`` of its points inside the boxes enlarged by ``box_margin_m`` is a
    probable missing label, reported with its distance, size and point count.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.findings import (
    CheckedItem,
    CheckResult,
    Finding,
    LabelSet,
    require_fraction,
    require_positive,
)
from avfusion.fusion.deskew import POINT_TIME_ATTR, deskew_cloud
from avfusion.types import Boxes3D

__all__ = [
    "BoxLidarMeasure",
    "LidarCheckOptions",
    "LidarScene",
    "UnlabelledOptions",
    "check_box_lidar",
    "check_unlabelled",
    "class_envelopes",
    "cluster_points",
    "lidar_scene",
    "make_scene",
    "measure_boxes",
    "segment_ground",
    "track_gaps",
    "track_velocity",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
LIDAR = "LIDAR_TOP"


@dataclass(frozen=True)
class LidarCheckOptions:
    """Thresholds of :func:`check_box_lidar` (metres, m/s, ratios).

    A box is fitted with ``min_fit_points`` object returns, or with ``fit_expected_fraction``
    of its expected returns (the beam model) when that is fewer, never below
    ``min_fit_floor``; fits below ``min_fit_points`` (sparse) report offsets only.
    """

    lidar: str = LIDAR
    shell_m: float = 0.7
    ground_band_m: float = 0.3
    other_box_margin_m: float = 0.1
    ground_ring_m: float = 1.5
    ground_cell_m: float = 2.0
    min_ground_points: int = 20
    ground_quantile: float = 0.1
    sunk_tolerance_m: float = 0.2
    min_fit_points: int = 25
    min_fit_floor: int = 15
    fit_expected_fraction: float = 0.5
    min_pinned_ends: int = 2
    face_support_m: float = 0.1
    extreme_quantile: float = 0.005
    gap_m: float = 0.3
    side_pinned_weight: float = 0.25
    free_tolerance_m: float = 0.06
    seen_empty_fraction: float = 0.25
    min_slab_rays: int = 5
    max_blocked_fraction: float = 0.85
    min_face_support: int = 4
    face_cos: float = 0.25
    size_ratio: float = 0.075
    offset_m: float = 0.25
    explain_ratio: float = 0.5
    fit_noise_m: float = 0.04
    face_margin_m: float = 0.08
    min_discrepancy_m: float = 0.1
    sparse_ratio: float = 0.15
    min_expected_empty: int = 10
    min_expected_sparse: int = 40
    see_through_min: float = 0.7
    min_class_fits: int = 8
    class_end_prior: tuple[tuple[str, float, float], ...] | None = None
    heading_min_speed_mps: float = 1.0
    heading_cos: float = 0.5
    max_rays_per_box: int = 6000
    elevation_step_deg: float = 1.33
    azimuth_step_deg: float = 0.33

    def __post_init__(self) -> None:
        require_positive(self, "shell_m", "size_ratio", "offset_m", "explain_ratio", "sparse_ratio")
        for name in ("min_fit_points", "min_fit_floor"):
            if getattr(self, name) < 3:
                raise AVFusionError(
                    f"LidarCheckOptions: {name} must be >= 3, got {getattr(self, name)}"
                )
        require_fraction(self, "fit_expected_fraction", zero=False)


@dataclass(frozen=True)
class UnlabelledOptions:
    """Thresholds of :func:`check_unlabelled`."""

    lidar: str = LIDAR
    ground_cell_m: float = 2.0
    ground_band_m: float = 0.3
    cluster_m: float = 0.5
    min_cluster_points: int = 15
    max_bottom_m: float = 0.7
    min_top_m: float = 0.5
    max_top_m: float = 4.0
    max_length_m: float = 12.0
    max_width_m: float = 3.2
    thin_footprint_m: float = 1.0
    thin_max_top_m: float = 2.3
    ground_radius_m: float = 4.0
    size_tolerance_m: float = 0.4
    height_tolerance_m: float = 0.3
    top_tolerance_m: float = 0.45
    min_fill: float = 0.4
    min_beams: int = 2
    min_length_fraction: float = 0.5
    min_lower_half_fraction: float = 0.17
    plane_max_width_m: float = 0.15
    plane_min_length_m: float = 2.2
    max_edge_residual_m: float = 0.15
    max_range_m: float = 50.0
    box_margin_m: float = 0.5

    def __post_init__(self) -> None:
        require_positive(self, "ground_cell_m", "cluster_m", "max_range_m")
        if self.min_cluster_points < 1:
            raise AVFusionError(
                f"UnlabelledOptions: min_cluster_points must be >= 1, got {self.min_cluster_points}"
            )


# -- the sweep -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LidarScene:
    """One keyframe sweep ready for box checks, all in the ego frame at the sweep's stamp.

    ``dt_s`` is each point's capture time minus the stamp (s; zeros without per-point times),
    ``ring`` the beam index (-1 unknown), ``sensor_origin`` the LiDAR origin in the ego frame,
    ``ego_from_sensor_rot``/``_t`` the extrinsic, ``ring_elevation`` (R,) beam elevations (rad)
    and ``azimuth_step`` (rad), ``range_image`` (R, C) the nearest return per beam and azimuth
    bin (inf where none), ``n_dropped`` the non-finite points removed.
    """

    points: F64
    dt_s: F64
    ring: npt.NDArray[np.int64]
    world_from_ego_rot: F64
    world_from_ego_t: F64
    sensor_rot: F64
    sensor_t: F64
    ring_elevation: F64
    azimuth_step: float
    range_image: F64
    n_dropped: int
    t_ns: int

    @property
    def sensor_origin(self) -> F64:
        return self.sensor_t

    def ego_from_world(self, boxes: Boxes3D) -> Boxes3D:
        world_from_ego = Transform(self.world_from_ego_rot, self.world_from_ego_t)
        return boxes.transformed(world_from_ego.inverse(), "ego")


def _beam_model(
    points_sensor: F64, ring: npt.NDArray[np.int64], elev_step: float, az_step: float
) -> tuple[F64, float]:
    """Beam elevations per ring (median of the sweep's returns) and the azimuth step."""
    elev = np.arctan2(points_sensor[:, 2], np.hypot(points_sensor[:, 0], points_sensor[:, 1]))
    if ring.size == 0 or np.all(ring < 0):
        lo, hi = (float(elev.min()), float(elev.max())) if elev.size else (-0.5, 0.2)
        n = max(1, round((hi - lo) / elev_step) + 1)
        return np.asarray(lo + elev_step * np.arange(n), dtype=np.float64), az_step
    n_rings = int(ring.max()) + 1
    out = np.full(n_rings, np.nan)
    for r in range(n_rings):
        sel = ring == r
        if np.any(sel):
            out[r] = float(np.median(elev[sel]))
    # rings without returns (e.g. beams that only see the ego body): inside the fan interpolate,
    # beyond it extrapolate with the median spacing of the rings that have returns
    idx = np.arange(n_rings)
    ok = np.isfinite(out)
    if not ok.any():
        return np.asarray(elev_step * (idx - n_rings + 1), dtype=np.float64), az_step
    first, last = int(idx[ok][0]), int(idx[ok][-1])
    spacing = float(np.median(np.diff(out[ok]) / np.diff(idx[ok]))) if ok.sum() > 1 else elev_step
    filled = np.interp(idx, idx[ok], out[ok])
    filled[:first] = out[first] - spacing * (first - idx[:first])
    filled[last + 1 :] = out[last] + spacing * (idx[last + 1 :] - last)
    # azimuth step: a full turn over the firings of the fullest rings
    counts = np.bincount(ring[ring >= 0], minlength=n_rings)
    firings = float(np.percentile(counts[counts > 0], 95))
    step = 2 * math.pi / firings if firings > 90 else az_step
    return filled, step


def _range_image(
    points_sensor: F64, ring: npt.NDArray[np.int64], ring_elevation: F64, az_step: float
) -> F64:
    """Nearest return per (beam, azimuth step), then the minimum over three neighbouring steps
    (firings are not aligned across turns; a lone empty step is a dropout, not free space)."""
    n_cols = math.ceil(2 * math.pi / az_step)
    img = np.full((ring_elevation.size, n_cols), np.inf)
    rows = _row_of(points_sensor, ring, ring_elevation)
    cols = _col_of(np.arctan2(points_sensor[:, 1], points_sensor[:, 0]), n_cols)
    rng = np.linalg.norm(points_sensor, axis=1)
    ok = rows >= 0
    np.minimum.at(img, (rows[ok], cols[ok]), rng[ok])
    return np.minimum(np.minimum(img, np.roll(img, 1, axis=1)), np.roll(img, -1, axis=1))


def _row_of(points_sensor: F64, ring: npt.NDArray[np.int64], ring_elevation: F64) -> Any:
    if ring.size and np.all(ring >= 0) and int(ring.max()) < ring_elevation.size:
        return ring.astype(np.int64)
    elev = np.arctan2(points_sensor[:, 2], np.hypot(points_sensor[:, 0], points_sensor[:, 1]))
    return np.abs(elev[:, None] - ring_elevation[None, :]).argmin(axis=1).astype(np.int64)


def _col_of(azimuth: F64, n_cols: int) -> npt.NDArray[np.int64]:
    c = np.floor((azimuth + math.pi) / (2 * math.pi) * n_cols).astype(np.int64)
    return np.clip(c, 0, n_cols - 1)


def make_scene(
    points_sensor: npt.ArrayLike,
    ego_from_sensor: Transform,
    world_from_ego: Transform | None = None,
    *,
    ring: npt.ArrayLike | None = None,
    dt_s: npt.ArrayLike | None = None,
    t_ns: int = 0,
    n_dropped: int = 0,
    options: LidarCheckOptions | None = None,
) -> LidarScene:
    """A :class:`LidarScene` from one sweep's (N, 3) sensor-frame points (already deskewed),
    the LiDAR extrinsic and the ego pose; ``ring`` (N,) beam indices (estimated from the
    elevations when absent), ``dt_s`` (N,) capture times relative to the stamp (s).
    Raises ``AVFusionError`` for non-finite points or mismatched attribute lengths."""
    opts = options or LidarCheckOptions()
    pts_s = np.asarray(points_sensor, dtype=np.float64)
    if pts_s.ndim != 2 or pts_s.shape[1] != 3:
        raise AVFusionError(f"make_scene: points must be an (N, 3) array, got {pts_s.shape}")
    bad = ~np.all(np.isfinite(pts_s), axis=1)
    if bad.any():
        raise AVFusionError(
            f"make_scene: {int(bad.sum())} of {pts_s.shape[0]} points are not finite "
            "(drop them first and count them)"
        )
    n = pts_s.shape[0]
    ring_a = np.full(n, -1, np.int64) if ring is None else np.asarray(ring).astype(np.int64)
    dt = np.zeros(n) if dt_s is None else np.asarray(dt_s, dtype=np.float64)
    if ring_a.shape != (n,) or dt.shape != (n,):
        raise AVFusionError(
            f"make_scene: ring and dt_s must have shape ({n},), got {ring_a.shape} and {dt.shape}"
        )
    pose = world_from_ego if world_from_ego is not None else Transform.identity()
    elevations, az_step = _beam_model(
        pts_s, ring_a, math.radians(opts.elevation_step_deg), math.radians(opts.azimuth_step_deg)
    )
    if ring is None and n:
        ring_a = _row_of(pts_s, ring_a, elevations)
    return LidarScene(
        points=np.ascontiguousarray(ego_from_sensor.apply(pts_s), dtype=np.float64),
        dt_s=dt,
        ring=ring_a,
        world_from_ego_rot=np.asarray(pose.rotation, dtype=np.float64),
        world_from_ego_t=np.asarray(pose.translation, dtype=np.float64),
        sensor_rot=np.asarray(ego_from_sensor.rotation, dtype=np.float64),
        sensor_t=np.asarray(ego_from_sensor.translation, dtype=np.float64),
        ring_elevation=elevations,
        azimuth_step=az_step,
        range_image=_range_image(pts_s, ring_a, elevations, az_step),
        n_dropped=n_dropped,
        t_ns=int(t_ns),
    )


_SCENES: OrderedDict[tuple[str, str, str], LidarScene] = OrderedDict()
_SCENE_CACHE_SIZE = 32


def lidar_scene(
    log: Any, sample_token: str, lidar: str = LIDAR, options: LidarCheckOptions | None = None
) -> LidarScene:
    """The keyframe sweep of ``lidar`` for one sample, deskewed, in the ego frame (cached)."""
    opts = options or LidarCheckOptions()
    keyframes = log.keyframe_data(sample_token)  # raises for an unknown sample token
    sd_token = keyframes.get(lidar)
    if sd_token is None:
        raise AVFusionError(
            f"sample {sample_token}: no keyframe of '{lidar}' (channels: {', '.join(sorted(keyframes))})"
        )
    key = (str(getattr(log, "root", id(log))), sd_token, lidar)
    hit = _SCENES.get(key)
    if hit is not None:
        _SCENES.move_to_end(key)
        return hit
    cloud = log.load_points(sd_token, with_lidarseg=False)
    finite = np.all(np.isfinite(cloud.xyz), axis=1)
    n_dropped = int((~finite).sum())
    if n_dropped:
        logger.info("%s sample_data %s: dropped %d non-finite points", lidar, sd_token, n_dropped)
        cloud = cloud.select(finite)
    dt = np.zeros(len(cloud))
    if POINT_TIME_ATTR in cloud.attrs:
        dt = np.asarray(cloud.attrs[POINT_TIME_ATTR], dtype=np.float64) * 1e-9
        try:
            cloud = deskew_cloud(cloud, log.poses, tolerance_ns=60_000_000)
        except AVFusionError as exc:
            logger.info("%s sample_data %s: not deskewed (%s)", lidar, sd_token, exc)
    ring = (
        np.asarray(cloud.attrs["ring"]).astype(np.int64)
        if "ring" in cloud.attrs
        else np.full(len(cloud), -1, np.int64)
    )
    pose = cloud.world_from_ego if cloud.world_from_ego is not None else log.ego_pose(sd_token)
    scene = make_scene(
        np.asarray(cloud.xyz, dtype=np.float64),
        cloud.sensor.ego_from_sensor,
        pose,
        ring=ring,
        dt_s=dt,
        t_ns=int(cloud.t_ns),
        n_dropped=n_dropped,
        options=opts,
    )
    _SCENES[key] = scene
    while len(_SCENES) > _SCENE_CACHE_SIZE:
        _SCENES.popitem(last=False)
    return scene


# -- per-box measurement -----------------------------------------------------------------------


@dataclass(frozen=True)
class BoxLidarMeasure:
    """The figures :func:`check_box_lidar` decides on, for one box (arrays over boxes)."""

    n_inside: npt.NDArray[np.int64]
    n_object: npt.NDArray[np.int64]
    expected: npt.NDArray[np.int64]
    occluded: npt.NDArray[np.int64]
    see_through: npt.NDArray[np.int64]
    #: (B, 4) signed discrepancy of ends +x, -x, +y, -y (outward positive, NaN = not pinned)
    end_error_m: F64
    #: (B, 4) weight of each end in the fits (1 pinned exactly, 0.5 through a side face, 0 none)
    end_weight: F64
    scale_k: F64
    offset_xy_m: F64
    rms_clean_m: F64
    rms_scale_m: F64
    rms_offset_m: F64
    distance_m: F64
    #: (B,) height of the locally measured ground over the box bottom (m; NaN where too few
    #: ground returns around the footprint); above ``sunk_tolerance_m`` the box reaches below
    #: the road and its ground band starts at the measured ground
    ground_m: F64 = field(default_factory=lambda: np.zeros(0))


def _ray_box(origin: F64, dirs: F64, rot: F64, center: F64, half: F64) -> tuple[F64, F64]:
    """Entry and exit distances of unit rays (M, 3) through an oriented box (NaN if missed)."""
    o = rot.T @ (origin - center)
    d = dirs @ rot  # (M, 3) in the box frame
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half[None, :] - o[None, :]) * inv
        t2 = (half[None, :] - o[None, :]) * inv
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= np.maximum(tmin, 0.0)) & np.isfinite(tmin)
    return np.where(hit, np.maximum(tmin, 0.0), np.nan), np.where(hit, tmax, np.nan)


def _cast_beams(
    scene: LidarScene, rot_e: F64, center_e: F64, half: F64, max_rays: int
) -> tuple[int, int, int]:
    """(expected unoccluded returns, occluded rays, see-through rays) of one box."""
    s_rot, s_t = scene.sensor_rot, scene.sensor_t
    rot_s = s_rot.T @ rot_e
    center_s = s_rot.T @ (center_e - s_t)
    signs = np.array(
        [[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64
    )
    corners = center_s + (signs * half) @ rot_s.T
    if np.any(np.all(np.abs(rot_s.T @ (-center_s)) <= half)):
        return 0, 0, 0  # the sensor is inside the box
    az = np.arctan2(corners[:, 1], corners[:, 0])
    el = np.arctan2(corners[:, 2], np.hypot(corners[:, 0], corners[:, 1]))
    az_c = math.atan2(center_s[1], center_s[0])
    rel = (az - az_c + math.pi) % (2 * math.pi) - math.pi
    step = scene.azimuth_step
    az_grid = az_c + np.arange(rel.min(), rel.max() + step, step)
    rows = np.nonzero((scene.ring_elevation >= el.min()) & (scene.ring_elevation <= el.max()))[0]
    if az_grid.size == 0 or rows.size == 0:
        return 0, 0, 0
    total = az_grid.size * rows.size
    if total > max_rays:
        az_grid = az_grid[:: math.ceil(total / max_rays)]
    aa, rr = np.meshgrid(az_grid, rows, indexing="xy")
    aa_f, rr_f = aa.ravel(), rr.ravel()
    ee = scene.ring_elevation[rr_f]
    dirs = np.stack([np.cos(ee) * np.cos(aa_f), np.cos(ee) * np.sin(aa_f), np.sin(ee)], axis=1)
    t_in, t_out = _ray_box(np.zeros(3), dirs, rot_s, center_s, half)
    hit = np.isfinite(t_in)
    n_cols = scene.range_image.shape[1]
    cols = _col_of((aa_f + math.pi) % (2 * math.pi) - math.pi, n_cols)
    measured = scene.range_image[rr_f, cols]
    t_in, t_out, measured, ee = t_in[hit], t_out[hit], measured[hit], ee[hit]
    occluded = measured < t_in - 0.3
    # no return below the horizon is a dropped return (ego body, dark surface), not free space
    unknown = ~np.isfinite(measured) & (ee < 0.0)
    occluded |= unknown
    through = ~occluded & (measured > t_out + 0.3)
    scale = 1.0 if total <= max_rays else total / max(az_grid.size * rows.size, 1)
    n_hit = int(hit.sum())
    return (
        round((n_hit - int(occluded.sum())) * scale),
        round(int(occluded.sum()) * scale),
        round(int(through.sum()) * scale),
    )


def _lookup(scene: LidarScene, points_ego: F64) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Range of ego-frame points from the sensor, the measured range along their beam, and
    whether a beam passes there (inside the vertical fan)."""
    p = (points_ego - scene.sensor_t) @ scene.sensor_rot
    r = np.linalg.norm(p, axis=1)
    el = np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))
    elev = scene.ring_elevation
    row = np.abs(el[:, None] - elev[None, :]).argmin(axis=1)
    spacing = float(np.median(np.abs(np.diff(elev)))) if elev.size > 1 else 0.03
    in_fan = np.abs(el - elev[row]) <= 0.5 * spacing + 1e-9
    col = _col_of(np.arctan2(p[:, 1], p[:, 0]), scene.range_image.shape[1])
    measured = scene.range_image[row, col]
    measured = np.where(~np.isfinite(measured) & (el < 0.0), -np.inf, measured)
    return r, measured, in_fan


def _slab_seen_empty(
    scene: LidarScene,
    rot: F64,
    c: F64,
    half: F64,
    end: int,
    ext: float,
    band: float,
    opts: LidarCheckOptions,
    motion_m: float = 0.0,
) -> bool:
    """Whether the slab between the object's extreme and the box face of ``end`` was seen empty:
    most beams that reach into it (in the fan, not blocked in front) go past it. ``motion_m``
    is how far the object moves within the sweep: the range image is not compensated for object
    motion, so a return that far outside the box may still be the object's own."""
    axis, sign = (0, 1) if end == 0 else (0, -1) if end == 1 else (1, 1) if end == 2 else (1, -1)
    other = 1 - axis
    a = ext + (half[axis] - ext) * np.array([0.5, 0.75, 1.0])
    b = np.linspace(-half[other], half[other], 7)
    z = np.linspace(-half[2] + band, half[2], 5)
    aa, bb, zz = np.meshgrid(a, b, z, indexing="ij")
    loc = np.zeros((aa.size, 3))
    loc[:, axis] = sign * aa.ravel()
    loc[:, other] = bb.ravel()
    loc[:, 2] = zz.ravel()
    samples = loc @ rot.T + c
    r, measured, in_fan = _lookup(scene, samples)
    if not in_fan.any():
        return False
    samples, r, measured = samples[in_fan], r[in_fan], measured[in_fan]
    past = measured > r + opts.free_tolerance_m
    blocked = measured < r - opts.free_tolerance_m
    # a beam stopped by the object itself (its return inside the box) says nothing about the
    # slab: the far parts of a box hide behind its near faces
    ray = samples - scene.sensor_t
    with np.errstate(invalid="ignore"):
        hit = scene.sensor_t + ray * (np.where(np.isfinite(measured), measured, 0.0) / r)[:, None]
    own = np.all(np.abs((hit - c) @ rot) <= half + opts.free_tolerance_m + motion_m, axis=1)
    blocked_other = blocked & ~own
    judged = past | blocked_other
    if judged.sum() < opts.min_slab_rays:
        return False
    return bool(
        past.sum() / judged.sum() >= opts.seen_empty_fraction
        and blocked_other.mean() <= opts.max_blocked_fraction
    )


def measure_boxes(
    scene: LidarScene, boxes_ego: Boxes3D, options: LidarCheckOptions | None = None
) -> BoxLidarMeasure:
    """Per-box LiDAR figures (counts, beam-model expectation, face discrepancies and fits).

    ``boxes_ego`` are boxes in the scene's ego frame. Raises ``AVFusionError`` for non-finite
    points in the scene or boxes in another frame.
    """
    opts = options or LidarCheckOptions()
    if boxes_ego.frame != "ego":
        raise AVFusionError(
            f"measure_boxes: boxes must be in the 'ego' frame, got '{boxes_ego.frame}'"
        )
    pts = scene.points
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise AVFusionError(
            "measure_boxes: scene points must be a finite (N, 3) array "
            f"(shape {pts.shape}, {int((~np.isfinite(pts)).any(axis=1).sum()) if pts.ndim == 2 else 0} non-finite rows)"
        )
    n_boxes = len(boxes_ego)
    rots = boxes_ego.rotation_matrices()
    half_all = boxes_ego.size / 2.0
    vel = np.nan_to_num(np.asarray(boxes_ego.velocity, dtype=np.float64))
    n_inside = np.zeros(n_boxes, np.int64)
    n_object = np.zeros(n_boxes, np.int64)
    expected = np.zeros(n_boxes, np.int64)
    occl = np.zeros(n_boxes, np.int64)
    through = np.zeros(n_boxes, np.int64)
    ends = np.full((n_boxes, 4), np.nan)
    weights = np.zeros((n_boxes, 4))
    k = np.full(n_boxes, np.nan)
    off = np.full((n_boxes, 2), np.nan)
    rms0 = np.full(n_boxes, np.nan)
    rms_k = np.full(n_boxes, np.nan)
    rms_d = np.full(n_boxes, np.nan)
    dist = np.hypot(boxes_ego.center[:, 0], boxes_ego.center[:, 1])
    sweep_half_s = float(np.max(np.abs(scene.dt_s))) if scene.dt_s.size else 0.0
    reach = np.linalg.norm(half_all[:, :2], axis=1) + opts.shell_m + 0.5
    # each box's neighbourhood from a 2D tree of the sweep
    tree = cKDTree(pts[:, :2]) if pts.shape[0] else None
    ground_pts = (
        segment_ground(pts, opts.ground_cell_m, opts.ground_band_m)
        if pts.shape[0]
        else np.zeros(0, bool)
    )
    ground = np.full(n_boxes, np.nan)
    reach = reach + opts.ground_ring_m
    for b in range(n_boxes):
        rot, c, half = rots[b], boxes_ego.center[b], half_all[b]
        near = (
            np.sort(np.asarray(tree.query_ball_point(c[:2], float(reach[b])), dtype=np.intp))
            if tree is not None
            else np.zeros(0, np.intp)
        )
        # object motion: back to the stamp along the box velocity
        p = pts[near] - vel[b][None, :] * scene.dt_s[near, None]
        loc = (p - c) @ rot
        inside = np.all(np.abs(loc) <= half, axis=1)
        band = min(opts.ground_band_m, 0.4 * 2 * half[2])
        close = np.hypot(*(boxes_ego.center[:, :2] - c[:2]).T) <= reach[b] + reach
        close[b] = False
        ground[b] = _ground_height(
            loc, pts[near], ground_pts[near], boxes_ego.center[close], rots[close],
            half_all[close], half, opts,
        )  # fmt: skip
        if ground[b] > opts.sunk_tolerance_m:
            # the box reaches below the road around it (a box grown in height): its ground
            # band starts at the measured ground, or road and kerb returns join the object
            band += float(ground[b])
        # object returns inside: above the ground band (a box standing on the road holds road
        # returns on its bottom face)
        n_inside[b] = int(np.count_nonzero(inside & (loc[:, 2] >= -half[2] + band)))
        exp, oc, th = _cast_beams(scene, rot, c, half, opts.max_rays_per_box)
        expected[b], occl[b], through[b] = exp, oc, th
        # object returns: enlarged box, above the ground band, in no other box
        obj = (
            (np.abs(loc[:, 0]) <= half[0] + opts.shell_m)
            & (np.abs(loc[:, 1]) <= half[1] + opts.shell_m)
            & (loc[:, 2] >= -half[2] + band)
            & (loc[:, 2] <= half[2])
        )
        if n_boxes > 1 and obj.any():
            others = np.delete(np.arange(n_boxes), b)
            cand = near[obj]
            in_other = np.zeros(cand.size, bool)
            # a return in the shells of two boxes belongs to the nearer box (horizontally)
            own_d = np.hypot(*np.maximum(np.abs(loc[obj][:, :2]) - half[:2], 0.0).T)
            for o in others:
                if not close[o]:
                    continue
                lo = (pts[cand] - boxes_ego.center[o]) @ rots[o]
                in_other |= np.all(np.abs(lo) <= half_all[o] + opts.other_box_margin_m, axis=1)
                other_d = np.hypot(*np.maximum(np.abs(lo[:, :2]) - half_all[o, :2], 0.0).T)
                in_other |= (other_d < own_d) & (np.abs(lo[:, 2]) <= half_all[o, 2])
            keep = np.nonzero(obj)[0][~in_other]
            obj = np.zeros_like(obj)
            obj[keep] = True
        q = loc[obj]
        n_object[b] = int(q.shape[0])
        if q.shape[0] < _min_fit(exp, opts):
            continue
        e, w = _end_errors(q, half, rot, c, scene, opts)
        for i in range(4):
            if np.isfinite(e[i]) and e[i] < -opts.min_discrepancy_m:
                face_pos = half[i // 2]
                motion = float(np.linalg.norm(vel[b])) * sweep_half_s
                if not _slab_seen_empty(
                    scene, rot, c, half, i, face_pos + e[i], band, opts, motion
                ):
                    e[i], w[i] = np.nan, 0.0
        ends[b], weights[b] = e, w
        fit = _fit_hypotheses(e, w, half, opts.min_pinned_ends)
        if fit is not None:
            k[b], off[b, 0], off[b, 1], rms0[b], rms_k[b], rms_d[b] = fit
    return BoxLidarMeasure(
        n_inside,
        n_object,
        expected,
        occl,
        through,
        ends,
        weights,
        k,
        off,
        rms0,
        rms_k,
        rms_d,
        dist,
        ground,
    )


def _min_fit(expected: int, opts: LidarCheckOptions) -> int:
    """Object returns a box needs for a fit: ``min_fit_points``, or for a box the beams
    can hardly cover (few unoccluded beams cross it: small, far or half hidden) the fraction
    ``fit_expected_fraction`` of its expected returns, never below ``min_fit_floor``."""
    need = min(opts.min_fit_points, math.ceil(opts.fit_expected_fraction * expected))
    return max(need, min(opts.min_fit_floor, opts.min_fit_points))


def _ground_height(
    loc: F64,
    pts: F64,
    is_ground: npt.NDArray[np.bool_],
    other_centers: F64,
    other_rots: F64,
    other_halves: F64,
    half: F64,
    opts: LidarCheckOptions,
) -> float:
    """Height of the road around a box over its bottom face (m): a low quantile of the ground
    returns (:func:`segment_ground`) within ``ground_ring_m`` of its footprint and in none of
    the other boxes near it (``other_*``: centres, rotations, half sizes); NaN with fewer than
    ``min_ground_points`` of them. ``loc``: the returns ``pts`` around the box in its frame."""
    d = np.hypot(
        np.maximum(np.abs(loc[:, 0]) - half[0], 0.0), np.maximum(np.abs(loc[:, 1]) - half[1], 0.0)
    )
    # (beyond the shell: the object's own lowest returns lie in it, more so when the box is off)
    ring = is_ground & (d > opts.shell_m) & (d <= opts.shell_m + opts.ground_ring_m)
    if np.count_nonzero(ring) < opts.min_ground_points:
        return math.nan
    for o in range(other_centers.shape[0]):
        if not ring.any():
            break
        lo = (pts[ring] - other_centers[o]) @ other_rots[o]
        inside = np.all(np.abs(lo) <= other_halves[o] + opts.other_box_margin_m, axis=1)
        ring[np.nonzero(ring)[0][inside]] = False
    if np.count_nonzero(ring) < opts.min_ground_points:
        return math.nan
    g = float(np.quantile(loc[ring, 2], opts.ground_quantile))
    # the road is never above what the sensor sees inside the footprint (next to the ego the
    # ground cells around a box hold only object returns)
    foot = np.sort(loc[(np.abs(loc[:, 0]) <= half[0]) & (np.abs(loc[:, 1]) <= half[1]), 2])
    if foot.size < 2 or g > foot[1] + opts.sunk_tolerance_m:
        return math.nan
    return g + float(half[2])


def _end_errors(
    q: F64, half: F64, rot: F64, c: F64, scene: LidarScene, opts: LidarCheckOptions
) -> tuple[F64, F64]:
    """Signed discrepancies of ends (+x, -x, +y, -y) (NaN where not pinned) and weights."""
    sensor_box = rot.T @ (scene.sensor_t - c)
    rng = float(np.linalg.norm(scene.sensor_t - c))
    # cosine between each face normal and the direction to the sensor (from the face centre)
    cos = np.zeros(4)
    for i, (axis, sign) in enumerate(((0, 1), (0, -1), (1, 1), (1, -1))):
        face_c = np.zeros(3)
        face_c[axis] = sign * half[axis]
        v = sensor_box - face_c
        v[2] = 0.0
        cos[i] = sign * v[axis] / max(float(np.linalg.norm(v)), 1e-9)
    seen = cos >= opts.face_cos
    # extremes (second largest as a guard against a single stray return)
    face = np.array([half[0], half[0], half[1], half[1]])
    gap = max(opts.gap_m, 3.0 * rng * scene.azimuth_step)
    ext = np.empty(4)
    support = np.empty(4, np.int64)
    beyond = np.empty(4, np.int64)
    for i, (axis, sign) in enumerate(((0, 1), (0, -1), (1, 1), (1, -1))):
        vals = np.sort(sign * q[:, axis])
        # the object's returns run continuously to its end: returns beyond a gap wider than
        # ``gap_m`` belong to something else
        # (only gaps that open near or beyond the face: occlusion leaves gaps inside objects)
        mid = vals.size // 2
        gaps = np.nonzero(
            (np.diff(vals[mid:]) > gap) & (vals[mid:-1] >= face[i] - opts.min_discrepancy_m)
        )[0]
        if gaps.size:
            vals = vals[: mid + int(gaps[0]) + 1]
        # fewer returns than a face needs, beyond the face and a gap (a post or a person just
        # outside the box), in front of a supported face: not the object's end
        while vals.size > 2 * opts.min_face_support:
            wide = np.nonzero(np.diff(vals[-opts.min_face_support :]) > gap)[0]
            if not wide.size:
                break
            cut = vals[: vals.size - opts.min_face_support + int(wide[0]) + 1]
            if vals[cut.size] <= face[i] + opts.min_discrepancy_m:
                break
            top = cut[-min(max(2, math.ceil(opts.extreme_quantile * cut.size)), cut.size)]
            if np.count_nonzero(cut >= top - opts.face_support_m) < opts.min_face_support:
                break
            vals = cut
        # the k-th largest (k = 0.5 % of the returns, at least 2): a few stray returns never
        # decide an extreme
        rank = max(2, math.ceil(opts.extreme_quantile * vals.size))
        ext[i] = vals[-min(rank, vals.size)]
        support[i] = int(np.count_nonzero(vals >= ext[i] - opts.face_support_m))
        beyond[i] = int(np.count_nonzero(vals > face[i] + opts.min_discrepancy_m))
    e = ext - face
    weights = np.zeros(4)
    out = np.full(4, np.nan)
    sampling = rng * scene.azimuth_step
    for i in range(4):
        axis_seen = seen[i]
        perp = (2, 3) if i < 2 else (0, 1)
        side_seen = bool(seen[perp[0]] or seen[perp[1]])
        if support[i] < opts.min_face_support:
            continue  # no face there: a rounded or sparse end pins nothing
        if e[i] > opts.min_discrepancy_m and beyond[i] >= opts.min_face_support:
            # protrusion: evidence on any end, full weight where the face itself is seen
            out[i], weights[i] = e[i], 1.0 if axis_seen else opts.side_pinned_weight
        elif axis_seen:
            out[i], weights[i] = e[i], 1.0
        elif side_seen:
            # pinned through the perpendicular face, up to the azimuth sampling
            out[i], weights[i] = e[i] + 0.5 * sampling, opts.side_pinned_weight
    return out, weights


def _two_near_faces(e: F64, w: F64) -> bool:
    """Whether the pinned ends are exactly two perpendicular faces seen head-on (one end per
    axis, full weight): the offset model then fits any figures exactly."""
    pinned = np.isfinite(e) & (w > 0)
    return bool(pinned.sum() == 2 and pinned[:2].sum() == 1 and np.all(w[pinned] >= 1.0))


def _fit_hypotheses(
    e: F64, w: F64, half: F64, min_ends: int = 2
) -> tuple[float, float, float, float, float, float] | None:
    """Scale and offset fits of the end discrepancies: (k, dx, dy, rms clean, rms scale,
    rms offset). With four pinned ends, one end that disagrees with the other three (clutter
    just outside a face) is left out when that at least halves both residuals."""
    full = _fit_once(e, w, half, min_ends)
    ok = np.isfinite(e) & (w > 0)
    if full is None or ok.sum() < 4:
        return full
    best = full
    for drop in np.nonzero(ok)[0].tolist():
        w2 = w.copy()
        w2[drop] = 0.0
        fit = _fit_once(e, w2, half, min_ends)
        if fit is None:
            continue
        if min(fit[4], fit[5]) * 2 <= min(full[4], full[5]) and min(fit[4], fit[5]) < min(
            best[4], best[5]
        ):
            best = fit
    return best


def _fit_once(
    e: F64, w: F64, half: F64, min_ends: int = 2
) -> tuple[float, float, float, float, float, float] | None:
    ok = np.isfinite(e) & (w > 0)
    if ok.sum() < min_ends:
        return None
    a = np.array([half[0], half[0], half[1], half[1]])
    sign = np.array([1.0, -1.0, 1.0, -1.0])
    ee, ww, aa, ss = e[ok], w[ok], a[ok], sign[ok]
    idx = np.nonzero(ok)[0]
    rms0 = float(np.sqrt(np.sum(ww * ee**2) / ww.sum()))
    k = float(np.sum(ww * ee * aa) / np.sum(ww * aa**2))
    rms_k = float(np.sqrt(np.sum(ww * (ee - k * aa) ** 2) / ww.sum()))
    d = np.zeros(2)
    for axis in (0, 1):
        m = (idx // 2) == axis
        if m.any():
            d[axis] = float(np.sum(ww[m] * ss[m] * ee[m]) / ww[m].sum())
    pred = ss * d[idx // 2]
    rms_d = float(np.sqrt(np.sum(ww * (ee - pred) ** 2) / ww.sum()))
    return k, float(d[0]), float(d[1]), rms0, rms_k, rms_d


#: Measurements keyed by the (immutable) world-frame Boxes3D object of a sample: label sets
#: that share a sample's boxes (the harness changes a few samples) share its measurement.
_MEASURES: weakref.WeakKeyDictionary[
    Boxes3D, dict[tuple[str, LidarCheckOptions], tuple[Boxes3D, BoxLidarMeasure]]
] = weakref.WeakKeyDictionary()


def _measured(
    log: Any, labels: LabelSet, sample_token: str, opts: LidarCheckOptions
) -> tuple[LidarScene, Boxes3D, BoxLidarMeasure]:
    """Ego-frame boxes and their raw measurement (cached per label set, sample and options)."""
    scene = lidar_scene(log, sample_token, opts.lidar, opts)
    boxes_w = _boxes_of(labels, sample_token, "check_box_lidar")
    per = _MEASURES.setdefault(boxes_w, {})
    key = (sample_token, opts)
    if key not in per:
        boxes = scene.ego_from_world(boxes_w)
        per[key] = (boxes, measure_boxes(scene, boxes, opts))
    boxes, m = per[key]
    return scene, boxes, m


def class_end_priors(
    log: Any, labels: LabelSet, options: LidarCheckOptions | None = None
) -> dict[str, tuple[float, float]]:
    """How a correct box of each class sits on its returns: the median end discrepancy (m)
    along the box length and along its width, per category, over every pinned end of the labels
    under test (categories with at least ``min_class_fits`` fitted boxes). Shapes that do not
    fill their box (a pedestrian, a bicycle, a cone) have negative figures; the fits use the
    discrepancies relative to them. Most labels are right, so the medians are robust to the
    errors being looked for; a correct box encloses its object, so a figure is never above 0.
    A class may have a single track, so each box's ends are first moved to where they would be
    with its track's median size (an object's size does not change along its track): a few
    wrongly sized boxes of one track do not move the class figure."""
    opts = options or LidarCheckOptions()
    sizes: dict[str, list[F64]] = {}
    for boxes in labels.boxes3d.values():
        for tid, size in zip(boxes.track_id.tolist(), boxes.size, strict=True):
            sizes.setdefault(str(tid), []).append(size)
    track_half = {t: np.median(np.stack(v), axis=0) / 2.0 for t, v in sizes.items()}
    by: dict[str, tuple[list[float], list[float], list[int]]] = {}
    for token in labels.boxes3d:
        _, boxes, m = _measured(log, labels, token, opts)
        for b in np.nonzero(np.isfinite(m.scale_k))[0].tolist():
            xs, ys, n = by.setdefault(str(boxes.label[b]), ([], [], [0]))
            n[0] += 1
            excess = boxes.size[b, :2] / 2.0 - track_half[str(boxes.track_id[b])][:2]
            e, w = m.end_error_m[b] + np.repeat(excess, 2), m.end_weight[b]
            xs.extend(float(v) for v, ww in zip(e[:2], w[:2], strict=True) if ww > 0)
            ys.extend(float(v) for v, ww in zip(e[2:], w[2:], strict=True) if ww > 0)
    out = {}
    for c, (xs, ys, n) in by.items():
        if n[0] >= opts.min_class_fits:
            out[c] = (
                min(0.0, float(np.median(xs))) if xs else 0.0,
                min(0.0, float(np.median(ys))) if ys else 0.0,
            )
    return out


# -- motion ---------------------------------------------------------------------------------


def track_velocity(log: Any, labels: LabelSet, sample_token: str) -> dict[str, F64]:
    """World-frame horizontal velocity (m/s) per instance token at one sample, from the centres
    of the same instance in the neighbouring keyframes of the labels under test (central
    difference where both exist)."""
    tokens = list(log.sample_tokens)
    i = log.sample_index(sample_token)
    here = labels.boxes3d[sample_token]
    t0 = log.sample_time_ns(sample_token)
    neighbours = []
    for j in (i - 1, i + 1):
        if 0 <= j < len(tokens) and tokens[j] in labels.boxes3d:
            if log.scene_of(tokens[j]).get("token") != log.scene_of(sample_token).get("token"):
                continue
            neighbours.append((tokens[j], log.sample_time_ns(tokens[j])))
    pos: dict[str, list[tuple[float, F64]]] = {}
    for tok, t in [(sample_token, t0), *neighbours]:
        b = labels.boxes3d[tok]
        for tid, cen in zip(b.track_id.tolist(), b.center, strict=True):
            pos.setdefault(tid, []).append(((t - t0) * 1e-9, cen[:2].copy()))
    out: dict[str, F64] = {}
    for tid in here.track_id.tolist():
        obs = sorted(pos.get(tid, []), key=lambda x: x[0])
        if len(obs) < 2:
            continue
        (ta, ca), (tb, cb) = obs[0], obs[-1]
        if tb - ta <= 0:
            continue
        out[tid] = (cb - ca) / (tb - ta)
    return out


# -- the checks ----------------------------------------------------------------------------


def _boxes_of(labels: LabelSet, sample_token: str, what: str) -> Boxes3D:
    if not isinstance(labels, LabelSet):
        raise AVFusionError(f"{what}: labels must be a LabelSet, got {type(labels).__name__}")
    boxes = labels.boxes3d.get(sample_token)
    if boxes is None:
        raise AVFusionError(f"{what}: the labels under test have no sample '{sample_token}'")
    return boxes


def _severity(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def check_box_lidar(
    log: Any, labels: LabelSet, sample_token: str, *, options: LidarCheckOptions | None = None
) -> CheckResult:
    """3D boxes of one sample against the keyframe LiDAR sweep (see the module docstring)."""
    opts = options or LidarCheckOptions()
    what = f"check_box_lidar of sample {sample_token}"
    boxes_w = _boxes_of(labels, sample_token, what)
    scene, boxes, m = _measured(log, labels, sample_token, opts)
    priors = (
        {c: (mx, my) for c, mx, my in opts.class_end_prior}
        if opts.class_end_prior is not None
        else class_end_priors(log, labels, opts)
    )
    vel = track_velocity(log, labels, sample_token)
    yaw_w = boxes_w.yaw
    items: list[CheckedItem] = []
    findings: list[Finding] = []
    skipped: dict[str, int] = {}
    if scene.n_dropped:
        skipped["non-finite LiDAR points dropped"] = scene.n_dropped
    t_ns = log.sample_time_ns(sample_token)
    for b in range(len(boxes)):
        token = str(np.asarray(boxes.token)[b])
        cat = str(boxes.label[b])
        dist = float(m.distance_m[b])
        items.append(CheckedItem("box_lidar", token, sample_token, opts.lidar, cat, dist))
        common: dict[str, Any] = {
            "item_id": token,
            "sample_token": sample_token,
            "sensor": opts.lidar,
            "category": cat,
            "annotation_token": token,
            "instance_token": str(boxes.track_id[b]),
            "t_ns": t_ns,
            "distance_m": dist,
        }
        exp, n_in = int(m.expected[b]), int(m.n_inside[b])
        see = int(m.see_through[b]) / exp if exp > 0 else 0.0
        counts = {
            "n_inside": n_in,
            "expected": exp,
            "occluded_rays": int(m.occluded[b]),
            "see_through_fraction": round(see, 3),
        }
        n_obj = int(m.n_object[b])
        if (
            n_in == 0
            and n_obj == 0
            and exp >= opts.min_expected_empty
            and see >= opts.see_through_min
        ):
            findings.append(
                Finding(
                    "box_empty",
                    "box_lidar",
                    _severity(0.5 + exp / 200),
                    **common,
                    message=f"no LiDAR return in or around the box; {exp} unoccluded beams cross "
                    "it and "
                    f"{see:.0%} of them see through it",
                    evidence=counts,
                )
            )
        elif (
            max(n_in, n_obj) < opts.sparse_ratio * exp
            and exp >= opts.min_expected_sparse
            and see >= opts.see_through_min
        ):
            findings.append(
                Finding(
                    "box_sparse",
                    "box_lidar",
                    _severity(0.3 + (1 - n_in / exp) * 0.5),
                    **common,
                    message=f"{n_in} LiDAR returns inside where the beam model expects {exp}",
                    evidence=counts,
                )
            )
        prior = priors.get(cat, (0.0, 0.0))
        half = boxes.size[b] / 2.0
        fit = (
            _fit_hypotheses(
                m.end_error_m[b] - np.repeat(prior, 2), m.end_weight[b], half, opts.min_pinned_ends
            )
            if np.isfinite(m.scale_k[b])
            else None
        )
        if fit is not None:
            k, dx, dy, r0, rk, rd = fit
            d = math.hypot(dx, dy)
            ev = {
                **counts,
                "n_object": int(m.n_object[b]),
                "scale_k": round(k, 4),
                "class_prior_x_m": round(prior[0], 4),
                "class_prior_y_m": round(prior[1], 4),
                "offset_x_m": round(dx, 3),
                "offset_y_m": round(dy, 3),
                "rms_clean_m": round(r0, 4),
                "rms_scale_m": round(rk, 4),
                "rms_offset_m": round(rd, 4),
                **{
                    f"end_{n}_m": round(float(v), 3)
                    for n, v in zip(("px", "nx", "py", "ny"), m.end_error_m[b], strict=True)
                    if np.isfinite(v)
                },
            }
            e_adj = m.end_error_m[b] - np.repeat(prior, 2)
            if np.nanmax(np.abs(np.where(m.end_weight[b] > 0, e_adj, np.nan))) >= (
                opts.min_discrepancy_m
            ):
                # the one-parameter scale model wins whenever it explains the ends (to the fit
                # noise); the two-parameter offset model only when the scale model cannot
                # With only two perpendicular near faces seen head-on (one pinned end per axis)
                # the offset model fits any figures exactly: there the scale model is kept when
                # its residual is within the natural margins of a face (mirrors, bumpers, slack)
                two_faces = _two_near_faces(m.end_error_m[b], m.end_weight[b])
                noise = opts.face_margin_m if two_faces else opts.fit_noise_m
                scale_ok = rk <= max(noise, min(rd, opts.explain_ratio * r0))
                # a sparse fit (fewer than min_fit_points returns) judges no size: its ends are
                # as coarse as the sampling of a small object
                sparse = n_obj < opts.min_fit_points
                if scale_ok and abs(k) >= opts.size_ratio and not sparse:
                    kind = "box_undersized" if k > 0 else "box_oversized"
                    findings.append(
                        Finding(
                            kind,
                            "box_lidar",
                            _severity(abs(k) * 3),
                            **common,
                            message=f"the returns fit a box {abs(k):.0%} "
                            f"{'larger' if k > 0 else 'smaller'} than labelled",
                            evidence=ev,
                        )
                    )
                elif not scale_ok and rd <= opts.explain_ratio * r0 and d >= opts.offset_m:
                    findings.append(
                        Finding(
                            "box_offset",
                            "box_lidar",
                            _severity(d),
                            **common,
                            message=f"the returns are centred {d:.2f} m from the box centre "
                            f"(box frame dx {dx:+.2f} m, dy {dy:+.2f} m)",
                            evidence=ev,
                        )
                    )
        v = vel.get(str(boxes.track_id[b]))
        if v is None and np.all(np.isfinite(np.asarray(boxes_w.velocity)[b, :2])):
            v = np.asarray(boxes_w.velocity)[b, :2]
        if v is None:
            skipped["heading: no motion evidence"] = (
                skipped.get("heading: no motion evidence", 0) + 1
            )
            continue
        speed = float(np.hypot(v[0], v[1]))
        if speed < opts.heading_min_speed_mps:
            continue
        cos = (v[0] * math.cos(yaw_w[b]) + v[1] * math.sin(yaw_w[b])) / speed
        if cos < -opts.heading_cos:
            findings.append(
                Finding(
                    "box_heading_flipped",
                    "box_lidar",
                    _severity(0.5 + 0.5 * -cos),
                    **common,
                    message=f"the track moves at {speed:.1f} m/s against the box heading "
                    f"(cosine {cos:+.2f})",
                    evidence={"speed_mps": round(speed, 3), "cos_motion_heading": round(cos, 3)},
                )
            )
    return CheckResult("box_lidar", tuple(items), tuple(findings), skipped)


# -- unlabelled objects --------------------------------------------------------------------


def segment_ground(points: F64, cell_m: float = 2.0, band_m: float = 0.3) -> npt.NDArray[np.bool_]:
    """Ground mask of (N, 3) ego-frame points: within ``band_m`` of the lowest return of their
    ``cell_m`` grid cell, where that floor is itself no higher than the lowest floor of the
    3×3 neighbouring cells plus ``band_m`` per cell (so a car roof filling a cell is not ground)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise AVFusionError(
            f"segment_ground: points must be a finite (N, 3) array, got {pts.shape}"
        )
    if pts.shape[0] == 0:
        return np.zeros(0, bool)
    ij = np.floor(pts[:, :2] / cell_m).astype(np.int64)
    ij -= ij.min(axis=0)
    nx, ny = int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1
    floor = np.full((nx, ny), np.inf)
    np.minimum.at(floor, (ij[:, 0], ij[:, 1]), pts[:, 2])
    padded = np.pad(floor, 1, constant_values=np.inf)
    neigh = np.min(
        np.stack(
            [padded[1 + a : 1 + a + nx, 1 + c : 1 + c + ny] for a in (-1, 0, 1) for c in (-1, 0, 1)]
        ),
        axis=0,
    )
    cell_floor = np.minimum(floor, neigh + band_m * 1.5)
    return pts[:, 2] <= cell_floor[ij[:, 0], ij[:, 1]] + band_m


def cluster_points(points: F64, cell_m: float) -> npt.NDArray[np.int64]:
    """Connected components of (N, 3) points on a voxel grid of ``cell_m`` (26-connectivity):
    a cluster id per point (0..K-1)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise AVFusionError(
            f"cluster_points: points must be a finite (N, 3) array, got {pts.shape}"
        )
    if not (math.isfinite(cell_m) and cell_m > 0):
        raise AVFusionError(f"cluster_points: cell_m must be > 0, got {cell_m}")
    if pts.shape[0] == 0:
        return np.zeros(0, np.int64)
    vox = np.floor(pts / cell_m).astype(np.int64)
    uniq, inverse = np.unique(vox, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    n = uniq.shape[0]
    lo = uniq.min(axis=0) - 1
    span = uniq.max(axis=0) - lo + 2
    keys = ((uniq[:, 0] - lo[0]) * span[1] + (uniq[:, 1] - lo[1])) * span[2] + (uniq[:, 2] - lo[2])
    order = np.argsort(keys)
    sorted_keys = keys[order]
    rows, cols = [np.arange(n)], [np.arange(n)]
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            for c in (-1, 0, 1):
                if (a, b, c) <= (0, 0, 0):
                    continue
                nk = keys + (a * span[1] + b) * span[2] + c
                pos = np.clip(np.searchsorted(sorted_keys, nk), 0, n - 1)
                found = sorted_keys[pos] == nk
                rows.append(np.nonzero(found)[0])
                cols.append(order[pos[found]])
    r, c_ = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c_)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    return np.asarray(comp, dtype=np.int64)[inverse]


def class_envelopes(labels: LabelSet) -> dict[str, tuple[float, float, float]]:
    """Median box size (length, width, height) per category over every sample of the labels
    under test: what an object of each labelled class looks like in this log."""
    sizes: dict[str, list[npt.NDArray[np.float64]]] = {}
    for boxes in labels.boxes3d.values():
        for cat, size in zip(boxes.label.tolist(), boxes.size, strict=True):
            sizes.setdefault(cat, []).append(size)
    out = {}
    for cat, v in sizes.items():
        m = np.median(np.stack(v), axis=0)
        out[cat] = (float(m[0]), float(m[1]), float(m[2]))
    return out


def _matching_class(
    envelopes: dict[str, tuple[float, float, float]],
    length: float,
    width: float,
    top: float,
    opts: UnlabelledOptions,
    top_tolerance_m: float | None = None,
) -> str | None:
    """The category whose typical box the cluster fits (footprint within the box plus
    ``size_tolerance_m``, top within ``height_tolerance_m`` of the box height and at least
    ``top_tolerance_m`` (or 1.5 beam spacings at its range) below it), the closest in height; None if no class fits."""
    best, best_d = None, math.inf
    for cat, (bl, bw, bh) in envelopes.items():
        if (
            length > max(bl, bw) + opts.size_tolerance_m
            or width > min(bl, bw) + opts.size_tolerance_m
        ):
            continue
        if length < opts.min_length_fraction * min(bl, bw):
            continue  # less than half of the class's narrow face seen
        low_tol = opts.top_tolerance_m if top_tolerance_m is None else top_tolerance_m
        if top > bh + opts.height_tolerance_m or top < bh - low_tol:
            continue
        d = abs(top - bh)
        if d < best_d:
            best, best_d = cat, d
    return best


def _cluster_shape(
    p: F64,
    ground_tree: Any,
    ground_pts: F64,
    envelopes: dict[str, tuple[float, float, float]],
    opts: UnlabelledOptions,
    scene: LidarScene | None = None,
) -> dict[str, Any] | None:
    """Shape figures of one cluster (ego frame) and whether it looks like a labelled object:
    bottom near the local ground, top and footprint of some labelled class, returns all the way
    down its side (``lower``: fraction in the lower half) and flat faces (``edge_m``: median
    distance of the lower-half returns to the nearest edge of the footprint rectangle; a vehicle
    shows an L, a bush or tree crown is round). None when there is no ground around it."""
    lo, hi = p.min(axis=0), p.max(axis=0)
    mid = p[:, :2].mean(axis=0)
    if ground_tree is None:
        return None
    near_g = ground_tree.query_ball_point(mid, opts.ground_radius_m)
    if not near_g:
        return None
    z0 = float(np.median(ground_pts[near_g, 2]))
    bottom, top = float(lo[2] - z0), float(hi[2] - z0)
    # next to the vehicle the lowest beam passes above the ground: what it cannot see is not
    # missing (blind height = sensor height - distance * tan(lowest beam))
    blind = 0.0
    if scene is not None and scene.ring_elevation.size:
        d = float(np.hypot(*(mid - scene.sensor_t[:2])))
        blind = max(0.0, float(scene.sensor_t[2] - z0) + d * math.tan(scene.ring_elevation.min()))
    xy = p[:, :2] - mid
    low = p[:, 2] - z0 < (top + blind) / 2
    lower = float(np.mean(low))
    # L-shape fit: the footprint rectangle orientation (1° steps over 90°) whose edges the
    # lower-half returns hug best
    angles = np.deg2rad(np.arange(0.0, 90.0, 1.0))
    rot = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (A, 2) first axis per angle
    lp = xy[low] if low.any() else xy
    u = lp @ rot.T  # (M, A)
    v = lp @ np.stack([-rot[:, 1], rot[:, 0]], axis=1).T
    du = np.minimum(u - u.min(axis=0), u.max(axis=0) - u)
    dv = np.minimum(v - v.min(axis=0), v.max(axis=0) - v)
    residual = np.median(np.minimum(du, dv), axis=0)
    best = int(np.argmin(residual))
    edge = float(residual[best])
    pu, pv = xy @ rot[best], xy @ np.array([-rot[best, 1], rot[best, 0]])
    extent = np.sort([np.ptp(pu), np.ptp(pv)])[::-1]
    length, width = float(extent[0]), float(extent[1])
    # the highest return is below the top by up to the vertical beam spacing at that range
    top_tol = opts.top_tolerance_m
    if scene is not None and scene.ring_elevation.size > 1:
        spacing = float(np.median(np.abs(np.diff(scene.ring_elevation))))
        d_s = float(np.hypot(*(mid - scene.sensor_t[:2])))
        top_tol = max(top_tol, 1.5 * spacing * d_s)
    match = _matching_class(envelopes, length, width, top, opts, top_tol)
    # a solid surface returns (almost) every beam over its silhouette: beams over the cluster's
    # azimuth span and its seen height, against the returns it has (fences, hedges and
    # half-hidden things return a fraction)
    fill, beams = 1.0, opts.min_beams
    if scene is not None and scene.ring_elevation.size > 1:
        rel = p - scene.sensor_t
        az = np.arctan2(rel[:, 1], rel[:, 0])
        az_span = float(np.ptp(np.unwrap(np.sort(az))))
        el = np.arctan2(rel[:, 2], np.hypot(rel[:, 0], rel[:, 1]))
        beams = int(
            np.count_nonzero(
                (scene.ring_elevation >= el.min() - 1e-6)
                & (scene.ring_elevation <= el.max() + 1e-6)
            )
        )
        expected = (az_span / scene.azimuth_step + 1.0) * max(beams, 1)
        fill = float(min(1.0, p.shape[0] / expected))
    object_like = bool(
        bottom <= opts.max_bottom_m + blind
        and opts.min_top_m <= top <= opts.max_top_m
        and length <= opts.max_length_m
        and width <= opts.max_width_m
        and (length > opts.thin_footprint_m or top <= opts.thin_max_top_m)
        and match is not None
        and lower >= opts.min_lower_half_fraction
        and edge <= opts.max_edge_residual_m
        and fill >= opts.min_fill
        and beams >= opts.min_beams
        # one long vertical plane and nothing behind it is a wall or a fence
        and not (width < opts.plane_max_width_m and length > opts.plane_min_length_m)
    )
    return {
        "object_like": object_like,
        "class": match,
        "centre": ((lo + hi) / 2).tolist(),
        "bottom_m": bottom,
        "top_m": top,
        "length_m": length,
        "width_m": width,
        "lower": lower,
        "edge_m": edge,
        "fill": fill,
        "beams": beams,
    }


def track_gaps(
    log: Any, labels: LabelSet, sample_token: str
) -> dict[str, tuple[Boxes3D, str, str]]:
    """Tracks of the labels under test that have a box in the previous and the next keyframe of
    the same scene but none in this one: instance token -> (world box interpolated linearly in
    time between the two, category, annotation token of the previous box)."""
    tokens = list(log.sample_tokens)
    i = log.sample_index(sample_token)
    if not (0 < i < len(tokens) - 1):
        return {}
    prev_t, next_t = tokens[i - 1], tokens[i + 1]
    if prev_t not in labels.boxes3d or next_t not in labels.boxes3d:
        return {}
    scene_token = log.scene_of(sample_token).get("token")
    if (
        log.scene_of(prev_t).get("token") != scene_token
        or log.scene_of(next_t).get("token") != scene_token
    ):
        return {}
    here = set(np.asarray(labels.boxes3d[sample_token].track_id).tolist())
    a, b = labels.boxes3d[prev_t], labels.boxes3d[next_t]
    nxt = {t: j for j, t in enumerate(np.asarray(b.track_id).tolist())}
    t0, t1, t = (
        log.sample_time_ns(prev_t),
        log.sample_time_ns(next_t),
        log.sample_time_ns(sample_token),
    )
    alpha = (t - t0) / (t1 - t0) if t1 > t0 else 0.5
    out: dict[str, tuple[Boxes3D, str, str]] = {}
    for j, tid in enumerate(np.asarray(a.track_id).tolist()):
        if tid in here or tid not in nxt:
            continue
        k = nxt[tid]
        box = Boxes3D(
            (a.center[j] + alpha * (b.center[k] - a.center[j]))[None],
            ((a.size[j] + b.size[k]) / 2)[None],
            a.rotation[j][None],
            np.array([str(a.label[j])], dtype=np.str_),
            np.array([tid], dtype=np.str_),
            "world",
        )
        out[tid] = (box, str(a.label[j]), str(np.asarray(a.token)[j]))
    return out


def _in_track_gap(
    gaps: dict[str, tuple[Boxes3D, str, str]], points_ego: F64, scene: LidarScene, margin_m: float
) -> str | None:
    """The gap track whose interpolated box (enlarged by ``margin_m``) holds most of a cluster."""
    best, best_frac = None, 0.5
    for tid, (box_w, _, _) in gaps.items():
        box = scene.ego_from_world(box_w)
        loc = (points_ego - box.center[0]) @ box.rotation_matrices()[0]
        frac = float(np.mean(np.all(np.abs(loc) <= box.size[0] / 2 + margin_m, axis=1)))
        if frac > best_frac:
            best, best_frac = tid, frac
    return best


def check_unlabelled(
    log: Any, labels: LabelSet, sample_token: str, *, options: UnlabelledOptions | None = None
) -> CheckResult:
    """LiDAR clusters above the ground inside no (enlarged) box (see the module docstring).

    Every cluster that passes the size filters is a checked item (id ``cluster-<sample>-<k>``);
    the uncovered ones are ``missing_box`` findings with their distance, size and point count.
    """
    opts = options or UnlabelledOptions()
    what = f"check_unlabelled of sample {sample_token}"
    boxes_w = _boxes_of(labels, sample_token, what)
    scene = lidar_scene(log, sample_token, opts.lidar)
    boxes = scene.ego_from_world(boxes_w)
    pts = scene.points
    dist = np.hypot(pts[:, 0], pts[:, 1])
    near = dist <= opts.max_range_m
    ground = segment_ground(pts[near], opts.ground_cell_m, opts.ground_band_m)
    idx = np.nonzero(near)[0][~ground]
    above = pts[idx]
    covered = np.zeros(idx.size, bool)
    if len(boxes):
        from avfusion.fusion.voxel import points_in_boxes

        covered = (
            points_in_boxes(
                np.ascontiguousarray(above), boxes, margin_m=opts.box_margin_m, what=what
            ).box_index
            >= 0
        )
    labels_c = cluster_points(above, opts.cluster_m)
    items: list[CheckedItem] = []
    findings: list[Finding] = []
    skipped: dict[str, int] = {}
    t_ns = log.sample_time_ns(sample_token)
    n_clusters = int(labels_c.max()) + 1 if labels_c.size else 0
    order = np.argsort(labels_c, kind="stable")
    bounds = np.searchsorted(labels_c[order], np.arange(n_clusters + 1))
    not_object = 0
    envelopes = class_envelopes(labels)
    gaps = track_gaps(log, labels, sample_token)
    ground_pts = pts[near][ground]
    ground_tree = cKDTree(ground_pts[:, :2]) if ground_pts.shape[0] else None
    for c in range(n_clusters):
        members = order[bounds[c] : bounds[c + 1]]
        if members.size < opts.min_cluster_points:
            continue
        centre_all = (above[members].min(axis=0) + above[members].max(axis=0)) / 2
        item_id = f"cluster-{sample_token}-{c}"
        items.append(
            CheckedItem(
                "unlabelled",
                item_id,
                sample_token,
                opts.lidar,
                "",
                float(np.hypot(centre_all[0], centre_all[1])),
            )
        )
        free = members[~covered[members]]
        if free.size < opts.min_cluster_points:
            continue
        # the returns no box explains, split again (a row of barriers minus its labelled ones)
        sub = cluster_points(above[free], opts.cluster_m)
        for k in range(int(sub.max()) + 1):
            part = free[sub == k]
            if part.size < opts.min_cluster_points:
                continue
            shape = _cluster_shape(above[part], ground_tree, ground_pts, envelopes, opts, scene)
            logger.debug("cluster %s/%d: %s", item_id, k, shape)
            if shape is None:
                not_object += 1
                continue
            centre = np.asarray(shape["centre"])
            wc = scene.world_from_ego_rot @ centre + scene.world_from_ego_t
            gap_track = _in_track_gap(gaps, above[part], scene, opts.box_margin_m)
            if not shape["object_like"] and gap_track is None:
                not_object += 1
                continue
            if gap_track is not None:
                shape["class"] = gaps[gap_track][2]
            d = float(np.hypot(centre[0], centre[1]))
            findings.append(
                Finding(
                    "missing_box",
                    "unlabelled",
                    _severity(0.4 + part.size / 200),
                    item_id,
                    sample_token,
                    opts.lidar,
                    f"{part.size} LiDAR returns above the ground at {d:.1f} m inside no box "
                    f"(cluster {shape['length_m']:.1f} × {shape['width_m']:.1f} m, top "
                    f"{shape['top_m']:.1f} m above the ground; shaped like {shape['class']})",
                    category=str(shape["class"]),
                    t_ns=t_ns,
                    distance_m=d,
                    evidence={
                        "n_points": int(part.size),
                        "n_points_cluster": int(members.size),
                        "shape_like": str(shape["class"]),
                        "track_gap_instance": "" if gap_track is None else gap_track,
                        "lower_half_fraction": round(float(shape["lower"]), 3),
                        "edge_residual_m": round(float(shape["edge_m"]), 3),
                        "beam_fill": round(float(shape["fill"]), 3),
                        "length_m": round(float(shape["length_m"]), 3),
                        "width_m": round(float(shape["width_m"]), 3),
                        "top_above_ground_m": round(float(shape["top_m"]), 3),
                        "center_x_world_m": round(float(wc[0]), 3),
                        "center_y_world_m": round(float(wc[1]), 3),
                        "center_z_world_m": round(float(wc[2]), 3),
                    },
                )
            )
    if not_object:
        skipped["unexplained clusters not object-like (size, height, shape)"] = not_object
    return CheckResult("unlabelled", tuple(items), tuple(findings), skipped)
