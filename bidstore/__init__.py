"""The bid store: asks and bids with ownership proofs, the order book and its matching."""
