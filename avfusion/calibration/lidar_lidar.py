"""LiDAR→LiDAR extrinsic registration for multi-LiDAR rigs.

``register_lidar_lidar`` estimates ``target_from_source`` (e.g. ``LIDAR_TOP`` from
``LIDAR_FRONT``) from one or more synchronised frame pairs. Each frame's two sweeps must already
be motion-compensated to one common instant (``fusion.deskew`` with the believed extrinsic;
re-run with the refined one for the last millimetres when the vehicle moves fast).

Method:

1. Per frame: drop non-finite points and points outside ``[min_range_m, max_range_m]``, voxel
   down-sample both clouds (Open3D), estimate target normals by PCA over ``normal_radius_m``
   and keep only target points whose neighbourhood is a well-sampled plane (spread in two
   directions, flat): a lone scan line on the ground gives a normal PCA cannot fix, and such
   normals bias pitch and roll by several hundredths of a degree.
2. Per frame, coarse to fine: Open3D generalized ICP (or point-to-plane ICP) from the initial
   guess with shrinking correspondence distances; its fitness and inlier RMSE are kept.
3. Jointly over all frames: point-to-plane Gauss-Newton with Huber weights, started from the
   chordal mean of the per-frame results; every frame's correspondences constrain the one
   extrinsic. The information matrix is ``Σ Jᵀ W J / σ²`` (σ² the weighted residual variance);
   the covariance is its inverse, inflated to the frame-to-frame scatter (the spread of
   single-frame solutions / √n) when that is larger, since neighbouring correspondences are
   not independent.
4. The answer is refused (``observable=False`` with a ``reason``) when the mean fitness is
   below ``min_fitness``, the information matrix is singular (a degenerate scene, e.g. a
   featureless plane), or a standard deviation exceeds its limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import open3d as o3d
from scipy.spatial import cKDTree

from avfusion.calibration.transforms import Transform
from avfusion.errors import CalibrationError, ConfigError

__all__ = ["LidarLidarEstimate", "LidarRegistrationSettings", "register_lidar_lidar"]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
#: Smallest accepted ratio of the least to the most constrained direction (see the degeneracy
#: check in ``register_lidar_lidar``).
MIN_EIGEN_RATIO = 1e-3


@dataclass(frozen=True)
class LidarRegistrationSettings:
    """Tuning of ``register_lidar_lidar``.

    ``voxel_size_m`` down-sampling of both clouds; ``min_range_m``/``max_range_m`` the points
    used; ``normal_radius_m`` neighbourhood for target normals and the planarity test (at most
    30 neighbours);
    ``correspondence_m`` the coarse-to-fine maximum correspondence distances (the last one is
    used by the joint refinement); ``huber_m`` the robust kernel's threshold; ``method`` the
    per-frame Open3D registration; refuse when the mean fitness is below ``min_fitness`` or a
    standard deviation exceeds ``max_std_rotation_deg`` / ``max_std_translation_m``.
    """

    voxel_size_m: float = 0.1
    min_range_m: float = 1.5
    max_range_m: float = 40.0
    normal_radius_m: float = 1.0
    correspondence_m: tuple[float, ...] = (1.0, 0.5, 0.25)
    huber_m: float = 0.05
    method: Literal["gicp", "point_to_plane"] = "point_to_plane"
    max_iterations: int = 40
    min_fitness: float = 0.3
    max_std_rotation_deg: float = 0.05
    max_std_translation_m: float = 0.01

    def __post_init__(self) -> None:
        for name in ("voxel_size_m", "min_range_m", "max_range_m", "normal_radius_m", "huber_m",
                     "max_std_rotation_deg", "max_std_translation_m"):  # fmt: skip
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not np.isfinite(v)
                or v <= 0
            ):
                raise ConfigError(
                    f"LidarRegistrationSettings.{name} must be a finite number > 0, got {v!r}"
                )
        if self.min_range_m >= self.max_range_m:
            raise ConfigError(
                f"LidarRegistrationSettings: min_range_m ({self.min_range_m}) must be below max_range_m ({self.max_range_m})"
            )
        c = self.correspondence_m
        if (
            not isinstance(c, tuple)
            or not c
            or not all(isinstance(v, int | float) and np.isfinite(v) and v > 0 for v in c)
        ):
            raise ConfigError(
                f"LidarRegistrationSettings.correspondence_m must be a non-empty tuple of distances > 0, got {c!r}"
            )
        if self.method not in ("gicp", "point_to_plane"):
            raise ConfigError(
                f"LidarRegistrationSettings.method must be 'gicp' or 'point_to_plane', got {self.method!r}"
            )
        if (
            isinstance(self.max_iterations, bool)
            or not isinstance(self.max_iterations, int)
            or self.max_iterations < 1
        ):
            raise ConfigError(
                f"LidarRegistrationSettings.max_iterations must be an integer >= 1, got {self.max_iterations!r}"
            )
        if not (0.0 <= self.min_fitness <= 1.0):
            raise ConfigError(
                f"LidarRegistrationSettings.min_fitness must be in [0, 1], got {self.min_fitness!r}"
            )


@dataclass(frozen=True, eq=False)
class LidarLidarEstimate:
    """The registration of a source LiDAR to a target LiDAR.

    ``target_from_source`` the estimate (``None`` when not ``observable``; ``reason`` says
    why); ``fitness`` (share of source points with a correspondence) and ``rmse_m`` (their RMS
    point-to-plane distance) averaged over frames at the final estimate; ``information`` (6, 6)
    and ``covariance`` (6, 6) in (rotation rad, translation m) of a left perturbation
    ``exp(δ) · target_from_source`` (target-frame axes); ``std_rotation_deg``/``std_translation_m``
    their square-rooted diagonals; ``per_frame`` one record per frame (Open3D fitness/RMSE, the
    single-frame solution's difference to the joint one)."""

    source: str
    target: str
    observable: bool
    reason: str
    initial_target_from_source: Transform
    target_from_source: Transform | None
    fitness: float
    rmse_m: float
    information: F64
    covariance: F64
    std_rotation_deg: F64
    std_translation_m: F64
    n_frames: int
    n_correspondences: int
    per_frame: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def ego_from_source(self, ego_from_target: Transform) -> Transform | None:
        """The source LiDAR's ``ego_from_sensor`` given the target's (``None`` if not observable)."""
        if self.target_from_source is None:
            return None
        return ego_from_target @ self.target_from_source

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "lidar-lidar ICP (Open3D per frame, joint point-to-plane)",
            "target": self.target,
            "observable": self.observable,
            "reason": self.reason,
            "fitness": self.fitness,
            "rmse_m": self.rmse_m,
            "std_rotation_deg": self.std_rotation_deg.tolist(),
            "std_translation_m": self.std_translation_m.tolist(),
            "n_frames": self.n_frames,
            "n_correspondences": self.n_correspondences,
        }


