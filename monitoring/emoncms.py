"""The emoncms-compatible input and feed APIs (DESIGN.md sections 11 and 13): whatever already
speaks to emoncms (emonhub, Node-RED's emoncms node, emoncms apps and dashboards) speaks to
this service unchanged. They are a surface over the monitoring store, not a second store.

Parsing is pure and comes first (`post_samples`, `bulk_samples`); the routes below it
authenticate, parse, scope to the key's community and write once per request. The facts are
emoncms's own (Modules/input/input_methods.php, Modules/feed/feed_controller.php); where this
service differs it says so here:

- every refusal refuses the whole request, with a 4xx status (emoncms answers 200 and a
  message), a stable code and the index of the refused item, and nothing is stored;
- a `null` value stores nothing (emoncms stores 0); a value that is not a number is refused
  (emoncms stores 0); a `time` that is not a time is refused (emoncms uses its clock);
- `/feed/data.json` answers means over steps aligned to whole intervals since the epoch,
  with or without `average=1`; `limitinterval` has no effect (feeds here have no fixed
  interval); `delta`, `split`, `csv` and the calendar intervals are not supported.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from monitoring.keys import KeyGrant, grant_of, node_communities
from monitoring.metrics import EMONCMS
from monitoring.samples import EARLIEST_S, MAX_ABS_VALUE, Refused, Sample, sample
from monitoring.service import MonitorService
from monitoring.store import Feed, MonitoringStore, MonitoringStoreError
from service.http import bounded_body

POST_SOURCE, BULK_SOURCE = "input/post", "input/bulk"
MAX_BODY = 4 * 1024 * 1024  # bytes of a request body, and of a decompressed `cb` body
MAX_VALUES = 100_000  # values in one request: 20 s of a 5,000 samples/s stream
MAX_FIELDS = 100  # form fields in one body
MAX_POINTS = 100_000  # points in one /feed/data.json answer
LONGEST_SECONDS = 10**12  # beyond any unix time or offset in seconds: refused before arithmetic
MS_ABOVE = 100 * 10**9  # a /feed/data.json time above this is in milliseconds (as emoncms)
AUTO_POINTS = 800  # emoncms's default number of points when no interval is given
DEFAULT_NODE = "0"  # emoncms's node when none is named
ENGINE = "2"  # PHPTimeSeries, emoncms's engine for variable-interval feeds like these
STATUS = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
    "too_many": 413,
}
LONGEST_ID = 18  # digits of a feed id: beyond fits no database integer

NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # PHP is_numeric
LOOSE_DROPPED = re.compile(r"[^\w\s.:,-]")  # emoncms drops these from `json`/`csv` text


class ItemRefused(Refused):
    """A refusal of one item of a request (a bulk frame, a posted input): `item` its index."""

    def __init__(self, item: int, refused: Refused) -> None:
        super().__init__(refused.reason, f"item {item}: {refused.message}")
        self.item = item


# ---------------------------------------------------------------- pure parsing


def number_text(text: str, what: str) -> float:
    """`text` as a number the way PHP's is_numeric reads it (no hex, no inf, no nan)."""
    text = text.strip()
    if not NUMBER.fullmatch(text):
        raise Refused("bad_value", f"{what} is {text[:40]!r}, not a number")
    return float(text)


def reading(value: object, what: str) -> float | None:
    """A JSON value as a reading: a number, a numeric string, true/false as 1/0 (as emoncms),
    or None for null (nothing is stored)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        if abs(value) > MAX_ABS_VALUE:
            raise Refused("bad_value", f"{what} is {str(value)[:40]}…: send a real reading")
        return float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return None if value.strip().lower() == "null" else number_text(value, what)
    raise Refused("bad_value", f"{what} is {type(value).__name__}, not a number")


def seconds(value: object, what: str) -> int:
    """A number of seconds (a JSON number or a numeric string), truncated as PHP's (int)."""
    if isinstance(value, str):
        value = number_text(value, what) if NUMBER.fullmatch(value.strip()) else value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("bad_time", f"{what} is {str(value)[:40]!r}, not a number of seconds")
    if not math.isfinite(value) or abs(value) > LONGEST_SECONDS:
        raise Refused("bad_time", f"{what} is {str(value)[:40]}: send unix seconds")
    return int(value)


