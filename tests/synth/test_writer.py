"""The nuScenes-style output: standard tables, field names and types, files, extensions."""

from __future__ import annotations

import itertools

import numpy as np

from avfusion.calibration.transforms import Trajectory
from avfusion.io.pcd import parse_pcd_header
from avfusion.synth.radar import RADAR_FIELDS

from .conftest import SynthLog

FIELDS = {
    "attribute": {"token": str, "name": str, "description": str},
    "calibrated_sensor": {"token": str, "sensor_token": str, "translation": list, "rotation": list, "camera_intrinsic": list},
    "category": {"token": str, "name": str, "description": str, "index": int},
    "ego_pose": {"token": str, "timestamp": int, "rotation": list, "translation": list},
    "instance": {"token": str, "category_token": str, "nbr_annotations": int, "first_annotation_token": str, "last_annotation_token": str},
    "log": {"token": str, "logfile": str, "vehicle": str, "date_captured": str, "location": str},
    "map": {"category": str, "token": str, "filename": str, "log_tokens": list},
    "sample": {"token": str, "timestamp": int, "prev": str, "next": str, "scene_token": str},
    "sample_annotation": {
        "token": str, "sample_token": str, "instance_token": str, "visibility_token": str, "attribute_tokens": list,
        "translation": list, "size": list, "rotation": list, "prev": str, "next": str, "num_lidar_pts": int, "num_radar_pts": int,
    },
    "sample_data": {
        "token": str, "sample_token": str, "ego_pose_token": str, "calibrated_sensor_token": str, "timestamp": int,
        "fileformat": str, "is_key_frame": bool, "height": int, "width": int, "filename": str, "prev": str, "next": str,
    },
    "scene": {"token": str, "log_token": str, "nbr_samples": int, "first_sample_token": str, "last_sample_token": str, "name": str, "description": str},
    "sensor": {"token": str, "channel": str, "modality": str},
    "visibility": {"description": str, "token": str, "level": str},
}  # fmt: skip


def test_tables_have_nuscenes_fields_and_types(synth_log: SynthLog) -> None:
    for name, fields in FIELDS.items():
        rows = synth_log.table(name)
        assert rows, name
        for row in rows:
            assert set(row) == set(fields), (name, set(row) ^ set(fields))
            for key, typ in fields.items():
                assert type(row[key]) is typ, (name, key, type(row[key]))
    tokens = [r["token"] for n in FIELDS if n != "visibility" for r in synth_log.table(n)]
    assert all(len(t) == 32 for t in tokens)
    assert len(synth_log.table("category")) == 32
    assert [c["index"] for c in synth_log.table("category")] == list(range(32))


def test_links_and_counts(synth_log: SynthLog) -> None:
    samples = synth_log.table("sample")
    assert len(samples) == synth_log.summary.n_samples == 5
    assert samples[0]["prev"] == "" and samples[-1]["next"] == ""
    assert all(
        a["next"] == b["token"] and b["prev"] == a["token"] for a, b in itertools.pairwise(samples)
    )
    scene = synth_log.table("scene")[0]
    assert scene["first_sample_token"] == samples[0]["token"] and scene["nbr_samples"] == 5
    sd = synth_log.table("sample_data")
    sensors = {s["token"]: s for s in synth_log.table("sensor")}
    cs = {c["token"]: sensors[c["sensor_token"]] for c in synth_log.table("calibrated_sensor")}
    for s in samples:
        keys = {
            cs[r["calibrated_sensor_token"]]["channel"]
            for r in sd
            if r["sample_token"] == s["token"] and r["is_key_frame"]
        }
        assert keys == {
            "LIDAR_TOP",
            "RADAR_FRONT",
            "CAM_FRONT",
            "CAM_FRONT_LEFT",
            "CAM_FRONT_RIGHT",
            "THERMAL_FRONT",
        }
        lidar = next(
            r
            for r in sd
            if r["sample_token"] == s["token"]
            and r["is_key_frame"]
            and cs[r["calibrated_sensor_token"]]["channel"] == "LIDAR_TOP"
        )
        assert lidar["timestamp"] == s["timestamp"]
    assert {s["modality"] for s in sensors.values()} == {"lidar", "radar", "camera"}
    inst = synth_log.table("instance")
    anns = {a["token"]: a for a in synth_log.table("sample_annotation")}
    for i in inst:
        chain, tok = [], i["first_annotation_token"]
        while tok:
            chain.append(tok)
            tok = anns[tok]["next"]
        assert len(chain) == i["nbr_annotations"] and chain[-1] == i["last_annotation_token"]


