"""What every PETra client shares: reading a service's refusal in the common error shape
(`{"error": {"code", "message", ...}}`) and its `Retry-After`, in one place. Each client
(ledger, DSO, bid store, mixer, the meter's owner API) raises its own exceptions from it."""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

PROTOCOL = "protocol"  # the code of an answer that is not in the common shape


@dataclass(frozen=True, slots=True)
class Refusal:
    """A service's refusal: its HTTP status, stable code, message, the seconds its
    `Retry-After` asks for (None without one), and any other fields of the error object."""

    status: int
    code: str
    message: str
    retry_after_s: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def refusal(response: httpx.Response) -> Refusal | None:
    """The refusal `response` carries; None for a success. An error answer without the common
    shape (a proxy's page, a crashed service) is a `protocol` refusal naming its status."""
    if response.is_success:
        return None
    try:
        document = response.json()
    except ValueError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    wait = retry_after_s(response)
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return Refusal(
            response.status_code,
            PROTOCOL,
            f"HTTP {response.status_code} without the error shape",
            wait,
        )
    extra = {k: v for k, v in error.items() if k not in ("code", "message")}
    return Refusal(response.status_code, error["code"], str(error.get("message", "")), wait, extra)


def retry_after_s(response: httpx.Response, cap_s: float | None = None) -> float | None:
    """The seconds a `Retry-After` header asks for (whole seconds, as PETra sends it), at most
    `cap_s`; None without a usable one."""
    value = response.headers.get("retry-after", "")
    if not value.isascii() or not value.isdigit():
        return None
    return float(value) if cap_s is None else min(float(value), cap_s)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context of the process's clients, as httpx makes it by default (verifying
    servers against certifi's authorities): each context loads them (about 1 MB), and a
    daemon on a small board holds a client per service it talks to."""
    return httpx.create_ssl_context()


class ServiceClient:
    """The base of every PETra client: one HTTP connection pool to a service at `base_url`
    (a trailing `/v1` may be given or not), its requests under `prefix`, closed by `close` or
    by leaving a `with` block. `transport` replaces the network (tests); `proxy` reaches the
    service through a SOCKS or HTTP proxy (Tor). Subclasses read answers with `refusal`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        prefix: str = "/v1",
        headers: dict[str, str] | None = None,
        proxy: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.Client(
            base_url=self.base_url + prefix,
            headers=headers,
            proxy=proxy,
            timeout=timeout_s,
            transport=transport,
            verify=tls_context(),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
