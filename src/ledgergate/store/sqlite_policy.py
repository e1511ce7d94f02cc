"""SQLite engine, part three: policy rules kept in the store, and the policy epoch.

Owns the SQL for the rules added through the API or the CLI (``SqliteStore`` mixes this
in; the schema is migration 3 in ``store.sqlite``). A rule's body is stored as JSON text
and read back as such: validating it, and combining it with the configuration file's
rules, is ``core.policy``'s and ``services``' business, never the store's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ledgergate.store.base import PolicyRuleRow
from ledgergate.store.sqlite_identity import translated

__all__ = ["POLICY_SCHEMA", "PolicyTables"]

POLICY_SCHEMA = """
CREATE TABLE policy_rules (
  id TEXT PRIMARY KEY,
  body TEXT NOT NULL,
  position INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  created_by TEXT,
  updated_ns INTEGER NOT NULL,
  updated_by TEXT
);
CREATE TABLE policy_epoch (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  epoch INTEGER NOT NULL
);
INSERT INTO policy_epoch (id, epoch) VALUES (1, 0);
"""

_COLS = "id, body, position, created_ns, created_by, updated_ns, updated_by"


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


def _row(r: Sequence[Any]) -> PolicyRuleRow:
    return PolicyRuleRow(r[0], _text(r[1]), int(r[2]), int(r[3]), r[4], int(r[5]), r[6])


class PolicyTables:
    """Policy rule operations of ``SqliteStore`` (see ``store.base``)."""

    _db: sqlite3.Connection

    @translated
    def list_policy_rules(self) -> list[PolicyRuleRow]:
        return [
            _row(r)
            for r in self._db.execute(f"SELECT {_COLS} FROM policy_rules ORDER BY position, id")
        ]

    @translated
    def put_policy_rule(self, row: PolicyRuleRow) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO policy_rules ({_COLS}) VALUES (?,?,?,?,?,?,?)",
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
