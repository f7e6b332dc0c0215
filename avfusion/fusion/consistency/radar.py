"""3D boxes against radar returns: the count of returns in each box and their Doppler.

:func:`check_box_radar` (kinds ``radar_count_mismatch``, ``radar_doppler_mismatch``) takes the
keyframe radar cloud of one sample (the log's own radar filters), puts it in the world frame
with the radar sample_data's ego pose (as the devkit counts ``num_radar_pts``), and per box:

* **count**: returns inside the box (the devkit rule, radar z included) against the label's
  ``num_radar_pts``; a difference of more than ``count_tolerance`` returns (and more than
  ``count_ratio`` of the larger count) is ``radar_count_mismatch``;
* **Doppler**: for returns inside the box enlarged by ``doppler_margin_m`` horizontally, the
  ego-motion compensated radial velocity ``(vx_comp, vy_comp) · u`` (nuScenes radar frame,
  ``u`` the unit line of sight) against the box velocity projected on the same line of sight.
  With at least ``min_doppler_returns`` returns, a median absolute difference above
  ``doppler_tolerance_mps`` is ``radar_doppler_mismatch``. The box velocity is the labels'
  track velocity (neighbouring keyframes), else the box ``velocity`` column; boxes without
  one are not judged for Doppler (counted in ``skipped``).

Items are the boxes whose centre lies inside the radar's field of view
(``max_range_m``, ``±fov_deg / 2``); samples without a keyframe of the radar are skipped whole.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.findings import (
    CheckedItem,
    CheckResult,
    Finding,
    LabelSet,
    require_positive,
)
from avfusion.fusion.consistency.lidar import track_velocity
from avfusion.fusion.voxel import points_in_boxes

__all__ = ["RadarCheckOptions", "check_box_radar", "radial_velocity"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RadarCheckOptions:
    """Thresholds of :func:`check_box_radar`."""

    radar: str = "RADAR_FRONT"
    max_range_m: float = 70.0
    fov_deg: float = 120.0
    count_tolerance: int = 1
    count_ratio: float = 0.5
    doppler_margin_m: float = 0.5
    min_doppler_returns: int = 2
    doppler_tolerance_mps: float = 1.0
    velocity_attrs: tuple[str, str] = ("vx_comp", "vy_comp")

    def __post_init__(self) -> None:
        require_positive(self, "max_range_m", "fov_deg", "doppler_tolerance_mps")
        if self.count_tolerance < 0 or self.min_doppler_returns < 1:
            raise AVFusionError(
                "RadarCheckOptions: count_tolerance must be >= 0 and min_doppler_returns >= 1"
            )


def radial_velocity(points_radar: np.ndarray, velocity_radar: np.ndarray) -> np.ndarray:
    """Radial component (m/s, positive away from the radar) of (N, 2|3) velocities at (N, 3)
    radar-frame points, along each point's horizontal line of sight."""
    p = np.asarray(points_radar, dtype=np.float64)
    v = np.asarray(velocity_radar, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or v.ndim != 2 or v.shape[0] != p.shape[0] or v.shape[1] < 2:
        raise AVFusionError(
            f"radial_velocity: points must be (N, 3) and velocities (N, 2|3), got {p.shape} and {v.shape}"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(v))):
        raise AVFusionError("radial_velocity: points and velocities must be finite")
    r = np.hypot(p[:, 0], p[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        u = p[:, :2] / r[:, None]
    u[r == 0] = 0.0
    return np.asarray(np.sum(u * v[:, :2], axis=1), dtype=np.float64)


def check_box_radar(
    log: Any, labels: LabelSet, sample_token: str, *, options: RadarCheckOptions | None = None
) -> CheckResult:
    """Boxes of one sample against its keyframe radar returns (see the module docstring)."""
    opts = options or RadarCheckOptions()
    what = f"check_box_radar of sample {sample_token}"
    if not isinstance(labels, LabelSet):
        raise AVFusionError(f"{what}: labels must be a LabelSet, got {type(labels).__name__}")
    boxes_w = labels.boxes3d.get(sample_token)
    if boxes_w is None:
        raise AVFusionError(f"{what}: the labels under test have no sample '{sample_token}'")
    sd_token = log.keyframe_data(sample_token).get(opts.radar)
    if sd_token is None:
        return CheckResult("box_radar", (), (), {f"no '{opts.radar}' keyframe": len(boxes_w)})
    cloud = log.load_points(sd_token, with_lidarseg=False)
    missing = [a for a in opts.velocity_attrs if a not in cloud.attrs]
    if missing:
        raise AVFusionError(
            f"{what}: radar sample_data {sd_token} has no attribute {', '.join(missing)} "
            f"(attributes: {', '.join(sorted(cloud.attrs))})"
        )
    xyz = np.asarray(cloud.xyz, dtype=np.float64)
    vel_r = np.stack([np.asarray(cloud.attrs[a], dtype=np.float64) for a in opts.velocity_attrs], 1)
    finite = np.all(np.isfinite(xyz), axis=1) & np.all(np.isfinite(vel_r), axis=1)
    skipped: dict[str, int] = {}
    if not finite.all():
        skipped["non-finite radar returns dropped"] = int((~finite).sum())
        xyz, vel_r = xyz[finite], vel_r[finite]
    ego_from_radar = cloud.sensor.ego_from_sensor
    world_from_ego = (
        cloud.world_from_ego if cloud.world_from_ego is not None else log.ego_pose(sd_token)
    )
    world_from_radar = world_from_ego @ ego_from_radar
    radar_from_world = world_from_radar.inverse()
    pts_w = np.asarray(world_from_radar.apply(xyz), dtype=np.float64)
    boxes_r = boxes_w.transformed(radar_from_world, opts.radar)
    inside = points_in_boxes(np.ascontiguousarray(pts_w), boxes_w, return_mask=True, what=what)
    near = points_in_boxes(
        np.ascontiguousarray(pts_w),
        boxes_w,
        margin_m=(opts.doppler_margin_m, opts.doppler_margin_m, opts.doppler_margin_m),
        return_mask=True,
        what=what,
    )
    counts = np.asarray(inside.counts, dtype=np.int64)
    mask_near = near.mask if near.mask is not None else np.zeros((len(xyz), len(boxes_w)), bool)
    radial_meas = radial_velocity(xyz, vel_r) if len(xyz) else np.zeros(0)
    track_v = track_velocity(log, labels, sample_token)
    labelled = boxes_w.attrs.get("num_radar_pts")
    t_ns = log.sample_time_ns(sample_token)
    items: list[CheckedItem] = []
    findings: list[Finding] = []
    half_fov = math.radians(opts.fov_deg) / 2
    for b in range(len(boxes_w)):
        c = boxes_r.center[b]
        rng, az = float(np.hypot(c[0], c[1])), math.atan2(c[1], c[0])
        if rng > opts.max_range_m or abs(az) > half_fov:
            skipped["outside the radar field of view"] = (
                skipped.get("outside the radar field of view", 0) + 1
            )
            continue
        token, cat = str(np.asarray(boxes_w.token)[b]), str(boxes_w.label[b])
        items.append(CheckedItem("box_radar", token, sample_token, opts.radar, cat, rng))
        common: dict[str, Any] = {
            "item_id": token,
            "sample_token": sample_token,
            "sensor": opts.radar,
            "category": cat,
            "annotation_token": token,
            "instance_token": str(boxes_w.track_id[b]),
            "t_ns": t_ns,
            "distance_m": rng,
        }
        n_obs = int(counts[b])
        if labelled is not None:
            n_lab = int(labelled[b])
            diff = abs(n_obs - n_lab)
            if diff > opts.count_tolerance and diff > opts.count_ratio * max(n_obs, n_lab):
                findings.append(
                    Finding(
                        "radar_count_mismatch",
                        "box_radar",
                        min(1.0, 0.3 + 0.1 * diff),
                        **common,
                        message=f"{n_obs} radar returns inside the box, the label says {n_lab}",
                        evidence={"n_radar_observed": n_obs, "num_radar_pts": n_lab},
                    )
                )
        v = track_v.get(str(boxes_w.track_id[b]))
        if v is None and np.all(np.isfinite(np.asarray(boxes_w.velocity)[b, :2])):
            v = np.asarray(boxes_w.velocity)[b, :2]
        sel = np.nonzero(mask_near[:, b])[0]
        if sel.size < opts.min_doppler_returns:
            continue
        if v is None:
            skipped["Doppler: no box velocity"] = skipped.get("Doppler: no box velocity", 0) + 1
            continue
        v_radar = radar_from_world.rotation @ np.array([v[0], v[1], 0.0])
        expected = radial_velocity(xyz[sel], np.repeat(v_radar[None, :], sel.size, axis=0))
        delta = float(np.median(np.abs(radial_meas[sel] - expected)))
        if delta > opts.doppler_tolerance_mps:
            findings.append(
                Finding(
                    "radar_doppler_mismatch",
                    "box_radar",
                    min(1.0, 0.3 + 0.1 * delta),
                    **common,
                    message=f"radar Doppler differs from the box velocity by {delta:.1f} m/s "
                    f"(median over {sel.size} returns)",
                    evidence={
                        "n_returns": int(sel.size),
                        "median_abs_diff_mps": round(delta, 3),
                        "box_speed_mps": round(float(np.hypot(v[0], v[1])), 3),
                    },
                )
            )
    return CheckResult("box_radar", tuple(items), tuple(findings), skipped)
