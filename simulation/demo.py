"""`petra ledger demo`: one energy trade on a real ledger, told step by step for a newcomer.

Everything is real: signed transactions built with `Scenario`, validated by `Ledger` and
committed to a SQLite store in a temporary directory (removed afterwards), signed tree heads
and RFC 9162 proofs checked as an auditor would. The demo doubles as a smoke test: a step
whose outcome is not the one DESIGN.md prescribes raises `DemoFailed`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from rich import box
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from assets import (
    Asset,
    Authorization,
    Code,
    Eca,
    Epa,
    Fa,
    Issue,
    Keypair,
    Outpoint,
    Transaction,
    Transfer,
    encode_transaction,
    sign,
    txid,
)
from ledger.blocks import SignedHead
from ledger.ledger import BlockResult, Ledger
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.store import Store
from simulation.scenario import Scenario, pay

MICRO = 10**6  # micro-units per unit of the currency
J_PER_KWH = 3_600_000

# The story's numbers, in DESIGN.md section 3's units.
COMMUNITY = "Sunny Lane energy community"
PRICE_CONSUMPTION = 300_000  # micro-units per kWh the DSO bills for net consumption
PRICE_PRODUCTION = 60_000  # micro-units per kWh the DSO credits for net production
SELLER_MAX_EPA_W = 5_000  # a 5 kWp rooftop PV system
SELLER_MAX_ECA_W = 10_000
BUYER_MAX_EPA_W = 0  # no generation: issued EPA must stay strictly below 0 W, so none at all
BUYER_MAX_ECA_W = 7_000
REGULATION_INTERVAL = 44  # 11:00-11:15 UTC on the epoch's day
DELIVERY_START = 48  # 12:00 UTC, around solar noon
DELIVERY_END = 51  # inclusive: four 15-minute intervals, 12:00-13:00 UTC
TRADE_POWER_W = 2_000
TRADE_PRICE = 500_000  # micro-units: 0.50 EUR for the whole trade
EXTRA_EPA_W = 3_000  # on top of TRADE_POWER_W: 5,000 W is not strictly below MAXEPA


class DemoFailed(Exception):
    """A step of the demo did not turn out as DESIGN.md says it must."""


@dataclass(frozen=True)
class Household:
    """A member's home: its smart meter and the addresses the story uses (all fresh keys)."""

    person: str
    meter: str  # meter id: a CUPS, as in Spain
    # The key the DSO registers for the meter; the meter signs its issues with it.
    meter_key: Keypair = field(default_factory=Keypair.generate)
    # Stands for one of the meter's anonymous deposit addresses.
    deposit: Keypair = field(default_factory=Keypair.generate)
    # Fresh addresses of the member: one the meter issues to, one the trade pays to.
    issued_to: Keypair = field(default_factory=Keypair.generate)
    paid_to: Keypair = field(default_factory=Keypair.generate)


def run_demo(console: Console) -> None:
    """Run the demo on a fresh ledger in a temporary directory, telling it on `console`.

    Raises DemoFailed if any step turns out other than the design prescribes.
    """
    scenario = Scenario(name=COMMUNITY)
    with tempfile.TemporaryDirectory(prefix="petra-demo-") as directory:
        store = Store(f"sqlite:///{Path(directory) / 'ledger.sqlite'}")
        try:
            ledger = Ledger(store, scenario.genesis, sequencer_key=scenario.sequencer)
            Demo(console, ledger, scenario).run()
        finally:
            store.close()


def short(value: bytes) -> str:
    """The first 12 hex digits: enough to tell ids and keys apart on screen."""
    return value.hex()[:12]


