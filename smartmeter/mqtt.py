"""Meter readings over MQTT: the payload formats devices already speak, a subscriber, a publisher.

Formats (DESIGN.md section 11), each a frozen dataclass whose `parse` is a pure function from
(topic, payload bytes, receive time) to an `MqttSample`, or `BadPayload` with a reason:

- `EmoncmsFormat`: `emon/<node>/<key>` with a plain number, and `emon/<node>` with a JSON object
  of inputs (and an optional `time`, unix seconds), as emoncms' MQTT input takes them. Inputs
  are mapped by name to import/export counters or power, each with a unit factor.
- `ShellyPro3EmFormat`: a Shelly Pro 3EM (Gen2 API, three-phase profile) with MQTT status
  notifications on (`MQTT.SetConfig` `status_ntf: true`) publishes each component's status
  to `<topic_prefix>/status/<component>:<id>`: `emdata:0` (the EMData component) carries
  `total_act` and `total_act_ret`, all-phase active energy imported and returned, in Wh;
  `em:0` (the EM component) carries `total_act_power`, all-phase active power in W (negative
  while exporting). Neither carries a time, so samples take the receive time. The single-phase
  profile's `em1:N`/`em1data:N` components are not covered.
- `JsonPathFormat`: one topic whose JSON payload holds the values at configured paths such as
  `$.energy.import` or `$.meters[0].power` (keys after dots, array indexes in brackets).

Every payload is rejected before parsing when larger than `MAX_PAYLOAD_BYTES`, not UTF-8, or
(for JSON) nested deeper than `MAX_JSON_DEPTH`; values must be finite JSON numbers (not strings,
booleans, NaN or Infinity) and energy counters must not be negative.

`MqttSource` subscribes with paho-mqtt 2 and hands samples and bad payloads to callbacks;
`MqttPublisher` publishes readings emoncms-style for the monitoring layer.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self, get_args

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from service.clock import now as ledger_now

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
# Unix seconds beyond this (year 5138) are almost surely milliseconds sent by mistake.
MAX_UNIX_SECONDS = 1e11
QOS = 1

Quantity = Literal["import_wh", "export_wh", "power_w"]
QUANTITIES: tuple[Quantity, ...] = get_args(Quantity)
COUNTERS: frozenset[Quantity] = frozenset({"import_wh", "export_wh"})


class BadPayload(Exception):
    """A message that carries no usable reading; `reason` says what is wrong with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MqttSample:
    """One reading: `at` in unix seconds, energy counters in Wh, power in W (None if absent)."""

    at: float
    import_wh: float | None = None
    export_wh: float | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class Input:
    """What a device value means: the sample field it feeds and the factor to Wh or W.

    `factor` multiplies the device's number: 1000 for a counter in kWh, -1 for a power whose
    clamp is mounted the other way round.
    """

    quantity: Quantity
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}")
        if not math.isfinite(self.factor) or self.factor == 0:
            raise ValueError("factor must be a finite, non-zero number")


class SampleFormat(Protocol):
    """A payload format: the exact topics it reads and a pure parser for their messages."""

    def topics(self) -> tuple[str, ...]: ...

    def parse(self, topic: str, payload: bytes, received_at: float) -> MqttSample: ...


def _check_topic_level(level: str, what: str) -> None:
    if not level or any(char in level for char in "/+#\x00"):
        raise ValueError(f"{what} {level!r} must be non-empty, without '/', '+', '#' or NUL")


def _check_topic(topic: str) -> None:
    for level in topic.split("/"):
        _check_topic_level(level, f"topic {topic!r} level")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _text(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are read")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadPayload(
            f"payload is not UTF-8 text (invalid byte at offset {error.start})"
        ) from None


