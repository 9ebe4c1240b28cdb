"""Declaring what a feed is before its data arrives: its kind (how its values become energy),
unit, the supply point it measures and its role there, and its alarm range. A feed is named
by its node and input name, as devices name it; declaring it creates the node and the feed
if neither was seen yet, so a community can be set up before its devices speak."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from monitoring.samples import KINDS, check_name
from monitoring.store import MonitoringStore, feed, node, supply_point

ROLES = ("consumption", "generation", "export")
_COLUMNS = ("node", "name", "kind", "unit", "supply_point", "role", "min", "max")


@dataclass(frozen=True, slots=True)
class FeedDeclaration:
    """What a community says about feed `name` of `node`; None leaves a setting as it is."""

    node: str
    name: str
    kind: str | None = None
    unit: str | None = None
    supply_point_id: str | None = None
    role: str | None = None
    min_ok: float | None = None
    max_ok: float | None = None


def declare_feed(store: MonitoringStore, declared: FeedDeclaration) -> int:
    """Create or update the feed `declared` names; its id. ValueError says what is wrong."""
    return declare_feeds(store, [declared])[0]


def declare_feeds(store: MonitoringStore, declared: Sequence[FeedDeclaration]) -> list[int]:
    """Create or update every feed of `declared` in one transaction; their ids. ValueError
    names the first wrong one, and then nothing is saved."""
    with store.engine.begin() as conn:
        ids = []
        for n, one in enumerate(declared, start=1):
            try:
                ids.append(_declare(conn, one))
            except ValueError as exc:
                raise ValueError(f"feed {n} ({one.node}/{one.name}): {exc}") from None
        return ids


def read_feed_declarations(text: str) -> list[FeedDeclaration]:
    """Feed declarations from CSV text with the header `node,name,kind,unit,supply_point,
    role,min,max` (empty cells: None); ValueError names the line."""
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = {"node", "name"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ValueError("a header line with at least `node,name` and one feed per line")
    declared = []
    for line, row in enumerate(rows, start=2):
        unknown = set(row) - set(_COLUMNS)
        if unknown:
            raise ValueError(
                f"unknown column {sorted(unknown, key=str)[0]!r}: "
                f"the columns are {', '.join(_COLUMNS)}"
            )
        cell = {key: (row.get(key) or "").strip() or None for key in _COLUMNS}
        try:
            low = None if cell["min"] is None else float(cell["min"])
            high = None if cell["max"] is None else float(cell["max"])
        except ValueError:
            raise ValueError(f"line {line}: min and max are numbers") from None
        declared.append(
            FeedDeclaration(
                cell["node"] or "",
                cell["name"] or "",
                cell["kind"],
                cell["unit"],
                cell["supply_point"],
                cell["role"],
                low,
                high,
            )
        )
    return declared


def _declare(conn: Connection, declared: FeedDeclaration) -> int:
    check_name(declared.node, "node")
    check_name(declared.name, "input name")
    if declared.kind is not None and declared.kind not in KINDS:
        raise ValueError(f"a feed's kind is one of {', '.join(KINDS)}, not {declared.kind!r}")
    if declared.role is not None and declared.role not in ROLES:
        raise ValueError(f"a feed's role is one of {', '.join(ROLES)}, not {declared.role!r}")
    if declared.role is not None and declared.supply_point_id is None:
        raise ValueError("a role is a feed's role at a supply point: name the supply point")
    if (
        declared.min_ok is not None
        and declared.max_ok is not None
        and declared.min_ok > declared.max_ok
    ):
        raise ValueError("the alarm range's minimum is above its maximum")
    settings = {
        key: value
        for key, value in (
            ("kind", declared.kind),
            ("unit", declared.unit),
            ("supply_point_id", declared.supply_point_id),
            ("role", declared.role),
            ("min_ok", declared.min_ok),
            ("max_ok", declared.max_ok),
        )
        if value is not None
    }
    now = int(time.time())
    if declared.supply_point_id is not None:
        community_id = conn.scalar(
            select(supply_point.c.community_id).where(supply_point.c.id == declared.supply_point_id)
        )
        if community_id is None:
            raise ValueError(
                f"no supply point {declared.supply_point_id}: import it first "
                "(`petra monitor import members`)"
            )
    else:
        community_id = None
    known = conn.execute(select(node.c.community_id).where(node.c.name == declared.node))
    row = known.first()
    if row is None:
        conn.execute(
            node.insert().values(
                name=declared.node, community_id=community_id, first_seen=now, last_seen=0
            )
        )
    elif community_id is not None and row[0] not in (None, community_id):
        raise ValueError(
            f"node {declared.node} is in community {row[0]}, "
            f"supply point {declared.supply_point_id} in {community_id}"
        )
    elif community_id is not None and row[0] is None:
        conn.execute(
            update(node).where(node.c.name == declared.node).values(community_id=community_id)
        )
    feed_id = conn.scalar(
        select(feed.c.id).where(feed.c.node == declared.node, feed.c.name == declared.name)
    )
    if feed_id is None:
        inserted = conn.execute(
            feed.insert().values(
                node=declared.node,
                name=declared.name,
                **{"kind": "other", "unit": ""} | settings,
            )
        ).inserted_primary_key
        assert inserted is not None
        return int(inserted[0])
    if settings:
        conn.execute(update(feed).where(feed.c.id == feed_id).values(**settings))
    return int(feed_id)
