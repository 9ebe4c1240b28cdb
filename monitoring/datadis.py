"""Datadis, the Spanish distributors' data platform: a client that respects its limits, the
parsing of its hour-ending consumption curves into UTC intervals, and storing them.

Checked against Datadis' own API page (as mirrored in ctr-datadis' `docs/doc-api.txt`, 2025)
and the issues of homeassistant-edata (#138, #167):
- login: `POST /nikola-auth/tokens/login`, form fields `username` (the NIF) and `password`,
  answered with the bearer token as plain text (a JWT: its `exp` says when it expires);
- `GET /api-private/api/get-supplies-v2` -> `{"supplies": [...], "distributorError": [...]}`,
  `get-contract-detail-v2` (`cups`, `distributorCode`) -> `{"contract": [...], ...}`,
  `get-consumption-data-v2` (`cups`, `distributorCode`, `startDate`/`endDate` as `YYYY/MM`,
  `measurementType` 0 hourly or 1 quarter-hourly, `pointType`) -> `{"timeCurve": [...], ...}`
  whose rows carry `cups`, `date` (`YYYY/MM/DD`), `time` (`HH:MM`, the END of the interval),
  `consumptionKWh`, `obtainMethod` (`Real`/`Estimada`), `surplusEnergyKWh`,
  `generationEnergyKWh`, `selfConsumptionEnergyKWh`. We use the v2 paths only: they name
  the distributor that failed instead of answering an empty list.
- An identical query within 24 h answers 429 "Consulta ya realizada en las últimas 24 horas".
  Where we differ: Datadis' staff told edata's author that only successful queries start the
  24 h; we remember failed ones too (the brief says they count, and a wrong guess costs a
  day), and a timed-out query as failed (the server may have counted it). A query that never
  reached the server (connection refused) or was refused at login (401) is not remembered.
- Not documented, so assumed: data reaches at most 24 months back (we refuse older months
  before asking); on the 25-hour day the repeated hour is labelled twice, in order; labels
  that cannot exist are reported, never guessed (`resolve_labels`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from monitoring.samples import ENERGY, Refused, Sample, check_name, check_time, check_value
from monitoring.store import MonitoringStore, Written, supply_point, zone

log = logging.getLogger("petra.monitoring.datadis")

DATADIS_URL = "https://datadis.es"
LOGIN_PATH = "/nikola-auth/tokens/login"
API = "/api-private/api"
QUERY_PAUSE_S = 86_400  # Datadis refuses an identical query within 24 hours
MONTHS_BACK = 24  # Datadis keeps two years of curves
TOKEN_MARGIN_S = 60  # log in again this long before the token's own expiry
TOKEN_FALLBACK_S = 3_600  # a token whose expiry cannot be read is trusted this long
TIMEOUT_S = 90.0  # Datadis answers a year of hours slowly; a minute and a half, not for ever
HOUR_S, QUARTER_S = 3_600, 900
# Failures Datadis cannot have counted against the query: it was never received or never
# got past the login.
NOT_REMEMBERED = frozenset({"unreachable", "login_refused", "login_failed", "unauthorized"})
MONTH = re.compile(r"^(\d{4})/(\d{2})$")
LABEL = re.compile(r"^(\d{1,2}):(\d{2})$")
DAY = re.compile(r"^(\d{4})[/-](\d{2})[/-](\d{2})$")
EARLIEST_YEAR = 2000  # as monitoring.samples: no meter data is older
LATEST_YEAR = 2199  # beyond any export; keeps date arithmetic far from year 9999
# Feed name and supply-point role of each quantity of a consumption row.
FEEDS = {
    "consumption_kwh": "consumption",
    "surplus_kwh": "export",
    "generation_kwh": "generation",
    "self_consumption_kwh": None,  # no role fits: linked to the supply point without one
}


class DatadisError(Exception):
    """A Datadis query that gave no data: `reason` is a stable code, the message a sentence a
    person can act on; `from_cache` when it is a remembered failure that was not sent again."""

    def __init__(self, reason: str, message: str, *, from_cache: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.from_cache = reason, message, from_cache


class DatadisLimited(DatadisError):
    """Datadis answered 429: the same query may be asked again at `retry_after` (unix s)."""

    def __init__(self, retry_after: float, message: str, *, from_cache: bool = False) -> None:
        super().__init__("limited", message, from_cache=from_cache)
        self.retry_after = retry_after


# ---------------------------------------------------------------- what Datadis answers


@dataclass(frozen=True, slots=True)
class Supply:
    """A supply point the account may read: `point_type` 1 to 5 (5: households)."""

    cups: str
    distributor_code: str
    distributor: str
    point_type: int
    valid_from: str
    valid_to: str
    address: str
    postal_code: str
    municipality: str
    province: str


@dataclass(frozen=True, slots=True)
class Contract:
    """A supply point's contract: powers in kW, dates as Datadis gives them (`YYYY/MM/DD`)."""

    cups: str
    distributor: str
    access_fare: str
    contracted_power_kw: tuple[float, ...]
    start_date: str
    end_date: str
    self_consumption_type: str | None
    cau: str | None
    partition_coefficient: float | None
    installed_capacity_kw: float | None