def unix_time(value: object, what: str) -> float:
    """A time as unix seconds: a number, or ISO 8601 text with its UTC offset."""
    if isinstance(value, str) and not NUMBER.fullmatch(value.strip()):
        try:
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                raise Refused(
                    "bad_time", f"{what} {value[:40]!r} has no UTC offset: add one, e.g. +01:00"
                )
            return moment.timestamp()
        except (ValueError, OverflowError):
            raise Refused(
                "bad_time", f"{what} {value[:40]!r} is neither unix seconds nor ISO 8601"
            ) from None
    if isinstance(value, str):
        return number_text(value, what)  # an infinite one is refused by the sample's checks
    return float(seconds(value, what)) if isinstance(value, int) else _finite_time(value, what)


def _finite_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
        raise Refused("bad_time", f"{what} is {str(value)[:40]!r}, not unix seconds")
    return value


def node_name(value: object) -> str:
    """A node named by text or by number (emoncms's node ids); empty names node 0."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= LONGEST_SECONDS:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip() or DEFAULT_NODE
    raise Refused("bad_name", f"node {str(value)[:40]!r} must be a name or a number")


def loose_inputs(text: str) -> list[tuple[str, float | None]]:
    """emoncms's loose forms: `{power1:100,power2:200}`, `power1:100,power2:200` and
    `100,200,300` (inputs 1, 2, 3), mixed as emoncms allows. Braces and quotes are dropped as
    emoncms drops them."""
    pairs = LOOSE_DROPPED.sub("", text).split(",")
    if len(pairs) > MAX_VALUES:
        raise Refused("too_many", f"more than {MAX_VALUES} values: send them in several posts")
    inputs: list[tuple[str, float | None]] = []
    position = 0
    for index, pair in enumerate(pairs):
        parts = [part.strip() for part in pair.split(":")]
        try:
            if len(parts) > 2 or not parts[-1]:
                raise Refused("malformed", "write name:value or a bare value between commas")
            if len(parts) == 1:
                position += 1
                inputs.append((str(position), _loose_value(parts[0], f"value {position}")))
            elif not parts[0]:
                raise Refused("malformed", f"the value {parts[1][:20]!r} has no name before ':'")
            else:
                inputs.append((parts[0], _loose_value(parts[1], f"input {parts[0][:64]!r}")))
        except Refused as exc:
            raise ItemRefused(index, exc) from None
    return inputs


def _loose_value(text: str, what: str) -> float | None:
    return None if text.lower() == "null" else number_text(text, what)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise Refused("malformed", f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers of over 4,300 digits
        raise Refused("malformed", f"{what} is not valid JSON: {str(exc)[:80]}") from None


def full_json_inputs(text: str) -> tuple[list[tuple[str, float | None]], float | None]:
    """A strict JSON object of inputs (`fulljson`), flat as emoncms requires, and the time its
    `time` key gives (any case), if any."""
    document = _json(text, "fulljson")
    if not isinstance(document, dict):
        raise Refused("malformed", 'fulljson must be a JSON object such as {"power1":100}')
    if len(document) > MAX_VALUES:
        raise Refused("too_many", f"more than {MAX_VALUES} values: send them in several posts")
    inputs: list[tuple[str, float | None]] = []
    at: float | None = None
    for index, (name, value) in enumerate(document.items()):
        try:
            if name.lower() == "time":
                at = unix_time(value, "time")
            elif isinstance(value, dict | list):
                raise Refused("malformed", f"input {name[:64]!r} is nested: send one level")
            else:
                inputs.append((name, reading(value, f"input {name[:64]!r}")))
        except Refused as exc:
            raise ItemRefused(index, exc) from None
    return inputs, at


def post_samples(params: Mapping[str, str], now: float) -> list[Sample]:
    """The checked samples of an `/input/post` request's parameters: `node`, one of `json`,
    `fulljson`, `csv`, `data` (emoncms's order), and `time` (else fulljson's, else `now`)."""
    node = node_name(params.get("node", DEFAULT_NODE))
    form = next((key for key in ("json", "fulljson", "csv", "data") if params.get(key)), None)
    if form is None:
        raise Refused("malformed", "the request has no data: send fulljson, json, csv or data")
    if form == "fulljson":
        inputs, at = full_json_inputs(params[form])
    else:
        inputs, at = loose_inputs(params[form]), None
    if "time" in params:
        at = unix_time(params["time"], "time")
    t = now if at is None else at
    samples = []
    for index, (name, value) in enumerate(inputs):
        if value is not None:
            try:
                samples.append(sample(node, name, t, value, now))
            except Refused as exc:
                raise ItemRefused(index, exc) from None
    return samples


def bulk_frames(text: str) -> list[Any]:
    """The frames of `/input/bulk`'s `data`: a non-empty JSON list whose last item has a time."""
    frames = _json(text, "data")
    if not isinstance(frames, list) or not frames:
        raise Refused("malformed", "data must be a JSON list of [time, node, value, ...] items")
    if not isinstance(frames[-1], list) or not frames[-1]:
        raise Refused("malformed", "the last item of data has no time")
    return frames


