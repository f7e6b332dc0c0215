"""Multi-sweep LiDAR aggregation around a keyframe: the point input of occupancy ground truth.

One sweep of a 32-beam LiDAR leaves most of an 80 m grid empty. Occupancy ground truth
(Occ3D, SurroundOcc) therefore gathers the sweeps around each keyframe, and has to do that
without smearing the world:

* **Static points** (in no labelled box) are placed where they were in the world at their own
  capture time: each sweep is deskewed with its per-point times (``fusion.deskew``; sweeps
  without per-point times are taken at their stamp) and expressed in the *grid frame*, the
  ego frame at the keyframe's LiDAR time (Occ3D's convention).
* **Object points** (inside a tracked box at their capture time) are moved with the box: taken
  into the box's own frame at the time they were seen and re-placed at the box's pose at the
  keyframe, so a car passing at 10 m/s is as dense and sharp as a parked one. Box poses between
  annotations (nuScenes annotates keyframes only, 2 Hz) are interpolated per track (slerp +
  lerp) and extrapolated at most ``track_tolerance_s`` past a track's ends. A sweep is cut
  into ``time_slices`` slices by capture time and each slice uses the box poses at its centre
  time, so a rotating LiDAR's 50 ms sweep does not smear moving boxes. Points of a track that
  has no box at the keyframe (it left the annotated range, or was not labelled then) cannot
  be placed, and are dropped and counted.
* **Removed**: ego self-returns (inside ``ego_box_m`` in the ego frame, and lidarseg
  ``vehicle.ego``), lidarseg ``noise`` and non-finite points, each counted.

Semantics (Occ3D-nuScenes classes, ``OCC3D_CLASSES``): a point's lidarseg class when the log has
lidarseg for its sweep (nuScenes: keyframes only), else its box's class, else unlabelled (255;
``occupancy.py`` gives such voxels the class of the nearest labelled voxel, else ``others``).
Lidarseg points inside a box whose lidarseg class is not an object class (ground under a car,
a wall behind a pedestrian) stay static. Classes map from nuScenes category names
(``occ3d_class``), the standard lidarseg-32 → Occ3D-16 mapping.

Every returned point also keeps the ray it was seen along: ``ray_end`` (where the return was, at
its capture time, grid frame) and the sensor origin at that time, for free-space ray casting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import (
    Trajectory,
    Transform,
    matrix_from_quaternion,
    quaternion_multiply,
    slerp_quaternions,
)
from avfusion.errors import ConfigError, LogFormatError, SyncError
from avfusion.fusion.deskew import POINT_TIME_ATTR, deskew
from avfusion.fusion.voxel import points_in_boxes
from avfusion.types import Boxes3D, PointCloud, Sensor

__all__ = [
    "OCC3D_CLASSES",
    "UNLABELLED",
    "AggregatedSweeps",
    "AggregationOptions",
    "aggregate_keyframe",
    "occ3d_class",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: Occ3D-nuScenes classes (index = value in ``labels.npz`` ``semantics``; 17 = free).
OCC3D_CLASSES: tuple[str, ...] = (
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
    "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
    "sidewalk", "terrain", "manmade", "vegetation", "free",
)  # fmt: skip
#: Point label for "no class known yet" (no lidarseg, in no box).
UNLABELLED = 255
#: Returned by ``occ3d_class`` for classes whose points are removed (noise, the ego vehicle).
DROPPED = -1

_CATEGORY_TO_OCC3D: dict[str, int] = {
    "noise": DROPPED,
    "vehicle.ego": DROPPED,
    "movable_object.barrier": 1,
    "vehicle.bicycle": 2,
    "vehicle.bus.bendy": 3,
    "vehicle.bus.rigid": 3,
    "vehicle.car": 4,
    "vehicle.construction": 5,
    "vehicle.motorcycle": 6,
    "human.pedestrian.adult": 7,
    "human.pedestrian.child": 7,
    "human.pedestrian.construction_worker": 7,
    "human.pedestrian.police_officer": 7,
    "movable_object.trafficcone": 8,
    "vehicle.trailer": 9,
    "vehicle.truck": 10,
    "flat.driveable_surface": 11,
    "flat.other": 12,
    "flat.sidewalk": 13,
    "flat.terrain": 14,
    "static.manmade": 15,
    "static.vegetation": 16,
}
#: Occ3D classes of things that move with their box (lidarseg points of other classes inside a
#: box stay static).
_OBJECT_CLASSES = range(0, 11)


def occ3d_class(category: str) -> int:
    """Occ3D-nuScenes class of a nuScenes (lidarseg) category name.

    The standard lidarseg-32 → 16 mapping (Occ3D's): e.g. all adult/child/worker/police
    pedestrians → 7 ``pedestrian``; categories outside the 16 (animal, stroller, debris,
    bicycle rack, emergency vehicles, ``static.other``) → 0 ``others``; ``noise`` and
    ``vehicle.ego`` → ``DROPPED`` (-1): their points are removed.
    """
    return _CATEGORY_TO_OCC3D.get(str(category), 0)


class _AggregationLog(Protocol):
    """What aggregation needs from a log (``NuScenesLog`` has it; convert bags first)."""

    @property
    def poses(self) -> Trajectory: ...
    @property
    def sample_tokens(self) -> list[str]: ...
    def sample_index(self, sample_token_or_index: str | int) -> int: ...
    def keyframe_data(self, sample_token_or_index: str | int) -> dict[str, str]: ...
    def sample_data_window(self, sd_token: str, before: int, after: int) -> list[str]: ...
    def sample_time_ns(self, sample_token_or_index: str | int) -> int: ...
    def load_points(self, sd_token: str, **kwargs: Any) -> PointCloud: ...
    def ego_pose(self, sd_token: str) -> Transform: ...
    def boxes3d(self, sample_token_or_index: str | int) -> Boxes3D: ...
    def get(self, table: str, token: str, referrer: str = "") -> dict[str, Any]: ...
    def table(self, name: str) -> list[dict[str, Any]]: ...


# --------------------------------------------------------------------------------------------
# Options and result
# --------------------------------------------------------------------------------------------

#: The nuScenes ego vehicle (Renault Zoe, 4.08 × 1.73 × 1.56 m; ego origin at the rear axle on
#: the ground) with a margin, plus the roof LiDAR's mount: (x0, y0, z0, x1, y1, z1) in metres.
NUSCENES_EGO_BOX_M = (-1.2, -1.1, -0.5, 3.6, 1.1, 2.1)


@dataclass(frozen=True)
class AggregationOptions:
    """How the sweeps around a keyframe are gathered.

    ``sweeps``: K, the number of LiDAR sweeps taken on each side of the keyframe (±K, so up to
    2K + 1 sweeps; fewer at the ends of a scene). ``lidar``: the LiDAR channel.
    ``deskew``: use per-point capture times where the log has them. ``time_slices``: slices per
    sweep for the box poses of moving objects (≥ 1). ``box_margin_m``: (length, width, height)
    metres added on each side of a box when collecting its points (labels are a little tight).
    ``track_tolerance_s``: how far past its first/last annotation a track's box is extrapolated.
    ``pose_tolerance_s``: how far past the ego pose track a point's capture time may reach
    (the pose is extrapolated at the last segment's rate; a sweep's last points are often
    captured after the last pose).
    ``ego_box_m``: (x0, y0, z0, x1, y1, z1) in the ego frame; returns inside are self-returns.
    """

    sweeps: int = 10
    lidar: str = "LIDAR_TOP"
    deskew: bool = True
    time_slices: int = 5
    box_margin_m: tuple[float, float, float] = (0.2, 0.2, 0.1)
    track_tolerance_s: float = 0.6
    pose_tolerance_s: float = 0.05
    ego_box_m: tuple[float, float, float, float, float, float] = NUSCENES_EGO_BOX_M

    def __post_init__(self) -> None:
        if isinstance(self.sweeps, bool) or not isinstance(self.sweeps, int) or self.sweeps < 0:
            raise ConfigError(
                f"AggregationOptions.sweeps must be an integer >= 0, got {self.sweeps!r}"
            )
        if (
            isinstance(self.time_slices, bool)
            or not isinstance(self.time_slices, int)
            or self.time_slices < 1
        ):
            raise ConfigError(
                f"AggregationOptions.time_slices must be an integer >= 1, got {self.time_slices!r}"
            )
        margin = np.asarray(self.box_margin_m, dtype=np.float64)
        if margin.shape != (3,) or not np.all(np.isfinite(margin)) or np.any(margin < 0):
            raise ConfigError(
                f"AggregationOptions.box_margin_m must be three finite numbers >= 0, got {self.box_margin_m!r}"
            )
        if not (math.isfinite(self.pose_tolerance_s) and self.pose_tolerance_s >= 0):
            raise ConfigError(
                f"AggregationOptions.pose_tolerance_s must be finite and >= 0, got {self.pose_tolerance_s!r}"
            )
        if not (math.isfinite(self.track_tolerance_s) and self.track_tolerance_s >= 0):
            raise ConfigError(
                f"AggregationOptions.track_tolerance_s must be finite and >= 0, got {self.track_tolerance_s!r}"
            )
        ego = np.asarray(self.ego_box_m, dtype=np.float64)
        if ego.shape != (6,) or not np.all(np.isfinite(ego)) or np.any(ego[3:] < ego[:3]):
            raise ConfigError(
                "AggregationOptions.ego_box_m must be (x0, y0, z0, x1, y1, z1) with x0 <= x1, "
                f"y0 <= y1, z0 <= z1, got {self.ego_box_m!r}"
            )


@dataclass(frozen=True, eq=False)
class AggregatedSweeps:
    """The points gathered around one keyframe, in the grid frame (ego at the keyframe).

    Per point (N,): ``points`` (N, 3) where it belongs at the keyframe (objects re-placed with
    their box), ``ray_end`` (N, 3) where it was seen, ``ray_origin`` (N, 3) the sensor origin
    it was seen from, ``labels`` uint8 Occ3D class (``UNLABELLED`` = 255 when unknown),
    ``box_index`` int32 index into ``boxes`` (-1: static), ``sweep`` int16 index into
    ``sweep_tokens`` (``keyframe_token``: the keyframe sweep's sample_data token). ``boxes``: the keyframe's annotations in the grid frame, with
    ``attrs["occ3d"]`` their class. ``counts``: what was read, removed and kept (names below).
    """

    sample_token: str
    keyframe_token: str
    t_ns: int
    world_from_grid: Transform
    points: F64
    ray_end: F64
    ray_origin: F64
    labels: npt.NDArray[np.uint8]
    box_index: npt.NDArray[np.int32]
    sweep: npt.NDArray[np.int16]
    sweep_tokens: tuple[str, ...]
    boxes: Boxes3D
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.points.shape[0])


# --------------------------------------------------------------------------------------------
# Tracks: box poses between annotations
# --------------------------------------------------------------------------------------------


class _Tracks:
    """World-frame box trajectories of every instance annotated in some samples, packed so
    that the boxes of all tracks at one time come out of a few vectorised steps.

    Between two annotations of a track its pose is slerped and lerped; past its first or last
    annotation it is extrapolated at the end segment's rate (constant for a single annotation)
    up to ``tolerance_ns``; beyond that the track has no box.
    """

    def __init__(self, log: _AggregationLog, samples: Sequence[int], tolerance_ns: int) -> None:
        rows: dict[str, list[tuple[int, F64, F64, F64]]] = {}
        category: dict[str, str] = {}
        for s in samples:
            t_ns = log.sample_time_ns(s)
            boxes = log.boxes3d(s)
            for b in range(len(boxes)):
                track = str(boxes.track_id[b])
                rows.setdefault(track, []).append(
                    (t_ns, boxes.rotation[b], boxes.center[b], boxes.size[b])
                )
                category[track] = str(boxes.label[b])
        self.names = sorted(rows)
        n, m = len(self.names), max((len(r) for r in rows.values()), default=1)
        self.t = np.full((n, m), np.iinfo(np.int64).max, dtype=np.int64)
        self.q = np.zeros((n, m, 4))
        self.c = np.zeros((n, m, 3))
        self.length = np.zeros(n, dtype=np.int64)
        self.size = np.zeros((n, 3))
        self.occ3d = np.zeros(n, dtype=np.int16)
        for i, name in enumerate(self.names):
            entries = sorted(rows[name], key=lambda r: r[0])
            t = np.array([r[0] for r in entries], dtype=np.int64)
            keep = np.concatenate([[True], np.diff(t) > 0])
            if not keep.all():
                logger.info(
                    "track %s: %d annotations share a sample time; kept the first",
                    name,
                    int((~keep).sum()),
                )
            k = int(keep.sum())
            self.t[i, :k] = t[keep]
            q = np.array([r[1] for r in entries])[keep]
            self.q[i, :k] = q / np.linalg.norm(q, axis=1, keepdims=True)
            self.c[i, :k] = np.array([r[2] for r in entries])[keep]
            self.size[i] = np.median(np.array([r[3] for r in entries])[keep], axis=0)
            self.length[i] = k
            self.occ3d[i] = occ3d_class(category[name])
        self.tolerance_ns = int(tolerance_ns)

    def at(self, t_ns: int) -> tuple[npt.NDArray[np.intp], F64, F64]:
        """Tracks with a box at ``t_ns`` (indices into ``names``) and their world-frame box
        quaternions (K, 4) (w, x, y, z) and centres (K, 3)."""
        if not self.names:
            return np.zeros(0, dtype=np.intp), np.zeros((0, 4)), np.zeros((0, 3))
        rows = np.arange(len(self.names))
        first = self.t[:, 0]
        last = self.t[rows, self.length - 1]
        live = np.flatnonzero(
            (first - self.tolerance_ns <= t_ns) & (t_ns <= last + self.tolerance_ns)
        )
        t, length = self.t[live], self.length[live]
        single = length == 1
        seg = np.clip((t <= t_ns).sum(axis=1) - 1, 0, np.maximum(length - 2, 0))
        nxt = np.where(single, seg, seg + 1)
        t0, t1 = t[np.arange(live.size), seg], t[np.arange(live.size), nxt]
        span = np.where(single, 1, t1 - t0).astype(np.float64)
        alpha = np.where(single, 0.0, (t_ns - t0).astype(np.float64) / span)
        q = slerp_quaternions(self.q[live, seg], self.q[live, nxt], alpha)
        c = (1.0 - alpha)[:, None] * self.c[live, seg] + alpha[:, None] * self.c[live, nxt]
        return live, q, c


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def _neighbour_samples(log: _AggregationLog, index: int, t_lo: int, t_hi: int) -> list[int]:
    """Sample indices of the keyframe's scene whose time lies in [t_lo, t_hi], plus one more
    on each side (so a track can be interpolated up to the window's edges)."""
    token = log.sample_tokens[index]
    out = [index]
    for link, inside in (("prev", lambda t: t >= t_lo), ("next", lambda t: t <= t_hi)):
        tok = token
        while True:
            nxt = log.get("sample", tok).get(link) or ""
            if not nxt:
                break
            try:
                j = log.sample_index(nxt)
            except LogFormatError:
                break  # outside the log's selected scene
            out.append(j)
            if not inside(log.sample_time_ns(j)):
                break
            tok = nxt
    return sorted(out)


def _lidarseg_lut(log: _AggregationLog) -> tuple[npt.NDArray[np.int16], int]:
    """lidarseg index (0..255) → Occ3D class (-1 dropped), from the category table, and the
    index of ``vehicle.ego`` (-1 when the table has none)."""
    lut = np.zeros(256, dtype=np.int16)
    ego_index = -1
    for row in log.table("category"):
        index = row.get("index")
        if isinstance(index, int) and 0 <= index < 256:
            lut[index] = occ3d_class(str(row.get("name", "")))
            if row.get("name") == "vehicle.ego":
                ego_index = index
    return lut, ego_index


def _in_ego_box(points_ego: npt.NDArray[Any], box: Sequence[float]) -> npt.NDArray[np.bool_]:
    lo, hi = np.asarray(box[:3]), np.asarray(box[3:])
    return np.all((points_ego >= lo) & (points_ego <= hi), axis=1)


def _apply(rot: F64, trans: F64, points: npt.NDArray[Any]) -> F64:
    """rot @ p + trans for (N, 3) points (float64 result), without a BLAS call."""
    p = np.asarray(points, dtype=np.float64)
    return p[:, 0:1] * rot[:, 0] + p[:, 1:2] * rot[:, 1] + p[:, 2:3] * rot[:, 2] + trans


def aggregate_keyframe(
    log: _AggregationLog,
    sample: str | int,
    options: AggregationOptions | None = None,
) -> AggregatedSweeps:
    """Gather the LiDAR sweeps around keyframe ``sample`` (token or index) into the grid frame.

    See the module docstring for what happens to static points, object points and removed
    points. Raises ``LogFormatError`` when the keyframe has no ``options.lidar`` data.
    """
    opts = options or AggregationOptions()
    index = log.sample_index(sample)
    token = log.sample_tokens[index]
    kf_sd = log.keyframe_data(index).get(opts.lidar)
    if kf_sd is None:
        raise LogFormatError(f"sample {token}: no keyframe of LiDAR '{opts.lidar}'")
    window = log.sample_data_window(kf_sd, opts.sweeps, opts.sweeps)
    poses = log.poses
    world_from_grid = log.ego_pose(kf_sd)
    grid_from_world = world_from_grid.inverse()

    clouds = [log.load_points(tok) for tok in window]
    kf_cloud = clouds[window.index(kf_sd)]
    sensor: Sensor = kf_cloud.sensor
    t_kf = kf_cloud.t_ns
    offset = sensor.time_offset_ns
    # ego-clock span of the window, for the annotations needed
    t_lo = min(c.t_ns for c in clouds) + offset - 100_000_000
    t_hi = max(c.t_ns for c in clouds) + offset + 100_000_000
    tol_ns = round(opts.track_tolerance_s * 1e9)
    tracks = _Tracks(log, _neighbour_samples(log, index, t_lo, t_hi), tol_ns)
    track_names = np.array(tracks.names, dtype=np.str_)
    kf_boxes_world = log.boxes3d(index)
    kf_track_row = {str(t): b for b, t in enumerate(kf_boxes_world.track_id)}
    kf_row_of_track = np.array([kf_track_row.get(n, -1) for n in tracks.names], dtype=np.int64)
    box_kf = kf_boxes_world.transformed(grid_from_world, "grid")
    box_kf = Boxes3D(
        box_kf.center, box_kf.size, box_kf.rotation, box_kf.label, box_kf.track_id, "grid",
        box_kf.velocity, box_kf.token,
        {**box_kf.attrs, "occ3d": np.array([occ3d_class(c) for c in box_kf.label], dtype=np.int16)},
    )  # fmt: skip
    kf_rot = box_kf.rotation_matrices()
    q_grid_from_world = grid_from_world.quaternion
    lut, ego_index = _lidarseg_lut(log)
    margin = tuple(float(v) for v in opts.box_margin_m)
    ego_from_sensor = sensor.ego_from_sensor
    pose_tol_ns = round(opts.pose_tolerance_s * 1e9)
    grid_from_sensor_kf = grid_from_world @ poses.at(t_kf + offset, pose_tol_ns) @ ego_from_sensor
    box_corners = np.array(np.meshgrid(*zip(opts.ego_box_m[:3], opts.ego_box_m[3:], strict=True)))
    ego_reach_sq = float(
        np.max(np.sum((box_corners.reshape(3, -1).T - ego_from_sensor.translation) ** 2, axis=1))
    )

    counts = dict.fromkeys(
        ("read", "nonfinite", "self", "noise", "static", "object", "object_without_keyframe_box",
         "sweeps_not_deskewed"), 0,
    )  # fmt: skip
    parts: dict[str, list[npt.NDArray[Any]]] = {
        k: [] for k in ("points", "ray_end", "ray_origin", "labels", "box", "sweep")
    }
    for s_i, (sd_token, cloud) in enumerate(zip(window, clouds, strict=True)):
        if cloud.sensor.name != sensor.name:
            raise LogFormatError(
                f"sample_data {sd_token}: expected a '{sensor.name}' sweep, got '{cloud.sensor.name}'"
            )
        n = len(cloud)
        counts["read"] += n
        xyz = np.asarray(cloud.xyz)
        keep = np.all(np.isfinite(xyz), axis=1)
        counts["nonfinite"] += int(n - keep.sum())
        # self-returns: only points as near as the ego box's farthest corner need a look
        near = np.flatnonzero(np.einsum("ij,ij->i", xyz, xyz) <= ego_reach_sq)
        self_hit = np.zeros(n, dtype=bool)
        self_hit[near] = _in_ego_box(
            _apply(ego_from_sensor.rotation, ego_from_sensor.translation, xyz[near]), opts.ego_box_m
        )
        self_hit &= keep
        seg = cloud.attrs.get("lidarseg")
        labels = np.full(n, UNLABELLED, dtype=np.int16)
        if seg is not None:
            labels = lut[np.asarray(seg, dtype=np.uint8)]
            dropped = labels == DROPPED
            ego_seg = dropped & (np.asarray(seg) == ego_index)
            self_hit |= ego_seg & keep
            counts["noise"] += int((dropped & ~ego_seg & keep & ~self_hit).sum())
            keep &= ~dropped
        counts["self"] += int(self_hit.sum())
        keep &= ~self_hit
        sel = np.flatnonzero(keep)
        xyz = xyz[sel]
        labels = labels[sel]

        # capture times (ego clock, int64 ns) and points at their capture time, grid frame
        times = cloud.attrs.get(POINT_TIME_ATTR)
        if opts.deskew and times is not None:
            rel = np.asarray(times, dtype=np.int64)[sel]
            pts_sensor_kf = deskew(
                np.ascontiguousarray(xyz), rel, cloud.t_ns, poses, ego_from_sensor, offset,
                t_target_ns=t_kf, tolerance_ns=pose_tol_ns, what=f"aggregation sweep {sd_token}",
            )  # fmt: skip
            seen = _apply(
                grid_from_sensor_kf.rotation, grid_from_sensor_kf.translation, pts_sensor_kf
            )
            t_point = rel + (cloud.t_ns + offset)
        else:
            if opts.deskew and times is None:
                counts["sweeps_not_deskewed"] += 1
            pose = (
                cloud.world_from_ego if cloud.world_from_ego is not None else log.ego_pose(sd_token)
            )
            grid_from_sensor = grid_from_world @ pose @ ego_from_sensor
            seen = _apply(grid_from_sensor.rotation, grid_from_sensor.translation, xyz)
            t_point = np.full(len(sel), cloud.t_ns + offset, dtype=np.int64)

        placed = seen.copy()
        box_of = np.full(len(sel), -1, dtype=np.int32)
        # slices of capture time: box poses and the sensor origin at each slice's centre. The
        # slices span the whole sweep's times (removed points included), so what is removed
        # never changes how the other points are placed.
        span = (
            np.asarray(times, dtype=np.int64) + (cloud.t_ns + offset)
            if opts.deskew and times is not None and n
            else np.full(1, cloud.t_ns + offset, dtype=np.int64)
        )
        t0, t1 = int(span.min()), int(span.max())
        n_slices = opts.time_slices if t1 > t0 else 1
        edges = np.linspace(t0, t1 + 1, n_slices + 1).astype(np.int64)
        slice_of = np.clip(np.searchsorted(edges, t_point, side="right") - 1, 0, n_slices - 1)
        mids = (edges[:-1] + edges[1:]) // 2
        try:
            rot_we, tr_we = poses.interpolate_many(mids, pose_tol_ns)
        except SyncError as exc:
            raise SyncError(f"aggregation sweep {sd_token}: {exc}") from None
        # sensor origin per slice: grid_from_world · world_from_ego(t) · ego_from_sensor · 0
        sensor_world = np.einsum("kij,j->ki", rot_we, ego_from_sensor.translation) + tr_we
        slice_origin = _apply(grid_from_world.rotation, grid_from_world.translation, sensor_world)
        origin = slice_origin[slice_of]
        for k in range(n_slices):
            in_slice = np.flatnonzero(slice_of == k)
            live, q_w, c_w = tracks.at(int(mids[k]))
            if in_slice.size == 0 or live.size == 0:
                continue
            # the boxes at this time in the grid frame
            rot_gb = np.einsum("ij,kjl->kil", grid_from_world.rotation, matrix_from_quaternion(q_w))
            c_g = _apply(grid_from_world.rotation, grid_from_world.translation, c_w)
            boxes_t = Boxes3D(
                c_g, tracks.size[live], quaternion_multiply(q_grid_from_world, q_w),
                track_names[live], track_names[live], "grid",
            )  # fmt: skip
            hit = points_in_boxes(seen[in_slice], boxes_t, margin_m=margin).box_index
            pts_i = np.flatnonzero(hit >= 0)
            # lidarseg says ground or static: the point stays where it is
            lab = labels[in_slice[pts_i]]
            pts_i = pts_i[(lab == UNLABELLED) | (lab < len(_OBJECT_CLASSES))]
            if pts_i.size == 0:
                continue
            rows, which = in_slice[pts_i], hit[pts_i]
            kf_b = kf_row_of_track[live[which]]
            box_of[rows] = np.where(kf_b >= 0, kf_b, -2)  # -2: no box at the keyframe, dropped
            mv = kf_b >= 0
            rows, which, kf_b = rows[mv], which[mv], kf_b[mv]
            p_box = np.einsum("nji,nj->ni", rot_gb[which], seen[rows] - c_g[which])
            placed[rows] = np.einsum("nij,nj->ni", kf_rot[kf_b], p_box) + box_kf.center[kf_b]
            unl = labels[rows] == UNLABELLED
            labels[rows[unl]] = tracks.occ3d[live[which[unl]]]
        lost = box_of == -2
        counts["object_without_keyframe_box"] += int(lost.sum())
        ok = ~lost
        counts["object"] += int((box_of >= 0).sum())
        counts["static"] += int((box_of == -1).sum())
        parts["points"].append(placed[ok])
        parts["ray_end"].append(seen[ok])
        parts["ray_origin"].append(origin[ok])
        parts["labels"].append(labels[ok].astype(np.uint8))
        parts["box"].append(box_of[ok])
        parts["sweep"].append(np.full(int(ok.sum()), s_i, dtype=np.int16))

    def cat(key: str, dtype: Any, width: int = 0) -> npt.NDArray[Any]:
        if parts[key]:
            return np.concatenate(parts[key]).astype(dtype, copy=False)
        return np.zeros((0, width) if width else 0, dtype=dtype)

    result = AggregatedSweeps(
        token, kf_sd, t_kf, world_from_grid,
        cat("points", np.float64, 3), cat("ray_end", np.float64, 3), cat("ray_origin", np.float64, 3),
        cat("labels", np.uint8), cat("box", np.int32), cat("sweep", np.int16), tuple(window),
        box_kf, counts,
    )  # fmt: skip
    logger.debug(
        "aggregate %s: %d sweeps, %d points read: %d static, %d object, %d removed (%s)",
        token, len(window), counts["read"], counts["static"], counts["object"],
        counts["read"] - len(result), counts,
    )  # fmt: skip
    return result
