"""The control centre's alarms, pure: a device (node) silent for longer than its
`silent_after_s`, and a feed whose last value lies outside its `[min_ok, max_ok]` range.

Alarms are recomputed from the current state whenever they are shown, never stored: a node
that speaks again or a value back in range simply raises no alarm the next time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from monitoring.store import Feed

SILENT: Literal["silent"] = "silent"
OUT_OF_RANGE: Literal["out_of_range"] = "out_of_range"


@dataclass(frozen=True, slots=True)
class Alarm:
    """`kind` "silent" (then `feed_id` is None) or "out_of_range"; `since`: unix seconds from
    which the condition holds."""

    kind: Literal["silent", "out_of_range"]
    node: str
    feed_id: int | None
    since: int
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "feed_id": self.feed_id,
            "since": self.since,
            "message": self.message,
        }


def silent_alarm(node: Mapping[str, Any], now: float) -> Alarm | None:
    """The alarm of `node` (a row of `mon_node`: name, silent_after_s, first_seen, last_seen,
    in unix seconds) if it has sent nothing for more than `silent_after_s` seconds by `now`."""
    last_seen = int(node["last_seen"])
    # A node declared before its first sample has last_seen 0: count from its declaration.
    heard = last_seen if last_seen > 0 else int(node["first_seen"])
    since = heard + int(node["silent_after_s"])
    if now <= since:
        return None
    if last_seen <= 0:
        message = f"device {node['name']} has never sent data"
    else:
        quiet_s = int(now) - last_seen
        message = (
            f"device {node['name']} has sent nothing for {quiet_s} s "
            f"(it is expected at least every {node['silent_after_s']} s)"
        )
    return Alarm(SILENT, str(node["name"]), None, since, message)


def range_alarm(feed: Feed) -> Alarm | None:
    """The alarm of `feed` if its last value is below `min_ok` or above `max_ok` (in the
    feed's unit; a bound that is None does not apply)."""
    value, at = feed.last_value, feed.last_time
    if value is None or at is None:
        return None
    if feed.min_ok is not None and value < feed.min_ok:
        bound = f"below its minimum {feed.min_ok:g}"
    elif feed.max_ok is not None and value > feed.max_ok:
        bound = f"above its maximum {feed.max_ok:g}"
    else:
        return None
    unit = f" {feed.unit}" if feed.unit else ""
    message = f"{feed.node}/{feed.name} reads {value:g}{unit}, {bound}{unit}"
    return Alarm(OUT_OF_RANGE, feed.node, feed.id, at, message)


def evaluate(nodes: Iterable[Mapping[str, Any]], feeds: Iterable[Feed], now: float) -> list[Alarm]:
    """Every alarm at `now` (unix seconds) of `nodes` (rows of `mon_node`) and `feeds`: silent
    nodes first, then feeds out of range, each by node name and feed id."""
    silent = [alarm for node in nodes if (alarm := silent_alarm(node, now))]
    ranged = [alarm for feed in feeds if (alarm := range_alarm(feed))]
    silent.sort(key=lambda alarm: alarm.node)
    ranged.sort(key=lambda alarm: (alarm.node, alarm.feed_id or 0))
    return silent + ranged
