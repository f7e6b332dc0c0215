"""A deterministic calibration-target session: a checkerboard held in front of the parked rig.

The rig (``rig.default_rig()`` unless given) stands still on flat ground (z = 0 in the ego
frame). A planar checkerboard is posed at ``n_views`` varied poses (distance 2.5–6.5 m from the first camera, tilt up
to ±35° about its horizontal and vertical axes, roll up to ±20°, placed across the image), each
pose chosen so that the whole board is inside every requested camera with a margin. For each
pose the session holds:

* one image per camera: pinhole + the camera's own distortion model through ``CameraModel``
  (every pixel's exact ray), 4×4 supersampled (anti-aliased), a mild optical blur and sensor
  noise. Colour cameras see black and white squares under a soft light gradient on a textured
  grey background (uint8 RGB). The thermal camera sees a heated board: the printed (black)
  squares are hot (318 K, high emissivity), the bare aluminium (white squares and border)
  is cold (300 K, reflects the cold sky), the background is at ~291 K; the LWIR optics blur is
  stronger (σ 0.8 px); uint16 radiometric counts via ``thermal.counts_from_kelvin``
  (NETD noise and the fixed column pattern).
* one LiDAR sweep (``LidarSpec`` beam pattern: the same elevations and azimuth step as
  ``lidar.simulate_lidar``; the rig is parked, so there is no motion during the sweep), by
  exact ray intersection with the board rectangle and the ground plane, the ego body blocking
  its own rays; range noise, dropouts and intensity as in ``lidar.py``.

Board frame: origin at the first inner corner (OpenCV's corner 0), x along a row of inner
corners, y down the board, z = x × y into the board (away from its printed face). Square
(a, b) (a = 0..squares_x−1, b = 0..squares_y−1) covers x ∈ [(a−1)s, a·s], y ∈ [(b−1)s, b·s] and is
black when a + b is even, so the square diagonally outside corner 0 is black and the one
diagonally outside the last corner is white (the board is not symmetric under a 180° turn).

Nothing here touches the default synthetic log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from avfusion.calibration.camera import CameraModel
from avfusion.calibration.transforms import Transform
from avfusion.errors import ConfigError
from avfusion.synth.camera import view_geometry
from avfusion.synth.lidar import EGO_BODY_CENTER_M, EGO_BODY_HALF_M, beam_elevations
from avfusion.synth.rig import LidarSpec, RigSensor, default_rig
from avfusion.synth.thermal import column_pattern, counts_from_kelvin

__all__ = [
    "CheckerboardSpec",
    "TargetSession",
    "TargetSweep",
    "make_target_session",
    "write_target_session",
]

F64 = npt.NDArray[np.float64]

#: Rotation ego_from_board for a board facing the rig squarely (board x → ego −y, y → −z, z → +x).
_EGO_FROM_BOARD_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: Thermal scene temperatures (K): hot printed squares, cold bare aluminium, background.
BOARD_HOT_K = 318.0
BOARD_COLD_K = 300.0
BACKGROUND_K = 291.0
#: LiDAR reflectivity of the board (white paint) and of the ground (asphalt).
BOARD_REFLECTIVITY = 0.8
GROUND_REFLECTIVITY = 0.15


@dataclass(frozen=True)
class CheckerboardSpec:
    """A planar checkerboard: ``squares_x`` × ``squares_y`` squares of ``square_m`` metres with a
    plain border of ``border_m`` around them. ``pattern`` is OpenCV's inner-corner count
    (columns, rows)."""

    squares_x: int = 9
    squares_y: int = 6
    square_m: float = 0.12
    border_m: float = 0.10

    def __post_init__(self) -> None:
        for name in ("squares_x", "squares_y"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 3:
                raise ConfigError(f"CheckerboardSpec.{name} must be an integer >= 3, got {v!r}")
        if (self.squares_x + self.squares_y) % 2 == 0:
            raise ConfigError(
                "CheckerboardSpec: squares_x + squares_y must be odd so that the board's "
                f"orientation is unique, got {self.squares_x} x {self.squares_y}"
            )
        for name in ("square_m", "border_m"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not np.isfinite(v) or v <= 0:
                raise ConfigError(f"CheckerboardSpec.{name} must be a finite number > 0, got {v!r}")

    @property
    def pattern(self) -> tuple[int, int]:
        """Inner corners (columns, rows), as ``cv2.findChessboardCorners`` takes them."""
        return self.squares_x - 1, self.squares_y - 1

    def object_points(self) -> F64:
        """Inner corners (N, 3) in the board frame, in OpenCV order (row by row)."""
        cols, rows = self.pattern
        jj, ii = np.mgrid[0:rows, 0:cols]
        pts = np.zeros((rows * cols, 3))
        pts[:, 0] = ii.ravel() * self.square_m
        pts[:, 1] = jj.ravel() * self.square_m
        return pts

    @property
    def outline_m(self) -> tuple[float, float, float, float]:
        """The board's outer edge in the board frame: (x_min, x_max, y_min, y_max)."""
        s, b = self.square_m, self.border_m
        return (-s - b, (self.squares_x - 1) * s + b, -s - b, (self.squares_y - 1) * s + b)


