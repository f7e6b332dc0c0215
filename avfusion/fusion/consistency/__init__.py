"""Cross-modal label consistency: find label errors from the sensor data itself.

One module per comparison (see :data:`.findings.CHECKS`): :mod:`.lidar` (3D box ↔ LiDAR,
unlabelled clusters), :mod:`.radar`, :mod:`.cameras` (3D ↔ 2D in every camera),
:mod:`.temporal` (each track over time), :mod:`.occupancy_boxes`. :mod:`.findings` holds the
shared types, :mod:`.check` runs every check over a log (``avfusion check``), :mod:`.report`
the counts, rates, kappa and ``findings.json``, :mod:`.harness` the error injection that
measures each check's precision and recall.
"""

from avfusion.fusion.consistency.cameras import Box2DOptions, check_box_2d
from avfusion.fusion.consistency.check import DEFAULT_CHECKS, parse_checks, run_checks
from avfusion.fusion.consistency.findings import (
    CHECKS,
    FINDING_KINDS,
    FINDINGS_SCHEMA,
    SEVERITY_LEVELS,
    CheckedItem,
    CheckResult,
    Finding,
    LabelSet,
    severity_level,
)
from avfusion.fusion.consistency.harness import (
    KIND_FINDINGS,
    InjectionSpec,
    clean_rate,
    evaluate,
    inject,
    run_evaluation,
)
from avfusion.fusion.consistency.lidar import (
    LidarCheckOptions,
    UnlabelledOptions,
    check_box_lidar,
    check_unlabelled,
)
from avfusion.fusion.consistency.occupancy_boxes import check_occupancy_boxes, load_semantics
from avfusion.fusion.consistency.radar import RadarCheckOptions, check_box_radar
from avfusion.fusion.consistency.report import (
    ConsistencyReport,
    cohens_kappa,
    read_findings_json,
    summarise_results,
    write_findings_json,
)
from avfusion.fusion.consistency.temporal import TemporalOptions, check_temporal

__all__ = [
    "CHECKS",
    "DEFAULT_CHECKS",
    "FINDINGS_SCHEMA",
    "FINDING_KINDS",
    "KIND_FINDINGS",
    "SEVERITY_LEVELS",
    "Box2DOptions",
    "CheckResult",
    "CheckedItem",
    "ConsistencyReport",
    "Finding",
    "InjectionSpec",
    "LabelSet",
    "LidarCheckOptions",
    "RadarCheckOptions",
    "TemporalOptions",
    "UnlabelledOptions",
    "check_box_2d",
    "check_box_lidar",
    "check_box_radar",
    "check_occupancy_boxes",
    "check_temporal",
    "check_unlabelled",
    "clean_rate",
    "cohens_kappa",
    "evaluate",
    "inject",
    "load_semantics",
    "parse_checks",
    "read_findings_json",
    "run_checks",
    "run_evaluation",
    "severity_level",
    "summarise_results",
    "write_findings_json",
]
