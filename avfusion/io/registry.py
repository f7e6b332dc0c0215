"""``open_log``: pick the reader from an explicit table keyed by what is on disk.

Each entry is (format name, detector, opener). Detectors look only at names and small
marker files; the first that matches wins. Formats whose reader has not landed yet are listed
so the error says what the path looks like, and what is recognised today.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avfusion.errors import ConfigError, LogFormatError
from avfusion.types import Log

__all__ = ["FORMATS", "LogFormat", "detect_format", "open_log"]

logger = logging.getLogger(__name__)


def _is_nuscenes(p: Path) -> bool:
    if not p.is_dir():
        return False
    if (p / "sample_data.json").is_file():
        return True
    return any((d / "sample_data.json").is_file() for d in p.glob("v1.0*"))


def _is_ros1_bag(p: Path) -> bool:
    return p.is_file() and p.suffix == ".bag"


def _is_mcap(p: Path) -> bool:
    return p.is_file() and p.suffix == ".mcap"


def _is_rosbag2(p: Path) -> bool:
    return p.is_dir() and (p / "metadata.yaml").is_file()


def _is_kitti(p: Path) -> bool:
    from avfusion.io.kitti import is_kitti_object, is_kitti_raw

    return is_kitti_object(p) or is_kitti_raw(p)


def _open_kitti(p: Path, rig: str | os.PathLike[str] | None, **kwargs: Any) -> Log:
    from avfusion.io.kitti import open_kitti

    if rig is not None:
        raise ConfigError(
            f"{p}: a rig file applies to bags; a KITTI folder carries its own calibration"
        )
    return open_kitti(p, **kwargs)


def _open_bag(p: Path, rig: str | os.PathLike[str] | None, **kwargs: Any) -> Log:
    from avfusion.io.rosbag import open_bag

    # without a rig: ConfigError suggesting `avfusion info --rig-out`
    return open_bag(p, rig, **kwargs)


def _open_nuscenes(p: Path, rig: str | os.PathLike[str] | None, **kwargs: Any) -> Log:
    from avfusion.io.nuscenes import NuScenesLog

    if rig is not None:
        raise ConfigError(
            f"{p}: a rig file applies to bags; a nuScenes-style log carries its own calibration"
        )
    return NuScenesLog(p, **kwargs)


@dataclass(frozen=True)
class LogFormat:
    name: str
    description: str
    detect: Callable[[Path], bool]
    open: Callable[..., Log] | None  # (path, rig, *, calibration=None); None: not available yet


FORMATS: tuple[LogFormat, ...] = (
    LogFormat(
        "nuscenes",
        "nuScenes-style root (a folder with a v1.0* table folder holding sample_data.json, or that folder)",
        _is_nuscenes,
        _open_nuscenes,
    ),
    LogFormat("ros1", "ROS 1 .bag", _is_ros1_bag, _open_bag),
    LogFormat("mcap", "MCAP .mcap", _is_mcap, _open_bag),
    LogFormat("rosbag2", "rosbag2 folder (metadata.yaml)", _is_rosbag2, _open_bag),
    LogFormat(
        "kitti",
        "KITTI object/raw folder (velodyne/, training/velodyne/, or a raw drive with velodyne_points/)",
        _is_kitti,
        _open_kitti,
    ),
)


def detect_format(path: str | os.PathLike[str]) -> LogFormat | None:
    """The first format in ``FORMATS`` whose detector accepts ``path`` (None when none does)."""
    p = Path(path)
    for fmt in FORMATS:
        if fmt.detect(p):
            return fmt
    return None


def _known() -> str:
    readable = [f.description for f in FORMATS if f.open is not None]
    planned = [f.description for f in FORMATS if f.open is None]
    later = f"; recognised, reader not yet available: {'; '.join(planned)}" if planned else ""
    return f"readable: {'; '.join(readable)}{later}"


def open_log(
    path: str | os.PathLike[str],
    rig: str | os.PathLike[str] | None = None,
    *,
    calibration: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> Log:
    """Open whatever log is at ``path`` as a ``Log`` (see ``FORMATS``).

    ``calibration`` (a ``calibration.json`` path, or sensor name → ``Transform``
    ego_from_sensor) replaces the log's extrinsics (and clock offsets the file states), for
    every format.
    """
    p = Path(path)
    if not p.exists():
        raise LogFormatError(f"{p}: no such file or directory")
    fmt = detect_format(p)
    if fmt is None:
        raise LogFormatError(f"{p}: not a recognised log ({_known()})")
    if fmt.open is None:
        raise LogFormatError(
            f"{p}: looks like a {fmt.description}, but that reader is not available yet ({_known()})"
        )
    logger.debug("%s: opening as %s", p, fmt.name)
    if calibration is not None:
        return fmt.open(p, rig, calibration=calibration)
    return fmt.open(p, rig)
