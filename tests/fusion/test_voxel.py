"""Voxel kernels (voxelisation, DDA ray casting, camera visibility, points in boxes) against plain
numpy / Python references, hostile-input properties, chunk independence and error paths."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from avfusion import AVFusionError, Boxes3D, CameraModel, ConfigError, Transform
from avfusion.fusion import voxel as V
from avfusion.fusion.voxel import (
    RAY_HIT,
    RAY_INVALID,
    RAY_MISSED,
    RAY_PASSED,
    GridSpec,
    camera_rays,
    camera_visibility,
    cast_rays,
    points_in_boxes,
    voxelize,
)

F64 = npt.NDArray[np.float64]

#: A small grid (8 x 6 x 5, 0.5 m) whose boundaries sit at awkward places, for fast tests.
SMALL = GridSpec((-2.1, -1.3, -0.7), (1.9, 1.7, 1.8), 0.5)


# --------------------------------------------------------------------------------------------
# References (plain numpy / Python)
# --------------------------------------------------------------------------------------------


def ref_index(p: F64, spec: GridSpec) -> tuple[int, int, int] | None:
    f = (np.asarray(p, dtype=np.float64) - spec.lo) * (1.0 / spec.voxel_size_m)
    if np.all(np.isfinite(f)) and np.all(f >= 0) and np.all(f < np.array(spec.shape)):
        return tuple(int(x) for x in np.floor(f))  # type: ignore[return-value]
    return None


def ref_walk(o: F64, d: F64, t_max: float, spec: GridSpec) -> list[tuple[int, int, int]]:
    """Exact voxel sequence of the segment o + t d, t in [0, t_max], clipped to the grid: all
    the places it crosses a voxel plane, sorted; each interval's midpoint names a voxel. The
    voxel holding the origin (by the grid's rule) comes first when the origin is inside, even
    if the segment only touches it (origin on a voxel face, as a sensor at y = 0 is)."""
    start = ref_index(o, spec)
    out: list[tuple[int, int, int]] = [] if start is None else [start]
    lo, hi, v = spec.lo, spec.hi, spec.voxel_size_m
    t0, t1 = 0.0, t_max
    for a in range(3):
        if d[a] == 0.0:
            if o[a] < lo[a] or o[a] > hi[a]:
                return out
        else:
            ta, tb = sorted(((lo[a] - o[a]) / d[a], (hi[a] - o[a]) / d[a]))
            t0, t1 = max(t0, ta), min(t1, tb)
    if not t1 > t0:
        return out
    ts = [t0, t1]
    for a in range(3):
        if d[a] != 0.0:
            planes = lo[a] + np.arange(spec.shape[a] + 1) * v
            t = (planes - o[a]) / d[a]
            ts.extend(t[(t > t0) & (t < t1)].tolist())
    ts = np.unique(ts)
    for ta, tb in itertools.pairwise(ts):
        p = o + 0.5 * (ta + tb) * d
        f = np.floor((p - lo) * (1.0 / v)).astype(int)
        ijk = tuple(int(x) for x in np.clip(f, 0, np.array(spec.shape) - 1))
        if not out or out[-1] != ijk:
            out.append(ijk)  # type: ignore[arg-type]
    return out


def ref_cast(points: F64, origins: F64, spec: GridSpec) -> tuple[npt.NDArray[Any], ...]:
    free = np.zeros(spec.shape, np.int64)
    hits = np.zeros(spec.shape, np.int64)
    status = np.zeros(len(points), np.int8)
    for i, (e, o) in enumerate(zip(points.astype(np.float64), origins, strict=True)):
        end = ref_index(e, spec)
        path = ref_walk(o, e - o, 1.0, spec)
        if end is not None:
            if not path or path[-1] != end:  # the end point on a voxel face: its own voxel
                path.append(end)
            for ijk in path[:-1]:
                free[ijk] += 1
            hits[end] += 1
            status[i] = RAY_HIT
        elif path:
            for ijk in path:
                free[ijk] += 1
            status[i] = RAY_PASSED
        else:
            status[i] = RAY_MISSED
    return free, hits, status


def ref_visibility(origins: F64, dirs: F64, occupied: npt.NDArray[Any], spec: GridSpec) -> F64:
    seen = np.zeros(spec.shape, np.uint8)
    for o, d in zip(origins, dirs, strict=True):
        for ijk in ref_walk(o, d, 1e6, spec):
            seen[ijk] = 1
            if occupied[ijk]:
                break
    return seen


def ref_voxelize(
    points: F64, labels: npt.NDArray[Any], spec: GridSpec, n_classes: int, priority: list[int]
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    idx = spec.index_of(points)
    ok = idx[:, 0] >= 0
    lin = np.ravel_multi_index(tuple(idx[ok].T), spec.shape)
    counts = np.bincount(lin, minlength=spec.n_voxels).reshape(spec.shape)
    hist = np.zeros((spec.n_voxels, n_classes), np.int64)
    np.add.at(hist, (lin, labels[ok].astype(np.int64)), 1)
    ordered = hist[:, priority]  # most preferred class first: argmax takes the first maximum
    sem = np.asarray(priority)[np.argmax(ordered, axis=1)]
    sem[hist.sum(axis=1) == 0] = n_classes
    return counts, sem.reshape(spec.shape).astype(np.uint8)


def ref_points_in_boxes(
    points: F64, centers: F64, rot: F64, half: F64
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Same arithmetic order as the kernel: local = R^T (p - c), |local| <= half."""
    p = points.astype(np.float64)
    mask = np.zeros((len(p), len(centers)), bool)
    for b in range(len(centers)):
        r = rot[b].T
        with np.errstate(invalid="ignore", over="ignore"):
            v = p - centers[b]
            loc = [r[k, 0] * v[:, 0] + r[k, 1] * v[:, 1] + r[k, 2] * v[:, 2] for k in range(3)]
            mask[:, b] = (
                (np.abs(loc[0]) <= half[b, 0])
                & (np.abs(loc[1]) <= half[b, 1])
                & (np.abs(loc[2]) <= half[b, 2])
            )
    if not len(centers):
        return np.full(len(p), -1), mask
    first = np.where(mask.any(axis=1), np.argmax(mask, axis=1), -1)
    return first, mask


def random_rays(rng: np.random.Generator, n: int, spec: GridSpec) -> tuple[F64, F64]:
    """Origins and end points inside, near and far outside the grid, some axis-aligned."""
    lo, hi = spec.lo, spec.hi
    ext = hi - lo
    o = rng.uniform(lo - 0.6 * ext, hi + 0.6 * ext, (n, 3))
    o[: n // 2] = rng.uniform(lo, hi, (n // 2, 3))
    e = rng.uniform(lo - 0.3 * ext, hi + 0.3 * ext, (n, 3))
    k = n // 8
    e[:k, 1:] = o[:k, 1:]  # along x
    e[k : 2 * k, :2] = o[k : 2 * k, :2]  # along z
    e[2 * k : 2 * k + 3] = o[2 * k : 2 * k + 3]  # zero length
    return o, e


# --------------------------------------------------------------------------------------------
# GridSpec
# --------------------------------------------------------------------------------------------


def test_occ3d_grid() -> None:
    spec = GridSpec.occ3d()
    assert spec.shape == (200, 200, 16)
    assert spec == GridSpec() == GridSpec.from_range([-40, -40, -1, 40, 40, 5.4], 0.4)
    np.testing.assert_allclose(spec.hi, [40, 40, 5.4], atol=1e-12)
    pts = np.array([[-40, -40, -1], [39.99, 39.99, 5.39], [40, 0, 0], [0, 0, np.nan], [0.0, 0, 0]])
    np.testing.assert_array_equal(
        spec.index_of(pts), [[0, 0, 0], [199, 199, 15], [-1, -1, -1], [-1, -1, -1], [100, 100, 2]]
    )
    np.testing.assert_allclose(spec.centers([[0, 0, 0]]), [[-39.8, -39.8, -0.8]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"voxel_size_m": 0.0}, "voxel_size_m must be finite and > 0"),
        ({"voxel_size_m": float("nan")}, "voxel_size_m must be finite"),
        ({"voxel_size_m": "0.4"}, "voxel_size_m must be a number"),
        ({"range_max_m": (40, 40, -2)}, "range_max_m z = -2.0 must be greater"),
        ({"range_max_m": (40, 40, 5.5)}, "z extent 6.5 m is not a whole number of 0.4 m voxels"),
        ({"range_min_m": (0, 0)}, "range_min_m must be three numbers"),
        ({"range_min_m": (0, np.inf, 0)}, "range_min_m must be finite"),
        ({"range_min_m": "abc"}, "range_min_m must be three numbers"),
        ({"voxel_size_m": 1e-4}, "voxels, more than the"),
    ],
)
def test_grid_spec_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GridSpec(**kwargs)


