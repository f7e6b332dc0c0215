"""Occupancy ground truth: aggregation, box filling, Occ3D output, evaluation, accuracy against
the synthetic world's analytic truth, and the real nuScenes keyframe."""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linprog

from avfusion.calibration.transforms import Transform
from avfusion.errors import AVFusionError, ConfigError
from avfusion.fusion.aggregate import (
    OCC3D_CLASSES,
    UNLABELLED,
    AggregationOptions,
    _classes_from_lidarseg,
    aggregate_keyframe,
    occ3d_class,
    repair_track_outliers,
)
from avfusion.fusion.kernels import box_overlaps_voxel, fill_boxes_kernel
from avfusion.fusion.occupancy import (
    OccupancyOptions,
    OctoMapParams,
    confusion_matrix,
    evaluate_occupancy,
    keyframe_cameras,
    labels_npz_bytes,
    log_odds,
    metrics_from_confusion,
    occupancy_for_sample,
)
from avfusion.fusion.voxel import GridSpec, camera_visibility, points_in_boxes
from avfusion.io import NuScenesLog

# --------------------------------------------------------------------------------------------
# Kernels against independent references
# --------------------------------------------------------------------------------------------


def _overlap_lp(offset: np.ndarray, rot: np.ndarray, half: np.ndarray, vh: float) -> bool:
    """Reference: is there a point in both the cube [-vh, vh]^3 and the box? (an LP)."""
    # x in cube: -vh <= x <= vh; box: |rot.T (x - offset)| <= half
    a_ub = np.vstack([rot.T, -rot.T])
    b_ub = np.concatenate([half + rot.T @ offset, half - rot.T @ offset])
    res = linprog(np.zeros(3), A_ub=a_ub, b_ub=b_ub, bounds=[(-vh, vh)] * 3, method="highs")
    return bool(res.status == 0)


def test_box_voxel_overlap_matches_a_linear_programme() -> None:
    rng = np.random.default_rng(3)
    agree = 0
    n = 400
    both = [0, 0]
    for _ in range(n):
        rot = Transform.from_rotvec(rng.normal(size=3) * rng.uniform(0, 2)).rotation
        half = rng.uniform(0.02, 1.0, 3)
        offset = rng.uniform(-1.0, 1.0, 3)
        ours = box_overlaps_voxel(offset, np.ascontiguousarray(rot), half, 0.2)
        ref = _overlap_lp(offset, rot, half, 0.2)
        agree += ours == ref
        both[int(ref)] += 1
    assert agree == n
    assert min(both) > 50  # both outcomes exercised


def test_fill_boxes_kernel_matches_reference_and_stays_in_bounds() -> None:
    spec = GridSpec.from_range([-2.0, -2.0, -1.0, 2.0, 2.0, 1.4], 0.4)  # 10 x 10 x 6
    rots = np.stack(
        [
            Transform.from_euler_zyx(0.5, 0.1, -0.2).rotation,
            Transform.from_euler_zyx(-1.0, 0.0, 0.0).rotation,
            np.eye(3),
        ]
    )
    centers = np.array([[0.3, -0.4, 0.2], [-1.9, 1.8, -0.9], [30.0, 0.0, 0.0]])  # last: outside
    half = np.array([[0.9, 0.3, 0.5], [1.2, 0.7, 0.3], [5.0, 5.0, 5.0]])
    classes = np.array([4, 7, 1], dtype=np.uint8)
    keep_out = np.zeros(spec.shape, dtype=np.uint8)
    keep_out[5, 4, 3] = 1
    sem = np.full(spec.shape, 17, dtype=np.uint8)
    filled = np.zeros(spec.shape, dtype=np.uint8)
    fill_boxes_kernel(
        spec.lo, spec.voxel_size_m, centers, rots, half, classes, keep_out, sem, filled
    )
    ref = np.full(spec.shape, 17, dtype=np.uint8)
    for ijk in np.ndindex(spec.shape):
        if keep_out[ijk]:
            continue
        c = spec.centers(np.array([ijk]))[0]
        for b in range(3):
            if _overlap_lp(centers[b] - c, rots[b], half[b], 0.2):
                ref[ijk] = classes[b]
    np.testing.assert_array_equal(sem, ref)
    assert np.array_equal(filled != 0, ref != 17)
    assert (sem == 4).sum() > 20 and (sem == 7).sum() > 3 and sem[5, 4, 3] == 17


