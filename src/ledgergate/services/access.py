"""Who may open a session on a connection, and whether an open session may go on.

``AccessControl`` turns a presented password (a ledgergate token, or an IdP-issued JWT
where the configuration accepts them) and a connection name into an ``Admission``, and
re-checks open sessions (token revoked or expired, identity disabled, grant removed,
maximum session length). It runs on one worker thread with its own store handle: never
on the relay loop. It records nothing itself: the gateway writes ``auth.*`` and
``session.terminated`` entries from what it returns. Never returns or logs the secret.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ledgergate.core.config import Config
from ledgergate.core.identity import (
    Claims,
    GrantRule,
    IdentityError,
    SessionFacts,
    end_reason,
    granted,
    roles_of,
    within_scope,
)
from ledgergate.services import access_keys, terminate, tokens
from ledgergate.services.identities import store_rules
from ledgergate.services.keys import SecretSealer
from ledgergate.store.base import IdentityRow, Store

__all__ = ["AccessControl", "Admission"]


@dataclass(frozen=True, slots=True)
class Admission:
    ok: bool
    # Authenticated, but not allowed on this connection (``auth.denied``), as opposed to
    # not authenticated at all (``auth.fail``).
    denied: bool
    identity: dict[str, Any] | None
    token_id: str | None
    reason: str | None
    expires_ns: int = 0
    scope: tuple[str, ...] | None = None
    via: str = "token"  # "token" | "jwt" | "access_key"
    grant: str | None = None  # which grant admitted it ("config", "open", a grant id)


class AccessControl:
    """Admission and re-checks over one store handle (use from one thread)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        verify_jwt: Callable[[str, int], Claims] | None = None,
        looks_like_jwt: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._verify_jwt = verify_jwt
        self._looks_like_jwt = looks_like_jwt
        self._config_rules: tuple[GrantRule, ...] | None = (
            None
            if config.grants is None
            else tuple(
                GrantRule(tuple(g.connections), tuple(g.groups), tuple(g.identities))
                for g in config.grants
            )
        )

    def rules(self) -> list[GrantRule] | None:
        """The grants in force; ``None`` when none are configured anywhere (open)."""
        stored = store_rules(self.store)
        if self._config_rules is None and not stored:
            return None
        return [*(self._config_rules or ()), *stored]

    def epoch(self) -> int:
        return self.store.access_epoch()

    # -- admission ------------------------------------------------------------------------
    def admit(self, secret: str, connection: str, now_ns: int) -> Admission:
        if secret.startswith(tokens.PREFIX) or self._verify_jwt is None:
            r = tokens.authenticate(self.store, secret, now_ns)
            if not r.ok:
                return Admission(False, False, r.identity, r.token_id, r.reason, r.expires_ns)
            assert r.identity is not None
            adm = Admission(
                True, False, r.identity, r.token_id, None, r.expires_ns, r.connections, "token"
            )
        elif self._looks_like_jwt is not None and self._looks_like_jwt(secret):
            try:
                claims = self._verify_jwt(secret, now_ns)
            except IdentityError as e:
                why = f"IdP token refused ({e.reason}): {e}"
                return Admission(False, False, None, None, why, 0)
            self._seen(claims, now_ns)
            adm = Admission(
                True,
                False,
                {"kind": "user", "subject": claims.subject, "groups": list(claims.groups)},
                None,
                None,
                claims.expires_ns,
                None,
                "jwt",
            )
        else:
            return Admission(False, False, None, None, "unknown token", 0)
        return self._authorize(adm, connection)

    def admit_ssh(self, how: str, value: str | bytes, connection: str, now_ns: int) -> Admission:
        """An SSH login without a token in it: ``how`` "key" (a registered public key's
        blob) or "login" (the token id an SSH certificate the gateway issued names)."""
        if how == "key":
            assert isinstance(value, bytes)
            r = tokens.authenticate_ssh_key(self.store, value, now_ns)
        else:
            r = tokens.authenticate_login(self.store, str(value), now_ns)
        if not r.ok:
            return Admission(False, False, r.identity, r.token_id, r.reason, r.expires_ns)
        adm = Admission(
            True, False, r.identity, r.token_id, None, r.expires_ns, r.connections,
            "ssh_key" if how == "key" else "ssh_certificate",
        )  # fmt: skip
        return self._authorize(adm, connection)

    def admit_key(
        self, key_id: str, sealer: SecretSealer, connection: str | None, now_ns: int
    ) -> tuple[Admission, str | None, tuple[str, ...] | None]:
        """An S3 access key presented in a signature: (admission, its secret for the
        signature check, the key's connection scope). The secret is returned only for a
        key that is active; ``connection`` None checks the key alone (the caller picks
        the connection from the scope, then calls again)."""
        got = access_keys.lookup(self.store, sealer, key_id)
        if got is None:
            return Admission(False, False, None, None, "unknown access key"), None, None
        row = got.token
        ident = {"kind": row.kind, "subject": row.identity, "groups": list(row.groups)}
        if row.revoked_ns is not None:
            why = "access key revoked"
            return Admission(False, False, ident, row.id, why, row.expires_ns), None, None
        if now_ns >= row.expires_ns:
            why = "access key expired"
            return Admission(False, False, ident, row.id, why, row.expires_ns), None, None
        if row.last_used_ns is None or now_ns - row.last_used_ns >= tokens.TOUCH_EVERY_NS:
            self.store.touch_token(row.id, now_ns)
        adm = Admission(
            True, False, ident, row.id, None, row.expires_ns, row.connections, "access_key"
        )
        if connection is None:
            return adm, got.secret, row.connections
        adm = self._authorize(adm, connection)
        return adm, got.secret if adm.ok else None, row.connections

    def _seen(self, claims: Claims, now_ns: int) -> None:
        """Remember an identity first met through its IdP token (for SCIM, disabling and
        reports); its groups are refreshed at every connect."""
        row = self.store.get_identity(claims.subject)
        with self.store.transaction():
            if row is None:
                self.store.put_identity(
                    IdentityRow(
                        name=claims.subject,
                        kind="user",
                        source="jwt",
                        email=claims.email,
                        groups=tuple(claims.groups),
                        created_ns=now_ns,
                        updated_ns=now_ns,
                        last_login_ns=now_ns,
                    )
                )
            elif row.disabled_ns is None:
                self.store.put_identity(
                    replace(row, groups=tuple(claims.groups), last_login_ns=now_ns)
                )

    def _authorize(self, adm: Admission, connection: str) -> Admission:
        ident = adm.identity or {}
        name = str(ident.get("subject", ""))
        groups = [str(g) for g in ident.get("groups", [])]
        row = self.store.get_identity(name)
        if row is not None and row.disabled_ns is not None:
            # A disabled identity's credentials are dead: an authentication failure.
            return replace(adm, ok=False, reason="identity disabled")
        if "auditor" in roles_of(name, groups, self.config.roles):
            # Separation of duties: whoever audits the evidence does not touch the data.
            return replace(
                adm, ok=False, denied=True, reason="the auditor role reads evidence, never data"
            )
        rule = granted(connection, name, groups, self.rules())
        if rule is None:
            return replace(adm, ok=False, denied=True, reason="no grant for this connection")
        if not within_scope(connection, adm.scope):
            return replace(
                adm, ok=False, denied=True, reason="the token is not valid for this connection"
            )
        return replace(adm, grant=rule.origin)

    # -- re-checks ------------------------------------------------------------------------
    def recheck(self, sessions: Sequence[SessionFacts], now_ns: int) -> dict[str, str]:
        """session_id → why it must end now, for the sessions that must."""
        if not sessions:
            return {}
        toks = {
            t.id: t for t in self.store.tokens_by_ids([s.token_id for s in sessions if s.token_id])
        }
        idents = {i.name: i for i in self.store.identities_by_names([s.identity for s in sessions])}
        rules = self.rules()
        out: dict[str, str] = {}
        for s in sessions:
            t = toks.get(s.token_id) if s.token_id else None
            i = idents.get(s.identity)
            why = end_reason(
                s,
                now_ns,
                token_revoked=t is not None and t.revoked_ns is not None,
                token_missing=s.token_id is not None and t is None,
                identity_disabled=i is not None and i.disabled_ns is not None,
                still_granted=granted(s.connection, s.identity, s.groups, rules) is not None,
            )
            if why is not None:
                out[s.session_id] = why
        # Sessions an admin asked to end (any gateway's API may have taken the request).
        for sid, why in terminate.requested(
            self.store, [s.session_id for s in sessions if s.session_id not in out]
        ).items():
            out[sid] = why
        return out
