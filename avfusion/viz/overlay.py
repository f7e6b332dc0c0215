"""Camera overlays: LiDAR depth, radar, projected 3D boxes, 2D labels and findings on one image.

Two levels:

* pure array functions (no log): ``draw_points``, ``draw_box_edges``, ``draw_boxes2d``,
  ``draw_arrows``, ``draw_highlights``, ``draw_text``, ``draw_legend``, ``depth_colorbar``,
  ``image_to_rgb``. Each takes an RGB ``uint8`` (H, W, 3) image and returns a **new** one (the
  input is never changed); points are drawn with numpy index arrays (a disc of pixels per point,
  the later point winning where two overlap, deterministically), lines and text with OpenCV
  (anti-aliased, sub-pixel positions).
* log level: ``render_camera_overlay(log, sample_token, channel)`` (the keyframe image with every
  layer) and ``render_calibration_check(log, sample_token, channel)`` (LiDAR depth-discontinuity
  points over the image's edge map, from ``calibration.validation.prepare_alignment``).

Everything geometric comes from the fusion layer, motion-compensated: LiDAR through
``fusion.project_cloud`` (deskewed when the cloud has per-point times, occluded points hidden by
its z-buffer), radar through ``fusion.project_radar`` (vertical segment and Doppler arrow),
boxes through ``fusion.project_boxes_into_image`` (moved along their velocity to the camera
time, edges clipped at the near plane). Renderers never write files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError
from avfusion.fusion.projection import OcclusionOptions
from avfusion.viz.colors import (
    DEPTH_BINS,
    RADAR_COLOR,
    category_colors,
    colormap_lut,
    depth_colors,
    severity_color,
)

__all__ = [
    "Highlight",
    "depth_colorbar",
    "draw_arrows",
    "draw_box_edges",
    "draw_boxes2d",
    "draw_highlights",
    "draw_legend",
    "draw_points",
    "draw_text",
    "image_to_rgb",
    "render_calibration_check",
    "render_camera_overlay",
    "short_label",
]

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]
RGB = tuple[int, int, int]

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_LIMIT = 1.0e6  # coordinates are clipped to ±this before drawing (cv2 takes int32)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_rgb(img: Any, what: str) -> U8:
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise AVFusionError(
            f"{what}: image must be a non-empty (H, W, 3) uint8 RGB array, got {arr.dtype} {arr.shape}"
        )
    return arr


def _colors(colors: Any, n: int, what: str) -> U8:
    c = np.asarray(colors)
    if c.shape == (3,):
        c = np.broadcast_to(c, (n, 3))
    if c.shape != (n, 3):
        raise AVFusionError(f"{what}: colors must be (3,) or ({n}, 3), got {c.shape}")
    if np.issubdtype(c.dtype, np.floating) and not np.all(np.isfinite(c)):
        raise AVFusionError(f"{what}: colors must be finite")
    return np.clip(c, 0, 255).astype(np.uint8)


def _points2(uv: Any, what: str, name: str = "uv_px") -> F64:
    arr = np.asarray(uv, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise AVFusionError(f"{what}: {name} must be (N, 2), got {arr.shape}")
    return arr


def _fixed(points: F64) -> npt.NDArray[np.int32]:
    """Sub-pixel fixed-point int32 coordinates for cv2 (``shift=_SHIFT``)."""
    return np.rint(np.clip(points, -_LIMIT, _LIMIT) * (1 << _SHIFT)).astype(np.int32)


def _rgb_tuple(color: Any) -> tuple[int, int, int]:
    c = np.asarray(color).reshape(3)
    return int(c[0]), int(c[1]), int(c[2])


# --------------------------------------------------------------------------------------------
# Pure drawing functions
# --------------------------------------------------------------------------------------------


def _disc_offsets(radius: int) -> npt.NDArray[np.intp]:
    r = int(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy * dy + dx * dx <= r * r + r  # a round disc (r=1: the 3x3 square)
    return np.stack([dy[keep], dx[keep]], axis=1).astype(np.intp)


def _paint_points(canvas: U8, uv: F64, colors: U8, radius: int) -> None:
    """In place: a disc of ``radius`` px per point, later points over earlier ones."""
    h, w = canvas.shape[:2]
    with np.errstate(invalid="ignore"):
        ok = np.all(np.isfinite(uv), axis=1) & (np.abs(uv) < _LIMIT).all(axis=1)
    if not np.any(ok):
        return
    rows = np.floor(uv[ok, 1] + 0.5).astype(np.intp)
    cols = np.floor(uv[ok, 0] + 0.5).astype(np.intp)
    off = _disc_offsets(radius)
    rr = rows[:, None] + off[None, :, 0]
    cc = cols[:, None] + off[None, :, 1]
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    flat = (rr * w + cc)[inside]
    if flat.size == 0:
        return
    src = np.broadcast_to(np.arange(rows.size)[:, None], rr.shape)[inside]
    # Deterministic "last one wins": keep the last write of every pixel.
    rev_unique, rev_first = np.unique(flat[::-1], return_index=True)
    last = flat.size - 1 - rev_first
    canvas.reshape(-1, 3)[rev_unique] = colors[ok][src[last]]


def draw_points(
    img: npt.ArrayLike, uv_px: npt.ArrayLike, colors: npt.ArrayLike, *, radius: int = 2
) -> U8:
    """A copy of ``img`` with a filled disc of ``radius`` px (0: one pixel) at every point.

    ``uv_px`` (N, 2) pixel coordinates (centre of the top-left pixel = (0, 0); a point's pixel is
    ``(floor(v + 0.5), floor(u + 0.5))``); non-finite points are skipped, discs are cut at the
    border. ``colors`` (N, 3) or (3,) RGB. Where discs overlap the later point wins, so pass the
    points far to near.
    """
    what = "draw_points"
    out = _check_rgb(img, what).copy()
    uv = _points2(uv_px, what)
    cols = _colors(colors, uv.shape[0], what)
    if (
        isinstance(radius, bool)
        or not isinstance(radius, int | np.integer)
        or not 0 <= radius <= 64
    ):
        raise AVFusionError(f"{what}: radius must be an integer in [0, 64], got {radius!r}")
    _paint_points(out, uv, cols, int(radius))
    return out


def _polylines(canvas: U8, lines: Sequence[F64], color: Any, thickness: int) -> None:
    import cv2

    pts = [_fixed(p).reshape(-1, 1, 2) for p in lines if p.shape[0] >= 2]
    if pts:
        cv2.polylines(canvas, pts, False, _rgb_tuple(color), int(thickness), cv2.LINE_AA, _SHIFT)


def draw_box_edges(
    img: npt.ArrayLike,
    edges_uv_px: npt.ArrayLike,
    colors: npt.ArrayLike,
    *,
    edge_visible: npt.ArrayLike | None = None,
    thickness: int = 2,
    front_thickness: int | None = None,
) -> U8:
    """A copy of ``img`` with the 12 edges of N projected boxes drawn.

    ``edges_uv_px`` (N, 12, S, 2) as ``BoxProjection.edges_uv_px`` (each edge sampled at S points,
    NaN where it has no visible part; edge order ``fusion.BOX_EDGES``: the four edges of the
    front (+x) face come first). ``colors`` (N, 3) or (3,). The front face is drawn with
    ``front_thickness`` (default ``thickness + 1``) so the heading reads. Boxes are drawn in the
    given order (pass far to near).
    """
    what = "draw_box_edges"
    out = _check_rgb(img, what).copy()
    edges = np.asarray(edges_uv_px, dtype=np.float64)
    if edges.ndim != 4 or edges.shape[1] != 12 or edges.shape[3] != 2 or edges.shape[2] < 2:
        raise AVFusionError(f"{what}: edges_uv_px must be (N, 12, S>=2, 2), got {edges.shape}")
    n = edges.shape[0]
    cols = _colors(colors, n, what)
    vis = (
        np.ones((n, 12), bool)
        if edge_visible is None
        else np.asarray(edge_visible, dtype=bool).reshape(n, 12)
    )
    vis = vis & np.all(np.isfinite(edges), axis=(2, 3))
    front = thickness + 1 if front_thickness is None else int(front_thickness)
    for i in range(n):  # one cv2 call per box and line weight
        back = [edges[i, e] for e in range(4, 12) if vis[i, e]]
        face = [edges[i, e] for e in range(4) if vis[i, e]]
        _polylines(out, back, cols[i], thickness)
        _polylines(out, face, cols[i], front)
    return out


def _dashes(p0: F64, p1: F64, dash_px: float) -> F64:
    """Dash segments (M, 2, 2) along the segments p0 -> p1 (K, 2), on / off ``dash_px``."""
    d = p1 - p0
    length = np.hypot(d[:, 0], d[:, 1])
    n = np.maximum(1, np.ceil(length / (2 * dash_px)).astype(np.intp))
    seg = np.repeat(np.arange(p0.shape[0]), n)
    k = np.arange(seg.size) - np.repeat(np.cumsum(n) - n, n)
    t0 = (2 * k * dash_px) / np.maximum(length[seg], 1e-9)
    t1 = np.minimum(1.0, t0 + dash_px / np.maximum(length[seg], 1e-9))
    a = p0[seg] + d[seg] * t0[:, None]
    b = p0[seg] + d[seg] * t1[:, None]
    return np.stack([a, b], axis=1)


def draw_boxes2d(
    img: npt.ArrayLike,
    xyxy: npt.ArrayLike,
    colors: npt.ArrayLike,
    *,
    labels: Sequence[str] | None = None,
    thickness: int = 1,
    dash_px: float = 6.0,
) -> U8:
    """A copy of ``img`` with N axis-aligned 2D boxes ``[x0, y0, x1, y1]`` (pixel-edge
    coordinates) drawn dashed (``dash_px`` on/off; 0 draws solid lines), each with an optional
    label under its bottom-left corner."""
    what = "draw_boxes2d"
    out = _check_rgb(img, what).copy()
    b = np.asarray(xyxy, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise AVFusionError(f"{what}: xyxy must be (N, 4), got {b.shape}")
    n = b.shape[0]
    cols = _colors(colors, n, what)
    if labels is not None and len(labels) != n:
        raise AVFusionError(f"{what}: {n} boxes but {len(labels)} labels")
    ok = np.all(np.isfinite(b), axis=1)
    # pixel-edge box -> the centres of its outermost pixels
    x0, y0, x1, y1 = b[:, 0] + 0.5, b[:, 1] + 0.5, b[:, 2] - 0.5, b[:, 3] - 0.5
    corners = np.stack([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], axis=0).transpose(2, 0, 1)
    for i in np.flatnonzero(ok).tolist():
        c = corners[i]
        if dash_px > 0:
            segs = _dashes(c, np.roll(c, -1, axis=0), float(dash_px))
            _polylines(out, list(segs), cols[i], thickness)
        else:
            _polylines(out, [np.vstack([c, c[:1]])], cols[i], thickness)
        if labels is not None and labels[i]:
            _text(
                out, labels[i], (float(b[i, 0]), float(b[i, 3]) + 2), cols[i], scale=0.4, below=True
            )
    return out


def _arrow_lines(start: F64, end: F64, head_px: float) -> tuple[F64, F64]:
    """Shafts (N, 2, 2) and heads (N, 3, 2) of arrows start -> end (vectorised)."""
    d = end - start
    length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)
    u = d / length[:, None]
    head = np.minimum(head_px, 0.45 * length)[:, None]
    perp = np.stack([-u[:, 1], u[:, 0]], axis=1)
    left = end - u * head + perp * head * 0.55
    right = end - u * head - perp * head * 0.55
    return np.stack([start, end], axis=1), np.stack([left, end, right], axis=1)


def draw_arrows(
    img: npt.ArrayLike,
    start_uv_px: npt.ArrayLike,
    end_uv_px: npt.ArrayLike,
    colors: npt.ArrayLike,
    *,
    thickness: int = 2,
    head_px: float = 8.0,
) -> U8:
    """A copy of ``img`` with arrows from ``start_uv_px`` to ``end_uv_px`` (N, 2 each); arrows
    with a non-finite end or shorter than half a pixel are skipped. One cv2 call per colour."""
    what = "draw_arrows"
    out = _check_rgb(img, what).copy()
    s = _points2(start_uv_px, what, "start_uv_px")
    e = _points2(end_uv_px, what, "end_uv_px")
    if s.shape != e.shape:
        raise AVFusionError(f"{what}: {s.shape[0]} starts but {e.shape[0]} ends")
    cols = _colors(colors, s.shape[0], what)
    _paint_arrows(out, s, e, cols, thickness, head_px)
    return out


def _paint_arrows(canvas: U8, s: F64, e: F64, cols: U8, thickness: int, head_px: float) -> None:
    with np.errstate(invalid="ignore"):
        ok = (
            np.all(np.isfinite(s), axis=1)
            & np.all(np.isfinite(e), axis=1)
            & (np.hypot(*(e - s).T) >= 0.5)
        )
    if not np.any(ok):
        return
    shafts, heads = _arrow_lines(s[ok], e[ok], head_px)
    cols = cols[ok]
    keys, inverse = np.unique(cols, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for k, color in enumerate(keys):
        sel = np.flatnonzero(inverse == k)
        _polylines(canvas, list(shafts[sel]) + list(heads[sel]), color, thickness)


def _text(
    canvas: U8,
    text: str,
    org: tuple[float, float],
    color: Any,
    *,
    scale: float = 0.5,
    thickness: int = 1,
    background: Any = (0, 0, 0),
    below: bool = False,
    pad: int = 2,
) -> tuple[int, int]:
    """In place: ``text`` on a filled background box whose top-left (``below``) or bottom-left
    corner is ``org``, kept inside the canvas. Returns the box's (width, height)."""
    import cv2

    h, w = canvas.shape[:2]
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    x = int(np.clip(round(org[0]), 0, max(w - bw, 0)))
    y_top = round(org[1]) if below else round(org[1]) - bh
    y = int(np.clip(y_top, 0, max(h - bh, 0)))
    if background is not None:
        cv2.rectangle(canvas, (x, y), (x + bw - 1, y + bh - 1), _rgb_tuple(background), -1)
    cv2.putText(
        canvas,
        text,
        (x + pad, y + pad + th),
        _FONT,
        scale,
        _rgb_tuple(color),
        thickness,
        cv2.LINE_AA,
    )
    return bw, bh


