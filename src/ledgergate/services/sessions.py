"""Reading recorded sessions back: list, timeline, replay. Shared by the CLI and the API.

Owns the queries over session entries and the replay loop (order, timing, rendering).
Sessions are found by their ``session.open`` entries and completed by their
``session.close``; a session's timeline is its entries in stream order. Replay shows the
recorded text of commands and, where the connection recorded payloads (``full``), the
decoded results as psql would print them (see ``services.psql``); otherwise chunk
metadata. Read-only: never writes the store, never prints a payload it cannot verify.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from ledgergate.services import http_timeline, kafka_timeline, ssh_replay
from ledgergate.services.journal import as_entry_says
from ledgergate.services.keys import PayloadCipher, PayloadError
from ledgergate.services.psql import PsqlRenderer, frontend_query_text
from ledgergate.store.base import EntryRow, Store

__all__ = [
    "SessionPage",
    "SessionSummary",
    "describe",
    "left_open",
    "list_sessions",
    "page_sessions",
    "replay",
    "session_timeline",
    "summaries",
]

# What makes a session ended in the ledger.
_ENDS = ("session.close", "session.terminated")
# The fields of a session's opening entry that its closing entry repeats.
_SESSION_FIELDS = ("session_id", "connection", "identity", "source", "protocol", "policy")


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    opened_ns: int
    entry: str  # stream:seq of the session.open entry
    identity: dict[str, Any] | None
    connection: str | None
    source: dict[str, Any] | None
    client: dict[str, Any] | None
    tls: dict[str, Any] | None
    recording: str | None
    closed_ns: int | None
    outcome: str | None
    stats: dict[str, Any] | None

    @property
    def subject(self) -> str | None:
        return self.identity.get("subject") if isinstance(self.identity, dict) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "opened_ns": self.opened_ns,
            "entry": self.entry,
            "identity": self.identity,
            "connection": self.connection,
            "source": self.source,
            "client": self.client,
            "tls": self.tls,
            "recording": self.recording,
            "closed_ns": self.closed_ns,
            "outcome": self.outcome,
            "stats": self.stats,
        }


def _doc(row: EntryRow) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(row.canonical)
    return d


def _dict(v: object) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


def list_sessions(
    store: Store,
    identity: str | None = None,
    connection: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    limit: int = 100,
) -> list[SessionSummary]:
    """Sessions opened in [since_ns, until_ns), newest first, by identity subject and
    connection name when given."""
    rows = store.find_entries(
        kinds=("session.open",),
        identity=identity,
        connection=connection,
        since_ns=since_ns,
        until_ns=until_ns,
        newest_first=True,
        limit=limit,
    )
    return summaries(store, rows, identity, connection, since_ns, until_ns)


def summaries(
    store: Store,
    rows: list[EntryRow],
    identity: str | None,
    connection: str | None,
    since_ns: int | None,
    until_ns: int | None,
) -> list[SessionSummary]:
    """The sessions of these ``session.open`` rows, each with how it ended."""
    # The store's columns chose the rows; the entries themselves decide: a row whose
    # column was edited in the database is presented (or not) as its entry says.
    opens = [
        said
        for said in map(as_entry_says, rows)
        if said is not None and _matches(said, identity, connection, since_ns, until_ns)
    ]
    ids = [r.session_id for r in opens if r.session_id]
    closes: dict[str, dict[str, Any]] = {}
    if ids:
        # A session ends with its close entry, or (a gateway that ended it and could not
        # write more) its termination entry alone; the close, when there, says more.
        for r in store.find_entries(kinds=_ENDS, session_ids=ids):
            said = as_entry_says(r)
            if said is None or said.kind not in _ENDS or said.session_id not in ids:
                continue
            sid = str(said.session_id)
            if said.kind == "session.close" or sid not in closes:
                closes[sid] = _doc(said)
    out = []
    for r in opens:
        d = _doc(r)
        c = closes.get(r.session_id or "")
        out.append(
            SessionSummary(
                session_id=str(d.get("session_id")),
                opened_ns=r.ts_ns,
                entry=f"{r.stream}:{r.seq}",
                identity=_dict(d.get("identity")),
                connection=d.get("connection"),
                source=_dict(d.get("source")),
                client=_dict(d.get("client")),
                tls=_dict(d.get("tls")),
                recording=d.get("recording"),
                closed_ns=c["ts_ns"] if c else None,
                outcome=_end_outcome(c) if c else None,
                stats=_end_stats(c) if c else None,
            )
        )
    return out


# One page of the console's and the API's session lists at most, and how many
# ``session.open`` rows one call reads at most while filters the index cannot apply
# (protocol, outcome) skip rows: a page that reaches it ends early with a cursor.
MAX_PAGE = 200
_SCAN_BATCH = 500
MAX_SCAN = 20_000


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionSummary]
    # Where the next (older) page starts: ``ts_ns:stream:seq`` of this page's last
    # opening entry; None when nothing older matched.
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"sessions": [s.as_dict() for s in self.sessions], "next": self.next_cursor}


def _position(s: SessionSummary) -> tuple[int, str, int]:
    stream, _, seq = s.entry.rpartition(":")
    return (s.opened_ns, stream, int(seq))


def parse_cursor(cursor: str) -> tuple[int, str, int]:
    ts, _, rest = cursor.partition(":")
    stream, _, seq = rest.rpartition(":")
    try:
        return (int(ts), stream, int(seq))
    except ValueError:
        raise ValueError("cursor: ts_ns:stream:seq as a page's 'next' gave it") from None


def page_sessions(
    store: Store,
    *,
    identity: str | None = None,
    connection: str | None = None,
    connections: frozenset[str] | None = None,
    outcome: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> SessionPage:
    """A page of sessions, newest first, older than ``cursor`` (a previous page's
    ``next``). ``connections`` keeps sessions of those connections (a protocol's);
    ``outcome`` those whose end says so (``open``: not ended yet)."""
    limit = max(1, min(limit, MAX_PAGE))
    after = parse_cursor(cursor) if cursor else None
    upper = until_ns
    if after is not None:
        upper = after[0] + 1 if upper is None else min(upper, after[0] + 1)
    out: list[SessionSummary] = []
    scanned = 0
    while len(out) <= limit and scanned < MAX_SCAN:
        if outcome == "open":  # ended ones are left out by the store (few are open)
            rows = store.find_open_sessions(
                identity=identity,
                connection=connection,
                since_ns=since_ns,
                until_ns=upper,
                limit=_SCAN_BATCH,
            )
        else:
            rows = store.find_entries(
                kinds=("session.open",),
                identity=identity,
                connection=connection,
                since_ns=since_ns,
                until_ns=upper,
                newest_first=True,
                limit=_SCAN_BATCH,
            )
        scanned += _SCAN_BATCH
        batch = summaries(store, rows, identity, connection, since_ns, upper)
        for s in batch:
            if after is not None and _position(s) >= after:
                continue  # on an earlier page (same nanosecond as its last row)
            if connections is not None and s.connection not in connections:
                continue
            if outcome is not None and not _ended_so(s, outcome):
                continue
            out.append(s)
        if len(rows) < _SCAN_BATCH:  # the store has no older ones (not: none were kept)
            return SessionPage(out[:limit], _cursor(out[limit - 1]) if len(out) > limit else None)
        # Older than this batch: batches overlap on their last nanosecond, and the
        # position check drops what was seen.
        last = (rows[-1].ts_ns, rows[-1].stream, rows[-1].seq)
        after = last if after is None or last < after else after
        upper = last[0] + 1
    if len(out) > limit:
        return SessionPage(out[:limit], _cursor(out[limit - 1]))
    # The scan budget ran out before the page filled: go on from where it stopped.
    return SessionPage(out, _cursor_at(after) if after is not None else None)


def _ended_so(s: SessionSummary, outcome: str) -> bool:
    """``open``: not ended yet; else words of how it ended (``revoked``, ``client``)."""
    if outcome == "open":
        return s.closed_ns is None
    return s.outcome is not None and outcome.lower() in s.outcome.lower()


def _cursor(s: SessionSummary) -> str:
    return _cursor_at(_position(s))


def _cursor_at(p: tuple[int, str, int]) -> str:
    return f"{p[0]}:{p[1]}:{p[2]}"


def left_open(store: Store, stream: str, since_ns: int) -> list[dict[str, Any]]:
    """The sessions that ``stream`` opened since ``since_ns`` and never ended: those of a
    gateway killed (or crashed) with sessions open. Each as the fields its closing entry
    repeats from its opening entry, as that entry says."""
    rows = store.find_entries(kinds=("session.open",), since_ns=since_ns)
    opens = [
        said
        for said in map(as_entry_says, rows)
        if said is not None and said.stream == stream and said.session_id
    ]
    if not opens:
        return []
    ids = [str(r.session_id) for r in opens]
    ended = {
        said.session_id
        for said in map(as_entry_says, store.find_entries(kinds=_ENDS, session_ids=ids))
        if said is not None and said.kind in _ENDS
    }
    out = []
    for r in opens:
        if r.session_id not in ended:
            d = _doc(r)
            out.append({k: d[k] for k in _SESSION_FIELDS if k in d})
    return out


def _matches(
    row: EntryRow,
    identity: str | None,
    connection: str | None,
    since_ns: int | None,
    until_ns: int | None,
) -> bool:
    return (
        row.kind == "session.open"
        and (identity is None or row.identity == identity)
        and (connection is None or row.connection == connection)
        and (since_ns is None or row.ts_ns >= since_ns)
        and (until_ns is None or row.ts_ns < until_ns)
    )


def session_timeline(store: Store, session_id: str) -> list[dict[str, Any]]:
    """Every entry of the session (its canonical documents), in stream order."""
    rows = [
        said
        for said in map(as_entry_says, store.find_entries(session_ids=(session_id,)))
        if said is not None and said.session_id == session_id
    ]
    rows.sort(key=lambda r: (r.stream, r.seq))
    return [_doc(r) for r in rows]


# -- replay ----------------------------------------------------------------------------------
def _short(h: object) -> str:
    return f"{h[:12]}…" if isinstance(h, str) else "-"


def _who(e: dict[str, Any]) -> str:
    ident = _dict(e.get("identity")) or {}
    src = _dict(e.get("source")) or {}
    who = f"{ident.get('subject', '?')} ({ident.get('kind', '?')})"
    if src:
        who += f" from {src.get('ip')}:{src.get('port')}"
    return who


# What a session.close's stats count, in the order a replay names them (PostgreSQL's
# relay, HTTP's, Kafka's and SSH's each count some of them).
_COUNTS = (
    ("requests", "requests"),
    ("commands", "commands"),
    ("rows", "rows"),
    ("chunks", "chunks"),
    ("bytes_s2c", "bytes to the client"),
    ("bytes_in", "bytes in"),
    ("bytes_out", "bytes out"),
    ("unanswered", "requests unanswered"),
)


def _end_outcome(e: dict[str, Any]) -> Any:
    """Why a session ended: its close's ``outcome``; a termination's ``reason`` (and the
    ``reason`` that Kafka and SSH closes held before they wrote ``outcome``)."""
    return e.get("outcome") or e.get("reason")


def _end_stats(e: dict[str, Any]) -> dict[str, Any] | None:
    """A session.close's counts: its ``stats``; for a Kafka or SSH close written before
    they had ``stats``, the counts it held at its top level."""
    st = _dict(e.get("stats"))
    if st is not None:
        return st
    old = {k: e[k] for k in ("commands", "chunks", "unanswered") if isinstance(e.get(k), int)}
    return old or None


def _event_line(e: dict[str, Any]) -> str:
    kind = e.get("kind")
    if kind == "session.open":
        client = _dict(e.get("client")) or {}
        app = client.get("application_name") or client.get("protocol") or "client"
        return (
            f"-- session {e.get('session_id')} opened by {_who(e)} with {app} "
            f"on {e.get('connection')} (recording: {e.get('recording')})"
        )
    if kind == "session.close":
        st = _end_stats(e) or {}
        counts = ", ".join(
            f"{st[k]} {what}" for k, what in _COUNTS if k in st and (st[k] or k != "unanswered")
        )
        return f"-- session closed: {_end_outcome(e)}" + (f" ({counts})" if counts else "")
    if kind == "auth.ok":
        via = "an IdP token" if e.get("via") == "jwt" else f"token {e.get('token_id')}"
        return f"-- authenticated {_who(e)} with {via}"
    if kind == "auth.denied":
        return f"-- refused {_who(e)} on {e.get('connection')}: {e.get('reason')}"
    if kind == "session.terminated":
        return f"-- session ended by ledgergate: {e.get('reason')}"
    if kind == "auth.fail":
        return f"-- authentication failed for {e.get('claimed_user')!r}: {e.get('reason')}"
    detail = e.get("outcome") or e.get("reason") or ""
    return f"-- {kind} {detail}".rstrip()


def _chunk_line(e: dict[str, Any], note: str = "") -> str:
    ch = _dict(e.get("chunk")) or {}
    arrow = "<-" if e.get("direction") == "s2c" else "->"
    count = f"{ch['rows']} rows" if "rows" in ch else f"{ch.get('messages', 0)} messages"
    line = f"{arrow} chunk {ch.get('seq')}: {count}, {ch.get('size')} bytes, "
    if ch.get("sha256_in") != ch.get("sha256_out"):
        line += f"sha256 in {_short(ch.get('sha256_in'))} out {_short(ch.get('sha256_out'))}"
    else:
        line += f"sha256 {_short(ch.get('sha256_out'))}"
    line += f" [{e.get('outcome')}]"
    if e.get("tags"):
        line += " " + ", ".join(map(str, e["tags"]))
    return line + note


class _Replayer:
    def __init__(self, store: Store, cipher: PayloadCipher | None, out: IO[str]) -> None:
        self.store = store
        self.cipher = cipher
        self.out = out
        self.results = PsqlRenderer()
        self.terminal = ssh_replay.Terminal(store, cipher)
        self.raw_shown = False  # the raw text of a multi-statement query was printed

    def payload(self, digest: object) -> tuple[bytes | None, str]:
        if not isinstance(digest, str):
            return None, ""
        if self.cipher is None:
            return None, " (payload recorded; no payload key to read it)"
        blob = self.store.get_payload(digest)
        if blob is None:
            return None, " (payload purged)"
        try:
            return self.cipher.open(digest, blob), ""
        except PayloadError as e:
            return None, f" ({e})"

    def write(self, lines: list[str]) -> None:
        for line in lines:
            self.out.write(line + "\n")

    def command(self, e: dict[str, Any]) -> None:
        c = _dict(e.get("command")) or {}
        prompt = f"{e.get('connection') or ''}=> "
        part = c.get("part")
        if isinstance(part, list) and part and part[0] != 1 and self.raw_shown:
            return  # the whole raw query was printed with its first part
        self.raw_shown = False
        raw, _ = self.payload(c.get("payload"))
        text = frontend_query_text(raw) if raw is not None else None
        if text is not None:
            self.raw_shown = isinstance(part, list)
        op = c.get("op")
        if op == "bind":
            params = _dict(c.get("params")) or {}
            stmt = c.get("statement") or "unnamed statement"
            self.write([f"-- bind {stmt} with {params.get('count', 0)} parameter(s)"])
            return
        if text is None:
            text = c.get("text")
        if text is None:
            text = f"<statement text not recorded, sha256 {_short(c.get('text_sha256'))}>"
        if op == "function":
            self.write([f"-- function call {text}"])
            return
        if op == "parse" and c.get("statement"):
            self.write([f"-- prepare {c['statement']}"])
        self.write([prompt + line if i == 0 else line for i, line in enumerate(text.split("\n"))])

    def chunk(self, e: dict[str, Any]) -> None:
        ch = _dict(e.get("chunk")) or {}
        data, note = self.payload(ch.get("payload"))
        if data is not None and e.get("direction") == "s2c":
            self.write(self.results.feed(data))
            return
        self.write([_chunk_line(e, note)])

    def ssh(self, e: dict[str, Any]) -> None:
        """A shell plays as the terminal showed it; the rest are annotations."""
        kind = e.get("kind")
        if kind == "chunk":
            text = self.terminal.output(e)
            if text is not None:
                self.out.write(text)
            elif (_dict(e.get("chunk")) or {}).get("stream") != "stdin":
                self.write([ssh_replay.describe(e) or ""])
            return
        line = ssh_replay.describe(e) or _event_line(e)
        self.write([f"-- {line}" if not line.startswith("--") else line])

    def entry(self, e: dict[str, Any]) -> None:
        kind = e.get("kind")
        if ssh_replay.is_ssh(e):
            self.ssh(e)
            return
        kafka = kafka_timeline.describe(e)
        if kafka is not None:  # Kafka requests, batches (and their messages), answers
            self.write([kafka])
            ch = _dict(e.get("chunk")) or {}
            if kind == "chunk" and ch.get("payload"):
                data, note = self.payload(ch.get("payload"))
                if data is not None:
                    self.write(kafka_timeline.message_lines(data, e.get("direction") == "s2c"))
                elif note:
                    self.write([f"    {note.strip()}"])
            return
        http = http_timeline.describe(e)
        if http is not None:  # HTTP and S3 requests, chunks, answers, manifests
            self.write([http])
            if kind == "object.manifest":
                self.write(http_timeline.manifest_lines(self.store, e))
            return
        if kind == "command":
            self.command(e)
        elif kind == "chunk":
            self.chunk(e)
        else:
            if kind == "session.close":
                self.write(self.results.flush())
            self.write([_event_line(e)])


def replay(
    store: Store,
    session_id: str,
    *,
    speed: float = 1.0,
    out: IO[str],
    sleep: Callable[[float], None] = time.sleep,
    cipher: PayloadCipher | None = None,
    max_idle: float | None = None,
) -> int:
    """Re-emit the session's commands and results in their recorded order, waiting the
    recorded time between entries divided by ``speed`` (0: no waiting; ``max_idle``
    caps any one wait, in seconds). Returns how many entries were replayed."""
    if speed < 0:
        raise ValueError("speed cannot be negative")
    timeline = session_timeline(store, session_id)
    r = _Replayer(store, cipher, out)
    last: int | None = None
    for e in timeline:
        ts = e.get("ts_ns")
        if speed > 0 and last is not None and isinstance(ts, int):
            wait = max(0.0, (ts - last) / 1e9 / speed)
            if max_idle is not None:
                wait = min(wait, max_idle)
            if wait > 0:
                out.flush()
                sleep(wait)
        if isinstance(ts, int):
            last = ts
        r.entry(e)
    r.write(r.results.flush())
    return len(timeline)


def describe(e: dict[str, Any]) -> str:
    """One line for an entry of any protocol, as `sessions show` prints it."""
    ssh = ssh_replay.describe(e)
    if ssh is not None:
        return ssh
    kafka = kafka_timeline.describe(e)
    if kafka is not None:
        return kafka
    http = http_timeline.describe(e)
    if http is not None:
        return http
    kind = str(e.get("kind"))
    if kind == "command":
        c = e.get("command") or {}
        text = c.get("text") or c.get("statement") or f"sha256 {str(c.get('text_sha256'))[:16]}…"
        return f"command #{c.get('seq')} {c.get('op')}: {text}"
    if kind == "chunk":
        ch = e.get("chunk") or {}
        count = f"{ch['rows']} rows" if "rows" in ch else f"{ch.get('messages', 0)} msgs"
        tags = f" {', '.join(e['tags'])}" if e.get("tags") else ""
        return (
            f"chunk {e.get('direction')} #{ch.get('seq')}: {count}, {ch.get('size')} B, "
            f"sha256 {str(ch.get('sha256_out'))[:16]}… {e.get('outcome')}{tags}"
        )
    extra = e.get("outcome") or e.get("reason") or ""
    return f"{kind} {extra}".rstrip()
