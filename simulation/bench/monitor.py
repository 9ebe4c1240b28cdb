"""`petra bench monitor`: samples the monitoring service stores per second over HTTP
(emoncms's `/input/bulk`) and over MQTT, and the time to render a member's year page from a
year of 15-minute data, each against a baseline measured in the same run.

One run: a mosquitto broker and `petra monitor serve` in processes of their own, over a
temporary SQLite store set up with the `petra monitor` commands (a community, a member with a
consumption supply point sharing a generation installation, a write key, the member's login).

- HTTP: `clients` threads post `/input/bulk` requests of 100 items of 10 inputs each, as
  emonhub posts them but larger; each answer comes once its samples are committed. Baseline:
  the same number of rows inserted by plain `sqlite3` into a table keyed like the store's
  samples, on the same disk: the storage's floor without parsing, checks or aggregates.
- MQTT: one publisher sends `emon/<node>` JSON messages of 10 inputs at QoS 1; the figure runs
  from the first publish until the last message's samples are readable through the feed
  API. Baseline: a plain subscriber on the same broker receiving the same messages.
- Year page: a year of 15-minute consumption and generation (70,080 samples) posted first;
  then the member's year page fetched `pages` times after logging in (median). Baseline: the
  login page, which reads nothing, fetched as often.

Goals (issue 18): 5,000 samples/s each way; a year page under a second.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from simulation.bench.ledger_http import progress_bar
from simulation.broker import Mosquitto
from simulation.monitor import start_broker
from simulation.processes import PETRA, PetraProcess, free_port

ZONE = "Europe/Madrid"
YEAR = 2025
QUARTER_S = 900
ITEMS_PER_POST = 100
INPUTS_PER_ITEM = 10
CONSUMPTION_POINT = "ES0021000000000001RK"  # a CUPS with its control letters
GENERATION_POINT = "ES0021000000000002RE"
MEMBER, PASSWORD = "ana", "a bench password"


class MonitorBenchError(Exception):
    """The benchmark could not run: a process did not start or answered an error."""


@dataclass(frozen=True)
class MonitorBench:
    http_samples_per_s: float
    http_baseline_per_s: float  # plain sqlite3 inserts of as many rows
    mqtt_samples_per_s: float
    mqtt_baseline_per_s: float  # a plain subscriber receiving the same messages
    year_page_s: float
    page_baseline_s: float  # the login page
    http_samples: int
    mqtt_samples: int


def run_monitor_bench(
    as_json: bool,
    console: Console,
    *,
    http_samples: int = 200_000,
    mqtt_samples: int = 100_000,
    clients: int = 4,
    pages: int = 5,
) -> MonitorBench:
    """Run the three measurements and print them (JSON with `as_json`)."""
    with tempfile.TemporaryDirectory(prefix="petra-bench-monitor-") as tmp:
        folder = Path(tmp)
        broker = start_broker(folder / "broker")
        try:
            result = _measure(
                folder, broker, console, as_json, http_samples, mqtt_samples, clients, pages
            )
        finally:
            broker.stop()
    _report(result, as_json, console)
    return result


def _measure(
    folder: Path,
    broker: Mosquitto,
    console: Console,
    as_json: bool,
    http_samples: int,
    mqtt_samples: int,
    clients: int,
    pages: int,
) -> MonitorBench:
    store = f"sqlite:///{folder / 'monitor.sqlite'}"
    key = _set_up(folder, store)
    port = free_port()
    config = folder / "monitor.toml"
    config.write_text(
        f'[service]\nstore = "{store}"\n\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    )
    service = PetraProcess(
        ["monitor", "serve", "--config", str(config), "--port", str(port)],
        folder / "monitor.log",
        f"http://127.0.0.1:{port}",
        probe="/login",
        what="monitoring service",
        env={"PETRA_LOG_LEVEL": "warning"},
        error=MonitorBenchError,
    )
    service.wait_until_serving()
    try:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            _wait_mqtt_subscribed(http, broker, key)
            with progress_bar("year of data", as_json, console) as progress:
                _post_year(http, key, progress)
            http_rate = _http_rate(service.url, key, http_samples, clients, as_json, console)
            http_floor = _sqlite_floor(folder / "floor.sqlite", http_samples)
            mqtt_rate, mqtt_floor = _mqtt_rates(http, broker, key, mqtt_samples)
            year_s, login_s = _pages(http, pages)
    finally:
        service.stop()
    return MonitorBench(
        http_rate, http_floor, mqtt_rate, mqtt_floor, year_s, login_s, http_samples, mqtt_samples
    )


def _set_up(folder: Path, store: str) -> str:
    """The community, its master data and feeds, the member's login; a write key."""
    run = _Commands(folder, store)
    run("community", "add", "bench", "--name", "Bench community", "--timezone", ZONE)
    (folder / "members.csv").write_text(f"ref,name,email\n{MEMBER},Ana Bench,\n")
    (folder / "installations.csv").write_text(
        "id,name,peak_kw,cost,commissioned\npv-1,Roof PV,30,30000,2025-01-01\n"
    )
    (folder / "supply_points.csv").write_text(
        "cups,member,kind,contracted_kw,share,installation\n"
        f"{CONSUMPTION_POINT},{MEMBER},consumption,5.75,0.1,\n"
        f"{GENERATION_POINT},,generation,,,pv-1\n"
    )
    run(
        "import",
        "members",
        *(str(folder / f) for f in ("members.csv", "installations.csv", "supply_points.csv")),
        "--community",
        "bench",
    )
    (folder / "feeds.csv").write_text(
        "node,name,kind,unit,supply_point,role\n"
        f"ana,power,power,W,{CONSUMPTION_POINT},consumption\n"
        f"roof,power,power,W,{GENERATION_POINT},generation\n"
    )
    run("feed", "import", str(folder / "feeds.csv"))
    password = folder / "password"
    password.write_text(PASSWORD + "\n")
    run(
        "user",
        "add",
        MEMBER,
        "--role",
        "member",
        "--community",
        "bench",
        "--member",
        MEMBER,
        "--password-file",
        str(password),
    )
    key = run("key", "create", "bench", "--write").strip().splitlines()[-1].strip()
    if not re.fullmatch(r"[0-9a-f]{32}", key):
        raise MonitorBenchError(f"`petra monitor key create` printed {key!r}, not a key")
    return key


