"""Convert a bag (``BagLog``) into a nuScenes-style log written with ``NuScenesWriter``.

``convert_bag(log, out_dir)`` writes one **sample per frame** of the bag (one per
reference-sensor message) and one **sample_data row per message** of every rig sensor:

* a message that frame *i* selected is a keyframe (``is_key_frame``) of sample *i*; a message
  several frames selected (a 12 Hz camera matched by 20 Hz LiDAR frames) gets one keyframe row
  per frame, all pointing at the same file (distinct tokens); a message no frame selected is a
  sweep attached to the sample nearest in time;
* timestamps are the header stamps (the sensor's own clock) in microseconds, as in nuScenes;
  each row's ``ego_pose`` is ``world_from_ego`` at the message's exact ego-clock time (header
  stamp + ``time_offset_ns``), and ``avfusion_sensor.json`` records ``time_offset_ns``, the
  modality (thermal) and the distortion model;
* LiDAR ``.pcd.bin`` (x, y, z, intensity, ring float32; absent fields written as 0) plus
  ``<file>.pcd.bin.time.bin`` (int32 ns relative to the stamp) when the cloud has per-point times;
  radar ``.pcd`` (binary PCD with all of the message's fields); JPEG/PNG CompressedImage bytes
  copied unchanged; raw Image as lossless PNG (16-bit for mono16);
* ``map.json``: one placeholder map (a 1×1 black PNG), because the devkit needs a map record;
* labels (when the bag has them): ``sample_annotation`` rows for the labelled frames (visibility
  from the label when given, else level 4; ``num_radar_pts`` −1 when unknown) and
  ``avfusion_box2d.json`` rows for the 2D boxes of the selected images.

Messages (or frames) with no ego pose within ``pose.max_extrapolation_ms`` cannot get an
``ego_pose`` row: they are skipped, counted in the summary and logged.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import Transform
from avfusion.errors import ConfigError, LogFormatError, SyncError
from avfusion.io.nuscenes_writer import NuScenesWriter
from avfusion.io.pcd import write_pcd
from avfusion.io.rosbag import COMPRESSED_IMAGE, BagLog

__all__ = ["ConvertSummary", "convert_bag"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[..., object]


@dataclass
class ConvertSummary:
    """What ``convert_bag`` wrote and what it had to skip."""

    out: Path
    version: str
    n_samples: int
    n_sample_data: dict[str, int] = field(default_factory=dict)
    n_keyframe_copies: int = 0  # extra keyframe rows for messages shared by several frames
    skipped_frames: int = 0
    skipped_messages: dict[str, int] = field(default_factory=dict)
    n_annotations: int = 0
    n_box2d: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _log_name(path: Path) -> str:
    stem = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "bag"


def _png(pixels: npt.NDArray[Any]) -> bytes:
    import cv2

    img = pixels
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV failure
        raise LogFormatError("PNG encoding failed")
    return bytes(buf)


def _lidar_bytes(xyz: npt.NDArray[Any], attrs: dict[str, npt.NDArray[Any]]) -> bytes:
    n = xyz.shape[0]
    out = np.zeros((n, 5), dtype=np.float32)
    out[:, :3] = xyz
    for col, name in ((3, "intensity"), (4, "ring")):
        values = attrs.get(name)
        if values is not None and values.ndim == 1:
            out[:, col] = values
    return out.tobytes()


def convert_bag(
    log: BagLog,
    out_dir: str | os.PathLike[str],
    *,
    version: str = "v1.0-mini",
    log_name: str | None = None,
    progress: ProgressFn | None = None,
) -> ConvertSummary:
    """Write ``log`` as a nuScenes-style log under ``out_dir`` (which must be empty or absent)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"convert: output {out} exists and is not an empty directory; choose a new one"
        )
    name = log_name or _log_name(log.path)
    sensors = log.sensors
    assembly = log.assembly
    ref = log.reference_sensor
    # -- which frames have a pose ---------------------------------------------------------
    kept: list[int] = []
    for i in range(len(log)):
        try:
            log.pose_at(int(assembly.t_ns[i]))
        except SyncError as exc:
            logger.warning("convert: frame %d skipped: %s", i, exc)
            continue
        kept.append(i)
    if not kept:
        raise LogFormatError(
            f"{log.path}: no frame of {ref} has an ego pose; nothing to convert "
            f"(pose track {log.poses.start_ns}..{log.poses.end_ns} ns)"
        )
    labels = {i: log.frame_labels(i) for i in kept}
    categories = sorted(
        {str(c) for b3, _ in labels.values() if b3 is not None for c in b3.label}
        | {str(c) for _, b2 in labels.values() for b in b2.values() for c in b.label}
    )
    writer = NuScenesWriter(
        out,
        version=version,
        log_name=name,
        vehicle=name,
        location="unknown",
        token_seed=f"avfusion-convert/{name}",
        categories=[(c, c) for c in categories],
    )
    writer.add_map(_png(np.zeros((1, 1), dtype=np.uint8)))  # the devkit needs one map record
    cs_token: dict[str, str] = {}
    for sname, s in sensors.items():
        ext: dict[str, Any] = {
            "time_offset_ns": int(s.time_offset_ns),
            "source": {"bag": str(log.path), "topic": log.rig.sensor(sname).topic, "frame_id": log.frame_id(sname)},
        }  # fmt: skip
        if s.camera is not None:
            ext.update(
                distortion_model=s.camera.distortion, distortion_coeffs=s.camera.coeffs.tolist(),
                width=s.camera.width, height=s.camera.height,
            )  # fmt: skip
        if s.modality == "lidar":
            ext["per_point_time"] = {
                "file_suffix": ".time.bin",
                "dtype": "int32",
                "unit": "ns relative to the sample_data timestamp",
                "written": "only when the bag's clouds carry per-point times",
            }
        cs_token[sname] = writer.add_sensor(
            sname, s.modality, s.ego_from_sensor,
            camera_intrinsic=None if s.camera is None else s.camera.K, extension=ext,
        )  # fmt: skip
    # -- samples --------------------------------------------------------------------------
    ref_stamps = log.header_stamps(ref)
    sample_token: dict[int, str] = {}
    seen_us: dict[int, int] = {}
    for i in kept:
        t_us = int(ref_stamps[i]) // 1000
        if t_us in seen_us:
            raise LogFormatError(
                f"{log.path}: {ref} messages {seen_us[t_us]} and {i} share the microsecond {t_us}; "
                "nuScenes timestamps cannot tell them apart"
            )
        seen_us[t_us] = i
        sample_token[i] = writer.add_sample(t_us)
    kept_t = assembly.t_ns[kept]
    # which frames use each message
    users: dict[str, dict[int, list[int]]] = {n: defaultdict(list) for n in sensors}
    for n in sensors:
        idx = assembly.index[n]
        for i in kept:
            if idx[i] >= 0:
                users[n][int(idx[i])].append(i)
    summary = ConvertSummary(out, version, len(kept))
    keyframe_token: dict[tuple[int, str], str] = {}
    written_tokens: set[str] = set()
    stamps = {n: log.header_stamps(n) for n in sensors}
    total = sum(int(v.size) for v in stamps.values())
    done = 0
    for sname, k, raw in log.iter_raw():
        s = sensors[sname]
        stamp = int(stamps[sname][k])
        t_ego = stamp + s.time_offset_ns
        done += 1
        if progress is not None:
            progress(done, total, sname)
        try:
            pose = log.pose_at(t_ego)
        except SyncError as exc:
            summary.skipped_messages[sname] = summary.skipped_messages.get(sname, 0) + 1
            logger.warning("convert: %s message %d skipped: %s", sname, k, exc)
            continue
        frames = users[sname].get(k, [])
        t_us = stamp // 1000
        if frames:
            first_sample = sample_token[frames[0]]
        else:
            first_sample = sample_token[kept[int(np.argmin(np.abs(kept_t - t_ego)))]]
        kw: dict[str, Any]
        if s.modality == "lidar":
            cloud = log.point_cloud(sname, k, raw, with_pose=False)
            data = _lidar_bytes(cloud.xyz, dict(cloud.attrs))
            kw = {"fileformat": "pcd", "extension": ".pcd.bin", "make_bytes": lambda d=data: d}
            times = cloud.attrs.get("point_time_ns")
        elif s.modality == "radar":
            cloud = log.point_cloud(sname, k, raw, with_pose=False)
            cols: dict[str, npt.NDArray[Any]] = {
                "x": cloud.xyz[:, 0],
                "y": cloud.xyz[:, 1],
                "z": cloud.xyz[:, 2],
            }
            cols.update({a: v for a, v in cloud.attrs.items() if a != "point_time_ns"})
            kw = {
                "fileformat": "pcd",
                "extension": ".pcd",
                "write_to": lambda p, c=cols: write_pcd(p, c, encoding="binary"),
            }
            times = None
        else:
            cam = s.camera
            if cam is None:  # pragma: no cover - Sensor guarantees a camera model
                raise ConfigError(f"convert: camera sensor '{sname}' has no camera model")
            msg = log.deserialize(sname, raw)
            fmt = str(getattr(msg, "format", "")).lower()
            payload = (
                bytes(np.asarray(msg.data, dtype=np.uint8).tobytes())
                if log.message_type(sname) == COMPRESSED_IMAGE
                else b""
            )
            if payload[:3] == b"\xff\xd8\xff" and "compresseddepth" not in fmt:
                kw = {"fileformat": "jpg", "extension": ".jpg", "make_bytes": lambda d=payload: d}
            elif payload[:8] == b"\x89PNG\r\n\x1a\n" and "compresseddepth" not in fmt:
                kw = {"fileformat": "png", "extension": ".png", "make_bytes": lambda d=payload: d}
            else:
                png = _png(log.decode_pixels(sname, k, raw))
                kw = {"fileformat": "png", "extension": ".png", "make_bytes": lambda d=png: d}
            kw.update(width=cam.width, height=cam.height)
            times = None
        tok = writer.token("sample_data", sname, t_us)
        if tok in written_tokens:
            raise LogFormatError(
                f"{log.path}: two {sname} messages share the microsecond {t_us}; nuScenes timestamps "
                "cannot tell them apart"
            )
        tok, rel = writer.add_sample_data(
            sname, t_us, pose, sample_token=first_sample, is_key_frame=bool(frames), **kw
        )
        written_tokens.add(tok)
        summary.n_sample_data[sname] = summary.n_sample_data.get(sname, 0) + 1
        if times is not None:
            writer.add_extra_file(
                rel + ".time.bin",
                partial(bytes, np.ascontiguousarray(times, dtype=np.int32).tobytes()),
            )
        if frames:
            keyframe_token[(frames[0], sname)] = tok
        for i in frames[1:]:
            copy = writer.token("sample_data", sname, t_us, "keyframe-of", sample_token[i])
            _add_keyframe_copy(writer, copy, tok, rel, sample_token[i], cs_token[sname], t_us, pose)
            keyframe_token[(i, sname)] = copy
            summary.n_keyframe_copies += 1
    # -- labels ---------------------------------------------------------------------------
    for i in kept:
        boxes3d, boxes2d = labels[i]
        if boxes3d is None:
            continue
        ann_of_instance: dict[str, str] = {}
        vis = boxes3d.attrs.get("visibility")
        n_lidar = boxes3d.attrs.get("num_lidar_pts")
        n_radar = boxes3d.attrs.get("num_radar_pts")
        for b in range(len(boxes3d)):
            inst = writer.instance_token(str(boxes3d.track_id[b]), str(boxes3d.label[b]))
            ann = writer.add_annotation(
                sample_token[i], inst, center=boxes3d.center[b].tolist(), size_lwh=boxes3d.size[b].tolist(),
                rotation_wxyz=boxes3d.rotation[b].tolist(),
                num_lidar_pts=int(n_lidar[b]) if n_lidar is not None else -1,
                num_radar_pts=int(n_radar[b]) if n_radar is not None else -1,
                visibility=int(vis[b]) if vis is not None else 4, attributes=[], key=f"{i}/{b}",
            )  # fmt: skip
            ann_of_instance[str(boxes3d.track_id[b])] = ann
            summary.n_annotations += 1
        for channel, b2 in sorted(boxes2d.items()):
            sd_tok = keyframe_token.get((i, channel))
            if sd_tok is None:
                continue
            for j in range(len(b2)):
                track = str(b2.track_id[j])
                inst = writer.instance_token(track, str(b2.label[j]))
                writer.add_box2d(
                    sd_tok, ann_of_instance.get(track, ""), inst, str(b2.label[j]),
                    b2.xyxy[j].tolist(), f"{i}/{channel}/{j}",
                )  # fmt: skip
                summary.n_box2d += 1
    summary.skipped_frames = len(log) - len(kept)
    writer.close(scene_name=f"scene-{name}", description=f"converted from {log.path}")
    if summary.skipped_frames or summary.skipped_messages:
        logger.warning(
            "convert %s: skipped %d frames and %s messages without an ego pose",
            log.path, summary.skipped_frames, summary.skipped_messages or 0,
        )  # fmt: skip
    logger.info("convert %s -> %s: %s", log.path, out, summary.as_dict())
    return summary


def _add_keyframe_copy(
    writer: NuScenesWriter,
    token: str,
    original: str,
    rel: str,
    sample_token: str,
    cs_token: str,
    t_us: int,
    pose: Transform,
) -> None:
    """One more keyframe row for a message already written (same file, its own token)."""
    row = next(r for r in reversed(writer.tables["sample_data"]) if r["token"] == original)
    writer.tables["ego_pose"].append(
        {
            "token": token,
            "timestamp": int(t_us),
            "translation": [float(v) for v in pose.translation],
            "rotation": [float(v) for v in pose.quaternion],
        }
    )
    copy = dict(row)
    copy.update(
        token=token, sample_token=sample_token, ego_pose_token=token, is_key_frame=True,
        calibrated_sensor_token=cs_token, filename=rel, prev="", next="",
    )  # fmt: skip
    writer.tables["sample_data"].append(copy)
