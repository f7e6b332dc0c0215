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
