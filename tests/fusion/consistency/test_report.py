"""Counts, rates, kappa and findings.json (avfusion.fusion.consistency.report) and run_checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.check import parse_checks, run_checks
from avfusion.fusion.consistency.findings import (
    FINDINGS_SCHEMA,
    CheckedItem,
    CheckResult,
    Finding,
)
from avfusion.fusion.consistency.report import (
    cohens_kappa,
    confusion_matrix,
    distance_band,
    read_findings_json,
    scene_tags,
    summarise_results,
    write_findings_json,
)


def test_scene_tags_and_distance_bands() -> None:
    assert scene_tags("Night, rain, parking lot, peds") == ("night", "rain")
    assert scene_tags("Wait at intersection, peds, cones") == ("day",)
    assert scene_tags("Rainy day, big trucks") == ("day", "rain")
    assert distance_band(5.0) == "0-20m"
    assert distance_band(20.0) == "20-40m"
    assert distance_band(55.0) == "40m+"
    assert distance_band(math.nan) == "unknown"


def test_cohens_kappa_known_values() -> None:
    # the textbook example: 50 items, p_o = 0.7, p_e = 0.5 -> kappa 0.4
    assert cohens_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert cohens_kappa(np.eye(3) * 7) == 1.0
    assert cohens_kappa([[5]]) == 1.0
    assert cohens_kappa([[0, 5], [5, 0]]) == pytest.approx(-1.0)
    assert math.isnan(cohens_kappa(np.zeros((2, 2))))
    with pytest.raises(AVFusionError, match="must be square"):
        cohens_kappa([[1, 2, 3]])
    with pytest.raises(AVFusionError, match=">= 0"):
        cohens_kappa([[1, -1], [0, 1]])
    classes, m = confusion_matrix([("car", "car"), ("car", "truck"), ("truck", "truck")])
    assert classes == ("car", "truck")
    assert m.tolist() == [[1, 1], [0, 1]]


def _result() -> CheckResult:
    items = (
        CheckedItem("box_2d", "b1", "s0", "CAM_FRONT", "vehicle.car", 12.0, ("night",)),
        CheckedItem("box_2d", "b2", "s0", "CAM_FRONT", "vehicle.car", 30.0, ("night",)),
        CheckedItem("box_2d", "b3", "s0", "CAM_BACK", "human.pedestrian.adult", 50.0, ("night",)),
        CheckedItem("box_2d", "b4", "s1", "CAM_BACK", "vehicle.car", math.nan, ("night",)),
    )
    findings = (
        Finding("box2d_offset", "box_2d", 0.5, "b1", "s0", "CAM_FRONT", "moved", "vehicle.car",
                distance_m=12.0, tags=("night",), evidence={"shift_px": 12.0}),
        Finding("class_mismatch", "box_2d", 0.9, "b1", "s0", "CAM_FRONT", "car vs truck",
                "vehicle.car", distance_m=12.0, tags=("night",)),
        Finding("box2d_unmatched", "box_2d", 0.6, "b3", "s0", "CAM_BACK", "alone",
                "human.pedestrian.adult", distance_m=50.0, tags=("night",)),
    )  # fmt: skip
    return CheckResult("box_2d", items, findings, {"camera image without 2D labels": 2})


def test_build_report_counts_rates_and_ranking() -> None:
    rep = summarise_results([_result()], [("car", "car"), ("car", "truck")], checks=["box_2d"])
    s = rep.summary
    assert (s["items"], s["flagged_items"], s["findings"]) == (4, 2, 3)
    assert s["rate"] == 0.5
    assert s["by_check"]["box_2d"]["rate"] == 0.5
    assert s["by_kind"]["box2d_offset"] == {
        "items": 4, "flagged_items": 1, "findings": 1, "rate": 0.25, "check": "box_2d",
    }  # fmt: skip
    assert s["by_class"]["vehicle.car"]["items"] == 3
    assert s["by_class"]["vehicle.car"]["flagged_items"] == 1
    assert s["by_class"]["vehicle.car"]["findings"] == 2
    assert s["by_slice"]["tag:night"]["rate"] == 0.5
    assert s["by_slice"]["distance:0-20m"]["flagged_items"] == 1
    assert s["by_slice"]["distance:40m+"]["flagged_items"] == 1
    assert s["by_slice"]["distance:unknown"]["items"] == 1
    assert s["by_slice"]["sensor:CAM_BACK"] == {
        "items": 2, "flagged_items": 1, "findings": 1, "rate": 0.5,
    }  # fmt: skip
    assert s["by_level"] == {"high": 1, "medium": 2, "low": 0}
    assert [f.severity for f in rep.findings] == [0.9, 0.6, 0.5]
    assert rep.worst(1)[0].kind == "class_mismatch"
    assert rep.confusion.classes == ("car", "truck")
    assert rep.confusion.kappa == pytest.approx(0.0)
    assert rep.skipped == {"box_2d: camera image without 2D labels": 2}


def test_findings_json_round_trip_is_deterministic(tmp_path: Path) -> None:
    rep = summarise_results([_result()], [("car", "car")], checks=["box_2d"], samples=["s0", "s1"])
    a = write_findings_json(tmp_path / "a.json", rep)
    b = write_findings_json(tmp_path / "b.json", rep)
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert data["schema"] == FINDINGS_SCHEMA
    assert data["summary"]["by_slice"]["distance:unknown"]["rate"] == 0.0
    assert [f["kind"] for f in data["findings"]] == [
        "class_mismatch",
        "box2d_unmatched",
        "box2d_offset",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporaries
    back = read_findings_json(a)
    assert back.findings == rep.findings
    assert back.confusion.kappa == 1.0 and back.confusion.matrix.tolist() == [[1]]
    assert back.summary["items"] == 4 and back.samples == ("s0", "s1")


def test_findings_json_bad_input(tmp_path: Path) -> None:
    rep = summarise_results([_result()])
    with pytest.raises(AVFusionError, match="folder does not exist"):
        write_findings_json(tmp_path / "nope" / "f.json", rep)
    with pytest.raises(AVFusionError, match="is a folder"):
        write_findings_json(tmp_path, rep)
    with pytest.raises(AVFusionError, match=r"no findings\.json there"):
        read_findings_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(AVFusionError, match=r"expected 'avfusion\.findings/1'"):
        read_findings_json(bad)
    bad.write_text("{not json")
    with pytest.raises(AVFusionError, match="not a readable JSON"):
        read_findings_json(bad)


def test_parse_checks_and_run_checks_bad_input(clean_log: Any) -> None:
    assert parse_checks(None) == parse_checks("all")
    assert parse_checks("temporal, box_2d") == ("box_2d", "temporal")
    with pytest.raises(AVFusionError, match="unknown check\\(s\\) 'nope'"):
        parse_checks("box_2d,nope")
    with pytest.raises(AVFusionError, match="sample token\\(s\\) bogus not in the log"):
        run_checks(clean_log, checks="temporal", sample_tokens=["bogus"])
    with pytest.raises(AVFusionError, match="occupancy folder does not exist"):
        run_checks(clean_log, checks="occupancy", occupancy_dir="/nonexistent/occ")


def test_run_checks_on_the_clean_log(clean_log: Any) -> None:
    calls: list[tuple[int, int]] = []
    rep = run_checks(
        clean_log, checks="box_2d,temporal", progress=lambda d, t, _w: calls.append((d, t))
    )
    assert calls[-1] == (len(clean_log) + 1, len(clean_log) + 1)
    assert rep.checks == ("box_2d", "temporal")
    assert rep.summary["rate"] <= 0.01
    assert rep.confusion.kappa == 1.0 and rep.confusion.pairs > 250
    assert set(rep.summary["by_check"]) == {"box_2d", "temporal"}
    assert any(k.startswith("sensor:THERMAL_FRONT") for k in rep.summary["by_slice"])
    assert "tag:day" in rep.summary["by_slice"]
