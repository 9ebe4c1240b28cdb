"""Every HTTP service's health: `/healthz` says the process is alive and answering, `/readyz`
whether it can do its work now (its store open, the ledger reachable and caught up, the
broker connected), check by check, so that a supervisor or load balancer can tell a service
that is starting or cut off from one that is dead.

A check is a function answering None when its part is fine, else one sentence saying what
is wrong, for the operator who reads `/readyz`. Checks run in a worker thread (they may query a
database) and must be quick: each reads what the service already knows (its last contact with
the ledger, its broker connection) rather than opening a new connection per probe."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

log = logging.getLogger("petra.service.health")

Check = Callable[[], str | None]
READY, ALIVE = "ready", "alive"


def readiness(checks: Mapping[str, Check]) -> tuple[bool, dict[str, str]]:
    """Run every check: (all fine, each check's `ok` or its sentence). A check that raises
    is not ready, its exception named."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as exc:  # a broken check must not make the probe itself fail
            problem = f"the {name} check failed: {type(exc).__name__}: {exc}"
        results[name] = "ok" if problem is None else problem
    return all(value == "ok" for value in results.values()), results


def install_health(app: FastAPI, checks: Mapping[str, Check]) -> None:
    """Add `GET /healthz` (200 `{"status": "alive"}` while the process answers) and
    `GET /readyz` (200 `{"status": "ready", "checks": {...}}`, else 503 in the common error
    shape with code `not_ready`, the first problem as its message and every check beside it)
    to `app`. Neither needs authentication nor says anything a client could not learn by
    trying the service."""

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": ALIVE}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Any:
        ready, results = readiness(checks)
        if ready:
            return {"status": READY, "checks": results}
        problems = [f"{name}: {text}" for name, text in results.items() if text != "ok"]
        return JSONResponse(
            {"error": {"code": "not_ready", "message": "; ".join(problems), "checks": results}},
            status_code=503,
            headers={"Retry-After": "1"},
        )
