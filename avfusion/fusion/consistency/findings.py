"""The shared vocabulary of label-consistency checks: labels under test, checked items, findings.

Every check in this package takes a :class:`LabelSet` (the labels under test, which need not be
the log's own: the evaluation harness hands in labels with injected errors) plus the sensor
data of a log, and returns a :class:`CheckResult`: one :class:`CheckedItem` per item it looked
at (the denominators of every rate) and one :class:`Finding` per problem it found. A finding
always names what it is about (sample, sensor, annotation / instance / 2D-box token) and carries
the figures that made the check decide (``evidence``), so a reviewer can judge it.

``findings.json`` (schema :data:`FINDINGS_SCHEMA`) is written by :mod:`.report`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from avfusion.errors import AVFusionError
from avfusion.types import Boxes2D, Boxes3D

__all__ = [
    "CHECKS",
    "FINDINGS_SCHEMA",
    "FINDING_KINDS",
    "SEVERITY_LEVELS",
    "CheckResult",
    "CheckedItem",
    "Finding",
    "LabelSet",
    "require_fraction",
    "require_positive",
    "severity_level",
]

FINDINGS_SCHEMA = "avfusion.findings/1"

#: Check name -> what it compares.
CHECKS: dict[str, str] = {
    "box_lidar": "3D box against the LiDAR returns in and around it",
    "unlabelled": "LiDAR clusters above the ground inside no box",
    "box_radar": "3D box against radar returns (count and Doppler)",
    "box_2d": "projected 3D boxes against 2D boxes of every camera and thermal camera",
    "temporal": "each track over time (size, class, identity, motion, lag)",
    "occupancy": "generated occupancy against the boxes",
}

#: Finding kind -> (check, one-line meaning). Checks only emit kinds listed here.
FINDING_KINDS: dict[str, tuple[str, str]] = {
    "box_empty": ("box_lidar", "no LiDAR return inside a box that should have some"),
    "box_sparse": ("box_lidar", "far fewer LiDAR returns than expected for range and size"),
    "box_undersized": ("box_lidar", "object returns just outside the box faces"),
    "box_oversized": ("box_lidar", "empty margins between the returns and the box faces"),
    "box_offset": ("box_lidar", "the returns are centred away from the box centre"),
    "box_heading_flipped": ("box_lidar", "the box heading is reversed against the object"),
    "missing_box": ("unlabelled", "a LiDAR cluster above the ground inside no box"),
    "radar_count_mismatch": ("box_radar", "radar returns in the box disagree with num_radar_pts"),
    "radar_doppler_mismatch": ("box_radar", "radar Doppler disagrees with the box velocity"),
    "box2d_unmatched": ("box_2d", "a 2D box with no 3D box behind it"),
    "box3d_unmatched": ("box_2d", "a visible 3D box with no 2D box"),
    "box2d_offset": ("box_2d", "a 2D box displaced from its projected 3D box"),
    "class_mismatch": ("box_2d", "2D and 3D boxes of one object disagree on the class"),
    "size_change": ("temporal", "a rigid object changes size along its track"),
    "class_flip": ("temporal", "a track changes class"),
    "id_switch": ("temporal", "a track jumps to another object"),
    "implausible_motion": ("temporal", "implausible speed, acceleration or yaw rate"),
    "label_lag": ("temporal", "the box lags or leads the LiDAR evidence"),
    "occupancy_box_mismatch": ("occupancy", "generated occupancy disagrees with a box"),
}


def require_positive(options: Any, *names: str) -> None:
    """Raise ``AVFusionError`` naming the options class and field unless each of ``names`` is a
    finite number > 0 (the checks' option classes validate with this)."""
    for name in names:
        v = getattr(options, name)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or not (math.isfinite(v) and v > 0)
        ):
            raise AVFusionError(f"{type(options).__name__}: {name} must be > 0, got {v!r}")


