"""Fixtures for the label-consistency tests: the default (error-injected) sample log and a clean twin."""

from __future__ import annotations

from pathlib import Path

import pytest

from avfusion.io.nuscenes import NuScenesLog

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def sample_log() -> NuScenesLog:
    """The default sample log (seed 0, labels with the `default` injected errors)."""
    from avfusion.synth import ensure_sample_data

    return NuScenesLog(ensure_sample_data(REPO / "sample_data"))


@pytest.fixture(scope="session")
def clean_log() -> NuScenesLog:
    """The same world and sensors with clean labels (generated once into sample_data/clean/)."""
    from avfusion.synth import ensure_sample_data

    return NuScenesLog(ensure_sample_data(REPO / "sample_data" / "clean", inject_errors="none"))
