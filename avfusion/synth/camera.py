"""Camera and thermal rendering: z-buffer rasterisation, then a per-pixel shading pass.

Geometry is exact through ``CameraModel``: every output pixel's viewing ray comes from
``CameraModel.pixels_to_normalised`` (the exact inverse of the lens model). For a distorted lens
the scene is rasterised into an ideal pinhole *canvas* (1.5× supersampled, wide enough to hold
every ray of the lens) and each output pixel takes the surface under its own ray from the
nearest canvas pixel (≤ 1/3 output pixel of silhouette error); shading uses the exact ray.

Colour shading: albedo × (0.35 ambient + 0.65 Lambert with the sun at 40° elevation) with
procedural textures so that image edges exist where geometry or material changes (lane markings,
sidewalk joints, windows, stripes, leaf noise); sky is a vertical gradient. Sensor noise is a
deterministic per-pixel hash (σ ≈ 1.2 grey levels), so renders are reproducible and thread-safe.

Thermal shading gives the surface temperature (kelvin): the object's ``temperature_k``, its hot
parts at ``hot_k`` (front quarter of moving vehicles = engine, exposed skin), ground by material,
+1.5 K on sun-facing surfaces, sky at 245 K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.synth.raster import SceneMesh, rasterise
from avfusion.synth.world import (
    TEX_BUILDING,
    TEX_CAR,
    TEX_FOLIAGE,
    TEX_ROAD,
    TEX_SIDEWALK,
    TEX_SKIN,
    TEX_STRIPES,
    TEX_TERRAIN,
    World,
    road_sd,
)

__all__ = [
    "GROUND_PRIM",
    "SKY_PRIM",
    "SUN_DIRECTION",
    "RenderResult",
    "ViewGeometry",
    "render",
    "view_geometry",
]

#: Unit vector towards the sun in the world frame (azimuth 30°, elevation 40°).
SUN_DIRECTION = np.array(
    [
        np.cos(np.deg2rad(40)) * np.cos(np.deg2rad(30)),
        np.cos(np.deg2rad(40)) * np.sin(np.deg2rad(30)),
        np.sin(np.deg2rad(40)),
    ]
)
GROUND_PRIM = -1
SKY_PRIM = -2
#: Sky temperature seen by the LWIR camera (K).
SKY_TEMPERATURE_K = 245.0
#: Ground temperatures (K): asphalt, sidewalk concrete, vegetated terrain.
GROUND_TEMPERATURE_K = (294.0, 291.0, 287.0)
MODE_RGB, MODE_THERMAL = 0, 1


@dataclass(frozen=True)
class ViewGeometry:
    """Per-camera rendering set-up: pinhole canvas and each output pixel's exact ray."""

    fx: float
    fy: float
    cx: float
    cy: float
    canvas_w: int
    canvas_h: int
    map_u: npt.NDArray[np.int32]  # (H, W) canvas column of each output pixel
    map_v: npt.NDArray[np.int32]
    xn: npt.NDArray[np.float64]  # (H, W) undistorted normalised x/z of each output pixel's ray
    yn: npt.NDArray[np.float64]


_VIEW_CACHE: dict[tuple[Any, ...], ViewGeometry] = {}