class _Commands:
    def __init__(self, folder: Path, store: str) -> None:
        self.folder, self.store = folder, store

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [*PETRA, "monitor", *args, "--store", self.store],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise MonitorBenchError(
                f"`petra monitor {' '.join(args[:2])}` failed: {done.stderr.strip()[-300:]}"
            )
        return done.stdout


def _year_times() -> range:
    start = int(datetime(YEAR, 1, 1, tzinfo=ZoneInfo(ZONE)).timestamp())
    end = int(datetime(YEAR + 1, 1, 1, tzinfo=ZoneInfo(ZONE)).timestamp())
    return range(start, end, QUARTER_S)


def _post_year(http: httpx.Client, key: str, progress: object) -> None:
    """A year of 15-minute power of the member (node `ana`) and of the roof PV (`roof`)."""
    times = _year_times()
    task = progress.add_task("posting", total=len(times))  # type: ignore[attr-defined]
    for first in range(0, len(times), 5_000):
        chunk = times[first : first + 5_000]
        data = []
        for t in chunk:
            hour = (t % 86_400) / 3_600
            sun = max(0.0, math.sin(math.pi * (hour - 6) / 12))
            data.append([t, "ana", {"power": round(300 + 200 * math.sin(t / 7_000), 1)}])
            data.append([t, "roof", {"power": round(25_000 * sun, 1)}])
        _bulk(http, key, data)
        progress.update(task, advance=len(chunk))  # type: ignore[attr-defined]
    for node in ("ana", "roof"):  # a page of an empty year would measure nothing
        if _feed_time(http, key, node, "power") != times[-1]:
            raise MonitorBenchError(f"the year of {node}/power was not stored")


