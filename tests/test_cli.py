"""The command line: version, help, error mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import avfusion
from avfusion.cli import app

runner = CliRunner()


def test_version_and_help() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and f"avfusion {avfusion.__version__}" in res.output
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for verb in ("demo", "synth", "info", "sync-report"):
        assert verb in res.output


def test_library_error_becomes_one_line_and_exit_2(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "avfusion", "info", "/nonexistent/log"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "/nonexistent/log" in lines[0]


def test_import_avfusion_stays_light() -> None:
    code = "import sys, avfusion; print(sorted(m for m in ('open3d', 'ray', 'rerun', 'torch') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_info_on_the_real_nuscenes_keyframe(realdata: object) -> None:
    from pathlib import Path

    root = Path(str(realdata)) / "nuscenes-keyframe"
    res = runner.invoke(app, ["info", str(root)])
    assert res.exit_code == 0, res.output
    assert "CAM_FRONT" in res.output and "LIDAR_TOP" in res.output and "1 frames" in res.output


# ---- sync-report (issue 5) -------------------------------------------------------------------


def test_sync_report_on_sample_data(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from avfusion.synth import ensure_sample_data

    root = ensure_sample_data(Path(__file__).resolve().parents[1] / "sample_data")
    out = Path(str(tmp_path)) / "report"
    res = runner.invoke(app, ["sync-report", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "LIDAR_TOP" in res.output and "THERMAL_FRONT" in res.output
    data = json.loads((out / "sync_report.json").read_text())
    assert data["format_version"] == 1 and data["ref_sensor"] == "LIDAR_TOP"
    streams = data["streams"]
    rates = {"LIDAR_TOP": 20.0, "CAM_FRONT": 12.0, "RADAR_FRONT": 13.0, "THERMAL_FRONT": 9.0}
    for name, hz in rates.items():
        assert abs(streams[name]["rate_hz"] - hz) < 0.05, (name, streams[name]["rate_hz"])
    for name, s in streams.items():
        assert s["drops"] == 0 and s["gaps"]["count"] == 0, name
        assert s["duplicates"]["count"] == 0 and s["reversals"]["count"] == 0, name
        assert s["pose_coverage"]["fraction"] == 1.0, name
    # LiDAR jitter σ 20 µs per stamp -> period σ ≈ 28 µs; radar 800 µs -> ≈ 1.1 ms.
    assert streams["LIDAR_TOP"]["jitter_std_ns"] < 50_000
    assert 0.5e6 < streams["RADAR_FRONT"]["jitter_std_ns"] < 2e6
    pairs = {p["other"]: p for p in data["pairs"]}
    assert set(pairs) == set(streams) - {"LIDAR_TOP"}
    assert pairs["CAM_FRONT"]["match_rate"] == 1.0
    assert all(p["dt_max_abs_ns"] <= 50_000_000 for p in pairs.values())
    assert any("NuScenesLog" in n for n in data["notes"])  # the reader sorts its streams


def test_sync_report_on_the_real_nuscenes_keyframe(realdata: object, tmp_path: object) -> None:
    import json
    from pathlib import Path

    from avfusion.errors import SyncError

    root = Path(str(realdata)) / "nuscenes-keyframe"
    out = Path(str(tmp_path))
    res = runner.invoke(app, ["sync-report", str(root), "--out", str(out), "--tolerance-ms", "40"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "sync_report.json").read_text())
    assert all(s["count"] == 1 and s["rate_hz"] is None for s in data["streams"].values())
    pairs = {p["other"]: p for p in data["pairs"]}
    assert pairs["CAM_FRONT"]["dt_median_ns"] == -35_491_000  # camera 35.5 ms before the LiDAR
    assert pairs["CAM_FRONT_LEFT"]["n_matched"] == 0  # -43.1 ms: outside the 40 ms tolerance
    res = runner.invoke(app, ["sync-report", str(root), "--ref", "GPS"])
    assert res.exit_code != 0 and isinstance(res.exception, SyncError)
    assert "reference sensor 'GPS'" in str(res.exception)


def test_info_on_the_real_ouster_bag_suggests_a_rig(realdata: object, tmp_path: object) -> None:
    from pathlib import Path

    from avfusion.io.rig import load_rig

    bag = (
        Path(str(realdata)) / "virtual-vehicle__pointcloudset/tests/testdata/test.derived_ros1.bag"
    )
    rig_file = Path(str(tmp_path)) / "rig.yaml"
    res = runner.invoke(app, ["info", str(bag), "--rig-out", str(rig_file)])
    assert res.exit_code == 0, res.output
    for text in ("/os1_cloud_node/points", "/os1_node/lidar_packets", "os1_sensor→os1_lidar"):
        assert text in res.output
    assert "NO POSE SOURCE" in res.output and "source: none" in res.output
    rig = load_rig(rig_file)
    assert rig.reference_sensor == "os1_lidar" and rig.pose.source == "none"
    res = runner.invoke(app, ["info", str(bag), "--rig", str(rig_file)])
    assert res.exit_code == 0, res.output
    assert "2 frames" in res.output
    res = runner.invoke(app, ["convert", str(bag), "--out", str(Path(str(tmp_path)) / "out")])
    assert res.exit_code != 0 and "--rig" in res.output


def test_convert_is_a_verb() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "convert" in res.output
    res = runner.invoke(app, ["convert", "--help"])
    assert res.exit_code == 0 and "--rig" in res.output and "--out" in res.output


def _true_offsets_calibration(root: object, out: object) -> object:
    """calibration.json with the sample log's extrinsics and its true clock offsets."""
    import json
    from pathlib import Path

    from avfusion.calibration.extrinsics import calibration_record, write_calibration
    from avfusion.io import NuScenesLog

    truth = json.loads((Path(str(root)) / "truth" / "calibration.json").read_text())["sensors"]
    log = NuScenesLog(Path(str(root)))
    records = {
        n: calibration_record(n, s.ego_from_sensor, time_offset_ns=truth[n]["clock_offset_ns"])
        for n, s in log.sensors.items()
    }
    return write_calibration(records, Path(str(out)))


