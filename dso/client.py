"""A synchronous client of the DSO node's admin API, for the `petra dso` commands and for
smart meters posting bills. Every refusal becomes `DsoClientError` with the node's code and
message; nothing is retried (every call but a bill's changes something an operator asked for)."""

from __future__ import annotations

from typing import Any

import httpx

from service.client import PROTOCOL, ServiceClient, refusal

DEFAULT_URL = "http://127.0.0.1:7430"


class DsoClientError(Exception):
    """The node refused the request, or could not be reached (`code` is then `unreachable`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class DsoClient(ServiceClient):
    """The DSO node at `base_url`, as the operator holding `token` (None: meters' calls only)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(base_url, timeout_s=timeout_s, headers=headers, transport=transport)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """The node's answer; DsoClientError unless it is a success."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=query, content=content)
        except httpx.TransportError as exc:
            raise DsoClientError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from None
        refused = refusal(response)
        if refused is None:
            return response
        raise DsoClientError(refused.status, refused.code, refused.message)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {}).json()

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body).json()

    def post_bill(self, raw: bytes) -> Any:
        """Post a meter's signed bill (canonical JSON bytes); the node's verdict."""
        headers = {"Content-Type": "application/json"}
        try:
            response = self._http.post("/bills", content=raw, headers=headers)
        except httpx.TransportError as exc:
            raise DsoClientError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from None
        refused = refusal(response)
        if refused is None:
            return _json(response)
        raise DsoClientError(refused.status, refused.code, refused.message)


def _json(response: httpx.Response) -> Any:
    """A success's JSON body; DsoClientError `protocol` if it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise DsoClientError(
            response.status_code, PROTOCOL, "the DSO node's answer is not JSON"
        ) from None
