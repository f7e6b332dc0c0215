"""Camera overlays: pure drawing functions (goldens, exact pixels) and the log-level renders."""

from __future__ import annotations

import numpy as np
import pytest

import avfusion as av
from avfusion.errors import AVFusionError
from avfusion.fusion import OcclusionOptions, project_boxes
from avfusion.fusion.consistency import Finding
from avfusion.viz.colors import (
    OCC3D_COLORS,
    RADAR_COLOR,
    SEVERITY_COLORS,
    category_color,
    category_colors,
    colormap_lut,
    depth_bin,
    depth_colors,
    severity_color,
)
from avfusion.viz.overlay import (
    Highlight,
    calibration_check_image,
    draw_arrows,
    draw_box_edges,
    draw_boxes2d,
    draw_highlights,
    draw_points,
    image_to_rgb,
    render_calibration_check,
    render_camera_overlay,
)

from ._helpers import CAMERA, EGO_FROM_CAM, TOKEN, TinyLog, assert_golden, box, sample_root


def _gradient(h: int = 120, w: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 60)], axis=2)
    return img.astype(np.uint8)


# ------------------------------------------------------------------------------------------
# colours
# ------------------------------------------------------------------------------------------


def test_palettes() -> None:
    assert OCC3D_COLORS.shape == (18, 3)
    assert tuple(OCC3D_COLORS[4]) == (0, 150, 245)  # car
    assert tuple(OCC3D_COLORS[17]) == (255, 255, 255)  # free
    assert category_color("human.pedestrian.adult") == category_color("human.pedestrian.child")
    assert category_color("vehicle.car") != category_color("vehicle.truck")
    assert category_color("something.else") == (230, 230, 230)
    cols = category_colors(np.array(["vehicle.car", "vehicle.bus", "vehicle.car"]))
    assert cols.shape == (3, 3) and np.array_equal(cols[0], cols[2])
    assert severity_color(0.9) == SEVERITY_COLORS["high"]
    assert severity_color(0.5) == SEVERITY_COLORS["medium"]
    assert severity_color("low") == SEVERITY_COLORS["low"]
    with pytest.raises(AVFusionError, match="severity must be in"):
        severity_color(1.5)
    with pytest.raises(AVFusionError, match="unknown colormap"):
        colormap_lut("jet")


def test_depth_colour_matches_its_bin() -> None:
    d = np.array([0.0, 6.0, 30.0, 59.9, 60.0, 500.0, np.nan])
    bins = depth_bin(d, 60.0)
    assert bins.tolist() == [0, 26, 128, 255, 255, 255, 255]
    lut = colormap_lut("turbo")
    assert np.array_equal(depth_colors(d, 60.0), lut[255 - bins])
    near, far = depth_colors([1.0, 59.0])
    assert near[0] > near[2] and far[2] > far[0]  # near red, far blue
    with pytest.raises(AVFusionError, match="max_depth_m"):
        depth_bin(d, 0.0)


# ------------------------------------------------------------------------------------------
# pure drawing functions
# ------------------------------------------------------------------------------------------


def test_draw_points_exact_pixels() -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    uv = np.array([[5.0, 5.0], [5.4, 5.4], [20.6, 10.2], [np.nan, 1.0], [-50.0, 3.0]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9], [9, 9, 9]], np.uint8)
    out = draw_points(img, uv, colors, radius=1)
    assert not img.any()  # input untouched
    assert tuple(out[5, 5]) == (0, 255, 0)  # later point wins
    assert tuple(out[10, 21]) == (0, 0, 255)  # floor(v + .5), floor(u + .5)
    assert tuple(out[10, 22]) == (0, 0, 255) and tuple(out[11, 21]) == (0, 0, 255)
    assert tuple(out[11, 22]) == (0, 0, 255)  # radius 1: the 3x3 square
    assert tuple(out[12, 21]) == (0, 0, 0)
    assert int((out.sum(axis=2) > 0).sum()) == 9 + 9  # the first two share their pixels
    two = draw_points(img, uv[:3], colors[:3], radius=2)
    assert tuple(two[5, 7]) == (0, 255, 0) and tuple(two[7, 7]) == (0, 0, 0)  # round
    one = draw_points(img, [[0.0, 0.0]], (1, 2, 3), radius=0)
    assert int((one.sum(axis=2) > 0).sum()) == 1
    with pytest.raises(AVFusionError, match=r"uv_px must be \(N, 2\)"):
        draw_points(img, np.zeros((3, 3)), (1, 2, 3))
    with pytest.raises(AVFusionError, match="image must be"):
        draw_points(np.zeros((4, 4)), np.zeros((1, 2)), (1, 2, 3))
    with pytest.raises(AVFusionError, match="colors must be"):
        draw_points(img, np.zeros((2, 2)), np.zeros((3, 3)))