def clock(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%H:%M")


def decimal(value: Fraction, places: int = 2) -> str:
    """`value` with `places` decimals, for display only (money is never a float)."""
    return f"{Decimal(value.numerator) / Decimal(value.denominator):.{places}f}"


def kwh(joules: int) -> str:
    energy = Fraction(joules, J_PER_KWH)
    return f"{energy.numerator if energy.denominator == 1 else decimal(energy, 3)} kWh"


class Demo:
    """The story: a chain, its ledger and two households, Ana who sells and Ben who buys."""

    def __init__(self, console: Console, ledger: Ledger, scenario: Scenario) -> None:
        self.console = console
        self.ledger = ledger
        self.scenario = scenario
        self.genesis = scenario.genesis
        self.seller = Household("Ana", "ES0031400000000001AA")
        self.buyer = Household("Ben", "ES0031400000000002AB")
        self.epa = Epa(TRADE_POWER_W, DELIVERY_START, DELIVERY_END)
        self.eca = Eca(TRADE_POWER_W, DELIVERY_START, DELIVERY_END)
        self.fa = Fa(TRADE_PRICE)
        self.energy_j = TRADE_POWER_W * (DELIVERY_END - DELIVERY_START + 1) * scenario.interval_s
        self._after_heading = True  # no blank line before the first paragraph

    # ------------------------------------------------------------ words and numbers

    def heading(self, title: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{title}[/bold]", align="left")
        self._after_heading = True

    def say(self, what: RenderableType) -> None:
        """Print one paragraph, table or group, a blank line apart from the one before."""
        if not self._after_heading:
            self.console.print()
        self._after_heading = False
        self.console.print(what, highlight=False)

    def money(self, micro_units: int) -> str:
        currency = self.genesis.currency
        return f"{micro_units:,} micro-units ({decimal(Fraction(micro_units, MICRO))} {currency})"

    def per_kwh(self, micro_units_per_kwh: Fraction | int) -> str:
        return f"{decimal(Fraction(micro_units_per_kwh) / MICRO)} {self.genesis.currency}/kWh"

    def span(self, start: int, end: int) -> str:
        """The wall-clock span of intervals `start` to `end` (inclusive)."""
        first = clock(self.genesis.interval_start(start))
        return f"{first}-{clock(self.genesis.interval_start(end + 1))} UTC"

    def intervals(self, start: int, end: int) -> str:
        """Intervals `start` to `end` (inclusive) with their wall-clock span."""
        what = f"interval {start}" if start == end else f"intervals {start}-{end}"
        return f"{what} ({self.span(start, end)})"

    def asset(self, asset: Asset) -> str:
        """A compact description of `asset`, for tables."""
        if isinstance(asset, Fa):
            currency = self.genesis.currency
            return f"FA {asset.amount:,} ({decimal(Fraction(asset.amount, MICRO))} {currency})"
        return f"{asset.kind} {asset.power:,} W, intervals {asset.start}-{asset.end}"

    def table(self, *columns: str) -> Table:
        table = Table(box=box.SIMPLE, show_edge=False, header_style="bold")
        for column in columns:
            table.add_column(column, no_wrap=True)
        return table

    # ------------------------------------------------------------ submitting

    def submit(self, at: int, *txs: Transaction) -> BlockResult:
        """Offer `txs` to the ledger as one block at unix time `at`."""
        result = self.ledger.append_block([encode_transaction(tx) for tx in txs], at)
        for tx, outcome in zip(txs, result.outcomes, strict=True):
            if outcome.txid != txid(tx):
                raise DemoFailed(f"the ledger reported on another transaction than {tx.type}")
        return result

    def accept(self, at: int, *named: tuple[str, Transaction]) -> SignedHead:
        """Submit named transactions as one block at `at`; each must be accepted."""
        result = self.submit(at, *(tx for _, tx in named))
        for (name, tx), outcome in zip(named, result.outcomes, strict=True):
            if not outcome.accepted:
                raise DemoFailed(
                    f"{name} ({tx.type} {short(txid(tx))}) was rejected with "
                    f"{outcome.code}: {outcome.message}; the demo expected it to be accepted"
                )
        if result.head is None:
            raise DemoFailed("the ledger accepted the transactions but made no block")
        header = result.head.header
        lines = [
            f"[bold]Block {header.height}[/bold] at {clock(at)} UTC "
            f"(interval {self.genesis.interval_at(at)}), tree size {header.tree_size}:"
        ]
        lines += [
            f"  [green]accepted[/green]  {tx.type} {short(txid(tx))}  {escape(name)}"
            for name, tx in named
        ]
        self.say("\n".join(lines))
        return result.head

    def reject(self, at: int, name: str, tx: Transaction, expected: Code) -> None:
        """Submit `tx` alone at `at`; it must be rejected with `expected`."""
        size = self.ledger.size
        outcome = self.submit(at, tx).outcomes[0]
        if outcome.code is not expected:
            got = "accepted" if outcome.accepted else f"rejected with {outcome.code}"
            raise DemoFailed(
                f"{name} ({tx.type} {short(txid(tx))}) was {got} ({outcome.message}); "
                f"the demo expected the ledger to reject it with {expected}"
            )
        if self.ledger.size != size:
            raise DemoFailed(f"the rejected {name} changed the ledger")
        self.say(
            f"Submitted alone at {clock(at)} UTC (interval {self.genesis.interval_at(at)}):\n"
            f"  [red]rejected[/red]  {tx.type} {short(txid(tx))}  {escape(name)}\n"
            f"  code:    [bold]{outcome.code}[/bold]"
        )
        # One line however long, so that the ids in it stay whole (and greppable) in logs.
        self.console.print(
            f"  message: {outcome.message}", markup=False, highlight=False, soft_wrap=True
        )
        self.say(
            "Nothing else was in that batch, so no block was made: the ledger still holds "
            f"{size} transactions."
        )

    # ------------------------------------------------------------ the story

    def run(self) -> None:
        self.say(
            f"[bold]PETra demo[/bold]: two homes of the {COMMUNITY} trade an hour of rooftop "
            "solar power. The ledger is real (a temporary SQLite file), so are the Ed25519 "
            "signatures, and every outcome below is the ledger's own verdict."
        )
        self.step_genesis()
        self.step_regulate()
        seller_issue, buyer_issue = self.step_issue()
        trade = self.step_trade(seller_issue, buyer_issue)
        self.step_deposit(trade)
        self.step_double_spend(seller_issue)
        self.step_over_limit()
        self.step_audit(trade)
        self.heading("Done")
        self.say(
            "One trade and two deposits accepted, a double spend and an over-limit issue "
            "rejected, every signed head and proof verified. The temporary ledger is deleted."
        )

    def step_genesis(self) -> None:
        genesis = self.genesis
        epoch = datetime.fromtimestamp(genesis.epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
        self.heading("1. Genesis: the community's founding document")
        self.say(
            "The DSO (the grid operator) founds the chain. The genesis fixes the length of a "
            "trading interval, the instant interval 0 starts (the epoch), the currency, and "
            "the keys allowed to regulate (DSO) and to sign blocks (sequencer). Its hash, the "
            "genesis id, is part of every transaction, so a transaction made for another "
            "community is refused here."
        )
        table = Table(box=None, show_header=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("community", genesis.name)
        table.add_row("interval length", f"{genesis.interval_s} s (15 minutes)")
        table.add_row("epoch", f"{genesis.epoch} ({epoch})")
        table.add_row("currency", f"{genesis.currency}, counted in micro-units (1 EUR = 10^6)")
        table.add_row("DSO key", short(self.scenario.dso.public_key))
        table.add_row("sequencer key", short(self.scenario.sequencer.public_key))
        table.add_row("genesis id", short(self.scenario.chain))
        self.say(table)
        self.say(
            f"Interval k covers [epoch + k*{genesis.interval_s} s, epoch + (k+1)*"
            f"{genesis.interval_s} s): assets name intervals by number, so interval "
            f"{DELIVERY_START} is {self.span(DELIVERY_START, DELIVERY_START)}."
        )

    def step_regulate(self) -> None:
        seller, buyer = self.seller, self.buyer
        limits = (
            (seller, SELLER_MAX_EPA_W, SELLER_MAX_ECA_W),
            (buyer, BUYER_MAX_EPA_W, BUYER_MAX_ECA_W),
        )
        at = self.scenario.time_in(REGULATION_INTERVAL, 5 * 60)
        regulation = self.scenario.regulate(
            time=REGULATION_INTERVAL,
            authorize=[Authorization(h.meter, h.meter_key.public_key, e, c) for h, e, c in limits],
            price_consumption=PRICE_CONSUMPTION,
            price_production=PRICE_PRODUCTION,
        )
        self.heading("2. The DSO authorizes two smart meters and sets prices")
        self.say(
            "Only smart meters the DSO has authorized may issue assets, each signing with the "
            "key registered for it, and only within its limits: the production power it has "
            "issued for any interval must stay strictly below its MAXEPA, the consumption "
            "power strictly below its MAXECA."
        )
        self.say(
            f"Ana's home has {SELLER_MAX_EPA_W // 1000} kWp of rooftop PV, so her meter may "
            f"issue production below {SELLER_MAX_EPA_W:,} W; Ben's home has none, so with "
            f"MAXEPA {BUYER_MAX_EPA_W} W his meter can issue no production at all."
        )
        table = self.table("member", "meter id", "meter key", "MAXEPA", "MAXECA")
        for home, max_epa, max_eca in limits:
            table.add_row(
                home.person,
                home.meter,
                short(home.meter_key.public_key),
                f"{max_epa:,} W",
                f"{max_eca:,} W",
            )
        self.say(table)
        self.say(
            "The same regulate transaction sets the prices the meters will bill at: "
            f"{PRICE_CONSUMPTION:,} micro-units per kWh ({self.per_kwh(PRICE_CONSUMPTION)}) "
            f"for net consumption, {PRICE_PRODUCTION:,} ({self.per_kwh(PRICE_PRODUCTION)}) "
            "for net production."
        )
        self.say(
            f"The DSO sends it at {clock(at)} UTC, in interval {REGULATION_INTERVAL}, with "
            f"time = {REGULATION_INTERVAL}. A regulation may not name a past interval, and it "
            "governs only the intervals strictly after its time, here from "
            f"{self.intervals(REGULATION_INTERVAL + 1, REGULATION_INTERVAL + 1)} on: every "
            "rule is on the ledger before the first interval it applies to."
        )
        self.accept(at, ("the DSO's regulation", regulation))
        schedule = self.ledger.state.schedule
        if schedule.meter_at(seller.meter, REGULATION_INTERVAL) is not None:
            raise DemoFailed(f"the regulation is in force at its own time {REGULATION_INTERVAL}")
        status = schedule.meter_at(seller.meter, REGULATION_INTERVAL + 1)
        prices = schedule.prices_at(REGULATION_INTERVAL + 1)
        if status is None or status.max_epa != SELLER_MAX_EPA_W:
            raise DemoFailed(f"{seller.meter} is not authorized at {REGULATION_INTERVAL + 1}")
        if (prices.consumption, prices.production) != (PRICE_CONSUMPTION, PRICE_PRODUCTION):
            raise DemoFailed(f"the prices in force at {REGULATION_INTERVAL + 1} are {prices}")
        self.say(
            f"The ledger's schedule agrees: in interval {REGULATION_INTERVAL} Ana's meter is "
            f"still unknown; from interval {REGULATION_INTERVAL + 1} on it is authorized with "
            f"MAXEPA {status.max_epa:,} W and the prices are in force."
        )

    def step_issue(self) -> tuple[Issue, Issue]:
        seller, buyer = self.seller, self.buyer
        at = self.scenario.time_in(REGULATION_INTERVAL + 1, 5 * 60)
        seller_issue = self.scenario.issue(
            seller.meter, seller.meter_key, 1, [pay(self.epa, seller.issued_to)]
        )
        buyer_issue = self.scenario.issue(
            buyer.meter,
            buyer.meter_key,
            1,
            [pay(self.eca, buyer.issued_to), pay(self.fa, buyer.issued_to)],
        )
        n_intervals = DELIVERY_END - DELIVERY_START + 1
        joules = self.energy_j
        self.heading("3. The meters issue the assets to be traded")
        self.say(
            f"Ana expects her panels to produce more than her home uses around noon. She "
            f"offers {TRADE_POWER_W:,} W during {self.intervals(DELIVERY_START, DELIVERY_END)}: "
            f"{TRADE_POWER_W:,} W x {n_intervals} intervals x {self.genesis.interval_s} s = "
            f"{joules:,} J = {kwh(joules)}. Her meter issues an EPA (energy production asset: "
            "the right to feed that power into the grid in those intervals) to a fresh "
            "address of hers, a key pair used for nothing else."
        )
        self.say(
            "Ben wants to buy it. His meter issues the matching ECA (energy consumption asset: "
            "the right to draw that power) and an FA (financial asset) of "
            f"{self.money(TRADE_PRICE)} to pay with, to a fresh address of his. Money his "
            "meter issues is added to his bill: Ben pays through the DSO."
        )
        table = self.table("issue", "by", "asset", "to address")
        for home, tx in ((seller, seller_issue), (buyer, buyer_issue)):
            for n, output in enumerate(tx.outputs):
                first = n == 0
                table.add_row(
                    short(txid(tx)) if first else "",
                    f"{home.person}'s meter" if first else "",
                    self.asset(output.asset),
                    short(output.address),
                )
        self.say(table)
        self.say(
            "The ledger accepts an issue only if it is signed by the meter's registered key, "
            "its nonce is above the meter's last one (both are their meters' first issues, "
            "nonce 1), and the meter's issued power stays strictly below its limit in every "
            f"interval: {TRADE_POWER_W:,} W < "
            f"{SELLER_MAX_EPA_W:,} W (Ana's MAXEPA) and {TRADE_POWER_W:,} W < "
            f"{BUYER_MAX_ECA_W:,} W (Ben's MAXECA)."
        )
        self.accept(
            at,
            ("Ana's meter issues the EPA", seller_issue),
            ("Ben's meter issues the ECA and FA", buyer_issue),
        )
        self.say(
            "In the full system both would now mix these assets with other members' "
            "(CoinShuffle), so that nobody can link them to a meter, and then meet "
            "anonymously at the bid store over Tor. The demo goes straight to the trade."
        )
        return seller_issue, buyer_issue

    def step_trade(self, seller_issue: Issue, buyer_issue: Issue) -> Transfer:
        seller, buyer = self.seller, self.buyer
        at = self.scenario.time_in(REGULATION_INTERVAL + 2, 5 * 60)
        inputs = [
            (Outpoint(txid(seller_issue), 0), seller_issue.outputs[0], seller),
            (Outpoint(txid(buyer_issue), 0), buyer_issue.outputs[0], buyer),
            (Outpoint(txid(buyer_issue), 1), buyer_issue.outputs[1], buyer),
        ]
        outputs: list[tuple[Asset, Household]] = [
            (self.epa, buyer),
            (self.fa, seller),
            (self.eca, seller),
        ]
        proposal = self.scenario.transfer(
            [outpoint for outpoint, _, _ in inputs],
            [pay(asset, home.paid_to) for asset, home in outputs],
        )
        half_signed = sign(proposal, seller.issued_to)  # Ana signs for her input ...
        trade = sign(half_signed, buyer.issued_to)  # ... Ben checks it and signs for his two
        if not isinstance(trade, Transfer) or len(trade.signatures) != 2:
            raise DemoFailed("the trade should be a transfer with two signatures")
        joules = self.energy_j
        price = Fraction(TRADE_PRICE * J_PER_KWH, joules)  # micro-units per kWh
        self.heading("4. The trade: one transfer, built and signed by both")
        self.say(
            "Ana and Ben build ONE transfer together: Ana's EPA goes to Ben, Ben's FA and ECA "
            "go to Ana, each to a fresh address again. The whole swap happens or none of it, "
            "so neither has to trust the other. The ECA travels with the money: it is never "
            "billed, it only keeps consumption within the grid's safety limits."
        )
        table = self.table("", "asset", "address", "owner")
        for n, (_, output, home) in enumerate(inputs):
            table.add_row(
                f"input {n}", self.asset(output.asset), short(output.address), home.person
            )
        for n, (output, (_, home)) in enumerate(zip(trade.outputs, outputs, strict=True)):
            table.add_row(
                f"output {n}", self.asset(output.asset), short(output.address), home.person
            )
        self.say(table)
        self.say(
            "The transfer's id hashes its inputs and outputs but not its signatures. Ana "
            "signs it first; Ben checks that it gives him the EPA, then adds his signature "
            "over the same id. Neither signature fits any other transfer. The ledger requires "
            "exactly one signature from each owner of an input, so this transfer carries "
            f"{len(trade.signatures)}:"
        )
        signers = self.table("signer address", "who", "signature")
        for signature in trade.signatures:
            if signature.public_key == seller.issued_to.public_key:
                who = "Ana, owner of input 0"
            else:
                who = "Ben, owner of inputs 1 and 2"
            signers.add_row(short(signature.public_key), who, f"{short(signature.signature)}...")
        self.say(signers)
        self.accept(at, ("the trade", trade))
        self.say(
            f"Ana sells {kwh(joules)} for {self.money(TRADE_PRICE)}, that is "
            f"{self.per_kwh(price)}: more than the {self.per_kwh(PRICE_PRODUCTION)} the DSO "
            f"credits for production. Ben pays {self.per_kwh(price)} instead of the "
            f"{self.per_kwh(PRICE_CONSUMPTION)} consumption price."
        )
        return trade

    def step_deposit(self, trade: Transfer) -> None:
        seller, buyer = self.seller, self.buyer
        at = self.scenario.time_in(REGULATION_INTERVAL + 3, 5 * 60)
        trade_id = txid(trade)
        seller_deposit = self.scenario.transfer(
            [Outpoint(trade_id, 1), Outpoint(trade_id, 2)],
            [pay(self.fa, seller.deposit), pay(self.eca, seller.deposit)],
            seller.paid_to,
        )
        buyer_deposit = self.scenario.transfer(
            [Outpoint(trade_id, 0)], [pay(self.epa, buyer.deposit)], buyer.paid_to
        )
        per_interval_j = TRADE_POWER_W * self.genesis.interval_s
        self.heading("5. Deposits: each hands what it received to its own meter")
        self.say(
            "A meter bills its owner, and it learns of the trade through deposits: Ana sends "
            "the FA and the ECA to a deposit address of her meter, Ben sends the EPA to a "
            "deposit address of his. Deposit addresses are fresh keys that only the meter "
            "knows to be its own, so the ledger does not show whose meter received what."
        )
        self.accept(
            at,
            ("Ana deposits the FA and ECA", seller_deposit),
            ("Ben deposits the EPA", buyer_deposit),
        )
        table = self.table("deposit address", "of", "now holds")
        expected = {seller.person: [self.fa, self.eca], buyer.person: [self.epa]}
        for home in (seller, buyer):
            unspent = self.ledger.store.unspent(home.deposit.public_key)
            held = [stored.output.asset for stored in unspent]
            if held != expected[home.person]:
                raise DemoFailed(f"the deposit address of {home.meter} holds {held}")
            for n, asset in enumerate(held):
                table.add_row(
                    short(home.deposit.public_key) if n == 0 else "",
                    f"{home.person}'s meter" if n == 0 else "",
                    self.asset(asset),
                )
        self.say(table)
        self.say(
            "The meters will bill by DESIGN.md section 7. Energy, in each of intervals "
            f"{DELIVERY_START}-{DELIVERY_END}: Ana's meter issued her {TRADE_POWER_W:,} W of "
            f"EPA, so it adds {TRADE_POWER_W:,} W x {self.genesis.interval_s} s = "
            f"{per_interval_j:,} J back to her measured energy: the power she sold earns "
            f"nothing from the DSO (Ben pays for it). Ben's meter holds {TRADE_POWER_W:,} W "
            f"of deposited EPA, so it subtracts {per_interval_j:,} J from his: the power he "
            "bought is not charged again at the consumption price. Money, in the interval it "
            "moves: the FA Ben's meter issued is added to Ben's bill, the FA deposited to "
            "Ana's meter is deducted from Ana's. The ECA is not billed."
        )

    def step_double_spend(self, seller_issue: Issue) -> None:
        at = self.scenario.time_in(REGULATION_INTERVAL + 3, 7 * 60)
        again = self.scenario.transfer(
            [Outpoint(txid(seller_issue), 0)],
            [pay(self.epa, Keypair.generate())],
            self.seller.issued_to,
        )
        self.heading("6. A double spend is rejected")
        self.say(
            "Suppose Ana tries to sell the same EPA a second time, to someone else, with a "
            "transfer properly signed by the EPA's former owner. That energy is Ben's now: "
            "an output can be spent only once."
        )
        self.reject(at, "Ana re-sells the traded EPA", again, Code.DOUBLE_SPEND)

    def step_over_limit(self) -> None:
        seller = self.seller
        at = self.scenario.time_in(REGULATION_INTERVAL + 3, 9 * 60)
        extra = Epa(EXTRA_EPA_W, DELIVERY_START, DELIVERY_END)
        too_much = self.scenario.issue(
            seller.meter, seller.meter_key, 2, [pay(extra, Keypair.generate())]
        )
        total = TRADE_POWER_W + EXTRA_EPA_W
        self.heading("7. Issuing beyond the meter's limit is rejected")
        self.say(
            f"Ana's meter tries to issue another {EXTRA_EPA_W:,} W of EPA for "
            f"{self.intervals(DELIVERY_START, DELIVERY_END)}. With the {TRADE_POWER_W:,} W "
            f"already issued that makes {total:,} W per interval, not strictly below her "
            f"MAXEPA of {SELLER_MAX_EPA_W:,} W. The limits are how the DSO keeps trades "
            "within what the grid can carry."
        )
        self.reject(at, "Ana's meter issues more EPA", too_much, Code.LIMIT_EXCEEDED)

    def step_audit(self, trade: Transfer) -> None:
        head = self.ledger.head
        earlier = self.ledger.store.block(2)
        if head is None or earlier is None:
            raise DemoFailed("the ledger should have four blocks")
        header = head.header
        self.heading("8. Auditing: signed tree heads and Merkle proofs")
        self.say(
            "Each block ends with a signed tree head: the root of an RFC 9162 Merkle tree over "
            "every transaction so far, signed by the sequencer. With heads and proofs, any "
            "member can check that a transaction is in the log and that the log only ever "
            "grew, without trusting the ledger's operator."
        )
        table = self.table("block", "time", "tree size", "root", "sequencer signature")
        for signed in self.ledger.store.heads():
            if not signed.verifies(self.genesis.sequencer_keys):
                raise DemoFailed(f"the head of block {signed.header.height} does not verify")
            table.add_row(
                str(signed.header.height),
                f"{clock(signed.header.time)} UTC",
                str(signed.header.tree_size),
                short(signed.header.root),
                "verified",
            )
        self.say(table)
        if head.sequencer_key != self.scenario.sequencer.public_key:
            raise DemoFailed("the final head is not signed by the genesis's sequencer key")
        self.say(
            f"The final head: height {header.height}, tree size {header.tree_size}, root "
            f"{header.root.hex()}. Its signature is [green]verified[/green] under the "
            f"genesis's sequencer key {short(head.sequencer_key)}."
        )

        trade_id = txid(trade)
        stored = self.ledger.store.transaction(trade_id)
        leaf = encode_transaction(trade)  # the leaf is the transaction with its signatures
        if stored is None or stored.body != leaf:
            raise DemoFailed("the trade is not stored as it was submitted")
        index, size = stored.seq, header.tree_size
        proof = self.ledger.inclusion_proof(index, size)
        if not verify_inclusion(leaf_hash(leaf), index, size, proof, header.root):
            raise DemoFailed("the trade's inclusion proof does not verify")
        forged = leaf.replace(
            f'"amount":{TRADE_PRICE}'.encode(), f'"amount":{TRADE_PRICE // 10}'.encode()
        )
        if forged == leaf or verify_inclusion(leaf_hash(forged), index, size, proof, header.root):
            raise DemoFailed("a forged trade passed the inclusion proof")
        self.say(
            f"Inclusion: the trade {short(trade_id)} is leaf {index} of {size}. The ledger "
            f"serves a proof of {len(proof)} hashes ({', '.join(short(p) for p in proof)}); "
            "hashing the trade's bytes up through them gives the head's root, so the "
            "inclusion proof is [green]verified[/green]. The same proof fails for a copy of "
            f"the trade whose FA is changed to {self.money(TRADE_PRICE // 10)}."
        )

        old = earlier.header
        consistency = self.ledger.consistency_proof(old.tree_size, size)
        if not verify_consistency(old.tree_size, size, old.root, header.root, consistency):
            raise DemoFailed("the consistency proof between the heads does not verify")
        self.say(
            f"Consistency: Ben kept the head of block {old.height} (tree size {old.tree_size}, "
            f"root {short(old.root)}) from when his assets were issued. A proof of "
            f"{len(consistency)} hashes shows that the tree of size {size} extends that tree: "
            "nothing was removed or rewritten, only appended. The consistency proof is "
            "[green]verified[/green]."
        )
