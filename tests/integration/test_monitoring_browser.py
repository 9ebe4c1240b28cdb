"""The member pages and the public display in a real headless Chromium, served by uvicorn:
a member signs in through the form and sees only their own supply points, another member's
supply point is not found, the public display holds nothing personal, charts draw under the
Content-Security-Policy, no console error, and nothing is requested from off the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page
from test_monitoring_pages import (
    ANA_CUPS,
    BEN_CUPS,
    NOW,
    PASSWORD,
    PERSONAL,
    monitoring_app,
    seed,
)

from monitoring.auth import create_user
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore

from .browser import PageWatch, chromium_fixture, watch
from .monitoring_harness import served

__all__ = ["chromium_fixture"]

DRAW_TIMEOUT_MS = 30_000


@pytest.fixture(name="base_url")
def base_url_fixture(tmp_path: Path) -> Iterator[str]:
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    ids = seed(store, days=3)
    create_user(store, "ana", PASSWORD, "member", member_id=ids["ana"])
    create_user(store, "ben", PASSWORD, "member", member_id=ids["ben"])
    with served(monitoring_app(MonitorService(store, clock=lambda: NOW))) as url:
        yield url
    store.close()


def watched(chromium: BrowserContext, base_url: str) -> tuple[Page, PageWatch]:
    """A watched page that may reach the service under test on loopback and nothing else."""
    return watch(chromium, allow=[base_url])


def chart_drawn(page: Page) -> None:
    page.wait_for_function(
        "() => document.querySelector('#chart .main-svg .trace')", timeout=DRAW_TIMEOUT_MS
    )
    assert page.locator("#chart svg.main-svg").count() > 0


def test_a_member_sees_only_their_own_data_in_chromium(
    chromium: BrowserContext, base_url: str
) -> None:
    page, seen = watched(chromium, base_url)
    page.goto(f"{base_url}/member", wait_until="load")
    assert page.url.startswith(f"{base_url}/login?next=")
    page.fill("#username", "ana")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/member")
    listing = page.content()
    assert ANA_CUPS in listing and BEN_CUPS not in listing and "Piso de Ben" not in listing

    page.click(f"a[href='/member/supply/{ANA_CUPS}']")
    page.wait_for_url(f"{base_url}/member/supply/{ANA_CUPS}")
    page.goto(f"{base_url}/member/supply/{ANA_CUPS}?view=day&date=2024-06-10", wait_until="load")
    chart_drawn(page)
    assert page.locator("#total-allocated").inner_text() == "4.0 kWh"
    assert page.locator("table.figures tbody tr").count() == 24

    refused = page.goto(f"{base_url}/member/supply/{BEN_CUPS}", wait_until="load")
    assert refused is not None and refused.status == 404
    assert "Piso de Ben" not in page.content()
    page.close()
    assert seen.refused == []
    # Chromium logs the refused page's 404 itself; nothing else may be logged.
    assert [e for e in seen.console_errors if "status of 404" not in e] == []
    assert seen.page_errors == []
    assert all(url.startswith(base_url) for url in seen.requests)


def test_the_public_display_draws_with_nothing_personal_in_chromium(
    chromium: BrowserContext, base_url: str
) -> None:
    page, seen = watched(chromium, base_url)
    page.goto(f"{base_url}/public/sol?kiosk=1", wait_until="load")
    chart_drawn(page)
    shown = page.content()
    for personal in (*PERSONAL, "Casa de Ana", "Piso de Ben"):
        assert personal not in shown
    assert page.locator("body.kiosk").count() == 1 and page.locator("nav").count() == 0
    assert page.locator(".modebar-btn[data-title*='Chart Studio']").count() == 0
    page.close()
    assert seen.refused == []
    assert seen.console_errors == []
    assert seen.page_errors == []
    assert seen.requests and all(url.startswith(base_url) for url in seen.requests)
