"""A community's master data (members, installations, supply points) from CSV files and Excel
workbooks (DESIGN.md section 13): every row checked, errors named by file, line and column in
a sentence a person can act on, and an import that stores everything or nothing.

Three stages, as the ledger's rules are: `check_*` and the cell parsers are pure checks of one
value; `parse_master_data` reads files into records and checks rows against one another (shape,
duplicates, references, shares); `import_master_data` checks them against the store (another
community's supply point, references to members already stored) and writes them in one
transaction.

Decisions where the brief was silent:
- A CSV holds one kind, named by its file name (`socios.csv`, `supply_points.csv`, ...) or else
  by its header (a `cups`/`pod` column: supply points; a peak power column: installations;
  otherwise members). Columns not known are ignored (people keep notes beside the data).
- A number with one separator (`3,45`, `3.45`) has it as its decimal mark; several of one kind
  (`1.234.567`) or both kinds (`12.500,00`) group thousands. For money a single separator
  followed by exactly three digits (`12.500`) is refused as ambiguous.
- A value repeated across rows (a CUPS, a member ref, an installation id) refuses every row
  holding it: which of them is right is the person's call.
- References are checked within the import when it carries that kind (a members file is then
  the list the points may name); otherwise against what the store holds for the community.
- A re-import states the columns it has: an empty optional cell clears the stored value, an
  absent column leaves it as it was.
- A formula cell in a workbook counts as the value the spreadsheet saved with it; we never
  evaluate one, and one saved without a value is refused. Text is stored as written, so a
  CSV-injection cell (`=cmd|...`) stays inert text here; whoever exports it escapes it.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from monitoring.samples import Refused
from monitoring.store import (
    MonitoringStore,
    MonitoringStoreError,
    feed,
    installation,
    member,
    supply_point,
)

T = TypeVar("T")

MAX_FILE_BYTES = 10 * 1024 * 1024  # a community of thousands of members fits in far less
MAX_ROWS = 100_000  # per file or sheet
MAX_COLUMNS = 64  # a row wider than this is not master data; bounds a hostile sheet's memory
SOURCE = "masterdata"  # the ingestion path's name in the store's refusal counts
MICRO = 1_000_000  # micro-units per unit of currency (DESIGN.md section 3)

MEMBERS, INSTALLATIONS, SUPPLY_POINTS = "members", "installations", "supply_points"
KINDS = (MEMBERS, INSTALLATIONS, SUPPLY_POINTS)
CONSUMPTION, GENERATION = "consumption", "generation"

# CUPS control letters, as python-stdnum's stdnum/es/cups.py computes them: the 16 digits after
# "ES" as an integer, modulo 529, divided by 23 -> quotient and remainder index this table.
CUPS_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
CUPS_SHAPE = re.compile(r"ES(\d{16})([A-Z]{2})(\d[FPRCXYZ])?")
POD_SHAPE = re.compile(r"IT\d{3}E\d{8,9}")
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

# Header aliases per kind, normalised (lower case, no accents, `_` for anything else).
COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    MEMBERS: {
        "ref": (
            "ref",
            "reference",
            "referencia",
            "member",
            "member_ref",
            "socio",
            "id",
            "codigo",
            "codigo_socio",
            "numero_socio",
            "n_socio",
            "num_socio",
        ),
        "name": ("name", "nombre", "nombre_completo", "full_name", "razon_social"),
        "email": ("email", "e_mail", "mail", "correo", "correo_electronico"),
    },
    INSTALLATIONS: {
        "id": ("id", "installation", "installation_id", "instalacion", "codigo", "ref"),
        "name": ("name", "nombre"),
        "peak_kw": (
            "peak_kw",
            "peak_power",
            "kwp",
            "potencia_pico",
            "potencia_pico_kw",
            "potencia_kwp",
            "potencia_instalada",
            "potencia",
        ),
        "cost": ("cost", "coste", "costo", "inversion", "importe", "precio"),
        "commissioned": (
            "commissioned",
            "commissioning_date",
            "puesta_en_marcha",
            "fecha_puesta_en_marcha",
            "fecha_de_puesta_en_marcha",
            "fecha_alta",
            "fecha",
        ),
    },
    SUPPLY_POINTS: {
        "cups": (
            "cups",
            "pod",
            "supply_point",
            "supply_point_id",
            "punto_suministro",
            "punto_de_suministro",
        ),
        "member": ("member", "member_ref", "socio", "ref_socio", "referencia_socio"),
        "kind": ("kind", "type", "tipo"),
        "contracted_kw": (
            "contracted_kw",
            "contracted_power",
            "potencia_contratada",
            "potencia_contratada_kw",
            "potencia",
        ),
        "share": (
            "share",
            "coefficient",
            "coeficiente",
            "coeficiente_reparto",
            "coeficiente_de_reparto",
            "coef",
            "reparto",
        ),
        "installation": ("installation", "installation_id", "instalacion"),
        "label": ("label", "etiqueta", "descripcion", "description", "nombre", "name"),
    },
}
REQUIRED = {
    MEMBERS: ("ref", "name"),
    INSTALLATIONS: ("id", "name", "peak_kw"),
    SUPPLY_POINTS: ("cups", "kind"),
}
SHEETS = {
    "members": MEMBERS,
    "socios": MEMBERS,
    "miembros": MEMBERS,
    "installations": INSTALLATIONS,
    "instalaciones": INSTALLATIONS,
    "supply_points": SUPPLY_POINTS,
    "suministros": SUPPLY_POINTS,
    "puntos_de_suministro": SUPPLY_POINTS,
    "cups": SUPPLY_POINTS,
}
FILE_NAME_WORDS = (  # in this order: `member_supply_points.csv` holds supply points
    (SUPPLY_POINTS, ("supply", "suministro", "cups", "puntos")),
    (INSTALLATIONS, ("installation", "instalacion")),
    (MEMBERS, ("member", "socio", "miembro")),
)
KIND_WORDS = {
    "consumption": CONSUMPTION,
    "consumo": CONSUMPTION,
    "c": CONSUMPTION,
    "generation": GENERATION,
    "generacion": GENERATION,
    "g": GENERATION,
}
TEXT_LIMITS = {
    "ref": 64,
    "id": 64,
    "member": 64,
    "installation": 64,
    "name": 200,
    "label": 200,
    "email": 254,
}


# ------------------------------------------------------------------ one value


def check_cups(text: str) -> str:
    """A Spanish CUPS in its normal form (upper case, no spaces or dashes): `ES`, 4 digits of
    the distributor, 12 of the supply, two control letters, and optionally a border-point
    suffix (a digit and one of F P R C X Y Z). Refused `bad_cups_shape` or
    `bad_cups_control`."""
    cups = re.sub(r"[\s-]", "", str(text)).upper()
    shown = repr(str(text)[:40])
    if not cups.startswith("ES"):
        raise Refused("bad_cups_shape", f"CUPS {shown} must start with ES")
    found = CUPS_SHAPE.fullmatch(cups)
    if found is None:
        raise Refused(
            "bad_cups_shape",
            f"CUPS {shown} must be ES, 16 digits and two control letters, optionally followed "
            "by a digit and one of F P R C X Y Z (20 or 22 characters)",
        )
    expected = cups_control(found.group(1))
    if found.group(2) != expected:
        raise Refused(
            "bad_cups_control",
            f"CUPS {shown}: its control letters should be {expected}, not {found.group(2)}; "
            "check the digits against the electricity bill",
        )
    return cups


def cups_control(digits: str) -> str:
    """The two control letters of a CUPS's 16 digits (distributor and supply number)."""
    quotient, remainder = divmod(int(digits) % 529, 23)
    return CUPS_LETTERS[quotient] + CUPS_LETTERS[remainder]


