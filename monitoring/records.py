"""What a community holds, read from the monitoring store: its supply points, members and
installations as records, what each supply point feed measures, and the hourly energy of
feeds. The pages, the agreements and the command line read them here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from monitoring.figures import energy_kwh
from monitoring.store import HOUR_S, Feed, MonitoringStore, installation, member, supply_point


def supply_points_of(store: MonitoringStore, community_id: str) -> list[dict[str, Any]]:
    """The community's supply points with their member's name, by id."""
    query = (
        select(supply_point, member.c.name.label("member_name"), member.c.ref.label("member_ref"))
        .outerjoin(member, member.c.id == supply_point.c.member_id)
        .where(supply_point.c.community_id == community_id)
        .order_by(supply_point.c.id)
    )
    with store.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def members_of(store: MonitoringStore, community_id: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(member).where(member.c.community_id == community_id).order_by(member.c.ref)
        )
        return [dict(row._mapping) for row in rows]


def installations_of(store: MonitoringStore, community_id: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(installation)
            .where(installation.c.community_id == community_id)
            .order_by(installation.c.id)
        )
        return [dict(row._mapping) for row in rows]


def feed_role(feed: Feed, points: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What a supply point feed measures: its declared role, else its supply point's kind."""
    if feed.role is not None:
        return feed.role
    point = points.get(feed.supply_point_id or "")
    return None if point is None else str(point["kind"])


def hourly_kwh(
    store: MonitoringStore, feeds: Sequence[Feed], start: int, end: int
) -> dict[int, dict[int, float]]:
    """kWh per hour start of each of `feeds` in [start, end)."""
    by_feed = store.buckets([f.id for f in feeds], HOUR_S, start, end)
    return {f.id: energy_kwh(f.kind, by_feed[f.id]) for f in feeds}
