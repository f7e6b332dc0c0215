"""Does projected LiDAR land on image structure? Edge alignment of depth discontinuities.

The idea (Levinson & Thrun, "Automatic online calibration of cameras and lasers", RSS 2013):
where the depth seen by the LiDAR jumps (the silhouette of a pole, a car, a wall corner), the
camera image almost always has an intensity edge. Projected with the right calibration, the
foreground points of those depth jumps fall on image edges; with a wrong one they drift off.

Two steps, so the expensive part is done once and the cheap part can run thousands of times
(calibration refinement, clock-offset search):

1. ``EdgeImage.from_image(pixels)``: Canny edges of the image and their distance transform
   (distance in pixels from every pixel to the nearest edge, clipped at ``max_distance_px``).
   Build it once per image.
2. ``depth_edges(points_cam, camera)``: which points are the near side of a depth jump, found in
   the image: a point is a depth edge when a neighbour within a small window (wide, short: the
   points of one scan line) is farther by more than ``max(min_jump_m, rel_jump · depth)``.
   Select once at a nominal calibration; the selection barely changes under small perturbations.
   Then, for every candidate, project just those points and call ``EdgeImage.score(uv_px)``,
   which samples the distance image (bilinear) and is fully vectorised; ``score_many`` takes a
   batch of candidates at once.

``edge_alignment`` does both for one calibration and also scores the same points shifted by
``baseline_shift_px`` in eight directions: ``ratio`` = mean distance / mean distance of the
shifted points, < 1 when the projection sits on edges better than a deliberately wrong one.

Over a log (the miscalibration check; refinement lives in ``extrinsics.py``):

* ``prepare_alignment(log, sensor)``: for several images of a camera or thermal camera, the
  LiDAR depth edges of the nearest sweep(s), each point placed in the world at its own firing
  time (per-point times) and seen from the camera pose at its capture time (its clock offset
  applied), moving objects rejected by comparing neighbouring sweeps; plus each image's edge
  distance map (uint8, 1/8 px). The result (``AlignmentData``) holds the points in the camera
  frame of the current calibration, so a candidate correction is one rigid transform.
* ``alignment_costs(data, deltas)``: the truncated edge distance of every frame for a batch of
  6-DoF corrections (vectorised); ``local_optimum`` the best correction nearby (bounded Powell,
  coarse to fine) with a sandwich covariance from the frame-to-frame scatter.
* ``frame_check``: per frame, whether a better rotation exists within ±0.5° (windowed over
  consecutive frames); ``check_sensor`` / ``check_calibration``: per-frame flags plus the
  log-wide best nearby extrinsic, its direction and distance, and an ``ok`` verdict.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.errors import CalibrationError, ConfigError

__all__ = [
    "CHECK_THERMAL_BLUR_PX",
    "AlignmentData",
    "AlignmentSettings",
    "DepthEdges",
    "EdgeAlignment",
    "EdgeImage",
    "EdgeScore",
    "LocalOptimum",
    "SensorCheck",
    "alignment_costs",
    "check_calibration",
    "check_sensor",
    "check_settings",
    "depth_edges",
    "edge_alignment",
    "edge_distance_image",
    "edge_map",
    "frame_check",
    "json_floats",
    "local_optimum",
    "prepare_alignment",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


def _grey(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    import cv2

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    if img.ndim != 2:
        raise CalibrationError(f"EdgeImage: expected an H×W or H×W×3 image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16 or np.issubdtype(img.dtype, np.floating):
        f = img.astype(np.float64)
        lo, hi = np.nanpercentile(f, [1.0, 99.0])
        scaled = np.clip((f - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * 255.0
        return np.nan_to_num(scaled).astype(np.uint8)
    raise CalibrationError(f"EdgeImage: unsupported pixel type {img.dtype}")


def _grey_float(pixels: npt.NDArray[Any], what: str) -> npt.NDArray[np.float32]:
    """A float32 grey image: colour as luminance, grey and 16-bit radiometric counts as they are."""
    import cv2

    img = np.asarray(pixels)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        rgb = np.ascontiguousarray(img[..., :3])
        if rgb.dtype != np.uint8:
            rgb = rgb.astype(np.float32)
        grey: npt.NDArray[Any] = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return np.asarray(grey, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise CalibrationError(
            f"{what}: expected an H×W grey, H×W×3 colour or H×W 16-bit image, got shape {img.shape}"
        )
    return np.ascontiguousarray(img, dtype=np.float32)


def edge_map(
    pixels: npt.NDArray[Any],
    *,
    blur_sigma_px: float = 1.2,
    low_snr: float = 6.0,
    high_snr: float = 12.0,
    what: str = "image",
) -> npt.NDArray[np.uint8]:
    """Canny edges (uint8 0/255, H×W) with thresholds relative to the image's own noise.

    Works the same on 8-bit colour or grey and on 16-bit radiometric thermal images: the image
    is blurred (``blur_sigma_px``), its Sobel gradients are computed in float, the gradient
    noise is estimated robustly (1.4826 × median |gradient component|, i.e. from the flat
    majority of the image) and hysteresis keeps edges whose gradient exceeds ``high_snr`` ×
    noise, grown down to ``low_snr`` × noise. So a thermal image's few kelvin between road,
    cars and walls are found next to a 50 K colder sky, while its column pattern and NETD are not.
    """
    import cv2

    if not 0 < low_snr <= high_snr:
        raise CalibrationError(
            f"{what}: edge thresholds need 0 < low_snr <= high_snr, got {low_snr}, {high_snr}"
        )
    grey: npt.NDArray[Any] = _grey_float(pixels, what)
    if blur_sigma_px > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), blur_sigma_px)
    dx: npt.NDArray[Any] = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    dy: npt.NDArray[Any] = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    # Robust noise level from a regular subsample (every 3rd row and column) of both components.
    sample = np.abs(np.concatenate([dx[::3, ::3].ravel(), dy[::3, ::3].ravel()]))
    noise = 1.4826 * float(np.median(sample))
    peak = max(max(abs(v) for v in cv2.minMaxLoc(g)[:2]) for g in (dx, dy))
    if peak <= 0:
        return np.zeros(grey.shape, np.uint8)
    noise = max(noise, 1e-6 * peak)
    # cv2.Canny takes int16 gradients: scale so the noise is >= 8 units where the range allows.
    scale = min(8.0 / noise, 32000.0 / peak)
    gx = cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3, scale=scale)
    gy = cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3, scale=scale)
    edges: npt.NDArray[Any] = cv2.Canny(
        gx, gy, low_snr * noise * scale, high_snr * noise * scale, L2gradient=True
    )
    return edges


def edge_distance_image(
    pixels: npt.NDArray[Any],
    *,
    blur_sigma_px: float = 1.2,
    low_snr: float = 6.0,
    high_snr: float = 12.0,
    what: str = "image",
) -> npt.NDArray[np.float32]:
    """Distance (pixels, float32 H×W) from every pixel centre to the nearest ``edge_map`` edge
    (the image diagonal where the image has no edge at all)."""
    import cv2

    edges = edge_map(
        pixels, blur_sigma_px=blur_sigma_px, low_snr=low_snr, high_snr=high_snr, what=what
    )
    if not np.any(edges):
        return np.full(edges.shape, np.float32(np.hypot(*edges.shape)), dtype=np.float32)
    dist: npt.NDArray[Any] = cv2.distanceTransform(
        cv2.bitwise_not(edges), cv2.DIST_L2, cv2.DIST_MASK_5
    )
    return dist


def json_floats(a: npt.ArrayLike) -> list[float | None]:
    """The values of ``a`` as a JSON-ready list: floats, None where not finite."""
    return [
        float(x) if np.isfinite(x) else None
        for x in np.asarray(a, dtype=np.float64).reshape(-1).tolist()
    ]


@dataclass(frozen=True)
class EdgeScore:
    """Distance (px) from projected points to the nearest image edge, clipped at the image's
    ``max_distance_px``. ``n_points`` counts the points inside the image that were scored."""

    mean_px: float
    median_px: float
    within_2px: float  # fraction of scored points at most 2 px from an edge
    n_points: int


@dataclass(frozen=True, eq=False)
class EdgeImage:
    """Canny edges of one image and the distance transform to them (build once, score often).

    ``distance_px`` (H, W) float32: Euclidean distance from each pixel centre to the nearest edge
    pixel, clipped at ``max_distance_px``. ``edges`` (H, W) uint8 0/255.
    """

    distance_px: npt.NDArray[np.float32]
    edges: npt.NDArray[np.uint8]
    max_distance_px: float

    def __post_init__(self) -> None:
        d = self.distance_px
        if not isinstance(d, np.ndarray) or d.ndim != 2 or d.dtype != np.float32:
            raise CalibrationError("EdgeImage: distance_px must be an H×W float32 array")
        if self.edges.shape != d.shape:
            raise CalibrationError(
                f"EdgeImage: edges {self.edges.shape} and distances {d.shape} differ in shape"
            )
        if not self.max_distance_px > 0:
            raise CalibrationError(
                f"EdgeImage: max_distance_px must be > 0, got {self.max_distance_px}"
            )

    @classmethod
    def from_image(
        cls,
        image: npt.NDArray[Any],
        *,
        blur_sigma_px: float = 1.0,
        edge_percentile: float = 90.0,
        low_ratio: float = 0.4,
        high_threshold: float | None = None,
        max_distance_px: float = 20.0,
        thresholds: Literal["percentile", "noise"] = "percentile",
        low_snr: float = 6.0,
        high_snr: float = 12.0,
    ) -> EdgeImage:
        """Edges of a colour (RGB), grey or 16-bit image.

        Canny on the image blurred with ``blur_sigma_px`` (0: no blur). With ``thresholds=
        "percentile"`` its high threshold is the ``edge_percentile`` percentile of the gradient
        magnitude (Sobel, L2), so every image gets a comparable share of edge pixels whatever
        its contrast, unless ``high_threshold`` is given; the low threshold is ``low_ratio`` ×
        the high one. With ``thresholds="noise"`` the thresholds are ``low_snr`` / ``high_snr``
        × the image's own gradient noise (``edge_map``, used by the clock-offset estimator).
        The percentile thresholds align LiDAR edges better on the synthetic colour and thermal
        cameras (lower false-alarm rate at the same recall in the calibration check).
        """
        import cv2

        if thresholds == "noise":
            if not max_distance_px > 0:
                raise CalibrationError(
                    f"EdgeImage: max_distance_px must be > 0, got {max_distance_px}"
                )
            noise_edges = edge_map(
                image, blur_sigma_px=blur_sigma_px, low_snr=low_snr, high_snr=high_snr
            )
            if not noise_edges.any():
                far = np.full(noise_edges.shape, max_distance_px, dtype=np.float32)
                return cls(far, noise_edges, float(max_distance_px))
            d = cv2.distanceTransform(
                cv2.bitwise_not(noise_edges), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
            )
            np.minimum(d, np.float32(max_distance_px), out=d)
            return cls(d.astype(np.float32, copy=False), noise_edges, float(max_distance_px))
        if thresholds != "percentile":
            raise CalibrationError(
                f"EdgeImage: thresholds must be 'percentile' or 'noise', got {thresholds!r}"
            )

        if blur_sigma_px < 0:
            raise CalibrationError(f"EdgeImage: blur_sigma_px must be >= 0, got {blur_sigma_px}")
        if not 0 < edge_percentile < 100 or not 0 < low_ratio <= 1:
            raise CalibrationError(
                f"EdgeImage: need 0 < edge_percentile < 100 and 0 < low_ratio <= 1, got {edge_percentile}, {low_ratio}"
            )
        if not max_distance_px > 0:
            raise CalibrationError(f"EdgeImage: max_distance_px must be > 0, got {max_distance_px}")
        grey: npt.NDArray[Any] = _grey(image)
        if blur_sigma_px > 0:
            grey = cv2.GaussianBlur(grey, (0, 0), blur_sigma_px)
        if high_threshold is None:
            gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
            gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
            magnitude = np.hypot(gx, gy)
            high = float(np.percentile(magnitude, edge_percentile))
            if high <= 0 and magnitude.any():  # mostly flat (synthetic) image: its textured part
                high = float(np.percentile(magnitude[magnitude > 0], edge_percentile))
            high = min(high, 0.9 * float(magnitude.max()))  # the strongest edges always seed
        else:
            high = float(high_threshold)
        edges: npt.NDArray[Any] = np.zeros(grey.shape, np.uint8)
        if high > 0:
            edges = cv2.Canny(grey, low_ratio * high, high, L2gradient=True)
        dist: npt.NDArray[Any]
        if not edges.any():
            logger.info("EdgeImage: no edges found; every distance is max_distance_px")
            dist = np.full(grey.shape, max_distance_px, dtype=np.float32)
        else:
            dist = cv2.distanceTransform(
                np.where(edges > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
            )
            np.minimum(dist, np.float32(max_distance_px), out=dist)
        return cls(dist.astype(np.float32, copy=False), edges, float(max_distance_px))

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.distance_px.shape
        return int(h), int(w)

    def sample(self, uv_px: npt.ArrayLike) -> tuple[F64, npt.NDArray[np.bool_]]:
        """Bilinear distance at pixel positions (..., 2) and whether each lies inside the image.

        Points outside (or NaN) get ``max_distance_px`` and False.
        """
        uv = np.asarray(uv_px, dtype=np.float64)
        if uv.shape[-1:] != (2,):
            raise CalibrationError(
                f"EdgeImage.sample: uv_px must have shape (..., 2), got {uv.shape}"
            )
        h, w = self.shape
        u, v = uv[..., 0], uv[..., 1]
        with np.errstate(invalid="ignore"):
            inside = (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
        uc = np.clip(np.where(inside, u, 0.0), 0.0, w - 1.0)
        vc = np.clip(np.where(inside, v, 0.0), 0.0, h - 1.0)
        u0 = np.minimum(np.floor(uc).astype(np.intp), w - 2 if w > 1 else 0)
        v0 = np.minimum(np.floor(vc).astype(np.intp), h - 2 if h > 1 else 0)
        u1 = np.minimum(u0 + 1, w - 1)
        v1 = np.minimum(v0 + 1, h - 1)
        fu = uc - u0
        fv = vc - v0
        d = self.distance_px
        out = (
            d[v0, u0] * (1 - fu) * (1 - fv)
            + d[v0, u1] * fu * (1 - fv)
            + d[v1, u0] * (1 - fu) * fv
            + d[v1, u1] * fu * fv
        )
        return np.where(inside, out, self.max_distance_px), inside

    def score(self, uv_px: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> EdgeScore:
        """Weighted mean, median and within-2-px fraction of the edge distance of the points
        inside the image (weights default to 1)."""
        uv = np.asarray(uv_px, dtype=np.float64).reshape(-1, 2)
        dist, inside = self.sample(uv)
        wts = np.ones(len(uv)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
        if wts.shape != (len(uv),):
            raise CalibrationError(f"EdgeImage.score: {len(uv)} points but {wts.size} weights")
        wts = np.where(inside, wts, 0.0)
        total = float(wts.sum())
        n = int(np.count_nonzero(inside & (wts > 0)))
        if total <= 0:
            return EdgeScore(float("nan"), float("nan"), float("nan"), 0)
        order = np.argsort(dist)
        cum = np.cumsum(wts[order])
        median = float(dist[order][np.searchsorted(cum, 0.5 * total)])
        return EdgeScore(
            float(np.dot(dist, wts) / total),
            median,
            float(wts[dist <= 2.0].sum() / total),
            n,
        )

    def score_many(self, uv_px: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> F64:
        """Mean clipped edge distance for a batch of candidates: ``uv_px`` (K, N, 2) → (K,).

        Points outside the image count as ``max_distance_px`` (so a candidate cannot win by
        pushing points out of view). ``weights`` (N,) or (K, N).
        """
        uv = np.asarray(uv_px, dtype=np.float64)
        if uv.ndim != 3 or uv.shape[2] != 2:
            raise CalibrationError(f"EdgeImage.score_many: uv_px must be (K, N, 2), got {uv.shape}")
        dist, _ = self.sample(uv)
        if weights is None:
            return np.asarray(dist.mean(axis=1), dtype=np.float64)
        wts = np.broadcast_to(np.asarray(weights, np.float64), dist.shape)
        return np.asarray((dist * wts).sum(axis=1) / np.maximum(wts.sum(axis=1), 1e-300))


@dataclass(frozen=True, eq=False)
class DepthEdges:
    """The depth-discontinuity points of a projected cloud.

    ``index`` (M,) into the input points, ``uv_px`` (M, 2), ``depth_m`` (M,), ``jump_m`` (M,)
    how much farther the farthest neighbour is, ``weights`` (M,) in (0, 1].
    """

    index: npt.NDArray[np.intp]
    uv_px: F64
    depth_m: F64
    jump_m: F64
    weights: F64

    def __len__(self) -> int:
        return int(self.index.size)


def depth_edges(
    points_cam: npt.ArrayLike,
    camera: CameraModel,
    *,
    scan_line: npt.ArrayLike | None = None,
    sensor_origin_cam: npt.ArrayLike | None = None,
    min_depth_m: float = 1.0,
    min_jump_m: float = 0.5,
    rel_jump: float = 0.1,
    max_gap_px: float = 25.0,
    solid: bool = True,
    smooth_rel: float = 0.03,
    smooth_min_m: float = 0.15,
) -> DepthEdges:
    """Points on the near side of a depth jump between scan neighbours (Levinson & Thrun).

    Neighbours are consecutive points of one scan line in input order: ``scan_line`` (N,)
    gives each point's line (e.g. the nuScenes ``ring``); without it the input order itself is
    the scan order (KITTI stores its scans line by line). Only points in front of the camera
    (depth > ``min_depth_m``) and inside the image take part, and two consecutive ones count as
    neighbours only when their projections are within ``max_gap_px`` of each other (which also
    cuts the wrap-around from one line to the next). A point is an edge when a neighbour's range
    (measured from ``sensor_origin_cam``, the LiDAR centre in the camera frame; default the
    camera centre) exceeds its own by more than ``max(min_jump_m, rel_jump · range)``.

    With ``solid`` only clean silhouettes are kept: the near surface continues on the point's
    other side and the far surface beyond the far neighbour (ranges within
    ``max(smooth_min_m, smooth_rel · range)``). Foliage, whose returns scatter in range, fails
    this; poles, cars and walls pass. Weights: ``min(1, jump / range)``.

    The selection is made in the image of the given calibration; for a calibration search,
    select once at the nominal calibration and re-project ``points[edges.index]`` per candidate.
    """
    p = np.asarray(points_cam)
    if p.ndim != 2 or p.shape[1] != 3:
        raise CalibrationError(f"depth_edges: points must have shape (N, 3), got {p.shape}")
    p = p.astype(np.float64, copy=False)
    origin = (
        np.zeros(3)
        if sensor_origin_cam is None
        else np.asarray(sensor_origin_cam, np.float64).reshape(3)
    )
    uv, depth, inside = camera.project(p)
    idx = np.flatnonzero(inside & (depth > min_depth_m))
    if scan_line is not None:
        lines = np.asarray(scan_line).reshape(-1)
        if lines.shape != (p.shape[0],):
            raise CalibrationError(
                f"depth_edges: {p.shape[0]} points but scan_line has shape {lines.shape}"
            )
        idx = idx[np.argsort(lines[idx], kind="stable")]
        same_line = lines[idx[1:]] == lines[idx[:-1]]
    else:
        same_line = np.ones(max(idx.size - 1, 0), dtype=bool)
    if idx.size < 2:
        empty = np.zeros(0)
        return DepthEdges(np.zeros(0, np.intp), np.zeros((0, 2)), empty, empty, empty)
    rng = np.linalg.norm(p[idx] - origin, axis=1)
    threshold = np.maximum(min_jump_m, rel_jump * rng)
    step = np.abs(uv[idx[1:]] - uv[idx[:-1]])
    adjacent = same_line & (step[:, 0] <= max_gap_px) & (step[:, 1] <= max_gap_px)
    # diff[k] = range of point k+1 minus range of point k where they are neighbours, else NaN.
    diff = np.where(adjacent, rng[1:] - rng[:-1], np.nan)
    nan = np.full(2, np.nan)
    d_next = np.concatenate([diff, nan[:1]])  # k -> k+1
    d_prev = np.concatenate([nan[:1], -diff])  # k -> k-1
    d_next2 = np.concatenate([diff[1:], nan])  # k+1 -> k+2
    d_prev2 = np.concatenate([nan, -diff[:-1]])  # k-1 -> k-2
    with np.errstate(invalid="ignore"):
        to_next = d_next > threshold
        to_prev = d_prev > threshold
        if solid:
            tol = np.maximum(smooth_min_m, smooth_rel * rng)
            to_next &= (np.abs(d_prev) < tol) & (np.abs(d_next2) < tol * (1.0 + d_next / rng))
            to_prev &= (np.abs(d_next) < tol) & (np.abs(d_prev2) < tol * (1.0 + d_prev / rng))
    jump = np.maximum(np.where(to_next, d_next, 0.0), np.where(to_prev, d_prev, 0.0))
    k = np.flatnonzero(to_next | to_prev)
    out = idx[k].astype(np.intp)
    return DepthEdges(out, uv[out], depth[out], jump[k], np.minimum(1.0, jump[k] / rng[k]))


@dataclass(frozen=True)
class EdgeAlignment:
    """How well projected depth edges fall on image edges (distances in pixels).

    ``mean_px``/``median_px``/``within_2px`` for the projection as given; ``baseline_mean_px``
    the mean for the same points shifted by ``baseline_shift_px`` in 8 directions;
    ``ratio`` = ``mean_px / baseline_mean_px`` (< 1: better aligned than a shifted projection).
    """

    mean_px: float
    median_px: float
    within_2px: float
    n_edge_points: int
    n_points_in_image: int
    baseline_mean_px: float
    baseline_shift_px: float
    ratio: float


def edge_alignment(
    points_cam: npt.ArrayLike,
    camera: CameraModel,
    image: npt.NDArray[Any] | EdgeImage,
    *,
    scan_line: npt.ArrayLike | None = None,
    sensor_origin_cam: npt.ArrayLike | None = None,
    baseline_shift_px: float = 8.0,
    weighted: bool = True,
    **depth_edge_options: Any,
) -> EdgeAlignment:
    """Edge alignment of one projection (points already in the camera frame).

    ``image`` is the camera image (pixels) or a prepared ``EdgeImage``; ``depth_edge_options``
    go to ``depth_edges``. Raises ``CalibrationError`` when the image size differs from the
    camera model's or when no depth edge lands in the image.
    """
    edge_image = image if isinstance(image, EdgeImage) else EdgeImage.from_image(image)
    if edge_image.shape != (camera.height, camera.width):
        raise CalibrationError(
            f"edge_alignment: image is {edge_image.shape[1]}x{edge_image.shape[0]} but the camera model is "
            f"{camera.width}x{camera.height}"
        )
    p = np.asarray(points_cam)
    edges = depth_edges(
        p,
        camera,
        scan_line=scan_line,
        sensor_origin_cam=sensor_origin_cam,
        **depth_edge_options,
    )
    if len(edges) == 0:
        raise CalibrationError(
            "edge_alignment: no LiDAR depth edge projects into the image (wrong calibration, "
            "empty cloud or points behind the camera?)"
        )
    _, _, inside = camera.project(p.astype(np.float64, copy=False))
    weights = edges.weights if weighted else None
    s = edge_image.score(edges.uv_px, weights)
    angles = np.arange(8) * (np.pi / 4)
    offsets = baseline_shift_px * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    shifted = edges.uv_px[None, :, :] + offsets[:, None, :]
    dist, ok = edge_image.sample(shifted)
    w = np.broadcast_to(edges.weights if weighted else np.ones(len(edges)), dist.shape) * ok
    baseline = float((dist * w).sum() / max(float(w.sum()), 1e-300))
    return EdgeAlignment(
        s.mean_px,
        s.median_px,
        s.within_2px,
        len(edges),
        int(np.count_nonzero(inside)),
        baseline,
        float(baseline_shift_px),
        s.mean_px / baseline if baseline > 0 else float("nan"),
    )


# --------------------------------------------------------------------------------------------
# LiDAR → camera alignment over a log: prepared frames, batched costs, local optimum
# --------------------------------------------------------------------------------------------

#: Distances are stored as uint8 in steps of 1/8 px, so the largest storable distance is 31.875 px.
_DIST_STEPS_PER_PX = 8.0
_DIST_MAX_PX = 255.0 / _DIST_STEPS_PER_PX
#: Parameter units of the local search: rotation in 0.1° and translation in cm, so that one unit
#: of either moves a point at ~6 m by about the same number of pixels.
_UNIT = np.r_[np.full(3, np.radians(0.1)), np.full(3, 0.01)]
IMAGE_MODALITIES = ("camera", "thermal")
#: Least Gaussian pre-blur (px) before Canny on thermal images for the *miscalibration check*
#: (``check_settings``; refinement keeps the width-scaled 0.8 px). An LWIR frame's edges are
#: spread over more pixels (optics, detector) and its flat regions carry NETD noise and the 8-bit
#: quantisation of a ~60 K range; at 0.8 px Canny follows that noise, so the per-window
#: improvement ``frame_check`` tests is noisier for the thermal camera: some windows of the
#: correct calibration prefer a 0.35° roll by more than the 4 % margin. Measured on the
#: synthetic log (40 THERMAL_FRONT frames; false alarms / recall at 0.5°) for a least blur of
#: 0.8, 1.0, 1.2, 1.4, 1.6 px: 7.5/97.1, 7.5/97.9, 0/97.3, 0/98.1, 2.5/97.1 %. The check does not
#: need the sharpest optimum; refinement does (1.4 px moves THERMAL_FRONT's refined rotation from
#: 0.07° to 0.17° off the truth), so the larger blur is used for checking only.
CHECK_THERMAL_BLUR_PX = 1.4


@dataclass(frozen=True)
class AlignmentSettings:
    """How LiDAR→image alignment data are gathered and scored.

    Frames: at most ``max_frames`` images of the sensor, spread evenly over the log, each with
    the LiDAR sweep nearest in time (ego clock). Points: LiDAR depth edges along each ring
    (range jump > ``max(min_jump_m, min_jump_ratio · range)``; the boundary point half-way in
    angle between the near and the far return), each placed in the world at its own firing
    time and seen from the camera's pose at its capture time (``t_stamp + time_offset_ns``), so
    ego motion and clock offsets are not mistaken for extrinsic error; with ``reject_moving``
    an edge point must be found again (in the world) by the sweeps ``static_neighbour_sweeps``
    before and after it, so points on moving objects are dropped. Only points at
    ``min_depth_m``..``max_depth_m`` inside the image count. ``sweeps_per_image``: the
    nearest sweep and its neighbours (alternately after and before) contribute edge points to
    each image (more points per image; all placed in the world at their own firing times). Cost of a point: its distance to
    the nearest Canny edge of the image (``EdgeImage.from_image`` with ``edge_percentile`` and
    ``blur_sigma_px``, by default 2 px for a 1600 px wide image, scaled with the width and at
    least 0.8 px; for thermal cameras at least ``thermal_blur_sigma_px`` when that is set, as
    ``check_settings`` does), truncated at ``tau_px`` (a point outside the image costs
    ``tau_px``).
    """

    max_frames: int = 20
    min_depth_m: float = 1.5
    max_depth_m: float = 80.0
    min_jump_m: float = 1.0
    min_jump_ratio: float = 0.15
    reject_moving: bool = True
    static_neighbour_sweeps: int = 2
    sweeps_per_image: int = 1
    intensity_edges: bool = False
    min_intensity_jump: float = 30.0
    edge_percentile: float = 90.0
    blur_sigma_px: float | None = None
    tau_px: float = 10.0
    thermal_blur_sigma_px: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int):
            raise ConfigError(
                f"AlignmentSettings.max_frames must be an integer, got {self.max_frames!r}"
            )
        if self.max_frames < 1:
            raise ConfigError(f"AlignmentSettings.max_frames must be >= 1, got {self.max_frames}")
        if not 0 < self.min_depth_m < self.max_depth_m:
            raise ConfigError(
                f"AlignmentSettings: need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}"
            )
        if not 0 < self.tau_px <= _DIST_MAX_PX:
            raise ConfigError(
                f"AlignmentSettings.tau_px must be in (0, {_DIST_MAX_PX}] px, got {self.tau_px}"
            )
        if isinstance(self.sweeps_per_image, bool) or not isinstance(self.sweeps_per_image, int):
            raise ConfigError(
                f"AlignmentSettings.sweeps_per_image must be an integer, got {self.sweeps_per_image!r}"
            )
        if self.sweeps_per_image < 1:
            raise ConfigError(
                f"AlignmentSettings.sweeps_per_image must be >= 1, got {self.sweeps_per_image}"
            )
        t = self.thermal_blur_sigma_px
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not t > 0):
            raise ConfigError(
                f"AlignmentSettings.thermal_blur_sigma_px must be None or a number > 0, got {t!r}"
            )
        if self.min_jump_m <= 0 or self.min_jump_ratio < 0 or self.static_neighbour_sweeps < 1:
            raise ConfigError(
                "AlignmentSettings: need min_jump_m > 0, min_jump_ratio >= 0, static_neighbour_sweeps >= 1"
            )


@dataclass(frozen=True, eq=False)
class AlignmentData:
    """LiDAR edge points and image distance maps of several frames of one image sensor.

    ``points_cam`` (M, 3): every frame's edge points in the camera frame of the *current*
    calibration (metres); ``frame_index`` (M,) which frame each belongs to; ``distance``
    (F, H, W) uint8, the distance to the nearest image edge in 1/8 px (saturating at 31.875 px).
    ``tokens``/``stamps_ns`` name the frames (image sample_data tokens, sensor stamps).
    ``ego_from_sensor`` is the calibration the points were prepared with; a candidate
    correction ``delta`` (``cam_new_from_cam``) gives ``ego_from_sensor @ delta.inverse()``.
    """

    sensor: str
    lidar: str
    camera: CameraModel
    ego_from_sensor: Any  # Transform (typed loosely to keep this module free of cycles)
    points_cam: F64
    frame_index: npt.NDArray[np.intp]
    distance: npt.NDArray[np.uint8]
    tokens: tuple[str, ...]
    stamps_ns: npt.NDArray[np.int64]
    skipped: Mapping[str, int]

    @property
    def n_frames(self) -> int:
        return len(self.tokens)

    @property
    def n_points(self) -> int:
        return int(self.points_cam.shape[0])

    def points_per_frame(self) -> npt.NDArray[np.int64]:
        return np.bincount(self.frame_index, minlength=self.n_frames).astype(np.int64)

    def subset(self, frames: npt.ArrayLike) -> AlignmentData:
        """The same data restricted to some frames (indices into ``tokens``)."""
        keep = np.asarray(frames, dtype=np.intp).reshape(-1)
        remap = np.full(self.n_frames, -1, np.intp)
        remap[keep] = np.arange(keep.size)
        sel = remap[self.frame_index] >= 0
        return AlignmentData(
            self.sensor, self.lidar, self.camera, self.ego_from_sensor,
            self.points_cam[sel], remap[self.frame_index[sel]], self.distance[keep],
            tuple(self.tokens[i] for i in keep.tolist()), self.stamps_ns[keep], dict(self.skipped),
        )  # fmt: skip


def _check_image_sensor(log: Any, sensor: str, lidar: str) -> tuple[Any, CameraModel]:
    sensors = log.sensors
    known = ", ".join(sorted(sensors))
    if sensor not in sensors:
        raise CalibrationError(f"alignment: unknown sensor '{sensor}' (sensors: {known})")
    if lidar not in sensors:
        raise CalibrationError(
            f"alignment of '{sensor}': unknown LiDAR '{lidar}' (sensors: {known})"
        )
    s = sensors[sensor]
    if getattr(s, "modality", "?") not in IMAGE_MODALITIES:
        raise CalibrationError(
            f"alignment: '{sensor}' is a {getattr(s, 'modality', '?')} sensor, not a camera or thermal camera"
        )
    if not isinstance(getattr(s, "camera", None), CameraModel):
        raise CalibrationError(f"alignment: '{sensor}' has no intrinsics (CameraModel)")
    if getattr(sensors[lidar], "modality", "?") != "lidar":
        raise CalibrationError(
            f"alignment of '{sensor}': reference '{lidar}' is a "
            f"{getattr(sensors[lidar], 'modality', '?')} sensor, not a LiDAR"
        )
    return s, s.camera


def _lidar_cache(log: Any, lidar: str, settings: AlignmentSettings) -> Any:
    from avfusion.calibration.clockoffset import ClockOffsetSettings, _LidarCache

    s = ClockOffsetSettings(
        min_jump_m=settings.min_jump_m,
        min_jump_ratio=settings.min_jump_ratio,
        static_neighbour_sweeps=settings.static_neighbour_sweeps,
    )
    return _LidarCache(log, lidar, log.poses, s)


def _intensity_edges_world(log: Any, cache: Any, k: int, s: AlignmentSettings) -> F64:
    """Points (world) half-way between two neighbouring returns of one ring on the same
    surface (ranges within 5 %) whose intensities differ by more than ``min_intensity_jump``
    and by a factor of 2 (lane markings, kerbs, signs); with ``reject_moving`` only those the
    neighbouring sweeps hit again. Cached on the sweep."""
    sw = cache.sweep(k)
    if sw is None:
        return np.zeros((0, 3))
    cached = getattr(sw, "_intensity_edges", None)
    if cached is not None:
        return np.asarray(cached)
    cloud = log.load_points(cache.tokens[k], with_pose=False, with_lidarseg=False)
    intensity = cloud.attrs.get("intensity")
    ring = cloud.attrs.get("ring")
    out = np.zeros((0, 3))
    if intensity is not None and ring is not None and len(cloud) == sw.cloud_world.shape[0]:
        xyz = np.asarray(cloud.xyz, dtype=np.float64)
        rng = np.linalg.norm(xyz, axis=1)
        az = np.arctan2(xyz[:, 1], xyz[:, 0])
        order = np.lexsort((az, np.asarray(ring)))
        a, b = order[:-1], order[1:]
        same = np.asarray(ring)[a] == np.asarray(ring)[b]
        daz = az[b] - az[a]
        step = float(np.median(daz[same & (daz > 0)])) if np.any(same & (daz > 0)) else 0.0
        ia = np.asarray(intensity, np.float64)[a]
        ib = np.asarray(intensity, np.float64)[b]
        hi, lo = np.maximum(ia, ib), np.minimum(ia, ib)
        with np.errstate(invalid="ignore", divide="ignore"):
            sel = (
                same
                & (daz > 0)
                & (daz <= 1.6 * step)
                & (np.abs(rng[a] - rng[b]) <= 0.05 * np.minimum(rng[a], rng[b]))
                & (hi - lo > s.min_intensity_jump)
                & (hi > 2.0 * lo)
            )
        out = 0.5 * (sw.cloud_world[a[sel]] + sw.cloud_world[b[sel]])
        if s.reject_moving and out.shape[0]:
            from scipy.spatial import cKDTree

            keep = np.ones(out.shape[0], bool)
            n = s.static_neighbour_sweeps
            for j in (k - n, k + n):
                other = cache.sweep(j) if 0 <= j < len(cache.tokens) else None
                if other is None or other.cloud_world.shape[0] == 0:
                    continue
                if other.tree is None:
                    other.tree = cKDTree(
                        other.cloud_world, balanced_tree=False, compact_nodes=False
                    )
                dist, _ = other.tree.query(out, k=1, distance_upper_bound=0.5)
                keep &= dist <= 0.15 + 0.02 * np.linalg.norm(
                    out - sw.cloud_world.mean(axis=0), axis=1
                )
            out = out[keep]
    sw._intensity_edges = out
    return out


def prepare_alignment(
    log: Any,
    sensor: str,
    lidar: str = "LIDAR_TOP",
    *,
    settings: AlignmentSettings | None = None,
    frames: Sequence[int] | None = None,
    lidar_cache: Any = None,
) -> AlignmentData:
    """Gather the LiDAR edge points and image edge distances of ``sensor`` (a camera or thermal
    camera of ``log``) for an alignment check or refinement, at the log's current calibration.

    ``frames`` picks image indices (into ``log.sample_data_tokens(sensor)``) instead of the
    evenly spread ``settings.max_frames``. Frames without a LiDAR sweep inside the pose track or
    without edge points in view are skipped and counted in ``skipped``. Raises
    ``CalibrationError`` for an unknown sensor or one that is not a camera.
    """
    from avfusion.calibration.transforms import Transform

    s = settings or AlignmentSettings()
    cam_sensor, model = _check_image_sensor(log, sensor, lidar)
    cache = lidar_cache if lidar_cache is not None else _lidar_cache(log, lidar, s)
    track = log.poses
    stamps = np.asarray(log.timestamps(sensor), dtype=np.int64)
    tokens = list(log.sample_data_tokens(sensor))
    offset = int(cam_sensor.time_offset_ns)
    t_ego = stamps + offset
    inside = (t_ego >= track.start_ns) & (t_ego <= track.end_ns)
    skipped: dict[str, int] = {}
    if frames is None:
        cand = np.flatnonzero(inside)
        if cand.size > s.max_frames:
            pick = np.unique(np.round(np.linspace(0, cand.size - 1, s.max_frames)).astype(int))
            cand = cand[pick]
    else:
        cand = np.asarray(list(frames), dtype=np.intp)
        bad = cand[(cand < 0) | (cand >= len(tokens))]
        if bad.size:
            raise CalibrationError(
                f"alignment of '{sensor}': frame index {int(bad[0])} outside 0..{len(tokens) - 1}"
            )
        if np.any(~inside[cand]):
            skipped["capture time outside the pose track"] = int(np.count_nonzero(~inside[cand]))
        cand = cand[inside[cand]]
    cam_from_ego: Transform = cam_sensor.ego_from_sensor.inverse()
    period = float(np.median(np.diff(cache.t_ns))) if cache.t_ns.size > 1 else 1e8
    blur = max(0.8, 2.0 * model.width / 1600.0) if s.blur_sigma_px is None else s.blur_sigma_px
    thermal = getattr(cam_sensor, "modality", "") == "thermal"
    if s.blur_sigma_px is None and s.thermal_blur_sigma_px is not None and thermal:
        blur = max(blur, s.thermal_blur_sigma_px)
    pts: list[F64] = []
    dists: list[npt.NDArray[np.uint8]] = []
    used: list[int] = []

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for i in cand.tolist():
        t = int(t_ego[i])
        k = int(np.argmin(np.abs(cache.t_ns - t))) if cache.t_ns.size else -1
        sw = cache.sweep(k) if k >= 0 and abs(int(cache.t_ns[k]) - t) <= period else None
        if sw is None:
            skip("no LiDAR sweep inside the pose track near it")
            continue
        # the nearest sweep, then its neighbours alternately after and before it
        ks = [k + (j + 1) // 2 * (1 if j % 2 else -1) for j in range(s.sweeps_per_image)]
        parts = []
        for kk in ks:
            other = cache.sweep(kk) if 0 <= kk < cache.t_ns.size else None
            if other is not None:
                keep_static = cache.static_mask(kk) if s.reject_moving else slice(None)
                parts.append(other.edges_world[keep_static])
                if s.intensity_edges:
                    parts.append(_intensity_edges_world(log, cache, kk, s))
        world = np.concatenate(parts)
        p_cam = (cam_from_ego @ track.at(t).inverse()).apply(world)
        _, depth, in_image = model.project(p_cam)
        keep = in_image & (depth >= s.min_depth_m) & (depth <= s.max_depth_m)
        if not np.any(keep):
            skip("no LiDAR depth edge in view")
            continue
        image = log.load_image(tokens[i])
        edge_image = EdgeImage.from_image(
            image.pixels,
            blur_sigma_px=blur,
            edge_percentile=s.edge_percentile,
            max_distance_px=_DIST_MAX_PX,
        )
        if edge_image.shape != (model.height, model.width):
            raise CalibrationError(
                f"alignment of '{sensor}': image {tokens[i]} is {edge_image.shape[1]}x{edge_image.shape[0]} "
                f"but the camera model is {model.width}x{model.height}"
            )
        dists.append(np.round(edge_image.distance_px * _DIST_STEPS_PER_PX).astype(np.uint8))
        pts.append(np.ascontiguousarray(p_cam[keep]))
        used.append(i)
    if cache.n_without_times:
        logger.info(
            "alignment of '%s': %d sweeps of '%s' have no per-point times (taken at the stamp)",
            sensor, cache.n_without_times, lidar,
        )  # fmt: skip
    h, w = model.height, model.width
    return AlignmentData(
        sensor,
        lidar,
        model,
        cam_sensor.ego_from_sensor,
        np.concatenate(pts) if pts else np.zeros((0, 3)),
        np.concatenate([np.full(p.shape[0], j, np.intp) for j, p in enumerate(pts)])
        if pts
        else np.zeros(0, np.intp),
        np.stack(dists) if dists else np.zeros((0, h, w), np.uint8),
        tuple(tokens[i] for i in used),
        stamps[np.asarray(used, dtype=np.intp)],
        skipped,
    )


def _rotations(rotvecs: F64) -> npt.NDArray[np.float64]:
    """Rotation matrices (K, 3, 3) from rotation vectors (K, 3) (Rodrigues, vectorised)."""
    theta = np.linalg.norm(rotvecs, axis=1)
    safe = np.where(theta > 1e-15, theta, 1.0)
    k = rotvecs / safe[:, None]
    kx = np.zeros((rotvecs.shape[0], 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx[:, 1, 0], kx[:, 2, 0], kx[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * kx + (1.0 - c) * (kx @ kx)


def alignment_costs(data: AlignmentData, deltas: npt.ArrayLike, tau_px: float = 5.0) -> F64:
    """Per-frame summed cost (K, F) of candidate corrections ``deltas`` (K, 6).

    A correction is (rotation vector rad, translation m) in the camera frame of the current
    calibration: ``p_new = R p + t``. The cost of a point is ``min(d, tau_px) / tau_px`` with
    ``d`` its bilinear distance to the nearest image edge (px); a point outside the image (or
    behind the camera) costs 1. Divide by ``data.points_per_frame()`` for per-frame means.
    """
    n_f = data.n_frames
    costs = point_costs(data, deltas, tau_px)
    if data.n_points == 0:
        return np.zeros((costs.shape[0], n_f))
    return np.stack([np.bincount(data.frame_index, weights=row, minlength=n_f) for row in costs])


def point_costs(data: AlignmentData, deltas: npt.ArrayLike, tau_px: float = 10.0) -> F64:
    """Per-point cost (K, M) of candidate corrections ``deltas`` (K, 6); see ``alignment_costs``."""
    d = np.asarray(deltas, dtype=np.float64).reshape(-1, 6)
    if not 0 < tau_px <= _DIST_MAX_PX:
        raise CalibrationError(
            f"alignment_costs: tau_px must be in (0, {_DIST_MAX_PX}], got {tau_px}"
        )
    out = np.ones((d.shape[0], data.n_points))
    if data.n_points == 0:
        return out
    rot = _rotations(d[:, :3])
    model = data.camera
    h, w = model.height, model.width
    flat = data.distance.reshape(-1)
    base = data.frame_index.astype(np.int64) * (h * w)
    chunk = max(1, 400_000 // data.n_points)
    for a in range(0, d.shape[0], chunk):
        r, t = rot[a : a + chunk], d[a : a + chunk, 3:]
        pc = np.matmul(data.points_cam[None, :, :], r.transpose(0, 2, 1)) + t[:, None, :]
        kk, m = pc.shape[:2]
        uv, _, inside = model.project(pc.reshape(-1, 3))
        u = np.where(inside, uv[:, 0], 0.0)
        v = np.where(inside, uv[:, 1], 0.0)
        uc, vc = np.clip(u, 0.0, w - 1.0), np.clip(v, 0.0, h - 1.0)
        u0 = np.minimum(uc.astype(np.int64), w - 2)
        v0 = np.minimum(vc.astype(np.int64), h - 2)
        fu, fv = uc - u0, vc - v0
        idx = np.tile(base, kk) + v0 * w + u0
        top = flat[idx] * (1.0 - fu) + flat[idx + 1] * fu
        bottom = flat[idx + w] * (1.0 - fu) + flat[idx + w + 1] * fu
        dist = (top * (1.0 - fv) + bottom * fv) / _DIST_STEPS_PER_PX
        out[a : a + kk] = np.where(inside, np.minimum(dist, tau_px) / tau_px, 1.0).reshape(kk, m)
    return out


def _total(data: AlignmentData, deltas: F64, tau_px: float) -> F64:
    return alignment_costs(data, deltas, tau_px).sum(axis=1) / max(data.n_points, 1)


@dataclass(frozen=True)
class LocalOptimum:
    """The best correction near the current calibration and its uncertainty.

    ``delta`` (6,): rotation vector (rad) and translation (m) of ``cam_new_from_cam`` in the
    camera frame. ``cov`` (6, 6): its covariance from the frame-to-frame scatter of the cost
    gradient (a sandwich estimate, ``H⁻¹ B H⁻¹``); ``std`` its diagonal's square root (inf
    where the cost does not constrain the parameter). ``cost_current``/``cost_best``: mean
    truncated cost per point (0..1) at the current calibration and at ``delta``.
    ``hessian_eigenvalues`` in the search units (0.1°, cm).
    """

    delta: F64
    cov: F64
    std: F64
    cost_current: float
    cost_best: float
    positive_definite: bool
    hessian_eigenvalues: F64
    on_bound: bool
    n_evaluations: int


def local_optimum(
    data: AlignmentData,
    *,
    taus_px: Sequence[float] = (20.0, 10.0, 5.0, 3.0),
    max_rotation_deg: float = 3.0,
    max_translation_m: float = 0.5,
    start: npt.ArrayLike | None = None,
    fd_step_px: float = 3.0,
) -> LocalOptimum:
    """Minimise the alignment cost over 6-DoF corrections near the current calibration.

    Coarse to fine: the cost is minimised (Powell, bounded to ±``max_rotation_deg`` per
    rotation axis and ±``max_translation_m`` per translation axis) with each truncation of
    ``taus_px`` in turn, the wide ones for capture range, the last for precision. The
    uncertainty is computed with the last truncation, by finite differences whose steps move
    a point at the median depth by ``fd_step_px`` pixels. It is the frame-to-frame scatter
    only: a bias common to all frames (on the synthetic log 0.05-0.1° for the front cameras,
    about 0.2° of pitch and roll for the side cameras) is not in it.
    """
    from scipy.optimize import minimize

    if data.n_points == 0:
        raise CalibrationError(f"local_optimum of '{data.sensor}': no LiDAR edge points")
    x = np.zeros(6) if start is None else np.asarray(start, np.float64).reshape(6) / _UNIT
    lim = np.r_[np.full(3, max_rotation_deg * 10.0), np.full(3, max_translation_m * 100.0)]
    bounds = list(zip(-lim, lim, strict=True))
    n_eval = 0
    for tau in taus_px:
        tau = min(float(tau), _DIST_MAX_PX)

        def f(xx: F64, tau: float = tau) -> float:
            return float(_total(data, (xx * _UNIT)[None, :], tau)[0])

        res = minimize(f, x, method="Powell", bounds=bounds, options={"xtol": 0.02, "ftol": 1e-6})
        x = np.asarray(res.x, np.float64)
        n_eval += int(res.nfev)
    tau = min(float(taus_px[-1]), _DIST_MAX_PX)
    on_bound = bool(np.any(np.abs(x) >= 0.99 * lim))
    # Uncertainty: Hessian of the total cost and per-frame gradients, by central differences
    # in search units. The steps move a point at the median depth by ``fd_step_px`` pixels:
    # smaller steps would measure the kink of the distance transform at each edge (a V, not a
    # parabola) and overstate the curvature, most of all for translation seen from far away.
    f_px = max(data.camera.fx, data.camera.fy)
    z_med = float(np.median(data.points_cam[:, 2]))
    step = (
        np.r_[np.full(3, fd_step_px / f_px), np.full(3, fd_step_px * max(z_med, 1.0) / f_px)]
        / _UNIT
    )
    e = np.diag(step)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    cands = [x, *(x + e[i] for i in range(6)), *(x - e[i] for i in range(6))]
    for i, j in pairs:
        cands += [x + e[i] + e[j], x + e[i] - e[j], x - e[i] + e[j], x - e[i] - e[j]]
    per_frame = alignment_costs(data, np.asarray(cands) * _UNIT, tau) / max(data.n_points, 1)
    n_eval += len(cands)
    tot = per_frame.sum(axis=1)
    c0 = tot[0]
    hess = np.zeros((6, 6))
    for i in range(6):
        hess[i, i] = (tot[1 + i] - 2 * c0 + tot[7 + i]) / step[i] ** 2
    for p, (i, j) in enumerate(pairs):
        a, b, c, d = tot[13 + 4 * p : 17 + 4 * p]
        hess[i, j] = hess[j, i] = (a - b - c + d) / (4 * step[i] * step[j])
    grad_f = (per_frame[1:7] - per_frame[7:13]) / (2 * step[:, None])  # (6, F)
    grad_f = (
        grad_f
        - grad_f.sum(axis=1, keepdims=True)
        * (data.points_per_frame() / max(data.n_points, 1))[None, :]
    )
    n_f = max(data.n_frames, 1)
    b = grad_f @ grad_f.T * (n_f / max(n_f - 1, 1))
    eig = np.asarray(np.linalg.eigvalsh(hess), dtype=np.float64)
    pd = bool(eig.min() > 0)
    if pd:
        h_inv = np.linalg.inv(hess)
        cov_u = h_inv @ b @ h_inv
        cov = cov_u * np.outer(_UNIT, _UNIT)
        std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    else:
        cov = np.full((6, 6), np.inf)
        std = np.full(6, np.inf)
    current = float(_total(data, np.zeros((1, 6)), tau)[0])
    return LocalOptimum(x * _UNIT, cov, std, current, float(c0), pd, eig, on_bound, n_eval)


# --------------------------------------------------------------------------------------------
# The miscalibration check
# --------------------------------------------------------------------------------------------


def _rotation_grid(step_deg: float, n: int) -> F64:
    import itertools

    g = np.radians(step_deg * np.arange(-n, n + 1))
    rv = np.array(list(itertools.product(g, g, g)))
    return np.c_[rv, np.zeros_like(rv)]


def frame_check(
    data: AlignmentData,
    *,
    tau_deg: float = 0.45,
    margin: float = 0.04,
    window: int = 5,
) -> tuple[npt.NDArray[np.bool_], F64, F64]:
    """Per frame: is the current calibration a local optimum of the edge alignment?

    For each frame, the frames of a window of ``window`` consecutive images (in time) centred
    on it (shifted inwards at the ends of the log; 1 = the frame alone) are scored together;
    the best rotation correction of that window is searched on a grid of ±0.5° in 0.25° steps
    about the camera axes, then refined on a 0.1° grid around the best. The frame is *flagged*
    when that best correction scores better than ``(1 - margin)`` × the current calibration.
    Points are scored with the truncation ``tau_deg`` as an angle (``f · tan(tau_deg)``
    pixels: 10 px for a 1266 px focal length, 5 px for 620 px), so a rotation error costs the
    same share of the truncation in any camera.
    Returns ``(flagged (F,), improvement (F,), best_rotation_deg (F, 3))`` with
    ``improvement`` = 1 − best / current score.

    Measured on the synthetic log (40 images each with its 3 nearest sweeps, defaults) with
    ``check_settings()``: the correct calibration is flagged in 0 % (CAM_FRONT) and 0 %
    (THERMAL_FRONT) of frames; a 0.5° rotation error (6 signed camera axes and 6 random axes) in
    96.7 % and 98.1 %. The weakest case is a negative roll. With the refinement's settings
    (thermal edges after only 0.8 px of blur) THERMAL_FRONT's false alarms are 7.5 % (see
    ``CHECK_THERMAL_BLUR_PX``). One image per decision (``window=1``) has 20-28 % false alarms
    at this margin.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise CalibrationError(f"frame_check: window must be an integer >= 1, got {window!r}")
    n_f = data.n_frames
    if n_f == 0:
        return np.zeros(0, bool), np.zeros(0), np.zeros((0, 3))
    tau_px = min(_DIST_MAX_PX, max(data.camera.fx, data.camera.fy) * np.tan(np.radians(tau_deg)))
    coarse, fine = _rotation_grid(0.25, 2), _rotation_grid(0.1, 1)
    centre = int(np.flatnonzero(~coarse[:, :3].any(axis=1))[0])
    costs = alignment_costs(data, coarse, tau_px)  # (125, F)
    order = np.argsort(data.stamps_ns, kind="stable")
    w = min(window, n_f)
    start = np.clip(np.arange(n_f) - w // 2, 0, n_f - w)
    improvement = np.zeros(n_f)
    best_rot = np.zeros((n_f, 3))
    done: dict[int, tuple[float, F64]] = {}
    for pos in range(n_f):
        a = int(start[pos])
        if a not in done:
            idx = order[a : a + w]
            cw = costs[:, idx].sum(axis=1)
            best = coarse[int(np.argmin(cw))]
            sel = np.isin(data.frame_index, idx)
            view = dataclasses.replace(  # the window's points; the distance maps are shared
                data, points_cam=data.points_cam[sel], frame_index=data.frame_index[sel]
            )
            c2 = point_costs(view, best + fine, tau_px).sum(axis=1)
            k = int(np.argmin(c2))
            current = float(cw[centre])
            gain = 1.0 - float(c2[k]) / current if current > 0 else 0.0
            done[a] = (gain, np.degrees((best + fine[k])[:3]))
        improvement[order[pos]], best_rot[order[pos]] = done[a]
    return improvement > margin, improvement, best_rot


@dataclass(frozen=True, eq=False)
class SensorCheck:
    """Calibration check of one image sensor against a LiDAR.

    ``ok``: the current extrinsic is a local optimum of the log-wide alignment within the
    tolerances (``correction`` within ``max(tolerance, 3σ)`` on every axis) and at most
    ``max_flagged`` of the frames are flagged. ``correction_rotation_deg`` /
    ``correction_translation_m``: where the best nearby extrinsic lies (``cam_new_from_cam``,
    camera axes x right, y down, z forward), ``std_*`` their standard deviations.
    ``flagged_fraction``: share of frames whose own check says "not a local optimum";
    ``mean_improvement`` the mean relative score gain of the frames' best rotation.
    """

    sensor: str
    lidar: str
    ok: bool
    verdict: str
    n_frames: int
    n_points: int
    flagged_fraction: float
    mean_improvement: float
    cost_current: float
    cost_best: float
    correction_rotation_deg: F64
    correction_translation_m: F64
    std_rotation_deg: F64
    std_translation_m: F64
    flagged: npt.NDArray[np.bool_]
    tokens: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "lidar": self.lidar,
            "ok": self.ok,
            "verdict": self.verdict,
            "n_frames": self.n_frames,
            "n_points": self.n_points,
            "flagged_fraction": float(self.flagged_fraction),
            "mean_improvement": float(self.mean_improvement),
            "cost_current": float(self.cost_current),
            "cost_best": float(self.cost_best),
            "correction_rotation_deg": json_floats(self.correction_rotation_deg),
            "correction_translation_m": json_floats(self.correction_translation_m),
            "std_rotation_deg": json_floats(self.std_rotation_deg),
            "std_translation_m": json_floats(self.std_translation_m),
            "frames": [
                {"token": t, "flagged": bool(f)}
                for t, f in zip(self.tokens, self.flagged.tolist(), strict=True)
            ],
        }


