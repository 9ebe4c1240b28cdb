"""Sharing agreements in the monitoring store (monitoring.agreements): what is saved comes back,
a revision ends the agreement it revises, every refusal has its code and stores nothing, an
installation's hours follow the local days (23 and 25 hours when the clocks change), and the
allocation follows the agreement in force hour by hour, the master data's shares elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from community import DYNAMIC, ENERGY, MONEY, STATIC, VARIABLE, Rules
from monitoring.agreements import (
    AgreementError,
    agreement_by_id,
    agreements_of,
    coefficients_of,
    installation_allocation,
    installation_hours,
    period_hours,
    rules_from_json,
    rules_to_json,
    save_agreement,
)
from monitoring.feeds import FeedDeclaration, declare_feeds
from monitoring.samples import Sample
from monitoring.store import (
    HOUR_S,
    MonitoringStore,
    aggregate,
    feed,
    installation,
    member,
    supply_point,
)

MADRID = "Europe/Madrid"
A, B, C = "ES0021000000000001AA", "ES0021000000000002BB", "ES0021000000000003CC"
D = "ES0021000000000004DD"  # a consumption point of the community, of no installation
G = "ES0021000000000009GN"  # the roof's generation point
OTHER = "IT001E00000002"  # a consumption point of another community
NOW = 1_780_000_000
SPRING, AUTUMN = date(2025, 3, 30), date(2025, 10, 26)  # 23 and 25 hours in Madrid


def midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(MADRID)).timestamp())


def build_community(store: MonitoringStore) -> None:
    """Valle (Madrid): the roof's generation point G and its consumers A (share 0.5), B (0.3)
    and C (no share), D of no installation; Beta (Rome) with its consumer OTHER. Feeds: the
    inverter on G, A's meter, B's two meters (added up), C's meter with no declared role."""
    store.put_community("valle", "Valle Solar", MADRID)
    store.put_community("beta", "Beta", "Europe/Rome")
    with store.engine.begin() as conn:
        for number, (community_id, ref) in enumerate(
            (("valle", "M1"), ("valle", "M2"), ("valle", "M3"), ("valle", "M4"), ("beta", "B1")),
            start=1,
        ):
            conn.execute(
                member.insert().values(id=number, community_id=community_id, ref=ref, name=ref)
            )
        conn.execute(
            installation.insert().values(
                id="roof", community_id="valle", name="School roof", peak_kw=30.0
            )
        )
        conn.execute(
            installation.insert().values(id="pool", community_id="beta", name="Pool", peak_kw=9.0)
        )
        for point, community_id, member_id, kind, inst, share in (
            (A, "valle", 1, "consumption", "roof", 0.5),
            (B, "valle", 2, "consumption", "roof", 0.3),
            (C, "valle", 3, "consumption", "roof", None),
            (D, "valle", 4, "consumption", None, None),
            (G, "valle", None, "generation", "roof", None),
            (OTHER, "beta", 5, "consumption", "pool", 1.0),
        ):
            conn.execute(
                supply_point.insert().values(
                    id=point,
                    community_id=community_id,
                    member_id=member_id,
                    kind=kind,
                    installation_id=inst,
                    share=share,
                )
            )
    declare_feeds(
        store,
        [
            FeedDeclaration("inverter", "pv", "energy", "kWh", G, "generation"),
            FeedDeclaration("meter-a", "import", "energy", "kWh", A, "consumption"),
            FeedDeclaration("meter-b", "day", "energy", "kWh", B, "consumption"),
            FeedDeclaration("meter-b", "night", "energy", "kWh", B, "consumption"),
            FeedDeclaration("meter-b", "export", "energy", "kWh", B, "export"),
            FeedDeclaration("meter-c", "import", "energy", "kWh", C, None),
            FeedDeclaration("meter-d", "import", "energy", "kWh", D, "consumption"),
        ],
    )


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[MonitoringStore]:
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    build_community(store)
    yield store
    store.close()


@pytest.fixture(name="agreed", scope="module")
def agreed_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoringStore]:
    """One store for every refusal (each must leave it as it was): agreement 1, A and B,
    static, from 1 January to 1 July 2025; agreement 2, dynamic, from 1 July to 1 August."""
    store = MonitoringStore(f"sqlite:///{tmp_path_factory.mktemp('agreed') / 'monitor.sqlite'}")
    build_community(store)
    save(store, end_day=date(2025, 7, 1))
    save(store, kind=DYNAMIC, first_day=date(2025, 7, 1), end_day=date(2025, 8, 1), millionths=None)
    yield store
    store.close()


