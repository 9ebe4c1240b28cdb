"""`petra dso ...` as an operator runs it: a ledger node and a DSO node as real processes on
loopback, each command a subprocess judged by its exit code and its exact output."""

from __future__ import annotations

import csv
import http.server
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from assets import Epa, Keypair, close_bill, encode_bill, encode_transaction, sign_bill
from assets.keyfile import dump_keys
from ledger.client import LedgerClient
from petra.vocabulary import elide_all, format_money, format_price, interval_label
from simulation.processes import free_port, start_petra, stop
from simulation.scenario import Scenario, pay

from .dso_harness import TEST_POLICY
from .nodes import serve_ledger

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
TIMEOUT_S = 60  # per command
START_TIMEOUT_S = 60
INTERVAL_S = 2
PASSPHRASE = b"correct horse battery staple"
# What the caller's shell could set and would change what a command does or prints.
UNSET = (
    "PETRA_PASSPHRASE",
    "PETRA_DSO_TOKEN",
    "PETRA_DSO_URL",
    "PETRA_METER_ID",
    "PETRA_DEBUG",
    "FORCE_COLOR",
)
METER = "ES0021000000000042XY"
METER_KEY = Keypair.generate().public_key.hex()
CSV_HEADER = (
    "bill_id,meter,owner,interval,interval_start_utc,closed_height,measured_j,issued_epa_w,"
    "deposited_epa_w,fa_issued,fa_deposited,energy_j,price_consumption,price_production,amount,"
    "status,discrepancies"
)
REGULATION = "regulation {txid} accepted at height {height}, in force from interval {label}"


@dataclass(frozen=True)
class Run:
    """A finished `petra` process: exit code, stdout and stderr as text."""

    code: int
    out: str
    err: str


def petra(*args: str | Path, env: dict[str, str] | None = None, columns: int = 120) -> Run:
    """`petra ARGS` with a clean environment plus `env`, on a screen `columns` wide."""
    base = {k: v for k, v in os.environ.items() if k not in UNSET}
    done = subprocess.run(
        [*PETRA, *map(str, args)],
        capture_output=True,
        env={**base, "COLUMNS": str(columns), **(env or {})},
        timeout=TIMEOUT_S,
        check=False,
    )
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def ok(run: Run) -> list[str]:
    """The stdout lines of a command that must succeed with nothing on stderr."""
    assert run.code == 0, run
    assert run.err == "", run.err
    return run.out.splitlines()


def answer(run: Run) -> Any:
    """The JSON object a `--json` command that must succeed printed on its one line."""
    [line] = ok(run)
    return json.loads(line)


def refused(run: Run) -> str:
    """The one `error:` line of a command that must refuse cleanly: exit 2, no traceback,
    nothing on stdout."""
    assert run.code == 2, run
    assert "Traceback" not in run.err, run.err
    assert run.out == "", run.out
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    return lines[0]


def table(run: Run) -> tuple[str, list[list[str]]]:
    """The title and the body rows, cell by cell, of the Rich table a command printed."""
    lines = ok(run)
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    return lines[0].strip(), rows


@dataclass(frozen=True)
class DsoNode:
    """The module's ledger and DSO nodes and the files that set them up."""

    url: str
    ledger_url: str
    scenario: Scenario
    folder: Path
    genesis: Path
    sealed_keys: Path
    clear_keys: Path
    passphrase_file: Path
    store: str
    admin_token: Path
    init: Run

    def cli(
        self, command: str, *args: str | Path, token: Path | None = None, columns: int = 120
    ) -> Run:
        """`petra dso COMMAND ARGS` (COMMAND split on spaces) against this node, with the
        token file `token` if one is given, on a screen `columns` wide."""
        auth = ("--token-file", token) if token is not None else ()
        return petra("dso", *command.split(), *args, "--dso", self.url, *auth, columns=columns)

    def label(self, interval: int) -> str:
        """The interval as tables show it, with its local start time."""
        return interval_label(interval, self.scenario.epoch, INTERVAL_S)

    def regulation_line(self, regulation: dict[str, Any]) -> str:
        return REGULATION.format(**regulation, label=self.label(regulation["effective_from"]))

    def now(self) -> int:
        """The current interval by this machine's clock, which the nodes read too."""
        return (int(time.time()) - self.scenario.epoch) // INTERVAL_S

    def wait_interval(self, interval: int) -> None:
        while self.now() < interval:
            time.sleep(0.05)

    def api(self, method: str, path: str, token: Path | None = None, **kwargs: Any) -> Any:
        """The node's JSON answer to METHOD /v1PATH, asked with `token` (default: the admin's)."""
        bearer = (token or self.admin_token).read_text().strip()
        found = httpx.request(
            method,
            f"{self.url}/v1{path}",
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=30,
            **kwargs,
        )
        assert found.is_success, found.text
        return found.json()

    def latest_regulation(self) -> dict[str, Any]:
        newest: dict[str, Any] = self.api("GET", "/regulations")["regulations"][0]
        return newest


