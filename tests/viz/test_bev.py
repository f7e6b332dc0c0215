"""Bird's-eye view and montage: pure BEV image (golden, exact pixels) and log-level renders."""

from __future__ import annotations

import numpy as np
import pytest

import avfusion as av
from avfusion.errors import AVFusionError
from avfusion.fusion.consistency import Finding
from avfusion.viz.bev import BEV_BACKGROUND, bev_image, bev_pixels, render_bev, render_montage
from avfusion.viz.colors import RADAR_COLOR, SEVERITY_COLORS, category_color, height_colors

from ._helpers import TOKEN, TinyLog, assert_golden, box, sample_root


def test_bev_pixels_orientation() -> None:
    uv = bev_pixels([[10.0, 0.0], [0.0, 5.0], [0.0, 0.0]], range_m=20.0, px_per_m=4.0)
    c = (160 - 1) / 2
    assert np.allclose(uv, [[c, c - 40], [c - 20, c], [c, c]])  # forward = up, left = left


def test_bev_point_colour_and_position() -> None:
    pts = np.array([[10.0, 0.0, 2.5], [-5.0, -5.0, 0.0]])
    img = bev_image(pts, range_m=20.0, px_per_m=4.0, ring_step_m=100.0)
    assert img.shape == (160, 160, 3)
    (u0, v0), (u1, v1) = np.floor(bev_pixels(pts, range_m=20.0, px_per_m=4.0) + 0.5).astype(int)
    assert np.array_equal(img[v0, u0], height_colors([2.5], -1.0, 3.0)[0])
    assert np.array_equal(img[v1, u1], height_colors([0.0], -1.0, 3.0)[0])
    assert v0 < 80 and u1 > 80  # ahead is up, right (-y) is right
    assert tuple(img[5, 150]) == BEV_BACKGROUND


def test_bev_box_radar_and_highlight() -> None:
    boxes = box([[10.0, 5.0, 0.5]], [[4.0, 2.0, 1.5]], [0.0], frame="ego")
    kw = dict(range_m=20.0, px_per_m=4.0, ring_step_m=100.0)
    img = bev_image(boxes=boxes, radar_xy=[[-10.0, -10.0]], radar_velocity=[[0.0, 3.0]], **kw)
    colour = np.array(category_color("vehicle.car"))
    # the middle of the rear edge (x = 8, y = 5) is drawn in the class colour
    u, v = np.rint(bev_pixels([[8.0, 5.0]], range_m=20.0, px_per_m=4.0)[0]).astype(int)
    assert np.abs(img[v, u].astype(int) - colour).max() < 60
    # the heading tick runs from the centre to the front edge
    u, v = np.rint(bev_pixels([[11.2, 5.0]], range_m=20.0, px_per_m=4.0)[0]).astype(int)
    assert np.abs(img[v, u].astype(int) - colour).max() < 60
    u, v = np.floor(bev_pixels([[-10.0, -10.0]], range_m=20.0, px_per_m=4.0)[0] + 0.5).astype(int)
    assert tuple(img[v, u]) == RADAR_COLOR
    marked = bev_image(boxes=boxes, highlights=[(0, SEVERITY_COLORS["high"], "box_offset")], **kw)
    u, v = np.rint(bev_pixels([[8.0, 6.0]], range_m=20.0, px_per_m=4.0)[0]).astype(int)
    around = marked[v - 3 : v + 4, u - 3 : u + 4].reshape(-1, 3)
    assert np.any(np.all(around == SEVERITY_COLORS["high"], axis=1))


def test_bev_golden() -> None:
    rng = np.random.default_rng(1)
    ang = rng.uniform(0, 2 * np.pi, 300)
    rad = rng.uniform(3, 18, 300)
    pts = np.stack([rad * np.cos(ang), rad * np.sin(ang), rng.uniform(-1, 3, 300)], axis=1)
    boxes = box(
        [[8.0, 3.0, 0.5], [-6.0, -4.0, 0.5], [12.0, -6.0, 0.9]],
        [[4.5, 1.9, 1.6], [0.8, 0.8, 1.8], [10.0, 2.5, 3.5]],
        [0.3, 0.0, -0.5],
        label=["vehicle.car", "human.pedestrian.adult", "vehicle.truck"],
        track=["aaaa1", "bbbb2", "cccc3"],
        token=["a1", "b2", "c3"],
        frame="ego",
    )
    img = bev_image(
        pts,
        boxes=boxes,
        radar_xy=[[15.0, 0.0], [10.0, -10.0]],
        radar_velocity=[[-4.0, 0.0], [0.0, 2.0]],
        highlights=[(2, SEVERITY_COLORS["medium"], "size_change")],
        range_m=20.0,
        px_per_m=5.0,
        title=["BEV test"],
    )
    assert img.shape == (200, 200, 3)
    assert_golden(img, "bev")


def test_bev_errors() -> None:
    with pytest.raises(AVFusionError, match="range_m and px_per_m must be positive"):
        bev_image(range_m=0.0)
    with pytest.raises(AVFusionError, match="canvas"):
        bev_image(range_m=1000.0, px_per_m=10.0)
    with pytest.raises(AVFusionError, match=r"points_ego must be \(N, 3\)"):
        bev_image(np.zeros((3, 2)))
    with pytest.raises(AVFusionError, match="highlights given but no boxes"):
        bev_image(highlights=[(0, (1, 2, 3), "x")])
    with pytest.raises(AVFusionError, match="radar_velocity must match"):
        bev_image(radar_xy=np.zeros((2, 2)), radar_velocity=np.zeros((3, 2)))


def test_render_bev_tiny_log_finding() -> None:
    boxes = box([[10.0, -3.0, 0.5]], [[4.0, 2.0, 1.5]], [0.0], token="ann1")
    log = TinyLog(
        np.array([[5.0, 0.0, 0.0]]),
        boxes=boxes,
        radar=(np.array([[12.0, 2.0, 0.0]]), np.array([[-5.0, 0.0]])),
    )
    f = Finding(
        "box_empty", "box_lidar", 0.8, "ann1", TOKEN, "LIDAR_TOP", "m", annotation_token="ann1"
    )
    img = render_bev(log, TOKEN, range_m=30.0, px_per_m=4.0, findings=[f])
    assert img.shape == (240, 240, 3)
    assert np.all(img == SEVERITY_COLORS["high"], axis=2).sum() > 20
    with pytest.raises(AVFusionError, match="tile_width must be"):
        render_montage(log, TOKEN, tile_width=10)


@pytest.fixture(scope="module")
def sample_log():
    return av.open_log(sample_root())


def test_sample_data_bev_and_montage(sample_log) -> None:
    token = sample_log.sample_tokens[2]
    img = render_bev(sample_log, token)
    assert img.shape == (960, 960, 3)
    assert np.mean(np.any(img != BEV_BACKGROUND, axis=2)) > 0.05
    mont = render_montage(sample_log, token, tile_width=240)
    assert mont.shape[1] == 720 and mont.shape[0] >= 135 + 240
    assert mont.std() > 20


@pytest.mark.realdata
def test_real_keyframe_bev_and_montage(realdata) -> None:
    log = av.open_log(realdata / "nuscenes-keyframe")
    token = log.sample_tokens[0]
    assert render_bev(log, token, range_m=40.0, px_per_m=5.0).shape == (400, 400, 3)
    mont = render_montage(log, token, tile_width=200)
    assert mont.shape == (round(900 * 200 / 1600) * 2 + 200, 600, 3)  # 3 front, BEV, 3 back