def _too_deep(text: str) -> bool:
    """Whether arrays and objects nest deeper than MAX_JSON_DEPTH, brackets in strings aside."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _reject_constant(name: str) -> object:
    raise BadPayload(f"payload contains {name}, which is not a JSON number")


def _json(payload: bytes) -> object:
    text = _text(payload)
    if _too_deep(text):
        raise BadPayload(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise BadPayload(
            f"payload is not JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except ValueError as error:  # integers longer than Python's digit limit
        raise BadPayload(f"payload is not JSON we can read: {error}") from None


def _json_object(payload: bytes) -> dict[str, Any]:
    document = _json(payload)
    if not isinstance(document, dict):
        raise BadPayload(f"payload is {_describe(document)}, expected a JSON object")
    return document


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadPayload(f"{where} is {_describe(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise BadPayload(f"{where} is too large a number") from None
    if not math.isfinite(number):
        raise BadPayload(f"{where} is not a finite number")
    return number


def _reading(value: object, where: str, spec: Input) -> float:
    """The value in Wh or W, checked: finite, and not negative for an energy counter."""
    scaled = _number(value, where) * spec.factor
    if not math.isfinite(scaled):
        raise BadPayload(f"{where} is too large a number once scaled by {spec.factor}")
    if spec.quantity in COUNTERS and scaled < 0:
        raise BadPayload(
            f"{where} is {value}: an energy counter ({spec.quantity}) is never negative"
        )
    return scaled


def _unix_seconds(value: object, where: str) -> float:
    seconds = _number(value, where)
    if seconds < 0:
        raise BadPayload(f"{where} is {value}: unix seconds are never negative")
    if seconds > MAX_UNIX_SECONDS:
        raise BadPayload(f"{where} is {value}: too large for unix seconds (milliseconds?)")
    return seconds


def _sample(at: float, readings: Mapping[Quantity, float]) -> MqttSample:
    if not readings:
        raise BadPayload("payload carries none of the configured inputs")
    return MqttSample(
        at=at,
        import_wh=readings.get("import_wh"),
        export_wh=readings.get("export_wh"),
        power_w=readings.get("power_w"),
    )


def _add(readings: dict[Quantity, float], spec: Input, value: float, where: str) -> None:
    if spec.quantity in readings:
        raise BadPayload(f"{where} gives {spec.quantity} a second time")
    readings[spec.quantity] = value


_PLAIN_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _plain_number(payload: bytes) -> float:
    text = _text(payload).strip()
    if not _PLAIN_NUMBER.fullmatch(text):
        raise BadPayload(f"payload {text[:40]!r} is not a plain decimal number")
    return float(text)


@dataclass(frozen=True)
class EmoncmsFormat:
    """emoncms MQTT inputs of one node: `<base>/<node>/<key>` numbers, `<base>/<node>` JSON.

    `inputs` maps emoncms input names to what they mean, e.g. `{"import": Input("import_wh",
    1000)}` for a counter in kWh. The JSON form may carry `time` (unix seconds); other keys
    not in `inputs` are ignored, as emoncms nodes send voltages, temperatures and the like.
    """

    node: str
    inputs: Mapping[str, Input]
    base_topic: str = "emon"

    def __post_init__(self) -> None:
        _check_topic(self.base_topic)
        _check_topic_level(self.node, "node")
        if not self.inputs:
            raise ValueError("at least one input must be mapped")
        for key in self.inputs:
            _check_topic_level(key, "input name")
        if "time" in self.inputs:
            raise ValueError("'time' is the timestamp key of emoncms JSON, not an input")

    @property
    def node_topic(self) -> str:
        return f"{self.base_topic}/{self.node}"

    def topics(self) -> tuple[str, ...]:
        return (self.node_topic, *(f"{self.node_topic}/{key}" for key in self.inputs))

    def parse(self, topic: str, payload: bytes, received_at: float) -> MqttSample:
        """A sample from either topic form; counters in Wh and power in W after the factors."""
        if topic == self.node_topic:
            return self._parse_json(payload, received_at)
        key = topic.removeprefix(self.node_topic + "/")
        spec = self.inputs.get(key) if topic.startswith(self.node_topic + "/") else None
        if spec is None:
            raise BadPayload(f"topic {topic!r} is not an input mapped for node {self.node!r}")
        value = _reading(_plain_number(payload), f"input {key!r}", spec)
        return _sample(received_at, {spec.quantity: value})

    def _parse_json(self, payload: bytes, received_at: float) -> MqttSample:
        document = _json_object(payload)
        at = _unix_seconds(document["time"], "'time'") if "time" in document else received_at
        readings: dict[Quantity, float] = {}
        for key, spec in self.inputs.items():
            if key in document:
                where = f"input {key!r}"
                _add(readings, spec, _reading(document[key], where, spec), where)
        if not readings:
            raise BadPayload(f"JSON object has none of the inputs {', '.join(self.inputs)}")
        return _sample(at, readings)


_SHELLY_IMPORT = Input("import_wh")
_SHELLY_EXPORT = Input("export_wh")
_SHELLY_POWER = Input("power_w")


def _field(document: Mapping[str, Any], key: str, what: str) -> object:
    if key not in document:
        raise BadPayload(f"{what} has no {key!r} field")
    return document[key]


@dataclass(frozen=True)
class ShellyPro3EmFormat:
    """A Shelly Pro 3EM's status notifications under its MQTT `topic_prefix`.

    The default prefix is the device id, e.g. `shellypro3em-0cb815fc3a50`.
    """

    topic_prefix: str

    def __post_init__(self) -> None:
        _check_topic(self.topic_prefix)

    @property
    def emdata_topic(self) -> str:
        return f"{self.topic_prefix}/status/emdata:0"

    @property
    def em_topic(self) -> str:
        return f"{self.topic_prefix}/status/em:0"

    def topics(self) -> tuple[str, ...]:
        return (self.emdata_topic, self.em_topic)

    def parse(self, topic: str, payload: bytes, received_at: float) -> MqttSample:
        """`emdata:0` gives both counters (Wh), `em:0` the power (W); the time is `received_at`."""
        if topic == self.emdata_topic:
            status = _json_object(payload)
            what = "EMData status"
            imported = _reading(_field(status, "total_act", what), "'total_act'", _SHELLY_IMPORT)
            returned = _field(status, "total_act_ret", what)
            exported = _reading(returned, "'total_act_ret'", _SHELLY_EXPORT)
            return MqttSample(at=received_at, import_wh=imported, export_wh=exported)
        if topic == self.em_topic:
            status = _json_object(payload)
            power = _field(status, "total_act_power", "EM status")
            return MqttSample(
                at=received_at, power_w=_reading(power, "'total_act_power'", _SHELLY_POWER)
            )
        raise BadPayload(f"topic {topic!r} is neither {self.emdata_topic} nor {self.em_topic}")


_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[([0-9]+)\]")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """`$.a.b[0].c` as its steps ("a", "b", 0, "c"); ValueError if it is not of that form."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} must start with '$'")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        step = _PATH_STEP.match(path, position)
        if step is None:
            raise ValueError(f"JSON path {path!r} is not '$' followed by .key or [index] steps")
        key, index = step.groups()
        steps.append(key if key is not None else int(index))
        position = step.end()
    if not steps:
        raise ValueError("JSON path '$' names the whole payload, not a value in it")
    return tuple(steps)


