"""The prosumer's wallet (DESIGN.md section 1): its addresses and coins, and what it does with
the meter and the ledger.

Everything the wallet knows lives in its keystore (`wallet.keystore`): the master seed every key
derives from, and `data`, the JSON document this module owns:

- `genesis`: the chain's genesis (wire form); `services`: the ledger, the meter (URL and id),
  the mixer, the bid store and Tor's SOCKS port;
- `next_index` and `addresses`: every address handed out, by hex, with its key index, purpose
  (`owner`, `withdrawal`, `mix`, `receive`, `change`, `trade`, `address`), label and time. Key
  0 is the owner's key, the one the meter knows; every other receipt gets a fresh address;
- `coins`: every output the wallet has seen at its addresses, by `<txid hex>:<index>`, with
  its asset, address, origin and state (`unspent`, `reserved` while an order or trade holds
  it, `spent` with the spending transaction);
- `pending`: transactions written down before they are submitted, until the ledger shows
  them (or refuses them), so that an interrupted command never loses track of a coin;
- `orders` and `trades`: the wallet's orders at the bid store and the trades they are in
  (`wallet.market`);
- `journal`: what the wallet did, for `history`.

A new address is saved before anything may pay it, and a transaction is saved as pending
before it is submitted; `refresh` reconciles both with the ledger. Nothing here prints: the
command line (`petra/wallet_cli.py`) does.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from assets import Genesis, Keypair, chain_id, encode_transaction, txid
from assets.codec import asset_from_wire, asset_to_wire, genesis_from_wire, genesis_to_wire
from assets.model import Asset, Eca, Epa, Fa, Outpoint, Output, Transfer
from assets.money import format_money
from assets.rejections import Rejected
from assets.signing import sign_transfer
from ledger.client import LedgerClient, LedgerClientError, LedgerRejected
from service.clock import now as ledger_now
from smartmeter.owner_client import OwnerApiError, OwnerClient
from wallet.keystore import Contents, WalletFile

DATA_VERSION = 1
OWNER_INDEX = 0
PURPOSES = ("owner", "withdrawal", "mix", "receive", "change", "trade", "address")
KINDS = ("EPA", "ECA", "FA")
MAX_SUBMITTING = 8  # transfers of one deposit submitted at once


class WalletError(Exception):
    """A wallet command cannot go on: `code` is stable, `message` one sentence with what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class Coin:
    """An output at one of the wallet's addresses, and what became of it."""

    outpoint: Outpoint
    output: Output
    state: str  # "unspent" | "reserved" | "spent"
    origin: str  # how it came: "withdrawal", "mix", "trade", "change", "received"
    spent_by: bytes | None = None

    @property
    def asset(self) -> Asset:
        return self.output.asset

    @property
    def key(self) -> str:
        return coin_key(self.outpoint)


