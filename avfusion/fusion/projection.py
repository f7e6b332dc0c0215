"""Project point clouds into cameras: pixels, depth, validity, occlusion and depth maps.

A LiDAR (or radar) point ``p`` of the source sensor lands in a camera as::

    p_cam = camera_from_source · p
    camera_from_source = cam_from_ego · ego_from_world(t_cam) · world_from_ego(t_src) · ego_from_src

(``calibration.motion.observation_target_from_source``: each observation's stored pose at its
capture time, else the pose track at its stamp plus the sensor's ``time_offset_ns``). With
``motion_compensation=False`` the static chain ``cam_from_ego · ego_from_src`` is used instead,
which is right only when both sensors saw the same instant (useful to measure what motion
compensation buys). A rotating LiDAR's sweep spans 50 ms; when the cloud carries per-point
times (``attrs["point_time_ns"]``) and a pose track is given, ``project_cloud`` first deskews
it to its stamp (``fusion.deskew.deskew_cloud``) so every point sits where it was seen from the
sensor pose at the stamp.

Nothing is dropped: a ``Projection`` is aligned with the input points. ``in_image`` says the
point is finite, in front of the camera (depth > ``min_depth_m``), inside the lens model's
valid range and inside the image; ``occluded`` says a nearer surface hides it; ``valid`` is
``in_image & ~occluded``.

**Occlusion** (on by default) is a two-pass z-buffer in one fused numba kernel
(``fusion.kernels.project_cameras_kernel``: transform, project, z-buffer, test). A point's
*footprint* is the square (or disc) of radius ``r`` px around its pixel: ``r = footprint_px``,
or, with ``footprint_size_m``, the pixels a patch of that size covers at the point's depth,
``r = round(footprint_size_m · fx / (2 depth))`` capped at ``footprint_px``. A point is
occluded when a point whose footprint covers its pixel is nearer by more than
``depth_tolerance_m + depth_tolerance_rel · depth``. Pass 1 rasters the minimum depth (over
footprints, or, for a fixed footprint, at each point's own pixel), pass 2 tests every point (at
its own pixel, or, for a fixed footprint, over the footprint around it: the same result, since
footprints are symmetric). Both passes visit the in-image points sorted by pixel row (a
stable counting sort), so a band of image rows needs only a ring of ``2 r + 1`` buffer rows,
which stays in the cache (the full 1600×900 float32 buffer, 5.8 MB, did not). One camera's
work is split into jobs (chunks of points for the projection, bands of rows for the z-buffer)
over numba's threads; several cameras run one camera per thread of a small pool of Python
threads (the kernel releases the GIL), each kernel single-threaded, which degrades gracefully
on a busy machine where a parallel region waits for its slowest thread. No two jobs write one
output, so the result is deterministic and does not depend on the number of threads. Pinhole
cameras project through a branch-free loop that LLVM vectorises. Outputs are float32 (see
``Projection``).

LiDAR returns are sparse (a 32-beam sweep leaves 1.33° ≈ 29 px between rings in a 1266 px
camera), so the z-buffer catches points that lie *behind a footprint*: mostly the background
that a LiDAR mounted higher than the camera sees just beyond an object's top, which the camera
cannot. The default footprint (0.25 m patches, radius ≤ 24 px) suits single sweeps; a dense
multi-sweep cloud wants a small fixed footprint (``footprint_size_m=None, footprint_px=2``).
Larger footprints hide more of the unseen background but also more of the visible surfaces
next to silhouettes.

Pixels follow ``CameraModel``: the centre of the top-left pixel is (0, 0); a point's pixel is
``(floor(v + 0.5), floor(u + 0.5))``. ``depth_m`` is the camera-frame z.

**Depth maps**: ``depth_map`` keeps the nearest valid point per pixel (0 = no return);
``densify_depth`` fills holes by inverse-distance weighting of the k nearest returns within a
radius.

Layering: ``types.Frame.project`` calls ``project_cloud`` through a lazy import (the one place
where ``types`` reaches into ``fusion``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numba
import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.motion import (
    observation_target_from_source,
    static_target_from_source,
)
from avfusion.calibration.timesync import int_ns
from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.errors import AVFusionError, CalibrationError, SyncError
from avfusion.fusion.deskew import POINT_TIME_ATTR, deskew_cloud
from avfusion.fusion.kernels import (
    CAM_PARAMS,
    densify_depth_kernel,
    depth_map_kernel,
    project_cameras_kernel,
)
from avfusion.types import Frame, Image, PointCloud, Sensor

__all__ = [
    "OcclusionOptions",
    "Projection",
    "densify_depth",
    "depth_map",
    "project_cloud",
    "project_cloud_to_cameras",
    "project_points",
    "project_to_all_cameras",
]

logger = logging.getLogger(__name__)

FootprintShape = Literal["square", "disc"]
CameraTarget = Image | tuple[Sensor, int]

_DIST_CODES = {"none": 0, "radtan": 1, "fisheye": 2}

#: Default footprint: a return stands for a 0.25 m patch (about the gap between two rings of a
#: 32-beam sweep at 10 m), so near returns cover the gaps between rings; radius capped at 24 px.
#: Measured on sample_data (3 keyframes × 4 cameras, true calibration and clock offsets): depth
#: errors > 1 m drop from 3.8 % of the valid pixels (fixed 2 px) to 1.0 %, for 5 % fewer valid
#: pixels. Dense multi-sweep clouds want a small fixed footprint instead
#: (``footprint_size_m=None, footprint_px=2``).
DEFAULT_FOOTPRINT_PX = 24
DEFAULT_FOOTPRINT_SIZE_M = 0.25


@dataclass(frozen=True, eq=False)
class Projection:
    """Points of one sensor projected into one camera, aligned with the input points.

    ``uv_px`` (N, 2) float32 pixel coordinates, NaN where the point is not projectable (behind
    the camera or at depth <= ``min_depth_m``, non-finite, or outside the lens model's valid
    range); points in front but outside the image keep their (off-image) coordinates (inf
    beyond float32's range). ``depth_m`` (N,) float32 camera-frame z (non-finite for
    non-finite points). Precision: the arithmetic is float64, rounded once to float32 on
    output, so ``uv_px`` is within half a float32 ulp of the float64 value: <= 6.1e-5 px below
    2048 px (1.2e-4 px below 4096 px), and ``depth_m`` within 6e-8 relative (3.8e-6 m at
    100 m). ``in_image``, each point's pixel (``pixel_rc``) and the occlusion test are taken
    from these float32 values, so they agree with what a caller reads. (float64 outputs were
    58 MB for a 350k-point cloud in six cameras; writing and faulting them in was a third of
    the time.) ``in_image`` (N,) projectable and inside the image; ``occluded`` (N,) hidden
    behind a nearer surface (all False when occlusion was off); ``valid`` = ``in_image &
    ~occluded``. ``camera_from_source`` is the transform used
    (for a deskewed cloud: from the source frame at its stamp ``t_source_ns``);
    ``t_source_ns`` / ``t_camera_ns`` are the two observations' stamps (their sensors' clocks).
    ``camera_model`` is the camera's model (image size for ``depth_map``).
    """

    uv_px: npt.NDArray[np.float32]
    depth_m: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    in_image: npt.NDArray[np.bool_]
    occluded: npt.NDArray[np.bool_]
    source: str
    camera: str
    camera_from_source: Transform
    t_source_ns: int
    t_camera_ns: int
    camera_model: CameraModel | None = None

    def __len__(self) -> int:
        return int(self.depth_m.shape[0])

    @property
    def pixel_rc(self) -> npt.NDArray[np.int64]:
        """(N, 2) integer (row, col) of each point's pixel; (-1, -1) where not in the image."""
        out = np.full((len(self), 2), -1, dtype=np.int64)
        uv = self.uv_px[self.in_image]
        out[self.in_image, 0] = np.floor(uv[:, 1] + 0.5)
        out[self.in_image, 1] = np.floor(uv[:, 0] + 0.5)
        if self.camera_model is not None:
            h, w = self.camera_model.height, self.camera_model.width
            out[self.in_image, 0] = np.clip(out[self.in_image, 0], 0, h - 1)
            out[self.in_image, 1] = np.clip(out[self.in_image, 1], 0, w - 1)
        return out

    def __repr__(self) -> str:
        return (
            f"Projection({self.source} -> {self.camera}: {len(self)} points, "
            f"{int(self.in_image.sum())} in image, {int(self.occluded.sum())} occluded, "
            f"{int(self.valid.sum())} valid)"
        )


