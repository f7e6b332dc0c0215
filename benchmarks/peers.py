"""Reference implementations of peers' maths, written from their documented behaviour.

The benchmarks time these against avfusion on the same input, and the tests use them as the
outside reference that avfusion must match. Nothing here is imported by the library.
"""

from __future__ import annotations

import copy
import json
import os.path as osp
from collections.abc import Mapping
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
from pyquaternion import Quaternion

DEVKIT_TABLES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)


class DevkitNuScenes:
    """nuscenes-devkit ``NuScenes.__init__`` (v1.0): ``json.load`` of the 13 tables, then
    ``__make_reverse_index__``: a ``{token: row index}`` dict per table, ``category_name`` on
    every sample_annotation, ``sensor_modality`` and ``channel`` on every sample_data,
    ``data`` (channel → keyframe token) and ``anns`` on every sample, ``map_token`` on every
    log. Left out, as they touch no table: the colormap, ``MapMask`` objects (lazy: they only
    check that the map file exists), the lidarseg/panoptic tables (absent here) and the
    ``NuScenesExplorer``.

    ``tables`` instead of ``dataroot`` builds it from rows already in memory (deep-copied, as
    the devkit decorates its rows).
    """

    table_names = DEVKIT_TABLES

    def __init__(
        self,
        version: str,
        dataroot: str | Path,
        tables: Mapping[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.version = version
        self.dataroot = str(dataroot)
        for name in self.table_names:
            rows = copy.deepcopy(tables[name]) if tables is not None else self._load_table(name)
            setattr(self, name, rows)
        self._make_reverse_index()

    @property
    def table_root(self) -> str:
        return osp.join(self.dataroot, self.version)

    def _load_table(self, table_name: str) -> list[dict[str, Any]]:
        with open(osp.join(self.table_root, f"{table_name}.json")) as f:
            table: list[dict[str, Any]] = json.load(f)
        return table

    def _make_reverse_index(self) -> None:
        self._token2ind: dict[str, dict[str, int]] = {}
        for table in self.table_names:
            self._token2ind[table] = {}
            for ind, member in enumerate(getattr(self, table)):
                self._token2ind[table][member["token"]] = ind
        for record in self.sample_annotation:
            inst = self.get("instance", record["instance_token"])
            record["category_name"] = self.get("category", inst["category_token"])["name"]
        for record in self.sample_data:
            cs_record = self.get("calibrated_sensor", record["calibrated_sensor_token"])
            sensor_record = self.get("sensor", cs_record["sensor_token"])
            record["sensor_modality"] = sensor_record["modality"]
            record["channel"] = sensor_record["channel"]
        for record in self.sample:
            record["data"] = {}
            record["anns"] = []
        for record in self.sample_data:
            if record["is_key_frame"]:
                sample_record = self.get("sample", record["sample_token"])
                sample_record["data"][record["channel"]] = record["token"]
        for ann_record in self.sample_annotation:
            sample_record = self.get("sample", ann_record["sample_token"])
            sample_record["anns"].append(ann_record["token"])
        if self.map and "log_tokens" not in self.map[0]:
            raise ValueError("Error: log_tokens not in map table.")
        log_to_map = {}
        for map_record in self.map:
            for log_token in map_record["log_tokens"]:
                log_to_map[log_token] = map_record["token"]
        for log_record in self.log:
            log_record["map_token"] = log_to_map[log_record["token"]]

    def get(self, table_name: str, token: str) -> dict[str, Any]:
        row: dict[str, Any] = getattr(self, table_name)[self._token2ind[table_name][token]]
        return row


def _transform_matrix(
    translation: list[float], rotation: Quaternion, inverse: bool = False
) -> np.ndarray:
    """nuscenes-devkit geometry_utils.transform_matrix."""
    tm = np.eye(4)
    if inverse:
        rot_inv = rotation.rotation_matrix.T
        tm[:3, :3] = rot_inv
        tm[:3, 3] = rot_inv.dot(-np.array(translation))
    else:
        tm[:3, :3] = rotation.rotation_matrix
        tm[:3, 3] = np.array(translation)
    return tm


def devkit_multisweep(
    root: Path,
    tables: Mapping[str, list[dict[str, Any]]] | DevkitNuScenes,
    sample_token: str,
    chan: str,
    ref_chan: str,
    nsweeps: int,
    min_distance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """LidarPointCloud.from_file_multisweep, as the devkit writes it (data_classes.py).

    ``tables`` is a ``DevkitNuScenes`` (the devkit's ``nusc``, built once) or the raw tables
    (a ``DevkitNuScenes`` is then built from them first). Per sweep: ``np.fromfile`` of the
    ``.pcd.bin`` (N × 5 float32, first 4 rows kept), ``remove_close``, the four 4×4 matrices
    chained with ``reduce(np.dot, ...)``, a homogeneous transform of the float32 points, and
    ``np.hstack`` onto the growing aggregate and time vector; then on to ``prev``.
    """
    nusc = tables if isinstance(tables, DevkitNuScenes) else DevkitNuScenes("", str(root), tables)
    sample_rec = nusc.get("sample", sample_token)
    points = np.zeros((4, 0), dtype=np.float32)
    all_times = np.zeros((1, 0))
    ref_sd_rec = nusc.get("sample_data", sample_rec["data"][ref_chan])
    ref_pose_rec = nusc.get("ego_pose", ref_sd_rec["ego_pose_token"])
    ref_cs_rec = nusc.get("calibrated_sensor", ref_sd_rec["calibrated_sensor_token"])
    ref_time = 1e-6 * ref_sd_rec["timestamp"]
    ref_from_car = _transform_matrix(
        ref_cs_rec["translation"], Quaternion(ref_cs_rec["rotation"]), inverse=True
    )
    car_from_global = _transform_matrix(
        ref_pose_rec["translation"], Quaternion(ref_pose_rec["rotation"]), inverse=True
    )
    current = nusc.get("sample_data", sample_rec["data"][chan])
    for _ in range(nsweeps):
        scan = np.fromfile(osp.join(str(root), current["filename"]), dtype=np.float32)
        pc = scan.reshape((-1, 5))[:, :4].T
        x_filt = np.abs(pc[0, :]) < min_distance
        y_filt = np.abs(pc[1, :]) < min_distance
        pc = pc[:, np.logical_not(np.logical_and(x_filt, y_filt))]
        pose = nusc.get("ego_pose", current["ego_pose_token"])
        global_from_car = _transform_matrix(pose["translation"], Quaternion(pose["rotation"]))
        cs = nusc.get("calibrated_sensor", current["calibrated_sensor_token"])
        car_from_current = _transform_matrix(cs["translation"], Quaternion(cs["rotation"]))
        trans = reduce(np.dot, [ref_from_car, car_from_global, global_from_car, car_from_current])
        pc[:3, :] = trans.dot(np.vstack((pc[:3, :], np.ones(pc.shape[1]))))[:3, :]
        time_lag = ref_time - 1e-6 * current["timestamp"]
        all_times = np.hstack((all_times, time_lag * np.ones((1, pc.shape[1]))))
        points = np.hstack((points, pc))
        if current["prev"] == "":
            break
        current = nusc.get("sample_data", current["prev"])
    return points, all_times


# --------------------------------------------------------------------------------------------
# Projection (bench_projection.py): NuScenesExplorer.map_pointcloud_to_image
# --------------------------------------------------------------------------------------------


class _DevkitPointCloud:
    """The two ``PointCloud`` methods the devkit's projection uses (data_classes.py), on a
    (4, N) float32 array like ``LidarPointCloud.points``."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = points

    def translate(self, x: np.ndarray) -> None:
        for i in range(3):
            self.points[i, :] = self.points[i, :] + x[i]

    def rotate(self, rot_matrix: np.ndarray) -> None:
        self.points[:3, :] = np.dot(rot_matrix, self.points[:3, :])


def devkit_view_points(points: np.ndarray, view: np.ndarray, normalize: bool) -> np.ndarray:
    """nuscenes-devkit geometry_utils.view_points."""
    viewpad = np.eye(4)
    viewpad[: view.shape[0], : view.shape[1]] = view
    nbr_points = points.shape[1]
    points = np.concatenate((points, np.ones((1, nbr_points))))
    points = np.dot(viewpad, points)
    points = points[:3, :]
    if normalize:
        points = points / points[2:3, :].repeat(3, 0).reshape(3, nbr_points)
    return points


def devkit_map_pointcloud_to_image(
    points: np.ndarray,
    pointsensor_cs: Mapping[str, Any],
    pointsensor_pose: Mapping[str, Any],
    cam_cs: Mapping[str, Any],
    cam_pose: Mapping[str, Any],
    im_size: tuple[int, int],
    min_dist: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NuScenesExplorer.map_pointcloud_to_image (nuscenes.py, depth colouring), step by step.

    ``points`` is the cloud as ``LidarPointCloud.points`` holds it ((4, N) float32: x, y, z,
    intensity, sensor frame); it is copied first, as the devkit loads a fresh cloud per call.
    The records are the ``calibrated_sensor`` / ``ego_pose`` rows (``translation``, ``rotation``
    as w, x, y, z; ``camera_intrinsic``); ``im_size`` = PIL's ``im.size`` (width, height).
    Four steps: sensor → ego at the sweep time → global → ego at the image time → camera, each
    a ``rotate`` and a ``translate`` of the whole cloud; then ``view_points`` and the mask
    (depth > ``min_dist``, 1 px margin). No occlusion handling. Returns the devkit's
    ``(points (3, M), coloring = depths (M,))`` and, for the benchmark check, the mask (N,).
    """
    pc = _DevkitPointCloud(points.copy())
    pc.rotate(Quaternion(pointsensor_cs["rotation"]).rotation_matrix)
    pc.translate(np.array(pointsensor_cs["translation"]))
    pc.rotate(Quaternion(pointsensor_pose["rotation"]).rotation_matrix)
    pc.translate(np.array(pointsensor_pose["translation"]))
    pc.translate(-np.array(cam_pose["translation"]))
    pc.rotate(Quaternion(cam_pose["rotation"]).rotation_matrix.T)
    pc.translate(-np.array(cam_cs["translation"]))
    pc.rotate(Quaternion(cam_cs["rotation"]).rotation_matrix.T)
    depths = pc.points[2, :]
    coloring = depths
    pts = devkit_view_points(pc.points[:3, :], np.array(cam_cs["camera_intrinsic"]), normalize=True)
    mask = np.ones(depths.shape[0], dtype=bool)
    mask = np.logical_and(mask, depths > min_dist)
    mask = np.logical_and(mask, pts[0, :] > 1)
    mask = np.logical_and(mask, pts[0, :] < im_size[0] - 1)
    mask = np.logical_and(mask, pts[1, :] > 1)
    mask = np.logical_and(mask, pts[1, :] < im_size[1] - 1)
    pts = pts[:, mask]
    coloring = coloring[mask]
    return pts, coloring, mask


# --------------------------------------------------------------------------------------------
# Points in boxes (bench_occupancy.py): nuscenes-devkit geometry_utils.points_in_box
# --------------------------------------------------------------------------------------------


class DevkitBox:
    """The parts of the devkit's ``Box`` that ``points_in_box`` uses: ``center``, ``wlh``
    (width, length, height: the devkit's order) and ``orientation`` (a pyquaternion)."""

    def __init__(self, center: np.ndarray, wlh: np.ndarray, orientation: Quaternion) -> None:
        self.center = np.asarray(center, dtype=float)
        self.wlh = np.asarray(wlh, dtype=float)
        self.orientation = orientation

    def corners(self, wlh_factor: float = 1.0) -> np.ndarray:
        """data_classes.Box.corners: (3, 8), the four at +x then the four at -x."""
        w, length, h = self.wlh * wlh_factor
        x_corners = length / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1])
        y_corners = w / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
        z_corners = h / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
        corners = np.vstack((x_corners, y_corners, z_corners))
        corners = np.dot(self.orientation.rotation_matrix, corners)
        x, y, z = self.center
        corners[0, :] = corners[0, :] + x
        corners[1, :] = corners[1, :] + y
        corners[2, :] = corners[2, :] + z
        return corners


def devkit_points_in_box(box: DevkitBox, points: np.ndarray, wlh_factor: float = 1.0) -> np.ndarray:
    """geometry_utils.points_in_box: ``points`` (3, N); the box's edge vectors i, j, k from
    corner 0 and dot-product range tests (closed). Returns the (N,) bool mask."""
    corners = box.corners(wlh_factor=wlh_factor)
    p1 = corners[:, 0]
    p_x = corners[:, 4]
    p_y = corners[:, 1]
    p_z = corners[:, 3]
    i = p_x - p1
    j = p_y - p1
    k = p_z - p1
    v = points - p1.reshape((-1, 1))
    iv = np.dot(i, v)
    jv = np.dot(j, v)
    kv = np.dot(k, v)
    mask_x = np.logical_and(iv >= 0, iv <= np.dot(i, i))
    mask_y = np.logical_and(jv >= 0, jv <= np.dot(j, j))
    mask_z = np.logical_and(kv >= 0, kv <= np.dot(k, k))
    mask: np.ndarray = np.logical_and(np.logical_and(mask_x, mask_y), mask_z)
    return mask
