"""Training-code API: ``FusionDataset``, a fast, worker-safe dataset of fused samples, and
``collate``, which batches them (padding variable-size point clouds).

One sample per keyframe (``Frame``) of one or more logs, as plain numpy arrays and metadata::

    ds = FusionDataset("sample_data/nuscenes", sweeps=10,
                       outputs=["points", "images", "calib", "boxes", "depth"])
    sample = ds[0]
    sample["points"]["LIDAR_TOP"]        # (N, 3) float32, points_frame (ego at the sample time)
    sample["calib"]["CAM_FRONT"]["lidar2img"]   # (4, 4) float32: points_frame -> pixels

**Outputs** (chosen up front in ``outputs``; nothing else is computed or decoded):

* ``points``: ``points[sensor]`` (N, 3) float32 in ``points_frame`` at the sample time, and
  ``point_attrs[sensor]`` (1-D arrays aligned with the points: ``intensity``, ``ring``; with
  ``sweeps`` > 1 also ``time_lag_s`` (float32 s, sample time − sweep time) and ``sweep``
  (0 = keyframe)). ``sweeps`` = K > 1 aggregates the keyframe and K − 1 earlier sweeps of each
  point sensor (``aggregate_sweeps`` of the log, the devkit's ``from_file_multisweep`` maths:
  points within ``min_distance_m`` in x and y of the sensor are removed). A single sweep is the
  keyframe cloud as recorded (no removal), moved to the sample time with each observation's own
  ego pose; ``deskew=True`` first deskews clouds that carry per-point times.
* ``images``: ``images[camera]`` H×W×3 uint8 RGB (camera) or H×W uint16 counts (thermal).
* ``calib``: per camera ``K`` (3, 3), ``cam_from_ego`` (4, 4, the static extrinsic),
  ``lidar2img`` (4, 4: homogeneous ``points_frame`` coordinates at the sample time → pixels
  × depth, motion-compensated to the camera's capture time, pinhole part only), image
  ``size_wh``; all float32. Also ``calib["ego_from_points"]`` (4, 4).
* ``depth``: per camera the sparse depth map (float32 H×W, metres, 0 = no return) of the
  ``depth_source`` cloud (default: the reference LiDAR), occlusion-aware unless ``occlusion``
  says otherwise (``fusion.projection``); ``depth_dense``: the same densified
  (``densify_depth``).
* ``painted``: ``painted[depth_source]`` ``rgb`` (N, 3) uint8 and ``mask`` (N,) bool, aligned with
  ``points[depth_source]`` (``fusion.painting.paint_colour`` over the colour cameras).
* ``boxes``: the labels in the **ego frame at the sample time**: ``center`` (M, 3), ``size``
  (M, 3) (length, width, height), ``yaw`` (M,), ``velocity`` (M, 3) m/s (NaN where unknown),
  ``box7`` (M, 7) ``[x, y, z, l, w, h, yaw]`` (all float32), ``label``, ``track_id``, ``token``
  (str arrays), ``num_lidar_pts`` (int64, -1 unknown) and, with ``class_names``,
  ``label_index`` (int64, -1 for other classes).
* ``occupancy``: Occ3D-nuScenes labels read from ``occupancy_dir``
  (``<occupancy_dir>/gts/<scene name>/<sample token>/labels.npz``): ``semantics`` (200, 200, 16)
  uint8, ``mask_lidar``, ``mask_camera`` uint8.
* ``time_diffs``: ``time_diffs_ns[sensor]`` int64: each observation's stamp − the sample time.

Every sample also has ``token``, ``index`` (in the dataset), ``frame_index`` (in its log),
``source`` (which log), ``scene`` (scene name where the log has one) and ``t_ns``.

**Workers.** The dataset is a map-style dataset for ``torch.utils.data.DataLoader`` (torch is
not needed to use it). It is safe with ``num_workers > 0`` under both start methods:

* nothing mutable is shared: the per-process state (opened logs, the LRU cache, a decode thread
  pool) is created on first use in each process and never pickled;
* logs given as paths are re-opened lazily in each spawned worker; a ``NuScenesLog`` pickles as
  its arguments (its tables are read again on the other side; no tables or memory maps travel);
  under fork a ``NuScenesLog`` is kept (it holds no open files) and any other log is replaced by
  a pickled copy, so bag readers and their file offsets are never shared between processes;
* numba: with its GNU-OpenMP threading layer (the default on Linux without TBB) a forked child
  cannot run a ``parallel=True`` kernel once its parent has run one (numba terminates the
  child), and the projection, depth and deskew kernels are parallel. Fork workers therefore
  work when the main process has not run avfusion kernels before the workers start (a training
  loop's main process only consumes batches), and always with spawn or forkserver workers or
  with TBB installed (``pip install tbb``; constructing a ``FusionDataset`` asks numba for its
  TBB layer, safe under fork and threads, when TBB is there and numba has not started yet:
  ``prefer_fork_safe_numba``). A forked worker that inherited GNU-OpenMP threads raises
  ``AVFusionError`` for the outputs that need those kernels (``depth``, ``depth_dense``,
  ``painted``, ``deskew=True``), naming these fixes; the other outputs work. In a worker numba runs on ``worker_threads`` threads (default 1:
  the DataLoader already runs one process per core; in a forked worker always 1, as thread
  pools inherited from the parent have no threads behind them);
* memory: a worker process tells glibc to keep freed memory for reuse
  (``reuse_freed_memory``, option ``reuse_memory``): a sample's images and depth maps are tens
  of MB of fresh arrays, which glibc would otherwise return to the system when freed and fault
  in again, page by page, for the next sample (about a quarter of a sample's time on one
  core; more with several workers faulting at once).

**Determinism.** A sample depends only on the data, the options, ``seed`` and its index (and
``epoch``): the only randomness is the optional ``max_points`` subsampling, drawn from
``numpy.random.default_rng((seed, epoch, index))``; the projection kernels' results do not
depend on their number of threads. So every worker count and start method gives the same
samples as a single process (the tests check it bit for bit).

**Caching.** ``cache_mb`` > 0 keeps decoded clouds (after aggregation) and images in a bounded
LRU cache per process (for small datasets over several epochs, or overlapping sweeps).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import pickle
import sys
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.motion import ego_pose_at_stamp
from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, ConfigError, LogFormatError
from avfusion.types import Boxes3D, Frame, Image, Log, PointCloud

__all__ = [
    "OUTPUTS",
    "RAGGED",
    "FusionDataset",
    "collate",
    "prefer_fork_safe_numba",
    "reuse_freed_memory",
]

logger = logging.getLogger(__name__)

#: Every output a ``FusionDataset`` can compute (see the module docstring).
OUTPUTS: tuple[str, ...] = (
    "points",
    "images",
    "calib",
    "depth",
    "depth_dense",
    "painted",
    "boxes",
    "occupancy",
    "time_diffs",
)
#: Sample keys whose arrays have a variable first dimension (padded by ``collate``).
RAGGED: tuple[str, ...] = ("points", "point_attrs", "painted", "boxes")
DEFAULT_OUTPUTS: tuple[str, ...] = ("points", "images", "calib", "boxes", "time_diffs")
#: Dense multi-sweep clouds want a small fixed z-buffer footprint (see fusion.projection).
DENSE_OCCLUSION: dict[str, Any] = {"footprint_px": 2, "footprint_size_m": None}
OCC_SHAPE = (200, 200, 16)
_POINT_TIME_ATTR = "point_time_ns"
_IDENTITY = Transform.identity()

PathLike = str | os.PathLike[str]
Sample = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Per-process state
# --------------------------------------------------------------------------------------------


class _LRU:
    """A byte-bounded least-recently-used cache of numpy results (per process, never shared)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, make: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        if self.max_bytes <= 0:
            return make()
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
            self.hits += 1
            return found[0]
        self.misses += 1
        value = make()
        n = size(value)
        if n <= self.max_bytes:
            self.items[key] = (value, n)
            self.bytes += n
            while self.bytes > self.max_bytes:
                _, (_, old) = self.items.popitem(last=False)
                self.bytes -= old
        return value


