"""`petra bench meter`: the smart-meter daemon's resident memory and CPU share while it polls an
SDM630 and a SunSpec inverter every second, publishes its readings and bills the DSO, against
a bare interpreter measured in the same run and against the goals for a small board.

One run, every node a process on loopback: `petra ledger serve`, `petra dso serve` (its store
set up by `petra dso init`, the tariff and the meter authorized by its admin API), a mosquitto
broker, the two devices served over Modbus TCP by pymodbus in threads of this process, and
`petra meter run --config` polling both every second (`poll_s = 1`) and publishing each
reading to the broker. The ledger clock runs `SPEED` times as fast as the wall clock on a chain
of one-minute intervals, so an interval closes and its bill goes to the DSO every few wall
seconds. Once the meter has billed once (the warm-up), its VmRSS is sampled from /proc twice
a second and its CPU time (utime + stime of every thread) is read at both ends of the
measured span. The baseline: a bare Python process of the same interpreter waking once a
second, measured over the same span.

The figures are for the daemon as deployed, but billing runs far more often than on a chain of
15-minute intervals (every `INTERVAL_S / SPEED` wall seconds instead of every 900), so the
CPU share errs high.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from assets import Keypair
from assets.keyfile import dump_keys
from service import LedgerClock
from simulation.bench.ledger_http import progress_bar
from simulation.broker import BrokerError, Mosquitto, mosquitto_executable
from simulation.devices import SimulatedSdm630, SimulatedSunSpecInverter
from simulation.processes import (
    HOST,
    LedgerProcess,
    PetraProcess,
    free_port,
    log_tail,
    start_petra,
    stop,
)
from simulation.scenario import Scenario

DEFAULT_SECONDS = 60
INTERVAL_S = 60  # the bench chain's interval, ledger seconds
SPEED = 10  # ledger seconds per wall second: an interval closes every 6 wall seconds
POLL_S = 1  # wall seconds between two reads of each device
CLOSING_DELAY_S = 5  # ledger seconds after an interval ends before the meter closes its bill
SAMPLE_S = 0.5  # wall seconds between two reads of VmRSS
WARM_UP_S = 5.0  # at least this long before measuring: imports, connections, first polls
FIRST_BILL_TIMEOUT_S = 60.0  # the warm-up ends at the first bill, or after this long anyway
SETUP_TIMEOUT_S = 60.0
METER = "ES0021000000000001AB"
NODE = "bench"  # the meter publishes to emon/bench
GRID_W = 1_500.0  # the household's draw through the SDM630
PV_W = 3_000.0  # the inverter's production
MAX_W = 100_000  # the meter's MAXEPA and MAXECA
MB = 1_000_000  # the goal's unit, as issue 20 states it (systemd's M is MiB)
BASELINE_CODE = "import time\nwhile True:\n    time.sleep(1)\n"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class MeterBenchError(Exception):
    """The meter, or what it needs, could not run; the message is one sentence."""


@dataclass(frozen=True)
class Footprint:
    """One process over the measured span: resident memory (MB of 10^6 bytes, peak and mean
    of the samples) and CPU time over wall time (a fraction of one core)."""

    rss_mb: float
    rss_mean_mb: float
    cpu_share: float


@dataclass(frozen=True)
class Goal:
    """What the meter should stay under on a small board (issue 20)."""

    rss_mb: float = 80.0
    cpu_share: float = 0.05


@dataclass(frozen=True)
class MeterBench:
    """The run's figures. `rss_mb` is the peak resident memory in MB, `cpu_share` a fraction
    of one core; the ratios are the meter's figure over the baseline's (None when the
    baseline used less than a clock tick) and over the goal's."""

    rss_mb: float
    rss_mean_mb: float
    cpu_share: float
    baseline: Footprint
    goals: Goal
    rss_vs_baseline: float
    cpu_vs_baseline: float | None
    rss_vs_goal: float
    cpu_vs_goal: float
    seconds: float
    samples: int
    simulated_minutes: float
    readings_published: int
    published_by_source: dict[str, int]
    bills: dict[str, int]
    bills_received: int
    poll_s: float
    interval_s: int
    speed: float
    note: str


