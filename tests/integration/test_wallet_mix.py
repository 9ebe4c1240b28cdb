"""Wallets mixing through a real coordinator (`petra mixer serve`) over a real ledger node
(DESIGN.md section 8): coins split into 1-2-5 denominations, several rounds, every piece ending
at a fresh address of its wallet; a pool too small fails and leaves the coin where it was; a
wallet mixing alone is told so before anything is split, and pieces split for a mix that then
failed stay the wallet's, mixed later as they are."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_cli import petra, refused
from waiting import wait_until

from assets import Outpoint, encode_transaction, txid
from assets.model import Fa, Output
from ledger.client import LedgerClient
from mixer.client import PoolsClient
from simulation.bench.mixer import BENCH_METER
from simulation.scenario import pay
from wallet.keystore import KdfLevel, WalletFile
from wallet.mixing import SPLIT_ORIGIN, denominate, mix
from wallet.wallet import Coin, Services, Wallet, WalletError, asset_text, new_data, size_of

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
        said = [e["text"] for e in wallet.history() if e["kind"] == "mix"]
        assert sorted("round 1 of 2" in t for t in said) == [False, False, True, True], said
        assert all("round 2 of 2" in t for t in said if "round 1 of 2" not in t), said
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
    (note,) = [e["text"] for e in wallet.history() if e["kind"] == "mix_failed"]
    assert note.startswith("round 1 of 1 of mixing") and "failed: failed" not in note, note


def test_a_lone_wallet_is_told_before_anything_is_split(chain: Chain, tmp_path: Path) -> None:
    with coordinator(chain, 2, tmp_path / "coordinator.log") as url:
        path = tmp_path / "alone.json"
        wallet = wallet_of(chain, url, path)
        (funded,) = pay_wallets(chain, [wallet], 1_500_000)
        (coin,) = wallet.coins()
        run = petra(
            *("wallet", "mix", "--wallet", path, "--origin", "received"),
            passphrase=PASSPHRASE.decode(),
        )
        text = refused(run)
        with pytest.raises(WalletError) as caught:
            mix(wallet, [coin], 1, alone=False, timeout_s=60)
    pieces = f"{asset_text(Fa(1_000_000))} or {asset_text(Fa(500_000))}"
    assert f"no other wallet is waiting to mix {pieces} at the mixer" in text, text
    assert "a round needs 2: nothing was split" in text and "--wait" in text, text
    assert (caught.value.code, caught.value.message) == ("alone", text.removeprefix("error: "))
    assert wallet.coins() == [coin]  # whole, where it was
    assert "split" not in [e["kind"] for e in wallet.history()]
    with LedgerClient(chain.url) as ledger:
        found = ledger.output(funded.txid, funded.index)
    assert found is not None and found["spent_by"] is None


def test_a_wallet_waiting_at_the_mixer_is_company(chain: Chain, tmp_path: Path) -> None:
    with coordinator(chain, 2, tmp_path / "coordinator.log") as url:
        first, second = (wallet_of(chain, url, tmp_path / f"w{n}.json") for n in range(2))
        pay_wallets(chain, [first, second], 1_000_000)
        results: list[tuple[list[Coin], list[WalletError]]] = []
        waiting = threading.Thread(
            target=lambda: results.append(mix(first, first.coins(), 1, timeout_s=60))
        )
        waiting.start()  # the first joins and waits for company, as with --wait
        with PoolsClient(url) as pools:
            wait_until(lambda: pools.forming().peers(Fa(1_000_000)) == 1, 30, "the first join")
        mixed, failed = mix(second, second.coins(), 1, alone=False, timeout_s=60)
        waiting.join(60)
    assert failed == [] and len(mixed) == 1
    assert results and results[0][1] == [] and len(results[0][0]) == 1


def test_pieces_of_a_failed_mix_stay_usable_and_are_not_split_again(
    chain: Chain, tmp_path: Path
) -> None:
    with coordinator(chain, 2, tmp_path / "coordinator.log") as url:
        lone, other = (wallet_of(chain, url, tmp_path / f"w{n}.json") for n in range(2))
        pay_wallets(chain, [lone], 1_500_000)
        mixed, failed = mix(lone, lone.coins(), 1, timeout_s=60)  # alone, as with --wait
        assert mixed == [] and [e.code for e in failed] == ["failed", "failed"]
        assert all("stays unspent in this wallet" in e.message for e in failed)
        pieces = lone.coins()
        assert sorted(size_of(c.asset) for c in pieces) == [500_000, 1_000_000]
        assert {c.origin for c in pieces} == {SPLIT_ORIGIN}
        lone.refresh()
        assert sum(r["unspent"] for r in lone.balance()) == 1_500_000
        assert sum(r["reserved"] for r in lone.balance()) == 0

        pay_wallets(chain, [other], 1_500_000)
        results: dict[str, tuple[list[Coin], list[WalletError]]] = {}
        threads = [
            threading.Thread(target=lambda w=w, n=n: results.update({n: mix(w, w.coins(), 1)}))
            for n, w in (("lone", lone), ("other", other))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    mixed, failed = results["lone"]
    assert failed == [] and sorted(size_of(c.asset) for c in mixed) == [500_000, 1_000_000]
    assert [e["kind"] for e in lone.history()].count("split") == 1  # never split twice
    assert {c.origin for c in lone.coins()} == {"mix"}


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
