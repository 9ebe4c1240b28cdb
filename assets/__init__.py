"""Assets and transactions of PETra: the wire format, ids and signatures. Pure: no I/O."""

from assets.canonical import canonical_json
from assets.codec import (
    Decoded,
    chain_id,
    decode_transaction,
    encode_transaction,
    parse_genesis,
    txid,
)
from assets.model import (
    Asset,
    AssetKind,
    Authorization,
    Eca,
    EnergyAsset,
    Epa,
    Fa,
    Genesis,
    Issue,
    Outpoint,
    Output,
    Regulate,
    Signature,
    Transaction,
    Transfer,
)
from assets.rejections import Code, Rejected
from assets.signing import Keypair, sign, signing_message, verify

__all__ = [
    "Asset",
    "AssetKind",
    "Authorization",
    "Code",
    "Decoded",
    "Eca",
    "EnergyAsset",
    "Epa",
    "Fa",
    "Genesis",
    "Issue",
    "Keypair",
    "Outpoint",
    "Output",
    "Regulate",
    "Rejected",
    "Signature",
    "Transaction",
    "Transfer",
    "canonical_json",
    "chain_id",
    "decode_transaction",
    "encode_transaction",
    "parse_genesis",
    "sign",
    "signing_message",
    "txid",
    "verify",
]
