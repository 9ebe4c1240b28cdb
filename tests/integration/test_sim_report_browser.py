"""The run report in a real headless Chromium: every chart draws, the console stays clean and
no request leaves the machine, with the network refused to make sure."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext
from test_sim_report import CHARTS, HOSTILE, sample_metrics, sample_record

from simulation.report import write_report

from .browser import chromium_fixture, watch

__all__ = ["chromium_fixture"]

DRAW_TIMEOUT_MS = 30_000

# Per plotly div: whether plotly drew its SVG, how many traces and how many drawn marks (bars,
# lines and points are each a `path` with a shape inside a trace's group).
DRAWN = """
(ids) => ids.map((id) => {
    const div = document.getElementById(id);
    if (!div) return {id, found: false, svg: 0, traces: 0, marks: 0};
    return {
        id,
        found: true,
        svg: div.querySelectorAll(".main-svg").length,
        traces: div.querySelectorAll(".main-svg .trace").length,
        marks: [...div.querySelectorAll(".main-svg .trace path")]
            .filter((path) => (path.getAttribute("d") || "").length > 2).length,
    };
})
"""


def test_the_report_renders_offline_in_chromium(chromium: BrowserContext, tmp_path: Path) -> None:
    files = write_report(sample_record(HOSTILE), sample_metrics(HOSTILE), tmp_path / "report")
    page, seen = watch(chromium)
    page.goto(files.html.as_uri(), wait_until="load")
    ids = [f"chart-{chart}" for chart in CHARTS]
    page.wait_for_function(
        "(ids) => ids.every((id) => document.querySelector(`#${id} .main-svg .trace`))",
        arg=ids,
        timeout=DRAW_TIMEOUT_MS,
    )
    drawn = page.evaluate(DRAWN, ids)
    for chart in drawn:
        assert chart["found"], chart
        assert chart["svg"] > 0, chart
        assert chart["traces"] > 0, chart
        assert chart["marks"] > 0, chart
    assert page.locator("div.plotly-graph-div").count() == len(CHARTS)
    assert page.title() == f"PETra run {HOSTILE}"  # shown as text, never run
    assert page.locator("h1").inner_text() == f"PETra run {HOSTILE}"
    assert page.locator("figure.chart figcaption").count() == len(CHARTS)
    assert page.locator(".modebar-btn[data-title*='Chart Studio']").count() == 0
    assert page.locator("a.modebar-btn[href]").count() == 0  # no plotly logo link
    page.close()
    assert seen.refused == []
    assert seen.console_errors == []
    assert seen.page_errors == []
    outside = [url for url in seen.requests if not url.startswith(("file:", "data:", "blob:"))]
    assert outside == []
    assert seen.requests, "the page's own load was not seen: the request log is not working"


def test_an_outside_request_would_be_seen_and_refused(
    chromium: BrowserContext, tmp_path: Path
) -> None:
    """The watch itself works: a page that reaches out is caught, so an empty list above
    means the report reached nothing."""
    page_file = tmp_path / "leaky.html"
    page_file.write_text('<!DOCTYPE html><img src="https://example.invalid/pixel.png">')
    page, seen = watch(chromium)
    page.goto(page_file.as_uri(), wait_until="load")
    page.close()
    assert seen.refused == ["https://example.invalid/pixel.png"]


@pytest.mark.parametrize("hostile_timezone", ["../../etc/passwd", "<b>Europe/Nowhere</b>"])
def test_an_unknown_time_zone_falls_back_to_utc(
    chromium: BrowserContext, tmp_path: Path, hostile_timezone: str
) -> None:
    record = sample_record()
    record.config = {"location": {"timezone": hostile_timezone}}
    files = write_report(record, sample_metrics(), tmp_path / "report")
    page, seen = watch(chromium)
    page.goto(files.html.as_uri(), wait_until="load")
    page.wait_for_selector("#chart-power .main-svg .trace", timeout=DRAW_TIMEOUT_MS)
    assert "interval start (UTC)" in page.locator("#chart-power").inner_text()
    page.close()
    assert seen.console_errors == [] and seen.page_errors == [] and seen.refused == []
