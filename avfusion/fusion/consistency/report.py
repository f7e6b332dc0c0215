"""Counts, rates, the camera/LiDAR class confusion matrix and ``findings.json`` of a run.

:func:`summarise_results` turns the :class:`~.findings.CheckResult` objects of a run into a
:class:`ConsistencyReport`:

* ``summary``: items, flagged items, findings and rates per check, per finding kind, per class
  and per slice (``tag:<scene tag>`` from the scene description, ``distance:<band>`` of the
  item's distance from the ego, ``sensor:<name>``), plus counts per severity level. An item is
  flagged when any finding names it; rates are flagged items over items;
* ``confusion``: camera class (rows) against 3D/LiDAR class (columns) of the matched 2D/3D
  pairs of the ``box_2d`` check, with Cohen's kappa (1 = perfect agreement);
* ``findings`` ranked by severity (ties broken by kind, sample, sensor and item, so the order is
  deterministic).

``findings.json`` (:func:`write_findings_json`, schema :data:`~.findings.FINDINGS_SCHEMA`)::

    {"schema": "avfusion.findings/1", "source": str, "checks": [str], "samples": [str],
     "summary": {"items": int, "flagged_items": int, "findings": int, "rate": float,
                 "by_check" | "by_kind" | "by_class" | "by_slice": {name: {"items": int,
                     "flagged_items": int, "findings": int, "rate": float | null}},
                 "by_level": {"high": int, "medium": int, "low": int}},
     "confusion": {"classes": [str], "matrix": [[int]], "pairs": int, "kappa": float | null,
                   "rows": "camera", "columns": "lidar"},
     "skipped": {reason: int}, "time_offsets_ns": {camera: int},
     "findings": [Finding.to_json(), ...]}   # ranked, most severe first

Written atomically (a temporary file, then a rename) with sorted keys, so one run gives one
byte-identical file. :func:`read_findings_json` reads it back (items are not stored: the
summary carries the counts).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.findings import (
    FINDING_KINDS,
    FINDINGS_SCHEMA,
    SEVERITY_LEVELS,
    CheckResult,
    Finding,
)

__all__ = [
    "CONDITION_WORDS",
    "DISTANCE_BANDS_M",
    "Confusion",
    "ConsistencyReport",
    "cohens_kappa",
    "confusion_matrix",
    "distance_band",
    "rank_findings",
    "read_findings_json",
    "scene_tags",
    "summarise_results",
    "write_findings_json",
]

#: Words of a scene description that name a condition slice, and the tag they give.
CONDITION_WORDS: dict[str, str] = {
    "night": "night",
    "dark": "night",
    "rain": "rain",
    "rainy": "rain",
    "wet": "rain",
    "fog": "fog",
    "foggy": "fog",
    "snow": "snow",
    "day": "day",
}

#: Distance bands (m, lower bounds) of the distance slices: 0–20, 20–40, 40+.
DISTANCE_BANDS_M: tuple[float, ...] = (0.0, 20.0, 40.0)


def scene_tags(description: str) -> tuple[str, ...]:
    """Slice tags of a nuScenes scene description ("Night, rain, peds" -> ('night', 'rain'));
    'day' when it names no lighting condition."""
    words = re.findall(r"[a-z]+", description.lower())
    tags = {CONDITION_WORDS[w] for w in words if w in CONDITION_WORDS}
    if "night" not in tags:
        tags.add("day")
    return tuple(sorted(tags))


def distance_band(distance_m: float) -> str:
    """The distance slice of a distance: '0-20m', '20-40m', '40m+' or 'unknown' (NaN)."""
    if not math.isfinite(distance_m):
        return "unknown"
    bounds = DISTANCE_BANDS_M
    for lo, hi in itertools.pairwise(bounds):
        if distance_m < hi:
            return f"{lo:g}-{hi:g}m"
    return f"{bounds[-1]:g}m+"


@dataclass(frozen=True)
class Confusion:
    """Camera class (rows) against LiDAR/3D class (columns) of matched pairs, with kappa."""

    classes: tuple[str, ...]
    matrix: npt.NDArray[np.int64]
    kappa: float

    @property
    def pairs(self) -> int:
        return int(self.matrix.sum())

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "matrix": self.matrix.astype(int).tolist(),
            "pairs": self.pairs,
            "kappa": None if math.isnan(self.kappa) else round(float(self.kappa), 6),
            "rows": "camera",
            "columns": "lidar",
        }


def confusion_matrix(
    pairs: Iterable[tuple[str, str]],
) -> tuple[tuple[str, ...], npt.NDArray[np.int64]]:
    """Classes (sorted) and the count matrix [camera class, lidar class] of (camera, lidar) pairs."""
    pairs = list(pairs)
    classes = tuple(sorted({c for p in pairs for c in p}))
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for a, b in pairs:
        m[index[a], index[b]] += 1
    return classes, m


def cohens_kappa(matrix: npt.ArrayLike) -> float:
    """Cohen's kappa of a square count matrix: (p_o − p_e) / (1 − p_e); NaN without counts,
    1.0 when both raters use one and the same class throughout."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise AVFusionError(f"cohens_kappa: the matrix must be square, got shape {m.shape}")
    if np.any(m < 0):
        raise AVFusionError("cohens_kappa: counts must be >= 0")
    n = m.sum()
    if n == 0:
        return math.nan
    p_o = float(np.trace(m) / n)
    p_e = float((m.sum(axis=1) @ m.sum(axis=0)) / (n * n))
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return (p_o - p_e) / (1.0 - p_e)