@dataclass(frozen=True, eq=False)
class TargetSweep:
    """One LiDAR sweep of the board: ``xyz`` (N, 3) float32 in the LiDAR frame, ``ring``,
    ``intensity`` 0..255, ``on_board`` (truth: the return came from the board)."""

    xyz: npt.NDArray[np.float32]
    ring: npt.NDArray[np.uint8]
    intensity: npt.NDArray[np.float32]
    on_board: npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class TargetSession:
    """The simulated session and its truth.

    ``images[sensor][i]`` is view i as seen by ``sensor`` (uint8 (H, W, 3) RGB or uint16 (H, W)
    counts); ``sweeps[i]`` the LiDAR sweep of view i; ``ego_from_board[i]`` the true board pose;
    ``cameras``/``ego_from_sensor`` the true intrinsics and extrinsics (the LiDAR included).
    """

    board: CheckerboardSpec
    lidar: str
    lidar_spec: LidarSpec
    ego_from_board: tuple[Transform, ...]
    cameras: Mapping[str, CameraModel]
    modality: Mapping[str, str]
    ego_from_sensor: Mapping[str, Transform]
    images: Mapping[str, tuple[npt.NDArray[np.generic], ...]]
    sweeps: tuple[TargetSweep, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.ego_from_board)

    def cam_from_board(self, sensor: str, view: int) -> Transform:
        """True pose of the board in ``sensor``'s frame at ``view``."""
        return self.ego_from_sensor[sensor].inverse() @ self.ego_from_board[view]

    def cam_from_lidar(self, sensor: str) -> Transform:
        """True extrinsic ``sensor_from_lidar``."""
        return self.ego_from_sensor[sensor].inverse() @ self.ego_from_sensor[self.lidar]

    @property
    def lidar_azimuth_step_rad(self) -> float:
        return 2.0 * np.pi / self.lidar_spec.firings_per_turn


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------


def _board_corners_m(board: CheckerboardSpec, margin_m: float = 0.0) -> F64:
    x0, x1, y0, y1 = board.outline_m
    x0, y0, x1, y1 = x0 - margin_m, y0 - margin_m, x1 + margin_m, y1 + margin_m
    t = np.linspace(0.0, 1.0, 9)
    edges = [
        np.stack([x0 + (x1 - x0) * t, np.full_like(t, y0)], 1),
        np.stack([np.full_like(t, x1), y0 + (y1 - y0) * t], 1),
        np.stack([x1 - (x1 - x0) * t, np.full_like(t, y1)], 1),
        np.stack([np.full_like(t, x0), y1 - (y1 - y0) * t], 1),
    ]
    e = np.concatenate(edges)
    return np.concatenate([e, np.zeros((e.shape[0], 1))], axis=1)


