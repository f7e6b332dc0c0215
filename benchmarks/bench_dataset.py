"""Training dataset: samples per second of ``FusionDataset`` vs a devkit-style loader.

Workload per sample ("LiDAR with 10 sweeps + 6 camera images + boxes", what a BEV/fusion
detector's data pipeline does): the LIDAR_TOP keyframe aggregated with 9 earlier sweeps, six
1600×900 camera images decoded to RGB, per camera the calibration (``lidar2img``) and a
sparse depth map of the aggregated cloud, and the 3D boxes (with velocities) in the ego frame.
Input: ``sample_data``'s 13 keyframes. The synthetic rig has three colour cameras; the three
rear cameras of ``bench_projection`` (``REAR_CAMERAS``, ``_rear_camera``: nuScenes intrinsics,
yaw 180°/±110°, stamps 10.4/0.5/20.1 ms before the LiDAR, poses from the log's track) are added
by ``SixCameraLog``, whose rear images decode the front cameras' JPEG files (same size and
content statistics; only the decoding cost matters for the rear ones).

avfusion: ``FusionDataset(SixCameraLog, sweeps=10, outputs=[points, images, calib, depth,
boxes], points_frame="LIDAR_TOP", occlusion=SAME_DEPTH)``: the reader's msgspec tables,
``aggregate_sweeps`` (one kernel pass per memory-mapped sweep), simplejpeg (libjpeg-turbo) decoding,
``project_cloud_to_cameras`` (one parallel numba kernel for all cameras) and ``depth_map``. The
depth maps are the peer's (nearest point deeper than 1 m per pixel, no occlusion test; the
dataset's default for multi-sweep clouds also removes occluded points, a few ms more per
sample). Row 1 decodes the images in line (the default) with numba's kernels on one thread;
row 2 decodes them on two background threads while the cloud is aggregated and projected
(``decode_threads=2``), so avfusion uses a second core the peer does not use.

Peer: the nuscenes-devkit's documented approach, its maths reimplemented in ``peers.py``: a
``DevkitNuScenes`` built once (like ``NuScenes(...)``), per sample ``from_file_multisweep``
(``devkit_multisweep``), per camera ``cv2.imread`` + BGR→RGB (the devkit uses PIL, which is not
installed here; both wrap libjpeg-turbo) and ``map_pointcloud_to_image``
(``devkit_map_pointcloud_to_image``: four rotate/translate steps of the whole cloud, then
``view_points``) turned into a depth map (nearest point per pixel), ``lidar2img`` from the
devkit's ``transform_matrix`` chain, and per annotation a ``Box`` moved into the ego frame with
``translate``/``rotate`` and its ``box_velocity``.

Both sides load the same samples in one process, one sample after another; the ratio of the
times is the ratio of samples per second. The check compares the points (same count, same
coordinates, time lags), images (identical), ``lidar2img``, depth maps (the same pixels and
depths up to the devkit's float32 rounding at pixel edges) and boxes (centres, yaw, velocity).

``python -m benchmarks.bench_dataset [--workers 2] [--context fork|spawn] [--epochs 6]`` runs
both sides in a real ``torch.utils.data.DataLoader`` each (persistent workers, all started up
front, a warm-up epoch each), the two loaders taking turns epoch by epoch so that the VM's
speed swings fall on both alike, and prints the samples per second (overall and the range over
epochs), the ratio (and its range epoch by epoch) and each worker's peak resident set (VmHWM:
the interpreter, numpy, numba, OpenCV and torch included) and how far it rose above the
worker's resident set before its first sample. Run it with ``OPENBLAS_NUM_THREADS=1``:
otherwise every worker's numpy starts BLAS threads and the peer's ``np.dot`` calls slow down
two- to threefold on two cores.

In process, row 1 runs avfusion's numba kernels on one thread (one core, like the peer) and
row 2 with ``decode_threads=2`` on two; the dataset is made with ``reuse_memory=True``, which
tells glibc to keep freed memory in the process, so the peer (same process) gains from it too.
In DataLoader workers ``FusionDataset`` does that by default (``reuse_freed_memory``), the
peer's workers keep glibc's defaults, under which a sample's fresh arrays (images 26 MB, depth
maps 35 MB) are faulted in page by page every sample.

Measured on the shared 2-core development VM, 2026-11-22 (13 samples; the VM's speed swings by
up to 2× within seconds: the peer alone took 92-134 ms a sample):

* DataLoader, 2 workers, ``OPENBLAS_NUM_THREADS=1``, 6 epochs a side taking turns: fork 3.80×,
  4.55× and 4.58× (avfusion 46-57 samples/s, peer 10.7-12.4), spawn 4.35× and 4.69×; peak RSS
  per worker 373 MiB forked (+169 for the samples) and 478 spawned, peer 309 and 435. With the
  same malloc settings given to every process (``MALLOC_MMAP_THRESHOLD_=33554432
  MALLOC_TRIM_THRESHOLD_=1073741824``, so the peer's workers keep freed memory too):
  3.03-3.27× (peer 15-18 samples/s). Before the change, loaders one after the other: fork
  2.47-3.12×, spawn 2.42-2.47×;
* in one process: 3.02× on one core each (avfusion 31 ms a sample, peer 93 ms), 3.58× with
  ``decode_threads=2``. Where avfusion's time goes on one core: JPEG decoding 20 ms (six images,
  libjpeg-turbo through simplejpeg, 3.1-3.6 ms each against OpenCV's 7.0 ms, identical
  pixels), projection with occlusion 4 ms, aggregation 3 ms, depth maps 1-2 ms, tables, boxes
  and calibration 2 ms. Without the kept memory the depth maps took 7-14 ms and the decoding
  4-5 ms more, all of it faulting in fresh pages.
"""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Mapping
from functools import cache, reduce
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pyquaternion import Quaternion

