"""`petra wallet unlock|lock`: keep the wallet open for this terminal session (wallet/agent.py),
so that each command here opens it without the passphrase and without Argon2id's wait.

Off unless asked: without `unlock`, every command asks for the passphrase as before.
"""

from __future__ import annotations

from typing import Annotated

import typer

from petra.console import fail
from petra.wallet_common import (
    Json,
    PassFile,
    WalletPath,
    emit,
    from_agent,
    out,
    passphrase,
    wallet_path,
)


def register(app: typer.Typer) -> None:
    """Add `unlock` and `lock` to `app` (the `petra wallet` app)."""
    app.command("unlock")(unlock_command)
    app.command("lock")(lock_command)


def unlock_command(
    timeout_s: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds without use after which the wallet locks itself again.",
        ),
    ] = 900.0,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Open the wallet once for this terminal session: a background agent holds its key (never
    the passphrase, never on disk) until `petra wallet lock`, `--timeout-s` seconds without
    use, or the end of the session; commands in this session then ask no passphrase."""
    from wallet.agent import AgentError, lock_agent, start_agent
    from wallet.keystore import KeystoreError, WalletFile

    where = wallet_path(wallet)
    try:
        file = from_agent(where) or WalletFile.open(where, passphrase(passphrase_file))
    except KeystoreError as exc:
        fail(f"{where}: {exc.message}")
    lock_agent(where)  # an agent already here gives way to this one, and its timeout
    try:
        pid = start_agent(where, file.sealing_key, timeout_s)
    except AgentError as exc:
        fail(exc.message)
    if emit(as_json, {"wallet": str(where), "pid": pid, "timeout_s": timeout_s}):
        return
    out.print(
        f"{where} is unlocked in this terminal session until `petra wallet lock`, "
        f"{timeout_s:g} s without use, or the end of the session"
    )


def lock_command(wallet: WalletPath = None, as_json: Json = False) -> None:
    """Forget the wallet's key in this terminal session: the agent `unlock` started exits, and
    commands ask for the passphrase again."""
    from wallet.agent import lock_agent

    where = wallet_path(wallet)
    locked = lock_agent(where)
    if emit(as_json, {"wallet": str(where), "locked": locked}):
        return
    out.print(
        f"{where} is locked" if locked else f"{where} was not unlocked in this terminal session"
    )
