"""`service.client`: the one reader of refusals every PETra client builds on, and its base."""

from __future__ import annotations

import httpx
import pytest

from service.client import PROTOCOL, Refusal, ServiceClient, refusal, retry_after_s


def test_a_success_is_no_refusal() -> None:
    assert refusal(httpx.Response(200, json={"ok": True})) is None


def test_the_common_shape_is_read_with_its_extra_fields_and_retry_after() -> None:
    answer = httpx.Response(
        503,
        json={"error": {"code": "busy", "message": "later", "txid": None}},
        headers={"Retry-After": "2"},
    )
    assert refusal(answer) == Refusal(503, "busy", "later", 2.0, {"txid": None})


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(502, content=b"<html>bad gateway</html>"),
        httpx.Response(404, json={"detail": "Not Found"}),
        httpx.Response(400, json={"error": "text"}),
        httpx.Response(400, json={"error": {"code": 7, "message": "x"}}),
        httpx.Response(400, json=["error"]),
    ],
)
def test_an_answer_without_the_common_shape_is_a_protocol_refusal(answer: httpx.Response) -> None:
    found = refusal(answer)
    assert found is not None and found.code == PROTOCOL and found.status == answer.status_code
    assert str(answer.status_code) in found.message


@pytest.mark.parametrize(
    ("header", "cap", "expected"),
    [
        ("3", None, 3.0),
        ("90", 30.0, 30.0),
        ("soon", None, None),
        ("", None, None),
        ("-1", None, None),
    ],
)
def test_retry_after_is_whole_seconds_capped(
    header: str, cap: float | None, expected: float | None
) -> None:
    answer = httpx.Response(429, headers={"Retry-After": header} if header else {})
    assert retry_after_s(answer, cap) == expected


def test_the_base_client_normalises_its_url_and_closes() -> None:
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={})

    for url in ("http://node:7420", "http://node:7420/", "http://node:7420/v1"):
        with ServiceClient(url, timeout_s=1, transport=httpx.MockTransport(respond)) as client:
            assert client.base_url == "http://node:7420"
            client._http.get("/head")
        assert client._http.is_closed
    assert seen == ["http://node:7420/v1/head"] * 3
