"""The tamper-evident ledger core: entries, canonical JSON, hash chain, Merkle tree,
signed checkpoints and verification. Pure: no I/O, clock or logging anywhere below.

The byte formats are documented for auditors in docs/ledger-format.md.
"""

from ledgergate.core.ledger.canonical import CanonicalError, canonical_json
from ledgergate.core.ledger.chain import (
    GENESIS_HASH,
    GENESIS_PREV,
    RESERVED,
    Chain,
    ChainError,
    SealedEntry,
    StreamState,
    entry_link,
    hash_entry_document,
)
from ledgergate.core.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    key_id,
    open_note,
    parse_checkpoint,
)
from ledgergate.core.ledger.entry import Draft
from ledgergate.core.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from ledgergate.core.ledger.proofs import (
    ProofError,
    build_consistency_document,
    build_inclusion_document,
    verify_consistency_document,
    verify_inclusion_document,
    verify_proof_document,
)
from ledgergate.core.ledger.verify import Problem, StreamReport, verify_stream

__all__ = [
    "EMPTY_ROOT",
    "GENESIS_HASH",
    "GENESIS_PREV",
    "RESERVED",
    "CanonicalError",
    "Chain",
    "ChainError",
    "Checkpoint",
    "CheckpointError",
    "CompactRange",
    "Draft",
    "Problem",
    "ProofError",
    "SealedEntry",
    "Signer",
    "StreamReport",
    "StreamState",
    "Verifier",
    "build_consistency_document",
    "build_inclusion_document",
    "canonical_json",
    "consistency_proof",
    "entry_link",
    "hash_entry_document",
    "inclusion_proof",
    "key_id",
    "leaf_hash",
    "node_hash",
    "open_note",
    "parse_checkpoint",
    "root",
    "verify_consistency",
    "verify_consistency_document",
    "verify_inclusion",
    "verify_inclusion_document",
    "verify_proof_document",
    "verify_stream",
]