def check_pod(text: str) -> str:
    """An Italian POD in its normal form: `IT`, 3 digits of the distributor, `E`, and 8 or 9
    digits. Refused `bad_pod_shape`."""
    pod = re.sub(r"[\s-]", "", str(text)).upper()
    if POD_SHAPE.fullmatch(pod) is None:
        raise Refused(
            "bad_pod_shape",
            f"POD {str(text)[:40]!r} must be IT, 3 digits, E and 8 or 9 digits "
            "(for example IT001E12345678)",
        )
    return pod


def check_supply_point_id(text: str) -> str:
    """A supply point's id: a POD when it starts with IT, else a CUPS (see both)."""
    compact = re.sub(r"[\s-]", "", str(text)).upper()
    return check_pod(text) if compact.startswith("IT") else check_cups(text)


def check_email(text: str) -> str:
    """An e-mail address of a plausible shape (one @, a dot in the domain), or `bad_email`."""
    if len(text) > TEXT_LIMITS["email"] or EMAIL_SHAPE.fullmatch(text) is None:
        raise Refused("bad_email", f"{text[:60]!r} is not an e-mail address")
    return text


def parse_number(value: object, what: str = "number") -> Decimal:
    """A number from a cell: a spreadsheet number, or text with a decimal comma or point and
    optional thousands grouping (`3,45`, `1.234,5`, `1,234.5`). Refused `bad_number`."""
    return _decimal(value, what, money=False)


def parse_money(value: object) -> int:
    """An amount in EUR as whole micro-units (1 EUR = 10**6): `12500`, `12.500,00`,
    `12500.00 EUR`, `12 500 €`; never through a float. Refused `bad_money`."""
    if isinstance(value, str):
        value = re.sub(r"(?i)^\s*(€|eur)\s*|\s*(€|eur)\s*$", "", value)
    try:
        amount = _decimal(value, "amount", money=True)
    except Refused as refused:
        raise Refused("bad_money", refused.message) from None
    micro = amount * MICRO
    if amount < 0 or micro != micro.to_integral_value():
        raise Refused(
            "bad_money", f"{_shown(value)} is not an amount of euros (at most 6 decimals, >= 0)"
        )
    return int(micro)


def parse_share(value: object) -> Decimal:
    """A sharing coefficient as a fraction 0..1: `0.125`, `0,125`, or a percentage `12,5 %`
    (a spreadsheet's percentage cell is already a fraction). Refused `bad_share`."""
    percent = isinstance(value, str) and value.strip().endswith("%")
    raw = value.strip().removesuffix("%") if isinstance(value, str) else value
    try:
        number = _decimal(raw, "share", money=False)
    except Refused as refused:
        raise Refused("bad_share", refused.message) from None
    share = number / 100 if percent else number
    if not 0 <= share <= 1:
        raise Refused(
            "bad_share",
            f"share {_shown(value)} must lie between 0 and 1, or 0 % and 100 % "
            "(write 12,5 % or 0,125)",
        )
    return share