def _projected_box():
    boxes = box([[8.0, 1.0, 0.5]], [[4.0, 2.0, 1.5]], [0.4], frame="ego")
    return boxes, project_boxes(boxes, EGO_FROM_CAM.inverse(), CAMERA)


def test_box_drawn_where_projected() -> None:
    _boxes, proj = _projected_box()
    img = np.zeros((240, 320, 3), np.uint8)
    out = draw_box_edges(img, proj.edges_uv_px, (255, 158, 0), edge_visible=proj.edge_visible)
    color = np.array([255, 158, 0])
    corners = proj.corners_uv_px[0]
    assert np.all(np.isfinite(corners))
    for u, v in corners:  # every corner pixel is painted in the box colour (anti-aliased)
        px = out[round(v), round(u)].astype(float)
        assert np.abs(px - color).max() < 80, (u, v, px)
    mid = (corners[0] + corners[4]) / 2  # middle of an edge
    assert np.abs(out[round(mid[1]), round(mid[0])].astype(float) - color).max() < 80
    assert tuple(out[2, 2]) == (0, 0, 0)
    with pytest.raises(AVFusionError, match="edges_uv_px must be"):
        draw_box_edges(img, np.zeros((1, 11, 2, 2)), (1, 2, 3))


def test_primitives_golden() -> None:
    img = _gradient()
    rng = np.random.default_rng(0)
    uv = rng.uniform([0, 0], [160, 120], size=(60, 2))
    img = draw_points(img, uv, depth_colors(rng.uniform(0, 60, 60)), radius=2)
    boxes = box([[6.0, 0.5, 0.5]], [[3.0, 1.6, 1.4]], [0.5], frame="ego")
    cam = av.CameraModel.pinhole(100.0, 100.0, 79.5, 59.5, 160, 120)
    proj = project_boxes(boxes, EGO_FROM_CAM.inverse(), cam)
    img = draw_box_edges(
        img, proj.edges_uv_px, category_colors(boxes.label), edge_visible=proj.edge_visible
    )
    img = draw_boxes2d(img, [[10, 70, 50, 110]], (0, 191, 255), labels=["2D ped"], thickness=1)
    img = draw_arrows(img, [[120.0, 100.0]], [[150.0, 80.0]], RADAR_COLOR)
    img = draw_highlights(
        img, [Highlight((100.0, 20.0, 140.0, 50.0), SEVERITY_COLORS["high"], "box_offset")]
    )
    assert_golden(img, "overlay_primitives")


def test_highlight_and_boxes2d_pixels() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    out = draw_highlights(img, [Highlight((40.0, 40.0, 60.0, 60.0), (255, 40, 40), "")])
    assert tuple(out[50, 37]) == (255, 40, 40)  # 3 px outside the box edge
    assert tuple(out[50, 50]) == (0, 0, 0)
    solid = draw_boxes2d(img, [[9.5, 9.5, 20.5, 30.5]], (0, 255, 0), dash_px=0)
    assert solid[20, 10, 1] > 200 and tuple(solid[20, 15]) == (0, 0, 0)  # anti-aliased line
    with pytest.raises(AVFusionError, match="2 boxes but 1 labels"):
        draw_boxes2d(img, np.zeros((2, 4)), (1, 2, 3), labels=["a"])


