"""The sharing agreements' pages in a real headless Chromium, served by uvicorn: a manager signs
in through the form, goes from the list of agreements to the variable one, its heatmap of
coefficients draws under the Content-Security-Policy, and the console stays clean with
nothing requested from off the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext
from test_monitoring_agreement_pages import NOW, PASSWORD, build_world

from monitoring.api import create_app
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore

from .browser import chromium_fixture, watch
from .monitoring_harness import served

__all__ = ["chromium_fixture"]

DRAW_TIMEOUT_MS = 30_000


@pytest.fixture(name="served_world")
def served_world_fixture(tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """The agreements' world served on loopback: its base URL and the agreement ids."""
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    ids = build_world(store)
    with served(create_app(MonitorService(store, clock=lambda: float(NOW)))) as url:
        yield url, ids
    store.close()


def test_a_manager_sees_an_agreements_heatmap_in_chromium(
    chromium: BrowserContext, served_world: tuple[str, dict[str, int]]
) -> None:
    base_url, ids = served_world
    page, seen = watch(chromium, allow=[base_url])  # the service itself, and nothing else
    try:
        page.goto(f"{base_url}/manager/agreements", wait_until="load")
        assert "/login" in page.url  # no session yet: sent to sign in
        page.fill("#username", "gestora")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base_url}/manager/agreements")
        assert page.locator("tr[data-agreement]").count() == 2

        page.click(f"tr[data-agreement='{ids['variable']}'] a")
        page.wait_for_url(f"{base_url}/manager/agreements/{ids['variable']}?community=sol")
        page.wait_for_function(
            "() => document.querySelector('#coefficients .main-svg')", timeout=DRAW_TIMEOUT_MS
        )
        assert page.locator("#coefficients svg.main-svg").count() > 0
        assert page.locator("#coefficients .hm").count() == 1  # plotly's heatmap trace
        assert page.locator("#revision tbody tr").count() == 3
    finally:
        page.close()
    assert seen.refused == []
    assert seen.console_errors == []
    assert seen.page_errors == []
    assert seen.requests and all(url.startswith(base_url) for url in seen.requests)
