"""The self-contained HTML QA report: an index with summary tables and one page per frame.

``build_report(log, out_dir, ...)`` writes::

    out_dir/index.html                 summary tables (frames, sync quality, calibration scores,
                                       label findings per check / kind / class / slice / sensor,
                                       occupancy statistics) and every finding, sortable by
                                       clicking a header and filterable by severity, class,
                                       sensor and check
    out_dir/frames/<sample_token>.html montage, BEV, per-camera overlays and calibration
                                       checks, occupancy renders, the frame's findings
    out_dir/img/<sample_token>/*.png   the images (PNG), written by the per-frame job
    out_dir/img/manifest.json          the job's manifest: a second run with the same inputs
                                       re-renders nothing (see ``avfusion.runner``)

Everything is inline (CSS, vanilla JavaScript, no CDN), so the folder works from ``file://``
and can be zipped and mailed. Every value from the inputs is HTML-escaped (Jinja2 autoescape).
The output depends only on the inputs: no dates or run times are written into the pages.

Nothing is skipped silently: an image a renderer cannot make, a frame without occupancy labels
or a finding about a sample outside the report is named on the page it would have appeared on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError, LogFormatError
from avfusion.fusion.aggregate import OCC3D_CLASSES
from avfusion.fusion.consistency.findings import FINDINGS_SCHEMA, Finding
from avfusion.runner import MANIFEST_NAME, FrameResult, FrameTask, atomic_write, run_job

__all__ = [
    "REPORT_VERSION",
    "ReportFramesJob",
    "build_report",
    "load_calibration_check",
    "load_findings",
    "load_sync_report",
    "occupancy_stats",
]

logger = logging.getLogger(__name__)

#: Bumped when the images of a frame change for the same inputs (invalidates resumed images).
REPORT_VERSION = 2
#: Images wider than this are scaled down (area interpolation) before PNG encoding.
DEFAULT_MAX_WIDTH_PX = 1024
#: zlib level of the PNGs (3: about 2.5x faster than 6 for 7 % more bytes).
PNG_COMPRESSION = 3
#: Width of the montage thumbnails on the index page.
THUMB_WIDTH_PX = 220
LEVELS = ("high", "medium", "low")
_FREE = len(OCC3D_CLASSES) - 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

ProgressFn = Callable[..., object]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AVFusionError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LogFormatError(f"{what} {path}: not valid JSON ({exc})") from exc


def load_findings(findings: Any) -> list[Finding]:
    """Findings from ``findings.json`` (a path), its parsed document (a dict with a
    ``findings`` list), a ``ConsistencyReport``, or rows (``Finding`` objects or
    ``Finding.to_json()`` dicts).

    Every row is validated (kind, check, severity); a bad row raises ``AVFusionError`` naming
    the file and the row. Returned in a fixed order: severity (high first), sample, kind, item.
    """
    return _findings_and_document(findings)[0]


def _findings_and_document(findings: Any) -> tuple[list[Finding], Mapping[str, Any] | None]:
    """``load_findings`` plus the whole findings document when there is one (its ``summary``
    rates and ``skipped`` counts go on the index)."""
    source = "findings"
    doc: Any = findings
    if isinstance(findings, (str, os.PathLike)):
        path = Path(findings)
        source = f"findings file {path}"
        doc = _read_json(path, "findings file")
    elif hasattr(findings, "to_json") and not isinstance(findings, Finding):
        doc = findings.to_json()  # a ConsistencyReport
    document: Mapping[str, Any] | None = None
    if isinstance(doc, Mapping):
        document = doc
        schema = doc.get("schema")
        if schema is not None and schema != FINDINGS_SCHEMA:
            raise LogFormatError(f"{source}: schema '{schema}', expected '{FINDINGS_SCHEMA}'")
        if "findings" not in doc or not isinstance(doc["findings"], list):
            raise LogFormatError(f"{source}: no 'findings' list (schema {FINDINGS_SCHEMA})")
        rows: Iterable[Any] = doc["findings"]
    elif isinstance(doc, (str, bytes)) or not isinstance(doc, Iterable):
        raise AVFusionError(
            f"{source}: expected a path, a findings document or rows, got {type(doc).__name__}"
        )
    else:
        rows = doc
    out: list[Finding] = []
    for i, row in enumerate(rows):
        if isinstance(row, Finding):
            out.append(row)
            continue
        if not isinstance(row, Mapping):
            raise LogFormatError(f"{source}: row {i} is not an object but a {type(row).__name__}")
        try:
            out.append(Finding.from_json(row))
        except KeyError as exc:
            raise LogFormatError(f"{source}: row {i} has no field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise LogFormatError(f"{source}: row {i}: {exc}") from exc
        except AVFusionError as exc:
            raise LogFormatError(f"{source}: row {i}: {exc}") from exc
    return sorted(out, key=_finding_order), document


def _finding_order(f: Finding) -> tuple[Any, ...]:
    return (-f.severity, f.sample_token, f.check, f.kind, f.sensor, f.item_id, f.message)


def load_calibration_check(
    check: str | os.PathLike[str] | Mapping[str, Any],
) -> dict[str, Any]:
    """``calibration_check.json`` (the ``avfusion calib check`` output: a path or its parsed
    document), or ``check_calibration``'s result (sensor → ``SensorCheck``), as one document
    ``{"lidar": ..., "sensors": {name: SensorCheck.as_dict()}}``."""
    source = "calibration check"
    doc: Any = check
    if isinstance(check, (str, os.PathLike)):
        source = f"calibration check {check}"
        doc = _read_json(Path(check), "calibration check")
    if not isinstance(doc, Mapping):
        raise LogFormatError(f"{source}: expected an object, got {type(doc).__name__}")
    if "sensors" not in doc:  # a check_calibration() result: name -> SensorCheck
        sensors = {}
        for name, value in doc.items():
            if not hasattr(value, "as_dict"):
                raise LogFormatError(
                    f"{source}: no 'sensors' table and '{name}' is not a sensor check"
                )
            sensors[str(name)] = value.as_dict()
        lidars = sorted({str(s.get("lidar", "")) for s in sensors.values()})
        return {"lidar": ", ".join(lidars), "sensors": sensors}
    if not isinstance(doc["sensors"], Mapping):
        raise LogFormatError(f"{source}: 'sensors' is not an object")
    for name, row in doc["sensors"].items():
        if not isinstance(row, Mapping) or "ok" not in row:
            raise LogFormatError(f"{source}: sensor '{name}' has no 'ok' field")
    return {"lidar": str(doc.get("lidar", "")), "sensors": dict(doc["sensors"])}


def load_sync_report(report: str | os.PathLike[str] | Mapping[str, Any] | Any) -> dict[str, Any]:
    """``sync_report.json`` (a path, or a folder holding it), its parsed document, or a
    ``SyncReport``, as the document (``SyncReport.as_dict()``)."""
    source = "sync report"
    doc: Any = report
    if isinstance(report, (str, os.PathLike)):
        path = Path(report)
        if path.is_dir():
            path = path / "sync_report.json"
        source = f"sync report {path}"
        doc = _read_json(path, "sync report")
    elif hasattr(report, "as_dict"):
        doc = report.as_dict()
    if not isinstance(doc, Mapping) or not isinstance(doc.get("streams"), Mapping):
        raise LogFormatError(f"{source}: no 'streams' table (expected sync_report.json v1)")
    return dict(doc)


# --------------------------------------------------------------------------------------------
# Occupancy
# --------------------------------------------------------------------------------------------


def occupancy_stats(
    semantics: npt.ArrayLike, mask_lidar: npt.ArrayLike, mask_camera: npt.ArrayLike
) -> dict[str, Any]:
    """Fractions of all voxels that are occupied, free and observed (by LiDAR or a camera), and
    free but observed by neither; the LiDAR- and camera-observed fractions; voxels per class."""
    sem = np.asarray(semantics)
    ml = np.asarray(mask_lidar) > 0
    mc = np.asarray(mask_camera) > 0
    if sem.ndim != 3 or ml.shape != sem.shape or mc.shape != sem.shape:
        raise AVFusionError(
            f"occupancy: semantics {sem.shape}, mask_lidar {ml.shape} and mask_camera {mc.shape} "
            "must be one 3D grid shape"
        )
    n = sem.size
    occupied = sem != _FREE
    observed = ml | mc
    counts = np.bincount(sem.ravel().astype(np.int64), minlength=len(OCC3D_CLASSES))
    classes = [
        (OCC3D_CLASSES[c] if c < len(OCC3D_CLASSES) else f"class {c}", int(counts[c]))
        for c in range(len(counts))
        if c != _FREE and counts[c] > 0
    ]
    classes.sort(key=lambda kv: (-kv[1], kv[0]))
    n_occ = int(occupied.sum())
    return {
        "grid": "x".join(str(s) for s in sem.shape),
        "voxels": int(n),
        "occupied_voxels": n_occ,
        "occupied": n_occ / n if n else 0.0,
        "free": int((~occupied & observed).sum()) / n if n else 0.0,
        "unobserved": int((~occupied & ~observed).sum()) / n if n else 0.0,
        "lidar_observed": int(ml.sum()) / n if n else 0.0,
        "camera_observed": int(mc.sum()) / n if n else 0.0,
        "classes": classes,
    }


def _read_labels(path: Path) -> dict[str, npt.NDArray[Any]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("semantics", "mask_lidar", "mask_camera") if k not in npz]
            if missing:
                raise LogFormatError(
                    f"{path}: no {', '.join(missing)} (expected Occ3D labels.npz with "
                    "semantics, mask_lidar, mask_camera)"
                )
            return {k: np.asarray(npz[k]) for k in ("semantics", "mask_lidar", "mask_camera")}
    except (OSError, ValueError) as exc:
        raise LogFormatError(f"{path}: not a readable labels.npz ({exc})") from exc


def _occupancy_index(occupancy_dir: Path) -> dict[str, Path]:
    """sample token → labels.npz under ``occupancy_dir`` (``gts/<scene>/<token>/labels.npz`` of
    the occupancy job, or ``<token>/labels.npz``)."""
    if not occupancy_dir.is_dir():
        raise AVFusionError(f"occupancy folder {occupancy_dir} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(occupancy_dir.rglob("labels.npz")):
        found.setdefault(path.parent.name, path)
    return found


# --------------------------------------------------------------------------------------------
# The per-frame job (images)
# --------------------------------------------------------------------------------------------


def _frame_name(token: str, index: int) -> str:
    """A file name for a frame: the sample token when it is a safe name, else its index."""
    return token if _SAFE_NAME.fullmatch(token) else f"frame-{index:05d}"


def _fit_width(rgb: npt.NDArray[Any], max_width_px: int) -> npt.NDArray[np.uint8]:
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise AVFusionError(
            f"renderer returned a {img.dtype} array of shape {img.shape}, expected uint8 (H, W, 3)"
        )
    h, w = img.shape[:2]
    if w <= max_width_px:
        return np.ascontiguousarray(img)
    import cv2

    new_h = max(1, round(h * max_width_px / w))
    return np.ascontiguousarray(
        cv2.resize(img, (max_width_px, new_h), interpolation=cv2.INTER_AREA)
    )


@dataclass(frozen=True, eq=False)
class ReportFramesJob:
    """The images of the report, one task per sample, as a ``runner`` job.

    A task renders the frame's montage, BEV, every camera's overlay and calibration check and,
    when ``occupancy`` names the frame's ``labels.npz``, the occupancy views; ``info`` records
    each image (file, section, title, size), the occupancy statistics and every image that
    could not be made, with the reason.
    """

    log: Any
    findings: Mapping[str, tuple[Finding, ...]] = field(default_factory=dict)
    occupancy: Mapping[str, str] = field(default_factory=dict)
    sample_tokens: tuple[str, ...] = ()
    max_width_px: int = DEFAULT_MAX_WIDTH_PX
    name: str = "qa-report"

    def config(self) -> dict[str, Any]:
        import avfusion

        rows = [f.to_json() for t in sorted(self.findings) for f in self.findings[t]]
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
        return {
            "report_version": REPORT_VERSION,
            "avfusion": avfusion.__version__,
            "log": repr(self.log),
            "findings_sha256": digest,
            "occupancy": {t: str(Path(p).resolve()) for t, p in sorted(self.occupancy.items())},
            "max_width_px": self.max_width_px,
        }

    def tasks(self) -> list[FrameTask]:
        index = {t: i for i, t in enumerate(self.log.sample_tokens)}
        return [
            FrameTask(t, {"name": _frame_name(t, index[t]), "index": str(index[t])})
            for t in self.sample_tokens
        ]

    def __call__(self, task: FrameTask) -> FrameResult:
        from avfusion.viz.plots import encode_png

        token = task.key
        name = task.meta["name"]
        log = self.log
        findings = self.findings.get(token, ())
        files: dict[str, bytes] = {}
        figures: list[dict[str, Any]] = []
        problems: list[str] = []

        def add(
            stem: str,
            section: str,
            title: str,
            render: Callable[..., Any],
            *args: Any,
            **kwargs: Any,
        ) -> npt.NDArray[np.uint8] | None:
            try:
                rgb = _fit_width(render(*args, **kwargs), self.max_width_px)
            except AVFusionError as exc:
                problems.append(f"{title}: {exc}")
                logger.warning("report, sample %s: %s not rendered: %s", token, title, exc)
                return None
            rel = f"{name}/{stem}.png"
            files[rel] = encode_png(rgb, compression=PNG_COMPRESSION)
            figures.append(
                {"file": f"img/{rel}", "section": section, "title": title,
                 "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}
            )  # fmt: skip
            return rgb

        from avfusion.viz.bev import render_bev, render_montage
        from avfusion.viz.overlay import render_calibration_check, render_camera_overlay

        montage = add(
            "montage",
            "overview",
            "all cameras with projected LiDAR and boxes",
            render_montage,
            log,
            token,
            findings=findings,
        )
        thumb: dict[str, Any] | None = None
        if montage is not None:  # a small copy for the index page
            small = _fit_width(montage, THUMB_WIDTH_PX)
            files[f"{name}/thumb.png"] = encode_png(small, compression=PNG_COMPRESSION)
            thumb = {"file": f"img/{name}/thumb.png", "width": int(small.shape[1]),
                     "height": int(small.shape[0])}  # fmt: skip
        add(
            "bev",
            "overview",
            "bird's-eye view: LiDAR, radar, boxes",
            render_bev,
            log,
            token,
            findings=findings,
        )
        sensors = log.sensors
        channels = sorted(  # front cameras first, then by name
            (ch for ch in log.keyframe_data(token) if ch in sensors and sensors[ch].is_image),
            key=lambda ch: ("FRONT" not in ch.upper(), ch),
        )
        for ch in channels:
            add(
                f"overlay_{ch}",
                "cameras",
                f"{ch}: LiDAR depth, boxes and findings",
                render_camera_overlay,
                log,
                token,
                ch,
                findings=findings,
            )
        for ch in channels:
            add(
                f"calibration_{ch}",
                "calibration",
                f"{ch}: LiDAR depth edges on image edges",
                render_calibration_check,
                log,
                token,
                ch,
            )

        occ: dict[str, Any] | None = None
        labels_path = self.occupancy.get(token)
        if labels_path is not None:
            from avfusion.viz.occupancy_render import (
                render_height_slices,
                render_isometric,
                render_topdown,
                render_visibility,
            )

            labels = _read_labels(Path(labels_path))
            sem, ml, mc = labels["semantics"], labels["mask_lidar"], labels["mask_camera"]
            occ = occupancy_stats(sem, ml, mc)
            add(
                "occ_topdown",
                "occupancy",
                "top-down: highest occupied voxel per column",
                render_topdown,
                sem,
            )
            add(
                "occ_topdown_camera",
                "occupancy",
                "top-down, camera-visible voxels only",
                render_topdown,
                sem,
                mask=mc,
            )
            add("occ_isometric", "occupancy", "isometric view", render_isometric, sem)
            add("occ_slices", "occupancy", "height slices", render_height_slices, sem)
            add(
                "occ_visibility",
                "occupancy",
                "observed by LiDAR / by a camera",
                render_visibility,
                ml,
                mc,
            )
        info = {"figures": figures, "problems": problems, "occupancy": occ, "thumb": thumb}
        return FrameResult(token, files, info)


# --------------------------------------------------------------------------------------------
# Page models
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value) * scale:.{digits}f}"


def _sync_model(doc: Mapping[str, Any]) -> dict[str, Any]:
    pairs = {str(p.get("other")): p for p in doc.get("pairs", []) if isinstance(p, Mapping)}
    rows = []
    for name, s in sorted(doc["streams"].items()):
        p = pairs.get(name)
        cov = s.get("pose_coverage") or {}
        gaps = s.get("gaps") or {}
        rows.append(
            {
                "sensor": name,
                "modality": s.get("modality", ""),
                "count": s.get("count", 0),
                "rate": _fmt(s.get("rate_hz"), digits=2),
                "jitter": _fmt(s.get("jitter_std_ns"), 1e-6, 2),
                "gaps": gaps.get("count", 0) if isinstance(gaps, Mapping) else len(gaps),
                "drops": s.get("drops", 0),
                "duplicates": (s.get("duplicates") or {}).get("count", 0),
                "reversals": (s.get("reversals") or {}).get("count", 0),
                "coverage": _fmt(cov.get("fraction"), 100.0, 0),
                "matched": "reference" if p is None else f"{p.get('n_matched')}/{p.get('n_ref')}",
                "match_rate": 1.0 if p is None else (p.get("match_rate") or 0.0),
                "dt_median": "-" if p is None else _fmt(p.get("dt_median_ns"), 1e-6),
                "dt_p5": "-" if p is None else _fmt(p.get("dt_p5_ns"), 1e-6),
                "dt_p95": "-" if p is None else _fmt(p.get("dt_p95_ns"), 1e-6),
                "dt_max": "-" if p is None else _fmt(p.get("dt_max_abs_ns"), 1e-6),
            }
        )
    notes = [str(n) for n in doc.get("notes", [])]
    return {"ref": str(doc.get("ref_sensor", "")), "rows": rows, "notes": notes, "plot": None}


def _calibration_model(doc: Mapping[str, Any]) -> dict[str, Any]:
    rows = []
    for name, c in sorted(doc["sensors"].items()):

        def vec(key: str, scale: float, digits: int, c: Mapping[str, Any] = c) -> str:
            values = c.get(key) or []
            return " ".join("-" if v is None else f"{float(v) * scale:+.{digits}f}" for v in values)

        rows.append(
            {
                "sensor": name,
                "ok": bool(c.get("ok")),
                "n_frames": c.get("n_frames", 0),
                "flagged": _fmt(c.get("flagged_fraction"), 100.0, 0),
                "gain": _fmt(c.get("mean_improvement"), 100.0, 1),
                "rotation": vec("correction_rotation_deg", 1.0, 2),
                "translation": vec("correction_translation_m", 100.0, 1),
                "cost_current": _fmt(c.get("cost_current"), digits=4),
                "cost_best": _fmt(c.get("cost_best"), digits=4),
                "verdict": str(c.get("verdict", "")),
            }
        )
    return {"lidar": doc.get("lidar", ""), "rows": rows}


def _count_rows(findings: Sequence[Finding], key: Callable[[Finding], Iterable[str]]) -> list[Any]:
    counts: dict[str, Counter[str]] = {}
    for f in findings:
        for name in key(f):
            counts.setdefault(name, Counter())[f.level] += 1
    rows: list[dict[str, Any]] = [
        {"name": name, "counts": [c[lv] for lv in LEVELS], "total": sum(c.values())}
        for name, c in counts.items()
    ]
    rows.sort(key=lambda r: (-r["total"], r["name"]))
    return rows


def _rate_rows(table: Any) -> list[dict[str, Any]]:
    """Rows of a findings.json ``summary`` table (name → items, flagged_items, findings, rate)."""
    if not isinstance(table, Mapping):
        return []
    rows = []
    for name, r in table.items():
        if not isinstance(r, Mapping) or "items" not in r:
            continue
        rate = r.get("rate")
        rows.append(
            {
                "name": str(name),
                "n_items": r.get("items", 0),
                "flagged": r.get("flagged_items", 0),
                "findings": r.get("findings", 0),
                "rate": float(rate) if isinstance(rate, (int, float)) else -1.0,
            }
        )
    rows.sort(key=lambda r: (-r["rate"], r["name"]))
    return rows


def _findings_summary(
    findings: Sequence[Finding], source: str, document: Mapping[str, Any] | None
) -> dict[str, Any]:
    summary = document.get("summary") if document is not None else None
    summary = summary if isinstance(summary, Mapping) else {}
    skipped = document.get("skipped") if document is not None else None
    rates = [
        (key, title, _rate_rows(summary.get(key)))
        for key, title in (("by_check", "check"), ("by_class", "class"), ("by_slice", "slice"))
    ]
    return {
        "rates": [
            {"id": f"rates-{k.removeprefix('by_')}", "title": t, "rows": r}
            for k, t, r in rates
            if r
        ],
        "skipped": sorted((str(k), v) for k, v in skipped.items())
        if isinstance(skipped, Mapping)
        else [],
        "total": len(findings),
        "source": source,
        "levels": LEVELS,
        "by_kind": _count_rows(findings, lambda f: [f"{f.check} / {f.kind}"]),
        "by_class": _count_rows(findings, lambda f: [f.category or "(none)"]),
        "by_slice": _count_rows(findings, lambda f: list(f.tags) or ["(no slice tag)"]),
        "by_sensor": _count_rows(findings, lambda f: [f.sensor or "(none)"]),
    }


def _finding_rows(
    findings: Sequence[Finding], frame_files: Mapping[str, str], labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    rows = []
    for n, f in enumerate(findings):
        evidence = "; ".join(f"{k} = {_evidence(v)}" for k, v in sorted(f.evidence.items()))
        ids = [("annotation", f.annotation_token), ("instance", f.instance_token),
               ("2D box", f.box2d_token)]  # fmt: skip
        refs = ", ".join(f"{what} {tok}" for what, tok in ids if tok)
        rows.append(
            {
                "anchor": f"f{n}",
                "severity": round(float(f.severity), 4),
                "level": f.level,
                "check": f.check,
                "kind": f.kind,
                "category": f.category,
                "category_key": f.category or "(none)",
                "sensor": f.sensor,
                "sensor_key": f.sensor or "(none)",
                "sample_token": f.sample_token,
                "frame_file": frame_files.get(f.sample_token),
                "frame_label": labels.get(f.sample_token, f.sample_token),
                "distance": "" if math.isnan(f.distance_m) else f"{f.distance_m:.1f}",
                "distance_sort": -1 if math.isnan(f.distance_m) else round(f.distance_m, 3),
                "tags": ", ".join(f.tags),
                "message": f.message,
                "evidence": "; ".join(x for x in (evidence, refs) if x),
            }
        )
    return rows


def _evidence(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _filters(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    levels = [lv for lv in LEVELS if any(r["level"] == lv for r in rows)]
    return [
        {"key": "level", "label": "severity", "options": levels},
        {"key": "category", "label": "class", "options": sorted({r["category_key"] for r in rows})},
        {"key": "sensor", "label": "sensor", "options": sorted({r["sensor_key"] for r in rows})},
        {"key": "check", "label": "check", "options": sorted({r["check"] for r in rows})},
    ]


def _occ_view(occ: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if occ is None:
        return None
    classes = [(str(name), int(n)) for name, n in occ["classes"]]
    return {
        **occ,
        "classes": classes,
        "classes_text": ", ".join(f"{name} {n}" for name, n in classes),
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("avfusion.viz", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))


def build_report(
    log: Any,
    out_dir: str | os.PathLike[str],
    *,
    findings: str | os.PathLike[str] | Mapping[str, Any] | Iterable[Any] | None = None,
    calibration_check: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    sync_report: Any = None,
    occupancy_dir: str | os.PathLike[str] | None = None,
    sample_tokens: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    max_width_px: int = DEFAULT_MAX_WIDTH_PX,
    workers: int = 1,
) -> Path:
    """Write the HTML QA report of ``log`` into ``out_dir`` and return ``out_dir/index.html``.

    ``findings``: ``findings.json`` (path), its document or rows (see ``load_findings``).
    ``calibration_check``: ``calibration_check.json`` or ``check_calibration``'s result.
    ``sync_report``: ``sync_report.json`` (or its folder), its document or a ``SyncReport``.
    ``occupancy_dir``: an occupancy job's output (``gts/<scene>/<token>/labels.npz``).
    ``sample_tokens``: the frames to include (default: every keyframe of the log).
    ``progress(done, total, sample_token, seconds)`` is called after each frame's images.
    Images are rendered through ``avfusion.runner`` (``workers`` local processes); a rerun
    with the same inputs reuses the images already written and verified.
    """
    if not hasattr(log, "sample_tokens") or not hasattr(log, "keyframe_data"):
        raise AVFusionError(
            f"the QA report needs a nuScenes-style log with samples, got {type(log).__name__} "
            "(convert a bag first: avfusion convert)"
        )
    if isinstance(max_width_px, bool) or not isinstance(max_width_px, int) or max_width_px < 16:
        raise AVFusionError(f"max_width_px must be an integer >= 16, got {max_width_px!r}")
    out = Path(out_dir)
    all_tokens = list(log.sample_tokens)
    index_of = {t: i for i, t in enumerate(all_tokens)}
    if sample_tokens is None:
        tokens = all_tokens
    else:
        tokens = list(dict.fromkeys(sample_tokens))
        unknown = [t for t in tokens if t not in index_of]
        if unknown:
            raise AVFusionError(
                f"sample tokens not in {log!r}: {', '.join(unknown[:5])}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        tokens.sort(key=index_of.__getitem__)
    if not tokens:
        raise AVFusionError(f"{log!r} has no samples to report on")

    notes: list[str] = []
    finding_list: list[Finding] | None = None
    findings_source = ""
    findings_doc: Mapping[str, Any] | None = None
    if findings is not None:
        finding_list, findings_doc = _findings_and_document(findings)
        if isinstance(findings, (str, os.PathLike)):
            findings_source = str(findings)
    calib_doc = None if calibration_check is None else load_calibration_check(calibration_check)
    sync_doc = None if sync_report is None else load_sync_report(sync_report)
    occupancy: dict[str, str] = {}
    if occupancy_dir is not None:
        found = _occupancy_index(Path(occupancy_dir))
        occupancy = {t: str(found[t]) for t in tokens if t in found}
        missing = [t for t in tokens if t not in found]
        if missing:
            notes.append(
                f"{len(missing)} of {len(tokens)} frames have no labels.npz under "
                f"{occupancy_dir} (no occupancy views or statistics for them)"
            )
    else:
        notes.append("no occupancy folder was given (run avfusion occupancy; pass --occupancy)")
    if sync_doc is None:
        notes.append("no sync report was given (run avfusion sync-report --out; pass it)")
    if calib_doc is None:
        notes.append("no calibration check was given (run avfusion calib check --out; pass it)")

    by_token: dict[str, list[Finding]] = {}
    for f in finding_list or []:
        by_token.setdefault(f.sample_token, []).append(f)

    # ---- images (per-frame job; resumable) ----
    job = ReportFramesJob(
        log,
        {t: tuple(by_token.get(t, ())) for t in tokens},
        occupancy,
        tuple(tokens),
        max_width_px,
    )
    img_dir = out / "img"
    summary = run_job(job, img_dir, workers=workers, progress=progress)
    manifest_path = img_dir / MANIFEST_NAME  # absent when no frame has been rendered yet
    done = (
        json.loads(manifest_path.read_text(encoding="utf-8"))["tasks"]
        if manifest_path.is_file()
        else {}
    )
    infos: dict[str, Mapping[str, Any]] = {t: done[t]["info"] for t in tokens if t in done}
    failed = [{"token": t, "reason": summary.failed[t]} for t in tokens if t in summary.failed]
    env = _environment()
    import avfusion

    version = avfusion.__version__
    frame_files = {t: f"{_frame_name(t, index_of[t])}.html" for t in tokens}
    t0 = int(log.sample_time_ns(tokens[0])) if hasattr(log, "sample_time_ns") else 0

    def scene_name(t: str) -> str:
        if hasattr(log, "scene_of"):
            return str(log.scene_of(t).get("name", ""))
        return ""

    frames = []
    for t in tokens:
        info = infos.get(t, {})
        figs = list(info.get("figures", []))
        fs = by_token.get(t, [])
        levels = Counter(f.level for f in fs)
        thumb = info.get("thumb")
        t_ns = int(log.sample_time_ns(t)) if hasattr(log, "sample_time_ns") else 0
        frames.append(
            {
                "token": t,
                "index": index_of[t],
                "file": frame_files[t],
                "label": f"{index_of[t]}: {t}",
                "scene": scene_name(t),
                "t_ns": t_ns,
                "t_rel_s": (t_ns - t0) / 1e9,
                "n_findings": len(fs),
                "level_counts": [levels[lv] for lv in LEVELS],
                "occ": _occ_view(info.get("occupancy")),
                "thumb": thumb,
                "figures": figs,
                "problems": list(info.get("problems", [])),
            }
        )
    labels = {fr["token"]: f"frame {fr['index']}" for fr in frames}

    # ---- findings table (one numbering for the index and the frame pages) ----
    rows = _finding_rows(finding_list or [], frame_files, labels)
    outside = sum(1 for r in rows if r["frame_file"] is None)
    rows_by_token: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        rows_by_token.setdefault(r["sample_token"], []).append(r)

    # ---- frame pages ----
    section_titles = {
        "overview": ("Overview", "montage of every camera and the bird's-eye view", False),
        "cameras": ("Cameras", "LiDAR projected with depth colours; 3D boxes; findings", True),
        "calibration": ("Calibration check", "LiDAR depth edges over image edges", True),
        "occupancy": ("Occupancy", "Occ3D labels.npz of this frame", True),
    }
    calib_by_sd: dict[str, tuple[str, bool]] = {}
    if calib_doc is not None:
        for name, c in calib_doc["sensors"].items():
            for fr_row in c.get("frames", []) or []:
                if isinstance(fr_row, Mapping) and "token" in fr_row:
                    calib_by_sd[str(fr_row["token"])] = (str(name), bool(fr_row.get("flagged")))
    frame_tpl = env.get_template("frame.html")
    for i, fr in enumerate(frames):
        sections = []
        for key, (title, text, grid) in section_titles.items():
            figs = [f for f in fr["figures"] if f["section"] == key]
            if figs:
                sections.append(
                    {"id": key, "title": title, "text": text, "grid": grid, "figures": figs}
                )
        calib_rows = []
        if calib_by_sd:
            for ch, sd in sorted(log.keyframe_data(fr["token"]).items()):
                hit = calib_by_sd.get(sd)
                if hit is not None:
                    calib_rows.append({"sensor": ch, "token": sd, "flagged": hit[1]})
        problems = list(fr["problems"])
        if fr["token"] in summary.failed:
            problems.insert(0, f"this frame could not be rendered: {summary.failed[fr['token']]}")
        if occupancy_dir is not None and fr["token"] not in occupancy:
            problems.append(f"no labels.npz for this frame under {occupancy_dir}")
        frame_rows = rows_by_token.get(fr["token"], [])
        html = frame_tpl.render(
            version=version,
            frame=fr,
            prev=frames[i - 1] if i > 0 else None,
            next=frames[i + 1] if i + 1 < len(frames) else None,
            sections=sections,
            problems=problems,
            calibration=calib_rows,
            findings=frame_rows,
            filters=_filters(frame_rows),
        )
        _write_text(out / "frames" / fr["file"], html)

    # ---- index ----
    sync = None
    if sync_doc is not None:
        sync = _sync_model(sync_doc)
        sync["plot"] = _sync_plot(sync_doc, out, max_width_px, notes)
    occ_frames = [fr for fr in frames if fr["occ"] is not None]
    occupancy_model = None
    if occ_frames:
        total: Counter[str] = Counter()
        for fr in occ_frames:
            for name, n in fr["occ"]["classes"]:
                total[name] += n
        occupied = sum(total.values()) or 1
        top = max(total.values(), default=1) or 1
        occupancy_model = {
            "grid": occ_frames[0]["occ"]["grid"],
            "frames": occ_frames,
            "classes": [
                {
                    "name": name,
                    "voxels": n,
                    "share": n / occupied,
                    "bar_px": max(1, round(200 * n / top)),
                }
                for name, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
        }
    index_html = env.get_template("index.html").render(
        version=version,
        log_name=_log_name(log),
        frames=frames,
        notes=notes,
        failed=failed,
        sync=sync,
        calibration=None if calib_doc is None else _calibration_model(calib_doc),
        findings_summary=None
        if finding_list is None
        else _findings_summary(finding_list, findings_source, findings_doc),
        occupancy=occupancy_model,
        findings=rows,
        filters=_filters(rows),
        outside=outside,
    )
    index = out / "index.html"
    _write_text(index, index_html)
    logger.info("wrote the QA report %s (%d frames, %d findings)", index, len(frames), len(rows))
    return index


def _log_name(log: Any) -> str:
    root = getattr(log, "root", None) or getattr(log, "dataroot", None)
    return str(root) if root is not None else repr(log)


def _sync_plot(
    doc: Mapping[str, Any], out: Path, max_width_px: int, notes: list[str]
) -> dict[str, Any] | None:
    """The sync plot (``plots.render_sync_plot``) as ``img/sync.png``."""
    from avfusion.viz.plots import encode_png, render_sync_plot

    try:
        rgb = _fit_width(render_sync_plot(doc), max_width_px)
    except AVFusionError as exc:
        notes.append(f"sync plot not rendered: {exc}")
        return None
    atomic_write(out / "img" / "sync.png", encode_png(rgb, compression=PNG_COMPRESSION))
    return {
        "file": "img/sync.png",
        "title": "stream timing and matched time differences",
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
    }
