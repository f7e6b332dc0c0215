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

Table store. A table is read when first needed (opening a log reads ``scene``, ``sample``,
``sensor``, ``calibrated_sensor`` and ``sample_data``; poses and annotations come with the
first request that needs them). The 13 standard tables are decoded with msgspec straight into
typed rows (``msgspec.Struct``, ``gc=False``; vectors as fixed-length array structs), from a
memory map of the file, with one token → row-number dict per table. That is several times
faster than ``json.load`` and much smaller than one dict per row; columns unknown to the
nuScenes schema are not kept for these tables. ``sample_data`` also gets columns as numpy
arrays (time in ns, calibrated sensor, keyframe flag) from which the per-channel streams and
keyframe index are built; nothing is written back into rows. ``get()`` and ``table()`` return
plain dicts (copies) of the typed rows. A typed decode that fails is redone generically, so
the error names the file, the row and the field. Extension tables (below) stay flexible JSON:
every key is kept.

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

Radar points are returned as stored unless the log (or the call) is given ``RadarFilters``
(the devkit's ``RadarPointCloud`` filters, as explicit arguments, never global state).
"""

from __future__ import annotations

import logging
import math
import mmap
import os
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Trajectory, Transform, matrix_from_quaternion
from avfusion.errors import AVFusionError, CalibrationError, LogFormatError
from avfusion.io._kernels import SweepStack, filter_transform_sweeps
from avfusion.io.calibration_file import calibration_overrides, check_override_names
from avfusion.io.imagefile import read_image_file
from avfusion.io.pcd import RadarFilterResult, radar_filter, read_pcd
from avfusion.types import Boxes2D, Boxes3D, Frame, Image, Log, PointCloud, Sensor

__all__ = [
    "NUSCENES_TABLES",
    "NuScenesLog",
    "RadarFilters",
    "find_nuscenes_tables",
    "open_nuscenes",
    "read_lidar_bin",
]

logger = logging.getLogger(__name__)

#: Per-point capture time attribute (ns relative to the cloud's ``t_ns``); see ``types.PointCloud``.
POINT_TIME_ATTR = "point_time_ns"

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
_LIDAR_EXTRA = ("intensity", "ring")  # columns 3 and 4 of a .pcd.bin record
_MAX_VELOCITY_TIME_DIFF_S = 1.5
_MAX_ABS_US = 9_000_000_000_000_000  # |µs| whose ns still fit in int64

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Typed rows of the 13 standard tables (the nuScenes v1.0 schema)
# --------------------------------------------------------------------------------------------


class _Vec3(msgspec.Struct, array_like=True, frozen=True, gc=False):
    x: float
    y: float
    z: float


class _Quat(msgspec.Struct, array_like=True, frozen=True, gc=False):
    w: float
    x: float
    y: float
    z: float


class _Row(msgspec.Struct, kw_only=True, gc=False):
    token: str


class _AttributeRow(_Row, kw_only=True, gc=False):
    name: str = ""
    description: str = ""


class _CalibratedSensorRow(_Row, kw_only=True, gc=False):
    sensor_token: str = ""
    translation: list[float]  # lists, checked on use: errors say which sensor is wrong
    rotation: list[float]
    camera_intrinsic: list[list[float]] = []


class _CategoryRow(_Row, kw_only=True, gc=False):
    name: str = ""
    description: str = ""
    index: int | None = None


class _EgoPoseRow(_Row, kw_only=True, gc=False):
    timestamp: int | float
    rotation: _Quat
    translation: _Vec3


class _InstanceRow(_Row, kw_only=True, gc=False):
    category_token: str = ""
    nbr_annotations: int = 0
    first_annotation_token: str = ""
    last_annotation_token: str = ""


class _LogRow(_Row, kw_only=True, gc=False):
    logfile: str = ""
    vehicle: str = ""
    date_captured: str = ""
    location: str = ""


class _MapRow(_Row, kw_only=True, gc=False):
    category: str = ""
    filename: str = ""
    log_tokens: list[str] = []


class _SampleRow(_Row, kw_only=True, gc=False):
    timestamp: int | float
    scene_token: str = ""
    prev: str = ""
    next: str = ""


class _SampleAnnotationRow(_Row, kw_only=True, gc=False):
    sample_token: str = ""
    instance_token: str = ""
    visibility_token: str | None = ""
    attribute_tokens: list[str] = []
    translation: _Vec3
    size: _Vec3  # nuScenes order: width, length, height
    rotation: _Quat
    prev: str = ""
    next: str = ""
    num_lidar_pts: int = -1
    num_radar_pts: int = -1


class _SampleDataRow(_Row, kw_only=True, gc=False):
    sample_token: str = ""
    ego_pose_token: str = ""
    calibrated_sensor_token: str = ""
    timestamp: int | float
    fileformat: str = ""
    is_key_frame: bool = False
    height: int = 0
    width: int = 0
    filename: str = ""
    prev: str = ""
    next: str = ""


class _SceneRow(_Row, kw_only=True, gc=False):
    log_token: str = ""
    nbr_samples: int = 0
    first_sample_token: str = ""
    last_sample_token: str = ""
    name: str = ""
    description: str = ""


class _SensorRow(_Row, kw_only=True, gc=False):
    channel: str = ""
    modality: str = ""


class _VisibilityRow(_Row, kw_only=True, gc=False):
    level: str = ""
    description: str = ""


_ROW_TYPES: dict[str, type[_Row]] = {
    "attribute": _AttributeRow,
    "calibrated_sensor": _CalibratedSensorRow,
    "category": _CategoryRow,
    "ego_pose": _EgoPoseRow,
    "instance": _InstanceRow,
    "log": _LogRow,
    "map": _MapRow,
    "sample": _SampleRow,
    "sample_annotation": _SampleAnnotationRow,
    "sample_data": _SampleDataRow,
    "scene": _SceneRow,
    "sensor": _SensorRow,
    "visibility": _VisibilityRow,
}

_TOKEN = attrgetter("token")
_TIMESTAMP = attrgetter("timestamp")
_QUAT = attrgetter("rotation.w", "rotation.x", "rotation.y", "rotation.z")
_TRANSLATION = attrgetter("translation.x", "translation.y", "translation.z")
_SIZE_WLH = attrgetter("size.x", "size.y", "size.z")

R = TypeVar("R", bound=_Row)


class _Table(Generic[R]):
    """The typed rows of one table file and its token → row-number index."""

    __slots__ = ("index", "name", "path", "rows")

    def __init__(self, name: str, path: Path, rows: list[R]) -> None:
        self.name = name
        self.path = path
        self.rows = rows
        self.index: dict[str, int] = dict(zip(map(_TOKEN, rows), range(len(rows)), strict=True))


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
    """nuScenes microseconds (int, or float in some derived sets) → int nanoseconds.

    A float is split into its integral and fractional parts, so the result is the stored
    value's exact nanosecond (rounded to nearest) rather than a product rounded in float64.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LogFormatError(f"{where}: timestamp must be a number of microseconds, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise LogFormatError(f"{where}: timestamp is not finite ({value})")
    if abs(value) > _MAX_ABS_US:
        raise LogFormatError(f"{where}: timestamp {value} µs is out of range")
    if isinstance(value, int):
        return value * 1000
    whole = math.floor(value)
    return int(whole) * 1000 + round((value - whole) * 1000.0)


def _ns_column(rows: Sequence[Any], path: Path, table: str) -> npt.NDArray[np.int64]:
    """The ``timestamp`` (µs; int or float, as typed by the decoder) of every row as int64 ns,
    with the same rounding as ``_us_to_ns``."""
    us = np.array(list(map(_TIMESTAMP, rows)))
    if us.dtype.kind in "iuf":
        out_of_range = ~(np.abs(us) <= _MAX_ABS_US)
    else:  # integers beyond 64 bits: an object array
        out_of_range = np.array([abs(v) > _MAX_ABS_US for v in us.tolist()], dtype=bool)
    if out_of_range.any():
        bad = rows[int(np.argmax(out_of_range))]
        raise LogFormatError(
            f"{path}: {table} {bad.token}: timestamp {bad.timestamp} µs is out of range"
        )
    if us.dtype.kind in "iu":
        return us.astype(np.int64) * 1000
    whole = np.floor(us.astype(np.float64))
    return whole.astype(np.int64) * 1000 + np.rint((us - whole) * 1000.0).astype(np.int64)


def _decode_json(path: Path, type_: Any = Any) -> Any:
    """Decode one JSON file as ``type_`` from a read-only memory map (no copy of the text)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return msgspec.json.decode(b"", type=type_)  # raises: "Input data was truncated"
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return msgspec.json.decode(view, type=type_)


def _load_flexible(path: Path, require_token: bool) -> list[Row]:
    """A table as plain dict rows (every key kept): extensions and unknown tables."""
    try:
        rows = _decode_json(path)
    except msgspec.DecodeError as exc:
        raise LogFormatError(f"{path}: malformed JSON: {exc}") from exc
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read table: {exc.strerror or exc}") from exc
    if not isinstance(rows, list):
        raise LogFormatError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise LogFormatError(f"{path}: row {i} is not an object")
        if require_token and not isinstance(row.get("token"), str):
            raise LogFormatError(f"{path}: row {i} is not an object with a string 'token'")
    return rows


def _explain_invalid(
    path: Path, table: str, row_type: type[_Row], exc: Exception
) -> LogFormatError:
    """Why a typed decode failed: redo it generically and name the first bad row and field."""
    try:
        rows = _load_flexible(path, require_token=True)
    except LogFormatError as generic:
        return generic
    for i, row in enumerate(rows):
        try:
            msgspec.convert(row, row_type)
        except msgspec.ValidationError as row_exc:
            return LogFormatError(f"{path}: {table} {row['token']} (row {i}): {row_exc}")
    return LogFormatError(f"{path}: {exc}")


def _load_typed(path: Path, table: str) -> _Table[Any]:
    row_type = _ROW_TYPES[table]
    try:
        rows = _decode_json(path, list[row_type])  # type: ignore[valid-type]
    except msgspec.ValidationError as exc:
        raise _explain_invalid(path, table, row_type, exc) from exc
    except msgspec.DecodeError as exc:
        raise LogFormatError(f"{path}: malformed JSON: {exc}") from exc
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read table: {exc.strerror or exc}") from exc
    return _Table(table, path, rows)


def _vec(values: Any, key: str, n: int, where: str) -> npt.NDArray[np.float64]:
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LogFormatError(
            f"{where}: field '{key}' is not a list of numbers: {values!r}"
        ) from exc
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise LogFormatError(f"{where}: field '{key}' must be {n} finite numbers, got {values!r}")
    return v


def _transform(q_wxyz: Any, translation: Any, where: str) -> Transform:
    """A rotation (w, x, y, z) and translation as a Transform (parent_from_child)."""
    q = _vec(q_wxyz, "rotation", 4, where)
    t = _vec(translation, "translation", 3, where)
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
    _check_lidar_size(p, dims)
    data = np.fromfile(p, dtype="<f4").reshape(-1, dims)
    xyz = np.ascontiguousarray(data[:, :3])
    attrs: dict[str, npt.NDArray[Any]] = {}
    if dims > 3:
        attrs["intensity"] = data[:, 3]
    if dims > 4:
        attrs["ring"] = data[:, 4]
    return PointCloud(xyz, sensor, t_ns, attrs, token=token)


def _check_lidar_size(path: Path, dims: int) -> int:
    """Byte size of a ``.pcd.bin``; ``LogFormatError`` when unreadable or truncated."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read LiDAR file: {exc.strerror or exc}") from exc
    step = 4 * dims
    if size % step:
        raise LogFormatError(
            f"{path}: LiDAR file of {size} bytes is not a whole number of {dims}-float32 points "
            f"({step} bytes each): truncated or not a .pcd.bin"
        )
    return size


