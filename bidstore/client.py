"""A synchronous client of the bid store's HTTP API (docs/bidstore-api.md), for wallets.

The store is reached as a v3 onion service through Tor's SOCKS port (`tor_socks`), or directly
on loopback. Every method answers the store's JSON as the API documents it (a `dict`), except
`challenge` (its 32 bytes) and `signed_order` (an `Order`); every refusal raises
`BidStoreClientError` with the store's code and sentence, a transport failure with the code
`unreachable`. A 429 is raised, never waited out: `retry_after_s` says when to come back.
Through Tor, a request that failed before it left (a circuit that could not be built) is tried
again on a new circuit, up to `TOR_ATTEMPTS` times; one that may have reached the store never
is.

Settling a trade takes three steps, one per party and the ledger:

1. the proposer (the trade's `"proposer"`: the taker of a take, the buyer of an auction's
   trade) signs the trade's transfer (`terms.transfer`) for its own inputs and proposes it:
   `propose_signed`;
2. the other party reads the proposal with a signed fetch (`fetch_trade`) and countersigns it
   (`countersign`, which first holds it against the trade's terms);
3. it submits the countersigned transfer to the ledger; the store sees it in a block and marks
   the trade settled. `countersign_and_submit` does steps 2 and 3.

Neither party trusts the store: before signing, each checks that the transfer spends the
trade's inputs and that what leaves its hands is the trade's paid outputs and change to itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from assets import Keypair, Outpoint, Transfer, encode_transaction
from assets.canonical import canonical_json
from assets.codec import asset_from_wire, tx_from_wire
from assets.model import Fa, Output
from assets.rejections import Rejected
from assets.signing import sign_transfer
from bidstore.orders import RELAY, Order, OrderSide, encode_order, order_to_wire, sign_order
from bidstore.service import fetch_message
from ledger.client import LedgerClient, Submitted
from service.client import ServiceClient, refusal

DIRECT_TIMEOUT_S = 10.0
TOR_TIMEOUT_S = 120.0  # a first request to an onion service builds several circuits
# Through Tor, a circuit to the onion service can fail before the request leaves (SOCKS "TTL
# expired", "host unreachable"): nothing was sent, so the request is tried again, on a new
# circuit, this many times in all, after these pauses.
TOR_ATTEMPTS = 3
TOR_RETRY_PAUSES_S = (0.5, 1.0)
# The failures that happen before a request is sent: retrying them cannot send it twice.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)

Answer = dict[str, Any]


class BidStoreClientError(Exception):
    """The store refused a request (`code` and `message` as in docs/bidstore-api.md), answered
    something the API does not allow (`protocol`), or could not be reached (`unreachable`,
    `status` 0). On a 429, `retry_after_s` is the store's Retry-After in seconds, if it gave one.
    """

    def __init__(
        self, code: str, message: str, *, status: int = 0, retry_after_s: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
        self.status, self.retry_after_s = status, retry_after_s


class BidStoreClient(ServiceClient):
    """The bid store at `url` (`/v1` may be left out).

    With `tor_socks`, every request goes through Tor's SOCKS5 port on 127.0.0.1, which resolves
    the `.onion` name itself; an `.onion` URL without it is refused. `timeout_s`: per request,
    in seconds; by default 10, or 120 through Tor. Tor's own SocksTimeout bounds the SOCKS
    handshake, which httpx's timeout leaves out.
    """

    def __init__(
        self,
        url: str,
        *,
        tor_socks: int | None = None,
        timeout_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if "://" not in url:
            url = f"http://{url}"
        self.url = url.rstrip("/").removesuffix("/v1")
        self.tor_socks = tor_socks
        host = httpx.URL(self.url).host
        if host.endswith(".onion") and tor_socks is None:
            raise BidStoreClientError(
                "needs_tor",
                f"{host} is an onion service: reach it through Tor's SOCKS port (--tor-socks PORT)",
            )
        if timeout_s is None:
            timeout_s = DIRECT_TIMEOUT_S if tor_socks is None else TOR_TIMEOUT_S
        self.timeout_s = timeout_s
        proxy = None if tor_socks is None else f"socks5://127.0.0.1:{tor_socks}"
        super().__init__(self.url, timeout_s=timeout_s, prefix="", proxy=proxy, transport=transport)

    # ------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """The JSON object the store answers `method path`; raises `BidStoreClientError`."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        attempts = 1 if self.tor_socks is None else TOR_ATTEMPTS
        for attempt in range(attempts):
            try:
                answer = self._http.request(method, path, content=content, headers=sent)
                break
            except NOT_SENT as exc:
                if attempt + 1 == attempts:
                    raise BidStoreClientError("unreachable", self._unreachable(exc)) from None
                time.sleep(TOR_RETRY_PAUSES_S[min(attempt, len(TOR_RETRY_PAUSES_S) - 1)])
            except httpx.TransportError as exc:  # perhaps sent: never sent again
                raise BidStoreClientError("unreachable", self._unreachable(exc)) from None
        try:
            document = answer.json()
        except ValueError:
            document = None
        if answer.is_success and isinstance(document, dict):
            return document
        if answer.is_success:
            raise BidStoreClientError(
                "protocol",
                f"the store's answer to {method} {path} is not a JSON object",
                status=answer.status_code,
            )
        refused = refusal(answer)
        assert refused is not None
        raise BidStoreClientError(
            refused.code,
            refused.message,
            status=refused.status,
            retry_after_s=None if refused.retry_after_s is None else int(refused.retry_after_s),
        )

    def _unreachable(self, exc: httpx.TransportError) -> str:
        if self.tor_socks is None:
            return f"cannot reach {self.url} ({exc}): is `petra bidstore serve` running there?"
        return (
            f"cannot reach {self.url} through Tor ({exc}): is tor running with its SOCKS port "
            f"on {self.tor_socks}, and the store's onion service published?"
        )

    # ------------------------------------------------------------ reads

    def status(self) -> Answer:
        """`{"chain", "interval", "interval_s", "epoch", "currency", "gate_s", "open_orders",
        "open_trades", "height"}`; `interval_s` in seconds, `epoch` a Unix time."""
        return self._request("GET", "/v1/status")

    def openapi(self) -> Answer:
        """The API's OpenAPI schema."""
        return self._request("GET", "/openapi.json")

    def order(self, order_id: str) -> Answer:
        """An open or trading order and the ids of its trades; `unknown_order` once closed."""
        return self._request("GET", f"/v1/orders/{_hex_id(order_id)}")

    def book(self) -> Answer:
        """`{"orders": [...]}`: every open order, anonymous (power in watts, price in
        micro-units per kWh)."""
        return self._request("GET", "/v1/book")

    def interval_book(self, interval: int) -> Answer:
        """`{"interval", "asks", "bids"}` in priority order."""
        return self._request("GET", f"/v1/book/{_interval(interval)}")

    def open_orders(self, interval: int | None = None) -> list[Answer]:
        """Every open order (`book`), or `interval`'s asks then bids in priority order, each
        with its `"interval"`."""
        if interval is None:
            return list(self.book()["orders"])
        answer = self.interval_book(interval)
        return [{**o, "interval": interval} for o in answer["asks"] + answer["bids"]]

    def auction(self, interval: int) -> Answer:
        """How `interval`'s call auction would clear now: `{"interval", "price", "volume",
        "matches"}`; nothing changes."""
        return self._request("GET", f"/v1/auctions/{_interval(interval)}")

    # ------------------------------------------------------------ orders

    def challenge(self) -> bytes:
        """A fresh 32-byte challenge, valid a few minutes and redeemable once."""
        (challenge,) = self.challenges(1)
        return challenge

    def challenges(self, count: int) -> list[bytes]:
        """`count` (1 to 100) fresh challenges in one request, each redeemable once; the store
        charges `count` requests to its request budgets."""
        if not 1 <= count <= 100:
            raise ValueError(f"take 1 to 100 challenges at once, not {count}")
        answer = self._request("POST", f"/v1/challenges?count={count}")
        try:
            taken = [bytes.fromhex(c) for c in answer["challenges"]]
        except (KeyError, TypeError, ValueError):
            taken = []
        if len(taken) != count or any(len(c) != 32 for c in taken):
            raise BidStoreClientError(
                "protocol", f"the store did not answer {count} challenges of 32 bytes of hex"
            )
        return taken

    def signed_order(
        self,
        side: OrderSide,
        key: Keypair,
        interval: int,
        price: int,
        assets: Iterable[Outpoint],
        receive: bytes,
        contact: str = RELAY,
    ) -> Order:
        """An order of `key`'s address on `assets` over a fresh challenge, signed by `key`.

        `price` in micro-units per kWh; `receive` the address the counterparty pays; `contact`
        "relay" or a v3 onion address. An ask names one EPA outpoint, a bid one ECA and 1-8 FA.
        """
        unsigned = Order(
            side,
            interval,
            price,
            tuple(assets),
            contact,
            receive,
            key.public_key,
            self.challenge(),
        )
        return sign_order(unsigned, key)

    def post_order(self, order: Order) -> Answer:
        """Post a signed order: `{"id", "side", "power", "price", "contact", "interval",
        "replaced"}`, `replaced` the ids of the open orders it replaces."""
        return self._request("POST", "/v1/orders", content=encode_order(order))

    def place(
        self,
        side: OrderSide,
        key: Keypair,
        interval: int,
        price: int,
        assets: Iterable[Outpoint],
        receive: bytes,
        contact: str = RELAY,
    ) -> Answer:
        """`signed_order` with these arguments, posted: the store's answer of `post_order`."""
        return self.post_order(
            self.signed_order(side, key, interval, price, assets, receive, contact)
        )

    # ------------------------------------------------------------ matching

    def clear(self, interval: int) -> Answer:
        """Clear `interval`'s call auction now: `{"interval", "price", "trades"}`."""
        return self._request("POST", f"/v1/auctions/{_interval(interval)}/clear")

    def take(self, resting_id: str, taker: Order, power_w: int | None = None) -> Answer:
        """Take the open order `resting_id` at its price with `taker`, a signed order of the
        other side (see `signed_order`), for `power_w` watts (default: all of it): the trade."""
        body: dict[str, Any] = {"order": _hex_id(resting_id), "taker": order_to_wire(taker)}
        if power_w is not None:
            body["power_w"] = power_w
        return self._request("POST", "/v1/takes", content=canonical_json(body))

    # ------------------------------------------------------------ settling

    def propose(self, trade_id: str, transfer: Transfer | bytes) -> Answer:
        """Post the buyer's transfer for the trade (signed for the buyer's inputs, or its
        canonical bytes): the trade, `proposed`."""
        raw = transfer if isinstance(transfer, bytes) else encode_transaction(transfer)
        return self._request("POST", f"/v1/trades/{_hex_id(trade_id)}/proposal", content=raw)

    def fetch_trade(self, trade_id: str, key: Keypair) -> Answer:
        """The trade with `"role"` and `"proposal"`, read as `key`'s address (one of its two
        parties) with a request signed over a fresh challenge."""
        trade = _hex_id(trade_id)
        challenge = self.challenge()
        signature = key.sign(fetch_message(bytes.fromhex(trade), challenge))
        headers = {
            "X-Petra-Address": key.public_key.hex(),
            "X-Petra-Challenge": challenge.hex(),
            "X-Petra-Signature": signature.hex(),
        }
        return self._request("GET", f"/v1/trades/{trade}", headers=headers)

    def propose_signed(self, trade_id: str, key: Keypair, receive: bytes | None = None) -> Answer:
        """Step 1, for the trade's proposer (its `"proposer"`: the taker of a take, the buyer of
        an auction's trade): read the trade as `key`, check its transfer (with `receive`, the
        address this party's order named, also that what this party is paid goes there), sign
        it for this party's inputs and propose it: the trade, `proposed`."""
        trade = self.fetch_trade(trade_id, key)
        if trade.get("role") != trade.get("proposer"):
            raise BidStoreClientError(
                "not_proposer",
                f"the {trade.get('proposer')} proposes this trade; you countersign it",
            )
        transfer = _transfer(trade.get("terms", {}).get("transfer"), "the trade's transfer")
        _check(trade, transfer, key, receive)
        return self.propose(trade_id, sign_transfer(transfer, [key]))

    def countersign_and_submit(
        self, trade_id: str, key: Keypair, ledger: LedgerClient, receive: bytes | None = None
    ) -> Submitted:
        """Steps 2 and 3, for the other party: read the proposal as `key`, check and
        countersign it (`countersign`) and submit it to `ledger`; raises `BidStoreClientError`
        (`not_proposed`) before step 1."""
        signed = countersign(self.fetch_trade(trade_id, key), key, receive)
        return ledger.submit(encode_transaction(signed))


