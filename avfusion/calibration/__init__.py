"""Calibration layer: transforms and the transform tree, camera models, time sync, extrinsics.

``lidar_lidar`` (Open3D ICP/GICP registration of multi-LiDAR rigs) is imported on demand:
``from avfusion.calibration.lidar_lidar import register_lidar_lidar``.
"""

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.clockoffset import (
    ClockOffsetEstimate,
    estimate_clock_offset,
    estimate_clock_offsets,
)
from avfusion.calibration.extrinsics import (
    ExtrinsicEstimate,
    read_calibration,
    refine_extrinsic,
    write_calibration,
)
from avfusion.calibration.target import (
    calibrate_intrinsics,
    calibrate_lidar_camera_target,
    detect_checkerboard,
)
from avfusion.calibration.transforms import Trajectory, Transform, TransformTree
from avfusion.calibration.validation import SensorCheck, check_calibration, check_settings

__all__ = [
    "CameraModel",
    "ClockOffsetEstimate",
    "ExtrinsicEstimate",
    "SensorCheck",
    "Trajectory",
    "Transform",
    "TransformTree",
    "calibrate_intrinsics",
    "calibrate_lidar_camera_target",
    "check_calibration",
    "check_settings",
    "detect_checkerboard",
    "estimate_clock_offset",
    "estimate_clock_offsets",
    "read_calibration",
    "refine_extrinsic",
    "write_calibration",
]
