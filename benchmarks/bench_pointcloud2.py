"""ROS bag LiDAR decoding with ``avfusion.io.pointcloud2``.

A ROS2 bag (MCAP storage) of Velodyne-like clouds (x, y, z, intensity float32, ring uint16,
time float32 at offsets 0, 4, 8, 12, 16, 18, point_step 22, about 1 % no-return NaN points) is
written once into a temporary directory. Two cases:

* **bag decode**: the peer iterates the raw messages with rosbags' ``AnyReader``; avfusion does
  the same iteration and also decodes every cloud to ``xyz``/``attrs`` arrays with
  ``decode_pointcloud2_raw``. The ratio peer/avfusion is below 1 by construction (avfusion does
  strictly more work); the target is >= 0.8, i.e. decoding adds at most 25 % to iteration.
* **decode only**: the same serialized messages, already in memory, decoded by avfusion versus
  the usual route: rosbags ``deserialize_cdr`` then numpy structured-array conversion with NaN
  filtering (as ros_numpy / sensor_msgs_py do).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case

TOPIC = "/velodyne_points"
N_CLOUDS = 200
N_POINTS = 120_000
N_CHECKED = 3  # messages compared in full against rosbags' own deserialization
VELODYNE = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "ring", "time"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
        "offsets": [0, 4, 8, 12, 16, 18],
        "itemsize": 22,
    }
)
_CACHE: dict[float, Path] = {}


def _write_bag(path: Path, n_clouds: int, n_points: int) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    t = ts.types
    rng = np.random.default_rng(0)
    rec = np.zeros(n_points, dtype=VELODYNE)
    az = rng.uniform(-np.pi, np.pi, n_points)
    rng_m = rng.uniform(1.0, 100.0, n_points)
    rec["ring"] = rng.integers(0, 32, n_points)
    elev = np.deg2rad(-30.0 + 1.33 * rec["ring"])
    rec["x"] = rng_m * np.cos(elev) * np.cos(az)
    rec["y"] = rng_m * np.cos(elev) * np.sin(az)
    rec["z"] = rng_m * np.sin(elev)
    rec["intensity"] = rng.uniform(0, 255, n_points)
    rec["time"] = (az + np.pi) / (2 * np.pi) * 0.1
    no_return = rng.random(n_points) < 0.01
    fields = [
        t["sensor_msgs/msg/PointField"](
            name=name, offset=VELODYNE.fields[name][1], datatype=dt, count=1
        )
        for name, dt in zip(VELODYNE.names or (), (7, 7, 7, 7, 4, 7), strict=True)
    ]
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/PointCloud2", typestore=ts)
        for i in range(n_clouds):
            t_ns = 1_700_000_000_000_000_000 + i * 100_000_000
            cloud = rec.copy()
            cloud["x"] += np.float32(0.01 * i)
            for c in ("x", "y", "z"):
                cloud[c][no_return] = np.nan
            msg = t["sensor_msgs/msg/PointCloud2"](
                header=t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](
                        sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000
                    ),
                    frame_id="velodyne",
                ),
                height=1,
                width=n_points,
                fields=fields,
                is_bigendian=False,
                point_step=VELODYNE.itemsize,
                row_step=VELODYNE.itemsize * n_points,
                data=np.frombuffer(cloud.tobytes(), dtype=np.uint8),
                is_dense=False,
            )
            writer.write(conn, t_ns, bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")))


def _setup(scale: float) -> dict[str, Any]:
    if scale not in _CACHE:
        tmp = Path(tempfile.mkdtemp(prefix="avfusion-bench-pc2-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        n_clouds = max(N_CHECKED, round(N_CLOUDS * min(scale, 1.0)))
        n_points = max(1000, round(N_POINTS * scale))
        _write_bag(tmp / "bag", n_clouds, n_points)
        _CACHE[scale] = tmp / "bag"
    return {"path": _CACHE[scale]}


def _peer(d: dict[str, Any]) -> dict[str, Any]:
    from rosbags.highlevel import AnyReader

    n_bytes = 0
    n_msgs = 0
    first: list[tuple[str, bytes]] = []
    with AnyReader([d["path"]]) as reader:
        conns = [c for c in reader.connections if c.topic == TOPIC]
        for conn, _, raw in reader.messages(connections=conns):
            n_msgs += 1
            n_bytes += len(raw)
            if len(first) < N_CHECKED:
                first.append((conn.msgtype, raw))
        store = reader.typestore
    return {"n_msgs": n_msgs, "n_bytes": n_bytes, "first": first, "typestore": store}


def _ours(d: dict[str, Any]) -> dict[str, Any]:
    from rosbags.highlevel import AnyReader

    from avfusion.io.pointcloud2 import decode_pointcloud2_raw

    n_msgs = 0
    n_points = 0
    n_nonfinite = 0
    first = []
    with AnyReader([d["path"]]) as reader:
        conns = [c for c in reader.connections if c.topic == TOPIC]
        for _, t_ns, raw in reader.messages(connections=conns):
            cloud = decode_pointcloud2_raw(raw, ros1=False, where=f"{TOPIC} at {t_ns}")
            n_msgs += 1
            n_points += len(cloud)
            n_nonfinite += cloud.n_nonfinite
            if len(first) < N_CHECKED:
                first.append(cloud)
    return {"n_msgs": n_msgs, "n_points": n_points, "n_nonfinite": n_nonfinite, "first": first}


def _agree(ours: dict[str, Any], peer: dict[str, Any]) -> None:
    if ours["n_msgs"] != peer["n_msgs"]:
        raise AssertionError(f"{ours['n_msgs']} clouds decoded, rosbags read {peer['n_msgs']}")
    for cloud, (msgtype, raw) in zip(ours["first"], peer["first"], strict=True):
        msg = peer["typestore"].deserialize_cdr(raw, msgtype)
        rec = np.frombuffer(msg.data.tobytes(), dtype=VELODYNE)
        ok = np.isfinite(rec["x"]) & np.isfinite(rec["y"]) & np.isfinite(rec["z"])
        if cloud.n_points_total != msg.width * msg.height or len(cloud) != int(ok.sum()):
            raise AssertionError("point counts differ from rosbags' deserialized message")
        ref = np.stack([rec["x"][ok], rec["y"][ok], rec["z"][ok]], axis=1)
        np.testing.assert_array_equal(cloud.xyz, ref)
        for name in ("intensity", "ring", "time"):
            np.testing.assert_array_equal(cloud.attrs[name], rec[name][ok])
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if cloud.stamp_ns != stamp or cloud.frame_id != msg.header.frame_id:
            raise AssertionError("header stamp or frame differs from rosbags")


def _raw_setup(scale: float) -> dict[str, Any]:
    from rosbags.highlevel import AnyReader

    with AnyReader([_setup(scale)["path"]]) as reader:
        raws = [bytes(raw) for _, _, raw in reader.messages()]
        store = reader.typestore
    return {"raws": raws, "typestore": store}


def _summary(clouds: Any) -> dict[str, Any]:
    """Totals over all clouds plus the first few in full (all clouds would not fit in memory)."""
    out: dict[str, Any] = {"n_msgs": 0, "n_points": 0, "xyz_sum": 0.0, "first": []}
    for xyz, attrs in clouds:
        out["n_msgs"] += 1
        out["n_points"] += len(xyz)
        out["xyz_sum"] += float(xyz[::97].sum(dtype=np.float64))
        if len(out["first"]) < N_CHECKED:
            out["first"].append((xyz, attrs))
    return out


def _decode_ours(d: dict[str, Any]) -> dict[str, Any]:
    from avfusion.io.pointcloud2 import decode_pointcloud2_raw

    def clouds() -> Any:
        for raw in d["raws"]:
            cloud = decode_pointcloud2_raw(raw, ros1=False, where=TOPIC)
            yield cloud.xyz, cloud.attrs

    return _summary(clouds())


_NUMPY_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def _decode_peer(d: dict[str, Any]) -> dict[str, Any]:
    ts = d["typestore"]

    def clouds() -> Any:
        for raw in d["raws"]:
            msg = ts.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
            order = ">" if msg.is_bigendian else "<"
            dtype = np.dtype(
                {
                    "names": [f.name for f in msg.fields],
                    "formats": [order + _NUMPY_TYPES[f.datatype] for f in msg.fields],
                    "offsets": [f.offset for f in msg.fields],
                    "itemsize": msg.point_step,
                }
            )
            rec = np.frombuffer(msg.data, dtype=dtype, count=msg.width * msg.height)
            ok = np.isfinite(rec["x"]) & np.isfinite(rec["y"]) & np.isfinite(rec["z"])
            xyz = np.stack([rec["x"][ok], rec["y"][ok], rec["z"][ok]], axis=1).astype(np.float32)
            attrs = {n: rec[n][ok] for n in dtype.names or () if n not in ("x", "y", "z")}
            yield xyz, attrs

    return _summary(clouds())


def _decode_agree(ours: dict[str, Any], peer: dict[str, Any]) -> None:
    if (ours["n_msgs"], ours["n_points"]) != (peer["n_msgs"], peer["n_points"]):
        raise AssertionError(f"clouds/points differ: {ours['n_msgs']}/{ours['n_points']} vs {peer['n_msgs']}/{peer['n_points']}")  # fmt: skip
    if ours["xyz_sum"] != peer["xyz_sum"]:
        raise AssertionError("xyz checksums differ")
    for (xyz, attrs), (pxyz, pattrs) in zip(ours["first"], peer["first"], strict=True):
        np.testing.assert_array_equal(xyz, pxyz)
        for name, values in pattrs.items():
            np.testing.assert_array_equal(attrs[name], values)


CASES = [
    Case(
        "PointCloud2 bag decode, 200 × 120k-point clouds (ROS2 MCAP)",
        "rosbags AnyReader raw iteration (no decoding)",
        _setup,
        _ours,
        _peer,
        _agree,
        repeats=3,
    ),
    Case(
        "PointCloud2 decode only, 200 serialized clouds in memory",
        "rosbags deserialize_cdr + numpy structured arrays",
        _raw_setup,
        _decode_ours,
        _decode_peer,
        _decode_agree,
        repeats=3,
    ),
]