def save(store: MonitoringStore, **terms: Any) -> int:
    """save_agreement with the roof, A and B, and a static 60/40 split unless told."""
    given_terms: dict[str, Any] = {
        "installation_id": "roof",
        "kind": STATIC,
        "first_day": date(2025, 1, 1),
        "end_day": None,
        "supply_points": (A, B),
        "millionths": np.array([[600_000, 400_000]]),
        "now": NOW,
        **terms,
    }
    return save_agreement(store, **given_terms)


def hourly_split(hours: int, points: int, seed: int = 1) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Random rows of whole millionths, each summing to exactly 1,000,000."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, 1_000_001, size=(hours, points - 1)), axis=1)
    edges = np.concatenate(
        [np.zeros((hours, 1), np.int64), cuts, np.full((hours, 1), 1_000_000)], axis=1
    )
    return np.diff(edges, axis=1)


# ---------------------------------------------------------------- what is saved comes back


def test_a_static_agreement_and_its_rules_come_back(store: MonitoringStore) -> None:
    rules = Rules(floor=0.1, maximum={"M1": 0.7}, poverty=frozenset({"M2"}), poverty_reserve=0.2)
    agreement_id = save(store, objective=ENERGY, rules=rules, note="first agreement")
    found = agreement_by_id(store, agreement_id)
    assert (found.community_id, found.installation_id, found.kind) == ("valle", "roof", STATIC)
    assert (found.first_day, found.end_day) == (date(2025, 1, 1), None)
    assert (found.objective, found.note, found.created, found.replaces) == (
        ENERGY,
        "first agreement",
        NOW,
        None,
    )
    assert found.rules == rules
    assert found.supply_points == (A, B)
    assert coefficients_of(store, agreement_id).tolist() == [[600_000, 400_000]]
    assert agreements_of(store, "valle") == [found] == agreements_of(store, "valle", "roof")
    assert agreements_of(store, "beta") == []


def test_a_variable_agreement_has_a_row_per_real_hour_and_keeps_its_columns_order(
    store: MonitoringStore,
) -> None:
    # 2025-03-30 in Madrid: the clocks go from 02:00 to 03:00, so the day has 23 hours.
    rows = hourly_split(23, 3)
    agreement_id = save(
        store,
        kind=VARIABLE,
        first_day=SPRING,
        end_day=SPRING + timedelta(days=1),
        supply_points=(C, A, D),
        millionths=rows,
        objective=MONEY,
    )
    found = agreement_by_id(store, agreement_id)
    assert found.supply_points == (C, A, D)
    assert found.rules == Rules()
    stored = coefficients_of(store, agreement_id)
    assert stored.dtype == np.int64 and np.array_equal(stored, rows)


def test_a_dynamic_agreement_stores_no_coefficients_and_may_stay_open(
    store: MonitoringStore,
) -> None:
    agreement_id = save(store, kind=DYNAMIC, millionths=None, supply_points=(A, B, C))
    found = agreement_by_id(store, agreement_id)
    assert (found.kind, found.end_day) == (DYNAMIC, None)
    assert coefficients_of(store, agreement_id).shape == (0, 3)


def test_a_year_of_a_thousand_points_is_saved_and_read_back(store: MonitoringStore) -> None:
    points = [f"ES0021{n:012d}KK" for n in range(1_000)]
    with store.engine.begin() as conn:
        conn.execute(
            supply_point.insert(),
            [
                {"id": p, "community_id": "valle", "kind": "consumption", "installation_id": "roof"}
                for p in points
            ],
        )
    year = period_hours(date(2025, 1, 1), date(2026, 1, 1), MADRID)
    assert year == 8_760
    rows = np.zeros((year, 1_000), dtype=np.int64)
    rows[:, :] = 1_000
    rows[np.arange(year), np.arange(year) % 1_000] += 1_000  # a different point ahead each hour
    rows[:, 0] -= 1_000
    agreement_id = save(
        store,
        kind=VARIABLE,
        end_day=date(2026, 1, 1),
        supply_points=points,
        millionths=rows,
    )
    assert np.array_equal(coefficients_of(store, agreement_id), rows)
    assert agreement_by_id(store, agreement_id).supply_points == tuple(points)