def test_grid_spec_from_range_error() -> None:
    with pytest.raises(ConfigError, match="point_cloud_range must have 6 values"):
        GridSpec.from_range([0, 0, 0, 1, 1], 0.5)
    with pytest.raises(AVFusionError, match=r"points must be \(N, 3\)"):
        GridSpec().index_of(np.zeros((3, 2)))


# --------------------------------------------------------------------------------------------
# Voxelisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int64, np.int16])
def test_voxelize_matches_reference(dtype: type, label_dtype: type) -> None:
    rng = np.random.default_rng(3)
    spec = GridSpec.occ3d()
    n = 50_000
    pts = rng.normal(0, 20, (n, 3)) * [1, 1, 0.1]
    pts[:500] = rng.uniform(-1, 1, (500, 3)) * 0.2  # a dense clump: many mixed voxels
    pts[500:510] = np.nan
    pts[510:520, 1] = np.inf
    pts = pts.astype(dtype)
    labels = rng.integers(0, 17, n).astype(label_dtype)
    labels[:500] = rng.integers(0, 3, 500)
    out = voxelize(pts, spec, labels, point_voxel=True)
    counts, sem = ref_voxelize(pts, labels, spec, 17, list(range(17)))
    np.testing.assert_array_equal(out.counts, counts)
    np.testing.assert_array_equal(out.semantics, sem)
    np.testing.assert_array_equal(out.point_voxel, _expected_point_voxel(pts, spec))
    assert out.n_nonfinite == 20
    assert out.n_inside == int(counts.sum()) == n - out.n_outside - 20
    assert out.counts.dtype == np.int32 and out.semantics is not None
    assert out.semantics.dtype == np.uint8