@dataclass(frozen=True, slots=True)
class Services:
    ledger: str
    meter_url: str | None = None
    meter_id: str | None = None
    mixer: str | None = None
    bidstore: str | None = None
    tor_socks: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger,
            "meter_url": self.meter_url,
            "meter_id": self.meter_id,
            "mixer": self.mixer,
            "bidstore": self.bidstore,
            "tor_socks": self.tor_socks,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Services:
        return cls(
            ledger=str(wire["ledger"]),
            meter_url=wire.get("meter_url"),
            meter_id=wire.get("meter_id"),
            mixer=wire.get("mixer"),
            bidstore=wire.get("bidstore"),
            tor_socks=wire.get("tor_socks"),
        )


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What `refresh` learned: coins new to the wallet, coins now spent, pending transactions
    the ledger now shows, and pending ones it never will (refused)."""

    new: int
    spent: int
    confirmed: int
    dropped: int
    height: int


def coin_key(outpoint: Outpoint) -> str:
    return f"{outpoint.txid.hex()}:{outpoint.index}"


def new_data(genesis: Genesis, services: Services, now: float) -> dict[str, Any]:
    """The data of a new wallet: its owner address (key 0) and nothing else."""
    return {
        "v": DATA_VERSION,
        "genesis": genesis_to_wire(genesis),
        "services": services.to_wire(),
        "next_index": OWNER_INDEX + 1,
        "addresses": {},
        "coins": {},
        "pending": {},
        "orders": {},
        "trades": {},
        "journal": [{"at": int(now), "kind": "init", "text": "wallet created"}],
    }


def asset_text(asset: Asset, currency: str = "EUR") -> str:
    """An asset as a person reads it: "EPA 5,000 W for interval 90", "FA 0.001000 EUR"."""
    if isinstance(asset, Fa):
        return f"FA {format_money(asset.amount, currency)}"
    span = (
        f"interval {asset.start}"
        if asset.start == asset.end
        else f"intervals {asset.start}-{asset.end}"
    )
    return f"{asset.kind} {asset.power:,} W for {span}"


def size_of(asset: Asset) -> int:
    """Watts of an EPA or ECA, micro-units of an FA."""
    return asset.amount if isinstance(asset, Fa) else asset.power


class Wallet:
    """The wallet in `file`. `clock` returns ledger Unix seconds (`service.clock`: which interval
    it is), `wall_clock` wall Unix seconds (the stamps of the journal and its records);
    `ledger_client` and `owner_client` make the clients of the ledger node and of the meter's
    owner API (tests may give others)."""

    def __init__(
        self,
        file: WalletFile,
        *,
        clock: Callable[[], float] = ledger_now,
        wall_clock: Callable[[], float] = time.time,
        ledger_client: Callable[[str], LedgerClient] = LedgerClient,
        owner_client: Callable[[str, Keypair, str], OwnerClient] = OwnerClient,
    ) -> None:
        self.file = file
        self.clock, self.wall_clock = clock, wall_clock
        self._ledger_client = ledger_client
        self._owner_client = owner_client
        contents = file.read()
        self.genesis = genesis_from_wire(contents.data["genesis"])
        self.chain = chain_id(self.genesis)

    # ------------------------------------------------------------ the document

    @contextmanager
    def edit(self) -> Iterator[Contents]:
        """The wallet's contents, saved when the block ends without an exception."""
        with self.file.edit() as contents:
            yield contents

    def data(self) -> dict[str, Any]:
        return self.file.read().data

    @property
    def services(self) -> Services:
        return Services.from_wire(self.data()["services"])

    def set_services(self, **changes: Any) -> Services:
        with self.edit() as contents:
            current = Services.from_wire(contents.data["services"]).to_wire()
            current.update({k: v for k, v in changes.items() if v is not None})
            contents.data["services"] = current
        return Services.from_wire(current)

    def note(self, contents: Contents, kind: str, text: str, **fields: Any) -> None:
        """Add one entry to the journal (inside an `edit`)."""
        entry = {"at": int(self.wall_clock()), "kind": kind, "text": text, **fields}
        contents.data["journal"].append(entry)

    def interval_now(self) -> int:
        return self.genesis.interval_at(int(self.clock()))

    # ------------------------------------------------------------ keys and addresses

    def owner_key(self) -> Keypair:
        """Key 0: the key the meter's configuration names as its owner."""
        return self.file.read().key(OWNER_INDEX)

    def new_key(self, purpose: str, label: str | None = None) -> Keypair:
        """A fresh key for `purpose`, saved before it is returned (so nothing can pay an
        address the wallet would forget)."""
        if purpose not in PURPOSES or purpose == "owner":
            raise ValueError(f"no address purpose {purpose!r}")
        with self.edit() as contents:
            key = self._allocate(contents, purpose, label)
        return key

    def _allocate(self, contents: Contents, purpose: str, label: str | None) -> Keypair:
        index = contents.data["next_index"]
        key = contents.key(index)
        contents.data["next_index"] = index + 1
        contents.data["addresses"][key.public_key.hex()] = {
            "index": index,
            "purpose": purpose,
            "label": label,
            "created": int(self.wall_clock()),
        }
        return key

    def addresses(self) -> list[dict[str, Any]]:
        """Every address handed out, oldest first: `{"address", "index", "purpose", "label",
        "created"}`."""
        found = [{"address": a, **entry} for a, entry in self.data()["addresses"].items()]
        return sorted(found, key=lambda entry: entry["index"])

    def set_label(self, address: str, label: str) -> None:
        with self.edit() as contents:
            entry = contents.data["addresses"].get(address)
            if entry is None:
                raise WalletError("unknown_address", f"{address} is not an address of this wallet")
            entry["label"] = label

    def key_of(self, address: bytes, contents: Contents | None = None) -> Keypair:
        contents = contents or self.file.read()
        entry = contents.data["addresses"].get(address.hex())
        if entry is None:
            raise WalletError("unknown_address", f"{address.hex()} is not this wallet's")
        return contents.key(entry["index"])

    # ------------------------------------------------------------ coins

    def coins(
        self,
        *,
        states: Iterable[str] = ("unspent",),
        kind: str | None = None,
        interval: int | None = None,
    ) -> list[Coin]:
        """The wallet's coins in `states`, of `kind` and covering `interval` if given, in the
        order the wallet learned them."""
        wanted = set(states)
        found = []
        for key, entry in self.data()["coins"].items():
            coin = _coin(key, entry)
            asset = coin.asset
            if coin.state not in wanted or (kind is not None and asset.kind != kind):
                continue
            if interval is not None and (
                isinstance(asset, Fa) or not asset.start <= interval <= asset.end
            ):
                continue
            found.append(coin)
        return found

    def refresh(self, *, rescan: bool = False) -> Refreshed:
        """Reconcile the wallet with the ledger: coins at its addresses, coins spent, pending
        transactions landed or refused. An address every coin of which is spent is not asked
        again (every address is fresh, so none is paid twice by this wallet's own doing; the
        ledger is asked once per address, and a wallet that trades every interval would
        otherwise ask more each time) unless `rescan`. Raises WalletError
        (`ledger_unreachable`)."""
        contents = self.file.read()
        known = dict(contents.data["coins"])
        addresses = list(contents.data["addresses"])
        if not rescan:
            spent_out = {e["address"] for e in known.values()} - {
                e["address"] for e in known.values() if e["state"] != "spent"
            }
            addresses = [a for a in addresses if a not in spent_out]
        try:
            with self._ledger_client(self.services.ledger) as ledger:
                head = ledger.head()
                unspent = {a: ledger.unspent(bytes.fromhex(a)) for a in addresses}
                seen = {f"{o['tx']}:{o['index']}" for outputs in unspent.values() for o in outputs}
                gone = {
                    k: ledger.output(bytes.fromhex(k[:64]), int(k[65:]))
                    for k, entry in known.items()
                    if entry["state"] != "spent" and k not in seen
                }
                landed = {t: ledger.transaction(bytes.fromhex(t)) for t in contents.data["pending"]}
        except LedgerClientError as exc:
            raise WalletError(
                "ledger_unreachable", f"cannot read the ledger: {exc}; is the ledger node up?"
            ) from None
        new = spent = confirmed = dropped = 0
        with self.edit() as contents:
            coins = contents.data["coins"]
            for outputs in unspent.values():
                for wire in outputs:
                    key = f"{wire['tx']}:{wire['index']}"
                    if key not in coins:
                        coins[key] = {
                            "asset": wire["asset"],
                            "address": wire["address"],
                            "origin": "received",
                            "state": "unspent",
                            "spent_by": None,
                        }
                        new += 1
            for key, found in gone.items():
                entry = coins.get(key)
                if entry is None or entry["state"] == "spent":
                    continue
                if found is None or found.get("spent_by") is not None:
                    entry["state"] = "spent"
                    entry["spent_by"] = None if found is None else _spender(found)
                    spent += 1
            for tx_hex, stored in landed.items():
                record = contents.data["pending"].pop(tx_hex)
                if stored is not None:
                    confirmed += 1
                    self.note(contents, "confirmed", f"{record['kind']} landed", txid=tx_hex)
                else:
                    # not on the ledger: submit again later, or give up once its inputs went
                    # elsewhere (then it never will land)
                    if any(coins.get(i, {}).get("state") == "spent" for i in record["inputs"]):
                        dropped += 1
                        release(contents, record["inputs"])
                        self.note(contents, "dropped", f"{record['kind']} never landed")
                    else:
                        contents.data["pending"][tx_hex] = record
        return Refreshed(new, spent, confirmed, dropped, 0 if head is None else head.header.height)

    def balance(self) -> list[dict[str, Any]]:
        """One row per kind, interval (None for FA) and address: `{"kind", "interval",
        "address", "unspent", "reserved", "spent"}` in watts or micro-units; an EPA or ECA
        covering several intervals counts in each."""
        rows: dict[tuple[str, int | None, str], dict[str, Any]] = {}
        for key, entry in self.data()["coins"].items():
            coin = _coin(key, entry)
            asset = coin.asset
            spans: Sequence[int | None] = (
                [None] if isinstance(asset, Fa) else range(asset.start, asset.end + 1)
            )
            for interval in spans:
                row = rows.setdefault(
                    (asset.kind, interval, coin.output.address.hex()),
                    {
                        "kind": str(asset.kind),
                        "interval": interval,
                        "address": coin.output.address.hex(),
                        "unspent": 0,
                        "reserved": 0,
                        "spent": 0,
                    },
                )
                row[coin.state] += size_of(asset)
        return sorted(
            rows.values(),
            key=lambda r: (KINDS.index(r["kind"]), r["interval"] or -1, r["address"]),
        )

    def pending(self) -> list[dict[str, Any]]:
        return [{"txid": t, **record} for t, record in self.data()["pending"].items()]

    def history(self) -> list[dict[str, Any]]:
        return list(self.data()["journal"])

    # ------------------------------------------------------------ transfers

    def transfer(
        self, inputs: Sequence[Coin], outputs: Sequence[Output], kind: str, origin: str
    ) -> bytes:
        """Spend `inputs` (the wallet's unspent coins) into `outputs` in one transfer signed by
        their keys: saved as pending, submitted, and once on the ledger its outputs at the
        wallet's addresses are coins of `origin`. Its txid. Raises WalletError: the ledger's
        code (`double_spend`, `unbalanced`, ...) or `ledger_unreachable` (the transfer stays
        pending; `refresh` settles it)."""
        with self.edit() as contents:
            signed = self._reserve(contents, inputs, outputs, kind)
        (outcome,) = self._submit_all([signed])
        with self.edit() as contents:
            error = self._settle(contents, signed, outcome, kind, origin)
        if error is not None:
            raise error
        return txid(signed)

    def _reserve(
        self, contents: Contents, inputs: Sequence[Coin], outputs: Sequence[Output], kind: str
    ) -> Transfer:
        """Inside an `edit`: the transfer of `inputs` into `outputs`, signed by their keys,
        its inputs reserved and the transfer saved as pending (so a crash loses nothing)."""
        tx = Transfer(self.chain, tuple(c.outpoint for c in inputs), tuple(outputs))
        # one signature per owner: the ledger refuses a repeated signer
        owners = dict.fromkeys(c.output.address for c in inputs)
        keys = [self.key_of(address, contents) for address in owners]
        signed = sign_transfer(tx, keys)
        for coin in inputs:
            entry = contents.data["coins"].get(coin.key)
            if entry is None or entry["state"] != "unspent":
                raise WalletError(
                    "not_unspent", f"{coin.key} is not an unspent coin of this wallet"
                )
            entry["state"] = "reserved"
        contents.data["pending"][txid(signed).hex()] = {
            "kind": kind,
            "raw": encode_transaction(signed).decode(),
            "inputs": [c.key for c in inputs],
            "at": int(self.wall_clock()),
        }
        return signed

    def _settle(
        self,
        contents: Contents,
        signed: Transfer,
        outcome: LedgerClientError | None,
        kind: str,
        origin: str,
    ) -> WalletError | None:
        """Inside an `edit`: what the ledger's answer to a pending transfer makes of it; the
        error to raise, if any. On the ledger, its outputs at the wallet's addresses are coins
        of `origin`; refused, its inputs are unspent again; unanswered, it stays pending
        (`refresh` settles it)."""
        tx_id = txid(signed)
        if isinstance(outcome, LedgerRejected):
            record = contents.data["pending"].pop(tx_id.hex(), None)
            if record is not None:
                release(contents, record["inputs"])
            self.note(contents, "refused", f"{kind} refused: {outcome.message}")
            return WalletError(
                str(outcome.code), f"the ledger refused the {kind}: {outcome.message}"
            )
        if outcome is not None:
            return WalletError(
                "ledger_unreachable",
                f"the {kind} is saved but the ledger did not confirm it ({outcome}); "
                "run `petra wallet balance` once the ledger node is up",
            )
        contents.data["pending"].pop(tx_id.hex(), None)
        self._landed(contents, signed, tx_id, origin)
        # the interval it landed in: a deposit counts in that interval's bill
        self.note(
            contents,
            kind,
            f"{kind} {tx_id.hex()[:16]} landed",
            txid=tx_id.hex(),
            interval=self.interval_now(),
        )
        return None

    def _landed(self, contents: Contents, tx: Transfer, tx_id: bytes, origin: str) -> None:
        coins, mine = contents.data["coins"], contents.data["addresses"]
        for outpoint in tx.inputs:
            entry = coins.get(coin_key(outpoint))
            if entry is not None:
                entry["state"], entry["spent_by"] = "spent", tx_id.hex()
        for index, output in enumerate(tx.outputs):
            if output.address.hex() in mine:
                coins[coin_key(Outpoint(tx_id, index))] = {
                    "asset": asset_to_wire(output.asset),
                    "address": output.address.hex(),
                    "origin": origin,
                    "state": "unspent",
                    "spent_by": None,
                }

    # ------------------------------------------------------------ the meter

    @contextmanager
    def meter(self) -> Iterator[OwnerClient]:
        services = self.services
        if services.meter_url is None or services.meter_id is None:
            raise WalletError(
                "no_meter",
                "this wallet knows no meter: run `petra wallet config --meter URL --meter-id ID`",
            )
        with self._owner_client(services.meter_id, self.owner_key(), services.meter_url) as c:
            yield c

    def withdraw(self, assets: Sequence[Asset]) -> dict[str, Any]:
        """Ask the meter to issue `assets`, each to a fresh address of this wallet; the
        meter's answer (`txid`, `height`, `nonce`, `outputs`). Raises WalletError with the
        meter's code (`limit_exceeded`, `credit_exceeded`, ...) or `meter_unreachable`."""
        if not assets:
            raise WalletError(
                "nothing_asked", "say what to withdraw, e.g. epa:1000W@T eca:500W@T fa:2EUR"
            )
        with self.edit() as contents:
            outputs = [
                Output(asset, self._allocate(contents, "withdrawal", None).public_key)
                for asset in assets
            ]
        try:
            with self.meter() as meter:
                answer: dict[str, Any] = meter.withdraw(outputs)
        except OwnerApiError as exc:
            raise _meter_error(exc) from None
        issued = bytes.fromhex(answer["txid"])
        with self.edit() as contents:
            for index, output in enumerate(outputs):
                contents.data["coins"][coin_key(Outpoint(issued, index))] = {
                    "asset": asset_to_wire(output.asset),
                    "address": output.address.hex(),
                    "origin": "withdrawal",
                    "state": "unspent",
                    "spent_by": None,
                }
            text = ", ".join(asset_text(a, self.genesis.currency) for a in assets)
            self.note(contents, "withdrawal", f"withdrew {text}", txid=answer["txid"])
        return answer

    def deposit(self, coins: Sequence[Coin]) -> list[bytes]:
        """Pay each coin to a fresh deposit address of the meter, one transfer per coin (so
        that no transfer links two of them); their txids. The transfers are saved together,
        submitted at once (they wait for the same blocks, not one after another) and settled
        together. Raises WalletError after settling the rest: the meter's, if it gave no
        address for a coin (the coins before it are deposited, the rest untouched), else the
        first refusal (the other coins are deposited)."""
        addresses: list[bytes] = []
        failure: WalletError | None = None
        try:
            with self.meter() as meter:
                for _ in coins:
                    addresses.append(bytes.fromhex(meter.deposit_address()["address"]))
        except OwnerApiError as exc:
            failure = _meter_error(exc)
        paying = list(zip(coins, addresses, strict=False))
        if not paying:
            if failure is not None:
                raise failure
            return []
        with self.edit() as contents:
            signed = [
                self._reserve(contents, [coin], [Output(coin.asset, address)], "deposit")
                for coin, address in paying
            ]
        outcomes = self._submit_all(signed)
        done: list[bytes] = []
        with self.edit() as contents:
            for tx, outcome in zip(signed, outcomes, strict=True):
                error = self._settle(contents, tx, outcome, "deposit", "none")
                if error is None:
                    done.append(txid(tx))
                elif failure is None:
                    failure = error
        if failure is not None:
            raise failure
        return done

    def _submit_all(self, txs: Sequence[Transfer]) -> list[LedgerClientError | None]:
        """Submit `txs` at once, each on its own connection; per transfer None (on the ledger)
        or what went wrong."""

        def submit(tx: Transfer) -> LedgerClientError | None:
            try:
                with self._ledger_client(self.services.ledger) as ledger:
                    ledger.submit(encode_transaction(tx))
            except LedgerClientError as exc:
                return exc
            return None

        if len(txs) == 1:
            return [submit(txs[0])]
        with concurrent.futures.ThreadPoolExecutor(min(len(txs), MAX_SUBMITTING)) as pool:
            return list(pool.map(submit, txs))

    def bills(self) -> dict[str, Any]:
        try:
            with self.meter() as meter:
                answer: dict[str, Any] = meter.bills()
        except OwnerApiError as exc:
            raise _meter_error(exc) from None
        return answer

    def meter_status(self) -> dict[str, Any]:
        try:
            with self.meter() as meter:
                answer: dict[str, Any] = meter.status()
        except OwnerApiError as exc:
            raise _meter_error(exc) from None
        return answer

    def bill_history(self, first: int, last: int) -> dict[str, Any]:
        """The meter's signed bills of intervals `first` to `last` (inclusive) and whether the
        DSO has each: `{"first", "last", "bills", "delivered"}` (docs/meter-api.md)."""
        try:
            with self.meter() as meter:
                answer: dict[str, Any] = meter.bill_history(first, last)
        except OwnerApiError as exc:
            raise _meter_error(exc) from None
        return answer


