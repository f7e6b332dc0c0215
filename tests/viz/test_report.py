"""The HTML QA report: files, tables, escaping, determinism, resume, bad input, the qa command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avfusion.errors import AVFusionError, LogFormatError
from avfusion.fusion.consistency.findings import Finding
from avfusion.viz.report import build_report, load_findings, occupancy_stats

REPO = Path(__file__).resolve().parents[2]
EVIL = '<script>alert("pwned")</script> & <b>bold</b>'


def sample_log() -> Any:
    from avfusion.io import open_log
    from avfusion.synth import ensure_sample_data

    return open_log(ensure_sample_data(REPO / "sample_data"))


def synthetic_findings(tokens: list[str], outside: str | None = None) -> list[dict[str, Any]]:
    """Findings rows (``Finding.to_json()``) about ``tokens``: several checks, kinds, classes,
    sensors and every severity band; one message is hostile HTML; one is about ``outside``."""
    t0, t1 = tokens[0], tokens[-1]
    rows = [
        Finding("box_empty", "box_lidar", 0.92, "ann-1", t0, "LIDAR_TOP",
                "no LiDAR return inside the box", category="vehicle.car",
                annotation_token="ann-1", distance_m=12.5, tags=("day",),
                evidence={"points_in_box": 0, "expected": 35.2}),
        Finding("box2d_offset", "box_2d", 0.55, "b2d-7", t0, "CAM_FRONT", EVIL,
                category="human.pedestrian.adult", box2d_token="b2d-7", tags=("night", "rain")),
        Finding("box3d_unmatched", "box_2d", 0.2, "ann-2", t1, "CAM_FRONT_LEFT",
                "visible box without a 2D box", category="vehicle.truck", distance_m=30.0),
        Finding("class_flip", "temporal", 0.8, "inst-3", t1, "",
                "the track changes class from car to truck", category="vehicle.car",
                instance_token="inst-3"),
        Finding("missing_box", "unlabelled", 0.45, "cluster-1", t1, "LIDAR_TOP",
                "a cluster of 40 points above the ground in no box"),
    ]  # fmt: skip
    if outside is not None:
        rows.append(
            Finding(
                "box_sparse",
                "box_lidar",
                0.5,
                "ann-9",
                outside,
                "LIDAR_TOP",
                "few returns",
                category="vehicle.car",
            )
        )
    return [f.to_json() for f in rows]


def calibration_doc() -> dict[str, Any]:
    """A calibration_check.json document (the ``avfusion calib check`` format)."""

    def row(sensor: str, ok: bool) -> dict[str, Any]:
        return {
            "sensor": sensor, "lidar": "LIDAR_TOP", "ok": ok,
            "verdict": "ok: local optimum" if ok else "miscalibrated: 0.40° away",
            "n_frames": 20, "n_points": 5000, "flagged_fraction": 0.0 if ok else 0.6,
            "mean_improvement": 0.01, "cost_current": 0.5, "cost_best": 0.49,
            "correction_rotation_deg": [0.01, -0.02, 0.0],
            "correction_translation_m": [0.001, 0.0, None],
            "std_rotation_deg": [0.01, 0.01, 0.01], "std_translation_m": [0.01, 0.01, 0.01],
            "frames": [],
        }  # fmt: skip

    return {
        "format_version": 1,
        "lidar": "LIDAR_TOP",
        "sensors": {
            "CAM_FRONT": row("CAM_FRONT", True),
            "CAM_FRONT_LEFT": row("CAM_FRONT_LEFT", False),
        },
    }


def report_inputs(log: Any, tokens: list[str]) -> dict[str, Any]:
    """Every input of ``build_report`` for ``tokens`` of the sample log (fast to make: the
    occupancy is the synthetic truth, the calibration check a document)."""
    from avfusion.calibration.syncreport import sync_report

    outside = next(t for t in log.sample_tokens if t not in tokens)
    rows = synthetic_findings(tokens, outside)
    document = {  # the findings.json layout: rows plus rate tables and skipped counts
        "schema": "avfusion.findings/1",
        "findings": rows,
        "summary": {
            "by_check": {
                "box_lidar": {"findings": 2, "flagged_items": 2, "items": 40, "rate": 0.05},
                "box_2d": {"findings": 2, "flagged_items": 2, "items": 80, "rate": 0.025},
            },
            "by_class": {
                "vehicle.car": {"findings": 3, "flagged_items": 2, "items": 50, "rate": 0.04}
            },
            "by_slice": {
                "tag:night": {"findings": 1, "flagged_items": 1, "items": 4, "rate": 0.25}
            },
        },
        "skipped": {"box_radar: outside the radar field of view": 17},
    }
    return {
        "findings": document,
        "calibration_check": calibration_doc(),
        "sync_report": sync_report(log),
        "occupancy_dir": Path(log.root) / "truth" / "occupancy",
        "sample_tokens": tokens,
    }


@pytest.fixture(scope="module")
def log() -> Any:
    return sample_log()


_SHARED: dict[str, tuple[Path, dict[str, Any], list[tuple[int, int]]]] = {}


def shared_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One two-frame report with every input, built once per test session (the browser test
    looks at the same report); callers only read it."""
    if "report" not in _SHARED:
        log = sample_log()
        out = tmp_path_factory.mktemp("report")
        inputs = report_inputs(log, [log.sample_tokens[0], log.sample_tokens[5]])
        calls: list[tuple[int, int]] = []
        index = build_report(log, out, progress=lambda d, t, *_: calls.append((d, t)), **inputs)
        _SHARED["report"] = (index, inputs, calls)
    index, inputs, calls = _SHARED["report"]
    assert calls[-1] == (2, 2)  # progress: after each of the two frames
    return index, inputs


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return shared_report(tmp_path_factory)


