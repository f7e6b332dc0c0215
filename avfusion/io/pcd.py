"""PCD v0.7 point clouds: read and write (DATA ascii, binary, binary_compressed) and radar filters.

Layout (PCL's format, little-endian):

* a text header, one ``KEY values`` line each: ``VERSION``, ``FIELDS``, ``SIZE``, ``TYPE``,
  ``COUNT`` (optional, default 1), ``WIDTH``, ``HEIGHT``, ``VIEWPOINT`` (optional), ``POINTS``
  (optional, default WIDTH*HEIGHT) and finally ``DATA ascii|binary|binary_compressed``;
  ``#`` lines are comments.
* ``ascii``: one point per line, values separated by white space.
* ``binary``: the points as packed records (row-major), read without copying through
  ``np.frombuffer`` with a structured dtype.
* ``binary_compressed``: ``uint32 compressed_size``, ``uint32 uncompressed_size``, then an LZF
  stream whose decompressed bytes are column-major (all values of field 0, then of field 1 ...).

Fields: TYPE F (float), I (signed), U (unsigned) with SIZE 1, 2, 4 or 8 (F only 4 or 8),
COUNT >= 1. Fields named ``_`` are padding and are skipped. ``x``, ``y``, ``z`` become
``PointCloud.xyz`` (float32, or float64 when any of them is stored as F8); every other field
goes to ``attrs`` under its own name ((N,) arrays, (N, COUNT) when COUNT > 1).

NaN handling: points with non-finite coordinates (PCL's "no return" in organised clouds) are
kept, never dropped; their count is logged and available as ``PcdInfo.n_nonfinite`` from
``read_pcd_info``.

The LZF codec is implemented here (numba) with bounds checks on every read and write: corrupt
input raises ``LogFormatError``, it never reads or writes outside its buffers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numba
import numpy as np
import numpy.typing as npt

from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, LogFormatError
from avfusion.types import PointCloud, Sensor

__all__ = [
    "NUSCENES_RADAR_FIELDS",
    "PcdHeader",
    "PcdInfo",
    "RadarFilterResult",
    "lzf_compress",
    "lzf_decompress",
    "parse_pcd_header",
    "radar_filter",
    "read_pcd",
    "read_pcd_info",
    "write_pcd",
]

logger = logging.getLogger(__name__)

PcdEncoding = Literal["ascii", "binary", "binary_compressed"]

#: The 18 fields of a nuScenes radar ``.pcd`` file, in file order.
NUSCENES_RADAR_FIELDS: tuple[str, ...] = (
    "x",
    "y",
    "z",
    "dyn_prop",
    "id",
    "rcs",
    "vx",
    "vy",
    "vx_comp",
    "vy_comp",
    "is_quality_valid",
    "ambig_state",
    "x_rms",
    "y_rms",
    "invalid_state",
    "pdh0",
    "vx_rms",
    "vy_rms",
)

_TYPE_CODES: dict[tuple[str, int], str] = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("I", 1): "i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
    ("U", 1): "u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
}
_MAX_HEADER_BYTES = 1 << 16
_LZF_MAX_OFF = 1 << 13
_LZF_MAX_REF = (1 << 8) + (1 << 3)  # 264: longest back-reference


# --------------------------------------------------------------------------------------------
# LZF codec (liblzf format)
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _lzf_decompress_kernel(src: npt.NDArray[np.uint8], dst: npt.NDArray[np.uint8]) -> int:
    """Decode ``src`` into ``dst``; return bytes written, or a negative error code.

    -1: a literal run goes past the end of the input, -2: past the end of the output,
    -3: a back-reference is cut off by the end of the input, -4: a back-reference points
    before the start of the output, -5: a back-reference goes past the end of the output.
    """
    ip = 0
    op = 0
    n_in = src.shape[0]
    n_out = dst.shape[0]
    while ip < n_in:
        ctrl = np.int64(src[ip])
        ip += 1
        if ctrl < 32:
            length = ctrl + 1
            if ip + length > n_in:
                return -1
            if op + length > n_out:
                return -2
            for k in range(length):
                dst[op + k] = src[ip + k]
            ip += length
            op += length
        else:
            length = ctrl >> 5
            if length == 7:
                if ip >= n_in:
                    return -3
                length += np.int64(src[ip])
                ip += 1
            if ip >= n_in:
                return -3
            ref = op - ((ctrl & 0x1F) << 8) - np.int64(src[ip]) - 1
            ip += 1
            length += 2
            if ref < 0:
                return -4
            if op + length > n_out:
                return -5
            for k in range(length):  # byte by byte: source and destination may overlap
                dst[op + k] = dst[ref + k]
            op += length
    return op


_LZF_ERRORS = {
    -1: "a literal run goes past the end of the compressed data",
    -2: "the data decompresses to more bytes than the header's uncompressed size",
    -3: "a back-reference is cut off by the end of the compressed data",
    -4: "a back-reference points before the start of the output",
    -5: "the data decompresses to more bytes than the header's uncompressed size",
}


def lzf_decompress(
    data: bytes | npt.NDArray[np.uint8], uncompressed_size: int, where: str = "LZF data"
) -> npt.NDArray[np.uint8]:
    """Decompress an LZF stream that must expand to exactly ``uncompressed_size`` bytes."""
    src = (
        np.frombuffer(data, dtype=np.uint8)
        if isinstance(data, bytes | bytearray | memoryview)
        else np.asarray(data, np.uint8)
    )
    if uncompressed_size < 0:
        raise LogFormatError(f"{where}: negative uncompressed size {uncompressed_size}")
    dst = np.empty(uncompressed_size, dtype=np.uint8)
    if src.size == 0:
        if uncompressed_size == 0:
            return dst
        raise LogFormatError(f"{where}: no compressed data but {uncompressed_size} bytes expected")
    written = int(_lzf_decompress_kernel(np.ascontiguousarray(src), dst))
    if written < 0:
        raise LogFormatError(f"{where}: corrupt LZF stream: {_LZF_ERRORS[written]}")
    if written != uncompressed_size:
        raise LogFormatError(
            f"{where}: LZF stream decompresses to {written} bytes, header says {uncompressed_size}"
        )
    return dst


@numba.njit(cache=True)
def _emit_literals(
    src: npt.NDArray[np.uint8], dst: npt.NDArray[np.uint8], start: int, end: int, op: int
) -> int:
    """Write src[start:end] as LZF literal runs (at most 32 bytes each); return the new op."""
    while start < end:
        run = min(end - start, 32)
        dst[op] = run - 1
        op += 1
        for k in range(run):
            dst[op + k] = src[start + k]
        op += run
        start += run
    return op


@numba.njit(cache=True)
def _lzf_compress_kernel(src: npt.NDArray[np.uint8], dst: npt.NDArray[np.uint8]) -> int:
    """Greedy LZF compressor (hash of 3 bytes → last position). ``dst`` must be large enough
    (len(src) + len(src) // 32 + 2 always is). Returns the number of bytes written."""
    n = src.shape[0]
    hbits = 16
    htab = np.full(1 << hbits, -1, dtype=np.int64)
    ip = 0
    op = 0
    lit_start = 0

    while ip + 2 < n:
        h = (
            (np.int64(src[ip]) << 16) | (np.int64(src[ip + 1]) << 8) | np.int64(src[ip + 2])
        ) * 2654435761
        h = (h >> (32 - hbits)) & ((1 << hbits) - 1)
        ref = htab[h]
        htab[h] = ip
        off = ip - ref - 1
        if (
            ref >= 0
            and off < 8192
            and src[ref] == src[ip]
            and src[ref + 1] == src[ip + 1]
            and src[ref + 2] == src[ip + 2]
        ):
            maxlen = n - ip
            if maxlen > 264:
                maxlen = 264
            length = 3
            while length < maxlen and src[ref + length] == src[ip + length]:
                length += 1
            op = _emit_literals(src, dst, lit_start, ip, op)
            enc = length - 2
            if enc < 7:
                dst[op] = (enc << 5) | (off >> 8)
                op += 1
            else:
                dst[op] = (7 << 5) | (off >> 8)
                dst[op + 1] = enc - 7
                op += 2
            dst[op] = off & 0xFF
            op += 1
            ip += length
            lit_start = ip
        else:
            ip += 1
    return _emit_literals(src, dst, lit_start, n, op)


def lzf_compress(data: bytes | npt.NDArray[np.uint8]) -> bytes:
    """Compress bytes into an LZF stream (liblzf format, readable by PCL)."""
    src = np.ascontiguousarray(
        np.frombuffer(data, dtype=np.uint8)
        if isinstance(data, bytes | bytearray | memoryview)
        else data,
        dtype=np.uint8,
    )
    dst = np.empty(src.size + src.size // 32 + 16, dtype=np.uint8)
    n = int(_lzf_compress_kernel(src, dst))
    return dst[:n].tobytes()


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PcdHeader:
    """The parsed header of a PCD file; ``data_offset`` is where the point data starts."""

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]
    counts: tuple[int, ...]
    width: int
    height: int
    points: int
    viewpoint: tuple[float, ...]
    data: PcdEncoding
    data_offset: int
    version: str = "0.7"

    @property
    def point_step(self) -> int:
        return sum(s * c for s, c in zip(self.sizes, self.counts, strict=True))

    def record_dtype(self) -> np.dtype[Any]:
        """Structured dtype of one packed point (padding fields ``_`` left unnamed)."""
        names: list[str] = []
        formats: list[Any] = []
        offsets: list[int] = []
        offset = 0
        for name, size, typ, count in zip(
            self.fields, self.sizes, self.types, self.counts, strict=True
        ):
            if name != "_":
                code = _TYPE_CODES[(typ, size)]
                names.append(name)
                formats.append(np.dtype(code) if count == 1 else np.dtype((code, (count,))))
                offsets.append(offset)
            offset += size * count
        return np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": offset}
        )


