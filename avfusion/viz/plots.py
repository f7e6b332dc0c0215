"""Charts drawn with OpenCV and numpy (no plotting library): the sync report, PNG encoding.

``render_sync_plot(sync_report)`` takes the dict of ``sync_report.json``
(``avfusion.calibration.syncreport``, format 1) and draws two panels:

* left: for every pair (reference sensor vs another), the time difference of the matched
  stamps (other − reference, ego clock, ms): a bar from the 5th to the 95th percentile, a tick at
  the median, the matching tolerance as dashed lines, and the match rate; with a zero line,
  axis ticks and labels;
* right (below when ``width`` < 1180): a table of every stream: rate (Hz), jitter (std, µs), gaps, drops, duplicates,
  reversals and pose coverage; anomalies (gaps, drops, duplicates, reversals, coverage < 100 %)
  in red.

``encode_png(rgb)`` encodes an RGB image as PNG bytes (``cv2.imencode``, RGB → BGR).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import AVFusionError
from avfusion.viz.overlay import _check_rgb, _text

__all__ = ["encode_png", "nice_ticks", "render_sync_plot"]

U8 = npt.NDArray[np.uint8]

_BG = (255, 255, 255)
_INK = (30, 30, 30)
_GRID = (225, 225, 230)
_BAR = (70, 130, 220)
_BAD = (210, 40, 40)
_MUTED = (110, 110, 120)


def encode_png(rgb: npt.ArrayLike, *, compression: int = 6) -> bytes:
    """PNG bytes of an RGB uint8 (H, W, 3) image (or an H×W grey one)."""
    import cv2

    arr = np.asarray(rgb)
    if arr.ndim == 2 and arr.dtype == np.uint8 and arr.size:
        img = arr
    else:
        img = np.ascontiguousarray(_check_rgb(arr, "encode_png")[..., ::-1])
    if not 0 <= int(compression) <= 9:
        raise AVFusionError(f"encode_png: compression must be 0..9, got {compression!r}")
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:  # pragma: no cover - cv2 fails only on unsupported input, checked above
        raise AVFusionError(f"encode_png: OpenCV could not encode a {img.shape} image")
    return bytes(buf.tobytes())


def nice_ticks(lo: float, hi: float, target: int = 6) -> npt.NDArray[np.float64]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) covering [lo, hi], about ``target`` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise AVFusionError(f"nice_ticks: bounds must be finite, got {lo!r}, {hi!r}")
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 5.0, 10.0) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = np.arange(start, hi + step * 1e-9, step)
    return np.round(ticks / step) * step


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:g}"


def _num(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _count(row: Mapping[str, Any], key: str) -> int:
    v = row.get(key)
    if isinstance(v, Mapping):
        v = v.get("count")
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def render_sync_plot(sync_report: Mapping[str, Any], *, width: int = 1200) -> U8:
    """A chart (RGB) of a ``sync_report.json`` dict: pair time offsets and stream statistics.

    Raises ``AVFusionError`` naming the key when the report is not a format-1 sync report
    (missing ``streams`` or ``pairs``, or a pair without ``other``).
    """
    import cv2

    what = "render_sync_plot"
    if not isinstance(sync_report, Mapping):
        raise AVFusionError(
            f"{what}: expected the sync_report.json dict, got {type(sync_report).__name__}"
        )
    for key in ("streams", "pairs"):
        if key not in sync_report:
            raise AVFusionError(f"{what}: sync report has no '{key}' (keys: {sorted(sync_report)})")
    streams = sync_report["streams"]
    pairs = sync_report["pairs"]
    if not isinstance(streams, Mapping) or not isinstance(pairs, list):
        raise AVFusionError(f"{what}: 'streams' must be a dict and 'pairs' a list")
    for i, p in enumerate(pairs):
        if not isinstance(p, Mapping) or "other" not in p:
            raise AVFusionError(f"{what}: pairs[{i}] has no 'other' sensor")
    if isinstance(width, bool) or not isinstance(width, int) or not 600 <= width <= 4000:
        raise AVFusionError(f"{what}: width must be an integer in 600..4000, got {width!r}")

    ref = str(sync_report.get("ref_sensor", pairs[0].get("ref", "") if pairs else ""))
    n_rows = max(len(pairs), 1)
    row_h = 34
    top, bottom = 64, 56
    table_rows = len(streams) + 1
    table_w = 560
    side_by_side = width >= 170 + 300 + 130 + table_w + 20
    chart_h = top + n_rows * row_h + bottom
    table_h = table_rows * 26 + 30
    height = max(chart_h, top + table_h) if side_by_side else chart_h + table_h
    img = np.empty((height, width, 3), np.uint8)
    img[:] = _BG
    _text(
        img,
        f"Time sync: streams vs {ref or 'reference'}",
        (16, 10),
        _INK,
        scale=0.7,
        thickness=2,
        background=None,
        below=True,
    )

    # ---- left panel: offsets ------------------------------------------------------------------
    left = 170
    plot_w = width - left - 130 - (table_w + 20 if side_by_side else 20)
    right = left + plot_w
    y0, y1 = top, top + n_rows * row_h
    ms = 1e-6
    vals = [0.0]
    for p in pairs:
        for k in ("dt_p5_ns", "dt_p95_ns", "dt_median_ns"):
            v = _num(p, k)
            if math.isfinite(v):
                vals.append(v * ms)
        tol = _num(p, "tolerance_ns")
        if math.isfinite(tol):
            vals.extend([tol * ms, -tol * ms])
    lo, hi = min(vals), max(vals)
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    ticks = nice_ticks(lo - pad, hi + pad)
    vmin, vmax = float(min(ticks[0], lo - pad)), float(max(ticks[-1], hi + pad))

    def xpix(v: float) -> int:
        return round(left + (v - vmin) / (vmax - vmin) * plot_w)

    for t in ticks:
        x = xpix(float(t))
        cv2.line(img, (x, y0), (x, y1), _GRID, 1)
        cv2.line(img, (x, y1), (x, y1 + 5), _INK, 1)
        label = _fmt(float(t))
        (tw, _), _ = cv2.getTextSize(label, 0, 0.42, 1)
        _text(img, label, (x - tw / 2 - 2, y1 + 6), _INK, scale=0.42, background=None, below=True)
    x_zero = xpix(0.0)
    cv2.line(img, (x_zero, y0 - 4), (x_zero, y1), (120, 120, 120), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, y0), (right, y1), _INK, 1)
    _text(
        img,
        f"other - {ref} (ms, ego clock): p5-p95 bar, median tick, dashed: tolerance",
        (left, y1 + 26),
        _INK,
        scale=0.45,
        background=None,
        below=True,
    )
    for i, p in enumerate(pairs):
        yc = y0 + i * row_h + row_h // 2
        name = str(p.get("other", "?"))
        (tw, _), _ = cv2.getTextSize(name, 0, 0.45, 1)
        _text(img, name, (left - tw - 12, yc + 8), _INK, scale=0.45, background=None)
        p5, p95, med = (_num(p, k) * ms for k in ("dt_p5_ns", "dt_p95_ns", "dt_median_ns"))
        tol = _num(p, "tolerance_ns") * ms
        if math.isfinite(tol):
            for sign in (-1, 1):
                x = xpix(sign * tol)
                for yy in range(yc - 12, yc + 12, 6):
                    cv2.line(img, (x, yy), (x, yy + 3), _MUTED, 1)
        if math.isfinite(p5) and math.isfinite(p95):
            cv2.rectangle(img, (xpix(p5), yc - 7), (xpix(p95), yc + 7), _BAR, -1)
        if math.isfinite(med):
            cv2.line(img, (xpix(med), yc - 12), (xpix(med), yc + 12), _INK, 2)
        rate = _num(p, "match_rate")
        text = "no match" if not math.isfinite(rate) else f"{100 * rate:.0f}% matched"
        color = _BAD if not math.isfinite(rate) or rate < 0.95 else _MUTED
        _text(img, text, (right + 8, yc + 8), color, scale=0.42, background=None)
    if not pairs:
        _text(img, "no sensor pairs", (left + 10, y0 + 24), _MUTED, scale=0.5, background=None)

    # ---- right panel: stream table ------------------------------------------------------------
    tx = right + 130 if side_by_side else 20
    cols = [("stream", 0), ("Hz", 170), ("jitter us", 228), ("gaps", 308), ("drops", 352),
            ("dup", 405), ("rev", 445), ("pose %", 485)]  # fmt: skip
    xs = [tx + c[1] for c in cols]
    y = top - 4 if side_by_side else chart_h + 16
    for (header, _), x in zip(cols, xs, strict=True):
        _text(img, header, (x, y), _INK, scale=0.45, thickness=1, background=None)
    t_right = tx + table_w - 20
    cv2.line(img, (tx, y + 4), (t_right, y + 4), _INK, 1)
    for j, (sensor, row) in enumerate(sorted(streams.items())):
        yy = y + 26 * (j + 1)
        if not isinstance(row, Mapping):
            raise AVFusionError(f"{what}: streams['{sensor}'] must be a dict")
        rate = _num(row, "rate_hz")
        jitter = _num(row, "jitter_std_ns") / 1e3
        cov = row.get("pose_coverage")
        frac = _num(cov, "fraction") if isinstance(cov, Mapping) else math.nan
        gaps, drops = _count(row, "gaps"), _count(row, "drops")
        dup, rev = _count(row, "duplicates"), _count(row, "reversals")
        cells = [
            (str(sensor), _INK),
            ("-" if not math.isfinite(rate) else f"{rate:.2f}", _INK),
            ("-" if not math.isfinite(jitter) else f"{jitter:.0f}", _INK),
            (str(gaps), _BAD if gaps else _INK),
            (str(drops), _BAD if drops else _INK),
            (str(dup), _BAD if dup else _INK),
            (str(rev), _BAD if rev else _INK),
            (
                "-" if not math.isfinite(frac) else f"{100 * frac:.0f}",
                _BAD if math.isfinite(frac) and frac < 1 else _INK,
            ),
        ]
        if j % 2 == 0:
            cv2.rectangle(img, (tx - 4, yy - 18), (t_right, yy + 7), (244, 245, 248), -1)
        for (text, color), x in zip(cells, xs, strict=True):
            _text(img, text, (x, yy + 6), color, scale=0.42, background=None)
    return img