def wait_dso(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the DSO node answers (401: it wants a token); fail with its log if not."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/v1/status", timeout=1).status_code == 401:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{url} did not start: {log.read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def dso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DsoNode]:
    """A ledger node, a DSO database made by `petra dso init`, and `petra dso serve` over
    both; sealing the DSO key and opening it cost an Argon2id derivation each, so once."""
    folder = tmp_path_factory.mktemp("dso-cli")
    scenario = Scenario(epoch=int(time.time()) - 20, interval_s=INTERVAL_S)
    genesis, ledger_keys = folder / "genesis.json", folder / "ledger-keys.json"
    sealed, clear = folder / "dso-keys.json", folder / "dso-keys-clear.json"
    passphrase_file = folder / "passphrase"
    genesis.write_bytes(scenario.genesis_raw)
    ledger_keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    sealed.write_bytes(dump_keys({"dso-0": scenario.dso}, PASSPHRASE))
    clear.write_bytes(dump_keys({"dso-0": scenario.dso}, None))
    passphrase_file.write_bytes(PASSPHRASE + b"\n")
    ledger_url, ledger = serve_ledger(
        genesis, ledger_keys, f"sqlite:///{folder / 'ledger.sqlite'}", folder / "ledger.log"
    )
    try:
        store, admin_token = f"sqlite:///{folder / 'dso.sqlite'}", folder / "admin.token"
        init = petra("dso", "init", "--store", store, "--token-out", admin_token)
        assert init.code == 0, init
        port, log = free_port(), folder / "dso.log"
        process = start_petra(
            *("dso", "serve", "--genesis", str(genesis), "--keys", str(sealed)),
            *("--passphrase-file", str(passphrase_file), "--ledger", ledger_url),
            *("--store", store, "--port", str(port)),
            log=log,
        )
        url = f"http://127.0.0.1:{port}"
        wait_dso(url, process, log)
        try:
            yield DsoNode(
                url,
                ledger_url,
                scenario,
                folder,
                genesis,
                sealed,
                clear,
                passphrase_file,
                store,
                admin_token,
                init,
            )
        finally:
            stop(process)
    finally:
        stop(ledger)


@dataclass(frozen=True)
class Team:
    """An operator (op1) and an auditor (aud1) the admin added: their token files and runs."""

    operator: Path
    auditor: Path
    runs: tuple[Run, Run]


@pytest.fixture(scope="module")
def team(dso: DsoNode) -> Team:
    operator, auditor = dso.folder / "op1.token", dso.folder / "aud1.token"
    runs = (
        dso.cli("operator add op1 --role operator --token-out", operator, token=dso.admin_token),
        dso.cli("operator add aud1 --role auditor --token-out", auditor, token=dso.admin_token),
    )
    return Team(operator, auditor, runs)


# ---------------------------------------------------------------- init


def test_init_writes_the_admin_token_for_its_owner_only(dso: DsoNode) -> None:
    assert ok(dso.init) == [f"admin admin created; token in {dso.admin_token}"]
    assert stat.S_IMODE(dso.admin_token.stat().st_mode) == 0o600
    assert re.fullmatch(r"pdso_[A-Za-z0-9_-]{43}\n", dso.admin_token.read_text())


def test_init_twice_on_the_same_database_refuses_and_keeps_the_token(dso: DsoNode) -> None:
    before = dso.admin_token.read_bytes()
    again = petra("dso", "init", "--store", dso.store, "--token-out", dso.admin_token)
    # The node serving the database holds it: init is refused before it reads a row.
    assert refused(again).startswith(
        f"error: the DSO store {dso.store} is held by `petra dso serve` (pid "
    )
    assert dso.admin_token.read_bytes() == before


def test_init_without_token_out_prints_the_token(tmp_path: Path) -> None:
    [token] = ok(petra("dso", "init", "--store", f"sqlite:///{tmp_path / 'dso.sqlite'}"))
    assert re.fullmatch(r"pdso_[A-Za-z0-9_-]{43}", token)


def test_init_refuses_a_token_file_it_cannot_write_before_making_the_admin(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'dso.sqlite'}"
    lost = tmp_path / "missing" / "admin.token"
    assert refused(petra("dso", "init", "--store", store, "--token-out", lost)) == (
        f"error: cannot write {lost}: the folder {lost.parent} does not exist"
    )
    kept = tmp_path / "admin.token"  # the database is not locked out by the failed attempt
    assert ok(petra("dso", "init", "--store", store, "--token-out", kept)) == [
        f"admin admin created; token in {kept}"
    ]