@dataclass(frozen=True, slots=True)
class Reading:
    """Energy of one supply point in one interval: `start` in unix seconds (UTC), `length_s`
    3600 or 900, energies in kWh (None: not given), `estimated` for the distributor's
    estimates."""

    cups: str
    start: int
    length_s: int
    consumption_kwh: float
    surplus_kwh: float | None = None
    generation_kwh: float | None = None
    self_consumption_kwh: float | None = None
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that was not read: `line` its line in a file or its position (from 1) in an
    answer, `column` the field at fault, `reason` a stable code."""

    line: int
    column: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Consumption:
    """A parsed curve: its readings by supply point and time, every row not read, and whether
    the answer came from the cache rather than from Datadis."""

    readings: tuple[Reading, ...]
    errors: tuple[RowError, ...]
    from_cache: bool = False


@dataclass(frozen=True, slots=True)
class LabelledRow:
    """A row as labelled by its source, before its hour-ending label is placed in time:
    `end_minute` is the label in minutes after the local midnight of `day` (60 for `01:00`
    or hour 1, 1440 for `24:00`, 1500 for hour 25)."""

    line: int
    cups: str
    day: date
    end_minute: int
    consumption_kwh: float
    surplus_kwh: float | None
    generation_kwh: float | None
    self_consumption_kwh: float | None
    estimated: bool
    time_column: str

    def values(self) -> tuple[float, float | None, float | None, float | None, bool]:
        return (
            self.consumption_kwh,
            self.surplus_kwh,
            self.generation_kwh,
            self.self_consumption_kwh,
            self.estimated,
        )


# ---------------------------------------------------------------- hour-ending labels


def _wall_start(day: date, minute: int, tz: ZoneInfo) -> tuple[int, int] | None:
    """The UTC starts (earlier, later) of local wall time `minute` after midnight of `day`:
    equal when the time happens once, None when the clocks skip it."""
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
    first = int(naive.replace(tzinfo=tz, fold=0).timestamp())
    second = int(naive.replace(tzinfo=tz, fold=1).timestamp())
    if datetime.fromtimestamp(first, tz).replace(tzinfo=None) != naive:
        return None
    return min(first, second), max(first, second)


def _day_bounds(day: date, tz: ZoneInfo) -> tuple[int, int]:
    following = day + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = datetime(following.year, following.month, following.day, tzinfo=tz)
    return int(start.timestamp()), int(end.timestamp())


def _numbered_in_sequence(rows: Sequence[LabelledRow], tz: ZoneInfo, day_min: int) -> bool:
    """Whether a daylight-saving day's rows number its intervals 1..23 or 1..25 rather than
    by the wall clock: only such rows can carry hour 25, or hour 3 without hour 24 in spring."""
    if day_min > 1440:
        return any(r.end_minute > 1440 for r in rows)
    if day_min < 1440 and all(r.end_minute <= day_min for r in rows):
        step = 60 if all(r.end_minute % 60 == 0 for r in rows) else 15
        return any(_wall_start(r.day, r.end_minute - step, tz) is None for r in rows)
    return False


def resolve_labels(
    rows: Sequence[LabelledRow], tz: ZoneInfo, length_s: int
) -> tuple[list[Reading], list[RowError]]:
    """Place hour-ending rows (intervals of `length_s` seconds) at their UTC starts in zone
    `tz`. Two numberings exist on daylight-saving days and both are read, per supply point and
    day: by the wall clock (spring: hour 3 absent; autumn: hour 3 twice, the first the
    earlier) and in sequence (1..23, 1..25). A label that cannot exist on its day, or a second
    row at the same interval with other values, is an error; an identical repeat is dropped."""
    step_min = length_s // 60
    groups: dict[tuple[str, date], list[LabelledRow]] = defaultdict(list)
    for row in rows:
        groups[(row.cups, row.day)].append(row)
    readings: list[Reading] = []
    errors: list[RowError] = []
    for (cups, day), group in groups.items():
        day_start, day_end = _day_bounds(day, tz)
        day_min = (day_end - day_start) // 60
        in_sequence = _numbered_in_sequence(group, tz, day_min)
        seen_label: dict[int, int] = defaultdict(int)
        taken: dict[int, LabelledRow] = {}
        for row in group:
            shown = _label(row.end_minute)
            if row.end_minute <= 0 or row.end_minute % step_min:
                errors.append(
                    RowError(
                        row.line,
                        row.time_column,
                        "bad_hour",
                        f"{shown} is not the end of a {step_min}-minute interval: labels run "
                        f"from {_label(step_min)} to 24:00",
                    )
                )
                continue
            start = _start_of(row, tz, step_min, day_start, day_min, in_sequence, seen_label)
            if isinstance(start, str):
                errors.append(RowError(row.line, row.time_column, "no_such_hour", start))
                continue
            earlier = taken.get(start)
            if earlier is not None:
                if earlier.values() != row.values():
                    errors.append(
                        RowError(
                            row.line,
                            row.time_column,
                            "duplicate",
                            f"{cups} has two different values for {day.isoformat()} {shown} "
                            f"(lines {earlier.line} and {row.line}): keep one",
                        )
                    )
                continue
            taken[start] = row
            readings.append(Reading(cups, start, length_s, *row.values()))
    readings.sort(key=lambda r: (r.cups, r.start))
    return readings, errors


def _start_of(
    row: LabelledRow,
    tz: ZoneInfo,
    step_min: int,
    day_start: int,
    day_min: int,
    in_sequence: bool,
    seen_label: dict[int, int],
) -> int | str:
    """The UTC start of `row`'s interval, or why it cannot exist."""
    day, shown = row.day.isoformat(), _label(row.end_minute)
    if in_sequence:
        if row.end_minute > day_min:
            return f"{day} has {day_min // 60} hours in {tz.key}: there is no {shown}"
        return day_start + (row.end_minute - step_min) * 60
    if row.end_minute > 1440:
        return (
            f"{shown} exists only on the day the clocks go back, numbered 1 to 25; "
            f"{day} in {tz.key} ends at 24:00"
        )
    starts = _wall_start(row.day, row.end_minute - step_min, tz)
    if starts is None:
        return f"{shown} does not exist on {day} in {tz.key}: the clocks skip that hour"
    seen_label[row.end_minute] += 1
    # The repeated hour of the autumn day: its first row is the earlier one.
    return starts[1] if seen_label[row.end_minute] > 1 else starts[0]


