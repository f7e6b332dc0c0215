"""Target-based calibration with a planar checkerboard: corner detection in camera and thermal
images, intrinsics from several views, and the LiDAR→camera extrinsic from the board plane and
edges.

* ``detect_checkerboard``: OpenCV's detector (``findChessboardCorners`` + ``cornerSubPix``,
  falling back to ``findChessboardCornersSB``; small images such as thermal frames are also
  tried at twice the size). 16-bit radiometric images are stretched to 8 bit between their
  0.5 and 99.5 percentiles, hot dark by default (a heated board's printed squares are the hot
  ones). Corners come back in a canonical order: row by row from the corner whose diagonal
  outer square is dark, with the board's x (along a row) and y (down the columns) forming a
  right-handed frame with the viewing direction — so a board that is not symmetric under a
  180° turn (odd + even squares) gets the same board frame in every view and every camera.
* ``calibrate_intrinsics``: ``cv2.calibrateCamera`` (``cv2.fisheye.calibrate`` for fisheye)
  from corner views; returns the ``CameraModel``, the RMS reprojection error, per-view errors,
  board poses and standard deviations of the intrinsics.
* ``board_plane_from_lidar``: RANSAC plane + least-squares refinement on the returns near the
  expected board, and the board's left/right edge points from each ring's outermost returns
  (moved half an azimuth step outwards, where the edge lies on average).
* ``calibrate_lidar_camera_target``: ``cam_from_lidar`` minimising, over all views at once,
  the distance of board returns to the camera's board plane (from ``solvePnP``) and of edge
  points to the board outline; Gauss-Newton with a view-clustered (sandwich) covariance, so
  that the error each view's board pose shares across its points is accounted for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.errors import CalibrationError

__all__ = [
    "BoardPlane",
    "BoardTarget",
    "IntrinsicsResult",
    "TargetExtrinsicEstimate",
    "board_plane_from_lidar",
    "calibrate_intrinsics",
    "calibrate_lidar_camera_target",
    "detect_checkerboard",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# The board
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardTarget:
    """What the calibration code needs to know about the board: OpenCV ``pattern`` (inner
    corners: columns, rows), ``square_m`` and the outline in the board frame
    ``(x_min, x_max, y_min, y_max)`` metres (origin at inner corner 0, x along a row, y down).
    """

    pattern: tuple[int, int]
    square_m: float
    outline_m: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        _check_pattern(self.pattern)
        if (
            not isinstance(self.square_m, int | float)
            or not np.isfinite(self.square_m)
            or self.square_m <= 0
        ):
            raise CalibrationError(f"BoardTarget: square_m must be > 0, got {self.square_m!r}")
        o = np.asarray(self.outline_m, dtype=np.float64)
        if o.shape != (4,) or not np.all(np.isfinite(o)) or o[0] >= o[1] or o[2] >= o[3]:
            raise CalibrationError(
                f"BoardTarget: outline_m must be (x_min, x_max, y_min, y_max) with min < max, got {self.outline_m!r}"
            )

    def object_points(self) -> F64:
        return _object_points(self.pattern, self.square_m)


def _check_pattern(pattern: Any) -> tuple[int, int]:
    if (
        not isinstance(pattern, tuple | list)
        or len(pattern) != 2
        or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 2 for v in pattern
        )
    ):
        raise CalibrationError(
            f"checkerboard pattern must be (columns, rows) of inner corners, each >= 2, got {pattern!r}"
        )
    return int(pattern[0]), int(pattern[1])


def _object_points(pattern: tuple[int, int], square_m: float) -> F64:
    cols, rows = pattern
    jj, ii = np.mgrid[0:rows, 0:cols]
    pts = np.zeros((rows * cols, 3))
    pts[:, 0] = ii.ravel() * square_m
    pts[:, 1] = jj.ravel() * square_m
    return pts


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _to_gray8(image: npt.NDArray[Any], hot_is_dark: bool) -> npt.NDArray[np.uint8]:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
        return np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    if img.ndim == 2 and img.dtype == np.uint8:
        return img
    if img.ndim == 2 and img.dtype == np.uint16:
        lo, hi = np.percentile(img, [0.5, 99.5])
        if hi <= lo:
            return np.zeros(img.shape, dtype=np.uint8)
        g = np.clip((img.astype(np.float64) - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
        if hot_is_dark:
            g = 255.0 - g
        return np.rint(g).astype(np.uint8)
    raise CalibrationError(
        "detect_checkerboard: image must be uint8 (H, W) grey, uint8 (H, W, 3) RGB or uint16 "
        f"(H, W) thermal counts, got {img.dtype} {img.shape}"
    )


def _subpix(gray: npt.NDArray[np.uint8], corners: F64, pattern: tuple[int, int]) -> F64:
    """``cornerSubPix`` with a half window of 0.4 × the smallest corner spacing (2..11 px)."""
    g = corners.reshape(pattern[1], pattern[0], 2)
    spacing = min(
        float(np.min(np.linalg.norm(np.diff(g, axis=1), axis=2))),
        float(np.min(np.linalg.norm(np.diff(g, axis=0), axis=2))),
    )
    win = int(np.clip(round(0.4 * spacing), 2, 11))
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
    c = cv2.cornerSubPix(
        gray, corners.astype(np.float32).reshape(-1, 1, 2), (win, win), (-1, -1), crit
    )
    return np.asarray(c, dtype=np.float64).reshape(-1, 2)


def _find(gray: npt.NDArray[np.uint8], pattern: tuple[int, int]) -> F64 | None:
    """Classic detector (fast), else the sector-based one; both refined by ``cornerSubPix``."""
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(gray, pattern, flags=flags)
    if not found:
        # No CALIB_CB_NORMALIZE_IMAGE: histogram equalisation defeats it on thermal frames.
        found, corners = cv2.findChessboardCornersSB(gray, pattern, flags=cv2.CALIB_CB_ACCURACY)
    if not found:
        return None
    return _subpix(gray, np.asarray(corners, dtype=np.float64).reshape(-1, 2), pattern)


def _mean_patch(gray: npt.NDArray[np.uint8], uv: F64, radius: float) -> float:
    h, w = gray.shape
    r = max(1, round(radius))
    u, v = round(float(uv[0])), round(float(uv[1]))
    u0, u1 = max(0, u - r), min(w, u + r + 1)
    v0, v1 = max(0, v - r), min(h, v + r + 1)
    if u0 >= u1 or v0 >= v1:
        return float("nan")
    return float(np.mean(gray[v0:v1, u0:u1]))


def _canonical_order(
    corners: F64, pattern: tuple[int, int], gray: npt.NDArray[np.uint8]
) -> F64 | None:
    """Reorder a detected grid into the canonical board order (see the module doc)."""
    cols, rows = pattern
    g = corners.reshape(rows, cols, 2)
    best = None
    for flip_r in (False, True):
        for flip_c in (False, True):
            c = g[::-1] if flip_r else g
            c = c[:, ::-1] if flip_c else c
            dx = c[0, 1] - c[0, 0]
            dy = c[1, 0] - c[0, 0]
            if dx[0] * dy[1] - dx[1] * dy[0] <= 0:  # must be right-handed seen from the front
                continue
            sq = 0.5 * (np.linalg.norm(dx) + np.linalg.norm(dy))
            first = c[0, 0] - 0.5 * dx - 0.5 * dy
            dxl = c[-1, -1] - c[-1, -2]
            dyl = c[-1, -1] - c[-2, -1]
            last = c[-1, -1] + 0.5 * dxl + 0.5 * dyl
            contrast = _mean_patch(gray, last, 0.2 * sq) - _mean_patch(gray, first, 0.2 * sq)
            if np.isfinite(contrast) and (best is None or contrast > best[0]):
                best = (contrast, c)
    if best is None or best[0] <= 0:
        return None
    return np.ascontiguousarray(best[1].reshape(-1, 2))


def detect_checkerboard(
    image: npt.NDArray[Any],
    pattern: tuple[int, int],
    *,
    hot_is_dark: bool = True,
    upscale_below_px: int = 1000,
) -> F64 | None:
    """Inner-corner pixel coordinates (N, 2) float64 of a checkerboard in ``image``, in the
    canonical order (see the module doc), or ``None`` when the board is not found (or its
    orientation cannot be told).

    ``image``: uint8 grey (H, W), uint8 RGB (H, W, 3) or uint16 thermal counts (H, W), which
    are stretched to 8 bit (``hot_is_dark``: hot pixels dark). ``pattern``: inner corners
    (columns, rows). Images narrower than ``upscale_below_px`` are also searched at twice the
    size when the native search fails (thermal frames). The input is not modified.
    """
    pat = _check_pattern(pattern)
    gray = _to_gray8(image, hot_is_dark)
    corners = _find(gray, pat)
    if corners is None and gray.shape[1] < upscale_below_px:
        big = cv2.resize(gray, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
        c2 = _find(np.asarray(big, dtype=np.uint8), pat)
        if c2 is not None:
            corners = (c2 + 0.5) / 2.0 - 0.5  # pixel centres: u' + 0.5 = 2 (u + 0.5)
    if corners is None:
        return None
    return _canonical_order(corners, pat, gray)


# --------------------------------------------------------------------------------------------
# Intrinsics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IntrinsicsResult:
    """``camera`` the estimated model; ``rms_px`` the RMS reprojection error over all corners;
    ``per_view_rms_px`` one value per *used* view (``used_views`` their indices in the input);
    ``cam_from_board`` the board pose of each used view; ``std_intrinsics`` OpenCV's standard
    deviations (fx, fy, cx, cy, then the distortion coefficients)."""

    camera: CameraModel
    rms_px: float
    per_view_rms_px: F64
    used_views: tuple[int, ...]
    cam_from_board: tuple[Transform, ...]
    std_intrinsics: F64
    n_skipped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "K": self.camera.K.tolist(),
            "distortion": self.camera.distortion,
            "coeffs": self.camera.coeffs.tolist(),
            "width": self.camera.width,
            "height": self.camera.height,
            "rms_px": self.rms_px,
            "per_view_rms_px": self.per_view_rms_px.tolist(),
            "used_views": list(self.used_views),
            "n_skipped": self.n_skipped,
        }


def _check_views(views: Sequence[F64 | None], n_corners: int, what: str) -> list[tuple[int, F64]]:
    out: list[tuple[int, F64]] = []
    for i, v in enumerate(views):
        if v is None:
            continue
        a = np.asarray(v, dtype=np.float64)
        if a.shape != (n_corners, 2) or not np.all(np.isfinite(a)):
            raise CalibrationError(
                f"{what}: view {i} must be {n_corners} finite corners of shape ({n_corners}, 2), got {a.shape}"
            )
        out.append((i, a))
    return out


def calibrate_intrinsics(
    views: Sequence[F64 | None],
    pattern: tuple[int, int],
    square_m: float,
    image_size: tuple[int, int],
    distortion_model: Literal["none", "radtan", "fisheye"] = "radtan",
    *,
    min_views: int = 4,
) -> IntrinsicsResult:
    """Camera intrinsics from checkerboard corner views (``detect_checkerboard`` output; ``None``
    entries are skipped and counted). ``image_size`` is (width, height). ``radtan`` estimates
    OpenCV's (k1, k2, p1, p2, k3), ``none`` a pinhole, ``fisheye`` OpenCV's (k1..k4).

    Raises ``CalibrationError`` for malformed views, too few usable views or a failed solve.
    """
    pat = _check_pattern(pattern)
    if not isinstance(square_m, int | float) or not np.isfinite(square_m) or square_m <= 0:
        raise CalibrationError(
            f"calibrate_intrinsics: square_m must be a number > 0, got {square_m!r}"
        )
    if len(image_size) != 2 or not all(
        isinstance(v, int | np.integer) and v > 0 for v in image_size
    ):
        raise CalibrationError(
            f"calibrate_intrinsics: image_size must be (width, height) > 0, got {image_size!r}"
        )
    if distortion_model not in ("none", "radtan", "fisheye"):
        raise CalibrationError(
            f"calibrate_intrinsics: unknown distortion model '{distortion_model}' (none, radtan, fisheye)"
        )
    n = pat[0] * pat[1]
    good = _check_views(views, n, "calibrate_intrinsics")
    if len(good) < max(3, min_views):
        raise CalibrationError(
            f"calibrate_intrinsics: {len(good)} usable views of {len(views)}, need at least {max(3, min_views)}"
        )
    w, h = int(image_size[0]), int(image_size[1])
    obj = _object_points(pat, float(square_m)).astype(np.float32)
    img_pts = [v.astype(np.float32).reshape(-1, 1, 2) for _, v in good]
    obj_pts = [obj.reshape(-1, 1, 3) for _ in good]
    k0 = np.array([[max(w, h), 0.0, (w - 1) / 2], [0.0, max(w, h), (h - 1) / 2], [0.0, 0.0, 1.0]])
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    try:
        if distortion_model == "fisheye":
            d0 = np.zeros((4, 1))
            flags = cv2.fisheye.CALIB_RECOMPUTE_EXTRINSIC | cv2.fisheye.CALIB_FIX_SKEW  # type: ignore[attr-defined]
            rms, k, d, rvecs, tvecs = cv2.fisheye.calibrate(
                obj_pts, img_pts, (w, h), k0, d0, flags=flags, criteria=crit
            )
            std = np.full(8, np.nan)
            coeffs = np.asarray(d, dtype=np.float64).reshape(-1)
        else:
            if distortion_model == "none":
                flags = (
                    cv2.CALIB_ZERO_TANGENT_DIST
                    | cv2.CALIB_FIX_K1
                    | cv2.CALIB_FIX_K2
                    | cv2.CALIB_FIX_K3
                )
            else:
                flags = 0
            d0 = np.zeros((5, 1))
            rms, k, d, rvecs, tvecs, std_i, _std_e, _per = cv2.calibrateCameraExtended(
                obj_pts, img_pts, (w, h), k0, d0, flags=flags, criteria=crit
            )
            std = np.asarray(std_i, dtype=np.float64).reshape(-1)[
                : 4 + (5 if distortion_model == "radtan" else 0)
            ]
            coeffs = np.asarray(d, dtype=np.float64).reshape(-1)[:5]
    except cv2.error as exc:
        raise CalibrationError(f"calibrate_intrinsics: OpenCV calibration failed ({exc})") from None
    k_est: F64 = np.array(k, dtype=np.float64)
    k_est[0, 1] = 0.0
    if distortion_model == "none":
        cam = CameraModel(k_est, w, h)
    elif distortion_model == "fisheye":
        cam = CameraModel.fisheye(k_est, coeffs, w, h)
    else:
        cam = CameraModel.radtan(k_est, coeffs, w, h)
    poses: list[Transform] = []
    per_view: list[float] = []
    for (_, uv), rv, tv in zip(good, rvecs, tvecs, strict=True):
        pose = Transform.from_rotvec(np.asarray(rv).reshape(3), np.asarray(tv).reshape(3))
        poses.append(pose)
        proj, _dep, _ok = cam.project(_apply(pose, obj.astype(np.float64)))
        per_view.append(float(np.sqrt(np.mean(np.sum((proj - uv) ** 2, axis=1)))))
    return IntrinsicsResult(
        camera=cam,
        rms_px=float(rms),
        per_view_rms_px=np.asarray(per_view),
        used_views=tuple(i for i, _ in good),
        cam_from_board=tuple(poses),
        std_intrinsics=std,
        n_skipped=len(views) - len(good),
    )


# --------------------------------------------------------------------------------------------
# LiDAR board plane
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BoardPlane:
    """A board plane in the LiDAR frame: unit ``normal`` (pointing towards the LiDAR) and
    ``offset_m`` with ``normal · p = offset_m`` on the plane (minus the sensor's distance); ``inliers`` a mask aligned with the
    input points; ``rms_m`` the inliers' RMS distance to the plane; ``edge_points`` (M, 3) the
    board's left/right edge estimates (two per ring that crosses the board, when rings were
    given)."""

    normal: F64
    offset_m: float
    inliers: npt.NDArray[np.bool_]
    rms_m: float
    edge_points: F64 = field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def n_inliers(self) -> int:
        return int(np.count_nonzero(self.inliers))


def _fit_plane(p: F64) -> tuple[F64, float]:
    c = p.mean(axis=0)
    _u, _s, vt = np.linalg.svd(p - c, full_matrices=False)
    n = vt[2]
    return n, float(n @ c)


def board_plane_from_lidar(
    points: npt.ArrayLike,
    *,
    ring: npt.ArrayLike | None = None,
    azimuth_step_rad: float | None = None,
    distance_threshold_m: float = 0.06,
    iterations: int = 300,
    min_inliers: int = 30,
    seed: int = 0,
) -> BoardPlane | None:
    """The dominant plane of ``points`` (N, 3) — LiDAR returns already cropped to the board's
    neighbourhood — by RANSAC (``iterations`` three-point samples, inliers within
    ``distance_threshold_m``), refined by least squares on the inliers. ``None`` when fewer than
    ``min_inliers`` points support it.

    With ``ring`` (N,) the board's left and right edges are estimated per ring from the
    outermost inliers in azimuth; with ``azimuth_step_rad`` too, each is moved half a step
    outwards (the edge lies, on average, midway between the last return on the board and the
    next firing) and put on the plane.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise CalibrationError(
            f"board_plane_from_lidar: points must have shape (N, 3), got {p.shape}"
        )
    if not np.all(np.isfinite(p)):
        raise CalibrationError("board_plane_from_lidar: points contain NaN or inf")
    rings = None
    if ring is not None:
        rings = np.asarray(ring)
        if rings.shape != (p.shape[0],):
            raise CalibrationError(
                f"board_plane_from_lidar: ring must have shape ({p.shape[0]},), got {rings.shape}"
            )
    if p.shape[0] < max(3, min_inliers):
        return None
    rng = np.random.default_rng(seed)
    best_count, best_mask = -1, np.zeros(p.shape[0], dtype=bool)
    for _ in range(iterations):
        s = p[rng.choice(p.shape[0], 3, replace=False)]
        n = np.cross(s[1] - s[0], s[2] - s[0])
        nn = np.linalg.norm(n)
        if nn < 1e-9:
            continue
        n /= nn
        mask = np.abs((p - s[0]) @ n) < distance_threshold_m
        c = int(np.count_nonzero(mask))
        if c > best_count:
            best_count, best_mask = c, mask
    if best_count < min_inliers:
        return None
    mask = best_mask
    for _ in range(3):
        n, d = _fit_plane(p[mask])
        mask = np.abs(p @ n - d) < distance_threshold_m
        if np.count_nonzero(mask) < min_inliers:
            return None
    n, d = _fit_plane(p[mask])
    # Orient the normal towards the sensor: the origin on the positive side, n · 0 > d, d < 0.
    if d > 0:
        n, d = -n, -d
    rms = float(np.sqrt(np.mean((p[mask] @ n - d) ** 2)))
    edges = np.zeros((0, 3))
    if rings is not None:
        pts_in, ring_in = p[mask], rings[mask]
        az = np.arctan2(pts_in[:, 1], pts_in[:, 0])
        out: list[F64] = []
        for r in np.unique(ring_in):
            sel = np.flatnonzero(ring_in == r)
            if sel.size < 3:
                continue
            a = np.unwrap(az[sel][np.argsort(az[sel])])
            ends = [sel[np.argsort(az[sel])[0]], sel[np.argsort(az[sel])[-1]]]
            for end, sign in zip(ends, (-1.0, 1.0), strict=True):
                q = pts_in[end]
                if azimuth_step_rad is not None:
                    a_end = (a[0] if sign < 0 else a[-1]) + sign * 0.5 * float(azimuth_step_rad)
                    el = np.arctan2(q[2], np.hypot(q[0], q[1]))
                    ray = np.array(
                        [np.cos(el) * np.cos(a_end), np.cos(el) * np.sin(a_end), np.sin(el)]
                    )
                    den = float(n @ ray)
                    if abs(den) < 1e-6:
                        continue
                    q = ray * (d / den)
                out.append(q)
        if out:
            edges = np.asarray(out)
    return BoardPlane(normal=n, offset_m=float(d), inliers=mask, rms_m=rms, edge_points=edges)


