"""Rigid transforms, trajectories and the transform tree.

Convention (defined here, once): a transform named ``a_from_b`` maps coordinates expressed in
frame ``b`` into frame ``a``::

    p_ego = ego_from_lidar.apply(p_lidar)
    cam_from_lidar = cam_from_ego @ ego_from_lidar

Quaternions are (w, x, y, z), Hamilton convention, as in nuScenes and pyquaternion. Times are
int64 nanoseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import CalibrationError, SyncError

if TYPE_CHECKING:
    from pyquaternion import Quaternion

__all__ = [
    "ORTHONORMAL_TOL",
    "Trajectory",
    "Transform",
    "TransformTree",
    "matrix_from_quaternion",
    "quaternion_from_matrix",
    "quaternion_multiply",
    "slerp_quaternions",
]

#: Largest |R·Rᵀ − I| entry accepted for a rotation matrix. Loose enough for rotations stored as
#: float32 (about 1e-7 error), tight enough to reject a scaled or sheared matrix.
ORTHONORMAL_TOL = 1e-5

FloatArray = npt.ArrayLike
F64 = npt.NDArray[np.float64]


def _f64(values: npt.ArrayLike) -> F64:
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Quaternion helpers (vectorised over a leading axis; (w, x, y, z))
# --------------------------------------------------------------------------------------------


def _normalise_quaternions(q: FloatArray, what: str) -> npt.NDArray[np.float64]:
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise CalibrationError(
            f"{what}: a quaternion has 4 components (w, x, y, z), got shape {q.shape}"
        )
    if not np.all(np.isfinite(q)):
        raise CalibrationError(f"{what}: quaternion has non-finite components: {q.tolist()}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-9):
        raise CalibrationError(f"{what}: quaternion has zero norm and describes no rotation")
    return q / norm


def matrix_from_quaternion(q_wxyz: FloatArray) -> npt.NDArray[np.float64]:
    """Rotation matrices (..., 3, 3) from unit quaternions (..., 4) in (w, x, y, z) order."""
    q = _normalise_quaternions(q_wxyz, "matrix_from_quaternion")
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    out = np.empty((*q.shape[:-1], 3, 3), dtype=np.float64)
    out[..., 0, 0] = 1 - 2 * (y * y + z * z)
    out[..., 0, 1] = 2 * (x * y - w * z)
    out[..., 0, 2] = 2 * (x * z + w * y)
    out[..., 1, 0] = 2 * (x * y + w * z)
    out[..., 1, 1] = 1 - 2 * (x * x + z * z)
    out[..., 1, 2] = 2 * (y * z - w * x)
    out[..., 2, 0] = 2 * (x * z - w * y)
    out[..., 2, 1] = 2 * (y * z + w * x)
    out[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return out


def quaternion_from_matrix(rotation: FloatArray) -> npt.NDArray[np.float64]:
    """Unit quaternions (..., 4), (w, x, y, z) with w >= 0, from rotation matrices (..., 3, 3).

    Shepperd's method: picks the numerically largest of w, x, y, z to divide by.
    """
    r = np.asarray(rotation, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    trace = m00 + m11 + m22
    candidates = np.stack([trace, m00, m11, m22], axis=-1)
    pick = np.argmax(candidates, axis=-1)
    q = np.empty((*r.shape[:-2], 4), dtype=np.float64)

    def sel(mask: npt.NDArray[np.bool_], vals: list[npt.NDArray[np.float64]]) -> None:
        for i, v in enumerate(vals):
            q[..., i] = np.where(mask, v, q[..., i])

    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(np.maximum(1.0 + trace, 1e-300)) * 2
        sel(
            pick == 0,
            [
                0.25 * s,
                (r[..., 2, 1] - r[..., 1, 2]) / s,
                (r[..., 0, 2] - r[..., 2, 0]) / s,
                (r[..., 1, 0] - r[..., 0, 1]) / s,
            ],
        )
        s = np.sqrt(np.maximum(1.0 + m00 - m11 - m22, 1e-300)) * 2
        sel(
            pick == 1,
            [
                (r[..., 2, 1] - r[..., 1, 2]) / s,
                0.25 * s,
                (r[..., 0, 1] + r[..., 1, 0]) / s,
                (r[..., 0, 2] + r[..., 2, 0]) / s,
            ],
        )
        s = np.sqrt(np.maximum(1.0 - m00 + m11 - m22, 1e-300)) * 2
        sel(
            pick == 2,
            [
                (r[..., 0, 2] - r[..., 2, 0]) / s,
                (r[..., 0, 1] + r[..., 1, 0]) / s,
                0.25 * s,
                (r[..., 1, 2] + r[..., 2, 1]) / s,
            ],
        )
        s = np.sqrt(np.maximum(1.0 - m00 - m11 + m22, 1e-300)) * 2
        sel(
            pick == 3,
            [
                (r[..., 1, 0] - r[..., 0, 1]) / s,
                (r[..., 0, 2] + r[..., 2, 0]) / s,
                (r[..., 1, 2] + r[..., 2, 1]) / s,
                0.25 * s,
            ],
        )
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def _quat_multiply(a: FloatArray, b: FloatArray) -> npt.NDArray[np.float64]:
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quaternion_multiply(a: FloatArray, b: FloatArray) -> npt.NDArray[np.float64]:
    """Hamilton product ``a ⊗ b`` of (..., 4) quaternions (w, x, y, z), broadcasting: the
    rotation ``b`` followed by ``a`` (``R(a ⊗ b) = R(a) @ R(b)``)."""
    return _quat_multiply(a, b)


def slerp_quaternions(q0: FloatArray, q1: FloatArray, alpha: FloatArray) -> npt.NDArray[np.float64]:
    """Spherical linear interpolation along the shorter arc, vectorised.

    ``alpha`` = 0 gives ``q0`` and 1 gives ``q1``; values outside [0, 1] extrapolate at the same
    angular rate. Shapes broadcast: q0, q1 (..., 4), alpha (...).
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    small = sin_theta < 1e-9
    safe = np.where(small, 1.0, sin_theta)
    w0 = np.where(small, 1.0 - alpha, np.sin((1.0 - alpha) * theta) / safe)
    w1 = np.where(small, alpha, np.sin(alpha * theta) / safe)
    out = w0 * q0 + w1 * q1
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    return out


