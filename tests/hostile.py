"""The shared corpus of hostile request bodies, and the checks every service must pass under
it: no 5xx, every refusal in the common error shape `{"error": {"code", "message", ...}}`,
no traceback in the answer or the service's log, and the service answering honestly after.

Each service's hostile test sends `HOSTILE_BODIES` (and `hostile_json()` values) to every
route that takes a body, then sends one honest request and checks it still succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from hypothesis import strategies as st


class HostileBody(NamedTuple):
    name: str
    body: bytes
    content_type: str = "application/json"


def _nested(depth: int, leaf: str = "1") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


def _nested_objects(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


# Bodies an outsider can send in one request. Each names the attack it stands for.
HOSTILE_BODIES: list[HostileBody] = [
    HostileBody("empty", b""),
    HostileBody("lone-surrogate-value", b'{"type":"transfer","x":"\\ud800"}'),
    HostileBody("lone-surrogate-key", b'{"\\udfff":1}'),
    HostileBody("low-surrogate-first", b'{"a":"\\udc00\\ud800"}'),
    HostileBody("surrogate-in-list", b'["\\ud83d"]'),
    HostileBody("deep-lists-986", _nested(986)),
    HostileBody("deep-lists-100000", _nested(100_000)),
    HostileBody("deep-objects-500", _nested_objects(500)),
    HostileBody("deep-mixed", b'{"a":' + _nested(200) + b"}"),
    HostileBody("huge-integer", b'{"amount":' + b"9" * 5000 + b"}"),
    HostileBody("integer-beyond-64-bits", b'{"amount":18446744073709551617}'),
    HostileBody("negative-huge", b'{"amount":-' + b"9" * 400 + b"}"),
    HostileBody("float", b'{"amount":1.5}'),
    HostileBody("exponent", b'{"amount":1e400}'),
    HostileBody("nan", b'{"amount":NaN}'),
    HostileBody("infinity", b'{"amount":-Infinity}'),
    HostileBody("bool-for-int", b'{"v":true,"amount":false}'),
    HostileBody("null", b"null"),
    HostileBody("string", b'"transfer"'),
    HostileBody("number", b"7"),
    HostileBody("list", b"[]"),
    HostileBody("object-of-nulls", b'{"type":null,"v":null,"chain":null}'),
    HostileBody("wrong-types", b'{"v":"1","type":1,"inputs":{},"outputs":"x","signatures":7}'),
    HostileBody("duplicate-keys", b'{"type":"transfer","type":"issue","v":1,"v":2}'),
    HostileBody("invalid-utf8", b'{"a":"\xff\xfe\xc0\xaf"}'),
    HostileBody("overlong-utf8", b'{"a":"\xc0\x80"}'),
    HostileBody("utf16-bom", '{"a":1}'.encode("utf-16")),
    HostileBody("nul-bytes", b'{"a":"\x00"}\x00'),
    HostileBody("truncated", b'{"type":"transfer","inputs":[{"tx":'),
    HostileBody("trailing-garbage", b'{"a":1}xyz'),
    HostileBody("oversized", b'{"a":"' + b"x" * (17 * 1024 * 1024) + b'"}'),
    HostileBody("many-keys", ("{" + ",".join(f'"k{n}":{n}' for n in range(20_000)) + "}").encode()),
    HostileBody("long-list", b"[" + b",".join([b"0"] * 200_000) + b"]"),
    HostileBody("not-json-form", b"a=1&b=2", "application/x-www-form-urlencoded"),
    HostileBody("text-plain", b"hello", "text/plain"),
    HostileBody("no-content-type", b'{"a":1}', ""),
]


def _surrogate_text() -> st.SearchStrategy[str]:
    """Text that may hold lone surrogates, which JSON's `\\u` escapes can carry."""
    lone = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
    return st.lists(st.one_of(st.text(max_size=4), lone), max_size=4).map("".join)


def hostile_json(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values, with the shapes that break decoders: lone surrogates, integers
    far beyond 64 bits, floats, booleans where integers go, and nesting."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.floats(allow_nan=False, allow_infinity=False),
        _surrogate_text(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(_surrogate_text(), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_bytes(value: Any) -> bytes:
    """`value` as JSON bytes, lone surrogates written as `\\u` escapes (as an attacker can)."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def assert_refused_cleanly(answer: httpx.Response, what: str) -> None:
    """No 5xx; a refusal has the common error shape and no traceback."""
    assert answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:500]}"
    assert "Traceback" not in answer.text, f"{what}: a traceback reached the client"
    if answer.is_success:
        return
    try:
        body = answer.json()
    except ValueError as exc:
        raise AssertionError(f"{what}: {answer.status_code} is not JSON: {answer.text!r}") from exc
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{what}: {body!r}"
    error = body["error"]
    assert isinstance(error.get("code"), str), f"{what}: {body!r}"
    assert isinstance(error.get("message"), str), f"{what}: {body!r}"


def send_corpus(
    client: httpx.Client,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    bodies: Iterable[HostileBody] = HOSTILE_BODIES,
) -> list[str]:
    """Send every hostile body to `method path`; the failures, one line each (none: passed)."""
    failures: list[str] = []
    for hostile in bodies:
        sent = dict(headers or {})
        if hostile.content_type:
            sent["content-type"] = hostile.content_type
        what = f"{method} {path} [{hostile.name}]"
        try:
            answer = client.request(method, path, content=hostile.body, headers=sent)
            assert_refused_cleanly(answer, what)
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0])
        except httpx.TransportError as exc:
            failures.append(f"{what}: the connection failed: {exc!r}")
    return failures


def assert_no_traceback(log: Path | str) -> None:
    """The service's log holds no Python traceback."""
    text = Path(log).read_text(errors="replace") if isinstance(log, Path) else log
    assert "Traceback (most recent call last)" not in text, text[-4000:]
