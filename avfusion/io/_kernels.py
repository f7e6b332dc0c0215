"""Numba kernels of the io layer and their typed wrappers.

Imports flow io → calibration → fusion → viz, so a reader cannot call ``fusion/kernels.py``;
the few array kernels a reader needs to decode what it reads live here instead (the PCD LZF
codec in ``pcd.py`` is the other one). Same rules as ``fusion/kernels.py``: ``@njit(cache=True)``
kernels are pure, take C-contiguous arrays and scalars, never write outside their outputs, and
are called only through the typed wrappers below, which validate dtype, shape and contiguity
and allocate the outputs. Each kernel has a plain numpy reference in ``tests/io``.

Kernels:

* ``_transform_far_kernel``: the multi-sweep step of ``NuScenesLog.aggregate_sweeps``
  (devkit ``from_file_multisweep``): drop the points with ``|x| < r`` and ``|y| < r`` and map
  the others through one 4×4 rigid transform in float64, writing float32 xyz, the record's
  extra columns (intensity, ring ...), the sweep's time lag and number straight into the
  aggregate, which the wrapper allocates for every input point (one pass over the data; the
  unused tail is cut off). Serial on purpose: the work is memory-bound (a few ns per point)
  and ``prange`` measured no faster on 2 cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError

__all__ = ["SweepStack", "filter_transform_sweeps"]


@numba.njit(cache=True)
def _transform_far_kernel(
    records: npt.NDArray[np.float32],
    min_distance: float,
    mat: npt.NDArray[np.float64],
    lag: float,
    sweep: int,
    out_xyz: npt.NDArray[np.float32],
    out_extra: npt.NDArray[np.float32],
    out_lag: npt.NDArray[np.float32],
    out_sweep: npt.NDArray[np.unsignedinteger[Any]],
) -> int:
    """Write the kept rows of ``records`` (N, D ≥ 3), transformed by ``mat`` (4, 4) in float64,
    to ``out_xyz`` (M, 3), their columns 3.. to ``out_extra`` (D − 3, M), ``lag`` to
    ``out_lag`` (M,) and ``sweep`` to ``out_sweep`` (M,), from index 0 on.

    Returns the number of rows written, or -1 (having stopped) when they do not fit.
    """
    n_extra = min(records.shape[1] - 3, out_extra.shape[0])
    n_out = min(out_xyz.shape[0], out_extra.shape[1], out_lag.shape[0], out_sweep.shape[0])
    m00, m01, m02, m03 = mat[0, 0], mat[0, 1], mat[0, 2], mat[0, 3]
    m10, m11, m12, m13 = mat[1, 0], mat[1, 1], mat[1, 2], mat[1, 3]
    m20, m21, m22, m23 = mat[2, 0], mat[2, 1], mat[2, 2], mat[2, 3]
    o = 0
    for i in range(records.shape[0]):
        x = np.float64(records[i, 0])
        y = np.float64(records[i, 1])
        if abs(x) < min_distance and abs(y) < min_distance:
            continue
        if o >= n_out:
            return -1
        z = np.float64(records[i, 2])
        out_xyz[o, 0] = m00 * x + m01 * y + m02 * z + m03
        out_xyz[o, 1] = m10 * x + m11 * y + m12 * z + m13
        out_xyz[o, 2] = m20 * x + m21 * y + m22 * z + m23
        for a in range(n_extra):
            out_extra[a, o] = records[i, 3 + a]
        out_lag[o] = lag
        out_sweep[o] = sweep
        o += 1
    return o


@dataclass(frozen=True, eq=False)
class SweepStack:
    """What ``filter_transform_sweeps`` returns: ``xyz`` (M, 3) float32 in the target frame,
    ``extra`` (D − 3, M) (the records' extra columns, one contiguous row each, in the records'
    dtype), per point ``lag`` (float32, the sweep's ``lag_s``) and ``sweep`` (sweep number,
    the smallest unsigned dtype that holds it), and ``counts`` (int64, points kept per sweep,
    in order; they add up to M)."""

    xyz: npt.NDArray[np.float32]
    extra: npt.NDArray[np.floating[Any]]
    lag: npt.NDArray[np.float32]
    sweep: npt.NDArray[np.unsignedinteger[Any]]
    counts: npt.NDArray[np.int64]


def filter_transform_sweeps(
    records: Sequence[npt.NDArray[np.floating[Any]]],
    target_from_sweep: npt.NDArray[np.float64],
    min_distance_m: float,
    lag_s: npt.ArrayLike | None = None,
) -> SweepStack:
    """Remove the close points of each sweep and map the rest into one target frame, concatenated.

    ``records[k]`` is sweep k as a C-contiguous (N_k, D) float32 or float64 array (one dtype
    and one D ≥ 3 for all sweeps) whose first three columns are x, y, z in that sweep's sensor
    frame; extra columns such as intensity and ring are carried along unchanged.
    ``target_from_sweep`` is (S, 4, 4), one rigid transform per sweep, applied in float64;
    ``lag_s`` (S,) is written per point (zeros when not given). A point is removed when
    ``|x| < r`` and ``|y| < r`` with ``r = min_distance_m`` rounded to the records' dtype, as
    numpy compares (NaN coordinates are never close).
    """
    n_sweeps = len(records)
    mats = np.ascontiguousarray(target_from_sweep, dtype=np.float64)
    if mats.ndim != 3 or mats.shape[1:] != (4, 4) or mats.shape[0] != n_sweeps:
        raise AVFusionError(
            f"filter_transform_sweeps: need one 4x4 matrix per sweep ({n_sweeps} sweeps), "
            f"got shape {mats.shape}"
        )
    lags = np.zeros(n_sweeps, np.float32) if lag_s is None else np.asarray(lag_s, np.float32)
    if lags.shape != (n_sweeps,):
        raise AVFusionError(
            f"filter_transform_sweeps: need one lag per sweep ({n_sweeps}), got shape {lags.shape}"
        )
    if not np.isfinite(min_distance_m):
        raise AVFusionError(
            f"filter_transform_sweeps: min_distance_m must be finite, got {min_distance_m}"
        )
    shapes = {(r.ndim, r.shape[-1] if r.ndim else 0, r.dtype) for r in records}
    if len(shapes) > 1 or any(
        nd != 2 or d < 3 or dt not in (np.float32, np.float64) for nd, d, dt in shapes
    ):
        raise AVFusionError(
            "filter_transform_sweeps: every sweep must be an (N, D) float32 or float64 array "
            f"with the same D >= 3 and dtype, got {[(r.shape, str(r.dtype)) for r in records]}"
        )
    for k, rec in enumerate(records):
        if not rec.flags.c_contiguous:
            raise AVFusionError(f"filter_transform_sweeps: sweep {k} is not C-contiguous")
    d, dtype = (records[0].shape[1], records[0].dtype) if records else (3, np.dtype(np.float32))
    r = float(dtype.type(min_distance_m))
    # One pass: outputs sized for every point; each sweep writes after the previous one.
    n_in = sum(rec.shape[0] for rec in records)
    xyz = np.empty((n_in, 3), dtype=np.float32)
    extra = np.empty((d - 3, n_in), dtype=dtype)
    lag = np.empty(n_in, dtype=np.float32)
    sweep = np.empty(n_in, dtype=np.min_scalar_type(max(n_sweeps - 1, 0)))
    counts = np.zeros(n_sweeps, dtype=np.int64)
    start = 0
    for k, rec in enumerate(records):
        if rec.shape[0]:
            written = _transform_far_kernel(
                rec, r, mats[k], lags[k], k, xyz[start:], extra[:, start:], lag[start:],
                sweep[start:],
            )  # fmt: skip
            if written < 0:  # cannot happen: the outputs hold every input point
                raise AVFusionError(f"filter_transform_sweeps: sweep {k} overflowed the output")
            counts[k] = written
            start += written
    if start < n_in:  # drop the unused tail (a copy only when it is large)
        keep = slice(0, start)
        xyz, extra, lag, sweep = xyz[keep], extra[:, keep], lag[keep], sweep[keep]
        if start < 0.75 * n_in:
            xyz, extra, lag, sweep = xyz.copy(), extra.copy(), lag.copy(), sweep.copy()
    return SweepStack(xyz, extra, lag, sweep, counts)
