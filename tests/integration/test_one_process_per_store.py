"""One process per store, with real `petra` processes: a second ledger (serve, replicate,
replay into it), DSO (serve, init) or meter (run) on a store another process holds refuses to
start, in one sentence naming the holder (command, pid, host); once the holder is killed with
SIGKILL, a new process starts on the same store. The ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assets import Keypair
from assets.keyfile import dump_keys
from simulation.processes import (
    HOST,
    PETRA,
    LedgerProcess,
    NotServing,
    PetraProcess,
    free_port,
    stop,
)
from simulation.scenario import Scenario

PASSPHRASE = b"correct horse battery staple"
TIMEOUT_S = 60
RESTART_WAIT_S = 20  # PostgreSQL ends a killed client's session as soon as it notices


@dataclass(frozen=True)
class Files:
    folder: Path
    genesis: Path
    ledger_keys: Path  # the sequencer's, in clear
    dso_keys: Path  # sealed
    meter_keys: Path  # sealed
    passphrase_file: Path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    scenario = Scenario(epoch=int(time.time()) - 20, interval_s=2)
    found = Files(
        tmp_path,
        tmp_path / "genesis.json",
        tmp_path / "ledger-keys.json",
        tmp_path / "dso-keys.json",
        tmp_path / "meter-keys.json",
        tmp_path / "passphrase",
    )
    found.genesis.write_bytes(scenario.genesis_raw)
    found.ledger_keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    found.dso_keys.write_bytes(dump_keys({"dso-0": scenario.dso}, PASSPHRASE))
    found.meter_keys.write_bytes(dump_keys({"meter": Keypair.generate()}, PASSPHRASE))
    found.passphrase_file.write_bytes(PASSPHRASE + b"\n")
    return found


def refusal(*args: str | Path, cwd: Path | None = None) -> str:
    """The one sentence `petra ARGS` refuses with (exit 2, no traceback), unwrapped."""
    done = subprocess.run(
        [*PETRA, *map(str, args)],
        capture_output=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "300"},
        timeout=TIMEOUT_S,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err, err
    return " ".join(err.split())


def held_by(command: str, holder: subprocess.Popen[bytes]) -> str:
    return f"is held by `{command}` (pid {holder.pid} on host {socket.gethostname()}, since "


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's group (`start_petra` makes one per process) and reap it."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def started(make: Callable[..., PetraProcess], *args: Any) -> PetraProcess:
    """The process `make(*args)` once it serves; made again for a while while it is refused
    because a killed holder's PostgreSQL session has not ended yet."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while True:
        process = make(*args)
        try:
            process.wait_until_serving()
            return process
        except NotServing:
            if "is held by" not in process.log_tail() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---------------------------------------------------------------- the ledger


