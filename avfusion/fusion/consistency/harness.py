"""The evaluation harness: inject label errors of one kind into clean labels, run the checks,
and measure precision and recall per error kind (plus the finding rate on the clean labels).

Everything is in memory: :func:`inject` takes a :class:`~.findings.LabelSet` and returns a
modified copy with the list of what it changed; nothing on disk is touched.

Kinds and their magnitudes (:class:`InjectionSpec`, defaults), with the finding kinds that count
as detecting them (:data:`KIND_FINDINGS`):

==============  ===========================================================  ==================
kind            change                                                       detected by
==============  ===========================================================  ==================
shrink          box size × (1 − 0.15) about its centre                       box_undersized
grow            box size × (1 + 0.15) about its centre                       box_oversized
shift           centre moved 0.5 m horizontally, random direction            box_offset
delete          5 % of the boxes removed (at least one per run)              missing_box
heading_flip    yaw + 180°                                                   box_heading_flipped
class_swap      5 % of the tracks (at least one) get another category        class_mismatch, class_flip
late            box placed where its track was 2 LiDAR frames earlier        label_lag
                (clean track interpolated between keyframes)
offset_2d       2D box moved 10 px sideways                                  box2d_offset
id_switch       two tracks of one category swap ids from a middle keyframe   id_switch
                (both seen in an earlier keyframe)
radar_count     num_radar_pts of a box with radar returns set to 0, or of    radar_count_mismatch
                a box without to 3
==============  ===========================================================  ==================

Eligibility (an error is only injected where the sensors can judge it; every rule is a field of
:class:`InjectionSpec` and is printed with the table):

* every 3D kind: the clean box holds at least ``min_lidar_points`` LiDAR returns of the keyframe
  sweep and lies within ``max_range_m`` of the ego;
* shrink / grow: the change moves each end of the box's length by at least
  ``min_end_change_m`` (``fraction × length / 2``), i.e. more than the LiDAR can resolve;
* heading_flip: the clean track moves at ``min_speed_mps`` or faster (motion direction is the
  evidence; a parked car's front and back look alike);
* late: the box moves at least ``late_min_displacement_m`` over the lag;
* offset_2d: 2D boxes linked to a 3D box, at least ``min_box2d_px`` wide;
* radar_count: boxes inside the radar's field of view (``num_radar_pts`` known);
* class_swap: tracks labelled in two keyframes or more, or with a 2D box (the checks compare a
  class along its track and with the 2D boxes; LiDAR alone does not tell a class);
* id_switch: both tracks are labelled in an earlier keyframe too (in a log of one keyframe,
  swapped track ids are no observable error).

Per-box kinds change ``item_rate`` of the eligible items (at least one), so the unchanged
eligible boxes stay in the denominator of precision. Precision = findings of the mapped kinds
that hit an injected item / all findings of those kinds; recall = injected items with at least
one such finding / injected items. A finding hits an injected 3D box when it names its
annotation token in that sample; a ``missing_box`` finding hits a deleted box when its cluster
centre lies inside the deleted box enlarged by ``delete_match_margin_m``; track kinds match the
instance token, 2D kinds the 2D box token.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import quaternion_from_matrix
from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.findings import (
    FINDING_KINDS,
    CheckResult,
    Finding,
    LabelSet,
    require_fraction,
)
from avfusion.types import Boxes2D, Boxes3D

__all__ = [
    "INJECTION_KINDS",
    "KIND_FINDINGS",
    "Check",
    "EvaluationTable",
    "InjectedError",
    "InjectionSpec",
    "KindScore",
    "clean_rate",
    "evaluate",
    "inject",
    "run_check_callables",
    "run_evaluation",
]

logger = logging.getLogger(__name__)

#: A check as the harness calls it: (log, labels, sample_token) -> CheckResult.
Check = Callable[[Any, LabelSet, str], CheckResult]

KIND_FINDINGS: dict[str, tuple[str, ...]] = {
    "shrink": ("box_undersized",),
    "grow": ("box_oversized",),
    "shift": ("box_offset",),
    "delete": ("missing_box",),
    "heading_flip": ("box_heading_flipped",),
    "class_swap": ("class_mismatch", "class_flip"),
    "late": ("label_lag",),
    "offset_2d": ("box2d_offset",),
    "id_switch": ("id_switch",),
    "radar_count": ("radar_count_mismatch",),
}
INJECTION_KINDS: tuple[str, ...] = tuple(KIND_FINDINGS)


@dataclass(frozen=True)
class InjectionSpec:
    """Magnitudes and eligibility rules of the injected errors (see the module docstring)."""

    shrink_fraction: float = 0.15
    grow_fraction: float = 0.15
    shift_m: float = 0.5
    delete_rate: float = 0.05
    class_swap_rate: float = 0.05
    late_lidar_frames: int = 2
    offset_2d_px: float = 10.0
    item_rate: float = 0.3
    min_lidar_points: int = 30
    max_range_m: float = 50.0
    min_end_change_m: float = 0.1
    min_speed_mps: float = 1.0
    late_min_displacement_m: float = 0.2
    min_box2d_px: float = 20.0
    delete_match_margin_m: float = 1.0
    radar_count_change: int = 3
    radar_max_range_m: float = 70.0
    radar_fov_deg: float = 120.0
    lidar: str = "LIDAR_TOP"
    radar: str = "RADAR_FRONT"

    def __post_init__(self) -> None:
        require_fraction(
            self,
            "shrink_fraction",
            "grow_fraction",
            "delete_rate",
            "class_swap_rate",
            "item_rate",
            zero=False,
        )
        if self.shift_m <= 0 or self.offset_2d_px <= 0 or self.late_lidar_frames < 1:
            raise AVFusionError(
                "InjectionSpec: shift_m and offset_2d_px must be > 0 and late_lidar_frames >= 1"
            )

    def describe(self, kind: str) -> str:
        """The magnitude and eligibility rule of one kind, as printed in the table."""
        base = f">= {self.min_lidar_points} LiDAR pts, <= {self.max_range_m:g} m"
        return {
            "shrink": f"size x{1 - self.shrink_fraction:.2f}; {base}, ends move >= {self.min_end_change_m:g} m",
            "grow": f"size x{1 + self.grow_fraction:.2f}; {base}, ends move >= {self.min_end_change_m:g} m",
            "shift": f"{self.shift_m:g} m horizontal; {base}",
            "delete": f"{self.delete_rate:.0%} of boxes; {base}",
            "heading_flip": f"yaw+180 deg; {base}, speed >= {self.min_speed_mps:g} m/s",
            "class_swap": f"{self.class_swap_rate:.0%} of tracks; in >= 2 keyframes or with a 2D box",
            "late": f"{self.late_lidar_frames} LiDAR frames late; moved >= {self.late_min_displacement_m:g} m",
            "offset_2d": f"{self.offset_2d_px:g} px; linked 2D boxes >= {self.min_box2d_px:g} px wide",
            "id_switch": "two same-class tracks swap ids; both labelled in an earlier keyframe",
            "radar_count": f"num_radar_pts n -> 0 if n >= {self.radar_count_change} else n + {self.radar_count_change}; "
            f"{base}, in the radar field of view",
        }[kind]


@dataclass(frozen=True)
class InjectedError:
    """One injected error: ``item_id`` is the annotation token (3D kinds), 2D box token
    (offset_2d) or instance token (track kinds); ``details`` holds the figures (for deletions
    the removed box's world centre, size and yaw)."""

    kind: str
    sample_token: str
    item_id: str
    instance_token: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KindScore:
    """Precision and recall of one injected kind."""

    kind: str
    n_injected: int
    n_detected: int
    n_findings: int
    n_true_findings: int
    n_eligible: int = 0

    @property
    def precision(self) -> float:
        return self.n_true_findings / self.n_findings if self.n_findings else math.nan

    @property
    def recall(self) -> float:
        return self.n_detected / self.n_injected if self.n_injected else math.nan

    @staticmethod
    def total(scores: Iterable[KindScore]) -> KindScore:
        s = list(scores)
        if not s:
            raise AVFusionError("KindScore.total: no scores")
        return KindScore(
            s[0].kind,
            sum(x.n_injected for x in s),
            sum(x.n_detected for x in s),
            sum(x.n_findings for x in s),
            sum(x.n_true_findings for x in s),
            sum(x.n_eligible for x in s),
        )


# -- helpers -------------------------------------------------------------------------------


def _yaw_rotation(yaw: float) -> npt.NDArray[np.float64]:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _replace(boxes: Boxes3D, **cols: Any) -> Boxes3D:
    return Boxes3D(
        cols.get("center", boxes.center),
        cols.get("size", boxes.size),
        cols.get("rotation", boxes.rotation),
        cols.get("label", boxes.label),
        cols.get("track_id", boxes.track_id),
        boxes.frame,
        boxes.velocity,
        boxes.token,
        cols.get("attrs", boxes.attrs),
    )


def _lidar_counts(log: Any, sample_token: str, boxes: Boxes3D, lidar: str) -> npt.NDArray[np.int64]:
    """Returns of the keyframe sweep inside each (world-frame) box."""
    from avfusion.fusion.consistency.lidar import lidar_scene
    from avfusion.fusion.voxel import points_in_boxes

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    scene = lidar_scene(log, sample_token, lidar)
    ego = scene.ego_from_world(boxes)
    return np.asarray(points_in_boxes(scene.points, ego, what="harness").counts, dtype=np.int64)


def _ego_distance(
    log: Any, sample_token: str, boxes: Boxes3D, lidar: str
) -> npt.NDArray[np.float64]:
    from avfusion.fusion.consistency.lidar import lidar_scene

    scene = lidar_scene(log, sample_token, lidar)
    ego = scene.ego_from_world(boxes)
    return np.hypot(ego.center[:, 0], ego.center[:, 1])


def _pick(rng: np.random.Generator, candidates: Sequence[Any], rate: float) -> list[Any]:
    if not candidates:
        return []
    n = max(1, round(rate * len(candidates)))
    idx = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(idx.tolist())]