def _label(end_minute: int) -> str:
    return f"{end_minute // 60:02d}:{end_minute % 60:02d}"


def parse_day(text: str) -> date | None:
    """A date written `YYYY/MM/DD` or `YYYY-MM-DD` from 2000 on, or None."""
    found = DAY.fullmatch(text.strip())
    if not found:
        return None
    try:
        day = date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return None
    return plausible_day(day)


def plausible_day(day: date) -> date | None:
    """`day` when meter data can have it (2000 to 2199), else None."""
    return day if EARLIEST_YEAR <= day.year <= LATEST_YEAR else None


def check_energy(value: object, what: str) -> float:
    """`value` as kWh: a finite number, not negative, or Refused(`bad_value`)."""
    number = check_value(value, what)
    if number < 0:
        raise Refused("bad_value", f"{what} is {number}: an energy is not negative")
    return number


# ---------------------------------------------------------------- parsing answers


def parse_consumption(answer: object, tz: ZoneInfo, length_s: int = HOUR_S) -> Consumption:
    """Datadis' consumption answer (v2 `{"timeCurve": [...]}` or v1's bare list) as readings
    in UTC, every unreadable row reported with its position and reason."""
    rows = answer.get("timeCurve") if isinstance(answer, dict) else answer
    if not isinstance(rows, list):
        return Consumption((), (RowError(0, "timeCurve", "bad_answer", "no list of rows"),))
    labelled: list[LabelledRow] = []
    errors: list[RowError] = []
    for position, row in enumerate(rows, start=1):
        try:
            labelled.append(_datadis_row(position, row))
        except _RowRefused as exc:
            errors.append(exc.error)
    readings, label_errors = resolve_labels(labelled, tz, length_s)
    return Consumption(tuple(readings), tuple(sorted(errors + label_errors, key=_by_line)))


