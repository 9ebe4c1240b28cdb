"""`petra wallet` in process on a wallet file and no service: the one asset syntax of
`withdraw` (and its old options, hidden and warning), money as people read it, tables that
fit 80 columns, ids taken as prefixes, the per-trade view and the bill's waiting state."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from assets import Keypair
from assets.codec import asset_to_wire
from assets.model import Eca, Epa, Fa, Genesis
from petra.cli import app
from petra.vocabulary import interval_label
from wallet.keystore import KdfLevel, WalletFile
from wallet.wallet import Services, Wallet, new_data

PASSPHRASE = "wallet cli passphrase"
INTERVAL_S = 900
EPOCH = 1_750_000_000
GENESIS = Genesis(
    "wallet-cli", INTERVAL_S, EPOCH, "EUR", (Keypair.generate().public_key,), (bytes(32),)
)
T = 120  # the interval the trades are for


@pytest.fixture
def wallet_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "wallet.json"
    services = Services("http://127.0.0.1:1", None, None, None, None, None)
    WalletFile.create(
        path,
        PASSPHRASE.encode(),
        kdf=KdfLevel.INTERACTIVE,
        data=new_data(GENESIS, services, time.time()),
    )
    yield path


def run(*args: str, columns: int = 80) -> Result:
    return CliRunner().invoke(
        app, list(args), env={"PETRA_PASSPHRASE": PASSPHRASE, "COLUMNS": str(columns)}
    )


def unbroken(*args: str) -> str:
    """The output of `args` at 80 columns, checked to break no word: it reads word for word
    as at 400 columns (a word cut in two would be two)."""
    narrow, wide = run(*args), run(*args, columns=400)
    assert narrow.exit_code == 0, narrow.output
    assert narrow.output.split() == wide.output.split(), narrow.output
    return narrow.output


def edit(path: Path, change: Any) -> None:
    file = WalletFile.open(path, PASSPHRASE.encode())
    with file.edit() as contents:
        change(contents.data)


def coin(
    asset: Any, address: str, state: str = "unspent", spent_by: str | None = None
) -> dict[str, Any]:
    return {
        "asset": asset_to_wire(asset),
        "address": address,
        "origin": "trade",
        "state": state,
        "spent_by": spent_by,
    }


def fits(text: str) -> None:
    """Every line within 80 columns, and none a cell folded mid-word."""
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "µ" not in text and "micro-units" not in text, text


# ---------------------------------------------------------------- withdraw


def test_withdraw_takes_one_argument_per_asset(
    wallet_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []

    def withdraw(self: Wallet, assets: Any) -> dict[str, Any]:
        asked.extend(assets)
        outputs = [
            {"asset": asset_to_wire(a), "address": f"{n:02x}" * 32} for n, a in enumerate(assets)
        ]
        return {"txid": "ab" * 32, "height": 7, "nonce": "00", "outputs": outputs}

    monkeypatch.setattr(Wallet, "withdraw", withdraw)
    done = run(
        "wallet",
        "withdraw",
        "epa:1000W@120",
        "eca:500W@120-121",
        "fa:2EUR",
        "--wallet",
        str(wallet_path),
    )
    assert done.exit_code == 0, done.output
    assert asked == [Epa(1000, 120, 120), Eca(500, 120, 121), Fa(2_000_000)]
    assert "FA 2.000000 EUR to" in done.output
    assert "warning" not in done.output
    fits(done.output)


def test_the_old_withdraw_options_still_work_hidden_and_warn(
    wallet_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []

    def withdraw(self: Wallet, assets: Any) -> dict[str, Any]:
        asked.extend(assets)
        return {"txid": "ab" * 32, "height": 7, "nonce": "00", "outputs": []}

    monkeypatch.setattr(Wallet, "withdraw", withdraw)
    done = run(
        "wallet", "withdraw", "--interval", "5", "--until", "6", "--epa", "700", "--fa", "3000",
        "--wallet", str(wallet_path),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert asked == [Epa(700, 5, 6), Fa(3000)]  # --fa was micro-units, and stays so
    said = " ".join(done.output.split())
    assert "warning: `petra wallet withdraw --epa --fa --interval --until` is now one" in said
    assert "epa:1000W@120 eca:500W@120-121 fa:2EUR" in said
    shown = run("wallet", "withdraw", "--help").output
    for old in ("--epa", "--eca", "--fa", "--interval", "--until"):
        assert old not in shown, shown


def test_a_bad_asset_is_a_usage_error_naming_it(wallet_path: Path) -> None:
    done = run("wallet", "withdraw", "epa:1000@120", "--wallet", str(wallet_path))
    assert done.exit_code == 2
    assert "'epa:1000@120' is not an asset" in " ".join(done.output.split())
    nothing = run("wallet", "withdraw", "--wallet", str(wallet_path))
    assert nothing.exit_code == 2
    assert "say what to withdraw, e.g. epa:1000W@T" in " ".join(nothing.output.split())


def test_a_wallet_without_a_meter_names_the_options_to_give(wallet_path: Path) -> None:
    done = run("wallet", "withdraw", "fa:1", "--wallet", str(wallet_path))
    assert done.exit_code == 2
    said = " ".join(done.output.split())
    assert "run `petra wallet config --meter URL --meter-id ID`" in said, said


# ---------------------------------------------------------------- balance and addresses


def test_the_balance_shows_money_and_interval_times_within_80_columns(wallet_path: Path) -> None:
    one, two = "3f9a" + "0" * 58 + "01", "3f9a" + "0" * 58 + "02"  # alike but at the end

    def held(data: dict[str, Any]) -> None:
        data["coins"]["aa" * 32 + ":0"] = coin(Fa(1_234_567), one)
        data["coins"]["aa" * 32 + ":1"] = coin(Epa(1_500, T, T), two)
        data["coins"]["aa" * 32 + ":2"] = coin(Fa(5), two, "spent", "bb" * 32)

    edit(wallet_path, held)
    done = run("wallet", "balance", "--no-refresh", "--wallet", str(wallet_path))
    assert done.exit_code == 0, done.output
    fits(unbroken("wallet", "balance", "--no-refresh", "--wallet", str(wallet_path)))
    assert "1.234567 EUR" in done.output and "1,500 W" in done.output
    assert interval_label(T, EPOCH, INTERVAL_S) in done.output
    assert "0.000005 EUR" not in done.output  # spent: only with --all
    cells = [line.split() for line in done.output.splitlines()]
    shown = {c for row in cells for c in row if c.startswith("3f9a")}
    assert len(shown) == 2, done.output  # elided, yet not alike
    every = run("wallet", "balance", "--no-refresh", "--all", "--wallet", str(wallet_path))
    assert "0.000005 EUR" in every.output and "spent" in every.output, every.output
    as_json = run("wallet", "balance", "--no-refresh", "--json", "--wallet", str(wallet_path))
    rows = json.loads(as_json.output)["rows"]
    assert {r["unspent"] for r in rows if r["kind"] == "FA"} == {1_234_567, 0}


def test_an_address_is_labelled_by_a_prefix_and_an_ambiguous_one_refused(
    wallet_path: Path,
) -> None:
    one, two = "abcd" + "1" * 60, "abcd" + "2" * 60

    def addresses(data: dict[str, Any]) -> None:
        for n, address in enumerate((one, two), start=1):
            data["addresses"][address] = {
                "index": n,
                "purpose": "address",
                "label": None,
                "created": 0,
            }

    edit(wallet_path, addresses)
    labelled = run("wallet", "address", "label", "abcd1", "mine", "--wallet", str(wallet_path))
    assert labelled.exit_code == 0, labelled.output
    both = run("wallet", "address", "label", "abcd", "x", "--wallet", str(wallet_path))
    assert both.exit_code == 2
    said = " ".join(both.output.split())
    assert "'abcd' is the start of 2" in said, said
    assert one in said and two in said
    short = run("wallet", "address", "label", "ab", "x", "--wallet", str(wallet_path))
    assert short.exit_code == 2 and "too short" in short.output
    listed = unbroken("wallet", "address", "list", "--wallet", str(wallet_path))
    fits(listed)
    assert "mine" in listed


# ---------------------------------------------------------------- history, trades, bill


def test_history_is_in_local_time(wallet_path: Path) -> None:
    done = run("wallet", "history", "--wallet", str(wallet_path))
    assert done.exit_code == 0, done.output
    assert re.match(r"[A-Z][a-z]{2} \d\d \d\d:\d\d  init +wallet created", done.output)


SELLER_RECEIVE, BUYER_RECEIVE = "51" * 32, "b1" * 32


def trades(data: dict[str, Any]) -> None:
    """A settled sale whose payment was deposited, a settled purchase whose EPA is held, and
    a failed trade."""
    data["orders"] = {
        "o1": {"side": "ask", "receive": SELLER_RECEIVE, "owner": "00" * 32},
        "o2": {"side": "bid", "receive": BUYER_RECEIVE, "owner": "00" * 32},
        "o3": {"side": "bid", "receive": BUYER_RECEIVE, "owner": "00" * 32},
    }
    record = {"proposer": "buyer", "interval": T, "power": 1_000, "price": 150_000}
    data["trades"] = {
        "ab12" + "0" * 60: {
            **record, "order": "o1", "role": "seller", "payment": 37_500, "status": "settled",
            "txid": "c1" * 32, "submitted": None, "at": 1,
        },
        "ab12" + "f" * 60: {
            **record, "order": "o2", "role": "buyer", "payment": 37_500, "status": "settled",
            "txid": "c2" * 32, "submitted": "c2" * 32, "at": 2,
        },
        "9999" + "0" * 60: {
            **record, "order": "o3", "role": "buyer", "payment": 37_500, "status": "expired",
            "txid": None, "submitted": None, "at": 3,
        },
    }  # fmt: skip
    data["coins"]["c1" * 32 + ":0"] = coin(Fa(37_500), SELLER_RECEIVE, "spent", "d1" * 32)
    data["coins"]["c1" * 32 + ":1"] = coin(Eca(1_000, T, T), SELLER_RECEIVE)
    data["coins"]["c2" * 32 + ":0"] = coin(Epa(1_000, T, T), BUYER_RECEIVE)
    data["journal"].append(
        {"at": 0, "kind": "deposit", "text": "", "txid": "d1" * 32, "interval": T + 1}
    )


def test_trades_say_per_trade_what_it_did_to_which_bill(wallet_path: Path) -> None:
    edit(wallet_path, trades)
    shown = unbroken("wallet", "trades", "--no-refresh", "--wallet", str(wallet_path))
    fits(shown)
    said = " ".join(shown.split())
    when = interval_label(T, EPOCH, INTERVAL_S)
    assert f"sold 1,000 W in {when} at 0.150000 EUR/kWh for 0.037500 EUR: settled" in said
    assert f"so 250.000 Wh more is billed for interval {T}" in said
    after = interval_label(T + 1, EPOCH, INTERVAL_S)
    assert f"the payment, deposited, credits the bill of interval {after}" in said
    assert f"bought 1,000 W in {when}" in said
    assert "the EPA is held, not deposited: deposited before interval" in said
    assert "takes 250.000 Wh off the energy billed for it" in said
    assert "buying 1,000 W" in said and "expired; nothing moved" in said
    ids = [line.split()[0] for line in shown.splitlines() if "…" in line.split()[0]]
    assert len(set(ids)) == 3 and len(ids) == 3, shown  # elided, none alike

    as_json = json.loads(
        run("wallet", "trades", "--no-refresh", "--json", "--wallet", str(wallet_path)).output
    )
    sale = as_json["trades"][0]
    assert sale["payment"] == 37_500 and sale["energy_j"] == 1_000 * INTERVAL_S
    assert [c["deposited_in"] for c in sale["received"]] == [T + 1, None]


def test_the_bill_says_when_a_bill_not_made_yet_comes(
    wallet_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = GENESIS.interval_at(int(time.time()))

    def status(self: Wallet) -> dict[str, Any]:
        return {"meter": "M1", "interval": now, "credit_used": 1_500_000, "credit_line": 50_000_000}

    def history(self: Wallet, first: int, last: int) -> dict[str, Any]:
        bill = {
            "interval": first,
            "measured_j": 3_600_000,
            "energy_j": 1_800_000,
            "amount": -12_345,
        }
        return {"first": first, "last": last, "bills": [bill], "delivered": [True]}

    monkeypatch.setattr(Wallet, "meter_status", status)
    monkeypatch.setattr(Wallet, "bill_history", history)
    done = run(
        "wallet",
        "bill",
        "--first",
        str(now - 2),
        "--last",
        str(now - 1),
        "--wallet",
        str(wallet_path),
    )
    assert done.exit_code == 0, done.output
    fits(done.output)
    said = " ".join(done.output.split())
    assert "credit used 1.500000 EUR of 50.000000 EUR" in said
    assert "owes -0.012345 EUR" in said
    label = interval_label(now - 1, EPOCH, INTERVAL_S)
    assert f"the bill for interval {label} comes after" in said
    assert "its end plus the meter's closing delay of 60 s" in said
    old = run(
        "wallet", "bill", "--from", str(now - 2), "--to", str(now - 1), "--wallet", str(wallet_path)
    )
    assert old.exit_code == 0 and "is now --first" in " ".join(old.output.split())