# ---------------------------------------------------------------- serve


def _serve(
    dso: DsoNode,
    tmp_path: Path,
    *,
    genesis: Path | None = None,
    keys: Path | None = None,
    passphrase_file: Path | None = None,
    port: int | None = None,
) -> Run:
    """`petra dso serve` with the module's files unless told, on a database of its own."""
    args: list[str | Path] = ["dso", "serve", "--genesis", genesis or dso.genesis]
    args += ["--keys", keys or dso.sealed_keys, "--ledger", dso.ledger_url]
    args += ["--store", f"sqlite:///{tmp_path / 'dso.sqlite'}", "--port", str(port or free_port())]
    if passphrase_file is not None:
        args += ["--passphrase-file", passphrase_file]
    return petra(*args)


def _other_genesis(dso: DsoNode, tmp_path: Path, dso_key: Keypair) -> Path:
    other = Scenario(
        dso=dso_key, name="another community", epoch=dso.scenario.epoch, interval_s=INTERVAL_S
    )
    path = tmp_path / "other-genesis.json"
    path.write_bytes(other.genesis_raw)
    return path


def test_serve_refuses_a_key_file_in_clear(dso: DsoNode, tmp_path: Path) -> None:
    run = _serve(dso, tmp_path, keys=dso.clear_keys, passphrase_file=dso.passphrase_file)
    assert refused(run) == (
        f"error: {dso.clear_keys} holds its keys in clear: "
        "the DSO key must be sealed with a passphrase"
    )


def test_serve_refuses_a_key_file_without_the_genesiss_dso_key(
    dso: DsoNode, tmp_path: Path
) -> None:
    genesis = _other_genesis(dso, tmp_path, Keypair.generate())
    run = _serve(dso, tmp_path, genesis=genesis, passphrase_file=dso.passphrase_file)
    assert refused(run) == (
        f"error: {dso.sealed_keys} holds none of the genesis's DSO keys: "
        "the node could not regulate"
    )


def test_serve_refuses_a_ledger_serving_another_genesis(dso: DsoNode, tmp_path: Path) -> None:
    genesis = _other_genesis(dso, tmp_path, dso.scenario.dso)  # the key fits, the chain not
    run = _serve(dso, tmp_path, genesis=genesis, passphrase_file=dso.passphrase_file)
    assert refused(run) == (
        f"error: the ledger at {dso.ledger_url} serves another chain than {genesis}"
    )


def test_serve_refuses_a_wrong_passphrase_or_none(dso: DsoNode, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    assert refused(_serve(dso, tmp_path, passphrase_file=wrong)) == (
        f"error: {dso.sealed_keys}: wrong passphrase, or the key file was changed"
    )
    assert refused(_serve(dso, tmp_path)) == (
        f"error: {dso.sealed_keys}: the key file is encrypted: give its passphrase in a file "
        "(--passphrase-file) or in $PETRA_PASSPHRASE"
    )


def test_serve_names_what_is_wrong_with_a_file_that_is_no_key_file(
    dso: DsoNode, tmp_path: Path
) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"format": "something-else"}\n')
    run = _serve(dso, tmp_path, keys=other, passphrase_file=dso.passphrase_file)
    assert refused(run) == f"error: {other}: not a PETra key file (format is not petra-keys-v1)"
    folder = _serve(dso, tmp_path, keys=tmp_path, passphrase_file=dso.passphrase_file)
    assert folder.code == 2 and "Traceback" not in folder.err, folder
    said = "".join(folder.err.replace("│", "").split())  # typer's box wraps a long path
    assert "".join(f"Invalid value for '--keys': file '{tmp_path}' is a directory.".split()) in said


def test_serve_on_a_port_in_use_says_so_in_a_sentence(dso: DsoNode, tmp_path: Path) -> None:
    port = int(dso.ledger_url.rsplit(":", 1)[1])
    run = _serve(dso, tmp_path, passphrase_file=dso.passphrase_file, port=port)
    assert run.code == 2, run
    assert "Traceback" not in run.err, run.err
    # Before it: the node's start line, a warning on the empty database and uvicorn's own log.
    errors = [line for line in run.err.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: cannot serve on 127.0.0.1:{port}: the address is in use or not this machine's"
    ]
    assert run.err.splitlines()[-1] == errors[0]


# ---------------------------------------------------------------- operators


def test_operator_add_writes_each_token_for_its_owner_only(team: Team) -> None:
    assert [ok(run) for run in team.runs] == [
        [f"op1 (operator) created; token in {team.operator}"],
        [f"aud1 (auditor) created; token in {team.auditor}"],
    ]
    for token in (team.operator, team.auditor):
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert re.fullmatch(r"pdso_[A-Za-z0-9_-]{43}\n", token.read_text())


