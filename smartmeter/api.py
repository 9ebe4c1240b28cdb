"""The smart meter's local API for its owner (`api_port`, on loopback only).

Every endpoint is a POST whose body is one signed request: the canonical JSON object

    {"v": 1, "path": "/v1/withdrawals", "meter": "<this meter's id>", "at": <unix seconds>,
     "nonce": "<32 hex digits>", ...the endpoint's own fields..., "signature": "<128 hex>"}

signed with Ed25519 by the owner's wallet key (`MeterConfig.owner`) over
`signing_message("owner-request", sha256(canonical JSON without "signature"))`. `path` binds a
request to its endpoint, so a signed status request cannot be replayed as a withdrawal or a
new deposit address. A request is refused unless its `at` is within `FRESH_S` of the meter's
clock and its nonce was not seen before; nonces are remembered until their `at` is too old to
pass anyway, in memory and in the meter's named state (`OWNER_NONCES`), so a restart of the
meter does not reopen the window for a request captured just before it.

- `POST /v1/withdrawals` `{"outputs": [{"asset", "address"}, ...]}`: the meter checks the
  withdrawal against what the ledger says (`MeterLedgerIndex.check_withdrawal`), signs an `issue`
  with a nonce above every one it used (stored before it is submitted, so a crash never reuses
  one), submits it and answers 201 once its ledger index indexed the block.
- `POST /v1/deposit-addresses`: 201 `{"address", "index"}`, a deposit address never handed out.
- `POST /v1/status`: the meter, the ledger index's height, credit used and line, prices now.
- `POST /v1/bills`: how many bills the DSO has not acknowledged, and those due for sending
  (the outbox lists no others).
- `POST /v1/bills/history` `{"first", "last"}` (interval indexes, `last - first` at most
  `MAX_HISTORY`): `{"first", "last", "bills", "delivered"}`, the signed bill of every billed
  interval in the range, in order, as the DSO receives it, and per bill whether the DSO has it.

Bodies nest at most `MAX_NESTING` deep and hold no lone surrogate escape (`assets.parse_json`
refuses both), and are strictly typed (`"v": true` is not 1). Every route documents
its body in the OpenAPI document (`request_schema`), so schema-driven fuzzing reaches these
checks.

Errors use the common shape (`service/http.py`): 400 `malformed`, 401 `bad_signature`,
`stale_request`, `replayed`, 413 `too_large`, 422 `wrong_meter`, a withdrawal's refusal
(`limit_exceeded`, `credit_exceeded`, `not_authorized`, `banned`, `bad_request`) or the ledger's
rejection code, 429 `too_many_requests`, 503 `ledger_unavailable` or `not_caught_up`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select

from assets import Issue, Keypair, Output, Rejected, canonical_json, encode_transaction, sign
from assets.canonical import encode_parsed, parse_json
from assets.codec import METER_ID, asset_from_wire, output_to_wire, trusted_transaction
from assets.signing import signing_message, verify
from ledger.client import LedgerClient, LedgerClientError, LedgerRejected
from service.clock import now as ledger_now
from service.http import NO_TELEMETRY, ApiError, bounded_body, install_error_handlers
from smartmeter.billing_loop import BILL_KIND, bill_key
from smartmeter.issuing import WithdrawalRefused
from smartmeter.ledger_index import HANDED_OUT, MeterLedgerIndex
from smartmeter.store import MeterStore, outbox

REQUEST_TYPE = "owner-request"  # the signing domain of the owner's requests
FRESH_S = 60  # a request's `at` may differ from the meter's wall clock by this many seconds
MAX_BODY = 64 * 1024  # bytes
MAX_NONCES = 10_000  # requests remembered within the window; more is refused as too many
MAX_OUTPUTS = 64  # outputs of one withdrawal
MAX_HISTORY = 2880  # intervals one bill-history request may span (30 days of 900 s)
INDEX_WAIT_S = 10  # how long a withdrawal waits for the ledger index to index its block
LAST_ISSUE_NONCE = "owner_issue_nonce"  # named state: the last issue nonce the meter signed
OWNER_NONCES = "owner_request_nonces"  # named state: {nonce: at} of recent owner requests
ENVELOPE = frozenset({"v", "path", "meter", "at", "nonce", "signature"})
MAX_NESTING = 4  # a withdrawal: the request, its outputs, an output, its asset


def request_message(unsigned: dict[str, Any]) -> bytes:
    """The bytes the owner signs for a request (`unsigned`: the object without "signature")."""
    return signing_message(REQUEST_TYPE, hashlib.sha256(canonical_json(unsigned)).digest())


def sign_request(unsigned: dict[str, Any], owner_key: Keypair) -> bytes:
    """The canonical body of `unsigned` signed by `owner_key`, as the owner's wallet sends it."""
    signature = owner_key.sign(request_message(unsigned)).hex()
    return canonical_json({**unsigned, "signature": signature})


