"""What the SSH listener trusts for public-key authentication.

Owns the check of a client certificate's signer and principals: certificates signed by
the gateway's SSH user CA (``services.ssh_ca``) naming exactly one login
(``ledgergate-login:<token id>``). The login is handed on to the server as a key option
and checked against the access service there. Plain public keys are not decided here:
asyncssh then asks the server, which looks them up in the store.
"""

from __future__ import annotations

from typing import Any

import asyncssh

__all__ = ["LOGIN_OPTION", "LOGIN_PRINCIPAL", "TrustedKeys"]

# The principal of a gateway-issued certificate naming its login (``services.ssh_ca``).
LOGIN_PRINCIPAL = "ledgergate-login:"
# The key option under which the trusted keys hand the login's token id to the server.
LOGIN_OPTION = "ledgergate-login"


class TrustedKeys(asyncssh.SSHAuthorizedKeys):
    """The gateway's CA, as asyncssh's authorized keys (``set_authorized_keys``)."""

    def __init__(self, ca: asyncssh.SSHKey | None) -> None:
        super().__init__()
        self.ca = ca

    def validate(
        self,
        key: asyncssh.SSHKey,
        client_host: str,
        client_addr: str,
        cert_principals: Any = None,
        ca: bool = False,
    ) -> dict[str, object] | None:
        if not ca or self.ca is None or key != self.ca or not cert_principals:
            return None
        logins = [
            p[len(LOGIN_PRINCIPAL) :] for p in cert_principals if p.startswith(LOGIN_PRINCIPAL)
        ]
        if len(logins) != 1:
            return None
        # ``principals`` set: asyncssh does not also match the user name (CONNECTION)
        return {"principals": list(cert_principals), LOGIN_OPTION: logins[0]}
