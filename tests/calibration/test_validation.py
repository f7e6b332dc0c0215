"""Edge alignment: projected LiDAR depth edges against image edges.

Synthetic scenes check the pieces exactly; the real nuScenes keyframe (6 cameras) and KITTI
object frame 000008 check that the true calibration lands on image structure clearly better
than the same calibration rotated by 1°.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.calibration.validation import (
    DepthEdges,
    EdgeImage,
    depth_edges,
    edge_alignment,
)
from avfusion.errors import CalibrationError

CAM = CameraModel.pinhole(200.0, 200.0, 99.5, 59.5, 200, 120)


def square_image(x0: int = 80, x1: int = 120, y0: int = 40, y1: int = 80) -> np.ndarray:
    img = np.full((120, 200, 3), 30, np.uint8)
    img[y0:y1, x0:x1] = 220
    return img


def plate_scene(noisy_wall: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scan lines (rows of rays) hitting a 1 m wide plate at 5 m in front of a wall at 20 m.

    Returns camera-frame points (N, 3) in scan order and each point's scan line.
    """
    rows = np.arange(35, 86, 5, dtype=np.float64)  # image rows of the scan lines
    cols = np.arange(2.0, 198.0, 1.0)
    uu, vv = np.meshgrid(cols, rows)
    rays = CAM.rays(np.stack([uu.ravel(), vv.ravel()], axis=1))
    x = rays[:, 0] / rays[:, 2]
    y = rays[:, 1] / rays[:, 2]
    on_plate = (np.abs(x * 5.0) <= 0.5) & (np.abs(y * 5.0) <= 0.5)
    z = np.where(on_plate, 5.0, 20.0)
    if noisy_wall:
        z = np.where(on_plate, z, np.random.default_rng(0).uniform(8.0, 30.0, z.size))
    pts = np.stack([x * z, y * z, z], axis=1)
    lines = np.repeat(np.arange(rows.size), cols.size)
    return pts, lines


# ------------------------------------------------------------------------------------------
# EdgeImage
# ------------------------------------------------------------------------------------------


def test_edge_image_distances_and_sampling() -> None:
    edges = EdgeImage.from_image(square_image(), max_distance_px=10.0)
    assert edges.shape == (120, 200) and edges.distance_px.dtype == np.float32
    assert edges.edges[40:80, 78:82].any() and not edges.edges[:30].any()
    # On the left border of the square the distance is ~0; 6 px inside it about 5-6 px.
    d, inside = edges.sample(np.array([[79.5, 60.0], [86.0, 60.0], [10.0, 10.0], [-3.0, 5.0]]))
    assert d[0] < 1.0 and 4.0 <= d[1] <= 7.0
    assert d[2] == 10.0 and d[3] == 10.0  # clipped, and outside
    assert inside.tolist() == [True, True, True, False]
    # Bilinear: halfway between two pixel centres is the mean of their distances.
    pix = edges.distance_px
    mid, _ = edges.sample(np.array([[100.5, 20.0]]))
    assert mid[0] == pytest.approx((pix[20, 100] + pix[20, 101]) / 2, abs=1e-6)
    # NaN pixels count as outside.
    d_nan, ok = edges.sample(np.array([[np.nan, 3.0]]))
    assert d_nan[0] == 10.0 and not ok[0]


def test_edge_image_scores() -> None:
    edges = EdgeImage.from_image(square_image(), max_distance_px=10.0)
    on_edge = np.array([[79.5, y] for y in range(45, 76, 5)], dtype=np.float64)
    s = edges.score(on_edge)
    assert s.mean_px < 1.0 and s.median_px < 1.0 and s.within_2px == 1.0 and s.n_points == 7
    far = on_edge + np.array([-30.0, 0.0])
    assert edges.score(far).mean_px == 10.0 and edges.score(far).within_2px == 0.0
    mixed = np.vstack([on_edge, far])
    weighted = edges.score(mixed, np.r_[np.ones(7), np.zeros(7)])
    assert weighted.mean_px == pytest.approx(s.mean_px) and weighted.n_points == 7
    none = edges.score(np.array([[-50.0, -50.0]]))
    assert none.n_points == 0 and np.isnan(none.mean_px)
    batch = edges.score_many(np.stack([on_edge, far, on_edge.copy()]))
    assert batch.shape == (3,) and batch[1] == 10.0
    assert batch[0] == pytest.approx(s.mean_px, abs=1e-9)
    wb = edges.score_many(np.stack([mixed, mixed]), np.r_[np.ones(7), np.zeros(7)])
    np.testing.assert_allclose(wb, s.mean_px)


