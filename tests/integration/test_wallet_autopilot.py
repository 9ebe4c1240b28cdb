"""`petra wallet autopilot --once` against a real home (the harness of test_meter_daemon.py: a
ledger node, a DSO node and `petra meter run`, all real, on loopback): without a mixer and
without trading it withdraws the cover for the next interval, notes that mixing was skipped,
deposits the cover once the interval begins, and the meter's bill of that interval shows as
much EPA deposited as issued (nothing sold)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner
from waiting import wait_until

from petra.wallet_autopilot_cli import register

from .test_meter_daemon import WAIT_S, Home, home_fixture
from .test_wallet import WALLET_PASSPHRASE, home_owner, open_wallet, wallet_file

__all__ = ["home_fixture", "home_owner", "wallet_file"]  # the fixtures this module runs on


def test_once_withdraws_and_deposits_the_cover_and_the_bill_nets_to_nothing_sold(
    home: Home, wallet_file: Path
) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # a group, so `autopilot` is a subcommand
    home.wait_interval(home.interval_now() + 1)  # withdraw early in an interval
    run = CliRunner().invoke(
        app,
        [
            "autopilot",
            "--wallet",
            str(wallet_file),
            "--once",
            "--json",
            *("--epa", "1000", "--eca", "500", "--fa", "0.02", "--poll-s", "0.2"),
        ],
        env={"PETRA_PASSPHRASE": WALLET_PASSPHRASE},
    )
    assert run.exit_code == 0, run.output
    steps = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(s["name"], s["outcome"]) for s in steps] == [
        ("withdraw", "done"),
        ("mix", "skipped"),
        ("deposit", "done"),
    ], steps
    assert steps[1]["code"] == "no_mixer"
    t = steps[0]["interval"]

    wallet = open_wallet(wallet_file)
    wallet.refresh()
    assert wallet.coins() == []  # everything withdrawn went back to the meter
    journal = [e for e in wallet.history() if e["kind"] == "autopilot"]
    assert [e["code"] for e in journal] == ["no_mixer"]
    kinds = [e["kind"] for e in wallet.history()]
    assert kinds.count("withdrawal") == 1 and kinds.count("deposit") == 3

    bill = wait_until(lambda: wallet.bill_history(t, t)["bills"], WAIT_S, f"the bill of {t}")[0]
    assert bill["interval"] == t
    assert bill["issued_epa_w"] == bill["deposited_epa_w"] == 1_000
    assert bill["fa_deposited"] == 20_000
    assert wallet.bill_history(t, t)["delivered"] == [False]  # the DSO is not serving
