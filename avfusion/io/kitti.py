"""KITTI object-detection and raw-recording layouts as a ``Log``.

Two layouts are read:

**Object layout** (``KittiObjectLog``): a split folder (``training/`` or ``testing/``, or a
folder holding them) with ``velodyne/NNNNNN.bin``, ``image_2/NNNNNN.png`` (optional
``image_0``, ``image_1``, ``image_3``), ``calib/NNNNNN.txt`` and, in ``training``,
``label_2/NNNNNN.txt``. One ``Frame`` per velodyne scan, in frame-id order.

* Ego frame = the Velodyne frame (x forward, y left, z up); ``VELODYNE.ego_from_sensor`` is the
  identity.
* KITTI object frames are unrelated snapshots with no pose or time track. The pose track is
  therefore the identity (``world`` = ``ego`` for every frame) and times are synthetic:
  ``t_ns = frame id × 100 ms`` (``OBJECT_FRAME_STEP_NS``). When the split folder holds a
  ``timestamps.txt`` (KITTI date strings, line k ↔ frame id k), its times are used instead.
* Calibration is per frame (frames come from different drives); ``Frame.sensors`` carries the
  frame's own calibration, and ``KittiObjectLog.sensors`` that of the first frame. Each camera's
  image size is read from its PNG header, per frame.

**Raw layout** (``KittiRawLog``): a ``YYYY_MM_DD_drive_NNNN_sync`` folder with
``velodyne_points/``, ``image_0x/`` and ``oxts/`` (each ``data/`` + ``timestamps.txt``), and the
date folder's ``calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt`` and ``calib_imu_to_velo.txt``.
One ``Frame`` per velodyne scan; every observation keeps its own time stamp and ego pose.

* Ego frame = the IMU/GPS (OXTS) frame (x forward, y left, z up).
* Times: the ``timestamps.txt`` date strings (``2011-09-26 13:02:25.964389445``) become int64
  nanoseconds exactly: the fraction is parsed as an integer, never as a float. KITTI writes the
  local clock of the recording car with no zone; we read it as if it were UTC, so absolute
  values are the clock reading and differences are exact. The velodyne stamp is the one in
  ``velodyne_points/timestamps.txt`` (the time the scanner faced forward, when the cameras fire).
* Poses: each OXTS packet (``lat lon alt roll pitch yaw`` ... 30 values) gives ``world_from_ego``
  with the KITTI devkit's convention (``convertOxtsToPose.m``, pykitti): a Mercator projection
  with scale ``s = cos(lat₀)`` of the first packet, ``x = s·R·lon·π/180``,
  ``y = s·R·ln(tan((90 + lat)·π/360))`` (R = 6 378 137 m), ``z = alt``, and rotation
  ``Rz(yaw)·Ry(pitch)·Rx(roll)``. ``world`` is that east-north-up Mercator frame moved so the
  first packet sits at the origin (as pykitti; ``KittiRawLog.mercator_origin_m`` holds the shift).
* Images of the ``_sync`` folders are rectified: each camera's model comes from ``P_rect_0x``
  (no distortion) and its size from ``S_rect_0x``.

**Both layouts.** Sensors are ``VELODYNE`` (``lidar``; attribute ``intensity`` = reflectance)
and ``CAM0``–``CAM3`` (one per image folder present; ``CAM2`` is the left colour camera).
Camera ``x`` is rectified camera ``x``: ``P_x = K·[I | t_x]`` where ``t_x = K⁻¹·P_x[:, 3]`` is the
offset of rectified camera x from rectified camera 0, so
``cam_x_from_velo = [I | t_x] · R0_rect · Tr_velo_to_cam`` and
``CameraModel.project(cam_x_from_velo · p)`` equals ``P_x · R0_rect · Tr_velo_to_cam · p``.
Each camera's ``ego_from_sensor`` is stored so that ``ego_from_sensor.inverse()`` reproduces the
file's ``cam_from_ego`` matrix to float64 rounding, even though KITTI's rotations are only
orthonormal to about 1e-7 (see ``exact_inverse``).

Labels (object layout): each ``label_2`` line ``type truncated occluded alpha x1 y1 x2 y2 h w l
x y z ry [score]`` (rectified camera 0 frame, ``y`` at the box **bottom**, ``ry`` about the
camera's y axis) becomes a box of ``Boxes3D`` in the ``ego`` (Velodyne) frame with size
(l, w, h), centre at the box middle (rectified ``(x, y − h/2, z)``) and the box's x axis along
its length; ``DontCare`` rows only go to ``Boxes2D``. Every row gives a ``Boxes2D`` box of
``CAM2``. Columns ``truncated``, ``occluded``, ``alpha`` (and ``score``) are per-box attributes;
``token`` = ``"<frame id>:<line number>"`` links a 3D box to its 2D box.
"""

from __future__ import annotations

import calendar
import logging
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Trajectory, Transform, quaternion_from_matrix
from avfusion.errors import AVFusionError, CalibrationError, LogFormatError
from avfusion.io.calibration_file import apply_calibration, calibration_overrides
from avfusion.io.imagefile import read_image_file
from avfusion.types import Boxes2D, Boxes3D, Frame, Image, Log, PointCloud, Sensor

