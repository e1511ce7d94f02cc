"""Just-in-time reviews, the review epoch, and the outbox of notifications about them,
for both SQL engines.

Owns the SQL for reviews (each engine mixes this in; the DDL is the engine's). A
review's body is JSON text written and read by ``core.review``; the indexed columns are
copies for finding reviews. Every write of a review raises the
review epoch, which gateways sharing the store watch. The outbox holds one row per review
event to notify about, claimed by delivery workers under a lease so two workers never
send the same row at once. No rules here: who may decide what is ``core``'s business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledgergate.store.base import OutboxRow, ReviewRow
from ledgergate.store.sql import Db, translated, upsert

__all__ = ["ReviewTables"]

_COLS = "id, kind, state, connection, requester, binding, created_ns, updated_ns, due_ns, body"
_UPSERT = upsert("reviews", _COLS, "id")
_OUTBOX_COLS = (
    "id, review_id, event, body, created_ns, attempts, next_attempt_ns, delivered_ns, "
    "last_error, claimed_by, claimed_until_ns"
)
# An error message kept for an operator to read, not a log: bounded.
MAX_ERROR = 500


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


def _review(r: Sequence[Any]) -> ReviewRow:
    return ReviewRow(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), r[8], _text(r[9]))


def _outbox(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        int(r[0]), r[1], r[2], _text(r[3]), int(r[4]), int(r[5]), int(r[6]), r[7], r[8], r[9], r[10]
    )


class ReviewTables:
    """Review and outbox operations (see ``store.base``)."""

    _db: Db
    # What a claiming subquery adds to lock the rows it picks ('' where one statement
    # already holds the whole database).
    _ROW_CLAIM = ""

    # -- reviews --------------------------------------------------------------------------
    @translated
    def put_review(self, row: ReviewRow) -> None:
        self._db.execute(
            _UPSERT,
            (
                row.id,
                row.kind,
                row.state,
                row.connection,
                row.requester,
                row.binding,
                row.created_ns,
                row.updated_ns,
                row.due_ns,
                row.body,
            ),
        )
        self._bump_review_epoch()

    @translated
    def get_review(self, review_id: str) -> ReviewRow | None:
        r = self._db.execute(f"SELECT {_COLS} FROM reviews WHERE id=?", (review_id,)).fetchone()
        return _review(r) if r else None

    @translated
    def list_reviews(
        self,
        *,
        states: Sequence[str] = (),
        kind: str | None = None,
        connection: str | None = None,
        requester: str | None = None,
        binding: str | None = None,
        limit: int | None = None,
    ) -> list[ReviewRow]:
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        for col, val in (
            ("kind", kind),
            ("connection", connection),
            ("requester", requester),
            ("binding", binding),
        ):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        sql = f"SELECT {_COLS} FROM reviews"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ns DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_review(r) for r in self._db.execute(sql, args)]

    @translated
    def reviews_due(self, now_ns: int, limit: int | None = None) -> list[ReviewRow]:
        sql = (
            f"SELECT {_COLS} FROM reviews WHERE due_ns IS NOT NULL AND due_ns<=? "
            "ORDER BY due_ns, id"
        )
        args: list[Any] = [now_ns]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_review(r) for r in self._db.execute(sql, args)]

    def _bump_review_epoch(self) -> None:
        self._db.execute("UPDATE review_epoch SET epoch = epoch + 1 WHERE id=1")

    @translated
    def review_epoch(self) -> int:
        r = self._db.execute("SELECT epoch FROM review_epoch WHERE id=1").fetchone()
        return int(r[0]) if r else 0

    # -- outbox ---------------------------------------------------------------------------
    @translated
    def add_outbox(self, review_id: str, event: str, body: str, created_ns: int) -> int:
        row = self._db.execute(
            "INSERT INTO outbox (review_id, event, body, created_ns, next_attempt_ns) "
            "VALUES (?,?,?,?,?) RETURNING id",
            (review_id, event, body, created_ns, created_ns),
        ).fetchone()
        return int(row[0])

    @translated
    def claim_outbox(self, owner: str, now_ns: int, limit: int, lease_ns: int) -> list[OutboxRow]:
        # One statement: SQLite runs it under its write lock from start to end, and
        # PostgreSQL's row locks (``_ROW_CLAIM``) skip rows another worker is claiming,
        # so two workers (threads or processes) never claim the same row.
        rows = self._db.execute(
            "UPDATE outbox SET claimed_by=?, claimed_until_ns=?, attempts=attempts+1 "
            "WHERE id IN (SELECT id FROM outbox WHERE delivered_ns IS NULL "
            "AND next_attempt_ns<=? AND (claimed_until_ns IS NULL OR claimed_until_ns<=?) "
            f"ORDER BY next_attempt_ns, id LIMIT ?{self._ROW_CLAIM}) "
            f"RETURNING {_OUTBOX_COLS}",
            (owner, now_ns + lease_ns, now_ns, now_ns, limit),
        ).fetchall()
        return sorted((_outbox(r) for r in rows), key=lambda o: (o.next_attempt_ns, o.id))

    @translated
    def mark_outbox_delivered(self, row_id: int, now_ns: int) -> bool:
        cur = self._db.execute(
            "UPDATE outbox SET delivered_ns=?, claimed_by=NULL, claimed_until_ns=NULL, "
            "last_error=NULL WHERE id=? AND delivered_ns IS NULL",
            (now_ns, row_id),
        )
        return bool(cur.rowcount == 1)

    @translated
    def mark_outbox_failed(self, row_id: int, error: str, next_attempt_ns: int) -> bool:
        cur = self._db.execute(
            "UPDATE outbox SET last_error=?, next_attempt_ns=?, claimed_by=NULL, "
            "claimed_until_ns=NULL WHERE id=? AND delivered_ns IS NULL",
            (error[:MAX_ERROR], next_attempt_ns, row_id),
        )
        return bool(cur.rowcount == 1)

    @translated
    def put_outbox_row(self, row: OutboxRow) -> None:
        self._db.execute(
            f"INSERT INTO outbox ({_OUTBOX_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                row.review_id,
                row.event,
                row.body,
                row.created_ns,
                row.attempts,
                row.next_attempt_ns,
                row.delivered_ns,
                row.last_error,
                row.claimed_by,
                row.claimed_until_ns,
            ),
        )
        self._outbox_ids_moved()

    def _outbox_ids_moved(self) -> None:
        """After rows were inserted with their ids: new ids continue past them."""

    @translated
    def list_outbox(
        self, review_id: str | None = None, *, pending_only: bool = False
    ) -> list[OutboxRow]:
        where: list[str] = []
        args: list[Any] = []
        if review_id is not None:
            where.append("review_id=?")
            args.append(review_id)
        if pending_only:
            where.append("delivered_ns IS NULL")
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_outbox(r) for r in self._db.execute(sql + " ORDER BY id", args)]
