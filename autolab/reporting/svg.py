"""Inline SVG charts for the HTML report: no JavaScript library, no network.

API::

    line_chart(series, *, width, height, x_label, y_label, svg_id) -> str
    gantt_chart(segments, *, width, svg_id, t0=None) -> str
    step_chart(points, *, width, height, svg_id, y_label) -> str

``series`` is a list of ``(label, color, [(x, y), ...])``. Values that are not finite are
skipped; the y range is robust (2nd to 98th percentile) so one divergent run cannot flatten
the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from autolab.reporting.summary import Segment

COLORS = {
    "running": "#3b82f6",
    "finished": "#16a34a",
    "pruned": "#f59e0b",
    "failed": "#dc2626",
    "cancelled": "#9ca3af",
}
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d",
           "#4d7c0f", "#7c3aed", "#b45309", "#0f766e", "#6b7280")


def _empty(width: int, height: int, text: str) -> str:
    return f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">{text}</text></svg>'


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out, t = [], start
    while t <= hi + step * 1e-9:
        out.append(round(t, 12))
        t += step
    return out


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.2g}"
    return f"{x:.4g}"


def _percentile(sorted_vals: Sequence[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def line_chart(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    width: int = 900,
    height: int = 320,
    x_label: str = "step",
    y_label: str = "",
    svg_id: str = "curves-svg",
) -> str:
    """Polylines with axes; out-of-range values are clamped to the frame."""
    left, right, top, bottom = 60, 10, 10, 36
    pts = [(x, y) for _, _, s in series for x, y in s if math.isfinite(x) and math.isfinite(y)]
    head = (f'<svg id="{svg_id}" class="chart" viewBox="0 0 {width} {height}" '
            f'width="100%" role="img" aria-label="{escape(y_label)} by {escape(x_label)}">')
    if not pts:
        return head + _empty(width, height, "no data")
    xs = [p[0] for p in pts]
    ys = sorted(p[1] for p in pts)
    x0, x1 = min(xs), max(xs)
    y0, y1 = _percentile(ys, 0.02), _percentile(ys, 0.98)
    if y1 <= y0:
        y0, y1 = y0 - 0.5 * (abs(y0) or 1), y1 + 0.5 * (abs(y1) or 1)
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    x1 = x1 if x1 > x0 else x0 + 1
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * ph

    parts = [head, f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>']
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{_num(sy(t))}" y2="{_num(sy(t))}" '
                     f'class="grid"/><text x="{left - 4}" y="{_num(sy(t) + 4)}" '
                     f'text-anchor="end" class="tick">{_fmt(t)}</text>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{_num(sx(t))}" y="{top + ph + 14}" text-anchor="middle" '
                     f'class="tick">{_fmt(t)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" '
                 f'class="label">{escape(x_label)}</text>')
    for label, color, s in series:
        coords = " ".join(f"{_num(sx(x))},{_num(sy(y))}" for x, y in s
                          if math.isfinite(x) and math.isfinite(y))
        if coords:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                         f'stroke-width="1.5"><title>{escape(label)}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def gantt_chart(
    segments: Sequence[Segment],
    *,
    width: int = 1000,
    svg_id: str = "gantt-svg",
    max_titles: int = 3000,
) -> str:
    """One row per worker slot; running bars coloured by outcome, queued bars pale and thin."""
    slots = sorted({s.slot for s in segments})
    row, left, top, bottom = 20, 110, 4, 24
    height = top + bottom + row * max(1, len(slots))
    head = (f'<svg id="{svg_id}" class="chart" viewBox="0 0 {width} {height}" width="100%" '
            f'role="img" aria-label="experiments per worker slot over time">')
    if not segments:
        return head + _empty(width, height, "no runs yet")
    t0 = min(s.start for s in segments)
    t1 = max(s.end for s in segments)
    span = max(t1 - t0, 1e-9)
    pw = width - left - 10
    index = {slot: i for i, slot in enumerate(slots)}
    parts = [head]
    for slot, i in index.items():
        y = top + i * row
        parts.append(f'<text x="{left - 6}" y="{y + row * 0.7:.1f}" text-anchor="end" '
                     f'class="tick">{escape(slot[:18])}</text>'
                     f'<line x1="{left}" x2="{left + pw}" y1="{y + row}" y2="{y + row}" class="grid"/>')
    for t in _ticks(0, span):
        x = left + t / span * pw
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" '
                     f'class="grid"/><text x="{x:.1f}" y="{height - 8}" text-anchor="middle" '
                     f'class="tick">{_duration(t)}</text>')
    titles = len(segments) <= max_titles
    for s in segments:
        x = left + (s.start - t0) / span * pw
        w = max(0.6, (s.end - s.start) / span * pw)
        by = float(top + index[s.slot] * row)
        if s.kind == "queued":
            by, h, cls = by + row * 0.4, row * 0.2, "queued"
        else:
            by, h, cls = by + row * 0.15, row * 0.7, s.outcome
        tip = (f"<title>{escape(s.experiment_id)}: {s.kind} {_duration(s.end - s.start)}, "
               f"{s.outcome}</title>") if titles else ""
        parts.append(f'<rect x="{x:.1f}" y="{by:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'class="bar {cls}">{tip}</rect>')
    parts.append("</svg>")
    return "".join(parts)


def step_chart(
    points: Sequence[tuple[float, float]],
    *,
    width: int = 900,
    height: int = 220,
    svg_id: str = "promotions-svg",
    y_label: str = "",
) -> str:
    """Main's metric over time: a step line through each promotion, with a dot per promotion."""
    pts = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    head = (f'<svg id="{svg_id}" class="chart" viewBox="0 0 {width} {height}" width="100%" '
            f'role="img" aria-label="{escape(y_label)} of main over time">')
    if len(pts) < 1:
        return head + _empty(width, height, "no promotions yet")
    left, right, top, bottom = 60, 10, 10, 30
    t0, t1 = pts[0][0], max(pts[-1][0], pts[0][0] + 1)
    vs = [v for _, v in pts]
    y0, y1 = min(vs), max(vs)
    if y1 <= y0:
        y0, y1 = y0 - (abs(y0) or 1) * 0.01, y1 + (abs(y1) or 1) * 0.01
    pw, ph = width - left - right, height - top - bottom

    def sx(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    path = [f"M{sx(pts[0][0]):.1f},{sy(pts[0][1]):.1f}"]
    for t, v in pts[1:]:
        path.append(f"H{sx(t):.1f}V{sy(v):.1f}")
    parts = [head, f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>']
    for t in _ticks(y0, y1, 4):
        parts.append(f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" '
                     f'class="tick">{_fmt(t)}</text>')
    for t in _ticks(0, t1 - t0, 5):
        parts.append(f'<text x="{sx(t0 + t):.1f}" y="{height - 10}" text-anchor="middle" '
                     f'class="tick">{_duration(t)}</text>')
    parts.append(f'<path d="{"".join(path)}" fill="none" stroke="#2563eb" stroke-width="2"/>')
    for t, v in pts:
        parts.append(f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="3.5" fill="#16a34a">'
                     f'<title>{_fmt(v)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