def parse_date(value: object) -> date:
    """A date from a spreadsheet date cell or text `2023-05-17`, `17/05/2023`, `17-05-2023`.
    Refused `bad_date`."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _text(value)
    for pattern in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y"):
        try:
            day = datetime.strptime(text, pattern).date()
        except ValueError:
            continue
        if 1900 <= day.year <= 2100:
            return day
    raise Refused("bad_date", f"{_shown(value)} is not a date: write 2023-05-17 or 17/05/2023")


def parse_kind(value: object) -> str:
    """`consumption` or `generation` (Spanish `consumo`, `generación`). Refused `bad_kind`."""
    kind = KIND_WORDS.get(_plain(_text(value)))
    if kind is None:
        raise Refused(
            "bad_kind",
            f"kind {_shown(value)} must be consumption (consumo) or generation (generación)",
        )
    return kind


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a spreadsheet keeps reference 17 as 17.0
    return str(value).strip()


def _shown(value: object) -> str:
    return repr(_text(value)[:40])


def _plain(text: str) -> str:
    """Lower case, accents dropped, units in brackets dropped, `_` between words."""
    text = re.sub(r"\(.*?\)|\[.*?\]", " ", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _decimal(value: object, what: str, *, money: bool) -> Decimal:
    if isinstance(value, bool):
        raise Refused("bad_number", f"{what} {value!r} is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):  # a spreadsheet's own number: its shortest repr is what it shows
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        return value
    text = re.sub(r"[\s\u00a0\u202f']", "", str(value))  # spaces and apostrophes group thousands
    if not re.fullmatch(r"[+-]?\d[\d.,]*", text) or text[-1] in ".,":
        raise Refused("bad_number", f"{what} {_shown(value)} is not a number")
    marks = [c for c in text if c in ".,"]
    digits = text
    if len(set(marks)) == 2:
        decimal_mark = marks[-1]
        grouping = "." if decimal_mark == "," else ","
        whole, _, fraction = text.rpartition(decimal_mark)
        if not re.fullmatch(rf"[+-]?\d{{1,3}}(\{grouping}\d{{3}})*", whole):
            raise Refused("bad_number", f"{what} {_shown(value)} is not a number")
        digits = whole.replace(grouping, "") + "." + fraction
    elif len(marks) > 1:
        if not re.fullmatch(rf"[+-]?\d{{1,3}}(\{marks[0]}\d{{3}})+", text):
            raise Refused("bad_number", f"{what} {_shown(value)} is not a number")
        digits = text.replace(marks[0], "")
    elif marks:
        whole, _, fraction = text.partition(marks[0])
        if money and len(fraction) == 3:
            raise Refused(
                "bad_number",
                f"{what} {_shown(value)} is ambiguous: write 12500 or 12.500,00 for twelve "
                "thousand five hundred, 12,50 for twelve and a half",
            )
        digits = whole + "." + fraction
    try:
        return Decimal(digits)
    except InvalidOperation:
        raise Refused("bad_number", f"{what} {_shown(value)} is not a number") from None


# ------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class Place:
    """Where a record was read: a file (or `book.xlsx, sheet socios`) and its line or row
    (1 is the header; 0 is the file as a whole). `headers` maps a field to its header as
    written."""

    source: str
    row: int
    headers: Mapping[str, str]

    def column(self, name: str) -> str:
        return self.headers.get(name, name)


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row (or, with `row_number` 0, a whole file) is refused: `code` is stable."""

    file_or_sheet: str
    row_number: int
    column: str | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Member:
    ref: str
    name: str
    email: str | None
    at: Place
    columns: frozenset[str]  # the fields the import had a column for


@dataclass(frozen=True, slots=True)
class Installation:
    """`peak_kw` in kW; `cost_micro` in micro-units of EUR."""

    id: str
    name: str
    peak_kw: Decimal
    cost_micro: int | None
    commissioned: date | None
    at: Place
    columns: frozenset[str]


@dataclass(frozen=True, slots=True)
class SupplyPoint:
    """`id` a CUPS or POD; `contracted_kw` in kW; `share` a fraction 0..1 of its
    installation's generation."""

    id: str
    kind: str
    member_ref: str | None
    contracted_kw: Decimal | None
    share: Decimal | None
    installation_id: str | None
    label: str | None
    at: Place
    columns: frozenset[str]


@dataclass(frozen=True)
class MasterData:
    """The good records of one import, every error found, how many rows of each kind were
    refused, and which kinds the import carried."""

    members: tuple[Member, ...]
    installations: tuple[Installation, ...]
    supply_points: tuple[SupplyPoint, ...]
    errors: tuple[RowError, ...]
    rejected: Mapping[str, int] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Counts:
    created: int = 0
    updated: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class ImportReport:
    """What an import did per kind, the feeds it linked to their supply point, every error,
    and whether anything was stored."""

    community_id: str
    members: Counts
    installations: Counts
    supply_points: Counts
    linked_feeds: int
    errors: tuple[RowError, ...]
    stored: bool


class MasterDataError(ValueError):
    """An import that cannot start (`code` stable, `message` for a person)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class MasterDataRejected(MasterDataError):
    """The import has errors and stored nothing; `report` lists them."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(
            "master_data_rejected",
            f"{len(report.errors)} error(s) in the master data; nothing was imported",
        )
        self.report = report


# ------------------------------------------------------------------ reading files


@dataclass
class _Table:
    """One file or sheet of one kind: its header and rows of raw cells."""

    source: str
    kind: str
    header: list[str]
    rows: list[tuple[int, list[object]]]


@dataclass(frozen=True, slots=True)
class _Formula:
    """A workbook cell holding a formula saved without its value."""

    text: str


def parse_master_data(path: Path, *more: Path) -> MasterData:
    """Read and check the master data in `path` and `more` (CSV files, one kind each, or
    Excel workbooks with one sheet per kind) as one import."""
    files: list[tuple[str, bytes]] = []
    too_large: list[RowError] = []
    for one in (path, *more):
        if one.stat().st_size > MAX_FILE_BYTES:
            too_large.append(_too_large(one.name))
        else:
            files.append((one.name, one.read_bytes()))
    parsed = parse_master_files(files)
    if not too_large:
        return parsed
    return MasterData(
        parsed.members,
        parsed.installations,
        parsed.supply_points,
        (*too_large, *parsed.errors),
        parsed.rejected,
        parsed.kinds,
    )