def test_a_second_ledger_on_a_held_store_is_refused_until_the_holder_is_killed(
    files: Files, store_url: str
) -> None:
    first = started(
        LedgerProcess, files.genesis, files.ledger_keys, store_url, files.folder / "1.log"
    )
    try:
        serve = refusal(
            *("ledger", "serve", "--genesis", files.genesis, "--keys", files.ledger_keys),
            *("--store", store_url, "--port", str(free_port())),
        )
        assert f"the ledger store {store_url} {held_by('petra ledger serve', first.process)}" in (
            serve
        )
        assert serve.endswith("; stop it first or give another --store")
        replicate = refusal(
            *("ledger", "replicate", "--ledger", first.url, "--genesis", files.genesis),
            *("--store", store_url, "--port", str(free_port())),
            *("--evidence", files.folder / "evidence"),
        )
        assert held_by("petra ledger serve", first.process) in replicate
        empty = files.folder / "none.jsonl"
        empty.write_text("")
        replay = refusal(
            "ledger", "replay", empty, "--genesis", files.genesis, "--store", store_url
        )
        assert held_by("petra ledger serve", first.process) in replay
    finally:
        kill(first.process)
    second = started(
        LedgerProcess, files.genesis, files.ledger_keys, store_url, files.folder / "2.log"
    )
    try:
        replay = refusal(
            "ledger", "replay", empty, "--genesis", files.genesis, "--store", store_url
        )
        assert held_by("petra ledger serve", second.process) in replay
    finally:
        stop(second.process)  # SIGTERM: the store is free again at once
    assert not (files.folder / "evidence").exists()
    replay_args = ("ledger", "replay", str(empty), "--genesis", str(files.genesis))
    done = subprocess.run(
        [*PETRA, *replay_args, "--store", store_url],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


# ---------------------------------------------------------------- the DSO


def dso_serve(files: Files, ledger: str, store: str, log: Path) -> PetraProcess:
    port = free_port()
    return PetraProcess(
        [
            *("dso", "serve", "--genesis", str(files.genesis), "--keys", str(files.dso_keys)),
            *("--passphrase-file", str(files.passphrase_file), "--ledger", ledger),
            *("--store", store, "--port", str(port)),
        ],
        log,
        f"http://{HOST}:{port}",
        probe="/v1/status",
        what="DSO node",
    )


def test_a_second_dso_command_on_a_held_database_is_refused_until_the_holder_is_killed(
    files: Files,
) -> None:
    ledger = started(
        LedgerProcess,
        *(files.genesis, files.ledger_keys, f"sqlite:///{files.folder}/ledger.sqlite"),
        files.folder / "ledger.log",
    )
    store = f"sqlite:///{files.folder}/dso.sqlite"
    try:
        first = started(dso_serve, files, ledger.url, store, files.folder / "dso-1.log")
        try:
            for args in (
                (
                    *("dso", "serve", "--genesis", files.genesis, "--keys", files.dso_keys),
                    *("--passphrase-file", files.passphrase_file, "--ledger", ledger.url),
                    *("--store", store, "--port", str(free_port())),
                ),
                ("dso", "init", "--store", store),
                ("dso", "admin", "recover", "--store", store),
            ):
                said = refusal(*args)
                assert f"the DSO store {store} {held_by('petra dso serve', first.process)}" in said
        finally:
            kill(first.process)
        second = started(dso_serve, files, ledger.url, store, files.folder / "dso-2.log")
        stop(second.process)
    finally:
        stop(ledger.process)


# ---------------------------------------------------------------- the meter


def meter_config(folder: Path, files: Files, store: str, port: int) -> Path:
    """A meter's configuration in `folder`: no ledger, DSO or device answers, which it
    survives; its key file and genesis by absolute paths, its store as given."""
    folder.mkdir(exist_ok=True)
    config = folder / "meter.toml"
    config.write_text(
        f'[meter]\nid = "m1"\nkeys = "{files.meter_keys}"\ngenesis = "{files.genesis}"\n'
        f'owner = "{"4c" * 32}"\nledger = "http://{HOST}:{free_port()}"\n'
        f'dso = "http://{HOST}:{free_port()}"\nstore = "{store}"\napi_port = {port}\n\n'
        f'[[source]]\nkind = "sdm630"\nport = {free_port()}\n'
    )
    return config


def meter_run(config: Path, passphrase_file: Path, port: int, log: Path) -> PetraProcess:
    return PetraProcess(
        ["meter", "run", "--config", str(config), "--passphrase-file", str(passphrase_file)],
        log,
        f"http://{HOST}:{port}",
        probe="/v1/status",
        what="meter",
    )


def test_a_second_meter_on_a_held_store_is_refused_until_the_holder_is_killed(
    files: Files,
) -> None:
    port = free_port()
    # Relative stores: each is the one database beside the first configuration.
    home = meter_config(files.folder / "home", files, "sqlite:///meter.sqlite", port)
    other = meter_config(files.folder / "other", files, "sqlite:///../home/meter.sqlite", port)
    database = files.folder / "home" / "meter.sqlite"
    elsewhere = files.folder / "elsewhere"
    elsewhere.mkdir()
    first = started(meter_run, home, files.passphrase_file, port, files.folder / "meter-1.log")
    try:
        assert database.is_file()
        for config in (home, other):
            said = refusal(
                *("meter", "run", "--config", config),
                *("--passphrase-file", files.passphrase_file),
                cwd=elsewhere,
            )
            assert f"the meter store sqlite:///{config.parent}/" in said
            assert held_by("petra meter run", first.process) in said
    finally:
        kill(first.process)
    second = started(meter_run, other, files.passphrase_file, port, files.folder / "meter-2.log")
    stop(second.process)
    assert not list(elsewhere.iterdir())
    assert not (files.folder / "other" / "meter.sqlite").exists()
