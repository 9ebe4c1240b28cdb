"""The DSO node's logic, between the HTTP layer (`dso/api.py`) and the pure core: regulation
signed with the DSO key and submitted to the ledger, billing intake and reconciliation, views,
the grid controller, operators and the audit log.

Every change is written to the audit log in the same database transaction as the change, with
who (operator and role), what (action, target, detail) and when. A regulation is recorded as
pending before it is submitted, so a crash or an unreachable ledger loses nothing: pending ones
are submitted again until the ledger answers.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from assets import (
    AssetKind,
    Authorization,
    Code,
    Eca,
    Epa,
    Genesis,
    Issue,
    Keypair,
    Outpoint,
    Regulate,
    chain_id,
    encode_transaction,
    sign,
    txid,
)
from assets.codec import (
    MAX_INT,
    MAX_REGULATED_METERS,
    METER_ID,
    asset_from_wire,
    trusted_transaction,
)
from dso import controller, reconcile
from dso.auth import OPERATOR_NAME, Permission, Role, allowed, new_token, token_hash, well_formed
from dso.book import BookUnavailable
from dso.follower import LedgerFollower
from dso.store import (
    ChainTransaction,
    Conflict,
    DsoStore,
    Operator,
    Proposal,
    RegulationRecord,
    StoredBill,
    now_ms,
)
from dso.throttle import TokenThrottle
from ledger.client import (
    LedgerClient,
    LedgerClientError,
    LedgerRejected,
    LedgerUnavailable,
)
from ledger.schedule import RegulationSchedule
from smartmeter.billing import (
    MAX_BILL_BYTES,
    Bill,
    BillRejected,
    bill_id,
    bill_signature_valid,
    decode_bill,
)

log = logging.getLogger("petra.dso")

MAX_VIEW_INTERVALS = 10_000  # per schedule, bill or forecast query
INDEX_WAIT_S = 10.0  # how long a change waits for the follower to index its block
RESUBMIT_S = 5.0  # how often pending regulations and pending bills are tried again
SYSTEM = "controller"  # the actor of automatic price changes
DEFAULT_TIME_RETRIES = 3  # a defaulted regulation time re-signed as the ledger's clock moves


class DsoError(Exception):
    """A refusal with an HTTP status, a stable code and a sentence a person can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Throttled(DsoError):
    """Too many failed tokens from one client address: 429, try again in `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            429,
            "too_many_requests",
            f"too many invalid operator tokens from this address: try again in {retry_after_s} s",
        )
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: an operator and their role (or the node itself)."""

    name: str
    role: str


class BookSource(Protocol):
    """The bid store's open orders, as the controller's forecast reads them."""

    def open_orders(self) -> list[controller.BookEntry]: ...


@dataclass(frozen=True, slots=True)
class IntakeResult:
    bill: StoredBill
    created: bool  # False: the very same bill was received before


