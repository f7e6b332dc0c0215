"""Rig files: which bag topics are which sensors, where the ego pose comes from, how to match.

A rig file is YAML validated by pydantic; every error names the file and the field path
(``sensors[2].modality``) and says what was expected. Example::

    reference_sensor: LIDAR_TOP
    pose:                       # where world_from_ego comes from
      source: tf                # tf | odometry | none
      world_frame: map
      ego_frame: base_link
    labels: labels.json         # optional; relative to this file
    sensors:
      - name: LIDAR_TOP
        modality: lidar         # lidar | radar | camera | thermal
        topic: /LIDAR_TOP/points
      - name: CAM_FRONT
        modality: camera
        topic: /CAM_FRONT/image_raw/compressed
        camera_info_topic: /CAM_FRONT/camera_info
        time_offset_ns: 4000000 # t_ego = t_stamp + time_offset_ns
        tolerance_ms: 60        # matching window around the reference time

Sensor fields:

* ``name`` (unique), ``modality``, ``topic`` (PointCloud2 for lidar/radar; Image or
  CompressedImage for camera/thermal);
* ``camera_info_topic``: CameraInfo of a camera/thermal sensor (the first message is used);
  required unless ``intrinsics`` (``K`` 3×3, ``width``, ``height``, ``distortion`` none | radtan |
  fisheye, ``coeffs`` in OpenCV order) are given inline. LiDAR and radar take neither;
* ``frame_id``: the sensor's tf frame, when the messages' ``header.frame_id`` is empty or wrong;
* ``ego_from_sensor``: inline extrinsics (``translation`` m, ``rotation_wxyz``) when /tf_static
  lacks them; otherwise they are looked up in /tf_static from the ego frame to the sensor frame;
* ``time_offset_ns`` (default 0): the sensor clock's offset, ``t_ego = t_stamp + offset``;
* ``tolerance_ms``: how far (ego clock) a message may be from the reference time and still join
  the frame. Defaults per modality (``DEFAULT_TOLERANCE_MS``): lidar 50 ms (half a 10 Hz
  sweep), radar 60 ms, camera 50 ms (half a 10 Hz frame), thermal 60 ms (half a 9 Hz frame).

``pose``: ``{source: tf, world_frame, ego_frame}`` composes the tf chain world_frame → ego_frame
(/tf and /tf_static, any number of hops); ``{source: odometry, topic, ego_frame?}`` uses
nav_msgs/Odometry poses (``ego_frame`` defaults to the messages' ``child_frame_id``);
``{source: none, ego_frame?}`` means the bag has no pose: ``world_from_ego`` is the identity at
all times (a warning is logged; ``ego_frame`` is still used to look up /tf_static extrinsics).
``max_extrapolation_ms`` (default 20) is how far beyond the pose track a sensor time may lie.

Top level: ``reference_sensor`` (one frame per message of it), ``policy`` (``nearest`` or
``latest_before``, see ``avfusion.calibration.timesync``), ``labels`` (a ``labels.json``
sidecar, format in ``avfusion.synth.bags``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, ConfigError

__all__ = [
    "DEFAULT_MAX_EXTRAPOLATION_MS",
    "DEFAULT_TOLERANCE_MS",
    "InlineExtrinsics",
    "InlineIntrinsics",
    "NoPose",
    "OdometryPose",
    "Rig",
    "RigSensor",
    "TfPose",
    "load_rig",
    "rig_from_dict",
]

logger = logging.getLogger(__name__)

#: Matching tolerance per modality when a sensor gives no ``tolerance_ms``.
DEFAULT_TOLERANCE_MS: dict[str, float] = {
    "lidar": 50.0,
    "radar": 60.0,
    "camera": 50.0,
    "thermal": 60.0,
}
#: How far (ms) beyond the ends of the pose track an observation may lie by default.
DEFAULT_MAX_EXTRAPOLATION_MS = 20.0

_IMAGE = ("camera", "thermal")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineExtrinsics(_Model):
    """``ego_from_sensor`` given in the rig: translation (m) and rotation quaternion (w, x, y, z)."""

    translation: tuple[float, float, float]
    rotation_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)

    @model_validator(mode="after")
    def _check(self) -> InlineExtrinsics:
        q = np.asarray(self.rotation_wxyz, dtype=np.float64)
        if not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
            raise ValueError(
                f"rotation_wxyz must be a finite non-zero quaternion (w, x, y, z), got {list(q)}"
            )
        if not np.all(np.isfinite(self.translation)):
            raise ValueError(f"translation must be finite, got {list(self.translation)}")
        return self

    def to_transform(self) -> Transform:
        return Transform.from_quaternion(self.rotation_wxyz, self.translation)


class InlineIntrinsics(_Model):
    """A camera model given in the rig (OpenCV conventions)."""

    K: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    distortion: Literal["none", "radtan", "fisheye"] = "none"
    coeffs: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> InlineIntrinsics:
        try:
            self.to_camera_model()
        except AVFusionError as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_camera_model(self) -> CameraModel:
        return CameraModel(
            np.asarray(self.K, dtype=np.float64),
            self.width,
            self.height,
            self.distortion,
            np.asarray(self.coeffs, dtype=np.float64),
        )


class RigSensor(_Model):
    """One sensor: its name, modality, topic and optional calibration overrides."""

    name: str = Field(min_length=1, pattern=r"^[^\s/]+$")
    modality: Literal["lidar", "radar", "camera", "thermal"]
    topic: str = Field(min_length=1)
    camera_info_topic: str | None = None
    intrinsics: InlineIntrinsics | None = None
    frame_id: str | None = None
    ego_from_sensor: InlineExtrinsics | None = None
    time_offset_ns: int = 0
    tolerance_ms: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> RigSensor:
        if self.modality in _IMAGE:
            if self.camera_info_topic is None and self.intrinsics is None:
                raise ValueError(
                    f"sensor '{self.name}' is a {self.modality}: give camera_info_topic "
                    "(a sensor_msgs/CameraInfo topic) or inline intrinsics"
                )
        elif self.camera_info_topic is not None or self.intrinsics is not None:
            raise ValueError(
                f"sensor '{self.name}' is a {self.modality}: camera_info_topic and intrinsics "
                "apply only to camera and thermal sensors"
            )
        return self

    @property
    def tolerance_ns(self) -> int:
        ms = DEFAULT_TOLERANCE_MS[self.modality] if self.tolerance_ms is None else self.tolerance_ms
        return round(ms * 1e6)


class TfPose(_Model):
    """``world_from_ego`` from the tf chain world_frame → ego_frame (/tf and /tf_static)."""

    source: Literal["tf"]
    world_frame: str = Field(default="map", min_length=1)
    ego_frame: str = Field(default="base_link", min_length=1)
    max_extrapolation_ms: float = Field(default=DEFAULT_MAX_EXTRAPOLATION_MS, ge=0.0)


class OdometryPose(_Model):
    """``world_from_ego`` from nav_msgs/Odometry messages (header.frame_id → child_frame_id)."""

    source: Literal["odometry"]
    topic: str = Field(min_length=1)
    ego_frame: str | None = None
    max_extrapolation_ms: float = Field(default=DEFAULT_MAX_EXTRAPOLATION_MS, ge=0.0)


class NoPose(_Model):
    """No pose source: ``world_from_ego`` is the identity at all times (a static rig)."""

    source: Literal["none"]
    ego_frame: str | None = None
    max_extrapolation_ms: float = Field(default=DEFAULT_MAX_EXTRAPOLATION_MS, ge=0.0)


PoseSource = Annotated[TfPose | OdometryPose | NoPose, Field(discriminator="source")]


class Rig(_Model):
    """The whole rig file (see the module docstring)."""

    reference_sensor: str
    pose: PoseSource
    sensors: list[RigSensor] = Field(min_length=1)
    labels: str | None = None
    policy: Literal["nearest", "latest_before"] = "nearest"

    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Rig:
        names = [s.name for s in self.sensors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sensor names must be unique; repeated: {', '.join(dup)}")
        topics = [s.topic for s in self.sensors]
        dup = sorted({t for t in topics if topics.count(t) > 1})
        if dup:
            raise ValueError(f"each topic belongs to one sensor; repeated: {', '.join(dup)}")
        if self.reference_sensor not in names:
            raise ValueError(
                f"reference_sensor '{self.reference_sensor}' is not one of the sensors "
                f"({', '.join(names)})"
            )
        return self

    # -- access ------------------------------------------------------------------------------
    @property
    def source(self) -> Path | None:
        """The file this rig was loaded from (None when built from a dict)."""
        return self._source

    def sensor(self, name: str) -> RigSensor:
        for s in self.sensors:
            if s.name == name:
                return s
        raise ConfigError(
            f"rig: no sensor named '{name}' (sensors: {', '.join(s.name for s in self.sensors)})"
        )

    def labels_path(self) -> Path | None:
        """``labels`` resolved against the rig file's folder (None when not given)."""
        if self.labels is None:
            return None
        p = Path(self.labels).expanduser()
        if not p.is_absolute() and self._source is not None:
            p = self._source.parent / p
        return p

    # -- output ------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        """The rig as YAML that ``load_rig`` reads back to an equal rig."""
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.dump(data, Dumper=_RigDumper, sort_keys=False, width=100)


