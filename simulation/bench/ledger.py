"""`petra bench ledger`: committed transfers per second against Ed25519 verifications per
second of the same library, measured in the same run, and the rate as the ledger grows."""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from nacl.signing import SigningKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from assets import Authorization, Fa, Keypair, encode_transaction, txid, verify
from ledger.ledger import BlockResult, Ledger, Outcome
from ledger.sequencer import InProcessSequencer
from ledger.store import Store
from simulation.scenario import Scenario, pay

CHAINS = 16_384  # funding outputs; each starts a chain of transfers
OWNERS = 256  # keys that own the chains' outputs
AMOUNT = 1_000_000  # micro-units moved by every transfer
MAIN_WINDOW = 100_000  # transfers over which commit_tps is measured
# Transfers over which the rate at a ledger size is measured: about three seconds, since on a
# shared machine neighbouring windows of one second differed by a tenth and more.
SIZE_WINDOW = 50_000
SMALL_SIZE = 10_000
# Transfers committed after the large window, so that transfers are still being submitted
# while it is measured, as they are during the small one: the submitting loop takes its share
# of the interpreter until the last transfer is queued, a few blocks before the end.
TAIL = 10_000


@dataclass(frozen=True)
class LedgerBench:
    commit_tps: float
    verify_per_s: float
    ratio: float
    tps_at_1e4: float
    tps_at_1e6: float
    size_ratio: float
    large_size: int
    transactions: int
    cores: int
    store: str


def verify_rate(seconds: float = 2.0) -> float:
    """Ed25519 verifications per second on one core, through the ledger's own `verify`."""
    key = Keypair(bytes(range(32)))
    message = b"PETRA-v1/transfer\x00" + bytes(32)
    signature = key.sign(message)
    public_key = key.public_key
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(500):
            verify(public_key, message, signature)
        count += 500
    return count / elapsed


def _owner(n: int) -> SigningKey:
    return SigningKey(hashlib.sha256(b"petra-bench-owner" + n.to_bytes(4, "big")).digest())


Head = tuple[int, str, int]  # (owner number, txid hex, output index) of a chain's last output


def _transfers(chain_hex: str, heads: list[Head], rounds: int) -> list[list[bytes]]:
    """`rounds` rounds of one transfer per chain: each spends the chain's last output to the
    next owner. Canonical JSON written directly, for speed."""
    keys = [_owner(n) for n in range(OWNERS)]
    addresses = [bytes(k.verify_key).hex() for k in keys]
    out: list[list[bytes]] = []
    for _ in range(rounds):
        round_raws: list[bytes] = []
        for position, (owner, prev, index) in enumerate(heads):
            receiver = (owner + 1) % OWNERS
            body = (
                f'{{"chain":"{chain_hex}","inputs":[{{"index":{index},"tx":"{prev}"}}],'
                f'"outputs":[{{"address":"{addresses[receiver]}",'
                f'"asset":{{"amount":{AMOUNT},"kind":"FA"}}}}]'
            )
            tail = ',"type":"transfer","v":1}'
            tx_id = hashlib.sha256((body + tail).encode()).digest()
            signature = keys[owner].sign(b"PETRA-v1/transfer\x00" + tx_id).signature.hex()
            round_raws.append(
                (
                    f'{body},"signatures":[{{"public_key":"{addresses[owner]}",'
                    f'"signature":"{signature}"}}]{tail}'
                ).encode()
            )
            heads[position] = (receiver, tx_id.hex(), 0)
        out.append(round_raws)
    return out