from avfusion.calibration.transforms import Trajectory
from avfusion.dataset import FusionDataset
from avfusion.io import NuScenesLog
from avfusion.io.imagefile import read_image_file
from avfusion.synth import ensure_sample_data
from avfusion.types import Frame, Image, Log, PointCloud, Sensor
from benchmarks.bench_projection import REAR_CAMERAS, _rear_camera, _record
from benchmarks.harness import Case
from benchmarks.peers import (
    DevkitBox,
    DevkitNuScenes,
    _transform_matrix,
    devkit_map_pointcloud_to_image,
    devkit_multisweep,
)

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
N_SWEEPS = 10
OUTPUTS = ("points", "images", "calib", "depth", "boxes")
FRONT_CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")
#: rear camera → the front camera whose JPEG it decodes
REAR_IMAGE_OF = {
    "CAM_BACK": "CAM_FRONT",
    "CAM_BACK_LEFT": "CAM_FRONT_LEFT",
    "CAM_BACK_RIGHT": "CAM_FRONT_RIGHT",
}
CAMERAS = FRONT_CAMERAS + tuple(REAR_IMAGE_OF)


# --------------------------------------------------------------------------------------------
# The six-camera log (sample_data + bench_projection's three rear cameras)
# --------------------------------------------------------------------------------------------


def _file_loader(path: str) -> Any:
    return lambda: read_image_file(Path(path))


class SixCameraLog(Log):
    """``sample_data``'s NuScenesLog with the three rear cameras of ``bench_projection``.

    A rear camera's image is stamped ``dt`` before the LiDAR keyframe (``REAR_CAMERAS``), posed
    from the log's track at that stamp, and decodes the JPEG of its front counterpart.
    Everything else (sweeps, poses, boxes) is the wrapped log's.
    """

    def __init__(self, root: str) -> None:
        self.base = NuScenesLog(root)
        self.ref_sensor = self.base.ref_sensor
        self.rear = {name: _rear_camera(name, xyz, yaw) for name, xyz, yaw, _ in REAR_CAMERAS}
        self.rear_dt = {name: dt for name, _, _, dt in REAR_CAMERAS}
        self._sensors = {**self.base.sensors, **self.rear}

    @property
    def sensors(self) -> Mapping[str, Sensor]:
        return self._sensors

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Frame:
        return self.frame(index)

    def frame(self, index: int, *, with_boxes: bool = True) -> Frame:
        f = self.base.frame(index, with_boxes=with_boxes)
        images = dict(f.images)
        diffs = dict(f.time_diffs_ns)
        for name, sensor in self.rear.items():
            front = f.images[REAR_IMAGE_OF[name]]
            t = f.t_ns + self.rear_dt[name]
            images[name] = Image(
                sensor, t, self.base.poses.at(t), loader=_file_loader(front.path),
                path=front.path, token=f"{front.token}:{name}",
            )  # fmt: skip
            diffs[name] = self.rear_dt[name]
        return Frame(
            f.t_ns, f.world_from_ego, self._sensors, f.points, images, f.boxes3d, f.boxes2d,
            diffs, f.missing, f.token, f.index,
        )  # fmt: skip

    def aggregate_sweeps(self, *args: Any, **kwargs: Any) -> PointCloud:
        return self.base.aggregate_sweeps(*args, **kwargs)

    def timestamps(self, sensor: str) -> np.ndarray:
        return self.base.timestamps(sensor)

    @property
    def poses(self) -> Trajectory:
        return self.base.poses

    def table(self, name: str) -> list[dict[str, Any]]:
        return self.base.table(name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SixCameraLog, (str(self.base.root),))