def release(contents: Contents, keys: Iterable[str]) -> None:
    """The coins `keys` that a transaction, an order or a mix reserved are unspent again (inside
    an `edit`); coins in another state are left as they are."""
    for key in keys:
        entry = contents.data["coins"].get(key)
        if entry is not None and entry["state"] == "reserved":
            entry["state"] = "unspent"


def _coin(key: str, entry: Mapping[str, Any]) -> Coin:
    tx_hex, _, index = key.partition(":")
    try:
        asset = asset_from_wire(entry["asset"])
    except Rejected as exc:
        raise WalletError("corrupted", f"coin {key} has no valid asset: {exc.message}") from None
    spent_by = entry.get("spent_by")
    return Coin(
        Outpoint(bytes.fromhex(tx_hex), int(index)),
        Output(asset, bytes.fromhex(entry["address"])),
        entry["state"],
        entry["origin"],
        None if spent_by is None else bytes.fromhex(spent_by),
    )


def _spender(found: Mapping[str, Any]) -> str | None:
    spent_by = found.get("spent_by")
    return spent_by if isinstance(spent_by, str) else None


def _meter_error(exc: OwnerApiError) -> WalletError:
    if exc.code == "unreachable":
        return WalletError(
            "meter_unreachable", f"{exc.message}; is `petra meter run` up and its URL right?"
        )
    return WalletError(exc.code, f"the meter refused: {exc.message}")


def parse_amounts(
    epa: Sequence[int], eca: Sequence[int], fa: Sequence[int], start: int, end: int
) -> list[Asset]:
    """The assets of a withdrawal: each power of `epa` and `eca` (watts, covering intervals
    start..end) and each amount of `fa` (micro-units) is one output."""
    assets: list[Asset] = [Epa(p, start, end) for p in epa]
    assets += [Eca(p, start, end) for p in eca]
    assets += [Fa(a) for a in fa]
    return assets
