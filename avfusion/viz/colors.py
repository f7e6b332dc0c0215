"""Palettes shared by every renderer: Occ3D classes, nuScenes categories, depth, height, severity.

All colours are RGB ``uint8``. Lookups are vectorised (a colour table indexed by an array), so a
million points cost one ``take``.

* ``OCC3D_COLORS`` (18, 3): the usual Occ3D / nuScenes-lidarseg palette (the one of the Occ3D and
  CVPR 2023 occupancy challenge visualisers), index = class (0 others ... 16 vegetation, 17 free).
* ``category_color(label)`` / ``category_colors(labels)``: nuScenes category names matched by the
  longest known prefix (``vehicle.car``, ``human.pedestrian`` ...), so ``human.pedestrian.adult``
  and ``human.pedestrian.child`` share a colour; unknown names get ``DEFAULT_CATEGORY_COLOR``.
* ``depth_colors(depth_m, max_depth_m)``: the turbo colormap (OpenCV's table), near = red,
  far = blue, in ``DEPTH_BINS`` bins (``depth_bin``); ``height_colors`` the viridis table.
* ``SEVERITY_COLORS`` / ``severity_color``: high (red), medium (orange), low (yellow); a float
  severity in [0, 1] is banded with ``avfusion.fusion.consistency.severity_level``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError
from avfusion.fusion.aggregate import OCC3D_CLASSES
from avfusion.fusion.consistency.findings import severity_level

__all__ = [
    "CATEGORY_COLORS",
    "DEFAULT_CATEGORY_COLOR",
    "DEPTH_BINS",
    "OCC3D_CLASSES",
    "OCC3D_COLORS",
    "OCC3D_FREE",
    "RADAR_COLOR",
    "SEVERITY_COLORS",
    "category_color",
    "category_colors",
    "colormap_lut",
    "depth_bin",
    "depth_colors",
    "height_colors",
    "occ3d_colors",
    "severity_color",
]

RGB = tuple[int, int, int]
U8 = npt.NDArray[np.uint8]

#: Index of the "free" class in Occ3D semantics.
OCC3D_FREE = 17

#: The Occ3D-nuScenes palette (RGB), index = class; "free" (17) is white.
OCC3D_COLORS: U8 = np.array(
    [
        [0, 0, 0],  # 0 others
        [255, 120, 50],  # 1 barrier
        [255, 192, 203],  # 2 bicycle
        [255, 255, 0],  # 3 bus
        [0, 150, 245],  # 4 car
        [0, 255, 255],  # 5 construction_vehicle
        [200, 180, 0],  # 6 motorcycle
        [255, 0, 0],  # 7 pedestrian
        [255, 240, 150],  # 8 traffic_cone
        [135, 60, 0],  # 9 trailer
        [160, 32, 240],  # 10 truck
        [255, 0, 255],  # 11 driveable_surface
        [139, 137, 137],  # 12 other_flat
        [75, 0, 75],  # 13 sidewalk
        [150, 240, 80],  # 14 terrain
        [230, 230, 250],  # 15 manmade
        [0, 175, 0],  # 16 vegetation
        [255, 255, 255],  # 17 free
    ],
    dtype=np.uint8,
)
OCC3D_COLORS.setflags(write=False)

#: nuScenes category prefixes → colour; the longest matching prefix wins. Bright enough to read
#: on photographs and on the dark BEV background.
CATEGORY_COLORS: dict[str, RGB] = {
    "vehicle": (255, 158, 0),
    "vehicle.car": (255, 158, 0),
    "vehicle.truck": (255, 61, 99),
    "vehicle.bus": (255, 215, 0),
    "vehicle.trailer": (205, 133, 63),
    "vehicle.construction": (233, 150, 70),
    "vehicle.emergency": (255, 0, 0),
    "vehicle.motorcycle": (255, 0, 255),
    "vehicle.bicycle": (220, 20, 60),
    "human": (0, 191, 255),
    "human.pedestrian": (0, 191, 255),
    "animal": (127, 255, 0),
    "movable_object": (160, 160, 160),
    "movable_object.barrier": (176, 196, 222),
    "movable_object.trafficcone": (0, 255, 127),
    "static_object": (188, 143, 143),
    "static_object.bicycle_rack": (188, 143, 143),
}
#: Colour of a category no prefix matches.
DEFAULT_CATEGORY_COLOR: RGB = (230, 230, 230)
#: Colour of radar returns and their velocity arrows.
RADAR_COLOR: RGB = (255, 60, 255)

#: Severity band → colour.
SEVERITY_COLORS: dict[str, RGB] = {
    "high": (255, 40, 40),
    "medium": (255, 150, 0),
    "low": (255, 235, 60),
}

#: Number of depth (and height) colour bins.
DEPTH_BINS = 256


def occ3d_colors(semantics: npt.ArrayLike) -> U8:
    """Colours (..., 3) of Occ3D class indices (any shape, values 0..17).

    Raises ``AVFusionError`` for a value outside 0..17.
    """
    sem = np.asarray(semantics)
    if sem.size and (
        not np.issubdtype(sem.dtype, np.integer) or int(sem.min()) < 0 or int(sem.max()) > 17
    ):
        raise AVFusionError(
            f"occ3d_colors: semantics must be integer classes 0..17, got {sem.dtype} "
            f"in [{sem.min() if sem.size else '-'}, {sem.max() if sem.size else '-'}]"
        )
    return OCC3D_COLORS[sem.astype(np.intp)]


def category_color(label: str) -> RGB:
    """Colour of one nuScenes category name (longest known prefix, dot-separated)."""
    parts = str(label).split(".")
    for n in range(len(parts), 0, -1):
        hit = CATEGORY_COLORS.get(".".join(parts[:n]))
        if hit is not None:
            return hit
    return DEFAULT_CATEGORY_COLOR


def category_colors(labels: Iterable[str] | npt.NDArray[Any]) -> U8:
    """Colours (N, 3) of N category names (looked up once per distinct name)."""
    arr = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels, dtype=np.str_)
    if arr.size == 0:
        return np.zeros((0, 3), np.uint8)
    names, inverse = np.unique(arr.reshape(-1), return_inverse=True)
    table = np.array([category_color(str(n)) for n in names], dtype=np.uint8)
    return table[inverse.reshape(-1)]


@lru_cache(maxsize=8)
def _lut(name: str) -> U8:
    import cv2

    maps = {
        "turbo": cv2.COLORMAP_TURBO,
        "viridis": cv2.COLORMAP_VIRIDIS,
        "inferno": cv2.COLORMAP_INFERNO,
        "magma": cv2.COLORMAP_MAGMA,
    }
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(ramp, maps[name]).reshape(256, 3)
    out = np.ascontiguousarray(bgr[:, ::-1], dtype=np.uint8)
    out.setflags(write=False)
    return out


def colormap_lut(name: str = "turbo") -> U8:
    """A (256, 3) RGB table of an OpenCV colormap: turbo, viridis, inferno or magma."""
    if name not in ("turbo", "viridis", "inferno", "magma"):
        raise AVFusionError(
            f"colormap_lut: unknown colormap {name!r} (turbo, viridis, inferno, magma)"
        )
    return _lut(name)


def _check_range(value: float, what: str) -> float:
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise AVFusionError(f"{what} must be a positive number, got {value!r}")
    return v


def depth_bin(depth_m: npt.ArrayLike, max_depth_m: float = 60.0) -> npt.NDArray[np.intp]:
    """Depth bin 0..255 of each depth: ``round(255 · clip(depth / max_depth_m, 0, 1))``
    (non-finite depths go to the last bin)."""
    top = _check_range(max_depth_m, "depth_bin: max_depth_m")
    d = np.asarray(depth_m, dtype=np.float64)
    frac = np.clip(np.nan_to_num(d / top, nan=1.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.rint(frac * (DEPTH_BINS - 1)).astype(np.intp)


def depth_colors(depth_m: npt.ArrayLike, max_depth_m: float = 60.0) -> U8:
    """Turbo colours (N, 3) of depths: near red, far (>= ``max_depth_m``) blue."""
    return colormap_lut("turbo")[DEPTH_BINS - 1 - depth_bin(depth_m, max_depth_m)]


def height_colors(z_m: npt.ArrayLike, z_min_m: float = -2.0, z_max_m: float = 4.0) -> U8:
    """Viridis colours (N, 3) of heights: ``z_min_m`` dark blue .. ``z_max_m`` yellow."""
    if not (np.isfinite(z_min_m) and np.isfinite(z_max_m) and z_max_m > z_min_m):
        raise AVFusionError(
            f"height_colors: need finite z_min_m < z_max_m, got {z_min_m}, {z_max_m}"
        )
    z = np.asarray(z_m, dtype=np.float64)
    frac = np.clip(np.nan_to_num((z - z_min_m) / (z_max_m - z_min_m), nan=0.0), 0.0, 1.0)
    return colormap_lut("viridis")[np.rint(frac * 255).astype(np.intp)]


def severity_color(severity: float | str) -> RGB:
    """Colour of a severity band ('high', 'medium', 'low') or of a severity in [0, 1]."""
    if isinstance(severity, str):
        if severity not in SEVERITY_COLORS:
            raise AVFusionError(
                f"severity_color: unknown severity {severity!r} (high, medium, low)"
            )
        return SEVERITY_COLORS[severity]
    value = float(severity)
    if not 0.0 <= value <= 1.0:
        raise AVFusionError(f"severity_color: severity must be in [0, 1], got {severity!r}")
    return SEVERITY_COLORS[severity_level(value)]