def _value_at(document: object, path: str) -> object:
    node = document
    for step in parse_json_path(path):
        if isinstance(step, int) and isinstance(node, list) and step < len(node):
            node = node[step]
            continue
        if isinstance(step, str) and isinstance(node, dict) and step in node:
            node = node[step]
            continue
        raise BadPayload(f"payload has no value at {path}")
    return node


@dataclass(frozen=True)
class JsonPathFormat:
    """Any device's JSON on one topic, read at configured paths, all of which must be present.

    `paths` maps paths to what they hold, e.g. `{"$.energy.import": Input("import_wh", 1000)}`;
    `time_path`, if given, holds unix seconds (otherwise the sample takes the receive time).
    """

    topic: str
    paths: Mapping[str, Input]
    time_path: str | None = None

    def __post_init__(self) -> None:
        _check_topic(self.topic)
        if not self.paths:
            raise ValueError("at least one JSON path must be mapped")
        for path in (*self.paths, *([self.time_path] if self.time_path is not None else [])):
            parse_json_path(path)
        if len({spec.quantity for spec in self.paths.values()}) < len(self.paths):
            raise ValueError("two paths feed the same quantity")

    def topics(self) -> tuple[str, ...]:
        return (self.topic,)

    def parse(self, topic: str, payload: bytes, received_at: float) -> MqttSample:
        """A sample of the values at the paths, in Wh and W after the factors."""
        if topic != self.topic:
            raise BadPayload(f"topic {topic!r} is not {self.topic!r}")
        document = _json(payload)
        at = received_at
        if self.time_path is not None:
            at = _unix_seconds(_value_at(document, self.time_path), self.time_path)
        readings: dict[Quantity, float] = {}
        for path, spec in self.paths.items():
            readings[spec.quantity] = _reading(_value_at(document, path), path, spec)
        return _sample(at, readings)


