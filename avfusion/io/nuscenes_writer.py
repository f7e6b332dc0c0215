"""Write a nuScenes-style log (v1.0 tables, samples/ and sweeps/, lidarseg) from a recording.

The output loads with the official nuscenes-devkit: the 13 v1.0 tables (``attribute``,
``calibrated_sensor``, ``category``, ``ego_pose``, ``instance``, ``log``, ``map``, ``sample``,
``sample_annotation``, ``sample_data``, ``scene``, ``sensor``, ``visibility``) with the standard
field names and types, timestamps in microseconds, box sizes in nuScenes order (w, l, h),
quaternions (w, x, y, z). Files:

* LiDAR ``.pcd.bin``: N × 5 float32 (x, y, z, intensity 0..255, ring) in the sensor frame;
* radar ``.pcd``: PCD v0.7 binary with the 18 nuScenes radar fields;
* cameras ``.jpg`` (RGB), thermal ``.png`` (16-bit grey, radiometric counts);
* lidarseg: ``<version>/lidarseg.json`` and ``lidarseg/<version>/<sample_data_token>_lidarseg.bin``
  (uint8 per point); ``category.json`` carries the 32 classes with their ``index``.

Documented extensions (nuScenes has no place for them; the devkit ignores them):

* ``<version>/avfusion_sensor.json``: list of ``{calibrated_sensor_token, channel, modality,
  distortion_model, distortion_coeffs, width, height, time_offset_ns, ...}``; ``modality`` is
  ``"thermal"`` for a thermal camera (``sensor.json`` says ``"camera"`` so the devkit can load
  it); ``distortion_coeffs`` are OpenCV's; ``time_offset_ns`` is the offset *as believed by the
  rig* (``t_ego = t_stamp + time_offset_ns``); thermal rows add ``counts_to_kelvin``; LiDAR rows
  add ``per_point_time`` (see below).
* ``<version>/avfusion_box2d.json``: list of ``{token, sample_data_token,
  sample_annotation_token ("" if none), instance_token, category_name, bbox [x0, y0, x1, y1]}``
  in pixels (pixel-edge coordinates; the centre of the top-left pixel is (0, 0)).
* Per-point LiDAR times: ``<file>.pcd.bin.time.bin`` beside each LiDAR file, int32
  nanoseconds relative to the sample_data timestamp, one per point.
* ``truth/``: whatever the producer knows exactly (written through ``write_truth_*``).

Recorded stamps are whatever the caller passes (for the simulator: the sensor's own clock) and
each sample_data row gets its own ``ego_pose`` row (same token) holding the pose the caller
supplies for that stamp.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, LogFormatError

__all__ = ["NUSCENES_ATTRIBUTES", "NUSCENES_TABLES", "NUSCENES_VISIBILITY", "NuScenesWriter"]

logger = logging.getLogger(__name__)

NUSCENES_TABLES: tuple[str, ...] = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
    "sample_annotation", "sample_data", "scene", "sensor", "visibility",
)  # fmt: skip

NUSCENES_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    (
        "vehicle.stopped",
        "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move.",
    ),
    (
        "vehicle.parked",
        "Vehicle is stationary (usually for longer duration) with no immediate intent to move.",
    ),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

NUSCENES_VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)


def _pose_record(tf: Transform) -> dict[str, list[float]]:
    return {
        "translation": [float(v) for v in tf.translation],
        "rotation": [float(v) for v in tf.quaternion],
    }


class NuScenesWriter:
    """Accumulates one log (one scene) and writes it under ``root``.

    Tokens are deterministic (MD5 of ``token_seed`` and the record's key), so the same input
    gives byte-identical tables. Files are written as they come (optionally on a background
    thread), tables on ``close()``.
    """

    def __init__(
        self,
        root: Path,
        *,
        version: str = "v1.0-mini",
        log_name: str = "avfusion-synth",
        location: str = "synthetic",
        vehicle: str = "avfusion-synth",
        date_captured: str = "2023-11-14",
        token_seed: str = "avfusion",
        categories: Sequence[tuple[str, str]] = (),
        background_writes: bool = True,
    ) -> None:
        if not version.startswith("v1.0"):
            raise AVFusionError(f"NuScenesWriter: version must look like 'v1.0-*', got '{version}'")
        self.root = Path(root)
        self.version = version
        self.log_name = log_name
        self._seed = token_seed
        self.tables: dict[str, list[dict[str, Any]]] = {name: [] for name in NUSCENES_TABLES}
        self.lidarseg: list[dict[str, Any]] = []
        self.box2d: list[dict[str, Any]] = []
        self.sensor_ext: list[dict[str, Any]] = []
        self._channel_cs: dict[str, str] = {}
        self._channel_modality: dict[str, str] = {}
        self._category_token: dict[str, str] = {}
        self._attribute_token: dict[str, str] = {}
        self._instances: dict[str, dict[str, Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1) if background_writes else None
        self._pending: list[Future[None]] = []
        self._closed = False
        self.log_token = self.token("log", log_name)
        self.tables["log"].append(
            {
                "token": self.log_token,
                "logfile": log_name,
                "vehicle": vehicle,
                "date_captured": date_captured,
                "location": location,
            }
        )
        for name, desc in NUSCENES_ATTRIBUTES:
            tok = self.token("attribute", name)
            self._attribute_token[name] = tok
            self.tables["attribute"].append({"token": tok, "name": name, "description": desc})
        for tok, level, desc in NUSCENES_VISIBILITY:
            self.tables["visibility"].append({"description": desc, "token": tok, "level": level})
        for index, (name, desc) in enumerate(categories):
            tok = self.token("category", name)
            self._category_token[name] = tok
            self.tables["category"].append(
                {"token": tok, "name": name, "description": desc, "index": index}
            )
        self.scene_token = self.token("scene", log_name)

    # -- helpers -------------------------------------------------------------------------------
    def token(self, *key: object) -> str:
        """Deterministic 32-hex token for a record key."""
        return hashlib.md5("/".join([self._seed, *map(str, key)]).encode()).hexdigest()

    def _write_file(
        self,
        rel: str,
        make: Callable[[], bytes] | None = None,
        write_to: Callable[[Path], object] | None = None,
    ) -> None:
        """Write a file under the root atomically: from ``make()`` bytes, or by ``write_to(path)``."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)

        def job() -> None:
            if write_to is not None:
                write_to(path)
                return
            if make is None:  # pragma: no cover - guarded by the public methods
                raise AVFusionError(f"NuScenesWriter: nothing to write for {rel}")
            data = make()
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

        if self._pool is None:
            job()
        else:
            self._pending.append(self._pool.submit(job))
            if len(self._pending) > 16:
                self._pending.pop(0).result()

    # -- static tables -------------------------------------------------------------------------
    def add_sensor(
        self,
        channel: str,
        modality: str,
        ego_from_sensor: Transform,
        *,
        camera_intrinsic: npt.NDArray[np.float64] | None = None,
        extension: dict[str, Any] | None = None,
    ) -> str:
        """Register a channel; ``modality`` is nuScenes' (lidar, radar, camera) or ``thermal``
        (written as camera in sensor.json and as thermal in avfusion_sensor.json)."""
        if modality not in ("lidar", "radar", "camera", "thermal"):
            raise AVFusionError(
                f"NuScenesWriter.add_sensor '{channel}': unknown modality '{modality}'"
            )
        if channel in self._channel_cs:
            raise AVFusionError(f"NuScenesWriter.add_sensor: channel '{channel}' added twice")
        sensor_token = self.token("sensor", channel)
        cs_token = self.token("calibrated_sensor", channel)
        nus_modality = "camera" if modality == "thermal" else modality
        self.tables["sensor"].append(
            {"token": sensor_token, "channel": channel, "modality": nus_modality}
        )
        rec: dict[str, Any] = {
            "token": cs_token,
            "sensor_token": sensor_token,
            **_pose_record(ego_from_sensor),
        }
        rec["camera_intrinsic"] = (
            [] if camera_intrinsic is None else np.asarray(camera_intrinsic, dtype=float).tolist()
        )
        self.tables["calibrated_sensor"].append(rec)
        self.sensor_ext.append(
            {
                "calibrated_sensor_token": cs_token,
                "channel": channel,
                "modality": modality,
                **(extension or {}),
            }
        )
        self._channel_cs[channel] = cs_token
        self._channel_modality[channel] = nus_modality
        return cs_token

    def add_map(self, png_bytes: bytes, category: str = "semantic_prior") -> str:
        tok = self.token("map", self.log_name)
        rel = f"maps/{tok}.png"
        self._write_file(rel, lambda: png_bytes)
        self.tables["map"].append(
            {"category": category, "token": tok, "filename": rel, "log_tokens": [self.log_token]}
        )
        return tok

    # -- samples and data ----------------------------------------------------------------------
    def add_sample(self, timestamp_us: int) -> str:
        tok = self.token("sample", int(timestamp_us))
        self.tables["sample"].append(
            {
                "token": tok,
                "timestamp": int(timestamp_us),
                "prev": "",
                "next": "",
                "scene_token": self.scene_token,
            }
        )
        return tok

    def add_sample_data(
        self,
        channel: str,
        timestamp_us: int,
        ego_pose: Transform,
        *,
        sample_token: str,
        is_key_frame: bool,
        fileformat: str,
        extension: str,
        make_bytes: Callable[[], bytes] | None = None,
        write_to: Callable[[Path], object] | None = None,
        width: int = 0,
        height: int = 0,
    ) -> tuple[str, str]:
        """Add one sample_data row (and its ego_pose row); returns (token, filename).

        The file's content comes from ``make_bytes()`` or is written by ``write_to(path)``
        (which must write atomically), possibly on the background thread.
        """
        if (make_bytes is None) == (write_to is None):
            raise AVFusionError(
                f"NuScenesWriter.add_sample_data '{channel}': give exactly one of make_bytes and write_to"
            )
        if channel not in self._channel_cs:
            raise AVFusionError(
                f"NuScenesWriter.add_sample_data: unknown channel '{channel}' (add_sensor first)"
            )
        tok = self.token("sample_data", channel, int(timestamp_us))
        folder = "samples" if is_key_frame else "sweeps"
        rel = f"{folder}/{channel}/{self.log_name}__{channel}__{int(timestamp_us)}{extension}"
        self._write_file(rel, make_bytes, write_to)
        self.tables["ego_pose"].append(
            {"token": tok, "timestamp": int(timestamp_us), **_pose_record(ego_pose)}
        )
        self.tables["sample_data"].append(
            {
                "token": tok, "sample_token": sample_token, "ego_pose_token": tok,
                "calibrated_sensor_token": self._channel_cs[channel], "timestamp": int(timestamp_us),
                "fileformat": fileformat, "is_key_frame": bool(is_key_frame), "height": int(height), "width": int(width),
                "filename": rel, "prev": "", "next": "",
            }
        )  # fmt: skip
        return tok, rel

    def add_extra_file(self, rel: str, make_bytes: Callable[[], bytes]) -> None:
        """A file beside the data (e.g. per-point LiDAR times)."""
        self._write_file(rel, make_bytes)

    def add_lidarseg(self, sample_data_token: str, labels: npt.NDArray[np.uint8]) -> None:
        rel = f"lidarseg/{self.version}/{sample_data_token}_lidarseg.bin"
        data = np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
        self._write_file(rel, lambda: data)
        self.lidarseg.append(
            {"token": sample_data_token, "sample_data_token": sample_data_token, "filename": rel}
        )

    # -- annotations ---------------------------------------------------------------------------
    def instance_token(self, track_id: str, category_name: str) -> str:
        """Token of the instance ``track_id`` (created on first use)."""
        if category_name not in self._category_token:
            raise AVFusionError(f"NuScenesWriter: unknown category '{category_name}'")
        tok = self.token("instance", track_id)
        if tok not in self._instances:
            self._instances[tok] = {"token": tok, "category_token": self._category_token[category_name], "nbr_annotations": 0,
                                    "first_annotation_token": "", "last_annotation_token": ""}  # fmt: skip
        return tok

    def add_annotation(
        self,
        sample_token: str,
        instance_token: str,
        *,
        center: Sequence[float],
        size_lwh: Sequence[float],
        rotation_wxyz: Sequence[float],
        num_lidar_pts: int,
        num_radar_pts: int,
        visibility: int,
        attributes: Sequence[str],
        key: str,
    ) -> str:
        """Add a sample_annotation (size given as (l, w, h), written as nuScenes (w, l, h))."""
        for a in attributes:
            if a not in self._attribute_token:
                raise AVFusionError(f"NuScenesWriter.add_annotation: unknown attribute '{a}'")
        tok = self.token("sample_annotation", key)
        length, width, height = (float(v) for v in size_lwh)
        self.tables["sample_annotation"].append(
            {
                "token": tok, "sample_token": sample_token, "instance_token": instance_token,
                "visibility_token": str(int(visibility)), "attribute_tokens": [self._attribute_token[a] for a in attributes],
                "translation": [float(v) for v in center], "size": [width, length, height],
                "rotation": [float(v) for v in rotation_wxyz], "prev": "", "next": "",
                "num_lidar_pts": int(num_lidar_pts), "num_radar_pts": int(num_radar_pts),
            }
        )  # fmt: skip
        return tok

    def set_instance_category(self, instance_token: str, category_name: str) -> None:
        self._instances[instance_token]["category_token"] = self._category_token[category_name]

    def add_box2d(
        self,
        sample_data_token: str,
        annotation_token: str,
        instance_token: str,
        category_name: str,
        bbox: Sequence[float],
        key: str,
    ) -> str:
        tok = self.token("box2d", key)
        self.box2d.append(
            {
                "token": tok, "sample_data_token": sample_data_token, "sample_annotation_token": annotation_token,
                "instance_token": instance_token, "category_name": category_name, "bbox": [float(v) for v in bbox],
            }
        )  # fmt: skip
        return tok

    # -- truth ---------------------------------------------------------------------------------
    def write_truth_json(self, rel: str, obj: Any) -> None:
        data = (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()
        self._write_file(f"truth/{rel}", lambda: data)

    def write_truth_bytes(self, rel: str, make_bytes: Callable[[], bytes]) -> None:
        self._write_file(f"truth/{rel}", make_bytes)

    # -- finish --------------------------------------------------------------------------------
    def _link(
        self,
        rows: list[dict[str, Any]],
        group: Callable[[dict[str, Any]], Any],
        order: Callable[[dict[str, Any]], Any],
    ) -> None:
        groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            groups[group(r)].append(r)
        for members in groups.values():
            members.sort(key=order)
            for a, b in itertools.pairwise(members):
                a["next"] = b["token"]
                b["prev"] = a["token"]

    def close(
        self, scene_name: str = "scene-0001", description: str = "avfusion synthetic scene"
    ) -> None:
        """Link prev/next, fill instance and scene summaries and write every table."""
        if self._closed:
            return
        self._closed = True
        for fut in self._pending:
            fut.result()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        samples = sorted(self.tables["sample"], key=lambda r: r["timestamp"])
        self.tables["sample"] = samples
        if not samples:
            raise LogFormatError(f"NuScenesWriter {self.root}: a scene needs at least one sample")
        self._link(samples, lambda r: 0, lambda r: r["timestamp"])
        sd = self.tables["sample_data"]
        cs_channel = {v: k for k, v in self._channel_cs.items()}
        self._link(sd, lambda r: r["calibrated_sensor_token"], lambda r: r["timestamp"])
        sd.sort(key=lambda r: (cs_channel[r["calibrated_sensor_token"]], r["timestamp"]))
        self.tables["ego_pose"].sort(key=lambda r: (r["timestamp"], r["token"]))
        sample_time = {s["token"]: s["timestamp"] for s in samples}
        anns = self.tables["sample_annotation"]
        self._link(anns, lambda r: r["instance_token"], lambda r: sample_time[r["sample_token"]])
        by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in anns:
            by_instance[a["instance_token"]].append(a)
        instances = []
        for tok, inst in self._instances.items():
            members = sorted(by_instance.get(tok, []), key=lambda r: sample_time[r["sample_token"]])
            if not members:
                continue
            inst["nbr_annotations"] = len(members)
            inst["first_annotation_token"] = members[0]["token"]
            inst["last_annotation_token"] = members[-1]["token"]
            instances.append(inst)
        self.tables["instance"] = instances
        self.tables["scene"] = [
            {
                "token": self.scene_token, "log_token": self.log_token, "nbr_samples": len(samples),
                "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
                "name": scene_name, "description": description,
            }
        ]  # fmt: skip
        table_dir = self.root / self.version
        table_dir.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, Any] = {name: self.tables[name] for name in NUSCENES_TABLES}
        if self.lidarseg:
            outputs["lidarseg"] = self.lidarseg
        outputs["avfusion_sensor"] = self.sensor_ext
        outputs["avfusion_box2d"] = self.box2d
        for name, rows in outputs.items():
            path = table_dir / f"{name}.json"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(rows, indent=0) + "\n")
            os.replace(tmp, path)
        logger.info(
            "wrote nuScenes log %s: %d samples, %d sample_data", self.root, len(samples), len(sd)
        )
