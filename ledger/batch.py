"""The batch submission's wire format (`POST /v1/transactions/batch`, docs/api.md): one
transaction's canonical JSON per line (NDJSON). Canonical JSON escapes every control character,
so a newline byte only ever ends a transaction. Shared by the node and its client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

MAX_BATCH = 1_000  # transactions in one batch
MAX_BATCH_BYTES = 8 * 1024 * 1024  # a batch's body, in bytes
NDJSON = "application/x-ndjson"


def split_batch(body: bytes) -> list[bytes]:
    """The transactions of a batch's body, in order; one trailing newline is allowed. Every
    other line is a transaction, an empty one too (it is judged, and refused, as sent)."""
    lines = body.removesuffix(b"\n")
    return lines.split(b"\n") if lines else []


def encode_batch(raws: Sequence[bytes]) -> bytes:
    """A batch's body: each transaction on its own line, the last one ended too."""
    return b"".join(raw + b"\n" for raw in raws)


def chunks(raws: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """`raws` cut, in order, into runs that each fit one batch (count and bytes); a
    transaction alone over the byte limit goes alone (and the node refuses that batch)."""
    start, size = 0, 0
    for end, raw in enumerate(raws):
        if end > start and (end - start >= MAX_BATCH or size + len(raw) + 1 > MAX_BATCH_BYTES):
            yield raws[start:end]
            start, size = end, 0
        size += len(raw) + 1
    if start < len(raws):
        yield raws[start:]
