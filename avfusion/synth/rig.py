"""The default sensor rig, modelled on the nuScenes vehicle, with every value documented.

Ego frame: origin on the ground below the rear axle, x forward, y left, z up (as nuScenes).
Sensor frames: LiDAR as nuScenes ``LIDAR_TOP`` (x right, y forward, z up, i.e. yaw −90° in the
ego frame); radar x forward, y left, z up; cameras x right, y down, z forward.

Each sensor has a *true* extrinsic (``ego_from_sensor``), a *true* clock offset
(``t_ego = t_stamp + clock_offset_ns``), a per-frame trigger jitter (σ, whole microseconds) and
an optional extrinsic perturbation: the rig the log *believes in* (written to
``calibrated_sensor``) is ``ego_from_sensor_true @ perturbation``, a small rotation (rotation
vector, radians) and translation (metres) applied in the sensor frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.errors import ConfigError
from avfusion.types import Sensor

__all__ = ["LidarSpec", "RadarSpec", "RigSensor", "default_rig", "perturb_rig"]

#: Rotation from a camera frame (x right, y down, z forward) to a forward-looking ego frame.
_EGO_FROM_CAM_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class LidarSpec:
    """Rotating LiDAR (Velodyne HDL-32E as on nuScenes).

    32 beams evenly spaced from −30.67° to +10.67° (1.33° apart); 20 Hz, 1084 firings per turn
    (0.33° azimuth step); the beam turns clockwise seen from above (azimuth decreasing in the
    sensor frame, as a Velodyne does) and points along ego +x at the stamp, the middle of the
    sweep: per-point times run from −25 ms to +25 ms around the stamp. Range noise σ 2 cm, 70 m
    maximum range, 1 m minimum range, 3 % random dropouts; returns on the ego body are dropped.
    """

    n_beams: int = 32
    elevation_min_deg: float = -30.67
    elevation_max_deg: float = 10.67
    rate_hz: float = 20.0
    firings_per_turn: int = 1084
    range_noise_m: float = 0.02
    max_range_m: float = 70.0
    min_range_m: float = 1.0
    dropout: float = 0.03


@dataclass(frozen=True)
class RadarSpec:
    """Front radar (Continental ARS408-21 as on nuScenes), 13 Hz.

    Field of view ±60° azimuth to 70 m (near mode), no elevation measurement (z written as 0 in
    the radar frame). Radial-velocity noise σ 0.1 m/s, range noise σ 0.15 m, azimuth noise σ
    0.3°. Up to 3 detections per object (more for larger RCS), and on average 4 false returns per
    scan (clutter: random position, low RCS, zero Doppler ± noise).
    """

    rate_hz: float = 13.0
    fov_deg: float = 60.0
    max_range_m: float = 70.0
    velocity_noise_mps: float = 0.1
    range_noise_m: float = 0.15
    azimuth_noise_deg: float = 0.3
    false_returns_mean: float = 4.0


@dataclass(frozen=True)
class RigSensor:
    """One sensor of the simulated rig: what it is, where it is (truth), its clock and its rate."""

    name: str
    modality: str  # lidar | radar | camera | thermal
    ego_from_sensor: Transform  # truth
    rate_hz: float
    clock_offset_ns: int  # truth: t_ego = t_stamp + clock_offset_ns
    jitter_us: float  # σ of the true trigger time around the nominal schedule (whole µs)
    phase_s: float = 0.0  # first nominal trigger after the start of the recording
    camera: CameraModel | None = None
    perturbation: Transform = field(default_factory=Transform)

    @property
    def believed_ego_from_sensor(self) -> Transform:
        """The extrinsic written to ``calibrated_sensor``: truth @ perturbation."""
        return self.ego_from_sensor @ self.perturbation

    def as_sensor(self, *, truth: bool) -> Sensor:
        """An ``avfusion.types.Sensor``; ``truth`` selects the exact extrinsic and clock offset,
        otherwise the believed extrinsic and offset 0 (what the log states)."""
        return Sensor(
            self.name,
            self.modality,  # type: ignore[arg-type]
            self.ego_from_sensor if truth else self.believed_ego_from_sensor,
            self.camera,
            self.clock_offset_ns if truth else 0,
        )


def _camera_pose(x: float, y: float, z: float, yaw_deg: float, pitch_deg: float = 0.0) -> Transform:
    """``ego_from_cam`` for a camera at (x, y, z) ego metres, yawed left by ``yaw_deg`` and pitched down by ``pitch_deg``."""
    look = Transform.from_euler_zyx(np.deg2rad(yaw_deg), np.deg2rad(pitch_deg), 0.0)
    return Transform(look.rotation @ _EGO_FROM_CAM_BASE, np.array([x, y, z]))


#: nuScenes-like camera intrinsics: 1600×900, fx = fy = 1266.4 px (HFOV 64.6°), principal point near centre.
NUSCENES_K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
#: Thermal camera: 640×512, fx = fy = 620 px (HFOV ~55° before distortion), OpenCV radtan
#: (k1, k2, p1, p2, k3) = (−0.28, 0.09, 4e−4, −3e−4, −0.012): a typical uncooled LWIR lens.
THERMAL_K = np.array([[620.0, 0.0, 318.7], [0.0, 620.0, 257.2], [0.0, 0.0, 1.0]])
THERMAL_DIST = np.array([-0.28, 0.09, 4e-4, -3e-4, -0.012])


def default_rig() -> dict[str, RigSensor]:
    """The rig, keyed by channel name.

    ======================  ============================  =======  ==========  ==========
    channel                 position (ego, m) / yaw        rate     offset      jitter σ
    ======================  ============================  =======  ==========  ==========
    LIDAR_TOP               (0.94, 0.00, 1.84), −90°       20 Hz    0 ms        20 µs
    RADAR_FRONT             (3.41, 0.00, 0.53), 0°         13 Hz    +12 ms      800 µs
    CAM_FRONT               (1.70, 0.02, 1.51), 0°         12 Hz    +4 ms       150 µs
    CAM_FRONT_LEFT          (1.52, 0.49, 1.51), +55°       12 Hz    −3 ms       150 µs
    CAM_FRONT_RIGHT         (1.50, −0.49, 1.52), −55°      12 Hz    +7 ms       150 µs
    THERMAL_FRONT           (1.80, 0.00, 1.45), 0°, 2° dn  9 Hz     +25 ms      600 µs
    ======================  ============================  =======  ==========  ==========

    The LiDAR clock is the ego clock (offset 0). The LiDAR mount also carries a tiny real-world
    misalignment (0.3° roll, 0.2° pitch), part of the truth, not a perturbation.
    """
    lidar_rot = Transform.from_euler_zyx(np.deg2rad(-90.0), np.deg2rad(0.2), np.deg2rad(0.3))
    sensors = [
        RigSensor("LIDAR_TOP", "lidar", Transform(lidar_rot.rotation, np.array([0.94, 0.0, 1.84])), 20.0, 0, 20.0, 0.025),
        RigSensor("RADAR_FRONT", "radar", Transform.from_euler_zyx(0.0, 0.0, 0.0, (3.41, 0.0, 0.53)), 13.0, 12_000_000, 800.0, 0.031),
        RigSensor("CAM_FRONT", "camera", _camera_pose(1.70, 0.016, 1.51, 0.0, 1.0), 12.0, 4_000_000, 150.0, 0.020,
                  CameraModel(NUSCENES_K, 1600, 900)),
        RigSensor("CAM_FRONT_LEFT", "camera", _camera_pose(1.52, 0.494, 1.51, 55.0, 1.0), 12.0, -3_000_000, 150.0, 0.034,
                  CameraModel(NUSCENES_K, 1600, 900)),
        RigSensor("CAM_FRONT_RIGHT", "camera", _camera_pose(1.50, -0.494, 1.52, -55.0, 1.0), 12.0, 7_000_000, 150.0, 0.006,
                  CameraModel(NUSCENES_K, 1600, 900)),
        RigSensor("THERMAL_FRONT", "thermal", _camera_pose(1.80, 0.0, 1.45, 0.0, 2.0), 9.0, 25_000_000, 600.0, 0.047,
                  CameraModel.radtan(THERMAL_K, THERMAL_DIST, 640, 512)),
    ]  # fmt: skip
    return {s.name: s for s in sensors}


def perturb_rig(
    rig: Mapping[str, RigSensor], perturbations: Mapping[str, Sequence[float]] | None
) -> dict[str, RigSensor]:
    """The rig with believed extrinsics perturbed.

    ``perturbations`` maps a channel to six numbers: rotation vector (rx, ry, rz) in radians and
    translation (tx, ty, tz) in metres, applied in the sensor frame.
    """
    out = dict(rig)
    for name, values in (perturbations or {}).items():
        if name not in out:
            raise ConfigError(f"perturb: unknown sensor '{name}' (known: {', '.join(sorted(out))})")
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size != 6 or not np.all(np.isfinite(v)):
            raise ConfigError(
                f"perturb['{name}']: expected 6 finite numbers (rx, ry, rz rad, tx, ty, tz m), got {list(values)}"
            )
        out[name] = replace(out[name], perturbation=Transform.from_rotvec(v[:3], v[3:]))
    return out


# --------------------------------------------------------------------------------------------
# Multi-LiDAR rig variant (LiDAR→LiDAR calibration); the default rig and log do not use it.
# --------------------------------------------------------------------------------------------

#: Front-bumper LiDAR (Velodyne VLP-16 style): 16 beams from −15° to +15° (2° apart), 900
#: firings per turn (0.4°), phase-locked to ``LIDAR_TOP`` (20 Hz, beam along ego +x at the
#: stamp); noise, range limits and dropouts as ``LidarSpec``.
BUMPER_LIDAR_SPEC = LidarSpec(
    n_beams=16, elevation_min_deg=-15.0, elevation_max_deg=15.0, firings_per_turn=900
)


def multi_lidar_rig() -> dict[str, RigSensor]:
    """``default_rig()`` plus ``LIDAR_FRONT``: a front-bumper LiDAR (``BUMPER_LIDAR_SPEC``) at
    (3.95, 0.00, 0.62) ego metres, sensor x forward, y left, z up, pitched down 3° and yawed
    left 1°; its clock is the ego clock. Nothing else changes."""
    rig = default_rig()
    rot = Transform.from_euler_zyx(np.deg2rad(1.0), np.deg2rad(3.0), 0.0)
    front = Transform(rot.rotation, np.array([3.95, 0.0, 0.62]))
    rig["LIDAR_FRONT"] = RigSensor("LIDAR_FRONT", "lidar", front, 20.0, 0, 20.0, 0.025)
    return rig
