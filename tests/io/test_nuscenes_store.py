"""NuScenesLog's typed table store, radar filters, iteration, bad input and fuzzed blobs."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avfusion.errors import AVFusionError, LogFormatError
from avfusion.io.nuscenes import NuScenesLog, RadarFilters, _us_to_ns
from avfusion.io.pcd import radar_filter
from benchmarks.bench_io import write_bench_tables
from benchmarks.peers import DevkitNuScenes

from .nuscenes_fixture import VERSION, build_root


@pytest.fixture
def synth(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    info = build_root(tmp_path / "nus")
    return tmp_path / "nus", info


def _rewrite(root: Path, table: str, edit: Any) -> None:
    path = root / VERSION / f"{table}.json"
    rows = json.loads(path.read_text())
    edit(rows)
    path.write_text(json.dumps(rows))


# ------------------------------------------------------------------------------------------
# Table store
# ------------------------------------------------------------------------------------------


def test_tables_load_lazily_and_rows_come_back_as_dicts(
    synth: tuple[Path, dict[str, Any]],
) -> None:
    root, info = synth
    log = NuScenesLog(root)
    assert "ego_pose" not in log._tables and "sample_annotation" not in log._tables
    log.ego_pose("lid0")
    assert "ego_pose" in log._tables and "sample_annotation" not in log._tables
    for name, rows in info["tables"].items():
        if not rows:
            continue
        assert log.table(name) == rows, name  # every standard field round-trips
        assert log.get(name, rows[-1]["token"]) == rows[-1]
    row = log.get("sample_data", "lid3")
    row["filename"] = "changed"  # a copy: the store is not changed
    assert log.get("sample_data", "lid3")["filename"] != "changed"
    assert log.table("lidarseg")[0]["sample_data_token"] == "lid6"  # extension tables too
    assert log.get("lidarseg", "lid6")["filename"].endswith("lid6_lidarseg.bin")


def test_unknown_columns_are_dropped_from_standard_tables_only(
    synth: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = synth

    def extra(rows: list[dict[str, Any]]) -> None:
        rows[0]["my_column"] = 1

    _rewrite(root, "sample_data", extra)
    ext = root / VERSION / "avfusion_sensor.json"
    rows = json.loads(ext.read_text())
    rows[0]["my_column"] = {"kept": True}
    ext.write_text(json.dumps(rows))
    log = NuScenesLog(root)
    assert "my_column" not in log.get("sample_data", "lid0")
    assert log.sensor_extras["CAM_THERMAL"]["my_column"] == {"kept": True}


def test_typed_decode_errors_name_file_row_and_field(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth

    def bad_type(rows: list[dict[str, Any]]) -> None:
        rows[2]["timestamp"] = "soon"

    _rewrite(root, "sample_data", bad_type)
    with pytest.raises(
        LogFormatError,
        match=r"sample_data\.json: sample_data lid2 \(row 2\): Expected `int \| float`, got `str` - at `\$\.timestamp`",
    ):
        NuScenesLog(root)

    def no_pose(rows: list[dict[str, Any]]) -> None:
        rows[1]["rotation"] = [1.0, 0.0, 0.0]

    _rewrite(root, "sample_data", lambda rows: rows[2].update(timestamp=1))
    _rewrite(root, "ego_pose", no_pose)
    log = NuScenesLog(root)
    with pytest.raises(
        LogFormatError, match=r"ego_pose\.json: ego_pose ep_lid1 \(row 1\): .*length 4.*rotation"
    ):
        log[0]
    (root / VERSION / "scene.json").write_text("")
    with pytest.raises(
        LogFormatError, match=r"scene\.json: malformed JSON: Input data was truncated"
    ):
        NuScenesLog(root)
    (root / VERSION / "scene.json").write_text('[{"token": "a"}, 7]')
    with pytest.raises(LogFormatError, match=r"scene\.json: row 1 is not an object"):
        NuScenesLog(root)
    (root / VERSION / "scene.json").write_text('[{"token": "a"}]')
    _rewrite(root, "ego_pose", lambda rows: rows[1].update(rotation=[1.0, 0.0, 0.0, 0.0]))
    (root / VERSION / "avfusion_box2d.json").write_text('{"a": 1}')
    with pytest.raises(LogFormatError, match=r"avfusion_box2d\.json: expected a JSON list"):
        NuScenesLog(root)[1]


def test_timestamps_int_float_and_out_of_range(synth: tuple[Path, dict[str, Any]]) -> None:
    root, info = synth
    assert _us_to_ns(1556675185903083.2, "x") == 1556675185903083250  # stored double, exactly
    assert _us_to_ns(1_600_000_000_000_000, "x") == 1_600_000_000_000_000_000
    with pytest.raises(LogFormatError, match="timestamp must be a number"):
        _us_to_ns(True, "x")

    def floats(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            r["timestamp"] = r["timestamp"] + 0.25

    _rewrite(root, "sample_data", floats)
    log = NuScenesLog(root)
    expected = sorted(r["timestamp"] * 1000 + 250 for r in info["tables"]["sample_data"] if r["token"].startswith("lid"))  # fmt: skip
    np.testing.assert_array_equal(log.timestamps("LIDAR_TOP"), expected)
    assert log.load_points("lid0").t_ns == info["tables"]["sample_data"][0]["timestamp"] * 1000 + 250  # fmt: skip

    _rewrite(root, "sample_data", lambda rows: rows[4].update(timestamp=10**19))
    with pytest.raises(LogFormatError, match=r"sample_data lid4: timestamp 10+ µs is out of range"):
        NuScenesLog(root)


def test_bench_tables_load_like_the_devkit(tmp_path: Path) -> None:
    info = write_bench_tables(tmp_path, 3000)
    log = NuScenesLog(tmp_path)
    nusc = DevkitNuScenes(info["version"], tmp_path)
    assert len(log) == len(nusc.sample) == info["counts"]["sample"] == 40
    assert len(log.sensors) == 12 and log.sensors["CAM_FRONT"].camera is not None
    sample = nusc.get("sample", info["sample_token"])
    assert log.keyframe_data(info["sample_token"]) == sample["data"]
    assert log.boxes3d(info["sample_token"]).token.tolist() == sample["anns"]
    stamps = {r["timestamp"] for r in json.loads((tmp_path / info["version"] / "ego_pose.json").read_text())}  # fmt: skip
    assert len(log.poses) == len(stamps)  # poses sharing a time stamp are kept once


# ------------------------------------------------------------------------------------------
# Iteration: scenes, keyframes, sweeps
# ------------------------------------------------------------------------------------------


def test_iterate_scenes_keyframes_and_sweeps(synth: tuple[Path, dict[str, Any]]) -> None:
    root, info = synth
    log = NuScenesLog(root)
    per_scene = {s["name"]: NuScenesLog(root, scene=s["name"]) for s in log.scenes}
    assert {name: one.sample_tokens for name, one in per_scene.items()} == {
        "scene-A": ["s0", "s1", "s2"],
        "scene-B": ["sB"],
    }
    assert [s["token"] for s in per_scene["scene-B"].scenes] == ["scB"]
    frames = list(log)
    assert [f.token for f in frames] == log.sample_tokens and [f.index for f in frames] == [
        0,
        1,
        2,
        3,
    ]
    assert all(np.diff([f.t_ns for f in frames]) > 0)
    clouds = list(per_scene["scene-A"].iter_points("LIDAR_TOP"))
    assert [c.token for c in clouds] == [f"lid{i}" for i in range(13)]
    assert all(c.world_from_ego is not None for c in clouds)
    for c in clouds:
        np.testing.assert_array_equal(c.xyz, info["points"][c.token][:, :3])
    assert [c.t_ns for c in clouds] == per_scene["scene-A"].timestamps("LIDAR_TOP").tolist()
    with pytest.raises(AVFusionError, match="'CAM_FRONT' is a camera"):
        next(log.iter_points("CAM_FRONT"))
    with pytest.raises(LogFormatError, match="no sample_data of channel 'LIDAR_X'"):
        next(log.iter_points("LIDAR_X"))


def test_sweeps_stop_at_a_dangling_prev(
    synth: tuple[Path, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = synth
    _rewrite(root, "sample_data", lambda rows: rows[4].update(prev="ghost"))
    log = NuScenesLog(root)
    with caplog.at_level(logging.INFO, logger="avfusion.io.nuscenes"):
        assert log.sweeps("s1", "LIDAR_TOP") == ["lid6", "lid5", "lid4"]
    assert "names prev 'ghost', which is not in the table" in caplog.text
    assert len(log.aggregate_sweeps("s1", n_sweeps=10).attrs["sweep"]) > 0


# ------------------------------------------------------------------------------------------
# Radar filters: explicit arguments, never global state
# ------------------------------------------------------------------------------------------


def test_radar_filters_are_reader_arguments(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    raw_log = NuScenesLog(root)
    raw = raw_log.load_points("rad1")
    assert len(raw) == 30  # stored points, unfiltered by default
    devkit = radar_filter(raw)  # devkit defaults
    assert devkit.n_removed > 0
    filtered_log = NuScenesLog(root, radar_filters=RadarFilters())
    cloud = filtered_log.load_points("rad1")
    np.testing.assert_array_equal(cloud.xyz, devkit.cloud.xyz)
    assert filtered_log[1].points["RADAR_FRONT"].token == "rad1"
    assert len(filtered_log[1].points["RADAR_FRONT"]) == len(devkit.cloud)
    assert len(filtered_log.load_points("rad1", radar_filters=RadarFilters.none())) == 30
    assert len(raw_log.load_points("rad1")) == 30  # one log's filters never affect another
    only_invalid = RadarFilters(invalid_states=[0], dynprops=None, ambig_states=None)
    expected = radar_filter(raw, (0,), None, None).cloud
    assert len(raw_log.load_points("rad1", radar_filters=only_invalid)) == len(expected)
    assert len(raw_log.load_points("lid0", radar_filters=RadarFilters())) == len(raw_log.load_points("lid0"))  # fmt: skip
    with pytest.raises(AVFusionError, match="invalid_states must be integers or None"):
        RadarFilters(invalid_states=["x"])  # type: ignore[list-item]


def test_radar_aggregation_is_filtered_and_matches_numpy(
    synth: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = synth
    log = NuScenesLog(root)
    agg = log.aggregate_sweeps("s1", "RADAR_FRONT", "LIDAR_TOP", n_sweeps=3, radar_filters=RadarFilters())  # fmt: skip
    cloud = log.load_points("rad1", radar_filters=RadarFilters())
    keep = ~((np.abs(cloud.xyz[:, 0]) < 1.0) & (np.abs(cloud.xyz[:, 1]) < 1.0))
    lidar = log.load_points("lid6")
    assert cloud.world_from_ego is not None and lidar.world_from_ego is not None
    ref_from_radar = (lidar.world_from_ego @ lidar.sensor.ego_from_sensor).inverse() @ (
        cloud.world_from_ego @ cloud.sensor.ego_from_sensor
    )
    np.testing.assert_allclose(agg.xyz, ref_from_radar.apply(cloud.xyz[keep]), atol=1e-4)
    np.testing.assert_array_equal(agg.attrs["dyn_prop"], cloud.attrs["dyn_prop"][keep])
    assert agg.attrs["sweep"].tolist() == [0] * len(agg)  # radar keyframes have no prev
    np.testing.assert_allclose(agg.attrs["time_lag_s"], -0.005, atol=1e-7)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_broken_radar_pcd_header(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    log = NuScenesLog(root)
    path = root / log.get("sample_data", "rad0")["filename"]
    path.write_bytes(path.read_bytes().replace(b"FIELDS", b"FIELDZ", 1))
    with pytest.raises(LogFormatError, match=path.name):
        log.load_points("rad0")
    with pytest.raises(LogFormatError, match=path.name):
        log[0]


def test_multisweep_bad_files(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    log = NuScenesLog(root)
    sweep = root / log.get("sample_data", "lid4")["filename"]
    sweep.write_bytes(sweep.read_bytes()[:-7])
    with pytest.raises(LogFormatError, match=rf"{sweep.name}: LiDAR file of \d+ bytes"):
        log.aggregate_sweeps("s1")
    sweep.unlink()
    with pytest.raises(
        LogFormatError, match=rf"{sweep.name}: file of sample_data lid4 \(LIDAR_TOP\) is missing"
    ):
        log.aggregate_sweeps("s1")
    assert len(log.aggregate_sweeps("s1", n_sweeps=2)) > 0  # lid6, lid5 are fine
    empty = root / log.get("sample_data", "lid5")["filename"]
    empty.write_bytes(b"")
    agg = log.aggregate_sweeps("s1", n_sweeps=2)
    assert set(agg.attrs["sweep"].tolist()) == {0}


def test_filenames_escaping_or_odd(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth

    def odd(rows: list[dict[str, Any]]) -> None:
        rows[4]["filename"] = "sweeps/../../outside.pcd.bin"
        rows[9]["filename"] = "bad\u0000name.pcd.bin"
        rows[7]["filename"] = ""

    _rewrite(root, "sample_data", odd)
    log = NuScenesLog(root)
    with pytest.raises(LogFormatError, match=r"sample_data lid4 filename .* escapes the data root"):
        log.aggregate_sweeps("s1")
    with pytest.raises(LogFormatError, match=r"sample_data lid9 filename .* holds a NUL byte"):
        log.load_points("lid9")
    with pytest.raises(LogFormatError, match=r"sample_data lid7 has no filename"):
        log.load_points("lid7")
    inside = (
        "sweeps/LIDAR_TOP/../LIDAR_TOP/" + Path(log.get("sample_data", "lid3")["filename"]).name
    )
    assert log.blob_path(inside, "x") == root / log.get("sample_data", "lid3")["filename"]


def test_symlinked_data_folder_is_followed(
    synth: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, info = synth
    shutil.move(root / "sweeps", tmp_path / "elsewhere")
    (root / "sweeps").symlink_to(tmp_path / "elsewhere")
    cloud = NuScenesLog(root).load_points("lid1")
    np.testing.assert_array_equal(cloud.xyz, info["points"]["lid1"][:, :3])


def test_missing_or_dangling_calibration(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    _rewrite(root, "calibrated_sensor", lambda rows: rows[0].update(sensor_token="nope"))
    with pytest.raises(
        LogFormatError,
        match=r"sensor\.json: no row with token 'nope' \(referenced by calibrated_sensor cs_LIDAR_TOP\)",
    ):
        NuScenesLog(root)
    (root / VERSION / "sensor.json").unlink()
    with pytest.raises(LogFormatError, match=r"sensor\.json: missing table 'sensor'"):
        NuScenesLog(root)


def test_zero_quaternion_ego_pose(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    _rewrite(root, "ego_pose", lambda rows: rows[5].update(rotation=[0, 0, 0, 0]))
    log = NuScenesLog(root)
    with pytest.raises(LogFormatError, match=r"ego_pose ep_lid5.*bad rotation"):
        log.aggregate_sweeps("s1")
    with pytest.raises(LogFormatError, match=r"ego_pose ep_lid5 of sample_data lid5: bad rotation"):
        log.load_points("lid5")


# ------------------------------------------------------------------------------------------
# Fuzz: truncated and mutated blobs end in a result or an AVFusionError
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("fuzz") / "nus"
    build_root(root)
    log = NuScenesLog(root)
    originals = {
        tok: (root / log.get("sample_data", tok)["filename"]).read_bytes()
        for tok in ("lid6", "lid5", "rad1")
    }
    return root, originals


@given(data=st.data())
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzzed_blobs_end_in_result_or_avfusion_error(
    fuzz_root: tuple[Path, dict[str, bytes]], data: st.DataObject
) -> None:
    root, originals = fuzz_root
    log = NuScenesLog(root)
    token = data.draw(st.sampled_from(sorted(originals)))
    blob = bytearray(originals[token])
    cut = data.draw(st.integers(0, len(blob)))
    n_flips = data.draw(st.integers(0, 8))
    for _ in range(n_flips):
        if cut:
            blob[data.draw(st.integers(0, cut - 1))] = data.draw(st.integers(0, 255))
    path = root / log.get("sample_data", token)["filename"]
    path.write_bytes(bytes(blob[:cut]))
    try:
        with contextlib.suppress(AVFusionError):
            cloud = log.load_points(token)
            assert cloud.xyz.shape[1] == 3
        with contextlib.suppress(AVFusionError):
            if token.startswith("lid"):
                agg = log.aggregate_sweeps("s1", n_sweeps=3)
            else:
                agg = log.aggregate_sweeps("s1", "RADAR_FRONT", "LIDAR_TOP", radar_filters=RadarFilters())  # fmt: skip
            assert len(agg.attrs["sweep"]) == len(agg)
    finally:
        path.write_bytes(originals[token])
