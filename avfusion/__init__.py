"""avfusion: multisensor fusion for autonomous driving.

Raw driving logs in; synchronised fused frames, occupancy ground truth and label/calibration QA
out. ``import avfusion`` stays light: heavy modules (open3d, ray, rerun) load only where used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Trajectory, Transform, TransformTree
from avfusion.errors import AVFusionError, CalibrationError, ConfigError, LogFormatError, SyncError
from avfusion.types import Boxes2D, Boxes3D, Frame, Image, Log, PointCloud, Sensor


def __getattr__(name: str) -> object:
    # open_log lives in the io layer, which pulls in numba-compiled decoders; load it on first use
    # so that ``import avfusion`` stays light.
    if name == "open_log":
        from avfusion.io.registry import open_log

        return open_log
    if name in ("FusionDataset", "collate"):  # training API (dataset.py), loaded on first use
        from avfusion import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'avfusion' has no attribute {name!r}")


try:
    __version__ = version("avfusion")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "AVFusionError",
    "Boxes2D",
    "Boxes3D",
    "CalibrationError",
    "CameraModel",
    "ConfigError",
    "Frame",
    "FusionDataset",
    "Image",
    "Log",
    "LogFormatError",
    "PointCloud",
    "Sensor",
    "SyncError",
    "Trajectory",
    "Transform",
    "TransformTree",
    "__version__",
    "collate",
    "open_log",
]