@dataclass
class _Subscriber:
    """Counts the meter's published readings by source (`<source>_...` inputs), on the
    broker, from a client of its own."""

    broker: Mosquitto
    topic: str
    by_source: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: client.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._message
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(SETUP_TIMEOUT_S):
            self.close()
            raise MeterBenchError(f"could not subscribe to {self.topic} on the bench's broker")

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        inputs = json.loads(message.payload)
        sources = {key.partition("_")[0] for key in inputs if key != "time"}
        with self._lock:
            self.by_source.update(sources)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_source)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class _Run:
    """What the measurement watches and asks: the processes and the DSO's bills."""

    meter: PetraProcess
    baseline: subprocess.Popen[bytes]
    published: _Subscriber
    bills: Callable[[], list[dict[str, Any]]]


def cpu_seconds(pid: int) -> float:
    """CPU time of process `pid` so far (utime + stime of all its threads, exited ones too),
    seconds, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # After the command's name, in parentheses, fields count from 3 (state): utime is 14.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` now (VmRSS), bytes, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel counts in kB
    raise MeterBenchError(f"process {pid} has no resident memory: it has exited")


def run_meter_bench(
    as_json: bool, console: Console, seconds: float = DEFAULT_SECONDS
) -> MeterBench:
    """Run the benchmark for `seconds` wall seconds after the warm-up and print its figures;
    `MeterBenchError` if the meter or what it needs could not run."""
    executable = mosquitto_executable()
    if executable is None:
        raise MeterBenchError("the meter bench needs mosquitto: run `make system-deps`")
    started = time.time()
    clock = LedgerClock(start=started, origin=started, speed=SPEED)
    with (
        tempfile.TemporaryDirectory(prefix="petra-bench-meter-") as name,
        progress_bar("{task.description}", as_json, console) as progress,
        _community(Path(name), executable, clock, progress) as run,
    ):
        _warm_up(run, progress)
        meter, baseline, wall_s, samples = _measure(run, seconds, progress)
        published = run.published.counts()
        bills = Counter(bill["status"] for bill in run.bills())
    result = _result(meter, baseline, wall_s, samples, published, bills, clock, started)
    _report(result, as_json, console)
    return result


@contextmanager
def _community(
    tmp: Path, mosquitto: Path, clock: LedgerClock, progress: Progress
) -> Iterator[_Run]:
    """The ledger, the DSO, the broker, the devices, the meter and the baseline, started on
    loopback in `tmp`; all stopped on leaving, whatever happened."""
    env = {"PETRA_CLOCK": f"start={clock.start},speed={clock.speed},origin={clock.origin}"}
    now = int(clock.start)
    scenario = Scenario(
        name="PETra meter bench",
        interval_s=INTERVAL_S,
        epoch=now - now % INTERVAL_S - 10 * INTERVAL_S,
    )
    setup = progress.add_task("starting the ledger, the DSO, the broker and the devices", total=5)
    with ExitStack() as stack:
        genesis = tmp / "genesis.json"
        genesis.write_bytes(scenario.genesis_raw)
        (tmp / "ledger-keys.json").write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
        # The DSO's and the meter's keys must be sealed; the ledger's may be in clear.
        passphrase = secrets.token_urlsafe(24)
        (tmp / "dso-keys.json").write_bytes(dump_keys({"dso-0": scenario.dso}, passphrase.encode()))
        ledger = LedgerProcess(
            genesis,
            tmp / "ledger-keys.json",
            f"sqlite:///{tmp / 'ledger.sqlite'}",
            tmp / "ledger.log",
            env=env,
            error=MeterBenchError,
        )
        stack.callback(ledger.stop)
        ledger.wait_until_serving()
        progress.advance(setup)

        (tmp / "broker").mkdir()
        broker = Mosquitto(mosquitto, tmp / "broker", free_port())
        stack.callback(broker.stop)
        try:
            broker.start()
        except BrokerError as exc:
            raise MeterBenchError(str(exc)) from None
        progress.advance(setup)

        sealed = {**env, "PETRA_PASSPHRASE": passphrase}
        dso_url, token = _start_dso(stack, tmp, genesis, ledger.url, sealed)
        progress.advance(setup)
        dso = stack.enter_context(
            httpx.Client(base_url=dso_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        )
        meter_key = Keypair.generate()
        in_force = _authorize(dso, meter_key)
        progress.advance(setup)

        grid = stack.enter_context(SimulatedSdm630(profile=[(0.0, GRID_W)], clock=clock.now))
        pv = stack.enter_context(SimulatedSunSpecInverter(profile=[(0.0, PV_W)], clock=clock.now))
        published = _Subscriber(broker, f"emon/{NODE}")
        stack.callback(published.close)
        progress.advance(setup)

        waiting = progress.add_task("waiting for the meter's authorization to come in force")
        while (clock.now() - scenario.epoch) // INTERVAL_S < in_force:
            time.sleep(0.1)
        progress.update(waiting, total=1, completed=1)

        (tmp / "meter-keys.json").write_bytes(dump_keys({"meter": meter_key}, passphrase.encode()))
        config, meter_port = _meter_config(tmp, ledger.url, dso_url, broker, grid.port, pv.port)
        meter = PetraProcess(
            ["meter", "run", "--config", str(config)],
            tmp / "meter.log",
            f"http://{HOST}:{meter_port}",
            probe="/v1/status",
            what="meter daemon",
            env=sealed,
            unset=(),
            error=MeterBenchError,
        )
        stack.callback(meter.stop)
        baseline = subprocess.Popen(
            [sys.executable, "-c", BASELINE_CODE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # so that `stop` ends its group
        )
        stack.callback(stop, baseline)
        meter.wait_until_serving()

        def bills() -> list[dict[str, Any]]:
            answer = dso.get("/v1/bills", params={"meter": METER})
            if answer.status_code != 200:
                raise MeterBenchError(
                    f"the DSO answered the bench's query for bills with {answer.status_code}"
                )
            found: list[dict[str, Any]] = answer.json()["bills"]
            return found

        yield _Run(meter, baseline, published, bills)


def _start_dso(
    stack: ExitStack, tmp: Path, genesis: Path, ledger_url: str, env: dict[str, str]
) -> tuple[str, str]:
    """`petra dso init` then `petra dso serve` following the ledger; its URL and the admin's
    token."""
    store = f"sqlite:///{tmp / 'dso.sqlite'}"
    token = tmp / "dso-token"
    log = tmp / "dso-init.log"
    init = start_petra(
        *("dso", "init", "--store", store, "--admin", "bench", "--token-out", str(token)),
        log=log,
        env=env,
    )
    try:
        code = init.wait(SETUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(init)
        code = -1
    if code != 0:
        raise MeterBenchError(f"`petra dso init` failed: {log_tail(log, 3)}")
    port = free_port()
    dso = PetraProcess(
        [
            *("dso", "serve", "--genesis", str(genesis), "--keys", str(tmp / "dso-keys.json")),
            *("--ledger", ledger_url, "--store", store, "--port", str(port)),
            *("--metrics-port", "0"),
        ],
        tmp / "dso.log",
        f"http://{HOST}:{port}",
        probe="/v1/status",
        what="DSO node",
        env=env,
        unset=(),
        error=MeterBenchError,
    )
    stack.callback(dso.stop)
    dso.wait_until_serving()
    return dso.url, token.read_text().strip()


def _authorize(dso: httpx.Client, meter_key: Keypair) -> int:
    """Set the tariff and authorize the meter at the DSO; the interval both are in force."""
    body = {
        "meter": METER,
        "public_key": meter_key.public_key.hex(),
        "max_epa": MAX_W,
        "max_eca": MAX_W,
        "owner": "bench",
    }
    tariff = {"price_consumption": 250_000, "price_production": 80_000}
    effective = []
    for answer in (dso.put("/v1/tariff", json=tariff), dso.post("/v1/meters", json=body)):
        if answer.status_code not in (200, 201):
            raise MeterBenchError(
                f"the DSO refused the bench's regulation: {answer.status_code} {answer.text}"
            )
        effective.append(int(answer.json()["effective_from"]))
    return max(effective)


def _meter_config(
    tmp: Path, ledger_url: str, dso_url: str, broker: Mosquitto, grid_port: int, pv_port: int
) -> tuple[Path, int]:
    """The meter's TOML configuration, written in `tmp`, and its owner API's port. It serves
    its metrics, on a free port, as a deployed meter does."""
    api_port = free_port()
    sources = "\n".join(
        f'[[source]]\nname = "{name}"\nkind = "{kind}"\nport = {port}\n'
        f"poll_s = {POLL_S}\nmax_gap_s = 600\n"
        for name, kind, port in (("grid", "sdm630", grid_port), ("pv", "sunspec", pv_port))
    )
    config = tmp / "meter.toml"
    config.write_text(
        f'[meter]\nid = "{METER}"\nkeys = "meter-keys.json"\ngenesis = "genesis.json"\n'
        f'owner = "{Keypair.generate().public_key.hex()}"\nledger = "{ledger_url}"\n'
        f'dso = "{dso_url}"\nstore = "sqlite:///meter.sqlite"\n'
        f"closing_delay_s = {CLOSING_DELAY_S}\ncredit_line = 1000000\napi_port = {api_port}\n"
        f"metrics_port = {free_port()}\n\n"
        f'[publish]\nhost = "{broker.host}"\nport = {broker.port}\nnode = "{NODE}"\n\n' + sources
    )
    return config, api_port


def _check_running(run: _Run) -> None:
    if run.meter.process.poll() is not None:
        raise MeterBenchError(
            f"the meter daemon exited ({run.meter.process.returncode}): {run.meter.log_tail(3)}"
        )


def _warm_up(run: _Run, progress: Progress) -> None:
    """Wait `WARM_UP_S`, and until the DSO has the meter's first bill (at most
    `FIRST_BILL_TIMEOUT_S`: without one the run goes on, and reports no bills)."""
    task = progress.add_task("warming up: until the meter's first bill reaches the DSO")
    began = time.monotonic()
    while time.monotonic() - began < FIRST_BILL_TIMEOUT_S:
        _check_running(run)
        if time.monotonic() - began >= WARM_UP_S and run.bills():
            break
        time.sleep(SAMPLE_S)
    progress.update(task, total=1, completed=1)


def _measure(
    run: _Run, seconds: float, progress: Progress
) -> tuple[Footprint, Footprint, float, int]:
    """The meter's and the baseline's footprints over `seconds` wall seconds; the span's
    length as measured and the number of memory samples."""
    task = progress.add_task(
        f"measuring the meter and the baseline for {seconds:g} s", total=seconds
    )
    pids = (run.meter.process.pid, run.baseline.pid)
    try:
        cpu_before = [cpu_seconds(pid) for pid in pids]
        began = time.monotonic()
        rss: tuple[list[int], list[int]] = ([], [])
        while True:
            _check_running(run)
            for pid, samples in zip(pids, rss, strict=True):
                samples.append(rss_bytes(pid))
            elapsed = time.monotonic() - began
            progress.update(task, completed=min(elapsed, seconds))
            if elapsed >= seconds:
                break
            time.sleep(min(SAMPLE_S, seconds - elapsed))
        cpu_after = [cpu_seconds(pid) for pid in pids]
        wall_s = time.monotonic() - began
    except (FileNotFoundError, ProcessLookupError):
        _check_running(run)
        raise MeterBenchError("the baseline process exited while it was measured") from None
    meter, baseline = (
        Footprint(
            rss_mb=round(max(samples) / MB, 1),
            rss_mean_mb=round(statistics.fmean(samples) / MB, 1),
            cpu_share=round((after - before) / wall_s, 4),
        )
        for samples, before, after in zip(rss, cpu_before, cpu_after, strict=True)
    )
    return meter, baseline, wall_s, len(rss[0])


def _result(
    meter: Footprint,
    baseline: Footprint,
    wall_s: float,
    samples: int,
    published: dict[str, int],
    bills: Counter[str],
    clock: LedgerClock,
    started: float,
) -> MeterBench:
    goal = Goal()
    ticks = 1 / TICKS_PER_S
    return MeterBench(
        rss_mb=meter.rss_mb,
        rss_mean_mb=meter.rss_mean_mb,
        cpu_share=meter.cpu_share,
        baseline=baseline,
        goals=goal,
        rss_vs_baseline=round(meter.rss_mb / baseline.rss_mb, 2),
        cpu_vs_baseline=(
            round(meter.cpu_share / baseline.cpu_share, 1) if baseline.cpu_share > 0 else None
        ),
        rss_vs_goal=round(meter.rss_mb / goal.rss_mb, 3),
        cpu_vs_goal=round(meter.cpu_share / goal.cpu_share, 3),
        seconds=round(wall_s, 1),
        samples=samples,
        simulated_minutes=round((clock.now() - started) / 60, 1),
        readings_published=sum(published.values()),
        published_by_source=published,
        bills=dict(bills),
        bills_received=sum(bills.values()),
        poll_s=POLL_S,
        interval_s=INTERVAL_S,
        speed=SPEED,
        note=(
            f"memory sampled every {SAMPLE_S:g} s, CPU time in clock ticks of {ticks * 1000:g} "
            f"ms; the ledger clock ran {SPEED}x, so the meter closed and sent a bill every "
            f"{INTERVAL_S / SPEED:g} wall seconds (on a 15-minute chain, every 900)"
        ),
    )


def _report(result: MeterBench, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(asdict(result)))
        return
    table = Table(title="petra bench meter", show_header=True, caption=result.note)
    for column in ("measure", "meter", "baseline", "meter / baseline", "goal", "meter / goal"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    base, goal = result.baseline, result.goals
    table.add_row(
        "resident memory, peak",
        f"{result.rss_mb:.1f} MB",
        f"{base.rss_mb:.1f} MB",
        f"{result.rss_vs_baseline:.2f}",
        f"{goal.rss_mb:.0f} MB",
        f"{result.rss_vs_goal:.3f}",
    )
    table.add_row(
        "resident memory, mean",
        f"{result.rss_mean_mb:.1f} MB",
        f"{base.rss_mean_mb:.1f} MB",
        f"{result.rss_mean_mb / base.rss_mean_mb:.2f}",
        "",
        "",
    )
    table.add_row(
        "CPU, share of one core",
        f"{result.cpu_share:.2%}",
        f"{base.cpu_share:.2%}",
        "—" if result.cpu_vs_baseline is None else f"{result.cpu_vs_baseline:.1f}",
        f"{goal.cpu_share:.0%}",
        f"{result.cpu_vs_goal:.3f}",
    )
    console.print(table)
    by_source = ", ".join(
        f"{n} {source}" for source, n in sorted(result.published_by_source.items())
    )
    bills = ", ".join(f"{n} {status}" for status, n in sorted(result.bills.items())) or "none"
    console.print(
        f"In the whole run ({result.simulated_minutes:g} simulated minutes): "
        f"{result.readings_published} readings published ({by_source or 'none'}); bills at the "
        f"DSO: {bills}. Baseline: a bare `{Path(sys.executable).name}` waking "
        f"every {POLL_S} s."
    )
