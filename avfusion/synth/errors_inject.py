"""Label-error injection: make the written labels wrong in known ways, and list every change.

Spec (``--inject-errors``): ``none`` (or empty), ``default``, or a comma-separated list of
``kind=value``. Per-annotation kinds take a probability in [0, 1]:

==============  =============================================================================
``missing``     the 3D box (and its 2D boxes) is dropped
``shrink``      box size × 0.7
``grow``        box size × 1.3
``shift``       box centre moved 0.5–1.0 m horizontally in a random direction
``late``        box placed where the object was 0.3 s earlier (a lagging label)
``mismatch_2d`` a 2D box of the object is moved sideways by 30–60 px (2D–3D mismatch)
==============  =============================================================================

Per-track kinds: ``class_swap`` (probability per track: the whole track gets another class)
and ``id_switch`` (an integer count: two tracks of the same class swap track ids from a middle
keyframe on). ``default`` is ``missing=0.04,shrink=0.03,grow=0.03,shift=0.04,late=0.03,
mismatch_2d=0.03,class_swap=0.08,id_switch=1``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import ConfigError

__all__ = ["ERROR_KINDS", "Ann", "Box2DRecord", "inject_errors", "parse_inject_spec"]

PER_ANNOTATION = ("missing", "shrink", "grow", "shift", "late", "mismatch_2d")
PER_TRACK = ("class_swap",)
COUNTS = ("id_switch",)
ERROR_KINDS: tuple[str, ...] = PER_ANNOTATION + PER_TRACK + COUNTS
DEFAULT_SPEC = "missing=0.04,shrink=0.03,grow=0.03,shift=0.04,late=0.03,mismatch_2d=0.03,class_swap=0.08,id_switch=1"
LATE_S = 0.3

#: Plausible wrong classes for a class swap.
SWAP_TO = {
    "vehicle.car": "vehicle.truck",
    "vehicle.truck": "vehicle.car",
    "vehicle.bus.rigid": "vehicle.truck",
    "human.pedestrian.adult": "vehicle.bicycle",
    "vehicle.bicycle": "human.pedestrian.adult",
    "movable_object.barrier": "movable_object.trafficcone",
    "movable_object.trafficcone": "movable_object.barrier",
    "static_object.bicycle_rack": "movable_object.barrier",
}


@dataclass
class Ann:
    """One 3D annotation before writing (world frame, size (l, w, h), quaternion (w, x, y, z))."""

    key: str
    sample_index: int
    object_index: int
    track_id: str
    category: str
    center: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    rotation: npt.NDArray[np.float64]
    attribute: str
    num_lidar_pts: int
    num_radar_pts: int
    visibility: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Box2DRecord:
    """One 2D box before writing: ``bbox`` [x0, y0, x1, y1] px of object ``object_index``."""

    key: str
    sample_data_token: str
    channel: str
    sample_index: int
    object_index: int
    bbox: list[float]
    category: str = ""


def parse_inject_spec(spec: str | None) -> dict[str, float]:
    """Parse an ``--inject-errors`` spec into kind → value; raises ``ConfigError`` on bad input."""
    if spec is None:
        return {}
    text = spec.strip()
    if text.lower() in ("", "none"):
        return {}
    if text.lower() == "default":
        text = DEFAULT_SPEC
    out: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(
                f"--inject-errors '{spec}': item '{item}' is not kind=value (kinds: {', '.join(ERROR_KINDS)}; or 'default', 'none')"
            )
        kind, _, value = item.partition("=")
        kind = kind.strip()
        if kind not in ERROR_KINDS:
            raise ConfigError(
                f"--inject-errors '{spec}': unknown label error kind '{kind}' (expected one of {', '.join(ERROR_KINDS)})"
            )
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(
                f"--inject-errors '{spec}': value of '{kind}' must be a number, got '{value.strip()}'"
            ) from None
        if kind in COUNTS:
            if v < 0 or v != int(v):
                raise ConfigError(
                    f"--inject-errors '{spec}': '{kind}' is a count and must be a whole number >= 0, got {value.strip()}"
                )
        elif not 0.0 <= v <= 1.0:
            raise ConfigError(
                f"--inject-errors '{spec}': '{kind}' is a probability and must be in [0, 1], got {value.strip()}"
            )
        out[kind] = v
    return out


def inject_errors(
    anns: list[Ann],
    boxes2d: list[Box2DRecord],
    rates: dict[str, float],
    rng: np.random.Generator,
    pose_earlier: Callable[[Ann, float], tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
) -> tuple[list[Ann], list[Box2DRecord], list[dict[str, Any]]]:
    """Apply ``rates`` to copies of the labels; returns (anns, boxes2d, injected list).

    ``pose_earlier(ann, seconds)`` gives the (centre, quaternion) of the annotated object
    ``seconds`` before the annotation's time (for ``late``). Each injected entry names the kind,
    the annotation key (or track), the sample index and the details of the change.
    """
    anns = copy.deepcopy(anns)
    boxes2d = copy.deepcopy(boxes2d)
    injected: list[dict[str, Any]] = []
    if not rates:
        return anns, boxes2d, injected

    # Per-track: class swaps.
    tracks = sorted({a.track_id for a in anns})
    swap: dict[str, str] = {}
    for tr in tracks:
        if rng.random() < rates.get("class_swap", 0.0):
            cat = next(a.category for a in anns if a.track_id == tr)
            swap[tr] = SWAP_TO.get(cat, "vehicle.car")
            injected.append({"kind": "class_swap", "track_id": tr, "from": cat, "to": swap[tr]})
    for a in anns:
        if a.track_id in swap:
            a.category = swap[a.track_id]
    for b in boxes2d:
        if b.category and any(
            a.object_index == b.object_index and a.track_id in swap for a in anns
        ):
            b.category = next(a.category for a in anns if a.object_index == b.object_index)

    # Id switches: two tracks of one class, from a middle keyframe on.
    n_switch = int(rates.get("id_switch", 0))
    by_cat: dict[str, list[str]] = {}
    for tr in tracks:
        samples = {a.sample_index for a in anns if a.track_id == tr}
        if len(samples) >= 4:
            by_cat.setdefault(next(a.category for a in anns if a.track_id == tr), []).append(tr)
    candidates = [(c, v) for c, v in sorted(by_cat.items()) if len(v) >= 2]
    used: set[str] = set()
    for _ in range(n_switch):
        pool = [(c, [t for t in v if t not in used]) for c, v in candidates]
        pool = [(c, v) for c, v in pool if len(v) >= 2]
        if not pool:
            break
        cat, members = pool[int(rng.integers(len(pool)))]
        pick = rng.choice(len(members), size=2, replace=False)
        ta, tb = members[int(pick[0])], members[int(pick[1])]
        common = sorted(
            {a.sample_index for a in anns if a.track_id == ta}
            & {a.sample_index for a in anns if a.track_id == tb}
        )
        if len(common) < 2:
            continue
        start = common[len(common) // 2]
        for a in anns:
            if a.sample_index >= start and a.track_id in (ta, tb):
                a.track_id = tb if a.track_id == ta else ta
        used.update((ta, tb))
        injected.append(
            {
                "kind": "id_switch",
                "track_ids": [ta, tb],
                "from_sample_index": start,
                "category": cat,
            }
        )

    # Per annotation.
    kept: list[Ann] = []
    dropped: set[tuple[int, int]] = set()
    for a in anns:
        r = rng.random(len(PER_ANNOTATION))
        if r[0] < rates.get("missing", 0.0):
            dropped.add((a.sample_index, a.object_index))
            injected.append(
                {
                    "kind": "missing",
                    "key": a.key,
                    "track_id": a.track_id,
                    "sample_index": a.sample_index,
                }
            )
            continue
        if r[1] < rates.get("shrink", 0.0):
            old = a.size.tolist()
            a.size = a.size * 0.7
            injected.append(
                {
                    "kind": "shrink",
                    "key": a.key,
                    "track_id": a.track_id,
                    "sample_index": a.sample_index,
                    "from": old,
                    "to": a.size.tolist(),
                }
            )
        elif r[2] < rates.get("grow", 0.0):
            old = a.size.tolist()
            a.size = a.size * 1.3
            injected.append(
                {
                    "kind": "grow",
                    "key": a.key,
                    "track_id": a.track_id,
                    "sample_index": a.sample_index,
                    "from": old,
                    "to": a.size.tolist(),
                }
            )
        if r[3] < rates.get("shift", 0.0):
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.5, 1.0)
            delta = np.array([np.cos(ang) * dist, np.sin(ang) * dist, 0.0])
            a.center = a.center + delta
            injected.append(
                {
                    "kind": "shift",
                    "key": a.key,
                    "track_id": a.track_id,
                    "sample_index": a.sample_index,
                    "delta_m": delta.tolist(),
                }
            )
        if r[4] < rates.get("late", 0.0):
            c, q = pose_earlier(a, LATE_S)
            if np.linalg.norm(c - a.center) > 0.05:  # only objects that moved can be late
                injected.append(
                    {
                        "kind": "late", "key": a.key, "track_id": a.track_id, "sample_index": a.sample_index,
                        "lag_s": LATE_S, "delta_m": (c - a.center).tolist(),
                    }
                )  # fmt: skip
                a.center, a.rotation = c, q
        kept.append(a)
    out2d: list[Box2DRecord] = []
    for b in boxes2d:
        if (b.sample_index, b.object_index) in dropped:
            continue
        if rng.random() < rates.get("mismatch_2d", 0.0):
            dx = float(rng.uniform(30, 60) * rng.choice([-1.0, 1.0]))
            b.bbox = [b.bbox[0] + dx, b.bbox[1], b.bbox[2] + dx, b.bbox[3]]
            injected.append({"kind": "mismatch_2d", "key": b.key, "sample_data_token": b.sample_data_token,
                             "channel": b.channel, "sample_index": b.sample_index, "dx_px": dx})  # fmt: skip
        out2d.append(b)
    return kept, out2d, injected