def _rows(html: str, table_id: str) -> list[str]:
    m = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S)
    assert m is not None, f"no table {table_id}"
    return re.findall(r"<tr\b.*?</tr>", m.group(1), re.S)


def test_report_files_and_index_tables(log: Any, report: tuple[Path, dict[str, Any]]) -> None:
    index, inputs = report
    out = index.parent
    assert index == out / "index.html"
    html = index.read_text()
    tokens = inputs["sample_tokens"]
    for t in tokens:
        page = out / "frames" / f"{t}.html"
        assert page.is_file()
        assert f'href="frames/{t}.html"' in html
        assert f'src="img/{t}/thumb.png" alt="overview of frame' in html  # a small copy
    # the frames table lists exactly the reported frames, in log order
    frames = _rows(html, "frames-table")
    assert [re.search(r'data-token="(\w+)"', r).group(1) for r in frames] == tokens  # type: ignore[union-attr]
    # sync quality: one row per sensor of the log, the reference marked
    sync = _rows(html, "sync-table")
    assert len(sync) == len(log.sensors) and any("reference" in r for r in sync)
    # calibration: one row per checked sensor with its verdict
    calib = _rows(html, "calibration-table")
    assert len(calib) == 2 and "miscalibrated" in calib[0] + calib[1]
    # findings per kind / class / slice / sensor; totals add up to every finding (6)
    kinds = _rows(html, "findings-by-kind")
    totals = [int(re.findall(r'<td class="num">(\d+)</td>', r)[-1]) for r in kinds]
    assert sum(totals) == 6 and any("box_lidar / box_empty" in r for r in kinds)
    assert any(">night<" in r for r in _rows(html, "findings-by-slice"))
    assert any(">vehicle.car<" in r for r in _rows(html, "findings-by-class"))
    # rates (flagged items of the items checked) and what was not checked, from the document
    rates = _rows(html, "rates-check")
    assert len(rates) == 2 and ">40<" in rates[0] and ">5.0<" in rates[0]
    assert ">25.0<" in _rows(html, "rates-slice")[0]
    assert ">17<" in _rows(html, "findings-skipped")[0]
    # occupancy statistics per frame and the class histogram
    occ = _rows(html, "occupancy-table")
    assert len(occ) == 2
    assert any(">car<" in r for r in _rows(html, "occupancy-classes"))
    # every finding is in the findings table; the one outside the report has no link
    findings = _rows(html, "findings-table")
    assert len(findings) == 6
    assert sum('href="frames/' in r for r in findings) == 5
    assert "1 finding about samples that are not in this report" in html
    # findings come sorted by severity, with the data-* attributes the filters use
    sev = [
        float(s)
        for s in re.findall(r'<td class="num" data-sort="([\d.]+)">', "".join(findings))[::2]
    ]
    assert sev == sorted(sev, reverse=True)
    assert 'data-level="high"' in findings[0] and 'data-category="vehicle.car"' in findings[0]
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_frame_page_images_and_findings(report: tuple[Path, dict[str, Any]]) -> None:
    index, inputs = report
    out = index.parent
    t0 = inputs["sample_tokens"][0]
    page = (out / "frames" / f"{t0}.html").read_text()
    srcs = re.findall(r'<img src="\.\./([^"]+)"', page)
    assert any("montage" in s for s in srcs) and any("bev" in s for s in srcs)
    assert any("overlay_CAM_FRONT" in s for s in srcs) and any("occ_topdown" in s for s in srcs)
    for rel in srcs:
        data = (out / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", rel
    # the frame's own findings only (2 of 6), linked from the index by anchor
    rows = _rows(page, "frame-findings")
    assert len(rows) == 2
    assert 'id="f0"' in page
    assert f'href="frames/{t0}.html#f0"' in index.read_text()
    assert 'rel="next"' in page and 'href="../index.html"' in page


def test_everything_is_escaped(report: tuple[Path, dict[str, Any]]) -> None:
    index, inputs = report
    for path in [index, index.parent / "frames" / f"{inputs['sample_tokens'][0]}.html"]:
        html = path.read_text()
        assert "<script>alert" not in html and "<b>bold" not in html
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold" in html


def test_deterministic_and_resumed(
    log: Any, report: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    index, inputs = report
    again = build_report(log, tmp_path / "again", **inputs)
    a, b = index.parent, again.parent
    skip = {"img/run_summary.json"}
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel not in skip:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # a second run into the same folder re-renders nothing and writes the same pages
    before = (b / "index.html").read_bytes()
    build_report(log, b, **inputs)
    summary = json.loads((b / "img" / "run_summary.json").read_text())
    assert summary["skipped_verified"] == 2 and summary["done"] == 0
    assert (b / "index.html").read_bytes() == before


def test_load_findings_orders_and_accepts_documents(tmp_path: Path, log: Any) -> None:
    rows = synthetic_findings(log.sample_tokens[:2])
    path = tmp_path / "findings.json"
    path.write_text(json.dumps({"schema": "avfusion.findings/1", "findings": rows}))
    found = load_findings(path)
    assert [f.severity for f in found] == sorted((r["severity"] for r in rows), reverse=True)
    assert load_findings(rows) == found
    assert load_findings([Finding.from_json(r) for r in rows]) == found


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"schema": "other/2", "findings": []}', "schema 'other/2'"),
        ('{"rows": []}', "no 'findings' list"),
        ('[{"kind": "box_empty"}]', "row 0 has no field"),
        ('[{"kind": "teleported", "check": "box_lidar", "severity": 0.5, "item_id": "a", '
         '"sample_token": "s", "sensor": "", "message": ""}]', "unknown finding kind"),
        ('[{"kind": "box_empty", "check": "box_lidar", "severity": 7, "item_id": "a", '
         '"sample_token": "s", "sensor": "", "message": ""}]', "not in \\[0, 1\\]"),
        ("[3]", "row 0 is not an object"),
    ],
)  # fmt: skip
def test_bad_findings_file(tmp_path: Path, log: Any, content: str, match: str) -> None:
    path = tmp_path / "findings.json"
    path.write_text(content)
    with pytest.raises(LogFormatError, match=match):
        build_report(log, tmp_path / "out", findings=path)
    assert not (tmp_path / "out").exists()  # nothing is written for bad input


