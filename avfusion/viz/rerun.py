"""A log as a rerun recording (``.rrd``) for interactive 3D review.

``export_rerun(log, path, ...)`` writes one recording with a ``time`` timeline (the capture
times, int ns since the epoch) and these entities::

    world                          right-handed, z up
    world/ego                      world_from_ego, logged at every observation's capture time,
                                   so each sensor's data sits at the pose it was captured at
    world/ego/<SENSOR>             ego_from_sensor (static), one per sensor of the rig
    world/ego/<CAMERA>/image       pinhole (K, resolution; static) and the keyframe image
                                   (JPEG-compressed; a thermal image is stretched to 8 bits)
    world/ego/<CAMERA>/image/boxes2d   the image's 2D boxes with their class
    world/ego/<LIDAR>/points       the keyframe sweep in the sensor frame, coloured by height
    world/ego/<RADAR>/points       radar returns
    world/boxes                    the sample's 3D boxes (world frame) labelled with their class
                                   and, when a finding names the box, the finding kinds
    world/ego/occupancy            occupied voxels (Occ3D labels.npz) as boxes, class-coloured
                                   through an annotation context (class names on hover)
    findings                       one text entry per finding at its sample time

rerun is an optional dependency (``pip install 'avfusion[viz]'``); it is imported here only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError, ConfigError
from avfusion.fusion.aggregate import OCC3D_CLASSES
from avfusion.fusion.consistency.findings import Finding

__all__ = ["OCC3D_RANGE_M", "export_rerun", "rerun_entity_paths"]

logger = logging.getLogger(__name__)

#: Occ3D-nuScenes grid range (x, y, z min, then max; metres, ego frame) the voxels are placed on.
OCC3D_RANGE_M = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)
_FREE = len(OCC3D_CLASSES) - 1
_TIMELINE = "time"

ProgressFn = Callable[..., object]


def _rr() -> Any:
    try:
        import rerun
    except ImportError as exc:  # pragma: no cover - rerun-sdk is installed with [viz]
        raise ConfigError("rerun export needs rerun-sdk: pip install 'avfusion[viz]'") from exc
    return rerun


def _transform(rr: Any, t: Any) -> Any:
    return rr.Transform3D(
        translation=np.asarray(t.translation, dtype=np.float64),
        mat3x3=np.asarray(t.rotation, dtype=np.float64),
    )


def _to_uint8_image(pixels: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Colour images as they are; anything else (16-bit thermal) stretched to 8-bit grey."""
    px = np.asarray(pixels)
    if px.dtype == np.uint8:
        return px
    finite = px[np.isfinite(px)] if px.dtype.kind == "f" else px.ravel()
    if finite.size == 0:
        return np.zeros(px.shape[:2], np.uint8)
    lo, hi = np.percentile(finite, [1.0, 99.0])
    scaled = (px.astype(np.float64) - lo) / max(float(hi - lo), 1e-9)
    return (np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _time(rec: Any, t_ns: int) -> None:
    rec.set_time(_TIMELINE, timestamp=np.datetime64(int(t_ns), "ns"))


def _voxel_centres(shape: tuple[int, ...], idx: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
    lo = np.asarray(OCC3D_RANGE_M[:3])
    size = (np.asarray(OCC3D_RANGE_M[3:]) - lo) / np.asarray(shape, dtype=np.float64)
    return (lo + (idx + 0.5) * size).astype(np.float32)


def export_rerun(
    log: Any,
    path: str | os.PathLike[str],
    *,
    sample_tokens: Sequence[str] | None = None,
    occupancy_dir: str | os.PathLike[str] | None = None,
    findings: str | os.PathLike[str] | Mapping[str, Any] | Iterable[Any] | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Write ``log`` (its keyframes, or ``sample_tokens``) as a rerun recording to ``path``
    (``.rrd``, written atomically) and return the path. See the module docstring for the
    entities. ``occupancy_dir``: an occupancy job's output (``labels.npz`` per sample);
    ``findings``: ``findings.json`` or rows (see ``avfusion.viz.report.load_findings``).
    ``progress(done, total, sample_token)`` is called after each keyframe."""
    from avfusion.viz.colors import OCC3D_COLORS, RADAR_COLOR, category_colors, height_colors
    from avfusion.viz.report import _occupancy_index, _read_labels, load_findings

    out = Path(path)
    if out.suffix != ".rrd":
        raise ConfigError(f"rerun recording {out}: the file name must end in .rrd")
    if not hasattr(log, "sample_tokens") or not hasattr(log, "frame"):
        raise AVFusionError(
            f"rerun export needs a nuScenes-style log with samples, got {type(log).__name__} "
            "(convert a bag first: avfusion convert)"
        )
    all_tokens = list(log.sample_tokens)
    tokens = all_tokens if sample_tokens is None else list(dict.fromkeys(sample_tokens))
    unknown = [t for t in tokens if t not in set(all_tokens)]
    if unknown:
        raise AVFusionError(f"sample tokens not in {log!r}: {', '.join(unknown[:5])}")
    finding_list: list[Finding] = [] if findings is None else load_findings(findings)
    labels_of = {} if occupancy_dir is None else _occupancy_index(Path(occupancy_dir))
    by_sample: dict[str, list[Finding]] = {}
    for f in finding_list:
        by_sample.setdefault(f.sample_token, []).append(f)

    rr = _rr()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    rec_id = uuid.UUID(hashlib.sha256(repr(log).encode()).hexdigest()[:32])
    rec = rr.RecordingStream("avfusion", recording_id=rec_id)
    try:
        rec.save(str(tmp))
        rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        for name, sensor in sorted(log.sensors.items()):
            rec.log(f"world/ego/{name}", _transform(rr, sensor.ego_from_sensor), static=True)
            cam = sensor.camera
            if cam is not None:
                rec.log(
                    f"world/ego/{name}/image",
                    rr.Pinhole(
                        image_from_camera=np.asarray(cam.K, dtype=np.float64),
                        resolution=[cam.width, cam.height],
                        camera_xyz=rr.ViewCoordinates.RDF,
                        image_plane_distance=2.0,
                    ),
                    static=True,
                )
        if labels_of:
            rec.log(
                "world/ego/occupancy",
                rr.AnnotationContext(
                    [
                        (c, OCC3D_CLASSES[c], tuple(int(v) for v in OCC3D_COLORS[c]))
                        for c in range(_FREE)
                    ]
                ),
                static=True,
            )
        for done, token in enumerate(tokens, start=1):
            frame = log.frame(token)
            _log_frame(rr, rec, frame, by_sample.get(token, []), height_colors, RADAR_COLOR,
                       category_colors)  # fmt: skip
            labels_path = labels_of.get(token)
            if labels_path is not None:
                sem = _read_labels(labels_path)["semantics"]
                idx = np.argwhere(sem != _FREE)
                classes = sem[tuple(idx.T)].astype(np.uint16)
                centres = _voxel_centres(sem.shape, idx)
                half = (np.asarray(OCC3D_RANGE_M[3:]) - np.asarray(OCC3D_RANGE_M[:3])) / (
                    2.0 * np.asarray(sem.shape, dtype=np.float64)
                )
                _time(rec, frame.t_ns)
                if frame.world_from_ego is not None:
                    rec.log("world/ego", _transform(rr, frame.world_from_ego))
                rec.log(
                    "world/ego/occupancy",
                    rr.Boxes3D(
                        centers=centres,
                        half_sizes=np.broadcast_to(half.astype(np.float32), centres.shape),
                        class_ids=classes,
                        fill_mode="solid",
                    ),
                )
            if progress is not None:
                progress(done, len(tokens), token)
        rec.flush()
    except BaseException:
        rec.disconnect()
        tmp.unlink(missing_ok=True)
        raise
    rec.disconnect()
    os.replace(tmp, out)
    logger.info("wrote rerun recording %s (%d keyframes)", out, len(tokens))
    return out


def _log_frame(
    rr: Any,
    rec: Any,
    frame: Any,
    findings: Sequence[Finding],
    height_colors: Callable[..., npt.NDArray[np.uint8]],
    radar_color: tuple[int, int, int],
    category_colors: Callable[..., npt.NDArray[np.uint8]],
) -> None:
    """One keyframe: ego pose at every capture time, points, images, 2D and 3D boxes, findings."""

    def pose(t_ns: int, world_from_ego: Any) -> None:
        _time(rec, t_ns)
        if world_from_ego is not None:
            rec.log("world/ego", _transform(rr, world_from_ego))

    for name, cloud in sorted(frame.points.items()):
        pose(cloud.t_ns, cloud.world_from_ego)
        xyz = np.asarray(cloud.xyz, dtype=np.float32)
        if cloud.sensor.modality == "radar":
            colors = np.tile(np.asarray(radar_color, np.uint8), (len(xyz), 1))
            radii = 0.25
        else:
            z_ego = cloud.sensor.ego_from_sensor.apply(xyz)[:, 2] if len(xyz) else xyz[:, 2]
            colors = height_colors(z_ego)
            radii = 0.03
        rec.log(f"world/ego/{name}/points", rr.Points3D(xyz, colors=colors, radii=radii))
    for name, image in sorted(frame.images.items()):
        pose(image.t_ns, image.world_from_ego)
        px = _to_uint8_image(image.pixels)
        rec.log(f"world/ego/{name}/image", rr.Image(px).compress(jpeg_quality=80))
        b2d = frame.boxes2d.get(name)
        if b2d is not None and len(b2d):
            rec.log(
                f"world/ego/{name}/image/boxes2d",
                rr.Boxes2D(
                    array=np.asarray(b2d.xyxy, dtype=np.float32),
                    array_format=rr.Box2DFormat.XYXY,
                    labels=[str(v) for v in b2d.label],
                    colors=category_colors(b2d.label),
                ),
            )
    _time(rec, frame.t_ns)
    if frame.world_from_ego is not None:
        rec.log("world/ego", _transform(rr, frame.world_from_ego))
    boxes = frame.boxes3d
    if boxes is not None and len(boxes):
        kinds: dict[str, list[str]] = {}
        for f in findings:
            if f.annotation_token:
                kinds.setdefault(f.annotation_token, []).append(f.kind)
        tokens = [str(t) for t in boxes.token] if boxes.token is not None else [""] * len(boxes)
        labels = [
            str(lab) + (f" [{', '.join(sorted(set(kinds[t])))}]" if t in kinds else "")
            for lab, t in zip(boxes.label, tokens, strict=True)
        ]
        rec.log(
            "world/boxes",
            rr.Boxes3D(
                centers=np.asarray(boxes.center, dtype=np.float32),
                sizes=np.asarray(boxes.size, dtype=np.float32),
                quaternions=np.asarray(boxes.rotation, dtype=np.float64)[:, [1, 2, 3, 0]],
                labels=labels,
                colors=category_colors(boxes.label),
            ),
        )
    for f in findings:
        level = {"high": "ERROR", "medium": "WARN"}.get(f.level, "INFO")
        rec.log(
            "findings",
            rr.TextLog(
                f"[{f.kind}] {f.sensor} {f.category}: {f.message} (severity {f.severity:.2f})",
                level=level,
            ),
        )


def rerun_entity_paths(path: str | os.PathLike[str]) -> list[str]:
    """The entity paths recorded in an ``.rrd`` file, sorted (for checks and tests)."""
    rr = _rr()
    p = Path(path)
    if not p.is_file():
        raise AVFusionError(f"rerun recording {p} does not exist")
    try:
        reader = rr.chunk.RrdReader(p)
        return sorted({str(c.entity_path) for c in reader.stream()})
    except (ValueError, OSError, RuntimeError) as exc:
        raise AVFusionError(f"rerun recording {p}: cannot read it ({exc})") from exc