# --------------------------------------------------------------------------------------------
# The devkit-style loader
# --------------------------------------------------------------------------------------------


def _box_velocity(nusc: DevkitNuScenes, ann_token: str, max_time_diff: float = 1.5) -> np.ndarray:
    """nuscenes-devkit ``NuScenes.box_velocity``: centred difference over prev/next."""
    current = nusc.get("sample_annotation", ann_token)
    has_prev, has_next = current["prev"] != "", current["next"] != ""
    if not has_prev and not has_next:
        return np.array([np.nan, np.nan, np.nan])
    first = nusc.get("sample_annotation", current["prev"]) if has_prev else current
    last = nusc.get("sample_annotation", current["next"]) if has_next else current
    pos_last = np.array(last["translation"])
    pos_first = np.array(first["translation"])
    pos_diff = pos_last - pos_first
    time_last = 1e-6 * nusc.get("sample", last["sample_token"])["timestamp"]
    time_first = 1e-6 * nusc.get("sample", first["sample_token"])["timestamp"]
    time_diff = time_last - time_first
    if has_next and has_prev:
        max_time_diff *= 2
    if time_diff > max_time_diff:
        return np.array([np.nan, np.nan, np.nan])
    return pos_diff / time_diff


def devkit_sample(d: Mapping[str, Any], sample_token: str) -> dict[str, Any]:
    """One training sample the devkit way (module docstring)."""
    nusc: DevkitNuScenes = d["nusc"]
    root = d["root"]
    points, times = devkit_multisweep(
        Path(root), nusc, sample_token, "LIDAR_TOP", "LIDAR_TOP", N_SWEEPS, 1.0
    )
    sample = nusc.get("sample", sample_token)
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    lidar_cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    lidar_pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    car_from_lidar = _transform_matrix(lidar_cs["translation"], Quaternion(lidar_cs["rotation"]))
    global_from_car = _transform_matrix(
        lidar_pose["translation"], Quaternion(lidar_pose["rotation"])
    )
    images, depth, lidar2img = {}, {}, {}
    for name in CAMERAS:
        if name in REAR_IMAGE_OF:
            front_sd = nusc.get("sample_data", sample["data"][REAR_IMAGE_OF[name]])
            cs, pose = d["rear"][sample_token][name]
            filename = front_sd["filename"]
            size = (front_sd["width"], front_sd["height"])
        else:
            sd = nusc.get("sample_data", sample["data"][name])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            filename, size = sd["filename"], (sd["width"], sd["height"])
        bgr = cv2.imread(osp.join(root, filename))
        if bgr is None:
            raise FileNotFoundError(osp.join(root, filename))
        images[name] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pts, depths, _ = devkit_map_pointcloud_to_image(
            points, lidar_cs, lidar_pose, cs, pose, size, min_dist=1.0
        )
        dm = np.zeros((size[1], size[0]), dtype=np.float32)
        u = np.floor(pts[0] + 0.5).astype(np.int64)
        v = np.floor(pts[1] + 0.5).astype(np.int64)
        order = np.argsort(-depths)  # nearest written last
        dm[v[order], u[order]] = depths[order]
        depth[name] = dm
        cam_from_car = _transform_matrix(
            cs["translation"], Quaternion(cs["rotation"]), inverse=True
        )
        car_from_global = _transform_matrix(
            pose["translation"], Quaternion(pose["rotation"]), inverse=True
        )
        k4 = np.eye(4)
        k4[:3, :3] = np.array(cs["camera_intrinsic"])
        lidar2img[name] = reduce(
            np.dot, [k4, cam_from_car, car_from_global, global_from_car, car_from_lidar]
        )
    boxes = []
    pose_q = Quaternion(lidar_pose["rotation"])
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        box = DevkitBox(
            np.array(ann["translation"]), np.array(ann["size"]), Quaternion(ann["rotation"])
        )
        velocity = _box_velocity(nusc, ann_token)
        # Box.translate(-pose translation), then Box.rotate(pose rotation inverse)
        box.center = box.center + -np.array(lidar_pose["translation"])
        inv = pose_q.inverse
        box.center = np.dot(inv.rotation_matrix, box.center)
        box.orientation = inv * box.orientation
        velocity = np.dot(inv.rotation_matrix, velocity)
        boxes.append((box, velocity, ann["category_name"]))
    return {
        "points": points,
        "times": times,
        "images": images,
        "depth": depth,
        "lidar2img": lidar2img,
        "boxes": boxes,
    }


