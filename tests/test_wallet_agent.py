"""The wallet's agent (wallet/agent.py, `petra wallet unlock|lock`): unlocked once, the wallet
opens with no passphrase in the same terminal session and for the same wallet file only, until
`lock`, the timeout or the session's end; a socket or folder anyone else could use is not
trusted, and nothing secret is written to disk."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import petra, refused
from waiting import wait_until

from simulation.scenario import Scenario
from wallet.agent import held_key, lock_agent, socket_path
from wallet.keystore import KdfLevel, WalletFile
from wallet.wallet import Services, new_data

PASSPHRASE = "agent test passphrase"


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR of a short path (a Unix socket's path is at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as folder:
        monkeypatch.setenv("XDG_RUNTIME_DIR", folder)
        yield Path(folder)


@pytest.fixture
def wallet(runtime: Path, tmp_path: Path) -> Iterator[Path]:
    """A wallet file, and every agent of it in this session locked afterwards."""
    path = tmp_path / "wallet.json"
    data = new_data(Scenario().genesis, Services("http://127.0.0.1:9"), time.time())
    WalletFile.create(path, PASSPHRASE.encode(), kdf=KdfLevel.INTERACTIVE, data=data)
    yield path
    lock_agent(path)


def addresses(path: Path, passphrase: str | None = None) -> list[str]:
    run = petra("wallet", "address", "list", "--wallet", path, "--json", passphrase=passphrase)
    assert run.code == 0, run
    return [a["address"] for a in json.loads(run.out)["addresses"]]


def needs_the_passphrase(path: Path) -> None:
    text = refused(petra("wallet", "address", "list", "--wallet", path))
    assert "the wallet's passphrase is needed" in text, text


def unlock(path: Path, *options: str) -> int:
    run = petra("wallet", "unlock", "--wallet", path, "--json", *options, passphrase=PASSPHRASE)
    assert run.code == 0, run
    pid: int = json.loads(run.out)["pid"]
    return pid


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"


def test_unlocked_a_command_asks_no_passphrase_and_lock_ends_it(
    wallet: Path, runtime: Path
) -> None:
    sealed = wallet.read_bytes()
    needs_the_passphrase(wallet)
    pid = unlock(wallet)
    owner = addresses(wallet, PASSPHRASE)[0]
    assert addresses(wallet)[0] == owner  # no passphrase given, none asked
    folder = runtime / "petra"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (only,) = folder.iterdir()  # nothing but the socket: no key, no passphrase on disk
    assert only == socket_path(wallet, os.getsid(0)) and stat.S_ISSOCK(only.lstat().st_mode)
    assert stat.S_IMODE(only.lstat().st_mode) == 0o600
    assert wallet.read_bytes() == sealed
    assert PASSPHRASE.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()

    run = petra("wallet", "lock", "--wallet", wallet)
    assert run.code == 0 and "is locked" in " ".join(run.out.split()), run
    wait_until(lambda: gone(pid), 5, "the agent to exit")
    assert list(folder.iterdir()) == []
    needs_the_passphrase(wallet)
    run = petra("wallet", "lock", "--wallet", wallet)
    assert run.code == 0 and "was not unlocked" in " ".join(run.out.split()), run


def test_the_agent_exits_after_its_timeout_without_use(wallet: Path) -> None:
    pid = unlock(wallet, "--timeout-s", "1")
    wait_until(lambda: gone(pid), 10, "the agent to time out")
    assert held_key(wallet) is None
    needs_the_passphrase(wallet)


def test_use_keeps_the_agent_alive(wallet: Path) -> None:
    pid = unlock(wallet, "--timeout-s", "2")
    for _ in range(4):
        time.sleep(1)
        assert held_key(wallet) is not None
    assert not gone(pid)


def test_another_wallet_file_is_not_served(wallet: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    WalletFile.create(other, PASSPHRASE.encode(), kdf=KdfLevel.INTERACTIVE, data={})
    unlock(wallet)
    assert held_key(other) is None
    assert ask(socket_path(wallet, os.getsid(0)), other) == {"error": "other_wallet"}
    needs_the_passphrase(other)


def ask(socket: Path, wallet: Path, *, new_session: bool = False) -> object:
    """The agent's answer at `socket` to a request for `wallet`'s key, from a process of this
    terminal session or, with `new_session`, of a session of its own."""
    code = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1])\n"
        "s.sendall(json.dumps({'op': 'key', 'wallet': sys.argv[2]}).encode() + b'\\n')\n"
        "print(s.makefile().readline())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(socket), os.path.realpath(wallet)],
        capture_output=True,
        check=True,
        start_new_session=new_session,
        timeout=30,
    )
    return json.loads(done.stdout)


def test_another_terminal_session_is_not_served(wallet: Path) -> None:
    unlock(wallet)
    where = socket_path(wallet, os.getsid(0))
    assert "key" in str(ask(where, wallet))
    assert ask(where, wallet, new_session=True) == {"error": "other_session"}
    code = "import sys; from pathlib import Path; from wallet.agent import held_key; "
    code += "print(held_key(Path(sys.argv[1])))"
    elsewhere = subprocess.run(
        [sys.executable, "-c", code, str(wallet)],
        capture_output=True,
        check=True,
        start_new_session=True,
        timeout=30,
    )
    assert elsewhere.stdout.decode().strip() == "None"


def test_a_socket_or_folder_others_could_use_is_not_trusted(wallet: Path, runtime: Path) -> None:
    unlock(wallet)
    where = socket_path(wallet, os.getsid(0))
    assert held_key(wallet) is not None
    where.chmod(0o666)
    assert held_key(wallet) is None
    needs_the_passphrase(wallet)
    where.chmod(0o600)
    (runtime / "petra").chmod(0o755)
    assert held_key(wallet) is None
    (runtime / "petra").chmod(0o700)
    assert held_key(wallet) is not None


def test_a_folder_others_could_use_is_refused_at_unlock(wallet: Path, runtime: Path) -> None:
    (runtime / "petra").mkdir(mode=0o777)
    (runtime / "petra").chmod(0o777)
    text = refused(petra("wallet", "unlock", "--wallet", wallet, passphrase=PASSPHRASE))
    assert "is not a private folder of this user" in text, text


def test_a_wallet_sealed_anew_asks_for_its_passphrase_again(wallet: Path) -> None:
    unlock(wallet)
    WalletFile.open(wallet, PASSPHRASE.encode()).change_passphrase(b"another passphrase")
    needs_the_passphrase(wallet)
    assert len(addresses(wallet, "another passphrase")) == 1


def test_the_agent_exits_when_its_session_leader_is_gone(wallet: Path) -> None:
    key = WalletFile.open(wallet, PASSPHRASE.encode()).sealing_key
    code = (
        "import sys, os; from pathlib import Path; from wallet.agent import start_agent; "
        "print(start_agent(Path(sys.argv[1]), bytes.fromhex(sys.argv[2])), os.getsid(0))"
    )
    leader = subprocess.run(  # a session of its own, which ends when this process does
        [sys.executable, "-c", code, str(wallet), key.hex()],
        capture_output=True,
        check=True,
        start_new_session=True,
        timeout=30,
    )
    pid, session = map(int, leader.stdout.split())
    wait_until(lambda: gone(pid), 10, "the agent to see its session end")
    assert not socket_path(wallet, session).exists()
    assert held_key(wallet) is None