def bulk_reference(params: Mapping[str, str], frames: list[Any], now: float) -> int:
    """The time each frame's first number adds to, as emoncms: `now - sentat` (emonhub sends
    absolute times and the time it sent them), `now - offset`, `time`, or else `now` minus
    the last frame's number (so the last frame arrived now)."""
    clock = int(now)
    if "sentat" in params:
        return clock - seconds(params["sentat"], "sentat")
    if "offset" in params:
        return clock - seconds(params["offset"], "offset")
    if "time" in params:
        return seconds(unix_time(params["time"], "time"), "time")
    if all(_absolute(frame) for frame in frames):
        return 0  # every item carries a unix time: they are absolute (`time=0` in emoncms)
    return clock - seconds(frames[-1][0], "the last item's time")


def _absolute(frame: object) -> bool:
    """Whether a bulk item starts with a unix time rather than an offset: no offset is 24
    years long, so a first number past 2000-01-01 is a time."""
    return (
        isinstance(frame, list)
        and bool(frame)
        and isinstance(frame[0], int | float)
        and not isinstance(frame[0], bool)
        and frame[0] >= EARLIEST_S
    )


def bulk_samples(params: Mapping[str, str], text: str, now: float) -> list[Sample]:
    """The checked samples of an `/input/bulk` request: `data=[[time, node, v1, v2, ...], ...]`
    (values name inputs 1, 2, ...; an object among them names its inputs), with `sentat`,
    `offset` or `time` as emoncms reads them, or absolute unix times when every item has one
    and no parameter is given. Frames with no value are skipped, as emoncms."""
    frames = bulk_frames(text)
    reference = bulk_reference(params, frames, now)
    samples: list[Sample] = []
    for index, frame in enumerate(frames):
        try:
            if not isinstance(frame, list):
                raise Refused("malformed", "each item is a list [time, node, value, ...]")
            if len(frame) < 3:
                continue
            t = reference + seconds(frame[0], "its time")
            node = node_name(frame[1])
            named: list[tuple[str, object]] = []
            position = 0
            for value in frame[2:]:
                if isinstance(value, dict):
                    named.extend(value.items())
                else:
                    position += 1
                    named.append((str(position), value))
            for name, value in named:
                number = reading(value, f"input {name[:64]!r}")
                if number is not None:
                    samples.append(sample(node, name, t, number, now))
            if len(samples) > MAX_VALUES:
                raise Refused(
                    "too_many", f"more than {MAX_VALUES} values: send them in several posts"
                )
        except Refused as exc:
            raise ItemRefused(index, exc) from None
    return samples


def request_times(start: str, end: str) -> tuple[int, int]:
    """`/feed/data.json`'s start and end as unix seconds: numbers in seconds or milliseconds
    (as emoncms tells them apart), or ISO 8601 with an offset."""
    bounds = []
    for value, what in ((start, "start"), (end, "end")):
        try:
            t = unix_time(value, what)
        except Refused as exc:
            raise Refused("bad_request", exc.message) from None
        if not math.isfinite(t):
            raise Refused("bad_request", f"{what} is too far from now")
        bounds.append(int(t / 1000 if t > MS_ABOVE else t))
    if bounds[1] <= bounds[0]:
        raise Refused("bad_request", "Request end time before start time")
    return bounds[0], bounds[1]