# --------------------------------------------------------------------------------------------
# Setup, both sides, check
# --------------------------------------------------------------------------------------------


#: The peer's depth map: every point deeper than 1 m, nearest per pixel, no occlusion test.
SAME_DEPTH = {"occlusion": False, "min_depth_m": 1.0}


def make_dataset(root: str, decode_threads: int = 0, *, for_workers: bool = False) -> FusionDataset:
    """The benchmark's ``FusionDataset`` over ``SixCameraLog(root)``. In process (the CASES)
    numba's threading layer is left alone, so this module never changes it for the others, and
    the process keeps freed memory for reuse (``reuse_memory=True``: the peer, in the same
    process, gains from it too); DataLoader workers do that by default."""
    return FusionDataset(
        SixCameraLog(root), sensors=("LIDAR_TOP", *CAMERAS), sweeps=N_SWEEPS, outputs=OUTPUTS,
        points_frame="LIDAR_TOP", occlusion=SAME_DEPTH, decode_threads=decode_threads,
        fork_safe_numba=for_workers, reuse_memory=None if for_workers else True,
    )  # fmt: skip


def rear_records(log: SixCameraLog, nusc: DevkitNuScenes) -> dict[str, Any]:
    """Sample token → rear camera → (calibrated_sensor, ego_pose) records for the devkit side."""
    rear: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {}
    for token in log.base.sample_tokens:
        lidar_sd = nusc.get("sample_data", nusc.get("sample", token)["data"]["LIDAR_TOP"])
        t_lidar = lidar_sd["timestamp"] * 1000
        rear[token] = {}
        for name, sensor in log.rear.items():
            k = sensor.camera.K.tolist()  # type: ignore[union-attr]
            pose = log.poses.at(t_lidar + log.rear_dt[name])
            rear[token][name] = (_record(sensor.ego_from_sensor, camera_intrinsic=k), _record(pose))
    return rear


@cache
def _setup(n_samples: int, decode_threads: int = 0) -> dict[str, Any]:
    root = str(ensure_sample_data(SAMPLE_DATA))
    ds = make_dataset(root, decode_threads)
    log: SixCameraLog = ds._process_state().logs[0]  # type: ignore[assignment]
    indices = np.linspace(len(ds) - 1, 0, n_samples).round().astype(int)[::-1].tolist()
    nusc = DevkitNuScenes(log.base.version, root)
    return {
        "root": root,
        "dataset": ds,
        "indices": indices,
        "tokens": [log.base.sample_tokens[i] for i in indices],
        "nusc": nusc,
        "rear": rear_records(log, nusc),
    }


def _dataset_setup(scale: float) -> dict[str, Any]:
    return _setup(max(1, min(13, round(13 * scale))))


def _dataset_setup_threads(scale: float) -> dict[str, Any]:
    return _setup(max(1, min(13, round(13 * scale))), 2)


