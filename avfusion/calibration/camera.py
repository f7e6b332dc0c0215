"""Camera models: pinhole, OpenCV radial-tangential and OpenCV fisheye (equidistant).

Camera frame: x right, y down, z forward (optical axis). Pixel coordinates follow OpenCV: the
centre of the top-left pixel is (0, 0), so the image covers u in [-0.5, width - 0.5) and
v in [-0.5, height - 0.5); the pixel holding (u, v) is (round(v), round(u)).

``depth_m`` is always the z coordinate in the camera frame (distance along the optical axis),
as in nuScenes depth maps and the devkit's ``map_pointcloud_to_image``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from avfusion.errors import CalibrationError

__all__ = ["CameraModel", "DistortionModel"]

DistortionModel = Literal["none", "radtan", "fisheye"]
_N_COEFFS: dict[str, int] = {"none": 0, "radtan": 8, "fisheye": 4}
_NEWTON_ITERATIONS = 30

F64 = npt.NDArray[np.float64]


def _readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics, distortion and image size of one camera.

    ``coeffs`` holds, for ``radtan``, OpenCV's (k1, k2, p1, p2, k3, k4, k5, k6) (shorter
    4- or 5-element vectors are zero-padded), for ``fisheye`` OpenCV's (k1, k2, k3, k4), and
    nothing for ``none``. ``K[0, 1]`` is the skew term (0 for almost every real camera).
    """

    K: F64
    width: int
    height: int
    distortion: DistortionModel = "none"
    coeffs: F64 = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        k = np.array(self.K, dtype=np.float64)
        if k.shape != (3, 3):
            raise CalibrationError(f"CameraModel: K must be 3x3, got shape {k.shape}")
        if not np.all(np.isfinite(k)):
            raise CalibrationError(f"CameraModel: K has non-finite entries: {k.tolist()}")
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise CalibrationError(
                f"CameraModel: focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}"
            )
        if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0.0:
            raise CalibrationError(
                f"CameraModel: K must be upper triangular with K[2] = (0, 0, 1), got {k.tolist()}"
            )
        if (
            int(self.width) != self.width
            or int(self.height) != self.height
            or self.width <= 0
            or self.height <= 0
        ):
            raise CalibrationError(
                f"CameraModel: image size must be positive integers, got {self.width}x{self.height}"
            )
        if self.distortion not in _N_COEFFS:
            raise CalibrationError(
                f"CameraModel: unknown distortion model '{self.distortion}' (expected one of {sorted(_N_COEFFS)})"
            )
        c = np.array(self.coeffs, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(c)):
            raise CalibrationError(
                f"CameraModel: distortion coefficients are not finite: {c.tolist()}"
            )
        if self.distortion == "radtan":
            if c.size not in (4, 5, 8):
                raise CalibrationError(
                    f"CameraModel: radtan takes 4, 5 or 8 OpenCV coefficients (k1, k2, p1, p2[, k3[, k4, k5, k6]]), got {c.size}"
                )
            c = np.concatenate([c, np.zeros(8 - c.size)])
        elif c.size != _N_COEFFS[self.distortion]:
            raise CalibrationError(
                f"CameraModel: '{self.distortion}' takes {_N_COEFFS[self.distortion]} coefficients, got {c.size}"
            )
        object.__setattr__(self, "K", _readonly(k))
        object.__setattr__(self, "coeffs", _readonly(c))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "_valid_limit", self._monotonic_limit())

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def pinhole(
        cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int
    ) -> CameraModel:
        return cls(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), width, height)

    @classmethod
    def radtan(
        cls, K: npt.ArrayLike, dist_coeffs: npt.ArrayLike, width: int, height: int
    ) -> CameraModel:
        """OpenCV model; ``dist_coeffs`` in OpenCV order (k1, k2, p1, p2[, k3[, k4, k5, k6]])."""
        return cls(
            np.asarray(K, dtype=np.float64),
            width,
            height,
            "radtan",
            np.asarray(dist_coeffs, dtype=np.float64),
        )

    @classmethod
    def fisheye(
        cls, K: npt.ArrayLike, k1_k4: npt.ArrayLike, width: int, height: int
    ) -> CameraModel:
        """OpenCV equidistant fisheye model (``cv2.fisheye``)."""
        return cls(
            np.asarray(K, dtype=np.float64),
            width,
            height,
            "fisheye",
            np.asarray(k1_k4, dtype=np.float64),
        )

    # -- properties --------------------------------------------------------------------------
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    def opencv_distortion(self) -> F64:
        """Coefficients in the order ``cv2.projectPoints`` / ``cv2.fisheye`` expect."""
        if self.distortion == "radtan":
            return self.coeffs.copy()
        if self.distortion == "fisheye":
            return self.coeffs.copy()
        return np.zeros(5)

    def scaled(self, scale_x: float, scale_y: float | None = None) -> CameraModel:
        """The same camera for an image resized by (scale_x, scale_y); distortion unchanged."""
        sy = scale_x if scale_y is None else scale_y
        k = self.K.copy()
        # Pixel centres: u' + 0.5 = s (u + 0.5)
        k[0, :] *= scale_x
        k[1, :] *= sy
        k[0, 2] += 0.5 * scale_x - 0.5
        k[1, 2] += 0.5 * sy - 0.5
        k[2] = (0.0, 0.0, 1.0)
        return CameraModel(
            k,
            round(self.width * scale_x),
            round(self.height * sy),
            self.distortion,
            self.coeffs.copy(),
        )

    # -- distortion in normalised coordinates --------------------------------------------------
    def _radtan_parts(self, x: F64, y: F64) -> tuple[F64, F64, F64, F64]:
        k1, k2, p1, p2, k3, k4, k5, k6 = self.coeffs
        r2 = x * x + y * y
        num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
        radial = num / den
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return xd, yd, radial, r2

    def _fisheye_theta_d(self, theta: F64) -> F64:
        k1, k2, k3, k4 = self.coeffs
        t2 = theta * theta
        return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))

    def _monotonic_limit(self) -> float:
        """Largest normalised radius (radtan) or angle (fisheye) up to which distortion is monotonic.

        Beyond it a polynomial model folds back and would map far off-axis points into the
        image; such points are reported as not in the image.
        """
        if self.distortion == "none":
            return np.inf
        if self.distortion == "radtan":
            r = np.linspace(0.0, 20.0, 40001)
            k1, k2, _, _, k3, k4, k5, k6 = self.coeffs
            r2 = r * r
            rd = r * (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        else:
            r = np.linspace(0.0, np.pi / 2, 40001)
            rd = self._fisheye_theta_d(r)
        bad = np.flatnonzero((np.diff(rd) <= 0) | ~np.isfinite(rd[1:]))
        return (
            float(r[bad[0]])
            if bad.size
            else float(r[-1])
            if self.distortion == "fisheye"
            else np.inf
        )

    def distort_normalised(self, x: F64, y: F64) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
        """Apply the lens model to ideal normalised coordinates (x/z, y/z).

        Returns distorted normalised coordinates and a mask of points inside the range where the
        model is monotonic (see ``_monotonic_limit``).
        """
        limit: float = self._valid_limit  # type: ignore[attr-defined]
        if self.distortion == "none":
            return x, y, np.isfinite(x) & np.isfinite(y)
        if self.distortion == "radtan":
            xd, yd, _, r2 = self._radtan_parts(x, y)
            return xd, yd, np.sqrt(r2) < limit
        r = np.sqrt(x * x + y * y)
        theta = np.arctan(r)
        theta_d = self._fisheye_theta_d(theta)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(r > 1e-12, theta_d / np.where(r > 1e-12, r, 1.0), 1.0)
        return x * scale, y * scale, theta < limit

    def undistort_normalised(self, xd: F64, yd: F64) -> tuple[F64, F64]:
        """Invert ``distort_normalised`` by Newton's method (to ~1e-14 in normalised units)."""
        xd = np.asarray(xd, dtype=np.float64)
        yd = np.asarray(yd, dtype=np.float64)
        if self.distortion == "none":
            return xd.copy(), yd.copy()
        if self.distortion == "fisheye":
            k1, k2, k3, k4 = self.coeffs
            theta_d = np.sqrt(xd * xd + yd * yd)
            theta = theta_d.copy()
            for _ in range(_NEWTON_ITERATIONS):
                t2 = theta * theta
                f = self._fisheye_theta_d(theta) - theta_d
                df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
                theta = theta - f / df
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(
                    theta_d > 1e-12, np.tan(theta) / np.where(theta_d > 1e-12, theta_d, 1.0), 1.0
                )
            return xd * scale, yd * scale
        k1, k2, p1, p2, k3, k4, k5, k6 = self.coeffs
        x = xd.copy()
        y = yd.copy()
        for _ in range(_NEWTON_ITERATIONS):
            fx_, fy_, radial, r2 = self._radtan_parts(x, y)
            num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
            dnum = k1 + r2 * (2 * k2 + r2 * 3 * k3)
            dden = k4 + r2 * (2 * k5 + r2 * 3 * k6)
            drad = (dnum * den - num * dden) / (den * den)  # d radial / d r²
            j00 = radial + 2 * x * x * drad + 2 * p1 * y + 6 * p2 * x
            j01 = 2 * x * y * drad + 2 * p1 * x + 2 * p2 * y
            j10 = 2 * x * y * drad + 2 * p1 * x + 2 * p2 * y
            j11 = radial + 2 * y * y * drad + 6 * p1 * y + 2 * p2 * x
            ex = fx_ - xd
            ey = fy_ - yd
            det = j00 * j11 - j01 * j10
            with np.errstate(invalid="ignore", divide="ignore"):
                x = x - (j11 * ex - j01 * ey) / det
                y = y - (-j10 * ex + j00 * ey) / det
        return x, y

    # -- projection ----------------------------------------------------------------------------
    def project(
        self, points_cam: npt.ArrayLike, min_depth_m: float = 1e-6
    ) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
        """Project camera-frame points (N, 3) to pixels.

        Returns ``(uv_px (N, 2), depth_m (N,), in_image (N,))`` aligned with the input. Points at
        depth <= ``min_depth_m`` (behind the camera) are kept, flagged False, and get NaN pixel
        coordinates; so do non-finite points. The input is not modified.
        """
        p = np.asarray(points_cam)
        if p.ndim != 2 or p.shape[1] != 3:
            raise CalibrationError(
                f"CameraModel.project: points must have shape (N, 3), got {p.shape}"
            )
        if p.dtype not in (np.float32, np.float64):
            raise CalibrationError(
                f"CameraModel.project: points must be float32 or float64, got {p.dtype}"
            )
        p = p.astype(np.float64, copy=False)
        depth = p[:, 2].copy()
        in_front = np.isfinite(p).all(axis=1) & (depth > min_depth_m)
        safe_z = np.where(in_front, depth, 1.0)
        x = np.where(in_front, p[:, 0] / safe_z, 0.0)
        y = np.where(in_front, p[:, 1] / safe_z, 0.0)
        xd, yd, in_model = self.distort_normalised(x, y)
        u = self.K[0, 0] * xd + self.K[0, 1] * yd + self.K[0, 2]
        v = self.K[1, 1] * yd + self.K[1, 2]
        uv = np.stack([u, v], axis=1)
        uv[~in_front] = np.nan
        inside = (
            in_front
            & in_model
            & (uv[:, 0] >= -0.5)
            & (uv[:, 0] < self.width - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] < self.height - 0.5)
        )
        return uv, depth, inside

    def pixels_to_normalised(self, uv_px: npt.ArrayLike) -> tuple[F64, F64]:
        """Ideal (undistorted) normalised coordinates (x/z, y/z) for pixels (N, 2)."""
        uv = np.asarray(uv_px, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise CalibrationError(
                f"CameraModel: pixel coordinates must have shape (N, 2), got {uv.shape}"
            )
        yd = (uv[:, 1] - self.K[1, 2]) / self.K[1, 1]
        xd = (uv[:, 0] - self.K[0, 2] - self.K[0, 1] * yd) / self.K[0, 0]
        return self.undistort_normalised(xd, yd)

    def unproject(self, uv_px: npt.ArrayLike, depth_m: npt.ArrayLike) -> F64:
        """Camera-frame points (N, 3) at z = ``depth_m`` seen at pixels ``uv_px`` (N, 2)."""
        x, y = self.pixels_to_normalised(uv_px)
        d = np.asarray(depth_m, dtype=np.float64).reshape(-1)
        if d.size != x.size:
            raise CalibrationError(f"CameraModel.unproject: {x.size} pixels but {d.size} depths")
        return np.stack([x * d, y * d, d], axis=1)

    def rays(self, uv_px: npt.ArrayLike) -> F64:
        """Unit viewing rays (N, 3) in the camera frame through pixels ``uv_px``."""
        x, y = self.pixels_to_normalised(uv_px)
        r = np.stack([x, y, np.ones_like(x)], axis=1)
        return r / np.linalg.norm(r, axis=1, keepdims=True)

    # -- undistortion --------------------------------------------------------------------------
    def undistort_points(self, uv_px: npt.ArrayLike, new_K: npt.ArrayLike | None = None) -> F64:
        """Pixels of the distorted image mapped into an ideal pinhole image with ``new_K`` (default K)."""
        x, y = self.pixels_to_normalised(uv_px)
        k = self.K if new_K is None else np.asarray(new_K, dtype=np.float64)
        return np.stack([k[0, 0] * x + k[0, 1] * y + k[0, 2], k[1, 1] * y + k[1, 2]], axis=1)

    def undistortion_maps(
        self, new_K: npt.ArrayLike | None = None, size: tuple[int, int] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """``cv2.remap`` maps from an ideal pinhole image (``new_K``, ``size`` = (w, h)) to this image.

        Built from this model's own ``project`` so undistortion can never disagree with projection.
        Pixels whose ray this lens cannot see map to -1 (outside the source image).
        """
        k = self.K if new_K is None else np.asarray(new_K, dtype=np.float64)
        w, h = size if size is not None else (self.width, self.height)
        us, vs = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        y = (vs.ravel() - k[1, 2]) / k[1, 1]
        x = (us.ravel() - k[0, 2] - k[0, 1] * y) / k[0, 0]
        xd, yd, ok = self.distort_normalised(x, y)
        u = self.K[0, 0] * xd + self.K[0, 1] * yd + self.K[0, 2]
        v = self.K[1, 1] * yd + self.K[1, 2]
        u[~ok] = -1.0
        v[~ok] = -1.0
        return u.reshape(h, w).astype(np.float32), v.reshape(h, w).astype(np.float32)

    def undistort_image(
        self,
        image: npt.NDArray[Any],
        new_K: npt.ArrayLike | None = None,
        size: tuple[int, int] | None = None,
    ) -> npt.NDArray[Any]:
        """The image as an ideal pinhole camera with ``new_K`` would see it (bilinear resampling)."""
        import cv2

        img = np.asarray(image)
        if img.shape[:2] != (self.height, self.width):
            raise CalibrationError(
                f"CameraModel.undistort_image: image is {img.shape[1]}x{img.shape[0]}, camera is {self.width}x{self.height}"
            )
        map_u, map_v = self.undistortion_maps(new_K, size)
        return cv2.remap(
            img, map_u, map_v, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )

    def __repr__(self) -> str:
        return (
            f"CameraModel({self.width}x{self.height}, fx={self.fx:.2f}, fy={self.fy:.2f}, "
            f"cx={self.cx:.2f}, cy={self.cy:.2f}, {self.distortion}{'' if not self.coeffs.size else ' ' + str(np.round(self.coeffs, 5).tolist())})"
        )
