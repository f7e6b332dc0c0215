"""The command line: version, help, error mapping."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import avfusion
from avfusion.cli import app

runner = CliRunner()


def test_version_and_help() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and f"avfusion {avfusion.__version__}" in res.output
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for verb in ("demo", "synth", "info"):
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