@dataclass(frozen=True)
class OcclusionOptions:
    """Z-buffer settings (see the module docstring). Validated on construction."""

    footprint_px: int = DEFAULT_FOOTPRINT_PX
    footprint_shape: FootprintShape = "square"
    footprint_size_m: float | None = DEFAULT_FOOTPRINT_SIZE_M
    depth_tolerance_m: float = 0.3
    depth_tolerance_rel: float = 0.05

    def __post_init__(self) -> None:
        fp = self.footprint_px
        if isinstance(fp, bool) or not isinstance(fp, int | np.integer) or not 0 <= fp <= 64:
            raise AVFusionError(
                f"projection: footprint_px must be an integer in [0, 64], got {fp!r}"
            )
        if self.footprint_shape not in ("square", "disc"):
            raise AVFusionError(
                f"projection: footprint_shape must be 'square' or 'disc', got {self.footprint_shape!r}"
            )
        if self.footprint_size_m is not None and not (
            np.isfinite(self.footprint_size_m) and self.footprint_size_m > 0
        ):
            raise AVFusionError(
                f"projection: footprint_size_m must be a positive number or None, got {self.footprint_size_m!r}"
            )
        for name in ("depth_tolerance_m", "depth_tolerance_rel"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise AVFusionError(f"projection: {name} must be finite and >= 0, got {value!r}")
        object.__setattr__(self, "footprint_px", int(fp))

    def size_px_m(self, camera: CameraModel) -> float:
        """``footprint_size_m · fx`` (0 for a fixed footprint), the kernels' parameter."""
        return 0.0 if self.footprint_size_m is None else float(self.footprint_size_m) * camera.fx


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _camera_params(camera: CameraModel) -> npt.NDArray[np.float64]:
    params = np.zeros(CAM_PARAMS, dtype=np.float64)
    k = camera.K
    params[0:5] = (k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2])
    params[5 : 5 + camera.coeffs.size] = camera.coeffs
    params[13] = float(camera._valid_limit)  # type: ignore[attr-defined]
    params[14] = _DIST_CODES[camera.distortion]
    return params