def _as_frames(x: Any, what: str) -> list[F64]:
    if isinstance(x, np.ndarray):
        frames: list[Any] = [x]
    elif isinstance(x, Sequence) and not isinstance(x, str | bytes):
        frames = list(x)
    else:
        raise CalibrationError(
            f"register_lidar_lidar: {what} must be an (N, 3) array or a sequence of them"
        )
    out: list[F64] = []
    for i, f in enumerate(frames):
        a = np.asarray(f)
        if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind != "f":
            raise CalibrationError(
                f"register_lidar_lidar: {what} frame {i} must be a float (N, 3) array, got {a.dtype} {a.shape}"
            )
        out.append(a.astype(np.float64))
    return out


def _prepare(points: F64, s: LidarRegistrationSettings, normals: bool) -> o3d.geometry.PointCloud:
    ok: npt.NDArray[np.bool_] = np.asarray(np.isfinite(points).all(axis=1))
    r = np.linalg.norm(np.where(ok[:, None], points, 0.0), axis=1)
    keep = ok & (r >= s.min_range_m) & (r <= s.max_range_m)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(points[keep])))
    pc = pc.voxel_down_sample(s.voxel_size_m)
    if normals:
        pc.estimate_normals(
            o3d.geometry.KDTreeSearchParamHybrid(radius=s.normal_radius_m, max_nn=30)
        )
    return pc


