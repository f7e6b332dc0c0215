"""``calibration.json``: read and write sensor extrinsics (and clock offsets) for every reader.

Format (format_version 1): ``sensors`` maps each sensor to a nuScenes ``calibrated_sensor``
record (``translation``, ``rotation`` (w, x, y, z), ``camera_intrinsic``) and a ROS
``geometry_msgs/TransformStamped`` for ``/tf_static`` (parent ``base_link`` = ego, child = the
sensor, quaternion x, y, z, w), plus ``time_offset_ns`` and the estimate's quality. Written by
``avfusion calib refine``; read back with :func:`read_calibration` (a mapping sensor →
:class:`SensorCalibration`) or passed as ``open_log(path, calibration=...)``, which applies it
to any reader's sensors through :func:`apply_calibration`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import Transform
from avfusion.errors import CalibrationError
from avfusion.types import Sensor

__all__ = [
    "CALIBRATION_FORMAT_VERSION",
    "SensorCalibration",
    "apply_calibration",
    "calibration_overrides",
    "calibration_record",
    "check_override_names",
    "read_calibration",
    "write_calibration",
]

CALIBRATION_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SensorCalibration:
    """One sensor's calibration as read from ``calibration.json``: ``ego_from_sensor`` and,
    when the file states it, ``time_offset_ns``."""

    sensor: str
    ego_from_sensor: Transform
    time_offset_ns: int | None = None


def calibration_record(
    sensor: str,
    ego_from_sensor: Transform,
    *,
    camera_intrinsic: npt.ArrayLike | None = None,
    time_offset_ns: int | None = None,
    estimate: Mapping[str, Any] | None = None,
    ego_frame: str = "base_link",
) -> dict[str, Any]:
    """The ``calibration.json`` entry of one sensor: a nuScenes ``calibrated_sensor`` record
    and a ROS ``/tf_static`` ``TransformStamped`` for the same ``ego_from_sensor``."""
    q = np.asarray(ego_from_sensor.quaternion, dtype=np.float64)  # w, x, y, z
    t = np.asarray(ego_from_sensor.translation, dtype=np.float64)
    rec: dict[str, Any] = {
        "calibrated_sensor": {
            "translation": t.tolist(),
            "rotation": q.tolist(),
            "camera_intrinsic": []
            if camera_intrinsic is None
            else np.asarray(camera_intrinsic, dtype=np.float64).tolist(),
        },
        "tf_static": {
            "header": {"frame_id": ego_frame},
            "child_frame_id": sensor,
            "transform": {
                "translation": {"x": t[0], "y": t[1], "z": t[2]},
                "rotation": {"x": q[1], "y": q[2], "z": q[3], "w": q[0]},
            },
        },
    }
    if time_offset_ns is not None:
        rec["time_offset_ns"] = int(time_offset_ns)
    if estimate is not None:
        rec["estimate"] = dict(estimate)
    return rec


def write_calibration(
    records: Mapping[str, Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    source: Mapping[str, Any] | None = None,
    filename: str = "calibration.json",
) -> Path:
    """Write ``calibration.json`` (format_version 1) atomically into ``out_dir``; ``records``
    maps sensor name → ``calibration_record(...)``. Returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    doc = {
        "format_version": CALIBRATION_FORMAT_VERSION,
        "convention": "ego_from_sensor; nuScenes calibrated_sensor (rotation w,x,y,z); "
        "tf_static parent=ego child=sensor (rotation x,y,z,w); t_ego = t_stamp + time_offset_ns",
        "source": dict(source or {}),
        "sensors": {name: dict(rec) for name, rec in records.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_calibration(path: str | os.PathLike[str]) -> dict[str, SensorCalibration]:
    """Sensor name → ``SensorCalibration`` from a ``calibration.json``. Each sensor needs a
    ``calibrated_sensor`` record (or else a ``tf_static`` one); raises ``CalibrationError``
    naming the file and sensor for anything missing or malformed."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{p}: no such calibration file") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{p}: not a readable JSON calibration file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sensors"), dict):
        raise CalibrationError(f"{p}: expected an object with 'sensors' (calibration.json)")
    if doc.get("format_version") != CALIBRATION_FORMAT_VERSION:
        raise CalibrationError(
            f"{p}: format_version {doc.get('format_version')!r}, expected {CALIBRATION_FORMAT_VERSION}"
        )
    out: dict[str, SensorCalibration] = {}
    for name, rec in doc["sensors"].items():
        try:
            if "calibrated_sensor" in rec:
                cs = rec["calibrated_sensor"]
                tf = Transform.from_quaternion(cs["rotation"], cs["translation"])
            else:
                tr = rec["tf_static"]["transform"]
                q, t = tr["rotation"], tr["translation"]
                tf = Transform.from_quaternion(
                    [q["w"], q["x"], q["y"], q["z"]], [t["x"], t["y"], t["z"]]
                )
            off = rec.get("time_offset_ns")
            if off is not None and (isinstance(off, bool) or not isinstance(off, int)):
                raise CalibrationError(f"time_offset_ns must be integer nanoseconds, got {off!r}")
        except (KeyError, TypeError, CalibrationError) as exc:
            raise CalibrationError(
                f"{p}: sensor '{name}': bad calibration record ({exc})"
            ) from None
        out[str(name)] = SensorCalibration(str(name), tf, off)
    return out


def calibration_overrides(
    calibration: str | os.PathLike[str] | Mapping[str, Any] | None, where: str | os.PathLike[str]
) -> dict[str, SensorCalibration]:
    """Sensor name → ``SensorCalibration`` from a reader's ``calibration=`` keyword: a
    ``calibration.json`` path, or a mapping of sensor name → ``Transform`` (ego_from_sensor)
    or ``SensorCalibration``. ``where`` names the log in error messages."""
    if calibration is None:
        return {}
    if isinstance(calibration, str | os.PathLike):
        return read_calibration(calibration)
    if not isinstance(calibration, Mapping):
        raise CalibrationError(
            f"{where}: calibration must be a calibration.json path or a mapping sensor -> "
            f"Transform, got {type(calibration).__name__}"
        )
    out: dict[str, SensorCalibration] = {}
    for name, value in calibration.items():
        if isinstance(value, SensorCalibration):
            out[str(name)] = value
        elif isinstance(value, Transform):
            out[str(name)] = SensorCalibration(str(name), value)
        else:
            raise CalibrationError(
                f"{where}: calibration of sensor '{name}' must be a Transform (ego_from_sensor) "
                f"or SensorCalibration, got {type(value).__name__}"
            )
    return out


def check_override_names(
    overrides: Mapping[str, SensorCalibration],
    sensor_names: Iterable[str],
    where: str | os.PathLike[str],
) -> None:
    """Raise ``CalibrationError`` when an override names a sensor the log does not have."""
    names = set(sensor_names)
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise CalibrationError(
            f"{where}: the calibration override names sensors the log does not have: "
            f"{', '.join(unknown)} (sensors: {', '.join(sorted(names))})"
        )


def apply_calibration(
    sensors: Mapping[str, Sensor],
    overrides: Mapping[str, SensorCalibration],
    where: str | os.PathLike[str],
) -> dict[str, Sensor]:
    """``sensors`` with each overridden sensor's ``ego_from_sensor`` (and ``time_offset_ns``
    when the override states one) replaced; raises ``CalibrationError`` for unknown names."""
    check_override_names(overrides, sensors, where)
    out = dict(sensors)
    for name, cal in overrides.items():
        sensor = sensors[name]
        offset = sensor.time_offset_ns if cal.time_offset_ns is None else cal.time_offset_ns
        out[name] = dataclasses.replace(
            sensor, ego_from_sensor=cal.ego_from_sensor, time_offset_ns=int(offset)
        )
    return out
