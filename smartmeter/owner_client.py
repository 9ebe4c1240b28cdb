"""The owner's side of the meter's local API (`smartmeter.api`): each call is one request signed
with the owner's wallet key, fresh (`at` = now) and unique (a random nonce). The wallet and
`petra meter status|withdraw|deposit-address|bills` use it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from assets import Keypair, Output
from assets.codec import output_to_wire
from service.client import ServiceClient, refusal
from smartmeter.api import sign_request

DEFAULT_URL = "http://127.0.0.1:7440"


class OwnerApiError(Exception):
    """The meter refused the request (`code` as in docs), or could not be reached
    (`status` 0, `code` "unreachable")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class OwnerClient(ServiceClient):
    """Meter `meter_id`'s owner API at `url`, as the owner holding `owner_key`."""

    def __init__(
        self,
        meter_id: str,
        owner_key: Keypair,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.meter_id, self.owner_key, self.clock = meter_id, owner_key, clock
        super().__init__(url, timeout_s=timeout_s, prefix="", transport=transport)
        self.url = self.base_url

    def call(self, path: str, **fields: Any) -> Any:
        """POST the signed request for `path` with `fields`; the meter's JSON answer."""
        unsigned = {
            "v": 1,
            "path": path,
            "meter": self.meter_id,
            "at": int(self.clock()),
            "nonce": secrets.token_hex(16),
            **fields,
        }
        body = sign_request(unsigned, self.owner_key)
        try:
            answer = self._http.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            raise OwnerApiError(0, "unreachable", f"cannot reach {self.url}: {exc}") from None
        try:
            document = answer.json()
        except ValueError:
            raise OwnerApiError(
                answer.status_code, "protocol", f"the meter's answer is not JSON: {answer.text!r}"
            ) from None
        refused = refusal(answer)
        if refused is not None:
            raise OwnerApiError(refused.status, refused.code, refused.message)
        return document

    def withdraw(self, outputs: Sequence[Output]) -> Any:
        """Ask the meter to issue `outputs`: the issue's txid, height, nonce and outputs."""
        return self.call("/v1/withdrawals", outputs=[output_to_wire(o) for o in outputs])

    def deposit_address(self) -> Any:
        """A deposit address never handed out before: `{"address", "index"}`."""
        return self.call("/v1/deposit-addresses")

    def status(self) -> Any:
        return self.call("/v1/status")

    def bills(self) -> Any:
        return self.call("/v1/bills")

    def bill_history(self, first: int, last: int) -> Any:
        """The meter's signed bills of intervals `first` to `last` (inclusive, `last - first`
        at most `smartmeter.api.MAX_HISTORY`) and whether the DSO has each: `{"first",
        "last", "bills", "delivered"}`."""
        return self.call("/v1/bills/history", first=first, last=last)