def request_interval(interval: str | None, start: int, end: int) -> int:
    """`/feed/data.json`'s interval in seconds; none or below 1 gives 800 points (as emoncms).
    Refused when the answer would hold more than MAX_POINTS points."""
    text = (interval or "0").strip()
    if not NUMBER.fullmatch(text):
        raise Refused(
            "bad_request",
            f"interval {text[:20]!r} is not a number of seconds "
            "(daily, weekly, monthly and annual are not supported here)",
        )
    asked = float(text)
    if not math.isfinite(asked) or asked > LONGEST_SECONDS:
        raise Refused("bad_request", "interval is longer than any range")
    step = int(asked) if asked >= 1 else round((end - start) / AUTO_POINTS)
    if step < 1:
        raise Refused("bad_request", "Invalid interval: the range is shorter than 800 seconds")
    points = round((end - start) / step)
    if points > MAX_POINTS:
        raise Refused(
            "too_many",
            f"request datapoint limit reached ({MAX_POINTS}), increase request interval or "
            f"reduce time range, requested datapoints = {points}",
        )
    return step


def series(
    means: Iterable[tuple[int, float]],
    start: int,
    end: int,
    interval: int,
    *,
    skip_missing: bool,
) -> list[tuple[int, float | None]]:
    """Means by step start (unix seconds) on the grid of whole `interval`s from the one holding
    `start` to `end`; a step with no sample is None unless `skip_missing` leaves it out."""
    known = dict(means)
    if skip_missing:
        return sorted(known.items())
    first = start - start % interval
    return [(t, known.get(t)) for t in range(first, end, interval)]


def formatted(points: list[tuple[int, float | None]], timeformat: str, dp: int) -> list[Any]:
    """Points as emoncms answers them: `[[time_ms, value], ...]` (`unixms`), seconds (`unix`)
    or values alone (`notime`); values rounded to `dp` decimals unless `dp` is -1."""

    def value(v: float | None) -> float | None:
        return v if v is None or dp == -1 else round(v, dp)

    if timeformat == "unixms":
        return [[t * 1000, value(v)] for t, v in points]
    if timeformat == "unix":
        return [[t, value(v)] for t, v in points]
    if timeformat == "notime":
        return [value(v) for _, v in points]
    raise Refused("bad_request", "timeformat must be unixms, unix or notime")


def feed_listing(feed: Feed) -> dict[str, Any]:
    """A feed as emoncms's /feed/list.json lists it (strings where emoncms's cache gives
    strings): its name is the input's, its tag the node's."""
    return {
        "id": str(feed.id),
        "userid": "1",
        "name": feed.name,
        "tag": feed.node,
        "public": "0",
        "size": "0",
        "engine": ENGINE,
        "processList": "",
        "unit": feed.unit,
        "time": feed.last_time,
        "value": feed.last_value,
    }


# ---------------------------------------------------------------- answers


def refusal_answer(refused: Refused) -> JSONResponse:
    """The project's error shape and emoncms's `success`/`message` side by side."""
    error: dict[str, Any] = {"code": refused.reason, "message": refused.message}
    if isinstance(refused, ItemRefused):
        error["item"] = refused.item
    status = STATUS.get(refused.reason, 400)
    headers = {"WWW-Authenticate": 'Bearer realm="API KEY"'} if status == 401 else None
    return JSONResponse(
        {"success": False, "message": refused.message, "error": error},
        status_code=status,
        headers=headers,
    )


def missing_feeds_answer(ids: list[int]) -> JSONResponse:
    """emoncms's answer for feeds that do not exist (or this key may not see), with 404."""
    one = len(ids) == 1
    message = f"feed {ids[0]} does not exist" if one else f"{len(ids)} feeds do not exist"
    return JSONResponse(
        {
            "success": False,
            "message": message,
            "feeds": ids,
            "error": {"code": "not_found", "message": message},
        },
        status_code=404,
    )


def _no_feed() -> JSONResponse:
    return refusal_answer(Refused("not_found", "Feed does not exist"))


# ---------------------------------------------------------------- keys and scope


def key_of(params: Mapping[str, str], authorization: str | None) -> str | None:
    """The key a request sends: its `apikey` parameter, else `Authorization: Bearer <key>`."""
    if "apikey" in params:
        return params["apikey"].strip()
    if authorization and authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :].strip()
    return None


def authenticate(service: MonitorService, key: str | None) -> KeyGrant:
    """The grant of `key`, or Refused(`unauthorized`)."""
    if not key:
        raise Refused(
            "unauthorized",
            "this route needs an API key: send apikey=<key> or Authorization: Bearer <key>",
        )
    grant = grant_of(service.store, key, service.now())
    if grant is None:
        raise Refused("unauthorized", "Invalid API key: check it, or ask for a new one")
    return grant