def _check_rotation(rotation: npt.NDArray[np.float64], what: str) -> None:
    # Python scalars: a few microseconds, where a dozen numpy calls on 3×3 arrays took 12 µs
    # (Transforms are built per sample and per camera, ~50 per training sample)
    if rotation.shape != (3, 3):
        raise CalibrationError(f"{what}: rotation must be 3x3, got shape {rotation.shape}")
    rows = rotation.tolist()
    (a, b, c), (d, e, f), (g, h, i) = rows
    if not all(map(math.isfinite, (a, b, c, d, e, f, g, h, i))):
        raise CalibrationError(f"{what}: rotation has non-finite entries: {rows}")
    err = max(
        abs(a * a + b * b + c * c - 1.0),
        abs(d * d + e * e + f * f - 1.0),
        abs(g * g + h * h + i * i - 1.0),
        abs(a * d + b * e + c * f),
        abs(a * g + b * h + c * i),
        abs(d * g + e * h + f * i),
    )
    if err > ORTHONORMAL_TOL:
        raise CalibrationError(
            f"{what}: rotation is not orthonormal (max |R·Rᵀ − I| = {err:.3g} > {ORTHONORMAL_TOL}); "
            "use Transform.nearest_rigid() for a matrix with scale or shear noise"
        )
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if det < 0:
        raise CalibrationError(
            f"{what}: rotation has determinant {det:.6f}; a reflection is not a rotation"
        )


