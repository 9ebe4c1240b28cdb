"""Regulation: meters authorized and banned, tariffs and default limits, each a `regulate`
transaction signed with the DSO key and submitted to the ledger; and the views of what is in
force (meters, the schedule).

A regulation is recorded as pending, with its audit entry, before it is submitted, so a crash
or an unreachable ledger loses nothing: `resubmit_pending` submits pending ones again until the
ledger answers. A regulation whose time was defaulted follows the clock to the ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

from assets import Authorization, Code, Keypair, Regulate, encode_transaction, sign, txid
from assets.codec import MAX_INT, MAX_REGULATED_METERS, trusted_transaction
from dso.chainstate import ChainState, IntervalClock
from dso.errors import DsoError, check_meter, check_range
from dso.ledger_index import DsoLedgerIndex
from dso.operators import Actor
from dso.store import DsoStore, RegulationRecord, now_ms
from ledger.client import LedgerClient, LedgerRejected, LedgerUnavailable

log = logging.getLogger("petra.dso")

INDEX_WAIT_S = 10.0  # how long a change waits for the follower to index its block
DEFAULT_TIME_RETRIES = 3  # a defaulted regulation time re-signed as the ledger's clock moves


class Regulation:
    """Regulations signed with `dso_key` for `chain`, recorded in `store`, submitted through
    `client`; `state` is what the follower indexed, `follower` is waited on for each block."""

    def __init__(
        self,
        store: DsoStore,
        client: LedgerClient,
        chain: bytes,
        dso_key: Keypair,
        state: ChainState,
        follower: DsoLedgerIndex,
        clock: IntervalClock,
    ) -> None:
        self.store = store
        self.client = client
        self.chain = chain
        self._key = dso_key
        self.state = state
        self.follower = follower
        self.clock = clock

    # ------------------------------------------------------------- signing and submitting

    def _check_time(self, time_: int | None) -> int:
        now = self.clock.now()
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

    def regulate(
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
                at = max(self.clock.now(), regulation.time + 1)
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
        return regulation_to_wire(self._record(record.nonce))

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
        """Submit again every regulation still pending, oldest first."""
        for record in reversed(self.store.regulations(status="pending")):
            with contextlib.suppress(LedgerRejected, LedgerUnavailable):
                self._submit(record)

    def unsigned(
        self,
        time_: int,
        authorize: Iterable[Authorization] = (),
        ban: Iterable[str] = (),
        price_consumption: int | None = None,
        price_production: int | None = None,
    ) -> Regulate:
        """A regulation of this chain, to be signed with the next nonce by `regulate`."""
        return Regulate(
            self.chain, time_, tuple(authorize), tuple(ban), price_consumption, price_production, 0
        )

    # ------------------------------------------------------------- what the DSO regulates

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
        check_meter(meter)
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
        return self.regulate(
            actor,
            "meter.authorize",
            meter,
            detail,
            self.unsigned(at, authorize=[authorization]),
            {"owner": {"meter": meter, "owner": owner, "follows_default": follows_default}},
            defaulted=time_ is None,
        )

    def ban_meter(self, actor: Actor, meter: str, time_: int | None = None) -> dict[str, Any]:
        """Forbid `meter` to issue from interval time+1 on."""
        check_meter(meter)
        at = self._check_time(time_)
        with self.state.lock:
            known = meter in self.state.schedule.meters()
        if not known:
            raise DsoError(404, "meter_unknown", f"no regulation on the ledger names {meter}")
        return self.regulate(
            actor, "meter.ban", meter, {}, self.unsigned(at, ban=[meter]), defaulted=time_ is None
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
        return self.regulate(
            actor,
            "tariff.set",
            "prices",
            detail,
            self.unsigned(
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
        with self.state.lock:
            reauthorize = []
            for meter in self.state.schedule.meters():
                status = self.state.schedule.meter_at(meter, at + 1)
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
                self.regulate(
                    actor,
                    "limits.default",
                    "default",
                    detail,
                    self.unsigned(at, authorize=chunk),
                    {"default_limits": {"time": at, "max_epa": max_epa, "max_eca": max_eca}}
                    if last
                    else None,
                    defaulted=time_ is None,
                )
            )
        return done

    def default_limits_at(self, interval: int) -> tuple[int, int] | None:
        """The default (max_epa, max_eca) in force at `interval`."""
        return limits_at(self.store.default_limits(), interval)

    # ------------------------------------------------------------- views

    def meters(self, interval: int | None = None) -> dict[str, Any]:
        """Every meter a regulation named, as in force at `interval` (default: now), and the
        meters whose next change is on the ledger but in force only from a later interval."""
        at = self.clock.now() if interval is None else interval
        owners = self.store.meter_owners()
        rows: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        with self.state.lock:
            for meter in self.state.schedule.meters():
                row = self._meter_row(meter, at, owners)
                if row is not None:
                    rows.append(row)
                # A regulation takes force at its time + 1: say when, or it looks lost.
                pieces = self.state.schedule.meter_pieces(meter, at, MAX_INT)
                following = next(itertools.islice(pieces, 1, None), None)
                if following is not None:
                    later = self._meter_row(meter, following[0], owners)
                    if later is not None and later != row:
                        pending.append({**later, "effective_from": following[0]})
        return {"interval": at, "meters": rows, "pending": pending}

    def meter(self, meter: str) -> dict[str, Any]:
        """A meter now and in the next interval, and the regulations that named it."""
        check_meter(meter)
        now = self.clock.now()
        owners = self.store.meter_owners()
        with self.state.lock:
            if meter not in self.state.schedule.meters():
                raise DsoError(404, "meter_unknown", f"no regulation on the ledger names {meter}")
            current = self._meter_row(meter, now, owners)
            following = self._meter_row(meter, now + 1, owners)
            issued = sum(1 for m, _ in self.state.issued if m == meter)
        regulations = []
        for stored in self.store.chain_transactions(type_="regulate"):
            tx = trusted_transaction(stored.body)
            assert isinstance(tx, Regulate)
            if meter in tx.ban or any(a.meter == meter for a in tx.authorize):
                wire = {"height": stored.height, "txid": stored.txid.hex(), "time": tx.time}
                regulations.append({**wire, "transaction": json.loads(stored.body)})
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
        status = self.state.schedule.meter_at(meter, interval)
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
        check_range(first, last)
        runs: list[dict[str, Any]] = []
        defaults = self.store.default_limits()
        with self.state.lock:
            for interval in range(first, last + 1):
                prices = self.state.schedule.prices_at(interval)
                found = limits_at(defaults, interval)
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
        """The regulations this node signed, newest first, of one status or all."""
        return [regulation_to_wire(r) for r in self.store.regulations(status)]


def regulation_to_wire(record: RegulationRecord) -> dict[str, Any]:
    """A recorded regulation as the API shows it (`dso.schemas.RegulationView`)."""
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
        "transaction": json.loads(record.body),
    }


def limits_at(defaults: Sequence[tuple[int, int, int]], interval: int) -> tuple[int, int] | None:
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
