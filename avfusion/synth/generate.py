"""Generate a recording of the synthetic world and write it as a nuScenes-style log with truth.

``generate(out_dir, seconds=..., seed=..., inject_errors=...)`` writes ``out_dir`` as a
nuScenes root (see ``avfusion.io.nuscenes_writer`` for the layout and extensions) plus
``truth/``:

* ``calibration.json``: per channel, the exact ``ego_from_sensor``, the believed one written to
  ``calibrated_sensor``, the perturbation between them, the clock offset
  (``t_ego = t_stamp + clock_offset_ns``), the jitter σ, the rate and the camera model;
* ``sample_data_times.json``: per sample_data token, the channel, the written stamp (µs) and the
  true capture time in the ego clock (ns; LiDAR: the middle of the sweep);
* ``ego_trajectory.npz``: the true ``world_from_ego`` track (``t_ns``, ``quaternions`` (w, x, y, z),
  ``translations``) at 200 Hz;
* ``annotations.json``: the clean 3D boxes per sample (before error injection);
* ``injected_errors.json``: the spec and every injected label error;
* ``occupancy/<sample_token>/labels.npz``: Occ3D ``semantics``, ``mask_lidar``, ``mask_camera``;
* ``scene.json``: generator version, seed, duration and every world object with its classes,
  temperature and RCS.

Everything is seeded; files are byte-identical between runs (JPEGs: identical pixels after
decoding). ``AVFUSION_COMPLETE`` is written last.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from numba import njit

from avfusion.errors import ConfigError, LogFormatError
from avfusion.io.nuscenes_writer import NuScenesWriter
from avfusion.synth import labels as lab
from avfusion.synth.camera import render, to_uint8
from avfusion.synth.errors_inject import (
    Ann,
    Box2DRecord,
    parse_inject_spec,
)
from avfusion.synth.errors_inject import (
    inject_errors as apply_errors,
)
from avfusion.synth.lidar import simulate_lidar
from avfusion.synth.radar import simulate_radar
from avfusion.synth.raster import SceneMesh, ground_mesh, object_mesh
from avfusion.synth.rig import LidarSpec, RadarSpec, RigSensor, default_rig, perturb_rig
from avfusion.synth.thermal import column_pattern, counts_from_kelvin, mapping_description
from avfusion.synth.world import LIDARSEG_CLASSES, ROAD_PARAMS, World, _ego_s, build_world, road_sd

__all__ = [
    "COMPLETE_MARKER",
    "DEFAULT_SECONDS",
    "GenerationSummary",
    "compute_checksums",
    "ensure_sample_data",
    "generate",
    "verify_checksums",
    "write_checksums",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "2"
DEFAULT_SECONDS = 6.5
DEFAULT_SEED = 0
DEFAULT_INJECT = "default"
COMPLETE_MARKER = "AVFUSION_COMPLETE"
MAX_SECONDS = 60.0
#: Keyframes (samples) are every 10th LiDAR sweep (2 Hz), starting with sweep 5.
KEYFRAME_EVERY = 10
KEYFRAME_FIRST = 5
#: Objects farther than this from the ego (m) are not annotated (nuScenes annotates to ~50 m).
ANNOTATION_RANGE_M = 60.0
JPEG_QUALITY = 90
MAP_SIZE_M = 250.0
MAP_RESOLUTION_M = 0.1

ProgressFn = Callable[[int, int, str], object]


@dataclass
class GenerationSummary:
    """What ``generate`` wrote. ``root`` is the nuScenes root (``NuScenes(dataroot=root)``)."""

    root: Path
    version: str
    seconds: float
    seed: int
    inject_errors: str | None
    n_samples: int
    n_sample_data: dict[str, int] = field(default_factory=dict)
    n_annotations: int = 0
    n_box2d: int = 0
    n_injected: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"] = str(self.root)
        return d


# --------------------------------------------------------------------------------------------
# Small deterministic encoders
# --------------------------------------------------------------------------------------------


def npz_bytes(arrays: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """A compressed ``.npz`` with fixed zip timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            b = io.BytesIO()
            np.lib.format.write_array(b, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, b.getvalue())
    return buf.getvalue()


