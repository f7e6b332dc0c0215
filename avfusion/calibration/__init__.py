"""Calibration layer: transforms and the transform tree, camera models, time sync, extrinsics."""

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.clockoffset import (
    ClockOffsetEstimate,
    estimate_clock_offset,
    estimate_clock_offsets,
)
from avfusion.calibration.transforms import Trajectory, Transform, TransformTree

__all__ = [
    "CameraModel",
    "ClockOffsetEstimate",
    "Trajectory",
    "Transform",
    "TransformTree",
    "estimate_clock_offset",
    "estimate_clock_offsets",
]
