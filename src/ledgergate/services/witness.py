"""Witnesses: every signed checkpoint published outside the gateway as it is signed, and
the store checked against what was published.

A gateway's operator holds the ledger key and the store: they could rewrite history and
sign it again. A witness keeps what was signed where they cannot reach (a file on other
storage, a syslog receiver, an HTTPS endpoint). ``audit verify --witness`` then recomputes
the Merkle root of the store's entries at every published size: a store rewritten after
the fact no longer gives the roots the witness holds, whoever signed the new ones.

``WitnessPublisher`` is an addon of the gateway runtime: it reads the checkpoints of the
gateway's streams from the store (its own handle, on its own thread), sends each witness
those past its cursor, in order, and moves the cursor only when the witness took them
(``<data_dir>/witness/<n>-<type>.json``), so nothing is skipped and a restart resumes
where it stopped (at least once). A witness that is down is retried every round; the
gateway's hot path never waits for one. The final checkpoint, signed when the gateway
stops, is published before it exits.

Wire formats: the file witness appends JSON lines ``{"stream", "size", "note"}``; syslog
gets RFC 5424 messages (MSGID ``checkpoint``, the note base64 after ``ledgergate-checkpoint``);
HTTPS gets the same JSON object as a POST; S3 gets one object per checkpoint, the note
itself. ``published_notes`` reads notes back from any
of these (a file, a directory of files, an rsyslog output file).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ledgergate.core.config import (
    FileWitness,
    HttpsWitness,
    S3Witness,
    SyslogWitness,
    Witness,
)
from ledgergate.core.ledger.checkpoint import CheckpointError, Verifier, parse_checkpoint
from ledgergate.core.ledger.merkle import CompactRange
from ledgergate.services.config import Settings, resolve_secret
from ledgergate.services.cursor import CursorFile
from ledgergate.services.syslog_out import send_syslog
from ledgergate.store.base import CheckpointRow, Store
from ledgergate.wire import syslog
from ledgergate.wire.s3 import sigv4

if TYPE_CHECKING:
    from ledgergate.services.gateway import GatewayRuntime

__all__ = [
    "TAG",
    "WitnessProblem",
    "WitnessPublisher",
    "WitnessReport",
    "check_witnessed",
    "published_notes",
    "witness_line",
]

log = logging.getLogger("ledgergate.witness")

TAG = "ledgergate-checkpoint"
# How often new checkpoints are looked for (the gateway signs one every few seconds).
PUBLISH_INTERVAL_S = 1.0
# Checkpoints sent to one witness per round at most (a witness back after a long outage
# catches up over several rounds, never in one burst).
MAX_PER_ROUND = 500
# A witness that does not answer within this long is tried again next round.
SEND_TIMEOUT_S = 10.0
# Failures of one witness are logged at most this often.
LOG_EVERY_S = 60.0
# A private enterprise number reserved for documentation (RFC 5612), for the SD-ID.
_SD_ID = "checkpoint@32473"


def witness_line(stream: str, size: int, note: str) -> str:
    return json.dumps({"stream": stream, "size": size, "note": note}, sort_keys=True)


def published_notes(path: Path) -> list[str]:
    """The checkpoint notes held in a witness's output: a file or a directory of files,
    in any of the formats the witnesses write."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    notes: list[str] = []
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        if "\n\n\u2014 " in text and not text.lstrip().startswith("{"):
            notes.append(text)  # one signed note per file (the S3 witness's objects)
            continue
        for line in text.splitlines():
            note = _note_of(line)
            if note is not None:
                notes.append(note)
    return notes


def _note_of(line: str) -> str | None:
    line = line.strip()
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        note = doc.get("note") if isinstance(doc, dict) else None
        return note if isinstance(note, str) else None
    at = line.find(TAG + " ")
    if at < 0:
        return None
    blob = line[at + len(TAG) + 1 :].split()[0] if line[at + len(TAG) + 1 :].split() else ""
    try:
        return base64.b64decode(blob, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


# -- checking the store against a witness ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WitnessProblem:
    stream: str | None
    size: int | None
    message: str


@dataclass
class WitnessReport:
    checked: dict[str, list[int]] = field(default_factory=dict)  # stream -> sizes matched
    problems: list[WitnessProblem] = field(default_factory=list)
    ignored: int = 0  # lines that were not checkpoints of a trusted key

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": {s: len(v) for s, v in self.checked.items()},
            "problems": [
                {"stream": p.stream, "size": p.size, "message": p.message} for p in self.problems
            ],
        }


