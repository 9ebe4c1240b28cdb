"""`petra community ...`: an installation's sharing agreements on the monitoring store, set by
hand or optimised under the rules members agree on and revised; the Spanish distributor's
coefficient file and its validator; the monthly settlement; Italy's incentives; and the honest
evaluation of every strategy (docs/cli.md, `petra community`)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from petra.console import err, fail, warn, write_private
from petra.monitor_cli import DEFAULT_STORE, Store, opened
from petra.vocabulary import elide_all, json_option

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from community import Comparison, Problem, Rules, Tariff
    from monitoring import Agreement, InstallationHours, MonitoringStore

out = Console(soft_wrap=True)

community_app = typer.Typer(
    help="Sharing agreements: coefficients and their optimiser, files, settlement, incentives.",
    no_args_is_help=True,
)
agreement_app = typer.Typer(
    help="An installation's sharing agreements: set by hand, optimised, revised.",
    no_args_is_help=True,
)
community_app.add_typer(agreement_app, name="agreement")

Json = Annotated[bool, json_option()]
HOUR_S = 3_600
TRAINING_MONTHS = 12  # an agreement is optimised on the year of history before it starts
THIN = 0.9  # less history than this share of the training hours is too little to optimise on


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day as YYYY-MM-DD") from None


def _month(text: str) -> date:
    try:
        year, month = text.split("-")
        return date(int(year), int(month), 1)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a month as YYYY-MM") from None


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise typer.BadParameter(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


InstallationOption = Annotated[str, typer.Option("--installation", help="The installation's id.")]
FirstDay = Annotated[
    date,
    typer.Option("--first-day", parser=_day, metavar="DAY", help="Its first day, YYYY-MM-DD."),
]
EndDay = Annotated[
    date | None,
    typer.Option(
        "--end-day",
        parser=_day,
        metavar="DAY",
        help="The day after its last, YYYY-MM-DD (instead of --months).",
    ),
]
Objective = Annotated[
    str,
    typer.Option(
        "--objective",
        parser=_one_of("energy", "money"),
        help="What to maximise: energy the community uses itself, or its money at the "
        "community's prices.",
    ),
]
RulesFile = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        exists=True,
        dir_okay=False,
        help="A TOML file of the rules members agreed on (docs/cli.md).",
    ),
]
EstimateFile = Annotated[
    Path | None,
    typer.Option(
        "--estimate",
        exists=True,
        dir_okay=False,
        help="A CSV file supply_point,profile,annual_kwh: consumption estimated for the "
        "supply points it lists.",
    ),
]
Latitude = Annotated[
    float | None,
    typer.Option(
        min=-90, max=90, help="Where the plant is, for generation estimated without history."
    ),
]
Longitude = Annotated[
    float | None, typer.Option(min=-180, max=180, help="Where the plant is (with --latitude).")
]
Save = Annotated[bool, typer.Option("--save", help="Store the agreement (else only shown).")]


# ---------------------------------------------------------------- the store's records


@dataclass(frozen=True, slots=True)
class Installation:
    """An installation as the store records it, with what commands need of its community."""

    id: str
    community_id: str
    peak_kw: float
    timezone: str
    currency: str
    tariff: Tariff
    co2_g_per_kwh: float
    supply_points: tuple[str, ...]  # its consumption supply points, by id


def _installation(database: MonitoringStore, installation_id: str) -> Installation:
    """The installation `installation_id`, or exit with a sentence."""
    from community import Tariff
    from monitoring import installations_of, supply_points_of

    for community in database.communities():
        for record in installations_of(database, community["id"]):
            if record["id"] != installation_id:
                continue
            points = supply_points_of(database, community["id"])
            return Installation(
                installation_id,
                community["id"],
                float(record["peak_kw"]),
                community["timezone"],
                community["currency"],
                Tariff(community["price_micro_per_kwh"], community["export_micro_per_kwh"]),
                float(community["co2_g_per_kwh"]),
                tuple(
                    p["id"]
                    for p in points
                    if p["installation_id"] == installation_id and p["kind"] == "consumption"
                ),
            )
    fail(
        f"no installation {installation_id}: import it with the master data "
        "(`petra monitor import members`)"
    )


def _local_day(t: int, timezone: str) -> date:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(t, ZoneInfo(timezone)).date()


def _months_later(day: date, months: int) -> date:
    """The same day `months` later (the month's last day when it is shorter)."""
    import calendar

    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _end_of(first_day: date, months: int | None, end_day: date | None, default: int) -> date:
    if months is not None and end_day is not None:
        fail("give --months or --end-day, not both")
    end = end_day or _months_later(first_day, months or default)
    if end <= first_day:
        fail(f"--end-day {end} is not after --first-day {first_day}")
    return end


def _period(first_day: date, end_day: date, timezone: str) -> NDArray[np.int64]:
    """The unix start of every real hour from `first_day`'s local midnight to `end_day`'s."""
    import numpy as np

    from monitoring import local_midnight

    return np.arange(local_midnight(first_day, timezone), local_midnight(end_day, timezone), HOUR_S)


def _years(period: NDArray[np.int64], timezone: str) -> list[tuple[int, NDArray[np.bool_]]]:
    """The calendar years `period` touches, each with which of its hours (hour_starts) lie in
    the period; their hours in year order are the period's."""
    import numpy as np

    from community import hour_starts

    first, last = _local_day(int(period[0]), timezone), _local_day(int(period[-1]), timezone)
    years = []
    for year in range(first.year, last.year + 1):
        inside = np.isin(hour_starts(year, timezone), period)
        if inside.any():
            years.append((year, inside))
    assert sum(int(m.sum()) for _, m in years) == len(period), "hours off the year's grid"
    return years


def _on_period(
    hours: InstallationHours, period: NDArray[np.int64], timezone: str
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """`hours`' data moved a year on onto `period` (community.align_to_year, weekdays kept):
    generation (hours,), consumption (hours, points), and 1 where the year before had data
    in the store's window (0 where it lay outside)."""
    import numpy as np

    from community import align_to_year, hour_starts

    generation, consumption, known = [], [], []
    for year, inside in _years(period, timezone):
        source = hour_starts(year - 1, timezone)
        at = np.searchsorted(hours.hour_starts, source)
        found = at < len(hours.hour_starts)
        found[found] = hours.hour_starts[at[found]] == source[found]
        source_generation = np.zeros(len(source))
        source_consumption = np.zeros((len(source), len(hours.supply_points)))
        source_generation[found] = hours.generation[at[found]]
        source_consumption[found] = hours.consumption[at[found]]
        generation.append(align_to_year(source_generation, year - 1, year, timezone)[inside])
        consumption.append(align_to_year(source_consumption, year - 1, year, timezone)[inside])
        known.append(align_to_year(found.astype(np.float64), year - 1, year, timezone)[inside])
    return np.concatenate(generation), np.concatenate(consumption), np.concatenate(known)


# ---------------------------------------------------------------- input files


RULE_KEYS = ("floor", "minimum", "maximum", "fixed", "poverty", "poverty_reserve")


def _read_rules(path: Path | None) -> Rules:
    """The rules of a TOML file (none without one); a wrong key or value is one sentence."""
    import difflib
    import tomllib

    from community import Rules

    if path is None:
        return Rules()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read the rules {path}: {exc.strerror}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        fail(f"{path} is not TOML: {exc}")
    for key in table:
        if key not in RULE_KEYS:
            nearest = difflib.get_close_matches(key, RULE_KEYS, n=1)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
            fail(f"{path}: {key!r} is not a rule (the rules: {', '.join(RULE_KEYS)}){hint}")

    def share(key: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            fail(f"{path}: {key} is {value!r}, not a share from 0 to 1")
        return float(value)

    def shares(key: str) -> dict[str, float]:
        value = table.get(key, {})
        if not isinstance(value, dict):
            fail(f'{path}: {key} is a table, [{key}] with lines "CUPS" = share')
        return {str(point): share(f"{key}.{point}", v) for point, v in value.items()}

    poverty = table.get("poverty", [])
    if not isinstance(poverty, list) or not all(isinstance(p, str) for p in poverty):
        fail(f'{path}: poverty is a list of supply points, ["CUPS", ...]')
    return Rules(
        floor=share("floor", table.get("floor", 0.0)),
        minimum=shares("minimum"),
        maximum=shares("maximum"),
        fixed=shares("fixed"),
        poverty=frozenset(poverty),
        poverty_reserve=share("poverty_reserve", table.get("poverty_reserve", 0.0)),
    )


def _csv_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Each row of a CSV file with (at least) `columns` in its header, with its line."""
    import csv
    import io

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    delimiter = ";" if ";" in text.partition("\n")[0] else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
        fail(f"{path}: the header needs the columns {', '.join(columns)} ({missing[0]} is missing)")
    for row in reader:
        yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}


def _number(text: str, path: Path, line: int, what: str) -> float:
    import math

    try:
        value = float(text.replace(",", "."))
    except ValueError:
        fail(f"{path} line {line}: {what} {text!r} is not a number")
    if not math.isfinite(value):
        fail(f"{path} line {line}: {what} {text!r} is not a number")
    return value


def _read_estimates(path: Path, points: Sequence[str]) -> dict[str, tuple[str, float]]:
    """Supply point -> (profile, annual kWh) from an estimate file."""
    from community import PROFILES

    estimates: dict[str, tuple[str, float]] = {}
    for line, row in _csv_rows(path, ("supply_point", "profile", "annual_kwh")):
        point, profile = row["supply_point"], row["profile"].lower()
        if point not in points:
            fail(f"{path} line {line}: {point!r} is not a consumption supply point of it")
        if profile not in PROFILES:
            fail(f"{path} line {line}: profile {profile!r} is not one of {', '.join(PROFILES)}")
        annual = _number(row["annual_kwh"], path, line, "annual_kwh")
        if annual < 0:
            fail(f"{path} line {line}: annual_kwh {annual:g} is negative")
        estimates[point] = (profile, annual)
    return estimates


def _read_shares(path: Path) -> dict[str, float]:
    """Supply point -> share from a shares file; the shares must sum to 1."""
    shares = {
        row["supply_point"]: _number(row["share"], path, line, "share")
        for line, row in _csv_rows(path, ("supply_point", "share"))
    }
    if not shares:
        fail(f"{path} lists no supply point")
    if any(s < 0 for s in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
        fail(f"{path}: shares are 0 or more and sum to 1, these sum to {sum(shares.values()):g}")
    return shares


def _read_zonal_prices(path: Path, timezone: str) -> dict[int, float]:
    """Hour start -> zonal price (EUR/MWh) from a CSV file of (hour, price) rows: the hour as
    unix seconds or ISO 8601 (local time of the community when it has no offset)."""
    import csv
    from zoneinfo import ZoneInfo

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    delimiter = ";" if lines and ";" in lines[0] else ","
    prices: dict[int, float] = {}
    for line, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
        if not row or len(row) < 2:
            continue
        hour, price = row[0].strip(), row[1].strip()
        if hour.isdigit():
            t = int(hour)
        else:
            try:
                moment = datetime.fromisoformat(hour)
            except ValueError:
                if line == 1:
                    continue  # a header
                fail(f"{path} line {line}: {hour!r} is not an hour (unix seconds or ISO 8601)")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=ZoneInfo(timezone))
            t = int(moment.timestamp())
        prices[t - t % HOUR_S] = _number(price, path, line, "price")
    return prices


# ---------------------------------------------------------------- training data


@dataclass(frozen=True, slots=True, eq=False)
class Training:
    """What an agreement is optimised on: the problem over the agreement's hours, and where
    each part came from ("history" or "estimate"), by supply point and for generation."""

    problem: Problem
    period: NDArray[np.int64]
    sources: dict[str, str]
    generation_source: str


def _training(
    database: MonitoringStore,
    site: Installation,
    first_day: date,
    end_day: date,
    objective: str,
    estimate: Path | None,
    latitude: float | None,
    longitude: float | None,
) -> Training:
    """The 12 months of history before `first_day` moved onto the agreement's hours, the
    supply points `estimate` lists estimated from their profile, and generation estimated
    from the installation's peak power where its history is thin; exit with a sentence
    when history is thin and nothing stands in for it."""
    import numpy as np

    from community import MONEY, Problem, estimate_hourly, money_weights
    from monitoring import AgreementError, installation_hours, local_midnight

    period = _period(first_day, end_day, site.timezone)
    window = (
        local_midnight(_months_later(first_day, -TRAINING_MONTHS), site.timezone),
        local_midnight(first_day, site.timezone),
    )
    try:
        history = installation_hours(database, site.id, *window)
    except AgreementError as exc:
        fail(exc.message)
    points = history.supply_points
    if not points:
        fail(f"installation {site.id} has no consumption supply point to share among")
    estimates = _read_estimates(estimate, points) if estimate is not None else {}
    window_hours = len(history.hour_starts)
    thin = [
        f"{point} ({1 - missing / window_hours:.0%})"
        for point, missing in zip(points, history.missing_consumption_hours, strict=True)
        if point not in estimates and missing > (1 - THIN) * window_hours
    ]
    if thin:
        named = ", ".join(thin[:5]) + (f" and {len(thin) - 5} more" if len(thin) > 5 else "")
        fail(
            f"too little history in the 12 months before {first_day} for {named}: "
            "pass --estimate with a CSV file supply_point,profile,annual_kwh for them"
        )
    generation, consumption, _ = _on_period(history, period, site.timezone)
    years = _years(period, site.timezone)
    for n, point in enumerate(points):
        if point in estimates:
            profile, annual = estimates[point]
            consumption[:, n] = np.concatenate(
                [estimate_hourly(profile, annual, y, site.timezone)[m] for y, m in years]
            )
    generation_source = "history"
    if history.missing_generation_hours > (1 - THIN) * window_hours:
        if latitude is None or longitude is None:
            fail(
                f"too little generation history in the 12 months before {first_day}: pass "
                "--latitude and --longitude to estimate it from the installation's peak power"
            )
        generation = _estimated_generation(site, years, latitude, longitude)
        generation_source = "estimate"
    weights = money_weights([site.tariff] * len(points)) if objective == MONEY else None
    return Training(
        Problem(points, generation, consumption, weights),
        period,
        {p: "estimate" if p in estimates else "history" for p in points},
        generation_source,
    )


def _estimated_generation(
    site: Installation,
    years: list[tuple[int, NDArray[np.bool_]]],
    latitude: float,
    longitude: float,
) -> NDArray[np.float64]:
    """The installation's peak kW times a year of PV kWh per kWp at its place, on the period."""
    import numpy as np

    from simulation import pv_year_kwh_per_kwp

    return np.concatenate(
        [
            site.peak_kw * np.asarray(pv_year_kwh_per_kwp(y, latitude, longitude, site.timezone))[m]
            for y, m in years
        ]
    )


# ---------------------------------------------------------------- output


STRATEGY_NAMES = {
    "equal": "equal",
    "by_consumption": "by consumption",
    "best_static": "best static",
    "optimised": "optimised",
    "dynamic": "dynamic",
}


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _comparison_json(comparison: Comparison) -> list[dict[str, Any]]:
    rows = []
    for r in comparison.results:
        row: dict[str, Any] = {"strategy": r.strategy}
        for name, objective, totals in (
            ("in_sample", r.in_sample_objective, r.in_sample),
            ("out_of_sample", r.out_of_sample_objective, r.out_of_sample),
        ):
            row[name] = (
                None
                if totals is None or objective is None
                else {
                    "objective": objective,
                    "self_consumed_kwh": totals.self_consumed_kwh,
                    "self_consumption_rate": totals.self_consumption_rate,
                    "self_sufficiency_rate": totals.self_sufficiency_rate,
                    "members": [
                        {
                            "supply_point": point,
                            "consumption_kwh": m.consumption_kwh,
                            "allocated_kwh": m.allocated_kwh,
                        }
                        for point, m in zip(comparison.members, totals.members, strict=True)
                    ],
                }
            )
        rows.append(row)
    return rows


def _table(first: str, *numbers: str, title: str | None = None, words: Sequence[str] = ()) -> Table:
    """A table whose first column names a row, the next ones hold figures and the last ones
    (`words`) text."""
    table = Table(first, title=title)
    for header in numbers:
        table.add_column(header, justify="right")
    for header in words:
        table.add_column(header)
    return table


def _figure(value: float, objective: str) -> str:
    if math.isnan(value):  # a rule cost when the other rules cannot hold without that rule
        return "infeasible"
    return f"{value:,.2f}" if objective == "money" else f"{value:,.1f}"


def _comparison_table(comparison: Comparison, objective: str, currency: str) -> Table:
    """Each strategy's objective in sample (and out of sample), and its rates on the data that
    judges it honestly: out of sample when there is a test period."""
    unit = currency if objective == "money" else "kWh"
    tested = all(
        r.out_of_sample is not None and r.out_of_sample_objective is not None
        for r in comparison.results
    )
    if tested:
        headers: tuple[str, ...] = ("in sample", "out of sample", "self-cons.", "self-suff.")
        title = f"Strategies: the community's {objective} ({unit}); rates out of sample"
    else:
        headers = (unit, "self-consumption", "self-sufficiency")
        title = f"Strategies: the community's {objective} ({unit})"
    table = _table("strategy", *headers, title=title)
    for r in comparison.results:
        judged = r.out_of_sample if tested and r.out_of_sample is not None else r.in_sample
        figures = [_figure(r.in_sample_objective, objective)]
        if tested and r.out_of_sample_objective is not None:
            figures.append(_figure(r.out_of_sample_objective, objective))
        table.add_row(
            STRATEGY_NAMES.get(r.strategy, r.strategy),
            *figures,
            _rate(judged.self_consumption_rate),
            _rate(judged.self_sufficiency_rate),
        )
    return table


@contextmanager
def _progress(stages: int) -> Iterator[Callable[[str], None]]:
    """Rich progress on standard error, a stage at a time: call the function with each
    stage's description as it starts."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn())
    with Progress(
        *columns, MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("starting", total=stages)
        begun = False

        def stage(description: str) -> None:
            nonlocal begun
            if begun:
                progress.advance(task)
            begun = True
            progress.update(task, description=description)

        yield stage


# ---------------------------------------------------------------- agreements


@agreement_app.command("list")
def agreement_list(
    community: Annotated[
        str | None,
        typer.Option("--community", help="The community whose agreements to list (default: all)."),
    ] = None,
    installation: Annotated[
        str | None,
        typer.Option("--installation", help="The installation's id: only its agreements."),
    ] = None,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Every agreement, newest first: its kind, period, objective and members."""
    from monitoring import agreements_of

    with opened(store) as database:
        if installation is not None:
            site = _installation(database, installation)
            if community is not None and community != site.community_id:
                fail(f"installation {installation} is in community {site.community_id}")
            communities = [site.community_id]
        elif community is not None:
            if database.community(community) is None:
                fail(f"no community {community}: add it with `petra monitor community add`")
            communities = [community]
        else:
            communities = [c["id"] for c in database.communities()]
        found = [a for c in communities for a in agreements_of(database, c, installation)]
    if as_json:
        out.print_json(json.dumps([_agreement_json(a) for a in found]))
        return
    if not found:
        out.print("no agreements: set one with `petra community agreement set` or optimise one")
        return
    table = Table("id", "installation", "kind", "first day", "end day", "objective", "members")
    for a in found:
        table.add_row(
            str(a.id),
            a.installation_id,
            a.kind,
            str(a.first_day),
            "open" if a.end_day is None else str(a.end_day),
            a.objective or "by hand",
            str(len(a.supply_points)),
        )
    out.print(table)


def _agreement_json(a: Agreement) -> dict[str, Any]:
    from monitoring import rules_to_json

    return {
        "id": a.id,
        "community": a.community_id,
        "installation": a.installation_id,
        "kind": a.kind,
        "first_day": str(a.first_day),
        "end_day": None if a.end_day is None else str(a.end_day),
        "objective": a.objective,
        "rules": json.loads(rules_to_json(a.rules)),
        "supply_points": list(a.supply_points),
        "note": a.note,
        "created": a.created,
        "replaces": a.replaces,
    }


@agreement_app.command("show")
def agreement_show(
    agreement_id: Annotated[int, typer.Argument(help="The agreement's id (as listed).")],
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """An agreement: its rules, period, and each member's mean, least and greatest
    coefficient."""
    import numpy as np

    from community import VARIABLE
    from monitoring import AgreementError, agreement_by_id, coefficients_of, period_hours

    with opened(store) as database:
        try:
            agreement = agreement_by_id(database, agreement_id)
            millionths = coefficients_of(database, agreement_id)
        except AgreementError as exc:
            fail(exc.message)
        community = database.community(agreement.community_id)
    shares = np.asarray(millionths, dtype=np.float64) / 1e6
    if agreement.kind == VARIABLE and agreement.end_day is not None and community is not None:
        # A revised agreement keeps the rows it planned past its new end: not in force.
        shares = shares[
            : period_hours(agreement.first_day, agreement.end_day, community["timezone"])
        ]
    members = [
        {
            "supply_point": point,
            "mean": float(shares[:, n].mean()) if len(shares) else None,
            "min": float(shares[:, n].min()) if len(shares) else None,
            "max": float(shares[:, n].max()) if len(shares) else None,
        }
        for n, point in enumerate(agreement.supply_points)
    ]
    if as_json:
        out.print_json(json.dumps({**_agreement_json(agreement), "members": members}))
        return
    end = "open-ended" if agreement.end_day is None else f"until {agreement.end_day} (excluded)"
    how = f"optimised for {agreement.objective}" if agreement.objective else "set by hand"
    out.print(
        f"agreement {agreement.id}: {agreement.kind}, installation {agreement.installation_id}, "
        f"from {agreement.first_day} {end}, {how}"
        + (f", revising agreement {agreement.replaces}" if agreement.replaces else "")
    )
    if agreement.note:
        out.print(f"note: {agreement.note}", markup=False, highlight=False)
    out.print(f"rules: {_rules_text(agreement.rules)}")
    table = _table("supply point", "mean", "least", "greatest", title="Coefficients")
    for m in members:
        cells = ["pro rata" if m[k] is None else f"{m[k]:.6f}" for k in ("mean", "min", "max")]
        table.add_row(str(m["supply_point"]), *cells)
    out.print(table)


def _rules_text(rules: Rules) -> str:
    parts = [f"floor {rules.floor:g}"] if rules.floor else []
    for name, shares in (
        ("minimum", rules.minimum),
        ("maximum", rules.maximum),
        ("fixed", rules.fixed),
    ):
        if shares:
            parts.append(f"{name} " + ", ".join(f"{p} {v:g}" for p, v in shares.items()))
    if rules.poverty_reserve:
        poor = ", ".join(sorted(rules.poverty))
        parts.append(f"a reserve of {rules.poverty_reserve:g} for {poor} (energy poverty)")
    return "; ".join(parts) or "none"


@agreement_app.command("set")
def agreement_set(
    installation: InstallationOption,
    first_day: FirstDay,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            parser=_one_of("static", "dynamic"),
            help="static: the same share every hour; dynamic: pro rata to each hour's consumption.",
        ),
    ],
    end_day: EndDay = None,
    shares: Annotated[
        Path | None,
        typer.Option(
            "--shares",
            exists=True,
            dir_okay=False,
            help="A CSV file supply_point,share of a static agreement (default: equal shares "
            "of every consumption supply point).",
        ),
    ] = None,
    note: Annotated[str, typer.Option("--note", help="A note kept with it.")] = "",
    store: Store = DEFAULT_STORE,
) -> None:
    """Set an agreement by hand from FIRST_DAY (open-ended unless --end-day): a static one
    with the shares given, or a dynamic one; it revises the agreement in force that day."""
    import numpy as np

    from community import DYNAMIC, equal_coefficients, round_coefficients
    from monitoring import AgreementError, agreements_of, in_force_on, save_agreement

    if end_day is not None and end_day <= first_day:
        fail(f"--end-day {end_day} is not after --first-day {first_day}")
    if kind == DYNAMIC and shares is not None:
        fail("a dynamic agreement has no shares: it follows consumption; drop --shares")
    with opened(store) as database:
        site = _installation(database, installation)
        if shares is not None:
            given = _read_shares(shares)
            points = tuple(given)
            coefficients = np.array([given[p] for p in points])
        else:
            points = site.supply_points
            if not points:
                fail(f"installation {installation} has no consumption supply point to share among")
            coefficients = equal_coefficients(len(points))
        in_force = in_force_on(agreements_of(database, site.community_id, site.id), first_day)
        try:
            agreement_id = save_agreement(
                database,
                installation_id=site.id,
                kind=kind,
                first_day=first_day,
                end_day=end_day,
                supply_points=points,
                millionths=None
                if kind == DYNAMIC
                else round_coefficients(coefficients).reshape(1, -1),
                note=note,
                replaces=None if in_force is None else in_force.id,
                now=int(time.time()),
            )
        except AgreementError as exc:
            fail(exc.message)
    revises = "" if in_force is None else f", revising agreement {in_force.id}"
    out.print(f"agreement {agreement_id} saved ({kind}, {len(points)} members{revises})")


def _optimised(problem: Problem, rules: Rules, kind: str) -> NDArray[np.float64]:
    from community import STATIC, optimise_static, optimise_variable

    if kind == STATIC:
        return optimise_static(problem, rules)
    return optimise_variable(problem, rules)


def _members(training: Training, coefficients: NDArray[np.float64]) -> list[dict[str, Any]]:
    """Each member's mean coefficient and what it allocates them on the training data."""
    import numpy as np

    from community import allocate, summarise

    problem = training.problem
    totals = summarise(allocate(problem.generation, problem.consumption, coefficients))
    means = np.atleast_2d(coefficients).mean(axis=0)
    return [
        {
            "supply_point": point,
            "source": training.sources[point],
            "mean_coefficient": float(mean),
            "consumption_kwh": member.consumption_kwh,
            "allocated_kwh": member.allocated_kwh,
            "self_sufficiency_rate": member.self_sufficiency_rate,
        }
        for point, mean, member in zip(problem.members, means, totals.members, strict=True)
    ]


def _save(
    database: MonitoringStore,
    site: Installation,
    kind: str,
    first_day: date,
    end_day: date | None,
    members: Sequence[str],
    coefficients: NDArray[np.float64],
    objective: str,
    rules: Rules,
    note: str,
) -> tuple[int, int | None]:
    """Store an optimised agreement; its id and the id of the one in force it revises."""
    from community import round_coefficients
    from monitoring import AgreementError, agreements_of, in_force_on, save_agreement

    in_force = in_force_on(agreements_of(database, site.community_id, site.id), first_day)
    try:
        agreement_id = save_agreement(
            database,
            installation_id=site.id,
            kind=kind,
            first_day=first_day,
            end_day=end_day,
            supply_points=members,
            millionths=round_coefficients(coefficients).reshape(-1, len(members)),
            objective=objective,
            rules=rules,
            note=note,
            replaces=None if in_force is None else in_force.id,
            now=int(time.time()),
        )
    except AgreementError as exc:
        fail(exc.message)
    return agreement_id, None if in_force is None else in_force.id


def _members_table(rows: Sequence[dict[str, Any]]) -> Table:
    shown = elide_all(r["supply_point"] for r in rows)
    table = _table(
        "supply point",
        "mean coef.",
        "consumed",
        "allocated",
        "covered",
        title="Each member on the training data (kWh)",
        words=("data",),
    )
    for r in rows:
        table.add_row(
            shown[r["supply_point"]],
            f"{r['mean_coefficient']:.6f}",
            f"{r['consumption_kwh']:,.1f}",
            f"{r['allocated_kwh']:,.1f}",
            _rate(r["self_sufficiency_rate"]),
            r["source"],
        )
    return table


def _training_text(training: Training, first_day: date) -> str:
    estimated = sum(s == "estimate" for s in training.sources.values())
    return (
        f"trained on the 12 months before {first_day}: {len(training.sources) - estimated} "
        f"member(s) from history, {estimated} estimated, generation from "
        f"{training.generation_source}"
    )


def _rules_failed(where: str, message: str) -> NoReturn:
    fail(f"{where} cannot hold: {message}")


@agreement_app.command("optimise")
def agreement_optimise(
    installation: InstallationOption,
    first_day: FirstDay,
    months: Annotated[
        int | None,
        typer.Option(
            "--months", min=1, max=36, help="How many months it lasts (default 12; a revision 4)."
        ),
    ] = None,
    end_day: EndDay = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            parser=_one_of("variable", "static"),
            help="variable: a coefficient per member and hour (Spain's hourly file); static: "
            "one per member.",
        ),
    ] = "variable",
    objective: Objective = "energy",
    rules_file: RulesFile = None,
    estimate: EstimateFile = None,
    latitude: Latitude = None,
    longitude: Longitude = None,
    save: Save = False,
    note: Annotated[str, typer.Option("--note", help="A note kept with it.")] = "",
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Optimise the coefficients of an agreement from FIRST_DAY on the 12 months of history
    before it, under the rules; show every strategy beside it, what each rule costs and each
    member's share, and store it with --save (revising the agreement in force that day)."""
    from community import RuleError, compare, rule_costs

    rules = _read_rules(rules_file)
    end = _end_of(first_day, months, end_day, TRAINING_MONTHS)
    with opened(store) as database:
        site = _installation(database, installation)
        with _progress(4) as stage:
            stage("reading the history")
            training = _training(
                database, site, first_day, end, objective, estimate, latitude, longitude
            )
            try:
                stage("optimising the coefficients")
                coefficients = _optimised(training.problem, rules, kind)
                stage("comparing the strategies")
                comparison = compare(training.problem, None, rules)
                stage("costing each rule")
                costs = rule_costs(training.problem, rules, static=kind == "static")
            except RuleError as exc:
                _rules_failed(
                    f"the rules of {rules_file}" if rules_file else "the rules", exc.message
                )
        saved = (
            _save(
                database,
                site,
                kind,
                first_day,
                end,
                training.problem.members,
                coefficients,
                objective,
                rules,
                note,
            )
            if save
            else None
        )
    members = _members(training, coefficients)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "installation": site.id,
                    "kind": kind,
                    "objective": objective,
                    "first_day": str(first_day),
                    "end_day": str(end),
                    "generation_source": training.generation_source,
                    "strategies": _comparison_json(comparison),
                    "rule_costs": [
                        {
                            "rule": c.rule,
                            "with": c.with_rule,
                            # NaN: without it the other rules cannot hold together
                            "without": None if math.isnan(c.without_rule) else c.without_rule,
                        }
                        for c in costs
                    ],
                    "members": members,
                    "agreement_id": None if saved is None else saved[0],
                    "revises": None if saved is None else saved[1],
                }
            )
        )
        return
    out.print(_training_text(training, first_day))
    out.print(_comparison_table(comparison, objective, site.currency))
    if costs:
        unit = site.currency if objective == "money" else "kWh"
        table = _table(
            "rule", "with it", "without it", "it costs", title=f"What each rule costs ({unit})"
        )
        for c in costs:
            table.add_row(
                c.rule,
                *(_figure(v, objective) for v in (c.with_rule, c.without_rule, c.cost)),
            )
        out.print(table)
    out.print(_members_table(members))
    if saved is None:
        out.print("not saved: add --save to store it")
    else:
        revises = "" if saved[1] is None else f", revising agreement {saved[1]}"
        out.print(f"agreement {saved[0]} saved ({kind}, {first_day} to {end}{revises})")


