"""Signed checkpoints: C2SP tlog-checkpoint bodies inside C2SP signed notes.

Owns the checkpoint text format, signing and verification (https://c2sp.org/tlog-checkpoint,
https://c2sp.org/signed-note):

    <origin>\\n                      the stream name
    <size>\\n                        decimal, no sign, no leading zeros
    <base64 root>\\n                 standard alphabet, padded, 32 bytes
    timestamp <ts_ns>\\n             extension line (required here; other extension
                                     lines are signed but ignored)
    \\n
    — <key name> <base64(key id || Ed25519 signature of the body)>\\n

The em dash is U+2014. Key id = SHA-256(key name || 0x0A || 0x01 || public key)[:4];
a verifier key ("vkey") is ``<name>+<hex key id>+<base64(0x01 || public key)>``.
Parsing follows Go's golang.org/x/mod/sumdb/note: the signatures start after the LAST
blank line; every signature line must be well formed; signatures from unknown keys are
ignored; the first signature from a known key decides (invalid -> rejected); a note with
no signature from a known key is rejected. Errors carry a ``reason``. The signed-note
layer is also usable alone (``Signer.sign_note``/``open_note``); it reproduces Go's
published example byte for byte.

Must not: do I/O, read the clock (timestamps come in), log, or implement any crypto:
Ed25519 is ``cryptography``'s, SHA-256 hashlib's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "MAX_NOTE_SIZE",
    "Checkpoint",
    "CheckpointError",
    "Signer",
    "Verifier",
    "key_id",
    "open_note",
    "parse_checkpoint",
    "parse_unverified",
]

# A checkpoint note is ~250 bytes per signature; anything near this is not ours.
MAX_NOTE_SIZE = 64 * 1024
# Go's note.Open refuses more signature lines than this; so do we.
MAX_SIGNATURES = 100
ALG_ED25519 = 0x01
DASH = "\u2014"  # em dash that starts a signature line
_TS = "timestamp "
_MAX_U64 = 2**64 - 1


class CheckpointError(ValueError):
    """A note that is not a trusted checkpoint. ``reason`` is one of ``malformed``,
    ``unknown_key`` (no signature from a trusted key), ``bad_signature``, ``bad_key``."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """(origin, size, root, ts_ns): the stream, its entry count, the Merkle root over
    entries [0, size) and when the gateway signed it (UTC nanoseconds)."""

    origin: str
    size: int
    root: bytes
    ts_ns: int

    def __post_init__(self) -> None:
        if not self.origin or any(c < " " for c in self.origin):
            raise CheckpointError("a checkpoint origin is a non-empty line of text")
        if not 0 <= self.size <= _MAX_U64 or not 0 <= self.ts_ns <= _MAX_U64:
            raise CheckpointError("checkpoint size and timestamp are unsigned 64-bit integers")
        if len(self.root) != 32:
            raise CheckpointError("a checkpoint root is 32 bytes")

    def body(self) -> str:
        """The signed text."""
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n{_TS}{self.ts_ns}\n"


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise CheckpointError(f"invalid key name {name!r}: non-empty, no spaces, no '+'", "bad_key")


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte C2SP key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    data = name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    return hashlib.sha256(data).digest()[:4]


class Verifier:
    """A trusted checkpoint key: a name and an Ed25519 public key."""

    __slots__ = ("key_id", "name", "public_key", "raw_public_key")

    def __init__(self, name: str, public_key: Ed25519PublicKey | bytes) -> None:
        _check_name(name)
        if isinstance(public_key, bytes):
            try:
                public_key = Ed25519PublicKey.from_public_bytes(public_key)
            except ValueError:
                raise CheckpointError("an Ed25519 public key is 32 bytes", "bad_key") from None
        self.name = name
        self.public_key = public_key
        self.raw_public_key = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, self.raw_public_key)

    @property
    def vkey(self) -> str:
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.raw_public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<8 hex key id>+<base64(0x01 || public key)>``."""
        parts = vkey.strip().split("+", 2)  # the base64 may itself hold "+"
        if len(parts) != 3 or len(parts[1]) != 8:
            raise CheckpointError(
                "a verifier key reads <name>+<8 hex digits>+<base64 key>", "bad_key"
            )
        name, kid, blob = parts
        try:
            raw = base64.b64decode(blob, validate=True)
            want = bytes.fromhex(kid)
        except (binascii.Error, ValueError):
            raise CheckpointError(
                "malformed verifier key (hex key id, base64 key)", "bad_key"
            ) from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise CheckpointError("the verifier key is not an Ed25519 key", "bad_key")
        v = cls(name, raw[1:])
        if v.key_id != want:
            raise CheckpointError(
                f"verifier key {name}: key id {kid} does not match the key "
                f"(expected {v.key_id.hex()})",
                "bad_key",
            )
        return v

    def verify(self, body: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, body)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"Verifier({self.vkey!r})"