__all__ = [
    "CAMERA_NAMES",
    "OBJECT_FRAME_STEP_NS",
    "OXTS_FIELDS",
    "VELODYNE",
    "KittiCalibration",
    "KittiLabels",
    "KittiObjectLog",
    "KittiRawLog",
    "exact_inverse",
    "is_kitti_object",
    "is_kitti_raw",
    "open_kitti",
    "oxts_to_poses",
    "parse_kitti_timestamp",
    "read_calib_file",
    "read_kitti_label_file",
    "read_kitti_labels",
    "read_kitti_object_calib",
    "read_kitti_raw_calib",
    "read_kitti_timestamps",
    "read_oxts",
    "read_velodyne_bin",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

VELODYNE = "VELODYNE"
CAMERA_NAMES: tuple[str, ...] = ("CAM0", "CAM1", "CAM2", "CAM3")
#: Synthetic spacing of KITTI object frames (unrelated snapshots): frame id × 100 ms.
OBJECT_FRAME_STEP_NS = 100_000_000
EARTH_RADIUS_M = 6378137.0
#: The 30 values of one OXTS packet, in file order (KITTI raw devkit, dataformat.txt).
OXTS_FIELDS: tuple[str, ...] = (
    "lat",
    "lon",
    "alt",
    "roll",
    "pitch",
    "yaw",
    "vn",
    "ve",
    "vf",
    "vl",
    "vu",
    "ax",
    "ay",
    "az",
    "af",
    "al",
    "au",
    "wx",
    "wy",
    "wz",
    "wf",
    "wl",
    "wu",
    "pos_accuracy",
    "vel_accuracy",
    "navstat",
    "numsats",
    "posmode",
    "velmode",
    "orimode",
)
LABEL_COLUMNS: tuple[str, ...] = (
    "type",
    "truncated",
    "occluded",
    "alpha",
    "x1",
    "y1",
    "x2",
    "y2",
    "h",
    "w",
    "l",
    "x",
    "y",
    "z",
    "ry",
)
_CALIB_ALIASES = {
    "R_rect": "R0_rect",
    "Tr_velo_cam": "Tr_velo_to_cam",
    "Tr_imu_velo": "Tr_imu_to_velo",
}
_TIMESTAMP_RE = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*$"
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_POSE_TOLERANCE_NS = 100_000_000
# x forward (length), y left (width), z up (height) of our box frame, written in KITTI's object
# axes (x along the length, y down, z along the width).
_KITTI_OBJECT_FROM_BOX = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


# --------------------------------------------------------------------------------------------
# Small readers: time stamps, calibration files, velodyne scans, images, OXTS, labels
# --------------------------------------------------------------------------------------------


def parse_kitti_timestamp(text: str, where: str = "timestamp") -> int:
    """``"2011-09-26 13:02:25.964389445"`` → int nanoseconds since 1970-01-01 (read as UTC).

    The fraction (1 to 9 digits) is parsed as an integer, so no nanosecond is lost to floats.
    """
    m = _TIMESTAMP_RE.match(text)
    if m is None:
        raise LogFormatError(
            f"{where}: '{text.strip()}' is not a KITTI time stamp (expected 'YYYY-MM-DD HH:MM:SS.fffffffff')"
        )
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise LogFormatError(f"{where}: '{text.strip()}' has an out-of-range date or time field")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0") or "0")


def read_kitti_timestamps(path: str | os.PathLike[str]) -> npt.NDArray[np.int64]:
    """All time stamps of a KITTI ``timestamps.txt`` (one date string per line) as int64 ns.

    Blank lines at the end are ignored; a blank line in the middle is an error.
    """
    p = Path(path)
    lines = _read_lines(p, "time stamp file")
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.empty(len(lines), dtype=np.int64)
    for i, line in enumerate(lines):
        out[i] = parse_kitti_timestamp(line, f"{p}: line {i + 1}")
    return out


def _read_lines(p: Path, what: str) -> list[str]:
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LogFormatError(f"{p}: {what} is missing") from exc
    except UnicodeDecodeError as exc:
        raise LogFormatError(f"{p}: {what} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise LogFormatError(f"{p}: cannot read {what}: {exc.strerror or exc}") from exc
    return text.splitlines()


@dataclass(frozen=True)
class _CalibEntries:
    """The ``key: values`` lines of one KITTI calibration file, converted on request."""

    path: Path
    entries: Mapping[str, tuple[int, str]]  # key -> (line number, text after the colon)

    def has(self, key: str) -> bool:
        return key in self.entries

    def values(self, key: str, count: int) -> F64:
        if key not in self.entries:
            known = ", ".join(self.entries) or "none"
            raise CalibrationError(
                f"{self.path}: calibration line '{key}:' is missing (expected {count} values; lines present: {known})"
            )
        line_no, text = self.entries[key]
        parts = text.split()
        try:
            values = np.array([float(v) for v in parts], dtype=np.float64)
        except ValueError as exc:
            raise CalibrationError(
                f"{self.path}: line {line_no} '{key}:' has a non-numeric value ({exc}); expected {count} numbers"
            ) from exc
        if values.size != count:
            raise CalibrationError(
                f"{self.path}: line {line_no} '{key}:' has {values.size} values, expected {count}"
            )
        if not np.all(np.isfinite(values)):
            raise CalibrationError(
                f"{self.path}: line {line_no} '{key}:' has non-finite values {values.tolist()}"
            )
        return values


def read_calib_file(path: str | os.PathLike[str]) -> _CalibEntries:
    """The ``key: values`` lines of a KITTI calibration text file.

    Values are converted (and checked: count, numbers) only when asked for with ``.values(key,
    count)``, so lines such as ``calib_time: 09-Jan-2012 13:57:47`` do not get in the way. The
    tracking dataset's names ``R_rect``, ``Tr_velo_cam``, ``Tr_imu_velo`` are accepted as
    ``R0_rect``, ``Tr_velo_to_cam``, ``Tr_imu_to_velo``.
    """
    p = Path(path)
    entries: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(_read_lines(p, "calibration file"), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        key = key.strip()
        if not sep or not key or " " in key:
            raise CalibrationError(
                f"{p}: line {i} is not a 'name: values' calibration line: {line.strip()[:60]!r}"
            )
        key = _CALIB_ALIASES.get(key, key)
        if key in entries:
            raise CalibrationError(
                f"{p}: line {i} repeats '{key}:' (first on line {entries[key][0]})"
            )
        entries[key] = (i, rest)
    return _CalibEntries(p, entries)


def exact_inverse(transform: Transform) -> Transform:
    """``b_from_a`` whose ``inverse()`` gives back ``transform`` to float64 rounding.

    ``Transform.inverse`` uses Rᵀ, exact only for an exactly orthonormal R. KITTI's rotations are
    orthonormal to about 1e-7, enough that Rᵀ·t differs from R⁻¹·t by ~1e-8 m. Here the rotation
    is Rᵀ and the translation −R⁻¹·t, so inverting back yields (R, t) itself.
    """
    r = transform.rotation
    return Transform(r.T.copy(), -np.asarray(np.linalg.solve(r, transform.translation), np.float64))


def _rigid(matrix: F64, where: str) -> Transform:
    m = np.asarray(matrix, dtype=np.float64)
    try:
        return Transform(m[:3, :3], m[:3, 3])
    except CalibrationError as exc:
        raise CalibrationError(f"{where}: {exc}") from exc


def _camera_index(camera: str | int) -> int:
    if isinstance(camera, int) and 0 <= camera <= 3:
        return camera
    if isinstance(camera, str) and camera in CAMERA_NAMES:
        return CAMERA_NAMES.index(camera)
    raise CalibrationError(f"KITTI camera must be 0-3 or one of {CAMERA_NAMES}, got {camera!r}")


@dataclass(frozen=True, eq=False)
class KittiCalibration:
    """The calibration of one KITTI frame (object layout) or drive (raw layout).

    ``P`` maps ``"P0"``..``"P3"`` (those present) to the 3×4 rectified projection matrices,
    ``R0_rect`` (3×3) rectifies camera 0, ``Tr_velo_to_cam`` (3×4) maps Velodyne points to
    camera 0, ``Tr_imu_to_velo`` (3×4, optional) IMU points to the Velodyne frame.
    ``image_sizes`` (raw layout, from ``S_rect_0x``) maps camera names to (width, height).
    ``extra`` keeps the other numeric lines read (raw: ``K_0x``, ``D_0x``, ``R_0x``, ``T_0x`` ...).
    Checked on construction; no file I/O.
    """

    P: Mapping[str, F64]
    R0_rect: F64
    Tr_velo_to_cam: F64
    Tr_imu_to_velo: F64 | None = None
    image_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    extra: Mapping[str, F64] = field(default_factory=dict)
    source: str = "KITTI calibration"

    def __post_init__(self) -> None:
        where = self.source
        proj: dict[str, F64] = {}
        for key, value in self.P.items():
            m = np.array(value, dtype=np.float64).reshape(-1)
            if key not in ("P0", "P1", "P2", "P3") or m.size not in (12, 16):
                raise CalibrationError(
                    f"{where}: projection '{key}' must be one of P0-P3 with 3x4 values, got {m.size} values"
                )
            m = m.reshape(-1, 4)[:3]
            k = m[:, :3]
            if not np.allclose(k[2], [0.0, 0.0, 1.0], atol=1e-9) or k[1, 0] != 0.0:
                raise CalibrationError(
                    f"{where}: {key} must be K·[I | t] with K upper triangular and K[2] = (0, 0, 1), got {m.tolist()}"
                )
            if k[0, 0] <= 0 or k[1, 1] <= 0:
                raise CalibrationError(
                    f"{where}: {key} has non-positive focal lengths fx={k[0, 0]}, fy={k[1, 1]}"
                )
            proj[key] = m
        r0_values = np.array(self.R0_rect, dtype=np.float64).reshape(-1)
        if r0_values.size == 16:
            r0_values = r0_values.reshape(4, 4)[:3, :3].reshape(-1)
        if r0_values.size != 9:
            raise CalibrationError(f"{where}: R0_rect must be 3x3, got {r0_values.size} values")
        r0 = r0_values.reshape(3, 3)
        _rigid(np.hstack([r0, np.zeros((3, 1))]), f"{where}: R0_rect")
        tr = self._rigid34(self.Tr_velo_to_cam, "Tr_velo_to_cam")
        imu = (
            None
            if self.Tr_imu_to_velo is None
            else self._rigid34(self.Tr_imu_to_velo, "Tr_imu_to_velo")
        )
        object.__setattr__(self, "P", proj)
        object.__setattr__(self, "R0_rect", r0)
        object.__setattr__(self, "Tr_velo_to_cam", tr)
        object.__setattr__(self, "Tr_imu_to_velo", imu)
        object.__setattr__(self, "image_sizes", dict(self.image_sizes))
        object.__setattr__(self, "extra", dict(self.extra))

    def _rigid34(self, value: Any, name: str) -> F64:
        m = np.array(value, dtype=np.float64).reshape(-1)
        if m.size not in (12, 16):
            raise CalibrationError(f"{self.source}: {name} must be 3x4 (12 values), got {m.size}")
        m = m.reshape(-1, 4)[:3]
        _rigid(m, f"{self.source}: {name}")
        return m

    @property
    def cameras(self) -> tuple[str, ...]:
        """Names of the cameras with a projection matrix (``CAM0``..``CAM3``)."""
        return tuple(f"CAM{k[1]}" for k in sorted(self.P))

    def projection(self, camera: str | int) -> F64:
        """The 3×4 rectified projection matrix ``P_x`` of a camera (a copy)."""
        key = f"P{_camera_index(camera)}"
        if key not in self.P:
            raise CalibrationError(
                f"{self.source}: no {key} (camera {camera!r}) in the calibration"
            )
        return self.P[key].copy()

    def rect_from_velo(self) -> Transform:
        """Rectified camera 0 from Velodyne: ``R0_rect · Tr_velo_to_cam``."""
        velo_to_cam = _rigid(self.Tr_velo_to_cam, f"{self.source}: Tr_velo_to_cam")
        return Transform(self.R0_rect, np.zeros(3)) @ velo_to_cam

    def cam_from_rect(self, camera: str | int) -> Transform:
        """Rectified camera x from rectified camera 0: a translation by ``K⁻¹·P_x[:, 3]``."""
        p = self.projection(camera)
        return Transform(np.eye(3), np.asarray(np.linalg.solve(p[:, :3], p[:, 3]), np.float64))

    def cam_from_velo(self, camera: str | int) -> Transform:
        """Rectified camera x from Velodyne; with ``camera_model`` it reproduces ``P_x·R0_rect·Tr_velo_to_cam``."""
        return self.cam_from_rect(camera) @ self.rect_from_velo()

    def velo_from_imu(self) -> Transform:
        if self.Tr_imu_to_velo is None:
            raise CalibrationError(f"{self.source}: no Tr_imu_to_velo in the calibration")
        return _rigid(self.Tr_imu_to_velo, f"{self.source}: Tr_imu_to_velo")

    def camera_model(self, camera: str | int, width: int, height: int) -> CameraModel:
        """The rectified pinhole model of a camera (K from ``P_x``; no distortion)."""
        return CameraModel(self.projection(camera)[:, :3], width, height)


def read_kitti_object_calib(path: str | os.PathLike[str]) -> KittiCalibration:
    """A KITTI object ``calib/NNNNNN.txt``: ``P0``-``P3`` (12 values), ``R0_rect`` (9),
    ``Tr_velo_to_cam`` (12), ``Tr_imu_to_velo`` (12).

    ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` are required; the others are read when present.
    Problems raise ``CalibrationError`` naming the file, the line and what was expected.
    """
    entries = read_calib_file(path)
    where = str(entries.path)
    proj = {"P2": entries.values("P2", 12)}
    for key in ("P0", "P1", "P3"):
        if entries.has(key):
            proj[key] = entries.values(key, 12)
    return KittiCalibration(
        proj,
        entries.values("R0_rect", 9),
        entries.values("Tr_velo_to_cam", 12),
        entries.values("Tr_imu_to_velo", 12) if entries.has("Tr_imu_to_velo") else None,
        source=where,
    )


def _rt(entries: _CalibEntries) -> F64:
    return np.hstack([entries.values("R", 9).reshape(3, 3), entries.values("T", 3).reshape(3, 1)])


def read_kitti_raw_calib(calib_dir: str | os.PathLike[str]) -> KittiCalibration:
    """The three raw-layout calibration files of a date folder as one ``KittiCalibration``.

    ``calib_cam_to_cam.txt``: ``P_rect_0x`` (12), ``R_rect_00`` (9), ``S_rect_0x`` (2) for every
    camera with a ``P_rect_0x`` line, and ``K_0x`` (9), ``D_0x`` (5), ``R_0x`` (9), ``T_0x`` (3),
    ``S_0x`` (2) kept in ``extra`` when present. ``calib_velo_to_cam.txt`` and
    ``calib_imu_to_velo.txt``: ``R`` (9) and ``T`` (3).
    """
    d = Path(calib_dir)
    cam = read_calib_file(d / "calib_cam_to_cam.txt")
    velo = read_calib_file(d / "calib_velo_to_cam.txt")
    imu = read_calib_file(d / "calib_imu_to_velo.txt")
    proj: dict[str, F64] = {}
    sizes: dict[str, tuple[int, int]] = {}
    extra: dict[str, F64] = {}
    for i in range(4):
        key = f"P_rect_{i:02d}"
        if not cam.has(key):
            continue
        proj[f"P{i}"] = cam.values(key, 12)
        size = cam.values(f"S_rect_{i:02d}", 2)
        if np.any(size != np.round(size)) or np.any(size <= 0):
            raise CalibrationError(
                f"{cam.path}: S_rect_{i:02d} must be a positive integer width and height, got {size.tolist()}"
            )
        sizes[f"CAM{i}"] = (int(size[0]), int(size[1]))
        for name, n in (("K", 9), ("D", 5), ("R", 9), ("T", 3), ("S", 2)):
            if cam.has(f"{name}_{i:02d}"):
                extra[f"{name}_{i:02d}"] = cam.values(f"{name}_{i:02d}", n)
    if "P2" not in proj:
        raise CalibrationError(
            f"{cam.path}: calibration line 'P_rect_02:' is missing (expected 12 values)"
        )
    return KittiCalibration(
        proj,
        cam.values("R_rect_00", 9),
        _rt(velo),
        _rt(imu),
        image_sizes=sizes,
        extra=extra,
        source=str(d),
    )


def read_velodyne_bin(
    path: str | os.PathLike[str],
    sensor: Sensor,
    t_ns: int,
    world_from_ego: Transform | None = None,
    token: str = "",
) -> PointCloud:
    """A KITTI velodyne scan: float32 N×4 ``[x, y, z, reflectance]``.

    ``xyz`` is a contiguous float32 copy; ``intensity`` (reflectance, 0-1) a view of the buffer.
    A size that is not a multiple of 16 bytes raises ``LogFormatError`` (truncated file).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError as exc:
        raise LogFormatError(f"{p}: velodyne scan is missing") from exc
    except OSError as exc:
        raise LogFormatError(f"{p}: cannot read velodyne scan: {exc.strerror or exc}") from exc
    if size % 16:
        raise LogFormatError(
            f"{p}: velodyne scan of {size} bytes is not a whole number of points "
            "(16 bytes each: float32 x, y, z, reflectance): truncated or not a KITTI .bin"
        )
    data = np.fromfile(p, dtype="<f4").reshape(-1, 4)
    return PointCloud(
        np.ascontiguousarray(data[:, :3]),
        sensor,
        t_ns,
        {"intensity": data[:, 3]},
        world_from_ego,
        token,
    )


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG header (24 bytes); other formats are decoded."""
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except FileNotFoundError as exc:
        raise LogFormatError(f"{path}: image is missing") from exc
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    if len(head) == 24 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        if width > 0 and height > 0:
            return int(width), int(height)
        raise LogFormatError(f"{path}: PNG header gives an empty image ({width}x{height})")
    img = read_image_file(path)
    return int(img.shape[1]), int(img.shape[0])


def read_oxts(data_dir: str | os.PathLike[str], indices: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """OXTS packets ``data_dir/NNNNNNNNNN.txt`` for the given indices, as an (N, 30) array
    (columns ``OXTS_FIELDS``)."""
    d = Path(data_dir)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    out = np.empty((idx.size, len(OXTS_FIELDS)), dtype=np.float64)
    for row, i in enumerate(idx):
        p = d / f"{int(i):010d}.txt"
        lines = [ln for ln in _read_lines(p, "OXTS packet") if ln.strip()]
        if len(lines) != 1:
            raise LogFormatError(
                f"{p}: expected one line of {len(OXTS_FIELDS)} values, got {len(lines)} lines"
            )
        parts = lines[0].split()
        if len(parts) != len(OXTS_FIELDS):
            raise LogFormatError(
                f"{p}: OXTS packet has {len(parts)} values, expected {len(OXTS_FIELDS)} (lat lon alt roll pitch yaw ...)"
            )
        try:
            out[row] = [float(v) for v in parts]
        except ValueError as exc:
            raise LogFormatError(f"{p}: OXTS packet has a non-numeric value ({exc})") from exc
        if not np.all(np.isfinite(out[row, :6])):
            raise LogFormatError(f"{p}: OXTS position/orientation is not finite: {parts[:6]}")
    return out


def oxts_to_poses(
    oxts: npt.ArrayLike, origin_m: npt.ArrayLike | None = None
) -> tuple[F64, F64, F64]:
    """World-from-IMU rotations (N, 3, 3) and translations (N, 3) of OXTS packets (N, ≥6).

    KITTI devkit convention: Mercator scale ``cos(lat₀)`` from the first packet,
    ``x = s·R·lon·π/180``, ``y = s·R·ln(tan((90 + lat)·π/360))``, ``z = alt``,
    ``R = Rz(yaw)·Ry(pitch)·Rx(roll)``. Translations are relative to ``origin_m`` (default: the
    first packet's Mercator position), which is returned third.
    """
    o = np.asarray(oxts, dtype=np.float64)
    if o.ndim != 2 or o.shape[0] == 0 or o.shape[1] < 6:
        raise LogFormatError(f"oxts_to_poses: expected (N >= 1, >= 6) packets, got shape {o.shape}")
    lat, lon, alt, roll, pitch, yaw = (o[:, k] for k in range(6))
    scale = np.cos(lat[0] * np.pi / 180.0)
    x = scale * lon * np.pi * EARTH_RADIUS_M / 180.0
    y = scale * EARTH_RADIUS_M * np.log(np.tan((90.0 + lat) * np.pi / 360.0))
    t = np.stack([x, y, alt], axis=1)
    origin = t[0].copy() if origin_m is None else np.asarray(origin_m, dtype=np.float64)
    cr, sr, cp, sp, cy, sy = (
        np.cos(roll),
        np.sin(roll),
        np.cos(pitch),
        np.sin(pitch),
        np.cos(yaw),
        np.sin(yaw),
    )
    rot = np.empty((o.shape[0], 3, 3))
    # Rz(yaw) @ Ry(pitch) @ Rx(roll), written out.
    rot[:, 0, 0] = cy * cp
    rot[:, 0, 1] = cy * sp * sr - sy * cr
    rot[:, 0, 2] = cy * sp * cr + sy * sr
    rot[:, 1, 0] = sy * cp
    rot[:, 1, 1] = sy * sp * sr + cy * cr
    rot[:, 1, 2] = sy * sp * cr - cy * sr
    rot[:, 2, 0] = -sp
    rot[:, 2, 1] = cp * sr
    rot[:, 2, 2] = cp * cr
    return rot, t - origin, origin


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class KittiLabels:
    """The rows of one KITTI object label file, column-wise, as stored (rectified camera 0)."""

    type: npt.NDArray[np.str_]
    truncated: F64
    occluded: npt.NDArray[np.int64]
    alpha: F64
    bbox_xyxy: F64  # (N, 4) x1 y1 x2 y2 in image_2 pixels
    dimensions_hwl: F64  # (N, 3) h w l
    location: F64  # (N, 3) x y z, bottom centre of the box
    rotation_y: F64
    score: F64 | None
    line: npt.NDArray[np.int64]  # 1-based line numbers
    path: str

    def __len__(self) -> int:
        return int(self.type.shape[0])


def read_kitti_label_file(path: str | os.PathLike[str]) -> KittiLabels:
    """Parse a KITTI object label file (15 columns, or 16 with a trailing ``score``)."""
    p = Path(path)
    rows: list[list[float]] = []
    types: list[str] = []
    line_no: list[int] = []
    with_score: bool | None = None
    for i, line in enumerate(_read_lines(p, "label file"), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise LogFormatError(
                f"{p}: line {i} has {len(parts)} columns, expected 15 "
                "(type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry) or 16 (+ score)"
            )
        if with_score is None:
            with_score = len(parts) == 16
        elif with_score != (len(parts) == 16):
            raise LogFormatError(
                f"{p}: line {i} has {len(parts)} columns, earlier lines a different count"
            )
        try:
            rows.append([float(v) for v in parts[1:]])
        except ValueError as exc:
            raise LogFormatError(f"{p}: line {i} has a non-numeric value ({exc})") from exc
        types.append(parts[0])
        line_no.append(i)
    a = np.array(rows, dtype=np.float64).reshape(-1, 15 if with_score else 14)
    if not np.all(np.isfinite(a)):
        bad = line_no[int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])]
        raise LogFormatError(f"{p}: line {bad} has non-finite values")
    return KittiLabels(
        np.array(types, dtype=np.str_),
        a[:, 0].copy(),
        a[:, 1].astype(np.int64),
        a[:, 2].copy(),
        a[:, 3:7].copy(),
        a[:, 7:10].copy(),
        a[:, 10:13].copy(),
        a[:, 13].copy(),
        a[:, 14].copy() if with_score else None,
        np.array(line_no, dtype=np.int64),
        str(p),
    )


def read_kitti_labels(
    path: str | os.PathLike[str],
    calib: KittiCalibration,
    *,
    camera: str = "CAM2",
    frame: str = "ego",
    ego_from_velo: Transform | None = None,
    frame_id: str | None = None,
) -> tuple[Boxes3D, Boxes2D]:
    """A KITTI object label file as (``Boxes3D`` in ``frame``, ``Boxes2D`` of ``camera``).

    3D: every row except ``DontCare``; centre = rectified ``(x, y − h/2, z)`` (KITTI's y is the
    box bottom), size (l, w, h), the box's x axis along its length, rotation from ``ry`` about the
    camera's y axis, mapped to the Velodyne frame with ``calib.rect_from_velo()`` and then to
    ``frame`` with ``ego_from_velo`` (identity by default: ego = Velodyne). 2D: every row.
    """
    labels = read_kitti_label_file(path)
    fid = Path(path).stem if frame_id is None else frame_id
    tokens = np.array([f"{fid}:{n}" for n in labels.line], dtype=np.str_)
    attrs: dict[str, npt.NDArray[Any]] = {
        "truncated": labels.truncated,
        "occluded": labels.occluded,
        "alpha": labels.alpha,
        "token": tokens,
    }
    if labels.score is not None:
        attrs["score"] = labels.score
    try:
        boxes2d = Boxes2D(
            labels.bbox_xyxy, labels.type, np.full(len(labels), "", np.str_), camera, attrs
        )
    except AVFusionError as exc:
        raise LogFormatError(f"{labels.path}: 2D boxes (x1 y1 x2 y2): {exc}") from exc
    keep = labels.type != "DontCare"
    h, w, length = (labels.dimensions_hwl[keep, k] for k in range(3))
    bottom = labels.location[keep]
    center_rect = bottom - np.stack([np.zeros_like(h), h / 2.0, np.zeros_like(h)], axis=1)
    ry = labels.rotation_y[keep]
    c, s = np.cos(ry), np.sin(ry)
    rot_y = np.zeros((ry.size, 3, 3))
    rot_y[:, 0, 0] = c
    rot_y[:, 0, 2] = s
    rot_y[:, 1, 1] = 1.0
    rot_y[:, 2, 0] = -s
    rot_y[:, 2, 2] = c
    rect_from_box = rot_y @ _KITTI_OBJECT_FROM_BOX
    try:
        in_rect = Boxes3D(
            center_rect,
            np.stack([length, w, h], axis=1),
            quaternion_from_matrix(rect_from_box) if ry.size else np.zeros((0, 4)),
            labels.type[keep],
            np.full(int(keep.sum()), "", np.str_),
            "rect",
            None,
            tokens[keep],
            {k: v[keep] for k, v in attrs.items() if k != "token"},
        )
    except AVFusionError as exc:
        raise LogFormatError(f"{labels.path}: 3D boxes (h w l x y z ry): {exc}") from exc
    frame_from_velo = Transform() if ego_from_velo is None else ego_from_velo
    frame_from_rect = frame_from_velo @ exact_inverse(calib.rect_from_velo())
    return in_rect.transformed(frame_from_rect, frame), boxes2d


# --------------------------------------------------------------------------------------------
# Sensors
# --------------------------------------------------------------------------------------------


def _sensors(
    calib: KittiCalibration,
    velo_from_ego: Transform | None,
    camera_sizes: Mapping[str, tuple[int, int]],
) -> dict[str, Sensor]:
    """VELODYNE plus one camera per entry of ``camera_sizes``.

    ``velo_from_ego`` None means ego = Velodyne. Each ``ego_from_sensor`` is stored with
    ``exact_inverse`` so that its ``inverse()`` is the file's ``sensor_from_ego`` matrix.
    """
    ego_from_velo = Transform() if velo_from_ego is None else exact_inverse(velo_from_ego)
    sensors = {VELODYNE: Sensor(VELODYNE, "lidar", ego_from_velo)}
    for name in CAMERA_NAMES:
        if name not in camera_sizes:
            continue
        width, height = camera_sizes[name]
        cam_from_ego = calib.cam_from_velo(name)
        if velo_from_ego is not None:
            cam_from_ego = cam_from_ego @ velo_from_ego
        try:
            model = calib.camera_model(name, width, height)
        except CalibrationError as exc:
            raise CalibrationError(f"{calib.source}: camera {name}: {exc}") from exc
        sensors[name] = Sensor(name, "camera", exact_inverse(cam_from_ego), model)
    return sensors


def _numbered_files(folder: Path, suffix: str) -> dict[int, Path]:
    """``NNNN<suffix>`` files of a folder by number; other names are counted and logged."""
    out: dict[int, Path] = {}
    skipped = 0
    for p in folder.iterdir():
        if p.suffix == suffix and p.stem.isdigit():
            out[int(p.stem)] = p
        else:
            skipped += 1
    if skipped:
        logger.info("%s: skipped %d files not named <number>%s", folder, skipped, suffix)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# Object layout
# --------------------------------------------------------------------------------------------


def _object_split_dir(p: Path, split: str | None) -> Path:
    if not p.is_dir():
        raise LogFormatError(f"{p}: not a directory (expected a KITTI object split folder)")
    if split is None and (p / "velodyne").is_dir():
        return p
    splits = [split] if split is not None else ["training", "testing"]
    for name in splits:
        if (p / name / "velodyne").is_dir():
            return p / name
    wanted = (
        f"'{split}/velodyne/'"
        if split
        else "'velodyne/', 'training/velodyne/' or 'testing/velodyne/'"
    )
    raise LogFormatError(f"{p}: no KITTI object layout here (expected {wanted})")


def is_kitti_object(path: str | os.PathLike[str]) -> bool:
    """True for a KITTI object split folder or a folder holding ``training/``/``testing/``."""
    p = Path(path)
    return p.is_dir() and any(
        (p / sub / "velodyne").is_dir() for sub in (".", "training", "testing")
    )


class KittiObjectLog(Log):
    """A KITTI object-detection split as a ``Log``: one frame per ``velodyne/NNNNNN.bin``.

    ``path`` is the split folder, or a folder holding ``training/`` (preferred) or ``testing/``;
    ``split`` chooses one explicitly. See the module docstring for frames, times and labels.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str | None = None,
        *,
        calibration: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    ) -> None:
        self.root = _object_split_dir(Path(path), split)
        self._calibration = calibration_overrides(calibration, self.root)
        self.split = self.root.name
        self._scans = _numbered_files(self.root / "velodyne", ".bin")
        if not self._scans:
            raise LogFormatError(f"{self.root / 'velodyne'}: no velodyne scans (NNNNNN.bin)")
        self._ids = np.fromiter(self._scans, dtype=np.int64, count=len(self._scans))
        self._image_dirs = {
            f"CAM{k}": self.root / f"image_{k}"
            for k in range(4)
            if (self.root / f"image_{k}").is_dir()
        }
        self._has_labels = (self.root / "label_2").is_dir()
        self._t_ns = self._frame_times()
        self._calib_cache: dict[int, KittiCalibration] = {}
        self._sensor_cache: dict[int, dict[str, Sensor]] = {}
        self._sensors = self.frame_sensors(0)
        self._poses = Trajectory(
            self._t_ns,
            np.tile([1.0, 0.0, 0.0, 0.0], (len(self._t_ns), 1)),
            np.zeros((len(self._t_ns), 3)),
            name=f"{self.root} (KITTI object: identity poses)",
        )
        logger.debug(
            "%s: %d KITTI object frames, cameras %s, labels %s",
            self.root,
            len(self),
            sorted(self._image_dirs),
            self._has_labels,
        )

    def __repr__(self) -> str:
        return f"KittiObjectLog({self.root}, {len(self)} frames, sensors={sorted(self._sensors)})"

    def _frame_times(self) -> npt.NDArray[np.int64]:
        stamps = self.root / "timestamps.txt"
        if not stamps.is_file():
            return self._ids * OBJECT_FRAME_STEP_NS
        t = read_kitti_timestamps(stamps)
        if t.size <= int(self._ids[-1]):
            raise LogFormatError(
                f"{stamps}: {t.size} time stamps, but frame {self._ids[-1]:06d} needs line {self._ids[-1] + 1}"
            )
        out = t[self._ids]
        bad = np.flatnonzero(np.diff(out) <= 0)
        if bad.size:
            raise LogFormatError(
                f"{stamps}: time stamps must increase with the frame id; frame {self._ids[bad[0] + 1]:06d} is not after frame {self._ids[bad[0]]:06d}"
            )
        return out

    # -- structure ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._scans)

    @property
    def frame_ids(self) -> list[str]:
        """The six-digit frame ids, in frame order."""
        return [f"{i:06d}" for i in self._ids]

    @property
    def sensors(self) -> Mapping[str, Sensor]:
        """The sensors with the first frame's calibration (each ``Frame`` has its own)."""
        return self._sensors

    @property
    def poses(self) -> Trajectory:
        return self._poses

    def timestamps(self, sensor: str) -> npt.NDArray[np.int64]:
        if sensor != VELODYNE and sensor not in self._image_dirs:
            known = ", ".join([VELODYNE, *sorted(self._image_dirs)])
            raise LogFormatError(f"{self.root}: no sensor '{sensor}' (sensors: {known})")
        return self._t_ns.copy()

    # -- per-frame files ---------------------------------------------------------------------
    def _path(self, folder: str, index: int, suffix: str) -> Path:
        return self.root / folder / f"{int(self._ids[index]):06d}{suffix}"

    def calibration(self, index: int) -> KittiCalibration:
        """The parsed ``calib/NNNNNN.txt`` of frame ``index`` (cached)."""
        i = self._check_index(index)
        cached = self._calib_cache.get(i)
        if cached is None:
            path = self._path("calib", i, ".txt")
            if not path.is_file():
                raise LogFormatError(f"{path}: calibration file of frame {i} is missing")
            cached = read_kitti_object_calib(path)
            self._calib_cache[i] = cached
        return cached

    def frame_sensors(self, index: int) -> dict[str, Sensor]:
        """VELODYNE and the cameras of frame ``index``, with its calibration and image sizes."""
        i = self._check_index(index)
        cached = self._sensor_cache.get(i)
        if cached is None:
            calib = self.calibration(i)
            sizes = {
                name: _image_size(self._path(folder.name, i, ".png"))
                for name, folder in self._image_dirs.items()
            }
            cached = apply_calibration(
                _sensors(calib, None, sizes), self._calibration, self._path("calib", i, ".txt")
            )
            self._sensor_cache[i] = cached
        return cached

    def __getitem__(self, index: int) -> Frame:
        i = self._check_index(index)
        fid = self.frame_ids[i]
        t_ns = int(self._t_ns[i])
        pose = Transform()
        sensors = self.frame_sensors(i)
        points = {
            VELODYNE: read_velodyne_bin(
                self._path("velodyne", i, ".bin"), sensors[VELODYNE], t_ns, pose, fid
            )
        }
        images: dict[str, Image] = {}
        for name, folder in self._image_dirs.items():
            path = self._path(folder.name, i, ".png")
            images[name] = Image(
                sensors[name],
                t_ns,
                pose,
                loader=lambda path=path: read_image_file(path),  # type: ignore[misc]
                path=str(path),
                token=fid,
            )
        boxes3d: Boxes3D | None = None
        boxes2d: dict[str, Boxes2D] = {}
        if self._has_labels:
            label_path = self._path("label_2", i, ".txt")
            if not label_path.is_file():
                raise LogFormatError(f"{label_path}: label file of frame {fid} is missing")
            boxes3d, b2d = read_kitti_labels(label_path, self.calibration(i), frame_id=fid)
            boxes2d["CAM2"] = b2d
        return Frame(
            t_ns,
            pose,
            sensors,
            points,
            images,
            boxes3d,
            boxes2d,
            {name: 0 for name in sensors},
            (),
            fid,
            i,
        )


# --------------------------------------------------------------------------------------------
# Raw layout
# --------------------------------------------------------------------------------------------

_RAW_CALIB_FILES = ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt")


def _is_drive_dir(p: Path) -> bool:
    return p.is_dir() and (p / "velodyne_points").is_dir()


def is_kitti_raw(path: str | os.PathLike[str]) -> bool:
    """True for a raw drive folder (``velodyne_points/``) or a date folder holding drives."""
    p = Path(path)
    if _is_drive_dir(p):
        return True
    return (
        p.is_dir()
        and (p / "calib_velo_to_cam.txt").is_file()
        and any(_is_drive_dir(d) for d in p.iterdir())
    )


def _raw_drive_dir(p: Path) -> Path:
    if _is_drive_dir(p):
        return p
    if not p.is_dir():
        raise LogFormatError(f"{p}: not a directory (expected a KITTI raw drive folder)")
    drives = sorted(d for d in p.iterdir() if _is_drive_dir(d))
    if not drives:
        raise LogFormatError(
            f"{p}: no KITTI raw drive here (expected a folder with velodyne_points/, e.g. 2011_09_26_drive_0001_sync)"
        )
    if len(drives) > 1:
        names = ", ".join(d.name for d in drives)
        raise LogFormatError(f"{p}: several drives ({names}); open one drive folder")
    return drives[0]


class KittiRawLog(Log):
    """A KITTI raw ``_sync`` drive as a ``Log``: one frame per velodyne scan.

    ``path`` is the drive folder (or a date folder holding exactly one drive). The calibration
    files are looked for in the drive folder, then in its parent (the date folder), unless
    ``calib_dir`` is given. ``pose_tolerance_ns`` is how far beyond the OXTS track an
    observation's pose may be extrapolated. See the module docstring for frames and poses.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        calib_dir: str | os.PathLike[str] | None = None,
        pose_tolerance_ns: int = _POSE_TOLERANCE_NS,
        calibration: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    ) -> None:
        self.root = _raw_drive_dir(Path(path))
        if calib_dir is None:
            calib_dir = (
                self.root
                if all((self.root / f).is_file() for f in _RAW_CALIB_FILES)
                else self.root.parent
            )
        self.calib_dir = Path(calib_dir)
        for name in _RAW_CALIB_FILES:
            if not (self.calib_dir / name).is_file():
                raise LogFormatError(
                    f"{self.calib_dir / name}: raw calibration file is missing (needed for {self.root.name})"
                )
        self.pose_tolerance_ns = int(pose_tolerance_ns)
        self.calibration = read_kitti_raw_calib(self.calib_dir)
        velo = self.root / "velodyne_points"
        self._scans, self._scan_t = self._stream(velo, ".bin")
        if not self._scans:
            txt = list((velo / "data").glob("*.txt")) if (velo / "data").is_dir() else []
            hint = (
                " (only .txt scans: an unsynced '_extract' drive; use the '_sync' one)"
                if txt
                else ""
            )
            raise LogFormatError(f"{velo / 'data'}: no velodyne scans (NNNNNNNNNN.bin){hint}")
        self._indices = np.fromiter(self._scans, dtype=np.int64, count=len(self._scans))
        self._t_ns = np.array([self._scan_t[i] for i in self._indices], dtype=np.int64)
        if np.any(np.diff(self._t_ns) <= 0):
            logger.warning(
                "%s: velodyne time stamps do not increase strictly with the file index", velo
            )
        self._images: dict[str, tuple[dict[int, Path], dict[int, int]]] = {}
        for k in range(4):
            folder = self.root / f"image_{k:02d}"
            if not folder.is_dir():
                continue
            name = f"CAM{k}"
            if name not in self.calibration.image_sizes:
                raise CalibrationError(
                    f"{self.calib_dir / 'calib_cam_to_cam.txt'}: calibration line 'P_rect_{k:02d}:' is missing "
                    f"(needed for {folder})"
                )
            self._images[name] = self._stream(folder, ".png")
        self._sensors = apply_calibration(
            _sensors(
                self.calibration,
                self.calibration.velo_from_imu(),
                {n: self.calibration.image_sizes[n] for n in self._images},
            ),
            calibration_overrides(calibration, self.root),
            self.root,
        )
        self._load_poses()
        logger.debug(
            "%s: %d KITTI raw frames, cameras %s", self.root, len(self), sorted(self._images)
        )

    def __repr__(self) -> str:
        return f"KittiRawLog({self.root}, {len(self)} frames, sensors={sorted(self._sensors)})"

    @staticmethod
    def _stream(folder: Path, suffix: str) -> tuple[dict[int, Path], dict[int, int]]:
        data = folder / "data"
        if not data.is_dir():
            raise LogFormatError(f"{data}: missing data folder")
        files = _numbered_files(data, suffix)
        stamps_path = folder / "timestamps.txt"
        stamps = read_kitti_timestamps(stamps_path)
        if files and stamps.size <= max(files):
            raise LogFormatError(
                f"{stamps_path}: {stamps.size} time stamps, but {files[max(files)].name} needs line {max(files) + 1}"
            )
        return files, {i: int(stamps[i]) for i in files}

    def _load_poses(self) -> None:
        oxts_dir = self.root / "oxts"
        if not oxts_dir.is_dir():
            raise LogFormatError(f"{oxts_dir}: missing (the OXTS packets give the ego pose track)")
        files, stamps = self._stream(oxts_dir, ".txt")
        if not files:
            raise LogFormatError(f"{oxts_dir / 'data'}: no OXTS packets (NNNNNNNNNN.txt)")
        idx = np.fromiter(files, dtype=np.int64, count=len(files))
        self.oxts = read_oxts(oxts_dir / "data", idx)
        t = np.array([stamps[i] for i in idx], dtype=np.int64)
        rot, trans, origin = oxts_to_poses(self.oxts)
        self.mercator_origin_m = origin
        keep = np.concatenate([[True], np.diff(t) > 0])
        if not keep.all():
            logger.info(
                "%s: %d OXTS packets are not after the previous one in time; dropped from the pose track",
                oxts_dir,
                int((~keep).sum()),
            )
        self.oxts_t_ns = t
        self._poses = Trajectory(
            t[keep], quaternion_from_matrix(rot[keep]), trans[keep], name=f"{oxts_dir} poses"
        )

    # -- structure ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._scans)

    @property
    def sensors(self) -> Mapping[str, Sensor]:
        return self._sensors

    @property
    def poses(self) -> Trajectory:
        return self._poses

    def timestamps(self, sensor: str) -> npt.NDArray[np.int64]:
        if sensor == VELODYNE:
            return self._t_ns.copy()
        if sensor in self._images:
            files, stamps = self._images[sensor]
            return np.array([stamps[i] for i in files], dtype=np.int64)
        known = ", ".join([VELODYNE, *sorted(self._images)])
        raise LogFormatError(f"{self.root}: no sensor '{sensor}' (sensors: {known})")

    def _pose(self, t_ns: int) -> Transform:
        return self._poses.at(t_ns, self.pose_tolerance_ns)

    def __getitem__(self, index: int) -> Frame:
        i = self._check_index(index)
        k = int(self._indices[i])
        t_ns = int(self._t_ns[i])
        pose = self._pose(t_ns)
        token = f"{self.root.name}:{k:010d}"
        points = {
            VELODYNE: read_velodyne_bin(self._scans[k], self._sensors[VELODYNE], t_ns, pose, token)
        }
        images: dict[str, Image] = {}
        diffs = {VELODYNE: 0}
        for name, (files, stamps) in self._images.items():
            path = files.get(k)
            if path is None:
                path = self.root / f"image_0{name[-1]}" / "data" / f"{k:010d}.png"
                raise LogFormatError(f"{path}: image of frame {k} ({name}) is missing")
            t_img = stamps[k]
            images[name] = Image(
                self._sensors[name],
                t_img,
                self._pose(t_img),
                loader=lambda path=path: read_image_file(path),  # type: ignore[misc]
                path=str(path),
                token=token,
            )
            diffs[name] = t_img - t_ns
        return Frame(t_ns, pose, self._sensors, points, images, None, {}, diffs, (), token, i)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def open_kitti(
    path: str | os.PathLike[str],
    *,
    calibration: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> KittiObjectLog | KittiRawLog:
    """Open a KITTI object split (or its parent) or a raw drive (or its date folder);
    ``calibration`` (a ``calibration.json`` path or sensor name → ``Transform``) replaces the
    extrinsics the calibration files give."""
    p = Path(path)
    if is_kitti_object(p):
        return KittiObjectLog(p, calibration=calibration)
    if is_kitti_raw(p):
        return KittiRawLog(p, calibration=calibration)
    raise LogFormatError(
        f"{p}: not a KITTI layout (expected velodyne/, training/velodyne/, testing/velodyne/, "
        "or a raw drive folder with velodyne_points/)"
    )