def parse_pcd_header(buf: bytes | memoryview, where: str = "PCD") -> PcdHeader:
    """Parse the text header at the start of ``buf``; raise ``LogFormatError`` when malformed."""
    head = bytes(buf[:_MAX_HEADER_BYTES])
    values: dict[str, list[str]] = {}
    pos = 0
    data_offset = -1
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            break
        raw = head[pos:end]
        pos = end + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise LogFormatError(
                f"{where}: header line {raw[:40]!r} is not ASCII text (not a PCD file?)"
            ) from exc
        if not line or line.startswith("#"):
            continue
        key, *rest = line.split()
        key = key.upper()
        values[key] = rest
        if key == "DATA":
            data_offset = pos
            break
    if data_offset < 0:
        raise LogFormatError(f"{where}: no 'DATA' line in the header (truncated or not a PCD file)")

    def need(key: str) -> list[str]:
        if key not in values:
            raise LogFormatError(f"{where}: header has no {key} line")
        return values[key]

    fields = tuple(need("FIELDS"))
    if not fields:
        raise LogFormatError(f"{where}: FIELDS is empty")
    named = [f for f in fields if f != "_"]
    if len(set(named)) != len(named):
        raise LogFormatError(f"{where}: duplicate field names in FIELDS {' '.join(fields)}")
    n = len(fields)

    def ints(key: str, default: int | None = None) -> tuple[int, ...]:
        if key not in values and default is not None:
            return (default,) * n
        raw_vals = need(key)
        if len(raw_vals) != n:
            raise LogFormatError(f"{where}: {key} has {len(raw_vals)} values but FIELDS has {n}")
        try:
            out = tuple(int(v) for v in raw_vals)
        except ValueError as exc:
            raise LogFormatError(
                f"{where}: {key} values must be integers, got {' '.join(raw_vals)}"
            ) from exc
        return out

    sizes = ints("SIZE")
    counts = ints("COUNT", 1)
    types = tuple(t.upper() for t in need("TYPE"))
    if len(types) != n:
        raise LogFormatError(f"{where}: TYPE has {len(types)} values but FIELDS has {n}")
    for name, typ, size, count in zip(fields, types, sizes, counts, strict=True):
        if (typ, size) not in _TYPE_CODES:
            raise LogFormatError(
                f"{where}: field '{name}' has unknown TYPE/SIZE {typ}{size} "
                "(expected F4, F8, I1, I2, I4, I8, U1, U2, U4 or U8)"
            )
        if count < 1:
            raise LogFormatError(f"{where}: field '{name}' has COUNT {count}, expected >= 1")

    def one_int(key: str) -> int:
        raw_vals = need(key)
        try:
            v = int(raw_vals[0])
        except (ValueError, IndexError) as exc:
            raise LogFormatError(
                f"{where}: {key} must be one integer, got {' '.join(raw_vals)!r}"
            ) from exc
        if v < 0:
            raise LogFormatError(f"{where}: {key} must be >= 0, got {v}")
        return v

    width = one_int("WIDTH")
    height = one_int("HEIGHT")
    points = one_int("POINTS") if "POINTS" in values else width * height
    if points != width * height:
        raise LogFormatError(
            f"{where}: POINTS {points} does not equal WIDTH*HEIGHT = {width}*{height} = {width * height}"
        )
    try:
        viewpoint = tuple(
            float(v) for v in values.get("VIEWPOINT", ["0", "0", "0", "1", "0", "0", "0"])
        )
    except ValueError as exc:
        raise LogFormatError(
            f"{where}: VIEWPOINT must be 7 numbers, got {values['VIEWPOINT']}"
        ) from exc
    data = (values["DATA"] or [""])[0].lower()
    if data not in ("ascii", "binary", "binary_compressed"):
        raise LogFormatError(
            f"{where}: unknown DATA '{data}' (expected ascii, binary or binary_compressed)"
        )
    version = (values.get("VERSION") or ["0.7"])[0]
    encoding = cast(PcdEncoding, data)
    return PcdHeader(
        fields,
        sizes,
        types,
        counts,
        width,
        height,
        points,
        viewpoint,
        encoding,
        data_offset,
        version,
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PcdInfo:
    """What ``read_pcd_info`` reports beside the cloud: the header and the non-finite count."""

    header: PcdHeader
    n_nonfinite: int


def _decode_ascii(body: bytes, header: PcdHeader, where: str) -> npt.NDArray[Any]:
    dtype = header.record_dtype()
    per_point = sum(header.counts)
    try:
        lines = [ln for ln in body.decode("ascii").splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise LogFormatError(f"{where}: DATA ascii section holds non-ASCII bytes") from exc
    if len(lines) < header.points:
        raise LogFormatError(
            f"{where}: DATA ascii is truncated: {len(lines)} lines for {header.points} points"
        )
    if len(lines) > header.points:
        raise LogFormatError(
            f"{where}: DATA ascii has {len(lines)} lines, expected {header.points} points"
        )
    tokens: list[str] = []
    for i, ln in enumerate(lines):
        row = ln.split()
        if len(row) != per_point:
            raise LogFormatError(
                f"{where}: DATA ascii point {i} has {len(row)} values, expected {per_point}"
            )
        tokens.extend(row)
    need = header.points * per_point
    table = (
        np.array(tokens, dtype=object).reshape(header.points, per_point)
        if need
        else np.zeros((0, per_point), object)
    )
    out = np.zeros(header.points, dtype=dtype)
    col = 0
    for name, count in zip(header.fields, header.counts, strict=True):
        cols = table[:, col : col + count]
        col += count
        if name == "_":
            continue
        target = dtype.fields[name][0]  # type: ignore[index]
        base = target.base
        try:
            if base.kind == "f":
                vals = cols.astype(np.float64).astype(base)
            else:
                try:
                    vals = cols.astype(np.int64 if base.kind == "i" else np.uint64)
                except (ValueError, OverflowError):
                    vals = cols.astype(np.float64).astype(base)
                info = np.iinfo(base)
                if vals.size and (vals.min() < info.min or vals.max() > info.max):
                    raise LogFormatError(
                        f"{where}: field '{name}' has values outside the range of {base}"
                    )
                vals = vals.astype(base)
        except (ValueError, OverflowError) as exc:
            raise LogFormatError(
                f"{where}: field '{name}' holds a value that is not a number: {exc}"
            ) from exc
        out[name] = vals if count > 1 else vals[:, 0]
    return out


def _decode_compressed(buf: memoryview, header: PcdHeader, where: str) -> npt.NDArray[Any]:
    off = header.data_offset
    if len(buf) < off + 8:
        raise LogFormatError(
            f"{where}: binary_compressed data is truncated before its 8-byte size prefix"
        )
    comp_size, raw_size = (int(v) for v in np.frombuffer(buf, dtype="<u4", count=2, offset=off))
    step = header.point_step
    expected = header.points * step
    if raw_size != expected:
        raise LogFormatError(
            f"{where}: binary_compressed uncompressed size {raw_size} does not match "
            f"{header.points} points × {step} bytes = {expected}"
        )
    if len(buf) < off + 8 + comp_size:
        raise LogFormatError(
            f"{where}: binary_compressed data is truncated: {len(buf) - off - 8} bytes present, {comp_size} expected"
        )
    src = np.frombuffer(buf, dtype=np.uint8, count=comp_size, offset=off + 8)
    raw = lzf_decompress(src, raw_size, where)
    # Column-major: field k occupies bytes [start_k, start_k + N*size_k*count_k).
    dtype = header.record_dtype()
    out = np.empty(header.points, dtype=dtype)
    start = 0
    for name, size, count in zip(header.fields, header.sizes, header.counts, strict=True):
        nbytes = header.points * size * count
        if name != "_":
            base = dtype.fields[name][0].base  # type: ignore[index]
            col = np.frombuffer(raw, dtype=base, count=header.points * count, offset=start)
            out[name] = col.reshape(header.points, count) if count > 1 else col
        start += nbytes
    return out


def _read_records(path: Path) -> tuple[PcdHeader, npt.NDArray[Any]]:
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"{where}: cannot read PCD file: {exc.strerror or exc}") from exc
    buf = memoryview(data)
    header = parse_pcd_header(buf, where)
    if header.data == "ascii":
        records = _decode_ascii(data[header.data_offset :], header, where)
    elif header.data == "binary":
        step = header.point_step
        need = header.points * step
        have = len(buf) - header.data_offset
        if have < need:
            raise LogFormatError(
                f"{where}: DATA binary is truncated: {have} bytes for {header.points} points × {step} bytes (expected {need})"
            )
        if have > need:
            logger.warning(
                "%s: %d bytes after the last of %d points ignored",
                where,
                have - need,
                header.points,
            )
        records = np.frombuffer(
            buf, dtype=header.record_dtype(), count=header.points, offset=header.data_offset
        )
    else:
        records = _decode_compressed(buf, header, where)
    return header, records


def _default_sensor(path: Path, fields: Collection[str]) -> Sensor:
    radar = {"dyn_prop", "rcs", "vx_comp", "invalid_state"} <= set(fields)
    name = path.name.split(".")[0] or "pcd"
    return Sensor(name, "radar" if radar else "lidar", Transform.identity())


def _to_cloud(
    path: Path,
    header: PcdHeader,
    records: npt.NDArray[Any],
    sensor: Sensor | None,
    t_ns: int | None,
) -> tuple[PointCloud, int]:
    where = str(path)
    dtype = records.dtype
    names = dtype.names or ()
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise LogFormatError(
                f"{where}: PCD has no '{axis}' field (FIELDS {' '.join(header.fields)})"
            )
        if dtype.fields[axis][0].shape != ():  # type: ignore[index]
            raise LogFormatError(f"{where}: field '{axis}' must have COUNT 1")
    any_f8 = any(dtype.fields[a][0] == np.float64 for a in "xyz")  # type: ignore[index]
    out_t = np.float64 if any_f8 else np.float32
    xyz = np.empty((len(records), 3), dtype=out_t)
    for i, axis in enumerate("xyz"):
        xyz[:, i] = records[axis]
    attrs = {n: records[n] for n in names if n not in ("x", "y", "z")}
    n_nonfinite = int(np.count_nonzero(~np.all(np.isfinite(xyz), axis=1)))
    if n_nonfinite:
        logger.info(
            "%s: %d of %d points have non-finite coordinates (kept)",
            where,
            n_nonfinite,
            len(records),
        )
    sensor = sensor if sensor is not None else _default_sensor(path, names)
    cloud = PointCloud(xyz, sensor, 0 if t_ns is None else t_ns, attrs)
    return cloud, n_nonfinite


def read_pcd_info(
    path: str | os.PathLike[str], sensor: Sensor | None = None, t_ns: int | None = None
) -> tuple[PointCloud, PcdInfo]:
    """Like ``read_pcd`` and also return the header and the number of non-finite points."""
    p = Path(path)
    header, records = _read_records(p)
    cloud, n_nonfinite = _to_cloud(p, header, records, sensor, t_ns)
    return cloud, PcdInfo(header, n_nonfinite)


def read_pcd(
    path: str | os.PathLike[str], sensor: Sensor | None = None, t_ns: int | None = None
) -> PointCloud:
    """Read a PCD v0.7 file (ascii, binary or binary_compressed) into a ``PointCloud``.

    ``sensor`` defaults to a sensor named after the file (modality ``radar`` when the nuScenes
    radar fields are present, else ``lidar``) at the identity extrinsic; ``t_ns`` defaults to 0.
    Binary attributes are views into the file's buffer (no per-field copy). Points with
    non-finite coordinates are kept (see ``read_pcd_info`` for their count).
    """
    return read_pcd_info(path, sensor, t_ns)[0]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _type_size(arr: npt.NDArray[Any], name: str) -> tuple[str, int]:
    kind = arr.dtype.kind
    size = arr.dtype.itemsize
    typ = {"f": "F", "i": "I", "u": "U", "b": "U"}.get(kind)
    if typ is None or (typ, size) not in _TYPE_CODES:
        raise AVFusionError(
            f"write_pcd: column '{name}' has dtype {arr.dtype}, which PCD cannot store"
        )
    return typ, size


def write_pcd(
    path: str | os.PathLike[str],
    columns: Mapping[str, npt.ArrayLike],
    *,
    encoding: PcdEncoding = "binary",
    viewpoint: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
) -> Path:
    """Write columns (ordered name → (N,) or (N, COUNT) array) as a PCD v0.7 file.

    Each column's dtype sets TYPE/SIZE (float32 F4, float64 F8, int8 I1 ... uint64 U8; bool as
    U1). ``binary_compressed`` writes PCL's column-major LZF layout. The file is written to a
    temporary name and renamed into place. Returns the path.
    """
    p = Path(path)
    if encoding not in ("ascii", "binary", "binary_compressed"):
        raise AVFusionError(
            f"write_pcd {p}: unknown encoding '{encoding}' (expected ascii, binary or binary_compressed)"
        )
    if not columns:
        raise AVFusionError(f"write_pcd {p}: needs at least one column")
    arrays: dict[str, npt.NDArray[Any]] = {}
    n: int | None = None
    for name, values in columns.items():
        if not name or any(c.isspace() for c in name):
            raise AVFusionError(f"write_pcd {p}: invalid field name {name!r}")
        arr = np.asarray(values)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        if arr.ndim not in (1, 2):
            raise AVFusionError(
                f"write_pcd {p}: column '{name}' must be (N,) or (N, COUNT), got shape {arr.shape}"
            )
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise AVFusionError(
                f"write_pcd {p}: column '{name}' has {arr.shape[0]} rows, expected {n}"
            )
        arrays[name] = arr
    assert_n = int(n or 0)
    specs = [
        (name, *_type_size(a, name), 1 if a.ndim == 1 else a.shape[1]) for name, a in arrays.items()
    ]
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(s[0] for s in specs)}\n"
        f"SIZE {' '.join(str(s[2]) for s in specs)}\n"
        f"TYPE {' '.join(s[1] for s in specs)}\n"
        f"COUNT {' '.join(str(s[3]) for s in specs)}\n"
        f"WIDTH {assert_n}\n"
        "HEIGHT 1\n"
        f"VIEWPOINT {' '.join(repr(float(v)) for v in viewpoint)}\n"
        f"POINTS {assert_n}\n"
        f"DATA {encoding}\n"
    ).encode("ascii")
    le = {name: a.astype(a.dtype.newbyteorder("<"), copy=False) for name, a in arrays.items()}
    if encoding == "ascii":
        lines = []
        for i in range(assert_n):
            parts: list[str] = []
            for a in le.values():
                row = a[i] if a.ndim == 2 else a[i : i + 1]
                parts.extend(repr(float(v)) if a.dtype.kind == "f" else str(int(v)) for v in row)
            lines.append(" ".join(parts))
        body = ("\n".join(lines) + ("\n" if lines else "")).encode("ascii")
    elif encoding == "binary":
        dtype = np.dtype(
            [
                (name, a.dtype.newbyteorder("<"), (a.shape[1],))
                if a.ndim == 2
                else (name, a.dtype.newbyteorder("<"))
                for name, a in le.items()
            ]
        )
        rec = np.empty(assert_n, dtype=dtype)
        for name, a in le.items():
            rec[name] = a
        body = rec.tobytes()
    else:
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in le.values())
        comp = lzf_compress(raw) if raw else b""
        body = np.array([len(comp), len(raw)], dtype="<u4").tobytes() + comp
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(header + body)
    tmp.replace(p)
    return p


