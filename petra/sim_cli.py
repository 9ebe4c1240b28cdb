"""`petra sim`: the community simulation (run, up, down) and a simulated device to try by hand."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from petra.console import err, fail

sim_app = typer.Typer(
    help="The community simulation: a whole energy community on one machine, and its report.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="The simulation's TOML file (default: the embedded one)."),
]


def _overrides(**given: Any) -> dict[str, Any]:
    return {key: value for key, value in given.items() if value is not None}


def _load(config: Path | None, overrides: dict[str, Any]) -> Any:
    from simulation import ConfigError, load_config

    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        fail(str(exc))


@sim_app.command("run")
def run_command(
    config: ConfigOption = None,
    homes: Annotated[int | None, typer.Option(min=1, help="How many homes.")] = None,
    intervals: Annotated[int | None, typer.Option(min=1, help="How many intervals.")] = None,
    speed: Annotated[
        float | None, typer.Option(help="Ledger seconds per wall second (1: real time).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="The seed every profile and agent draws from.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="The database's SQLAlchemy URL (PostgreSQL), or `sqlite`: files in the run's "
            "folder."
        ),
    ] = None,
    tor: Annotated[
        bool | None,
        typer.Option("--tor/--no-tor", help="Reach the bid store through a private Tor network."),
    ] = None,
    mixing: Annotated[
        bool | None, typer.Option("--mixing/--no-mixing", help="Mix before trading.")
    ] = None,
    monitor: Annotated[
        bool | None,
        typer.Option(
            "--monitor/--no-monitor",
            help="Also run the monitoring service, fed by the homes' meters over MQTT.",
        ),
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--dir", help="The folder the run's report folder goes in.")
    ] = None,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="Run the same rules, billing, mixing and matching without processes or HTTP.",
        ),
    ] = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the default configuration and exit.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: the metrics.")
    ] = False,
) -> None:
    """Run a whole community: ledger, replica, DSO, mixer, bid store, a meter and a wallet
    agent per home, each its own process on loopback; then print the summary and write the
    report (metrics.json, record.json, report.html). Ctrl-C stops every process and keeps the
    partial report."""
    from simulation import DEFAULT_TOML, ConfigError, HarnessError, simulate, summary

    if print_config:
        typer.echo(DEFAULT_TOML, nl=False)
        return
    settings = _load(
        config,
        _overrides(
            homes=homes,
            intervals=intervals,
            speed=speed,
            seed=seed,
            store=store,
            tor=tor,
            mixing=mixing,
            monitor=monitor,
            report_dir=None if report_dir is None else str(report_dir),
        ),
    )
    if in_process and settings.monitor:
        fail("--monitor needs the nodes as processes: drop --in-process")
    console = Console(stderr=as_json)
    try:
        outcome = simulate(settings, in_process=in_process, console=console)
    except (HarnessError, ConfigError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(outcome.metrics, sort_keys=True))
    else:
        console.print(summary(outcome.metrics, outcome.report))
        pages = outcome.folder / "monitor" / "monitor.toml"
        if settings.monitor and pages.exists():
            day = settings.start.date().isoformat()
            console.print("The monitoring pages of this run (its day is", day + "):")
            console.print(f"  petra monitor serve --config {pages}", soft_wrap=True)
            console.print("  then open http://127.0.0.1:7470/ and log in as one of")
            console.print(f"  {pages.parent / 'logins.txt'}", soft_wrap=True)
    if not outcome.record.complete:
        err.print(f"stopped early: the partial report is in {outcome.folder}")
        raise typer.Exit(130)


@sim_app.command("device")
def device_command(
    kind: Annotated[str, typer.Argument(help="sdm630 (a grid meter) or sunspec (a PV inverter).")],
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="The port to listen on, on 127.0.0.1.")
    ] = 5020,
    profile: Annotated[
        str,
        typer.Option(
            help="Power in W: a constant (`1500`), `pv:KWP` (a clear-sky day at the simulated "
            "location, on the wall clock), or `home:KWH` (a BDEW household of KWH a year)."
        ),
    ] = "1000",
    speed: Annotated[
        float, typer.Option(min=0.001, help="Run the profile's day this many times faster.")
    ] = 1.0,
) -> None:
    """Serve one simulated Modbus TCP device on loopback until Ctrl-C, so that `petra meter
    run` can read it (a source `kind = "sdm630"` or `"sunspec"` with this port)."""
    from simulation import device_profile, serve_device, stopping_on_signals

    if kind not in ("sdm630", "sunspec"):
        fail(f"a simulated device is sdm630 or sunspec, not {kind!r}")
    try:
        power = device_profile(profile, speed)
    except ValueError as exc:
        fail(str(exc))
    stop = threading.Event()
    try:
        with stopping_on_signals(stop):  # Ctrl-C or SIGTERM: close the device, then exit 0
            serve_device(kind, port, power, stop, lambda text: err.print(text))
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}")


FolderOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        help="The folder of the community: its state, logs, nodes and homes.",
        file_okay=False,
    ),
]


@sim_app.command("up")
def up_command(
    config: ConfigOption = None,
    homes: Annotated[
        int | None, typer.Option(min=2, help="How many homes (the first two are yours).")
    ] = None,
    folder: FolderOption = Path("petra-sim"),
    autopilot: Annotated[
        bool,
        typer.Option(
            "--autopilot/--no-autopilot",
            help="Drive every home but the first two with the wallet autopilot.",
        ),
    ] = True,
    interval_s: Annotated[
        int, typer.Option("--interval-s", min=10, help="Seconds per interval.")
    ] = 60,
) -> None:
    """Start the community of `petra sim run` in the background, in real time, to try by hand:
    ledger, replica, DSO, mixer, bid store and a meter per home, on loopback, for a day or
    until `petra sim down`. The first two homes (alice and bob) are yours; print where
    everything is and what to run next."""
    from simulation.up import UpError, describe_lines, standing_config, up

    loaded = _load(config, _overrides(homes=homes))
    try:
        settings = standing_config(loaded, homes=homes, interval_s=interval_s)
        with err.status("starting the community") as status:
            state = up(folder, settings, autopilot=autopilot, on_status=status.update)
    except UpError as exc:
        fail(str(exc))
    typer.echo("\n".join(describe_lines(state)))


@sim_app.command("down")
def down_command(folder: FolderOption = Path("petra-sim")) -> None:
    """Stop the community `petra sim up` started in the folder: every node, meter and agent."""
    from simulation.up import UpError, down, shown

    try:
        with err.status("stopping the community"):
            state = down(folder)
    except UpError as exc:
        fail(str(exc))
    if state is None:
        typer.echo(f"no community is up in {shown(folder.resolve())}: nothing to stop")
        return
    homes = len(state["homes"])
    typer.echo(
        f"stopped the community in {shown(state['folder'])} (pid {state['pid']}): "
        f"{len(state['nodes'])} nodes and {homes} meters; its files stay there"
    )


@sim_app.command("serve-community", hidden=True)
def serve_community_command(
    folder: FolderOption,
    autopilot: Annotated[bool, typer.Option("--autopilot/--no-autopilot")] = True,
) -> None:
    """The background process of `petra sim up` (runs until SIGTERM)."""
    from simulation import HarnessError
    from simulation.up import UpError, serve_community

    try:
        serve_community(folder, autopilot=autopilot)
    except (HarnessError, UpError) as exc:
        fail(str(exc))
