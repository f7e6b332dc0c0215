"""Calibration layer: transforms and the transform tree, camera models, time sync, extrinsics."""

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Trajectory, Transform, TransformTree

__all__ = ["CameraModel", "Trajectory", "Transform", "TransformTree"]
