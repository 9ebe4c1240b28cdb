"""The monitoring service's HTTP application: the emoncms-compatible input and feed APIs
(`monitoring.emoncms`), the pages of members and the public display (`monitoring.pages`), of
managers (`monitoring.manager_pages`, their sharing agreements in
`monitoring.agreement_pages`) and of the control centre (`monitoring.control`), and
`/healthz` and `/readyz` (`monitoring.metrics.monitor_checks`), all over one
`MonitorService`."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitoring.agreement_pages import agreement_router
from monitoring.control import control_router
from monitoring.emoncms import emoncms_router
from monitoring.manager_pages import manager_router
from monitoring.metrics import monitor_checks
from monitoring.pages import pages_router
from monitoring.service import MonitorService
from monitoring.templating import error_page
from service.health import install_health
from service.http import NO_TELEMETRY, error_response, install_error_handlers


def create_app(service: MonitorService, *, docs: bool = False) -> FastAPI:
    """The application of `service`; `docs` serves /docs and /openapi.json."""
    app = FastAPI(
        title="PETra monitoring",
        version="1",
        description="Energy-community monitoring: emoncms-compatible input and feed APIs, and "
        "the pages of members, managers, public displays and the control centre.",
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(app)
    app.state.monitor = service  # what the session dependencies (`monitoring.auth`) read

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        # A person who mistypes a page's address gets a page; programs get the JSON shape.
        message = "there is no such page: check the address"
        if isinstance(exc, StarletteHTTPException) and exc.detail not in (None, "Not Found"):
            message = str(exc.detail)  # a route's own reason
        if _programs_path(request.url.path) or "text/html" not in request.headers.get("accept", ""):
            return error_response(404, "not_found", message)
        return error_page(request, 404, "not_found", message)

    install_health(app, monitor_checks(service))  # no session: a supervisor has none
    app.include_router(emoncms_router(service))
    app.include_router(pages_router(service))
    app.include_router(manager_router(service))
    app.include_router(agreement_router(service))
    app.include_router(control_router(service))
    return app


def _programs_path(path: str) -> bool:
    """Whether `path` is one programs call (the emoncms APIs, streams, JSON), not a page."""
    return path.startswith(("/input/", "/feed/", "/static/")) or path.endswith((".json", "/stream"))
