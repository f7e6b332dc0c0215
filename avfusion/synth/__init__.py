"""Deterministic synthetic driving world, sensor simulation and sample-log generation.

``generate(out_dir, seconds=..., seed=..., inject_errors=...)`` writes a nuScenes-style log with
exact truth; ``ensure_sample_data(sample_data_dir)`` makes the default log in
``sample_data/nuscenes`` when it is missing or incomplete. Modules: ``world`` (scene, objects,
trajectories), ``rig`` (sensors), ``lidar``, ``radar``, ``camera`` and ``raster`` (rendering),
``thermal``, ``labels`` (boxes, 2D boxes, occupancy), ``errors_inject``, ``generate``,
``bags`` (``write_bags``: the log as ROS2 MCAP and ROS1 bags with a labels sidecar),
``target`` (``make_target_session``: a checkerboard calibration session with its truth).
"""

from avfusion.synth.bags import BagPaths, write_bags
from avfusion.synth.generate import (
    DEFAULT_SECONDS,
    GenerationSummary,
    compute_checksums,
    ensure_sample_data,
    generate,
    verify_checksums,
    write_checksums,
)
from avfusion.synth.target import CheckerboardSpec, make_target_session, write_target_session

__all__ = [
    "DEFAULT_SECONDS",
    "BagPaths",
    "CheckerboardSpec",
    "GenerationSummary",
    "compute_checksums",
    "ensure_sample_data",
    "generate",
    "make_target_session",
    "verify_checksums",
    "write_bags",
    "write_checksums",
    "write_target_session",
]
