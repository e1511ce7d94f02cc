"""The SQLite engine's schema: its migrations, in order, as SQLite DDL.

Owns the table definitions of the embedded store and the order they were introduced in
(a database made by an older ledgergate is brought forward one migration at a time).
The PostgreSQL engine keeps its own DDL in ``store.postgres_schema``; both describe the
same tables and columns. No queries here.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

IDENTITY_SCHEMA = """
ALTER TABLE tokens ADD COLUMN purpose TEXT NOT NULL DEFAULT 'api';
ALTER TABLE tokens ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tokens ADD COLUMN connections TEXT;
ALTER TABLE tokens ADD COLUMN rotated_from TEXT;
CREATE INDEX tokens_identity ON tokens(identity);
CREATE TABLE identities (
  name TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('user', 'service')),
  source TEXT NOT NULL,
  email TEXT,
  display_name TEXT,
  groups TEXT NOT NULL DEFAULT '[]',
  disabled_ns INTEGER,
  disabled_by TEXT,
  disabled_reason TEXT,
  scim_id TEXT UNIQUE,
  external_id TEXT,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  last_login_ns INTEGER,
  description TEXT
);
CREATE TABLE grants (
  id TEXT PRIMARY KEY,
  connections TEXT NOT NULL,
  groups TEXT NOT NULL,
  identities TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  created_by TEXT
);
CREATE TABLE access_epoch (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  epoch INTEGER NOT NULL
);
INSERT INTO access_epoch (id, epoch) VALUES (1, 0);
"""

# S3 access keys: the token (identity, expiry, revocation, scope) they belong to, and
# the secret sealed under the gateway's access-key key (a SigV4 verifier needs the
# secret itself, so it cannot be a hash).
ACCESS_KEY_SCHEMA = """
CREATE TABLE access_keys (
  key_id TEXT PRIMARY KEY,
  token_id TEXT NOT NULL UNIQUE REFERENCES tokens(id),
  sealed_secret BLOB NOT NULL
);
"""

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

REVIEW_SCHEMA = """
CREATE TABLE reviews (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  state TEXT NOT NULL,
  connection TEXT NOT NULL,
  requester TEXT NOT NULL,
  binding TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  due_ns INTEGER,
  body TEXT NOT NULL
);
CREATE INDEX reviews_state ON reviews(state, created_ns);
CREATE INDEX reviews_kind ON reviews(kind, created_ns);
CREATE INDEX reviews_connection ON reviews(connection, created_ns);
CREATE INDEX reviews_requester ON reviews(requester, created_ns);
CREATE INDEX reviews_binding ON reviews(binding);
CREATE INDEX reviews_due ON reviews(due_ns) WHERE due_ns IS NOT NULL;
CREATE TABLE review_epoch (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  epoch INTEGER NOT NULL
);
INSERT INTO review_epoch (id, epoch) VALUES (1, 0);
CREATE TABLE outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  review_id TEXT NOT NULL,
  event TEXT NOT NULL,
  body TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ns INTEGER NOT NULL,
  delivered_ns INTEGER,
  last_error TEXT,
  claimed_by TEXT,
  claimed_until_ns INTEGER
);
CREATE INDEX outbox_due ON outbox(next_attempt_ns, id) WHERE delivered_ns IS NULL;
CREATE INDEX outbox_review ON outbox(review_id, id)
"""

# The full-text index ``ledgergate search`` reads (services.search keeps it up to date
# from the entries): a doc per searchable entry, its words in a contentless FTS5 index
# (the text is derived again from the entry at each hit, never stored twice).
SEARCH_SCHEMA = """
CREATE TABLE search_docs (
  id INTEGER PRIMARY KEY,
  stream TEXT NOT NULL,
  seq INTEGER NOT NULL,
  UNIQUE (stream, seq)
);
CREATE VIRTUAL TABLE search_fts USING fts5(body, content='', tokenize='unicode61');
CREATE TABLE search_progress (
  stream TEXT PRIMARY KEY,
  next_seq INTEGER NOT NULL
)
"""

# The session lists filter opening entries by identity or connection, newest first: a
# partial index per filter over session.open rows alone (one row in ten of a busy
# ledger, none of the chunks), so a quiet identity's page reads its own rows, not every
# session's. Shared with the PostgreSQL engine's migration 8.
SESSION_OPENS = """
CREATE INDEX entries_opens_identity ON entries(identity, ts_ns) WHERE kind = 'session.open';
CREATE INDEX entries_opens_connection ON entries(connection, ts_ns) WHERE kind = 'session.open';
"""

# Chunk entries indexed in blocks (``store.blocks``): a row per block rather than a row
# and three index entries per chunk. Keyed by its last seq, so "the block holding seq N"
# and "the blocks from seq N on" are one range read. ``ledger_entries`` shows every entry,
# rows and blocks alike, for people's own SQL (the store's reads go to the tables).
ENTRY_BLOCKS = """
CREATE TABLE entry_blocks (
  stream TEXT NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  ts_lo INTEGER NOT NULL,
  ts_hi INTEGER NOT NULL,
  sessions TEXT NOT NULL,
  idx TEXT NOT NULL,
  body BLOB NOT NULL,
  hashes BLOB NOT NULL,
  PRIMARY KEY (stream, last_seq)
);
CREATE VIEW ledger_entries AS
SELECT stream, seq, ts_ns, kind, session_id, identity, connection, canonical, entry_hash
FROM entries
UNION ALL
SELECT stream, seq, ts_ns, 'chunk', session_id, identity, connection,
  substr(body, off - n + 1, n), substr(hashes, 32 * k + 1, 32)