def _track_positions(log: Any, labels: LabelSet) -> dict[str, list[tuple[int, np.ndarray]]]:
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for token, boxes in labels.boxes3d.items():
        t = log.sample_time_ns(token)
        for tid, c in zip(boxes.track_id.tolist(), boxes.center, strict=True):
            out.setdefault(tid, []).append((t, c.copy()))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def _speeds(log: Any, labels: LabelSet) -> dict[tuple[str, str], float]:
    """Horizontal speed per (sample, instance) from the clean track (velocity column first)."""
    tracks = _track_positions(log, labels)
    out: dict[tuple[str, str], float] = {}
    for token, boxes in labels.boxes3d.items():
        t = log.sample_time_ns(token)
        for i, tid in enumerate(boxes.track_id.tolist()):
            v = np.asarray(boxes.velocity)[i, :2]
            if np.all(np.isfinite(v)):
                out[(token, tid)] = float(np.hypot(*v))
                continue
            obs = tracks.get(tid, [])
            near = [o for o in obs if abs(o[0] - t) <= 600_000_000]
            if len(near) >= 2 and near[-1][0] > near[0][0]:
                d = near[-1][1][:2] - near[0][1][:2]
                out[(token, tid)] = float(np.hypot(*d) / ((near[-1][0] - near[0][0]) * 1e-9))
    return out


