"""The per-frame runner: atomic outputs, a deterministic manifest, resume with verification,
failures reported per task, and byte-identical results whatever the executor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from avfusion.errors import AVFusionError, ConfigError
from avfusion.fusion.occupancy import OccupancyJob, OccupancyOptions
from avfusion.runner import FrameResult, FrameTask, run_job

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class _ToyJob:
    """Writes one small file per task; task 'bad' fails."""

    keys: tuple[str, ...]
    name: str = "toy"

    def config(self) -> dict[str, object]:
        return {"keys": list(self.keys)}

    def tasks(self) -> list[FrameTask]:
        return [FrameTask(k) for k in self.keys]

    def __call__(self, task: FrameTask) -> FrameResult:
        if task.key == "bad":
            raise AVFusionError("sample bad: no LiDAR keyframe")
        return FrameResult(task.key, {f"out/{task.key}.txt": task.key.encode() * 3}, {"n": 3})


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "run_summary.json"
    }


def test_runner_resumes_verifies_and_reports_failures(tmp_path: Path) -> None:
    job = _ToyJob(("a", "b", "bad"))
    calls: list[tuple[int, int, str]] = []
    s = run_job(job, tmp_path, progress=lambda d, t, k, sec: calls.append((d, t, k)))
    assert (s.done, s.skipped, list(s.failed)) == (2, 0, ["bad"])
    assert "no LiDAR keyframe" in s.failed["bad"]
    assert calls[0] == (0, 3, "") and calls[-1][:2] == (3, 3)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["tasks"]) == ["a", "b"]
    assert manifest["tasks"]["a"]["files"]["out/a.txt"]["bytes"] == 3
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["done"] == 2 and "bad" in summary["failed"]
    # rerun: verified frames are skipped, the failed one is tried again
    s2 = run_job(job, tmp_path)
    assert (s2.done, s2.skipped, list(s2.failed)) == (0, 2, ["bad"])
    # a changed file is no longer verified and is written again
    (tmp_path / "out" / "a.txt").write_bytes(b"tampered")
    s3 = run_job(job, tmp_path)
    assert (s3.done, s3.skipped) == (1, 1)
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"aaa"
    # another configuration: nothing is trusted
    s4 = run_job(_ToyJob(("a", "b")), tmp_path)
    assert (s4.done, s4.skipped) == (2, 0)
    assert not list(tmp_path.rglob("*.tmp"))


def test_runner_rejects_bad_arguments(tmp_path: Path) -> None:
    job = _ToyJob(("a",))
    with pytest.raises(ConfigError, match="executor"):
        run_job(job, tmp_path, executor="slurm")
    with pytest.raises(ConfigError, match="workers"):
        run_job(job, tmp_path, workers=0)
    with pytest.raises(ConfigError, match="address"):
        run_job(job, tmp_path, address="ray://x:10001")


def test_runner_refuses_outputs_outside_the_folder(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Escaping(_ToyJob):
        def __call__(self, task: FrameTask) -> FrameResult:
            return FrameResult(task.key, {"../escape.txt": b"x"})

    with pytest.raises(AVFusionError, match="inside the output folder"):
        run_job(Escaping(("a",)), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


@pytest.fixture(scope="module")
def occupancy_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[OccupancyJob, Path]:
    from avfusion.synth import ensure_sample_data

    root = ensure_sample_data(REPO / "sample_data")
    job = OccupancyJob(str(root), OccupancyOptions().with_sweeps(3), limit=3)
    out = tmp_path_factory.mktemp("occ_local")
    summary = run_job(job, out)
    assert summary.done == 3 and not summary.failed
    return job, out


def test_occupancy_job_writes_occ3d_layout(occupancy_reference: tuple[OccupancyJob, Path]) -> None:
    import numpy as np

    _job, out = occupancy_reference
    files = sorted(out.glob("gts/*/*/labels.npz"))
    assert len(files) == 3
    assert files[0].parent.parent.name == "scene-0000"
    with np.load(files[0]) as z:
        assert z["semantics"].shape == (200, 200, 16)
        assert z["mask_camera"].max() == 1 and z["mask_lidar"].max() == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["options"]["aggregation"]["sweeps"] == 3
    info = next(iter(manifest["tasks"].values()))["info"]
    assert info["scene"] == "scene-0000" and info["occupied_voxels"] > 1000


def test_occupancy_is_byte_identical_on_worker_processes(
    occupancy_reference: tuple[OccupancyJob, Path], tmp_path: Path
) -> None:
    job, ref = occupancy_reference
    summary = run_job(job, tmp_path, workers=2)
    assert summary.done == 3 and summary.workers == 2
    assert _tree(tmp_path) == _tree(ref)


def test_occupancy_is_byte_identical_on_ray(
    occupancy_reference: tuple[OccupancyJob, Path], tmp_path: Path
) -> None:
    """A real local Ray instance with two worker processes."""
    pytest.importorskip("ray")
    job, ref = occupancy_reference
    summary = run_job(job, tmp_path, executor="ray", workers=2)
    assert summary.done == 3 and not summary.failed
    assert _tree(tmp_path) == _tree(ref)
