"""The wallet against a real home: `petra meter run` reading Modbus devices, a DSO node and a
ledger node, all real processes on loopback (the harness of test_meter_daemon.py). The wallet
withdraws from its meter within the meter's limits, sees its coins on the ledger, deposits them
to the meter's anonymous deposit addresses, and says in one sentence what went wrong when the
meter is down or refuses; the `petra wallet` commands do the same from the command line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import petra
from waiting import wait_until

from assets import Keypair
from assets.model import Epa, Fa
from wallet.keystore import KdfLevel, WalletFile
from wallet.wallet import Services, Wallet, WalletError, new_data

from .test_meter_daemon import (  # noqa: F401  (the fixtures this module runs on)
    METER,
    WAIT_S,
    Home,
    home_fixture,
)

WALLET_PASSPHRASE = "wallet test passphrase"
SEED = bytes(range(32))


def owner_of_seed() -> Keypair:
    """The owner key of a wallet made from SEED (key 0), without a wallet file."""
    from wallet.keystore import Contents

    return Contents(SEED, {}).key(0)


@pytest.fixture
def home_owner() -> Keypair:
    return owner_of_seed()


@pytest.fixture
def wallet_file(home: Home, tmp_path: Path) -> Iterator[Path]:
    """The home's wallet (its owner key is the meter's owner), the meter running."""
    path = tmp_path / "wallet.json"
    services = Services(
        home.dso.ledger_url, f"http://127.0.0.1:{home.api_port}", METER, None, None, None
    )
    WalletFile.create(
        path,
        WALLET_PASSPHRASE.encode(),
        kdf=KdfLevel.INTERACTIVE,
        seed=SEED,
        data=new_data(home.dso.scenario.genesis, services, time.time()),
    )
    home.configure()
    home.start()
    yield path


def open_wallet(path: Path) -> Wallet:
    return Wallet(WalletFile.open(path, WALLET_PASSPHRASE.encode()))


def test_withdraw_see_and_deposit_through_the_meter(home: Home, wallet_file: Path) -> None:
    wallet = open_wallet(wallet_file)
    assert wallet.owner_key().public_key == home.owner.public_key
    t = home.interval_now() + 30
    answer = wallet.withdraw([Epa(1000, t, t), Fa(5_000)])
    epa, fa = answer["outputs"]
    assert epa["address"] != fa["address"]  # a fresh address per output
    mine = {a["address"] for a in wallet.addresses()}
    assert {epa["address"], fa["address"]} <= mine

    wallet.refresh()
    rows = {(r["kind"], r["interval"]): r for r in wallet.balance()}
    assert rows[("EPA", t)]["unspent"] == 1000 and rows[("FA", None)]["unspent"] == 5_000

    coins = wallet.coins()
    deposited = wallet.deposit(coins)
    assert len(deposited) == 2
    wallet.refresh()
    assert wallet.coins() == []
    assert {c.state for c in wallet.coins(states=("spent",))} == {"spent"}
    # the meter counts the deposits: its owner's credit is back where it was
    wait_until(
        lambda: wallet.meter_status()["credit_used"] == 0, WAIT_S, "the deposit to be counted"
    )
    kinds = [e["kind"] for e in wallet.history()]
    assert kinds[:1] == ["init"] and "withdrawal" in kinds and kinds.count("deposit") == 2


def test_the_meter_refuses_or_is_down_in_one_sentence(home: Home, wallet_file: Path) -> None:
    wallet = open_wallet(wallet_file)
    t = home.interval_now() + 30
    with pytest.raises(WalletError) as refused:
        wallet.withdraw([Epa(10_001, t, t)])  # MAXEPA is 10 000 W
    assert refused.value.code == "limit_exceeded"
    assert wallet.coins() == []  # nothing was issued, nothing recorded as held

    home.stop()
    with pytest.raises(WalletError) as down:
        wallet.withdraw([Epa(100, t, t)])
    assert down.value.code == "meter_unreachable"
    assert "petra meter run" in down.value.message


def test_the_commands_withdraw_show_and_refuse(home: Home, wallet_file: Path) -> None:
    env_wallet = ("--wallet", str(wallet_file))
    t = home.interval_now() + 30
    drawn = petra(
        "wallet",
        "withdraw",
        *env_wallet,
        f"epa:700W@{t}",
        "--json",
        passphrase=WALLET_PASSPHRASE,
    )
    assert drawn.code == 0, drawn
    assert json.loads(drawn.out)["outputs"][0]["asset"]["power"] == 700

    balance = petra("wallet", "balance", *env_wallet, "--json", passphrase=WALLET_PASSPHRASE)
    assert balance.code == 0, balance
    rows = json.loads(balance.out)["rows"]
    assert [(r["kind"], r["interval"], r["unspent"]) for r in rows] == [("EPA", t, 700)]
    text = petra("wallet", "balance", *env_wallet, passphrase=WALLET_PASSPHRASE)
    assert "700 W" in text.out

    wrong = petra("wallet", "balance", *env_wallet, passphrase="not the passphrase")
    assert wrong.code == 2 and "wrong passphrase" in wrong.err_text
    assert "Traceback" not in wrong.err

    over = petra(
        "wallet",
        "withdraw",
        *env_wallet,
        f"epa:20000W@{t}",
        passphrase=WALLET_PASSPHRASE,
    )
    assert over.code == 2 and "the meter refused" in over.err_text, over


def test_a_refresh_skips_spent_out_addresses_and_a_rescan_finds_a_late_payment(
    home: Home, wallet_file: Path
) -> None:
    from assets import Output, Transfer, encode_transaction, sign
    from ledger.client import LedgerClient

    wallet = open_wallet(wallet_file)
    wallet.withdraw([Fa(5_000)])
    wallet.refresh()
    (first,) = wallet.coins()
    wallet.deposit([first])
    wallet.refresh()
    old = first.output.address.hex()
    asked: list[str] = []

    class Counting(LedgerClient):
        def unspent(self, address: bytes) -> list[dict[str, object]]:
            asked.append(address.hex())
            return super().unspent(address)

    counting = Wallet(
        WalletFile.open(wallet_file, WALLET_PASSPHRASE.encode()), ledger_client=Counting
    )
    fresh = wallet.new_key("receive").public_key.hex()
    counting.refresh()
    assert asked == [fresh]  # an address with nothing yet is asked; a spent-out one is not

    # someone pays the spent-out address again (here the wallet itself, by hand)
    wallet.withdraw([Fa(7_000)])
    wallet.refresh()
    (second,) = wallet.coins()
    key = wallet.key_of(second.output.address)
    late = sign(
        Transfer(wallet.chain, (second.outpoint,), (Output(Fa(7_000), first.output.address),)),
        key,
    )
    with LedgerClient(home.dso.ledger_url) as ledger:
        ledger.submit(encode_transaction(late))
    counting.refresh()
    assert [c for c in counting.coins() if c.output.address.hex() == old] == []
    counting.refresh(rescan=True)
    found = [c for c in counting.coins() if c.output.address.hex() == old]
    assert [c.asset for c in found] == [Fa(7_000)]
