"""The wallet on the bid store (DESIGN.md section 9, docs/bidstore-api.md): orders, takes, and
the wallet's step in each trade.

An order spends coins of ONE address, its owner: an ask one Epa(power, t, t), a bid one
Eca(power, t, t) and FA covering `payment(power, interval_s, price)`. `prepare` finds such
coins, or gathers them first with one transfer to a fresh `trade` address (change to a fresh
`change` address). While an order or trade holds a coin, the coin is `reserved`.

The wallet's data gains two maps:

- `orders`: by order id, `{"side", "interval", "price", "power", "owner", "receive", "coins",
  "taker", "status", "at"}`; `status` is `posting` (written down before the store answers),
  `open`, `trading`, `done` (the store let it go) or `refused`;
- `trades`: by trade id, `{"order", "role", "proposer", "interval", "power", "price",
  "payment", "status", "txid", "submitted", "at"}`, `status` as the store last said.

`proposals` reconciles both with the store and the ledger: it releases the coins of orders the store
let go, so a trade that fails or expires leaves the assets where they were, and reserves the
change a partly filled order keeps trading with. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from assets import Keypair
from assets.model import Asset, Eca, Epa, Fa, Outpoint, Output
from assets.money import format_money, format_price
from bidstore.client import BidStoreClient, BidStoreClientError
from bidstore.orders import (
    MAX_FA_INPUTS,
    MAX_PRICE,
    MIN_PRICE,
    Order,
    OrderSide,
    order_id,
    payment,
)
from ledger.client import LedgerClient, LedgerClientError, LedgerRejected
from wallet.keystore import Contents
from wallet.wallet import (
    Coin,
    Wallet,
    WalletError,
    coin_key,
    release,
    size_of,
)

ENDED = ("settled", "failed", "expired", "abandoned", "forgotten")
# How a command line resolves an id prefix among candidates (`petra.vocabulary.resolve_prefix`):
# the prefix, the candidates, what they are -> the one id.
Resolve = Callable[[str, Iterable[str], str], str]
LIVE_ORDERS = ("posting", "open", "trading")
ROLES = {OrderSide.ASK: "seller", OrderSide.BID: "buyer"}
GIVES = {"ask": ("EPA",), "bid": ("ECA", "FA")}  # what an order's coins hold
# What to do when the store refuses, by its code (docs/bidstore-api.md).
STORE_ADVICE = {
    "spent": "run `petra wallet balance` to see what the wallet still holds",
    "in_trade": "wait for that trade to end (`petra wallet proposals`)",
    "interval_passed": "choose a later interval",
    "too_many_orders": "wait for an order or trade of that address to end",
    "terms_mismatch": "check the order's side, price and power with `petra wallet book`",
    "unknown_order": "it is no longer in the book: see `petra wallet book`",
    "rate_limited": "try again in a little while",
    "busy": "try again in a little while",
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """The coins an order spends, all at `owner`'s address; `moved` is the transfer that
    gathered them there, if one was needed."""

    owner: Keypair
    coins: tuple[Coin, ...]
    moved: bytes | None

    @property
    def outpoints(self) -> tuple[Outpoint, ...]:
        return tuple(c.outpoint for c in self.coins)


# ---------------------------------------------------------------- the store


def connect(wallet: Wallet, url: str | None = None, tor_socks: int | None = None) -> BidStoreClient:
    """A client of the bid store at `url` (else the wallet's), through Tor's SOCKS port
    `tor_socks` (else the wallet's). Raises WalletError(`no_bidstore`, `needs_tor`)."""
    services = wallet.services
    url = url or services.bidstore
    if url is None:
        raise WalletError(
            "no_bidstore",
            "this wallet knows no bid store: run `petra wallet config --bidstore URL "
            "--tor-socks PORT` (or give --bidstore)",
        )
    try:
        return BidStoreClient(url, tor_socks=tor_socks or services.tor_socks)
    except BidStoreClientError as exc:
        raise store_error(exc) from None


def store_error(exc: BidStoreClientError) -> WalletError:
    """The store's refusal as a WalletError: its code, and what to do."""
    if exc.code == "unreachable":
        return WalletError("bidstore_unreachable", exc.message)
    advice = STORE_ADVICE.get(exc.code)
    return WalletError(
        exc.code, f"the bid store refused: {exc.message}" + (f"; {advice}" if advice else "")
    )


@contextmanager
def _store(wallet: Wallet, store: BidStoreClient | None) -> Iterator[BidStoreClient]:
    """`store`, or a client of the wallet's store closed afterwards; store errors as
    WalletErrors."""
    client = store if store is not None else connect(wallet)
    try:
        yield client
    except BidStoreClientError as exc:
        raise store_error(exc) from None
    finally:
        if store is None:
            client.close()


# ---------------------------------------------------------------- preparing an order


def prepare(wallet: Wallet, side: OrderSide, interval: int, power: int, price: int) -> Prepared:
    """The coins of an order of `side` for `power` watts in `interval` at `price` micro-units
    per kWh: the wallet's unspent coins if they already are what the order spends, else those
    gathered by one transfer to a fresh `trade` address. Raises WalletError
    (`price_out_of_range`, `bad_power`, `interval_passed`, `not_enough`, the ledger's)."""
    _check_terms(wallet, interval, power, price)
    if side is OrderSide.ASK:
        return _prepare_ask(wallet, interval, power)
    due = max(1, payment(power, wallet.genesis.interval_s, price))
    return _prepare_bid(wallet, interval, power, due)


def _check_terms(wallet: Wallet, interval: int, power: int, price: int) -> None:
    if not MIN_PRICE <= price <= MAX_PRICE:
        currency = wallet.genesis.currency
        raise WalletError(
            "price_out_of_range",
            f"a price is {format_price(MIN_PRICE, currency)} to {format_price(MAX_PRICE, currency)}"
            f", not {format_price(price, currency)}",
        )
    if power < 1:
        raise WalletError("bad_power", f"an order's power is at least 1 W, not {power}")
    current = wallet.interval_now()
    if interval <= current:
        raise WalletError(
            "interval_passed",
            f"interval {interval} has begun (it is {current}): choose a later interval",
        )


def _prepare_ask(wallet: Wallet, interval: int, power: int) -> Prepared:
    coins = wallet.coins(kind="EPA", interval=interval)
    for coin in coins:
        if coin.asset == Epa(power, interval, interval):
            return Prepared(wallet.key_of(coin.output.address), (coin,), None)
    picked = _pick(coins, power, f"W of EPA for interval {interval}")
    trade, change = wallet.new_key("trade"), None
    outputs = [Output(Epa(power, interval, interval), trade.public_key)]
    rest = _energy_rest(picked, interval, power, Epa)
    if rest:
        change = wallet.new_key("change")
        outputs += [Output(asset, change.public_key) for asset in rest]
    return _gather(wallet, picked, outputs, trade, 1)


def _prepare_bid(wallet: Wallet, interval: int, power: int, due: int) -> Prepared:
    ecas = wallet.coins(kind="ECA", interval=interval)
    fas = wallet.coins(kind="FA")
    for coin in ecas:
        if coin.asset != Eca(power, interval, interval):
            continue
        beside = [c for c in fas if c.output.address == coin.output.address]
        funds = _fund(beside, due)
        if funds is not None:
            return Prepared(wallet.key_of(coin.output.address), (coin, *funds), None)
    picked_eca = _pick(ecas, power, f"W of ECA for interval {interval}")
    picked_fa = _pick(fas, due, "of FA", wallet.genesis.currency)
    trade = wallet.new_key("trade")
    outputs = [
        Output(Eca(power, interval, interval), trade.public_key),
        Output(Fa(due), trade.public_key),
    ]
    rest: list[Asset] = list(_energy_rest(picked_eca, interval, power, Eca))
    left = sum(size_of(c.asset) for c in picked_fa) - due
    if left:
        rest.append(Fa(left))
    if rest:
        change = wallet.new_key("change")
        outputs += [Output(asset, change.public_key) for asset in rest]
    return _gather(wallet, [*picked_eca, *picked_fa], outputs, trade, 2)


def _pick(coins: Sequence[Coin], need: int, what: str, currency: str | None = None) -> list[Coin]:
    """Coins enough for `need` (watts in the interval, or micro-units of `currency`'s money),
    single-interval coins first; WalletError(`not_enough`) if all of them are not."""
    ordered = sorted(
        coins, key=lambda c: 0 if isinstance(c.asset, Fa) else c.asset.end - c.asset.start
    )
    picked, held = [], 0
    for coin in ordered:
        if held >= need:
            break
        picked.append(coin)
        held += size_of(coin.asset)
    if held < need:
        if currency is None:
            amounts = f"{held:,} {what}, not {need:,}"
        else:
            amounts = f"{format_money(held, currency)} {what}, not {format_money(need, currency)}"
        raise WalletError("not_enough", f"the wallet holds {amounts}: withdraw more first")
    return picked


def _fund(coins: Sequence[Coin], due: int) -> list[Coin] | None:
    """At most MAX_FA_INPUTS of `coins` whose amounts cover `due`, largest first; None if they
    cannot."""
    picked = sorted(coins, key=lambda c: size_of(c.asset), reverse=True)[:MAX_FA_INPUTS]
    total, kept = 0, []
    for coin in picked:
        if total >= due:
            break
        kept.append(coin)
        total += size_of(coin.asset)
    return kept if total >= due else None


def _energy_rest(
    coins: Sequence[Coin], interval: int, used: int, make: Callable[[int, int, int], Asset]
) -> list[Asset]:
    """What energy `coins` hold besides `used` watts in `interval`: each coin's intervals
    before and after it, and what is left in it (a transfer balances per interval)."""
    rest: list[Asset] = []
    for coin in coins:
        asset = coin.asset
        assert not isinstance(asset, Fa)
        if asset.start < interval:
            rest.append(make(asset.power, asset.start, interval - 1))
        if asset.end > interval:
            rest.append(make(asset.power, interval + 1, asset.end))
    left = sum(size_of(c.asset) for c in coins) - used
    if left:
        rest.append(make(left, interval, interval))
    return rest


def _gather(
    wallet: Wallet, inputs: Sequence[Coin], outputs: Sequence[Output], owner: Keypair, count: int
) -> Prepared:
    """Move `inputs` into `outputs` in one transfer; the first `count` outputs, at `owner`'s
    address, are the order's coins."""
    moved = wallet.transfer(inputs, outputs, "trade preparation", "trade")
    mine = {c.key: c for c in wallet.coins()}
    coins = tuple(mine[coin_key(Outpoint(moved, n))] for n in range(count))
    return Prepared(owner, coins, moved)


# ---------------------------------------------------------------- orders and takes


def place_order(
    wallet: Wallet,
    side: OrderSide,
    interval: int,
    price: int,
    power: int,
    *,
    store: BidStoreClient | None = None,
) -> dict[str, Any]:
    """Post an ask or a bid for `power` watts in `interval` at `price` micro-units per kWh,
    paid at a fresh `receive` address; its coins are reserved while it lives. The order's
    record plus `"id"`, `"moved"` (the gathering transfer or None) and `"replaced"`."""
    with _store(wallet, store) as client:
        client.status()  # reachable before any coin moves
        prepared = prepare(wallet, side, interval, power, price)
        receive = wallet.new_key("receive")
        order = client.signed_order(
            side, prepared.owner, interval, price, prepared.outpoints, receive.public_key
        )
        oid = _write_order(wallet, order, prepared, power, taker=False)
        try:
            answer = client.post_order(order)
        except BidStoreClientError as exc:
            _refused(wallet, oid, exc)
            raise
        with wallet.edit() as contents:
            record = contents.data["orders"][oid]
            record["status"] = "open"
            wallet.note(
                contents,
                "order",
                f"{side} {power:,} W for interval {interval} at "
                f"{format_price(price, wallet.genesis.currency)} posted",
                order=oid,
            )
    moved = None if prepared.moved is None else prepared.moved.hex()
    return {"id": oid, **record, "moved": moved, "replaced": answer["replaced"]}


def take(
    wallet: Wallet,
    resting_id: str,
    power: int | None = None,
    *,
    store: BidStoreClient | None = None,
    resolve: Resolve | None = None,
) -> dict[str, Any]:
    """Take the open order `resting_id` (its id, or a unique start of it as the book shows
    it, resolved among the open orders by `resolve` if given) at its price for `power` watts
    (default: all of it) with an order of the other side, and propose the trade's transfer
    (the taker proposes). The trade's record plus `"id"`."""
    if not 1 <= len(resting_id) <= 64 or resting_id.strip("0123456789abcdef"):
        raise WalletError(
            "bad_order_id", f"an order id is up to 64 lowercase hex digits, not {resting_id!r}"
        )
    with _store(wallet, store) as client:
        if len(resting_id) < 64:
            resting_id = _whole_id(client, resting_id, resolve)
        resting = client.order(resting_id)
        if resting["status"] != "open":
            raise WalletError(
                "not_open",
                f"order {resting_id[:16]} is {resting['status']}, not open: pick another "
                "from `petra wallet book`",
            )
        wanted = resting["power"] if power is None else power
        if wanted > resting["power"]:
            raise WalletError(
                "bad_power",
                f"order {resting_id[:16]} holds {resting['power']:,} W, not {wanted:,}",
            )
        side = OrderSide.BID if resting["side"] == "ask" else OrderSide.ASK
        interval, price = resting["interval"], resting["price"]
        prepared = prepare(wallet, side, interval, wanted, price)
        receive = wallet.new_key("receive")
        order = client.signed_order(
            side, prepared.owner, interval, price, prepared.outpoints, receive.public_key
        )
        oid = _write_order(wallet, order, prepared, wanted, taker=True)
        try:
            trade = client.take(resting_id, order, power)
        except BidStoreClientError as exc:
            _refused(wallet, oid, exc)
            raise
        tid = trade["id"]
        with wallet.edit() as contents:
            contents.data["orders"][oid]["status"] = "trading"
            _write_trade(contents, tid, oid, ROLES[side], trade, wallet.wall_clock())
            wallet.note(
                contents,
                "take",
                f"took {resting_id[:16]}: {side} {wanted:,} W for interval {interval} at "
                f"{format_price(price, wallet.genesis.currency)}",
                order=oid,
                trade=tid,
            )
        try:
            proposed = client.propose_signed(tid, prepared.owner, receive.public_key)
        except BidStoreClientError as exc:
            raise WalletError(
                exc.code,
                f"trade {tid[:16]} is made but not proposed ({exc.message}): run "
                f"`petra wallet accept {tid}`",
            ) from None
        with wallet.edit() as contents:
            record = contents.data["trades"][tid]
            record["status"] = proposed["status"]
    return {"id": tid, **record}


def _whole_id(client: BidStoreClient, start: str, resolve: Resolve | None) -> str:
    """The id of the one open order whose id starts with `start`."""
    try:
        ids = [str(o["id"]) for o in client.open_orders()]
    except BidStoreClientError as exc:
        raise store_error(exc) from None
    if resolve is not None:
        return resolve(start, ids, "open order")
    found = [i for i in ids if i.startswith(start)]
    if len(found) != 1:
        raise WalletError(
            "unknown_order" if not found else "ambiguous",
            f"{len(found)} open orders have ids starting {start}: give more of the id "
            "(petra wallet book --json shows them whole)",
        )
    return str(found[0])


def _write_order(
    wallet: Wallet, order: Order, prepared: Prepared, power: int, *, taker: bool
) -> str:
    """Write the order down and reserve its coins, before the store sees it."""
    oid = order_id(order).hex()
    with wallet.edit() as contents:
        coins = contents.data["coins"]
        for coin in prepared.coins:
            entry = coins.get(coin.key)
            if entry is None or entry["state"] != "unspent":
                raise WalletError(
                    "not_unspent", f"{coin.key} is not an unspent coin of this wallet"
                )
            entry["state"] = "reserved"
        contents.data.setdefault("orders", {})[oid] = {
            "side": str(order.side),
            "interval": order.interval,
            "price": order.price,
            "power": power,
            "owner": order.owner.hex(),
            "receive": order.receive.hex(),
            "coins": [c.key for c in prepared.coins],
            "taker": taker,
            "status": "posting",
            "at": int(wallet.wall_clock()),
        }
    return oid


def _refused(wallet: Wallet, oid: str, exc: BidStoreClientError) -> None:
    """The store refused the order (its coins are free again), or did not answer (then `proposals`
    learns whether it has it)."""
    if exc.code == "unreachable":
        return
    with wallet.edit() as contents:
        record = contents.data["orders"][oid]
        record["status"] = "refused"
        release(contents, record["coins"])
        wallet.note(contents, "refused", f"the bid store refused an order: {exc.message}")


def _write_trade(
    contents: Contents, tid: str, oid: str, role: str, trade: Mapping[str, Any], at: float
) -> None:
    contents.data.setdefault("trades", {})[tid] = {
        "order": oid,
        "role": role,
        "proposer": trade["proposer"],
        "interval": trade["interval"],
        "power": trade["power"],
        "price": trade["price"],
        "payment": trade["payment"],
        "status": trade["status"],
        "txid": trade["txid"],
        "submitted": None,
        "at": int(at),
    }


# ---------------------------------------------------------------- trades


def action(trade: Mapping[str, Any]) -> str:
    """What a trade needs from this wallet: `propose` (it proposes and the trade is open),
    `accept` (it countersigns: the trade is proposed), `wait`, or how the trade ended."""
    status = trade["status"]
    if status in ENDED:
        return str(status)
    ours = trade["proposer"] == trade["role"]
    if status == "open" and ours:
        return "propose"
    if status == "proposed" and not ours and trade["submitted"] is None:
        return "accept"
    return "wait"


def proposals(wallet: Wallet, *, store: BidStoreClient | None = None) -> list[dict[str, Any]]:
    """The wallet's unfinished trades (and those that just ended), each its record plus `"id"`
    and `"action"` (see `action`). Asks the store about every live order and unfinished trade,
    then the ledger (`refresh`); releases the coins of orders the store let go and reserves the
    change a partly filled order trades on with."""
    data = wallet.data()
    orders = data.get("orders", {})
    trades = {t: r["order"] for t, r in data.get("trades", {}).items() if r["status"] not in ENDED}
    heard: dict[str, str] = {}
    fetched: dict[str, dict[str, Any]] = {}
    with _store(wallet, store) as client:

        def hear(oid: str) -> list[str]:
            """Ask the store about order `oid`: its trades (none once it is gone)."""
            try:
                answer = client.order(oid)
            except BidStoreClientError as exc:
                if exc.code != "unknown_order":
                    raise
                heard[oid] = "done"
                return []
            heard[oid] = answer["status"]
            return list(answer["trades"])

        for oid, record in orders.items():
            if record["status"] not in LIVE_ORDERS:
                continue
            for tid in hear(oid):
                if tid not in data.get("trades", {}):
                    trades[tid] = oid
        for tid, oid in trades.items():
            key = wallet.key_of(bytes.fromhex(orders[oid]["owner"]))
            try:
                fetched[tid] = {"order": oid, **client.fetch_trade(tid, key)}
            except BidStoreClientError as exc:
                if exc.code != "unknown_trade":
                    raise
                fetched[tid] = {"order": oid, "status": "forgotten"}
        # A trade that ended after its order was heard let the order go meanwhile (back in
        # the book, or done): ask again, so the wallet never keeps the order as trading.
        for oid in {f["order"] for f in fetched.values() if f["status"] in ENDED}:
            if heard.get(oid) == "trading":
                hear(oid)
    wallet.refresh()  # after the store: what it let go has settled, or never will
    with wallet.edit() as contents:
        _settle(wallet, contents, heard, fetched)
        known = contents.data.get("trades", {})
        return [{"id": t, **known[t], "action": action(known[t])} for t in fetched if t in known]


def _settle(
    wallet: Wallet,
    contents: Contents,
    heard: Mapping[str, str],
    fetched: Mapping[str, Mapping[str, Any]],
) -> None:
    orders = contents.data.setdefault("orders", {})
    trades = contents.data.setdefault("trades", {})
    coins = contents.data["coins"]
    for tid, answer in fetched.items():
        if tid not in trades:
            if "role" not in answer:  # made and forgotten between two looks: nothing of ours
                continue
            _write_trade(
                contents, tid, answer["order"], answer["role"], answer, wallet.wall_clock()
            )
            wallet.note(contents, "trade", f"trade {tid[:16]} made", trade=tid)
        record = trades[tid]
        if record["status"] != answer["status"]:
            wallet.note(contents, "trade", f"trade {tid[:16]} {answer['status']}", trade=tid)
        record["status"] = answer["status"]
        if answer["status"] != "settled":
            continue
        record["txid"] = answer["txid"]
        order = orders[record["order"]]
        for key, entry in coins.items():
            if not key.startswith(f"{answer['txid']}:"):
                continue
            entry["origin"] = "trade"
            # what a partly filled order keeps trading on: its change at its owner
            if (
                heard.get(record["order"]) in ("open", "trading")
                and entry["address"] == order["owner"]
                and entry["asset"]["kind"] in GIVES[order["side"]]
                and entry["state"] == "unspent"
            ):
                entry["state"] = "reserved"
                order["coins"].append(key)
    for oid, status in heard.items():
        order = orders[oid]
        order["status"] = status
        if status == "done":
            release(contents, order["coins"])


def accept(
    wallet: Wallet,
    trade_id: str | None = None,
    *,
    store: BidStoreClient | None = None,
    resolve: Resolve | None = None,
) -> list[dict[str, Any]]:
    """Take this wallet's step on `trade_id` (or a unique start of its id, resolved among the
    unfinished trades by `resolve` if given), or on every trade that needs one: propose it
    (the proposer) or countersign it and submit it to the ledger (the other party), checking
    that what this wallet is paid goes to its order's `receive` address. The trades stepped on,
    each its record plus `"id"` and `"done"` (`proposed` or `submitted`)."""
    with _store(wallet, store) as client:
        rows = proposals(wallet, store=client)
        if trade_id is not None:
            if resolve is not None:
                trade_id = resolve(trade_id, [r["id"] for r in rows], "unfinished trade")
            rows = [r for r in rows if r["id"].startswith(trade_id)]  # a prefix will do
            if len(rows) > 1:
                raise WalletError(
                    "ambiguous", f"{trade_id} starts several trades' ids: give more of it"
                )
            if not rows:
                raise WalletError(
                    "unknown_trade",
                    f"trade {trade_id[:16]} is no unfinished trade of this wallet: see "
                    "`petra wallet proposals`",
                )
            if rows[0]["action"] not in ("propose", "accept"):
                raise WalletError(
                    "nothing_to_do",
                    f"trade {trade_id[:16]} needs nothing from you now ({rows[0]['action']})",
                )
        done = [_step(wallet, client, r) for r in rows if r["action"] in ("propose", "accept")]
    if any(r["done"] == "submitted" for r in done):
        wallet.refresh()
    return done


def _step(wallet: Wallet, client: BidStoreClient, row: Mapping[str, Any]) -> dict[str, Any]:
    tid = row["id"]
    order = wallet.data()["orders"][row["order"]]
    key = wallet.key_of(bytes.fromhex(order["owner"]))
    receive = bytes.fromhex(order["receive"])
    if row["action"] == "propose":
        client.propose_signed(tid, key, receive)
        changes: dict[str, Any] = {"status": "proposed"}
        text, done = f"proposed trade {tid[:16]}", "proposed"
    else:
        try:
            with LedgerClient(wallet.services.ledger) as ledger:
                submitted = client.countersign_and_submit(tid, key, ledger, receive)
        except LedgerRejected as exc:
            code = "spent" if exc.code == "double_spend" else str(exc.code)
            raise WalletError(
                code,
                f"the ledger refused trade {tid[:16]}: {exc.message}; it cannot settle, see "
                "`petra wallet proposals`",
            ) from None
        except LedgerClientError as exc:
            raise WalletError(
                "ledger_unreachable",
                f"cannot submit trade {tid[:16]} ({exc}): is the ledger node up? Then run "
                f"`petra wallet accept {tid}` again",
            ) from None
        changes = {"submitted": submitted.txid.hex(), "txid": submitted.txid.hex()}
        text, done = f"countersigned and submitted trade {tid[:16]}", "submitted"
    with wallet.edit() as contents:
        record = contents.data["trades"][tid]
        record.update(changes)
        wallet.note(contents, "trade", text, trade=tid)
    return {"id": tid, **record, "done": done}


# ---------------------------------------------------------------- what trades did


def trade_effects(wallet: Wallet) -> list[dict[str, Any]]:
    """Every trade the wallet took part in, oldest first, with what the wallet can know of
    its effect on the meter's bills (DESIGN.md section 7): its record plus `"id"`,
    `"energy_j"` (its power held the whole interval, joules), `"on_ledger"` (its transfer is:
    the wallet holds an output of it, though the store may not have said so yet) and
    `"received"`, the coins its
    transfer paid to the order's receive address, each `{"coin", "asset", "state",
    "deposited_in"}`: the interval the coin's deposit landed in, whose bill counts it, or None
    (not deposited; `state` says whether the wallet still holds it). As the wallet last heard
    from the store: `petra wallet proposals` asks again."""
    data = wallet.data()
    orders, coins = data.get("orders", {}), data["coins"]
    deposited_in = {
        entry["txid"]: entry.get("interval", wallet.genesis.interval_at(int(entry["at"])))
        for entry in data["journal"]
        if entry["kind"] == "deposit" and "txid" in entry
    }
    found = []
    for tid, record in sorted(data.get("trades", {}).items(), key=lambda item: item[1]["at"]):
        receive = orders.get(record["order"], {}).get("receive")
        paid = f"{record['txid']}:" if record["txid"] else None
        on_ledger = paid is not None and any(key.startswith(paid) for key in coins)
        received = [
            {
                "coin": key,
                "asset": entry["asset"],
                "state": entry["state"],
                "deposited_in": deposited_in.get(entry["spent_by"])
                if entry["state"] == "spent"
                else None,
            }
            for key, entry in coins.items()
            if paid is not None and key.startswith(paid) and entry["address"] == receive
        ]
        energy_j = record["power"] * wallet.genesis.interval_s
        found.append(
            {
                "id": tid,
                **record,
                "energy_j": energy_j,
                "on_ledger": on_ledger,
                "received": received,
            }
        )
    return found
