"""The validity rules of DESIGN.md section 5, one check per rule, one code per check.

Static checks need the transaction and the genesis only (shape, chain, the signatures it
names); they can run in parallel. Dynamic checks read the ledger state through `LedgerView`
and run in ledger order. Neither changes anything: applying an accepted transaction is the
state's business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from assets import (
    AssetKind,
    Code,
    Decoded,
    Fa,
    Genesis,
    Issue,
    Output,
    Regulate,
    Rejected,
    Transfer,
    decode_transaction,
    signing_message,
    verify,
)
from assets.codec import MAX_OUTPUTS
from ledger.issued import StepFunction
from ledger.schedule import MeterStatus
from ledger.store import OutputKey

ENERGY_KINDS = (AssetKind.EPA, AssetKind.ECA)


class LedgerView(Protocol):
    """What the dynamic checks read: the ledger as it stands before the transaction."""

    def has_transaction(self, txid: bytes) -> bool: ...
    def output(self, key: OutputKey) -> Output | None: ...
    def is_spent(self, key: OutputKey) -> bool: ...
    def meter_at(self, meter: str, interval: int) -> MeterStatus | None: ...
    def meter_pieces(
        self, meter: str, start: int, end: int
    ) -> Iterable[tuple[int, int, MeterStatus | None]]: ...
    def last_nonce(self, meter: str) -> int | None: ...
    def issued(self, meter: str, kind: AssetKind) -> StepFunction: ...


# ------------------------------------------------------------------ static


def check_static(raw: bytes, chain: bytes) -> Decoded:
    """Shape, size and chain: Rejected(`too_large` | `malformed` | `wrong_chain`) or the tx."""
    decoded = decode_transaction(raw)
    if decoded.tx.chain != chain:
        raise Rejected(
            Code.WRONG_CHAIN,
            f"chain {decoded.tx.chain.hex()} is not this ledger's genesis {chain.hex()}",
            decoded.txid,
        )
    return decoded


def check_signatures(decoded: Decoded, genesis: Genesis, meter_key: bytes | None = None) -> None:
    """Every signature `decoded` carries verifies: the listed owners' for a transfer, the
    meter's registered key (`meter_key`, in force now) for an issue, a DSO key for a regulate.

    Raises Rejected(`bad_signature`).
    """
    tx = decoded.tx
    message = signing_message(tx.type, decoded.txid)
    if isinstance(tx, Transfer):
        if all(verify(s.public_key, message, s.signature) for s in tx.signatures):
            return
        whose = "an input owner's signature"
    elif isinstance(tx, Issue):
        if meter_key is not None and verify(meter_key, message, tx.signature):
            return
        whose = f"the signature of meter {tx.meter} under its registered key"
    else:
        if any(verify(key, message, tx.signature) for key in genesis.dso_keys):
            return
        whose = "the signature under every DSO key of the genesis"
    raise Rejected(Code.BAD_SIGNATURE, f"{whose} does not verify", decoded.txid)


# ------------------------------------------------------------------ dynamic


def check_not_duplicate(view: LedgerView, decoded: Decoded) -> None:
    if view.has_transaction(decoded.txid):
        raise Rejected(Code.DUPLICATE, "this transaction is already on the ledger", decoded.txid)


def check_transfer(view: LedgerView, decoded: Decoded) -> list[Output]:
    """Rules 1-3 for a transfer whose listed signatures verified; returns the spent outputs."""
    tx = decoded.tx
    assert isinstance(tx, Transfer)
    spent: list[Output] = []
    seen: set[OutputKey] = set()
    # 1. every input exists and nothing on the ledger (or before it in this block) spent it
    for outpoint in tx.inputs:
        key = (outpoint.txid, outpoint.index)
        output = view.output(key) if outpoint.index < MAX_OUTPUTS else None
        if output is None:
            raise Rejected(
                Code.UNKNOWN_INPUT,
                f"input {outpoint.txid.hex()}:{outpoint.index} does not exist on the ledger",
                decoded.txid,
            )
        if key in seen or view.is_spent(key):
            raise Rejected(
                Code.DOUBLE_SPEND,
                f"input {outpoint.txid.hex()}:{outpoint.index} is already spent",
                decoded.txid,
            )
        seen.add(key)
        spent.append(output)
    # 2. the signers are exactly the owners of the inputs (signatures verified statically)
    owners = {o.address for o in spent}
    signers = [s.public_key for s in tx.signatures]
    if len(set(signers)) != len(signers) or set(signers) != owners:
        raise Rejected(
            Code.WRONG_SIGNERS,
            f"needs one signature from each of the {len(owners)} input owners and no other, "
            f"got {len(signers)}",
            decoded.txid,
        )
    # 3. FA sums match; EPA and ECA power match in every interval
    check_balanced(spent, tx.outputs, decoded.txid)
    return spent


def check_balanced(inputs: Iterable[Output], outputs: Iterable[Output], tx_id: bytes) -> None:
    """Rule 3: nothing created, nothing destroyed, per kind and (for energy) per interval."""
    fa = 0
    # The power of inputs minus outputs covering t changes only where an asset starts or
    # ends; it is zero for every t iff each of those changes is zero.
    changes: dict[AssetKind, Counter[int]] = {}
    for sign, side in ((1, inputs), (-1, outputs)):
        for output in side:
            asset = output.asset
            if isinstance(asset, Fa):
                fa += sign * asset.amount
            else:
                steps = changes.setdefault(asset.kind, Counter())
                steps[asset.start] += sign * asset.power
                steps[asset.end + 1] -= sign * asset.power
    if fa != 0:
        raise Rejected(Code.UNBALANCED, f"FA inputs and outputs differ by {fa} micro-units", tx_id)
    for kind, steps in sorted(changes.items()):
        if any(steps.values()):
            first = min(t for t, change in steps.items() if change)
            raise Rejected(
                Code.UNBALANCED,
                f"{kind} power of inputs and outputs differs from interval {first} on",
                tx_id,
            )


def meter_in_force(view: LedgerView, decoded: Decoded, now: int) -> MeterStatus:
    """The issuer's status at `now`; `meter_unknown` or `meter_banned` if it may not issue."""
    tx = decoded.tx
    assert isinstance(tx, Issue)
    status = view.meter_at(tx.meter, now)
    if status is None or status.public_key is None:
        raise Rejected(
            Code.METER_UNKNOWN,
            f"meter {tx.meter} is not authorized at interval {now}",
            decoded.txid,
        )
    if status.banned:
        raise Rejected(
            Code.METER_BANNED, f"meter {tx.meter} is banned at interval {now}", decoded.txid
        )
    return status