def check_sensor(
    data: AlignmentData,
    *,
    tolerance_deg: float = 0.2,
    tolerance_m: float = 0.05,
    max_flagged: float = 0.3,
    max_rotation_deg: float = 2.0,
    max_translation_m: float = 0.3,
) -> SensorCheck:
    """Check prepared alignment data (see ``SensorCheck``): the per-frame test
    (``frame_check``) and the log-wide best nearby extrinsic (``local_optimum`` within
    ±``max_rotation_deg`` / ±``max_translation_m``)."""
    if data.n_frames == 0 or data.n_points == 0:
        nan3 = np.full(3, np.nan)
        return SensorCheck(
            data.sensor, data.lidar, False,
            "not checkable: no frame with LiDAR depth edges in view", 0, 0, float("nan"),
            float("nan"), float("nan"), float("nan"), nan3, nan3, nan3, nan3,
            np.zeros(0, bool), (),
        )  # fmt: skip
    flagged, gain, _ = frame_check(data)
    opt = local_optimum(
        data,
        taus_px=(20.0, 10.0),
        max_rotation_deg=max_rotation_deg,
        max_translation_m=max_translation_m,
    )
    rot = np.degrees(opt.delta[:3])
    tr = opt.delta[3:]
    std_r, std_t = np.degrees(opt.std[:3]), opt.std[3:]
    within = bool(
        np.all(np.abs(rot) <= np.maximum(tolerance_deg, 3 * std_r))
        and np.all(np.abs(tr) <= np.maximum(tolerance_m, 3 * std_t))
    )
    frac = float(np.mean(flagged))
    ok = within and frac <= max_flagged
    if ok:
        verdict = "ok: the current extrinsic is a local optimum of the edge alignment"
    else:
        angle = float(np.linalg.norm(rot))
        verdict = (
            f"miscalibrated: the best nearby extrinsic is {angle:.2f}° "
            f"(rotation [{rot[0]:+.2f}, {rot[1]:+.2f}, {rot[2]:+.2f}]° about camera x, y, z) and "
            f"{100 * float(np.linalg.norm(tr)):.1f} cm away; {100 * frac:.0f} % of frames flagged"
        )
    return SensorCheck(
        data.sensor, data.lidar, ok, verdict, data.n_frames, data.n_points, frac,
        float(np.mean(gain)), opt.cost_current, opt.cost_best, rot, tr, std_r, std_t, flagged,
        data.tokens,
    )  # fmt: skip


