"""Request and response bodies as they cross the gateway: cut into recorded chunks,
checked, and (for aws-chunked uploads) signed again.

Two relays with one shape, ``feed(data) -> (out, chunks)`` and ``finish() -> (out,
chunks)``: ``out`` are the bytes to forward, ``chunks`` the facts to record first.
Rules:
- A chunk's bytes are handed out only together with its fact: the shell records the fact,
  then forwards the bytes (a chunk never passes without its ledger record).
- ``SliceBody`` (a body sent as is: uploads with a plain digest or ``UNSIGNED-PAYLOAD``,
  HTTP API bodies, every download) cuts the stream into ``SLICE`` byte slices and holds
  each until it is complete; the declared SHA-256, Content-MD5 and ``x-amz-checksum-*``
  are compared in ``finish`` before the last slice is handed out, so the backend never
  receives a whole body that did not check out.
- ``AwsChunkedBody`` decodes an ``aws-chunked`` upload, checks each chunk's signature in
  the client's chain (signed modes) and the trailing checksum, and frames the same
  chunks again, signed in the gateway's chain towards the backend. The final chunk and
  the trailer are handed out only after every check passed.
Errors are ``BodyError`` with the S3 error code and an HTTP status. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from ledgergate.wire.s3 import chunked as awschunked
from ledgergate.wire.s3.checksums import Checksum
from ledgergate.wire.s3.sigv4 import ChunkChain, SigV4Error

__all__ = ["SLICE", "AwsChunkedBody", "BodyChunkFact", "BodyError", "Expected", "SliceBody"]

# Plain bodies and downloads are recorded in slices of this size: one entry per MiB
# keeps the ledger's cost per byte small while a chunk stays a unit worth proving.
SLICE = 1 << 20


@dataclass(frozen=True, slots=True)
class BodyChunkFact:
    """A body chunk that passed: its bytes as received and as forwarded."""

    seq: int
    data_in: bytes
    data_out: bytes | None  # None: forwarded as received
    framing: str  # "aws-chunked" | "slice" | "document"
    signature: bool = False  # its chunk signature was checked
    digest_in: str | None = None  # SHA-256 of data_in when already computed


class BodyError(ValueError):
    """A body that does not check out. ``chunk``: the chunk refused (its bytes as
    received) when one chunk is to blame, so it can be recorded as refused."""

    def __init__(
        self, code: str, message: str, status: int = 400, chunk: bytes | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.chunk = chunk


Out = tuple[list[bytes], list[BodyChunkFact]]


@dataclass(frozen=True, slots=True)
class Expected:
    """What the client declared its body to be."""

    sha256_hex: str | None = None  # x-amz-content-sha256 when it is a digest
    md5_b64: str | None = None  # Content-MD5
    checksum: tuple[str, str] | None = None  # (algorithm, base64) of x-amz-checksum-*
    length: int | None = None  # Content-Length (h11 enforces it; kept for the record)


class SliceBody:
    """A body passed as is, in recorded slices, checked against what was declared."""

    __slots__ = ("_check", "_exp", "_filled", "_md5", "_pieces", "_seq", "_sha", "_slice", "size")

    def __init__(self, expected: Expected | None = None) -> None:
        self._exp = expected or Expected()
        self._pieces: list[bytes] = []  # the current slice, as it arrived
        self._filled = 0
        self._slice = hashlib.sha256()  # its digest, as it arrives (no second pass)
        self._seq = 0
        self.size = 0
        self._sha = hashlib.sha256() if self._exp.sha256_hex else None
        self._md5 = hashlib.md5(usedforsecurity=False) if self._exp.md5_b64 else None
        self._check = Checksum(self._exp.checksum[0]) if self._exp.checksum else None

    def feed(self, data: bytes) -> Out:
        self.size += len(data)
        for h in (self._sha, self._md5, self._check):
            if h is not None:
                h.update(data)
        out: list[bytes] = []
        facts: list[BodyChunkFact] = []
        n = len(data)
        off = 0
        while off < n:
            if self._filled == SLICE:  # a full slice held back: more follows, so it goes
                self._emit(out, facts)
            take = min(SLICE - self._filled, n - off)
            part = data if take == n else data[off : off + take]
            self._slice.update(part)
            self._pieces.append(part)
            self._filled += take
            off += take
            if self._filled == SLICE and not self._checking:
                self._emit(out, facts)
        return out, facts

    @property
    def held(self) -> int:
        """Bytes held for the current slice."""
        return self._filled

    def flush(self) -> Out:
        """Hand out what is held as a short slice (a slow answer must reach its client
        as it comes: event streams, log tails); nothing while a digest is pending."""
        out: list[bytes] = []
        facts: list[BodyChunkFact] = []
        if self._filled and not self._checking:
            self._emit(out, facts)
        return out, facts

    @property
    def _checking(self) -> bool:
        """Something declared is checked at the end: the last full slice is held back
        until then (it may be the body's last byte)."""
        return self._sha is not None or self._md5 is not None or self._check is not None

    def _emit(self, out: list[bytes], facts: list[BodyChunkFact]) -> None:
        pieces = self._pieces
        piece = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._seq += 1
        facts.append(
            BodyChunkFact(self._seq, piece, None, "slice", digest_in=self._slice.hexdigest())
        )
        out.append(piece)
        self._pieces = []
        self._filled = 0
        self._slice = hashlib.sha256()

    def finish(self) -> Out:
        """Check what was declared, then hand out the last slice."""
        e = self._exp
        if self._sha is not None and self._sha.hexdigest() != (e.sha256_hex or "").lower():
            raise BodyError(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        if self._md5 is not None:
            got = base64.b64encode(self._md5.digest()).decode("ascii")
            if got != e.md5_b64:
                raise BodyError(
                    "BadDigest", "The Content-MD5 you specified did not match what was received."
                )
        if (
            self._check is not None
            and e.checksum is not None
            and self._check.b64digest() != e.checksum[1]
        ):
            alg = e.checksum[0].upper()
            raise BodyError(
                "BadDigest", f"The {alg} you specified did not match the calculated checksum."
            )
        out: list[bytes] = []
        facts: list[BodyChunkFact] = []
        if self._filled:
            self._emit(out, facts)
        return out, facts

    @property
    def chunks(self) -> int:
        return self._seq


class AwsChunkedBody:
    """An ``aws-chunked`` upload: decoded, checked, framed and signed again."""

    __slots__ = (
        "_check",
        "_cur",
        "_dec",
        "_decoded_length",
        "_failed",
        "_final",
        "_out_chain",
        "_seq",
        "_sig",
        "_signed",
        "_trailer",
        "_trailer_name",
        "_verify",
        "size",
    )

    def __init__(
        self,
        *,
        signed: bool,
        trailer: bool,
        verify: ChunkChain | None,
        resign: ChunkChain | None,
        decoded_length: int | None,
        trailer_name: str | None,
    ) -> None:
        if signed and (verify is None or resign is None):
            raise ValueError("a signed chunked body needs both chains")
        self._dec = awschunked.AwsChunkedDecoder(signed=signed, trailer=trailer)
        self._signed = signed
        self._trailer = trailer
        self._verify = verify
        self._out_chain = resign
        self._decoded_length = decoded_length
        self._trailer_name = trailer_name
        alg = None
        if trailer_name and trailer_name.startswith("x-amz-checksum-"):
            alg = trailer_name.removeprefix("x-amz-checksum-")
        try:
            self._check = Checksum(alg) if alg else None
        except ValueError:
            raise BodyError(
                "InvalidRequest", f"unsupported trailing checksum {trailer_name}"
            ) from None
        self._cur: list[bytes] = []  # the chunk being read, as it arrives
        self._sig: str | None = None
        self._seq = 0
        self._final: bytes | None = None
        self._failed: BodyError | None = None
        self.size = 0

    def feed(self, data: bytes) -> Out:
        """The chunks of ``data`` that checked out; a chunk that does not is raised at
        the next call (``feed`` or ``finish``), after the good ones before it are out."""
        if self._failed is not None:
            raise self._failed
        out: list[bytes] = []
        facts: list[BodyChunkFact] = []
        try:
            self._events(self._dec.feed(data), out, facts)
        except awschunked.ChunkedError as e:
            self._failed = BodyError(e.code, e.message)
        except BodyError as e:
            self._failed = e
        if self._failed is not None and not out:
            raise self._failed
        return out, facts

    def _events(self, events: list[Any], out: list[bytes], facts: list[BodyChunkFact]) -> None:
        for ev in events:
            if isinstance(ev, awschunked.ChunkStart):
                self._cur = []
                self._sig = ev.signature
            elif isinstance(ev, awschunked.ChunkData):
                self._cur.append(ev.data)
            elif isinstance(ev, awschunked.ChunkEnd):
                cur = self._cur
                self._chunk(cur[0] if len(cur) == 1 else b"".join(cur), out, facts)
            elif isinstance(ev, awschunked.Trailer):
                self._end_trailer(ev)
            elif isinstance(ev, awschunked.BodyEnd) and self._final is None:
                # no trailer: the final chunk alone
                self._final = awschunked.encode_final(self._final_sig(), (), None)

    def _final_sig(self) -> str | None:
        if not self._signed:
            return None
        assert self._out_chain is not None
        return self._out_chain.sign(hashlib.sha256(b"").hexdigest())

    def _chunk(self, data: bytes, out: list[bytes], facts: list[BodyChunkFact]) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if self._signed:
            assert self._verify is not None and self._out_chain is not None
            try:
                self._verify.verify(digest, self._sig or "")
            except SigV4Error as e:
                raise BodyError(
                    e.code, "a chunk signature does not match: " + e.message, 403, data
                ) from None
        if not data:  # the final, zero-length chunk: its signature is checked above
            return
        self.size += len(data)
        if self._check is not None:
            self._check.update(data)
        sig = self._out_chain.sign(digest) if self._signed and self._out_chain else None
        self._seq += 1
        facts.append(
            BodyChunkFact(self._seq, data, None, "aws-chunked", self._signed, digest_in=digest)
        )
        out.extend((awschunked.encode_chunk_header(len(data), sig), data, b"\r\n"))

    def _end_trailer(self, ev: awschunked.Trailer) -> None:
        if self._signed:
            assert self._verify is not None
            try:
                self._verify.verify_trailer(ev.raw, ev.signature or "")
            except SigV4Error as e:
                raise BodyError(
                    e.code, "the trailer signature does not match: " + e.message, 403
                ) from None
        got = dict(ev.lines)
        if self._trailer_name and self._trailer_name not in got:
            raise BodyError(
                "InvalidRequest", f"the trailer {self._trailer_name} was announced but not sent"
            )
        if (
            self._check is not None
            and self._trailer_name is not None
            and got[self._trailer_name] != self._check.b64digest()
        ):
            raise BodyError(
                "BadDigest",
                f"The {self._trailer_name.removeprefix('x-amz-checksum-').upper()} you "
                "specified did not match the calculated checksum.",
            )
        trailer_sig = None
        final_sig = self._final_sig()
        lines = tuple(ev.lines)
        if self._signed:
            assert self._out_chain is not None
            trailer_sig = self._out_chain.sign_trailer(awschunked.trailer_bytes(lines))
        self._final = awschunked.encode_final(final_sig, lines, trailer_sig)

    def finish(self) -> Out:
        if self._failed is not None:
            raise self._failed
        try:
            self._dec.finish()
        except awschunked.ChunkedError as e:
            raise BodyError(e.code, e.message) from None
        if self._final is None:
            raise BodyError("IncompleteBody", "the request body ended before its last chunk")
        if self._decoded_length is not None and self.size != self._decoded_length:
            raise BodyError(
                "IncompleteBody",
                "the body's length does not match x-amz-decoded-content-length",
            )
        if self._check is not None and self._trailer_name is None:
            raise BodyError("InvalidRequest", "a checksum without its trailer")
        return [self._final], []

    @property
    def chunks(self) -> int:
        return self._seq
