"""The DSO node's HTTP API under /v1 (docs/dso-api.md): routes only, over `DsoService`.

Operators send `Authorization: Bearer <token>`; each route needs one permission, which the
operator's role grants or not (401 without a valid token, 403 without the permission, 429
after too many invalid tokens from one address: `dso/throttle.py`). Meters post bills with no
token: the bill's signature by the meter's registered key is the credential.
"""

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from assets import MAX_BILL_BYTES
from assets.codec import MAX_INT
from assets.schemas import BILL, request_body
from dso import schemas
from dso.auth import Permission
from dso.service import (
    MAX_VIEW_INTERVALS,
    Actor,
    DsoError,
    DsoService,
    IntakeResult,
    Throttled,
)
from service.health import install_health
from service.http import (
    NO_TELEMETRY,
    ApiError,
    DirectRoute,
    Reply,
    bounded_asgi_body,
    error_response,
    extend_openapi,
    install_error_handlers,
    internal_error,
    send_error,
    send_json,
    serve_directly,
)

log = logging.getLogger("petra.dso")

IntervalQuery = Annotated[schemas.UrlInt | None, Query()]
# Bills in intake at once, each waiting in a thread for its batch to commit: so at most this
# many bills per batch (asyncio's default pool, 6 threads on 2 cores, kept batches at 3-4).
INTAKE_THREADS = 64
BILLS_PATH = "/v1/bills"  # where meters post their bills (`BillRoutes`)
DAY_S = 86_400  # the default window of a query: a day of intervals


