"""A private Tor network on loopback, with no internet: its own directory authorities, relays
and one client, as Tor's chutney builds it (DESIGN.md section 11, "Tor on loopback").

For the tests and the simulation: `with TorNetwork(workdir) as network:` writes the keys and
torrc files, starts every tor in its own process group and waits until the client has
bootstrapped; `network.socks_port` then reaches onion services (`socks5://127.0.0.1:PORT`,
names resolved by Tor) and `network.control_port` publishes them
(`bidstore.onion.publish_onion`).

Every tor is started with `subprocess`, never with stem's `launch_tor_with_config`: that one
times out with SIGALRM, which only the main thread may use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from stem import ControllerError  # type: ignore[import-untyped]
from stem.connection import AuthenticationFailure  # type: ignore[import-untyped]
from stem.control import Controller  # type: ignore[import-untyped]

from bidstore import onion
from simulation.processes import free_port

HOST = "127.0.0.1"
STATE_FILE = "tornet.json"
BOOTSTRAP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
CERTIFICATE_MONTHS = 12
# Seconds between consensus votes; vote delay plus distribution delay must stay below it.
VOTING_INTERVAL_S = 20
VOTE_DELAY_S = 4
DIST_DELAY_S = 4
_PROGRESS = re.compile(r"PROGRESS=(\d+)")


class TorNetworkError(Exception):
    """A tor of the network would not set up, start, bootstrap or stop."""


@dataclass(frozen=True)
class TorNode:
    """One tor of the network. `dir_port` is 0 but for authorities, `or_port` 0 for the client."""

    nickname: str
    role: str  # "authority", "relay" or "client"
    or_port: int = 0
    dir_port: int = 0
    pid: int = 0


def tor_executables() -> tuple[str, str] | None:
    """The paths of `tor` and `tor-gencert`, or None if either is not installed."""
    for directory in ("", "/usr/sbin", "/usr/bin"):
        tor = shutil.which("tor", path=directory or None)
        gencert = shutil.which("tor-gencert", path=directory or None)
        if tor is not None and gencert is not None:
            return tor, gencert
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


def _alive(pid: int) -> bool:
    """Whether `pid` runs and is not a zombie (an init that reaps nothing leaves those)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_our_tor(pid: int, torrc: Path) -> bool:
    """Whether `pid` is still the tor started with `torrc`, not a process that reused its id."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(torrc).encode() in arguments


class TorNetwork:
    """A private Tor network of `authorities` directory authorities, `relays` exit relays (to
    loopback only) and a client with a SOCKS port and a cookie-authenticated control port, all
    on 127.0.0.1, under `workdir`.

    Ports are free ones, or consecutive from `base_port`. An onion service needs at least 5
    authorities and relays in all. The state file `workdir/tornet.json` lets
    `TorNetwork.stop_in(workdir)` stop a network another process started.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        authorities: int = 3,
        relays: int = 3,
        base_port: int | None = None,
    ) -> None:
        if authorities < 1 or relays < 0:
            raise ValueError("a Tor network needs at least one authority and no negative relays")
        self.workdir = workdir.resolve()
        self._next_port = base_port
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes: list[TorNode] = [
            TorNode(f"auth{i}", "authority", self._port(), self._port()) for i in range(authorities)
        ]
        self.nodes += [TorNode(f"relay{i}", "relay", self._port()) for i in range(relays)]
        self.nodes.append(TorNode("client", "client"))
        self.socks_port = self._port()
        self.control_port = self._port()

    def _port(self) -> int:
        if self._next_port is None:
            return free_port()
        port, self._next_port = self._next_port, self._next_port + 1
        return port

    def _datadir(self, node: TorNode) -> Path:
        return self.workdir / node.nickname

    def _torrc(self, node: TorNode) -> Path:
        return self._datadir(node) / "torrc"

    # Setting up: keys, then torrc files naming every authority.

    def _create_keys(self, tor: str, gencert: str) -> dict[str, tuple[str, str]]:
        """Each authority's (v3ident, relay fingerprint), creating the keys they need."""
        identities: dict[str, tuple[str, str]] = {}
        for node in self.nodes:
            datadir = self._datadir(node)
            # A fresh start: keys certify one DirPort, cached consensuses name old ports.
            shutil.rmtree(datadir, ignore_errors=True)
            (datadir / "keys").mkdir(parents=True)
            datadir.chmod(0o700)
            if node.role != "authority":
                continue
            keys = datadir / "keys"
            certificate = keys / "authority_certificate"
            self._run(
                [
                    gencert,
                    "--create-identity-key",
                    *("-m", str(CERTIFICATE_MONTHS)),
                    *("-a", f"{HOST}:{node.dir_port}"),
                    *("-i", str(keys / "authority_identity_key")),
                    *("-s", str(keys / "authority_signing_key")),
                    *("-c", str(certificate)),
                    *("--passphrase-fd", "0"),
                ],
                stdin=b"petra-tornet\n",  # the keys live and die with this test network
            )
            v3ident = re.search(r"^fingerprint ([0-9A-F]{40})$", certificate.read_text(), re.M)
            if v3ident is None:
                raise TorNetworkError(f"no fingerprint line in {certificate}")
            identities[node.nickname] = (v3ident.group(1), self._fingerprint(tor, node))
        return identities

    def _fingerprint(self, tor: str, node: TorNode) -> str:
        """The relay identity fingerprint of `node`, creating its keys if need be."""
        self._run(
            [
                tor,
                *("--ignore-missing-torrc", "-f", os.devnull),
                *("--DataDirectory", str(self._datadir(node))),
                *("--ORPort", f"{HOST}:{node.or_port}"),
                *("--Nickname", node.nickname),
                *("--Log", "err stderr"),
                "--list-fingerprint",  # last: newer tors read a key type after it
            ]
        )
        line = (self._datadir(node) / "fingerprint").read_text().split()
        return line[1]

    def _run(self, command: list[str], stdin: bytes | None = None) -> None:
        result = subprocess.run(command, input=stdin, capture_output=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise TorNetworkError(f"{Path(command[0]).name} failed: {output}")

    def _torrc_lines(self, node: TorNode, identities: dict[str, tuple[str, str]]) -> list[str]:
        datadir = self._datadir(node)
        lines = [
            "TestingTorNetwork 1",
            f"DataDirectory {datadir}",
            f"Nickname {node.nickname}",
            f"PidFile {datadir / 'pid'}",
            f"Log notice file {datadir / 'notice.log'}",
            "RunAsDaemon 0",
            "SafeLogging 0",
            "ShutdownWaitLength 0",
            # Three descriptors suffice to build circuits: 0.67 > 2/3.
            "PathsNeededToBuildCircuits 0.67",
            # Vote every flag at once instead of after hours of uptime and measured bandwidth.
            "TestingDirAuthVoteExit *",
            "TestingDirAuthVoteHSDir *",
            "TestingDirAuthVoteGuard *",
            "TestingMinExitFlagThreshold 0",
            "V3AuthNIntervalsValid 2",
            # Fetch each consensus as soon as the authorities publish it, not minutes later.
            "FetchDirInfoEarly 1",
            "FetchDirInfoExtraEarly 1",
        ]
        for authority in self.nodes:
            if authority.role == "authority":
                v3ident, fingerprint = identities[authority.nickname]
                lines.append(
                    f"DirAuthority {authority.nickname} orport={authority.or_port} no-v2 "
                    f"v3ident={v3ident} {HOST}:{authority.dir_port} {fingerprint}"
                )
        if node.role in ("authority", "relay"):
            lines += [
                f"Address {HOST}",
                f"ORPort {HOST}:{node.or_port}",
                f"ContactInfo {node.nickname}@petra.test",
                "SocksPort 0",
                # Publish at once rather than after a self-test through a consensus that
                # waits for these very descriptors: about a minute less to bootstrap.
                "AssumeReachable 1",
            ]
        if node.role == "authority":
            lines += [
                "AuthoritativeDirectory 1",
                "V3AuthoritativeDirectory 1",
                f"DirPort {HOST}:{node.dir_port}",
                "ExitRelay 0",
                "ExitPolicy reject *:*",
                f"V3AuthVotingInterval {VOTING_INTERVAL_S}",
                f"V3AuthVoteDelay {VOTE_DELAY_S}",
                f"V3AuthDistDelay {DIST_DELAY_S}",
                f"TestingV3AuthInitialVotingInterval {VOTING_INTERVAL_S}",
                f"TestingV3AuthInitialVoteDelay {VOTE_DELAY_S}",
                f"TestingV3AuthInitialDistDelay {DIST_DELAY_S}",
            ]
        elif node.role == "relay":
            lines += [
                "ExitRelay 1",
                # Exits to this machine only: the services under test, never the internet.
                "ExitPolicy accept 127.0.0.0/8:*",
                "ExitPolicy reject *:*",
                "ExitPolicyRejectPrivate 0",
            ]
        else:
            lines += [
                f"SocksPort {HOST}:{self.socks_port}",
                f"ControlPort {HOST}:{self.control_port}",
                "CookieAuthentication 1",
            ]
        return lines

    def _write_torrcs(self, identities: dict[str, tuple[str, str]]) -> None:
        for node in self.nodes:
            lines = self._torrc_lines(node, identities)
            self._torrc(node).write_text("\n".join(lines) + "\n")

    # Running.

    def start(self) -> None:
        """Write keys and torrc files and start every tor, without waiting for bootstrap."""
        executables = tor_executables()
        if executables is None:
            raise TorNetworkError("tor and tor-gencert are not installed (Debian package tor)")
        tor, gencert = executables
        if (self.workdir / STATE_FILE).exists():
            raise TorNetworkError(f"a Tor network already runs from {self.workdir}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_torrcs(self._create_keys(tor, gencert))
        try:
            for index, node in enumerate(self.nodes):
                with (self._datadir(node) / "output.log").open("ab") as output:
                    process = subprocess.Popen(
                        [tor, "-f", str(self._torrc(node))],
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self._processes[node.nickname] = process
                self.nodes[index] = TorNode(
                    node.nickname, node.role, node.or_port, node.dir_port, process.pid
                )
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _write_state(self) -> None:
        state = {
            "socks_port": self.socks_port,
            "control_port": self.control_port,
            "nodes": [asdict(node) for node in self.nodes],
        }
        path = self.workdir / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")

    def wait_until_bootstrapped(self, timeout_s: float = BOOTSTRAP_TIMEOUT_S) -> float:
        """Wait until the client reports 100% bootstrapped; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout_s
        progress = 0
        while True:
            for node in self.nodes:
                process = self._processes.get(node.nickname)
                if process is not None and process.poll() is not None:
                    raise TorNetworkError(
                        f"tor {node.nickname} exited with {process.returncode}\n{self.logs()}"
                    )
            try:
                with self.controller() as controller:
                    while True:
                        phase = controller.get_info("status/bootstrap-phase")
                        found = _PROGRESS.search(phase)
                        progress = int(found.group(1)) if found else 0
                        if progress >= 100:
                            return time.monotonic() - started
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.5)
            except (ControllerError, AuthenticationFailure):  # its control port is not up yet
                pass
            if time.monotonic() > deadline:
                raise TorNetworkError(
                    f"the Tor client bootstrapped only {progress}% in {timeout_s:.0f} s\n"
                    + self.logs()
                )
            time.sleep(0.5)

    def up(self, timeout_s: float = BOOTSTRAP_TIMEOUT_S) -> float:
        """Start the network and wait until its client has bootstrapped; return the seconds
        the bootstrap took. Stops everything again if it fails."""
        self.start()
        try:
            return self.wait_until_bootstrapped(timeout_s)
        except BaseException:
            self.stop()
            raise

    def controller(self) -> Controller:
        """A stem controller of the client, authenticated (close it, or use it in `with`)."""
        return onion.open_controller(self.control_port)

    def stop(self) -> None:
        """Stop every tor of the network: SIGTERM, then SIGKILL past STOP_TIMEOUT_S."""
        _stop(
            [(node.pid, self._torrc(node)) for node in self.nodes if node.pid],
            list(self._processes.values()),
        )
        self._processes.clear()
        (self.workdir / STATE_FILE).unlink(missing_ok=True)

    down = stop

    @classmethod
    def stop_in(cls, workdir: Path) -> int:
        """Stop the network whose state file is in `workdir`, started by any process; return
        how many tors were still running."""
        path = workdir.resolve() / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise TorNetworkError(f"no Tor network runs from {workdir} (no {STATE_FILE})") from None
        except (OSError, ValueError) as error:
            raise TorNetworkError(f"cannot read {path}: {error}") from None
        nodes = [TorNode(**node) for node in state["nodes"]]
        running = [
            (node.pid, workdir.resolve() / node.nickname / "torrc")
            for node in nodes
            if node.pid and _alive(node.pid)
        ]
        _stop(running, [])
        path.unlink(missing_ok=True)
        return len(running)

    def logs(self) -> str:
        """The tail of every tor's log, client last, for error messages."""
        parts = []
        for node in sorted(self.nodes, key=lambda node: node.role == "client"):
            lines = 25 if node.role == "client" else 5
            log = _tail(self._datadir(node) / "notice.log", lines)
            parts.append(f"--- {node.nickname} ---\n{log}")
        return "\n".join(parts)

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _stop(tors: list[tuple[int, Path]], children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the process group of each (pid, torrc) that is still that tor, SIGKILL the
    ones left after STOP_TIMEOUT_S; reap our own children."""
    ours = [pid for pid, torrc in tors if _alive(pid) and _is_our_tor(pid, torrc)]
    for pid in ours:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(_alive(pid) for pid in ours) and time.monotonic() < deadline:
        for child in children:
            child.poll()  # reaps the ones that exited, so they stop looking alive
        time.sleep(0.05)
    for pid in ours:
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    for child in children:
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def running_tor_pids(workdir: Path) -> list[int]:
    """The pids of live tors started with a torrc under `workdir`, for checks after `down`."""
    root = str(workdir.resolve()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(argument.startswith(root) for argument in arguments) and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found
