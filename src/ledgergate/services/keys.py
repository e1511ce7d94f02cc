"""Key material under the data directory, generated on first use.

Owns the ledger's Ed25519 signing key (PEM, plus its public verifier key in ``<key>.pub``),
the gateway's self-signed TLS certificate, the payload encryption key, and
``PayloadCipher`` (AES-256-GCM). Private files are created 0600 in 0700 directories,
atomically (a concurrent process sees no file or the whole file, and the first writer
wins). Must never log, print or put key material in an error message.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import os
import secrets
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from ledgergate.core.ledger.checkpoint import CheckpointError, Signer, Verifier

__all__ = [
    "KeyError_",
    "PayloadCipher",
    "PayloadError",
    "SecretSealer",
    "load_ledger_verifier",
    "load_or_create_ledger_signer",
    "load_or_create_payload_key",
    "load_or_create_tls",
    "parse_verifier_keys",
    "verifier_from_vkey",
    "vkey_path",
]

# Self-signed certificate lifetime: 825 days is the longest most TLS clients accept.
TLS_VALID_DAYS = 825
NONCE_BYTES = 12  # AES-GCM standard nonce; random per payload (2^-32 collision bound far off)
PAYLOAD_KEY_BYTES = 32


class KeyError_(ValueError):  # ``KeyError`` is a builtin with another meaning
    """A key file that exists but cannot be used (wrong type, corrupt, wrong size)."""


class PayloadError(ValueError):
    """A stored payload that does not decrypt with this key for this digest."""


def _private_dir(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask


def _create_private(path: Path, data: bytes) -> bool:
    """Atomically create ``path`` (0600) with ``data``; False if it already exists."""
    _private_dir(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: the first process to get here wins
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _tighten(path: Path) -> None:
    """A private file readable by others is made 0600 (when we own it)."""
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


def load_or_create_ssh_host_key(path: Path) -> bytes:
    """The SSH listener's host key (OpenSSH private key text); an Ed25519 key is created
    (0600) the first time."""
    if not path.exists():
        pk = Ed25519PrivateKey.generate()
        text = pk.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        _create_private(path, text)
    _tighten(path)
    return path.read_bytes()


def vkey_path(key_path: Path) -> Path:
    """Where the public verifier key of a ledger key lives: ``<key>.pub``."""
    return key_path.with_name(key_path.name + ".pub")


def load_or_create_ledger_signer(path: Path, name: str) -> Signer:
    """The ledger signing key at ``path`` (created on first use) as a ``Signer`` named
    ``name``; also (re)writes the verifier key file ``<path>.pub``."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        _create_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    _tighten(path)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise KeyError_(f"{path} is not a PEM private key") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyError_(f"{path} is not an Ed25519 private key")
    signer = Signer(name, loaded)
    pub = vkey_path(path)
    try:
        current = pub.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        current = ""
    if current != signer.vkey:
        fd, tmp = tempfile.mkstemp(dir=pub.parent, prefix=f".{pub.name}.")
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(signer.vkey + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, pub)
    return signer


def load_ledger_verifier(key_path: Path, name: str) -> Verifier | None:
    """The verifier of the local ledger key, creating nothing: from ``<key>.pub``, else
    from the private key itself; None if neither exists."""
    pub = vkey_path(key_path)
    if pub.exists():
        try:
            return verifier_from_vkey(pub.read_text(encoding="ascii"))
        except (KeyError_, UnicodeDecodeError) as e:
            raise KeyError_(f"{pub} is not a verifier key: {e}") from None
    if not key_path.exists():
        return None
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise KeyError_(f"{key_path} is not a PEM private key") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyError_(f"{key_path} is not an Ed25519 private key")
    return Verifier(name, loaded.public_key())


