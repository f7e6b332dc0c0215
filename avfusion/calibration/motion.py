"""Motion-compensated transforms between sensors observed at different times.

Two sensors of one vehicle see the world at different instants; while the vehicle moves, the
static chain ``target_from_ego · ego_from_source`` is wrong by the ego motion between them
(about 0.33 m for a camera 35 ms before the LiDAR at 9 m/s). The motion-compensated transform
goes through the world frame::

    target_from_source = target_from_ego · ego_from_world(t_target) · world_from_ego(t_source) · ego_from_source

**Clock.** The times given here are *sensor stamps* (the clock of each sensor, as stored on its
observations, ``PointCloud.t_ns`` / ``Image.t_ns``); each sensor's ``time_offset_ns`` moves its
stamp to the ego clock of the pose track: ``t_ego = t_stamp + time_offset_ns``. The parameters
are named ``t_*_stamp_ns`` to say so.

``Trajectory.at`` interpolates a pose (slerp + lerp) and ``Trajectory.interpolate_many`` is its
vectorised form (rotations (N, 3, 3), translations (N, 3)); both refuse to reach further than
``tolerance_ns`` beyond the track with a ``SyncError``. The functions here add which sensor and
stamp asked, and how far outside the track it lies.
"""

from __future__ import annotations

import logging

from avfusion.calibration.timesync import int_ns
from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.errors import SyncError
from avfusion.types import Image, PointCloud, Sensor

__all__ = [
    "ego_pose_at_stamp",
    "observation_target_from_source",
    "static_target_from_source",
    "target_from_source",
]

logger = logging.getLogger(__name__)

Observation = PointCloud | Image


def ego_pose_at_stamp(
    poses: Trajectory, sensor: Sensor, t_stamp_ns: int, *, tolerance_ns: int = 0
) -> Transform:
    """``world_from_ego`` at the instant a sensor stamped ``t_stamp_ns`` (its own clock).

    Raises ``SyncError`` naming the sensor, the stamp, its ego-clock time and how far outside the
    pose track it lies, when that is further than ``tolerance_ns``.
    """
    stamp = int_ns(t_stamp_ns, f"pose of '{sensor.name}'")
    tol = int_ns(tolerance_ns, f"pose of '{sensor.name}': tolerance_ns")
    if tol < 0:
        raise SyncError(f"pose of '{sensor.name}': tolerance_ns must be >= 0, got {tol}")
    t_ego = stamp + sensor.time_offset_ns
    if t_ego < poses.start_ns - tol or t_ego > poses.end_ns + tol:
        outside = poses.start_ns - t_ego if t_ego < poses.start_ns else t_ego - poses.end_ns
        side = "before the start" if t_ego < poses.start_ns else "after the end"
        raise SyncError(
            f"pose of '{sensor.name}' at stamp {stamp} ns (ego clock {t_ego} ns, offset "
            f"{sensor.time_offset_ns} ns) is {outside / 1e6:.3f} ms {side} of the pose track "
            f"'{poses.name}' [{poses.start_ns}, {poses.end_ns}] ns; tolerance {tol / 1e6:.3f} ms"
        )
    return poses.at(t_ego, tol)


def static_target_from_source(target: Sensor, source: Sensor) -> Transform:
    """``target_from_ego · ego_from_source``: right only when both see the same instant."""
    return target.ego_from_sensor.inverse() @ source.ego_from_sensor


def target_from_source(
    poses: Trajectory,
    target: Sensor,
    t_target_stamp_ns: int,
    source: Sensor,
    t_source_stamp_ns: int,
    *,
    tolerance_ns: int = 0,
) -> Transform:
    """``target_from_source`` between two capture instants, compensating the ego motion.

    ``poses`` is the ``world_from_ego`` track (ego clock); ``t_target_stamp_ns`` and
    ``t_source_stamp_ns`` are the two observations' stamps in their sensors' own clocks (each
    sensor's ``time_offset_ns`` is applied). ``tolerance_ns`` bounds extrapolation beyond the
    track (``SyncError`` further out, naming the sensor and stamp).
    """
    world_from_target_ego = ego_pose_at_stamp(
        poses, target, t_target_stamp_ns, tolerance_ns=tolerance_ns
    )
    world_from_source_ego = ego_pose_at_stamp(
        poses, source, t_source_stamp_ns, tolerance_ns=tolerance_ns
    )
    return (
        target.ego_from_sensor.inverse()
        @ world_from_target_ego.inverse()
        @ world_from_source_ego
        @ source.ego_from_sensor
    )


def _observation_pose(
    obs: Observation, poses: Trajectory | None, tolerance_ns: int, role: str
) -> Transform:
    if obs.world_from_ego is not None:
        return obs.world_from_ego
    if poses is None:
        token = f" (token {obs.token})" if obs.token else ""
        raise SyncError(
            f"{role} observation of '{obs.sensor.name}' at t={obs.t_ns}{token} carries no "
            "world_from_ego and no pose track was given"
        )
    return ego_pose_at_stamp(poses, obs.sensor, obs.t_ns, tolerance_ns=tolerance_ns)


def observation_target_from_source(
    target: Observation,
    source: Observation,
    poses: Trajectory | None = None,
    *,
    tolerance_ns: int = 0,
) -> Transform:
    """``target_from_source`` between two observations (``PointCloud`` or ``Image``).

    Each observation's stored ``world_from_ego`` (its pose at capture, as the reader gives it) is
    used when present; otherwise the pose is interpolated from ``poses`` at the observation's
    stamp plus its sensor's ``time_offset_ns``. An observation with neither raises ``SyncError``
    naming its sensor and token. Example: ``cam_from_lidar =
    observation_target_from_source(frame.images["CAM_FRONT"], frame.points["LIDAR_TOP"])``.
    """
    world_from_target_ego = _observation_pose(target, poses, tolerance_ns, "target")
    world_from_source_ego = _observation_pose(source, poses, tolerance_ns, "source")
    return (
        target.sensor.ego_from_sensor.inverse()
        @ world_from_target_ego.inverse()
        @ world_from_source_ego
        @ source.sensor.ego_from_sensor
    )