def draw_text(
    img: npt.ArrayLike,
    text: str,
    org: tuple[float, float],
    *,
    color: Any = (255, 255, 255),
    scale: float = 0.5,
    thickness: int = 1,
    background: Any | None = (0, 0, 0),
) -> U8:
    """A copy of ``img`` with one line of ``text`` whose box has its bottom-left corner at
    ``org`` (x, y), on a filled ``background`` (None: none), shifted to stay inside the image."""
    out = _check_rgb(img, "draw_text").copy()
    _text(out, str(text), org, color, scale=scale, thickness=thickness, background=background)
    return out


@dataclass(frozen=True)
class Highlight:
    """A rectangle ``xyxy`` (pixel-edge coordinates) to highlight, its colour and its text."""

    xyxy: tuple[float, float, float, float]
    color: RGB
    text: str


def draw_highlights(
    img: npt.ArrayLike, highlights: Iterable[Highlight], *, thickness: int = 3
) -> U8:
    """A copy of ``img`` with every highlight as a thick rectangle 3 px outside its box and its
    text on a label of the highlight's colour above it (below when there is no room)."""
    import cv2

    out = _check_rgb(img, "draw_highlights").copy()
    for hl in highlights:
        b = np.asarray(hl.xyxy, dtype=np.float64)
        if b.shape != (4,) or not np.all(np.isfinite(b)):
            raise AVFusionError(f"draw_highlights: bad rectangle {hl.xyxy!r} for '{hl.text}'")
        x0, y0 = round(b[0] - 3), round(b[1] - 3)
        x1, y1 = round(b[2] + 3), round(b[3] + 3)
        cv2.rectangle(out, (x0, y0), (x1, y1), _rgb_tuple(hl.color), int(thickness), cv2.LINE_AA)
        if hl.text:
            room = y0 - 2 > 18
            _text(
                out,
                hl.text,
                (x0, y0 - 2 if room else y1 + 2),
                (0, 0, 0),
                scale=0.5,
                background=hl.color,
                below=not room,
            )
    return out


