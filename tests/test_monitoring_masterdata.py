"""Master data from CSV and Excel (monitoring.masterdata): the CUPS and POD checks, the cell
parsers, every refusal code of a row or a file, and an import that stores all or nothing."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import Workbook  # type: ignore[import-untyped]
from sqlalchemy import select

from monitoring import masterdata
from monitoring.masterdata import (
    CUPS_LETTERS,
    MasterData,
    MasterDataError,
    MasterDataRejected,
    SupplyPoint,
    check_cups,
    check_pod,
    check_supply_point_id,
    cups_control,
    format_report,
    import_master_data,
    parse_master_data,
    parse_master_files,
    parse_money,
    parse_number,
    parse_share,
)
from monitoring.samples import Refused, Sample
from monitoring.store import MonitoringStore, feed, installation, member, supply_point

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
# CUPS from python-stdnum's published doctests (tests/test_es_cups.doctest)
PUBLIC_CUPS = [
    "ES0987543210987654ZF",
    "ES1234123456789012JY",
    "ES9750210987654321CQ",
    "ES0999110012345678EK",
]


def cups(number: int) -> str:
    """A valid CUPS of distributor 0021 and supply `number`."""
    digits = f"0021{number:012d}"
    return f"ES{digits}{cups_control(digits)}"


A, B, C, G = (cups(n) for n in (1, 2, 3, 99))

MEMBERS_CSV = "ref;nombre;correo\nM1;Ana García;ana@example.org\nM2;Bea;\n"
INSTALLATIONS_CSV = 'id,name,peak_kw,cost,commissioned\nI1,Roof,30.5,"12.500,00",17/05/2023\n'
POINTS_CSV = (
    "cups;socio;tipo;potencia_contratada;coeficiente;instalacion;etiqueta\n"
    f"{A};M1;consumo;3,45;50 %;I1;Casa\n"
    f"{B};M2;consumo;4,6;0,5;I1;Tienda\n"
    f"{G};;generación;;;I1;Tejado\n"
)


def files(**named: str) -> list[tuple[str, bytes]]:
    return [(name.replace("_csv", ".csv"), text.encode()) for name, text in named.items()]


def good_files() -> list[tuple[str, bytes]]:
    return files(
        socios_csv=MEMBERS_CSV, installations_csv=INSTALLATIONS_CSV, suministros_csv=POINTS_CSV
    )


def codes(data: MasterData) -> set[tuple[str, int, str | None, str]]:
    return {(e.file_or_sheet, e.row_number, e.column, e.code) for e in data.errors}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitoringStore]:
    opened = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")
    opened.put_community("c1", "Comunidad Uno", "Europe/Madrid")
    opened.put_community("c2", "Comunidad Dos", "Europe/Madrid")
    yield opened
    opened.close()


def tables(store: MonitoringStore) -> dict[str, list[dict[str, Any]]]:
    with store.engine.connect() as conn:
        return {
            table.name: [dict(row._mapping) for row in conn.execute(select(table))]
            for table in (member, installation, supply_point, feed)
        }


# ------------------------------------------------------------------ CUPS and POD


@pytest.mark.parametrize("cups", PUBLIC_CUPS)
def test_published_cups_are_accepted(cups: str) -> None:
    assert check_cups(cups) == cups


@given(st.text("0123456789", min_size=16, max_size=16))
def test_the_computed_letters_are_the_only_accepted_pair(digits: str) -> None:
    right = cups_control(digits)
    assert check_cups(f"ES{digits}{right}") == f"ES{digits}{right}"
    for first in CUPS_LETTERS:
        for second in CUPS_LETTERS:
            if first + second != right:
                with pytest.raises(Refused) as refused:
                    check_cups(f"ES{digits}{first}{second}")
                assert refused.value.reason == "bad_cups_control"


def test_cups_is_normalised_and_takes_a_border_point_suffix() -> None:
    assert check_cups(" es 1234-1234 5678 9012 jy ") == "ES1234123456789012JY"
    assert check_cups("ES1234123456789012JY1F") == "ES1234123456789012JY1F"
    assert check_cups("es1234123456789012jy 0p") == "ES1234123456789012JY0P"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FR1234123456789012JY",
        "ES123412345678901JY",  # 15 digits
        "ES12341234567890123JY",  # 17 digits
        "ES1234123456789012J",
        "ES1234123456789012JY1T",  # T is no border-point kind
        "ES1234123456789012JYXF",
        "ES1234123456789012JY1",
        "ES12341234567890X2JY",
    ],
)
def test_cups_of_a_wrong_shape_are_refused(text: str) -> None:
    with pytest.raises(Refused) as refused:
        check_cups(text)
    assert refused.value.reason == "bad_cups_shape"


def test_pod_shapes() -> None:
    assert check_pod("it001e12345678") == "IT001E12345678"
    assert check_pod("IT 001 E 123456789") == "IT001E123456789"
    for bad in ("IT001E1234567", "IT001E1234567890", "IT01E12345678", "IT001X12345678"):
        with pytest.raises(Refused) as refused:
            check_pod(bad)
        assert refused.value.reason == "bad_pod_shape"
    assert check_supply_point_id("IT001E12345678") == "IT001E12345678"
    assert check_supply_point_id("ES1234123456789012JY") == "ES1234123456789012JY"


# ------------------------------------------------------------------ cell parsers


@given(st.integers(min_value=0, max_value=10**12))
def test_money_in_any_written_form_is_exact(cents: int) -> None:
    euros, rest = divmod(cents, 100)
    spanish = f"{euros:,}".replace(",", ".") + f",{rest:02d}"
    english = f"{euros:,}.{rest:02d} EUR"
    assert parse_money(spanish) == parse_money(english) == cents * 10_000
    assert parse_money(f"{euros} €") == euros * 1_000_000


def test_money_refuses_ambiguity_negatives_and_dust() -> None:
    assert parse_money("12500") == parse_money("12.500,00") == 12_500_000_000
    assert parse_money(12500.5) == 12_500_500_000
    for bad in ("12.500", "-3", "1,2345678", "12 USD", "doce", "1.2.3"):
        with pytest.raises(Refused) as refused:
            parse_money(bad)
        assert refused.value.reason == "bad_money"


@given(st.decimals(min_value=0, max_value=100, places=3))
def test_a_percentage_and_its_fraction_are_the_same_share(percent: Decimal) -> None:
    written = str(percent).replace(".", ",") + " %"
    assert parse_share(written) == percent / 100
    assert parse_share(str(percent / 100)) == percent / 100


def test_shares_out_of_range_are_refused() -> None:
    for bad in ("12,5", "101 %", "-0,1", "1/2"):
        with pytest.raises(Refused) as refused:
            parse_share(bad)
        assert refused.value.reason == "bad_share"


def test_numbers_take_either_decimal_mark() -> None:
    assert parse_number("3,45") == parse_number("3.45") == Decimal("3.45")
    assert parse_number("1.234,5") == parse_number("1,234.5") == Decimal("1234.5")
    for bad in ("3,4,5", "1.23,4", "3e2", "", "inf", True):
        with pytest.raises(Refused):
            parse_number(bad)


# ------------------------------------------------------------------ good imports


def test_a_good_csv_import_stores_every_record(store: MonitoringStore) -> None:
    data = parse_master_files(good_files())
    assert data.errors == ()
    report = import_master_data(store, "c1", data)
    assert (report.members.created, report.installations.created) == (2, 1)
    assert report.supply_points.created == 3
    stored = tables(store)
    assert {(m["ref"], m["name"], m["email"]) for m in stored["mon_member"]} == {
        ("M1", "Ana García", "ana@example.org"),
        ("M2", "Bea", None),
    }
    (roof,) = stored["mon_installation"]
    assert (roof["peak_kw"], roof["cost_micro"], roof["commissioned"]) == (
        30.5,
        12_500_000_000,
        "2023-05-17",
    )
    points = {p["id"]: p for p in stored["mon_supply_point"]}
    ana = next(m["id"] for m in stored["mon_member"] if m["ref"] == "M1")
    assert points[A]["member_id"] == ana and points[A]["share"] == 0.5
    assert points[A]["contracted_kw"] == 3.45 and points[A]["label"] == "Casa"
    assert points[G]["kind"] == "generation" and points[G]["member_id"] is None
    assert all(p["community_id"] == "c1" for p in points.values())


def test_the_published_examples_import_cleanly(store: MonitoringStore) -> None:
    csvs = parse_master_data(*sorted(EXAMPLES.glob("masterdata_*.csv")))
    book = parse_master_data(EXAMPLES / "masterdata.xlsx")
    assert csvs.errors == book.errors == ()
    assert [m.ref for m in csvs.members] == [m.ref for m in book.members]
    assert [point_values(p) for p in csvs.supply_points] == [
        point_values(p) for p in book.supply_points
    ]
    import_master_data(store, "c1", book)
    assert len(tables(store)["mon_supply_point"]) == 4


def point_values(point: SupplyPoint) -> tuple[object, ...]:
    return (point.id, point.kind, point.member_ref, point.contracted_kw, point.share,
            point.installation_id, point.label)  # fmt: skip


def workbook(**sheets: Sequence[Sequence[object]]) -> bytes:
    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_a_workbook_with_spanish_sheets_imports(store: MonitoringStore) -> None:
    from datetime import datetime

    content = workbook(
        socios=[["Referencia", "Nombre"], [17, "Ana"]],
        instalaciones=[["ID", "Nombre", "Potencia pico (kWp)", "Coste", "Fecha"],
                       ["I1", "Tejado", 20, 9000.5, datetime(2022, 3, 1)]],
        suministros=[["CUPS", "Socio", "Tipo", "Potencia contratada", "Coeficiente",
                      "Instalación"], [A.lower(), 17, "Consumo", 5.75, 0.125, "I1"]],
        notas=[["anything"], ["goes here"]],
    )  # fmt: skip
    data = parse_master_files([("comunidad.xlsx", content)])
    assert data.errors == ()
    (point,) = data.supply_points
    assert (point.id, point.member_ref, point.share) == (A, "17", Decimal("0.125"))
    assert data.installations[0].cost_micro == 9_000_500_000
    import_master_data(store, "c1", data)
    assert tables(store)["mon_installation"][0]["commissioned"] == "2022-03-01"


def test_csv_in_latin1_with_bom_or_tabs_reads_the_same() -> None:
    text = "ref;nombre\nM1;José Núñez\n"
    for content in (text.encode("latin-1"), b"\xef\xbb\xbf" + text.encode(),
                    text.replace(";", "\t").encode()):  # fmt: skip
        data = parse_master_files([("socios.csv", content)])
        assert data.errors == ()
        assert data.members[0].name == "José Núñez"


# ------------------------------------------------------------------ refused rows


def test_each_malformed_row_gives_exactly_its_errors() -> None:
    members = "ref,name,email\nM1,Ana,ana@example.org\nM2,,bea@\nM3,Carla,\n"
    points = (
        "cups;member;kind;contracted_kw;share;installation\n"
        f"{A};M1;consumption;tres;;I1\n"  # line 2: bad number
        f"{A[:-2]}XX;M1;consumption;3;;I1\n"  # line 3: bad control letters
        f"{B};M9;consumption;3;;I1\n"  # line 4: unknown member
        f"{B.lower()};M3;consumption;3;;I1\n"  # line 5: the same CUPS as line 4
        f"{C};M2;consumption;3;;I1\n"  # line 6: its member's row is refused
        f"{G};;generation;;0,6;I1\n"  # lines 7 and 8: shares add up to 1.2
        f"{A[:2]}0021000000000004{cups_control('0021000000000004')};M1;consumo;2;60 %;I1\n"
        f"IT001E1234;M1;consumption;0;;I1\n"  # line 9: bad POD, power not positive
        f"ES0021000000000005XX;M1;mixed;3;;\n"  # line 10: control, kind
    )
    installations = "id,name,peak_kw\nI1,Roof,10\n"
    data = parse_master_files(
        files(members_csv=members, supply_points_csv=points, installations_csv=installations)
    )
    assert codes(data) == {
        ("members.csv", 3, "name", "missing_value"),
        ("members.csv", 3, "email", "bad_email"),
        ("supply_points.csv", 2, "contracted_kw", "bad_number"),
        ("supply_points.csv", 3, "cups", "bad_cups_control"),
        ("supply_points.csv", 4, "cups", "duplicate_supply_point"),
        ("supply_points.csv", 5, "cups", "duplicate_supply_point"),
        ("supply_points.csv", 6, "member", "unknown_member"),
        ("supply_points.csv", 0, "share", "shares_above_one"),
        ("supply_points.csv", 9, "cups", "bad_pod_shape"),
        ("supply_points.csv", 9, "contracted_kw", "not_positive"),
        ("supply_points.csv", 10, "cups", "bad_cups_control"),
        ("supply_points.csv", 10, "kind", "bad_kind"),
    }
    assert [m.ref for m in data.members] == ["M1", "M3"]
    assert data.supply_points == ()
    assert data.rejected == {"members": 1, "installations": 0, "supply_points": 9}
    refused_member = next(e for e in data.errors if e.code == "unknown_member")
    assert "members.csv line 3" in refused_member.message
    over = next(e for e in data.errors if e.code == "shares_above_one")
    assert "1.2" in over.message and G in over.message and "line 8" in over.message


def test_an_unknown_member_in_another_file_of_the_import_is_named() -> None:
    data = parse_master_files(
        files(socios_csv=MEMBERS_CSV, suministros_csv=POINTS_CSV.replace(";M2;", ";M7;"))
    )
    assert codes(data) == {("suministros.csv", 3, "socio", "unknown_member")}


def test_missing_and_duplicate_columns_refuse_the_file() -> None:
    data = parse_master_files(
        files(
            socios_csv="ref;email\nM1;a@b.es\n",
            instalaciones_csv="id;nombre;name;peak_kw\nI1;x;y;3\n",
        )
    )
    assert codes(data) == {
        ("socios.csv", 1, "name", "missing_column"),
        ("instalaciones.csv", 1, "name", "duplicate_column"),
    }
    assert data.rejected == {"members": 1, "installations": 1, "supply_points": 0}


def test_a_decimal_comma_in_a_comma_separated_file_is_explained() -> None:
    data = parse_master_files(files(installations_csv="id,name,peak_kw\nI1,Roof,3,5\n"))
    ((*_, code),) = codes(data)
    assert code == "too_many_cells"
    assert "';'" in data.errors[0].message


# ------------------------------------------------------------------ all or nothing


def test_an_import_with_an_error_stores_nothing(store: MonitoringStore) -> None:
    import_master_data(store, "c1", parse_master_files(good_files()))
    before = tables(store)
    broken = POINTS_CSV + f"{C};M1;consumo;muchos;;;\n"
    data = parse_master_files(
        files(socios_csv=MEMBERS_CSV.replace("Bea", "Beatriz"), suministros_csv=broken)
    )
    with pytest.raises(MasterDataRejected) as rejected:
        import_master_data(store, "c1", data)
    assert tables(store) == before
    report = rejected.value.report
    assert not report.stored and report.supply_points.rejected == 1
    assert [(r["source"], r["reason"], r["count"]) for r in store.refusals()] == [
        ("masterdata", "bad_number", 1)
    ]
    assert format_report(report).splitlines()[-1] == (
        "suministros.csv line 5, column potencia_contratada: contracted power (kW) 'muchos' "
        "is not a number"
    )


def test_good_rows_only_imports_exactly_the_good_rows(store: MonitoringStore) -> None:
    members = MEMBERS_CSV + "M3,,\n".replace(",", ";")
    points = POINTS_CSV + f"{C};M3;consumo;2;;I1;\n" + f"{C[:-2]}AA;M1;consumo;2;;I1;\n"
    data = parse_master_files(
        files(socios_csv=members, installations_csv=INSTALLATIONS_CSV, suministros_csv=points)
    )
    report = import_master_data(store, "c1", data, good_rows_only=True)
    assert report.stored
    assert (report.members.created, report.members.rejected) == (2, 1)
    assert (report.supply_points.created, report.supply_points.rejected) == (3, 2)
    stored = tables(store)
    assert {m["ref"] for m in stored["mon_member"]} == {"M1", "M2"}
    assert {p["id"] for p in stored["mon_supply_point"]} == {A, B, G}


def test_a_reimport_updates_and_never_duplicates(store: MonitoringStore) -> None:
    import_master_data(store, "c1", parse_master_files(good_files()))
    again = parse_master_files(
        files(
            socios_csv="ref;nombre\nM1;Ana G.\nM2;Bea\n",  # no e-mail column: e-mails stay
            suministros_csv=POINTS_CSV.replace("3,45", "5,75").replace(";Casa", ";"),
        )
    )
    report = import_master_data(store, "c1", again)
    assert (report.members.created, report.members.updated) == (0, 2)
    assert (report.supply_points.created, report.supply_points.updated) == (0, 3)
    stored = tables(store)
    assert len(stored["mon_member"]) == 2 and len(stored["mon_supply_point"]) == 3
    ana = next(m for m in stored["mon_member"] if m["ref"] == "M1")
    assert (ana["name"], ana["email"]) == ("Ana G.", "ana@example.org")
    point = next(p for p in stored["mon_supply_point"] if p["id"] == A)
    assert (point["contracted_kw"], point["label"]) == (5.75, None)  # an empty cell clears


def test_a_supply_point_of_another_community_is_refused(store: MonitoringStore) -> None:
    import_master_data(store, "c2", parse_master_files(good_files()))
    before = tables(store)
    with pytest.raises(MasterDataRejected) as rejected:
        import_master_data(store, "c1", parse_master_files(good_files()))
    assert tables(store) == before
    assert {(e.row_number, e.code) for e in rejected.value.report.errors} == {
        (2, "installation_of_another_community"),
        *((row, "supply_point_of_another_community") for row in (2, 3, 4)),
        *((row, "unknown_installation") for row in (2, 3, 4)),
    }
    refused_roof = next(e for e in rejected.value.report.errors if e.code == "unknown_installation")
    assert "installations.csv line 2 is refused" in refused_roof.message
    assert all(p["community_id"] == "c2" for p in tables(store)["mon_supply_point"])


def test_references_and_shares_are_checked_against_the_store(store: MonitoringStore) -> None:
    import_master_data(store, "c1", parse_master_files(good_files()))
    extra = "cups;socio;tipo;potencia_contratada;coeficiente;instalacion\n"
    fine = parse_master_files(files(suministros_csv=extra + f"{C};M2;consumo;2;;I1\n"))
    assert import_master_data(store, "c1", fine).supply_points.created == 1
    for row, code in (
        (f"{C};M9;consumo;2;;I1\n", "unknown_member"),
        (f"{C};M2;consumo;2;;I9\n", "unknown_installation"),
        (f"{C};M2;consumo;2;1 %;I1\n", "shares_above_one"),  # 0.5 + 0.5 already stored
    ):
        with pytest.raises(MasterDataRejected) as rejected:
            import_master_data(store, "c1", parse_master_files(files(suministros_csv=extra + row)))
        assert [e.code for e in rejected.value.report.errors] == [code]


def test_feeds_of_a_cups_node_are_linked(store: MonitoringStore) -> None:
    store.write([Sample(A, "consumptionKWh", 1_700_000_000, 0.4)], now=1_700_000_000)
    store.write([Sample("gateway", "power", 1_700_000_000, 10.0)], now=1_700_000_000)
    report = import_master_data(store, "c1", parse_master_files(good_files()))
    assert report.linked_feeds == 1
    assert store.feed_named(A, "consumptionKWh").supply_point_id == A  # type: ignore[union-attr]
    assert store.feed_named("gateway", "power").supply_point_id is None  # type: ignore[union-attr]


def test_an_unknown_community_is_a_clear_error(store: MonitoringStore) -> None:
    with pytest.raises(MasterDataError) as error:
        import_master_data(store, "nowhere", parse_master_files(good_files()))
    assert error.value.code == "unknown_community"


# ------------------------------------------------------------------ hostile files


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty_file"),
        (b" \r\n\r\n", "empty_file"),
        (bytes(range(256)) * 4, "bad_file"),
        (b"\xd0\xcf\x11\xe0" + b"\x00" * 600, "bad_file"),  # an old .xls
        (b"PK\x03\x04" + b"\x01" * 600, "bad_file"),  # a broken zip
        ("ref;name\nM1;Ana\n".encode("utf-16"), "bad_file"),
        (b'ref,name\nM1,"' + b"x" * 200_000 + b'"\n', "bad_csv"),
        (b"uno;dos\n1;2\n", "unknown_kind"),
    ],
)
def test_hostile_files_are_refused_with_a_code(content: bytes, code: str) -> None:
    data = parse_master_files([("upload.csv", content)])
    assert [(e.row_number, e.code) for e in data.errors] == [(0, code)]


def test_limits_on_size_and_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masterdata, "MAX_ROWS", 3)
    monkeypatch.setattr(masterdata, "MAX_FILE_BYTES", 100)
    rows = "ref;nombre\n" + "".join(f"M{n};N{n}\n" for n in range(4))
    data = parse_master_files([("socios.csv", rows.encode())])
    assert [e.code for e in data.errors] == ["too_many_rows"]
    big = tmp_path / "socios.csv"
    big.write_text("ref;nombre\n" + "M1;" + "x" * 100 + "\n")
    assert [e.code for e in parse_master_data(big).errors] == ["file_too_large"]
    sheet = workbook(socios=[["ref", "name"], *([f"M{n}", "x"] for n in range(4))])
    monkeypatch.setattr(masterdata, "MAX_FILE_BYTES", 10**7)
    assert [e.code for e in parse_master_files([("b.xlsx", sheet)]).errors] == ["too_many_rows"]


def test_a_huge_cell_is_refused_not_truncated() -> None:
    content = workbook(socios=[["ref", "name"], ["M1", "x" * 50_000]])
    data = parse_master_files([("b.xlsx", content)])
    assert codes(data) == {("b.xlsx, sheet socios", 2, "name", "too_long")}


def test_a_formula_is_never_evaluated() -> None:
    book = Workbook()
    sheet = book.active
    sheet.title = "socios"
    sheet.append(["ref", "name", "email"])
    sheet.append(["M1", "=1+1", None])  # openpyxl saves no value with a formula
    sheet.append(["M2", "Bea", None])
    inert = sheet.cell(row=3, column=2, value="=cmd|' /C calc'!A0")
    inert.data_type = "s"  # text that merely looks like a formula
    out = io.BytesIO()
    book.save(out)
    data = parse_master_files([("b.xlsx", out.getvalue())])
    assert codes(data) == {("b.xlsx, sheet socios", 2, "name", "formula_without_value")}
    assert [m.name for m in data.members] == ["=cmd|' /C calc'!A0"]


def test_a_csv_injection_cell_is_stored_as_text(store: MonitoringStore) -> None:
    evil = "=cmd|' /C calc'!A0"
    data = parse_master_files(files(socios_csv=f'ref;nombre\nM1;"{evil}"\n@SUM(1);+1-1\n'))
    assert data.errors == ()
    import_master_data(store, "c1", data)
    assert {(m["ref"], m["name"]) for m in tables(store)["mon_member"]} == {
        ("M1", evil),
        ("@SUM(1)", "+1-1"),
    }


def test_a_workbook_without_master_data_sheets_is_refused() -> None:
    data = parse_master_files([("b.xlsx", workbook(Hoja1=[["ref", "name"], ["M1", "Ana"]]))])
    assert [e.code for e in data.errors] == ["no_master_data_sheet"]


def test_control_characters_in_text_are_refused() -> None:
    data = parse_master_files(files(socios_csv="ref;nombre\nM\x071;Ana\nM2;Be\x1ba\nM3;Ok\n"))
    assert codes(data) == {
        ("socios.csv", 2, "ref", "bad_text"),
        ("socios.csv", 3, "nombre", "bad_text"),
    }
    assert [m.ref for m in data.members] == ["M3"]