def emoncms_number(value: float) -> bytes:
    """The payload of `emon/<node>/<key>`: the number as plain decimal text."""
    return json.dumps(_finite(value, "value")).encode()


def emoncms_json(inputs: Mapping[str, float], at: float | None = None) -> bytes:
    """The payload of `emon/<node>`: a JSON object of inputs, with `time` (unix s) if given."""
    document: dict[str, float] = {}
    for key, value in inputs.items():
        _check_topic_level(key, "input name")
        if key == "time":
            raise ValueError("'time' is the timestamp key of emoncms JSON, not an input")
        document[key] = _finite(value, f"input {key!r}")
    if at is not None:
        document["time"] = _finite(at, "time")
    return json.dumps(document, separators=(",", ":")).encode()


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return value


@dataclass(frozen=True)
class Broker:
    """Where the MQTT broker is, and how long to back off between reconnection attempts.

    paho doubles the wait after each failed attempt, from `min_backoff_s` to `max_backoff_s`.
    """

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    min_backoff_s: int = 1
    max_backoff_s: int = 60


def _client(broker: Broker, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    client.reconnect_delay_set(broker.min_backoff_s, broker.max_backoff_s)
    return client


SampleHandler = Callable[[str, MqttSample], None]
BadPayloadHandler = Callable[[str, BadPayload], None]


class _Connection:
    """A paho client's life: connect in the background (a broker that is down is retried with
    backoff), disconnect, and the context manager. Subclasses set `_broker` and `_client`."""

    _broker: Broker
    _client: mqtt.Client

    def start(self) -> None:
        """Connect in the background; a broker that is down now is retried with backoff."""
        self._client.connect_async(self._broker.host, self._broker.port, self._broker.keepalive_s)
        self._client.loop_start()

    def close(self) -> None:
        """Disconnect (unsent messages are dropped) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class MqttSource(_Connection):
    """Subscribes to the formats' topics and hands on samples and bad payloads, by topic.

    Callbacks run on paho's network thread; an exception in one is logged, not propagated, so
    that one faulty handler does not stop the stream. After a lost connection paho reconnects
    with bounded exponential backoff and the source subscribes again. `clock` stamps a message
    with the time it was received, ledger unix seconds (`service.clock`).
    """

    def __init__(
        self,
        broker: Broker,
        formats: Sequence[SampleFormat],
        on_sample: SampleHandler,
        on_bad_payload: BadPayloadHandler,
        *,
        client_id: str = "",
        clock: Callable[[], float] = ledger_now,
    ) -> None:
        self._formats: dict[str, SampleFormat] = {}
        for sample_format in formats:
            for topic in sample_format.topics():
                if topic in self._formats:
                    raise ValueError(f"topic {topic!r} belongs to two formats")
                self._formats[topic] = sample_format
        if not self._formats:
            raise ValueError("an MQTT source needs at least one format")
        self._broker = broker
        self._on_sample = on_sample
        self._on_bad_payload = on_bad_payload
        self._clock = clock
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._client = _client(broker, client_id)
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._subscription_acknowledged
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._message

    @property
    def connected(self) -> bool:
        """Whether the source is connected and its subscriptions are acknowledged."""
        return self._subscribed.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until `connected` (True) or until `timeout_s` seconds pass (False)."""
        return self._subscribed.wait(timeout_s)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        super().close()
        self._subscribed.clear()

    def _connected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("MQTT broker refused the connection: %s", reason_code)
            return
        result, mid = client.subscribe([(topic, QOS) for topic in self._formats])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.warning("MQTT subscribe failed: %s", mqtt.error_string(result))
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
        refused = [
            topic
            for topic, code in zip(self._formats, reason_codes, strict=False)
            if code.is_failure
        ]
        if refused:
            logger.warning("MQTT broker refused subscriptions to %s", ", ".join(refused))
        else:
            self._subscribed.set()

    def _disconnected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._subscribed.clear()
        logger.info("MQTT connection lost (%s); paho reconnects", reason_code)

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received_at = self._clock()
        topic = message.topic
        sample_format = self._formats.get(topic)
        try:
            if sample_format is None:
                self._on_bad_payload(topic, BadPayload("no format is configured for this topic"))
                return
            try:
                sample = sample_format.parse(topic, bytes(message.payload), received_at)
            except BadPayload as bad:
                self._on_bad_payload(topic, bad)
                return
            self._on_sample(topic, sample)
        except Exception:
            logger.exception("MQTT message handler failed on %s", topic)


class MqttPublisher(_Connection):
    """Publishes readings emoncms-style at QoS 1, for emoncms or any monitoring subscriber.

    Messages published while the broker is away are queued by paho and sent on reconnection.
    """

    def __init__(self, broker: Broker, *, client_id: str = "", base_topic: str = "emon") -> None:
        _check_topic(base_topic)
        self._broker = broker
        self._base_topic = base_topic
        self._client = _client(broker, client_id)
        self._client.on_publish = self._acknowledged
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._link = threading.Event()  # set while the broker has accepted the connection
        # Message ids awaiting the broker's PUBACK, and PUBACKs that beat `publish` returning.
        self._unacknowledged: set[int] = set()
        self._acknowledged_early: set[int] = set()
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and not lost it since."""
        return self._link.is_set()

    def close(self) -> None:
        """Disconnect (unsent messages are dropped) and stop the network thread."""
        super().close()
        self._link.clear()

    def publish_input(self, node: str, key: str, value: float) -> None:
        """Publish one input as `<base>/<node>/<key>`, a plain number (in the input's unit)."""
        _check_topic_level(node, "node")
        _check_topic_level(key, "input name")
        self._publish(f"{self._base_topic}/{node}/{key}", emoncms_number(value))

    def publish_node(
        self, node: str, inputs: Mapping[str, float], *, at: float | None = None
    ) -> None:
        """Publish a node's inputs as `<base>/<node>`, a JSON object, with `time` (unix s)."""
        _check_topic_level(node, "node")
        self._publish(f"{self._base_topic}/{node}", emoncms_json(inputs, at))

    def wait_published(self, timeout_s: float) -> bool:
        """Block until the broker acknowledged everything published so far, or `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if not self._unacknowledged:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=QOS)
        # Not connected: paho keeps the message and sends it once connected.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}")
        with self._lock:
            if info.mid in self._acknowledged_early:
                self._acknowledged_early.discard(info.mid)
            else:
                self._unacknowledged.add(info.mid)

    def _connected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("MQTT broker refused the publisher's connection: %s", reason_code)
            return
        self._link.set()

    def _disconnected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._link.clear()

    def _acknowledged(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            if mid in self._unacknowledged:
                self._unacknowledged.discard(mid)
            else:
                self._acknowledged_early.add(mid)