def test_occ3d_class_mapping() -> None:
    assert occ3d_class("human.pedestrian.police_officer") == 7
    assert occ3d_class("vehicle.bus.bendy") == 3 == occ3d_class("vehicle.bus.rigid")
    assert occ3d_class("static_object.bicycle_rack") == 0
    assert occ3d_class("noise") == -1 == occ3d_class("vehicle.ego")
    assert OCC3D_CLASSES[occ3d_class("flat.driveable_surface")] == "driveable_surface"


def test_labels_npz_is_deterministic_and_loads() -> None:
    rng = np.random.default_rng(0)
    sem = rng.integers(0, 18, (200, 200, 16), dtype=np.uint8)
    ml = (rng.random((200, 200, 16)) > 0.5).astype(np.uint8)
    mc = (rng.random((200, 200, 16)) > 0.7).astype(np.uint8)
    data = labels_npz_bytes(sem, ml, mc)
    assert data == labels_npz_bytes(sem.copy(), ml.copy(), mc.copy())
    with np.load(io.BytesIO(data)) as z:
        assert sorted(z.files) == ["mask_camera", "mask_lidar", "semantics"]
        np.testing.assert_array_equal(z["semantics"], sem)
        np.testing.assert_array_equal(z["mask_camera"], mc)
        assert z["mask_lidar"].dtype == np.uint8


def test_evaluation_counts_iou_and_free_precision() -> None:
    truth = np.full((4, 4, 2), 17, dtype=np.uint8)
    pred = truth.copy()
    truth[0, :, 0] = 11  # 4 driveable
    pred[0, :3, 0] = 11  # 3 right, 1 missed (free)
    pred[1, 0, 0] = 4  # a car where truth is free
    m = evaluate_occupancy(pred, truth)
    assert m.iou_per_class[11] == pytest.approx(3 / 4)
    assert m.iou_per_class[4] == 0.0
    assert np.isnan(m.iou_per_class[7])
    assert m.miou == pytest.approx((0.75 + 0.0) / 2)
    assert m.occupied_iou == pytest.approx(3 / 5)
    n_free_pred = 32 - 4
    assert m.free_precision == pytest.approx((n_free_pred - 1) / n_free_pred)
    # a mask restricts scoring; confusion matrices add up over frames
    mask = np.zeros_like(truth)
    mask[0] = 1
    assert evaluate_occupancy(pred, truth, mask).n_voxels == 8
    total = confusion_matrix(pred, truth) + confusion_matrix(truth, truth)
    pooled = metrics_from_confusion(total)
    assert pooled.iou_per_class[11] == pytest.approx(7 / 8)
    with pytest.raises(AVFusionError, match="shapes differ"):
        evaluate_occupancy(pred[:2], truth)


def test_log_odds_follow_octomap_clamping() -> None:
    p = OctoMapParams()
    hits = np.array([0, 0, 1, 50, 2])
    free = np.array([0, 3, 0, 0, 100])
    lo = log_odds(hits, free, p)
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    assert lo[0] == 0.0
    assert lo[1] == pytest.approx(3 * logit(0.4), rel=1e-6)
    assert lo[2] == pytest.approx(logit(0.7), rel=1e-6)
    assert lo[3] == pytest.approx(logit(0.971), rel=1e-6)  # clamped at the top
    # 100 misses clamp at the bottom first, then 2 hits climb from there
    assert lo[4] == pytest.approx(logit(0.1192) + 2 * logit(0.7), rel=1e-5)
    with pytest.raises(ConfigError, match="prob_hit"):
        OctoMapParams(prob_hit=1.5)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="sweeps"):
        AggregationOptions(sweeps=-1)
    with pytest.raises(ConfigError, match="ego_box_m"):
        AggregationOptions(ego_box_m=(1, 0, 0, 0, 1, 1))
    with pytest.raises(ConfigError, match="min_points"):
        OccupancyOptions(min_points=0)
    with pytest.raises(ConfigError, match="ground_band_m must be finite and >= 0"):
        AggregationOptions(ground_band_m=-0.1)
    with pytest.raises(ConfigError, match="box_outlier_m must be finite and > 0"):
        AggregationOptions(box_outlier_m=0.0)
    with pytest.raises(ConfigError, match="min_class_points must be an integer >= 1"):
        AggregationOptions(min_class_points=0)
    assert OccupancyOptions().with_sweeps(3).sweeps == 3


