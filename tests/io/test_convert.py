"""convert_bag / `avfusion convert`: a bag written as nuScenes tables reads back as the same frames,
with one sample_data row per message and samples at the keyframe rate plus the labelled frames."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from avfusion.cli import app
from avfusion.errors import ConfigError
from avfusion.io.convert import ConvertSummary, convert_bag, select_keyframes
from avfusion.io.nuscenes import NuScenesLog
from avfusion.io.rosbag import BagLog, inspect_bag, suggest_rig

from .test_rosbag import TOY_RIG, SynthBags, _max_abs, _small_bag, _toy_events, synth_bags_data

MS = 1_000_000


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> SynthBags:
    return synth_bags_data(tmp_path_factory)


@pytest.fixture(scope="module")
def bag_log(bags: SynthBags) -> BagLog:
    rig, _ = suggest_rig(inspect_bag(bags.paths.ros1_bag))
    return BagLog(bags.paths.ros1_bag, rig)  # type: ignore[arg-type]


def _table(out: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((out / "v1.0-mini" / f"{name}.json").read_text())
    return rows


def _check_one_row_per_message(log: BagLog, out: Path, nus: NuScenesLog) -> None:
    """Every message is exactly one sample_data row (own file, own ego_pose) and each channel's
    rows form one prev/next chain over all its messages in time order."""
    sd = _table(out, "sample_data")
    filenames = [r["filename"] for r in sd]
    assert len(set(filenames)) == len(filenames)
    assert sorted(r["token"] for r in _table(out, "ego_pose")) == sorted(r["token"] for r in sd)
    channel_of_sensor = {r["token"]: r["channel"] for r in _table(out, "sensor")}
    channel_of_cs = {
        r["token"]: channel_of_sensor[r["sensor_token"]] for r in _table(out, "calibrated_sensor")
    }
    sample_tokens = set(nus.sample_tokens)
    by_channel: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sd:
        by_channel[channel_of_cs[r["calibrated_sensor_token"]]].append(r)
        assert r["sample_token"] in sample_tokens
        assert r["filename"].startswith("samples/" if r["is_key_frame"] else "sweeps/")
    assert set(by_channel) == set(log.sensors)
    for channel, rows in by_channel.items():
        token = {r["token"]: r for r in rows}
        heads = [r for r in rows if r["prev"] == ""]
        assert len(heads) == 1, channel
        chain = heads
        while chain[-1]["next"]:
            nxt = token[chain[-1]["next"]]  # a next outside the channel raises KeyError
            assert nxt["prev"] == chain[-1]["token"]
            chain.append(nxt)
        assert len(chain) == len(rows) == log.timestamps(channel).size, channel
        stamps_ns = np.array([r["timestamp"] for r in chain], dtype=np.int64) * 1000
        assert np.array_equal(stamps_ns, log.timestamps(channel))  # time order, no duplicate
        assert np.array_equal(nus.timestamps(channel), log.timestamps(channel))
    # the keyframes of sample j are exactly the keyframe rows naming sample j
    keyframes = {(r["sample_token"], r["token"]) for r in sd if r["is_key_frame"]}
    listed = {(s, tok) for s in nus.sample_tokens for tok in nus.keyframe_data(s).values()}
    assert listed == keyframes


def _check_frames(
    log: BagLog,
    out: Path,
    nus: NuScenesLog,
    summary: ConvertSummary,
    not_keyframe: dict[int, set[str]],
    images_every: int = 1,
) -> None:
    """Converted sample j reads back as bag frame ``summary.sample_frames[j]``, except for the
    channels ``not_keyframe[frame]`` (another sample's keyframe), which it lists as missing."""
    assert len(nus) == len(summary.sample_frames) == summary.n_samples
    worst = 0.0
    for j, i in enumerate(summary.sample_frames):
        b, f = log[i], nus[j]
        gone = not_keyframe.get(i, set())
        assert f.t_ns == b.t_ns and f.missing == tuple(sorted(set(b.missing) | gone)), (i, gone)
        assert f.time_diffs_ns == {k: v for k, v in b.time_diffs_ns.items() if k not in gone}
        assert set(f.points) == set(b.points) - gone and set(f.images) == set(b.images) - gone
        worst = max(worst, _max_abs(b.world_from_ego, f.world_from_ego))  # type: ignore[arg-type]
        for name, fp in f.points.items():
            bp = b.points[name]
            assert fp.t_ns == bp.t_ns and np.array_equal(bp.xyz, fp.xyz), (i, name)
            worst = max(worst, _max_abs(bp.world_from_ego, fp.world_from_ego))  # type: ignore[arg-type]
        if "LIDAR_TOP" in f.points:
            lidar_sd = nus.get("sample_data", f.points["LIDAR_TOP"].token)
            times = np.fromfile(out / (lidar_sd["filename"] + ".time.bin"), dtype=np.int32)
            assert np.array_equal(times, b.points["LIDAR_TOP"].attrs["point_time_ns"])
        for name, fi in f.images.items():
            bi = b.images[name]
            assert fi.t_ns == bi.t_ns
            worst = max(worst, _max_abs(bi.world_from_ego, fi.world_from_ego))  # type: ignore[arg-type]
            if j % images_every == 0:
                assert np.array_equal(bi.pixels, fi.pixels), (i, name)
        if b.boxes3d is None:
            assert f.boxes3d is not None and len(f.boxes3d) == 0 and not f.boxes2d
            continue
        assert f.boxes3d is not None and len(f.boxes3d) == len(b.boxes3d) > 0
        np.testing.assert_allclose(f.boxes3d.center, b.boxes3d.center, atol=1e-12)
        np.testing.assert_allclose(f.boxes3d.size, b.boxes3d.size, atol=1e-12)
        np.testing.assert_allclose(f.boxes3d.rotation, b.boxes3d.rotation, atol=1e-12)
        assert list(f.boxes3d.label) == list(b.boxes3d.label)
        assert set(f.boxes2d) == set(b.boxes2d) and b.boxes2d
        for name, b2 in b.boxes2d.items():
            np.testing.assert_array_equal(f.boxes2d[name].xyxy, b2.xyxy)
            assert list(f.boxes2d[name].label) == list(b2.label)
    assert worst <= 1e-6


def test_select_keyframes_grid() -> None:
    t = np.array([0, 40, 100, 160, 210, 260, 490, 520], dtype=np.int64) * MS
    # ticks every 100 ms up to 520 ms: 0, 100, 200, 300, 400, 500 -> nearest, each frame once
    assert select_keyframes(t, 10.0).tolist() == [0, 2, 4, 5, 6]
    assert select_keyframes(t + 7, 10.0).tolist() == [0, 2, 4, 5, 6]  # the grid starts at t[0]
    tie = np.array([0, 40, 60], dtype=np.int64) * MS
    assert select_keyframes(tie, 20.0).tolist() == [0, 1]  # tick 50 ms: the earlier frame
    assert select_keyframes(t, 1000.0).tolist() == list(range(8))  # faster than the frames
    for every in (None, 0, 0.0):
        assert select_keyframes(t, every).tolist() == list(range(8))
    assert select_keyframes(np.zeros(0, np.int64), 2.0).size == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"keyframe_hz must be a finite rate >= 0 Hz"):
            select_keyframes(t, bad)
    with pytest.raises(ConfigError, match=r"times must be a sorted 1-D array"):
        select_keyframes(t[::-1], 2.0)


