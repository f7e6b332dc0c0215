"""Point painting: per-point colour from cameras, per-point temperature from a thermal camera,
and radar detections drawn into images (vertical segments and Doppler arrows).

Everything goes through ``fusion.projection`` (motion-compensated, deskewed when the cloud has
per-point times and a pose track is given, occlusion-aware z-buffer), so a point is painted only
where it is ``valid``: in the image and not hidden behind a nearer return. Results are aligned
with the input points: unpainted points get NaN (float values) and a False mask; nothing is
dropped.

**Sampling.** Pixel values are sampled at the projected sub-pixel position, bilinearly by
default (``interpolation="nearest"`` takes the pixel holding the point). Pixel centres are at
integer coordinates (``CameraModel``); within half a pixel of the border the edge pixels are
used (clamped).

**Where cameras overlap** (``paint_colour``), one camera paints each point, chosen by ``rule``:

* ``"border"`` (default): the camera in which the point lies farthest from the image border,
  measured in units of the focal length (``margin_px / sqrt(fx fy)``, about the angle in radians
  to the nearest edge, so cameras of different resolution compare fairly). Overlaps of adjacent
  cameras are at the edges of both images, where a lens is least well calibrated (distortion
  residuals grow with the radius), vignetting darkens, and a small extrinsic or timing error is
  most likely to push the point across the border or onto a neighbouring surface; the camera
  that sees the point more centrally is the more reliable one. The choice depends on geometry
  only, so it is stable from frame to frame.
* ``"time"``: the camera whose capture time is closest to the point's own capture time (its
  per-point time when the cloud has one). Ego motion is compensated either way; what the time
  rule reduces is the error from objects that move by themselves between the two captures.

Ties go to the other criterion, then to the camera that comes first in ``images``.

**Temperature** (``paint_temperature``): the thermal image holds uint16 radiometric counts;
``CountsToKelvin`` is the log's documented mapping (``avfusion_sensor.json`` → ``counts_to_kelvin``,
exposed as ``NuScenesLog.sensor_extras[channel]``): ``kelvin = scale_k * counts + offset_k``.
Counts are sampled, then mapped (the mapping is linear, so this equals sampling kelvin).

**Radar** (``project_radar``): a radar without elevation places a detection at z = 0 of its own
frame; the target may be anywhere in height. Each detection is drawn as a vertical segment
between two heights (``heights_m``: absolute z in the ego frame, or relative to the detection),
giving a top and a bottom image point, and its ego-motion-compensated Doppler velocity
(``vx_comp``, ``vy_comp`` in the radar frame, radial only) as an arrow from the detection to
``detection + v · arrow_dt_s``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.errors import AVFusionError, LogFormatError
from avfusion.fusion.boxes import _clip_polylines
from avfusion.fusion.deskew import CAPTURE_TIME_ATTR, POINT_TIME_ATTR
from avfusion.fusion.projection import (
    Projection,
    project_cloud,
    project_cloud_to_cameras,
    project_points,
)
from avfusion.types import Image, PointCloud, Sensor

__all__ = [
    "CountsToKelvin",
    "PaintResult",
    "RadarProjection",
    "TemperaturePaint",
    "paint_colour",
    "paint_temperature",
    "project_radar",
    "sample_image",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
Interpolation = Literal["bilinear", "nearest"]
OverlapRule = Literal["border", "time"]
_RULES = ("border", "time")
_INTERPOLATIONS = ("bilinear", "nearest")


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def sample_image(
    pixels: npt.NDArray[Any],
    uv_px: npt.ArrayLike,
    mask: npt.NDArray[np.bool_] | None = None,
    *,
    interpolation: Interpolation = "bilinear",
) -> F64:
    """Values (N, C) float64 of an H×W or H×W×C image at sub-pixel positions ``uv_px`` (N, 2).

    Pixel centres are integer coordinates; positions inside ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``
    are sampled (the outer half pixel uses the edge pixels), others (and non-finite ones, and
    those where ``mask`` is False) give NaN. ``bilinear`` blends the four surrounding pixel
    centres; ``nearest`` takes the pixel holding the point, ``(floor(v + 0.5), floor(u + 0.5))``.
    """
    img = np.asarray(pixels)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise AVFusionError(f"sample_image: pixels must be an H×W or H×W×C array, got {img.shape}")
    if interpolation not in _INTERPOLATIONS:
        raise AVFusionError(
            f"sample_image: interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}"
        )
    uv = np.asarray(uv_px, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise AVFusionError(f"sample_image: uv_px must have shape (N, 2), got {uv.shape}")
    n = uv.shape[0]
    if mask is not None and np.shape(mask) != (n,):
        raise AVFusionError(f"sample_image: mask has shape {np.shape(mask)}, expected ({n},)")
    h, w = img.shape[:2]
    planes = img.reshape(h, w, -1)
    c = planes.shape[2]
    u, v = uv[:, 0], uv[:, 1]
    with np.errstate(invalid="ignore"):
        ok = (
            np.isfinite(u)
            & np.isfinite(v)
            & (u >= -0.5)
            & (u < w - 0.5)
            & (v >= -0.5)
            & (v < h - 0.5)
        )
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    out = np.full((n, c), np.nan)
    uu, vv = u[ok], v[ok]
    if interpolation == "nearest":
        col = np.clip(np.floor(uu + 0.5), 0, w - 1).astype(np.int64)
        row = np.clip(np.floor(vv + 0.5), 0, h - 1).astype(np.int64)
        out[ok] = planes[row, col].astype(np.float64)
        return out
    x = np.clip(uu, 0.0, w - 1.0)
    y = np.clip(vv, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    # Gather the four neighbours first, then convert (never the whole image).
    out[ok] = (
        planes[y0, x0].astype(np.float64) * ((1 - fx) * (1 - fy))
        + planes[y0, x1].astype(np.float64) * (fx * (1 - fy))
        + planes[y1, x0].astype(np.float64) * ((1 - fx) * fy)
        + planes[y1, x1].astype(np.float64) * (fx * fy)
    )
    return out


def _check_interpolation(interpolation: str, what: str) -> None:
    if interpolation not in _INTERPOLATIONS:
        raise AVFusionError(
            f"{what}: interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}"
        )


def _point_times_ego_ns(cloud: PointCloud) -> npt.NDArray[np.int64]:
    """Each point's capture time on the ego clock (the cloud's stamp when it has no per-point times)."""
    base = np.int64(cloud.t_ns + cloud.sensor.time_offset_ns)
    for name in (POINT_TIME_ATTR, CAPTURE_TIME_ATTR):
        if name in cloud.attrs:
            return np.asarray(cloud.attrs[name]).astype(np.int64) + base
    return np.full(len(cloud), base, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PaintResult:
    """Per-point colour, aligned with the cloud.

    ``rgb`` (N, 3) float32 in 0..255 (NaN where no camera paints the point; grey images give three
    equal channels); ``painted`` (N,) mask; ``camera_index`` (N,) int16 index into ``cameras``
    of the camera that painted each point (-1: none); ``uv_px`` (N, 2) the point's pixel in that
    camera (NaN where unpainted); ``n_cameras`` (N,) uint8 how many cameras had a valid view of the
    point (> 1 where ``rule`` chose); ``projections`` each camera's full ``Projection``.
    """

    rgb: npt.NDArray[np.float32]
    painted: npt.NDArray[np.bool_]
    camera_index: npt.NDArray[np.int16]
    uv_px: F64
    n_cameras: npt.NDArray[np.uint8]
    cameras: tuple[str, ...]
    rule: str
    projections: Mapping[str, Projection]

    def __len__(self) -> int:
        return int(self.painted.shape[0])

    def rgb_uint8(self) -> npt.NDArray[np.uint8]:
        """(N, 3) uint8 colours (rounded), 0 where unpainted (see ``painted``)."""
        out = np.zeros((len(self), 3), dtype=np.uint8)
        out[self.painted] = np.clip(np.rint(self.rgb[self.painted]), 0, 255).astype(np.uint8)
        return out

    def camera_names(self) -> npt.NDArray[np.str_]:
        """(N,) name of the camera that painted each point ('' where unpainted)."""
        names = np.array([*self.cameras, ""], dtype=np.str_)
        return names[np.where(self.camera_index >= 0, self.camera_index, len(self.cameras))]


def paint_colour(
    cloud: PointCloud,
    images: Mapping[str, Image],
    poses: Trajectory | None = None,
    *,
    rule: OverlapRule = "border",
    interpolation: Interpolation = "bilinear",
    **projection_kwargs: Any,
) -> PaintResult:
    """Colour every point of ``cloud`` from the colour cameras in ``images`` (name → Image).

    Projection as ``project_cloud_to_cameras`` (``poses``, ``motion_compensation``, ``deskew``,
    ``occlusion``, footprint and tolerance options pass through ``projection_kwargs``). Each
    point is painted by one camera in which it is ``valid``, chosen by ``rule`` (module
    docstring). Images must be uint8 RGB (H×W×3) or grey (H×W); a thermal or 16-bit image raises
    ``AVFusionError`` naming it (use ``paint_temperature``). Returns a ``PaintResult``.
    """
    what = f"paint_colour of '{cloud.sensor.name}'" + (f" {cloud.token}" if cloud.token else "")
    if rule not in _RULES:
        raise AVFusionError(f"{what}: rule must be one of {_RULES}, got {rule!r}")
    _check_interpolation(interpolation, what)
    names = tuple(images)
    for name, image in images.items():
        if not isinstance(image, Image):
            raise AVFusionError(
                f"{what}: images['{name}'] is a {type(image).__name__}, not an Image"
            )
        if image.sensor.name != name:
            raise AVFusionError(
                f"{what}: images['{name}'] is an image of sensor '{image.sensor.name}'"
            )
        if image.sensor.modality != "camera":
            raise AVFusionError(
                f"{what}: '{name}' is a {image.sensor.modality} camera; colour painting needs "
                "colour cameras (use paint_temperature for thermal images)"
            )
    n = len(cloud)
    projections = (
        project_cloud_to_cameras(cloud, dict(images), poses, **projection_kwargs) if names else {}
    )
    c = len(names)
    valid = np.zeros((c, n), dtype=bool)
    margin = np.full((c, n), -np.inf)
    dt = np.full((c, n), np.inf)
    t_point = _point_times_ego_ns(cloud) if rule == "time" or c > 1 else None
    for k, name in enumerate(names):
        proj, image = projections[name], images[name]
        cam = image.camera
        valid[k] = proj.valid
        uv = proj.uv_px
        with np.errstate(invalid="ignore"):
            m = np.minimum.reduce(
                [
                    uv[:, 0] + 0.5,
                    cam.width - 0.5 - uv[:, 0],
                    uv[:, 1] + 0.5,
                    cam.height - 0.5 - uv[:, 1],
                ]
            ) / math.sqrt(cam.fx * cam.fy)
        margin[k] = np.where(proj.valid, m, -np.inf)
        if t_point is not None:
            t_cam = image.t_ns + image.sensor.time_offset_ns
            dt[k] = np.where(proj.valid, np.abs(t_point - t_cam).astype(np.float64), np.inf)
    if c:
        # Lexicographic choice: primary criterion, then the other, then camera order (argmax and
        # argmin return the first of equal values).
        primary, secondary = (-margin, dt) if rule == "border" else (dt, -margin)
        best_primary = primary.min(axis=0)
        tied = primary == best_primary[None]
        secondary_masked = np.where(tied, secondary, np.inf)
        choice = np.argmin(secondary_masked, axis=0)
        painted = np.any(valid, axis=0)
    else:
        choice = np.zeros(n, dtype=np.int64)
        painted = np.zeros(n, dtype=bool)
    rgb = np.full((n, 3), np.nan, dtype=np.float32)
    uv_out = np.full((n, 2), np.nan)
    camera_index = np.full(n, -1, dtype=np.int16)
    for k, name in enumerate(names):
        sel = painted & (choice == k)
        if not sel.any():
            continue
        pixels = images[name].pixels
        if pixels.dtype != np.uint8:
            raise AVFusionError(
                f"{what}: image of '{name}' at t={images[name].t_ns} has {pixels.dtype} pixels; "
                "colour painting needs uint8 RGB or grey"
            )
        values = sample_image(pixels, projections[name].uv_px[sel], interpolation=interpolation)
        if values.shape[1] == 1:
            values = np.repeat(values, 3, axis=1)
        elif values.shape[1] != 3:
            raise AVFusionError(
                f"{what}: image of '{name}' has {values.shape[1]} channels; expected RGB or grey"
            )
        rgb[sel] = values.astype(np.float32)
        uv_out[sel] = projections[name].uv_px[sel]
        camera_index[sel] = k
    # The projection and the sampler share the pixel convention; this only guards the bounds.
    sampled = np.all(np.isfinite(rgb), axis=1)
    painted &= sampled
    camera_index[~sampled] = -1
    uv_out[~sampled] = np.nan
    n_cam = valid.sum(axis=0).astype(np.uint8) if c else np.zeros(n, dtype=np.uint8)
    logger.debug(
        "%s: %d of %d points painted by %d cameras (%d seen by several, rule %s)",
        what,
        int(painted.sum()),
        n,
        c,
        int((n_cam > 1).sum()),
        rule,
    )
    return PaintResult(rgb, painted, camera_index, uv_out, n_cam, names, rule, projections)


# --------------------------------------------------------------------------------------------
# Temperature
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountsToKelvin:
    """A thermal camera's radiometric mapping: ``kelvin = scale_k * counts + offset_k``.

    ``netd_k`` (noise-equivalent temperature difference, K) is informative when the log states
    it. Build it from the log with ``CountsToKelvin.from_extras(log.sensor_extras[channel])``.
    """

    scale_k: float
    offset_k: float = 0.0
    netd_k: float | None = None
    sensor: str = ""

    FORMULA = "kelvin = scale_k * counts + offset_k"

    def __post_init__(self) -> None:
        where = f"counts_to_kelvin of '{self.sensor or 'thermal camera'}'"
        for name in ("scale_k", "offset_k"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise LogFormatError(f"{where}: {name} must be a finite number, got {value!r}")
        if self.scale_k <= 0:
            raise LogFormatError(f"{where}: scale_k must be > 0 K per count, got {self.scale_k}")
        if self.netd_k is not None and (
            isinstance(self.netd_k, bool)
            or not isinstance(self.netd_k, int | float)
            or not (math.isfinite(self.netd_k) and self.netd_k >= 0)
        ):
            raise LogFormatError(f"{where}: netd_k must be a number >= 0, got {self.netd_k!r}")

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], sensor: str = "") -> CountsToKelvin:
        """From an ``avfusion_sensor.json`` row (``NuScenesLog.sensor_extras[channel]``) or its
        ``counts_to_kelvin`` object. Raises ``LogFormatError`` naming the sensor when the mapping
        is missing, of another formula, or has bad numbers."""
        if not isinstance(extras, Mapping):
            raise LogFormatError(
                f"counts_to_kelvin of '{sensor or 'thermal camera'}': expected a mapping, got "
                f"{type(extras).__name__}"
            )
        name = sensor or str(extras.get("channel", ""))
        where = f"counts_to_kelvin of '{name or 'thermal camera'}'"
        mapping = extras.get("counts_to_kelvin", extras)
        if not isinstance(mapping, Mapping) or "scale_k" not in mapping:
            keys = ", ".join(sorted(map(str, extras))) or "none"
            raise LogFormatError(
                f"{where}: no counts_to_kelvin mapping with 'scale_k' (keys: {keys}); the thermal "
                "sensor's avfusion_sensor.json row must state it"
            )
        formula = mapping.get("formula", cls.FORMULA)
        if " ".join(str(formula).split()) != cls.FORMULA:
            raise LogFormatError(
                f"{where}: unsupported formula {formula!r}; supported: {cls.FORMULA!r}"
            )
        return cls(mapping["scale_k"], mapping.get("offset_k", 0.0), mapping.get("netd_k"), name)

    def kelvin(self, counts: npt.ArrayLike) -> F64:
        """Temperatures (K, float64) of radiometric counts (NaN stays NaN)."""
        return np.asarray(counts, dtype=np.float64) * self.scale_k + self.offset_k


@dataclass(frozen=True, eq=False)
class TemperaturePaint:
    """Per-point temperature from one thermal image, aligned with the cloud.

    ``kelvin`` (N,) float64, NaN where the point is not ``valid`` in the thermal camera;
    ``painted`` (N,) mask; ``uv_px`` (N, 2) the thermal pixel (NaN where not projectable);
    ``projection`` the full ``Projection``; ``mapping`` the counts → kelvin mapping used.
    """

    kelvin: F64
    painted: npt.NDArray[np.bool_]
    uv_px: F64
    projection: Projection
    mapping: CountsToKelvin
    camera: str

    def __len__(self) -> int:
        return int(self.kelvin.shape[0])

    @property
    def celsius(self) -> F64:
        """``kelvin - 273.15``."""
        return self.kelvin - 273.15


def paint_temperature(
    cloud: PointCloud,
    thermal: Image,
    counts_to_kelvin: CountsToKelvin | Mapping[str, Any],
    poses: Trajectory | None = None,
    *,
    interpolation: Interpolation = "bilinear",
    **projection_kwargs: Any,
) -> TemperaturePaint:
    """Per-point temperature (kelvin) of ``cloud`` from a uint16 radiometric ``thermal`` image.

    ``counts_to_kelvin``: a ``CountsToKelvin`` or the log's mapping (the ``avfusion_sensor.json``
    row or its ``counts_to_kelvin`` object). Projection as ``project_cloud`` (``poses`` and
    ``projection_kwargs``: ``motion_compensation``, ``deskew``, ``occlusion``, ...). The
    thermal sensor's clock offset matters (a 25 ms error at 10 m/s moves the camera by 25 cm):
    to use a corrected offset, give an image whose sensor carries it and no stored pose
    (``dataclasses.replace(image, sensor=replace(sensor, time_offset_ns=...), world_from_ego=None)``)
    with ``poses``.
    """
    what = f"paint_temperature of '{cloud.sensor.name}' from '{thermal.sensor.name}'"
    _check_interpolation(interpolation, what)
    if not isinstance(thermal, Image):
        raise AVFusionError(f"{what}: thermal must be an Image, got {type(thermal).__name__}")
    mapping = (
        counts_to_kelvin
        if isinstance(counts_to_kelvin, CountsToKelvin)
        else CountsToKelvin.from_extras(counts_to_kelvin, thermal.sensor.name)
    )
    if thermal.sensor.modality != "thermal":
        raise AVFusionError(
            f"{what}: '{thermal.sensor.name}' is a {thermal.sensor.modality} sensor, not a thermal camera"
        )
    proj = project_cloud(cloud, thermal, poses, **projection_kwargs)
    kelvin = np.full(len(cloud), np.nan)
    if proj.valid.any():
        pixels = thermal.pixels
        if pixels.dtype != np.uint16 or pixels.ndim != 2:
            raise AVFusionError(
                f"{what}: thermal image at t={thermal.t_ns} must be H×W uint16 radiometric counts, "
                f"got {pixels.dtype} {pixels.shape}"
            )
        counts = sample_image(pixels, proj.uv_px, proj.valid, interpolation=interpolation)[:, 0]
        kelvin = mapping.kelvin(counts)
    painted = np.isfinite(kelvin)
    uv = proj.uv_px.copy()
    logger.debug("%s: %d of %d points painted", what, int(painted.sum()), len(cloud))
    return TemperaturePaint(kelvin, painted, uv, proj, mapping, thermal.sensor.name)


# --------------------------------------------------------------------------------------------
# Radar: vertical segments and Doppler arrows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RadarProjection:
    """Radar detections in one camera, aligned with the detections (all pixels NaN where not
    projectable).

    ``point_uv_px`` (N, 2) the detection as measured (z = 0 in the radar frame),
    ``point_in_image`` (N,); ``bottom_uv_px`` / ``top_uv_px`` (N, 2) the ends of its vertical
    segment and ``segment_valid`` (N,) both ends projectable and the segment crossing the image;
    ``arrow_start_uv_px`` (= ``point_uv_px``) and ``arrow_end_uv_px`` the Doppler arrow,
    ``arrow_valid`` (N,) both ends projectable and the start in the image; ``velocity_radar``
    (N, 3) the velocity drawn (radar frame, m/s); ``depth_m`` (N,) the detection's camera depth;
    ``camera_from_radar`` the (motion-compensated) transform used.
    """

    point_uv_px: F64
    point_in_image: npt.NDArray[np.bool_]
    depth_m: F64
    bottom_uv_px: F64
    top_uv_px: F64
    segment_valid: npt.NDArray[np.bool_]
    arrow_start_uv_px: F64
    arrow_end_uv_px: F64
    arrow_valid: npt.NDArray[np.bool_]
    velocity_radar: F64
    camera_from_radar: Transform
    camera: str

    def __len__(self) -> int:
        return int(self.depth_m.shape[0])


def project_radar(
    cloud: PointCloud,
    image: Image | tuple[Sensor, int],
    poses: Trajectory | None = None,
    *,
    heights_m: tuple[float, float] = (0.0, 2.0),
    height_reference: Literal["ego", "detection"] = "ego",
    arrow_dt_s: float = 0.5,
    velocity_attrs: tuple[str, str] = ("vx_comp", "vy_comp"),
    motion_compensation: bool = True,
    tolerance_ns: int = 0,
    min_depth_m: float = 0.1,
) -> RadarProjection:
    """Radar detections of ``cloud`` as vertical segments and Doppler arrows in ``image``.

    ``heights_m`` (bottom, top): with ``height_reference="ego"`` absolute z in the ego frame
    (e.g. (0, 2): from the ground to 2 m), with ``"detection"`` offsets from the detection's
    height (e.g. (-1, 1)); the segment keeps the detection's ego x and y. The arrow goes from the
    detection to ``detection + v · arrow_dt_s`` with ``v = (vx, vy, 0)`` from ``velocity_attrs``
    (default the ego-motion-compensated ``vx_comp``, ``vy_comp``; nuScenes gives them in the
    radar frame). The camera transform is motion-compensated as ``project_cloud`` (no occlusion:
    the segments are not surfaces). Raises ``AVFusionError`` naming the cloud when a velocity
    attribute is missing or an option is bad.
    """
    what = f"project_radar of '{cloud.sensor.name}'" + (f" {cloud.token}" if cloud.token else "")
    if cloud.sensor.modality != "radar":
        raise AVFusionError(
            f"{what}: '{cloud.sensor.name}' is a {cloud.sensor.modality} sensor, not a radar"
        )
    if height_reference not in ("ego", "detection"):
        raise AVFusionError(
            f"{what}: height_reference must be 'ego' or 'detection', got {height_reference!r}"
        )
    h = np.asarray(heights_m, dtype=np.float64)
    if h.shape != (2,) or not np.all(np.isfinite(h)) or h[0] >= h[1]:
        raise AVFusionError(
            f"{what}: heights_m must be (bottom, top) finite metres with bottom < top, got {heights_m!r}"
        )
    if not (math.isfinite(arrow_dt_s) and arrow_dt_s > 0):
        raise AVFusionError(
            f"{what}: arrow_dt_s must be a positive number of seconds, got {arrow_dt_s!r}"
        )
    missing = [a for a in velocity_attrs if a not in cloud.attrs]
    if missing:
        have = ", ".join(sorted(cloud.attrs)) or "none"
        raise AVFusionError(
            f"{what}: no velocity attribute {', '.join(repr(m) for m in missing)} (attributes: {have})"
        )
    n = len(cloud)
    p = np.asarray(cloud.xyz, dtype=np.float64)
    vel = np.zeros((n, 3))
    vel[:, 0] = np.asarray(cloud.attrs[velocity_attrs[0]], dtype=np.float64)
    vel[:, 1] = np.asarray(cloud.attrs[velocity_attrs[1]], dtype=np.float64)
    ego_from_radar = cloud.sensor.ego_from_sensor
    p_ego = np.asarray(ego_from_radar.apply(p), dtype=np.float64)
    base = np.zeros(n) if height_reference == "ego" else p_ego[:, 2]
    ends_ego = np.repeat(p_ego[None], 2, axis=0)
    ends_ego[0, :, 2] = base + h[0]
    ends_ego[1, :, 2] = base + h[1]
    radar_from_ego = ego_from_radar.inverse()
    ends = np.asarray(radar_from_ego.apply(ends_ego.reshape(-1, 3)), dtype=np.float64)
    tip = p + vel * arrow_dt_s
    stacked = np.ascontiguousarray(np.concatenate([p, ends, tip]))
    # The camera transform of the detections' cloud (motion-compensated like any projection),
    # then every constructed point through it without occlusion.
    bare = PointCloud(
        np.ascontiguousarray(p), cloud.sensor, cloud.t_ns, {}, cloud.world_from_ego, cloud.token
    )
    head = project_cloud(
        bare,
        image,
        poses,
        motion_compensation=motion_compensation,
        occlusion=False,
        tolerance_ns=tolerance_ns,
        min_depth_m=min_depth_m,
    )
    cam = head.camera_model
    if cam is None:  # pragma: no cover - project_points always records the camera model
        raise AVFusionError(f"{what}: the projection carries no camera model")
    proj = project_points(
        stacked,
        head.camera_from_source,
        cam,
        occlusion=False,
        min_depth_m=min_depth_m,
        source=cloud.sensor.name,
        camera_name=head.camera,
        t_source_ns=head.t_source_ns,
        t_camera_ns=head.t_camera_ns,
    )
    uv = proj.uv_px.astype(np.float64)  # Projection.uv_px is float32; the geometry here is float64
    point_uv, bottom_uv, top_uv, tip_uv = uv[:n], uv[n : 2 * n], uv[2 * n : 3 * n], uv[3 * n :]
    rect = (-0.5, -0.5, cam.width - 0.5, cam.height - 0.5)
    with np.errstate(invalid="ignore"):
        point_in = (
            np.all(np.isfinite(point_uv), axis=1)
            & (point_uv[:, 0] >= rect[0])
            & (point_uv[:, 0] < rect[2])
            & (point_uv[:, 1] >= rect[1])
            & (point_uv[:, 1] < rect[3])
        )
    both = np.all(np.isfinite(bottom_uv), axis=1) & np.all(np.isfinite(top_uv), axis=1)
    _, _, crosses = _clip_polylines(bottom_uv, top_uv, both, rect)
    arrow_valid = point_in & np.all(np.isfinite(tip_uv), axis=1)
    logger.debug(
        "%s: %d detections, %d in image, %d segments and %d arrows drawable",
        what,
        n,
        int(point_in.sum()),
        int(crosses.sum()),
        int(arrow_valid.sum()),
    )
    return RadarProjection(
        point_uv.copy(),
        point_in,
        proj.depth_m[:n].copy(),
        bottom_uv.copy(),
        top_uv.copy(),
        crosses,
        point_uv.copy(),
        tip_uv.copy(),
        arrow_valid,
        vel,
        head.camera_from_source,
        head.camera,
    )
