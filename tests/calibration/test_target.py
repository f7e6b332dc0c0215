"""Target-based calibration on the synthetic checkerboard session (``avfusion.synth.target``):
corner detection (camera and thermal), intrinsics (focal within 0.5 %), and LiDAR→camera from
board planes and edges, all against the session's truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.target import (
    BoardTarget,
    board_plane_from_lidar,
    calibrate_intrinsics,
    calibrate_lidar_camera_target,
    detect_checkerboard,
)
from avfusion.calibration.transforms import Transform
from avfusion.errors import CalibrationError, ConfigError
from avfusion.synth.target import (
    CheckerboardSpec,
    TargetSession,
    make_target_session,
    write_target_session,
)

N_VIEWS = 16


@pytest.fixture(scope="module")
def session() -> TargetSession:
    return make_target_session(N_VIEWS, seed=0)


@pytest.fixture(scope="module")
def corners(session: TargetSession) -> dict[str, list[Any]]:
    return {
        name: [detect_checkerboard(im, session.board.pattern) for im in views]
        for name, views in session.images.items()
    }


def board_target(session: TargetSession) -> BoardTarget:
    b = session.board
    return BoardTarget(b.pattern, b.square_m, b.outline_m)


def distortion_displacement_px(est: CameraModel, truth: CameraModel, seen_uv: np.ndarray) -> float:
    """Largest pixel difference between the two lenses' distortion, both applied with the true K
    (so focal and principal-point errors are not counted twice), over the part of the image the
    board covered (the convex hull of all detected corners: a calibration says nothing beyond)."""
    import cv2

    us, vs = np.meshgrid(np.linspace(0, truth.width - 1, 65), np.linspace(0, truth.height - 1, 53))
    uv = np.stack([us.ravel(), vs.ravel()], axis=1)
    hull = cv2.convexHull(seen_uv.astype(np.float32))
    inside = np.array([cv2.pointPolygonTest(hull, (float(u), float(v)), False) >= 0 for u, v in uv])
    rays = truth.rays(uv[inside])
    same_k = CameraModel(truth.K, truth.width, truth.height, est.distortion, est.coeffs)
    uv_est, _d, ok = same_k.project(rays)
    return float(np.max(np.linalg.norm(uv_est[ok] - uv[inside][ok], axis=1)))


def test_session_is_deterministic_and_well_formed(session: TargetSession) -> None:
    again = make_target_session(2, seed=0)
    assert np.array_equal(again.images["THERMAL_FRONT"][1], session.images["THERMAL_FRONT"][1])
    assert np.array_equal(again.sweeps[0].xyz, session.sweeps[0].xyz)
    assert session.images["CAM_FRONT"][0].dtype == np.uint8
    assert session.images["CAM_FRONT"][0].shape == (900, 1600, 3)
    assert session.images["THERMAL_FRONT"][0].dtype == np.uint16
    for sw in session.sweeps:
        assert sw.on_board.sum() > 80  # every view puts the board in front of the LiDAR
    # Board returns lie on the true board plane (within the 2 cm range noise).
    for i, sw in enumerate(session.sweeps):
        board_from_lidar = (
            session.ego_from_board[i].inverse() @ session.ego_from_sensor["LIDAR_TOP"]
        )
        board_pts = np.asarray(board_from_lidar.apply(sw.xyz[sw.on_board].astype(np.float64)))
        assert np.std(board_pts[:, 2]) < 0.03


def test_detection_matches_truth(session: TargetSession, corners: dict[str, list[Any]]) -> None:
    obj = session.board.object_points()
    for name, views in corners.items():
        assert all(c is not None for c in views), name
        cam = session.cameras[name]
        errs = []
        for i, c in enumerate(views):
            uv, _d, _ok = cam.project(session.cam_from_board(name, i).apply(obj))
            errs.append(np.max(np.linalg.norm(c - uv, axis=1)))
        # Canonical order (a wrong order would be off by many pixels) and sub-pixel accuracy.
        assert max(errs) < 0.3, (name, np.round(errs, 3))
        assert np.median(errs) < 0.12, name


@pytest.mark.parametrize(
    ("name", "model", "pp_px", "dist_px"),
    [("CAM_FRONT", "none", 2.0, 0.0), ("THERMAL_FRONT", "radtan", 2.0, 0.3)],
)
def test_intrinsics_within_half_percent(
    session: TargetSession,
    corners: dict[str, list[Any]],
    name: str,
    model: Any,
    pp_px: float,
    dist_px: float,
) -> None:
    truth = session.cameras[name]
    res = calibrate_intrinsics(
        corners[name], session.board.pattern, session.board.square_m, truth.size, model
    )
    fx_err = abs(res.camera.fx / truth.fx - 1.0)
    fy_err = abs(res.camera.fy / truth.fy - 1.0)
    # Measured (seed 0): CAM_FRONT 0.026 % / 0.021 %, principal point (-0.23, 0.63) px;
    # THERMAL_FRONT 0.066 % / 0.020 %, (0.97, 0.57) px.
    assert fx_err < 0.005 and fy_err < 0.005, (fx_err, fy_err)
    assert abs(res.camera.cx - truth.cx) < pp_px and abs(res.camera.cy - truth.cy) < pp_px
    assert res.rms_px < 0.15
    assert res.per_view_rms_px.shape == (N_VIEWS,) and len(res.cam_from_board) == N_VIEWS
    if model == "radtan":
        seen = np.concatenate([c for c in corners[name] if c is not None])
        assert distortion_displacement_px(res.camera, truth, seen) < dist_px
    # Board poses agree with the truth.
    for i, pose in zip(res.used_views, res.cam_from_board, strict=True):
        true_pose = session.cam_from_board(name, i)
        assert np.linalg.norm(pose.translation - true_pose.translation) < 0.02
        assert np.degrees(pose.rotation_angle_to(true_pose)) < 0.3


@pytest.mark.parametrize("name", ["CAM_FRONT", "THERMAL_FRONT"])
def test_lidar_camera_extrinsic_from_target(
    session: TargetSession, corners: dict[str, list[Any]], name: str
) -> None:
    truth = session.cam_from_lidar(name)
    # The believed extrinsic is off by about 1.5° and 9 cm.
    initial = Transform.from_rotvec(np.deg2rad([1.0, -0.8, 0.6]), [0.05, -0.04, 0.06]) @ truth
    est = calibrate_lidar_camera_target(
        session.cameras[name],
        corners[name],
        [sw.xyz for sw in session.sweeps],
        board_target(session),
        initial,
        lidar_rings=[sw.ring for sw in session.sweeps],
        azimuth_step_rad=session.lidar_azimuth_step_rad,
        sensor=name,
        lidar="LIDAR_TOP",
    )
    err = est.cam_from_lidar @ truth.inverse()
    rot_err_deg = np.degrees(np.abs(err.as_rotvec()))
    trans_err_m = np.abs(err.translation)
    # Measured (seed 0), per camera axis: CAM_FRONT ≤ 0.071° and 5.3 mm, THERMAL_FRONT
    # ≤ 0.061° and 4.2 mm (standard deviations 0.02-0.05°, 0.6-2.7 mm).
    assert np.all(rot_err_deg < 0.1), rot_err_deg
    assert np.all(trans_err_m < 0.01), trans_err_m
    # The stated uncertainty covers the error.
    assert np.all(rot_err_deg < 4 * est.std_rotation_deg + 0.005)
    assert np.all(trans_err_m < 4 * est.std_translation_m + 0.001)
    assert est.n_views == N_VIEWS and est.n_edge_points > 100
    assert 0.01 < est.rms_plane_m < 0.03  # the 2 cm range noise
    ego_cam = est.ego_from_sensor(session.ego_from_sensor["LIDAR_TOP"])
    assert np.linalg.norm(ego_cam.translation - session.ego_from_sensor[name].translation) < 0.01
    assert est.as_dict()["n_views"] == N_VIEWS


def test_board_plane_from_lidar_finds_the_board(session: TargetSession) -> None:
    sw = session.sweeps[0]
    # The board plus the ground under it: RANSAC keeps the board (more returns) ...
    near = np.linalg.norm(sw.xyz, axis=1) < 10.0
    pts, ring, truth = sw.xyz[near], sw.ring[near], sw.on_board[near]
    plane = board_plane_from_lidar(pts, ring=ring, azimuth_step_rad=session.lidar_azimuth_step_rad)
    if plane is None or np.count_nonzero(plane.inliers & truth) < 0.9 * truth.sum():
        # ... or, when the ground dominates, the board after cropping the ground away.
        keep = pts[:, 2] > -1.5
        plane = board_plane_from_lidar(
            pts[keep], ring=ring[keep], azimuth_step_rad=session.lidar_azimuth_step_rad
        )
        truth = truth[keep]
    assert plane is not None
    assert np.count_nonzero(plane.inliers & truth) >= 0.95 * truth.sum()
    assert np.count_nonzero(plane.inliers & ~truth) <= 0.05 * truth.sum()
    lidar_from_board = session.ego_from_sensor["LIDAR_TOP"].inverse() @ session.ego_from_board[0]
    n_true = lidar_from_board.rotation[:, 2]
    assert np.degrees(np.arccos(min(1.0, abs(float(plane.normal @ n_true))))) < 1.5
    assert plane.offset_m < 0  # normal towards the sensor
    assert plane.edge_points.shape[0] >= 10 and plane.edge_points.shape[1] == 3
    assert plane.rms_m < 0.03


def test_detection_failure_returns_none(session: TargetSession) -> None:
    blank = np.full((480, 640), 128, dtype=np.uint8)
    assert detect_checkerboard(blank, (8, 5)) is None
    flat16 = np.full((512, 640), 30000, dtype=np.uint16)
    assert detect_checkerboard(flat16, (8, 5)) is None
    # A wrong pattern size is not found either (half-size image: the full search is slow).
    small = session.images["CAM_FRONT"][0][::2, ::2].copy()
    assert detect_checkerboard(small, (7, 7), upscale_below_px=0) is None


def test_bad_input_raises(session: TargetSession, corners: dict[str, list[Any]]) -> None:
    with pytest.raises(CalibrationError, match="pattern must be"):
        detect_checkerboard(session.images["CAM_FRONT"][0], (8,))  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="must be uint8"):
        detect_checkerboard(np.zeros((10, 10), np.float32), (8, 5))
    pat, sq = session.board.pattern, session.board.square_m
    with pytest.raises(CalibrationError, match="usable views"):
        calibrate_intrinsics([None, None, corners["CAM_FRONT"][0]], pat, sq, (1600, 900), "none")
    with pytest.raises(CalibrationError, match="view 1 must be 40 finite corners"):
        calibrate_intrinsics([corners["CAM_FRONT"][0], np.zeros((3, 2))], pat, sq, (1600, 900))
    with pytest.raises(CalibrationError, match="unknown distortion model"):
        calibrate_intrinsics(corners["CAM_FRONT"], pat, sq, (1600, 900), "division")  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="square_m"):
        calibrate_intrinsics(corners["CAM_FRONT"], pat, -1.0, (1600, 900))
    with pytest.raises(CalibrationError, match=r"points must have shape \(N, 3\)"):
        board_plane_from_lidar(np.zeros((10, 2)))
    with pytest.raises(CalibrationError, match="NaN"):
        board_plane_from_lidar(np.full((40, 3), np.nan))
    assert board_plane_from_lidar(np.zeros((5, 3))) is None  # too few points
    cam = session.cameras["CAM_FRONT"]
    tf = session.cam_from_lidar("CAM_FRONT")
    with pytest.raises(CalibrationError, match="must pair up"):
        calibrate_lidar_camera_target(cam, corners["CAM_FRONT"], [], board_target(session), tf)
    with pytest.raises(CalibrationError, match=r"CAM_FRONT.*usable views.*board not detected"):
        calibrate_lidar_camera_target(
            cam,
            [None] * 5,
            [s.xyz for s in session.sweeps[:5]],
            board_target(session),
            tf,
            sensor="CAM_FRONT",
        )
    with pytest.raises(CalibrationError, match="outline_m"):
        BoardTarget((8, 5), 0.1, (1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match="must be odd"):
        CheckerboardSpec(squares_x=8, squares_y=6)
    with pytest.raises(ConfigError, match="unknown sensor 'CAM_BACK'"):
        make_target_session(2, cameras=("CAM_BACK",))
    with pytest.raises(ConfigError, match="is not a camera"):
        make_target_session(2, cameras=("LIDAR_TOP",))


def test_write_target_session(tmp_path: Any) -> None:
    import json

    import cv2

    s = make_target_session(1, seed=1, cameras=("THERMAL_FRONT",))
    out = write_target_session(s, tmp_path / "target")
    img = cv2.imread(str(out / "THERMAL_FRONT" / "view_00.png"), cv2.IMREAD_UNCHANGED)
    assert (
        img is not None
        and img.dtype == np.uint16
        and np.array_equal(img, s.images["THERMAL_FRONT"][0])
    )
    npz = np.load(out / "LIDAR_TOP" / "view_00.npz")
    assert np.array_equal(npz["xyz"], s.sweeps[0].xyz)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["board"]["pattern"] == [8, 5]
    assert truth["sensors"]["THERMAL_FRONT"]["distortion"] == "radtan"
