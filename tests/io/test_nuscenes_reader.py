"""NuScenesLog on the real keyframe, the Lyft table cut, and a synthetic multi-sweep root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.errors import AVFusionError, LogFormatError
from avfusion.io.nuscenes import NuScenesLog, find_nuscenes_tables, read_lidar_bin
from avfusion.io.pcd import radar_filter
from avfusion.types import Boxes3D, PointCloud, Sensor, Transform
from benchmarks.peers import devkit_multisweep

from .nuscenes_fixture import VERSION, build_root

LIDAR_FILE = "samples/LIDAR_TOP/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
# MANIFEST.md: points with depth > 1 m that land inside each 1600x900 image.
MANIFEST_IN_IMAGE = {
    "CAM_FRONT": 3067,
    "CAM_FRONT_RIGHT": 3079,
    "CAM_FRONT_LEFT": 3704,
    "CAM_BACK": 4826,
    "CAM_BACK_LEFT": 4097,
    "CAM_BACK_RIGHT": 3379,
}
MANIFEST_DT_MS = {
    "CAM_FRONT": -35.5,
    "CAM_FRONT_RIGHT": -27.6,
    "CAM_FRONT_LEFT": -43.1,
    "CAM_BACK": -10.4,
    "CAM_BACK_LEFT": -0.5,
    "CAM_BACK_RIGHT": -20.1,
}


@pytest.fixture(scope="module")
def keyframe_log(realdata: Path) -> NuScenesLog:
    return NuScenesLog(realdata / "nuscenes-keyframe")


def points_in_boxes(points: np.ndarray, boxes: Boxes3D) -> np.ndarray:
    """Count of points inside each oriented box (boundaries inclusive, like the devkit)."""
    rot = boxes.rotation_matrices()  # frame_from_box
    local = np.einsum(
        "nji,mnj->mni", rot, points[:, None, :].astype(np.float64) - boxes.center[None]
    )
    inside = np.all(np.abs(local) <= boxes.size[None] / 2.0, axis=2)
    # Sanity: the corners given by Boxes3D agree with the same rotation and size.
    corners_local = np.einsum("nji,nkj->nki", rot, boxes.corners() - boxes.center[:, None])
    np.testing.assert_allclose(
        np.abs(corners_local),
        np.broadcast_to(boxes.size[:, None] / 2, corners_local.shape),
        atol=1e-9,
    )
    return inside.sum(axis=0)


# ------------------------------------------------------------------------------------------
# Real keyframe
# ------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_keyframe_tables_sensors_and_points(keyframe_log: NuScenesLog, realdata: Path) -> None:
    log = keyframe_log
    assert len(log) == 1 and log.version == "v1.0-mini"
    assert [s["name"] for s in log.scenes] == ["scene-0061"]
    cams = [n for n, s in log.sensors.items() if s.modality == "camera"]
    assert sorted(cams) == sorted(MANIFEST_IN_IMAGE)
    for name in cams:
        cam = log.sensors[name].camera
        assert cam is not None and (cam.width, cam.height) == (1600, 900)
        if name == "CAM_BACK":
            assert cam.fx == pytest.approx(809.2, abs=0.1)
        else:
            assert 1256.5 <= cam.fx <= 1273.5 and cam.fy == pytest.approx(cam.fx)
        # MANIFEST: "cx ≈ 792–829, cy ≈ 480–501" (rounded; CAM_FRONT_LEFT cy is 479.75)
        assert 791.5 <= cam.cx <= 829.5 and 479.5 <= cam.cy <= 501.5

    frame = log[0]
    assert frame.token == "ca9a282c9e77460f8360f564131a8af5"
    assert frame.t_ns == 1532402927647951000
    lidar = frame.points["LIDAR_TOP"]
    assert len(lidar) == 34688 and lidar.xyz.dtype == np.float32 and lidar.xyz.flags.c_contiguous
    raw = np.fromfile(realdata / "nuscenes-keyframe" / LIDAR_FILE, dtype=np.float32).reshape(-1, 5)
    np.testing.assert_array_equal(lidar.xyz, raw[:, :3])
    np.testing.assert_array_equal(lidar.attrs["ring"], raw[:, 4])
    assert frame.world_from_ego is not None
    np.testing.assert_allclose(frame.world_from_ego.translation, [411.30, 1180.89, 0.0], atol=0.01)
    for cam, dt_ms in MANIFEST_DT_MS.items():
        assert frame.time_diffs_ns[cam] / 1e6 == pytest.approx(dt_ms, abs=0.06)
        assert frame.images[cam].t_ns == frame.t_ns + frame.time_diffs_ns[cam]
    np.testing.assert_array_equal(log.timestamps("LIDAR_TOP"), [frame.t_ns])
    assert len(log.poses) == 7


@pytest.mark.realdata
def test_keyframe_images_decode_lazily_as_rgb(keyframe_log: NuScenesLog) -> None:
    img = keyframe_log[0].images["CAM_FRONT"]
    assert img.pixels_or_none is None
    px = img.pixels
    assert px.shape == (900, 1600, 3) and px.dtype == np.uint8
    import cv2

    bgr = cv2.imread(img.path)
    np.testing.assert_array_equal(px, bgr[:, :, ::-1])


@pytest.mark.realdata
def test_keyframe_boxes_match_num_lidar_pts(keyframe_log: NuScenesLog, realdata: Path) -> None:
    frame = keyframe_log[0]
    boxes = frame.boxes3d
    assert boxes is not None and len(boxes) == 69 and boxes.frame == "world"
    raw = {
        r["token"]: r
        for r in json.loads(
            (realdata / "nuscenes-keyframe/v1.0-mini/sample_annotation.json").read_text()
        )
    }
    for i, tok in enumerate(boxes.token):
        w, length, h = raw[tok]["size"]
        np.testing.assert_array_equal(boxes.size[i], [length, w, h])
    assert np.all(np.isnan(boxes.velocity))  # single annotations per instance: devkit gives NaN
    assert "human.pedestrian.adult" in set(
        boxes.label
    ) and "movable_object.pushable_pullable" in set(boxes.label)
    assert boxes.attrs["attribute"][0] == "pedestrian.standing"
    assert set(boxes.attrs["visibility"]) == {""}

    lidar = frame.points["LIDAR_TOP"]
    assert lidar.world_from_ego is not None
    lidar_from_world = (lidar.world_from_ego @ lidar.sensor.ego_from_sensor).inverse()
    counts = points_in_boxes(lidar.xyz, boxes.transformed(lidar_from_world, "LIDAR_TOP"))
    np.testing.assert_array_equal(counts, boxes.attrs["num_lidar_pts"])  # 69/69, as the devkit


@pytest.mark.realdata
def test_keyframe_motion_compensated_projection(keyframe_log: NuScenesLog) -> None:
    frame = keyframe_log[0]
    lidar = frame.points["LIDAR_TOP"]
    assert lidar.world_from_ego is not None
    world_from_lidar = lidar.world_from_ego @ lidar.sensor.ego_from_sensor
    err_moving, err_static = 0, 0
    for cam, expected in MANIFEST_IN_IMAGE.items():
        image = frame.images[cam]
        assert image.world_from_ego is not None
        cam_from_ego = image.sensor.ego_from_sensor.inverse()
        cam_from_lidar = cam_from_ego @ image.world_from_ego.inverse() @ world_from_lidar
        _, depth, inside = image.camera.project(cam_from_lidar.apply(lidar.xyz))
        n = int(np.count_nonzero(inside & (depth > 1.0)))
        assert abs(n - expected) <= 0.005 * expected, (cam, n, expected)
        # the static chain (ignoring ego motion between capture times) is measurably worse
        _, depth_s, inside_s = image.camera.project(
            (cam_from_ego @ lidar.sensor.ego_from_sensor).apply(lidar.xyz)
        )
        err_moving += abs(n - expected)
        err_static += abs(int(np.count_nonzero(inside_s & (depth_s > 1.0))) - expected)
    assert err_moving * 10 < err_static, (err_moving, err_static)


# ------------------------------------------------------------------------------------------
# Lyft table cut (no blobs)
# ------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_lyft_tables_load_without_blobs(realdata: Path) -> None:
    root = realdata / "open-mmlab__mmdetection3d/tests/data/lyft/v1.01-train"
    log = NuScenesLog(root)
    assert log.version == "v1.01-train" and len(log) == 1
    assert len(log.sensors) == 10 and log.sensors["CAM_FRONT"].camera is not None
    assert log.sensors["CAM_FRONT"].camera.size == (1920, 1080)
    assert log.sensors["LIDAR_TOP"].modality == "lidar"
    boxes = log.boxes3d(0)
    assert len(boxes) == 4 and set(boxes.label) == {"car"}
    assert np.all(boxes.size[:, 0] > boxes.size[:, 1])  # (l, w, h): cars longer than wide
    assert log.get("sample", log.sample_tokens[0])["token"] == log.sample_tokens[0]
    with pytest.raises(
        LogFormatError,
        match=r"host-a101_lidar\d_\d+\.bin: file of sample_data \w+ \(LIDAR_\w+\) is missing",
    ):
        log[0]
    img = log.load_image(log.keyframe_data(0)["CAM_FRONT"])
    with pytest.raises(
        LogFormatError, match=r"host-a101_cam0_\d+\.jpeg: image of sample_data .* is missing"
    ):
        _ = img.pixels
    # the table folder itself opens too
    assert len(NuScenesLog(root / "v1.01-train")) == 1


# ------------------------------------------------------------------------------------------
# Synthetic root: sweeps, extensions, multisweep vs the devkit maths
# ------------------------------------------------------------------------------------------


@pytest.fixture
def synth(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    info = build_root(tmp_path / "nus")
    return tmp_path / "nus", info


@pytest.mark.parametrize(
    ("sample", "nsweeps", "min_distance"),
    [("s2", 10, 1.0), ("s1", 10, 1.0), ("s2", 3, 0.0), ("s0", 10, 1.0), ("s2", 1, 2.5)],
)
def test_multisweep_equals_devkit(
    synth: tuple[Path, dict[str, Any]], sample: str, nsweeps: int, min_distance: float
) -> None:
    root, info = synth
    log = NuScenesLog(root)
    agg = log.aggregate_sweeps(
        sample, "LIDAR_TOP", "LIDAR_TOP", n_sweeps=nsweeps, min_distance_m=min_distance
    )
    ref_pts, ref_times = devkit_multisweep(
        root, info["tables"], sample, "LIDAR_TOP", "LIDAR_TOP", nsweeps, min_distance
    )
    assert len(agg) == ref_pts.shape[1]
    assert np.max(np.abs(agg.xyz - ref_pts[:3].T)) < 1e-5
    np.testing.assert_array_equal(agg.attrs["intensity"], ref_pts[3])
    np.testing.assert_allclose(agg.attrs["time_lag_s"], ref_times[0], atol=1e-6)
    assert agg.attrs["time_lag_s"].dtype == np.float32
    assert agg.sensor.name == "LIDAR_TOP" and agg.t_ns == log.frame(sample, with_boxes=False).t_ns
    expected_sweeps = min(nsweeps, info["keyframe_idx"][int(sample[1])] + 1)
    assert int(agg.attrs["sweep"].max()) == expected_sweeps - 1


def test_multisweep_into_another_reference_sensor(synth: tuple[Path, dict[str, Any]]) -> None:
    root, info = synth
    log = NuScenesLog(root)
    agg = log.aggregate_sweeps(2, "LIDAR_TOP", "RADAR_FRONT", n_sweeps=5)
    ref_pts, _ = devkit_multisweep(root, info["tables"], "s2", "LIDAR_TOP", "RADAR_FRONT", 5, 1.0)
    assert agg.sensor.name == "RADAR_FRONT"
    assert np.max(np.abs(agg.xyz - ref_pts[:3].T)) < 1e-5


def test_synthetic_frames_streams_and_extensions(synth: tuple[Path, dict[str, Any]]) -> None:
    root, info = synth
    log = NuScenesLog(root)
    assert len(log) == 4 and [s["name"] for s in log.scenes] == ["scene-A", "scene-B"]
    assert log.sample_tokens == ["s0", "s1", "s2", "sB"]
    scene_a = NuScenesLog(root, scene="scene-A")
    assert len(scene_a) == 3 and len(scene_a.timestamps("LIDAR_TOP")) == 13
    assert len(NuScenesLog(root, scene="scB")) == 1
    assert len(log.timestamps("LIDAR_TOP")) == 14 and np.all(
        np.diff(log.timestamps("LIDAR_TOP")) > 0
    )
    assert len(log.sample_data_tokens("CAM_FRONT")) == 3
    assert log.sweeps("s1", "LIDAR_TOP", 4) == ["lid6", "lid5", "lid4", "lid3"]
    assert len(log.poses) == len(info["tables"]["ego_pose"])

    thermal = log.sensors["CAM_THERMAL"]
    assert thermal.modality == "thermal" and thermal.time_offset_ns == 1500
    assert (
        thermal.camera is not None
        and thermal.camera.distortion == "radtan"
        and thermal.camera.size == (16, 12)
    )
    assert log.sensor_extras["CAM_THERMAL"]["counts_to_kelvin"]["gain"] == 0.01
    assert log.sensors["RADAR_FRONT"].modality == "radar"

    frame = log[1]
    assert frame.token == "s1" and frame.index == 1 and frame.missing == ()
    lidar = frame.points["LIDAR_TOP"]
    np.testing.assert_array_equal(lidar.xyz, info["points"]["lid6"][:, :3])
    np.testing.assert_array_equal(lidar.attrs["lidarseg"], info["lidarseg"])
    assert "lidarseg" not in log[0].points["LIDAR_TOP"].attrs
    assert frame.time_diffs_ns == {
        "LIDAR_TOP": 0,
        "CAM_FRONT": -20_000_000,
        "CAM_THERMAL": -10_000_000,
        "RADAR_FRONT": 5_000_000,
    }
    # each observation has its own pose, the frame has the LiDAR's
    assert frame.world_from_ego is not None and lidar.world_from_ego is not None
    assert frame.world_from_ego.allclose(lidar.world_from_ego)
    assert not frame.images["CAM_FRONT"].world_from_ego.allclose(lidar.world_from_ego, atol=1e-3)  # type: ignore[union-attr]
    rgb = frame.images["CAM_FRONT"].pixels
    assert (
        rgb.shape == (48, 64, 3) and rgb[..., 2].mean() > 150 and rgb[..., 0].mean() < 60
    )  # BGR file → RGB
    th = frame.images["CAM_THERMAL"].pixels
    assert th.dtype == np.uint16 and th.shape == (12, 16) and th.min() >= 20000
    radar = frame.points["RADAR_FRONT"]
    assert len(radar) == 30 and radar_filter(radar).n_removed > 0
    assert set(frame.boxes2d) == {"CAM_FRONT"}
    assert frame.boxes2d["CAM_FRONT"].xyxy.tolist() == [[10, 5, 30, 25]]
    assert frame.boxes2d["CAM_FRONT"].track_id.tolist() == ["inst0"]

    scene_b = log[3]
    assert set(scene_b.points) == {"LIDAR_TOP"} and set(scene_b.missing) == {
        "CAM_FRONT",
        "CAM_THERMAL",
        "RADAR_FRONT",
    }
    assert scene_b.boxes3d is not None and len(scene_b.boxes3d) == 0


def test_synthetic_boxes_and_devkit_velocity(synth: tuple[Path, dict[str, Any]]) -> None:
    root, info = synth
    log = NuScenesLog(root)
    anns = {a["token"]: a for a in info["tables"]["sample_annotation"]}
    ts = {s["token"]: s["timestamp"] for s in info["tables"]["sample"]}
    boxes = log[1].boxes3d
    assert boxes is not None and boxes.token.tolist() == ["a1", "b1"]
    np.testing.assert_array_equal(boxes.size[0], [4.5, 1.9, 1.6])
    assert boxes.label.tolist() == ["vehicle.car", "vehicle.car"] and boxes.track_id.tolist() == [
        "inst0",
        "inst1",
    ]
    assert boxes.attrs["visibility"].tolist() == ["v80-100", ""]
    assert boxes.attrs["attribute"].tolist() == ["vehicle.moving", ""]
    assert boxes.attrs["num_lidar_pts"].tolist() == [11, 0]
    # devkit box_velocity: centred difference a0 → a2 (1.2 s apart, under 2 × 1.5 s)
    expected = (np.array(anns["a2"]["translation"]) - np.array(anns["a0"]["translation"])) / (
        (ts["s2"] - ts["s0"]) * 1e-6
    )
    np.testing.assert_allclose(boxes.velocity[0], expected, rtol=1e-12)
    assert np.all(np.isnan(boxes.velocity[1]))
    first = log[0].boxes3d
    assert first is not None
    expected0 = (np.array(anns["a1"]["translation"]) - np.array(anns["a0"]["translation"])) / (
        (ts["s1"] - ts["s0"]) * 1e-6
    )
    np.testing.assert_allclose(first.velocity[0], expected0, rtol=1e-12)


def test_velocity_nan_beyond_max_time_diff(synth: tuple[Path, dict[str, Any]]) -> None:
    root, info = synth
    tables = info["tables"]
    for s in tables["sample"]:
        if s["token"] == "s1":
            s["timestamp"] += 2_000_000  # s0 → s1 now 2.3 s apart (> 1.5 s, one-sided)
    (root / VERSION / "sample.json").write_text(json.dumps(tables["sample"]))
    boxes = NuScenesLog(root).boxes3d("s0")
    assert np.all(np.isnan(boxes.velocity[0]))


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def _rewrite(root: Path, table: str, edit: Any) -> None:
    path = root / VERSION / f"{table}.json"
    rows = json.loads(path.read_text())
    edit(rows)
    path.write_text(json.dumps(rows))


def test_missing_table(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    (root / VERSION / "sample_annotation.json").unlink()
    log = NuScenesLog(root)  # annotations load lazily
    with pytest.raises(
        LogFormatError, match=r"sample_annotation\.json: missing table 'sample_annotation'"
    ):
        log[0]
    (root / VERSION / "sample.json").unlink()
    with pytest.raises(LogFormatError, match=r"sample\.json: missing table 'sample'"):
        NuScenesLog(root)


def test_malformed_json(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    (root / VERSION / "calibrated_sensor.json").write_text('[{"token": "x",')
    with pytest.raises(LogFormatError, match=r"calibrated_sensor\.json: malformed JSON"):
        NuScenesLog(root)
    (root / VERSION / "calibrated_sensor.json").write_text('{"token": "x"}')
    with pytest.raises(
        LogFormatError, match=r"calibrated_sensor\.json: expected a JSON list of rows, got dict"
    ):
        NuScenesLog(root)
    (root / VERSION / "calibrated_sensor.json").write_text('[{"no_token": 1}]')
    with pytest.raises(
        LogFormatError,
        match=r"calibrated_sensor\.json: row 0 is not an object with a string 'token'",
    ):
        NuScenesLog(root)


def test_dangling_tokens(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth

    def dangle_pose(rows: list[dict[str, Any]]) -> None:
        rows[0]["ego_pose_token"] = "nope_pose"

    _rewrite(root, "sample_data", dangle_pose)
    log = NuScenesLog(root)
    with pytest.raises(
        LogFormatError,
        match=r"ego_pose\.json: no row with token 'nope_pose' \(referenced by sample_data lid0\)",
    ):
        log[0]
    with pytest.raises(
        LogFormatError, match=r"sample\.json: no sample with token 'missing' in this log"
    ):
        log.frame("missing")
    with pytest.raises(LogFormatError, match=r"no row with token 'zzz'"):
        log.get("instance", "zzz")

    def dangle_cs(rows: list[dict[str, Any]]) -> None:
        rows[0]["calibrated_sensor_token"] = "nope_cs"

    _rewrite(root, "sample_data", dangle_cs)
    with pytest.raises(
        LogFormatError,
        match=r"sample_data lid0 names calibrated_sensor 'nope_cs', which does not exist",
    ):
        NuScenesLog(root)


def test_dangling_instance(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth

    def dangle(rows: list[dict[str, Any]]) -> None:
        rows[0]["instance_token"] = "ghost"

    _rewrite(root, "sample_annotation", dangle)
    with pytest.raises(
        LogFormatError,
        match=r"instance\.json: no row with token 'ghost' \(referenced by sample_annotation a0\)",
    ):
        NuScenesLog(root)[0]


def test_filename_escaping_the_root(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth

    def escape(rows: list[dict[str, Any]]) -> None:
        rows[0]["filename"] = "../../etc/passwd"
        rows[1]["filename"] = "/etc/passwd"

    _rewrite(root, "sample_data", escape)
    log = NuScenesLog(root)
    with pytest.raises(
        LogFormatError,
        match=r"sample_data lid0 filename '\.\./\.\./etc/passwd' escapes the data root",
    ):
        log[0]
    with pytest.raises(
        LogFormatError, match=r"sample_data lid1 filename '/etc/passwd' escapes the data root"
    ):
        log.load_points("lid1")


def test_truncated_lidar_file(synth: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = synth
    log = NuScenesLog(root)
    path = root / log.get("sample_data", "lid0")["filename"]
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(
        LogFormatError,
        match=rf"{path.name}: LiDAR file of \d+ bytes is not a whole number of 5-float32 points",
    ):
        log.load_points("lid0")
    sensor = Sensor("L", "lidar", Transform.identity())
    with pytest.raises(LogFormatError, match=r"nope\.bin: cannot read LiDAR file"):
        read_lidar_bin(tmp_path / "nope.bin", sensor, 0)


def test_corrupt_image_and_lidarseg(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    img_path = next((root / "samples/CAM_FRONT").glob("*.jpg"))
    img_path.write_bytes(b"not a jpeg")
    log = NuScenesLog(root)
    frame = log[0]
    with pytest.raises(LogFormatError, match=rf"{img_path.name}: not a decodable image"):
        _ = frame.images["CAM_FRONT"].pixels
    seg = root / "lidarseg" / VERSION / "lid6_lidarseg.bin"
    seg.write_bytes(b"\x01\x02")
    with pytest.raises(
        LogFormatError,
        match=r"lid6_lidarseg\.bin: 2 lidarseg labels for \d+ points of sample_data lid6",
    ):
        log[1]


def test_root_detection_errors(synth: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = synth
    with pytest.raises(LogFormatError, match="no nuScenes table folder"):
        find_nuscenes_tables(tmp_path / "nus" / "samples")
    with pytest.raises(LogFormatError, match="not a directory"):
        NuScenesLog(tmp_path / "missing")
    shutil.copytree(root / VERSION, root / "v1.0-mini")
    with pytest.raises(
        LogFormatError, match=r"several table folders \(v1.0-mini, v1.0-test\); pass version="
    ):
        NuScenesLog(root)
    assert NuScenesLog(root, "v1.0-mini").version == "v1.0-mini"
    with pytest.raises(LogFormatError, match=r"no table folder 'v1\.0-trainval'"):
        NuScenesLog(root, "v1.0-trainval")
    with pytest.raises(LogFormatError, match="no scene named or with token 'scene-Z'"):
        NuScenesLog(root, "v1.0-test", scene="scene-Z")


def test_bad_requests(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    log = NuScenesLog(root)
    with pytest.raises(IndexError, match="frame 9 out of range"):
        log[9]
    with pytest.raises(LogFormatError, match="no sample_data of channel 'LIDAR_X'"):
        log.timestamps("LIDAR_X")
    with pytest.raises(AVFusionError, match="n_sweeps must be >= 1"):
        log.aggregate_sweeps(0, n_sweeps=0)
    with pytest.raises(LogFormatError, match="sample sB has no keyframe of 'CAM_FRONT'"):
        log.aggregate_sweeps("sB", ref_sensor="CAM_FRONT")
    with pytest.raises(LogFormatError, match="sample sB has no keyframe of 'RADAR_FRONT'"):
        log.sweeps("sB", "RADAR_FRONT")


def test_bad_calibration_rows(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth

    def no_intrinsic(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            if r["token"] == "cs_CAM_FRONT":
                r["camera_intrinsic"] = []

    _rewrite(root, "calibrated_sensor", no_intrinsic)
    with pytest.raises(
        LogFormatError,
        match=r"calibrated_sensor cs_CAM_FRONT \(CAM_FRONT\) has no 3x3 camera_intrinsic",
    ):
        NuScenesLog(root)

    def bad_rotation(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            if r["token"] == "cs_CAM_FRONT":
                r["camera_intrinsic"] = [[1, 0, 1], [0, 1, 1], [0, 0, 1]]
                r["rotation"] = [0, 0, 0]

    _rewrite(root, "calibrated_sensor", bad_rotation)
    with pytest.raises(
        LogFormatError,
        match=r"calibrated_sensor cs_CAM_FRONT: field 'rotation' must be 4 finite numbers",
    ):
        NuScenesLog(root)


def test_pointcloud_type_is_returned(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _ = synth
    cloud = NuScenesLog(root).load_points("lid0")
    assert (
        isinstance(cloud, PointCloud)
        and cloud.token == "lid0"
        and cloud.t_ns == 1_600_000_000_000_000_000
    )
