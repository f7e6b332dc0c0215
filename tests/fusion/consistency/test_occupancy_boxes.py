"""Generated occupancy ↔ boxes on the clean synthetic log's occupancy truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.findings import LabelSet
from avfusion.fusion.consistency.harness import _replace
from avfusion.fusion.consistency.occupancy_boxes import check_occupancy_boxes, load_semantics


def _occ(log: Any, token: str) -> tuple[np.ndarray, Any]:
    sem = load_semantics(Path(log.root) / "truth" / "occupancy" / token / "labels.npz")
    pose = log.ego_pose(log.keyframe_data(token)["LIDAR_TOP"])
    return sem, pose.inverse()


def test_clean_boxes_agree_with_occupancy(clean_log: Any) -> None:
    labels = LabelSet.from_log(clean_log)
    items = findings = 0
    for token in clean_log.sample_tokens:
        sem, grid_from_world = _occ(clean_log, token)
        r = check_occupancy_boxes(labels, token, sem, grid_from_world)
        items += len(r.items)
        findings += len(r.findings)
    assert items > 150
    assert findings == 0


def test_moved_and_relabelled_boxes(clean_log: Any) -> None:
    token = clean_log.sample_tokens[4]
    labels = LabelSet.from_log(clean_log)
    boxes = labels.boxes3d[token]
    sem, grid_from_world = _occ(clean_log, token)
    cars = np.nonzero(boxes.label == "vehicle.car")[0]
    i, j = int(cars[0]), int(cars[1])
    centre = boxes.center.copy()
    centre[i, 2] += 3.0  # lifted into the air: free space
    label = boxes.label.copy()
    label[j] = "human.pedestrian.adult"
    bad = labels.replace_boxes3d(token, _replace(boxes, center=centre, label=label))
    res = check_occupancy_boxes(bad, token, sem, grid_from_world)
    got = {f.annotation_token: f for f in res.findings}
    tok = np.asarray(boxes.token)
    assert set(got) == {str(tok[i]), str(tok[j])}
    assert got[str(tok[i])].evidence["free_fraction"] > 0.9
    assert got[str(tok[j])].evidence["main_other_class"] == 4  # the car's Occ3D class


def test_bad_input(clean_log: Any, tmp_path: Path) -> None:
    token = clean_log.sample_tokens[0]
    labels = LabelSet.from_log(clean_log)
    sem, gfw = _occ(clean_log, token)
    with pytest.raises(AVFusionError, match="semantics has shape"):
        check_occupancy_boxes(labels, token, sem[:, :, :8], gfw)
    with pytest.raises(AVFusionError, match="no sample 'nope'"):
        check_occupancy_boxes(labels, "nope", sem, gfw)
    with pytest.raises(AVFusionError, match=r"no occupancy labels\.npz"):
        load_semantics(tmp_path / "missing.npz")
    np.savez(tmp_path / "x.npz", other=np.zeros(3))
    with pytest.raises(AVFusionError, match="has no 'semantics'"):
        load_semantics(tmp_path / "x.npz")