def test_converted_log_reads_back_as_the_bag(bag_log: BagLog, tmp_path: Path) -> None:
    log = bag_log
    out = tmp_path / "converted"
    summary = convert_bag(log, out)  # 2 Hz keyframes
    # the grid (0, 500, 1000 ms after frame 0 of a 20 Hz LiDAR) ∪ the labelled frames
    t = log.assembly.t_ns
    grid = {int(np.argmin(np.abs(t - (t[0] + k * 500 * MS)))) for k in range(3)}
    assert grid == {0, 10, 20} and log.labelled_frames() == [5, 15]
    assert summary.sample_frames == [0, 5, 10, 15, 20] and summary.n_label_keyframes == 2
    assert summary.keyframe_hz == 2.0 and summary.skipped_frames == 0
    counts = {n: int(log.timestamps(n).size) for n in log.sensors}
    assert summary.n_sample_data == counts  # one row per message, nothing more
    assert summary.n_keyframes == {n: 5 for n in log.sensors} and summary.n_shared_skipped == {}
    assert summary.n_annotations == sum(
        len(log.frame_labels(i)[0] or []) for i in log.labelled_frames()
    )
    assert summary.n_box2d == sum(
        len(b) for i in log.labelled_frames() for b in log.frame_labels(i)[1].values()
    )
    assert summary.skipped_box2d == 0
    nus = NuScenesLog(out)
    _check_one_row_per_message(log, out, nus)
    ext = {r["channel"]: r for r in _table(out, "avfusion_sensor")}
    assert (
        ext["THERMAL_FRONT"]["modality"] == "thermal"
        and ext["THERMAL_FRONT"]["distortion_model"] == "radtan"
    )
    assert ext["LIDAR_TOP"]["source"]["topic"] == "/LIDAR_TOP/points"
    for name, s in log.sensors.items():
        c = nus.sensors[name]
        assert c.modality == s.modality and c.time_offset_ns == s.time_offset_ns
        assert _max_abs(c.ego_from_sensor, s.ego_from_sensor) <= 1e-12
        if s.camera is not None:
            assert c.camera is not None and np.array_equal(c.camera.K, s.camera.K)
            assert (c.camera.width, c.camera.height, c.camera.distortion) == (
                s.camera.width,
                s.camera.height,
                s.camera.distortion,
            )
            assert np.array_equal(c.camera.coeffs, s.camera.coeffs)
    _check_frames(log, out, nus, summary, {})
    # sweeps hang on the nearest sample and walk back through prev from the keyframe
    sample_t = t[summary.sample_frames]
    for r in _table(out, "sample_data"):
        if not r["is_key_frame"]:
            j = int(np.argmin(np.abs(sample_t - r["timestamp"] * 1000)))
            assert r["sample_token"] == nus.sample_tokens[j]
    assert len(nus.sweeps(2, "LIDAR_TOP")) == 11  # keyframe 10 and the frames 9 .. 0
    with pytest.raises(ConfigError, match=r"converted exists and is not an empty directory"):
        convert_bag(log, out)
    with pytest.raises(ConfigError, match=r"keyframe_hz must be a finite rate >= 0 Hz .* got -2"):
        convert_bag(log, tmp_path / "bad", keyframe_hz=-2)


