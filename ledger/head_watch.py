"""What a service following a ledger node last heard of it: the node's height, when it last
answered, and why it did not. A daemon thread asks the node its head every `every_s` seconds,
so that a readiness probe or a scrape reads these figures instead of calling the node itself
(a probe must be quick, and a hundred probes must not become a hundred requests).

A replica watches its primary this way, the DSO node the ledger node it indexes; each compares
the height heard with the height it holds to know how far behind it is."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ledger.blocks import SignedHead
from ledger.client import LedgerClient, LedgerClientError

log = logging.getLogger(__name__)

HEAD_EVERY_S = 1.0  # how often the node is asked its head
ASK_TIMEOUT_S = 2.0  # a client for the watch answers or gives up within this
MAX_LAG_BLOCKS = 10  # behind the node's head by more than this: not caught up
MAX_SILENCE_S = 3 * HEAD_EVERY_S + ASK_TIMEOUT_S  # a watch that heard nothing for longer is stale


class HeadSource(Protocol):
    """The one call the watch makes: a `ledger.client.LedgerClient` (give it `retries=0` and
    a short timeout: the next ask is the retry)."""

    base_url: str

    def head(self) -> SignedHead | None: ...

    def close(self) -> None: ...


class HeadWatch:
    """The head of the ledger node behind `client`, as last heard. `clock`: monotonic seconds.

    `height`: the node's height at its last answer (0 before its first block or answer);
    `heard_at`: when it last answered (None: never); `error`: why the last ask failed, None
    once it answers again."""

    def __init__(
        self,
        client: HeadSource,
        every_s: float = HEAD_EVERY_S,
        *,
        max_lag_blocks: int = MAX_LAG_BLOCKS,
        max_silence_s: float = MAX_SILENCE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.every_s = every_s
        self.max_lag_blocks = max_lag_blocks
        self.max_silence_s = max_silence_s
        self.clock = clock
        self.height = 0
        self.heard_at: float | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of_node(cls, base_url: str, every_s: float = HEAD_EVERY_S) -> HeadWatch:
        """A watch of the ledger node at `base_url`, asking every `every_s` seconds through a
        client of its own, which gives up within `ASK_TIMEOUT_S` and does not retry (the next
        ask is the retry); silent for three asks and a timeout, it is stale."""
        client = LedgerClient(base_url, timeout_s=ASK_TIMEOUT_S, retries=0)
        return cls(client, every_s, max_silence_s=3 * every_s + ASK_TIMEOUT_S)

    def start(self) -> None:
        """Ask now and then every `every_s` seconds, in a daemon thread, until `stop`."""
        self._thread = threading.Thread(target=self._run, name="ledger-head-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop asking and close the client (an ask under way is not waited for beyond its
        own timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=ASK_TIMEOUT_S + 1)
        self.client.close()

    def ask(self) -> None:
        """Ask the node its head once and keep the answer or the reason there was none."""
        try:
            head = self.client.head()
        except LedgerClientError as exc:
            if self.error != str(exc):
                log.warning("cannot read the head of the ledger at %s: %s", self.url, exc)
            self.error = str(exc)
            return
        self.height = 0 if head is None else head.header.height
        self.heard_at = self.clock()
        self.error = None

    @property
    def url(self) -> str:
        return self.client.base_url

    def silence_s(self) -> float | None:
        """Seconds since the node last answered; None if it never did."""
        return None if self.heard_at is None else self.clock() - self.heard_at

    def lag(self, height: int) -> int:
        """Blocks the node had, at its last answer, beyond `height` (never below 0)."""
        return max(0, self.height - height)

    def problem(self, height: int) -> str | None:
        """Why a follower holding blocks up to `height` is not following this node now, in one
        sentence for the operator; None when it answered lately and `height` is at most
        `max_lag_blocks` behind its head."""
        silence = self.silence_s()
        if self.error is not None:
            return f"the ledger at {self.url} does not answer: {self.error}"
        if silence is None:
            return f"the ledger at {self.url} has not answered yet"
        if silence > self.max_silence_s:
            return f"the ledger at {self.url} has not answered for {silence:.0f} s"
        lag = self.lag(height)
        if lag > self.max_lag_blocks:
            return (
                f"{lag} blocks behind the ledger at {self.url} (height {height} of "
                f"{self.height}): still catching up"
            )
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ask()
            self._stop.wait(self.every_s)
