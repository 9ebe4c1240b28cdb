"""DESIGN.md section 5 against the real ledger and store: every rule, every rejection code."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Iterator

import pytest

from assets import (
    Authorization,
    Code,
    Eca,
    Epa,
    Fa,
    Issue,
    Keypair,
    Outpoint,
    Output,
    Transaction,
    Transfer,
    encode_transaction,
    txid,
)
from ledger import Ledger, Outcome
from ledger.ledger import UNSPENT_CACHE
from ledger.pipeline import BlockPipeline, PipelineStopped
from ledger.schedule import Prices
from ledger.store import OutputKey, OutputRow, Store
from simulation.scenario import Scenario, pay

MAX_EPA = 5_000
MAX_ECA = 4_000


@dataclasses.dataclass
class Community:
    """A ledger with two authorized meters, in force from interval 1; the clock at interval 1."""

    scenario: Scenario
    ledger: Ledger
    meter_a: Keypair
    meter_b: Keypair
    alice: Keypair
    bob: Keypair
    nonce: int = 0
    interval: int = 1

    def submit(self, *txs: Transaction | bytes) -> list[Outcome]:
        raws = [tx if isinstance(tx, bytes) else encode_transaction(tx) for tx in txs]
        time = self.scenario.time_in(self.interval)
        return self.ledger.append_block(raws, time).outcomes

    def codes(self, *txs: Transaction | bytes) -> list[Code | None]:
        return [o.code for o in self.submit(*txs)]

    def issue(self, *outputs: Output, meter: str = "meter-a", key: Keypair | None = None) -> Issue:
        self.nonce += 1
        return self.scenario.issue(meter, key or self.meter_a, self.nonce, outputs)

    def funded(self, *outputs: Output) -> Outpoint:
        """Issue `outputs` and return the first outpoint, checking it was accepted."""
        tx = self.issue(*outputs)
        assert self.codes(tx) == [None]
        return Outpoint(txid(tx), 0)


def _regulation(scenario: Scenario, meter_a: Keypair, meter_b: Keypair) -> Transaction:
    """The community's: its two meters authorized from interval 1, and its prices."""
    return scenario.regulate(
        0,
        authorize=[
            Authorization("meter-a", meter_a.public_key, MAX_EPA, MAX_ECA),
            Authorization("meter-b", meter_b.public_key, MAX_EPA, MAX_ECA),
        ],
        price_consumption=250_000,
        price_production=90_000,
    )


@pytest.fixture(params=[UNSPENT_CACHE, 0], ids=["cached", "uncached"])
def community(store_url: str, request: pytest.FixtureRequest) -> Iterator[Community]:
    """Every rule twice: with the ledger's cache of unspent outputs, where a transfer's inputs
    are found in memory, and without it, where they are read from the store."""
    scenario = Scenario()
    meter_a, meter_b = Keypair.generate(), Keypair.generate()
    ledger = Ledger(Store(store_url), scenario.genesis, scenario.sequencer, request.param)
    result = ledger.append_block(
        [encode_transaction(_regulation(scenario, meter_a, meter_b))], scenario.time_in(0)
    )
    assert result.outcomes[0].accepted
    yield Community(scenario, ledger, meter_a, meter_b, Keypair.generate(), Keypair.generate())
    ledger.store.close()


# ------------------------------------------------------------------ transfer


def test_a_balanced_signed_transfer_is_accepted_and_moves_ownership(community: Community) -> None:
    c = community
    source = c.funded(pay(Epa(3_000, 2, 5), c.alice))
    trade = c.scenario.transfer(
        [source], [pay(Epa(1_000, 2, 5), c.bob), pay(Epa(2_000, 2, 5), c.alice)], c.alice
    )
    assert c.codes(trade) == [None]
    store = c.ledger.store
    assert [s.output for s in store.unspent(c.bob.public_key)] == [pay(Epa(1_000, 2, 5), c.bob)]
    assert [s.outpoint for s in store.unspent(c.alice.public_key)] == [Outpoint(txid(trade), 1)]


