"""The run report without a browser: the files, the page's self-containment and escaping, and
the terminal summary. `sample_record` and `sample_metrics` are a hand-made run of three homes
over four intervals, in the exact shape of `compute_metrics(record).to_wire()`; the browser
test reuses them."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from simulation.record import (
    Forecast,
    HomeRecord,
    LedgerEntry,
    MixRound,
    RunRecord,
    Submission,
    Trade,
)
from simulation.report import ReportFiles, redraw, report_html, summary, write_report

HOSTILE = "<script>alert(1)</script>"
EPOCH = 1_717_200_000  # 2024-06-01 00:00 UTC
INTERVAL_S = 900
FIRST = 44  # 11:00 UTC, 13:00 in Madrid
CHARTS = ("power", "trading", "bills", "anonymity", "throughput", "forecast", "sharing")
PLOTLY_BANNER = "* plotly.js v"  # the first line of the inlined bundle's licence comment


def sample_record(name: str = "sunny-lane") -> RunRecord:
    """Three homes, four 15-minute intervals around noon in Madrid."""
    homes = [
        HomeRecord(
            name="ana",
            meter_id="ES0021000000000001AB",
            owner="aa" * 32,
            strategy="seller",
            load_w=[400.0, 450.0, 500.0, 420.0],
            pv_w=[2_400.0, 2_600.0, 2_500.0, 2_200.0],
            battery_w=[0.0, 0.0, 0.0, 0.0],
        ),
        HomeRecord(
            name="ben",
            meter_id="ES0021000000000002AB",
            owner="bb" * 32,
            strategy="buyer",
            load_w=[1_200.0, 1_500.0, 900.0, 1_100.0],
            pv_w=[0.0, 0.0, 0.0, 0.0],
            battery_w=[0.0, 0.0, 0.0, 0.0],
        ),
        HomeRecord(
            name="cai",
            meter_id="ES0021000000000003AB",
            owner="cc" * 32,
            strategy="idle",
            load_w=[800.0, 700.0, 650.0, 900.0],
            pv_w=[600.0, 700.0, 650.0, 500.0],
            battery_w=[200.0, 0.0, -100.0, 0.0],
        ),
    ]
    return RunRecord(
        name=name,
        mode="in-process",
        seed=7,
        genesis={
            "name": "sunny-lane",
            "interval_s": INTERVAL_S,
            "epoch": EPOCH,
            "currency": "EUR",
            "dso_keys": [],
            "sequencer_keys": [],
        },
        first_interval=FIRST,
        last_interval=FIRST + 3,
        price_consumption=300_000,
        price_production=60_000,
        mix_pool=3,
        tor=False,
        wall_s=93.5,
        homes=homes,
        ledger=[LedgerEntry(height=1, time=EPOCH + FIRST * INTERVAL_S, tx={"type": "issue"})],
        bills=[],
        reconciled={},
        submissions=[Submission(kind="issue", sent=1.0, answered=1.2, code="committed")],
        mix_rounds=[MixRound(peers=3, began=2.0, ended=9.5, outcome="done")],
        orders=6,
        trades=[Trade(interval=FIRST + 1, power_w=1_000, price=120_000, settled=True)],
        forecasts=[Forecast(interval=FIRST + k, net_w=-400) for k in range(4)],
        config={"location": {"timezone": "Europe/Madrid"}},
        complete=True,
    )


def sample_metrics(name: str = "sunny-lane") -> dict[str, Any]:
    """The metrics of `sample_record`, made by hand, with a few figures not measured (null)."""
    per_interval = [
        {
            "interval": FIRST + k,
            "start": f"2024-06-01T11:{15 * k:02d}:00Z",
            "load_w": load,
            "pv_w": pv,
            "net_w": load - pv + battery,
            "traded_w": traded,
            "clearing_price": price,
            "forecast_w": forecast,
            "committed_tx": committed,
        }
        for k, (load, pv, battery, traded, price, forecast, committed) in enumerate(
            [
                (2_400.0, 3_000.0, 200.0, 0, None, -500, 5),
                (2_650.0, 3_300.0, 0.0, 1_000, 120_000, -400, 9),
                (2_050.0, 3_150.0, -100.0, 800, 110_000, None, 7),
                (2_420.0, 2_700.0, 0.0, 1_200, 125_000, -300, 6),
            ]
        )
    ]
    return {
        "run": {
            "name": name,
            "mode": "in-process",
            "seed": 7,
            "currency": "EUR",
            "homes": 3,
            "intervals": 4,
            "interval_s": INTERVAL_S,
            "first_interval": FIRST,
            "last_interval": FIRST + 3,
            "wall_s": 93.5,
            "seconds_per_interval": 23.4,
            "complete": True,
            "mixing": True,
            "mix_pool": 3,
            "tor": False,
        },
        "energy": {
            "consumption_kwh": 2.38,
            "production_kwh": 3.04,
            "self_consumed_kwh": 2.1,
            "self_consumption": 0.69,
            "self_sufficiency": 0.88,
            "traded_kwh": 0.75,
            "grid_import_kwh": 0.28,
            "grid_export_kwh": 0.94,
        },
        "per_interval": per_interval,
        "homes": [
            {
                "name": "ana",
                "meter_id": "ES0021000000000001AB",
                "strategy": "seller",
                "bill": -95_000,
                "baseline": -31_000,
                "saving": 64_000,
                "bills": 4,
                "reconciled": 4,
                "measured_kwh": 0.44,
                "pv_kwh": 2.43,
            },
            {
                "name": "ben",
                "meter_id": "ES0021000000000002AB",
                "strategy": "buyer",
                "bill": 270_000,
                "baseline": 352_500,
                "saving": 82_500,
                "bills": 4,
                "reconciled": 3,
                "measured_kwh": 1.18,
                "pv_kwh": 0.0,
            },
            {
                "name": "cai",
                "meter_id": "ES0021000000000003AB",
                "strategy": "idle",
                "bill": None,
                "baseline": 31_000,
                "saving": None,
                "bills": 0,
                "reconciled": 0,
                "measured_kwh": 0.76,
                "pv_kwh": 0.61,
            },
        ],
        "privacy": {
            "trades": 4,
            "traded_outputs": 4,
            "linkable_trades": 1,
            "linkable_trade_fraction": 0.25,
            "deposits": 3,
            "linkable_deposits": 0,
            "linkable_deposit_fraction": 0.0,
            "anonymity_sets": [1, 2, 3, 3],
            "min_anonymity": 1,
            "median_anonymity": 2.5,
        },
        "ledger": {
            "transactions": 27,
            "blocks": 12,
            "submitted": 29,
            "committed": 27,
            "rejected": 2,
            "tps_submitted": 0.31,
            "tps_committed": 0.29,
            "latency_ms": {"p50": 41.0, "p95": 120.5, "max": None},
        },
        "mixing": {"rounds": 2, "done": 1, "failed": 1, "seconds": {"p50": 7.5, "max": 12.0}},
        "market": {
            "orders": 6,
            "trades": 4,
            "settled": 4,
            "traded_kwh": 0.75,
            "mean_price": 118_333,
        },
        "forecast": {"intervals": 3, "mae_w": 86.7},
        "conservation": {
            "fa_issued": 1_000_000,
            "fa_unspent": 600_000,
            "fa_deposited": 400_000,
            "fa_held": 0,
            "energy_identity_ok": True,
            "ok": True,
            "problems": [],
        },
        "sharing": sample_sharing(),
    }


def _regime(
    regime: str,
    bills: list[int | None],
    shared_kwh: float,
    rates: tuple[float, float],
    disclosed: tuple[int, int],
    anonymity: int | None,
) -> dict[str, Any]:
    """A row of the comparison with sharing agreements: mean, min, max and total of the bills."""
    known = [bill for bill in bills if bill is not None]
    return {
        "regime": regime,
        "bills": bills,
        "bill_mean": round(sum(known) / len(known)),
        "bill_min": min(known),
        "bill_max": max(known),
        "bill_total": sum(known),
        "shared_kwh": shared_kwh,
        "self_consumed_kwh": 1.03 + shared_kwh,
        "self_consumption": rates[0],
        "self_sufficiency": rates[1],
        "revealed": f"What {regime} reveals, in words.",
        "values_to_dso": disclosed[0],
        "values_to_community": disclosed[1],
        "smallest_anonymity": anonymity,
    }


def sample_sharing() -> dict[str, Any]:
    """The comparison of `sample_record` with sharing agreements (its p2p bills are the homes'
    above): a pool of 2.01 kWh for 1.38 kWh imported, at 180,000 a shared kWh."""
    return {
        "homes": ["ana", "ben", "cai"],
        "intervals": 4,
        "price_consumption": 300_000,
        "price_production": 60_000,
        "transfer_price": 180_000,
        "pooled_kwh": 2.01,
        "imported_kwh": 1.38,
        "regimes": [
            _regime("grid", [-118_950, 352_500, 58_500], 0.0, (0.34, 0.43), (12, 0), None),
            _regime("p2p", [-95_000, 270_000, None], 0.75, (0.59, 0.74), (8, 0), 1),
            _regime("equal", [-222_250, 272_200, 33_500], 0.87, (0.63, 0.79), (15, 15), 1),
            _regime("by_consumption", [-275_159, 211_500, 40_720], 1.31, (0.77, 0.97), (15, 15), 1),
            _regime("best_static", [-282_664, 211_500, 33_214], 1.38, (0.79, 1.0), (15, 15), 1),
            _regime("variable", [-282_664, 211_500, 33_214], 1.38, (0.79, 1.0), (24, 24), 1),
            _regime("dynamic", [-282_664, 211_500, 33_214], 1.38, (0.79, 1.0), (12, 12), 1),
        ],
        "notes": ["1 of 3 homes have no bill from the run: the p2p money covers the others."],
    }


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes; a script's text is not parsed as tags,
    so the inlined plotly bundle's own strings do not count."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


def _tags(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture
def written(tmp_path: Path) -> tuple[ReportFiles, dict[str, Any]]:
    metrics = sample_metrics()
    return write_report(sample_record(), metrics, tmp_path / "petra-report" / "sunny-lane"), metrics


def test_the_three_files_are_written(written: tuple[ReportFiles, dict[str, Any]]) -> None:
    files, metrics = written
    assert files.directory.is_dir()
    assert {p.name for p in files.directory.iterdir()} == {
        "metrics.json",
        "record.json",
        "report.html",
    }
    assert json.loads(files.metrics.read_text()) == metrics
    assert files.metrics.read_text() == json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    assert RunRecord.load(files.record) == sample_record()


def test_nothing_on_the_page_is_fetched_from_outside(
    written: tuple[ReportFiles, dict[str, Any]],
) -> None:
    page = written[0].html.read_text()
    tags = _tags(page).tags
    for tag, attributes in tags:
        for attribute in ("src", "href", "action", "srcset", "data"):
            value = (attributes.get(attribute) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (tag, attribute, value)
        assert not (tag == "script" and "src" in attributes), attributes
        assert not (tag == "link" and "href" in attributes), attributes
    assert '"displaylogo": false' in page
    assert "Content-Security-Policy" in page


def test_the_plotly_bundle_is_inlined_exactly_once(
    written: tuple[ReportFiles, dict[str, Any]],
) -> None:
    page = written[0].html.read_text()
    assert page.count(PLOTLY_BANNER) == 1
    assert page.count("Plotly.newPlot(") == len(CHARTS)


def test_every_chart_has_its_div_title_and_caption(
    written: tuple[ReportFiles, dict[str, Any]],
) -> None:
    page = written[0].html.read_text().replace("\\u002f", "/")  # plotly's JSON escapes "/"
    tags = _tags(page).tags
    ids = {attributes.get("id") for _, attributes in tags}
    for chart in CHARTS:
        assert f"chart-{chart}" in ids
        assert f"figure-{chart}" in ids
    assert sum(1 for tag, _ in tags if tag == "figcaption") == len(CHARTS)
    for title in ("mean power (kW)", "traded energy (kWh)", "clearing price (EUR/kWh)"):
        assert title in page
    assert "interval start (Europe/Madrid)" in page
    assert "2024-06-01 13:00" in page  # 11:00 UTC on the community's clock


def test_no_forecast_no_forecast_chart(tmp_path: Path) -> None:
    metrics = sample_metrics()
    for row in metrics["per_interval"]:
        row["forecast_w"] = None
    page = report_html(sample_record(), metrics)
    assert 'id="chart-forecast"' not in page
    assert "made no forecast" in page
    assert page.count("Plotly.newPlot(") == len(CHARTS) - 1


def test_a_hostile_run_name_is_escaped() -> None:
    hostile_home = copy.deepcopy(sample_metrics(HOSTILE))
    hostile_home["homes"][0]["name"] = '<img src="https://evil.example/x.png">'
    hostile_home["homes"][0]["strategy"] = '<a href="https://evil.example">x</a>'
    hostile_home["sharing"]["homes"][0] = '<img src="https://evil.example/x.png">'
    hostile_home["sharing"]["notes"] = [HOSTILE]
    hostile_home["conservation"]["ok"] = False
    hostile_home["conservation"]["problems"] = [HOSTILE]
    page = report_html(sample_record(HOSTILE), hostile_home)
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "evil.example" not in "".join(str(attributes) for _, attributes in _tags(page).tags)
    text = "".join(_tags(page).text)
    assert f"PETra run {HOSTILE}" in text  # shown as the characters it is made of
    assert "Conservation does not hold" in text


def test_unmeasured_figures_show_as_n_a(written: tuple[ReportFiles, dict[str, Any]]) -> None:
    metrics = sample_metrics()
    metrics["energy"]["self_sufficiency"] = None
    metrics["privacy"]["min_anonymity"] = None
    metrics["market"]["mean_price"] = None
    metrics["ledger"]["tps_committed"] = None
    text = " ".join(_tags(report_html(sample_record(), metrics)).text)
    assert "None" not in text
    assert "null" not in text
    assert text.count("n/a") >= 6  # the four above, a latency and a bill
    console = Console(width=80, record=True)
    console.print(summary(metrics, None))
    assert "None" not in console.export_text()


def test_an_incomplete_run_says_so() -> None:
    metrics = sample_metrics()
    metrics["run"]["complete"] = False
    assert "stopped before its horizon" in report_html(sample_record(), metrics)
    console = Console(width=80, record=True)
    console.print(summary(metrics, None))
    assert "stopped early" in console.export_text()


def test_the_summary_fits_80_columns(tmp_path: Path) -> None:
    metrics = sample_metrics(HOSTILE + " a long run name " * 6)
    report = tmp_path / ("deep" * 30) / "report.html"
    console = Console(width=80, record=True)
    console.print(summary(metrics, report))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    flat = "".join(text.split())
    for figure in (
        "69.0%",  # self-consumption
        "88.0%",  # self-sufficiency
        "0.75kWh",
        "25.0%linkable",
        "0.18EUR",  # bills: -0.095 + 0.270, half to even
        "2of2",  # homes that saved, of those with a saving
        "0.29",
        "2(1done,1failed)",
        "conservationok",
        HOSTILE.replace(" ", ""),
        "report" + str(report).replace(" ", ""),
    ):
        assert figure in flat, figure


def test_the_default_report_path_is_one_unbroken_line_at_80_columns() -> None:
    report = Path("petra-report/20261206-002424-crevillent-solar-community/report.html")
    console = Console(width=80, record=True)
    console.print(summary(sample_metrics(), report))
    assert f"report {report}" in console.export_text().splitlines()


def test_the_summary_names_conservation_problems() -> None:
    metrics = sample_metrics()
    metrics["conservation"].update(ok=False, problems=["FA held exceeds FA issued by 5"])
    console = Console(width=80, record=True)
    console.print(summary(metrics, None))
    assert "NOT OK: FA held exceeds FA issued by 5" in " ".join(console.export_text().split())


def test_redraw_rebuilds_the_report_from_record_json(tmp_path: Path) -> None:
    pytest.importorskip(
        "simulation.metrics", reason="simulation.metrics (compute_metrics) is not written yet"
    )
    files = write_report(sample_record(), sample_metrics(), tmp_path)
    files.html.unlink()
    files.metrics.unlink()
    again = redraw(tmp_path)
    assert again == files
    assert again.html.is_file()
    assert json.loads(again.metrics.read_text())["run"]["name"] == "sunny-lane"


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_shape(value[0])]
    return "list" if isinstance(value, list) else "figure"


def test_the_sample_has_the_shape_of_real_metrics() -> None:
    metrics = pytest.importorskip(
        "simulation.metrics", reason="simulation.metrics (compute_metrics) is not written yet"
    )
    assert _shape(metrics.compute_metrics(sample_record()).to_wire()) == _shape(sample_metrics())


def test_amounts_that_round_to_nothing_show_no_minus_sign() -> None:
    from simulation.report import _kwh, _money

    assert _money(-4_999, "EUR") == "0.00 EUR" and _money(-5_001, "EUR") == "-0.01 EUR"
    assert _kwh(-0.004) == "0.00 kWh" and _kwh(-0.006) == "-0.01 kWh"


def test_the_sharing_section_has_a_row_per_regime_and_says_why_a_figure_is_missing() -> None:
    page = report_html(sample_record(), sample_metrics())
    text = " ".join(" ".join(_tags(page).text).split())
    assert "P2P trading and sharing agreements" in text
    for label in (
        "grid only",
        "p2p (PETra)",
        "equal static",
        "static by consumption",
        "best static",
        "variable (optimised in-sample)",
        "dynamic (pro rata)",
    ):
        assert label in text, label
    assert "0.180 EUR/kWh" in text  # the transfer price
    assert "0.09 EUR -0.10 EUR 0.27 EUR" in text  # p2p: mean of -95,000 and 270,000, min, max
    assert "24 / 24" in text  # the variable agreement's values disclosed
    assert "Linkable trades: 25.0 % (1 of 4)" in text
    assert "1 of 3 homes have no bill" in text
    assert 'id="chart-sharing"' in page
    assert "Money per home: PETra" in page


def test_metrics_without_the_comparison_say_so_and_draw_no_sharing_chart() -> None:
    metrics = sample_metrics()
    del metrics["sharing"]
    page = report_html(sample_record(), metrics)
    assert "hold no comparison with sharing agreements" in page
    assert 'id="chart-sharing"' not in page
    assert page.count("Plotly.newPlot(") == len(CHARTS) - 1
    console = Console(width=80, record=True)
    console.print(summary(metrics, None))
    assert "bills if sharing n/a" in " ".join(console.export_text().split())


def test_a_run_without_homes_shows_the_note_and_no_table() -> None:
    metrics = sample_metrics()
    metrics["sharing"].update(
        homes=[], regimes=[], notes=["The run has no homes: there is nothing to compare."]
    )
    page = report_html(sample_record(), metrics)
    assert "there is nothing to compare" in page
    assert "<th>bill per home: mean</th>" not in page
    assert 'id="chart-sharing"' not in page


def test_the_summary_sets_sharing_totals_beside_the_runs_bills() -> None:
    console = Console(width=80, record=True)
    console.print(summary(sample_metrics(), None))
    flat = " ".join(console.export_text().split())
    # equal -222,250 + 272,200 + 33,500; best static and dynamic -282,664 + 211,500 + 33,214
    assert "bills if sharing equal 0.08, best static -0.04, dynamic -0.04 EUR" in flat