def _readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------------
# Transform
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Transform:
    """A rigid transform ``a_from_b``: ``p_a = rotation @ p_b + translation``.

    Frozen; the arrays are float64 copies marked read-only. Compose with ``@``:
    ``(a_from_b @ b_from_c)`` is ``a_from_c``.
    """

    rotation: npt.NDArray[np.float64] = field(default_factory=lambda: np.eye(3))
    translation: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        rotation = np.array(self.rotation, dtype=np.float64)
        translation = np.array(self.translation, dtype=np.float64).reshape(-1)
        _check_rotation(rotation, "Transform")
        if translation.shape != (3,):
            raise CalibrationError(
                f"Transform: translation must have 3 values, got shape {translation.shape}"
            )
        if not np.all(np.isfinite(translation)):
            raise CalibrationError(
                f"Transform: translation has non-finite values: {translation.tolist()}"
            )
        object.__setattr__(self, "rotation", _readonly(rotation))
        object.__setattr__(self, "translation", _readonly(translation))

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> Transform:
        return cls()

    @classmethod
    def from_matrix(cls, matrix: FloatArray) -> Transform:
        """From a 4x4 homogeneous matrix whose last row is (0, 0, 0, 1)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise CalibrationError(
                f"Transform.from_matrix: expected a 4x4 matrix, got shape {m.shape}"
            )
        if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
            raise CalibrationError(
                f"Transform.from_matrix: last row must be (0, 0, 0, 1), got {m[3].tolist()}"
            )
        return cls(m[:3, :3], m[:3, 3])

    @classmethod
    def nearest_rigid(cls, matrix: FloatArray) -> Transform:
        """The rigid transform nearest (Frobenius) to a 4x4 or 3x4 matrix with small noise.

        For calibrations stored in float32 or rounded text. A matrix far from a rotation (scale,
        shear, reflection) is still rejected.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape not in ((4, 4), (3, 4)):
            raise CalibrationError(
                f"Transform.nearest_rigid: expected 4x4 or 3x4, got shape {m.shape}"
            )
        if not np.all(np.isfinite(m)):
            raise CalibrationError("Transform.nearest_rigid: matrix has non-finite entries")
        u, s, vt = np.linalg.svd(m[:3, :3])
        if np.max(np.abs(s - 1.0)) > 1e-3 or np.linalg.det(u @ vt) < 0:
            raise CalibrationError(
                f"Transform.nearest_rigid: matrix is not close to a rotation (singular values {s.tolist()})"
            )
        return cls(u @ vt, m[:3, 3])

    @classmethod
    def from_quaternion(
        cls, q_wxyz: FloatArray, translation: FloatArray = (0.0, 0.0, 0.0)
    ) -> Transform:
        """From a quaternion (w, x, y, z), normalised here, and a translation."""
        return cls(matrix_from_quaternion(q_wxyz), _f64(translation))

    @classmethod
    def from_pyquaternion(
        cls, q: Quaternion, translation: FloatArray = (0.0, 0.0, 0.0)
    ) -> Transform:
        return cls.from_quaternion(np.asarray(q.elements, dtype=np.float64), translation)

    @classmethod
    def from_rotvec(
        cls, rotvec: FloatArray, translation: FloatArray = (0.0, 0.0, 0.0)
    ) -> Transform:
        """From an axis-angle vector (radians) and a translation (Rodrigues' formula)."""
        v = np.asarray(rotvec, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(v)):
            raise CalibrationError(
                f"Transform.from_rotvec: non-finite rotation vector {v.tolist()}"
            )
        angle = float(np.linalg.norm(v))
        if angle < 1e-15:
            return cls(np.eye(3), _f64(translation))
        axis = v / angle
        half = angle / 2.0
        q = np.concatenate([[np.cos(half)], np.sin(half) * axis])
        return cls.from_quaternion(q, translation)

    @classmethod
    def from_euler_zyx(
        cls, yaw: float, pitch: float, roll: float, translation: FloatArray = (0.0, 0.0, 0.0)
    ) -> Transform:
        """From intrinsic yaw (z), pitch (y), roll (x) in radians: R = Rz(yaw) Ry(pitch) Rx(roll)."""
        cy, sy, cp, sp, cr, sr = (
            np.cos(yaw),
            np.sin(yaw),
            np.cos(pitch),
            np.sin(pitch),
            np.cos(roll),
            np.sin(roll),
        )
        rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        return cls(rz @ ry @ rx, _f64(translation))

    # -- conversions -------------------------------------------------------------------------
    def as_matrix(self) -> npt.NDArray[np.float64]:
        """The 4x4 homogeneous matrix (a new, writable array)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def quaternion(self) -> npt.NDArray[np.float64]:
        """Rotation as a unit quaternion (w, x, y, z) with w >= 0."""
        return quaternion_from_matrix(self.rotation)

    def to_pyquaternion(self) -> Quaternion:
        from pyquaternion import Quaternion

        return Quaternion(*self.quaternion.tolist())

    def as_rotvec(self) -> npt.NDArray[np.float64]:
        """Rotation as an axis-angle vector (radians)."""
        q = self.quaternion
        sin_half = float(np.linalg.norm(q[1:]))
        if sin_half < 1e-15:
            return np.zeros(3)
        angle = 2.0 * np.arctan2(sin_half, q[0])
        return q[1:] / sin_half * angle

    @property
    def yaw(self) -> float:
        """Heading about z (radians) of the rotated x axis, in (-π, π]."""
        return float(np.arctan2(self.rotation[1, 0], self.rotation[0, 0]))

    # -- algebra -----------------------------------------------------------------------------
    def __matmul__(self, other: Transform) -> Transform:
        if not isinstance(other, Transform):
            return NotImplemented
        return Transform._of_valid(
            self.rotation @ other.rotation, self.rotation @ other.translation + self.translation
        )

    def inverse(self) -> Transform:
        """``b_from_a`` for ``self`` = ``a_from_b``."""
        rt = self.rotation.T
        return Transform._of_valid(rt.copy(), -(rt @ self.translation))

    @classmethod
    def _of_valid(
        cls, rotation: npt.NDArray[np.float64], translation: npt.NDArray[np.float64]
    ) -> Transform:
        """A Transform from new float64 arrays derived from valid Transforms (a product or an
        inverse: orthonormal to rounding, finite), without ``__post_init__``'s checks."""
        out = object.__new__(cls)
        object.__setattr__(out, "rotation", _readonly(rotation))
        object.__setattr__(out, "translation", _readonly(translation))
        return out

    def apply(self, points: FloatArray) -> FloatArray:
        """Map points (N, 3) or (3,) from frame b to frame a; float32 stays float32.

        Arithmetic is done in float64 and the result is cast back to the input dtype, so
        float32 world coordinates (hundreds of metres) do not lose centimetres. NaN points stay NaN.
        The input is never modified.
        """
        p = np.asarray(points)
        if p.dtype not in (np.float32, np.float64):
            raise CalibrationError(
                f"Transform.apply: points must be float32 or float64, got {p.dtype}"
            )
        if p.shape == (3,):
            return (self.rotation @ p.astype(np.float64) + self.translation).astype(p.dtype)
        if p.ndim != 2 or p.shape[1] != 3:
            raise CalibrationError(f"Transform.apply: points must have shape (N, 3), got {p.shape}")
        out = p.astype(np.float64, copy=False) @ self.rotation.T
        out += self.translation
        return out.astype(p.dtype, copy=False)

    def apply_rotation(self, vectors: FloatArray) -> FloatArray:
        """Rotate direction vectors (N, 3) or (3,) without translating; dtype preserved."""
        v = np.asarray(vectors)
        if v.dtype not in (np.float32, np.float64):
            raise CalibrationError(
                f"Transform.apply_rotation: vectors must be float32 or float64, got {v.dtype}"
            )
        if v.shape != (3,) and (v.ndim != 2 or v.shape[1] != 3):
            raise CalibrationError(
                f"Transform.apply_rotation: vectors must have shape (N, 3), got {v.shape}"
            )
        return (v.astype(np.float64, copy=False) @ self.rotation.T).astype(v.dtype, copy=False)

    def interpolate(self, other: Transform, alpha: float) -> Transform:
        """Slerp of the rotation and lerp of the translation; alpha 0 → self, 1 → other."""
        if not np.isfinite(alpha):
            raise CalibrationError(f"Transform.interpolate: alpha must be finite, got {alpha}")
        q = slerp_quaternions(self.quaternion, other.quaternion, np.float64(alpha))
        t = (1.0 - alpha) * self.translation + alpha * other.translation
        return Transform.from_quaternion(q, t)

    # -- comparison --------------------------------------------------------------------------
    def allclose(self, other: Transform, rtol: float = 0.0, atol: float = 1e-9) -> bool:
        return bool(
            np.allclose(self.rotation, other.rotation, rtol=rtol, atol=atol)
            and np.allclose(self.translation, other.translation, rtol=rtol, atol=atol)
        )

    def rotation_angle_to(self, other: Transform) -> float:
        """Angle (radians) of the relative rotation between self and other."""
        rel = self.rotation.T @ other.rotation
        return float(np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0)))

    def __repr__(self) -> str:
        q = np.round(self.quaternion, 6).tolist()
        t = np.round(self.translation, 6).tolist()
        return f"Transform(q_wxyz={q}, t={t})"