def test_a_leap_year_has_8784_rows() -> None:
    assert period_hours(date(2024, 1, 1), date(2025, 1, 1), MADRID) == 8_784
    assert period_hours(date(2025, 1, 1), date(2025, 5, 1), MADRID) == 120 * 24 - 1


# ---------------------------------------------------------------- revisions


def test_a_revision_ends_the_agreement_in_force_on_its_first_day(store: MonitoringStore) -> None:
    first = save(store)  # static, open, from 1 January
    days = (date(2025, 5, 1), date(2025, 9, 1))
    second = save(
        store,
        kind=VARIABLE,
        first_day=days[0],
        end_day=days[1],
        millionths=hourly_split(period_hours(*days, MADRID), 2),
    )
    third = save(store, kind=DYNAMIC, first_day=date(2025, 7, 1), millionths=None)
    newest_first = agreements_of(store, "valle", "roof")
    assert [a.id for a in newest_first] == [third, second, first]
    assert [(a.first_day, a.end_day, a.replaces) for a in newest_first] == [
        (date(2025, 7, 1), None, second),
        (date(2025, 5, 1), date(2025, 7, 1), first),
        (date(2025, 1, 1), date(2025, 5, 1), None),
    ]
    # Ended early, the variable agreement keeps every row it planned for May to August.
    assert coefficients_of(store, second).shape == (period_hours(*days, MADRID), 2)


def test_an_agreement_replaced_from_its_first_day_is_kept_with_no_day_in_force(
    store: MonitoringStore,
) -> None:
    planned = save(store, first_day=date(2026, 1, 1))
    chosen = save(store, first_day=date(2026, 1, 1), millionths=np.array([[500_000, 500_000]]))
    assert agreement_by_id(store, planned).end_day == date(2026, 1, 1)
    assert agreement_by_id(store, chosen).replaces == planned


def test_a_revision_may_name_the_agreement_it_replaces(store: MonitoringStore) -> None:
    earlier = save(store, end_day=date(2025, 2, 1))
    later = save(store, first_day=date(2025, 2, 1), replaces=earlier)
    assert agreement_by_id(store, later).replaces == earlier
    assert agreement_by_id(store, earlier).end_day == date(2025, 2, 1)


# ---------------------------------------------------------------- refusals


