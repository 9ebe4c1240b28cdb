"""Real `petra` processes on loopback, for the tests, the benches and the simulation: start one
in a process group of its own, wait until it serves, stop it (the group: SIGTERM, SIGKILL if
it lingers, then reap), and a free port for it to listen on.

`start_petra`, `wait_serving` and `stop` work on the `subprocess.Popen`; `PetraProcess` holds
one with its URL and log, and `LedgerProcess` is `petra ledger serve` over given files.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import httpx

from assets.keyfile import dump_keys
from simulation.scenario import Scenario

HOST = "127.0.0.1"
START_TIMEOUT_S = 60  # a restart on PostgreSQL may first wait for a killed node's session
STOP_TIMEOUT_S = 20
PETRA = (sys.executable, "-c", "from petra.cli import main; main()")


class NotServing(Exception):
    """A `petra` process exited, or did not answer in time; the message ends with its log."""


_HANDED_OUT: deque[int] = deque(maxlen=4096)  # ports free_port gave lately, not to give twice


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now, and that this process was not given
    lately: the kernel may hand the same free port to two probes in a row, and a caller
    usually picks several ports before anything listens on the first."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


def start_petra(
    *args: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    unset: Collection[str] = (),
) -> subprocess.Popen[bytes]:
    """`petra ARGS` in a process group of its own, with no standard input, its standard error
    in `log`. It inherits this process's environment without the variables in `unset`, and
    with `env` added (tests pass PETRA_* variables this way)."""
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [*PETRA, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**environment, **(env or {})},
            start_new_session=True,
        )


def log_tail(log: Path, lines: int = 20) -> str:
    """The last `lines` lines of a process's log."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


def wait_serving(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    probe: str = "/",
    what: str = "petra process",
    timeout_s: float = START_TIMEOUT_S,
    error: type[Exception] = NotServing,
) -> None:
    """Return once `url` + `probe` answers (any HTTP answer: the server has started). If the
    process exits or does not answer within `timeout_s` seconds, stop it and raise `error`
    with its log's tail."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{url}{probe}", timeout=1)
            return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise error(f"the {what} at {url} did not start: {log_tail(log)}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group of `process` (started by `start_petra`), SIGKILL it if it
    lingers past `timeout_s` seconds, and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class PetraProcess:
    """`petra ARGS` started at once (`start_petra`; by default without the caller's
    passphrase, as the harness writes its key files unsealed), its standard error in `log`,
    to serve at `url`; `probe` is a path that answers once it serves. A failed start raises
    `error`."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        url: str,
        *,
        probe: str = "/",
        what: str = "petra process",
        env: Mapping[str, str] | None = None,
        unset: Collection[str] = ("PETRA_PASSPHRASE",),
        error: type[Exception] = NotServing,
    ) -> None:
        self.log_path, self.url, self.probe, self.what = log, url, probe, what
        self.error = error
        self.process = start_petra(*args, log=log, env=env, unset=unset)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def wait_until_serving(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Return once `probe` answers; stop the process and raise `error` if it exits or is
        late."""
        wait_serving(
            self.url,
            self.process,
            self.log_path,
            probe=self.probe,
            what=self.what,
            timeout_s=timeout_s,
            error=self.error,
        )

    def stop(self) -> None:
        stop(self.process)


class LedgerProcess(PetraProcess):
    """`petra ledger serve` on a free loopback port over the `genesis` and `keys` files and
    the store at `store_url`, its metrics on `metrics_port` (0: none, as many nodes may share
    one machine); ordering through the NATS servers `nats` if any."""

    def __init__(
        self,
        genesis: Path,
        keys: Path,
        store_url: str,
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        unset: Collection[str] = ("PETRA_PASSPHRASE",),
        error: type[Exception] = NotServing,
        metrics_port: int = 0,
        nats: Sequence[str] = (),
    ) -> None:
        port = free_port()
        self.metrics_port = metrics_port
        super().__init__(
            [
                *("ledger", "serve", "--genesis", str(genesis), "--keys", str(keys)),
                *("--store", store_url, "--port", str(port)),
                *("--metrics-port", str(metrics_port)),
                *(("--nats", ",".join(nats)) if nats else ()),
            ],
            log,
            f"http://{HOST}:{port}",
            probe="/v1/genesis",
            what="ledger node",
            env=env,
            unset=unset,
            error=error,
        )

    @classmethod
    def of_scenario(
        cls, scenario: Scenario, folder: Path, *, error: type[Exception] = NotServing
    ) -> LedgerProcess:
        """The node of `scenario`: its genesis and its sequencer's key (unsealed) written to
        `folder`, over a fresh SQLite store there, its log in `folder`/node.log."""
        genesis, keys = folder / "genesis.json", folder / "keys.json"
        genesis.write_bytes(scenario.genesis_raw)
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(dump_keys({"sequencer-0": scenario.sequencer}, None))
        return cls(
            genesis, keys, f"sqlite:///{folder}/http.sqlite", folder / "node.log", error=error
        )
