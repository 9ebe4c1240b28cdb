"""The report of a community run: a summary for the terminal and a directory a reader can keep.

`write_report` fills `./petra-report/<run>/` with `metrics.json` (the figures of
`simulation.metrics`), `record.json` (the run record they were computed from) and `report.html`,
one self-contained page: plotly's JavaScript is inlined once and nothing is fetched from
anywhere (its Content-Security-Policy tells the browser so too), so the page opens offline and
years from now. `redraw` rebuilds the three files from a saved `record.json`; `summary` gives
the headline figures as a rich table for the end of `petra sim run`.

Every string that comes from the run (its name, the homes' names and strategies, the
conservation problems) is escaped before it reaches the page or the terminal: a run's name is
user input. Money stays in whole micro-units until it is shown, rounded half to even once.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from html import escape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import plotly.graph_objects as go  # type: ignore[import-untyped]
import plotly.io as pio  # type: ignore[import-untyped]
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from simulation.record import RunRecord
from simulation.sharing import BEST_STATIC, DYNAMIC, EQUAL, LABELS, P2P

MICRO = 10**6  # micro-units per unit of the currency
J_PER_KWH = 3_600_000
W_PER_KW = 1_000
NA = "n/a"  # what a figure nothing measured is shown as

# No plotly logo and no sending to its cloud: nothing on the page leads off the machine.
PLOT_CONFIG = {
    "displaylogo": False,
    "showSendToCloud": False,
    "responsive": True,
}
CHART_HEIGHT = "440px"

# The page runs its own inline scripts and styles and may draw data: images (plotly's PNG
# download); everything else, any fetch included, is refused.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:"
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
       margin: 0 auto; max-width: 1100px; padding: 1.5rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; overflow-wrap: anywhere; }
.run { color: #52606d; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { text-align: left; padding: 0.25rem 0.9rem 0.25rem 0; vertical-align: top;
         border-bottom: 1px solid #e4e7eb; overflow-wrap: anywhere; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th[scope="row"] { font-weight: normal; color: #52606d; }
.sections { display: flex; flex-wrap: wrap; gap: 0 2.5rem; }
.warning { background: #fff3c4; border-left: 4px solid #f0b429; padding: 0.6rem 0.9rem; }
.ok { background: #e3f9e5; border-left: 4px solid #3f9142; padding: 0.6rem 0.9rem; }
.problem { background: #ffe3e3; border-left: 4px solid #cf1124; padding: 0.6rem 0.9rem; }
figure.chart { margin: 0 0 2rem; }
figcaption { color: #52606d; margin-top: 0.3rem; }
"""


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where a run's report was written: its directory and the three files in it."""

    directory: Path
    metrics: Path  # metrics.json
    record: Path  # record.json
    html: Path  # report.html


def write_report(record: RunRecord, metrics: dict[str, Any], directory: Path) -> ReportFiles:
    """Write `metrics.json` (indented, sorted keys), `record.json` and `report.html` into
    `directory`, created if missing; `metrics` is `compute_metrics(record).to_wire()`."""
    directory.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        directory=directory,
        metrics=directory / "metrics.json",
        record=directory / "record.json",
        html=directory / "report.html",
    )
    files.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    record.save(files.record)
    files.html.write_text(report_html(record, metrics), encoding="utf-8")
    return files


def redraw(directory: Path) -> ReportFiles:
    """Rebuild a report from the `record.json` in `directory`, computing its metrics anew."""
    # Imported here: the metrics are needed only to redraw, and load more than the report does.
    from simulation.metrics import compute_metrics

    record = RunRecord.load(directory / "record.json")
    return write_report(record, compute_metrics(record).to_wire(), directory)


# Figures as text: one function per kind, each showing "n/a" for nothing measured.


def _field(metrics: dict[str, Any], *path: str) -> Any:
    """The value at `path` in the metrics, None where any step of it is missing or null."""
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str:
    return NA if value is None else str(value)


def _count(value: Any) -> str:
    return NA if value is None else f"{int(value):,}"


