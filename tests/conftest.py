"""Shared fixtures: the real recorded data next to the repository (../shared/realdata)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The realdata folder; a missing folder fails under CI (CI=true) and skips elsewhere."""
    if not REALDATA.is_dir():
        message = f"real data folder {REALDATA} is missing (see DESIGN.md, Tests)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return REALDATA