class OwnerService:
    """What the owner's API does, over the meter's store, ledger_index and ledger client. `clock`
    gives ledger unix seconds (`service.clock`: the interval a withdrawal or a status is in),
    `wall_clock` wall unix seconds (what a request's `at` must be near, on any ledger clock).
    Withdrawals are made one at a time, so each is checked against every earlier one."""

    def __init__(
        self,
        store: MeterStore,
        ledger_index: MeterLedgerIndex,
        client: LedgerClient,
        chain: bytes,
        meter_id: str,
        meter_key: Keypair,
        owner: bytes,
        credit_line: int,
        clock: Callable[[], float] = ledger_now,
        wall_clock: Callable[[], float] = time.time,
        closing_delay_s: int = 60,
    ) -> None:
        self.store, self.ledger_index, self.client = store, ledger_index, client
        self.closing_delay_s = closing_delay_s  # an interval's bill closes this long after its end
        self.chain, self.meter_id, self.meter_key = chain, meter_id, meter_key
        self.owner, self.credit_line = owner, credit_line
        self.clock, self.wall_clock = clock, wall_clock
        self._withdrawing = threading.Lock()
        self._requests = threading.Lock()
        self._seen: dict[str, int] = dict(store.get_state(OWNER_NONCES) or {})
        used = [int(store.get_state(LAST_ISSUE_NONCE) or 0)]
        for fact in store.chain_facts():  # the ledger's word too, should the state be lost
            tx = trusted_transaction(fact.body) if fact.kind == "issue" else None
            if isinstance(tx, Issue):
                used.append(tx.nonce)
        self._last_nonce = max(used)

    # ------------------------------------------------------------- requests

    def authenticate(self, raw: bytes, path: str, fields: frozenset[str]) -> dict[str, Any]:
        """The owner's request in `raw` for `path`, whose own fields are `fields`; ApiError
        if it is malformed, not the owner's, for another meter, stale or seen before."""
        try:
            request = parse_json(raw, max_depth=MAX_NESTING)
        except Rejected as exc:
            raise ApiError(400, "malformed", exc.message) from None
        if not isinstance(request, dict) or encode_parsed(request) != raw:
            raise ApiError(
                400,
                "malformed",
                "the body must be one object in canonical JSON (UTF-8, keys sorted, no spaces)",
            )
        if set(request) != ENVELOPE | fields:
            wanted = ", ".join(sorted(ENVELOPE | fields))
            raise ApiError(400, "malformed", f"the request must have exactly: {wanted}")
        nonce, signature = request["nonce"], request["signature"]
        if (
            type(request["v"]) is not int
            or request["v"] != 1
            or request["path"] != path
            or not isinstance(request["meter"], str)
            or isinstance(request["at"], bool)
            or not isinstance(request["at"], int)
            or not _is_hex(nonce, 16)
            or not _is_hex(signature, 64)
        ):
            raise ApiError(
                400,
                "malformed",
                f"v must be 1, path {path}, meter a string, at unix seconds, nonce 32 and "
                "signature 128 lowercase hex digits",
            )
        unsigned = {k: v for k, v in request.items() if k != "signature"}
        if not verify(self.owner, request_message(unsigned), bytes.fromhex(signature)):
            raise ApiError(401, "bad_signature", "the request is not signed by the meter's owner")
        if request["meter"] != self.meter_id:
            raise ApiError(
                422, "wrong_meter", f"this is meter {self.meter_id}, not {request['meter']}"
            )
        now = int(self.wall_clock())
        if abs(request["at"] - now) > FRESH_S:
            raise ApiError(
                401,
                "stale_request",
                f"the request was made at {request['at']} and the meter's clock says {now}: "
                f"they may differ by {FRESH_S} s at most",
            )
        self._remember(nonce, request["at"], now)
        return request

    def _remember(self, nonce: str, at: int, now: int) -> None:
        with self._requests:
            self._seen = {n: a for n, a in self._seen.items() if a >= now - FRESH_S}
            if nonce in self._seen:
                raise ApiError(401, "replayed", "this request was received before")
            if len(self._seen) >= MAX_NONCES:
                raise ApiError(429, "too_many_requests", f"try again in {FRESH_S} s")
            self._seen[nonce] = at
            self.store.put_state(OWNER_NONCES, self._seen)

    # ------------------------------------------------------------- what the owner asks

    def withdraw(self, outputs: list[Output]) -> dict[str, Any]:
        """Issue `outputs` to the owner if the meter may: the issue's txid, height, nonce."""
        with self._withdrawing:
            interval = self.ledger_index.genesis.interval_at(int(self.clock()))
            try:
                self.ledger_index.check_withdrawal(outputs, interval, self.credit_line)
            except WithdrawalRefused as refused:
                raise ApiError(422, refused.code, refused.message) from None
            # The stored nonce too: another desk on the same database may have used more.
            nonce = max(self._last_nonce, int(self.store.get_state(LAST_ISSUE_NONCE) or 0)) + 1
            self.store.put_state(LAST_ISSUE_NONCE, nonce)  # durable before it can be used
            self._last_nonce = nonce
            tx = sign(Issue(self.chain, self.meter_id, nonce, tuple(outputs)), self.meter_key)
            try:
                submitted = self.client.submit(encode_transaction(tx))
            except LedgerRejected as rejected:
                raise ApiError(422, str(rejected.code), rejected.message) from None
            except LedgerClientError as exc:
                raise ApiError(503, "ledger_unavailable", str(exc)) from None
            if not self.ledger_index.wait_for(submitted.height, INDEX_WAIT_S):
                raise ApiError(
                    503,
                    "not_caught_up",
                    f"issue {submitted.txid.hex()} is in block {submitted.height}, which the "
                    "meter has not indexed yet; ask for the status before withdrawing again",
                )
        return {
            "txid": submitted.txid.hex(),
            "height": submitted.height,
            "nonce": nonce,
            "outputs": [output_to_wire(o) for o in outputs],
        }

    def deposit_address(self) -> dict[str, Any]:
        """A new deposit address and its key index, once the ledger index has read the whole
        ledger (so it knows every address already paid to)."""
        try:
            head = self.client.head()
        except LedgerClientError as exc:
            raise ApiError(503, "ledger_unavailable", str(exc)) from None
        height = 0 if head is None else head.header.height
        if not self.ledger_index.wait_for(height, INDEX_WAIT_S):
            raise ApiError(
                503,
                "not_caught_up",
                f"the meter has indexed block {self.ledger_index.height} of {height}; try again",
            )
        with self.ledger_index.lock:
            address = self.ledger_index.next_deposit_address()
            index = int(self.store.get_state(HANDED_OUT)) - 1
        return {"address": address.hex(), "index": index}

    def status(self) -> dict[str, Any]:
        """The meter, the last block it indexed, the owner's credit and the prices now."""
        genesis = self.ledger_index.genesis
        interval = genesis.interval_at(int(self.clock()))
        prices = self.ledger_index.prices_at(interval)
        with self.ledger_index.lock:
            credit_used = self.ledger_index.issued.credit_used
        return {
            "meter": self.meter_id,
            "height": self.ledger_index.height,
            "interval": interval,
            "interval_start": genesis.epoch + interval * genesis.interval_s,
            "currency": genesis.currency,
            "closing_delay_s": self.closing_delay_s,
            "credit_used": credit_used,
            "credit_line": self.credit_line,
            "price_consumption": prices.consumption,
            "price_production": prices.production,
            "watcher_problem": self.ledger_index.problem,
            "ledger_error": self.ledger_index.last_error,
        }

    def bills(self) -> dict[str, Any]:
        """How many bills wait for the DSO, and those due for sending now."""
        due = self.store.due(BILL_KIND)
        return {
            "currency": self.ledger_index.genesis.currency,
            "pending": self.store.pending(BILL_KIND),
            "due": [
                {"key": m.key, "attempts": m.attempts, "last_error": m.last_error}
                | {"bill": parse_json(m.body)}
                for m in due
            ],
        }

    def bill_history(self, first: int, last: int) -> dict[str, Any]:
        """The signed bill of every interval from `first` to `last` (inclusive) the meter has
        billed, in order, and whether the DSO has acknowledged each."""
        keys = [bill_key(self.meter_id, t) for t in range(first, last + 1)]
        query = select(outbox.c.key, outbox.c.body, outbox.c.delivered_ms).where(
            outbox.c.kind == BILL_KIND, outbox.c.key.in_(keys)
        )
        with self.store.engine.connect() as conn:
            found = {row.key: row for row in conn.execute(query)}
        rows = [found[key] for key in keys if key in found]
        return {
            "first": first,
            "last": last,
            "bills": [parse_json(bytes(row.body)) for row in rows],
            "delivered": [row.delivered_ms is not None for row in rows],
        }