def _map_lidar_bin(path: Path, dims: int = _LIDAR_DIMS) -> npt.NDArray[np.float32]:
    """A ``.pcd.bin`` as a read-only (N, dims) float32 view of a memory map (no copy)."""
    if _check_lidar_size(path, dims) == 0:
        return np.empty((0, dims), dtype=np.float32)
    try:
        with path.open("rb") as f:
            view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise LogFormatError(f"{path}: cannot read LiDAR file: {exc}") from exc
    return np.frombuffer(view, dtype="<f4").reshape(-1, dims)


@dataclass(frozen=True)
class RadarFilters:
    """Which radar points a ``NuScenesLog`` keeps: the allowed values of ``invalid_state``,
    ``dyn_prop`` and ``ambig_state`` (``None`` turns one criterion off).

    ``RadarFilters()`` are the nuscenes-devkit ``RadarPointCloud`` defaults (invalid_state 0,
    dyn_prop 0–6, ambig_state 3); ``RadarFilters.none()`` keeps every point. Give them to
    ``NuScenesLog(..., radar_filters=...)`` or per call to ``load_points``/``aggregate_sweeps``;
    what they remove is counted and logged (``avfusion.io.pcd.radar_filter``).
    """

    invalid_states: tuple[int, ...] | None = (0,)
    dynprops: tuple[int, ...] | None = tuple(range(7))
    ambig_states: tuple[int, ...] | None = (3,)

    def __post_init__(self) -> None:
        for name in ("invalid_states", "dynprops", "ambig_states"):
            value: Collection[int] | None = getattr(self, name)
            if value is not None:
                try:
                    object.__setattr__(self, name, tuple(int(v) for v in value))
                except (TypeError, ValueError) as exc:
                    raise AVFusionError(
                        f"RadarFilters: {name} must be integers or None, got {value!r}"
                    ) from exc

    @classmethod
    def none(cls) -> RadarFilters:
        """Keep every radar point (the devkit's ``disable_filters``, without global state)."""
        return cls(None, None, None)

    def apply(self, cloud: PointCloud) -> RadarFilterResult:
        return radar_filter(cloud, self.invalid_states, self.dynprops, self.ambig_states)


