"""The wallet's agent: one wallet kept open for one terminal session, as ssh-agent keeps keys.

`petra wallet unlock` opens the wallet once (Argon2id, the slow step) and starts the agent, a
small background process holding the key the passphrase derived (`WalletFile.sealing_key`),
never the passphrase, and never on disk. It answers over a Unix socket in a private folder
(`$XDG_RUNTIME_DIR/petra`, else `/tmp/petra-<uid>`: mode 0700, the socket 0600), named after
the terminal session (`os.getsid(0)`) and the wallet file's real path, and serves only a peer
of the same user (SO_PEERCRED) in the same session, asking for the same wallet. A client
trusts a socket only in a folder and with a mode and owner like those, served by its own user.

The agent exits `timeout_s` seconds after it was last used, on `lock`, when its session
leader is gone (the terminal closed or the user logged out), or when its socket is removed.

The wire is one JSON line each way: `{"op": "key"|"lock", "wallet": <real path>}`; `{"key":
<hex>}`, `{"locked": true}`, or `{"error": <code>}` (`other_user`, `other_session`,
`other_wallet`, `malformed`). Each answered request is a use.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 900.0
MAX_LINE = 4096  # bytes of one request or answer
ASK_TIMEOUT_S = 2.0  # how long a client waits for the agent
START_TIMEOUT_S = 10.0  # how long `start_agent` waits for the agent to listen
WATCH_S = 1.0  # how often the agent looks at its clock, its session leader and its socket
MAX_SOCKET_PATH = 107  # bytes of a Unix socket's path (sun_path, less its NUL)
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_PR_SET_DUMPABLE = 4
# what the agent's process inherits of the environment: what Python needs, nothing secret
_ENVIRONMENT = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "XDG_RUNTIME_DIR")


class AgentError(Exception):
    """The agent cannot be started or reached as asked: `message` says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# ---------------------------------------------------------------- where agents listen


def agents_dir() -> Path:
    """The folder of this user's agents: `$XDG_RUNTIME_DIR/petra`, else `/tmp/petra-<uid>`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "petra"
    return Path(f"/tmp/petra-{os.getuid()}")


def private(path: Path, kind: int) -> bool:
    """Whether `path` is of `kind` (stat.S_IFDIR, S_IFSOCK), not a symlink, this user's, and
    neither readable nor writable by anyone else."""
    try:
        found = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_IFMT(found.st_mode) == kind
        and found.st_uid == os.getuid()
        and found.st_mode & 0o077 == 0
    )


def socket_path(wallet: Path, session: int) -> Path:
    """Where the agent of `wallet` (its real path) in terminal session `session` listens."""
    real = os.path.realpath(wallet)
    digest = hashlib.sha256(real.encode()).hexdigest()[:32]
    return agents_dir() / f"agent-{session}-{digest}.sock"


def session() -> int:
    """This terminal session's id: its leader's process id."""
    return os.getsid(0)


# ---------------------------------------------------------------- the client side


def held_key(wallet: Path) -> bytes | None:
    """The key the agent of this session holds for `wallet`; None if no trusted agent answers
    for it (none runs, its folder or socket is not private, another user serves it)."""
    answer = _ask(wallet, "key")
    key = None if answer is None else answer.get("key")
    if not isinstance(key, str):
        return None
    try:
        return bytes.fromhex(key)
    except ValueError:
        return None


def lock_agent(wallet: Path) -> bool:
    """End the agent of this session for `wallet`; whether one was running."""
    answer = _ask(wallet, "lock")
    return answer is not None and answer.get("locked") is True


def _ask(wallet: Path, op: str) -> dict[str, Any] | None:
    path = socket_path(wallet, session())
    if not private(path.parent, stat.S_IFDIR) or not private(path, stat.S_IFSOCK):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(ASK_TIMEOUT_S)
            conn.connect(str(path))
            _, uid, _ = _peer(conn)
            if uid != os.getuid():
                return None
            conn.sendall(_line({"op": op, "wallet": os.path.realpath(wallet)}))
            answer = _read_line(conn)
    except (OSError, ValueError):
        return None
    if not isinstance(answer, dict) or "error" in answer:
        return None
    return answer


# ---------------------------------------------------------------- starting the agent


def start_agent(wallet: Path, key: bytes, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Start the agent of this session for `wallet`, holding `key`; its process id. The key
    reaches it through a pipe, never a file, an argument or the environment. Raises
    AgentError when the agents' folder is not private or the agent does not start."""
    where = socket_path(wallet, session())
    _make_private_dir(where.parent)
    if len(os.fsencode(where)) > MAX_SOCKET_PATH:
        raise AgentError(
            "path_too_long",
            f"the agent's socket path {where} is too long for a Unix socket: "
            "set XDG_RUNTIME_DIR to a shorter folder",
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "wallet.agent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd="/",
        env={k: v for k, v in os.environ.items() if k in _ENVIRONMENT},
        start_new_session=True,  # its own session: the terminal's Ctrl-C and hangup miss it
    )
    assert process.stdin is not None and process.stdout is not None
    settings = {
        "wallet": os.path.realpath(wallet),
        "session": session(),
        "socket": str(where),
        "timeout_s": timeout_s,
        "key": key.hex(),
    }
    ready: list[Any] = []
    try:
        process.stdin.write(_line(settings))
        process.stdin.close()
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        said = process.stdout.readline(MAX_LINE).decode(errors="replace").strip()
    except OSError:
        said = ""
    process.stdout.close()
    if not ready or said != "ready":
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        raise AgentError("not_started", f"the wallet's agent did not start: {said or 'silent'}")
    return process.pid