def draw_legend(
    items: Sequence[tuple[str, Any]],
    *,
    width: int = 240,
    row_px: int = 22,
    title: str = "",
    background: Any = (28, 28, 34),
) -> U8:
    """A legend panel (H, ``width``, 3): one row per (name, RGB colour) with a swatch."""
    import cv2

    n = len(items) + (1 if title else 0)
    h = max(row_px * n + 8, 16)
    out = np.empty((h, int(width), 3), np.uint8)
    out[:] = np.asarray(background, np.uint8)
    y = 4
    if title:
        _text(out, title, (6, y), (255, 255, 255), scale=0.5, below=True, background=None)
        y += row_px
    for name, color in items:
        cv2.rectangle(out, (8, y + 4), (8 + row_px - 8, y + row_px - 4), _rgb_tuple(color), -1)
        _text(
            out, name, (row_px + 6, y + 1), (230, 230, 230), scale=0.45, below=True, background=None
        )
        y += row_px
    return out


def depth_colorbar(max_depth_m: float = 60.0, *, width: int = 200, height: int = 14) -> U8:
    """A (height + 16, width, 3) turbo bar, near (red) to ``max_depth_m`` (blue), labelled."""
    lut = colormap_lut("turbo")
    idx = np.rint(np.linspace(0, DEPTH_BINS - 1, int(width))).astype(np.intp)
    bar = np.zeros((int(height) + 16, int(width), 3), np.uint8)
    bar[:height] = lut[DEPTH_BINS - 1 - idx][None]
    _text(bar, "0 m", (0, height), (255, 255, 255), scale=0.4, below=True, background=None, pad=1)
    label = f"{max_depth_m:g} m"
    _text(
        bar, label, (width, height), (255, 255, 255), scale=0.4, below=True, background=None, pad=1
    )
    return bar


