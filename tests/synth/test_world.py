"""The world: seeded, physically plausible ego motion, complete class tables."""

from __future__ import annotations

import numpy as np

from avfusion.synth.world import (
    CLASSES,
    LIDARSEG_CLASSES,
    OCC3D_CLASSES,
    ROAD_PARAMS,
    build_world,
    ground_height,
    road_point,
    road_sd,
)


def test_same_seed_same_world_other_seed_differs() -> None:
    a, b, c = build_world(3.0, 1), build_world(3.0, 1), build_world(3.0, 2)
    assert [o.track_id for o in a.objects] == [o.track_id for o in b.objects]
    assert [o.box_size for o in a.objects] == [o.box_size for o in b.objects]
    assert np.array_equal(a.world_from_ego.translations, b.world_from_ego.translations)
    assert [o.box_size for o in a.objects] != [o.box_size for o in c.objects]


def test_scene_has_every_required_kind() -> None:
    kinds = {o.kind for o in build_world(6.5, 0).objects}
    assert {
        "car",
        "truck",
        "bus",
        "pedestrian",
        "bicycle",
        "barrier",
        "traffic_cone",
        "manmade",
        "vegetation",
    } <= kinds
    moving = {o.kind for o in build_world(6.5, 0).objects if o.moving}
    assert {"car", "bus", "pedestrian", "bicycle"} <= moving


def test_class_tables() -> None:
    assert len(LIDARSEG_CLASSES) == 32 and LIDARSEG_CLASSES[24] == "flat.driveable_surface"
    assert LIDARSEG_CLASSES[31] == "vehicle.ego" and LIDARSEG_CLASSES[17] == "vehicle.car"
    assert (
        len(OCC3D_CLASSES) == 18
        and OCC3D_CLASSES[17] == "free"
        and OCC3D_CLASSES[11] == "driveable_surface"
    )
    assert CLASSES["pedestrian"].occ3d == 7 and CLASSES["pedestrian"].lidarseg == 2
    assert CLASSES["car"].occ3d == 4 and CLASSES["vegetation"].lidarseg == 30


def test_road_coordinates_round_trip() -> None:
    for s, d in [(-30.0, -1.75), (0.0, 2.0), (25.0, -4.0), (60.0, 7.5)]:
        x, y, _ = road_point(s, d, ROAD_PARAMS)
        s2, d2 = road_sd(x, y, ROAD_PARAMS)
        assert abs(s2 - s) < 1e-9 and abs(d2 - d) < 1e-9


def test_ego_speed_pose_and_height() -> None:
    world = build_world(6.5, 0)
    traj = world.world_from_ego
    t = traj.t_ns.astype(np.float64) / 1e9
    speed = np.linalg.norm(np.diff(traj.translations[:, :2], axis=0), axis=1) / np.diff(t)
    assert speed.min() >= 8.0 and speed.max() <= 12.0
    assert np.all(np.diff(traj.t_ns) == 5_000_000)  # 200 Hz
    z_ground = np.array([ground_height(x, y, ROAD_PARAMS) for x, y in traj.translations[:, :2]])
    assert np.max(np.abs(traj.translations[:, 2] - z_ground)) < 0.03  # 2 cm suspension
    assert np.ptp(traj.translations[:, 2]) > 0.3  # real z
    pitch_roll = [
        abs(np.arcsin(np.clip(traj[i].rotation[2, 0], -1, 1))) for i in range(0, len(traj), 50)
    ]
    assert 0.0 < max(pitch_roll) < np.deg2rad(3.0)