def _is_hex(value: Any, size: int) -> bool:
    if not isinstance(value, str) or len(value) != 2 * size or value != value.lower():
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _outputs(wire: Any) -> list[Output]:
    """The withdrawal's outputs from the request; ApiError 400 if they are not outputs."""
    if not isinstance(wire, list) or not 1 <= len(wire) <= MAX_OUTPUTS:
        raise ApiError(400, "malformed", f"outputs must be a list of 1 to {MAX_OUTPUTS} outputs")
    outputs = []
    for n, item in enumerate(wire):
        if not isinstance(item, dict) or set(item) != {"asset", "address"}:
            raise ApiError(400, "malformed", f"outputs[{n}] must be {{asset, address}}")
        if not _is_hex(item["address"], 32):
            raise ApiError(400, "malformed", f"outputs[{n}].address must be 64 lowercase hex")
        try:
            asset = asset_from_wire(item["asset"])
        except Rejected as exc:
            raise ApiError(400, "malformed", f"outputs[{n}]: {exc.message}") from None
        outputs.append(Output(asset, bytes.fromhex(item["address"])))
    return outputs


def _bill_range(first: Any, last: Any) -> tuple[int, int]:
    """The intervals of a bill-history request; ApiError 400 if they are no such range."""
    if (
        isinstance(first, bool)
        or isinstance(last, bool)
        or not isinstance(first, int)
        or not isinstance(last, int)
        or not 0 <= first <= last
        or last - first > MAX_HISTORY
    ):
        raise ApiError(
            400,
            "malformed",
            f"first and last are interval indexes, 0 <= first <= last <= first + {MAX_HISTORY}",
        )
    return first, last