def _jpeg(rgb: npt.NDArray[np.uint8]) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:  # pragma: no cover - OpenCV failure
        raise ConfigError("JPEG encoding failed")
    return bytes(buf)


def _png16(counts: npt.NDArray[np.uint16]) -> bytes:
    ok, buf = cv2.imencode(".png", counts)
    if not ok:  # pragma: no cover - OpenCV failure
        raise ConfigError("PNG encoding failed")
    return bytes(buf)


@njit(cache=True)
def _map_mask(size: int, res: float, params: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    out = np.zeros((size, size), dtype=np.uint8)
    for r in range(size):
        y = (size - r) * res
        for c in range(size):
            _, d = road_sd(c * res, y, params)
            if abs(d) < params[3]:
                out[r, c] = 255
    return out


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


@dataclass
class Stream:
    """The frames of one sensor: true capture times (ego clock, ns) and written stamps (ns)."""

    sensor: RigSensor
    t_true_ns: npt.NDArray[np.int64]
    stamp_ns: npt.NDArray[np.int64]
    keyframe_of_sample: dict[int, int] = field(default_factory=dict)  # frame index -> sample index
    tokens: list[str] = field(default_factory=list)


def _schedule(world: World, sensor: RigSensor, seed: int, index: int) -> Stream:
    period_us = round(1e6 / sensor.rate_hz)
    phase_us = round(sensor.phase_s * 1e6)
    duration_us = world.duration_ns // 1000
    n = (duration_us - phase_us - 1) // period_us + 1
    nominal = world.t0_ns + 1000 * (phase_us + period_us * np.arange(n, dtype=np.int64))
    jitter_us = np.rint(
        np.random.default_rng([seed, 100, index]).normal(0.0, sensor.jitter_us, n)
    ).astype(np.int64)
    t_true = nominal + 1000 * jitter_us
    return Stream(sensor, t_true, t_true - sensor.clock_offset_ns)


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def _check_args(seconds: float, seed: int, inject_errors: str | None) -> dict[str, float]:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
    ):
        raise ConfigError(f"synth: seconds must be a finite number, got {seconds!r}")
    if seconds <= 0:
        raise ConfigError(f"synth: seconds must be > 0, got {seconds}")
    if seconds > MAX_SECONDS:
        raise ConfigError(
            f"synth: seconds must be <= {MAX_SECONDS:g} (the scenery covers about a minute of driving), got {seconds}"
        )
    if seconds < 0.6:
        raise ConfigError(
            f"synth: seconds must be >= 0.6 to hold one keyframe (the first is at 0.25 s + a full sweep), got {seconds}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"synth: seed must be an integer >= 0, got {seed!r}")
    return parse_inject_spec(inject_errors)


def generate(
    out_dir: Path | str,
    *,
    seconds: float = DEFAULT_SECONDS,
    seed: int = DEFAULT_SEED,
    inject_errors: str | None = None,
    progress: ProgressFn | None = None,
    perturb: Mapping[str, Sequence[float]] | None = None,
    version: str = "v1.0-mini",
) -> GenerationSummary:
    """Simulate ``seconds`` of driving and write the nuScenes-style log and truth to ``out_dir``.

    ``inject_errors`` is a label-error spec (see ``errors_inject``); ``perturb`` maps channels to
    extrinsic perturbations (rx, ry, rz rad, tx, ty, tz m; see ``rig.perturb_rig``);
    ``progress(done, total, what)`` is called after every sensor frame. ``out_dir`` must be
    empty or absent. Raises ``ConfigError`` on bad arguments.
    """
    rates = _check_args(seconds, seed, inject_errors)
    started = time.perf_counter()
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"synth: output directory {root} is not empty; choose a new directory")
    root.mkdir(parents=True, exist_ok=True)
    seed = int(seed)

    world = build_world(float(seconds), seed)
    rig = perturb_rig(default_rig(), perturb)
    lidar_spec, radar_spec = LidarSpec(), RadarSpec()
    streams = {
        name: _schedule(world, s, seed, i) for i, s in enumerate(rig.values()) for name in [s.name]
    }
    lidar = streams["LIDAR_TOP"]
    key_idx = list(range(KEYFRAME_FIRST, len(lidar.t_true_ns), KEYFRAME_EVERY))
    if not key_idx:
        raise ConfigError(f"synth: {seconds} s is too short for a keyframe")
    sample_stamp_ns = lidar.stamp_ns[key_idx]
    sample_true_ns = lidar.t_true_ns[key_idx]
    for s_i, f_i in enumerate(key_idx):
        lidar.keyframe_of_sample[f_i] = s_i
    for name, st in streams.items():
        if name == "LIDAR_TOP":
            continue
        for s_i, ts in enumerate(sample_stamp_ns):
            st.keyframe_of_sample[int(np.argmin(np.abs(st.stamp_ns - ts)))] = s_i

    writer = NuScenesWriter(
        root, version=version, token_seed=f"avfusion-synth/{seed}", log_name=f"avfusion-synth-{seed:04d}",
        categories=[(c, f"nuScenes-lidarseg class {i}") for i, c in enumerate(LIDARSEG_CLASSES)],
    )  # fmt: skip
    for name, s in rig.items():
        ext: dict[str, Any] = {"time_offset_ns": 0, "rate_hz": s.rate_hz}
        if s.camera is not None:
            ext.update(
                distortion_model=s.camera.distortion, distortion_coeffs=s.camera.opencv_distortion().tolist(),
                width=s.camera.width, height=s.camera.height,
            )  # fmt: skip
        if s.modality == "thermal":
            ext["counts_to_kelvin"] = mapping_description()
        if s.modality == "lidar":
            ext["per_point_time"] = {
                "file_suffix": ".time.bin", "dtype": "int32", "unit": "ns relative to the sample_data timestamp",
                "stamp": "middle of the sweep (beam along ego +x)", "sweep_duration_ns": round(1e9 / lidar_spec.rate_hz),
                "rotation": "clockwise seen from above",
            }  # fmt: skip
        writer.add_sensor(
            name, s.modality, s.believed_ego_from_sensor,
            camera_intrinsic=None if s.camera is None else s.camera.K, extension=ext,
        )  # fmt: skip
    size_px = round(MAP_SIZE_M / MAP_RESOLUTION_M)
    mask = _map_mask(size_px, MAP_RESOLUTION_M, ROAD_PARAMS)
    _ok, map_png = cv2.imencode(".png", mask)
    writer.add_map(bytes(map_png))
    sample_tokens = [writer.add_sample(int(ts // 1000)) for ts in sample_stamp_ns]

    def nearest_sample(stamp_ns: int) -> int:
        return int(np.argmin(np.abs(sample_stamp_ns - stamp_ns)))

    total = sum(len(st.t_true_ns) for st in streams.values())
    done = 0
    sd_times: dict[str, dict[str, Any]] = {}

    def add(st: Stream, k: int, fileformat: str, ext: str, **kw: Any) -> str:
        nonlocal done
        stamp = int(st.stamp_ns[k])
        s_i = st.keyframe_of_sample.get(k)
        is_key = s_i is not None
        tok, _ = writer.add_sample_data(
            st.sensor.name, stamp // 1000, world.world_from_ego.at(stamp),
            sample_token=sample_tokens[s_i if s_i is not None else nearest_sample(stamp)],
            is_key_frame=is_key, fileformat=fileformat, extension=ext, **kw,
        )  # fmt: skip
        st.tokens.append(tok)
        sd_times[tok] = {
            "channel": st.sensor.name,
            "stamp_us": stamp // 1000,
            "t_true_ns": int(st.t_true_ns[k]),
        }
        done += 1
        if progress is not None:
            progress(done, total, st.sensor.name)
        return tok

    # ---- LiDAR ------------------------------------------------------------------------------
    key_lidar: dict[int, tuple[str, npt.NDArray[np.float32]]] = {}
    for k, t_true in enumerate(lidar.t_true_ns):
        sweep = simulate_lidar(
            world, lidar.sensor, lidar_spec, int(t_true), np.random.default_rng([seed, 1, k])
        )
        pts = np.column_stack([sweep.xyz, sweep.intensity, sweep.ring.astype(np.float32)]).astype(
            np.float32
        )
        data = pts.tobytes()
        tok = add(lidar, k, "pcd", ".pcd.bin", make_bytes=lambda data=data: data)
        rel = next(
            r["filename"] for r in reversed(writer.tables["sample_data"]) if r["token"] == tok
        )
        times = sweep.time_offset_ns.astype(np.int32).tobytes()
        writer.add_extra_file(rel + ".time.bin", partial(bytes, times))
        if k in lidar.keyframe_of_sample:
            writer.add_lidarseg(tok, sweep.lidarseg)
            key_lidar[lidar.keyframe_of_sample[k]] = (tok, sweep.xyz)

    # ---- Radar ------------------------------------------------------------------------------
    from avfusion.io.pcd import write_pcd

    radar = streams["RADAR_FRONT"]
    key_radar: dict[int, tuple[str, npt.NDArray[np.float32]]] = {}
    for k, t_true in enumerate(radar.t_true_ns):
        scan = simulate_radar(
            world, radar.sensor, radar_spec, int(t_true), np.random.default_rng([seed, 2, k])
        )
        cols = scan.fields
        tok = add(
            radar,
            k,
            "pcd",
            ".pcd",
            write_to=lambda p, cols=cols: write_pcd(p, cols, encoding="binary"),
        )
        if k in radar.keyframe_of_sample:
            xyz = np.column_stack([cols["x"], cols["y"], cols["z"]]).astype(np.float32)
            key_radar[radar.keyframe_of_sample[k]] = (tok, xyz)

    # ---- Cameras and thermal ----------------------------------------------------------------
    s_now = _ego_s(np.array([0.0, float(seconds)]))
    ground = ground_mesh(world, (float(s_now[0]) - 60.0, float(s_now[1]) + 110.0))
    annotated = set(lab.annotated_indices(world))
    boxes2d: list[Box2DRecord] = []
    fpn = column_pattern(640, seed)
    for name, st in streams.items():
        if st.sensor.camera is None:
            continue
        thermal = st.sensor.modality == "thermal"
        cam = st.sensor.camera
        for k, t_true in enumerate(st.t_true_ns):
            prims = world.primitive_arrays(int(t_true))
            om = object_mesh(prims)
            mesh = SceneMesh(
                np.concatenate([ground.tri, om.tri]),
                np.concatenate([ground.normal, om.normal]),
                np.concatenate([ground.prim, om.prim]),
            )
            world_from_cam = world.world_from_ego.at(int(t_true)) @ st.sensor.ego_from_sensor
            res = render(
                world,
                mesh,
                prims,
                cam,
                world_from_cam,
                thermal=thermal,
                noise_seed=k * 7 + len(name),
            )
            if thermal:
                counts = counts_from_kelvin(
                    res.image, np.random.default_rng([seed, 3, k]), fpn[: cam.width]
                )
                tok = add(
                    st,
                    k,
                    "png",
                    ".png",
                    make_bytes=lambda c=counts: _png16(c),
                    width=cam.width,
                    height=cam.height,
                )
            else:
                rgb = to_uint8(res.image)
                tok = add(
                    st,
                    k,
                    "jpg",
                    ".jpg",
                    make_bytes=lambda im=rgb: _jpeg(im),
                    width=cam.width,
                    height=cam.height,
                )
            key_sample = st.keyframe_of_sample.get(k)
            if key_sample is not None:
                found = lab.boxes2d_from_prim_image(res.prim, prims["object"], annotated)
                for oi, (bbox, _npx) in sorted(found.items()):
                    boxes2d.append(
                        Box2DRecord(f"{tok}/{oi}", tok, name, key_sample, oi, list(bbox))
                    )

    # ---- Truth per sample: boxes, counts, visibility, occupancy ------------------------------
    lidar_sensor = rig["LIDAR_TOP"]
    anns: list[Ann] = []
    for s_i, t_s in enumerate(sample_true_ns):
        t_s = int(t_s)
        prims = world.primitive_arrays(t_s)
        pose = world.world_from_ego.at(t_s)
        boxes = lab.boxes_at(world, t_s)
        origin = (pose @ lidar_sensor.ego_from_sensor).translation
        dist = np.linalg.norm(boxes.center[:, :2] - pose.translation[:2], axis=1)
        vis = lab.visibility_levels(
            world, prims, origin, t_s, [int(i) for i in boxes.attrs["object_index"]], seed + s_i
        )
        for b in range(len(boxes)):
            if dist[b] > ANNOTATION_RANGE_M:
                continue
            oi = int(boxes.attrs["object_index"][b])
            obj = world.objects[oi]
            anns.append(
                Ann(
                    key=f"{obj.track_id}/{s_i}", sample_index=s_i, object_index=oi, track_id=obj.track_id,
                    category=obj.info.category, center=boxes.center[b].copy(), size=boxes.size[b].copy(),
                    rotation=boxes.rotation[b].copy(), attribute=obj.attribute, num_lidar_pts=0, num_radar_pts=0,
                    visibility=int(vis[b]), extra={"velocity": boxes.velocity[b].tolist() if boxes.velocity is not None else None},
                )
            )  # fmt: skip
        sem = lab.occupancy(world, prims, pose)
        ones = np.ones(lab.OCC_GRID_SHAPE, dtype=np.uint8)
        writer.write_truth_bytes(
            f"occupancy/{sample_tokens[s_i]}/labels.npz",
            partial(npz_bytes, {"semantics": sem, "mask_lidar": ones, "mask_camera": ones}),
        )

    def counts_for(items: list[Ann]) -> None:
        """num_lidar_pts / num_radar_pts of the boxes as written (devkit points_in_box rule)."""
        by_sample: dict[int, list[Ann]] = {}
        for a in items:
            by_sample.setdefault(a.sample_index, []).append(a)
        for s_i, group in by_sample.items():
            from avfusion.types import Boxes3D

            boxes = Boxes3D(
                np.array([a.center for a in group]), np.array([a.size for a in group]), np.array([a.rotation for a in group]),
                np.array([a.category for a in group]), np.array([a.track_id for a in group]), "world",
            )  # fmt: skip
            for chan, store, attr in (
                ("LIDAR_TOP", key_lidar, "num_lidar_pts"),
                ("RADAR_FRONT", key_radar, "num_radar_pts"),
            ):
                if s_i not in store:
                    continue
                tok, xyz = store[s_i]
                stamp = int(streams[chan].stamp_ns[streams[chan].tokens.index(tok)])
                world_from_sensor = (
                    world.world_from_ego.at(stamp) @ rig[chan].believed_ego_from_sensor
                )
                n = lab.points_in_boxes(xyz, boxes.transformed(world_from_sensor.inverse(), chan))
                for a, c in zip(group, n, strict=True):
                    setattr(a, attr, int(c))

    counts_for(anns)
    anns = [a for a in anns if a.num_lidar_pts + a.num_radar_pts > 0]
    kept_keys = {(a.sample_index, a.object_index) for a in anns}
    for b2 in boxes2d:
        b2.category = world.objects[b2.object_index].info.category
    clean = [
        {
            "key": a.key, "sample_token": sample_tokens[a.sample_index], "track_id": a.track_id, "category": a.category,
            "translation": a.center.tolist(), "size_lwh": a.size.tolist(), "rotation": a.rotation.tolist(),
            "velocity": a.extra["velocity"], "attribute": a.attribute, "num_lidar_pts": a.num_lidar_pts,
            "num_radar_pts": a.num_radar_pts, "visibility": a.visibility,
            "token": writer.token("sample_annotation", a.key),
        }
        for a in anns
    ]  # fmt: skip

    def pose_earlier(a: Ann, dt: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        tf = world.box_transform(
            world.objects[a.object_index], int(sample_true_ns[a.sample_index] - round(dt * 1e9))
        )
        return tf.translation.copy(), tf.quaternion

    err_anns, err_2d, injected = apply_errors(
        anns, boxes2d, rates, np.random.default_rng([seed, 999]), pose_earlier
    )
    counts_for(err_anns)
    ann_token: dict[tuple[int, int], tuple[str, str]] = {}
    for a in err_anns:
        inst = writer.instance_token(a.track_id, world.objects[a.object_index].info.category)
        if a.category != world.objects[a.object_index].info.category:
            writer.set_instance_category(inst, a.category)
        tok = writer.add_annotation(
            sample_tokens[a.sample_index], inst, center=a.center.tolist(), size_lwh=a.size.tolist(), rotation_wxyz=a.rotation.tolist(),
            num_lidar_pts=a.num_lidar_pts, num_radar_pts=a.num_radar_pts, visibility=a.visibility,
            attributes=[a.attribute] if a.attribute else [], key=a.key,
        )  # fmt: skip
        ann_token[(a.sample_index, a.object_index)] = (tok, inst)
    for b2 in err_2d:
        tok_inst = ann_token.get((b2.sample_index, b2.object_index))
        if tok_inst is None and (b2.sample_index, b2.object_index) in kept_keys:
            continue  # its 3D box was removed by injection ("missing")
        inst = (
            tok_inst[1]
            if tok_inst
            else writer.instance_token(
                world.objects[b2.object_index].track_id,
                world.objects[b2.object_index].info.category,
            )
        )
        writer.add_box2d(
            b2.sample_data_token,
            tok_inst[0] if tok_inst else "",
            inst,
            b2.category,
            b2.bbox,
            b2.key,
        )
    for entry in injected:
        if "key" in entry and "/" in entry["key"] and entry["kind"] != "mismatch_2d":
            entry["annotation_token"] = writer.token("sample_annotation", entry["key"])
        if "sample_index" in entry:
            entry["sample_token"] = sample_tokens[entry["sample_index"]]
        if entry["kind"] == "class_swap":
            entry["instance_token"] = writer.token("instance", entry["track_id"])

    # ---- Truth files ------------------------------------------------------------------------
    calib = {}
    for name, s in rig.items():
        calib[name] = {
            "modality": s.modality,
            "ego_from_sensor": {"translation": s.ego_from_sensor.translation.tolist(), "rotation": s.ego_from_sensor.quaternion.tolist()},
            "ego_from_sensor_believed": {
                "translation": s.believed_ego_from_sensor.translation.tolist(), "rotation": s.believed_ego_from_sensor.quaternion.tolist(),
            },
            "perturbation": {"rotvec_rad": s.perturbation.as_rotvec().tolist(), "translation_m": s.perturbation.translation.tolist()},
            "clock_offset_ns": s.clock_offset_ns,
            "jitter_sigma_us": s.jitter_us,
            "rate_hz": s.rate_hz,
            "camera": None if s.camera is None else {
                "K": s.camera.K.tolist(), "distortion": s.camera.distortion, "coeffs": s.camera.opencv_distortion().tolist(),
                "width": s.camera.width, "height": s.camera.height,
            },
        }  # fmt: skip
    writer.write_truth_json(
        "calibration.json",
        {
            "convention": "t_ego_ns = t_stamp_ns + clock_offset_ns; believed = truth @ perturbation (sensor frame)",
            "sensors": calib,
        },
    )
    writer.write_truth_json("sample_data_times.json", sd_times)
    traj = world.world_from_ego
    writer.write_truth_bytes(
        "ego_trajectory.npz",
        lambda: npz_bytes(
            {"t_ns": traj.t_ns, "quaternions": traj.quaternions, "translations": traj.translations}
        ),
    )
    writer.write_truth_json("annotations.json", clean)
    writer.write_truth_json(
        "injected_errors.json", {"spec": inject_errors, "rates": rates, "errors": injected}
    )
    writer.write_truth_json(
        "scene.json",
        {
            "generator_version": GENERATOR_VERSION, "seed": seed, "seconds": float(seconds), "t0_ns": world.t0_ns,
            "objects": [
                {"index": i, "track_id": o.track_id, "kind": o.kind, "category": o.info.category, "lidarseg": o.info.lidarseg,
                 "occ3d": o.info.occ3d, "annotated": o.info.annotated, "box_size_lwh": list(o.box_size),
                 "temperature_k": o.temperature_k, "hot_k": o.hot_k, "rcs_dbsm": o.rcs_dbsm, "speed_mps": o.speed_mps}
                for i, o in enumerate(world.objects)
            ],
        },
    )  # fmt: skip
    writer.close(
        scene_name=f"scene-{seed:04d}",
        description=f"avfusion synthetic scene, seed {seed}, {seconds:g} s",
    )
    marker = {
        "generator_version": GENERATOR_VERSION,
        "seconds": float(seconds),
        "seed": seed,
        "inject_errors": inject_errors,
        "version": version,
    }
    (root / COMPLETE_MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
    summary = GenerationSummary(
        root=root, version=version, seconds=float(seconds), seed=seed, inject_errors=inject_errors,
        n_samples=len(sample_tokens), n_sample_data={n: len(st.tokens) for n, st in streams.items()},
        n_annotations=len(err_anns), n_box2d=len(writer.box2d), n_injected=len(injected),
        elapsed_s=time.perf_counter() - started,
    )  # fmt: skip
    logger.info("synth: wrote %s in %.1f s", root, summary.elapsed_s)
    return summary


# --------------------------------------------------------------------------------------------
# sample_data/ and checksums
# --------------------------------------------------------------------------------------------


def ensure_sample_data(
    root: Path | str,
    *,
    seconds: float = DEFAULT_SECONDS,
    seed: int = DEFAULT_SEED,
    inject_errors: str | None = DEFAULT_INJECT,
    progress: ProgressFn | None = None,
) -> Path:
    """Make sure ``root/nuscenes`` holds the complete default log; return that nuScenes root.

    ``root`` is the ``sample_data`` directory. The log counts as complete when its
    ``AVFUSION_COMPLETE`` marker matches the requested parameters; otherwise it is generated
    into a temporary sibling and moved into place, so an interrupted run never leaves a log
    that looks complete.
    """
    base = Path(root)
    target = base / "nuscenes"
    want = {
        "generator_version": GENERATOR_VERSION,
        "seconds": float(seconds),
        "seed": int(seed),
        "inject_errors": inject_errors,
        "version": "v1.0-mini",
    }
    marker = target / COMPLETE_MARKER
    if marker.is_file() and _read_marker(marker) == want:
        return target
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".nuscenes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one generator at a time (e.g. pytest-xdist workers)
        if marker.is_file() and _read_marker(marker) == want:
            return target
        tmp = base / f".nuscenes.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        generate(tmp, seconds=seconds, seed=seed, inject_errors=inject_errors, progress=progress)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return target


def _read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _decoded_jpeg_digest(path: Path) -> str:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LogFormatError(f"checksums: cannot decode JPEG {path}")
    h = hashlib.sha256()
    h.update(str(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def compute_checksums(nuscenes_root: Path | str) -> dict[str, str]:
    """Relative path → SHA-256 of every file under the root (JPEGs: of their decoded pixels,
    with the path suffixed ``#decoded``). The completion marker is included."""
    base = Path(nuscenes_root)
    out: dict[str, str] = {}
    for p in sorted(base.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(base).as_posix()
        if p.suffix == ".jpg":
            out[rel + "#decoded"] = _decoded_jpeg_digest(p)
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_checksums(
    nuscenes_root: Path | str, checksum_file: Path | str, prefix: str = "nuscenes/"
) -> None:
    """Write ``sha256  path`` lines (sha256sum format; JPEG lines end in ``#decoded``)."""
    sums = compute_checksums(nuscenes_root)
    lines = [f"{digest}  {prefix}{rel}" for rel, digest in sums.items()]
    Path(checksum_file).write_text("\n".join(lines) + "\n")


def verify_checksums(
    nuscenes_root: Path | str, checksum_file: Path | str, prefix: str = "nuscenes/"
) -> list[str]:
    """Paths whose checksum differs from ``checksum_file``, or that are missing or extra."""
    want: dict[str, str] = {}
    for line in Path(checksum_file).read_text().splitlines():
        if line.strip():
            digest, _, rel = line.partition("  ")
            want[rel.removeprefix(prefix)] = digest
    have = compute_checksums(nuscenes_root)
    bad = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    return bad