def _in_radar_view(
    log: Any, sample_token: str, boxes: Boxes3D, spec: InjectionSpec
) -> npt.NDArray[np.bool_]:
    sd = log.keyframe_data(sample_token).get(spec.radar)
    if sd is None:
        return np.zeros(len(boxes), bool)
    sensor = log.sensors[spec.radar]
    radar_from_world = (log.ego_pose(sd) @ sensor.ego_from_sensor).inverse()
    c = np.asarray(radar_from_world.apply(boxes.center), dtype=np.float64)
    az = np.arctan2(c[:, 1], c[:, 0])
    return (np.hypot(c[:, 0], c[:, 1]) <= spec.radar_max_range_m) & (
        np.abs(az) <= math.radians(spec.radar_fov_deg) / 2
    )


def _lidar_period_ns(log: Any, lidar: str) -> int:
    t = np.asarray(log.timestamps(lidar), dtype=np.int64)
    if t.size < 2:
        return 50_000_000
    return int(np.median(np.diff(t)))


# -- injection -----------------------------------------------------------------------------


def inject(
    log: Any, labels: LabelSet, kind: str, spec: InjectionSpec | None = None, seed: int = 0
) -> tuple[LabelSet, list[InjectedError]]:
    """A copy of ``labels`` with errors of ONE ``kind`` injected into eligible items, and the list
    of what was changed (see the module docstring for magnitudes and eligibility)."""
    spec = spec or InjectionSpec()
    if kind not in KIND_FINDINGS:
        raise AVFusionError(
            f"inject: unknown error kind '{kind}' (known: {', '.join(INJECTION_KINDS)})"
        )
    if not isinstance(labels, LabelSet):
        raise AVFusionError(f"inject: labels must be a LabelSet, got {type(labels).__name__}")
    rng = np.random.default_rng(seed)
    if kind in ("class_swap", "id_switch"):
        return _inject_track(log, labels, kind, spec, rng)
    if kind == "offset_2d":
        return _inject_2d(labels, spec, rng)
    speeds = _speeds(log, labels) if kind in ("heading_flip", "late") else {}
    # eligible (sample, index) pairs
    eligible: list[tuple[str, int]] = []
    for token in sorted(labels.boxes3d):
        boxes = labels.boxes3d[token]
        if len(boxes) == 0:
            continue
        counts = _lidar_counts(log, token, boxes, spec.lidar)
        dist = _ego_distance(log, token, boxes, spec.lidar)
        in_radar = _in_radar_view(log, token, boxes, spec) if kind == "radar_count" else None
        for i in range(len(boxes)):
            if counts[i] < spec.min_lidar_points or dist[i] > spec.max_range_m:
                continue
            if kind in ("shrink", "grow"):
                frac = spec.shrink_fraction if kind == "shrink" else spec.grow_fraction
                if frac * boxes.size[i, 0] / 2 < spec.min_end_change_m:
                    continue
            if (
                kind == "heading_flip"
                and speeds.get((token, str(boxes.track_id[i])), 0.0) < spec.min_speed_mps
            ):
                continue
            if kind == "radar_count" and (
                "num_radar_pts" not in boxes.attrs or in_radar is None or not in_radar[i]
            ):
                continue
            eligible.append((token, i))
    if kind == "late":
        return _inject_late(log, labels, spec, rng, eligible)
    rate = spec.delete_rate if kind == "delete" else spec.item_rate
    chosen = _pick(rng, eligible, rate)
    by_sample: dict[str, list[int]] = {}
    for token, i in chosen:
        by_sample.setdefault(token, []).append(i)
    out = labels
    injected: list[InjectedError] = []
    for token, idx in by_sample.items():
        boxes = labels.boxes3d[token]
        sel = np.array(idx)
        center, size = boxes.center.copy(), boxes.size.copy()
        rot = boxes.rotation.copy()
        attrs = {k: v.copy() for k, v in boxes.attrs.items()}
        details: dict[int, dict[str, Any]] = {}
        if kind == "shrink":
            size[sel] *= 1 - spec.shrink_fraction
        elif kind == "grow":
            size[sel] *= 1 + spec.grow_fraction
        elif kind == "shift":
            ang = rng.uniform(0, 2 * math.pi, sel.size)
            delta = spec.shift_m * np.stack([np.cos(ang), np.sin(ang)], axis=1)
            center[sel, :2] += delta
            for j, i in enumerate(idx):
                details[i] = {"dx_m": float(delta[j, 0]), "dy_m": float(delta[j, 1])}
        elif kind == "heading_flip":
            r = boxes.rotation_matrices()
            flipped = np.einsum("ij,njk->nik", _yaw_rotation(math.pi), r[sel])
            rot[sel] = quaternion_from_matrix(flipped)
        elif kind == "radar_count":
            n = attrs["num_radar_pts"]
            n[sel] = np.where(
                n[sel] >= spec.radar_count_change, 0, n[sel] + spec.radar_count_change
            )
        for i in idx:
            d = details.get(i, {})
            if kind == "delete":
                d = {
                    "center": boxes.center[i].tolist(),
                    "size": boxes.size[i].tolist(),
                    "yaw": float(boxes.yaw[i]),
                }
            injected.append(
                InjectedError(
                    kind, token, str(np.asarray(boxes.token)[i]), str(boxes.track_id[i]), d
                )
            )
        if kind == "delete":
            keep = np.ones(len(boxes), bool)
            keep[sel] = False
            new = boxes.select(keep)
        else:
            new = _replace(boxes, center=center, size=size, rotation=rot, attrs=attrs)
        out = out.replace_boxes3d(token, new)
    return out, injected