def test_image_to_rgb_thermal_monotonic() -> None:
    counts = np.tile(np.arange(20000, 30000, 40, dtype=np.uint16), (8, 1))
    rgb = image_to_rgb(counts)
    assert rgb.shape == (8, 250, 3) and rgb.dtype == np.uint8
    grey = rgb[0, :, 0].astype(int)
    assert np.all(np.diff(grey) >= 0) and grey[0] <= 5 and grey[-1] >= 250
    assert image_to_rgb(counts, colormap="inferno").shape == (8, 250, 3)
    with pytest.raises(AVFusionError, match="image_to_rgb"):
        image_to_rgb(np.zeros((4, 4), np.float32))


def test_calibration_check_image_colours() -> None:
    pixels = np.full((200, 300, 3), 200, np.uint8)
    edges = np.zeros((200, 300), np.uint8)
    edges[:, 40] = 255
    out = calibration_check_image(pixels, edges, [[40.0, 180.0], [70.0, 180.0]], [0.5, 9.0])
    assert tuple(out[180, 40]) == (60, 230, 60)  # on an edge: green
    assert tuple(out[180, 70]) == (255, 50, 50)  # 9 px away: red
    assert tuple(out[120, 40]) == (0, 200, 255)  # the edge map
    assert tuple(out[150, 100]) == (90, 90, 90)  # the image, dimmed
    with pytest.raises(AVFusionError, match="2 points but 1 distances"):
        calibration_check_image(pixels, edges, [[1.0, 1.0], [2.0, 2.0]], [1.0])


# ------------------------------------------------------------------------------------------
# log level on a hand-made log
# ------------------------------------------------------------------------------------------


def _wall_log(with_wall: bool = True, **kwargs):
    ys, zs = np.meshgrid(np.arange(-1.0, 1.0, 0.05), np.arange(-1.0, 0.5, 0.05))
    wall = np.stack([np.full(ys.size, 5.0), ys.ravel(), zs.ravel()], axis=1)
    far = np.array([[20.0, -0.8, -0.4]])  # behind the wall
    pts = np.vstack([wall, far]) if with_wall else far
    return TinyLog(pts, **kwargs), far


def test_overlay_hides_occluded_points() -> None:
    radius_px = 1  # 320 px wide image
    for with_wall in (True, False):
        log, far = _wall_log(with_wall)
        out = render_camera_overlay(log, TOKEN, "CAM_FRONT", boxes3d=False, boxes2d=False)
        assert out.shape == (240, 320, 3)
        uv, _, _ = CAMERA.project(np.asarray(EGO_FROM_CAM.inverse().apply(far)))
        r, c = int(np.floor(uv[0, 1] + 0.5)), int(np.floor(uv[0, 0] + 0.5))
        far_colour = depth_colors([20.0])[0]
        got = out[r - radius_px : r + radius_px + 1, c]
        if with_wall:  # hidden: the pixel shows the wall's colour (5 m), not the far point's
            assert not np.any(np.all(got == far_colour, axis=1))
            assert np.all(out[r, c] == depth_colors([5.0])[0]) or np.all(out[r, c] == 90)
        else:
            assert np.all(out[r, c] == far_colour)


def test_overlay_occlusion_options() -> None:
    # a sparse wall (8 px between returns at 5 m) and a far point between four of its returns
    ys, zs = np.meshgrid(np.arange(-1.0, 1.01, 0.2), np.arange(-1.0, 0.51, 0.2))
    wall = np.stack([np.full(ys.size, 5.0), ys.ravel(), zs.ravel()], axis=1)
    far = np.array([[20.0, -0.4, -0.4]])
    log = TinyLog(np.vstack([wall, far]))
    uv, _, _ = CAMERA.project(np.asarray(EGO_FROM_CAM.inverse().apply(far)))
    r, c = int(np.floor(uv[0, 1] + 0.5)), int(np.floor(uv[0, 0] + 0.5))
    far_colour = depth_colors([20.0])[0]

    def shows_far(**kw: object) -> bool:
        out = render_camera_overlay(log, TOKEN, "CAM_FRONT", **kw)  # type: ignore[arg-type]
        return bool(np.all(out[r, c] == far_colour))

    assert not shows_far()  # default: 0.25 m footprints (5 px at 5 m) hide it
    assert shows_far(occlusion=False)
    assert shows_far(occlusion=OcclusionOptions(footprint_px=1, footprint_size_m=None))


