"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.ledger.checkpoint import (
    DASH,
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    key_id,
    open_note,
    parse_checkpoint,
    parse_unverified,
)

ROOT = hashlib.sha256(b"root").digest()
CP = Checkpoint("gw-1", 42, ROOT, 1_732_300_000_123_456_789)


@pytest.fixture(scope="module")
def note(signer: Signer) -> str:
    return signer.sign(CP)


def reason(note: str, verifiers: list[Verifier]) -> str:
    with pytest.raises(CheckpointError) as e:
        parse_checkpoint(note, verifiers)
    return e.value.reason


# -- interoperability with the Go reference (golang.org/x/mod/sumdb/note) --------------------
def go_signer(v: dict[str, Any]) -> Signer:
    raw = base64.b64decode(v["signer_key"].split("+", 4)[4])
    assert raw[0] == 1
    return Signer(v["name"], Ed25519PrivateKey.from_private_bytes(raw[1:]))


def test_go_sumdb_note_vector_signs_byte_for_byte(vector: Callable[[str], Any]) -> None:
    v = vector("signed_note_go_sumdb.json")
    s = go_signer(v)
    assert s.vkey == v["vkey"]
    assert s.verifier.key_id.hex() == v["key_id"]
    assert s.sign_note(v["text"]) == v["note"]


def test_go_sumdb_note_vector_opens(vector: Callable[[str], Any]) -> None:
    v = vector("signed_note_go_sumdb.json")
    ver = Verifier.from_vkey(v["vkey"])
    assert open_note(v["note"], [ver]) == v["text"]
    with pytest.raises(CheckpointError) as e:
        open_note(v["note"].replace("cryptography", "cryptographY"), [ver])
    assert e.value.reason == "bad_signature"


def test_golden_checkpoint_note(vector: Callable[[str], Any]) -> None:
    g = vector("golden_stream.json")
    s = Signer(
        g["signer_name"], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(g["signer_seed"]))
    )
    assert s.vkey == g["vkey"]
    cp = Checkpoint(g["stream"], 3, bytes.fromhex(g["root"]), g["checkpoint_ts_ns"])
    assert s.sign(cp) == g["checkpoint_note"]
    assert parse_checkpoint(g["checkpoint_note"], [Verifier.from_vkey(g["vkey"])]) == cp


# -- format ----------------------------------------------------------------------------------
def test_note_layout(signer: Signer, note: str) -> None:
    body, _, sigline = note.partition("\n\n")
    assert body + "\n" == CP.body()
    assert body.split("\n") == [
        "gw-1",
        "42",
        base64.b64encode(ROOT).decode(),
        "timestamp 1732300000123456789",
    ]
    assert sigline.startswith("\u2014 " + signer.name + " ") and sigline.endswith("\n")
    raw = base64.b64decode(sigline.split(" ")[2])
    assert len(raw) == 4 + 64 and raw[:4] == signer.verifier.key_id
    signer.private_key.public_key().verify(raw[4:], CP.body().encode())  # raises if wrong


def test_key_id_and_vkey_follow_the_spec(signer: Signer) -> None:
    pub = signer.verifier.raw_public_key
    want = hashlib.sha256(signer.name.encode() + b"\n\x01" + pub).digest()[:4]
    assert key_id(signer.name, pub) == want == signer.verifier.key_id
    blob = base64.b64encode(b"\x01" + pub).decode()
    assert signer.vkey == f"{signer.name}+{want.hex()}+{blob}"
    again = Verifier.from_vkey(signer.vkey)
    assert (again.name, again.key_id, again.raw_public_key) == (signer.name, want, pub)
    assert Verifier(signer.name, pub).vkey == signer.vkey


