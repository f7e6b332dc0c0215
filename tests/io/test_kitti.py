"""KITTI object and raw layouts: synthetic trees in the exact KITTI text formats, and real
KITTI object frames (000008 and the truncated 000000) from ../shared/realdata."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from avfusion.calibration.transforms import Transform
from avfusion.errors import CalibrationError, ConfigError, LogFormatError, SyncError
from avfusion.io import detect_format, open_log
from avfusion.io.kitti import (
    OBJECT_FRAME_STEP_NS,
    KittiObjectLog,
    KittiRawLog,
    open_kitti,
    parse_kitti_timestamp,
    read_kitti_labels,
    read_kitti_object_calib,
    read_kitti_raw_calib,
    read_kitti_timestamps,
)
from avfusion.types import Boxes3D

MMDET3D = "open-mmlab__mmdetection3d"

# The public KITTI 2011_09_26 calibration (the values frame 000008 also uses), as the devkit
# files write them: six decimals in scientific notation.
P_RECT = {
    0: "7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00",
    1: "7.215377e+02 0.000000e+00 6.095593e+02 -3.875744e+02 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00",
    2: "7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03",
    3: "7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03",
}
R_RECT_00 = "9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01"
VELO_R = "7.533745e-03 -9.999714e-01 -6.166020e-04 1.480249e-02 7.280733e-04 -9.998902e-01 9.998621e-01 7.523790e-03 1.480755e-02"
VELO_T = "-4.069766e-03 -7.631618e-02 -2.717806e-01"
IMU_R = "9.999976e-01 7.553071e-04 -2.035826e-03 -7.854027e-04 9.998898e-01 -1.482298e-02 2.024406e-03 1.482454e-02 9.998881e-01"
IMU_T = "-8.086759e-01 3.195559e-01 -7.997231e-01"


def floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


def rt34(r: str, t: str) -> np.ndarray:
    return np.hstack([floats(r).reshape(3, 3), floats(t).reshape(3, 1)])


def hom(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def project_kitti(points: np.ndarray, p: np.ndarray, r0: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """The devkit's ``P · R0_rect · Tr_velo_to_cam · p``, written out with numpy."""
    m = hom(p) @ hom(r0) @ hom(tr)
    ph = np.hstack([points.astype(np.float64), np.ones((len(points), 1))]) @ m.T
    return ph[:, :2] / ph[:, 2:3]


def kitti_devkit_corners(hwl: np.ndarray, loc: np.ndarray, ry: float) -> np.ndarray:
    """Box corners (8, 3) in the rectified camera frame, as the KITTI devkit's compute_box_3d."""
    h, w, length = hwl
    x = [length / 2, length / 2, -length / 2, -length / 2] * 2
    y = [0.0] * 4 + [-h] * 4
    z = [w / 2, -w / 2, -w / 2, w / 2] * 2
    c, s = math.cos(ry), math.sin(ry)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return (rot @ np.array([x, y, z])).T + loc


def sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(np.round(a, 6).T[::-1])]


# ------------------------------------------------------------------------------------------
# Object layout, synthetic
# ------------------------------------------------------------------------------------------

OBJECT_CALIB = "\n".join(
    [
        *(f"P{k}: {P_RECT[k]}" for k in range(4)),
        f"R0_rect: {R_RECT_00}",
        "Tr_velo_to_cam: " + " ".join(f"{v:.6e}" for v in rt34(VELO_R, VELO_T).ravel()),
        "Tr_imu_to_velo: " + " ".join(f"{v:.6e}" for v in rt34(IMU_R, IMU_T).ravel()),
    ]
)
LABELS = (
    "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59\n"
    "Pedestrian 0.30 1 0.21 423.17 173.67 433.17 224.03 1.87 0.50 0.90 -5.85 1.69 24.24 0.01\n"
    "DontCare -1 -1 -10 500.00 180.00 520.00 190.00 -1 -1 -1 -1000 -1000 -1000 -10\n"
)


