"""ROS message decoding: PointCloud2 (message objects and raw bytes), Image, CompressedImage,
CameraInfo. References are plain per-point ``struct.unpack`` loops written independently of the
library; messages are built and serialized with rosbags, as the synthetic bags are."""

from __future__ import annotations

import functools
import logging
import math
import struct
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from avfusion.calibration.camera import CameraModel
from avfusion.errors import AVFusionError, CalibrationError, LogFormatError
from avfusion.io import (
    DecodedCloud,
    camera_model_from_camera_info,
    decode_compressed_image,
    decode_image,
    decode_pointcloud2,
    decode_pointcloud2_raw,
)

PC2 = "sensor_msgs/msg/PointCloud2"
FMT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
NP = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32,
      7: np.float32, 8: np.float64}  # fmt: skip
STAMP_NS = 1_700_000_123_456_789_012
Field = tuple[str, int, int, int]  # name, offset, datatype, count


# ------------------------------------------------------------------------------------------
# Message construction and the per-point reference
# ------------------------------------------------------------------------------------------


@functools.cache
def typestore(ros1: bool) -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)


def header(ros1: bool, stamp_ns: int = STAMP_NS, frame: str = "lidar") -> Any:
    t = typestore(ros1).types
    stamp = t["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
    )
    if ros1:
        return t["std_msgs/msg/Header"](seq=7, stamp=stamp, frame_id=frame)
    return t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)


def cloud_msg(
    ros1: bool,
    fields: list[Field],
    data: bytes,
    *,
    height: int,
    width: int,
    point_step: int,
    row_step: int,
    bigendian: bool = False,
    frame: str = "lidar",
) -> Any:
    t = typestore(ros1).types
    pf = [
        t["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=c)
        for n, o, d, c in fields
    ]
    return t[PC2](
        header=header(ros1, frame=frame), height=height, width=width, fields=pf,
        is_bigendian=bigendian, point_step=point_step, row_step=row_step,
        data=np.frombuffer(data, dtype=np.uint8), is_dense=False,
    )  # fmt: skip


def serialize(ros1: bool, msg: Any, little: bool = True) -> bytes:
    ts = typestore(ros1)
    if ros1:
        return bytes(ts.serialize_ros1(msg, PC2))
    return bytes(ts.serialize_cdr(msg, PC2, little_endian=little))


def random_values(rng: np.random.Generator, datatype: int, n: int) -> np.ndarray:
    dt = np.dtype(NP[datatype])
    if dt.kind == "f":
        return (rng.normal(0, 50, n)).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, n, endpoint=True, dtype=np.int64).astype(dt)


def pack_cloud(
    fields: list[Field],
    values: dict[str, np.ndarray],
    *,
    height: int,
    width: int,
    point_step: int,
    row_step: int,
    bigendian: bool,
) -> bytes:
    """Point data written value by value with struct; padding bytes are 0xEE."""
    order = ">" if bigendian else "<"
    buf = bytearray(b"\xee" * (height * row_step))
    for idx in range(height * width):
        r, c = divmod(idx, width)
        p = r * row_step + c * point_step
        for name, off, dt, cnt in fields:
            v = np.asarray(values[name][idx]).reshape(-1).tolist()
            struct.pack_into(order + FMT[dt] * cnt, buf, p + off, *v)
    return bytes(buf)