def _bulk(http: httpx.Client, key: str, data: list[list[object]]) -> None:
    answer = http.post("/input/bulk", data={"data": json.dumps(data), "apikey": key})
    if answer.status_code != 200:
        raise MonitorBenchError(f"/input/bulk answered {answer.status_code}: {answer.text[:200]}")


def _http_rate(
    url: str, key: str, samples: int, clients: int, as_json: bool, console: Console
) -> float:
    """Samples per second stored through `/input/bulk` by `clients` threads."""
    per_post = ITEMS_PER_POST * INPUTS_PER_ITEM
    posts = max(1, samples // per_post)
    base = int(time.time()) - 30 * 86_400
    bodies = []
    for n in range(posts):
        items = [
            [base + n * ITEMS_PER_POST + i, f"http{n % 50}", *range(INPUTS_PER_ITEM)]
            for i in range(ITEMS_PER_POST)
        ]
        bodies.append(json.dumps(items))
    done = threading.Lock()
    with progress_bar("HTTP /input/bulk", as_json, console) as progress:
        task = progress.add_task("posting", total=posts)

        def post(chunk: list[str]) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                for body in chunk:
                    answer = http.post("/input/bulk", data={"data": body, "apikey": key})
                    if answer.status_code != 200:
                        raise MonitorBenchError(
                            f"/input/bulk answered {answer.status_code}: {answer.text[:200]}"
                        )
                    with done:
                        progress.update(task, advance=1)

        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for future in [pool.submit(post, bodies[c::clients]) for c in range(clients)]:
                future.result()
        elapsed = time.perf_counter() - began
    return posts * per_post / elapsed


def _sqlite_floor(path: Path, samples: int) -> float:
    """Rows per second plain sqlite3 inserts, a commit per 1,000 like a bulk post."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE sample (feed_id INTEGER, t INTEGER, value REAL, estimated BOOLEAN, "
        "PRIMARY KEY (feed_id, t))"
    )
    per_post = ITEMS_PER_POST * INPUTS_PER_ITEM
    began = time.perf_counter()
    for n in range(max(1, samples // per_post)):
        rows = [
            (feed, n * ITEMS_PER_POST + i, float(feed), False)
            for i in range(ITEMS_PER_POST)
            for feed in range(INPUTS_PER_ITEM)
        ]
        with conn:
            conn.executemany("INSERT INTO sample VALUES (?, ?, ?, ?)", rows)
    elapsed = time.perf_counter() - began
    conn.close()
    return max(1, samples // per_post) * per_post / elapsed


def _wait_mqtt_subscribed(http: httpx.Client, broker: Mosquitto, key: str) -> None:
    """Publish a probe until the service has it: its MQTT subscription is live."""
    client = _mqtt_client(broker)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            client.publish("emon/probe", json.dumps({"ready": 1}), qos=1).wait_for_publish(5)
            if _feed_time(http, key, "probe", "ready") is not None:
                return
            time.sleep(0.2)
    finally:
        client.loop_stop()
        client.disconnect()
    raise MonitorBenchError("the monitoring service never stored an MQTT message")


def _mqtt_client(broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1_000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _feed_time(http: httpx.Client, key: str, node: str, name: str) -> int | None:
    answer = http.get("/feed/list.json", params={"apikey": key})
    if answer.status_code != 200:
        return None
    for feed in answer.json():
        if feed.get("tag") == node and feed.get("name") == name:
            value = feed.get("time")
            return None if value in (None, "") else int(float(value))
    return None


def _mqtt_rates(
    http: httpx.Client, broker: Mosquitto, key: str, samples: int
) -> tuple[float, float]:
    """(stored samples/s, a plain subscriber's samples/s) for `samples` over MQTT."""
    messages = max(1, samples // INPUTS_PER_ITEM)
    base = int(time.time()) - 20 * 86_400
    payloads = [
        json.dumps({"time": base + n, **{f"in{i}": float(i + n) for i in range(INPUTS_PER_ITEM)}})
        for n in range(messages)
    ]
    received = threading.Event()
    count = [0]
    subscriber_done: list[float] = []

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] == messages:
            subscriber_done.append(time.perf_counter())
            received.set()

    subscribed = threading.Event()
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2)
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect(broker.host, broker.port)
    subscriber.loop_start()
    subscriber.subscribe("emon/mqttbench", qos=1)
    subscribed.wait(10)
    publisher = _mqtt_client(broker)
    try:
        began = time.perf_counter()
        for payload in payloads:
            publisher.publish("emon/mqttbench", payload, qos=1)
        last = base + messages - 1
        deadline = time.monotonic() + 600
        while _feed_time(http, key, "mqttbench", f"in{INPUTS_PER_ITEM - 1}") != last:
            if time.monotonic() > deadline:
                raise MonitorBenchError("the MQTT messages were not all stored in 10 minutes")
            time.sleep(0.05)
        stored_s = time.perf_counter() - began
        received.wait(60)
    finally:
        for client in (publisher, subscriber):
            client.loop_stop()
            client.disconnect()
    floor_s = (subscriber_done[0] if subscriber_done else time.perf_counter()) - began
    return messages * INPUTS_PER_ITEM / stored_s, messages * INPUTS_PER_ITEM / floor_s


def _pages(http: httpx.Client, pages: int) -> tuple[float, float]:
    """(median seconds of the member's year page, of the login page)."""
    login = http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', login.text)
    form = {"username": MEMBER, "password": PASSWORD, "csrf": token.group(1) if token else ""}
    answer = http.post("/login", data=form, follow_redirects=False)
    if answer.status_code not in (302, 303):
        raise MonitorBenchError(f"logging in answered {answer.status_code}: {answer.text[:200]}")
    year = f"/member/supply/{CONSUMPTION_POINT}"
    params = {"view": "year", "date": f"{YEAR}-06-01"}

    def timed(get: Callable[[], httpx.Response]) -> float:
        began = time.perf_counter()
        answer = get()
        elapsed = time.perf_counter() - began
        if answer.status_code != 200:
            raise MonitorBenchError(f"a page answered {answer.status_code}: {answer.text[:200]}")
        return elapsed

    year_s = statistics.median(timed(lambda: http.get(year, params=params)) for _ in range(pages))
    with httpx.Client(base_url=http.base_url, timeout=60) as stranger:  # no session: the form
        login_s = statistics.median(timed(lambda: stranger.get("/login")) for _ in range(pages))
    return year_s, login_s


def _report(result: MonitorBench, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(asdict(result), sort_keys=True))
        return
    table = Table(title="petra bench monitor")
    for column in ("path", "figure", "baseline", "ratio", "goal"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row(
        "HTTP /input/bulk",
        f"{result.http_samples_per_s:,.0f}/s",
        f"{result.http_baseline_per_s:,.0f}/s",
        f"{result.http_samples_per_s / result.http_baseline_per_s:.2f}",
        ">= 5,000/s",
    )
    table.add_row(
        "MQTT emon/<node>",
        f"{result.mqtt_samples_per_s:,.0f}/s",
        f"{result.mqtt_baseline_per_s:,.0f}/s",
        f"{result.mqtt_samples_per_s / result.mqtt_baseline_per_s:.2f}",
        ">= 5,000/s",
    )
    table.add_row(
        "member's year page",
        f"{result.year_page_s * 1000:,.0f} ms",
        f"{result.page_baseline_s * 1000:,.0f} ms",
        f"{result.year_page_s / result.page_baseline_s:.1f}",
        "< 1,000 ms",
    )
    console.print(table)
    console.print(
        "Samples stored per second; baselines of the same run: plain sqlite3 inserting as "
        "many rows, a plain MQTT subscriber receiving the same messages, the login page."
    )
