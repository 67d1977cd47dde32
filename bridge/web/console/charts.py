"""The console's charts: inline SVG written by the server, no JavaScript, no external asset.

Contract: `line_chart` and `bar_chart` are pure functions of their arguments returning
`markupsafe.Markup`, a `<figure class="chart …">` holding
- an `<svg role="img">` whose `<title>` (the chart's title) and `<desc>` (a summary with the
  numbers: how many, first and last, lowest, highest, latest, the limit) name it for a screen
  reader; every point and bar carries a `<title>` as well, which browsers show on hover;
- a `<details>` with the full numbers as a `<table>`, closed by default, so every value can be
  read without a pointer, without CSS and without JavaScript.

Every piece of text (titles, labels; tenant and source names may be among them) is escaped. No
`style` attribute is written: the console's Content-Security-Policy refuses inline styles, so
the looks are SVG presentation attributes (`fill`, `stroke`), which a stylesheet can override
through the classes (`chart-series`, `chart-limit`, `chart-grid`, `chart-axis`, `chart-empty`).
The SVG has a fixed `viewBox` and `width`/`height`; `svg.chart-svg { max-width: 100%; height:
auto }` in the console's stylesheet makes it shrink on a phone; its text shrinks with it, so a
page meant for a phone renders a narrower chart (`width=360`) rather than scaling a wide one.

The y axis starts at zero (seats, durations and counts are amounts, and a bar's length must be
its value); ticks are round numbers (1, 2, 2.5 or 5 times a power of ten; whole numbers when
every value is whole), labelled with k from 10,000, M from a million, G from a billion. Values
that are not finite numbers are left out. The words (no data, limit, the summary) come in
`ChartWords`, English by default: the console passes its catalogue's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

SERIES_COLOUR = "#2563eb"  # blue 600: 5.2:1 against white
LIMIT_COLOUR = "#b91c1c"  # red 700
GRID_COLOUR = "#d4d4d8"
FONT_SIZE = 11
CHAR_WIDTH = 6.6  # the average advance of an 11px sans-serif digit or letter, for layout only
MAX_POINT_MARKS = 120  # a point with a hover title each, up to this many; beyond, the line alone

_ids = itertools.count(1)


@dataclass(frozen=True)
class ChartWords:
    """What a chart says in words. `{…}` fields are filled with formatted numbers and labels."""

    no_data: str = "No data"
    limit: str = "Limit"
    numbers: str = "The numbers"
    date: str = "Date"  # the table's first header when the caller names none
    item: str = "Item"
    line_summary: str = "{count} values from {first} to {last}: lowest {low}, highest {high}, latest {latest}."
    bar_summary: str = "{count} values: lowest {low}, highest {high}."
    limit_summary: str = "Limit {limit}."
    decimal: str = "."
    thousands: str = ","


ENGLISH = ChartWords()


# -- numbers ------------------------------------------------------------------------------


def nice_ticks(low: float, high: float, *, count: int = 4, whole: bool = False) -> list[float]:
    """Round tick values covering [low, high] (zero included), about `count` steps."""
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low <= 0:
        high = 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    if whole:
        step = max(1.0, float(math.ceil(step)))
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [_clean(i * step) for i in range(first, last + 1)]


def _clean(value: float) -> float:
    # 0.1 * 3 is 0.30000000000000004: keep the tick's value what its label says.
    return round(value, 10) + 0.0


def _decimals(value: float) -> int:
    for places in range(7):
        if abs(round(value, places) - value) < 1e-9 * max(1.0, abs(value)):
            return places
    return 6


def format_number(value: float, words: ChartWords = ENGLISH, *, decimals: int | None = None) -> str:
    """A value in full, with the words' separators (`12,345.5`; `12 345,5` in French)."""
    places = _decimals(value) if decimals is None else decimals
    text = f"{value:,.{places}f}"
    return text.replace(",", "\0").replace(".", words.decimal).replace("\0", words.thousands)


