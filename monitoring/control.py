"""The control centre: every device (node) with its feeds' last values, live, and the alarms
(`monitoring.alarms`). An operator sees every community's devices, a manager their own
community's; members are refused (403).

- `/control`: the page; `/static/control.js` keeps its table current.
- `/control/stream`: Server-Sent Events. On connect a `snapshot`; then a `feeds` event for
  every store write touching a visible feed, the current `alarms` every ALARMS_EVERY_S (a
  device going silent raises an alarm though nothing is written) and a keep-alive comment
  every KEEP_ALIVE_S. A client too slow to keep up gets a fresh snapshot instead of the
  events it missed. The stream ends when the client leaves or the service begins to stop.
- `/control/alarms.json`: the current alarms, for scripts.

The store calls back in the writer's thread (`MonitoringStore.listen`); `ControlHub` hands
each event to the event loop of every stream that may see it, into a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from sqlalchemy import select

from monitoring.alarms import Alarm, evaluate
from monitoring.auth import Viewer, require
from monitoring.service import MonitorService
from monitoring.store import DEFAULT_ZONE, Feed, MonitoringStore, community, node
from monitoring.templating import PageRoute, render
from service import ApiError, draining

MAX_STREAMS = 50  # streams open at once; each holds a connection and a queue
QUEUE_EVENTS = 256  # events a stream may fall behind before it is sent a fresh snapshot
ALARMS_EVERY_S = 2.0
KEEP_ALIVE_S = 15.0  # below the idle timeouts of common proxies (60 s)
CONTROL_JS = Path(__file__).parent / "static" / "control.js"

Watcher = Annotated[Viewer, Depends(require("manager", "operator"))]


def scope_of(who: Viewer) -> str | None:
    """The community whose devices `who` sees, None for every community (an operator)."""
    if who.role == "operator":
        return None
    if who.community_id is None:
        raise ApiError(403, "forbidden", "your account manages no community")
    return who.community_id


def feed_json(f: Feed) -> dict[str, Any]:
    return {
        "id": f.id,
        "node": f.node,
        "name": f.name,
        "kind": f.kind,
        "unit": f.unit,
        "last_time": f.last_time,
        "last_value": f.last_value,
        "min_ok": f.min_ok,
        "max_ok": f.max_ok,
    }


def node_rows(
    store: MonitoringStore, names: Sequence[str] | None, scope: str | None
) -> list[dict[str, Any]]:
    """The nodes named (every one if `names` is None) that `scope` sees, with their
    community's time zone."""
    query = (
        select(node, community.c.timezone)
        .outerjoin(community, community.c.id == node.c.community_id)
        .order_by(node.c.name)
    )
    if names is not None:
        query = query.where(node.c.name.in_(list(names)))
    if scope is not None:
        query = query.where(node.c.community_id == scope)
    with store.engine.connect() as conn:
        return [
            {**row._mapping, "timezone": row._mapping["timezone"] or DEFAULT_ZONE}
            for row in conn.execute(query)
        ]


@dataclass(frozen=True, slots=True)
class ControlView:
    """What one viewer sees at `now` (unix seconds): devices with their feeds, and alarms."""

    nodes: list[dict[str, Any]]
    feeds: list[Feed]
    alarms: list[Alarm]
    now: float

    def snapshot(self) -> dict[str, Any]:
        by_node: dict[str, list[dict[str, Any]]] = {}
        for f in self.feeds:
            by_node.setdefault(f.node, []).append(feed_json(f))
        return {
            "now": self.now,
            "nodes": [
                {
                    "name": n["name"],
                    "label": n["label"],
                    "community_id": n["community_id"],
                    "timezone": n["timezone"],
                    "silent_after_s": n["silent_after_s"],
                    "last_seen": n["last_seen"],
                    "feeds": by_node.get(n["name"], []),
                }
                for n in self.nodes
            ],
            "alarms": [a.as_json() for a in self.alarms],
        }


def control_view(service: MonitorService, scope: str | None) -> ControlView:
    """The devices, feeds and alarms `scope` sees (None: every community)."""
    store = service.store
    nodes = node_rows(store, None, scope)
    feeds = store.feeds(community_id=scope) if scope is not None else store.feeds()
    now = service.now()
    return ControlView(nodes, feeds, evaluate(nodes, feeds, now), now)


def sse(event: str, payload: dict[str, Any]) -> str:
    """One Server-Sent Event: its name and its JSON data on one line."""
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


@dataclass(eq=False)
class Listener:
    """One open stream: what it sees, the loop it runs on, its bounded queue of events, and
    whether it fell behind (then its queue was emptied and it owes a snapshot)."""

    scope: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_EVENTS)
    )
    behind: bool = False

    def deliver(self, event: dict[str, Any]) -> None:
        """Queue `event` (on the listener's loop); when full, drop the backlog for a snapshot
        (which also covers every event until the stream sends it)."""
        if self.behind:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.behind = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait({})  # wakes the stream, which sends the snapshot