def _restricted(rules: Rules, members: Sequence[str]) -> Rules:
    """`rules` for the members still there: rules of members who left are dropped."""
    import dataclasses

    keep = set(members)
    poverty = rules.poverty & keep
    return dataclasses.replace(
        rules,
        minimum={p: v for p, v in rules.minimum.items() if p in keep},
        maximum={p: v for p, v in rules.maximum.items() if p in keep},
        fixed={p: v for p, v in rules.fixed.items() if p in keep},
        poverty=poverty,
        poverty_reserve=rules.poverty_reserve if poverty else 0.0,
    )


@agreement_app.command("revise")
def agreement_revise(
    installation: InstallationOption,
    first_day: FirstDay,
    months: Annotated[
        int | None,
        typer.Option(
            "--months",
            min=1,
            max=36,
            help="How many months it lasts (default: to the end of the agreement in force).",
        ),
    ] = None,
    end_day: EndDay = None,
    estimate: EstimateFile = None,
    latitude: Latitude = None,
    longitude: Longitude = None,
    save: Save = False,
    note: Annotated[str, typer.Option("--note", help="A note kept with it.")] = "",
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Re-optimise the agreement in force on FIRST_DAY from that day, on the latest 12 months
    and with its rules and objective, for the members there now (who joined or left); show
    what changes for each member, and store it with --save."""
    import numpy as np

    from community import DYNAMIC, ENERGY, STATIC, Problem, RuleError, revision_changes
    from monitoring import (
        AgreementError,
        agreements_of,
        coefficients_of,
        in_force_on,
        local_midnight,
    )

    with opened(store) as database:
        site = _installation(database, installation)
        old = in_force_on(agreements_of(database, site.community_id, site.id), first_day)
        if old is None:
            fail(
                f"no agreement of {installation} is in force on {first_day}: optimise a first "
                "one with `petra community agreement optimise`"
            )
        if old.kind == DYNAMIC:
            fail(f"agreement {old.id} is dynamic: it follows consumption and needs no revision")
        keep_open = months is None and end_day is None and old.end_day is None
        if months is None and end_day is None:
            # To the end of the one in force; an open-ended one is trained on a year ahead.
            end = old.end_day or _months_later(first_day, TRAINING_MONTHS)
        else:
            end = _end_of(first_day, months, end_day, TRAINING_MONTHS)
        objective = old.objective or ENERGY
        with _progress(2) as stage:
            stage("reading the history")
            training = _training(
                database, site, first_day, end, objective, estimate, latitude, longitude
            )
            rules = _restricted(old.rules, training.problem.members)
            stage("optimising the coefficients")
            try:
                after = _optimised(training.problem, rules, old.kind)
            except RuleError as exc:
                _rules_failed(f"the rules of agreement {old.id}", exc.message)
        try:
            before = np.asarray(coefficients_of(database, old.id), dtype=np.float64) / 1e6
        except AgreementError as exc:
            fail(exc.message)
        # The old agreement's coefficients on the revision's hours it covers.
        problem = training.problem
        hours = np.arange(len(training.period))
        if old.kind != STATIC:
            index = (training.period - local_midnight(old.first_day, site.timezone)) // HOUR_S
            hours = np.flatnonzero(index < len(before))
            before = before[index[hours]]
            after_shown = after[hours]
        else:
            before, after_shown = before[0], after
        judged = Problem(
            problem.members,
            problem.generation[hours],
            problem.consumption[hours],
            problem.weights,
        )
        changes = revision_changes(judged, old.supply_points, before, after_shown)
        saved = (
            _save(
                database,
                site,
                old.kind,
                first_day,
                None if keep_open else end,
                problem.members,
                after,
                objective,
                rules,
                note or f"revision of agreement {old.id}",
            )
            if save
            else None
        )
    rows: list[dict[str, Any]] = [
        {
            "supply_point": c.member,
            "mean_before": c.mean_before,
            "mean_after": c.mean_after,
            "allocated_before_kwh": c.allocated_before_kwh,
            "allocated_after_kwh": c.allocated_after_kwh,
        }
        for c in changes
    ]
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "revises": old.id,
                    "kind": old.kind,
                    "objective": objective,
                    "first_day": str(first_day),
                    "end_day": None if keep_open else str(end),
                    "changes": rows,
                    "agreement_id": None if saved is None else saved[0],
                }
            )
        )
        return
    out.print(_training_text(training, first_day))
    shown = elide_all(r["supply_point"] for r in rows)
    table = _table(
        "supply point",
        "mean before",
        "mean after",
        "kWh before",
        "kWh after",
        title=f"What revising agreement {old.id} changes",
    )
    for r in rows:
        table.add_row(
            shown[r["supply_point"]],
            "joins" if r["mean_before"] is None else f"{r['mean_before']:.6f}",
            "leaves" if r["mean_after"] is None else f"{r['mean_after']:.6f}",
            f"{r['allocated_before_kwh']:,.1f}",
            f"{r['allocated_after_kwh']:,.1f}",
        )
    out.print(table)
    before_kwh = sum(r["allocated_before_kwh"] for r in rows)
    after_kwh = sum(r["allocated_after_kwh"] for r in rows)
    out.print(f"the community uses {before_kwh:,.1f} kWh before, {after_kwh:,.1f} kWh after")
    if saved is None:
        out.print("not saved: add --save to store it")
    else:
        out.print(f"agreement {saved[0]} saved, revising agreement {old.id} from {first_day}")


# ---------------------------------------------------------------- Spain's file


def _composed_year(
    database: MonitoringStore, site: Installation, year: int
) -> tuple[tuple[str, ...], NDArray[np.float64]]:
    """Every hour of `year` from the agreements in force, over every supply point of those
    agreements (0 in an hour they are not a member); exit naming the first day that no
    agreement, or a dynamic one, covers."""
    import numpy as np

    from community import DYNAMIC, STATIC, hour_starts
    from monitoring import AgreementError, agreements_of, coefficients_of, local_midnight

    starts = hour_starts(year, site.timezone)
    span = (int(starts[0]), int(starts[-1]) + HOUR_S)
    covering = []
    for a in agreements_of(database, site.community_id, site.id):  # newest first: it wins
        begins = local_midnight(a.first_day, site.timezone)
        ends = local_midnight(a.end_day, site.timezone) if a.end_day is not None else span[1]
        if begins < span[1] and ends > span[0]:
            covering.append((a, begins, ends))
    points = tuple(dict.fromkeys(p for a, _, _ in reversed(covering) for p in a.supply_points))
    coefficients = np.zeros((len(starts), len(points)))
    by = np.zeros(len(starts), dtype=np.int64)  # the agreement of each hour, 0 none
    for a, begins, ends in covering:
        hours = np.flatnonzero((starts >= begins) & (starts < ends) & (by == 0))
        by[hours] = a.id
        if a.kind == DYNAMIC or not len(hours):
            continue
        try:
            rows = np.asarray(coefficients_of(database, a.id), dtype=np.float64) / 1e6
        except AgreementError as exc:
            fail(exc.message)
        columns = np.array([points.index(p) for p in a.supply_points])
        if a.kind == STATIC:
            coefficients[np.ix_(hours, columns)] = rows[0]
            continue
        index = (starts[hours] - begins) // HOUR_S
        if index.max() >= len(rows):
            fail(f"agreement {a.id} holds {len(rows)} hours, fewer than its period")
        coefficients[np.ix_(hours, columns)] = rows[index]
    dynamic = {a.id for a, _, _ in covering if a.kind == DYNAMIC}
    wrong = np.flatnonzero((by == 0) | np.isin(by, list(dynamic)))
    if len(wrong):
        day = _local_day(int(starts[wrong[0]]), site.timezone)
        if by[wrong[0]] == 0:
            fail(
                f"no agreement of {site.id} is in force on {day}: set or optimise one for it "
                f"before exporting {year}"
            )
        fail(
            f"agreement {by[wrong[0]]}, in force on {day}, is dynamic: its coefficients are "
            "known only after each hour, so the distributor's file cannot hold them"
        )
    return points, coefficients


def _faults_json(faults: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"line": f.line, "code": f.code, "message": f.message} for f in faults]


def _print_faults(faults: Sequence[Any], name: str) -> None:
    for f in faults:  # each message names its line and hour
        out.print(f"{name}: {f.code}: {f.message}", markup=False, highlight=False)


@community_app.command("export")
def export_command(
    installation: InstallationOption,
    year: Annotated[int, typer.Option("--year", min=2000, max=2200, help="The year of the file.")],
    folder: Annotated[
        Path,
        typer.Option(
            "--dir", file_okay=False, help="The folder the file is written in (it must exist)."
        ),
    ],
    cau: Annotated[
        str | None,
        typer.Option(
            "--cau",
            help="The self-consumption's CAU code the file is named after (default: "
            "the installation's id).",
        ),
    ] = None,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Write the distributor's coefficient file `<CAU>_<YEAR>.txt` for the installation's
    agreements in force through YEAR, hour by hour, and check it with the validator."""
    from community import file_name, round_coefficients, validate_file, write_hourly_file

    if not folder.is_dir():
        fail(f"no folder {folder}: create it first")
    try:
        name = file_name(cau or installation, year)
    except ValueError as exc:
        fail(f"{exc}: give the self-consumption's CAU code with --cau" if cau is None else str(exc))
    with opened(store) as database:
        site = _installation(database, installation)
        points, coefficients = _composed_year(database, site, year)
    try:
        content = write_hourly_file(points, round_coefficients(coefficients))
    except ValueError as exc:
        fail(str(exc))
    path = folder / name
    try:
        write_private(path, content)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    faults = validate_file(content, name, year, points)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "path": str(path),
                    "bytes": len(content),
                    "hours": len(coefficients),
                    "supply_points": list(points),
                    "faults": _faults_json(faults),
                }
            )
        )
    else:
        verdict = "sound" if not faults else f"{len(faults)} fault(s), below"
        out.print(
            f"{path}: {len(content):,} bytes, {len(coefficients)} hours of {len(points)} "
            f"supply points; the validator finds it {verdict}",
            markup=False,
            highlight=False,
        )
        _print_faults(faults, name)
    if faults:
        raise typer.Exit(1)