def check_witnessed(
    store: Store, notes: Iterable[str], verifiers: Sequence[Verifier]
) -> WitnessReport:
    """Recompute, from the store's entries, the root at every size a witness holds a
    checkpoint of (one pass per stream), and name each that differs."""
    rep = WitnessReport()
    wanted: dict[str, dict[int, bytes]] = {}
    for note in notes:
        try:
            cp = parse_checkpoint(note, verifiers)
        except CheckpointError as e:
            if e.reason == "unknown_key":
                rep.ignored += 1  # another gateway's, or another key's
            else:
                rep.problems.append(WitnessProblem(None, None, f"a published checkpoint: {e}"))
            continue
        seen = wanted.setdefault(cp.origin, {})
        if seen.get(cp.size, cp.root) != cp.root:
            rep.problems.append(
                WitnessProblem(cp.origin, cp.size, "the witness holds two roots for one size")
            )
        seen[cp.size] = cp.root
    for stream, roots in sorted(wanted.items()):
        rep.checked[stream] = []
        top = max(roots)
        tree = CompactRange()
        for h in store.iter_entry_hashes(stream, top):
            tree.append(h)
            want = roots.get(tree.size)
            if want is None:
                continue
            if tree.root() == want:
                rep.checked[stream].append(tree.size)
            else:
                rep.problems.append(
                    WitnessProblem(
                        stream,
                        tree.size,
                        f"{stream}: the store's entries [0, {tree.size}) no longer give the "
                        "root the witness holds: history was rewritten after it was published",
                    )
                )
        lost = sorted(size for size in roots if size > tree.size)
        if lost:
            rep.problems.append(
                WitnessProblem(
                    stream,
                    lost[0],
                    f"{stream}: the witness saw {max(lost)} entries, the store holds "
                    f"{tree.size}: entries were removed",
                )
            )
    return rep


# -- publishing --------------------------------------------------------------------------------
class _Target:
    """One witness and its cursor (stream -> checkpoints published up to this size)."""

    def __init__(self, index: int, spec: Witness, settings: Settings) -> None:
        self.spec = spec
        # one cursor per process: relay workers each publish their own stream
        self.name = f"{index}-{spec.type}" + (f".w{settings.worker}" if settings.worker else "")
        self.cursor_file = CursorFile(settings.data_dir / "witness" / f"{self.name}.json")
        self.cursor = self.cursor_file.at
        self.hostname = settings.gateway_name
        self.failing_since: float | None = None
        self.logged_at = 0.0
        self.token: str | None = None
        self.tls: ssl.SSLContext | None = None
        if isinstance(spec, HttpsWitness) and spec.token:
            self.token = resolve_secret(spec.token, what=f"ledger.witnesses.{index}.token")
        if isinstance(spec, S3Witness):
            self.token = resolve_secret(
                spec.secret_access_key, what=f"ledger.witnesses.{index}.secret_access_key"
            )
        if isinstance(spec, SyslogWitness) and spec.tls:
            self.tls = ssl.create_default_context(cafile=spec.ca_file)

    def save(self) -> None:
        self.cursor_file.save()