def _cloud_bytes(cloud: PointCloud) -> int:
    return int(cloud.xyz.nbytes + sum(np.asarray(v).nbytes for v in cloud.attrs.values()))


def prefer_fork_safe_numba() -> bool:
    """Make numba use its TBB threading layer (safe under fork and from several threads) when
    TBB is installed, numba has not started its threads yet and neither the environment
    (``NUMBA_THREADING_LAYER``) nor the program chose a layer. Returns whether it did.

    Without TBB numba's default on Linux is GNU OpenMP, which does not survive fork: numba
    terminates a forked child that runs a parallel kernel after its parent did. (numba's
    workqueue layer survives fork but must not be entered from two threads at once, which the
    projection does; so it is not chosen here.)
    """
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return False
    try:
        import numba
        from numba.np.ufunc import parallel as numba_parallel
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    config: Any = numba.config
    if getattr(numba_parallel, "_is_initialized", False) or config.THREADING_LAYER != "default":
        return False
    try:
        importlib.import_module("numba.np.ufunc.tbbpool")
    except (ImportError, OSError):
        return False  # no (compatible) TBB: numba keeps its default
    config.THREADING_LAYER = "tbb"
    logger.info("FusionDataset: numba will use its TBB threading layer (fork- and thread-safe)")
    return True


#: glibc ``mallopt`` parameters (``<malloc.h>``) and the values ``reuse_freed_memory`` sets:
#: blocks up to 32 MiB (glibc's largest mmap threshold on 64-bit) come from the heap, and the
#: heap keeps up to 1 GiB of free memory at its top instead of returning it to the system.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 << 20
_TRIM_THRESHOLD_BYTES = 1 << 30


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in this process for reuse; returns whether it did
    (False off glibc). Process-wide: call it only in processes that mostly load data.

    A sample holds tens of MB of fresh arrays (six 1600×900 images are 26 MB, their depth maps
    35 MB). By default glibc gives blocks of a few MB their own mappings, or trims the heap
    once a sample's arrays are freed, so every sample faults its memory in again from the
    kernel, page by page, zeroed: measured 13 of 48 ms per sample on one core. With mmap
    threshold 32 MiB and trim threshold 1 GiB freed arrays are reused instead; the process's
    resident set stays at its peak (which one sample sets anyway)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
    done = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1 and done
    if done:
        logger.debug(
            "FusionDataset: malloc keeps freed memory for reuse in process %d", os.getpid()
        )
    return done


