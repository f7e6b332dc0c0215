"""3D box ↔ radar: returns per box against num_radar_pts, Doppler against box velocity."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.findings import LabelSet
from avfusion.fusion.consistency.harness import _replace
from avfusion.fusion.consistency.radar import RadarCheckOptions, check_box_radar, radial_velocity


def test_radial_velocity_by_hand() -> None:
    p = np.array([[10.0, 0.0, 0.0], [0.0, 5.0, 0.0], [3.0, 4.0, 1.0]])
    v = np.array([[2.0, 7.0], [1.0, -3.0], [3.0, 4.0]])
    np.testing.assert_allclose(radial_velocity(p, v), [2.0, -3.0, 5.0])
    with pytest.raises(AVFusionError, match="must be finite"):
        radial_velocity(np.array([[np.nan, 0.0, 0.0]]), np.zeros((1, 2)))
    with pytest.raises(AVFusionError, match=r"\(N, 3\)"):
        radial_velocity(np.zeros((2, 2)), np.zeros((2, 2)))


def test_clean_log_has_no_radar_finding(clean_log: Any) -> None:
    labels = LabelSet.from_log(clean_log)
    items = findings = 0
    for token in clean_log.sample_tokens:
        r = check_box_radar(clean_log, labels, token)
        items += len(r.items)
        findings += len(r.findings)
    assert items > 100
    assert findings == 0


def test_count_and_doppler_mismatch(clean_log: Any) -> None:
    token = clean_log.sample_tokens[6]
    labels = LabelSet.from_log(clean_log)
    boxes = labels.boxes3d[token]
    base = check_box_radar(clean_log, labels, token)
    assert base.findings == ()
    n = boxes.attrs["num_radar_pts"].copy()
    i = int(np.argmax(n))
    assert n[i] >= 2
    n[i] = 0
    bad = labels.replace_boxes3d(token, _replace(boxes, attrs={**boxes.attrs, "num_radar_pts": n}))
    res = check_box_radar(clean_log, bad, token)
    assert [(f.kind, f.annotation_token) for f in res.findings] == [
        ("radar_count_mismatch", str(np.asarray(boxes.token)[i]))
    ]
    assert res.findings[0].evidence["num_radar_pts"] == 0
    # Doppler: a one-sample label set has no track; the velocity column reversed for a mover
    for token in clean_log.sample_tokens:
        boxes = labels.boxes3d[token]
        speed = np.hypot(boxes.velocity[:, 0], boxes.velocity[:, 1])
        movers = np.nonzero((speed > 3.0) & (boxes.attrs["num_radar_pts"] >= 2))[0]
        if movers.size:
            break
    assert movers.size, "the clean log has a moving box with radar returns"
    j = int(movers[0])
    vel = np.asarray(boxes.velocity).copy()
    single = LabelSet({token: _replace(boxes)})
    assert not [
        f
        for f in check_box_radar(clean_log, single, token).findings
        if f.kind == "radar_doppler_mismatch"
    ]
    vel[j, :2] *= -1
    from avfusion.types import Boxes3D

    flipped = Boxes3D(
        boxes.center,
        boxes.size,
        boxes.rotation,
        boxes.label,
        boxes.track_id,
        "world",
        vel,
        boxes.token,
        boxes.attrs,
    )
    res = check_box_radar(clean_log, LabelSet({token: flipped}), token)
    dop = [f for f in res.findings if f.kind == "radar_doppler_mismatch"]
    assert [f.annotation_token for f in dop] == [str(np.asarray(boxes.token)[j])]
    assert (
        float(dop[0].evidence["median_abs_diff_mps"]) > 1.5 * math.cos(math.radians(60)) * speed[j]
    )


def test_bad_input(clean_log: Any) -> None:
    labels = LabelSet.from_log(clean_log)
    with pytest.raises(AVFusionError, match="no sample 'nope'"):
        check_box_radar(clean_log, labels, "nope")
    with pytest.raises(AVFusionError, match="fov_deg must be > 0"):
        RadarCheckOptions(fov_deg=0.0)
    # a radar channel the log does not have: every box skipped, none dropped silently
    token = clean_log.sample_tokens[0]
    res = check_box_radar(clean_log, labels, token, options=RadarCheckOptions(radar="RADAR_BACK"))
    assert res.items == () and res.skipped["no 'RADAR_BACK' keyframe"] == len(labels.boxes3d[token])
