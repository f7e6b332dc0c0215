"""The data model: construction checks, box geometry, lazy images, logs."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion import (
    AVFusionError,
    Boxes2D,
    Boxes3D,
    CalibrationError,
    CameraModel,
    Frame,
    Image,
    LogFormatError,
    PointCloud,
    Sensor,
    Transform,
)

CAM = CameraModel.pinhole(500.0, 500.0, 319.5, 239.5, 640, 480)


def _lidar() -> Sensor:
    return Sensor("LIDAR_TOP", "lidar", Transform.from_euler_zyx(0.0, 0.0, 0.0, (0.9, 0.0, 1.8)))


def test_sensor_checks_modality_and_camera() -> None:
    assert _lidar().modality == "lidar"
    with pytest.raises(CalibrationError, match="'CAM_FRONT': a camera sensor needs a CameraModel"):
        Sensor("CAM_FRONT", "camera", Transform())
    with pytest.raises(CalibrationError, match="'LIDAR_TOP': a lidar sensor has no CameraModel"):
        Sensor("LIDAR_TOP", "lidar", Transform(), camera=CAM)
    with pytest.raises(CalibrationError, match="unknown modality 'sonar'"):
        Sensor("S", "sonar", Transform())  # type: ignore[arg-type]
    with pytest.raises(AVFusionError, match="integer nanoseconds"):
        Sensor("CAM_FRONT", "camera", Transform(), CAM, time_offset_ns=0.5)  # type: ignore[arg-type]


def test_pointcloud_checks_shapes_and_selects() -> None:
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    pc = PointCloud(xyz, _lidar(), 10, {"intensity": np.arange(4.0)})
    sub = pc.select(np.array([True, False, True, False]))
    assert len(sub) == 2 and sub.attrs["intensity"].tolist() == [0.0, 2.0]
    assert pc.xyz is xyz  # not copied
    with pytest.raises(AVFusionError, match=r"attribute 'ring' has shape \(3,\), expected \(4,\)"):
        PointCloud(xyz, _lidar(), 10, {"ring": np.zeros(3)})
    with pytest.raises(AVFusionError, match=r"xyz must be an \(N, 3\) array"):
        PointCloud(np.zeros((4, 2), np.float32), _lidar(), 10)
    with pytest.raises(AVFusionError, match="float32 or float64"):
        PointCloud(np.zeros((4, 3), np.int16), _lidar(), 10)
    with pytest.raises(AVFusionError, match="integer nanoseconds"):
        PointCloud(xyz, _lidar(), 1.5)  # type: ignore[arg-type]


def test_image_loads_lazily_once_and_checks_size() -> None:
    cam = Sensor("CAM_FRONT", "camera", Transform(), CAM)
    calls: list[int] = []

    def load() -> np.ndarray:
        calls.append(1)
        return np.zeros((480, 640, 3), np.uint8)

    img = Image(cam, 5, loader=load, path="samples/CAM_FRONT/x.jpg")
    assert calls == []
    assert img.pixels.shape == (480, 640, 3)
    assert img.pixels.shape == (480, 640, 3)
    assert calls == [1]
    bad = Image(
        cam, 5, loader=lambda: np.zeros((10, 10, 3), np.uint8), path="samples/CAM_FRONT/y.jpg"
    )
    with pytest.raises(
        LogFormatError, match=r"y\.jpg.*image is 10x10 but the camera model is 640x480"
    ):
        _ = bad.pixels
    with pytest.raises(AVFusionError, match="needs pixels or a loader"):
        Image(cam, 5)


def test_box_corners_and_frame_change() -> None:
    yaw = np.pi / 2
    boxes = Boxes3D(
        center=[[10.0, 5.0, 1.0]],
        size=[[4.0, 2.0, 1.5]],
        rotation=[Transform.from_euler_zyx(yaw, 0, 0).quaternion],
        label=["vehicle.car"],
        track_id=["t1"],
        frame="world",
        velocity=[[0.0, 3.0, 0.0]],
    )
    c = boxes.corners()[0]
    # Length (4 m) now runs along world y; first corner is front (+x_box → +y_world), left (+y_box → -x_world), top.
    np.testing.assert_allclose(c[0], [10.0 - 1.0, 5.0 + 2.0, 1.75], atol=1e-12)
    np.testing.assert_allclose(c.max(axis=0) - c.min(axis=0), [2.0, 4.0, 1.5], atol=1e-12)
    assert boxes.yaw[0] == pytest.approx(yaw)
    ego_from_world = Transform.from_euler_zyx(-np.pi / 2, 0, 0, (0.0, 0.0, 0.0))
    in_ego = boxes.transformed(ego_from_world, "ego")
    np.testing.assert_allclose(in_ego.corners()[0], ego_from_world.apply(c), atol=1e-12)
    np.testing.assert_allclose(in_ego.velocity[0], [3.0, 0.0, 0.0], atol=1e-12)
    assert in_ego.frame == "ego" and in_ego.label[0] == "vehicle.car"
    assert len(Boxes3D.empty("ego")) == 0 and Boxes3D.empty("ego").corners().shape == (0, 8, 3)


def test_box_errors() -> None:
    with pytest.raises(AVFusionError, match="1 centres but 2 sizes"):
        Boxes3D([[0, 0, 0]], [[1, 1, 1], [1, 1, 1]], [[1, 0, 0, 0]], ["a"], ["1"], "ego")
    with pytest.raises(AVFusionError, match="sizes must be >= 0"):
        Boxes3D([[0, 0, 0]], [[-1, 1, 1]], [[1, 0, 0, 0]], ["a"], ["1"], "ego")
    with pytest.raises(AVFusionError, match="zero norm"):
        Boxes3D([[0, 0, 0]], [[1, 1, 1]], [[0, 0, 0, 0]], ["a"], ["1"], "ego")
    with pytest.raises(AVFusionError, match="label: expected 1 values"):
        Boxes3D([[0, 0, 0]], [[1, 1, 1]], [[1, 0, 0, 0]], ["a", "b"], ["1"], "ego")
    with pytest.raises(AVFusionError, match="x1 >= x0"):
        Boxes2D([[10, 0, 5, 5]], ["car"], ["1"], "CAM_FRONT")


def test_frame_rejects_observation_of_unknown_sensor() -> None:
    pc = PointCloud(np.zeros((1, 3), np.float32), _lidar(), 0)
    with pytest.raises(AVFusionError, match="unknown sensor 'LIDAR_TOP'"):
        Frame(0, None, {}, points={"LIDAR_TOP": pc})
