"""Numba triangle rasteriser with a z-buffer, and the scene's triangle meshes.

The rasteriser draws triangles given in a pinhole camera frame (x right, y down, z forward)
into a depth buffer (z, metres) and a triangle-id buffer. Triangles crossing the near plane are
clipped; pixel centres are at integer coordinates (OpenCV). Depth is interpolated
perspective-correctly (linear in 1/z). Shading is a separate pass (``camera.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from avfusion.synth.world import PRIM_BOX, ROAD_PARAMS, World, ground_height_many, road_point

__all__ = ["SceneMesh", "ground_mesh", "object_mesh", "rasterise"]

_NEAR_M = 0.05


@njit(cache=True)
def _draw_triangle(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], tri: int,
    fx: float, fy: float, cx: float, cy: float,
    depth: npt.NDArray[np.float32], tri_id: npt.NDArray[np.int32],
) -> None:  # fmt: skip
    h, w = depth.shape
    ua = fx * a[0] / a[2] + cx
    va = fy * a[1] / a[2] + cy
    ub = fx * b[0] / b[2] + cx
    vb = fy * b[1] / b[2] + cy
    uc = fx * c[0] / c[2] + cx
    vc = fy * c[1] / c[2] + cy
    area = (ub - ua) * (vc - va) - (vb - va) * (uc - ua)
    if abs(area) < 1e-12:
        return
    x0 = max(int(np.ceil(min(ua, ub, uc))), 0)
    x1 = min(int(np.floor(max(ua, ub, uc))), w - 1)
    y0 = max(int(np.ceil(min(va, vb, vc))), 0)
    y1 = min(int(np.floor(max(va, vb, vc))), h - 1)
    if x0 > x1 or y0 > y1:
        return
    inv_area = 1.0 / area
    iza, izb, izc = 1.0 / a[2], 1.0 / b[2], 1.0 / c[2]
    for py in range(y0, y1 + 1):
        for px in range(x0, x1 + 1):
            w0 = ((ub - px) * (vc - py) - (vb - py) * (uc - px)) * inv_area
            w1 = ((uc - px) * (va - py) - (vc - py) * (ua - px)) * inv_area
            w2 = 1.0 - w0 - w1
            if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                continue
            z = 1.0 / (w0 * iza + w1 * izb + w2 * izc)
            if z < depth[py, px]:
                depth[py, px] = z
                tri_id[py, px] = tri


@njit(cache=True)
def _lerp_near(
    p: npt.NDArray[np.float64], q: npt.NDArray[np.float64], near: float
) -> npt.NDArray[np.float64]:
    t = (near - p[2]) / (q[2] - p[2])
    return p + t * (q - p)


@njit(cache=True)
def rasterise(
    tri_world: npt.NDArray[np.float64], rot_wc: npt.NDArray[np.float64], t_wc: npt.NDArray[np.float64],
    fx: float, fy: float, cx: float, cy: float,
    depth: npt.NDArray[np.float32], tri_id: npt.NDArray[np.int32], max_depth: float,
) -> None:  # fmt: skip
    """Draw world triangles (T, 3, 3) seen by a pinhole camera at ``world_from_cam`` = (rot_wc,
    t_wc) into ``depth`` (init +inf, camera z in metres) and ``tri_id`` (init −1)."""
    near = _NEAR_M
    h, w = depth.shape
    a = np.empty(3)
    b = np.empty(3)
    c = np.empty(3)
    for t in range(tri_world.shape[0]):
        dx = tri_world[t, 0, 0] - t_wc[0]
        dy = tri_world[t, 0, 1] - t_wc[1]
        if dx * dx + dy * dy > (max_depth + 10.0) ** 2:
            continue
        for k in range(3):
            px = tri_world[t, k, 0] - t_wc[0]
            py = tri_world[t, k, 1] - t_wc[1]
            pz = tri_world[t, k, 2] - t_wc[2]
            v = a if k == 0 else (b if k == 1 else c)
            v[0] = rot_wc[0, 0] * px + rot_wc[1, 0] * py + rot_wc[2, 0] * pz
            v[1] = rot_wc[0, 1] * px + rot_wc[1, 1] * py + rot_wc[2, 1] * pz
            v[2] = rot_wc[0, 2] * px + rot_wc[1, 2] * py + rot_wc[2, 2] * pz
        za, zb, zc = a[2], b[2], c[2]
        if za < near and zb < near and zc < near:
            continue
        if za > max_depth and zb > max_depth and zc > max_depth:
            continue
        # quick frustum rejection on the side planes (with a margin for near-plane clipping)
        if za > near and zb > near and zc > near:
            ua = fx * a[0] / za + cx
            ub = fx * b[0] / zb + cx
            uc = fx * c[0] / zc + cx
            if (ua < -1 and ub < -1 and uc < -1) or (ua > w and ub > w and uc > w):
                continue
            va = fy * a[1] / za + cy
            vb = fy * b[1] / zb + cy
            vc = fy * c[1] / zc + cy
            if (va < -1 and vb < -1 and vc < -1) or (va > h and vb > h and vc > h):
                continue
            _draw_triangle(a, b, c, t, fx, fy, cx, cy, depth, tri_id)
            continue
        # clip against the near plane: Sutherland-Hodgman on one plane gives 3 or 4 vertices
        poly = np.empty((4, 3))
        n = 0
        verts = (a, b, c)
        for k in range(3):
            p = verts[k]
            q = verts[(k + 1) % 3]
            p_in = p[2] >= near
            q_in = q[2] >= near
            if p_in:
                poly[n] = p
                n += 1
            if p_in != q_in:
                poly[n] = _lerp_near(p, q, near)
                n += 1
        if n >= 3:
            _draw_triangle(poly[0], poly[1], poly[2], t, fx, fy, cx, cy, depth, tri_id)
        if n == 4:
            _draw_triangle(poly[0], poly[2], poly[3], t, fx, fy, cx, cy, depth, tri_id)


class SceneMesh:
    """Triangles of the scene at one instant (world frame) with per-triangle attributes.

    ``tri`` (T, 3, 3) world metres; ``normal`` (T, 3) world unit normals; ``prim`` (T,) primitive
    index (−1 for the ground) into the primitive arrays the mesh was built from.
    """

    def __init__(
        self,
        tri: npt.NDArray[np.float64],
        normal: npt.NDArray[np.float64],
        prim: npt.NDArray[np.int32],
    ) -> None:
        self.tri = tri
        self.normal = normal
        self.prim = prim


def ground_mesh(
    world: World, s_range: tuple[float, float], half_width_m: float = 45.0, cell_m: float = 1.0
) -> SceneMesh:
    """A road-aligned grid of the ground height field: rows along s, columns across d.

    Cells are ``cell_m`` along s and across d; the height field is smooth, so the piecewise-planar
    mesh is within a millimetre of ``ground_height``.
    """
    s = np.arange(s_range[0], s_range[1] + cell_m, cell_m)
    d = np.arange(-half_width_m, half_width_m + cell_m / 2, cell_m)
    xy = np.empty((s.size, d.size, 2))
    for i, si in enumerate(s):
        for j, dj in enumerate(d):
            x, y, _ = road_point(float(si), float(dj), ROAD_PARAMS)
            xy[i, j] = (x, y)
    z = ground_height_many(xy.reshape(-1, 2), world.params).reshape(s.size, d.size)
    v = np.concatenate([xy, z[..., None]], axis=2)
    p00, p01, p10, p11 = v[:-1, :-1], v[:-1, 1:], v[1:, :-1], v[1:, 1:]
    t1 = np.stack([p00, p10, p11], axis=2).reshape(-1, 3, 3)
    t2 = np.stack([p00, p11, p01], axis=2).reshape(-1, 3, 3)
    tri = np.concatenate([t1, t2])
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n[n[:, 2] < 0] *= -1
    return SceneMesh(tri, n, np.full(tri.shape[0], -1, dtype=np.int32))


_BOX_FACES = np.array(
    [
        [0, 1, 3],
        [0, 3, 2],
        [4, 6, 7],
        [4, 7, 5],
        [0, 4, 5],
        [0, 5, 1],
        [2, 3, 7],
        [2, 7, 6],
        [0, 2, 6],
        [0, 6, 4],
        [1, 5, 7],
        [1, 7, 3],
    ]
)
_BOX_CORNERS = np.array(
    [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64
)


def _unit_sphere(n_lon: int = 12, n_lat: int = 7) -> npt.NDArray[np.float64]:
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)
    lon = np.linspace(0, 2 * np.pi, n_lon + 1)
    tris = []
    for i in range(n_lat):
        for j in range(n_lon):
            p = [
                (np.cos(lat[a]) * np.cos(lon[b]), np.cos(lat[a]) * np.sin(lon[b]), np.sin(lat[a]))
                for a, b in ((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1))
            ]
            tris.append((p[0], p[1], p[2]))
            tris.append((p[0], p[2], p[3]))
    return np.array(tris)


_SPHERE = _unit_sphere()


def object_mesh(prims: dict[str, npt.NDArray[Any]]) -> SceneMesh:
    """Triangles of all primitives (boxes: 12; ellipsoids: a 12×7 UV sphere with its vertices on
    the ellipsoid, so the silhouette is within 4 % of the analytic one)."""
    tris, ids = [], []
    for kind, local in ((PRIM_BOX, _BOX_CORNERS[_BOX_FACES]), (1, _SPHERE)):
        sel = np.flatnonzero(prims["kind"] == kind)
        if sel.size == 0:
            continue
        c, s = np.cos(prims["yaw"][sel]), np.sin(prims["yaw"][sel])
        scaled = local[None] * prims["half"][sel][:, None, None, :]  # (P, K, 3, 3)
        x = c[:, None, None] * scaled[..., 0] - s[:, None, None] * scaled[..., 1]
        y = s[:, None, None] * scaled[..., 0] + c[:, None, None] * scaled[..., 1]
        world = np.stack([x, y, scaled[..., 2]], axis=-1) + prims["center"][sel][:, None, None, :]
        tris.append(world.reshape(-1, 3, 3))
        ids.append(np.repeat(sel.astype(np.int32), local.shape[0]))
    if not tris:
        return SceneMesh(np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros(0, np.int32))
    tri = np.concatenate(tris)
    prim = np.concatenate(ids)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    good = norm[:, 0] > 1e-12
    tri, prim, n = tri[good], prim[good], n[good] / norm[good]
    inward = np.sum(n * (tri.mean(axis=1) - prims["center"][prim]), axis=1) < 0
    n[inward] *= -1
    return SceneMesh(np.ascontiguousarray(tri), np.ascontiguousarray(n), prim)
