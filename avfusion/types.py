"""The data model every layer shares: sensors, observations, labels, frames and logs.

Pure data: no file I/O and no heavy imports. ``Transform`` and ``CameraModel`` are geometry
primitives defined in ``avfusion.calibration`` (they depend only on numpy and ``errors``) and are
re-exported here so user code can take everything from one place.

Conventions (see DESIGN.md): times are int64 nanoseconds, lengths metres, angles radians;
transforms are named ``a_from_b``; box size is (length, width, height) along the box's own
x, y, z; box rotations are quaternions (w, x, y, z).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import (
    Trajectory,
    Transform,
    matrix_from_quaternion,
    quaternion_from_matrix,
)
from avfusion.errors import AVFusionError, CalibrationError, LogFormatError

if TYPE_CHECKING:
    from avfusion.fusion.projection import Projection

__all__ = [
    "MODALITIES",
    "Boxes2D",
    "Boxes3D",
    "CameraModel",
    "Frame",
    "Image",
    "Log",
    "Modality",
    "PointCloud",
    "Sensor",
    "Trajectory",
    "Transform",
]

Modality = Literal["lidar", "radar", "camera", "thermal"]
MODALITIES: tuple[str, ...] = ("lidar", "radar", "camera", "thermal")
IMAGE_MODALITIES = frozenset({"camera", "thermal"})
POINT_MODALITIES = frozenset({"lidar", "radar"})


def _check_int_ns(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AVFusionError(
            f"{what}: time must be integer nanoseconds, got {type(value).__name__} {value!r}"
        )
    return int(value)


# --------------------------------------------------------------------------------------------
# Sensors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Sensor:
    """One sensor of the rig.

    ``time_offset_ns`` converts the sensor's own stamps to the ego clock:
    ``t_ego_ns = t_stamp_ns + time_offset_ns``. Cameras and thermal cameras carry a ``camera``
    model; LiDAR and radar must not.
    """

    name: str
    modality: Modality
    ego_from_sensor: Transform
    camera: CameraModel | None = None
    time_offset_ns: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise CalibrationError("Sensor: name must be a non-empty string")
        if self.modality not in MODALITIES:
            raise CalibrationError(
                f"Sensor '{self.name}': unknown modality '{self.modality}' (expected one of {', '.join(MODALITIES)})"
            )
        if not isinstance(self.ego_from_sensor, Transform):
            raise CalibrationError(f"Sensor '{self.name}': ego_from_sensor must be a Transform")
        if self.modality in IMAGE_MODALITIES and self.camera is None:
            raise CalibrationError(
                f"Sensor '{self.name}': a {self.modality} sensor needs a CameraModel"
            )
        if self.modality in POINT_MODALITIES and self.camera is not None:
            raise CalibrationError(
                f"Sensor '{self.name}': a {self.modality} sensor has no CameraModel"
            )
        object.__setattr__(
            self, "time_offset_ns", _check_int_ns(self.time_offset_ns, f"Sensor '{self.name}'")
        )

    @property
    def is_image(self) -> bool:
        return self.modality in IMAGE_MODALITIES

    def __repr__(self) -> str:
        return f"Sensor({self.name}, {self.modality}, offset={self.time_offset_ns} ns)"


# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PointCloud:
    """Points (N, 3) in the sensor's frame, with per-point attributes beside them.

    ``attrs`` maps names (``intensity``, ``ring``, radar ``vx``, ``vy``, ``rcs`` ...) to (N,)
    arrays. ``point_time_ns`` (when the sensor records it) is each point's capture time relative
    to ``t_ns`` (int, may be negative); deskewing replaces it by ``capture_time_ns``. ``world_from_ego`` is the ego pose at ``t_ns`` when the
    log has poses. Arrays are not copied.
    """

    xyz: npt.NDArray[np.floating[Any]]
    sensor: Sensor
    t_ns: int
    attrs: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)
    world_from_ego: Transform | None = None
    token: str = ""

    def __post_init__(self) -> None:
        where = f"PointCloud of '{self.sensor.name}' at t={self.t_ns}"
        xyz = self.xyz
        if not isinstance(xyz, np.ndarray) or xyz.ndim != 2 or xyz.shape[1] != 3:
            raise AVFusionError(
                f"{where}: xyz must be an (N, 3) array, got {getattr(xyz, 'shape', type(xyz))}"
            )
        if xyz.dtype not in (np.float32, np.float64):
            raise AVFusionError(f"{where}: xyz must be float32 or float64, got {xyz.dtype}")
        for name, values in self.attrs.items():
            if not isinstance(values, np.ndarray) or values.shape[:1] != (xyz.shape[0],):
                raise AVFusionError(
                    f"{where}: attribute '{name}' has shape {getattr(values, 'shape', None)}, expected ({xyz.shape[0]},)"
                )
        object.__setattr__(self, "t_ns", _check_int_ns(self.t_ns, where))
        object.__setattr__(self, "attrs", dict(self.attrs))

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def select(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]]) -> PointCloud:
        """A new cloud with the chosen points (boolean mask or indices) and their attributes."""
        return PointCloud(
            np.ascontiguousarray(self.xyz[mask]),
            self.sensor,
            self.t_ns,
            {k: v[mask] for k, v in self.attrs.items()},
            self.world_from_ego,
            self.token,
        )


@dataclass(frozen=True, eq=False)
class Image:
    """A camera (uint8 H×W×3 RGB or H×W grey) or thermal (uint16 H×W radiometric counts) image.

    Pixels are decoded lazily: give either ``pixels`` or a ``loader`` (called once, on first
    access to ``.pixels``). The decoded size must match the sensor's camera model.
    """

    sensor: Sensor
    t_ns: int
    world_from_ego: Transform | None = None
    pixels_or_none: npt.NDArray[Any] | None = None
    loader: Callable[[], npt.NDArray[Any]] | None = None
    path: str = ""
    token: str = ""

    def __post_init__(self) -> None:
        where = f"Image of '{self.sensor.name}' at t={self.t_ns}"
        object.__setattr__(self, "t_ns", _check_int_ns(self.t_ns, where))
        if self.sensor.camera is None:
            raise CalibrationError(f"{where}: sensor has no camera model")
        if self.pixels_or_none is None and self.loader is None:
            raise AVFusionError(f"{where}: needs pixels or a loader")
        if self.pixels_or_none is not None:
            self._check(self.pixels_or_none)

    def _check(self, pixels: npt.NDArray[Any]) -> None:
        cam = self.sensor.camera
        where = f"Image of '{self.sensor.name}' at t={self.t_ns}{' (' + self.path + ')' if self.path else ''}"
        if not isinstance(pixels, np.ndarray) or pixels.ndim not in (2, 3):
            raise LogFormatError(f"{where}: pixels must be an H×W or H×W×C array")
        if cam is not None and pixels.shape[:2] != (cam.height, cam.width):
            raise LogFormatError(
                f"{where}: image is {pixels.shape[1]}x{pixels.shape[0]} but the camera model is {cam.width}x{cam.height}"
            )
        if pixels.dtype not in (np.uint8, np.uint16):
            raise LogFormatError(f"{where}: pixels must be uint8 or uint16, got {pixels.dtype}")

    @property
    def pixels(self) -> npt.NDArray[Any]:
        if self.pixels_or_none is None:
            if self.loader is None:  # pragma: no cover - rejected in __post_init__
                raise AVFusionError(f"Image of '{self.sensor.name}': no pixels and no loader")
            data = self.loader()
            self._check(data)
            object.__setattr__(self, "pixels_or_none", data)
        return self.pixels_or_none  # type: ignore[return-value]

    @property
    def camera(self) -> CameraModel:
        cam = self.sensor.camera
        if cam is None:  # pragma: no cover - rejected in __post_init__
            raise CalibrationError(f"Image of '{self.sensor.name}': sensor has no camera model")
        return cam


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _as_str_array(values: Any, n: int, what: str) -> npt.NDArray[np.str_]:
    if values is None:
        return np.full(n, "", dtype=np.str_)
    arr = np.asarray(values).astype(np.str_)
    if arr.shape != (n,):
        raise AVFusionError(f"{what}: expected {n} values, got shape {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class Boxes3D:
    """N oriented 3D boxes, stored column-wise, in the frame named by ``frame``.

    ``center`` (N, 3) is the box centre, ``size`` (N, 3) is (length, width, height) along the
    box's own x, y, z, ``rotation`` (N, 4) is ``frame_from_box`` as quaternions (w, x, y, z).
    ``velocity`` (N, 3) m/s in ``frame`` (NaN where unknown). ``attrs`` holds other per-box
    columns (``num_lidar_pts``, ``num_radar_pts``, ``visibility``, ``attribute`` ...).
    """

    center: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    rotation: npt.NDArray[np.float64]
    label: npt.NDArray[np.str_]
    track_id: npt.NDArray[np.str_]
    frame: str
    velocity: npt.NDArray[np.float64] | None = None
    token: npt.NDArray[np.str_] | None = None
    attrs: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        center = np.asarray(self.center, dtype=np.float64).reshape(-1, 3)
        n = center.shape[0]
        where = f"Boxes3D in '{self.frame}'"
        size = np.asarray(self.size, dtype=np.float64).reshape(-1, 3)
        rotation = np.asarray(self.rotation, dtype=np.float64).reshape(-1, 4)
        if size.shape[0] != n or rotation.shape[0] != n:
            raise AVFusionError(
                f"{where}: {n} centres but {size.shape[0]} sizes and {rotation.shape[0]} rotations"
            )
        if not (
            np.all(np.isfinite(center))
            and np.all(np.isfinite(size))
            and np.all(np.isfinite(rotation))
        ):
            raise AVFusionError(f"{where}: centres, sizes and rotations must be finite")
        if np.any(size < 0):
            raise AVFusionError(f"{where}: box sizes must be >= 0")
        norms = np.linalg.norm(rotation, axis=1, keepdims=True)
        if np.any(norms < 1e-9):
            raise AVFusionError(f"{where}: a rotation quaternion has zero norm")
        velocity = (
            np.full((n, 3), np.nan)
            if self.velocity is None
            else np.asarray(self.velocity, dtype=np.float64).reshape(-1, 3)
        )
        if velocity.shape[0] != n:
            raise AVFusionError(f"{where}: {n} boxes but {velocity.shape[0]} velocities")
        for name, values in self.attrs.items():
            if np.asarray(values).shape[:1] != (n,):
                raise AVFusionError(
                    f"{where}: attribute '{name}' has {np.asarray(values).shape[:1]} values, expected {n}"
                )
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "rotation", rotation / norms)
        object.__setattr__(self, "velocity", velocity)
        object.__setattr__(self, "label", _as_str_array(self.label, n, f"{where} label"))
        object.__setattr__(self, "track_id", _as_str_array(self.track_id, n, f"{where} track_id"))
        object.__setattr__(self, "token", _as_str_array(self.token, n, f"{where} token"))
        object.__setattr__(self, "attrs", {k: np.asarray(v) for k, v in self.attrs.items()})

    @classmethod
    def empty(cls, frame: str) -> Boxes3D:
        return cls(
            np.zeros((0, 3)),
            np.zeros((0, 3)),
            np.zeros((0, 4)),
            np.zeros(0, np.str_),
            np.zeros(0, np.str_),
            frame,
        )

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def rotation_matrices(self) -> npt.NDArray[np.float64]:
        """``frame_from_box`` rotations, (N, 3, 3)."""
        if len(self) == 0:
            return np.zeros((0, 3, 3))
        return matrix_from_quaternion(self.rotation)

    @property
    def yaw(self) -> npt.NDArray[np.float64]:
        """Heading of each box's x axis about the frame's z axis (radians)."""
        r = self.rotation_matrices()
        return np.arctan2(r[:, 1, 0], r[:, 0, 0])

    def corners(self) -> npt.NDArray[np.float64]:
        """Box corners (N, 8, 3) in ``frame``.

        Order: the four at +x (front) then the four at -x, each group (+y +z, -y +z, -y -z, +y -z).
        """
        signs = np.array(
            [
                [1, 1, 1],
                [1, -1, 1],
                [1, -1, -1],
                [1, 1, -1],
                [-1, 1, 1],
                [-1, -1, 1],
                [-1, -1, -1],
                [-1, 1, -1],
            ],
            dtype=np.float64,
        )
        local = signs[None, :, :] * (self.size[:, None, :] / 2.0)
        return np.einsum("nij,nkj->nki", self.rotation_matrices(), local) + self.center[:, None, :]

    def transformed(self, new_from_frame: Transform, new_frame: str) -> Boxes3D:
        """The same boxes expressed in another frame (centres, rotations and velocities)."""
        center = np.asarray(new_from_frame.apply(self.center), dtype=np.float64)
        rot = np.einsum("ij,njk->nik", new_from_frame.rotation, self.rotation_matrices())
        q = quaternion_from_matrix(rot) if len(self) else np.zeros((0, 4))
        vel = self.velocity @ new_from_frame.rotation.T if self.velocity is not None else None
        return Boxes3D(
            center,
            self.size.copy(),
            q,
            self.label.copy(),
            self.track_id.copy(),
            new_frame,
            vel,
            self.token,
            self.attrs,
        )

    def select(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]]) -> Boxes3D:
        return Boxes3D(
            self.center[mask],
            self.size[mask],
            self.rotation[mask],
            self.label[mask],
            self.track_id[mask],
            self.frame,
            None if self.velocity is None else self.velocity[mask],
            None if self.token is None else self.token[mask],
            {k: v[mask] for k, v in self.attrs.items()},
        )


@dataclass(frozen=True, eq=False)
class Boxes2D:
    """N axis-aligned image boxes of one camera: ``xyxy`` (N, 4) pixels (x0, y0, x1, y1)."""

    xyxy: npt.NDArray[np.float64]
    label: npt.NDArray[np.str_]
    track_id: npt.NDArray[np.str_]
    sensor: str
    attrs: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        n = xyxy.shape[0]
        where = f"Boxes2D of '{self.sensor}'"
        if not np.all(np.isfinite(xyxy)):
            raise AVFusionError(f"{where}: coordinates must be finite")
        if np.any(xyxy[:, 2] < xyxy[:, 0]) or np.any(xyxy[:, 3] < xyxy[:, 1]):
            raise AVFusionError(f"{where}: boxes need x1 >= x0 and y1 >= y0")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "label", _as_str_array(self.label, n, f"{where} label"))
        object.__setattr__(self, "track_id", _as_str_array(self.track_id, n, f"{where} track_id"))
        object.__setattr__(self, "attrs", {k: np.asarray(v) for k, v in self.attrs.items()})

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])


# --------------------------------------------------------------------------------------------
# Frames and logs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Frame:
    """One synchronised instant around a reference sensor.

    Every observation keeps its own capture time and ego pose, so fusion can compensate motion:
    ``cam_from_lidar = cam_from_ego ∘ ego_from_world(t_cam) ∘ world_from_ego(t_lidar) ∘ ego_from_lidar``.
    ``time_diffs_ns`` maps each matched sensor to (its time − the frame time); ``missing`` lists
    the sensors with no observation inside the matching tolerance.
    """

    t_ns: int
    world_from_ego: Transform | None
    sensors: Mapping[str, Sensor]
    points: Mapping[str, PointCloud] = field(default_factory=dict)
    images: Mapping[str, Image] = field(default_factory=dict)
    boxes3d: Boxes3D | None = None
    boxes2d: Mapping[str, Boxes2D] = field(default_factory=dict)
    time_diffs_ns: Mapping[str, int] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    token: str = ""
    index: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "t_ns", _check_int_ns(self.t_ns, f"Frame {self.token or self.index}")
        )
        for name in list(self.points) + list(self.images):
            if name not in self.sensors:
                raise AVFusionError(
                    f"Frame {self.token or self.index}: observation of unknown sensor '{name}'"
                )

    def project(self, source: str, camera: str, **kwargs: Any) -> Projection:
        """The cloud ``points[source]`` projected into the image ``images[camera]``.

        Motion-compensated between the two capture times (each observation's own ego pose);
        ``kwargs`` go to ``avfusion.fusion.projection.project_cloud`` (``poses`` for the pose
        track, which also deskews a cloud with per-point times; ``motion_compensation``,
        ``occlusion`` and the z-buffer options). Raises ``AVFusionError`` naming the frame when
        the frame has no such cloud or image.

        Layering: the one place where ``types`` reaches up into ``fusion``. The import happens
        inside the method so that importing ``avfusion.types`` stays free of numba and the
        fusion layer.
        """
        from avfusion.fusion.projection import project_cloud

        where = f"Frame {self.token or self.index}"
        if source not in self.points:
            raise AVFusionError(
                f"{where}: no point cloud of '{source}' (clouds: {', '.join(sorted(self.points)) or 'none'})"
            )
        if camera not in self.images:
            raise AVFusionError(
                f"{where}: no image of '{camera}' (images: {', '.join(sorted(self.images)) or 'none'})"
            )
        poses = kwargs.pop("poses", None)
        return project_cloud(self.points[source], self.images[camera], poses, **kwargs)


class Log(ABC):
    """What every reader returns: sensors, frames in time order and a pose track.

    Subclasses implement ``sensors``, ``__len__``, ``__getitem__``, ``timestamps`` and ``poses``.
    """

    #: Whether ``timestamps`` keeps the recorded order (so duplicates and reversals show).
    #: Readers that sort their streams set it to False.
    timestamps_are_raw: bool = True

    @property
    @abstractmethod
    def sensors(self) -> Mapping[str, Sensor]:
        """Sensor name → Sensor."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames."""

    @abstractmethod
    def __getitem__(self, index: int) -> Frame:
        """The frame at ``index`` (0 ≤ index < len)."""

    @abstractmethod
    def timestamps(self, sensor: str) -> npt.NDArray[np.int64]:
        """The stamps of one sensor's stream as recorded (its own clock, int64 ns), in log order.

        Add ``sensors[sensor].time_offset_ns`` for the ego clock. Readers that sort the stamps
        (so duplicates and reversals cannot show) say so with ``timestamps_are_raw = False``.
        """

    @property
    @abstractmethod
    def poses(self) -> Trajectory:
        """The ``world_from_ego`` track of the whole log."""

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def pose_at(self, t_ns: int, tolerance_ns: int = 0) -> Transform:
        """``world_from_ego`` at any time in the pose track's range (see ``Trajectory.at``)."""
        return self.poses.at(t_ns, tolerance_ns)

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not isinstance(index, int | np.integer):
            raise AVFusionError(
                f"{type(self).__name__}: frame index must be an integer, got {type(index).__name__}"
            )
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(
                f"{type(self).__name__}: frame {index} out of range for a log of {n} frames"
            )
        return i