def test_voxelize_tie_rules() -> None:
    spec = SMALL
    p = np.array([[0.1, 0.1, 0.1]] * 4 + [[-2.0, -1.2, -0.6]] * 3)
    labels = np.array([3, 1, 3, 1, 5, 2, 2])
    out = voxelize(p, spec, labels, num_classes=6)
    i, j = spec.index_of(p[[0, 4]])
    assert out.semantics is not None
    assert out.semantics[tuple(i)] == 1  # tie 3 vs 1: lowest class id
    assert out.semantics[tuple(j)] == 2  # plain majority
    assert np.count_nonzero(out.semantics != 6) == 2  # empty voxels: num_classes
    priority = [3, 0, 1, 2, 4, 5]
    out2 = voxelize(p, spec, labels, num_classes=6, tie_priority=priority, empty_label=255)
    assert out2.semantics is not None
    assert out2.semantics[tuple(i)] == 3
    assert out2.semantics[tuple(j)] == 2
    assert np.count_nonzero(out2.semantics == 255) == spec.n_voxels - 2
    rng = np.random.default_rng(0)
    q = rng.uniform(spec.lo, spec.hi, (3000, 3))
    lab = rng.integers(0, 6, 3000)
    out3 = voxelize(q, spec, lab, num_classes=6, tie_priority=priority)
    _, sem = ref_voxelize(q, lab, spec, 6, priority)
    np.testing.assert_array_equal(out3.semantics, sem)


def test_voxelize_unlabelled_points_count_but_do_not_vote() -> None:
    """Reference: counts of all points and the majority of the labelled ones only (two
    calls), against one call with ``unlabelled``."""
    rng = np.random.default_rng(11)
    pts = rng.uniform(SMALL.lo - 0.3, SMALL.hi + 0.3, (5000, 3))
    labels = rng.integers(0, 6, 5000).astype(np.uint8)
    labels[rng.random(5000) < 0.6] = 255
    labels[:30] = 255  # some voxels with unlabelled points only
    pts[:30] = pts[0]
    one = voxelize(pts, SMALL, labels, num_classes=6, unlabelled=255)
    everything = voxelize(pts, SMALL)
    has = labels != 255
    part = voxelize(pts[has], SMALL, labels[has], num_classes=6)
    np.testing.assert_array_equal(one.counts, everything.counts)
    np.testing.assert_array_equal(one.semantics, part.semantics)
    assert one.semantics is not None
    assert np.any((one.counts > 0) & (one.semantics == 6))  # points, none labelled
    with pytest.raises(
        AVFusionError,
        match=r"1 points inside the grid have a label outside \[0, 6\) \(values \[9\]\)",
    ):
        bad = labels.copy()
        bad[0] = 9
        voxelize(pts, SMALL, bad, num_classes=6, unlabelled=255)
    with pytest.raises(ConfigError, match=r"unlabelled must be an integer outside \[0, 6\)"):
        voxelize(pts, SMALL, labels, num_classes=6, unlabelled=3)
    # any integer dtype: -1 as the unlabelled value
    lab64 = np.where(labels == 255, -1, labels.astype(np.int64))
    np.testing.assert_array_equal(
        voxelize(pts, SMALL, lab64, num_classes=6, unlabelled=-1).semantics, part.semantics
    )


def test_voxelize_no_labels_and_empty() -> None:
    out = voxelize(np.zeros((0, 3)), SMALL, np.zeros(0, np.uint8))
    assert out.counts.sum() == 0 and out.n_points == 0
    assert out.semantics is not None and np.all(out.semantics == 17)
    out = voxelize(np.zeros((5, 3), np.float32))
    assert out.semantics is None and out.counts.sum() == 5 and out.occupied.sum() == 1


