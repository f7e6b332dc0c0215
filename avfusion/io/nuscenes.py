"""nuScenes-style logs: the 13 relational tables, LiDAR/radar/camera blobs, boxes and sweeps.

Layout: a data root holding a table folder ``v1.0-*`` (any name starting ``v1.0``, e.g.
``v1.0-mini``, ``v1.01-train``) with ``sample.json``, ``sample_data.json`` ... and the blobs
(``samples/``, ``sweeps/``) whose paths the ``filename`` columns give relative to the root.

What the reader does at the boundary (and only here):

* times: nuScenes microseconds (int, or float in some derived datasets) → int64 nanoseconds;
* box size: nuScenes (w, l, h) → our (l, w, h); boxes stay in the **world** frame;
* images: decoded lazily (``Image(loader=...)``) with OpenCV, colour as RGB, 16-bit PNG kept
  as uint16;
* paths: every filename read from a table must stay inside the data root.

One ``Frame`` per keyframe (sample), in time order, optionally restricted to one scene. The
frame's ``world_from_ego`` and ``t_ns`` are those of the reference sensor (LIDAR_TOP by
default); every observation keeps its own time and its own ego pose.

Documented extensions (read when present in the table folder, ignored when absent):

* ``avfusion_sensor.json``: list of ``{calibrated_sensor_token, channel, modality ("thermal"
  overrides sensor.json's "camera"), distortion_model ("none" | "radtan" | "fisheye"),
  distortion_coeffs (OpenCV order), width, height, time_offset_ns, counts_to_kelvin {...}}``.
  ``time_offset_ns`` goes to ``Sensor.time_offset_ns``; observation times are the
  sample_data timestamps as stored. ``counts_to_kelvin`` is exposed in
  ``NuScenesLog.sensor_extras[channel]``.
* ``avfusion_box2d.json``: list of ``{token, sample_data_token, sample_annotation_token,
  instance_token, category_name, bbox [x0, y0, x1, y1]}`` → ``frame.boxes2d[channel]``.
* ``lidarseg.json`` (nuScenes-lidarseg): rows ``{token, sample_data_token, filename}`` → one
  uint8 label per LiDAR point, ``attrs["lidarseg"]`` of the keyframe cloud.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.errors import AVFusionError, CalibrationError, LogFormatError
from avfusion.io.pcd import read_pcd
from avfusion.types import Boxes2D, Boxes3D, Frame, Image, Log, PointCloud, Sensor

__all__ = [
    "NUSCENES_TABLES",
    "NuScenesLog",
    "find_nuscenes_tables",
    "open_nuscenes",
    "read_lidar_bin",
]

logger = logging.getLogger(__name__)

NUSCENES_TABLES: tuple[str, ...] = (
    "attribute",
    "calibrated_sensor",
    "category",
    "ego_pose",
    "instance",
    "log",
    "map",
    "sample",
    "sample_annotation",
    "sample_data",
    "scene",
    "sensor",
    "visibility",
)
_LIDAR_DIMS = 5  # x, y, z, intensity, ring
_MAX_VELOCITY_TIME_DIFF_S = 1.5

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def find_nuscenes_tables(
    path: str | os.PathLike[str], version: str | None = None
) -> tuple[Path, Path]:
    """(data root, table folder) for a nuScenes root or a table folder itself.

    Raises ``LogFormatError`` when ``path`` holds no table folder, or several and no
    ``version`` picks one.
    """
    p = Path(path)
    if not p.is_dir():
        raise LogFormatError(f"{p}: not a directory (expected a nuScenes data root)")
    if (p / "sample_data.json").is_file() and version in (None, p.name):
        return p.parent, p
    if version is not None:
        table_dir = p / version
        if not (table_dir / "sample_data.json").is_file():
            raise LogFormatError(f"{p}: no table folder '{version}' with sample_data.json")
        return p, table_dir
    candidates = sorted(d for d in p.glob("v1.0*") if (d / "sample_data.json").is_file())
    if not candidates:
        raise LogFormatError(
            f"{p}: no nuScenes table folder (a 'v1.0*' folder holding sample_data.json)"
        )
    if len(candidates) > 1:
        names = ", ".join(d.name for d in candidates)
        raise LogFormatError(f"{p}: several table folders ({names}); pass version= to choose one")
    return p, candidates[0]


def _us_to_ns(value: Any, where: str) -> int:
    """nuScenes microseconds (int, or float in some derived sets) → int nanoseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LogFormatError(f"{where}: timestamp must be a number of microseconds, got {value!r}")
    if isinstance(value, int):
        return value * 1000
    if not np.isfinite(value):
        raise LogFormatError(f"{where}: timestamp is not finite ({value})")
    return round(value * 1000.0)


