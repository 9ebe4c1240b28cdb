"""`petra bench sim`: wall seconds per simulated interval of a whole community, in-process and
(when the harness is given) as real processes, against a baseline measured in the same run.

Each size runs the default configuration (`SimConfig()`, its seed and tariffs) with that many
prosumers over `intervals` intervals of 900 s, its homes planned by `plan_community`. The
figure is the run's wall time divided by its intervals. The baseline is the floor of what an
interval needs on this machine: the run's own Ed25519 signatures (every signature on its
ledger and on its bills, each made once and verified once) at the rate this machine signs and
verifies, one core; the ratio says how far the whole simulation is above that floor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from assets import Keypair, verify
from simulation.config import SimConfig
from simulation.inprocess import run_in_process
from simulation.profiles import plan_community
from simulation.record import RunRecord

IN_PROCESS = "in-process"
PROCESSES = "processes"
PROCESS_INTERVALS = 8  # a run of processes measures its agents' busy time per interval
GOAL_S = 600.0 / 96  # the goal: 1,000 prosumers, 96 intervals, 10 minutes, 2 cores

RunProcesses = Callable[[SimConfig], RunRecord]


@dataclass(frozen=True, slots=True)
class SimBenchResult:
    """One size in one mode: `seconds_per_interval` of wall time, the run's signatures per
    interval and the baseline seconds they take to make and check once on one core."""

    prosumers: int
    mode: str
    intervals: int
    seconds_per_interval: float
    signatures_per_interval: float
    baseline_s: float

    @property
    def ratio(self) -> float:
        return self.seconds_per_interval / self.baseline_s if self.baseline_s else 0.0


def signature_seconds(samples: int = 2_000) -> float:
    """Seconds one Ed25519 signature takes to make and to verify, one core (PyNaCl)."""
    key = Keypair(bytes(range(32)))
    message = b"PETRA-v1/transfer\x00" + bytes(32)
    public_key = key.public_key
    start = time.perf_counter()
    for _ in range(samples):
        verify(public_key, message, key.sign(message))
    return (time.perf_counter() - start) / samples


def busy_percentile(busy_s: Sequence[float], share: float = 0.95) -> float:
    """The `share` percentile (nearest rank) of the agents' busy seconds per interval: the
    shortest interval, in wall seconds, that almost every home's agent keeps up with."""
    if not busy_s:
        return 0.0
    ordered = sorted(busy_s)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def signatures_in(record: RunRecord) -> int:
    """Every signature the run's ledger and bills carry."""
    on_ledger = sum(
        len(e.tx["signatures"]) if e.tx["type"] == "transfer" else 1 for e in record.ledger
    )
    return on_ledger + len(record.bills)


def bench_sim(
    sizes_in_process: Sequence[int] = (10, 100, 1_000),
    sizes_processes: Sequence[int] = (10, 50),
    intervals: int = 96,
    run_processes: RunProcesses | None = None,
    progress: Callable[[str], None] = lambda _: None,
    process_intervals: int = PROCESS_INTERVALS,
) -> list[SimBenchResult]:
    """Run each size in process, then each in processes if `run_processes` is given (the
    harness's runner; without it those rows are left out); `progress` hears each start."""
    per_signature = signature_seconds()
    results = []
    runs: list[tuple[str, int, Callable[[SimConfig], RunRecord]]] = [
        (IN_PROCESS, n, _in_process) for n in sizes_in_process
    ]
    if run_processes is not None:
        runs += [(PROCESSES, n, run_processes) for n in sizes_processes]
    for mode, prosumers, runner in runs:
        count = process_intervals if mode == PROCESSES else intervals
        progress(f"{prosumers} prosumers, {count} intervals, {mode}")
        config = dataclasses.replace(SimConfig(), homes=prosumers, intervals=count)
        began = time.perf_counter()
        record = runner(config)
        wall = time.perf_counter() - began
        if mode == PROCESSES:  # on its clock a run lasts what its speed says: what the agents
            wall = busy_percentile(record.busy_s) * count  # needed of an interval counts
        signatures = signatures_in(record) / count
        results.append(
            SimBenchResult(
                prosumers=prosumers,
                mode=mode,
                intervals=count,
                seconds_per_interval=round(wall / count, 4),
                signatures_per_interval=round(signatures, 1),
                baseline_s=round(signatures * per_signature, 4),
            )
        )
    return results


def _in_process(config: SimConfig) -> RunRecord:
    return run_in_process(config, plan_community(config))


def run_sim_bench(
    as_json: bool,
    console: Console,
    *,
    sizes_in_process: Sequence[int] = (10, 100, 1_000),
    sizes_processes: Sequence[int] = (10, 50),
    intervals: int = 96,
    run_processes: RunProcesses | None = None,
    process_intervals: int = PROCESS_INTERVALS,
) -> list[SimBenchResult]:
    """`bench_sim`, then a table (or, with `as_json`, one JSON object
    `{"results": [{"prosumers", "mode", "seconds_per_interval"}, ...]}` on standard output)."""
    results = bench_sim(
        sizes_in_process,
        sizes_processes,
        intervals,
        run_processes,
        progress=lambda text: console.print(f"running {text}..."),
        process_intervals=process_intervals,
    )
    if as_json:
        rows = [
            {
                "prosumers": r.prosumers,
                "mode": r.mode,
                "seconds_per_interval": r.seconds_per_interval,
            }
            for r in results
        ]
        print(json.dumps({"results": rows}))
        return results
    table = Table(
        title="petra bench sim",
        caption="baseline: the run's own Ed25519 signatures per interval, each made and "
        "verified once on one core, measured in the same run; goal from the issue: "
        f"1,000 prosumers in-process under {GOAL_S:.2f} s per interval (96 in 10 minutes)",
    )
    for column in ("prosumers", "mode", "s / interval", "signatures / interval", "baseline"):
        table.add_column(column, justify="right")
    table.add_column("s / baseline", justify="right")
    for r in results:
        table.add_row(
            f"{r.prosumers:,}",
            r.mode,
            f"{r.seconds_per_interval:.3f}",
            f"{r.signatures_per_interval:,.0f}",
            f"{r.baseline_s:.3f} s",
            f"{r.ratio:.1f}",
        )
    console.print(table)
    if run_processes is None and sizes_processes:
        console.print(
            "processes rows skipped: no multi-process runner was given "
            "(simulation.harness.run_processes)"
        )
    return results
