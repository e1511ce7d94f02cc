"""Key material: ledger signer, verifier keys, TLS certificate, payload key and cipher."""

from __future__ import annotations

import hashlib
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgergate.core.ledger.checkpoint import Checkpoint, Signer, parse_checkpoint
from ledgergate.services.keys import (
    KeyError_,
    PayloadCipher,
    PayloadError,
    load_ledger_verifier,
    load_or_create_ledger_signer,
    load_or_create_payload_key,
    load_or_create_tls,
    parse_verifier_keys,
    verifier_from_vkey,
    vkey_path,
)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_ledger_signer_created_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger.ed25519"
    assert load_ledger_verifier(path, "ledgergate/gw") is None
    s1 = load_or_create_ledger_signer(path, "ledgergate/gw")
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert vkey_path(path).read_text().strip() == s1.vkey
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    s2 = load_or_create_ledger_signer(path, "ledgergate/gw")
    assert s2.vkey == s1.vkey
    v = load_ledger_verifier(path, "ledgergate/gw")
    assert v is not None and v.vkey == s1.vkey
    vkey_path(path).unlink()  # falls back to the private key
    v = load_ledger_verifier(path, "ledgergate/gw")
    assert v is not None and v.vkey == s1.vkey
    note = s1.sign(Checkpoint("s", 1, b"\x00" * 32, 5))
    assert parse_checkpoint(note, [verifier_from_vkey(s1.vkey)]).size == 1


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "ledger.ed25519"
    load_or_create_ledger_signer(path, "n")
    path.chmod(0o644)
    load_or_create_ledger_signer(path, "n")
    assert _mode(path) == 0o600


def test_wrong_key_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(KeyError_):
        load_or_create_ledger_signer(bad, "n")
    with pytest.raises(KeyError_):
        load_or_create_payload_key(bad)


@pytest.mark.parametrize("seed", range(12))
def test_vkeys_round_trip(seed: int, tmp_path: Path) -> None:
    # deterministic keys; many have '+' in their base64 part
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % seed).digest())
    s = Signer("ledgergate/gw", key)
    assert verifier_from_vkey(s.vkey).vkey == s.vkey
    f = tmp_path / "trusted.vkeys"
    f.write_text(f"# trusted\n{s.vkey}\n\n")
    assert [v.vkey for v in parse_verifier_keys(str(f))] == [s.vkey]
    assert [v.vkey for v in parse_verifier_keys(s.vkey)] == [s.vkey]


@pytest.mark.parametrize(
    "bad",
    ["", "name", "name+zz+AAAA", "name+00000000+AAAA", "name+00000000+" + "A" * 44],
)
def test_bad_vkeys(bad: str, tmp_path: Path) -> None:
    with pytest.raises(KeyError_):
        verifier_from_vkey(bad)
    with pytest.raises(KeyError_):
        parse_verifier_keys(bad if bad else str(tmp_path / "missing"))


def test_vkey_with_a_wrong_key_id(tmp_path: Path) -> None:
    s = Signer("a", Ed25519PrivateKey.generate())
    _name, kid, blob = s.vkey.split("+", 2)
    with pytest.raises(KeyError_, match="key id"):
        verifier_from_vkey(f"b+{kid}+{blob}")


def test_tls_self_signed(tmp_path: Path) -> None:
    cert_p, key_p = tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key"
    got = load_or_create_tls(cert_p, key_p, ["gw.example.com", "10.0.0.5"])
    assert got == (cert_p, key_p)
    assert _mode(key_p) == 0o600
    cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"gw.example.com", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.0.0.5", "127.0.0.1", "::1")
    }
    before = cert_p.read_bytes()
    load_or_create_tls(cert_p, key_p, ["other"])  # kept as is
    assert cert_p.read_bytes() == before
    key_p.unlink()  # a lone certificate is replaced with a new pair
    load_or_create_tls(cert_p, key_p, ["other"])
    assert cert_p.read_bytes() != before and key_p.exists()


def test_payload_key_and_cipher(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "payload.key"
    key = load_or_create_payload_key(path)
    assert len(key) == 32 and _mode(path) == 0o600
    assert load_or_create_payload_key(path) == key
    c = PayloadCipher(key)
    assert "key" in repr(c) and key.hex() not in repr(c)
    data = b"row data"
    digest = hashlib.sha256(data).hexdigest()
    blob = c.seal(digest, data)
    assert len(blob) == 12 + len(data) + 16 and data not in blob
    assert c.seal(digest, data) != blob  # fresh nonce
    assert c.open(digest, blob) == data
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(PayloadError):
        c.open(other, blob)  # the digest is the associated data
    with pytest.raises(PayloadError):
        c.open(digest, blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(PayloadError):
        c.open(digest, b"short")
    with pytest.raises(PayloadError):
        PayloadCipher(bytes(32)).open(digest, blob)
    # sealed under the right digest but for other bytes: refused
    with pytest.raises(PayloadError, match="digest"):
        c.open(other, c.seal(other, data))
    with pytest.raises(KeyError_):
        PayloadCipher(b"short")
