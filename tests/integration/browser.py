"""A real headless Chromium for the web pages' tests: Debian's `/usr/bin/chromium` driven by
Playwright's sync API (DESIGN.md section 11), never a browser Playwright downloads.

`chromium_fixture` hands a test a fresh browser context (its own user data directory) and
skips, saying why, when Chromium is missing or will not start. `watch` opens a page with every
request recorded and any that would leave the machine refused, and collects the console's
errors and the page's uncaught exceptions.

A test module uses it as `from .browser import chromium_fixture` and names it in `__all__`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # as root in a container
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_SCHEMES = frozenset({"file", "data", "blob", "about"})  # what never leaves the machine
LAUNCH_TIMEOUT_MS = 60_000


@pytest.fixture(name="chromium")
def chromium_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """A headless Chromium context with a fresh user data directory, closed afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed: run `make system-deps` (Debian's chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                timeout=LAUNCH_TIMEOUT_MS,
            )
        except PlaywrightError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            pytest.skip(f"Playwright cannot launch {CHROMIUM}: {reason}")
        try:
            yield context
        finally:
            context.close()


@dataclass
class PageWatch:
    """What a page did: every request's URL, those refused for leaving the machine, the
    console's errors and the page's uncaught exceptions."""

    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_route(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in LOCAL_SCHEMES:
            route.continue_()
        else:
            self.refused.append(url)
            route.abort("blockedbyclient")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location})")


def watch(context: BrowserContext, allow: Sequence[str] = ()) -> tuple[Page, PageWatch]:
    """A new page of `context` whose requests, console errors and exceptions are recorded; any
    request for something not on the machine is aborted (and recorded as refused). `allow`:
    base URLs of services under test on loopback, which the page may reach."""
    seen = PageWatch()
    page = context.new_page()
    page.route("**/*", seen.on_route)
    for base_url in allow:  # Playwright tries the route registered last first
        page.route(f"{base_url.rstrip('/')}/**", lambda route: route.continue_())
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("console", seen.on_console)
    page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
    return page, seen
