"""Schemathesis over every operation of the monitoring service's own schema, valid and invalid
requests, with a real write key in every `apikey`: no answer is a 5xx, and every refusal of
the emoncms-compatible routes has the common error shape beside emoncms's `success: false`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import GenerationMode

from monitoring.api import create_app
from monitoring.keys import create_key
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore

from .fuzzing import Case, fuzz

EMONCMS_OPERATIONS = 14  # /input/post and /input/bulk (4 each), 5 feed reads, /input/list.json
EXAMPLES_PER_OPERATION = 25
EMONCMS_PATHS = ("/input/", "/feed/")


class Served:
    def __init__(self, app: FastAPI, key: str) -> None:
        self.app, self.key = app, key


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service's app over a store holding one node's feeds, and a write key."""
    tmp = tmp_path_factory.mktemp("monitoring-fuzz")
    store = MonitoringStore(f"sqlite:///{tmp / 'monitor.sqlite'}")
    store.put_community("valle", "Valle Solar", "Europe/Madrid")
    key = create_key(store, "fuzzer", "write", None, time.time())
    service = MonitorService(store)
    try:
        yield Served(create_app(service, docs=True), key)
    finally:
        store.close()


def _with_key(case: Case, key: str) -> bool:
    """Put the real key wherever the generated request sends an `apikey`; whether it sends
    one."""
    sent = False
    if isinstance(case.query, dict) and "apikey" in case.query:
        case.query["apikey"] = key
        sent = True
    if isinstance(case.body, dict) and "apikey" in case.body:
        case.body["apikey"] = key
        sent = True
    return sent


def _assert_error_shape(body: Any, what: str) -> None:
    assert isinstance(body, dict), f"{what}: {body!r}"
    error = body.get("error")
    assert isinstance(error, dict), f"{what}: {body!r}"
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), what
    if body.get("success") is not None:  # the emoncms routes' fields beside it
        assert body["success"] is False and body["message"] == error["message"], what


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_generated_requests_get_no_server_error(served: Served, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.app)
    authorized: list[str] = []

    def check(case: Case) -> None:
        keyed = _with_key(case, served.key)
        what = f"{case.method.upper()} {case.formatted_path} {case.as_curl_command()}"
        try:
            answer = case.call(timeout=30)
        except Exception as exc:  # the app raised: a real server would have answered 500
            raise AssertionError(f"{what}\n-> raised {exc!r}") from exc
        assert answer.status_code < 500, f"{what}\n-> {answer.status_code} {answer.text}"
        if not case.operation.path.startswith(EMONCMS_PATHS):
            return
        if answer.status_code >= 400 and answer.status_code != 405:
            _assert_error_shape(answer.json(), what)
        if keyed and answer.status_code != 401:
            authorized.append(what)

    fuzz(schema, mode, check, at_least=EMONCMS_OPERATIONS, examples=EXAMPLES_PER_OPERATION)
    if mode is GenerationMode.POSITIVE:
        # Which generated inputs are stored depends on hypothesis's examples, which change
        # with the code loaded; that the key got the requests past authentication does not.
        assert authorized, "no request with the key passed authentication: it never reached them"