@pytest.mark.parametrize("chunks", [1, 2, 3, 7])
def test_voxelize_independent_of_chunks(chunks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    pts = rng.uniform(SMALL.lo - 0.5, SMALL.hi + 0.5, (4000, 3))
    labels = rng.integers(0, 4, 4000)
    base = voxelize(pts, SMALL, labels, num_classes=4, point_voxel=True)
    monkeypatch.setattr(V, "_n_chunks", lambda n, b: chunks)  # the compact histogram
    monkeypatch.setattr(V, "_dense_copies", lambda n, v: chunks)  # the dense counters
    out = voxelize(pts, SMALL, labels, num_classes=4, point_voxel=True)
    np.testing.assert_array_equal(out.counts, base.counts)
    np.testing.assert_array_equal(out.semantics, base.semantics)
    np.testing.assert_array_equal(out.point_voxel, base.point_voxel)


def _expected_point_voxel(pts: npt.NDArray[Any], spec: GridSpec) -> npt.NDArray[np.int64]:
    """Each point's linear voxel from ``GridSpec.index_of``: -1 outside, -2 not finite."""
    idx = spec.index_of(pts)
    out = np.where(
        idx[:, 0] >= 0, np.ravel_multi_index(tuple(np.maximum(idx, 0).T), spec.shape), -1
    )
    out[~np.isfinite(pts.astype(np.float64)).all(axis=1)] = -2
    return out


def _clumped_cloud(n_classes: int) -> tuple[F64, npt.NDArray[np.int64]]:
    """Clumps of 2-3k points in single voxels of SMALL (counters wrap past 255, several
    times for some classes), scattered points, points outside and not finite."""
    rng = np.random.default_rng(11)
    clump = np.concatenate(
        [rng.uniform(-0.2, -0.05, (3000, 3)), rng.uniform(0.6, 0.9, (2000, 3)) * [1, 1, 0.5]]
    )
    pts = np.concatenate([clump, rng.uniform(SMALL.lo - 1, SMALL.hi + 1, (3000, 3))])
    pts[-5:] = [[np.nan, 0, 0], [0, np.inf, 0], [1e30, 0, 0], [0, 0, -np.inf], [-1e9, 1, 1]]
    labels = rng.integers(0, n_classes, len(pts))
    labels[:1500] = 1  # one class alone passes 256 several times in the first clump
    labels[1500:2100] = n_classes - 1
    return pts, labels


@pytest.mark.parametrize("n_classes", [3, 17, 23, 24, 40])
def test_voxelize_dense_and_compact_counters_match_reference(
    n_classes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to 23 classes go to the dense uint8 counters (wrapping counters spill in 256s),
    more classes and oversized grids to the compact histogram: both equal the reference."""
    pts, labels = _clumped_cloud(n_classes)
    counts, sem = ref_voxelize(pts, labels, SMALL, n_classes, list(range(n_classes)))
    assert counts.max() > 1500
    dense = voxelize(pts, SMALL, labels, num_classes=n_classes, point_voxel=True)
    monkeypatch.setattr(V, "_DENSE_MAX_BYTES", 0)
    compact = voxelize(pts, SMALL, labels, num_classes=n_classes, point_voxel=True)
    for out in (dense, compact):
        np.testing.assert_array_equal(out.counts, counts)
        np.testing.assert_array_equal(out.semantics, sem)
        assert (out.n_inside, out.n_nonfinite) == (int(counts.sum()), 3)
    np.testing.assert_array_equal(dense.point_voxel, compact.point_voxel)
    lean = voxelize(pts, SMALL, labels, num_classes=n_classes)  # compact, no point_voxel
    assert lean.point_voxel is None
    np.testing.assert_array_equal(lean.counts, dense.counts)
    np.testing.assert_array_equal(lean.semantics, dense.semantics)


@pytest.mark.parametrize(("copies", "slabs"), [(1, 1), (2, 1), (1, 3), (3, 2), (5, 7), (2, 40)])
def test_dense_kernel_independent_of_copies_and_slabs_and_refuses_bad_arrays(
    copies: int, slabs: int
) -> None:
    """Any number of counter copies (chunks of points) and of finish slabs (more than the
    grid's 8 x-indices: empty slabs) gives the same arrays, wrapping counters included; the
    scratch is left all zeros; arrays that do not fit are refused before anything is
    written."""
    from avfusion.fusion.kernels import DENSE_VOXEL_BYTES, voxelize_dense_kernel

    pts, labels = _clumped_cloud(5)
    lab = labels.astype(np.uint8)
    touched = np.zeros(SMALL.n_voxels, np.uint8)

    def run(
        n_copies: int, n_slabs: int, spill_len: int, with_pv: bool = True, n_touched: int = 0
    ) -> tuple[Any, ...]:
        counters = np.zeros((n_copies, SMALL.n_voxels * DENSE_VOXEL_BYTES), np.uint8)
        counts = np.full(SMALL.shape, -9, np.int32)
        pv = np.full(len(pts) if with_pv else 0, -9, np.int32)
        sem = np.full(SMALL.shape, 99, np.uint8)
        flags = touched if not n_touched else np.zeros(n_touched, np.uint8)
        status = voxelize_dense_kernel(
            pts, lab, SMALL.lo, SMALL.inv_voxel, np.arange(5), 5, n_slabs, counters, flags,
            np.empty((n_copies, spill_len), np.int64), counts, pv, sem,
        )  # fmt: skip
        # the scratch is left all zeros for the next call (no clearing pass needed)
        assert not counters.any() and not touched.any()
        return status, counts, pv, sem

    status, counts, pv, sem = run(copies, slabs, len(pts) // 256 + 1)
    ref_counts, ref_sem = ref_voxelize(pts, labels, SMALL, 5, list(range(5)))
    assert ref_counts.max() > 3 * 256  # counters wrap, some several times
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_array_equal(sem, ref_sem)
    assert status == (int(ref_counts.sum()), 3, 0)
    np.testing.assert_array_equal(pv, _expected_point_voxel(pts, SMALL))
    # without per-point voxels: the same grids
    status2, counts2, _, sem2 = run(copies, slabs, len(pts) // 256 + 1, with_pv=False)
    assert status2 == status
    np.testing.assert_array_equal(counts2, ref_counts)
    np.testing.assert_array_equal(sem2, ref_sem)
    for bad in (
        {"spill_len": len(pts) // 256},  # spill lists shorter than N // 256 + 1
        {"n_slabs": 0},
        {"n_copies": 0},
        {"n_copies": 65},  # more copies than 16-bit lanes can add up
        {"n_touched": SMALL.n_voxels - 1},  # flags for fewer voxels than the grid has
    ):
        args = {"n_copies": copies, "n_slabs": slabs, "spill_len": len(pts), **bad}
        status, counts, pv, sem = run(**args)
        assert status == (-1, -1, -1)
        assert np.all(counts == -9) and np.all(pv == -9) and np.all(sem == 99)


def test_dense_scratch_is_dropped_after_a_failed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-thread counter block must be all zeros on entry: a call that stops half way
    (here a simulated MemoryError after counting) must not leave its counts to the next."""
    pts, labels = _clumped_cloud(5)
    good = voxelize(pts, SMALL, labels, num_classes=5)
    real = V.voxelize_dense_kernel

    def fails_half_way(*args: Any) -> tuple[int, int, int]:
        args[7][:] = 3  # counters written, never read back
        raise MemoryError("simulated")

    monkeypatch.setattr(V, "voxelize_dense_kernel", fails_half_way)
    with pytest.raises(MemoryError):
        voxelize(pts, SMALL, labels, num_classes=5)
    monkeypatch.setattr(V, "voxelize_dense_kernel", real)
    again = voxelize(pts, SMALL, labels, num_classes=5)
    np.testing.assert_array_equal(again.counts, good.counts)
    np.testing.assert_array_equal(again.semantics, good.semantics)


def test_voxelize_errors() -> None:
    pts = np.zeros((3, 3))
    with pytest.raises(AVFusionError, match=r"points must be an \(N, 3\) array"):
        voxelize(np.zeros((3, 2)))
    with pytest.raises(AVFusionError, match="points must be float32 or float64, got int64"):
        voxelize(np.zeros((3, 3), np.int64))
    with pytest.raises(AVFusionError, match=r"labels must have shape \(3,\)"):
        voxelize(pts, labels=np.zeros(2, np.uint8))
    with pytest.raises(AVFusionError, match="labels must be integer class ids"):
        voxelize(pts, labels=np.zeros(3))
    with pytest.raises(
        AVFusionError,
        match=r"2 points inside the grid have a label outside \[0, 17\) \(values \[-1, 40\]\)",
    ):
        voxelize(pts, labels=np.array([0, -1, 40]))
    with pytest.raises(ConfigError, match=r"num_classes must be an integer in \[1, 255\]"):
        voxelize(pts, num_classes=300)
    with pytest.raises(ConfigError, match=r"empty_label must be an integer in \[0, 255\]"):
        voxelize(pts, empty_label=-1)
    with pytest.raises(ConfigError, match=r"tie_priority must list each class id 0\.\.2 once"):
        voxelize(pts, labels=np.zeros(3, int), num_classes=3, tie_priority=[0, 0, 1])
    with pytest.raises(ConfigError, match="spec must be a GridSpec"):
        voxelize(pts, spec=(1, 2))  # type: ignore[arg-type]
    # labels outside the grid do not matter
    out = voxelize(np.array([[0.0, 0, 0], [1e3, 0, 0]]), labels=np.array([2, 99]))
    assert out.n_outside == 1


HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -2.1, 1.9, -1.3, 1.7, -0.7, 1.8, -1.6, 0.4, 1e30, -1e30, 1e308, -1e308]),
    st.floats(-3.0, 3.0),
)