def test_operator_add_refuses_a_token_file_it_cannot_write_before_making_the_operator(
    dso: DsoNode, tmp_path: Path
) -> None:
    lost = tmp_path / "missing" / "carol.token"
    run = dso.cli("operator add carol --role auditor --token-out", lost, token=dso.admin_token)
    assert refused(run) == f"error: cannot write {lost}: the folder {lost.parent} does not exist"
    assert "carol" not in {o["name"] for o in dso.api("GET", "/operators")["operators"]}
    [printed] = ok(dso.cli("operator add carol --role auditor", token=dso.admin_token))
    assert re.fullmatch(r"pdso_[A-Za-z0-9_-]{43}", printed)


def test_a_revoked_token_is_refused(dso: DsoNode) -> None:
    token = dso.folder / "op2.token"
    ok(dso.cli("operator add op2 --role operator --token-out", token, token=dso.admin_token))
    assert answer(dso.cli("meter list --json", token=token))["interval"] >= 0
    assert ok(dso.cli("operator revoke op2", token=dso.admin_token)) == ["op2's token revoked"]
    assert refused(dso.cli("tariff set --consumption 1", token=token)) == (
        "error: operator op2's token was revoked (unauthorized)"
    )
    assert refused(dso.cli("operator revoke op2", token=dso.admin_token)) == (
        "error: no active operator named 'op2' (not_found)"
    )


def test_the_token_and_the_url_may_come_from_the_environment(dso: DsoNode, team: Team) -> None:
    env = {"PETRA_DSO_TOKEN": team.auditor.read_text().strip(), "PETRA_DSO_URL": dso.url}
    verdict = answer(petra("dso", "audit", "verify", "--json", env=env))
    assert verdict["intact"] is True


# ---------------------------------------------------------------- end to end


def test_an_operator_sets_prices_limits_and_a_meter_and_the_auditor_checks(
    dso: DsoNode, team: Team
) -> None:
    op, auditor = team.operator, team.auditor

    tariff = answer(dso.cli("tariff set --consumption 0.25 --production 60000µ --json", token=op))
    assert (tariff["status"], tariff["by"], tariff["code"]) == ("accepted", "op1", None)
    assert tariff["effective_from"] == tariff["time"] + 1
    regulated = tariff["transaction"]
    assert (regulated["price_consumption"], regulated["price_production"]) == (250_000, 60_000)
    assert (regulated["authorize"], regulated["ban"]) == ([], [])
    k = tariff["effective_from"]
    window = f"--first {k - 1} --last {k + 2}"
    unset = {"price_consumption": None, "price_production": None, "default_limits": None}
    prices = {"price_consumption": 250_000, "price_production": 60_000, "default_limits": None}
    assert answer(dso.cli(f"tariff show {window} --json", token=auditor)) == {
        "first": k - 1,
        "last": k + 2,
        "runs": [
            {"first": k - 1, "last": k - 1, **unset},
            {"first": k, "last": k + 2, **prices},
        ],
    }
    assert table(dso.cli(f"tariff show {window}", token=auditor)) == (
        "prices per kWh and default limits (MAXEPA/MAXECA W)",
        [
            [dso.label(k - 1), "-", "-", "-"],
            [f"{dso.label(k)}..{k + 2}", "0.250000 EUR/kWh", "0.060000 EUR/kWh", "-"],
        ],
    )

    limits = ok(dso.cli("limits set --max-epa 2000 --max-eca 3000", token=op))
    assert limits == ["default limits set: " + dso.regulation_line(dso.latest_regulation())]

    authorize = f"meter authorize {METER} --public-key {METER_KEY} --owner o1 --json"
    authorized = answer(dso.cli(authorize, token=op))
    assert (authorized["status"], authorized["by"]) == ("accepted", "op1")
    assert authorized["transaction"]["authorize"] == [
        {"meter": METER, "public_key": METER_KEY, "max_epa": 2_000, "max_eca": 3_000}
    ]
    dso.wait_interval(authorized["effective_from"])
    meters = answer(dso.cli("meter list --json", token=auditor))
    assert meters["interval"] >= authorized["effective_from"]
    row = {
        "meter": METER,
        "public_key": METER_KEY,
        "max_epa": 2_000,
        "max_eca": 3_000,
        "state": "authorized",
        "owner": "o1",
        "follows_default_limits": True,
    }
    assert [m for m in meters["meters"] if m["meter"] == METER] == [row]
    title, rows = table(dso.cli(f"meter list --interval {meters['interval']}", token=auditor))
    assert title == f"meters at interval {dso.label(meters['interval'])}; limits in W"
    shown = _shown_ids(meters)
    assert [r for r in rows if r[0] == shown[METER]] == [
        [shown[METER], "authorized", "2000", "3000", "o1", elide_all([METER_KEY], 11)[METER_KEY]]
    ]

    banned = ok(dso.cli(f"meter ban {METER[:-3]}", token=op))  # a prefix of the id will do
    ban = dso.latest_regulation()
    assert banned == [f"{METER} banned: " + dso.regulation_line(ban)]
    assert ban["transaction"]["ban"] == [METER]
    after = answer(dso.cli(f"meter list --interval {ban['effective_from']} --json", token=auditor))
    assert [m for m in after["meters"] if m["meter"] == METER] == [{**row, "state": "banned"}]

    before = dso.now()
    bills = answer(dso.cli(f"bills --meter-id {METER} --json", token=auditor))
    assert bills["bills"] == [] and bills["first"] <= bills["last"]
    assert before - 1 <= bills["last"] <= dso.now() - 1  # the window ends with the last ended
    exported = dso.folder / "bills.csv"
    assert ok(dso.cli(f"bills --meter-id {METER} --csv", exported, token=auditor)) == [
        f"0 bills written to {exported}"
    ]
    assert exported.read_bytes() == (CSV_HEADER + "\r\n").encode()

    assert ok(dso.cli("statement o1", token=auditor)) == ["total 0.000000 EUR for o1"]
    statement = answer(dso.cli("statement o1 --json", token=auditor))
    assert (statement["owner"], statement["currency"], statement["total"]) == ("o1", "EUR", 0)
    assert (statement["meters"], statement["bills"]) == ([], [])

    entries = len(dso.api("GET", "/audit", params={"limit": 1000})["entries"])
    verdict = answer(dso.cli("audit verify --json", token=auditor))
    assert verdict == {"entries": entries, "intact": True, "problem": None}
    assert ok(dso.cli("audit verify", token=auditor)) == [f"audit log intact: {entries} entries"]


