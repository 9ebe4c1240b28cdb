"""Sources of readings turned into stored readings and interval energy: the part of the meter
daemon that reads its devices.

A `SourceRunner` per configured source (`smartmeter.config.SourceConfig`) does, for each
sample, in this order:

1. store it (`MeterStore.add_reading`, durable when it returns), a refused frame or payload
   (`BadFrame`, `BadPayload`) with its reason, so nothing read is ever lost;
2. give it to the source's `IntervalMeter`; a reading the meter rejects gets the rejection as
   its stored `problem`. A refused frame is given to the meter as a NaN reading, which the
   meter refuses, marking the interval it fell in `suspect` (add() is the meter's only door);
3. close the intervals that are final (`IntervalMeter.close(now)`) and store them with the
   meter's checkpoint in one transaction (`MeterStore.close_intervals`).

The checkpoint holds the last reading's sequence number, so a new runner restores the meter
and replays the readings stored after it: a reading stored just before a crash still counts.

Modbus sources (`sdm630`, `sunspec`) are polled every `poll_s` by a thread calling
`poll_once()`; an unreachable device is logged once per outage and retried with the reader's
own backoff. MQTT sources (`mqtt`, formats `emoncms`, `shelly` and `json`) are fed by the broker's
messages; their thread only closes intervals every `poll_s`. Samples are stamped, and
intervals closed, by the runner's `clock` (ledger unix seconds, `service.clock`: readings are
assigned to intervals); the reconnect backoff is timed by `backoff_clock` (monotonic seconds),
and a test may give it the same manual clock to drive them all. `poll_s` is wall seconds: on
an accelerated ledger clock readings are that many times further apart in ledger time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.clock import now as ledger_now
from smartmeter.config import ConfigError, SourceConfig
from smartmeter.energy import CounterReading, IntervalEnergy, IntervalMeter, MeterConfig
from smartmeter.modbus import (
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_TIMEOUT_S,
    BadFrame,
    DeviceUnavailable,
    MeterSample,
    Sdm630Reader,
    SunSpecReader,
)
from smartmeter.mqtt import (
    COUNTERS,
    BadPayload,
    Broker,
    EmoncmsFormat,
    Input,
    JsonPathFormat,
    MqttSample,
    MqttSource,
    SampleFormat,
    ShellyPro3EmFormat,
)
from smartmeter.store import MeterStore, StoredReading

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
REPLAY_PAGE = 1_000  # stored readings read per query while replaying
CLOSED_LINES = 3  # intervals closed at once logged a line each; more, in one line
J_PER_KWH = 3_600_000


@dataclass(frozen=True, slots=True)
class SourceFigures:
    """What a source did since its runner started, for the meter's metrics and readiness:
    readings stored with values, errors (a poll the device did not answer, a frame or payload
    refused, a reading the interval meter refused), intervals closed by status
    (`IntervalStatus` values), when it last stored a reading with values (ledger unix seconds;
    the runner's start until its first), and whether its device or broker answers now."""

    readings: int
    errors: int
    intervals: Mapping[str, int]
    last_reading_at: float
    connected: bool


class Reader(Protocol):
    """A Modbus reader: `Sdm630Reader` or `SunSpecReader`."""

    def read(self) -> MeterSample: ...

    def close(self) -> None: ...


def sample_format(source: SourceConfig) -> SampleFormat:
    """The MQTT payload format `source.options` describe; ConfigError naming the key if not.

    `emoncms`: `node`, optional `base_topic` (default "emon") and `inputs`, a table from input
    name to a quantity ("import_wh", "export_wh", "power_w") or to `{quantity, factor}`.
    `shelly`: `topic`, the Shelly's MQTT prefix.
    `json`: `topic`, `paths`, a table from JSON path (`$.a.b[0]`) to a quantity or to
    `{quantity, factor}`, and optional `time_path` (unix seconds; default: the receive time).
    """
    options = source.options
    kind = options.get("format")
    try:
        if kind == "emoncms":
            inputs = options.get("inputs")
            if not isinstance(inputs, Mapping) or not inputs:
                raise ConfigError("an emoncms source's inputs must map input names to quantities")
            return EmoncmsFormat(
                node=str(options.get("node", "")),
                inputs={str(key): _input("inputs", key, value) for key, value in inputs.items()},
                base_topic=str(options.get("base_topic", "emon")),
            )
        if kind == "shelly":
            return ShellyPro3EmFormat(topic_prefix=str(options.get("topic", "")))
        if kind == "json":
            paths = options.get("paths")
            if not isinstance(paths, Mapping) or not paths:
                raise ConfigError("a json source's paths must map JSON paths to quantities")
            time_path = options.get("time_path")
            if time_path is not None and not isinstance(time_path, str):
                raise ConfigError("a json source's time_path must be a JSON path such as $.time")
            return JsonPathFormat(
                topic=str(options.get("topic", "")),
                paths={str(path): _input("paths", path, value) for path, value in paths.items()},
                time_path=time_path,
            )
    except ValueError as error:
        raise ConfigError(f"{kind} source: {error}") from None
    raise ConfigError(f"MQTT format {kind!r} is not supported: use emoncms, shelly or json")


def _input(table: str, key: object, value: object) -> Input:
    if isinstance(value, str):
        return Input(value)  # type: ignore[arg-type]  # Input checks the quantity
    if isinstance(value, Mapping):
        factor = value.get("factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise ConfigError(f"{table}.{key}.factor must be a number")
        return Input(value.get("quantity"), float(factor))  # type: ignore[arg-type]
    raise ConfigError(f"{table}.{key} must be a quantity or a table of quantity and factor")


def check_source(source: SourceConfig) -> None:
    """ConfigError if an MQTT source's options do not describe a format the runner reads."""
    if source.kind == "mqtt":
        _reported_counters(source, sample_format(source))


def _reported_counters(source: SourceConfig, mqtt_format: SampleFormat | None) -> set[str]:
    """The counters the source reports; the others stay at 0 (an inverter imports nothing)."""
    if isinstance(mqtt_format, EmoncmsFormat | JsonPathFormat):
        specs = mqtt_format.inputs if isinstance(mqtt_format, EmoncmsFormat) else mqtt_format.paths
        reported = {spec.quantity for spec in specs.values()} & COUNTERS
        if not reported:
            raise ConfigError(
                f"a {source.options.get('format')} source must map at least one energy counter"
            )
        return set(reported)
    return {"import_wh", "export_wh"}


class SourceRunner:
    """One source's readings, stored and turned into closed intervals; see the module docstring.

    Build it, then `start()` its thread, or call `poll_once()` yourself (tests do), never
    both; `stop()` ends it. Samples from paho's thread and polls are serialised by a lock.
    """

    def __init__(
        self,
        name: str,
        source: SourceConfig,
        energy: MeterConfig,
        store: MeterStore,
        *,
        clock: Callable[[], float] = ledger_now,
        backoff_clock: Callable[[], float] = time.monotonic,
        client_id: str = "",
    ) -> None:
        """`name` is the source's name in the store; `clock` gives ledger unix seconds,
        `backoff_clock` times a Modbus device's reconnect backoff (monotonic seconds)."""
        self.name = name
        self.source = source
        self._store = store
        self._clock, self._backoff_clock = clock, backoff_clock
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._unavailable_since: float | None = None  # by the backoff clock
        self._reader: Reader | None = None
        self._mqtt: MqttSource | None = None
        mqtt_format = sample_format(source) if source.kind == "mqtt" else None
        reported = _reported_counters(source, mqtt_format)
        # The last value of each counter; one not reported reads 0, one not heard of yet None.
        self._counters: dict[str, float | None] = {
            name: None if name in reported else 0.0 for name in ("import_wh", "export_wh")
        }
        self._seq = 0
        self._readings = self._errors = 0
        self._intervals: Counter[str] = Counter()  # closed by this runner, by status
        self._last_reading_at = clock()
        self._meter = self._restore(energy)
        self._replay()
        if mqtt_format is not None:
            self._mqtt = MqttSource(
                Broker(source.host, source.port),
                [mqtt_format],
                self._on_sample,
                self._on_bad_payload,
                client_id=client_id,
                clock=clock,
            )
        else:
            kind = Sdm630Reader if source.kind == "sdm630" else SunSpecReader
            self._reader = kind(
                source.host,
                source.port,
                source.device_id,
                timeout_s=DEFAULT_TIMEOUT_S,
                backoff_initial_s=DEFAULT_BACKOFF_INITIAL_S,
                backoff_max_s=DEFAULT_BACKOFF_MAX_S,
                clock=backoff_clock,
            )

    # -- the checkpoint and the replay

    def _restore(self, energy: MeterConfig) -> IntervalMeter:
        checkpoint = self._store.interval_checkpoint(self.name)
        if checkpoint is None:
            return IntervalMeter(energy)
        if checkpoint.get("v") != CHECKPOINT_VERSION:
            raise ValueError(f"{self.name}: checkpoint version {checkpoint.get('v')!r} unknown")
        self._seq = int(checkpoint["seq"])
        self._counters.update(checkpoint["counters"])
        return IntervalMeter.from_state(energy, checkpoint["meter"])

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "v": CHECKPOINT_VERSION,
            "seq": self._seq,
            "counters": dict(self._counters),
            "meter": self._meter.to_state(),
        }

    def _replay(self) -> None:
        """Give the meter the readings stored after the checkpoint, as it got them live."""
        replayed = 0
        while page := self._store.source_readings(self.name, self._seq, REPLAY_PAGE):
            for stored in page:
                self._feed(stored)
            replayed += len(page)
        if replayed:
            logger.info("%s: replayed %d readings stored after the checkpoint", self.name, replayed)
            self._close(None)

    # -- one sample

    def _record(
        self,
        at: float,
        import_wh: float | None,
        export_wh: float | None,
        power_w: float | None,
        problem: str | None = None,
    ) -> None:
        """Store a sample (durable first), then give it to the meter."""
        logger.debug(
            "%s: read import %s Wh, export %s Wh, power %s W",
            self.name,
            import_wh,
            export_wh,
            power_w,
        )
        with self._lock:
            seq = self._store.add_reading(self.name, at, import_wh, export_wh, power_w, problem)
            stored = StoredReading(seq, self.name, at, import_wh, export_wh, power_w, problem)
            accepted = self._feed(stored)
            if problem is None:
                self._readings += 1
                # When it was read: an MQTT sample's own time may lag behind.
                self._last_reading_at = self._clock()
            if problem is not None or not accepted:
                self._errors += 1

    def _feed(self, stored: StoredReading) -> bool:
        """Give a stored reading to the meter: False if the meter refused it."""
        self._seq = stored.seq
        if stored.import_wh is None and stored.export_wh is None and stored.power_w is None:
            # A refused frame: the meter refuses a NaN reading and marks its interval suspect.
            marker = f"{self.name}: {stored.problem}"
            self._meter.add(CounterReading(stored.at, math.nan, math.nan, source=marker))
            return False
        for name, value in (("import_wh", stored.import_wh), ("export_wh", stored.export_wh)):
            if value is not None:
                self._counters[name] = value
        imported, exported = self._counters["import_wh"], self._counters["export_wh"]
        if imported is None or exported is None:
            return True  # a counter not heard of yet: no reading to take deltas from
        outcome = self._meter.add(CounterReading(stored.at, imported, exported, source=self.name))
        if not outcome.accepted:
            problem = f"refused by the interval meter ({outcome.code}): {outcome.reason}"
            logger.warning("%s: reading %d at %s %s", self.name, stored.seq, stored.at, problem)
            self._store.refuse_reading(stored.seq, problem)
        return outcome.accepted

    def _close(self, now: float | None) -> None:
        closed = self._meter.close(now)
        if closed:
            self._store.close_intervals(self.name, closed, self._checkpoint())
            self._intervals.update(str(interval.status) for interval in closed)
            _tell_closed(self.name, closed)

    # -- Modbus

    def poll_once(self) -> None:
        """Read the device once (Modbus), store and feed what it said, and close the intervals
        that are final by the clock's now; MQTT sources only close. Never raises for the
        device: an outage or a bad frame is logged and stored as such."""
        if self._reader is not None:
            self._read(self._reader)
        with self._lock:
            self._close(self._clock())

    def _read(self, reader: Reader) -> None:
        try:
            sample = reader.read()
        except DeviceUnavailable as error:
            with self._lock:
                self._errors += 1
            if self._unavailable_since is None:
                self._unavailable_since = self._backoff_clock()
                logger.warning("%s: %s", self.name, error)
            return
        except BadFrame as bad:
            self._answered()
            logger.warning("%s: refused a frame: %s", self.name, bad.reason)
            self._record(self._clock(), None, None, None, f"refused frame: {bad.reason}")
            return
        self._answered()
        self._record(self._clock(), sample.import_wh, sample.export_wh, sample.power_w)

    def _answered(self) -> None:
        if self._unavailable_since is not None:
            outage_s = self._backoff_clock() - self._unavailable_since
            logger.warning("%s: the device answers again after %.0f s", self.name, outage_s)
            self._unavailable_since = None

    # -- MQTT, on paho's thread

    def _on_sample(self, topic: str, sample: MqttSample) -> None:
        self._record(sample.at, sample.import_wh, sample.export_wh, sample.power_w)
        with self._lock:
            self._close(self._clock())

    def _on_bad_payload(self, topic: str, bad: BadPayload) -> None:
        logger.warning("%s: refused a payload on %s: %s", self.name, topic, bad.reason)
        self._record(self._clock(), None, None, None, f"refused payload on {topic}: {bad.reason}")

    def wait_connected(self, timeout_s: float) -> bool:
        """Whether an MQTT source is subscribed within `timeout_s` seconds (Modbus: True)."""
        return self._mqtt is None or self._mqtt.wait_connected(timeout_s)

    @property
    def follows_broker(self) -> bool:
        """Whether the source is fed by an MQTT broker (else it polls a Modbus device)."""
        return self._mqtt is not None

    def figures(self) -> SourceFigures:
        """What the source did since the runner started, and whether it is connected now: an
        MQTT source to its broker (subscribed), a Modbus source to its device (it answered the
        last poll)."""
        connected = self._unavailable_since is None if self._mqtt is None else self._mqtt.connected
        with self._lock:
            return SourceFigures(
                self._readings,
                self._errors,
                dict(self._intervals),
                self._last_reading_at,
                connected,
            )

    # -- the thread

    def start(self) -> None:
        """Follow the broker (MQTT) and call `poll_once` every `poll_s` until `stop()`."""
        if self._mqtt is not None:
            self._mqtt.start()
        self._thread = threading.Thread(target=self._run, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:
                # A failing database must not end the source: the next poll tries again.
                logger.exception(
                    "%s: poll failed; trying again in %s s", self.name, self.source.poll_s
                )
            self._stopping.wait(self.source.poll_s)

    def stop(self) -> None:
        """End the thread, the broker's connection and the device's."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._mqtt is not None:
            self._mqtt.close()
        if self._reader is not None:
            self._reader.close()


def _tell_closed(name: str, closed: Sequence[IntervalEnergy]) -> None:
    """A line per interval a source closed; one for them all after an outage."""
    if len(closed) > CLOSED_LINES:
        statuses = Counter(str(interval.status) for interval in closed)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        first, last = closed[0].interval, closed[-1].interval
        logger.info("%s: intervals %d to %d closed (%s)", name, first, last, counts)
        return
    for interval in closed:
        why = f" ({'; '.join(interval.reasons)})" if interval.reasons else ""
        logger.info(
            "%s: interval %d closed %s: %.3f kWh in, %.3f kWh out, %d readings%s",
            name,
            interval.interval,
            interval.status,
            interval.import_j / J_PER_KWH,
            interval.export_j / J_PER_KWH,
            interval.readings,
            why,
        )