def hostile_points(max_n: int = 40) -> st.SearchStrategy[npt.NDArray[np.float64]]:
    return hnp.arrays(np.float64, st.tuples(st.integers(0, max_n), st.just(3)), elements=HOSTILE)


@settings(max_examples=150, deadline=None)
@given(pts=hostile_points(), f32=st.booleans(), seed=st.integers(0, 2**16))
def test_voxelize_hostile_inputs(pts: F64, f32: bool, seed: int) -> None:
    with np.errstate(over="ignore"):
        p = pts.astype(np.float32) if f32 else pts
    labels = np.random.default_rng(seed).integers(0, 5, len(p))
    out = voxelize(p, SMALL, labels, num_classes=5, point_voxel=True)
    idx = SMALL.index_of(p)
    inside = idx[:, 0] >= 0
    finite = np.isfinite(p.astype(np.float64)).all(axis=1)
    assert out.n_inside == int(inside.sum()) == int(out.counts.sum())
    assert out.n_nonfinite == int((~finite).sum())
    assert out.n_inside + out.n_outside + out.n_nonfinite == len(p)
    assert np.all((out.point_voxel >= -2) & (out.point_voxel < SMALL.n_voxels))
    assert np.array_equal(out.point_voxel >= 0, inside)
    counts, sem = ref_voxelize(p, labels, SMALL, 5, list(range(5)))
    np.testing.assert_array_equal(out.counts, counts)
    np.testing.assert_array_equal(out.semantics, sem)


# --------------------------------------------------------------------------------------------
# Ray casting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cast_rays_matches_exact_reference(dtype: type) -> None:
    rng = np.random.default_rng(11)
    spec = SMALL
    o, e = random_rays(rng, 600, spec)
    e = e.astype(dtype)
    out = cast_rays(e, o, spec)
    free, hits, status = ref_cast(e, o, spec)
    np.testing.assert_array_equal(out.ray_status, status)
    np.testing.assert_array_equal(out.hits, hits)
    np.testing.assert_array_equal(out.free, free)
    assert out.n_hit == int(hits.sum()) == int((spec.index_of(e)[:, 0] >= 0).sum())
    assert out.n_hit + out.n_passed + out.n_missed + out.n_invalid == 600


def test_cast_rays_single_rays_exact_path() -> None:
    """Ray by ray: the voxels written are exactly the reference's ordered walk."""
    rng = np.random.default_rng(12)
    spec = SMALL
    o, e = random_rays(rng, 150, spec)
    for oi, ei in zip(o, e, strict=True):
        out = cast_rays(ei[None], oi, spec)
        path = ref_walk(oi, ei - oi, 1.0, spec)
        end = ref_index(ei, spec)
        if end is not None and (not path or path[-1] != end):
            path.append(end)
        touched = {tuple(int(x) for x in ijk) for ijk in np.argwhere(out.free + out.hits > 0)}
        assert touched == set(path)
        assert len(path) == len(set(path))  # each voxel once
        for a, b in itertools.pairwise(path):  # 6-connected
            assert sum(abs(x - y) for x, y in zip(a, b, strict=True)) == 1