def _parallel_kernels_unsafe() -> bool:
    """True when numba's GNU-OpenMP threading layer is already initialised in this process.

    Called before a worker has run anything, so "initialised" means inherited from the parent
    through fork: numba then terminates the process at the first ``parallel=True`` kernel.
    """
    try:
        import numba
        from numba.np.ufunc import parallel as numba_parallel
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    if not getattr(numba_parallel, "_is_initialized", False):
        return False
    try:
        layer = numba.threading_layer()
    except ValueError:  # pragma: no cover - initialised implies a layer
        return False
    if layer != "omp":
        return False
    try:
        omppool = importlib.import_module("numba.np.ufunc.omppool")
    except ImportError:  # pragma: no cover - the layer in use was imported
        return True
    return str(getattr(omppool, "openmp_vendor", "GNU")) == "GNU"


@dataclass
class _State:
    """What one process owns: its logs, cache and decode threads. Never pickled."""

    pid: int
    logs: list[Log | None]
    cache: _LRU
    parallel_ok: bool = True
    scene_of: dict[int, dict[str, str]] = field(default_factory=dict)
    pool: ThreadPoolExecutor | None = None


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


class FusionDataset:
    """Fused training samples, one per keyframe of one or more logs (module docstring).

    ``log_or_paths``: a ``Log``, a path ``open_log`` understands (with ``rig`` for bags), or a
    sequence of them (their frames are concatenated in order). ``sensors``: the sensors to load
    (default: every sensor of the first log); point sensors need ``points``/``painted``/``depth``,
    cameras need ``images``/``calib``/``depth``/``painted``. ``sweeps``: point-cloud sweeps per
    sample (``aggregate_sweeps`` of the log when > 1). ``outputs``: a subset of ``OUTPUTS``.
    ``points_frame``: ``"ego"`` (the ego frame at the sample time) or a sensor name (that
    sensor's frame at the sample time, e.g. ``"LIDAR_TOP"``). ``depth_source``: the point sensor
    projected for ``depth`` and ``painted`` (default: the log's reference LiDAR, else the first
    LiDAR in ``sensors``). ``occlusion``: options for ``fusion.projection`` (default: its
    defaults for single sweeps, ``DENSE_OCCLUSION`` for multi-sweep clouds). ``densify``:
    options for ``densify_depth``. ``max_points``: at most this many points per sensor, a
    random subset (``seed``) kept in the original order. ``cache_mb``: per-process LRU of decoded
    clouds and images. ``decode_threads``: 0 decodes the images in line; N > 0 decodes them on N
    background threads per process while the point clouds are processed (JPEG decoding and the
    numba kernels release the GIL, so this overlaps them on a second core; leave it at 0 when a
    DataLoader already runs one worker per core).
    ``worker_threads``: numba threads in worker processes (None leaves numba alone).
    ``fork_safe_numba``: call ``prefer_fork_safe_numba()`` (module docstring, Workers).
    ``reuse_memory``: call ``reuse_freed_memory()`` (glibc keeps freed arrays for the next
    samples instead of faulting fresh pages in; about a quarter of a sample's time): None (the
    default) in worker processes only, True also in this process, False never.

    Raises ``ConfigError`` naming the option for a bad option, ``LogFormatError`` naming the
    token and sensor when a sample lacks a requested observation.
    """

    def __init__(
        self,
        log_or_paths: Log | PathLike | Sequence[Log | PathLike],
        sensors: Sequence[str] | None = None,
        sweeps: int = 1,
        outputs: Collection[str] = DEFAULT_OUTPUTS,
        *,
        points_frame: str = "ego",
        rig: PathLike | None = None,
        depth_source: str | None = None,
        min_distance_m: float = 1.0,
        deskew: bool = False,
        occlusion: Mapping[str, Any] | None = None,
        densify: Mapping[str, Any] | None = None,
        occupancy_dir: PathLike | None = None,
        class_names: Sequence[str] | None = None,
        max_points: int | None = None,
        seed: int = 0,
        cache_mb: float = 0.0,
        decode_threads: int = 0,
        worker_threads: int | None = 1,
        fork_safe_numba: bool = True,
        reuse_memory: bool | None = None,
    ) -> None:
        if fork_safe_numba:
            prefer_fork_safe_numba()
        items: list[Log | PathLike]
        if isinstance(log_or_paths, Log | str | os.PathLike):
            items = [log_or_paths]
        else:
            items = list(log_or_paths)
        if not items:
            raise ConfigError("FusionDataset: log_or_paths is empty; give a Log or a path")
        self.rig = None if rig is None else str(rig)
        self._paths: list[str | None] = []
        logs: list[Log] = []
        for item in items:
            if isinstance(item, Log):
                self._paths.append(None)
                logs.append(item)
            else:
                self._paths.append(str(item))
                logs.append(_open(str(item), self.rig))
        # Logs given as objects travel with the dataset (their own pickling); logs opened from
        # paths are dropped from the pickle and re-opened per process.
        self._given: list[Log | None] = [
            log if path is None else None for log, path in zip(logs, self._paths, strict=True)
        ]
        self._offsets = np.cumsum([0] + [len(log) for log in logs]).astype(np.int64)
        first = logs[0]
        self.sensors: tuple[str, ...] = (
            tuple(sensors) if sensors is not None else tuple(first.sensors)
        )
        unknown = [s for s in self.sensors if s not in first.sensors]
        if unknown:
            raise ConfigError(
                f"FusionDataset sensors: {', '.join(unknown)} not in the log (sensors: {', '.join(sorted(first.sensors))})"
            )
        bad = sorted(set(outputs) - set(OUTPUTS))
        if bad:
            raise ConfigError(
                f"FusionDataset outputs: unknown {', '.join(bad)} (expected some of {', '.join(OUTPUTS)})"
            )
        self.outputs = frozenset(outputs)
        if isinstance(sweeps, bool) or not isinstance(sweeps, int | np.integer) or sweeps < 1:
            raise ConfigError(f"FusionDataset sweeps: must be an integer >= 1, got {sweeps!r}")
        self.sweeps = int(sweeps)
        if self.sweeps > 1:
            for log in logs:
                if not callable(getattr(log, "aggregate_sweeps", None)):
                    raise ConfigError(
                        f"FusionDataset sweeps={sweeps}: {type(log).__name__} has no sweeps between "
                        "keyframes (aggregate_sweeps); use sweeps=1"
                    )
        if points_frame != "ego" and points_frame not in first.sensors:
            raise ConfigError(
                f"FusionDataset points_frame: '{points_frame}' is neither 'ego' nor a sensor of the log"
            )
        self.points_frame = points_frame
        modality = {name: first.sensors[name].modality for name in self.sensors}
        self.point_sensors = tuple(s for s in self.sensors if modality[s] in ("lidar", "radar"))
        self.cameras = tuple(s for s in self.sensors if modality[s] in ("camera", "thermal"))
        self.colour_cameras = tuple(s for s in self.cameras if modality[s] == "camera")
        ref = str(getattr(first, "ref_sensor", "LIDAR_TOP"))
        self.ref_sensor = ref
        needs_source = self.outputs & {"depth", "depth_dense", "painted"}
        if depth_source is None:
            lidars = [s for s in self.point_sensors if modality[s] == "lidar"]
            depth_source = ref if ref in lidars else (lidars[0] if lidars else None)
        if needs_source and (depth_source is None or depth_source not in self.point_sensors):
            raise ConfigError(
                f"FusionDataset depth_source: {', '.join(sorted(needs_source))} need a point sensor among "
                f"sensors ({', '.join(self.point_sensors) or 'none'}), got {depth_source!r}"
            )
        self.depth_source = depth_source
        if "painted" in self.outputs and not self.colour_cameras:
            raise ConfigError("FusionDataset outputs: 'painted' needs at least one colour camera")
        if "occupancy" in self.outputs and occupancy_dir is None:
            raise ConfigError("FusionDataset occupancy_dir: 'occupancy' output needs occupancy_dir")
        self.occupancy_dir = None if occupancy_dir is None else Path(occupancy_dir)
        self.min_distance_m = float(min_distance_m)
        self.deskew = bool(deskew)
        self.occlusion = (
            dict(occlusion)
            if occlusion is not None
            else (dict(DENSE_OCCLUSION) if self.sweeps > 1 else {})
        )
        self.densify = dict(densify or {})
        self.class_names = None if class_names is None else tuple(class_names)
        if max_points is not None and (isinstance(max_points, bool) or int(max_points) < 1):
            raise ConfigError(f"FusionDataset max_points: must be >= 1 or None, got {max_points!r}")
        self.max_points = None if max_points is None else int(max_points)
        self.seed = int(seed)
        self.epoch = 0
        if cache_mb < 0:
            raise ConfigError(f"FusionDataset cache_mb: must be >= 0, got {cache_mb!r}")
        self.cache_bytes = int(cache_mb * 1e6)
        if int(decode_threads) < 0:
            raise ConfigError(f"FusionDataset decode_threads: must be >= 0, got {decode_threads!r}")
        self.decode_threads = int(decode_threads)
        self.worker_threads = None if worker_threads is None else int(worker_threads)
        self.reuse_memory = None if reuse_memory is None else bool(reuse_memory)
        if self.reuse_memory:
            reuse_freed_memory()
        self._state: _State | None = _State(os.getpid(), list(logs), _LRU(self.cache_bytes))

    # -- pickling and per-process state ----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_state"] = None  # opened logs, cache and threads stay in their process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _process_state(self) -> _State:
        """This process's state; built on first use in a new process (a DataLoader worker)."""
        st = self._state
        pid = os.getpid()
        if st is not None and st.pid == pid:
            return st
        forked = st is not None  # inherited through fork (a pickled dataset carries no state)
        parallel_ok = not _parallel_kernels_unsafe()
        # numba threads: worker_threads in a worker process (not when a main process unpickles
        # a dataset); always 1 in a forked one, where thread pools inherited from the parent
        # have no threads behind them (a job submitted to one would never run).
        in_worker = forked or multiprocessing.parent_process() is not None
        threads = 1 if forked else (self.worker_threads if in_worker else None)
        if self.reuse_memory or (self.reuse_memory is None and in_worker):
            reuse_freed_memory()
        if threads is not None:
            import numba

            limit = int(getattr(numba.config, "NUMBA_NUM_THREADS", threads))
            numba.set_num_threads(max(1, min(threads, limit)))
        logs: list[Log | None] = []
        for k, given in enumerate(self._given):
            if forked and st is not None:
                log = st.logs[k]
                if log is not None and not _fork_safe(log):
                    log = _fresh_copy(log)
                logs.append(log)
            else:
                logs.append(given)
        self._state = _State(pid, logs, _LRU(self.cache_bytes), parallel_ok)
        logger.debug(
            "FusionDataset: new process %d (%s), numba threads %s, parallel kernels %s",
            pid,
            "fork" if forked else "spawn/unpickled",
            threads,
            "usable" if parallel_ok else "unusable (GNU OpenMP inherited through fork)",
        )
        return self._state

    def _log(self, st: _State, source: int) -> Log:
        log = st.logs[source]
        if log is None:
            path = self._paths[source]
            if path is None:  # pragma: no cover - given logs are always kept
                raise AVFusionError(f"FusionDataset: log {source} was lost")
            log = st.logs[source] = _open(path, self.rig)
        return log

    # -- sequence protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws (``max_points``) for a new epoch (before workers start)."""
        self.epoch = int(epoch)

    def locate(self, index: int) -> tuple[int, int]:
        """(source log, frame index in it) of dataset index ``index`` (negative counts from the end)."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"FusionDataset: index must be an integer, got {type(index).__name__}")
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"FusionDataset: index {index} out of range for {n} samples")
        source = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return source, i - int(self._offsets[source])

    def __repr__(self) -> str:
        return (
            f"FusionDataset({len(self)} samples from {len(self._paths)} log(s), sweeps={self.sweeps}, "
            f"outputs={sorted(self.outputs)}, sensors={list(self.sensors)})"
        )

    # -- one sample -------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Sample:
        source, j = self.locate(index)
        gindex = int(self._offsets[source]) + j
        st = self._process_state()
        log = self._log(st, source)
        out = self.outputs
        if not st.parallel_ok and (
            out & {"depth", "depth_dense", "painted"} or (self.deskew and self.sweeps == 1)
        ):
            raise AVFusionError(
                "FusionDataset: this forked worker inherited numba's GNU-OpenMP threads from its parent, "
                "so it cannot run the parallel kernels that depth, depth_dense, painted and deskew=True "
                "need (numba would terminate it); start the DataLoader before the main process runs "
                "avfusion kernels, use DataLoader(multiprocessing_context='spawn' or 'forkserver'), "
                "or install tbb (numba's fork-safe threading layer)"
            )
        frame = _load_frame(log, j, with_boxes="boxes" in out)
        token = frame.token or str(j)
        t_ref = int(frame.t_ns)
        world_from_ref = (
            frame.world_from_ego if frame.world_from_ego is not None else log.pose_at(t_ref)
        )
        ego_from_pf = (
            Transform.identity()
            if self.points_frame == "ego"
            else log.sensors[self.points_frame].ego_from_sensor
        )
        sample: Sample = {
            "token": token,
            "index": gindex,
            "frame_index": j,
            "source": source,
            "scene": self._scene(st, log, source, token),
            "t_ns": np.int64(t_ref),
        }
        need_points = bool(out & {"points", "painted", "depth", "depth_dense"})
        clouds: dict[str, PointCloud] = {}
        if need_points:
            wanted = self.point_sensors if "points" in out else (self.depth_source,)
            for name in wanted:
                if name is not None:
                    clouds[name] = self._cloud(st, log, source, j, frame, name, gindex)
        images: dict[str, Image] = {}
        if out & {"images", "calib", "depth", "depth_dense", "painted"}:
            for name in self.cameras:
                if name not in frame.images:
                    raise LogFormatError(
                        f"FusionDataset: sample {token} of {log!r} has no image of '{name}'"
                    )
                images[name] = frame.images[name]
        decoding = (
            self._start_decoding(st, source, images)
            if out & {"images", "painted"} and images
            else None
        )
        if "points" in out:
            pf_from_world = (world_from_ref @ ego_from_pf).inverse()
            points: dict[str, npt.NDArray[np.float32]] = {}
            attrs: dict[str, dict[str, npt.NDArray[Any]]] = {}
            for name, cloud in clouds.items():
                if cloud.t_ns != t_ref:  # its own capture: through the world, two poses
                    pf_from_cloud = (
                        pf_from_world @ _pose_of(cloud, log) @ cloud.sensor.ego_from_sensor
                    )
                elif cloud.sensor.name != self.points_frame:  # same instant: extrinsics only
                    pf_from_cloud = ego_from_pf.inverse() @ cloud.sensor.ego_from_sensor
                else:  # already in points_frame at the sample time
                    pf_from_cloud = _IDENTITY
                xyz = cloud.xyz if pf_from_cloud is _IDENTITY else pf_from_cloud.apply(cloud.xyz)
                points[name] = np.array(xyz, dtype=np.float32, order="C")
                attrs[name] = {
                    k: np.asarray(v)
                    for k, v in cloud.attrs.items()
                    if np.asarray(v).ndim == 1 and np.asarray(v).dtype.kind in "biuf"
                }
            sample["points"] = points
            sample["point_attrs"] = attrs
        if "calib" in out:
            sample["calib"] = self._calib(log, images, world_from_ref, ego_from_pf)
        pixels = decoding() if decoding is not None else {}
        if "images" in out:
            sample["images"] = pixels
        if out & {"depth", "depth_dense", "painted"} and self.depth_source is not None:
            decoded = {
                n: replace(im, pixels_or_none=pixels[n], loader=None) if n in pixels else im
                for n, im in images.items()
            }
            self._project(sample, log, clouds[self.depth_source], decoded)
        if "boxes" in out:
            sample["boxes"] = self._boxes(frame, log, world_from_ref, token)
        if "occupancy" in out:
            sample["occupancy"] = self._occupancy(sample["scene"], token)
        if "time_diffs" in out:
            sample["time_diffs_ns"] = {
                name: np.int64(frame.time_diffs_ns[name])
                for name in self.sensors
                if name in frame.time_diffs_ns
            }
        return sample

    # -- pieces -----------------------------------------------------------------------------
    def _cloud(
        self, st: _State, log: Log, source: int, j: int, frame: Frame, name: str, gindex: int
    ) -> PointCloud:
        """The sample's cloud of one point sensor in its native frame (aggregated, deskewed,
        subsampled as configured)."""

        def make() -> PointCloud:
            if self.sweeps > 1:
                return log.aggregate_sweeps(  # type: ignore[attr-defined]
                    j, name, self.ref_sensor, self.sweeps, self.min_distance_m
                )
            if name not in frame.points:
                raise LogFormatError(
                    f"FusionDataset: sample {frame.token or j} of {log!r} has no point cloud of '{name}'"
                )
            cloud = frame.points[name]
            if self.deskew and _POINT_TIME_ATTR in cloud.attrs:
                from avfusion.fusion.deskew import deskew_cloud

                cloud = deskew_cloud(cloud, log.poses)
            return cloud

        cloud: PointCloud = st.cache.get(("cloud", source, j, name), make, _cloud_bytes)
        if self.max_points is not None and len(cloud) > self.max_points:
            rng = np.random.default_rng((self.seed, self.epoch, gindex, self.sensors.index(name)))
            keep = np.sort(rng.choice(len(cloud), self.max_points, replace=False))
            cloud = cloud.select(keep)
        return cloud

    def _start_decoding(
        self, st: _State, source: int, images: Mapping[str, Image]
    ) -> Callable[[], dict[str, npt.NDArray[Any]]]:
        """Start decoding the images (background threads when ``decode_threads`` > 0); the
        returned function waits for them and gives camera → pixels."""

        def one(image: Image) -> npt.NDArray[Any]:
            key = ("image", source, image.token or image.path or image.sensor.name, image.t_ns)
            pixels: npt.NDArray[Any] = st.cache.get(
                key, lambda: image.pixels, lambda a: int(a.nbytes)
            )
            return pixels

        if self.decode_threads == 0:
            return lambda: {name: one(image) for name, image in images.items()}
        if st.pool is None:
            st.pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="avfusion-decode")
        futures = {name: st.pool.submit(one, image) for name, image in images.items()}
        return lambda: {name: f.result() for name, f in futures.items()}

    def _calib(
        self,
        log: Log,
        images: Mapping[str, Image],
        world_from_ref: Transform,
        ego_from_pf: Transform,
    ) -> dict[str, Any]:
        calib: dict[str, Any] = {"ego_from_points": ego_from_pf.as_matrix().astype(np.float32)}
        world_from_pf = world_from_ref @ ego_from_pf
        for name, image in images.items():
            cam = image.camera
            ego_from_cam = image.sensor.ego_from_sensor
            world_from_cam_ego = _pose_of(image, log)
            cam_from_pf = ego_from_cam.inverse() @ world_from_cam_ego.inverse() @ world_from_pf
            k4 = np.eye(4)
            k4[:3, :3] = cam.K
            calib[name] = {
                "K": cam.K.astype(np.float32),
                "cam_from_ego": ego_from_cam.inverse().as_matrix().astype(np.float32),
                "lidar2img": (k4 @ cam_from_pf.as_matrix()).astype(np.float32),
                "size_wh": np.array([cam.width, cam.height], dtype=np.int64),
            }
        return calib

    def _project(
        self, sample: Sample, log: Log, cloud: PointCloud, images: Mapping[str, Image]
    ) -> None:
        from avfusion.fusion.painting import paint_colour
        from avfusion.fusion.projection import (
            densify_depth,
            depth_map,
            project_cloud_to_cameras,
        )

        out = self.outputs
        projections: dict[str, Any] = {}
        if "painted" in out:
            colour = {n: images[n] for n in self.colour_cameras}
            paint = paint_colour(cloud, colour, log.poses, deskew=False, **self.occlusion)
            sample["painted"] = {
                cloud.sensor.name: {"rgb": paint.rgb_uint8(), "mask": paint.painted.copy()}
            }
            projections.update(paint.projections)
        if out & {"depth", "depth_dense"}:
            rest = [images[n] for n in self.cameras if n not in projections]
            if rest:
                projections.update(
                    project_cloud_to_cameras(cloud, rest, log.poses, deskew=False, **self.occlusion)
                )
            depth = {n: depth_map(projections[n]) for n in self.cameras}
            if "depth" in out:
                sample["depth"] = depth
            if "depth_dense" in out:
                sample["depth_dense"] = {
                    n: densify_depth(d, **self.densify) for n, d in depth.items()
                }

    def _boxes(
        self, frame: Frame, log: Log, world_from_ref: Transform, token: str
    ) -> dict[str, npt.NDArray[Any]]:
        boxes = frame.boxes3d if frame.boxes3d is not None else Boxes3D.empty("ego")
        if boxes.frame == "world":
            ego = boxes.transformed(world_from_ref.inverse(), "ego")
        elif boxes.frame == "ego":
            ego = boxes
        elif boxes.frame in log.sensors:
            ego = boxes.transformed(log.sensors[boxes.frame].ego_from_sensor, "ego")
        else:
            raise LogFormatError(
                f"FusionDataset: boxes of sample {token} are in frame '{boxes.frame}'; expected world, ego or a sensor"
            )
        center = ego.center.astype(np.float32)
        size = ego.size.astype(np.float32)
        yaw = ego.yaw.astype(np.float32)
        out: dict[str, npt.NDArray[Any]] = {
            "center": center,
            "size": size,
            "yaw": yaw,
            "velocity": (
                ego.velocity if ego.velocity is not None else np.full((len(ego), 3), np.nan)
            ).astype(np.float32),
            "box7": np.concatenate([center, size, yaw[:, None]], axis=1).reshape(-1, 7),
            "label": ego.label,
            "track_id": ego.track_id,
            "token": ego.token if ego.token is not None else np.full(len(ego), "", np.str_),
            "num_lidar_pts": np.asarray(
                ego.attrs.get("num_lidar_pts", np.full(len(ego), -1)), dtype=np.int64
            ),
        }
        if self.class_names is not None:
            lookup = {name: k for k, name in enumerate(self.class_names)}
            out["label_index"] = np.array(
                [lookup.get(str(label), -1) for label in ego.label], dtype=np.int64
            )
        return out

    def _scene(self, st: _State, log: Log, source: int, token: str) -> str:
        table = st.scene_of.get(source)
        if table is None:
            table = st.scene_of[source] = _scene_names(log)
        return table.get(token, "")

    def _occupancy(self, scene: str, token: str) -> dict[str, npt.NDArray[np.uint8]]:
        if self.occupancy_dir is None:  # pragma: no cover - checked in __init__
            raise ConfigError("FusionDataset: no occupancy_dir")
        if not scene:
            raise LogFormatError(
                f"FusionDataset: sample {token} has no scene name, needed for occupancy labels "
                "(<occupancy_dir>/gts/<scene>/<token>/labels.npz)"
            )
        path = self.occupancy_dir / "gts" / scene / token / "labels.npz"
        if not path.is_file():
            raise LogFormatError(
                f"{path}: occupancy labels of sample {token} (scene {scene}) are missing"
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: np.asarray(npz[k]) for k in ("semantics", "mask_lidar", "mask_camera")}
        except (KeyError, ValueError, OSError) as exc:
            raise LogFormatError(
                f"{path}: occupancy labels of sample {token} unreadable (need semantics, mask_lidar, mask_camera): {exc}"
            ) from exc
        for key, value in arrays.items():
            if value.shape != OCC_SHAPE or value.dtype != np.uint8:
                raise LogFormatError(
                    f"{path}: '{key}' of sample {token} is {value.dtype} {value.shape}; expected uint8 {OCC_SHAPE}"
                )
        return arrays


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _open(path: str, rig: str | None) -> Log:
    from avfusion.io.registry import open_log

    return open_log(path, rig)


def _fork_safe(log: Log) -> bool:
    """Whether a log can be used as is in a forked child: a NuScenesLog holds no open files."""
    from avfusion.io.nuscenes import NuScenesLog

    return isinstance(log, NuScenesLog)


def _fresh_copy(log: Log) -> Log:
    """A per-process copy of a log (its own readers), through its pickling."""
    try:
        copy: Log = pickle.loads(pickle.dumps(log, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise AVFusionError(
            f"FusionDataset: {type(log).__name__} cannot be copied into a worker process (pickling failed: "
            f"{exc}); give the log as a path instead"
        ) from exc
    return copy


def _load_frame(log: Log, j: int, *, with_boxes: bool) -> Frame:
    """The frame, without labels when they are not wanted (readers that can skip them)."""
    frame_fn = getattr(log, "frame", None)
    if callable(frame_fn):
        try:
            frame: Frame = frame_fn(j, with_boxes=with_boxes)
            return frame
        except TypeError:
            pass
    return log[j]


def _pose_of(obs: PointCloud | Image, log: Log) -> Transform:
    """``world_from_ego`` at an observation's capture: stored, else from the log's track."""
    if obs.world_from_ego is not None:
        return obs.world_from_ego
    return ego_pose_at_stamp(log.poses, obs.sensor, obs.t_ns)


def _scene_names(log: Log) -> dict[str, str]:
    """Sample token → scene name for nuScenes-style logs (empty for others)."""
    table = getattr(log, "table", None)
    if not callable(table):
        return {}
    try:
        scenes = {row["token"]: str(row.get("name", "")) for row in table("scene")}
        return {row["token"]: scenes.get(row.get("scene_token", ""), "") for row in table("sample")}
    except (AVFusionError, KeyError, TypeError):
        return {}


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


def collate(
    samples: Sequence[Mapping[str, Any]], *, to_torch: bool = False, pad_value: float = 0
) -> dict[str, Any]:
    """Batch samples of a ``FusionDataset`` (a ``DataLoader``'s ``collate_fn``).

    Dicts are batched key by key (every sample must have the same keys). Arrays under
    ``RAGGED`` keys (points, their attributes and painting, boxes) have a variable first
    dimension: they are padded with ``pad_value`` to the longest (B, N_max, ...) and their
    lengths always go to ``batch["lengths"]["<path>"]`` (B,) int64, where ``<path>`` joins the
    keys with "/" (``"points/LIDAR_TOP"``, ``"boxes/center"``). Other numeric arrays are stacked
    (B, ...) and must have equal shapes. String arrays (labels) become lists of arrays;
    strings, ints and floats become lists / arrays.

    ``to_torch=True`` returns torch tensors instead of numeric arrays (needs torch: the
    ``torch`` extra); without it everything stays numpy.
    """
    if not samples:
        raise AVFusionError("collate: no samples")
    torch: Any = None
    if to_torch:
        try:
            import torch
        except ImportError as exc:
            raise AVFusionError(
                "collate(to_torch=True) needs torch; install avfusion[torch] or collate to numpy"
            ) from exc
    lengths: dict[str, npt.NDArray[np.int64]] = {}
    batch = _collate_node(list(samples), "", lengths, pad_value, ragged=False)
    if not isinstance(batch, dict):  # pragma: no cover - samples are dicts
        raise AVFusionError("collate: samples must be dicts")
    if lengths:
        batch["lengths"] = lengths
    if torch is not None:
        batch = _to_torch(batch, torch)
    return batch


def _collate_node(
    values: list[Any],
    path: str,
    lengths: dict[str, npt.NDArray[np.int64]],
    pad: float,
    *,
    ragged: bool,
) -> Any:
    first = values[0]
    where = path or "sample"
    if isinstance(first, Mapping):
        keys = list(first)
        for v in values[1:]:
            if not isinstance(v, Mapping) or list(v) != keys:
                raise AVFusionError(
                    f"collate: '{where}' has different keys across samples ({keys} vs {list(v) if isinstance(v, Mapping) else type(v).__name__})"
                )
        return {
            k: _collate_node(
                [v[k] for v in values],
                f"{path}/{k}" if path else str(k),
                lengths,
                pad,
                ragged=ragged or (not path and k in RAGGED),
            )
            for k in keys
        }
    if isinstance(first, np.ndarray):
        arrays = [np.asarray(v) for v in values]
        if first.dtype.kind in "USO":
            return arrays
        shapes = {a.shape for a in arrays}
        if not ragged or first.ndim == 0:
            if len(shapes) != 1:
                raise AVFusionError(
                    f"collate: '{where}' arrays differ in shape across samples: {sorted(shapes)}"
                )
            return np.stack(arrays)
        tails = {a.shape[1:] for a in arrays}
        if len(tails) != 1:
            raise AVFusionError(
                f"collate: '{where}' arrays differ in more than their first dimension: {sorted(shapes)}"
            )
        n = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        out = np.full((len(arrays), int(n.max()), *first.shape[1:]), pad, dtype=first.dtype)
        for b, a in enumerate(arrays):
            out[b, : a.shape[0]] = a
        lengths[where] = n
        return out
    if isinstance(first, str):
        return list(values)
    if isinstance(first, bool | np.bool_ | int | float | np.integer | np.floating):
        return np.asarray(values)
    return list(values)


def _to_torch(node: Any, torch: Any) -> Any:
    if isinstance(node, dict):
        return {k: _to_torch(v, torch) for k, v in node.items()}
    if isinstance(node, np.ndarray) and node.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(node))
    return node
