"""FusionDataset and collate: sample contents against the library's own building blocks and the
real keyframe's documented values, real DataLoaders (2 workers, fork and spawn) that must give
exactly the single-process samples, occupancy labels, determinism, caching and errors."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import avfusion as av
from avfusion import AVFusionError, ConfigError, LogFormatError
from avfusion.dataset import FusionDataset, collate
from avfusion.fusion.painting import paint_colour
from avfusion.fusion.projection import depth_map, project_cloud, project_cloud_to_cameras
from avfusion.io import NuScenesLog

REPO = Path(__file__).resolve().parents[1]
ALL = ("points", "images", "calib", "depth", "painted", "boxes", "time_diffs")
#: in-image points (depth > 1 m) per camera of the real keyframe (realdata MANIFEST.md)
KEYFRAME_IN_IMAGE = {
    "CAM_FRONT": 3067,
    "CAM_FRONT_RIGHT": 3079,
    "CAM_FRONT_LEFT": 3704,
    "CAM_BACK": 4826,
    "CAM_BACK_LEFT": 4097,
    "CAM_BACK_RIGHT": 3379,
}


@pytest.fixture(scope="module")
def sample_root() -> Path:
    from avfusion.synth import ensure_sample_data

    return ensure_sample_data(REPO / "sample_data")


@pytest.fixture(scope="module")
def keyframe(realdata: Path) -> Path:
    return realdata / "nuscenes-keyframe"


@pytest.fixture(scope="module")
def occ_root(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Occ3D-style tree ``gts/<scene>/<token>/labels.npz`` built from the synthetic truth."""
    log = NuScenesLog(sample_root)
    scene = log.scenes[0]["name"]
    root = tmp_path_factory.mktemp("occ")
    for token in log.sample_tokens:
        target = root / "gts" / scene / token
        target.mkdir(parents=True)
        shutil.copy(sample_root / "truth" / "occupancy" / token / "labels.npz", target)
    return root


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Deep equality of samples/batches: same keys, types, dtypes, shapes and values."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{path}: {type(b)}"
        assert a.dtype == b.dtype and a.shape == b.shape, (
            f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        )
        nan = a.dtype.kind in "fc"
        assert np.array_equal(a, b, equal_nan=nan), f"{path}: values differ"
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{k}]")
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} vs {b!r}"


def make(*args: Any, **kwargs: Any) -> FusionDataset:
    """A dataset that leaves numba's threading layer alone: in-process tests must not choose it
    for the rest of the test session (the fork tests run in fresh interpreters instead)."""
    return FusionDataset(*args, fork_safe_numba=False, **kwargs)


# --------------------------------------------------------------------------------------------
# Contents
# --------------------------------------------------------------------------------------------


