"""The rerun export: a non-trivial .rrd with the expected entities, read back with rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from avfusion.errors import AVFusionError, ConfigError
from avfusion.viz.rerun import export_rerun, rerun_entity_paths
from tests.viz.test_report import sample_log, synthetic_findings


@pytest.fixture(scope="module")
def log() -> Any:
    return sample_log()


def test_export_and_read_back(log: Any, tmp_path: Path) -> None:
    tokens = log.sample_tokens[:2]
    calls: list[tuple[int, int]] = []
    path = export_rerun(
        log,
        tmp_path / "sub" / "log.rrd",
        sample_tokens=tokens,
        occupancy_dir=Path(log.root) / "truth" / "occupancy",
        findings=synthetic_findings(tokens),
        progress=lambda d, t, *_: calls.append((d, t)),
    )
    assert path == tmp_path / "sub" / "log.rrd" and calls[-1] == (2, 2)
    assert path.stat().st_size > 200_000  # two keyframes of images, points and voxels
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    entities = set(rerun_entity_paths(path))
    expected = {
        "/world",
        "/world/ego",
        "/world/boxes",
        "/world/ego/occupancy",
        "/findings",
        "/world/ego/LIDAR_TOP",
        "/world/ego/LIDAR_TOP/points",
        "/world/ego/RADAR_FRONT/points",
        "/world/ego/CAM_FRONT/image",
        "/world/ego/CAM_FRONT/image/boxes2d",
        "/world/ego/THERMAL_FRONT/image",
    }
    assert expected <= entities, expected - entities


def test_voxel_centres_on_the_occ3d_grid() -> None:
    import numpy as np

    from avfusion.viz.rerun import _voxel_centres

    c = _voxel_centres((200, 200, 16), np.array([[0, 0, 0], [199, 100, 15]]))
    np.testing.assert_allclose(c, [[-39.8, -39.8, -0.8], [39.8, 0.2, 5.2]], atol=1e-5)


def test_bad_input(log: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must end in \.rrd"):
        export_rerun(log, tmp_path / "log.txt")
    with pytest.raises(AVFusionError, match="sample tokens not in"):
        export_rerun(log, tmp_path / "log.rrd", sample_tokens=["nope"])
    with pytest.raises(AVFusionError, match="does not exist or is not a folder"):
        export_rerun(log, tmp_path / "log.rrd", occupancy_dir=tmp_path / "nowhere")
    with pytest.raises(AVFusionError, match="nuScenes-style log"):
        export_rerun(object(), tmp_path / "log.rrd")
    assert not (tmp_path / "log.rrd").exists()
    with pytest.raises(AVFusionError, match="does not exist"):
        rerun_entity_paths(tmp_path / "missing.rrd")
    garbage = tmp_path / "garbage.rrd"
    garbage.write_bytes(b"not a recording" * 10)
    with pytest.raises(AVFusionError, match="cannot read it"):
        rerun_entity_paths(garbage)


@pytest.mark.realdata
def test_export_the_real_nuscenes_keyframe(realdata: Path, tmp_path: Path) -> None:
    from avfusion.io import open_log

    log = open_log(realdata / "nuscenes-keyframe")
    path = export_rerun(log, tmp_path / "real.rrd")
    entities = set(rerun_entity_paths(path))
    for cam in ("CAM_FRONT", "CAM_BACK_LEFT"):
        assert f"/world/ego/{cam}/image" in entities
    assert {"/world/ego/LIDAR_TOP/points", "/world/boxes"} <= entities
    assert path.stat().st_size > 500_000
