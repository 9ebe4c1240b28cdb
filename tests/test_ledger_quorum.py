"""A head's co-signatures (ledger/client.py, `cosignatures_from_wire` and `quorum_problem`):
what an auditor counts before it trusts a replicated ledger's head. Only distinct sequencer
keys of the genesis whose signature verifies over the very header count."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from assets import Keypair
from ledger.blocks import BlockHeader, SignedHead
from ledger.client import LedgerProtocolError, cosignatures_from_wire, quorum_problem
from simulation.scenario import Scenario

KEYS = [Keypair(bytes([40 + n]) * 32) for n in range(3)]
SCENARIO = Scenario(sequencer=KEYS[0], cosequencers=tuple(KEYS[1:]))
HEADER = BlockHeader(SCENARIO.chain, 7, bytes(32), 1_700_000_000, 42, bytes(range(32)))


def signed(key: Keypair, header: BlockHeader = HEADER) -> SignedHead:
    return SignedHead.sign(header, key)


def wire(head: SignedHead, cosigned: list[SignedHead]) -> dict[str, Any]:
    listed = [
        {"sequencer_key": h.sequencer_key.hex(), "signature": h.signature.hex()} for h in cosigned
    ]
    return {**head.to_wire(), "cosignatures": listed}


def test_every_sequencer_counts_once() -> None:
    head = signed(KEYS[0])
    cosigned = cosignatures_from_wire(wire(head, [signed(KEYS[1]), signed(KEYS[2])]), head)

    assert quorum_problem(head, cosigned, SCENARIO.genesis, 3) is None
    assert quorum_problem(head, cosigned + cosigned, SCENARIO.genesis, 4) == (
        "block 7's head is signed by 3 of the chain's 3 sequencer keys; the quorum asked is 4"
    )


@pytest.mark.parametrize(
    "cosignature",
    [
        # a signature copied onto the header of another block
        signed(KEYS[1], dataclasses.replace(HEADER, root=bytes(32))),
        # a key the genesis does not name
        signed(Keypair(bytes([99]) * 32)),
        # the head's own signer again
        signed(KEYS[0]),
    ],
)
def test_what_is_not_a_sequencer_signing_this_header_does_not_count(
    cosignature: SignedHead,
) -> None:
    head = signed(KEYS[0])
    cosigned = cosignatures_from_wire(wire(head, [cosignature]), head)

    assert quorum_problem(head, cosigned, SCENARIO.genesis, 1) is None
    assert quorum_problem(head, cosigned, SCENARIO.genesis, 2) is not None


def test_a_head_without_cosignatures_is_signed_by_its_node_alone() -> None:
    head = signed(KEYS[0])

    assert cosignatures_from_wire(head.to_wire(), head) == []
    assert "signed by 1 of the chain's 3" in str(quorum_problem(head, [], SCENARIO.genesis, 2))


@pytest.mark.parametrize(
    "cosignatures",
    ["none", [1], [{"sequencer_key": "ab", "signature": "00" * 64}]],
)
def test_malformed_cosignatures_are_refused(cosignatures: object) -> None:
    head = signed(KEYS[0])

    with pytest.raises(LedgerProtocolError):
        cosignatures_from_wire({**head.to_wire(), "cosignatures": cosignatures}, head)
