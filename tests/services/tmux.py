"""A terminal a person would sit at: a detached tmux server on its own socket, running a plain
bash in each pane, its keys typed and its screen read as text.

Use it with `from services.tmux import tmux_server`; tests skip (saying why) when tmux is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

WIDTH, HEIGHT = 120, 40  # columns and lines of every pane
PROMPT = "[$?] $ "  # the shell's prompt shows the last command's exit code, as `[0] $`
PROMPT_LINE = re.compile(r"^\[(\d+)\] \$$")  # the prompt alone on a line (trailing blank cut)
POLL_S = 0.2
TMUX_TIMEOUT_S = 30  # for one tmux command on a loaded machine


class Pane:
    """One pane of the server: a bash at a prompt showing the last exit code."""

    def __init__(self, server: Tmux, pane_id: str, name: str) -> None:
        self.server = server
        self.pane_id = pane_id
        self.name = name

    def type(self, text: str) -> None:
        """Type `text` literally, as keys (no Enter)."""
        self.server.tmux("send-keys", "-t", self.pane_id, "-l", text)

    def press(self, *keys: str) -> None:
        """Press named keys (`Enter`, `C-l`...)."""
        self.server.tmux("send-keys", "-t", self.pane_id, *keys)

    def line(self, text: str) -> None:
        """Type `text` and press Enter."""
        self.type(text)
        self.press("Enter")

    def screen(self, *, history: bool = True) -> str:
        """What the pane shows (scrollback included with `history`), wrapped lines joined and
        trailing blanks cut."""
        start = ("-S", "-") if history else ()
        shown = self.server.tmux("capture-pane", "-p", "-J", *start, "-t", self.pane_id)
        return "\n".join(line.rstrip() for line in shown.rstrip().splitlines())

    def wait_for(self, text: str, *, count: int = 1, timeout_s: float) -> str:
        """The screen once `text` shows on it at least `count` times; fails with the screen
        after `timeout_s` seconds."""
        return self.wait_until(lambda s: s.count(text) >= count, f"{text!r}", timeout_s)

    def wait_until(
        self, shown: Callable[[str], bool], what: str, timeout_s: float, *, history: bool = True
    ) -> str:
        """The screen once `shown(screen)` holds; fails with the screen after `timeout_s` s."""
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen(history=history)
            if shown(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what} not on the {self.name} pane after {timeout_s:.0f} s; it shows:\n"
                    f"{screen}",
                    pytrace=False,
                )
            time.sleep(POLL_S)

    def clear(self, *, timeout_s: float) -> None:
        """A fresh screen with only the prompt, and no scrollback: what follows is one
        command's."""
        self.press("C-l")
        # tmux keeps what a clear scrolls away: look at the screen only, then drop the rest
        self.wait_until(_only_prompt, "the prompt alone", timeout_s, history=False)
        self.server.tmux("clear-history", "-t", self.pane_id)

    def run(self, command: str, *, timeout_s: float) -> None:
        """On a cleared screen, type `command` and press Enter (without waiting for it)."""
        self.clear(timeout_s=timeout_s)
        self.line(command)

    def finished(self, *, timeout_s: float) -> tuple[int, str]:
        """The exit code of the command `run` started and its screen, once the prompt is back."""
        screen = self.wait_until(_prompt_back, "the prompt after the command", timeout_s)
        found = PROMPT_LINE.match(screen.splitlines()[-1])
        assert found is not None
        return int(found.group(1)), screen


def _only_prompt(screen: str) -> bool:
    lines = [line for line in screen.splitlines() if line]
    return len(lines) == 1 and PROMPT_LINE.match(lines[0]) is not None


def _prompt_back(screen: str) -> bool:
    lines = [line for line in screen.splitlines() if line]
    return len(lines) >= 2 and PROMPT_LINE.match(lines[-1]) is not None


class Tmux:
    """A tmux server on a socket of its own, started with exactly `env` (its panes' too)."""

    def __init__(
        self, executable: str, env: Mapping[str, str], cwd: Path, width: int = WIDTH
    ) -> None:
        self.executable, self.width = executable, width
        self.socket = f"petra-test-{uuid.uuid4().hex[:12]}"
        self.env = {**env, "PS1": PROMPT, "HISTFILE": "/dev/null"}
        self.cwd = cwd
        self.session: str | None = None

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            [self.executable, "-L", self.socket, "-f", "/dev/null", "-u", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=TMUX_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def pane(self, name: str) -> Pane:
        """A new window named `name` running bash (the first one starts the server)."""
        shell = ("--", "bash", "--norc", "--noprofile")
        where = ("-n", name, "-c", str(self.cwd), "-P", "-F", "#{pane_id}")
        if self.session is None:
            self.session = "petra"
            size = ("-x", str(self.width), "-y", str(HEIGHT))
            pane_id = self.tmux("new-session", "-d", "-s", self.session, *size, *where, *shell)
        else:
            pane_id = self.tmux("new-window", "-d", "-t", self.session, *where, *shell)
        return Pane(self, pane_id.strip(), name)

    def kill(self) -> None:
        """Stop the server and every pane's processes (a no-op if it never started)."""
        if self.session is not None:
            socket = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())
            subprocess.run(
                [self.executable, "-L", self.socket, "kill-server"],
                capture_output=True,
                env=self.env,
                timeout=TMUX_TIMEOUT_S,
                check=False,
            )
            socket.unlink(missing_ok=True)  # tmux leaves it behind


@contextmanager
def tmux_server(env: Mapping[str, str], cwd: Path, *, width: int = WIDTH) -> Iterator[Tmux]:
    """A tmux server whose panes, `width` columns wide, get exactly `env`, killed at the end;
    skips without tmux."""
    executable = shutil.which("tmux")
    if executable is None:
        pytest.skip("tmux is not installed (scripts/system-deps.sh installs it)")
    server = Tmux(executable, env, cwd, width)
    try:
        yield server
    finally:
        server.kill()
