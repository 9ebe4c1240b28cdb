"""Wallets mixing through a real coordinator (`petra mixer serve`) over a real ledger node
(DESIGN.md section 8): coins split into 1-2-5 denominations, several rounds, every piece ending
at a fresh address of its wallet; a pool too small fails and leaves the coin where it was."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from assets import Outpoint, encode_transaction, txid
from assets.model import Fa, Output
from ledger.client import LedgerClient
from simulation.bench.mixer import BENCH_METER
from simulation.scenario import pay
from wallet.keystore import KdfLevel, WalletFile
from wallet.mixing import denominate, mix
from wallet.wallet import Coin, Services, Wallet, WalletError, new_data, size_of

from .test_mixer import Chain, chain_fixture, coordinator

__all__ = ["chain_fixture"]  # the fixture this module runs on

PASSPHRASE = b"mixing wallet"


def wallet_of(chain: Chain, mixer: str, path: Path) -> Wallet:
    services = Services(chain.url, mixer=mixer)
    data = new_data(chain.scenario.genesis, services, time.time())
    return Wallet(WalletFile.create(path, PASSPHRASE, kdf=KdfLevel.INTERACTIVE, data=data))


def pay_wallets(chain: Chain, wallets: list[Wallet], amount: int) -> list[Outpoint]:
    """One issue paying `amount` micro-units to a fresh address of each wallet."""
    keys = [w.new_key("withdrawal") for w in wallets]
    issue = chain.scenario.issue(
        BENCH_METER, chain.meter, next(chain.nonces), [pay(Fa(amount), k) for k in keys]
    )
    with LedgerClient(chain.url) as ledger:
        ledger.submit(encode_transaction(issue))
    for wallet in wallets:
        wallet.refresh()
    return [Outpoint(txid(issue), n) for n in range(len(wallets))]


def test_three_wallets_split_and_mix_twice(chain: Chain, tmp_path: Path) -> None:
    assert denominate(1_500_000) == [1_000_000, 500_000]
    with coordinator(chain, 3, tmp_path / "coordinator.log") as url:
        wallets = [wallet_of(chain, url, tmp_path / f"w{n}.json") for n in range(3)]
        funded = pay_wallets(chain, wallets, 1_500_000)
        results: dict[int, tuple[list[Coin], list[WalletError]]] = {}

        def run(n: int) -> None:
            results[n] = mix(wallets[n], wallets[n].coins(), 2, timeout_s=120)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)

    for n, wallet in enumerate(wallets):
        mixed, failed = results[n]
        assert failed == [] and len(mixed) == 2
        coins = wallet.coins()
        assert sorted(size_of(c.asset) for c in coins) == [500_000, 1_000_000]
        purposes = {a["address"]: a["purpose"] for a in wallet.addresses()}
        assert all(purposes[c.output.address.hex()] == "mix" for c in coins)
        assert all(c.origin == "mix" for c in coins)
        kinds = [e["kind"] for e in wallet.history()]
        assert kinds.count("split") == 1 and kinds.count("mix") == 4  # 2 pieces x 2 rounds
    with LedgerClient(chain.url) as ledger:  # the funded outputs are spent, by the splits
        spent = [ledger.output(o.txid, o.index) for o in funded]
    assert all(found is not None and found["spent_by"] is not None for found in spent)


def test_a_pool_nobody_else_joins_fails_and_the_coin_stays(chain: Chain, tmp_path: Path) -> None:
    with coordinator(chain, 3, tmp_path / "coordinator.log") as url:
        (wallet,) = [wallet_of(chain, url, tmp_path / "alone.json")]
        pay_wallets(chain, [wallet], 1_000_000)
        (coin,) = wallet.coins()
        mixed, failed = mix(wallet, [coin], 1, timeout_s=60)
    assert mixed == [] and [e.code for e in failed] == ["failed"]
    assert wallet.coins() == [coin]  # unspent again, where it was
    assert "mix_failed" in [e["kind"] for e in wallet.history()]


def test_two_coins_at_one_address_are_spent_with_one_signature(
    chain: Chain, tmp_path: Path
) -> None:
    wallet = wallet_of(chain, "http://127.0.0.1:9", tmp_path / "w.json")
    key = wallet.new_key("receive")
    issue = chain.scenario.issue(
        BENCH_METER, chain.meter, next(chain.nonces), [pay(Fa(300), key), pay(Fa(200), key)]
    )
    with LedgerClient(chain.url) as ledger:
        ledger.submit(encode_transaction(issue))
    wallet.refresh()
    coins = wallet.coins()
    assert len(coins) == 2
    to = wallet.new_key("address").public_key
    wallet.transfer(coins, [Output(Fa(500), to)], "merge", "change")
    (merged,) = wallet.coins()
    assert (size_of(merged.asset), merged.output.address) == (500, to)