def test_track_outliers_are_moved_and_smooth_motion_is_not() -> None:
    """Reference: the track's true positions. Braking hard while turning (constant
    acceleration) leaves every annotation where it is; a shifted annotation and a lagging one
    are moved back onto the motion; the last one is never tested; two wrong neighbours leave
    no consistent motion to judge by, so nothing moves."""
    t_ns = np.arange(11, dtype=np.int64) * 500_000_000
    t = t_ns / 1e9
    truth = np.stack([12.0 * t - 1.2 * t**2, 0.8 * t**2, 0.02 * t], axis=1)  # braking, turning
    smooth = truth.copy()
    assert repair_track_outliers(t_ns, smooth, 0.3) == []
    np.testing.assert_array_equal(smooth, truth)
    bad = truth.copy()
    bad[2] += [0.5, -0.6, 0.0]  # a shifted label
    bad[6] = truth[6] - (truth[6] - truth[5]) * 0.6  # a lagging one (0.3 s late)
    bad[10] += [2.0, 0.0, 0.0]  # the last: not testable
    moved = repair_track_outliers(t_ns, bad, 0.3)
    assert sorted(moved) == [2, 6]
    np.testing.assert_allclose(bad[[2, 6]], truth[[2, 6]], atol=0.05)
    assert bad[10, 0] == truth[10, 0] + 2.0
    pair = truth.copy()
    pair[4:6] += [0.8, 0.0, 0.0]
    assert repair_track_outliers(t_ns, pair, 0.3) == []
    few = truth[:4].copy()
    few[2] += 5.0
    assert repair_track_outliers(t_ns[:4], few, 0.3) == []  # too few neighbours to judge


def test_box_class_follows_its_lidarseg_points() -> None:
    from avfusion.types import Boxes3D

    boxes = Boxes3D(
        np.zeros((3, 3)), np.ones((3, 3)), np.tile([1.0, 0, 0, 0], (3, 1)),
        np.array(["a", "b", "c"]), np.array(["1", "2", "3"]), "grid",
        attrs={"occ3d": np.array([1, 4, 8], dtype=np.int16)},
    )  # fmt: skip
    # box 0 (barrier): 12 lidarseg cone points, 3 barrier, 20 labelled from the box
    # box 1 (car): 5 lidarseg pedestrian points only (fewer than min_points)
    # box 2 (cone): 10 lidarseg cone points
    box = np.array([0] * 35 + [1] * 5 + [2] * 10 + [-1] * 4, dtype=np.int32)
    labels = np.array([8] * 12 + [1] * 3 + [1] * 20 + [7] * 5 + [8] * 10 + [11, 12, 13, UNLABELLED],
                      dtype=np.uint8)  # fmt: skip
    from_box = np.zeros(len(box), bool)
    from_box[15:35] = True
    counts: dict[str, int] = {}
    out = _classes_from_lidarseg(boxes, labels, box, from_box, 10, counts)
    assert out.attrs["occ3d"].tolist() == [8, 4, 8] and counts["boxes_reclassed"] == 1
    assert np.all(labels[15:35] == 8)  # the box's own points follow it
    assert np.all(labels[12:15] == 1) and labels[-1] == UNLABELLED  # lidarseg points keep theirs


# --------------------------------------------------------------------------------------------
# Synthetic log: aggregation and accuracy against the analytic truth
# --------------------------------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth_log() -> NuScenesLog:
    from avfusion.synth import ensure_sample_data

    return NuScenesLog(ensure_sample_data(REPO / "sample_data"))


@cache
def _world(root: str):  # type: ignore[no-untyped-def]
    from avfusion.synth import world as w

    scene = json.loads((Path(root) / "truth" / "scene.json").read_text())
    return w.build_world(scene["seconds"], scene["seed"], scene["t0_ns"])