def require_fraction(options: Any, *names: str, zero: bool = True) -> None:
    """Like :func:`require_positive` for fractions: each of ``names`` in [0, 1] (in (0, 1]
    with ``zero=False``)."""
    for name in names:
        v = getattr(options, name)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and (0.0 <= v <= 1.0)
        if not ok or (not zero and v == 0):
            span = "[0, 1]" if zero else "(0, 1]"
            raise AVFusionError(f"{type(options).__name__}: {name} must be in {span}, got {v!r}")


#: Severity bands for people; the number itself (0..1) is what findings are ranked by.
SEVERITY_LEVELS: tuple[tuple[float, str], ...] = ((0.75, "high"), (0.4, "medium"), (0.0, "low"))


def severity_level(severity: float) -> str:
    """The band ('high', 'medium', 'low') of a severity in [0, 1]."""
    for threshold, name in SEVERITY_LEVELS:
        if severity >= threshold:
            return name
    return "low"


def _check_kind(kind: str, check: str, where: str) -> None:
    known = FINDING_KINDS.get(kind)
    if known is None:
        raise AVFusionError(
            f"{where}: unknown finding kind '{kind}' (known: {sorted(FINDING_KINDS)})"
        )
    if known[0] != check:
        raise AVFusionError(f"{where}: kind '{kind}' belongs to check '{known[0]}', not '{check}'")


@dataclass(frozen=True)
class CheckedItem:
    """One item a check looked at (a 3D box, a 2D box, a cluster, a track): a rate denominator.

    ``item_id`` is the annotation token for 3D boxes, the 2D box token for 2D boxes, the
    instance token for tracks and a check-made id for clusters. ``tags`` are the slices the item
    belongs to (scene description tags such as ``night`` or ``rain``); ``distance_m`` is the
    horizontal distance from the ego at the sample time (NaN when it has none).
    """

    check: str
    item_id: str
    sample_token: str
    sensor: str
    category: str
    distance_m: float = math.nan
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise AVFusionError(f"checked item '{self.item_id}': unknown check '{self.check}'")


