"""The console's SVG charts (bridge/web/console/charts.py): well-formed, every mark inside the
picture, the limit drawn when given, round tick labels, and every text escaped."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

import pytest
from markupsafe import Markup

from bridge.web.console.charts import ChartWords, bar_chart, format_number, line_chart, nice_ticks, tick_labels

SVG = "{http://www.w3.org/2000/svg}"
DAY = date(2026, 9, 4)


def parse(markup: Markup) -> tuple[ET.Element, ET.Element]:
    assert isinstance(markup, Markup)
    figure = ET.fromstring(str(markup))  # raises on anything not well-formed
    assert figure.tag == "figure"
    svg = figure.find(f"{SVG}svg")
    assert svg is not None
    return figure, svg


def view_box(svg: ET.Element) -> tuple[float, float]:
    x, y, width, height = (float(v) for v in svg.attrib["viewBox"].split())
    assert (x, y) == (0, 0)
    return width, height


def inside(svg: ET.Element, x: float, y: float) -> bool:
    width, height = view_box(svg)
    return 0 <= x <= width and 0 <= y <= height


def polyline_points(svg: ET.Element) -> list[tuple[float, float]]:
    line = svg.find(f".//{SVG}polyline")
    assert line is not None
    return [(float(a), float(b)) for a, b in (p.split(",") for p in line.attrib["points"].split())]


def limit_line(svg: ET.Element) -> ET.Element | None:
    group = svg.find(f"{SVG}g[@class='chart-limit']")
    return None if group is None else group.find(f"{SVG}line")


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


def seats(days: int, start: int = 30) -> list[tuple[date, float]]:
    return [(DAY + timedelta(days=i), start + i // 5) for i in range(days)]


def test_a_line_chart_is_an_accessible_well_formed_svg() -> None:
    figure, svg = parse(line_chart(seats(90), title="Seats used", y_label="seats", limit=50))
    assert svg.attrib["role"] == "img"
    title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
    assert title is not None and title.text == "Seats used"
    assert desc is not None and desc.text is not None
    assert "90 values from 2026-09-04 to 2026-12-02" in desc.text and "highest 47" in desc.text
    assert "Limit 50" in desc.text
    assert svg.attrib["aria-labelledby"].split() == [title.attrib["id"], desc.attrib["id"]]
    rows = figure.findall("./details/table/tbody/tr")
    assert len(rows) == 90 and [td.text for td in rows[-1]] == ["2026-12-02", "47"]


def test_line_points_map_inside_the_view_box_in_time_order() -> None:
    points = seats(90)
    _, svg = parse(line_chart(list(reversed(points)), title="t", y_label="seats", limit=50))
    coords = polyline_points(svg)
    assert len(coords) == 90 and all(inside(svg, x, y) for x, y in coords)
    xs = [x for x, _ in coords]
    assert xs == sorted(xs) and len(set(xs)) == 90  # sorted by time, whatever order they came in
    # A higher value is higher up (a smaller y); equal values are level.
    assert coords[-1][1] < coords[0][1] and coords[0][1] == coords[4][1]
    circles = svg.findall(f"./{SVG}g[@class='chart-points']/{SVG}circle")
    assert [(float(c.attrib["cx"]), float(c.attrib["cy"])) for c in circles] == coords
    assert [t.text for t in circles[-1]] == ["2026-12-02: 47"]  # every point answers a hover


def test_the_limit_is_a_dashed_line_above_the_values_below_it() -> None:
    _, svg = parse(line_chart(seats(90), title="t", y_label="seats", limit=50))
    line = limit_line(svg)
    assert line is not None and line.attrib["stroke-dasharray"]
    y = float(line.attrib["y1"])
    assert line.attrib["y1"] == line.attrib["y2"] and inside(svg, float(line.attrib["x2"]), y)
    assert all(y < point_y for _, point_y in polyline_points(svg))
    assert "Limit 50" in texts(svg)

    # A limit far above every value stays inside the picture too: the scale grows to it.
    _, svg = parse(line_chart(seats(10), title="t", y_label="seats", limit=10_000))
    line = limit_line(svg)
    assert line is not None and inside(svg, 0, float(line.attrib["y1"]))
    assert all(inside(svg, x, y) for x, y in polyline_points(svg))


def test_no_limit_no_limit_line() -> None:
    _, svg = parse(line_chart(seats(10), title="t", y_label="seats"))
    assert limit_line(svg) is None and not any("Limit" in t for t in texts(svg))


def test_no_points_says_so_and_still_draws_the_limit() -> None:
    figure, svg = parse(line_chart([], title="Seats", y_label="seats", limit=50))
    assert svg.find(f".//{SVG}polyline") is None and "No data" in texts(svg)
    assert limit_line(svg) is not None
    desc = svg.find(f"{SVG}desc")
    assert desc is not None and desc.text == "No data. Limit 50."
    assert figure.find("details") is None  # no empty table
    figure, svg = parse(bar_chart([], title="Runs"))
    assert svg.find(f".//{SVG}rect") is None and "No data" in texts(svg)


def test_one_point_sits_in_the_middle() -> None:
    _, svg = parse(line_chart([(DAY, 7)], title="t", y_label="seats"))
    ((x, y),) = polyline_points(svg)
    width, _ = view_box(svg)
    assert inside(svg, x, y) and abs(x - width / 2) < width * 0.05
    assert "2026-09-04" in texts(svg)


@pytest.mark.parametrize("value", [0, 5, 123_456, 0.25])
def test_all_equal_values_draw_a_level_line_inside(value: float) -> None:
    _, svg = parse(line_chart([(DAY + timedelta(days=i), value) for i in range(5)], title="t", y_label="y"))
    coords = polyline_points(svg)
    assert len({y for _, y in coords}) == 1 and all(inside(svg, x, y) for x, y in coords)
    _, bars = parse(bar_chart([(f"run {i}", value) for i in range(5)], title="t"))
    heights = {float(r.attrib["height"]) for r in bars.iter(f"{SVG}rect")}
    assert len(heights) == 1 and all(math.isfinite(h) for h in heights)


def test_large_values_get_round_short_tick_labels() -> None:
    _, svg = parse(line_chart([(DAY, 0), (DAY + timedelta(days=1), 123_456)], title="t", y_label="seats"))
    assert {"0", "50k", "100k", "150k"} <= set(texts(svg))
    assert tick_labels(nice_ticks(0, 3.2e9)) == ["0", "1G", "2G", "3G", "4G"]
    assert tick_labels(nice_ticks(0, 7_300_000)) == ["0", "2M", "4M", "6M", "8M"]
    assert tick_labels(nice_ticks(0, 9_000)) == ["0", "2.5k", "5k", "7.5k", "10k"]
    assert tick_labels(nice_ticks(0, 8_000)) == ["0", "2,000", "4,000", "6,000", "8,000"]
    assert tick_labels(nice_ticks(0, 0.9)) == ["0", "0.25", "0.5", "0.75", "1"]
    # Whole amounts (seats, changes) never get fractional ticks.
    assert nice_ticks(0, 1, whole=True) == [0, 1] and nice_ticks(0, 3, whole=True) == [0, 1, 2, 3]
    assert nice_ticks(0, 0) == [0, 0.25, 0.5, 0.75, 1]


def test_ticks_cover_the_values_from_zero() -> None:
    for high in (1, 3, 7, 48, 99, 101, 1234, 0.03, 5e7):
        ticks = nice_ticks(0, high)
        assert ticks[0] == 0 and ticks[-1] >= high and 3 <= len(ticks) <= 7, (high, ticks)
    assert nice_ticks(-5, 12)[0] <= -5


def test_bars_map_inside_the_view_box_with_lengths_proportional_to_values() -> None:
    series = [("run 1", 10.0), ("run 2", 20.0), ("run 3", 0.0), ("run 4", 40.0)]
    figure, svg = parse(bar_chart(series, title="Duration", y_label="seconds"))
    rects = list(svg.iter(f"{SVG}rect"))
    assert len(rects) == 4
    for rect in rects:
        x, y, w, h = (float(rect.attrib[k]) for k in ("x", "y", "width", "height"))
        assert inside(svg, x, y) and inside(svg, x + w, y + h) and w > 0 and h >= 0
    heights = [float(r.attrib["height"]) for r in rects]
    assert heights[2] == 0 and heights[1] == pytest.approx(2 * heights[0], rel=0.02)
    assert heights[3] == pytest.approx(4 * heights[0], rel=0.02)
    bottoms = {round(float(r.attrib["y"]) + float(r.attrib["height"]), 1) for r in rects}
    assert len(bottoms) == 1  # every bar stands on the zero line
    titles = [t.text for r in rects for t in r.iter(f"{SVG}title")]
    assert titles == ["run 1: 10", "run 2: 20", "run 3: 0", "run 4: 40"]
    assert [td.text for td in figure.findall("./details/table/tbody/tr")[3]] == ["run 4", "40"]


def test_many_bars_label_only_every_few_and_stay_inside() -> None:
    series = [(f"2026-12-{1 + i % 28:02d} 03:00", i * 1.5) for i in range(300)]
    _, svg = parse(bar_chart(series, title="t", y_label="seconds"))
    rects = list(svg.iter(f"{SVG}rect"))
    assert len(rects) == 300
    assert all(inside(svg, float(r.attrib["x"]) + float(r.attrib["width"]), float(r.attrib["y"])) for r in rects)
    axis = svg.find(f"{SVG}g[@class='chart-axis']")
    assert axis is not None
    labels = axis.findall(f"{SVG}text")
    assert 2 <= len(labels) < 40
    xs = [float(t.attrib["x"]) for t in labels]
    assert min(b - a for a, b in itertools.pairwise(xs)) > 6.6 * max(len(t.text or "") for t in labels) - 1


def test_every_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script> & "Ünïcode" \'q\''
    figure, svg = parse(line_chart([(DAY, 1)], title=hostile, y_label=hostile, limit=3, x_format=lambda _: hostile))
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text == hostile
    assert hostile in texts(svg)
    header = figure.find("./details/table/thead/tr/th[2]")
    assert header is not None and header.text == hostile
    figure, svg = parse(bar_chart([(hostile, 1.0)], title=hostile, y_label=hostile, x_label=hostile))
    bar_title = svg.find(f".//{SVG}rect/{SVG}title")
    assert bar_title is not None and bar_title.text == f"{hostile}: 1"
    out = str(bar_chart([(hostile, 1.0)], title=hostile))
    assert "<script" not in out and "&lt;script&gt;" in out


@pytest.mark.parametrize(
    "markup",
    [
        line_chart(seats(90), title="t", y_label="seats", limit=50),
        line_chart([], title="t", y_label="seats"),
        bar_chart([("a", 1.0), ("b", 2.5)], title="t"),
    ],
)
def test_nothing_the_console_csp_would_refuse(markup: Markup) -> None:
    figure, _ = parse(markup)
    for element in figure.iter():
        assert "style" not in element.attrib and not any(a.startswith("on") for a in element.attrib)
        assert element.tag not in (f"{SVG}script", "script", f"{SVG}style", "style", f"{SVG}image", f"{SVG}use")
        assert not any("url(" in v or "href" in a for a, v in element.attrib.items())


def test_two_charts_on_one_page_have_distinct_ids() -> None:
    _, first = parse(line_chart([], title="a", y_label="y"))
    _, second = parse(bar_chart([], title="b"))
    assert first.attrib["aria-labelledby"] != second.attrib["aria-labelledby"]


def test_values_that_are_not_numbers_are_left_out() -> None:
    points = [(DAY, 1.0), (DAY + timedelta(days=1), math.nan), (DAY + timedelta(days=2), math.inf), (DAY, 2.0)]
    _, svg = parse(line_chart(points, title="t", y_label="y", limit=math.nan))
    assert len(polyline_points(svg)) == 2 and limit_line(svg) is None
    _, svg = parse(bar_chart([("a", math.nan), ("b", 3.0)], title="t"))
    assert len(list(svg.iter(f"{SVG}rect"))) == 1


def test_times_within_a_day_are_labelled_by_the_hour_and_mixed_with_dates() -> None:
    start = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    _, svg = parse(line_chart([(start + timedelta(hours=h), h) for h in range(10)], title="t", y_label="y"))
    assert "08:00" in texts(svg) and "17:00" in texts(svg)
    mixed = [(date(2026, 12, 1), 1.0), (datetime(2026, 12, 2, 12, 0), 2.0), (date(2026, 12, 4), 3.0)]
    _, svg = parse(line_chart(mixed, title="t", y_label="y"))
    xs = [x for x, _ in polyline_points(svg)]
    assert xs[0] < xs[1] < xs[2]


def test_the_words_and_number_format_are_the_callers() -> None:
    french = ChartWords(
        no_data="Aucune donnée",
        limit="Limite",
        numbers="Les chiffres",
        line_summary="{count} valeurs du {first} au {last} : minimum {low}, maximum {high}, dernière {latest}.",
        limit_summary="Limite {limit}.",
        date="Date",
        decimal=",",
        thousands="\u202f",
    )
    assert format_number(12345.5, french) == "12\u202f345,5"
    figure, svg = parse(line_chart([(DAY, 1234.5)], title="Sièges", y_label="sièges", limit=2000, words=french))
    desc = svg.find(f"{SVG}desc")
    assert desc is not None and desc.text is not None and "maximum 1\u202f234,5" in desc.text
    assert "Limite 2\u202f000" in texts(svg)
    summary = figure.find("./details/summary")
    assert summary is not None and summary.text == "Les chiffres"
    _, svg = parse(line_chart([], title="t", y_label="y", words=french))
    assert "Aucune donnée" in texts(svg)
