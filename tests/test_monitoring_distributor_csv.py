"""The distributors' CSV exports: header variants, both date formats, decimal commas, BOM and
Latin-1, every malformed line reported with its line, column and reason, both
daylight-saving days in both numberings, duplicates, and nothing half-imported."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.distributor_csv import (
    SOURCE,
    decode,
    header_key,
    import_distributor_csv,
    parse_distributor_csv,
)
from monitoring.samples import ENERGY
from monitoring.store import MonitoringStore, supply_point

HOME = "ES0021000000000001RK"  # control letters checked: 0021000000000001 mod 529 -> R, K
SHOP = "ES0031000000000002BZ"
MADRID = "Europe/Madrid"
HEADER = "CUPS;Fecha;Hora;Consumo_kWh;Metodo_obtencion"
REASONS = {
    "bad_header",
    "missing_column",
    "bad_cups_shape",
    "bad_cups_control",
    "bad_date",
    "bad_hour",
    "bad_number",
    "bad_value",
    "bad_method",
    "no_such_hour",
    "duplicate",
}


def utc(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


def export(*lines: str, header: str = HEADER) -> str:
    return "\r\n".join((header, *lines)) + "\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitoringStore]:
    opened = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")
    opened.put_community("solar", "Comunidad Solar", MADRID)
    with opened.engine.begin() as conn:
        conn.execute(
            supply_point.insert().values(id=HOME, community_id="solar", kind="consumption")
        )
    yield opened
    opened.close()


def test_a_good_file_with_decimal_commas() -> None:
    parsed = parse_distributor_csv(
        export(
            f"{HOME};01/07/2024;1;0,250;R",
            f"{HOME};01/07/2024;2;1,5;E",
            f"{SHOP};01/07/2024;24;0;Real",
        ),
        MADRID,
    )
    assert parsed.errors == ()
    # Summer in Madrid is UTC+2: hour 1 of 1 July starts at 22:00 UTC on 30 June.
    assert [(r.cups, r.start, r.consumption_kwh, r.estimated) for r in parsed.readings] == [
        (HOME, utc(2024, 6, 30, 22), 0.25, False),
        (HOME, utc(2024, 6, 30, 23), 1.5, True),
        (SHOP, utc(2024, 7, 1, 21), 0.0, False),
    ]


def test_both_date_formats_and_header_variants_read_alike() -> None:
    day_first = parse_distributor_csv(export(f"{HOME};15/01/2024;5;0,4;R"), MADRID)
    year_first = parse_distributor_csv(
        export(
            f"{HOME};2024/01/15;05:00;0.4;REAL", header="cups;FECHA;Hora;Consumo kWh;REAL/ESTIMADO"
        ),
        MADRID,
    )
    assert day_first.readings == year_first.readings
    assert [r.start for r in day_first.readings] == [utc(2024, 1, 15, 3)]  # winter: UTC+1


def test_consumption_and_surplus_columns() -> None:
    parsed = parse_distributor_csv(
        export(
            f"{HOME};2024-01-15;1;0,4;0,1;E",
            f"{HOME};2024-01-15;2;0,3;;E",
            header="CUPS;Fecha;Hora;AE_kWh;AS_kWh;Método_obtención",
        ),
        MADRID,
    )
    assert parsed.errors == ()
    assert [(r.consumption_kwh, r.surplus_kwh, r.estimated) for r in parsed.readings] == [
        (0.4, 0.1, True),
        (0.3, None, True),
    ]


def test_header_names_ignore_case_accents_and_punctuation() -> None:
    assert (
        header_key("\ufeffMétodo_Obtención") == header_key("metodo obtencion") == "metodoobtencion"
    )
    assert header_key("CONSUMO (kWh)") == "consumokwh"


def test_encodings_are_detected(tmp_path: Path, store: MonitoringStore) -> None:
    text = export(
        f"{HOME};01/07/2024;1;0,250;R", header="CUPS;Fecha;Hora;Consumo_kWh;Método_obtención"
    )
    for name, raw in (
        ("bom.csv", b"\xef\xbb\xbf" + text.encode("utf-8")),
        ("plain.csv", text.encode("utf-8")),
        ("windows.csv", text.encode("latin-1")),
    ):
        assert decode(raw) == text
        (tmp_path / name).write_bytes(raw)
        report = import_distributor_csv(store, tmp_path / name, MADRID)
        assert report.errors == () and report.imported
    feed = store.feed_named(HOME, "consumption_kwh")
    assert feed is not None and store.samples(feed.id, 0, 2**40) == [
        (utc(2024, 6, 30, 22), 0.25, False)
    ]
    assert (feed.kind, feed.unit, feed.supply_point_id, feed.role) == (
        ENERGY,
        "kWh",
        HOME,
        "consumption",
    )


@pytest.mark.parametrize(
    ("line", "column", "reason"),
    [
        (f"{HOME};01/07/2024;1;1,2,3;R", "Consumo_kWh", "bad_number"),
        (f"{HOME};01/07/2024;1;abc;R", "Consumo_kWh", "bad_number"),
        (f"{HOME};01/07/2024;1;-0,5;R", "Consumo_kWh", "bad_value"),
        (f"{HOME};01/07/2024;1;1e999;R", "Consumo_kWh", "bad_number"),
        (f"{HOME};31/02/2024;1;0,5;R", "Fecha", "bad_date"),
        (f"{HOME};2024/13/01;1;0,5;R", "Fecha", "bad_date"),
        (f"{HOME};01/07/1999;1;0,5;R", "Fecha", "bad_date"),
        (f"{HOME};01/07/2024;0;0,5;R", "Hora", "bad_hour"),
        (f"{HOME};01/07/2024;26;0,5;R", "Hora", "no_such_hour"),
        (f"{HOME};01/07/2024;25;0,5;R", "Hora", "no_such_hour"),
        (f"{HOME};01/07/2024;7h;0,5;R", "Hora", "bad_hour"),
        (f"{HOME};01/07/2024;01:70;0,5;R", "Hora", "bad_hour"),
        (f"{HOME};01/07/2024;1", "Consumo_kWh", "missing_column"),
        (f"{HOME};01/07/2024;1;0,5;Q", "Metodo_obtencion", "bad_method"),
        ("ES0021000000000001RA;01/07/2024;1;0,5;R", "CUPS", "bad_cups_control"),
        ("ES00210000001RK;01/07/2024;1;0,5;R", "CUPS", "bad_cups_shape"),
    ],
)
def test_a_malformed_line_is_reported_and_the_others_read(
    line: str, column: str, reason: str
) -> None:
    parsed = parse_distributor_csv(export(f"{HOME};01/07/2024;3;0,5;R", line), MADRID)
    assert [(e.line, e.column, e.reason) for e in parsed.errors] == [(3, column, reason)]
    assert parsed.errors[0].message
    assert [r.start for r in parsed.readings] == [utc(2024, 7, 1, 0)]


def test_a_header_without_the_needed_columns_is_one_error() -> None:
    parsed = parse_distributor_csv(export(f"{HOME};01/07/2024;1", header="CUPS;Fecha;Hora"), MADRID)
    assert [(e.line, e.reason) for e in parsed.errors] == [(1, "bad_header")]
    assert "consumption" in parsed.errors[0].message and parsed.readings == ()


def test_duplicates_with_other_values_are_errors_identical_ones_are_dropped() -> None:
    parsed = parse_distributor_csv(
        export(
            f"{HOME};01/07/2024;1;0,5;R",
            f"{HOME};2024/07/01;1;0,50;R",
            f"{HOME};01/07/2024;2;0,5;R",
            f"{HOME};01/07/2024;2;0,6;R",
        ),
        MADRID,
    )
    assert [(e.line, e.reason) for e in parsed.errors] == [(5, "duplicate")]
    assert "lines 4 and 5" in parsed.errors[0].message
    assert len(parsed.readings) == 2


SPRING_STARTS = [utc(2024, 3, 30, 23) + 3600 * h for h in range(23)]
AUTUMN_STARTS = [utc(2024, 10, 26, 22) + 3600 * h for h in range(25)]


@pytest.mark.parametrize(
    ("day", "hours", "starts"),
    [
        ("31/03/2024", list(range(1, 24)), SPRING_STARTS),  # numbered in sequence
        ("31/03/2024", [1, 2, *range(4, 25)], SPRING_STARTS),  # by the wall clock: no hour 3
        ("27/10/2024", list(range(1, 26)), AUTUMN_STARTS),  # in sequence, up to 25
        ("27/10/2024", [1, 2, 3, 3, *range(4, 25)], AUTUMN_STARTS),  # hour 3 twice, in order
    ],
)
def test_daylight_saving_days_in_both_numberings(
    day: str, hours: list[int], starts: list[int]
) -> None:
    lines = [f"{HOME};{day};{h};{i / 100:.2f}".replace(".", ",") for i, h in enumerate(hours)]
    parsed = parse_distributor_csv(export(*lines, header="CUPS;Fecha;Hora;Consumo_kWh"), MADRID)
    assert parsed.errors == ()
    assert [(r.start, r.consumption_kwh) for r in parsed.readings] == [
        (t, i / 100) for i, t in enumerate(starts)
    ]


def test_an_hour_that_cannot_exist_on_the_spring_day_is_refused() -> None:
    lines = [f"{HOME};31/03/2024;{h};0,1" for h in range(1, 25)]  # 24 hours, hour 3 among them
    parsed = parse_distributor_csv(export(*lines, header="CUPS;Fecha;Hora;Consumo_kWh"), MADRID)
    assert [(e.line, e.reason) for e in parsed.errors] == [(4, "no_such_hour")]
    assert "03:00 does not exist on 2024-03-31" in parsed.errors[0].message
    assert [r.start for r in parsed.readings] == SPRING_STARTS


def test_a_third_repeat_of_the_autumn_hour_is_a_duplicate() -> None:
    lines = [f"{HOME};27/10/2024;{h};0,{i}" for i, h in enumerate([1, 2, 3, 3, 3, 4])]
    parsed = parse_distributor_csv(export(*lines, header="CUPS;Fecha;Hora;Consumo_kWh"), MADRID)
    assert [(e.line, e.reason) for e in parsed.errors] == [(6, "duplicate")]


def test_quarter_hours_and_the_canaries() -> None:
    lines = [f"{HOME};2024/07/01;{q // 4:02d}:{q % 4 * 15:02d};0,1" for q in range(1, 9)]
    parsed = parse_distributor_csv(
        export(*lines, header="CUPS;Fecha;Hora;Consumo_kWh"), "Atlantic/Canary"
    )
    assert parsed.errors == ()
    # Canary summer time is UTC+1: the first quarter of 1 July starts at 23:00 UTC.
    assert [r.start for r in parsed.readings] == [utc(2024, 6, 30, 23) + 900 * q for q in range(8)]
    assert {r.length_s for r in parsed.readings} == {900}


def test_nothing_of_a_file_with_an_error_is_imported(
    tmp_path: Path, store: MonitoringStore
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        export(
            f"{HOME};01/07/2024;1;0,5;R",
            f"{HOME};01/07/2024;2;zero;R",
            f"{HOME};01/07/2024;3;0,7;E",
        )
    )
    report = import_distributor_csv(store, path, MADRID)
    assert not report.imported and (report.stored, report.replaced) == (0, 0)
    assert [(e.line, e.reason) for e in report.errors] == [(3, "bad_number")]
    assert store.feeds() == []
    assert [(r["source"], r["reason"], r["count"]) for r in store.refusals()] == [
        (SOURCE, "bad_number", 1)
    ]

    kept = import_distributor_csv(store, path, MADRID, good_rows_only=True)
    assert kept.imported and kept.stored == 2
    again = import_distributor_csv(store, path, MADRID, good_rows_only=True)
    assert (again.stored, again.replaced) == (0, 0)  # re-importing replaces, never duplicates
    path.write_text(export(f"{HOME};01/07/2024;1;0,9;R"))
    changed = import_distributor_csv(store, path, MADRID)
    assert (changed.stored, changed.replaced) == (0, 1)
    feed = store.feed_named(HOME, "consumption_kwh")
    assert feed is not None
    assert store.samples(feed.id, 0, 2**40) == [
        (utc(2024, 6, 30, 22), 0.9, False),
        (utc(2024, 7, 1, 0), 0.7, True),
    ]


def test_a_missing_file_is_a_counted_refusal(tmp_path: Path, store: MonitoringStore) -> None:
    report = import_distributor_csv(store, tmp_path / "absent.csv", MADRID)
    assert not report.imported and [e.reason for e in report.errors] == ["unreadable"]
    assert [r["reason"] for r in store.refusals()] == ["unreadable"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_gives_per_line_errors_only(text: str) -> None:
    parsed = parse_distributor_csv(text, MADRID)
    assert {e.reason for e in parsed.errors} <= REASONS


LINE_PARTS = st.sampled_from(
    [
        HOME,
        SHOP,
        "ES0021000000000001RA",
        "27/10/2024",
        "31/03/2024",
        "2024/10/27",
        "29/02/2023",
        "1",
        "3",
        "24",
        "25",
        "0",
        "26",
        "03:00",
        "02:15",
        "0,5",
        "1,25",
        "-1",
        "R",
        "E",
        "",
        "x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(LINE_PARTS, min_size=0, max_size=6).map(";".join), max_size=30))
def test_near_valid_lines_are_read_or_refused(lines: list[str]) -> None:
    parsed = parse_distributor_csv(export(*lines), MADRID)
    assert {e.reason for e in parsed.errors} <= REASONS
    starts = [(r.cups, r.start) for r in parsed.readings]
    assert len(starts) == len(set(starts))  # one reading per supply point and interval
    assert all(r.start % 900 == 0 for r in parsed.readings)
    errored = {e.line for e in parsed.errors}
    counted = len(errored) + len(parsed.readings)
    # Every non-blank line is read, refused, or an identical repeat of a line read.
    assert counted <= sum(1 for line in lines if line.strip())
