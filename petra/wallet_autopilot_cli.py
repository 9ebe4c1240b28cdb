"""`petra wallet autopilot`: withdraw, mix, (trade) and deposit every interval, so that not
trading leaks nothing (DESIGN.md section 1; wallet/autopilot.py).

One line per step of each interval's cycle, or one JSON object per line with `--json`; a
step that fails is also one sentence on stderr and in the wallet's journal, and the routine
goes on. SIGINT or SIGTERM stop it after the step under way.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from petra.vocabulary import interval_label, money_argument
from petra.wallet_common import Json, PassFile, WalletPath, opened, out

MIX_TIMEOUT_S = 600.0  # at most, per coin, rounds included
STYLES = {"done": "green", "skipped": "yellow", "failed": "red"}


def register(app: typer.Typer) -> None:
    """Add `autopilot` to `app` (the `petra wallet` app)."""
    app.command("autopilot")(autopilot_command)


def autopilot_command(
    epa: Annotated[int, typer.Option(min=0, help="EPA withdrawn every interval, W.")] = 1_000,
    eca: Annotated[int, typer.Option(min=0, help="ECA withdrawn every interval, W.")] = 1_000,
    fa: Annotated[
        int,
        typer.Option(
            parser=money_argument,
            metavar="MONEY",
            help="FA withdrawn every interval: money, e.g. 0.1 or 0.1EUR (docs/cli.md).",
        ),
    ] = "0.1",  # type: ignore[assignment]  # typer parses the default text too
    lead: Annotated[
        int, typer.Option(min=1, max=96, help="Withdraw for the interval this many ahead.")
    ] = 1,
    rounds: Annotated[int, typer.Option(min=1, max=10, help="Mixing rounds per coin.")] = 2,
    mix_timeout_s: Annotated[
        float | None,
        typer.Option(min=1, help="Seconds a coin's mix may take (default: half the lead time)."),
    ] = None,
    ask_price: Annotated[
        int | None,
        typer.Option(
            parser=money_argument,
            metavar="MONEY",
            help="Ask a forecast surplus at this money per kWh, e.g. 0.12.",
        ),
    ] = None,
    bid_price: Annotated[
        int | None,
        typer.Option(
            parser=money_argument,
            metavar="MONEY",
            help="Bid for a forecast deficit at this money per kWh, e.g. 0.3.",
        ),
    ] = None,
    forecast_w: Annotated[
        int | None,
        typer.Option(help="Your net power in each interval, W, consumption positive (fixed)."),
    ] = None,
    forecast_bills: Annotated[
        int,
        typer.Option(min=1, max=96, help="Else: the mean of your meter's last bills, this many."),
    ] = 4,
    poll_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds between looks at your trades.")
    ] = 5.0,
    once: Annotated[
        bool, typer.Option("--once", help="Run the next interval's cycle only, then exit.")
    ] = False,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Every interval, withdraw the same cover from your meter (trading or not), mix it, trade
    it if a price and a forecast say so, and deposit what is left once the interval begins,
    so that your meter's bills show only what you really sold or bought. Exit code 2 with
    --once if a step failed."""
    from wallet.autopilot import Autopilot, Cover, Settings, Step, Strategy, WalletOperations

    errors = Console(stderr=True)
    failed: list[Step] = []

    if fa < 0:
        raise typer.BadParameter("FA is not negative", param_hint="--fa")
    for name, price in (("--ask-price", ask_price), ("--bid-price", bid_price)):
        if price is not None and price < 1:
            raise typer.BadParameter("a price is more than 0", param_hint=name)

    def report(step: Step) -> None:
        when = interval_label(step.interval, epoch, interval_s)
        if step.outcome == "failed":
            failed.append(step)
            errors.print(f"interval {when}: {step.name} failed: {step.text}", markup=False)
        if as_json:
            print(json.dumps(asdict(step)), flush=True)
        else:
            style = STYLES[step.outcome]
            out.print(
                f"{when}  {step.name:<8} [{style}]{step.outcome:<7}[/{style}] {step.text}",
                highlight=False,
                markup=True,
            )

    with opened(wallet, passphrase_file) as w:
        epoch, interval_s = w.genesis.epoch, w.genesis.interval_s
        timeout = mix_timeout_s or min(MIX_TIMEOUT_S, max(1.0, lead * interval_s / 2))
        settings = Settings(
            Cover(epa, eca, fa),
            Strategy(ask_price, bid_price, forecast_w, forecast_bills),
            lead,
            poll_s,
        )
        stop = threading.Event()
        pilot = Autopilot(
            WalletOperations(w, rounds=rounds, mix_timeout_s=timeout),
            settings,
            epoch=w.genesis.epoch,
            report=report,
            stop=stop,
            currency=w.genesis.currency,
        )
        with _stopped_by_signals(stop):
            pilot.run(once=once)
    if once and failed:
        raise typer.Exit(2)


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (the routine ends after the step under way); a second
    SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()
        Console(stderr=True).print("stopping after the step under way (Ctrl-C again: at once)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for number in before:
        signal.signal(number, on_signal)
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, _restorable(handler))


def _restorable(handler: Any) -> Any:
    # getsignal gives None for a handler not installed from Python: leave the default then
    return signal.SIG_DFL if handler is None else handler