def _check_points(points: Any, what: str) -> npt.NDArray[np.floating[Any]]:
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] != 3:
        raise AVFusionError(
            f"{what}: points must be an (N, 3) array, got {getattr(points, 'shape', type(points).__name__)}"
        )
    if points.dtype not in (np.float32, np.float64):
        raise AVFusionError(f"{what}: points must be float32 or float64, got {points.dtype}")
    return np.ascontiguousarray(points)


def _check_min_depth(min_depth_m: float, what: str) -> float:
    value = float(min_depth_m)
    if not (np.isfinite(value) and value >= 0):
        raise AVFusionError(f"{what}: min_depth_m must be finite and >= 0, got {min_depth_m!r}")
    return value


# --------------------------------------------------------------------------------------------
# Low level: points in the source frame, a transform and a camera model
# --------------------------------------------------------------------------------------------


def project_points(
    points: npt.NDArray[np.floating[Any]],
    camera_from_source: Transform,
    camera: CameraModel,
    *,
    occlusion: bool = True,
    footprint_px: int = DEFAULT_FOOTPRINT_PX,
    footprint_shape: FootprintShape = "square",
    footprint_size_m: float | None = DEFAULT_FOOTPRINT_SIZE_M,
    depth_tolerance_m: float = 0.3,
    depth_tolerance_rel: float = 0.05,
    min_depth_m: float = 0.1,
    source: str = "",
    camera_name: str = "",
    t_source_ns: int = 0,
    t_camera_ns: int = 0,
) -> Projection:
    """Project ``points`` (N, 3, float32 or float64, source frame) into ``camera``.

    ``camera_from_source`` maps source coordinates into the camera frame (x right, y down,
    z forward). Occlusion options as in the module docstring; ``min_depth_m`` is the nearest
    depth counted as in front of the camera. ``source``, ``camera_name`` and the two stamps
    only label the result. The input is not modified; a new ``Projection`` aligned with it is
    returned. Raises ``AVFusionError`` for a bad shape, dtype or option.
    """
    what = f"project_points({source or 'points'} -> {camera_name or 'camera'})"
    pts = _check_points(points, what)
    if not isinstance(camera_from_source, Transform):
        raise CalibrationError(
            f"{what}: camera_from_source must be a Transform, got {type(camera_from_source).__name__}"
        )
    if not isinstance(camera, CameraModel):
        raise CalibrationError(f"{what}: camera must be a CameraModel, got {type(camera).__name__}")
    opts = OcclusionOptions(
        footprint_px, footprint_shape, footprint_size_m, depth_tolerance_m, depth_tolerance_rel
    )
    min_depth = _check_min_depth(min_depth_m, what)
    (out,) = _project_batch(
        pts, [camera_from_source], [camera], occlusion=occlusion, opts=opts, min_depth_m=min_depth
    )
    uv, depth, in_image, occluded, valid = out
    logger.debug(
        "%s: %d points, %d in image, %d occluded",
        what,
        len(pts),
        int(in_image.sum()),
        int(occluded.sum()),
    )
    return Projection(
        uv,
        depth,
        valid,
        in_image,
        occluded,
        source,
        camera_name,
        camera_from_source,
        int_ns(t_source_ns, f"{what} t_source_ns"),
        int_ns(t_camera_ns, f"{what} t_camera_ns"),
        camera,
    )