class _RigDumper(yaml.SafeDumper):
    """Block style, except lists of numbers/strings (vectors, matrix rows), which stay on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(v, int | float | str | bool) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_RigDumper.add_representer(list, _represent_list)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    items = list(loc)
    # drop the discriminator tag pydantic inserts for the pose union: pose.tf.world_frame
    if len(items) > 1 and items[0] == "pose" and items[1] in ("tf", "odometry", "none"):
        del items[1]
    for item in items:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _config_error(exc: ValidationError, where: str, data: Any) -> ConfigError:
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        got = ""
        if err.get("type") not in ("missing",) and "input" in err and len(loc) > 0:
            value = err["input"]
            if not isinstance(value, dict | list):
                got = f" (got {value!r})"
        name = _format_loc(loc)
        # say which sensor a sensors[i] error is about
        if len(loc) > 1 and loc[0] == "sensors" and isinstance(loc[1], int):
            try:
                sname = data["sensors"][loc[1]]["name"]
                name += f" (sensor '{sname}')"
            except (KeyError, IndexError, TypeError):
                pass
        lines.append(f"{name}: {msg}{got}")
    return ConfigError(f"{where}: invalid rig: " + "; ".join(lines))


def rig_from_dict(data: Any, where: str = "rig") -> Rig:
    """Validate a mapping as a ``Rig``; pydantic errors become ``ConfigError`` naming the field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: a rig must be a mapping with reference_sensor, pose and sensors, "
            f"got {type(data).__name__}"
        )
    try:
        return Rig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, where, data) from None


def load_rig(path: str | os.PathLike[str]) -> Rig:
    """Read and validate a rig YAML file. Every problem raises ``ConfigError`` naming the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: rig file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read rig file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: not valid YAML{at}: {problem}") from None
    rig = rig_from_dict(data, str(p))
    rig._source = p.resolve()
    logger.debug("%s: rig with %d sensors", p, len(rig.sensors))
    return rig