def test_single_sweep_sample_matches_the_building_blocks(sample_root: Path) -> None:
    log = NuScenesLog(sample_root)
    ds = make(log, outputs=ALL, points_frame="ego")
    k = 5
    s = ds[k]
    frame = log[k]
    assert s["token"] == frame.token and s["index"] == k and s["scene"] == "scene-0000"
    assert s["t_ns"] == frame.t_ns
    lidar = frame.points["LIDAR_TOP"]
    # the keyframe cloud, at its own time = the sample time, moved by the extrinsic only
    expected = lidar.sensor.ego_from_sensor.apply(lidar.xyz.astype(np.float64))
    np.testing.assert_allclose(s["points"]["LIDAR_TOP"], expected, atol=1e-4)
    np.testing.assert_array_equal(
        s["point_attrs"]["LIDAR_TOP"]["intensity"], lidar.attrs["intensity"]
    )
    # radar: its own capture time, moved into the ego frame at the LiDAR time
    radar = frame.points["RADAR_FRONT"]
    world_from_radar = radar.world_from_ego @ radar.sensor.ego_from_sensor  # type: ignore[operator]
    ego_from_world = frame.world_from_ego.inverse()  # type: ignore[union-attr]
    np.testing.assert_allclose(
        s["points"]["RADAR_FRONT"], (ego_from_world @ world_from_radar).apply(radar.xyz), atol=1e-4
    )
    assert s["images"]["CAM_FRONT"].shape == (900, 1600, 3)
    assert s["images"]["THERMAL_FRONT"].dtype == np.uint16
    # lidar2img reproduces the motion-compensated projection of the points (in the ego frame)
    for cam in ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"):
        proj = project_cloud(lidar, frame.images[cam], log.poses, deskew=False)
        sel = proj.in_image
        assert sel.sum() > 500
        p = np.c_[s["points"]["LIDAR_TOP"][sel], np.ones(int(sel.sum()))] @ s["calib"][cam][
            "lidar2img"
        ].T.astype(np.float64)
        np.testing.assert_allclose(p[:, 2], proj.depth_m[sel], atol=2e-3)
        np.testing.assert_allclose(p[:, :2] / p[:, 2:3], proj.uv_px[sel], atol=0.05)
        np.testing.assert_allclose(s["calib"][cam]["K"], frame.sensors[cam].camera.K, rtol=1e-6)  # type: ignore[union-attr]
        np.testing.assert_array_equal(s["depth"][cam], depth_map(proj))
    # painting and boxes as the library computes them
    colour = {n: frame.images[n] for n in ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")}
    paint = paint_colour(lidar, colour, log.poses, deskew=False)
    np.testing.assert_array_equal(s["painted"]["LIDAR_TOP"]["rgb"], paint.rgb_uint8())
    np.testing.assert_array_equal(s["painted"]["LIDAR_TOP"]["mask"], paint.painted)
    assert 1000 < paint.painted.sum() < len(lidar)
    boxes = frame.boxes3d.transformed(ego_from_world, "ego")  # type: ignore[union-attr]
    np.testing.assert_allclose(s["boxes"]["center"], boxes.center, atol=1e-4)
    np.testing.assert_allclose(s["boxes"]["box7"][:, 3:6], boxes.size, atol=1e-5)
    np.testing.assert_allclose(s["boxes"]["yaw"], boxes.yaw, atol=1e-6)
    np.testing.assert_array_equal(s["boxes"]["label"], boxes.label)
    assert s["time_diffs_ns"] == {n: frame.time_diffs_ns[n] for n in ds.sensors}


def test_multi_sweep_points_are_the_readers_aggregate(sample_root: Path) -> None:
    log = NuScenesLog(sample_root)
    ds = make(log, sensors=["LIDAR_TOP", "CAM_FRONT"], sweeps=10,
                       outputs=["points", "depth"], points_frame="LIDAR_TOP")  # fmt: skip
    s = ds[8]
    agg = log.aggregate_sweeps(8, n_sweeps=10)
    np.testing.assert_array_equal(s["points"]["LIDAR_TOP"], agg.xyz)
    np.testing.assert_array_equal(
        s["point_attrs"]["LIDAR_TOP"]["time_lag_s"], agg.attrs["time_lag_s"]
    )
    assert set(s["point_attrs"]["LIDAR_TOP"]["sweep"].tolist()) == set(range(10))
    assert set(s) == {
        "token",
        "index",
        "frame_index",
        "source",
        "scene",
        "t_ns",
        "points",
        "point_attrs",
        "depth",
    }
    proj = project_cloud_to_cameras(agg, [log[8].images["CAM_FRONT"]], log.poses, deskew=False,
                                    footprint_px=2, footprint_size_m=None)  # fmt: skip
    np.testing.assert_array_equal(s["depth"]["CAM_FRONT"], depth_map(proj["CAM_FRONT"]))


def test_deskew_uses_the_per_point_times(sample_root: Path) -> None:
    from avfusion.fusion.deskew import deskew_cloud

    log = NuScenesLog(sample_root)
    s = make(log, sensors=["LIDAR_TOP"], outputs=["points"], points_frame="LIDAR_TOP", deskew=True)[
        4
    ]
    lidar = log[4].points["LIDAR_TOP"]
    np.testing.assert_array_equal(s["points"]["LIDAR_TOP"], deskew_cloud(lidar, log.poses).xyz)
    moved = np.linalg.norm(s["points"]["LIDAR_TOP"] - lidar.xyz, axis=1)
    assert moved.max() > 0.05  # the ego moves during the 50 ms sweep


def test_real_keyframe_values(keyframe: Path) -> None:
    ds = make(keyframe, outputs=ALL, points_frame="LIDAR_TOP")
    assert len(ds) == 1
    s = ds[0]
    assert s["token"] == "ca9a282c9e77460f8360f564131a8af5" and s["scene"] == "scene-0061"
    pts = s["points"]["LIDAR_TOP"]
    assert pts.shape == (34_688, 3)
    homog = np.c_[pts.astype(np.float64), np.ones(len(pts))]
    for cam, expected in KEYFRAME_IN_IMAGE.items():
        p = homog @ s["calib"][cam]["lidar2img"].astype(np.float64).T
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = p[:, 0] / z, p[:, 1] / z
        inside = (z > 1) & (u >= 0) & (u < 1600) & (v >= 0) & (v < 900)
        assert abs(int(inside.sum()) - expected) <= 3, (cam, int(inside.sum()), expected)
        assert s["images"][cam].shape == (900, 1600, 3)
        assert (s["depth"][cam] > 0).sum() > 0.8 * expected * 0.5
    assert s["time_diffs_ns"]["CAM_FRONT"] == -35_491_000
    assert len(s["boxes"]["center"]) == 69
    assert s["boxes"]["num_lidar_pts"].sum() > 0
    assert s["painted"]["LIDAR_TOP"]["mask"].sum() > 15_000


def test_occupancy_labels_are_read_from_the_occ3d_tree(sample_root: Path, occ_root: Path) -> None:
    ds = make(sample_root, sensors=["LIDAR_TOP"], outputs=["occupancy"], occupancy_dir=occ_root)
    s = ds[3]
    with np.load(sample_root / "truth" / "occupancy" / s["token"] / "labels.npz") as truth:
        for key in ("semantics", "mask_lidar", "mask_camera"):
            np.testing.assert_array_equal(s["occupancy"][key], truth[key])
    assert s["occupancy"]["semantics"].shape == (200, 200, 16)
    assert (s["occupancy"]["semantics"] == 17).mean() > 0.5  # mostly free space
    (occ_root / "gts" / "scene-0000" / s["token"] / "labels.npz").rename(occ_root / "moved.npz")
    try:
        with pytest.raises(LogFormatError, match=f"occupancy labels of sample {s['token']}"):
            ds[3]
    finally:
        (occ_root / "moved.npz").rename(occ_root / "gts" / "scene-0000" / s["token"] / "labels.npz")


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def _loader_batches(ds: FusionDataset, context: str, indices: list[int]) -> list[dict[str, Any]]:
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(
        Subset(ds, indices), batch_size=2, num_workers=2, collate_fn=collate,
        multiprocessing_context=context, timeout=300,
    )  # fmt: skip
    return list(loader)


def _single_batches(ds: FusionDataset, indices: list[int]) -> list[dict[str, Any]]:
    return [collate([ds[i] for i in indices[k : k + 2]]) for k in range(0, len(indices), 2)]


def _sample_data_dataset(sample_root: Path, occ_root: Path, **kwargs: Any) -> FusionDataset:
    # from a path (re-opened per spawned worker), with random subsampling: must not depend on
    # which worker draws
    return FusionDataset(sample_root, sweeps=3, outputs=(*ALL, "occupancy"), occupancy_dir=occ_root,
                         max_points=20_000, seed=7, **kwargs)  # fmt: skip


def _keyframe_dataset(keyframe: Path, **kwargs: Any) -> FusionDataset:
    # two Log objects (NuScenesLog pickles as its arguments), so that both workers get a sample
    return FusionDataset([NuScenesLog(keyframe), NuScenesLog(keyframe)], outputs=ALL, **kwargs)


def _check_loaders(datasets: list[tuple[FusionDataset, list[int]]], context: str) -> None:
    """Every loader's batches first, then the single-process ones: with fork, the main process
    of a training loop runs no avfusion kernel before its workers start (module docstring of
    avfusion.dataset, Workers)."""
    got = [_loader_batches(ds, context, indices) for ds, indices in datasets]
    for (ds, indices), batches in zip(datasets, got, strict=True):
        expected = _single_batches(ds, indices)
        assert len(batches) == len(expected) > 0
        for a, b in zip(expected, batches, strict=True):
            assert_same(a, b)


def fork_main(sample_root: str, occ_root: str, keyframe: str) -> None:
    """Run in a fresh interpreter (the pytest process has run numba kernels): 2 forked workers
    must give the single-process batches, the parent computing those after the loaders."""
    datasets = [(_sample_data_dataset(Path(sample_root), Path(occ_root)), [2, 9, 5, 12])]
    if keyframe:
        datasets.append((_keyframe_dataset(Path(keyframe)), [0, 1]))
    _check_loaders(datasets, "fork")
    print("OK")


def fork_after_openmp_main(sample_root: str) -> None:
    """Run in a fresh interpreter: the parent runs a parallel numba kernel (GNU OpenMP, unless
    TBB is installed) before its workers start; the outputs without parallel kernels still work
    in forked workers, the others say what to do."""
    import numba

    from avfusion.fusion.projection import densify_depth

    densify_depth(np.ones((4, 4), np.float32))
    if numba.threading_layer() != "omp":
        print("SKIP", numba.threading_layer())
        return
    plain = FusionDataset(
        sample_root,
        sensors=["LIDAR_TOP", "CAM_FRONT"],
        outputs=("points", "images", "calib", "boxes"),
    )
    _check_loaders([(plain, [0, 1])], "fork")
    depth = FusionDataset(sample_root, sensors=["LIDAR_TOP", "CAM_FRONT"], outputs=("depth",))
    with pytest.raises(AVFusionError, match="inherited numba's GNU-OpenMP threads"):
        _loader_batches(depth, "fork", [0, 1])
    print("OK")


def _fresh_python(call: str) -> str:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("NUMBA_THREADING_LAYER", None)
    proc = subprocess.run([sys.executable, "-c", f"from tests.test_dataset import *; {call}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def freed_rss_drop(tuned: bool) -> None:
    """Print how many MB the resident set drops when a 24 MB array is freed (fresh process)."""
    from avfusion.dataset import reuse_freed_memory

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    if tuned:
        assert reuse_freed_memory()
    block = np.ones(3 << 20)  # 24 MB (under the 32 MiB mmap threshold set), every page touched
    before = rss_mb()
    del block
    print(round(before - rss_mb(), 1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_keeps_freed_blocks() -> None:
    """By default glibc returns a freed 24 MB block to the system at once (the next sample
    faults it in again); after ``reuse_freed_memory`` the process keeps it for reuse."""
    assert float(_fresh_python("freed_rss_drop(False)").split()[-1]) > 20
    assert float(_fresh_python("freed_rss_drop(True)").split()[-1]) < 4


def test_reuse_memory_option(sample_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """reuse_memory=None tunes worker processes only, True this process too, False never."""
    import avfusion.dataset as D

    calls: list[int] = []
    monkeypatch.setattr(D, "reuse_freed_memory", lambda: calls.append(os.getpid()) or True)
    opts = {"sensors": ["LIDAR_TOP"], "outputs": ("points",)}
    FusionDataset(sample_root, **opts)[0]
    FusionDataset(sample_root, reuse_memory=False, **opts)[0]
    assert calls == []
    FusionDataset(sample_root, reuse_memory=True, **opts)
    assert calls == [os.getpid()]
    monkeypatch.setattr(D.multiprocessing, "parent_process", lambda: object())  # as in a worker
    for reuse, expect in ((None, 2), (False, 2)):
        ds = pickle.loads(pickle.dumps(FusionDataset(sample_root, reuse_memory=reuse, **opts)))
        ds[0]
        assert len(calls) == expect


def test_dataloader_spawn_workers_equal_single_process(
    sample_root: Path, occ_root: Path, keyframe: Path
) -> None:
    pytest.importorskip("torch")
    _check_loaders(
        [
            (_sample_data_dataset(sample_root, occ_root, fork_safe_numba=False), [2, 9, 5, 12]),
            (_keyframe_dataset(keyframe, fork_safe_numba=False), [0, 1]),
        ],
        "spawn",
    )


def test_dataloader_fork_workers_equal_single_process(
    sample_root: Path, occ_root: Path, keyframe: Path
) -> None:
    pytest.importorskip("torch")
    out = _fresh_python(f"fork_main({str(sample_root)!r}, {str(occ_root)!r}, {str(keyframe)!r})")
    assert out.strip() == "OK", out


def test_fork_after_gnu_openmp_in_parent(sample_root: Path) -> None:
    pytest.importorskip("torch")
    out = _fresh_python(f"fork_after_openmp_main({str(sample_root)!r})")
    if out.startswith("SKIP"):
        pytest.skip(f"numba's threading layer here is fork-safe: {out}")
    assert out.strip() == "OK", out


class WrappedLog(av.Log):
    """A Log that is not a NuScenesLog (as a bag reader would be): forwarded to one."""

    def __init__(self, root: str) -> None:
        self.base = NuScenesLog(root)

    @property
    def sensors(self) -> Any:
        return self.base.sensors

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        return self.base[index]

    def timestamps(self, sensor: str) -> Any:
        return self.base.timestamps(sensor)

    @property
    def poses(self) -> Any:
        return self.base.poses


def test_forked_state_keeps_nuscenes_logs_and_copies_others(sample_root: Path) -> None:
    nus, other = NuScenesLog(sample_root), WrappedLog(str(sample_root))
    ds = make([nus, other], outputs=["boxes"])
    before = ds[0]
    assert ds._state is not None
    import numba

    threads = numba.get_num_threads()
    ds._state.pid = -1  # as a forked child sees the state it inherited
    try:
        state = ds._process_state()
        assert numba.get_num_threads() == 1  # one numba thread in a forked worker
    finally:
        numba.set_num_threads(threads)
    assert state.logs[0] is nus  # holds no open files: shared copy-on-write
    assert state.logs[1] is not other and isinstance(state.logs[1], WrappedLog)
    assert_same(ds[0], before)
    assert_same(ds[13]["boxes"], ds[0]["boxes"])


def test_pickles_are_small_and_reopen_lazily(sample_root: Path) -> None:
    log = NuScenesLog(sample_root)
    log.boxes3d(0)  # loads the annotation tables
    blob = pickle.dumps(log)
    assert len(blob) < 2_000
    again = pickle.loads(blob)
    assert again.sample_tokens == log.sample_tokens and len(again) == len(log)
    ds = make(sample_root, outputs=["boxes"])
    ds[0]
    assert len(pickle.dumps(ds)) < 5_000  # no log, no cache, no threads
    assert_same(pickle.loads(pickle.dumps(ds))[4], ds[4])


# --------------------------------------------------------------------------------------------
# Determinism, caching, collate, errors
# --------------------------------------------------------------------------------------------


def test_seed_decides_the_subsample(sample_root: Path) -> None:
    def pts(seed: int, index: int = 4) -> np.ndarray:
        ds = make(
            sample_root, sensors=["LIDAR_TOP"], outputs=["points"], max_points=1000, seed=seed
        )
        return ds[index]["points"]["LIDAR_TOP"]

    np.testing.assert_array_equal(pts(1), pts(1))
    assert not np.array_equal(pts(1), pts(2))
    assert pts(1).shape == (1000, 3)


def test_cache_and_decode_threads_give_the_same_samples(sample_root: Path) -> None:
    plain = make(sample_root, sweeps=2, outputs=ALL)
    cached = make(sample_root, sweeps=2, outputs=ALL, cache_mb=200, decode_threads=2)
    first = cached[3]
    assert_same(first, plain[3])
    assert_same(cached[3], first)
    state = cached._process_state()
    assert state.cache.hits >= 5 and 0 < state.cache.bytes <= 200e6


def test_collate_pads_and_converts(sample_root: Path) -> None:
    ds = make(sample_root, sensors=["LIDAR_TOP", "CAM_FRONT"], outputs=["points", "calib", "boxes"])
    a, b = ds[0], ds[7]
    batch = collate([a, b])
    n = [len(a["points"]["LIDAR_TOP"]), len(b["points"]["LIDAR_TOP"])]
    assert batch["points"]["LIDAR_TOP"].shape == (2, max(n), 3)
    np.testing.assert_array_equal(batch["lengths"]["points/LIDAR_TOP"], n)
    np.testing.assert_array_equal(batch["points"]["LIDAR_TOP"][1, : n[1]], b["points"]["LIDAR_TOP"])
    assert not batch["points"]["LIDAR_TOP"][int(np.argmin(n)), min(n) :].any()
    assert batch["calib"]["CAM_FRONT"]["lidar2img"].shape == (2, 4, 4)
    assert batch["token"] == [a["token"], b["token"]]
    assert isinstance(batch["boxes"]["label"], list)
    torch = pytest.importorskip("torch")
    tb = collate([a, b], to_torch=True)
    assert isinstance(tb["points"]["LIDAR_TOP"], torch.Tensor)
    assert tb["points"]["LIDAR_TOP"].dtype == torch.float32
    with pytest.raises(AVFusionError, match="different keys"):
        collate([a, {"token": "x"}])


def test_bad_options_are_named(sample_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown lidar_points"):
        make(sample_root, outputs=["lidar_points"])
    with pytest.raises(ConfigError, match="sweeps: must be an integer >= 1"):
        make(sample_root, sweeps=0)
    with pytest.raises(ConfigError, match="CAM_BACK not in the log"):
        make(sample_root, sensors=["CAM_BACK"])
    with pytest.raises(ConfigError, match="occupancy_dir"):
        make(sample_root, outputs=["occupancy"])
    with pytest.raises(ConfigError, match="'painted' needs at least one colour camera"):
        make(sample_root, sensors=["LIDAR_TOP", "THERMAL_FRONT"], outputs=["painted"])
    with pytest.raises(ConfigError, match="depth_source"):
        make(sample_root, sensors=["CAM_FRONT"], outputs=["depth"])
    with pytest.raises(IndexError, match="out of range"):
        make(sample_root, outputs=["boxes"])[13]
    assert av.FusionDataset is FusionDataset and av.collate is collate