def _by_line(error: RowError) -> int:
    return error.line


class _RowRefused(Exception):
    def __init__(self, error: RowError) -> None:
        super().__init__(error.message)
        self.error = error


def _datadis_row(position: int, row: object) -> LabelledRow:
    def refuse(column: str, reason: str, message: str) -> _RowRefused:
        return _RowRefused(RowError(position, column, reason, message))

    if not isinstance(row, dict):
        raise refuse("", "bad_row", f"row {position} is not an object")
    for key in ("cups", "date", "time", "consumptionKWh"):
        if key not in row or row[key] is None:
            raise refuse(key, "missing_field", f"row {position} has no {key}")
    cups = row["cups"]
    if not isinstance(cups, str) or not cups.strip():
        raise refuse("cups", "bad_cups", f"row {position}: cups {str(cups)[:30]!r} is no CUPS")
    day = parse_day(row["date"]) if isinstance(row["date"], str) else None
    if day is None:
        raise refuse("date", "bad_date", f"date {str(row['date'])[:20]!r} is not YYYY/MM/DD")
    label = LABEL.fullmatch(row["time"]) if isinstance(row["time"], str) else None
    if label is None or int(label[2]) >= 60:
        raise refuse("time", "bad_hour", f"time {str(row['time'])[:20]!r} is not HH:MM")
    method = row.get("obtainMethod")
    if method not in (None, "Real", "Estimada"):
        raise refuse(
            "obtainMethod",
            "bad_method",
            f"obtainMethod {str(method)[:20]!r} is not Real or Estimada",
        )
    energies: list[float | None] = []
    for key in (
        "consumptionKWh",
        "surplusEnergyKWh",
        "generationEnergyKWh",
        "selfConsumptionEnergyKWh",
    ):
        value = row.get(key)
        try:
            energies.append(None if value is None else check_energy(value, key))
        except Refused as exc:
            raise refuse(key, exc.reason, exc.message) from None
    consumption, surplus, generation, self_consumed = energies
    assert consumption is not None
    return LabelledRow(
        position,
        cups.strip().upper(),
        day,
        int(label[1]) * 60 + int(label[2]),
        consumption,
        surplus,
        generation,
        self_consumed,
        method == "Estimada",
        "time",
    )


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value)


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_supplies(answer: object) -> list[Supply]:
    """Datadis' supplies answer (v2 `{"supplies": [...]}` or v1's list)."""
    rows = answer.get("supplies") if isinstance(answer, dict) else answer
    if not isinstance(rows, list):
        raise DatadisError("bad_answer", "Datadis' list of supplies is not a list")
    found = []
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("cups"), str):
            point_type = _number(row, "pointType")
            found.append(
                Supply(
                    row["cups"].strip().upper(),
                    _text(row, "distributorCode"),
                    _text(row, "distributor"),
                    int(point_type) if point_type is not None else 5,
                    _text(row, "validDateFrom"),
                    _text(row, "validDateTo"),
                    _text(row, "address"),
                    _text(row, "postalCode"),
                    _text(row, "municipality"),
                    _text(row, "province"),
                )
            )
    return found


def parse_contract(answer: object) -> Contract:
    """Datadis' contract answer (v2 `{"contract": [...]}` or v1's list): its first contract."""
    rows = answer.get("contract") if isinstance(answer, dict) else answer
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        raise DatadisError("bad_answer", "Datadis answered no contract for this supply point")
    row = rows[0]
    powers = row.get("contractedPowerkW")
    return Contract(
        _text(row, "cups").upper(),
        _text(row, "distributor"),
        # The documentation spells it both ways.
        _text(row, "accessFare") or _text(row, "accesFare"),
        tuple(
            float(p)
            for p in (powers if isinstance(powers, list) else [])
            if isinstance(p, int | float) and not isinstance(p, bool)
        ),
        _text(row, "startDate"),
        _text(row, "endDate"),
        row.get("selfConsumptionTypeCode") or None,
        row.get("cau") or None,
        _number(row, "partitionCoefficient"),
        _number(row, "installedCapacityKW"),
    )