# --------------------------------------------------------------------------------------------
# LiDAR → camera
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TargetExtrinsicEstimate:
    """``cam_from_lidar`` from the target, with its uncertainty.

    ``std_rotation_deg``/``std_translation_m`` (3,) along the camera axes (view-clustered
    sandwich estimate); ``rms_plane_m`` the RMS distance of board returns to the camera's board
    planes, ``rms_edge_m`` of edge points to the outline; ``per_view`` one record per input view
    (used or not, with a ``reason``). ``ego_from_sensor(ego_from_lidar)`` gives the camera's
    extrinsic for ``calibration.json``."""

    sensor: str
    lidar: str
    cam_from_lidar: Transform
    std_rotation_deg: F64
    std_translation_m: F64
    rms_plane_m: float
    rms_edge_m: float
    n_views: int
    n_points: int
    n_edge_points: int
    per_view: tuple[dict[str, Any], ...]

    def ego_from_sensor(self, ego_from_lidar: Transform) -> Transform:
        return ego_from_lidar @ self.cam_from_lidar.inverse()

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "checkerboard target (board planes and edges)",
            "lidar": self.lidar,
            "std_rotation_deg": self.std_rotation_deg.tolist(),
            "std_translation_m": self.std_translation_m.tolist(),
            "rms_plane_m": self.rms_plane_m,
            "rms_edge_m": self.rms_edge_m,
            "n_views": self.n_views,
            "n_points": self.n_points,
            "n_edge_points": self.n_edge_points,
        }