def admit_nodes(store: MonitoringStore, grant: KeyGrant, nodes: Iterable[str]) -> None:
    """Refuse (`forbidden`) a node of another community than the key's; put the key's new
    nodes in its community."""
    if grant.community_id is None:
        return
    wanted = set(nodes)
    known = node_communities(store, wanted)
    for name in sorted(wanted):
        if name in known and not grant.reaches(known[name]):
            raise Refused(
                "forbidden", f"node {name!r} is not of this key's community: use another node"
            )
    for name in sorted(wanted - known.keys()):
        store.set_node(name, community_id=grant.community_id)


def visible_feed(store: MonitoringStore, grant: KeyGrant, feed_id: int) -> Feed | None:
    """Feed `feed_id` if it exists and `grant` reaches its node."""
    found = store.feed(feed_id)
    if found is None or grant.community_id is None:
        return found
    return found if grant.reaches(node_communities(store, [found.node]).get(found.node)) else None


# ---------------------------------------------------------------- routes

Key = Annotated[
    str | None, Query(description="A read or write API key (or `Authorization: Bearer <key>`).")
]
FeedId = Annotated[int, Query(description="The feed's id.", ge=0, le=2**62)]
_POST_FIELDS = {
    "node": "The node: a name or a number (default 0).",
    "fulljson": 'A JSON object of inputs, e.g. {"power1":100,"time":1700000000}.',
    "json": "emoncms's loose form: {power1:100,power2:200} or power1:100,power2:200.",
    "csv": "Values of inputs 1, 2, 3...: 100,200,300.",
    "data": "The loose form, as json or csv.",
    "time": "Unix seconds, or ISO 8601 with its offset (default: now).",
    "apikey": "A write API key (or send `Authorization: Bearer <key>`).",
}
_BULK_FIELDS = {
    "data": "[[time_or_offset, node, value1, value2, ...], ...] as JSON.",
    "sentat": "When the sender sent it, by its clock: each time becomes now - (sentat - time).",
    "offset": "Each time becomes now - offset + time (as emoncms).",
    "time": "Each time becomes this time + the item's offset.",
    "cb": "1: the body is zlib-compressed JSON data (emonhub's compress=1).",
    "c": "1: data is zlib-compressed JSON in hex.",
    "apikey": "A write API key (or send `Authorization: Bearer <key>`).",
}


def _openapi_input(fields: Mapping[str, str], with_body: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            | {"description": description}
            for name, description in fields.items()
        ]
    }
    if with_body:
        properties = {name: {"type": "string"} for name in fields}
        extra["requestBody"] = {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": properties}
                }
            },
        }
    return extra


_INPUT_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'Stored: `ok`, or `{"success": true}` when fulljson was sent.',
        "content": {"text/plain": {"schema": {"type": "string", "example": "ok"}}},
    },
    400: {"description": "A refused item: nothing of the request was stored."},
    401: {"description": "No API key, or not one of ours."},
    403: {"description": "A read key, or a node of another community."},
    413: {"description": "Too large a body, or too many values."},
}


async def _parameters(request: Request, body: bytes) -> dict[str, str]:
    """The query's parameters, overridden by a form body's (as PHP's $_GET then $_POST)."""
    params = dict(request.query_params)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/x-www-form-urlencoded":
            text = body.decode("utf-8", "replace")
            params.update(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS))
        elif kind == "multipart/form-data":
            params.update(
                (key, value)
                for key, value in (await _replayed(request, body)).items()
                if isinstance(value, str)
            )
    except Exception:  # a hostile body of any kind is a malformed request, never a 500
        raise Refused("malformed", "the form body cannot be read: send it url-encoded") from None
    return params


async def _replayed(request: Request, body: bytes) -> Mapping[str, Any]:
    """A multipart body, already read under its bound, parsed by Starlette."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return await Request(request.scope, receive).form(max_files=0, max_fields=MAX_FIELDS)


def _inflated(compressed: bytes) -> str:
    """A zlib-compressed payload, never inflated beyond MAX_BODY."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, MAX_BODY)
    except zlib.error:
        raise Refused("malformed", "the compressed data is not zlib data") from None
    if inflater.unconsumed_tail:
        raise Refused("too_large", f"the data inflates beyond {MAX_BODY} bytes")
    return out.decode("utf-8", "replace")