def test_a_meters_bill_is_listed_exported_and_stated(dso: DsoNode, team: Team) -> None:
    meter, key, owner = "MB-1", Keypair.generate(), 'flat 2, "B"/3?x'  # CSV and URL specials
    authorize = f"meter authorize {meter} --public-key {key.public_key.hex()} --json"
    limits = ("--max-epa", "10000", "--max-eca", "10000", "--owner", owner)
    authorized = answer(dso.cli(authorize, *limits, token=team.operator))
    t = authorized["effective_from"]
    dso.wait_interval(t + 1)  # a bill is for an interval that has ended
    prices = dso.api("GET", "/tariff", params={"interval": t})["runs"][0]
    height = httpx.get(f"{dso.ledger_url}/v1/head", timeout=10).json()["height"]
    bill = close_bill(
        chain=dso.scenario.chain,
        meter=meter,
        interval=t,
        closed_height=height,
        interval_s=INTERVAL_S,
        measured_j=3_600_000,
        issued_epa_w=0,
        deposited_epa_w=0,
        fa_issued=0,
        fa_deposited=0,
        price_consumption=prices["price_consumption"],
        price_production=prices["price_production"],
        issues=(),
        deposits=(),
    )
    posted = httpx.post(
        f"{dso.url}/v1/bills", content=encode_bill(sign_bill(bill, key)), timeout=30
    )
    assert posted.status_code == 201, posted.text
    stored = {k: v for k, v in posted.json().items() if k != "duplicate"}
    # The index has the bill's closing block: it is checked on arrival, and nothing is amiss.
    assert (stored["owner"], stored["status"], stored["discrepancies"]) == (owner, "reconciled", [])
    amount = stored["amount"]

    window = f"--meter-id {meter} --first {t} --last {t}"
    assert answer(dso.cli(f"bills {window} --json", token=team.auditor)) == {
        "first": t,
        "last": t,
        "bills": [stored],
    }
    assert table(dso.cli(f"bills {window}", token=team.auditor)) == (
        f"bills of intervals {dso.label(t)} to {dso.label(t)}",
        [
            [
                dso.label(t),
                meter,
                elide_all([owner], 11)[owner],
                format_money(amount),
                "reconciled",
            ],
        ],
    )
    exported = dso.folder / "bill.csv"
    assert ok(dso.cli(f"bills {window} --csv", exported, token=team.auditor)) == [
        f"1 bills written to {exported}"
    ]
    with exported.open(newline="") as f:
        header, row = csv.reader(f)
    assert ",".join(header) == CSV_HEADER
    start = datetime.fromtimestamp(dso.scenario.time_in(t), tz=UTC)
    assert dict(zip(header, row, strict=True)) == {
        "bill_id": stored["id"],
        "meter": meter,
        "owner": owner,
        "interval": str(t),
        "interval_start_utc": start.isoformat(),
        "closed_height": str(height),
        "measured_j": "3600000",
        "issued_epa_w": "0",
        "deposited_epa_w": "0",
        "fa_issued": "0",
        "fa_deposited": "0",
        "energy_j": str(bill.energy_j),
        "price_consumption": _cell(prices["price_consumption"]),
        "price_production": _cell(prices["price_production"]),
        "amount": str(amount),
        "status": "reconciled",
        "discrepancies": "",
    }

    stated = dso.cli(f"statement --first {t} --last {t}", owner, token=team.auditor)
    assert ok(stated) and stated.out == (
        f"{meter}: 1 bills, {format_money(amount)}, 0 not reconciled\n"
        f"total {format_money(amount)} for {owner}\n"
    )