# --------------------------------------------------------------------------------------------
# Trajectory: a time-stamped transform (one edge of the tree, or the ego pose track)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A transform that changes over time, sampled at strictly increasing int64 times (ns).

    Between samples the rotation is slerped and the translation linearly interpolated. Outside
    the sampled range ``at`` extrapolates at the end segment's rate, but only as far as the
    caller's explicit ``tolerance_ns``; beyond that it raises ``SyncError``.
    """

    t_ns: npt.NDArray[np.int64]
    quaternions: npt.NDArray[np.float64]  # (T, 4) w, x, y, z
    translations: npt.NDArray[np.float64]  # (T, 3)
    name: str = "trajectory"

    def __post_init__(self) -> None:
        t = np.asarray(self.t_ns)
        if t.ndim != 1 or t.size == 0:
            raise SyncError(f"{self.name}: needs at least one time stamp, got shape {t.shape}")
        if not np.issubdtype(t.dtype, np.integer):
            raise SyncError(
                f"{self.name}: time stamps must be integer nanoseconds, got dtype {t.dtype}"
            )
        t = t.astype(np.int64)
        if t.size > 1:
            steps = np.diff(t)
            bad = np.flatnonzero(steps <= 0)
            if bad.size:
                i = int(bad[0])
                raise SyncError(
                    f"{self.name}: time stamps must increase strictly; sample {i + 1} "
                    f"(t={int(t[i + 1])} ns) is not after sample {i} (t={int(t[i])} ns)"
                )
        q = _normalise_quaternions(self.quaternions, self.name)
        if q.shape != (t.size, 4):
            raise SyncError(
                f"{self.name}: expected quaternions of shape ({t.size}, 4), got {q.shape}"
            )
        # Make consecutive quaternions share a hemisphere so interpolation takes the short arc.
        q = q.copy()
        for i in range(1, len(q)):
            if np.dot(q[i - 1], q[i]) < 0:
                q[i] = -q[i]
        tr = np.array(self.translations, dtype=np.float64)
        if tr.shape != (t.size, 3):
            raise SyncError(
                f"{self.name}: expected translations of shape ({t.size}, 3), got {tr.shape}"
            )
        if not np.all(np.isfinite(tr)):
            raise SyncError(f"{self.name}: translations contain non-finite values")
        object.__setattr__(self, "t_ns", _readonly(t.copy()))
        object.__setattr__(self, "quaternions", _readonly(q))
        object.__setattr__(self, "translations", _readonly(tr))

    @classmethod
    def from_transforms(
        cls, t_ns: npt.ArrayLike, transforms: list[Transform], name: str = "trajectory"
    ) -> Trajectory:
        if len(transforms) == 0:
            raise SyncError(f"{name}: needs at least one transform")
        q = np.stack([tf.quaternion for tf in transforms])
        tr = np.stack([tf.translation for tf in transforms])
        return cls(np.asarray(t_ns), q, tr, name)

    def __len__(self) -> int:
        return int(self.t_ns.size)

    @property
    def start_ns(self) -> int:
        return int(self.t_ns[0])

    @property
    def end_ns(self) -> int:
        return int(self.t_ns[-1])

    def __getitem__(self, i: int) -> Transform:
        return Transform.from_quaternion(self.quaternions[i], self.translations[i])

    def _segment(
        self, t: npt.NDArray[np.int64], tolerance_ns: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        if tolerance_ns < 0:
            raise SyncError(f"{self.name}: tolerance_ns must be >= 0, got {tolerance_ns}")
        lo = self.start_ns - int(tolerance_ns)
        hi = self.end_ns + int(tolerance_ns)
        outside = (t < lo) | (t > hi)
        if np.any(outside):
            bad = int(t[np.flatnonzero(outside)[0]])
            raise SyncError(
                f"{self.name}: time {bad} ns is outside the trajectory's range "
                f"[{self.start_ns}, {self.end_ns}] ns by more than the tolerance of {int(tolerance_ns)} ns"
            )
        n = self.t_ns.size
        if n == 1:
            return np.zeros(t.shape, dtype=np.intp), np.zeros(t.shape, dtype=np.float64)
        idx = np.clip(np.searchsorted(self.t_ns, t, side="right") - 1, 0, n - 2)
        t0 = self.t_ns[idx]
        span = (self.t_ns[idx + 1] - t0).astype(np.float64)
        alpha = (t - t0).astype(np.float64) / span
        return idx, alpha

    def interpolate_many(
        self, t_ns: npt.ArrayLike, tolerance_ns: int = 0
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Rotations (N, 3, 3) and translations (N, 3) at each of ``t_ns`` (int64 array)."""
        t = np.asarray(t_ns)
        if not np.issubdtype(t.dtype, np.integer):
            raise SyncError(
                f"{self.name}: query times must be integer nanoseconds, got dtype {t.dtype}"
            )
        t = t.astype(np.int64).reshape(-1)
        idx, alpha = self._segment(t, tolerance_ns)
        if self.t_ns.size == 1:
            q = np.broadcast_to(self.quaternions[0], (t.size, 4))
            tr = np.broadcast_to(self.translations[0], (t.size, 3)).copy()
        else:
            q = slerp_quaternions(self.quaternions[idx], self.quaternions[idx + 1], alpha)
            a = alpha[:, None]
            tr = (1.0 - a) * self.translations[idx] + a * self.translations[idx + 1]
        return matrix_from_quaternion(q), tr

    def at(self, t_ns: int, tolerance_ns: int = 0) -> Transform:
        """The interpolated transform at one time (int nanoseconds)."""
        if isinstance(t_ns, float | np.floating):
            raise SyncError(
                f"{self.name}: query time must be integer nanoseconds, got float {t_ns}"
            )
        rot, tr = self.interpolate_many(np.array([int(t_ns)], dtype=np.int64), tolerance_ns)
        return Transform(rot[0], tr[0])

    def inverse(self) -> Trajectory:
        """The trajectory of the inverse transforms (``b_from_a`` over time)."""
        rot = matrix_from_quaternion(self.quaternions)
        rt = np.transpose(rot, (0, 2, 1))
        tr = -np.einsum("nij,nj->ni", rt, self.translations)
        q = quaternion_from_matrix(rt)
        return Trajectory(self.t_ns.copy(), q, tr, f"inverse of {self.name}")