def _bulk_data(params: Mapping[str, str], body: bytes) -> str:
    if params.get("cb"):
        return _inflated(body)
    if params.get("c"):
        try:
            return _inflated(bytes.fromhex(params.get("data", "")))
        except ValueError:
            raise Refused("malformed", "Format error, compressed hex not valid") from None
    if not params.get("data"):
        raise Refused("malformed", "the request has no data: send data=[[time, node, value]]")
    return params["data"]


Parse = Callable[[dict[str, str], bytes, float], list[Sample]]


def _post(params: dict[str, str], _: bytes, now: float) -> list[Sample]:
    return post_samples(params, now)


def _bulk(params: dict[str, str], body: bytes, now: float) -> list[Sample]:
    return bulk_samples(params, _bulk_data(params, body), now)


def _store_inputs(
    service: MonitorService, parse: Parse, params: dict[str, str], body: bytes, key: str | None
) -> Response:
    grant = authenticate(service, key)
    if not grant.writes:
        raise Refused("forbidden", "this is a read key: posting inputs needs a write key")
    now = service.now()
    samples = parse(params, body, now)
    admit_nodes(service.store, grant, (s.node for s in samples))
    try:
        service.store.write(samples, now)
    except MonitoringStoreError as exc:
        return JSONResponse(
            {
                "success": False,
                "message": str(exc),
                "error": {"code": "unavailable", "message": f"{exc}: send it again"},
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )
    service.samples.add(EMONCMS, len(samples))
    return PlainTextResponse('{"success": true}' if "fulljson" in params else "ok")


def emoncms_router(service: MonitorService) -> APIRouter:
    """The emoncms input API (`/input/post`, `/input/bulk`, with or without `.json`, GET or
    POST) and read API (`/feed/list.json`, `value`, `timevalue`, `fetch`, `data`,
    `/input/list.json`) over `service`."""
    router = APIRouter(tags=["emoncms"])
    store = service.store

    def input_route(source: str, parse: Parse) -> Callable[[Request], Any]:
        async def take(request: Request) -> Response:
            try:
                body = await bounded_body(
                    request,
                    MAX_BODY,
                    Refused("too_large", f"the body is over {MAX_BODY} bytes: send less per post"),
                )
                params = await _parameters(request, body)
                key = key_of(params, request.headers.get("authorization"))
                return await run_in_threadpool(_store_inputs, service, parse, params, body, key)
            except Refused as exc:
                await run_in_threadpool(
                    store.refuse, source, exc.reason, exc.message, service.now()
                )
                return refusal_answer(exc)

        return take

    for source, parse, fields, what in (
        (POST_SOURCE, _post, _POST_FIELDS, "Post one node's inputs"),
        (BULK_SOURCE, _bulk, _BULK_FIELDS, "Post many frames of inputs (emonhub)"),
    ):
        for path in (f"/{source}", f"/{source}.json"):
            for method in ("GET", "POST"):
                router.add_api_route(
                    path,
                    input_route(source, parse),
                    methods=[method],
                    name=f"{method.lower()}_{path.strip('/').replace('/', '_')}",
                    summary=what,
                    response_class=PlainTextResponse,
                    responses=_INPUT_ANSWERS,
                    openapi_extra=_openapi_input(fields, method == "POST"),
                    include_in_schema=True,
                )

    def reader(request: Request, apikey: str | None) -> KeyGrant:
        params = {"apikey": apikey} if apikey is not None else {}
        return authenticate(service, key_of(params, request.headers.get("authorization")))

    @router.get("/feed/list.json", summary="Every feed the key sees, as emoncms lists them")
    def feed_list(request: Request, apikey: Key = None) -> Response:
        try:
            grant = reader(request, apikey)
        except Refused as exc:
            return refusal_answer(exc)
        feeds = store.feeds(community_id=grant.community_id)
        return JSONResponse([feed_listing(f) for f in feeds])

    @router.get("/input/list.json", summary="Every input the key sees (one per feed)")
    def input_list(request: Request, apikey: Key = None) -> Response:
        try:
            grant = reader(request, apikey)
        except Refused as exc:
            return refusal_answer(exc)
        return JSONResponse(
            [
                {
                    "id": str(f.id),
                    "userid": "1",
                    "nodeid": f.node,
                    "name": f.name,
                    "description": "",
                    "processList": "",
                    "time": f.last_time,
                    "value": f.last_value,
                }
                for f in store.feeds(community_id=grant.community_id)
            ]
        )

    @router.get("/feed/value.json", summary="A feed's last value (null before any)")
    def feed_value(request: Request, id: FeedId, apikey: Key = None) -> Response:
        try:
            found = visible_feed(store, reader(request, apikey), id)
        except Refused as exc:
            return refusal_answer(exc)
        return _no_feed() if found is None else JSONResponse(found.last_value)

    @router.get("/feed/timevalue.json", summary="A feed's last time (unix seconds) and value")
    def feed_timevalue(request: Request, id: FeedId, apikey: Key = None) -> Response:
        try:
            found = visible_feed(store, reader(request, apikey), id)
        except Refused as exc:
            return refusal_answer(exc)
        if found is None:
            return _no_feed()
        return JSONResponse({"time": found.last_time, "value": found.last_value})

    @router.get(
        "/feed/fetch.json", summary="The last values of several feeds (false for a missing one)"
    )
    def feed_fetch(
        request: Request,
        ids: Annotated[str, Query(description="Feed ids, comma-separated: 1,2,3.")],
        apikey: Key = None,
    ) -> Response:
        try:
            grant = reader(request, apikey)
            wanted = _feed_ids(ids)
        except Refused as exc:
            return refusal_answer(exc)
        answer: list[float | bool | None] = []
        for feed_id in wanted:
            found = visible_feed(store, grant, feed_id)
            answer.append(False if found is None else found.last_value)
        return JSONResponse(answer)

    @router.get(
        "/feed/data.json",
        summary="A feed's mean over each interval: [[time_ms, value], ...]",
        description="Times in milliseconds unless `timeformat` says otherwise; steps are whole "
        "intervals since the epoch (UTC). `average` and `limitinterval` are accepted: every "
        "point is a mean here, and feeds have no fixed interval to limit to.",
    )
    def feed_data(
        request: Request,
        start: Annotated[str, Query(description="Unix seconds or milliseconds, or ISO 8601.")],
        end: Annotated[str, Query(description="Unix seconds or milliseconds, or ISO 8601.")],
        id: Annotated[str | None, Query(description="A feed id (or several: 1,2).")] = None,
        ids: Annotated[str | None, Query(description="Feed ids: 1,2 (answers per feed).")] = None,
        interval: Annotated[str | None, Query(description="Seconds (default: 800 points).")] = None,
        average: Annotated[str | None, Query(description="1: means (always, here).")] = None,
        skipmissing: Annotated[int, Query(description="1: leave out empty steps.")] = 0,
        limitinterval: Annotated[str | None, Query(description="Accepted, no effect.")] = None,
        timeformat: Annotated[str, Query(description="unixms, unix or notime.")] = "unixms",
        dp: Annotated[int, Query(description="Decimals; -1: as stored.", ge=-15, le=15)] = -1,
        apikey: Key = None,
    ) -> Response:
        try:
            grant = reader(request, apikey)
            wanted = _feed_ids(id if id is not None else ids or "")
            feeds = [visible_feed(store, grant, feed_id) for feed_id in wanted]
            missing = [feed_id for feed_id, f in zip(wanted, feeds, strict=True) if f is None]
            if missing:
                return missing_feeds_answer(missing)
            first, last = request_times(start, end)
            step = request_interval(interval, first, last)
            answers = [
                formatted(
                    series(
                        store.averages(feed_id, first, last, step),
                        first,
                        last,
                        step,
                        skip_missing=bool(skipmissing),
                    ),
                    timeformat,
                    dp,
                )
                for feed_id in wanted
            ]
        except Refused as exc:
            return refusal_answer(exc)
        if id is not None and len(wanted) == 1:
            return JSONResponse(answers[0])
        return JSONResponse(
            [
                {"feedid": feed_id, "data": data}
                for feed_id, data in zip(wanted, answers, strict=True)
            ]
        )

    return router


def _feed_ids(text: str) -> list[int]:
    """Feed ids from `1,2,3`; Refused(`bad_request`) for anything else."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or len(parts) > 100:
        raise Refused("bad_request", "ids are 1 to 100 feed numbers separated by commas: 1,2,3")
    if not all(p.isascii() and p.isdigit() and len(p) <= LONGEST_ID for p in parts):
        raise Refused("bad_request", "ids are 1 to 100 feed numbers separated by commas: 1,2,3")
    return [int(p) for p in parts]
