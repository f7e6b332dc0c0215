"""Front radar simulation (``RADAR_FRONT``), see ``rig.RadarSpec`` for the sensor model.

A detection is made by aiming at a random point of an object's box and casting a ray: if the
first surface hit belongs to that object, the hit becomes a detection (so occluded objects are
not seen). Per detection:

* range and azimuth with Gaussian noise; position written as ``x = r·cos(az)``,
  ``y = r·sin(az)``, ``z = 0`` in the radar frame (the ARS408 measures no elevation);
* radial Doppler ``v_r = (v_object − v_sensor) · u`` (``u`` the unit line of sight, world
  frame) plus noise, decomposed as in nuScenes: ``vx = v_r·cos(az)``, ``vy = v_r·sin(az)``;
  ego-motion compensated ``v_r_comp = v_object · u`` (same noise draw), giving ``vx_comp``,
  ``vy_comp``;
* ``rcs`` = object RCS + N(0, 2 dB); ``dyn_prop`` 0 moving / 1 stationary / 2 oncoming;
  ``is_quality_valid`` 1, ``ambig_state`` 3 (unambiguous), ``invalid_state`` 0, ``pdh0`` 1
  (false-alarm probability < 25 %), ``x_rms`` 5, ``y_rms`` 6, ``vx_rms`` 3, ``vy_rms`` 3 (ARS408
  quality-table indices).

False returns (clutter): Poisson(``false_returns_mean``) per scan at random range and azimuth in
the field of view, stationary (``v_r_comp`` = noise), RCS N(−8, 3) dBsm, ``pdh0`` 4 (≥ 75 %).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.synth.raycast import cast_rays
from avfusion.synth.rig import RadarSpec, RigSensor
from avfusion.synth.world import World

__all__ = ["RADAR_FIELDS", "RadarScan", "simulate_radar"]

#: The 18 nuScenes radar fields and their PCD dtypes, in file order.
RADAR_FIELDS: tuple[tuple[str, Any], ...] = (
    ("x", np.float32), ("y", np.float32), ("z", np.float32), ("dyn_prop", np.int8), ("id", np.int16),
    ("rcs", np.float32), ("vx", np.float32), ("vy", np.float32), ("vx_comp", np.float32), ("vy_comp", np.float32),
    ("is_quality_valid", np.int8), ("ambig_state", np.int8), ("x_rms", np.int8), ("y_rms", np.int8),
    ("invalid_state", np.int8), ("pdh0", np.int8), ("vx_rms", np.int8), ("vy_rms", np.int8),
)  # fmt: skip

_SKIP_KINDS = {"vegetation"}


@dataclass(frozen=True)
class RadarScan:
    """One scan: ``fields`` (ordered name → (N,) array with the PCD dtype) and truth beside it.

    ``object_index`` (−1 for clutter), ``v_radial_truth`` and ``v_radial_comp_truth`` (m/s, noise
    free), ``world_truth`` (N, 3) the true reflecting point.
    """

    t_true_ns: int
    fields: OrderedDict[str, npt.NDArray[Any]]
    object_index: npt.NDArray[np.int32]
    v_radial_truth: npt.NDArray[np.float64]
    v_radial_comp_truth: npt.NDArray[np.float64]
    world_truth: npt.NDArray[np.float64]


def sensor_velocity(world: World, sensor: RigSensor, t_ns: int) -> npt.NDArray[np.float64]:
    """World velocity (m/s) of the sensor origin by a ±5 ms central difference of its pose."""
    h = 5_000_000
    rot, tr = world.world_from_ego.interpolate_many(np.array([t_ns - h, t_ns + h]))
    p = np.einsum("nij,j->ni", rot, sensor.ego_from_sensor.translation) + tr
    return (p[1] - p[0]) / (2 * h / 1e9)


def simulate_radar(
    world: World,
    sensor: RigSensor,
    spec: RadarSpec,
    t_true_ns: int,
    rng: np.random.Generator,
    prims: dict[str, npt.NDArray[Any]] | None = None,
) -> RadarScan:
    """Simulate the scan captured at true ego time ``t_true_ns``."""
    if prims is None:
        prims = world.primitive_arrays(t_true_ns)
    world_from_radar = world.world_from_ego.at(t_true_ns) @ sensor.ego_from_sensor
    radar_from_world = world_from_radar.inverse()
    origin = world_from_radar.translation
    v_sensor = sensor_velocity(world, sensor, t_true_ns)
    fov = np.deg2rad(spec.fov_deg)

    targets, target_obj = [], []
    for oi, obj in enumerate(world.objects):
        if obj.kind in _SKIP_KINDS:
            continue
        tf = world.box_transform(obj, t_true_ns)
        c_r = np.asarray(radar_from_world.apply(tf.translation), dtype=np.float64)
        rng_xy = float(np.hypot(c_r[0], c_r[1]))
        max_r = 40.0 if obj.kind == "manmade" else spec.max_range_m
        if rng_xy > max_r or c_r[0] <= 0 or abs(np.arctan2(c_r[1], c_r[0])) > fov:
            continue
        n_det = 1 + int(obj.rcs_dbsm > 10.0) + int(obj.rcs_dbsm > 15.0)
        size = np.array(obj.box_size)
        local = (rng.random((n_det, 3)) - 0.5) * size * np.array([0.8, 0.8, 0.5])
        targets.append(tf.apply(local))
        target_obj.extend([oi] * n_det)
    obj_idx = np.asarray(target_obj, dtype=np.int32)
    if targets:
        pts = np.concatenate(targets)
        dirs = pts - origin
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        t_hit, prim, _ = cast_rays(
            np.broadcast_to(origin, dirs.shape).copy(),
            dirs,
            prims,
            world.params,
            max_range_m=spec.max_range_m + 10,
        )
        hit_obj = np.where(prim >= 0, prims["object"][np.maximum(prim, 0)], -1)
        ok = (hit_obj == obj_idx) & np.isfinite(t_hit)
        hit_w = origin + dirs[ok] * t_hit[ok, None]
        obj_idx = obj_idx[ok]
        dirs = dirs[ok]
    else:
        hit_w = np.zeros((0, 3))
        dirs = np.zeros((0, 3))
    v_obj = np.array([world.object_velocity(world.objects[i], t_true_ns) for i in obj_idx]).reshape(
        -1, 3
    )
    vr_comp_true = np.sum(v_obj * dirs, axis=1)
    vr_true = np.sum((v_obj - v_sensor) * dirs, axis=1)
    rcs = np.array([world.objects[i].rcs_dbsm for i in obj_idx]) + rng.normal(
        0.0, 2.0, obj_idx.size
    )
    moving = np.array([world.objects[i].moving for i in obj_idx], dtype=bool)
    dyn = np.where(moving, np.where(vr_comp_true < -0.5, 2, 0), 1)
    pdh0 = np.ones(obj_idx.size, dtype=np.int64)

    # Clutter.
    n_false = int(rng.poisson(spec.false_returns_mean))
    f_r = rng.uniform(5.0, spec.max_range_m * 0.85, n_false)
    f_az = rng.uniform(-fov, fov, n_false)
    f_local = np.stack([f_r * np.cos(f_az), f_r * np.sin(f_az), np.zeros(n_false)], axis=1)
    f_world = np.asarray(world_from_radar.apply(f_local), dtype=np.float64).reshape(-1, 3)
    f_dirs = np.asarray(
        world_from_radar.apply_rotation(f_local / np.maximum(f_r[:, None], 1e-9)), dtype=np.float64
    ).reshape(-1, 3)

    world_pts = np.concatenate([hit_w, f_world])
    vr_comp_true = np.concatenate([vr_comp_true, np.zeros(n_false)])
    vr_true = np.concatenate([vr_true, -(f_dirs @ v_sensor)])
    rcs = np.concatenate([rcs, rng.normal(-8.0, 3.0, n_false)])
    dyn = np.concatenate([dyn, np.ones(n_false, dtype=np.int64)])
    pdh0 = np.concatenate([pdh0, np.full(n_false, 4)])
    obj_all = np.concatenate([obj_idx, np.full(n_false, -1, dtype=np.int32)])

    n = world_pts.shape[0]
    p_r = np.asarray(radar_from_world.apply(world_pts), dtype=np.float64) if n else np.zeros((0, 3))
    r = np.hypot(p_r[:, 0], p_r[:, 1]) + rng.normal(0.0, spec.range_noise_m, n)
    az = np.arctan2(p_r[:, 1], p_r[:, 0]) + rng.normal(0.0, np.deg2rad(spec.azimuth_noise_deg), n)
    v_noise = rng.normal(0.0, spec.velocity_noise_mps, n)
    vr = vr_true + v_noise
    vr_c = vr_comp_true + v_noise
    f32 = np.float32
    fields: OrderedDict[str, npt.NDArray[Any]] = OrderedDict()
    values: dict[str, Any] = {
        "x": r * np.cos(az), "y": r * np.sin(az), "z": np.zeros(n), "dyn_prop": dyn, "id": np.arange(n),
        "rcs": rcs, "vx": vr * np.cos(az), "vy": vr * np.sin(az), "vx_comp": vr_c * np.cos(az),
        "vy_comp": vr_c * np.sin(az), "is_quality_valid": np.ones(n), "ambig_state": np.full(n, 3),
        "x_rms": np.full(n, 5), "y_rms": np.full(n, 6), "invalid_state": np.zeros(n), "pdh0": pdh0,
        "vx_rms": np.full(n, 3), "vy_rms": np.full(n, 3),
    }  # fmt: skip
    for name, dtype in RADAR_FIELDS:
        arr = np.asarray(values[name])
        fields[name] = (np.rint(arr) if np.dtype(dtype).kind == "i" else arr).astype(
            dtype if dtype is not f32 else np.float32
        )
    return RadarScan(
        int(t_true_ns), fields, obj_all.astype(np.int32), vr_true, vr_comp_true, world_pts
    )
