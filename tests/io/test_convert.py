"""convert_bag / `avfusion convert`: a bag written as nuScenes tables reads back as the same frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avfusion.cli import app
from avfusion.errors import ConfigError
from avfusion.io.convert import convert_bag
from avfusion.io.nuscenes import NuScenesLog
from avfusion.io.rosbag import BagLog, inspect_bag, suggest_rig

from .test_rosbag import TOY_RIG, SynthBags, _max_abs, _small_bag, _toy_events, synth_bags_data


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> SynthBags:
    return synth_bags_data(tmp_path_factory)


def test_converted_log_reads_back_as_the_bag(bags: SynthBags, tmp_path: Path) -> None:
    rig, _ = suggest_rig(inspect_bag(bags.paths.ros1_bag))
    log = BagLog(bags.paths.ros1_bag, rig)  # type: ignore[arg-type]
    out = tmp_path / "converted"
    summary = convert_bag(log, out)
    assert summary.n_samples == len(log) == 24 and summary.skipped_frames == 0
    counts = {n: int(log.timestamps(n).size) for n in log.sensors}
    assert summary.n_sample_data == counts  # one row per message ...
    shared = sum(
        int(np.sum(np.maximum(np.bincount(idx[idx >= 0]) - 1, 0)))
        for idx in log.assembly.index.values()
    )
    assert summary.n_keyframe_copies == shared > 0  # ... plus a keyframe row per extra frame
    assert summary.n_annotations == sum(
        len(log.frame_labels(i)[0] or []) for i in log.labelled_frames()
    )
    nus = NuScenesLog(out)
    assert len(nus) == len(log)
    ext = {
        r["channel"]: r
        for r in json.loads((out / "v1.0-mini" / "avfusion_sensor.json").read_text())
    }
    assert (
        ext["THERMAL_FRONT"]["modality"] == "thermal"
        and ext["THERMAL_FRONT"]["distortion_model"] == "radtan"
    )
    assert ext["LIDAR_TOP"]["source"]["topic"] == "/LIDAR_TOP/points"
    for name, s in log.sensors.items():
        c = nus.sensors[name]
        assert c.modality == s.modality
        assert _max_abs(c.ego_from_sensor, s.ego_from_sensor) <= 1e-12
        if s.camera is not None:
            assert c.camera is not None and np.array_equal(c.camera.K, s.camera.K)
            assert (c.camera.width, c.camera.height, c.camera.distortion) == (
                s.camera.width,
                s.camera.height,
                s.camera.distortion,
            )
            assert np.array_equal(c.camera.coeffs, s.camera.coeffs)
    worst = 0.0
    for i in range(len(log)):
        b, f = log[i], nus[i]
        assert abs(b.t_ns - f.t_ns) < 1000 and b.missing == f.missing
        assert b.time_diffs_ns == f.time_diffs_ns
        assert set(b.points) == set(f.points) and set(b.images) == set(f.images)
        worst = max(worst, _max_abs(b.world_from_ego, f.world_from_ego))  # type: ignore[arg-type]
        for name, bp in b.points.items():
            assert np.array_equal(bp.xyz, f.points[name].xyz), (i, name)
            worst = max(worst, _max_abs(bp.world_from_ego, f.points[name].world_from_ego))  # type: ignore[arg-type]
        lidar_sd = nus.get("sample_data", f.points["LIDAR_TOP"].token)
        times = np.fromfile(out / (lidar_sd["filename"] + ".time.bin"), dtype=np.int32)
        assert np.array_equal(times, b.points["LIDAR_TOP"].attrs["point_time_ns"])
        for name, bi in b.images.items():
            worst = max(worst, _max_abs(bi.world_from_ego, f.images[name].world_from_ego))  # type: ignore[arg-type]
            if i % 6 == 0:  # decoding every image is slow; every 6th frame covers all cameras
                assert np.array_equal(bi.pixels, f.images[name].pixels), (i, name)
        if b.boxes3d is None:
            assert f.boxes3d is not None and len(f.boxes3d) == 0
            continue
        assert f.boxes3d is not None and len(f.boxes3d) == len(b.boxes3d) > 0
        np.testing.assert_allclose(f.boxes3d.center, b.boxes3d.center, atol=1e-12)
        np.testing.assert_allclose(f.boxes3d.size, b.boxes3d.size, atol=1e-12)
        assert list(f.boxes3d.label) == list(b.boxes3d.label)
        assert set(f.boxes2d) == set(b.boxes2d)
        for name, b2 in b.boxes2d.items():
            np.testing.assert_array_equal(f.boxes2d[name].xyxy, b2.xyxy)
    assert worst <= 1e-9
    with pytest.raises(ConfigError, match=r"converted exists and is not an empty directory"):
        convert_bag(log, out)


def test_frames_without_pose_are_skipped_and_counted(tmp_path: Path) -> None:
    bag = _small_bag(tmp_path / "toy.bag", _toy_events)
    log = BagLog(bag, TOY_RIG)
    summary = convert_bag(log, tmp_path / "out")
    # clouds at 3.5 s and 4.0 s lie beyond the /tf track (0..3 s, 20 ms extrapolation)
    assert summary.skipped_frames == 2 and summary.skipped_messages == {"L": 2}
    assert summary.n_samples == 6 and summary.n_sample_data == {"L": 6}
    nus = NuScenesLog(tmp_path / "out", ref_sensor="L")
    assert len(nus) == 6
    for i in range(6):
        assert np.array_equal(nus[i].points["L"].xyz, log[i].points["L"].xyz)
        assert _max_abs(nus[i].world_from_ego, log[i].world_from_ego) <= 1e-12  # type: ignore[arg-type]


def test_cli_convert(bags: SynthBags, tmp_path: Path) -> None:
    runner = CliRunner()
    rig_file = tmp_path / "rig.yaml"
    res = runner.invoke(app, ["info", str(bags.paths.ros2_dir), "--rig-out", str(rig_file)])
    assert res.exit_code == 0, res.output
    assert "/LIDAR_TOP/points" in res.output and "map→base_link" in res.output
    out = tmp_path / "nus"
    res = runner.invoke(
        app, ["convert", str(bags.paths.ros2_dir), "--rig", str(rig_file), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "wrote 24 samples" in res.output
    assert len(NuScenesLog(out)) == 24
    res = runner.invoke(
        app, ["convert", str(bags.paths.ros2_dir), "--rig", str(rig_file), "--out", str(out)]
    )
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "is not an empty directory" in str(res.exception)