def refusals() -> list[tuple[str, Callable[[MonitoringStore], object]]]:
    """(code, what provokes it), each against the `agreed` store."""
    march = (date(2025, 3, 1), date(2025, 3, 2))
    return [
        ("not_found", lambda s: agreement_by_id(s, 99)),
        ("not_found", lambda s: coefficients_of(s, 99)),
        ("not_found", lambda s: save(s, first_day=date(2025, 8, 1), replaces=99)),
        ("unknown_installation", lambda s: save(s, installation_id="nowhere")),
        ("unknown_installation", lambda s: installation_hours(s, "nowhere", 0, HOUR_S)),
        ("not_a_member", lambda s: save(s, first_day=date(2025, 8, 1), supply_points=(A, OTHER))),
        ("not_a_member", lambda s: save(s, first_day=date(2025, 8, 1), supply_points=(A, G))),
        ("not_a_member", lambda s: save(s, first_day=date(2025, 8, 1), supply_points=(A, "X1"))),
        ("not_a_member", lambda s: installation_hours(s, "roof", 0, HOUR_S, supply_points=[G])),
        ("bad_period", lambda s: save(s, first_day=date(2025, 8, 1), end_day=date(2025, 8, 1))),
        ("bad_period", lambda s: save(s, first_day=date(2025, 8, 2), end_day=date(2025, 8, 1))),
        (
            "bad_period",
            lambda s: save(s, kind=VARIABLE, first_day=date(2025, 8, 1), end_day=None),
        ),
        ("bad_period", lambda s: installation_hours(s, "roof", 1_800, 2 * HOUR_S)),
        ("bad_period", lambda s: installation_hours(s, "roof", 2 * HOUR_S, HOUR_S)),
        ("bad_coefficients", lambda s: save(s, kind="weekly", first_day=date(2025, 8, 1))),
        ("bad_coefficients", lambda s: save(s, objective="fame", first_day=date(2025, 8, 1))),
        ("bad_coefficients", lambda s: save(s, supply_points=(), millionths=np.zeros((1, 0)))),
        (
            "bad_coefficients",
            lambda s: save(s, first_day=date(2025, 8, 1), supply_points=(A, A)),
        ),
        (
            "bad_coefficients",
            lambda s: save(s, first_day=date(2025, 8, 1), millionths=np.array([[600_000]])),
        ),
        (
            "bad_coefficients",
            lambda s: save(s, first_day=date(2025, 8, 1), millionths=np.array([[1e6, 0.0]])),
        ),
        (  # off by one millionth
            "bad_coefficients",
            lambda s: save(
                s, first_day=date(2025, 8, 1), millionths=np.array([[600_000, 399_999]])
            ),
        ),
        (
            "bad_coefficients",
            lambda s: save(s, first_day=date(2025, 8, 1), millionths=np.array([[1_000_001, -1]])),
        ),
        (
            "bad_coefficients",
            lambda s: save(
                s, first_day=date(2025, 8, 1), millionths=np.array([[1, 999_999], [1, 999_999]])
            ),
        ),
        (
            "bad_coefficients",
            lambda s: save(s, kind=DYNAMIC, first_day=date(2025, 8, 1)),
        ),
        (
            "bad_coefficients",
            lambda s: save(s, first_day=date(2025, 8, 1), millionths=None),
        ),
        (  # a day of March has 24 hours, not 23
            "bad_coefficients",
            lambda s: save(
                s,
                kind=VARIABLE,
                first_day=march[0],
                end_day=march[1],
                millionths=hourly_split(23, 2),
            ),
        ),
        (  # a variable row off by one
            "bad_coefficients",
            lambda s: save(
                s,
                kind=VARIABLE,
                first_day=march[0],
                end_day=march[1],
                millionths=hourly_split(24, 2) + np.array([[0, 0]] * 23 + [[0, 1]]),
            ),
        ),
        # Starts before agreement 1 and ends inside it.
        ("overlap", lambda s: save(s, first_day=date(2024, 12, 1), end_day=date(2025, 1, 2))),
        # Starts inside agreement 1 (a revision) but runs into agreement 2.
        ("overlap", lambda s: save(s, first_day=date(2025, 6, 1), end_day=date(2025, 7, 2))),
        # Open, before agreement 1.
        ("overlap", lambda s: save(s, first_day=date(2024, 6, 1))),
        ("bad_rules", lambda s: rules_from_json("{")),
        ("bad_rules", lambda s: rules_from_json("[]")),
        ("bad_rules", lambda s: rules_from_json('{"ceiling": 0.5}')),
        ("bad_rules", lambda s: rules_from_json('{"floor": "a tenth"}')),
        ("bad_rules", lambda s: rules_from_json('{"floor": true}')),
        ("bad_rules", lambda s: rules_from_json('{"minimum": [0.1]}')),
        ("bad_rules", lambda s: rules_from_json('{"poverty": "M1"}')),
    ]


@pytest.mark.parametrize(("code", "provoke"), refusals())
def test_every_refusal_has_its_code_and_stores_nothing(
    agreed: MonitoringStore, code: str, provoke: Callable[[MonitoringStore], object]
) -> None:
    with pytest.raises(AgreementError) as refused:
        provoke(agreed)
    assert refused.value.code == code
    assert refused.value.message and "\n" not in refused.value.message  # one sentence
    # Agreement 1 still ends on 1 July, whatever a refused revision would have done.
    assert [(a.id, a.first_day, a.end_day) for a in agreements_of(agreed, "valle")] == [
        (2, date(2025, 7, 1), date(2025, 8, 1)),
        (1, date(2025, 1, 1), date(2025, 7, 1)),
    ]


# ---------------------------------------------------------------- rules as text


rule_shares = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
members = st.sampled_from(["M1", "M2", "M3", "école"])


@given(
    st.builds(
        Rules,
        floor=rule_shares,
        minimum=st.dictionaries(members, rule_shares, max_size=3),
        maximum=st.dictionaries(members, rule_shares, max_size=3),
        fixed=st.dictionaries(members, rule_shares, max_size=3),
        poverty=st.frozensets(members, max_size=3),
        poverty_reserve=rule_shares,
    )
)
def test_rules_survive_their_json_and_equal_rules_read_the_same(rules: Rules) -> None:
    text = rules_to_json(rules)
    assert rules_from_json(text) == rules
    assert rules_to_json(rules_from_json(text)) == text


