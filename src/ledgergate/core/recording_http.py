"""What the ledger says about an HTTP or S3 session: requests, body chunks, answers.

The same contract as PostgreSQL's (``core.recording``): one ``command`` entry per
request, durable before the request reaches the backend; one ``chunk`` entry per body
chunk as it passes, in both directions; and a ``command.result`` entry that closes the
request with the backend's answer, so every chunk of it ends with a known outcome
(``accepted``: the backend answered 2xx; ``rejected``: it answered with an error;
``refused``: the gateway refused the request or a chunk and the backend committed
nothing; ``cut``: the session ended while the request was in flight; ``failed``: the
backend could not be reached or broke off). At the recording levels:
- ``metadata``: operation, method, bucket, sizes and digests; keys and paths as SHA-256.
- ``redacted``: object keys and paths as sent; query values of HTTP APIs as ``?``
  (S3's own parameters such as ``uploadId`` and ``partNumber`` are kept).
- ``full``: as redacted, and the bodies as payloads (encrypted, apart from entries).
Pure: timestamps come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from ledgergate.core.ledger.entry import Draft
from ledgergate.core.recording import SessionRecorder
from ledgergate.wire.http.body import BodyChunkFact

__all__ = ["BodyChunkFact", "HttpRecorder", "RequestFacts"]

# S3 query parameters that name what an operation acts on (kept at ``redacted``).
_S3_PARAMS = frozenset(
    {
        "uploadId",
        "partNumber",
        "uploads",
        "list-type",
        "prefix",
        "delimiter",
        "max-keys",
        "continuation-token",
        "start-after",
        "versionId",
        "versions",
        "delete",
        "tagging",
        "acl",
        "policy",
        "versioning",
        "lifecycle",
        "location",
        "max-parts",
        "part-number-marker",
        "key-marker",
        "upload-id-marker",
        "marker",
        "encoding-type",
        "attributes",
    }
)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """One request as the recorder needs it (decoded by the shell)."""

    protocol: str  # "s3" | "http"
    method: str
    op: str  # S3 API name, or the method for HTTP
    path: str  # decoded path at the backend side (for S3: /bucket/key)
    query: tuple[tuple[str, str], ...]
    bucket: str | None = None
    key: str | None = None
    content_length: int | None = None
    payload: str | None = None  # x-amz-content-sha256 (a digest or a streaming mode)
    checksum: tuple[str, str] | None = None  # declared x-amz-checksum-<alg>, or trailer
    content_type: str | None = None


class HttpRecorder(SessionRecorder):
    """Drafts for one HTTP or S3 session (see ``SessionRecorder`` for ``base``)."""

    __slots__ = ()

    def request(self, ts_ns: int, f: RequestFacts, raw_head: bytes = b"", **extra: Any) -> Draft:
        """The ``command`` entry of a request (the caller commits it before sending);
        ``extra`` goes into the command (``retransmits``: the earlier attempt)."""
        cmd = self._cmd_fields(f)
        cmd.update(extra)
        payloads: tuple[tuple[str, bytes], ...] = ()
        if self.full and raw_head:
            digest = sha256(raw_head).hexdigest()
            cmd["payload"] = digest
            payloads = ((digest, raw_head),)
        return Draft(ts_ns, "command", {**self.base, "command": cmd}, payloads, True)

    def blocked_request(self, ts_ns: int, f: RequestFacts, rule: str | None, message: str) -> Draft:
        """A request a policy rule refused: what was attempted and the rule."""
        return Draft(
            ts_ns,
            "decision.block",
            {
                **self.base,
                "command": self._cmd_fields(f),
                "decision": {"action": "block", "rule": rule, "message": message},
                "outcome": "refused",
            },
            (),
            True,
        )

    def _cmd_fields(self, f: RequestFacts) -> dict[str, Any]:
        self.cmd_seq += 1
        cmd: dict[str, Any] = {
            "seq": self.cmd_seq,
            "protocol": f.protocol,
            "op": f.op,
            "method": f.method,
        }
        if f.bucket is not None:
            cmd["bucket"] = f.bucket
        if self.level == "metadata":
            cmd["path_sha256"] = sha256(f.path.encode("utf-8", "replace")).hexdigest()
            if f.key is not None:
                cmd["key_sha256"] = sha256(f.key.encode("utf-8", "replace")).hexdigest()
            cmd["query"] = [[k, "?"] for k, _ in f.query]
        else:
            cmd["path"] = f.path
            if f.key is not None:
                cmd["key"] = f.key
            cmd["query"] = [
                [k, v if (f.protocol == "s3" and k in _S3_PARAMS) else "?"] for k, v in f.query
            ]
        for k, v in f.query:
            if f.protocol == "s3" and k == "partNumber" and v.isdigit():
                cmd["part_number"] = int(v)
            elif f.protocol == "s3" and k == "uploadId":
                cmd["upload_id"] = v
        if f.content_length is not None:
            cmd["content_length"] = f.content_length
        if f.payload is not None:
            cmd["payload_sha256"] = f.payload
        if f.checksum is not None:
            cmd["checksum"] = {"algorithm": f.checksum[0], "value": f.checksum[1]}
        if f.content_type is not None:
            cmd["content_type"] = f.content_type
        return cmd

    def body_chunk(self, ts_ns: int, cmd_seq: int, direction: str, c: BodyChunkFact) -> Draft:
        d_in = c.digest_in or sha256(c.data_in).hexdigest()
        d_out = d_in if c.data_out is None else sha256(c.data_out).hexdigest()
        chunk: dict[str, Any] = {
            "seq": c.seq,
            "command": cmd_seq,
            "size": len(c.data_in),
            "sha256_in": d_in,
            "sha256_out": d_out,
            "framing": c.framing,
        }
        if c.data_out is not None:
            chunk["size_out"] = len(c.data_out)
        if c.signature:
            chunk["signature"] = "verified"
        fields = {**self.base, "direction": direction, "chunk": chunk, "outcome": "forwarded"}
        if self.full:
            sent = c.data_in if c.data_out is None else c.data_out
            chunk["payload"] = d_out
            return Draft(ts_ns, "chunk", fields, ((d_out, sent),), True)
        return Draft(ts_ns, "chunk", fields, (), True)

    def refused_chunk(self, ts_ns: int, cmd_seq: int, seq: int, data: bytes, reason: str) -> Draft:
        """A chunk the gateway did not pass on (bad signature or checksum, session cut)."""
        chunk = {
            "seq": seq,
            "command": cmd_seq,
            "size": len(data),
            "sha256_in": sha256(data).hexdigest(),
            "sha256_out": None,
        }
        return Draft(
            ts_ns,
            "chunk",
            {
                **self.base,
                "direction": "c2s",
                "chunk": chunk,
                "outcome": "refused",
                "reason": reason,
            },
            (),
            True,
        )

    def result(self, ts_ns: int, cmd_seq: int, op: str, outcome: str, **fields: Any) -> Draft:
        """The ``command.result`` closing request ``cmd_seq``."""
        return Draft(
            ts_ns,
            "command.result",
            {**self.base, "command": {"seq": cmd_seq, "op": op}, "outcome": outcome, **fields},
        )
