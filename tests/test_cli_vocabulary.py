"""Every command's `--help` against docs/cli.md: an option of the vocabulary means the same
thing wherever it appears (its help starts with the words the page gives it), no command shows
a retired spelling, the page's table of old spellings is the one the command line renews, and
every help fits 80 columns."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from petra.cli import app
from petra.vocabulary import METER_ID_WAS_METER, RENAMED

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
# Spellings no command may show: the old ones, and names a newcomer would guess for an idea
# the vocabulary names otherwise.
RETIRED = {
    "--node",
    "--url",
    "--meter-url",
    "--folder",
    "--report-dir",
    "--ledger-url",
    "--dso-url",
    "--mixer-url",
    "--bidstore-url",
    "--database",
    "--db",
    "--passphrase",
}


def _section(title: str) -> str:
    text = CLI_MD.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def vocabulary() -> dict[str, str]:
    """Each option of docs/cli.md's Options table -> the words its help starts with."""
    words: dict[str, str] = {}
    for line in _section("Options").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`--"):
            continue
        options = re.findall(r"`(--[a-z-]+)`", cells[0])
        starts = [s.strip() for s in cells[2].split(",")]
        assert len(starts) == len(options), line
        words.update(zip(options, starts, strict=True))
    return words


def commands(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    command = command or typer.main.get_command(app)
    subs = getattr(command, "commands", None)
    if subs is None:
        yield " ".join(("petra", *path)), command
        return
    for name, sub in sorted(subs.items()):
        yield from commands(sub, (*path, name))


def visible_options(command: Any) -> Iterator[tuple[str, str]]:
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or getattr(param, "hidden", False):
            continue
        for name in (*param.opts, *param.secondary_opts):
            yield name, " ".join((param.help or "").split())


ALL = list(commands())


def test_the_vocabulary_table_is_read() -> None:
    words = vocabulary()
    assert {"--ledger", "--dso", "--meter", "--store", "--json", "--first", "--last"} <= set(words)


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_each_option_of_the_vocabulary_means_what_the_page_says(name: str, command: Any) -> None:
    words = vocabulary()
    for option, help_text in visible_options(command):
        assert option not in RETIRED, f"{name} shows the retired spelling {option}"
        if option in words:
            assert help_text.startswith(words[option]), (
                f"{name} {option}: help {help_text!r} should start with {words[option]!r}"
            )


def test_an_idea_of_the_vocabulary_has_one_name_everywhere() -> None:
    """The reverse: help that starts with a vocabulary option's words is that option's."""
    words = vocabulary()
    distinctive = {w: o for o, w in words.items() if w.startswith("The ") and "URL" in w}
    for name, command in ALL:
        for option, help_text in visible_options(command):
            for start, owner in distinctive.items():
                if help_text.startswith(start):
                    assert option == owner, f"{name} {option} is {owner} by its help"


def test_the_page_lists_exactly_the_old_spellings_the_command_line_renews() -> None:
    documented = set()
    for line in _section("Old spellings").splitlines():
        match = re.fullmatch(
            r"\| `petra ([a-z -]+)` \| `(--[a-z-]+)`( \(an id\))? \| `(--[a-z-]+)` \|", line
        )
        if match:
            documented.add((tuple(match[1].split()), match[2], match[4], bool(match[3])))
    expected = {(p, old, new, False) for p, r in RENAMED.items() for old, new in r.items()}
    expected |= {(p, "--meter", "--meter-id", True) for p in METER_ID_WAS_METER}
    assert documented == expected


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_every_help_fits_eighty_columns(name: str, command: Any) -> None:
    args = [*name.split()[1:], "--help"]
    shown = CliRunner().invoke(app, args, env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