def test_aggregation_moves_object_points_with_their_boxes(synth_log: NuScenesLog) -> None:
    """The keyframe with the most moving boxes: every object point of ±10 sweeps lands inside
    its box at the keyframe (enlarged by the collection margin); without the box motion the
    same points would be smeared metres along the road."""
    index = 6
    agg = aggregate_keyframe(synth_log, index)
    assert len(agg.sweep_tokens) == 21 and agg.counts["sweeps_not_deskewed"] == 0
    assert agg.counts["read"] == (
        len(agg) + agg.counts["object_without_keyframe_box"] + agg.counts["self"]
        + agg.counts["noise"] + agg.counts["nonfinite"]
    )  # fmt: skip
    speed = np.linalg.norm(np.nan_to_num(agg.boxes.velocity[:, :2]), axis=1)
    moving = np.flatnonzero(speed > 3.0)
    assert moving.size >= 2
    margin = np.array(AggregationOptions().box_margin_m) + 0.05
    for b in moving:
        members = agg.box_index == b
        assert members.sum() > 200
        inside = points_in_boxes(
            agg.points[members], agg.boxes.select(np.array([b])), margin_m=margin
        )
        assert inside.counts[0] / members.sum() > 0.99
        # the same returns where they were seen spread along the track
        seen_extent = np.ptp(agg.ray_end[members][:, :2], axis=0).max()
        placed_extent = np.ptp(agg.points[members][:, :2], axis=0).max()
        assert seen_extent > placed_extent + 0.4 * speed[b]
    # object points take the box class where lidarseg is absent (sweeps) or agrees
    car = agg.boxes.attrs["occ3d"] == 4
    car_points = np.isin(agg.box_index, np.flatnonzero(car))
    assert np.mean(agg.labels[car_points] == 4) > 0.97


def test_aggregation_places_static_points_on_the_ground(synth_log: NuScenesLog) -> None:
    """Static ground points of all sweeps (deskewed, in the grid frame) against the world's
    analytic ground height: centimetre-level, so sweeps do not smear the ground."""
    from avfusion.synth.world import ground_height_many

    index = 4
    agg = aggregate_keyframe(synth_log, index)
    world = _world(str(synth_log.root))
    ground = (agg.box_index < 0) & np.isin(agg.labels, [11, 13, 14])
    assert ground.sum() > 20_000
    pts_world = agg.world_from_grid.apply(agg.points[ground])
    dz = pts_world[:, 2] - ground_height_many(np.ascontiguousarray(pts_world[:, :2]), world.params)
    assert np.median(np.abs(dz)) < 0.02
    assert np.percentile(np.abs(dz), 95) < 0.06


def test_aggregation_keeps_ground_out_of_objects_and_repairs_labels(
    synth_log: NuScenesLog,
) -> None:
    """Keyframe 1 carries injected label errors (truth/injected_errors.json: two boxes shrunk
    and one grown by 30 %, two pedestrians shifted 0.6-0.9 m, a car not annotated). Against
    the clean annotations (truth/annotations.json), every keyframe box comes out right, the
    missed car included, but two: pedestrian-04, whose track has too few annotations around
    the keyframe to judge (its box four keyframes later is missing too: the repair then
    leaves a label alone), and car-06, whose first annotation is the missed one (a box is
    interpolated, never extrapolated). Without the repair all the errors stay. And the ground under and
    around the boxes, which the sweeps without lidarseg would give the box's class, stays
    ground."""
    from avfusion.synth.world import ground_height_many

    clean = {
        a["key"]: a for a in json.loads((synth_log.root / "truth" / "annotations.json").read_text())
    }
    track_of = {}
    for row in synth_log.table("sample_annotation"):
        key = next((k for k, a in clean.items() if a["token"] == row["token"]), None)
        if key is not None:
            track_of[row["instance_token"]] = key.split("/")[0]
    world = _world(str(synth_log.root))

    def off(opts: AggregationOptions) -> tuple[int, float, dict[str, int]]:
        agg = aggregate_keyframe(synth_log, 1, opts)
        boxes = agg.boxes.transformed(agg.world_from_grid, "world")
        wrong = 0
        for b in range(len(boxes)):
            name = track_of[str(boxes.track_id[b])]
            # an object the generator left unannotated at this keyframe (no points on it):
            # its true box from the world
            obj = next(o for o in world.objects if o.track_id == name)
            pose = world.object_pose(obj, synth_log.sample_time_ns(1))
            a = clean.get(f"{name}/1", {"translation": pose[:3], "size_lwh": obj.box_size})
            wrong += bool(
                np.linalg.norm(boxes.center[b] - a["translation"]) > 0.1
                or np.abs(boxes.size[b] - a["size_lwh"]).max() > 0.05
            )
        missing = sum(1 for k in clean if k.endswith("/1")) - len(
            set(boxes.track_id) & set(i for i, n in track_of.items() if f"{n}/1" in clean)
        )
        pts = agg.world_from_grid.apply(agg.points[agg.box_index >= 0])
        ground = ground_height_many(np.ascontiguousarray(pts[:, :2]), world.params)
        return wrong + missing, float(np.mean(np.abs(pts[:, 2] - ground) < 0.05)), agg.counts

    before = off(AggregationOptions(ground_band_m=0.0, snap_to_box=False, repair_boxes=False))
    after = off(AggregationOptions())
    assert before[0] >= 6 and before[1] > 0.1  # 5 wrong boxes + 1 missing; 16 % ground
    assert after[0] == 2 and after[1] < 0.005  # pedestrian-04 and car-06 (see the docstring)
    c = after[2]
    assert c["boxes_resized_to_track"] == 3 and c["boxes_interpolated"] >= 1
    assert c["object_ground_band"] > 5_000 and c["boxes_reclassed"] == 0


