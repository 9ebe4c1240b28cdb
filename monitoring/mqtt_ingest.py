"""Meter and device readings over MQTT into the monitoring store (DESIGN.md sections 11, 13).

What is read, with no configuration for the first:

- emoncms topics under a base (`emon`): `emon/<node>/<key>` with a plain decimal number,
  stamped with its arrival time, and `emon/<node>` with a JSON object whose keys are inputs
  and whose optional `time` is unix seconds or an ISO 8601 time with its UTC offset. Every
  node is taken (`emon/+`, `emon/+/+`), so a PETra smart meter's published readings
  (`smartmeter.node.ReadingPublisher`) and emonhub's MQTT interfacer land as they are;
- Shelly Pro 3EM devices, each configured by topic prefix: `<prefix>/status/em:0` (power per
  phase and in total, voltages, currents) and `<prefix>/status/emdata:0` (energy counters),
  as inputs of the configured node named after the device's fields;
- any JSON on a configured topic, inputs read at JSON paths (`$.a.b[0]`).

A message is parsed on paho's network thread into checked samples (`monitoring.samples`),
all or none: a message with one bad value stores nothing and is refused with a reason. One
writer thread stores what arrived in batches (every `batch_interval_s`, or sooner once
`batch_max` samples wait), one `store.write` per batch. A store failure keeps the batch and
retries it with backoff; meanwhile at most `max_pending` samples wait in memory, and a
message beyond that is refused as `overloaded`. Refusals are tallied in memory and counted in
the store by the writer, once per reason and batch, so a flood of bad messages costs one
transaction, not one each.

The subscription is persistent (QoS 1, clean session off, a fixed client id): while the
service is away the broker queues its messages (up to its `max_queued_messages`) and hands
them over on reconnection. A message is acknowledged on arrival, so one the service had not
stored when it stopped with a failing store is lost: `close` says how many. A lost broker is
reconnected with paho's exponential backoff, logged once when lost and once when back. A
burst faster than the ingest takes it waits in the broker: mosquitto keeps at most
`max_queued_messages` (default 1000) per client beyond its 20 in flight and drops the rest
("Outgoing messages are being dropped" in its log), so a broker feeding many devices should
raise it.

Feed kinds and units are set the first time this process stores a feed, and only if nobody
set them (still `other` with no unit): Shelly power in W (`power`), its energy counters in Wh
(`counter`); emoncms inputs by the suffix convention of `emoncms_kind` (a PETra meter's
`<source>_power_w` is power, `<source>_import_kwh` a counter); JSON-path inputs stay `other`
until a manager sets them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitoring.config import JsonDevice, MqttSettings, ShellyDevice
from monitoring.samples import COUNTER, OTHER, POWER, Refused, Sample, check_time, sample
from monitoring.store import MonitoringStore, MonitoringStoreError
from smartmeter import BadPayload, ShellyPro3EmFormat, parse_json_path

log = logging.getLogger("petra.monitoring.mqtt")

SOURCE = "mqtt"  # the ingestion path's name in the store's refusal counts
QOS = 1
MAX_PAYLOAD_BYTES = 64 * 1024  # a meter's message is far smaller; a bigger one is a mistake
BATCH_INTERVAL_S = 0.2
BATCH_MAX = 5_000
MAX_PENDING = 200_000  # samples waiting for a failing store, about 40 MB at most
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0  # the writer's backoff while the store fails
CLOSE_TIMEOUT_S = 10.0
PLAIN_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

# Shelly Pro 3EM status fields read, as (kind, unit); totals are required, phases optional.
SHELLY_EM: Mapping[str, tuple[str, str]] = {
    "total_act_power": (POWER, "W"),
    **{f"{p}_act_power": (POWER, "W") for p in "abc"},
    **{f"{p}_voltage": (OTHER, "V") for p in "abc"},
    **{f"{p}_current": (OTHER, "A") for p in "abc"},
}
SHELLY_EMDATA: Mapping[str, tuple[str, str]] = {
    "total_act": (COUNTER, "Wh"),
    "total_act_ret": (COUNTER, "Wh"),
    **{f"{p}_total_act_energy": (COUNTER, "Wh") for p in "abc"},
    **{f"{p}_total_act_ret_energy": (COUNTER, "Wh") for p in "abc"},
}

Kind = tuple[str, str] | None  # (feed kind, unit) to set on first sight, or leave the feed be


@dataclass(frozen=True, slots=True)
class Reading:
    """A checked sample and the kind and unit its feed should have, when the format says."""

    sample: Sample
    kind: Kind = None


def emoncms_kind(name: str) -> Kind:
    """The kind and unit an emoncms input's name conventionally says: `*_kwh` and `*_wh` are
    cumulative counters (emonTx and PETra meters send lifetime registers), `*_w` and
    `power<n>` power in W, `*_v` and `vrms` volts, `*_a` amperes; anything else: None."""
    lower = name.lower()
    if lower.endswith("_kwh"):
        return COUNTER, "kWh"
    if lower.endswith("_wh"):
        return COUNTER, "Wh"
    if lower.endswith("_w") or re.fullmatch(r"power[0-9]*", lower):
        return POWER, "W"
    if lower.endswith("_v") or lower == "vrms":
        return OTHER, "V"
    if lower.endswith("_a"):
        return OTHER, "A"
    return None


def _text(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Refused(
            "too_large", f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are read"
        )
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused("bad_payload", f"payload is not UTF-8 text (byte {exc.start})") from None


def _refuse_constant(name: str) -> object:
    raise Refused("bad_value", f"payload contains {name}: send finite JSON numbers")


def _json(payload: bytes) -> object:
    text = _text(payload)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise Refused(
            "bad_payload", f"payload is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):  # integers past Python's digit limit, deep nesting
        raise Refused("bad_payload", "payload is JSON this service does not read") from None


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    document = _json(payload)
    if not isinstance(document, dict):
        raise Refused("bad_payload", f"{what} must be a JSON object")
    return document


def _time(value: object, where: str, now: float) -> int:
    """Unix seconds, or an ISO 8601 time with its offset, as whole unix seconds."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Refused("bad_time", f"{where} {value[:40]!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise Refused("bad_time", f"{where} {value[:40]!r} has no UTC offset: add Z or +01:00")
        return check_time(parsed.timestamp(), now)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("bad_time", f"{where} is {str(value)[:40]!r}, not unix seconds or ISO 8601")
    return check_time(value, now)


def _value_at(document: object, path: str) -> object:
    node = document
    for step in parse_json_path(path):
        in_list = isinstance(step, int) and isinstance(node, list) and step < len(node)
        in_object = isinstance(step, str) and isinstance(node, dict) and step in node
        if not (in_list or in_object):
            raise Refused("missing_value", f"payload has no value at {path}")
        node = node[step]  # type: ignore[index]  # a list by an index or an object by a key
    return node


def parse_emoncms_input(node: str, key: str, payload: bytes, now: float) -> list[Reading]:
    """`emon/<node>/<key>` with a plain decimal number: one sample at arrival time `now`."""
    text = _text(payload).strip()
    if PLAIN_NUMBER.fullmatch(text) is None:
        raise Refused("bad_value", f"input {key[:64]!r} is {text[:40]!r}, not a plain number")
    return [Reading(sample(node, key, now, float(text), now), emoncms_kind(key))]


def parse_emoncms_node(node: str, payload: bytes, now: float) -> list[Reading]:
    """`emon/<node>` with a JSON object: every key but `time` an input, every value a number;
    `time` (unix seconds or ISO 8601 with offset) or else arrival time `now`."""
    document = _json_object(payload, f"emon/{node[:64]}'s payload")
    at = _time(document["time"], "'time'", now) if "time" in document else now
    readings = [
        Reading(sample(node, key, at, value, now), emoncms_kind(key))
        for key, value in document.items()
        if key != "time"
    ]
    if not readings:
        raise Refused("no_inputs", "the JSON object has no input besides 'time'")
    return readings


def parse_shelly(device: ShellyDevice, topic: str, payload: bytes, now: float) -> list[Reading]:
    """A Shelly Pro 3EM's `em:0` or `emdata:0` status: the totals `ShellyPro3EmFormat` checks,
    and per-phase fields when present, as inputs of `device.node` at arrival time `now`."""
    shelly = ShellyPro3EmFormat(device.topic_prefix)
    _text(payload)  # one size limit and one message for every format
    try:
        shelly.parse(topic, payload, now)
    except BadPayload as bad:
        raise Refused("bad_payload", bad.reason) from None
    fields = SHELLY_EM if topic == shelly.em_topic else SHELLY_EMDATA
    status = _json_object(payload, topic)
    readings = []
    for name, kind in fields.items():
        if status.get(name) is None:
            continue  # a phase the device's profile does not report
        reading = Reading(sample(device.node, name, now, status[name], now), kind)
        if kind[0] == COUNTER and reading.sample.value < 0:
            raise Refused("bad_value", f"{name} is {reading.sample.value}: a counter is never < 0")
        readings.append(reading)
    return readings


def parse_json_device(device: JsonDevice, payload: bytes, now: float) -> list[Reading]:
    """A configured device's JSON: every configured path must hold a number."""
    document = _json(payload)
    at: float = now
    if device.time_path is not None:
        at = _time(_value_at(document, device.time_path), device.time_path, now)
    return [
        Reading(sample(device.node, name, at, _value_at(document, path), now))
        for name, path in device.inputs
    ]


@dataclass(frozen=True)
class MqttRoutes:
    """Which parser reads which topic: configured JSON topics first, then Shelly devices, then
    the emoncms base; `parse` is pure."""

    base_topic: str
    json: Mapping[str, JsonDevice]
    shelly: Mapping[str, ShellyDevice]  # by each of its two status topics

    @classmethod
    def of(cls, settings: MqttSettings) -> MqttRoutes:
        shelly = {
            f"{device.topic_prefix}/status/{part}": device
            for device in settings.shelly
            for part in ("em:0", "emdata:0")
        }
        return cls(settings.base_topic, {d.topic: d for d in settings.json}, shelly)

    def subscriptions(self) -> list[str]:
        return [
            f"{self.base_topic}/+",
            f"{self.base_topic}/+/+",
            *self.shelly,
            *self.json,
        ]

    def parse(self, topic: str, payload: bytes, now: float) -> list[Reading]:
        """The readings of one message received at `now` (unix seconds), or Refused."""
        if topic in self.json:
            return parse_json_device(self.json[topic], payload, now)
        if topic in self.shelly:
            return parse_shelly(self.shelly[topic], topic, payload, now)
        levels = topic.split("/")
        base = self.base_topic.split("/")
        if levels[: len(base)] == base and len(levels) in (len(base) + 1, len(base) + 2):
            node = levels[len(base)]
            if len(levels) == len(base) + 1:
                return parse_emoncms_node(node, payload, now)
            return parse_emoncms_input(node, levels[-1], payload, now)
        raise Refused("unknown_topic", f"no device is configured for topic {topic[:100]!r}")


def set_kinds_on_first_sight(store: MonitoringStore, kinds: Mapping[tuple[str, str], Kind]) -> None:
    """Give each (node, name) feed its kind and unit, if it has none yet (`other`, no unit):
    a manager's choice is never overwritten."""
    for (node_name, name), kind in kinds.items():
        found = store.feed_named(node_name, name)
        if kind is not None and found is not None and (found.kind, found.unit) == (OTHER, ""):
            store.set_feed(found.id, kind=kind[0], unit=kind[1])


class MqttIngest:
    """Subscribes to the broker of `settings` and stores what arrives (module docstring).
    `clock`: unix seconds, stamping arrivals and checking device times."""

    def __init__(
        self,
        store: MonitoringStore,
        settings: MqttSettings,
        clock: Callable[[], float] = time.time,
        *,
        batch_interval_s: float = BATCH_INTERVAL_S,
        batch_max: int = BATCH_MAX,
        max_pending: int = MAX_PENDING,
        min_backoff_s: int = 1,
        max_backoff_s: int = 60,
    ) -> None:
        self.store = store
        self.settings = settings
        self.routes = MqttRoutes.of(settings)
        self._clock = clock
        self._batch_interval_s = batch_interval_s
        self._batch_max = batch_max
        self._max_pending = max_pending
        self._max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._pending: deque[Reading] = deque()
        self._tally: dict[str, tuple[int, str]] = {}  # reason -> (refusals not counted, last)
        self._typed: set[tuple[str, str]] = set()  # feeds whose kind this process settled
        self._stored = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._lost_at: float | None = None  # when the broker was lost, while it is
        self._closing = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.client_id, clean_session=False
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.reconnect_delay_set(min_backoff_s, max_backoff_s)
        client.on_connect = self._connected
        client.on_connect_fail = self._connect_failed
        client.on_subscribe = self._subscription_acknowledged
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self._client = client

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        """Start the writer and connect in the background (a broker that is down is retried)."""
        if self._writer is not None:
            return  # started already, e.g. before entering its context
        self._writer = threading.Thread(target=self._write_loop, name="mqtt-ingest", daemon=True)
        self._writer.start()
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self._client.loop_start()

    def close(self) -> None:
        """Disconnect, store what is pending (while the store allows, for up to 10 s), stop."""
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._subscribed.clear()
        self._stopping.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join(CLOSE_TIMEOUT_S + 1)
        lost = self.pending
        if lost:
            log.error("MQTT ingest stopped with %d samples the store did not take: lost", lost)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Whether the broker acknowledged the subscriptions of the current connection."""
        return self._subscribed.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until `connected` (True) or until `timeout_s` seconds pass (False)."""
        return self._subscribed.wait(timeout_s)

    @property
    def pending(self) -> int:
        """Samples received and not yet stored."""
        with self._lock:
            return len(self._pending)

    @property
    def stored(self) -> int:
        """Samples stored since start."""
        return self._stored

    # ---------------------------------------------------------------- receiving

    def receive(self, topic: str, payload: bytes) -> None:
        """Take one message as it arrived from the broker: its samples wait for the writer, or
        its refusal is tallied."""
        now = self._clock()
        try:
            readings = self.routes.parse(topic, payload, now)
        except Refused as refused:
            self._tally_refusal(refused.reason, f"{topic[:100]}: {refused.message}")
            return
        with self._lock:
            taken = len(self._pending) + len(readings) <= self._max_pending
            if taken:
                self._pending.extend(readings)
            full = len(self._pending) >= self._batch_max
        if not taken:
            self._tally_refusal(
                "overloaded",
                f"{topic[:100]}: {self._max_pending} samples already wait for the store; "
                "dropped this message (is the database reachable and fast enough?)",
            )
        elif full:
            self._wake.set()

    def _tally_refusal(self, reason: str, message: str) -> None:
        with self._lock:
            count, _ = self._tally.get(reason, (0, ""))
            self._tally[reason] = (count + 1, message)

    # ---------------------------------------------------------------- writing

    def _write_loop(self) -> None:
        retry_s = 0.0
        give_up_at: float | None = None
        while True:
            self._wake.wait(retry_s or self._batch_interval_s)
            self._wake.clear()
            stopping = self._stopping.is_set()
            if stopping and give_up_at is None:
                give_up_at = time.monotonic() + CLOSE_TIMEOUT_S
            try:
                self._count_refusals()
                while self._write_batch():
                    pass
                retry_s = 0.0
            except MonitoringStoreError:
                retry_s = min(max(retry_s * 2, RETRY_MIN_S), RETRY_MAX_S)
            if stopping and (retry_s == 0.0 or time.monotonic() >= (give_up_at or 0.0)):
                return

    def _count_refusals(self) -> None:
        with self._lock:
            tally, self._tally = self._tally, {}
        now = self._clock()
        for reason, (count, message) in tally.items():
            log.warning("refused %d MQTT message(s) (%s), the last: %s", count, reason, message)
            try:
                self.store.add_refusals(SOURCE, reason, count, message, now)
            except MonitoringStoreError:
                with self._lock:  # counted next time, with those refused meanwhile
                    later, last = self._tally.get(reason, (0, message))
                    self._tally[reason] = (count + later, last)
                raise

    def _write_batch(self) -> bool:
        """Store the oldest waiting samples (one transaction): whether any were stored. On a
        store failure they stay first in line."""
        with self._lock:
            batch = [self._pending[i] for i in range(min(self._batch_max, len(self._pending)))]
        if not batch:
            return False
        self.store.write([reading.sample for reading in batch], now=self._clock())
        with self._lock:
            for _ in batch:
                self._pending.popleft()
        self._stored += len(batch)
        self._settle_kinds(batch)
        return True

    def _settle_kinds(self, batch: Iterable[Reading]) -> None:
        new: dict[tuple[str, str], Kind] = {}
        for reading in batch:
            key = (reading.sample.node, reading.sample.name)
            if key not in self._typed:
                new[key] = reading.kind
        try:
            set_kinds_on_first_sight(self.store, new)
        except MonitoringStoreError:
            return  # settled the next time one of them arrives
        self._typed.update(new)

    # ---------------------------------------------------------------- paho's callbacks

    def _connected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        where = f"{self.settings.host}:{self.settings.port}"
        if reason_code.is_failure:
            self._lost(f"the MQTT broker at {where} refused the connection ({reason_code})")
            return
        if self._lost_at is not None:
            log.info("MQTT broker at %s is back after %.0f s", where, time.time() - self._lost_at)
            self._lost_at = None
        result, mid = client.subscribe([(topic, QOS) for topic in self.routes.subscriptions()])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("MQTT subscribe failed: %s", mqtt.error_string(result))
        self._subscribe_mid = mid

    def _subscription_acknowledged(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        topics = self.routes.subscriptions()
        refused = [t for t, code in zip(topics, reason_codes, strict=False) if code.is_failure]
        if refused:
            log.error("the MQTT broker refused the subscriptions to %s", ", ".join(refused))
        else:
            self._subscribed.set()

    def _connect_failed(self, client: mqtt.Client, userdata: Any) -> None:
        self._lost(f"cannot reach the MQTT broker at {self.settings.host}:{self.settings.port}")

    def _disconnected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._subscribed.clear()
        if not self._closing:
            where = f"{self.settings.host}:{self.settings.port}"
            self._lost(f"lost the MQTT broker at {where} ({reason_code})")

    def _lost(self, what: str) -> None:
        """Log an outage once, however many reconnection attempts it takes."""
        if self._lost_at is None:
            self._lost_at = time.time()
            log.warning("%s; reconnecting with backoff up to %d s", what, self._max_backoff_s)

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self.receive(message.topic, bytes(message.payload))
        except Exception:  # one faulty message must not stop the network thread
            log.exception("MQTT message on %s could not be taken", message.topic)