def generate(chain: bytes, heads: list[Head], total: int, workers: int) -> list[bytes]:
    """`total` signed transfers continuing the chains that start at `heads`, on every core."""
    rounds = -(-total // len(heads))
    parts = [heads[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = list(pool.map(_transfers, [chain.hex()] * workers, parts, [rounds] * workers))
    # round by round, chain i's transfer comes from worker i % workers
    raws = [results[i % workers][r][i // workers] for r in range(rounds) for i in range(len(heads))]
    return raws[:total]


def run_ledger_bench(as_json: bool, large: int, store: str | None, console: Console) -> LedgerBench:
    cores = os.cpu_count() or 1
    console.print("Measuring single-core Ed25519 verification (PyNaCl / libsodium)...")
    verify_per_s = verify_rate()
    scenario = Scenario(dso=Keypair(bytes([1]) * 32), sequencer=Keypair(bytes([2]) * 32))
    meter = Keypair(bytes([3]) * 32)
    total = large + SIZE_WINDOW + TAIL
    with tempfile.TemporaryDirectory(prefix="petra-bench-") as tmp:
        url = store or f"sqlite:///{tmp}/ledger.sqlite"
        ledger = Ledger(Store(url), scenario.genesis, scenario.sequencer)
        heads = _fund(ledger, scenario, meter)
        console.print(f"Signing {total:,} single-input single-output transfers on {cores} cores...")
        raws = generate(scenario.chain, heads, total, cores)
        samples: list[tuple[int, float]] = []
        first_size = ledger.size
        refused: list[Outcome] = []

        def record(result: BlockResult) -> None:
            if result.head is not None:
                samples.append((result.head.header.tree_size - first_size, time.perf_counter()))
            refused.extend(o for o in result.outcomes if not o.accepted)

        # What is alive now lives to the end: keep the collector from scanning it again and
        # again, as a long-running node's start-up state would be.
        gc.collect()
        gc.freeze()
        sequencer = InProcessSequencer(ledger, on_block=record)
        start = time.perf_counter()
        samples.append((0, start))
        with Progress(
            TextColumn("committing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=as_json,
        ) as progress:
            task = progress.add_task("commit", total=len(raws))
            for n, raw in enumerate(raws):
                sequencer.submit(raw)
                if n % 2_000 == 0:
                    progress.update(task, completed=samples[-1][0])
            sequencer.close()
            progress.update(task, completed=samples[-1][0])
        gc.unfreeze()
        if refused:
            raise RuntimeError(f"{len(refused)} benchmark transfers were rejected: {refused[0]}")
        ledger.store.close()
    main = _rate(samples, 0, min(MAIN_WINDOW, total))
    small = _rate(samples, SMALL_SIZE, SMALL_SIZE + SIZE_WINDOW)
    big = _rate(samples, large, large + SIZE_WINDOW)
    result = LedgerBench(
        commit_tps=round(main, 1),
        verify_per_s=round(verify_per_s, 1),
        ratio=round(main / verify_per_s, 3),
        tps_at_1e4=round(small, 1),
        tps_at_1e6=round(big, 1),
        size_ratio=round(big / small, 3),
        large_size=large,
        transactions=len(raws),
        cores=cores,
        store="sqlite" if store is None else store.split(":", 1)[0],
    )
    _report(result, as_json, console)
    return result


def _fund(ledger: Ledger, scenario: Scenario, meter: Keypair) -> list[Head]:
    """Authorize a meter and let it issue one FA output per chain; the chains' first heads."""
    regulation = scenario.regulate(
        -1, authorize=[Authorization("bench-meter", meter.public_key, 1, 1)]
    )
    ledger.append_block([encode_transaction(regulation)], scenario.time_in(-1))
    heads: list[Head] = []
    issues = []
    for batch in range(CHAINS // 512):
        owners = [(batch * 512 + i) % OWNERS for i in range(512)]
        outputs = [pay(Fa(AMOUNT), Keypair(_owner(n).encode())) for n in owners]
        issue = scenario.issue("bench-meter", meter, batch + 1, outputs)
        issues.append(encode_transaction(issue))
        issued = txid(issue).hex()
        heads.extend((n, issued, i) for i, n in enumerate(owners))
    result = ledger.append_block(issues, scenario.time_in(0))
    assert all(o.accepted for o in result.outcomes), result.outcomes
    return heads


def _rate(samples: Sequence[tuple[int, float]], first: int, last: int) -> float:
    """Transactions per second between the blocks that crossed `first` and `last`."""
    begin = next((s for s in reversed(samples) if s[0] <= first), samples[0])
    end = next((s for s in samples if s[0] >= last), samples[-1])
    return (end[0] - begin[0]) / (end[1] - begin[1])


def _report(result: LedgerBench, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(asdict(result)))
        return
    table = Table(title="petra bench ledger", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("against", justify="right")
    table.add_row(
        "Ed25519 verifications/s, 1 core (baseline)", f"{result.verify_per_s:,.0f}", "1.000"
    )
    table.add_row(
        f"committed transfers/s (durable, {result.cores} cores)",
        f"{result.commit_tps:,.0f}",
        f"{result.ratio:.3f} (goal >= 0.6)",
    )
    table.add_row("rate at 10^4 transactions", f"{result.tps_at_1e4:,.0f}", "1.000")
    table.add_row(
        f"rate at {result.large_size:,} transactions",
        f"{result.tps_at_1e6:,.0f}",
        f"{result.size_ratio:.3f} (goal >= 0.8)",
    )
    console.print(table)
