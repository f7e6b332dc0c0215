"""ROS bags as a ``Log``: ROS1 ``.bag``, rosbag2 folders (sqlite3 or MCAP) and bare ``.mcap``/``.db3``.

``BagLog(path, rig)`` reads the bag through ``rosbags.highlevel.AnyReader`` (which builds its
typestore from the message definitions stored in the bag, so custom types work) and a rig file
(``avfusion.io.rig``) that says which topic is which sensor.

Opening makes **one indexing pass** over the sensor, CameraInfo, tf and odometry topics:

* per sensor topic the header stamps (int64 ns, parsed from the serialized header without
  deserializing the payload) and the record (log) times, sorted by stamp;
* /tf_static and /tf into a ``TransformTree`` (frame names without a leading ``/``); /tf edges
  become ``Trajectory`` edges sampled at their header stamps;
* the ego pose track ``world_from_ego``: the tf chain world_frame → ego_frame (any number of
  hops, composed at the union of the sample times of its time-stamped edges), or
  nav_msgs/Odometry poses, or the identity (``pose: {source: none}``, with a warning);
* a ``CameraModel`` per camera/thermal sensor from the first CameraInfo message (or the rig's
  inline intrinsics), and ``ego_from_sensor`` from /tf_static (ego_frame → the sensor's frame_id)
  unless the rig gives it inline.

Frames: one per reference-sensor message (in stamp order), assembled with
``avfusion.calibration.timesync.assemble_frames`` after applying each sensor's
``time_offset_ns`` with its tolerance.

Times follow the project convention (as ``NuScenesLog``, ``calibration.motion``,
``fusion.deskew`` and the sync report expect): ``timestamps(sensor)``, ``Frame.t_ns`` and each
observation's ``t_ns`` are **header stamps in the sensor's own clock**, and
``Sensor.time_offset_ns`` (from the rig) moves them to the ego clock of the pose track:
``t_ego = t_stamp + time_offset_ns``. ``Frame.time_diffs_ns`` are ``observation.t_ns −
Frame.t_ns`` (stamp differences, as in ``NuScenesLog``); the offset-corrected differences used
for matching are in ``assembly.diff_ns``, the ego-clock times in ``ego_timestamps(sensor)``.
``record_times(sensor)`` gives the bag's record (log) times, aligned with ``timestamps``; streams
are sorted by stamp (``timestamps_are_raw = False``; reversals in record order are logged).
Every point cloud and image carries ``world_from_ego`` interpolated at its own ego-clock time; a
time farther than ``pose.max_extrapolation_ms`` outside the pose track raises ``SyncError``.

Payloads are read lazily: a frame fetches each of its messages by record time
(``reader.messages(connection, start=t, stop=t + 1)``, which seeks through the bag's chunk index
instead of rescanning), images only when ``.pixels`` is first used.

Point clouds (decoded by ``avfusion.io.pointcloud2``): ``xyz`` float32 in the sensor frame, every
other PointCloud2 field in ``attrs`` under its own name. Points with a non-finite x, y or z are
dropped by the decoder; each drop is logged (warning) and counted in ``nonfinite_points``. Zero
points (Ouster "no return") are finite and kept. Per-point LiDAR time, when the cloud has one, is
``attrs["point_time_ns"]`` (int32 ns relative to the cloud's ``t_ns``), from

* ``time`` (float32/float64 seconds relative to the header stamp; Velodyne driver convention), or
* ``t`` (uint32 ns since the start of the scan, which is the header stamp; Ouster driver
  convention).

Labels: a ``labels.json`` sidecar (format in ``avfusion.synth.bags``), from the rig's ``labels``
or found next to the bag. A frame whose reference header stamp equals a labelled sample's
``timestamp_ns`` (within 1 µs) carries ``boxes3d`` (world frame) and the ``boxes2d`` of the
images it selected; other frames have ``boxes3d = None``. Labels that match no frame are
counted (``unmatched_labels``) and logged.

``inspect_bag`` summarises any bag (topics, types, counts, rates, stamp ranges, tf frames) and
``suggest_rig`` turns that into a starting rig file (``avfusion info BAG --rig-out rig.yaml``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.timesync import FrameAssembly, assemble_frames, match_nearest
from avfusion.calibration.transforms import (
    Trajectory,
    Transform,
    TransformTree,
    quaternion_from_matrix,
)
from avfusion.errors import (
    AVFusionError,
    CalibrationError,
    ConfigError,
    LogFormatError,
    SyncError,
)
from avfusion.io.calibration_file import apply_calibration, calibration_overrides
from avfusion.io.pointcloud2 import (
    DecodedCloud,
    camera_model_from_camera_info,
    decode_compressed_image,
    decode_image,
    decode_pointcloud2_raw,
)
from avfusion.io.rig import DEFAULT_TOLERANCE_MS, Rig, RigSensor, load_rig, rig_from_dict
from avfusion.types import Boxes2D, Boxes3D, Frame, Image, Log, PointCloud, Sensor

__all__ = [
    "BagInfo",
    "BagLog",
    "TopicSummary",
    "inspect_bag",
    "open_bag",
    "suggest_rig",
]

logger = logging.getLogger(__name__)

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
ODOMETRY = "nav_msgs/msg/Odometry"
TF_TYPES = frozenset({"tf2_msgs/msg/TFMessage", "tf/msg/tfMessage"})
TF_TOPICS = frozenset({"/tf", "tf"})
TF_STATIC_TOPICS = frozenset({"/tf_static", "tf_static"})
IMAGE_TYPES = frozenset({IMAGE, COMPRESSED_IMAGE})
#: Label and 2D-box stamps match frame/image stamps within this (labels may be µs-rounded).
LABEL_MATCH_NS = 1_000

I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# Low-level reading
# --------------------------------------------------------------------------------------------


def _read_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this file is not a readable bag" (wrapped in LogFormatError)."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as ReaderError1
    from rosbags.rosbag2 import ReaderError as ReaderError2
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError

    errors: list[type[BaseException]] = [
        AnyReaderError,
        ReaderError1,
        ReaderError2,
        SerdeError,
        TypesysError,
        OSError,
        EOFError,
        struct.error,
        ValueError,
        KeyError,
        IndexError,
        RuntimeError,  # lz4 frame errors
        AssertionError,  # rosbags checks some record layouts with assert
        UnicodeDecodeError,
    ]
    with suppress(ImportError):
        from backports import zstd

        errors.append(zstd.ZstdError)
    return tuple(errors)


def _bad_bag(path: Path, exc: BaseException, doing: str) -> LogFormatError:
    detail = str(exc) or type(exc).__name__
    return LogFormatError(
        f"{path}: cannot read the bag while {doing} ({type(exc).__name__}: {detail}); "
        "the file is corrupt, truncated or not a ROS1/rosbag2/MCAP bag"
    )


def _open_reader(path: Path) -> Any:
    """An open ``AnyReader`` on a .bag, rosbag2 folder, .mcap or .db3 (errors wrapped)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not path.exists():
        raise LogFormatError(f"{path}: no such file or directory")
    default = get_typestore(Stores.ROS1_NOETIC if path.suffix == ".bag" else Stores.ROS2_HUMBLE)
    try:
        reader = AnyReader([path], default_typestore=default)
        reader.open()
    except _read_errors() as exc:
        raise _bad_bag(path, exc, "opening it") from None
    return reader


def _iter_messages(
    reader: Any,
    path: Path,
    connections: list[Any],
    doing: str,
    start: int | None = None,
    stop: int | None = None,
) -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages`` with the library's read errors wrapped in ``LogFormatError``."""
    errors = _read_errors()
    try:
        it = iter(reader.messages(connections=connections, start=start, stop=stop))
    except errors as exc:
        raise _bad_bag(path, exc, doing) from None
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except errors as exc:
            raise _bad_bag(path, exc, doing) from None
        yield item