def test_edge_image_inputs() -> None:
    grey = square_image()[:, :, 0]
    a = EdgeImage.from_image(grey)
    b = EdgeImage.from_image(square_image())
    np.testing.assert_array_equal(a.edges, b.edges)
    rgba = np.dstack([square_image(), np.full((120, 200), 255, np.uint8)])
    np.testing.assert_array_equal(EdgeImage.from_image(rgba).edges, b.edges)
    thermal = grey.astype(np.uint16) * 100 + 20000
    assert EdgeImage.from_image(thermal).edges[40:80, 78:82].any()
    flat = EdgeImage.from_image(np.zeros((10, 12), np.uint8), max_distance_px=7.0)
    assert not flat.edges.any() and np.all(flat.distance_px == 7.0)
    fixed = EdgeImage.from_image(square_image(), high_threshold=5000.0)
    assert not fixed.edges.any()
    # Noise-relative thresholds (the clock-offset estimator's edges): the same square.
    noise = EdgeImage.from_image(square_image(), thresholds="noise", max_distance_px=10.0)
    assert noise.edges[40:80, 78:82].any() and not noise.edges[:30].any()
    assert noise.distance_px.max() == 10.0 and noise.distance_px.dtype == np.float32
    blank = EdgeImage.from_image(np.zeros((10, 12), np.uint8), thresholds="noise")
    assert not blank.edges.any() and np.all(blank.distance_px == 20.0)
    with pytest.raises(CalibrationError, match="thresholds must be 'percentile' or 'noise'"):
        EdgeImage.from_image(square_image(), thresholds="otsu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: EdgeImage.from_image(np.zeros((4, 4, 2), np.uint8)),
            r"expected an H×W or H×W×3 image",
        ),
        (lambda: EdgeImage.from_image(np.zeros((4, 4), np.int32)), "unsupported pixel type int32"),
        (
            lambda: EdgeImage.from_image(square_image(), blur_sigma_px=-1),
            "blur_sigma_px must be >= 0",
        ),
        (
            lambda: EdgeImage.from_image(square_image(), edge_percentile=100),
            "0 < edge_percentile < 100",
        ),
        (
            lambda: EdgeImage.from_image(square_image(), max_distance_px=0),
            "max_distance_px must be > 0",
        ),
        (lambda: EdgeImage(np.zeros((3, 3)), np.zeros((3, 3), np.uint8), 5.0), "H×W float32"),  # type: ignore[arg-type]
        (
            lambda: EdgeImage(np.zeros((3, 3), np.float32), np.zeros((3, 4), np.uint8), 5.0),
            "differ in shape",
        ),
        (
            lambda: EdgeImage.from_image(square_image()).sample(np.zeros((3, 3))),
            r"uv_px must have shape \(\.\.\., 2\)",
        ),
        (
            lambda: EdgeImage.from_image(square_image()).score(np.zeros((3, 2)), np.ones(2)),
            "3 points but 2 weights",
        ),
        (
            lambda: EdgeImage.from_image(square_image()).score_many(np.zeros((3, 2))),
            r"must be \(K, N, 2\)",
        ),
    ],
)
def test_edge_image_errors(call: object, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        call()  # type: ignore[operator]


# ------------------------------------------------------------------------------------------
# Depth edges
# ------------------------------------------------------------------------------------------


def test_depth_edges_find_the_plate_silhouette() -> None:
    pts, lines = plate_scene()
    edges = depth_edges(pts, CAM, scan_line=lines)
    assert isinstance(edges, DepthEdges) and len(edges) > 0
    # Plate borders at x = ±0.5 m, z = 5 m: u = 99.5 ± 20 px; rows 40..79 inside the plate.
    u = edges.uv_px[:, 0]
    assert np.all((np.abs(u - 79.5) <= 1.0) | (np.abs(u - 119.5) <= 1.0))
    assert set(np.round(edges.uv_px[:, 1]).astype(int)) == {40, 45, 50, 55, 60, 65, 70, 75}
    assert len(edges) == 16  # left and right border on each of the 8 scan lines crossing it
    np.testing.assert_allclose(edges.depth_m, 5.0)
    np.testing.assert_allclose(
        edges.jump_m, np.linalg.norm(pts[edges.index], axis=1) * 3.0, rtol=0.02
    )
    np.testing.assert_allclose(edges.weights, 1.0)
    np.testing.assert_array_equal(pts[edges.index, 2], 5.0)


def test_depth_edges_scan_order_gaps_and_noise() -> None:
    pts, lines = plate_scene()
    # Without scan lines the input order is the scan order; the wrap to the next line is cut
    # by max_gap_px, so the same edges come out.
    plain = depth_edges(pts, CAM)
    with_lines = depth_edges(pts, CAM, scan_line=lines)
    np.testing.assert_array_equal(np.sort(plain.index), np.sort(with_lines.index))
    # Shuffled storage with scan-line ids: the stable sort keeps each line's order.
    order = np.random.default_rng(1).permutation(lines.max() + 1)
    shuffled = np.concatenate([np.flatnonzero(lines == k) for k in order])
    again = depth_edges(pts[shuffled], CAM, scan_line=lines[shuffled])
    np.testing.assert_array_equal(np.sort(shuffled[again.index]), np.sort(with_lines.index))
    # Neighbours further apart than max_gap_px are not compared.
    assert len(depth_edges(pts[::3], CAM, max_gap_px=2.0)) == 0
    # A scattered background (foliage-like) still gives jumps, but no clean silhouettes.
    noisy, noisy_lines = plate_scene(noisy_wall=True)
    assert len(depth_edges(noisy, CAM, scan_line=noisy_lines, solid=False)) > 16
    clean = depth_edges(noisy, CAM, scan_line=noisy_lines)
    assert len(clean) < len(depth_edges(noisy, CAM, scan_line=noisy_lines, solid=False))
    assert np.all(np.isclose(clean.depth_m, 5.0) | (clean.depth_m > 7.9))
    # Points behind the camera or out of view never count; empty input is fine.
    assert len(depth_edges(-pts, CAM)) == 0
    assert len(depth_edges(np.zeros((0, 3)), CAM)) == 0
    with pytest.raises(CalibrationError, match=r"points must have shape \(N, 3\)"):
        depth_edges(np.zeros((3, 2)), CAM)
    with pytest.raises(CalibrationError, match=r"2156 points but scan_line has shape \(5,\)"):
        depth_edges(pts, CAM, scan_line=np.zeros(5))


def test_edge_alignment_on_a_rendered_plate() -> None:
    pts, lines = plate_scene()
    # The plate seen by the camera: a bright square exactly where it projects.
    img = np.full((120, 200, 3), 40, np.uint8)
    img[40:80, 80:120] = 200
    true = edge_alignment(pts, CAM, img, scan_line=lines)
    assert true.n_edge_points == 16 and true.n_points_in_image == pts.shape[0]
    assert true.mean_px < 1.0 and true.within_2px == 1.0 and true.ratio < 0.2
    assert true.baseline_shift_px == 8.0 and true.baseline_mean_px > 4.0
    yawed = Transform.from_rotvec([0.0, np.radians(1.0), 0.0])
    wrong = edge_alignment(yawed.apply(pts), CAM, EdgeImage.from_image(img), scan_line=lines)
    assert wrong.mean_px > 2.5  # 1° = 3.5 px at f = 200 px
    unweighted = edge_alignment(pts, CAM, img, scan_line=lines, weighted=False)
    assert unweighted.mean_px == pytest.approx(true.mean_px)
    with pytest.raises(CalibrationError, match="image is 100x50 but the camera model is 200x120"):
        edge_alignment(pts, CAM, np.zeros((50, 100), np.uint8))
    with pytest.raises(CalibrationError, match="no LiDAR depth edge projects into the image"):
        edge_alignment(-pts, CAM, img)


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------

ROTATIONS = {
    "pitch+": (1.0, 0.0, 0.0),
    "pitch-": (-1.0, 0.0, 0.0),
    "yaw+": (0.0, 1.0, 0.0),
    "yaw-": (0.0, -1.0, 0.0),
    "roll+": (0.0, 0.0, 1.0),
    "roll-": (0.0, 0.0, -1.0),
}


def rotated_scores(
    points: np.ndarray,
    cam_from_lidar: Transform,
    camera: CameraModel,
    edges: EdgeImage,
    scan_line: np.ndarray | None,
) -> tuple[float, dict[str, float]]:
    """Mean edge distance of the true calibration and of it rotated by 1° about each camera axis."""

    def score(cam_from: Transform) -> float:
        return edge_alignment(
            cam_from.apply(points),
            camera,
            edges,
            scan_line=scan_line,
            sensor_origin_cam=cam_from.translation,
        ).mean_px

    true = score(cam_from_lidar)
    return true, {
        name: score(Transform.from_rotvec(np.radians(axis)) @ cam_from_lidar)
        for name, axis in ROTATIONS.items()
    }


def assert_clearly_better(true: float, perturbed: dict[str, float], where: str) -> None:
    # Yaw moves the depth edges across the (mostly upright) silhouettes: 1° must cost >= 15 %.
    for name in ("yaw+", "yaw-"):
        assert perturbed[name] >= 1.15 * true, (
            f"{where}: {name} {perturbed[name]:.2f} vs true {true:.2f}"
        )
    # Over all six 1° rotations the true calibration is clearly best on average.
    assert np.mean(list(perturbed.values())) >= 1.1 * true, (
        f"{where}: {perturbed} vs true {true:.2f}"
    )


@pytest.mark.realdata
def test_nuscenes_keyframe_lidar_lands_on_image_edges(
    realdata: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avfusion.io import NuScenesLog

    frame = NuScenesLog(realdata / "nuscenes-keyframe")[0]
    lidar = frame.points["LIDAR_TOP"]
    assert lidar.world_from_ego is not None
    world_from_lidar = lidar.world_from_ego @ lidar.sensor.ego_from_sensor
    points = lidar.xyz.astype(np.float64)
    ring = lidar.attrs["ring"]
    for name, image in sorted(frame.images.items()):
        assert image.world_from_ego is not None
        # Motion-aware chain: the ego pose at each sensor's own capture time.
        cam_from_lidar = (
            image.world_from_ego @ image.sensor.ego_from_sensor
        ).inverse() @ world_from_lidar
        edges = EdgeImage.from_image(image.pixels)
        result = edge_alignment(
            cam_from_lidar.apply(points),
            image.camera,
            edges,
            scan_line=ring,
            sensor_origin_cam=cam_from_lidar.translation,
        )
        assert result.n_edge_points >= 40 and result.ratio < 1.0, f"{name}: {result}"
        assert result.median_px < 3.5, f"{name}: {result}"
        true, perturbed = rotated_scores(points, cam_from_lidar, image.camera, edges, ring)
        assert true == pytest.approx(result.mean_px)
        assert_clearly_better(true, perturbed, name)
        # Ignoring the ego motion (9.3 m/s) between LiDAR and camera times is visible too for
        # the front cameras, whose images are 28-43 ms older than the sweep.
        if name.startswith("CAM_FRONT"):
            static = image.sensor.ego_from_sensor.inverse() @ lidar.sensor.ego_from_sensor
            static_score = edge_alignment(
                static.apply(points),
                image.camera,
                edges,
                scan_line=ring,
                sensor_origin_cam=static.translation,
            ).mean_px
            assert static_score >= 1.2 * true, (
                f"{name}: static chain {static_score:.2f} vs {true:.2f}"
            )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.realdata
def test_kitti_000008_lidar_lands_on_image_edges(
    realdata: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avfusion.io.kitti import KittiCalibration

    src = realdata / "open-mmlab__mmdetection3d" / "demo" / "data" / "kitti"
    info = json.loads((src / "000008.derived.json").read_text())["data_list"][0]
    calib = KittiCalibration(
        {"P2": np.asarray(info["images"]["CAM2"]["cam2img"])},
        np.asarray(info["images"]["R0_rect"]),
        np.asarray(info["lidar_points"]["Tr_velo_to_cam"]),
    )
    camera = calib.camera_model("CAM2", 1242, 375)
    cam_from_velo = calib.cam_from_velo("CAM2")
    points = np.fromfile(src / "000008.bin", np.float32).reshape(-1, 4)[:, :3].astype(np.float64)
    raw = cv2.imread(str(src / "000008.png"))
    assert raw is not None
    image = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    edges = EdgeImage.from_image(image)
    # KITTI stores each scan line by line, so the input order is the scan order.
    result = edge_alignment(
        cam_from_velo.apply(points), camera, edges, sensor_origin_cam=cam_from_velo.translation
    )
    assert result.n_edge_points >= 300 and result.ratio < 1.0 and result.median_px < 2.5, result
    true, perturbed = rotated_scores(points, cam_from_velo, camera, edges, None)
    assert_clearly_better(true, perturbed, "KITTI 000008 CAM2")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# --------------------------------------------------------------------------------------------
# The per-frame miscalibration check on the thermal camera (issue 8: false alarms <= 5 %)
# --------------------------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "nuscenes"


def _true_clock_log() -> object:
    """The sample log with every sensor's true clock offset (from the synthetic truth)."""
    from avfusion.calibration.extrinsics import SensorCalibration
    from avfusion.io import NuScenesLog
    from avfusion.synth import ensure_sample_data

    ensure_sample_data(SAMPLE.parent)
    truth = json.loads((SAMPLE / "truth" / "calibration.json").read_text())["sensors"]
    base = NuScenesLog(SAMPLE)
    calib = {
        name: SensorCalibration(name, s.ego_from_sensor, int(truth[name]["clock_offset_ns"]))
        for name, s in base.sensors.items()
    }
    return NuScenesLog(SAMPLE, calibration=calib)


def test_thermal_check_false_alarms_within_five_percent() -> None:
    """40 THERMAL_FRONT images, each with its 3 nearest sweeps, the check's settings: the correct
    calibration is flagged in at most 5 % of frames (measured 0 %; 7.5 % with the refinement's
    0.8 px edge blur) and a 0.5° rotation error about the 6 signed camera axes and 6 random axes
    in at least 95 % (measured 98.1 %)."""
    import dataclasses

    from avfusion.calibration.validation import check_settings, frame_check, prepare_alignment

    data = prepare_alignment(
        _true_clock_log(), "THERMAL_FRONT", settings=check_settings(max_frames=40)
    )
    assert data.n_frames == 40
    flagged, _gain, _ = frame_check(data)
    rng = np.random.default_rng(0)
    axes = [s * np.eye(3)[i] for i in range(3) for s in (1.0, -1.0)]
    axes += [a / np.linalg.norm(a) for a in rng.normal(size=(6, 3))]
    recall = []
    for a in axes:
        err = Transform.from_rotvec(np.radians(0.5) * a)
        bad = dataclasses.replace(data, points_cam=np.asarray(err.inverse().apply(data.points_cam)))
        recall.append(float(np.mean(frame_check(bad)[0])))
    print(
        f"\nTHERMAL_FRONT (check settings): false alarms {100 * np.mean(flagged):.1f} %, "
        f"recall at 0.5° {100 * np.mean(recall):.1f} % {np.round(recall, 2).tolist()}"
    )
    assert np.mean(flagged) <= 0.05
    assert np.mean(recall) >= 0.95


def test_check_settings_and_thermal_blur_validation() -> None:
    from avfusion.calibration.validation import (
        CHECK_THERMAL_BLUR_PX,
        AlignmentSettings,
        check_settings,
    )
    from avfusion.errors import ConfigError

    s = check_settings(max_frames=7)
    assert s.max_frames == 7 and s.sweeps_per_image == 3
    assert s.thermal_blur_sigma_px == CHECK_THERMAL_BLUR_PX
    assert AlignmentSettings().thermal_blur_sigma_px is None  # refinement: unchanged
    with pytest.raises(ConfigError, match="thermal_blur_sigma_px must be None or a number > 0"):
        AlignmentSettings(thermal_blur_sigma_px=0.0)
    with pytest.raises(ConfigError, match="thermal_blur_sigma_px"):
        check_settings(thermal_blur_sigma_px=True)
