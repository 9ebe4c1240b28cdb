"""What every `petra` command shares: one-sentence errors and warnings on standard error, and
reading genesis files, key files and passphrases."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from assets import Genesis, Keypair, Rejected, parse_genesis
from assets.keyfile import KeyFileError, load_keys

if TYPE_CHECKING:
    from service.serving import ServeLimits

err = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width
PASSPHRASE_ENV = "PETRA_PASSPHRASE"

PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        help=f"File holding the key file's passphrase (else ${PASSPHRASE_ENV}).",
        exists=True,
        dir_okay=False,
    ),
]


def fail(message: str) -> NoReturn:
    """Say what went wrong in one sentence and exit 2."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase from `path` (first line) or the environment; None when neither is given."""
    if path is not None:
        lines = path.read_bytes().splitlines()
        return lines[0] if lines else b""
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value is not None else None


def read_genesis(path: Path) -> tuple[bytes, Genesis]:
    try:
        raw = path.read_bytes()
        return raw, parse_genesis(raw)
    except OSError as exc:
        fail(f"cannot read the genesis {path}: {exc.strerror}")
    except Rejected as exc:
        fail(f"{path} is not a valid genesis: {exc.message}")


def read_keys(path: Path, passphrase_file: Path | None) -> dict[str, Keypair]:
    try:
        return load_keys(path.read_bytes(), read_passphrase(passphrase_file))
    except OSError as exc:
        fail(f"cannot read the key file {path}: {exc.strerror}")
    except KeyFileError as exc:
        fail(f"{path}: {exc}")


def write_private(path: Path, data: bytes) -> None:
    """Write `data` readable by its owner only, replacing `path` atomically and durably: a
    temporary file of a unique name beside it (two writers never share one), fsynced,
    renamed over `path`, then the directory fsynced so the rename survives a crash."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp creates the file 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_ledger_genesis(url: str, genesis: Genesis, genesis_path: Path) -> None:
    """Exit with one sentence unless the ledger at `url` answers with `genesis`."""
    from ledger.client import LedgerClient, LedgerClientError

    with LedgerClient(url, retries=0) as client:
        try:
            served = client.genesis()
        except LedgerClientError as exc:
            fail(f"cannot read the ledger's genesis at {url}: {exc}")
    if served != genesis:
        fail(f"the ledger at {url} serves another chain than {genesis_path}")


def serve_limits() -> ServeLimits:
    """The serving limits the environment sets (`PETRA_MAX_CONNECTIONS` and the like)."""
    from service.serving import ServeLimits

    try:
        return ServeLimits.from_env()
    except ValueError as exc:
        fail(str(exc))


def serve(app: Any, host: str, port: int, stop: threading.Event | None = None) -> None:
    """Serve `app` under the limits of `service.serving` until SIGTERM, Ctrl-C or `stop` is
    set, then return (so the caller's clean-up runs); a failed start is one sentence."""
    from service.serving import server

    try:
        server(app, host, port, serve_limits(), stop).run()
    except SystemExit:  # uvicorn's own exit on a failed start, with no sentence of ours
        fail(f"cannot serve on {host}:{port}: the address is in use or not this machine's")