def reference(
    fields: list[Field],
    data: bytes,
    *,
    height: int,
    width: int,
    point_step: int,
    row_step: int,
    bigendian: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Per-point struct.unpack decoding: xyz float32 of finite points, their attrs, n dropped."""
    order = ">" if bigendian else "<"
    xyz: list[np.ndarray] = []
    attrs: dict[str, list[Any]] = {n: [] for n, *_ in fields if n not in "xyz"}
    dropped = 0
    for r in range(height):
        for c in range(width):
            p = r * row_step + c * point_step
            vals = {
                n: struct.unpack_from(order + FMT[dt] * cnt, data, p + off)
                for n, off, dt, cnt in fields
            }
            with np.errstate(over="ignore"):
                pt = np.array([vals[a][0] for a in "xyz"], dtype=np.float64).astype(np.float32)
            if not np.all(np.isfinite(pt)):
                dropped += 1
                continue
            xyz.append(pt)
            for n, _, _, cnt in fields:
                if n not in "xyz":
                    attrs[n].append(vals[n] if cnt > 1 else vals[n][0])
    types = {n: (dt, cnt) for n, _, dt, cnt in fields}
    out = {
        n: np.array(v, dtype=NP[types[n][0]]).reshape(-1, types[n][1])
        if types[n][1] > 1
        else np.array(v, dtype=NP[types[n][0]])
        for n, v in attrs.items()
    }
    return np.array(xyz, dtype=np.float32).reshape(-1, 3), out, dropped


def assert_matches_reference(cloud: DecodedCloud, ref: tuple[Any, ...], n_total: int) -> None:
    xyz, attrs, dropped = ref
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.flags.c_contiguous
    np.testing.assert_array_equal(cloud.xyz, xyz)
    assert set(cloud.attrs) == set(attrs)
    for name, want in attrs.items():
        got = cloud.attrs[name]
        assert got.dtype == want.dtype and got.dtype.isnative, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert cloud.n_points_total == n_total
    assert cloud.n_nonfinite == dropped
    assert len(cloud) == n_total - dropped


def assert_same_cloud(a: DecodedCloud, b: DecodedCloud) -> None:
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert a.xyz.dtype == b.xyz.dtype == np.float32
    assert a.attrs.keys() == b.attrs.keys()
    for k in a.attrs:
        assert a.attrs[k].dtype == b.attrs[k].dtype
        np.testing.assert_array_equal(a.attrs[k], b.attrs[k])
    assert (a.n_points_total, a.n_nonfinite, a.stamp_ns, a.frame_id, a.height, a.width) == (
        b.n_points_total, b.n_nonfinite, b.stamp_ns, b.frame_id, b.height, b.width,
    )  # fmt: skip


def check_all_paths(
    fields: list[Field],
    values: dict[str, np.ndarray],
    *,
    height: int,
    width: int,
    point_step: int,
    row_step: int,
    bigendian: bool = False,
) -> DecodedCloud:
    """Decode through ROS1 and ROS2 messages and raw bytes; all must match the reference."""
    geom = {"height": height, "width": width, "point_step": point_step, "row_step": row_step}
    data = pack_cloud(fields, values, bigendian=bigendian, **geom)
    ref = reference(fields, data, bigendian=bigendian, **geom)
    cloud = None
    for ros1 in (False, True):
        msg = cloud_msg(ros1, fields, data, bigendian=bigendian, **geom)
        decoded = decode_pointcloud2(msg, "/points")
        assert_matches_reference(decoded, ref, height * width)
        assert decoded.stamp_ns == STAMP_NS and decoded.frame_id == "lidar"
        raws = [serialize(ros1, msg)] if ros1 else [serialize(False, msg, little) for little in (True, False)]  # fmt: skip
        for raw in raws:
            assert_same_cloud(decode_pointcloud2_raw(raw, ros1=ros1, where="/points"), decoded)
        cloud = decoded
    assert cloud is not None
    return cloud


# ------------------------------------------------------------------------------------------
# PointCloud2: layouts
# ------------------------------------------------------------------------------------------


def test_velodyne_layout_with_padding_between_fields_and_at_the_end() -> None:
    rng = np.random.default_rng(1)
    # x y z, 4 bytes padding, intensity, ring, 2 bytes padding, time, 4 bytes padding at the end
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 16, 7, 1),
              ("ring", 20, 4, 1), ("time", 24, 7, 1)]  # fmt: skip
    n = 300
    values = {name: random_values(rng, dt, n) for name, _, dt, _ in fields}
    cloud = check_all_paths(fields, values, height=1, width=n, point_step=32, row_step=32 * n)
    assert cloud.xyz.shape == (n, 3)
    np.testing.assert_array_equal(cloud.xyz[:, 2], values["z"])
    np.testing.assert_array_equal(cloud.attrs["ring"], values["ring"])
    assert cloud.attrs["ring"].dtype == np.uint16


def test_fields_in_any_order_and_unaligned_offsets() -> None:
    rng = np.random.default_rng(2)
    fields = [("ring", 0, 2, 1), ("z", 1, 7, 1), ("time", 5, 8, 1), ("x", 13, 7, 1),
              ("label", 17, 3, 1), ("y", 19, 7, 1)]  # fmt: skip
    n = 200
    values = {name: random_values(rng, dt, n) for name, _, dt, _ in fields}
    cloud = check_all_paths(fields, values, height=1, width=n, point_step=23, row_step=23 * n)
    np.testing.assert_array_equal(cloud.xyz[:, 0], values["x"])
    assert list(cloud.attrs) == ["ring", "time", "label"]


def test_count_above_one_gives_two_dimensional_attributes() -> None:
    rng = np.random.default_rng(3)
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("normal", 12, 7, 3),
              ("rgba", 24, 2, 4), ("hist", 28, 3, 5)]  # fmt: skip
    n = 150
    values = {
        name: random_values(rng, dt, n * cnt).reshape(n, cnt) if cnt > 1 else random_values(rng, dt, n)
        for name, _, dt, cnt in fields
    }  # fmt: skip
    cloud = check_all_paths(fields, values, height=1, width=n, point_step=40, row_step=40 * n)
    assert cloud.attrs["normal"].shape == (n, 3) and cloud.attrs["normal"].dtype == np.float32
    assert cloud.attrs["rgba"].shape == (n, 4) and cloud.attrs["rgba"].dtype == np.uint8
    np.testing.assert_array_equal(cloud.attrs["hist"], values["hist"])


@pytest.mark.parametrize("bigendian", [False, True])
def test_every_datatype_in_both_byte_orders(bigendian: bool) -> None:
    rng = np.random.default_rng(4)
    fields: list[Field] = [("x", 0, 8, 1), ("y", 8, 3, 1), ("z", 10, 6, 1)]  # f64, i16, u32
    off = 14
    for dt in range(1, 9):
        fields.append((f"a{dt}", off, dt, 1))
        off += SIZE[dt]
    fields.append(("pair", off, 8, 2))
    off += 16
    n = 120
    values = {
        name: random_values(rng, dt, n * cnt).reshape(n, cnt) if cnt > 1 else random_values(rng, dt, n)
        for name, _, dt, cnt in fields
    }  # fmt: skip
    values["x"][:3] = [np.nan, np.inf, 1e300]  # the last overflows float32: also dropped
    cloud = check_all_paths(
        fields, values, height=1, width=n, point_step=off + 1, row_step=(off + 1) * n,
        bigendian=bigendian,
    )  # fmt: skip
    assert cloud.n_nonfinite == 3
    for dt in range(1, 9):
        assert cloud.attrs[f"a{dt}"].dtype == NP[dt]
        np.testing.assert_array_equal(cloud.attrs[f"a{dt}"], values[f"a{dt}"][3:])
    np.testing.assert_array_equal(cloud.xyz[:, 1], values["y"][3:].astype(np.float32))


@pytest.mark.parametrize("bigendian", [False, True])
def test_float32_xyz_big_endian(bigendian: bool) -> None:
    rng = np.random.default_rng(5)
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 4, 1)]
    n = 64
    values = {name: random_values(rng, dt, n) for name, _, dt, _ in fields}
    values["y"][[5, 9]] = [np.nan, -np.inf]
    cloud = check_all_paths(
        fields, values, height=1, width=n, point_step=16, row_step=16 * n, bigendian=bigendian
    )
    assert cloud.n_nonfinite == 2
    np.testing.assert_array_equal(cloud.attrs["intensity"], np.delete(values["intensity"], [5, 9]))


def test_organised_cloud_with_row_padding_and_no_returns(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(6)
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("range", 12, 6, 1), ("ring", 16, 2, 1)]  # fmt: skip
    height, width, point_step = 8, 13, 20
    row_step = width * point_step + 7  # rows padded
    n = height * width
    values = {name: random_values(rng, dt, n) for name, _, dt, _ in fields}
    values["ring"] = np.repeat(np.arange(height, dtype=np.uint8), width)
    no_return = rng.random(n) < 0.3
    for a in "xyz":
        values[a][no_return] = np.nan
    values["z"][0] = np.inf
    no_return[0] = True
    with caplog.at_level(logging.INFO, logger="avfusion.io.pointcloud2"):
        cloud = check_all_paths(
            fields, values, height=height, width=width, point_step=point_step, row_step=row_step
        )
    assert (cloud.height, cloud.width) == (height, width)
    assert cloud.n_nonfinite == int(no_return.sum()) > 0
    np.testing.assert_array_equal(cloud.attrs["ring"], values["ring"][~no_return])  # row-major
    assert np.isfinite(cloud.xyz).all()
    assert f"/points: dropped {int(no_return.sum())} of {n} PointCloud2 points" in caplog.text


def test_large_cloud_crosses_block_boundaries() -> None:
    """More points than one kernel block, NaNs spread across blocks, several rows."""
    rng = np.random.default_rng(7)
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("i", 12, 7, 1), ("r", 16, 4, 1)]
    height, width = 3, 9000
    dt = np.dtype({"names": ["x", "y", "z", "i", "r"], "formats": ["<f4"] * 4 + ["<u2"],
                   "offsets": [0, 4, 8, 12, 16], "itemsize": 18})  # fmt: skip
    rec = np.zeros(height * width, dt)
    for name in dt.names or ():
        rec[name] = rng.normal(0, 10, rec.size) if name != "r" else rng.integers(0, 60000, rec.size)
    bad = rng.random(rec.size) < 0.05
    rec["x"][bad] = np.nan
    msg = cloud_msg(False, fields, rec.tobytes(), height=height, width=width, point_step=18, row_step=18 * width)  # fmt: skip
    cloud = decode_pointcloud2(msg, "/big")
    ok = ~bad
    np.testing.assert_array_equal(cloud.xyz, np.stack([rec["x"], rec["y"], rec["z"]], 1)[ok])
    np.testing.assert_array_equal(cloud.attrs["r"], rec["r"][ok])
    assert cloud.n_nonfinite == int(bad.sum())


def test_empty_cloud_keeps_field_types() -> None:
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("normal", 12, 8, 3)]
    for width, height in ((0, 1), (5, 0)):
        msg = cloud_msg(
            True, fields, b"", height=height, width=width, point_step=36, row_step=36 * width
        )
        cloud = decode_pointcloud2(msg, "/empty")
        assert cloud.xyz.shape == (0, 3) and cloud.n_points_total == 0
        assert cloud.attrs["normal"].shape == (0, 3) and cloud.attrs["normal"].dtype == np.float64


def test_decoding_never_changes_or_aliases_the_message() -> None:
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("i", 12, 7, 1)]
    data = np.arange(4 * 10, dtype=np.float32).tobytes()
    msg = cloud_msg(False, fields, data, height=1, width=10, point_step=16, row_step=160)
    before = msg.data.copy()
    cloud = decode_pointcloud2(msg, "/points")
    cloud.xyz[:] = -1
    cloud.attrs["i"][:] = -1
    np.testing.assert_array_equal(msg.data, before)


# ------------------------------------------------------------------------------------------
# PointCloud2: errors
# ------------------------------------------------------------------------------------------

XYZ: list[Field] = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]


@pytest.mark.parametrize(
    ("fields", "geom", "n_bytes", "match"),
    [
        (XYZ, (1, 4, 12, 40), 40, "row_step 40 is smaller than width 4 × point_step 12 = 48"),
        (XYZ, (2, 4, 12, 48), 95, "data has 95 bytes; expected height 2 × row_step 48 = 96"),
        (XYZ, (1, 4, 12, 48), 0, "data has 0 bytes; expected height 1"),
        ([*XYZ, ("i", 10, 7, 1)], (1, 2, 12, 24), 24, "field 'i' \\(offset 10, 4 bytes\\) runs past point_step 12"),
        ([*XYZ, ("n", 12, 7, 3)], (1, 2, 20, 40), 40, "field 'n' \\(offset 12, 12 bytes\\) runs past point_step 20"),
        ([*XYZ, ("i", 12, 9, 1)], (1, 2, 16, 32), 32, "field 'i' has unknown datatype 9"),
        ([*XYZ, ("i", 12, 0, 1)], (1, 2, 16, 32), 32, "unknown datatype 0 \\(expected one of 1 INT8"),
        (XYZ[:2], (1, 2, 12, 24), 24, "has no field z .*expected x, y and z"),
        ([("i", 0, 7, 1)], (1, 2, 12, 24), 24, "has no field x, y, z"),
        ([*XYZ, ("x", 0, 7, 1)], (1, 2, 12, 24), 24, "field name 'x' appears twice"),
        ([*XYZ, ("i", 12, 7, 0)], (1, 2, 16, 32), 32, "field 'i' has count 0; expected >= 1"),
        ([("x", 0, 7, 2), ("y", 8, 7, 1), ("z", 12, 7, 1)], (1, 2, 16, 32), 32, "'x' has count 2; x, y and z must have count 1"),
        ([*XYZ, ("", 12, 7, 1)], (1, 2, 16, 32), 32, "field 3 has an empty or invalid name"),
        (XYZ, (1, 4, 0, 0), 0, "field 'x' \\(offset 0, 4 bytes\\) runs past point_step 0"),
    ],
)  # fmt: skip
def test_bad_layouts_are_rejected_naming_the_topic(
    fields: list[Field], geom: tuple[int, int, int, int], n_bytes: int, match: str
) -> None:
    height, width, point_step, row_step = geom
    for ros1 in (False, True):
        msg = cloud_msg(ros1, fields, bytes(n_bytes), height=height, width=width,
                        point_step=point_step, row_step=row_step)  # fmt: skip
        with pytest.raises(LogFormatError, match="^/lidar/points at 17 ns: PointCloud2 .*" + match):
            decode_pointcloud2(msg, "/lidar/points at 17 ns")
        with pytest.raises(LogFormatError, match="^/lidar/points: .*" + match):
            decode_pointcloud2_raw(serialize(ros1, msg), ros1=ros1, where="/lidar/points")


def test_non_message_and_bad_data_types_are_rejected() -> None:
    with pytest.raises(LogFormatError, match="/p: not a PointCloud2 message"):
        decode_pointcloud2(object(), "/p")
    msg = cloud_msg(False, XYZ, bytes(12), height=1, width=1, point_step=12, row_step=12)
    msg.data = np.zeros(3, dtype=np.float32)
    with pytest.raises(LogFormatError, match="/p: data must be a 1-D uint8 array, got float32"):
        decode_pointcloud2(msg, "/p")
    msg.data = bytes(12)  # plain bytes are fine
    assert decode_pointcloud2(msg, "/p").xyz.tolist() == [[0.0, 0.0, 0.0]]
    msg.data = [0] * 12  # so is a list of byte values
    assert len(decode_pointcloud2(msg, "/p")) == 1
    msg.data = ["a"]
    with pytest.raises(LogFormatError, match="/p: data must be bytes or a uint8 array, got list"):
        decode_pointcloud2(msg, "/p")
    msg.data = bytes(12)
    msg.width = -1
    with pytest.raises(LogFormatError, match="/p: width must be >= 0, got -1"):
        decode_pointcloud2(msg, "/p")
    msg.width = 1.5
    with pytest.raises(LogFormatError, match=r"/p: width must be an integer, got 1\.5"):
        decode_pointcloud2(msg, "/p")
    msg.width = 1
    msg.fields[0].name = ["x"]
    with pytest.raises(
        LogFormatError, match="/p: PointCloud2 field 0 has an empty or invalid name"
    ):
        decode_pointcloud2(msg, "/p")
    msg.fields[0].name = "x"
    msg.fields[0].datatype = "7"
    with pytest.raises(LogFormatError, match="/p: field 'x' datatype must be an integer, got '7'"):
        decode_pointcloud2(msg, "/p")
    msg.fields[0].datatype = 7
    msg.fields = None
    with pytest.raises(
        LogFormatError, match="/p: not a PointCloud2 message \\('NoneType' object is not iterable"
    ):
        decode_pointcloud2(msg, "/p")
    strided = np.zeros(24, np.uint8)[::2]  # a non-contiguous view is read correctly too
    msg = cloud_msg(False, XYZ, bytes(12), height=1, width=1, point_step=12, row_step=12)
    msg.data = strided
    assert decode_pointcloud2(msg, "/p").xyz.tolist() == [[0.0, 0.0, 0.0]]


def test_genpy_style_stamps_are_accepted() -> None:
    class Stamp:
        secs, nsecs = 12, 34

    msg = cloud_msg(True, XYZ, bytes(12), height=1, width=1, point_step=12, row_step=12)
    msg.header.stamp = Stamp()
    assert decode_pointcloud2(msg, "/p").stamp_ns == 12_000_000_034
    msg.header.stamp = object()
    with pytest.raises(LogFormatError, match="/p: header stamp has no sec/nanosec fields"):
        decode_pointcloud2(msg, "/p")


def _valid_raw(ros1: bool, little: bool = True) -> bytes:
    rng = np.random.default_rng(11)
    fields = [*XYZ, ("intensity", 12, 7, 1), ("ring", 16, 4, 1)]
    values = {name: random_values(rng, dt, 6) for name, _, dt, _ in fields}
    values["x"][2] = np.nan
    data = pack_cloud(fields, values, height=2, width=3, point_step=20, row_step=64, bigendian=False)  # fmt: skip
    msg = cloud_msg(ros1, fields, data, height=2, width=3, point_step=20, row_step=64)
    return serialize(ros1, msg, little)


def test_raw_errors_name_what_is_wrong() -> None:
    raw2 = _valid_raw(False)
    with pytest.raises(
        LogFormatError,
        match=r"^/p: serialized PointCloud2 starts with 0003.*expected a CDR encapsulation header",
    ):
        decode_pointcloud2_raw(b"\x00\x03" + raw2[2:], ros1=False, where="/p")
    with pytest.raises(LogFormatError, match="starts with nothing"):
        decode_pointcloud2_raw(b"", ros1=False, where="/p")
    with pytest.raises(
        LogFormatError,
        match=r"^/p: serialized PointCloud2 is truncated: ran out of bytes reading header",
    ):
        decode_pointcloud2_raw(raw2[:10], ros1=False, where="/p")
    with pytest.raises(LogFormatError, match="truncated: data and is_dense need"):
        decode_pointcloud2_raw(raw2[:-1], ros1=False, where="/p")
    # frame_id "lidar": CDR length 6 at offset 12, text at 16
    assert raw2[12:22] == b"\x06\x00\x00\x00lidar\x00"
    bad_utf8 = raw2[:16] + b"\xff" + raw2[17:]
    with pytest.raises(LogFormatError, match="header frame_id is not valid UTF-8"):
        decode_pointcloud2_raw(bad_utf8, ros1=False, where="/p")
    no_nul = raw2[:21] + b"x" + raw2[22:]
    with pytest.raises(LogFormatError, match="header frame_id is not a NUL-terminated CDR string"):
        decode_pointcloud2_raw(no_nul, ros1=False, where="/p")
    long_name = raw2[:12] + b"\xff\xff\x00\x00" + raw2[16:]
    with pytest.raises(LogFormatError, match="header frame_id needs 65535 bytes at offset 16"):
        decode_pointcloud2_raw(long_name, ros1=False, where="/p")
    raw1 = _valid_raw(True)
    # ROS1: seq, sec, nsec, frame_id length 5 + "lidar", height, width, then fields length
    assert raw1[12:21] == b"\x05\x00\x00\x00lidar"
    many_fields = raw1[:29] + b"\x00\x00\x01\x00" + raw1[33:]
    with pytest.raises(LogFormatError, match="claims 65536 fields but only"):
        decode_pointcloud2_raw(many_fields, ros1=True, where="/p")


@pytest.mark.parametrize(("ros1", "little"), [(True, True), (False, True), (False, False)])
def test_raw_agrees_with_rosbags_deserialization(ros1: bool, little: bool) -> None:
    raw = _valid_raw(ros1, little)
    msg = typestore(ros1).deserialize_ros1(raw, PC2) if ros1 else typestore(False).deserialize_cdr(raw, PC2)  # fmt: skip
    via_msg = decode_pointcloud2(msg, "/p")
    assert via_msg.n_nonfinite == 1 and len(via_msg) == 5
    assert_same_cloud(decode_pointcloud2_raw(raw, ros1=ros1, where="/p"), via_msg)
    assert_same_cloud(decode_pointcloud2_raw(memoryview(raw), ros1=ros1, where="/p"), via_msg)


# ------------------------------------------------------------------------------------------
# Fuzzing: never anything but a DecodedCloud or an AVFusionError
# ------------------------------------------------------------------------------------------

RAWS = {(ros1, little): _valid_raw(ros1, little) for ros1, little in ((True, True), (False, True), (False, False))}  # fmt: skip


def _rosbags_view(raw: bytes, ros1: bool) -> DecodedCloud | None:
    """rosbags deserialization then decode_pointcloud2, or None when either gives up."""
    try:
        ts = typestore(ros1)
        msg = ts.deserialize_ros1(raw, PC2) if ros1 else ts.deserialize_cdr(raw, PC2)
    except Exception:  # rosbags' own errors on corrupt input are not ours to judge
        return None
    try:
        return decode_pointcloud2(msg, "/fuzz")
    except AVFusionError:
        return None


@given(key=st.sampled_from(sorted(RAWS)), cut=st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_fuzz_truncated_messages_raise_log_format_error(key: tuple[bool, bool], cut: int) -> None:
    raw = RAWS[key]
    cut %= len(raw)
    with pytest.raises(LogFormatError, match=r"^/fuzz: "):
        decode_pointcloud2_raw(raw[:cut], ros1=key[0], where="/fuzz")


@given(
    key=st.sampled_from(sorted(RAWS)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_mutated_messages_decode_or_raise(
    key: tuple[bool, bool], edits: list[tuple[int, int]]
) -> None:
    ros1 = key[0]
    buf = bytearray(RAWS[key])
    for pos, value in edits:
        buf[pos % len(buf)] = value
    raw = bytes(buf)
    try:
        cloud = decode_pointcloud2_raw(raw, ros1=ros1, where="/fuzz")
    except AVFusionError:
        cloud = None
    event("decoded" if cloud is not None else "rejected")
    if cloud is not None:
        assert cloud.xyz.dtype == np.float32 and np.isfinite(cloud.xyz).all()
        assert len(cloud) + cloud.n_nonfinite == cloud.n_points_total
        assert all(v.shape[0] == len(cloud) for v in cloud.attrs.values())
    # Whenever rosbags can deserialize it and the layout is valid, both paths agree.
    other = _rosbags_view(raw, ros1)
    if other is not None:
        assert cloud is not None
        assert_same_cloud(cloud, other)


@st.composite
def cloud_layouts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid PointCloud2 layout (fields in random order with random padding, count > 1,
    any datatype, organised or not), then up to three edits of its header fields."""
    extra = draw(st.lists(st.tuples(st.integers(1, 8), st.integers(1, 3)), max_size=3))
    specs = [(a, draw(st.integers(1, 8)), 1) for a in "xyz"]
    specs += [(f"f{i}", dt, cnt) for i, (dt, cnt) in enumerate(extra)]
    specs = draw(st.permutations(specs))
    fields: list[list[Any]] = []
    off = 0
    for name, dt, cnt in specs:
        off += draw(st.integers(0, 3))
        fields.append([name, off, dt, cnt])
        off += SIZE[dt] * cnt
    g = {"point_step": off + draw(st.integers(0, 5)), "width": draw(st.integers(0, 5)),
         "height": draw(st.integers(0, 3))}  # fmt: skip
    g["row_step"] = g["width"] * g["point_step"] + draw(st.integers(0, 6))
    g["n_bytes"] = g["height"] * g["row_step"]
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["point_step", "row_step", "width", "height", "n_bytes",
                                     "offset", "datatype", "count", "name"]))  # fmt: skip
        if what in g:
            g[what] = max(0, g[what] + draw(st.integers(-4, 4)))
        else:
            f = draw(st.sampled_from(fields))
            if what == "offset":
                f[1] = max(0, f[1] + draw(st.integers(-6, 6)))
            elif what == "datatype":
                f[2] = draw(st.integers(0, 10))
            elif what == "count":
                f[3] = draw(st.integers(0, 4))
            else:
                f[0] = draw(st.sampled_from(["x", "y", "z", "", "f0"]))
    return {"fields": [tuple(f) for f in fields], **g, "bigendian": draw(st.booleans())}