def write_object_tree(root: Path, ids: tuple[int, ...] = (3, 10), n_points: int = 50) -> Path:
    """A KITTI object ``training`` split: velodyne, image_2 (64x32 / 80x40 PNGs), calib, label_2."""
    split = root / "training"
    for sub in ("velodyne", "image_2", "calib", "label_2"):
        (split / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for j, i in enumerate(ids):
        pts = rng.uniform([5, -10, -2, 0], [40, 10, 2, 1], (n_points, 4)).astype(np.float32)
        pts.tofile(split / "velodyne" / f"{i:06d}.bin")
        w, h = (64, 32) if j % 2 == 0 else (80, 40)
        cv2.imwrite(str(split / "image_2" / f"{i:06d}.png"), np.full((h, w, 3), 40 * j, np.uint8))
        (split / "calib" / f"{i:06d}.txt").write_text(OBJECT_CALIB + "\n")
        (split / "label_2" / f"{i:06d}.txt").write_text(LABELS)
    return split


def test_object_frames_times_sensors_and_points(tmp_path: Path) -> None:
    split = write_object_tree(tmp_path / "kitti")
    log = KittiObjectLog(tmp_path / "kitti")  # the parent of training/ works too
    assert log.root == split and log.split == "training" and len(log) == 2
    assert log.frame_ids == ["000003", "000010"]
    assert sorted(log.sensors) == ["CAM2", "VELODYNE"]
    np.testing.assert_array_equal(log.timestamps("VELODYNE"), [300_000_000, 1_000_000_000])
    np.testing.assert_array_equal(log.timestamps("CAM2"), log.timestamps("VELODYNE"))
    assert OBJECT_FRAME_STEP_NS == 100_000_000
    assert len(log.poses) == 2 and log.pose_at(650_000_000).allclose(log.poses[0])
    assert log.poses[1].allclose(log.poses[0]) and np.allclose(log.poses[0].as_matrix(), np.eye(4))

    frames = list(log)
    assert [f.index for f in frames] == [0, 1] and [f.token for f in frames] == log.frame_ids
    f1 = frames[1]
    assert f1.t_ns == 1_000_000_000 and f1.time_diffs_ns == {"VELODYNE": 0, "CAM2": 0}
    raw = np.fromfile(split / "velodyne" / "000010.bin", np.float32).reshape(-1, 4)
    cloud = f1.points["VELODYNE"]
    np.testing.assert_array_equal(cloud.xyz, raw[:, :3])
    np.testing.assert_array_equal(cloud.attrs["intensity"], raw[:, 3])
    assert cloud.xyz.flags.c_contiguous and cloud.sensor.ego_from_sensor.allclose(
        log.poses[0], atol=0
    )
    # Per-frame calibration: image sizes come from each frame's PNG header.
    cam0 = log.sensors["CAM2"].camera
    cam1 = f1.sensors["CAM2"].camera
    assert cam0 is not None and cam1 is not None
    assert (cam0.width, cam0.height) == (64, 32) and (cam1.width, cam1.height) == (80, 40)
    img = f1.images["CAM2"]
    assert img.pixels_or_none is None and img.pixels.shape == (40, 80, 3)
    assert int(img.pixels[0, 0, 0]) == 40
    assert log.calibration(1).projection("CAM2")[0, 3] == pytest.approx(44.85728)


def test_object_projection_reproduces_p2_r0_tr(tmp_path: Path) -> None:
    write_object_tree(tmp_path / "kitti")
    log = KittiObjectLog(tmp_path / "kitti" / "training")
    frame = log[0]
    pts = np.random.default_rng(1).uniform([3, -20, -3], [80, 20, 3], (500, 3))
    velo = frame.sensors["VELODYNE"]
    cam = frame.sensors["CAM2"]
    assert cam.camera is not None
    cam_from_velo = cam.ego_from_sensor.inverse() @ velo.ego_from_sensor
    uv, depth, _ = cam.camera.project(cam_from_velo.apply(pts))
    expected = project_kitti(
        pts, floats(P_RECT[2]).reshape(3, 4), floats(R_RECT_00).reshape(3, 3), rt34(VELO_R, VELO_T)
    )
    np.testing.assert_allclose(uv, expected, atol=1e-6, rtol=0)
    # depth is z in rectified camera 2 = z in rectified camera 0 + P2[2, 3]
    rect = (hom(floats(R_RECT_00).reshape(3, 3)) @ hom(rt34(VELO_R, VELO_T)))[:3]
    z_rect = pts @ rect[:3, 2].T * 0 + (np.hstack([pts, np.ones((500, 1))]) @ rect[2])
    np.testing.assert_allclose(depth, z_rect + 2.745884e-03, atol=1e-9)
    # Rectified camera 2 sits 6 cm left of rectified camera 0 (x right): -t = -K⁻¹·P2[:, 3].
    cam2_from_rect = log.calibration(0).cam_from_rect("CAM2")
    assert cam2_from_rect.translation[0] == pytest.approx(
        (44.85728 - 609.5593 * 2.745884e-03) / 721.5377, abs=1e-12
    )
    assert cam2_from_rect.translation[2] == pytest.approx(2.745884e-03)


def test_object_labels_to_ego_boxes(tmp_path: Path) -> None:
    split = write_object_tree(tmp_path / "kitti")
    log = KittiObjectLog(split)
    frame = log[0]
    boxes = frame.boxes3d
    assert boxes is not None and boxes.frame == "ego" and len(boxes) == 2
    assert boxes.label.tolist() == ["Car", "Pedestrian"]
    np.testing.assert_array_equal(boxes.size, [[3.64, 1.67, 1.65], [0.90, 0.50, 1.87]])
    np.testing.assert_allclose(boxes.attrs["truncated"], [0.0, 0.3])
    np.testing.assert_array_equal(boxes.attrs["occluded"], [0, 1])
    np.testing.assert_allclose(boxes.attrs["alpha"], [-1.58, 0.21])
    assert boxes.token is not None and boxes.token.tolist() == ["000003:1", "000003:2"]
    # Corners against the devkit's compute_box_3d, in the rectified camera frame.
    rect_from_velo = log.calibration(0).rect_from_velo()
    corners_rect = rect_from_velo.apply(boxes.corners().reshape(-1, 3)).reshape(-1, 8, 3)
    for k, (hwl, loc, ry) in enumerate(
        [
            ((1.65, 1.67, 3.64), (-0.65, 1.71, 46.70), -1.59),
            ((1.87, 0.50, 0.90), (-5.85, 1.69, 24.24), 0.01),
        ]
    ):
        ref = kitti_devkit_corners(np.array(hwl), np.array(loc), ry)
        np.testing.assert_allclose(sorted_rows(corners_rect[k]), sorted_rows(ref), atol=1e-6)
        # The centre is the middle of the box: KITTI's y is its bottom.
        np.testing.assert_allclose(
            rect_from_velo.apply(boxes.center[k]), np.array(loc) - [0, hwl[0] / 2, 0], atol=1e-9
        )
        # The box's x axis (its length) heads along -ry - π/2 in the Velodyne frame (± tilt).
        assert math.remainder(boxes.yaw[k] - (-ry - math.pi / 2), 2 * math.pi) == pytest.approx(
            0, abs=0.02
        )
    b2d = frame.boxes2d["CAM2"]
    assert b2d.sensor == "CAM2" and b2d.label.tolist() == ["Car", "Pedestrian", "DontCare"]
    np.testing.assert_allclose(b2d.xyxy[2], [500, 180, 520, 190])
    assert b2d.attrs["token"].tolist() == ["000003:1", "000003:2", "000003:3"]
    np.testing.assert_array_equal(b2d.attrs["occluded"], [0, 1, -1])


def test_label_score_column_and_empty_file(tmp_path: Path) -> None:
    calib_path = tmp_path / "calib.txt"
    calib_path.write_text(OBJECT_CALIB)
    calib = read_kitti_object_calib(calib_path)
    p = tmp_path / "000001.txt"
    p.write_text("Car 0 0 0 1 2 3 4 1.5 1.6 4.0 0 1.5 10 0 0.87\n")
    boxes, b2d = read_kitti_labels(p, calib)
    assert len(boxes) == 1 and boxes.attrs["score"].tolist() == [0.87]
    assert b2d.attrs["score"].tolist() == [0.87]
    p.write_text("\n")
    boxes, b2d = read_kitti_labels(p, calib)
    assert len(boxes) == 0 and len(b2d) == 0 and boxes.frame == "ego"


def test_object_timestamps_file(tmp_path: Path) -> None:
    split = write_object_tree(tmp_path / "kitti", ids=(0, 2))
    (split / "timestamps.txt").write_text(
        "2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.1\n2011-09-26 13:02:26.200000001\n\n"
    )
    log = KittiObjectLog(split)
    np.testing.assert_array_equal(
        log.timestamps("VELODYNE"), [1317042145964389445, 1317042146200000001]
    )
    (split / "timestamps.txt").write_text("2011-09-26 13:02:25.964389445\n")
    with pytest.raises(
        LogFormatError, match=r"timestamps\.txt: 1 time stamps, but frame 000002 needs line 3"
    ):
        KittiObjectLog(split)
    (split / "timestamps.txt").write_text(
        "2011-09-26 13:02:25.5\n2011-09-26 13:02:25.4\n2011-09-26 13:02:25.3\n"
    )
    with pytest.raises(LogFormatError, match="frame 000002 is not after frame 000000"):
        KittiObjectLog(split)


def test_timestamp_parsing_is_exact_integer_nanoseconds(tmp_path: Path) -> None:
    # 1317042145.964389445 s is not representable as a float64 to the nanosecond.
    t = parse_kitti_timestamp("2011-09-26 13:02:25.964389445")
    assert t == 1317042145_964389445 and float(t / 1e9) * 1e9 != t
    assert parse_kitti_timestamp("2011-09-26 13:02:25") == 1317042145_000000000
    assert parse_kitti_timestamp("2011-09-26 13:02:25.05") == 1317042145_050000000
    assert parse_kitti_timestamp("1970-01-01 00:00:00.000000001") == 1
    for bad, msg in [
        ("2011-09-26 13:02:25.9643894451", "is not a KITTI time stamp"),
        ("2011/09/26 13:02:25.1", "is not a KITTI time stamp"),
        ("2011-13-26 13:02:25.1", "out-of-range"),
        ("", "is not a KITTI time stamp"),
    ]:
        with pytest.raises(LogFormatError, match=f"here: .*{msg}"):
            parse_kitti_timestamp(bad, "here")
    p = tmp_path / "timestamps.txt"
    p.write_text("2011-09-26 13:02:25.1\n\n2011-09-26 13:02:25.2\n")
    with pytest.raises(
        LogFormatError, match=r"timestamps\.txt: line 2: '' is not a KITTI time stamp"
    ):
        read_kitti_timestamps(p)
    with pytest.raises(LogFormatError, match=r"nothing\.txt: time stamp file is missing"):
        read_kitti_timestamps(tmp_path / "nothing.txt")


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (
            lambda s: s.replace("R0_rect:", "R9_rect:"),
            CalibrationError,
            r"calib/000003\.txt: calibration line 'R0_rect:' is missing \(expected 9 values",
        ),
        (
            lambda s: s.replace("P2: 7.215377e+02 ", "P2: "),
            CalibrationError,
            r"calib/000003\.txt: line 3 'P2:' has 11 values, expected 12",
        ),
        (
            lambda s: s.replace("Tr_velo_to_cam: 7.533745e-03", "Tr_velo_to_cam: abc"),
            CalibrationError,
            r"calib/000003\.txt: line 6 'Tr_velo_to_cam:' has a non-numeric value",
        ),
        (
            lambda s: s + "\nthis line has no colon\n",
            CalibrationError,
            r"calib/000003\.txt: line 9 is not a 'name: values' calibration line",
        ),
        (
            lambda s: s + "\nP2: " + P_RECT[2] + "\n",
            CalibrationError,
            r"calib/000003\.txt: line 9 repeats 'P2:' \(first on line 3\)",
        ),
        (
            lambda s: s.replace("R0_rect: 9.999239e-01", "R0_rect: 1.5"),
            CalibrationError,
            r"calib/000003\.txt: R0_rect: Transform: rotation is not orthonormal",
        ),
        (
            lambda s: s.replace("P2: 7.215377e+02", "P2: -7.215377e+02"),
            CalibrationError,
            r"calib/000003\.txt: P2 has non-positive focal lengths",
        ),
        (
            lambda s: s.replace(
                "P2: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00",
                "P2: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.300000e+00",
            ),
            CalibrationError,
            r"calib/000003\.txt: P2 must be K·\[I \| t\]",
        ),
    ],
)
def test_bad_calibration_is_named(
    tmp_path: Path, edit: Any, error: type[Exception], message: str
) -> None:
    split = write_object_tree(tmp_path / "kitti", ids=(3,))
    path = split / "calib" / "000003.txt"
    path.write_text(edit(path.read_text()))
    with pytest.raises(error, match=message):
        KittiObjectLog(split)


