"""3D boxes into cameras: hand-computed geometry, boxes through the near plane, distortion, a
per-pixel ray-casting reference, and the synthetic log's 2D boxes (made by the synth from the
rendered objects of the same truth)."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from avfusion import (
    AVFusionError,
    Boxes3D,
    CalibrationError,
    CameraModel,
    Image,
    Sensor,
    SyncError,
    Trajectory,
    Transform,
)
from avfusion.calibration.transforms import quaternion_from_matrix
from avfusion.fusion.boxes import (
    BOX_EDGES,
    camera_from_world,
    project_boxes,
    project_boxes_into_image,
)

REPO = Path(__file__).resolve().parents[2]
MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def axis_boxes(centers: Any, sizes: Any, frame: str = "cam") -> Boxes3D:
    c = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    n = len(c)
    return Boxes3D(
        c,
        np.asarray(sizes, dtype=np.float64).reshape(n, 3),
        np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
        ["car"] * n,
        [f"t{i}" for i in range(n)],
        frame,
        token=[f"tok{i}" for i in range(n)],
    )


PINHOLE = CameraModel.pinhole(100.0, 100.0, 49.5, 49.5, 100, 100)


def iou(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    x0 = np.maximum(a[:, 0], b[:, 0])
    y0 = np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 2], b[:, 2])
    y1 = np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)

    def area(r: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])

    return np.asarray(inter / (area(a) + area(b) - inter), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Known geometry
# --------------------------------------------------------------------------------------------


def test_cube_in_front_by_hand() -> None:
    # A 2 m cube 10 m ahead: the near face at z = 9, the far face at z = 11.
    p = project_boxes(axis_boxes([0.0, 0.0, 10.0], [2.0, 2.0, 2.0]), Transform(), PINHOLE)
    near_px, far_px = 100.0 / 9.0, 100.0 / 11.0
    # Corner order of Boxes3D.corners: +x face (+y+z, -y+z, -y-z, +y-z) then the -x face.
    sx = np.array([1, 1, 1, 1, -1, -1, -1, -1])
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1])
    sz = np.array([1, 1, -1, -1, 1, 1, -1, -1])
    scale = np.where(sz > 0, far_px, near_px)
    expected = np.stack([49.5 + sx * scale, 49.5 + sy * scale], axis=1)
    np.testing.assert_allclose(p.corners_uv_px[0], expected, atol=1e-9)
    np.testing.assert_allclose(p.corners_depth_m[0], 10.0 + sz)
    assert p.corners_in_image.all() and p.edge_visible.all() and p.in_front.all()
    np.testing.assert_allclose(
        p.xyxy[0], [49.5 - near_px, 49.5 - near_px, 49.5 + near_px, 49.5 + near_px]
    )
    assert p.visible[0] and p.visible_fraction[0] == 1.0
    # A pinhole camera samples each edge at its two ends: the projected corners.
    assert p.edges_uv_px.shape == (1, 12, 2, 2)
    np.testing.assert_allclose(p.edges_uv_px[0, :, 0], expected[BOX_EDGES[:, 0]], atol=1e-9)
    np.testing.assert_allclose(p.edges_uv_px[0, :, 1], expected[BOX_EDGES[:, 1]], atol=1e-9)


def test_rotated_box_and_transform_by_hand() -> None:
    # The box frame is the ego frame (x forward, z up); the camera looks along ego +x.
    ego_from_cam = Transform(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))
    boxes = Boxes3D(
        np.array([[20.0, 0.0, 0.0]]),
        np.array([[4.0, 2.0, 1.0]]),
        quaternion_from_matrix(Transform.from_euler_zyx(np.pi / 2, 0.0, 0.0).rotation[None]),
        ["car"],
        ["a"],
        "ego",
    )
    p = project_boxes(boxes, ego_from_cam.inverse(), PINHOLE)
    # Yawed 90°: 4 m across (camera x), 2 m deep (z from 19 to 21), 1 m tall.
    np.testing.assert_allclose(
        p.xyxy[0], [49.5 - 200 / 19, 49.5 - 50 / 19, 49.5 + 200 / 19, 49.5 + 50 / 19]
    )


def test_box_outside_and_behind() -> None:
    p = project_boxes(
        axis_boxes([[0.0, 0.0, -5.0], [30.0, 0.0, 10.0], [0.0, 0.0, 10.0]], [[2.0, 2.0, 2.0]] * 3),
        Transform(),
        PINHOLE,
    )
    assert p.visible.tolist() == [False, False, True]
    assert p.in_front.tolist() == [False, True, True]
    assert np.isnan(p.xyxy[:2]).all() and np.isnan(p.corners_uv_px[0]).all()
    assert np.isnan(p.edges_uv_px[0]).all() and not p.edge_visible[0].any()
    assert np.isfinite(p.corners_uv_px[1]).all() and not p.corners_in_image[1].any()
    assert p.visible_fraction.tolist() == [0.0, 0.0, 1.0]


def test_box_straddling_the_near_plane_by_hand() -> None:
    # x in [1, 3], y in [-1, 1], z in [-4, 6]: it reaches 4 m behind the camera.
    near = 0.5
    p = project_boxes(
        axis_boxes([2.0, 0.0, 1.0], [2.0, 2.0, 10.0]), Transform(), PINHOLE, near_m=near
    )
    assert p.visible[0] and p.in_front[0]
    # Edges along z (corner 3 -> 0, 1 -> 2, 5 -> 6, 7 -> 4) are cut at z = near; what is drawn
    # of edge 5 -> 6, from (1, -1, 6) towards (1, -1, -4), runs from corner 5 to where it
    # leaves the field of view at z = 2 (x/z = 0.5, y/z = -0.5: the image corner).
    along_z = [1, 3, 5, 7]
    assert all((p.corners_depth_m[0, BOX_EDGES[k]] < near).sum() == 1 for k in along_z)
    assert p.edge_visible[0, along_z].all()
    np.testing.assert_allclose(p.edges_uv_px[0, 5, 0], p.corners_uv_px[0, 5], atol=1e-9)
    np.testing.assert_allclose(p.edges_uv_px[0, 5, -1], [99.5, -0.5], atol=1e-3)
    assert np.isnan(p.corners_uv_px[0, [2, 3, 6, 7]]).all()  # the -z corners are behind
    assert not p.edge_visible[0, [2, 6, 10, 11]].any()  # so are the edges between them
    # The silhouette starts at the far face's inner edge x/z = 1/6 and reaches past the right,
    # top and bottom of the image: the corner rays (x/z = 0.5, |y/z| = 0.5) hit the box at z = 2.
    np.testing.assert_allclose(p.xyxy[0], [49.5 + 100 / 6, -0.5, 99.5, 99.5])
    # Half of the box volume is behind z = 0; of the front half some leaves the image.
    assert 0.0 < p.visible_fraction[0] < 0.5
    # Projecting the corners behind the camera would mirror them through the image centre
    # (the classic bug): none of the box lies left of u = 49.5 + 100/6.
    mirrored_u = 49.5 + 100 * np.array([1.0, 3.0]) / -4.0
    assert (mirrored_u < p.xyxy[0, 0]).all()


def test_near_plane_cut_inside_the_image() -> None:
    # A 0.2 m square rod along the optical axis from z = -4 to 6: the near plane (0.5 m) cuts
    # it into a square cap at x/z, y/z = ±0.2, the largest part of its silhouette.
    near = 0.5
    p = project_boxes(
        axis_boxes([0.0, 0.0, 1.0], [0.2, 0.2, 10.0]), Transform(), PINHOLE, near_m=near
    )
    np.testing.assert_allclose(p.xyxy[0], [29.5, 29.5, 69.5, 69.5], atol=1e-9)
    # Edge 3 -> 0 at (+x, +y): from the cut (0.1, 0.1, 0.5) to corner 0 at (0.1, 0.1, 6).
    np.testing.assert_allclose(p.edges_uv_px[0, 3, 0], [69.5, 69.5], atol=1e-9)
    np.testing.assert_allclose(p.edges_uv_px[0, 3, -1], [49.5 + 10 / 6, 49.5 + 10 / 6], atol=1e-9)
    assert np.isnan(p.corners_uv_px[0, [2, 3, 6, 7]]).all()


def test_camera_inside_a_box_sees_it_everywhere() -> None:
    p = project_boxes(axis_boxes([0.0, 0.0, 0.0], [4.0, 4.0, 4.0]), Transform(), PINHOLE)
    np.testing.assert_allclose(p.xyxy[0], [-0.5, -0.5, 99.5, 99.5])
    assert p.visible[0] and np.isnan(p.corners_uv_px[0, [2, 3, 6, 7]]).all()


def test_slanted_silhouette_leaving_the_image_is_clipped_exactly() -> None:
    """Clipping the box of the whole silhouette to the image is wrong for a slanted silhouette:
    a long thin box on the image diagonal that leaves the image to the lower right."""
    rot = Transform.from_euler_zyx(0.0, 0.0, 0.0).rotation
    yaw = Transform.from_rotvec(np.array([0.0, 0.0, np.pi / 4]))  # about the optical axis
    boxes = Boxes3D(
        np.array([[0.6, 0.6, 2.0]]),
        np.array([[3.0, 0.05, 0.05]]),
        quaternion_from_matrix((yaw.rotation @ rot)[None]),
        ["pole"],
        ["p"],
        "cam",
    )
    p = project_boxes(boxes, Transform(), PINHOLE)
    # The thin diagonal enters the image at its upper-left part and leaves at the lower-right
    # corner region: the visible box is nearly square and reaches the border on two sides only.
    x0, y0, x1, y1 = p.xyxy[0]
    assert x1 == 99.5 and y1 == 99.5 and x0 > 20 and y0 > 20
    assert abs((x1 - x0) - (y1 - y0)) < 2.0


# --------------------------------------------------------------------------------------------
# Reference: cast one ray per pixel
# --------------------------------------------------------------------------------------------


def _slab_hits(
    rays: npt.NDArray[Any],
    o: npt.NDArray[Any],
    rot: npt.NDArray[Any],
    half: npt.NDArray[Any],
    near: float,
) -> npt.NDArray[np.bool_]:
    d = rays @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    inside = np.abs(o) <= half
    lo = np.where(d == 0, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    hi = np.where(d == 0, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    start = np.maximum(np.maximum(lo.max(axis=-1), 0.0), near / rays[..., 2])
    return np.asarray(start <= hi.min(axis=-1))


def raster_bbox(
    boxes: Boxes3D, cam_from_frame: Transform, camera: CameraModel, near: float, sub: int = 4
) -> npt.NDArray[np.float64]:
    """Extremes (x0, y0, x1, y1) of the image positions, on a grid of step 1 / ``sub`` px,
    whose viewing ray hits each box at z >= near (NaN: none). Independent of the code under test:
    ``CameraModel.rays`` and a slab test. A pass over pixel centres finds the hits, then the fine
    grid is tested in 4-pixel strips along the four sides of the coarse extent."""
    # The grid includes the image border, where silhouettes leave the image.
    us = np.linspace(-0.5, camera.width - 0.5, camera.width * sub + 1)
    vs = np.linspace(-0.5, camera.height - 0.5, camera.height * sub + 1)
    uu, vv = np.meshgrid(us, vs)
    rays = camera.rays(np.stack([uu.ravel(), vv.ravel()], axis=1)).reshape(len(vs), len(us), 3)
    coarse = rays[sub // 2 :: sub, sub // 2 :: sub]
    out = np.full((len(boxes), 4), np.nan)
    rot = cam_from_frame.rotation @ boxes.rotation_matrices()
    centre = np.asarray(cam_from_frame.apply(boxes.center))
    band = 16 * sub  # wide: a shallow edge leaves the image far from the last hit pixel centre
    for i in range(len(boxes)):
        o = rot[i].T @ -centre[i]
        half = boxes.size[i] / 2
        r, c = np.nonzero(_slab_hits(coarse, o, rot[i], half, near))
        if r.size == 0:
            continue
        r0, r1 = max(r.min() * sub - band // 2, 0), min((r.max() + 1) * sub + band // 2, len(vs))
        c0, c1 = max(c.min() * sub - band // 2, 0), min((c.max() + 1) * sub + band // 2, len(us))
        found = []
        for rs, cs in (
            (slice(r0, r1), slice(c0, min(c0 + band, c1))),
            (slice(r0, r1), slice(max(c1 - band, c0), c1)),
            (slice(r0, min(r0 + band, r1)), slice(c0, c1)),
            (slice(max(r1 - band, r0), r1), slice(c0, c1)),
        ):
            hr, hc = np.nonzero(_slab_hits(rays[rs, cs], o, rot[i], half, near))
            found.append(np.stack([us[cs][hc], vs[rs][hr]], axis=1))
        q = np.concatenate(found)
        out[i] = [q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()]
    return out


def random_boxes(rng: np.random.Generator, n: int) -> Boxes3D:
    """Half anywhere around the camera, half around it (most of those cut by the near plane)."""
    far = np.column_stack(
        [
            rng.uniform(-5, 5, n - n // 2),
            rng.uniform(-4, 4, n - n // 2),
            rng.uniform(-2, 12, n - n // 2),
        ]
    )
    near = np.column_stack(
        [rng.uniform(-2.5, 2.5, n // 2), rng.uniform(-2, 2, n // 2), rng.uniform(-1.5, 1.5, n // 2)]
    )
    q = rng.normal(size=(n, 4))
    return Boxes3D(
        np.concatenate([far, near]), rng.uniform(0.6, 4.0, (n, 3)), q, ["x"] * n, ["t"] * n, "cam"
    )


@pytest.mark.parametrize(
    "camera",
    [
        CameraModel.pinhole(110.0, 105.0, 79.3, 60.1, 160, 120),
        # The synthetic thermal camera's lens (radtan, k1 = -0.28) at a quarter of its size.
        CameraModel.radtan(
            np.array([[155.0, 0.0, 79.55], [0.0, 155.0, 64.175], [0.0, 0.0, 1.0]]),
            [-0.28, 0.09, 4e-4, -3e-4, -0.012],
            160,
            128,
        ),
    ],
    ids=["pinhole", "radtan"],
)
def test_matches_per_pixel_ray_casting(camera: CameraModel) -> None:
    """Random boxes (many cut by the near plane or leaving the image) against casting a ray
    through every quarter of a pixel: the 2D box contains every position whose ray hits the box
    and is at most a sampling step (plus the tip of a pointed silhouette) larger."""
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 120)
    near = 0.3
    p = project_boxes(boxes, Transform(), camera, near_m=near)
    ref = raster_bbox(boxes, Transform(), camera, near)
    seen = np.isfinite(ref).all(axis=1)
    straddling = (p.corners_depth_m < near).any(axis=1) & p.in_front
    assert seen.sum() > 60 and (seen & straddling).sum() > 15, (
        seen.sum(),
        (seen & straddling).sum(),
    )
    assert p.visible[seen].all()
    # Boxes no ray sees are at most slivers along the border (or fully outside).
    assert not p.visible[~p.in_front].any()
    ours, theirs = p.xyxy[seen], ref[seen]
    grow = np.concatenate([theirs[:, :2] - ours[:, :2], ours[:, 2:] - theirs[:, 2:]], axis=1)
    assert grow.min() > -1e-3  # contains every hit position (dense edges: chord error ~0)
    assert grow.max() < 1.0 and np.median(grow) < 1.0 / 3, np.sort(grow.ravel())[-5:]


def test_distorted_edges_are_curves() -> None:
    """With barrel distortion the image of a straight edge bows: two samples per edge (the
    chord) miss the 2D box by pixels; the default dense sampling does not."""
    camera = CameraModel.radtan(
        np.array([[155.0, 0.0, 79.55], [0.0, 155.0, 64.175], [0.0, 0.0, 1.0]]),
        [-0.28, 0.09, 0.0, 0.0, -0.012],
        160,
        128,
    )
    # A wide flat box low in the image: its bottom edge runs across the image.
    boxes = axis_boxes([0.0, 1.6, 4.0], [5.0, 0.2, 0.2])
    dense = project_boxes(boxes, Transform(), camera)
    chord = project_boxes(boxes, Transform(), camera, samples_per_edge=2)
    ref = raster_bbox(boxes, Transform(), camera, 0.1)
    assert dense.edges_uv_px.shape[2] == 32
    np.testing.assert_allclose(dense.xyxy, ref, atol=0.5)
    assert np.abs(chord.xyxy - ref).max() > 2.0
    # The sampled edge is a curve: its middle leaves the chord between its ends.
    edge = dense.edges_uv_px[0, 11]  # corners 3 -> 7: the 5 m edge at +y (low in the image), -z
    mid = edge[len(edge) // 2]
    chord_mid = (edge[0] + edge[-1]) / 2
    assert np.linalg.norm(mid - chord_mid) > 2.0


# --------------------------------------------------------------------------------------------
# Frame level, errors
# --------------------------------------------------------------------------------------------


def camera_sensor(offset_ns: int = 0) -> Sensor:
    ego_from_cam = Transform(
        np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.array([1.5, 0.0, 1.5])
    )
    return Sensor("CAM_X", "camera", ego_from_cam, PINHOLE, offset_ns)


def straight_track() -> Trajectory:
    t = T0 + np.arange(0, 1_000 * MS, 10 * MS, dtype=np.int64)
    x = (t - T0) * 1e-9 * 10.0  # 10 m/s along world x
    tr = np.column_stack([x, np.zeros_like(x), np.zeros_like(x)])
    return Trajectory(t, np.tile([1.0, 0.0, 0.0, 0.0], (len(t), 1)), tr, "straight")


def test_project_boxes_into_image_moves_boxes_to_the_camera_time() -> None:
    poses = straight_track()
    sensor = camera_sensor(offset_ns=20 * MS)
    image = Image(sensor, T0 + 300 * MS, None, pixels_or_none=np.zeros((100, 100, 3), np.uint8))
    boxes = Boxes3D(
        np.array([[20.0, 0.0, 1.5], [25.0, 2.0, 1.5]]),
        np.array([[4.0, 2.0, 1.5]] * 2),
        np.tile([1.0, 0.0, 0.0, 0.0], (2, 1)),
        ["car"] * 2,
        ["a", "b"],
        "world",
        np.array([[-5.0, 0.0, 0.0], [np.nan, np.nan, np.nan]]),
    )
    t_boxes = T0 + 250 * MS
    p = project_boxes_into_image(boxes, image, poses, boxes_t_ns=t_boxes)
    # Camera time on the ego clock: stamp + 20 ms = T0 + 320 ms; ego at x = 3.2 m.
    cam_from_world = (poses.at(T0 + 320 * MS) @ sensor.ego_from_sensor).inverse()
    assert camera_from_world(image, poses).allclose(cam_from_world, atol=1e-12)
    moved = Boxes3D(
        boxes.center + np.array([[-5.0 * 0.070, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        boxes.size,
        boxes.rotation,
        boxes.label,
        boxes.track_id,
        "world",
    )
    np.testing.assert_allclose(p.xyxy, project_boxes(moved, cam_from_world, PINHOLE).xyxy)
    still = project_boxes_into_image(boxes, image, poses, boxes_t_ns=t_boxes, object_motion=False)
    np.testing.assert_allclose(still.xyxy, project_boxes(boxes, cam_from_world, PINHOLE).xyxy)
    assert p.camera == "CAM_X"
    # The image's stored pose wins over the pose track (as calibration.motion does).
    stored = dataclasses.replace(image, world_from_ego=poses.at(T0))
    assert camera_from_world(stored, poses).allclose(
        (poses.at(T0) @ sensor.ego_from_sensor).inverse(), atol=1e-12
    )


def test_to_boxes2d_keeps_the_index_of_each_visible_box() -> None:
    boxes = axis_boxes([[0.0, 0.0, -5.0], [0.0, 0.0, 10.0]], [[2.0, 2.0, 2.0]] * 2)
    p = project_boxes(boxes, Transform(), PINHOLE, camera_name="CAM_X")
    b2 = p.to_boxes2d(boxes)
    assert len(b2) == 1 and b2.sensor == "CAM_X" and b2.attrs["box_index"].tolist() == [1]
    assert b2.track_id.tolist() == ["t1"] and b2.attrs["token"].tolist() == ["tok1"]
    np.testing.assert_allclose(b2.xyxy[0], p.xyxy[1])
    with pytest.raises(AVFusionError, match="3 boxes given for a projection of 2"):
        p.to_boxes2d(axis_boxes([[0.0, 0.0, 1.0]] * 3, [[1.0, 1.0, 1.0]] * 3))


def test_empty_boxes() -> None:
    p = project_boxes(Boxes3D.empty("cam"), Transform(), PINHOLE)
    assert len(p) == 0 and p.xyxy.shape == (0, 4) and p.edges_uv_px.shape == (0, 12, 2, 2)


def test_bad_input_is_named() -> None:
    boxes = axis_boxes([0.0, 0.0, 10.0], [2.0, 2.0, 2.0])
    with pytest.raises(AVFusionError, match="near_m must be a positive number"):
        project_boxes(boxes, Transform(), PINHOLE, near_m=0.0)
    with pytest.raises(AVFusionError, match="samples_per_edge must be an integer >= 2, got 1"):
        project_boxes(boxes, Transform(), PINHOLE, samples_per_edge=1)
    with pytest.raises(AVFusionError, match="fraction_grid must be an integer >= 1"):
        project_boxes(boxes, Transform(), PINHOLE, fraction_grid=0)
    with pytest.raises(CalibrationError, match="camera_from_box_frame must be a Transform"):
        project_boxes(boxes, np.eye(4), PINHOLE)  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="camera must be a CameraModel"):
        project_boxes(boxes, Transform(), None)  # type: ignore[arg-type]
    image = Image(camera_sensor(), T0, None, pixels_or_none=np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(
        CalibrationError, match=r"'CAM_X': boxes are in frame 'cam'; expected 'world'"
    ):
        project_boxes_into_image(boxes, image)
    with pytest.raises(SyncError, match=r"image of 'CAM_X' at t=\d+ carries no world_from_ego"):
        project_boxes_into_image(axis_boxes([0.0, 0.0, 10.0], [2.0, 2.0, 2.0], "world"), image)


# --------------------------------------------------------------------------------------------
# sample_data: the log's 2D boxes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_log() -> Path:
    from avfusion.synth import ensure_sample_data

    return ensure_sample_data(REPO / "sample_data")


def test_matches_the_logs_2d_boxes(sample_log: Path) -> None:
    """``avfusion_box2d.json`` is, per keyframe image, the tight pixel box of each annotated
    object's *visible rendered pixels* (``synth.labels.boxes2d_from_prim_image``: pixel-edge
    coordinates, at the camera's true capture time, occlusion included, >= 20 pixels).

    1. Exact match of the machinery: projecting the object's own primitives (the boxes the synth
       rendered) at the camera's true time with ``project_boxes`` reproduces the log's box for
       unoccluded box-built objects (visibility 4).
    2. The clean truth 3D box (annotations.json, moved along its velocity from the LiDAR time to
       the camera time) against the log's box: the 3D box is looser than the rendered shape
       (a car body starts 0.2 m above the ground and its cabin is narrower; a pedestrian's
       0.6 × 0.7 m box holds a 0.28 × 0.46 m body), so the IoU is below 1 by construction; the
       numbers here are what a label check can expect from a correct label.
    3. The log believes every clock offset is 0; the truth offsets (+4, -3, +7, +25 ms) move the
       cameras by 4-25 cm at 10 m/s, which the IoU of static objects shows.
    """
    from avfusion.io import NuScenesLog
    from avfusion.synth.world import PRIM_BOX, build_world

    log = NuScenesLog(sample_log)
    truth = sample_log / "truth"
    anns = json.loads((truth / "annotations.json").read_text())
    cal = json.loads((truth / "calibration.json").read_text())["sensors"]
    scene = json.loads((truth / "scene.json").read_text())
    times = json.loads((truth / "sample_data_times.json").read_text())
    injected = json.loads((truth / "injected_errors.json").read_text())["errors"]
    moved_2d = {e["key"] for e in injected if e["kind"] == "mismatch_2d"}
    object_index = {o["track_id"]: o["index"] for o in scene["objects"]}
    world = build_world(scene["seconds"], scene["seed"], scene["t0_ns"])

    prim_iou: dict[str, list[float]] = defaultdict(list)  # camera -> IoU (visibility 4, boxes)
    box_iou: dict[tuple[str, str], list[float]] = defaultdict(list)  # (clock, class) -> IoU
    static_gain: dict[str, list[float]] = defaultdict(list)  # IoU(true offset) - IoU(log's)
    for k in range(len(log)):
        frame = log[k]
        sample = [a for a in anns if a["sample_token"] == frame.token]
        boxes = Boxes3D(
            np.array([a["translation"] for a in sample]),
            np.array([a["size_lwh"] for a in sample]),
            np.array([a["rotation"] for a in sample]),
            [a["category"] for a in sample],
            [a["track_id"] for a in sample],
            "world",
            np.array([a["velocity"] for a in sample]),
            [a["token"] for a in sample],
        )
        row_of = {str(t): i for i, t in enumerate(boxes.token)}  # type: ignore[union-attr]
        for cam, logged in frame.images.items():
            b2 = frame.boxes2d.get(cam)
            if b2 is None:
                continue
            true_clock = dataclasses.replace(
                logged,
                sensor=dataclasses.replace(
                    logged.sensor, time_offset_ns=cal[cam]["clock_offset_ns"]
                ),
                world_from_ego=None,
            )
            by_clock = {
                clock: project_boxes_into_image(boxes, img, log.poses, boxes_t_ns=frame.t_ns)
                for clock, img in (("truth", true_clock), ("log", logged))
            }
            prims = world.primitive_arrays(int(times[logged.token]["t_true_ns"]))
            cam_from_world = camera_from_world(true_clock, log.poses)
            for j in range(len(b2)):
                i = row_of.get(str(b2.attrs["sample_annotation_token"][j]))
                if i is None:
                    continue
                a = sample[i]
                oi = object_index[a["track_id"]]
                if f"{logged.token}/{oi}" in moved_2d:
                    continue  # an injected 2D-3D mismatch
                cls = a["category"].split(".")[1]
                for clock, proj in by_clock.items():
                    box_iou[(clock, cls)].append(float(iou(proj.xyxy[[i]], b2.xyxy[[j]])[0]))
                if a["velocity"] == [0.0, 0.0, 0.0]:
                    static_gain[cam].append(box_iou[("truth", cls)][-1] - box_iou[("log", cls)][-1])
                sel = np.flatnonzero(prims["object"] == oi)
                if a["visibility"] != 4 or not (prims["kind"][sel] == PRIM_BOX).all():
                    continue
                yaw = prims["yaw"][sel]
                parts = Boxes3D(
                    prims["center"][sel],
                    2 * prims["half"][sel],
                    np.column_stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)]),
                    ["part"] * len(sel),
                    ["part"] * len(sel),
                    "world",
                )
                pp = project_boxes(parts, cam_from_world, true_clock.camera)
                if pp.visible.any():
                    v = pp.xyxy[pp.visible]
                    union = np.array([[*v[:, :2].min(axis=0), *v[:, 2:].max(axis=0)]])
                    prim_iou[cam].append(float(iou(union, b2.xyxy[[j]])[0]))

    def med(values: list[float]) -> float:
        return float(np.median(values))

    summary = {
        "primitives": {c: (len(v), round(med(v), 4)) for c, v in prim_iou.items()},
        "boxes": {f"{c}/{k}": (len(v), round(med(v), 3)) for (c, k), v in sorted(box_iou.items())},
    }
    # 1. Measured: median IoU 0.992 (CAM_FRONT, 64 boxes), 0.997 (LEFT, 32), 0.990 (RIGHT, 13),
    #    0.985 (THERMAL_FRONT, 60, radtan lens); 83-92 % above 0.95 (the rest are occluded in
    #    the camera though visible from the LiDAR).
    assert set(prim_iou) == {"CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "THERMAL_FRONT"}
    for cam, values in prim_iou.items():
        assert med(values) > (0.975 if cam == "THERMAL_FRONT" else 0.985), summary
        assert np.mean(np.array(values) > 0.95) > 0.8, summary
    # 2. Measured medians with the true clocks (all cameras, all visibilities): barrier 0.981,
    #    bicycle rack 0.985, bus 0.904, car 0.845, cone 0.953, truck 0.905, pedestrian 0.575,
    #    bicycle 0.490.
    expected = {
        "barrier": 0.95,
        "bus": 0.88,
        "car": 0.8,
        "trafficcone": 0.9,
        "truck": 0.88,
        "pedestrian": 0.5,
    }
    for cls, floor in expected.items():
        assert med(box_iou[("truth", cls)]) > floor, summary
    # 3. Static objects (no object motion to confuse): median 0.973 with the true clock offsets,
    #    0.900 with the log's (all 0).
    # Measured mean (median) gain: THERMAL_FRONT (+25 ms) 0.090 (0.041), CAM_FRONT_RIGHT (+7 ms)
    # 0.023 (0.023), CAM_FRONT (+4 ms) 0.011 (0.002), CAM_FRONT_LEFT (-3 ms) 0.004 (0.005).
    thermal = np.array(static_gain["THERMAL_FRONT"])
    assert thermal.mean() > 0.05 and np.median(thermal) > 0.02, summary
    assert all(np.mean(g) > 0 for g in static_gain.values()), summary