def _dataset_ours(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Row 1 (no decode threads) on one core like the peer: numba's kernels on one thread.
    Row 2 (``decode_threads=2``) uses both cores."""
    import numba

    ds: FusionDataset = d["dataset"]
    threads = numba.get_num_threads()
    numba.set_num_threads(threads if ds.decode_threads else 1)
    try:
        return [ds[i] for i in d["indices"]]
    finally:
        numba.set_num_threads(threads)


def _dataset_peer(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [devkit_sample(d, token) for token in d["tokens"]]


def _dataset_check(ours: list[dict[str, Any]], peer: list[dict[str, Any]]) -> None:
    for mine, theirs in zip(ours, peer, strict=True):
        token = mine["token"]
        xyz = mine["points"]["LIDAR_TOP"]
        ref = theirs["points"][:3].T
        if xyz.shape != ref.shape:
            raise AssertionError(f"{token}: {xyz.shape[0]} points vs the devkit's {ref.shape[0]}")
        np.testing.assert_allclose(xyz, ref, rtol=0, atol=2e-3)
        np.testing.assert_allclose(
            mine["point_attrs"]["LIDAR_TOP"]["time_lag_s"], theirs["times"][0], rtol=0, atol=1e-4
        )
        for name in CAMERAS:
            if not np.array_equal(mine["images"][name], theirs["images"][name]):
                raise AssertionError(f"{token} {name}: decoded images differ")
            l2i = mine["calib"][name]["lidar2img"].astype(np.float64)
            np.testing.assert_allclose(l2i, theirs["lidar2img"][name], rtol=1e-5, atol=1e-2)
            # same depth maps away from the devkit's 1 px margin; a point within rounding of a
            # pixel edge (the devkit transforms float32 world coordinates) may land in the
            # neighbouring pixel on one side: measured 0.05-0.6 % of the pixels (most for points
            # 1.5 m from a camera)
            ours_d, peer_d = mine["depth"][name][2:-2, 2:-2], theirs["depth"][name][2:-2, 2:-2]
            hit, peer_hit = ours_d > 0, peer_d > 0
            if hit.sum() < 1000:
                raise AssertionError(f"{token} {name}: only {int(hit.sum())} depth pixels")
            if np.count_nonzero(hit != peer_hit) > max(3, hit.sum() // 100):
                raise AssertionError(f"{token} {name}: depth maps cover different pixels")
            both = hit & peer_hit
            close = np.abs(ours_d[both] - peer_d[both]) < 5e-3
            if close.mean() < 0.995:
                raise AssertionError(
                    f"{token} {name}: depth maps differ ({close.mean():.4f} equal)"
                )
        boxes = mine["boxes"]
        centres = np.array([b.center for b, _, _ in theirs["boxes"]]).reshape(-1, 3)
        np.testing.assert_allclose(boxes["center"], centres, rtol=0, atol=1e-3)
        rots = [b.orientation.rotation_matrix for b, _, _ in theirs["boxes"]]
        yaws = np.array([np.arctan2(r[1, 0], r[0, 0]) for r in rots])
        dyaw = np.angle(np.exp(1j * (boxes["yaw"] - yaws)))
        np.testing.assert_allclose(dyaw, 0.0, atol=1e-4)
        vel = np.array([v for _, v, _ in theirs["boxes"]]).reshape(-1, 3)
        np.testing.assert_allclose(boxes["velocity"], vel, rtol=0, atol=1e-3)


CASES = [
    Case(
        "dataset samples: 10-sweep LiDAR + 6 cameras (decode, lidar2img, depth) + boxes",
        "devkit multisweep + cv2 decode + map_pointcloud_to_image ×6 + Box loop",
        _dataset_setup,
        _dataset_ours,
        _dataset_peer,
        _dataset_check,
        repeats=3,
    ),
    Case(
        "dataset samples, same, 2 image-decoding threads (avfusion on 2 cores, peer on 1)",
        "devkit multisweep + cv2 decode + map_pointcloud_to_image ×6 + Box loop",
        _dataset_setup_threads,
        _dataset_ours,
        _dataset_peer,
        _dataset_check,
        repeats=3,
    ),
]


# --------------------------------------------------------------------------------------------
# DataLoader throughput and peak memory per worker: python -m benchmarks.bench_dataset
# --------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1  # pragma: no cover - Linux only


_BASE_KIB: dict[int, int] = {}


def _memory(work: Any) -> dict[str, int]:
    """Run ``work()`` and report this worker's peak RSS and its resident set before its first
    sample (after the imports), both KiB."""
    _BASE_KIB.setdefault(os.getpid(), _status_kib("VmRSS"))
    n = work()
    return {"points": n, "hwm_kib": _status_kib("VmHWM"), "base_kib": _BASE_KIB[os.getpid()],
            "pid": os.getpid()}  # fmt: skip


class OursLoaderDataset:
    """``make_dataset`` as a DataLoader sees it; each item reports its worker's peak RSS."""

    def __init__(self, root: str) -> None:
        self.dataset = make_dataset(root, for_workers=True)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, int]:
        return _memory(lambda: len(self.dataset[i]["points"]["LIDAR_TOP"]))