def _cell(price: int | None) -> str:
    return "" if price is None else str(price)


def _shown_ids(listing: dict[str, Any]) -> dict[str, str]:
    """Each meter id of a `meter list --json` answer as the table shows it."""
    return elide_all(m["meter"] for m in (*listing["meters"], *listing["pending"]))


def test_a_meter_banned_before_its_authorization_lists_without_a_key(
    dso: DsoNode, team: Team
) -> None:
    meter, key = "MC-1", Keypair.generate().public_key.hex()
    later = dso.now() + 30
    authorize = f"meter authorize {meter} --public-key {key} --max-epa 1 --max-eca 1"
    ok(dso.cli(f"{authorize} --time {later}", token=team.operator))
    ban = answer(dso.cli(f"meter ban {meter} --json", token=team.operator))
    at = ban["effective_from"]
    assert at <= later
    listed = answer(dso.cli(f"meter list --interval {at} --json", token=team.auditor))
    assert [m for m in listed["meters"] if m["meter"] == meter] == [
        {
            "meter": meter,
            "public_key": None,
            "max_epa": 0,
            "max_eca": 0,
            "state": "banned",
            "owner": None,
            "follows_default_limits": False,
        }
    ]
    _, rows = table(dso.cli(f"meter list --interval {at}", token=team.auditor))
    assert [r for r in rows if r[0] == meter] == [[meter, "banned", "0", "0", "-", "-"]]


def test_the_controller_proposes_and_an_operator_accepts(dso: DsoNode, team: Team) -> None:
    policy = TEST_POLICY
    options = " ".join(
        f"--{k.replace('_', '-')} {v}{'µ' if k.endswith('price') else ''}"
        for k, v in policy.items()
    )
    assert ok(dso.cli(f"controller policy {options} --manual", token=team.operator)) == [
        "policy set: band -2000..2000 W, manual mode",
        "prices 0.010000 to 1.000000 EUR/kWh; an unset price starts at 0.200000 EUR/kWh",
    ]
    assert dso.api("GET", "/controller") == {"policy": policy, "auto": False}
    forecast = answer(dso.cli("forecast --first 5 --last 6 --json", token=team.auditor))
    assert (forecast["book"], [f["interval"] for f in forecast["intervals"]]) == ("none", [5, 6])
    # A proposal is for the next interval, 2 s away: start at the top of one to accept it in
    # time, and propose again if a loaded machine took longer (refused: "which has begun").
    for _ in range(5):
        dso.wait_interval(dso.now() + 1)
        proposed = ok(dso.cli("controller propose", token=team.operator))
        proposal = dso.api("GET", "/controller/proposals")["proposals"][0]
        accepting = dso.cli(f"controller accept {proposal['id']}", token=team.operator)
        if accepting.code == 0 or "has begun: propose again" not in " ".join(accepting.err.split()):
            break
    assert proposed == [
        f"proposal {proposal['id']} for interval {dso.label(proposal['interval'])}: "
        f"consumption {format_price(proposal['price_consumption'])}, "
        f"production {format_price(proposal['price_production'])}",
        "  " + proposal["reason"].partition(": consumption ")[0],  # why, without micro-units
    ]
    assert "net load" in proposed[1] and "micro" not in proposed[1]
    accepted = ok(accepting)
    regulation = dso.latest_regulation()
    assert accepted == ["accepted: " + dso.regulation_line(regulation)]
    assert regulation["effective_from"] == proposal["interval"]
    assert refused(dso.cli(f"controller accept {proposal['id']}", token=team.operator)) == (
        f"error: proposal {proposal['id']} is accepted (conflict)"
    )


# ---------------------------------------------------------------- refusals


def test_the_auditor_may_not_set_prices(dso: DsoNode, team: Team) -> None:
    assert refused(dso.cli("tariff set --consumption 1", token=team.auditor)) == (
        "error: operator aud1 (auditor) may not regulate: ask an admin for a role that may "
        "(forbidden)"
    )


def test_no_token_at_all_is_refused_before_asking(dso: DsoNode) -> None:
    assert refused(dso.cli("tariff set --consumption 1")) == (
        "error: give an operator token with --token-file or $PETRA_DSO_TOKEN"
    )