def test_cast_rays_occ3d_grid_and_hits_match_voxelize() -> None:
    rng = np.random.default_rng(13)
    spec = GridSpec.occ3d()
    n = 3000
    az = rng.uniform(-np.pi, np.pi, n)
    el = rng.uniform(-0.4, 0.2, n)
    r = rng.uniform(1, 70, n)
    origin = np.array([0.94, 0.0, 1.84])
    pts = origin + np.c_[r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)]
    pts = pts.astype(np.float32)
    out = cast_rays(pts, origin, spec)
    free, hits, status = ref_cast(pts, np.broadcast_to(origin, pts.shape), spec)
    np.testing.assert_array_equal(out.free, free)
    np.testing.assert_array_equal(out.hits, hits)
    np.testing.assert_array_equal(out.ray_status, status)
    np.testing.assert_array_equal(out.hits, voxelize(pts, spec).counts)
    assert out.observed.sum() == np.count_nonzero(free + hits)


def test_cast_rays_special_cases() -> None:
    spec = SMALL
    inside = np.array([0.1, 0.1, 0.1])
    far = np.array([50.0, 0.1, 0.1])
    cases = np.array([inside, inside, far, far, [np.nan, 0, 0], [0.2, 0.3, 0.4]])
    origins = np.array([inside, far, inside, [60.0, 0.1, 0.1], [0, 0, 0], [np.inf, 0, 0]])
    out = cast_rays(cases, origins, spec)
    assert out.ray_status.tolist() == [
        RAY_HIT,
        RAY_HIT,
        RAY_PASSED,
        RAY_MISSED,
        RAY_INVALID,
        RAY_INVALID,
    ]
    # origin == end: one hit, no free; origin outside: enters at x = hi; along +x to the border
    ijk = tuple(spec.index_of(inside[None])[0])
    assert out.hits[ijk] == 2 and out.hits.sum() == 2
    row = out.free[:, ijk[1], ijk[2]]
    assert row[ijk[0]] == 1  # the ray from inside to far passes its origin voxel
    assert np.all(row[ijk[0] + 1 :] == 2) and np.all(row[: ijk[0]] == 0)
    assert out.free.sum() == row.sum()


