"""The control centre in a real headless Chromium, served by uvicorn: a manager signs in,
opens /control, a device's reading appears live, and when the device then stays silent past
its `silent_after_s` the page shows it offline with an alarm, all without reloading; no
request leaves the machine and the console stays clean."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext
from test_monitoring_manager import app_for

from monitoring.auth import create_user
from monitoring.feeds import FeedDeclaration, declare_feed
from monitoring.samples import Sample
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore

from .browser import chromium_fixture, watch
from .monitoring_harness import served

__all__ = ["chromium_fixture"]

PASSWORD = "a long enough password"
SILENT_AFTER_S = 2
LIVE_TIMEOUT_MS = 10_000


class StoppedClock:
    """The service's clock, which moves only when the test says: a device is silent past its
    `silent_after_s` exactly when the test makes it so, however slow the machine is."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def clock_fixture() -> StoppedClock:
    return StoppedClock()


@pytest.fixture(name="service")
def service_fixture(tmp_path: Path, clock: StoppedClock) -> Iterator[MonitorService]:
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.db'}")
    store.put_community("alpha", "Alpha", "Europe/Madrid")
    store.put_community("beta", "Beta", "Europe/Rome")
    for node, community_id in (("pump-a", "alpha"), ("pump-b", "beta")):
        declare_feed(store, FeedDeclaration(node, "power", "power", "W", max_ok=5_000.0))
        store.set_node(node, community_id=community_id, silent_after_s=SILENT_AFTER_S)
    create_user(store, "ana-manager", PASSWORD, "manager", community_id="alpha")
    yield MonitorService(store, clock=clock)
    store.close()


def test_a_reading_appears_live_and_a_silent_device_raises_an_alarm(
    chromium: BrowserContext, service: MonitorService, clock: StoppedClock
) -> None:
    with served(app_for(service), "the monitoring service") as url:
        page, seen = watch(chromium, allow=[url])  # the service itself, and nothing else
        try:
            page.goto(f"{url}/control", wait_until="load")
            assert "/login" in page.url  # no session yet: sent to sign in
            page.fill("#username", "ana-manager")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/control")
            page.wait_for_selector('#live[data-live="yes"]', timeout=LIVE_TIMEOUT_MS)
            page.evaluate("window.notReloaded = true")
            row = page.locator('tr[data-node="pump-a"]')
            assert row.count() == 1
            assert page.locator('tr[data-node="pump-b"]').count() == 0

            service.store.write([Sample("pump-a", "power", int(clock.now), 1234.5)], now=clock.now)
            service.store.write([Sample("pump-b", "power", int(clock.now), 99.0)], now=clock.now)
            page.wait_for_function(
                "() => document.querySelector('tr[data-node=\"pump-a\"] .value')"
                ".textContent === '1234.5 W'",
                timeout=LIVE_TIMEOUT_MS,
            )
            assert row.get_attribute("data-state") != "offline"

            # Nothing more arrives: past SILENT_AFTER_S the next alarms event marks it offline.
            clock.now += SILENT_AFTER_S + 1
            page.wait_for_selector(
                'tr[data-node="pump-a"][data-state="offline"]', timeout=LIVE_TIMEOUT_MS
            )
            assert "alarm" in (row.get_attribute("class") or "")
            assert row.locator(".state").inner_text() == "offline"
            assert page.locator("#alarm-count").get_attribute("data-count") == "1"
            assert "pump-a has sent nothing" in page.locator("#alarms").inner_text()
            assert page.evaluate("window.notReloaded") is True
            assert "pump-b" not in page.content()
        finally:
            page.close()  # ends its live stream, so the server can stop
    assert seen.refused == []
    assert seen.console_errors == []
    assert seen.page_errors == []
    assert all(request.startswith(url) for request in seen.requests), seen.requests