class Signer:
    """The gateway's checkpoint key."""

    __slots__ = ("name", "private_key", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = name
        self.private_key = private_key
        self.verifier = Verifier(name, private_key.public_key())

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, cp: Checkpoint) -> str:
        """The signed note of checkpoint ``cp``."""
        return self.sign_note(cp.body())

    def sign_note(self, text: str) -> str:
        """A signed note of any ``text`` (non-empty lines, each ending in a newline)."""
        if not text.endswith("\n") or "\n\n" in text or any(c < " " and c != "\n" for c in text):
            raise CheckpointError("note text is non-empty lines, each ending in a newline")
        sig = self.private_key.sign(text.encode("utf-8"))
        blob = base64.b64encode(self.verifier.key_id + sig).decode("ascii")
        return f"{text}\n{DASH} {self.name} {blob}\n"

    def __repr__(self) -> str:  # never show the private key
        return f"Signer({self.vkey!r})"


def _split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(body text, [(key name, key id, signature)]) of a signed note; syntax only."""
    if len(note) > MAX_NOTE_SIZE:
        raise CheckpointError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    if any(c < " " and c != "\n" for c in note):
        raise CheckpointError("note holds control characters")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("note has no signature block (no blank line)")
    body, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise CheckpointError("note does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has more than {MAX_SIGNATURES} signatures")
    sigs: list[tuple[str, bytes, bytes]] = []
    for line in lines:
        if not line.startswith(DASH + " "):
            raise CheckpointError("malformed signature line (does not start with '\u2014 ')")
        fields = line[2:].split(" ")
        if len(fields) != 2 or not fields[0]:
            raise CheckpointError("malformed signature line (expected '\u2014 <name> <base64>')")
        name, blob = fields
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError(f"signature of {name} is not base64") from None
        if len(raw) < 5:
            raise CheckpointError(f"signature of {name} is too short")
        sigs.append((name, raw[:4], raw[4:]))
    return body, sigs


def _decimal(s: str, what: str) -> int:
    if not (s.isascii() and s.isdigit()) or (len(s) > 1 and s[0] == "0"):
        raise CheckpointError(f"checkpoint {what} is not a decimal number: {s[:24]!r}")
    v = int(s)
    if v > _MAX_U64:
        raise CheckpointError(f"checkpoint {what} is larger than 2**64-1")
    return v


def _parse_body(body: str) -> Checkpoint:
    lines = body.split("\n")[:-1]  # the body ends with "\n"
    if len(lines) < 3:
        raise CheckpointError("checkpoint body has fewer than three lines")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not origin:
        raise CheckpointError("checkpoint origin line is empty")
    size = _decimal(size_s, "size")
    try:
        root = base64.b64decode(root_s, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("checkpoint root is not base64") from None
    if len(root) != 32 or base64.b64encode(root).decode("ascii") != root_s:
        raise CheckpointError("checkpoint root is not the base64 of 32 bytes")
    ts: int | None = None
    for ext in lines[3:]:
        if not ext:
            raise CheckpointError("checkpoint has an empty extension line")
        if ext.startswith(_TS):
            if ts is not None:
                raise CheckpointError("checkpoint has two timestamp lines")
            ts = _decimal(ext[len(_TS) :], "timestamp")
    if ts is None:
        raise CheckpointError("checkpoint has no timestamp line")
    return Checkpoint(origin, size, root, ts)


def _check_signatures(
    body: str, sigs: list[tuple[str, bytes, bytes]], verifiers: Iterable[Verifier], what: str
) -> None:
    known = {(v.name, v.key_id): v for v in verifiers}
    for name, kid, sig in sigs:
        v = known.get((name, kid))
        if v is None:
            continue  # signatures from unknown keys are ignored (C2SP signed-note)
        if not v.verify(body.encode("utf-8"), sig):
            raise CheckpointError(
                f"{what}: the signature of {name} (key id {kid.hex()}) is invalid",
                "bad_signature",
            )
        return
    named = ", ".join(f"{n} ({k.hex()})" for n, k, _ in sigs)
    trusted = ", ".join(sorted(f"{n} ({k.hex()})" for n, k in known)) or "none"
    raise CheckpointError(
        f"{what} is not signed by a trusted key (signed by {named}; trusted: {trusted})",
        "unknown_key",
    )


def open_note(note: str, verifiers: Iterable[Verifier]) -> str:
    """The text of a signed ``note`` carrying a valid signature from one of
    ``verifiers``; raises ``CheckpointError`` saying why not."""
    body, sigs = _split_note(note)
    _check_signatures(body, sigs, verifiers, "note")
    return body


def parse_checkpoint(note: str, verifiers: Iterable[Verifier]) -> Checkpoint:
    """The checkpoint in a signed ``note``, which must carry a valid signature from one
    of ``verifiers``; raises ``CheckpointError`` saying why not."""
    body, sigs = _split_note(note)
    cp = _parse_body(body)
    _check_signatures(body, sigs, verifiers, f"checkpoint of {cp.origin} at size {cp.size}")
    return cp


def parse_unverified(note: str) -> Checkpoint:
    """The checkpoint a note claims, WITHOUT checking any signature: only for naming a
    rejected note in a message. Raises ``CheckpointError`` if malformed."""
    body, _ = _split_note(note)
    return _parse_body(body)