def view_geometry(cam: CameraModel, supersample: float = 1.5) -> ViewGeometry:
    """The canvas and ray tables for ``cam`` (cached per model)."""
    key = (
        cam.K.tobytes(),
        cam.width,
        cam.height,
        cam.distortion,
        cam.coeffs.tobytes(),
        supersample,
    )
    if key in _VIEW_CACHE:
        return _VIEW_CACHE[key]
    us, vs = np.meshgrid(
        np.arange(cam.width, dtype=np.float64), np.arange(cam.height, dtype=np.float64)
    )
    uv = np.stack([us.ravel(), vs.ravel()], axis=1)
    xn, yn = cam.pixels_to_normalised(uv)
    xn = xn.reshape(cam.height, cam.width)
    yn = yn.reshape(cam.height, cam.width)
    if cam.distortion == "none" and cam.K[0, 1] == 0.0:
        geo = ViewGeometry(
            cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height,
            us.astype(np.int32), vs.astype(np.int32), xn, yn,
        )  # fmt: skip
    else:
        fx, fy = cam.fx * supersample, cam.fy * supersample
        cx = -float(xn.min()) * fx + 1.0
        cy = -float(yn.min()) * fy + 1.0
        w = int(np.ceil(float(xn.max()) * fx + cx)) + 2
        h = int(np.ceil(float(yn.max()) * fy + cy)) + 2
        mu = np.clip(np.rint(xn * fx + cx), 0, w - 1).astype(np.int32)
        mv = np.clip(np.rint(yn * fy + cy), 0, h - 1).astype(np.int32)
        geo = ViewGeometry(fx, fy, cx, cy, w, h, mu, mv, xn, yn)
    _VIEW_CACHE[key] = geo
    return geo


@njit(cache=True)
def _hash(i: int, j: int, k: int) -> float:
    """Deterministic hash of three integers to [0, 1)."""
    h = (
        (np.int64(i) * np.int64(73856093))
        ^ (np.int64(j) * np.int64(19349663))
        ^ (np.int64(k) * np.int64(83492791))
    )
    h = (h ^ (h >> np.int64(13))) * np.int64(1274126177)
    h = h ^ (h >> np.int64(16))
    return float(h & np.int64(0xFFFF)) / 65536.0


@njit(cache=True, fastmath=True)
def _albedo(
    tex: int, base_r: float, base_g: float, base_b: float,
    wx: float, wy: float, lx: float, ly: float, lz: float, hz: float, nz: float,
    params: npt.NDArray[np.float64], out: npt.NDArray[np.float64],
) -> None:  # fmt: skip
    """Textured albedo at a surface point (world x, y; local x, y and height above the part's bottom)."""
    r, g, b = base_r, base_g, base_b
    if tex == TEX_ROAD:
        s, d = road_sd(wx, wy, params)
        n = 0.06 * (_hash(int(np.floor(wx * 5)), int(np.floor(wy * 5)), 1) - 0.5)
        r, g, b = r + n, g + n, b + n
        ad = abs(d)
        if (ad < 0.08 and (s % 6.0) < 3.0) or abs(ad - 3.5) < 0.08:
            r, g, b = 0.9, 0.9, 0.88
    elif tex == TEX_SIDEWALK:
        s, d = road_sd(wx, wy, params)
        if (s % 1.5) < 0.05 or ((abs(d) - 6.0) % 1.5) < 0.05:
            r, g, b = r * 0.6, g * 0.6, b * 0.6
        n = 0.04 * (_hash(int(np.floor(wx * 8)), int(np.floor(wy * 8)), 2) - 0.5)
        r, g, b = r + n, g + n, b + n
    elif tex == TEX_TERRAIN:
        m = _hash(int(np.floor(wx * 2)), int(np.floor(wy * 2)), 3)
        r, g, b = r + 0.15 * m, g - 0.05 * m, b + 0.02 * m
    elif tex == TEX_BUILDING:
        if abs(nz) < 0.5:
            h_along = lx + ly
            if (
                (lz % 3.0) > 1.0
                and (lz % 3.0) < 2.2
                and (h_along % 2.5) > 0.6
                and (h_along % 2.5) < 1.8
                and lz > 1.0
            ):
                r, g, b = 0.12, 0.16, 0.24
        else:
            r, g, b = 0.3, 0.3, 0.32
    elif tex == TEX_CAR:
        if lz < 0.25 * hz:
            r, g, b = 0.06, 0.06, 0.06
    elif tex == TEX_FOLIAGE:
        m = _hash(int(np.floor(wx * 3)), int(np.floor(wy * 3)), int(np.floor(lz * 3)))
        r, g, b = r * (0.7 + 0.6 * m), g * (0.7 + 0.6 * m), b * (0.7 + 0.6 * m)
    elif tex == TEX_STRIPES and ((lx + ly + lz) % 0.5) < 0.25:
        r, g, b = 0.92, 0.92, 0.92
    out[0] = min(max(r, 0.0), 1.0)
    out[1] = min(max(g, 0.0), 1.0)
    out[2] = min(max(b, 0.0), 1.0)