def _deserialize(reader: Any, path: Path, raw: bytes, msgtype: str, where: str) -> Any:
    try:
        return reader.deserialize(raw, msgtype)
    except _read_errors() as exc:
        raise LogFormatError(
            f"{path}: {where}: cannot deserialize {msgtype} ({type(exc).__name__}: {exc})"
        ) from None


def _parse_header(raw: bytes, ros1: bool, where: str) -> tuple[int, str]:
    """(stamp ns, frame_id) of a serialized message whose first field is std_msgs/Header."""
    n = len(raw)
    if ros1:
        if n < 16:
            raise LogFormatError(f"{where}: message of {n} bytes is too short for a Header")
        _seq, sec, nsec, flen = struct.unpack_from("<IIII", raw, 0)
        start = 16
        end = start + flen
    else:
        if n < 16 or raw[0] != 0 or raw[1] not in (0, 1):
            raise LogFormatError(
                f"{where}: message of {n} bytes does not start with a CDR encapsulation and Header"
            )
        order = "<" if raw[1] == 1 else ">"
        sec, nsec, flen = struct.unpack_from(order + "iII", raw, 4)
        start = 16
        end = start + max(flen - 1, 0)  # CDR strings count their NUL
    if end > n:
        raise LogFormatError(
            f"{where}: Header frame_id runs past the end of the message ({end} > {n} bytes)"
        )
    try:
        frame = bytes(raw[start:end]).decode()
    except UnicodeDecodeError as exc:
        raise LogFormatError(f"{where}: Header frame_id is not UTF-8") from exc
    return int(sec) * 1_000_000_000 + int(nsec), frame