def _planar_normals(points: F64, radius_m: float, k: int = 30) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Unit normals (N, 3) from the ``k`` nearest neighbours within ``radius_m``, and which are
    trustworthy: at least 6 neighbours spread in two directions (second eigenvalue ≥ 5 % of the
    largest: not a single scan line, whose normal PCA cannot fix) and flat (smallest ≤ 30 % of
    the second)."""
    tree = cKDTree(points)
    d, idx = tree.query(points, k=k, distance_upper_bound=radius_m)
    valid = np.isfinite(d)
    idx = np.where(valid, idx, 0)
    nb = points[idx]  # (N, k, 3)
    w = valid[..., None].astype(np.float64)
    cnt = np.maximum(valid.sum(axis=1), 1)[:, None]
    mean = (nb * w).sum(axis=1) / cnt
    c = (nb - mean[:, None, :]) * w
    cov = np.einsum("nki,nkj->nij", c, c) / cnt[..., None]
    evals, evecs = np.linalg.eigh(cov)
    normals = evecs[:, :, 0]
    # Orient towards the sensor at the origin.
    flip = np.sum(normals * points, axis=1) > 0
    normals[flip] *= -1.0
    l0, l1, l2 = evals[:, 0], evals[:, 1], evals[:, 2]
    ok = (valid.sum(axis=1) >= 6) & (l1 >= 0.05 * l2) & (l0 <= 0.05 * l1)
    return np.ascontiguousarray(normals), ok


def _chordal_mean(tfs: Sequence[Transform]) -> Transform:
    m = sum(t.rotation for t in tfs)
    u, _s, vt = np.linalg.svd(np.asarray(m))
    r = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return Transform(r, np.mean([t.translation for t in tfs], axis=0))


@dataclass
class _Frame:
    src: F64
    tgt: F64
    nrm: F64
    tree: Any


def _normal_equations(
    frames: Sequence[_Frame], tf: Transform, max_dist: float, huber: float
) -> tuple[F64, F64, float, int, list[F64]]:
    """(JᵀWJ, JᵀWr, Σ w r², correspondences, per-frame gradient JᵀWr)."""
    h = np.zeros((6, 6))
    g = np.zeros(6)
    ssr, n = 0.0, 0
    grads: list[F64] = []
    for fr in frames:
        q = np.asarray(fr.src @ tf.rotation.T + tf.translation, dtype=np.float64)
        d, idx = fr.tree.query(q, distance_upper_bound=max_dist)
        ok = np.isfinite(d)
        q, idx = q[ok], idx[ok]
        nn = fr.nrm[idx]
        r = np.sum((q - fr.tgt[idx]) * nn, axis=1)
        w = np.where(np.abs(r) <= huber, 1.0, huber / np.maximum(np.abs(r), 1e-12))
        j = np.concatenate([np.cross(q, nn), nn], axis=1)
        jw = j * w[:, None]
        h += jw.T @ j
        gi = jw.T @ r
        g += gi
        grads.append(gi)
        ssr += float(np.sum(w * r * r))
        n += int(r.size)
    return h, g, ssr, n, grads


def _gauss_newton(
    frames: Sequence[_Frame], tf: Transform, max_dist: float, huber: float, iterations: int
) -> Transform:
    for _ in range(iterations):
        h, g, _ssr, n, _ = _normal_equations(frames, tf, max_dist, huber)
        if n < 6:
            break
        try:
            delta = -np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        tf = Transform.from_rotvec(delta[:3], delta[3:]) @ tf
        if np.linalg.norm(delta[:3]) < 1e-8 and np.linalg.norm(delta[3:]) < 1e-7:
            break
    return tf


def register_lidar_lidar(
    source_points: npt.ArrayLike | Sequence[npt.ArrayLike],
    target_points: npt.ArrayLike | Sequence[npt.ArrayLike],
    initial_target_from_source: Transform,
    settings: LidarRegistrationSettings | None = None,
    *,
    source: str = "source",
    target: str = "target",
) -> LidarLidarEstimate:
    """Estimate ``target_from_source`` from synchronised, motion-compensated frame pairs.

    ``source_points``/``target_points``: one (N, 3) float array each, or equally long sequences
    of them (frame i of the source pairs with frame i of the target), in the sensors' own
    frames. ``initial_target_from_source`` the believed extrinsic (within about 3° and 30 cm).
    Raises ``CalibrationError`` for malformed or unpaired input; an answer that cannot be
    trusted comes back with ``observable=False`` and a ``reason`` (see the module doc).
    """
    s = settings or LidarRegistrationSettings()
    src_frames = _as_frames(source_points, f"{source} points")
    tgt_frames = _as_frames(target_points, f"{target} points")
    if len(src_frames) != len(tgt_frames):
        raise CalibrationError(
            f"register_lidar_lidar ({source} → {target}): {len(src_frames)} source frames but "
            f"{len(tgt_frames)} target frames; they must pair up"
        )
    if not src_frames:
        raise CalibrationError(f"register_lidar_lidar ({source} → {target}): no frames")
    if not isinstance(initial_target_from_source, Transform):
        raise CalibrationError(
            f"register_lidar_lidar ({source} → {target}): initial_target_from_source must be a Transform"
        )
    frames: list[_Frame] = []
    o3d_pairs: list[tuple[o3d.geometry.PointCloud, o3d.geometry.PointCloud]] = []
    for i, (sp, tp) in enumerate(zip(src_frames, tgt_frames, strict=True)):
        spc = _prepare(sp, s, normals=False)
        tpc = _prepare(tp, s, normals=True)  # Open3D normals for its own per-frame ICP
        if len(spc.points) < 50 or len(tpc.points) < 50:
            raise CalibrationError(
                f"register_lidar_lidar ({source} → {target}): frame {i} has {len(spc.points)} source and "
                f"{len(tpc.points)} target points in range after down-sampling; need at least 50 each"
            )
        tgt = np.asarray(tpc.points, dtype=np.float64)
        nrm, planar = _planar_normals(tgt, s.normal_radius_m)
        if np.count_nonzero(planar) < 50:
            raise CalibrationError(
                f"register_lidar_lidar ({source} → {target}): frame {i} has {np.count_nonzero(planar)} target "
                "points on well-sampled planar surfaces; need at least 50"
            )
        frames.append(
            _Frame(
                np.asarray(spc.points, dtype=np.float64),
                tgt[planar],
                nrm[planar],
                cKDTree(tgt[planar]),
            )
        )
        o3d_pairs.append((spc, tpc))

    # 2. Per-frame Open3D registration, coarse to fine.
    reg = o3d.pipelines.registration
    crit = reg.ICPConvergenceCriteria(
        relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=s.max_iterations
    )
    est = (
        reg.TransformationEstimationForGeneralizedICP()
        if s.method == "gicp"
        else reg.TransformationEstimationPointToPlane()
    )
    per_frame: list[dict[str, Any]] = []
    frame_tfs: list[Transform] = []
    for i, (spc, tpc) in enumerate(o3d_pairs):
        m = initial_target_from_source.as_matrix()
        res = None
        for dist in s.correspondence_m:
            res = (
                reg.registration_generalized_icp(spc, tpc, dist, m, est, crit)
                if s.method == "gicp"
                else reg.registration_icp(spc, tpc, dist, m, est, crit)
            )
            m = np.asarray(res.transformation)
        frame_tfs.append(Transform.nearest_rigid(m))
        per_frame.append(
            {
                "frame": i,
                "open3d_fitness": float(res.fitness) if res else 0.0,
                "open3d_rmse_m": float(res.inlier_rmse) if res else float("nan"),
            }
        )

    # 3. Joint refinement over all frames.
    d_final = s.correspondence_m[-1]
    tf = _gauss_newton(frames, _chordal_mean(frame_tfs), d_final, s.huber_m, s.max_iterations)
    h, _g, ssr, n_corr, _grads = _normal_equations(frames, tf, d_final, s.huber_m)
    sigma2 = ssr / max(n_corr - 6, 1)
    information = h / max(sigma2, 1e-12)
    fit, rm = [], []
    for i, fr in enumerate(frames):
        q = fr.src @ tf.rotation.T + tf.translation
        d, idx = fr.tree.query(q, distance_upper_bound=d_final)
        ok = np.isfinite(d)
        r = np.sum((q[ok] - fr.tgt[idx[ok]]) * fr.nrm[idx[ok]], axis=1)
        fit.append(float(np.mean(ok)))
        rm.append(float(np.sqrt(np.mean(r * r))) if r.size else float("nan"))
        per_frame[i].update(fitness=fit[-1], rmse_m=rm[-1])
    fitness, rmse = float(np.mean(fit)), float(np.mean(rm))

    def refuse(reason: str, cov: F64 | None = None) -> LidarLidarEstimate:
        c = np.full((6, 6), np.nan) if cov is None else cov
        sd = np.sqrt(np.abs(np.diag(c)))
        logger.info("register_lidar_lidar %s → %s refused: %s", source, target, reason)
        return LidarLidarEstimate(
            source, target, False, reason, initial_target_from_source, None, fitness, rmse,
            information, c, np.degrees(sd[:3]), sd[3:], len(frames), n_corr, tuple(per_frame),
        )  # fmt: skip

    if fitness < s.min_fitness:
        return refuse(
            f"mean fitness {fitness:.2f} below {s.min_fitness:.2f}: too little overlap, or the initial guess is too far off"
        )
    # Degeneracy: eigenvalues of the information with rotation in metres at the points' RMS
    # range (unit-consistent); a direction with under MIN_EIGEN_RATIO of the best-constrained
    # one's information is fixed only by normal noise (e.g. a single plane).
    scale_m = float(np.sqrt(np.mean([np.mean(np.sum(fr.src**2, axis=1)) for fr in frames])))
    dsc = np.diag([1.0 / scale_m] * 3 + [1.0] * 3)
    ev = np.linalg.eigvalsh(dsc @ h @ dsc)
    eigen_ratio = float(ev[0] / ev[-1]) if ev[-1] > 0 else 0.0
    logger.debug("register_lidar_lidar %s → %s: eigenvalue ratio %.2e", source, target, eigen_ratio)
    if n_corr < 100 or eigen_ratio < MIN_EIGEN_RATIO:
        return refuse(
            "the scene does not constrain all six degrees of freedom (degenerate geometry)"
        )
    cov: F64 = np.asarray(np.linalg.inv(information), dtype=np.float64)
    # Single-frame solutions from the joint one: their scatter shows correlated errors.
    if len(frames) >= 3:
        singles = []
        for i, fr in enumerate(frames):
            t1 = _gauss_newton([fr], tf, d_final, s.huber_m, s.max_iterations)
            dlt = t1 @ tf.inverse()
            v = np.concatenate([dlt.as_rotvec(), dlt.translation])
            singles.append(v)
            per_frame[i].update(
                single_minus_joint_rotation_deg=np.degrees(v[:3]).tolist(),
                single_minus_joint_translation_m=v[3:].tolist(),
            )
        spread_var = np.var(np.asarray(singles), axis=0, ddof=1) / len(frames)
        inflate = np.sqrt(np.maximum(spread_var / np.maximum(np.diag(cov), 1e-30), 1.0))
        cov = np.asarray(cov * np.outer(inflate, inflate), dtype=np.float64)
    sd = np.sqrt(np.diag(cov))
    std_rot, std_tr = np.degrees(sd[:3]), sd[3:]
    if np.any(std_rot > s.max_std_rotation_deg) or np.any(std_tr > s.max_std_translation_m):
        return refuse(
            f"uncertain: std rotation {np.round(std_rot, 3).tolist()}° (limit {s.max_std_rotation_deg}°), "
            f"translation {np.round(std_tr, 4).tolist()} m (limit {s.max_std_translation_m} m)",
            cov,
        )
    return LidarLidarEstimate(
        source, target, True, "", initial_target_from_source, tf, fitness, rmse, information, cov,
        std_rot, std_tr, len(frames), n_corr, tuple(per_frame),
    )  # fmt: skip
