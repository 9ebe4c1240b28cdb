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
from rich.console import Console

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
        help=f"File holding the wallet's passphrase (else ${PASSPHRASE_ENV}, else a prompt).",
        exists=True,
        dir_okay=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


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
    """The `Wallet` in `path`; every WalletError or KeystoreError inside is one sentence."""
    from wallet.keystore import KeystoreError, WalletFile
    from wallet.wallet import Wallet, WalletError

    where = wallet_path(path)
    try:
        yield Wallet(WalletFile.open(where, passphrase(passfile)))
    except KeystoreError as exc:
        fail(f"{where}: {exc.message}")
    except WalletError as exc:
        fail(exc.message)


def emit(as_json: bool, document: Any) -> bool:
    """Print `document` as JSON and say so, when `as_json`."""
    if as_json:
        out.print_json(json.dumps(document))
    return as_json
