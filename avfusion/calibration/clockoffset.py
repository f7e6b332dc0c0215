"""Clock offset between a LiDAR and a camera (or thermal camera), estimated from the data.

While the ego moves, a wrong camera clock offset ``δ`` puts the camera at the wrong place along
the trajectory: everything the LiDAR measured is then drawn displaced by about
``v · (δ − δ_true)`` in the image. ``estimate_clock_offset`` searches the offset that best lays
the LiDAR's *depth edges* (occlusion boundaries: where the range jumps between two
horizontally adjacent returns of one ring) on the image's edges:

1. every LiDAR edge point is placed in the world at its own firing time (sweep stamp + per-point
   time, pose from ``Trajectory.interpolate_many``), which removes the LiDAR's own motion
   distortion; it sits half-way in angle between the foreground return and the background one,
   where the boundary is expected;
2. for each candidate offset ``δ`` the camera pose is taken at ``t_cam = stamp + δ`` and the
   points are projected through ``CameraModel.project`` (so any lens model, e.g. the thermal
   camera's radial-tangential one);
3. the cost of a point is its distance to the nearest image edge, truncated (Canny edges with
   thresholds set from the image's own gradient noise, which handles 8-bit colour and 16-bit
   radiometric thermal images alike, and their distance transform, computed once per image);
   points are weighted by how far they move in the image per millisecond of offset, so near
   objects and lateral structure carry the estimate and far points, which barely move, add
   little noise;
4. a point on a moving object would pull towards an offset of its own, so edge points that the
   sweeps before and after do not find again (in the world) are dropped;
5. the cost summed over frames is searched on a coarse grid over ``search_ns`` plus a guard band,
   then on a fine grid around the minimum, and the minimum placed below the grid step by a
   parabola fit; the spread comes from a block bootstrap over the frames.

Offsets follow the rig convention ``t_ego = t_stamp + time_offset_ns`` and are *on the LiDAR's
clock*: LiDAR times are ``stamp + lidar.time_offset_ns`` as the log states them, so an error in
the LiDAR's own offset appears in every camera's estimate.

A result is ``observable=False`` (``offset_ns=None``, a ``reason``) rather than a number when
the data do not determine the offset: the ego does not move (the cost curve is flat), too few
frames or edge points, the lowest cost lies outside the search range, the curve has no clear or
no stable minimum, or the bootstrap spread is too wide.

Accuracy on the synthetic sample log (6.5 s, 10-12 m/s): within 0.3 ms of the true offset for
every camera and the thermal camera; the remaining bias (~0.2 ms, the same sign for all
cameras) is not in ``std_ns``, which measures only the frame-to-frame scatter. It comes from
near objects whose silhouettes the LiDAR and the camera, about a metre apart, see slightly
differently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.calibration.validation import edge_distance_image, edge_map
from avfusion.errors import AVFusionError, CalibrationError, ConfigError, SyncError

__all__ = [
    "DEFAULT_SEARCH_NS",
    "ClockOffsetEstimate",
    "ClockOffsetSettings",
    "EdgePoints",
    "SweepLog",
    "edge_distance_image",
    "edge_map",
    "estimate_clock_offset",
    "estimate_clock_offsets",
    "lidar_depth_edges",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_MS = 1_000_000
#: Widest search range accepted (ns): a clock offset beyond ±0.5 s is not a small sync error.
MAX_SEARCH_NS = 500_000_000
#: Default offsets tried (ns): ±60 ms covers the usual trigger and transport delays.
DEFAULT_SEARCH_NS = (-60_000_000, 60_000_000)
IMAGE_MODALITIES = ("camera", "thermal")


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClockOffsetEstimate:
    """The clock offset of one camera relative to a LiDAR, with its quality.

    ``offset_ns`` is the camera's ``time_offset_ns`` (``t_ego = t_stamp + offset_ns``) on the
    LiDAR's clock (the LiDAR's own stated offset taken as right), or ``None`` when
    ``observable`` is False (``reason`` says why). ``believed_offset_ns`` is what the log states
    for the camera; ``correction_ns`` the difference.
    ``std_ns`` is the bootstrap standard deviation over frames (inf when not observable).
    ``confidence`` in [0, 1] is the fraction of bootstrap resamples whose estimate lies within
    ``tolerance_ns`` of ``offset_ns`` (0 when not observable). ``contrast`` is the depth of the
    cost minimum relative to the cost far from it (0 for a flat curve, up to 1).
    ``image_motion_px_per_ms`` is the weighted mean image motion of the edge points per
    millisecond of offset (what makes the offset observable; 0 when the ego stands still).
    ``offsets_ns`` / ``cost`` are the evaluated cost curve (coarse grid plus the fine grid
    around the minimum, sorted by offset) for plotting; the cost is the motion-weighted mean
    edge distance of the LiDAR points as a fraction of the truncation distance (0: every point
    on an image edge, 1: none near one). ``skipped`` counts the camera frames
    left out, by reason.
    """

    camera: str
    lidar: str
    observable: bool
    offset_ns: int | None
    std_ns: float
    confidence: float
    reason: str
    n_frames: int
    n_points: int
    believed_offset_ns: int
    tolerance_ns: int
    contrast: float = 0.0
    image_motion_px_per_ms: float = 0.0
    offsets_ns: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    cost: F64 = field(default_factory=lambda: np.zeros(0))
    skipped: Mapping[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def correction_ns(self) -> int | None:
        """How much the log's believed offset must change (estimate − believed)."""
        return None if self.offset_ns is None else self.offset_ns - self.believed_offset_ns

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the cost curve)."""
        return {
            "camera": self.camera,
            "lidar": self.lidar,
            "observable": self.observable,
            "offset_ns": self.offset_ns,
            "std_ns": None if not np.isfinite(self.std_ns) else float(self.std_ns),
            "confidence": float(self.confidence),
            "reason": self.reason,
            "n_frames": self.n_frames,
            "n_points": self.n_points,
            "believed_offset_ns": self.believed_offset_ns,
            "correction_ns": self.correction_ns,
            "contrast": float(self.contrast),
            "image_motion_px_per_ms": float(self.image_motion_px_per_ms),
            "skipped": dict(self.skipped),
        }

    def __repr__(self) -> str:
        if not self.observable:
            return (
                f"ClockOffsetEstimate({self.camera} vs {self.lidar}: not observable: {self.reason})"
            )
        return (
            f"ClockOffsetEstimate({self.camera} vs {self.lidar}: {(self.offset_ns or 0) / 1e6:+.3f} ms "
            f"± {self.std_ns / 1e6:.3f} ms, confidence {self.confidence:.2f}, {self.n_frames} frames)"
        )


# --------------------------------------------------------------------------------------------
# What the estimator needs from a log
# --------------------------------------------------------------------------------------------


class SweepLog(Protocol):
    """The parts of a log the estimator reads (``NuScenesLog`` has them all)."""

    @property
    def sensors(self) -> Mapping[str, Any]: ...

    @property
    def poses(self) -> Trajectory: ...

    def timestamps(self, sensor: str) -> npt.NDArray[np.int64]: ...

    def sample_data_tokens(self, sensor: str) -> list[str]: ...

    def load_points(
        self, sd_token: str, *, with_pose: bool = ..., with_lidarseg: bool = ...
    ) -> Any: ...

    def load_image(self, sd_token: str) -> Any: ...


# --------------------------------------------------------------------------------------------
# LiDAR depth edges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EdgePoints:
    """Occlusion-edge points of one LiDAR sweep in the sensor frame, with their firing times.

    ``xyz`` (M, 3) lies on the foreground surface at the boundary (half-way in angle between the
    foreground return and its background neighbour); ``t_rel_ns`` is the foreground return's
    time relative to the sweep stamp; ``range_m`` its range.
    """

    xyz: F64
    t_rel_ns: I64
    range_m: F64


def lidar_depth_edges(
    xyz: npt.ArrayLike,
    ring: npt.ArrayLike,
    t_rel_ns: npt.ArrayLike | None = None,
    *,
    min_jump_m: float = 1.0,
    min_jump_ratio: float = 0.15,
    max_gap_steps: float = 1.6,
) -> EdgePoints:
    """Foreground points at horizontal depth discontinuities, ring by ring.

    Returns of one ring are ordered by azimuth; two consecutive returns are neighbours when their
    azimuth gap is at most ``max_gap_steps`` times the ring's typical step (so a dropped return or
    open sky between them is not taken for an edge). Where the far one is farther by more than
    ``max(min_jump_m, min_jump_ratio · near range)``, the near one is an occlusion edge; its point
    is moved half-way (in angle) towards the far return, the expected position of the boundary.
    """
    p = np.asarray(xyz, dtype=np.float64)
    r_id = np.asarray(ring)
    if p.ndim != 2 or p.shape[1] != 3:
        raise CalibrationError(f"lidar_depth_edges: points must be (N, 3), got {p.shape}")
    if r_id.shape != (p.shape[0],):
        raise CalibrationError(
            f"lidar_depth_edges: {p.shape[0]} points but ring has shape {r_id.shape}"
        )
    t = (
        np.zeros(p.shape[0], np.int64)
        if t_rel_ns is None
        else np.asarray(t_rel_ns).astype(np.int64).reshape(-1)
    )
    if t.shape != (p.shape[0],):
        raise CalibrationError(
            f"lidar_depth_edges: {p.shape[0]} points but {t.size} per-point times"
        )
    rng = np.linalg.norm(p, axis=1)
    ok = np.isfinite(rng) & (rng > 1e-3)
    idx_all = np.flatnonzero(ok)
    if idx_all.size < 3:
        return EdgePoints(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0))
    az = np.arctan2(p[idx_all, 1], p[idx_all, 0])
    ring_ok = r_id[idx_all]
    order = np.lexsort((az, ring_ok))
    idx = idx_all[order]
    az = az[order]
    ring_s = ring_ok[order]
    same_ring = ring_s[1:] == ring_s[:-1]
    daz = np.diff(az)
    # Typical azimuth step per ring (median of positive within-ring gaps).
    step = np.full(daz.shape, np.nan)
    for rv in np.unique(ring_s):
        m = same_ring & (ring_s[:-1] == rv)
        gaps = daz[m]
        gaps = gaps[gaps > 0]
        if gaps.size:
            step[m] = float(np.median(gaps))
    neighbour = same_ring & np.isfinite(step) & (daz <= max_gap_steps * np.nan_to_num(step))
    a, b = idx[:-1][neighbour], idx[1:][neighbour]
    ra, rb = rng[a], rng[b]
    near = np.minimum(ra, rb)
    jump = np.abs(ra - rb) > np.maximum(min_jump_m, min_jump_ratio * near)
    a, b = a[jump], b[jump]
    fg = np.where(rng[a] < rng[b], a, b)
    bg = np.where(rng[a] < rng[b], b, a)
    u = p[fg] / rng[fg, None] + p[bg] / rng[bg, None]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = u * rng[fg, None]
    return EdgePoints(np.ascontiguousarray(pts), t[fg].copy(), rng[fg].copy())


# --------------------------------------------------------------------------------------------
# Image edges
# --------------------------------------------------------------------------------------------


# ``edge_map`` and ``edge_distance_image`` (noise-relative Canny thresholds) live in
# ``calibration.validation`` with the other edge images; re-exported here.


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockOffsetSettings:
    """Tuning of ``estimate_clock_offset``; the defaults suit nuScenes-like rigs at 5-15 m/s.

    Search: ``coarse_step_ns`` over the search range widened by ``guard_ns`` on each side (a
    minimum found in the guard band means the offset lies outside the range), then
    ``fine_step_ns`` within ``fine_halfwidth_ns`` of the coarse minimum; the minimum is placed
    by a parabola through the fine samples within ``fit_halfwidth_ns`` of the lowest one.
    Points: LiDAR depth edges (range jump > ``max(min_jump_m, min_jump_ratio · range)``) seen at
    ``min_depth_m``..``max_depth_m`` in front of the camera; with ``reject_moving`` an edge point
    must lie within ``static_tolerance_m + static_tolerance_ratio · range`` of a return of the
    sweeps ``static_neighbour_sweeps`` before and after (points on moving objects do not).
    Cost: distance to the nearest image edge truncated at ``max_distance_px`` (default 0.6 % of
    the focal length, about one LiDAR azimuth step); image edges from ``edge_map`` with
    ``blur_sigma_px``, ``low_snr``, ``high_snr``.
    Verdict: not observable with fewer than ``min_frames`` frames or ``min_points`` points, when
    the points move less than ``min_image_motion_px_per_ms`` per ms of offset, when the curve's
    dip is shallower than ``min_contrast`` (relative to its median), when fewer than
    ``min_agreement`` of the bootstrap resamples put their coarse minimum near the same place,
    or when the bootstrap spread exceeds ``max_std_ns``. The bootstrap draws ``n_bootstrap``
    resamples of blocks of ``bootstrap_block_ns`` of consecutive frames (seeded by ``seed``);
    ``confidence`` is the share of resamples within ``tolerance_ns`` of the estimate.
    ``workers`` threads decode images and find their edges.
    """

    coarse_step_ns: int = 1_000_000
    fine_step_ns: int = 100_000
    fine_halfwidth_ns: int = 3_000_000
    fit_halfwidth_ns: int = 1_000_000
    guard_ns: int = 40_000_000
    min_frames: int = 8
    min_points: int = 200
    max_distance_px: float | None = None
    min_depth_m: float = 2.0
    max_depth_m: float = 60.0
    min_jump_m: float = 1.0
    min_jump_ratio: float = 0.15
    reject_moving: bool = True
    static_tolerance_m: float = 0.15
    static_tolerance_ratio: float = 0.02
    static_neighbour_sweeps: int = 2
    blur_sigma_px: float = 1.2
    low_snr: float = 6.0
    high_snr: float = 12.0
    min_image_motion_px_per_ms: float = 0.05
    min_contrast: float = 0.01
    min_agreement: float = 0.8
    max_std_ns: int = 5_000_000
    tolerance_ns: int = 2_000_000
    n_bootstrap: int = 300
    bootstrap_block_ns: int = 500_000_000
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        def fail(name: str, want: str) -> ConfigError:
            return ConfigError(
                f"ClockOffsetSettings.{name} must be {want}, got {getattr(self, name)!r}"
            )

        def is_int(v: Any) -> bool:
            return not isinstance(v, bool) and isinstance(v, int | np.integer)

        for name in ("coarse_step_ns", "fine_step_ns", "fine_halfwidth_ns", "fit_halfwidth_ns",
                     "max_std_ns", "tolerance_ns", "bootstrap_block_ns"):  # fmt: skip
            if not is_int(getattr(self, name)) or getattr(self, name) <= 0:
                raise fail(name, "integer nanoseconds > 0")
        if not is_int(self.guard_ns) or self.guard_ns < 0:
            raise fail("guard_ns", "integer nanoseconds >= 0")
        for name in ("min_frames", "min_points", "n_bootstrap", "workers",
                     "static_neighbour_sweeps"):  # fmt: skip
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise fail(name, "an integer >= 1")
        if not is_int(self.seed) or self.seed < 0:
            raise fail("seed", "an integer >= 0")
        if self.fine_step_ns > self.coarse_step_ns:
            raise fail("fine_step_ns", f"at most coarse_step_ns ({self.coarse_step_ns})")
        if self.fine_halfwidth_ns < self.coarse_step_ns:
            raise fail("fine_halfwidth_ns", f"at least coarse_step_ns ({self.coarse_step_ns})")
        for name in ("min_depth_m", "min_jump_m", "blur_sigma_px", "low_snr", "high_snr"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not np.isfinite(v) or v <= 0:
                raise fail(name, "a finite number > 0")
        for name in ("min_jump_ratio", "static_tolerance_m", "static_tolerance_ratio",
                     "min_image_motion_px_per_ms", "min_contrast"):  # fmt: skip
            v = getattr(self, name)
            if not isinstance(v, int | float) or not np.isfinite(v) or v < 0:
                raise fail(name, "a finite number >= 0")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise fail("min_agreement", "in [0, 1]")
        if not self.max_depth_m > self.min_depth_m:
            raise fail("max_depth_m", f"greater than min_depth_m ({self.min_depth_m})")
        if self.low_snr > self.high_snr:
            raise fail("low_snr", f"at most high_snr ({self.high_snr})")
        if self.max_distance_px is not None and not (
            isinstance(self.max_distance_px, int | float)
            and np.isfinite(self.max_distance_px)
            and self.max_distance_px > 0
        ):
            raise fail("max_distance_px", "a finite number > 0, or None")


def _check_int(value: Any, what: str, *, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SyncError(f"{what} must be integer nanoseconds, got {type(value).__name__} {value!r}")
    if positive and value <= 0:
        raise SyncError(f"{what} must be > 0 ns, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Per-sweep LiDAR data (shared between cameras)
# --------------------------------------------------------------------------------------------


@dataclass
class _Sweep:
    t_ns: int  # sweep stamp on the ego clock
    edges_world: F64  # (M, 3) depth-edge points in the world, each at its own firing time
    edge_range_m: F64  # (M,)
    cloud_world: F64  # (N, 3) the whole sweep in the world (for the moving-object check)
    static: npt.NDArray[np.bool_] | None = None
    tree: Any = None


class _LidarCache:
    """LiDAR sweeps loaded once: depth edges and world points, and a static-edge check."""

    def __init__(
        self, log: SweepLog, lidar: str, poses: Trajectory, settings: ClockOffsetSettings
    ) -> None:
        self.log = log
        self.lidar = lidar
        self.sensor = log.sensors[lidar]
        self.poses = poses
        self.settings = settings
        stamps = np.asarray(log.timestamps(lidar), dtype=np.int64)
        self.tokens = list(log.sample_data_tokens(lidar))
        if len(self.tokens) != stamps.size:
            raise SyncError(
                f"LiDAR '{lidar}': {stamps.size} time stamps but {len(self.tokens)} sample_data tokens"
            )
        self.t_ns = stamps + np.int64(int(self.sensor.time_offset_ns))
        self._sweeps: dict[int, _Sweep | None] = {}
        self.n_without_times = 0

    def _point_times(self, token: str, cloud: Any) -> I64 | None:
        """Per-point firing times relative to the stamp: a point attribute, or the
        ``<file>.time.bin`` sidecar (int32 ns) next to a nuScenes-style LiDAR file."""
        attrs = getattr(cloud, "attrs", {})
        for key in ("time_offset_ns", "t_rel_ns"):
            if key in attrs:
                return np.asarray(attrs[key]).astype(np.int64)
        get = getattr(self.log, "get", None)
        blob_path = getattr(self.log, "blob_path", None)
        if get is None or blob_path is None:
            return None
        filename = get("sample_data", token).get("filename")
        if not filename:
            return None
        path = Path(blob_path(f"{filename}.time.bin", f"per-point times of sample_data {token}"))
        if not path.is_file():
            return None
        times = np.fromfile(path, dtype="<i4").astype(np.int64)
        if times.size != len(cloud):
            raise CalibrationError(
                f"{path}: {times.size} per-point times for {len(cloud)} points of LiDAR "
                f"'{self.lidar}' sample_data {token}"
            )
        return times

    def sweep(self, k: int) -> _Sweep | None:
        """Sweep ``k`` in the world (None when it lies outside the pose track)."""
        if k in self._sweeps:
            return self._sweeps[k]
        token = self.tokens[k]
        cloud = self.log.load_points(token, with_pose=False, with_lidarseg=False)
        xyz = np.asarray(cloud.xyz, dtype=np.float64)
        ring = cloud.attrs.get("ring")
        if ring is None:
            raise CalibrationError(
                f"LiDAR '{self.lidar}' sample_data {token}: points have no 'ring' attribute; "
                "depth edges are searched along each ring"
            )
        t_rel = self._point_times(token, cloud)
        if t_rel is None:
            self.n_without_times += 1
            t_rel = np.zeros(xyz.shape[0], np.int64)
        t_abs = np.int64(self.t_ns[k]) + t_rel
        keep = (t_abs >= self.poses.start_ns) & (t_abs <= self.poses.end_ns)
        if not np.all(keep):
            self._sweeps[k] = None
            return None
        s = self.settings
        edges = lidar_depth_edges(
            xyz, np.asarray(ring), t_rel, min_jump_m=s.min_jump_m, min_jump_ratio=s.min_jump_ratio
        )
        ego_from_lidar: Transform = self.sensor.ego_from_sensor
        r_el, t_el = ego_from_lidar.rotation, ego_from_lidar.translation
        # One pose per firing time (a column of the sweep), not per point.
        uniq, inverse = np.unique(t_abs, return_inverse=True)
        rot, tr = self.poses.interpolate_many(uniq)
        p_ego = xyz @ r_el.T + t_el
        cloud_world = np.einsum("nij,nj->ni", rot[inverse], p_ego) + tr[inverse]
        e_rot, e_tr = self.poses.interpolate_many(np.int64(self.t_ns[k]) + edges.t_rel_ns)
        e_ego = edges.xyz @ r_el.T + t_el
        edges_world = np.einsum("nij,nj->ni", e_rot, e_ego) + e_tr
        sw = _Sweep(int(self.t_ns[k]), edges_world, edges.range_m, cloud_world)
        self._sweeps[k] = sw
        return sw

    def static_mask(self, k: int) -> npt.NDArray[np.bool_]:
        """Edge points of sweep ``k`` that the sweeps ``k ± n`` also hit (within tolerance):
        a point on an object moving at v is displaced by v · n · period and fails."""
        sw = self.sweep(k)
        if sw is None:
            return np.zeros(0, bool)
        if sw.static is not None:
            return sw.static
        from scipy.spatial import cKDTree

        s = self.settings
        tol = s.static_tolerance_m + s.static_tolerance_ratio * sw.edge_range_m
        static = np.ones(sw.edges_world.shape[0], bool)
        for j in (k - s.static_neighbour_sweeps, k + s.static_neighbour_sweeps):
            if not 0 <= j < len(self.tokens) or not static.any():
                continue
            other = self.sweep(j)
            if other is None or other.cloud_world.shape[0] == 0:
                continue
            if other.tree is None:
                other.tree = cKDTree(other.cloud_world, balanced_tree=False, compact_nodes=False)
            dist, _ = other.tree.query(
                sw.edges_world, k=1, distance_upper_bound=float(tol.max()) * 1.01
            )
            static &= dist <= tol
        sw.static = static
        return static


# --------------------------------------------------------------------------------------------
# Projection and cost
# --------------------------------------------------------------------------------------------


@dataclass
class _Frame:
    stamp_ns: int
    token: str
    points_world: F64  # (M, 3)
    weights: F64  # (M,) horizontal image motion per ms of offset (px/ms)
    cost_image: npt.NDArray[np.uint8] | None = None  # truncated edge distance, 255 = tau


class _Projector:
    """World points into the camera with its pose taken at any time of the track."""

    def __init__(self, camera: CameraModel, cam_from_ego: Transform, poses: Trajectory) -> None:
        self.camera = camera
        self.cam_from_ego = cam_from_ego
        self.poses = poses

    def project(self, points_world: F64, t_ns: I64) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
        """Pixels (T, M, 2), depth (T, M) and in-image (T, M) for every time and point."""
        rot_we, tr_we = self.poses.interpolate_many(t_ns)
        rot_ew = np.transpose(rot_we, (0, 2, 1))
        r_ce, t_ce = self.cam_from_ego.rotation, self.cam_from_ego.translation
        rot = np.einsum("ij,tjk->tik", r_ce, rot_ew)
        tr = -np.einsum("tij,tj->ti", rot, tr_we) + t_ce
        pc = np.einsum("tij,mj->tmi", rot, points_world) + tr[:, None, :]
        nt, m = pc.shape[:2]
        uv, depth, inside = self.camera.project(pc.reshape(-1, 3))
        return uv.reshape(nt, m, 2), depth.reshape(nt, m), inside.reshape(nt, m)


def _bilinear(img: npt.NDArray[Any], u: F64, v: F64, fill: float) -> F64:
    """Bilinear samples of ``img`` at pixel coordinates (u, v) (pixel centres at integers);
    ``fill`` outside the image."""
    h, w = img.shape
    inside = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    uc = np.where(inside, u, 0.0)
    vc = np.where(inside, v, 0.0)
    u0 = np.minimum(uc.astype(np.intp), w - 2)
    v0 = np.minimum(vc.astype(np.intp), h - 2)
    fu = uc - u0
    fv = vc - v0
    top = img[v0, u0] * (1.0 - fu) + img[v0, u0 + 1] * fu
    bottom = img[v0 + 1, u0] * (1.0 - fu) + img[v0 + 1, u0 + 1] * fu
    return np.where(inside, top * (1.0 - fv) + bottom * fv, fill)


def _frame_costs(frames: Sequence[_Frame], proj: _Projector, offsets: I64) -> F64:
    """(frames, offsets): Σ weight · min(edge distance, tau) / tau over each frame's points;
    a point outside the image costs the full 1."""
    out = np.zeros((len(frames), offsets.size))
    for fi, fr in enumerate(frames):
        if fr.cost_image is None:  # pragma: no cover - filled before costs are asked for
            raise AVFusionError(f"clock offset: frame {fr.token} has no edge image")
        chunk = max(1, 300_000 // max(1, fr.points_world.shape[0]))
        for a in range(0, offsets.size, chunk):
            t = np.int64(fr.stamp_ns) + offsets[a : a + chunk]
            uv, _depth, inside = proj.project(fr.points_world, t)
            cost = _bilinear(fr.cost_image, uv[..., 0].ravel(), uv[..., 1].ravel(), 255.0)
            cost = np.where(inside.ravel(), cost, 255.0).reshape(inside.shape) / 255.0
            out[fi, a : a + chunk] = cost @ fr.weights
    return out


def _block_resample(
    stamps_ns: I64, block_ns: int, n: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """``n`` bootstrap weightings (n, frames) drawing whole blocks of consecutive frames.

    Consecutive frames see the same objects, so their errors are correlated; resampling
    blocks of ``block_ns`` (at most a twelfth of the time span, so there are enough blocks)
    keeps that correlation in the spread.
    """
    span = int(stamps_ns.max() - stamps_ns.min())
    block = max(1, min(block_ns, span // 12 + 1))
    ids = ((stamps_ns - stamps_ns.min()) // block).astype(np.int64)
    _, ids = np.unique(ids, return_inverse=True)
    n_blocks = int(ids.max()) + 1
    draws = rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n)
    return draws[:, ids]


def _parabola_vertex(x: F64, y: F64, i: int, half: int) -> float:
    """Vertex of the least-squares parabola through the samples within ``half`` of index ``i``
    (clipped to them), or ``x[i]`` when that parabola is not convex."""
    a, b = max(0, i - half), min(x.size, i + half + 1)
    xs, ys = x[a:b], y[a:b]
    if xs.size < 3:
        return float(x[i])
    x0 = float(x[i])
    scale = float(max(xs[-1] - xs[0], 1.0))
    c2, c1, _c0 = np.polyfit((xs - x0) / scale, ys, 2)
    if not np.isfinite(c2) or c2 <= 0:
        return x0
    return float(np.clip(x0 - scale * c1 / (2.0 * c2), xs[0], xs[-1]))


# --------------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------------


def _check_search(search_ns: Any, coarse_step_ns: int, camera: str) -> tuple[int, int]:
    where = f"clock offset of '{camera}'"
    try:
        lo_raw, hi_raw = search_ns
    except (TypeError, ValueError):
        raise SyncError(
            f"{where}: search_ns must be a pair (low, high) of integer nanoseconds, got {search_ns!r}"
        ) from None
    lo = _check_int(lo_raw, f"{where}: search_ns low")
    hi = _check_int(hi_raw, f"{where}: search_ns high")
    if lo >= hi:
        raise SyncError(f"{where}: search_ns must have low < high, got ({lo}, {hi})")
    if max(abs(lo), abs(hi)) > MAX_SEARCH_NS:
        raise SyncError(
            f"{where}: search_ns ({lo}, {hi}) reaches beyond ±{MAX_SEARCH_NS} ns; an offset that "
            "large is not a synchronisation error this method can measure"
        )
    if hi - lo < 4 * coarse_step_ns:
        raise SyncError(
            f"{where}: search_ns ({lo}, {hi}) spans less than 4 coarse steps of {coarse_step_ns} ns"
        )
    return lo, hi


def _check_sensors(log: SweepLog, camera: str, lidar: str) -> tuple[Any, CameraModel]:
    sensors = log.sensors
    known = ", ".join(sorted(sensors))
    if camera not in sensors:
        raise CalibrationError(f"clock offset: unknown camera '{camera}' (sensors: {known})")
    if lidar not in sensors:
        raise CalibrationError(
            f"clock offset of '{camera}': unknown LiDAR '{lidar}' (sensors: {known})"
        )
    cam = sensors[camera]
    modality = getattr(cam, "modality", "?")
    model = getattr(cam, "camera", None)
    if modality not in IMAGE_MODALITIES:
        raise CalibrationError(
            f"clock offset: '{camera}' is a {modality} sensor, not a camera or thermal camera"
        )
    if not isinstance(model, CameraModel):
        raise CalibrationError(
            f"clock offset: camera '{camera}' has no intrinsics (CameraModel); cannot project into it"
        )
    if getattr(sensors[lidar], "modality", "?") != "lidar":
        raise CalibrationError(
            f"clock offset of '{camera}': reference '{lidar}' is a "
            f"{getattr(sensors[lidar], 'modality', '?')} sensor, not a LiDAR"
        )
    return cam, model


def _cost_image(
    log: SweepLog, frame: _Frame, camera: str, tau_px: float, settings: ClockOffsetSettings
) -> npt.NDArray[np.uint8]:
    import cv2

    image = log.load_image(frame.token)
    dist = edge_distance_image(
        image.pixels,
        blur_sigma_px=settings.blur_sigma_px,
        low_snr=settings.low_snr,
        high_snr=settings.high_snr,
        what=f"'{camera}' sample_data {frame.token}",
    )
    # min(d, tau) / tau in 1/255 steps (convertScaleAbs rounds and saturates at 255).
    quantised: npt.NDArray[Any] = cv2.convertScaleAbs(dist, alpha=255.0 / tau_px)
    return quantised


def _estimate(
    log: SweepLog,
    camera: str,
    lidar: str,
    search_ns: tuple[int, int],
    max_frames: int | None,
    track: Trajectory,
    settings: ClockOffsetSettings,
    cache: _LidarCache,
) -> ClockOffsetEstimate:
    started = time.perf_counter()
    s = settings
    cam_sensor, model = _check_sensors(log, camera, lidar)
    lo, hi = _check_search(search_ns, s.coarse_step_ns, camera)
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise ConfigError(f"clock offset of '{camera}': max_frames must be an integer >= 1 or None")
    believed = int(cam_sensor.time_offset_ns)
    skipped: dict[str, int] = {}

    def verdict(reason: str, **kw: Any) -> ClockOffsetEstimate:
        logger.info("clock offset of '%s' vs '%s': not observable: %s", camera, lidar, reason)
        return ClockOffsetEstimate(
            camera, lidar, False, None, float("inf"), 0.0, reason,
            believed_offset_ns=believed, tolerance_ns=s.tolerance_ns, skipped=dict(skipped),
            elapsed_s=time.perf_counter() - started, **kw,
        )  # fmt: skip

    # ---- which camera frames, which LiDAR points --------------------------------------------
    stamps = np.asarray(log.timestamps(camera), dtype=np.int64)
    tokens = list(log.sample_data_tokens(camera))
    if len(tokens) != stamps.size:
        raise SyncError(
            f"camera '{camera}': {stamps.size} time stamps but {len(tokens)} sample_data tokens"
        )
    # Coarse grid over the search range plus a guard band on each side (to tell a minimum
    # inside the range from the slope of one outside it); the fine grid may reach a bit further.
    guard = s.guard_ns
    reach = max(guard, s.fine_halfwidth_ns + s.coarse_step_ns)
    inside_track = (stamps + lo - reach >= track.start_ns) & (stamps + hi + reach <= track.end_ns)
    if np.any(~inside_track):
        skipped["capture time outside the pose track"] = int(np.count_nonzero(~inside_track))
    candidates = np.flatnonzero(inside_track)
    if max_frames is not None and candidates.size > max_frames:
        pick = np.unique(np.round(np.linspace(0, candidates.size - 1, max_frames)).astype(int))
        skipped["beyond max_frames"] = int(candidates.size - pick.size)
        candidates = candidates[pick]
    centre = (lo + hi) // 2
    proj = _Projector(model, cam_sensor.ego_from_sensor.inverse(), track)
    f_px = max(model.fx, model.fy)
    tau_px = float(s.max_distance_px) if s.max_distance_px is not None else max(2.0, 0.006 * f_px)
    margin_px = 2.0 * tau_px
    probe_ns = np.array([centre - 5 * _MS, centre, centre + 5 * _MS], dtype=np.int64)
    period = float(np.median(np.diff(cache.t_ns))) if cache.t_ns.size > 1 else 1e8
    frames: list[_Frame] = []
    for i in candidates:
        t_c = int(stamps[i]) + centre
        k = int(np.argmin(np.abs(cache.t_ns - t_c))) if cache.t_ns.size else -1
        sw = cache.sweep(k) if k >= 0 and abs(int(cache.t_ns[k]) - t_c) <= period else None
        if sw is None:
            skipped["no LiDAR sweep inside the pose track near it"] = (
                skipped.get("no LiDAR sweep inside the pose track near it", 0) + 1
            )
            continue
        pts = sw.edges_world[cache.static_mask(k)] if s.reject_moving else sw.edges_world
        uv, depth, _ = proj.project(pts, np.int64(stamps[i]) + probe_ns)
        u0, v0, d0 = uv[1, :, 0], uv[1, :, 1], depth[1]
        with np.errstate(invalid="ignore"):
            sel = (
                (u0 >= margin_px) & (u0 <= model.width - 1 - margin_px)
                & (v0 >= margin_px) & (v0 <= model.height - 1 - margin_px)
                & (d0 >= s.min_depth_m) & (d0 <= s.max_depth_m)
                & np.isfinite(uv[0, :, 0]) & np.isfinite(uv[2, :, 0])
            )  # fmt: skip
        if not np.any(sel):
            skipped["no LiDAR depth edge in view"] = (
                skipped.get("no LiDAR depth edge in view", 0) + 1
            )
            continue
        weights = np.abs(uv[2, sel, 0] - uv[0, sel, 0]) / 10.0  # px per ms of offset
        frames.append(_Frame(int(stamps[i]), tokens[i], np.ascontiguousarray(pts[sel]), weights))
    n_frames = len(frames)
    n_points = int(sum(f.points_world.shape[0] for f in frames))
    if cache.n_without_times:
        logger.warning(
            "clock offset of '%s': %d sweeps of '%s' have no per-point times; their points are "
            "placed at the sweep stamp, which blurs the estimate by up to half a sweep",
            camera, cache.n_without_times, lidar,
        )  # fmt: skip
    counts: dict[str, Any] = {"n_frames": n_frames, "n_points": n_points}
    if n_frames < s.min_frames:
        return verdict(
            f"only {n_frames} usable frames of '{camera}' (a frame needs its capture time inside "
            f"the pose track over the whole search range and LiDAR depth edges in view); "
            f"need at least {s.min_frames}",
            **counts,
        )
    motion = float(np.mean(np.concatenate([f.weights for f in frames])))
    counts["image_motion_px_per_ms"] = motion
    if motion < s.min_image_motion_px_per_ms:
        return verdict(
            f"the ego does not move enough: a clock offset of 1 ms moves the LiDAR edges by "
            f"{motion:.3g} px in '{camera}' (need at least {s.min_image_motion_px_per_ms:g}); "
            "the cost curve is flat",
            **counts,
        )
    if n_points < s.min_points:
        return verdict(
            f"only {n_points} LiDAR depth-edge points project into '{camera}'; need at least "
            f"{s.min_points}",
            **counts,
        )

    # ---- image edges (threads: decoding and OpenCV release the GIL) ----------------------------
    def fill(fr: _Frame) -> None:
        fr.cost_image = _cost_image(log, fr, camera, tau_px, s)

    fill(frames[0])  # first in this thread, so a log's lazily loaded tables load only once
    if s.workers > 1 and n_frames > 2:
        with ThreadPoolExecutor(max_workers=s.workers) as pool:
            list(pool.map(fill, frames[1:]))
    else:
        for fr in frames[1:]:
            fill(fr)

    # ---- coarse search ------------------------------------------------------------------------
    coarse = np.arange(lo - guard, hi + guard + 1, s.coarse_step_ns, dtype=np.int64)
    s_coarse = _frame_costs(frames, proj, coarse)
    w_frames = np.array([f.weights.sum() for f in frames])
    c_total = s_coarse.sum(axis=0) / w_frames.sum()
    j = int(np.argmin(c_total))
    med = float(np.median(c_total))
    contrast = float((med - c_total[j]) / med) if med > 0 else 0.0
    counts.update(contrast=contrast, offsets_ns=coarse, cost=c_total)
    rng = np.random.default_rng(s.seed)
    resample = _block_resample(
        np.array([f.stamp_ns for f in frames]), s.bootstrap_block_ns, s.n_bootstrap, rng
    )
    w_boot = resample @ w_frames
    boot_j = np.argmin((resample @ s_coarse) / w_boot[:, None], axis=1)
    agree = float(np.mean(np.abs(coarse[boot_j] - coarse[j]) <= s.fine_halfwidth_ns))
    best = int(coarse[j])
    on_border = j <= 1 or j >= coarse.size - 2
    if on_border or not lo <= best <= hi:
        return verdict(
            f"the cost is lowest at {best / 1e6:+.1f} ms, "
            + ("on the border of" if on_border else "outside")
            + f" the search range [{lo / 1e6:+.1f}, {hi / 1e6:+.1f}] ms"
            + (f" plus its {guard / 1e6:g} ms guard band" if guard and on_border else "")
            + ": the offset lies outside the search range (widen search_ns), or is not observable",
            **counts,
        )
    if contrast < s.min_contrast:
        return verdict(
            f"the cost curve is flat: its minimum is only {100 * contrast:.2f} % below its median "
            f"(need {100 * s.min_contrast:.2f} %)",
            **counts,
        )
    if agree < s.min_agreement:
        return verdict(
            f"the cost curve has no clear minimum: only {100 * agree:.0f} % of bootstrap "
            f"resamples of the frames find theirs within {s.fine_halfwidth_ns / 1e6:g} ms of "
            f"{best / 1e6:+.1f} ms (need {100 * s.min_agreement:.0f} %)",
            **counts,
        )

    # ---- fine search, sub-step vertex, bootstrap ----------------------------------------------
    c0 = round(_parabola_vertex(coarse.astype(np.float64), c_total, j, 2))
    fine = np.arange(
        c0 - s.fine_halfwidth_ns, c0 + s.fine_halfwidth_ns + 1, s.fine_step_ns, dtype=np.int64
    )
    s_fine = _frame_costs(frames, proj, fine)
    f_total = s_fine.sum(axis=0) / w_frames.sum()
    half = max(2, round(s.fit_halfwidth_ns / s.fine_step_ns))
    x = fine.astype(np.float64)
    jf = int(np.argmin(f_total))
    estimate = _parabola_vertex(x, f_total, jf, half)
    boot_curves = (resample @ s_fine) / w_boot[:, None]
    boot = np.array([_parabola_vertex(x, c, int(np.argmin(c)), half) for c in boot_curves])
    std = float(np.std(boot, ddof=1))
    confidence = float(np.mean(np.abs(boot - estimate) <= s.tolerance_ns))
    offsets_all = np.concatenate([coarse, fine])
    order = np.argsort(offsets_all, kind="stable")
    counts.update(offsets_ns=offsets_all[order], cost=np.concatenate([c_total, f_total])[order])
    if jf in (0, fine.size - 1) or not np.isfinite(std) or std > s.max_std_ns:
        return verdict(
            f"the offset is too uncertain: bootstrap spread {std / 1e6:.2f} ms (limit "
            f"{s.max_std_ns / 1e6:.2f} ms) around {estimate / 1e6:+.2f} ms",
            **counts,
        )
    result = ClockOffsetEstimate(
        camera, lidar, True, round(estimate), std, confidence, "",
        believed_offset_ns=believed, tolerance_ns=s.tolerance_ns, skipped=dict(skipped),
        elapsed_s=time.perf_counter() - started, **counts,
    )  # fmt: skip
    logger.info("clock offset: %r; frames skipped: %s", result, dict(skipped) or "none")
    return result


def estimate_clock_offset(
    log: SweepLog,
    camera: str,
    lidar: str = "LIDAR_TOP",
    *,
    search_ns: tuple[int, int] = DEFAULT_SEARCH_NS,
    max_frames: int | None = None,
    poses: Trajectory | None = None,
    settings: ClockOffsetSettings | None = None,
) -> ClockOffsetEstimate:
    """Estimate ``camera``'s clock offset relative to ``lidar`` from the data (see the module
    docstring for the method).

    ``search_ns`` is the (low, high) range of offsets tried, integer ns, with the rig's meaning
    ``t_ego = t_stamp + offset``; ``max_frames`` caps the camera frames used (spread evenly);
    ``poses`` replaces the log's ``world_from_ego`` track; ``settings`` tunes the method.
    Returns a ``ClockOffsetEstimate``; when the data cannot determine the offset it has
    ``observable=False``, ``offset_ns=None`` and a ``reason``. Raises ``CalibrationError`` for
    an unknown sensor, a camera without intrinsics or a reference that is not a LiDAR,
    ``SyncError`` for a bad search range, ``ConfigError`` for bad settings.
    """
    s = settings or ClockOffsetSettings()
    _check_sensors(log, camera, lidar)
    _check_search(search_ns, s.coarse_step_ns, camera)
    track = _track(log, poses, camera)
    return _estimate(
        log, camera, lidar, search_ns, max_frames, track, s, _LidarCache(log, lidar, track, s)
    )


def estimate_clock_offsets(
    log: SweepLog,
    cameras: Iterable[str] | None = None,
    lidar: str = "LIDAR_TOP",
    *,
    search_ns: tuple[int, int] = DEFAULT_SEARCH_NS,
    max_frames: int | None = None,
    poses: Trajectory | None = None,
    settings: ClockOffsetSettings | None = None,
) -> dict[str, ClockOffsetEstimate]:
    """``estimate_clock_offset`` for several cameras (default: every camera and thermal camera
    of the log), sharing the LiDAR work between them. Returns camera name → estimate."""
    s = settings or ClockOffsetSettings()
    names = (
        sorted(
            n for n, sen in log.sensors.items() if getattr(sen, "modality", "") in IMAGE_MODALITIES
        )
        if cameras is None
        else list(cameras)
    )
    if isinstance(cameras, str):
        raise CalibrationError(
            f"clock offsets: cameras must be a list of names, got the string '{cameras}'"
        )
    for name in names:  # every argument error before any work
        _check_sensors(log, name, lidar)
        _check_search(search_ns, s.coarse_step_ns, name)
    if not names:
        return {}
    track = _track(log, poses, names[0])
    cache = _LidarCache(log, lidar, track, s)
    return {
        name: _estimate(log, name, lidar, search_ns, max_frames, track, s, cache) for name in names
    }


def _track(log: SweepLog, poses: Trajectory | None, camera: str) -> Trajectory:
    track = log.poses if poses is None else poses
    if not isinstance(track, Trajectory):
        raise CalibrationError(
            f"clock offset of '{camera}': poses must be a Trajectory (world_from_ego), "
            f"got {type(track).__name__}"
        )
    return track