def test_bad_inputs(tmp_path: Path, log: Any) -> None:
    with pytest.raises(AVFusionError, match="cannot read it"):
        build_report(log, tmp_path / "o", findings=tmp_path / "missing.json")
    with pytest.raises(AVFusionError, match="sample tokens not in"):
        build_report(log, tmp_path / "o", sample_tokens=["no-such-sample"])
    with pytest.raises(AVFusionError, match="does not exist or is not a folder"):
        build_report(log, tmp_path / "o", occupancy_dir=tmp_path / "nowhere")
    with pytest.raises(LogFormatError, match="sensor 'CAM_FRONT' has no 'ok' field"):
        build_report(log, tmp_path / "o", calibration_check={"sensors": {"CAM_FRONT": {}}})
    with pytest.raises(LogFormatError, match="no 'streams' table"):
        build_report(log, tmp_path / "o", sync_report={"pairs": []})
    with pytest.raises(AVFusionError, match="nuScenes-style log"):
        build_report(object(), tmp_path / "o")
    with pytest.raises(AVFusionError, match="max_width_px"):
        build_report(log, tmp_path / "o", max_width_px=0)
    assert not (tmp_path / "o").exists()


def test_occupancy_stats_fractions() -> None:
    sem = np.full((4, 5, 2), 17, np.uint8)
    sem[0, 0, 0] = 4  # car
    sem[1, 0, 0] = 4
    sem[2, 0, 0] = 15  # manmade
    ml = np.zeros_like(sem)
    ml[:2] = 1  # 20 voxels seen by the LiDAR (3 occupied among them... 2)
    mc = np.zeros_like(sem)
    mc[3, 0, 0] = 1
    s = occupancy_stats(sem, ml, mc)
    n = sem.size
    assert s["occupied_voxels"] == 3 and s["occupied"] == pytest.approx(3 / n)
    assert s["free"] == pytest.approx((20 - 2 + 1) / n)
    assert s["unobserved"] == pytest.approx(1 - 3 / n - 19 / n)
    assert s["classes"] == [("car", 2), ("manmade", 1)]
    with pytest.raises(AVFusionError, match="one 3D grid shape"):
        occupancy_stats(sem, ml[:1], mc)


