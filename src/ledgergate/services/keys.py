"""Key material under the data directory, generated on first start.

Owns the ledger's Ed25519 signing key (and its public verifier key file), the gateway's
self-signed TLS certificate, and the payload encryption key (AES-256-GCM). Private files
are written 0600 in 0700 directories. Never logs key material.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from ledgergate.core.ledger.checkpoint import Signer

__all__ = ["PayloadCipher", "load_or_create_ledger_signer", "load_or_create_payload_key",
           "load_or_create_tls", "read_vkey"]


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_or_create_ledger_signer(path: Path, name: str) -> Signer:
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            _write_private(path, pem)
        except FileExistsError:
            pass  # another process created it first: use theirs
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    signer = Signer(name, loaded)
    pub = path.with_name(path.name + ".pub")
    if not pub.exists() or pub.read_text().strip() != signer.vkey:
        pub.write_text(signer.vkey + "\n")
    return signer


def read_vkey(path: Path) -> str:
    return path.read_text().strip()


def load_or_create_tls(cert: Path, key: Path, hostnames: list[str]) -> tuple[Path, Path]:
    if cert.exists() and key.exists():
        return cert, key
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else "ledgergate")])
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys([*hostnames, "localhost"])]
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    now = datetime.datetime.now(datetime.UTC)
    c = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(pk, hashes.SHA256())
    )
    key.unlink(missing_ok=True)
    _write_private(key, pk.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return cert, key


def load_or_create_payload_key(path: Path) -> bytes:
    if not path.exists():
        try:
            _write_private(path, secrets.token_bytes(32))
        except FileExistsError:
            pass
    data = path.read_bytes()
    if len(data) != 32:
        raise ValueError(f"{path} is not a 32-byte key")
    return data


class PayloadCipher:
    """AES-256-GCM; the payload's digest is the associated data, binding blob to name."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "PayloadCipher(<key hidden>)"

    def seal(self, digest: str, data: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, data, digest.encode())

    def open(self, digest: str, blob: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], digest.encode())