@cache
def _accuracy(root: str, frames: tuple[int, ...], sweeps: int) -> tuple[np.ndarray, list[dict]]:
    from avfusion.synth import labels as lab

    log = NuScenesLog(root)
    world = _world(root)
    conf = np.zeros((18, 18), dtype=np.int64)
    stats = []
    for i in frames:
        gt = occupancy_for_sample(log, i, OccupancyOptions().with_sweeps(sweeps))
        t_s = log.sample_time_ns(i)
        truth = lab.occupancy(world, world.primitive_arrays(t_s), gt.world_from_grid)
        cams = keyframe_cameras(log, i, gt.world_from_grid)
        truth_mask = camera_visibility(truth != 17, [(m, g) for _, m, g in cams]).mask
        conf += confusion_matrix(gt.semantics, truth, truth_mask)
        stats.append(gt.stats)
    return conf, stats


ACCURACY_FRAMES = (1, 5, 9)


def test_occupancy_accuracy_against_the_analytic_truth(synth_log: NuScenesLog) -> None:
    """Keyframes 1, 5 and 9 with ±10 sweeps against the world's exact occupancy (a voxel is
    occupied where a surface passes through it or a solid overlaps it), scored inside the
    truth's camera mask (Occ3D visibility of the truth from the keyframe cameras), confusion
    pooled over the frames as Occ3D does. The log's labels carry the default injected errors.

    The issue asks occupied IoU >= 0.85, free-space precision >= 0.98 and mIoU >= 0.80.
    Measured (this code, pooled): occupied IoU 0.894, free precision 0.994, mIoU 0.826
    (per class: others 0.89, barrier 0.81, bicycle 0.85, bus 0.99, car 0.81, pedestrian 0.69,
    traffic cone 0.59, truck 0.85, driveable 0.92, sidewalk 0.89, terrain 0.81, manmade 0.91,
    vegetation 0.73). Before (mIoU 0.70; car 0.53, pedestrian 0.51, bicycle 0.44, cone 0.40)
    the small classes lost mostly to false positives, not to the box fill's shape: ground
    voxels around their boxes voted to the box class by the sweeps without lidarseg (their
    collection margin reaches below and around the box), range noise pushing returns into the
    voxels just beyond the box face, and the injected label errors (a 30 % smaller or larger
    box, a box 0.6-0.9 m off, a missed box); see ``aggregate.py`` (ground band, snap to box,
    label repair). Still short: pedestrians (a shifted label the repair cannot judge, see the
    test above) and cones (14 truth voxels: one voxel is 0.07 of IoU; the cone's taper
    against its box). On the clean copy of the log (no injected errors) the same code gives
    mIoU 0.83, pedestrian 0.81.
    """
    conf, stats = _accuracy(str(synth_log.root), ACCURACY_FRAMES, 10)
    m = metrics_from_confusion(conf)
    print()
    print(m.table())
    assert m.occupied_iou >= 0.85
    assert m.free_precision >= 0.98
    assert m.miou >= 0.80
    for cls in (3, 4, 11, 13, 15):  # bus, car, driveable surface, sidewalk, manmade
        if not np.isnan(m.iou_per_class[cls]):
            assert m.iou_per_class[cls] >= 0.75, OCC3D_CLASSES[cls]
    assert m.iou_per_class[7] >= 0.65  # pedestrian: one label left shifted (see the docstring)
    for s in stats:
        assert s["sweeps"] == 21 and s["lidar_rays"] > 300_000
        assert s["camera_observed_voxels"] > 25_000


