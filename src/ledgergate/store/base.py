"""The store interface: what services may ask of persistence, whatever the engine.

Owns the shape of stored rows (entries, stream states, checkpoints, payloads, tokens,
identities, grants, policy rules, reviews and their notification outbox) and the
operations on them. Engines (SQLite now,
PostgreSQL later) implement ``Store``; services never see SQL, a connection object or
an engine's exceptions (engines raise ``StoreError``). No business rules here: hashing,
sealing, signing, token policy and policy validation live in ``core`` and ``services``.

Concurrency contract: one ``Store`` instance is used by one thread at a time (open one
per thread); several instances, in several processes, may share one database. Writes
happen inside ``transaction()``; reads outside a transaction see the latest commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "CheckpointRow",
    "EntryRow",
    "GrantRow",
    "IdentityRow",
    "OutboxRow",
    "PolicyRuleRow",
    "ReviewRow",
    "Store",
    "StoreError",
    "TokenRow",
]


class StoreError(RuntimeError):
    """The store cannot do what was asked (unreachable, locked too long, corrupt, a
    newer schema). The message never contains row contents."""


class EntryRow(NamedTuple):
    """One sealed ledger entry as stored. ``session_id``, ``identity`` (the subject)
    and ``connection`` are copies of entry fields kept in indexed columns for search;
    the canonical document is the only authority."""

    stream: str
    seq: int
    ts_ns: int
    kind: str
    session_id: str | None
    identity: str | None
    connection: str | None
    canonical: bytes
    entry_hash: bytes


class CheckpointRow(NamedTuple):
    stream: str
    size: int
    ts_ns: int
    root: bytes
    note: str  # the signed note; ``size``/``root`` are search copies of its body


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    token_hash: bytes
    identity: str
    kind: str
    created_ns: int
    expires_ns: int
    revoked_ns: int | None
    last_used_ns: int | None
    created_by: str | None
    # "api" (minted by an admin for a service account or a person) or "session" (minted
    # at login through the identity provider).
    purpose: str = "api"
    # Groups bound at issue time, and the connections (names or globs) the token is
    # limited to (None: whatever the grants allow).
    groups: tuple[str, ...] = ()
    connections: tuple[str, ...] | None = None
    rotated_from: str | None = None  # the token this one replaced


@dataclass(frozen=True, slots=True)
class IdentityRow:
    """A person or a non-human identity ledgergate knows of: from a login (oidc/saml),
    an IdP JWT, SCIM provisioning, or created locally (service accounts)."""

    name: str
    kind: str  # "user" | "service"
    source: str  # "oidc" | "saml" | "jwt" | "scim" | "local"
    email: str | None = None
    display_name: str | None = None
    groups: tuple[str, ...] = ()
    disabled_ns: int | None = None
    disabled_by: str | None = None
    disabled_reason: str | None = None
    scim_id: str | None = None
    external_id: str | None = None
    created_ns: int = 0
    updated_ns: int = 0
    last_login_ns: int | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A grant made through the API (the YAML file's grants are not stored)."""

    id: str
    connections: tuple[str, ...]
    groups: tuple[str, ...]
    identities: tuple[str, ...]
    created_ns: int
    created_by: str | None


