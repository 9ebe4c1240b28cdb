"""The DSO node's API as an attacker meets it: who may call what, what never leaves the node.

Every route but `POST /v1/bills` wants an operator token (401 `unauthorized` without a valid
one, 403 `forbidden` without the route's permission); tokens are kept as SHA-256 only and
never logged; the DSO key never appears in an answer; a meter's bill is its own credential and
hostile bytes get a 4xx with a stable code; and schemathesis, with and without a token, finds
no 5xx and no other error shape. Routes are read from the app's own OpenAPI document, so a new
route is covered as soon as it exists (and the permission table below must name it).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import GenerationMode

from assets import (
    MAX_BILL_BYTES,
    Bill,
    Keypair,
    bill_to_wire,
    close_bill,
    encode_bill,
    sign_bill,
)
from dso import auth
from dso.auth import Permission, new_token, token_hash
from dso.throttle import TokenThrottle

from .dso_harness import TEST_POLICY, Dso, running_dso
from .fuzzing import Case, fuzz

BILLS = "POST /v1/bills"  # no token: the meter's signature on the bill is the credential
UNTHROTTLED = TokenThrottle(limit=10**9)

# What each route needs, by hand: a route whose permission is changed by mistake fails here.
NEEDS: dict[str, Permission | None] = {
    "GET /v1/status": Permission.READ,
    "GET /v1/whoami": Permission.READ,
    "GET /v1/operators": Permission.OPERATORS,
    "POST /v1/operators": Permission.OPERATORS,
    "DELETE /v1/operators/{name}": Permission.OPERATORS,
    "GET /v1/meters": Permission.READ,
    "POST /v1/meters": Permission.REGULATE,
    "GET /v1/meters/{meter}": Permission.READ,
    "POST /v1/meters/{meter}/ban": Permission.REGULATE,
    "GET /v1/tariff": Permission.READ,
    "PUT /v1/tariff": Permission.REGULATE,
    "PUT /v1/limits/default": Permission.REGULATE,
    "GET /v1/schedule": Permission.READ,
    "GET /v1/regulations": Permission.READ,
    BILLS: None,
    "GET /v1/bills": Permission.READ,
    "GET /v1/bills.csv": Permission.READ,
    "GET /v1/bills/{bill_id}": Permission.READ,
    "POST /v1/bills/reconcile": Permission.RECONCILE,
    "GET /v1/statements": Permission.READ,
    "GET /v1/forecast": Permission.READ,
    "GET /v1/controller": Permission.READ,
    "PUT /v1/controller": Permission.REGULATE,
    "GET /v1/controller/proposals": Permission.READ,
    "POST /v1/controller/proposals": Permission.REGULATE,
    "POST /v1/controller/proposals/{proposal_id}/accept": Permission.REGULATE,
    "GET /v1/audit": Permission.AUDIT,
    "GET /v1/audit/verify": Permission.AUDIT,
}
# What each role may do, by hand as well (docs: admin all, operator read/regulate/reconcile,
# auditor read/audit).
GRANTS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "operator": frozenset({Permission.READ, Permission.REGULATE, Permission.RECONCILE}),
    "auditor": frozenset({Permission.READ, Permission.AUDIT}),
}

POLICY = TEST_POLICY
# A valid body per changing route, so that a missing permission check would really change
# something; a route not named here is sent `{}`.
BODIES: dict[str, dict[str, Any]] = {
    "POST /v1/operators": {"name": "mallory", "role": "admin"},
    "POST /v1/meters": {
        "meter": "probe-meter",
        "public_key": "11" * 32,
        "max_epa": 1_000,
        "max_eca": 1_000,
    },
    "POST /v1/meters/{meter}/ban": {},
    "PUT /v1/tariff": {"price_consumption": 123_000, "price_production": 45_000},
    "PUT /v1/limits/default": {"max_epa": 7_000, "max_eca": 7_000},
    "POST /v1/bills/reconcile": {"first": 0, "last": 10},
    "PUT /v1/controller": {"policy": POLICY, "auto": False},
}
# Plausible path parameters; an unknown one gets 1 (integer) or "probe".
PATH_VALUES = {
    "name": "nobody",
    "meter": "probe-meter",
    "bill_id": "ab" * 32,
    "proposal_id": "1",
}
REQUIRED_QUERY = {"GET /v1/statements": "?owner=alice"}
OPERATOR_FIELDS = {"name", "role", "created_at", "created_by", "revoked_at"}
EXAMPLES_PER_OPERATION = 30  # per mode and credential: about a minute for the four passes
MIN_OPERATIONS = 28


@dataclass(frozen=True)
class Route:
    """One operation of the app's OpenAPI document."""

    method: str
    path: str
    path_types: Mapping[str, str]  # path parameter -> its JSON type
    has_body: bool

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def changes(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    def url(self, values: Mapping[str, str] | None = None) -> str:
        chosen = {**PATH_VALUES, **(values or {})}

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            default = "1" if self.path_types.get(name) == "integer" else "probe"
            return chosen.get(name, default)

        return re.sub(r"\{(\w+)\}", fill, self.path) + REQUIRED_QUERY.get(self.key, "")


def app_routes(dso: Dso) -> list[Route]:
    """Every operation the app serves, from its own OpenAPI document."""
    app = dso.http.app
    assert isinstance(app, FastAPI)
    found = []
    for path, methods in app.openapi()["paths"].items():
        for method, operation in methods.items():
            types = {
                p["name"]: p.get("schema", {}).get("type", "string")
                for p in operation.get("parameters", [])
                if p["in"] == "path"
            }
            found.append(Route(method.upper(), path, types, "requestBody" in operation))
    return found


def send(
    dso: Dso, route: Route, authorization: str | None, values: Mapping[str, str] | None = None
) -> httpx.Response:
    """`route` with a valid body (if it takes one) and `authorization` as the header."""
    headers = {} if authorization is None else {"Authorization": authorization}
    body = BODIES.get(route.key, {}) if route.has_body else None
    answer: httpx.Response = dso.http.request(
        route.method, route.url(values), headers=headers, json=body
    )
    return answer


def bearer(dso: Dso, role: str) -> str:
    return f"Bearer {dso.tokens[role]}"


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    what = f"{answer.request.method} {answer.request.url.path}"
    assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text}"
    assert_error_shape(answer.status_code, answer.json(), what)
    assert answer.json()["error"]["code"] == code, f"{what}: {answer.text}"


