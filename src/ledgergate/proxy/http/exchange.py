"""One admitted request relayed: recorded, signed again, its body checked, answered.

Owns the order a request's bytes follow: the ``command`` entry is committed before the
backend sees the request; each body chunk's entry is submitted before the chunk is
written on; the end of an upload is held back until every signature and checksum
checked out (else the backend connection is aborted and the backend commits nothing);
the answer is relayed in recorded slices; and a ``command.result`` entry closes the
request with the backend's status, ETag and version id, or with why it was refused or
cut. The held credential goes only into the request to the backend.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import h11

from ledgergate.core.ledger.entry import Draft
from ledgergate.core.masking.document import DocumentMasker, Unmaskable
from ledgergate.core.policy.engine import ALLOW, Decision, SessionPolicy
from ledgergate.core.policy.http import RequestView
from ledgergate.core.policy.rules import PolicyRule
from ledgergate.core.recording_http import RequestFacts
from ledgergate.proxy.http.backend import BackendConn, BackendError, BackendResponse
from ledgergate.proxy.http.objects import Attempt, parse_complete_parts
from ledgergate.proxy.http.session import ClientConn, Refusal, phrase
from ledgergate.proxy.review import ReviewAnswer, ReviewAsk
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.http.body import (
    AwsChunkedBody,
    BodyChunkFact,
    BodyError,
    Expected,
    SliceBody,
)
from ledgergate.wire.http.messages import (
    forwardable,
    header,
    problem_body,
    s3_copy_source,
    s3_delete_keys,
    s3_error_body,
)
from ledgergate.wire.s3 import chunked as awschunked
from ledgergate.wire.s3 import sigv4
from ledgergate.wire.s3.checksums import ALGORITHMS

if TYPE_CHECKING:
    from ledgergate.proxy.http.gateway import HttpGateway, HttpTarget

__all__ = ["relay"]

log = logging.getLogger("ledgergate.http")
now_ns = time.time_ns
XML = b"application/xml"
PROBLEM = b"application/problem+json"
STREAMING = {
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": (True, False),
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": (True, True),
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER": (False, True),
}
# Request headers never passed to the backend: the client's credentials and what the
# gateway sets itself.
_DROP = frozenset(
    {
        b"host",
        b"authorization",
        b"expect",
        b"x-amz-date",
        b"x-amz-content-sha256",
        b"x-amz-security-token",
        b"content-length",
    }
)
# Presigned-URL parameters: the gateway signs its own request to the backend.
_PRESIGN = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)
# Response headers that are the backend's own business, not the client's.
_DROP_RESPONSE = frozenset({b"content-length", b"server", b"date"})
# How much of an error answer is read to find its S3 error code.
ERROR_PEEK = 4096
_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_ETAG = re.compile(rb"<ETag>([^<]{1,200})</ETag>")
# Answer bytes held for a slice longer than this while the backend sends nothing more are
# passed on as a short slice, so streams (events, log tails) reach their clients as they
# come; a download that keeps flowing is cut into whole 1 MiB slices.
FLUSH_AGE_S = 0.2
FLUSH_TICK_S = 0.05
# A masked answer is read whole before it is masked and sent: larger ones are refused
# (never passed unmasked).
MASK_MAX = 16 << 20
# A batch delete's body (up to 1,000 keys) is read before it is decided on, up to this.
PREFETCH_MAX = 2 << 20
# A CompleteMultipartUpload's body (its part list) and answer are kept up to this size to
# build the object's manifest (10,000 parts take about 1 MiB).
KEEP_MAX = 2 << 20


class _Cut(Exception):
    pass


async def relay(gw: HttpGateway, client: ClientConn, t: HttpTarget) -> bool:
    """Relay the admitted request; False when the client connection must close."""
    s = t.session
    rec = s.recorder
    head = t.head
    headers = list(head.headers)
    facts = _facts(t)
    s.requests += 1
    prefetched: list[h11.Event] | None = None
    sp = gw.policy_for(s)
    if sp is not None and sp.requests_guarded:
        rec.set_policy(sp.version)
        d = sp.check_request(_view(t, facts))
        source = header(list(head.headers), b"x-amz-copy-source")
        if d.allowed and source is not None:
            d = _judge_copy_source(sp, t, source)
        if d.allowed and facts.op == "DeleteObjects" and sp.keys_matter:
            # the keys of a batch delete are in its body: each is decided as a DeleteObject
            prefetched = await _prefetch(client, gw.listener.body_timeout)
            if prefetched is None:
                d = Decision(False, "delete-objects", "the list of keys to delete is too long")
            else:
                body_bytes = b"".join(bytes(e.data) for e in prefetched if isinstance(e, h11.Data))
                d = _judge_keys(sp, t, facts, s3_delete_keys(_decoded(t, body_bytes)))
        if d.allowed and d.review is not None:
            verdict = await _review(gw, t, facts, sp.review_rule(d.review))
            if not verdict.approved:
                d = Decision(False, d.review, verdict.message)
        if not d.allowed:
            message = d.message or f"refused by rule {d.rule}"
            await gw.sink.commit([rec.blocked_request(now_ns(), facts, d.rule, message)])
            why = f"ledgergate: refused by rule {d.rule}: {message}"
            await client.refuse(_error(t, 403, "AccessDenied", why, client))
            return await client.discard_body()
    upload = _upload_key(t, facts)
    extra: dict[str, Any] = {}
    if upload is not None:
        earlier = gw.objects.earlier_part(t.conn.name, *upload)
        if earlier is not None:
            extra["retransmits"] = earlier.ref()
    cmd = rec.request(now_ns(), facts, _raw_head(head) if rec.full else b"", **extra)
    seq = cmd.fields["command"]["seq"]
    attempt = Attempt(s.session_id, seq, str(s.identity.get("subject", "")))
    keep = bytearray() if facts.op == "CompleteMultipartUpload" else None
    await gw.sink.commit([cmd])
    outcome: str = "failed"
    result: dict[str, Any] = {}
    pool = gw.pools[t.conn.name]
    bc: BackendConn | None = None
    body: SliceBody | AwsChunkedBody | None = None
    counts = {"c2s": 0, "s2c": 0, "bytes_in": 0, "bytes_out": 0}
    try:
        bc = await pool.get()
        masker = gw.masker_for(s)
        method, target, out_headers, body = _backend_request(gw, t, masked=masker is not None)
        if header(headers, b"transfer-encoding") is not None:
            out_headers.append((b"transfer-encoding", b"chunked"))
        await bc.send_head(method, target, out_headers)
        if client.h.they_are_waiting_for_100_continue:
            await client.send(h11.InformationalResponse(status_code=100, headers=[]))
        await _upload(gw, client, t, bc, body, seq, counts, attempt, keep, prefetched)
        await bc.send_end()
        async with asyncio.timeout(t.conn.response_timeout):
            resp = await bc.response()
        if masker is not None and _has_body(t, resp):
            outcome, result, told = await _download_masked(
                gw, client, t, bc, resp, seq, counts, masker
            )
        else:
            outcome, result, told = await _download(
                gw, client, t, bc, resp, seq, counts, peek_all=keep is not None
            )
        if outcome == "accepted" and keep is not None and b"<Error>" in told:
            outcome = "rejected"  # S3 can answer a completion 200 with an error inside
            m = _CODE.search(told)
            result["error"] = {"code": m.group(1).decode("ascii") if m else "InternalError"}
        pool.put(bc)
        bc = None
        return True
    except BodyError as e:
        outcome = "refused"
        result = {"error": {"code": e.code, "message": e.message}}
        if e.chunk is not None:
            counts["c2s"] += 1
            with contextlib.suppress(LedgerUnavailable):
                gw.sink.submit(
                    [
                        rec.refused_chunk(
                            now_ns(), seq, (body.chunks if body else 0) + 1, e.chunk, e.message
                        )
                    ]
                )
        await client.refuse(_error(t, e.status, e.code, e.message, client))
        return client.h.their_state is h11.DONE
    except Unmaskable as e:
        outcome, result = "refused", {"error": {"code": "Unmaskable", "message": str(e)}}
        why = f"ledgergate: the answer cannot be masked, so it is not sent: {e}"
        await client.refuse(_error(t, 403, "AccessDenied", why, client))
        return client.h.their_state is h11.DONE
    except _Cut as e:
        outcome, result = "cut", {"reason": str(e)}
        await client.refuse(_error(t, 403, "AccessDenied", f"ledgergate: {e}", client, close=True))
        return False
    except asyncio.CancelledError:
        if client._cut is None:
            raise
        outcome, result = "cut", {"reason": client._cut}
        with contextlib.suppress(Exception):
            await client.refuse(
                _error(t, 403, "AccessDenied", f"ledgergate: {client._cut}", client, close=True)
            )
        raise
    except LedgerUnavailable:
        # fail closed: nothing more passes (the backend connection is aborted below)
        outcome, result = "failed", {"error": {"code": "LedgerUnavailable", "message": ""}}
        why = (
            "ledgergate: the audit ledger is unavailable; refusing traffic until it can be written"
        )
        await client.refuse(_error(t, 503, "ServiceUnavailable", why, client, close=True))
        return False
    except BackendError as e:
        outcome, result = "failed", {"error": {"code": "BackendError", "message": str(e)}}
        await client.refuse(
            _error(t, 502, "ServiceUnavailable", f"ledgergate: {e}", client, close=True)
        )
        return False
    except TimeoutError:
        outcome, result = "failed", {"error": {"code": "Timeout", "message": "no answer in time"}}
        await client.refuse(
            _error(
                t,
                504,
                "RequestTimeout",
                "ledgergate: the backend did not answer in time",
                client,
                close=True,
            )
        )
        return False
    except (ConnectionError, OSError, h11.ProtocolError) as e:
        outcome, result = "failed", {"error": {"code": "ClientError", "message": type(e).__name__}}
        return False
    finally:
        if bc is not None:
            bc.abort()  # the request did not complete: the backend must not commit it
        s.bytes_in += counts["bytes_in"]
        s.bytes_out += counts["bytes_out"]
        attempt.outcome = outcome
        attempt.etag = result.get("etag")
        closing = [
            rec.result(
                now_ns(),
                seq,
                facts.op,
                outcome,
                chunks={"c2s": counts["c2s"], "s2c": counts["s2c"]},
                bytes={"in": counts["bytes_in"], "out": counts["bytes_out"]},
                **result,
            )
        ]
        closing.extend(_objects(gw, t, facts, attempt, upload, keep, result, closing[0]))
        with contextlib.suppress(LedgerUnavailable):
            gw.sink.submit(closing)


async def _review(
    gw: HttpGateway, t: HttpTarget, f: RequestFacts, rule: PolicyRule | None
) -> ReviewAnswer:
    """Hold the request for a human (``services.review_desk``): the request line and
    what the client declared of its body are what the approval is bound to, so the
    identical request runs once after approval."""
    if rule is None or gw.reviews is None:
        return ReviewAnswer(False, "no reviewer can be asked")
    s = t.session
    query = "&".join(f"{k}={v}" for k, v in f.query)
    statement = f"{f.method} {f.path}{'?' + query if query else ''}"
    if f.protocol == "s3":
        statement += f" ({f.op})"
    params = (
        f"content-length={f.content_length}" if f.content_length is not None else None,
        f"payload-sha256={f.payload}" if f.payload is not None else None,
        f"checksum={f.checksum[0]}:{f.checksum[1]}" if f.checksum is not None else None,
    )
    ask = ReviewAsk(
        session_id=s.session_id,
        identity=s.facts.identity,
        groups=s.facts.groups,
        connection=s.conn_name,
        rule=rule,
        op="request",
        statement=statement,
        params=params,
    )
    return await gw.reviews.ask(ask, lambda text: log.info("session %s: %s", s.session_id, text))


async def _prefetch(client: ClientConn, timeout: float) -> list[h11.Event] | None:
    """The whole (small) body of a request, read before it is decided on; None past
    ``PREFETCH_MAX`` bytes."""
    if client.h.they_are_waiting_for_100_continue:
        await client.send(h11.InformationalResponse(status_code=100, headers=[]))
    events: list[h11.Event] = []
    size = 0
    while True:
        ev = await client.next_event(timeout)
        if isinstance(ev, h11.Data):
            size += len(ev.data)
            if size > PREFETCH_MAX:
                return None
        elif not isinstance(ev, h11.EndOfMessage):
            raise BodyError(
                "IncompleteBody", "the client closed the connection before the body's end"
            )
        events.append(ev)
        if isinstance(ev, h11.EndOfMessage):
            return events


def _decoded(t: HttpTarget, body: bytes) -> bytes:
    """An aws-chunked body's data (a batch delete's XML may come chunked)."""
    payload = t.signed.payload_hash if t.signed else ""
    if payload not in STREAMING:
        return body
    out = bytearray()
    dec = awschunked.AwsChunkedDecoder(signed=STREAMING[payload][0], trailer=STREAMING[payload][1])
    try:
        for ev in dec.feed(body):
            if isinstance(ev, awschunked.ChunkData):
                out += ev.data
    except awschunked.ChunkedError:
        return b""
    return bytes(out)


def _judge_copy_source(sp: SessionPolicy, t: HttpTarget, value: bytes) -> Decision:
    """A copy reads its source: decided as a GetObject of it (a rule keeping a key from
    being read keeps it from being copied out too)."""
    src = s3_copy_source(value)
    if src is None:
        return Decision(False, "copy-source", "x-amz-copy-source is not bucket/key")
    hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in t.head.headers}
    view = RequestView(
        method="GET",
        operation="GetObject",
        path=f"/{src[0]}/{src[1]}",
        bucket=src[0],
        key=src[1],
        headers=hdrs,
    )
    d = sp.check_request(view)
    if d.review is not None:
        return Decision(False, d.review, f"reading {src[0]}/{src[1]} needs a review")
    if not d.allowed:
        return Decision(False, d.rule, f"{d.message or 'refused'} (copy source {src[1]})")
    return ALLOW


def _judge_keys(sp: SessionPolicy, t: HttpTarget, f: RequestFacts, keys: list[str]) -> Decision:
    """A batch delete decided key by key, as DeleteObject: the first key refused (or
    held for review: a batch is not reviewed whole) refuses the whole request."""
    hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in t.head.headers}
    for key in keys:
        view = RequestView(
            method="DELETE",
            operation="DeleteObject",
            path=f"/{f.bucket}/{key}",
            bucket=f.bucket,
            key=key,
            headers=hdrs,
        )
        d = sp.check_request(view)
        if d.review is not None:
            return Decision(False, d.review, f"deleting {key} needs a review: delete it alone")
        if not d.allowed:
            return Decision(False, d.rule, f"{d.message or 'refused'} (key {key})")
    return ALLOW


def _upload_key(t: HttpTarget, f: RequestFacts) -> tuple[str, str, str, int] | None:
    """(bucket, key, upload id, part number) of an UploadPart."""
    if f.op != "UploadPart" or t.bucket is None or t.key is None:
        return None
    q = dict(t.query or [])
    part = q.get("partNumber", "")
    if not part.isdigit() or "uploadId" not in q:
        return None
    return t.bucket, t.key, q["uploadId"], int(part)


def _objects(
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


def _view(t: HttpTarget, f: RequestFacts) -> RequestView:
    hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in t.head.headers}
    return RequestView(
        method=f.method, operation=f.op, path=f.path, bucket=f.bucket, key=f.key, headers=hdrs
    )


def _error(
    t: HttpTarget, status: int, code: str, message: str, client: ClientConn, *, close: bool = False
) -> Refusal:
    if t.kind == "s3":
        body = s3_error_body(code, message, t.head.path.decode("latin-1"), client.conn_id)
        return Refusal(status, body, XML, close=close, reason=message)
    return Refusal(
        status, problem_body(status, code, message), PROBLEM, close=close, reason=message
    )


def _raw_head(head: Any) -> bytes:
    lines = [head.method + b" " + head.target]
    for k, v in head.headers:
        if k in (b"authorization",):
            v = b"<hidden>"
        lines.append(k + b": " + v)
    return b"\r\n".join(lines)


def _facts(t: HttpTarget) -> RequestFacts:
    head = t.head
    headers = list(head.headers)
    clen = header(headers, b"content-length")
    ctype = header(headers, b"content-type")
    method = head.method.decode("latin-1")
    if t.kind == "s3":
        from ledgergate.wire.http.messages import s3_operation

        q = t.query or []
        checksum = None
        for k, v in headers:
            alg = k.decode("latin-1").removeprefix("x-amz-checksum-")
            if k.startswith(b"x-amz-checksum-") and alg in ALGORITHMS:
                checksum = (alg, v.decode("latin-1"))
        trailer = header(headers, b"x-amz-trailer")
        if checksum is None and trailer is not None:
            checksum = (trailer.decode("latin-1").removeprefix("x-amz-checksum-"), "trailer")
        decoded = header(headers, b"x-amz-decoded-content-length")
        length = decoded if decoded is not None else clen
        return RequestFacts(
            protocol="s3",
            method=method,
            op=s3_operation(
                head.method, t.bucket, t.key, q, header(headers, b"x-amz-copy-source") is not None
            ),
            path=unquote(head.path.decode("latin-1")),
            query=tuple((k, v) for k, v in q if k not in _PRESIGN),
            bucket=t.bucket,
            key=t.key,
            content_length=int(length) if length and length.isdigit() else None,
            payload=t.signed.payload_hash if t.signed else None,
            checksum=checksum,
            content_type=ctype.decode("latin-1") if ctype else None,
        )
    path, _, query = t.rest.partition(b"?")
    return RequestFacts(
        protocol="http",
        method=method,
        op=method,
        path=unquote(path.decode("latin-1")),
        query=tuple(parse_qsl(query.decode("latin-1"), keep_blank_values=True)),
        content_length=int(clen) if clen and clen.isdigit() else None,
        content_type=ctype.decode("latin-1") if ctype else None,
    )


def _backend_request(
    gw: HttpGateway, t: HttpTarget, *, masked: bool = False
) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], SliceBody | AwsChunkedBody]:
    """The request to send the backend (method, target, headers) and the body relay.
    ``masked``: the answer will be masked, so it is asked for uncompressed and whole."""
    conn = t.conn
    head = t.head
    headers = list(head.headers)
    host = conn.host if conn.port in (80, 443) else f"{conn.host}:{conn.port}"
    out = [(k, v) for k, v in forwardable(headers) if k not in _DROP]
    if masked:
        out = [(k, v) for k, v in out if k not in (b"accept-encoding", b"range", b"if-range")]
    clen = header(headers, b"content-length")
    if clen is not None:
        out.append((b"content-length", clen))
    if t.kind == "http":
        held = gw.held[conn.name]
        out.insert(0, (b"host", host.encode("latin-1")))
        auth = conn.auth  # type: ignore[union-attr]
        if auth.type == "bearer":
            out.append((b"authorization", b"Bearer " + (held["token"] or "").encode("latin-1")))
        elif auth.type == "basic":
            pair = f"{held['user']}:{held['password']}".encode()
            out.append((b"authorization", b"Basic " + base64.b64encode(pair)))
        elif auth.type == "header":
            out = [(k, v) for k, v in out if k != (auth.header or "").lower().encode()]
            out.append(
                (
                    (auth.header or "").lower().encode("latin-1"),
                    (held["value"] or "").encode("latin-1"),
                )
            )
        target = (conn.base_path.encode("latin-1") + t.rest) or b"/"
        return head.method, target, out, SliceBody()
    # S3: the same request, path-style (or virtual-hosted) at the storage, signed again.
    assert t.signed is not None
    raw_path = head.path
    client_virtual = t.bucket is not None and _virtual(gw, head)
    bucket_b = _quote_bucket(t.bucket) if t.bucket else b""
    if conn.addressing == "virtual" and t.bucket:  # type: ignore[union-attr]
        host = f"{t.bucket}.{host}"
        path = raw_path if client_virtual else b"/" + raw_path[1:].partition(b"/")[2]
    else:
        path = (b"/" + bucket_b + raw_path) if client_virtual else raw_path
    query = _strip_presign(head.query)
    target = conn.base_path.encode("latin-1") + path + (b"?" + query if query else b"")
    held = gw.held[conn.name]
    payload = t.signed.payload_hash
    if t.signed.presigned and payload != "UNSIGNED-PAYLOAD":
        payload = "UNSIGNED-PAYLOAD"
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.insert(0, (b"host", host.encode("latin-1")))
    region = conn.region  # type: ignore[union-attr]
    signed_headers, seed = sigv4.sign_headers(
        head.method,
        target,
        out,
        access_key=held["access_key_id"] or "",
        secret=held["secret_access_key"] or "",
        region=region,
        service="s3",
        amz_date=amz_date,
        payload_hash=payload,
    )
    body: SliceBody | AwsChunkedBody
    mode = STREAMING.get(payload)
    if mode is not None:
        signed, trailer = mode
        verify = resign = None
        if signed:
            sr = t.signed
            assert t.signing_key is not None
            verify = sigv4.ChunkChain(t.signing_key, sr.amz_date, sr.scope, sr.signature)
            bkey = sigv4.signing_key(held["secret_access_key"] or "", amz_date[:8], region, "s3")
            resign = sigv4.ChunkChain(
                bkey, amz_date, f"{amz_date[:8]}/{region}/s3/aws4_request", seed
            )
        decoded = header(headers, b"x-amz-decoded-content-length")
        trailer_name = header(headers, b"x-amz-trailer")
        body = AwsChunkedBody(
            signed=signed,
            trailer=trailer,
            verify=verify,
            resign=resign,
            decoded_length=int(decoded) if decoded and decoded.isdigit() else None,
            trailer_name=trailer_name.decode("latin-1").strip().lower() if trailer_name else None,
        )
    else:
        body = SliceBody(_expected(headers, payload))
    return head.method, target, signed_headers, body


def _expected(headers: list[tuple[bytes, bytes]], payload: str) -> Expected:
    md5 = header(headers, b"content-md5")
    checksum = None
    for k, v in headers:
        alg = k.decode("latin-1").removeprefix("x-amz-checksum-")
        if k.startswith(b"x-amz-checksum-") and alg in ALGORITHMS:
            checksum = (alg, v.decode("latin-1").strip())
    digest = (
        payload
        if len(payload) == 64 and all(c in "0123456789abcdefABCDEF" for c in payload)
        else None
    )
    return Expected(digest, md5.decode("latin-1").strip() if md5 else None, checksum)


def _virtual(gw: HttpGateway, head: Any) -> bool:
    host = header(list(head.headers), b"host")
    if not host:
        return False
    name = host.decode("latin-1").rsplit(":", 1)[0].lower()
    return any(name.endswith("." + h) for h in gw.hostnames)


def _quote_bucket(bucket: str) -> bytes:
    from urllib.parse import quote

    return quote(bucket, safe="-._~").encode("ascii")


def _strip_presign(query: bytes) -> bytes:
    if b"X-Amz-" not in query:
        return query
    keep = [
        p
        for p in query.split(b"&")
        if unquote(p.split(b"=", 1)[0].decode("latin-1")) not in _PRESIGN
    ]
    return b"&".join(keep)


async def _upload(
    gw: HttpGateway,
    client: ClientConn,
    t: HttpTarget,
    bc: BackendConn,
    body: SliceBody | AwsChunkedBody,
    seq: int,
    counts: dict[str, int],
    attempt: Attempt,
    keep: bytearray | None,
    prefetched: list[h11.Event] | None = None,
) -> None:
    """Relay the request body: each chunk recorded, then written; the end held back
    until the body checked out."""
    s = t.session
    rec = s.recorder
    timeout = gw.listener.body_timeout
    while True:
        why = s.check(now_ns())
        if why is not None:
            raise _Cut(f"session ended: {why}")
        try:
            ev = prefetched.pop(0) if prefetched else await client.next_event(timeout)
        except TimeoutError:
            raise BodyError(
                "RequestTimeout", "the request body was not sent in time", 400
            ) from None
        except h11.RemoteProtocolError as e:
            raise BodyError("IncompleteBody", f"the request body is malformed: {e}") from None
        if isinstance(ev, h11.Data):
            counts["bytes_in"] += len(ev.data)
            if keep is not None and len(keep) < KEEP_MAX:
                keep += ev.data[: KEEP_MAX - len(keep)]
            out, facts = body.feed(bytes(ev.data))
        elif isinstance(ev, h11.EndOfMessage):
            out, facts = body.finish()
        else:
            raise BodyError(
                "IncompleteBody", "the client closed the connection before the body's end"
            )
        if facts:
            ts = now_ns()
            counts["c2s"] += len(facts)
            drafts = [rec.body_chunk(ts, seq, "c2s", f) for f in facts]
            for d in drafts:
                ch = d.fields["chunk"]
                attempt.chunks.append((ch["seq"], ch["size"], ch["sha256_in"]))
            gw.sink.submit(drafts)
            if gw.sink.congested:
                await _uncongested(gw)
        for piece in out:
            await bc.send_data(piece)
        if isinstance(ev, h11.EndOfMessage):
            return


async def _uncongested(gw: HttpGateway) -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def resume() -> None:
        if not fut.done():
            fut.set_result(None)

    gw.sink.when_uncongested(resume)
    await fut


async def _download(
    gw: HttpGateway,
    client: ClientConn,
    t: HttpTarget,
    bc: BackendConn,
    resp: BackendResponse,
    seq: int,
    counts: dict[str, int],
    *,
    peek_all: bool = False,
) -> tuple[str, dict[str, Any], bytes]:
    """Relay the answer in recorded slices; return the request's outcome and facts, and
    the start of the answer's body (of an error, or all of it with ``peek_all``)."""
    s = t.session
    rec = s.recorder
    status = resp.status_code
    rheaders = [(k, v) for k, v in forwardable(list(resp.headers)) if k not in _DROP_RESPONSE]
    length = header(list(resp.headers), b"content-length")
    if length is not None:
        rheaders.append((b"content-length", length))
    result: dict[str, Any] = {"status": status}
    etag = header(list(resp.headers), b"etag")
    if etag:
        result["etag"] = etag.decode("latin-1")
    version = header(list(resp.headers), b"x-amz-version-id")
    if version:
        result["version_id"] = version.decode("latin-1")
    reason = resp.reason or phrase(status)
    await client.send(h11.Response(status_code=status, headers=rheaders, reason=reason))
    client.response_started = True
    slicer = SliceBody()
    peek = bytearray()
    held_since = 0.0  # when the bytes held for the current slice started arriving
    async for data in bc.body(idle=FLUSH_TICK_S):
        why = s.check(now_ns())
        if why is not None:
            raise _Cut(f"session ended: {why}")
        if not data:  # nothing arrived for a while: bytes held too long are passed on
            if slicer.held and time.monotonic() - held_since >= FLUSH_AGE_S:
                out, facts = slicer.flush()
                await _send_slices(gw, client, rec, seq, out, facts, counts)
            continue
        if not slicer.held:
            held_since = time.monotonic()
        counts["bytes_out"] += len(data)
        if (status >= 300 or peek_all) and len(peek) < KEEP_MAX:
            peek += data[: (KEEP_MAX if peek_all else ERROR_PEEK) - len(peek)]
        out, facts = slicer.feed(data)
        await _send_slices(gw, client, rec, seq, out, facts, counts)
    out, facts = slicer.finish()
    await _send_slices(gw, client, rec, seq, out, facts, counts)
    await client.send(h11.EndOfMessage())
    if status >= 300:
        m = _CODE.search(bytes(peek))
        result["error"] = {"code": m.group(1).decode("ascii") if m else str(status)}
        return "rejected", result, bytes(peek)
    if peek_all:
        m = _ETAG.search(bytes(peek))
        if m is not None:
            result["etag"] = html.unescape(m.group(1).decode("utf-8", "replace"))
    return "accepted", result, bytes(peek)


