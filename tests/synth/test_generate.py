"""generate(): argument checking, determinism, sample_data checksums."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avfusion.errors import AVFusionError, ConfigError
from avfusion.synth import compute_checksums, ensure_sample_data, generate, verify_checksums
from avfusion.synth.errors_inject import parse_inject_spec
from avfusion.synth.rig import default_rig, perturb_rig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seconds": 0}, r"seconds must be > 0, got 0"),
        ({"seconds": -1.0}, r"seconds must be > 0"),
        ({"seconds": float("nan")}, r"seconds must be a finite number"),
        ({"seconds": 500.0}, r"seconds must be <= 60"),
        ({"seed": -3}, r"seed must be an integer >= 0"),
        ({"inject_errors": "teleport=0.1"}, r"unknown label error kind 'teleport'"),
        ({"inject_errors": "missing=2"}, r"'missing' is a probability and must be in \[0, 1\]"),
        ({"inject_errors": "id_switch=1.5"}, r"'id_switch' is a count"),
        ({"inject_errors": "missing"}, r"item 'missing' is not kind=value"),
        ({"perturb": {"CAM_BACK": [0, 0, 0, 0, 0, 0]}}, r"unknown sensor 'CAM_BACK'"),
        ({"perturb": {"CAM_FRONT": [0.01, 0.0]}}, r"expected 6 finite numbers"),
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"seconds": 1.0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        generate(tmp_path / "out", **args)
    assert issubclass(ConfigError, AVFusionError)


def test_output_directory_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep")
    with pytest.raises(ConfigError, match="is not empty"):
        generate(tmp_path, seconds=1.0)


def test_inject_spec_parsing() -> None:
    assert parse_inject_spec(None) == {} and parse_inject_spec("none") == {}
    d = parse_inject_spec("default")
    assert d["id_switch"] == 1 and 0 < d["missing"] < 1
    assert parse_inject_spec("missing=0.5, shift=0.1") == {"missing": 0.5, "shift": 0.1}


def test_perturbation_is_applied_in_sensor_frame() -> None:
    rig = perturb_rig(default_rig(), {"CAM_FRONT": [0.0, 0.01, 0.0, 0.02, 0.0, 0.0]})
    cam = rig["CAM_FRONT"]
    assert cam.believed_ego_from_sensor.rotation_angle_to(cam.ego_from_sensor) == pytest.approx(
        0.01
    )
    assert np.linalg.norm(
        cam.believed_ego_from_sensor.translation - cam.ego_from_sensor.translation
    ) == pytest.approx(0.02)


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = generate(
        tmp_path / "a",
        seconds=1.0,
        seed=5,
        inject_errors="default",
        perturb={"CAM_FRONT_LEFT": [0.0, 0.0, 0.005, 0.0, 0.0, 0.0]},
    )
    b = generate(
        tmp_path / "b",
        seconds=1.0,
        seed=5,
        inject_errors="default",
        perturb={"CAM_FRONT_LEFT": [0.0, 0.0, 0.005, 0.0, 0.0, 0.0]},
    )
    assert a.n_samples == b.n_samples == 2
    sa, sb = compute_checksums(a.root), compute_checksums(b.root)
    assert sa.keys() == sb.keys()
    assert [k for k in sa if sa[k] != sb[k]] == []
    # JPEGs: equal after decoding within one grey level (checked directly too).
    jpgs = sorted(p.relative_to(a.root) for p in a.root.rglob("*.jpg"))
    assert len(jpgs) >= 30
    for rel in jpgs[::10]:
        ia = cv2.imread(str(a.root / rel)).astype(int)
        ib = cv2.imread(str(b.root / rel)).astype(int)
        assert np.max(np.abs(ia - ib)) <= 1


def test_sample_data_matches_committed_checksums() -> None:
    """make test generates sample_data/ when missing; it must be byte-identical to CHECKSUMS.sha256."""
    checksum_file = REPO / "sample_data" / "CHECKSUMS.sha256"
    if not checksum_file.is_file():
        pytest.skip("sample_data/CHECKSUMS.sha256 is not there yet")
    root = ensure_sample_data(REPO / "sample_data")
    assert verify_checksums(root, checksum_file) == []
