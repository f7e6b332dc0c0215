"""Targetless LiDAR→camera / LiDAR→thermal extrinsic refinement, and ``calibration.json``.

Method (Levinson & Thrun, RSS 2013, over several frames): LiDAR depth edges (range jumps along
each ring, motion-compensated per point, moving objects rejected by comparing neighbouring
sweeps) are projected into each image; the cost of a candidate extrinsic is the mean
truncated distance of those points to the image's Canny edges (see
``calibration.validation``: ``prepare_alignment``, ``alignment_costs``, ``local_optimum``).
``refine_extrinsic`` searches a rotation grid (±2.5°, 0.5° steps, translation held) for a
start, then minimises over all 6 degrees of freedom coarse to fine (truncation 20 px, then
10 px). The uncertainty is a sandwich estimate from the frame-to-frame scatter of the cost
gradient; the answer is refused (``observable=False`` with a ``reason``) when there are too few
frames or edge points, the cost's curvature is not positive definite, the optimum sits on the
search bound, or the standard deviation exceeds the limits (e.g. a straight empty road, which
has no depth edges, or a scene whose points all lie at one depth, where translation and
rotation cannot be told apart).

The correction is estimated holding the LiDAR's ``ego_from_sensor`` fixed: the result is the
sensor's new ``ego_from_sensor`` (nuScenes ``calibrated_sensor``) and ``cam_from_lidar``.

``refine_radar`` aligns a 2D radar to the LiDAR (yaw about the radar's z axis and translation
in its x-y plane): static detections (ego-motion compensated speed below 0.5 m/s) are placed
in the world and matched, seen from above, to a distance map of the LiDAR returns between 0.2
and 3 m above the ground.

``calibration.json`` (format_version 1) maps each sensor to a nuScenes ``calibrated_sensor``
record (``translation``, ``rotation`` (w, x, y, z), ``camera_intrinsic``) and a ROS
``geometry_msgs/TransformStamped`` for ``/tf_static`` (parent ``base_link`` = ego, child = the
sensor, quaternion x, y, z, w), plus ``time_offset_ns`` and the estimate's quality. Read it
back with ``read_calibration`` (a mapping sensor → ``SensorCalibration``) or pass the path to
``NuScenesLog(path, calibration=...)`` / ``open_log(path, calibration=...)``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import Transform
from avfusion.calibration.validation import (
    AlignmentData,
    AlignmentSettings,
    LocalOptimum,
    _total,
    json_floats,
    local_optimum,
    prepare_alignment,
)
from avfusion.errors import CalibrationError, ConfigError
from avfusion.io.calibration_file import (
    CALIBRATION_FORMAT_VERSION,
    SensorCalibration,
    calibration_record,
    read_calibration,
    write_calibration,
)

__all__ = [
    "CALIBRATION_FORMAT_VERSION",
    "ExtrinsicEstimate",
    "RadarEstimate",
    "RefineSettings",
    "SensorCalibration",
    "calibration_record",
    "read_calibration",
    "refine_extrinsic",
    "refine_radar",
    "write_calibration",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RefineSettings:
    """Limits of ``refine_extrinsic``: the search box (±``max_rotation_deg`` per axis,
    ±``max_translation_m`` per axis), and when to refuse an answer: fewer than ``min_frames``
    frames or ``min_points`` edge points, or a standard deviation above ``max_std_rotation_deg``
    (any axis) or ``max_std_translation_m`` (any axis)."""

    max_rotation_deg: float = 3.0
    max_translation_m: float = 0.5
    min_frames: int = 5
    min_points: int = 300
    max_std_rotation_deg: float = 0.1
    max_std_translation_m: float = 0.03

    def __post_init__(self) -> None:
        for name in ("max_rotation_deg", "max_translation_m", "max_std_rotation_deg",
                     "max_std_translation_m"):  # fmt: skip
            v = getattr(self, name)
            if not isinstance(v, int | float) or not np.isfinite(v) or v <= 0:
                raise ConfigError(f"RefineSettings.{name} must be a finite number > 0, got {v!r}")
        for name in ("min_frames", "min_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"RefineSettings.{name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True, eq=False)
class ExtrinsicEstimate:
    """A refined extrinsic of one camera or thermal camera relative to a LiDAR.

    ``correction`` is ``cam_new_from_cam`` (rotation about the camera axes x right, y down,
    z forward; translation in metres in the camera frame). ``ego_from_sensor`` is the refined
    extrinsic (``before @ correction.inverse()``), or ``None`` when not ``observable`` (then
    ``reason`` says why). ``std_rotation_deg`` / ``std_translation_m`` (3,) per camera axis.
    ``cost_before``/``cost_after``: mean truncated edge distance per point as a fraction of the
    truncation (0 all on edges, 1 none near one).
    """

    sensor: str
    lidar: str
    observable: bool
    reason: str
    ego_from_sensor_before: Transform
    ego_from_sensor: Transform | None
    correction: Transform
    std_rotation_deg: F64
    std_translation_m: F64
    cost_before: float
    cost_after: float
    n_frames: int
    n_points: int
    skipped: Mapping[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cam_from_lidar: Transform | None = None

    @property
    def correction_rotation_deg(self) -> F64:
        return np.degrees(self.correction.as_rotvec())

    @property
    def correction_translation_m(self) -> F64:
        return np.asarray(self.correction.translation, dtype=np.float64)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "lidar": self.lidar,
            "observable": self.observable,
            "reason": self.reason,
            "correction_rotation_deg": json_floats(self.correction_rotation_deg),
            "correction_translation_m": json_floats(self.correction_translation_m),
            "std_rotation_deg": json_floats(self.std_rotation_deg),
            "std_translation_m": json_floats(self.std_translation_m),
            "cost_before": float(self.cost_before),
            "cost_after": float(self.cost_after),
            "n_frames": self.n_frames,
            "n_points": self.n_points,
            "skipped": dict(self.skipped),
        }

    def __repr__(self) -> str:
        if not self.observable:
            return (
                f"ExtrinsicEstimate({self.sensor} vs {self.lidar}: not observable: {self.reason})"
            )
        r, t = self.correction_rotation_deg, 100 * self.correction_translation_m
        return (
            f"ExtrinsicEstimate({self.sensor} vs {self.lidar}: correction rot "
            f"[{r[0]:+.3f}, {r[1]:+.3f}, {r[2]:+.3f}]° trans [{t[0]:+.1f}, {t[1]:+.1f}, {t[2]:+.1f}] cm, "
            f"{self.n_frames} frames, {self.n_points} points)"
        )


def _grid_starts(data: AlignmentData, max_rotation_deg: float, n: int = 2) -> list[F64]:
    half = min(2.5, max_rotation_deg)
    g = np.radians(np.arange(-half, half + 1e-9, 0.5))
    rv = np.array(list(itertools.product(g, g, g)))
    cands = np.c_[rv, np.zeros_like(rv)]
    cost = _total(data, cands, 20.0)
    return [cands[i] for i in np.argsort(cost)[:n]]


def optimise(
    data: AlignmentData, settings: RefineSettings | None = None, *, global_start: bool = True
) -> LocalOptimum:
    """The best 6-DoF correction of prepared data: grid start (when ``global_start``), then
    ``local_optimum`` from the two best grid rotations (and from zero), keeping the lowest."""
    s = settings or RefineSettings()
    starts: list[F64] = [np.zeros(6)]
    if global_start:
        starts += _grid_starts(data, s.max_rotation_deg)
    best: LocalOptimum | None = None
    for st in starts:
        opt = local_optimum(
            data,
            taus_px=(20.0, 10.0),
            max_rotation_deg=s.max_rotation_deg,
            max_translation_m=s.max_translation_m,
            start=st,
        )
        if best is None or opt.cost_best < best.cost_best:
            best = opt
    if best is None:  # pragma: no cover - starts is never empty
        raise CalibrationError(f"optimise '{data.sensor}': no start")
    return best


def refine_extrinsic(
    log: Any,
    sensor: str,
    lidar: str = "LIDAR_TOP",
    *,
    settings: RefineSettings | None = None,
    alignment: AlignmentSettings | None = None,
    data: AlignmentData | None = None,
) -> ExtrinsicEstimate:
    """Refine ``sensor``'s extrinsic (a camera or thermal camera) against ``lidar`` over
    several frames of ``log`` (see the module docstring). ``data`` reuses prepared alignment
    data. Returns an ``ExtrinsicEstimate``; ``observable=False`` with a reason when the data do
    not constrain the answer. Raises ``CalibrationError`` for an unknown sensor or one that is
    not a camera."""
    started = time.perf_counter()
    s = settings or RefineSettings()
    d = data if data is not None else prepare_alignment(log, sensor, lidar, settings=alignment)
    before: Transform = d.ego_from_sensor
    nan3 = np.full(3, np.inf)

    def refuse(reason: str, opt: LocalOptimum | None = None) -> ExtrinsicEstimate:
        logger.info("refine '%s' vs '%s': not observable: %s", sensor, lidar, reason)
        corr = Transform() if opt is None else Transform.from_rotvec(opt.delta[:3], opt.delta[3:])
        return ExtrinsicEstimate(
            sensor, lidar, False, reason, before, None, corr,
            nan3 if opt is None else np.degrees(opt.std[:3]),
            nan3 if opt is None else opt.std[3:],
            float("nan") if opt is None else opt.cost_current,
            float("nan") if opt is None else opt.cost_best,
            d.n_frames, d.n_points, dict(d.skipped), time.perf_counter() - started,
        )  # fmt: skip

    if d.n_frames < s.min_frames:
        return refuse(
            f"only {d.n_frames} usable frames of '{sensor}' with LiDAR depth edges in view "
            f"(need {s.min_frames})"
        )
    if d.n_points < s.min_points:
        return refuse(
            f"only {d.n_points} LiDAR depth-edge points in view of '{sensor}' over {d.n_frames} "
            f"frames (need {s.min_points}): the scene has too little structure (an empty road?)"
        )
    opt = optimise(d, s)
    std_r, std_t = np.degrees(opt.std[:3]), opt.std[3:]
    if not opt.positive_definite:
        return refuse("the cost has no clear minimum (its curvature is not positive definite)", opt)
    if opt.on_bound:
        return refuse(
            f"the best correction lies on the search bound (±{s.max_rotation_deg}°, "
            f"±{s.max_translation_m} m): the error is larger, or the data do not constrain it",
            opt,
        )
    axes = ("x", "y", "z")
    if np.max(std_r) > s.max_std_rotation_deg or np.max(std_t) > s.max_std_translation_m:
        worst = [f"rotation about {a} ±{v:.3f}°" for a, v in zip(axes, std_r, strict=True)
                 if v > s.max_std_rotation_deg]  # fmt: skip
        worst += [f"translation along {a} ±{100 * v:.1f} cm" for a, v in zip(axes, std_t, strict=True)
                  if v > s.max_std_translation_m]  # fmt: skip
        return refuse(
            "the data do not constrain "
            + ", ".join(worst)
            + f" (limits {s.max_std_rotation_deg}°, {100 * s.max_std_translation_m:.0f} cm)",
            opt,
        )
    corr = Transform.from_rotvec(opt.delta[:3], opt.delta[3:])
    after = before @ corr.inverse()
    lidar_sensor = log.sensors[lidar]
    cam_from_lidar = after.inverse() @ lidar_sensor.ego_from_sensor
    result = ExtrinsicEstimate(
        sensor, lidar, True, "", before, after, corr, std_r, std_t, opt.cost_current,
        opt.cost_best, d.n_frames, d.n_points, dict(d.skipped), time.perf_counter() - started,
        cam_from_lidar,
    )  # fmt: skip
    logger.info("refine: %r", result)
    return result


# --------------------------------------------------------------------------------------------
# Radar → LiDAR: yaw and planar translation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RadarEstimate:
    """A refined radar extrinsic (yaw about the radar's z axis and translation in its x-y
    plane; a 2D radar measures neither height nor pitch/roll) relative to a LiDAR.

    ``correction`` is ``radar_new_from_radar``; ``ego_from_sensor`` the refined extrinsic
    (``before @ correction.inverse()``), ``None`` when not ``observable``. ``std_yaw_deg``,
    ``std_translation_m`` (2,): frame-to-frame scatter (sandwich estimate). Costs: mean
    truncated bird's-eye distance of the static radar detections to LiDAR returns, as a
    fraction of the truncation.
    """

    sensor: str
    lidar: str
    observable: bool
    reason: str
    ego_from_sensor_before: Transform
    ego_from_sensor: Transform | None
    correction: Transform
    std_yaw_deg: float
    std_translation_m: F64
    cost_before: float
    cost_after: float
    n_frames: int
    n_points: int
    elapsed_s: float = 0.0

    @property
    def correction_yaw_deg(self) -> float:
        return float(np.degrees(self.correction.as_rotvec()[2]))

    def as_dict(self) -> dict[str, Any]:
        t = self.correction.translation
        return {
            "sensor": self.sensor,
            "lidar": self.lidar,
            "observable": self.observable,
            "reason": self.reason,
            "correction_yaw_deg": self.correction_yaw_deg,
            "correction_translation_m": [float(t[0]), float(t[1])],
            "std_yaw_deg": float(self.std_yaw_deg) if np.isfinite(self.std_yaw_deg) else None,
            "std_translation_m": [
                float(v) if np.isfinite(v) else None for v in self.std_translation_m
            ],
            "cost_before": float(self.cost_before),
            "cost_after": float(self.cost_after),
            "n_frames": self.n_frames,
            "n_points": self.n_points,
        }


_RADAR_UNIT = np.array([np.radians(0.1), 0.01, 0.01])  # 0.1°, 1 cm


def _bev_map(world_points: F64, cell_m: float) -> tuple[npt.NDArray[np.float32], F64, float]:
    """Distance (m) from each cell of a bird's-eye grid to the nearest occupied cell."""
    import cv2

    lo = world_points[:, :2].min(axis=0) - 5.0
    hi = world_points[:, :2].max(axis=0) + 5.0
    size = np.ceil((hi - lo) / cell_m).astype(int) + 1
    if size[0] * size[1] > 40_000_000:
        raise CalibrationError(
            f"radar alignment: the LiDAR map spans {hi - lo} m; too large for {cell_m} m cells"
        )
    occ = np.full((int(size[1]), int(size[0])), 255, np.uint8)
    ij = np.floor((world_points[:, :2] - lo) / cell_m).astype(int)
    occ[ij[:, 1], ij[:, 0]] = 0
    dist = cv2.distanceTransform(occ, cv2.DIST_L2, cv2.DIST_MASK_5).astype(np.float32) * cell_m
    return dist, lo, cell_m