def _inject_late(
    log: Any,
    labels: LabelSet,
    spec: InjectionSpec,
    rng: np.random.Generator,
    eligible: list[tuple[str, int]],
) -> tuple[LabelSet, list[InjectedError]]:
    lag_ns = spec.late_lidar_frames * _lidar_period_ns(log, spec.lidar)
    tracks = _track_positions(log, labels)
    movable: list[tuple[str, int, np.ndarray]] = []
    for token, i in eligible:
        boxes = labels.boxes3d[token]
        t = log.sample_time_ns(token) - lag_ns
        obs = tracks.get(str(boxes.track_id[i]), [])
        before = [o for o in obs if o[0] <= t]
        after = [o for o in obs if o[0] > t]
        if not before or not after:
            continue
        (ta, ca), (tb, cb) = before[-1], after[0]
        c = ca + (cb - ca) * ((t - ta) / (tb - ta))
        if np.hypot(*(c - boxes.center[i])[:2]) >= spec.late_min_displacement_m:
            movable.append((token, i, c))
    chosen = _pick(rng, movable, spec.item_rate)
    out = labels
    injected: list[InjectedError] = []
    for token in sorted({c[0] for c in chosen}):
        boxes = out.boxes3d[token]
        center = boxes.center.copy()
        for tok, i, c in chosen:
            if tok != token:
                continue
            center[i] = c
            injected.append(
                InjectedError(
                    "late",
                    token,
                    str(np.asarray(boxes.token)[i]),
                    str(boxes.track_id[i]),
                    {
                        "lag_ns": lag_ns,
                        "displacement_m": float(np.hypot(*(c - boxes.center[i])[:2])),
                    },
                )
            )
        out = out.replace_boxes3d(token, _replace(boxes, center=center))
    return out, injected


