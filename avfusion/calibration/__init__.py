"""Calibration layer: transforms and the transform tree, camera models, time sync, extrinsics."""

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
from avfusion.calibration.transforms import Trajectory, Transform, TransformTree
from avfusion.calibration.validation import SensorCheck, check_calibration

__all__ = [
    "CameraModel",
    "ClockOffsetEstimate",
    "ExtrinsicEstimate",
    "SensorCheck",
    "Trajectory",
    "Transform",
    "TransformTree",
    "check_calibration",
    "estimate_clock_offset",
    "estimate_clock_offsets",
    "read_calibration",
    "refine_extrinsic",
    "write_calibration",
]