def check_settings(**overrides: Any) -> AlignmentSettings:
    """The alignment settings of the miscalibration check: ``sweeps_per_image=3`` and
    ``thermal_blur_sigma_px=CHECK_THERMAL_BLUR_PX`` (``overrides`` replace any field, e.g.
    ``max_frames``)."""
    kw: dict[str, Any] = {"sweeps_per_image": 3, "thermal_blur_sigma_px": CHECK_THERMAL_BLUR_PX}
    kw.update(overrides)
    return AlignmentSettings(**kw)


def check_calibration(
    log: Any,
    sensors: Sequence[str] | None = None,
    lidar: str = "LIDAR_TOP",
    *,
    settings: AlignmentSettings | None = None,
) -> dict[str, SensorCheck]:
    """``check_sensor`` for every camera and thermal camera of ``log`` (or ``sensors``).

    ``settings`` default: ``check_settings()`` (more edge points per image for the per-frame
    decisions, and thermal edges found after ``CHECK_THERMAL_BLUR_PX`` of pre-blur)."""
    names = (
        sorted(n for n, s in log.sensors.items() if getattr(s, "modality", "") in IMAGE_MODALITIES)
        if sensors is None
        else list(sensors)
    )
    for name in names:
        _check_image_sensor(log, name, lidar)
    s = settings or check_settings()
    cache = _lidar_cache(log, lidar, s) if names else None
    return {
        name: check_sensor(prepare_alignment(log, name, lidar, settings=s, lidar_cache=cache))
        for name in names
    }