def verifier_from_vkey(vkey: str) -> Verifier:
    """Parse ``<name>+<8 hex key id>+<base64(0x01 || Ed25519 key)>``. The base64 part
    may itself contain '+': only the first two '+' separate fields."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3 or len(parts[1]) != 8:
        raise KeyError_("a verifier key reads <name>+<8 hex digits>+<base64 key>")
    name, kid, blob = parts
    try:
        raw = base64.b64decode(blob, validate=True)
        want = bytes.fromhex(kid)
    except ValueError:
        raise KeyError_("malformed verifier key (hex key id, base64 key)") from None
    if len(raw) != 33 or raw[0] != 1:
        raise KeyError_("the verifier key is not an Ed25519 key")
    try:
        v = Verifier(name, raw[1:])
    except CheckpointError as e:
        raise KeyError_(f"not a verifier key: {e}") from None
    if v.key_id != want:
        raise KeyError_(f"verifier key {name}: the key id does not match the key")
    return v


def parse_verifier_keys(spec: str) -> list[Verifier]:
    """``--key``: a vkey string, or a file holding one vkey per line."""
    text = spec
    p = Path(spec).expanduser()
    if "+" not in spec or p.exists():
        try:
            text = p.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise KeyError_(f"{spec} is neither a verifier key nor a readable key file: {e}") from e
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(verifier_from_vkey(line))
    if not out:
        raise KeyError_(f"no verifier key in {spec}")
    return out


def load_or_create_tls(cert_path: Path, key_path: Path, hostnames: list[str]) -> tuple[Path, Path]:
    """A TLS certificate/key pair; a self-signed one (ECDSA P-256, SAN = ``hostnames`` +
    localhost + 127.0.0.1 + ::1) is created when either file is missing."""
    if cert_path.exists() and key_path.exists():
        _tighten(key_path)
        return cert_path, key_path
    pk = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys([*(h for h in hostnames if h), "localhost"]))
    dns: list[x509.GeneralName] = []
    ips: list[x509.GeneralName] = []
    for h in names:
        try:
            ips.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            dns.append(x509.DNSName(h))
    for ip in ("127.0.0.1", "::1"):
        addr = x509.IPAddress(ipaddress.ip_address(ip))
        if addr not in ips:
            ips.append(addr)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=TLS_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([*dns, *ips]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(pk, hashes.SHA256())
    )
    key_pem = pk.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Replace both: a lone leftover key or certificate does not match the new pair.
    key_path.unlink(missing_ok=True)
    if not _create_private(key_path, key_pem):
        raise KeyError_(f"{key_path} appeared while creating it; retry")
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cert_path.parent, prefix=f".{cert_path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    os.replace(tmp, cert_path)
    return cert_path, key_path


def load_or_create_payload_key(path: Path) -> bytes:
    """The 32-byte payload encryption key at ``path`` (created 0600 on first use)."""
    if not path.exists():
        _create_private(path, secrets.token_bytes(PAYLOAD_KEY_BYTES))
    _tighten(path)
    data = path.read_bytes()
    if len(data) != PAYLOAD_KEY_BYTES:
        raise KeyError_(f"{path} is not a {PAYLOAD_KEY_BYTES}-byte key")
    return data


class PayloadCipher:
    """AES-256-GCM for stored payloads: blob = nonce (12) || ciphertext+tag. The payload's
    digest is the associated data, so a blob cannot be moved to another digest."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != PAYLOAD_KEY_BYTES:
            raise KeyError_("a payload key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "PayloadCipher(<key hidden>)"

    def seal(self, digest: str, data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, digest.encode("ascii"))

    def open(self, digest: str, blob: bytes) -> bytes:
        """Decrypt and check that the plaintext is what ``digest`` names."""
        if len(blob) < NONCE_BYTES + 16:
            raise PayloadError(f"payload {digest[:16]}… is too short to be sealed")
        try:
            data = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], digest.encode())
        except InvalidTag:
            raise PayloadError(
                f"payload {digest[:16]}… does not decrypt with this key (wrong key or altered)"
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise PayloadError(f"payload {digest[:16]}… does not match its digest")
        return data


class SecretSealer:
    """AES-256-GCM for secrets the gateway must read back (S3 access-key secrets: a
    SigV4 verifier needs the secret itself). blob = nonce (12) || ciphertext+tag; the
    key id is the associated data, so a sealed secret cannot be moved to another key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != PAYLOAD_KEY_BYTES:
            raise KeyError_("a sealing key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretSealer(<key hidden>)"

    def seal(self, key_id: str, secret: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode("utf-8"), key_id.encode())

    def open(self, key_id: str, blob: bytes) -> str:
        try:
            data = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError):
            raise PayloadError(
                f"the secret of access key {key_id} does not decrypt (wrong key or altered)"
            ) from None
        return data.decode("utf-8")
