"""LiDAR deskew: move every point of a sweep to one instant, using its own capture time.

A rotating LiDAR fires its columns one after another over the sweep (50 ms at 20 Hz) while the
vehicle moves, so a raw sweep is smeared: a point fired 25 ms before the stamp sits where the
surface was *seen from the sensor's pose at that moment*, not from the pose at the stamp.
Deskewing puts each point where it would be seen from the sensor at the reference time::

    p_ref = sensor_from_ego · ego_from_world(t_ref) · world_from_ego(t_i) · ego_from_sensor · p_i

with ``world_from_ego(t)`` interpolated from the pose track (slerp + lerp between the two
bracketing samples, inside the numba kernel ``deskew_points_kernel``, parallel over points).
Only the ego motion is compensated: points on objects that move themselves stay where the object
was at their capture time.

Times: ``point_time_ns`` (N,) are per-point capture times relative to the sweep's stamp
``t_ref_ns`` (the convention of ``PointCloud.attrs["point_time_ns"]``: ns relative to the
cloud's ``t_ns``). The stamp and the per-point times are in the sensor's clock; the sensor's
``time_offset_ns`` moves them to the ego clock of the pose track
(``t_ego = t_stamp + time_offset_ns``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.timesync import int_ns
from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.errors import AVFusionError, SyncError
from avfusion.fusion.kernels import deskew_points_kernel
from avfusion.types import PointCloud

__all__ = ["CAPTURE_TIME_ATTR", "POINT_TIME_ATTR", "deskew", "deskew_cloud"]

logger = logging.getLogger(__name__)

#: Name of the per-point time attribute in ``PointCloud.attrs`` (int, ns relative to ``t_ns``).
POINT_TIME_ATTR = "point_time_ns"
#: Name of the per-point capture time in a *deskewed* cloud (int64, ns relative to its ``t_ns``).
CAPTURE_TIME_ATTR = "capture_time_ns"


def deskew(
    points_sensor: npt.NDArray[np.floating[Any]],
    point_time_ns: npt.NDArray[np.integer[Any]],
    t_ref_ns: int,
    poses: Trajectory,
    ego_from_sensor: Transform,
    time_offset_ns: int = 0,
    *,
    t_target_ns: int | None = None,
    tolerance_ns: int = 0,
    what: str = "deskew",
) -> npt.NDArray[np.floating[Any]]:
    """Points (N, 3) of one sweep moved into the sensor frame at ``t_target_ns``.

    ``points_sensor`` (N, 3) float32 or float64 in the sensor frame, each as measured at its own
    time ``t_ref_ns + point_time_ns[i]`` (sensor clock, int ns); ``poses`` the ``world_from_ego``
    track (ego clock); ``ego_from_sensor`` the extrinsic; ``time_offset_ns`` the sensor's clock
    offset (``t_ego = t_stamp + time_offset_ns``). ``t_target_ns`` (sensor clock, default
    ``t_ref_ns``) is the instant the result is expressed at. ``tolerance_ns`` is how far beyond the
    pose track a time may reach (extrapolating the end segment, as ``Trajectory.at``); further
    raises ``SyncError``. ``what`` names the sweep in error messages (sensor, token).

    Returns a new array with the dtype of ``points_sensor`` (computed in float64); the inputs
    are not changed. Non-finite points stay non-finite.
    """
    pts = points_sensor
    if not isinstance(pts, np.ndarray) or pts.ndim != 2 or pts.shape[1] != 3:
        raise AVFusionError(
            f"{what}: points must be an (N, 3) array, got {getattr(pts, 'shape', type(pts))}"
        )
    if pts.dtype not in (np.float32, np.float64):
        raise AVFusionError(f"{what}: points must be float32 or float64, got {pts.dtype}")
    times = np.asarray(point_time_ns)
    if times.shape != (pts.shape[0],):
        raise SyncError(
            f"{what}: point_time_ns must have shape ({pts.shape[0]},) like the points, got {times.shape}"
        )
    if times.size and not np.issubdtype(times.dtype, np.integer):
        raise SyncError(
            f"{what}: point_time_ns must be integer nanoseconds, got dtype {times.dtype}"
        )
    if not isinstance(poses, Trajectory):
        raise AVFusionError(f"{what}: poses must be a Trajectory, got {type(poses).__name__}")
    if not isinstance(ego_from_sensor, Transform):
        raise AVFusionError(
            f"{what}: ego_from_sensor must be a Transform, got {type(ego_from_sensor).__name__}"
        )
    t_ref = int_ns(t_ref_ns, f"{what} t_ref_ns")
    offset = int_ns(time_offset_ns, f"{what} time_offset_ns")
    t_target = t_ref if t_target_ns is None else int_ns(t_target_ns, f"{what} t_target_ns")
    tol = int_ns(tolerance_ns, f"{what} tolerance_ns")
    if tol < 0:
        raise SyncError(f"{what}: tolerance_ns must be >= 0, got {tol}")

    out = np.empty(pts.shape, dtype=pts.dtype)
    if pts.shape[0] == 0:
        return out
    # Ego-clock times relative to the first pose sample: int64 arithmetic, exact.
    origin = poses.start_ns
    rel = times.astype(np.int64) + np.int64(t_ref + offset - origin)
    lo, hi = int(rel.min()) + origin, int(rel.max()) + origin
    if lo < poses.start_ns - tol or hi > poses.end_ns + tol:
        bad = lo if lo < poses.start_ns - tol else hi
        raise SyncError(
            f"{what}: point capture times reach {bad} ns (ego clock), outside the pose track "
            f"'{poses.name}' [{poses.start_ns}, {poses.end_ns}] ns by more than the tolerance of "
            f"{tol} ns"
        )
    try:
        world_from_target_ego = poses.at(t_target + offset, tol)
    except SyncError as exc:
        raise SyncError(f"{what}: pose at the target time: {exc}") from None
    target_from_world = (world_from_target_ego @ ego_from_sensor).inverse()
    # Only the pose samples around the sweep go to the kernel (the track may span hours).
    n_traj = len(poses)
    i0 = max(int(np.searchsorted(poses.t_ns, lo, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(poses.t_ns, hi, side="left")), n_traj - 1)
    if n_traj > 1 and i1 <= i0:  # all times in one segment, or beyond one end of the track
        i0, i1 = (i0, i0 + 1) if i0 + 1 < n_traj else (i0 - 1, i0)
    sub = slice(i0, i1 + 1)
    sub_origin = int(poses.t_ns[i0])
    deskew_points_kernel(
        np.ascontiguousarray(pts),
        rel + np.int64(origin - sub_origin),
        np.ascontiguousarray(poses.t_ns[sub] - sub_origin),
        np.ascontiguousarray(poses.quaternions[sub]),
        np.ascontiguousarray(poses.translations[sub]),
        np.ascontiguousarray(ego_from_sensor.rotation),
        np.ascontiguousarray(ego_from_sensor.translation),
        np.ascontiguousarray(target_from_world.rotation),
        np.ascontiguousarray(target_from_world.translation),
        out,
    )
    logger.debug(
        "%s: deskewed %d points spanning %.1f ms to t=%d",
        what,
        pts.shape[0],
        (hi - lo) / 1e6,
        t_target,
    )
    return out


def deskew_cloud(
    cloud: PointCloud,
    poses: Trajectory,
    *,
    t_target_ns: int | None = None,
    tolerance_ns: int = 0,
    time_attr: str = POINT_TIME_ATTR,
) -> PointCloud:
    """A ``PointCloud`` deskewed to ``t_target_ns`` (sensor clock, default the cloud's ``t_ns``).

    Uses ``cloud.attrs[time_attr]`` (ns relative to ``cloud.t_ns``), the cloud's sensor extrinsic
    and clock offset. The result has ``t_ns = t_target_ns``, carries ``world_from_ego``
    interpolated from ``poses`` at that time, and keeps the other attributes; the per-point
    times move to ``attrs[CAPTURE_TIME_ATTR]`` (int64 ns relative to the new ``t_ns``), so the
    result has no ``time_attr`` and cannot be deskewed a second time by mistake.
    """
    sensor = cloud.sensor
    what = f"deskew of '{sensor.name}'" + (
        f" sample_data {cloud.token}" if cloud.token else f" at t={cloud.t_ns}"
    )
    if time_attr not in cloud.attrs:
        have = ", ".join(sorted(cloud.attrs)) or "none"
        raise SyncError(
            f"{what}: the cloud has no per-point time attribute '{time_attr}' (attributes: {have})"
        )
    t_target = cloud.t_ns if t_target_ns is None else int_ns(t_target_ns, f"{what} t_target_ns")
    xyz = deskew(
        cloud.xyz,
        cloud.attrs[time_attr],
        cloud.t_ns,
        poses,
        sensor.ego_from_sensor,
        sensor.time_offset_ns,
        t_target_ns=t_target,
        tolerance_ns=tolerance_ns,
        what=what,
    )
    # The points now all sit at t_target: the per-point time no longer says where a point is,
    # so it moves to CAPTURE_TIME_ATTR (relative to the new t_ns) and the cloud cannot be
    # deskewed twice by mistake.
    attrs = {k: v for k, v in cloud.attrs.items() if k != time_attr}
    attrs[CAPTURE_TIME_ATTR] = np.asarray(cloud.attrs[time_attr]).astype(np.int64) + (
        cloud.t_ns - t_target
    )
    pose = poses.at(t_target + sensor.time_offset_ns, tolerance_ns)
    return PointCloud(xyz, sensor, t_target, attrs, pose, cloud.token)
