"""The tamper-evident ledger: entries, hash chain, Merkle tree, signed checkpoints."""