def test_bad_object_files_are_named(tmp_path: Path) -> None:
    split = write_object_tree(tmp_path / "kitti", ids=(3, 4))
    log = KittiObjectLog(split)
    labels = split / "label_2" / "000004.txt"
    labels.write_text("Car 0 0 0 1 2 3 4 1.5 1.6 4.0 0 1.5 10\n")
    with pytest.raises(
        LogFormatError, match=r"label_2/000004\.txt: line 1 has 14 columns, expected 15"
    ):
        log[1]
    labels.write_text("Car 0 0 0 1 2 3 4 1.5 1.6 4.0 0 1.5 ten 0\n")
    with pytest.raises(
        LogFormatError, match=r"label_2/000004\.txt: line 1 has a non-numeric value"
    ):
        log[1]
    labels.write_text(
        "Car 0 0 0 1 2 3 4 1.5 1.6 4.0 0 1.5 10 0\nCar 0 0 0 1 2 3 4 1.5 1.6 4.0 0 1.5 10 0 0.5\n"
    )
    with pytest.raises(LogFormatError, match=r"000004\.txt: line 2 has 16 columns, earlier lines"):
        log[1]
    labels.write_text("Car 0 0 0 5 2 3 4 1.5 1.6 4.0 0 1.5 10 0\n")
    with pytest.raises(LogFormatError, match=r"000004\.txt: 2D boxes \(x1 y1 x2 y2\).*x1 >= x0"):
        log[1]
    labels.write_text("Car 0 0 0 1 2 3 4 -1.5 1.6 4.0 0 1.5 10 0\n")
    with pytest.raises(
        LogFormatError, match=r"000004\.txt: 3D boxes \(h w l x y z ry\).*sizes must be >= 0"
    ):
        log[1]
    labels.unlink()
    with pytest.raises(
        LogFormatError, match=r"label_2/000004\.txt: label file of frame 000004 is missing"
    ):
        log[1]

    scan = split / "velodyne" / "000004.bin"
    scan.write_bytes(b"\x00" * 17)
    with pytest.raises(
        LogFormatError,
        match=r"velodyne/000004\.bin: velodyne scan of 17 bytes is not a whole number of points \(16 bytes each",
    ):
        log[1]
    # Frame 1's sensors (and image size) are cached by now: a vanished image shows at decode.
    scan.write_bytes(np.zeros((3, 4), np.float32).tobytes())
    (split / "label_2" / "000004.txt").write_text(LABELS)
    image = split / "image_2" / "000004.png"
    good_png = image.read_bytes()
    image.unlink()
    frame = log[1]
    with pytest.raises(LogFormatError, match=r"image_2/000004\.png: image is missing"):
        _ = frame.images["CAM2"].pixels
    with pytest.raises(LogFormatError, match=r"image_2/000004\.png: image is missing"):
        KittiObjectLog(split)[1]
    image.write_bytes(b"not a png at all")
    with pytest.raises(LogFormatError, match=r"image_2/000004\.png: not a decodable image"):
        KittiObjectLog(split)[1]
    image.write_bytes(good_png[:30])
    with pytest.raises(LogFormatError, match=r"image_2/000004\.png: not a decodable image"):
        _ = frame.images["CAM2"].pixels
    (split / "calib" / "000004.txt").unlink()
    with pytest.raises(
        LogFormatError, match=r"calib/000004\.txt: calibration file of frame 1 is missing"
    ):
        KittiObjectLog(split)[1]
    with pytest.raises(
        LogFormatError, match=r"training: no sensor 'CAM3' \(sensors: VELODYNE, CAM2\)"
    ):
        log.timestamps("CAM3")
    with pytest.raises(IndexError, match="frame 2 out of range for a log of 2 frames"):
        log[2]