class WitnessPublisher:
    """The runtime addon that publishes the gateway's checkpoints (see the module)."""

    def __init__(self, settings: Settings, streams: Sequence[str]) -> None:
        self.settings = settings
        self.streams = list(streams)
        self.targets = [
            _Target(i, w, settings) for i, w in enumerate(settings.config.ledger.witnesses)
        ]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="witness")
        self._store: Store | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self, runtime: GatewayRuntime) -> None:
        runtime.after_ledger.append(self.close)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        """After the ledger closed: publish the final checkpoint, then let go."""
        await self.publish_once()
        if self._store is not None:
            self._pool.submit(self._store.close)
        self._pool.shutdown(wait=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.publish_once()
            except Exception:
                log.exception("publishing checkpoints failed")
            try:
                async with asyncio.timeout(PUBLISH_INTERVAL_S):
                    await self._stop.wait()
            except TimeoutError:
                pass

    def _checkpoints(self) -> dict[str, list[CheckpointRow]]:
        if self._store is None:
            self._store = self.settings.open_store()
        return {s: self._store.checkpoints(s) for s in self.streams}

    async def publish_once(self) -> int:
        """Send every witness what it has not taken yet; how many were sent."""
        import httpx  # loaded when witnesses publish, not by every CLI command

        loop = asyncio.get_running_loop()
        cps = await loop.run_in_executor(self._pool, self._checkpoints)
        sent = 0
        for t in self.targets:
            for stream, rows in cps.items():
                todo = [c for c in rows if c.size > t.cursor.get(stream, 0)][:MAX_PER_ROUND]
                if not todo:
                    continue
                try:
                    async with asyncio.timeout(SEND_TIMEOUT_S):
                        await self._send(t, stream, todo)
                except (OSError, TimeoutError, ssl.SSLError, httpx.HTTPError) as e:
                    self._failed(t, e)
                    break
                t.cursor[stream] = todo[-1].size
                await loop.run_in_executor(self._pool, t.save)
                sent += len(todo)
                if t.failing_since is not None:
                    log.info("witness %s takes checkpoints again", t.name)
                    t.failing_since = None
        return sent

    def _failed(self, t: _Target, e: Exception) -> None:
        now = time.monotonic()
        if t.failing_since is None:
            t.failing_since = now
        if now - t.logged_at >= LOG_EVERY_S:
            t.logged_at = now
            log.warning("witness %s does not take checkpoints: %s", t.name, type(e).__name__)

    async def _send(self, t: _Target, stream: str, rows: list[CheckpointRow]) -> None:
        spec = t.spec
        if isinstance(spec, FileWitness):
            lines = "".join(witness_line(stream, c.size, c.note) + "\n" for c in rows)
            await asyncio.get_running_loop().run_in_executor(
                self._pool, _append, Path(spec.path), lines
            )
        elif isinstance(spec, SyslogWitness):
            await send_syslog(
                spec.address, t.tls, [_syslog_message(spec, t.hostname, stream, c) for c in rows]
            )
        elif isinstance(spec, S3Witness):
            await _put_objects(spec, t.token or "", stream, rows)
        else:
            import httpx

            headers = {"Authorization": f"Bearer {t.token}"} if t.token else {}
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=spec.ca_file) if spec.ca_file else True
            )
            async with httpx.AsyncClient(timeout=spec.timeout, verify=verify) as client:
                for c in rows:
                    r = await client.post(
                        spec.url,
                        json={"stream": stream, "size": c.size, "note": c.note},
                        headers=headers,
                    )
                    r.raise_for_status()


async def _put_objects(
    spec: S3Witness, secret: str, stream: str, rows: list[CheckpointRow]
) -> None:
    """Each checkpoint as its own object, SigV4-signed (wire.s3.sigv4)."""
    import httpx

    base = urlsplit(spec.endpoint)
    host = base.netloc
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=spec.ca_file) if spec.ca_file else True
    )
    async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S, verify=verify) as client:
        for c in rows:
            key = f"{spec.prefix}{stream}/{c.size:020d}.note"
            path = base.path.rstrip("/") + "/" + quote(spec.bucket) + "/" + quote(key)
            body = c.note.encode("utf-8")
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            headers, _ = sigv4.sign_headers(
                b"PUT",
                path.encode("ascii"),
                [(b"host", host.encode("ascii")), (b"content-type", b"text/plain")],
                access_key=spec.access_key_id,
                secret=secret,
                region=spec.region,
                service="s3",
                amz_date=amz_date,
                payload_hash=hashlib.sha256(body).hexdigest(),
            )
            r = await client.put(
                f"{base.scheme}://{host}{path}",
                content=body,
                headers=[(k.decode("ascii"), v.decode("ascii")) for k, v in headers],
            )
            r.raise_for_status()


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()


def _syslog_message(spec: SyslogWitness, hostname: str, stream: str, c: CheckpointRow) -> bytes:
    return syslog.message(
        facility=syslog.FACILITY_AUTHPRIV,
        severity=syslog.SEVERITY_NOTICE,
        ts_ns=c.ts_ns,
        hostname=hostname.replace(" ", "-")[:255] or None,
        app_name=spec.app_name,
        msgid="checkpoint",
        data=[syslog.Element(_SD_ID, {"stream": stream, "size": str(c.size)})],
        msg=f"{TAG} {base64.b64encode(c.note.encode()).decode('ascii')}",
    )