def _distributor_errors(answer: object) -> list[str]:
    errors = answer.get("distributorError") if isinstance(answer, dict) else None
    return [
        f"{_text(e, 'distributorName') or _text(e, 'distributorCode')}: "
        f"{_text(e, 'errorDescription')} (code {_text(e, 'errorCode')})"
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    ]


# ---------------------------------------------------------------- months


def month_text(month: date | str) -> str:
    """A month as Datadis writes it, `YYYY/MM`, from a date in it or that text itself."""
    return month.strftime("%Y/%m") if isinstance(month, date) else month


def parse_month(text: str) -> tuple[int, int]:
    """`YYYY/MM` as (year, month), or ValueError saying the shape."""
    found = MONTH.fullmatch(text)
    if not found or not 1 <= int(found[2]) <= 12:
        raise ValueError(f"month {text!r} must be written YYYY/MM, as 2024/03")
    return int(found[1]), int(found[2])


def check_months(first_month: str, last_month: str, now: float) -> None:
    """Refuse (DatadisError `bad_months`) a range Datadis cannot answer: reversed, in the
    future, or starting more than 24 months before the current one."""
    first, last = parse_month(first_month), parse_month(last_month)
    today = datetime.fromtimestamp(now, UTC).date()
    current = (today.year, today.month)
    if last < first:
        raise DatadisError("bad_months", f"{last_month} is before {first_month}")
    if last > current:
        raise DatadisError("bad_months", f"{last_month} is in the future")
    if (current[0] - first[0]) * 12 + current[1] - first[1] > MONTHS_BACK:
        raise DatadisError(
            "bad_months",
            f"{first_month} is more than two years back: Datadis keeps {MONTHS_BACK} months",
        )


# ---------------------------------------------------------------- the client


@dataclass
class _Token:
    value: str
    expires: float