def test_more_sweeps_fill_more_of_the_truth(synth_log: NuScenesLog) -> None:
    few = metrics_from_confusion(_accuracy(str(synth_log.root), (5,), 2)[0])
    many = metrics_from_confusion(_accuracy(str(synth_log.root), (5,), 10)[0])
    assert many.free_recall >= few.free_recall - 0.002
    assert many.occupied_iou > few.occupied_iou + 0.03


def test_masks_are_consistent(synth_log: NuScenesLog) -> None:
    gt = occupancy_for_sample(synth_log, 2)
    occupied = gt.semantics != 17
    assert gt.semantics.shape == (200, 200, 16) and gt.semantics.dtype == np.uint8
    # every voxel holding points was reached by a ray; camera-visible voxels lie in front
    assert gt.mask_lidar.sum() > 100_000
    assert gt.mask_camera.sum() > 50_000
    assert (occupied & (gt.mask_camera == 1)).sum() > 2_000
    # cameras look forward (the synthetic rig has no rear cameras): nothing behind is seen
    assert gt.mask_camera[:90].sum() < 0.05 * gt.mask_camera.sum()
    assert set(gt.stats["cameras"]) == {
        "CAM_FRONT",
        "CAM_FRONT_LEFT",
        "CAM_FRONT_RIGHT",
        "THERMAL_FRONT",
    }


# --------------------------------------------------------------------------------------------
# Real nuScenes keyframe
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_keyframe_occupancy_is_plausible(realdata: Path) -> None:
    """One real nuScenes sweep with its 69 boxes and six cameras: ground voxels around the car
    lie at ground height, labelled boxes hold voxels of their class, masks are populated.
    The keyframe has no lidarseg and no sweeps, so unboxed points are 'others' (the fallback
    the issue names)."""
    log = NuScenesLog(realdata / "nuscenes-keyframe")
    gt = occupancy_for_sample(log, 0)
    sem = gt.semantics
    occupied = sem != 17
    assert gt.stats["sweeps"] == 1 and len(gt.stats["cameras"]) == 6
    assert 5_000 < occupied.sum() < 60_000
    # within 4-15 m of the ego, the lowest occupied voxel of most columns is the ground layer
    spec = GridSpec.occ3d()
    ii, jj = np.meshgrid(np.arange(200), np.arange(200), indexing="ij")
    xy = (np.stack([ii, jj], -1) + 0.5) * 0.4 - 40.0
    ring = (np.hypot(xy[..., 0], xy[..., 1]) > 4) & (np.hypot(xy[..., 0], xy[..., 1]) < 15)
    cols = ring & occupied.any(axis=2)
    lowest = np.argmax(occupied, axis=2)[cols]
    z_lowest = spec.lo[2] + (lowest + 0.5) * 0.4
    assert cols.sum() > 300
    assert np.mean(np.abs(z_lowest) < 0.6) > 0.8  # ego frame: the ground is at z ~ 0
    # boxes: every labelled box inside the grid with points holds voxels of its class
    boxes = gt_boxes_in_grid(log, gt)
    classes = np.array([occ3d_class(c) for c in boxes.label])
    with_class = [
        bool(np.any(sem[_box_voxels(boxes, b, spec)] == classes[b])) for b in range(len(boxes))
    ]
    assert len(boxes) > 20 and np.mean(with_class) > 0.95
    assert gt.mask_lidar.sum() > 50_000 and gt.mask_camera.sum() > 50_000