def tick_labels(ticks: Sequence[float], words: ChartWords = ENGLISH) -> list[str]:
    """Short labels for round ticks: `0, 50k, 100k`, `0, 0.25, 0.5`."""
    top = max((abs(t) for t in ticks), default=0.0)
    # k from 10,000 (below, "2,500" reads as well as "2.5k"), M and G from a million and a billion.
    divisor, suffix = next(
        ((d, s) for d, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if top >= d and top >= 1e4), (1.0, "")
    )
    # Each label as short as its value allows ("0.5", not "0.50"): ticks are round already.
    return [format_number(_clean(t / divisor), words) + (suffix if t else "") for t in ticks]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(values: Sequence[float]) -> bool:
    return all(float(v).is_integer() for v in values)


# -- drawing ------------------------------------------------------------------------------


def _n(value: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class _Frame:
    """The plot area inside the SVG and the y scale."""

    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    ticks: list[float]

    def y(self, value: float) -> float:
        low, high = self.ticks[0], self.ticks[-1]
        return self.bottom - (value - low) / (high - low) * (self.bottom - self.top)


def _frame(width: int, height: int, values: Sequence[float], words: ChartWords) -> tuple[_Frame, list[str]]:
    ticks = nice_ticks(min(values, default=0.0), max(values, default=0.0), whole=_whole(values))
    labels = tick_labels(ticks, words)
    left = max(len(label) for label in labels) * CHAR_WIDTH + 10
    frame = _Frame(width, height, left=left, right=width - 12, top=24, bottom=height - 24, ticks=ticks)
    return frame, labels


def _grid(frame: _Frame, labels: Sequence[str], y_label: str) -> list[str]:
    parts = ['<g class="chart-grid">']
    for tick, label in zip(frame.ticks, labels, strict=True):
        y = _n(frame.y(tick))
        parts.append(
            f'<line x1="{_n(frame.left)}" y1="{y}" x2="{_n(frame.right)}" y2="{y}" stroke="{GRID_COLOUR}" '
            'stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_n(frame.left - 6)}" y="{y}" text-anchor="end" dominant-baseline="middle" '
            f'font-size="{FONT_SIZE}" fill="currentColor">{escape(label)}</text>'
        )
    parts.append("</g>")
    if y_label:
        parts.append(
            f'<text class="chart-axis" x="{_n(frame.left)}" y="{FONT_SIZE + 2}" font-size="{FONT_SIZE}" '
            f'fill="currentColor">{escape(y_label)}</text>'
        )
    base = _n(frame.y(0.0))
    parts.append(
        f'<line class="chart-axis" x1="{_n(frame.left)}" y1="{base}" x2="{_n(frame.right)}" y2="{base}" '
        'stroke="currentColor" stroke-width="1"/>'
    )
    return parts


def _empty(frame: _Frame, words: ChartWords) -> str:
    return (
        f'<text class="chart-empty" x="{_n((frame.left + frame.right) / 2)}" y="{_n((frame.top + frame.bottom) / 2)}" '
        f'text-anchor="middle" dominant-baseline="middle" font-size="{FONT_SIZE + 2}" fill="currentColor">'
        f"{escape(words.no_data)}</text>"
    )


def _svg(frame: _Frame, title: str, desc: str, body: Sequence[str]) -> str:
    chart_id = f"chart-{next(_ids)}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" role="img" '
        f'viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" height="{frame.height}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" font-family="sans-serif">'
        f'<title id="{chart_id}-title">{escape(title)}</title><desc id="{chart_id}-desc">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _figure(
    kind: str, svg: str, headers: tuple[str, str], rows: Sequence[tuple[str, str]], words: ChartWords
) -> Markup:
    table = ""
    if rows:
        cells = "".join(f"<tr><td>{escape(x)}</td><td>{escape(v)}</td></tr>" for x, v in rows)
        table = (
            f'<details class="chart-data"><summary>{escape(words.numbers)}</summary><table>'
            f'<thead><tr><th scope="col">{escape(headers[0])}</th>'
            f'<th scope="col">{escape(headers[1])}</th></tr></thead>'
            f"<tbody>{cells}</tbody></table></details>"
        )
    return Markup(f'<figure class="chart chart-{kind}">{svg}{table}</figure>')


# -- the charts ---------------------------------------------------------------------------