def token_expiry(token: str, now: float) -> float:
    """When bearer `token` expires (unix s): its JWT `exp`, else `TOKEN_FALLBACK_S` from now."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims["exp"]
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            return float(exp)
    except (IndexError, ValueError, KeyError, TypeError):
        pass
    return now + TOKEN_FALLBACK_S


class DatadisClient:
    """Datadis' private API at `base_url` for the account `username` (a NIF). Every query is
    asked at most once per 24 h: its answer, or its failure, is kept in `cache_dir` with the
    time it was asked (`clock`, unix s) and given back from there. One attempt per call, no
    retries; the token is reused until it expires or is refused, then one new login. `http`
    replaces the client's own connection pool (tests); each request waits at most
    `timeout_s` seconds."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        cache_dir: Path,
        clock: Callable[[], float] = time.time,
        http: httpx.Client | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.base_url = (base_url or DATADIS_URL).rstrip("/")
        self.username = username
        self._password = password
        self.cache_dir = cache_dir
        self.clock = clock
        self.timeout_s = timeout_s
        self._token: _Token | None = None
        self._own_http = http is None
        self.http = httpx.Client(timeout=timeout_s) if http is None else http
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DatadisClient({self.base_url!r}, {self.username!r})"

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> DatadisClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -------------------------------------------------------------- queries

    def supplies(self) -> list[Supply]:
        """The supply points this account may read."""
        answer, _ = self._query("get-supplies-v2", {})
        return parse_supplies(answer)

    def contract_detail(self, cups: str, distributor_code: str) -> Contract:
        """The contract of supply point `cups`."""
        answer, _ = self._query(
            "get-contract-detail-v2", {"cups": cups, "distributorCode": distributor_code}
        )
        return parse_contract(answer)

    def consumption(
        self,
        cups: str,
        distributor_code: str,
        first_month: date | str,
        last_month: date | str,
        *,
        tz: ZoneInfo | str = "Europe/Madrid",
        quarter_hourly: bool = False,
        point_type: int = 5,
    ) -> Consumption:
        """The curve of `cups` from `first_month` to `last_month` (a date in the month, or
        `YYYY/MM`; both included), hourly or quarter-hourly, placed in UTC by the supply's
        zone `tz` (Europe/Madrid, or Atlantic/Canary on the Canaries: the CUPS does not
        tell)."""
        place = zone(tz) if isinstance(tz, str) else tz
        first_month, last_month = month_text(first_month), month_text(last_month)
        check_months(first_month, last_month, self.clock())
        answer, from_cache = self._query(
            "get-consumption-data-v2",
            {
                "cups": cups,
                "distributorCode": distributor_code,
                "startDate": first_month,
                "endDate": last_month,
                "measurementType": "1" if quarter_hourly else "0",
                "pointType": str(point_type),
            },
        )
        parsed = parse_consumption(answer, place, QUARTER_S if quarter_hourly else HOUR_S)
        return Consumption(parsed.readings, parsed.errors, from_cache)

    # -------------------------------------------------------------- the limits

    def _cache_file(self, path: str, params: Mapping[str, str]) -> tuple[Path, str]:
        query = f"{path}?{urlencode(sorted(params.items()))}"
        key = hashlib.sha256(f"{self.username}\n{self.base_url}\n{query}".encode()).hexdigest()
        return self.cache_dir / f"{key}.json", query

    def _query(self, path: str, params: Mapping[str, str]) -> tuple[object, bool]:
        """Datadis' answer to GET `path` with `params`, and whether it came from the cache."""
        file, query = self._cache_file(path, params)
        now = self.clock()
        kept = _read_cache(file)
        if kept is not None and now < kept["asked_at"] + QUERY_PAUSE_S:
            if kept["ok"]:
                return kept["answer"], True
            again = kept["asked_at"] + QUERY_PAUSE_S
            message = (
                f"{query} failed at {_when(kept['asked_at'])} ({kept['message']}); Datadis "
                f"refuses a repeat within 24 h, so it may be asked again after {_when(again)}"
            )
            if kept["reason"] == "limited":
                raise DatadisLimited(
                    max(again, kept.get("retry_after", again)), message, from_cache=True
                )
            raise DatadisError("asked_recently", message, from_cache=True)
        try:
            answer = self._send(path, params)
        except DatadisLimited as exc:
            _write_cache(file, query, now, None, exc, retry_after=exc.retry_after)
            raise
        except DatadisError as exc:
            if exc.reason not in NOT_REMEMBERED:
                _write_cache(file, query, now, None, exc)
            raise
        _write_cache(file, query, now, answer, None)
        return answer, False

    def _send(self, path: str, params: Mapping[str, str]) -> object:
        response = self._get(path, params, self._bearer())
        if response.status_code == 401:
            self._token = None  # refused before its time: one new login, one new attempt
            response = self._get(path, params, self._bearer())
            if response.status_code == 401:
                raise DatadisError(
                    "unauthorized", "Datadis refused a fresh token: check the account's access"
                )
        self._check(response, path)
        try:
            answer: object = response.json()
        except ValueError:
            raise DatadisError("bad_answer", f"Datadis' answer to {path} is not JSON") from None
        problems = _distributor_errors(answer)
        if problems:
            data = (
                answer.get("supplies", answer.get("contract", answer.get("timeCurve")))
                if isinstance(answer, dict)
                else answer
            )
            if not data:
                raise DatadisError("distributor_failed", "; ".join(problems))
            log.warning("Datadis %s: partly answered: %s", path, "; ".join(problems))
        return answer

    def _get(self, path: str, params: Mapping[str, str], token: str) -> httpx.Response:
        try:
            return self.http.get(
                f"{self.base_url}{API}/{path}",
                params=dict(params),
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=self.timeout_s,
            )
        except httpx.TimeoutException:
            # The server may have counted it: remembered as a failure.
            raise DatadisError(
                "timed_out", f"Datadis did not answer {path} within {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise DatadisError(
                "unreachable", f"Datadis cannot be reached at {self.base_url}: {type(exc).__name__}"
            ) from None

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status == 429:
            wait = response.headers.get("retry-after", "")
            now = self.clock()
            retry = now + float(wait) if wait.isdigit() else now + QUERY_PAUSE_S
            raise DatadisLimited(
                retry,
                f"Datadis refused {what}: asked within the last 24 h; ask again after "
                f"{_when(retry)}",
            )
        if not response.is_success:
            detail = response.text[:200].replace("\n", " ")
            raise DatadisError("refused", f"Datadis answered {what} with HTTP {status}: {detail}")

    def _bearer(self) -> str:
        now = self.clock()
        if self._token is not None and now < self._token.expires - TOKEN_MARGIN_S:
            return self._token.value
        try:
            response = self.http.post(
                f"{self.base_url}{LOGIN_PATH}",
                data={"username": self.username, "password": self._password},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise DatadisError(
                "unreachable", f"Datadis' login cannot be reached: {type(exc).__name__}"
            ) from None
        if response.status_code in (401, 403):
            raise DatadisError(
                "login_refused",
                f"Datadis refused the login of {self.username}: check the NIF and password",
            )
        try:
            self._check(response, "the login")
        except DatadisError as exc:
            raise DatadisError("login_failed", exc.message) from None
        token = response.text.strip().strip('"')
        if not token or any(c.isspace() for c in token):
            raise DatadisError("login_failed", "Datadis' login answered no token")
        self._token = _Token(token, token_expiry(token, now))
        log.info("logged in to Datadis as %s", self.username)
        return token


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _read_cache(file: Path) -> dict[str, Any] | None:
    try:
        kept = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no entry, or a damaged one: as if never asked
    if not isinstance(kept, dict) or not isinstance(kept.get("asked_at"), int | float):
        return None
    if kept.get("ok") is True and "answer" in kept:
        return kept
    if kept.get("ok") is False and isinstance(kept.get("reason"), str):
        kept.setdefault("message", "no reason kept")
        return kept
    return None


def _write_cache(
    file: Path,
    query: str,
    asked_at: float,
    answer: object,
    failure: DatadisError | None,
    *,
    retry_after: float | None = None,
) -> None:
    entry: dict[str, Any] = {"query": query, "asked_at": asked_at, "ok": failure is None}
    if failure is None:
        entry["answer"] = answer
    else:
        entry.update(reason=failure.reason, message=failure.message)
        if retry_after is not None:
            entry["retry_after"] = retry_after
    temporary = file.with_suffix(".tmp")
    # Consumption curves are personal data: readable by this user only.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(entry, out)
    os.replace(temporary, file)


# ---------------------------------------------------------------- storing


def consumption_samples(readings: Iterable[Reading], now: float) -> list[Sample]:
    """The samples of `readings`: node = the CUPS, one feed per quantity given, at the
    interval's start (UTC); Refused at the first that no store takes (nothing is kept)."""
    found: list[Sample] = []
    for r in readings:
        node = check_name(r.cups, "supply point")
        t = check_time(r.start, now)
        for name, value in (
            ("consumption_kwh", r.consumption_kwh),
            ("surplus_kwh", r.surplus_kwh),
            ("generation_kwh", r.generation_kwh),
            ("self_consumption_kwh", r.self_consumption_kwh),
        ):
            if value is not None:
                found.append(Sample(node, name, t, check_energy(value, name), r.estimated))
    return found


def store_consumption(
    store: MonitoringStore,
    readings: Sequence[Reading],
    *,
    source: str = "datadis",
    now: float | None = None,
) -> Written:
    """Store `readings` in one write (re-importing replaces, never duplicates); their feeds
    become energies in kWh, linked to their supply point when the store knows it. Refused
    (nothing stored) when a reading is not storable; the caller counts it under `source`."""
    at = time.time() if now is None else now
    samples = consumption_samples(readings, at)
    cups_list = sorted({s.node for s in samples})
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(supply_point.c.id, supply_point.c.community_id).where(
                supply_point.c.id.in_(cups_list)
            )
        )
        known = {str(cups): str(community_id) for cups, community_id in rows}
    nodes = {n["name"]: n for n in store.nodes()}
    for cups, community_id in known.items():
        if cups not in nodes or nodes[cups]["community_id"] is None:
            # Before writing: daily buckets follow the community's local days.
            store.set_node(cups, community_id=community_id)
    written = store.write(samples, now=at)
    for cups, name in sorted({(s.node, s.name) for s in samples}):
        found = store.feed_named(cups, name)
        assert found is not None
        wanted: dict[str, Any] = {"kind": ENERGY, "unit": "kWh"}
        if cups in known:
            wanted.update(supply_point_id=cups, role=FEEDS[name])
        if any(getattr(found, key) != value for key, value in wanted.items()):
            store.set_feed(found.id, **wanted)
    log.info("%s: stored %d samples, replaced %d", source, written.stored, written.replaced)
    return written


