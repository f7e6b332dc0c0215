"""CameraModel against OpenCV, round trips, undistortion and error paths."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avfusion import CalibrationError, CameraModel

K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
RADTAN_8 = [-0.28, 0.09, 0.0012, -0.0008, -0.013, 0.004, 0.0015, -0.0006]
FISHEYE = [0.042, -0.011, 0.0031, -0.0007]


def _points(n: int = 2000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 80.0, n)
    xy = rng.uniform(-0.6, 0.6, (n, 2)) * z[:, None]
    return np.c_[xy, z]


MODELS = {
    "pinhole": CameraModel(K, 1600, 900),
    "radtan5": CameraModel.radtan(K, RADTAN_8[:5], 1600, 900),
    "radtan8": CameraModel.radtan(K, RADTAN_8, 1600, 900),
    "fisheye": CameraModel.fisheye(K, FISHEYE, 1600, 900),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_project_agrees_with_opencv(name: str) -> None:
    cam = MODELS[name]
    p = _points()
    uv, depth, _ = cam.project(p)
    if cam.distortion == "fisheye":
        ref, _ = cv2.fisheye.projectPoints(
            p.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, cam.opencv_distortion()
        )
    else:
        ref, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), K, cam.opencv_distortion())
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(depth, p[:, 2])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unproject_inverts_project(name: str) -> None:
    cam = MODELS[name]
    p = _points(seed=2)
    uv, depth, in_image = cam.project(p)
    back = cam.unproject(uv, depth)
    np.testing.assert_allclose(back, p, rtol=0, atol=1e-9 * np.abs(p).max())
    assert in_image.sum() > 500


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_project_flags_points_behind_and_keeps_alignment(dtype: type) -> None:
    cam = MODELS["radtan8"]
    p = np.array(
        [
            [0.0, 0.0, 10.0],
            [0.0, 0.0, -10.0],
            [1.0, 1.0, 0.0],
            [np.nan, 0, 5],
            [100.0, 0.0, 1.0],
            [2.0, 0.0, 20.0],
        ],
        dtype=dtype,
    )
    keep = p.copy()
    uv, depth, ok = cam.project(p)
    assert uv.shape == (6, 2) and depth.shape == (6,) and ok.shape == (6,)
    assert ok.tolist() == [True, False, False, False, False, True]
    assert np.isnan(uv[1]).all() and np.isnan(uv[2]).all()
    assert depth[1] == -10.0
    np.testing.assert_allclose(uv[0], [K[0, 2], K[1, 2]])
    np.testing.assert_array_equal(p, keep)


def test_far_off_axis_points_do_not_fold_back_into_image() -> None:
    # r (1 - 0.3 r²) folds back at r ≈ 1.05; a point at r = 2 lands inside the image when the
    # polynomial is evaluated blindly.
    cam = CameraModel.radtan(K, [-0.3, 0.0, 0, 0, 0], 1600, 900)
    p = np.array([[2.0, 0.0, 1.0]])
    uv, _, ok = cam.project(p)
    assert 0 <= uv[0, 0] < 1600  # the polynomial alone would call it visible
    assert not ok[0]


def test_image_bounds_follow_pixel_centre_convention() -> None:
    cam = CameraModel.pinhole(100.0, 100.0, 0.0, 0.0, 10, 10)
    p = np.array([[-0.0049, 0.0, 1.0], [-0.0051, 0.0, 1.0], [0.0949, 0.0, 1.0], [0.0951, 0.0, 1.0]])
    assert cam.project(p)[2].tolist() == [True, False, True, False]


def test_undistort_points_matches_opencv() -> None:
    cam = MODELS["radtan8"]
    uv, _, ok = cam.project(_points(seed=3))
    uv = uv[ok]
    ours = cam.undistort_points(uv)
    ref = cv2.undistortPoints(
        uv.reshape(-1, 1, 2),
        K,
        cam.opencv_distortion(),
        R=None,
        P=K,
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12),
    ).reshape(-1, 2)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_undistort_image_straightens_a_projected_line() -> None:
    cam = MODELS["radtan8"]
    # A straight 3D line, drawn through the distorted lens, must come out straight.
    s = np.linspace(-4.0, 4.0, 400)
    line = np.c_[s, np.full_like(s, 2.0), np.full_like(s, 8.0)]
    uv, _, ok = cam.project(line)
    img = np.zeros((900, 1600), np.uint8)
    for u, v in np.round(uv[ok]).astype(int):
        cv2.circle(img, (int(u), int(v)), 2, 255, -1)
    out = cam.undistort_image(img)
    ys, _ = np.nonzero(out > 128)
    expected_v = K[1, 1] * 2.0 / 8.0 + K[1, 2]
    assert abs(np.median(ys) - expected_v) < 1.0
    assert ys.max() - ys.min() <= 6  # straight: the line's rows span only the dot size


def test_scaled_camera_projects_consistently() -> None:
    cam = MODELS["radtan8"]
    half = cam.scaled(0.5)
    assert half.size == (800, 450)
    p = _points(seed=4)
    uv, _, _ = cam.project(p)
    uv2, _, _ = half.project(p)
    np.testing.assert_allclose(uv2 + 0.5, (uv + 0.5) * 0.5, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"K": np.eye(2)}, "K must be 3x3"),
        ({"K": np.diag([-1.0, 1.0, 1.0])}, "focal lengths must be positive"),
        ({"K": np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 1.0]])}, "upper triangular"),
        ({"K": np.full((3, 3), np.nan)}, "non-finite"),
        ({"width": 0}, "positive integers"),
        ({"distortion": "kannala"}, "unknown distortion model 'kannala'"),
        ({"distortion": "radtan", "coeffs": np.zeros(3)}, "radtan takes 4, 5 or 8"),
        ({"distortion": "fisheye", "coeffs": np.zeros(5)}, "'fisheye' takes 4 coefficients"),
        ({"distortion": "radtan", "coeffs": np.array([np.nan, 0, 0, 0])}, "not finite"),
    ],
)
def test_camera_rejects_bad_intrinsics(kwargs: dict, message: str) -> None:
    args = {
        "K": K,
        "width": 1600,
        "height": 900,
        "distortion": "none",
        "coeffs": np.zeros(0),
    } | kwargs
    with pytest.raises(CalibrationError, match=message):
        CameraModel(**args)


def test_project_and_unproject_shape_errors() -> None:
    cam = MODELS["pinhole"]
    with pytest.raises(CalibrationError, match=r"shape \(N, 3\)"):
        cam.project(np.zeros((3, 2)))
    with pytest.raises(CalibrationError, match="float32 or float64"):
        cam.project(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(CalibrationError, match="3 pixels but 2 depths"):
        cam.unproject(np.zeros((3, 2)), np.ones(2))
    with pytest.raises(CalibrationError, match="image is 10x10, camera is 1600x900"):
        cam.undistort_image(np.zeros((10, 10), np.uint8))