def create_app(service: DsoService, *, docs: bool = False) -> FastAPI:
    """The FastAPI application of `service`; `docs` serves /docs and /openapi.json."""
    app = FastAPI(
        title="PETra DSO node",
        version="1",
        description="Regulation, billing intake and the grid controller of the DSO.",
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(app)
    install_health(app, service.checks())
    _document_bill_route(app)

    @app.exception_handler(DsoError)
    async def dso_error(_: Request, exc: DsoError) -> JSONResponse:
        # Only operators use tokens; a meter's 401 is about its bill's signature.
        headers = {"WWW-Authenticate": "Bearer"} if exc.code == "unauthorized" else None
        return error_response(exc.status, exc.code, exc.message, headers)

    bearer = HTTPBearer(auto_error=False, description="An operator token (pdso_…)")

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Before routing, so that no body is parsed (and no parse error answered) for a caller
        # without a valid token; the routes' dependencies then check the permission.
        if request.url.path.startswith("/v1/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            client = request.client.host if request.client else "unknown"
            try:
                request.state.actor = await asyncio.to_thread(
                    service.authenticate,
                    token.strip() if scheme.lower() == "bearer" else None,
                    client,
                )
            except Throttled as exc:
                headers = {"Retry-After": str(exc.retry_after_s)}
                return error_response(exc.status, exc.code, exc.message, headers)
            except DsoError as exc:
                headers = {"WWW-Authenticate": "Bearer"}
                return error_response(exc.status, exc.code, exc.message, headers)
        return await call_next(request)

    def needs(permission: Permission) -> Callable[..., Actor]:
        def actor(
            request: Request,
            _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],  # for OpenAPI
        ) -> Actor:
            found: Actor = request.state.actor
            service.require(found, permission)
            return found

        return actor

    Reader = Annotated[Actor, Depends(needs(Permission.READ))]
    Regulator = Annotated[Actor, Depends(needs(Permission.REGULATE))]
    Reconciler = Annotated[Actor, Depends(needs(Permission.RECONCILE))]
    Auditor = Annotated[Actor, Depends(needs(Permission.AUDIT))]
    Admin = Annotated[Actor, Depends(needs(Permission.OPERATORS))]

    day = max(1, min(DAY_S // service.genesis.interval_s, MAX_VIEW_INTERVALS))

    def window(first: int | None, last: int | None, before_now: bool) -> tuple[int, int]:
        """A day of intervals: the one ending with the last ended interval (`before_now`) or
        the one starting now, unless the query says otherwise. A bound the query leaves out
        is never below interval 0, where the chain starts."""
        now = service.now()
        if first is not None and last is None:
            return first, max(first + day - 1, 0)
        end = last if last is not None else max(now - 1 if before_now else now + day - 1, 0)
        return (first if first is not None else max(end - day + 1, min(end, 0))), end

    # ---------------------------------------------------------------- who and what

    @app.get(
        "/v1/status",
        summary="The node: chain, interval, index height, ledger health",
        response_model=schemas.Status,
    )
    def status(_: Reader) -> dict[str, Any]:
        return service.status()

    @app.get(
        "/v1/whoami", summary="The operator the token belongs to", response_model=schemas.WhoAmI
    )
    def whoami(actor: Reader) -> dict[str, Any]:
        return {"name": actor.name, "role": actor.role}

    @app.post(
        "/v1/operators",
        status_code=201,
        summary="Create an operator; shows the token once",
        response_model=schemas.NewOperatorView,
    )
    def create_operator(body: schemas.NewOperator, actor: Admin) -> dict[str, Any]:
        operator, token = service.create_operator(actor, body.name, body.role)
        return {"name": operator.name, "role": operator.role, "token": token}

    @app.get(
        "/v1/operators",
        summary="Operators and their roles (never their tokens)",
        response_model=schemas.OperatorList,
    )
    def list_operators(_: Admin) -> dict[str, Any]:
        return {
            "operators": [
                {
                    "name": o.name,
                    "role": o.role,
                    "created_at": o.created_at,
                    "created_by": o.created_by,
                    "revoked_at": o.revoked_at,
                }
                for o in service.store.operators()
            ]
        }

    @app.delete(
        "/v1/operators/{name}", summary="Revoke an operator's token", response_model=schemas.Revoked
    )
    def revoke_operator(name: Annotated[str, Path(max_length=64)], actor: Admin) -> dict[str, Any]:
        service.revoke_operator(actor, name)
        return {"name": name, "revoked": True}

    # ---------------------------------------------------------------- regulation

    @app.get(
        "/v1/meters",
        summary="Every meter a regulation named, as in force at an interval",
        response_model=schemas.MeterList,
    )
    def meters(_: Reader, interval: IntervalQuery = None) -> dict[str, Any]:
        return service.meters(interval)

    @app.get(
        "/v1/meters/{meter}",
        summary="A meter: now, next interval, its regulations",
        response_model=schemas.MeterView,
    )
    def meter(meter: Annotated[str, Path(max_length=64)], _: Reader) -> dict[str, Any]:
        return service.meter(meter)

    @app.post(
        "/v1/meters",
        status_code=201,
        summary="Authorize a meter (a regulation)",
        response_model=schemas.RegulationView,
    )
    def authorize(body: schemas.AuthorizeMeter, actor: Regulator) -> dict[str, Any]:
        return service.authorize_meter(
            actor,
            body.meter,
            bytes.fromhex(body.public_key),
            body.max_epa,
            body.max_eca,
            body.owner,
            body.time,
        )

    @app.post(
        "/v1/meters/{meter}/ban",
        status_code=201,
        summary="Ban a meter (a regulation)",
        response_model=schemas.RegulationView,
    )
    def ban(
        meter: Annotated[str, Path(max_length=64)], body: schemas.BanMeter, actor: Regulator
    ) -> dict[str, Any]:
        return service.ban_meter(actor, meter, body.time)

    @app.get(
        "/v1/tariff",
        summary="Prices in force at an interval and at the next",
        response_model=schemas.TariffView,
    )
    def tariff(_: Reader, interval: IntervalQuery = None) -> dict[str, Any]:
        at = service.now() if interval is None else min(interval, MAX_INT - 1)
        view = service.schedule_view(at, at + 1)
        return {"interval": at, "runs": view["runs"]}

    @app.put(
        "/v1/tariff",
        status_code=201,
        summary="Set prices from an interval (a regulation)",
        response_model=schemas.RegulationView,
    )
    def set_tariff(body: schemas.Tariff, actor: Regulator) -> dict[str, Any]:
        return service.set_tariff(actor, body.price_consumption, body.price_production, body.time)

    @app.put(
        "/v1/limits/default",
        status_code=201,
        summary="Set default MAXEPA/MAXECA",
        response_model=schemas.RegulationList,
    )
    def set_limits(body: schemas.DefaultLimits, actor: Regulator) -> dict[str, Any]:
        done = service.set_default_limits(actor, body.max_epa, body.max_eca, body.time)
        return {"regulations": done}

    @app.get(
        "/v1/schedule",
        summary="Prices and default limits per interval, as runs",
        response_model=schemas.ScheduleView,
    )
    def schedule(
        _: Reader, first: IntervalQuery = None, last: IntervalQuery = None
    ) -> dict[str, Any]:
        return service.schedule_view(*window(first, last, before_now=False))

    @app.get(
        "/v1/regulations",
        summary="The regulations this node signed, newest first",
        response_model=schemas.RegulationList,
    )
    def regulations(
        _: Reader,
        status: Annotated[str | None, Query(pattern="^(pending|accepted|rejected)$")] = None,
    ) -> dict[str, Any]:
        return {"regulations": service.regulations(status)}

    # ---------------------------------------------------------------- billing

    BillFilters = Annotated[
        tuple[int | None, int | None, str | None, str | None, str | None],
        Depends(_bill_filters),
    ]

    @app.get(
        "/v1/bills",
        summary="Bills of an interval range (default: the last day)",
        response_model=schemas.BillList,
    )
    def bills(_: Reader, filters: BillFilters) -> dict[str, Any]:
        first, last, meter_id, owner, status = filters
        start, end = window(first, last, before_now=True)
        found = service.bills(start, end, meter_id, owner, status)
        return {"first": start, "last": end, "bills": [service.bill_to_wire(b) for b in found]}

    @app.get(
        "/v1/bills.csv",
        summary="The same bills as CSV",
        response_class=Response,
        responses={200: {"content": {"text/csv": {"schema": schemas.BILLS_CSV}}}},
    )
    def bills_csv(_: Reader, filters: BillFilters) -> Response:
        first, last, meter_id, owner, status = filters
        start, end = window(first, last, before_now=True)
        found = service.bills(start, end, meter_id, owner, status)
        return Response(
            service.bills_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="bills-{start}-{end}.csv"'},
        )

    @app.get(
        "/v1/bills/{bill_id}",
        summary="A bill and its reconciliation",
        response_model=schemas.BillView,
    )
    def bill(bill_id: Annotated[str, Path(pattern="^[0-9a-f]{64}$")], _: Reader) -> dict[str, Any]:
        return service.bill_to_wire(service.bill(bytes.fromhex(bill_id)))

    @app.post(
        "/v1/bills/reconcile",
        summary="Check the bills of an interval range again",
        response_model=schemas.ReconcileCounts,
    )
    def reconcile(body: schemas.Reconcile, actor: Reconciler) -> dict[str, Any]:
        return service.reconcile_all(actor, body.first, body.last)

    @app.get(
        "/v1/statements",
        summary="What an owner owes over an interval range",
        response_model=schemas.Statement,
    )
    def statement(
        owner: Annotated[str, Query(pattern=schemas.OWNER_PATTERN)],
        _: Reader,
        first: IntervalQuery = None,
        last: IntervalQuery = None,
    ) -> dict[str, Any]:
        return service.statement(owner, *window(first, last, before_now=True))

    # ---------------------------------------------------------------- the grid controller

    @app.get(
        "/v1/forecast",
        summary="Net load per interval from the ledger and the book",
        response_model=schemas.Forecast,
    )
    def forecast(
        _: Reader, first: IntervalQuery = None, last: IntervalQuery = None
    ) -> dict[str, Any]:
        start, end = window(first, last, before_now=False)
        found, book = service.forecast(start, end)
        return {
            "first": start,
            "last": end,
            "book": book,
            "intervals": [dataclasses.asdict(f) for f in found],
        }

    @app.get(
        "/v1/controller",
        summary="The price policy and whether it runs by itself",
        response_model=schemas.ControllerView,
    )
    def controller_settings(_: Reader) -> dict[str, Any]:
        return service.controller_settings()

    @app.put(
        "/v1/controller",
        summary="Set the price policy, or switch automatic mode",
        response_model=schemas.ControllerView,
    )
    def set_controller(body: schemas.ControllerSettings, actor: Regulator) -> dict[str, Any]:
        policy = None if body.policy is None else body.policy.model_dump()
        return service.set_controller(actor, policy, body.auto)

    @app.post(
        "/v1/controller/proposals",
        status_code=201,
        summary="Propose next prices",
        response_model=schemas.ProposalView,
    )
    def propose(actor: Regulator) -> dict[str, Any]:
        return _proposal(service.propose(actor))

    @app.get(
        "/v1/controller/proposals",
        summary="Recent proposals, newest first",
        response_model=schemas.ProposalList,
    )
    def proposals(_: Reader) -> dict[str, Any]:
        return {"proposals": [_proposal(p) for p in service.store.proposals()]}

    @app.post(
        "/v1/controller/proposals/{proposal_id}/accept",
        status_code=201,
        summary="Accept a proposal: it becomes a regulation",
        response_model=schemas.RegulationView,
    )
    def accept(
        proposal_id: Annotated[schemas.UrlPositive, Path()], actor: Regulator
    ) -> dict[str, Any]:
        return service.accept(actor, proposal_id)

    # ---------------------------------------------------------------- audit

    @app.get(
        "/v1/audit",
        summary="The audit log from a sequence number on",
        response_model=schemas.AuditLog,
    )
    def audit(
        _: Auditor,
        after: Annotated[schemas.UrlNatural, Query()] = 0,
        limit: Annotated[int, Field(ge=1, le=1000), schemas.DECIMAL, Query()] = 100,
    ) -> dict[str, Any]:
        return {"entries": service.audit_entries(after, limit)}

    @app.get(
        "/v1/audit/verify",
        summary="Check the audit log's hash chain",
        response_model=schemas.AuditCheck,
    )
    def verify_audit(_: Auditor) -> dict[str, Any]:
        return service.verify_audit()

    intake = ThreadPoolExecutor(INTAKE_THREADS, thread_name_prefix="dso-intake")
    app.add_middleware(BillRoutes, service=service, pool=intake)  # outermost: before `authenticate`
    serve_directly(app, {BILLS_PATH: DirectBills(service, intake).route()})
    return app


def _bill_too_large() -> DsoError:
    return DsoError(413, "too_large", f"a bill is at most {MAX_BILL_BYTES} bytes")


class BillRoutes:
    """Pure ASGI middleware serving `POST /v1/bills`, a meter's bill (most of a DSO node's
    requests), without FastAPI's per-request work (its `http` middleware, routing, and
    validating and encoding the answer through `schemas.BillReceived`): the same status, body,
    headers, refusals and metrics as docs/dso-api.md gives. Every other request goes on to
    `app`; no token is asked, as the bill's signature authenticates. Bills are taken in on
    `pool` (`INTAKE_THREADS` threads), so that many can join one batch of the intake queue. A
    node served by `service.server` answers most bills a step earlier (`DirectBills`)."""

    def __init__(self, app: ASGIApp, service: DsoService, pool: ThreadPoolExecutor) -> None:
        self.app, self.service, self.pool = app, service, pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != BILLS_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            raw = await bounded_asgi_body(scope, receive, MAX_BILL_BYTES, _bill_too_large)
        except DsoError as exc:  # refused before the service sees it: counted here
            self.service.metrics.refusal(exc.code)
            await send_error(send, _refusal(exc))
            return
        except ApiError as exc:  # the meter hung up before its body ended
            await send_error(send, exc)
            return
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.service.intake_bill, raw
            )
        except DsoError as exc:  # the service counted it
            await send_error(send, _refusal(exc))
            return
        await send_json(send, *_received(result))


class DirectBills:
    """`POST /v1/bills` answered by the HTTP server itself (`service.http.DirectRoute`), with
    the answers and metrics of `BillRoutes`: each bill taken in on the same pool, its answer
    written when its batch is stored, without a task, middleware or ASGI messages per bill."""

    def __init__(self, service: DsoService, pool: ThreadPoolExecutor) -> None:
        self.service, self.pool = service, pool

    def route(self) -> DirectRoute:
        return DirectRoute(MAX_BILL_BYTES, self._too_large, self.take)

    def _too_large(self) -> ApiError:
        refused = _bill_too_large()  # refused before the service sees it: counted here
        self.service.metrics.refusal(refused.code)
        return _refusal(refused)

    def take(self, raw: bytes, reply: Reply) -> None:
        loop = asyncio.get_running_loop()
        taken = self.pool.submit(self.service.intake_bill, raw)
        taken.add_done_callback(lambda done: loop.call_soon_threadsafe(self._reply, done, reply))

    @staticmethod
    def _reply(taken: Future[IntakeResult], reply: Reply) -> None:
        failure = taken.exception()
        if isinstance(failure, DsoError):  # the service counted it
            reply.error(_refusal(failure))
        elif failure is not None:
            log.error("a bill's intake failed", exc_info=failure)
            reply.error(internal_error())
        else:
            reply.json(*_received(taken.result()))


def _refusal(exc: DsoError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def _received(result: IntakeResult) -> tuple[int, dict[str, Any]]:
    """The answer to a bill taken in: 201 and the stored bill, or 200 if it was stored already."""
    stored = {**DsoService.bill_to_wire(result.bill), "duplicate": not result.created}
    return (201 if result.created else 200), stored


def _document_bill_route(app: FastAPI) -> None:
    """Add `POST /v1/bills`, which `BillRoutes` serves, to the OpenAPI document: the JSON
    FastAPI made of the route it was (pydantic orders the keys of the model's schema)."""

    def extend(document: dict[str, Any]) -> None:
        model = schemas.BillReceived
        answer = {
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}
        }
        post = {
            "summary": "A meter's signed interval bill (DESIGN.md 7); the signature authenticates",
            "operationId": "post_bill_v1_bills_post",
            "responses": {
                "200": {"description": "The very same bill, again", **answer},
                "201": {"description": "A new bill, stored", **answer},
            },
            **request_body(BILL),
        }
        paths = document["paths"]
        paths[BILLS_PATH] = {"post": post, **paths.get(BILLS_PATH, {})}
        described = model.model_json_schema(ref_template=_REF)
        found = {**described.pop("$defs", {}), model.__name__: described}
        found.update(document["components"]["schemas"])
        document["components"]["schemas"] = dict(sorted(found.items()))

    extend_openapi(app, extend)


_REF = "#/components/schemas/{model}"


def _bill_filters(
    first: IntervalQuery = None,
    last: IntervalQuery = None,
    meter: Annotated[str | None, Query(pattern="^[A-Za-z0-9._-]{1,64}$")] = None,
    owner: Annotated[str | None, Query(pattern=schemas.OWNER_PATTERN)] = None,
    status: Annotated[str | None, Query(pattern="^(pending|reconciled|flagged)$")] = None,
) -> tuple[int | None, int | None, str | None, str | None, str | None]:
    return first, last, meter, owner, status


def _proposal(proposal: Any) -> dict[str, Any]:
    return {
        "id": proposal.id,
        "interval": proposal.interval,
        "price_consumption": proposal.price_consumption,
        "price_production": proposal.price_production,
        "net_load_w": proposal.net_load_w,
        "reason": proposal.reason,
        "status": proposal.status,
        "regulation_nonce": proposal.regulation,
        "created_ms": proposal.created_ms,
    }