_HEX = {"type": "string", "pattern": "^([0-9a-f]{2})*$"}
_INTERVAL = {"type": "integer", "minimum": 0, "description": "an interval index"}
_ASSET = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "power", "start", "end"],
            "properties": {
                "kind": {"type": "string", "enum": ["EPA", "ECA"]},
                "power": {"type": "integer", "minimum": 1, "description": "W"},
                "start": _INTERVAL,
                "end": _INTERVAL,
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "amount"],
            "properties": {
                "kind": {"type": "string", "enum": ["FA"]},
                "amount": {"type": "integer", "minimum": 1, "description": "micro-units"},
            },
        },
    ]
}
_OWN_FIELDS: dict[str, dict[str, Any]] = {
    "/v1/withdrawals": {
        "outputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_OUTPUTS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["asset", "address"],
                "properties": {
                    "asset": _ASSET,
                    "address": {**_HEX, "minLength": 64, "maxLength": 64},
                },
            },
        }
    },
    "/v1/deposit-addresses": {},
    "/v1/status": {},
    "/v1/bills": {},
    "/v1/bills/history": {"first": _INTERVAL, "last": _INTERVAL},
}


def request_schema(path: str) -> dict[str, Any]:
    """The OpenAPI request body of the endpoint at `path`: the signed envelope and the
    endpoint's own fields, for clients and for schema-driven fuzzing (the route reads the raw
    bytes, since the signature covers their canonical form)."""
    own = _OWN_FIELDS[path]
    envelope = {
        "v": {"type": "integer", "enum": [1]},
        "path": {"type": "string", "enum": [path]},
        "meter": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        "at": {"type": "integer", "description": "unix seconds, within 60 s of the meter's clock"},
        "nonce": {**_HEX, "minLength": 32, "maxLength": 32},
        "signature": {**_HEX, "minLength": 128, "maxLength": 128},
    }
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": sorted({*envelope, *own}),
        "properties": {**envelope, **own},
    }
    return {
        "requestBody": {
            "required": True,
            "description": "canonical JSON signed by the owner's key (docs/meter-api.md)",
            "content": {"application/json": {"schema": schema}},
        }
    }


