"""Convert a bag (``BagLog``) into a nuScenes-style log written with ``NuScenesWriter``.

``convert_bag(log, out_dir, keyframe_hz=2.0)`` writes **one sample_data row per message** of
every rig sensor (each channel's rows form one ``prev``/``next`` chain in time order, as in
nuScenes) and one **sample per keyframe**:

* keyframes are frames of the bag (reference-sensor messages, see ``BagLog``). With
  ``keyframe_hz`` (default 2 Hz, as nuScenes) they are the frames nearest in time to each tick
  of a regular grid ``t0 + k / keyframe_hz`` (ego clock), where ``t0`` is the first frame with
  an ego pose and the last tick is at or before the last such frame (ties go to the earlier
  frame; a frame nearest to several ticks is one keyframe; see ``select_keyframes``);
  ``keyframe_hz=None`` or ``0`` makes every frame with a pose a keyframe. **Labelled frames are
  always keyframes** (nuScenes annotations live on samples), so the keyframes are the grid
  frames ∪ the labelled frames (``n_label_keyframes`` counts the labelled ones the grid did not
  select);
* sample *i*'s keyframe of a channel is the message bag frame *i* selected (``log.assembly``),
  written with ``is_key_frame`` under ``samples/``. A message is the keyframe of one sample at
  most: when several samples selected it (keyframes closer together than the sensor's period,
  e.g. ``keyframe_hz=0`` with 12 Hz cameras under a 20 Hz LiDAR), the earliest of them gets it,
  except that labelled samples come first (so that 2D boxes stay on the image they were drawn
  on); the others have no keyframe of that channel (the channel is missing in their frame),
  and each such case is counted per channel in ``n_shared_skipped`` and logged. Every other
  message is a sweep (``sweeps/``) attached to the sample nearest in (ego-clock) time;
* timestamps are the header stamps (the sensor's own clock) in microseconds, as in nuScenes
  (two messages of one sensor within the same microsecond cannot be told apart: refused);
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
  ``avfusion_box2d.json`` rows for the 2D boxes of the sample's keyframe images (boxes of an
  image that is another labelled sample's keyframe cannot be written: counted in
  ``skipped_box2d`` and logged).

Messages (or frames) with no ego pose within ``pose.max_extrapolation_ms`` cannot get an
``ego_pose`` row: they are skipped, counted in the summary and logged. A converted sample
reads back (``NuScenesLog``) as the bag's frame, except for the channels in
``n_shared_skipped``.
"""

from __future__ import annotations

import logging
import math
import os
import re
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