@njit(cache=True, parallel=True, fastmath=True)
def _shade_kernel(
    tri_id: npt.NDArray[np.int32], depth: npt.NDArray[np.float32], map_u: npt.NDArray[np.int32], map_v: npt.NDArray[np.int32],
    xn: npt.NDArray[np.float64], yn: npt.NDArray[np.float64], rot_wc: npt.NDArray[np.float64], t_wc: npt.NDArray[np.float64],
    tri_normal: npt.NDArray[np.float64], tri_prim: npt.NDArray[np.int32],
    p_center: npt.NDArray[np.float64], p_half: npt.NDArray[np.float64], p_yaw: npt.NDArray[np.float64],
    p_material: npt.NDArray[np.int32], p_object: npt.NDArray[np.int32],
    m_rgb: npt.NDArray[np.float64], m_texture: npt.NDArray[np.int32],
    o_temp: npt.NDArray[np.float64], o_hot: npt.NDArray[np.float64], o_moving: npt.NDArray[np.bool_],
    params: npt.NDArray[np.float64], sun: npt.NDArray[np.float64], mode: int, noise_seed: int,
    out: npt.NDArray[np.float32], out_prim: npt.NDArray[np.int32], out_depth: npt.NDArray[np.float32],
) -> None:  # fmt: skip
    h, w = xn.shape
    for i in prange(h):
        alb = np.zeros(3)
        for j in range(w):
            cu = map_u[i, j]
            cv = map_v[i, j]
            tid = tri_id[cv, cu]
            x = xn[i, j]
            y = yn[i, j]
            dwx = rot_wc[0, 0] * x + rot_wc[0, 1] * y + rot_wc[0, 2]
            dwy = rot_wc[1, 0] * x + rot_wc[1, 1] * y + rot_wc[1, 2]
            dwz = rot_wc[2, 0] * x + rot_wc[2, 1] * y + rot_wc[2, 2]
            if tid < 0:
                out_prim[i, j] = -2
                out_depth[i, j] = np.inf
                if mode == 0:
                    e = min(max(dwz / np.sqrt(dwx * dwx + dwy * dwy + dwz * dwz) * 3.0, 0.0), 1.0)
                    out[i, j, 0] = 0.78 - 0.4 * e
                    out[i, j, 1] = 0.86 - 0.3 * e
                    out[i, j, 2] = 0.95 - 0.1 * e
                else:
                    out[i, j, 0] = 245.0
                continue
            z = depth[cv, cu]
            wx = t_wc[0] + dwx * z
            wy = t_wc[1] + dwy * z
            wz = t_wc[2] + dwz * z
            nx, ny, nz = tri_normal[tid, 0], tri_normal[tid, 1], tri_normal[tid, 2]
            lam = max(nx * sun[0] + ny * sun[1] + nz * sun[2], 0.0)
            prim = tri_prim[tid]
            out_prim[i, j] = prim
            out_depth[i, j] = z
            if prim < 0:
                _s, d = road_sd(wx, wy, params)
                ad = abs(d)
                mat = 0 if ad < params[3] else (1 if ad < params[4] else 2)
                tex = m_texture[mat]
                if mode == 0:
                    _albedo(
                        tex,
                        m_rgb[mat, 0],
                        m_rgb[mat, 1],
                        m_rgb[mat, 2],
                        wx,
                        wy,
                        0.0,
                        0.0,
                        0.0,
                        1.0,
                        nz,
                        params,
                        alb,
                    )
                else:
                    base = 294.0 if mat == 0 else (291.0 if mat == 1 else 287.0)
                    out[i, j, 0] = (
                        base
                        + 1.5 * lam
                        + 0.6 * (_hash(int(np.floor(wx * 2)), int(np.floor(wy * 2)), 7) - 0.5)
                    )
                    continue
            else:
                c = np.cos(p_yaw[prim])
                sn = np.sin(p_yaw[prim])
                px = wx - p_center[prim, 0]
                py = wy - p_center[prim, 1]
                lx = c * px + sn * py
                ly = -sn * px + c * py
                lz = wz - p_center[prim, 2] + p_half[prim, 2]
                mat = p_material[prim]
                tex = m_texture[mat]
                if mode == 0:
                    _albedo(
                        tex,
                        m_rgb[mat, 0],
                        m_rgb[mat, 1],
                        m_rgb[mat, 2],
                        wx,
                        wy,
                        lx,
                        ly,
                        lz,
                        2.0 * p_half[prim, 2],
                        nz,
                        params,
                        alb,
                    )
                else:
                    obj = p_object[prim]
                    temp = o_temp[obj]
                    if tex == TEX_SKIN or (
                        tex == TEX_CAR and o_moving[obj] and lx > 0.5 * p_half[prim, 0]
                    ):
                        temp = o_hot[obj]
                    elif tex == TEX_CAR and lz < 0.25 * 2.0 * p_half[prim, 2]:
                        temp = 0.5 * (o_temp[obj] + o_hot[obj])
                    out[i, j, 0] = temp + 1.5 * lam
                    continue
            shade = 0.35 + 0.65 * lam
            nse = (_hash(i, j, noise_seed) - 0.5) * 4.0 / 255.0
            out[i, j, 0] = alb[0] * shade + nse
            out[i, j, 1] = alb[1] * shade + nse
            out[i, j, 2] = alb[2] * shade + nse