# --------------------------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------------------------


class NuScenesLog(Log):
    """A nuScenes-style dataset (or one of its scenes) as a ``Log`` of keyframes.

    ``path`` is the data root (or the table folder itself); ``version`` picks the table folder
    when there are several. ``scene`` (name or token) restricts frames, timestamps and poses
    to one scene. ``ref_sensor`` sets each frame's time and pose (falls back to the sample's
    timestamp when a sample has no such channel). ``radar_filters`` (default: none) filters
    every radar cloud the log returns.
    """

    #: Streams are sorted by time (sample_data rows carry no recording order).
    timestamps_are_raw = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        version: str | None = None,
        *,
        scene: str | None = None,
        ref_sensor: str = "LIDAR_TOP",
        radar_filters: RadarFilters | None = None,
        calibration: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    ) -> None:
        self.root, self.table_dir = find_nuscenes_tables(path, version)
        self._calibration = calibration_overrides(calibration, self.table_dir)
        self.version = self.table_dir.name
        self.ref_sensor = ref_sensor
        self.radar_filters = radar_filters
        self._tables: dict[str, _Table[Any]] = {}
        self._flexible: dict[str, tuple[list[Row], dict[str, Row]]] = {}
        self._sensor_cache: dict[str, Sensor] = {}
        self._derived: dict[str, Any] = {}  # lazily built lookups (annotations by sample ...)
        # Eager: what every request needs (small tables, plus sample_data's channel index).
        scenes: list[_SceneRow] = self._table("scene").rows
        self._scene_token: str | None = None
        if scene is not None:
            match = [r for r in scenes if scene in (r.token, r.name)]
            if not match:
                raise LogFormatError(
                    f"{self.table_dir / 'scene.json'}: no scene named or with token '{scene}'"
                )
            self._scene_token = match[0].token
        sample_table: _Table[_SampleRow] = self._table("sample")
        sample_t_ns = _ns_column(sample_table.rows, sample_table.path, "sample")
        chosen = [
            i
            for i, r in enumerate(sample_table.rows)
            if self._scene_token is None or r.scene_token == self._scene_token
        ]
        order = np.asarray(chosen, dtype=np.int64)[np.argsort(sample_t_ns[chosen], kind="stable")]
        self._samples: list[_SampleRow] = [sample_table.rows[i] for i in order.tolist()]
        self._sample_t_ns = sample_t_ns[order]
        self._sample_pos = {r.token: i for i, r in enumerate(self._samples)}
        self._index_sample_data()
        self._sensors = self._log_sensors()
        check_override_names(self._calibration, self._sensors, self.table_dir)
        self._poses: Trajectory | None = None
        logger.debug(
            "%s: %d keyframes, %d channels", self.table_dir, len(self._samples), len(self._sensors)
        )

    def _index_sample_data(self) -> None:
        """Columns of sample_data (ns times, calibrated sensor, channel) and what is built from
        them: per-channel streams in time order and the keyframe index of every sample."""
        cs_table: _Table[_CalibratedSensorRow] = self._table("calibrated_sensor")
        channel_of_cs: list[str] = []
        for cs in cs_table.rows:
            sensor_row: _SensorRow = self._row(
                "sensor", cs.sensor_token, f"calibrated_sensor {cs.token}"
            )
            channel_of_cs.append(sensor_row.channel)
        sd: _Table[_SampleDataRow] = self._table("sample_data")
        rows, n = sd.rows, len(sd.rows)
        try:
            cs_of_sd = np.fromiter(
                map(cs_table.index.__getitem__, map(attrgetter("calibrated_sensor_token"), rows)),
                dtype=np.int64,
                count=n,
            )
        except KeyError:
            bad = next(r for r in rows if r.calibrated_sensor_token not in cs_table.index)
            raise LogFormatError(
                f"{sd.path}: sample_data {bad.token} names calibrated_sensor "
                f"'{bad.calibrated_sensor_token}', which does not exist"
            ) from None
        t_ns = _ns_column(rows, sd.path, "sample_data")
        is_key = np.fromiter(map(attrgetter("is_key_frame"), rows), dtype=bool, count=n)
        if self._scene_token is not None:
            selected = np.fromiter(
                map(self._sample_pos.__contains__, map(attrgetter("sample_token"), rows)),
                dtype=bool,
                count=n,
            )
        else:
            selected = np.ones(n, dtype=bool)
        names = sorted(set(channel_of_cs))
        channel_id = np.array([names.index(c) for c in channel_of_cs], dtype=np.int64)
        chan_of_sd = channel_id[cs_of_sd] if n else np.zeros(0, dtype=np.int64)
        self._sd_t_ns = t_ns
        self._sd_cs = cs_of_sd
        self._stream: dict[str, npt.NDArray[np.int64]] = {}
        for c, name in enumerate(names):
            members = np.flatnonzero((chan_of_sd == c) & selected)
            if members.size:
                self._stream[name] = members[np.argsort(t_ns[members], kind="stable")]
        self._keyframe_data: dict[str, dict[str, str]] = defaultdict(dict)
        keyframes = np.flatnonzero(is_key & selected)
        for i, c in zip(keyframes.tolist(), chan_of_sd[keyframes].tolist(), strict=True):
            r = rows[i]
            self._keyframe_data[r.sample_token][names[c]] = r.token

    def __repr__(self) -> str:
        scene = f", scene={self._scene_token}" if self._scene_token else ""
        return f"NuScenesLog({self.table_dir}, {len(self)} keyframes, sensors={sorted(self._sensors)}{scene})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the arguments that open the log (a few hundred bytes): the tables are read
        again, lazily, in the process that unpickles it (e.g. a spawned DataLoader worker),
        instead of every loaded table travelling through the pickle."""
        return (
            _reopen_nuscenes,
            (
                str(self.table_dir),
                self.version,
                self._scene_token,
                self.ref_sensor,
                self.radar_filters,
                self._calibration or None,
            ),
        )

    # -- tables ------------------------------------------------------------------------------
    def _table(self, name: str, optional: bool = False) -> _Table[Any]:
        """A standard table's typed rows and index, loaded on first use."""
        table = self._tables.get(name)
        if table is None:
            path = self.table_dir / f"{name}.json"
            if not path.is_file():
                if not optional:
                    raise LogFormatError(f"{path}: missing table '{name}'")
                return _Table(name, path, [])
            table = _load_typed(path, name)
            self._tables[name] = table
        return table

    def _row(self, table: str, token: str, referrer: str = "") -> Any:
        """The typed row of a standard table with ``token``, else ``LogFormatError``."""
        t = self._table(table)
        i = t.index.get(token)
        if i is None:
            by = f" (referenced by {referrer})" if referrer else ""
            raise LogFormatError(f"{t.path}: no row with token '{token}'{by}")
        return t.rows[i]

    def _flexible_table(self, name: str, optional: bool) -> tuple[list[Row], dict[str, Row]]:
        cached = self._flexible.get(name)
        if cached is None:
            path = self.table_dir / f"{name}.json"
            if not path.is_file():
                if not optional:
                    raise LogFormatError(f"{path}: missing table '{name}'")
                rows: list[Row] = []
            else:
                rows = _load_flexible(path, require_token=not optional)
            index = {r["token"]: r for r in rows if isinstance(r.get("token"), str)}
            cached = self._flexible[name] = (rows, index)
        return cached

    def table(self, name: str) -> list[Row]:
        """All rows of one table as plain dicts, loaded on first use.

        The 13 standard tables are stored typed; this returns dict copies of them (made on
        each call: for tools and inspection, not for hot loops). Other tables (extensions)
        keep every key of the file and need a string ``token`` per row.
        """
        if name in _ROW_TYPES:
            rows: list[Row] = msgspec.to_builtins(self._table(name).rows)
            return rows
        return self._flexible_table(name, optional=False)[0]

    def get(self, table: str, token: str, referrer: str = "") -> Row:
        """The row of ``table`` with ``token`` (a dict; a copy for the standard tables); a
        missing token raises ``LogFormatError``."""
        if table in _ROW_TYPES:
            row: Row = msgspec.to_builtins(self._row(table, token, referrer))
            return row
        found = self._flexible_table(table, optional=False)[1].get(token)
        if found is None:
            by = f" (referenced by {referrer})" if referrer else ""
            raise LogFormatError(
                f"{self.table_dir / (table + '.json')}: no row with token '{token}'{by}"
            )
        return found

    def _extension(self, name: str) -> list[Row]:
        return self._flexible_table(name, optional=True)[0]

    # -- paths -------------------------------------------------------------------------------
    def blob_path(self, filename: Any, referrer: str) -> Path:
        """A table's ``filename`` as a path inside the data root (else ``LogFormatError``).

        The check is on the name itself: an absolute name or one whose normalised form
        climbs out of the root (``..``) is refused. Symbolic links inside the root are
        followed as the file system does (data folders are often links to another disk).
        """
        if not isinstance(filename, str) or not filename:
            raise LogFormatError(f"{self.table_dir}: {referrer} has no filename")
        if "\0" in filename:
            raise LogFormatError(
                f"{self.table_dir}: {referrer} filename {filename!r} holds a NUL byte"
            )
        rel = os.path.normpath(filename)
        if os.path.isabs(rel) or rel == ".." or rel.startswith(".." + os.sep):
            raise LogFormatError(
                f"{self.table_dir}: {referrer} filename '{filename}' escapes the data root {self.root}"
            )
        return self.root / rel

    # -- sensors -----------------------------------------------------------------------------
    def _sensor_ext(self) -> dict[str, Row]:
        key = "sensor_ext_by_cs"
        if key not in self._derived:
            self._derived[key] = {
                str(r.get("calibrated_sensor_token", "")): r
                for r in self._extension("avfusion_sensor")
            }
        out: dict[str, Row] = self._derived[key]
        return out

    @property
    def sensor_extras(self) -> Mapping[str, Row]:
        """Channel → the ``avfusion_sensor.json`` row (e.g. ``counts_to_kelvin``), when present."""
        return {str(r.get("channel")): r for r in self._sensor_ext().values()}

    def _image_size(self, calibrated_sensor_token: str) -> tuple[int, int]:
        """(width, height) of the first sample_data row of this calibrated sensor that has one."""
        i = self._table("calibrated_sensor").index.get(calibrated_sensor_token, -1)
        rows: list[_SampleDataRow] = self._table("sample_data").rows
        for j in np.flatnonzero(self._sd_cs == i).tolist():
            if rows[j].width and rows[j].height:
                return rows[j].width, rows[j].height
        return 0, 0

    def sensor_for(self, calibrated_sensor_token: str) -> Sensor:
        """The ``Sensor`` of one calibrated_sensor row (cached)."""
        cached = self._sensor_cache.get(calibrated_sensor_token)
        if cached is not None:
            return cached
        where = f"calibrated_sensor {calibrated_sensor_token}"
        cs: _CalibratedSensorRow = self._row("calibrated_sensor", calibrated_sensor_token)
        sensor_row: _SensorRow = self._row("sensor", cs.sensor_token, where)
        channel = sensor_row.channel
        ext = self._sensor_ext().get(calibrated_sensor_token, {})
        modality = str(ext.get("modality") or sensor_row.modality)
        if modality not in ("lidar", "radar", "camera", "thermal"):
            raise LogFormatError(
                f"{self.table_dir / 'sensor.json'}: sensor '{channel}' has unknown modality '{modality}'"
            )
        camera = None
        if modality in ("camera", "thermal"):
            try:
                k = np.asarray(cs.camera_intrinsic, dtype=np.float64)
            except ValueError:
                k = np.zeros(0)
            if k.shape != (3, 3):
                raise LogFormatError(
                    f"{self.table_dir}: {where} ({channel}) has no 3x3 camera_intrinsic"
                )
            width, height = self._image_size(calibrated_sensor_token)
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
        ego_from_sensor = _transform(
            cs.rotation, cs.translation, f"{self.table_dir / 'calibrated_sensor.json'}: {where}"
        )
        time_offset_ns = int(ext.get("time_offset_ns", 0))
        override = self._calibration.get(channel)
        if override is not None:  # calibration= keyword: replaces the tables' extrinsic
            ego_from_sensor = override.ego_from_sensor
            if override.time_offset_ns is not None:
                time_offset_ns = override.time_offset_ns
        sensor = Sensor(
            channel,
            modality,  # type: ignore[arg-type]
            ego_from_sensor,
            camera,
            time_offset_ns,
        )
        self._sensor_cache[calibrated_sensor_token] = sensor
        return sensor

    def _log_sensors(self) -> dict[str, Sensor]:
        # Calibration of the first keyframe that has each channel; channels seen only in
        # sweeps or in no sample_data row of the selection fall back to their first row.
        rows: list[_SampleDataRow] = self._table("sample_data").rows
        out: dict[str, Sensor] = {}
        for sample in self._samples:
            for channel, sd_token in self._keyframe_data.get(sample.token, {}).items():
                if channel not in out:
                    out[channel] = self.sensor_for(self._sd_row(sd_token).calibrated_sensor_token)
        for channel, stream in self._stream.items():
            if channel not in out:
                out[channel] = self.sensor_for(rows[int(stream[0])].calibrated_sensor_token)
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
        rows: list[_SceneRow] = self._table("scene").rows
        chosen = [r for r in rows if self._scene_token is None or r.token == self._scene_token]
        out: list[Row] = msgspec.to_builtins(chosen)
        return out

    @property
    def sample_tokens(self) -> list[str]:
        """Keyframe (sample) tokens in frame order."""
        return [r.token for r in self._samples]

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
        return dict(self._keyframe_data.get(sample.token, {}))

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
        table: _Table[_SampleDataRow] = self._table("sample_data")
        out = [sd_token]
        i = table.index[sd_token]
        while n is None or len(out) < n:
            prev = table.rows[i].prev
            if not prev:
                break
            j = table.index.get(prev)
            if j is None:
                logger.info(
                    "%s: sample_data %s names prev '%s', which is not in the table; stopping there",
                    self.table_dir,
                    out[-1],
                    prev,
                )
                break
            out.append(prev)
            i = j
        return out

    def sample_data_window(self, sd_token: str, before: int, after: int) -> list[str]:
        """sample_data tokens around ``sd_token`` along its ``prev``/``next`` chain (one scene
        and one channel), in time order: up to ``before`` earlier rows, the row itself, up to
        ``after`` later rows. The walk stops at the chain's ends and at a link that names no
        row (logged)."""
        if before < 0 or after < 0:
            raise AVFusionError(
                f"sample_data_window: before and after must be >= 0, got {before}, {after}"
            )
        table: _Table[_SampleDataRow] = self._table("sample_data")
        if sd_token not in table.index:
            raise LogFormatError(f"{table.path}: no row with token '{sd_token}'")

        def walk(link: str, n: int) -> list[str]:
            out: list[str] = []
            i = table.index[sd_token]
            while len(out) < n:
                nxt = getattr(table.rows[i], link)
                if not nxt:
                    break
                j = table.index.get(nxt)
                if j is None:
                    logger.info(
                        "%s: sample_data %s names %s '%s', which is not in the table",
                        self.table_dir,
                        table.rows[i].token,
                        link,
                        nxt,
                    )
                    break
                out.append(nxt)
                i = j
            return out

        return [*reversed(walk("prev", before)), sd_token, *walk("next", after)]

    def sample_time_ns(self, sample_token_or_index: str | int) -> int:
        """The sample's ``timestamp`` (int ns): the time its annotations describe."""
        return int(self._sample_t_ns[self.sample_index(sample_token_or_index)])

    def scene_of(self, sample_token_or_index: str | int) -> Row:
        """The scene row a sample belongs to."""
        sample = self._samples[self.sample_index(sample_token_or_index)]
        return self.get("scene", sample.scene_token, f"sample {sample.token}")

    def timestamps(self, sensor: str) -> npt.NDArray[np.int64]:
        if sensor not in self._stream:
            raise LogFormatError(
                f"{self.table_dir}: no sample_data of channel '{sensor}' (channels: {', '.join(sorted(self._stream))})"
            )
        return self._sd_t_ns[self._stream[sensor]]

    def sample_data_tokens(self, sensor: str) -> list[str]:
        """All sample_data tokens (keyframes and sweeps) of a channel, in time order."""
        rows: list[_SampleDataRow] = self._table("sample_data").rows
        return [rows[i].token for i in self._stream.get(sensor, np.zeros(0, np.int64)).tolist()]

    def iter_points(self, channel: str, *, with_lidarseg: bool = False) -> Iterator[PointCloud]:
        """Every LiDAR or radar cloud of ``channel`` (keyframes and sweeps) in time order,
        each with its own time and ego pose; decoded one at a time as the iteration goes."""
        if channel not in self._stream:
            raise LogFormatError(
                f"{self.table_dir}: no sample_data of channel '{channel}' (channels: {', '.join(sorted(self._stream))})"
            )
        if self._sensors[channel].is_image:
            raise AVFusionError(f"iter_points: '{channel}' is a camera; use load_image")
        for token in self.sample_data_tokens(channel):
            yield self.load_points(token, with_lidarseg=with_lidarseg)

    @property
    def poses(self) -> Trajectory:
        if self._poses is None:
            table: _Table[_EgoPoseRow] = self._table("ego_pose")
            rows = table.rows
            if self._scene_token is not None:
                sd_rows: list[_SampleDataRow] = self._table("sample_data").rows
                wanted = {
                    sd_rows[i].ego_pose_token for s in self._stream.values() for i in s.tolist()
                }
                rows = [r for r in rows if r.token in wanted]
            if not rows:
                raise LogFormatError(f"{table.path}: no ego poses")
            n = len(rows)
            t = _ns_column(rows, table.path, "ego_pose")
            q = np.fromiter(chain.from_iterable(map(_QUAT, rows)), np.float64, 4 * n)
            tr = np.fromiter(chain.from_iterable(map(_TRANSLATION, rows)), np.float64, 3 * n)
            q, tr = q.reshape(n, 4), tr.reshape(n, 3)
            order = np.argsort(t, kind="stable")
            t, q, tr = t[order], q[order], tr[order]
            keep = np.concatenate([[True], np.diff(t) > 0])
            if not keep.all():
                logger.info(
                    "%s: %d ego poses share a timestamp with an earlier one; kept the first",
                    self.table_dir,
                    int((~keep).sum()),
                )
            try:
                self._poses = Trajectory(
                    t[keep], q[keep], tr[keep], name=f"{self.version} ego poses"
                )
            except AVFusionError as exc:
                raise LogFormatError(f"{table.path}: {exc}") from exc
        return self._poses

    # -- observations ------------------------------------------------------------------------
    def _sd_row(self, sd_token: str) -> _SampleDataRow:
        row: _SampleDataRow = self._row("sample_data", sd_token)
        return row

    def _sd_t(self, sd_token: str) -> int:
        return int(self._sd_t_ns[self._table("sample_data").index[sd_token]])

    def _ego_pose_of(self, sd: _SampleDataRow) -> Transform:
        ep: _EgoPoseRow = self._row("ego_pose", sd.ego_pose_token, f"sample_data {sd.token}")
        return _transform(
            _QUAT(ep), _TRANSLATION(ep), f"ego_pose {ep.token} of sample_data {sd.token}"
        )

    def ego_pose(self, sd_token: str) -> Transform:
        """``world_from_ego`` at the capture of one sample_data row (its ``ego_pose`` row)."""
        return self._ego_pose_of(self._sd_row(sd_token))

    def _lidarseg_file(self, sd_token: str) -> Path | None:
        key = "lidarseg_by_sd"
        if key not in self._derived:
            self._derived[key] = {
                str(r.get("sample_data_token") or r.get("token")): r
                for r in self._extension("lidarseg")
            }
        row = self._derived[key].get(sd_token)
        return (
            None
            if row is None
            else self.blob_path(row.get("filename"), f"lidarseg row of sample_data {sd_token}")
        )

    def _blob(self, sd: _SampleDataRow, sensor: Sensor, what: str = "file") -> Path:
        path = self.blob_path(sd.filename, f"sample_data {sd.token}")
        if not path.is_file():
            raise LogFormatError(
                f"{path}: {what} of sample_data {sd.token} ({sensor.name}) is missing"
            )
        return path

    def load_points(
        self,
        sd_token: str,
        *,
        with_pose: bool = True,
        with_lidarseg: bool = True,
        radar_filters: RadarFilters | None = None,
    ) -> PointCloud:
        """The point cloud of one LiDAR or radar sample_data row, in its sensor frame.

        Radar clouds are filtered by ``radar_filters``, else by the log's (none by default).
        """
        sd = self._sd_row(sd_token)
        sensor = self.sensor_for(sd.calibrated_sensor_token)
        path = self._blob(sd, sensor)
        t_ns = self._sd_t(sd_token)
        if path.name.endswith(".pcd"):
            cloud = read_pcd(path, sensor, t_ns)
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
        times = self._point_times(path, sensor, len(cloud), sd_token)
        if times is not None:
            attrs[POINT_TIME_ATTR] = times
        pose = self._ego_pose_of(sd) if with_pose else None
        out = PointCloud(cloud.xyz, sensor, t_ns, attrs, pose, sd_token)
        filters = radar_filters if radar_filters is not None else self.radar_filters
        if filters is not None and sensor.modality == "radar":
            try:
                out = filters.apply(out).cloud
            except LogFormatError as exc:
                raise LogFormatError(f"{path}: sample_data {sd_token}: {exc}") from exc
        return out

    def _point_times(
        self, path: Path, sensor: Sensor, n_points: int, sd_token: str
    ) -> npt.NDArray[np.int32] | None:
        """Per-point capture times (int32 ns relative to the stamp) from ``<file>.time.bin``,
        when ``avfusion_sensor.json`` declares ``per_point_time`` for this LiDAR."""
        spec = self.sensor_extras.get(sensor.name, {}).get("per_point_time")
        if not spec:
            return None
        suffix = (
            str(spec.get("file_suffix", ".time.bin")) if isinstance(spec, dict) else ".time.bin"
        )
        times_path = path.with_name(path.name + suffix)
        if not times_path.is_file():
            raise LogFormatError(
                f"{times_path}: per-point times of sample_data {sd_token} ({sensor.name}) are missing "
                "(avfusion_sensor.json declares per_point_time)"
            )
        times = np.fromfile(times_path, dtype="<i4")
        if times.size != n_points:
            raise LogFormatError(
                f"{times_path}: {times.size} per-point times for {n_points} points of sample_data {sd_token}"
            )
        return times.astype(np.int32, copy=False)

    def load_image(self, sd_token: str) -> Image:
        """The (lazily decoded) image of one camera/thermal sample_data row."""
        sd = self._sd_row(sd_token)
        sensor = self.sensor_for(sd.calibrated_sensor_token)
        path = self.blob_path(sd.filename, f"sample_data {sd_token}")

        def loader() -> npt.NDArray[Any]:
            if not path.is_file():
                raise LogFormatError(
                    f"{path}: image of sample_data {sd_token} ({sensor.name}) is missing"
                )
            return read_image_file(path)

        return Image(
            sensor,
            self._sd_t(sd_token),
            self._ego_pose_of(sd),
            loader=loader,
            path=str(path),
            token=sd_token,
        )

    # -- labels ------------------------------------------------------------------------------
    def _box_velocity(
        self, ann: _SampleAnnotationRow, max_time_diff_s: float = _MAX_VELOCITY_TIME_DIFF_S
    ) -> npt.NDArray[np.float64]:
        """The devkit's ``box_velocity``: centred difference over prev/next annotations."""
        table: _Table[_SampleAnnotationRow] = self._table("sample_annotation")
        i_prev, i_next = table.index.get(ann.prev or ""), table.index.get(ann.next or "")
        prev = None if i_prev is None else table.rows[i_prev]
        nxt = None if i_next is None else table.rows[i_next]
        if prev is None and nxt is None:
            return np.full(3, np.nan)
        first = prev if prev is not None else ann
        last = nxt if nxt is not None else ann
        samples: _Table[_SampleRow] = self._table("sample")
        i_first, i_last = (
            samples.index.get(first.sample_token),
            samples.index.get(last.sample_token),
        )
        if i_first is None or i_last is None:
            return np.full(3, np.nan)
        where = f"{samples.path}: sample"
        dt_s = (
            _us_to_ns(samples.rows[i_last].timestamp, where)
            - _us_to_ns(samples.rows[i_first].timestamp, where)
        ) * 1e-9
        limit = max_time_diff_s * (2.0 if prev is not None and nxt is not None else 1.0)
        if dt_s > limit or dt_s <= 0:
            return np.full(3, np.nan)
        return (np.array(_TRANSLATION(last)) - np.array(_TRANSLATION(first))) / dt_s

    def _annotations_by_sample(self) -> dict[str, list[int]]:
        key = "ann_by_sample"
        if key not in self._derived:
            by: dict[str, list[int]] = defaultdict(list)
            for i, s in enumerate(
                map(attrgetter("sample_token"), self._table("sample_annotation").rows)
            ):
                by[s].append(i)
            self._derived[key] = by
        out: dict[str, list[int]] = self._derived[key]
        return out

    def boxes3d(self, sample_token_or_index: str | int) -> Boxes3D:
        """The sample's annotations as world-frame boxes (size l, w, h)."""
        sample = self._samples[self.sample_index(sample_token_or_index)]
        table: _Table[_SampleAnnotationRow] = self._table("sample_annotation")
        anns = [table.rows[i] for i in self._annotations_by_sample().get(sample.token, [])]
        if not anns:
            return Boxes3D.empty("world")
        visibility: _Table[_VisibilityRow] = self._table("visibility", optional=True)
        vis_level = {r.token: r.level or r.token for r in visibility.rows}
        center = np.array([_TRANSLATION(a) for a in anns], dtype=np.float64)
        wlh = np.array([_SIZE_WLH(a) for a in anns], dtype=np.float64)
        size = wlh[:, [1, 0, 2]]
        rot = np.array([_QUAT(a) for a in anns], dtype=np.float64)
        vel = np.array([self._box_velocity(a) for a in anns]).reshape(-1, 3)
        label, track, vis, attr = [], [], [], []
        for ann in anns:
            by_ann = f"sample_annotation {ann.token}"
            instance: _InstanceRow = self._row("instance", ann.instance_token, by_ann)
            category: _CategoryRow = self._row(
                "category", instance.category_token, f"instance {instance.token}"
            )
            label.append(category.name)
            track.append(instance.token)
            vis_token = ann.visibility_token or ""
            vis.append(vis_level.get(vis_token, vis_token))
            attr.append(
                ",".join(self._row("attribute", a, by_ann).name for a in ann.attribute_tokens)
            )
        try:
            return Boxes3D(
                center,
                size,
                rot,
                np.array(label, dtype=np.str_),
                np.array(track, dtype=np.str_),
                "world",
                vel,
                np.array([a.token for a in anns], dtype=np.str_),
                {
                    "num_lidar_pts": np.array([a.num_lidar_pts for a in anns], dtype=np.int64),
                    "num_radar_pts": np.array([a.num_radar_pts for a in anns], dtype=np.int64),
                    "visibility": np.array(vis, dtype=np.str_),
                    "attribute": np.array(attr, dtype=np.str_),
                },
            )
        except AVFusionError as exc:
            raise LogFormatError(
                f"{table.path}: annotations of sample {sample.token}: {exc}"
            ) from exc

    def boxes2d(self, sd_token: str, channel: str) -> Boxes2D | None:
        """``avfusion_box2d.json`` boxes of one camera sample_data row (None when absent)."""
        key = "box2d_by_sd"
        if key not in self._derived:
            by: dict[str, list[Row]] = defaultdict(list)
            for r in self._extension("avfusion_box2d"):
                by[str(r.get("sample_data_token"))].append(r)
            self._derived[key] = by
        rows = self._derived[key].get(sd_token)
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
        data = self._keyframe_data.get(sample.token, {})
        sensors: dict[str, Sensor] = {}
        points: dict[str, PointCloud] = {}
        images: dict[str, Image] = {}
        boxes2d: dict[str, Boxes2D] = {}
        for channel, sd_token in sorted(data.items()):
            sensor = self.sensor_for(self._sd_row(sd_token).calibrated_sensor_token)
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
            t_ns = self._sd_t(ref_token)
            world_from_ego: Transform | None = self._ego_pose_of(self._sd_row(ref_token))
        else:
            t_ns = int(self._sample_t_ns[i])
            world_from_ego = None
        times = {ch: self._sd_t(tok) - t_ns for ch, tok in data.items()}
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
            sample.token,
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
        *,
        radar_filters: RadarFilters | None = None,
    ) -> PointCloud:
        """The keyframe and up to ``n_sweeps - 1`` earlier sweeps of ``sensor`` in the frame of
        ``ref_sensor`` at its keyframe time, like the devkit's ``from_file_multisweep``.

        Each sweep: points with |x| < r and |y| < r (sensor frame, compared in the points'
        precision, as numpy does) are removed, then ``ref_from_sweep = ref_from_ego ·
        ego_from_world(t_ref) · world_from_ego(t_sweep) · ego_from_sensor`` is applied
        (composed once per sweep, float64 maths, float32 result). ``attrs["time_lag_s"]``
        (float32) is t_ref − t_sweep in seconds; ``attrs["sweep"]`` the sweep number
        (0 = keyframe); the other attributes are those every sweep has (LiDAR: intensity,
        ring). ``.pcd.bin`` sweeps are memory-mapped and each goes through one kernel pass
        (``avfusion.io._kernels``) that writes straight into the aggregate; radar (``.pcd``)
        sweeps are decoded (and filtered: ``radar_filters``, else the log's) like ``load_points``.
        """
        if n_sweeps < 1:
            raise AVFusionError(f"aggregate_sweeps: n_sweeps must be >= 1, got {n_sweeps}")
        i = self.sample_index(sample_token_or_index)
        data = self._keyframe_data.get(self._samples[i].token, {})
        if ref_sensor not in data:
            raise LogFormatError(
                f"{self.table_dir}: sample {self._samples[i].token} has no keyframe of '{ref_sensor}'"
            )
        ref_sd = self._sd_row(data[ref_sensor])
        ref = self.sensor_for(ref_sd.calibrated_sensor_token)
        world_from_ref_ego = self._ego_pose_of(ref_sd)
        ref_from_world = (world_from_ref_ego @ ref.ego_from_sensor).inverse().as_matrix()
        ref_t_ns = self._sd_t(ref_sd.token)
        tokens = self.sweeps(i, sensor, n_sweeps)
        sweeps = [self._sd_row(tok) for tok in tokens]
        sweep_sensors = [self.sensor_for(sd.calibrated_sensor_token) for sd in sweeps]
        mats = (
            ref_from_world
            @ self._world_from_ego(sweeps)
            @ np.stack([s.ego_from_sensor.as_matrix() for s in sweep_sensors])
        )
        t_ns = np.array([self._sd_t(tok) for tok in tokens], dtype=np.int64)
        lags = ((ref_t_ns - t_ns) * 1e-9).astype(np.float32)
        paths = [self._blob(sd, s) for sd, s in zip(sweeps, sweep_sensors, strict=True)]
        if not any(p.name.endswith(".pcd") for p in paths):
            records = [_map_lidar_bin(p) for p in paths]
            n_read = sum(len(r) for r in records)
            stack = filter_transform_sweeps(records, mats, min_distance_m, lags)
            attrs: dict[str, npt.NDArray[Any]] = dict(zip(_LIDAR_EXTRA, stack.extra, strict=True))
        else:
            clouds = [
                self.load_points(
                    tok, with_pose=False, with_lidarseg=False, radar_filters=radar_filters
                )
                for tok in tokens
            ]
            n_read = sum(len(c) for c in clouds)
            stack, attrs = _aggregate_decoded(clouds, mats, min_distance_m, lags)
        attrs["time_lag_s"] = stack.lag
        attrs["sweep"] = stack.sweep
        logger.debug(
            "aggregate_sweeps %s: %d sweeps, %d points kept, %d within %.2f m removed",
            sensor,
            len(sweeps),
            len(stack.xyz),
            n_read - len(stack.xyz),
            min_distance_m,
        )
        return PointCloud(stack.xyz, ref, ref_t_ns, attrs, world_from_ref_ego, ref_sd.token)

    def _world_from_ego(self, sds: Sequence[_SampleDataRow]) -> npt.NDArray[np.float64]:
        """(S, 4, 4) ``world_from_ego`` matrices of sample_data rows, from their ego poses."""
        poses: list[_EgoPoseRow] = [
            self._row("ego_pose", sd.ego_pose_token, f"sample_data {sd.token}") for sd in sds
        ]
        out = np.zeros((len(poses), 4, 4))
        out[:, 3, 3] = 1.0
        out[:, :3, 3] = np.array([_TRANSLATION(p) for p in poses]).reshape(-1, 3)
        try:
            out[:, :3, :3] = matrix_from_quaternion(np.array([_QUAT(p) for p in poses]))
        except CalibrationError as exc:
            bad = min(poses, key=lambda p: float(np.linalg.norm(_QUAT(p))))
            raise LogFormatError(
                f"{self._table('ego_pose').path}: ego_pose {bad.token}: bad rotation {list(_QUAT(bad))}: {exc}"
            ) from exc
        return out