__all__ = ["DEFAULT_KEYFRAME_HZ", "ConvertSummary", "convert_bag", "select_keyframes"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[..., object]

#: nuScenes annotates keyframes at 2 Hz.
DEFAULT_KEYFRAME_HZ = 2.0


@dataclass
class ConvertSummary:
    """What ``convert_bag`` wrote and what it had to skip.

    ``sample_frames`` are the bag frame indices of the samples, in sample order (converted sample
    *j* is bag frame ``sample_frames[j]``). ``n_sample_data`` counts rows (= messages written) per
    channel, ``n_keyframes`` the keyframe rows among them. ``n_shared_skipped`` counts, per
    channel, the samples that list the channel as missing because the message their frame
    selected is another sample's keyframe; ``skipped_box2d`` the 2D boxes not written for that
    reason. ``n_label_keyframes`` counts labelled frames made keyframes beyond the grid.
    """

    out: Path
    version: str
    n_samples: int
    keyframe_hz: float | None = DEFAULT_KEYFRAME_HZ
    sample_frames: list[int] = field(default_factory=list)
    n_sample_data: dict[str, int] = field(default_factory=dict)
    n_keyframes: dict[str, int] = field(default_factory=dict)
    n_shared_skipped: dict[str, int] = field(default_factory=dict)
    n_label_keyframes: int = 0
    skipped_frames: int = 0
    skipped_messages: dict[str, int] = field(default_factory=dict)
    n_annotations: int = 0
    n_box2d: int = 0
    skipped_box2d: int = 0

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


def _check_keyframe_hz(keyframe_hz: float | None) -> float | None:
    """``None`` for every frame, else a positive finite rate (``0`` means every frame)."""
    if keyframe_hz is None:
        return None
    hz = float(keyframe_hz)
    if not math.isfinite(hz) or hz < 0:
        raise ConfigError(
            f"convert: keyframe_hz must be a finite rate >= 0 Hz (0 or None: every frame), got {keyframe_hz}"
        )
    return hz if hz > 0 else None


def select_keyframes(t_ns: npt.ArrayLike, keyframe_hz: float | None) -> npt.NDArray[np.int64]:
    """Indices into the sorted times ``t_ns`` (int64 ns) of the keyframes at ``keyframe_hz``.

    The grid is ``t_ns[0] + round(k * 1e9 / keyframe_hz)`` for k = 0, 1, ... up to ``t_ns[-1]``;
    each tick selects the time nearest to it (ties: the earlier one); a time nearest to several
    ticks is selected once. ``None`` or ``0`` selects every index. Sorted, unique.
    """
    t = np.asarray(t_ns, dtype=np.int64)
    hz = _check_keyframe_hz(keyframe_hz)
    if t.ndim != 1 or (t.size > 1 and np.any(np.diff(t) < 0)):
        raise ConfigError("select_keyframes: times must be a sorted 1-D array of int64 ns")
    if hz is None or t.size == 0:
        return np.arange(t.size, dtype=np.int64)
    period_ns = 1e9 / hz
    n_ticks = int((int(t[-1]) - int(t[0])) // period_ns) + 1
    ticks = int(t[0]) + np.rint(np.arange(n_ticks) * period_ns).astype(np.int64)
    ticks = ticks[ticks <= t[-1]]
    right = np.clip(np.searchsorted(t, ticks, side="left"), 0, t.size - 1)
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(t[left] - ticks) <= np.abs(t[right] - ticks), left, right)
    return np.unique(pick).astype(np.int64)


def _message_poses(
    log: BagLog, sensor: str, stamps: npt.NDArray[np.int64]
) -> list[Transform | None]:
    """``world_from_ego`` at every message's ego-clock time (None, logged, where there is none)."""
    offset = int(log.sensors[sensor].time_offset_ns)
    poses: list[Transform | None] = []
    for k, stamp in enumerate(stamps.tolist()):
        try:
            poses.append(log.pose_at(stamp + offset))
        except SyncError as exc:
            logger.warning("convert: %s message %d skipped: %s", sensor, k, exc)
            poses.append(None)
    return poses


def _check_unique_microseconds(
    log: BagLog, sensor: str, stamps: npt.NDArray[np.int64], poses: list[Transform | None]
) -> None:
    """Refuse two written messages of one sensor within one microsecond (same nuScenes time)."""
    written = np.flatnonzero(np.array([p is not None for p in poses], dtype=bool))
    t_us = stamps[written] // 1000
    dup = np.flatnonzero(np.diff(t_us) == 0)
    if dup.size:
        a, b = int(written[dup[0]]), int(written[dup[0] + 1])
        raise LogFormatError(
            f"{log.path}: {sensor} messages {a} and {b} share the microsecond {int(t_us[dup[0]])}; "
            "nuScenes timestamps cannot tell them apart"
        )


def convert_bag(
    log: BagLog,
    out_dir: str | os.PathLike[str],
    *,
    version: str = "v1.0-mini",
    log_name: str | None = None,
    keyframe_hz: float | None = DEFAULT_KEYFRAME_HZ,
    progress: ProgressFn | None = None,
) -> ConvertSummary:
    """Write ``log`` as a nuScenes-style log under ``out_dir`` (which must be empty or absent).

    ``keyframe_hz``: rate of the keyframe grid (``None`` or 0: every frame is a sample);
    labelled frames are keyframes in any case. See the module docstring for the data model.
    """
    hz = _check_keyframe_hz(keyframe_hz)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"convert: output {out} exists and is not an empty directory; choose a new one"
        )
    name = log_name or _log_name(log.path)
    sensors = log.sensors
    assembly = log.assembly
    ref = log.reference_sensor
    labelled = set(log.labelled_frames())
    # -- which frames have a pose ---------------------------------------------------------
    kept: list[int] = []
    for i in range(len(log)):
        try:
            log.pose_at(int(assembly.t_ns[i]))
        except SyncError as exc:
            note = " (a labelled frame: its labels are not converted)" if i in labelled else ""
            logger.warning("convert: frame %d skipped%s: %s", i, note, exc)
            continue
        kept.append(i)
    if not kept:
        raise LogFormatError(
            f"{log.path}: no frame of {ref} has an ego pose; nothing to convert "
            f"(pose track {log.poses.start_ns}..{log.poses.end_ns} ns)"
        )
    stamps = {n: log.header_stamps(n) for n in sensors}
    poses = {n: _message_poses(log, n, stamps[n]) for n in sensors}
    for n in sensors:
        _check_unique_microseconds(log, n, stamps[n], poses[n])
    # -- keyframes: the grid's frames and the labelled frames -----------------------------
    kept_arr = np.asarray(kept, dtype=np.int64)
    grid = {int(i) for i in kept_arr[select_keyframes(assembly.t_ns[kept_arr], hz)]}
    forced = sorted((labelled & set(kept)) - grid)
    sample_frames = sorted(grid | set(forced))
    summary = ConvertSummary(
        out, version, len(sample_frames), hz, sample_frames, n_label_keyframes=len(forced)
    )
    if forced:
        logger.info(
            "convert %s: %d labelled frames off the %s Hz grid made keyframes",
            log.path, len(forced), hz,
        )  # fmt: skip
    # sample i's keyframe of each channel; a message already another sample's keyframe is not
    # repeated: the sample that comes later (labelled samples first, then time order) lists the
    # channel as missing
    keyframe_of: dict[str, dict[int, int]] = {n: {} for n in sensors}  # channel -> message -> frame
    shared: list[tuple[int, str, int]] = []
    for i in sorted(sample_frames, key=lambda f: (f not in labelled, f)):
        for n in sensors:
            k = int(assembly.index[n][i])
            if k < 0:
                continue
            if k in keyframe_of[n]:
                shared.append((i, n, keyframe_of[n][k]))
                summary.n_shared_skipped[n] = summary.n_shared_skipped.get(n, 0) + 1
                continue
            keyframe_of[n][k] = i
    if shared:
        logger.warning(
            "convert %s: %d keyframe selections name a message that is already another sample's "
            "keyframe; those samples list the channel as missing (per channel: %s; first: frame %d "
            "%s = keyframe of frame %d)",
            log.path, len(shared), summary.n_shared_skipped, *shared[0],
        )  # fmt: skip
    labels = {i: log.frame_labels(i) for i in sample_frames}
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
        writer.add_sensor(
            sname, s.modality, s.ego_from_sensor,
            camera_intrinsic=None if s.camera is None else s.camera.K, extension=ext,
        )  # fmt: skip
    # -- samples --------------------------------------------------------------------------
    ref_stamps = stamps[ref]
    sample_token = {i: writer.add_sample(int(ref_stamps[i]) // 1000) for i in sample_frames}
    sample_t = assembly.t_ns[np.asarray(sample_frames, dtype=np.int64)]
    # -- sample_data: one row per message -------------------------------------------------
    keyframe_token: dict[tuple[int, str], str] = {}
    total = sum(int(v.size) for v in stamps.values())
    done = 0
    for sname, k, raw in log.iter_raw():
        s = sensors[sname]
        stamp = int(stamps[sname][k])
        t_ego = stamp + s.time_offset_ns
        done += 1
        if progress is not None:
            progress(done, total, sname)
        pose = poses[sname][k]
        if pose is None:
            summary.skipped_messages[sname] = summary.skipped_messages.get(sname, 0) + 1
            continue
        key_frame = keyframe_of[sname].get(k)
        if key_frame is not None:
            owner = sample_token[key_frame]
        else:
            owner = sample_token[sample_frames[int(np.argmin(np.abs(sample_t - t_ego)))]]
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
        tok, rel = writer.add_sample_data(
            sname, stamp // 1000, pose, sample_token=owner, is_key_frame=key_frame is not None, **kw
        )
        summary.n_sample_data[sname] = summary.n_sample_data.get(sname, 0) + 1
        if times is not None:
            writer.add_extra_file(
                rel + ".time.bin",
                partial(bytes, np.ascontiguousarray(times, dtype=np.int32).tobytes()),
            )
        if key_frame is not None:
            keyframe_token[(key_frame, sname)] = tok
            summary.n_keyframes[sname] = summary.n_keyframes.get(sname, 0) + 1
    # -- labels ---------------------------------------------------------------------------
    for i in sample_frames:
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
                summary.skipped_box2d += len(b2)
                logger.warning(
                    "convert %s: frame %d: %d 2D boxes of %s not written: the image is not this "
                    "sample's keyframe (another labelled sample's, or it has no ego pose)",
                    log.path, i, len(b2), channel,
                )  # fmt: skip
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