def parse_master_files(files: Sequence[tuple[str, bytes]]) -> MasterData:
    """As `parse_master_data`, from (file name, content) pairs (an upload)."""
    tables: list[_Table] = []
    errors: list[RowError] = []
    for name, content in files:
        if len(content) > MAX_FILE_BYTES:
            errors.append(_too_large(name))
            continue
        try:
            tables.extend(_read_file(name, content))
        except Refused as refused:
            errors.append(RowError(name, 0, None, refused.reason, refused.message))
    return _check_tables(tables, errors)


def _too_large(name: str) -> RowError:
    return RowError(
        name,
        0,
        None,
        "file_too_large",
        f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: split it",
    )


def _read_file(name: str, content: bytes) -> list[_Table]:
    if not content.strip():
        raise Refused("empty_file", "the file is empty")
    if content.startswith(b"PK\x03\x04"):
        return _read_workbook(name, content)
    if content.startswith(b"\xd0\xcf\x11\xe0"):
        raise Refused("bad_file", "an old Excel (.xls) file: save it as .xlsx or as CSV")
    return [_read_csv(name, content)]


def _read_csv(name: str, content: bytes) -> _Table:
    if b"\x00" in content:
        raise Refused("bad_file", "not a text file: save the table as CSV (UTF-8) or .xlsx")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("latin-1")  # Excel's Spanish CSV; Latin-1 decodes any byte
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = ";" if ";" in first_line else "\t" if "\t" in first_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[object]]] = []
    header: list[str] | None = None
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = cells
                continue
            if len(rows) >= MAX_ROWS:
                raise Refused("too_many_rows", f"more than {MAX_ROWS:,} rows: split the file")
            if len(cells) > len(header):
                raise Refused(
                    "too_many_cells",
                    f"line {reader.line_num} has {len(cells)} cells and the header "
                    f"{len(header)}: quote values holding {delimiter!r}, or separate with ';'",
                )
            rows.append((reader.line_num, list(cells)))
    except csv.Error as exc:
        raise Refused(
            "bad_csv", f"line {reader.line_num} cannot be read as CSV ({exc}): check its quotes"
        ) from None
    if header is None:
        raise Refused("empty_file", "the file is empty")
    kind = _kind_of(name, header)
    return _Table(name, kind, header, rows)


def _kind_of(name: str, header: Sequence[str]) -> str:
    stem = _plain(Path(name).stem)
    for kind, words in FILE_NAME_WORDS:
        if any(word in stem for word in words):
            return kind
    fields = {_plain(h) for h in header}
    if fields & set(COLUMNS[SUPPLY_POINTS]["cups"]):
        return SUPPLY_POINTS
    if fields & set(COLUMNS[INSTALLATIONS]["peak_kw"]) - {"potencia"}:
        return INSTALLATIONS
    if fields & set(COLUMNS[MEMBERS]["name"]):
        return MEMBERS
    raise Refused(
        "unknown_kind",
        "cannot tell whether this file holds members, installations or supply points: name "
        "it socios.csv, instalaciones.csv or suministros.csv",
    )


def _read_workbook(name: str, content: bytes) -> list[_Table]:
    # openpyxl has no type hints; imported here so a CSV-only import never loads it
    from openpyxl import load_workbook  # type: ignore[import-untyped]

    tables: list[_Table] = []
    try:
        values = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        formulas = load_workbook(io.BytesIO(content), read_only=True, data_only=False)
        try:
            for sheet_name in values.sheetnames:
                kind = SHEETS.get(_plain(sheet_name))
                if kind is not None:
                    source = f"{name}, sheet {sheet_name}"
                    table = _read_sheet(source, kind, values[sheet_name], formulas[sheet_name])
                    if table is not None:
                        tables.append(table)
        finally:
            values.close()
            formulas.close()
    except Refused:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, SyntaxError) as exc:
        # a third-party parser on untrusted bytes: its complaint is kept out of the answer
        raise Refused("bad_file", "not a readable .xlsx workbook: save it again") from exc
    if not tables:
        raise Refused(
            "no_master_data_sheet",
            "the workbook has no sheet named socios (members), instalaciones (installations) "
            "or suministros (supply_points)",
        )
    return tables


def _read_sheet(source: str, kind: str, values: Any, formulas: Any) -> _Table | None:
    header: list[str] | None = None
    rows: list[tuple[int, list[object]]] = []
    pairs = zip(
        values.iter_rows(max_col=MAX_COLUMNS, values_only=True),
        formulas.iter_rows(max_col=MAX_COLUMNS, values_only=True),
        strict=False,
    )
    for number, (saved, written) in enumerate(pairs, start=1):
        cells: list[object] = [
            _Formula(str(w)) if v is None and w is not None else v
            for v, w in zip(saved, written, strict=False)
        ]
        if all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in cells):
            continue
        if header is None:
            header = [_text(cell) if cell is not None else "" for cell in cells]
            continue
        if len(rows) >= MAX_ROWS:
            raise Refused("too_many_rows", f"{source} has more than {MAX_ROWS:,} rows: split it")
        rows.append((number, cells))
    return None if header is None else _Table(source, kind, header, rows)


# ------------------------------------------------------------------ checking rows


