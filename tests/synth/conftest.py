"""Session fixtures for the synthetic world: one short generated log shared by the tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from avfusion.synth import GenerationSummary, generate
from avfusion.synth.world import World, build_world

#: Long enough for 5 keyframes and pedestrians in view, short enough to generate in ~12 s.
SHORT_SECONDS = 2.6
SEED = 3


@dataclass
class SynthLog:
    root: Path
    summary: GenerationSummary
    world: World

    def table(self, name: str) -> list[dict[str, Any]]:
        return json.loads((self.root / "v1.0-mini" / f"{name}.json").read_text())

    def truth(self, name: str) -> Any:
        return json.loads((self.root / "truth" / name).read_text())


@pytest.fixture(scope="session")
def synth_log(tmp_path_factory: pytest.TempPathFactory) -> SynthLog:
    root = tmp_path_factory.mktemp("synth") / "nuscenes"
    summary = generate(root, seconds=SHORT_SECONDS, seed=SEED, inject_errors="default")
    return SynthLog(root, summary, build_world(SHORT_SECONDS, SEED))
