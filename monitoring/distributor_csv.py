"""The distributors' CSV exports of hourly or quarter-hourly consumption, as members download
them from Datadis' website or the i-DE, e-distribución and UFD portals.

What is read: `;`-separated lines, a header line first; UTF-8 with or without BOM, else
Latin-1 (Windows exports). Header names are matched without case, accents, spaces or
punctuation (`Consumo_kWh`, `consumo kwh` and `CONSUMO (kWh)` are one name):
- supply point: `CUPS`, `Codigo CUPS`;
- date: `Fecha`, `Date`, `Dia` — `DD/MM/YYYY` or `YYYY/MM/DD` (`-` also separates);
- hour: `Hora`, `Time`, `Hour`, `Periodo` — an hour ending 1..24 (25 on the autumn day for
  exporters that number the day's hours in sequence) or `HH:MM` ending (`00:15`..`24:00`:
  a file with any quarter label is quarter-hourly);
- consumption: `Consumo_kWh`, `Consumo`, `AE_kWh`, `AE`, `consumptionKWh`,
  `Energia consumida (kWh)`;
- surplus (optional): `AS_kWh`, `AS`, `surplusEnergyKWh`, `Energia vertida (kWh)`,
  `Excedentes (kWh)`; generation (optional): `generationEnergyKWh`, `Energia generada (kWh)`;
  self-consumption (optional): `selfConsumptionEnergyKWh`, `Energia autoconsumida (kWh)`;
- method (optional): `Metodo_obtencion`, `REAL/ESTIMADO`, `obtainMethod`, `Tipo lectura` —
  `R`, `Real` or `E`, `Estimada`, `Estimado` (any case).
Energies use a decimal comma (a decimal point is accepted too), no thousands separator.
Daylight-saving days are read in both numberings (`monitoring.datadis.resolve_labels`).
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from monitoring.datadis import (
    HOUR_S,
    QUARTER_S,
    LabelledRow,
    Reading,
    RowError,
    check_energy,
    parse_day,
    plausible_day,
    resolve_labels,
    store_consumption,
)
from monitoring.masterdata import check_cups
from monitoring.samples import Refused
from monitoring.store import MonitoringStore, zone

SOURCE = "distributor_csv"
MAX_FILE_BYTES = 64 * 1024 * 1024  # a year of quarter-hours for a few hundred supply points
DMY = re.compile(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})$")
HOUR = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")
NUMBER = re.compile(r"^-?\d+(?:[.,]\d+)?$")
COLUMNS = {
    "cups": ("cups", "codigocups"),
    "date": ("fecha", "date", "dia"),
    "hour": ("hora", "time", "hour", "periodo"),
    "consumption": (
        "consumokwh",
        "consumo",
        "aekwh",
        "ae",
        "consumptionkwh",
        "energiaconsumidakwh",
    ),
    "surplus": ("askwh", "as", "surplusenergykwh", "energiavertidakwh", "excedenteskwh"),
    "generation": ("generationenergykwh", "energiageneradakwh"),
    "self_consumption": ("selfconsumptionenergykwh", "energiaautoconsumidakwh"),
    "method": ("metodoobtencion", "realestimado", "obtainmethod", "tipolectura"),
}
REQUIRED = ("cups", "date", "hour", "consumption")
METHODS = {"r": False, "real": False, "e": True, "estimada": True, "estimado": True}


@dataclass(frozen=True, slots=True)
class DistributorFile:
    """A parsed export: its readings (UTC) and every line not read."""

    readings: tuple[Reading, ...]
    errors: tuple[RowError, ...]


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What importing a file did: lines read, readings and samples stored or replaced,
    every line refused, and whether anything was stored at all."""

    path: str
    readings: int
    stored: int
    replaced: int
    errors: tuple[RowError, ...]
    imported: bool


def header_key(name: str) -> str:
    """A header name without case, accents, spaces or punctuation."""
    plain = unicodedata.normalize("NFKD", name.strip().lstrip("\ufeff"))
    return "".join(c for c in plain.lower() if c.isascii() and c.isalnum())


