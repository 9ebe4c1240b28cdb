"""The grid controller as a service: the load forecast from what the ledger issued, the bills'
deposits and the bid store's book; the price policy; proposals of next prices that become
regulations when accepted; and the loop that proposes and accepts them by itself when the
controller runs automatically. The formulas are in `dso/controller.py` (pure)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Protocol

from assets import AssetKind, decode_bill
from dso import controller
from dso.book import BookUnavailable
from dso.chainstate import ChainState, IntervalClock
from dso.errors import DsoError, check_range
from dso.ledger_index import DsoLedgerIndex
from dso.operators import Actor
from dso.regulation import Regulation
from dso.store import DsoStore, Proposal, now_ms
from ledger.client import LedgerClientError

log = logging.getLogger("petra.dso")

SYSTEM = "controller"  # the actor of automatic price changes


class BookSource(Protocol):
    """The bid store's open orders, as the controller's forecast reads them."""

    def open_orders(self) -> list[controller.BookEntry]: ...


class GridController:
    """The controller over `store` (policy, proposals), `state` (issued assets, prices) and
    `book` (None: the forecast goes without it); accepted proposals go to `regulation`."""

    def __init__(
        self,
        store: DsoStore,
        state: ChainState,
        regulation: Regulation,
        follower: DsoLedgerIndex,
        clock: IntervalClock,
        book: BookSource | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.regulation = regulation
        self.follower = follower
        self.clock = clock
        self.book = book

    def forecast(self, first: int, last: int) -> tuple[list[controller.IntervalForecast], str]:
        """Net load per interval from the EPA and ECA issued on the ledger, the EPA deposits
        the bills reported, and the bid store's open orders; and what became of the book
        (`none` configured, `read`, or why it could not be)."""
        check_range(first, last)
        with self.state.lock:
            issued = [power for _, power in self.state.issued]
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
        """The price policy set, if any."""
        saved = self.store.setting("policy")
        return None if saved is None else controller.PricePolicy(**saved)

    def settings(self) -> dict[str, Any]:
        """The policy as set (or None) and whether the controller runs by itself."""
        return {"policy": self.store.setting("policy"), "auto": bool(self.store.setting("auto"))}

    def set_controller(
        self, actor: Actor, policy: dict[str, Any] | None, auto: bool | None
    ) -> dict[str, Any]:
        """Set the policy, switch automatic mode, or both; the settings after."""
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
        return self.settings()

    def propose(self, actor: Actor) -> Proposal:
        """Prices for the next interval from its forecast and the policy."""
        policy = self.policy()
        if policy is None:
            raise DsoError(422, "bad_policy", "set the controller's policy first")
        target = self.clock.now() + 1
        expected = self.forecast(target, target)[0][0]
        with self.state.lock:
            prices = self.state.schedule.prices_at(target)
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
        if proposal.interval <= self.clock.now():
            raise DsoError(
                409,
                "conflict",
                f"proposal {proposal_id} was for interval {proposal.interval}, which has begun: "
                "propose again",
            )
        return self.regulation.regulate(
            actor,
            "controller.accept",
            str(proposal_id),
            {"reason": proposal.reason},
            self.regulation.unsigned(
                proposal.interval - 1,
                price_consumption=proposal.price_consumption,
                price_production=proposal.price_production,
            ),
            {"proposal": proposal_id},
        )

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: in automatic mode, once per interval, propose the next prices and
        accept them (as the `controller` actor), unless the follower stopped on a problem.
        It looks every second, and at each interval's start, however fast the clock runs."""
        done: int | None = None
        while not stop.wait(min(1.0, self.clock.seconds_to_next())):
            if not self.store.setting("auto") or self.follower.problem is not None:
                continue
            current = self.clock.now()
            if done == current:
                continue
            try:
                robot = Actor(SYSTEM, "system")
                self.accept(robot, self.propose(robot).id)
                done = current
            except (DsoError, LedgerClientError) as exc:
                log.warning("the controller could not set the next prices: %s", exc)