def test_signer_repr_does_not_show_the_private_key(signer: Signer) -> None:
    assert repr(signer) == f"Signer({signer.vkey!r})"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "name",
        "name+abcd",
        "name+zzzzzzzz+AQ==",
        "name+0000000+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
        "name+00000000+not base64",
        "name+00000000+AgOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",  # algorithm 2
        "name+00000000+AQOh",  # too short
        "a b+00000000+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
    ],
)
def test_malformed_vkeys_are_refused(bad: str) -> None:
    with pytest.raises(CheckpointError) as e:
        Verifier.from_vkey(bad)
    assert e.value.reason == "bad_key"


def test_vkey_with_a_wrong_key_id_is_refused(signer: Signer) -> None:
    name, kid, b64 = signer.vkey.split("+", 2)
    wrong = f"{name}+{(int(kid, 16) ^ 1):08x}+{b64}"
    with pytest.raises(CheckpointError, match="does not match the key"):
        Verifier.from_vkey(wrong)


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\there", "nl\nx"])
def test_invalid_key_names_are_refused(name: str) -> None:
    with pytest.raises(CheckpointError):
        Signer(name, Ed25519PrivateKey.from_private_bytes(bytes(32)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"size": -1},
        {"size": 2**64},
        {"ts_ns": -1},
        {"root": b"short"},
    ],
)
def test_checkpoint_fields_are_validated(kwargs: dict[str, Any]) -> None:
    args = {"origin": "o", "size": 1, "root": ROOT, "ts_ns": 0} | kwargs
    with pytest.raises(CheckpointError):
        Checkpoint(**args)


# -- verification ----------------------------------------------------------------------------
def test_signed_then_verified(signer: Signer, note: str) -> None:
    assert parse_checkpoint(note, [signer.verifier]) == CP
    assert parse_checkpoint(note, [Verifier.from_vkey(signer.vkey)]) == CP


def test_no_trusted_key_is_refused(signer: Signer, other_signer: Signer, note: str) -> None:
    assert reason(note, []) == "unknown_key"
    assert reason(note, [other_signer.verifier]) == "unknown_key"


