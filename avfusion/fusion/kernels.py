"""All numba kernels of avfusion, in one place (see DESIGN.md, Performance and Style 4).

Kernels are pure: they take C-contiguous arrays and scalars, write only into output arrays the
caller allocated, and never index outside them. They are called through typed wrappers in the
fusion modules (which validate dtype, shape and contiguity); each kernel has a plain numpy
reference implementation in the tests that it must match. Every kernel is ``@njit(cache=True)``;
``parallel=True`` with ``prange`` only where no two iterations write the same cell.

Sections are marked per feature so several people can add kernels without touching each other's.
"""

from __future__ import annotations

from typing import Any

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


# ============================================================================================
# Projection and occlusion (avfusion/fusion/projection.py)
# ============================================================================================
#
# Camera parameters travel as one float64 vector ``cam`` (CAM_PARAMS entries):
# fx, skew, cx, fy, cy, then the distortion coefficients (radtan: k1 k2 p1 p2 k3 k4 k5 k6;
# fisheye: k1 k2 k3 k4; zero-padded to 8), the lens model's monotonic limit and the model code
# (0 none, 1 radtan, 2 fisheye). A point's pixel is (row, col) = (floor(v + 0.5), floor(u + 0.5))
# (the pixel whose centre is nearest; OpenCV pixel centres).

__all__ += [
    "CAM_PARAMS",
    "densify_depth_kernel",
    "depth_map_kernel",
    "project_cameras_kernel",
]

#: Length of the packed camera parameter vector (see the section comment).
CAM_PARAMS = 15


@njit(cache=True, inline="always")
def _project_one(
    px: float,
    py: float,
    pz: float,
    m: tuple[float, float, float, float, float, float, float, float, float, float, float, float],
    k: tuple[float, float, float, float, float, int, float],
    dist: npt.NDArray[np.float64],
    width: int,
    height: int,
    min_depth_m: float,
) -> tuple[float, float, float, bool]:
    """(u, v, depth, in_image) of one point; u, v NaN when it is not projectable.

    ``m`` = camera_from_source row-major (r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2),
    ``k`` = (fx, skew, cx, fy, cy, model code, monotonic limit), ``dist`` the 8 coefficients:
    scalars so the compiler keeps them in registers across the point loop.
    ``CameraModel.project``'s arithmetic: non-finite points and depth <= ``min_depth_m`` are
    not projectable, nor are points outside the lens model's monotonic range.
    """
    x = m[0] * px + m[1] * py + m[2] * pz + m[3]
    y = m[4] * px + m[5] * py + m[6] * pz + m[7]
    z = m[8] * px + m[9] * py + m[10] * pz + m[11]
    nan = np.nan
    if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
        return nan, nan, z, False
    if not z > min_depth_m:
        return nan, nan, z, False
    inv_z = 1.0 / z
    xn = x * inv_z
    yn = y * inv_z
    code = k[5]
    if code == 1:
        r2 = xn * xn + yn * yn
        if not np.sqrt(r2) < k[6]:
            return nan, nan, z, False
        num = 1.0 + r2 * (dist[0] + r2 * (dist[1] + r2 * dist[4]))
        den = 1.0 + r2 * (dist[5] + r2 * (dist[6] + r2 * dist[7]))
        radial = num / den
        p1 = dist[2]
        p2 = dist[3]
        xd = xn * radial + 2.0 * p1 * xn * yn + p2 * (r2 + 2.0 * xn * xn)
        yd = yn * radial + p1 * (r2 + 2.0 * yn * yn) + 2.0 * p2 * xn * yn
    elif code == 2:
        r = np.sqrt(xn * xn + yn * yn)
        theta = np.arctan(r)
        if not theta < k[6]:
            return nan, nan, z, False
        t2 = theta * theta
        theta_d = theta * (1.0 + t2 * (dist[0] + t2 * (dist[1] + t2 * (dist[2] + t2 * dist[3]))))
        scale = theta_d / r if r > 1e-12 else 1.0
        xd = xn * scale
        yd = yn * scale
    else:
        xd = xn
        yd = yn
    u = k[0] * xd + k[1] * yd + k[2]
    v = k[3] * yd + k[4]
    return u, v, z, u >= -0.5 and u < width - 0.5 and v >= -0.5 and v < height - 0.5


@njit(cache=True, inline="always")
def _pixel_of(u: float, v: float, width: int, height: int) -> tuple[int, int]:
    """(row, col) of an in-image point, clipped into the image (never out of bounds)."""
    col = min(max(int(np.floor(u + 0.5)), 0), width - 1)
    row = min(max(int(np.floor(v + 0.5)), 0), height - 1)
    return row, col


#: Points per chunk of the projection pass (one job = one camera × one chunk).
_PROJECT_CHUNK = 16384
#: Points per block inside a chunk: the vectorised projection, then the in-image scan (in L1).
_PROJECT_BLOCK = 512


@njit(cache=True, inline="always")
def _pinhole_block(
    points: npt.NDArray[np.floating],
    m: tuple[float, float, float, float, float, float, float, float, float, float, float, float],
    fx: float,
    skew: float,
    cx: float,
    fy: float,
    cy: float,
    min_depth_m: float,
    umax: np.float32,
    vmax: np.float32,
    n: int,
    uv: npt.NDArray[np.float32],
    depth: npt.NDArray[np.float32],
    in_image: npt.NDArray[np.bool_],
    occluded: npt.NDArray[np.bool_],
    valid: npt.NDArray[np.bool_],
) -> int:
    """Pinhole projection of ``n`` points, branch-free so that LLVM vectorises it. The arrays
    are slices starting at the block (an index from 0 lets LLVM drop numba's negative-index
    wraparound, which otherwise stops the vectoriser)."""
    nan = np.float32(np.nan)
    edge = np.float32(-0.5)
    count = 0
    for i in range(n):
        px = float(points[3 * i])
        py = float(points[3 * i + 1])
        pz = float(points[3 * i + 2])
        x = m[0] * px + m[1] * py + m[2] * pz + m[3]
        y = m[4] * px + m[5] * py + m[6] * pz + m[7]
        z = m[8] * px + m[9] * py + m[10] * pz + m[11]
        # x - x == 0 is False for inf and NaN: isfinite without a call
        ok = (z > min_depth_m) & (x - x == 0.0) & (y - y == 0.0) & (z - z == 0.0)
        inv_z = 1.0 / z
        xn = x * inv_z
        yn = y * inv_z
        u = np.float32(fx * xn + skew * yn + cx)
        v = np.float32(fy * yn + cy)
        u = u if ok else nan
        v = v if ok else nan
        inside = (u >= edge) & (u < umax) & (v >= edge) & (v < vmax)
        uv[2 * i] = u
        uv[2 * i + 1] = v
        depth[i] = np.float32(z)
        in_image[i] = inside
        occluded[i] = False
        valid[i] = inside
        count += inside
    return count


@njit(cache=True, inline="always")
def _lens_block(
    points: npt.NDArray[np.floating],
    m: tuple[float, float, float, float, float, float, float, float, float, float, float, float],
    kp: tuple[float, float, float, float, float, int, float],
    dist: npt.NDArray[np.float64],
    width: int,
    height: int,
    min_depth_m: float,
    umax: np.float32,
    vmax: np.float32,
    n: int,
    uv: npt.NDArray[np.float32],
    depth: npt.NDArray[np.float32],
    in_image: npt.NDArray[np.bool_],
    occluded: npt.NDArray[np.bool_],
    valid: npt.NDArray[np.bool_],
) -> int:
    """Projection of ``n`` points through a distortion model (``_project_one``)."""
    edge = np.float32(-0.5)
    count = 0
    for i in range(n):
        u64, v64, z, _ = _project_one(
            float(points[3 * i]), float(points[3 * i + 1]), float(points[3 * i + 2]),
            m, kp, dist, width, height, min_depth_m,
        )  # fmt: skip
        u = np.float32(u64)
        v = np.float32(v64)
        inside = u >= edge and u < umax and v >= edge and v < vmax
        uv[2 * i] = u
        uv[2 * i + 1] = v
        depth[i] = np.float32(z)
        in_image[i] = inside
        occluded[i] = False
        valid[i] = inside
        count += inside
    return count


@njit(cache=True, inline="always")
def _footprint_radius(z: float, size_px_m: float, max_radius: int) -> int:
    """``min(max_radius, floor(size_px_m / (2 z) + 0.5))`` (``max_radius`` when fixed)."""
    if size_px_m <= 0.0:
        return max_radius
    rf = 0.5 * size_px_m / z + 0.5
    if not rf < max_radius:  # also for z tiny or the ratio not finite
        return max_radius
    return int(rf)


