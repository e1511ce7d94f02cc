"""Tokens, identities, grants and the access epoch, for both SQL engines.

Owns the SQL for what decides who may hold a session (each engine mixes this in; the
DDL is the engine's). Lists are stored as JSON text. Every change that can end open
sessions raises the access epoch through ``_access_changed`` (the PostgreSQL engine also
announces it with NOTIFY). No rules here: token policy, roles and grants are decided in
``core`` and ``services``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledgergate.store.base import GrantRow, IdentityRow, TokenRow
from ledgergate.store.sql import Db, json_list, list_json, translated, upsert

__all__ = ["TOKEN_COLS", "IdentityTables", "token_row"]


TOKEN_COLS = (
    "id, token_hash, identity, kind, created_ns, expires_ns, revoked_ns, last_used_ns, "
    "created_by, purpose, groups, connections, rotated_from"
)
_IDENTITY_COLS = (
    "name, kind, source, email, display_name, groups, disabled_ns, disabled_by, "
    "disabled_reason, scim_id, external_id, created_ns, updated_ns, last_login_ns, description"
)
_GRANT_COLS = "id, connections, groups, identities, created_ns, created_by"
_UPSERT_IDENTITY = upsert("identities", _IDENTITY_COLS, "name")
# Ids per IN (...) query: far below SQLite's host-parameter limit.
_IN_CHUNK = 500


def token_row(r: Sequence[Any]) -> TokenRow:
    raw = r[1]
    token_hash = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
    return TokenRow(
        r[0],
        token_hash,
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        r[9],
        json_list(r[10]),
        None if r[11] is None else json_list(r[11]),
        r[12],
    )


def _identity(r: Sequence[Any]) -> IdentityRow:
    return IdentityRow(
        name=r[0],
        kind=r[1],
        source=r[2],
        email=r[3],
        display_name=r[4],
        groups=json_list(r[5]),
        disabled_ns=r[6],
        disabled_by=r[7],
        disabled_reason=r[8],
        scim_id=r[9],
        external_id=r[10],
        created_ns=r[11],
        updated_ns=r[12],
        last_login_ns=r[13],
        description=r[14],
    )


def _grant(r: Sequence[Any]) -> GrantRow:
    return GrantRow(r[0], json_list(r[1]), json_list(r[2]), json_list(r[3]), r[4], r[5])


class IdentityTables:
    """Token, identity and grant operations (see ``store.base``)."""

    _db: Db

    # -- tokens -------------------------------------------------------------------------
    @translated
    def insert_token(self, row: TokenRow) -> None:
        self._db.execute(
            f"INSERT INTO tokens ({TOKEN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                row.token_hash,
                row.identity,
                row.kind,
                row.created_ns,
                row.expires_ns,
                row.revoked_ns,
                row.last_used_ns,
                row.created_by,
                row.purpose,
                list_json(row.groups),
                list_json(row.connections),
                row.rotated_from,
            ),
        )

    @translated
    def insert_access_key(self, key_id: str, token_id: str, sealed_secret: bytes) -> None:
        self._db.execute(
            "INSERT INTO access_keys (key_id, token_id, sealed_secret) VALUES (?,?,?)",
            (key_id, token_id, sealed_secret),
        )

    @translated
    def access_key(self, key_id: str) -> tuple[TokenRow, bytes] | None:
        cols = ", ".join(f"t.{c.strip()}" for c in TOKEN_COLS.split(","))
        r = self._db.execute(
            f"SELECT {cols}, k.sealed_secret FROM access_keys k JOIN tokens t "
            "ON t.id = k.token_id WHERE k.key_id=?",
            (key_id,),
        ).fetchone()
        return (token_row(r[:-1]), bytes(r[-1])) if r else None

    @translated
    def access_key_ids(self, token_ids: Sequence[str]) -> dict[str, str]:
        """token id → its access key id, for the tokens that are access keys."""
        rows = self._in("SELECT token_id, key_id FROM access_keys", "token_id", token_ids)
        return {str(r[0]): str(r[1]) for r in rows}

    @translated
    def list_access_keys(self) -> list[tuple[str, str, bytes]]:
        rows = self._db.execute(
            "SELECT key_id, token_id, sealed_secret FROM access_keys ORDER BY key_id"
        )
        return [(str(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    @translated
    def token_by_hash(self, token_hash: bytes) -> TokenRow | None:
        r = self._db.execute(
            f"SELECT {TOKEN_COLS} FROM tokens WHERE token_hash=?", (token_hash,)
        ).fetchone()
        return token_row(r) if r else None

    @translated
    def token_by_id(self, token_id: str) -> TokenRow | None:
        r = self._db.execute(f"SELECT {TOKEN_COLS} FROM tokens WHERE id=?", (token_id,)).fetchone()
        return token_row(r) if r else None

    @translated
    def touch_token(self, token_id: str, now_ns: int) -> None:
        self._db.execute("UPDATE tokens SET last_used_ns=? WHERE id=?", (now_ns, token_id))

    @translated
    def revoke_token(self, token_id: str, now_ns: int) -> bool:
        cur = self._db.execute(
            "UPDATE tokens SET revoked_ns=? WHERE id=? AND revoked_ns IS NULL", (now_ns, token_id)
        )
        if cur.rowcount == 1:
            self.bump_access_epoch()
            return True
        return False

    @translated
    def list_tokens(self, identity: str | None = None) -> list[TokenRow]:
        if identity is None:
            rows = self._db.execute(f"SELECT {TOKEN_COLS} FROM tokens ORDER BY created_ns, id")
        else:
            rows = self._db.execute(
                f"SELECT {TOKEN_COLS} FROM tokens WHERE identity=? ORDER BY created_ns, id",
                (identity,),
            )
        return [token_row(r) for r in rows]

    @translated
    def tokens_by_ids(self, ids: Sequence[str]) -> list[TokenRow]:
        return [token_row(r) for r in self._in(f"SELECT {TOKEN_COLS} FROM tokens", "id", ids)]

    # -- identities ---------------------------------------------------------------------
    @translated
    def get_identity(self, name: str) -> IdentityRow | None:
        r = self._db.execute(
            f"SELECT {_IDENTITY_COLS} FROM identities WHERE name=?", (name,)
        ).fetchone()
        return _identity(r) if r else None

    @translated
    def identity_by_scim_id(self, scim_id: str) -> IdentityRow | None:
        r = self._db.execute(
            f"SELECT {_IDENTITY_COLS} FROM identities WHERE scim_id=?", (scim_id,)
        ).fetchone()
        return _identity(r) if r else None

    @translated
    def put_identity(self, row: IdentityRow) -> None:
        before = self.get_identity(row.name)
        self._db.execute(
            _UPSERT_IDENTITY,
            (
                row.name,
                row.kind,
                row.source,
                row.email,
                row.display_name,
                list_json(row.groups),
                row.disabled_ns,
                row.disabled_by,
                row.disabled_reason,
                row.scim_id,
                row.external_id,
                row.created_ns,
                row.updated_ns,
                row.last_login_ns,
                row.description,
            ),
        )
        if row.disabled_ns is not None and (before is None or before.disabled_ns is None):
            self.bump_access_epoch()

    @translated
    def delete_identity(self, name: str) -> bool:
        cur = self._db.execute("DELETE FROM identities WHERE name=?", (name,))
        if cur.rowcount == 1:
            self.bump_access_epoch()
            return True
        return False

    @translated
    def list_identities(self) -> list[IdentityRow]:
        return [
            _identity(r)
            for r in self._db.execute(f"SELECT {_IDENTITY_COLS} FROM identities ORDER BY name")
        ]

    @translated
    def identities_by_names(self, names: Sequence[str]) -> list[IdentityRow]:
        return [
            _identity(r)
            for r in self._in(f"SELECT {_IDENTITY_COLS} FROM identities", "name", names)
        ]

    # -- grants -------------------------------------------------------------------------
    @translated
    def insert_grant(self, row: GrantRow) -> None:
        self._db.execute(
            f"INSERT INTO grants ({_GRANT_COLS}) VALUES (?,?,?,?,?,?)",
            (
                row.id,
                list_json(row.connections),
                list_json(row.groups),
                list_json(row.identities),
                row.created_ns,
                row.created_by,
            ),
        )

    @translated
    def delete_grant(self, grant_id: str) -> bool:
        cur = self._db.execute("DELETE FROM grants WHERE id=?", (grant_id,))
        if cur.rowcount == 1:
            self.bump_access_epoch()
            return True
        return False

    @translated
    def list_grants(self) -> list[GrantRow]:
        return [
            _grant(r)
            for r in self._db.execute(f"SELECT {_GRANT_COLS} FROM grants ORDER BY created_ns, id")
        ]

    # -- change notice ------------------------------------------------------------------
    @translated
    def access_epoch(self) -> int:
        r = self._db.execute("SELECT epoch FROM access_epoch WHERE id=1").fetchone()
        return int(r[0]) if r else 0

    @translated
    def bump_access_epoch(self) -> None:
        self._db.execute("UPDATE access_epoch SET epoch = epoch + 1 WHERE id=1")

    def _in(self, select: str, column: str, values: Sequence[str]) -> list[Sequence[Any]]:
        out: list[Sequence[Any]] = []
        vals = list(dict.fromkeys(values))
        for i in range(0, len(vals), _IN_CHUNK):
            part = vals[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            out.extend(self._db.execute(f"{select} WHERE {column} IN ({marks})", part))
        return out
