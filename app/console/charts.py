"""Server-side SVG charts for the overview: no chart library, no JavaScript, no external asset.

Each chart is an inline ``<svg role="img">`` with a title, a description and a ``<title>``
tooltip on every bar, so it reads in any browser (and to a screen reader); the page also shows
the numbers as a table.  Colours come from CSS classes in ``console.css`` (the page's content
security policy forbids inline styles).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from app.console.queries import OUTCOME_GROUPS, HourBucket

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 28


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above ``value`` (an axis maximum)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude  # pragma: no cover - the loop always returns


def format_seconds(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3.5 min``, ``2.0 h`` (a delay as people read it)."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _frame(title: str, description: str, ident: str, y_max: float, y_label) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{ident}-t {ident}-d" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{ident}-t">{escape(title)}</title>',
             f'<desc id="{ident}-d">{escape(description)}</desc>']
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" '
                     f'y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(y_label(y_max * fraction))}</text>')
    return parts


def _x_labels(buckets: Sequence[HourBucket], slot: float) -> list[str]:
    parts = []
    for index, bucket in enumerate(buckets):
        if index % 3 == 0:
            x = LEFT + slot * index + slot / 2
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" '
                         f'text-anchor="middle">{bucket.start:%H:00}</text>')
    return parts


def outcomes_chart(buckets: Sequence[HourBucket]) -> Markup:
    """Stacked bars: executions per scheduled hour, by outcome group."""
    y_max = _nice_ceiling(max((b.total for b in buckets), default=0))
    total = sum(b.total for b in buckets)
    parts = _frame("Delivery outcomes, last 24 hours",
                   f"{total} executions scheduled in the last 24 hours, per hour (UTC), stacked "
                   "by outcome.", "outcomes", y_max, lambda v: f"{v:g}")
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(buckets), 1)
    for index, bucket in enumerate(buckets):
        x = LEFT + slot * index + slot * 0.15
        y_base = TOP + plot_h
        for group, _statuses in OUTCOME_GROUPS:
            count = bucket.counts.get(group, 0)
            if not count:
                continue
            height = plot_h * count / y_max
            y_base -= height
            parts.append(f'<rect class="bar c-{group.replace(" ", "-")}" x="{x:.1f}" '
                         f'y="{y_base:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}">'
                         f'<title>{bucket.start:%H:00} UTC: {count} {escape(group)}</title>'
                         '</rect>')
    parts += _x_labels(buckets, slot)
    parts.append("</svg>")
    return Markup("".join(parts))


def lateness_chart(buckets: Sequence[HourBucket]) -> Markup:
    """Scheduler lateness per hour: the worst start delay as a bar, the average as a dot."""
    y_max = _nice_ceiling(max((b.delay_max or 0 for b in buckets), default=0))
    parts = _frame("Scheduler lateness, last 24 hours",
                   "Delay between an execution's scheduled time and its start, per hour (UTC): "
                   "bars show the worst delay, dots the average.", "lateness", y_max,
                   format_seconds)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(buckets), 1)
    for index, bucket in enumerate(buckets):
        if bucket.delay_max is None:
            continue
        x = LEFT + slot * index + slot * 0.15
        height = plot_h * bucket.delay_max / y_max
        label = (f"{bucket.start:%H:00} UTC: worst {format_seconds(bucket.delay_max)}, "
                 f"average {format_seconds(bucket.delay_avg)} over {bucket.started} starts")
        parts.append(f'<rect class="bar c-late-max" x="{x:.1f}" y="{TOP + plot_h - height:.1f}" '
                     f'width="{slot * 0.7:.1f}" height="{height:.1f}"><title>{escape(label)}'
                     '</title></rect>')
        avg_y = TOP + plot_h - plot_h * (bucket.delay_avg or 0) / y_max
        parts.append(f'<circle class="c-late-avg" cx="{x + slot * 0.35:.1f}" cy="{avg_y:.1f}" '
                     f'r="3.5"><title>{escape(label)}</title></circle>')
    parts += _x_labels(buckets, slot)
    parts.append("</svg>")
    return Markup("".join(parts))