def _aggregate_decoded(
    clouds: list[PointCloud],
    mats: npt.NDArray[np.float64],
    min_distance_m: float,
    lags: npt.NDArray[np.float32],
) -> tuple[SweepStack, dict[str, npt.NDArray[Any]]]:
    """``aggregate_sweeps`` for decoded clouds (radar ``.pcd``): the kernel moves xyz; the 1-D
    attributes that every cloud has follow the same keep mask."""
    dtype = np.result_type(*(c.xyz.dtype for c in clouds))
    records = [np.ascontiguousarray(c.xyz, dtype=dtype) for c in clouds]
    stack = filter_transform_sweeps(records, mats, min_distance_m, lags)
    r = dtype.type(min_distance_m)
    keeps = [~((np.abs(x[:, 0]) < r) & (np.abs(x[:, 1]) < r)) for x in records]
    names = set.intersection(*(set(c.attrs) for c in clouds)) if clouds else set()
    attrs = {
        name: np.concatenate([c.attrs[name][k] for c, k in zip(clouds, keeps, strict=True)])
        for name in sorted(names)
        if all(c.attrs[name].ndim == 1 for c in clouds)
    }
    return stack, attrs


def _reopen_nuscenes(
    table_dir: str,
    version: str,
    scene: str | None,
    ref_sensor: str,
    radar_filters: RadarFilters | None,
    calibration: Mapping[str, Any] | None = None,
) -> NuScenesLog:
    """Unpickling of ``NuScenesLog`` (see ``NuScenesLog.__reduce__``)."""
    return NuScenesLog(
        table_dir, version, scene=scene, ref_sensor=ref_sensor, radar_filters=radar_filters,
        calibration=calibration,
    )  # fmt: skip


def open_nuscenes(
    path: str | os.PathLike[str], version: str | None = None, **kwargs: Any
) -> NuScenesLog:
    """Open a nuScenes-style root (or table folder) as a ``NuScenesLog``."""
    return NuScenesLog(path, version, **kwargs)