def _board_pose_pnp(camera: CameraModel, obj: F64, uv: F64) -> Transform:
    ok, rvec, tvec = cv2.solvePnP(
        obj.astype(np.float64),
        uv.astype(np.float64),
        camera.K,
        camera.opencv_distortion() if camera.distortion == "radtan" else None,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        raise CalibrationError("solvePnP failed")
    return Transform.from_rotvec(np.asarray(rvec).reshape(3), np.asarray(tvec).reshape(3))


def _undistort_for_pnp(camera: CameraModel, uv: F64) -> F64:
    """Corners moved to an ideal pinhole with ``camera.K`` (fisheye and beyond-OpenCV lenses)."""
    xn, yn = camera.pixels_to_normalised(uv)
    return np.stack([camera.fx * xn + camera.cx, camera.fy * yn + camera.cy], axis=1)


def _apply(tf: Transform, points: npt.ArrayLike) -> F64:
    return np.asarray(tf.apply(np.asarray(points, dtype=np.float64)), dtype=np.float64)


def calibrate_lidar_camera_target(
    camera: CameraModel,
    corner_views: Sequence[F64 | None],
    lidar_views: Sequence[npt.ArrayLike | None],
    board: BoardTarget,
    initial_cam_from_lidar: Transform,
    *,
    lidar_rings: Sequence[npt.ArrayLike | None] | None = None,
    azimuth_step_rad: float | None = None,
    crop_margin_m: float = 0.3,
    sigma_plane_m: float = 0.02,
    sigma_edge_m: float = 0.02,
    min_views: int = 4,
    sensor: str = "camera",
    lidar: str = "lidar",
) -> TargetExtrinsicEstimate:
    """``cam_from_lidar`` from views of the board seen by ``camera`` and the LiDAR at once.

    ``corner_views[i]``: the view's corners (``detect_checkerboard``; ``None`` if not found);
    ``lidar_views[i]``: the sweep (N, 3) in the LiDAR frame (``None`` if missing);
    ``lidar_rings[i]``: its ring numbers (enables the edge constraints). The board is located in
    each sweep from ``initial_cam_from_lidar`` (crop to the board's outline grown by
    ``crop_margin_m``), so the initial guess must be within a fraction of that margin. Residuals
    are weighted by ``sigma_plane_m``/``sigma_edge_m``. Raises ``CalibrationError`` for
    mismatched inputs or fewer than ``min_views`` usable views (and says why each was dropped).
    """
    if len(corner_views) != len(lidar_views):
        raise CalibrationError(
            f"calibrate_lidar_camera_target ({sensor}): {len(corner_views)} corner views but "
            f"{len(lidar_views)} LiDAR views; they must pair up"
        )
    if lidar_rings is not None and len(lidar_rings) != len(lidar_views):
        raise CalibrationError(
            f"calibrate_lidar_camera_target ({sensor}): {len(lidar_rings)} ring arrays for {len(lidar_views)} views"
        )
    obj = board.object_points()
    n_corners = obj.shape[0]
    _check_views(corner_views, n_corners, f"calibrate_lidar_camera_target ({sensor})")
    x0, x1, y0, y1 = board.outline_m
    board_from_lidar0 = initial_cam_from_lidar
    per_view: list[dict[str, Any]] = []
    views: list[tuple[Transform, F64, F64]] = []  # cam_from_board, board points (lidar), edges
    for i, (uv, pts) in enumerate(zip(corner_views, lidar_views, strict=True)):
        rec: dict[str, Any] = {"view": i, "used": False}
        per_view.append(rec)
        if uv is None:
            rec["reason"] = "board not detected in the image"
            continue
        if pts is None:
            rec["reason"] = "no LiDAR sweep"
            continue
        p = np.asarray(pts, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise CalibrationError(
                f"calibrate_lidar_camera_target ({lidar}): view {i} points must be (N, 3), got {p.shape}"
            )
        finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(p).all(axis=1))
        uvd = np.asarray(uv, dtype=np.float64)
        if camera.distortion == "fisheye":
            c_from_b = _board_pose_pnp(
                CameraModel(camera.K, camera.width, camera.height),
                obj,
                _undistort_for_pnp(camera, uvd),
            )
        else:
            c_from_b = _board_pose_pnp(camera, obj, uvd)
        proj, _d, _ok = camera.project(_apply(c_from_b, obj))
        rec["pnp_rms_px"] = float(np.sqrt(np.mean(np.sum((proj - uvd) ** 2, axis=1))))
        b_from_l = c_from_b.inverse() @ board_from_lidar0
        loc = _apply(b_from_l, np.where(finite[:, None], p, 0.0))
        m = crop_margin_m
        crop = (
            finite
            & (np.abs(loc[:, 2]) < m)
            & (loc[:, 0] > x0 - m) & (loc[:, 0] < x1 + m)
            & (loc[:, 1] > y0 - m) & (loc[:, 1] < y1 + m)
        )  # fmt: skip
        rings_i = None
        if lidar_rings is not None and lidar_rings[i] is not None:
            r_all = np.asarray(lidar_rings[i])
            if r_all.shape != (p.shape[0],):
                raise CalibrationError(
                    f"calibrate_lidar_camera_target ({lidar}): view {i} ring must have shape ({p.shape[0]},), got {r_all.shape}"
                )
            rings_i = r_all[crop]
        plane = board_plane_from_lidar(
            p[crop], ring=rings_i, azimuth_step_rad=azimuth_step_rad, seed=i
        )
        if plane is None:
            rec["reason"] = (
                f"no board plane among {int(np.count_nonzero(crop))} LiDAR returns near the board"
            )
            continue
        rec.update(used=True, n_points=plane.n_inliers, plane_rms_m=plane.rms_m, reason="")
        views.append((c_from_b, p[crop][plane.inliers], plane.edge_points))
    if len(views) < min_views:
        raise CalibrationError(
            f"calibrate_lidar_camera_target ({sensor}): {len(views)} usable views of {len(per_view)}, "
            f"need {min_views}: "
            + "; ".join(f"view {r['view']}: {r['reason']}" for r in per_view if not r["used"])
        )

    def residuals(
        tf: Transform, with_edges: bool, sides: list[npt.NDArray[np.int64]] | None
    ) -> list[tuple[F64, F64]]:
        """Per view: (residual vector, Jacobian (n, 6)) w.r.t. a left perturbation of cam_from_lidar."""
        out = []
        for k, (c_from_b, pts, edges) in enumerate(views):
            rb, tb = c_from_b.rotation, c_from_b.translation
            q = _apply(tf, pts)  # camera frame
            n_c = rb[:, 2]
            r_pl = (q - tb) @ n_c / sigma_plane_m
            # d/dδ of n·(exp(δθ) q + δt): n·(-[q]x δθ) + n·δt = (q × n)·δθ + n·δt
            j_pl = (
                np.concatenate([np.cross(q, n_c), np.broadcast_to(n_c, q.shape)], axis=1)
                / sigma_plane_m
            )
            r, j = [r_pl], [j_pl]
            if with_edges and sides is not None and edges.shape[0]:
                qe = _apply(tf, edges)
                loc = (qe - tb) @ rb
                s = sides[k]
                use = s >= 0
                axis = np.where(s < 2, 0, 1)
                target = np.array([x0, x1, y0, y1])[np.maximum(s, 0)]
                val = loc[np.arange(loc.shape[0]), axis] - target
                dirs = rb[:, axis].T  # camera-frame direction of the board axis per point
                je = np.concatenate([np.cross(qe, dirs), dirs], axis=1) / sigma_edge_m
                r.append((val / sigma_edge_m)[use])
                j.append(je[use])
            out.append((np.concatenate(r), np.concatenate(j)))
        return out

    def solve(
        tf: Transform, with_edges: bool, sides: list[npt.NDArray[np.int64]] | None
    ) -> Transform:
        for _ in range(20):
            parts = residuals(tf, with_edges, sides)
            jtj = sum(jj.T @ jj for _, jj in parts)
            jtr = sum(jj.T @ rr for rr, jj in parts)
            try:
                delta = -np.linalg.solve(jtj, jtr)
            except np.linalg.LinAlgError:
                raise CalibrationError(
                    f"calibrate_lidar_camera_target ({sensor}): the board views do not constrain all "
                    "six degrees of freedom (vary the board's tilt)"
                ) from None
            tf = Transform.from_rotvec(delta[:3], delta[3:]) @ tf
            if np.linalg.norm(delta) < 1e-10:
                break
        return tf

    tf = solve(initial_cam_from_lidar, False, None)
    sides: list[npt.NDArray[np.int64]] = []
    for c_from_b, _pts, edges in views:
        if edges.shape[0] == 0:
            sides.append(np.zeros(0, dtype=np.int64))
            continue
        loc = _apply(c_from_b.inverse() @ tf, edges)
        dist = np.abs(
            np.stack([loc[:, 0] - x0, loc[:, 0] - x1, loc[:, 1] - y0, loc[:, 1] - y1], axis=1)
        )
        order = np.sort(dist, axis=1)
        s = np.argmin(dist, axis=1).astype(np.int64)
        s[
            (order[:, 1] - order[:, 0] < 0.05) | (order[:, 0] > 0.1)
        ] = -1  # near a corner, or far off
        sides.append(s)
    with_edges = any(np.any(s >= 0) for s in sides)
    if with_edges:
        tf = solve(tf, True, sides)
    parts = residuals(tf, with_edges, sides)
    jtj = sum(jj.T @ jj for _, jj in parts)
    m_total = sum(rr.size for rr, _ in parts)
    inv = np.linalg.inv(jtj)
    meat = sum(np.outer(jj.T @ rr, jj.T @ rr) for rr, jj in parts)
    g = len(parts)
    cov_sandwich = inv @ meat @ inv * g / max(g - 1, 1)
    chi2 = sum(float(rr @ rr) for rr, _ in parts) / max(m_total - 6, 1)
    cov = np.maximum(np.diag(cov_sandwich), np.diag(inv) * chi2)
    n_pl = sum(v[1].shape[0] for v in views)
    pl_res = np.concatenate([rr[: v[1].shape[0]] for (rr, _), v in zip(parts, views, strict=True)])
    ed_res = np.concatenate([rr[v[1].shape[0] :] for (rr, _), v in zip(parts, views, strict=True)])
    return TargetExtrinsicEstimate(
        sensor=sensor,
        lidar=lidar,
        cam_from_lidar=tf,
        std_rotation_deg=np.degrees(np.sqrt(cov[:3])),
        std_translation_m=np.sqrt(cov[3:]),
        rms_plane_m=float(np.sqrt(np.mean(pl_res**2))) * sigma_plane_m,
        rms_edge_m=float(np.sqrt(np.mean(ed_res**2))) * sigma_edge_m
        if ed_res.size
        else float("nan"),
        n_views=len(views),
        n_points=n_pl,
        n_edge_points=int(ed_res.size),
        per_view=tuple(per_view),
    )