@dataclass(frozen=True)
class RenderResult:
    """``image`` (H, W, 3) float32 RGB 0..1 or (H, W) float32 kelvin; ``prim`` (H, W) primitive
    index per pixel (−1 ground, −2 sky); ``depth_m`` (H, W) z in the camera frame (inf for sky)."""

    image: npt.NDArray[np.float32]
    prim: npt.NDArray[np.int32]
    depth_m: npt.NDArray[np.float32]


def render(
    world: World,
    mesh: SceneMesh,
    prims: dict[str, npt.NDArray[Any]],
    cam: CameraModel,
    world_from_cam: Transform,
    *,
    thermal: bool,
    noise_seed: int = 0,
    max_depth_m: float = 150.0,
) -> RenderResult:
    """Render the scene (``mesh`` built from ``prims``) seen by ``cam`` at ``world_from_cam``."""
    geo = view_geometry(cam)
    rot = world_from_cam.rotation
    depth = np.full((geo.canvas_h, geo.canvas_w), np.inf, dtype=np.float32)
    tri_id = np.full((geo.canvas_h, geo.canvas_w), -1, dtype=np.int32)
    rasterise(
        mesh.tri, np.ascontiguousarray(rot), np.ascontiguousarray(world_from_cam.translation),
        geo.fx, geo.fy, geo.cx, geo.cy, depth, tri_id, max_depth_m,
    )  # fmt: skip
    mats = world.material_table()
    otab = world.object_table()
    channels = 1 if thermal else 3
    out = np.empty((cam.height, cam.width, channels), dtype=np.float32)
    out_prim = np.empty((cam.height, cam.width), dtype=np.int32)
    out_depth = np.empty((cam.height, cam.width), dtype=np.float32)
    _shade_kernel(
        tri_id, depth, geo.map_u, geo.map_v, geo.xn, geo.yn, np.ascontiguousarray(rot),
        np.ascontiguousarray(world_from_cam.translation), mesh.normal, mesh.prim,
        prims["center"], prims["half"], prims["yaw"], prims["material"], prims["object"],
        mats["rgb"], mats["texture"], otab["temperature_k"], otab["hot_k"], otab["moving"],
        world.params, SUN_DIRECTION, MODE_THERMAL if thermal else MODE_RGB, int(noise_seed),
        out, out_prim, out_depth,
    )  # fmt: skip
    image = out[..., 0] if thermal else out
    return RenderResult(image, out_prim, out_depth)


def to_uint8(image: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Float RGB 0..1 to uint8 (rounded, clipped)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
