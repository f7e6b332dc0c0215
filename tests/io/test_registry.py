"""open_log: the dispatch table keyed by what is on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from avfusion.errors import ConfigError, LogFormatError
from avfusion.io.nuscenes import NuScenesLog
from avfusion.io.registry import FORMATS, detect_format, open_log

from .nuscenes_fixture import VERSION, build_root


def test_opens_nuscenes_root_and_table_folder(tmp_path: Path) -> None:
    build_root(tmp_path / "nus")
    for path in (tmp_path / "nus", tmp_path / "nus" / VERSION):
        log = open_log(path)
        assert isinstance(log, NuScenesLog) and len(log) == 4
    fmt = detect_format(tmp_path / "nus")
    assert fmt is not None and fmt.name == "nuscenes"


@pytest.mark.realdata
def test_opens_real_keyframe(realdata: Path) -> None:
    log = open_log(realdata / "nuscenes-keyframe")
    assert len(log) == 1 and len(log[0].points["LIDAR_TOP"]) == 34688


def test_rig_is_for_bags(tmp_path: Path) -> None:
    build_root(tmp_path / "nus")
    with pytest.raises(ConfigError, match="a rig file applies to bags"):
        open_log(tmp_path / "nus", rig="rig.yaml")


@pytest.mark.parametrize(
    ("name", "fmt", "error", "message"),
    [
        ("drive.bag", "ros1", ConfigError, r"drive\.bag: .*needs a rig file.*avfusion info"),
        ("drive.mcap", "mcap", ConfigError, r"drive\.mcap: .*needs a rig file.*avfusion info"),
        ("bag2", "rosbag2", ConfigError, r"bag2: .*needs a rig file.*avfusion info"),
        ("kitti", "kitti", LogFormatError, r"velodyne: no velodyne scans"),
    ],
)
def test_other_formats_are_detected_and_opened_by_their_reader(
    tmp_path: Path, name: str, fmt: str, error: type[Exception], message: str
) -> None:
    p = tmp_path / name
    if name.endswith((".bag", ".mcap")):
        p.write_bytes(b"\x00")
    elif name == "bag2":
        p.mkdir()
        (p / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    else:
        (p / "training" / "velodyne").mkdir(parents=True)
    detected = detect_format(p)
    assert detected is not None and detected.name == fmt
    with pytest.raises(error, match=message):
        open_log(p)


def test_unknown_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(
        LogFormatError,
        match=r"notes\.txt: not a recognised log \(readable: nuScenes-style root.*ROS 1 \.bag",
    ):
        open_log(tmp_path / "notes.txt")
    with pytest.raises(LogFormatError, match=r"nothing: no such file or directory"):
        open_log(tmp_path / "nothing")
    assert detect_format(tmp_path) is None
    assert [f.name for f in FORMATS] == ["nuscenes", "ros1", "mcap", "rosbag2", "kitti"]