Outputs = tuple[
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    npt.NDArray[np.bool_],
    npt.NDArray[np.bool_],
    npt.NDArray[np.bool_],
]

#: Cameras × points above which one call is split into groups of cameras (bounds the scratch).
_MAX_ENTRIES_PER_CALL = 16_000_000
#: list index, list pixel key, list depth, sorted index, sorted column, sorted depth
_SCRATCH_DTYPES = (np.int32, np.int32, np.float32, np.int32, np.int32, np.float32)
_NO_SCRATCH = tuple(np.empty((0, 0), dtype=d) for d in _SCRATCH_DTYPES)


class _ScratchBuffers(threading.local):
    """Per-thread scratch of the fused kernel: the in-image points of every (camera, chunk)
    and the same sorted by pixel row, (cameras, points) each; grown, never shrunk. Only the
    entries of in-image points are ever written, so only those pages become resident."""

    def __init__(self) -> None:
        self.size = 0
        self.arrays: tuple[npt.NDArray[Any], ...] = ()

    def get(self, n_cams: int, n: int) -> tuple[npt.NDArray[Any], ...]:
        size = n_cams * n
        if size > self.size:
            size = max(size, 2 * self.size)
            self.arrays = tuple(np.empty(size, dtype=d) for d in _SCRATCH_DTYPES)
            self.size = size
        return tuple(a[: n_cams * n].reshape(n_cams, n) for a in self.arrays)


_SCRATCH = _ScratchBuffers()


