"""Starvation of the mixer's long polls (issue 14), against the real `petra mixer serve`: a peer
of the pool holds over a thousand long polls open at once; the honest peers' polls must still
be answered at once and none of them may be excluded for the silence the attacker imposed.

Before the fix every pool shared one pool of 1,024 long-poll threads: the attacker's polls
held them all for 30 s, the honest peers learnt of the run's start only after the step's
timeout, and the coordinator named them silent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
from waiting import wait_until

from assets import Keypair
from ledger.client import LedgerClient
from mixer.auth import poll_params
from mixer.client import MixClient, MixError, MixResult, join_request
from mixer.coordinator import POLLS_PER_PEER
from mixer.protocol import Input, peer_order
from simulation.bench.mixer import DENOMINATION

from .test_mixer import Chain, chain_fixture, coordinator, mix_each

__all__ = ["chain_fixture"]  # the module's ledger node

ATTACK_POLLS = 1100  # more than the 1,024 threads the coordinator had for long polls
ATTACK_WAIT_S = 30  # each poll asks for the longest wait
HOLD_S = 45.0  # the attacker lets go after this long, whatever happens
STEP_TIMEOUT_S = 3  # the coordinator's per-step timeout
MIX_TIMEOUT_S = 60.0
NEVER = 10**9  # a seq no pool reaches: a poll after it waits its whole wait
PROMPT_S = 1.0  # an honest peer learns of the run's start within this long


class PollFlood:
    """`count` long polls by `key`, a peer of `pool`, each signed and on a connection of its
    own, held open (on loopback) until `stop` or HOLD_S; `statuses` has each one's answer."""

    def __init__(self, url: str, pool: str, key: Keypair, count: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.pool, self.key, self.count = pool, key, count
        self.sent = 0
        self.statuses: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._flood()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        wait_until(lambda: self.sent >= self.count, 30, f"{self.count} polls to be sent")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _flood(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        writers: list[asyncio.StreamWriter] = []
        polls = [asyncio.create_task(self._poll(writers)) for _ in range(self.count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), HOLD_S)
        for task in polls:
            task.cancel()
        for writer in writers:
            writer.close()

    async def _poll(self, writers: list[asyncio.StreamWriter]) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writers.append(writer)
        query = {**poll_params(self.pool, self.key, NEVER, int(time.time())), "wait": ATTACK_WAIT_S}
        target = f"/v1/pools/{self.pool}/events?{urlencode(query)}"
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        await writer.drain()
        self.sent += 1
        line = await reader.readline()
        self.statuses.append(int(line.split()[1]) if line.startswith(b"HTTP/") else 0)


class TimedTransport(httpx.HTTPTransport):
    """Notes when each answer arrived (monotonic s) and what it said."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str, float, bytes]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        self.answers.append((request.url.path, time.monotonic(), response.content))
        return response

    def joined_at(self) -> float:
        return next(at for path, at, _ in self.answers if path.endswith("/join"))

    def start_seen_at(self) -> float:
        """When the run's start reached this peer; infinity if it never did."""
        seen = (at for _, at, body in self.answers if b'"type":"start"' in body)
        return next(seen, float("inf"))


def test_a_poll_flood_neither_delays_nor_excludes_honest_peers(
    chain: Chain, tmp_path: Path
) -> None:
    log = tmp_path / "coordinator.log"
    attacker = Keypair.generate()
    owners = [Keypair.generate() for _ in range(3)]
    with LedgerClient(chain.url) as ledger, coordinator(chain, 4, log, STEP_TIMEOUT_S) as url:
        (attack_input,) = chain.fund([attacker])
        joined = httpx.post(
            f"{url}/v1/join",
            json=join_request(DENOMINATION, attack_input, attacker, int(time.time())),
            timeout=10,
        )
        assert joined.status_code == 201, joined.text
        pool = joined.json()["pool"]
        flood = PollFlood(url, pool, attacker, ATTACK_POLLS)
        flood.start()
        time.sleep(1.0)  # the coordinator takes in every poll
        transports = [TimedTransport() for _ in owners]
        clients = [
            MixClient(
                url,
                ledger,
                chain.scenario.chain,
                owner,
                outpoint,
                DENOMINATION,
                timeout_s=MIX_TIMEOUT_S,
                transport=transport,
            )
            for owner, outpoint, transport in zip(
                owners, chain.fund(owners), transports, strict=True
            )
        ]
        try:
            outcomes = mix_each(clients)
        finally:
            flood.stop()
            for client in clients:
                client.close()
        started = max(t.joined_at() for t in transports)  # the last join started the run
        delays = [round(max(0.0, t.start_seen_at() - started), 3) for t in transports]
        answered = collections.Counter(flood.statuses)
        print(
            f"honest peers learnt of the start after {delays} s; the mixes ended "
            f"{[o if isinstance(o, MixError) else f'landed in {o.runs} runs' for o in outcomes]}; "
            f"the attacker's {ATTACK_POLLS} polls were answered {dict(answered)}"
        )
        results = [o for o in outcomes if isinstance(o, MixResult)]
        assert len(results) == len(clients), outcomes
        assert max(delays) < PROMPT_S, delays
        # all but the two it may hold were refused at once: too many polls, or busy
        assert set(answered) <= {429, 503}, answered
        assert answered.total() == ATTACK_POLLS - POLLS_PER_PEER, answered
        everyone = [Input(c.outpoint, c.key.public_key) for c in clients]
        silent = peer_order([*everyone, Input(attack_input, attacker.public_key)]).index(
            Input(attack_input, attacker.public_key)
        )
        for result in results:  # only the attacker, silent in the protocol, is excluded
            assert list(result.excluded.values()) == [{silent: "silent past the timeout"}]