# --------------------------------------------------------------------------------------------
# TransformTree
# --------------------------------------------------------------------------------------------


@dataclass
class _Edge:
    parent: str
    child: str
    static: Transform | None
    dynamic: Trajectory | None


class TransformTree:
    """Named frames joined by static and time-stamped edges, like ROS tf.

    Each frame has at most one parent; an edge stores ``parent_from_child``. ``lookup(target,
    source, t_ns)`` returns ``target_from_source`` by composing along the path through the
    nearest common ancestor, interpolating time-stamped edges at ``t_ns``.
    """

    def __init__(self) -> None:
        self._parent_edge: dict[str, _Edge] = {}
        self._frames: set[str] = set()

    @property
    def frames(self) -> frozenset[str]:
        return frozenset(self._frames)

    def _check_new_edge(self, parent: str, child: str) -> None:
        for name in (parent, child):
            if not isinstance(name, str) or not name:
                raise CalibrationError(
                    f"TransformTree: frame names must be non-empty strings, got {name!r}"
                )
        if parent == child:
            raise CalibrationError(f"TransformTree: cannot attach frame '{child}' to itself")
        if child in self._parent_edge:
            old = self._parent_edge[child].parent
            raise CalibrationError(
                f"TransformTree: frame '{child}' already has parent '{old}'; a frame has one parent"
            )
        node: str | None = parent
        while node is not None:
            if node == child:
                raise CalibrationError(
                    f"TransformTree: edge '{parent}' -> '{child}' would close a loop ('{parent}' descends from '{child}')"
                )
            edge = self._parent_edge.get(node)
            node = edge.parent if edge else None

    def add_static(self, parent: str, child: str, parent_from_child: Transform) -> None:
        """A fixed edge, e.g. ``tree.add_static("ego", "LIDAR_TOP", ego_from_lidar)``."""
        self._check_new_edge(parent, child)
        if not isinstance(parent_from_child, Transform):
            raise CalibrationError(f"TransformTree: edge '{parent}' -> '{child}' needs a Transform")
        self._parent_edge[child] = _Edge(parent, child, parent_from_child, None)
        self._frames.update((parent, child))

    def add_trajectory(self, parent: str, child: str, parent_from_child: Trajectory) -> None:
        """A time-stamped edge, e.g. ``tree.add_trajectory("world", "ego", world_from_ego_track)``."""
        self._check_new_edge(parent, child)
        if not isinstance(parent_from_child, Trajectory):
            raise CalibrationError(
                f"TransformTree: edge '{parent}' -> '{child}' needs a Trajectory"
            )
        self._parent_edge[child] = _Edge(parent, child, None, parent_from_child)
        self._frames.update((parent, child))

    def _chain_to_root(self, frame: str) -> list[_Edge]:
        chain: list[_Edge] = []
        node = frame
        while node in self._parent_edge:
            edge = self._parent_edge[node]
            chain.append(edge)
            node = edge.parent
        return chain

    def _root(self, frame: str) -> str:
        chain = self._chain_to_root(frame)
        return chain[-1].parent if chain else frame

    def _edge_transform(self, edge: _Edge, t_ns: int | None, tolerance_ns: int) -> Transform:
        if edge.dynamic is None:
            if edge.static is None:  # pragma: no cover - _Edge is only built with one of the two
                raise CalibrationError(
                    f"TransformTree: edge '{edge.parent}' -> '{edge.child}' is empty"
                )
            return edge.static
        if t_ns is None:
            raise SyncError(
                f"TransformTree: edge '{edge.parent}' -> '{edge.child}' changes over time; lookup needs t_ns"
            )
        try:
            return edge.dynamic.at(t_ns, tolerance_ns)
        except SyncError as exc:
            raise SyncError(
                f"TransformTree: edge '{edge.parent}' -> '{edge.child}': {exc}"
            ) from None

    def path(self, target: str, source: str) -> list[str]:
        """Frame names from source to target (inclusive)."""
        for name in (target, source):
            if name not in self._frames:
                known = ", ".join(sorted(self._frames)) or "none"
                raise CalibrationError(
                    f"TransformTree: unknown frame '{name}' (known frames: {known})"
                )
        up_source = [source] + [e.parent for e in self._chain_to_root(source)]
        up_target = [target] + [e.parent for e in self._chain_to_root(target)]
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            raise CalibrationError(
                f"TransformTree: frames '{source}' and '{target}' are not connected "
                f"(roots '{self._root(source)}' and '{self._root(target)}')"
            )
        down = up_target[: up_target.index(common)]
        return up_source[: up_source.index(common) + 1] + list(reversed(down))

    def lookup(
        self, target: str, source: str, t_ns: int | None = None, tolerance_ns: int = 0
    ) -> Transform:
        """``target_from_source`` at time ``t_ns`` (needed when a time-stamped edge is on the path).

        ``tolerance_ns`` is how far beyond a time-stamped edge's range a query may reach; there
        the edge extrapolates at its end segment's rate.
        """
        self.path(target, source)  # validates names and connectivity
        up_source = self._chain_to_root(source)
        up_target = self._chain_to_root(target)
        target_ancestors = {target} | {e.parent for e in up_target}
        # common_from_source
        common_from_source = Transform()
        node = source
        for edge in up_source:
            if node in target_ancestors:
                break
            common_from_source = self._edge_transform(edge, t_ns, tolerance_ns) @ common_from_source
            node = edge.parent
        common = node
        common_from_target = Transform()
        node = target
        for edge in up_target:
            if node == common:
                break
            common_from_target = self._edge_transform(edge, t_ns, tolerance_ns) @ common_from_target
            node = edge.parent
        return common_from_target.inverse() @ common_from_source

    def __contains__(self, frame: object) -> bool:
        return frame in self._frames

    def __repr__(self) -> str:
        edges = [
            f"{e.parent}->{e.child}{'(t)' if e.dynamic is not None else ''}"
            for e in self._parent_edge.values()
        ]
        return f"TransformTree({', '.join(edges)})"
