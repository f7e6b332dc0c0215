"""Rotating LiDAR simulation (``LIDAR_TOP``), see ``rig.LidarSpec`` for the sensor model.

Each firing column has its own time, so the sensor pose (ego motion) and the objects move
during the sweep: points are written in the sensor frame *at their own firing time*, exactly as
a real, not motion-compensated, sensor reports them. The truth world points (before range noise)
and the hit object travel beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.synth.raycast import HIT_GROUND, HIT_NONE, cast_rays
from avfusion.synth.rig import LidarSpec, RigSensor
from avfusion.synth.world import CLASSES, World, ground_material_many

__all__ = ["EGO_BODY_CENTER_M", "EGO_BODY_HALF_M", "LidarSweep", "simulate_lidar"]

#: The ego body as two boxes in the ego frame, centres (m) and half extents (m): the lower body
#: (4.9 × 1.95 m, 0.95 m high, from 1.1 m behind the rear axle) and the cabin (2.8 × 1.5 m, roof at 1.5 m).
EGO_BODY_CENTER_M = ((1.35, 0.0, 0.475), (0.5, 0.0, 1.225))
EGO_BODY_HALF_M = ((2.45, 0.975, 0.475), (1.4, 0.75, 0.275))

_GROUND_LIDARSEG = np.array(
    [
        CLASSES["driveable_surface"].lidarseg,
        CLASSES["sidewalk"].lidarseg,
        CLASSES["terrain"].lidarseg,
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class LidarSweep:
    """One sweep. Arrays are aligned, ordered by firing time then ring.

    ``xyz`` (N, 3) float32 sensor frame at each point's firing time; ``intensity`` 0..255;
    ``ring`` 0 (lowest beam) .. 31; ``time_offset_ns`` firing time − stamp; ``lidarseg`` uint8;
    ``object_index`` into ``World.objects`` (−1 for the ground); ``world_truth`` (N, 3) the
    noise-free hit points in the world frame; ``range_noise_m`` the noise added to each range.
    """

    t_true_ns: int
    xyz: npt.NDArray[np.float32]
    intensity: npt.NDArray[np.float32]
    ring: npt.NDArray[np.uint8]
    time_offset_ns: npt.NDArray[np.int64]
    lidarseg: npt.NDArray[np.uint8]
    object_index: npt.NDArray[np.int32]
    world_truth: npt.NDArray[np.float64]
    range_noise_m: npt.NDArray[np.float64]
    n_self_hits: int
    n_dropouts: int


def beam_elevations(spec: LidarSpec) -> npt.NDArray[np.float64]:
    """Beam elevation angles (radians), ring 0 lowest."""
    return np.deg2rad(np.linspace(spec.elevation_min_deg, spec.elevation_max_deg, spec.n_beams))


def firing_times_s(spec: LidarSpec) -> npt.NDArray[np.float64]:
    """Time of each firing column relative to the stamp (s): −T/2 .. +T/2."""
    period = 1.0 / spec.rate_hz
    return (np.arange(spec.firings_per_turn) / spec.firings_per_turn - 0.5) * period


def simulate_lidar(
    world: World,
    sensor: RigSensor,
    spec: LidarSpec,
    t_true_ns: int,
    rng: np.random.Generator,
    prims: dict[str, npt.NDArray[Any]] | None = None,
) -> LidarSweep:
    """Simulate the sweep whose stamp (mid-sweep, beam along ego +x) is at true ego time ``t_true_ns``."""
    tau = firing_times_s(spec)  # (F,)
    n_cols, n_beams = tau.size, spec.n_beams
    # Azimuth in the sensor frame: the beam points along ego +x at tau = 0 and turns clockwise.
    fwd = np.asarray(
        sensor.ego_from_sensor.inverse().apply_rotation(np.array([1.0, 0.0, 0.0])), dtype=np.float64
    )
    az0 = float(np.arctan2(fwd[1], fwd[0]))
    az = az0 - 2.0 * np.pi * tau * spec.rate_hz
    el = beam_elevations(spec)
    cos_el = np.cos(el)
    dirs_s = np.empty((n_cols, n_beams, 3))
    dirs_s[..., 0] = np.cos(az)[:, None] * cos_el[None, :]
    dirs_s[..., 1] = np.sin(az)[:, None] * cos_el[None, :]
    dirs_s[..., 2] = np.sin(el)[None, :]

    t_cols = t_true_ns + np.round(tau * 1e9).astype(np.int64)
    rot_we, tr_we = world.world_from_ego.interpolate_many(t_cols)
    r_es, t_es = sensor.ego_from_sensor.rotation, sensor.ego_from_sensor.translation
    rot_ws = rot_we @ r_es  # (F, 3, 3)
    origin_w = np.einsum("fij,j->fi", rot_we, t_es) + tr_we  # (F, 3)
    dirs_w = np.einsum("fij,fbj->fbi", rot_ws, dirs_s).reshape(-1, 3)
    origins_w = np.repeat(origin_w, n_beams, axis=0)
    times = np.repeat(tau, n_beams)

    if prims is None:
        prims = world.primitive_arrays(t_true_ns)
    t_hit, prim, normal = cast_rays(
        origins_w, dirs_w, prims, world.params, times_s=times, max_range_m=spec.max_range_m
    )

    # Self hits: the same rays against the ego body (static in the ego frame).
    body = {
        "kind": np.zeros(2, np.int32),
        "center": np.array(EGO_BODY_CENTER_M),
        "half": np.array(EGO_BODY_HALF_M),
        "yaw": np.zeros(2),
        "velocity": np.zeros((2, 3)),
    }
    dirs_e = (dirs_s.reshape(-1, 3) @ r_es.T).astype(np.float64)
    origins_e = np.broadcast_to(t_es, dirs_e.shape)
    t_self, _, _ = cast_rays(
        origins_e, dirs_e, body, world.params, max_range_m=spec.max_range_m, with_ground=False
    )
    self_hit = np.isfinite(t_self) & (t_self < t_hit)

    hit = (prim != HIT_NONE) & ~self_hit & (t_hit >= spec.min_range_m)
    dropout = rng.random(hit.size) < spec.dropout
    keep = hit & ~dropout
    noise = rng.normal(0.0, spec.range_noise_m, size=hit.size)

    idx = np.flatnonzero(keep)
    r_true = t_hit[idx]
    r_meas = r_true + noise[idx]
    xyz = (dirs_s.reshape(-1, 3)[idx] * r_meas[:, None]).astype(np.float32)
    world_truth = origins_w[idx] + dirs_w[idx] * r_true[:, None]

    prim_k = prim[idx]
    is_ground = prim_k == HIT_GROUND
    obj_index = np.where(is_ground, -1, prims["object"][np.maximum(prim_k, 0)]).astype(np.int32)
    mats = world.material_table()
    otab = world.object_table()
    ground_mat = ground_material_many(np.ascontiguousarray(world_truth[is_ground]), world.params)
    mat = np.where(is_ground, 0, prims["material"][np.maximum(prim_k, 0)])
    mat[is_ground] = ground_mat
    lidarseg = np.where(is_ground, 0, otab["lidarseg"][np.maximum(obj_index, 0)]).astype(np.uint8)
    lidarseg[is_ground] = _GROUND_LIDARSEG[ground_mat]

    # Intensity: reflectivity × |cos(incidence)| with a mild range fall-off and 2 % noise, 0..255.
    cos_inc = np.abs(np.sum(normal[idx] * dirs_w[idx], axis=1))
    refl = mats["reflectivity"][mat]
    intensity = 255.0 * refl * (0.3 + 0.7 * cos_inc) * (1.0 - 0.4 * r_true / spec.max_range_m)
    intensity = np.clip(intensity * (1.0 + rng.normal(0.0, 0.02, idx.size)), 0.0, 255.0).astype(
        np.float32
    )

    ring = (idx % n_beams).astype(np.uint8)
    time_offset = np.round(times[idx] * 1e9).astype(np.int64)
    return LidarSweep(
        t_true_ns=int(t_true_ns),
        xyz=xyz,
        intensity=np.round(intensity).astype(np.float32),
        ring=ring,
        time_offset_ns=time_offset,
        lidarseg=lidarseg,
        object_index=obj_index,
        world_truth=world_truth,
        range_noise_m=noise[idx],
        n_self_hits=int(np.count_nonzero(self_hit)),
        n_dropouts=int(np.count_nonzero(hit & dropout)),
    )