@njit(cache=True, inline="always")
def _zbuffer_band(
    index: npt.NDArray[np.int32],
    cols: npt.NDArray[np.int32],
    depth: npt.NDArray[np.float32],
    row_start: npt.NDArray[np.int64],
    width: int,
    height: int,
    r0: int,
    r1: int,
    r_max: int,
    size_px_m: float,
    disc: bool,
    ahead: int,
    tolerance_m: float,
    tolerance_rel: float,
    occluded: npt.NDArray[np.bool_],
    valid: npt.NDArray[np.bool_],
) -> None:
    """Occlusion test of the points of rows ``r0:r1`` of one camera (sorted by row: the points
    of row ``a`` are ``row_start[a]:row_start[a + 1]``), in a ring of ``2 r_max + 1 + ahead``
    buffer rows padded by ``r_max`` columns on both sides (footprint runs need no clipping).
    Step ``a`` clears the ring row that row ``a + ahead`` will use (its dirty range), lets the
    points of row ``a`` write their footprints (pass 1), and tests the points of row
    ``a - r_max``, whose footprint rows have all been written by then (pass 2)."""
    if r1 <= r0:
        return
    variable = size_px_m > 0.0
    use_reach = variable and not disc
    n_slots = min(2 * r_max + 1 + ahead, height)
    pad = r_max
    wp = width + 2 * pad
    ring = np.full(n_slots * wp, np.inf, dtype=np.float32)
    reach = np.zeros(n_slots * wp if use_reach else 1, dtype=np.uint8)
    dirty_lo = np.full(n_slots, wp, dtype=np.int64)
    dirty_hi = np.full(n_slots, -1, dtype=np.int64)
    inf = np.float32(np.inf)
    for a in range(r0 - r_max, r1 + r_max):
        enter = a + ahead
        if enter >= 0 and enter < height:
            s = enter % n_slots
            lo = dirty_lo[s]
            hi = dirty_hi[s]
            if hi >= lo:
                seg = ring[s * wp + lo : s * wp + hi + 1]
                for q in range(seg.size):  # from 0: vectorised (no wraparound test)
                    seg[q] = inf
                if use_reach:
                    seg_r = reach[s * wp + lo : s * wp + hi + 1]
                    for q in range(seg_r.size):
                        seg_r[q] = 0
                dirty_lo[s] = wp
                dirty_hi[s] = -1
        if a >= 0 and a < height:  # pass 1: the points of row a write their footprints
            sa = a % n_slots
            base = sa * wp + pad
            p0 = row_start[a]
            p1 = row_start[a + 1]
            if p1 > p0:
                if not disc:  # a run in its own row; no clipping thanks to the padding
                    lo_c = np.int64(wp)
                    hi_c = np.int64(-1)
                    for p in range(p0, p1):
                        col = np.int64(cols[p])
                        z = depth[p]
                        r = _footprint_radius(float(z), size_px_m, r_max)
                        q0 = base + col - r
                        q1 = base + col + r
                        if use_reach:
                            for qs in range(q0, q1 + 1):
                                q = np.uint64(qs)
                                if z < ring[q]:
                                    ring[q] = z
                                    reach[q] = r
                                elif z == ring[q] and r > reach[q]:
                                    reach[q] = r
                        else:
                            for qs in range(q0, q1 + 1):
                                q = np.uint64(qs)
                                v = ring[q]
                                ring[q] = z if z < v else v
                        lo_c = min(lo_c, col + pad - r)
                        hi_c = max(hi_c, col + pad + r)
                    dirty_lo[sa] = min(dirty_lo[sa], lo_c)
                    dirty_hi[sa] = max(dirty_hi[sa], hi_c)
                elif variable:  # a disc over the rows around
                    for p in range(p0, p1):
                        col = np.int64(cols[p])
                        z = depth[p]
                        r = _footprint_radius(float(z), size_px_m, r_max)
                        x0 = max(a - r, 0)
                        sx = x0 % n_slots
                        for x in range(x0, min(a + r, height - 1) + 1):
                            dx = x - a
                            half = int(np.sqrt(float(r * r - dx * dx)))
                            bx = sx * wp + pad + col
                            for q in range(bx - half, bx + half + 1):
                                v = ring[q]
                                ring[q] = z if z < v else v
                            dirty_lo[sx] = min(dirty_lo[sx], col + pad - half)
                            dirty_hi[sx] = max(dirty_hi[sx], col + pad + half)
                            sx += 1
                            if sx == n_slots:
                                sx = 0
                else:  # its own pixel
                    lo_c = np.int64(wp)
                    hi_c = np.int64(-1)
                    for p in range(p0, p1):
                        col = np.int64(cols[p])
                        z = depth[p]
                        v = ring[base + col]
                        ring[base + col] = z if z < v else v
                        lo_c = min(lo_c, col + pad)
                        hi_c = max(hi_c, col + pad)
                    dirty_lo[sa] = min(dirty_lo[sa], lo_c)
                    dirty_hi[sa] = max(dirty_hi[sa], hi_c)
        row = a - r_max
        if row >= r0 and row < r1:  # pass 2: test the points of row `row`
            x0 = max(row - r_max, 0)
            x1 = min(row + r_max, height - 1)
            s0 = x0 % n_slots
            srow = row % n_slots
            for p in range(row_start[row], row_start[row + 1]):
                col = np.int64(cols[p]) + pad
                z = float(depth[p])
                limit = z - (tolerance_m + tolerance_rel * z)
                hidden = False
                if not disc:
                    s = s0
                    for x in range(x0, x1 + 1):
                        q = np.uint64(s * wp + col)
                        if float(ring[q]) < limit and (not use_reach or abs(x - row) <= reach[q]):
                            hidden = True
                            break
                        s += 1
                        if s == n_slots:
                            s = 0
                elif variable:
                    hidden = float(ring[srow * wp + col]) < limit
                else:
                    s = s0
                    for x in range(x0, x1 + 1):
                        dx = x - row
                        half = int(np.sqrt(float(r_max * r_max - dx * dx)))
                        bx = s * wp + col
                        for q in range(bx - half, bx + half + 1):
                            if float(ring[q]) < limit:
                                hidden = True
                                break
                        if hidden:
                            break
                        s += 1
                        if s == n_slots:
                            s = 0
                if hidden:
                    i = index[p]
                    occluded[i] = True
                    valid[i] = False


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def project_cameras_kernel(
    points: npt.NDArray[np.floating],
    transforms: npt.NDArray[np.float64],
    cams: npt.NDArray[np.float64],
    sizes: npt.NDArray[np.int64],
    min_depth_m: float,
    occlusion: bool,
    max_radius: int,
    size_px_m: npt.NDArray[np.float64],
    disc: bool,
    tolerance_m: float,
    tolerance_rel: float,
    n_threads: int,
    uv: npt.NDArray[np.float32],
    depth: npt.NDArray[np.float32],
    in_image: npt.NDArray[np.bool_],
    occluded: npt.NDArray[np.bool_],
    valid: npt.NDArray[np.bool_],
    list_index: npt.NDArray[np.int32],
    list_key: npt.NDArray[np.int32],
    list_z: npt.NDArray[np.float32],
    sorted_index: npt.NDArray[np.int32],
    sorted_col: npt.NDArray[np.int32],
    sorted_z: npt.NDArray[np.float32],
) -> int:
    """Project one cloud into C cameras and (optionally) occlusion-test it, fused and parallel.

    ``points``: the (N, 3) cloud flattened to (3N,) (float32 or float64, source frame);
    ``transforms`` (C, 12): camera_from_source of each camera, row-major ``r00 r01 r02 t0 r10
    ... t2``; ``cams`` (C, ``CAM_PARAMS``) the packed camera models; ``sizes`` (C, 2) width,
    height. Writes, per camera c: ``uv[c]`` (2N,) = (u0, v0, u1, v1, ...) float32 pixel
    coordinates (NaN where not projectable), ``depth[c]`` (N,) float32 camera z, ``in_image[c]``,
    ``occluded[c]`` and ``valid[c] = in_image & ~occluded``. Arithmetic is float64 and rounded
    to float32 on output; ``in_image`` and each point's pixel (``floor(v + 0.5), floor(u +
    0.5)``) are taken from the float32 values (so they agree with what a caller reads), and the
    occlusion test uses the float32 depths. Returns 0, or -1 (nothing written) when an array
    has the wrong shape, an image side is below 1 (or, with occlusion, above 65535 px), or
    ``max_radius`` is outside [0, 255]. The six scratch arrays (C, >= N) are used only with
    ``occlusion``; their contents on entry do not matter.

    Occlusion: point j *covers* pixel q when q lies in j's footprint, the square (or ``disc``)
    of radius ``r_j`` px around j's pixel, ``r_j = max_radius`` or, when ``size_px_m[c] > 0``,
    ``min(max_radius, floor(size_px_m[c] / (2 z_j) + 0.5))``. Point i is occluded when a point
    covering i's pixel is nearer than ``z_i - (tolerance_m + tolerance_rel · z_i)``. Exact
    two-pass formulations: squares are separable ((1) every point min-writes its depth over the
    ``2 r_j + 1`` pixels of its own row and, for variable radii, the radius of the nearest point
    there (the largest among equal depths); (2) a point is hidden when, in the column through
    its pixel, rows ``±max_radius``, a value below its limit was written by a point whose radius
    reaches its row); a variable disc writes its disc and tests its own pixel; a fixed disc
    writes its own pixel and tests the disc around it (footprints are symmetric).

    Work, all in parallel over ``n_threads`` (jobs dealt round-robin; no two jobs write one
    cell, so the result does not depend on ``n_threads``): (a) camera × chunk of points:
    project (a branch-free loop that LLVM vectorises, for pinhole cameras) and list the chunk's
    in-image points (index, pixel, depth) with a histogram of their rows; (b) a stable counting
    sort of each camera's list by pixel row; (c) camera × band of image rows: the two passes in
    a ring of ``2 max_radius + 1`` buffer rows (``3 max_radius + 1`` for variable discs), which
    stays in the L1/L2 cache, where the old full-image buffer (5.8 MB at 1600×900) did not.
    """
    n3 = points.shape[0]
    n = n3 // 3
    n_cams = transforms.shape[0]
    if (
        n3 != 3 * n
        or transforms.shape[1] != 12
        or cams.shape[0] != n_cams
        or cams.shape[1] != CAM_PARAMS
        or sizes.shape[0] != n_cams
        or sizes.shape[1] != 2
        or size_px_m.shape[0] != n_cams
        or uv.shape[0] != n_cams
        or uv.shape[1] < 2 * n
        or depth.shape[0] != n_cams
        or depth.shape[1] < n
        or in_image.shape[0] != n_cams
        or in_image.shape[1] < n
        or occluded.shape[0] != n_cams
        or occluded.shape[1] < n
        or valid.shape[0] != n_cams
        or valid.shape[1] < n
        or n_threads < 1
    ):
        return -1
    h_max = 1
    for c in range(n_cams):
        if sizes[c, 0] < 1 or sizes[c, 1] < 1:
            return -1
        if occlusion and (sizes[c, 0] > 0xFFFF or sizes[c, 1] > 0xFFFF):
            return -1
        h_max = max(h_max, sizes[c, 1])
    if occlusion:
        for a in (list_index, list_key, sorted_index, sorted_col):
            if a.shape[0] != n_cams or a.shape[1] < n:
                return -1
        if (
            list_z.shape[0] != n_cams or list_z.shape[1] < n
            or sorted_z.shape[0] != n_cams or sorted_z.shape[1] < n
            or max_radius < 0 or max_radius > 255
        ):  # fmt: skip
            return -1
    if n == 0 or n_cams == 0:
        return 0
    n_chunks = (n + _PROJECT_CHUNK - 1) // _PROJECT_CHUNK
    n_jobs = n_cams * n_chunks
    # per camera, row and chunk: in-image points (pass 1), then the chunk's next sorted slot
    hist = np.zeros((n_cams, n_chunks, h_max if occlusion else 0), dtype=np.int64)
    counts = np.zeros((n_cams, n_chunks), dtype=np.int64)
    # ---- pass 1: project; collect each chunk's in-image points (index, pixel, depth)
    for t in prange(n_threads):
        for j in range(t, n_jobs, n_threads):
            c = j // n_chunks
            k = j - c * n_chunks
            lo = k * _PROJECT_CHUNK
            hi = min(lo + _PROJECT_CHUNK, n)
            width = sizes[c, 0]
            height = sizes[c, 1]
            tf = transforms[c]
            m = (
                tf[0],
                tf[1],
                tf[2],
                tf[3],
                tf[4],
                tf[5],
                tf[6],
                tf[7],
                tf[8],
                tf[9],
                tf[10],
                tf[11],
            )
            cam = cams[c]
            code = int(cam[14])
            kp = (cam[0], cam[1], cam[2], cam[3], cam[4], code, cam[13])
            dist = cam[5:13].copy()
            umax = np.float32(width - 0.5)
            vmax = np.float32(height - 0.5)
            uvc = uv[c]
            dc = depth[c]
            ic = in_image[c]
            oc = occluded[c]
            vc = valid[c]
            pos = lo
            li = list_index[c]
            lk = list_key[c]
            lz = list_z[c]
            hk = hist[c, k]
            for b0 in range(lo, hi, _PROJECT_BLOCK):
                b1 = min(b0 + _PROJECT_BLOCK, hi)
                blk = (points[3 * b0 : 3 * b1], uvc[2 * b0 : 2 * b1], dc[b0:b1], ic[b0:b1],
                       oc[b0:b1], vc[b0:b1])  # fmt: skip
                if code == 0:
                    n_in = _pinhole_block(blk[0], m, kp[0], kp[1], kp[2], kp[3], kp[4], min_depth_m,
                                   umax, vmax, b1 - b0, blk[1], blk[2], blk[3], blk[4], blk[5])  # fmt: skip
                else:
                    n_in = _lens_block(blk[0], m, kp, dist, width, height, min_depth_m, umax, vmax,
                                b1 - b0, blk[1], blk[2], blk[3], blk[4], blk[5])  # fmt: skip
                if occlusion and n_in > 0:
                    b_uv = blk[1]
                    b_dc = blk[2]
                    b_ic = blk[3]
                    for ii in range(b1 - b0):
                        if b_ic[ii]:
                            col = min(max(int(np.floor(float(b_uv[2 * ii]) + 0.5)), 0), width - 1)
                            row = min(
                                max(int(np.floor(float(b_uv[2 * ii + 1]) + 0.5)), 0), height - 1
                            )
                            q = np.uint64(pos)  # in [lo, hi): no wraparound test
                            li[q] = b0 + ii
                            lk[q] = (row << 16) | col
                            lz[q] = b_dc[ii]
                            hk[np.uint64(row)] += 1
                            pos += 1
            counts[c, k] = pos - lo
    if not occlusion:
        return 0
    # ---- counting sort by row (stable: rows, then chunks, then index)
    row_start = np.zeros((n_cams, h_max + 1), dtype=np.int64)
    for c in range(n_cams):
        acc = 0
        height = sizes[c, 1]
        for r in range(height):
            row_start[c, r] = acc
            for k in range(n_chunks):
                cnt = hist[c, k, r]
                hist[c, k, r] = acc
                acc += cnt
        for r in range(height, h_max + 1):
            row_start[c, r] = acc
    for t in prange(n_threads):
        for j in range(t, n_jobs, n_threads):
            c = j // n_chunks
            k = j - c * n_chunks
            lo = k * _PROJECT_CHUNK
            off = hist[c, k]
            rs = row_start[c]
            si = sorted_index[c]
            sc = sorted_col[c]
            sz = sorted_z[c]
            li = list_index[c]
            lk = list_key[c]
            lz = list_z[c]
            for e in range(lo, lo + counts[c, k]):
                ue = np.uint64(e)
                key = lk[ue]
                row = np.uint64(key >> 16)
                p = off[row]
                if (
                    p < rs[row + np.uint64(1)]
                ):  # always (prefix sums); keeps every write provably in range
                    off[row] = p + 1
                    up = np.uint64(p)
                    si[up] = li[ue]
                    sc[up] = key & 0xFFFF
                    sz[up] = lz[ue]
    # ---- z-buffer, a band of rows per job, in a ring of rows
    r_max = max_radius
    variable = False
    for c in range(n_cams):
        if size_px_m[c] > 0.0:
            variable = True
    ahead = r_max if (disc and variable) else 0
    span = 2 * r_max + 1 + ahead
    n_bands = max(1, min(8, h_max // (4 * span)))
    n_jobs = n_cams * n_bands
    for t in prange(n_threads):
        for j in range(t, n_jobs, n_threads):
            c = j // n_bands
            band = j - c * n_bands
            height = sizes[c, 1]
            b_lo = band * height // n_bands
            b_hi = (band + 1) * height // n_bands
            si = sorted_index[c]
            sc = sorted_col[c]
            sz = sorted_z[c]
            rs = row_start[c]
            w = sizes[c, 0]
            oc = occluded[c]
            vc = valid[c]
            # literal flags: each footprint kind gets its own specialised (inlined) loop
            if not disc and not variable:
                _zbuffer_band(si, sc, sz, rs, w, height, b_lo, b_hi, r_max, 0.0, False, 0, tolerance_m, tolerance_rel,
                              oc, vc)  # fmt: skip
            elif not disc:
                _zbuffer_band(si, sc, sz, rs, w, height, b_lo, b_hi, r_max, size_px_m[c], False, 0, tolerance_m, tolerance_rel,
                              oc, vc)  # fmt: skip
            elif not variable:
                _zbuffer_band(si, sc, sz, rs, w, height, b_lo, b_hi, r_max, 0.0, True, 0, tolerance_m, tolerance_rel,
                              oc, vc)  # fmt: skip
            else:
                _zbuffer_band(si, sc, sz, rs, w, height, b_lo, b_hi, r_max, size_px_m[c], True, ahead, tolerance_m, tolerance_rel,
                              oc, vc)  # fmt: skip
    return 0


@njit(cache=True)
def depth_map_kernel(
    uv: npt.NDArray[np.float64],
    depth: npt.NDArray[np.float64],
    use: npt.NDArray[np.bool_],
    out: npt.NDArray[np.float32],
) -> None:
    """Sparse depth image: per pixel the nearest point with ``use`` (``out`` starts at 0 = no
    return). Points whose pixel falls outside ``out`` are ignored; with ``uv`` or ``use``
    shorter than ``depth`` nothing is written. Serial (deterministic)."""
    height, width = out.shape
    if uv.shape[0] < depth.shape[0] or uv.shape[1] < 2 or use.shape[0] < depth.shape[0]:
        return
    for i in range(depth.shape[0]):
        if not use[i]:
            continue
        u = uv[i, 0]
        v = uv[i, 1]
        if not (u >= -0.5 and u < width - 0.5 and v >= -0.5 and v < height - 0.5):
            continue
        row, col = _pixel_of(u, v, width, height)
        d = np.float32(depth[i])
        if out[row, col] == 0.0 or d < out[row, col]:
            out[row, col] = d


@njit(cache=True, parallel=True)
def densify_depth_kernel(
    depth: npt.NDArray[np.float32],
    k: int,
    max_distance_px: float,
    power: float,
    out: npt.NDArray[np.float32],
) -> None:
    """Inverse-distance weighting of the ``k`` nearest returns within ``max_distance_px``.

    For every pixel without a return (``depth == 0``) the non-zero pixels of the window of
    radius ``ceil(max_distance_px)`` are candidates; the k nearest by pixel distance (ties: scan
    order, row-major) within ``max_distance_px`` are averaged with weights ``1 / d**power``.
    Pixels with a return keep it; pixels with no candidate stay 0. Parallel over rows (each row
    of ``out`` is written by one iteration only).
    """
    height, width = depth.shape
    if out.shape[0] != height or out.shape[1] != width or k < 1:
        return
    rad = int(np.ceil(max_distance_px))
    max_d2 = max_distance_px * max_distance_px
    for i in prange(height):
        best_d2 = np.empty(k, dtype=np.float64)
        best_v = np.empty(k, dtype=np.float64)
        for j in range(width):
            own = depth[i, j]
            if own != 0.0:
                out[i, j] = own
                continue
            m = 0
            for a in range(max(i - rad, 0), min(i + rad, height - 1) + 1):
                da = a - i
                for b in range(max(j - rad, 0), min(j + rad, width - 1) + 1):
                    val = depth[a, b]
                    if val == 0.0:
                        continue
                    db = b - j
                    d2 = float(da * da + db * db)
                    if d2 > max_d2:
                        continue
                    if m < k:
                        pos = m
                        m += 1
                    elif d2 < best_d2[m - 1]:
                        pos = m - 1
                    else:
                        continue
                    # insertion keeps best_d2 sorted ascending (stable: earlier wins ties)
                    while pos > 0 and best_d2[pos - 1] > d2:
                        best_d2[pos] = best_d2[pos - 1]
                        best_v[pos] = best_v[pos - 1]
                        pos -= 1
                    best_d2[pos] = d2
                    best_v[pos] = val
            if m == 0:
                out[i, j] = 0.0
                continue
            wsum = 0.0
            vsum = 0.0
            for q in range(m):
                w = 1.0 / np.sqrt(best_d2[q]) ** power
                wsum += w
                vsum += w * best_v[q]
            out[i, j] = np.float32(vsum / wsum)


# ============================================================================================
# Voxel grids: voxelisation, LiDAR ray casting, camera visibility, points in boxes
# (avfusion/fusion/voxel.py)
# ============================================================================================
#
# A grid reaches the kernels as ``lo`` (3,) float64 (the range minimum), ``voxel_m`` and
# ``inv_voxel`` (1 / voxel size); its shape is always taken from the output arrays, so the two
# can never disagree. The voxel of a point p on an axis is ``(p - lo) * inv_voxel`` in float64,
# floored; a point is inside when that lies in [0, n) on all three axes (``_axis_voxel``; the
# numpy ``GridSpec.index_of`` uses the same expression). Linear voxel indices are C order
# (x slowest, z fastest), as ``np.ravel_multi_index`` on (nx, ny, nz).
#
# Counts that many inputs add to (points per voxel, free/hit counts, visibility) are accumulated
# per *chunk* of the input: chunk c of ``T`` (points: contiguous, ``[c n / T, (c + 1) n / T)``;
# rays: interleaved, i = c, c + T, ..., which balances long and short rays) writes only
# ``scratch[c]``, then one serial, vectorised pass sums (or ORs) the chunks (faster than a
# parallel region for a pass this light). Integer sums make every result exact and independent of
# ``T``; the wrapper picks ``T`` (threads, bounded by memory and work). Every write is to an
# index proven in range: voxel indices are checked against the array shape (NaN fails every
# check), and the ray walk only moves between its start and end voxel, both in the grid.

__all__ += [
    "RAY_HIT",
    "RAY_INVALID",
    "RAY_MISSED",
    "RAY_PASSED",
    "camera_visibility_kernel",
    "points_in_boxes_kernel",
    "raycast_kernel",
    "voxelize_kernel",
]

#: ``raycast_kernel`` per-ray status: origin or end point not finite (or too far apart to
#: subtract), nothing written.
RAY_INVALID = 0
#: The segment does not cross the grid (or has zero length outside it); nothing written.
RAY_MISSED = 1
#: The end point is outside the grid; the voxels the segment crosses got a free count.
RAY_PASSED = 2
#: The end point is inside the grid: a hit count there, free counts on the voxels before it.
RAY_HIT = 3


@njit(cache=True, inline="always")
def _axis_voxel(p: float, lo: float, inv_voxel: float, n: int) -> int:
    """Voxel index of coordinate ``p`` on one axis, or -1 outside [0, n) (and for NaN)."""
    f = (p - lo) * inv_voxel
    if f >= 0.0 and f < n:
        return int(f)
    return -1


@njit(cache=True, inline="always")
def _axis_voxel_clamped(p: float, lo: float, inv_voxel: float, n: int) -> int:
    """Voxel index of a coordinate on one axis, clamped into [0, n - 1] (NaN gives 0)."""
    f = (p - lo) * inv_voxel
    if not f > 0.0:
        return 0
    if f >= n - 1:
        return n - 1
    return int(f)


@njit(cache=True, inline="always")
def _chunk(c: int, n_chunks: int, n: int) -> tuple[int, int]:
    """[start, stop) of chunk c of n items split into n_chunks contiguous chunks."""
    return (c * n) // n_chunks, ((c + 1) * n) // n_chunks


@njit(cache=True, inline="always")
def _clip_segment(
    ox: float,
    oy: float,
    oz: float,
    dx: float,
    dy: float,
    dz: float,
    t_lo: float,
    t_hi: float,
    lo: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
) -> tuple[float, float]:
    """Slab clip of ``o + t d``, t in [t_lo, t_hi], to the box [lo, hi]: (t0, t1), t0 > t1 if
    the two do not meet."""
    t0 = t_lo
    t1 = t_hi
    for a in range(3):
        o = ox if a == 0 else (oy if a == 1 else oz)
        d = dx if a == 0 else (dy if a == 1 else dz)
        if d == 0.0:
            if o < lo[a] or o > hi[a]:
                return 1.0, 0.0
        else:
            ta = (lo[a] - o) / d
            tb = (hi[a] - o) / d
            if ta > tb:
                ta, tb = tb, ta
            t0 = max(t0, ta)
            t1 = min(t1, tb)
    return t0, t1


@njit(cache=True, inline="always")
def _dda_axis(
    o: float, d: float, s: int, e: int, lo: float, voxel_m: float, t_start: float
) -> tuple[int, float, float]:
    """Amanatides–Woo set-up on one axis: (step, t_max, t_delta) for a walk from voxel s to e.

    The step direction comes from the integer indices, so the walk always ends at e; the ray's
    own parameters only order the steps between axes. Should rounding make the ray point the
    other way (start or end voxel clamped onto the grid boundary), the axis steps first.
    """
    if e == s:
        return 0, np.inf, np.inf
    step = 1 if e > s else -1
    if d == 0.0 or (d > 0.0) != (step > 0):
        return step, t_start, 0.0
    boundary = lo + (s + (1 if step > 0 else 0)) * voxel_m
    return step, (boundary - o) / d, voxel_m / abs(d)


@njit(cache=True, inline="always")
def _dda_next_axis(
    x: int,
    y: int,
    z: int,
    ex: int,
    ey: int,
    ez: int,
    tmx: float,
    tmy: float,
    tmz: float,
) -> int:
    """The axis of the next step: the smallest t_max among the axes not yet at the end voxel
    (ties: x, then y). Always an axis with a step left, even with NaN t_max."""
    if x != ex and (y == ey or tmx <= tmy) and (z == ez or tmx <= tmz):
        return 0
    if y != ey and (z == ez or tmy <= tmz):
        return 1
    return 2


@njit(cache=True, inline="always")
def _grid_hi(lo: npt.NDArray[np.float64], voxel_m: float, nx: int, ny: int, nz: int) -> Any:
    """The grid's upper corner (3,) from its lower corner, voxel size and shape."""
    hi = np.empty(3)
    hi[0] = lo[0] + nx * voxel_m
    hi[1] = lo[1] + ny * voxel_m
    hi[2] = lo[2] + nz * voxel_m
    return hi


@njit(cache=True, inline="always")
def _finite6(a: float, b: float, c: float, d: float, e: float, f: float) -> bool:
    return (
        np.isfinite(a)
        and np.isfinite(b)
        and np.isfinite(c)
        and np.isfinite(d)
        and np.isfinite(e)
        and np.isfinite(f)
    )


@njit(cache=True, inline="always")
def _ray_voxel_clamped(
    ox: float, oy: float, oz: float, dx: float, dy: float, dz: float, t: float,
    lo: npt.NDArray[np.float64], inv_voxel: float, nx: int, ny: int, nz: int,
) -> tuple[int, int, int]:  # fmt: skip
    """The voxel (clamped into the grid) of the ray point origin + t · direction."""
    return (
        _axis_voxel_clamped(ox + t * dx, lo[0], inv_voxel, nx),
        _axis_voxel_clamped(oy + t * dy, lo[1], inv_voxel, ny),
        _axis_voxel_clamped(oz + t * dz, lo[2], inv_voxel, nz),
    )


@njit(cache=True, inline="always")
def _dda_step(
    x: int, y: int, z: int, ex: int, ey: int, ez: int,
    stx: int, sty: int, stz: int, tmx: float, tmy: float, tmz: float,
    tdx: float, tdy: float, tdz: float,
) -> tuple[int, int, int, float, float, float]:  # fmt: skip
    """One Amanatides–Woo step towards (ex, ey, ez): the next voxel and the updated t_max."""
    axis = _dda_next_axis(x, y, z, ex, ey, ez, tmx, tmy, tmz)
    if axis == 0:
        return x + stx, y, z, tmx + tdx, tmy, tmz
    if axis == 1:
        return x, y + sty, z, tmx, tmy + tdy, tmz
    return x, y, z + stz, tmx, tmy, tmz + tdz


@njit(cache=True, inline="always")
def _not_finite(points: npt.NDArray[np.floating], i: int, fx: float, fy: float, fz: float) -> bool:
    """Whether point ``i``, whose grid coordinates are ``fx, fy, fz``, is not finite. The
    coordinates are all finite for nearly every point ((NaN or ±inf) × 0 is NaN); only when
    they are not (a point not finite, or beyond ~1e307 m) are the point's own values tested:
    testing them for every point outside the grid made the voxelisers' passes 0.5-1 ms slower
    per 1M points."""
    if (fx + fy + fz) * 0.0 == 0.0:
        return False
    return not (
        np.isfinite(points[i, 0]) and np.isfinite(points[i, 1]) and np.isfinite(points[i, 2])
    )


@njit(cache=True, inline="always")
def _majority(votes: npt.NDArray[Any], order: npt.NDArray[np.int64]) -> tuple[int, int]:
    """(the class with the most of ``votes[:C]``, -1 when all are 0; the sum of ``votes[:C]``),
    with ``order`` the C classes most preferred first (``np.argsort(tie_rank)``): visiting them
    in that order and taking only a strictly larger count settles ties without comparing
    ranks. The voxelisers' one rule."""
    best = -1
    best_n = 0
    total = 0
    for k in order:
        h = int(votes[k])
        total += h
        if h > best_n:
            best = k
            best_n = h
    return best, total


@njit(cache=True)
def _voxel_rows_pass(
    points: npt.NDArray[np.floating], labels: npt.NDArray[np.uint8], lo_x: float, lo_y: float,
    lo_z: float, inv_voxel: float, nx: int, ny: int, nz: int, start: int, stop: int,
    grid: npt.NDArray[np.int32], point_voxel: npt.NDArray[np.int32],
    flat_hist: npt.NDArray[np.int32], first_row: int, n_classes: int,
) -> tuple[int, int, int]:  # fmt: skip
    """``voxelize_kernel``'s pass with labels over points [start, stop): voxel indices, and
    per voxel met a histogram row (rows from ``first_row`` on, ``grid`` maps a voxel to its
    row + 1; a row: C counts, labels outside [0, C), the voxel). Returns (rows used,
    outside, non-finite)."""
    width = n_classes + 2
    n_r = 0
    outside = 0
    bad = 0
    with_pv = point_voxel.shape[0] > 0
    for i in range(start, stop):
        fx = (float(points[i, 0]) - lo_x) * inv_voxel
        fy = (float(points[i, 1]) - lo_y) * inv_voxel
        fz = (float(points[i, 2]) - lo_z) * inv_voxel
        if fx >= 0.0 and fx < nx and fy >= 0.0 and fy < ny and fz >= 0.0 and fz < nz:
            v = (int(fx) * ny + int(fy)) * nz + int(fz)
            if with_pv:
                point_voxel[i] = v
            r = grid[v] - 1
            if r < 0:  # the first point here in v: a new, zeroed row
                r = first_row + n_r
                n_r += 1
                grid[v] = r + 1
                at = r * width
                for k in range(n_classes + 1):
                    flat_hist[at + k] = 0
                flat_hist[at + n_classes + 1] = v
            flat_hist[r * width + min(int(labels[i]), n_classes)] += 1
        else:
            outside += 1
            not_finite = _not_finite(points, i, fx, fy, fz)
            bad += not_finite
            if with_pv:
                point_voxel[i] = -2 if not_finite else -1
    return n_r, outside, bad


@njit(cache=True, parallel=True)
def voxelize_kernel(
    points: npt.NDArray[np.floating],
    labels: npt.NDArray[np.uint8],
    lo: npt.NDArray[np.float64],
    inv_voxel: float,
    tie_rank: npt.NDArray[np.int64],
    empty_label: int,
    scratch: npt.NDArray[np.int32],
    counts: npt.NDArray[np.int32],
    point_voxel: npt.NDArray[np.int32],
    semantics: npt.NDArray[np.uint8],
    hist: npt.NDArray[np.int32],
) -> tuple[int, int, int]:
    """Points per voxel and each voxel's majority class, for any number of classes (up to 23,
    ``voxelize_dense_kernel`` is faster; without labels, ``count_points_kernel``).

    ``points`` (N, 3); ``scratch`` (T, nx, ny, nz) int32 (any content; chunk c >= 1 uses
    ``scratch[c]``, chunk 0 works in ``counts``, so ``scratch[0]`` is never touched and its
    pages never mapped); ``counts`` (nx, ny, nz) int32 out; ``point_voxel`` (N,) int32 out: the linear voxel index of each point, -1
    outside the grid, -2 not finite (an empty array: not computed).

    Labels: ``labels`` (N,) uint8 class ids in [0, C) with C = ``tie_rank.shape[0]`` (any
    other value counts as a label outside [0, C)).
    ``semantics`` (nx, ny, nz) uint8 out: per voxel the class with the most points; ties go to
    the class with the smallest ``tie_rank`` (``tie_rank = arange(C)`` = the lowest class id);
    voxels without points (or only points with a label outside [0, C)) get ``empty_label``.
    ``hist`` (T, R, C + 2) int32 scratch (any content) with R >= min(ceil(N / T), voxels).

    Method: one pass over the points. Chunk c numbers the voxels it meets in the
    order it meets them (its map, ``scratch[c]``, holds a voxel's row + 1, 0 = not met) and
    counts its points straight into a compact histogram: one row per voxel met, C counts, one
    count of labels outside [0, C), and the voxel's index. No sort, and the histogram is as
    small as the occupied voxels (1M points in the 640k-voxel Occ3D grid: ~24k rows a chunk).
    Then the rows of a voxel met by several chunks are added into the row of the first chunk
    that met it (serial, over the occupied voxels only), and a parallel pass over those rows
    writes each voxel's count and majority class (one row per voxel: no two iterations write
    one cell). Chunk 0's map lives in ``counts``: the totals overwrite it, and the voxels
    without points keep its zeros.

    Returns (inside, non-finite, labels outside [0, C) among the inside points).
    """
    n = points.shape[0]
    nx, ny, nz = counts.shape
    n_chunks = scratch.shape[0]
    if point_voxel.shape[0] not in (0, n) or scratch.shape[1:] != counts.shape or n_chunks < 1:
        raise ValueError("voxelize_kernel: output shapes do not match the input")
    if n > 2147483647:
        raise ValueError("voxelize_kernel: more than 2**31 - 1 points")
    n_cells = nx * ny * nz
    n_classes = tie_rank.shape[0]
    width = n_classes + 2  # C counts, labels outside [0, C), the voxel
    if (
        labels.shape[0] != n
        or semantics.shape != counts.shape
        or hist.shape[0] != n_chunks
        or hist.shape[1] < min((n + n_chunks - 1) // n_chunks, n_cells)
        or hist.shape[2] != width
    ):
        raise ValueError("voxelize_kernel: label arrays do not match the points")
    if n_chunks * hist.shape[1] >= 2147483647:  # rows + 1 are kept in int32 maps
        raise ValueError("voxelize_kernel: too many histogram rows")
    flat_counts = counts.reshape(n_cells)
    flat_scratch = scratch.reshape(n_chunks, n_cells)
    lo_x, lo_y, lo_z = lo[0], lo[1], lo[2]
    n_nan = np.zeros(n_chunks, np.int64)
    n_in = np.zeros(n_chunks, np.int64)
    n_rows = np.zeros(n_chunks, np.int64)
    cap = hist.shape[1]
    flat_hist = hist.reshape(hist.shape[0] * cap * width)
    for c in prange(n_chunks):
        grid = flat_counts if c == 0 else flat_scratch[c]
        grid[:] = 0
        start, stop = _chunk(c, n_chunks, n)
        n_r, outside, bad = _voxel_rows_pass(
            points, labels, lo_x, lo_y, lo_z, inv_voxel, nx, ny, nz, start, stop,
            grid, point_voxel, flat_hist, c * cap, n_classes,
        )  # fmt: skip
        n_nan[c] = bad
        n_in[c] = stop - start - outside
        n_rows[c] = n_r
    # One row per occupied voxel (``home``): chunk 0's rows, then the rows of voxels no
    # earlier chunk met; the row of a voxel an earlier chunk met is added to that chunk's row.
    # Chunk 0's map (in ``counts``) becomes the map voxel -> home + 1.
    home = np.empty(n_rows.sum(), np.int64)
    n_home = n_rows[0]
    for r in range(n_home):
        home[r] = r
    for c in range(1, n_chunks):
        for r in range(c * cap, c * cap + n_rows[c]):
            at = r * width
            v = flat_hist[at + n_classes + 1]
            h = flat_counts[v] - 1
            if h < 0:
                flat_counts[v] = r + 1
                home[n_home] = r
                n_home += 1
            else:
                dst = h * width
                for k in range(n_classes + 1):
                    flat_hist[dst + k] += flat_hist[at + k]
    flat_sem = semantics.reshape(n_cells)
    flat_sem[:] = empty_label
    order = np.argsort(tie_rank)
    n_bad = np.zeros(n_chunks, np.int64)
    for c in prange(n_chunks):
        start, stop = _chunk(c, n_chunks, n_home)
        bad = 0
        for j in range(start, stop):
            at = home[j] * width
            best, voted = _majority(flat_hist[at : at + n_classes], order)
            bad += flat_hist[at + n_classes]
            v = flat_hist[at + n_classes + 1]
            flat_counts[v] = voted + flat_hist[at + n_classes]
            flat_sem[v] = empty_label if best < 0 else best
        n_bad[c] = bad
    return int(n_in.sum()), int(n_nan.sum()), int(n_bad.sum())


#: Bytes per voxel of ``voxelize_dense_kernel``'s counters: one uint8 counter per class and one
#: for labels outside [0, C), so C <= 23; three uint64 words, read at once by the finish.
DENSE_VOXEL_BYTES = 24
#: Most counter copies ``voxelize_dense_kernel`` takes: the finish adds the copies' counters in
#: 16-bit lanes, which hold 257 × 255.
DENSE_MAX_COPIES = 64


@njit(cache=True)
def _slab_bounds_of(hist: npt.NDArray[np.int64], n_slabs: int) -> npt.NDArray[np.int64]:
    """x-index boundaries (n_slabs + 1,) splitting [0, nx) into slabs of about equal weight
    ``hist`` (nx,); slab t is [out[t], out[t + 1]) (empty slabs possible)."""
    nx = hist.shape[0]
    total = hist.sum()
    out = np.empty(n_slabs + 1, np.int64)
    out[0] = 0
    out[n_slabs] = nx
    acc = 0
    s = 1
    for x in range(nx):
        acc += hist[x]
        while s < n_slabs and acc * n_slabs >= s * total:
            out[s] = x + 1
            s += 1
    for r in range(s, n_slabs):
        out[r] = nx
    return out


@njit(cache=True)
def voxel_slab_bounds(
    points: npt.NDArray[np.floating], lo_x: float, inv_voxel: float, nx: int, n_slabs: int
) -> npt.NDArray[np.int64]:
    """x-index boundaries (n_slabs + 1,) splitting the grid into slabs of about equal point
    counts, from a strided sample of at most ~8k points (a 64k sample cost 0.16 ms, serial,
    on 1M points); slab t is [out[t], out[t + 1])."""
    n = points.shape[0]
    hist = np.zeros(nx, np.int64)
    for i in range(0, n, max(1, n // 8192)):
        fx = (float(points[i, 0]) - lo_x) * inv_voxel
        if fx >= 0.0 and fx < nx:
            hist[int(fx)] += 1
    return _slab_bounds_of(hist, n_slabs)


#: Points per block of the voxel-index passes: their coordinates (3 × 1024) stay in L1.
_INDEX_BLOCK = 1024


@njit(cache=True, inline="always")
def _block_constants(
    lo: npt.NDArray[np.float64], shape: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int32]]:
    """``_block_voxels``' per-coordinate grid start and size (x, y, z, x, ...) and its
    per-coordinate scratch, for one block."""
    lo3 = np.empty(3 * _INDEX_BLOCK, np.float64)
    hi3 = np.empty(3 * _INDEX_BLOCK, np.float64)
    for j in range(3 * _INDEX_BLOCK):
        lo3[j] = lo[j % 3]
        hi3[j] = shape[j % 3]
    return lo3, hi3, np.empty(3 * _INDEX_BLOCK, np.int32)


@njit(cache=True, inline="always", error_model="numpy")
def _block_voxels(
    flat: npt.NDArray[np.floating], b0: int, m: int, lo3: npt.NDArray[np.float64],
    hi3: npt.NDArray[np.float64], inv_voxel: float, ny: int, nz: int,
    axis: npt.NDArray[np.int32], dst: npt.NDArray[np.int32],
) -> tuple[int, int]:  # fmt: skip
    """Linear voxel index of points [b0, b0 + m) (m <= ``_INDEX_BLOCK``) of the flattened
    (N, 3) ``flat`` in ``dst[:m]``: -1 outside the grid, -2 not finite. Returns (inside, not
    finite); ``axis[0]`` is left holding the first point's x index (-1/-2 outside).

    In two loops: one over the block's coordinates as one flat run (x, y, z, x, ...; per
    coordinate its voxel along its axis, -1 outside, -2 not finite), which the compiler
    vectorises, and one combining each point's three. Written per point, the (N, 3) layout
    keeps the loop scalar: 2.5 ms per 1M points on one thread instead of 1.2-1.9 ms."""
    coords = flat[3 * b0 : 3 * (b0 + m)]
    for j in range(3 * m):
        x = float(coords[j])
        f = (x - lo3[j]) * inv_voxel
        if f >= 0.0 and f < hi3[j]:
            axis[j] = np.int32(f)
        else:  # x - x is 0 for finite x, NaN for NaN and ±inf
            axis[j] = np.int32(-1) if x - x == 0.0 else np.int32(-2)
    inside = 0
    bad = 0
    for k in range(m):
        ix = axis[3 * k]
        iy = axis[3 * k + 1]
        iz = axis[3 * k + 2]
        worst = min(ix, min(iy, iz))
        dst[k] = (ix * ny + iy) * nz + iz if worst >= 0 else worst
        inside += worst >= 0
        bad += worst == -2
    return inside, bad


@njit(cache=True)
def _grid_index_chunk(
    points: npt.NDArray[np.floating], start: int, stop: int, lo: npt.NDArray[np.float64],
    inv_voxel: float, shape: npt.NDArray[np.int64], out: npt.NDArray[np.int32],
) -> tuple[int, int]:  # fmt: skip
    """Linear voxel index of points [start, stop) of C-contiguous ``points`` (N, 3) in
    ``out[start:stop]`` (``_block_voxels``, a block at a time). Returns (inside, not
    finite)."""
    flat = points.reshape(points.shape[0] * 3)
    lo3, hi3, axis = _block_constants(lo, shape)
    inside = 0
    bad = 0
    for b0 in range(start, stop, _INDEX_BLOCK):
        m = min(_INDEX_BLOCK, stop - b0)
        a, b = _block_voxels(
            flat, b0, m, lo3, hi3, inv_voxel, shape[1], shape[2], axis, out[b0 : b0 + m]
        )
        inside += a
        bad += b
    return inside, bad


@njit(cache=True, parallel=True)
def _voxels_of_points(
    points: npt.NDArray[np.floating], lo: npt.NDArray[np.float64], inv_voxel: float,
    shape: npt.NDArray[np.int64], n_chunks: int, out: npt.NDArray[np.int32],
) -> tuple[int, int]:  # fmt: skip
    """``_grid_index_chunk`` over all points, a chunk per thread. Returns (inside, not
    finite)."""
    n = points.shape[0]
    n_in = np.zeros(n_chunks, np.int64)
    n_nan = np.zeros(n_chunks, np.int64)
    for c in prange(n_chunks):
        start, stop = _chunk(c, n_chunks, n)
        n_in[c], n_nan[c] = _grid_index_chunk(points, start, stop, lo, inv_voxel, shape, out)
    return int(n_in.sum()), int(n_nan.sum())


@njit(cache=True)
def _slabs_ok(bounds: npt.NDArray[np.int64], nx: int) -> bool:
    """Whether ``bounds`` split [0, nx) into at least one slab, in order."""
    n_slabs = bounds.shape[0] - 1
    if n_slabs < 1 or bounds[0] != 0 or bounds[n_slabs] != nx:
        return False
    return bool(np.all(bounds[1:] >= bounds[:-1]))


@njit(cache=True)
def _dense_chunk_count(
    points: npt.NDArray[np.floating], labels: npt.NDArray[np.uint8], start: int, stop: int,
    lo: npt.NDArray[np.float64], inv_voxel: float, shape: npt.NDArray[np.int64],
    n_classes: int, counters: npt.NDArray[np.uint8], touched: npt.NDArray[np.uint8],
    spill: npt.NDArray[np.int64], x_hist: npt.NDArray[np.int64],
    point_voxel: npt.NDArray[np.int32],
) -> tuple[int, int, int]:  # fmt: skip
    """``voxelize_dense_kernel``'s count of points [start, stop) into one counter copy: per
    block the points' voxels (``_block_voxels``, into ``point_voxel`` when it is not empty),
    then per point inside the grid one uint8 increment (its voxel's row of
    ``DENSE_VOXEL_BYTES``, its class's byte, labels >= C on byte C) and its voxel's flag in
    ``touched``. A counter that wraps to 0 records its index in ``spill``. One sample per
    block (its first point's x index) goes to ``x_hist``, for the finish's slabs. Returns
    (inside, not finite, spills; more spills than len(spill): the list was too short)."""
    flat = points.reshape(points.shape[0] * 3)
    lo3, hi3, axis = _block_constants(lo, shape)
    block = np.empty(_INDEX_BLOCK, np.int32)
    keep = point_voxel.shape[0] > 0
    row = np.uint64(DENSE_VOXEL_BYTES)
    top = np.uint8(n_classes)
    inside = 0
    bad = 0
    n_sp = 0
    for b0 in range(start, stop, _INDEX_BLOCK):
        m = min(_INDEX_BLOCK, stop - b0)
        vox = point_voxel[b0 : b0 + m] if keep else block
        a, b = _block_voxels(flat, b0, m, lo3, hi3, inv_voxel, shape[1], shape[2], axis, vox)
        inside += a
        bad += b
        x_hist[max(axis[0], 0)] += 1
        lab = labels[b0 : b0 + m]
        for k in range(m):
            if vox[k] >= 0:
                v = np.uint64(vox[k])  # unsigned: no negative-index wraparound to test
                touched[v] = 1
                j = v * row + np.uint64(min(lab[k], top))
                c = np.uint8(counters[j] + np.uint8(1))
                counters[j] = c
                if c == 0:
                    if n_sp < spill.shape[0]:
                        spill[n_sp] = j
                    n_sp += 1
    return inside, bad, n_sp


#: Occupied voxels whose counters ``_dense_finish`` gathers at a time.
_FINISH_BLOCK = 2048


@njit(cache=True)
def _dense_finish(
    counters: npt.NDArray[np.uint8], touched: npt.NDArray[np.uint8], v0: int, v1: int,
    spilled: npt.NDArray[np.int64], order: npt.NDArray[np.int64], empty_label: int,
    flat_counts: npt.NDArray[np.int32], flat_sem: npt.NDArray[np.uint8],
) -> int:  # fmt: skip
    """``voxelize_dense_kernel``'s counts and classes of voxels [v0, v1): 0 and
    ``empty_label``, then for each voxel flagged in ``touched`` the sum of its counters over
    the copies (``counters`` (copies, voxels × 24)), plus 256 per entry of ``spilled`` (the
    sorted counter indices that wrapped, any copy). Counters and flags are set back to 0 as
    they are read, so the block is all zeros again at the end. Returns the points with a
    label outside [0, C).

    The flagged voxels are listed in order (flags eight at a time, no branch per flag: they
    are too mixed to predict). Then, ``_FINISH_BLOCK`` voxels at a time, their counter words
    are gathered per copy in a short loop whose loads do not depend on each other, so many
    cache misses are in flight at once (one voxel after the other: 36 ns a voxel), and added
    in 16-bit lanes, even and odd bytes apart (lane ``8 (k // 8) + 4 (k % 2) + (k % 8) // 2``
    holds byte k; little-endian). The zeroing stores come in a second loop, once the lines
    are in cache. A function of its own: inside the parallel loop the compiler optimises it
    less (measured 2 ms slower on 1M points)."""
    n_copies = counters.shape[0]
    n_classes = order.shape[0]
    flat_counts[v0:v1] = 0
    flat_sem[v0:v1] = empty_label
    occupied = np.empty(v1 - v0, np.int64)  # pages beyond those used are never touched
    n_occ = 0
    q0 = min((v0 + 7) // 8, v1 // 8)
    q1 = max(v1 // 8, q0)
    flags = touched[: touched.shape[0] // 8 * 8].view(np.uint64)
    for v in range(v0, min(v1, 8 * q0)):
        occupied[n_occ] = v
        n_occ += touched[v]
        touched[v] = 0
    for q in range(q0, q1):
        f = flags[q]
        if f != 0:
            flags[q] = 0
            for b in range(8):
                occupied[n_occ] = 8 * q + b
                n_occ += int((f >> np.uint64(8 * b)) & np.uint64(1))
    for v in range(max(v0, 8 * q1), v1):
        occupied[n_occ] = v
        n_occ += touched[v]
        touched[v] = 0
    lane = np.empty(DENSE_VOXEL_BYTES, np.int64)
    class_of_lane = np.empty(DENSE_VOXEL_BYTES, np.int64)
    for k in range(DENSE_VOXEL_BYTES):
        lane[k] = 8 * (k // 8) + 4 * (k % 2) + (k % 8) // 2
        class_of_lane[lane[k]] = k
    lane_order = lane[order]
    words = counters.view(np.uint64)  # (copies, voxels × 3)
    acc = np.empty((_FINISH_BLOCK, 6), np.uint64)
    lanes = acc.view(np.uint16)  # (block, 24)
    extra = np.zeros(DENSE_VOXEL_BYTES, np.int64)
    even = np.uint64(0x00FF00FF00FF00FF)
    eight = np.uint64(8)
    p = np.searchsorted(spilled, v0 * DENSE_VOXEL_BYTES)
    bad = 0
    for j0 in range(0, n_occ, _FINISH_BLOCK):
        m = min(_FINISH_BLOCK, n_occ - j0)
        acc[:m] = 0
        for c in range(n_copies):
            for j in range(m):
                w = 3 * occupied[j0 + j]
                a0 = words[c, w]
                a1 = words[c, w + 1]
                a2 = words[c, w + 2]
                acc[j, 0] += a0 & even
                acc[j, 1] += (a0 >> eight) & even
                acc[j, 2] += a1 & even
                acc[j, 3] += (a1 >> eight) & even
                acc[j, 4] += a2 & even
                acc[j, 5] += (a2 >> eight) & even
            for j in range(m):
                w = 3 * occupied[j0 + j]
                words[c, w] = 0
                words[c, w + 1] = 0
                words[c, w + 2] = 0
        for j in range(m):
            v = occupied[j0 + j]
            base = v * DENSE_VOXEL_BYTES
            if p < spilled.shape[0] and spilled[p] < base + DENSE_VOXEL_BYTES:
                # the counters plus 256 per spill entry, in ``extra``
                for k in range(n_classes + 1):
                    extra[k] = lanes[j, lane[k]]
                while p < spilled.shape[0] and spilled[p] < base + DENSE_VOXEL_BYTES:
                    extra[spilled[p] - base] += 256
                    p += 1
                best, total = _majority(extra, order)
                unlabelled = int(extra[n_classes])
            else:
                best, total = _majority(lanes[j], lane_order)
                best = class_of_lane[best] if best >= 0 else -1
                unlabelled = int(lanes[j, lane[n_classes]])
            bad += unlabelled
            flat_counts[v] = total + unlabelled
            if best >= 0:
                flat_sem[v] = best
    return bad


@njit(cache=True, parallel=True)
def voxelize_dense_kernel(
    points: npt.NDArray[np.floating],
    labels: npt.NDArray[np.uint8],
    lo: npt.NDArray[np.float64],
    inv_voxel: float,
    tie_rank: npt.NDArray[np.int64],
    empty_label: int,
    n_slabs: int,
    counters: npt.NDArray[np.uint8],
    touched: npt.NDArray[np.uint8],
    spill: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int32],
    point_voxel: npt.NDArray[np.int32],
    semantics: npt.NDArray[np.uint8],
) -> tuple[int, int, int]:
    """Points per voxel and each voxel's majority class, for C = ``tie_rank.shape[0]`` <= 23
    classes: ``voxelize_kernel``'s results (same arguments and outputs, ties by ``tie_rank``,
    labels >= C counted but not voting, ``empty_label`` where no labelled point), faster.
    ``point_voxel`` is (N,) int32 (each point's voxel is written to it) or empty (not
    wanted).

    Method: dense per-voxel class counters, ``DENSE_VOXEL_BYTES`` uint8 per voxel, in T
    copies (``counters`` (T, voxels × 24), T <= ``DENSE_MAX_COPIES``), and one flag per voxel
    (``touched`` (voxels,)), all zeros on entry and left so (the finish zeroes what it reads:
    no clearing pass over 15 MB a copy). Each point costs one increment at an address known
    from the point alone — no map look-up whose result decides where to count, which is what
    bounds the compact-histogram method. Two parallel loops:

    1. Per chunk of points (T chunks, one per copy): each block's voxels (``_block_voxels``,
       vectorised) and at once their increments into the chunk's own copy. A counter that
       wraps past 255 records its index in ``spill`` (T, S) (each 256 points of one voxel and
       class add one entry: S >= N // 256 + 1 is enough). Flags are shared: threads only ever
       store 1 into them.
    2. Per x-slab (``n_slabs``, of about equal sampled points) the slab's counts and classes
       (``_dense_finish``): the copies' counters added up.

    No two threads write one counter, count or point, and the result depends neither on T nor
    on the slabs. Fusing the voxel and the count of a point saves writing each point's voxel
    and reading it back once per slab, and no thread reads points outside its chunk: 1M
    points in the 640k-voxel Occ3D grid take 2.2-2.5 ms on two threads (3.0-3.4 ms with one
    counter block and each slab's thread going through every point's voxel).

    Returns (inside, non-finite, labels outside [0, C) among the inside points), or (-1, -1,
    -1) when the arrays do not fit (nothing is written out of bounds).
    """
    n = points.shape[0]
    nx, ny, nz = counts.shape
    n_cells = nx * ny * nz
    n_copies = counters.shape[0]
    n_classes = tie_rank.shape[0]
    if (
        n_classes >= DENSE_VOXEL_BYTES
        or n_slabs < 1
        or not 1 <= n_copies <= DENSE_MAX_COPIES
        or labels.shape[0] != n
        or (point_voxel.shape[0] != n and point_voxel.shape[0] != 0)
        or semantics.shape != counts.shape
        or counters.shape[1] != n_cells * DENSE_VOXEL_BYTES
        or touched.shape[0] != n_cells
        or spill.shape[0] != n_copies
        or spill.shape[1] < n // 256 + 1
    ):
        return -1, -1, -1
    flat_counts = counts.reshape(n_cells)
    flat_sem = semantics.reshape(n_cells)
    order = np.argsort(tie_rank)
    shape = np.array([nx, ny, nz], np.int64)
    per_copy = np.zeros((n_copies, 3), np.int64)
    x_hist = np.zeros((n_copies, nx), np.int64)
    for c in prange(n_copies):  # each point's voxel and increment, a chunk of points per copy
        start, stop = _chunk(c, n_copies, n)
        per_copy[c, 0], per_copy[c, 1], per_copy[c, 2] = _dense_chunk_count(
            points, labels, start, stop, lo, inv_voxel, shape, n_classes, counters[c],
            touched, spill[c], x_hist[c], point_voxel,
        )  # fmt: skip
    n_spilled = np.minimum(per_copy[:, 2], spill.shape[1])  # never more, for the S checked
    spilled = np.empty(n_spilled.sum(), np.int64)
    k = 0
    for c in range(n_copies):
        spilled[k : k + n_spilled[c]] = spill[c, : n_spilled[c]]
        k += n_spilled[c]
    spilled.sort()
    bounds = _slab_bounds_of(x_hist.sum(axis=0), n_slabs)
    nyz = ny * nz
    n_bad = np.zeros(n_slabs, np.int64)
    for t in prange(n_slabs):  # counts and classes, a slab of voxels per thread
        n_bad[t] = _dense_finish(
            counters, touched, bounds[t] * nyz, bounds[t + 1] * nyz, spilled, order,
            empty_label, flat_counts, flat_sem,
        )  # fmt: skip
    return int(per_copy[:, 0].sum()), int(per_copy[:, 1].sum()), int(n_bad.sum())


@njit(cache=True)
def _slab_point_counts(
    voxel_of: npt.NDArray[np.int32], v0: int, v1: int, flat_counts: npt.NDArray[np.int32]
) -> None:
    """``count_points_kernel``'s count of the points whose voxel is in [v0, v1)."""
    flat_counts[v0:v1] = 0
    for i in range(voxel_of.shape[0]):
        v = voxel_of[i]
        if v >= v0 and v < v1:
            flat_counts[v] += 1


@njit(cache=True, parallel=True)
def count_points_kernel(
    points: npt.NDArray[np.floating],
    lo: npt.NDArray[np.float64],
    inv_voxel: float,
    bounds: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int32],
    point_voxel: npt.NDArray[np.int32],
) -> tuple[int, int]:
    """Points per voxel of C-contiguous ``points`` (N, 3): ``counts`` (nx, ny, nz) int32 out,
    ``point_voxel`` (N,) int32 out (each point's linear voxel, -1 outside the grid, -2 not
    finite; required: pass scratch when the caller does not want them). Each point's voxel
    (a chunk of points per thread, ``_grid_index_chunk``), then per x-slab (``bounds``, one per
    thread) the count of the points in it: no per-thread grids to zero and add up. Unlike
    ``voxelize_dense_kernel`` it keeps no per-thread copies: a count is one int32 a voxel,
    the slabs' pass over the voxel indices is short, and 1M points take 2.0-2.3 ms on two
    threads as they are. Returns (inside, non-finite), or (-1, -1) when the arrays do not fit
    (nothing is written)."""
    nx, ny, nz = counts.shape
    nyz = ny * nz
    n_slabs = bounds.shape[0] - 1
    if point_voxel.shape[0] != points.shape[0] or not _slabs_ok(bounds, nx):
        return -1, -1
    flat_counts = counts.reshape(nx * nyz)
    shape = np.array([nx, ny, nz], np.int64)
    inside, nan = _voxels_of_points(points, lo, inv_voxel, shape, n_slabs, point_voxel)
    for t in prange(n_slabs):
        _slab_point_counts(point_voxel, bounds[t] * nyz, bounds[t + 1] * nyz, flat_counts)
    return inside, nan


@njit(cache=True, parallel=True)
def raycast_kernel(
    points: npt.NDArray[np.floating],
    origins: npt.NDArray[np.floating],
    lo: npt.NDArray[np.float64],
    voxel_m: float,
    inv_voxel: float,
    scratch: npt.NDArray[np.int32],
    free: npt.NDArray[np.int32],
    hits: npt.NDArray[np.int32],
    status: npt.NDArray[np.int8],
) -> None:
    """LiDAR rays from ``origins`` to ``points`` through the grid (3D DDA, Amanatides–Woo).

    ``points`` (N, 3) end points, ``origins`` (N, 3) or (1, 3) (one origin for all rays).
    ``scratch`` (T, 2, nx, ny, nz) int32 (any content); ``free`` and ``hits`` (nx, ny, nz) int32
    out; ``status`` (N,) int8 out (``RAY_*``).

    A ray whose end point is inside the grid adds one hit at the end point's voxel and one free
    count to every other voxel the segment origin → end crosses inside the grid; a ray ending
    outside adds a free count to every voxel it crosses. An origin outside the grid enters at
    the boundary. The walk visits a 6-connected chain of voxels from the start voxel (the
    origin's, or the entry point's) to the end voxel (the end point's — the same voxel
    ``voxelize_kernel`` gives it — or the exit point's), each once, ordered by where the ray
    crosses the voxel planes.
    """
    n = points.shape[0]
    n_chunks = scratch.shape[0]
    nx, ny, nz = free.shape
    if (
        status.shape[0] != n
        or hits.shape != free.shape
        or scratch.shape[1] != 2
        or scratch.shape[2:] != free.shape
        or origins.shape[0] not in (1, n)
        or n_chunks < 1
    ):
        raise ValueError("raycast_kernel: array shapes do not match")
    one_origin = origins.shape[0] == 1
    lo_x, lo_y, lo_z = lo[0], lo[1], lo[2]
    hi = _grid_hi(lo, voxel_m, nx, ny, nz)
    for c in prange(n_chunks):
        fr = scratch[c, 0]
        ht = scratch[c, 1]
        fr[:] = 0
        ht[:] = 0
        for i in range(c, n, n_chunks):  # interleaved: balances long and short rays
            j = 0 if one_origin else i
            ox = float(origins[j, 0])
            oy = float(origins[j, 1])
            oz = float(origins[j, 2])
            px = float(points[i, 0])
            py = float(points[i, 1])
            pz = float(points[i, 2])
            dx = px - ox
            dy = py - oy
            dz = pz - oz
            if not _finite6(ox, oy, oz, dx, dy, dz):
                status[i] = RAY_INVALID
                continue
            ex = _axis_voxel(px, lo_x, inv_voxel, nx)
            ey = _axis_voxel(py, lo_y, inv_voxel, ny)
            ez = _axis_voxel(pz, lo_z, inv_voxel, nz)
            end_in = ex >= 0 and ey >= 0 and ez >= 0
            sx = _axis_voxel(ox, lo_x, inv_voxel, nx)
            sy = _axis_voxel(oy, lo_y, inv_voxel, ny)
            sz = _axis_voxel(oz, lo_z, inv_voxel, nz)
            origin_in = sx >= 0 and sy >= 0 and sz >= 0
            t0 = 0.0
            if not (end_in and origin_in):
                t0, t1 = _clip_segment(ox, oy, oz, dx, dy, dz, 0.0, 1.0, lo, hi)
                if not end_in:
                    if not t1 > t0 or (dx == 0.0 and dy == 0.0 and dz == 0.0):
                        if not origin_in:
                            status[i] = RAY_MISSED
                            continue
                        t1 = 0.0
                    ex, ey, ez = _ray_voxel_clamped(
                        ox, oy, oz, dx, dy, dz, t1, lo, inv_voxel, nx, ny, nz
                    )
                if not origin_in:
                    if t0 > t1:  # rounding: the end voxel is inside, the entry is not found
                        sx, sy, sz = ex, ey, ez
                        t0 = 1.0
                    else:
                        sx, sy, sz = _ray_voxel_clamped(
                            ox, oy, oz, dx, dy, dz, t0, lo, inv_voxel, nx, ny, nz
                        )
            stx, tmx, tdx = _dda_axis(ox, dx, sx, ex, lo_x, voxel_m, t0)
            sty, tmy, tdy = _dda_axis(oy, dy, sy, ey, lo_y, voxel_m, t0)
            stz, tmz, tdz = _dda_axis(oz, dz, sz, ez, lo_z, voxel_m, t0)
            x, y, z = sx, sy, sz
            while x != ex or y != ey or z != ez:
                fr[x, y, z] += 1
                x, y, z, tmx, tmy, tmz = _dda_step(
                    x, y, z, ex, ey, ez, stx, sty, stz, tmx, tmy, tmz, tdx, tdy, tdz
                )
            if end_in:
                ht[x, y, z] += 1
                status[i] = RAY_HIT
            else:
                fr[x, y, z] += 1
                status[i] = RAY_PASSED
    # Sum the chunks (serial: vectorised, faster than a parallel region here).
    n_cells = nx * ny * nz
    flat = scratch.reshape(n_chunks, 2, n_cells)
    ffree = free.reshape(n_cells)
    fhits = hits.reshape(n_cells)
    ffree[:] = flat[0, 0]
    fhits[:] = flat[0, 1]
    for c in range(1, n_chunks):
        row_free = flat[c, 0]
        row_hits = flat[c, 1]
        for v in range(n_cells):
            ffree[v] += row_free[v]
            fhits[v] += row_hits[v]


@njit(cache=True, parallel=True)
def camera_visibility_kernel(
    origins: npt.NDArray[np.float64],
    directions: npt.NDArray[np.float64],
    occupied: npt.NDArray[np.uint8],
    lo: npt.NDArray[np.float64],
    voxel_m: float,
    inv_voxel: float,
    scratch: npt.NDArray[np.uint8],
    visible: npt.NDArray[np.uint8],
    ray_end: npt.NDArray[np.int32],
) -> None:
    """Voxels seen along camera rays: each ray walks from its origin (or where it enters the
    grid) until it leaves the grid; the voxels it passes are seen, and so is the first voxel
    with ``occupied != 0``, where the ray stops. Voxels behind it are not seen by that ray.

    ``origins`` (R, 3) or (1, 3), ``directions`` (R, 3) (any non-zero length); ``occupied`` and
    ``visible`` (nx, ny, nz) uint8; ``visible`` is ORed into (1 = seen), not cleared.
    ``scratch`` (T, nx, ny, nz) uint8 (any content). ``ray_end`` (R,) int32 out: the linear index
    of the occupied voxel that stopped the ray, -1 if it left the grid without one, -2 if it
    never met the grid, -3 if origin or direction is not finite or the direction is zero.
    """
    n = directions.shape[0]
    n_chunks = scratch.shape[0]
    nx, ny, nz = visible.shape
    if (
        occupied.shape != visible.shape
        or scratch.shape[1:] != visible.shape
        or ray_end.shape[0] != n
        or origins.shape[0] not in (1, n)
        or n_chunks < 1
    ):
        raise ValueError("camera_visibility_kernel: array shapes do not match")
    one_origin = origins.shape[0] == 1
    lo_x, lo_y, lo_z = lo[0], lo[1], lo[2]
    hi = _grid_hi(lo, voxel_m, nx, ny, nz)
    for c in prange(n_chunks):
        seen = scratch[c]
        seen[:] = 0
        for i in range(c, n, n_chunks):  # interleaved: cameras differ in how far rays go
            j = 0 if one_origin else i
            ox = origins[j, 0]
            oy = origins[j, 1]
            oz = origins[j, 2]
            dx = directions[i, 0]
            dy = directions[i, 1]
            dz = directions[i, 2]
            if not _finite6(ox, oy, oz, dx, dy, dz) or (dx == 0.0 and dy == 0.0 and dz == 0.0):
                ray_end[i] = -3
                continue
            t0, t1 = _clip_segment(ox, oy, oz, dx, dy, dz, 0.0, np.inf, lo, hi)
            if not (t1 > t0 and np.isfinite(t1)):
                ray_end[i] = -2
                continue
            sx = _axis_voxel(ox, lo_x, inv_voxel, nx)
            sy = _axis_voxel(oy, lo_y, inv_voxel, ny)
            sz = _axis_voxel(oz, lo_z, inv_voxel, nz)
            if sx < 0 or sy < 0 or sz < 0:
                sx, sy, sz = _ray_voxel_clamped(
                    ox, oy, oz, dx, dy, dz, t0, lo, inv_voxel, nx, ny, nz
                )
            else:
                t0 = 0.0
            ex, ey, ez = _ray_voxel_clamped(ox, oy, oz, dx, dy, dz, t1, lo, inv_voxel, nx, ny, nz)
            stx, tmx, tdx = _dda_axis(ox, dx, sx, ex, lo_x, voxel_m, t0)
            sty, tmy, tdy = _dda_axis(oy, dy, sy, ey, lo_y, voxel_m, t0)
            stz, tmz, tdz = _dda_axis(oz, dz, sz, ez, lo_z, voxel_m, t0)
            x, y, z = sx, sy, sz
            end = -1
            while True:
                seen[x, y, z] = 1
                if occupied[x, y, z] != 0:
                    end = (x * ny + y) * nz + z
                    break
                if x == ex and y == ey and z == ez:
                    break
                x, y, z, tmx, tmy, tmz = _dda_step(
                    x, y, z, ex, ey, ez, stx, sty, stz, tmx, tmy, tmz, tdx, tdy, tdz
                )
            ray_end[i] = end
    # OR the chunks into ``visible`` (serial: vectorised, faster than a parallel region here).
    n_cells = nx * ny * nz
    flat_scratch = scratch.reshape(n_chunks, n_cells)
    flat_vis = visible.reshape(n_cells)
    for c in range(n_chunks):
        row = flat_scratch[c]
        for v in range(n_cells):
            flat_vis[v] |= row[v]


@njit(cache=True, inline="always")
def _bin_of(v: float, v0: float, inv_cell: float, n: int) -> int:
    """Bin of ``v`` in [0, n - 1] (clamped; NaN gives 0)."""
    f = (v - v0) * inv_cell
    if not f >= 0.0:
        return 0
    if f >= n - 1:
        return n - 1
    return int(f)


@njit(cache=True, parallel=True)
def points_in_boxes_kernel(
    points: npt.NDArray[np.floating],
    centers: npt.NDArray[np.float64],
    box_from_frame: npt.NDArray[np.float64],
    half_sizes: npt.NDArray[np.float64],
    cell_m: float,
    box_index: npt.NDArray[np.int32],
    mask: npt.NDArray[np.bool_],
    counts: npt.NDArray[np.int64],
    scratch: npt.NDArray[np.int64],
) -> None:
    """Which oriented boxes hold each point.

    Box b holds p when ``|box_from_frame[b] @ (p - centers[b])| <= half_sizes[b]`` on all three
    axes (closed box, full 3D rotation). ``box_index`` (N,) int32 out: the lowest index of a box
    holding the point, -1 for none (and for non-finite points). ``mask`` (N, B) bool out, or a
    (0, 0) array to skip it: every box holding the point (cells of boxes that do not are left as
    they are: pass zeros). ``counts`` (B,) out: points held by each box (a point in two boxes
    counts in both). ``scratch`` (T, B) int64 (any content), per-chunk counts.

    Boxes are first binned by their axis-aligned xy bounds on a grid of ``cell_m`` cells (at most
    256 × 256 over the boxes' extent; serial, B is small): a point only tests the boxes of its
    cell, in increasing index. Parallel over chunks of points.
    """
    n = points.shape[0]
    n_boxes = centers.shape[0]
    n_chunks = scratch.shape[0]
    want_mask = mask.shape[0] > 0
    if (
        box_index.shape[0] != n
        or box_from_frame.shape[0] != n_boxes
        or half_sizes.shape[0] != n_boxes
        or counts.shape[0] != n_boxes
        or scratch.shape[1] != n_boxes
        or (want_mask and (mask.shape[0] != n or mask.shape[1] != n_boxes))
    ):
        raise ValueError("points_in_boxes_kernel: array shapes do not match")
    # Axis-aligned bounds of every box in the frame.
    bmin = np.empty((n_boxes, 3))
    bmax = np.empty((n_boxes, 3))
    for b in range(n_boxes):
        for a in range(3):
            ext = (
                abs(box_from_frame[b, 0, a]) * half_sizes[b, 0]
                + abs(box_from_frame[b, 1, a]) * half_sizes[b, 1]
                + abs(box_from_frame[b, 2, a]) * half_sizes[b, 2]
            )
            # a hair wider than exact, so rounding never drops a point the exact test keeps
            ext = ext * (1.0 + 1e-9) + 1e-9
            bmin[b, a] = centers[b, a] - ext
            bmax[b, a] = centers[b, a] + ext
    # xy bins: CSR lists of boxes per cell, in increasing box index. Extents that overflow
    # (boxes ~1e308 m wide) fall back to one cell holding every box.
    gx0 = np.inf
    gy0 = np.inf
    gx1 = -np.inf
    gy1 = -np.inf
    for b in range(n_boxes):
        gx0 = min(gx0, bmin[b, 0])
        gy0 = min(gy0, bmin[b, 1])
        gx1 = max(gx1, bmax[b, 0])
        gy1 = max(gy1, bmax[b, 1])
    ncx = 1
    ncy = 1
    inv_cell = 0.0
    if n_boxes > 0 and np.isfinite(gx1 - gx0) and np.isfinite(gy1 - gy0):
        cell = cell_m if cell_m > 0.0 and np.isfinite(cell_m) else 1.0
        cell = max(cell, (gx1 - gx0) / 256.0, (gy1 - gy0) / 256.0, 1e-6)
        inv_cell = 1.0 / cell
        ncx = _bin_of(gx1, gx0, inv_cell, 257) + 1
        ncy = _bin_of(gy1, gy0, inv_cell, 257) + 1
    else:
        gx0 = 0.0
        gy0 = 0.0
    bins = np.empty((n_boxes, 4), np.int64)
    cell_start = np.zeros(ncx * ncy + 1, np.int64)
    for b in range(n_boxes):
        x0 = _bin_of(bmin[b, 0], gx0, inv_cell, ncx)
        x1 = _bin_of(bmax[b, 0], gx0, inv_cell, ncx)
        y0 = _bin_of(bmin[b, 1], gy0, inv_cell, ncy)
        y1 = _bin_of(bmax[b, 1], gy0, inv_cell, ncy)
        bins[b, 0], bins[b, 1], bins[b, 2], bins[b, 3] = x0, x1, y0, y1
        for cx in range(x0, x1 + 1):
            for cy in range(y0, y1 + 1):
                cell_start[cx * ncy + cy + 1] += 1
    for k in range(ncx * ncy):
        cell_start[k + 1] += cell_start[k]
    cell_boxes = np.empty(cell_start[ncx * ncy], np.int32)
    fill = cell_start[:-1].copy()
    for b in range(n_boxes):
        for cx in range(bins[b, 0], bins[b, 1] + 1):
            for cy in range(bins[b, 2], bins[b, 3] + 1):
                k = cx * ncy + cy
                cell_boxes[fill[k]] = b
                fill[k] += 1
    for c in prange(n_chunks):
        cnt = scratch[c]
        cnt[:] = 0
        start, stop = _chunk(c, n_chunks, n)
        for i in range(start, stop):
            box_index[i] = -1
            px = float(points[i, 0])
            py = float(points[i, 1])
            pz = float(points[i, 2])
            fx = (px - gx0) * inv_cell
            fy = (py - gy0) * inv_cell
            if not (fx >= 0.0 and fx < ncx and fy >= 0.0 and fy < ncy):
                continue
            k = int(fx) * ncy + int(fy)
            for s in range(cell_start[k], cell_start[k + 1]):
                b = cell_boxes[s]
                if not (
                    px >= bmin[b, 0]
                    and px <= bmax[b, 0]
                    and py >= bmin[b, 1]
                    and py <= bmax[b, 1]
                    and pz >= bmin[b, 2]
                    and pz <= bmax[b, 2]
                ):
                    continue
                vx = px - centers[b, 0]
                vy = py - centers[b, 1]
                vz = pz - centers[b, 2]
                r = box_from_frame[b]
                lx = r[0, 0] * vx + r[0, 1] * vy + r[0, 2] * vz
                ly = r[1, 0] * vx + r[1, 1] * vy + r[1, 2] * vz
                lz = r[2, 0] * vx + r[2, 1] * vy + r[2, 2] * vz
                if (
                    abs(lx) <= half_sizes[b, 0]
                    and abs(ly) <= half_sizes[b, 1]
                    and abs(lz) <= half_sizes[b, 2]
                ):
                    cnt[b] += 1
                    if box_index[i] < 0:
                        box_index[i] = b
                    if want_mask:
                        mask[i, b] = True
    counts[:] = 0
    for c in range(n_chunks):
        for b in range(n_boxes):
            counts[b] += scratch[c, b]


# ============================================================================================
# Box interiors for occupancy (avfusion/fusion/occupancy.py; the synthetic truth uses the test)
# ============================================================================================


@njit(cache=True)
def box_overlaps_voxel(
    offset: npt.NDArray[np.float64],
    rot: npt.NDArray[np.float64],
    half: npt.NDArray[np.float64],
    voxel_half: float,
) -> bool:
    """Does an oriented box overlap an axis-aligned cube? Exact separating-axis test
    (Gottschalk, Lin & Manocha 1996: the 3 + 3 face normals and their 9 cross products).

    ``offset`` (3,): box centre minus cube centre; ``rot`` (3, 3): the box's axes as columns,
    in the cube's frame; ``half`` (3,): the box's half sizes; ``voxel_half``: the cube's.
    Touching counts as overlapping.
    """
    eps = 1e-12  # keeps near-parallel edge pairs from producing a false separating axis
    ab = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            ab[i, j] = abs(rot[i, j]) + eps
    for i in range(3):  # the cube's axes
        rb = half[0] * ab[i, 0] + half[1] * ab[i, 1] + half[2] * ab[i, 2]
        if abs(offset[i]) > voxel_half + rb:
            return False
    for j in range(3):  # the box's axes
        ra = voxel_half * (ab[0, j] + ab[1, j] + ab[2, j])
        tj = offset[0] * rot[0, j] + offset[1] * rot[1, j] + offset[2] * rot[2, j]
        if abs(tj) > ra + half[j]:
            return False
    for i in range(3):  # cube axis i x box axis j
        i1 = (i + 1) % 3
        i2 = (i + 2) % 3
        for j in range(3):
            j1 = (j + 1) % 3
            j2 = (j + 2) % 3
            ra = voxel_half * (ab[i1, j] + ab[i2, j])
            rb = half[j1] * ab[i, j2] + half[j2] * ab[i, j1]
            if abs(offset[i2] * rot[i1, j] - offset[i1] * rot[i2, j]) > ra + rb:
                return False
    return True


@njit(cache=True)
def fill_boxes_kernel(
    lo: npt.NDArray[np.float64],
    voxel_m: float,
    centers: npt.NDArray[np.float64],
    rotations: npt.NDArray[np.float64],
    half_sizes: npt.NDArray[np.float64],
    classes: npt.NDArray[np.uint8],
    keep_out: npt.NDArray[np.uint8],
    semantics: npt.NDArray[np.uint8],
    filled: npt.NDArray[np.uint8],
) -> None:
    """Give every voxel that box b overlaps (``box_overlaps_voxel``) the class ``classes[b]``,
    except voxels where ``keep_out`` is non-zero; mark them in ``filled``. Boxes in the grid
    frame: ``centers`` (B, 3), ``rotations`` (B, 3, 3) grid_from_box, ``half_sizes`` (B, 3).
    Later boxes win where boxes overlap. Only voxels inside the grid are visited: the
    candidate range is the box's bounding sphere clipped to the grid."""
    nx, ny, nz = semantics.shape
    offset = np.empty(3)
    vh = 0.5 * voxel_m
    for b in range(centers.shape[0]):
        r = np.sqrt(half_sizes[b, 0] ** 2 + half_sizes[b, 1] ** 2 + half_sizes[b, 2] ** 2)
        rng = np.empty(6, dtype=np.int64)
        dims = (nx, ny, nz)
        for a in range(3):
            lo_f = np.floor((centers[b, a] - r - lo[a]) / voxel_m)
            hi_f = np.floor((centers[b, a] + r - lo[a]) / voxel_m) + 1.0
            lo_f = min(max(lo_f, 0.0), float(dims[a]))
            hi_f = min(max(hi_f, 0.0), float(dims[a]))
            rng[2 * a] = np.int64(lo_f)
            rng[2 * a + 1] = np.int64(hi_f)
        for i in range(rng[0], rng[1]):
            for j in range(rng[2], rng[3]):
                for k in range(rng[4], rng[5]):
                    if keep_out[i, j, k]:
                        continue
                    offset[0] = centers[b, 0] - (lo[0] + (i + 0.5) * voxel_m)
                    offset[1] = centers[b, 1] - (lo[1] + (j + 0.5) * voxel_m)
                    offset[2] = centers[b, 2] - (lo[2] + (k + 0.5) * voxel_m)
                    if box_overlaps_voxel(offset, rotations[b], half_sizes[b], vh):
                        semantics[i, j, k] = classes[b]
                        filled[i, j, k] = 1


# ============================================================================================
# Label consistency: z-buffer of 3D boxes in a camera (avfusion/fusion/consistency/cameras.py)
# ============================================================================================


@njit(cache=True)
def zbuffer_boxes_kernel(
    norm_xy: npt.NDArray[np.float64],
    rects: npt.NDArray[np.int64],
    box_from_cam: npt.NDArray[np.float64],
    centers_cam: npt.NDArray[np.float64],
    half_sizes: npt.NDArray[np.float64],
    near_m: float,
    ids: npt.NDArray[np.int32],
    depth_m: npt.NDArray[np.float64],
    silhouette_px: npt.NDArray[np.int64],
) -> None:
    """Rasterise oriented boxes into a camera by ray casting: the nearest box per pixel.

    ``norm_xy`` (H, W, 2): ideal normalised coordinates (x/z, y/z) of each pixel's viewing ray
    (NaN where the lens has none). ``rects`` (B, 4) int64: inclusive pixel ranges (c0, r0, c1,
    r1) to visit per box (clamped here to the image). Boxes in the camera frame:
    ``box_from_cam`` (B, 3, 3), ``centers_cam`` (B, 3), ``half_sizes`` (B, 3). A ray
    (x, y, 1) hits box b at depth z = max(t_enter, near_m) when that is <= t_exit (slab test).
    ``ids`` (H, W) int32 in/out (pass -1): the nearest box (the lower index on a tie);
    ``depth_m`` (H, W) in/out (pass inf): its depth. ``silhouette_px`` (B,) out: pixels each
    box covers ignoring the others. Serial: at one ray per few pixels the work is a few
    milliseconds, less than waking a thread pool costs on a busy machine.
    """
    h = ids.shape[0]
    w = ids.shape[1]
    nb = rects.shape[0]
    origin = np.zeros((nb, 3))  # the camera centre in each box's frame
    for b in range(nb):
        for a in range(3):
            for k in range(3):
                origin[b, a] -= box_from_cam[b, a, k] * centers_cam[b, k]
    row_counts = np.zeros((h, max(nb, 1)), dtype=np.int64)
    for r in range(h):
        for b in range(nb):
            if r < rects[b, 1] or r > rects[b, 3]:
                continue
            c0 = max(rects[b, 0], 0)
            c1 = min(rects[b, 2], w - 1)
            for c in range(c0, c1 + 1):
                x = norm_xy[r, c, 0]
                y = norm_xy[r, c, 1]
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                t_enter = -np.inf
                t_exit = np.inf
                hit = True
                for a in range(3):
                    o = origin[b, a]
                    d = (
                        box_from_cam[b, a, 0] * x
                        + box_from_cam[b, a, 1] * y
                        + box_from_cam[b, a, 2]
                    )
                    hs = half_sizes[b, a]
                    if d == 0.0:
                        if o < -hs or o > hs:
                            hit = False
                            break
                        continue
                    ta = (-hs - o) / d
                    tb = (hs - o) / d
                    if ta > tb:
                        ta, tb = tb, ta
                    if ta > t_enter:
                        t_enter = ta
                    if tb < t_exit:
                        t_exit = tb
                if not hit:
                    continue
                z = max(t_enter, near_m)
                if z > t_exit:
                    continue
                row_counts[r, b] += 1
                if z < depth_m[r, c]:
                    depth_m[r, c] = z
                    ids[r, c] = b
    for b in range(nb):
        silhouette_px[b] = row_counts[:, b].sum()


@njit(cache=True)
def id_extents_kernel(
    ids: npt.NDArray[np.int32], extents: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]
) -> None:
    """Per id b >= 0 of ``ids`` (H, W): the inclusive pixel extent (c0, r0, c1, r1) into
    ``extents`` (B, 4) (pass (W, H, -1, -1) rows) and the pixel count into ``counts`` (B,)
    (pass zeros). Ids outside [0, B) are ignored."""
    nb = extents.shape[0]
    for r in range(ids.shape[0]):
        for c in range(ids.shape[1]):
            b = ids[r, c]
            if b < 0 or b >= nb:
                continue
            counts[b] += 1
            if c < extents[b, 0]:
                extents[b, 0] = c
            if r < extents[b, 1]:
                extents[b, 1] = r
            if c > extents[b, 2]:
                extents[b, 2] = c
            if r > extents[b, 3]:
                extents[b, 3] = r