# --------------------------------------------------------------------------------------------
# nuScenes radar filters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RadarFilterResult:
    """A filtered radar cloud and how many points each criterion removed (a point failing
    several criteria counts once in ``n_removed`` and once per criterion in ``removed_by``)."""

    cloud: PointCloud
    n_removed: int
    removed_by: Mapping[str, int]


def radar_filter(
    cloud: PointCloud,
    invalid_states: Collection[int] | None = (0,),
    dynprops: Collection[int] | None = range(7),
    ambig_states: Collection[int] | None = (3,),
    *,
    enabled: bool = True,
) -> RadarFilterResult:
    """Keep the radar points whose ``invalid_state``, ``dyn_prop`` and ``ambig_state`` are in
    the given allowed sets (the nuscenes-devkit ``RadarPointCloud`` defaults: invalid_state 0,
    dyn_prop 0–6, ambig_state 3). ``None`` disables one criterion, ``enabled=False`` disables
    all (the devkit's ``disable_filters``). Returns the new cloud and the removal counts.
    """
    criteria = {"invalid_state": invalid_states, "dyn_prop": dynprops, "ambig_state": ambig_states}
    keep = np.ones(len(cloud), dtype=bool)
    removed_by: dict[str, int] = {}
    if enabled:
        for field_name, allowed in criteria.items():
            if allowed is None:
                continue
            if field_name not in cloud.attrs:
                raise LogFormatError(
                    f"radar_filter: cloud of '{cloud.sensor.name}' has no '{field_name}' field "
                    f"(attrs {', '.join(sorted(cloud.attrs))}); pass {field_name}=None to skip this filter"
                )
            ok = np.isin(np.asarray(cloud.attrs[field_name]), np.fromiter(allowed, dtype=np.int64))
            removed_by[field_name] = int(np.count_nonzero(~ok))
            keep &= ok
    n_removed = int(np.count_nonzero(~keep))
    if n_removed:
        logger.debug(
            "radar_filter on '%s': removed %d of %d points %s",
            cloud.sensor.name,
            n_removed,
            len(cloud),
            removed_by,
        )
    return RadarFilterResult(cloud.select(keep) if n_removed else cloud, n_removed, removed_by)