def _sample_poses(
    board: CheckerboardSpec,
    rig: Mapping[str, RigSensor],
    cameras: Sequence[str],
    n_views: int,
    rng: np.random.Generator,
) -> list[Transform]:
    """``n_views`` board poses (ego_from_board) fully inside every camera with a 4 % margin."""
    ref = rig[cameras[0]].ego_from_sensor.translation
    x0, x1, y0, y1 = board.outline_m
    centre_b = np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])
    outline = _board_corners_m(board)
    poses: list[Transform] = []
    for _ in range(200 * n_views):
        if len(poses) == n_views:
            break
        dist = rng.uniform(2.5, 6.5)
        lateral = rng.uniform(-1.0, 1.0) * dist * np.tan(np.deg2rad(24.0))
        height = ref[2] + rng.uniform(-1.0, 1.0) * dist * np.tan(np.deg2rad(17.0))
        if height < 0.75:
            continue
        tilt = Transform.from_euler_zyx(
            np.deg2rad(rng.uniform(-20.0, 20.0)),  # roll about the board normal
            np.deg2rad(rng.uniform(-35.0, 35.0)),  # about the board's y (turned left/right)
            np.deg2rad(rng.uniform(-35.0, 35.0)),  # about the board's x (leaning back/forward)
        )
        rot = _EGO_FROM_BOARD_BASE @ tilt.rotation
        centre_e = ref + np.array([dist, lateral, height - ref[2]])
        pose = Transform(rot, centre_e - rot @ centre_b)
        pts_e = np.asarray(pose.apply(outline), dtype=np.float64)
        if np.min(pts_e[:, 2]) < 0.3:
            continue
        ok = True
        for name in cameras:
            s = rig[name]
            cam = s.camera
            if cam is None:
                raise ConfigError(f"target session: sensor '{name}' has no camera model")
            uv, _depth, inside = cam.project(s.ego_from_sensor.inverse().apply(pts_e))
            mu, mv = 0.04 * cam.width, 0.04 * cam.height
            if not (
                inside.all()
                and np.all(uv[:, 0] > mu)
                and np.all(uv[:, 0] < cam.width - mu)
                and np.all(uv[:, 1] > mv)
                and np.all(uv[:, 1] < cam.height - mv)
            ):
                ok = False
                break
        if ok:
            poses.append(pose)
    if len(poses) < n_views:
        raise ConfigError(
            f"target session: could only place {len(poses)} of {n_views} board poses inside "
            f"every camera of {list(cameras)}"
        )
    return poses


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _board_value(board: CheckerboardSpec, bx: F64, by: F64) -> npt.NDArray[np.int8]:
    """Per board point: 1 black (hot) square, 0 white square or border, −1 off the board."""
    s = board.square_m
    x0, x1, y0, y1 = board.outline_m
    on = (bx >= x0) & (bx <= x1) & (by >= y0) & (by <= y1)
    a = np.floor(bx / s).astype(np.int64) + 1
    b = np.floor(by / s).astype(np.int64) + 1
    in_sq = (a >= 0) & (a < board.squares_x) & (b >= 0) & (b < board.squares_y)
    black = in_sq & ((a + b) % 2 == 0)
    out = np.where(on, 0, -1).astype(np.int8)
    out[black] = 1
    return out


