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
  be placed, and are dropped and counted. Two rules keep the box from claiming what is not
  the object: a return less than ``ground_band_m`` above the box's bottom face that lidarseg
  does not call an object is ground (boxes sit on the ground, and their collection margin
  reaches below it and around it: without this rule the road around every car is voted
  'car' by the sweeps that have no lidarseg); and a return in the collection margin, outside
  the box, is placed on the box's surface (``snap_to_box``: range noise would otherwise push
  the object into the voxels beyond its face).
* **Labels are repaired against their tracks** (``repair_boxes``), each change counted: a
  keyframe box takes its track's median size; a track annotated before and after the
  keyframe but not at it gets its interpolated box; an annotation more than
  ``box_outlier_m`` off the constant-acceleration fit of its neighbours (a shifted or
  lagging label) is moved onto it; a box whose own lidarseg points mostly say another object
  class takes that class.
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
    "repair_track_outliers",
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

    Object points (see the module docstring for why each step is there):
    ``ground_band_m``: returns in a box (with its margin) less than this above the box's bottom
    face that lidarseg does not call an object are ground, not the object (0: off).
    ``snap_to_box``: object returns in the collection margin are placed on the box surface.
    ``repair_boxes``: keyframe boxes take their track's median size, a track annotated around
    the keyframe but not at it gets an interpolated box, an annotation farther than
    ``box_outlier_m`` from its track's motion is moved onto it, and a box whose own lidarseg
    points (at least ``min_class_points``) mostly say another object class takes that class.
    """

    sweeps: int = 10
    lidar: str = "LIDAR_TOP"
    deskew: bool = True
    time_slices: int = 5
    box_margin_m: tuple[float, float, float] = (0.2, 0.2, 0.1)
    track_tolerance_s: float = 0.6
    pose_tolerance_s: float = 0.05
    ego_box_m: tuple[float, float, float, float, float, float] = NUSCENES_EGO_BOX_M
    ground_band_m: float = 0.15
    snap_to_box: bool = True
    repair_boxes: bool = True
    box_outlier_m: float = 0.3
    min_class_points: int = 10

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
        if not (math.isfinite(self.ground_band_m) and self.ground_band_m >= 0):
            raise ConfigError(
                f"AggregationOptions.ground_band_m must be finite and >= 0, got {self.ground_band_m!r}"
            )
        if not (math.isfinite(self.box_outlier_m) and self.box_outlier_m > 0):
            raise ConfigError(
                f"AggregationOptions.box_outlier_m must be finite and > 0, got {self.box_outlier_m!r}"
            )
        if (
            isinstance(self.min_class_points, bool)
            or not isinstance(self.min_class_points, int)
            or self.min_class_points < 1
        ):
            raise ConfigError(
                "AggregationOptions.min_class_points must be an integer >= 1, "
                f"got {self.min_class_points!r}"
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
    ``sweep_tokens`` (``keyframe_token``: the keyframe sweep's sample_data token). ``boxes``: the keyframe's annotations in the grid frame
    (repaired against their tracks with ``repair_boxes``: the annotated boxes first, then the
    interpolated ones), with ``attrs["occ3d"]`` their class. ``counts``: what was read, removed and kept (names below).
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


def repair_track_outliers(
    t_ns: npt.NDArray[np.int64],
    centers: F64,
    outlier_m: float,
    test_ns: tuple[int, int] | None = None,
) -> list[int]:
    """Move the annotations of one track that are off its motion (a shifted or lagging label)
    onto it; ``centers`` (K, 3) in time order (``t_ns`` (K,)) is changed in place, and the
    indices of the moved ones are returned.

    An inner annotation is tested against a quadratic in time (constant acceleration, least
    squares) through its six nearest neighbours in the track (at least five, so the fit is
    over-determined twice and one wrong neighbour cannot bend it onto itself; at least one on
    each side): it is an outlier when it misses the fit by more than ``outlier_m`` while the
    neighbours themselves fit it within ``outlier_m / 2`` (they agree on a smooth motion). The
    worst outlier is replaced by its prediction and the test repeats. Braking or turning at a
    constant rate fits the quadratic, so correct annotations of such objects stay as they are;
    the first and last annotations are never tested, nor (with ``test_ns`` (t0, t1)) those
    outside [t0, t1] (they still serve as neighbours).
    """
    k = len(t_ns)
    moved: list[int] = []
    if k < 6:
        return moved
    t_s = (np.asarray(t_ns, dtype=np.int64) - int(t_ns[0])).astype(np.float64) / 1e9
    inner = np.arange(1, k - 1)
    if test_ns is not None:
        inner = inner[(t_ns[inner] >= test_ns[0]) & (t_ns[inner] <= test_ns[1])]
    if inner.size == 0:
        return moved
    # the six nearest neighbours by index: a window of seven around j, shifted inside the track
    start = np.clip(inner - 3, 0, max(k - 7, 0))
    window = start[:, None] + np.arange(min(7, k))[None, :]
    near = np.array([w[w != j][:6] for w, j in zip(window, inner, strict=True)])
    ok = (near[:, 0] < inner) & (near[:, -1] > inner)  # one on each side
    inner, near = inner[ok], near[ok]
    if inner.size == 0:
        return moved
    dt = t_s[near] - t_s[inner][:, None]  # (J, n)
    vander = np.stack([dt * dt, dt, np.ones_like(dt)], axis=2)  # (J, n, 3)
    normal = np.einsum("jni,jnk->jik", vander, vander)
    for _ in range(k):
        y = centers[near]  # (J, n, 3)
        coef = np.linalg.solve(normal, np.einsum("jni,jnd->jid", vander, y))  # (J, 3, xyz)
        residual = np.einsum("jni,jid->jnd", vander, coef) - y
        spread = np.sqrt(np.max(np.sum(residual * residual, axis=2), axis=1))
        miss = np.linalg.norm(coef[:, 2] - centers[inner], axis=1)  # coef[:, 2]: the fit at j
        miss[spread > 0.5 * outlier_m] = 0.0
        worst = int(np.argmax(miss))
        if miss[worst] <= outlier_m:
            break
        centers[inner[worst]] = coef[worst, 2]
        moved.append(int(inner[worst]))
    return moved


class _Tracks:
    """World-frame box trajectories of every instance annotated in some samples, packed so
    that the boxes of all tracks at one time come out of a few vectorised steps.

    Between two annotations of a track its pose is slerped and lerped; past its first or last
    annotation it is extrapolated at the end segment's rate (constant for a single annotation)
    up to ``tolerance_ns``; beyond that the track has no box.
    """

    def __init__(
        self,
        log: _AggregationLog,
        samples: Sequence[int],
        tolerance_ns: int,
        outlier_m: float | None = None,
        test_ns: tuple[int, int] | None = None,
    ) -> None:
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
        #: (track name, annotation time) of the centres ``repair_track_outliers`` moved
        self.repaired: list[tuple[str, int]] = []
        n, m = len(self.names), max((len(r) for r in rows.values()), default=1)
        self.t = np.full((n, m), np.iinfo(np.int64).max, dtype=np.int64)
        self.q = np.zeros((n, m, 4))
        self.c = np.zeros((n, m, 3))
        self.length = np.zeros(n, dtype=np.int64)
        self.size = np.zeros((n, 3))
        self.occ3d = np.zeros(n, dtype=np.int16)
        self.category = np.array([category[name] for name in self.names], dtype=np.str_)
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
            if outlier_m is not None:
                for j in repair_track_outliers(self.t[i, :k], self.c[i, :k], outlier_m, test_ns):
                    self.repaired.append((name, int(self.t[i, j])))
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


def _neighbour_samples(
    log: _AggregationLog, index: int, t_lo: int, t_hi: int, extra: int = 0
) -> list[int]:
    """Sample indices of the keyframe's scene whose time lies in [t_lo, t_hi], plus one more
    on each side (so a track can be interpolated up to the window's edges) and ``extra``
    beyond that (context for the annotation outlier test)."""
    token = log.sample_tokens[index]
    out = [index]
    for link, inside in (("prev", lambda t: t >= t_lo), ("next", lambda t: t <= t_hi)):
        tok = token
        beyond = 0
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
                beyond += 1
                if beyond > extra:
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


def _repair_keyframe_boxes(boxes: Boxes3D, tracks: _Tracks, t_ns: int) -> tuple[Boxes3D, int]:
    """Keyframe boxes made consistent with their tracks (world frame): every box takes its
    track's median size (an object does not change size; one annotation that is too small or
    too large is outvoted by its neighbours), and a track annotated before and after the
    keyframe but not at it gets its interpolated box there (a missed annotation). Returns the
    boxes (annotated first, interpolated after) and how many changed size by more than 1 %."""
    row = {name: i for i, name in enumerate(tracks.names)}
    rows = np.array([row.get(str(t), -1) for t in boxes.track_id], dtype=np.int64)
    size = boxes.size.copy()
    known = rows >= 0
    size[known] = tracks.size[rows[known]]
    center = boxes.center.copy()
    for name, t in tracks.repaired:
        if t == t_ns and name in row:
            i = row[name]
            b = np.flatnonzero(rows == i)
            center[b] = tracks.c[i, int(np.flatnonzero(tracks.t[i] == t)[0])]
    resized = int(np.sum(np.any(np.abs(size - boxes.size) > 0.01 * boxes.size, axis=1)))
    live, q, c = tracks.at(t_ns)
    first = tracks.t[live, 0]
    last = tracks.t[live, tracks.length[live] - 1]
    present = set(rows[known].tolist())
    add = np.array(
        [k for k, r in enumerate(live) if first[k] < t_ns < last[k] and int(r) not in present],
        dtype=np.intp,
    )
    n_add = add.size
    if n_add == 0:
        out = Boxes3D(center, size, boxes.rotation, boxes.label, boxes.track_id,
                      boxes.frame, boxes.velocity, boxes.token, boxes.attrs)  # fmt: skip
        return out, resized
    # velocity: a central difference over ±50 ms (both inside the track: it is interpolated)
    dt = 50_000_000
    live0, _, c0 = tracks.at(t_ns - dt)
    live1, _, c1 = tracks.at(t_ns + dt)
    at0 = np.searchsorted(live0, live[add])  # ``at`` lists tracks in ascending order
    at1 = np.searchsorted(live1, live[add])
    vel = (c1[at1] - c0[at0]) / (2 * dt / 1e9)
    names = np.array(tracks.names, dtype=np.str_)[live[add]]
    attrs = {}
    for key, v in boxes.attrs.items():
        fill = (
            np.zeros(n_add, dtype=v.dtype) if v.dtype.kind != "U" else np.full(n_add, "", v.dtype)
        )
        attrs[key] = np.concatenate([v, fill])
    token = None if boxes.token is None else np.concatenate([boxes.token, np.full(n_add, "")])
    out = Boxes3D(
        np.concatenate([center, c[add]]), np.concatenate([size, tracks.size[live[add]]]),
        np.concatenate([boxes.rotation, q[add]]),
        np.concatenate([boxes.label, tracks.category[live[add]]]),
        np.concatenate([boxes.track_id, names]), boxes.frame,
        np.concatenate([boxes.velocity if boxes.velocity is not None else np.full((len(boxes), 3), np.nan), vel]),
        token, attrs,
    )  # fmt: skip
    logger.info("keyframe boxes: %d resized to their track, %d interpolated", resized, n_add)
    return out, resized


def _classes_from_lidarseg(
    boxes: Boxes3D,
    labels: npt.NDArray[np.uint8],
    box_index: npt.NDArray[np.int32],
    from_box: npt.NDArray[np.bool_],
    min_points: int,
    counts: dict[str, int],
) -> Boxes3D:
    """A box whose own lidarseg points (at least ``min_points``, object classes) mostly say
    another class than its label takes that class, and so do its points labelled from the box
    (``labels`` is changed in place). Counted in ``counts["boxes_reclassed"]``."""
    occ = np.asarray(boxes.attrs["occ3d"]).astype(np.int16).copy()
    n_cls = len(_OBJECT_CLASSES)
    members = np.flatnonzero(box_index >= 0)
    seg = members[~from_box[members] & (labels[members] < n_cls)]
    hist = np.bincount(
        box_index[seg].astype(np.int64) * n_cls + labels[seg], minlength=len(boxes) * n_cls
    ).reshape(len(boxes), n_cls)
    total = hist.sum(axis=1)
    best = hist.argmax(axis=1)
    change = (total >= max(min_points, 1)) & (2 * hist.max(axis=1) > total) & (best != occ)
    counts["boxes_reclassed"] = int(change.sum())
    if change.any():
        logger.info("%d boxes take the class their lidarseg points give", int(change.sum()))
        occ[change] = best[change]
        relabel = members[from_box[members] & change[box_index[members]]]
        labels[relabel] = occ[box_index[relabel]].astype(np.uint8)
    return Boxes3D(boxes.center, boxes.size, boxes.rotation, boxes.label, boxes.track_id,
                   boxes.frame, boxes.velocity, boxes.token, {**boxes.attrs, "occ3d": occ})  # fmt: skip


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
    extra = 2 if opts.repair_boxes else 0
    # the annotations the window's box poses come from are tested; two more samples on each
    # side are their context
    tracks = _Tracks(log, _neighbour_samples(log, index, t_lo, t_hi, extra), tol_ns,
                     opts.box_outlier_m if opts.repair_boxes else None,
                     (t_lo - 600_000_000, t_hi + 600_000_000))  # fmt: skip
    track_names = np.array(tracks.names, dtype=np.str_)
    kf_boxes_world = log.boxes3d(index)
    n_annotated = len(kf_boxes_world)
    if opts.repair_boxes:
        kf_boxes_world, n_resized = _repair_keyframe_boxes(
            kf_boxes_world, tracks, log.sample_time_ns(index)
        )
    else:
        n_resized = 0
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
         "object_ground_band", "sweeps_not_deskewed"), 0,
    )  # fmt: skip
    counts["boxes_resized_to_track"] = n_resized
    counts["boxes_interpolated"] = len(kf_boxes_world) - n_annotated
    parts: dict[str, list[npt.NDArray[Any]]] = {
        k: [] for k in ("points", "ray_end", "ray_origin", "labels", "box", "sweep", "from_box")
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
        from_box = np.zeros(len(sel), dtype=bool)
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
            # box frame (at the capture time) of each return: rot_gb^T (p - c)
            d = seen[rows] - c_g[which]
            r_b = rot_gb[which]
            p_box = d[:, 0:1] * r_b[:, 0, :] + d[:, 1:2] * r_b[:, 1, :] + d[:, 2:3] * r_b[:, 2, :]
            if opts.ground_band_m > 0:
                # returns near the box bottom that lidarseg does not call an object: ground
                bottom = -0.5 * tracks.size[live[which], 2]
                low = (p_box[:, 2] < bottom + opts.ground_band_m) & (labels[rows] == UNLABELLED)
                counts["object_ground_band"] += int(low.sum())
                keep = ~low
                rows, which, p_box = rows[keep], which[keep], p_box[keep]
                if rows.size == 0:
                    continue
            kf_b = kf_row_of_track[live[which]]
            box_of[rows] = np.where(kf_b >= 0, kf_b, -2)  # -2: no box at the keyframe, dropped
            mv = kf_b >= 0
            rows, which, kf_b, p_box = rows[mv], which[mv], kf_b[mv], p_box[mv]
            if opts.snap_to_box:
                # a return in the collection margin is the object's (the label is a little
                # tight, or the range is noisy): it goes on the box's surface, not beyond it
                hb = 0.5 * box_kf.size[kf_b]
                p_box = np.clip(p_box, -hb, hb)
            placed[rows] = np.einsum("nij,nj->ni", kf_rot[kf_b], p_box) + box_kf.center[kf_b]
            unl = labels[rows] == UNLABELLED
            labels[rows[unl]] = tracks.occ3d[live[which[unl]]]
            from_box[rows[unl]] = True
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
        parts["from_box"].append(from_box[ok])

    def cat(key: str, dtype: Any, width: int = 0) -> npt.NDArray[Any]:
        if parts[key]:
            return np.concatenate(parts[key]).astype(dtype, copy=False)
        return np.zeros((0, width) if width else 0, dtype=dtype)

    labels_all, box_all = cat("labels", np.uint8), cat("box", np.int32)
    if opts.repair_boxes:
        box_kf = _classes_from_lidarseg(
            box_kf, labels_all, box_all, cat("from_box", np.bool_), opts.min_class_points, counts
        )
    result = AggregatedSweeps(
        token, kf_sd, t_kf, world_from_grid,
        cat("points", np.float64, 3), cat("ray_end", np.float64, 3), cat("ray_origin", np.float64, 3),
        labels_all, box_all, cat("sweep", np.int16), tuple(window), box_kf, counts,
    )  # fmt: skip
    logger.debug(
        "aggregate %s: %d sweeps, %d points read: %d static, %d object, %d removed (%s)",
        token, len(window), counts["read"], counts["static"], counts["object"],
        counts["read"] - len(result), counts,
    )  # fmt: skip
    return result