def decode(raw: bytes) -> str:
    """The text of an export: UTF-8 (a BOM is dropped), else Latin-1, which reads any byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _number(text: str) -> float | None:
    text = text.strip()
    return float(text.replace(",", ".")) if NUMBER.fullmatch(text) else None


def _day(text: str) -> date | None:
    found = DMY.fullmatch(text.strip())
    if not found:
        return parse_day(text)
    try:
        day = date(int(found[3]), int(found[2]), int(found[1]))
    except ValueError:
        return None
    return plausible_day(day)


def parse_distributor_csv(text: str, tz: ZoneInfo | str) -> DistributorFile:
    """The readings of an export `text` placed in UTC by zone `tz` (Europe/Madrid, or
    Atlantic/Canary: the CUPS does not tell). Never raises on its content: every line that
    cannot be read is an error with its line number (the header is line 1), column and
    reason."""
    place = zone(tz) if isinstance(tz, str) else tz
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return DistributorFile((), (RowError(1, "", "bad_header", "the file is empty"),))
    header = [header_key(name) for name in lines[0].split(";")]
    names = lines[0].split(";")
    where: dict[str, int] = {}
    for role, keys in COLUMNS.items():
        found = next((i for i, key in enumerate(header) if key in keys), None)
        if found is not None:
            where[role] = found
    missing = [role for role in REQUIRED if role not in where]
    if missing:
        return DistributorFile(
            (),
            (
                RowError(
                    1,
                    "",
                    "bad_header",
                    f"the header has no column for {', '.join(missing)}: expected names such "
                    "as CUPS;Fecha;Hora;Consumo_kWh, separated by ';'",
                ),
            ),
        )
    labelled: list[LabelledRow] = []
    errors: list[RowError] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = _row(number, line.split(";"), where, [n.strip() for n in names])
        if isinstance(row, RowError):
            errors.append(row)
        else:
            labelled.append(row)
    quarter = any(r.end_minute % 60 for r in labelled)
    readings, label_errors = resolve_labels(labelled, place, QUARTER_S if quarter else HOUR_S)
    return DistributorFile(
        tuple(readings), tuple(sorted(errors + label_errors, key=lambda e: e.line))
    )


def _row(
    number: int, fields: Sequence[str], where: dict[str, int], names: Sequence[str]
) -> LabelledRow | RowError:
    def error(role: str, reason: str, message: str) -> RowError:
        return RowError(number, names[where[role]] if role in where else role, reason, message)

    def cell(role: str) -> str | None:
        index = where.get(role)
        return fields[index].strip() if index is not None and index < len(fields) else None

    for role in REQUIRED:
        if cell(role) is None:
            return error(role, "missing_column", f"line {number} has no {names[where[role]]}")
    try:
        cups = check_cups(cell("cups") or "")
    except Refused as exc:
        return error("cups", exc.reason, exc.message)
    day = _day(cell("date") or "")
    if day is None:
        return error(
            "date", "bad_date", f"{(cell('date') or '')[:20]!r} is not DD/MM/YYYY or YYYY/MM/DD"
        )
    hour = HOUR.fullmatch(cell("hour") or "")
    if hour is None or int(hour[2] or 0) >= 60:
        return error(
            "hour", "bad_hour", f"{(cell('hour') or '')[:20]!r} is not an hour 1-24 or HH:MM"
        )
    end_minute = int(hour[1]) * 60 + int(hour[2] or 0)
    energies: dict[str, float | None] = {}
    for role in ("consumption", "surplus", "generation", "self_consumption"):
        text = cell(role)
        if not text and role != "consumption":
            energies[role] = None
            continue
        value = _number(text or "")
        if value is None:
            return error(role, "bad_number", f"{(text or '')[:20]!r} is not a number of kWh")
        try:
            energies[role] = check_energy(value, names[where[role]])
        except Refused as exc:
            return error(role, exc.reason, exc.message)
    method = (cell("method") or "r").lower()
    if method not in METHODS:
        return error("method", "bad_method", f"{method[:20]!r} is not R(eal) or E(stimada)")
    consumption = energies["consumption"]
    assert consumption is not None
    return LabelledRow(
        number,
        cups,
        day,
        end_minute,
        consumption,
        energies["surplus"],
        energies["generation"],
        energies["self_consumption"],
        METHODS[method],
        names[where["hour"]],
    )


def import_distributor_csv(
    store: MonitoringStore,
    path: Path,
    tz: ZoneInfo | str,
    *,
    good_rows_only: bool = False,
    now: float | None = None,
) -> ImportReport:
    """Import the export at `path` into `store`. A file with any error stores nothing unless
    `good_rows_only`; every error is counted with `store.refuse("distributor_csv", ...)`."""
    at = time.time() if now is None else now
    shown = str(path)
    try:
        size = path.stat().st_size
        raw = path.read_bytes() if size <= MAX_FILE_BYTES else None
    except OSError as exc:
        return _refused_file(store, path, "unreadable", f"cannot be read: {exc.strerror}", at)
    if raw is None:
        return _refused_file(
            store, path, "too_large", f"is {size} bytes, more than {MAX_FILE_BYTES}", at
        )
    text = decode(raw)
    parsed = parse_distributor_csv(text, tz)
    errors = list(parsed.errors)
    for error in errors:
        store.refuse(SOURCE, error.reason, f"{path.name} line {error.line}: {error.message}", at)
    if errors and not good_rows_only:
        return ImportReport(shown, len(parsed.readings), 0, 0, tuple(errors), False)
    try:
        written = store_consumption(store, parsed.readings, source=SOURCE, now=at)
    except Refused as exc:
        store.refuse(SOURCE, exc.reason, f"{path.name}: {exc.message}", at)
        errors.append(RowError(0, "", exc.reason, exc.message))
        return ImportReport(shown, len(parsed.readings), 0, 0, tuple(errors), False)
    return ImportReport(
        shown, len(parsed.readings), written.stored, written.replaced, tuple(errors), True
    )


def _refused_file(
    store: MonitoringStore, path: Path, reason: str, why: str, at: float
) -> ImportReport:
    message = f"{path.name} {why}: nothing was imported"
    store.refuse(SOURCE, reason, message, at)
    return ImportReport(str(path), 0, 0, 0, (RowError(0, "", reason, message),), False)
