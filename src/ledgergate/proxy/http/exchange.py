"""One admitted request relayed: recorded, signed again, its body checked, answered.

Owns the order a request's bytes follow: the ``command`` entry is committed before the
backend sees the request; each body chunk's entry is submitted before the chunk is
written on; the end of an upload is held back until every signature and checksum
checked out (else the backend connection is aborted and the backend commits nothing);
the answer is relayed in recorded slices; and a ``command.result`` entry closes the
request with the backend's status, ETag and version id, or with why it was refused or
cut. The request sent to the backend is built by ``outbound`` (the held credential goes
only into it), the decisions beyond the head are ``decide``'s, and what is remembered of
parts and objects is ``objects``'.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import h11

from ledgergate.core.masking.document import DocumentMasker, Unmaskable
from ledgergate.core.policy.engine import Decision
from ledgergate.proxy.http.backend import BackendConn, BackendError, BackendResponse
from ledgergate.proxy.http.decide import (
    ask_review,
    decoded_body,
    judge_copy_source,
    judge_keys,
    prefetch,
    request_view,
)
from ledgergate.proxy.http.objects import Attempt, remember, upload_key
from ledgergate.proxy.http.outbound import backend_request, raw_head, request_facts
from ledgergate.proxy.http.session import ClientConn, Refusal, phrase
from ledgergate.proxy.sink import LedgerUnavailable
from ledgergate.wire.http.body import (
    AwsChunkedBody,
    BodyChunkFact,
    BodyError,
    SliceBody,
)
from ledgergate.wire.http.messages import (
    forwardable,
    header,
    problem_body,
    s3_delete_keys,
    s3_error_body,
)

if TYPE_CHECKING:
    from ledgergate.proxy.http.gateway import HttpGateway, HttpTarget

__all__ = ["relay"]

log = logging.getLogger("ledgergate.http")
now_ns = time.time_ns
XML = b"application/xml"
PROBLEM = b"application/problem+json"
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
    facts = request_facts(t)
    s.requests += 1
    prefetched: list[h11.Event] | None = None
    sp = gw.policy_for(s)
    if sp is not None and sp.requests_guarded:
        rec.set_policy(sp.version)
        d = sp.check_request(request_view(t, facts))
        source = header(list(head.headers), b"x-amz-copy-source")
        if d.allowed and source is not None:
            d = judge_copy_source(sp, t, source)
        if d.allowed and facts.op == "DeleteObjects" and sp.keys_matter:
            # the keys of a batch delete are in its body: each is decided as a DeleteObject
            prefetched = await prefetch(client, gw.listener.body_timeout)
            if prefetched is None:
                d = Decision(False, "delete-objects", "the list of keys to delete is too long")
            else:
                body_bytes = b"".join(bytes(e.data) for e in prefetched if isinstance(e, h11.Data))
                d = judge_keys(sp, t, facts, s3_delete_keys(decoded_body(t, body_bytes)))
        if d.allowed and d.review is not None:
            verdict = await ask_review(gw, t, facts, sp.review_rule(d.review))
            if not verdict.approved:
                d = Decision(False, d.review, verdict.message)
        if not d.allowed:
            message = d.message or f"refused by rule {d.rule}"
            await gw.sink.commit([rec.blocked_request(now_ns(), facts, d.rule, message)])
            why = f"ledgergate: refused by rule {d.rule}: {message}"
            await client.refuse(_error(t, 403, "AccessDenied", why, client))
            return await client.discard_body()
    upload = upload_key(t, facts)
    extra: dict[str, Any] = {}
    if upload is not None:
        earlier = gw.objects.earlier_part(t.conn.name, *upload)
        if earlier is not None:
            extra["retransmits"] = earlier.ref()
    cmd = rec.request(now_ns(), facts, raw_head(head) if rec.full else b"", **extra)
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
        method, target, out_headers, body = backend_request(gw, t, masked=masker is not None)
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
        closing.extend(remember(gw, t, facts, attempt, upload, keep, result, closing[0]))
        with contextlib.suppress(LedgerUnavailable):
            gw.sink.submit(closing)


def _error(
    t: HttpTarget, status: int, code: str, message: str, client: ClientConn, *, close: bool = False
) -> Refusal:
    if t.kind == "s3":
        body = s3_error_body(code, message, t.head.path.decode("latin-1"), client.conn_id)
        return Refusal(status, body, XML, close=close, reason=message)
    return Refusal(
        status, problem_body(status, code, message), PROBLEM, close=close, reason=message
    )


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
