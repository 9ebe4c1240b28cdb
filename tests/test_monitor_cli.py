"""`petra monitor ...` as a community manager runs it: a community, its master data from the
shipped examples, feeds, users and keys; every refusal one sentence (exit 2), nothing
half-imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from monitoring.auth import log_in
from monitoring.keys import grant_of
from monitoring.store import MonitoringStore
from petra.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
MASTER = [
    EXAMPLES / f"masterdata_{kind}.csv" for kind in ("members", "installations", "supply_points")
]
PASSWORD = "a password long enough"


def petra(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["monitor", *map(str, args)])


def refused(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'monitor.sqlite'}"
    done = petra(
        "community", "add", "valle", "--name", "Valle Solar", "--timezone", "Europe/Madrid",
        "--price", "0.15", "--export-price", "0.05", "--store", url,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return url


def test_a_community_is_added_with_its_prices_and_listed(store: str) -> None:
    listed = petra("community", "list", "--json", "--store", store)
    assert listed.exit_code == 0
    (community,) = json.loads(listed.output)
    assert (community["id"], community["timezone"]) == ("valle", "Europe/Madrid")
    assert (community["price_micro_per_kwh"], community["export_micro_per_kwh"]) == (
        150_000,
        50_000,
    )
    text = petra("community", "list", "--store", store).output
    assert "0.150000" in text and "EUR/kWh" in text
    assert "unknown time zone" in refused(
        petra(
            "community", "add", "x", "--name", "X", "--timezone", "Mars/Olympus", "--store", store
        )
    )
    # An old script's micro-units are refused, never read as euros.
    assert "ambiguous" in refused(
        petra("community", "add", "x", "--name", "X", "--price", "150000", "--store", store)
    )


def test_the_shipped_master_data_imports_and_a_bad_file_imports_nothing(
    store: str, tmp_path: Path
) -> None:
    done = petra("import", "members", *MASTER, "--community", "valle", "--store", store)
    assert done.exit_code == 0, done.output
    assert "members: 3 created" in done.output and "supply points: 4 created" in done.output
    bad = tmp_path / "supply_points.csv"
    bad.write_text(
        "cups,member,kind,contracted_kw\n"
        "ES0021000000000003WT,S-001,consumption,3.45\n"
        "ES0021000000000004XX,S-001,consumption,3.45\n"
    )
    output = refused(petra("import", "members", bad, "--community", "valle", "--store", store))
    assert "line 3" in output and "control letters" in output
    assert "nothing was imported" in output
    database = MonitoringStore(store)
    try:
        assert database.member_by_ref("valle", "S-001") is not None
        assert database.feeds() == []
    finally:
        database.close()
    good_rows = petra(
        "import", "members", bad, "--community", "valle", "--good-rows", "--store", store
    )
    assert good_rows.exit_code == 0, good_rows.output
    assert "supply points: 1 created" in good_rows.output


def test_feeds_are_declared_one_by_one_or_from_a_file_and_a_wrong_line_saves_nothing(
    store: str, tmp_path: Path
) -> None:
    assert (
        petra("import", "members", *MASTER, "--community", "valle", "--store", store).exit_code == 0
    )
    done = petra(
        "feed", "set", "casa1", "import_kwh", "--kind", "counter", "--unit", "kWh",
        "--supply-point", "ES0021000000000001RK", "--role", "consumption", "--store", store,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    listing = tmp_path / "feeds.csv"
    listing.write_text(
        "node,name,kind,unit,supply_point,role,min,max\n"
        "casa2,power,power,W,ES0021000000000002RE,consumption,,12000\n"
        "casa3,power,watts,W,,,,\n"
    )
    output = refused(petra("feed", "import", listing, "--store", store))
    assert "feed 2 (casa3/power)" in output and "kind" in output
    listed = json.loads(petra("feed", "list", "--json", "--store", store).output)
    assert [(f["node"], f["name"], f["role"]) for f in listed] == [
        ("casa1", "import_kwh", "consumption")
    ]
    listing.write_text(
        "node,name,kind,unit,supply_point,role,min,max\n"
        "casa2,power,power,W,ES0021000000000002RE,consumption,,12000\n"
    )
    assert petra("feed", "import", listing, "--store", store).exit_code == 0
    listed = json.loads(
        petra("feed", "list", "--community", "valle", "--json", "--store", store).output
    )
    assert {(f["node"], f["max_ok"]) for f in listed} == {("casa1", None), ("casa2", 12000.0)}
    assert "no supply point" in refused(
        petra("feed", "set", "casa9", "p", "--supply-point", "ES0021000000000009GG", "--role",
              "consumption", "--store", store)
    )  # fmt: skip


def test_users_log_in_with_the_password_given_and_keys_grant_what_they_say(
    store: str, tmp_path: Path
) -> None:
    assert (
        petra("import", "members", *MASTER, "--community", "valle", "--store", store).exit_code == 0
    )
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    done = petra(
        "user", "add", "ana", "--role", "member", "--community", "valle", "--member", "S-001",
        "--password-file", password, "--store", store,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "import it first" in refused(
        petra("user", "add", "zoe", "--role", "member", "--community", "valle", "--member",
              "S-404", "--password-file", password, "--store", store)
    )  # fmt: skip
    assert "--community" in refused(
        petra(
            "user", "add", "lu", "--role", "manager", "--password-file", password, "--store", store
        )
    )
    users = json.loads(petra("user", "list", "--json", "--store", store).output)
    assert [(u["username"], u["role"]) for u in users] == [("ana", "member")]
    assert all("password_hash" not in u for u in users)
    created = petra("key", "create", "emonhub", "--write", "--community", "valle", "--store", store)
    assert created.exit_code == 0, created.output
    key = created.output.strip()
    database = MonitoringStore(store)
    try:
        assert log_in(database, "ana", PASSWORD, 2_000_000_000) > 0
        grant = grant_of(database, key, 2_000_000_000)
        assert grant is not None and (grant.access, grant.community_id) == ("write", "valle")
    finally:
        database.close()
    assert "label" in refused(petra("key", "create", " ", "--store", store))
    keys = petra("key", "list", "--store", store).output
    assert "emonhub" in keys and key not in keys
    assert petra("key", "revoke", "emonhub", "--store", store).exit_code == 0
    database = MonitoringStore(store)
    try:
        assert grant_of(database, key, 2_000_000_000) is None
    finally:
        database.close()


def test_nothing_refused_yet_says_so_and_datadis_months_are_checked_before_asking(
    store: str, tmp_path: Path
) -> None:
    assert petra("refusals", "--store", store).output.strip() == "nothing refused"
    password = tmp_path / "datadis"
    password.write_text("secret\n")
    output = refused(
        petra("datadis", "fetch", "--username", "12345678Z", "--password-file", password,
              "--first-month", "2026-13", "--base-url", "http://127.0.0.1:9", "--store", store)
    )  # fmt: skip
    assert "YYYY-MM" in output