def test_assets_split_and_merge_in_power_and_in_time(community: Community) -> None:
    c = community
    first = c.funded(pay(Epa(1_000, 10, 19), c.alice))
    second = c.funded(pay(Epa(1_000, 10, 19), c.alice))
    merged = c.scenario.transfer(
        [first, second],
        [
            pay(Epa(2_000, 10, 14), c.bob),  # two assets merged in power, split in time
            pay(Epa(1_500, 15, 19), c.bob),
            pay(Epa(500, 15, 19), c.alice),
        ],
        c.alice,
    )
    assert c.codes(merged) == [None]


def test_unknown_input(community: Community) -> None:
    c = community
    missing = c.scenario.transfer([Outpoint(b"\x07" * 32, 0)], [pay(Fa(1), c.bob)], c.alice)
    source = c.funded(pay(Fa(10), c.alice))
    past_end = c.scenario.transfer([Outpoint(source.txid, 1)], [pay(Fa(10), c.bob)], c.alice)
    huge_index = c.scenario.transfer([Outpoint(source.txid, 10**9)], [pay(Fa(10), c.bob)], c.alice)
    beyond_key = c.scenario.transfer([Outpoint(source.txid, 2**40)], [pay(Fa(10), c.bob)], c.alice)
    spend = c.scenario.transfer([source], [pay(Fa(10), c.bob)], c.alice)
    assert c.codes(missing, past_end, huge_index, beyond_key, spend) == [Code.UNKNOWN_INPUT] * 4 + [
        None
    ]


def test_double_spend_across_blocks_within_a_block_and_within_a_transaction(
    community: Community,
) -> None:
    c = community
    source = c.funded(pay(Fa(10), c.alice))
    spend = c.scenario.transfer([source], [pay(Fa(10), c.bob)], c.alice)
    again = c.scenario.transfer([source], [pay(Fa(10), c.alice)], c.alice)
    assert c.codes(spend, again) == [None, Code.DOUBLE_SPEND]
    later = c.scenario.transfer([source], [pay(Fa(5), c.alice), pay(Fa(5), c.bob)], c.alice)
    assert c.codes(later) == [Code.DOUBLE_SPEND]
    other = c.funded(pay(Fa(10), c.alice))
    twice = c.scenario.transfer([other, other], [pay(Fa(20), c.bob)], c.alice)
    assert c.codes(twice) == [Code.DOUBLE_SPEND]


def test_bad_signature(community: Community) -> None:
    c = community
    source = c.funded(pay(Fa(10), c.alice))
    good = c.scenario.transfer([source], [pay(Fa(10), c.bob)], c.alice)
    flipped = bytes([good.signatures[0].signature[0] ^ 1]) + good.signatures[0].signature[1:]
    forged = dataclasses.replace(
        good, signatures=(dataclasses.replace(good.signatures[0], signature=flipped),)
    )
    assert c.codes(forged) == [Code.BAD_SIGNATURE]
    assert c.codes(good) == [None]  # the forgery changed nothing


def test_wrong_signers(community: Community) -> None:
    c = community
    mine = c.funded(pay(Fa(10), c.alice))
    theirs = c.funded(pay(Fa(10), c.bob))
    unsigned = Transfer(c.scenario.chain, (mine,), (pay(Fa(10), c.bob),))
    thief = c.scenario.transfer([mine], [pay(Fa(10), c.bob)], c.bob)  # valid signature, not owner
    extra = c.scenario.transfer([mine], [pay(Fa(10), c.bob)], c.alice, c.bob)
    missing = c.scenario.transfer([mine, theirs], [pay(Fa(20), c.bob)], c.alice)
    doubled = c.scenario.transfer([mine], [pay(Fa(10), c.bob)], c.alice, c.alice)
    assert c.codes(unsigned, thief, extra, missing, doubled) == [Code.WRONG_SIGNERS] * 5
    both = c.scenario.transfer([mine, theirs], [pay(Fa(20), c.alice)], c.bob, c.alice)
    assert c.codes(both) == [None]


