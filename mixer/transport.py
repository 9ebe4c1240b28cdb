"""The mixer client's HTTP transport: one keep-alive connection to the coordinator over the
standard library's `http.client`, under `httpx.Client` or written onto directly
(`KeepAliveTransport.exchange`, which `MixClient` uses for its own requests).

A peer sends its requests one at a time (a long poll, then the messages it answers with), so
it needs no pool; httpcore's pool, tracing and per-request socket checks cost several times
the request's own work on loopback, and a mix of N peers makes about 13 N requests. httpx's
request building costs as much again (a long poll's signed query is parsed and checked
character by character, about 240 µs), hence `exchange`. Failures are raised as httpx's own
transport errors, so `MixClient` retries them as before.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
from collections.abc import Sequence

import httpx


class KeepAliveTransport(httpx.BaseTransport):
    """Requests over one persistent connection, opened on first use and again whenever the
    server closed it; `tls` secures https URLs (by default httpx's own context, made on the
    first https request). Thread-safe: one request at a time."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int | None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        return self.exchange(
            request.url,
            request.method,
            request.url.raw_path.decode("ascii"),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            request.read(),
            connect_s=timeouts.get("connect"),
            read_s=timeouts.get("read"),
            request=request,
        )

    def exchange(
        self,
        origin: httpx.URL,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        connect_s: float | None,
        read_s: float | None,
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """One request on the connection to `origin` (its scheme, host and port): `target` is
        the path and query as sent, `headers` every header (Host and Content-Length included);
        the answer, or httpx's transport error naming `request` when there is one."""
        with self._lock:
            connection = self._connect(origin, connect_s)
            try:
                connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    connection.putheader(name, value)
                connection.endheaders(body or None)
                if connection.sock is not None:
                    connection.sock.settimeout(read_s)
                answer = connection.getresponse()
                content = answer.read()
            except TimeoutError as exc:
                self._drop()
                raise httpx.ReadTimeout(str(exc), request=request) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise httpx.RemoteProtocolError(
                    str(exc) or type(exc).__name__, request=request
                ) from None
            if answer.will_close:
                self._drop()
        return httpx.Response(
            answer.status, headers=answer.getheaders(), content=content, request=request
        )

    def _connect(self, url: httpx.URL, timeout_s: float | None) -> http.client.HTTPConnection:
        """The open connection to `url`'s origin: the kept one unless the server closed it
        (a kept-alive socket that is readable between requests has been closed)."""
        origin = (url.scheme, url.host, url.port)
        kept = self._connection
        if kept is not None and (origin != self._origin or _closed(kept)):
            self._drop()
            kept = None
        if kept is not None:
            return kept
        if url.scheme == "https":
            if self.tls is None:
                self.tls = httpx.create_ssl_context()
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                url.host, url.port, timeout=timeout_s, context=self.tls
            )
        else:
            connection = http.client.HTTPConnection(url.host, url.port, timeout=timeout_s)
        try:
            connection.connect()
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc)) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from None
        self._connection, self._origin = connection, origin
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = self._origin = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def _closed(connection: http.client.HTTPConnection) -> bool:
    sock = connection.sock
    if sock is None:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
