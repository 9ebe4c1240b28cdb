"""The command line's vocabulary (docs/cli.md) in process: money read and shown, the one asset
syntax, ids elided and resolved by prefix, and old spellings renewed with a warning."""

from __future__ import annotations

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from assets import Eca, Epa, Fa
from petra.vocabulary import (
    ELLIPSIS,
    RENAMED,
    elide,
    elide_all,
    format_asset,
    format_money,
    parse_asset,
    parse_money,
    renew_spellings,
    resolve_prefix,
)

# -- money


@pytest.mark.parametrize(
    ("micro", "shown"),
    [
        (0, "0.000000 EUR"),
        (1, "0.000001 EUR"),
        (1_234_567, "1.234567 EUR"),
        (-1_234_567, "-1.234567 EUR"),
        (12_345_000_000, "12,345.000000 EUR"),
    ],
)
def test_money_is_shown_as_whole_units_with_six_decimals(micro: int, shown: str) -> None:
    assert format_money(micro) == shown


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("0.15", 150_000),
        ("0.15EUR", 150_000),
        ("0.15 EUR", 150_000),
        ("0.15 eur", 150_000),
        (".5", 500_000),
        ("2", 2_000_000),
        ("999", 999_000_000),
        ("1000EUR", 1_000_000_000),
        ("1000.0", 1_000_000_000),
        ("150000µ", 150_000),
        ("150000u", 150_000),
        ("-0.000001", -1),
    ],
)
def test_money_is_read_in_whole_units_or_marked_micro_units(text: str, micro: int) -> None:
    assert parse_money(text) == micro


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("150000", "ambiguous"),  # micro-units before: read as euros it would cost 1e6 times more
        ("1000", "ambiguous"),
        ("0.0000001", "more than six decimals"),
        ("1.5µ", "whole numbers"),
        ("2USD", "currency is EUR"),
        ("", "not an amount"),
        ("ten", "not an amount"),
        ("1e6", "not an amount"),
        ("1,000", "not an amount"),
    ],
)
def test_money_refuses_what_it_cannot_read_for_sure(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_money(text)


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_money_shown_reads_back_as_the_same_micro_units(micro: int) -> None:
    assert parse_money(format_money(micro).replace(",", "")) == micro


# -- assets


@pytest.mark.parametrize(
    ("text", "asset"),
    [
        ("epa:1500W@120", Epa(1500, 120, 120)),
        ("eca:800W@120-123", Eca(800, 120, 123)),
        ("fa:2.5EUR", Fa(2_500_000)),
        ("fa:2.5", Fa(2_500_000)),
        ("fa:2500000µ", Fa(2_500_000)),
        ("EPA:1500w@120", Epa(1500, 120, 120)),
        ("  eca:1W@7-7 ", Eca(1, 7, 7)),
        ("fa:1", Fa(1_000_000)),
        ("fa:1µ", Fa(1)),
    ],
)
def test_parse_asset_reads_each_kind(text: str, asset: Epa | Eca | Fa) -> None:
    assert parse_asset(text) == asset


@pytest.mark.parametrize(
    "text",
    [
        "",
        "epa",
        "epa:1500@120",
        "epa:1500W",
        "epa:W@120",
        "epa:1.5W@120",
        "epa:1500W@120-",
        "epa:1500W@120-123-125",
        "eca:-800W@120",
        "fa:",
        "fa:-1",
        "fa:2500000",  # micro-units before, ambiguous now
        "fa:1e6",
        "fa:2500000W",
        "fee:100",
        "epa :1500W@120",
        "epa:1500W@120 123",
        "eca:0W@7",  # the ledger's own rules: power and amounts are positive,
        "fa:0",
        "eca:800W@123-120",  # intervals in order,
        f"fa:{2**53}µ",  # and exact in any JSON reader
        f"epa:{2**53}W@1",
    ],
)
def test_parse_asset_refuses_anything_else_naming_it(text: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_asset(text)
    assert repr(text) in str(refused.value)


@given(
    power=st.integers(min_value=1, max_value=10**12),
    first=st.integers(min_value=0, max_value=10**9),
    length=st.integers(min_value=0, max_value=1_000),
    kind=st.sampled_from([Epa, Eca]),
)
def test_an_energy_asset_shown_reads_back(
    power: int, first: int, length: int, kind: type[Epa] | type[Eca]
) -> None:
    asset = kind(power, first, first + length)
    assert parse_asset(format_asset(asset)) == asset


@given(amount=st.integers(min_value=1, max_value=2**53 - 1))
def test_an_amount_shown_reads_back(amount: int) -> None:
    assert parse_asset(format_asset(Fa(amount)).replace(",", "")) == Fa(amount)


# -- ids


def test_an_id_is_elided_in_the_middle_keeping_both_ends() -> None:
    meter = "ES0021000000000001AB"
    shown = elide(meter, 13)
    assert len(shown) == 13
    assert shown.startswith("ES0021") and shown.endswith("01AB") and ELLIPSIS in shown
    assert elide("short", 13) == "short"


@given(
    st.lists(
        st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=40), min_size=1, max_size=30
    ),
    st.integers(min_value=5, max_value=20),
)
def test_no_two_ids_look_alike_once_elided(ids: list[str], width: int) -> None:
    shown = elide_all(ids, width)
    assert len(set(shown.values())) == len(set(ids))
    for identifier, text in shown.items():
        if ELLIPSIS not in text:
            assert text == identifier


def test_meter_ids_sharing_their_first_fourteen_characters_stay_apart() -> None:
    ids = ["ES0021000000000001AB", "ES0021000000000002AB"]
    assert len(set(elide_all(ids, 13).values())) == 2


def test_an_ambiguous_prefix_names_its_candidates_in_plain_english(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit):
        resolve_prefix("abcd", ["abcd01", "abcd02"], "address")
    assert "is the start of 2 addresses: abcd01, abcd02" in capsys.readouterr().err


def test_a_prefix_resolves_to_its_one_id() -> None:
    ids = ["3f9a2c" + "0" * 58, "3f9b00" + "1" * 58]
    assert resolve_prefix("3F9A", ids, "transaction") == ids[0]


@pytest.mark.parametrize(
    ("prefix", "sentence"),
    [
        ("3f9", "too short"),
        ("3f9c", "no transaction starts with '3f9c'"),
        ("3f9a", "is the start of 2 transactions: 3f9a"),
    ],
)
def test_a_prefix_that_is_not_one_id_is_refused_naming_why(
    prefix: str, sentence: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = ["3f9a2c" + "0" * 58, "3f9a00" + "1" * 58]
    with pytest.raises(typer.Exit):
        resolve_prefix(prefix, ids, "transaction")
    assert sentence in " ".join(capsys.readouterr().err.split())


# -- old spellings


def test_an_old_spelling_is_renewed_with_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ledger", "audit", "--node", "http://a", "--node=http://b", "--json"]
    renewed = renew_spellings(("ledger", "audit"), args)
    assert renewed == ["ledger", "audit", "--ledger", "http://a", "--ledger=http://b", "--json"]
    warned = capsys.readouterr().err
    assert warned.count("warning") == 1 and "--ledger" in warned


def test_the_same_word_is_renewed_only_where_it_was_renamed() -> None:
    args = ["wallet", "backup", "--to", "backup.json"]
    assert renew_spellings(("wallet", "backup"), args) == args
    bill = ["wallet", "bill", "--from", "3", "--to", "5"]
    assert renew_spellings(("wallet", "bill"), bill)[2:] == ["--first", "3", "--last", "5"]


def test_values_after_a_double_dash_are_left_alone() -> None:
    args = ["ledger", "audit", "--", "--node"]
    assert renew_spellings(("ledger", "audit"), args) == args


@pytest.mark.parametrize(
    ("given", "renewed"),
    [
        (["--meter", "ES0021000000000001AB"], ["--meter-id", "ES0021000000000001AB"]),
        (["--meter=ES0021000000000001AB"], ["--meter-id=ES0021000000000001AB"]),
        (["--meter", "http://127.0.0.1:7440"], ["--meter", "http://127.0.0.1:7440"]),
        (["--url", "http://127.0.0.1:7440"], ["--meter", "http://127.0.0.1:7440"]),
    ],
)
def test_a_meter_command_tells_an_old_meter_id_from_a_new_meter_url(
    given: list[str], renewed: list[str]
) -> None:
    assert renew_spellings(("meter", "status"), given) == renewed


def test_every_renamed_command_and_new_option_exists() -> None:
    from petra.cli import app

    root = typer.main.get_command(app)
    for path, renames in RENAMED.items():
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        for old, new in renames.items():
            assert new in options, f"petra {' '.join(path)} has no {new}"
            assert old not in options or old == new, f"petra {' '.join(path)} still shows {old}"
