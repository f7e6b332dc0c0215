"""The sensors are physically right: LiDAR on truth surfaces, sweep timing, radar Doppler, thermal."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.synth.camera import render
from avfusion.synth.lidar import EGO_BODY_CENTER_M, EGO_BODY_HALF_M, simulate_lidar
from avfusion.synth.radar import simulate_radar
from avfusion.synth.raster import SceneMesh, ground_mesh, object_mesh
from avfusion.synth.rig import LidarSpec, RadarSpec, default_rig
from avfusion.synth.thermal import column_pattern, counts_from_kelvin, kelvin_from_counts
from avfusion.synth.world import PRIM_BOX, ROAD_PARAMS, World, build_world, ground_height


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(3.0, 0)


@pytest.fixture(scope="module")
def sweep(world: World):  # type: ignore[no-untyped-def]
    rig = default_rig()
    t = world.t0_ns + 1_000_000_000
    return t, simulate_lidar(world, rig["LIDAR_TOP"], LidarSpec(), t, np.random.default_rng(0))


def test_lidar_points_lie_on_truth_surfaces(world: World, sweep) -> None:  # type: ignore[no-untyped-def]
    t, sw = sweep
    lidar = default_rig()["LIDAR_TOP"]
    assert 15_000 < len(sw.xyz) < 34_688
    # Each point, taken to the world with the true pose at its own firing time, is the truth
    # point moved along the beam by exactly its range noise.
    rot, tr = world.world_from_ego.interpolate_many(t + sw.time_offset_ns)
    p_ego = (
        sw.xyz.astype(np.float64) @ lidar.ego_from_sensor.rotation.T
        + lidar.ego_from_sensor.translation
    )
    p_world = np.einsum("nij,nj->ni", rot, p_ego) + tr
    err = np.linalg.norm(p_world - sw.world_truth, axis=1)
    assert np.max(np.abs(err - np.abs(sw.range_noise_m))) < 1e-4  # float32 storage
    assert np.std(sw.range_noise_m) == pytest.approx(0.02, rel=0.1)
    # Ground truth points are on the height field; object points on a primitive's surface.
    g = sw.object_index < 0
    zg = np.array([ground_height(x, y, ROAD_PARAMS) for x, y in sw.world_truth[g, :2]])
    assert np.max(np.abs(sw.world_truth[g, 2] - zg)) < 1e-3
    prims = world.primitive_arrays(t)
    sel = np.flatnonzero(~g)[::7]
    for i in sel:
        tau = sw.time_offset_ns[i] / 1e9
        best = np.inf
        for j in np.flatnonzero(prims["object"] == sw.object_index[i]):
            c = prims["center"][j] + prims["velocity"][j] * tau
            cy, sy = np.cos(prims["yaw"][j]), np.sin(prims["yaw"][j])
            d = sw.world_truth[i] - c
            local = (
                np.array([cy * d[0] + sy * d[1], -sy * d[0] + cy * d[1], d[2]]) / prims["half"][j]
            )
            f = np.max(np.abs(local)) if prims["kind"][j] == PRIM_BOX else np.linalg.norm(local)
            best = min(best, abs(f - 1.0))
        assert best < 1e-6


def test_lidar_times_monotonic_and_span_the_sweep(sweep) -> None:  # type: ignore[no-untyped-def]
    _, sw = sweep
    assert np.all(np.diff(sw.time_offset_ns) >= 0)
    assert sw.time_offset_ns.min() >= -25_000_000 and sw.time_offset_ns.max() < 25_000_000
    assert sw.time_offset_ns.max() - sw.time_offset_ns.min() > 45_000_000
    assert set(np.unique(sw.ring).tolist()) <= set(range(32))
    assert sw.intensity.min() >= 0 and sw.intensity.max() <= 255


def test_lidar_self_hits_are_filtered(sweep) -> None:  # type: ignore[no-untyped-def]
    _, sw = sweep
    lidar = default_rig()["LIDAR_TOP"]
    assert sw.n_self_hits > 0
    p_ego = lidar.ego_from_sensor.apply(sw.xyz.astype(np.float64))
    for c, h in zip(EGO_BODY_CENTER_M, EGO_BODY_HALF_M, strict=True):
        inside = np.all(np.abs(p_ego - np.array(c)) < np.array(h) - 0.1, axis=1)
        assert not inside.any()


def test_lidar_ego_motion_skews_the_sweep(world: World, sweep) -> None:  # type: ignore[no-untyped-def]
    # The ego moves ~0.5 m during a sweep: the same world point seen at the start and end of the
    # sweep has sensor coordinates that differ by about speed × 50 ms.
    t, sw = sweep
    first = sw.time_offset_ns < -20_000_000
    last = sw.time_offset_ns > 20_000_000
    assert first.any() and last.any()
    t0 = world.world_from_ego.at(t - 25_000_000).translation
    t1 = world.world_from_ego.at(t + 25_000_000).translation
    assert 0.4 < np.linalg.norm(t1 - t0) < 0.6


def test_radar_doppler_matches_truth_radial_velocity(world: World) -> None:
    rig = default_rig()
    radar = rig["RADAR_FRONT"]
    spec = RadarSpec()
    n_moving = 0
    for k in range(6):
        t = world.t0_ns + 300_000_000 + k * 300_000_000
        scan = simulate_radar(world, radar, spec, t, np.random.default_rng(k))
        f = scan.fields
        assert list(f) == ["x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp", "is_quality_valid",
                           "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms", "vy_rms"]  # fmt: skip
        assert np.all(f["z"] == 0)
        az = np.arctan2(f["y"], f["x"])
        vr = f["vx"] * np.cos(az) + f["vy"] * np.sin(az)
        vr_comp = f["vx_comp"] * np.cos(az) + f["vy_comp"] * np.sin(az)
        real = scan.object_index >= 0
        # independent truth: (v_object − v_sensor) · line of sight
        pose = world.world_from_ego.at(t) @ radar.ego_from_sensor
        h = 1_000_000
        o0 = (world.world_from_ego.at(t - h) @ radar.ego_from_sensor).translation
        o1 = (world.world_from_ego.at(t + h) @ radar.ego_from_sensor).translation
        v_sensor = (o1 - o0) / (2 * h / 1e9)
        for i in np.flatnonzero(real):
            u = scan.world_truth[i] - pose.translation
            u /= np.linalg.norm(u)
            v_obj = world.object_velocity(world.objects[scan.object_index[i]], t)
            assert vr[i] == pytest.approx(
                np.dot(v_obj - v_sensor, u), abs=5 * spec.velocity_noise_mps
            )
            assert vr_comp[i] == pytest.approx(np.dot(v_obj, u), abs=5 * spec.velocity_noise_mps)
            n_moving += int(np.linalg.norm(v_obj) > 1.0)
        resid = vr[real] - scan.v_radial_truth[real]
        assert np.all(np.abs(resid) < 5 * spec.velocity_noise_mps)
    assert n_moving >= 3


def test_thermal_pedestrians_hotter_than_background(world: World) -> None:
    rig = default_rig()
    th = rig["THERMAL_FRONT"]
    t = world.t0_ns + 500_000_000
    prims = world.primitive_arrays(t)
    g = ground_mesh(world, (-80.0, 60.0))
    om = object_mesh(prims)
    mesh = SceneMesh(
        np.concatenate([g.tri, om.tri]),
        np.concatenate([g.normal, om.normal]),
        np.concatenate([g.prim, om.prim]),
    )
    assert th.camera is not None
    res = render(
        world, mesh, prims, th.camera, world.world_from_ego.at(t) @ th.ego_from_sensor, thermal=True
    )
    counts = counts_from_kelvin(res.image, np.random.default_rng(0), column_pattern(640, 0))
    kelvin = kelvin_from_counts(counts)
    obj = np.where(res.prim >= 0, prims["object"][np.maximum(res.prim, 0)], -1)
    peds = [i for i, o in enumerate(world.objects) if o.kind == "pedestrian"]
    seen = 0
    for p in peds:
        mask = obj == p
        if mask.sum() < 30:
            continue
        seen += 1
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        ring = np.zeros_like(mask)
        ring[max(r0 - 10, 0) : r1 + 11, max(c0 - 10, 0) : c1 + 11] = True
        ring &= ~mask & (obj != p)
        assert np.median(kelvin[mask]) > np.median(kelvin[ring]) + 5.0
        assert 300.0 < np.median(kelvin[mask]) < 312.0
    assert seen >= 1


def test_thermal_counts_mapping() -> None:
    t = np.array([[273.15, 300.0], [310.0, 250.0]])
    counts = counts_from_kelvin(t, np.random.default_rng(0), np.zeros(2))
    assert counts.dtype == np.uint16
    assert np.allclose(kelvin_from_counts(counts), t, atol=0.3)
    assert int(
        counts_from_kelvin(np.array([[300.0]]), np.random.default_rng(1), np.zeros(1))[0, 0]
    ) in range(29970, 30031)