def test_missing_image_of_first_frame_and_empty_split(tmp_path: Path) -> None:
    split = write_object_tree(tmp_path / "kitti", ids=(3,))
    (split / "image_2" / "000003.png").unlink()
    with pytest.raises(LogFormatError, match=r"image_2/000003\.png: image is missing"):
        KittiObjectLog(split)
    (split / "velodyne" / "000003.bin").unlink()
    (split / "velodyne" / "README").write_text("not a scan")
    with pytest.raises(LogFormatError, match=r"velodyne: no velodyne scans \(NNNNNN\.bin\)"):
        KittiObjectLog(split)
    with pytest.raises(LogFormatError, match=r"nothing: not a directory"):
        KittiObjectLog(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    with pytest.raises(
        LogFormatError, match=r"other: no KITTI object layout here \(expected 'velodyne/'"
    ):
        KittiObjectLog(tmp_path / "other")
    with pytest.raises(LogFormatError, match=r"other: not a KITTI layout"):
        open_kitti(tmp_path / "other")


def test_testing_split_has_no_labels_and_open_log_detects_it(tmp_path: Path) -> None:
    split = write_object_tree(tmp_path / "kitti", ids=(7,))
    testing = tmp_path / "kitti" / "testing"
    split.rename(testing)
    for p in (testing / "label_2").iterdir():
        p.unlink()
    (testing / "label_2").rmdir()
    log = open_log(tmp_path / "kitti")
    assert isinstance(log, KittiObjectLog) and log.split == "testing"
    fmt = detect_format(tmp_path / "kitti")
    assert fmt is not None and fmt.name == "kitti" and fmt.open is not None
    frame = log[0]
    assert frame.boxes3d is None and frame.boxes2d == {}
    with pytest.raises(ConfigError, match="a KITTI folder carries its own calibration"):
        open_log(testing, rig="rig.yaml")


# ------------------------------------------------------------------------------------------
# Raw layout: a generator writing a small drive in the exact KITTI raw text formats
# ------------------------------------------------------------------------------------------

LAT0, LON0, ALT0 = 49.011212804408, 8.4228850417969, 112.83492279053
T0_NS = 1317042145_964389445  # 2011-09-26 13:02:25.964389445


def kitti_stamp(t_ns: int) -> str:
    import datetime

    s, ns = divmod(t_ns, 1_000_000_000)
    d = datetime.datetime.fromtimestamp(s, tz=datetime.timezone.utc)
    return f"{d:%Y-%m-%d %H:%M:%S}.{ns:09d}"


@dataclass
class RawTruth:
    drive: Path
    velo_t_ns: np.ndarray
    cam_t_ns: dict[str, np.ndarray]
    oxts_t_ns: np.ndarray
    world_from_imu: list[np.ndarray]  # 4x4, world = ENU Mercator with the first fix at 0
    points: list[np.ndarray]


def write_kitti_raw(
    date_dir: Path, n_frames: int = 4, n_points: int = 64, drive: str = "2011_09_26_drive_0001_sync"
) -> RawTruth:
    """A raw-layout drive: calib files in the date folder, velodyne/image_02/image_03/oxts."""
    date_dir.mkdir(parents=True, exist_ok=True)
    cam_lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for k in range(4):
        cam_lines += [
            f"S_{k:02d}: 1.392000e+03 5.120000e+02",
            f"K_{k:02d}: 9.842439e+02 0.000000e+00 6.900000e+02 0.000000e+00 9.808141e+02 2.331966e+02 0.000000e+00 0.000000e+00 1.000000e+00",
            f"D_{k:02d}: -3.728755e-01 2.037299e-01 2.219027e-03 1.383707e-03 -7.233722e-02",
            f"R_{k:02d}: 1.000000e+00 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00",
            f"T_{k:02d}: 2.573699e-16 -1.059758e-16 1.614870e-16",
            f"S_rect_{k:02d}: 1.242000e+03 3.750000e+02",
            f"R_rect_{k:02d}: {R_RECT_00}",
            f"P_rect_{k:02d}: {P_RECT[k]}",
        ]
    (date_dir / "calib_cam_to_cam.txt").write_text("\n".join(cam_lines) + "\n")
    (date_dir / "calib_velo_to_cam.txt").write_text(
        f"calib_time: 15-Mar-2012 11:37:16\nR: {VELO_R}\nT: {VELO_T}\n"
        "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n"
    )
    (date_dir / "calib_imu_to_velo.txt").write_text(
        f"calib_time: 25-May-2012 16:47:16\nR: {IMU_R}\nT: {IMU_T}\n"
    )
    root = date_dir / drive
    rng = np.random.default_rng(7)
    step = 103_652_177  # ~10 Hz with nanoseconds a float would lose
    velo_t = T0_NS + np.arange(n_frames, dtype=np.int64) * step
    cam_t = {"image_02": velo_t - 1_234_567, "image_03": velo_t - 1_234_001}
    oxts_t = velo_t - 4_999_999
    streams = {"velodyne_points": velo_t, "oxts": oxts_t, **cam_t}
    for name, times in streams.items():
        (root / name / "data").mkdir(parents=True, exist_ok=True)
        (root / name / "timestamps.txt").write_text(
            "".join(kitti_stamp(int(t)) + "\n" for t in times)
        )
    points = []
    for k in range(n_frames):
        pts = rng.uniform([-30, -30, -2, 0], [30, 30, 2, 1], (n_points, 4)).astype(np.float32)
        pts.tofile(root / "velodyne_points" / "data" / f"{k:010d}.bin")
        points.append(pts)
        for cam in cam_t:
            cv2.imwrite(
                str(root / cam / "data" / f"{k:010d}.png"), np.zeros((375, 1242, 3), np.uint8)
            )
    # OXTS: drive north-east at ~10 m/s while turning; roll/pitch small.
    scale = math.cos(LAT0 * math.pi / 180)
    mx0 = scale * LON0 * math.pi * 6378137.0 / 180
    my0 = scale * 6378137.0 * math.log(math.tan((90 + LAT0) * math.pi / 360))
    poses = []
    for k in range(n_frames):
        east, north, up = 7.0 * k, 7.0 * k + 0.3 * k * k, 0.05 * k
        roll, pitch, yaw = 0.01 * k, -0.02 + 0.005 * k, 0.7 + 0.04 * k
        lon = (mx0 + east) * 180 / (scale * math.pi * 6378137.0)
        lat = 360 / math.pi * math.atan(math.exp((my0 + north) / (scale * 6378137.0))) - 90
        values = [lat, lon, ALT0 + up, roll, pitch, yaw, 5.1, 4.9, 7.07, 0.01, 0.02]
        values += [0.1, -0.2, 9.81, 0.1, -0.2, 9.81, 0.001, 0.002, 0.04, 0.001, 0.002, 0.04]
        values += [0.3, 0.05, 4, 10, 5, 5, 6]
        (root / "oxts" / "data" / f"{k:010d}.txt").write_text(
            " ".join(repr(v) if isinstance(v, float) else str(v) for v in values) + "\n"
        )
        cz, sz, cy, sy, cx, sx = (
            math.cos(yaw),
            math.sin(yaw),
            math.cos(pitch),
            math.sin(pitch),
            math.cos(roll),
            math.sin(roll),
        )
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        pose = np.eye(4)
        pose[:3, :3] = rz @ ry @ rx
        pose[:3, 3] = (east, north, up)
        poses.append(pose)
    return RawTruth(
        root, velo_t, {"CAM2": cam_t["image_02"], "CAM3": cam_t["image_03"]}, oxts_t, poses, points
    )


def test_raw_frames_times_points_images(tmp_path: Path) -> None:
    truth = write_kitti_raw(tmp_path / "2011_09_26")
    log = KittiRawLog(truth.drive)
    assert len(log) == 4 and sorted(log.sensors) == ["CAM2", "CAM3", "VELODYNE"]
    np.testing.assert_array_equal(log.timestamps("VELODYNE"), truth.velo_t_ns)
    np.testing.assert_array_equal(log.timestamps("CAM2"), truth.cam_t_ns["CAM2"])
    np.testing.assert_array_equal(log.timestamps("CAM3"), truth.cam_t_ns["CAM3"])
    assert log.timestamps("VELODYNE").dtype == np.int64
    assert int(log.timestamps("VELODYNE")[0]) == 1317042145_964389445
    frame = log[2]
    assert (
        frame.t_ns == int(truth.velo_t_ns[2])
        and frame.token == "2011_09_26_drive_0001_sync:0000000002"
    )
    assert frame.time_diffs_ns == {"VELODYNE": 0, "CAM2": -1_234_567, "CAM3": -1_234_001}
    cloud = frame.points["VELODYNE"]
    np.testing.assert_array_equal(cloud.xyz, truth.points[2][:, :3])
    np.testing.assert_array_equal(cloud.attrs["intensity"], truth.points[2][:, 3])
    image = frame.images["CAM2"]
    assert image.t_ns == int(truth.cam_t_ns["CAM2"][2]) and image.pixels.shape == (375, 1242, 3)
    cam = log.sensors["CAM2"].camera
    assert cam is not None and (cam.width, cam.height) == (1242, 375) and cam.distortion == "none"
    np.testing.assert_allclose(cam.K, floats(P_RECT[2]).reshape(3, 4)[:, :3])
    calib = log.calibration
    np.testing.assert_allclose(
        calib.extra["D_02"], [-0.3728755, 0.2037299, 0.002219027, 0.001383707, -0.07233722]
    )
    assert calib.image_sizes == {f"CAM{k}": (1242, 375) for k in range(4)}


def test_raw_poses_follow_the_devkit_mercator_convention(tmp_path: Path) -> None:
    truth = write_kitti_raw(tmp_path / "2011_09_26")
    log = KittiRawLog(truth.drive)
    np.testing.assert_array_equal(log.poses.t_ns, truth.oxts_t_ns)
    for k, expected in enumerate(truth.world_from_imu):
        np.testing.assert_allclose(log.poses[k].as_matrix(), expected, atol=1e-6)
    assert log.oxts.shape == (4, 30) and log.oxts[0, 0] == pytest.approx(LAT0, abs=1e-12)
    scale = math.cos(LAT0 * math.pi / 180)
    np.testing.assert_allclose(
        log.mercator_origin_m,
        [
            scale * LON0 * math.pi * 6378137.0 / 180,
            scale * 6378137.0 * math.log(math.tan((90 + LAT0) * math.pi / 360)),
            ALT0,
        ],
    )
    # Each observation carries the pose at its own capture time (interpolated).
    frame = log[1]
    alpha = (truth.velo_t_ns[1] - truth.oxts_t_ns[1]) / (truth.oxts_t_ns[2] - truth.oxts_t_ns[1])
    t_expected = (1 - alpha) * truth.world_from_imu[1][:3, 3] + alpha * truth.world_from_imu[2][
        :3, 3
    ]
    cloud_pose = frame.points["VELODYNE"].world_from_ego
    assert frame.world_from_ego is not None and cloud_pose is not None
    assert cloud_pose.allclose(frame.world_from_ego, atol=0)
    np.testing.assert_allclose(frame.world_from_ego.translation, t_expected, atol=1e-6)
    image_pose = frame.images["CAM2"].world_from_ego
    assert image_pose is not None and image_pose.allclose(
        log.pose_at(int(truth.cam_t_ns["CAM2"][1]))
    )
    # The last frame is 5 ms after the last OXTS fix: extrapolated within the tolerance.
    assert log[3].world_from_ego is not None
    strict = KittiRawLog(truth.drive, pose_tolerance_ns=1_000_000)
    with pytest.raises(SyncError, match=r"oxts poses: time .* outside the trajectory's range"):
        strict[3]


def test_raw_calibration_chain(tmp_path: Path) -> None:
    truth = write_kitti_raw(tmp_path / "2011_09_26")
    log = KittiRawLog(truth.drive)
    velo, cam2 = log.sensors["VELODYNE"], log.sensors["CAM2"]
    # ego = IMU: ego_from_velo inverts back to the file's imu-to-velo exactly.
    np.testing.assert_allclose(
        velo.ego_from_sensor.inverse().as_matrix()[:3], rt34(IMU_R, IMU_T), atol=1e-15
    )
    pts = np.random.default_rng(3).uniform([3, -20, -3], [80, 20, 3], (400, 3))
    expected = project_kitti(
        pts, floats(P_RECT[2]).reshape(3, 4), floats(R_RECT_00).reshape(3, 3), rt34(VELO_R, VELO_T)
    )
    assert cam2.camera is not None
    uv, _, _ = cam2.camera.project(log.calibration.cam_from_velo("CAM2").apply(pts))
    np.testing.assert_allclose(uv, expected, atol=1e-6, rtol=0)
    # Through the ego (IMU) frame: KITTI rotations are orthonormal only to ~1e-6 as printed,
    # so the round trip velo -> imu -> cam differs by a few 1e-5 px at most.
    cam_from_velo = cam2.ego_from_sensor.inverse() @ velo.ego_from_sensor
    uv2, _, _ = cam2.camera.project(cam_from_velo.apply(pts))
    np.testing.assert_allclose(uv2, expected, atol=1e-3, rtol=0)
    # cam_from_ego = the file's cam_from_velo · velo_from_imu, to float64 rounding.
    expected_cam_from_imu = log.calibration.cam_from_velo("CAM2").as_matrix() @ hom(
        rt34(IMU_R, IMU_T)
    )
    np.testing.assert_allclose(
        cam2.ego_from_sensor.inverse().as_matrix(), expected_cam_from_imu, atol=1e-12
    )


def test_raw_open_log_and_date_folder(tmp_path: Path) -> None:
    truth = write_kitti_raw(tmp_path / "2011_09_26", n_frames=2)
    for path in (truth.drive, tmp_path / "2011_09_26"):
        log = open_log(path)
        assert isinstance(log, KittiRawLog) and len(log) == 2 and log.root == truth.drive
    write_kitti_raw(tmp_path / "2011_09_26", n_frames=2, drive="2011_09_26_drive_0002_sync")
    with pytest.raises(
        LogFormatError,
        match=r"2011_09_26: several drives \(2011_09_26_drive_0001_sync, 2011_09_26_drive_0002_sync\)",
    ):
        open_log(tmp_path / "2011_09_26")
    calib = read_kitti_raw_calib(tmp_path / "2011_09_26")
    assert calib.cameras == ("CAM0", "CAM1", "CAM2", "CAM3")


def test_raw_bad_input_is_named(tmp_path: Path) -> None:
    date = tmp_path / "2011_09_26"
    truth = write_kitti_raw(date, n_frames=3)
    drive = truth.drive
    oxts = drive / "oxts" / "data" / "0000000001.txt"
    good = oxts.read_text()
    oxts.write_text(" ".join(good.split()[:29]) + "\n")
    with pytest.raises(
        LogFormatError, match=r"oxts/data/0000000001\.txt: OXTS packet has 29 values, expected 30"
    ):
        KittiRawLog(drive)
    oxts.write_text(good.replace(good.split()[2], "high", 1))
    with pytest.raises(
        LogFormatError, match=r"0000000001\.txt: OXTS packet has a non-numeric value"
    ):
        KittiRawLog(drive)
    oxts.write_text(good)

    stamps = drive / "velodyne_points" / "timestamps.txt"
    good_stamps = stamps.read_text()
    stamps.write_text(good_stamps.replace(":25.", ":25,", 1))
    with pytest.raises(
        LogFormatError,
        match=r"velodyne_points/timestamps\.txt: line 1: '2011-09-26 13:02:25,964389445' is not a KITTI time stamp",
    ):
        KittiRawLog(drive)
    stamps.write_text("".join(good_stamps.splitlines(keepends=True)[:2]))
    with pytest.raises(
        LogFormatError,
        match=r"velodyne_points/timestamps\.txt: 2 time stamps, but 0000000002\.bin needs line 3",
    ):
        KittiRawLog(drive)
    stamps.write_text(good_stamps)

    cam = date / "calib_cam_to_cam.txt"
    good_cam = cam.read_text()
    cam.write_text(
        good_cam.replace("S_rect_02: 1.242000e+03 3.750000e+02", "S_rect_02: 1.242000e+03")
    )
    with pytest.raises(
        CalibrationError,
        match=r"calib_cam_to_cam\.txt: line \d+ 'S_rect_02:' has 1 values, expected 2",
    ):
        KittiRawLog(drive)
    cam.write_text(good_cam.replace("P_rect_03:", "P_rect_13:"))
    with pytest.raises(
        CalibrationError,
        match=r"calib_cam_to_cam\.txt: calibration line 'P_rect_03:' is missing \(needed for .*image_03\)",
    ):
        KittiRawLog(drive)
    cam.write_text(good_cam)
    (date / "calib_imu_to_velo.txt").write_text(
        "calib_time: 25-May-2012 16:47:16\nR: " + IMU_R + "\n"
    )
    with pytest.raises(
        CalibrationError,
        match=r"calib_imu_to_velo\.txt: calibration line 'T:' is missing \(expected 3 values",
    ):
        KittiRawLog(drive)
    (date / "calib_imu_to_velo.txt").unlink()
    with pytest.raises(
        LogFormatError, match=r"calib_imu_to_velo\.txt: raw calibration file is missing"
    ):
        KittiRawLog(drive)
    (date / "calib_imu_to_velo.txt").write_text(f"R: {IMU_R}\nT: {IMU_T}\n")

    log = KittiRawLog(drive)
    (drive / "image_02" / "data" / "0000000001.png").unlink()
    log = KittiRawLog(drive)
    with pytest.raises(
        LogFormatError, match=r"image_02/data/0000000001\.png: image of frame 1 \(CAM2\) is missing"
    ):
        log[1]
    (drive / "velodyne_points" / "data" / "0000000000.bin").write_bytes(b"\x00" * 20)
    with pytest.raises(
        LogFormatError, match=r"0000000000\.bin: velodyne scan of 20 bytes is not a whole number"
    ):
        log[0]
    with pytest.raises(LogFormatError, match=r"no sensor 'CAM0' \(sensors: VELODYNE, CAM2, CAM3\)"):
        log.timestamps("CAM0")
    for p in (drive / "velodyne_points" / "data").iterdir():
        p.rename(p.with_suffix(".txt"))
    with pytest.raises(
        LogFormatError,
        match=r"no velodyne scans \(NNNNNNNNNN\.bin\) \(only \.txt scans: an unsynced '_extract' drive",
    ):
        KittiRawLog(drive)
    with pytest.raises(LogFormatError, match=r"2011_09_26/nothing: not a directory"):
        KittiRawLog(date / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogFormatError, match=r"empty: no KITTI raw drive here"):
        KittiRawLog(tmp_path / "empty")


def test_raw_missing_oxts_is_named(tmp_path: Path) -> None:
    truth = write_kitti_raw(tmp_path / "2011_09_26", n_frames=2)
    for p in (truth.drive / "oxts" / "data").iterdir():
        p.unlink()
    with pytest.raises(LogFormatError, match=r"oxts/data: no OXTS packets"):
        KittiRawLog(truth.drive)
    (truth.drive / "oxts" / "data").rmdir()
    with pytest.raises(LogFormatError, match=r"oxts/data: missing data folder"):
        KittiRawLog(truth.drive)


# ------------------------------------------------------------------------------------------
# Real KITTI object frames
# ------------------------------------------------------------------------------------------

CATEGORIES = {
    0: "Pedestrian",
    1: "Cyclist",
    2: "Car",
    3: "Van",
    4: "Truck",
    5: "Person_sitting",
    6: "Tram",
    7: "Misc",
    -1: "DontCare",
}


def write_real_object_tree(
    split: Path, frame_id: str, info: dict[str, Any], scan: Path, image: Path
) -> None:
    """A KITTI object tree from an mmdet3d info entry: calib/label_2 written in the KITTI text
    formats from the real values; velodyne/image_2 symlinked to the real files (not copied)."""
    for sub in ("velodyne", "image_2", "calib", "label_2"):
        (split / sub).mkdir(parents=True, exist_ok=True)
    os.symlink(scan, split / "velodyne" / f"{frame_id}.bin")
    os.symlink(image, split / "image_2" / f"{frame_id}.png")

    def fmt(m: Any, rows: int, cols: int) -> str:
        return " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=np.float64)[:rows, :cols].ravel())

    images, lidar = info["images"], info["lidar_points"]
    lines = [f"P{k}: {fmt(images[f'CAM{k}']['cam2img'], 3, 4)}" for k in range(4)]
    lines += [
        f"R0_rect: {fmt(images['R0_rect'], 3, 3)}",
        f"Tr_velo_to_cam: {fmt(lidar['Tr_velo_to_cam'], 3, 4)}",
        f"Tr_imu_to_velo: {fmt(lidar['Tr_imu_to_velo'], 3, 4)}",
    ]
    (split / "calib" / f"{frame_id}.txt").write_text("\n".join(lines) + "\n")
    rows = []
    for inst in info["instances"]:
        x, y, z, length, h, w, ry = inst["bbox_3d"]
        x1, y1, x2, y2 = inst["bbox"]
        rows.append(
            f"{CATEGORIES[inst['bbox_label']]} {inst['truncated']:.2f} {inst['occluded']} {inst['alpha']:.2f} "
            f"{x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {h:.2f} {w:.2f} {length:.2f} {x:.2f} {y:.2f} {z:.2f} {ry:.2f}"
        )
    (split / "label_2" / f"{frame_id}.txt").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def kitti_000008(
    realdata: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[KittiObjectLog, dict[str, Any]]:
    src = realdata / MMDET3D / "demo" / "data" / "kitti"
    info = json.loads((src / "000008.derived.json").read_text())["data_list"][0]
    split = tmp_path_factory.mktemp("kitti8") / "training"
    write_real_object_tree(split, "000008", info, src / "000008.bin", src / "000008.png")
    return KittiObjectLog(split.parent), info


@pytest.mark.realdata
def test_real_000008_points_project_into_the_image(
    kitti_000008: tuple[KittiObjectLog, dict[str, Any]], realdata: Path
) -> None:
    log, info = kitti_000008
    frame = log[0]
    cloud = frame.points["VELODYNE"]
    assert len(cloud) == 17238 and cloud.xyz.dtype == np.float32
    cam = frame.sensors["CAM2"]
    assert cam.camera is not None and (cam.camera.width, cam.camera.height) == (1242, 375)
    image = frame.images["CAM2"]
    assert image.pixels.shape == (375, 1242, 3)
    np.testing.assert_array_equal(image.pixels, cv2.imread(image.path)[:, :, ::-1])
    cam_from_velo = cam.ego_from_sensor.inverse() @ cloud.sensor.ego_from_sensor
    uv, depth, inside = cam.camera.project(cam_from_velo.apply(cloud.xyz.astype(np.float64)))
    # All 17,238 land in [0, 1242) x [0, 375) (mmdet3d's crop, pixel corners at integers);
    # with our pixel-centre convention 29 of them sit in the last half pixel at the right and
    # bottom borders.
    assert np.all(depth > 2.5)
    assert np.all((uv[:, 0] >= 0) & (uv[:, 0] < 1242) & (uv[:, 1] >= 0) & (uv[:, 1] < 375))
    assert int(inside.sum()) == 17209
    outside = uv[~inside]
    assert np.all((outside[:, 0] >= 1241.5) | (outside[:, 1] >= 374.5))
    # P2 reproduced: the file's P2 and mmdet3d's lidar2img = P2 · R0_rect · Tr_velo_to_cam.
    p2 = np.asarray(info["images"]["CAM2"]["cam2img"])[:3]
    np.testing.assert_allclose(log.calibration(0).projection("CAM2"), p2, atol=1e-12)
    expected = project_kitti(
        cloud.xyz,
        p2,
        np.asarray(info["images"]["R0_rect"])[:3, :3],
        np.asarray(info["lidar_points"]["Tr_velo_to_cam"])[:3],
    )
    np.testing.assert_allclose(uv, expected, atol=1e-6, rtol=0)
    lidar2img = np.asarray(info["images"]["CAM2"]["lidar2img"])
    ph = np.hstack([cloud.xyz.astype(np.float64), np.ones((len(cloud), 1))]) @ lidar2img.T
    np.testing.assert_allclose(
        uv, ph[:, :2] / ph[:, 2:3], atol=1e-4
    )  # lidar2img is float32-rounded
    p2_txt = np.loadtxt(realdata / MMDET3D / "demo" / "data" / "kitti" / "000008.txt").reshape(4, 4)
    np.testing.assert_allclose(cam.camera.K, p2_txt[:3, :3])


@pytest.mark.realdata
def test_real_000008_boxes(kitti_000008: tuple[KittiObjectLog, dict[str, Any]]) -> None:
    log, info = kitti_000008
    frame = log[0]
    boxes = frame.boxes3d
    assert boxes is not None and len(boxes) == 6 and set(boxes.label) == {"Car"}
    assert frame.boxes2d["CAM2"].label.tolist().count("DontCare") == 4
    cloud = frame.points["VELODYNE"]
    counts = points_in_boxes(cloud.xyz, boxes)
    reference = np.array([inst["num_lidar_pts"] for inst in info["instances"][:6]])
    # Many points in every box, and close to mmdet3d's num_lidar_pts (1325 ... 55).
    np.testing.assert_array_equal(counts, [1424, 1940, 878, 668, 53, 164])
    assert np.all(np.abs(counts - reference) <= 0.1 * reference + 5)
    cam = frame.sensors["CAM2"]
    assert cam.camera is not None
    cam_from_velo = cam.ego_from_sensor.inverse() @ cloud.sensor.ego_from_sensor
    # Box centres (rectified (x, y - h/2, z)) project onto mmdet3d's center_2d.
    uv_c, depth_c, _ = cam.camera.project(cam_from_velo.apply(boxes.center))
    center_2d = np.array([inst["center_2d"] for inst in info["instances"][:6]])
    np.testing.assert_allclose(uv_c, center_2d, atol=1e-3)
    np.testing.assert_allclose(
        depth_c, [inst["depth"] for inst in info["instances"][:6]], atol=1e-5
    )
    # Projected 3D corners (clipped to the image) enclose the 2D boxes, to label precision.
    uv_k, _, _ = cam.camera.project(cam_from_velo.apply(boxes.corners().reshape(-1, 3)))
    uv_k = uv_k.reshape(-1, 8, 2)
    hull = np.stack(
        [uv_k[:, :, 0].min(1), uv_k[:, :, 1].min(1), uv_k[:, :, 0].max(1), uv_k[:, :, 1].max(1)], 1
    )
    hull = np.clip(hull, -0.5, [1241.5, 374.5, 1241.5, 374.5])
    xyxy = frame.boxes2d["CAM2"].xyxy[:6]
    tol = 2.5
    assert np.all(hull[:, :2] <= xyxy[:, :2] + tol) and np.all(hull[:, 2:] >= xyxy[:, 2:] - tol)
    inter = np.clip(
        np.minimum(hull[:, 2:], xyxy[:, 2:]) - np.maximum(hull[:, :2], xyxy[:, :2]), 0, None
    ).prod(1)
    union = (hull[:, 2:] - hull[:, :2]).prod(1) + (xyxy[:, 2:] - xyxy[:, :2]).prod(1) - inter
    assert np.all(inter / union > 0.9)
    # Heading: yaw in the Velodyne frame is -ry - π/2 (to the calibration's small tilt).
    ry = np.array([inst["bbox_3d"][6] for inst in info["instances"][:6]])
    np.testing.assert_allclose(
        np.remainder(boxes.yaw - (-ry - np.pi / 2) + np.pi, 2 * np.pi) - np.pi, 0, atol=0.01
    )


def points_in_boxes(points: np.ndarray, boxes: Boxes3D) -> np.ndarray:
    local = np.einsum(
        "nji,mnj->mni",
        boxes.rotation_matrices(),
        points[:, None, :].astype(np.float64) - boxes.center[None],
    )
    return np.all(np.abs(local) <= boxes.size[None] / 2.0, axis=2).sum(axis=0)


@pytest.mark.realdata
def test_real_truncated_000000_fixture(realdata: Path, tmp_path: Path) -> None:
    src = realdata / MMDET3D / "tests" / "data" / "kitti"
    info = json.loads((src / "kitti_infos_train.derived.json").read_text())["data_list"][0]
    split = tmp_path / "training"
    write_real_object_tree(
        split,
        "000000",
        info,
        src / "training/velodyne/000000.bin",
        src / "training/image_2/000000.png",
    )
    log = open_log(tmp_path)
    assert isinstance(log, KittiObjectLog) and log.frame_ids == ["000000"]
    frame = log[0]
    cloud = frame.points["VELODYNE"]
    assert len(cloud) == 800
    assert float(cloud.xyz[:, 0].min()) > 11.5 and float(cloud.xyz[:, 0].max()) < 72.1
    image = frame.images["CAM2"]
    assert (
        image.pixels.shape == (370, 1224, 3) and image.pixels.dtype == np.uint8
    )  # palette expanded
    cam = frame.sensors["CAM2"]
    assert cam.camera is not None
    cam_from_velo = cam.ego_from_sensor.inverse() @ cloud.sensor.ego_from_sensor
    uv, _, inside = cam.camera.project(cam_from_velo.apply(cloud.xyz.astype(np.float64)))
    lidar2img = np.asarray(
        json.loads((src / "training/calib/000000.derived.json").read_text())["lidar2img"]
    )
    ph = np.hstack([cloud.xyz.astype(np.float64), np.ones((800, 1))]) @ lidar2img.T
    np.testing.assert_allclose(uv, ph[:, :2] / ph[:, 2:3], atol=1e-4)
    assert int(inside.sum()) == EXPECTED_000000_IN_IMAGE
    boxes = frame.boxes3d
    assert boxes is not None and boxes.label.tolist() == ["Pedestrian"]
    np.testing.assert_allclose(boxes.size, [[1.2, 0.48, 1.89]])
    uv_c, depth_c, _ = cam.camera.project(cam_from_velo.apply(boxes.center))
    np.testing.assert_allclose(uv_c[0], info["instances"][0]["center_2d"], atol=1e-3)
    assert depth_c[0] == pytest.approx(info["instances"][0]["depth"], abs=1e-5)


EXPECTED_000000_IN_IMAGE = 798


def test_calibration_override_for_object_and_raw_logs(tmp_path: Path) -> None:
    """``calibration=`` (a ``calibration.json`` or sensor → Transform) replaces the extrinsic the
    KITTI calibration files give, in every frame's sensors."""
    from avfusion.io.calibration_file import calibration_record, write_calibration

    write_object_tree(tmp_path / "kitti")
    base = KittiObjectLog(tmp_path / "kitti")
    moved = base.sensors["CAM2"].ego_from_sensor @ Transform.from_rotvec([0, 0, 0.02], [0.1, 0, 0])
    path = write_calibration({"CAM2": calibration_record("CAM2", moved)}, tmp_path / "calib")
    log = open_log(tmp_path / "kitti", calibration=path)
    # KITTI's text rotations are orthonormal to ~5e-8 only; the file's quaternion is exact.
    for i in range(len(log)):
        assert log.frame_sensors(i)["CAM2"].ego_from_sensor.allclose(moved, atol=1e-7)
        assert log[i].images["CAM2"].sensor.ego_from_sensor.allclose(moved, atol=1e-7)
        assert (
            log[i]
            .sensors["VELODYNE"]
            .ego_from_sensor.allclose(base[i].sensors["VELODYNE"].ego_from_sensor, atol=0)
        )
    truth = write_kitti_raw(tmp_path / "2011_09_26")
    raw = KittiRawLog(truth.drive)
    lidar = raw.sensors["VELODYNE"].ego_from_sensor @ Transform.from_rotvec([0.01, 0, 0])
    over = KittiRawLog(truth.drive, calibration={"VELODYNE": lidar})
    assert over.sensors["VELODYNE"].ego_from_sensor.allclose(lidar, atol=1e-12)
    assert over[0].points["VELODYNE"].sensor.ego_from_sensor.allclose(lidar, atol=1e-12)
    with pytest.raises(CalibrationError, match="names sensors the log does not have: CAM7"):
        KittiRawLog(truth.drive, calibration={"CAM7": lidar})
