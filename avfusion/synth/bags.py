"""The recording as ROS bags: ROS2 (MCAP storage) and ROS1, written with ``rosbags``.

``write_bags(nuscenes_root, out_dir)`` converts a log written by ``generate`` (its files and
tables, so the bags hold exactly the same data) into ``out_dir/rosbag2/`` (MCAP) and
``out_dir/recording.bag`` (ROS1), plus the ``out_dir/labels.json`` sidecar. Topics:

================================  ==============================  =======================================
topic                             type                            content
================================  ==============================  =======================================
``/LIDAR_TOP/points``             sensor_msgs/PointCloud2         x, y, z, intensity (float32), ring
                                                                  (uint16), time (float32, s relative to
                                                                  the header stamp; Velodyne convention)
``/RADAR_FRONT/points``           sensor_msgs/PointCloud2         the 18 nuScenes radar fields, packed
``/CAM_*/image_raw/compressed``   sensor_msgs/CompressedImage     the JPEG bytes
``/THERMAL_FRONT/image_raw``      sensor_msgs/Image               mono16 radiometric counts (K = 0.01·counts)
``/<channel>/camera_info``        sensor_msgs/CameraInfo          K, D (plumb_bob = OpenCV k1 k2 p1 p2 k3), P
``/tf_static``                    tf2_msgs/TFMessage              base_link → each sensor (the believed
                                                                  calibration, as in calibrated_sensor)
``/tf``                           tf2_msgs/TFMessage              map → base_link at 200 Hz (ego clock): every
                                                                  sample of the truth trajectory, so slerp+lerp
                                                                  between them reproduces the ego_pose rows
================================  ==============================  =======================================

Header stamps and record times are the sample_data timestamps (each sensor's own clock), as in
the nuScenes tables; ``frame_id`` is the channel name. ``labels.json``: ``{"frame": "map",
"samples": [{"timestamp_ns", "boxes": [{"track_id", "instance_token", "category", "center",
"size_lwh", "rotation_wxyz", "num_lidar_pts"}], "boxes2d": [{"channel", "timestamp_ns",
"instance_token", "category", "bbox"}]}]}``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from avfusion.errors import ConfigError, LogFormatError

__all__ = ["BagPaths", "write_bags"]

logger = logging.getLogger(__name__)

_POINTFIELD = {np.dtype(np.int8): 1, np.dtype(np.uint8): 2, np.dtype(np.int16): 3, np.dtype(np.uint16): 4,
               np.dtype(np.int32): 5, np.dtype(np.uint32): 6, np.dtype(np.float32): 7, np.dtype(np.float64): 8}  # fmt: skip
#: /tf rate: the truth trajectory's own rate (``world.EGO_POSE_RATE_HZ``), so a reader that
#: interpolates /tf gets exactly the poses the nuScenes ``ego_pose`` rows hold.
TF_RATE_HZ = 200


@dataclass(frozen=True)
class BagPaths:
    """Where ``write_bags`` put things."""

    ros2_dir: Path
    ros1_bag: Path
    labels: Path


class _Msgs:
    """Message construction for one typestore (ROS1 and ROS2 differ in Header and CameraInfo)."""

    def __init__(self, ros1: bool) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.ros1 = ros1
        self.ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
        if "tf2_msgs/msg/TFMessage" not in self.ts.types:  # the ROS1 store lacks tf2_msgs
            from rosbags.typesys import get_types_from_msg

            self.ts.register(
                get_types_from_msg(
                    "geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"
                )
            )
        self.t = self.ts.types
        self.seq = 0

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        if self.ros1:
            return bytes(self.ts.serialize_ros1(msg, msgtype))
        return bytes(self.ts.serialize_cdr(msg, msgtype))

    def header(self, t_ns: int, frame: str) -> Any:
        stamp = self.t["builtin_interfaces/msg/Time"](
            sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000
        )
        if self.ros1:
            self.seq += 1
            return self.t["std_msgs/msg/Header"](seq=self.seq, stamp=stamp, frame_id=frame)
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)

    def cloud(self, t_ns: int, frame: str, columns: dict[str, npt.NDArray[Any]]) -> Any:
        dtype = np.dtype([(name, arr.dtype) for name, arr in columns.items()])
        n = len(next(iter(columns.values())))
        rec = np.empty(n, dtype=dtype)
        for name, arr in columns.items():
            rec[name] = arr
        offsets = {name: int(dtype.fields[name][1]) for name in columns} if dtype.fields else {}
        fields = [
            self.t["sensor_msgs/msg/PointField"](
                name=name, offset=offsets[name], datatype=_POINTFIELD[arr.dtype], count=1
            )
            for name, arr in columns.items()
        ]
        return self.t["sensor_msgs/msg/PointCloud2"](
            header=self.header(t_ns, frame), height=1, width=n, fields=fields, is_bigendian=False,
            point_step=dtype.itemsize, row_step=dtype.itemsize * n, data=np.frombuffer(rec.tobytes(), dtype=np.uint8),
            is_dense=True,
        )  # fmt: skip

    def camera_info(
        self, t_ns: int, frame: str, k: list[list[float]], d: list[float], w: int, h: int
    ) -> Any:
        kk = np.asarray(k, dtype=np.float64)
        p = np.zeros((3, 4))
        p[:, :3] = kk
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        dd = np.asarray(d[:5], dtype=np.float64)
        names = ("D", "K", "R", "P") if self.ros1 else ("d", "k", "r", "p")
        values = dict(zip(names, (dd, kk.ravel(), np.eye(3).ravel(), p.ravel()), strict=True))
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(t_ns, frame), height=h, width=w, distortion_model="plumb_bob",
            binning_x=0, binning_y=0, roi=roi, **values,
        )  # fmt: skip

    def tf_message(
        self,
        t_ns: int,
        parent: str,
        child: str,
        translation: list[float],
        rotation_wxyz: list[float],
    ) -> Any:
        return self.t["tf2_msgs/msg/TFMessage"](
            transforms=[self.tf(t_ns, parent, child, translation, rotation_wxyz)]
        )

    def tf(
        self,
        t_ns: int,
        parent: str,
        child: str,
        translation: list[float],
        rotation_wxyz: list[float],
    ) -> Any:
        vec = self.t["geometry_msgs/msg/Vector3"](
            x=translation[0], y=translation[1], z=translation[2]
        )
        w, x, y, z = rotation_wxyz
        quat = self.t["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)
        return self.t["geometry_msgs/msg/TransformStamped"](
            header=self.header(t_ns, parent),
            child_frame_id=child,
            transform=self.t["geometry_msgs/msg/Transform"](translation=vec, rotation=quat),
        )


def _load(root: Path, name: str) -> list[dict[str, Any]]:
    path = root / "v1.0-mini" / f"{name}.json"
    if not path.is_file():
        raise LogFormatError(
            f"write_bags: {path} is missing; expected a log written by avfusion.synth.generate"
        )
    rows: list[dict[str, Any]] = json.loads(path.read_text())
    return rows


def _events(root: Path, m: _Msgs) -> Iterator[tuple[int, str, str, Callable[[], Any]]]:
    """(t_ns, topic, msgtype, make_message) for every message, not yet sorted."""
    sensors = {s["token"]: s for s in _load(root, "sensor")}
    cs = {c["token"]: c for c in _load(root, "calibrated_sensor")}
    ext = {e["calibrated_sensor_token"]: e for e in _load(root, "avfusion_sensor")}
    sd = _load(root, "sample_data")
    t_first = min(r["timestamp"] for r in sd) * 1000
    static = []
    for c in cs.values():
        ch = sensors[c["sensor_token"]]["channel"]
        static.append((ch, c["translation"], c["rotation"]))
    yield (
        t_first,
        "/tf_static",
        "tf2_msgs/msg/TFMessage",
        lambda: m.t["tf2_msgs/msg/TFMessage"](
            transforms=[m.tf(t_first, "base_link", ch, tr, rot) for ch, tr, rot in static]
        ),
    )
    traj = np.load(io.BytesIO((root / "truth" / "ego_trajectory.npz").read_bytes()))
    t_last = max(r["timestamp"] for r in sd) * 1000
    step = max(1, round(1e9 / TF_RATE_HZ / float(np.median(np.diff(traj["t_ns"])))))
    for i in range(0, len(traj["t_ns"]), step):
        t = int(traj["t_ns"][i])
        if t_first - 50_000_000 <= t <= t_last + 50_000_000:
            tr, q = traj["translations"][i].tolist(), traj["quaternions"][i].tolist()
            yield (
                t,
                "/tf",
                "tf2_msgs/msg/TFMessage",
                partial(m.tf_message, t, "map", "base_link", tr, q),
            )
    for r in sd:
        c = cs[r["calibrated_sensor_token"]]
        ch = sensors[c["sensor_token"]]["channel"]
        e = ext[c["token"]]
        t = int(r["timestamp"]) * 1000
        path = root / r["filename"]
        if e["modality"] == "lidar":

            def lidar(path: Path = path, t: int = t, ch: str = ch) -> Any:
                pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
                times = np.fromfile(str(path) + ".time.bin", dtype=np.int32)
                cols: dict[str, npt.NDArray[Any]] = {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3],
                        "ring": pts[:, 4].astype(np.uint16), "time": (times.astype(np.float64) / 1e9).astype(np.float32)}  # fmt: skip
                return m.cloud(t, ch, cols)

            yield t, f"/{ch}/points", "sensor_msgs/msg/PointCloud2", lidar
        elif e["modality"] == "radar":

            def radar(path: Path = path, t: int = t, ch: str = ch) -> Any:
                from avfusion.io.pcd import read_pcd

                cloud = read_pcd(path)
                cols: dict[str, npt.NDArray[Any]] = {
                    "x": cloud.xyz[:, 0].astype(np.float32),
                    "y": cloud.xyz[:, 1].astype(np.float32),
                    "z": cloud.xyz[:, 2].astype(np.float32),
                }
                cols.update(
                    {k: np.ascontiguousarray(v) for k, v in cloud.attrs.items() if k not in cols}
                )
                return m.cloud(t, ch, cols)

            yield t, f"/{ch}/points", "sensor_msgs/msg/PointCloud2", radar
        else:
            w, h = int(r["width"]), int(r["height"])
            info = partial(
                m.camera_info, t, ch, c["camera_intrinsic"], e["distortion_coeffs"], w, h
            )
            yield t, f"/{ch}/camera_info", "sensor_msgs/msg/CameraInfo", info
            if e["modality"] == "thermal":

                def thermal(path: Path = path, t: int = t, ch: str = ch) -> Any:
                    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                    if img is None or img.dtype != np.uint16:
                        raise LogFormatError(f"write_bags: {path} is not a 16-bit PNG")
                    return m.t["sensor_msgs/msg/Image"](
                        header=m.header(t, ch), height=img.shape[0], width=img.shape[1], encoding="mono16",
                        is_bigendian=False, step=img.shape[1] * 2, data=np.frombuffer(img.astype("<u2").tobytes(), dtype=np.uint8),
                    )  # fmt: skip

                yield t, f"/{ch}/image_raw", "sensor_msgs/msg/Image", thermal
            else:

                def jpeg(path: Path = path, t: int = t, ch: str = ch) -> Any:
                    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
                    return m.t["sensor_msgs/msg/CompressedImage"](
                        header=m.header(t, ch), format="jpeg", data=data
                    )

                yield t, f"/{ch}/image_raw/compressed", "sensor_msgs/msg/CompressedImage", jpeg


def _labels(root: Path) -> dict[str, Any]:
    samples = _load(root, "sample")
    inst = {i["token"]: i for i in _load(root, "instance")}
    cat = {c["token"]: c["name"] for c in _load(root, "category")}
    sd = {r["token"]: r for r in _load(root, "sample_data")}
    sensors = {s["token"]: s["channel"] for s in _load(root, "sensor")}
    cs = {c["token"]: sensors[c["sensor_token"]] for c in _load(root, "calibrated_sensor")}
    out = []
    anns = _load(root, "sample_annotation")
    b2 = _load(root, "avfusion_box2d")
    for s in samples:
        boxes = [
            {
                "instance_token": a["instance_token"], "category": cat[inst[a["instance_token"]]["category_token"]],
                "center": a["translation"], "size_lwh": [a["size"][1], a["size"][0], a["size"][2]],
                "rotation_wxyz": a["rotation"], "num_lidar_pts": a["num_lidar_pts"],
            }
            for a in anns if a["sample_token"] == s["token"]
        ]  # fmt: skip
        boxes2d = [
            {
                "channel": cs[sd[b["sample_data_token"]]["calibrated_sensor_token"]], "timestamp_ns": sd[b["sample_data_token"]]["timestamp"] * 1000,
                "instance_token": b["instance_token"], "category": b["category_name"], "bbox": b["bbox"],
            }
            for b in b2 if sd[b["sample_data_token"]]["sample_token"] == s["token"]
        ]  # fmt: skip
        out.append({"timestamp_ns": s["timestamp"] * 1000, "boxes": boxes, "boxes2d": boxes2d})
    return {"frame": "map", "size_convention": "length, width, height", "samples": out}


def write_bags(nuscenes_root: Path | str, out_dir: Path | str) -> BagPaths:
    """Write the log under ``nuscenes_root`` as a ROS2 MCAP bag, a ROS1 bag and ``labels.json``."""
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.rosbag2 import StoragePlugin
    from rosbags.rosbag2 import Writer as Writer2

    root = Path(nuscenes_root)
    out = Path(out_dir)
    ros2_dir = out / "rosbag2"
    ros1_bag = out / "recording.bag"
    _load(root, "sample_data")  # fails early, naming the file, when root is not a synth log
    if ros2_dir.exists() or ros1_bag.exists():
        raise ConfigError(
            f"write_bags: {ros2_dir} or {ros1_bag} already exists; choose a new output directory"
        )
    out.mkdir(parents=True, exist_ok=True)
    for ros1 in (False, True):
        m = _Msgs(ros1)
        events = sorted(_events(root, m), key=lambda e: (e[0], e[1]))
        writer: Any = (
            Writer1(ros1_bag)
            if ros1
            else Writer2(ros2_dir, version=8, storage_plugin=StoragePlugin.MCAP)
        )
        with writer:
            conns: dict[str, Any] = {}
            for t, topic, msgtype, make in events:
                if topic not in conns:
                    kw: dict[str, Any] = {"latching": 1} if ros1 and topic == "/tf_static" else {}
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=m.ts, **kw)
                writer.write(conns[topic], t, m.serialize(make(), msgtype))
        logger.info("wrote %s with %d messages", ros1_bag if ros1 else ros2_dir, len(events))
    labels = out / "labels.json"
    labels.write_text(json.dumps(_labels(root), indent=1) + "\n")
    return BagPaths(ros2_dir, ros1_bag, labels)
