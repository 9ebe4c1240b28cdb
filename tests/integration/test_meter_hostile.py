"""Hostile input against the meter's owner API (started as test_meter_api.py starts it, over a
real `petra ledger serve` process): the shared corpus of hostile bodies and hypothesis-
generated JSON on every route, schemathesis over its OpenAPI document (which documents every
request body), and the smaller items: lone surrogates, deep nesting, `"v": true`, the
database's mode. Whatever is sent: a refusal in the common error shape, no 5xx, no traceback
in the log, and the meter answers its owner honestly afterwards."""

from __future__ import annotations

import logging
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hostile import (
    assert_no_traceback,
    assert_refused_cleanly,
    hostile_json,
    json_bytes,
    send_corpus,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from assets import Fa
from assets.codec import asset_to_wire
from smartmeter.api import sign_request

from .fuzzing import Case, fuzz
from .test_meter_api import CREDIT, Meter, body, refused
from .test_meter_api import meter as meter

ROUTES = [
    "/v1/withdrawals",
    "/v1/deposit-addresses",
    "/v1/status",
    "/v1/bills",
    "/v1/bills/history",
]


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def assert_honest(meter: Meter) -> None:
    status = meter.http.post("/v1/status", content=body("/v1/status", meter.owner))
    assert status.status_code == 200, status.text
    assert status.json()["meter"] == "m1"
    wanted = [{"asset": asset_to_wire(Fa(1)), "address": meter.owner.public_key.hex()}]
    issued = meter.http.post(
        "/v1/withdrawals", content=body("/v1/withdrawals", meter.owner, outputs=wanted)
    )
    assert issued.status_code == 201, issued.text


def test_the_corpus_on_every_route_gets_refusals_and_no_traceback(
    meter: Meter, log: pytest.LogCaptureFixture
) -> None:
    failures = []
    for path in ROUTES:
        failures += send_corpus(meter.http, "POST", path)
    assert not failures, "\n".join(failures)
    assert_honest(meter)
    assert_no_traceback(log.text)


def test_generated_json_on_every_route_gets_refusals_and_no_traceback(
    meter: Meter, log: pytest.LogCaptureFixture
) -> None:
    headers = {"content-type": "application/json"}

    @given(path=st.sampled_from(ROUTES), value=hostile_json())
    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(path: str, value: Any) -> None:
        answer = meter.http.post(path, content=json_bytes(value), headers=headers)
        assert_refused_cleanly(answer, f"POST {path} {json_bytes(value)[:200]!r}")

    run()
    assert_honest(meter)
    assert_no_traceback(log.text)


def _unsigned(path: str, **fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "path": path,
        "meter": "m1",
        "at": int(time.time()),
        "nonce": secrets.token_hex(16),
        **fields,
    }


def test_signed_hostile_values_are_malformed_not_a_server_error(
    meter: Meter, log: pytest.LogCaptureFixture
) -> None:
    """The issue's cases, signed by the owner so that only the decoder stands between them and
    the meter: a lone surrogate escape, nesting 986 deep, `"v": true`."""
    path = "/v1/bills/history"
    deep = "[" * 986 + "1" + "]" * 986
    raw_cases = {
        "lone surrogate in a value": b'{"x":"\\ud800"}',
        "lone surrogate in a key": b'{"\\udfff":1}',
        "986 deep": deep.encode(),
        "986 deep inside an object": b'{"first":' + deep.encode() + b',"last":1}',
    }
    for name, raw in raw_cases.items():
        answer = meter.http.post(path, content=raw)
        assert_refused_cleanly(answer, name)
        refused(answer, 400, "malformed")
    signed = {
        "v true": sign_request({**_unsigned(path, first=0, last=1), "v": True}, meter.owner),
        "first false": sign_request(_unsigned(path, first=False, last=1), meter.owner),
        "at true": sign_request({**_unsigned(path, first=0, last=1), "at": True}, meter.owner),
    }
    for name, raw in signed.items():
        answer = meter.http.post(path, content=raw)
        assert_refused_cleanly(answer, name)
        refused(answer, 400, "malformed")
    # Surrogates escaped inside a signed request: its canonical form does not exist.
    unsigned = _unsigned(path, first=0, last=1)
    text = sign_request(unsigned, meter.owner).replace(b'"meter":"m1"', b'"meter":"\\ud800"')
    refused(meter.http.post(path, content=text), 400, "malformed")
    assert_honest(meter)
    assert_no_traceback(log.text)


def test_the_openapi_document_has_a_request_schema_for_every_route(meter: Meter) -> None:
    document = meter.http.get("/openapi.json").json()
    assert sorted(document["paths"]) == sorted(ROUTES)
    for path in ROUTES:
        request = document["paths"][path]["post"]["requestBody"]
        schema = request["content"]["application/json"]["schema"]
        assert {"v", "path", "meter", "at", "nonce", "signature"} <= set(schema["required"])
        assert schema["properties"]["path"] == {"type": "string", "enum": [path]}
        assert schema["additionalProperties"] is False


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_generated_requests_get_no_server_error(
    meter: Meter, mode: GenerationMode, log: pytest.LogCaptureFixture
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", meter.http.app)

    def check(case: Case) -> None:
        what = f"{case.method.upper()} {case.formatted_path} {case.as_curl_command()}"
        try:
            answer = case.call(timeout=30)
        except Exception as exc:  # the app raised: a real server would have answered 500
            raise AssertionError(f"{what}\n-> raised {exc!r}") from exc
        assert answer.status_code < 500, f"{what}\n-> {answer.status_code} {answer.text}"
        if not answer.status_code < 300:
            error = answer.json()["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)

    fuzz(schema, mode, check, at_least=len(ROUTES), examples=50)
    assert_honest(meter)
    assert_no_traceback(log.text)


def test_the_meters_database_and_its_companions_are_its_owners_only(
    meter: Meter, tmp_path: Path
) -> None:
    assert_honest(meter)  # something written, so the -wal and -shm files exist
    for suffix in ("", "-wal", "-shm"):
        path = tmp_path / f"meter.sqlite{suffix}"
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


def test_credit_is_untouched_by_refused_requests(meter: Meter) -> None:
    for path in ROUTES:
        send_corpus(meter.http, "POST", path)
    status = meter.http.post("/v1/status", content=body("/v1/status", meter.owner)).json()
    assert status["credit_used"] == 0 and status["credit_line"] == CREDIT
