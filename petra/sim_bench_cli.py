"""`petra bench sim`: the simulation's wall time per simulated interval. Registered by the
command line's bench group: `bench_app.command("sim")(bench_sim_command)`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from petra.console import fail


def _sizes(text: str, option: str) -> list[int]:
    try:
        sizes = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        fail(f"{option} must be comma-separated numbers of prosumers, not {text!r}")
    if any(n < 1 for n in sizes):
        fail(f"{option}: every size is at least 1 prosumer")
    return sizes


def bench_sim_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
    in_process: Annotated[
        str, typer.Option("--in-process", help="Community sizes to run in one process.")
    ] = "10,100,1000",
    processes: Annotated[
        str,
        typer.Option("--processes", help="Community sizes to run as real processes ('' none)."),
    ] = "10,50",
    intervals: Annotated[
        int, typer.Option(min=1, help="Simulated intervals (900 s each) per in-process run.")
    ] = 96,
    process_intervals: Annotated[
        int,
        typer.Option(
            min=2,
            help="Intervals per run of processes (its figure is the agents' busy seconds per "
            "interval, 95th percentile: the shortest interval they keep up with).",
        ),
    ] = 8,
) -> None:
    """Wall seconds per simulated interval of a whole community, in-process and as real
    processes, against the run's own Ed25519 signatures made and verified once on one core."""
    from simulation.bench import sim as sim_bench

    runner: sim_bench.RunProcesses | None = None
    if processes.strip():
        from simulation.harness import run_processes

        runner = run_processes
    sim_bench.run_sim_bench(
        as_json,
        Console(stderr=as_json),
        sizes_in_process=_sizes(in_process, "--in-process"),
        sizes_processes=_sizes(processes, "--processes"),
        intervals=intervals,
        run_processes=runner,
        process_intervals=process_intervals,
    )