def test_overlay_boxes_radar_and_findings() -> None:
    boxes = box([[10.0, -1.0, 0.0]], [[4.0, 2.0, 1.6]], [0.2], token="ann1")
    radar = (np.array([[12.0, 2.0, 0.0]]), np.array([[-5.0, 0.0]]))
    log = TinyLog(np.array([[30.0, 0.0, 0.0]]), boxes=boxes, radar=radar)
    finding = Finding(
        "box_offset", "box_lidar", 0.9, "ann1", TOKEN, "LIDAR_TOP", "off", annotation_token="ann1"
    )
    other = Finding(
        "box_empty", "box_lidar", 0.5, "x", "another", "LIDAR_TOP", "e", annotation_token="ann1"
    )
    out = render_camera_overlay(log, TOKEN, "CAM_FRONT", findings=[finding, other])
    proj = project_boxes(boxes, EGO_FROM_CAM.inverse(), CAMERA)
    x0, y0, _x1, y1 = proj.xyxy[0]
    # the highlight: a red rectangle 3 px outside the projected box
    col = round(x0 - 3)
    rows = np.arange(int(y0) + 5, int(y1) - 5)
    assert np.mean(np.all(out[rows, col] == SEVERITY_COLORS["high"], axis=1)) > 0.8
    # the radar marker, in the radar colour, at the detection's pixel
    uv, _, _ = CAMERA.project(np.asarray(EGO_FROM_CAM.inverse().apply(radar[0])))
    assert tuple(out[round(uv[0, 1]), round(uv[0, 0])]) == RADAR_COLOR
    # the same overlay without findings has no red rectangle there
    plain = render_camera_overlay(log, TOKEN, "CAM_FRONT")
    assert np.mean(np.all(plain[rows, col] == SEVERITY_COLORS["high"], axis=1)) < 0.2


def test_overlay_errors() -> None:
    log, _ = _wall_log()
    with pytest.raises(AVFusionError, match="no image of 'CAM_BACK'"):
        render_camera_overlay(log, TOKEN, "CAM_BACK")
    with pytest.raises(AVFusionError, match="no frame with sample token 'nope'"):
        render_camera_overlay(log, "nope", "CAM_FRONT")
    with pytest.raises(AVFusionError, match="occlusion must be an OcclusionOptions"):
        render_camera_overlay(log, TOKEN, "CAM_FRONT", occlusion="yes")  # type: ignore[arg-type]
    with pytest.raises(AVFusionError, match="max_depth_m must be a positive"):
        render_camera_overlay(log, TOKEN, "CAM_FRONT", max_depth_m=-1.0)
    with pytest.raises(AVFusionError, match="has no 'keyframe_data'"):
        render_calibration_check(log, TOKEN, "CAM_FRONT")


# ------------------------------------------------------------------------------------------
# smoke: sample_data and the real keyframe
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_log():
    return av.open_log(sample_root())


def test_sample_data_overlays(sample_log) -> None:
    token = sample_log.sample_tokens[3]
    for channel, shape in (("CAM_FRONT", (900, 1600, 3)), ("THERMAL_FRONT", (512, 640, 3))):
        out = render_camera_overlay(sample_log, token, channel)
        assert out.shape == shape and out.dtype == np.uint8
        base = image_to_rgb(sample_log.frame(token).images[channel].pixels)
        assert np.mean(np.any(out != base, axis=2)) > 0.01  # something was drawn
    check = render_calibration_check(sample_log, token, "CAM_FRONT")
    assert check.shape == (900, 1600, 3)
    assert np.all(check == (0, 200, 255), axis=2).sum() > 1000  # the edge map


@pytest.mark.realdata
def test_real_keyframe_overlays(realdata) -> None:
    log = av.open_log(realdata / "nuscenes-keyframe")
    token = log.sample_tokens[0]
    out = render_camera_overlay(log, token, "CAM_FRONT")
    assert out.shape == (900, 1600, 3)
    orange = np.all(out == category_color("vehicle.car"), axis=2).sum()
    assert orange > 200  # car boxes drawn
    check = render_calibration_check(log, token, "CAM_BACK")
    assert check.shape == (900, 1600, 3)