def test_rules_json_is_sorted_and_a_missing_rule_keeps_its_default() -> None:
    text = rules_to_json(Rules(fixed={"M2": 0.25, "M1": 0.5}, poverty=frozenset({"M9", "M3"})))
    assert text.index('"fixed"') < text.index('"floor"') < text.index('"poverty"')
    assert text.index('"M1"') < text.index('"M2"') and text.index('"M3"') < text.index('"M9"')
    assert rules_from_json('{"floor": 0.05}') == Rules(floor=0.05)


# ---------------------------------------------------------------- hours and allocation


def write_day(store: MonitoringStore, day: date, values: dict[tuple[str, str], float]) -> None:
    """One sample of `values[(node, name)]` kWh in every hour of the local `day`."""
    start, end = midnight(day), midnight(day + timedelta(days=1))
    store.write(
        [
            Sample(node, name, t, kwh)
            for t in range(start, end, HOUR_S)
            for (node, name), kwh in values.items()
        ],
        now=NOW,
    )


@pytest.mark.parametrize(("day", "hours"), [(SPRING, 23), (AUTUMN, 25), (date(2025, 6, 1), 24)])
def test_an_installations_hours_follow_the_local_day(
    store: MonitoringStore, day: date, hours: int
) -> None:
    write_day(
        store,
        day,
        {
            ("inverter", "pv"): 6.0,
            ("meter-a", "import"): 1.0,
            ("meter-b", "day"): 0.5,
            ("meter-b", "night"): 0.25,
            ("meter-b", "export"): 9.0,  # B's export: neither generation nor consumption
            ("meter-c", "import"): 2.0,  # no declared role: its point's kind, consumption
            ("meter-d", "import"): 7.0,  # of no installation: not the roof's
        },
    )
    silent = midnight(day) + 3 * HOUR_S  # the inverter's and A's meter's sample lost
    with store.engine.begin() as conn:
        for node in ("inverter", "meter-a"):
            feed_id = conn.scalar(
                feed.select().with_only_columns(feed.c.id).where(feed.c.node == node)
            )
            conn.execute(
                aggregate.delete().where(
                    aggregate.c.feed_id == feed_id, aggregate.c.start == silent
                )
            )
    found = installation_hours(store, "roof", midnight(day), midnight(day + timedelta(days=1)))
    assert found.supply_points == (A, B, C)
    assert len(found.hour_starts) == hours
    assert np.array_equal(np.diff(found.hour_starts), np.full(hours - 1, HOUR_S))
    assert found.generation.sum() == pytest.approx(6.0 * (hours - 1))
    assert found.generation[3] == 0.0 and found.missing_generation_hours == 1
    assert found.consumption.sum(axis=0) == pytest.approx([hours - 1, 0.75 * hours, 2.0 * hours])
    assert found.missing_consumption_hours.tolist() == [1, 0, 0]


def test_hours_without_any_feed_are_all_missing(store: MonitoringStore) -> None:
    found = installation_hours(store, "pool", 0, 5 * HOUR_S)
    assert found.supply_points == (OTHER,)
    assert found.generation.tolist() == [0.0] * 5 and found.missing_generation_hours == 5
    assert found.consumption.shape == (5, 1) and found.missing_consumption_hours.tolist() == [5]


