"""PCD reading/writing, the LZF codec and the nuScenes radar filters."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avfusion.errors import AVFusionError, LogFormatError
from avfusion.io.pcd import (
    NUSCENES_RADAR_FIELDS,
    lzf_compress,
    lzf_decompress,
    parse_pcd_header,
    radar_filter,
    read_pcd,
    read_pcd_info,
    write_pcd,
)

ENCODINGS = ("ascii", "binary", "binary_compressed")
DTYPES = (
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
)

# Vectors produced by the reference liblzf (python-lzf 0.2.6, lzf.compress), not by our codec.
LZF_VECTORS = [
    (b"abcabcabc", b"\x03abca \x02\x01bc"),
    (b"a" * 300, b"\x01aa\xe0\xff\x00\xe0\x17\x00\x01aa"),
    (b"hello hello hello world", b"\x06hello h\xe0\x02\x05\x04world"),
    (bytes(range(40)), b"\x1f" + bytes(range(32)) + b"\x07" + bytes(range(32, 40))),
]


def _random_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {
        "x": rng.normal(0, 50, n).astype(np.float32),
        "y": rng.normal(0, 50, n).astype(np.float32),
        "z": rng.normal(0, 5, n).astype(np.float32),
    }
    for dt in DTYPES:
        info = np.finfo(dt) if np.issubdtype(dt, np.floating) else np.iinfo(dt)
        if np.issubdtype(dt, np.floating):
            cols[f"f_{np.dtype(dt).name}"] = rng.normal(0, 1e3, n).astype(dt)
        else:
            cols[f"i_{np.dtype(dt).name}"] = rng.integers(
                info.min, info.max, n, dtype=dt, endpoint=True
            )
    cols["normal"] = rng.normal(size=(n, 3)).astype(np.float32)  # COUNT 3
    cols["timestamp"] = (1_532_402_927_647_951 + rng.integers(0, 10**6, n)).astype(
        np.float64
    ) * 1e-6
    return cols


# ------------------------------------------------------------------------------------------
# LZF
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "compressed"), LZF_VECTORS)
def test_lzf_decompresses_reference_vectors(raw: bytes, compressed: bytes) -> None:
    assert lzf_decompress(compressed, len(raw)).tobytes() == raw


@given(st.binary(max_size=3000), st.integers(0, 3))
@settings(max_examples=200, deadline=None)
def test_lzf_round_trip(data: bytes, repeat: int) -> None:
    data = data * (repeat + 1)
    assert lzf_decompress(lzf_compress(data), len(data)).tobytes() == data


def test_lzf_compresses_repetitive_data() -> None:
    data = np.tile(np.arange(64, dtype=np.uint8), 1000).tobytes()
    assert len(lzf_compress(data)) < len(data) // 20


@pytest.mark.parametrize(
    ("stream", "size", "match"),
    [
        (b"\x05abc", 6, "literal run goes past the end"),
        (b"\x01ab", 1, "more bytes than"),
        (b"\x00a\x20", 3, "back-reference is cut off"),
        (b"\x00a\x20\x05", 3, "before the start of the output"),
        (b"\x00a\xe0", 300, "back-reference is cut off"),
        (b"\x00a\x20\x00", 2, "more bytes than"),
        (b"\x01ab", 5, "decompresses to 2 bytes"),
        (b"", 4, "no compressed data"),
    ],
)
def test_lzf_rejects_corrupt_streams(stream: bytes, size: int, match: str) -> None:
    with pytest.raises(LogFormatError, match=match):
        lzf_decompress(stream, size)


@given(st.binary(max_size=200), st.integers(0, 600))
@settings(max_examples=300, deadline=None)
def test_lzf_random_input_never_escapes(stream: bytes, size: int) -> None:
    try:
        out = lzf_decompress(stream, size)
    except LogFormatError:
        return
    assert out.size == size


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_all_dtypes(tmp_path: Path, encoding: str) -> None:
    cols = _random_columns(np.random.default_rng(7), 257)
    path = write_pcd(tmp_path / "c.pcd", cols, encoding=encoding)  # type: ignore[arg-type]
    cloud, info = read_pcd_info(path)
    assert info.header.data == encoding
    assert info.n_nonfinite == 0
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.shape == (257, 3)
    np.testing.assert_array_equal(cloud.xyz, np.stack([cols["x"], cols["y"], cols["z"]], axis=1))
    assert set(cloud.attrs) == set(cols) - {"x", "y", "z"}
    for name, values in cols.items():
        if name in "xyz":
            continue
        got = cloud.attrs[name]
        assert got.dtype == values.dtype, name
        np.testing.assert_array_equal(got, values, err_msg=name)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_empty_cloud(tmp_path: Path, encoding: str) -> None:
    cols = {a: np.zeros(0, np.float32) for a in "xyz"} | {"intensity": np.zeros(0, np.uint8)}
    cloud = read_pcd(write_pcd(tmp_path / "e.pcd", cols, encoding=encoding))  # type: ignore[arg-type]
    assert len(cloud) == 0 and cloud.attrs["intensity"].dtype == np.uint8


@given(
    n=st.integers(0, 60),
    dtypes=st.lists(st.sampled_from(DTYPES), min_size=0, max_size=4),
    encoding=st.sampled_from(ENCODINGS),
    seed=st.integers(0, 2**32 - 1),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_round_trip_property(
    tmp_path: Path, n: int, dtypes: list[type], encoding: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    xyz_t = np.float64 if seed % 2 else np.float32
    cols = {a: rng.normal(size=n).astype(xyz_t) for a in "xyz"}
    for i, dt in enumerate(dtypes):
        if np.issubdtype(dt, np.floating):
            cols[f"c{i}"] = rng.normal(size=n).astype(dt)
        else:
            info = np.iinfo(dt)
            cols[f"c{i}"] = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
    cloud = read_pcd(write_pcd(tmp_path / "p.pcd", cols, encoding=encoding))  # type: ignore[arg-type]
    assert cloud.xyz.dtype == xyz_t
    np.testing.assert_array_equal(cloud.xyz, np.stack([cols[a] for a in "xyz"], axis=1))
    for i, dt in enumerate(dtypes):
        np.testing.assert_array_equal(cloud.attrs[f"c{i}"], cols[f"c{i}"])
        assert cloud.attrs[f"c{i}"].dtype == dt


def test_binary_attributes_are_views(tmp_path: Path) -> None:
    cols = _random_columns(np.random.default_rng(1), 100)
    cloud = read_pcd(write_pcd(tmp_path / "v.pcd", cols, encoding="binary"))
    assert cloud.attrs["i_uint16"].base is not None  # a view into the file buffer
    assert not cloud.attrs["i_uint16"].flags.owndata


def test_nan_points_are_kept_and_counted(tmp_path: Path) -> None:
    x = np.array([1.0, np.nan, 3.0, np.inf], np.float32)
    cols = {"x": x, "y": np.zeros(4, np.float32), "z": np.zeros(4, np.float32)}
    for encoding in ENCODINGS:
        cloud, info = read_pcd_info(
            write_pcd(tmp_path / f"n_{encoding}.pcd", cols, encoding=encoding)
        )  # type: ignore[arg-type]
        assert len(cloud) == 4 and info.n_nonfinite == 2
        assert np.isnan(cloud.xyz[1, 0]) and np.isinf(cloud.xyz[3, 0])


def test_handwritten_ascii_with_padding_and_comments(tmp_path: Path) -> None:
    text = (
        "# a comment\nVERSION .7\nFIELDS x y z _ rgb label\nSIZE 4 4 4 1 4 2\nTYPE F F F U U I\n"
        "COUNT 1 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n"
        "1.5 2 3 0 4278190335 -3\n4 5 6e1 0 0 7\n"
    )
    p = tmp_path / "h.pcd"
    p.write_text(text)
    cloud = read_pcd(p)
    np.testing.assert_array_equal(cloud.xyz, [[1.5, 2, 3], [4, 5, 60]])
    assert set(cloud.attrs) == {"rgb", "label"}
    assert cloud.attrs["rgb"].tolist() == [4278190335, 0]
    assert cloud.attrs["label"].tolist() == [-3, 7]


def test_organised_cloud_width_height(tmp_path: Path) -> None:
    p = tmp_path / "o.pcd"
    body = np.arange(2 * 3 * 3, dtype="<f4").tobytes()
    header = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 3\nHEIGHT 2\nDATA binary\n"
    p.write_bytes(header.encode() + body)
    assert len(read_pcd(p)) == 6


# ------------------------------------------------------------------------------------------
# nuScenes radar
# ------------------------------------------------------------------------------------------

_RADAR_TYPES = ["F"] * 3 + ["I"] * 2 + ["F"] * 5 + ["I"] * 8
_RADAR_SIZES = [4, 4, 4, 1, 2, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1]


def _write_radar(path: Path, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """A nuScenes-layout radar file (its exact FIELDS/SIZE/TYPE lines, binary)."""
    recs = {}
    for name, typ, size in zip(NUSCENES_RADAR_FIELDS, _RADAR_TYPES, _RADAR_SIZES, strict=True):
        dt = np.dtype(f"<{'f' if typ == 'F' else 'i'}{size}")
        recs[name] = (
            rng.normal(0, 20, n).astype(dt) if typ == "F" else rng.integers(0, 8, n).astype(dt)
        )
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        f"FIELDS {' '.join(NUSCENES_RADAR_FIELDS)}\nSIZE {' '.join(map(str, _RADAR_SIZES))}\n"
        f"TYPE {' '.join(_RADAR_TYPES)}\nCOUNT {' '.join(['1'] * 18)}\nWIDTH {n}\nHEIGHT 1\n"
        f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA binary\n"
    )
    dtype = np.dtype([(k, v.dtype) for k, v in recs.items()])
    arr = np.empty(n, dtype)
    for k, v in recs.items():
        arr[k] = v
    path.write_bytes(header.encode() + arr.tobytes())
    return recs


def test_nuscenes_radar_file_and_devkit_filters(tmp_path: Path) -> None:
    recs = _write_radar(tmp_path / "radar.pcd", np.random.default_rng(3), 500)
    cloud = read_pcd(tmp_path / "radar.pcd", t_ns=5)
    assert cloud.sensor.modality == "radar" and cloud.t_ns == 5
    assert set(cloud.attrs) == set(NUSCENES_RADAR_FIELDS) - {"x", "y", "z"}
    np.testing.assert_array_equal(cloud.attrs["vx_comp"], recs["vx_comp"])

    # The devkit's from_file: keep invalid_state in [0], dyn_prop in range(7), ambig_state in [3].
    keep = (
        np.isin(recs["invalid_state"], [0])
        & np.isin(recs["dyn_prop"], range(7))
        & np.isin(recs["ambig_state"], [3])
    )
    res = radar_filter(cloud)
    assert len(res.cloud) == keep.sum() and res.n_removed == 500 - keep.sum()
    assert res.removed_by["invalid_state"] == np.count_nonzero(recs["invalid_state"] != 0)
    np.testing.assert_array_equal(res.cloud.xyz[:, 0], recs["x"][keep])

    off = radar_filter(cloud, enabled=False)
    assert off.n_removed == 0 and len(off.cloud) == 500
    only_dyn = radar_filter(cloud, invalid_states=None, ambig_states=None, dynprops=[0, 2, 6])
    assert only_dyn.n_removed == np.count_nonzero(~np.isin(recs["dyn_prop"], [0, 2, 6]))


def test_radar_filter_needs_its_fields(tmp_path: Path) -> None:
    cols = {a: np.zeros(3, np.float32) for a in "xyz"}
    cloud = read_pcd(write_pcd(tmp_path / "l.pcd", cols))
    with pytest.raises(LogFormatError, match="no 'invalid_state' field"):
        radar_filter(cloud)
    assert radar_filter(cloud, invalid_states=None, dynprops=None, ambig_states=None).n_removed == 0


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------

_GOOD_HEADER = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA binary\n"


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (_GOOD_HEADER.replace("DATA binary\n", ""), "no 'DATA' line"),
        (_GOOD_HEADER.replace("TYPE F F F", "TYPE F F Q"), "unknown TYPE/SIZE Q4"),
        (_GOOD_HEADER.replace("SIZE 4 4 4", "SIZE 4 4 3"), "unknown TYPE/SIZE F3"),
        (_GOOD_HEADER.replace("POINTS 2", "POINTS 3"), "POINTS 3 does not equal WIDTH"),
        (_GOOD_HEADER.replace("SIZE 4 4 4", "SIZE 4 4"), "SIZE has 2 values but FIELDS has 3"),
        (_GOOD_HEADER.replace("FIELDS x y z\n", ""), "no FIELDS line"),
        (_GOOD_HEADER.replace("WIDTH 2", "WIDTH two"), "WIDTH must be one integer"),
        (_GOOD_HEADER.replace("DATA binary", "DATA zip"), "unknown DATA 'zip'"),
        (_GOOD_HEADER.replace("FIELDS x y z", "FIELDS x x z"), "duplicate field names"),
        (_GOOD_HEADER.replace("COUNT 1 1 1", "COUNT 1 0 1"), "COUNT 0"),
        (_GOOD_HEADER.replace("FIELDS x y z", "FIELDS x y w"), "no 'z' field"),
    ],
)
def test_bad_headers(tmp_path: Path, header: str, match: str) -> None:
    p = tmp_path / "bad.pcd"
    p.write_bytes(header.encode() + bytes(24))
    with pytest.raises(LogFormatError, match=match):
        read_pcd(p)


def test_non_ascii_header(tmp_path: Path) -> None:
    p = tmp_path / "bin.pcd"
    p.write_bytes(b"\xff\xfe\x00garbage\n" + bytes(50))
    with pytest.raises(LogFormatError, match=r"bin\.pcd.*not ASCII"):
        read_pcd(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="cannot read PCD file"):
        read_pcd(tmp_path / "nope.pcd")


@pytest.mark.parametrize(
    ("encoding", "cut", "match"),
    [
        ("binary", 5, "DATA binary is truncated"),
        ("ascii", 400, "DATA ascii is truncated"),
        ("binary_compressed", 5, "binary_compressed data is truncated"),
    ],
)
def test_truncated_data(tmp_path: Path, encoding: str, cut: int, match: str) -> None:
    cols = _random_columns(np.random.default_rng(2), 50)
    p = write_pcd(tmp_path / "t.pcd", cols, encoding=encoding)  # type: ignore[arg-type]
    data = p.read_bytes()
    p.write_bytes(data[:-cut])
    with pytest.raises(LogFormatError, match=match):
        read_pcd(p)


def test_compressed_size_mismatch(tmp_path: Path) -> None:
    cols = {a: np.arange(10, dtype=np.float32) for a in "xyz"}
    p = write_pcd(tmp_path / "c.pcd", cols, encoding="binary_compressed")
    header = parse_pcd_header(p.read_bytes())
    data = bytearray(p.read_bytes())
    data[header.data_offset + 4 : header.data_offset + 8] = np.array([99], "<u4").tobytes()
    p.write_bytes(bytes(data))
    with pytest.raises(LogFormatError, match="uncompressed size 99 does not match"):
        read_pcd(p)


def test_ascii_garbage_value(tmp_path: Path) -> None:
    p = tmp_path / "g.pcd"
    p.write_text(_GOOD_HEADER.replace("binary", "ascii") + "1 2 3\n4 five 6\n")
    with pytest.raises(LogFormatError, match="field 'y' holds a value that is not a number"):
        read_pcd(p)


def test_ascii_wrong_value_count(tmp_path: Path) -> None:
    p = tmp_path / "w.pcd"
    p.write_text(_GOOD_HEADER.replace("binary", "ascii") + "1 2 3\n4 5\n")
    with pytest.raises(LogFormatError, match="DATA ascii point 1 has 2 values, expected 3"):
        read_pcd(p)
    p.write_text(_GOOD_HEADER.replace("binary", "ascii") + "1 2 3\n4 5 6\n7 8 9\n")
    with pytest.raises(LogFormatError, match="DATA ascii has 3 lines, expected 2 points"):
        read_pcd(p)


def test_ascii_out_of_range(tmp_path: Path) -> None:
    p = tmp_path / "r.pcd"
    hdr = (
        _GOOD_HEADER.replace("binary", "ascii")
        .replace("FIELDS x y z", "FIELDS x y z r")
        .replace("SIZE 4 4 4", "SIZE 4 4 4 1")
    )
    hdr = hdr.replace("TYPE F F F", "TYPE F F F U").replace("COUNT 1 1 1", "COUNT 1 1 1 1")
    p.write_text(hdr + "1 2 3 300\n4 5 6 1\n")
    with pytest.raises(LogFormatError, match="field 'r' has values outside the range of uint8"):
        read_pcd(p)


@given(data=st.data())
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzz_mutations_end_in_result_or_logformaterror(
    tmp_path: Path, data: st.DataObject
) -> None:
    encoding = data.draw(st.sampled_from(ENCODINGS))
    cols = _random_columns(np.random.default_rng(0), 20)
    p = write_pcd(tmp_path / f"f_{encoding}.pcd", cols, encoding=encoding)  # type: ignore[arg-type]
    raw = bytearray(p.read_bytes())
    cut = data.draw(st.integers(0, len(raw)))
    raw = raw[:cut] if data.draw(st.booleans()) else raw
    for _ in range(data.draw(st.integers(0, 8))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    q = tmp_path / "fuzz.pcd"
    q.write_bytes(bytes(raw))
    with contextlib.suppress(AVFusionError):
        read_pcd(q)


def test_write_pcd_rejects_bad_columns(tmp_path: Path) -> None:
    with pytest.raises(AVFusionError, match="column 'y' has 2 rows, expected 3"):
        write_pcd(tmp_path / "w.pcd", {"x": np.zeros(3), "y": np.zeros(2)})
    with pytest.raises(AVFusionError, match="column 'c' has dtype complex128"):
        write_pcd(tmp_path / "w.pcd", {"c": np.zeros(3, complex)})
    with pytest.raises(AVFusionError, match="unknown encoding 'zip'"):
        write_pcd(tmp_path / "w.pcd", {"x": np.zeros(3)}, encoding="zip")  # type: ignore[arg-type]
    with pytest.raises(AVFusionError, match="needs at least one column"):
        write_pcd(tmp_path / "w.pcd", {})
    with pytest.raises(AVFusionError, match="invalid field name"):
        write_pcd(tmp_path / "w.pcd", {"a b": np.zeros(3)})
