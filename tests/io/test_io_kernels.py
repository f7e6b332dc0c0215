"""io-level numba kernels against their plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avfusion.calibration.transforms import matrix_from_quaternion
from avfusion.errors import AVFusionError
from avfusion.io._kernels import _transform_far_kernel, filter_transform_sweeps


def reference(
    records: list[np.ndarray], mats: np.ndarray, r: float, lags: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """numpy: remove_close in the records' precision, float64 4x4, float32 result."""
    xyz, extra, lag, sweep, counts = [], [], [], [], []
    for k, rec in enumerate(records):
        rr = rec.dtype.type(r)
        keep = ~((np.abs(rec[:, 0]) < rr) & (np.abs(rec[:, 1]) < rr))
        pts = rec[keep, :3].astype(np.float64)
        xyz.append((pts @ mats[k, :3, :3].T + mats[k, :3, 3]).astype(np.float32))
        extra.append(rec[keep, 3:])
        lag.append(np.full(int(keep.sum()), lags[k], np.float32))
        sweep.append(np.full(int(keep.sum()), k))
        counts.append(int(keep.sum()))
    return (
        np.concatenate(xyz).reshape(-1, 3),
        np.concatenate(extra).T,
        np.concatenate(lag),
        np.concatenate(sweep),
        np.array(counts),
    )


def random_rigid(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 4x4 rigid transforms with translations of hundreds of metres (world-like)."""
    m = np.zeros((n, 4, 4))
    m[:, :3, :3] = matrix_from_quaternion(rng.normal(size=(n, 4)))
    m[:, :3, 3] = rng.normal(0, 500, (n, 3))
    m[:, 3, 3] = 1.0
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims", [3, 5])
def test_filter_transform_matches_numpy(dtype: type, dims: int) -> None:
    rng = np.random.default_rng(dims)
    sizes = [500, 0, 1, 300, 2000]
    records = [rng.uniform(-3, 3, (n, dims)).astype(dtype) for n in sizes]
    records[3][:50, :2] = 0.5  # close to the sensor: removed
    records[3][50:60, 0] = np.nan  # NaN is never close: kept
    records[4][:, 0] = np.float32(1.0)  # exactly on the boundary |x| == r: kept
    mats = random_rigid(rng, len(records))
    lags = rng.uniform(0, 0.5, len(records)).astype(np.float32)
    got = filter_transform_sweeps(records, mats, 1.0, lags)
    xyz, extra, lag, sweep, counts = reference(records, mats, 1.0, lags)
    np.testing.assert_array_equal(got.counts, counts)
    np.testing.assert_allclose(got.xyz, xyz, rtol=1e-6, atol=1e-4)
    assert np.array_equal(np.isnan(got.xyz), np.isnan(xyz))
    np.testing.assert_array_equal(got.extra, extra)
    np.testing.assert_array_equal(got.lag, lag)
    np.testing.assert_array_equal(got.sweep, sweep)
    assert got.sweep.dtype == np.uint8 and got.xyz.dtype == np.float32
    assert got.extra.dtype == dtype and got.xyz.flags.c_contiguous


@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=6),
    st.floats(0.0, 3.0, allow_nan=False),
    st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_filter_transform_property(sizes: list[int], r: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    records = [rng.uniform(-2, 2, (n, 4)).astype(np.float32) for n in sizes]
    mats = random_rigid(rng, len(sizes))
    got = filter_transform_sweeps(records, mats, r, np.arange(len(sizes)))
    xyz, extra, lag, sweep, counts = reference(records, mats, r, np.arange(len(sizes)))
    np.testing.assert_array_equal(got.counts, counts)
    np.testing.assert_allclose(got.xyz, xyz, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(got.extra, extra)
    np.testing.assert_array_equal(got.sweep, sweep)
    np.testing.assert_array_equal(got.lag, lag)


def test_most_points_removed_returns_compact_arrays() -> None:
    rec = np.zeros((1000, 5), np.float32)
    rec[:10, 0] = 50.0
    got = filter_transform_sweeps([rec], np.eye(4)[None], 1.0)
    assert len(got.xyz) == 10 and got.xyz.base is None and got.extra.shape == (2, 10)
    np.testing.assert_array_equal(got.xyz[:, 0], 50.0)


def test_many_sweeps_widen_the_sweep_dtype() -> None:
    records = [np.full((1, 3), 5.0, np.float32)] * 300
    got = filter_transform_sweeps(records, np.tile(np.eye(4), (300, 1, 1)), 1.0)
    assert got.sweep.dtype == np.uint16 and got.sweep[-1] == 299


def test_kernel_never_writes_past_its_outputs() -> None:
    rec = np.full((10, 5), 7.0, np.float32)
    out = np.zeros((4, 3), np.float32)
    extra = np.zeros((2, 4), np.float32)
    lag = np.zeros(4, np.float32)
    sweep = np.zeros(4, np.uint8)
    assert _transform_far_kernel(rec, 1.0, np.eye(4), 0.5, 3, out, extra, lag, sweep) == -1
    np.testing.assert_array_equal(out, 7.0)  # the 4 that fit, and nothing else
    np.testing.assert_array_equal(sweep, 3)


def test_wrapper_validates_inputs() -> None:
    good = np.zeros((5, 5), np.float32)
    with pytest.raises(AVFusionError, match="one 4x4 matrix per sweep"):
        filter_transform_sweeps([good, good], np.eye(4)[None], 1.0)
    with pytest.raises(AVFusionError, match="one lag per sweep"):
        filter_transform_sweeps([good], np.eye(4)[None], 1.0, [0.0, 1.0])
    with pytest.raises(AVFusionError, match="min_distance_m must be finite"):
        filter_transform_sweeps([good], np.eye(4)[None], float("nan"))
    with pytest.raises(AVFusionError, match="same D >= 3 and dtype"):
        filter_transform_sweeps([good, good.astype(np.float64)], np.tile(np.eye(4), (2, 1, 1)), 1.0)
    with pytest.raises(AVFusionError, match="same D >= 3 and dtype"):
        filter_transform_sweeps([np.zeros((5, 2), np.float32)], np.eye(4)[None], 1.0)
    with pytest.raises(AVFusionError, match="same D >= 3 and dtype"):
        filter_transform_sweeps([np.zeros((5, 5), np.int32)], np.eye(4)[None], 1.0)
    with pytest.raises(AVFusionError, match="sweep 0 is not C-contiguous"):
        filter_transform_sweeps([np.zeros((5, 10), np.float32)[:, ::2]], np.eye(4)[None], 1.0)
    empty = filter_transform_sweeps([], np.zeros((0, 4, 4)), 1.0)
    assert empty.xyz.shape == (0, 3) and empty.counts.size == 0
