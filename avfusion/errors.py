"""The one exception family raised by avfusion.

Every message names the file, topic, token or frame involved and says what was wrong and what
was expected. Subclasses exist only where a caller would want to catch them apart.
"""

from __future__ import annotations

__all__ = [
    "AVFusionError",
    "CalibrationError",
    "ConfigError",
    "LogFormatError",
    "SyncError",
]


class AVFusionError(Exception):
    """Base class of every error avfusion raises on purpose."""


class LogFormatError(AVFusionError):
    """A log or file on disk is corrupt, truncated or not in the layout it claims to be."""


class CalibrationError(AVFusionError):
    """Calibration is missing or invalid: a bad rotation, unknown frame, bad intrinsics."""


class SyncError(AVFusionError):
    """Time does not line up: non-monotonic stamps, or a time outside a trajectory's range."""


class ConfigError(AVFusionError):
    """A configuration (rig file, CLI option, job spec) is invalid; the message names the field."""
