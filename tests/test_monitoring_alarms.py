"""The control centre's alarms (`monitoring.alarms.evaluate`): a node silent past its
`silent_after_s`, a feed's last value outside `[min_ok, max_ok]`, nothing else."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from monitoring.alarms import OUT_OF_RANGE, SILENT, evaluate
from monitoring.store import Feed

NOW = 1_700_000_000

times = st.integers(min_value=NOW - 10_000, max_value=NOW)
bounds = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))
values = st.floats(-2e6, 2e6, allow_nan=False)


def node_row(name: str, last_seen: int, silent_after_s: int, first_seen: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "community_id": "c",
        "label": None,
        "silent_after_s": silent_after_s,
        "first_seen": first_seen,
        "last_seen": last_seen,
    }


def feed_of(feed_id: int, value: float | None, low: float | None, high: float | None) -> Feed:
    return Feed(
        id=feed_id,
        node=f"n{feed_id % 3}",
        name=f"f{feed_id}",
        kind="power",
        unit="W",
        supply_point_id=None,
        role=None,
        min_ok=low,
        max_ok=high,
        last_time=None if value is None else NOW - 5,
        last_value=value,
    )


@given(last_seen=times, silent_after_s=st.integers(1, 5_000), now=times)
def test_a_node_is_silent_exactly_when_quiet_longer_than_allowed(
    last_seen: int, silent_after_s: int, now: int
) -> None:
    alarms = evaluate([node_row("meter-1", last_seen, silent_after_s)], [], now)
    silent = now - last_seen > silent_after_s
    assert [a.kind for a in alarms] == ([SILENT] if silent else [])
    if silent:
        assert alarms[0].node == "meter-1"
        assert alarms[0].feed_id is None
        assert alarms[0].since == last_seen + silent_after_s
        assert alarms[0].since < now
        assert f"{now - last_seen} s" in alarms[0].message


@given(value=values, low=bounds, high=bounds)
def test_a_feed_alarms_exactly_when_its_last_value_is_out_of_range(
    value: float, low: float | None, high: float | None
) -> None:
    alarms = evaluate([], [feed_of(7, value, low, high)], NOW)
    outside = (low is not None and value < low) or (high is not None and value > high)
    assert [a.kind for a in alarms] == ([OUT_OF_RANGE] if outside else [])
    if outside:
        assert (alarms[0].node, alarms[0].feed_id, alarms[0].since) == ("n1", 7, NOW - 5)
        assert "n1/f7" in alarms[0].message


@given(low=bounds, high=bounds)
def test_a_feed_without_a_value_never_alarms(low: float | None, high: float | None) -> None:
    assert evaluate([], [feed_of(3, None, low, high)], NOW) == []


@given(
    nodes=st.lists(st.tuples(times, st.integers(1, 5_000)), max_size=8),
    feeds=st.lists(st.tuples(values, bounds, bounds), max_size=8),
    now=times,
)
def test_alarms_are_one_per_condition_and_in_a_stable_order(
    nodes: list[tuple[int, int]], feeds: list[tuple[float, float | None, float | None]], now: int
) -> None:
    rows = [node_row(f"node-{i:02d}", seen, after) for i, (seen, after) in enumerate(nodes)]
    feed_rows = [feed_of(i + 1, *spec) for i, spec in enumerate(feeds)]
    alarms = evaluate(reversed(rows), reversed(feed_rows), now)
    assert alarms == evaluate(rows, feed_rows, now)  # the order of the input does not matter
    kinds = [a.kind for a in alarms]
    assert kinds == sorted(kinds, key=[SILENT, OUT_OF_RANGE].index)
    silent_nodes = [a.node for a in alarms if a.kind == SILENT]
    assert silent_nodes == sorted(set(silent_nodes))
    ranged = [a.feed_id for a in alarms if a.kind == OUT_OF_RANGE]
    assert len(ranged) == len(set(ranged))


def test_a_declared_node_that_never_spoke_is_silent_once_its_grace_has_passed() -> None:
    declared = node_row("new", last_seen=0, silent_after_s=60, first_seen=NOW - 100)
    assert evaluate([declared], [], NOW - 50) == []
    (alarm,) = evaluate([declared], [], NOW)
    assert alarm.since == NOW - 40
    assert alarm.message == "device new has never sent data"


def test_a_node_heard_at_the_limit_is_not_yet_silent() -> None:
    assert evaluate([node_row("edge", NOW - 300, 300)], [], NOW) == []
    assert len(evaluate([node_row("edge", NOW - 301, 300)], [], NOW)) == 1