def test_unbalanced(community: Community) -> None:
    c = community
    fa = c.funded(pay(Fa(10), c.alice))
    epa = c.funded(pay(Epa(1_000, 2, 5), c.alice))
    cases = [
        c.scenario.transfer([fa], [pay(Fa(11), c.bob)], c.alice),  # FA created
        c.scenario.transfer([fa], [pay(Fa(9), c.bob)], c.alice),  # FA destroyed
        c.scenario.transfer([epa], [pay(Epa(1_000, 2, 6), c.bob)], c.alice),  # one more interval
        c.scenario.transfer([epa], [pay(Epa(1_000, 2, 4), c.bob)], c.alice),  # one interval less
        c.scenario.transfer([epa], [pay(Epa(1_001, 2, 5), c.bob)], c.alice),  # one watt more
        c.scenario.transfer([epa], [pay(Eca(1_000, 2, 5), c.bob)], c.alice),  # EPA turned ECA
        c.scenario.transfer(  # right total power, wrong intervals
            [epa], [pay(Epa(2_000, 2, 3), c.bob)], c.alice
        ),
        c.scenario.transfer([epa], [pay(Fa(1_000), c.bob)], c.alice),  # energy turned money
    ]
    assert c.codes(*cases) == [Code.UNBALANCED] * len(cases)


# ------------------------------------------------------------------ issue


def test_issue_stays_strictly_below_the_limits(community: Community) -> None:
    c = community
    assert c.codes(c.issue(pay(Epa(MAX_EPA, 3, 3), c.alice))) == [Code.LIMIT_EXCEEDED]
    assert c.codes(c.issue(pay(Eca(MAX_ECA, 3, 3), c.alice))) == [Code.LIMIT_EXCEEDED]
    assert c.codes(c.issue(pay(Epa(MAX_EPA - 1, 3, 3), c.alice))) == [None]
    assert c.codes(c.issue(pay(Epa(1, 3, 3), c.alice))) == [Code.LIMIT_EXCEEDED]
    assert c.codes(c.issue(pay(Epa(1, 4, 9), c.alice))) == [None]  # other intervals are free
    # two outputs of one issue add up; FA is not limited by the ledger
    assert c.codes(
        c.issue(
            pay(Eca(1_999, 7, 8), c.alice), pay(Eca(2_000, 8, 9), c.bob), pay(Fa(10**12), c.bob)
        )
    ) == [None]
    assert c.codes(c.issue(pay(Eca(2_000, 20, 21), c.alice), pay(Eca(2_000, 21, 22), c.bob))) == [
        Code.LIMIT_EXCEEDED
    ]


def test_issued_power_counts_across_transactions_of_one_block(community: Community) -> None:
    c = community
    first = c.issue(pay(Epa(3_000, 5, 8), c.alice))
    second = c.issue(pay(Epa(2_000, 8, 9), c.bob))
    third = c.issue(pay(Epa(1_999, 9, 9), c.bob))
    assert c.codes(first, second, third) == [None, Code.LIMIT_EXCEEDED, None]


def test_the_limit_in_force_at_each_interval_applies(community: Community) -> None:
    c = community
    lower = c.scenario.regulate(
        5, authorize=[Authorization("meter-a", c.meter_a.public_key, 1_000, MAX_ECA)]
    )
    assert c.codes(lower) == [None]
    assert c.codes(c.issue(pay(Epa(2_000, 4, 5), c.alice))) == [None]  # old limit up to 5
    assert c.codes(c.issue(pay(Epa(2_000, 5, 6), c.alice))) == [Code.LIMIT_EXCEEDED]
    assert c.codes(c.issue(pay(Epa(999, 6, 100), c.alice))) == [None]


def test_intervals_before_the_authorization_have_no_allowance(community: Community) -> None:
    c = community
    assert c.codes(c.issue(pay(Epa(10, 0, 1), c.alice))) == [Code.LIMIT_EXCEEDED]