def test_qa_command(tmp_path: Path, log: Any) -> None:
    from typer.testing import CliRunner

    from avfusion.cli import app
    from avfusion.errors import ConfigError

    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps({"findings": synthetic_findings(log.sample_tokens[:1])}))
    rrd = tmp_path / "log.rrd"
    res = CliRunner().invoke(
        app,
        ["qa", str(log.root), "--out", str(tmp_path / "qa"), "--findings", str(findings),
         "--limit", "1", "--rerun", str(rrd)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    index = tmp_path / "qa" / "index.html"
    assert index.is_file() and "QA report" in res.output and "index.html" in res.output
    assert len(_rows(index.read_text(), "frames-table")) == 1
    assert len(_rows(index.read_text(), "findings-table")) == 5
    assert rrd.is_file() and rrd.stat().st_size > 10_000
    res = CliRunner().invoke(
        app, ["qa", str(log.root), "--out", str(tmp_path / "x"), "--limit", "0"]
    )
    assert isinstance(res.exception, ConfigError) and "--limit" in str(res.exception)


@pytest.mark.realdata
def test_report_on_the_real_nuscenes_keyframe(realdata: Path, tmp_path: Path) -> None:
    from avfusion.io import open_log

    log = open_log(realdata / "nuscenes-keyframe")
    index = build_report(log, tmp_path / "real")
    html = index.read_text()
    token = log.sample_tokens[0]
    assert len(_rows(html, "frames-table")) == 1
    page = (tmp_path / "real" / "frames" / f"{token}.html").read_text()
    srcs = re.findall(r'<img src="\.\./([^"]+)"', page)
    for cam in ("CAM_FRONT", "CAM_BACK", "CAM_FRONT_LEFT"):
        assert f"img/{token}/overlay_{cam}.png" in srcs
    assert any("bev" in s for s in srcs)
    for rel in srcs:
        assert (tmp_path / "real" / rel).read_bytes()[:4] == b"\x89PNG"


def test_a_renderer_failure_is_shown_not_hidden(
    log: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avfusion.viz.bev as bev
    import avfusion.viz.overlay as overlay

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AVFusionError("no LiDAR sweep near this sample")

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("index out of range")

    monkeypatch.setattr(bev, "render_montage", broken)
    monkeypatch.setattr(overlay, "render_calibration_check", broken)
    t0 = log.sample_tokens[0]
    build_report(log, tmp_path / "r", sample_tokens=[t0])
    page = (tmp_path / "r" / "frames" / f"{t0}.html").read_text()
    assert "all cameras with projected LiDAR and boxes: no LiDAR sweep near this sample" in page
    assert "montage" not in "".join(re.findall(r'<img src="([^"]+)"', page))
    assert "overlay_CAM_FRONT" in page  # the other images are there
    # a bug (not an AVFusionError) fails the frame; the index, the page and `qa` say so
    from typer.testing import CliRunner

    from avfusion.cli import app

    monkeypatch.setattr(bev, "render_bev", bug)
    res = CliRunner().invoke(
        app, ["qa", str(log.root), "--out", str(tmp_path / "r2"), "--limit", "1"]
    )
    assert res.exit_code == 1 and "index out of range" in res.output
    html = (tmp_path / "r2" / "index.html").read_text()
    assert "could not be rendered: RuntimeError: index out of range" in html
    page = (tmp_path / "r2" / "frames" / f"{t0}.html").read_text()
    assert "this frame could not be rendered" in page
