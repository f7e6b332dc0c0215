"""Label consistency over time (avfusion.fusion.consistency.temporal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.findings import LabelSet
from avfusion.fusion.consistency.temporal import TemporalOptions, check_temporal, lidar_lag
from avfusion.types import Boxes3D

T0 = 1_700_000_000_000_000_000
DT = 500_000_000  # 2 Hz keyframes


class _TracksOnlyLog:
    """The part of a log check_temporal needs when there is no LiDAR: times and scenes."""

    def __init__(self, n: int) -> None:
        self.sample_tokens = [f"s{i}" for i in range(n)]

    def sample_time_ns(self, token: str) -> int:
        return T0 + DT * int(token[1:])

    def scene_of(self, token: str) -> dict[str, str]:
        return {"token": "scene", "description": "Night, rain, parking lot"}

    def keyframe_data(self, token: str) -> dict[str, str]:
        return {}


def _labels(
    tracks: dict[str, list[tuple[str, tuple[float, float], tuple[float, float, float]]]], n: int
) -> LabelSet:
    """tracks: id -> per keyframe (class, (x, y), size) — a track missing in a keyframe has fewer rows."""
    boxes = {}
    for i in range(n):
        rows = [(tid, *obs[i]) for tid, obs in sorted(tracks.items()) if i < len(obs)]
        center = np.array([[x, y, 1.0] for _, _, (x, y), _ in rows]).reshape(-1, 3)
        boxes[f"s{i}"] = Boxes3D(
            center,
            np.array([s for _, _, _, s in rows]).reshape(-1, 3),
            np.tile([1.0, 0, 0, 0], (len(rows), 1)),
            np.array([c for _, c, _, _ in rows]),
            np.array([t for t, _, _, _ in rows]),
            "world",
            token=np.array([f"{t}/{i}" for t, _, _, _ in rows]),
        )
    return LabelSet(boxes)


CAR = (4.6, 1.9, 1.7)
CONE = (0.4, 0.4, 0.7)


def test_hand_made_tracks() -> None:
    n = 8
    car = [("vehicle.car", (10.0 * 0.5 * i, 0.0), CAR) for i in range(n)]
    car[4] = ("vehicle.car", car[4][1], (3.2, 1.3, 1.2))  # shrunk at keyframe 4
    flip = [("vehicle.car", (0.0, 20.0), CAR) for _ in range(n)]
    flip[2] = ("vehicle.truck", (0.0, 20.0), CAR)
    # two cones 6 m apart swap ids from keyframe 5 on
    cone_a = [
        ("movable_object.trafficcone", (0.0, 10.0) if i < 5 else (6.0, 10.0), CONE)
        for i in range(n)
    ]
    cone_b = [
        ("movable_object.trafficcone", (6.0, 10.0) if i < 5 else (0.0, 10.0), CONE)
        for i in range(n)
    ]
    # a pedestrian that teleports 9 m and comes back: a spike, no switch, implausible speed
    ped = [("human.pedestrian.adult", (0.0, -10.0 + 0.7 * i), (0.6, 0.7, 1.8)) for i in range(n)]
    ped[3] = ("human.pedestrian.adult", (9.0, ped[3][1][1]), (0.6, 0.7, 1.8))
    labels = _labels({"car": car, "flip": flip, "cone_a": cone_a, "cone_b": cone_b, "ped": ped}, n)
    res = check_temporal(_TracksOnlyLog(n), labels)
    assert len(res.items) == 5 * n
    got = {(f.kind, f.item_id) for f in res.findings}
    assert ("size_change", "car/4") in got
    assert ("class_flip", "flip/2") in got
    assert ("id_switch", "cone_a/5") in got and ("id_switch", "cone_b/5") in got
    assert ("implausible_motion", "ped/3") in got
    assert not any(k == "id_switch" and i.startswith("ped") for k, i in got)
    # nothing else: the clean car moves at 10 m/s, the cones stand
    assert {k for k, i in got if i.startswith("car")} == {"size_change"}
    size = next(f for f in res.findings if f.kind == "size_change")
    assert size.evidence["relative_change"] == pytest.approx(
        1 - 1.3 / 1.9
    )  # the width changes most
    assert size.tags == ("night", "rain")
    # one keyframe at a time (as the per-keyframe checks are called): the same answer
    one = check_temporal(_TracksOnlyLog(n), labels, "s5")
    assert {f.item_id for f in one.findings if f.kind == "id_switch"} == {"cone_a/5", "cone_b/5"}
    assert {i.sample_token for i in one.items} == {"s5"}


def test_bad_input() -> None:
    labels = _labels({"a": [("vehicle.car", (0.0, 0.0), CAR)] * 3}, 3)
    with pytest.raises(AVFusionError, match="'s9' is not in the label set"):
        check_temporal(_TracksOnlyLog(3), labels, ["s0", "s9"])
    with pytest.raises(AVFusionError, match="size_tolerance must be > 0"):
        TemporalOptions(size_tolerance=0)
    with pytest.raises(AVFusionError, match="must be TemporalOptions"):
        check_temporal(_TracksOnlyLog(3), labels, options=object())  # type: ignore[arg-type]


def test_lidar_lag_of_a_late_box() -> None:
    """Returns on the rear face of a car driving away at 10 m/s; the box 0.1 s late."""
    rng = np.random.default_rng(0)
    t_label = T0
    v = np.array([10.0, 0.0, 0.0])
    n = 400
    t = t_label + rng.integers(-25_000_000, 25_000_000, n)  # the sweep's firing times
    # true rear face at x = 20 - 2.3 at the label time, moving with the car
    x = 17.7 + v[0] * (t - t_label) * 1e-9
    pts = np.column_stack([x, rng.uniform(-0.9, 0.9, n), rng.uniform(0.3, 0.9, n)])
    opts = TemporalOptions()
    true_center = np.array([20.0, 0.0, 0.85])
    on_time = lidar_lag(pts, t, t_label, true_center, np.array(CAR), 0.0, v, np.zeros(3), opts)
    assert on_time is not None and on_time.face == "rear"
    assert abs(on_time.lag_s) < 0.01
    late = lidar_lag(
        pts, t, t_label, true_center - v * 0.1, np.array(CAR), 0.0, v, np.zeros(3), opts
    )
    assert late is not None
    assert late.lag_s == pytest.approx(0.1, abs=0.01)
    assert late.offset_m == pytest.approx(1.0, abs=0.1)
    # too slow to judge
    assert (
        lidar_lag(pts, t, t_label, true_center, np.array(CAR), 0.0, v * 0.05, np.zeros(3), opts)
        is None
    )


# ---- the synthetic sample logs ---------------------------------------------------------------


def test_clean_log_few_findings(clean_log: Any) -> None:
    res = check_temporal(clean_log, LabelSet.from_log(clean_log))
    flagged = {(f.sample_token, f.item_id) for f in res.findings}
    assert len(res.items) > 250
    assert len(flagged) / len(res.items) <= 0.01, [f.message for f in res.findings]


def test_injected_id_switch_and_late_boxes_are_found(sample_log: Any) -> None:
    labels = LabelSet.from_log(sample_log)
    res = check_temporal(sample_log, labels)
    truth = json.loads((Path(sample_log.root) / "truth" / "injected_errors.json").read_text())[
        "errors"
    ]
    inst = {
        str(t): str(i)
        for b in labels.boxes3d.values()
        for t, i in zip(list(b.token if b.token is not None else []), b.track_id, strict=True)
    }
    switched_tracks = {tid for e in truth if e["kind"] == "id_switch" for tid in e["track_ids"]}
    assert len(switched_tracks) == 2
    switches = [f for f in res.findings if f.kind == "id_switch"]
    # the two cones that swap ids from keyframe 10: both tracks jump there
    index = {t: i for i, t in enumerate(sample_log.sample_tokens)}
    start = next(e["from_sample_index"] for e in truth if e["kind"] == "id_switch")
    at_switch = {f.instance_token for f in switches if index[f.sample_token] == start}
    assert len(at_switch) == 2
    assert all(
        f.category == "movable_object.trafficcone"
        for f in switches
        if f.instance_token in at_switch
    )
    # late boxes (0.3 s): the car whose box alone is late is found with the right lag
    lags = {f.annotation_token: f for f in res.findings if f.kind == "label_lag"}
    late_car = next(e for e in truth if e["kind"] == "late" and e["track_id"] == "car-18")
    found = lags[late_car["annotation_token"]]
    assert found.evidence["lag_s"] == pytest.approx(0.3, abs=0.05)
    assert inst[late_car["annotation_token"]] == found.instance_token