def test_meter_unknown(community: Community) -> None:
    c = community
    stranger = Keypair.generate()
    assert c.codes(c.issue(pay(Fa(1), c.alice), meter="meter-z", key=stranger)) == [
        Code.METER_UNKNOWN
    ]
    later = c.scenario.regulate(
        3, authorize=[Authorization("meter-z", stranger.public_key, 10, 10)]
    )
    assert c.codes(later) == [None]
    c.interval = 3  # authorized for intervals after 3 only
    assert c.codes(c.issue(pay(Fa(1), c.alice), meter="meter-z", key=stranger)) == [
        Code.METER_UNKNOWN
    ]
    c.interval = 4
    assert c.codes(c.issue(pay(Fa(1), c.alice), meter="meter-z", key=stranger)) == [None]


def test_meter_banned_now_and_for_banned_intervals(community: Community) -> None:
    c = community
    assert c.codes(c.scenario.regulate(4, ban=["meter-a"])) == [None]
    assert c.codes(c.issue(pay(Epa(10, 2, 4), c.alice))) == [None]
    assert c.codes(c.issue(pay(Epa(10, 4, 5), c.alice))) == [Code.METER_BANNED]
    c.interval = 5
    assert c.codes(c.issue(pay(Fa(1), c.alice))) == [Code.METER_BANNED]
    assert c.codes(c.issue(pay(Fa(1), c.bob), meter="meter-b", key=c.meter_b)) == [None]
    readmit = c.scenario.regulate(
        6, authorize=[Authorization("meter-a", c.meter_a.public_key, MAX_EPA, MAX_ECA)]
    )
    assert c.codes(readmit) == [None]
    c.interval = 7
    assert c.codes(c.issue(pay(Fa(1), c.alice))) == [None]


def test_issue_signed_by_another_key_is_bad_signature(community: Community) -> None:
    c = community
    assert c.codes(c.issue(pay(Fa(1), c.alice), key=c.meter_b)) == [Code.BAD_SIGNATURE]
    rotated = c.scenario.regulate(
        1, authorize=[Authorization("meter-a", c.meter_b.public_key, MAX_EPA, MAX_ECA)]
    )
    assert c.codes(rotated) == [None]
    c.interval = 2  # the new key is in force; the old one no longer is
    assert c.codes(c.issue(pay(Fa(1), c.alice), key=c.meter_a)) == [Code.BAD_SIGNATURE]
    assert c.codes(c.issue(pay(Fa(1), c.alice), key=c.meter_b)) == [None]


def test_stale_nonce(community: Community) -> None:
    c = community
    scenario = c.scenario
    assert c.codes(scenario.issue("meter-a", c.meter_a, 5, [pay(Fa(1), c.alice)])) == [None]
    same = scenario.issue("meter-a", c.meter_a, 5, [pay(Fa(2), c.alice)])
    lower = scenario.issue("meter-a", c.meter_a, 4, [pay(Fa(1), c.alice)])
    higher = scenario.issue("meter-a", c.meter_a, 9, [pay(Fa(1), c.alice)])
    assert c.codes(same, lower, higher) == [Code.STALE_NONCE, Code.STALE_NONCE, None]
    # nonces are per meter
    assert c.codes(scenario.issue("meter-b", c.meter_b, 1, [pay(Fa(1), c.alice)])) == [None]


def test_duplicate(community: Community) -> None:
    c = community
    tx = c.issue(pay(Fa(1), c.alice))
    assert c.codes(tx, tx) == [None, Code.DUPLICATE]
    assert c.codes(tx) == [Code.DUPLICATE]
    regulation = c.scenario.regulate(3, price_consumption=1)
    assert c.codes(regulation, regulation) == [None, Code.DUPLICATE]


