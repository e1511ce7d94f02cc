"""Deciding on a request beyond its head: review holds, a copy's source, a batch
delete's keys.

Owns the policy steps that need more than ``SessionPolicy.check_request`` on the head:
asking the review desk (the request line and declared digests are what an approval is
bound to), deciding a CopyObject's source as the read it is, and reading a
DeleteObjects body (bounded) so each key is decided as a DeleteObject.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import h11

from ledgergate.core.policy.engine import ALLOW, Decision, SessionPolicy
from ledgergate.core.policy.http import RequestView
from ledgergate.core.policy.rules import PolicyRule
from ledgergate.core.recording_http import RequestFacts
from ledgergate.proxy.http.outbound import STREAMING
from ledgergate.proxy.http.session import ClientConn
from ledgergate.proxy.review import ReviewAnswer, ReviewAsk
from ledgergate.wire.http.body import BodyError
from ledgergate.wire.http.messages import s3_copy_source
from ledgergate.wire.s3 import chunked as awschunked

if TYPE_CHECKING:
    from ledgergate.proxy.http.gateway import HttpGateway, HttpTarget

__all__ = [
    "ask_review",
    "decoded_body",
    "judge_copy_source",
    "judge_keys",
    "prefetch",
    "request_view",
]

log = logging.getLogger("ledgergate.http")
# A batch delete's body (up to 1,000 keys) is read before it is decided on, up to this.
PREFETCH_MAX = 2 << 20


def request_view(t: HttpTarget, f: RequestFacts) -> RequestView:
    hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in t.head.headers}
    return RequestView(
        method=f.method, operation=f.op, path=f.path, bucket=f.bucket, key=f.key, headers=hdrs
    )


async def ask_review(
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


async def prefetch(client: ClientConn, timeout: float) -> list[h11.Event] | None:
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


def decoded_body(t: HttpTarget, body: bytes) -> bytes:
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


def judge_copy_source(sp: SessionPolicy, t: HttpTarget, value: bytes) -> Decision:
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


def judge_keys(sp: SessionPolicy, t: HttpTarget, f: RequestFacts, keys: list[str]) -> Decision:
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