def test_key_id_mismatch_is_an_unknown_key(signer: Signer, note: str) -> None:
    # the same name with another key: the key id differs, so the signature is not "ours"
    impostor = Verifier(
        signer.name, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key()
    )
    assert impostor.key_id != signer.verifier.key_id
    assert reason(note, [impostor]) == "unknown_key"
    # a forged line claiming our key id with another key's signature: bad signature
    forged = Signer(signer.name, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    sig = forged.private_key.sign(CP.body().encode())
    blob = base64.b64encode(signer.verifier.key_id + sig).decode()
    assert (
        reason(f"{CP.body()}\n{DASH} {signer.name} {blob}\n", [signer.verifier]) == "bad_signature"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [("\n42\n", "\n43\n"), ("gw-1\n", "gw-2\n"), ("timestamp 1", "timestamp 2")],
)
def test_tampered_body_is_a_bad_signature(signer: Signer, note: str, old: str, new: str) -> None:
    assert reason(note.replace(old, new, 1), [signer.verifier]) == "bad_signature"


def test_tampered_signature_is_a_bad_signature(signer: Signer, note: str) -> None:
    body, _, sigline = note.partition("\n\n")
    raw = bytearray(base64.b64decode(sigline.split(" ")[2]))
    raw[10] ^= 1
    bad = f"{body}\n\n{DASH} {signer.name} {base64.b64encode(bytes(raw)).decode()}\n"
    assert reason(bad, [signer.verifier]) == "bad_signature"


def test_unknown_signatures_are_ignored_and_cosigners_accepted(
    signer: Signer, other_signer: Signer, note: str
) -> None:
    other_line = other_signer.sign(CP).split("\n\n")[1]
    both = note + other_line
    assert parse_checkpoint(both, [signer.verifier]) == CP
    assert parse_checkpoint(both, [other_signer.verifier]) == CP
    first_other = CP.body() + "\n" + other_line + note.split("\n\n")[1]
    assert parse_checkpoint(first_other, [signer.verifier]) == CP


def test_extension_lines_are_signed_but_ignored(signer: Signer) -> None:
    body = CP.body() + "witness example.org\n"
    assert parse_checkpoint(signer.sign_note(body), [signer.verifier]) == CP


@pytest.mark.parametrize(
    "body",
    [
        "gw-1\n42\n{root}\n",  # no timestamp
        "gw-1\n42\n{root}\ntimestamp 1\ntimestamp 2\n",
        "gw-1\n042\n{root}\ntimestamp 1\n",
        "gw-1\n-1\n{root}\ntimestamp 1\n",
        "gw-1\n+1\n{root}\ntimestamp 1\n",
        "gw-1\n\u0664\u0662\n{root}\ntimestamp 1\n",  # Arabic-Indic digits
        "gw-1\n18446744073709551616\n{root}\ntimestamp 1\n",
        "gw-1\n42\nAAAA\ntimestamp 1\n",
        "gw-1\n42\n{root}=\ntimestamp 1\n",
        "gw-1\n42\n{root}\ntimestamp x\n",
        "gw-1\n42\n",
        "\n42\n{root}\ntimestamp 1\n",
    ],
)
def test_malformed_bodies_are_refused(signer: Signer, body: str) -> None:
    text = body.format(root=base64.b64encode(ROOT).decode())
    note = f"{text}\n{DASH} {signer.name} {base64.b64encode(b'x' * 68).decode()}\n"
    assert reason(note, [signer.verifier]) == "malformed"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace("\n\n", "\n"),  # no blank line
        lambda n: n[:-1],  # no final newline
        lambda n: n + "\n",  # trailing blank line
        lambda n: n + "garbage\n",  # trailing junk line
        lambda n: n + "garbage",
        lambda n: n.replace("\n", "\r\n"),
        lambda n: n.replace(DASH, "--"),
        lambda n: n.replace(DASH + " ", DASH),
        lambda n: n.replace("=\n", "=!\n"),  # signature not base64
        lambda n: n + n.split("\n\n")[1] * MAX_SIGNATURES,  # too many signatures
        lambda n: n.replace("gw-1", "gw-1\x00"),
        lambda n: n + " " * 70_000,
    ],
)
def test_malformed_notes_are_refused(signer: Signer, note: str, mangle: Any) -> None:
    assert reason(mangle(note), [signer.verifier]) == "malformed"


def test_parser_fed_three_ways(signer: Signer, note: str) -> None:
    # whole
    assert parse_checkpoint(note, [signer.verifier]) == CP
    # every proper prefix (a note cut anywhere) is refused, with our error only
    for i in range(len(note)):
        with pytest.raises(CheckpointError):
            parse_checkpoint(note[:i], [signer.verifier])
    # trailing bytes after the note
    for extra in ["x", "\n", " ", DASH, "\n\n"]:
        with pytest.raises(CheckpointError):
            parse_checkpoint(note + extra, [signer.verifier])


def test_parse_unverified_reads_the_claim_only(note: str) -> None:
    assert parse_unverified(note) == CP


@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_checkpoint_error(text: str) -> None:
    verifier = Verifier("k", Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key())
    with pytest.raises(CheckpointError):
        parse_checkpoint(text, [verifier])


@given(st.integers(0, 200), st.integers(0, 7))
def test_any_single_bit_flip_in_a_note_is_refused(pos: int, bit: int) -> None:
    s = Signer("k", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    note = s.sign(CP)
    data = bytearray(note.encode("utf-8"))
    data[pos % len(data)] ^= 1 << bit
    try:
        mangled = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # not text: the store hands us str, so this cannot reach the parser
    if mangled == note:
        return
    try:
        got = parse_checkpoint(mangled, [s.verifier])
    except CheckpointError:
        return
    # only a flip in an ignored place may pass, and it must not change the checkpoint
    assert got == CP