FROM (
  SELECT b.stream, b.body, b.hashes, j.key AS k, j.value->>0 AS seq, j.value->>1 AS ts_ns,
    j.value->>2 AS session_id, j.value->>3 AS identity, j.value->>4 AS connection,
    j.value->>5 AS n,
    sum(j.value->>5) OVER (PARTITION BY b.stream, b.last_seq ORDER BY j.key) AS off
  FROM entry_blocks b, json_each(b.idx) j
)
"""

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE entries (
          stream TEXT NOT NULL,
          seq INTEGER NOT NULL,
          ts_ns INTEGER NOT NULL,
          kind TEXT NOT NULL,
          session_id TEXT,
          identity TEXT,
          connection TEXT,
          canonical BLOB NOT NULL,
          entry_hash BLOB NOT NULL,
          PRIMARY KEY (stream, seq)
        );
        CREATE INDEX entries_session ON entries(session_id) WHERE session_id IS NOT NULL;
        CREATE INDEX entries_kind_ts ON entries(kind, ts_ns);
        CREATE TABLE streams (
          stream TEXT PRIMARY KEY,
          state BLOB NOT NULL,
          updated_ns INTEGER NOT NULL
        );
        CREATE TABLE checkpoints (
          stream TEXT NOT NULL,
          size INTEGER NOT NULL,
          ts_ns INTEGER NOT NULL,
          root BLOB NOT NULL,
          note TEXT NOT NULL,
          PRIMARY KEY (stream, size)
        );
        CREATE TABLE payloads (
          digest TEXT PRIMARY KEY,
          blob BLOB NOT NULL,
          created_ns INTEGER NOT NULL
        );
        CREATE INDEX payloads_created ON payloads(created_ns);
        CREATE TABLE tokens (
          id TEXT PRIMARY KEY,
          token_hash BLOB NOT NULL UNIQUE,
          identity TEXT NOT NULL,
          kind TEXT NOT NULL CHECK (kind IN ('user', 'service')),
          created_ns INTEGER NOT NULL,
          expires_ns INTEGER NOT NULL,
          revoked_ns INTEGER,
          last_used_ns INTEGER,
          created_by TEXT
        );
        """,
    ),
    (2, IDENTITY_SCHEMA),
    (3, POLICY_SCHEMA),
    (4, REVIEW_SCHEMA),
    (5, ACCESS_KEY_SCHEMA),
    (6, SEARCH_SCHEMA),
    # 7 gives PostgreSQL's search docs their time, to read the newest matches off an
    # index; FTS5 already walks its matches newest first (by rowid): nothing to do here.
    (7, ""),
    (8, SESSION_OPENS),
    (9, ENTRY_BLOCKS),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
