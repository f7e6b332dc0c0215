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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.errors import CalibrationError

__all__ = ["DepthEdges", "EdgeAlignment", "EdgeImage", "EdgeScore", "depth_edges", "edge_alignment"]

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
    ) -> EdgeImage:
        """Edges of a colour (RGB), grey or 16-bit image.

        Canny on the image blurred with ``blur_sigma_px`` (0: no blur). Its high threshold is
        the ``edge_percentile`` percentile of the gradient magnitude (Sobel, L2), so every image
        gets a comparable share of edge pixels whatever its contrast, unless ``high_threshold``
        is given; the low threshold is ``low_ratio`` × the high one.
        """
        import cv2

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
