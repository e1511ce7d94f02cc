"""The gateway's SSH user certificate authority: certificates bound to a login.

Owns the CA key (Ed25519, generated once under the data directory) and the certificates
it signs for a person's own public key after ``ledgergate login``: valid from a minute
ago until the login expires (never longer), naming the identity and the login (token
id) in its key id, its only principal the login, with no agent or X11 forwarding and no
user rc permitted (port forwarding is the gateway's rules' to decide). The
gateway's SSH listener trusts this CA and admits such a certificate only while its login
is active: revoking the login, or disabling the identity, stops the certificate at once;
its expiry stops it by itself. Each issuance is an ``ssh.certificate`` ledger entry.
Never sees a private key: the person sends the public half.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncssh

from ledgergate.services import keys

__all__ = ["LOGIN_PRINCIPAL", "Issued", "load_ca", "sign_for_login"]

# The principal naming the login a certificate is bound to: ``ledgergate-login:<token id>``.
LOGIN_PRINCIPAL = "ledgergate-login:"
# A certificate is valid from this long before it was signed (clock skew between the
# gateway and whoever checks it).
BACKDATE_NS = 60 * 10**9


class CertificateError(ValueError):
    """The public key sent cannot be certified (the message says why)."""


@dataclass(frozen=True, slots=True)
class Issued:
    certificate: str  # OpenSSH ``…-cert-v01@openssh.com AAAA… key-id`` line
    key_id: str
    fingerprint: str  # of the certified public key
    valid_before_ns: int


def load_ca(path: Path) -> asyncssh.SSHKey:
    """The CA key, created (0600) the first time."""
    return asyncssh.import_private_key(keys.load_or_create_ssh_host_key(path))


def sign_for_login(
    ca: asyncssh.SSHKey,
    public_key: str,
    *,
    subject: str,
    token_id: str,
    valid_before_ns: int,
    now_ns: int,
) -> Issued:
    """A user certificate for ``public_key`` (an OpenSSH public key line), bound to the
    login ``token_id`` of ``subject``, expiring with it."""
    try:
        key = asyncssh.import_public_key(public_key.strip())
    except (asyncssh.KeyImportError, ValueError) as e:
        raise CertificateError(f"not an OpenSSH public key: {e}") from None
    if valid_before_ns <= now_ns:
        raise CertificateError("the login has expired")
    key_id = f"ledgergate {subject} login {token_id}"
    cert = ca.generate_user_certificate(
        key,
        key_id,
        # only the login: a principal naming the person (an account name on hosts)
        # would let the certificate log in wherever this CA were ever trusted by mistake
        principals=[LOGIN_PRINCIPAL + token_id],
        valid_after=(now_ns - BACKDATE_NS) // 10**9,
        valid_before=valid_before_ns // 10**9,
        permit_x11_forwarding=False,
        permit_agent_forwarding=False,
        # the gateway's own rules decide forwarding (refused unless a rule allows it)
        permit_port_forwarding=True,
        permit_pty=True,
        permit_user_rc=False,
    )
    text = cert.export_certificate().decode().strip()
    return Issued(text, key_id, key.get_fingerprint("sha256"), valid_before_ns)