def _has_body(t: HttpTarget, resp: BackendResponse) -> bool:
    return t.head.method != b"HEAD" and resp.status_code not in (204, 304)


async def _download_masked(
    gw: HttpGateway,
    client: ClientConn,
    t: HttpTarget,
    bc: BackendConn,
    resp: BackendResponse,
    seq: int,
    counts: dict[str, int],
    masker: DocumentMasker,
) -> tuple[str, dict[str, Any], bytes]:
    """A masked answer: read whole (up to ``MASK_MAX``), masked, recorded as one chunk
    (the digest of what the backend sent and of what the client got), then sent with its
    new length. Raises ``Unmaskable`` before anything is sent when it cannot be."""
    s = t.session
    rec = s.recorder
    status = resp.status_code
    rh = list(resp.headers)
    enc = (header(rh, b"content-encoding") or b"identity").strip().lower()
    if enc not in (b"identity", b""):
        raise Unmaskable(f"the answer is compressed ({enc.decode('latin-1')})")
    raw = bytearray()
    async for data in bc.body():
        why = s.check(now_ns())
        if why is not None:
            raise _Cut(f"session ended: {why}")
        raw += data
        if len(raw) > MASK_MAX:
            raise Unmaskable(f"the answer is larger than {MASK_MAX >> 20} MiB")
    counts["bytes_out"] += len(raw)
    ctype = (header(rh, b"content-type") or b"").decode("latin-1")
    masked, found = masker.mask(ctype, bytes(raw))
    fact = BodyChunkFact(1, bytes(raw), masked if masked != raw else None, "document")
    entries = [rec.body_chunk(now_ns(), seq, "s2c", fact)]
    counts["s2c"] += 1
    if found:
        entries.append(
            rec.event(
                now_ns(),
                "mask",
                command={"seq": seq},
                content_type=ctype,
                masking=[
                    {"field": f, "rule": r, "count": n} for (f, r), n in sorted(found.items())
                ],
            )
        )
    gw.sink.submit(entries)
    out_headers = [
        (k, v)
        for k, v in forwardable(rh)
        if k not in _DROP_RESPONSE and not k.startswith(b"x-amz-checksum-") and k != b"content-md5"
    ]
    out_headers.append((b"content-length", str(len(masked)).encode()))
    reason = resp.reason or phrase(status)
    await client.send(h11.Response(status_code=status, headers=out_headers, reason=reason))
    client.response_started = True
    if masked:
        await client.send(h11.Data(data=masked))
    await client.send(h11.EndOfMessage())
    result: dict[str, Any] = {"status": status, "masked": sum(found.values())}
    etag = header(rh, b"etag")
    if etag:
        result["etag"] = etag.decode("latin-1")
    if status >= 300:
        m = _CODE.search(bytes(raw[:ERROR_PEEK]))
        result["error"] = {"code": m.group(1).decode("ascii") if m else str(status)}
        return "rejected", result, bytes(raw[:ERROR_PEEK])
    return "accepted", result, b""


async def _send_slices(
    gw: HttpGateway,
    client: ClientConn,
    rec: Any,
    seq: int,
    out: list[bytes],
    facts: list[Any],
    counts: dict[str, int],
) -> None:
    if facts:
        ts = now_ns()
        counts["s2c"] += len(facts)
        gw.sink.submit([rec.body_chunk(ts, seq, "s2c", f) for f in facts])
    for piece in out:
        await client.send(h11.Data(data=piece))