def _make_private_dir(folder: Path) -> None:
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    if not private(folder, stat.S_IFDIR):
        raise AgentError(
            "not_private",
            f"{folder} is not a private folder of this user (mode 0700, not a link): "
            "remove it, or set XDG_RUNTIME_DIR to one",
        )


# ---------------------------------------------------------------- the agent's process


def main() -> None:
    """The agent's process: its settings as one JSON line on standard input, `ready` on
    standard output once it listens, then it serves until it exits."""
    _no_dumps()
    settings = json.loads(sys.stdin.buffer.readline(MAX_LINE * 2))
    sys.stdin.close()
    agent = _Agent(
        wallet=settings["wallet"],
        session=settings["session"],
        where=Path(settings["socket"]),
        timeout_s=float(settings["timeout_s"]),
        key=bytes.fromhex(settings["key"]),
    )
    try:
        listening = agent.listen()
    except OSError as exc:
        print(f"cannot listen at {settings['socket']}: {exc.strerror}", flush=True)
        return
    print("ready", flush=True)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # closes the pipe: `start_agent` sees the end of it, a late print fails not
    os.close(quiet)
    agent.serve(listening)


def _no_dumps() -> None:
    """Keep the key out of core files and from other processes' ptrace (Linux), if allowed."""
    import resource

    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


class _Agent:
    """What the agent's process holds and does: `key`, for `wallet` (a real path), to peers of
    this user in terminal session `session`, at socket `where`."""

    def __init__(
        self, *, wallet: str, session: int, where: Path, timeout_s: float, key: bytes
    ) -> None:
        self.wallet, self.session, self.where = wallet, session, where
        self.timeout_s, self.key = timeout_s, key
        self.used = time.monotonic()
        self.leader_started = _started(session)

    def listen(self) -> socket.socket:
        """The listening socket at `where`, mode 0600 from its creation; an agent already
        there (this session, this wallet) is replaced."""
        self.where.unlink(missing_ok=True)
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mask = os.umask(0o177)
        try:
            listening.bind(str(self.where))
        finally:
            os.umask(mask)
        os.chmod(self.where, 0o600)
        listening.listen(16)
        listening.settimeout(WATCH_S)
        return listening

    def serve(self, listening: socket.socket) -> None:
        mine = os.stat(self.where).st_ino
        try:
            while self._wanted(mine):
                try:
                    conn, _ = listening.accept()
                except TimeoutError:
                    continue
                with conn:
                    if self._answer(conn):
                        return
        finally:
            listening.close()
            with contextlib.suppress(OSError):
                if os.stat(self.where).st_ino == mine:
                    self.where.unlink()

    def _wanted(self, mine: int) -> bool:
        """Whether to go on: used recently, the session still here, the socket still ours."""
        if time.monotonic() - self.used >= self.timeout_s:
            return False
        if self.leader_started is not None and _started(self.session) != self.leader_started:
            return False
        try:
            return os.stat(self.where).st_ino == mine
        except OSError:
            return False

    def _answer(self, conn: socket.socket) -> bool:
        """Answer one request; whether the agent is to exit (`lock`)."""
        conn.settimeout(ASK_TIMEOUT_S)
        try:
            pid, uid, _ = _peer(conn)
            request = _read_line(conn)
            refused = self._refusal(pid, uid, request)
            if refused is not None:
                conn.sendall(_line({"error": refused}))
                return False
            self.used = time.monotonic()
            op = request["op"]
            if op == "lock":
                conn.sendall(_line({"locked": True}))
                return True
            conn.sendall(_line({"key": self.key.hex()}))
        except (OSError, ValueError):
            pass  # a peer that hung up or sent nonsense gets nothing
        return False

    def _refusal(self, pid: int, uid: int, request: Any) -> str | None:
        if uid != os.getuid():
            return "other_user"
        try:
            if os.getsid(pid) != self.session:
                return "other_session"
        except OSError:
            return "other_session"
        if not isinstance(request, dict) or request.get("op") not in ("key", "lock"):
            return "malformed"
        if request.get("wallet") != self.wallet:
            return "other_wallet"
        return None


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), telling it from a
    later process given the same id; None if it is not there or /proc cannot tell."""
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of proc(5), from state (3)


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of `conn` (SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def _read_line(conn: socket.socket) -> Any:
    """One JSON line from `conn`, at most MAX_LINE bytes; ValueError otherwise."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(MAX_LINE)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_LINE:
            raise ValueError("too long")
    return json.loads(data)


if __name__ == "__main__":
    main()
