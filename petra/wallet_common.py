"""What every `petra wallet` command shares: where the wallet file is, its passphrase, opening
it with one-sentence errors, and printing for a person or as JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from petra.console import PASSPHRASE_ENV, fail, read_passphrase

out = Console()

WALLET_ENV = "PETRA_WALLET"
DEFAULT_WALLET = Path("~/.petra/wallet.json")

WalletPath = Annotated[
    Path | None,
    typer.Option(
        "--wallet",
        help=f"The wallet file (else ${WALLET_ENV}, else {DEFAULT_WALLET}).",
        dir_okay=False,
    ),
]
PassFile = Annotated[
    Path | None,
    typer.Option(
        help=(
            "File holding the wallet's passphrase, needed unless `petra wallet unlock` opened "
            f"it for this terminal (else ${PASSPHRASE_ENV}, else a prompt)."
        ),
        exists=True,
        dir_okay=False,
    ),
]
Json = Annotated[
    bool, typer.Option("--json", help="Print JSON for programs instead of text for people.")
]


def wallet_path(given: Path | None) -> Path:
    if given is not None:
        return given
    from_env = os.environ.get(WALLET_ENV)
    return Path(from_env) if from_env else DEFAULT_WALLET.expanduser()


def passphrase(file: Path | None, *, confirm: bool = False) -> bytes:
    """The passphrase from `file`, the environment or a prompt (asked twice with `confirm`)."""
    value = read_passphrase(file)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        fail(
            "the wallet's passphrase is needed: give --passphrase-file or set "
            f"${PASSPHRASE_ENV} (no terminal to ask on)"
        )
    answer: str = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    return answer.encode()


@contextmanager
def opened(path: Path | None, passfile: Path | None) -> Iterator[Any]:
    """The `Wallet` in `path`, opened by the agent of this terminal session if one holds it
    (`petra wallet unlock`), else with its passphrase; every WalletError or KeystoreError
    inside is one sentence."""
    from wallet.keystore import KeystoreError, WalletFile
    from wallet.wallet import Wallet, WalletError

    where = wallet_path(path)
    try:
        file = from_agent(where) or WalletFile.open(where, passphrase(passfile))
        yield Wallet(file)
    except KeystoreError as exc:
        fail(f"{where}: {exc.message}")
    except WalletError as exc:
        fail(exc.message)


def from_agent(where: Path) -> Any:
    """The `WalletFile` at `where` opened with the key the agent of this terminal session
    holds for it; None if no agent does, or its key no longer opens the file (sealed anew)."""
    from wallet.agent import held_key
    from wallet.keystore import KeystoreError, WalletFile

    key = held_key(where)
    if key is None:
        return None
    try:
        return WalletFile.open_with_key(where, key)
    except KeystoreError as exc:
        if exc.code == "wrong_passphrase":
            return None
        raise


def emit(as_json: bool, document: Any) -> bool:
    """Print `document` as JSON and say so, when `as_json`."""
    if as_json:
        out.print_json(json.dumps(document))
    return as_json


def table(*columns: str) -> Table:
    """A table for a person at an 80-column terminal: a rule under the header, two spaces
    between columns and no frame (a frame costs three columns per column)."""
    return Table(
        *columns,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