def _inject_track(
    log: Any, labels: LabelSet, kind: str, spec: InjectionSpec, rng: np.random.Generator
) -> tuple[LabelSet, list[InjectedError]]:
    cat_of: dict[str, str] = {}
    keyframes: dict[str, int] = {}
    for boxes in labels.boxes3d.values():
        for tid, c in zip(boxes.track_id.tolist(), boxes.label.tolist(), strict=True):
            cat_of.setdefault(tid, c)
            keyframes[tid] = keyframes.get(tid, 0) + 1
    tracks = sorted(cat_of)
    out = labels
    injected: list[InjectedError] = []
    if kind == "class_swap":
        cats = sorted(set(cat_of.values()))
        # judgeable: a class is compared with the 2D boxes' or along the track
        # (a 2D box names its track, or its 3D box as offset_2d's eligibility does)
        track_of = {
            str(a): str(t)
            for b3 in labels.boxes3d.values()
            if b3.token is not None
            for a, t in zip(b3.token, b3.track_id, strict=True)
        }
        in_2d: set[str] = set()
        for b2 in labels.boxes2d.values():
            in_2d.update(str(t) for t in b2.track_id if str(t))
            link = b2.attrs.get("sample_annotation_token") if b2.attrs else None
            if link is not None:
                in_2d.update(track_of[str(a)] for a in link if str(a) in track_of)
        judged = [t for t in tracks if keyframes[t] >= 2 or t in in_2d]
        if len(cats) < 2 or not judged:
            return labels, []
        chosen = _pick(rng, judged, spec.class_swap_rate)
        new_cat = {}
        for tid in chosen:
            others = [c for c in cats if c != cat_of[tid]]
            new_cat[tid] = others[int(rng.integers(len(others)))]
        for token in sorted(labels.boxes3d):
            boxes = out.boxes3d[token]
            label = boxes.label.copy()
            hit = np.isin(boxes.track_id, list(new_cat))
            if not hit.any():
                continue
            for i in np.nonzero(hit)[0].tolist():
                label[i] = new_cat[str(boxes.track_id[i])]
            out = out.replace_boxes3d(token, _replace(boxes, label=label))
        injected = [
            InjectedError("class_swap", "", tid, tid, {"from": cat_of[tid], "to": new_cat[tid]})
            for tid in chosen
        ]
        return out, injected
    # id_switch: two tracks of one category present in a common middle keyframe and seen
    # before it (without an earlier keyframe of both, swapped ids are no observable error)
    order = sorted(labels.boxes3d, key=log.sample_time_ns)
    mid = order[len(order) // 2 :]
    if not mid:
        return labels, []
    seen_before = {
        str(t) for token in order[: len(order) // 2] for t in labels.boxes3d[token].track_id
    }
    first = labels.boxes3d[mid[0]]
    pairs = []
    cats = sorted(set(first.label.tolist()))
    for c in cats:
        tids = sorted(
            {
                str(t)
                for t, lab in zip(first.track_id, first.label, strict=True)
                if lab == c and str(t) in seen_before
            }
        )
        if len(tids) >= 2:
            pairs.append((tids[0], tids[1]))
    if not pairs:
        return labels, []
    a, b = pairs[int(rng.integers(len(pairs)))]
    for token in mid:
        boxes = out.boxes3d[token]
        tid = boxes.track_id.copy()
        ia, ib = tid == a, tid == b
        tid[ia], tid[ib] = b, a
        out = out.replace_boxes3d(token, _replace(boxes, track_id=tid))
    injected = [
        InjectedError("id_switch", mid[0], a, a, {"with": b}),
        InjectedError("id_switch", mid[0], b, b, {"with": a}),
    ]
    return out, injected


def _inject_2d(
    labels: LabelSet, spec: InjectionSpec, rng: np.random.Generator
) -> tuple[LabelSet, list[InjectedError]]:
    eligible: list[tuple[str, int]] = []
    for sd, b2 in sorted(labels.boxes2d.items()):
        link = b2.attrs.get("sample_annotation_token") if b2.attrs else None
        width = b2.xyxy[:, 2] - b2.xyxy[:, 0]
        for i in range(len(b2)):
            if link is not None and str(link[i]) and width[i] >= spec.min_box2d_px:
                eligible.append((sd, i))
    chosen = _pick(rng, eligible, spec.item_rate)
    out = labels
    injected: list[InjectedError] = []
    for sd in sorted({c[0] for c in chosen}):
        b2 = out.boxes2d[sd]
        xyxy = b2.xyxy.copy()
        tokens = b2.attrs.get("token")
        for s, i in chosen:
            if s != sd:
                continue
            dx = spec.offset_2d_px * (1 if rng.random() < 0.5 else -1)
            xyxy[i, [0, 2]] += dx
            injected.append(
                InjectedError(
                    "offset_2d",
                    sd,
                    str(tokens[i]) if tokens is not None else f"{sd}/{i}",
                    str(b2.track_id[i]),
                    {"dx_px": dx},
                )
            )
        out = out.replace_boxes2d(
            sd, Boxes2D(xyxy, b2.label, b2.track_id, b2.sensor, dict(b2.attrs))
        )
    return out, injected


# -- evaluation ----------------------------------------------------------------------------


def _hits(f: Finding, e: InjectedError, spec: InjectionSpec) -> bool:
    if e.kind == "delete":
        if f.sample_token != e.sample_token:
            return False
        ev = f.evidence
        if "center_x_world_m" not in ev:
            return False
        p = np.array([float(ev["center_x_world_m"]), float(ev["center_y_world_m"])])
        c = np.asarray(e.details["center"], dtype=np.float64)[:2]
        size = np.asarray(e.details["size"], dtype=np.float64)
        loc = _yaw_rotation(float(e.details["yaw"]))[:2, :2].T @ (p - c)
        return bool(np.all(np.abs(loc) <= size[:2] / 2 + spec.delete_match_margin_m))
    if e.kind in ("class_swap", "id_switch"):
        return f.instance_token == e.item_id or f.item_id == e.item_id
    if e.kind == "offset_2d":
        return f.box2d_token == e.item_id or f.item_id == e.item_id
    return f.sample_token == e.sample_token and (
        f.annotation_token == e.item_id or f.item_id == e.item_id
    )


def evaluate(
    results: Iterable[CheckResult],
    injected: Sequence[InjectedError],
    kind: str,
    spec: InjectionSpec | None = None,
    n_eligible: int = 0,
) -> KindScore:
    """Precision and recall of the findings of ``kind``'s mapped finding kinds against the
    injected errors (see the module docstring for what counts as a hit)."""
    spec = spec or InjectionSpec()
    if kind not in KIND_FINDINGS:
        raise AVFusionError(
            f"evaluate: unknown error kind '{kind}' (known: {', '.join(INJECTION_KINDS)})"
        )
    wanted = set(KIND_FINDINGS[kind])
    findings = [f for r in results for f in r.findings if f.kind in wanted]
    ours = [e for e in injected if e.kind == kind]
    true = sum(1 for f in findings if any(_hits(f, e, spec) for e in ours))
    detected = sum(1 for e in ours if any(_hits(f, e, spec) for f in findings))
    return KindScore(kind, len(ours), detected, len(findings), true, n_eligible)


def clean_rate(results: Iterable[CheckResult]) -> float:
    """Fraction of the checked items with any finding (run on clean labels: the false-alarm rate)."""
    items = 0
    flagged = set()
    for r in results:
        items += len(r.items)
        flagged |= {(f.check, f.sample_token, f.item_id) for f in r.findings}
    return len(flagged) / items if items else 0.0


def run_check_callables(
    log: Any, labels: LabelSet, checks: Sequence[Check], sample_tokens: Sequence[str] | None = None
) -> list[CheckResult]:
    """Every check on every sample of ``labels`` (or of ``sample_tokens``)."""
    tokens = list(labels.boxes3d) if sample_tokens is None else list(sample_tokens)
    return [check(log, labels, t) for t in tokens for check in checks]


@dataclass(frozen=True)
class EvaluationTable:
    """Scores per kind (summed over seeds), the clean finding rate and the rules used."""

    scores: Mapping[str, KindScore]
    clean_rate: float
    clean_items: int
    spec: InjectionSpec
    name: str = ""

    def table(self) -> str:
        lines = [
            f"label-consistency evaluation {self.name}".rstrip(),
            f"{'kind':<13} {'inj':>4} {'det':>4} {'find':>5} {'P':>6} {'R':>6}  magnitude; eligibility",
        ]
        for kind, s in self.scores.items():
            p = "  n/a" if math.isnan(s.precision) else f"{s.precision:6.3f}"
            r = "  n/a" if math.isnan(s.recall) else f"{s.recall:6.3f}"
            lines.append(
                f"{kind:<13} {s.n_injected:>4} {s.n_detected:>4} {s.n_findings:>5} {p:>6} {r:>6}  "
                f"{self.spec.describe(kind)}"
            )
        lines.append(
            f"clean labels: {self.clean_rate:.2%} of {self.clean_items} checked items with a finding"
        )
        return "\n".join(lines)


def run_evaluation(
    log: Any,
    labels: LabelSet,
    checks: Sequence[Check],
    kinds: Sequence[str],
    *,
    spec: InjectionSpec | None = None,
    seeds: Sequence[int] = (0,),
    name: str = "",
) -> EvaluationTable:
    """Inject each kind (one kind per run, once per seed) into ``labels`` (clean), run the
    ``checks`` that can emit the kind's findings (known from their results on the clean labels)
    on every sample, and score; plus the clean finding rate of all checks on ``labels``
    themselves. The 2D and temporal checks plug in as further callables."""
    spec = spec or InjectionSpec()
    tokens = list(labels.boxes3d)
    clean: list[CheckResult] = []
    check_names: list[str] = []
    for check in checks:
        results = [check(log, labels, t) for t in tokens]
        clean.extend(results)
        check_names.append(results[0].check if results else "")
    scores: dict[str, KindScore] = {}
    for kind in kinds:
        if kind not in KIND_FINDINGS:
            raise AVFusionError(
                f"run_evaluation: unknown error kind '{kind}' (known: {', '.join(INJECTION_KINDS)})"
            )
        # only the checks that can emit this kind's findings run on the injected labels
        wanted = {FINDING_KINDS[f][0] for f in KIND_FINDINGS[kind]}
        relevant = [c for c, name in zip(checks, check_names, strict=True) if name in wanted]
        per_seed = []
        for seed in seeds:
            bad, injected = inject(log, labels, kind, spec, seed)
            results = run_check_callables(log, bad, relevant)
            per_seed.append(evaluate(results, injected, kind, spec))
        scores[kind] = KindScore.total(per_seed)
        logger.info("%s: %s", kind, scores[kind])
    return EvaluationTable(scores, clean_rate(clean), sum(len(r.items) for r in clean), spec, name)
