"""SCIM 2.0 Users (RFC 7643/7644) over ledgergate's identities.

What an identity provider's provisioning connector does: create users, replace them,
patch them (above all ``active: false`` when someone leaves), list them with a
``userName eq "..."`` filter, and delete them. A user set inactive or deleted is
disabled: its tokens stop working and its open sessions end (see
``services.identities``); a deleted user stays known (disabled) so the ledger's history
keeps its name. Every change is an ``admin.scim.*`` or ``admin.identity.*`` entry.
Errors are ``ScimError`` with the HTTP status and SCIM ``scimType`` to answer.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from typing import Any

from ledgergate.core.identity import IdentityError
from ledgergate.core.ledger.entry import Draft
from ledgergate.services.identities import set_disabled
from ledgergate.services.ledger import LedgerWriter
from ledgergate.services.tokens import record_change
from ledgergate.store.base import IdentityRow, Store

__all__ = [
    "ERROR_SCHEMA",
    "LIST_SCHEMA",
    "USER_SCHEMA",
    "ScimError",
    "create_user",
    "delete_user",
    "get_user",
    "list_users",
    "patch_user",
    "replace_user",
    "user_resource",
]

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# Page size when the client asks for none (and the most it may ask for).
DEFAULT_COUNT = 100
MAX_COUNT = 1000
_FILTER = re.compile(r'^\s*(userName|externalId|id)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def body(self) -> dict[str, Any]:
        b: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status)}
        b["detail"] = self.detail
        if self.scim_type:
            b["scimType"] = self.scim_type
        return b


def user_resource(row: IdentityRow, base_url: str) -> dict[str, Any]:
    r: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": row.scim_id,
        "userName": row.name,
        "active": row.disabled_ns is None,
        "meta": {
            "resourceType": "User",
            "created": _iso(row.created_ns),
            "lastModified": _iso(row.updated_ns),
            "location": f"{base_url}/scim/v2/Users/{row.scim_id}",
        },
    }
    if row.external_id:
        r["externalId"] = row.external_id
    if row.display_name:
        r["displayName"] = row.display_name
    if row.email:
        r["emails"] = [{"value": row.email, "primary": True}]
    if row.groups:
        r["groups"] = [{"value": g, "display": g} for g in row.groups]
    return r


def _iso(ns: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _str(doc: dict[str, Any], key: str) -> str | None:
    v = doc.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ScimError(400, f"{key} must be a string", "invalidValue")
    return v


def _email(doc: dict[str, Any]) -> str | None:
    emails = doc.get("emails")
    if not isinstance(emails, list) or not emails:
        return None
    good = [e for e in emails if isinstance(e, dict) and isinstance(e.get("value"), str)]
    primary = [e for e in good if e.get("primary")]
    pick = (primary or good)[:1]
    return str(pick[0]["value"]) if pick else None


def _display(doc: dict[str, Any]) -> str | None:
    d = _str(doc, "displayName")
    if d:
        return d
    name = doc.get("name")
    if isinstance(name, dict) and isinstance(name.get("formatted"), str):
        return str(name["formatted"])
    return None


def _active(v: object) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"  # some IdPs send the string
    raise ScimError(400, "active must be a boolean", "invalidValue")


def get_user(store: Store, scim_id: str) -> IdentityRow:
    row = store.identity_by_scim_id(scim_id)
    if row is None:
        raise ScimError(404, f"no user {scim_id[:64]!r}")
    return row


def list_users(
    store: Store, filter_: str | None, start_index: int = 1, count: int | None = None
) -> tuple[list[IdentityRow], int]:
    """(the page, the total) of provisioned users matching the filter."""
    rows = [r for r in store.list_identities() if r.scim_id is not None]
    if filter_:
        m = _FILTER.match(filter_)
        if m is None:
            raise ScimError(
                400, "only 'userName|externalId|id eq \"value\"' filters", "invalidFilter"
            )
        attr, value = m.group(1).lower(), m.group(2).replace('\\"', '"')
        field = {"username": "name", "externalid": "external_id", "id": "scim_id"}[attr]
        if field == "name":  # userName is case-insensitive (RFC 7643 §4.1.1)
            rows = [r for r in rows if r.name.lower() == value.lower()]
        else:
            rows = [r for r in rows if getattr(r, field) == value]
    n = min(max(count if count is not None else DEFAULT_COUNT, 0), MAX_COUNT)
    start = max(start_index, 1) - 1
    return rows[start : start + n], len(rows)


def create_user(
    store: Store, writer: LedgerWriter, doc: dict[str, Any], *, now_ns: int, by: str
) -> IdentityRow:
    name = _str(doc, "userName")
    if not name:
        raise ScimError(400, "userName is required", "invalidValue")
    existing = store.get_identity(name)
    if existing is not None and existing.scim_id is not None:
        raise ScimError(409, f"user {name!r} already exists", "uniqueness")
    active = _active(doc.get("active", True))
    base = existing or IdentityRow(name=name, kind="user", source="scim", created_ns=now_ns)
    row = replace(
        base,
        scim_id=str(uuid.uuid4()),
        external_id=_str(doc, "externalId"),
        email=_email(doc) or base.email,
        display_name=_display(doc) or base.display_name,
        updated_ns=now_ns,
    )
    entry = Draft(
        now_ns,
        "admin.scim.user.create",
        {
            "identity": {"kind": "user", "subject": name, "groups": list(row.groups)},
            "scim_id": row.scim_id,
            "by": by,
        },
    )
    record_change(store, writer, entry, lambda st: st.put_identity(row))
    if not active:
        _set_active(store, writer, row, False, now_ns=now_ns, by=by)
    return get_user(store, str(row.scim_id))


def replace_user(
    store: Store, writer: LedgerWriter, scim_id: str, doc: dict[str, Any], *, now_ns: int, by: str
) -> IdentityRow:
    row = get_user(store, scim_id)
    name = _str(doc, "userName")
    if name is not None and name != row.name:
        # ledgergate's identity name is what the ledger names; renaming would split it.
        raise ScimError(400, "userName cannot be changed", "mutability")
    new = replace(
        row,
        external_id=_str(doc, "externalId") or row.external_id,
        email=_email(doc) or row.email,
        display_name=_display(doc) or row.display_name,
        updated_ns=now_ns,
    )
    if new != row:
        entry = Draft(
            now_ns,
            "admin.scim.user.update",
            {
                "identity": {"kind": row.kind, "subject": row.name, "groups": list(row.groups)},
                "scim_id": scim_id,
                "by": by,
            },
        )
        record_change(store, writer, entry, lambda st: st.put_identity(new))
    if "active" in doc:
        _set_active(store, writer, new, _active(doc["active"]), now_ns=now_ns, by=by)
    return get_user(store, scim_id)


def patch_user(
    store: Store, writer: LedgerWriter, scim_id: str, doc: dict[str, Any], *, now_ns: int, by: str
) -> IdentityRow:
    """RFC 7644 §3.5.2 PatchOp; ``active`` is what matters, plus the profile fields."""
    row = get_user(store, scim_id)
    ops = doc.get("Operations")
    if not isinstance(ops, list) or not ops:
        raise ScimError(400, "a PatchOp needs Operations", "invalidSyntax")
    changes: dict[str, Any] = {}
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise ScimError(400, "each operation needs an op", "invalidSyntax")
        kind = op["op"].lower()
        if kind not in ("replace", "add", "remove"):
            raise ScimError(400, f"unsupported op {op['op'][:20]!r}", "invalidSyntax")
        path, value = op.get("path"), op.get("value")
        if path is None:
            if not isinstance(value, dict):
                raise ScimError(
                    400, "an operation without a path needs an object value", "invalidValue"
                )
            changes.update(value)
        elif isinstance(path, str):
            changes[path] = None if kind == "remove" else value
        else:
            raise ScimError(400, "path must be a string", "invalidPath")
    profile = {k: v for k, v in changes.items() if k != "active"}
    if profile:
        replace_user(store, writer, scim_id, profile | {"userName": row.name}, now_ns=now_ns, by=by)
    if "active" in changes:
        _set_active(
            store,
            writer,
            get_user(store, scim_id),
            _active(changes["active"]),
            now_ns=now_ns,
            by=by,
        )
    return get_user(store, scim_id)


def delete_user(store: Store, writer: LedgerWriter, scim_id: str, *, now_ns: int, by: str) -> None:
    """Deprovision: the identity is disabled and unlinked from SCIM (it stays known)."""
    row = get_user(store, scim_id)
    if row.disabled_ns is None:
        _set_active(store, writer, row, False, now_ns=now_ns, by=by)
        row = get_user(store, scim_id)
    unlinked = replace(row, scim_id=None, updated_ns=now_ns)
    entry = Draft(
        now_ns,
        "admin.scim.user.delete",
        {
            "identity": {"kind": row.kind, "subject": row.name, "groups": list(row.groups)},
            "scim_id": scim_id,
            "by": by,
        },
    )
    record_change(store, writer, entry, lambda st: st.put_identity(unlinked))


def _set_active(
    store: Store, writer: LedgerWriter, row: IdentityRow, active: bool, *, now_ns: int, by: str
) -> None:
    try:
        set_disabled(
            store,
            writer,
            row.name,
            disabled=not active,
            now_ns=now_ns,
            by=by,
            reason=None if active else "deprovisioned by the identity provider (SCIM)",
            via="scim",
        )
    except IdentityError as e:
        raise ScimError(400, str(e), "invalidValue") from None