def _paste(canvas: U8, tile: U8, x: int, y: int, alpha: float = 1.0) -> None:
    """In place: ``tile`` at (x, y) of ``canvas`` (cut at the border), blended with ``alpha``."""
    h, w = canvas.shape[:2]
    th, tw = tile.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + tw, w), min(y + th, h)
    if x1 <= x0 or y1 <= y0:
        return
    part = tile[y0 - y : y1 - y, x0 - x : x1 - x]
    if alpha >= 1.0:
        canvas[y0:y1, x0:x1] = part
    else:
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        canvas[y0:y1, x0:x1] = np.rint(region * (1 - alpha) + part * alpha).astype(np.uint8)


def _caption(canvas: U8, lines: Sequence[str], *, scale: float = 0.55) -> None:
    """In place: lines of text in a translucent dark box at the top-left."""
    import cv2

    if not lines:
        return
    sizes = [cv2.getTextSize(t, _FONT, scale, 1) for t in lines]
    line_h = max(s[0][1] + s[1] for s in sizes) + 6
    w = min(max(s[0][0] for s in sizes) + 12, canvas.shape[1])
    h = min(line_h * len(lines) + 6, canvas.shape[0])
    box = np.zeros((h, w, 3), np.uint8)
    _paste(canvas, box, 0, 0, alpha=0.6)
    for i, t in enumerate(lines):
        y = 4 + line_h * (i + 1) - 4
        cv2.putText(canvas, t, (6, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def short_label(label: str) -> str:
    """A short class name: the second part of a nuScenes category (``vehicle.car`` → ``car``,
    ``human.pedestrian.adult`` → ``pedestrian``), else the name itself."""
    parts = str(label).split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _equalise16(counts: npt.NDArray[np.uint16]) -> U8:
    """16-bit counts to 8-bit grey: half a linear stretch between the 1st and 99th percentile,
    half a histogram equalisation (a thermal scene's few kelvin between road, cars and walls
    stay visible next to a far colder sky)."""
    hist = np.bincount(counts.reshape(-1), minlength=65536).astype(np.float64)
    cdf = np.cumsum(hist) / counts.size
    lo = int(np.searchsorted(cdf, 0.01))
    hi = max(int(np.searchsorted(cdf, 0.99)), lo + 1)
    levels = np.arange(65536, dtype=np.float64)
    linear = np.clip((levels - lo) / (hi - lo), 0.0, 1.0)
    lut = np.rint((0.5 * linear + 0.5 * cdf) * 255.0).astype(np.uint8)
    return lut[counts]


def image_to_rgb(pixels: npt.ArrayLike, *, colormap: str | None = None) -> U8:
    """Any log image as RGB uint8 (H, W, 3).

    Colour images are copied, grey ones repeated into three channels; 16-bit (thermal,
    radiometric counts) are mapped to 0..255 by ``_equalise16`` (half linear stretch, half
    histogram equalisation) and shown grey, or through ``colormap`` (``inferno``, ``turbo`` ...).
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        return np.ascontiguousarray(arr[..., :3])
    if arr.ndim != 2 or arr.size == 0 or arr.dtype not in (np.uint8, np.uint16):
        raise AVFusionError(
            f"image_to_rgb: expected an H×W×3 uint8, H×W uint8 or H×W uint16 image, got {arr.dtype} {arr.shape}"
        )
    grey = _equalise16(arr) if arr.dtype == np.uint16 else arr
    if colormap is not None:
        return colormap_lut(colormap)[grey]
    return np.repeat(grey[..., None], 3, axis=2)


# --------------------------------------------------------------------------------------------
# Log level helpers
# --------------------------------------------------------------------------------------------


def _frame_of(log: Any, sample_token: str) -> Any:
    """The keyframe of ``sample_token`` (``log.frame`` when the reader has it, else a scan)."""
    frame_fn = getattr(log, "frame", None)
    if callable(frame_fn):
        return frame_fn(sample_token)
    for frame in log:
        if frame.token == sample_token:
            return frame
    raise AVFusionError(f"{log!r}: no frame with sample token '{sample_token}'")


def _poses(log: Any) -> Any:
    try:
        return log.poses
    except AVFusionError as exc:  # a log without a pose track still renders (stored poses)
        logger.info("%r: no pose track (%s); using the observations' own poses", log, exc)
        return None


def _image_of(frame: Any, channel: str) -> Any:
    image = frame.images.get(channel)
    if image is None:
        raise AVFusionError(
            f"sample {frame.token or frame.index}: no image of '{channel}' "
            f"(images: {', '.join(sorted(frame.images)) or 'none'})"
        )
    return image


def _clouds(frame: Any, modality: str) -> list[Any]:
    return [
        frame.points[k] for k in sorted(frame.points) if frame.points[k].sensor.modality == modality
    ]


def _finding_targets(findings: Iterable[Any], sample_token: str) -> tuple[list[Any], int]:
    """Findings of this sample (all when the frame has no token), and how many were given."""
    items = list(findings)
    mine = [f for f in items if not sample_token or getattr(f, "sample_token", "") == sample_token]
    return mine, len(items)


def _group_highlights(
    entries: Sequence[tuple[tuple[float, float, float, float], float, str]],
) -> list[Highlight]:
    """One highlight per rectangle: the kinds joined, the colour of the worst severity."""
    by: dict[tuple[float, ...], tuple[float, list[str]]] = {}
    for rect, severity, kind in entries:
        key = tuple(round(v, 1) for v in rect)
        worst, kinds = by.get(key, (0.0, []))
        if kind not in kinds:
            kinds.append(kind)
        by[key] = (max(worst, severity), kinds)
    return [
        Highlight((k[0], k[1], k[2], k[3]), severity_color(sev), ", ".join(kinds))
        for k, (sev, kinds) in by.items()
    ]


def _place_labels(
    canvas: U8,
    anchors: F64,
    texts: Sequence[str],
    colors: Any,
    *,
    scale: float = 0.42,
    on_color: bool = True,
) -> None:
    """In place: each text with its box's bottom-left corner at its anchor (x, y), in order
    (pass the most important first); a label that would overlap one already placed is left
    out (far boxes in a crowd). ``on_color``: black text on the colour, else coloured text."""
    import cv2

    placed: list[tuple[int, int, int, int]] = []
    for i, text in enumerate(texts):
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
        x0, y1 = float(anchors[i, 0]), float(anchors[i, 1])
        if not (np.isfinite(x0) and np.isfinite(y1)):
            continue
        rect = (int(x0), int(y1 - th - base - 4), int(x0 + tw + 4), int(y1))
        if any(
            rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed
        ):
            continue
        placed.append(rect)
        color = np.asarray(colors[i]).reshape(3)
        if on_color:
            _text(canvas, text, (x0, y1), (0, 0, 0), scale=scale, background=color)
        else:
            _text(canvas, text, (x0, y1), color, scale=scale, background=None)


def _point_radius(width: int) -> int:
    return max(1, round(width / 800))


def _overlay(
    log: Any,
    frame: Any,
    channel: str,
    poses: Any,
    *,
    lidar: bool,
    radar: bool,
    boxes3d: bool,
    boxes2d: bool,
    findings: Sequence[Any],
    max_depth_m: float,
    caption: bool = True,
    occlusion: Any = None,
) -> U8:
    from avfusion.fusion.boxes import project_boxes_into_image
    from avfusion.fusion.painting import project_radar
    from avfusion.fusion.projection import project_cloud

    image = _image_of(frame, channel)
    canvas = image_to_rgb(image.pixels)
    w = canvas.shape[1]
    radius = _point_radius(w)
    info = [f"{channel}  sample {frame.token[:8] or frame.index}"]

    if lidar:
        for cloud in _clouds(frame, "lidar"):
            opts = occlusion
            proj = project_cloud(
                cloud,
                image,
                poses,
                occlusion=opts is not False,
                **(dataclasses.asdict(opts) if isinstance(opts, OcclusionOptions) else {}),
            )
            sel = np.flatnonzero(proj.valid & (proj.depth_m <= max_depth_m))
            order = sel[np.argsort(-proj.depth_m[sel], kind="stable")]  # far first
            colors = depth_colors(proj.depth_m[order], max_depth_m)
            _paint_points(canvas, proj.uv_px[order].astype(np.float64), colors, radius)
            info.append(
                f"{cloud.sensor.name}: {sel.size} pts, {int(proj.occluded.sum())} occluded hidden"
            )

    if radar:
        for cloud in _clouds(frame, "radar"):
            try:
                rp = project_radar(cloud, image, poses)
            except AVFusionError as exc:
                logger.info("overlay %s: radar '%s' not drawn: %s", channel, cloud.sensor.name, exc)
                continue
            seg = np.flatnonzero(rp.segment_valid)
            col = np.asarray(RADAR_COLOR, np.uint8)
            _polylines(
                canvas, [np.stack([rp.bottom_uv_px[i], rp.top_uv_px[i]]) for i in seg], col, 1
            )
            pts = rp.point_uv_px[rp.point_in_image]
            _paint_points(canvas, pts, np.zeros((len(pts), 3), np.uint8), radius + 3)
            _paint_points(canvas, pts, np.broadcast_to(col, (len(pts), 3)), radius + 1)
            a = np.flatnonzero(rp.arrow_valid)
            _paint_arrows(
                canvas,
                rp.arrow_start_uv_px[a],
                rp.arrow_end_uv_px[a],
                np.broadcast_to(col, (a.size, 3)),
                2,
                8.0,
            )
            info.append(f"{cloud.sensor.name}: {int(rp.point_in_image.sum())} returns")

    entries: list[tuple[tuple[float, float, float, float], float, str]] = []
    mine, n_given = _finding_targets(findings, frame.token)
    b3 = frame.boxes3d
    proj3 = None
    if b3 is not None and len(b3) and (boxes3d or mine):
        proj3 = project_boxes_into_image(b3, image, poses, boxes_t_ns=frame.t_ns)
    if boxes3d and proj3 is not None and b3 is not None:
        vis = np.flatnonzero(proj3.visible)
        depth = np.where(proj3.corners_depth_m > 0, proj3.corners_depth_m, 0.0).max(axis=1)
        order = vis[np.argsort(-depth[vis], kind="stable")]
        colors = category_colors(b3.label)
        canvas = draw_box_edges(
            canvas,
            proj3.edges_uv_px[order],
            colors[order],
            edge_visible=proj3.edge_visible[order],
            thickness=2,
        )
        _place_labels(
            canvas,
            proj3.xyxy[order[::-1], :2] - [0.0, 1.0],
            [f"{short_label(b3.label[i])} {str(b3.track_id[i])[:4]}".strip() for i in order[::-1]],
            colors[order[::-1]],
        )
        info.append(f"3D boxes: {vis.size} of {len(b3)} in view")

    b2 = frame.boxes2d.get(channel)
    if boxes2d and b2 is not None and len(b2):
        linked = np.asarray(b2.attrs.get("sample_annotation_token", np.full(len(b2), "x")))
        labels = [
            "" if str(linked[i]) else f"2D {short_label(b2.label[i])}" for i in range(len(b2))
        ]
        canvas = draw_boxes2d(
            canvas, b2.xyxy, category_colors(b2.label), labels=labels, thickness=2
        )
        info.append(f"2D boxes: {len(b2)}")

    if mine:
        tokens3 = (
            {} if b3 is None or b3.token is None else {str(t): i for i, t in enumerate(b3.token)}
        )
        tokens2: dict[str, int] = {}
        if b2 is not None and "token" in b2.attrs:
            tokens2 = {str(t): i for i, t in enumerate(b2.attrs["token"])}
        for f in mine:
            hit = False
            if f.box2d_token and f.box2d_token in tokens2 and b2 is not None:
                x = b2.xyxy[tokens2[f.box2d_token]]
                entries.append(((x[0], x[1], x[2], x[3]), f.severity, f.kind))
                hit = True
            j = tokens3.get(f.annotation_token) if f.annotation_token else None
            if j is not None and proj3 is not None and proj3.visible[j] and not hit:
                x = proj3.xyxy[j]
                entries.append(((x[0], x[1], x[2], x[3]), f.severity, f.kind))
        shown = len({(round(e[0][0], 1), e[2]) for e in entries})
        info.append(f"findings: {len(mine)} in this sample ({n_given} given), {shown} in view")
    if entries:
        canvas = draw_highlights(canvas, _group_highlights(entries))

    if caption:
        _caption(canvas, info, scale=0.5 if w >= 1000 else 0.4)
        if lidar:
            bar = depth_colorbar(max_depth_m, width=min(200, w // 3))
            _paste(canvas, bar, w - bar.shape[1] - 8, canvas.shape[0] - bar.shape[0] - 6)
    return canvas


def render_camera_overlay(
    log: Any,
    sample_token: str,
    channel: str,
    *,
    lidar: bool = True,
    radar: bool = True,
    boxes3d: bool = True,
    boxes2d: bool = True,
    findings: Iterable[Any] = (),
    max_depth_m: float = 60.0,
    occlusion: OcclusionOptions | bool | None = None,
) -> U8:
    """The keyframe image of ``channel`` in sample ``sample_token`` with every layer, RGB (H, W, 3).

    Layers: LiDAR returns coloured by depth (turbo, near red, up to ``max_depth_m``; farther
    ones are not drawn), occluded returns hidden (``fusion.project_cloud``'s z-buffer with ``occlusion``
    (``fusion.OcclusionOptions``; None: its defaults; False: no occlusion test)); radar
    returns as vertical segments (ground to 2 m) with a marker and their Doppler arrow (0.5 s);
    3D boxes in their category colour (front face bolder) labelled with class and the first four
    characters of the track id; 2D labels dashed (those without a 3D box named); the
    ``findings`` of this sample (``fusion.consistency.Finding``) whose ``box2d_token`` or
    ``annotation_token`` names a box in view, as a rectangle in the severity colour with the
    finding kinds. Thermal (16-bit) images are shown as a stretched grey image. A caption names
    the channel, the sample and the counts; a depth colour bar sits in the bottom-right corner.
    Raises ``AVFusionError`` when the sample or the channel's image does not exist.
    """
    if not (np.isfinite(max_depth_m) and max_depth_m > 0):
        raise AVFusionError(
            f"render_camera_overlay: max_depth_m must be a positive number, got {max_depth_m!r}"
        )
    if not (occlusion is None or isinstance(occlusion, bool | OcclusionOptions)):
        raise AVFusionError(
            "render_camera_overlay: occlusion must be an OcclusionOptions, a bool or None, "
            f"got {type(occlusion).__name__}"
        )
    frame = _frame_of(log, sample_token)
    _image_of(frame, channel)
    return _overlay(
        log,
        frame,
        channel,
        _poses(log),
        lidar=lidar,
        radar=radar,
        boxes3d=boxes3d,
        boxes2d=boxes2d,
        findings=list(findings),
        max_depth_m=float(max_depth_m),
        occlusion=occlusion,
    )


#: Edge-distance bands of the calibration check: (upper bound px, colour, name).
CALIBRATION_BANDS: tuple[tuple[float, RGB, str], ...] = (
    (2.0, (60, 230, 60), "<= 2 px"),
    (5.0, (255, 220, 0), "2-5 px"),
    (float("inf"), (255, 50, 50), "> 5 px"),
)
_EDGE_COLOR: RGB = (0, 200, 255)


def calibration_check_image(
    pixels: npt.ArrayLike,
    edges: npt.ArrayLike,
    uv_px: npt.ArrayLike,
    distance_px: npt.ArrayLike,
    *,
    title: str = "",
) -> U8:
    """Pure part of ``render_calibration_check``: the image dimmed to grey, its edge map
    (``edges`` H×W, non-zero = edge) in cyan, and the LiDAR depth-edge points ``uv_px`` (N, 2)
    coloured by ``distance_px`` (N,) to the nearest image edge (``CALIBRATION_BANDS``)."""
    base = image_to_rgb(np.asarray(pixels))
    e = np.asarray(edges)
    if e.shape != base.shape[:2]:
        raise AVFusionError(
            f"calibration_check_image: edge map {e.shape} does not match the image {base.shape[:2]}"
        )
    grey = base.astype(np.float32).mean(axis=2) * 0.45
    canvas = np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
    canvas[e != 0] = _EDGE_COLOR
    uv = _points2(uv_px, "calibration_check_image")
    d = np.asarray(distance_px, dtype=np.float64).reshape(-1)
    if d.shape[0] != uv.shape[0]:
        raise AVFusionError(
            f"calibration_check_image: {uv.shape[0]} points but {d.shape[0]} distances"
        )
    bounds = np.array([b[0] for b in CALIBRATION_BANDS])
    table = np.array([b[1] for b in CALIBRATION_BANDS], np.uint8)
    band = np.minimum(np.searchsorted(bounds, d, side="left"), len(bounds) - 1)
    order = np.argsort(-d, kind="stable")  # worst first, best on top
    radius = _point_radius(base.shape[1]) + 1
    _paint_points(canvas, uv[order], np.zeros((uv.shape[0], 3), np.uint8), radius + 1)
    _paint_points(canvas, uv[order], table[band[order]], radius)
    lines = [title] if title else []
    if d.size:
        lines.append(
            f"{d.size} LiDAR depth edges: median {np.median(d):.1f} px to an image edge, "
            f"{100 * np.mean(d <= 2.0):.0f}% within 2 px"
        )
    else:
        lines.append("no LiDAR depth edge in view")
    _caption(canvas, lines, scale=0.5 if base.shape[1] >= 1000 else 0.4)
    legend = draw_legend(
        [(name, color) for _, color, name in CALIBRATION_BANDS] + [("image edge", _EDGE_COLOR)],
        width=130,
        row_px=18,
    )
    _paste(canvas, legend, canvas.shape[1] - legend.shape[1] - 6, 6, alpha=0.85)
    return canvas


def render_calibration_check(
    log: Any, sample_token: str, channel: str, *, lidar: str | None = None
) -> U8:
    """LiDAR depth discontinuities over the image's edge map, RGB (H, W, 3), for a visual
    calibration check of ``channel`` at sample ``sample_token``.

    Uses ``calibration.validation.prepare_alignment`` for that one image (the depth-edge points
    of the nearest sweep, placed with motion and clock offsets compensated, moving objects
    rejected, and the Canny edge distance map of the image): edge pixels (distance 0) are drawn
    cyan over the dimmed image, each LiDAR edge point coloured by its distance to the nearest
    image edge (green <= 2 px, yellow <= 5 px, red beyond). With a good calibration the points
    sit on the cyan silhouettes. ``lidar`` defaults to the log's first LiDAR. Needs a
    nuScenes-style log (``keyframe_data``, ``sample_data_tokens``, ``load_image``); raises
    ``AVFusionError`` otherwise, or when the sample has no keyframe of ``channel``.
    """
    from avfusion.calibration.validation import (
        _DIST_STEPS_PER_PX,
        EdgeImage,
        prepare_alignment,
    )

    what = f"render_calibration_check of '{channel}' at sample {sample_token}"
    for attr in ("keyframe_data", "sample_data_tokens", "load_image"):
        if not callable(getattr(log, attr, None)):
            raise AVFusionError(f"{what}: the log ({type(log).__name__}) has no '{attr}'")
    sd_token = log.keyframe_data(sample_token).get(channel)
    if sd_token is None:
        raise AVFusionError(f"{what}: the sample has no keyframe of '{channel}'")
    if lidar is None:
        lidars = sorted(n for n, s in log.sensors.items() if s.modality == "lidar")
        if not lidars:
            raise AVFusionError(f"{what}: the log has no LiDAR")
        lidar = lidars[0]
    index = log.sample_data_tokens(channel).index(sd_token)
    data = prepare_alignment(log, channel, lidar, frames=[index])
    pixels = log.load_image(sd_token).pixels
    title = f"CALIBRATION {channel} <- {lidar}  sample {sample_token[:8]}"
    if data.n_frames == 0:
        reasons = "; ".join(f"{k} ({v})" for k, v in data.skipped.items()) or "no data"
        logger.info("%s: no alignment data: %s", what, reasons)
        edges = EdgeImage.from_image(pixels).edges
        return calibration_check_image(pixels, edges, np.zeros((0, 2)), np.zeros(0), title=title)
    dist_steps = data.distance[0]
    uv, _, inside = data.camera.project(data.points_cam)
    uv = np.asarray(uv, dtype=np.float64)[inside]
    h, w = dist_steps.shape
    rows = np.clip(np.floor(uv[:, 1] + 0.5).astype(np.intp), 0, h - 1)
    cols = np.clip(np.floor(uv[:, 0] + 0.5).astype(np.intp), 0, w - 1)
    distance_px = dist_steps[rows, cols].astype(np.float64) / _DIST_STEPS_PER_PX
    return calibration_check_image(pixels, dist_steps == 0, uv, distance_px, title=title)