class _Row:
    """One row's cells by field, collecting every error of the row."""

    def __init__(
        self,
        table: _Table,
        fields: Mapping[str, int],
        number: int,
        cells: Sequence[object],
        place: Place,
    ) -> None:
        self.table, self.fields, self.number, self.cells = table, fields, number, cells
        self.place = place
        self.errors: list[RowError] = []

    def error(self, name: str | None, code: str, message: str) -> None:
        column = self.place.column(name) if name else None
        self.errors.append(RowError(self.table.source, self.number, column, code, message))

    def take(self, name: str, parse: Callable[[Any], T], *, required: bool = False) -> T | None:
        """The field `name` parsed, or None when empty (an error when `required`)."""
        index = self.fields.get(name)
        raw = self.cells[index] if index is not None and index < len(self.cells) else None
        if isinstance(raw, _Formula):
            self.error(
                name,
                "formula_without_value",
                f"the formula {raw.text[:40]!r} has no saved value: open the workbook "
                "in a spreadsheet and save it, or paste the values",
            )
            return None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if required:
                self.error(name, "missing_value", f"{self.place.column(name)} is required")
            return None
        try:
            return parse(raw)
        except Refused as refused:
            self.error(name, refused.reason, refused.message)
            return None

    def text(self, name: str, *, required: bool = False) -> str | None:
        def checked(raw: object) -> str:
            text = _text(raw)
            if CONTROL_CHARS.search(text):
                raise Refused("bad_text", f"{_shown(raw)} holds control characters")
            limit = TEXT_LIMITS[name]
            if len(text) > limit:
                raise Refused("too_long", f"{len(text):,} characters; at most {limit}")
            return text

        return self.take(name, checked, required=required)


def _positive(what: str) -> Callable[[object], Decimal]:
    def parse(raw: object) -> Decimal:
        number = parse_number(raw, what)
        if number <= 0:
            raise Refused("not_positive", f"{what} {_shown(raw)} must be more than 0")
        return number

    return parse


def _member(row: _Row, columns: frozenset[str]) -> Member | None:
    ref = row.text("ref", required=True)
    name = row.text("name", required=True)
    email = row.take("email", lambda raw: check_email(_text(raw)))
    if row.errors or ref is None or name is None:
        return None
    return Member(ref, name, email, row.place, columns)


def _installation(row: _Row, columns: frozenset[str]) -> Installation | None:
    found_id = row.text("id", required=True)
    name = row.text("name", required=True)
    peak = row.take("peak_kw", _positive("peak power (kW)"), required=True)
    cost = row.take("cost", parse_money)
    commissioned = row.take("commissioned", parse_date)
    if row.errors or found_id is None or name is None or peak is None:
        return None
    return Installation(found_id, name, peak, cost, commissioned, row.place, columns)


def _supply_point(row: _Row, columns: frozenset[str]) -> SupplyPoint | None:
    point_id = row.take("cups", lambda raw: check_supply_point_id(_text(raw)), required=True)
    kind = row.take("kind", parse_kind, required=True)
    consumption = kind == CONSUMPTION
    member_ref = row.text("member", required=consumption)
    contracted = row.take("contracted_kw", _positive("contracted power (kW)"), required=consumption)
    share = row.take("share", parse_share)
    installation_id = row.text("installation", required=kind == GENERATION)
    label = row.text("label")
    if row.errors or point_id is None or kind is None:
        return None
    return SupplyPoint(
        point_id, kind, member_ref, contracted, share, installation_id, label, row.place, columns
    )


def _fields(table: _Table) -> tuple[dict[str, int], list[RowError]]:
    """Which column holds each field, and the header's errors."""
    aliases = {alias: name for name, names in COLUMNS[table.kind].items() for alias in names}
    fields: dict[str, int] = {}
    errors: list[RowError] = []
    for index, heading in enumerate(table.header):
        name = aliases.get(_plain(heading))
        if name is None:
            continue
        if name in fields:
            errors.append(
                RowError(
                    table.source,
                    1,
                    heading,
                    "duplicate_column",
                    f"columns {table.header[fields[name]]!r} and {heading!r} both give {name}: "
                    "keep one",
                )
            )
            continue
        fields[name] = index
    for name in REQUIRED[table.kind]:
        if name not in fields:
            accepted = ", ".join(COLUMNS[table.kind][name])
            errors.append(
                RowError(
                    table.source,
                    1,
                    name,
                    "missing_column",
                    f"no column for {name}: name one of {accepted}",
                )
            )
    return fields, errors


RecordT = TypeVar("RecordT", Member, Installation, SupplyPoint)


def _check_tables(tables: list[_Table], errors: list[RowError]) -> MasterData:
    built: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    rejected: dict[str, int] = dict.fromkeys(KINDS, 0)
    # every row seen per key, good or not, so references to a refused row say so
    seen: dict[str, dict[str, list[Place]]] = {kind: defaultdict(list) for kind in KINDS}
    refused_keys: dict[str, set[str]] = {kind: set() for kind in KINDS}
    builders: dict[str, Callable[[_Row, frozenset[str]], Any]] = {
        MEMBERS: _member,
        INSTALLATIONS: _installation,
        SUPPLY_POINTS: _supply_point,
    }
    key_field = {MEMBERS: "ref", INSTALLATIONS: "id", SUPPLY_POINTS: "cups"}
    for table in tables:
        fields, header_errors = _fields(table)
        errors.extend(header_errors)
        if header_errors:
            rejected[table.kind] += len(table.rows)
            continue
        headers = {name: table.header[index] for name, index in fields.items()}
        columns = frozenset(fields)
        for number, cells in table.rows:
            row = _Row(table, fields, number, cells, Place(table.source, number, headers))
            record = builders[table.kind](row, columns)
            key = _row_key(table.kind, key_field[table.kind], fields, cells)
            if key is not None:
                seen[table.kind][key].append(row.place)
            if record is None:
                errors.extend(row.errors)
                rejected[table.kind] += 1
                if key is not None:
                    refused_keys[table.kind].add(key)
            else:
                built[table.kind].append(record)
    for kind in KINDS:
        built[kind] = _without_duplicates(kind, built[kind], seen[kind], errors, rejected)
    kinds = frozenset(table.kind for table in tables)
    points = _with_known_references(built, seen, refused_keys, kinds, errors, rejected)
    points = _with_shares_at_most_one(points, {}, errors, rejected)
    in_order = sorted(errors, key=lambda e: (e.file_or_sheet, e.row_number))
    return MasterData(
        tuple(built[MEMBERS]),
        tuple(built[INSTALLATIONS]),
        tuple(points),
        tuple(in_order),
        rejected,
        kinds,
    )


