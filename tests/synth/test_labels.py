"""Truth labels: 2D boxes agree with projected 3D boxes, occupancy, point counts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from avfusion.calibration.transforms import Trajectory, Transform
from avfusion.synth import labels as lab
from avfusion.synth.camera import render
from avfusion.synth.raster import SceneMesh, ground_mesh, object_mesh
from avfusion.synth.rig import default_rig
from avfusion.synth.world import build_world

from .conftest import SynthLog


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize(
    "channel", ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "THERMAL_FRONT"]
)
def test_projected_truth_boxes_agree_with_2d_boxes(channel: str) -> None:
    world = build_world(4.0, 0)
    rig = default_rig()
    sensor = rig[channel]
    cam = sensor.camera
    assert cam is not None
    ground = ground_mesh(world, (-80.0, 60.0))
    annotated = set(lab.annotated_indices(world))
    checked = 0
    for t in (world.t0_ns + 500_000_000, world.t0_ns + 1_500_000_000, world.t0_ns + 2_500_000_000):
        prims = world.primitive_arrays(t)
        om = object_mesh(prims)
        mesh = SceneMesh(
            np.concatenate([ground.tri, om.tri]),
            np.concatenate([ground.normal, om.normal]),
            np.concatenate([ground.prim, om.prim]),
        )
        world_from_cam = world.world_from_ego.at(t) @ sensor.ego_from_sensor
        res = render(world, mesh, prims, cam, world_from_cam, thermal=channel.startswith("THERMAL"))
        found = lab.boxes2d_from_prim_image(res.prim, prims["object"], annotated)
        boxes = lab.boxes_at(world, t, sorted(found))
        vis = lab.visibility_levels(world, prims, world_from_cam.translation, t, sorted(found), 0)
        corners = boxes.corners()
        for k, oi in enumerate(sorted(found)):
            bbox2d = np.array(found[oi][0])
            uv, _depth, inside = cam.project(world_from_cam.inverse().apply(corners[k]))
            if not inside.all():
                continue
            proj = np.array(
                [
                    uv[:, 0].min() - 0.5,
                    uv[:, 1].min() - 0.5,
                    uv[:, 0].max() + 0.5,
                    uv[:, 1].max() + 0.5,
                ]
            )
            if cam.distortion == "none":
                # the visible silhouette lies inside the projection of the enclosing box
                assert bbox2d[0] >= proj[0] - 1 and bbox2d[1] >= proj[1] - 1
                assert bbox2d[2] <= proj[2] + 1 and bbox2d[3] <= proj[3] + 1
            if vis[k] == 4 and (proj[2] - proj[0]) > 20:
                # Vehicles fill their boxes; people and cyclists are slimmer than theirs, but
                # their vertical extent matches.
                what = (channel, world.objects[oi].track_id, bbox2d, proj)
                if world.objects[oi].kind in ("car", "truck", "bus"):
                    assert _iou(bbox2d, proj) > 0.6, what
                v_overlap = (min(bbox2d[3], proj[3]) - max(bbox2d[1], proj[1])) / (
                    max(bbox2d[3], proj[3]) - min(bbox2d[1], proj[1])
                )
                assert v_overlap > 0.8, what
                checked += 1
    assert checked >= 1


def test_written_2d_boxes_are_inside_their_images(synth_log: SynthLog) -> None:
    sd = {r["token"]: r for r in synth_log.table("sample_data")}
    rows = synth_log.table("avfusion_box2d")
    assert len(rows) > 20
    for r in rows:
        s = sd[r["sample_data_token"]]
        assert s["is_key_frame"] and s["fileformat"] in ("jpg", "png")
        x0, y0, x1, y1 = r["bbox"]
        assert -0.5 <= x0 < x1 and -0.5 <= y0 < y1
        if not any(
            e["kind"] == "mismatch_2d" and e["sample_data_token"] == s["token"]
            for e in synth_log.truth("injected_errors.json")["errors"]
        ):
            assert x1 <= s["width"] - 0.5 and y1 <= s["height"] - 0.5
        assert set(r) == {
            "token",
            "sample_data_token",
            "sample_annotation_token",
            "instance_token",
            "category_name",
            "bbox",
        }


def test_occupancy_matches_the_world(synth_log: SynthLog) -> None:
    samples = synth_log.table("sample")
    traj_npz = np.load(io.BytesIO((synth_log.root / "truth" / "ego_trajectory.npz").read_bytes()))
    traj = Trajectory(traj_npz["t_ns"], traj_npz["quaternions"], traj_npz["translations"])
    times = synth_log.truth("sample_data_times.json")
    sd = synth_log.table("sample_data")
    clean = synth_log.truth("annotations.json")
    for s in samples[:3]:
        data = np.load(synth_log.root / "truth" / "occupancy" / s["token"] / "labels.npz")
        sem = data["semantics"]
        assert sem.shape == (200, 200, 16) and sem.dtype == np.uint8
        assert data["mask_lidar"].dtype == np.uint8 and data["mask_camera"].all()
        lidar_sd = next(
            r
            for r in sd
            if r["sample_token"] == s["token"]
            and r["is_key_frame"]
            and r["filename"].startswith("samples/LIDAR_TOP")
        )
        t_true = times[lidar_sd["token"]]["t_true_ns"]
        ego_from_world = traj.at(t_true).inverse()
        # The ego stands on the driveable surface: the column under the grid centre holds class 11 near z = 0.
        column = sem[100, 100]
        assert 11 in column.tolist()
        k = int(np.flatnonzero(column == 11)[0])
        assert -0.6 <= -1.0 + 0.4 * k <= 0.2
        assert set(np.unique(sem).tolist()) >= {4, 11, 17}
        for a in clean:
            if a["sample_token"] != s["token"] or a["category"] != "vehicle.car":
                continue
            c = ego_from_world.apply(np.array(a["translation"]))
            idx = np.floor((c - np.array([-40.0, -40.0, -1.0])) / 0.4).astype(int)
            if np.all(idx >= 0) and np.all(idx < [200, 200, 16]):
                assert sem[tuple(idx)] == 4


def test_num_lidar_pts_follow_the_devkit_rule(synth_log: SynthLog) -> None:
    injected = {
        e.get("annotation_token") for e in synth_log.truth("injected_errors.json")["errors"]
    }
    sd = {r["token"]: r for r in synth_log.table("sample_data")}
    cs = {r["token"]: r for r in synth_log.table("calibrated_sensor")}
    poses = {r["token"]: r for r in synth_log.table("ego_pose")}
    anns = synth_log.table("sample_annotation")
    lidar_of = {
        r["sample_token"]: r
        for r in sd.values()
        if r["is_key_frame"] and r["filename"].startswith("samples/LIDAR_TOP")
    }
    assert len(anns) > 30
    for a in anns:
        r = lidar_of[a["sample_token"]]
        pts = np.fromfile(synth_log.root / r["filename"], dtype=np.float32).reshape(-1, 5)[:, :3]
        e = poses[r["ego_pose_token"]]
        c = cs[r["calibrated_sensor_token"]]
        world_from_sensor = Transform.from_quaternion(
            e["rotation"], e["translation"]
        ) @ Transform.from_quaternion(c["rotation"], c["translation"])
        box_from_world = Transform.from_quaternion(a["rotation"], a["translation"]).inverse()
        local = (box_from_world @ world_from_sensor).apply(pts.astype(np.float64))
        w, ln, h = a["size"]
        n = int(np.count_nonzero(np.all(np.abs(local) <= np.array([ln, w, h]) / 2, axis=1)))
        assert abs(n - a["num_lidar_pts"]) <= 1
        if a["token"] not in injected:  # a shifted or late box may miss every point
            assert a["num_lidar_pts"] + a["num_radar_pts"] > 0
    assert json.dumps(anns)  # plain JSON types