def test_every_frame_a_sample_skips_shared_messages(bag_log: BagLog, tmp_path: Path) -> None:
    log = bag_log
    out = tmp_path / "every"
    summary = convert_bag(log, out, keyframe_hz=0)
    assert summary.keyframe_hz is None and summary.sample_frames == list(range(len(log)))
    # cameras (12-13 Hz), radar (13 Hz) and thermal (9 Hz) are slower than the 20 Hz LiDAR: a
    # message selected by several frames is the keyframe of one (the labelled one, else the
    # first) and the others list the channel as missing
    labelled = set(log.labelled_frames())
    expect_shared: dict[str, int] = {}
    not_keyframe: dict[int, set[str]] = defaultdict(set)
    for name, idx in log.assembly.index.items():
        users: dict[int, list[int]] = defaultdict(list)
        for i, k in enumerate(idx.tolist()):
            if k >= 0:
                users[k].append(i)
        for frames in users.values():
            owner = next((i for i in frames if i in labelled), frames[0])
            for i in frames:
                if i != owner:
                    not_keyframe[i].add(name)
        n_shared = sum(len(f) - 1 for f in users.values())
        if n_shared:
            expect_shared[name] = n_shared
    assert set(expect_shared) == set(log.sensors) - {"LIDAR_TOP"}
    assert summary.n_shared_skipped == expect_shared
    assert sum(expect_shared.values()) == 48
    counts = {n: int(log.timestamps(n).size) for n in log.sensors}
    assert summary.n_sample_data == counts == summary.n_keyframes  # every message selected once
    n_box2d = sum(len(b) for i in labelled for b in log.frame_labels(i)[1].values())
    assert summary.n_box2d == n_box2d > 0 and summary.skipped_box2d == 0
    nus = NuScenesLog(out)
    _check_one_row_per_message(log, out, nus)
    _check_frames(log, out, nus, summary, not_keyframe, images_every=6)


def test_frames_without_pose_are_skipped_and_counted(tmp_path: Path) -> None:
    bag = _small_bag(tmp_path / "toy.bag", _toy_events)
    log = BagLog(bag, TOY_RIG)
    summary = convert_bag(log, tmp_path / "out")
    # clouds at 3.5 s and 4.0 s lie beyond the /tf track (0..3 s, 20 ms extrapolation)
    assert summary.skipped_frames == 2 and summary.skipped_messages == {"L": 2}
    # a 2 Hz LiDAR at 2 Hz keyframes: every frame with a pose is a sample
    assert summary.sample_frames == list(range(6)) and summary.n_sample_data == {"L": 6}
    nus = NuScenesLog(tmp_path / "out", ref_sensor="L")
    assert len(nus) == 6
    for i in range(6):
        assert np.array_equal(nus[i].points["L"].xyz, log[i].points["L"].xyz)
        assert _max_abs(nus[i].world_from_ego, log[i].world_from_ego) <= 1e-12  # type: ignore[arg-type]
    # at 1 Hz: frames at 0.5, 1.5 and 2.5 s; the others are sweeps
    summary = convert_bag(log, tmp_path / "out1", keyframe_hz=1.0)
    assert summary.sample_frames == [0, 2, 4] and summary.n_keyframes == {"L": 3}
    assert summary.n_sample_data == {"L": 6}


def test_cli_convert(bags: SynthBags, tmp_path: Path) -> None:
    runner = CliRunner()
    rig_file = tmp_path / "rig.yaml"
    res = runner.invoke(app, ["info", str(bags.paths.ros2_dir), "--rig-out", str(rig_file)])
    assert res.exit_code == 0, res.output
    assert "/LIDAR_TOP/points" in res.output and "map→base_link" in res.output
    convert = ["convert", str(bags.paths.ros2_dir), "--rig", str(rig_file), "--out"]
    out = tmp_path / "nus"
    res = runner.invoke(app, [*convert, str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 5 samples, 95 sample_data rows (30 keyframes), 30 annotations" in res.output
    assert "shared" not in res.output
    assert len(NuScenesLog(out)) == 5
    every = tmp_path / "every"
    res = runner.invoke(app, [*convert, str(every), "--keyframe-hz", "0"])
    assert res.exit_code == 0, res.output
    assert "wrote 24 samples, 95 sample_data rows (95 keyframes)" in res.output
    assert "shared 48 keyframe selections name another sample's keyframe" in res.output
    assert len(NuScenesLog(every)) == 24
    res = runner.invoke(app, [*convert, str(tmp_path / "neg"), "--keyframe-hz", "-1"])
    assert res.exit_code == 2 and "--keyframe-hz" in res.output
    res = runner.invoke(app, [*convert, str(out)])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "is not an empty directory" in str(res.exception)