@dataclass(frozen=True, slots=True)
class SupplyFetched:
    """What fetching one supply point did: samples stored and replaced, whether Datadis was
    not asked (its answer, or failure, came from the cache), refusals counted, and the
    sentence saying why nothing came when the query failed."""

    cups: str
    stored: int = 0
    replaced: int = 0
    from_cache: bool = False
    refused: int = 0
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class FetchSummary:
    supplies: tuple[SupplyFetched, ...]

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.supplies)

    @property
    def replaced(self) -> int:
        return sum(s.replaced for s in self.supplies)

    @property
    def skipped_by_cache(self) -> int:
        return sum(s.from_cache for s in self.supplies)

    @property
    def refused(self) -> int:
        return sum(s.refused for s in self.supplies)


def fetch_into_store(
    client: DatadisClient,
    store: MonitoringStore,
    cups_list: Iterable[str],
    first_month: date | str,
    last_month: date | str,
    tz: ZoneInfo | str = "Europe/Madrid",
    *,
    quarter_hourly: bool = False,
) -> FetchSummary:
    """Fetch the curves of `cups_list` (empty: every supply point of the account) from
    `first_month` to `last_month` (a date in the month, or `YYYY/MM`) into `store` (the
    service's daily job, `petra monitor datadis fetch`): each supply point on its own, every
    refusal counted with `store.refuse("datadis", ...)`. DatadisError (`bad_months`) when
    Datadis cannot answer those months at all: nothing is asked."""
    source = "datadis"
    first_month, last_month = month_text(first_month), month_text(last_month)
    try:
        check_months(first_month, last_month, client.clock())
    except ValueError as exc:
        raise DatadisError("bad_months", str(exc)) from None
    wanted = [c.strip().upper() for c in cups_list]
    try:
        supplies = {s.cups: s for s in client.supplies()}
    except DatadisError as exc:
        store.refuse(source, exc.reason, exc.message)
        return FetchSummary(
            tuple(
                SupplyFetched(c, from_cache=exc.from_cache, refused=1, problem=exc.message)
                for c in wanted
            )
        )
    done: list[SupplyFetched] = []
    for cups in wanted or sorted(supplies):
        supply = supplies.get(cups)
        if supply is None:
            message = f"{cups} is not among the supply points this Datadis account may read"
            store.refuse(source, "unknown_supply", message)
            done.append(SupplyFetched(cups, refused=1, problem=message))
            continue
        try:
            curve = client.consumption(
                supply.cups,
                supply.distributor_code,
                first_month,
                last_month,
                tz=tz,
                quarter_hourly=quarter_hourly,
                point_type=supply.point_type,
            )
        except DatadisError as exc:
            store.refuse(source, exc.reason, exc.message)
            done.append(
                SupplyFetched(cups, from_cache=exc.from_cache, refused=1, problem=exc.message)
            )
            continue
        for error in curve.errors:
            store.refuse(source, error.reason, f"{cups} row {error.line}: {error.message}")
        try:
            written = store_consumption(store, curve.readings, source=source)
        except Refused as exc:
            store.refuse(source, exc.reason, f"{cups}: {exc.message}")
            refused = len(curve.errors) + 1
            done.append(SupplyFetched(cups, 0, 0, curve.from_cache, refused, exc.message))
            continue
        done.append(
            SupplyFetched(
                cups, written.stored, written.replaced, curve.from_cache, len(curve.errors)
            )
        )
    return FetchSummary(tuple(done))


