"""What a gateway remembers of objects in the making: parts, attempts, manifests.

Owns the bookkeeping behind two ledger answers:
- **Retransmissions.** The same part (upload id + part number) or the same object with
  the same content sent again is recorded as ``retransmits``, pointing at the earlier
  attempt (its session, command, identity and outcome): "which identity retransmitted a
  chunk that failed" is a query over command and result entries.
- **Object manifests.** When an object is complete (PutObject, CompleteMultipartUpload
  accepted) an ``object.manifest`` entry lists its parts in order and each part's
  chunks with their digests and where they are on the ledger (session, command, chunk
  sequence), with the storage's ETag, version id and checksum.
Remembered per gateway process, bounded (oldest forgotten first); a part uploaded
through another gateway process is named in the manifest as not seen here.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ledgergate.core.ledger.entry import Draft
from ledgergate.core.recording_http import RequestFacts

if TYPE_CHECKING:
    from ledgergate.proxy.http.gateway import HttpGateway, HttpTarget

__all__ = ["Attempt", "ObjectBook", "parse_complete_parts", "remember", "upload_key"]

now_ns = time.time_ns

# Multipart uploads remembered at once, and objects' last attempts: bounded memory.
MAX_UPLOADS = 10_000
MAX_OBJECTS = 100_000
# S3 allows 10,000 parts per upload.
MAX_PARTS = 10_000
_PART = re.compile(rb"<PartNumber>\s*(\d{1,5})\s*</PartNumber>")


@dataclass(slots=True)
class Attempt:
    """One request that sent (part of) an object, and its chunks."""

    session_id: str
    command: int
    identity: str
    outcome: str = "pending"
    etag: str | None = None
    chunks: list[tuple[int, int, str]] = field(default_factory=list)  # (seq, size, sha256)

    @property
    def size(self) -> int:
        return sum(c[1] for c in self.chunks)

    @property
    def chunks_sha256(self) -> str:
        """A digest of the content as chunked: SHA-256 over the chunk digests in order."""
        h = hashlib.sha256()
        for _, _, d in self.chunks:
            h.update(bytes.fromhex(d))
        return h.hexdigest()

    def ref(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "command": self.command,
            "identity": self.identity,
            "outcome": self.outcome,
        }

    def manifest_part(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "command": self.command,
            "etag": self.etag,
            "size": self.size,
            "chunks": [{"seq": s, "size": n, "sha256": d} for s, n, d in self.chunks],
        }


def parse_complete_parts(body: bytes) -> list[int]:
    """The part numbers a CompleteMultipartUpload body lists, in order."""
    return [int(m.group(1)) for m in _PART.finditer(body)][:MAX_PARTS]


class ObjectBook:
    def __init__(self) -> None:
        # (connection, bucket, key, upload id) -> part number -> last attempt
        self.uploads: OrderedDict[tuple[str, str, str, str], dict[int, Attempt]] = OrderedDict()
        # (connection, bucket, key) -> the last PutObject attempt
        self.objects: OrderedDict[tuple[str, str, str], Attempt] = OrderedDict()

    def earlier_part(
        self, conn: str, bucket: str, key: str, upload_id: str, part: int
    ) -> Attempt | None:
        parts = self.uploads.get((conn, bucket, key, upload_id))
        return None if parts is None else parts.get(part)

    def part_done(
        self, conn: str, bucket: str, key: str, upload_id: str, part: int, a: Attempt
    ) -> None:
        k = (conn, bucket, key, upload_id)
        parts = self.uploads.get(k)
        if parts is None:
            parts = self.uploads[k] = {}
            if len(self.uploads) > MAX_UPLOADS:
                self.uploads.popitem(last=False)
        else:
            self.uploads.move_to_end(k)
        if part in parts or len(parts) < MAX_PARTS:
            parts[part] = a

    def complete(
        self, conn: str, bucket: str, key: str, upload_id: str, order: list[int]
    ) -> list[dict[str, Any]]:
        """The manifest's parts for a completed upload (and the upload is forgotten)."""
        parts = self.uploads.pop((conn, bucket, key, upload_id), {})
        out: list[dict[str, Any]] = []
        for n in order:
            a = parts.get(n)
            if a is None or a.outcome != "accepted":
                out.append({"part_number": n, "seen": False})
            else:
                out.append({"part_number": n, **a.manifest_part()})
        return out

    def earlier_object(self, conn: str, bucket: str, key: str, a: Attempt) -> Attempt | None:
        """The previous attempt at the same object with the same content, if any."""
        prev = self.objects.get((conn, bucket, key))
        if prev is None or prev is a or prev.chunks_sha256 != a.chunks_sha256:
            return None
        return prev

    def object_done(self, conn: str, bucket: str, key: str, a: Attempt) -> None:
        k = (conn, bucket, key)
        self.objects[k] = a
        self.objects.move_to_end(k)
        if len(self.objects) > MAX_OBJECTS:
            self.objects.popitem(last=False)


def upload_key(t: HttpTarget, f: RequestFacts) -> tuple[str, str, str, int] | None:
    """(bucket, key, upload id, part number) of an UploadPart."""
    if f.op != "UploadPart" or t.bucket is None or t.key is None:
        return None
    q = dict(t.query or [])
    part = q.get("partNumber", "")
    if not part.isdigit() or "uploadId" not in q:
        return None
    return t.bucket, t.key, q["uploadId"], int(part)


def remember(
    gw: HttpGateway,
    t: HttpTarget,
    f: RequestFacts,
    attempt: Attempt,
    upload: tuple[str, str, str, int] | None,
    keep: bytearray | None,
    result: dict[str, Any],
    closing: Draft,
) -> list[Draft]:
    """Remember parts and objects; the manifest entry of a completed object."""
    conn, rec, book = t.conn.name, t.session.recorder, gw.objects
    if upload is not None:
        book.part_done(conn, *upload, attempt)
        return []
    if t.bucket is None or t.key is None:
        return []
    obj: dict[str, Any] = {"bucket": t.bucket, "key": t.key}
    if f.op == "PutObject":
        earlier = book.earlier_object(conn, t.bucket, t.key, attempt)
        if earlier is not None and (
            earlier.outcome != "accepted" or earlier.chunks_sha256 == attempt.chunks_sha256
        ):
            closing.fields["retransmits"] = earlier.ref()
        book.object_done(conn, t.bucket, t.key, attempt)
        if attempt.outcome != "accepted":
            return []
        parts = [{"part_number": None, **attempt.manifest_part()}]
    elif f.op == "CompleteMultipartUpload" and attempt.outcome == "accepted" and keep is not None:
        upload_id = dict(t.query or []).get("uploadId", "")
        parts = book.complete(conn, t.bucket, t.key, upload_id, parse_complete_parts(bytes(keep)))
        obj["upload_id"] = upload_id
    else:
        return []
    for k in ("etag", "version_id"):
        if k in result:
            obj[k] = result[k]
    if f.checksum is not None:
        obj["checksum"] = {"algorithm": f.checksum[0], "value": f.checksum[1]}
    obj["size"] = sum(int(p.get("size", 0)) for p in parts)
    obj["parts"] = parts
    return [
        rec.event(
            now_ns(),
            "object.manifest",
            command={"seq": attempt.command, "op": f.op},
            object=obj,
            complete=all(p.get("seen", True) for p in parts),
        )
    ]