def _decimal(value: Any, digits: int) -> str:
    return NA if value is None else f"{float(value):,.{digits}f}"


def _percent(fraction: Any) -> str:
    return NA if fraction is None else f"{100 * float(fraction):.1f} %"


def _units(micro: Any, digits: int) -> Decimal:
    """Micro-units as units of the currency, rounded half to even to `digits` decimals (a
    small debt that rounds to nothing is shown as 0, not -0)."""
    units = (Decimal(str(micro)) / MICRO).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_EVEN)
    return units if units else abs(units)


def _money(micro: Any, currency: str) -> str:
    """An amount in micro-units, shown in units of the currency to the cent."""
    return NA if micro is None else f"{_units(micro, 2):,} {currency}".rstrip()


def _price(micro_per_kwh: Any, currency: str) -> str:
    """A price in micro-units per kWh, shown in units of the currency per kWh."""
    return NA if micro_per_kwh is None else f"{_units(micro_per_kwh, 3):,} {currency}/kWh".strip()


def _kwh(value: Any) -> str:
    return NA if value is None else f"{float(value) + 0.0:,.2f} kWh".replace("-0.00 ", "0.00 ")


def _duration(seconds: Any) -> str:
    """Seconds as a reader says them: 42.0 s, 3 min 05 s, 15 min, 2 h 07 min."""
    if seconds is None:
        return NA
    total = float(seconds)
    if total < 60:
        return f"{total:.1f} s"
    minutes, rest = divmod(round(total), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"


def _yes_no(value: Any) -> str:
    return NA if value is None else ("yes" if value else "no")


def _float(value: Any, scale: float = 1.0) -> float | None:
    """A number for a chart, None (a gap) where nothing was measured. Plotting only: nothing is
    computed with these floats, so money may become one here."""
    return None if value is None else float(value) / scale


def _plain(text: Any) -> str:
    """A string from the run made safe for plotly, which reads a subset of HTML (links
    included) in titles, ticks and hover labels; it shows the entities as the characters."""
    return escape(str(text))


@dataclass(frozen=True, slots=True)
class _Clock:
    """How the page shows interval times: in the community's time zone when its configuration
    names one (`location.timezone`), else in UTC."""

    zone: tzinfo
    label: str

    def local(self, iso: str) -> str:
        moment = datetime.fromisoformat(iso)
        if moment.tzinfo is None:  # the metrics' times are UTC
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def at(self, unix_s: int) -> str:
        return datetime.fromtimestamp(unix_s, self.zone).strftime("%Y-%m-%d %H:%M")


def _clock(record: RunRecord) -> _Clock:
    location = record.config.get("location")
    name = location.get("timezone") if isinstance(location, dict) else None
    if isinstance(name, str):
        try:
            return _Clock(ZoneInfo(name), name)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # an unknown zone: UTC, which the axis titles then say
    return _Clock(UTC, "UTC")


# The charts.


@dataclass(frozen=True, slots=True)
class _Chart:
    name: str  # the plot's div is chart-<name>
    figure: go.Figure
    caption: str


def _style(figure: go.Figure, title: str, x_title: str, y_title: str) -> go.Figure:
    figure.update_layout(
        title={"text": title},
        xaxis={"title": {"text": x_title}},
        yaxis={"title": {"text": y_title}},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.22},
        margin={"t": 70, "r": 30},
        hovermode="x unified",
    )
    return figure


def _power_chart(rows: list[dict[str, Any]], clock: _Clock) -> _Chart:
    times = [clock.local(row["start"]) for row in rows]
    figure = go.Figure()
    for key, name in (
        ("load_w", "consumption"),
        ("pv_w", "PV production"),
        ("net_w", "net at the grid (import positive)"),
    ):
        figure.add_trace(
            go.Scatter(
                x=times,
                y=[_float(row[key], W_PER_KW) for row in rows],
                name=name,
                mode="lines+markers",
            )
        )
    _style(
        figure,
        "Community load, PV production and net power",
        f"interval start ({_plain(clock.label)})",
        "mean power (kW)",
    )
    caption = (
        "What all homes together consumed and their PV panels produced, as the mean power of "
        "each interval, and the net power their grid connections saw (import positive, "
        f"export negative). Times are interval starts in {clock.label}."
    )
    return _Chart("power", figure, caption)


