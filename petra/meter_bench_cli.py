"""`petra bench meter`: the smart-meter daemon's resident memory and CPU share on a small board's
workload. Registered by the command line's bench group:
`bench_app.command("meter")(bench_meter_command)`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from petra.console import fail


def bench_meter_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
    seconds: Annotated[
        float,
        typer.Option(min=1, help="Wall seconds to measure for, after the warm-up."),
    ] = 60,
) -> None:
    """The meter daemon's resident memory and CPU share while it polls an SDM630 and a SunSpec
    inverter every second, publishes its readings and bills the DSO on an accelerated clock,
    against a bare interpreter of the same run and the goals (80 MB, 5 % of one core)."""
    from simulation.bench import meter as meter_bench

    try:
        meter_bench.run_meter_bench(as_json, Console(stderr=as_json), seconds=seconds)
    except meter_bench.MeterBenchError as exc:
        fail(str(exc))
