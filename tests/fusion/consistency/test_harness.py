"""The evaluation harness: injection, scoring, and the precision/recall tables on the clean
synthetic log (all 13 keyframes) and on the real nuScenes keyframe."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.cameras import check_box_2d
from avfusion.fusion.consistency.findings import CheckedItem, CheckResult, Finding, LabelSet
from avfusion.fusion.consistency.harness import (
    KIND_FINDINGS,
    EvaluationTable,
    InjectedError,
    InjectionSpec,
    clean_rate,
    evaluate,
    inject,
    run_evaluation,
)
from avfusion.fusion.consistency.lidar import check_box_lidar, check_unlabelled
from avfusion.fusion.consistency.radar import check_box_radar
from avfusion.fusion.consistency.temporal import check_temporal

LIDAR_KINDS = ["shrink", "grow", "shift", "delete", "heading_flip"]
#: Kinds judged by the camera and time checks (2D offset 10 px, class swap of 5 % of tracks,
#: boxes two LiDAR frames late, id switches).
CAMERA_TIME_KINDS = ["offset_2d", "class_swap", "late", "id_switch"]
ALL_KINDS = [*LIDAR_KINDS, "radar_count", *CAMERA_TIME_KINDS]


def _finding(kind: str, check: str, ann: str, sample: str = "s", **kw: Any) -> Finding:
    return Finding(kind, check, 0.5, ann, sample, "LIDAR_TOP", "m", annotation_token=ann, **kw)


def test_evaluate_and_clean_rate_arithmetic() -> None:
    items = tuple(CheckedItem("box_lidar", f"a{i}", "s", "LIDAR_TOP", "car") for i in range(10))
    findings = (
        _finding("box_undersized", "box_lidar", "a1"),
        _finding("box_undersized", "box_lidar", "a2"),
        _finding("box_undersized", "box_lidar", "a3"),  # false alarm
        _finding("box_offset", "box_lidar", "a4"),  # another kind: not counted
    )
    res = [CheckResult("box_lidar", items, findings)]
    injected = [InjectedError("shrink", "s", a) for a in ("a1", "a2", "a5", "a6")]
    score = evaluate(res, injected, "shrink")
    assert (score.n_findings, score.n_true_findings) == (3, 2)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(2 / 4)
    assert clean_rate(res) == pytest.approx(4 / 10)
    # a deleted box is hit by a missing_box cluster centred inside it (plus the margin)
    miss = Finding(
        "missing_box",
        "unlabelled",
        0.5,
        "c0",
        "s",
        "LIDAR_TOP",
        "m",
        evidence={"center_x_world_m": 10.4, "center_y_world_m": 5.2, "center_z_world_m": 1.0},
    )
    deleted = InjectedError(
        "delete",
        "s",
        "a7",
        details={"center": [10.0, 5.0, 1.0], "size": [4.0, 2.0, 1.5], "yaw": 0.3},
    )
    far = InjectedError(
        "delete",
        "s",
        "a8",
        details={"center": [30.0, 5.0, 1.0], "size": [4.0, 2.0, 1.5], "yaw": 0.0},
    )
    s = evaluate([CheckResult("unlabelled", (), (miss,))], [deleted, far], "delete")
    assert (s.n_true_findings, s.n_detected, s.n_injected) == (1, 1, 2)
    with pytest.raises(AVFusionError, match="unknown error kind 'nope'"):
        evaluate(res, injected, "nope")


def test_inject_magnitudes(clean_log: Any) -> None:
    labels = LabelSet.from_log(clean_log)
    spec = InjectionSpec()
    for kind, factor in (("shrink", 0.85), ("grow", 1.15)):
        bad, injected = inject(clean_log, labels, kind, spec, seed=1)
        assert injected
        for e in injected:
            before, after = labels.boxes3d[e.sample_token], bad.boxes3d[e.sample_token]
            i = list(np.asarray(before.token)).index(e.item_id)
            np.testing.assert_allclose(after.size[i], before.size[i] * factor)
            # eligibility: each end of the length moves by at least min_end_change_m
            assert abs(factor - 1) * before.size[i, 0] / 2 >= spec.min_end_change_m
    bad, injected = inject(clean_log, labels, "shift", spec, seed=2)
    for e in injected:
        before, after = labels.boxes3d[e.sample_token], bad.boxes3d[e.sample_token]
        i = list(np.asarray(before.token)).index(e.item_id)
        d = after.center[i] - before.center[i]
        assert math.hypot(d[0], d[1]) == pytest.approx(0.5) and d[2] == 0.0
    bad, injected = inject(clean_log, labels, "delete", spec, seed=0)
    assert len(bad) == len(labels) - len(injected)
    assert 1 <= len(injected) <= 0.05 * len(labels) + 1
    bad, injected = inject(clean_log, labels, "heading_flip", spec, seed=0)
    for e in injected:
        before, after = labels.boxes3d[e.sample_token], bad.boxes3d[e.sample_token]
        i = list(np.asarray(before.token)).index(e.item_id)
        dyaw = (after.yaw[i] - before.yaw[i]) % (2 * math.pi)
        assert dyaw == pytest.approx(math.pi, abs=1e-9)
    bad, injected = inject(clean_log, labels, "late", spec, seed=0)
    # two LiDAR periods (20 Hz, stamps jittered by microseconds)
    assert injected and all(abs(e.details["lag_ns"] - 100_000_000) < 1_000_000 for e in injected)
    assert all(e.details["displacement_m"] >= spec.late_min_displacement_m for e in injected)
    bad, injected = inject(clean_log, labels, "offset_2d", spec, seed=0)
    assert injected and all(abs(e.details["dx_px"]) == 10.0 for e in injected)
    bad, injected = inject(clean_log, labels, "class_swap", spec, seed=0)
    assert injected and all(e.details["from"] != e.details["to"] for e in injected)
    bad, injected = inject(clean_log, labels, "id_switch", spec, seed=0)
    assert len(injected) == 2
    # the labels passed in are never changed
    assert len(labels) == len(LabelSet.from_log(clean_log))


def test_inject_bad_input(clean_log: Any) -> None:
    labels = LabelSet.from_log(clean_log)
    with pytest.raises(AVFusionError, match="unknown error kind 'melt'"):
        inject(clean_log, labels, "melt")
    with pytest.raises(AVFusionError, match="must be a LabelSet"):
        inject(clean_log, {}, "shrink")  # type: ignore[arg-type]
    with pytest.raises(AVFusionError, match="shrink_fraction must be in"):
        InjectionSpec(shrink_fraction=1.5)


def _check_table(table: EvaluationTable, kinds: list[str]) -> list[str]:
    bad = []
    for kind in kinds:
        s = table.scores[kind]
        if not s.n_injected:
            bad.append(f"{kind}: nothing eligible")
        elif not (s.precision >= 0.9 and s.recall >= 0.9):
            bad.append(f"{kind}: P {s.precision:.3f} R {s.recall:.3f}")
    return bad


@pytest.fixture(scope="module")
def synthetic_table(clean_log: Any) -> EvaluationTable:
    labels = LabelSet.from_log(clean_log)
    table = run_evaluation(
        clean_log,
        labels,
        [check_box_lidar, check_unlabelled, check_box_radar, check_box_2d, check_temporal],
        ALL_KINDS,
        seeds=(0, 1),
        name="clean synthetic log, 13 keyframes, seeds 0-1",
    )
    print("\n" + table.table())
    return table


# Kinds measured below 0.9 on the clean synthetic log (seeds 0-1); none at present. Formerly
# short: grow R 0.855 (65 of 76; a bicycle track whose wrongly sized boxes moved its class's
# end prior), now P 0.972 R 0.921 (70 of 76) with the class priors taken at each track's median
# size; offset_2d R 0.890 (146 of 164; boxes cut by the image border or moved towards a hidden
# side), now P 1.000 R 0.927 (152 of 164) with the LiDAR returns on the object as a third
# displacement estimate. Clean labels: 0.16 % of 1862 items, unchanged.
KNOWN_SHORT: set[str] = set()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, reason="below 0.9, see KNOWN_SHORT"))
        if k in KNOWN_SHORT
        else k
        for k in ALL_KINDS
    ],
)
def test_synthetic_precision_recall(synthetic_table: EvaluationTable, kind: str) -> None:
    assert _check_table(synthetic_table, [kind]) == []


def test_synthetic_clean_rate(synthetic_table: EvaluationTable) -> None:
    assert synthetic_table.clean_items > 500
    assert synthetic_table.clean_rate <= 0.01


# Real keyframe (seeds 0-5): shrink, grow 1.00/1.00 (6/6), shift P 0.917 R 0.917 (11/12), delete
# 1.00/1.00 (6/6); heading_flip has nothing eligible (one keyframe, no velocities). Shift was
# P 0.90 R 0.75 (9/12): a 32-return barrier behind another one has 23 object returns (below
# min_fit_points 25) and got no fit; it is now fitted as a sparse fit (23 >= half of the 33
# returns the beam model expects) that reports offsets only. Remaining: that barrier is missed
# once (seed 5: the shifted box reaches into free space, 51 expected), and a barrier right
# behind a shifted one takes some of its returns (seed 1, one false alarm).
def test_real_keyframe_table(realdata: Path) -> None:
    import avfusion

    log = avfusion.open_log(realdata / "nuscenes-keyframe")
    labels = LabelSet.from_log(log)
    table = run_evaluation(
        log,
        labels,
        [check_box_lidar, check_unlabelled, check_box_radar, check_box_2d, check_temporal],
        ALL_KINDS,
        seeds=range(6),
        name="real nuScenes keyframe, seeds 0-5",
    )
    print("\n" + table.table())
    # one keyframe of LiDAR and cameras, with neither radar nor 2D boxes in the log: no track
    # velocity (heading_flip, late), no earlier keyframe (class_swap, id_switch), no radar
    # counts, no 2D boxes; nothing is eligible for those kinds
    not_judgeable = ["heading_flip", "radar_count", "offset_2d", "class_swap", "late", "id_switch"]
    assert [k for k in not_judgeable if table.scores[k].n_injected] == []
    bad = _check_table(table, [k for k in ALL_KINDS if k not in not_judgeable])
    assert bad == []


def test_kind_mapping_is_complete() -> None:
    from avfusion.fusion.consistency.findings import FINDING_KINDS

    for kinds in KIND_FINDINGS.values():
        assert all(k in FINDING_KINDS for k in kinds)