def check_issue(view: LedgerView, decoded: Decoded, now: int) -> None:
    """The issue rule, after the meter and its signature were checked at `now`."""
    tx = decoded.tx
    assert isinstance(tx, Issue)
    last = view.last_nonce(tx.meter)
    if last is not None and tx.nonce <= last:
        raise Rejected(
            Code.STALE_NONCE,
            f"nonce {tx.nonce} is not above meter {tx.meter}'s last nonce {last}",
            decoded.txid,
        )
    for kind in ENERGY_KINDS:
        _check_limits(view, tx.meter, kind, tx.outputs, decoded.txid)


def _check_limits(
    view: LedgerView, meter: str, kind: AssetKind, outputs: Iterable[Output], tx_id: bytes
) -> None:
    """For every interval t, power issued covering t (this tx included) < the limit at t."""
    own = StepFunction()
    for output in outputs:
        asset = output.asset
        if asset.kind is kind and not isinstance(asset, Fa):
            own.add(asset.start, asset.end, asset.power)
    issued = view.issued(meter, kind)
    for first, last, power in own.nonzero_pieces():
        for a, b, before in issued.pieces(first, last):
            for t, _, status in view.meter_pieces(meter, a, b):
                if status is not None and status.banned:
                    raise Rejected(
                        Code.METER_BANNED, f"meter {meter} is banned at interval {t}", tx_id
                    )
                limit = 0 if status is None else status.limit(kind)
                if before + power >= limit:
                    allowance = (
                        f"must stay strictly below its MAX{kind} of {limit} W"
                        if status is not None
                        else "is not authorized to issue there"
                    )
                    raise Rejected(
                        Code.LIMIT_EXCEEDED,
                        f"meter {meter} would have issued {before + power} W of {kind} "
                        f"at interval {t}, and {allowance}",
                        tx_id,
                    )


def check_regulate(decoded: Decoded, now: int) -> None:
    tx = decoded.tx
    assert isinstance(tx, Regulate)
    if tx.time < now:
        raise Rejected(
            Code.REGULATION_IN_PAST,
            f"regulation time {tx.time} is before the current interval {now}",
            decoded.txid,
        )