def _instant(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _default_x_format(points: Sequence[tuple[date | datetime, float]]) -> Callable[[date | datetime], str]:
    times = [_instant(x) for x, _ in points]
    timed = any(isinstance(x, datetime) for x, _ in points)
    if timed and times and max(times) - min(times) < timedelta(days=2):
        return lambda x: _instant(x).strftime("%H:%M")
    return lambda x: _instant(x).strftime("%Y-%m-%d")


def line_chart(
    points: Sequence[tuple[date | datetime, float]],
    *,
    title: str,
    y_label: str,
    limit: float | None = None,
    width: int = 640,
    height: int = 200,
    x_label: str = "",
    x_format: Callable[[date | datetime], str] | None = None,
    words: ChartWords = ENGLISH,
) -> Markup:
    """A line over time (seats used over 90 days), with `limit` as a dashed line when given.
    Points are sorted by time; dates and datetimes may be mixed (a date is its midnight UTC)."""
    kept = sorted(((x, float(v)) for x, v in points if _finite(v)), key=lambda p: _instant(p[0]))
    values = [v for _, v in kept]
    line = float(limit) if limit is not None and _finite(limit) else None
    frame, labels = _frame(width, height, values + ([line] if line is not None else []), words)
    fmt = x_format or _default_x_format(kept)
    body = _grid(frame, labels, y_label)

    if kept:
        start, end = _instant(kept[0][0]).timestamp(), _instant(kept[-1][0]).timestamp()
        span = end - start

        def x_of(moment: date | datetime) -> float:
            if span <= 0:  # one point, or all at one time: in the middle
                return (frame.left + frame.right) / 2
            return frame.left + (_instant(moment).timestamp() - start) / span * (frame.right - frame.left)

        coords = [(x_of(x), frame.y(v)) for x, v in kept]
        path = " ".join(f"{_n(x)},{_n(y)}" for x, y in coords)
        body.append(
            f'<polyline class="chart-series" points="{path}" fill="none" stroke="{SERIES_COLOUR}" '
            'stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>'
        )
        if len(kept) <= MAX_POINT_MARKS:
            # Each point answers a hover with its date and value; drawn only when they are far
            # enough apart not to bead the line (then only the latest is drawn).
            spacing = (frame.right - frame.left) / max(len(kept) - 1, 1)
            shown = len(kept) == 1 or spacing >= 10
            radius = 4 if len(kept) == 1 else 3 if shown else max(2.0, spacing / 2)
            body.append('<g class="chart-points">')
            for (x, v), (cx, cy) in zip(kept, coords, strict=True):
                body.append(
                    f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{_n(radius)}" fill="{SERIES_COLOUR}"'
                    + ("" if shown else ' fill-opacity="0"')
                    + f"><title>{escape(fmt(x))}: {escape(format_number(v, words))}</title></circle>"
                )
            body.append("</g>")
        if len(kept) > MAX_POINT_MARKS or not shown:
            cx, cy = coords[-1]
            body.append(f'<circle class="chart-latest" cx="{_n(cx)}" cy="{_n(cy)}" r="3" fill="{SERIES_COLOUR}"/>')
        # x labels: the first and last point and evenly between, as many as fit.
        room = max(1, int((frame.right - frame.left) // (len(fmt(kept[0][0])) * CHAR_WIDTH + 24)))
        count = 1 if span <= 0 else min(len(kept), max(2, min(room, 5)))
        picks = sorted({round(i * (len(kept) - 1) / max(count - 1, 1)) for i in range(count)})
        body.append('<g class="chart-axis">')
        for index in picks:
            x = coords[index][0]
            anchor = "middle"
            if count > 1 and index == 0:
                anchor = "start"
            elif count > 1 and index == len(kept) - 1:
                anchor = "end"
            body.append(
                f'<text x="{_n(x)}" y="{_n(frame.bottom + FONT_SIZE + 6)}" text-anchor="{anchor}" '
                f'font-size="{FONT_SIZE}" fill="currentColor">{escape(fmt(kept[index][0]))}</text>'
            )
        body.append("</g>")
    else:
        body.append(_empty(frame, words))

    if line is not None:
        y = _n(frame.y(line))
        text = f"{words.limit} {format_number(line, words)}"
        # Its label is a legend above the plot, where no value can run over it.
        key_end = frame.right - len(text) * CHAR_WIDTH - 6
        key_y = _n(FONT_SIZE - 2)
        dashes = f'stroke="{LIMIT_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"'
        body.append(
            f'<g class="chart-limit"><line x1="{_n(frame.left)}" y1="{y}" x2="{_n(frame.right)}" y2="{y}" {dashes}/>'
            f'<line x1="{_n(key_end - 22)}" y1="{key_y}" x2="{_n(key_end)}" y2="{key_y}" {dashes}/>'
            f'<text x="{_n(frame.right)}" y="{FONT_SIZE + 2}" text-anchor="end" '
            f'font-size="{FONT_SIZE}" fill="{LIMIT_COLOUR}">{escape(text)}</text></g>'
        )

    desc = words.no_data + "."
    if kept:
        desc = words.line_summary.format(
            count=len(kept),
            first=fmt(kept[0][0]),
            last=fmt(kept[-1][0]),
            low=format_number(min(values), words),
            high=format_number(max(values), words),
            latest=format_number(values[-1], words),
        )
    if line is not None:
        desc += " " + words.limit_summary.format(limit=format_number(line, words))
    rows = [(fmt(x), format_number(v, words)) for x, v in kept]
    return _figure("line", _svg(frame, title, desc, body), (x_label or words.date, y_label), rows, words)


def bar_chart(
    series: Sequence[tuple[str, float]],
    *,
    title: str,
    y_label: str = "",
    x_label: str = "",
    width: int = 640,
    height: int = 200,
    words: ChartWords = ENGLISH,
) -> Markup:
    """Bars in the given order (sync runs, oldest first: their durations or changes), each with
    its label below when there is room and in its hover title always."""
    kept = [(str(label), float(v)) for label, v in series if _finite(v)]
    values = [v for _, v in kept]
    frame, labels = _frame(width, height, values, words)
    body = _grid(frame, labels, y_label)
    if kept:
        slot = (frame.right - frame.left) / len(kept)
        gap = min(slot * 0.2, 8.0) if slot >= 4 else 0.0
        base = frame.y(0.0)
        body.append('<g class="chart-series">')
        for index, (label, value) in enumerate(kept):
            y = frame.y(value)
            top, bar_height = min(y, base), abs(base - y)
            body.append(
                f'<rect x="{_n(frame.left + index * slot + gap / 2)}" y="{_n(top)}" '
                f'width="{_n(max(slot - gap, 0.5))}" height="{_n(bar_height)}" fill="{SERIES_COLOUR}">'
                f"<title>{escape(label)}: {escape(format_number(value, words))}</title></rect>"
            )
        body.append("</g>")
        # A label every `every` bars so that they never overlap, cut to what fits.
        longest = min(max(len(label) for label, _ in kept), 16)
        every = max(1, math.ceil((longest * CHAR_WIDTH + 8) / slot))
        fits = max(1, int((slot * every - 8) // CHAR_WIDTH))
        body.append('<g class="chart-axis">')
        last_right = 0.0
        for index in range(0, len(kept), every):
            label = kept[index][0]
            shown = label if len(label) <= fits else label[: max(fits - 1, 1)] + "…"
            half = len(shown) * CHAR_WIDTH / 2 + 2
            centre = min(max(frame.left + (index + 0.5) * slot, half), width - half)  # never cut at an edge
            if centre - half < last_right:  # pushed in from an edge onto its neighbour
                continue
            last_right = centre + half
            body.append(
                f'<text x="{_n(centre)}" y="{_n(frame.bottom + FONT_SIZE + 6)}" '
                f'text-anchor="middle" font-size="{FONT_SIZE}" fill="currentColor">{escape(shown)}</text>'
            )
        body.append("</g>")
        desc = words.bar_summary.format(
            count=len(kept), low=format_number(min(values), words), high=format_number(max(values), words)
        )
    else:
        body.append(_empty(frame, words))
        desc = words.no_data + "."
    rows = [(label, format_number(v, words)) for label, v in kept]
    return _figure("bar", _svg(frame, title, desc, body), (x_label or words.item, y_label), rows, words)
