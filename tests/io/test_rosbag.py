"""BagLog: ROS1/ROS2 bags through a rig, compared against the same recording as nuScenes tables."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.calibration.transforms import Transform
from avfusion.errors import CalibrationError, ConfigError, LogFormatError, SyncError
from avfusion.io.nuscenes import NuScenesLog
from avfusion.io.registry import detect_format, open_log
from avfusion.io.rig import Rig, rig_from_dict
from avfusion.io.rosbag import BagLog, inspect_bag, open_bag, suggest_rig
from avfusion.synth import BagPaths, generate, write_bags
from avfusion.synth.bags import _Msgs

REAL_BAG = "virtual-vehicle__pointcloudset/tests/testdata/test.derived_ros1.bag"
SECONDS = 1.2
SEED = 5
_CACHE: dict[str, Any] = {}


@dataclass
class SynthBags:
    root: Path  # the nuScenes-style log
    paths: BagPaths


def synth_bags_data(factory: pytest.TempPathFactory) -> SynthBags:
    """One short synthetic log and its bags per test session (shared with test_convert)."""
    if "bags" not in _CACHE:
        base = factory.mktemp("bagsynth")
        generate(base / "nuscenes", seconds=SECONDS, seed=SEED)
        _CACHE["bags"] = SynthBags(base / "nuscenes", write_bags(base / "nuscenes", base / "bags"))
    bags: SynthBags = _CACHE["bags"]
    return bags


@pytest.fixture(scope="session")
def synth_bags(tmp_path_factory: pytest.TempPathFactory) -> SynthBags:
    return synth_bags_data(tmp_path_factory)


@pytest.fixture(scope="session")
def nus(synth_bags: SynthBags) -> NuScenesLog:
    return NuScenesLog(synth_bags.root)


def _bag(synth_bags: SynthBags, kind: str) -> Path:
    return synth_bags.paths.ros2_dir if kind == "mcap" else synth_bags.paths.ros1_bag


def _rig(synth_bags: SynthBags, kind: str = "ros1") -> Rig:
    rig, _ = suggest_rig(inspect_bag(_bag(synth_bags, kind)))
    assert rig is not None
    return rig


def _edit(rig: Rig, edit: Callable[[dict[str, Any]], None]) -> Rig:
    data = copy.deepcopy(rig.model_dump(mode="json", exclude_none=True))
    edit(data)
    return rig_from_dict(data)


def _sensor(data: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(s for s in data["sensors"] if s["name"] == name)
    return entry


def _max_abs(a: Transform, b: Transform) -> float:
    return float(np.max(np.abs(a.as_matrix() - b.as_matrix())))


# --------------------------------------------------------------------------------------------
# The synthetic recording: bag frames equal nuScenes keyframes
# --------------------------------------------------------------------------------------------


def test_suggested_rig_for_synthetic_bag(synth_bags: SynthBags) -> None:
    info = inspect_bag(synth_bags.paths.ros1_bag)
    rig, text = suggest_rig(info)
    assert rig is not None and rig.reference_sensor == "LIDAR_TOP"
    assert rig.pose.source == "tf"
    assert (rig.pose.world_frame, rig.pose.ego_frame) == ("map", "base_link")
    modality = {s.name: s.modality for s in rig.sensors}
    assert modality == {
        "LIDAR_TOP": "lidar", "RADAR_FRONT": "radar", "CAM_FRONT": "camera", "CAM_FRONT_LEFT": "camera",
        "CAM_FRONT_RIGHT": "camera", "THERMAL_FRONT": "thermal",
    }  # fmt: skip
    assert rig.sensor("CAM_FRONT").camera_info_topic == "/CAM_FRONT/camera_info"
    assert rig.sensor("THERMAL_FRONT").camera_info_topic == "/THERMAL_FRONT/camera_info"
    # 12 Hz cameras: 60 % of the 83 ms period; 9 Hz thermal: 67 ms
    assert rig.sensor("CAM_FRONT").tolerance_ms == 51.0
    assert rig.sensor("THERMAL_FRONT").tolerance_ms == 67.0
    assert rig.labels_path() == synth_bags.paths.labels.resolve()
    assert "pose from /tf: map -> base_link" in text
    lidar = info.topic("/LIDAR_TOP/points")
    assert lidar is not None and lidar.count == 24 and abs(lidar.rate_hz - 20.0) < 0.1
    assert lidar.frame_id == "LIDAR_TOP" and lidar.median_delay_ns == 0
    assert info.tf_dynamic == {("map", "base_link"): info.topic("/tf").count}  # type: ignore[union-attr]
    assert set(info.tf_static) == {("base_link", n) for n in modality}


@pytest.mark.parametrize("kind", ["mcap", "ros1"])
def test_bag_frames_equal_nuscenes_keyframes(
    synth_bags: SynthBags, nus: NuScenesLog, kind: str
) -> None:
    bag = _bag(synth_bags, kind)
    log = BagLog(bag, _rig(synth_bags, kind))
    assert len(log) == len(nus.timestamps("LIDAR_TOP")) == 24
    assert detect_format(bag) is not None
    ref = log.timestamps("LIDAR_TOP")
    assert np.array_equal(ref, nus.timestamps("LIDAR_TOP"))
    for name in nus.sensors:  # every message of every stream, same stamps
        assert np.array_equal(log.timestamps(name), nus.timestamps(name)), name
        assert np.array_equal(log.record_times(name), log.header_stamps(name)), name
    # calibration: extrinsics from /tf_static, camera models from CameraInfo
    for name, s in nus.sensors.items():
        b = log.sensors[name]
        assert b.modality == s.modality and b.time_offset_ns == s.time_offset_ns == 0
        assert _max_abs(b.ego_from_sensor, s.ego_from_sensor) <= 1e-12
        if s.camera is not None:
            assert b.camera is not None
            assert np.array_equal(b.camera.K, s.camera.K)
            assert (b.camera.width, b.camera.height) == (s.camera.width, s.camera.height)
            assert b.camera.distortion == s.camera.distortion
            assert np.array_equal(b.camera.coeffs, s.camera.coeffs)
    assert log.sensors["THERMAL_FRONT"].camera.distortion == "radtan"  # type: ignore[union-attr]
    assert log.labelled_frames() == [int(np.searchsorted(ref, f.t_ns)) for f in nus]
    worst_pose = 0.0
    for f in nus:
        i = int(np.searchsorted(ref, f.t_ns))
        b = log[i]
        assert b.t_ns == f.t_ns and b.index == i
        assert b.world_from_ego is not None and f.world_from_ego is not None
        worst_pose = max(worst_pose, _max_abs(b.world_from_ego, f.world_from_ego))
        assert set(b.points) == set(f.points) == {"LIDAR_TOP", "RADAR_FRONT"}
        assert set(b.images) == set(f.images) and len(b.images) == 4
        assert b.missing == f.missing == ()
        assert b.time_diffs_ns == f.time_diffs_ns
        for name, fp in f.points.items():
            bp = b.points[name]
            assert bp.xyz.dtype == np.float32 and np.array_equal(bp.xyz, fp.xyz), name
            assert bp.t_ns == fp.t_ns
            assert bp.world_from_ego is not None and fp.world_from_ego is not None
            worst_pose = max(worst_pose, _max_abs(bp.world_from_ego, fp.world_from_ego))
        np.testing.assert_array_equal(
            b.points["LIDAR_TOP"].attrs["intensity"], f.points["LIDAR_TOP"].attrs["intensity"]
        )
        np.testing.assert_array_equal(
            b.points["RADAR_FRONT"].attrs["rcs"], f.points["RADAR_FRONT"].attrs["rcs"]
        )
        for name, fi in f.images.items():
            bi = b.images[name]
            assert bi.pixels_or_none is None  # lazy until first use
            assert bi.t_ns == fi.t_ns
            assert bi.world_from_ego is not None and fi.world_from_ego is not None
            worst_pose = max(worst_pose, _max_abs(bi.world_from_ego, fi.world_from_ego))
            assert bi.pixels.dtype == fi.pixels.dtype and np.array_equal(bi.pixels, fi.pixels), name
        # labels: the same world-frame boxes and the same 2D boxes
        assert b.boxes3d is not None and f.boxes3d is not None and len(b.boxes3d) == len(f.boxes3d)
        order_b, order_f = np.argsort(b.boxes3d.track_id), np.argsort(f.boxes3d.track_id)
        assert np.array_equal(b.boxes3d.track_id[order_b], f.boxes3d.track_id[order_f])
        assert np.array_equal(b.boxes3d.label[order_b], f.boxes3d.label[order_f])
        np.testing.assert_allclose(b.boxes3d.center[order_b], f.boxes3d.center[order_f], atol=1e-12)
        np.testing.assert_allclose(b.boxes3d.size[order_b], f.boxes3d.size[order_f], atol=1e-12)
        np.testing.assert_allclose(
            b.boxes3d.rotation[order_b], f.boxes3d.rotation[order_f], atol=1e-12
        )
        assert set(b.boxes2d) == set(f.boxes2d)
        for name, fb in f.boxes2d.items():
            assert sorted(map(tuple, b.boxes2d[name].xyxy)) == sorted(map(tuple, fb.xyxy))
    # /tf at the truth rate: interpolated poses reproduce the ego_pose rows (measured: 0)
    assert worst_pose <= 1e-9
    unlabelled = next(i for i in range(len(log)) if i not in log.labelled_frames())
    assert log[unlabelled].boxes3d is None and log[unlabelled].boxes2d == {}


def test_per_point_time_and_lazy_access(synth_bags: SynthBags, nus: NuScenesLog) -> None:
    log = BagLog(synth_bags.paths.ros2_dir, _rig(synth_bags, "mcap"))
    tokens = nus.sample_data_tokens("LIDAR_TOP")
    k = 7
    sd = nus.get("sample_data", tokens[k])
    truth = np.fromfile(synth_bags.root / (sd["filename"] + ".time.bin"), dtype=np.int32)
    cloud = log.point_cloud("LIDAR_TOP", k)
    pt = cloud.attrs["point_time_ns"]
    assert pt.dtype == np.int32 and pt.shape == truth.shape
    # float32 seconds in the message: exact to the float32 resolution (< 2 ns at 25 ms)
    assert int(np.max(np.abs(pt.astype(np.int64) - truth))) <= 2
    assert -26_000_000 < pt.min() < -24_000_000 and 24_000_000 < pt.max() < 26_000_000
    assert "point_time_ns" not in log.point_cloud("RADAR_FRONT", 0).attrs
    assert log.nonfinite_points == {}
    # raw access by record time and the one-pass iterator agree
    raw = log.raw_message("LIDAR_TOP", k)
    it = [(s, i, r) for s, i, r in log.iter_raw(["LIDAR_TOP"])]
    assert [i for _, i, _ in it] == list(range(24)) and it[k][2] == raw
    with pytest.raises(IndexError, match="has 24 messages, no 24"):
        log.raw_message("LIDAR_TOP", 24)
    # pickling re-opens the bag
    again = pickle.loads(pickle.dumps(log))
    assert np.array_equal(again.point_cloud("LIDAR_TOP", k).xyz, cloud.xyz)
    log.close()
    assert np.array_equal(log.point_cloud("LIDAR_TOP", k).xyz, cloud.xyz)  # re-opened


def test_time_offsets_move_stamps_to_the_ego_clock(synth_bags: SynthBags) -> None:
    def edit(d: dict[str, Any]) -> None:
        _sensor(d, "RADAR_FRONT")["time_offset_ns"] = 12_000_000

    plain = BagLog(synth_bags.paths.ros1_bag, _rig(synth_bags))
    log = BagLog(synth_bags.paths.ros1_bag, _edit(_rig(synth_bags), edit))
    header = log.header_stamps("RADAR_FRONT")
    # stamps stay in the sensor clock (project convention); the offset is on the Sensor
    assert np.array_equal(log.timestamps("RADAR_FRONT"), header)
    assert np.array_equal(log.ego_timestamps("RADAR_FRONT"), header + 12_000_000)
    assert log.sensors["RADAR_FRONT"].time_offset_ns == 12_000_000
    assert log.timestamps_are_raw is False
    # matching happens in the ego clock: the 12 ms shift changes which scans frames pick
    changed = np.flatnonzero(
        log.assembly.index["RADAR_FRONT"] != plain.assembly.index["RADAR_FRONT"]
    )
    assert changed.size > 0
    i = int(changed[0])
    frame = log[i]
    k = int(log.assembly.index["RADAR_FRONT"][i])
    cloud = frame.points["RADAR_FRONT"]
    assert cloud.t_ns == int(header[k])
    assert frame.time_diffs_ns["RADAR_FRONT"] == cloud.t_ns - frame.t_ns
    assert log.assembly.diff_ns["RADAR_FRONT"][i] == cloud.t_ns + 12_000_000 - frame.t_ns
    assert abs(log.assembly.diff_ns["RADAR_FRONT"][i]) <= log.rig.sensor("RADAR_FRONT").tolerance_ns
    # the pose is taken at the ego-clock time of the scan
    assert _max_abs(cloud.world_from_ego, log.pose_at(cloud.t_ns + 12_000_000)) == 0.0  # type: ignore[arg-type]
    assert _max_abs(cloud.world_from_ego, log.pose_at(cloud.t_ns)) > 1e-3  # type: ignore[arg-type]


def test_bare_mcap_and_sqlite3_bags(
    synth_bags: SynthBags, tmp_path: Path, nus: NuScenesLog
) -> None:
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)

    mcap = synth_bags.paths.ros2_dir / "rosbag2.mcap"
    log = BagLog(mcap, _rig(synth_bags, "mcap"))
    assert len(log) == 24 and detect_format(mcap).name == "mcap"  # type: ignore[union-attr]
    # a sqlite3 rosbag2 with the LiDAR and tf topics
    db = tmp_path / "sqlite_bag"
    keep = {"/LIDAR_TOP/points", "/tf", "/tf_static"}
    with (
        Reader(synth_bags.paths.ros2_dir) as reader,
        Writer(db, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer,
    ):
        conns = {}
        for c in reader.connections:
            if c.topic in keep:
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=store)
        for c, t, raw in reader.messages([c for c in reader.connections if c.topic in keep]):
            writer.write(conns[c.id], t, raw)
    rig = rig_from_dict(
        {
            "reference_sensor": "LIDAR_TOP",
            "pose": {"source": "tf"},
            "sensors": [{"name": "LIDAR_TOP", "modality": "lidar", "topic": "/LIDAR_TOP/points"}],
        }
    )
    sql = open_log(db, rig=rig)  # type: ignore[arg-type]
    assert isinstance(sql, BagLog) and not sql.ros1 and len(sql) == 24
    f = nus[0]
    i = int(np.searchsorted(sql.timestamps("LIDAR_TOP"), f.t_ns))
    assert np.array_equal(sql[i].points["LIDAR_TOP"].xyz, f.points["LIDAR_TOP"].xyz)
    assert _max_abs(sql[i].world_from_ego, f.world_from_ego) <= 1e-9  # type: ignore[arg-type]
    assert sql[i].missing == () and set(sql[i].points) == {"LIDAR_TOP"}


def test_open_log_needs_a_rig(synth_bags: SynthBags, tmp_path: Path) -> None:
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(_rig(synth_bags).to_yaml())
    log = open_log(synth_bags.paths.ros1_bag, rig=rig_file)
    assert isinstance(log, BagLog) and len(log) == 24
    for path in (synth_bags.paths.ros1_bag, synth_bags.paths.ros2_dir):
        with pytest.raises(
            ConfigError,
            match=r"a bag needs a rig file .* `avfusion info .* --rig-out rig\.yaml`",
        ):
            open_log(path)
    with pytest.raises(ConfigError, match="a bag needs a rig file"):
        open_bag(synth_bags.paths.ros1_bag, None)


def test_labels_sidecar_matching(synth_bags: SynthBags, tmp_path: Path, caplog: Any) -> None:
    data = json.loads(synth_bags.paths.labels.read_text())
    data["samples"].append({"timestamp_ns": 123, "boxes": [], "boxes2d": []})
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(data))
    rig = _edit(_rig(synth_bags), lambda d: d.update(labels=str(labels)))
    with caplog.at_level(logging.WARNING):
        log = BagLog(synth_bags.paths.ros1_bag, rig)
    assert log.unmatched_labels == 1 and len(log.labelled_frames()) == 2
    assert "1 of 3 labelled samples match no LIDAR_TOP message" in caplog.text
    b3, b2 = log.frame_labels(log.labelled_frames()[0])
    assert b3 is not None and len(b3) == len(data["samples"][0]["boxes"])
    assert sum(len(v) for v in b2.values()) == len(data["samples"][0]["boxes2d"])
    data["frame"] = "odom"
    labels.write_text(json.dumps(data))
    with pytest.raises(
        ConfigError,
        match=r"labels\.json: boxes are in frame 'odom' but the rig's world_frame is 'map'",
    ):
        BagLog(synth_bags.paths.ros1_bag, rig)
    labels.write_text(
        json.dumps(
            {"frame": "map", "samples": [{"timestamp_ns": 1, "boxes": [{"center": [0, 0, 0]}]}]}
        )
    )
    with pytest.raises(
        LogFormatError, match=r"labels\.json: samples\[0\]: missing field 'size_lwh'"
    ):
        BagLog(synth_bags.paths.ros1_bag, rig)
    labels.write_text("{not json")
    with pytest.raises(LogFormatError, match=r"labels\.json: not a readable labels JSON file"):
        BagLog(synth_bags.paths.ros1_bag, rig)
    with pytest.raises(ConfigError, match=r"nothere\.json: labels file not found"):
        BagLog(synth_bags.paths.ros1_bag, rig, labels=tmp_path / "nothere.json")


# --------------------------------------------------------------------------------------------
# Errors against the synthetic bag
# --------------------------------------------------------------------------------------------


def test_rig_and_bag_disagree(synth_bags: SynthBags, tmp_path: Path) -> None:
    bag = synth_bags.paths.ros1_bag
    rig = _rig(synth_bags)
    no_info = _edit(
        rig, lambda d: _sensor(d, "CAM_FRONT").update(camera_info_topic="/CAM_FRONT/info")
    )
    with pytest.raises(
        ConfigError,
        match=r"rig sensor 'CAM_FRONT': camera_info_topic '/CAM_FRONT/info' is not in bag .*recording\.bag "
        r"\(CameraInfo topics in the bag: /CAM_FRONT/camera_info, /CAM_FRONT_LEFT/camera_info",
    ):
        BagLog(bag, no_info)
    unknown = _edit(rig, lambda d: _sensor(d, "LIDAR_TOP").update(topic="/velodyne_points"))
    with pytest.raises(
        ConfigError,
        match=r"rig sensor 'LIDAR_TOP': topic '/velodyne_points' is not in bag .*recording\.bag; "
        r"the bag's topics: .*/LIDAR_TOP/points \(sensor_msgs/msg/PointCloud2\)",
    ):
        BagLog(bag, unknown)
    wrong_type = _edit(
        rig, lambda d: _sensor(d, "LIDAR_TOP").update(topic="/CAM_FRONT/camera_info")
    )
    with pytest.raises(
        ConfigError,
        match=r"topic '/CAM_FRONT/camera_info' carries sensor_msgs/msg/CameraInfo; a lidar needs sensor_msgs/msg/PointCloud2",
    ):
        BagLog(bag, wrong_type)
    no_world = _edit(rig, lambda d: d["pose"].update(world_frame="odom"))
    with pytest.raises(
        CalibrationError,
        match=r"no tf chain from world_frame 'odom' to ego_frame 'base_link': world_frame 'odom' is not in /tf or /tf_static",
    ):
        BagLog(bag, no_world)
    no_extrinsics = _edit(rig, lambda d: _sensor(d, "RADAR_FRONT").update(frame_id="radar_mount"))
    with pytest.raises(
        CalibrationError,
        match=r"sensor 'RADAR_FRONT': no /tf_static chain from ego_frame 'base_link' to its frame 'radar_mount'",
    ):
        BagLog(bag, no_extrinsics)
    inline = _edit(
        no_extrinsics,
        lambda d: _sensor(d, "RADAR_FRONT").update(
            ego_from_sensor={"translation": [3.0, 0.0, 0.5]}
        ),
    )
    assert np.allclose(
        BagLog(bag, inline).sensors["RADAR_FRONT"].ego_from_sensor.translation, [3, 0, 0.5]
    )
    no_odom = _edit(rig, lambda d: d.update(pose={"source": "odometry", "topic": "/odom"}))
    with pytest.raises(
        ConfigError,
        match=r"rig pose: odometry topic '/odom' is not in bag .* \(odometry topics in the bag: none\)",
    ):
        BagLog(bag, no_odom)
    bad_file = tmp_path / "bad_rig.yaml"
    bad_file.write_text(rig.to_yaml().replace("modality: radar", "modality: sonar"))
    with pytest.raises(
        ConfigError,
        match=r"bad_rig\.yaml: invalid rig: sensors\[1\]\.modality \(sensor 'RADAR_FRONT'\): Input should be",
    ):
        BagLog(bag, bad_file)


def test_corrupt_and_truncated_bags(synth_bags: SynthBags, tmp_path: Path) -> None:
    rig = _rig(synth_bags)
    data = synth_bags.paths.ros1_bag.read_bytes()
    mcap = (synth_bags.paths.ros2_dir / "rosbag2.mcap").read_bytes()
    cases = {
        "half.bag": data[: len(data) // 2],
        "garbage.bag": b"not a bag at all",
        "half.mcap": mcap[: len(mcap) // 2],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(
            LogFormatError,
            match=rf"{name}: cannot read the bag while opening it \(AnyReaderError: .*\); the file is corrupt, truncated",
        ):
            BagLog(tmp_path / name, rig)
    broken = tmp_path / "broken_rosbag2"
    broken.mkdir()
    (broken / "metadata.yaml").write_text((synth_bags.paths.ros2_dir / "metadata.yaml").read_text())
    with pytest.raises(
        LogFormatError, match=r"broken_rosbag2: cannot read the bag .*database files are missing"
    ):
        BagLog(broken, rig)
    with pytest.raises(LogFormatError, match=r"nothing\.bag: no such file or directory"):
        BagLog(tmp_path / "nothing.bag", rig)


# --------------------------------------------------------------------------------------------
# Small hand-made bags: tf chains, odometry, pose coverage, NaN points, bad clouds
# --------------------------------------------------------------------------------------------

T0 = 1_600_000_000_000_000_000
S = 1_000_000_000


def _odom_from_base(s: float) -> Transform:
    return Transform.from_euler_zyx(0.1 * s, 0.0, 0.0, (2.0 * s, 0.5 * s, 0.0))


MAP_FROM_ODOM = Transform.from_euler_zyx(0.3, 0.0, 0.0, (10.0, -4.0, 0.2))
EGO_FROM_LIDAR = Transform.from_euler_zyx(np.pi / 2, 0.0, 0.0, (1.0, 0.0, 2.0))
XYZ = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [np.nan, 0.0, 1.0], [7.0, 8.0, 9.0]], np.float32)


def _small_bag(
    path: Path, build: Callable[[_Msgs], list[tuple[int, str, str, Any]]], ros1: bool = True
) -> Path:
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.rosbag2 import StoragePlugin
    from rosbags.rosbag2 import Writer as Writer2

    m = _Msgs(ros1)
    events = build(m)
    writer: Any = (
        Writer1(path) if ros1 else Writer2(path, version=8, storage_plugin=StoragePlugin.MCAP)
    )
    with writer:
        conns: dict[str, Any] = {}
        for t, topic, msgtype, msg in sorted(events, key=lambda e: e[0]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=m.ts)
            if msg is not None:  # None: a topic without messages
                writer.write(conns[topic], t, m.serialize(msg, msgtype))
    return path


def _tf_args(tf: Transform) -> tuple[list[float], list[float]]:
    return tf.translation.tolist(), tf.quaternion.tolist()


def _odom_msg(m: _Msgs, t_ns: int, pose: Transform, frame: str = "map") -> Any:
    q, p, t_ = pose.quaternion, pose.translation, m.t
    zero = t_["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    return t_["nav_msgs/msg/Odometry"](
        header=m.header(t_ns, frame), child_frame_id="base_link",
        pose=t_["geometry_msgs/msg/PoseWithCovariance"](
            pose=t_["geometry_msgs/msg/Pose"](
                position=t_["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
                orientation=t_["geometry_msgs/msg/Quaternion"](x=q[1], y=q[2], z=q[3], w=q[0]),
            ),
            covariance=np.zeros(36),
        ),
        twist=t_["geometry_msgs/msg/TwistWithCovariance"](
            twist=t_["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)
        ),
    )  # fmt: skip


def _toy_events(m: _Msgs) -> list[tuple[int, str, str, Any]]:
    """LiDAR at 0.5 .. 4.0 s (8 clouds, one NaN point each); /tf odom→base_link 0..3 s at 10 Hz;
    /tf_static map→odom, base_link→lidar and a detached rack→gps; /odom = map→base_link."""
    ev: list[tuple[int, str, str, Any]] = []
    statics = [
        m.tf(T0, "map", "odom", *_tf_args(MAP_FROM_ODOM)),
        m.tf(T0, "base_link", "lidar", *_tf_args(EGO_FROM_LIDAR)),
        m.tf(T0, "rack", "gps", [0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]),
    ]
    ev.append(
        (
            T0,
            "/tf_static",
            "tf2_msgs/msg/TFMessage",
            m.t["tf2_msgs/msg/TFMessage"](transforms=statics),
        )
    )
    for k in range(31):
        t = T0 + k * S // 10
        ev.append(
            (
                t,
                "/tf",
                "tf2_msgs/msg/TFMessage",
                m.tf_message(t, "/odom", "base_link", *_tf_args(_odom_from_base(k / 10))),
            )
        )
        msg = _odom_msg(m, t, MAP_FROM_ODOM @ _odom_from_base(k / 10))
        ev.append((t, "/odom", "nav_msgs/msg/Odometry", msg))
    for k in range(8):
        t = T0 + (k + 1) * S // 2
        cols = {
            "x": XYZ[:, 0] + k,
            "y": XYZ[:, 1],
            "z": XYZ[:, 2],
            "t": np.array([0, 10, 20, 30], np.uint32),
        }
        ev.append(
            (t + 5_000_000, "/points", "sensor_msgs/msg/PointCloud2", m.cloud(t, "lidar", cols))
        )
    return ev  # fmt: skip


TOY_RIG: dict[str, Any] = {
    "reference_sensor": "L",
    "pose": {"source": "tf", "world_frame": "map", "ego_frame": "base_link"},
    "sensors": [{"name": "L", "modality": "lidar", "topic": "/points"}],
}


@pytest.fixture(scope="module")
def toy_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_bag(tmp_path_factory.mktemp("toy") / "toy.bag", _toy_events)


def test_multi_hop_tf_chain_and_odometry(toy_bag: Path) -> None:
    log = BagLog(toy_bag, TOY_RIG)
    assert log.frame_id("L") == "lidar"
    assert _max_abs(log.sensors["L"].ego_from_sensor, EGO_FROM_LIDAR) <= 1e-12
    assert set(log.transforms.frames) == {"map", "odom", "base_link", "lidar", "rack", "gps"}
    # map -> odom (static) -> base_link (/tf, 10 Hz, leading "/" stripped) composed per sample
    assert len(log.poses) == 31 and log.poses.start_ns == T0 and log.poses.end_ns == T0 + 3 * S
    for s in (0.0, 1.25, 2.0, 2.95):
        expect = MAP_FROM_ODOM @ _odom_from_base(s)
        assert _max_abs(log.pose_at(T0 + round(s * S)), expect) <= 1e-12
    frame = log[2]  # cloud at 1.5 s
    assert frame.t_ns == T0 + 3 * S // 2
    cloud = frame.points["L"]
    assert _max_abs(frame.world_from_ego, MAP_FROM_ODOM @ _odom_from_base(1.5)) <= 1e-12  # type: ignore[arg-type]
    # the NaN point is dropped, counted and logged; Ouster-style "t" becomes point_time_ns
    assert len(cloud) == 3 and np.array_equal(cloud.xyz, XYZ[[0, 1, 3]] + [2, 0, 0])
    assert np.array_equal(cloud.attrs["point_time_ns"], np.array([0, 10, 30], np.int32))
    assert log.nonfinite_points == {"L": {2: 1}}
    # record times are 5 ms after the stamps
    assert np.array_equal(log.record_times("L") - log.header_stamps("L"), np.full(8, 5_000_000))
    # odometry gives the same track
    odo = BagLog(toy_bag, {**TOY_RIG, "pose": {"source": "odometry", "topic": "/odom"}})
    for s in (0.0, 1.25, 2.95):
        assert _max_abs(odo.pose_at(T0 + round(s * S)), log.pose_at(T0 + round(s * S))) <= 1e-12
    assert _max_abs(odo.sensors["L"].ego_from_sensor, EGO_FROM_LIDAR) <= 1e-12


def test_pose_track_must_cover_each_stamp(toy_bag: Path) -> None:
    log = BagLog(toy_bag, TOY_RIG)
    assert len(log) == 8
    log[5]  # 3.0 s: the last /tf sample
    with pytest.raises(
        SyncError,
        match=r"toy\.bag: no ego pose for sensor 'L' message 6 on /points at stamp 1600000003500000000 ns "
        r"\(ego clock 1600000003500000000 ns\): the pose track \(tf chain map -> odom -> base_link\) covers "
        r"\[1600000000000000000, 1600000003000000000\] ns and may be extrapolated by at most 20 ms",
    ):
        log[6]
    wide = BagLog(toy_bag, {**TOY_RIG, "pose": {**TOY_RIG["pose"], "max_extrapolation_ms": 600}})
    assert wide[6].t_ns == T0 + 7 * S // 2  # extrapolated at the end segment's rate


def test_tf_chain_errors(toy_bag: Path) -> None:
    with pytest.raises(
        CalibrationError,
        match=r"no tf chain from world_frame 'map' to ego_frame 'gps' in /tf and /tf_static: .*not connected",
    ):
        BagLog(toy_bag, {**TOY_RIG, "pose": {"source": "tf", "ego_frame": "gps"}})
    with pytest.raises(
        CalibrationError,
        match=r"ego_frame 'base_footprint' is not in /tf or /tf_static \(frames: base_link, gps, lidar, map, odom, rack\)",
    ):
        BagLog(toy_bag, {**TOY_RIG, "pose": {"source": "tf", "ego_frame": "base_footprint"}})
    none = BagLog(toy_bag, {**TOY_RIG, "pose": {"source": "none", "ego_frame": "base_link"}})
    assert _max_abs(none[7].world_from_ego, Transform()) == 0.0  # type: ignore[arg-type]
    assert _max_abs(none.sensors["L"].ego_from_sensor, EGO_FROM_LIDAR) <= 1e-12
    with pytest.raises(
        CalibrationError, match=r"sensor 'L': no ego_frame to look up its extrinsics"
    ):
        BagLog(toy_bag, {**TOY_RIG, "pose": {"source": "none"}})


def test_bad_point_clouds(tmp_path: Path) -> None:
    def build(m: _Msgs) -> list[tuple[int, str, str, Any]]:
        good = m.cloud(T0, "", {"x": XYZ[:, 0], "y": XYZ[:, 1], "z": XYZ[:, 2]})
        bad = dataclasses.replace(
            m.cloud(T0 + S, "", {"x": XYZ[:, 0], "y": XYZ[:, 1], "z": XYZ[:, 2]}), row_step=40
        )
        same_time = m.cloud(T0 + 2 * S, "", {"x": XYZ[:, 0] * 2, "y": XYZ[:, 1], "z": XYZ[:, 2]})
        return [(T0, "/p", "sensor_msgs/msg/PointCloud2", good), (T0 + S, "/p", "sensor_msgs/msg/PointCloud2", bad),
                (T0 + S, "/p", "sensor_msgs/msg/PointCloud2", same_time)]  # fmt: skip

    for ros1 in (True, False):
        bag = _small_bag(tmp_path / ("bad.bag" if ros1 else "bad_ros2"), build, ros1=ros1)
        rig = {
            "reference_sensor": "L",
            "pose": {"source": "none"},
            "sensors": [{"name": "L", "modality": "lidar", "topic": "/p", "ego_from_sensor": {"translation": [0, 0, 0]}}],
        }  # fmt: skip
        log = BagLog(bag, rig)
        # two messages share a record time: both indexed and fetched apart
        assert np.array_equal(log.record_times("L"), [T0, T0 + S, T0 + S])
        assert np.array_equal(log.header_stamps("L"), [T0, T0 + S, T0 + 2 * S])
        assert np.array_equal(log[2].points["L"].xyz[0], XYZ[0] * [2, 1, 1])
        with pytest.raises(
            LogFormatError,
            match=rf"{bag.name}: /p message 1 \(stamp {T0 + S} ns\): PointCloud2 row_step 40 is smaller than width 4",
        ):
            log[1]
        with pytest.raises(
            CalibrationError, match=r"sensor 'L': messages on /p have an empty header.frame_id"
        ):
            BagLog(bag, {**rig, "sensors": [{"name": "L", "modality": "lidar", "topic": "/p"}]})


def _cam_events(m: _Msgs) -> list[tuple[int, str, str, Any]]:
    """No /tf: odometry, a radar (rcs field), an RGB camera and a 16-bit thermal camera (raw Image
    with CameraInfo), and an IMU topic that is not a sensor."""
    ev: list[tuple[int, str, str, Any]] = []
    statics = [
        m.tf(T0, "base_link", "radar", [3.4, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0]),
        m.tf(T0, "base_link", "cam", [1.7, 0.0, 1.5], [0.5, -0.5, 0.5, -0.5]),
        m.tf(T0, "base_link", "flir", [1.8, 0.0, 1.4], [0.5, -0.5, 0.5, -0.5]),
    ]
    ev.append(
        (
            T0,
            "/tf_static",
            "tf2_msgs/msg/TFMessage",
            m.t["tf2_msgs/msg/TFMessage"](transforms=statics),
        )
    )
    for k in range(21):
        t = T0 + k * S // 20
        ev.append(
            (t, "/odom", "nav_msgs/msg/Odometry", _odom_msg(m, t, _odom_from_base(k / 20), "odom"))
        )
    rng = np.random.default_rng(0)
    k_cam = [[40.0, 0.0, 15.5], [0.0, 40.0, 11.5], [0.0, 0.0, 1.0]]
    for k in range(5):
        t = T0 + k * S // 10 + S // 100
        cols = {
            "x": np.array([10.0, 20.0], np.float32),
            "y": np.zeros(2, np.float32),
            "z": np.zeros(2, np.float32),
            "rcs": np.array([5.0, -2.0], np.float32),
        }
        ev.append((t, "/radar/points", "sensor_msgs/msg/PointCloud2", m.cloud(t, "radar", cols)))
        rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        img = m.t["sensor_msgs/msg/Image"](
            header=m.header(t + 2_000_000, "cam"),
            height=24,
            width=32,
            encoding="rgb8",
            is_bigendian=False,
            step=96,
            data=rgb.reshape(-1),
        )
        ev.append((t + 2_000_000, "/cam/image_raw", "sensor_msgs/msg/Image", img))
        ev.append(
            (
                t + 2_000_000,
                "/cam/camera_info",
                "sensor_msgs/msg/CameraInfo",
                m.camera_info(t + 2_000_000, "cam", k_cam, [0.1, 0.01, 0.0, 0.0, 0.0], 32, 24),
            )
        )
        counts = rng.integers(20000, 40000, (24, 32), dtype=np.uint16)
        thermal = m.t["sensor_msgs/msg/Image"](
            header=m.header(t + 4_000_000, "flir"),
            height=24,
            width=32,
            encoding="mono16",
            is_bigendian=False,
            step=64,
            data=np.frombuffer(counts.astype("<u2").tobytes(), np.uint8),
        )
        ev.append((t + 4_000_000, "/flir/image_raw", "sensor_msgs/msg/Image", thermal))
        ev.append(
            (
                t + 4_000_000,
                "/flir/camera_info",
                "sensor_msgs/msg/CameraInfo",
                m.camera_info(t + 4_000_000, "flir", k_cam, [], 32, 24),
            )
        )
        imu = m.t["sensor_msgs/msg/Imu"](
            header=m.header(t, "imu"),
            orientation=m.t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            orientation_covariance=np.zeros(9),
            angular_velocity=m.t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
            angular_velocity_covariance=np.zeros(9),
            linear_acceleration=m.t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=9.8),
            linear_acceleration_covariance=np.zeros(9),
        )
        ev.append((t, "/imu", "sensor_msgs/msg/Imu", imu))
    return ev  # fmt: skip


@pytest.mark.parametrize("ros1", [True, False])
def test_suggestion_heuristics_odometry_and_raw_images(tmp_path: Path, ros1: bool) -> None:
    from avfusion.io.convert import convert_bag

    bag = _small_bag(tmp_path / ("cams.bag" if ros1 else "cams"), _cam_events, ros1=ros1)
    rig, text = suggest_rig(inspect_bag(bag))
    assert rig is not None
    assert {s.name: s.modality for s in rig.sensors} == {
        "radar": "radar",
        "cam": "camera",
        "flir": "thermal",
    }
    assert rig.reference_sensor == "radar"  # no LiDAR: the first sensor
    assert rig.pose.model_dump() == {
        "source": "odometry",
        "topic": "/odom",
        "ego_frame": "base_link",
        "max_extrapolation_ms": 20.0,
    }
    assert rig.sensor("cam").camera_info_topic == "/cam/camera_info"
    assert "pose from odometry /odom" in text
    log = BagLog(bag, rig)
    assert len(log) == 5 and log.poses.start_ns == T0 and len(log.poses) == 21
    cam = log.sensors["cam"].camera
    assert cam is not None and (cam.width, cam.height, cam.distortion) == (32, 24, "radtan")
    assert log.sensors["flir"].camera.distortion == "none"  # type: ignore[union-attr]
    assert np.allclose(log.sensors["cam"].ego_from_sensor.translation, [1.7, 0.0, 1.5])
    frame = log[2]
    assert frame.time_diffs_ns == {"radar": 0, "cam": 2_000_000, "flir": 4_000_000}
    assert (
        frame.images["cam"].pixels.shape == (24, 32, 3)
        and frame.images["flir"].pixels.dtype == np.uint16
    )
    assert np.array_equal(frame.points["radar"].attrs["rcs"], [5.0, -2.0])
    assert _max_abs(frame.world_from_ego, _odom_from_base((frame.t_ns - T0) / 1e9)) <= 1e-9  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"sensor 'cam' is a camera, not a point sensor"):
        log.point_cloud("cam", 0)
    with pytest.raises(ConfigError, match=r"sensor 'radar' is a radar, not a camera"):
        log.image("radar", 0)
    with pytest.raises(
        LogFormatError, match=r"no sensor 'imu' in the rig \(sensors: cam, flir, radar\)"
    ):
        log.timestamps("imu")
    # converted: raw images become lossless PNGs
    summary = convert_bag(log, tmp_path / "out", keyframe_hz=0)  # every frame a sample
    assert summary.n_sample_data == {"radar": 5, "cam": 5, "flir": 5}
    nus = NuScenesLog(tmp_path / "out", ref_sensor="radar")
    f = nus[2]
    assert np.array_equal(f.images["cam"].pixels, frame.images["cam"].pixels)
    assert np.array_equal(f.images["flir"].pixels, frame.images["flir"].pixels)
    assert nus.sensors["flir"].modality == "thermal"


def _edge_events(m: _Msgs) -> list[tuple[int, str, str, Any]]:
    """Bags that break rules: conflicting tf parents, extrinsics that move, disjoint tf edges,
    empty topics, clouds 500 ns apart and a cloud with per-point times of 5 s."""
    ev: list[tuple[int, str, str, Any]] = []
    ev.append(
        (
            T0,
            "/tf_static",
            "tf2_msgs/msg/TFMessage",
            m.t["tf2_msgs/msg/TFMessage"](
                transforms=[
                    m.tf(T0, "base_link", "lidar", [0.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]),
                    m.tf(T0, "a", "x", [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),
                ]
            ),
        )
    )
    for k in range(11):
        t = T0 + k * S // 10
        ev.append(
            (
                t,
                "/tf",
                "tf2_msgs/msg/TFMessage",
                m.tf_message(t, "map", "odom", [k, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),
            )
        )
        t2 = t + 2 * S
        ev.append(
            (
                t2,
                "/tf",
                "tf2_msgs/msg/TFMessage",
                m.tf_message(t2, "odom", "base_link", [0.0, k, 0.0], [1.0, 0.0, 0.0, 0.0]),
            )
        )
        ev.append(
            (
                t,
                "/tf",
                "tf2_msgs/msg/TFMessage",
                m.tf_message(t, "base_link", "wobbly", [0.0, 0.0, 0.1 * k], [1.0, 0.0, 0.0, 0.0]),
            )
        )
    ev.append((T0, "/tf_other", "tf2_msgs/msg/TFMessage", None))
    ev.append((T0, "/odom_empty", "nav_msgs/msg/Odometry", None))
    ev.append((T0, "/cam/camera_info", "sensor_msgs/msg/CameraInfo", None))
    ev.append((T0, "/cam/image_raw", "sensor_msgs/msg/Image", None))
    xyz = {"x": np.ones(2, np.float32), "y": np.zeros(2, np.float32), "z": np.zeros(2, np.float32)}
    ev.append((T0 + 2 * S, "/p", "sensor_msgs/msg/PointCloud2", m.cloud(T0 + 2 * S, "lidar", xyz)))
    ev.append(
        (
            T0 + 2 * S + 500,
            "/p",
            "sensor_msgs/msg/PointCloud2",
            m.cloud(T0 + 2 * S + 500, "lidar", xyz),
        )
    )
    timed = {**xyz, "time": np.array([0.0, 5.0], np.float32)}
    ev.append(
        (T0 + 3 * S, "/p", "sensor_msgs/msg/PointCloud2", m.cloud(T0 + 3 * S, "lidar", timed))
    )
    return ev  # fmt: skip


def test_rule_breaking_bags(tmp_path: Path) -> None:
    from avfusion.io.convert import convert_bag

    bag = _small_bag(tmp_path / "edge.bag", _edge_events)
    rig: dict[str, Any] = {
        "reference_sensor": "L",
        "pose": {"source": "none", "ego_frame": "base_link"},
        "sensors": [{"name": "L", "modality": "lidar", "topic": "/p"}],
    }
    log = BagLog(bag, rig)
    assert len(log) == 3
    with pytest.raises(
        LogFormatError,
        match=r"/p message 2 \(stamp 1600000003000000000 ns\): per-point time is outside ±2.1 s",
    ):
        log[2]
    with pytest.raises(
        LogFormatError,
        match=r"L messages 0 and 1 share the microsecond 1600000002000000; nuScenes timestamps cannot tell them apart",
    ):
        convert_bag(log, tmp_path / "out")
    # disjoint time-stamped edges: map->odom 0..1 s, odom->base_link 2..3 s
    with pytest.raises(
        SyncError,
        match=r"the time-stamped tf edges on the chain base_link -> odom -> map do not overlap in time",
    ):
        BagLog(bag, {**rig, "pose": {"source": "tf"}})
    moving = {
        **rig,
        "sensors": [{"name": "L", "modality": "lidar", "topic": "/p", "frame_id": "wobbly"}],
    }
    with pytest.raises(
        CalibrationError,
        match=r"sensor 'L': the tf chain wobbly -> base_link changes over time \(by up to 1\)",
    ):
        BagLog(bag, moving)
    with pytest.raises(LogFormatError, match=r"odometry topic '/odom_empty' has no messages"):
        BagLog(bag, {**rig, "pose": {"source": "odometry", "topic": "/odom_empty"}})
    with pytest.raises(
        ConfigError,
        match=r"rig pose: topic '/p' carries sensor_msgs/msg/PointCloud2, not nav_msgs/msg/Odometry",
    ):
        BagLog(bag, {**rig, "pose": {"source": "odometry", "topic": "/p"}})
    cam = {
        "name": "C",
        "modality": "camera",
        "topic": "/cam/image_raw",
        "camera_info_topic": "/cam/camera_info",
    }
    with pytest.raises(
        LogFormatError, match=r"camera_info_topic '/cam/camera_info' of sensor 'C' has no messages"
    ):
        BagLog(bag, {**rig, "sensors": [*rig["sensors"], cam]})
    with pytest.raises(
        ConfigError,
        match=r"camera_info_topic '/p' carries sensor_msgs/msg/PointCloud2, not sensor_msgs/msg/CameraInfo",
    ):
        BagLog(bag, {**rig, "sensors": [*rig["sensors"], {**cam, "camera_info_topic": "/p"}]})
    # a pose track that covers no frame: nothing to convert
    far = {
        **rig,
        "pose": {"source": "tf", "world_frame": "map", "ego_frame": "odom"},
        "sensors": [{**rig["sensors"][0], "ego_from_sensor": {"translation": [0, 0, 2]}}],
    }
    with pytest.raises(LogFormatError, match=r"no frame of L has an ego pose; nothing to convert"):
        convert_bag(BagLog(bag, far), tmp_path / "out2")


def test_conflicting_tf_parents(tmp_path: Path) -> None:
    def build(m: _Msgs) -> list[tuple[int, str, str, Any]]:
        return [
            (T0, "/tf_static", "tf2_msgs/msg/TFMessage", m.tf_message(T0, "a", "x", [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0])),
            (T0, "/tf", "tf2_msgs/msg/TFMessage", m.tf_message(T0, "b", "x", [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0])),
            (T0, "/p", "sensor_msgs/msg/PointCloud2", m.cloud(T0, "x", {"x": np.ones(1, np.float32), "y": np.ones(1, np.float32), "z": np.ones(1, np.float32)})),
        ]  # fmt: skip

    bag = _small_bag(tmp_path / "conflict.bag", build)
    rig = {
        "reference_sensor": "L",
        "pose": {"source": "none", "ego_frame": "x"},
        "sensors": [{"name": "L", "modality": "lidar", "topic": "/p"}],
    }
    with pytest.raises(
        LogFormatError,
        match=r"conflict\.bag: /tf: frame 'x' is published with parent 'b' on /tf but with parent 'a' on /tf_static",
    ):
        BagLog(bag, rig)


# --------------------------------------------------------------------------------------------
# The real Ouster bag (MANIFEST section C)
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_ouster_bag(realdata: Path, caplog: Any) -> None:
    path = realdata / REAL_BAG
    info = inspect_bag(path)
    assert info.ros1 and info.tf_dynamic == {}
    assert {t.topic: t.count for t in info.topics}["/os1_node/lidar_packets"] == 206
    rig, text = suggest_rig(info)
    assert rig is not None and rig.pose.source == "none" and rig.pose.ego_frame == "os1_sensor"
    assert [s.name for s in rig.sensors] == ["os1_lidar"] and rig.reference_sensor == "os1_lidar"
    assert "NO POSE SOURCE" in text and "left out /img_node/range_image" in text
    with caplog.at_level(logging.WARNING):
        log = BagLog(path, rig)
    assert "rig pose source is 'none'" in caplog.text
    assert len(log) == 2
    assert log.header_stamps("os1_lidar").tolist() == [1588075038629915872, 1588075038729033505]
    assert log.record_times("os1_lidar").tolist() == [1592833242657266645, 1592833242755911566]
    # /tf_static: os1_sensor -> os1_lidar t = (0, 0, 0.03618), 180° yaw
    ego_from_lidar = log.transforms.lookup("os1_sensor", "os1_lidar")
    assert np.allclose(ego_from_lidar.translation, [0.0, 0.0, 0.03618])
    assert np.allclose(ego_from_lidar.rotation, np.diag([-1.0, -1.0, 1.0]))
    assert abs(abs(ego_from_lidar.yaw) - np.pi) < 1e-12
    assert np.allclose(
        log.transforms.lookup("os1_sensor", "os1_imu").translation, [0.006253, -0.011775, 0.007645]
    )
    assert _max_abs(log.sensors["os1_lidar"].ego_from_sensor, ego_from_lidar) == 0.0
    clouds = [log[i].points["os1_lidar"] for i in range(2)]
    assert [len(c) for c in clouds] == [
        131_072,
        131_072,
    ]  # 64 × 2048; no-returns are (0, 0, 0), kept
    assert log.nonfinite_points == {}
    nonzero = np.any(clouds[0].xyz != 0, axis=1)
    assert int(nonzero.sum()) == 45_716
    r = np.linalg.norm(clouds[0].xyz[nonzero], axis=1)
    assert 0.5 < r.min() < 0.7 and 14.6 < r.max() < 14.8
    pt = clouds[0].attrs["point_time_ns"]  # Ouster "t": ns since the scan start (the stamp)
    assert pt.dtype == np.int32 and pt.min() == 0 and pt.max() == 99_947_770
    assert set(clouds[0].attrs) >= {"intensity", "t", "reflectivity", "ring", "noise", "range"}
    assert _max_abs(log[0].world_from_ego, Transform()) == 0.0  # type: ignore[arg-type]


def test_calibration_json_overrides_the_rig(synth_bags: SynthBags, tmp_path: Path) -> None:
    """A ``calibration.json`` (from ``avfusion calib refine``) replaces the rig's extrinsic and
    clock offset of the sensors it names, in ``sensors``, frames and the time matching."""
    from avfusion.io.calibration_file import calibration_record, write_calibration

    bag = synth_bags.paths.ros1_bag
    rig = _rig(synth_bags)
    base = BagLog(bag, rig)
    moved = base.sensors["CAM_FRONT"].ego_from_sensor @ Transform.from_rotvec(
        [0.0, 0.01, 0.0], [0.05, 0.0, 0.0]
    )
    offset_ns = base.sensors["CAM_FRONT"].time_offset_ns + 3_000_000
    path = write_calibration(
        {"CAM_FRONT": calibration_record("CAM_FRONT", moved, time_offset_ns=offset_ns)}, tmp_path
    )
    log = open_log(bag, rig=_write_rig(rig, tmp_path), calibration=path)
    assert log.sensors["CAM_FRONT"].ego_from_sensor.allclose(moved, atol=1e-12)
    assert log.sensors["CAM_FRONT"].time_offset_ns == offset_ns
    assert log.sensors["LIDAR_TOP"].ego_from_sensor.allclose(
        base.sensors["LIDAR_TOP"].ego_from_sensor, atol=0
    )
    np.testing.assert_array_equal(
        log.ego_timestamps("CAM_FRONT"), base.ego_timestamps("CAM_FRONT") + 3_000_000
    )
    frame = log[1]
    assert frame.images["CAM_FRONT"].sensor.ego_from_sensor.allclose(moved, atol=1e-12)
    # observations keep their sensor-clock stamps; the sensor they carry has the new offset
    assert frame.images["CAM_FRONT"].sensor.time_offset_ns == offset_ns
    assert pickle.loads(pickle.dumps(log)).sensors["CAM_FRONT"].ego_from_sensor.allclose(moved)
    with pytest.raises(CalibrationError, match="names sensors the log does not have: CAM_BACK"):
        BagLog(bag, rig, calibration={"CAM_BACK": moved})


def _write_rig(rig: Rig, tmp_path: Path) -> Path:
    path = tmp_path / "rig.yaml"
    path.write_text(rig.to_yaml())
    return path