def test_a_transfer_on_the_ledger_is_a_duplicate_and_another_spending_its_input_is_not(
    community: Community,
) -> None:
    """A transfer's id is found on the ledger through what spent its first input: the same
    transfer again is a duplicate, in its block, in a later one, and with two inputs; a
    different transfer of the same inputs is a double spend."""
    c = community
    first, second = c.funded(pay(Fa(5), c.alice)), c.funded(pay(Fa(7), c.alice))
    one = c.scenario.transfer([first], [pay(Fa(5), c.bob)], c.alice)
    assert c.codes(one, one) == [None, Code.DUPLICATE]
    assert c.codes(one) == [Code.DUPLICATE]
    other = c.scenario.transfer([first], [pay(Fa(4), c.bob), pay(Fa(1), c.alice)], c.alice)
    assert c.codes(other) == [Code.DOUBLE_SPEND]
    third = c.funded(pay(Fa(9), c.alice))
    two = c.scenario.transfer([second, third], [pay(Fa(16), c.bob)], c.alice)
    assert c.codes(two) == [None]
    assert c.codes(two) == [Code.DUPLICATE]
    # the same inputs in the other order make another transaction: a double spend
    swapped = c.scenario.transfer([third, second], [pay(Fa(16), c.bob)], c.alice)
    assert c.codes(swapped) == [Code.DOUBLE_SPEND]


def test_recent_unspent_outputs_are_read_from_memory_and_older_ones_from_the_store(
    store_url: str,
) -> None:
    """The cache holds the latest `unspent_cache` durable unspent outputs: a transfer of
    those reads none of its inputs from the store; an older output is read there; a spent
    output leaves the cache, so spending it again is found a double spend in the store."""
    scenario = Scenario()
    ledger = Ledger(Store(store_url), scenario.genesis, scenario.sequencer, unspent_cache=2)
    meter_a, meter_b, alice, bob = (Keypair.generate() for _ in range(4))
    c = Community(scenario, ledger, meter_a, meter_b, alice, bob)
    c.interval = 0
    assert c.codes(_regulation(scenario, c.meter_a, c.meter_b)) == [None]
    c.interval = 1
    asked: list[set[OutputKey]] = []
    prefetch = c.ledger.store.prefetch

    def spy(
        txids: Collection[bytes], inputs: Collection[OutputKey]
    ) -> tuple[set[bytes], dict[OutputKey, OutputRow]]:
        asked.append(set(inputs))
        return prefetch(txids, inputs)

    c.ledger.store.prefetch = spy  # type: ignore[method-assign]
    old = c.funded(pay(Fa(3), c.alice))
    recent = c.funded(pay(Fa(5), c.alice), pay(Fa(7), c.alice))  # the cache's two outputs
    asked.clear()

    spend = c.scenario.transfer([recent], [pay(Fa(5), c.bob)], c.alice)
    assert c.codes(spend) == [None]
    assert asked == [set()]
    spend_old = c.scenario.transfer([old], [pay(Fa(3), c.bob)], c.alice)
    assert c.codes(spend_old) == [None]
    assert asked[-1] == {(old.txid, 0)}
    again = c.scenario.transfer([recent], [pay(Fa(4), c.bob), pay(Fa(1), c.alice)], c.alice)
    assert c.codes(again) == [Code.DOUBLE_SPEND]
    assert asked[-1] == {(recent.txid, 0)}
    assert c.codes(spend) == [Code.DUPLICATE]
    # an output made and spent in one block is not cached as unspent
    hop = c.scenario.transfer([Outpoint(recent.txid, 1)], [pay(Fa(7), c.bob)], c.alice)
    onward = c.scenario.transfer([Outpoint(txid(hop), 0)], [pay(Fa(7), c.alice)], c.bob)
    assert c.codes(hop, onward) == [None, None]
    back = c.scenario.transfer([Outpoint(txid(hop), 0)], [pay(Fa(7), c.bob)], c.bob)
    assert c.codes(back) == [Code.DOUBLE_SPEND]
    c.ledger.store.close()


# ------------------------------------------------------------------ regulate


def test_regulation_in_past_and_by_a_stranger(community: Community) -> None:
    c = community
    c.interval = 5
    assert c.codes(c.scenario.regulate(4, price_consumption=1)) == [Code.REGULATION_IN_PAST]
    assert c.codes(c.scenario.regulate(5, price_consumption=1)) == [None]
    stranger = c.scenario.regulate(9, ban=["meter-b"], key=Keypair.generate())
    assert c.codes(stranger) == [Code.BAD_SIGNATURE]


