"""Rig files: validation, error messages naming field and file, YAML round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.errors import ConfigError
from avfusion.io.rig import DEFAULT_TOLERANCE_MS, Rig, load_rig, rig_from_dict

BASE: dict[str, Any] = {
    "reference_sensor": "LIDAR_TOP",
    "pose": {"source": "tf", "world_frame": "map", "ego_frame": "base_link"},
    "labels": "labels.json",
    "sensors": [
        {"name": "LIDAR_TOP", "modality": "lidar", "topic": "/LIDAR_TOP/points"},
        {
            "name": "CAM_FRONT",
            "modality": "camera",
            "topic": "/CAM_FRONT/image_raw/compressed",
            "camera_info_topic": "/CAM_FRONT/camera_info",
            "time_offset_ns": 4_000_000,
            "tolerance_ms": 42.5,
        },
        {
            "name": "THERMAL",
            "modality": "thermal",
            "topic": "/thermal/image_raw",
            "frame_id": "thermal_optical",
            "intrinsics": {
                "K": [[620.0, 0.0, 318.7], [0.0, 620.0, 257.2], [0.0, 0.0, 1.0]],
                "width": 640,
                "height": 512,
                "distortion": "radtan",
                "coeffs": [-0.28, 0.09, 4e-4, -3e-4, -0.012],
            },
            "ego_from_sensor": {"translation": [1.8, 0.0, 1.45], "rotation_wxyz": [0.5, -0.5, 0.5, -0.5]},
        },
        {"name": "RADAR", "modality": "radar", "topic": "/radar/points"},
    ],
}  # fmt: skip


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(BASE)
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


_DELETE = object()


def test_load_and_round_trip(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(BASE))
    rig = load_rig(path)
    assert rig.source == path.resolve()
    assert [s.name for s in rig.sensors] == ["LIDAR_TOP", "CAM_FRONT", "THERMAL", "RADAR"]
    assert rig.labels_path() == tmp_path.resolve() / "labels.json"
    assert rig.pose.source == "tf" and rig.pose.max_extrapolation_ms == 20.0
    # tolerances: explicit, or the documented per-modality default
    assert rig.sensor("CAM_FRONT").tolerance_ns == 42_500_000
    assert rig.sensor("LIDAR_TOP").tolerance_ns == 50_000_000 == DEFAULT_TOLERANCE_MS["lidar"] * 1e6
    assert rig.sensor("RADAR").tolerance_ns == 60_000_000
    assert rig.sensor("CAM_FRONT").time_offset_ns == 4_000_000
    thermal = rig.sensor("THERMAL")
    assert thermal.intrinsics is not None and thermal.ego_from_sensor is not None
    cam = thermal.intrinsics.to_camera_model()
    assert (cam.width, cam.height, cam.distortion) == (640, 512, "radtan")
    assert np.allclose(cam.coeffs[:5], [-0.28, 0.09, 4e-4, -3e-4, -0.012])
    tf = thermal.ego_from_sensor.to_transform()
    assert np.allclose(tf.apply(np.array([0.0, 0.0, 1.0])), [2.8, 0.0, 1.45])  # optical z → ego x
    # to_yaml reads back to the same rig (and keeps lists of numbers on one line)
    text = rig.to_yaml()
    assert "translation: [1.8, 0.0, 1.45]" in text
    again = tmp_path / "again.yaml"
    again.write_text(text)
    rig2 = load_rig(again)
    assert rig2.model_dump() == rig.model_dump()
    # model_validate works on dicts directly (pydantic); rig_from_dict wraps its errors
    assert Rig.model_validate(BASE).model_dump() == rig.model_dump()
    with pytest.raises(ConfigError, match="no sensor named 'nope'"):
        rig.sensor("nope")


def test_pose_sources() -> None:
    odo = rig_from_dict(_with(("pose",), {"source": "odometry", "topic": "/odom"}))
    assert (
        odo.pose.source == "odometry" and odo.pose.topic == "/odom" and odo.pose.ego_frame is None
    )
    none = rig_from_dict(_with(("pose",), {"source": "none", "ego_frame": "os1_sensor"}))
    assert none.pose.source == "none" and none.pose.ego_frame == "os1_sensor"
    with pytest.raises(
        ConfigError, match=r"pose: Input tag 'gps' found using 'source' does not match"
    ):
        rig_from_dict(_with(("pose",), {"source": "gps"}))
    with pytest.raises(ConfigError, match=r"pose.topic: Field required"):
        rig_from_dict(_with(("pose",), {"source": "odometry"}))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("sensors", 0, "modality"),
            "lidr",
            r"sensors\[0\].modality \(sensor 'LIDAR_TOP'\): Input should be 'lidar', 'radar', 'camera' or 'thermal' \(got 'lidr'\)",
        ),
        (
            ("sensors", 1, "camera_info_topic"),
            _DELETE,
            r"sensors\[1\] \(sensor 'CAM_FRONT'\): sensor 'CAM_FRONT' is a camera: give camera_info_topic",
        ),
        (
            ("sensors", 0, "camera_info_topic"),
            "/x/camera_info",
            r"sensor 'LIDAR_TOP' is a lidar: camera_info_topic and intrinsics apply only to camera and thermal",
        ),
        (("sensors", 1, "tolerance_ms"), -1, r"sensors\[1\].tolerance_ms.*greater than or equal to 0"),
        (("sensors", 1, "time_offset_ns"), 1.5, r"sensors\[1\].time_offset_ns \(sensor 'CAM_FRONT'\): Input should be a valid integer, got a number with a fractional part \(got 1.5\)"),
        (("sensors", 1, "colour"), "red", r"sensors\[1\].colour \(sensor 'CAM_FRONT'\): Extra inputs are not permitted"),
        (("sensors", 1, "name"), "LIDAR_TOP", r"sensor names must be unique; repeated: LIDAR_TOP"),
        (("sensors", 1, "topic"), "/LIDAR_TOP/points", r"each topic belongs to one sensor; repeated: /LIDAR_TOP/points"),
        (("sensors", 1, "name"), "CAM FRONT", r"sensors\[1\].name.*String should match pattern"),
        (("reference_sensor",), "CAM_BACK", r"reference_sensor 'CAM_BACK' is not one of the sensors \(LIDAR_TOP, CAM_FRONT, THERMAL, RADAR\)"),
        (("sensors",), [], r"sensors: List should have at least 1 item"),
        (("pose", "world_frame"), "", r"pose.world_frame: String should have at least 1 character"),
        (
            ("sensors", 2, "intrinsics", "K"),
            [[-620.0, 0.0, 318.7], [0.0, 620.0, 257.2], [0.0, 0.0, 1.0]],
            r"sensors\[2\].intrinsics \(sensor 'THERMAL'\): CameraModel: focal lengths must be positive, got fx=-620",
        ),
        (
            ("sensors", 2, "ego_from_sensor", "rotation_wxyz"),
            [0, 0, 0, 0],
            r"sensors\[2\].ego_from_sensor.*rotation_wxyz must be a finite non-zero quaternion",
        ),
        (("reference_sensor",), _DELETE, r"reference_sensor: Field required"),
    ],
)  # fmt: skip
def test_bad_fields_name_field_and_file(
    tmp_path: Path, path: tuple[Any, ...], value: Any, message: str
) -> None:
    import yaml

    rig_file = tmp_path / "my_rig.yaml"
    rig_file.write_text(yaml.safe_dump(_with(path, value)))
    with pytest.raises(ConfigError, match=rf"my_rig\.yaml: invalid rig: .*{message}"):
        load_rig(rig_file)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: rig file not found"):
        load_rig(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("reference_sensor: L\npose: {source: tf\nsensors: []\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: not valid YAML at line 3, column 8: expected ',' or '}'"
    ):
        load_rig(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: a rig must be a mapping .* got list"):
        load_rig(lst)
    with pytest.raises(ConfigError, match=r"rig: a rig must be a mapping"):
        rig_from_dict(None)