@dataclass(frozen=True, slots=True)
class PolicyRuleRow:
    """A policy rule added through the API or the CLI (the YAML file's rules are not
    stored). ``body`` is the rule without its id, as JSON text; stored rules follow the
    file's rules in ``position`` order."""

    id: str
    body: str
    position: int
    created_ns: int
    created_by: str | None
    updated_ns: int
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """A just-in-time review. ``body`` is the whole record as JSON text (``core.review``
    reads and writes it); the other fields are copies kept in indexed columns for
    finding reviews. ``due_ns``: when the review must move by itself (expire or end),
    None once it is final."""

    id: str
    kind: str
    state: str
    connection: str
    requester: str
    binding: str
    created_ns: int
    updated_ns: int
    due_ns: int | None
    body: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A notification to deliver about a review event, written in the transaction that
    made the change. A worker claims due rows for a lease (``claimed_by`` until
    ``claimed_until_ns``), then marks each delivered, or failed with a next attempt."""

    id: int
    review_id: str
    event: str
    body: str  # JSON text
    created_ns: int
    attempts: int
    next_attempt_ns: int
    delivered_ns: int | None
    last_error: str | None
    claimed_by: str | None
    claimed_until_ns: int | None


class Store(Protocol):
    """Persistence for the ledger and tokens. See the module docstring for threading."""

    url: str

    def close(self) -> None: ...

    def schema_version(self) -> int:
        """The schema version the database is at (the engine migrates it when opened)."""
        ...

    def transaction(self, *, exclusive: bool = True) -> AbstractContextManager[None]:
        """A write transaction holding the database's write lock from its start (so a
        read of the stream state inside it cannot be overtaken by another writer).
        Commits on normal exit, rolls back on an exception. Not re-entrant.

        ``exclusive=False`` is for a writer that reads nothing another may change (a
        gateway's indexer appending its own stream): an engine that can let such
        transactions run side by side does (PostgreSQL); SQLite takes its one lock."""
        ...

    def set_durable(self, durable: bool) -> None:
        """``True``: every commit reaches the disk before it returns (survives power
        loss). ``False``: a commit survives the death of the process, not of the host."""
        ...

    # -- ledger: streams -------------------------------------------------------------
    def get_stream_state(self, stream: str) -> bytes | None: ...

    def put_stream_state(self, stream: str, state: bytes, updated_ns: int) -> None: ...

    def stream_states(self) -> dict[str, bytes]: ...

    def streams(self) -> list[str]:
        """Every stream named by a state, an entry or a checkpoint, sorted."""
        ...

    def streams_between(self, since_ns: int | None, until_ns: int | None) -> list[str]:
        """Streams with at least one entry with ``since_ns <= ts_ns < until_ns``."""
        ...

    # -- ledger: entries ------------------------------------------------------------
    def insert_entries(self, rows: Sequence[EntryRow]) -> None: ...

    def iter_entries(
        self, stream: str, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, canonical, entry_hash) of the stream's entries with ``start <= seq <
        stop``, in seq order, streamed (constant memory)."""
        ...

    def iter_entry_rows(self, stream: str) -> Iterator[EntryRow]:
        """Every entry of the stream with its search columns, in seq order, streamed
        (what a verifier compares the columns with their documents on)."""
        ...

    def iter_entry_hashes(self, stream: str, stop: int) -> Iterator[bytes]:
        """entry_hash of entries ``0 <= seq < stop`` in seq order."""
        ...

    def get_entry(self, stream: str, seq: int) -> EntryRow | None: ...

    def max_seq(self, stream: str) -> int | None: ...

    def last_seq_before(self, stream: str, until_ns: int) -> int | None:
        """Highest seq of the stream with ``ts_ns < until_ns``."""
        ...

    def find_entries(
        self,
        *,
        kinds: Sequence[str] = (),
        session_ids: Sequence[str] = (),
        identity: str | None = None,
        connection: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[EntryRow]:
        """Entries matching every given filter, ordered by (ts_ns, stream, seq)."""
        ...

    def find_open_sessions(
        self,
        *,
        identity: str | None = None,
        connection: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[EntryRow]:
        """``session.open`` entries with no ``session.close`` or ``session.terminated``
        entry of their session, newest first, matching every given filter."""
        ...

    def prune_entries(self, stream: str, stubs: Sequence[tuple[int, bytes]]) -> int:
        """Replace the canonical bytes of entries by their retention stubs (see
        ``core.ledger.retention``), keeping each ``entry_hash``; their search columns
        are cleared. Returns how many rows changed."""
        ...

    # -- ledger: the full-text search index (derived; services.search keeps it) ---------
    def search_progress(self) -> dict[str, int]:
        """stream -> the first seq the search index has not looked at yet."""
        ...

    def add_search_docs(
        self, docs: Sequence[tuple[str, int, int, str]], progress: dict[str, int]
    ) -> None:
        """Index (stream, seq, ts_ns, words) docs and move the streams' progress, in one
        transaction; a doc already indexed is kept as it is."""
        ...

    def search_entries(
        self,
        phrases: Sequence[Sequence[str]],
        *,
        kinds: Sequence[str] = (),
        identity: str | None = None,
        connection: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 100,
    ) -> list[EntryRow]:
        """Entries whose indexed words hold every phrase (each a run of lower-case
        words), newest first, with the filters ``find_entries`` takes."""
        ...

    # -- ledger: checkpoints and payloads --------------------------------------------
    def put_checkpoint(self, row: CheckpointRow) -> None:
        """Store a signed checkpoint; one already stored at (stream, size) is kept."""
        ...

    def checkpoints(self, stream: str) -> list[CheckpointRow]:
        """The stream's checkpoints, by size."""
        ...

    def latest_checkpoint(self, stream: str) -> CheckpointRow | None: ...

    def put_payloads(self, rows: Sequence[tuple[str, bytes, int]]) -> None:
        """(digest, sealed blob, created_ns); a digest already stored is kept."""
        ...

    def get_payload(self, digest: str) -> bytes | None: ...

    def delete_payloads(self, created_before_ns: int) -> int:
        """Retention: drop payloads created before the time; entries stay verifiable."""
        ...

    def delete_payload_digests(self, digests: Sequence[str]) -> int:
        """Retention: drop these payloads; the entries naming them stay verifiable."""
        ...

    def iter_payloads(self) -> Iterator[tuple[str, bytes, int]]:
        """Every payload (digest, sealed blob, created_ns) by digest, streamed."""
        ...

    # -- tokens ---------------------------------------------------------------------
    def insert_token(self, row: TokenRow) -> None: ...

    def token_by_hash(self, token_hash: bytes) -> TokenRow | None: ...

    def token_by_id(self, token_id: str) -> TokenRow | None: ...

    def touch_token(self, token_id: str, now_ns: int) -> None: ...

    def revoke_token(self, token_id: str, now_ns: int) -> bool:
        """Mark the token revoked; False if it is unknown or already revoked."""
        ...

    def list_tokens(self, identity: str | None = None) -> list[TokenRow]: ...

    def insert_access_key(self, key_id: str, token_id: str, sealed_secret: bytes) -> None:
        """An S3 access key for the token (inserted in the token's transaction)."""
        ...

    def access_key(self, key_id: str) -> tuple[TokenRow, bytes] | None:
        """The token an access key id belongs to and its sealed secret."""
        ...

    def access_key_ids(self, token_ids: Sequence[str]) -> dict[str, str]: ...

    def tokens_by_ids(self, ids: Sequence[str]) -> list[TokenRow]: ...

    def list_access_keys(self) -> list[tuple[str, str, bytes]]:
        """Every S3 access key: (key id, token id, sealed secret)."""
        ...

    # -- identities and grants --------------------------------------------------------
    def get_identity(self, name: str) -> IdentityRow | None: ...

    def identity_by_scim_id(self, scim_id: str) -> IdentityRow | None: ...

    def put_identity(self, row: IdentityRow) -> None:
        """Insert or replace the identity named ``row.name``."""
        ...

    def delete_identity(self, name: str) -> bool: ...

    def list_identities(self) -> list[IdentityRow]: ...

    def identities_by_names(self, names: Sequence[str]) -> list[IdentityRow]: ...

    def insert_grant(self, row: GrantRow) -> None: ...

    def delete_grant(self, grant_id: str) -> bool: ...

    def list_grants(self) -> list[GrantRow]: ...

    # -- change notice ------------------------------------------------------------------
    def access_epoch(self) -> int:
        """A counter raised by every change that can end open sessions (a token revoked,
        an identity disabled, a grant removed): gateways poll it cheaply and re-check
        their sessions when it moves."""
        ...

    def bump_access_epoch(self) -> None: ...

    # -- policy rules ---------------------------------------------------------------------
    def list_policy_rules(self) -> list[PolicyRuleRow]:
        """The stored policy rules by ``position`` (then id)."""
        ...

    def put_policy_rule(self, row: PolicyRuleRow) -> None:
        """Insert or replace the rule ``row.id``; raises the policy epoch."""
        ...

    def delete_policy_rule(self, rule_id: str) -> bool:
        """Remove a stored rule (raising the policy epoch); False if there is none."""
        ...

    def policy_epoch(self) -> int:
        """A counter raised by every change of the stored policy rules: gateways poll it
        cheaply and rebuild their policy when it moves."""
        ...

    # -- reviews ---------------------------------------------------------------------------
    def put_review(self, row: ReviewRow) -> None:
        """Insert or replace the review ``row.id``; raises the review epoch."""
        ...

    def get_review(self, review_id: str) -> ReviewRow | None: ...

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
        """Reviews matching every given filter, newest first (then by id)."""
        ...

    def reviews_due(self, now_ns: int, limit: int | None = None) -> list[ReviewRow]:
        """Reviews with ``due_ns <= now_ns``, the earliest first."""
        ...

    def review_epoch(self) -> int:
        """A counter raised by every change of a review: a gateway holding a statement
        polls it cheaply and reads the review again when it moves."""
        ...

    # -- notification outbox --------------------------------------------------------------
    def add_outbox(self, review_id: str, event: str, body: str, created_ns: int) -> int:
        """Queue a notification (due at once); returns its id. Call it inside the
        transaction that makes the change it announces."""
        ...

    def claim_outbox(self, owner: str, now_ns: int, limit: int, lease_ns: int) -> list[OutboxRow]:
        """Atomically claim up to ``limit`` undelivered rows due at ``now_ns`` and not
        held by another worker's live lease, oldest first: each is held by ``owner``
        until ``now_ns + lease_ns`` and its ``attempts`` counts this one."""
        ...

    def mark_outbox_delivered(self, row_id: int, now_ns: int) -> bool:
        """The row was delivered (its claim is released); False if it was already."""
        ...

    def mark_outbox_failed(self, row_id: int, error: str, next_attempt_ns: int) -> bool:
        """Delivery failed: release the claim and try again at ``next_attempt_ns``;
        False if the row is unknown or already delivered."""
        ...

    def put_outbox_row(self, row: OutboxRow) -> None:
        """Store an outbox row as it is, id included (moving a store to another engine)."""
        ...

    def list_outbox(
        self, review_id: str | None = None, *, pending_only: bool = False
    ) -> list[OutboxRow]:
        """Outbox rows (of one review), oldest first; ``pending_only``: not delivered."""
        ...