def test_prices_in_force_follow_the_last_regulation_before_each_interval(
    community: Community,
) -> None:
    c = community
    schedule = c.ledger.state.schedule
    assert c.codes(
        c.scenario.regulate(10, price_consumption=300_000),
        c.scenario.regulate(20, price_production=50_000),
        c.scenario.regulate(15, price_consumption=400_000),  # later on the ledger: overrides
    ) == [None, None, None]
    assert (schedule.prices_at(1).consumption, schedule.prices_at(1).production) == (
        250_000,
        90_000,
    )
    assert schedule.prices_at(10).consumption == 250_000  # in force strictly after `time`
    assert schedule.prices_at(11).consumption == 300_000
    assert schedule.prices_at(16).consumption == 400_000
    assert schedule.prices_at(21) == Prices(400_000, 50_000)


# ------------------------------------------------------------------ wire-level


def test_wire_level_rejections_reach_the_ledger(community: Community) -> None:
    c = community
    other = Scenario()
    tx = c.issue(pay(Fa(1), c.alice))
    foreign = dataclasses.replace(tx, chain=other.chain)
    raw = encode_transaction(tx)
    assert (
        c.codes(b"{", raw.replace(b'"amount":1', b'"amount":1.5'), raw + b" ")
        == [Code.MALFORMED] * 3
    )
    assert c.codes(foreign) == [Code.WRONG_CHAIN]
    wire = json.loads(raw)
    wire["outputs"] = wire["outputs"] * 600
    assert c.codes(json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()) == [
        Code.TOO_LARGE
    ]
    assert c.codes(tx) == [None]  # nothing was half-applied


def test_a_block_of_only_rejections_adds_no_block(community: Community) -> None:
    c = community
    height = c.ledger.head.header.height if c.ledger.head else 0
    result = c.ledger.append_block([b"nonsense"], c.scenario.time_in(1))
    assert result.head is None
    assert c.ledger.store.head() == c.ledger.head
    assert c.ledger.head is not None and c.ledger.head.header.height == height


def test_block_time_never_goes_backwards(community: Community) -> None:
    c = community
    with pytest.raises(ValueError, match="before the previous block"):
        c.ledger.append_block([], c.scenario.time_in(0) - 1)


def test_a_restarted_ledger_has_the_same_state(community: Community) -> None:
    c = community
    c.submit(c.issue(pay(Epa(4_000, 3, 3), c.alice)))
    restarted = Ledger(Store(c.ledger.store.url), c.scenario.genesis, c.scenario.sequencer)
    assert restarted.head == c.ledger.head
    assert restarted.state.nonces == c.ledger.state.nonces
    c.ledger = restarted
    assert c.codes(c.issue(pay(Epa(1_000, 3, 3), c.alice))) == [Code.LIMIT_EXCEEDED]
    assert c.codes(c.scenario.issue("meter-a", c.meter_a, 1, [pay(Fa(1), c.alice)])) == [
        Code.STALE_NONCE
    ]


class _DiskFull(Exception):
    pass


def _failing_once(write: Callable[..., None]) -> Callable[..., None]:
    calls = iter([True])

    def write_block(*args: object) -> None:
        if next(calls, False):
            raise _DiskFull("no space left on device")
        write(*args)

    return write_block