def _render_board(
    board: CheckerboardSpec,
    cam: CameraModel,
    cam_from_board: Transform,
    *,
    supersample: int = 4,
) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Anti-aliased coverage maps: (black fraction, board fraction, bounding-box mask).

    Sub-pixel rays come from a first-order expansion of each pixel's exact ray (the lens is
    smooth, so the error is far below a thousandth of a pixel)."""
    geo = view_geometry(cam)
    xn, yn = geo.xn, geo.yn
    h, w = xn.shape
    # Bounding box of the board (with margin) in the image.
    uv, _d, _in = cam.project(cam_from_board.apply(_board_corners_m(board, 0.05)))
    uv = uv[np.isfinite(uv).all(axis=1)]
    u0 = int(np.clip(np.floor(uv[:, 0].min()) - 3, 0, w - 1))
    u1 = int(np.clip(np.ceil(uv[:, 0].max()) + 4, 1, w))
    v0 = int(np.clip(np.floor(uv[:, 1].min()) - 3, 0, h - 1))
    v1 = int(np.clip(np.ceil(uv[:, 1].max()) + 4, 1, h))
    gxu = np.gradient(xn, axis=1)[v0:v1, u0:u1]
    gxv = np.gradient(xn, axis=0)[v0:v1, u0:u1]
    gyu = np.gradient(yn, axis=1)[v0:v1, u0:u1]
    gyv = np.gradient(yn, axis=0)[v0:v1, u0:u1]
    x_c, y_c = xn[v0:v1, u0:u1], yn[v0:v1, u0:u1]
    rot, tr = cam_from_board.rotation, cam_from_board.translation
    n = rot[:, 2]
    nd = float(n @ tr)
    black = np.zeros_like(x_c)
    onb = np.zeros_like(x_c)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    for su in offs:
        for sv in offs:
            x = x_c + gxu * su + gxv * sv
            y = y_c + gyu * su + gyv * sv
            denom = n[0] * x + n[1] * y + n[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = nd / denom
            valid = np.isfinite(t) & (t > 0)
            t = np.where(valid, t, 0.0)
            px, py, pz = t * x - tr[0], t * y - tr[1], t - tr[2]
            bx = rot[0, 0] * px + rot[1, 0] * py + rot[2, 0] * pz
            by = rot[0, 1] * px + rot[1, 1] * py + rot[2, 1] * pz
            val = _board_value(board, bx, by)
            val[~valid] = -1
            black += val == 1
            onb += val >= 0
    k = float(supersample * supersample)
    black_full = np.zeros((h, w))
    onb_full = np.zeros((h, w))
    black_full[v0:v1, u0:u1] = black / k
    onb_full[v0:v1, u0:u1] = onb / k
    mask = np.zeros((h, w), dtype=bool)
    mask[v0:v1, u0:u1] = True
    return black_full, onb_full, mask


def _background(h: int, w: int, seed: int) -> F64:
    """A smooth, mildly textured field in 0..1 (a wall and floor behind the board)."""
    r = np.random.default_rng([seed, 4242])
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    f = np.zeros((h, w))
    for _ in range(6):
        kx, ky = r.uniform(2.0, 9.0, 2)
        ph = r.uniform(0, 2 * np.pi)
        f += np.sin(kx * 2 * np.pi * xx + ky * 2 * np.pi * yy + ph) / 6.0
    return 0.5 + 0.5 * f


def _render_rgb(
    board: CheckerboardSpec,
    cam: CameraModel,
    cam_from_board: Transform,
    rng: np.random.Generator,
    seed: int,
) -> npt.NDArray[np.uint8]:
    black, onb, _ = _render_board(board, cam, cam_from_board)
    h, w = black.shape
    bg = 0.35 + 0.15 * _background(h, w, seed)
    # Board albedo: white 0.85, black 0.07, lit by a soft gradient across the image.
    light = 0.85 + 0.15 * np.linspace(0.0, 1.0, w)[None, :] * np.linspace(1.0, 0.7, h)[:, None]
    board_val = (0.85 * (onb - black) + 0.07 * black) * light
    img = bg * (1.0 - onb) + board_val
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), 0.5), dtype=np.float64)
    img = img + rng.normal(0.0, 1.5 / 255.0, img.shape)
    g = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    tint = np.array([1.0, 0.98, 0.95])
    rgb = np.clip(np.rint(g[..., None] * tint[None, None, :]), 0, 255).astype(np.uint8)
    return rgb


def _render_thermal(
    board: CheckerboardSpec,
    cam: CameraModel,
    cam_from_board: Transform,
    rng: np.random.Generator,
    seed: int,
    columns_k: F64,
) -> npt.NDArray[np.uint16]:
    black, onb, _ = _render_board(board, cam, cam_from_board)
    h, w = black.shape
    bg = BACKGROUND_K - 1.5 + 3.0 * _background(h, w, seed + 1)
    temp = bg * (1.0 - onb) + BOARD_COLD_K * (onb - black) + BOARD_HOT_K * black
    temp = np.asarray(cv2.GaussianBlur(temp, (0, 0), 0.8), dtype=np.float64)
    return counts_from_kelvin(temp, rng, columns_k)


# --------------------------------------------------------------------------------------------
# LiDAR
# --------------------------------------------------------------------------------------------


def _ray_boxes(origin: F64, dirs: F64) -> F64:
    """Entry distance of rays from ``origin`` (ego) to the ego body boxes (inf if missed)."""
    best = np.full(dirs.shape[0], np.inf)
    for c, hf in zip(EGO_BODY_CENTER_M, EGO_BODY_HALF_M, strict=True):
        lo = np.asarray(c) - np.asarray(hf) - origin
        hi = np.asarray(c) + np.asarray(hf) - origin
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = lo[None, :] / dirs, hi[None, :] / dirs
        tmin = np.nanmax(np.minimum(t1, t2), axis=1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (tmax >= np.maximum(tmin, 0.0)) & (tmin > 0)
        best = np.where(hit, np.minimum(best, tmin), best)
    return best


def _simulate_sweep(
    board: CheckerboardSpec,
    ego_from_board: Transform,
    ego_from_lidar: Transform,
    spec: LidarSpec,
    rng: np.random.Generator,
) -> TargetSweep:
    az = -2.0 * np.pi * np.arange(spec.firings_per_turn) / spec.firings_per_turn
    el = beam_elevations(spec)
    dirs_s = np.empty((az.size, el.size, 3))
    dirs_s[..., 0] = np.cos(az)[:, None] * np.cos(el)[None, :]
    dirs_s[..., 1] = np.sin(az)[:, None] * np.cos(el)[None, :]
    dirs_s[..., 2] = np.sin(el)[None, :]
    dirs_flat = dirs_s.reshape(-1, 3)
    ring = np.tile(np.arange(el.size), az.size)
    dirs_e = dirs_flat @ ego_from_lidar.rotation.T
    o = ego_from_lidar.translation
    # Board rectangle.
    rb, tb = ego_from_board.rotation, ego_from_board.translation
    n = rb[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_board = (n @ (tb - o)) / (dirs_e @ n)
    p = o[None, :] + t_board[:, None] * dirs_e
    loc = (p - tb) @ rb
    x0, x1, y0, y1 = board.outline_m
    on_board = (
        np.isfinite(t_board) & (t_board > 0)
        & (loc[:, 0] >= x0) & (loc[:, 0] <= x1) & (loc[:, 1] >= y0) & (loc[:, 1] <= y1)
    )  # fmt: skip
    t_board = np.where(on_board, t_board, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs_e[:, 2] < -1e-6, -o[2] / dirs_e[:, 2], np.inf)
    t_hit = np.minimum(t_board, t_ground)
    hit_board = t_board <= t_ground
    t_self = _ray_boxes(o, dirs_e)
    keep = (
        np.isfinite(t_hit)
        & (t_hit >= spec.min_range_m)
        & (t_hit <= spec.max_range_m)
        & ~(t_self < t_hit)
    )
    keep &= rng.random(keep.size) >= spec.dropout
    noise = rng.normal(0.0, spec.range_noise_m, keep.size)
    idx = np.flatnonzero(keep)
    r_true = t_hit[idx]
    xyz = (dirs_flat[idx] * (r_true + noise[idx])[:, None]).astype(np.float32)
    normal = np.where(hit_board[idx, None], n[None, :], np.array([0.0, 0.0, 1.0])[None, :])
    cos_inc = np.abs(np.sum(normal * dirs_e[idx], axis=1))
    refl = np.where(hit_board[idx], BOARD_REFLECTIVITY, GROUND_REFLECTIVITY)
    inten = 255.0 * refl * (0.3 + 0.7 * cos_inc) * (1.0 - 0.4 * r_true / spec.max_range_m)
    inten = np.clip(inten * (1.0 + rng.normal(0.0, 0.02, idx.size)), 0.0, 255.0)
    return TargetSweep(
        xyz=xyz,
        ring=ring[idx].astype(np.uint8),
        intensity=np.round(inten).astype(np.float32),
        on_board=hit_board[idx],
    )


# --------------------------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------------------------


def make_target_session(
    n_views: int = 16,
    seed: int = 0,
    *,
    cameras: Sequence[str] = ("CAM_FRONT", "THERMAL_FRONT"),
    lidar: str | None = "LIDAR_TOP",
    board: CheckerboardSpec | None = None,
    rig: Mapping[str, RigSensor] | None = None,
    lidar_spec: LidarSpec | None = None,
) -> TargetSession:
    """Simulate the calibration-target session (deterministic in ``seed``); see the module doc.

    ``cameras`` names the camera/thermal sensors of ``rig`` to render; ``lidar`` the LiDAR to
    simulate (``None`` for none)."""
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ConfigError(f"make_target_session: n_views must be an integer >= 1, got {n_views!r}")
    board = board or CheckerboardSpec()
    rig = dict(rig or default_rig())
    spec = lidar_spec or LidarSpec()
    if not cameras:
        raise ConfigError("make_target_session: at least one camera is needed")
    for name in [*cameras, *([lidar] if lidar else [])]:
        if name not in rig:
            raise ConfigError(
                f"make_target_session: unknown sensor '{name}' (rig has {', '.join(sorted(rig))})"
            )
    for name in cameras:
        if rig[name].modality not in ("camera", "thermal") or rig[name].camera is None:
            raise ConfigError(f"make_target_session: '{name}' is not a camera or thermal camera")
    if lidar and rig[lidar].modality != "lidar":
        raise ConfigError(f"make_target_session: '{lidar}' is not a LiDAR")
    rng = np.random.default_rng([seed, 8080])
    poses = _sample_poses(board, rig, list(cameras), n_views, rng)
    images: dict[str, tuple[npt.NDArray[np.generic], ...]] = {}
    for ci, name in enumerate(cameras):
        s = rig[name]
        cam = s.camera
        if cam is None:  # checked above; keeps the type checker informed
            raise ConfigError(f"make_target_session: '{name}' has no camera model")
        cols = column_pattern(cam.width, seed)
        out: list[npt.NDArray[np.generic]] = []
        for vi, pose in enumerate(poses):
            r = np.random.default_rng([seed, 8081, ci, vi])
            c_from_b = s.ego_from_sensor.inverse() @ pose
            if s.modality == "thermal":
                out.append(_render_thermal(board, cam, c_from_b, r, seed + vi, cols))
            else:
                out.append(_render_rgb(board, cam, c_from_b, r, seed + vi))
        images[name] = tuple(out)
    sweeps: list[TargetSweep] = []
    if lidar:
        for vi, pose in enumerate(poses):
            r = np.random.default_rng([seed, 8082, vi])
            sweeps.append(_simulate_sweep(board, pose, rig[lidar].ego_from_sensor, spec, r))
    names = [*cameras, *([lidar] if lidar else [])]
    cams = {n: rig[n].camera for n in cameras}
    return TargetSession(
        board=board,
        lidar=lidar or "",
        lidar_spec=spec,
        ego_from_board=tuple(poses),
        cameras={k: v for k, v in cams.items() if v is not None},
        modality={n: rig[n].modality for n in names},
        ego_from_sensor={n: rig[n].ego_from_sensor for n in names},
        images=images,
        sweeps=tuple(sweeps),
    )


def _tf_dict(tf: Transform) -> dict[str, list[float]]:
    return {"rotation_wxyz": tf.quaternion.tolist(), "translation_m": tf.translation.tolist()}


def write_target_session(session: TargetSession, out_dir: str | os.PathLike[str]) -> Path:
    """Write the session: ``<sensor>/view_NN.png`` (RGB as 8-bit PNG, thermal as 16-bit PNG),
    ``<lidar>/view_NN.npz`` (xyz, ring, intensity, on_board) and ``truth.json`` (board, poses,
    intrinsics and extrinsics). Returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, views in session.images.items():
        d = out / name
        d.mkdir(exist_ok=True)
        for i, img in enumerate(views):
            data = img[..., ::-1] if img.ndim == 3 else img  # OpenCV writes BGR
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(data))
            if not ok:
                raise ConfigError(f"write_target_session: could not encode {name} view {i}")
            tmp = d / f"view_{i:02d}.png.tmp"
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, d / f"view_{i:02d}.png")
    if session.lidar:
        d = out / session.lidar
        d.mkdir(exist_ok=True)
        for i, sw in enumerate(session.sweeps):
            tmp = d / f"view_{i:02d}.tmp.npz"
            np.savez_compressed(
                tmp, xyz=sw.xyz, ring=sw.ring, intensity=sw.intensity, on_board=sw.on_board
            )
            os.replace(tmp, d / f"view_{i:02d}.npz")
    b = session.board
    truth = {
        "board": {
            "squares_x": b.squares_x,
            "squares_y": b.squares_y,
            "square_m": b.square_m,
            "border_m": b.border_m,
            "pattern": list(b.pattern),
            "frame": "origin at inner corner 0, x along a row, y down, z into the board",
        },
        "ego_from_board": [_tf_dict(p) for p in session.ego_from_board],
        "sensors": {
            n: {
                "modality": session.modality[n],
                "ego_from_sensor": _tf_dict(session.ego_from_sensor[n]),
                **(
                    {
                        "K": session.cameras[n].K.tolist(),
                        "distortion": session.cameras[n].distortion,
                        "coeffs": session.cameras[n].coeffs.tolist(),
                        "width": session.cameras[n].width,
                        "height": session.cameras[n].height,
                    }
                    if n in session.cameras
                    else {}
                ),
            }
            for n in session.ego_from_sensor
        },
        "lidar": session.lidar,
    }
    tmp = out / "truth.json.tmp"
    tmp.write_text(json.dumps(truth, indent=1) + "\n")
    os.replace(tmp, out / "truth.json")
    return out
