"""Charts as inline SVG, drawn on the server: no script, nothing the Content-Security-Policy has
to allow (colours come from classes in the console's stylesheet, not from style attributes).

Each chart carries a ``<title>`` and a ``<desc>`` for screen readers, and every page that shows
one also shows its figures as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape

from markupsafe import Markup

W, H = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 170, 16, 40
SERIES_CLASSES = 8


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]  # (unix seconds, value)
    dashed: bool = False  # a limit, drawn as a dashed line


def _nice(top: float) -> float:
    if top <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(top))) / 10 if top >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= top:
            return step * magnitude
    return 10 * magnitude


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:.3g}"


def _time_label(t: float, span: float) -> str:
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.strftime("%H:%M") if span <= 2 * 86400 else d.strftime("%m-%d")


def _frame(ident: str, title: str, description: str, top: float) -> list[str]:
    """The opening of a chart: its accessible name, the plot area and five grid lines to ``top``."""
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-labelledby="{ident}-title {ident}-desc" xmlns="http://www.w3.org/2000/svg">',
           f'<title id="{ident}-title">{escape(title)}</title><desc id="{ident}-desc">{escape(description)}</desc>',
           f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>']
    for i in range(5):
        v = top * i / 4
        yy = TOP + ph - v / top * ph
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + pw}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    return out


def line_chart(title: str, description: str, series: list[Series], t0: float, t1: float, y_label: str, *,
               ident: str = "line") -> Markup:
    top = _nice(max([v for s in series for _, v in s.points] + [0.0]) * 1.05)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    span = max(t1 - t0, 1.0)

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * pw

    def y(v: float) -> float:
        return TOP + ph - v / top * ph

    out = _frame(ident, title, description, top)
    for i in range(5):
        t = t0 + span * i / 4
        out.append(f'<text class="tick" x="{x(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">'
                   f'{escape(_time_label(t, span))}</text>')
    out.append(f'<text class="axis" x="{LEFT}" y="{H - 6}">UTC</text>'
               f'<text class="axis" x="12" y="{TOP + ph / 2:.1f}" transform="rotate(-90 12 {TOP + ph / 2:.1f})" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    for i, s in enumerate(series):
        cls = f"s{i % SERIES_CLASSES}" + (" limit" if s.dashed else "")
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
        if pts:
            out.append(f'<polyline class="line {cls}" points="{pts}"/>')
        ly = TOP + 14 + 18 * i
        if ly < H - BOTTOM:
            out.append(f'<line class="line {cls}" x1="{LEFT + pw + 12}" x2="{LEFT + pw + 32}" y1="{ly - 4}" y2="{ly - 4}"/>'
                       f'<text class="legend" x="{LEFT + pw + 38}" y="{ly}">{escape(s.label[:22])}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def bar_chart(title: str, description: str, labels: list[str], groups: list[tuple[str, list[float]]],
              y_label: str, *, ident: str = "bar") -> Markup:
    """Grouped bars: one group per label (a time bucket), one bar per named series."""
    top = _nice(max([v for _, vs in groups for v in vs] + [0.0]) * 1.05)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    n, k = max(len(labels), 1), max(len(groups), 1)
    slot = pw / n
    bw = max(slot * 0.8 / k, 1.0)
    out = _frame(ident, title, description, top)
    step = max(1, n // 6)
    for i, label in enumerate(labels):
        if i % step == 0:
            out.append(f'<text class="tick" x="{LEFT + slot * (i + 0.5):.1f}" y="{TOP + ph + 16}" '
                       f'text-anchor="middle">{escape(label)}</text>')
    for j, (name, values) in enumerate(groups):
        for i, v in enumerate(values):
            h = v / top * ph
            out.append(f'<rect class="bar s{j % SERIES_CLASSES}" x="{LEFT + slot * i + slot * 0.1 + bw * j:.1f}" '
                       f'y="{TOP + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}"/>')
        ly = TOP + 14 + 18 * j
        out.append(f'<rect class="bar s{j % SERIES_CLASSES}" x="{LEFT + pw + 12}" y="{ly - 10}" width="12" height="12"/>'
                   f'<text class="legend" x="{LEFT + pw + 30}" y="{ly}">{escape(name[:22])}</text>')
    out.append(f'<text class="axis" x="12" y="{TOP + ph / 2:.1f}" transform="rotate(-90 12 {TOP + ph / 2:.1f})" '
               f'text-anchor="middle">{escape(y_label)}</text></svg>')
    return Markup("".join(out))