def gt_boxes_in_grid(log: NuScenesLog, gt) -> object:  # type: ignore[no-untyped-def]
    boxes = log.boxes3d(0).transformed(gt.world_from_grid.inverse(), "grid")
    inside = np.all(np.abs(boxes.center[:, :2]) < 38, axis=1) & (boxes.attrs["num_lidar_pts"] > 0)
    return boxes.select(inside)


def _box_voxels(boxes, b: int, spec: GridSpec) -> tuple[np.ndarray, ...]:  # type: ignore[no-untyped-def]
    corners = boxes.corners()[b]
    lo = np.clip(np.floor((corners.min(0) - spec.lo) / 0.4).astype(int), 0, spec.shape)
    hi = np.clip(np.floor((corners.max(0) - spec.lo) / 0.4).astype(int) + 1, 0, spec.shape)
    ijk = np.stack(
        np.meshgrid(*[np.arange(a, c) for a, c in zip(lo, hi, strict=True)], indexing="ij"), -1
    ).reshape(-1, 3)
    inside = points_in_boxes(spec.centers(ijk), boxes.select(np.array([b]))).box_index >= 0
    ijk = ijk[inside]
    return ijk[:, 0], ijk[:, 1], ijk[:, 2]


def test_last_keyframe_whose_sweep_outlasts_the_pose_track(synth_log: NuScenesLog) -> None:
    """The last sweep's final points are captured ~19 ms after the last ego pose: within the
    pose tolerance they are extrapolated; with none the error names the sweep and the times."""
    last = len(synth_log) - 1
    agg = aggregate_keyframe(synth_log, last)
    assert 11 <= len(agg.sweep_tokens) < 21  # the log ends a few sweeps after it
    with pytest.raises(AVFusionError, match=r"aggregation sweep \w+: point capture times reach"):
        aggregate_keyframe(synth_log, last, AggregationOptions(pose_tolerance_s=0.0))


def test_missing_lidar_keyframe_is_a_clear_error(synth_log: NuScenesLog) -> None:
    with pytest.raises(AVFusionError, match="no keyframe of LiDAR 'LIDAR_LEFT'"):
        aggregate_keyframe(synth_log, 0, AggregationOptions(lidar="LIDAR_LEFT"))


def test_non_finite_points_are_counted_and_never_reach_the_grid(
    synth_log: NuScenesLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sensor that reports NaN/inf for some returns: those points are counted, the rest are
    aggregated exactly as before, and every output array stays finite."""
    from avfusion.types import PointCloud

    clean = aggregate_keyframe(synth_log, 3, AggregationOptions(sweeps=2))
    original = NuScenesLog.load_points

    def corrupted(self: NuScenesLog, sd_token: str, **kwargs: object) -> PointCloud:
        cloud = original(self, sd_token, **kwargs)  # type: ignore[arg-type]
        xyz = np.array(cloud.xyz, copy=True)
        xyz[:50, 0] = np.nan
        xyz[50:60] = np.inf
        return PointCloud(
            xyz, cloud.sensor, cloud.t_ns, cloud.attrs, cloud.world_from_ego, cloud.token
        )

    monkeypatch.setattr(NuScenesLog, "load_points", corrupted)
    bad = aggregate_keyframe(synth_log, 3, AggregationOptions(sweeps=2))
    n_sweeps = len(bad.sweep_tokens)
    assert bad.counts["nonfinite"] == 60 * n_sweeps
    assert bad.counts["read"] == clean.counts["read"]
    assert 0 < len(clean) - len(bad) <= 60 * n_sweeps
    # the surviving points are exactly the clean run's points (nothing else moved or lost)
    rows = lambda a: np.ascontiguousarray(a).view([("", a.dtype)] * 3).ravel()  # noqa: E731
    assert np.all(np.isin(rows(bad.points), rows(clean.points)))
    assert bad.counts["static"] + bad.counts["object"] == len(bad)
    for arr in (bad.points, bad.ray_end, bad.ray_origin):
        assert np.all(np.isfinite(arr))
    gt = occupancy_for_sample(synth_log, 3, OccupancyOptions().with_sweeps(2))
    assert gt.stats["points"]["nonfinite"] == 60 * n_sweeps