def countersign(trade: Mapping[str, Any], key: Keypair, receive: bytes | None = None) -> Transfer:
    """The proposal of `trade` (as `fetch_trade` answers it) signed by `key`, the party that did
    not propose, once checked against the trade's terms (and, with `receive`, that what this
    party is paid goes there). Raises `BidStoreClientError`: `not_proposed` without a proposal,
    `terms_mismatch` if it does not carry out the trade for this party."""
    if trade.get("proposal") is None:
        raise BidStoreClientError(
            "not_proposed", f"the {trade.get('proposer')} has not proposed a transfer yet"
        )
    proposal = _transfer(trade["proposal"], "the proposal")
    _check(trade, proposal, key, receive)
    return sign_transfer(proposal, [key])


GIVES = {"seller": {"EPA"}, "buyer": {"ECA", "FA"}}  # the kinds each role's inputs hold


def _check(
    trade: Mapping[str, Any], transfer: Transfer, key: Keypair, receive: bytes | None
) -> None:
    """Refuse `transfer` unless it spends exactly the trade's inputs, carries every paid output,
    the paid outputs of each kind total the trade's power or payment, and every other output of
    the kinds `key`'s role gives goes back to `key`'s address; with `receive`, every paid output
    of the kinds this role gets goes to `receive`. (Where the counterparty is paid is the
    store's word: its `receive` address is in no answer.)"""
    terms: Any = trade.get("terms")
    try:
        inputs = {Outpoint(bytes.fromhex(i["tx"]), i["index"]) for i in terms["inputs"]}
        paid = [
            Output(asset_from_wire(o["asset"]), bytes.fromhex(o["address"])) for o in terms["paid"]
        ]
        owed = {"EPA": trade["power"], "ECA": trade["power"], "FA": trade["payment"]}
        gives = GIVES[trade["role"]]
    except (KeyError, TypeError, ValueError, Rejected):
        raise BidStoreClientError("protocol", "the store's trade lacks valid terms") from None
    if set(transfer.inputs) != inputs or len(transfer.inputs) != len(inputs):
        raise _mismatch("the transfer does not spend exactly the trade's inputs")
    rest = list(transfer.outputs)
    for output in paid:
        if output not in rest:
            raise _mismatch(f"the transfer lacks the paid {output.asset}")
        rest.remove(output)
        if receive is not None and output.asset.kind not in gives and output.address != receive:
            raise _mismatch(f"{output.asset} is paid to {output.address.hex()}, not to you")
    for kind, amount in owed.items():
        given = sum(_size(o) for o in paid if o.asset.kind == kind)
        if given != amount:
            raise _mismatch(f"the trade's paid {kind} totals {given}, not {amount}")
    for output in rest:
        if output.asset.kind in gives and output.address != key.public_key:
            raise _mismatch(f"{output.asset} to {output.address.hex()} is not change to you")


def _size(output: Output) -> int:
    asset = output.asset
    return asset.amount if isinstance(asset, Fa) else asset.power


def _transfer(wire: Any, what: str) -> Transfer:
    try:
        tx = tx_from_wire(wire)
    except Rejected as exc:
        raise BidStoreClientError("protocol", f"{what} is not a transaction: {exc}") from None
    if not isinstance(tx, Transfer):
        raise BidStoreClientError("protocol", f"{what} is not a transfer")
    return tx


def _mismatch(message: str) -> BidStoreClientError:
    return BidStoreClientError("terms_mismatch", message)


def _hex_id(value: str) -> str:
    if len(value) != 64 or value.strip("0123456789abcdef"):
        raise ValueError(f"an id is 64 lowercase hex digits, not {value!r}")
    return value


def _interval(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"an interval is a whole number from 0, not {value!r}")
    return value
