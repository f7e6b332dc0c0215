"""Shared helpers of the viz tests: golden-image comparison and a tiny hand-made log."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from avfusion import (
    Boxes3D,
    CameraModel,
    Frame,
    Image,
    Log,
    PointCloud,
    Sensor,
    SyncError,
    Trajectory,
    Transform,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO = Path(__file__).resolve().parents[2]
MAX_GOLDEN_BYTES = 100_000


def assert_golden(img: np.ndarray, name: str) -> None:
    """Compare ``img`` (RGB uint8) with ``golden/<name>.png``: mean absolute difference <= 2 and
    at most 1 % of pixels differing by more than 40 in some channel. With
    ``AVFUSION_UPDATE_GOLDEN=1`` the golden is (re)written instead."""
    import cv2

    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    path = GOLDEN / f"{name}.png"
    if os.environ.get("AVFUSION_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        ok, buf = cv2.imencode(".png", img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok and buf.size < MAX_GOLDEN_BYTES, f"golden {name} is {buf.size} bytes"
        path.write_bytes(buf.tobytes())
        return
    if not path.is_file():
        pytest.fail(f"golden image {path} is missing: run with AVFUSION_UPDATE_GOLDEN=1")
    ref = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    assert ref.shape == img.shape, f"{name}: shape {img.shape} != golden {ref.shape}"
    diff = np.abs(img.astype(np.int16) - ref.astype(np.int16))
    mad = float(diff.mean())
    far = float((diff.max(axis=2) > 40).mean())
    assert mad <= 2.0 and far <= 0.01, (
        f"{name}: mean abs diff {mad:.2f}, {100 * far:.2f}% pixels > 40"
    )


# ------------------------------------------------------------------------------------------
# A tiny log: one frame, a pinhole camera looking along ego +x, a LiDAR, a radar, boxes.
# ------------------------------------------------------------------------------------------

EGO_FROM_CAM = Transform(
    np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.zeros(3)
)
CAMERA = CameraModel.pinhole(200.0, 200.0, 159.5, 119.5, 320, 240)
T_NS = 1_000_000_000
TOKEN = "sample0"


def camera_from_ego_points(p_ego: np.ndarray) -> np.ndarray:
    return np.asarray(EGO_FROM_CAM.inverse().apply(p_ego))


class TinyLog(Log):
    """One keyframe built from arrays (no files)."""

    def __init__(
        self,
        lidar_ego: np.ndarray,
        boxes: Boxes3D | None = None,
        radar: tuple[np.ndarray, np.ndarray] | None = None,
        pixels: np.ndarray | None = None,
    ) -> None:
        ident = Transform.identity()
        cam = Sensor("CAM_FRONT", "camera", EGO_FROM_CAM, CAMERA)
        lid = Sensor("LIDAR_TOP", "lidar", ident)
        rad = Sensor("RADAR_FRONT", "radar", ident)
        self._sensors = {s.name: s for s in (cam, lid, rad)}
        px = np.full((240, 320, 3), 90, np.uint8) if pixels is None else pixels
        images = {"CAM_FRONT": Image(cam, T_NS, ident, px, token="img0")}
        points = {
            "LIDAR_TOP": PointCloud(
                np.ascontiguousarray(lidar_ego, dtype=np.float64), lid, T_NS, {}, ident
            )
        }
        if radar is not None:
            xyz, v = radar
            points["RADAR_FRONT"] = PointCloud(
                np.ascontiguousarray(xyz, dtype=np.float64),
                rad,
                T_NS,
                {"vx_comp": v[:, 0].copy(), "vy_comp": v[:, 1].copy()},
                ident,
            )
        self._frame = Frame(
            T_NS, ident, self._sensors, points, images, boxes, {}, token=TOKEN, index=0
        )

    @property
    def sensors(self) -> Mapping[str, Sensor]:
        return self._sensors

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Frame:
        self._check_index(index)
        return self._frame

    def timestamps(self, sensor: str) -> np.ndarray:
        return np.array([T_NS], dtype=np.int64)

    @property
    def poses(self) -> Trajectory:
        raise SyncError("TinyLog has no pose track")


def box(
    center, size, yaw, label="vehicle.car", track="track0001", token="ann0", frame="world"
) -> Boxes3D:
    """Boxes3D from lists (one box per entry)."""
    center = np.asarray(center, dtype=np.float64).reshape(-1, 3)
    n = center.shape[0]
    yaw = np.asarray(yaw, dtype=np.float64).reshape(n)
    q = np.stack([np.cos(yaw / 2), np.zeros(n), np.zeros(n), np.sin(yaw / 2)], axis=1)
    as_list = lambda v: [v] * n if isinstance(v, str) else list(v)  # noqa: E731
    return Boxes3D(
        center,
        np.asarray(size, dtype=np.float64).reshape(n, 3),
        q,
        np.array(as_list(label)),
        np.array(as_list(track)),
        frame,
        token=np.array(as_list(token)),
    )


def sample_root() -> Path:
    """The sample nuScenes dataroot (sample_data/nuscenes), generated when missing."""
    from avfusion.synth import ensure_sample_data

    return ensure_sample_data(REPO / "sample_data")