def _row_key(
    kind: str, name: str, fields: Mapping[str, int], cells: Sequence[object]
) -> str | None:
    index = fields.get(name)
    raw = cells[index] if index is not None and index < len(cells) else None
    if raw is None or isinstance(raw, _Formula) or not _text(raw):
        return None
    if kind == SUPPLY_POINTS:
        try:
            return check_supply_point_id(_text(raw))
        except Refused:
            return None
    return _text(raw)


def _key(record: Member | Installation | SupplyPoint) -> str:
    return record.ref if isinstance(record, Member) else record.id


def _without_duplicates(
    kind: str,
    records: list[Any],
    seen: Mapping[str, list[Place]],
    errors: list[RowError],
    rejected: dict[str, int],
) -> list[Any]:
    what = {MEMBERS: "member ref", INSTALLATIONS: "installation id", SUPPLY_POINTS: "supply point"}[
        kind
    ]
    code = {
        MEMBERS: "duplicate_member",
        INSTALLATIONS: "duplicate_installation",
        SUPPLY_POINTS: "duplicate_supply_point",
    }[kind]
    column = {MEMBERS: "ref", INSTALLATIONS: "id", SUPPLY_POINTS: "cups"}[kind]
    kept = []
    for record in records:
        places = seen[_key(record)]
        if len(places) == 1:
            kept.append(record)
            continue
        others = ", ".join(_where(p) for p in places if p != record.at)
        errors.append(
            RowError(
                record.at.source,
                record.at.row,
                record.at.column(column),
                code,
                f"{what} {_key(record)} is also on {others}: keep one row",
            )
        )
        rejected[kind] += 1
    return kept


def _where(place: Place) -> str:
    word = "row" if ", sheet " in place.source else "line"
    return f"{place.source} {word} {place.row}"


def _with_known_references(
    built: dict[str, list[Any]],
    seen: Mapping[str, Mapping[str, list[Place]]],
    refused: Mapping[str, set[str]],
    kinds: frozenset[str],
    errors: list[RowError],
    rejected: dict[str, int],
) -> list[SupplyPoint]:
    members = {m.ref for m in built[MEMBERS]}
    installations = {i.id for i in built[INSTALLATIONS]}
    kept: list[SupplyPoint] = []
    for point in built[SUPPLY_POINTS]:
        problems: list[tuple[str, str, str]] = []
        for ref, kind, good, column, code in (
            (point.member_ref, MEMBERS, members, "member", "unknown_member"),
            (
                point.installation_id,
                INSTALLATIONS,
                installations,
                "installation",
                "unknown_installation",
            ),
        ):
            if ref is None or kind not in kinds or ref in good:
                continue
            places = seen[kind].get(ref)
            singular = kind.removesuffix("s")
            if places:
                message = (
                    f"{singular} {ref!r} is not imported: "
                    f"{', '.join(_where(p) for p in places)} is refused"
                )
            else:
                message = f"no {singular} {ref!r} in this import"
            problems.append((column, code, message))
        for column, code, message in problems:
            errors.append(
                RowError(
                    point.at.source,
                    point.at.row,
                    point.at.column(column),
                    code,
                    message,
                )
            )
        if problems:
            rejected[SUPPLY_POINTS] += 1
        else:
            kept.append(point)
    return kept


def _with_shares_at_most_one(
    points: list[SupplyPoint],
    stored: Mapping[str, Decimal],
    errors: list[RowError],
    rejected: dict[str, int],
) -> list[SupplyPoint]:
    """`points` less those of an installation whose shares add up above 1 (with `stored`, the
    shares of its points already stored and not in this import)."""
    by_installation: dict[str, list[SupplyPoint]] = defaultdict(list)
    for point in points:
        if point.installation_id is not None and point.share is not None:
            by_installation[point.installation_id].append(point)
    over: set[str] = set()
    for installation_id, shared in by_installation.items():
        total = sum(
            (p.share or Decimal(0) for p in shared), stored.get(installation_id, Decimal(0))
        )
        if total <= 1:
            continue
        over.add(installation_id)
        named = ", ".join(f"{p.id} ({_where(p.at)})" for p in shared)
        before = (
            f" with {stored[installation_id]} already stored" if installation_id in stored else ""
        )
        errors.append(
            RowError(
                shared[0].at.source,
                0,
                shared[0].at.column("share"),
                "shares_above_one",
                f"the shares of installation {installation_id!r} add up to {total}{before}, above "
                f"1: {named}",
            )
        )
        rejected[SUPPLY_POINTS] += len(shared)
    return [p for p in points if p.share is None or p.installation_id not in over]


# ------------------------------------------------------------------ importing


