"""Cross-modal label consistency: find label errors from the sensor data itself.

One module per comparison (see :data:`.findings.CHECKS`); :mod:`.findings` holds the shared
types, :mod:`.report` the counts, rates and ``findings.json``, :mod:`.harness` the error
injection that measures each check's precision and recall.
"""

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

__all__ = [
    "CHECKS",
    "FINDINGS_SCHEMA",
    "FINDING_KINDS",
    "SEVERITY_LEVELS",
    "CheckResult",
    "CheckedItem",
    "Finding",
    "LabelSet",
    "severity_level",
]
