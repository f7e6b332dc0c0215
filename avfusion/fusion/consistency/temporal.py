"""Label consistency over time: each track (instance token) across a scene's keyframes.

:func:`check_temporal` looks at every box of every track (one :class:`CheckedItem` per box,
``item_id`` = annotation token) and reports:

* ``size_change``: a box of a rigid class whose size departs from its track's median size by
  more than ``size_tolerance`` (relative, any of l, w, h);
* ``class_flip``: a box whose class differs from its track's majority class;
* ``id_switch``: a persistent jump: the step into a keyframe departs from the motion before it
  (constant velocity) by more than the class's acceleration bound allows, and the track then
  carries on from the new place (a one-keyframe spike that comes back is no switch);
* ``implausible_motion``: speed, acceleration or yaw rate (finite differences between
  keyframes) above the class's bounds (:data:`MOTION_LIMITS`);
* ``label_lag``: the box lags or leads the LiDAR evidence. The keyframe sweep is deskewed
  (ego motion, per-point times), each return near the box is moved back to the label time
  along the track's velocity (so a point fired 20 ms after the stamp counts where the object
  was at the stamp), and the box's face towards the sensor along the direction of motion is
  compared with the returns' extreme there (the nearer end when the sensor is level with it).
  The displacement over the speed is the lag: a box placed where its object was 0.1 s earlier
  is 0.1 s late.

Velocities come from the labels under test (centred differences over the neighbouring
keyframes of the track, never using the box judged), not from the log.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, SyncError
from avfusion.fusion.consistency.cameras import detection_class
from avfusion.fusion.consistency.findings import (
    CheckedItem,
    CheckResult,
    Finding,
    LabelSet,
    require_positive,
)
from avfusion.fusion.deskew import CAPTURE_TIME_ATTR, POINT_TIME_ATTR, deskew_cloud

__all__ = [
    "MOTION_LIMITS",
    "RIGID_CLASSES",
    "MotionLimits",
    "TemporalOptions",
    "check_temporal",
    "lidar_lag",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
CHECK = "temporal"


@dataclass(frozen=True)
class MotionLimits:
    """Physical bounds of one class: speed m/s, acceleration m/s², yaw rate rad/s."""

    max_speed_mps: float
    max_accel_mps2: float
    max_yaw_rate_rps: float


#: Per detection class; generous bounds for road users (a sports car brakes at ~10 m/s²; a
#: pedestrian sprints at ~10 m/s). Classes not listed use ``default``.
MOTION_LIMITS: dict[str, MotionLimits] = {
    "car": MotionLimits(60.0, 12.0, 1.5),
    "truck": MotionLimits(45.0, 8.0, 1.0),
    "bus": MotionLimits(40.0, 6.0, 1.0),
    "trailer": MotionLimits(40.0, 6.0, 1.0),
    "construction_vehicle": MotionLimits(20.0, 5.0, 1.0),
    "motorcycle": MotionLimits(60.0, 12.0, 2.5),
    "bicycle": MotionLimits(20.0, 6.0, 2.5),
    "pedestrian": MotionLimits(10.0, 6.0, 6.0),
    "traffic_cone": MotionLimits(0.5, 2.0, 2.0),
    "barrier": MotionLimits(0.5, 2.0, 2.0),
    "default": MotionLimits(60.0, 12.0, 3.0),
}

#: Detection classes whose objects keep their size (pedestrians and riders change shape).
RIGID_CLASSES: frozenset[str] = frozenset(
    {
        "car",
        "truck",
        "bus",
        "trailer",
        "construction_vehicle",
        "traffic_cone",
        "barrier",
        "static_object.bicycle_rack",
    }
)


@dataclass(frozen=True)
class TemporalOptions:
    """Bounds of :func:`check_temporal`.

    ``size_tolerance``: relative size departure from the track median. ``jump_margin_m``: label
    noise allowed on top of ``½·a_max·dt²`` before a step counts as a jump. ``motion_limits``
    per detection class. Lag: moving boxes only (``lag_min_speed_mps``); returns within
    ``lag_window_s``·speed (at least ``lag_window_min_m``) along the motion and
    ``lag_lateral_margin_m`` across it, from ``lag_ground_clearance_m`` above the box bottom up to
    ``lag_band_top`` of its height (a vehicle's body, not its cabin); at least ``lag_min_points`` returns on the face used;
    a lag is reported when the face is off by ``lag_min_m`` and the lag is ``lag_min_s`` or
    more; the returns' extreme is the ``lag_quantile`` quantile (robust to stray points); the
    object's returns are the run with no gap over ``lag_gap_m`` (or ``lag_gap_per_m`` × range).
    """

    size_tolerance: float = 0.1
    jump_margin_m: float = 0.5
    motion_limits: Mapping[str, MotionLimits] = field(default_factory=lambda: dict(MOTION_LIMITS))
    rigid_classes: frozenset[str] = RIGID_CLASSES
    lidar: str = "LIDAR_TOP"
    lag_min_speed_mps: float = 1.0
    lag_window_s: float = 0.5
    lag_window_min_m: float = 1.0
    lag_lateral_margin_m: float = 0.3
    lag_ground_clearance_m: float = 0.2
    lag_min_points: int = 8
    lag_min_m: float = 0.15
    lag_min_s: float = 0.04
    lag_quantile: float = 0.03
    lag_gap_m: float = 0.6
    lag_gap_per_m: float = 0.07
    lag_band_top: float = 0.55
    lag_min_bias_boxes: int = 3

    def __post_init__(self) -> None:
        require_positive(
            self,
            "size_tolerance",
            "jump_margin_m",
            "lag_min_speed_mps",
            "lag_window_s",
            "lag_min_m",
            "lag_min_s",
        )
        if not (0.0 <= self.lag_quantile < 0.5):
            raise AVFusionError(
                f"TemporalOptions: lag_quantile must be in [0, 0.5), got {self.lag_quantile}"
            )
        if "default" not in self.motion_limits:
            raise AVFusionError("TemporalOptions: motion_limits needs a 'default' entry")

    def limits(self, cls: str) -> MotionLimits:
        return self.motion_limits.get(cls, self.motion_limits["default"])


@dataclass
class _Obs:
    sample_token: str
    index: int  # box index in the sample's Boxes3D
    t_ns: int
    center: F64
    size: F64
    yaw: float
    label: str
    annotation: str


def _yaw(q_wxyz: F64) -> float:
    w, x, y, z = (float(v) for v in q_wxyz)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def _velocity(track: Sequence[_Obs], j: int) -> F64:
    """Velocity at ``track[j]`` from its neighbours (centred difference; at an end the two
    nearest other keyframes; only a two-keyframe track uses the box itself)."""
    n = len(track)
    if n < 2:
        return np.full(3, np.nan)
    if 0 < j < n - 1:
        a, b = track[j - 1], track[j + 1]
    elif j == 0:
        a, b = (track[1], track[2]) if n >= 3 else (track[0], track[1])
    else:
        a, b = (track[n - 3], track[n - 2]) if n >= 3 else (track[n - 2], track[n - 1])
    dt = (b.t_ns - a.t_ns) * 1e-9
    if dt <= 0:
        return np.full(3, np.nan)
    return np.asarray((b.center - a.center) / dt, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# LiDAR lag
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LagEstimate:
    """How far a box's face is off the LiDAR returns along the motion, as metres and seconds."""

    offset_m: float  # + : the object is ahead of the box along its velocity (the box lags)
    lag_s: float
    n_points: int
    face: str  # "rear" or "front": the face judged
    inset_m: float  # how far inside the face(s) the returns end (the class's shape adds some)
    speed_mps: float

    def with_bias(self, bias_m: float) -> LagEstimate:
        """The estimate once the class's usual inset ``bias_m`` is taken off the face."""
        offset = (self.inset_m - bias_m) * (1.0 if self.face == "rear" else -1.0)
        return replace(self, offset_m=offset, lag_s=offset / self.speed_mps)


def lidar_lag(
    points_world: F64,
    point_t_ns: npt.NDArray[np.int64],
    t_label_ns: int,
    center: F64,
    size: F64,
    yaw: float,
    velocity: F64,
    sensor_world: F64,
    options: TemporalOptions,
) -> LagEstimate | None:
    """Lag of one box against world-frame LiDAR returns with capture times ``point_t_ns``.

    Returns None when the box does not move, or too few returns lie on the face to judge.
    """
    v_xy = np.asarray(velocity[:2], dtype=np.float64)
    speed = float(np.hypot(*v_xy))
    if not math.isfinite(speed) or speed < options.lag_min_speed_mps:
        return None
    axis = v_xy / speed
    normal = np.array([-axis[1], axis[0]])
    # back to the label time along the motion
    dt = (point_t_ns.astype(np.float64) - float(t_label_ns)) * 1e-9
    pts = points_world[:, :2] - dt[:, None] * v_xy[None, :]
    rel = pts - center[None, :2]
    s = rel @ axis
    n = rel @ normal
    # the box's extent along the motion axis and across it (the box may be rotated to it)
    c, si = math.cos(yaw), math.sin(yaw)
    corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * (np.asarray(size[:2]) / 2.0)
    rot = np.array([[c, -si], [si, c]])
    cw = corners @ rot.T
    s_lo, s_hi = float((cw @ axis).min()), float((cw @ axis).max())
    n_lo, n_hi = float((cw @ normal).min()), float((cw @ normal).max())
    reach = max(options.lag_window_min_m, options.lag_window_s * speed)
    z = points_world[:, 2]
    keep = (
        (s >= s_lo - reach)
        & (s <= s_hi + reach)
        & (n >= n_lo - options.lag_lateral_margin_m)
        & (n <= n_hi + options.lag_lateral_margin_m)
        & (z >= center[2] - size[2] / 2.0 + options.lag_ground_clearance_m)
        & (z <= center[2] - size[2] / 2.0 + options.lag_band_top * size[2])
    )
    if int(keep.sum()) < options.lag_min_points:
        return None
    s = np.sort(s[keep])
    # the object: the run of returns (no gap wider than lag_gap_m along the motion) that
    # overlaps the box most; other objects ahead or behind in the window are other runs
    range_m = float(np.hypot(*(np.asarray(sensor_world[:2]) - center[:2])))
    gap = max(options.lag_gap_m, options.lag_gap_per_m * range_m)  # returns thin out with range
    breaks = np.flatnonzero(np.diff(s) > gap) + 1
    runs = np.split(s, breaks)
    overlap = [
        max(0.0, min(float(r[-1]), s_hi) - max(float(r[0]), s_lo)) + 1e-3 * r.size for r in runs
    ]
    s = runs[int(np.argmax(overlap))]
    if s.size < options.lag_min_points:
        return None
    q = options.lag_quantile
    lo_q, hi_q = float(np.quantile(s, q)), float(np.quantile(s, 1.0 - q))
    if hi_q - lo_q > 1.2 * (s_hi - s_lo) + options.lag_lateral_margin_m:
        return None  # longer than the box: something else runs into the object's returns
    # the face towards the sensor along the motion (when the sensor is level with the box, the
    # nearer end: the far end may be hidden or run into another object's returns)
    sensor_s = float((np.asarray(sensor_world[:2]) - center[:2]) @ axis)
    if sensor_s <= 0.5 * (s_lo + s_hi):
        face, inset = "rear", lo_q - s_lo  # > 0: the returns start inside the rear face
    else:
        face, inset = "front", s_hi - hi_q  # > 0: they end inside the front face
    est = LagEstimate(0.0, 0.0, int(s.size), face, inset, speed)
    return est.with_bias(0.0)  # the class's usual inset is taken off by the caller


def _sweep_points(
    log: Any, sample_token: str, lidar: str
) -> tuple[F64, npt.NDArray[np.int64], F64] | None:
    """World-frame deskewed returns of the keyframe sweep, their ego-clock capture times, and
    the sensor position in the world."""
    sd = log.keyframe_data(sample_token).get(lidar)
    if sd is None:
        return None
    cloud = log.load_points(sd, with_lidarseg=False)
    if POINT_TIME_ATTR in cloud.attrs:
        try:
            cloud = deskew_cloud(cloud, log.poses)
        except SyncError as exc:
            logger.info("%s: not deskewed (%s)", sd, exc)
    pose = cloud.world_from_ego
    if pose is None:
        return None
    world_from_sensor: Transform = pose @ cloud.sensor.ego_from_sensor
    xyz = np.asarray(world_from_sensor.apply(np.asarray(cloud.xyz, dtype=np.float64)))
    t0 = int(cloud.t_ns + cloud.sensor.time_offset_ns)
    rel = cloud.attrs.get(CAPTURE_TIME_ATTR, cloud.attrs.get(POINT_TIME_ATTR))
    t = (
        np.full(len(xyz), t0, dtype=np.int64)
        if rel is None
        else t0 + np.asarray(rel, dtype=np.int64)
    )
    return xyz, t, np.asarray(world_from_sensor.translation, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


_CACHE: weakref.WeakKeyDictionary[LabelSet, dict[tuple[int, str, tuple[str, ...]], CheckResult]] = (
    weakref.WeakKeyDictionary()
)


def check_temporal(
    log: Any,
    labels: LabelSet,
    sample_tokens: str | Sequence[str] | None = None,
    *,
    options: TemporalOptions | None = None,
) -> CheckResult:
    """Every track of ``labels`` over ``sample_tokens`` (a scene's keyframes; default: every
    sample of the label set), see the module docstring.

    Given one sample token (a string, as the per-keyframe checks take), the tracks are built
    over every sample of the label set in that sample's scene and only that keyframe's items
    and findings are returned; the whole-scene result is computed once per label set, log and
    options and reused for the scene's other keyframes.
    """
    opts = options or TemporalOptions()
    if not isinstance(opts, TemporalOptions):
        raise AVFusionError(
            f"check_temporal: options must be TemporalOptions, got {type(opts).__name__}"
        )
    if isinstance(sample_tokens, str):
        one = sample_tokens
        if one not in labels.boxes3d:
            raise AVFusionError(
                f"check_temporal: sample '{one}' is not in the label set ({len(labels.boxes3d)} samples)"
            )
        scene = log.scene_of(one).get("token")
        tokens = tuple(sorted(t for t in labels.boxes3d if log.scene_of(t).get("token") == scene))
        per = _CACHE.setdefault(labels, {})
        key = (id(log), repr(opts), tokens)
        if key not in per:
            per[key] = _check_scene(log, labels, list(tokens), opts)
        full = per[key]
        return CheckResult(
            CHECK,
            tuple(i for i in full.items if i.sample_token == one),
            tuple(f for f in full.findings if f.sample_token == one),
            full.skipped,
        )
    tokens_list = list(labels.boxes3d) if sample_tokens is None else list(sample_tokens)
    return _check_scene(log, labels, tokens_list, opts)


def _check_scene(
    log: Any, labels: LabelSet, tokens: list[str], opts: TemporalOptions
) -> CheckResult:
    for t in tokens:
        if t not in labels.boxes3d:
            raise AVFusionError(
                f"check_temporal: sample '{t}' is not in the label set ({len(labels.boxes3d)} samples)"
            )
    times = {t: int(log.sample_time_ns(t)) for t in tokens}  # LogFormatError for unknown ones
    tokens.sort(key=lambda t: times[t])
    tracks: dict[str, list[_Obs]] = {}
    for t in tokens:
        boxes = labels.boxes3d[t]
        if boxes.frame != "world":
            raise AVFusionError(
                f"check_temporal: boxes of sample {t} are in frame '{boxes.frame}', expected 'world'"
            )
        ann = (
            boxes.token.astype(str)
            if boxes.token is not None
            else np.array([f"{t}/{i}" for i in range(len(boxes))])
        )
        for i in range(len(boxes)):
            tracks.setdefault(str(boxes.track_id[i]), []).append(
                _Obs(
                    t,
                    i,
                    times[t],
                    np.asarray(boxes.center[i], dtype=np.float64),
                    np.asarray(boxes.size[i], dtype=np.float64),
                    _yaw(boxes.rotation[i]),
                    str(boxes.label[i]),
                    str(ann[i]),
                )
            )
    tags_of: dict[str, tuple[str, ...]] = {}
    sweeps: dict[str, tuple[F64, npt.NDArray[np.int64], F64] | None] = {}
    ego_of: dict[str, Transform | None] = {}
    items: list[CheckedItem] = []
    findings: list[Finding] = []
    skipped: dict[str, int] = {}
    lags: list[tuple[_Obs, str, str, LagEstimate]] = []
    switches: list[tuple[_Obs, str, float, str]] = []

    def tags(sample: str) -> tuple[str, ...]:
        if sample not in tags_of:
            from avfusion.fusion.consistency.report import scene_tags

            try:
                tags_of[sample] = scene_tags(str(log.scene_of(sample).get("description", "")))
            except (AVFusionError, AttributeError):
                tags_of[sample] = ()
        return tags_of[sample]

    def distance(o: _Obs) -> float:
        if o.sample_token not in ego_of:
            sw = sweep(o.sample_token)
            ego_of[o.sample_token] = None if sw is None else Transform(np.eye(3), sw[2])
        pose = ego_of[o.sample_token]
        if pose is None:
            return math.nan
        return float(np.hypot(*(o.center[:2] - pose.translation[:2])))

    def sweep(sample: str) -> tuple[F64, npt.NDArray[np.int64], F64] | None:
        if sample not in sweeps:
            sweeps[sample] = _sweep_points(log, sample, opts.lidar)
        return sweeps[sample]

    def finding(o: _Obs, inst: str, kind: str, severity: float, msg: str, **ev: Any) -> None:
        findings.append(
            Finding(
                kind=kind,
                check=CHECK,
                severity=float(min(1.0, max(0.0, severity))),
                item_id=o.annotation,
                sample_token=o.sample_token,
                sensor="",
                message=msg,
                category=o.label,
                annotation_token=o.annotation,
                instance_token=inst,
                t_ns=o.t_ns,
                distance_m=distance(o),
                tags=tags(o.sample_token),
                evidence=ev,
            )
        )

    for inst, track in sorted(tracks.items()):
        classes = [detection_class(o.label) for o in track]
        values, counts = np.unique(np.array(classes), return_counts=True)
        majority = str(values[np.argmax(counts)])
        if counts.max() * 2 == len(track) and len(values) > 1:  # a tie: the first class wins
            majority = classes[0]
        limits = opts.limits(majority)
        median_size = np.median(np.stack([o.size for o in track]), axis=0)
        for o in track:
            items.append(
                CheckedItem(
                    CHECK,
                    o.annotation,
                    o.sample_token,
                    "",
                    o.label,
                    distance(o),
                    tags(o.sample_token),
                )
            )
        # class flips
        for o, cls in zip(track, classes, strict=True):
            if cls != majority:
                finding(
                    o,
                    inst,
                    "class_flip",
                    0.85,
                    f"track {inst} is '{majority}' in {int(counts.max())} of {len(track)} "
                    f"keyframes but '{o.label}' here",
                    track_class=majority,
                    box_class=cls,
                    track_length=len(track),
                )
        # size changes of rigid objects
        if majority in opts.rigid_classes and len(track) >= 3:
            for o in track:
                rel = np.abs(o.size / np.maximum(median_size, 1e-6) - 1.0)
                worst = float(rel.max())
                if worst > opts.size_tolerance:
                    finding(
                        o,
                        inst,
                        "size_change",
                        0.4 + worst,
                        f"{o.label} track {inst}: size {o.size[0]:.2f}×{o.size[1]:.2f}×"
                        f"{o.size[2]:.2f} m is {100 * worst:.0f}% off the track's median "
                        f"{median_size[0]:.2f}×{median_size[1]:.2f}×{median_size[2]:.2f} m",
                        relative_change=worst,
                        length_m=float(o.size[0]),
                        width_m=float(o.size[1]),
                        height_m=float(o.size[2]),
                        median_length_m=float(median_size[0]),
                        median_width_m=float(median_size[1]),
                        median_height_m=float(median_size[2]),
                    )
        # motion: speed, acceleration, yaw rate, id switches
        n = len(track)
        step_v = [
            (track[j].center - track[j - 1].center) / ((track[j].t_ns - track[j - 1].t_ns) * 1e-9)
            for j in range(1, n)
        ]
        v_ref = np.zeros(3)  # velocity of the last step that was no jump
        known = False
        good = track[0]  # the last box that was no spike
        for j in range(1, n):
            o, prev = track[j], track[j - 1]
            dt = (o.t_ns - prev.t_ns) * 1e-9
            v = step_v[j - 1]
            speed = float(np.hypot(v[0], v[1]))
            dt_good = (o.t_ns - good.t_ns) * 1e-9
            allowed = 0.5 * limits.max_accel_mps2 * dt_good * dt_good + opts.jump_margin_m
            if not known:
                allowed += limits.max_speed_mps * dt_good  # no motion known before
            jump = float(np.hypot(*(o.center[:2] - (good.center[:2] + v_ref[:2] * dt_good))))
            if jump > allowed:
                # a switch carries on from the new place; a spike (a lagging or misplaced
                # box) comes back to where the track was going
                # judged only with a box after it; when the box before the jump is itself
                # the outlier (the one before that leads straight here), there is no switch
                spike = j + 1 >= n
                if not spike and j >= 2:
                    nxt = track[j + 1]
                    v_after = (nxt.center - o.center) / ((nxt.t_ns - o.t_ns) * 1e-9)
                    dt3 = (o.t_ns - track[j - 2].t_ns) * 1e-9
                    lead = np.hypot(*(o.center[:2] - (track[j - 2].center[:2] + v_after[:2] * dt3)))
                    spike = bool(
                        lead <= 0.5 * limits.max_accel_mps2 * dt3 * dt3 + opts.jump_margin_m
                    )
                if not spike:
                    nxt = track[j + 1]
                    dt2 = (nxt.t_ns - o.t_ns) * 1e-9
                    back = np.hypot(
                        *(nxt.center[:2] - (good.center[:2] + v_ref[:2] * (dt_good + dt2)))
                    )
                    on = np.hypot(*(nxt.center[:2] - (o.center[:2] + v_ref[:2] * dt2)))
                    spike = bool(back < on)
                if not spike:
                    switches.append((o, inst, jump, prev.sample_token))
                    good = o
            else:
                if good is prev:
                    v_ref, known = v, True
                good = o
            problems = []
            if speed > limits.max_speed_mps:
                problems.append(("speed_mps", speed, limits.max_speed_mps))
            if j >= 2:
                accel = float(np.hypot(*(v - step_v[j - 2])[:2]) / dt)
                if accel > limits.max_accel_mps2:
                    problems.append(("accel_mps2", accel, limits.max_accel_mps2))
            yaw_rate = abs(_wrap(o.yaw - prev.yaw)) / dt
            if yaw_rate > limits.max_yaw_rate_rps and speed >= opts.lag_min_speed_mps:
                problems.append(("yaw_rate_rps", yaw_rate, limits.max_yaw_rate_rps))
            if problems:
                what, value, bound = max(problems, key=lambda p: p[1] / p[2])
                finding(
                    o,
                    inst,
                    "implausible_motion",
                    0.4 + 0.1 * value / bound,
                    f"{o.label} track {inst}: {what} {value:.2f} exceeds the class bound "
                    f"{bound:.2f} between keyframes",
                    **{name: val for name, val, _ in problems},
                    dt_s=dt,
                )
        # lag against the LiDAR (decided below, once every class's usual inset is known)
        for j, o in enumerate(track):
            v = _velocity(track, j)
            if not np.all(np.isfinite(v)) or float(np.hypot(v[0], v[1])) < opts.lag_min_speed_mps:
                continue
            sw = sweep(o.sample_token)
            if sw is None:
                skipped["no LiDAR sweep for the lag"] = (
                    skipped.get("no LiDAR sweep for the lag", 0) + 1
                )
                continue
            est = lidar_lag(sw[0], sw[1], o.t_ns, o.center, o.size, o.yaw, v, sw[2], opts)
            if est is None:
                skipped["too few returns to judge lag"] = (
                    skipped.get("too few returns to judge lag", 0) + 1
                )
                continue
            lags.append((o, inst, majority, est))
    # A class's usual inset (its shape inside its box: a pedestrian is no box) is the median
    # over its judged boxes, most of which are right; single-face estimates are taken off it.
    by_class: dict[str, list[float]] = {}
    for _, _, cls, est in lags:
        by_class.setdefault(cls, []).append(est.inset_m)
    bias = {
        cls: float(np.median(v)) if len(v) >= opts.lag_min_bias_boxes else 0.0
        for cls, v in by_class.items()
    }
    lagging: dict[str, float] = {}
    for o, inst, cls, raw in lags:
        est = raw.with_bias(bias[cls])
        if abs(est.offset_m) >= opts.lag_min_m and abs(est.lag_s) >= opts.lag_min_s:
            lagging[o.annotation] = abs(est.offset_m)
            word = "lags" if est.lag_s > 0 else "leads"
            finding(
                o,
                inst,
                "label_lag",
                0.4 + 2.0 * abs(est.lag_s),
                f"{o.label} box {word} the LiDAR by {1e3 * abs(est.lag_s):.0f} ms "
                f"({abs(est.offset_m):.2f} m along its motion, {est.face} face, "
                f"{est.n_points} returns)",
                lag_s=est.lag_s,
                offset_m=est.offset_m,
                speed_mps=est.speed_mps,
                n_points=est.n_points,
                face=est.face,
                class_inset_m=bias[cls],
            )
    for o, inst, size, from_sample in switches:
        lag_m = lagging.get(o.annotation)
        if lag_m is not None and abs(lag_m - size) <= 0.5 * size:
            continue  # the LiDAR says the box lags by about the jump: a lagging box, no switch
        finding(
            o,
            inst,
            "id_switch",
            0.6 + 0.05 * size,
            f"{o.label} track {inst} jumps {size:.2f} m at this keyframe and carries on from "
            "there: from here it follows another object",
            jump_m=size,
            from_sample=from_sample,
        )
    return CheckResult(CHECK, tuple(items), tuple(findings), skipped)
