"""All numba kernels of avfusion, in one place (see DESIGN.md, Performance and Style 4).

Kernels are pure: they take C-contiguous arrays and scalars, write only into output arrays the
caller allocated, and never index outside them. They are called through typed wrappers in the
fusion modules (which validate dtype, shape and contiguity); each kernel has a plain numpy
reference implementation in the tests that it must match. Every kernel is ``@njit(cache=True)``;
``parallel=True`` with ``prange`` only where no two iterations write the same cell.

Sections are marked per feature so several people can add kernels without touching each other's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

__all__ = ["deskew_points_kernel"]


# ============================================================================================
# LiDAR deskew (avfusion/fusion/deskew.py)
# ============================================================================================


@njit(cache=True, parallel=True)
def deskew_points_kernel(
    points: npt.NDArray[np.floating],
    point_t_ns: npt.NDArray[np.int64],
    traj_t_ns: npt.NDArray[np.int64],
    traj_q: npt.NDArray[np.float64],
    traj_tr: npt.NDArray[np.float64],
    ego_from_sensor_r: npt.NDArray[np.float64],
    ego_from_sensor_t: npt.NDArray[np.float64],
    target_from_world_r: npt.NDArray[np.float64],
    target_from_world_t: npt.NDArray[np.float64],
    out: npt.NDArray[np.floating],
) -> None:
    """Move each point from its own capture time into one target frame.

    ``out[i] = target_from_world · world_from_ego(t_i) · ego_from_sensor · points[i]`` where
    ``world_from_ego(t_i)`` is the pose track (``traj_t_ns`` (T,) strictly increasing, ``traj_q``
    (T, 4) w x y z on one hemisphere, ``traj_tr`` (T, 3)) interpolated at ``point_t_ns[i]``:
    slerp of the two bracketing quaternions and lerp of the translations; outside the track the
    end segment is extrapolated (the wrapper bounds how far). ``point_t_ns`` and ``traj_t_ns``
    share one origin, so the int64 differences (and alpha) are exact. Computes in float64;
    ``out`` (N, 3) may be float32 or float64. Non-finite points give non-finite results.
    """
    n = points.shape[0]
    n_traj = traj_t_ns.shape[0]
    # Per segment (serial, T is small): the slerp angle, 1 / sin(angle) (0: use lerp) and the
    # sign that puts the segment's two quaternions on one hemisphere (the short arc).
    n_seg = max(n_traj - 1, 1)
    seg_theta = np.zeros(n_seg)
    seg_inv_sin = np.zeros(n_seg)
    seg_sign = np.ones(n_seg)
    for k in range(n_traj - 1):
        dot = (
            traj_q[k, 0] * traj_q[k + 1, 0]
            + traj_q[k, 1] * traj_q[k + 1, 1]
            + traj_q[k, 2] * traj_q[k + 1, 2]
            + traj_q[k, 3] * traj_q[k + 1, 3]
        )
        if dot < 0.0:
            seg_sign[k] = -1.0
            dot = -dot
        dot = min(dot, 1.0)
        theta = np.arccos(dot)
        sin_theta = np.sin(theta)
        seg_theta[k] = theta
        seg_inv_sin[k] = 0.0 if sin_theta < 1e-9 else 1.0 / sin_theta
    for i in prange(n):
        t = point_t_ns[i]
        if n_traj == 1:
            k = 0
            k1 = 0
            alpha = 0.0
        else:
            k = np.searchsorted(traj_t_ns, t, side="right") - 1
            if k < 0:
                k = 0
            elif k > n_traj - 2:
                k = n_traj - 2
            k1 = k + 1
            alpha = float(t - traj_t_ns[k]) / float(traj_t_ns[k1] - traj_t_ns[k])
        # slerp (the same arithmetic as calibration.transforms.slerp_quaternions)
        if seg_inv_sin[k] == 0.0:
            a0 = 1.0 - alpha
            a1 = alpha
        else:
            a0 = np.sin((1.0 - alpha) * seg_theta[k]) * seg_inv_sin[k]
            a1 = np.sin(alpha * seg_theta[k]) * seg_inv_sin[k]
        a1 *= seg_sign[k]
        qw = a0 * traj_q[k, 0] + a1 * traj_q[k1, 0]
        qx = a0 * traj_q[k, 1] + a1 * traj_q[k1, 1]
        qy = a0 * traj_q[k, 2] + a1 * traj_q[k1, 2]
        qz = a0 * traj_q[k, 3] + a1 * traj_q[k1, 3]
        inv_norm = 1.0 / np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw, qx, qy, qz = qw * inv_norm, qx * inv_norm, qy * inv_norm, qz * inv_norm
        # world_from_ego(t_i) rotation
        r00 = 1.0 - 2.0 * (qy * qy + qz * qz)
        r01 = 2.0 * (qx * qy - qz * qw)
        r02 = 2.0 * (qx * qz + qy * qw)
        r10 = 2.0 * (qx * qy + qz * qw)
        r11 = 1.0 - 2.0 * (qx * qx + qz * qz)
        r12 = 2.0 * (qy * qz - qx * qw)
        r20 = 2.0 * (qx * qz - qy * qw)
        r21 = 2.0 * (qy * qz + qx * qw)
        r22 = 1.0 - 2.0 * (qx * qx + qy * qy)
        tx = (1.0 - alpha) * traj_tr[k, 0] + alpha * traj_tr[k1, 0]
        ty = (1.0 - alpha) * traj_tr[k, 1] + alpha * traj_tr[k1, 1]
        tz = (1.0 - alpha) * traj_tr[k, 2] + alpha * traj_tr[k1, 2]
        # ego_from_sensor · p
        px, py, pz = float(points[i, 0]), float(points[i, 1]), float(points[i, 2])
        ex = (
            ego_from_sensor_r[0, 0] * px
            + ego_from_sensor_r[0, 1] * py
            + ego_from_sensor_r[0, 2] * pz
            + ego_from_sensor_t[0]
        )
        ey = (
            ego_from_sensor_r[1, 0] * px
            + ego_from_sensor_r[1, 1] * py
            + ego_from_sensor_r[1, 2] * pz
            + ego_from_sensor_t[1]
        )
        ez = (
            ego_from_sensor_r[2, 0] * px
            + ego_from_sensor_r[2, 1] * py
            + ego_from_sensor_r[2, 2] * pz
            + ego_from_sensor_t[2]
        )
        # world_from_ego(t_i) · (...)
        wx = r00 * ex + r01 * ey + r02 * ez + tx
        wy = r10 * ex + r11 * ey + r12 * ez + ty
        wz = r20 * ex + r21 * ey + r22 * ez + tz
        # target_from_world · (...)
        for j in range(3):
            out[i, j] = (
                target_from_world_r[j, 0] * wx
                + target_from_world_r[j, 1] * wy
                + target_from_world_r[j, 2] * wz
                + target_from_world_t[j]
            )
