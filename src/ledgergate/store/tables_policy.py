"""Policy rules kept in the store, and the policy epoch, for both SQL engines.

Owns the SQL for the rules added through the API or the CLI (each engine mixes this in;
the DDL is the engine's). A rule's body is stored as JSON text
and read back as such: validating it, and combining it with the configuration file's
rules, is ``core.policy``'s and ``services``' business, never the store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledgergate.store.base import PolicyRuleRow
from ledgergate.store.sql import Db, translated, upsert

__all__ = ["PolicyTables"]

_COLS = "id, body, position, created_ns, created_by, updated_ns, updated_by"
_UPSERT = upsert("policy_rules", _COLS, "id")


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


def _row(r: Sequence[Any]) -> PolicyRuleRow:
    return PolicyRuleRow(r[0], _text(r[1]), int(r[2]), int(r[3]), r[4], int(r[5]), r[6])


class PolicyTables:
    """Policy rule operations (see ``store.base``)."""

    _db: Db

    @translated
    def list_policy_rules(self) -> list[PolicyRuleRow]:
        return [
            _row(r)
            for r in self._db.execute(f"SELECT {_COLS} FROM policy_rules ORDER BY position, id")
        ]

    @translated
    def put_policy_rule(self, row: PolicyRuleRow) -> None:
        self._db.execute(
            _UPSERT,
            (
                row.id,
                row.body,
                row.position,
                row.created_ns,
                row.created_by,
                row.updated_ns,
                row.updated_by,
            ),
        )
        self._bump_policy_epoch()

    @translated
    def delete_policy_rule(self, rule_id: str) -> bool:
        cur = self._db.execute("DELETE FROM policy_rules WHERE id=?", (rule_id,))
        if cur.rowcount == 1:
            self._bump_policy_epoch()
            return True
        return False

    @translated
    def policy_epoch(self) -> int:
        r = self._db.execute("SELECT epoch FROM policy_epoch WHERE id=1").fetchone()
        return int(r[0]) if r else 0

    def _bump_policy_epoch(self) -> None:
        self._db.execute("UPDATE policy_epoch SET epoch = epoch + 1 WHERE id=1")