#: Several cameras: one single-threaded kernel call per camera on a Python thread pool (True),
#: or one call for all cameras with numba's threads (False).
_CAMERAS_ON_POOL = True
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """The Python threads that run one camera each; every one calls numba kernels with one
    thread (``numba.set_num_threads`` is per thread)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers != threads:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(
                threads,
                thread_name_prefix="avfusion-projection",
                initializer=numba.set_num_threads,
                initargs=(1,),
            )
        return _POOL


def _forget_pool_after_fork() -> None:
    """A forked child inherits the pool object but none of its threads: a job submitted to it
    would never run. The child starts a fresh pool (and lock) on first use instead."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _allocate(
    n_cameras: int, n: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Output blocks of C cameras: uv (C, N, 2) and depth (C, N) float32, the three flags
    (3, C, N). For a 6-camera, 350k-point frame each block stays under glibc's largest mmap
    threshold (32 MB), so repeated projections reuse heap memory instead of faulting in fresh
    pages on every call (float64 uv alone was 34 MB: 4-5 ms of page faults per call)."""
    return (
        np.empty((n_cameras, n, 2), dtype=np.float32),
        np.empty((n_cameras, n), dtype=np.float32),
        np.empty((3, n_cameras, n), dtype=np.bool_),
    )


def _project_batch(
    points: npt.NDArray[np.floating[Any]],
    transforms: Sequence[Transform],
    cameras: Sequence[CameraModel],
    *,
    occlusion: bool,
    opts: OcclusionOptions,
    min_depth_m: float,
) -> list[Outputs]:
    """Project ``points`` into every camera with the fused parallel kernel (one call for all
    cameras, split into groups of cameras only for very large inputs); one ``Outputs`` per
    camera, views of the shared blocks.

    The kernel's work split (cameras × point chunks, cameras × row bands, over the threads)
    never changes a result: the outputs do not depend on the number of threads.
    """
    n_cams = len(cameras)
    n = points.shape[0]
    uv, depth, flags = _allocate(n_cams, n)
    outs: list[Outputs] = [
        (uv[c], depth[c], flags[0, c], flags[1, c], flags[2, c]) for c in range(n_cams)
    ]
    if n == 0 or n_cams == 0:
        return outs
    flat = points.reshape(-1)
    uv_flat = uv.reshape(n_cams, 2 * n)
    cams = np.stack([_camera_params(cam) for cam in cameras])
    sizes = np.array([(cam.width, cam.height) for cam in cameras], dtype=np.int64)
    size_px = np.array([opts.size_px_m(cam) for cam in cameras], dtype=np.float64)
    tfs = np.array(
        [np.concatenate([tf.rotation, tf.translation[:, None]], axis=1) for tf in transforms],
        dtype=np.float64,
    ).reshape(n_cams, 12)

    def run(g0: int, g1: int, threads: int) -> None:
        status = project_cameras_kernel(
            flat,
            tfs[g0:g1],
            cams[g0:g1],
            sizes[g0:g1],
            min_depth_m,
            bool(occlusion),
            opts.footprint_px,
            size_px[g0:g1],
            opts.footprint_shape == "disc",
            opts.depth_tolerance_m,
            opts.depth_tolerance_rel,
            threads,
            uv_flat[g0:g1],
            depth[g0:g1],
            flags[0, g0:g1],
            flags[1, g0:g1],
            flags[2, g0:g1],
            *(_SCRATCH.get(g1 - g0, n) if occlusion else _NO_SCRATCH),
        )
        if status < 0:  # pragma: no cover - the wrapper always passes consistent arrays
            raise AVFusionError(
                f"projection kernel refused its arrays ({n} points, {g1 - g0} cameras)"
            )

    threads = max(1, numba.get_num_threads())
    if n_cams == 1 or threads == 1 or not _CAMERAS_ON_POOL:  # chunks and bands on numba's threads
        group = max(1, min(n_cams, _MAX_ENTRIES_PER_CALL // n))
        for g0 in range(0, n_cams, group):
            run(g0, min(g0 + group, n_cams), threads)
        return outs
    # Several cameras: one single-threaded kernel call per camera on a pool of Python threads
    # (the kernel releases the GIL), each taking the next camera when done. On a busy machine
    # this degrades gracefully, where numba's parallel regions wait for their slowest thread
    # (measured 2.5× slower than this with other jobs on both cores).
    # The calling thread takes cameras too (``next`` on a count is atomic under the GIL).
    queue = itertools.count()

    def worker() -> None:
        for c in queue:
            if c >= n_cams:
                return
            run(c, c + 1, 1)

    futures = [_pool(threads - 1).submit(worker) for _ in range(threads - 1)]
    saved = numba.get_num_threads()
    numba.set_num_threads(1)  # per thread: this thread's kernel calls are single-threaded
    try:
        worker()
    finally:
        numba.set_num_threads(saved)
        for f in futures:  # never leave a kernel writing into buffers nobody waits for
            f.result()
    return outs


# --------------------------------------------------------------------------------------------
# Observations: clouds and images with their capture times and poses
# --------------------------------------------------------------------------------------------


def _no_pixels(sensor: Sensor, t_ns: int) -> Any:
    def loader() -> npt.NDArray[Any]:
        raise AVFusionError(
            f"projection target '{sensor.name}' at t={t_ns} is a (camera, time) pair and has no pixels"
        )

    return loader


def _as_image(target: Any, what: str) -> Image:
    """An ``Image`` (as given) or a pixel-less one for a (camera Sensor, stamp) pair."""
    if isinstance(target, Image):
        return target
    if (
        isinstance(target, tuple)
        and len(target) == 2
        and isinstance(target[0], Sensor)
        and not isinstance(target[1], bool)
        and isinstance(target[1], int | np.integer)
    ):
        sensor, t_ns = target[0], int(target[1])
        if not sensor.is_image:
            raise CalibrationError(
                f"{what}: '{sensor.name}' is a {sensor.modality} sensor, not a camera"
            )
        return Image(sensor, t_ns, None, loader=_no_pixels(sensor, t_ns))
    raise AVFusionError(
        f"{what}: target must be an Image or a (camera Sensor, stamp ns) pair, got {type(target).__name__}"
    )


def _prepare_cloud(
    cloud: PointCloud,
    poses: Trajectory | None,
    *,
    motion_compensation: bool,
    deskew: bool | None,
    tolerance_ns: int,
    what: str,
) -> PointCloud:
    if not isinstance(cloud, PointCloud):
        raise AVFusionError(f"{what}: cloud must be a PointCloud, got {type(cloud).__name__}")
    has_times = POINT_TIME_ATTR in cloud.attrs
    if deskew is None:
        deskew = motion_compensation and has_times and poses is not None
        if motion_compensation and has_times and poses is None:
            logger.debug("%s: per-point times present but no pose track; not deskewed", what)
    if not deskew:
        return cloud
    if not motion_compensation:
        raise AVFusionError(
            f"{what}: deskew=True needs motion_compensation=True (the static chain ignores time)"
        )
    if poses is None:
        raise SyncError(f"{what}: deskew=True needs the pose track (poses=...)")
    return deskew_cloud(cloud, poses, tolerance_ns=tolerance_ns)


def _cameras_from_source(
    targets: Sequence[Image],
    cloud: PointCloud,
    poses: Trajectory | None,
    *,
    motion_compensation: bool,
    tolerance_ns: int,
) -> list[Transform]:
    """``camera_from_source`` of every target (``observation_target_from_source``, or the
    static chain without motion compensation).

    The same numpy operations in the same order as ``observation_target_from_source`` (so the
    same bits), but the shared source side is taken once, the pose-track look-ups are one
    vectorised ``interpolate_many`` call and only the final ``Transform`` of each camera is
    built (building and validating every intermediate ``Transform`` cost ~0.15 ms a camera).
    Anything unusual (a missing pose, a stamp outside the track, a bad tolerance) goes through
    ``observation_target_from_source`` itself, which raises the documented errors.
    """
    if not motion_compensation:
        return [static_target_from_source(t.sensor, cloud.sensor) for t in targets]

    def slow() -> list[Transform]:
        return [
            observation_target_from_source(t, cloud, poses, tolerance_ns=tolerance_ns)
            for t in targets
        ]

    observations: list[Image | PointCloud] = [cloud, *targets]
    need = [o for o in observations if o.world_from_ego is None]
    looked_up: dict[int, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
    if need:
        if (
            poses is None
            or isinstance(tolerance_ns, bool)
            or not isinstance(tolerance_ns, int | np.integer)
            or tolerance_ns < 0
            or any(
                isinstance(o.t_ns, bool) or not isinstance(o.t_ns, int | np.integer) for o in need
            )
        ):
            return slow()
        t_ego = np.array([int(o.t_ns) + o.sensor.time_offset_ns for o in need], dtype=np.int64)
        tol = int(tolerance_ns)
        if t_ego.min() < poses.start_ns - tol or t_ego.max() > poses.end_ns + tol:
            return slow()
        rot, tr = poses.interpolate_many(t_ego, tol)
        looked_up = {id(o): (rot[i], tr[i]) for i, o in enumerate(need)}

    def world_from_ego(o: Image | PointCloud) -> tuple[Any, Any]:
        if o.world_from_ego is not None:
            return o.world_from_ego.rotation, o.world_from_ego.translation
        return looked_up[id(o)]

    w_rot, w_tr = world_from_ego(cloud)  # world_from_source_ego
    e_rot, e_tr = cloud.sensor.ego_from_sensor.rotation, cloud.sensor.ego_from_sensor.translation
    out = []
    for target in targets:
        # target.sensor.ego_from_sensor.inverse() @ world_from_target_ego.inverse()
        #     @ world_from_source_ego @ source.sensor.ego_from_sensor, left to right
        a_rot = target.sensor.ego_from_sensor.rotation.T
        a_tr = -(a_rot @ target.sensor.ego_from_sensor.translation)
        t_rot, t_tr = world_from_ego(target)
        b_rot = t_rot.T
        b_tr = -(b_rot @ t_tr)
        x_rot, x_tr = a_rot @ b_rot, a_rot @ b_tr + a_tr
        y_rot, y_tr = x_rot @ w_rot, x_rot @ w_tr + x_tr
        out.append(Transform(y_rot @ e_rot, y_rot @ e_tr + y_tr))
    return out


def _describe(cloud: PointCloud, image: Image) -> str:
    token = f" {cloud.token}" if cloud.token else f" at t={cloud.t_ns}"
    return f"projection of '{cloud.sensor.name}'{token} into '{image.sensor.name}'"


def project_cloud(
    cloud: PointCloud,
    image: Image | tuple[Sensor, int],
    poses: Trajectory | None = None,
    *,
    motion_compensation: bool = True,
    deskew: bool | None = None,
    occlusion: bool = True,
    footprint_px: int = DEFAULT_FOOTPRINT_PX,
    footprint_shape: FootprintShape = "square",
    footprint_size_m: float | None = DEFAULT_FOOTPRINT_SIZE_M,
    depth_tolerance_m: float = 0.3,
    depth_tolerance_rel: float = 0.05,
    min_depth_m: float = 0.1,
    tolerance_ns: int = 0,
) -> Projection:
    """Project a cloud into the camera of ``image`` (an ``Image`` or a (camera Sensor, stamp)).

    Motion-compensated (``calibration.motion.observation_target_from_source``): each
    observation's stored ``world_from_ego`` is used, else ``poses`` at its stamp plus its
    sensor's ``time_offset_ns`` (``tolerance_ns`` bounds extrapolation beyond the track).
    ``motion_compensation=False`` uses the static chain instead. ``deskew`` (default: when
    motion-compensating, the cloud has ``attrs["point_time_ns"]`` and ``poses`` is given) first
    moves every point to the cloud's stamp. Occlusion options as in ``project_points``.
    Raises ``SyncError`` when a pose is needed and missing or out of range.
    """
    target = _as_image(image, "project_cloud")
    what = _describe(cloud, target)
    src = _prepare_cloud(
        cloud,
        poses,
        motion_compensation=motion_compensation,
        deskew=deskew,
        tolerance_ns=tolerance_ns,
        what=what,
    )
    (camera_from_source,) = _cameras_from_source(
        [target], src, poses, motion_compensation=motion_compensation, tolerance_ns=tolerance_ns
    )
    return project_points(
        src.xyz,
        camera_from_source,
        target.camera,
        occlusion=occlusion,
        footprint_px=footprint_px,
        footprint_shape=footprint_shape,
        footprint_size_m=footprint_size_m,
        depth_tolerance_m=depth_tolerance_m,
        depth_tolerance_rel=depth_tolerance_rel,
        min_depth_m=min_depth_m,
        source=cloud.sensor.name,
        camera_name=target.sensor.name,
        t_source_ns=src.t_ns,
        t_camera_ns=target.t_ns,
    )


def project_cloud_to_cameras(
    cloud: PointCloud,
    images: Sequence[Image | tuple[Sensor, int]] | Mapping[str, Image | tuple[Sensor, int]],
    poses: Trajectory | None = None,
    *,
    motion_compensation: bool = True,
    deskew: bool | None = None,
    occlusion: bool = True,
    footprint_px: int = DEFAULT_FOOTPRINT_PX,
    footprint_shape: FootprintShape = "square",
    footprint_size_m: float | None = DEFAULT_FOOTPRINT_SIZE_M,
    depth_tolerance_m: float = 0.3,
    depth_tolerance_rel: float = 0.05,
    min_depth_m: float = 0.1,
    tolerance_ns: int = 0,
) -> dict[str, Projection]:
    """``project_cloud`` into several cameras at once: camera name → ``Projection``.

    The cloud is deskewed once (as ``project_cloud`` decides), the camera transforms are
    computed together, then the fused kernel (transform + project + z-buffer) runs once per
    camera, the cameras on a pool of threads. Results equal ``project_cloud``'s for each camera (the
    arrays of all cameras are views of three shared blocks). Two targets of one camera raise
    ``AVFusionError``.
    """
    targets = [
        _as_image(t, "project_cloud_to_cameras")
        for t in (images.values() if isinstance(images, Mapping) else images)
    ]
    names = [t.sensor.name for t in targets]
    if len(set(names)) != len(names):
        raise AVFusionError(f"project_cloud_to_cameras: a camera appears twice in {names}")
    if not targets:
        return {}
    what = f"projection of '{cloud.sensor.name}' into {len(targets)} cameras"
    opts = OcclusionOptions(
        footprint_px, footprint_shape, footprint_size_m, depth_tolerance_m, depth_tolerance_rel
    )
    min_depth = _check_min_depth(min_depth_m, what)
    src = _prepare_cloud(
        cloud,
        poses,
        motion_compensation=motion_compensation,
        deskew=deskew,
        tolerance_ns=tolerance_ns,
        what=what,
    )
    pts = _check_points(src.xyz, what)

    transforms = _cameras_from_source(
        targets, src, poses, motion_compensation=motion_compensation, tolerance_ns=tolerance_ns
    )
    results = _project_batch(
        pts,
        transforms,
        [t.camera for t in targets],
        occlusion=occlusion,
        opts=opts,
        min_depth_m=min_depth,
    )
    out: dict[str, Projection] = {}
    for target, tf, (uv, depth, in_image, occluded, valid) in zip(
        targets, transforms, results, strict=True
    ):
        out[target.sensor.name] = Projection(
            uv,
            depth,
            valid,
            in_image,
            occluded,
            cloud.sensor.name,
            target.sensor.name,
            tf,
            src.t_ns,
            target.t_ns,
            target.camera,
        )
    return out


def project_to_all_cameras(
    frame: Frame,
    source: str,
    poses: Trajectory | None = None,
    *,
    cameras: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, Projection]:
    """Project the cloud ``frame.points[source]`` into every image of the frame (or ``cameras``).

    Camera name → ``Projection``, through ``project_cloud_to_cameras`` (cameras in parallel);
    ``kwargs`` as for ``project_cloud``. Raises ``AVFusionError`` naming the frame when the
    source or a requested camera has no observation in it.
    """
    where = f"Frame {frame.token or frame.index}"
    if source not in frame.points:
        raise AVFusionError(
            f"{where}: no point cloud of '{source}' (clouds: {', '.join(sorted(frame.points)) or 'none'})"
        )
    names = sorted(frame.images) if cameras is None else list(cameras)
    missing = [n for n in names if n not in frame.images]
    if missing:
        raise AVFusionError(
            f"{where}: no image of {', '.join(repr(m) for m in missing)} (images: {', '.join(sorted(frame.images)) or 'none'})"
        )
    return project_cloud_to_cameras(
        frame.points[source], [frame.images[n] for n in names], poses, **kwargs
    )


# --------------------------------------------------------------------------------------------
# Depth maps
# --------------------------------------------------------------------------------------------


def depth_map(
    projection: Projection,
    height: int | None = None,
    width: int | None = None,
    *,
    include_occluded: bool = False,
) -> npt.NDArray[np.float32]:
    """Sparse float32 (height, width) depth image in metres: 0 where no point lands, else the
    depth of the nearest point whose pixel it is.

    Uses ``projection.valid`` points (``in_image`` ones with ``include_occluded``). The size
    defaults to the projection's camera model; a different size raises ``AVFusionError``
    (project with a scaled ``CameraModel`` instead of resizing here).
    """
    cam = projection.camera_model
    if height is None or width is None:
        if cam is None:
            raise AVFusionError(
                f"depth_map of '{projection.source}' in '{projection.camera}': no camera model; give height and width"
            )
        height = cam.height if height is None else height
        width = cam.width if width is None else width
    h, w = int(height), int(width)
    if h <= 0 or w <= 0 or h != height or w != width:
        raise AVFusionError(
            f"depth_map: height and width must be positive integers, got {height}x{width}"
        )
    if cam is not None and (h, w) != (cam.height, cam.width):
        raise AVFusionError(
            f"depth_map of '{projection.source}' in '{projection.camera}': size {w}x{h} differs from the camera's "
            f"{cam.width}x{cam.height}"
        )
    out = np.zeros((h, w), dtype=np.float32)
    mask = projection.in_image if include_occluded else projection.valid
    uv, depth = projection.uv_px, projection.depth_m
    depth_map_kernel(  # float32 as projected (float64 for hand-made projections), no copy
        np.ascontiguousarray(uv, dtype=uv.dtype if uv.dtype == np.float32 else np.float64),
        np.ascontiguousarray(depth, dtype=depth.dtype if depth.dtype == np.float32 else np.float64),
        np.ascontiguousarray(mask, dtype=np.bool_),
        out,
    )
    return out


def densify_depth(
    depth: npt.NDArray[np.floating[Any]],
    k: int = 4,
    max_distance_px: float = 4.0,
    *,
    power: float = 1.0,
) -> npt.NDArray[np.float32]:
    """Fill the holes of a sparse depth image by inverse-distance weighting (numba, parallel).

    Every pixel without a return (0) gets the weighted mean of its ``k`` nearest returns (pixel
    distance, Euclidean) within ``max_distance_px``, weights ``1 / distance**power``; pixels
    with a return keep it, pixels with none in reach stay 0. Blends across depth edges (a hole
    between a pole and the wall behind it gets an in-between depth): use small radii. Returns a
    new float32 array; the input is not changed.
    """
    d = np.asarray(depth)
    if d.ndim != 2 or d.dtype not in (np.float32, np.float64):
        raise AVFusionError(
            f"densify_depth: depth must be an H×W float32/float64 array, got {d.dtype} {d.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= 64:
        raise AVFusionError(f"densify_depth: k must be an integer in [1, 64], got {k!r}")
    if not (np.isfinite(max_distance_px) and 0 < max_distance_px <= 64):
        raise AVFusionError(
            f"densify_depth: max_distance_px must be in (0, 64], got {max_distance_px!r}"
        )
    if not (np.isfinite(power) and power >= 0):
        raise AVFusionError(f"densify_depth: power must be finite and >= 0, got {power!r}")
    src = np.ascontiguousarray(d, dtype=np.float32)
    if not np.all(np.isfinite(src)) or np.any(src < 0):
        raise AVFusionError("densify_depth: depths must be finite and >= 0 (0 = no return)")
    out = np.empty_like(src)
    densify_depth_kernel(src, int(k), float(max_distance_px), float(power), out)
    return out
