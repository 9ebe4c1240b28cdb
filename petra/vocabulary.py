"""The command line's one vocabulary (docs/cli.md): the shared options, money, assets, ids and
intervals as people read and write them, and the old spellings kept for one release."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from assets import Eca, Epa, Fa, Rejected
from assets.codec import asset_from_wire, asset_to_wire
from assets.money import MICRO as MICRO  # the command line's money is assets.money's
from assets.money import format_money as format_money
from assets.money import format_price as format_price
from assets.money import parse_money as parse_money
from petra.console import err, fail, warn

# ---------------------------------------------------------------------------------- options
# Each shared option's help starts with the words docs/cli.md gives it; the vocabulary test
# holds every command to them.


def ledger_option(more: str = "", **kwargs: Any) -> Any:
    return typer.Option("--ledger", help=f"The ledger's URL{more}.", **kwargs)


def dso_option(more: str = "", **kwargs: Any) -> Any:
    return typer.Option(
        "--dso", envvar="PETRA_DSO_URL", help=f"The DSO node's URL{more}.", **kwargs
    )


def meter_option(more: str = "", **kwargs: Any) -> Any:
    return typer.Option(
        "--meter", envvar="PETRA_METER_URL", help=f"The meter's URL{more}.", **kwargs
    )


def meter_id_option(more: str = "", envvar: str | None = "PETRA_METER_ID", **kwargs: Any) -> Any:
    """`--meter-id`; an owner's shell sets `$PETRA_METER_ID`, an operator's command passes
    `envvar=None` so that it never filters by a variable set for another purpose."""
    return typer.Option("--meter-id", envvar=envvar, help=f"The meter's id{more}.", **kwargs)


def bidstore_option(more: str = "") -> Any:
    return typer.Option("--bidstore", help=f"The bid store's URL{more}.")


def tor_socks_option(more: str = "") -> Any:
    """`--tor-socks`: the port of Tor's SOCKS proxy on this machine, to reach an onion bid
    store through."""
    help_text = f"Tor's SOCKS port on 127.0.0.1{more}."
    return typer.Option("--tor-socks", min=1, max=65535, help=help_text)


def json_option() -> Any:
    return typer.Option("--json", help="Print JSON for programs instead of text for people.")


def all_option(rows: str) -> Any:
    return typer.Option("--all", help=f"Show every {rows}.")


# ------------------------------------------------------------------------------------ money


def money_argument(text: str) -> int:
    """`parse_money` as an option's parser (`typer.Option(parser=money_argument)`): a bad
    amount is a usage error naming it."""
    try:
        return parse_money(str(text))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


# ----------------------------------------------------------------------------------- assets

_ASSET = re.compile(r"(?P<kind>epa|eca):(?P<power>\d+)w@(?P<start>-?\d+)(?:-(?P<end>-?\d+))?")
ASSET_SYNTAX = "epa:<W>W@<interval>[-<last>], eca:<W>W@<interval>[-<last>] or fa:<amount>"


def parse_asset(text: str) -> Epa | Eca | Fa:
    """`epa:1500W@120`, `eca:800W@120-123` (intervals, inclusive) or `fa:2.5EUR` (money as
    `parse_money` reads it). ValueError with a sentence."""
    lowered = text.strip().lower()
    asset: Epa | Eca | Fa
    if lowered.startswith("fa:"):
        try:
            asset = Fa(parse_money(text.strip()[3:]))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
    else:
        match = _ASSET.fullmatch(lowered)
        if match is None:
            raise ValueError(f"{text!r} is not an asset: write {ASSET_SYNTAX}")
        first = int(match["start"])
        last = int(match["end"]) if match["end"] is not None else first
        power = int(match["power"])
        asset = Epa(power, first, last) if match["kind"] == "epa" else Eca(power, first, last)
    try:  # the ledger's own rules: positive amounts, intervals in order, exact in JSON
        return asset_from_wire(asset_to_wire(asset))
    except Rejected as exc:
        raise ValueError(f"{text!r}: {exc.message}") from None


def asset_argument(text: str) -> Epa | Eca | Fa:
    """`parse_asset` for a command's argument: a bad asset is a usage error naming it."""
    try:
        return parse_asset(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def format_asset(asset: Epa | Eca | Fa, currency: str = "EUR") -> str:
    """An asset in the syntax `parse_asset` reads (money as people read it)."""
    if isinstance(asset, Fa):
        return f"fa:{format_money(asset.amount, currency).replace(' ', '')}"
    kind = "epa" if isinstance(asset, Epa) else "eca"
    span = f"{asset.start}" if asset.start == asset.end else f"{asset.start}-{asset.end}"
    return f"{kind}:{asset.power}W@{span}"


# -------------------------------------------------------------------------------------- ids

ELLIPSIS = "…"
MIN_PREFIX = 4


def elide(identifier: str, width: int = 13) -> str:
    """`identifier` in at most `width` characters, the middle elided: ids differ at both ends
    (hashes anywhere, meter ids at the end), so neither end alone tells two apart."""
    if len(identifier) <= width:
        return identifier
    keep = width - len(ELLIPSIS)
    head = (keep + 1) // 2
    return f"{identifier[:head]}{ELLIPSIS}{identifier[len(identifier) - (keep - head) :]}"


def elide_all(identifiers: Iterable[str], width: int = 13) -> dict[str, str]:
    """Each id elided to `width`, or wider where two would look alike, so none do."""
    ids = sorted(set(identifiers))
    longest = max((len(i) for i in ids), default=0)
    while True:
        shown = {i: elide(i, width) for i in ids}
        if len(set(shown.values())) == len(ids) or width >= longest:
            return shown
        width += 2


def resolve_prefix(prefix: str, candidates: Iterable[str], what: str) -> str:
    """The one candidate starting with `prefix` (case-insensitive); otherwise exit with a
    sentence: too short, none, or the candidates it could be."""
    given = prefix.strip().lower()
    if len(given) < MIN_PREFIX:
        fail(f"{what} {prefix!r} is too short: give at least {MIN_PREFIX} characters of it")
    found = sorted({c for c in candidates if c.lower().startswith(given)})
    if len(found) == 1:
        return found[0]
    if not found:
        fail(f"no {what} starts with {prefix!r}")
    ambiguous(prefix, found, what)


def ambiguous(prefix: str, found: Sequence[str], what: str) -> NoReturn:
    named = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    plural = f"{what}es" if what.endswith(("s", "x", "sh", "ch")) else f"{what}s"
    fail(f"{prefix!r} is the start of {len(found)} {plural}: {named}; give more of it")


# -------------------------------------------------------------------------------- intervals


def local_time(unix: float, *, with_date: bool = True) -> str:
    """A Unix time as this machine's local time, to the minute: `Jun 21 10:00`."""
    moment = datetime.fromtimestamp(unix).astimezone()
    return moment.strftime("%b %d %H:%M" if with_date else "%H:%M")


def interval_start(index: int, epoch: int, interval_s: int) -> int:
    """The Unix time interval `index` starts at."""
    return epoch + index * interval_s


def interval_label(index: int, epoch: int, interval_s: int) -> str:
    """An interval with its local start time: `120 (Jun 21 10:00)`."""
    return f"{index} ({local_time(interval_start(index, epoch, interval_s))})"


# ---------------------------------------------------------------------------- old spellings
# Command path -> {old option: new option}. Each old spelling works for one release, hidden
# from --help, and warns (docs/cli.md, Old spellings).

_DSO_CLIENTS = (
    ("dso", "audit", "verify"),
    ("dso", "bills"),
    ("dso", "controller", "accept"),
    ("dso", "controller", "policy"),
    ("dso", "controller", "propose"),
    ("dso", "forecast"),
    ("dso", "limits", "set"),
    ("dso", "meter", "authorize"),
    ("dso", "meter", "ban"),
    ("dso", "meter", "list"),
    ("dso", "operator", "add"),
    ("dso", "operator", "revoke"),
    ("dso", "statement"),
    ("dso", "tariff", "set"),
    ("dso", "tariff", "show"),
)
_METER_CLIENTS = (
    ("meter", "bills"),
    ("meter", "deposit-address"),
    ("meter", "status"),
    ("meter", "withdraw"),
)

RENAMED: dict[tuple[str, ...], dict[str, str]] = {
    ("ledger", "audit"): {"--node": "--ledger"},
    ("ledger", "verify-proof"): {"--node": "--ledger"},
    ("ledger", "replicate"): {"--from": "--ledger"},
    ("bidstore", "status"): {"--store": "--bidstore"},
    ("bidstore", "book"): {"--store": "--bidstore"},
    **{path: {"--url": "--dso"} for path in _DSO_CLIENTS},
    **{path: {"--url": "--meter"} for path in _METER_CLIENTS},
    ("wallet", "init"): {"--meter-url": "--meter"},
    ("wallet", "config"): {"--meter-url": "--meter"},
    ("wallet", "bill"): {"--from": "--first", "--to": "--last"},
    ("sim", "up"): {"--folder": "--dir"},
    ("sim", "down"): {"--folder": "--dir"},
    ("sim", "serve-community"): {"--folder": "--dir"},
    ("sim", "run"): {"--report-dir": "--dir"},
}
RENAMED[("dso", "bills")]["--meter"] = "--meter-id"
# `--meter` was the meter's id in these commands and is now its URL: an old use is told apart
# by its value, which is not a URL.
METER_ID_WAS_METER = frozenset(_METER_CLIENTS)


def command_path(group: Any, args: Sequence[str]) -> tuple[str, ...]:
    """The sub-command names at the head of `args` (`("wallet", "bill")`)."""
    path: list[str] = []
    command = group
    for arg in args:
        commands = getattr(command, "commands", None)
        if commands is None or arg not in commands:
            break
        path.append(arg)
        command = commands[arg]
    return tuple(path)


def renew_spellings(path: tuple[str, ...], args: Sequence[str]) -> list[str]:
    """`args` with every old spelling of `path`'s options replaced by its new one, warning
    once per spelling."""
    renames = RENAMED.get(path, {})
    renewed: list[str] = []
    told: set[str] = set()
    items = list(args)
    for n, arg in enumerate(items):
        if arg == "--":
            renewed.extend(items[n:])
            break
        name, eq, value = arg.partition("=")
        new = renames.get(name) if name.startswith("--") else None
        if path in METER_ID_WAS_METER and name == "--meter":
            given = value if eq else (items[n + 1] if n + 1 < len(items) else "")
            if "://" not in given:
                new = "--meter-id"
        if new is None:
            renewed.append(arg)
            continue
        if name not in told:
            told.add(name)
            warn(
                f"`petra {' '.join(path)} {name}` is now {new}; the old spelling goes in the "
                "next release"
            )
        renewed.append(f"{new}={value}" if eq else new)
    return renewed


def _unwrap(text: str | None) -> str | None:
    """A docstring's paragraphs each as one line, so help wraps at the terminal's width and
    not where the source did; lines starting a list item or indented stay lines."""
    if not text:
        return text
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        lines = paragraph.splitlines()
        joined = lines[0].strip() if lines else ""
        for line in lines[1:]:
            if line.startswith((" ", "-", "*", "\b")) or not line.strip():
                joined += "\n" + line
            else:
                joined += " " + line.strip()
        paragraphs.append(joined)
    return "\n\n".join(paragraphs)


def _unwrap_all(command: Any) -> None:
    command.help = _unwrap(command.help)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = " ".join(param.help.split())
    for sub in getattr(command, "commands", {}).values():
        _unwrap_all(sub)


class PetraGroup(TyperGroup):
    """The root `petra` group: renews old spellings before click reads the arguments, and
    gives every help text one line per paragraph."""

    def main(self, args: Sequence[str] | None = None, *a: Any, **kw: Any) -> Any:
        given = list(sys.argv[1:] if args is None else args)
        _unwrap_all(self)
        renewed = renew_spellings(command_path(self, given), given)
        return super().main(renewed, *a, **kw)


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"petra {version('petra')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "petra (not installed)"


def print_version(value: bool) -> None:
    if value:
        err.file.flush()
        typer.echo(version_text())
        raise typer.Exit()