def create_app(node: OwnerService) -> FastAPI:
    """The owner's API over `node`; serve it on loopback only."""
    if METER_ID.fullmatch(node.meter_id) is None:
        raise ValueError(f"{node.meter_id!r} is not a meter id")
    app = FastAPI(
        title="PETra smart meter (owner)", docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
    )
    install_error_handlers(app)
    too_large = ApiError(413, "too_large", f"a request is at most {MAX_BODY} bytes")

    async def signed(request: Request, fields: frozenset[str] = frozenset()) -> dict[str, Any]:
        raw = await bounded_body(request, MAX_BODY, too_large)
        return await run_in_threadpool(node.authenticate, raw, request.url.path, fields)

    @app.post("/v1/withdrawals", status_code=201, openapi_extra=request_schema("/v1/withdrawals"))
    async def withdrawals(request: Request) -> JSONResponse:
        outputs = _outputs((await signed(request, frozenset({"outputs"})))["outputs"])
        return JSONResponse(await run_in_threadpool(node.withdraw, outputs), status_code=201)

    @app.post(
        "/v1/deposit-addresses",
        status_code=201,
        openapi_extra=request_schema("/v1/deposit-addresses"),
    )
    async def deposit_addresses(request: Request) -> JSONResponse:
        await signed(request)
        return JSONResponse(await run_in_threadpool(node.deposit_address), status_code=201)

    @app.post("/v1/status", openapi_extra=request_schema("/v1/status"))
    async def status(request: Request) -> JSONResponse:
        await signed(request)
        return JSONResponse(await run_in_threadpool(node.status))

    @app.post("/v1/bills", openapi_extra=request_schema("/v1/bills"))
    async def bills(request: Request) -> JSONResponse:
        await signed(request)
        return JSONResponse(await run_in_threadpool(node.bills))

    @app.post("/v1/bills/history", openapi_extra=request_schema("/v1/bills/history"))
    async def bill_history(request: Request) -> JSONResponse:
        fields = await signed(request, frozenset({"first", "last"}))
        first, last = _bill_range(fields["first"], fields["last"])
        return JSONResponse(await run_in_threadpool(node.bill_history, first, last))

    return app