def test_a_time_in_the_past_is_refused(dso: DsoNode, team: Team) -> None:
    before = dso.now()
    line = refused(dso.cli("tariff set --consumption 1 --time 0", token=team.operator))
    after = dso.now()
    found = re.fullmatch(
        r"error: time 0 is in the past: the current interval is (\d+), so the earliest is "
        r"(\d+) \(in force from interval (\d+)\) \(regulation_in_past\)",
        line,
    )
    assert found is not None, line
    now, earliest, effective = map(int, found.groups())
    assert before <= now <= after and earliest == now and effective == now + 1


def test_banning_an_unknown_meter_is_refused(dso: DsoNode, team: Team) -> None:
    assert refused(dso.cli("meter ban NOPE-0001", token=team.operator)) == (
        "error: no regulation on the ledger names NOPE-0001 (meter_unknown)"
    )


def test_an_unreachable_node_is_one_sentence(team: Team) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = refused(petra("dso", "meter", "list", "--dso", url, "--token-file", team.operator))
    assert line.startswith(f"error: cannot reach {url}: "), line
    assert line.endswith(" (unreachable)"), line


def test_a_url_that_is_no_url_is_one_sentence(team: Team) -> None:
    run = petra("dso", "meter", "list", "--dso", "http://[::1", "--token-file", team.operator)
    assert refused(run).startswith("error: http://[::1 is not a URL of a DSO node: ")