def refine_radar(
    log: Any,
    radar: str = "RADAR_FRONT",
    lidar: str = "LIDAR_TOP",
    *,
    max_frames: int = 80,
    max_speed_mps: float = 0.5,
    min_height_m: float = 0.2,
    max_height_m: float = 3.0,
    tau_m: float = 0.5,
    max_yaw_deg: float = 5.0,
    max_translation_m: float = 0.5,
    max_std_yaw_deg: float = 0.3,
    max_std_translation_m: float = 0.1,
    min_points: int = 200,
) -> RadarEstimate:
    """Refine a radar's yaw and planar translation against a LiDAR over several sweeps.

    Static radar detections (ego-motion compensated speed below ``max_speed_mps``), each
    placed in the world with the pose at its sweep's capture time (clock offset applied),
    should lie on LiDAR returns between ``min_height_m`` and ``max_height_m`` above the ego
    origin (the structures a 2D radar sees), seen from above. The LiDAR returns of the sweeps
    nearest to the radar sweeps are placed in the world at their own firing times and
    rasterised (0.1 m cells) into one distance map; the cost of a detection is its distance to
    the nearest return, truncated at ``tau_m``. A rotation grid start is followed by a bounded
    Powell search over (yaw, x, y) in the radar frame; refused when too few detections remain
    or the standard deviation exceeds ``max_std_yaw_deg`` / ``max_std_translation_m``.
    """
    from scipy.optimize import minimize

    from avfusion.calibration.validation import AlignmentSettings, _lidar_cache

    started = time.perf_counter()
    sensors = log.sensors
    known = ", ".join(sorted(sensors))
    if radar not in sensors or getattr(sensors[radar], "modality", "") != "radar":
        raise CalibrationError(
            f"refine_radar: '{radar}' is not a radar of the log (sensors: {known})"
        )
    if lidar not in sensors or getattr(sensors[lidar], "modality", "") != "lidar":
        raise CalibrationError(
            f"refine_radar: '{lidar}' is not a LiDAR of the log (sensors: {known})"
        )
    r_sensor = sensors[radar]
    before: Transform = r_sensor.ego_from_sensor
    track = log.poses
    cache = _lidar_cache(log, lidar, AlignmentSettings())
    stamps = np.asarray(log.timestamps(radar), dtype=np.int64) + int(r_sensor.time_offset_ns)
    tokens = list(log.sample_data_tokens(radar))
    cand = np.flatnonzero((stamps >= track.start_ns) & (stamps <= track.end_ns))
    if cand.size > max_frames:
        cand = cand[np.unique(np.round(np.linspace(0, cand.size - 1, max_frames)).astype(int))]
    pts: list[F64] = []
    rots: list[F64] = []
    trs: list[F64] = []
    frame_of: list[npt.NDArray[np.intp]] = []
    lidar_world: list[F64] = []
    used_sweeps: set[int] = set()
    n_frames = 0
    for i in cand.tolist():
        cloud = log.load_points(tokens[i], with_pose=False, with_lidarseg=False)
        vx = np.asarray(cloud.attrs.get("vx_comp", np.zeros(len(cloud))), np.float64)
        vy = np.asarray(cloud.attrs.get("vy_comp", np.zeros(len(cloud))), np.float64)
        static = np.hypot(vx, vy) < max_speed_mps
        if not np.any(static):
            continue
        t = int(stamps[i])
        k = int(np.argmin(np.abs(cache.t_ns - t)))
        if k not in used_sweeps:
            sw = cache.sweep(k)
            if sw is None:
                continue
            used_sweeps.add(k)
            lidar_world.append(sw.cloud_world)
        world_from_radar = track.at(t) @ before
        p = np.asarray(cloud.xyz, np.float64)[static]
        pts.append(p)
        rots.append(np.broadcast_to(world_from_radar.rotation, (p.shape[0], 3, 3)))
        trs.append(np.broadcast_to(world_from_radar.translation, (p.shape[0], 3)))
        frame_of.append(np.full(p.shape[0], n_frames, np.intp))
        n_frames += 1
    n_points = int(sum(p.shape[0] for p in pts))
    nan2 = np.full(2, np.inf)

    def refuse(reason: str) -> RadarEstimate:
        return RadarEstimate(
            radar, lidar, False, reason, before, None, Transform(), float("inf"), nan2,
            float("nan"), float("nan"), n_frames, n_points, time.perf_counter() - started,
        )  # fmt: skip

    if n_points < min_points or not lidar_world:
        return refuse(
            f"only {n_points} static detections of '{radar}' in {n_frames} sweeps with a LiDAR "
            f"sweep beside them (need {min_points})"
        )
    # LiDAR map: returns in the height band of the ego at their sweep (z in the ego frame).
    world = np.concatenate(lidar_world)
    _, tr_all = track.interpolate_many(np.asarray(sorted(cache.t_ns[list(used_sweeps)])))
    z_ground = float(np.median(tr_all[:, 2]))
    band = (world[:, 2] - z_ground >= min_height_m) & (world[:, 2] - z_ground <= max_height_m)
    dist_map, origin, cell = _bev_map(world[band], 0.1)
    h, w = dist_map.shape
    p_r = np.concatenate(pts)
    rot = np.concatenate(rots)
    tr = np.concatenate(trs)
    fidx = np.concatenate(frame_of)

    def per_point(x_units: F64, tau: float) -> F64:
        """(K, N) truncated cost for candidates (K, 3) in search units: ``corr`` maps radar
        coordinates into the believed radar frame (``ego_from_new = before @ corr``)."""
        d = np.atleast_2d(x_units) * _RADAR_UNIT
        c, s = np.cos(d[:, 0]), np.sin(d[:, 0])
        px = c[:, None] * p_r[None, :, 0] - s[:, None] * p_r[None, :, 1] + d[:, 1:2]
        py = s[:, None] * p_r[None, :, 0] + c[:, None] * p_r[None, :, 1] + d[:, 2:3]
        pz = np.broadcast_to(p_r[None, :, 2], px.shape)
        q = np.stack([px, py, pz], axis=-1)  # (K, N, 3) corrected, radar frame
        wxy = np.einsum("nij,knj->kni", rot[:, :2, :], q) + tr[None, :, :2]
        u = (wxy[..., 0] - origin[0]) / cell
        v = (wxy[..., 1] - origin[1]) / cell
        ok = (u >= 0) & (u <= w - 2) & (v >= 0) & (v <= h - 2)
        uc, vc = np.where(ok, u, 0.0), np.where(ok, v, 0.0)
        u0, v0 = uc.astype(np.intp), vc.astype(np.intp)
        fu, fv = uc - u0, vc - v0
        dist = (
            dist_map[v0, u0] * (1 - fu) * (1 - fv) + dist_map[v0, u0 + 1] * fu * (1 - fv)
            + dist_map[v0 + 1, u0] * (1 - fu) * fv + dist_map[v0 + 1, u0 + 1] * fu * fv
        )  # fmt: skip
        return np.where(ok, np.minimum(dist, tau) / tau, 1.0)

    lim = np.array([max_yaw_deg * 10.0, max_translation_m * 100.0, max_translation_m * 100.0])
    yaw_grid = np.arange(-max_yaw_deg, max_yaw_deg + 1e-9, 0.25) * 10.0
    grid = np.c_[yaw_grid, np.zeros((yaw_grid.size, 2))]
    x = grid[int(np.argmin(per_point(grid, 2.0 * tau_m).mean(axis=1)))]
    for tau in (2.0 * tau_m, tau_m):
        res = minimize(
            lambda xx, tau=tau: float(per_point(xx, tau).mean()), x, method="Powell",
            bounds=list(zip(-lim, lim, strict=True)), options={"xtol": 0.02, "ftol": 1e-7},
        )  # fmt: skip
        x = np.asarray(res.x, np.float64)
    cost_before = float(per_point(np.zeros(3), tau_m).mean())
    cost_after = float(per_point(x, tau_m).mean())
    # Sandwich covariance, steps of 0.2° and 5 cm (about one map cell at 15 m).
    step = np.array([2.0, 5.0, 5.0])
    e = np.diag(step)
    pairs = [(0, 1), (0, 2), (1, 2)]
    cands = [x, *(x + e[i] for i in range(3)), *(x - e[i] for i in range(3))]
    for i, j in pairs:
        cands += [x + e[i] + e[j], x + e[i] - e[j], x - e[i] + e[j], x - e[i] - e[j]]
    pc = per_point(np.asarray(cands), tau_m) / n_points
    tot = pc.sum(axis=1)
    hess = np.zeros((3, 3))
    for i in range(3):
        hess[i, i] = (tot[1 + i] - 2 * tot[0] + tot[4 + i]) / step[i] ** 2
    for p_i, (i, j) in enumerate(pairs):
        a, b, c, d = tot[7 + 4 * p_i : 11 + 4 * p_i]
        hess[i, j] = hess[j, i] = (a - b - c + d) / (4 * step[i] * step[j])
    g = (pc[1:4] - pc[4:7]) / (2 * step[:, None])  # (3, N)
    g_f = np.stack([np.bincount(fidx, weights=row, minlength=n_frames) for row in g])
    counts = np.bincount(fidx, minlength=n_frames) / n_points
    g_f = g_f - g_f.sum(axis=1, keepdims=True) * counts[None, :]
    b_mat = g_f @ g_f.T * (n_frames / max(n_frames - 1, 1))
    if np.linalg.eigvalsh(hess).min() <= 0:
        return refuse("the cost has no clear minimum (its curvature is not positive definite)")
    h_inv = np.linalg.inv(hess)
    std = np.sqrt(np.maximum(np.diag(h_inv @ b_mat @ h_inv), 0.0)) * _RADAR_UNIT
    std_yaw, std_t = float(np.degrees(std[0])), std[1:]
    corr = Transform.from_rotvec([0.0, 0.0, x[0] * _RADAR_UNIT[0]], [x[1] * 0.01, x[2] * 0.01, 0.0])
    after = before @ corr
    if np.any(np.abs(x) >= 0.99 * lim):
        return refuse(
            f"the best correction lies on the search bound (±{max_yaw_deg}°, ±{max_translation_m} m)"
        )
    if std_yaw > max_std_yaw_deg or np.max(std_t) > max_std_translation_m:
        return refuse(
            f"the data do not constrain the radar: yaw ±{std_yaw:.2f}°, translation "
            f"±{100 * std_t[0]:.1f} / ±{100 * std_t[1]:.1f} cm (limits {max_std_yaw_deg}°, "
            f"{100 * max_std_translation_m:.0f} cm)"
        )
    return RadarEstimate(
        radar, lidar, True, "", before, after, corr.inverse(), std_yaw, std_t,
        cost_before, cost_after, n_frames, n_points, time.perf_counter() - started,
    )  # fmt: skip
