"""Thermal camera model (``THERMAL_FRONT``): radiometric counts from rendered temperatures.

Radiometric mapping (linear, as FLIR's "TLinear" high-resolution mode)::

    T_kelvin = COUNTS_SCALE_K * counts + COUNTS_OFFSET_K   (0.01 K per count, offset 0 K)

so 300.00 K is 30000 counts. Sensor noise: temporal noise σ 0.05 K (NETD 50 mK) per pixel and
frame, plus a fixed column pattern σ 0.03 K that is the same in every frame (seeded by the
scene seed). The optics are an OpenCV radial-tangential lens (see ``rig.THERMAL_DIST``),
rendered exactly through ``CameraModel``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["COUNTS_OFFSET_K", "COUNTS_SCALE_K", "counts_from_kelvin", "kelvin_from_counts"]

COUNTS_SCALE_K = 0.01
COUNTS_OFFSET_K = 0.0
NETD_K = 0.05
COLUMN_PATTERN_K = 0.03


def kelvin_from_counts(counts: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
    """Temperature (K) of uint16 radiometric counts."""
    return np.asarray(counts, dtype=np.float64) * COUNTS_SCALE_K + COUNTS_OFFSET_K


def counts_from_kelvin(
    temperature_k: npt.NDArray[np.floating],
    rng: np.random.Generator,
    column_pattern_k: npt.NDArray[np.float64],
) -> npt.NDArray[np.uint16]:
    """uint16 counts of a temperature image with temporal noise and the fixed column pattern."""
    t = temperature_k + rng.normal(0.0, NETD_K, temperature_k.shape) + column_pattern_k[None, :]
    counts = np.rint((t - COUNTS_OFFSET_K) / COUNTS_SCALE_K)
    return np.clip(counts, 0, 65535).astype(np.uint16)


def column_pattern(width: int, seed: int) -> npt.NDArray[np.float64]:
    """The fixed column offsets (K) of the detector."""
    return np.random.default_rng([seed, 7331]).normal(0.0, COLUMN_PATTERN_K, width)


def mapping_description() -> dict[str, object]:
    """The counts→kelvin mapping as written to ``avfusion_sensor.json``."""
    return {
        "formula": "kelvin = scale_k * counts + offset_k",
        "scale_k": COUNTS_SCALE_K,
        "offset_k": COUNTS_OFFSET_K,
        "netd_k": NETD_K,
    }