def test_calib_check_and_refine_on_sample_data(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from avfusion.calibration.extrinsics import read_calibration
    from avfusion.synth import ensure_sample_data

    root = ensure_sample_data(Path(__file__).resolve().parents[1] / "sample_data")
    calib = _true_offsets_calibration(root, Path(str(tmp_path)) / "truth")
    out = Path(str(tmp_path)) / "check"
    res = runner.invoke(
        app,
        ["calib", "check", str(root), "--out", str(out), "--max-frames", "12",
         "--calibration", str(calib)],
    )  # fmt: skip
    # 12 frames: with the check's thermal pre-blur, 6 frames put THERMAL_FRONT's log-wide optimum
    # 0.21° of roll away (a false "miscalibrated"); 12 frames and more say ok.
    assert res.exit_code == 0, res.output
    assert "THERMAL_FRONT" in res.output and "CAM_FRONT" in res.output
    doc = json.loads((out / "calibration_check.json").read_text())
    assert doc["format_version"] == 1
    sensors = doc["sensors"]
    assert set(sensors) == {"CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "THERMAL_FRONT"}
    assert sensors["CAM_FRONT"]["ok"] and sensors["THERMAL_FRONT"]["ok"]
    assert all(len(s["frames"]) == s["n_frames"] > 0 for s in sensors.values())
    refined = Path(str(tmp_path)) / "refined"
    res = runner.invoke(
        app,
        ["calib", "refine", str(root), "--sensor", "THERMAL_FRONT", "--out", str(refined),
         "--calibration", str(calib)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    back = read_calibration(refined / "calibration.json")["THERMAL_FRONT"]
    assert back.time_offset_ns == 25_000_000
    doc = json.loads((refined / "calibration.json").read_text())["sensors"]["THERMAL_FRONT"]
    assert (
        doc["estimate"]["observable"] is True
        and len(doc["calibrated_sensor"]["camera_intrinsic"]) == 3
    )


def test_calib_errors_are_one_line(tmp_path: object) -> None:
    from pathlib import Path

    from avfusion.synth import ensure_sample_data

    root = ensure_sample_data(Path(__file__).resolve().parents[1] / "sample_data")
    cmd = [
        sys.executable,
        "-m",
        "avfusion",
        "calib",
        "refine",
        str(root),
        "--sensor",
        "LIDAR_TOP",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "'LIDAR_TOP' is a lidar sensor, not a camera or thermal camera" in res.stderr
    res = runner.invoke(app, ["calib", "check", str(root), "--calibration", str(tmp_path)])
    assert res.exit_code != 0


def test_occupancy_command_writes_and_resumes(tmp_path: Path) -> None:
    from avfusion.synth import ensure_sample_data

    root = ensure_sample_data(Path(__file__).resolve().parents[1] / "sample_data")
    args = ["occupancy", str(root), "--out", str(tmp_path), "--sweeps", "1", "--limit", "2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 frames written, 0 already done" in first.output
    assert len(list(tmp_path.glob("gts/scene-0000/*/labels.npz"))) == 2
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 frames written, 2 already done and verified" in again.output
    bad = subprocess.run(
        [sys.executable, "-m", "avfusion", "occupancy", str(root), "--out", str(tmp_path),
         "--executor", "slurm"], capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "executor must be 'local' or 'ray'" in bad.stderr
