"""The PETra ledger: validity rules, state, blocks, the Merkle log and durable storage."""

from ledger.ledger import BlockResult, Ledger, Outcome, open_ledger

__all__ = ["BlockResult", "Ledger", "Outcome", "open_ledger"]
