"""`petra bench community`: the coefficient optimiser's wall time and objective per community
size. Registered by the command line's bench group:
`bench_app.command("community")(bench_community_command)`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from petra.console import fail


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        fail(f"--sizes must be comma-separated numbers of members, not {text!r}")
    if not sizes or any(n < 1 for n in sizes):
        fail("--sizes: give at least one size, each of at least 1 member")
    return sizes


def bench_community_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
    sizes: Annotated[
        str, typer.Option("--sizes", help="Community sizes to run, members, comma-separated.")
    ] = "10,100,1000",
    seed: Annotated[int, typer.Option(min=0, help="Seed the communities are drawn from.")] = 1,
) -> None:
    """Wall seconds of the coefficient optimiser for a year of hourly coefficients per
    community size, and the energy the community uses itself with them, beside the best
    static agreement, equal shares and the dynamic allocation, in-sample and out-of-sample."""
    from simulation.bench import community as community_bench

    community_bench.run_community_bench(
        as_json, Console(stderr=as_json), sizes=_sizes(sizes), seed=seed
    )
