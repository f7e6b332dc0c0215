"""Bird's-eye view of one keyframe (ego frame, x forward = up, y left = left) and the montage
of every camera around it.

``bev_image`` is the pure part (arrays in, image out): LiDAR points coloured by height, boxes
as oriented rectangles (class colour, translucent fill, heading tick, short track id), radar
returns with their velocity arrows, the ego footprint, range rings every 10 m with labels, and
highlighted boxes (findings). ``render_bev`` gathers those arrays from a log at one sample (all
in the ego frame at the keyframe LiDAR time: radar moved from its own capture pose, boxes from
the world frame); ``render_montage`` places the camera overlays (``overlay.render_camera_overlay``
layers) around the BEV: front cameras on top (left to right), back cameras below, thermal
cameras and a legend beside the BEV.

Pixel mapping: the ego origin is at the canvas centre; a point (x, y) lands at
``u = c - y · px_per_m``, ``v = c - x · px_per_m`` with ``c = (size - 1) / 2`` and
``size = round(2 · range_m · px_per_m)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError
from avfusion.types import Boxes3D
from avfusion.viz.colors import (
    RADAR_COLOR,
    SEVERITY_COLORS,
    category_color,
    category_colors,
    height_colors,
    severity_color,
)
from avfusion.viz.overlay import (
    _caption,
    _clouds,
    _finding_targets,
    _fixed,
    _frame_of,
    _image_of,
    _overlay,
    _paint_arrows,
    _paint_points,
    _paste,
    _place_labels,
    _poses,
    _text,
    depth_colorbar,
    draw_legend,
    short_label,
)

__all__ = [
    "BEV_BACKGROUND",
    "bev_image",
    "bev_pixels",
    "render_bev",
    "render_montage",
]

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

BEV_BACKGROUND = (22, 24, 30)
_RING_COLOR = (80, 84, 96)
_EGO_COLOR = (240, 240, 240)
#: Ego footprint (x from, x to, half width) in metres: a mid-size car around the rear axle.
EGO_FOOTPRINT_M = (-1.0, 3.7, 0.95)


def _check_view(range_m: float, px_per_m: float, what: str) -> int:
    if not (np.isfinite(range_m) and range_m > 0 and np.isfinite(px_per_m) and px_per_m > 0):
        raise AVFusionError(
            f"{what}: range_m and px_per_m must be positive numbers, got {range_m!r}, {px_per_m!r}"
        )
    size = round(2 * range_m * px_per_m)
    if not 16 <= size <= 8192:
        raise AVFusionError(
            f"{what}: a {range_m} m range at {px_per_m} px/m gives a {size} px canvas (16..8192 allowed)"
        )
    return int(size)


def bev_pixels(xy_m: npt.ArrayLike, *, range_m: float = 60.0, px_per_m: float = 8.0) -> F64:
    """Pixel coordinates (N, 2) (u, v) of ego-frame points (N, 2+) in the BEV canvas."""
    size = _check_view(range_m, px_per_m, "bev_pixels")
    p = np.asarray(xy_m, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise AVFusionError(f"bev_pixels: points must be (N, 2) or (N, 3), got {p.shape}")
    c = (size - 1) / 2.0
    return np.stack([c - p[:, 1] * px_per_m, c - p[:, 0] * px_per_m], axis=1)


def _polys(canvas: U8, polys: Sequence[F64], color: Any, thickness: int, closed: bool) -> None:
    import cv2

    pts = [_fixed(p).reshape(-1, 1, 2) for p in polys]
    if pts:
        c = tuple(int(v) for v in np.asarray(color).reshape(3))
        cv2.polylines(canvas, pts, closed, c, int(thickness), cv2.LINE_AA, 4)


def bev_image(
    points_ego: npt.ArrayLike | None = None,
    *,
    boxes: Boxes3D | None = None,
    radar_xy: npt.ArrayLike | None = None,
    radar_velocity: npt.ArrayLike | None = None,
    highlights: Iterable[tuple[int, Any, str]] = (),
    range_m: float = 60.0,
    px_per_m: float = 8.0,
    z_range_m: tuple[float, float] = (-1.0, 3.0),
    arrow_dt_s: float = 1.0,
    ring_step_m: float = 10.0,
    title: Sequence[str] = (),
) -> U8:
    """The bird's-eye view (size × size × 3 RGB, see the module docstring) of ego-frame data.

    ``points_ego`` (N, 3) LiDAR points, coloured by height (viridis over ``z_range_m``), drawn
    low to high; ``boxes`` (in the ego frame) as oriented rectangles in their class colour
    with a tick from the centre to the front face and the first four characters of the track
    id; ``radar_xy`` (M, 2) returns with arrows to ``xy + velocity · arrow_dt_s``
    (``radar_velocity`` (M, 2) m/s, optional); ``highlights`` (box index, RGB, text) draw a
    thick outline around that box and its text. Range rings every ``ring_step_m`` with labels,
    the ego footprint, and ``title`` lines top-left.
    """
    import cv2

    what = "bev_image"
    size = _check_view(range_m, px_per_m, what)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = BEV_BACKGROUND
    c = (size - 1) / 2.0

    # range rings and axes
    if not (np.isfinite(ring_step_m) and ring_step_m > 0):
        raise AVFusionError(f"{what}: ring_step_m must be a positive number, got {ring_step_m!r}")
    n_rings = int(np.floor(range_m * np.sqrt(2) / ring_step_m))
    for k in range(1, n_rings + 1):
        r = k * ring_step_m * px_per_m
        cv2.circle(
            canvas, (round(c * 16), round(c * 16)), round(r * 16), _RING_COLOR, 1, cv2.LINE_AA, 4
        )
    cv2.line(canvas, (round(c), 0), (round(c), size - 1), (40, 42, 52), 1)
    cv2.line(canvas, (0, round(c)), (size - 1, round(c)), (40, 42, 52), 1)

    # LiDAR
    if points_ego is not None:
        p = np.asarray(points_ego, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise AVFusionError(f"{what}: points_ego must be (N, 3), got {p.shape}")
        with np.errstate(invalid="ignore"):
            keep = np.all(np.isfinite(p), axis=1) & (np.abs(p[:, :2]) <= range_m).all(axis=1)
        p = p[keep]
        order = np.argsort(p[:, 2], kind="stable")
        uv = bev_pixels(p[order], range_m=range_m, px_per_m=px_per_m)
        radius = 1 if px_per_m >= 6 else 0
        _paint_points(canvas, uv, height_colors(p[order, 2], *z_range_m), radius)

    # ring labels over the points
    for k in range(1, n_rings + 1):
        r = k * ring_step_m * px_per_m
        x, y = c + r * np.cos(np.pi / 4), c - r * np.sin(np.pi / 4)
        if 0 <= x < size - 30 and 12 <= y < size:
            _text(
                canvas,
                f"{k * ring_step_m:g} m",
                (x + 2, y),
                (170, 175, 190),
                scale=0.4,
                background=None,
            )

    # boxes
    hl = list(highlights)
    if boxes is not None and len(boxes):
        if not isinstance(boxes, Boxes3D):
            raise AVFusionError(f"{what}: boxes must be Boxes3D, got {type(boxes).__name__}")
        corners = boxes.corners()[:, [0, 1, 5, 4], :2]  # top face: front-left, front-right, ...
        polys = bev_pixels(corners.reshape(-1, 2), range_m=range_m, px_per_m=px_per_m).reshape(
            -1, 4, 2
        )
        colors = category_colors(boxes.label)
        front = bev_pixels(corners[:, :2].mean(axis=1), range_m=range_m, px_per_m=px_per_m)
        centre = bev_pixels(boxes.center, range_m=range_m, px_per_m=px_per_m)
        inside = np.all(np.abs(boxes.center[:, :2]) <= range_m + 5, axis=1)
        fill = canvas.copy()
        keys, inverse = np.unique(colors, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for k, color in enumerate(keys):
            sel = np.flatnonzero((inverse == k) & inside)
            if sel.size:
                cv2.fillPoly(
                    fill,
                    [_fixed(polys[i]).reshape(-1, 1, 2) for i in sel],
                    tuple(int(v) for v in color),
                    cv2.LINE_AA,
                    4,
                )
        canvas = np.rint(0.75 * canvas + 0.25 * fill).astype(np.uint8)
        for i, box_color in [(int(i), c) for i, c, _ in hl if 0 <= int(i) < len(boxes)]:
            _polys(canvas, [polys[i]], box_color, 5, True)
        for k, color in enumerate(keys):
            sel = np.flatnonzero((inverse == k) & inside)
            _polys(canvas, list(polys[sel]), color, 2, True)
            _polys(canvas, [np.stack([centre[i], front[i]]) for i in sel], color, 2, False)
        if px_per_m >= 4:
            near = np.flatnonzero(inside)
            near = near[np.argsort(np.hypot(*boxes.center[near, :2].T), kind="stable")]
            anchors = np.stack(
                [polys[near, :, 0].max(axis=1) + 3, polys[near, :, 1].min(axis=1) + 12], axis=1
            )
            _place_labels(
                canvas,
                anchors,
                [str(boxes.track_id[i])[:4] for i in near],
                colors[near],
                scale=0.35,
                on_color=False,
            )
        for i, color, text in hl:
            if 0 <= int(i) < len(boxes) and text:
                x1 = float(polys[int(i)][:, 0].max()) + 4
                y0 = float(polys[int(i)][:, 1].min())
                _text(canvas, text, (x1, y0), (0, 0, 0), scale=0.45, background=color)
    elif hl:
        raise AVFusionError(f"{what}: highlights given but no boxes")

    # radar
    if radar_xy is not None:
        rxy = np.asarray(radar_xy, dtype=np.float64)
        if rxy.ndim != 2 or rxy.shape[1] != 2:
            raise AVFusionError(f"{what}: radar_xy must be (M, 2), got {rxy.shape}")
        uv = bev_pixels(rxy, range_m=range_m, px_per_m=px_per_m)
        col = np.asarray(RADAR_COLOR, np.uint8)
        _paint_points(canvas, uv, np.zeros((len(uv), 3), np.uint8), 4)
        _paint_points(canvas, uv, np.broadcast_to(col, (len(uv), 3)), 3)
        if radar_velocity is not None:
            v = np.asarray(radar_velocity, dtype=np.float64)
            if v.shape != rxy.shape:
                raise AVFusionError(
                    f"{what}: radar_velocity must match radar_xy {rxy.shape}, got {v.shape}"
                )
            tip = bev_pixels(rxy + v * arrow_dt_s, range_m=range_m, px_per_m=px_per_m)
            _paint_arrows(canvas, uv, tip, np.broadcast_to(col, (len(uv), 3)), 2, 7.0)

    # ego
    x0, x1, hw = EGO_FOOTPRINT_M
    ego = bev_pixels(
        np.array([[x1, hw], [x1, -hw], [x0, -hw], [x0, hw]]), range_m=range_m, px_per_m=px_per_m
    )
    nose = bev_pixels(
        np.array([[x1, 0.0], [x1 - 1.2, 0.6], [x1 - 1.2, -0.6]]),
        range_m=range_m,
        px_per_m=px_per_m,
    )
    cv2.fillPoly(canvas, [_fixed(ego).reshape(-1, 1, 2)], (70, 74, 86), cv2.LINE_AA, 4)
    _polys(canvas, [ego], _EGO_COLOR, 2, True)
    cv2.fillPoly(canvas, [_fixed(nose).reshape(-1, 1, 2)], _EGO_COLOR, cv2.LINE_AA, 4)
    if title:
        _caption(canvas, list(title), scale=0.5 if size >= 600 else 0.35)
    return canvas


# --------------------------------------------------------------------------------------------
# Log level
# --------------------------------------------------------------------------------------------


def _ego_pose(log: Any, obs: Any, poses: Any) -> Any:
    if obs.world_from_ego is not None:
        return obs.world_from_ego
    if poses is None:
        raise AVFusionError(
            f"'{obs.sensor.name}' at t={obs.t_ns}: no stored ego pose and the log has no pose track"
        )
    return poses.at(int(obs.t_ns) + int(obs.sensor.time_offset_ns))


def _bev_inputs(log: Any, frame: Any, poses: Any, findings: Sequence[Any]) -> dict[str, Any]:
    """The arrays of ``bev_image`` for one frame (ego frame at the frame's LiDAR time)."""
    lidars = _clouds(frame, "lidar")
    if frame.world_from_ego is not None:
        world_from_ego = frame.world_from_ego
    elif lidars:
        world_from_ego = _ego_pose(log, lidars[0], poses)
    elif poses is not None:
        world_from_ego = poses.at(int(frame.t_ns))
    else:
        world_from_ego = None
    ego_from_world = None if world_from_ego is None else world_from_ego.inverse()
    out: dict[str, Any] = {}
    pts = [np.asarray(c.sensor.ego_from_sensor.apply(c.xyz), dtype=np.float64) for c in lidars]
    out["points_ego"] = np.concatenate(pts) if pts else None

    radar_xy, radar_v = [], []
    for cloud in _clouds(frame, "radar"):
        if ego_from_world is None:
            break
        ego_now_from_radar = (
            ego_from_world @ _ego_pose(log, cloud, poses) @ cloud.sensor.ego_from_sensor
        )
        radar_xy.append(np.asarray(ego_now_from_radar.apply(cloud.xyz), np.float64)[:, :2])
        vx = cloud.attrs.get("vx_comp", cloud.attrs.get("vx"))
        vy = cloud.attrs.get("vy_comp", cloud.attrs.get("vy"))
        if vx is None or vy is None:
            radar_v.append(np.zeros((len(cloud), 2)))
        else:
            v = np.stack([vx, vy, np.zeros(len(cloud))], axis=1).astype(np.float64)
            radar_v.append((v @ ego_now_from_radar.rotation.T)[:, :2])
    if radar_xy:
        out["radar_xy"] = np.concatenate(radar_xy)
        out["radar_velocity"] = np.nan_to_num(np.concatenate(radar_v))

    boxes = frame.boxes3d
    hl: list[tuple[int, Any, str]] = []
    if boxes is not None and len(boxes) and ego_from_world is not None:
        ego_boxes = boxes.transformed(ego_from_world, "ego")
        out["boxes"] = ego_boxes
        tokens = {str(t): i for i, t in enumerate(boxes.token)} if boxes.token is not None else {}
        box2d_to_ann: dict[str, str] = {}
        for b2 in frame.boxes2d.values():
            if "token" in b2.attrs and "sample_annotation_token" in b2.attrs:
                box2d_to_ann.update(
                    zip(
                        map(str, b2.attrs["token"]),
                        map(str, b2.attrs["sample_annotation_token"]),
                        strict=True,
                    )
                )
        best: dict[int, tuple[float, list[str]]] = {}
        for f in findings:
            ann = f.annotation_token or box2d_to_ann.get(f.box2d_token, "")
            i = tokens.get(ann) if ann else None
            if i is None:
                continue
            sev, kinds = best.get(i, (0.0, []))
            if f.kind not in kinds:
                kinds.append(f.kind)
            best[i] = (max(sev, f.severity), kinds)
        hl = [(i, severity_color(s), ", ".join(k)) for i, (s, k) in sorted(best.items())]
    out["highlights"] = hl
    return out


def render_bev(
    log: Any,
    sample_token: str,
    *,
    range_m: float = 60.0,
    px_per_m: float = 8.0,
    findings: Iterable[Any] = (),
) -> U8:
    """Bird's-eye view of sample ``sample_token`` in the ego frame (x forward = up), RGB
    (size, size, 3) with ``size = round(2 · range_m · px_per_m)``: LiDAR by height, 3D boxes,
    radar returns with 1 s velocity arrows, ego footprint, range rings; boxes named by a
    finding of this sample (``annotation_token``, or a ``box2d_token`` linked to one) are
    outlined in the severity colour with the finding kinds. Raises ``AVFusionError`` for an
    unknown sample or a bad range / scale."""
    _check_view(range_m, px_per_m, "render_bev")
    frame = _frame_of(log, sample_token)
    mine, _ = _finding_targets(findings, frame.token)
    data = _bev_inputs(log, frame, _poses(log), mine)
    n_boxes = len(data["boxes"]) if data.get("boxes") is not None else 0
    title = [
        f"BEV  sample {frame.token[:8] or frame.index}  range {range_m:g} m",
        f"{0 if data['points_ego'] is None else len(data['points_ego'])} LiDAR pts, "
        f"{n_boxes} boxes, {len(data.get('radar_xy', ()))} radar",
    ]
    return bev_image(range_m=range_m, px_per_m=px_per_m, title=title, **data)


def _camera_azimuth(sensor: Any) -> float:
    """Azimuth (degrees, ego frame, 0 = forward, + = left) of a camera's optical axis."""
    axis = sensor.ego_from_sensor.rotation[:, 2]
    return float(np.degrees(np.arctan2(axis[1], axis[0])))


def _resize(img: U8, width: int) -> U8:
    import cv2

    h, w = img.shape[:2]
    height = max(1, round(h * width / w))
    out = cv2.resize(img, (int(width), int(height)), interpolation=cv2.INTER_AREA)
    return np.asarray(out, dtype=np.uint8)


def _label_tile(tile: U8, text: str) -> None:
    _text(tile, text, (4, 4), (255, 255, 255), scale=0.5, background=(0, 0, 0), below=True)


def render_montage(
    log: Any, sample_token: str, *, findings: Iterable[Any] = (), tile_width: int = 480
) -> U8:
    """Every camera of sample ``sample_token`` around its BEV, RGB.

    Rows: the front-facing cameras (optical axis ahead of the ego) left to right; then the
    thermal cameras (left), the BEV (``tile_width`` square, 40 m range) and a legend (right;
    left when there is no thermal camera); then the remaining cameras
    (back and sides) left to right as seen from behind. Each tile is that camera's overlay
    (LiDAR depth, radar, 3D / 2D boxes, ``findings``) scaled to ``tile_width`` and labelled
    with its channel. Raises ``AVFusionError`` for an unknown sample or a ``tile_width``
    outside 64..2048.
    """
    if (
        isinstance(tile_width, bool)
        or not isinstance(tile_width, int)
        or not 64 <= tile_width <= 2048
    ):
        raise AVFusionError(
            f"render_montage: tile_width must be an integer in 64..2048, got {tile_width!r}"
        )
    frame = _frame_of(log, sample_token)
    poses = _poses(log)
    mine, _ = _finding_targets(findings, frame.token)
    channels = sorted(frame.images)
    thermal = [c for c in channels if frame.sensors[c].modality == "thermal"]
    colour = [c for c in channels if c not in thermal]
    az = {c: _camera_azimuth(frame.sensors[c]) for c in channels}
    front = sorted((c for c in colour if abs(az[c]) <= 90.0), key=lambda c: -az[c])
    back = sorted((c for c in colour if abs(az[c]) > 90.0), key=lambda c: az[c] % 360.0)

    def tile(channel: str) -> U8:
        _image_of(frame, channel)
        img = _overlay(
            log, frame, channel, poses, lidar=True, radar=True, boxes3d=True, boxes2d=True,
            findings=mine, max_depth_m=60.0, caption=False,
        )  # fmt: skip
        out = _resize(img, tile_width)
        _label_tile(out, channel)
        return out

    n_cols = max(3, len(front), len(back))
    width = n_cols * tile_width

    def row(tiles: list[U8]) -> U8:
        h = max(t.shape[0] for t in tiles)
        out = np.zeros((h, width, 3), np.uint8)
        x = (width - tile_width * len(tiles)) // 2
        for t in tiles:
            out[: t.shape[0], x : x + tile_width] = t
            x += tile_width
        return out

    rows = []
    if front:
        rows.append(row([tile(c) for c in front]))
    # middle: thermal | BEV | legend
    bev_px = tile_width
    bev_range = 40.0
    data = _bev_inputs(log, frame, poses, mine)
    bev = bev_image(range_m=bev_range, px_per_m=bev_px / (2 * bev_range), **data)
    bev = _resize(bev, tile_width)
    _label_tile(bev, f"BEV {bev_range:g} m  sample {frame.token[:8] or frame.index}")
    middle = np.zeros((tile_width, width, 3), np.uint8)
    middle[:] = (12, 12, 14)
    side = (width - tile_width) // 2
    middle[:, side : side + tile_width] = bev
    if thermal:
        y = 0
        for c in thermal:
            t = tile(c)
            if y + t.shape[0] > tile_width:
                break
            middle[y : y + t.shape[0], side - tile_width : side] = t
            y += t.shape[0]
    labels = [] if frame.boxes3d is None else sorted({str(x) for x in frame.boxes3d.label})
    items: list[tuple[str, Any]] = [(short_label(lbl), category_color(lbl)) for lbl in labels]
    items = list(dict(items).items())
    items += [("radar", RADAR_COLOR)] + [(f"finding: {k}", v) for k, v in SEVERITY_COLORS.items()]
    legend = draw_legend(items, width=min(tile_width, 260), title="legend", row_px=20)
    legend = legend[: tile_width - 40]
    # the legend beside the BEV: right of it, or left when no thermal tile is there
    x_legend = side + tile_width + 8 if thermal else side - legend.shape[1] - 8
    _paste(middle, legend, x_legend, 8)
    bar = depth_colorbar(60.0, width=min(200, tile_width - 40))
    _paste(middle, bar, x_legend, tile_width - bar.shape[0] - 8)
    rows.append(middle)
    if back:
        rows.append(row([tile(c) for c in back]))
    return np.ascontiguousarray(np.concatenate(rows, axis=0))
