"""Occupancy grids as images: top-down, height slices, an isometric voxel view, visibility.

Inputs follow Occ3D (DESIGN.md): ``semantics`` (X, Y, Z) uint8 classes indexed ``[x, y, z]``
with 17 = free, ``mask_lidar`` / ``mask_camera`` (X, Y, Z) uint8 0/1. Every top-down image
uses the BEV orientation (x forward = up, y left = left): voxel (x, y) lands at image row
``X - 1 - x`` and column ``Y - 1 - y``, each voxel ``scale`` × ``scale`` pixels.

* ``render_topdown``: the class colour of each column's highest occupied voxel (only voxels
  the mask marks observed count); columns with nothing occupied show the background, columns
  the mask never observed a darker grey.
* ``render_height_slices``: every z layer top-down, in a labelled grid.
* ``render_isometric``: occupied voxels as shaded cubes seen from behind-right and above, by a
  vectorised painter's algorithm: each voxel's three visible faces are a fixed pixel template
  (rasterised once), every voxel's pixels are written far to near in one indexed write (the
  last write of a pixel wins, so nearer voxels cover farther ones).
* ``render_visibility``: per column the fraction of voxels each mask observed, side by side.
* ``occupancy_legend``: the class colour legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError
from avfusion.viz.colors import OCC3D_CLASSES, OCC3D_COLORS, OCC3D_FREE, colormap_lut
from avfusion.viz.overlay import _text, draw_legend

__all__ = [
    "OCC_BACKGROUND",
    "occupancy_legend",
    "render_height_slices",
    "render_isometric",
    "render_topdown",
    "render_visibility",
]

U8 = npt.NDArray[np.uint8]

OCC_BACKGROUND = (24, 24, 30)
_UNOBSERVED = (60, 60, 66)
#: Occ3D-nuScenes height range (m) of the 16 z layers.
OCC3D_Z_RANGE_M = (-1.0, 5.4)


def _check_grid(arr: Any, name: str, what: str) -> npt.NDArray[np.uint8]:
    a = np.asarray(arr)
    if a.ndim != 3 or a.size == 0:
        raise AVFusionError(f"{what}: {name} must be a non-empty (X, Y, Z) array, got {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise AVFusionError(f"{what}: {name} must hold integers, got {a.dtype}")
    if name == "semantics" and (int(a.min()) < 0 or int(a.max()) > OCC3D_FREE):
        raise AVFusionError(
            f"{what}: semantics must be Occ3D classes 0..17, got values in [{a.min()}, {a.max()}]"
        )
    return a.astype(np.uint8, copy=False)


def _check_mask(mask: Any, shape: tuple[int, ...], name: str, what: str) -> npt.NDArray[np.bool_]:
    m = _check_grid(mask, name, what)
    if m.shape != shape:
        raise AVFusionError(f"{what}: {name} has shape {m.shape}, expected {shape}")
    return m != 0


def _check_scale(scale: Any, what: str, top: int = 16) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or not 1 <= scale <= top:
        raise AVFusionError(f"{what}: scale must be an integer in 1..{top}, got {scale!r}")
    return int(scale)


def _to_image(cells: U8, scale: int) -> U8:
    """(X, Y, 3) per-column colours → BEV-oriented image (X·scale, Y·scale, 3)."""
    img = cells[::-1, ::-1]
    return np.ascontiguousarray(np.repeat(np.repeat(img, scale, axis=0), scale, axis=1))


def _occupied(semantics: U8, mask: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.bool_]:
    occ = semantics != OCC3D_FREE
    return occ if mask is None else occ & mask


def render_topdown(
    semantics: npt.ArrayLike, *, mask: npt.ArrayLike | None = None, scale: int = 3
) -> U8:
    """Top-down image (X·scale, Y·scale, 3): each column in the class colour of its highest
    occupied voxel (``mask`` (X, Y, Z): only observed voxels count; columns never observed are
    dark grey), empty columns ``OCC_BACKGROUND``."""
    what = "render_topdown"
    sem = _check_grid(semantics, "semantics", what)
    s = _check_scale(scale, what)
    m = None if mask is None else _check_mask(mask, sem.shape, "mask", what)
    occ = _occupied(sem, m)
    nz = sem.shape[2]
    top = nz - 1 - np.argmax(occ[:, :, ::-1], axis=2)
    any_occ = occ.any(axis=2)
    cls = np.take_along_axis(sem, top[..., None], axis=2)[..., 0]
    cells = np.empty((*sem.shape[:2], 3), np.uint8)
    cells[:] = OCC_BACKGROUND
    if m is not None:
        cells[~m.any(axis=2)] = _UNOBSERVED
    cells[any_occ] = OCC3D_COLORS[cls[any_occ]]
    return _to_image(cells, s)


def render_height_slices(
    semantics: npt.ArrayLike,
    *,
    scale: int = 2,
    columns: int = 4,
    z_range_m: tuple[float, float] | None = None,
) -> U8:
    """Every z layer top-down (class colours, free = background) in a grid of ``columns``
    tiles, bottom layer first, each labelled ``z=k`` and, with ``z_range_m`` (default the
    Occ3D range for 16 layers), its height band in metres."""
    what = "render_height_slices"
    sem = _check_grid(semantics, "semantics", what)
    s = _check_scale(scale, what)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise AVFusionError(f"{what}: columns must be a positive integer, got {columns!r}")
    nx, ny, nz = sem.shape
    zr = z_range_m if z_range_m is not None else (OCC3D_Z_RANGE_M if nz == 16 else None)
    if zr is not None and not (np.isfinite(zr[0]) and np.isfinite(zr[1]) and zr[1] > zr[0]):
        raise AVFusionError(f"{what}: z_range_m must be finite (low, high), got {zr!r}")
    cols = min(columns, nz)
    rows = -(-nz // cols)
    label_h, gap = 18, 4
    th, tw = nx * s + label_h, ny * s
    out = np.empty((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), np.uint8)
    out[:] = (10, 10, 12)
    for z in range(nz):
        layer = sem[:, :, z]
        cells = np.empty((nx, ny, 3), np.uint8)
        cells[:] = OCC_BACKGROUND
        occ = layer != OCC3D_FREE
        cells[occ] = OCC3D_COLORS[layer[occ]]
        r, c = divmod(z, cols)
        y0, x0 = r * (th + gap), c * (tw + gap)
        out[y0 + label_h : y0 + th, x0 : x0 + tw] = _to_image(cells, s)
        text = f"z={z}"
        if zr is not None:
            step = (zr[1] - zr[0]) / nz
            text += f"  {zr[0] + z * step:.1f}..{zr[0] + (z + 1) * step:.1f} m"
        tile = out[y0 : y0 + label_h, x0 : x0 + tw]
        _text(tile, text, (2, 1), (230, 230, 230), scale=0.4, background=None, below=True, pad=1)
    return out


def _face_templates(scale: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], U8]:
    """Pixel offsets (K, 2) (row, col) of one voxel's visible faces relative to the screen
    position of its (0, 0, 0) corner, the face of each (0 top, 1 back (-x), 2 right (-y), 3
    outline) and the (row, col) extent to allocate."""
    import cv2

    a, b, c = 2 * scale, scale, 2 * scale

    def proj(x: float, y: float, z: float) -> tuple[float, float]:
        return (x - y) * a, -(x + y) * b - z * c  # (col, row)

    faces = {
        1: [(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1)],  # x = 0 face, towards the viewer
        2: [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)],  # y = 0 face
        0: [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)],  # top
    }
    pad = 4 * scale + 4
    size = 2 * pad + 1
    canvas = np.zeros((size, size), np.uint8)
    for face in (1, 2, 0):
        pts = np.array([proj(*p) for p in faces[face]]) + pad
        fixed = np.rint(pts * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillConvexPoly(canvas, fixed, face + 1, cv2.LINE_8, 4)
    if scale >= 2:
        for face in (1, 2, 0):
            pts = np.array([proj(*p) for p in faces[face]]) + pad
            fixed = np.rint(pts * 16).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [fixed], True, 4, 1, cv2.LINE_8, 4)
    rr, cc = np.nonzero(canvas)
    return (
        np.stack([rr - pad, cc - pad], axis=1).astype(np.intp),
        (canvas[rr, cc] - 1).astype(np.intp),
        np.array([a, b, c], np.uint8),
    )


#: Brightness of the top, back (-x), right (-y) faces and the voxel outlines.
_SHADES = np.array([1.0, 0.78, 0.6, 0.45])


def render_isometric(
    semantics: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    scale: int = 2,
    background: tuple[int, int, int] = OCC_BACKGROUND,
) -> U8:
    """Occupied voxels (``mask``: observed ones only) as shaded cubes in class colours, seen
    from behind-right and above the ego in a 2:1 dimetric projection (x forward runs up-right,
    y left runs up-left, z up): top faces full brightness, the back (-x) and right (-y) faces
    darker, voxel outlines from ``scale`` 2 on. Vectorised painter's algorithm (module docstring); voxels
    whose three visible neighbours are all occupied are skipped (their faces are covered).
    Size ((X+Y)·scale + 2·Z·scale + margin) × ((X+Y)·2·scale + margin)."""
    what = "render_isometric"
    sem = _check_grid(semantics, "semantics", what)
    s = _check_scale(scale, what, top=8)
    m = None if mask is None else _check_mask(mask, sem.shape, "mask", what)
    occ = _occupied(sem, m)
    nx, ny, nz = sem.shape
    # cull voxels hidden behind their -x, -y and +z neighbours
    pad = np.pad(occ, 1, constant_values=False)
    hidden = pad[:-2, 1:-1, 1:-1] & pad[1:-1, :-2, 1:-1] & pad[1:-1, 1:-1, 2:]
    x, y, z = np.nonzero(occ & ~hidden)
    offsets, face, (a, b, c) = _face_templates(s)
    margin = 4 * s + 4
    width = (nx + ny) * int(a) + 2 * margin
    height = (nx + ny) * int(b) + nz * int(c) + 2 * margin
    out = np.empty((height, width, 3), np.uint8)
    out[:] = background
    if x.size == 0:
        return out
    # far to near: the viewer is at -x, -y, +z
    order = np.argsort(-(x + y - z), kind="stable")
    x, y, z = x[order], y[order], z[order]
    col0 = (x - y) * int(a) + ny * int(a) + margin
    row0 = -(x + y) * int(b) - z * int(c) + (nx + ny) * int(b) + nz * int(c) + margin
    rr = (row0[:, None] + offsets[None, :, 0]).reshape(-1)
    cc = (col0[:, None] + offsets[None, :, 1]).reshape(-1)
    ok = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
    flat = (rr * width + cc)[ok]
    voxel = np.repeat(np.arange(x.size), offsets.shape[0])[ok]
    shade = np.tile(_SHADES[face], x.size)[ok]
    rev_unique, rev_first = np.unique(flat[::-1], return_index=True)
    last = flat.size - 1 - rev_first
    base = OCC3D_COLORS[sem[x, y, z]].astype(np.float64)
    colors = np.rint(base[voxel[last]] * shade[last, None]).astype(np.uint8)
    out.reshape(-1, 3)[rev_unique] = colors
    return out


def render_visibility(
    mask_lidar: npt.ArrayLike, mask_camera: npt.ArrayLike, *, scale: int = 3
) -> U8:
    """Top-down fraction of observed voxels per column (0 black .. 1 bright, inferno) of the
    LiDAR mask and the camera mask side by side (each panel at least 180 px wide, the image at
    its left), titled with the observed share, with a colour bar below."""
    what = "render_visibility"
    ml = _check_grid(mask_lidar, "mask_lidar", what)
    mc = _check_grid(mask_camera, "mask_camera", what)
    if ml.shape != mc.shape:
        raise AVFusionError(f"{what}: mask_lidar {ml.shape} and mask_camera {mc.shape} differ")
    s = _check_scale(scale, what)
    lut = colormap_lut("inferno")
    title_h, gap, bar_h = 22, 8, 30
    nx, ny, _ = ml.shape
    tw = ny * s
    pw = max(tw, 180)  # panel width: room for the title
    out = np.empty((title_h + nx * s + bar_h, 2 * pw + gap, 3), np.uint8)
    out[:] = (10, 10, 12)
    for k, (mask, name) in enumerate(((ml, "LiDAR observed"), (mc, "camera observed"))):
        frac = (mask != 0).mean(axis=2)
        cells = lut[np.rint(frac * 255).astype(np.intp)]
        x0 = k * (pw + gap)
        out[title_h : title_h + nx * s, x0 : x0 + tw] = _to_image(cells, s)
        text = f"{name}: {100 * float((mask != 0).mean()):.0f}%"
        _text(out, text, (x0 + 2, 2), (235, 235, 235), scale=0.45, background=None, below=True)
    bar_w = min(2 * pw + gap - 80, 300)
    y0 = title_h + nx * s + 6
    idx = np.rint(np.linspace(0, 255, max(bar_w, 2))).astype(np.intp)
    out[y0 : y0 + 10, 30 : 30 + bar_w] = lut[idx][None]
    _text(out, "0", (14, y0 - 2), (220, 220, 220), scale=0.4, background=None, below=True, pad=1)
    _text(
        out,
        "1",
        (36 + bar_w, y0 - 2),
        (220, 220, 220),
        scale=0.4,
        background=None,
        below=True,
        pad=1,
    )
    return out


def occupancy_legend(
    classes: Sequence[int] | npt.NDArray[np.integer[Any]] | None = None,
    *,
    width: int = 200,
    include_free: bool = False,
) -> U8:
    """The Occ3D class legend (swatch and name per class); ``classes`` restricts it (e.g. the
    classes present: ``np.unique(semantics)``)."""
    chosen = (
        list(range(OCC3D_FREE + 1))
        if classes is None
        else [int(c) for c in np.asarray(classes).reshape(-1)]
    )
    bad = [c for c in chosen if not 0 <= c <= OCC3D_FREE]
    if bad:
        raise AVFusionError(f"occupancy_legend: classes must be in 0..17, got {bad}")
    if not include_free:
        chosen = [c for c in chosen if c != OCC3D_FREE]
    names = [*OCC3D_CLASSES, "free"] if len(OCC3D_CLASSES) == OCC3D_FREE else list(OCC3D_CLASSES)
    items = [(f"{c} {names[c]}", tuple(int(v) for v in OCC3D_COLORS[c])) for c in chosen]
    return draw_legend(items, width=width, row_px=20, title="Occ3D classes")