def test_a_failed_block_write_leaves_nothing_half_applied(
    community: Community, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = community
    before = c.ledger.store.head()
    issue = c.issue(pay(Epa(4_000, 3, 3), c.alice))
    monkeypatch.setattr(c.ledger.store, "write_block", _failing_once(c.ledger.store.write_block))
    with pytest.raises(_DiskFull):
        c.submit(issue)
    assert c.ledger.store.head() == before == c.ledger.head
    assert c.ledger.state.nonces.get("meter-a") is None  # the issue's effects are gone
    assert c.codes(issue) == [None]  # and it can be submitted again, whole


def test_a_failed_write_in_the_pipeline_stops_it_and_forgets_the_unwritten(
    community: Community, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = community
    monkeypatch.setattr(c.ledger.store, "write_block", _failing_once(c.ledger.store.write_block))
    pipeline = BlockPipeline(c.ledger, workers=1)
    first = c.issue(pay(Fa(1), c.alice))
    second = c.issue(pay(Fa(2), c.alice))
    blocks = [
        pipeline.submit([encode_transaction(tx)], c.scenario.time_in(1)) for tx in (first, second)
    ]
    with pytest.raises(_DiskFull):
        blocks[0].result()
    with pytest.raises((_DiskFull, PipelineStopped)):
        blocks[1].result()
    with pytest.raises(PipelineStopped):
        pipeline.submit([encode_transaction(first)], c.scenario.time_in(1))
    pipeline.close()
    assert c.ledger.head == c.ledger.store.head()
    assert c.codes(first, second) == [None, None]


def test_verdicts_reached_before_are_used_and_the_others_checked_in_order(
    community: Community,
) -> None:
    # a replicated node checks what it publishes and hands those verdicts to its pipeline when
    # the stream brings the transaction back: each verdict must land on its own transaction
    from ledger.static import StaticVerdict, check_batch

    c = community
    source = c.funded(pay(Fa(10), c.alice))
    transfer = c.scenario.transfer([source], [pay(Fa(10), c.bob)], c.alice)
    good = encode_transaction(transfer)
    signature = dataclasses.replace(transfer.signatures[0], signature=bytes(64))
    bad = encode_transaction(dataclasses.replace(transfer, signatures=(signature,)))
    issued = encode_transaction(c.issue(pay(Fa(1), c.alice)))
    [known_good] = check_batch(c.scenario.genesis, [good])
    vouched = StaticVerdict(Code.BAD_SIGNATURE, "judged so before", known_good.txid)

    pipeline = BlockPipeline(c.ledger, workers=1)
    try:
        first = pipeline.submit(
            [bad, good, issued], c.scenario.time_in(1), known=[None, known_good, None]
        )
        second = pipeline.submit([issued, bad], c.scenario.time_in(1), known=[vouched, None])
        outcomes = first.result().outcomes + second.result().outcomes
    finally:
        pipeline.close()

    assert [o.code for o in outcomes] == [
        Code.BAD_SIGNATURE,
        None,
        None,
        Code.BAD_SIGNATURE,
        Code.BAD_SIGNATURE,
    ]
    assert outcomes[3].message == "judged so before"  # not checked again
    assert outcomes[4].message != "judged so before"


@pytest.mark.parametrize("kinds", ["gbmi" * 2, "ggggbbbb", "mibgmibgmibgm", "gb", "gbmigbm"])
def test_a_small_batch_checked_on_two_threads_has_one_thread_s_verdicts_in_order(
    community: Community, kinds: str
) -> None:
    # a block too small for the worker processes is split between two threads when each half
    # holds MIN_HALF transactions or more; the verdicts must be those of one thread, in order
    import threading

    from ledger.static import MIN_HALF, StaticPool, check_batch

    c = community
    source = c.funded(pay(Fa(10), c.alice))
    transfer = c.scenario.transfer([source], [pay(Fa(10), c.bob)], c.alice)
    forged = dataclasses.replace(transfer.signatures[0], signature=bytes(64))
    raws = {
        "g": encode_transaction(transfer),
        "b": encode_transaction(dataclasses.replace(transfer, signatures=(forged,))),
        "m": b'{"type":"transfer"}',
        "i": encode_transaction(c.issue(pay(Fa(1), c.alice))),
    }
    batch = [raws[kind] for kind in kinds]
    pool = StaticPool(c.scenario.genesis, workers=2)
    try:
        verdicts = pool.submit(batch).result()
        split = any(t.name.startswith("ledger-static") for t in threading.enumerate())
    finally:
        pool.close()
    assert verdicts == check_batch(c.scenario.genesis, batch)
    assert [v.code is None for v in verdicts] == [k in "gi" for k in kinds]
    assert split == (len(batch) >= 2 * MIN_HALF)
    assert not any(t.name.startswith("ledger-static") for t in threading.enumerate())