def rank_findings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Most severe first; ties by kind, sample, sensor, item (deterministic)."""
    return tuple(
        sorted(
            findings,
            key=lambda f: (-f.severity, f.kind, f.sample_token, f.sensor, f.item_id, f.message),
        )
    )


@dataclass(frozen=True)
class ConsistencyReport:
    """Everything a consistency run found (see the module docstring)."""

    checks: tuple[str, ...]
    samples: tuple[str, ...]
    summary: Mapping[str, Any]
    confusion: Confusion
    findings: tuple[Finding, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)
    source: str = ""
    time_offsets_ns: Mapping[str, int] = field(default_factory=dict)
    results: tuple[CheckResult, ...] = ()

    def worst(self, n: int = 10) -> tuple[Finding, ...]:
        return self.findings[: max(0, n)]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": FINDINGS_SCHEMA,
            "source": self.source,
            "checks": list(self.checks),
            "samples": list(self.samples),
            "summary": _clean(self.summary),
            "confusion": self.confusion.to_json(),
            "skipped": {k: int(v) for k, v in sorted(self.skipped.items())},
            "time_offsets_ns": {k: int(v) for k, v in sorted(self.time_offsets_ns.items())},
            "findings": [f.to_json() for f in self.findings],
        }


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _bucket() -> dict[str, Any]:
    return {"items": 0, "flagged_items": 0, "findings": 0, "rate": math.nan}


def summarise_results(
    results: Sequence[CheckResult],
    class_pairs: Iterable[Any] = (),
    *,
    checks: Sequence[str] = (),
    samples: Sequence[str] = (),
    skipped: Mapping[str, int] | None = None,
    source: str = "",
    time_offsets_ns: Mapping[str, int] | None = None,
    scene_descriptions: Mapping[str, str] | None = None,
) -> ConsistencyReport:
    """The report of a run from its check results and the matched class pairs
    (:class:`~.cameras.ClassPair` or (camera class, lidar class) tuples)."""
    del scene_descriptions  # the items carry their tags already
    # distinct items and which of them are flagged
    item_info: dict[tuple[str, str, str], Any] = {}
    sensor_items: dict[tuple[str, str, str, str], Any] = {}
    for r in results:
        for it in r.items:
            item_info.setdefault((it.check, it.sample_token, it.item_id), it)
            sensor_items.setdefault((it.check, it.sample_token, it.item_id, it.sensor), it)
    findings = [f for r in results for f in r.findings]
    flagged = {(f.check, f.sample_token, f.item_id) for f in findings}
    flagged_sensor = {(f.check, f.sample_token, f.item_id, f.sensor) for f in findings}

    def add(
        table: dict[str, dict[str, Any]], key: str, n_items: int, n_flag: int, n_find: int
    ) -> None:
        b = table.setdefault(key, _bucket())
        b["items"] += n_items
        b["flagged_items"] += n_flag
        b["findings"] += n_find

    by_check: dict[str, dict[str, Any]] = {}
    by_class: dict[str, dict[str, Any]] = {}
    by_slice: dict[str, dict[str, Any]] = {}
    by_kind: dict[str, dict[str, Any]] = {}
    for key, it in sorted(item_info.items()):
        hit = int(key in flagged)
        add(by_check, it.check, 1, hit, 0)
        add(by_class, it.category or "unknown", 1, hit, 0)
        for tag in it.tags or ("untagged",):
            add(by_slice, f"tag:{tag}", 1, hit, 0)
        add(by_slice, f"distance:{distance_band(it.distance_m)}", 1, hit, 0)
    for skey, it in sorted(sensor_items.items()):
        if it.sensor:
            add(by_slice, f"sensor:{it.sensor}", 1, int(skey in flagged_sensor), 0)
    items_per_check = {c: b["items"] for c, b in by_check.items()}
    for f in findings:
        add(by_check, f.check, 0, 0, 1)
        add(by_class, f.category or "unknown", 0, 0, 1)
        add(by_kind, f.kind, 0, 0, 1)
        for tag in f.tags or ("untagged",):
            add(by_slice, f"tag:{tag}", 0, 0, 1)
        add(by_slice, f"distance:{distance_band(f.distance_m)}", 0, 0, 1)
        if f.sensor:
            add(by_slice, f"sensor:{f.sensor}", 0, 0, 1)
    for kind, b in by_kind.items():
        check = FINDING_KINDS[kind][0]
        b["check"] = check
        b["items"] = items_per_check.get(check, 0)
        b["flagged_items"] = len(
            {(f.check, f.sample_token, f.item_id) for f in findings if f.kind == kind}
        )
    for table in (by_check, by_class, by_slice, by_kind):
        for b in table.values():
            b["rate"] = b["flagged_items"] / b["items"] if b["items"] else math.nan
    levels = {name: 0 for _, name in SEVERITY_LEVELS}
    for f in findings:
        levels[f.level] += 1
    n_items = len(item_info)
    summary = {
        "items": n_items,
        "flagged_items": len(flagged & set(item_info)),
        "findings": len(findings),
        "rate": len(flagged & set(item_info)) / n_items if n_items else math.nan,
        "by_check": dict(sorted(by_check.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "by_class": dict(sorted(by_class.items())),
        "by_slice": dict(sorted(by_slice.items())),
        "by_level": levels,
    }
    pairs = [
        (p.camera_class, p.lidar_class) if hasattr(p, "camera_class") else (str(p[0]), str(p[1]))
        for p in class_pairs
    ]
    classes, matrix = confusion_matrix(pairs)
    confusion = Confusion(classes, matrix, cohens_kappa(matrix) if pairs else math.nan)
    merged_skipped: dict[str, int] = dict(skipped or {})
    for r in results:
        for k, v in r.skipped.items():
            reason = f"{r.check}: {k}"
            merged_skipped[reason] = merged_skipped.get(reason, 0) + int(v)
    return ConsistencyReport(
        tuple(checks) or tuple(sorted({r.check for r in results})),
        tuple(samples),
        summary,
        confusion,
        rank_findings(findings),
        merged_skipped,
        source,
        dict(time_offsets_ns or {}),
        tuple(results),
    )


def write_findings_json(path: str | os.PathLike[str], report: ConsistencyReport) -> Path:
    """Write ``findings.json`` atomically (temporary file in the same folder, then rename)."""
    out = Path(path)
    if out.is_dir():
        raise AVFusionError(f"{out}: is a folder; give the path of the findings.json to write")
    if not out.parent.is_dir():
        raise AVFusionError(f"{out.parent}: folder does not exist (for {out.name})")
    text = json.dumps(report.to_json(), indent=1, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def read_findings_json(path: str | os.PathLike[str]) -> ConsistencyReport:
    """Read a ``findings.json`` back (the check results themselves are not stored)."""
    p = Path(path)
    if not p.is_file():
        raise AVFusionError(f"{p}: no findings.json there")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AVFusionError(f"{p}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != FINDINGS_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise AVFusionError(f"{p}: schema is {got!r}, expected '{FINDINGS_SCHEMA}'")
    try:
        conf = data["confusion"]
        matrix = np.asarray(conf["matrix"], dtype=np.int64).reshape(
            len(conf["classes"]), len(conf["classes"])
        )
        kappa = conf.get("kappa")
        confusion = Confusion(
            tuple(conf["classes"]), matrix, math.nan if kappa is None else float(kappa)
        )
        findings = tuple(Finding.from_json(row) for row in data["findings"])
        return ConsistencyReport(
            tuple(data["checks"]),
            tuple(data["samples"]),
            data["summary"],
            confusion,
            findings,
            {str(k): int(v) for k, v in data.get("skipped", {}).items()},
            str(data.get("source", "")),
            {str(k): int(v) for k, v in data.get("time_offsets_ns", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AVFusionError) as exc:
        raise AVFusionError(f"{p}: malformed findings.json ({exc})") from exc
