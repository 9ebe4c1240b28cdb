"""A replica (DESIGN.md section 6): pulls blocks from its primary's HTTP API, checks every
signed head and consistency proof, re-validates every transaction with the same rules, and
stops loudly on any divergence, keeping the evidence. Connection problems are not divergences:
it waits and follows again."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from assets import chain_id
from ledger.blocks import SignedHead
from ledger.client import (
    LedgerClient,
    LedgerError,
    LedgerProtocolError,
    LedgerUnavailable,
    NotFound,
    ProofRefused,
    head_problem,
)
from ledger.ledger import Divergence, Ledger

log = logging.getLogger(__name__)

RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 10.0


class ReplicaDiverged(Exception):
    """The primary served a block this replica does not make or cannot check; the replica
    stopped. `evidence_path`: the JSON file holding the evidence."""

    def __init__(self, reason: str, evidence_path: Path) -> None:
        super().__init__(f"{reason} (evidence in {evidence_path})")
        self.reason = reason
        self.evidence_path = evidence_path


class GenesisMismatch(Exception):
    """The primary serves another chain than the replica's genesis: nothing to follow."""


class _Refused(Exception):
    """One of the checks of a block failed; becomes a `ReplicaDiverged` with its evidence."""

    def __init__(self, reason: str, computed: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.computed = computed


class Follower:
    """Follows the primary behind `client` into `ledger`, one checked block at a time.

    `on_block` is called with each head once its block is durable here (to wake the read API's
    block streams). Evidence of a divergence goes to `evidence_dir`, created if need be.
    """

    def __init__(
        self,
        ledger: Ledger,
        client: LedgerClient,
        evidence_dir: Path,
        on_block: Callable[[SignedHead], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.evidence_dir = evidence_dir
        self.on_block = on_block

    def run(self, stop: threading.Event) -> None:
        """Follow until `stop` is set. `stop` is looked at between blocks, at each keep-alive
        of an idle stream (every `ledger.api.KEEPALIVE_S`) and between reconnections. Raises
        `GenesisMismatch` if the primary is of another chain, `ReplicaDiverged` on the first
        block that fails a check (its evidence written first)."""
        failures = 0
        checked_genesis = False
        while not stop.is_set():
            try:
                if not checked_genesis:
                    self._check_genesis()
                    checked_genesis = True
                for head, raws in self.client.stream_blocks(self._next_height(), stop=stop.is_set):
                    self._follow(head, raws)
                    failures = 0
                    if stop.is_set():
                        return
            except LedgerUnavailable as exc:
                failures += 1
                pause = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** min(failures, 10))
                log.warning("the primary is unreachable (%s); trying again in %.1f s", exc, pause)
                stop.wait(pause)
            except LedgerProtocolError as exc:
                self._diverged(None, [], f"the primary's answer is not valid: {exc}")

    def _next_height(self) -> int:
        last = self.ledger.durable_head
        return 1 if last is None else last.header.height + 1

    def _check_genesis(self) -> None:
        try:
            theirs = chain_id(self.client.genesis())
        except LedgerProtocolError as exc:
            raise GenesisMismatch(f"the primary's genesis is not valid: {exc}") from None
        except NotFound:
            raise GenesisMismatch("the primary serves no genesis") from None
        if theirs != self.ledger.chain:
            raise GenesisMismatch(
                f"the primary's genesis is {theirs.hex()}, not this replica's "
                f"{self.ledger.chain.hex()}: it is another chain"
            )

    def _follow(self, head: SignedHead, raws: Sequence[bytes]) -> None:
        """Check one block from the primary and append it, or stop with the evidence."""
        try:
            self._check_head(head)
            self._check_consistency(head)
            self._append(head, raws)
        except _Refused as refused:
            self._diverged(head, raws, refused.reason, refused.computed)
        if self.on_block is not None:
            self.on_block(head)
        log.info("block %d from the primary checked and stored", head.header.height)

    def _check_head(self, head: SignedHead) -> None:
        """Signed by the genesis's sequencer, on our chain, and the very next block."""
        problem = head_problem(head, self.ledger.genesis)
        if problem is not None:
            raise _Refused(problem)
        last = self.ledger.durable_head
        height = 1 if last is None else last.header.height + 1
        prev = self.ledger.chain if last is None else last.header.hash
        if head.header.height != height:
            raise _Refused(f"the primary sent block {head.header.height} where {height} is next")
        if head.header.prev != prev:
            raise _Refused(
                f"block {height}'s prev {head.header.prev.hex()} is not the hash of the block "
                f"before it here, {prev.hex()}: the primary rewrote its history"
            )

    def _check_consistency(self, head: SignedHead) -> None:
        """The primary proves our tree is a prefix of the new head's (RFC 9162)."""
        last = self.ledger.durable_head
        if last is None or last.header.tree_size == 0:
            return
        try:
            self.client.prove_consistency(last, head)
        except ProofRefused as exc:
            raise _Refused(f"block {head.header.height}: {exc}") from None
        except (NotFound, LedgerError) as exc:
            raise _Refused(
                f"the primary gives no consistency proof to block {head.header.height}: {exc}"
            ) from None

    def _append(self, head: SignedHead, raws: Sequence[bytes]) -> None:
        """Re-validate every transaction and keep the block under the primary's head."""
        try:
            self.ledger.append_block(raws, head.header.time, expected=head)
        except Divergence as exc:
            computed = None if exc.computed is None else exc.computed.to_wire()
            raise _Refused(str(exc), computed) from None
        except ValueError as exc:  # a block time out of range or before the previous block's
            raise _Refused(f"block {head.header.height}: {exc}") from None

    def _diverged(
        self,
        head: SignedHead | None,
        raws: Sequence[bytes],
        reason: str,
        computed: dict[str, Any] | None = None,
    ) -> None:
        last = self.ledger.durable_head
        height = head.header.height if head is not None else self._next_height()
        evidence = {
            "reason": reason,
            "primary": self.client.base_url,
            "detected_at": int(time.time()),
            "primary_head": None if head is None else head.to_wire(),
            "our_head": None if last is None else last.to_wire(),
            "computed_header": computed,
            "transactions": [raw.hex() for raw in raws],
        }
        path = self.evidence_dir / f"evidence-{height}.json"
        _write_evidence(path, evidence)
        log.error("the replica diverges from its primary: %s; evidence kept in %s", reason, path)
        raise ReplicaDiverged(reason, path)


def _write_evidence(path: Path, evidence: dict[str, Any]) -> None:
    """Write the evidence durably, replacing `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        json.dump(evidence, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
