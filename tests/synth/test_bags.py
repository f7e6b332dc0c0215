"""ROS2 (MCAP) and ROS1 bags hold the same recording as the nuScenes-style log."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from avfusion.errors import ConfigError, LogFormatError
from avfusion.synth.bags import write_bags

from .conftest import SynthLog


@pytest.fixture(scope="module")
def bags(synth_log: SynthLog, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return write_bags(synth_log.root, tmp_path_factory.mktemp("bags"))


def test_bags_hold_the_log(synth_log: SynthLog, bags) -> None:  # type: ignore[no-untyped-def]
    assert "mcap" in (bags.ros2_dir / "metadata.yaml").read_text()
    sd = synth_log.table("sample_data")
    sensors = {s["token"]: s["channel"] for s in synth_log.table("sensor")}
    channel = {c["token"]: sensors[c["sensor_token"]] for c in synth_log.table("calibrated_sensor")}
    per_channel: dict[str, int] = {}
    for r in sd:
        per_channel[channel[r["calibrated_sensor_token"]]] = (
            per_channel.get(channel[r["calibrated_sensor_token"]], 0) + 1
        )
    lidar0 = min(
        (r for r in sd if channel[r["calibrated_sensor_token"]] == "LIDAR_TOP"),
        key=lambda r: r["timestamp"],
    )
    thermal0 = min(
        (r for r in sd if channel[r["calibrated_sensor_token"]] == "THERMAL_FRONT"),
        key=lambda r: r["timestamp"],
    )
    for path in (bags.ros2_dir, bags.ros1_bag):
        with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
            counts: dict[str, int] = {}
            for c in reader.connections:
                counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
            assert counts["/LIDAR_TOP/points"] == per_channel["LIDAR_TOP"]
            assert counts["/RADAR_FRONT/points"] == per_channel["RADAR_FRONT"]
            assert counts["/CAM_FRONT/image_raw/compressed"] == per_channel["CAM_FRONT"]
            assert (
                counts["/THERMAL_FRONT/image_raw"]
                == counts["/THERMAL_FRONT/camera_info"]
                == per_channel["THERMAL_FRONT"]
            )
            assert counts["/tf_static"] == 1 and counts["/tf"] > 100
            seen = set()
            for conn, t, raw in reader.messages():
                if conn.topic in seen:
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == "/LIDAR_TOP/points":
                    assert t == lidar0["timestamp"] * 1000
                    assert [f.name for f in msg.fields] == [
                        "x",
                        "y",
                        "z",
                        "intensity",
                        "ring",
                        "time",
                    ]
                    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "time"], "formats": ["<f4"] * 4 + ["<u2", "<f4"],
                                   "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})  # fmt: skip
                    rec = np.frombuffer(msg.data.tobytes(), dtype=dt)
                    pts = np.fromfile(
                        synth_log.root / lidar0["filename"], dtype=np.float32
                    ).reshape(-1, 5)
                    assert np.array_equal(rec["x"], pts[:, 0]) and np.array_equal(
                        rec["ring"], pts[:, 4].astype(np.uint16)
                    )
                    assert np.all(np.diff(rec["time"]) >= 0)
                elif conn.topic == "/RADAR_FRONT/points":
                    assert len(msg.fields) == 18 and msg.fields[5].name == "rcs"
                elif conn.topic == "/THERMAL_FRONT/image_raw":
                    assert msg.encoding == "mono16"
                    img = np.frombuffer(msg.data.tobytes(), dtype="<u2").reshape(
                        msg.height, msg.width
                    )
                    assert np.array_equal(
                        img,
                        cv2.imread(
                            str(synth_log.root / thermal0["filename"]), cv2.IMREAD_UNCHANGED
                        ),
                    )
                elif conn.topic == "/tf_static":
                    assert {tf.child_frame_id for tf in msg.transforms} == set(per_channel)
                seen.add(conn.topic)
    labels = json.loads(bags.labels.read_text())
    assert len(labels["samples"]) == synth_log.summary.n_samples
    assert sum(len(s["boxes"]) for s in labels["samples"]) == len(
        synth_log.table("sample_annotation")
    )


def test_bags_refuse_to_overwrite(synth_log: SynthLog, bags) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="already exists"):
        write_bags(synth_log.root, bags.ros2_dir.parent)
    with pytest.raises(LogFormatError, match="is missing"):
        write_bags(Path("/nonexistent-avfusion-root"), bags.ros2_dir.parent / "other")
