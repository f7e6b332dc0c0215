"""Occupancy renders on a tiny hand-made grid (goldens, exact colours) and on sample_data."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.errors import AVFusionError
from avfusion.viz.colors import OCC3D_COLORS, colormap_lut
from avfusion.viz.occupancy_render import (
    OCC_BACKGROUND,
    occupancy_legend,
    render_height_slices,
    render_isometric,
    render_topdown,
    render_visibility,
)

from ._helpers import sample_root

FREE = 17


def _grid() -> np.ndarray:
    sem = np.full((8, 6, 4), FREE, np.uint8)
    sem[:, :, 0] = 11  # driveable surface
    sem[0:2, 0:3, 0] = 13  # sidewalk
    sem[5:7, 1:3, 1:3] = 4  # a car, two layers
    sem[2, 4, 1:4] = 15  # a pole of manmade
    sem[6, 5, 3] = 16  # a floating leaf (vegetation)
    return sem


def test_topdown_colour_is_the_highest_voxel() -> None:
    sem = _grid()
    img = render_topdown(sem, scale=2)
    assert img.shape == (16, 12, 3)
    x, y = np.meshgrid(np.arange(8), np.arange(6), indexing="ij")
    for xi, yi in zip(x.ravel(), y.ravel(), strict=True):
        col = sem[xi, yi]
        occupied = np.flatnonzero(col != FREE)
        expect = OCC3D_COLORS[col[occupied[-1]]] if occupied.size else OCC_BACKGROUND
        r, c = (7 - xi) * 2, (5 - yi) * 2  # x forward = up, y left = left
        assert np.array_equal(img[r, c], expect) and np.array_equal(img[r + 1, c + 1], expect)
    assert np.array_equal(img[(7 - 5) * 2, (5 - 1) * 2], OCC3D_COLORS[4])  # the car over the road


def test_topdown_mask() -> None:
    sem = _grid()
    mask = np.ones_like(sem)
    mask[2, 4, 2:] = 0  # the pole's top is unobserved: the observed top is z=1 -> still manmade
    mask[5, 1, 1:] = 0  # the car's column: only the road is observed
    mask[0, 0, :] = 0  # a column never observed
    img = render_topdown(sem, mask=mask, scale=1)
    assert np.array_equal(img[7 - 2, 5 - 4], OCC3D_COLORS[15])
    assert np.array_equal(img[7 - 5, 5 - 1], OCC3D_COLORS[11])
    assert tuple(img[7, 5]) == (60, 60, 66)
    with pytest.raises(AVFusionError, match="mask has shape"):
        render_topdown(sem, mask=mask[:, :, :2])


def test_occupancy_errors() -> None:
    with pytest.raises(AVFusionError, match=r"classes 0\.\.17"):
        render_topdown(np.full((2, 2, 2), 18, np.uint8))
    with pytest.raises(AVFusionError, match=r"\(X, Y, Z\)"):
        render_isometric(np.zeros((4, 4), np.uint8))
    with pytest.raises(AVFusionError, match="scale must be an integer"):
        render_topdown(_grid(), scale=0)
    with pytest.raises(AVFusionError, match="differ"):
        render_visibility(np.ones((2, 2, 2), np.uint8), np.ones((2, 3, 2), np.uint8))
    with pytest.raises(AVFusionError, match=r"classes must be in 0\.\.17"):
        occupancy_legend([3, 20])


def test_isometric_single_voxel_faces() -> None:
    sem = np.full((3, 3, 2), FREE, np.uint8)
    sem[1, 1, 0] = 4
    img = render_isometric(sem, scale=3, background=(0, 0, 0))
    colours = {tuple(c) for c in img.reshape(-1, 3)} - {(0, 0, 0)}
    car = OCC3D_COLORS[4].astype(float)
    shades = {tuple(np.rint(car * s).astype(np.uint8)) for s in (1.0, 0.78, 0.6, 0.45)}
    assert colours <= shades and len(colours) == 4  # top, two sides, outline
    assert render_isometric(np.full((3, 3, 2), FREE, np.uint8)).max() == max(OCC_BACKGROUND)


def test_isometric_painter_order_and_culling() -> None:
    sem = _grid()
    full = render_isometric(sem, scale=2)
    # a voxel hidden on all three visible sides changes nothing
    solid = np.full((4, 4, 3), 11, np.uint8)
    a = render_isometric(solid, scale=2)
    holed = solid.copy()
    holed[2, 2, 1] = FREE  # interior voxel removed: invisible from the viewer's corner
    assert np.array_equal(a, render_isometric(holed, scale=2))
    # the nearer voxel covers the farther one: a pole in front of a wall
    assert full.shape[0] > 0 and len({tuple(c) for c in full.reshape(-1, 3)}) > 8


def test_visibility_fraction_colours() -> None:
    ml = np.zeros((4, 5, 4), np.uint8)
    ml[0, 0, :2] = 1  # half the column
    ml[1, 1, :] = 1
    mc = np.zeros_like(ml)
    img = render_visibility(ml, mc, scale=2)
    lut = colormap_lut("inferno")
    title = 22
    assert np.array_equal(img[title + (3 - 0) * 2, (4 - 0) * 2], lut[128])  # 0.5
    assert np.array_equal(img[title + (3 - 1) * 2, (4 - 1) * 2], lut[255])  # 1.0
    assert np.array_equal(img[title, 0], lut[0])
    right = 180 + 8  # the camera panel (at least 180 px) starts after a gap
    assert np.array_equal(img[title + 6, right + 2], lut[0])


def test_occupancy_goldens() -> None:
    from ._helpers import assert_golden

    sem = _grid()
    mask = np.ones_like(sem)
    mask[:, :3, 2:] = 0
    assert_golden(render_topdown(sem, mask=mask, scale=4), "occ_topdown")
    assert_golden(render_height_slices(sem, scale=6, columns=2), "occ_slices")
    assert_golden(render_isometric(sem, scale=4), "occ_isometric")
    assert_golden(render_visibility(mask, np.ones_like(mask), scale=6), "occ_visibility")
    legend = occupancy_legend(np.unique(sem))
    assert legend.shape == (20 * 6 + 8, 200, 3)  # title + 5 classes (free left out)
    assert_golden(legend, "occ_legend")


def test_sample_occupancy_smoke() -> None:
    # The truth occupancy that comes with the sample log (same layout as avfusion's labels.npz).
    path = sorted((sample_root() / "truth" / "occupancy").glob("*/labels.npz"))[0]
    data = np.load(path)
    sem, ml, mc = data["semantics"], data["mask_lidar"], data["mask_camera"]
    assert render_topdown(sem, mask=mc).shape == (600, 600, 3)
    assert render_height_slices(sem).shape[0] > 4 * 400
    iso = render_isometric(sem, scale=1)
    assert iso.shape[1] == 800 + 2 * 8 and iso.std() > 5
    assert render_visibility(ml, mc).shape == (22 + 600 + 30, 1208, 3)
