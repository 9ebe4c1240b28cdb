"""The rejection codes of DESIGN.md section 5: one stable code per broken rule."""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """Why the ledger refused a transaction; the same words on every API and in every log."""

    MALFORMED = "malformed"
    WRONG_CHAIN = "wrong_chain"
    DUPLICATE = "duplicate"
    UNKNOWN_INPUT = "unknown_input"
    DOUBLE_SPEND = "double_spend"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SIGNERS = "wrong_signers"
    UNBALANCED = "unbalanced"
    LIMIT_EXCEEDED = "limit_exceeded"
    METER_UNKNOWN = "meter_unknown"
    METER_BANNED = "meter_banned"
    STALE_NONCE = "stale_nonce"
    REGULATION_IN_PAST = "regulation_in_past"
    TOO_LARGE = "too_large"


class Rejected(Exception):
    """A transaction broke one rule. `txid` is set whenever the transaction had one."""

    def __init__(self, code: Code, message: str, txid: bytes | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.txid = txid

    def with_txid(self, txid: bytes | None) -> Rejected:
        """The same rejection, naming the transaction it is about."""
        return Rejected(self.code, self.message, txid)