def import_master_data(
    store: MonitoringStore, community_id: str, data: MasterData, *, good_rows_only: bool = False
) -> ImportReport:
    """Store `data` in community `community_id` in one transaction: members by (community,
    ref), installations and supply points by id, then link the feeds of nodes named after an
    imported supply point to it. With errors (in `data` or against the store) nothing is stored
    and MasterDataRejected is raised, unless `good_rows_only`: then the good rows are stored.
    MasterDataError(`unknown_community`) when the community does not exist. The store counts
    each import's refusals once per reason (source `masterdata`)."""
    if store.community(community_id) is None:
        raise MasterDataError(
            "unknown_community", f"no community {community_id!r}: create it first"
        )
    try:
        with store.engine.begin() as conn:
            report = _import(conn, community_id, data, good_rows_only)
    except MasterDataRejected as rejected:
        _count_refusals(store, rejected.report.errors)
        raise
    except SQLAlchemyError as exc:
        raise MonitoringStoreError("importing master data failed, nothing was stored") from exc
    _count_refusals(store, report.errors)
    return report


def _count_refusals(store: MonitoringStore, errors: Sequence[RowError]) -> None:
    # once per reason and import: a hostile file of 100,000 bad rows is one refused import
    by_code: dict[str, list[RowError]] = defaultdict(list)
    for error in errors:
        by_code[error.code].append(error)
    for code, found in by_code.items():
        store.refuse(SOURCE, code, f"{len(found)} row(s), first: {format_error(found[0])}")


def _import(
    conn: Connection, community_id: str, data: MasterData, good_rows_only: bool
) -> ImportReport:
    errors = list(data.errors)
    rejected = {kind: data.rejected.get(kind, 0) for kind in KINDS}
    stored_installations = _existing(conn, installation, [i.id for i in data.installations])
    installations: list[Installation] = []
    refused_installations: dict[str, Place] = {}
    for one in data.installations:
        owner = stored_installations.get(one.id, {}).get("community_id", community_id)
        if owner != community_id:
            errors.append(
                RowError(
                    one.at.source,
                    one.at.row,
                    one.at.column("id"),
                    "installation_of_another_community",
                    f"installation {one.id!r} belongs to another community; ids are unique",
                )
            )
            rejected[INSTALLATIONS] += 1
            refused_installations[one.id] = one.at
        else:
            installations.append(one)
    stored_members = _stored_members(conn, community_id)
    member_refs = set(stored_members) | {m.ref for m in data.members}
    installation_ids = _community_installations(conn, community_id) | {i.id for i in installations}
    stored_points = _existing(conn, supply_point, [p.id for p in data.supply_points])
    points: list[SupplyPoint] = []
    for point in data.supply_points:
        problems: list[tuple[str, str, str]] = []
        owner = stored_points.get(point.id, {}).get("community_id", community_id)
        if owner != community_id:
            problems.append(
                (
                    "cups",
                    "supply_point_of_another_community",
                    f"supply point {point.id} belongs to another community: it is "
                    "never moved by an import; ask the operator",
                )
            )
        if point.member_ref is not None and point.member_ref not in member_refs:
            problems.append(
                ("member", "unknown_member", f"no member {point.member_ref!r} in this community")
            )
        if point.installation_id is not None and point.installation_id not in installation_ids:
            refused_at = refused_installations.get(point.installation_id)
            problems.append(
                (
                    "installation",
                    "unknown_installation",
                    f"installation {point.installation_id!r} is not imported: {_where(refused_at)}"
                    " is refused"
                    if refused_at
                    else f"no installation {point.installation_id!r} in this community",
                )
            )
        for column, code, message in problems:
            errors.append(
                RowError(point.at.source, point.at.row, point.at.column(column), code, message)
            )
        if problems:
            rejected[SUPPLY_POINTS] += 1
        else:
            points.append(point)
    points = _with_shares_at_most_one(points, _stored_shares(conn, points), errors, rejected)
    counts = {kind: Counts(rejected=rejected[kind]) for kind in KINDS}
    if errors and not good_rows_only:
        raise MasterDataRejected(
            ImportReport(
                community_id,
                counts[MEMBERS],
                counts[INSTALLATIONS],
                counts[SUPPLY_POINTS],
                0,
                tuple(errors),
                stored=False,
            )
        )
    made_installations = _upsert_installations(
        conn, community_id, installations, stored_installations
    )
    made_members = _upsert_members(conn, community_id, data.members, stored_members)
    member_ids = _stored_members(conn, community_id)
    made_points = _upsert_points(conn, community_id, points, stored_points, member_ids)
    linked = _link_feeds(conn, [p.id for p in points])
    return ImportReport(
        community_id,
        Counts(*made_members, rejected[MEMBERS]),
        Counts(*made_installations, rejected[INSTALLATIONS]),
        Counts(*made_points, rejected[SUPPLY_POINTS]),
        linked,
        tuple(errors),
        stored=True,
    )


