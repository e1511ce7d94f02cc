"""Signed checkpoints in the C2SP formats (tlog-checkpoint inside a signed note).

Body: ``<origin>\\n<size>\\n<base64 root>\\n`` plus the extension line
``timestamp <ts_ns>\\n``; the note adds an empty line and one signature line per key:
``— <key name> <base64(key id || Ed25519 signature)>``. Key id = first 4 bytes of
SHA-256(name || 0x0A || 0x01 || public key). Verifier keys are written
``<name>+<hex key id>+<base64(0x01 || public key)>``. Pure (cryptography for Ed25519).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["Checkpoint", "CheckpointError", "Signer", "Verifier", "parse_checkpoint"]

_ALG_ED25519 = b"\x01"
_DASH = "\u2014"


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    ts_ns: int

    def body(self) -> str:
        return (
            f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"
            f"timestamp {self.ts_ns}\n"
        )


def _raw_pub(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, pub: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ALG_ED25519 + pub).digest()[:4]


class Verifier:
    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not name or any(c in name for c in " +\n") :
            raise CheckpointError("invalid key name")
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, _raw_pub(public_key))

    @property
    def vkey(self) -> str:
        pub = _raw_pub(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(_ALG_ED25519 + pub).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        try:
            name, kid, b64 = vkey.strip().split("+", 2)
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            raise CheckpointError("malformed verifier key") from None
        if raw[:1] != _ALG_ED25519 or len(raw) != 33:
            raise CheckpointError("verifier key is not an Ed25519 key")
        v = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if v.key_id.hex() != kid.lower():
            raise CheckpointError("verifier key id does not match the key")
        return v

    def verify(self, body: bytes, sig: bytes) -> bool:
        try:
            self.public_key.verify(sig, body)
        except InvalidSignature:
            return False
        return True


class Signer:
    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = name
        self.private_key = private_key
        self.verifier = Verifier(name, private_key.public_key())

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, cp: Checkpoint) -> str:
        body = cp.body()
        sig = self.private_key.sign(body.encode())
        blob = base64.b64encode(self.verifier.key_id + sig).decode()
        return f"{body}\n{_DASH} {self.name} {blob}\n"


def parse_checkpoint(note: str, verifiers: list[Verifier]) -> Checkpoint:
    """Parse a signed checkpoint note and require a valid signature from a known key."""
    body, sep, sigs = note.partition("\n\n")
    if not sep:
        raise CheckpointError("checkpoint note has no signature block")
    body += "\n"
    lines = body.split("\n")
    if len(lines) < 4:
        raise CheckpointError("checkpoint body is too short")
    origin, size_s, root_b64 = lines[0], lines[1], lines[2]
    ts = 0
    for ext in lines[3:]:
        if ext.startswith("timestamp "):
            try:
                ts = int(ext[10:])
            except ValueError:
                raise CheckpointError("malformed timestamp line") from None
    try:
        size = int(size_s)
        root = base64.b64decode(root_b64, validate=True)
    except ValueError:
        raise CheckpointError("malformed checkpoint size or root") from None
    if size < 0 or len(root) != 32 or not origin:
        raise CheckpointError("malformed checkpoint")
    known = {(v.name, v.key_id): v for v in verifiers}
    seen_known = False
    for line in sigs.splitlines():
        if not line.startswith(_DASH + " "):
            continue
        try:
            _, name, blob = line.split(" ", 2)
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            continue
        v = known.get((name, raw[:4]))
        if v is None:
            continue
        seen_known = True
        if v.verify(body.encode(), raw[4:]):
            return Checkpoint(origin, size, root, ts)
    if seen_known:
        raise CheckpointError("checkpoint signature is invalid")
    raise CheckpointError("checkpoint is not signed by a trusted key")
