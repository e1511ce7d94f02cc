"""Admitting an S3 request: the access key, the connection, the signature, the bucket.

Owns the S3 half of ``HttpGateway``'s admission (a mixin): the access key the request
is signed with names the identity; the connection is the one its scope names, else the
one whose ``buckets`` hold the bucket, else the only ``s3`` connection; the signature is
checked with the key's secret (AWS's 15-minute clock-skew rule); a bucket (or a copy's
source bucket) outside the connection's ``buckets`` is refused. Refusals are S3 XML
errors and ``auth.*`` entries. Never records a secret or a signature.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ledgergate.core.config import HttpConnection, S3Connection
from ledgergate.proxy.http.session import ClientConn, LedgerSession, Refusal
from ledgergate.proxy.http.target import Admitted, HttpTarget, KeyAuth
from ledgergate.proxy.sink import LedgerSink, LedgerUnavailable
from ledgergate.wire.http.messages import (
    RequestHead,
    header,
    s3_copy_source,
    s3_error_body,
    split_s3_target,
)
from ledgergate.wire.s3 import sigv4

__all__ = ["S3Admission"]

now_ns = time.time_ns
XML = b"application/xml"


class S3Admission:
    connections: dict[str, S3Connection | HttpConnection]
    sink: LedgerSink
    hostnames: tuple[str, ...]
    authenticate_key: KeyAuth
    _cached: Callable[..., Awaitable[Any]]
    _session: Callable[[ClientConn, Admitted, str], Awaitable[LedgerSession]]

    def _s3_refusal(
        self,
        client: ClientConn,
        head: RequestHead,
        status: int,
        code: str,
        message: str,
        conn: str | None,
        identity: Any,
        kind: str = "auth.fail",
        token_id: str | None = None,
    ) -> Refusal:
        rec = client.base_without_session(conn, identity)
        with contextlib.suppress(LedgerUnavailable):
            self.sink.submit(
                [
                    rec.event(
                        now_ns(),
                        kind,
                        reason=message,
                        error=code,
                        token_id=token_id,
                        request={"method": head.method.decode("latin-1"), "protocol": "s3"},
                        tls=client.tls,
                        outcome="refused",
                    )
                ]
            )
        body = s3_error_body(code, message, head.path.decode("latin-1"), client.conn_id)
        return Refusal(status, body, XML, reason=message)

    async def _admit_s3(
        self, client: ClientConn, head: RequestHead, signed: sigv4.SignedRequest
    ) -> HttpTarget:
        headers = list(head.headers)
        key_id = signed.access_key
        adm, _, scope = await self._cached(
            "key", key_id, "", lambda: self.authenticate_key(key_id, None)
        )
        if not adm.ok:
            code = "InvalidAccessKeyId" if adm.identity is None else "AccessDenied"
            msg = (
                "The AWS Access Key Id you provided does not exist in our records."
                if adm.identity is None
                else f"ledgergate: {adm.reason}"
            )
            raise self._s3_refusal(
                client, head, 403, code, msg, None, adm.identity, token_id=adm.token_id
            )
        if head.path.startswith(b"//"):
            raise self._s3_refusal(
                client,
                head,
                400,
                "InvalidURI",
                "ledgergate: the path has an empty bucket name",
                None,
                adm.identity,
                token_id=adm.token_id,
            )
        bucket, key, query = split_s3_target(head.target, header(headers, b"host"), self.hostnames)
        conn = self._pick_s3(scope, bucket)
        if conn is None:
            raise self._s3_refusal(
                client,
                head,
                400,
                "InvalidRequest",
                "ledgergate: this access key does not name one S3 connection for this bucket",
                None,
                adm.identity,
                token_id=adm.token_id,
            )
        adm, secret, _ = await self._cached(
            "key", key_id, conn.name, lambda: self.authenticate_key(key_id, conn.name)
        )
        if not adm.ok or secret is None:
            kind = "auth.denied" if adm.denied else "auth.fail"
            raise self._s3_refusal(
                client,
                head,
                403,
                "AccessDenied",
                f"ledgergate: {adm.reason}",
                conn.name,
                adm.identity,
                kind,
                adm.token_id,
            )
        try:
            skey = sigv4.verify(signed, secret, head.method, head.target, headers, now_ns())
        except sigv4.SigV4Error as e:
            raise self._s3_refusal(
                client, head, 403, e.code, e.message, conn.name, adm.identity, token_id=adm.token_id
            ) from None
        source = header(headers, b"x-amz-copy-source")
        src = s3_copy_source(source) if source is not None else None
        if conn.buckets is not None and any(
            b is not None and not any(fnmatch.fnmatchcase(b, g) for g in conn.buckets)
            for b in (bucket, src[0] if src else None)
        ):
            raise self._s3_refusal(
                client,
                head,
                403,
                "AccessDenied",
                f"ledgergate: connection {conn.name} does not expose that bucket",
                conn.name,
                adm.identity,
                "auth.denied",
                adm.token_id,
            )
        session = await self._session(client, adm, conn.name)
        return HttpTarget("s3", conn, session, head, signed, skey, bucket, key, query)

    def _pick_s3(self, scope: tuple[str, ...] | None, bucket: str | None) -> S3Connection | None:
        s3 = [c for c in self.connections.values() if isinstance(c, S3Connection)]
        cand = (
            s3
            if not scope
            else [c for c in s3 if any(fnmatch.fnmatchcase(c.name, p) for p in scope)]
        )
        if len(cand) == 1:
            return cand[0]
        if bucket is None:
            return None
        hits = [
            c for c in cand if c.buckets and any(fnmatch.fnmatchcase(bucket, g) for g in c.buckets)
        ]
        return hits[0] if len(hits) == 1 else None