def test_files(synth_log: SynthLog) -> None:
    sd = synth_log.table("sample_data")
    for r in sd:
        path = synth_log.root / r["filename"]
        assert path.is_file()
        if r["filename"].endswith(".pcd.bin"):
            raw = np.fromfile(path, dtype=np.float32)
            assert raw.size % 5 == 0
            pts = raw.reshape(-1, 5)
            assert set(np.unique(pts[:, 4]).tolist()) <= set(map(float, range(32)))
            times = np.fromfile(str(path) + ".time.bin", dtype=np.int32)
            assert times.size == pts.shape[0] and np.all(np.diff(times) >= 0)
        elif r["filename"].endswith(".pcd"):
            header = parse_pcd_header(path.read_bytes()[:2048], str(path))
            assert tuple(header.fields) == tuple(n for n, _ in RADAR_FIELDS)
            assert header.data == "binary"
    lidarseg = synth_log.table("lidarseg")
    assert len(lidarseg) == 5
    for r in lidarseg:
        labels = np.fromfile(synth_log.root / r["filename"], dtype=np.uint8)
        lidar = next(s for s in sd if s["token"] == r["sample_data_token"])
        n = np.fromfile(synth_log.root / lidar["filename"], dtype=np.float32).size // 5
        assert labels.size == n and labels.max() <= 31
        assert {24, 28}.issubset(set(labels.tolist()))


def test_stamps_are_sensor_clock_and_poses_at_the_stamp(synth_log: SynthLog) -> None:
    times = synth_log.truth("sample_data_times.json")
    calib = synth_log.truth("calibration.json")["sensors"]
    poses = {p["token"]: p for p in synth_log.table("ego_pose")}
    traj = synth_log.world.world_from_ego
    assert isinstance(traj, Trajectory)
    for r in synth_log.table("sample_data")[::17]:
        t = times[r["token"]]
        assert r["timestamp"] * 1000 + calib[t["channel"]]["clock_offset_ns"] == t["t_true_ns"]
        expected = traj.at(r["timestamp"] * 1000)
        assert np.allclose(
            poses[r["ego_pose_token"]]["translation"], expected.translation, atol=1e-9
        )
    assert calib["THERMAL_FRONT"]["clock_offset_ns"] == 25_000_000


def test_sizes_are_written_wlh_and_errors_are_listed(synth_log: SynthLog) -> None:
    clean = {a["token"]: a for a in synth_log.truth("annotations.json")}
    injected = synth_log.truth("injected_errors.json")["errors"]
    touched = {e.get("annotation_token") for e in injected}
    written = {a["token"]: a for a in synth_log.table("sample_annotation")}
    same = [t for t in written if t not in touched]
    assert len(same) > 20
    for t in same:
        w, ln, h = written[t]["size"]
        assert [ln, w, h] == clean[t]["size_lwh"]
    kinds = {e["kind"] for e in injected}
    assert len(injected) > 3
    for e in injected:
        if e["kind"] == "missing":
            assert e["annotation_token"] not in written and e["annotation_token"] in clean
        if e["kind"] == "shift" and e["annotation_token"] in written:
            d = np.subtract(
                written[e["annotation_token"]]["translation"],
                clean[e["annotation_token"]]["translation"],
            )
            if not any(
                x["kind"] == "late" and x.get("annotation_token") == e["annotation_token"]
                for x in injected
            ):
                assert np.allclose(d, e["delta_m"])
    assert kinds <= {
        "missing",
        "shrink",
        "grow",
        "shift",
        "late",
        "mismatch_2d",
        "class_swap",
        "id_switch",
    }


def test_sensor_extension(synth_log: SynthLog) -> None:
    ext = {e["channel"]: e for e in synth_log.table("avfusion_sensor")}
    assert ext["THERMAL_FRONT"]["modality"] == "thermal"
    assert (
        ext["THERMAL_FRONT"]["distortion_model"] == "radtan"
        and len(ext["THERMAL_FRONT"]["distortion_coeffs"]) == 8
    )
    assert ext["THERMAL_FRONT"]["counts_to_kelvin"]["scale_k"] == 0.01
    assert (ext["CAM_FRONT"]["width"], ext["CAM_FRONT"]["height"]) == (1600, 900)
    assert all(e["time_offset_ns"] == 0 for e in ext.values())
    cs = {c["token"] for c in synth_log.table("calibrated_sensor")}
    assert {e["calibrated_sensor_token"] for e in ext.values()} == cs