def _vec(row: Row, key: str, n: int, where: str) -> npt.NDArray[np.float64]:
    try:
        v = np.asarray(row[key], dtype=np.float64)
    except KeyError as exc:
        raise LogFormatError(f"{where}: missing field '{key}'") from exc
    except (TypeError, ValueError) as exc:
        raise LogFormatError(
            f"{where}: field '{key}' is not a list of numbers: {row[key]!r}"
        ) from exc
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise LogFormatError(f"{where}: field '{key}' must be {n} finite numbers, got {row[key]!r}")
    return v


def _pose(row: Row, where: str) -> Transform:
    """A ``translation`` + ``rotation`` (w, x, y, z) row as a Transform (parent_from_child)."""
    q = _vec(row, "rotation", 4, where)
    t = _vec(row, "translation", 3, where)
    try:
        return Transform.from_quaternion(q, t)
    except CalibrationError as exc:
        raise LogFormatError(f"{where}: bad rotation {q.tolist()}: {exc}") from exc


def read_lidar_bin(
    path: str | os.PathLike[str],
    sensor: Sensor,
    t_ns: int,
    dims: int = _LIDAR_DIMS,
    token: str = "",
) -> PointCloud:
    """A nuScenes/Lyft ``.pcd.bin``/``.bin``: float32 N×dims ``[x, y, z, intensity, ring]``.

    ``xyz`` is a contiguous float32 copy; ``intensity`` and ``ring`` (float32, as stored) are
    views of the file's buffer. A size that is not a multiple of ``dims`` × 4 bytes raises
    ``LogFormatError`` (truncated file).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise LogFormatError(f"{p}: cannot read LiDAR file: {exc.strerror or exc}") from exc
    step = 4 * dims
    if size % step:
        raise LogFormatError(
            f"{p}: LiDAR file of {size} bytes is not a whole number of {dims}-float32 points "
            f"({step} bytes each): truncated or not a .pcd.bin"
        )
    data = np.fromfile(p, dtype="<f4").reshape(-1, dims)
    xyz = np.ascontiguousarray(data[:, :3])
    attrs: dict[str, npt.NDArray[Any]] = {}
    if dims > 3:
        attrs["intensity"] = data[:, 3]
    if dims > 4:
        attrs["ring"] = data[:, 4]
    return PointCloud(xyz, sensor, t_ns, attrs, token=token)


def _decode_image(path: Path) -> npt.NDArray[Any]:
    import cv2

    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if img is None:
        raise LogFormatError(f"{path}: not a decodable image (corrupt or truncated)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return img


# --------------------------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------------------------


class NuScenesLog(Log):
    """A nuScenes-style dataset (or one of its scenes) as a ``Log`` of keyframes.

    ``path`` is the data root (or the table folder itself); ``version`` picks the table folder
    when there are several. ``scene`` (name or token) restricts frames, timestamps and poses
    to one scene. ``ref_sensor`` sets each frame's time and pose (falls back to the sample's
    timestamp when a sample has no such channel).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        version: str | None = None,
        *,
        scene: str | None = None,
        ref_sensor: str = "LIDAR_TOP",
    ) -> None:
        self.root, self.table_dir = find_nuscenes_tables(path, version)
        self.version = self.table_dir.name
        self.ref_sensor = ref_sensor
        self._root_resolved = self.root.resolve()
        self._tables: dict[str, list[Row]] = {}
        self._index: dict[str, dict[str, Row]] = {}
        self._sensor_cache: dict[str, Sensor] = {}
        self._ext_cache: dict[str, Any] = {}
        # Eager: what every request needs (small tables, plus sample_data's channel index).
        scene_rows = self.table("scene")
        self._scene_token: str | None = None
        if scene is not None:
            match = [r for r in scene_rows if r.get("token") == scene or r.get("name") == scene]
            if not match:
                raise LogFormatError(
                    f"{self.table_dir / 'scene.json'}: no scene named or with token '{scene}'"
                )
            self._scene_token = str(match[0]["token"])
        samples = [
            r
            for r in self.table("sample")
            if self._scene_token is None or r.get("scene_token") == self._scene_token
        ]
        for r in samples:
            r["_t_ns"] = _us_to_ns(r.get("timestamp"), f"sample {r['token']}")
        samples.sort(key=lambda r: r["_t_ns"])
        self._samples = samples
        self._sample_pos = {r["token"]: i for i, r in enumerate(samples)}
        # channel of every sample_data row, keyframe lookup, per-channel streams.
        self._channel_of_cs: dict[str, str] = {}
        for cs in self.table("calibrated_sensor"):
            sensor_row = self.get(
                "sensor", cs.get("sensor_token", ""), f"calibrated_sensor {cs['token']}"
            )
            self._channel_of_cs[cs["token"]] = str(sensor_row.get("channel"))
        self._keyframe_data: dict[str, dict[str, str]] = defaultdict(dict)
        self._stream: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self._size_of_cs: dict[str, tuple[int, int]] = {}
        selected = self._sample_pos if self._scene_token is not None else None
        for sd in self.table("sample_data"):
            where = f"sample_data {sd['token']}"
            cs_token = sd.get("calibrated_sensor_token", "")
            if cs_token not in self._channel_of_cs:
                raise LogFormatError(
                    f"{self.table_dir / 'sample_data.json'}: {where} names calibrated_sensor '{cs_token}', which does not exist"
                )
            if selected is not None and sd.get("sample_token") not in selected:
                continue
            channel = self._channel_of_cs[cs_token]
            sd["_t_ns"] = _us_to_ns(sd.get("timestamp"), where)
            self._stream[channel].append((sd["_t_ns"], sd["token"]))
            if sd.get("is_key_frame"):
                self._keyframe_data[sd.get("sample_token", "")][channel] = sd["token"]
            if cs_token not in self._size_of_cs and sd.get("width") and sd.get("height"):
                self._size_of_cs[cs_token] = (int(sd["width"]), int(sd["height"]))
        for stream in self._stream.values():
            stream.sort()
        self._sensors = self._log_sensors()
        self._poses: Trajectory | None = None
        logger.debug(
            "%s: %d keyframes, %d channels", self.table_dir, len(self._samples), len(self._sensors)
        )

    def __repr__(self) -> str:
        scene = f", scene={self._scene_token}" if self._scene_token else ""
        return f"NuScenesLog({self.table_dir}, {len(self)} keyframes, sensors={sorted(self._sensors)}{scene})"

    # -- tables ------------------------------------------------------------------------------
    def table(self, name: str) -> list[Row]:
        """All rows of one table, loaded (and indexed by token) on first use."""
        rows = self._tables.get(name)
        if rows is None:
            rows = self._load_table(name)
            self._tables[name] = rows
        return rows

    def _load_table(self, name: str, optional: bool = False) -> list[Row]:
        path = self.table_dir / f"{name}.json"
        if not path.is_file():
            if optional:
                return []
            raise LogFormatError(f"{path}: missing table '{name}'")
        try:
            with path.open("rb") as f:
                rows = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LogFormatError(f"{path}: malformed JSON: {exc}") from exc
        except OSError as exc:
            raise LogFormatError(f"{path}: cannot read table: {exc.strerror or exc}") from exc
        if not isinstance(rows, list):
            raise LogFormatError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
        index: dict[str, Row] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise LogFormatError(f"{path}: row {i} is not an object")
            token = row.get("token")
            if isinstance(token, str):
                index[token] = row
            elif not optional:  # the standard tables all key on 'token'; extensions may not
                raise LogFormatError(f"{path}: row {i} is not an object with a string 'token'")
        self._index[name] = index
        return rows

    def get(self, table: str, token: str, referrer: str = "") -> Row:
        """The row of ``table`` with ``token``; a missing token raises ``LogFormatError``."""
        self.table(table)
        row = self._index[table].get(token)
        if row is None:
            by = f" (referenced by {referrer})" if referrer else ""
            raise LogFormatError(
                f"{self.table_dir / (table + '.json')}: no row with token '{token}'{by}"
            )
        return row

    def _extension(self, name: str) -> list[Row]:
        if name not in self._ext_cache:
            self._ext_cache[name] = self._load_table(name, optional=True)
        rows: list[Row] = self._ext_cache[name]
        return rows

    # -- paths -------------------------------------------------------------------------------
    def blob_path(self, filename: Any, referrer: str) -> Path:
        """A table's ``filename`` as a path inside the data root (else ``LogFormatError``)."""
        if not isinstance(filename, str) or not filename:
            raise LogFormatError(f"{self.table_dir}: {referrer} has no filename")
        candidate = (self.root / filename).resolve()
        if Path(filename).is_absolute() or not candidate.is_relative_to(self._root_resolved):
            raise LogFormatError(
                f"{self.table_dir}: {referrer} filename '{filename}' escapes the data root {self.root}"
            )
        return candidate

    # -- sensors -----------------------------------------------------------------------------
    def _sensor_ext(self) -> dict[str, Row]:
        key = "_sensor_ext_by_cs"
        if key not in self._ext_cache:
            self._ext_cache[key] = {
                str(r.get("calibrated_sensor_token", "")): r
                for r in self._extension("avfusion_sensor")
            }
        out: dict[str, Row] = self._ext_cache[key]
        return out

    @property
    def sensor_extras(self) -> Mapping[str, Row]:
        """Channel → the ``avfusion_sensor.json`` row (e.g. ``counts_to_kelvin``), when present."""
        return {str(r.get("channel")): r for r in self._sensor_ext().values()}

    def sensor_for(self, calibrated_sensor_token: str) -> Sensor:
        """The ``Sensor`` of one calibrated_sensor row (cached)."""
        cached = self._sensor_cache.get(calibrated_sensor_token)
        if cached is not None:
            return cached
        where = f"calibrated_sensor {calibrated_sensor_token}"
        cs = self.get("calibrated_sensor", calibrated_sensor_token)
        sensor_row = self.get("sensor", cs.get("sensor_token", ""), where)
        channel = str(sensor_row.get("channel"))
        ext = self._sensor_ext().get(calibrated_sensor_token, {})
        modality = str(ext.get("modality") or sensor_row.get("modality"))
        if modality not in ("lidar", "radar", "camera", "thermal"):
            raise LogFormatError(
                f"{self.table_dir / 'sensor.json'}: sensor '{channel}' has unknown modality '{modality}'"
            )
        camera = None
        if modality in ("camera", "thermal"):
            k = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
            if k.shape != (3, 3):
                raise LogFormatError(
                    f"{self.table_dir}: {where} ({channel}) has no 3x3 camera_intrinsic"
                )
            width, height = self._size_of_cs.get(calibrated_sensor_token, (0, 0))
            width, height = int(ext.get("width", width)), int(ext.get("height", height))
            if width <= 0 or height <= 0:
                raise LogFormatError(
                    f"{self.table_dir}: {where} ({channel}): no image size in sample_data or avfusion_sensor"
                )
            distortion = str(ext.get("distortion_model", "none"))
            coeffs = np.asarray(ext.get("distortion_coeffs", []), dtype=np.float64)
            try:
                if distortion == "none":
                    camera = CameraModel(k, width, height)
                elif distortion == "radtan":
                    camera = CameraModel.radtan(k, coeffs, width, height)
                elif distortion == "fisheye":
                    camera = CameraModel.fisheye(k, coeffs, width, height)
                else:
                    raise LogFormatError(
                        f"{self.table_dir / 'avfusion_sensor.json'}: {channel}: unknown distortion_model '{distortion}' "
                        "(expected none, radtan or fisheye)"
                    )
            except CalibrationError as exc:
                raise LogFormatError(f"{self.table_dir}: {where} ({channel}): {exc}") from exc
        sensor = Sensor(
            channel,
            modality,  # type: ignore[arg-type]
            _pose(cs, f"{self.table_dir / 'calibrated_sensor.json'}: {where}"),
            camera,
            int(ext.get("time_offset_ns", 0)),
        )
        self._sensor_cache[calibrated_sensor_token] = sensor
        return sensor

    def _log_sensors(self) -> dict[str, Sensor]:
        # Calibration of the first keyframe that has each channel; channels seen only in
        # sweeps or in no sample_data row of the selection fall back to their first row.
        out: dict[str, Sensor] = {}
        for sample in self._samples:
            for channel, sd_token in self._keyframe_data.get(sample["token"], {}).items():
                if channel not in out:
                    out[channel] = self.sensor_for(
                        self.get("sample_data", sd_token)["calibrated_sensor_token"]
                    )
        for channel, stream in self._stream.items():
            if channel not in out and stream:
                out[channel] = self.sensor_for(
                    self.get("sample_data", stream[0][1])["calibrated_sensor_token"]
                )
        return out

    @property
    def sensors(self) -> Mapping[str, Sensor]:
        return self._sensors

    # -- structure ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._samples)

    @property
    def scenes(self) -> list[Row]:
        """The scene rows (only the selected one when the log is restricted to a scene)."""
        rows = self.table("scene")
        return [r for r in rows if self._scene_token is None or r["token"] == self._scene_token]

    @property
    def sample_tokens(self) -> list[str]:
        """Keyframe (sample) tokens in frame order."""
        return [r["token"] for r in self._samples]

    def sample_index(self, sample_token_or_index: str | int) -> int:
        if isinstance(sample_token_or_index, str):
            if sample_token_or_index not in self._sample_pos:
                raise LogFormatError(
                    f"{self.table_dir / 'sample.json'}: no sample with token '{sample_token_or_index}' in this log"
                )
            return self._sample_pos[sample_token_or_index]
        return self._check_index(sample_token_or_index)

    def keyframe_data(self, sample_token_or_index: str | int) -> dict[str, str]:
        """Channel → keyframe sample_data token of one sample."""
        sample = self._samples[self.sample_index(sample_token_or_index)]
        return dict(self._keyframe_data.get(sample["token"], {}))

    def sweeps(
        self, sample_token_or_index: str | int, channel: str, n: int | None = None
    ) -> list[str]:
        """sample_data tokens from the keyframe of ``channel`` back through ``prev`` (keyframe
        first), at most ``n``; a ``prev`` that names no row ends the walk (logged)."""
        sd_token = self.keyframe_data(sample_token_or_index).get(channel)
        if sd_token is None:
            raise LogFormatError(
                f"{self.table_dir}: sample {self.sample_tokens[self.sample_index(sample_token_or_index)]} has no keyframe of '{channel}'"
            )
        out = [sd_token]
        index = self._index["sample_data"]
        while n is None or len(out) < n:
            prev = index[out[-1]].get("prev", "")
            if not prev:
                break
            if prev not in index:
                logger.info(
                    "%s: sample_data %s names prev '%s', which is not in the table; stopping there",
                    self.table_dir,
                    out[-1],
                    prev,
                )
                break
            out.append(prev)
        return out

    def timestamps(self, sensor: str) -> npt.NDArray[np.int64]:
        if sensor not in self._stream:
            raise LogFormatError(
                f"{self.table_dir}: no sample_data of channel '{sensor}' (channels: {', '.join(sorted(self._stream))})"
            )
        return np.fromiter(
            (t for t, _ in self._stream[sensor]), dtype=np.int64, count=len(self._stream[sensor])
        )

    def sample_data_tokens(self, sensor: str) -> list[str]:
        """All sample_data tokens (keyframes and sweeps) of a channel, in time order."""
        return [tok for _, tok in self._stream.get(sensor, [])]

    @property
    def poses(self) -> Trajectory:
        if self._poses is None:
            rows = self.table("ego_pose")
            if self._scene_token is not None:
                wanted = {
                    self._index["sample_data"][tok]["ego_pose_token"]
                    for s in self._stream.values()
                    for _, tok in s
                }
                rows = [r for r in rows if r["token"] in wanted]
            if not rows:
                raise LogFormatError(f"{self.table_dir / 'ego_pose.json'}: no ego poses")
            t = np.array(
                [_us_to_ns(r.get("timestamp"), f"ego_pose {r['token']}") for r in rows],
                dtype=np.int64,
            )
            q = np.array([_vec(r, "rotation", 4, f"ego_pose {r['token']}") for r in rows])
            tr = np.array([_vec(r, "translation", 3, f"ego_pose {r['token']}") for r in rows])
            order = np.argsort(t, kind="stable")
            t, q, tr = t[order], q[order], tr[order]
            keep = np.concatenate([[True], np.diff(t) > 0])
            if not keep.all():
                logger.info(
                    "%s: %d ego poses share a timestamp with an earlier one; kept the first",
                    self.table_dir,
                    int((~keep).sum()),
                )
            self._poses = Trajectory(t[keep], q[keep], tr[keep], name=f"{self.version} ego poses")
        return self._poses

    # -- observations ------------------------------------------------------------------------
    def _ego_pose(self, sd: Row) -> Transform:
        where = f"ego_pose {sd.get('ego_pose_token')} of sample_data {sd['token']}"
        return _pose(
            self.get("ego_pose", sd.get("ego_pose_token", ""), f"sample_data {sd['token']}"), where
        )

    def _sd(self, sd_token: str) -> Row:
        sd = self.get("sample_data", sd_token)
        if "_t_ns" not in sd:
            sd["_t_ns"] = _us_to_ns(sd.get("timestamp"), f"sample_data {sd_token}")
        return sd

    def _lidarseg_file(self, sd_token: str) -> Path | None:
        key = "_lidarseg_by_sd"
        if key not in self._ext_cache:
            self._ext_cache[key] = {
                str(r.get("sample_data_token") or r.get("token")): r
                for r in self._extension("lidarseg")
            }
        row = self._ext_cache[key].get(sd_token)
        return (
            None
            if row is None
            else self.blob_path(row.get("filename"), f"lidarseg row of sample_data {sd_token}")
        )

    def load_points(
        self, sd_token: str, *, with_pose: bool = True, with_lidarseg: bool = True
    ) -> PointCloud:
        """The point cloud of one LiDAR or radar sample_data row, in its sensor frame."""
        sd = self._sd(sd_token)
        sensor = self.sensor_for(sd["calibrated_sensor_token"])
        path = self.blob_path(sd.get("filename"), f"sample_data {sd_token}")
        if not path.is_file():
            raise LogFormatError(
                f"{path}: file of sample_data {sd_token} ({sensor.name}) is missing"
            )
        t_ns = int(sd["_t_ns"])
        if path.name.endswith(".pcd"):
            cloud = read_pcd(path, sensor, t_ns)
            attrs = dict(cloud.attrs)
        else:
            cloud = read_lidar_bin(path, sensor, t_ns)
            attrs = dict(cloud.attrs)
        seg = self._lidarseg_file(sd_token) if with_lidarseg else None
        if seg is not None:
            if not seg.is_file():
                raise LogFormatError(f"{seg}: lidarseg file of sample_data {sd_token} is missing")
            labels = np.fromfile(seg, dtype=np.uint8)
            if labels.size != len(cloud):
                raise LogFormatError(
                    f"{seg}: {labels.size} lidarseg labels for {len(cloud)} points of sample_data {sd_token}"
                )
            attrs["lidarseg"] = labels
        pose = self._ego_pose(sd) if with_pose else None
        return PointCloud(cloud.xyz, sensor, t_ns, attrs, pose, sd_token)

    def load_image(self, sd_token: str) -> Image:
        """The (lazily decoded) image of one camera/thermal sample_data row."""
        sd = self._sd(sd_token)
        sensor = self.sensor_for(sd["calibrated_sensor_token"])
        path = self.blob_path(sd.get("filename"), f"sample_data {sd_token}")

        def loader() -> npt.NDArray[Any]:
            if not path.is_file():
                raise LogFormatError(
                    f"{path}: image of sample_data {sd_token} ({sensor.name}) is missing"
                )
            return _decode_image(path)

        return Image(
            sensor,
            int(sd["_t_ns"]),
            self._ego_pose(sd),
            loader=loader,
            path=str(path),
            token=sd_token,
        )

    # -- labels ------------------------------------------------------------------------------
    def _box_velocity(
        self, ann: Row, max_time_diff_s: float = _MAX_VELOCITY_TIME_DIFF_S
    ) -> npt.NDArray[np.float64]:
        """The devkit's ``box_velocity``: centred difference over prev/next annotations."""
        index = self._index["sample_annotation"]
        prev = index.get(ann.get("prev") or "")
        nxt = index.get(ann.get("next") or "")
        if prev is None and nxt is None:
            return np.full(3, np.nan)
        first = prev if prev is not None else ann
        last = nxt if nxt is not None else ann
        samples = self._index["sample"]
        s_first, s_last = samples.get(first["sample_token"]), samples.get(last["sample_token"])
        if s_first is None or s_last is None:
            return np.full(3, np.nan)
        dt_s = (
            _us_to_ns(s_last["timestamp"], "sample") - _us_to_ns(s_first["timestamp"], "sample")
        ) * 1e-9
        limit = max_time_diff_s * (2.0 if prev is not None and nxt is not None else 1.0)
        if dt_s > limit or dt_s <= 0:
            return np.full(3, np.nan)
        return (
            np.asarray(last["translation"], np.float64)
            - np.asarray(first["translation"], np.float64)
        ) / dt_s

    def _annotations_by_sample(self) -> dict[str, list[Row]]:
        key = "_ann_by_sample"
        if key not in self._ext_cache:
            by: dict[str, list[Row]] = defaultdict(list)
            for ann in self.table("sample_annotation"):
                by[str(ann.get("sample_token"))].append(ann)
            self._ext_cache[key] = by
        out: dict[str, list[Row]] = self._ext_cache[key]
        return out

    def boxes3d(self, sample_token_or_index: str | int) -> Boxes3D:
        """The sample's annotations as world-frame boxes (size l, w, h)."""
        sample = self._samples[self.sample_index(sample_token_or_index)]
        anns = self._annotations_by_sample().get(sample["token"], [])
        if not anns:
            return Boxes3D.empty("world")
        path = self.table_dir / "sample_annotation.json"
        self.table("instance")
        self.table("category")
        self.table("attribute")
        visibility = self._load_table("visibility", optional=True)
        vis_level = {r["token"]: str(r.get("level", r["token"])) for r in visibility}
        n = len(anns)
        center = np.empty((n, 3))
        size = np.empty((n, 3))
        rot = np.empty((n, 4))
        vel = np.empty((n, 3))
        label, track, token, vis, attr = [], [], [], [], []
        n_lidar = np.empty(n, np.int64)
        n_radar = np.empty(n, np.int64)
        for i, ann in enumerate(anns):
            where = f"{path}: sample_annotation {ann['token']}"
            center[i] = _vec(ann, "translation", 3, where)
            w, length, h = _vec(ann, "size", 3, where)
            size[i] = (length, w, h)
            rot[i] = _vec(ann, "rotation", 4, where)
            instance = self.get(
                "instance", ann.get("instance_token", ""), f"sample_annotation {ann['token']}"
            )
            category = self.get(
                "category", instance.get("category_token", ""), f"instance {instance['token']}"
            )
            label.append(category.get("name", ""))
            track.append(instance["token"])
            token.append(ann["token"])
            vis_token = ann.get("visibility_token") or ""
            vis.append(vis_level.get(vis_token, vis_token))
            names = [
                self.get("attribute", a, f"sample_annotation {ann['token']}").get("name", "")
                for a in ann.get("attribute_tokens", [])
            ]
            attr.append(",".join(names))
            n_lidar[i] = int(ann.get("num_lidar_pts", -1))
            n_radar[i] = int(ann.get("num_radar_pts", -1))
            vel[i] = self._box_velocity(ann)
        try:
            return Boxes3D(
                center,
                size,
                rot,
                np.array(label, dtype=np.str_),
                np.array(track, dtype=np.str_),
                "world",
                vel,
                np.array(token, dtype=np.str_),
                {
                    "num_lidar_pts": n_lidar,
                    "num_radar_pts": n_radar,
                    "visibility": np.array(vis, dtype=np.str_),
                    "attribute": np.array(attr, dtype=np.str_),
                },
            )
        except AVFusionError as exc:
            raise LogFormatError(f"{path}: annotations of sample {sample['token']}: {exc}") from exc

    def boxes2d(self, sd_token: str, channel: str) -> Boxes2D | None:
        """``avfusion_box2d.json`` boxes of one camera sample_data row (None when absent)."""
        key = "_box2d_by_sd"
        if key not in self._ext_cache:
            by: dict[str, list[Row]] = defaultdict(list)
            for r in self._extension("avfusion_box2d"):
                by[str(r.get("sample_data_token"))].append(r)
            self._ext_cache[key] = by
        rows = self._ext_cache[key].get(sd_token)
        if not rows:
            return None
        try:
            return Boxes2D(
                np.array([r["bbox"] for r in rows], dtype=np.float64).reshape(-1, 4),
                np.array([r.get("category_name", "") for r in rows], dtype=np.str_),
                np.array([r.get("instance_token", "") for r in rows], dtype=np.str_),
                channel,
                {
                    "token": np.array([r.get("token", "") for r in rows], dtype=np.str_),
                    "sample_annotation_token": np.array(
                        [r.get("sample_annotation_token", "") for r in rows], dtype=np.str_
                    ),
                },
            )
        except (KeyError, TypeError, ValueError, AVFusionError) as exc:
            raise LogFormatError(
                f"{self.table_dir / 'avfusion_box2d.json'}: boxes of sample_data {sd_token}: {exc}"
            ) from exc

    # -- frames ------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Frame:
        return self.frame(index)

    def frame(self, sample_token_or_index: str | int, *, with_boxes: bool = True) -> Frame:
        """One keyframe: every keyframe observation of the sample, boxes in the world frame."""
        i = self.sample_index(sample_token_or_index)
        sample = self._samples[i]
        data = self._keyframe_data.get(sample["token"], {})
        sensors: dict[str, Sensor] = {}
        points: dict[str, PointCloud] = {}
        images: dict[str, Image] = {}
        boxes2d: dict[str, Boxes2D] = {}
        for channel, sd_token in sorted(data.items()):
            sd = self._sd(sd_token)
            sensor = self.sensor_for(sd["calibrated_sensor_token"])
            sensors[channel] = sensor
            if sensor.is_image:
                images[channel] = self.load_image(sd_token)
                b2d = self.boxes2d(sd_token, channel)
                if b2d is not None:
                    boxes2d[channel] = b2d
            else:
                points[channel] = self.load_points(sd_token)
        ref_token = data.get(self.ref_sensor)
        if ref_token is not None:
            ref_sd = self._sd(ref_token)
            t_ns = int(ref_sd["_t_ns"])
            world_from_ego: Transform | None = self._ego_pose(ref_sd)
        else:
            t_ns = int(sample["_t_ns"])
            world_from_ego = None
        times = {ch: int(self._sd(tok)["_t_ns"]) - t_ns for ch, tok in data.items()}
        missing = tuple(sorted(set(self._sensors) - set(data)))
        for name in missing:  # Frame.sensors lists the whole rig
            sensors.setdefault(name, self._sensors[name])
        return Frame(
            t_ns,
            world_from_ego,
            sensors,
            points,
            images,
            self.boxes3d(i) if with_boxes else None,
            boxes2d,
            times,
            missing,
            sample["token"],
            i,
        )

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.frame(i)

    # -- multi-sweep -------------------------------------------------------------------------
    def aggregate_sweeps(
        self,
        sample_token_or_index: str | int,
        sensor: str = "LIDAR_TOP",
        ref_sensor: str = "LIDAR_TOP",
        n_sweeps: int = 10,
        min_distance_m: float = 1.0,
    ) -> PointCloud:
        """The keyframe and up to ``n_sweeps - 1`` earlier sweeps of ``sensor`` in the frame of
        ``ref_sensor`` at its keyframe time, like the devkit's ``from_file_multisweep``.

        Each sweep: points with |x| < r and |y| < r (sensor frame) are removed, then
        ``ref_from_sweep = ref_from_ego · ego_from_world(t_ref) · world_from_ego(t_sweep) ·
        ego_from_sensor`` is applied (composed once per sweep, float64 maths, float32 result).
        ``attrs["time_lag_s"]`` (float32) is t_ref − t_sweep in seconds; ``attrs["sweep"]`` the
        sweep number (0 = keyframe).
        """
        if n_sweeps < 1:
            raise AVFusionError(f"aggregate_sweeps: n_sweeps must be >= 1, got {n_sweeps}")
        i = self.sample_index(sample_token_or_index)
        data = self._keyframe_data.get(self._samples[i]["token"], {})
        if ref_sensor not in data:
            raise LogFormatError(
                f"{self.table_dir}: sample {self._samples[i]['token']} has no keyframe of '{ref_sensor}'"
            )
        ref_sd = self._sd(data[ref_sensor])
        ref = self.sensor_for(ref_sd["calibrated_sensor_token"])
        world_from_ref_ego = self._ego_pose(ref_sd)
        ref_from_world = (world_from_ref_ego @ ref.ego_from_sensor).inverse().as_matrix()
        ref_t_ns = int(ref_sd["_t_ns"])
        clouds: list[PointCloud] = []
        mats: list[npt.NDArray[np.float64]] = []
        for tok in self.sweeps(i, sensor, n_sweeps):
            cloud = self.load_points(tok, with_pose=False, with_lidarseg=False)
            sd = self._sd(tok)
            world_from_sensor = (self._ego_pose(sd) @ cloud.sensor.ego_from_sensor).as_matrix()
            clouds.append(cloud)
            mats.append(ref_from_world @ world_from_sensor)
        keeps = [
            ~((np.abs(c.xyz[:, 0]) < min_distance_m) & (np.abs(c.xyz[:, 1]) < min_distance_m))
            for c in clouds
        ]
        counts = [int(k.sum()) for k in keeps]
        total = sum(counts)
        xyz = np.empty((total, 3), dtype=np.float32)
        time_lag = np.empty(total, dtype=np.float32)
        sweep_no = np.empty(total, dtype=np.uint8 if len(clouds) < 256 else np.uint16)
        attr_names = set.intersection(*(set(c.attrs) for c in clouds)) if clouds else set()
        attrs_out = {
            name: np.empty(total, dtype=clouds[0].attrs[name].dtype)
            for name in sorted(attr_names)
            if clouds[0].attrs[name].ndim == 1
        }
        start = 0
        for k, (cloud, keep, m, count) in enumerate(zip(clouds, keeps, mats, counts, strict=True)):
            end = start + count
            pts = cloud.xyz[keep].astype(np.float64)
            xyz[start:end] = pts @ m[:3, :3].T + m[:3, 3]
            time_lag[start:end] = (ref_t_ns - cloud.t_ns) * 1e-9
            sweep_no[start:end] = k
            for name, arr in attrs_out.items():
                arr[start:end] = cloud.attrs[name][keep]
            start = end
        attrs_out["time_lag_s"] = time_lag
        attrs_out["sweep"] = sweep_no
        removed = sum(len(c) for c in clouds) - total
        logger.debug(
            "aggregate_sweeps %s: %d sweeps, %d points, %d removed within %.2f m",
            sensor,
            len(clouds),
            total,
            removed,
            min_distance_m,
        )
        return PointCloud(xyz, ref, ref_t_ns, attrs_out, world_from_ref_ego, ref_sd["token"])


def open_nuscenes(
    path: str | os.PathLike[str], version: str | None = None, **kwargs: Any
) -> NuScenesLog:
    """Open a nuScenes-style root (or table folder) as a ``NuScenesLog``."""
    return NuScenesLog(path, version, **kwargs)