class DailyFetch:
    """The service's daily Datadis job: once a day, from local hour `hour` on, the curves of
    the last month and this one (yesterday's hours arrive the next day) for `supplies` (empty:
    all the account's). `due()` is called by a ticker; the client's cache keeps a restart
    within the day from asking Datadis again."""

    def __init__(
        self,
        client: DatadisClient,
        store: MonitoringStore,
        supplies: Sequence[str],
        hour: int,
        tz: ZoneInfo,
    ) -> None:
        self.client, self.store, self.supplies = client, store, tuple(supplies)
        self.hour, self.tz = hour, tz
        self.last_day: date | None = None
        self.stored = 0  # samples stored since start, for the metrics

    def tick(self) -> None:
        self.due()

    def due(self) -> FetchSummary | None:
        """Fetch if today's fetch is due: its summary, or None when it was not."""
        now = datetime.fromtimestamp(self.client.clock(), self.tz)
        if now.hour < self.hour or self.last_day == now.date():
            return None
        self.last_day = now.date()
        this_month = now.date().replace(day=1)
        last_month = (this_month - timedelta(days=1)).replace(day=1)
        try:
            summary = fetch_into_store(
                self.client, self.store, self.supplies, last_month, this_month, self.tz
            )
        except DatadisError as exc:
            self.store.refuse("datadis", exc.reason, exc.message)
            return None
        self.stored += summary.stored
        log.info(
            "Datadis: %d samples stored, %d replaced, %d refused from %d supply point(s)",
            summary.stored,
            summary.replaced,
            summary.refused,
            len(summary.supplies),
        )
        return summary