def test_the_allocation_follows_each_agreement_in_force_and_the_master_data_elsewhere(
    store: MonitoringStore,
) -> None:
    # Three days: 29 March (no agreement: master data shares A 0.5, B 0.3, C none), 30 March
    # (23 hours; static A 0.6 / B 0.4 from 30 March), 31 March (a variable revision from 31
    # March, among A, C and D; B is left out and gets nothing).
    days = [SPRING - timedelta(days=1), SPRING, SPRING + timedelta(days=1)]
    for day in days:
        write_day(
            store,
            day,
            {
                ("inverter", "pv"): 10.0,
                ("meter-a", "import"): 4.0,
                ("meter-b", "day"): 2.0,
                ("meter-c", "import"): 1.0,
                ("meter-d", "import"): 8.0,
            },
        )
    static = save(store, first_day=SPRING)
    revision_days = (days[2], days[2] + timedelta(days=1))
    rows = np.tile([[200_000, 300_000, 500_000]], (24, 1))
    rows[5] = [0, 0, 1_000_000]  # 05:00 on 31 March: all to D
    variable = save(
        store,
        kind=VARIABLE,
        first_day=revision_days[0],
        end_day=revision_days[1],
        supply_points=(A, C, D),
        millionths=rows,
    )
    start, end = midnight(days[0]), midnight(days[2] + timedelta(days=1))
    found = installation_allocation(store, "roof", start, end)
    assert found.hours.supply_points == (A, B, C, D)  # the roof's points, then D
    assert len(found.hours.hour_starts) == 24 + 23 + 24
    assert found.agreement_ids.tolist() == [0] * 24 + [static] * 23 + [variable] * 24
    got = found.allocation
    # 29 March, each hour: G = 10; A 0.5 x 10 = 5 > 4 -> 4; B 0.3 x 10 = 3 > 2 -> 2; C and D
    # none. Self-consumed 6, surplus 4 (2 of it the 0.2 nobody was given).
    assert found.coefficients[0].tolist() == [0.5, 0.3, 0.0, 0.0]
    assert got.assigned[0].tolist() == pytest.approx([5.0, 3.0, 0.0, 0.0])
    assert got.allocated[0].tolist() == pytest.approx([4.0, 2.0, 0.0, 0.0])
    assert got.surplus[0] == pytest.approx(4.0)
    # 30 March, each hour: A 0.6 x 10 = 6 -> 4; B 0.4 x 10 = 4 -> 2. Self-consumed 6.
    assert found.coefficients[24].tolist() == [0.6, 0.4, 0.0, 0.0]
    assert got.allocated[24].tolist() == pytest.approx([4.0, 2.0, 0.0, 0.0])
    # 31 March, 00:00: A 0.2 x 10 = 2, C 0.3 x 10 = 3 -> 1, D 0.5 x 10 = 5. Self-consumed 8.
    assert found.coefficients[47].tolist() == [0.2, 0.0, 0.3, 0.5]
    assert got.allocated[47].tolist() == pytest.approx([2.0, 0.0, 1.0, 5.0])
    # 31 March, 05:00: all to D, 10 > 8 -> 8. Self-consumed 8, surplus 2.
    assert found.coefficients[47 + 5].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert got.allocated[47 + 5].tolist() == pytest.approx([0.0, 0.0, 0.0, 8.0])
    assert got.self_consumed.sum() == pytest.approx(24 * 6 + 23 * 6 + 23 * 8 + 8)


def test_a_dynamic_agreement_follows_each_hours_consumption(store: MonitoringStore) -> None:
    day = date(2025, 6, 1)
    write_day(store, day, {("inverter", "pv"): 6.0, ("meter-a", "import"): 3.0})
    write_day(store, day, {("meter-b", "day"): 1.0})
    save(store, kind=DYNAMIC, first_day=day, millionths=None, supply_points=(A, B, C))
    found = installation_allocation(store, "roof", midnight(day), midnight(day) + 2 * HOUR_S)
    # A uses 3, B 1, C nothing: coefficients 3/4, 1/4, 0; A gets 4.5 -> 3, B 1.5 -> 1.
    assert found.coefficients.tolist() == [[0.75, 0.25, 0.0]] * 2
    assert found.allocation.allocated.tolist() == [[3.0, 1.0, 0.0]] * 2


class PostgresSchemas(Protocol):
    def fresh_schema(self) -> str: ...


@pytest.mark.postgres
def test_agreements_round_trip_on_postgresql(postgres_server: PostgresSchemas) -> None:
    store = MonitoringStore(postgres_server.fresh_schema())
    try:
        build_community(store)
        first = save(store, rules=Rules(minimum={"M1": 0.2}))
        days = (date(2025, 3, 1), date(2025, 7, 1))  # 2,927 hours: spring's day has 23
        rows = hourly_split(period_hours(*days, MADRID), 3)
        revision = save(
            store,
            kind=VARIABLE,
            first_day=days[0],
            end_day=days[1],
            supply_points=(B, D, A),
            millionths=rows,
        )
        dynamic = save(store, kind=DYNAMIC, first_day=days[1], millionths=None)
        assert [a.id for a in agreements_of(store, "valle")] == [dynamic, revision, first]
        assert agreement_by_id(store, first).end_day == days[0]
        assert agreement_by_id(store, first).rules == Rules(minimum={"M1": 0.2})
        assert agreement_by_id(store, revision).supply_points == (B, D, A)
        assert np.array_equal(coefficients_of(store, revision), rows)
        assert coefficients_of(store, dynamic).shape == (0, 2)
        with pytest.raises(AgreementError) as refused:
            save(store, first_day=date(2024, 12, 1), end_day=date(2025, 1, 2))
        assert refused.value.code == "overlap"
    finally:
        store.close()
