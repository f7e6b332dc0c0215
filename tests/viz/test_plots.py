"""Sync-report chart and PNG encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avfusion.errors import AVFusionError
from avfusion.viz.plots import encode_png, nice_ticks, render_sync_plot

from ._helpers import assert_golden, sample_root

REPORT = {
    "format_version": 1,
    "ref_sensor": "LIDAR_TOP",
    "streams": {
        "LIDAR_TOP": {"rate_hz": 20.0, "jitter_std_ns": 24000.0, "gaps": {"count": 0}, "drops": 0,
                      "duplicates": {"count": 0}, "reversals": {"count": 0},
                      "pose_coverage": {"fraction": 1.0}},
        "CAM_FRONT": {"rate_hz": 12.0, "jitter_std_ns": 180000.0, "gaps": {"count": 2}, "drops": 3,
                      "duplicates": {"count": 1}, "reversals": {"count": 0},
                      "pose_coverage": {"fraction": 0.95}},
    },
    "pairs": [
        {"ref": "LIDAR_TOP", "other": "CAM_FRONT", "tolerance_ns": 50_000_000, "match_rate": 1.0,
         "dt_median_ns": 7_600_000.0, "dt_p5_ns": -25_800_000.0, "dt_p95_ns": 41_000_000.0},
        {"ref": "LIDAR_TOP", "other": "RADAR_FRONT", "tolerance_ns": 50_000_000, "match_rate": 0.5,
         "dt_median_ns": None, "dt_p5_ns": None, "dt_p95_ns": None},
    ],
}  # fmt: skip


def test_encode_png_round_trip() -> None:
    import cv2

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(back, img)  # lossless, RGB order kept
    with pytest.raises(AVFusionError, match="encode_png"):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_nice_ticks() -> None:
    assert nice_ticks(-43.0, 43.0).tolist() == [-40, -20, 0, 20, 40]
    assert nice_ticks(0.0, 1.0, 5).tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(3.0, 3.0).size >= 2
    with pytest.raises(AVFusionError, match="finite"):
        nice_ticks(0.0, float("inf"))


def test_sync_plot_golden_and_content() -> None:
    img = render_sync_plot(REPORT, width=900)
    assert img.shape[1] == 900 and img.dtype == np.uint8
    # the CAM_FRONT bar (p5..p95) is drawn in the bar colour, the RADAR row has none
    bar = np.all(img == (70, 130, 220), axis=2)
    rows = np.flatnonzero(bar.any(axis=1))
    assert rows.size and rows.max() - rows.min() < 20  # one bar only
    cols = np.flatnonzero(bar.any(axis=0))
    assert cols.max() - cols.min() > 100
    reddish = (img[..., 0] > 150) & (img[..., 1] < 120) & (img[..., 2] < 120)
    assert reddish.sum() > 80  # anomalies (gaps, drops, dup, coverage, 50 % match) in red
    assert_golden(img, "sync_plot")


def test_sync_plot_errors() -> None:
    with pytest.raises(AVFusionError, match="no 'pairs'"):
        render_sync_plot({"streams": {}})
    with pytest.raises(AVFusionError, match=r"pairs\[0\] has no 'other'"):
        render_sync_plot({"streams": {}, "pairs": [{"ref": "A"}]})
    with pytest.raises(AVFusionError, match=r"expected the sync_report\.json dict"):
        render_sync_plot([])  # type: ignore[arg-type]
    with pytest.raises(AVFusionError, match="width must be"):
        render_sync_plot(REPORT, width=10)


def test_sample_sync_report_smoke() -> None:
    from avfusion.calibration.syncreport import sync_report
    from avfusion.io.nuscenes import NuScenesLog

    report = json.loads(json.dumps(sync_report(NuScenesLog(sample_root())).as_dict()))
    img = render_sync_plot(report)
    assert img.shape[1] == 1200 and img.shape[0] >= 200 and img.std() > 10