def assert_error_shape(status: int, body: Any, what: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: {status} {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"{what}: {status} {body!r}"
    assert isinstance(error.get("code"), str), f"{what}: {status} {body!r}"
    assert isinstance(error.get("message"), str), f"{what}: {status} {body!r}"


def audit_log(dso: Dso) -> list[dict[str, Any]]:
    """Every audit entry, read by the admin page by page."""
    entries: list[dict[str, Any]] = []
    while True:
        page = dso.ok("GET", "/audit", params={"after": len(entries), "limit": 1000})["entries"]
        if not page:
            return entries
        entries += page


@pytest.fixture(scope="module")
def dso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dso]:
    """One DSO node (SQLite) for the module's tests; each test makes its own state. Its
    throttle lets every bad token through to its 401 (test_dso_hostile.py tests throttling)."""
    with running_dso(tmp_path_factory.mktemp("dso-security"), throttle=UNTHROTTLED) as node:
        yield node


@pytest.fixture(scope="module")
def routes(dso: Dso) -> list[Route]:
    found = app_routes(dso)
    assert len(found) >= MIN_OPERATIONS, "the schema lost operations"
    return found


# ---------------------------------------------------------------- 1. who are you


def _revoked(dso: Dso) -> str:
    made = dso.ok("POST", "/operators", json={"name": "revoked-probe", "role": "operator"})
    authorization = f"Bearer {made['token']}"
    valid = dso.http.get("/v1/whoami", headers={"Authorization": authorization})
    assert valid.status_code == 200, valid.text
    assert dso.ok("DELETE", "/operators/revoked-probe")["revoked"] is True
    return authorization


def _tampered(dso: Dso) -> str:
    token = dso.tokens["admin"]
    return f"Bearer {token[:-1]}{'A' if token[-1] != 'A' else 'B'}"


def _basic(dso: Dso) -> str:
    pair = base64.b64encode(f"test-admin:{dso.tokens['admin']}".encode()).decode()
    return f"Basic {pair}"


CREDENTIALS: dict[str, Callable[[Dso], str | None]] = {
    "none": lambda dso: None,
    "empty-bearer": lambda dso: "Bearer ",
    "never-issued": lambda dso: f"Bearer {new_token()}",
    "prefix-only": lambda dso: "Bearer pdso_",
    "garbage": lambda dso: "Bearer not-a-token-at-all!",
    "tampered-admin": _tampered,
    "hash-of-admin": lambda dso: f"Bearer {token_hash(dso.tokens['admin']).hex()}",
    "basic-scheme": _basic,
    "other-scheme": lambda dso: f"Token {dso.tokens['admin']}",
    "revoked-operator": _revoked,
}


@pytest.mark.parametrize("credential", list(CREDENTIALS))
def test_every_route_but_bill_intake_wants_a_valid_token(
    dso: Dso, routes: list[Route], credential: str
) -> None:
    authorization = CREDENTIALS[credential](dso)
    wrong = []
    for route in routes:
        if route.key == BILLS:
            continue
        answer = send(dso, route, authorization)
        body = answer.json()
        if (
            answer.status_code != 401
            or body.get("error", {}).get("code") != "unauthorized"
            or answer.headers.get("www-authenticate") != "Bearer"
        ):
            wrong.append(f"{route.key}: {answer.status_code} {answer.headers} {answer.text}")
        else:
            assert_error_shape(401, body, route.key)
    assert not wrong, "\n".join(wrong)


def test_an_unparsable_body_without_a_token_is_refused_as_unauthorized(
    dso: Dso, routes: list[Route]
) -> None:
    wrong = []
    for route in routes:
        if route.key == BILLS or not route.has_body:
            continue
        answer = dso.http.request(
            route.method,
            route.url(),
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        if answer.status_code != 401:
            wrong.append(f"{route.key}: {answer.status_code} {answer.text}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- 2. what may you do


def test_the_permission_table_names_every_route(routes: list[Route]) -> None:
    assert {r.key for r in routes} == set(NEEDS), "add the new route to NEEDS, by hand"


def test_each_role_is_refused_exactly_the_routes_it_lacks_the_permission_for(
    dso: Dso, routes: list[Route]
) -> None:
    wrong = []
    for route in routes:
        needed = NEEDS.get(route.key)  # a route missing from NEEDS fails the test above
        if needed is None:
            continue
        for role, grants in GRANTS.items():
            answer = send(dso, route, bearer(dso, role))
            if needed in grants:
                if answer.status_code in (401, 403) or answer.status_code >= 500:
                    wrong.append(f"{role} {route.key}: allowed, got {answer.text}")
            elif answer.status_code != 403 or answer.json()["error"]["code"] != "forbidden":
                wrong.append(f"{role} {route.key}: needs {needed}, got {answer.text}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("permission", list(Permission), ids=lambda p: p.value)
def test_a_role_granted_one_permission_reaches_exactly_the_routes_that_need_it(
    dso: Dso, routes: list[Route], permission: Permission, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tells apart permissions the documented roles always grant together (regulate and
    reconcile): the operator role is narrowed to `permission` alone for this test."""
    monkeypatch.setitem(auth.GRANTS, auth.Role.OPERATOR, frozenset({permission}))
    wrong = []
    for route in routes:
        needed = NEEDS.get(route.key)
        if needed is None:
            continue
        answer = send(dso, route, bearer(dso, "operator"))
        if needed is permission:
            if answer.status_code in (401, 403) or answer.status_code >= 500:
                wrong.append(f"{route.key}: allowed, got {answer.text}")
        elif answer.status_code != 403 or answer.json()["error"]["code"] != "forbidden":
            wrong.append(f"{route.key}: needs {needed}, got {answer.text}")
    assert not wrong, "\n".join(wrong)


def test_the_table_refuses_auditors_every_change_and_operators_operators_and_audit(
    routes: list[Route],
) -> None:
    """The hand-written table itself against the roles as documented."""
    for route in routes:
        needed = NEEDS.get(route.key)
        if needed is None:
            continue
        if route.changes:
            assert needed not in GRANTS["auditor"], route.key
        if route.path.startswith(("/v1/operators", "/v1/audit")):
            assert needed not in GRANTS["operator"], route.key


def test_an_auditor_changes_nothing_and_leaves_no_trace(dso: Dso, routes: list[Route]) -> None:
    # Real targets, so that a missing permission check would show as a change.
    victim = Keypair.generate()
    dso.ok(
        "POST",
        "/meters",
        "operator",
        json={"meter": "victim", "public_key": victim.public_key.hex(), "max_epa": 9, "max_eca": 9},
    )
    dso.ok("PUT", "/controller", "operator", json={"policy": POLICY})
    proposal = dso.ok("POST", "/controller/proposals", "operator")
    targets = {"name": "test-operator", "meter": "victim", "proposal_id": str(proposal["id"])}
    before = {path: dso.ok("GET", path) for path in ("/regulations", "/operators", "/controller")}
    audited = len(audit_log(dso))

    changing = [r for r in routes if r.changes and r.key != BILLS]
    assert len(changing) >= 10, [r.key for r in changing]
    for route in changing:
        assert_error(send(dso, route, bearer(dso, "auditor"), targets), 403, "forbidden")

    after = {path: dso.ok("GET", path) for path in before}
    assert after == before
    entries = audit_log(dso)
    assert len(entries) == audited, entries[audited:]
    assert not [e for e in entries if e["actor"] == "test-auditor" or e["role"] == "auditor"]
    assert dso.ok("GET", "/whoami", "operator") == {"name": "test-operator", "role": "operator"}


# ---------------------------------------------------------------- 3. tokens stay secret


def _token_forms(token: str) -> list[str]:
    """The token and its base64 body."""
    return [token, token.removeprefix("pdso_")]


def _token_bytes(token: str) -> bytes:
    """The token's 256 random bits."""
    return base64.urlsafe_b64decode(token.removeprefix("pdso_") + "=")


def test_tokens_are_never_stored_or_logged_in_clear(
    dso: Dso, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):  # those with a level of their own too
        caplog.set_level(logging.DEBUG, logger=name)  # (SQLAlchemy's: statements, parameters)
    made = dso.ok("POST", "/operators", json={"name": "token-probe", "role": "operator"})
    token = made["token"]
    assert made == {"name": "token-probe", "role": "operator", "token": token}
    headers = {"Authorization": f"Bearer {token}"}
    uses = [
        dso.http.get("/v1/whoami", headers=headers),
        dso.http.get("/v1/status", headers=headers),
        dso.http.put("/v1/tariff", headers=headers, json={"price_consumption": 99_000}),
        dso.http.post("/v1/bills/reconcile", headers=headers, json={"first": 0, "last": 5}),
        dso.http.get("/v1/audit", headers=headers),  # refused: an operator may not audit
        dso.http.get("/v1/regulations", headers=headers),
    ]
    assert [u.status_code for u in uses] == [200, 200, 201, 200, 403, 200], [u.text for u in uses]
    assert uses[0].json() == {"name": "token-probe", "role": "operator"}

    tokens = [token, *dso.tokens.values()]
    secrets = [form for t in tokens for form in _token_forms(t)]
    raw_secrets = [s.encode() for s in secrets] + [_token_bytes(t) for t in tokens]
    files = [p for p in dso.database.parent.iterdir() if p.is_file()]
    assert dso.database in files
    for path in files:  # the DSO database, its -wal and -shm, the ledger's files and log
        content = path.read_bytes()
        for raw in raw_secrets:
            assert raw not in content, f"a token is in {path.name}"
    stored = dso.database.read_bytes() + _wal(dso.database)
    assert token_hash(token) in stored  # the hash is what is kept, and where we looked

    assert {"sqlalchemy.engine.Engine", "httpx"} <= {r.name for r in caplog.records}
    for record in caplog.records:
        logged = f"{record.getMessage()} {vars(record)!r}"
        for secret in secrets:
            assert secret not in logged, f"a token is in a {record.name} log record"
    for secret in secrets:
        assert secret not in caplog.text

    entries = audit_log(dso)
    assert any(e["action"] == "operator.create" and e["target"] == "token-probe" for e in entries)
    for secret in secrets:
        assert secret not in json.dumps(entries)

    listed = dso.call("GET", "/operators")
    operators = listed.json()["operators"]
    assert {o["name"] for o in operators} >= {"token-probe", "test-admin"}
    assert all(set(o) == OPERATOR_FIELDS for o in operators), operators
    hashes = [token_hash(t) for t in tokens]
    hash_forms = [h.hex() for h in hashes] + [base64.b64encode(h).decode() for h in hashes]
    for secret in secrets + hash_forms:
        assert secret not in listed.text


def _wal(database: Path) -> bytes:
    wal = database.with_name(database.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


# ---------------------------------------------------------------- 4. the DSO key stays home


def _key_forms(key: Keypair) -> list[bytes]:
    """The seed and the 64-byte secret key (seed and public key), raw, hex and base64."""
    forms = []
    for secret in (key.seed, key.seed + key.public_key):
        forms += [secret, secret.hex().encode(), secret.hex().upper().encode()]
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(secret).rstrip(b"="))
    return forms


def _keys_named_like_secrets(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [k for k in value if re.search(r"seed|secret|private", k, re.IGNORECASE)]
        return found + [k for v in value.values() for k in _keys_named_like_secrets(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys_named_like_secrets(v)]
    return []


def test_no_answer_holds_the_dso_key(dso: Dso, routes: list[Route]) -> None:
    key = dso.scenario.dso
    meter = Keypair.generate()
    answers = [
        dso.call("PUT", "/tariff", json={"price_consumption": 210_000, "price_production": 1}),
        # the meter follows the default limits: set them first, whatever ran before in the module
        dso.call("PUT", "/limits/default", json={"max_epa": 8_000, "max_eca": 8_000}),
        dso.call(
            "POST",
            "/meters",
            json={"meter": "key-probe", "public_key": meter.public_key.hex(), "owner": "alice"},
        ),
        dso.call("POST", "/operators", json={"name": "key-probe", "role": "auditor"}),
        dso.call("PUT", "/controller", json={"policy": POLICY}),
        dso.call("POST", "/controller/proposals"),
    ]
    assert [a.status_code for a in answers] == [201, 201, 201, 201, 200, 201], [
        a.text for a in answers
    ]
    values = {"meter": "key-probe", "proposal_id": str(answers[-1].json()["id"])}
    reads = [r for r in routes if r.method == "GET"]
    assert len(reads) >= 15, [r.key for r in reads]
    for route in reads:
        answer = send(dso, route, bearer(dso, "admin"), values)
        found = answer.status_code == 200 or (answer.status_code == 404 and route.path_types)
        assert found, f"{route.key}: {answer.text}"
        answers.append(answer)
    status = dso.ok("GET", "/status")
    assert status["dso_key"] == key.public_key.hex()  # the public key may be shown

    forms = _key_forms(key)
    for answer in answers:
        what = f"{answer.request.method} {answer.request.url.path}"
        assert answer.status_code < 500, f"{what}: {answer.text}"
        for form in forms:
            assert form not in answer.content, f"{what} holds the DSO key"
        assert b"PRIVATE KEY" not in answer.content.upper(), what
        if answer.headers["content-type"].startswith("application/json"):
            assert not _keys_named_like_secrets(answer.json()), f"{what}: {answer.text}"


# ---------------------------------------------------------------- 5. hostile bills


@dataclass(frozen=True)
class BillingMeter:
    """A meter authorized on the module's node, and a bill it could sign."""

    name: str
    key: Keypair
    bill: Bill  # unsigned, for an interval where the meter is authorized


@pytest.fixture(scope="module")
def billing_meter(dso: Dso) -> BillingMeter:
    key = Keypair.generate()
    body = {"meter": "bill-probe", "public_key": key.public_key.hex(), "max_epa": 1, "max_eca": 1}
    regulation = dso.ok("POST", "/meters", "operator", json=body)
    bill = close_bill(
        chain=dso.scenario.chain,
        meter="bill-probe",
        interval=regulation["effective_from"],
        closed_height=1,
        interval_s=dso.scenario.interval_s,
        measured_j=3_600_000,
        issued_epa_w=0,
        deposited_epa_w=0,
        fa_issued=0,
        fa_deposited=0,
        price_consumption=250_000,
        price_production=None,
        issues=(),
        deposits=(),
    )
    return BillingMeter("bill-probe", key, bill)


def _signed(probe: BillingMeter, /, **changes: Any) -> bytes:
    """The probe's bill with `changes`, signed by its meter."""
    return encode_bill(sign_bill(dataclasses.replace(probe.bill, **changes), probe.key))


def _wire(meter: BillingMeter) -> dict[str, Any]:
    return bill_to_wire(sign_bill(meter.bill, meter.key))


def _canonical(wire: dict[str, Any]) -> bytes:
    return json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()


def _chunks(size: int) -> Iterator[bytes]:
    chunk = b"{" + b" " * 65_535
    for _ in range(size // len(chunk) + 1):
        yield chunk


HOSTILE_BILLS: dict[str, tuple[Callable[[BillingMeter], bytes | Iterator[bytes]], int, str]] = {
    "not JSON": (lambda m: b"this is not a bill", 400, "malformed"),
    "not UTF-8": (lambda m: b'{"meter":"\xff\xfe"}', 400, "malformed"),
    "empty": (lambda m: b"", 400, "malformed"),
    "a JSON array": (lambda m: b"[]", 400, "malformed"),
    "an array of the bill": (lambda m: b"[" + _signed(m) + b"]", 400, "malformed"),
    "a JSON string": (lambda m: b'"bill"', 400, "malformed"),
    "nested 100,000 deep": (lambda m: b"[" * 100_000 + b"]" * 100_000, 400, "malformed"),
    "a 5,000-digit number": (lambda m: b'{"interval":' + b"9" * 5_000 + b"}", 400, "malformed"),
    "a float": (
        lambda m: _signed(m).replace(b'"measured_j":3600000', b'"measured_j":3600000.0'),
        400,
        "malformed",
    ),
    "over 1 MiB with Content-Length": (
        lambda m: b"{" + b" " * MAX_BILL_BYTES + b"}",
        413,
        "too_large",
    ),
    "over 1 MiB chunked": (lambda m: _chunks(MAX_BILL_BYTES + 1), 413, "too_large"),
    "4,097 issues": (
        lambda m: _canonical({**_wire(m), "issues": [f"{n:064x}" for n in range(4_097)]}),
        413,
        "too_large",
    ),
    "a repeated key": (lambda m: b'{"amount":0,' + _signed(m)[1:], 400, "malformed"),
    "true for an integer": (
        lambda m: _signed(m).replace(b'"v":1', b'"v":true'),
        400,
        "malformed",
    ),
    "non-canonical: indented": (
        lambda m: json.dumps(_wire(m), indent=1, sort_keys=True).encode(),
        400,
        "malformed",
    ),
    "non-canonical: keys unsorted": (
        lambda m: json.dumps(dict(reversed(_wire(m).items())), separators=(",", ":")).encode(),
        400,
        "malformed",
    ),
    "non-canonical: uppercase hex": (
        lambda m: _signed(m).replace(
            m.bill.chain.hex().encode(), m.bill.chain.hex().upper().encode()
        ),
        400,
        "malformed",
    ),
    "an unknown field": (
        lambda m: _canonical({**_wire(m), "zz": 1}),
        400,
        "malformed",
    ),
    "for another chain": (lambda m: _signed(m, chain=bytes(32)), 422, "wrong_chain"),
    "by an unknown meter": (lambda m: _signed(m, meter="ghost-meter"), 401, "meter_unknown"),
    "before the meter was authorized": (
        lambda m: _signed(m, interval=m.bill.interval - 1),
        401,
        "meter_unknown",
    ),
    "signed by another key": (
        lambda m: encode_bill(sign_bill(m.bill, Keypair.generate())),
        401,
        "bad_signature",
    ),
    "signed, then changed": (
        lambda m: _signed(m).replace(b'"measured_j":3600000', b'"measured_j":3600001'),
        401,
        "bad_signature",
    ),
    "a zero signature": (
        lambda m: encode_bill(dataclasses.replace(m.bill, signature=bytes(64))),
        401,
        "bad_signature",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_BILLS))
def test_a_hostile_bill_gets_a_4xx_with_a_stable_code_and_is_not_kept(
    dso: Dso, billing_meter: BillingMeter, case: str
) -> None:
    build, status, code = HOSTILE_BILLS[case]
    kept = dso.store.bills()
    answer = dso.http.post("/v1/bills", content=build(billing_meter))
    assert_error(answer, status, code)
    assert "www-authenticate" not in answer.headers  # a bill's credential is its signature
    assert dso.store.bills() == kept


def test_the_bill_hostile_cases_start_from_a_bill_that_is_accepted(
    dso: Dso, billing_meter: BillingMeter
) -> None:
    """The cases above differ from a good bill in one way each: this is the good bill."""
    good = _signed(billing_meter)
    dso.wait_interval(billing_meter.bill.interval + 1)
    answer = dso.http.post("/v1/bills", content=good)
    assert answer.status_code == 201, answer.text
    assert [b.meter for b in dso.store.bills()] == ["bill-probe"]
    again = dso.http.post("/v1/bills", content=good)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert_error(dso.http.post("/v1/bills", content=good + b" "), 400, "malformed")


# ---------------------------------------------------------------- 6. schemathesis


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dso]:
    """A node of its own: generated requests set prices, policies and the automatic mode. Made-
    up tokens are each answered 401, not throttled (test_dso_hostile.py tests throttling)."""
    with running_dso(tmp_path_factory.mktemp("dso-fuzzed"), throttle=UNTHROTTLED) as node:
        yield node


def _check(case: Case, mode: GenerationMode, headers: dict[str, str], protected: bool) -> None:
    what = f"{case.method.upper()} {case.formatted_path} {case.as_curl_command()}"
    try:
        answer = case.call(headers=headers, timeout=30)
    except Exception as exc:  # the app raised: a real server would have answered 500
        raise AssertionError(f"{what}\n-> raised {exc!r}") from exc
    assert answer.status_code < 500, f"{what}\n-> {answer.status_code} {answer.text}"
    if not 200 <= answer.status_code < 300:
        assert_error_shape(answer.status_code, answer.json(), what)
    if protected and headers and mode is GenerationMode.POSITIVE:
        # The admin may do everything (a negative case may drop the Authorization header).
        assert answer.status_code not in (401, 403), f"{what}\n-> {answer.text}"
    if protected and not headers:
        assert answer.status_code == 401, f"{what}\n-> {answer.status_code} {answer.text}"
        assert answer.headers.get("www-authenticate") == ["Bearer"], answer.headers


@pytest.mark.parametrize("role", ["admin", None], ids=["admin-token", "no-token"])
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_generated_requests_get_no_server_error_and_the_error_shape(
    fuzzed: Dso, mode: GenerationMode, role: str | None
) -> None:
    """Every operation of the app's schema, valid (positive) or invalid (negative) requests,
    with the admin token or without (schemathesis then sends no Authorization header, an
    empty or a garbage one, or `Bearer` and made-up tokens)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.http.app)
    headers = {} if role is None else {"Authorization": bearer(fuzzed, role)}
    by_operators = len(_operator_entries(fuzzed))

    def check(case: Case) -> None:
        protected = f"{case.method.upper()} {case.operation.path}" != BILLS
        _check(case, mode, headers, protected)

    fuzz(schema, mode, check, at_least=MIN_OPERATIONS, examples=EXAMPLES_PER_OPERATION)
    assert fuzzed.ok("GET", "/audit/verify")["intact"] is True
    if role is None:  # without a token no operator did anything
        assert len(_operator_entries(fuzzed)) == by_operators


def _operator_entries(dso: Dso) -> list[dict[str, Any]]:
    """Audit entries by operators (not by meters' bills or the automatic controller)."""
    return [e for e in audit_log(dso) if e["role"] in GRANTS]
