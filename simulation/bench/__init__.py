"""The benches of `petra bench`, one module each: `ledger` (in-process commits against Ed25519
verifications), `ledger_http` (the same over HTTP, and the load driver the others use), `dso`
(bill intake), `bidstore` (order posting, optionally through Tor), `mixer` (CoinShuffle
pools), `sim` (whole communities), `monitor` (ingestion and pages), `community` (the sharing
coefficients' optimiser) and `meter` (the smart-meter daemon's memory and CPU on a small
board's workload). Each prints a table, or one JSON object with `--json`."""

__all__: list[str] = []