class DsoService:
    """The DSO node. `clock` gives unix seconds (tests move it)."""

    def __init__(
        self,
        store: DsoStore,
        client: LedgerClient,
        genesis: Genesis,
        dso_key: Keypair,
        *,
        book: BookSource | None = None,
        clock: Callable[[], float] = time.time,
        throttle: TokenThrottle | None = None,
    ) -> None:
        if dso_key.public_key not in genesis.dso_keys:
            raise ValueError("the DSO key is not one of the genesis's DSO keys")
        self.store = store
        self.client = client
        self.genesis = genesis
        self.chain = chain_id(genesis)
        self._key = dso_key
        self.book = book
        self.clock = clock
        self.throttle = throttle or TokenThrottle()
        self.schedule = RegulationSchedule()
        self._issued: list[tuple[str, controller.IssuedPower]] = []
        self._lock = threading.RLock()  # the schedule and the issued list
        store.bind_chain(self.chain)
        self.follower = LedgerFollower(client, store, genesis, self._on_transaction)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Load the index, follow the ledger, and retry what is pending, in the background."""
        self.follower.replay_index()
        self.follower.start()
        for name, loop in (("dso-retry", self._retry_loop), ("dso-controller", self._auto_loop)):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self.follower.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.throttle.close()

    def _on_transaction(self, stored: ChainTransaction, tx: Issue | Regulate) -> None:
        with self._lock:
            if isinstance(tx, Regulate):
                self.schedule.apply(tx, stored.seq)
                return
            for output in tx.outputs:
                asset = output.asset
                if isinstance(asset, Epa | Eca):
                    power = controller.IssuedPower(asset.kind, asset.power, asset.start, asset.end)
                    self._issued.append((tx.meter, power))

    def _retry_loop(self) -> None:
        while not self._stop.wait(RESUBMIT_S):
            self.throttle.flush()
            try:
                self.resubmit_pending()
                self.reconcile_pending()
            except Exception:
                log.exception("retrying pending regulations and bills failed")

    # ------------------------------------------------------------- time

    def now(self) -> int:
        """The interval the DSO's clock is in."""
        return (int(self.clock()) - self.genesis.epoch) // self.genesis.interval_s

    def interval_start(self, interval: int) -> datetime:
        return datetime.fromtimestamp(
            self.genesis.epoch + interval * self.genesis.interval_s, tz=UTC
        )

    def status(self) -> dict[str, Any]:
        return {
            "chain": self.chain.hex(),
            "interval": self.now(),
            "interval_s": self.genesis.interval_s,
            "dso_key": self._key.public_key.hex(),
            "indexed_height": self.follower.height,
            "follower_problem": self.follower.problem,
            "ledger_error": self.follower.last_error,
        }

    # ------------------------------------------------------------- operators

    def authenticate(self, token: str | None, client: str = "local") -> Actor:
        """The operator holding `token`, sent from the address `client`; 401 when it is
        missing, unknown or revoked, 429 (`Throttled`) once `client` sent too many that were
        not valid lately (see `dso/throttle.py`)."""
        if not token:
            raise DsoError(401, "unauthorized", "send an operator token: Authorization: Bearer …")
        wait = self.throttle.retry_after(client)
        if wait is not None:
            raise Throttled(wait)
        operator = self.store.operator_by_token(token_hash(token)) if well_formed(token) else None
        if operator is None:
            self.throttle.failed(client, "a token this node never issued")
            raise DsoError(401, "unauthorized", "the token is not valid for this DSO node")
        if operator.revoked_at is not None:
            self.throttle.failed(client, f"operator {operator.name}'s revoked token")
            raise DsoError(401, "unauthorized", f"operator {operator.name}'s token was revoked")
        return Actor(operator.name, operator.role)

    @staticmethod
    def require(actor: Actor, permission: Permission) -> None:
        if not allowed(actor.role, permission):
            raise DsoError(
                403,
                "forbidden",
                f"operator {actor.name} ({actor.role}) may not {permission.value}: "
                "ask an admin for a role that may",
            )

    def create_operator(self, actor: Actor, name: str, role: str) -> tuple[Operator, str]:
        """A new operator and their token, which is shown this once and stored hashed."""
        if OPERATOR_NAME.fullmatch(name) is None:
            raise DsoError(
                400,
                "bad_request",
                "an operator name is 1-64 of a-z 0-9 . _ -, from a letter or digit",
            )
        try:
            Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise DsoError(400, "bad_request", f"role must be one of {roles}") from None
        token = new_token()
        operator = Operator(name, role, int(time.time()), actor.name, None)
        with self.store.writing() as conn:
            try:
                self.store.add_operator(conn, operator, token_hash(token))
            except Conflict as exc:
                raise DsoError(409, "conflict", str(exc)) from None
            self.store.audit(conn, actor.name, actor.role, "operator.create", name, {"role": role})
        return operator, token

    def revoke_operator(self, actor: Actor, name: str) -> None:
        """Revoke `name`'s token; never the last admin's, or nobody could administer the node."""
        with self.store.writing() as conn:
            admins = self.store.active_admins(conn)
            if admins == [name]:
                raise DsoError(
                    409,
                    "last_admin",
                    f"{name} is the last admin: add another admin before revoking this one",
                )
            if not self.store.revoke_operator(conn, name):
                raise DsoError(404, "not_found", f"no active operator named {name!r}")
            self.store.audit(conn, actor.name, actor.role, "operator.revoke", name, {})

    # ------------------------------------------------------------- regulation

    def _check_time(self, time_: int | None) -> int:
        now = self.now()
        if time_ is None:
            return now
        if not -MAX_INT <= time_ <= MAX_INT:
            raise DsoError(400, "bad_request", f"time must be within ±{MAX_INT}")
        if time_ < now:
            raise DsoError(
                422,
                Code.REGULATION_IN_PAST.value,
                f"time {time_} is in the past: the current interval is {now}, so the earliest "
                f"is {now} (in force from interval {now + 1})",
            )
        return time_

    def _regulate(
        self,
        actor: Actor,
        action: str,
        target: str,
        detail: dict[str, Any],
        regulation: Regulate,
        effect: dict[str, Any] | None = None,
        *,
        defaulted: bool = False,
    ) -> dict[str, Any]:
        """Sign `regulation`, record it as pending, submit it, and return once the index has
        it. `effect` is what to record when the ledger accepts it (see `_apply`).

        A `defaulted` time (the caller gave none) follows the clock to the ledger: when the
        ledger's interval moved on before the regulation reached it (`regulation_in_past`),
        it is signed again at the interval current then and submitted again. A time the
        caller gave is never moved."""
        effect = effect or {}
        for attempt in range(1 + DEFAULT_TIME_RETRIES):
            record = self._record_pending(actor, action, target, detail, regulation, effect)
            try:
                height = self._submit(record)
                break
            except LedgerRejected as exc:
                late = exc.code is Code.REGULATION_IN_PAST and defaulted
                if not late or attempt == DEFAULT_TIME_RETRIES:
                    raise DsoError(
                        422, exc.code.value, f"the ledger refused it: {exc.message}"
                    ) from None
                # The ledger's clock may be ahead of ours: move on by one interval at least.
                at = max(self.now(), regulation.time + 1)
                log.info(
                    "regulation %s for interval %d reached the ledger in a later interval: "
                    "signed again for interval %d",
                    record.txid.hex(),
                    regulation.time,
                    at,
                )
                regulation = dataclasses.replace(regulation, time=at)
                effect = _retimed(effect, at)
            except LedgerUnavailable as exc:
                raise DsoError(
                    503,
                    "ledger_unavailable",
                    f"{exc}; the regulation {record.txid.hex()} is kept pending and submitted "
                    "again",
                ) from None
        self.follower.wait_for(height, INDEX_WAIT_S)
        return self.regulation_to_wire(self._record(record.nonce))

    def _record_pending(
        self,
        actor: Actor,
        action: str,
        target: str,
        detail: dict[str, Any],
        regulation: Regulate,
        effect: dict[str, Any],
    ) -> RegulationRecord:
        """`regulation` signed with the next nonce, recorded as pending and audited."""
        with self.store.writing() as conn:
            nonce = self.store.next_nonce(conn)
            signed = sign(dataclasses.replace(regulation, nonce=nonce), self._key)
            assert isinstance(signed, Regulate)
            body, tx_id = encode_transaction(signed), txid(signed)
            detail = {**detail, "time": signed.time, "txid": tx_id.hex()}
            if "proposal" in effect and not self.store.accept_proposal(
                conn, effect["proposal"], nonce
            ):
                raise DsoError(409, "conflict", f"proposal {effect['proposal']} is not open")
            record = RegulationRecord(
                nonce=nonce,
                txid=tx_id,
                time=signed.time,
                body=body,
                actor=actor.name,
                created_ms=now_ms(),
                status="pending",
                code=None,
                message=None,
                height=None,
                role=actor.role,
                action=action,
                target=target,
                detail=detail,
                effect=effect,
            )
            self.store.add_regulation(conn, record)
            self.store.audit(conn, actor.name, actor.role, action, target, detail, "submitted")
        return record

    def _record(self, nonce: int) -> RegulationRecord:
        record = self.store.regulation(nonce)
        assert record is not None
        return record

    def _submit(self, record: RegulationRecord) -> int:
        """Submit a recorded regulation and record the ledger's answer, its effect and an
        audit entry; the height of its block. A regulation the ledger has already (a retry
        after a lost answer) counts as accepted."""
        try:
            height = self.client.submit(record.body).height
        except LedgerRejected as exc:
            found = self.client.transaction(record.txid) if exc.code is Code.DUPLICATE else None
            if found is None:
                self._settle(record, "rejected", exc.code.value, exc.message, None)
                raise
            height = int(found["height"])
        self._settle(record, "accepted", None, None, height)
        return height

    def _settle(
        self,
        record: RegulationRecord,
        status: str,
        code: str | None,
        message: str | None,
        height: int | None,
    ) -> None:
        with self.store.writing() as conn:
            if not self.store.settle_regulation(conn, record.nonce, status, code, message, height):
                return  # another thread settled it first
            if status == "accepted":
                self._apply(conn, record.effect)
            elif "proposal" in record.effect:
                self.store.set_proposal_status(conn, record.effect["proposal"], "rejected")
            self.store.audit(
                conn,
                record.actor,
                record.role,
                record.action,
                record.target,
                record.detail,
                "accepted" if status == "accepted" else code or status,
            )

    def _apply(self, conn: Connection, effect: dict[str, Any]) -> None:
        """Record what an accepted regulation changes beyond the ledger."""
        if "owner" in effect:
            owner = effect["owner"]
            self.store.set_meter_owner(
                conn, owner["meter"], owner["owner"], owner["follows_default"]
            )
        if "default_limits" in effect:
            limits = effect["default_limits"]
            self.store.add_default_limits(
                conn, limits["time"], limits["max_epa"], limits["max_eca"]
            )

    def resubmit_pending(self) -> None:
        for record in reversed(self.store.regulations(status="pending")):
            with contextlib.suppress(LedgerRejected, LedgerUnavailable):
                self._submit(record)

    def regulation_to_wire(self, record: RegulationRecord) -> dict[str, Any]:
        return {
            "txid": record.txid.hex(),
            "nonce": record.nonce,
            "time": record.time,
            "effective_from": record.time + 1,
            "status": record.status,
            "code": record.code,
            "message": record.message,
            "height": record.height,
            "by": record.actor,
            "created_ms": record.created_ms,
            "transaction": _json(record.body),
        }

    def _unsigned(
        self,
        time_: int,
        authorize: Iterable[Authorization] = (),
        ban: Iterable[str] = (),
        price_consumption: int | None = None,
        price_production: int | None = None,
    ) -> Regulate:
        return Regulate(
            self.chain, time_, tuple(authorize), tuple(ban), price_consumption, price_production, 0
        )

    def authorize_meter(
        self,
        actor: Actor,
        meter: str,
        public_key: bytes,
        max_epa: int | None = None,
        max_eca: int | None = None,
        owner: str | None = None,
        time_: int | None = None,
    ) -> dict[str, Any]:
        """Let `meter` issue with `public_key` from interval time+1, below the limits given or,
        when none are, the default limits in force then."""
        _check_meter(meter)
        if len(public_key) != 32:
            raise DsoError(400, "bad_request", "public_key must be 64 lowercase hex digits")
        at = self._check_time(time_)
        follows_default = max_epa is None and max_eca is None
        if max_epa is None or max_eca is None:
            defaults = self.default_limits_at(at + 1)
            if defaults is None:
                raise DsoError(
                    422,
                    "no_default_limits",
                    "give max_epa and max_eca, or set default limits first",
                )
            max_epa = defaults[0] if max_epa is None else max_epa
            max_eca = defaults[1] if max_eca is None else max_eca
        authorization = Authorization(meter, public_key, max_epa, max_eca)
        detail = {
            "public_key": public_key.hex(),
            "max_epa": max_epa,
            "max_eca": max_eca,
            "owner": owner,
        }
        return self._regulate(
            actor,
            "meter.authorize",
            meter,
            detail,
            self._unsigned(at, authorize=[authorization]),
            {"owner": {"meter": meter, "owner": owner, "follows_default": follows_default}},
            defaulted=time_ is None,
        )

    def ban_meter(self, actor: Actor, meter: str, time_: int | None = None) -> dict[str, Any]:
        """Forbid `meter` to issue from interval time+1 on."""
        _check_meter(meter)
        at = self._check_time(time_)
        with self._lock:
            known = meter in self.schedule.meters()
        if not known:
            raise DsoError(404, "meter_unknown", f"no regulation on the ledger names {meter}")
        return self._regulate(
            actor, "meter.ban", meter, {}, self._unsigned(at, ban=[meter]), defaulted=time_ is None
        )

    def set_tariff(
        self,
        actor: Actor,
        price_consumption: int | None,
        price_production: int | None,
        time_: int | None = None,
    ) -> dict[str, Any]:
        """Prices in micro-units per kWh from interval time+1; None leaves one unchanged."""
        if price_consumption is None and price_production is None:
            raise DsoError(400, "bad_request", "give price_consumption, price_production or both")
        at = self._check_time(time_)
        detail = {"price_consumption": price_consumption, "price_production": price_production}
        return self._regulate(
            actor,
            "tariff.set",
            "prices",
            detail,
            self._unsigned(
                at, price_consumption=price_consumption, price_production=price_production
            ),
            defaulted=time_ is None,
        )

    def set_default_limits(
        self, actor: Actor, max_epa: int, max_eca: int, time_: int | None = None
    ) -> list[dict[str, Any]]:
        """Default MAXEPA/MAXECA from interval time+1: every authorized meter that follows the
        defaults is authorized again at them (one regulation per 1,024 meters), and meters
        authorized later without limits get them."""
        at = self._check_time(time_)
        owners = self.store.meter_owners()
        with self._lock:
            reauthorize = []
            for meter in self.schedule.meters():
                status = self.schedule.meter_at(meter, at + 1)
                follows = owners.get(meter, (None, False))[1]  # unknown here: keep its limits
                if status is not None and status.public_key and not status.banned and follows:
                    reauthorize.append(Authorization(meter, status.public_key, max_epa, max_eca))
        chunks = [
            reauthorize[i : i + MAX_REGULATED_METERS]
            for i in range(0, max(len(reauthorize), 1), MAX_REGULATED_METERS)
        ]
        done = []
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            detail = {"max_epa": max_epa, "max_eca": max_eca, "meters": [a.meter for a in chunk]}
            done.append(
                self._regulate(
                    actor,
                    "limits.default",
                    "default",
                    detail,
                    self._unsigned(at, authorize=chunk),
                    {"default_limits": {"time": at, "max_epa": max_epa, "max_eca": max_eca}}
                    if last
                    else None,
                    defaulted=time_ is None,
                )
            )
        return done

    def default_limits_at(self, interval: int) -> tuple[int, int] | None:
        """The default (max_epa, max_eca) in force at `interval`."""
        return _limits_at(self.store.default_limits(), interval)

    # ------------------------------------------------------------- views

    def meters(self, interval: int | None = None) -> dict[str, Any]:
        at = self.now() if interval is None else interval
        owners = self.store.meter_owners()
        with self._lock:
            rows = [self._meter_row(meter, at, owners) for meter in self.schedule.meters()]
        return {"interval": at, "meters": [r for r in rows if r is not None]}

    def meter(self, meter: str) -> dict[str, Any]:
        _check_meter(meter)
        now = self.now()
        owners = self.store.meter_owners()
        with self._lock:
            if meter not in self.schedule.meters():
                raise DsoError(404, "meter_unknown", f"no regulation on the ledger names {meter}")
            current = self._meter_row(meter, now, owners)
            following = self._meter_row(meter, now + 1, owners)
            issued = sum(1 for m, _ in self._issued if m == meter)
        regulations = []
        for stored in self.store.chain_transactions(type_="regulate"):
            tx = trusted_transaction(stored.body)
            assert isinstance(tx, Regulate)
            if meter in tx.ban or any(a.meter == meter for a in tx.authorize):
                wire = {"height": stored.height, "txid": stored.txid.hex(), "time": tx.time}
                regulations.append({**wire, "transaction": _json(stored.body)})
        return {
            "meter": meter,
            "now": current,
            "next": following,
            "energy_assets_issued": issued,
            "regulations": regulations,
        }

    def _meter_row(
        self, meter: str, interval: int, owners: dict[str, tuple[str | None, bool]]
    ) -> dict[str, Any] | None:
        status = self.schedule.meter_at(meter, interval)
        if status is None:
            return None
        owner, follows = owners.get(meter, (None, False))
        return {
            "meter": meter,
            "public_key": None if status.public_key is None else status.public_key.hex(),
            "max_epa": status.max_epa,
            "max_eca": status.max_eca,
            "state": "banned" if status.banned else "authorized",
            "owner": owner,
            "follows_default_limits": follows,
        }

    def schedule_view(self, first: int, last: int) -> dict[str, Any]:
        """Prices and default limits in force per interval, as runs of equal intervals."""
        _check_range(first, last)
        runs: list[dict[str, Any]] = []
        defaults = self.store.default_limits()
        with self._lock:
            for interval in range(first, last + 1):
                prices = self.schedule.prices_at(interval)
                found = _limits_at(defaults, interval)
                limits = None if found is None else {"max_epa": found[0], "max_eca": found[1]}
                entry = {
                    "price_consumption": prices.consumption,
                    "price_production": prices.production,
                    "default_limits": limits,
                }
                if runs and all(runs[-1][k] == v for k, v in entry.items()):
                    runs[-1]["last"] = interval
                else:
                    runs.append({"first": interval, "last": interval, **entry})
        return {"first": first, "last": last, "runs": runs}

    def regulations(self, status: str | None = None) -> list[dict[str, Any]]:
        return [self.regulation_to_wire(r) for r in self.store.regulations(status)]

    # ------------------------------------------------------------- billing intake

    def intake_bill(self, raw: bytes) -> IntakeResult:
        """Check a meter's signed bill, store it once, and reconcile it if the index allows."""
        if len(raw) > MAX_BILL_BYTES:
            raise DsoError(413, "too_large", f"a bill is at most {MAX_BILL_BYTES} bytes")
        try:
            bill = decode_bill(raw)
        except BillRejected as exc:
            raise DsoError(413 if exc.code == "too_large" else 400, exc.code, exc.message) from None
        if bill.chain != self.chain:
            raise DsoError(422, "wrong_chain", "the bill is for another chain than this DSO's")
        with self._lock:
            status = self.schedule.meter_at(bill.meter, bill.interval)
        if status is None or status.public_key is None:
            raise DsoError(
                401,
                "meter_unknown",
                f"meter {bill.meter} was not authorized at interval {bill.interval} "
                f"(as of ledger height {self.follower.height})",
            )
        if not bill_signature_valid(bill, status.public_key):
            raise DsoError(
                401,
                "bad_signature",
                f"the bill is not signed by meter {bill.meter}'s key in force at interval "
                f"{bill.interval}",
            )
        if bill.interval >= self.now():
            raise DsoError(
                422,
                "interval_open",
                f"interval {bill.interval} has not ended (the current one is {self.now()})",
            )
        the_id = bill_id(bill)
        existing = self.store.bill(the_id)
        if existing is not None:
            return IntakeResult(existing, created=False)
        owner = self.store.meter_owner(bill.meter)
        stored = StoredBill(
            the_id,
            bill.meter,
            bill.interval,
            owner,
            bill.closed_height,
            bill.amount,
            raw,
            now_ms(),
            "pending",
            [],
        )
        try:
            with self.store.writing() as conn:
                self.store.add_bill(conn, stored, bill.deposits)
        except Conflict as exc:
            first = self.store.bill_for(bill.meter, bill.interval)
            detail = {"refused": the_id.hex(), "kept": first.id.hex() if first else None}
            with self.store.writing() as conn:  # its own transaction: the refusal is kept
                self.store.audit(
                    conn,
                    f"meter:{bill.meter}",
                    "meter",
                    "bill.conflict",
                    bill.meter,
                    detail,
                    "bill_conflict",
                )
            raise DsoError(
                409,
                "bill_conflict",
                f"{exc}: the first one is kept; a correction needs an operator",
            ) from None
        self.follower.wait_for(bill.closed_height, 2.0)
        return IntakeResult(self.reconcile_bill(the_id), created=True)

    def reconcile_bill(self, the_id: bytes) -> StoredBill:
        """Check a stored bill against the ledger; it stays pending until the index reaches
        its closing height."""
        stored = self.store.bill(the_id)
        if stored is None:
            raise DsoError(404, "not_found", f"no bill {the_id.hex()}")
        if stored.closed_height > self.follower.height:
            return stored
        bill = decode_bill(stored.body)
        try:
            found = self._discrepancies(bill, the_id)
        except LedgerClientError as exc:  # checked again by the retry loop
            log.warning("bill %s stays pending: %s", the_id.hex(), exc)
            return stored
        status = "flagged" if found else "reconciled"
        wire = [{"code": d.code, "message": d.message} for d in found]
        self.store.set_bill_status(the_id, status, wire)
        if status == "flagged":
            log.warning("bill %s of meter %s is flagged: %s", the_id.hex(), bill.meter, wire)
        return dataclasses.replace(stored, status=status, discrepancies=wire)

    def _discrepancies(self, bill: Bill, the_id: bytes) -> list[reconcile.Discrepancy]:
        issues = [
            reconcile.IssuedFact(
                stored.txid, stored.height, stored.interval, _issue(stored.body).outputs
            )
            for stored in self.store.issues_counting(bill.meter, bill.interval, bill.closed_height)
        ]
        deposits: dict[Outpoint, reconcile.DepositFact | None] = {}
        for outpoint in bill.deposits:
            deposits[outpoint] = self._deposit(outpoint, bill.closed_height)
        with self._lock:
            prices = self.schedule.prices_at(bill.interval)
        return reconcile.reconcile(
            bill,
            interval_s=self.genesis.interval_s,
            issues=issues,
            deposits=deposits,
            claimed_elsewhere=self.store.claims(bill.deposits, the_id),
            price_consumption=prices.consumption,
            price_production=prices.production,
        )

    def _deposit(self, outpoint: Outpoint, closed_height: int) -> reconcile.DepositFact | None:
        found = self.client.output(outpoint.txid, outpoint.index)
        tx = self.client.transaction(outpoint.txid) if found is not None else None
        if found is None or tx is None or int(tx["height"]) > closed_height:
            return None
        height = int(tx["height"])
        block_time = self.store.block_times([height]).get(height)
        if block_time is None:
            return None
        interval = (block_time - self.genesis.epoch) // self.genesis.interval_s
        return reconcile.DepositFact(outpoint, asset_from_wire(found["asset"]), height, interval)

    def reconcile_pending(self) -> int:
        """Reconcile the bills whose closing height the index has reached; how many."""
        count = 0
        for stored in self.store.bills(status="pending"):
            if stored.closed_height <= self.follower.height:
                count += self.reconcile_bill(stored.id).status != "pending"
        return count

    def reconcile_all(self, actor: Actor, first: int, last: int) -> dict[str, int]:
        """Check every bill of intervals first..last again (after a ledger repair, say)."""
        _check_range(first, last)
        counts = {"reconciled": 0, "flagged": 0, "pending": 0}
        for stored in self.store.bills(first, last):
            counts[self.reconcile_bill(stored.id).status] += 1
        with self.store.writing() as conn:
            self.store.audit(
                conn, actor.name, actor.role, "bills.reconcile", f"{first}-{last}", counts
            )
        return counts

    def bill_to_wire(self, stored: StoredBill) -> dict[str, Any]:
        return {
            "id": stored.id.hex(),
            "meter": stored.meter,
            "owner": stored.owner,
            "interval": stored.interval,
            "closed_height": stored.closed_height,
            "amount": stored.amount,
            "status": stored.status,
            "discrepancies": stored.discrepancies,
            "received_ms": stored.received_ms,
            "bill": _json(stored.body),
        }

    def bills(
        self,
        first: int,
        last: int,
        meter: str | None = None,
        owner: str | None = None,
        status: str | None = None,
    ) -> list[StoredBill]:
        _check_range(first, last)
        return self.store.bills(first, last, meter, owner, status)

    def bill(self, the_id: bytes) -> StoredBill:
        stored = self.store.bill(the_id)
        if stored is None:
            raise DsoError(404, "not_found", f"no bill {the_id.hex()}")
        return stored

    def statement(self, owner: str, first: int, last: int) -> dict[str, Any]:
        """What `owner` owes over intervals first..last, per meter, and which bills are not
        settled yet (pending or flagged)."""
        found = self.bills(first, last, owner=owner)
        meters: dict[str, dict[str, int]] = {}
        for stored in found:
            line = meters.setdefault(stored.meter, {"bills": 0, "amount": 0, "unsettled": 0})
            line["bills"] += 1
            line["amount"] += stored.amount
            line["unsettled"] += stored.status != "reconciled"
        return {
            "owner": owner,
            "first": first,
            "last": last,
            "currency": self.genesis.currency,
            "total": sum(s.amount for s in found),
            "reconciled_total": sum(s.amount for s in found if s.status == "reconciled"),
            "meters": [{"meter": m, **v} for m, v in sorted(meters.items())],
            "bills": [self.bill_to_wire(s) for s in found],
        }

    def bills_csv(self, found: Sequence[StoredBill]) -> str:
        """The bills as CSV, one row each, with every figure of the bill."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(_CSV_COLUMNS)
        for stored in found:
            bill = decode_bill(stored.body)
            writer.writerow(
                [
                    stored.id.hex(),
                    _csv_text(bill.meter),
                    _csv_text(stored.owner or ""),
                    bill.interval,
                    self.interval_start(bill.interval).isoformat(),
                    bill.closed_height,
                    bill.measured_j,
                    bill.issued_epa_w,
                    bill.deposited_epa_w,
                    bill.fa_issued,
                    bill.fa_deposited,
                    bill.energy_j,
                    "" if bill.price_consumption is None else bill.price_consumption,
                    "" if bill.price_production is None else bill.price_production,
                    bill.amount,
                    stored.status,
                    " ".join(d["code"] for d in stored.discrepancies),
                ]
            )
        return out.getvalue()

    # ------------------------------------------------------------- the grid controller

    def forecast(self, first: int, last: int) -> tuple[list[controller.IntervalForecast], str]:
        """Net load per interval from the EPA and ECA issued on the ledger, the EPA deposits
        the bills reported, and the bid store's open orders; and what became of the book
        (`none` configured, `read`, or why it could not be)."""
        _check_range(first, last)
        with self._lock:
            issued = [power for _, power in self._issued]
        deposited = []
        for stored in self.store.bills(first, last):
            power = decode_bill(stored.body).deposited_epa_w
            if power > 0:
                deposited.append(
                    controller.IssuedPower(AssetKind.EPA, power, stored.interval, stored.interval)
                )
        book: list[controller.BookEntry] = []
        note = "none"
        if self.book is not None:
            try:
                book, note = self.book.open_orders(), "read"
            except BookUnavailable as exc:
                note = str(exc)
                log.warning("forecast without the book: %s", exc)
        return controller.forecast(first, last, issued, deposited, book), note

    def policy(self) -> controller.PricePolicy | None:
        saved = self.store.setting("policy")
        return None if saved is None else controller.PricePolicy(**saved)

    def controller_settings(self) -> dict[str, Any]:
        return {"policy": self.store.setting("policy"), "auto": bool(self.store.setting("auto"))}

    def set_controller(
        self, actor: Actor, policy: dict[str, Any] | None, auto: bool | None
    ) -> dict[str, Any]:
        if policy is not None:
            try:
                controller.PricePolicy(**policy)
            except (TypeError, ValueError) as exc:
                raise DsoError(422, "bad_policy", str(exc)) from None
        if auto and policy is None and self.store.setting("policy") is None:
            raise DsoError(422, "bad_policy", "set a policy before running the controller")
        with self.store.writing() as conn:
            if policy is not None:
                self.store.put_setting(conn, "policy", policy)
            if auto is not None:
                self.store.put_setting(conn, "auto", auto)
            detail = {"policy": policy, "auto": auto}
            self.store.audit(conn, actor.name, actor.role, "controller.set", "controller", detail)
        return self.controller_settings()

    def propose(self, actor: Actor) -> Proposal:
        """Prices for the next interval from its forecast and the policy."""
        policy = self.policy()
        if policy is None:
            raise DsoError(422, "bad_policy", "set the controller's policy first")
        target = self.now() + 1
        expected = self.forecast(target, target)[0][0]
        with self._lock:
            prices = self.schedule.prices_at(target)
        proposed = controller.propose(policy, expected, prices.consumption, prices.production)
        proposal = Proposal(
            0,
            target,
            proposed.price_consumption,
            proposed.price_production,
            proposed.net_load_w,
            proposed.reason,
            now_ms(),
            "open",
            None,
        )
        with self.store.writing() as conn:
            the_id = self.store.add_proposal(conn, proposal)
            detail = {
                "interval": target,
                "price_consumption": proposal.price_consumption,
                "price_production": proposal.price_production,
                "reason": proposal.reason,
            }
            self.store.audit(
                conn, actor.name, actor.role, "controller.propose", str(the_id), detail
            )
        return dataclasses.replace(proposal, id=the_id)

    def accept(self, actor: Actor, proposal_id: int) -> dict[str, Any]:
        """Make an open proposal a regulation, while its interval has not begun."""
        proposal = self.store.proposal(proposal_id)
        if proposal is None:
            raise DsoError(404, "not_found", f"no proposal {proposal_id}")
        if proposal.status != "open":
            raise DsoError(409, "conflict", f"proposal {proposal_id} is {proposal.status}")
        if proposal.interval <= self.now():
            raise DsoError(
                409,
                "conflict",
                f"proposal {proposal_id} was for interval {proposal.interval}, which has begun: "
                "propose again",
            )
        return self._regulate(
            actor,
            "controller.accept",
            str(proposal_id),
            {"reason": proposal.reason},
            self._unsigned(
                proposal.interval - 1,
                price_consumption=proposal.price_consumption,
                price_production=proposal.price_production,
            ),
            {"proposal": proposal_id},
        )

    def _auto_loop(self) -> None:
        done: int | None = None
        while not self._stop.wait(min(1.0, self.genesis.interval_s / 4)):
            if not self.store.setting("auto") or self.follower.problem is not None:
                continue
            current = self.now()
            if done == current:
                continue
            try:
                robot = Actor(SYSTEM, "system")
                self.accept(robot, self.propose(robot).id)
                done = current
            except (DsoError, LedgerClientError) as exc:
                log.warning("the controller could not set the next prices: %s", exc)

    # ------------------------------------------------------------- audit

    def audit_entries(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [e.to_wire() for e in self.store.audit_entries(after, limit)]

    def verify_audit(self) -> dict[str, Any]:
        count, problem = self.store.verify_audit()
        return {"entries": count, "intact": problem is None, "problem": problem}


_CSV_COLUMNS = [
    "bill_id",
    "meter",
    "owner",
    "interval",
    "interval_start_utc",
    "closed_height",
    "measured_j",
    "issued_epa_w",
    "deposited_epa_w",
    "fa_issued",
    "fa_deposited",
    "energy_j",
    "price_consumption",
    "price_production",
    "amount",
    "status",
    "discrepancies",
]


def _csv_text(value: str) -> str:
    # A spreadsheet would run a cell starting with one of these as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _limits_at(defaults: Sequence[tuple[int, int, int]], interval: int) -> tuple[int, int] | None:
    """Of (time, max_epa, max_eca) in the order they were set, the limits in force at
    `interval`: the last set with time < interval, as for regulations."""
    found = None
    for set_time, max_epa, max_eca in defaults:
        if set_time < interval:
            found = (max_epa, max_eca)
    return found


def _retimed(effect: dict[str, Any], at: int) -> dict[str, Any]:
    """`effect` for a regulation signed again at time `at`."""
    if "default_limits" not in effect:
        return effect
    return {**effect, "default_limits": {**effect["default_limits"], "time": at}}


def _check_meter(meter: str) -> None:
    if METER_ID.fullmatch(meter) is None:
        raise DsoError(400, "bad_request", "a meter id is 1-64 of A-Z a-z 0-9 . _ -")


def _check_range(first: int, last: int) -> None:
    if last < first or last - first >= MAX_VIEW_INTERVALS:
        raise DsoError(
            400,
            "bad_request",
            f"need first <= last and at most {MAX_VIEW_INTERVALS} intervals, got {first}..{last}",
        )


def _issue(body: bytes) -> Issue:
    tx = trusted_transaction(body)
    assert isinstance(tx, Issue)
    return tx


def _json(body: bytes) -> Any:
    return json.loads(body)
