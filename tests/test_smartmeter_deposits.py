"""Deposit addresses derived from the meter's seed, and deposits found in blocks."""

from __future__ import annotations

from assets import Eca, Epa, Fa, Keypair, Outpoint, Output, encode_transaction, txid, verify
from simulation.scenario import Scenario, pay
from smartmeter.deposits import Deposit, deposit_key, deposits_in_block

METER_SEED = bytes(range(32))


def test_deposit_keys_are_fresh_and_found_again_from_the_seed() -> None:
    keys = [deposit_key(METER_SEED, n) for n in range(50)]
    addresses = {k.public_key for k in keys}
    assert len(addresses) == 50
    assert Keypair(METER_SEED).public_key not in addresses  # not the meter's own key
    assert [deposit_key(METER_SEED, n).public_key for n in range(50)] == [
        k.public_key for k in keys
    ]
    other_meter = {deposit_key(bytes(32), n).public_key for n in range(50)}
    assert not addresses & other_meter


def test_a_deposit_key_signs_like_any_key() -> None:
    key = deposit_key(METER_SEED, 3)
    message = b"PETRA-v1/transfer\x00" + bytes(32)
    assert verify(key.public_key, message, key.sign(message))


def test_deposits_are_the_transfer_outputs_paid_to_the_meters_addresses() -> None:
    """The blocks' transactions need not be valid here: finding deposits reads outputs only."""
    scenario = Scenario()
    owner, stranger = Keypair.generate(), Keypair.generate()
    mine = {deposit_key(METER_SEED, n).public_key: n for n in range(3)}
    first, second = list(mine)[:2]
    # The meter's own issue to a deposit address is not a deposit: only transfers are.
    issue = scenario.issue("m1", Keypair(METER_SEED), 1, [Output(Fa(10), first)])
    spent = Outpoint(txid(issue), 0)
    elsewhere = scenario.transfer([spent], [pay(Epa(500, 4, 5), stranger)], owner)
    paid = scenario.transfer(
        [spent],
        [
            pay(Fa(1), stranger),
            Output(Epa(300, 4, 5), first),
            Output(Eca(200, 4, 5), second),
        ],
        owner,
    )
    raws = [encode_transaction(tx) for tx in (issue, elsewhere, paid)]
    assert deposits_in_block(12, raws, mine) == [
        Deposit(Outpoint(txid(paid), 1), first, Epa(300, 4, 5), 12),
        Deposit(Outpoint(txid(paid), 2), second, Eca(200, 4, 5), 12),
    ]