@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_cast_rays_independent_of_chunks(chunks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(14)
    o, e = random_rays(rng, 500, SMALL)
    base = cast_rays(e, o, SMALL)
    monkeypatch.setattr(V, "_n_chunks", lambda n, b: chunks)  # the compact histogram
    monkeypatch.setattr(V, "_dense_copies", lambda n, v: chunks)  # the dense counters
    out = cast_rays(e, o, SMALL)
    np.testing.assert_array_equal(out.free, base.free)
    np.testing.assert_array_equal(out.hits, base.hits)
    np.testing.assert_array_equal(out.ray_status, base.ray_status)


@settings(max_examples=150, deadline=None)
@given(
    pts=hostile_points(30),
    origin=hnp.arrays(np.float64, (3,), elements=HOSTILE),
    per_point=st.booleans(),
    f32=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cast_rays_hostile_inputs(
    pts: F64, origin: F64, per_point: bool, f32: bool, seed: int
) -> None:
    n = len(pts)
    if per_point:
        origins = np.random.default_rng(seed).permutation(np.vstack([pts, origin[None]]))[:n]
    else:
        origins = np.broadcast_to(origin, (n, 3))
    with np.errstate(over="ignore"):
        p = pts.astype(np.float32) if f32 else pts
    out = cast_rays(p, origins if per_point else origin, SMALL)
    p64 = p.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        valid = np.isfinite(origins).all(axis=1) & np.isfinite(p64 - origins).all(axis=1)
    ends_in = SMALL.index_of(p64)[:, 0] >= 0
    assert out.n_hit == int((valid & ends_in).sum()) == int(out.hits.sum())
    assert out.n_invalid == int((~valid).sum())
    assert out.free.min() >= 0 and out.hits.min() >= 0
    assert out.free.sum() <= n * sum(SMALL.shape)
    assert set(np.unique(out.ray_status)) <= {RAY_INVALID, RAY_MISSED, RAY_PASSED, RAY_HIT}
    np.testing.assert_array_equal(out.hits, voxelize(p[valid], SMALL).counts)


def test_cast_rays_errors() -> None:
    pts = np.zeros((4, 3))
    with pytest.raises(AVFusionError, match=r"origins must be \(3,\) or \(4, 3\)"):
        cast_rays(pts, np.zeros((2, 3)))
    with pytest.raises(AVFusionError, match="origins must be real numbers"):
        cast_rays(pts, np.array(["a", "b", "c"]))
    with pytest.raises(AVFusionError, match=r"points must be an \(N, 3\) array"):
        cast_rays(np.zeros(3), np.zeros(3))


# --------------------------------------------------------------------------------------------
# Camera visibility
# --------------------------------------------------------------------------------------------


def _small_camera() -> CameraModel:
    return CameraModel.pinhole(12.0, 12.0, 11.5, 8.5, 24, 18)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    yaw=st.floats(-np.pi, np.pi),
    pitch=st.floats(-0.6, 0.6),
    outside=st.booleans(),
    density=st.floats(0.0, 0.4),
)
def test_camera_visibility_matches_reference(
    seed: int, yaw: float, pitch: float, outside: bool, density: float
) -> None:
    rng = np.random.default_rng(seed)
    spec = SMALL
    occ = rng.random(spec.shape) < density
    pos = rng.uniform(spec.lo - 3, spec.lo - 0.5) if outside else rng.uniform(spec.lo, spec.hi)
    # camera frame (x right, y down, z forward) -> grid (z forward = +x after yaw 0)
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    look = Transform.from_euler_zyx(yaw, pitch, 0.0)
    grid_from_cam = Transform(look.rotation @ base, pos)
    cam = _small_camera()
    out = camera_visibility(occ, [(cam, grid_from_cam)], spec, stride_px=1)
    o, d = camera_rays(cam, grid_from_cam, 1)
    expect = ref_visibility(np.broadcast_to(o, d.shape), d, occ, spec)
    np.testing.assert_array_equal(out.mask, expect)
    assert out.n_rays == 24 * 18 == out.n_blocked + out.n_through + out.n_missed + out.n_invalid
    assert out.mask.dtype == np.uint8 and set(np.unique(out.mask)) <= {0, 1}


def test_camera_visibility_occlusion_and_strides() -> None:
    spec = GridSpec.occ3d()
    occ = np.zeros(spec.shape, bool)
    occ[110, :, :] = True  # a wall across x = 4.0 .. 4.4 m
    cam = CameraModel.pinhole(1266.4, 1266.4, 816.3, 491.5, 1600, 900)
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    grid_from_cam = Transform(base, np.array([1.5, 0.0, 1.5]))
    out = camera_visibility(occ, [(cam, grid_from_cam)], spec)
    assert out.strides_px == (4,)  # 0.5 voxel * 0.4 m * 1266 px / ~57 m
    assert out.mask[111:].sum() == 0  # nothing behind the wall
    assert out.mask[110].sum() > 0 and out.mask[105, 100, 5] == 1
    assert out.n_blocked > 0
    # both cameras' masks are ORed; a camera behind the wall sees the far side
    back = Transform(base, np.array([20.0, 0.0, 1.5]))
    both = camera_visibility(occ, [(cam, grid_from_cam), (cam, back)], spec, stride_px=8)
    assert both.mask[111:].sum() > 0 and both.strides_px == (8, 8)
    none = camera_visibility(occ, [], spec)
    assert none.mask.sum() == 0 and none.n_rays == 0


def test_camera_rays_block_centres() -> None:
    cam = _small_camera()
    o, d = camera_rays(cam, Transform.identity(), 4)
    assert d.shape == (6 * 4, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    uv, _, _ = cam.project(d)
    np.testing.assert_allclose(uv[0], [1.5, 1.5], atol=1e-9)  # centre of the first 4x4 block
    np.testing.assert_allclose(o, 0.0)
    _, d1 = camera_rays(cam, Transform.identity(), 1)
    assert d1.shape == (24 * 18, 3)


def test_camera_visibility_errors() -> None:
    cam = _small_camera()
    occ = np.zeros(SMALL.shape, bool)
    with pytest.raises(AVFusionError, match="occupied must have the grid's shape"):
        camera_visibility(np.zeros((2, 2, 2)), [(cam, Transform.identity())], SMALL)
    with pytest.raises(ConfigError, match="stride_px must be an integer >= 1"):
        camera_visibility(occ, [(cam, Transform.identity())], SMALL, stride_px=0)
    with pytest.raises(AVFusionError, match=r"camera 0 must be a \(CameraModel, Transform\) pair"):
        camera_visibility(occ, [cam], SMALL)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="ray_spacing_voxels must be finite and > 0"):
        camera_visibility(occ, [], SMALL, ray_spacing_voxels=0.0)


# --------------------------------------------------------------------------------------------
# Points in boxes
# --------------------------------------------------------------------------------------------


def random_boxes(rng: np.random.Generator, n: int, spread: float = 20.0) -> Boxes3D:
    q = rng.normal(size=(n, 4))  # full 3D rotations, not only yaw
    return Boxes3D(
        rng.uniform(-spread, spread, (n, 3)) * [1, 1, 0.1],
        rng.uniform(0.0, 6.0, (n, 3)),
        q,
        np.full(n, "car"),
        np.arange(n).astype(str),
        "ego",
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_points_in_boxes_matches_reference(dtype: type) -> None:
    rng = np.random.default_rng(21)
    boxes = random_boxes(rng, 60)
    pts = np.vstack(
        [rng.uniform(-25, 25, (20_000, 3)) * [1, 1, 0.15], boxes.corners().reshape(-1, 3)]
    )
    pts = pts.astype(dtype)
    out = points_in_boxes(pts, boxes, return_mask=True)
    first, mask = ref_points_in_boxes(pts, boxes.center, boxes.rotation_matrices(), boxes.size / 2)
    np.testing.assert_array_equal(out.box_index, first)
    np.testing.assert_array_equal(out.mask, mask)
    np.testing.assert_array_equal(out.counts, mask.sum(axis=0))
    assert (out.box_index >= 0).sum() > 1000 and (mask.sum(axis=1) > 1).sum() > 0  # overlaps
    lean = points_in_boxes(pts, boxes)
    assert lean.mask is None
    np.testing.assert_array_equal(lean.box_index, out.box_index)
    np.testing.assert_array_equal(lean.counts, out.counts)


def test_points_in_boxes_enlargement_and_devkit() -> None:
    from pyquaternion import Quaternion

    from benchmarks.peers import DevkitBox, devkit_points_in_box

    rng = np.random.default_rng(22)
    boxes = random_boxes(rng, 20)
    pts = rng.uniform(-25, 25, (20_000, 3)) * [1, 1, 0.15]
    scale = np.array([1.2, 1.1, 1.3])
    margin = np.array([0.3, -0.1, 0.0])
    out = points_in_boxes(pts, boxes, scale=scale, margin_m=margin, return_mask=True)
    half = boxes.size / 2 * scale + margin
    _, mask = ref_points_in_boxes(pts, boxes.center, boxes.rotation_matrices(), half)
    np.testing.assert_array_equal(out.mask, mask)
    # the devkit's points_in_box (corners, edge vectors, dot products), wlh_factor = scale
    out = points_in_boxes(pts, boxes, scale=1.5, return_mask=True)
    assert out.mask is not None
    for b in range(len(boxes)):
        box = DevkitBox(boxes.center[b], boxes.size[b, [1, 0, 2]], Quaternion(boxes.rotation[b]))
        dev = devkit_points_in_box(box, pts.T, wlh_factor=1.5)
        np.testing.assert_array_equal(out.mask[:, b], dev)


@settings(max_examples=100, deadline=None)
@given(pts=hostile_points(30), seed=st.integers(0, 2**16), n_boxes=st.integers(0, 6))
def test_points_in_boxes_hostile_inputs(pts: F64, seed: int, n_boxes: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n_boxes, spread=2.0)
    # some points exactly on box corners
    if n_boxes and len(pts):
        k = min(len(pts), 4)
        pts[:k] = boxes.corners().reshape(-1, 3)[rng.integers(0, 8 * n_boxes, k)]
    out = points_in_boxes(pts, boxes, return_mask=True)
    first, mask = ref_points_in_boxes(pts, boxes.center, boxes.rotation_matrices(), boxes.size / 2)
    np.testing.assert_array_equal(out.box_index, first)
    np.testing.assert_array_equal(out.mask, mask)
    np.testing.assert_array_equal(out.counts, mask.sum(axis=0))
    assert np.all((out.box_index >= -1) & (out.box_index < n_boxes))


def test_points_in_boxes_huge_boxes() -> None:
    boxes = Boxes3D(
        [[0, 0, 0], [5, 5, 0]],
        [[1e308, 1e308, 1e308], [1, 1, 1]],
        [[1, 0, 0, 0]] * 2,
        ["a", "b"],
        ["1", "2"],
        "ego",
    )
    pts = np.array([[1e300, 0, 0], [5, 5, 0], [np.inf, 0, 0], [np.nan, 0, 0]])
    out = points_in_boxes(pts, boxes, return_mask=True)
    assert out.box_index.tolist() == [0, 0, -1, -1]
    assert out.counts.tolist() == [2, 1]


def test_points_in_boxes_errors() -> None:
    boxes = random_boxes(np.random.default_rng(0), 3)
    pts = np.zeros((2, 3))
    with pytest.raises(ConfigError, match="scale must be > 0"):
        points_in_boxes(pts, boxes, scale=0.0)
    with pytest.raises(ConfigError, match="scale must be a finite number or three"):
        points_in_boxes(pts, boxes, scale=[1.0, 2.0])
    with pytest.raises(ConfigError, match="negative or non-finite enlarged half-size"):
        points_in_boxes(pts, boxes, margin_m=-10.0)
    with pytest.raises(AVFusionError, match="boxes must be Boxes3D"):
        points_in_boxes(pts, [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("copies", [1, 2, 3])
def test_dense_copies_on_the_real_sweep(
    realdata: Path, copies: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real nuScenes sweep (~26k points, its own x/y/z spread and its points beyond the
    grid), ten times with a few cm of jitter so that counters wrap: the dense voxeliser with
    one, two or three counter copies equals the numpy reference in the Occ3D grid."""
    from avfusion.io import NuScenesLog

    cloud = NuScenesLog(realdata / "nuscenes-keyframe").aggregate_sweeps(0, n_sweeps=1)
    rng = np.random.default_rng(3)
    xyz = np.asarray(cloud.xyz, dtype=np.float64)
    pts = np.concatenate([xyz + rng.normal(0, 0.03, xyz.shape) for _ in range(10)])
    cell = np.floor((pts + 0.37) / 1.3).astype(np.int64)
    labels = (cell[:, 0] * 7 + cell[:, 1] * 13 + cell[:, 2] * 5) % 17
    spec = GridSpec.occ3d()
    monkeypatch.setattr(V, "_dense_copies", lambda n, v: copies)
    out = voxelize(pts.astype(np.float32), spec, labels, num_classes=17)
    counts, sem = ref_voxelize(pts.astype(np.float32), labels, spec, 17, list(range(17)))
    assert len(xyz) > 20_000 and counts.max() > 256 and out.n_outside > 0
    np.testing.assert_array_equal(out.counts, counts)
    np.testing.assert_array_equal(out.semantics, sem)
