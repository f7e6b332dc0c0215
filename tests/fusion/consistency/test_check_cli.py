"""`avfusion check LOG --out findings.json`: the command on the sample log and its bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from avfusion.cli import app
from avfusion.fusion.consistency.report import read_findings_json

runner = CliRunner()


def test_check_finds_the_injected_errors_and_names_the_worst(
    sample_log: Any, tmp_path: Path
) -> None:
    out = tmp_path / "findings.json"
    res = runner.invoke(
        app,
        [
            "check",
            str(sample_log.root),
            "--out",
            str(out),
            "--checks",
            "box_2d,temporal",
            "--worst",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    report = read_findings_json(out)
    assert report.checks == ("box_2d", "temporal")
    assert len(report.samples) == len(sample_log)
    data = json.loads(out.read_text())
    assert data["schema"] == "avfusion.findings/1"
    assert data["confusion"]["kappa"] == 1.0  # 2D and 3D classes were swapped together
    kinds = {f.kind for f in report.findings}
    assert {"box2d_offset", "class_mismatch", "id_switch", "label_lag"} <= kinds
    # the worst findings are printed, most severe first, with what they are about
    assert "worst findings (5 of" in res.output
    for f in report.worst(5):
        assert f.kind in res.output
    assert "box_2d" in res.output and "temporal" in res.output  # the counts table
    assert str(out) in res.output.replace("\n", "")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avfusion", "check", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_bad_input_gives_one_line_and_exit_2(sample_log: Any, tmp_path: Path) -> None:
    out = str(tmp_path / "f.json")
    proc = _run(str(sample_log.root), "--out", out, "--checks", "box_2d,nope")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown check(s) 'nope'" in lines[0]
    proc = _run(str(sample_log.root), "--out", out, "--limit", "0")
    assert proc.returncode == 2 and "--limit must be >= 1" in proc.stderr
    proc = _run("/nonexistent/log", "--out", out)
    assert proc.returncode == 2 and "/nonexistent/log" in proc.stderr
    assert not Path(out).exists()
