"""Run every label-consistency check over a log: :func:`run_checks` -> :class:`.report.ConsistencyReport`.

Per keyframe: ``box_lidar``, ``unlabelled`` (:mod:`.lidar`), ``box_radar`` (:mod:`.radar`),
``box_2d`` (:mod:`.cameras`) and ``occupancy`` (:mod:`.occupancy_boxes`, only with an
``occupancy_dir`` holding ``<sample_token>/labels.npz`` or, as ``avfusion occupancy`` writes
them, ``gts/<scene>/<sample_token>/labels.npz``); per scene: ``temporal``
(:mod:`.temporal`). A check whose sensor the log lacks (no radar, no camera with 2D boxes, no
LiDAR) is skipped for that keyframe and counted in the report's ``skipped``, never dropped
silently. The result does not depend on the order of the keyframes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from avfusion.errors import AVFusionError
from avfusion.fusion.consistency.cameras import ClassPair, box_2d_outcome
from avfusion.fusion.consistency.findings import CHECKS, CheckResult, LabelSet
from avfusion.fusion.consistency.report import ConsistencyReport, summarise_results
from avfusion.fusion.consistency.temporal import check_temporal

__all__ = ["DEFAULT_CHECKS", "parse_checks", "run_checks"]

logger = logging.getLogger(__name__)

#: Every check, in the order they run.
DEFAULT_CHECKS: tuple[str, ...] = tuple(CHECKS)

Progress = Callable[[int, int, str], None]


def parse_checks(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Check names from a comma list or sequence ("all" or None: every check); raises
    ``AVFusionError`` naming the unknown ones."""
    if text is None:
        return DEFAULT_CHECKS
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    if not parts or parts == ["all"]:
        return DEFAULT_CHECKS
    unknown = [p for p in parts if p not in CHECKS]
    if unknown:
        raise AVFusionError(
            f"unknown check(s) {', '.join(repr(u) for u in unknown)} (known: {', '.join(CHECKS)}, or 'all')"
        )
    return tuple(c for c in DEFAULT_CHECKS if c in parts)


def _has(log: Any, modality: str) -> str | None:
    for name, sensor in sorted(log.sensors.items()):
        if sensor.modality == modality:
            return str(name)
    return None


def _occupancy(
    log: Any, labels: LabelSet, sample_token: str, occupancy_dir: Path, lidar: str
) -> CheckResult | None:
    from avfusion.fusion.consistency.occupancy_boxes import check_occupancy_boxes, load_semantics

    path = occupancy_dir / sample_token / "labels.npz"
    if not path.is_file():  # the layout `avfusion occupancy` writes: gts/<scene>/<token>/
        found = sorted(occupancy_dir.glob(f"gts/*/{sample_token}/labels.npz"))
        if not found:
            return None
        path = found[0]
    sd = log.keyframe_data(sample_token).get(lidar)
    if sd is None:
        return None
    semantics = load_semantics(path)
    ego_from_world = log.ego_pose(sd).inverse()
    return check_occupancy_boxes(
        labels,
        sample_token,
        semantics,
        ego_from_world,
        t_ns=int(log.sample_time_ns(sample_token)),
    )


def run_checks(
    log: Any,
    labels: LabelSet | None = None,
    *,
    checks: str | Sequence[str] | None = None,
    sample_tokens: Sequence[str] | None = None,
    occupancy_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> ConsistencyReport:
    """Run ``checks`` (default all) on ``labels`` (default the log's own) over ``sample_tokens``
    (default every keyframe of the log). ``progress(done, total, what)`` is called after each
    keyframe. Returns the report (counts, rates, confusion matrix, ranked findings)."""
    names = parse_checks(checks)
    all_tokens = list(log.sample_tokens)
    tokens = all_tokens if sample_tokens is None else list(sample_tokens)
    known = set(all_tokens)
    bad = [t for t in tokens if t not in known]
    if bad:
        raise AVFusionError(
            f"run_checks: sample token(s) {', '.join(bad[:3])} not in the log "
            f"({len(all_tokens)} samples)"
        )
    if not tokens:
        raise AVFusionError("run_checks: no samples to check")
    labels = LabelSet.from_log(log, tokens) if labels is None else labels
    missing = [t for t in tokens if t not in labels.boxes3d]
    if missing:
        raise AVFusionError(
            f"run_checks: the labels under test have no boxes for sample(s) {', '.join(missing[:3])}"
        )
    occ_dir = Path(occupancy_dir) if occupancy_dir is not None else None
    if occ_dir is not None and not occ_dir.is_dir():
        raise AVFusionError(f"{occ_dir}: occupancy folder does not exist")
    lidar = _has(log, "lidar")
    radar = _has(log, "radar")

    per_sample: list[tuple[str, Callable[[str], CheckResult | None]]] = []
    if "box_lidar" in names or "unlabelled" in names:
        from avfusion.fusion.consistency.lidar import check_box_lidar, check_unlabelled

        if "box_lidar" in names:
            per_sample.append(
                ("box_lidar", lambda t: check_box_lidar(log, labels, t) if lidar else None)
            )
        if "unlabelled" in names:
            per_sample.append(
                ("unlabelled", lambda t: check_unlabelled(log, labels, t) if lidar else None)
            )
    if "box_radar" in names:
        from avfusion.fusion.consistency.radar import check_box_radar

        per_sample.append(
            ("box_radar", lambda t: check_box_radar(log, labels, t) if radar else None)
        )
    pairs: list[ClassPair] = []
    offsets: dict[str, int] = {}

    def box_2d(t: str) -> CheckResult | None:
        if not labels.boxes2d:
            return None
        out = box_2d_outcome(log, labels, t)
        pairs.extend(out.class_pairs)
        offsets.update(out.time_offsets_ns)
        return out.result

    if "box_2d" in names:
        per_sample.append(("box_2d", box_2d))
    if "occupancy" in names:
        per_sample.append(
            (
                "occupancy",
                lambda t: (
                    _occupancy(log, labels, t, occ_dir, lidar)
                    if occ_dir is not None and lidar
                    else None
                ),
            )
        )

    results: list[CheckResult] = []
    skipped: dict[str, int] = {}
    total = len(tokens) + (1 if "temporal" in names else 0)
    for k, t in enumerate(sorted(tokens, key=log.sample_time_ns)):
        for name, fn in per_sample:
            r = fn(t)
            if r is None:
                key = f"{name}: no data for the check"
                skipped[key] = skipped.get(key, 0) + 1
                continue
            results.append(r)
        if progress is not None:
            progress(k + 1, total, t)
    if "temporal" in names:
        scenes: dict[str, list[str]] = {}
        for t in tokens:
            scenes.setdefault(str(log.scene_of(t).get("token", "")), []).append(t)
        for scene_tokens in scenes.values():
            results.append(check_temporal(log, labels, scene_tokens))
        if progress is not None:
            progress(total, total, "temporal")
    scene_descriptions = {
        t: str(log.scene_of(t).get("description", "")) for t in sorted(set(tokens))
    }
    logger.info(
        "checked %d samples with %s: %d findings",
        len(tokens),
        ", ".join(names),
        sum(len(r.findings) for r in results),
    )
    return summarise_results(
        results,
        pairs,
        checks=names,
        samples=sorted(tokens, key=log.sample_time_ns),
        skipped=skipped,
        source=str(getattr(log, "root", "")),
        time_offsets_ns=offsets,
        scene_descriptions=scene_descriptions,
    )
