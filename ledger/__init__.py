"""The PETra ledger: validity rules, state, blocks, the Merkle log and durable storage.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from ledger.api import LedgerNode as LedgerNode
    from ledger.api import create_app as create_app
    from ledger.audit import Finding as Finding
    from ledger.audit import StoreAudit as StoreAudit
    from ledger.audit import check_store as check_store
    from ledger.batch import MAX_BATCH as MAX_BATCH
    from ledger.batch import MAX_BATCH_BYTES as MAX_BATCH_BYTES
    from ledger.batch import NDJSON as NDJSON
    from ledger.batch import encode_batch as encode_batch
    from ledger.block_follower import BlockFollower as BlockFollower
    from ledger.block_follower import FollowerStopped as FollowerStopped
    from ledger.blocks import SignedHead as SignedHead
    from ledger.chains import chain_path as chain_path
    from ledger.chains import create_chains_app as create_chains_app
    from ledger.client import LedgerClient as LedgerClient
    from ledger.client import LedgerClientError as LedgerClientError
    from ledger.client import LedgerProtocolError as LedgerProtocolError
    from ledger.client import LedgerRejected as LedgerRejected
    from ledger.client import LedgerUnavailable as LedgerUnavailable
    from ledger.client import ProofRefused as ProofRefused
    from ledger.client import Submitted as Submitted
    from ledger.client import head_from_wire as head_from_wire
    from ledger.client import head_problem as head_problem
    from ledger.client import quorum_problem as quorum_problem
    from ledger.head_watch import HeadWatch as HeadWatch
    from ledger.issued import StepFunction as StepFunction
    from ledger.jetstream import JetStreamSequencer as JetStreamSequencer
    from ledger.ledger import BlockResult as BlockResult
    from ledger.ledger import Ledger as Ledger
    from ledger.ledger import Outcome as Outcome
    from ledger.ledger import open_ledger as open_ledger
    from ledger.merkle import leaf_hash as leaf_hash
    from ledger.merkle import verify_consistency as verify_consistency
    from ledger.merkle import verify_inclusion as verify_inclusion
    from ledger.replay import outcome_line as outcome_line
    from ledger.replay import replay as replay
    from ledger.replica import Follower as Follower
    from ledger.replica import GenesisMismatch as GenesisMismatch
    from ledger.replica import ReplicaDiverged as ReplicaDiverged
    from ledger.schedule import MeterStatus as MeterStatus
    from ledger.schedule import Prices as Prices
    from ledger.schedule import RegulationSchedule as RegulationSchedule
    from ledger.sequencer import InProcessSequencer as InProcessSequencer
    from ledger.sequencer import SequencerBusy as SequencerBusy
    from ledger.sequencer import SequencerClosed as SequencerClosed
    from ledger.sequencer import SequencerUnavailable as SequencerUnavailable
    from ledger.sequencer import Ticket as Ticket
    from ledger.store import Store as Store

__all__, __getattr__ = lazy_door(__name__, __file__)