@dataclass(frozen=True)
class Finding:
    """One problem found by a check, with the figures that decided it.

    ``severity`` in [0, 1] orders findings (1 = certainly wrong and consequential).
    ``item_id`` refers to the :class:`CheckedItem` the finding is about.
    """

    kind: str
    check: str
    severity: float
    item_id: str
    sample_token: str
    sensor: str
    message: str
    category: str = ""
    annotation_token: str = ""
    instance_token: str = ""
    box2d_token: str = ""
    t_ns: int = 0
    distance_m: float = math.nan
    tags: tuple[str, ...] = ()
    evidence: Mapping[str, float | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"finding about '{self.item_id}' in sample {self.sample_token}"
        _check_kind(self.kind, self.check, where)
        if not (0.0 <= self.severity <= 1.0) or math.isnan(self.severity):
            raise AVFusionError(f"{where}: severity {self.severity} is not in [0, 1]")
        object.__setattr__(self, "evidence", dict(self.evidence))

    @property
    def level(self) -> str:
        return severity_level(self.severity)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN distances become null)."""
        return {
            "kind": self.kind,
            "check": self.check,
            "severity": round(float(self.severity), 4),
            "level": self.level,
            "item_id": self.item_id,
            "sample_token": self.sample_token,
            "sensor": self.sensor,
            "category": self.category,
            "annotation_token": self.annotation_token,
            "instance_token": self.instance_token,
            "box2d_token": self.box2d_token,
            "t_ns": int(self.t_ns),
            "distance_m": None if math.isnan(self.distance_m) else round(self.distance_m, 3),
            "tags": list(self.tags),
            "message": self.message,
            "evidence": {k: _json_value(v) for k, v in self.evidence.items()},
        }

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Finding:
        distance = row.get("distance_m")
        return cls(
            kind=str(row["kind"]),
            check=str(row["check"]),
            severity=float(row["severity"]),
            item_id=str(row["item_id"]),
            sample_token=str(row["sample_token"]),
            sensor=str(row["sensor"]),
            message=str(row["message"]),
            category=str(row.get("category", "")),
            annotation_token=str(row.get("annotation_token", "")),
            instance_token=str(row.get("instance_token", "")),
            box2d_token=str(row.get("box2d_token", "")),
            t_ns=int(row.get("t_ns", 0)),
            distance_m=math.nan if distance is None else float(distance),
            tags=tuple(row.get("tags", ())),
            evidence=dict(row.get("evidence", {})),
        )


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    if hasattr(value, "item"):  # numpy scalar
        return _json_value(value.item())
    return value


@dataclass(frozen=True)
class CheckResult:
    """What one check did: every item it looked at and every finding, plus skipped counts.

    ``skipped`` maps a reason to how many items were not checked for it (e.g. "no LiDAR sweep
    within tolerance"); nothing is dropped silently.
    """

    check: str
    items: tuple[CheckedItem, ...]
    findings: tuple[Finding, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise AVFusionError(f"check result: unknown check '{self.check}'")
        for f in self.findings:
            if f.check != self.check:
                raise AVFusionError(
                    f"check '{self.check}' returned a finding of check '{f.check}' ({f.kind})"
                )
        object.__setattr__(self, "skipped", dict(self.skipped))

    @staticmethod
    def merge(results: Iterable[CheckResult]) -> dict[str, CheckResult]:
        """Results of one check over several samples, combined per check name."""
        by: dict[str, list[CheckResult]] = {}
        for r in results:
            by.setdefault(r.check, []).append(r)
        merged = {}
        for name, rs in by.items():
            skipped: dict[str, int] = {}
            for r in rs:
                for k, v in r.skipped.items():
                    skipped[k] = skipped.get(k, 0) + int(v)
            merged[name] = CheckResult(
                name,
                tuple(i for r in rs for i in r.items),
                tuple(f for r in rs for f in r.findings),
                skipped,
            )
        return merged


@dataclass(frozen=True, eq=False)
class LabelSet:
    """The labels under test, independent of the log they describe.

    ``boxes3d`` maps a sample token to its world-frame :class:`Boxes3D` (``token`` holds the
    annotation tokens, ``track_id`` the instance tokens). ``boxes2d`` maps a camera
    sample_data token to its :class:`Boxes2D` (``attrs['token']`` the 2D box tokens,
    ``attrs['sample_annotation_token']`` the linked 3D annotation or ""). The harness builds
    modified copies with :meth:`replace_boxes3d` / :meth:`replace_boxes2d`; nothing mutates.
    """

    boxes3d: Mapping[str, Boxes3D]
    boxes2d: Mapping[str, Boxes2D] = field(default_factory=dict)

    @classmethod
    def from_log(cls, log: Any, sample_tokens: Iterable[str] | None = None) -> LabelSet:
        """The labels a nuScenes-style log carries (3D boxes per sample, 2D boxes per keyframe image)."""
        tokens = list(log.sample_tokens if sample_tokens is None else sample_tokens)
        boxes3d = {t: log.boxes3d(t) for t in tokens}
        boxes2d: dict[str, Boxes2D] = {}
        for t in tokens:
            for channel, sd_token in log.keyframe_data(t).items():
                sensor = log.sensors.get(channel)
                if sensor is None or sensor.camera is None:
                    continue
                b2 = log.boxes2d(sd_token, channel)
                if b2 is not None:
                    boxes2d[sd_token] = b2
        return cls(boxes3d, boxes2d)

    def replace_boxes3d(self, sample_token: str, boxes: Boxes3D) -> LabelSet:
        if sample_token not in self.boxes3d:
            raise AVFusionError(f"label set has no sample '{sample_token}'")
        return replace(self, boxes3d={**self.boxes3d, sample_token: boxes})

    def replace_boxes2d(self, sd_token: str, boxes: Boxes2D) -> LabelSet:
        return replace(self, boxes2d={**self.boxes2d, sd_token: boxes})

    def __len__(self) -> int:
        return sum(len(b) for b in self.boxes3d.values())