@community_app.command("validate")
def validate_command(
    file: Annotated[
        Path, typer.Argument(help="A coefficient file (<CAU>_<YEAR>.txt).", dir_okay=False)
    ],
    year: Annotated[
        int | None,
        typer.Option("--year", min=2000, max=2200, help="Its year (default: from its name)."),
    ] = None,
    installation: Annotated[
        str | None,
        typer.Option(
            "--installation",
            help="The installation's id: every supply point of its agreements that year must "
            "be in every hour.",
        ),
    ] = None,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Check a coefficient file and name every fault (line, code, sentence); exit 1 when it
    has any, 0 when it is sound."""
    from community import validate_file

    try:
        content = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    expected = None
    if installation is not None:
        with opened(store) as database:
            expected = _expected_points(database, _installation(database, installation), year, file)
    faults = validate_file(content, file.name, year, expected)
    if as_json:
        out.print_json(
            json.dumps({"file": str(file), "sound": not faults, "faults": _faults_json(faults)})
        )
    elif faults:
        _print_faults(faults, file.name)
        out.print(f"{len(faults)} fault(s)")
    else:
        out.print(f"{file.name} is sound", markup=False, highlight=False)
    if faults:
        raise typer.Exit(1)


def _expected_points(
    database: MonitoringStore, site: Installation, year: int | None, file: Path
) -> tuple[str, ...]:
    """The supply points of the installation's agreements that touch the file's year (all
    its agreements when the year is unknown), else its consumption supply points."""
    import re

    from monitoring import agreements_of

    named = re.search(r"_(\d{4})\.txt$", file.name)
    year = year if year is not None else int(named[1]) if named else None
    agreements = agreements_of(database, site.community_id, site.id)
    if year is not None:
        agreements = [
            a
            for a in agreements
            if a.first_day < date(year + 1, 1, 1)
            and (a.end_day is None or a.end_day > date(year, 1, 1))
        ]
    points = tuple(dict.fromkeys(p for a in reversed(agreements) for p in a.supply_points))
    return points or site.supply_points


# ---------------------------------------------------------------- settlement


@community_app.command("settlement")
def settlement_command(
    installation: InstallationOption,
    first_month: Annotated[
        date,
        typer.Option(
            "--first-month", parser=_month, metavar="YYYY-MM", help="The first month, YYYY-MM."
        ),
    ],
    last_month: Annotated[
        date | None,
        typer.Option(
            "--last-month",
            parser=_month,
            metavar="YYYY-MM",
            help="The last month, YYYY-MM (default: the first).",
        ),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", dir_okay=False, help="Where to write the CSV (default: printed)."),
    ] = None,
    store: Store = DEFAULT_STORE,
) -> None:
    """Each member's month: energy consumed, assigned and used, surplus, bought, money and
    CO2, from what the agreements in force allocated, as CSV."""
    from community import monthly_settlement, settlement_csv
    from monitoring import AgreementError, installation_allocation, local_midnight

    last = last_month or first_month
    if last < first_month:
        fail("--last-month is before --first-month")
    with opened(store) as database:
        site = _installation(database, installation)
        start = local_midnight(first_month, site.timezone)
        end = local_midnight(_months_later(last, 1), site.timezone)
        try:
            allocated = installation_allocation(database, site.id, start, end)
        except AgreementError as exc:
            fail(exc.message)
    points = allocated.hours.supply_points
    lines = monthly_settlement(
        allocated.allocation,
        points,
        allocated.hours.hour_starts,
        site.timezone,
        [site.tariff] * len(points),
        site.co2_g_per_kwh,
    )
    text = settlement_csv(lines, site.currency)
    if out_file is None:
        typer.echo(text, nl=False)
        return
    try:
        write_private(out_file, text.encode())
    except OSError as exc:
        fail(f"cannot write {out_file}: {exc.strerror}")
    out.print(f"{len(lines)} lines written to {out_file}", markup=False, highlight=False)


# ---------------------------------------------------------------- Italy


@community_app.command("incentive")
def incentive_command(
    installation: InstallationOption,
    first_day: Annotated[
        date, typer.Option("--from", parser=_day, metavar="DAY", help="The first day, YYYY-MM-DD.")
    ],
    last_day: Annotated[
        date,
        typer.Option(
            "--to", parser=_day, metavar="DAY", help="The last day, YYYY-MM-DD (included)."
        ),
    ],
    zonal_prices: Annotated[
        Path,
        typer.Option(
            "--zonal-prices",
            exists=True,
            dir_okay=False,
            help="A CSV file of hourly zonal prices: the hour (unix seconds or ISO 8601), EUR/MWh.",
        ),
    ],
    region: Annotated[
        str,
        typer.Option(
            "--region",
            parser=_one_of("north", "centre", "south"),
            help="Where the plant is: north, centre or south (the PV correction).",
        ),
    ] = "south",
    capital_grant: Annotated[
        bool,
        typer.Option("--capital-grant", help="The plant received a capital grant (45 % free)."),
    ] = False,
    valorisation: Annotated[
        float,
        typer.Option("--valorisation", min=0, help="ARERA's valorisation, EUR/MWh."),
    ] = 8.0,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Italy's incentives on the installation's shared energy (DM 414/2023): the premium by
    plant size, zonal price and region, ARERA's valorisation, and the part of the premium
    reserved for non-business members or social uses."""
    import numpy as np

    from community import Plant, incentive
    from monitoring import AgreementError, installation_hours, local_midnight

    if last_day < first_day:
        fail("--to is before --from")
    with opened(store) as database:
        site = _installation(database, installation)
        start = local_midnight(first_day, site.timezone)
        end = local_midnight(last_day + timedelta(days=1), site.timezone)
        try:
            hours = installation_hours(database, site.id, start, end)
        except AgreementError as exc:
            fail(exc.message)
    prices = _read_zonal_prices(zonal_prices, site.timezone)
    missing = [int(t) for t in hours.hour_starts if int(t) not in prices]
    if missing:
        from zoneinfo import ZoneInfo

        first = datetime.fromtimestamp(missing[0], ZoneInfo(site.timezone))
        fail(
            f"{zonal_prices} has no price for {len(missing)} hour(s) of the period, the first "
            f"{first:%Y-%m-%d %H:%M} ({site.timezone})"
        )
    if hours.missing_generation_hours:
        warn(f"{hours.missing_generation_hours} hour(s) without generation data count as none")
    plant = Plant(site.id, site.peak_kw, region, capital_grant=capital_grant)
    result = incentive(
        (plant,),
        hours.generation[:, None],
        hours.consumption.sum(axis=1),
        np.array([prices[int(t)] for t in hours.hour_starts]),
        valorisation,
    )
    figures = {
        "installation": site.id,
        "from": str(first_day),
        "to": str(last_day),
        "shared_kwh": result.shared_kwh,
        "premium_eur": result.premium_eur,
        "valorisation_eur": result.valorisation_eur,
        "free_premium_eur": result.free_premium_eur,
        "reserved_premium_eur": result.reserved_premium_eur,
        "plants": [
            {"plant": p, "shared_kwh": kwh, "premium_eur": eur} for p, kwh, eur in result.per_plant
        ],
    }
    if as_json:
        out.print_json(json.dumps(figures))
        return
    table = Table(show_header=False, title=f"Incentives of {site.id}, {first_day} to {last_day}")
    table.add_column()
    table.add_column(justify="right")
    table.add_row("shared energy", f"{result.shared_kwh:,.1f} kWh")
    table.add_row("premium", f"{result.premium_eur:,.2f} EUR")
    table.add_row("valorisation", f"{result.valorisation_eur:,.2f} EUR")
    table.add_row("  premium the community shares freely", f"{result.free_premium_eur:,.2f} EUR")
    table.add_row(
        "  premium for non-business members or social uses",
        f"{result.reserved_premium_eur:,.2f} EUR",
    )
    out.print(table)


# ---------------------------------------------------------------- evaluation


@community_app.command("evaluate")
def evaluate_command(
    installation: InstallationOption,
    train_from: Annotated[
        date,
        typer.Option(
            "--train-from", parser=_day, metavar="DAY", help="The first day it is optimised on."
        ),
    ],
    train_to: Annotated[
        date,
        typer.Option(
            "--train-to", parser=_day, metavar="DAY", help="The last day it is optimised on."
        ),
    ],
    test_from: Annotated[
        date | None,
        typer.Option(
            "--test-from",
            parser=_day,
            metavar="DAY",
            help="The first day it is judged on out of sample (the train days a year on).",
        ),
    ] = None,
    test_to: Annotated[
        date | None,
        typer.Option("--test-to", parser=_day, metavar="DAY", help="The last day judged on."),
    ] = None,
    rules_file: RulesFile = None,
    objective: Objective = "energy",
    plot: Annotated[
        Path | None,
        typer.Option("--plot", dir_okay=False, help="Write the charts to this HTML file."),
    ] = None,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Judge every strategy (equal shares, by consumption, the best static agreement, the
    optimised one, dynamic allocation) on the days it was optimised on and, with a test
    period, on days it was not: for the community and for each member."""
    from community import MONEY, Problem, RuleError, compare, money_weights
    from monitoring import AgreementError, installation_hours, local_midnight

    if train_to < train_from:
        fail("--train-to is before --train-from")
    if (test_from is None) != (test_to is None):
        fail("give both --test-from and --test-to, or neither")
    if test_from is not None and test_to is not None and test_to < test_from:
        fail("--test-to is before --test-from")
    rules = _read_rules(rules_file)
    with opened(store) as database:
        site = _installation(database, installation)
        train_days = (
            local_midnight(train_from, site.timezone),
            local_midnight(train_to + timedelta(days=1), site.timezone),
        )
        try:
            train_hours = installation_hours(database, site.id, *train_days)
            test_hours = (
                None
                if test_from is None or test_to is None
                else installation_hours(
                    database,
                    site.id,
                    local_midnight(test_from, site.timezone),
                    local_midnight(test_to + timedelta(days=1), site.timezone),
                )
            )
        except AgreementError as exc:
            fail(exc.message)
    points = train_hours.supply_points
    if not points:
        fail(f"installation {installation} has no consumption supply point to share among")
    weights = money_weights([site.tariff] * len(points)) if objective == MONEY else None
    if test_hours is None:
        train = Problem(points, train_hours.generation, train_hours.consumption, weights)
        test = None
    else:
        generation, consumption, known = _on_period(
            train_hours, test_hours.hour_starts, site.timezone
        )
        if known.mean() < THIN:
            fail(
                "coefficients are fixed hour by hour of the year, so the test days must be the "
                f"train days a year later, and only {known.mean():.0%} of them are: e.g. "
                f"--test-from {_months_later(train_from, 12)} "
                f"--test-to {_months_later(train_to, 12)}"
            )
        train = Problem(points, generation, consumption, weights)
        test = Problem(points, test_hours.generation, test_hours.consumption, weights)
    with _progress(1) as stage:
        stage("optimising and judging every strategy")
        try:
            comparison = compare(train, test, rules)
        except RuleError as exc:
            _rules_failed(f"the rules of {rules_file}" if rules_file else "the rules", exc.message)
    if plot is not None:
        _plot(comparison, objective, site.currency, plot)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "installation": site.id,
                    "objective": objective,
                    "members": list(comparison.members),
                    "strategies": _comparison_json(comparison),
                }
            )
        )
        return
    out.print(_comparison_table(comparison, objective, site.currency))
    out.print(_member_strategies(comparison))
    if plot is not None:
        out.print(f"charts written to {plot}", markup=False, highlight=False)


def _member_strategies(comparison: Comparison) -> Table:
    """Each member's allocated kWh by strategy, out of sample when judged there."""
    shown = elide_all(comparison.members)
    judged = [
        (r.strategy, r.out_of_sample if r.out_of_sample is not None else r.in_sample)
        for r in comparison.results
    ]
    sample = "out of sample" if comparison.results[0].out_of_sample else "in sample"
    table = _table(
        "supply point",
        *(STRATEGY_NAMES.get(s, s) for s, _ in judged),
        title=f"Each member's allocated kWh ({sample})",
    )
    for n, point in enumerate(comparison.members):
        table.add_row(shown[point], *(f"{t.members[n].allocated_kwh:,.1f}" for _, t in judged))
    return table


def _plot(comparison: Comparison, objective: str, currency: str, path: Path) -> None:
    """Bars per strategy in and out of sample, and each member's allocation by strategy, as
    a self-contained HTML page."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    names = [STRATEGY_NAMES.get(r.strategy, r.strategy) for r in comparison.results]
    unit = currency if objective == "money" else "kWh"
    figure = make_subplots(
        rows=2,
        cols=1,
        subplot_titles=(
            f"The community's {objective} by strategy ({unit})",
            "Each member's allocated energy by strategy (kWh)",
        ),
    )
    figure.add_trace(
        go.Bar(x=names, y=[r.in_sample_objective for r in comparison.results], name="in sample"),
        row=1,
        col=1,
    )
    if any(r.out_of_sample_objective is not None for r in comparison.results):
        figure.add_trace(
            go.Bar(
                x=names,
                y=[r.out_of_sample_objective for r in comparison.results],
                name="out of sample",
            ),
            row=1,
            col=1,
        )
    for name, r in zip(names, comparison.results, strict=True):
        totals = r.out_of_sample if r.out_of_sample is not None else r.in_sample
        figure.add_trace(
            go.Bar(
                x=list(comparison.members),
                y=[m.allocated_kwh for m in totals.members],
                name=name,
            ),
            row=2,
            col=1,
        )
    figure.update_layout(barmode="group", template="plotly_white", height=900)
    html = figure.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    try:
        write_private(path, html.encode())
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