def _stamp(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _frame_name(name: str) -> str:
    return name.lstrip("/")


def _header_first(reader: Any, msgtype: str) -> bool:
    try:
        fields = reader.typestore.fielddefs[msgtype][1]
    except (KeyError, IndexError, TypeError):
        return False
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"


def _tf_transform(tf: Any) -> Transform:
    r = tf.transform.rotation
    t = tf.transform.translation
    return Transform.from_quaternion((r.w, r.x, r.y, r.z), (t.x, t.y, t.z))


# --------------------------------------------------------------------------------------------
# Pose tracks
# --------------------------------------------------------------------------------------------


@dataclass
class _TfEdges:
    """Everything /tf_static and /tf said, as static transforms and time series per edge."""

    static: dict[tuple[str, str], Transform] = field(default_factory=dict)
    dynamic: dict[tuple[str, str], list[tuple[int, Transform]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    parent_of: dict[str, tuple[str, str]] = field(default_factory=dict)  # child -> (parent, topic)

    def add(
        self, parent: str, child: str, t_ns: int, tf: Transform, static: bool, where: str
    ) -> None:
        parent, child = _frame_name(parent), _frame_name(child)
        if not parent or not child:
            raise LogFormatError(
                f"{where}: transform with an empty frame name ('{parent}' -> '{child}')"
            )
        known = self.parent_of.get(child)
        kind = "/tf_static" if static else "/tf"
        if known is not None and (known[0] != parent or known[1] != kind):
            raise LogFormatError(
                f"{where}: frame '{child}' is published with parent '{parent}' on {kind} but with "
                f"parent '{known[0]}' on {known[1]}; a tf frame has one parent"
            )
        self.parent_of[child] = (parent, kind)
        if static:
            old = self.static.get((parent, child))
            if old is not None and not old.allclose(tf, atol=1e-9):
                logger.warning(
                    "%s: /tf_static publishes '%s' -> '%s' twice with different values; keeping the first",
                    where, parent, child,
                )  # fmt: skip
                return
            self.static.setdefault((parent, child), tf)
        else:
            self.dynamic[(parent, child)].append((t_ns, tf))

    def trajectories(self, where: str) -> dict[tuple[str, str], Trajectory]:
        out: dict[tuple[str, str], Trajectory] = {}
        for (parent, child), samples in self.dynamic.items():
            out[(parent, child)] = _trajectory(samples, f"{where}: /tf '{parent}' -> '{child}'")
        return out


def _trajectory(samples: list[tuple[int, Transform]], name: str) -> Trajectory:
    """A trajectory from (t, transform) samples: sorted, repeated stamps dropped (logged)."""
    t = np.array([s[0] for s in samples], dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    if not keep.all():
        logger.info(
            "%s: %d samples repeat an earlier stamp; kept the first", name, int((~keep).sum())
        )
    idx = order[keep]
    q = np.array([samples[i][1].quaternion for i in idx])
    tr = np.array([samples[i][1].translation for i in idx])
    return Trajectory(t[keep], q, tr, name)


def _trajectory_from_arrays(
    t: I64, q_wxyz: npt.NDArray[np.float64], tr: npt.NDArray[np.float64], name: str
) -> Trajectory:
    order = np.argsort(t, kind="stable")
    t, q_wxyz, tr = t[order], q_wxyz[order], tr[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    if not keep.all():
        logger.info(
            "%s: %d samples repeat an earlier stamp; kept the first", name, int((~keep).sum())
        )
    return Trajectory(t[keep], q_wxyz[keep], tr[keep], name)


def _compose_chain(
    frames: list[str],
    static: Mapping[tuple[str, str], Transform],
    dynamic: Mapping[tuple[str, str], Trajectory],
    name: str,
) -> Trajectory | Transform:
    """``frames[-1]_from_frames[0]`` along a tf path: a Transform when every edge is static,
    else a Trajectory sampled at the union of the time-stamped edges' samples (inside all of
    their ranges)."""
    steps: list[tuple[Transform | Trajectory, bool]] = []  # (edge, invert)
    for a, b in itertools.pairwise(frames):
        # need b_from_a
        if (b, a) in static:
            steps.append((static[(b, a)], False))
        elif (b, a) in dynamic:
            steps.append((dynamic[(b, a)], False))
        elif (a, b) in static:
            steps.append((static[(a, b)], True))
        elif (a, b) in dynamic:
            steps.append((dynamic[(a, b)], True))
        else:  # pragma: no cover - the path comes from the same edges
            raise CalibrationError(f"{name}: no edge between '{a}' and '{b}'")
    trajs = [e for e, _ in steps if isinstance(e, Trajectory)]
    statics = [(e, inv) for e, inv in steps if isinstance(e, Transform)]
    if not trajs:
        out = Transform()
        for tf, inv in statics:
            out = (tf.inverse() if inv else tf) @ out
        return out
    if len(steps) == 1 and not steps[0][1] and isinstance(steps[0][0], Trajectory):
        traj = steps[0][0]
        return Trajectory(traj.t_ns, traj.quaternions, traj.translations, name)
    lo = max(tr.start_ns for tr in trajs)
    hi = min(tr.end_ns for tr in trajs)
    if lo > hi:
        raise SyncError(
            f"{name}: the time-stamped tf edges on the chain {' -> '.join(frames)} do not overlap in time"
        )
    times = np.unique(np.concatenate([tr.t_ns for tr in trajs]))
    times = times[(times >= lo) & (times <= hi)]
    rot = np.broadcast_to(np.eye(3), (times.size, 3, 3)).copy()
    trans = np.zeros((times.size, 3))
    for e, inv in steps:
        if isinstance(e, Transform):
            r = np.broadcast_to(e.rotation, (times.size, 3, 3))
            t = np.broadcast_to(e.translation, (times.size, 3))
        else:
            r, t = e.interpolate_many(times)
        if inv:
            r = np.transpose(r, (0, 2, 1))
            t = -np.einsum("nij,nj->ni", r, t)
        trans = np.einsum("nij,nj->ni", r, trans) + t
        rot = np.einsum("nij,njk->nik", r, rot)
    return Trajectory(times, quaternion_from_matrix(rot), trans, name)


# --------------------------------------------------------------------------------------------
# Labels sidecar
# --------------------------------------------------------------------------------------------


@dataclass
class _LabelSample:
    timestamp_ns: int
    boxes: Boxes3D
    boxes2d: list[tuple[str, int, Boxes2D]]  # (channel, image stamp ns, boxes)


def _load_labels(path: Path) -> tuple[str, list[_LabelSample]]:
    """Parse a labels.json sidecar; every problem names the file and the entry."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LogFormatError(f"{path}: not a readable labels JSON file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise LogFormatError(f"{path}: expected an object with a 'samples' list")
    frame = str(data.get("frame", "map"))
    out: list[_LabelSample] = []
    for i, s in enumerate(data["samples"]):
        where = f"{path}: samples[{i}]"
        try:
            ts = s["timestamp_ns"]
            if isinstance(ts, bool) or not isinstance(ts, int):
                raise LogFormatError(
                    f"{where}: timestamp_ns must be integer nanoseconds, got {ts!r}"
                )
            boxes = s.get("boxes", [])
            n = len(boxes)
            b3 = Boxes3D(
                np.array([b["center"] for b in boxes], dtype=np.float64).reshape(n, 3),
                np.array([b["size_lwh"] for b in boxes], dtype=np.float64).reshape(n, 3),
                np.array([b["rotation_wxyz"] for b in boxes], dtype=np.float64).reshape(n, 4),
                np.array([b["category"] for b in boxes], dtype=np.str_),
                np.array([b.get("instance_token", b.get("track_id", "")) for b in boxes], dtype=np.str_),
                "world",
                None if n == 0 else np.array(
                    [b["velocity"] if b.get("velocity") is not None else [np.nan] * 3 for b in boxes],
                    dtype=np.float64,
                ).reshape(n, 3),
                attrs={"num_lidar_pts": np.array([int(b.get("num_lidar_pts", -1)) for b in boxes], dtype=np.int64)},
            )  # fmt: skip
            by_image: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
            for b in s.get("boxes2d", []):
                by_image[(str(b["channel"]), int(b["timestamp_ns"]))].append(b)
            b2 = [
                (
                    ch,
                    t,
                    Boxes2D(
                        np.array([b["bbox"] for b in rows], dtype=np.float64).reshape(-1, 4),
                        np.array([b.get("category", "") for b in rows], dtype=np.str_),
                        np.array([b.get("instance_token", b.get("track_id", "")) for b in rows], dtype=np.str_),
                        ch,
                    ),
                )
                for (ch, t), rows in sorted(by_image.items())
            ]  # fmt: skip
        except (KeyError, TypeError, ValueError, AVFusionError) as exc:
            if isinstance(exc, LogFormatError):
                raise
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise LogFormatError(f"{where}: {what}") from None
        out.append(_LabelSample(int(ts), b3, b2))
    return frame, out


# --------------------------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------------------------


@dataclass
class _Stream:
    """One sensor topic: stamps (sensor clock), record times and how to fetch each message."""

    sensor: str
    topic: str
    msgtype: str
    stamps_ns: I64
    record_ns: I64
    conn: npt.NDArray[np.int32]  # index into BagLog._connections
    occurrence: npt.NDArray[np.int32]  # k-th message of that connection at that record time
    frame_id: str


class BagLog(Log):
    """A ROS1 bag, rosbag2 folder (sqlite3/MCAP) or .mcap file read through a rig file.

    ``rig`` is a ``Rig``, a path to a rig YAML file or a mapping. ``labels`` overrides the
    rig's labels sidecar. ``calibration`` (a ``calibration.json`` path or sensor name →
    ``Transform``) replaces the rig's extrinsics and the clock offsets the file states. Keep the log open while frames are used (images load lazily);
    ``close()`` (or ``with BagLog(...) as log``) releases the file, and any later access
    re-opens it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        rig: Rig | str | os.PathLike[str] | Mapping[str, Any],
        *,
        labels: str | os.PathLike[str] | None = None,
        calibration: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self._calibration = calibration_overrides(calibration, self.path)
        if isinstance(rig, Rig):
            self.rig = rig
        elif isinstance(rig, Mapping):
            self.rig = rig_from_dict(dict(rig))
        else:
            self.rig = load_rig(rig)
        self._lock = threading.RLock()
        self._reader: Any = None
        self._connections: list[Any] = []
        self.timestamps_are_raw = False  # streams are sorted by stamp (for the sync report)
        self.nonfinite_points: dict[str, dict[int, int]] = defaultdict(dict)
        """Sensor → {message index → points dropped for a non-finite x/y/z}, for clouds read so far."""
        reader = self._reader_open()
        self.ros1 = not bool(reader.is2)
        try:
            self._index(reader)
        except BaseException:
            self.close()
            raise
        self._load_label_file(labels)

    # -- reader lifetime ---------------------------------------------------------------------
    def _reader_open(self) -> Any:
        with self._lock:
            if self._reader is None:
                self._reader = _open_reader(self.path)
                if self._connections:
                    # re-opened after close() or unpickling: map the stored connections again
                    fresh = {(c.topic, c.msgtype, c.id): c for c in self._reader.connections}
                    self._connections = [
                        fresh[(c.topic, c.msgtype, c.id)] for c in self._connections
                    ]
            return self._reader

    def close(self) -> None:
        """Close the bag file (a later frame access re-opens it)."""
        with self._lock:
            if self._reader is not None:
                with suppress(Exception):
                    self._reader.close()
                self._reader = None

    def __enter__(self) -> BagLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_lock"] = None
        state["_connections"] = [(c.topic, c.msgtype, c.id) for c in self._connections]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        keys = state.pop("_connections")
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._reader = _open_reader(self.path)
        fresh = {(c.topic, c.msgtype, c.id): c for c in self._reader.connections}
        self._connections = [fresh[k] for k in keys]

    def __repr__(self) -> str:
        return f"BagLog({self.path}, {len(self)} frames, sensors={sorted(self._sensors)})"

    # -- indexing ----------------------------------------------------------------------------
    def _check_topics(self, reader: Any) -> None:
        topics: dict[str, set[str]] = defaultdict(set)
        for c in reader.connections:
            topics[c.topic].add(c.msgtype)
        listing = (
            ", ".join(f"{t} ({'/'.join(sorted(ty))})" for t, ty in sorted(topics.items())) or "none"
        )
        for s in self.rig.sensors:
            where = f"rig sensor '{s.name}'"
            if s.topic not in topics:
                raise ConfigError(
                    f"{where}: topic '{s.topic}' is not in bag {self.path}; the bag's topics: {listing}"
                )
            want = {POINTCLOUD2} if s.modality in ("lidar", "radar") else set(IMAGE_TYPES)
            if not topics[s.topic] & want:
                raise ConfigError(
                    f"{where}: topic '{s.topic}' carries {', '.join(sorted(topics[s.topic]))}; "
                    f"a {s.modality} needs {' or '.join(sorted(want))}"
                )
            if s.camera_info_topic is not None and s.intrinsics is None:
                if s.camera_info_topic not in topics:
                    infos = sorted(t for t, ty in topics.items() if CAMERA_INFO in ty)
                    raise ConfigError(
                        f"{where}: camera_info_topic '{s.camera_info_topic}' is not in bag "
                        f"{self.path} (CameraInfo topics in the bag: {', '.join(infos) or 'none'}); "
                        "fix the topic or give inline intrinsics"
                    )
                if CAMERA_INFO not in topics[s.camera_info_topic]:
                    raise ConfigError(
                        f"{where}: camera_info_topic '{s.camera_info_topic}' carries "
                        f"{', '.join(sorted(topics[s.camera_info_topic]))}, not {CAMERA_INFO}"
                    )
        pose = self.rig.pose
        if pose.source == "odometry":
            if pose.topic not in topics:
                odoms = sorted(t for t, ty in topics.items() if ODOMETRY in ty)
                raise ConfigError(
                    f"rig pose: odometry topic '{pose.topic}' is not in bag {self.path} "
                    f"(odometry topics in the bag: {', '.join(odoms) or 'none'})"
                )
            if ODOMETRY not in topics[pose.topic]:
                raise ConfigError(
                    f"rig pose: topic '{pose.topic}' carries {', '.join(sorted(topics[pose.topic]))}, not {ODOMETRY}"
                )

    def _index(self, reader: Any) -> None:
        self._check_topics(reader)
        rig = self.rig
        sensor_of_topic = {s.topic: s for s in rig.sensors}
        info_topics: dict[str, list[str]] = defaultdict(list)  # camera_info topic -> sensors
        for s in rig.sensors:
            if s.camera_info_topic is not None and s.intrinsics is None:
                info_topics[s.camera_info_topic].append(s.name)
        odom_topic = rig.pose.topic if rig.pose.source == "odometry" else None
        wanted: list[Any] = []
        for c in reader.connections:
            if (
                (c.topic in sensor_of_topic and c.msgtype in (IMAGE_TYPES | {POINTCLOUD2}))
                or (c.topic in info_topics and c.msgtype == CAMERA_INFO)
                or ((c.topic in TF_TOPICS or c.topic in TF_STATIC_TOPICS) and c.msgtype in TF_TYPES)
                or (c.topic == odom_topic and c.msgtype == ODOMETRY)
            ):
                wanted.append(c)
        self._connections = [c for c in wanted if c.topic in sensor_of_topic]
        conn_index = {id(c): i for i, c in enumerate(self._connections)}
        for c in self._connections:
            if not _header_first(reader, c.msgtype):
                raise LogFormatError(
                    f"{self.path}: topic '{c.topic}' type {c.msgtype} does not start with a std_msgs/Header"
                )
        stamps: dict[str, list[int]] = defaultdict(list)
        records: dict[str, list[int]] = defaultdict(list)
        conns: dict[str, list[int]] = defaultdict(list)
        occur: dict[str, list[int]] = defaultdict(list)
        first_frame: dict[str, str] = {}
        seen_at: dict[tuple[int, int], int] = defaultdict(int)
        camera_info: dict[str, Any] = {}
        tf = _TfEdges()
        odom: list[tuple[int, Any]] = []
        odom_frames: tuple[str, str] | None = None
        for conn, t_rec, raw in _iter_messages(reader, self.path, wanted, "indexing"):
            topic = conn.topic
            sensor = sensor_of_topic.get(topic)
            if sensor is not None:
                where = f"{self.path}: {topic} message at record time {t_rec} ns"
                stamp, frame = _parse_header(raw, self.ros1, where)
                ci = conn_index[id(conn)]
                key = (ci, int(t_rec))
                occur[sensor.name].append(seen_at[key])
                seen_at[key] += 1
                stamps[sensor.name].append(stamp)
                records[sensor.name].append(int(t_rec))
                conns[sensor.name].append(ci)
                first_frame.setdefault(sensor.name, frame)
            elif topic in info_topics:
                if topic not in camera_info:
                    camera_info[topic] = _deserialize(reader, self.path, raw, conn.msgtype, topic)
            elif topic in TF_TOPICS or topic in TF_STATIC_TOPICS:
                static = topic in TF_STATIC_TOPICS
                msg = _deserialize(reader, self.path, raw, conn.msgtype, topic)
                for tr in msg.transforms:
                    tf.add(
                        tr.header.frame_id, tr.child_frame_id, _stamp(tr.header.stamp),
                        _tf_transform(tr), static, f"{self.path}: {topic}",
                    )  # fmt: skip
            elif topic == odom_topic:
                msg = _deserialize(reader, self.path, raw, conn.msgtype, topic)
                odom.append((_stamp(msg.header.stamp), msg.pose.pose))
                if odom_frames is None:
                    odom_frames = (
                        _frame_name(msg.header.frame_id),
                        _frame_name(msg.child_frame_id),
                    )
        # -- streams, sorted by stamp ---------------------------------------------------------
        self._streams: dict[str, _Stream] = {}
        for s in rig.sensors:
            st = np.array(stamps.get(s.name, []), dtype=np.int64)
            order = np.argsort(st, kind="stable")
            if st.size > 1 and np.any(np.diff(st) < 0):
                logger.warning(
                    "%s: %s: %d header stamps go back in time in record order; frames use stamp order",
                    self.path, s.topic, int(np.count_nonzero(np.diff(st) < 0)),
                )  # fmt: skip
            self._streams[s.name] = _Stream(
                s.name,
                s.topic,
                self._connections[conns[s.name][0]].msgtype if conns.get(s.name) else "",
                st[order],
                np.array(records.get(s.name, []), dtype=np.int64)[order],
                np.array(conns.get(s.name, []), dtype=np.int32)[order],
                np.array(occur.get(s.name, []), dtype=np.int32)[order],
                _frame_name(s.frame_id) if s.frame_id is not None else _frame_name(first_frame.get(s.name, "")),
            )  # fmt: skip
            if st.size == 0:
                logger.warning(
                    "%s: topic %s of sensor '%s' has no messages", self.path, s.topic, s.name
                )
        # -- transforms -----------------------------------------------------------------------
        self._tf_static = dict(tf.static)
        self._tf_dynamic = tf.trajectories(str(self.path))
        tree = TransformTree()
        try:
            for (parent, child), stf in self._tf_static.items():
                tree.add_static(parent, child, stf)
            for (parent, child), traj in self._tf_dynamic.items():
                tree.add_trajectory(parent, child, traj)
        except CalibrationError as exc:
            raise LogFormatError(
                f"{self.path}: /tf and /tf_static do not form a tree: {exc}"
            ) from None
        self.transforms = tree
        # -- pose track -----------------------------------------------------------------------
        self._ego_frame = self._build_pose(odom, odom_frames)
        # -- sensors --------------------------------------------------------------------------
        sensors: dict[str, Sensor] = {}
        for s in rig.sensors:
            camera = self._camera_model(s, camera_info)
            sensors[s.name] = Sensor(
                s.name, s.modality, self._ego_from_sensor(s), camera, int(s.time_offset_ns)
            )
        # calibration= keyword: replaces the rig's extrinsics (and clock offsets it states)
        self._sensors = apply_calibration(sensors, self._calibration, self.path)
        # -- frames ---------------------------------------------------------------------------
        self._assembly = assemble_frames(
            {name: st.stamps_ns for name, st in self._streams.items()},
            rig.reference_sensor,
            {s.name: s.tolerance_ns for s in rig.sensors if s.name != rig.reference_sensor},
            time_offsets_ns={n: int(s.time_offset_ns) for n, s in self._sensors.items()},
            policy=rig.policy,
        )
        logger.info(
            "%s: %d frames of %s; match rates %s",
            self.path, len(self._assembly), rig.reference_sensor,
            {k: round(v, 3) for k, v in self._assembly.match_rate().items()},
        )  # fmt: skip

    def _build_pose(
        self, odom: list[tuple[int, Any]], odom_frames: tuple[str, str] | None
    ) -> str | None:
        """Set ``self._poses``; return the ego frame name used for /tf_static lookups."""
        pose = self.rig.pose
        self._pose_tolerance_ns = round(pose.max_extrapolation_ms * 1e6)
        if pose.source == "tf":
            world, ego = _frame_name(pose.world_frame), _frame_name(pose.ego_frame)
            frames = sorted(self.transforms.frames)
            for name, what in ((world, "world_frame"), (ego, "ego_frame")):
                if name not in self.transforms:
                    raise CalibrationError(
                        f"{self.path}: no tf chain from world_frame '{world}' to ego_frame '{ego}': "
                        f"{what} '{name}' is not in /tf or /tf_static (frames: {', '.join(frames) or 'none'})"
                    )
            try:
                path = self.transforms.path(world, ego)
            except CalibrationError as exc:
                raise CalibrationError(
                    f"{self.path}: no tf chain from world_frame '{world}' to ego_frame '{ego}' in "
                    f"/tf and /tf_static: {exc}"
                ) from None
            chain = _compose_chain(
                path,
                self._tf_static,
                self._tf_dynamic,
                f"{self.path}: world_from_ego ({world} <- {ego})",
            )
            if isinstance(chain, Transform):
                logger.warning(
                    "%s: the tf chain %s is static; world_from_ego is constant",
                    self.path, " -> ".join(path),
                )  # fmt: skip
                self._static_pose: Transform | None = chain
                self._poses: Trajectory | None = None
            else:
                self._static_pose = None
                self._poses = chain
            self._pose_description = f"tf chain {' -> '.join(reversed(path))}"
            return ego
        if pose.source == "odometry":
            if not odom:
                raise LogFormatError(f"{self.path}: odometry topic '{pose.topic}' has no messages")
            t = np.array([o[0] for o in odom], dtype=np.int64)
            q = np.array(
                [
                    [p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z]
                    for _, p in odom
                ]
            )
            tr = np.array([[p.position.x, p.position.y, p.position.z] for _, p in odom])
            self._poses = _trajectory_from_arrays(t, q, tr, f"{self.path}: odometry {pose.topic}")
            self._static_pose = None
            self._pose_description = f"odometry {pose.topic}"
            if pose.ego_frame:
                return _frame_name(pose.ego_frame)
            return odom_frames[1] if odom_frames and odom_frames[1] else None
        logger.warning(
            "%s: rig pose source is 'none': world_from_ego is the identity at all times "
            "(no ego motion compensation; fine for a static rig only)",
            self.path,
        )
        self._static_pose = Transform()
        self._poses = None
        self._pose_description = "none (identity)"
        return _frame_name(pose.ego_frame) if pose.ego_frame else None

    def _camera_model(self, s: RigSensor, camera_info: Mapping[str, Any]) -> CameraModel | None:
        if s.modality not in ("camera", "thermal"):
            return None
        if s.intrinsics is not None:
            return s.intrinsics.to_camera_model()
        topic = s.camera_info_topic or ""
        msg = camera_info.get(topic)
        if msg is None:
            raise LogFormatError(
                f"{self.path}: camera_info_topic '{topic}' of sensor '{s.name}' has no messages"
            )
        return camera_model_from_camera_info(msg, f"{self.path}: {topic}")

    def _ego_from_sensor(self, s: RigSensor) -> Transform:
        if s.ego_from_sensor is not None:
            return s.ego_from_sensor.to_transform()
        frame = self._streams[s.name].frame_id
        ego = self._ego_frame
        if not frame:
            raise CalibrationError(
                f"{self.path}: sensor '{s.name}': messages on {s.topic} have an empty header.frame_id; "
                "set frame_id or ego_from_sensor for it in the rig"
            )
        if ego is None:
            raise CalibrationError(
                f"{self.path}: sensor '{s.name}': no ego_frame to look up its extrinsics in /tf_static; "
                "set pose.ego_frame or the sensor's ego_from_sensor in the rig"
            )
        if frame == ego:
            return Transform()
        try:
            path = self.transforms.path(ego, frame)
        except CalibrationError as exc:
            raise CalibrationError(
                f"{self.path}: sensor '{s.name}': no /tf_static chain from ego_frame '{ego}' to its "
                f"frame '{frame}' ({exc}); give ego_from_sensor in the rig"
            ) from None
        chain = _compose_chain(path, self._tf_static, self._tf_dynamic, f"ego_from_{s.name}")
        if isinstance(chain, Transform):
            return chain
        # Published on /tf: accept it only when it never changes.
        spread = max(
            float(np.max(np.abs(chain.translations - chain.translations[0]))),
            float(np.max(np.abs(chain.quaternions - chain.quaternions[0]))),
        )
        if spread > 1e-9:
            raise CalibrationError(
                f"{self.path}: sensor '{s.name}': the tf chain {' -> '.join(path)} changes over time "
                f"(by up to {spread:.3g}); extrinsics must be static (give ego_from_sensor in the rig)"
            )
        return chain[0]

    def _load_label_file(self, labels: str | os.PathLike[str] | None) -> None:
        path = Path(labels) if labels is not None else self.rig.labels_path()
        if path is None:
            for cand in (self.path.parent / "labels.json", self.path / "labels.json"):
                if cand.is_file():
                    path = cand
                    break
        self.labels_path = path
        self._labels: dict[int, _LabelSample] = {}
        self.unmatched_labels = 0
        if path is None:
            return
        frame, samples = _load_labels(path)
        if self.rig.pose.source == "tf" and frame != self.rig.pose.world_frame:
            raise ConfigError(
                f"{path}: boxes are in frame '{frame}' but the rig's world_frame is "
                f"'{self.rig.pose.world_frame}'"
            )
        ref = self._streams[self.rig.reference_sensor].stamps_ns
        t = np.array([s.timestamp_ns for s in samples], dtype=np.int64)
        m = match_nearest(t, ref, LABEL_MATCH_NS, "reference stamps")
        for s, idx in zip(samples, m.index, strict=True):
            if idx >= 0:
                self._labels[int(idx)] = s
        self.unmatched_labels = m.n_unmatched
        if self.unmatched_labels:
            logger.warning(
                "%s: %d of %d labelled samples match no %s message (within %d ns) and are not used",
                path, self.unmatched_labels, len(samples), self.rig.reference_sensor, LABEL_MATCH_NS,
            )  # fmt: skip
        logger.info("%s: labels for %d frames", path, len(self._labels))

    # -- Log interface -----------------------------------------------------------------------
    @property
    def sensors(self) -> Mapping[str, Sensor]:
        return self._sensors

    def __len__(self) -> int:
        return len(self._assembly)

    @property
    def assembly(self) -> FrameAssembly:
        """Which message of every sensor each frame uses (indices into the stamp-sorted streams)."""
        return self._assembly

    @property
    def reference_sensor(self) -> str:
        return self.rig.reference_sensor

    def _stream(self, sensor: str) -> _Stream:
        st = self._streams.get(sensor)
        if st is None:
            raise LogFormatError(
                f"{self.path}: no sensor '{sensor}' in the rig (sensors: {', '.join(sorted(self._streams))})"
            )
        return st

    def timestamps(self, sensor: str) -> I64:
        """Header stamps (the sensor's own clock, int64 ns) of a sensor's messages, sorted.

        Add ``sensors[sensor].time_offset_ns`` for the ego clock (or use ``ego_timestamps``)."""
        return self._stream(sensor).stamps_ns.copy()

    def header_stamps(self, sensor: str) -> I64:
        """Same as ``timestamps``: the header stamps, sensor clock, sorted."""
        return self.timestamps(sensor)

    def ego_timestamps(self, sensor: str) -> I64:
        """Capture times in the ego clock: header stamps + the rig's ``time_offset_ns``, sorted."""
        st = self._stream(sensor)
        return st.stamps_ns + np.int64(self._sensors[sensor].time_offset_ns)

    def record_times(self, sensor: str) -> I64:
        """The bag's record (log) times of a sensor's messages, in the order of ``timestamps``."""
        return self._stream(sensor).record_ns.copy()

    def frame_id(self, sensor: str) -> str:
        """The tf frame of a sensor (rig override or its messages' header.frame_id)."""
        return self._stream(sensor).frame_id

    @property
    def poses(self) -> Trajectory:
        if self._poses is not None:
            return self._poses
        tf = self._static_pose if self._static_pose is not None else Transform()
        all_t = [self.ego_timestamps(n) for n in self._streams if self._streams[n].stamps_ns.size]
        if all_t:
            lo = int(min(t[0] for t in all_t)) - 1
            hi = int(max(t[-1] for t in all_t)) + 1
        else:
            lo, hi = 0, 1
        return Trajectory.from_transforms(
            np.array([lo, hi], dtype=np.int64), [tf, tf], f"{self.path}: {self._pose_description}"
        )

    def pose_at(self, t_ns: int, tolerance_ns: int | None = None) -> Transform:
        """``world_from_ego`` at an ego-clock time (default tolerance: the rig's max_extrapolation_ms)."""
        if self._poses is None:
            return self._static_pose if self._static_pose is not None else Transform()
        tol = self._pose_tolerance_ns if tolerance_ns is None else tolerance_ns
        return self._poses.at(int(t_ns), tol)

    def _pose_for(self, sensor: str, index: int, stamp_ns: int) -> Transform:
        """``world_from_ego`` at a sensor's stamp (its clock; the rig offset is applied here)."""
        t_ns = stamp_ns + self._sensors[sensor].time_offset_ns
        try:
            return self.pose_at(t_ns)
        except SyncError:
            p = self._poses
            rng = f"[{p.start_ns}, {p.end_ns}] ns" if p is not None else "?"
            raise SyncError(
                f"{self.path}: no ego pose for sensor '{sensor}' message {index} on "
                f"{self._streams[sensor].topic} at stamp {stamp_ns} ns (ego clock {t_ns} ns): the pose track "
                f"({self._pose_description}) covers {rng} and may be extrapolated by at most "
                f"{self._pose_tolerance_ns / 1e6:g} ms (pose.max_extrapolation_ms in the rig)"
            ) from None

    # -- message access ----------------------------------------------------------------------
    def raw_message(self, sensor: str, index: int) -> bytes:
        """The serialized message ``index`` (in stamp order) of a sensor, read by record time."""
        st = self._stream(sensor)
        if not 0 <= index < st.stamps_ns.size:
            raise IndexError(
                f"{self.path}: sensor '{sensor}' has {st.stamps_ns.size} messages, no {index}"
            )
        t_rec = int(st.record_ns[index])
        k = int(st.occurrence[index])
        with self._lock:
            reader = self._reader_open()
            conn = self._connections[int(st.conn[index])]
            messages = _iter_messages(
                reader,
                self.path,
                [conn],
                f"reading {st.topic} at record time {t_rec} ns",
                t_rec,
                t_rec + 1,
            )
            for seen, (_c, _t, raw) in enumerate(messages):
                if seen == k:
                    return bytes(raw)
        raise LogFormatError(
            f"{self.path}: message {index} of {st.topic} (record time {t_rec} ns) is no longer in the bag"
        )

    def iter_raw(self, sensors: list[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(sensor, index in stamp order, serialized message) for every message, in record order.

        One sequential pass over the bag; used by converters instead of per-message seeks.
        """
        names = list(self._streams) if sensors is None else sensors
        lookup: dict[tuple[int, int, int], tuple[str, int]] = {}
        for name in names:
            st = self._stream(name)
            for i in range(st.stamps_ns.size):
                lookup[(int(st.conn[i]), int(st.record_ns[i]), int(st.occurrence[i]))] = (name, i)
        conn_ids = sorted({int(c) for name in names for c in np.unique(self._streams[name].conn)})
        with self._lock:
            reader = self._reader_open()
            conns = [self._connections[i] for i in conn_ids]
            index_of = {id(c): i for i, c in enumerate(self._connections)}
        seen: dict[tuple[int, int], int] = defaultdict(int)
        if not conns:
            return
        for conn, t_rec, raw in _iter_messages(reader, self.path, conns, "reading messages"):
            ci = index_of[id(conn)]
            key = (ci, int(t_rec))
            k = seen[key]
            seen[key] += 1
            hit = lookup.get((ci, int(t_rec), k))
            if hit is not None:
                yield hit[0], hit[1], bytes(raw)

    def message_type(self, sensor: str) -> str:
        return self._stream(sensor).msgtype

    def deserialize(self, sensor: str, raw: bytes) -> Any:
        """A sensor's serialized message as a rosbags message object."""
        st = self._stream(sensor)
        with self._lock:
            reader = self._reader_open()
        return _deserialize(reader, self.path, raw, st.msgtype, st.topic)

    def decode_cloud(self, sensor: str, index: int, raw: bytes | None = None) -> DecodedCloud:
        """The decoded PointCloud2 of message ``index`` (non-finite points dropped and counted)."""
        st = self._stream(sensor)
        raw = self.raw_message(sensor, index) if raw is None else raw
        where = f"{self.path}: {st.topic} message {index} (stamp {int(st.stamps_ns[index])} ns)"
        decoded = decode_pointcloud2_raw(raw, ros1=self.ros1, where=where)
        if decoded.n_nonfinite:
            self.nonfinite_points[sensor][index] = decoded.n_nonfinite
            logger.warning(
                "%s: dropped %d of %d points with a non-finite x/y/z",
                where, decoded.n_nonfinite, decoded.n_points_total,
            )  # fmt: skip
        return decoded

    def point_cloud(
        self, sensor: str, index: int, raw: bytes | None = None, *, with_pose: bool = True
    ) -> PointCloud:
        """Message ``index`` of a LiDAR/radar sensor as a ``PointCloud`` in its sensor frame."""
        sens = self._sensors[sensor]
        if sens.is_image:
            raise ConfigError(
                f"{self.path}: sensor '{sensor}' is a {sens.modality}, not a point sensor"
            )
        decoded = self.decode_cloud(sensor, index, raw)
        st = self._streams[sensor]
        t_ns = int(st.stamps_ns[index])
        attrs = dict(decoded.attrs)
        where = f"{self.path}: {st.topic} message {index} (stamp {int(st.stamps_ns[index])} ns)"
        point_time = _point_time_ns(attrs, where)
        if point_time is not None:
            attrs["point_time_ns"] = point_time
        pose = self._pose_for(sensor, index, t_ns) if with_pose else None
        return PointCloud(decoded.xyz, sens, t_ns, attrs, pose, f"{sensor}:{index}")

    def decode_pixels(self, sensor: str, index: int, raw: bytes | None = None) -> npt.NDArray[Any]:
        """The decoded pixels of message ``index`` of a camera/thermal sensor."""
        st = self._stream(sensor)
        raw = self.raw_message(sensor, index) if raw is None else raw
        msg = self.deserialize(sensor, raw)
        where = f"{self.path}: {st.topic} message {index} (stamp {int(st.stamps_ns[index])} ns)"
        if st.msgtype == COMPRESSED_IMAGE:
            return decode_compressed_image(msg, where)
        return decode_image(msg, where)

    def image(self, sensor: str, index: int, *, with_pose: bool = True) -> Image:
        """Message ``index`` of a camera/thermal sensor as a lazily decoded ``Image``."""
        sens = self._sensors[sensor]
        if not sens.is_image:
            raise ConfigError(f"{self.path}: sensor '{sensor}' is a {sens.modality}, not a camera")
        st = self._streams[sensor]
        t_ns = int(st.stamps_ns[index])
        pose = self._pose_for(sensor, index, t_ns) if with_pose else None

        def loader() -> npt.NDArray[Any]:
            return self.decode_pixels(sensor, index)

        return Image(
            sens,
            t_ns,
            pose,
            loader=loader,
            path=f"{self.path}#{st.topic}[{index}]",
            token=f"{sensor}:{index}",
        )

    # -- frames ------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Frame:
        return self.frame(index)

    def frame(self, index: int) -> Frame:
        """Frame ``index``: the reference message and every sensor's match within tolerance."""
        i = self._check_index(index)
        a = self._assembly
        ref = self.rig.reference_sensor
        t_ns = int(self._streams[ref].stamps_ns[i])
        world_from_ego = self._pose_for(ref, i, t_ns)
        points: dict[str, PointCloud] = {}
        images: dict[str, Image] = {}
        matched = a.matched(i)
        diffs = {name: int(self._streams[name].stamps_ns[k]) - t_ns for name, k in matched.items()}
        for name, k in sorted(matched.items()):
            if self._sensors[name].is_image:
                images[name] = self.image(name, k)
            else:
                points[name] = self.point_cloud(name, k)
        boxes3d, boxes2d = self.frame_labels(i)
        return Frame(
            t_ns,
            world_from_ego,
            dict(self._sensors),
            points,
            images,
            boxes3d,
            boxes2d,
            diffs,
            a.missing(i),
            "",
            i,
        )

    def frame_labels(self, index: int) -> tuple[Boxes3D | None, dict[str, Boxes2D]]:
        """The labels of frame ``index`` without reading any message: world-frame 3D boxes (None
        when the frame is not a labelled sample) and, per camera, the 2D boxes of the image the
        frame selected (boxes drawn on another image of that camera are left out, logged)."""
        i = self._check_index(index)
        label = self._labels.get(i)
        if label is None:
            return None, {}
        matched = self._assembly.matched(i)
        boxes2d: dict[str, Boxes2D] = {}
        for channel, t_img, b2 in label.boxes2d:
            k = matched.get(channel)
            if k is None:
                logger.info(
                    "%s: frame %d: 2D boxes of %s at %d ns, but the frame has no %s image",
                    self.path, i, channel, t_img, channel,
                )  # fmt: skip
                continue
            stamp = int(self._streams[channel].stamps_ns[k])
            if abs(stamp - t_img) <= LABEL_MATCH_NS:
                boxes2d[channel] = b2
            else:
                logger.info(
                    "%s: frame %d: 2D boxes of %s at %d ns are for another image than the frame's (%d ns)",
                    self.path, i, channel, t_img, stamp,
                )  # fmt: skip
        return label.boxes, boxes2d

    def labelled_frames(self) -> list[int]:
        """Indices of the frames that carry labels."""
        return sorted(self._labels)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.frame(i)


def _point_time_ns(
    attrs: Mapping[str, npt.NDArray[Any]], where: str
) -> npt.NDArray[np.int32] | None:
    """Per-point time (int32 ns relative to the stamp) from a Velodyne ``time`` or Ouster ``t`` field."""
    if "time" in attrs and attrs["time"].ndim == 1 and attrs["time"].dtype.kind == "f":
        ns = np.rint(attrs["time"].astype(np.float64) * 1e9)
    elif "t" in attrs and attrs["t"].ndim == 1 and attrs["t"].dtype.kind in "ui":
        ns = attrs["t"].astype(np.int64)
    else:
        return None
    if ns.size and (not np.all(np.isfinite(ns)) or np.max(np.abs(ns)) >= 2**31):
        raise LogFormatError(
            f"{where}: per-point time is outside ±2.1 s of the stamp (or not finite); "
            "expected times within one sweep"
        )
    return ns.astype(np.int32)


def open_bag(
    path: str | os.PathLike[str],
    rig: Rig | str | os.PathLike[str] | Mapping[str, Any] | None,
    *,
    calibration: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> BagLog:
    """``BagLog(path, rig, calibration=...)``, with a clear error when no rig is given."""
    if rig is None:
        raise ConfigError(
            f"{path}: a bag needs a rig file that maps topics to sensors; write a suggestion with "
            f"`avfusion info {path} --rig-out rig.yaml`, check it, and pass rig='rig.yaml'"
        )
    return BagLog(path, rig, calibration=calibration)


# --------------------------------------------------------------------------------------------
# Inspection and rig suggestion
# --------------------------------------------------------------------------------------------


@dataclass
class TopicSummary:
    """What one topic holds."""

    topic: str
    msgtype: str
    count: int
    record_ns: I64
    stamps_ns: I64 | None  # header stamps when the type starts with a Header
    frame_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate_hz(self) -> float:
        """Median message rate (from header stamps when there are any, else record times)."""
        t = (
            self.stamps_ns
            if self.stamps_ns is not None and self.stamps_ns.size > 1
            else self.record_ns
        )
        if t.size < 2:
            return float("nan")
        d = np.diff(np.sort(t))
        d = d[d > 0]
        return float(1e9 / float(np.median(d))) if d.size else float("nan")

    @property
    def stamp_range_ns(self) -> tuple[int, int] | None:
        if self.stamps_ns is None or self.stamps_ns.size == 0:
            return None
        return int(self.stamps_ns.min()), int(self.stamps_ns.max())

    @property
    def median_delay_ns(self) -> int | None:
        """Median (record time − header stamp): the recording delay, or a clock difference."""
        if self.stamps_ns is None or self.stamps_ns.size == 0:
            return None
        return int(np.median(self.record_ns - self.stamps_ns))


@dataclass
class BagInfo:
    path: Path
    ros1: bool
    topics: list[TopicSummary]
    tf_static: dict[tuple[str, str], Transform]
    tf_dynamic: dict[tuple[str, str], int]  # edge -> number of samples

    def topic(self, name: str) -> TopicSummary | None:
        return next((t for t in self.topics if t.topic == name), None)


def inspect_bag(path: str | os.PathLike[str]) -> BagInfo:
    """One pass over a bag: per topic the type, count, record times, header stamps and frame."""
    p = Path(path)
    reader = _open_reader(p)
    ros1 = not bool(reader.is2)
    try:
        conns = list(reader.connections)
        header = {c.msgtype: _header_first(reader, c.msgtype) for c in conns}
        rec: dict[str, list[int]] = defaultdict(list)
        stamps: dict[str, list[int]] = defaultdict(list)
        types: dict[str, str] = {}
        frames: dict[str, str] = {}
        details: dict[str, dict[str, Any]] = defaultdict(dict)
        tf = _TfEdges()
        dyn_count: dict[tuple[str, str], int] = defaultdict(int)
        for conn, t_rec, raw in _iter_messages(reader, p, conns, "inspecting"):
            topic = conn.topic
            types.setdefault(topic, conn.msgtype)
            rec[topic].append(int(t_rec))
            where = f"{p}: {topic}"
            if header.get(conn.msgtype):
                stamp, frame = _parse_header(raw, ros1, where)
                stamps[topic].append(stamp)
                frames.setdefault(topic, _frame_name(frame))
            if conn.msgtype in TF_TYPES and (topic in TF_TOPICS or topic in TF_STATIC_TOPICS):
                msg = _deserialize(reader, p, raw, conn.msgtype, topic)
                static = topic in TF_STATIC_TOPICS
                for tr in msg.transforms:
                    key = (_frame_name(tr.header.frame_id), _frame_name(tr.child_frame_id))
                    if static:
                        tf.static.setdefault(key, _tf_transform(tr))
                    else:
                        dyn_count[key] += 1
            elif not details[topic] and conn.msgtype in (
                POINTCLOUD2,
                IMAGE,
                COMPRESSED_IMAGE,
                ODOMETRY,
            ):
                msg = _deserialize(reader, p, raw, conn.msgtype, topic)
                if conn.msgtype == POINTCLOUD2:
                    details[topic] = {
                        "fields": [f.name for f in msg.fields],
                        "points": int(msg.width) * int(msg.height),
                    }
                elif conn.msgtype == IMAGE:
                    details[topic] = {
                        "encoding": str(msg.encoding),
                        "size": (int(msg.width), int(msg.height)),
                    }
                elif conn.msgtype == COMPRESSED_IMAGE:
                    details[topic] = {"format": str(msg.format)}
                else:
                    details[topic] = {"child_frame_id": _frame_name(msg.child_frame_id)}
        counts: dict[str, int] = defaultdict(int)
        for c in conns:
            counts[c.topic] += int(c.msgcount)
            types.setdefault(c.topic, c.msgtype)
    finally:
        with suppress(Exception):
            reader.close()
    topics = [
        TopicSummary(
            name, types[name], counts[name], np.array(rec.get(name, []), dtype=np.int64),
            np.array(stamps[name], dtype=np.int64) if header.get(types[name]) else None,
            frames.get(name, ""), details.get(name, {}),
        )
        for name in sorted(types)
    ]  # fmt: skip
    return BagInfo(p, ros1, topics, dict(tf.static), dict(dyn_count))


def _guess_modality(t: TopicSummary) -> str | None:
    name = (t.topic + " " + t.frame_id).lower()
    if t.msgtype == POINTCLOUD2:
        fields = {f.lower() for f in t.details.get("fields", [])}
        if "radar" in name or fields & {"rcs", "vx", "vy", "doppler", "vx_comp", "velocity"}:
            return "radar"
        return "lidar"
    if t.msgtype in IMAGE_TYPES:
        enc = str(t.details.get("encoding", "")).lower()
        if any(w in name for w in ("thermal", "lwir", "flir", "infrared")) or enc in (
            "mono16",
            "16uc1",
        ):
            return "thermal"
        return "camera"
    return None


def _namespace_candidates(topic: str) -> list[str]:
    parts = [p for p in topic.split("/") if p]
    out = []
    for n in range(len(parts) - 1, -1, -1):
        out.append("/" + "/".join(parts[:n]) if n else "")
    return out


def _sensor_name(t: TopicSummary, used: set[str]) -> str:
    base = t.frame_id or next((p for p in t.topic.split("/") if p), "sensor")
    base = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in base) or "sensor"
    name, k = base, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _static_root(tf_static: Mapping[tuple[str, str], Transform], frame: str) -> str:
    parent_of = {c: p for (p, c) in tf_static}
    node, seen = frame, set()
    while node in parent_of and node not in seen:
        seen.add(node)
        node = parent_of[node]
    return node


def suggest_rig(info: BagInfo) -> tuple[Rig | None, str]:
    """A starting rig for a bag, and its YAML text with comments on what was guessed.

    Modality from the message type (PointCloud2: lidar, or radar when the topic/frame says so or
    the fields hold rcs/velocities; images: camera, or thermal for 16-bit/"thermal" topics);
    CameraInfo paired by namespace (``/ns/image_raw/compressed`` → ``/ns/camera_info``); images
    without one are left out (listed in a comment). Pose: /tf (world frame ``map``/``odom`` or
    the root, ego ``base_link`` or the frame the sensors hang from), else the first
    nav_msgs/Odometry topic, else ``none``. Tolerances: the modality default, widened to 60 % of a
    slower sensor's period.
    """
    notes: list[str] = [f"rig suggested by `avfusion info` for {info.path}; check every value"]
    by_topic = {t.topic: t for t in info.topics}
    infos = {t.topic for t in info.topics if t.msgtype == CAMERA_INFO}
    used: set[str] = set()
    sensors: list[dict[str, Any]] = []
    static_children = {c for (_p, c) in info.tf_static}
    dyn_frames = {f for edge in info.tf_dynamic for f in edge}
    for t in info.topics:
        modality = _guess_modality(t)
        if modality is None or t.count == 0:
            continue
        entry: dict[str, Any] = {"name": "", "modality": modality, "topic": t.topic}
        if modality in ("camera", "thermal"):
            info_topic = next(
                (
                    ns + "/camera_info"
                    for ns in _namespace_candidates(t.topic)
                    if ns + "/camera_info" in infos
                ),
                None,
            )
            if info_topic is None:
                notes.append(
                    f"left out {t.topic} ({t.msgtype}): no CameraInfo topic in its namespace; "
                    "add it with inline intrinsics to use it"
                )
                continue
            entry["camera_info_topic"] = info_topic
        entry["name"] = _sensor_name(t, used)
        if not t.frame_id:
            entry["frame_id"] = entry["name"]
        rate = t.rate_hz
        default = DEFAULT_TOLERANCE_MS[modality]
        if np.isfinite(rate) and rate > 0 and 0.6e3 / rate > default:
            entry["tolerance_ms"] = float(np.ceil(0.6e3 / rate))
        sensors.append(entry)
    order = {"lidar": 0, "radar": 1, "camera": 2, "thermal": 3}
    sensors.sort(key=lambda s: (order[s["modality"]], s["topic"]))
    if not sensors:
        notes.append("no PointCloud2 or image topic with a CameraInfo: nothing to build a rig from")
        return None, "".join(f"# {n}\n" for n in notes)
    # pose
    frames = {f for edge in list(info.tf_static) + list(info.tf_dynamic) for f in edge}
    sensor_frames = [s.get("frame_id") or by_topic[s["topic"]].frame_id for s in sensors]
    pose: dict[str, Any]
    odoms = [t for t in info.topics if t.msgtype == ODOMETRY and t.count > 0]
    if info.tf_dynamic:
        world: str | None = next((f for f in ("map", "world", "odom") if f in dyn_frames), None)
        if world is None:
            world = _static_root(
                {**info.tf_static, **{e: Transform() for e in info.tf_dynamic}},
                next(iter(dyn_frames)),
            )
        ego = "base_link" if "base_link" in frames else None
        if ego is None:
            children = [c for (_p, c) in info.tf_dynamic]
            ego = next(
                (
                    c
                    for c in children
                    if any(_static_root(info.tf_static, f) == c for f in sensor_frames)
                ),
                children[0],
            )
        pose = {"source": "tf", "world_frame": world, "ego_frame": ego}
        notes.append(
            f"pose from /tf: {world} -> {ego} ({sum(info.tf_dynamic.values())} transforms)"
        )
    elif odoms:
        pose = {"source": "odometry", "topic": odoms[0].topic}
        child = odoms[0].details.get("child_frame_id")
        if child:
            pose["ego_frame"] = child
        notes.append(f"pose from odometry {odoms[0].topic}")
    else:
        roots = sorted({_static_root(info.tf_static, f) for f in sensor_frames if f in frames})
        pose = {"source": "none"}
        if roots:
            pose["ego_frame"] = roots[0]
        notes.append(
            "NO POSE SOURCE: the bag has no dynamic /tf and no nav_msgs/Odometry; world_from_ego is "
            "the identity (static rig). Add a pose source for a moving vehicle."
        )
    ego_frame = pose.get("ego_frame")
    for s, frame in zip(sensors, sensor_frames, strict=True):
        reachable = (
            ego_frame is not None
            and frame
            and (
                frame == ego_frame
                or _static_root(info.tf_static, frame) == _static_root(info.tf_static, ego_frame)
            )
        )
        if not reachable or (
            frame in dyn_frames and frame not in static_children and frame != ego_frame
        ):
            s["ego_from_sensor"] = {
                "translation": [0.0, 0.0, 0.0],
                "rotation_wxyz": [1.0, 0.0, 0.0, 0.0],
            }
            notes.append(
                f"{s['name']}: frame '{frame}' is not in /tf_static under the ego frame; identity placeholder for ego_from_sensor"
            )
    ref = next((s for s in sensors if s["modality"] == "lidar"), sensors[0])
    stamps = [by_topic[s["topic"]] for s in sensors]
    delays = {t.topic: t.median_delay_ns for t in stamps if t.median_delay_ns is not None}
    if delays and max(abs(d) for d in delays.values()) > 1_000_000_000:
        notes.append(
            "header stamps and record times differ by more than 1 s on "
            + ", ".join(f"{k} ({v / 1e9:+.3f} s)" for k, v in sorted(delays.items()))
            + ": the bag was re-recorded or the sensors use their own clock"
        )
    data: dict[str, Any] = {"reference_sensor": ref["name"], "pose": pose, "sensors": sensors}
    labels = info.path.parent / "labels.json"
    if labels.is_file():
        data["labels"] = str(labels.resolve())
    rig = rig_from_dict(data, f"suggested rig for {info.path}")
    text = "".join(f"# {n}\n" for n in notes) + rig.to_yaml()
    return rig, text