def _chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing(conn: Connection, table: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for row in conn.execute(select(table).where(table.c.id.in_(list(chunk)))):
            found[row._mapping["id"]] = dict(row._mapping)
    return found


def _stored_members(conn: Connection, community_id: str) -> dict[str, int]:
    """Member ids of the community by ref."""
    rows = conn.execute(
        select(member.c.ref, member.c.id).where(member.c.community_id == community_id)
    )
    return {row._mapping["ref"]: row._mapping["id"] for row in rows}


def _community_installations(conn: Connection, community_id: str) -> set[str]:
    return set(
        conn.scalars(select(installation.c.id).where(installation.c.community_id == community_id))
    )


def _stored_shares(conn: Connection, points: Sequence[SupplyPoint]) -> dict[str, Decimal]:
    """Per installation, the shares of its stored points that this import does not restate."""
    importing = {p.id for p in points}
    targets = sorted({p.installation_id for p in points if p.installation_id and p.share})
    totals: dict[str, Decimal] = {}
    for chunk in _chunks(targets):
        rows = conn.execute(
            select(supply_point.c.id, supply_point.c.installation_id, supply_point.c.share).where(
                supply_point.c.installation_id.in_(list(chunk)), supply_point.c.share.is_not(None)
            )
        )
        for point_id, installation_id, share in rows:
            if point_id not in importing:
                before = totals.get(str(installation_id), Decimal(0))
                totals[str(installation_id)] = before + Decimal(repr(share))
    return totals


def _given(
    record: Member | Installation | SupplyPoint, values: dict[str, Any], fields: Mapping[str, str]
) -> dict[str, Any]:
    """`values` less the optional columns the import did not have (those stay as stored)."""
    return {
        column: value
        for column, value in values.items()
        if column not in fields or fields[column] in record.columns
    }


def _upsert(
    conn: Connection, table: Any, key: Any, new: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> None:
    if new:
        conn.execute(table.insert(), new)
    by_columns: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
    for values in changed:
        by_columns[frozenset(values)].append(values)
    for columns, rows in by_columns.items():
        settable = sorted(columns - {"_key"})
        # SQLAlchemy reserves a column's own name for its bind parameter in SET
        conn.execute(
            update(table)
            .where(key == bindparam("_key"))
            .values({column: bindparam(f"new_{column}") for column in settable}),
            [{"_key": row["_key"], **{f"new_{c}": row[c] for c in settable}} for row in rows],
        )


def _upsert_installations(
    conn: Connection,
    community_id: str,
    records: Sequence[Installation],
    stored: Mapping[str, Any],
) -> tuple[int, int]:
    optional = {"cost_micro": "cost", "commissioned": "commissioned"}
    new, changed = [], []
    for one in records:
        values = _given(
            one,
            {
                "name": one.name,
                "peak_kw": float(one.peak_kw),
                "cost_micro": one.cost_micro,
                "commissioned": one.commissioned.isoformat() if one.commissioned else None,
            },
            optional,
        )
        if one.id in stored:
            changed.append({"_key": one.id, **values})
        else:
            new.append({"id": one.id, "community_id": community_id, **values})
    _upsert(conn, installation, installation.c.id, new, changed)
    return len(new), len(changed)


def _upsert_members(
    conn: Connection, community_id: str, records: Sequence[Member], stored: Mapping[str, int]
) -> tuple[int, int]:
    new, changed = [], []
    for one in records:
        values = _given(one, {"name": one.name, "email": one.email}, {"email": "email"})
        if one.ref in stored:
            changed.append({"_key": stored[one.ref], **values})
        else:
            new.append({"community_id": community_id, "ref": one.ref, **values})
    _upsert(conn, member, member.c.id, new, changed)
    return len(new), len(changed)


def _upsert_points(
    conn: Connection,
    community_id: str,
    records: Sequence[SupplyPoint],
    stored: Mapping[str, Any],
    member_ids: Mapping[str, int],
) -> tuple[int, int]:
    optional = {
        "member_id": "member",
        "contracted_kw": "contracted_kw",
        "share": "share",
        "installation_id": "installation",
        "label": "label",
    }
    new, changed = [], []
    for one in records:
        values = _given(
            one,
            {
                "kind": one.kind,
                "member_id": member_ids[one.member_ref] if one.member_ref else None,
                "contracted_kw": None if one.contracted_kw is None else float(one.contracted_kw),
                "share": None if one.share is None else float(one.share),
                "installation_id": one.installation_id,
                "label": one.label,
            },
            optional,
        )
        if one.id in stored:
            changed.append({"_key": one.id, **values})
        else:
            new.append({"id": one.id, "community_id": community_id, **values})
    _upsert(conn, supply_point, supply_point.c.id, new, changed)
    return len(new), len(changed)


def _link_feeds(conn: Connection, point_ids: Sequence[str]) -> int:
    """Link feeds not yet linked whose node is named after a supply point (Datadis's)."""
    linked = 0
    for chunk in _chunks(point_ids):
        result = conn.execute(
            update(feed)
            .where(feed.c.node.in_(list(chunk)), feed.c.supply_point_id.is_(None))
            .values(supply_point_id=feed.c.node)
        )
        linked += result.rowcount or 0
    return linked


# ------------------------------------------------------------------ for people


def format_report(report: ImportReport) -> str:
    """The report as text for a person: counts per kind, then one line per error
    (`members.csv line 7, column email: ...`)."""
    lines = [
        "Imported."
        if report.stored
        else "Nothing was imported: fix the rows below, or import only the good rows.",
    ]
    for title, counts in (
        ("members", report.members),
        ("installations", report.installations),
        ("supply points", report.supply_points),
    ):
        lines.append(
            f"{title}: {counts.created} created, {counts.updated} updated, "
            f"{counts.rejected} rejected"
        )
    if report.linked_feeds:
        lines.append(f"feeds linked to their supply point: {report.linked_feeds}")
    lines.extend(format_error(error) for error in report.errors)
    return "\n".join(lines)


def format_error(error: RowError) -> str:
    """One error as `members.csv line 7, column email: message`."""
    where = error.file_or_sheet
    if error.row_number:
        where += f" {'row' if ', sheet ' in where else 'line'} {error.row_number}"
    if error.column:
        where += f", column {error.column}"
    return f"{where}: {error.message}"