class PeerLoaderDataset:
    """The devkit-style loader as a map-style dataset (its tables built once per process)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.tokens = NuScenesLog(root).sample_tokens
        self._d: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, int]:
        def work() -> int:
            if self._d is None:
                six = SixCameraLog(self.root)
                nusc = DevkitNuScenes(six.base.version, self.root)
                self._d = {"root": self.root, "nusc": nusc, "rear": rear_records(six, nusc)}
            return int(devkit_sample(self._d, self.tokens[i])["points"].shape[1])

        return _memory(work)


def _first(batch: Any) -> Any:
    return batch


def loader_runs(
    datasets: Mapping[str, Any], workers: int, epochs: int, context: str
) -> dict[str, tuple[float, list[float], dict[int, tuple[int, int]]]]:
    """Per dataset: samples per second over ``epochs`` epochs after a warm-up epoch, the rate
    of each epoch, and per worker (peak resident set, resident set before its first sample) in
    KiB. The datasets' loaders (persistent workers, all started up front) take turns epoch by
    epoch, so a change of the machine's speed during the run (this VM's swings by up to 2× in
    seconds) falls on both sides alike; an idle loader's workers sleep."""
    import time

    from torch.utils.data import DataLoader

    loaders = {
        name: DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=_first,
                         persistent_workers=workers > 0,
                         multiprocessing_context=context if workers > 0 else None)
        for name, ds in datasets.items()
    }  # fmt: skip
    peaks: dict[str, dict[int, tuple[int, int]]] = {name: {} for name in loaders}

    def note(name: str, item: dict[str, int]) -> None:
        old = peaks[name].get(item["pid"], (0, item["base_kib"]))
        peaks[name][item["pid"]] = (max(old[0], item["hwm_kib"]), item["base_kib"])

    for name, loader in loaders.items():  # warm-up: worker start, imports, numba caches, tables
        for item in loader:
            note(name, item)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    seconds = dict.fromkeys(loaders, 0.0)
    samples = dict.fromkeys(loaders, 0)
    for _ in range(epochs):
        for name, loader in loaders.items():
            start = time.perf_counter()
            n = 0
            for item in loader:
                note(name, item)
                n += 1
            took = time.perf_counter() - start
            rates[name].append(n / took)
            seconds[name] += took
            samples[name] += n
    return {name: (samples[name] / seconds[name], rates[name], peaks[name]) for name in loaders}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="DataLoader samples/s and peak RSS per worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--context", default="fork", choices=["fork", "spawn", "forkserver"])
    args = parser.parse_args(argv)
    root = str(ensure_sample_data(SAMPLE_DATA))
    runs = loader_runs(
        {"avfusion FusionDataset": OursLoaderDataset(root),
         "devkit-style loader": PeerLoaderDataset(root)},
        args.workers, args.epochs, args.context,
    )  # fmt: skip
    print(
        f"DataLoader, {args.workers} workers ({args.context}), {args.epochs} epochs of 13 samples "
        "per side, the two loaders taking turns:"
    )
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("  (OPENBLAS_NUM_THREADS is not 1: each worker's numpy may start several BLAS "
              "threads, which slows the peer's np.dot far more than avfusion)")  # fmt: skip
    for name, (rate, per_epoch, peak) in runs.items():
        mib = ", ".join(
            f"{hwm / 1024:.0f} (+{(hwm - base) / 1024:.0f})" for hwm, base in peak.values()
        )
        print(f"  {name:22s} : {rate:6.2f} samples/s (epochs {min(per_epoch):.1f}-"
              f"{max(per_epoch):.1f}); peak RSS per worker (+ above the RSS before its first "
              f"sample) {mib} MiB")  # fmt: skip
    (ours, ours_epochs, _), (peer, peer_epochs, _) = runs.values()
    each = sorted(o / p for o, p in zip(ours_epochs, peer_epochs, strict=True))
    print(f"  ratio                  : {ours / peer:.2f}x (epoch by epoch {each[0]:.2f}-"
          f"{each[-1]:.2f}x, median {each[len(each) // 2]:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