class ControlHub:
    """The open streams of one application, fed by the store's write callback."""

    def __init__(self, store: MonitoringStore, limit: int = MAX_STREAMS) -> None:
        self.store, self.limit = store, limit
        self._listeners: set[Listener] = set()
        self._lock = threading.Lock()
        store.listen(self.on_write)

    def open(self, scope: str | None) -> Listener:
        """A new listener on the running loop, or 503 `busy` when `limit` streams are open."""
        listener = Listener(scope, asyncio.get_running_loop())
        with self._lock:
            if len(self._listeners) >= self.limit:
                raise ApiError(
                    503,
                    "busy",
                    f"{self.limit} live views are open already: close one or retry shortly",
                    {"Retry-After": "5"},
                )
            self._listeners.add(listener)
        return listener

    def close(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.discard(listener)

    def on_write(self, feeds: list[Feed]) -> None:
        """The store wrote `feeds` (runs in the writer's thread): tell every stream that sees
        one of them, with the nodes' new last_seen."""
        with self._lock:
            listeners = list(self._listeners)
        if not listeners or not feeds:
            return
        nodes = {n["name"]: n for n in node_rows(self.store, sorted({f.node for f in feeds}), None)}
        for listener in listeners:
            seen = [
                f
                for f in feeds
                if listener.scope is None
                or (f.node in nodes and nodes[f.node]["community_id"] == listener.scope)
            ]
            if not seen:
                continue
            event = {
                "feeds": [feed_json(f) for f in seen],
                "nodes": [
                    {"name": name, "last_seen": nodes[name]["last_seen"]}
                    for name in sorted({f.node for f in seen})
                    if name in nodes
                ],
            }
            with contextlib.suppress(RuntimeError):  # the stream's loop has closed
                listener.loop.call_soon_threadsafe(listener.deliver, event)


async def next_event(
    listener: Listener, stopping: asyncio.Event, timeout: float
) -> dict[str, Any] | None:
    """The listener's next event, or None after `timeout` seconds or once `stopping` is set."""
    got = asyncio.ensure_future(listener.queue.get())
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({got, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not got.done():
            got.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stop
    if got.done() and not got.cancelled():
        return got.result()
    return None


async def control_events(
    service: MonitorService, hub: ControlHub, listener: Listener, request: Request
) -> AsyncIterator[str]:
    """The stream of one viewer, until they leave or the service begins to stop."""
    stopping = draining(request)
    try:
        view = await asyncio.to_thread(control_view, service, listener.scope)
        yield sse("snapshot", view.snapshot())
        clock = time.monotonic
        alarms_at, keep_alive_at = clock() + ALARMS_EVERY_S, clock() + KEEP_ALIVE_S
        while not stopping.is_set() and not await request.is_disconnected():
            wait = max(0.0, min(alarms_at, keep_alive_at) - clock())
            event = await next_event(listener, stopping, min(wait, 1.0))
            if listener.behind:
                listener.behind = False
                while not listener.queue.empty():
                    listener.queue.get_nowait()
                view = await asyncio.to_thread(control_view, service, listener.scope)
                yield sse("snapshot", view.snapshot())
            elif event:
                yield sse("feeds", event)
            if clock() >= alarms_at:
                view = await asyncio.to_thread(control_view, service, listener.scope)
                yield sse("alarms", {"now": view.now, "alarms": [a.as_json() for a in view.alarms]})
                alarms_at = clock() + ALARMS_EVERY_S
            if clock() >= keep_alive_at:
                yield ": keep-alive\n\n"
                keep_alive_at = clock() + KEEP_ALIVE_S
    finally:
        hub.close(listener)


def control_router(service: MonitorService) -> APIRouter:
    """/control, /control/stream, /control/alarms.json and /static/control.js."""
    hub = ControlHub(service.store)
    pages = APIRouter(route_class=PageRoute, include_in_schema=False)
    api = APIRouter(include_in_schema=False)

    @pages.get("/control", response_class=HTMLResponse)
    def control_page(request: Request, who: Watcher) -> Response:
        view = control_view(service, scope_of(who))
        return render(request, "control.html", {"view": view, "snapshot": view.snapshot()})

    @api.get("/control/stream")
    async def control_stream(request: Request, who: Watcher) -> StreamingResponse:
        listener = hub.open(scope_of(who))
        return StreamingResponse(
            control_events(service, hub, listener, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @api.get("/control/alarms.json")
    def control_alarms(who: Watcher) -> dict[str, Any]:
        view = control_view(service, scope_of(who))
        return {"now": view.now, "alarms": [a.as_json() for a in view.alarms]}

    @api.get("/static/control.js")
    def control_js() -> FileResponse:
        return FileResponse(
            CONTROL_JS, media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    router = APIRouter()
    router.include_router(pages)
    router.include_router(api)
    return router
