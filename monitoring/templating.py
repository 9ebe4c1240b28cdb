"""How the monitoring pages are rendered: one Jinja2 environment (autoescaped) over
`monitoring/templates`, the filters every page shares (`kwh`, `money`, `local_time`), the
security headers of every HTML answer, and `PageRoute`, the route class of page routers that
answers errors as pages (and a missing session as a redirect to the login page) where JSON
routes answer the common JSON error shape.

Pages carry no inline script (the Content-Security-Policy forbids it): chart data travels in
`<script type="application/json">` elements read by `/static/charts.js`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from fractions import Fraction
from importlib.metadata import version
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from monitoring.auth import Viewer, monitor
from monitoring.store import zone
from service import ApiError

# plotly draws with inline styles, hence 'unsafe-inline' for styles only; scripts are files.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


def security_headers(private: bool) -> dict[str, str]:
    """The headers of every HTML answer; `private` pages (a viewer's data) are never stored
    by a cache, public ones are revalidated."""
    return {
        "Content-Security-Policy": CSP,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store" if private else "no-cache",
    }


def kwh(value: float | None, digits: int = 1) -> str:
    """An energy in kWh as text, e.g. `1,234.5 kWh`; a dash when unknown."""
    return "—" if value is None else f"{value:,.{digits}f} kWh"


def money(micro: int | None, currency: str = "EUR") -> str:
    """An amount in micro-units of `currency` as text in whole cents, e.g. `12.35 EUR`
    (rounded half-to-even, as billing rounds)."""
    if micro is None:
        return "—"
    cents = round(Fraction(micro, 10_000))
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d} {currency}"


def local_time(t: float | None, tz: str | ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Unix time `t` as local time in zone `tz` (an IANA name or a ZoneInfo)."""
    if t is None:
        return "—"
    where = zone(tz) if isinstance(tz, str) else tz
    return datetime.fromtimestamp(t, where).strftime(fmt)


environment = Environment(
    loader=PackageLoader("monitoring", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt name fails the test rather than showing nothing
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(kwh=kwh, money=money, local_time=local_time)
# /static/plotly.min.js is cached for a year: its URL changes when plotly does.
environment.globals["plotly_version"] = version("plotly")


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    status: int = 200,
    *,
    private: bool = True,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """`template` rendered with `context` plus `viewer` (None when nobody is signed in),
    `csrf` (the viewer's session token unless the context gives one) and `community` (the
    viewer's community record, or None), with the security headers."""
    who: Viewer | None = getattr(request.state, "viewer", None)
    page: dict[str, Any] = {"viewer": who, "csrf": who.csrf if who else "", "community": None}
    if who is not None and who.community_id is not None:
        page["community"] = monitor(request).store.community(who.community_id)
    page["kiosk"] = False
    page.update(context)
    body = environment.get_template(template).render(page)
    return HTMLResponse(
        body, status_code=status, headers={**security_headers(private), **(headers or {})}
    )


def error_page(request: Request, status: int, code: str, message: str, **headers: str) -> Response:
    """An error as a page (`error.html`); a missing session (401) as a redirect to the login
    page that comes back here."""
    if status == 401:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            f"/login?next={quote(here, safe='')}",
            status_code=303,
            headers={"Cache-Control": "no-store"},
        )
    context = {"status": status, "code": code, "message": message}
    return render(request, "error.html", context, status, headers=headers)


class PageRoute(APIRoute):
    """A route answering HTML: its errors (ApiError, a malformed parameter) become pages.
    Use as `APIRouter(route_class=PageRoute, include_in_schema=False)`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return error_page(request, exc.status, exc.code, exc.message, **exc.headers)
            except RequestValidationError:
                return error_page(
                    request, 400, "bad_request", "this address has a parameter the page cannot read"
                )

        return page_handler