@given(layout=cloud_layouts(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_header_fields_decode_correctly_or_raise(layout: dict[str, Any], seed: int) -> None:
    """Random point_step, row_step, width, height, offsets, datatypes and counts: whatever is
    accepted must equal the per-point reference, through messages and raw bytes alike."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, layout["n_bytes"], dtype=np.uint8).tobytes()
    fields, bigendian = layout["fields"], layout["bigendian"]
    geom = {k: layout[k] for k in ("height", "width", "point_step", "row_step")}
    for ros1 in (False, True):
        msg = cloud_msg(ros1, fields, data, bigendian=bigendian, **geom)
        try:
            cloud = decode_pointcloud2(msg, "/fuzz")
        except LogFormatError as exc:
            event("rejected")
            assert str(exc).startswith("/fuzz: ")
            with pytest.raises(LogFormatError):
                decode_pointcloud2_raw(serialize(ros1, msg), ros1=ros1, where="/fuzz")
            continue
        event(f"decoded {'empty' if cloud.n_points_total == 0 else 'non-empty'} cloud")
        ref = reference(fields, data, bigendian=bigendian, **geom)
        assert_matches_reference(cloud, ref, geom["height"] * geom["width"])
        assert_same_cloud(
            decode_pointcloud2_raw(serialize(ros1, msg), ros1=ros1, where="/fuzz"), cloud
        )


# ------------------------------------------------------------------------------------------
# Real data: an Ouster OS1-64 ROS1 bag
# ------------------------------------------------------------------------------------------

OUSTER_BAG = "virtual-vehicle__pointcloudset/tests/testdata/test.derived_ros1.bag"
OUSTER_FIELDS = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 16, 7, 1),
                 ("t", 20, 6, 1), ("reflectivity", 24, 4, 1), ("ring", 26, 2, 1),
                 ("noise", 28, 4, 1), ("range", 32, 6, 1)]  # fmt: skip


def _read_topic(path: Path, topic: str) -> list[tuple[bytes, Any]]:
    from rosbags.highlevel import AnyReader

    with AnyReader([path]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [
            (bytes(raw), reader.deserialize(raw, conn.msgtype))
            for conn, _, raw in reader.messages(connections=conns)
        ]


@pytest.mark.realdata
def test_ouster_bag_clouds(realdata: Path) -> None:
    msgs = _read_topic(realdata / OUSTER_BAG, "/os1_cloud_node/points")
    assert len(msgs) == 2
    for i, (raw, msg) in enumerate(msgs):
        assert (msg.height, msg.width, msg.point_step) == (64, 2048, 48)
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == OUSTER_FIELDS
        cloud = decode_pointcloud2(msg, f"/os1_cloud_node/points #{i}")
        assert_same_cloud(decode_pointcloud2_raw(raw, ros1=True, where="/os1"), cloud)
        assert cloud.n_points_total == 64 * 2048 == len(cloud)  # no NaN: no-returns are zeros
        assert cloud.n_nonfinite == 0 and cloud.frame_id == "os1_lidar"
        expected = {"intensity": np.float32, "t": np.uint32, "reflectivity": np.uint16,
                    "ring": np.uint8, "noise": np.uint16, "range": np.uint32}  # fmt: skip
        assert {k: v.dtype.type for k, v in cloud.attrs.items()} == expected
        rng_mm = cloud.attrs["range"]
        hit = rng_mm > 0
        np.testing.assert_array_equal(cloud.xyz[~hit], 0.0)
        assert cloud.attrs["t"].max() < 100_000_000  # ns within one 10 Hz scan
        # This ouster_ros version computes xyz = range × beam direction from the lidar-frame
        # origin (no beam-origin offset), so |xyz| equals range/1000 up to float32 rounding:
        # the largest difference measured is 2.0e-6 m; 1e-5 m is the tolerance.
        dist = np.linalg.norm(cloud.xyz[hit].astype(np.float64), axis=1)
        np.testing.assert_allclose(dist, rng_mm[hit] / 1000.0, rtol=0, atol=1e-5)
        if i == 0:
            assert int(hit.sum()) == 45_716
            assert cloud.stamp_ns == 1_588_075_038_629_915_872
            assert (rng_mm[hit].min(), rng_mm[hit].max()) == (645, 14_703)  # 0.6–14.7 m
            # a row-major organised cloud: the first two rows are empty
            assert hit.reshape(64, 2048)[:2].sum() == 0


@pytest.mark.realdata
def test_ouster_bag_range_images(realdata: Path) -> None:
    msgs = _read_topic(realdata / OUSTER_BAG, "/img_node/range_image")
    assert len(msgs) == 2
    for _, msg in msgs:
        assert msg.encoding == "mono8"
        img = decode_image(msg, "/img_node/range_image")
        assert img.shape == (64, 2048) and img.dtype == np.uint8 and img.flags.c_contiguous
        np.testing.assert_array_equal(
            img, np.frombuffer(msg.data.tobytes(), np.uint8).reshape(64, 2048)
        )
        assert img.max() > 0


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------


def image_msg(
    ros1: bool, encoding: str, h: int, w: int, step: int, data: bytes, bigendian: bool = False
) -> Any:
    t = typestore(ros1).types
    return t["sensor_msgs/msg/Image"](
        header=header(ros1, frame="cam"), height=h, width=w, encoding=encoding,
        is_bigendian=bigendian, step=step, data=np.frombuffer(data, dtype=np.uint8),
    )  # fmt: skip


def padded(rows: np.ndarray, pad: int) -> bytes:
    """Row-major image bytes with ``pad`` junk bytes after every row."""
    flat = rows.reshape(rows.shape[0], -1).view(np.uint8)
    return np.concatenate([flat, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1).tobytes()


@pytest.mark.parametrize("ros1", [False, True])
def test_colour_and_mono8_images_with_row_padding(ros1: bool) -> None:
    rng = np.random.default_rng(20)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = decode_image(image_msg(ros1, "rgb8", 5, 7, 7 * 3 + 3, padded(rgb, 3)), "/cam")
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous
    msg = image_msg(ros1, "rgb8", 5, 7, 7 * 3, rgb.tobytes())
    out = decode_image(msg, "/cam")  # no padding: still a copy, never a view of the message
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable and not np.shares_memory(out, msg.data)
    bgr = rgb[:, :, ::-1].copy()
    out = decode_image(image_msg(ros1, "bgr8", 5, 7, 21, padded(bgr, 0)), "/cam")
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous and out.dtype == np.uint8
    mono = rng.integers(0, 256, (4, 9), dtype=np.uint8)
    for enc in ("mono8", "8UC1"):
        out = decode_image(image_msg(ros1, enc, 4, 9, 12, padded(mono, 3)), "/cam")
        np.testing.assert_array_equal(out, mono)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16_bit_images_honour_byte_order(encoding: str, bigendian: bool) -> None:
    rng = np.random.default_rng(21)
    img = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    stored = img.astype(">u2" if bigendian else "<u2")
    msg = image_msg(False, encoding, 6, 5, 5 * 2 + 4, padded(stored, 4), bigendian)
    out = decode_image(msg, "/thermal")
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize(
    ("encoding", "h", "w", "step", "n_bytes", "match"),
    [
        ("bayer_rggb8", 2, 2, 2, 4, "unsupported Image encoding 'bayer_rggb8' \\(supported: rgb8"),
        ("rgb8", 2, 4, 11, 22, "step 11 is smaller than width 4 × 3 bytes per 'rgb8' pixel = 12"),
        ("mono16", 2, 4, 8, 15, "data has 15 bytes; expected step 8 × height 2 = 16"),
        ("mono8", 0, 4, 4, 0, "Image is 4x0; expected a non-empty image"),
    ],
)
def test_bad_images_are_rejected(
    encoding: str, h: int, w: int, step: int, n_bytes: int, match: str
) -> None:
    with pytest.raises(LogFormatError, match="^/cam/image: .*" + match):
        decode_image(image_msg(True, encoding, h, w, step, bytes(n_bytes)), "/cam/image")


def test_image_rejects_non_messages() -> None:
    with pytest.raises(LogFormatError, match="/cam: not an Image message"):
        decode_image(object(), "/cam")


def compressed_msg(fmt: str, data: bytes) -> Any:
    t = typestore(False).types
    return t["sensor_msgs/msg/CompressedImage"](
        header=header(False, frame="cam"), format=fmt, data=np.frombuffer(data, dtype=np.uint8)
    )


def test_compressed_jpeg_and_png_decode_to_rgb() -> None:
    rng = np.random.default_rng(22)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), 8, 0), 8, 1)
    bgr = rgb[:, :, ::-1]
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = decode_compressed_image(
        compressed_msg("rgb8; jpeg compressed bgr8", jpeg.tobytes()), "/cam"
    )
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])
    err_rgb = np.abs(out.astype(int) - rgb.astype(int)).mean()  # lossy, but RGB and not BGR
    assert err_rgb < 10 < np.abs(out.astype(int) - bgr.astype(int)).mean()
    ok, png = cv2.imencode(".png", bgr)
    out = decode_compressed_image(compressed_msg("png", png.tobytes()), "/cam")
    np.testing.assert_array_equal(out, rgb)
    ok, png4 = cv2.imencode(".png", np.dstack([bgr, np.full(bgr.shape[:2], 200, np.uint8)]))
    np.testing.assert_array_equal(decode_compressed_image(compressed_msg("png", png4.tobytes()), "/cam"), rgb)  # fmt: skip
    grey = rgb[:, :, 0].copy()
    ok, png1 = cv2.imencode(".png", grey)
    np.testing.assert_array_equal(decode_compressed_image(compressed_msg("", png1.tobytes()), "/cam"), grey)  # fmt: skip


def test_compressed_16_bit_png_and_compressed_depth_stay_uint16() -> None:
    rng = np.random.default_rng(23)
    depth = rng.integers(0, 65536, (10, 12), dtype=np.uint16)
    ok, png = cv2.imencode(".png", depth)
    assert ok
    out = decode_compressed_image(
        compressed_msg("mono16; png compressed", png.tobytes()), "/thermal"
    )
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)
    cfg = struct.pack("<iff", 0, 0.0, 0.0)  # compressed_depth_image_transport ConfigHeader
    out = decode_compressed_image(
        compressed_msg("16UC1; compressedDepth png", cfg + png.tobytes()), "/depth"
    )
    np.testing.assert_array_equal(out, depth)


def test_bad_compressed_images_are_rejected() -> None:
    with pytest.raises(LogFormatError, match=r"^/cam: CompressedImage \(format 'jpeg'\) bytes are neither JPEG nor PNG \(start 00010203\)"):  # fmt: skip
        decode_compressed_image(compressed_msg("jpeg", bytes(range(40))), "/cam")
    with pytest.raises(LogFormatError, match="start empty"):
        decode_compressed_image(compressed_msg("jpeg", b""), "/cam")
    with pytest.raises(LogFormatError, match="unsupported CompressedImage format 'tiff'; expected jpeg or png"):  # fmt: skip
        decode_compressed_image(compressed_msg("tiff", b"II*\x00" + bytes(20)), "/cam")
    broken_png = b"\x89PNG\r\n\x1a\n" + bytes(50)
    with pytest.raises(LogFormatError, match="could not be decoded"):
        decode_compressed_image(compressed_msg("png", broken_png), "/cam")
    with pytest.raises(LogFormatError, match="32FC1 compressedDepth\\) is not supported"):
        decode_compressed_image(compressed_msg("32FC1; compressedDepth", bytes(20)), "/cam")
    with pytest.raises(LogFormatError, match="/cam: not a CompressedImage message"):
        decode_compressed_image(object(), "/cam")


@given(st.binary(max_size=300), st.sampled_from(["jpeg", "png", "", "16UC1; compressedDepth png"]))
@settings(max_examples=100, deadline=None)
def test_fuzz_compressed_images_decode_or_raise(data: bytes, fmt: str) -> None:
    _, png = cv2.imencode(".png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    for blob in (data, png.tobytes()[: len(data)], b"\xff\xd8\xff" + data):
        try:
            img = decode_compressed_image(compressed_msg(fmt, blob), "/cam")
        except LogFormatError:
            continue
        assert img.dtype in (np.uint8, np.uint16) and img.ndim in (2, 3)


# ------------------------------------------------------------------------------------------
# CameraInfo
# ------------------------------------------------------------------------------------------

K = [[1266.4, 0.0, 816.3], [0.0, 1265.9, 491.5], [0.0, 0.0, 1.0]]


def camera_info(
    ros1: bool,
    model: str,
    d: list[float],
    k: list[list[float]] = K,
    w: int = 1600,
    h: int = 900,
    binning: tuple[int, int] = (0, 0),
    roi: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Any:
    t = typestore(ros1).types
    roi_msg = t["sensor_msgs/msg/RegionOfInterest"](
        x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3], do_rectify=False
    )
    kk = np.asarray(k, dtype=np.float64)
    p = np.c_[kk, np.zeros(3)]
    names = ("D", "K", "R", "P") if ros1 else ("d", "k", "r", "p")
    values = dict(zip(names, (np.asarray(d, np.float64), kk.ravel(), np.eye(3).ravel(), p.ravel()), strict=True))  # fmt: skip
    return t["sensor_msgs/msg/CameraInfo"](
        header=header(ros1, frame="cam"), height=h, width=w, distortion_model=model,
        binning_x=binning[0], binning_y=binning[1], roi=roi_msg, **values,
    )  # fmt: skip


def points_in_view(n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(30)
    z = rng.uniform(2.0, 40.0, n)
    return np.c_[rng.uniform(-0.5, 0.5, (n, 2)) * z[:, None], z]


PLUMB_BOB = [-0.28, 0.09, 0.0012, -0.0008, -0.013]
RATIONAL = [-0.28, 0.09, 0.0012, -0.0008, -0.013, 0.004, 0.0015, -0.0006]
EQUIDISTANT = [0.05, -0.01, 0.002, -0.0004]


@pytest.mark.parametrize("ros1", [False, True])
@pytest.mark.parametrize(
    ("model", "d", "ours"),
    [("plumb_bob", PLUMB_BOB, "radtan"), ("rational_polynomial", RATIONAL, "radtan")],
)
def test_camera_info_radtan_models_project_like_opencv(
    ros1: bool, model: str, d: list[float], ours: str
) -> None:
    cam = camera_model_from_camera_info(camera_info(ros1, model, d), "/cam/camera_info")
    assert isinstance(cam, CameraModel) and cam.distortion == ours
    assert cam.size == (1600, 900)
    np.testing.assert_array_equal(cam.K, np.asarray(K))
    np.testing.assert_array_equal(cam.opencv_distortion()[: len(d)], d)
    pts = points_in_view()
    uv, _, _ = cam.project(pts)
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), np.asarray(K), np.asarray(d))
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-6)
    und = cam.undistort_points(uv)
    ref_und = cv2.undistortPoints(
        uv.reshape(-1, 1, 2), np.asarray(K), np.asarray(d), P=np.asarray(K),
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12),
    ).reshape(-1, 2)  # fmt: skip
    np.testing.assert_allclose(und, ref_und, atol=1e-4)
    back = cam.unproject(uv, pts[:, 2])
    np.testing.assert_allclose(back, pts, atol=1e-6)


@pytest.mark.parametrize("ros1", [False, True])
def test_camera_info_equidistant_is_opencv_fisheye(ros1: bool) -> None:
    cam = camera_model_from_camera_info(camera_info(ros1, "equidistant", EQUIDISTANT), "/fisheye")
    assert cam.distortion == "fisheye"
    pts = points_in_view()
    uv, _, _ = cam.project(pts)
    ref, _ = cv2.fisheye.projectPoints(
        pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), np.asarray(K), np.asarray(EQUIDISTANT)
    )
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-6)


@pytest.mark.parametrize(
    ("model", "d"),
    [("plumb_bob", []), ("plumb_bob", [0.0] * 5), ("rational_polynomial", [0.0] * 8),
     ("equidistant", [0.0] * 4), ("", []), ("none", [0.0, 0.0])],
)  # fmt: skip
def test_camera_info_without_distortion(model: str, d: list[float]) -> None:
    cam = camera_model_from_camera_info(camera_info(False, model, d), "/cam")
    assert cam.distortion == "none" and cam.coeffs.size == 0


def test_camera_info_binning_and_roi_describe_the_published_image() -> None:
    full = camera_model_from_camera_info(camera_info(False, "plumb_bob", PLUMB_BOB), "/cam")
    pts = points_in_view()
    uv_full, _, _ = full.project(pts)
    roi = camera_model_from_camera_info(
        camera_info(False, "plumb_bob", PLUMB_BOB, roi=(100, 50, 800, 600)), "/cam"
    )
    assert roi.size == (800, 600)
    np.testing.assert_allclose(roi.project(pts)[0], uv_full - [100, 50], atol=1e-9)
    binned = camera_model_from_camera_info(
        camera_info(True, "plumb_bob", PLUMB_BOB, binning=(2, 2)), "/cam"
    )
    assert binned.size == (800, 450)
    # pixel centres: binned pixel u' covers full pixels 2u' and 2u'+1, centred at 2u' + 0.5
    np.testing.assert_allclose(binned.project(pts)[0], (uv_full + 0.5) / 2 - 0.5, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": [[0.0] * 3] * 3}, "K = .* is not a valid intrinsic matrix.*all zeros means the camera is not calibrated"),
        ({"k": [[500.0, 0, 320], [1.0, 500, 240], [0, 0, 1]]}, "is not a valid intrinsic matrix"),
        ({"k": [[500.0, 0, 320], [0, 500, 240], [0, 0, 2]]}, "is not a valid intrinsic matrix"),
        ({"k": [[-500.0, 0, 320], [0, 500, 240], [0, 0, 1]]}, "is not a valid intrinsic matrix"),
        ({"w": 0}, "image size is 0x900; expected a calibrated camera"),
        ({"h": 0}, "image size is 1600x0"),
        ({"model": "kannala_brandt"}, "unknown CameraInfo distortion_model 'kannala_brandt'; expected one of plumb_bob, rational_polynomial, equidistant"),
        ({"model": "plumb_bob", "d": [0.1] * 4}, "distortion_model 'plumb_bob' takes 5 coefficients, D has 4"),
        ({"model": "rational_polynomial", "d": PLUMB_BOB}, "'rational_polynomial' takes 8 coefficients, D has 5"),
        ({"model": "equidistant", "d": PLUMB_BOB}, "'equidistant' takes 4 coefficients, D has 5"),
        ({"model": "", "d": PLUMB_BOB}, "has distortion_model '' but non-zero D"),
        ({"model": "plumb_bob", "d": [np.nan] * 5}, "D has non-finite values"),
        ({"roi": (1000, 0, 800, 600)}, "roi \\(1000, 0, 800x600\\) does not fit the 1600x900 image"),
        ({"binning": (4000, 1)}, "binning 4000x1 leaves an empty 0x900 image"),
    ],
)  # fmt: skip
def test_bad_camera_info_is_rejected(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"model": "plumb_bob", "d": PLUMB_BOB, **kwargs}
    model, d = args.pop("model"), args.pop("d")
    with pytest.raises(CalibrationError, match="^/cam/camera_info: .*" + match):
        camera_model_from_camera_info(camera_info(True, model, d, **args), "/cam/camera_info")


def test_camera_info_with_wrong_shapes_or_missing_fields() -> None:
    msg = camera_info(False, "plumb_bob", PLUMB_BOB)
    msg.k = np.zeros(6)
    with pytest.raises(CalibrationError, match="/cam: CameraInfo K has 6 values; expected 9"):
        camera_model_from_camera_info(msg, "/cam")
    with pytest.raises(CalibrationError, match="/cam: not a usable CameraInfo message"):
        camera_model_from_camera_info(object(), "/cam")


def test_camera_info_skew_is_kept() -> None:
    k = [[800.0, 1.5, 320.0], [0.0, 790.0, 240.0], [0.0, 0.0, 1.0]]
    cam = camera_model_from_camera_info(
        camera_info(False, "plumb_bob", [], k=k, w=640, h=480), "/cam"
    )
    assert cam.K[0, 1] == 1.5 and math.isclose(cam.fy, 790.0)