def test_a_server_that_is_no_dso_node_is_one_sentence(team: Team) -> None:
    class Plain(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        run = petra("dso", "meter", "list", "--dso", url, "--token-file", team.operator)
    finally:
        server.shutdown()
        server.server_close()
    assert refused(run) == (
        f"error: {url} answered /meters with something else than JSON: is it a DSO node?"
    )


@pytest.mark.parametrize(
    "content",
    [pytest.param(b"\xca\xfe\xba\xbe\n", id="binary"), pytest.param("tökén\n".encode(), id="utf8")],
)
def test_a_token_file_without_a_token_is_one_sentence(
    dso: DsoNode, tmp_path: Path, content: bytes
) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    assert refused(dso.cli("meter list", token=token)) == (
        f"error: {token} does not hold an operator token (pdso_…)"
    )


def test_a_name_with_url_characters_stays_one_path_segment(dso: DsoNode, team: Team) -> None:
    statement = answer(dso.cli("statement o1?x=1 --json", token=team.auditor))
    assert statement["owner"] == "o1?x=1"  # not o1's statement
    assert refused(dso.cli(f"meter ban {METER}#x", token=team.operator)) == (
        "error: a meter id is 1-64 of A-Z a-z 0-9 . _ - (bad_request)"
    )


def test_bills_csv_into_a_missing_folder_is_refused(dso: DsoNode, team: Team) -> None:
    lost = dso.folder / "missing" / "bills.csv"
    assert refused(dso.cli("bills --csv", lost, token=team.auditor)) == (
        f"error: cannot write {lost}: the folder {lost.parent} does not exist"
    )


# ---------------------------------------------------------------- the vocabulary's displays

TWINS = ("ES0021000000000098AB", "ES0021000000000099AB")  # alike but for the end


def _narrow(run: Run) -> list[str]:
    """The lines of a command run at 80 columns, each checked to fit them."""
    lines = ok(run)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    return lines


def test_a_new_authorization_is_pending_until_it_takes_force_and_twins_stay_apart(
    dso: DsoNode, team: Team
) -> None:
    limits = ("--max-epa", "5000", "--max-eca", "5000", "--owner", "o-twins")
    authorized = [
        answer(
            dso.cli(
                f"meter authorize {meter} --public-key {Keypair.generate().public_key.hex()}",
                *limits,
                "--json",
                token=team.operator,
            )
        )
        for meter in TWINS
    ]
    starts = [a["effective_from"] for a in authorized]
    now = dso.now()
    listing = answer(dso.cli(f"meter list --interval {now} --json", token=team.auditor))
    shown = _shown_ids(listing)
    assert shown[TWINS[0]] != shown[TWINS[1]]
    assert all(len(shown[m]) < len(m) for m in TWINS)  # elided, in the middle
    waiting = {p["meter"]: p["effective_from"] for p in listing["pending"]}
    lines = _narrow(dso.cli(f"meter list --interval {now}", token=team.auditor, columns=80))
    for meter, start in zip(TWINS, starts, strict=True):
        if start > now:  # not in force yet: listed as pending, with when
            assert waiting[meter] == start
            line = f"pending: {shown[meter]} authorized from interval {dso.label(start)}"
            assert line in lines

    dso.wait_interval(max(starts))
    at = dso.now()
    listing = answer(dso.cli(f"meter list --interval {at} --json", token=team.auditor))
    shown = _shown_ids(listing)
    run = dso.cli(f"meter list --interval {at}", token=team.auditor, columns=80)
    _narrow(run)
    _, rows = table(run)
    firsts = [r[0] for r in rows]
    assert shown[TWINS[0]] in firsts and shown[TWINS[1]] in firsts
    assert shown[TWINS[0]] != shown[TWINS[1]]

    # A shared prefix is refused, naming both; a unique one is enough.
    assert refused(dso.cli(f"meter ban {TWINS[0][:-3]}", token=team.operator)) == (
        f"error: '{TWINS[0][:-3]}' is the start of 2 meters: {TWINS[0]}, {TWINS[1]}; "
        "give more of it"
    )


def test_every_table_fits_eighty_columns(dso: DsoNode, team: Team) -> None:
    now = dso.now()
    for command in (
        f"tariff show --first {max(now - 3, 0)} --last {now + 3}",
        f"forecast --all --first {now} --last {now + 3}",
        "bills",
        f"bills --first {max(now - 3, 0)} --last {now}",
        "meter list",
    ):
        _narrow(dso.cli(command, token=team.auditor, columns=80))


def test_the_forecast_shows_the_intervals_with_a_forecast_unless_asked_for_all(
    dso: DsoNode, team: Team
) -> None:
    meter, key = "FC-1", Keypair.generate()
    limits = "--max-epa 10000 --max-eca 10000"
    authorize = f"meter authorize {meter} --public-key {key.public_key.hex()} {limits} --json"
    authorized = answer(dso.cli(authorize, token=team.operator))
    dso.wait_interval(authorized["effective_from"])
    t = dso.now() + 3
    issue = dso.scenario.issue(meter, key, 1, [pay(Epa(1_500, t + 3, t + 4), key)])
    with LedgerClient(dso.ledger_url) as ledger:
        ledger.submit(encode_transaction(issue))
    window = f"--first {t} --last {t + 9}"
    deadline = time.monotonic() + 30
    while True:  # the node indexes the issue's block
        forecast = answer(dso.cli(f"forecast {window} --json", token=team.auditor))
        production = [f["production_w"] for f in forecast["intervals"]]
        if production == [0, 0, 0, 1_500, 1_500, 0, 0, 0, 0, 0]:
            break
        assert time.monotonic() < deadline, forecast
        time.sleep(0.2)

    shown = dso.cli(f"forecast {window}", token=team.auditor)
    _, rows = table(shown)
    assert [r[0] for r in rows] == [dso.label(t + 3), dso.label(t + 4)]
    assert [r[2] for r in rows] == ["1500", "1500"]
    assert ok(shown)[-1] == "8 intervals of zero forecast not shown; --all shows them"

    every = dso.cli(f"forecast {window} --all", token=team.auditor)
    _, rows = table(every)
    assert [r[0] for r in rows] == [dso.label(i) for i in range(t, t + 10)]
    assert "not shown" not in every.out


def test_bills_by_default_start_at_interval_zero_and_say_when_the_rest_arrive(
    dso: DsoNode, team: Team
) -> None:
    listed = answer(dso.cli("bills --json", token=team.auditor))
    assert listed["first"] == 0 <= listed["last"]  # the chain is younger than a day
    lines = ok(dso.cli("bills", token=team.auditor))
    title = re.fullmatch(r"bills of intervals (.+) to (\d+) \(.+\)", lines[0].strip())
    assert title is not None, lines
    assert title[1] == dso.label(0)
    assert title[0].endswith(dso.label(int(title[2])).partition(" ")[2])
    found = re.fullmatch(
        r"bills for intervals ≥ (\d+) arrive after ((?:\w{3} \d\d )?\d\d:\d\d): "
        r"the interval's end plus the meters' closing delay \(60 s by default\)",
        lines[-1],
    )
    assert found is not None, lines
    assert 0 <= int(found[1]) <= listed["last"] + 1  # the meters' closing delay is 60 s
    assert "micro" not in "\n".join(lines)


def test_the_old_spellings_still_work_and_warn(dso: DsoNode, team: Team) -> None:
    run = petra("dso", "audit", "verify", "--url", dso.url, "--token-file", team.auditor)
    assert run.code == 0, run
    assert run.out.startswith("audit log intact: ")
    assert run.err == (
        "warning: `petra dso audit verify --url` is now --dso; the old spelling goes in the "
        "next release\n"
    )
    old = petra(
        *("dso", "bills", "--meter", METER, "--json"),
        *("--url", dso.url, "--token-file", team.auditor),
    )
    assert old.code == 0, old
    assert json.loads(old.out)["first"] >= 0
    assert "`petra dso bills --meter` is now --meter-id" in old.err
