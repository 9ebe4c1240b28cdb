"""`petra sim run`: plan a community, run it (as processes, or in-process), compute its metrics
from what the nodes recorded and write the report, with a progress bar on the way.

Ctrl-C (or SIGTERM) ends the run early: every process the harness started is stopped, and the
report of the intervals run so far is still written, marked incomplete.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simulation.config import SimConfig
from simulation.profiles import HomePlan, plan_community
from simulation.record import RunRecord


@dataclass(frozen=True)
class RunOutcome:
    """A finished (or stopped) run: its record, metrics and report folder."""

    record: RunRecord
    metrics: dict[str, Any]
    folder: Path
    report: Path


def run_folder(config: SimConfig, now: datetime | None = None) -> Path:
    """`<report_dir>/<UTC time>-<name>`: a new folder per run, its name safe on every system."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9]+", "-", config.name.lower()).strip("-")[:40] or "run"
    return Path(config.report_dir) / f"{stamp}-{slug}"


@contextmanager
def stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set `stop` on SIGINT or SIGTERM while inside (main thread only), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


def simulate(
    config: SimConfig,
    *,
    in_process: bool = False,
    console: Console | None = None,
    folder: Path | None = None,
    stop: threading.Event | None = None,
) -> RunOutcome:
    """Run `config`'s community and write its report; the outcome."""
    from simulation.metrics import compute_metrics
    from simulation.report import write_report

    console = console or Console(stderr=True)
    folder = folder or run_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    with console.status("planning the homes' profiles"):
        plans = plan_community(config)
    mode = "in-process" if in_process else "processes"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("intervals"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{len(plans)} homes, {mode}", total=config.intervals)
        with stopping_on_signals(stop):
            if in_process:
                record = _in_process(config, plans, progress, task, stop)
            else:
                record = _processes(config, plans, folder, progress, task, stop)
    metrics = compute_metrics(record).to_wire()
    files = write_report(record, metrics, folder)
    return RunOutcome(record, metrics, folder, files.html)


def _in_process(
    config: SimConfig,
    plans: list[HomePlan],
    progress: Progress,
    task: Any,
    stop: threading.Event,
) -> RunRecord:
    from simulation.inprocess import run_in_process

    def advanced(done: int) -> None:
        progress.update(task, completed=done)

    return run_in_process(config, plans, progress=advanced, stop=stop)


def _processes(
    config: SimConfig,
    plans: list[HomePlan],
    folder: Path,
    progress: Progress,
    task: Any,
    stop: threading.Event,
) -> RunRecord:
    from simulation.harness import Community

    def status(text: str) -> None:
        progress.update(task, description=text)

    def advanced(done: int, total: int) -> None:
        progress.update(task, completed=done, description=f"{len(plans)} homes, processes")

    with Community(
        config, plans, folder, on_interval=advanced, on_status=status, stop=stop
    ) as community:
        community.start()  # a failure here stops everything started; there is nothing to report
        try:
            community.run()
        finally:
            progress.update(task, description="reading back what the nodes recorded")
            record = community.record()
    return record