def _trading_chart(
    rows: list[dict[str, Any]], clock: _Clock, interval_s: int, currency: str
) -> _Chart:
    times = [clock.local(row["start"]) for row in rows]
    figure = go.Figure()
    figure.add_trace(
        go.Bar(
            x=times,
            y=[_float(row["traded_w"], J_PER_KWH / interval_s) for row in rows],
            name="traded energy",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=times,
            y=[_float(row["clearing_price"], MICRO) for row in rows],
            name="clearing price",
            mode="lines+markers",
            yaxis="y2",
        )
    )
    _style(
        figure,
        "Energy traded and clearing price",
        f"interval start ({_plain(clock.label)})",
        "traded energy (kWh)",
    )
    figure.update_layout(
        yaxis2={
            "title": {"text": f"clearing price ({_plain(currency)}/kWh)"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
        }
    )
    caption = (
        "Bars: the energy homes sold to one another for delivery in each interval, on the left "
        "axis. Line: the price the market cleared at, on the right axis; a gap means nothing "
        "cleared in that interval."
    )
    return _Chart("trading", figure, caption)


def _bills_chart(homes: list[dict[str, Any]], currency: str) -> _Chart:
    names = [_plain(home["name"]) for home in homes]
    strategies = [_plain(home["strategy"]) for home in homes]
    hover = f"%{{x}}<br>strategy: %{{customdata}}<br>%{{y:,.2f}} {_plain(currency)}"
    figure = go.Figure()
    for key, name in (("bill", "bill with trading"), ("baseline", "bill without trading")):
        figure.add_trace(
            go.Bar(
                x=names,
                y=[_float(home[key], MICRO) for home in homes],
                name=name,
                customdata=strategies,
                hovertemplate=hover + f"<extra>{name}</extra>",
            )
        )
    _style(
        figure,
        "Bills per home, with trading and without",
        "home",
        f"bill over the run ({_plain(currency)})",
    )
    figure.update_layout(barmode="group", hovermode="closest")
    caption = (
        "What each home's bills came to over the run, beside what the same meter readings "
        "would have cost with no trading at all. Below zero, the home was paid. Hover over a "
        "bar for the strategy the home's wallet ran."
    )
    return _Chart("bills", figure, caption)


def _sharing_chart(sharing: dict[str, Any], currency: str) -> _Chart:
    names = [_plain(name) for name in sharing.get("homes") or []]
    figure = go.Figure()
    for row in sharing.get("regimes") or []:
        label = _plain(_regime_label(row.get("regime")))
        figure.add_trace(
            go.Bar(
                x=names,
                y=[_float(bill, MICRO) for bill in row.get("bills") or []],
                name=label,
                hovertemplate=f"%{{x}}<br>%{{y:,.2f}} {_plain(currency)}<extra>{label}</extra>",
            )
        )
    _style(
        figure,
        "Money per home: PETra's trading and each sharing agreement",
        "home",
        f"paid over the run ({_plain(currency)})",
    )
    figure.update_layout(barmode="group", hovermode="closest")
    caption = (
        "What each home paid over the run under each regime, on the same profiles: the grid "
        "alone, the run's own bills with peer-to-peer trading, and each sharing agreement of "
        "the homes' surplus. Below zero, the home was paid; a missing bar, a home without bills."
    )
    return _Chart("sharing", figure, caption)


def _linkable(metrics: dict[str, Any], what: str) -> str:
    """`25.0 % (1 of 4)` for the linkable trades or deposits."""
    fraction = _field(metrics, "privacy", f"linkable_{what}_fraction")
    linkable = _field(metrics, "privacy", f"linkable_{what}s")
    total = _field(metrics, "privacy", f"{what}s")
    return f"{_percent(fraction)} ({_count(linkable)} of {_count(total)})"


def _anonymity_chart(metrics: dict[str, Any]) -> _Chart:
    sizes = Counter(int(size) for size in _field(metrics, "privacy", "anonymity_sets") or [])
    ordered = sorted(sizes)
    figure = go.Figure(
        go.Bar(x=ordered, y=[sizes[size] for size in ordered], name="traded outputs")
    )
    subtitle = (
        f"linkable trades {_linkable(metrics, 'trade')}, "
        f"linkable deposits {_linkable(metrics, 'deposit')}"
    )
    _style(
        figure,
        f"Anonymity sets of traded outputs<br><sup>{subtitle}</sup>",
        "anonymity set size (meters)",
        "traded outputs",
    )
    figure.update_layout(xaxis={"dtick": 1, "rangemode": "tozero"}, hovermode="closest")
    caption = (
        "For each traded output, the number of meters an outside reader of the whole ledger "
        "could not tell apart as its source. A set of one meter links the trade to its home; "
        "larger is more private."
    )
    return _Chart("anonymity", figure, caption)


def _throughput_chart(rows: list[dict[str, Any]], clock: _Clock, metrics: dict[str, Any]) -> _Chart:
    times = [clock.local(row["start"]) for row in rows]
    figure = go.Figure(
        go.Bar(x=times, y=[row["committed_tx"] for row in rows], name="committed transactions")
    )
    tps = _decimal(_field(metrics, "ledger", "tps_committed"), 2)
    _style(
        figure,
        f"Ledger throughput<br><sup>{tps} committed transactions per second over the run</sup>",
        f"interval start ({_plain(clock.label)})",
        "committed transactions",
    )
    caption = (
        "How many transactions (issues, transfers, regulation) the ledger committed in each "
        "interval of the run."
    )
    return _Chart("throughput", figure, caption)


def _forecast_chart(rows: list[dict[str, Any]], clock: _Clock, metrics: dict[str, Any]) -> _Chart:
    times = [clock.local(row["start"]) for row in rows]
    figure = go.Figure()
    for key, name in (("forecast_w", "DSO forecast"), ("net_w", "measured")):
        figure.add_trace(
            go.Scatter(
                x=times,
                y=[_float(row[key], W_PER_KW) for row in rows],
                name=name,
                mode="lines+markers",
            )
        )
    mae = _decimal(_field(metrics, "forecast", "mae_w"), 0)
    _style(
        figure,
        f"DSO forecast of the net load<br><sup>mean absolute error {mae} W</sup>",
        f"interval start ({_plain(clock.label)})",
        "net power (kW)",
    )
    caption = (
        "The community's net power the DSO's controller forecast before each interval began, "
        "against the net power the meters then measured (import positive)."
    )
    return _Chart("forecast", figure, caption)


def _charts(record: RunRecord, metrics: dict[str, Any], clock: _Clock) -> list[_Chart]:
    currency = str(record.genesis.get("currency", ""))
    rows = sorted(metrics.get("per_interval") or [], key=lambda row: int(row["interval"]))
    homes = list(metrics.get("homes") or [])
    charts = [
        _power_chart(rows, clock),
        _trading_chart(rows, clock, record.interval_s, currency),
        _bills_chart(homes, currency),
        _anonymity_chart(metrics),
        _throughput_chart(rows, clock, metrics),
    ]
    if any(row.get("forecast_w") is not None for row in rows):
        charts.append(_forecast_chart(rows, clock, metrics))
    sharing = metrics.get("sharing")
    if isinstance(sharing, dict) and sharing.get("regimes"):
        charts.append(_sharing_chart(sharing, currency))
    return charts


def _chart_html(chart: _Chart, with_plotlyjs: bool) -> str:
    plot = pio.to_html(
        chart.figure,
        config=PLOT_CONFIG,
        include_plotlyjs=with_plotlyjs,
        include_mathjax=False,
        full_html=False,
        div_id=f"chart-{chart.name}",
        default_height=CHART_HEIGHT,
    )
    return (
        f'<figure class="chart" id="figure-{chart.name}">{plot}'
        f"<figcaption>{escape(chart.caption)}</figcaption></figure>"
    )


# The page.


def _rows_html(rows: list[tuple[str, str]]) -> str:
    return "".join(
        f'<tr><th scope="row">{escape(label)}</th><td>{escape(value)}</td></tr>'
        for label, value in rows
    )


def _sections(metrics: dict[str, Any], currency: str) -> dict[str, list[tuple[str, str]]]:
    """The headline figures of the page, section by section, as text."""

    def get(*path: str) -> Any:
        return _field(metrics, *path)

    return {
        "Energy": [
            ("consumption", _kwh(get("energy", "consumption_kwh"))),
            ("PV production", _kwh(get("energy", "production_kwh"))),
            ("self-consumed", _kwh(get("energy", "self_consumed_kwh"))),
            ("self-consumption", _percent(get("energy", "self_consumption"))),
            ("self-sufficiency", _percent(get("energy", "self_sufficiency"))),
            ("traded", _kwh(get("energy", "traded_kwh"))),
            ("grid import", _kwh(get("energy", "grid_import_kwh"))),
            ("grid export", _kwh(get("energy", "grid_export_kwh"))),
        ],
        "Market and bills": [
            ("orders", _count(get("market", "orders"))),
            ("trades", _count(get("market", "trades"))),
            ("settled", _count(get("market", "settled"))),
            ("traded", _kwh(get("market", "traded_kwh"))),
            ("mean price", _price(get("market", "mean_price"), currency)),
            *_bills_rows(metrics, currency),
        ],
        "Privacy": [
            ("linkable trades", _linkable(metrics, "trade")),
            ("linkable deposits", _linkable(metrics, "deposit")),
            ("smallest anonymity set", _count(get("privacy", "min_anonymity"))),
            ("median anonymity set", _decimal(get("privacy", "median_anonymity"), 1)),
        ],
        "Ledger": [
            ("transactions", _count(get("ledger", "transactions"))),
            ("blocks", _count(get("ledger", "blocks"))),
            ("submitted", _count(get("ledger", "submitted"))),
            ("committed", _count(get("ledger", "committed"))),
            ("rejected", _count(get("ledger", "rejected"))),
            ("submitted per second", _decimal(get("ledger", "tps_submitted"), 2)),
            ("committed per second", _decimal(get("ledger", "tps_committed"), 2)),
            ("latency p50", _milliseconds(get("ledger", "latency_ms", "p50"))),
            ("latency p95", _milliseconds(get("ledger", "latency_ms", "p95"))),
            ("latency max", _milliseconds(get("ledger", "latency_ms", "max"))),
        ],
        "Mixing and forecast": [
            ("mixing rounds", _count(get("mixing", "rounds"))),
            ("done", _count(get("mixing", "done"))),
            ("failed", _count(get("mixing", "failed"))),
            ("round time p50", _duration(get("mixing", "seconds", "p50"))),
            ("round time max", _duration(get("mixing", "seconds", "max"))),
            ("forecast intervals", _count(get("forecast", "intervals"))),
            ("forecast error (MAE)", _watts(get("forecast", "mae_w"))),
        ],
    }


def _milliseconds(value: Any) -> str:
    return NA if value is None else f"{float(value):,.1f} ms"


def _watts(value: Any) -> str:
    return NA if value is None else f"{float(value):,.0f} W"


def _bills_rows(metrics: dict[str, Any], currency: str) -> list[tuple[str, str]]:
    """The bills of all homes against the no-trade baseline, and how many homes saved."""
    homes = list(metrics.get("homes") or [])
    bills = [home["bill"] for home in homes if home.get("bill") is not None]
    baselines = [home["baseline"] for home in homes if home.get("baseline") is not None]
    savings = [home["saving"] for home in homes if home.get("saving") is not None]
    saved = sum(1 for saving in savings if saving > 0)
    share = _percent(saved / len(savings)) if savings else NA
    return [
        ("bills, all homes", _money(sum(bills), currency) if bills else NA),
        ("without trading", _money(sum(baselines), currency) if baselines else NA),
        ("homes that saved", f"{saved} of {len(savings)} ({share})" if savings else NA),
    ]


def _homes_html(metrics: dict[str, Any], currency: str) -> str:
    header = (
        "<tr><th>home</th><th>meter</th><th>strategy</th><th>bill</th><th>without trading</th>"
        "<th>saving</th><th>bills reconciled</th><th>measured</th><th>PV</th></tr>"
    )
    lines = []
    for home in metrics.get("homes") or []:
        cells = [
            escape(str(home.get("name"))),
            escape(str(home.get("meter_id"))),
            escape(str(home.get("strategy"))),
        ]
        numbers = [
            _money(home.get("bill"), currency),
            _money(home.get("baseline"), currency),
            _money(home.get("saving"), currency),
            f"{_count(home.get('reconciled'))} of {_count(home.get('bills'))}",
            _kwh(home.get("measured_kwh")),
            _kwh(home.get("pv_kwh")),
        ]
        lines.append(
            "<tr>"
            + "".join(f"<td>{cell}</td>" for cell in cells)
            + "".join(f'<td class="number">{escape(number)}</td>' for number in numbers)
            + "</tr>"
        )
    return f"<table>{header}{''.join(lines)}</table>"


def _regime_label(regime: Any) -> str:
    return LABELS.get(str(regime), str(regime))


def _disclosed(row: dict[str, Any]) -> str:
    return f"{_count(row.get('values_to_dso'))} / {_count(row.get('values_to_community'))}"


def _sharing_html(metrics: dict[str, Any], currency: str) -> str:
    """The comparison of PETra's trading with each sharing agreement: the model in a
    paragraph, a row per regime, and why a figure is missing."""
    title = "<h2>P2P trading and sharing agreements</h2>"
    sharing = metrics.get("sharing")
    if not isinstance(sharing, dict):
        return f"{title}<p>This run's metrics hold no comparison with sharing agreements.</p>"
    model = (
        "The same homes and profiles under each regime. A sharing agreement shares the homes' "
        "surplus (their exports, "
        f"{_kwh(sharing.get('pooled_kwh'))} over the run) among their imports "
        f"({_kwh(sharing.get('imported_kwh'))}), one step per interval; the optimised ones "
        "maximise the energy shared. A kWh shared is bought from its producers at "
        f"{_price(sharing.get('transfer_price'), currency)}, between the import price "
        f"({_price(sharing.get('price_consumption'), currency)}) and the export price "
        f"({_price(sharing.get('price_production'), currency)}); the rest goes to the grid at "
        "those prices. The p2p row is the run's own bills. Self-consumption and "
        "self-sufficiency count what each home's PV covered itself plus the energy shared "
        "(p2p: traded, at most the interval's surplus); the dynamic row equals the physical "
        "figures above. Values disclosed: per-home values per interval sent to the DSO / seen "
        "in the community; the anonymity set is of what the community learns about a home."
    )
    header = (
        "<tr><th>regime</th><th>bill per home: mean</th><th>min</th><th>max</th>"
        "<th>shared</th><th>self-consumption</th><th>self-sufficiency</th>"
        "<th>values disclosed</th><th>smallest anonymity set</th><th>what it reveals</th></tr>"
    )
    lines = []
    for row in sharing.get("regimes") or []:
        numbers = [
            _money(row.get("bill_mean"), currency),
            _money(row.get("bill_min"), currency),
            _money(row.get("bill_max"), currency),
            _kwh(row.get("shared_kwh")),
            _percent(row.get("self_consumption")),
            _percent(row.get("self_sufficiency")),
            _disclosed(row),
            _count(row.get("smallest_anonymity")),
        ]
        revealed = str(row.get("revealed") or "")
        if row.get("regime") == P2P:
            revealed += f" Linkable trades: {_linkable(metrics, 'trade')}."
        lines.append(
            f"<tr><td>{escape(_regime_label(row.get('regime')))}</td>"
            + "".join(f'<td class="number">{escape(number)}</td>' for number in numbers)
            + f"<td>{escape(revealed)}</td></tr>"
        )
    table = f"<table>{header}{''.join(lines)}</table>" if lines else ""
    notes = "".join(f"<li>{escape(str(note))}</li>" for note in sharing.get("notes") or [])
    missing = f'<div class="warning"><ul>{notes}</ul></div>' if notes else ""
    return f"{title}<p>{escape(model)}</p>{table}{missing}"


def _conservation_html(metrics: dict[str, Any], currency: str) -> str:
    figures = _rows_html(
        [
            ("FA issued", _money(_field(metrics, "conservation", "fa_issued"), currency)),
            ("FA unspent", _money(_field(metrics, "conservation", "fa_unspent"), currency)),
            ("FA deposited", _money(_field(metrics, "conservation", "fa_deposited"), currency)),
            ("FA held", _money(_field(metrics, "conservation", "fa_held"), currency)),
            (
                "energy identity holds",
                _yes_no(_field(metrics, "conservation", "energy_identity_ok")),
            ),
        ]
    )
    problems = [str(p) for p in _field(metrics, "conservation", "problems") or []]
    if _field(metrics, "conservation", "ok") and not problems:
        verdict = '<p class="ok">Conservation holds: no money or energy appeared or vanished.</p>'
    else:
        items = "".join(f"<li>{escape(problem)}</li>" for problem in problems)
        verdict = (
            '<div class="problem"><p>Conservation does not hold:</p>'
            f"<ul>{items or '<li>no problem was named</li>'}</ul></div>"
        )
    return f"<h2>Conservation</h2>{verdict}<table>{figures}</table>"


def _header_rows(record: RunRecord, metrics: dict[str, Any], clock: _Clock) -> str:
    """Who the run was, from its record; how long it took per interval, from the metrics."""
    begins = clock.at(record.epoch + record.first_interval * record.interval_s)
    ends = clock.at(record.epoch + (record.last_interval + 1) * record.interval_s)
    intervals = _field(metrics, "run", "intervals")
    if intervals is None:
        intervals = len(record.intervals)
    rows = [
        ("mode", record.mode),
        ("seed", str(record.seed)),
        ("homes", _count(len(record.homes))),
        (
            "horizon",
            f"{_count(intervals)} intervals of {_duration(record.interval_s)}, "
            f"{begins} to {ends} ({clock.label})",
        ),
        ("wall time", _duration(record.wall_s)),
        ("wall time per interval", _duration(_field(metrics, "run", "seconds_per_interval"))),
        ("mixing", f"pools of {record.mix_pool}" if record.mix_pool else "off"),
        ("Tor", _yes_no(record.tor)),
    ]
    return f"<table>{_rows_html(rows)}</table>"


def report_html(record: RunRecord, metrics: dict[str, Any]) -> str:
    """The whole report page, self-contained: plotly's bundle inlined once, nothing fetched."""
    clock = _clock(record)
    currency = str(record.genesis.get("currency", ""))
    name = escape(record.name)
    complete = _field(metrics, "run", "complete")
    if complete is None:
        complete = record.complete
    stopped = (
        ""
        if complete
        else '<p class="warning">This run was stopped before its horizon: the figures cover '
        "only the intervals it simulated.</p>"
    )
    sections = "".join(
        f"<section><h3>{escape(title)}</h3><table>{_rows_html(rows)}</table></section>"
        for title, rows in _sections(metrics, currency).items()
    )
    charts = _charts(record, metrics, clock)
    plots = "".join(_chart_html(chart, index == 0) for index, chart in enumerate(charts))
    no_forecast = (
        ""
        if any(chart.name == "forecast" for chart in charts)
        else "<p>The DSO made no forecast in this run.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(CONTENT_SECURITY_POLICY)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PETra run {name}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>PETra run {name}</h1>
<p class="run">A simulated energy community trading on a PETra ledger.</p>
{stopped}
{_header_rows(record, metrics, clock)}
</header>
<main>
<h2>Headline figures</h2>
<div class="sections">{sections}</div>
<h2>Homes</h2>
{_homes_html(metrics, currency)}
{_sharing_html(metrics, currency)}
{_conservation_html(metrics, currency)}
<h2>Charts</h2>
{plots}
{no_forecast}
</main>
</body>
</html>
"""


# The terminal.


def _sharing_totals(metrics: dict[str, Any], currency: str) -> str:
    """All homes' bills under three sharing agreements, to set beside the run's own."""
    regimes = {
        row.get("regime"): row.get("bill_total")
        for row in _field(metrics, "sharing", "regimes") or []
        if isinstance(row, dict)
    }
    shown = [(EQUAL, "equal"), (BEST_STATIC, "best static"), (DYNAMIC, "dynamic")]
    if not any(regime in regimes for regime, _ in shown):
        return NA
    totals = ", ".join(f"{name} {_money(regimes.get(regime), '')}" for regime, name in shown)
    return f"{totals} {currency}".rstrip()


def summary(metrics: dict[str, Any], report: Path | None) -> RenderableType:
    """The headline figures of a run as a rich table that fits 80 columns; `report` is the
    page's path. Amounts are shown in units of the run's currency (micro-units / 10^6)."""

    def get(*path: str) -> Any:
        return _field(metrics, *path)

    unit = str(get("run", "currency") or "units")
    intervals = f"{_count(get('run', 'intervals'))} of {_duration(get('run', 'interval_s'))}"
    trades = (
        f"{_count(get('market', 'trades'))} ({_count(get('market', 'settled'))} settled), "
        f"{_percent(get('privacy', 'linkable_trade_fraction'))} linkable"
    )
    bills = dict(_bills_rows(metrics, unit))
    rounds = (
        f"{_count(get('mixing', 'rounds'))} ({_count(get('mixing', 'done'))} done, "
        f"{_count(get('mixing', 'failed'))} failed)"
    )
    problems = [str(p) for p in get("conservation", "problems") or []]
    if get("conservation", "ok") and not problems:
        conservation = "ok"
    else:
        conservation = f"NOT OK: {'; '.join(problems) or 'no problem named'}"
    rows = [
        ("run", f"{_text(get('run', 'mode'))}, seed {_text(get('run', 'seed'))}"),
        ("homes", _count(get("run", "homes"))),
        ("intervals", intervals),
        ("self-consumption", _percent(get("energy", "self_consumption"))),
        ("self-sufficiency", _percent(get("energy", "self_sufficiency"))),
        ("traded", _kwh(get("energy", "traded_kwh"))),
        ("trades", trades),
        ("smallest anonymity set", _count(get("privacy", "min_anonymity"))),
        ("bills, all homes", f"{bills['bills, all homes']} ({bills['without trading']} without)"),
        ("homes that saved", bills["homes that saved"]),
        ("bills if sharing", _sharing_totals(metrics, unit)),
        ("committed per second", _decimal(get("ledger", "tps_committed"), 2)),
        ("mixing rounds", rounds),
        ("conservation", conservation),
    ]
    if get("run", "complete") is False:
        rows.append(("stopped early", "yes: the figures cover the intervals simulated"))
    table = Table(
        title=Text(f"PETra run {_text(get('run', 'name'))}", style="bold"),
        box=box.SIMPLE,
        show_header=False,
        show_edge=False,
    )
    table.add_column("figure", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for label, value in rows:
        # Text, not markup: names and problems come from the run.
        style = "red" if label == "conservation" and conservation != "ok" else ""
        table.add_row(label, Text(value, style=style))
    # The page's path on a line of its own: beside the labels' column it would be cut mid-word
    # at 80 columns; alone, the default one fits.
    where = str(report) if report is not None else "not written"
    return Group(table, Text.assemble(("report", "bold"), f" {where}", overflow="fold"))
