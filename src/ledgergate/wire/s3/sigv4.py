"""AWS Signature Version 4 as S3 uses it, sans-IO: parse, verify and sign requests, and
chain the signatures of ``aws-chunked`` bodies.

Owns the gateway's two sides of SigV4: checking a client's request signed with a key the
gateway issued (``parse_request`` then ``verify``), and signing the request again with
the backend's key (``sign_headers``, ``ChunkChain``). Must not look keys up, read the
clock or log: the caller passes secrets, ``now_ns`` and headers (``(name, value)`` bytes,
names lower-cased as h11 gives them). Errors are ``SigV4Error`` with an S3 error code and
a message safe for a client: never a secret, a signing key or a computed signature.

Rules (S3's, which differ from other services' SigV4):
- Canonical URI: the raw path percent-decoded once, then encoded once with only
  ``A-Za-z0-9-._~`` and ``/`` kept; never normalised (``//`` and ``..`` are kept).
- Canonical query: every pair percent-decoded (``+`` is a space, as Go's ParseQuery
  reads it in MinIO and versitygw), encoded as the path but with ``/`` encoded too,
  sorted by name then value; a name without ``=`` has an empty value; presigned requests
  leave ``X-Amz-Signature`` out. A malformed escape is refused, never guessed at.
- Canonical headers: the signed headers in the order of SignedHeaders, each value with
  runs of whitespace collapsed to one space, repeated headers joined by ``,``.
- Header auth needs ``x-amz-content-sha256``; presigned requests sign ``UNSIGNED-PAYLOAD``
  unless they carry it (query first, then header). ``host`` must always be signed, and
  every ``x-amz-*`` header present must be signed, as S3 requires.
- Time: header auth allows ``max_skew_s`` either way; a presigned URL is valid from
  ``max_skew_s`` before its X-Amz-Date until X-Amz-Expires (1..604800 s) after it.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_EXPIRES_S",
    "MAX_SKEW_S",
    "STREAMING_PAYLOAD",
    "STREAMING_PAYLOAD_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "ChunkChain",
    "SigV4Error",
    "SignedRequest",
    "canonical_request",
    "chunk_string_to_sign",
    "parse_request",
    "sign_headers",
    "signing_key",
    "string_to_sign",
    "strip_presign_query",
    "trailer_string_to_sign",
    "verify",
]

Headers = Sequence[tuple[bytes, bytes]]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_PAYLOAD_LITERALS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER}
)
# S3's limits: 15 minutes of clock skew, and presigned URLs live at most 7 days.
MAX_SKEW_S = 15 * 60
# Signing keys kept (one per secret, day, region and service): the gateway's own and its
# busiest clients' for the day.
SIGNING_KEYS = 4096
MAX_EXPIRES_S = 7 * 24 * 3600
# Query parameters of a presigned request that carry its signature, not the operation.
_PRESIGN_PARAMS = tuple(
    b"X-Amz-Algorithm X-Amz-Credential X-Amz-Date X-Amz-Expires X-Amz-SignedHeaders "
    b"X-Amz-Signature".split()
)
# botocore's SIGNED_HEADERS_BLACKLIST: what a hop may change, so never signed.
_UNSIGNABLE = frozenset(
    b"authorization baggage connection expect keep-alive proxy-authenticate te traceparent "
    b"proxy-authorization tracestate trailer transfer-encoding upgrade user-agent "
    b"x-amzn-trace-id".split()
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_ACCESS_KEY = re.compile(r"[A-Za-z0-9._~+=@-]{1,128}")
_DATE = re.compile(r"\d{8}")
_REGION = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SERVICE = re.compile(r"[a-z0-9-]{1,64}")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


class SigV4Error(Exception):
    """A request or chunk that is not properly signed: ``code`` is S3's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a request's SigV4 authorization (header or presigned query) claims."""

    access_key: str
    date: str  # YYYYMMDD, of the credential scope
    region: str
    service: str
    amz_date: str  # YYYYMMDDTHHMMSSZ, the signed timestamp
    signed_headers: tuple[str, ...]
    signature: str  # 64 lower-case hex digits
    payload_hash: str  # x-amz-content-sha256 (or UNSIGNED-PAYLOAD when presigned)
    presigned: bool
    expires_s: int | None  # X-Amz-Expires of a presigned request

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


# --- encoding ---------------------------------------------------------------------------


def _unquote(raw: bytes, *, plus: bool) -> bytes:
    if _BAD_ESCAPE.search(raw):
        raise SigV4Error("InvalidArgument", "The request URI holds a malformed %-escape.")
    return unquote_to_bytes(raw.replace(b"+", b" ") if plus else raw)


def _query_pairs(query: bytes) -> list[tuple[bytes, bytes]]:
    """Decoded (name, value) pairs; empty segments (``a&&b``) carry nothing and are skipped."""
    pairs = []
    for part in query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            pairs.append((_unquote(name, plus=True), _unquote(value, plus=True)))
    return pairs


def _canonical_uri(path: bytes) -> str:
    return quote_from_bytes(_unquote(path, plus=False), safe="/~") or "/"


def _canonical_query(query: bytes, *, presigned: bool) -> str:
    pairs = sorted(
        (quote_from_bytes(n, safe="~"), quote_from_bytes(v, safe="~"))
        for n, v in _query_pairs(query)
        if not (presigned and n == b"X-Amz-Signature")
    )
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_request(
    method: bytes,
    target: bytes,
    headers: Headers,
    signed_headers: Sequence[str],
    payload_hash: str,
    *,
    presigned: bool,
) -> bytes:
    """The SigV4 canonical request of S3 (see the module's rules)."""
    if not target.startswith(b"/"):
        raise SigV4Error("InvalidRequest", "The request target must be an absolute path.")
    path, _, query = target.partition(b"?")
    lines = [
        method,
        _canonical_uri(path).encode("ascii"),
        _canonical_query(query, presigned=presigned).encode("ascii"),
    ]
    for name in signed_headers:
        key = name.encode("ascii")
        values = [b" ".join(v.split()) for n, v in headers if n == key]
        if not values:
            raise SigV4Error("AccessDenied", f"The signed header {name} is not in the request.")
        lines.append(key + b":" + b",".join(values))
    lines += [b"", ";".join(signed_headers).encode("ascii"), payload_hash.encode("ascii")]
    return b"\n".join(lines)


@functools.lru_cache(maxsize=SIGNING_KEYS)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The day's key (four HMACs); cached, as every request of a key on one day uses the
    same one."""
    key = hmac.digest(b"AWS4" + secret.encode("utf-8"), date.encode("ascii"), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode("ascii"), "sha256")
    return key


def string_to_sign(amz_date: str, scope: str, canonical: bytes) -> bytes:
    digest = hashlib.sha256(canonical).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}".encode("ascii")


def _hmac_hex(key: bytes, msg: bytes) -> str:
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


# --- parsing ----------------------------------------------------------------------------


def _one(headers: Headers, name: bytes) -> bytes | None:
    values = [v for n, v in headers if n == name]
    if len(values) > 1:
        raise SigV4Error("InvalidArgument", f"The {name.decode()} header is repeated.")
    return values[0] if values else None


def _text(raw: bytes, code: str, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise SigV4Error(code, f"The {what} is not ASCII.") from None


def _credential(value: str, code: str) -> tuple[str, str, str, str]:
    parts = value.rsplit("/", 4)
    if (
        len(parts) != 5
        or not _ACCESS_KEY.fullmatch(parts[0])
        or not _DATE.fullmatch(parts[1])
        or not _REGION.fullmatch(parts[2])
        or not _SERVICE.fullmatch(parts[3])
        or parts[4] != "aws4_request"
    ):
        raise SigV4Error(code, "The credential must be <key>/<YYYYMMDD>/<region>/s3/aws4_request.")
    return parts[0], parts[1], parts[2], parts[3]


def _signed_headers(value: str, code: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not all(_HEADER_NAME.fullmatch(n) for n in names) or len(set(names)) != len(names):
        raise SigV4Error(code, "SignedHeaders must list distinct lower-case header names.")
    if "host" not in names:
        raise SigV4Error(code, "The host header must be signed.")
    return names


def _algorithm(value: str, *, query: bool) -> None:
    if value.startswith("AWS4-ECDSA-P256-SHA256"):
        raise SigV4Error("InvalidRequest", "SigV4A (AWS4-ECDSA-P256-SHA256) is not supported.")
    if value == ALGORITHM:
        return
    if query:
        raise SigV4Error(
            "AuthorizationQueryParametersError",
            'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256".',
        )
    raise SigV4Error(
        "InvalidRequest",
        "The authorization mechanism you have provided is not supported. "
        "Please use AWS4-HMAC-SHA256.",
    )


def _payload_hash(value: bytes) -> str:
    text = value.decode("ascii", "replace")
    if text.startswith("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"):
        raise SigV4Error("InvalidRequest", "SigV4A (ECDSA) streaming payloads are not supported.")
    if text in _PAYLOAD_LITERALS or _HEX64.fullmatch(text):
        return text
    raise SigV4Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value or a "
        "lower-case hex SHA-256 digest.",
    )


def _iso_date(value: str) -> str | None:
    """``value`` if it is a real YYYYMMDDTHHMMSSZ time, else None."""
    try:
        return value if _AMZ_DATE.fullmatch(value) and _epoch_s(value) is not None else None
    except ValueError:
        return None


def _header_date(headers: Headers) -> str:
    """The signed time of header auth: x-amz-date, or else an HTTP Date header."""
    amz, http, found = _one(headers, b"x-amz-date"), _one(headers, b"date"), None
    if amz is not None:
        found = _iso_date(amz.decode("ascii", "replace"))
    elif http is not None:
        try:  # HTTP dates are UTC; "-0000" (botocore's) parses as naive: UTC too
            moment = parsedate_to_datetime(http.decode("ascii", "replace"))
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
            found = _iso_date(moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"))
        except (ValueError, TypeError, OverflowError):
            pass
    if found is None:
        raise SigV4Error(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header."
        )
    return found


def parse_request(method: bytes, target: bytes, headers: Headers) -> SignedRequest | None:
    """The SigV4 authorization a request carries, or None for an anonymous request.

    Checks the form only (no secret, no clock): ``verify`` checks the signature.
    """
    auth = [v for n, v in headers if n == b"authorization"]
    query = [(n, v) for n, v in _query_pairs(target.partition(b"?")[2]) if n.startswith(b"X-Amz-")]
    presigned = any(
        n in (b"X-Amz-Algorithm", b"X-Amz-Credential", b"X-Amz-Signature") for n, _ in query
    )
    if auth and presigned:
        raise SigV4Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
            "or the Authorization header should be specified.",
        )
    if presigned:
        return _parse_query(query, headers)
    if not auth:
        return None
    if len(auth) > 1:
        raise SigV4Error("InvalidArgument", "The Authorization header is repeated.")
    return _parse_header(
        _text(auth[0], "AuthorizationHeaderMalformed", "Authorization header"), headers
    )


def _parse_header(value: str, headers: Headers) -> SignedRequest:
    code = "AuthorizationHeaderMalformed"
    algorithm, _, rest = value.partition(" ")
    _algorithm(algorithm, query=False)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, val = part.strip().partition("=")
        if not eq or key not in ("Credential", "SignedHeaders", "Signature") or key in fields:
            raise SigV4Error(code, "The authorization header is malformed.")
        fields[key] = val
    if len(fields) != 3:
        raise SigV4Error(
            code, "The authorization header needs Credential, SignedHeaders and Signature."
        )
    scope = _credential(fields["Credential"], code)
    names = _signed_headers(fields["SignedHeaders"], code)
    if not _HEX64.fullmatch(fields["Signature"]):
        raise SigV4Error(code, "The signature must be 64 lower-case hex digits.")
    content = _one(headers, b"x-amz-content-sha256")
    if content is None:
        raise SigV4Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    payload = _payload_hash(content)
    return SignedRequest(
        *scope, _header_date(headers), names, fields["Signature"], payload, False, None
    )


def _parse_query(query: list[tuple[bytes, bytes]], headers: Headers) -> SignedRequest:
    code = "AuthorizationQueryParametersError"
    params: dict[bytes, str] = {}
    for name, value in query:
        if name in params:
            raise SigV4Error(code, "An X-Amz-* query parameter is repeated.")
        params[name] = _text(value, code, "value of an X-Amz-* query parameter")
    if any(p not in params for p in _PRESIGN_PARAMS):
        raise SigV4Error(
            code,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
            "X-Amz-Expires parameters.",
        )
    _algorithm(params[b"X-Amz-Algorithm"], query=True)
    scope = _credential(params[b"X-Amz-Credential"], code)
    names = _signed_headers(params[b"X-Amz-SignedHeaders"], code)
    expires = params[b"X-Amz-Expires"]
    if not expires.isdigit() or len(expires) > 7 or not 1 <= int(expires) <= MAX_EXPIRES_S:
        raise SigV4Error(code, "X-Amz-Expires must be between 1 and 604800 seconds.")
    signature = params[b"X-Amz-Signature"]
    if not _HEX64.fullmatch(signature):
        raise SigV4Error(code, "X-Amz-Signature must be 64 lower-case hex digits.")
    amz_date = _iso_date(params[b"X-Amz-Date"])
    if amz_date is None:
        raise SigV4Error(code, "X-Amz-Date must be in the ISO8601 Long Format yyyyMMddTHHmmssZ.")
    content = params.get(b"X-Amz-Content-Sha256")
    raw = content.encode("ascii") if content is not None else _one(headers, b"x-amz-content-sha256")
    payload = _payload_hash(raw) if raw is not None else UNSIGNED_PAYLOAD
    return SignedRequest(*scope, amz_date, names, signature, payload, True, int(expires))


# --- verifying and signing --------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _epoch_s(amz_date: str) -> int:
    """Seconds since the epoch of a YYYYMMDDTHHMMSSZ time (ValueError if not a real one)."""
    moment = datetime(
        int(amz_date[0:4]),
        int(amz_date[4:6]),
        int(amz_date[6:8]),
        int(amz_date[9:11]),
        int(amz_date[11:13]),
        int(amz_date[13:15]),
        tzinfo=UTC,
    )
    return calendar.timegm(moment.utctimetuple())


def verify(
    req: SignedRequest,
    secret: str,
    method: bytes,
    target: bytes,
    headers: Headers,
    now_ns: int,
    *,
    max_skew_s: int = MAX_SKEW_S,
    region: str | None = None,
    service: str = "s3",
) -> bytes:
    """Check ``req`` (from ``parse_request`` on the same request) against ``secret``.

    Returns the signing key, for the body's chunk signatures (``ChunkChain``). ``region``,
    when given, is the only region accepted. The payload hash is checked only for form:
    comparing it with the body is the caller's (the body has not arrived yet).
    """
    code = "AuthorizationQueryParametersError" if req.presigned else "AuthorizationHeaderMalformed"
    if req.date != req.amz_date[:8]:
        raise SigV4Error(code, "Invalid credential date. Date is not the same as X-Amz-Date.")
    if req.service != service:
        raise SigV4Error(code, f"The credential scope is for {req.service!r}, not {service!r}.")
    if region is not None and req.region != region:
        raise SigV4Error(code, f"The region {req.region!r} is wrong; expecting {region!r}.")
    now_s, signed_s = now_ns // 1_000_000_000, _epoch_s(req.amz_date)
    if req.presigned:
        if now_s < signed_s - max_skew_s:
            raise SigV4Error("AccessDenied", "Request is not valid yet")
        if now_s > signed_s + (req.expires_s or 0):
            raise SigV4Error("AccessDenied", "Request has expired")
    elif abs(now_s - signed_s) > max_skew_s:
        raise SigV4Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the server's time is too large.",
        )
    canonical = canonical_request(
        method, target, headers, req.signed_headers, req.payload_hash, presigned=req.presigned
    )
    key = signing_key(secret, req.date, req.region, req.service)
    expected = _hmac_hex(key, string_to_sign(req.amz_date, req.scope, canonical))
    if not _same(expected, req.signature):
        raise SigV4Error("SignatureDoesNotMatch", _MISMATCH)
    # Headers the string to sign covers even when SignedHeaders leaves them out.
    bound = {b"x-amz-content-sha256": req.payload_hash.encode("ascii")}
    if not req.presigned:
        bound[b"x-amz-date"] = req.amz_date.encode("ascii")
    signed = {n.encode("ascii") for n in req.signed_headers}
    signed |= {n for n, v in bound.items() if _one(headers, n) == v}
    unsigned = sorted({n for n, _ in headers if n.startswith(b"x-amz-")} - signed)
    if unsigned:
        raise SigV4Error(
            "AccessDenied",
            "There were headers present in the request which were not signed: "
            + ", ".join(n.decode("ascii", "replace") for n in unsigned),
        )
    return key


def strip_presign_query(target: bytes) -> bytes:
    """``target`` without a presigned URL's signature parameters (the rest byte for byte),
    for a request the gateway signs again with an Authorization header."""
    path, sep, query = target.partition(b"?")
    drop = (*_PRESIGN_PARAMS, b"X-Amz-Security-Token")
    kept = [
        p for p in query.split(b"&") if p and _unquote(p.partition(b"=")[0], plus=True) not in drop
    ]
    return path + (b"?" + b"&".join(kept) if kept else b"") if sep else target


def sign_headers(
    method: bytes,
    target: bytes,
    headers: Headers,
    *,
    access_key: str,
    secret: str,
    region: str,
    service: str,
    amz_date: str,
    payload_hash: str,
    signed_headers: Iterable[str] | None = None,
) -> tuple[list[tuple[bytes, bytes]], str]:
    """Sign a request with an Authorization header, as botocore's S3SigV4Auth does.

    ``headers`` are the ones to be sent (``host`` among them); ``x-amz-date`` and
    ``x-amz-content-sha256`` are set, an existing ``authorization`` is replaced. Signed:
    every header but botocore's hop-by-hop list, or, when ``signed_headers`` is given,
    those present of them plus ``host``, ``x-amz-date``, ``x-amz-content-sha256`` and
    every ``x-amz-*`` header. Returns the headers and the (seed) signature.
    """
    if _iso_date(amz_date) is None:
        raise ValueError("amz_date must be YYYYMMDDTHHMMSSZ")
    if payload_hash not in _PAYLOAD_LITERALS and not _HEX64.fullmatch(payload_hash):
        raise ValueError("payload_hash must be a SHA-256 hex digest or an S3 literal")
    replaced = (b"authorization", b"x-amz-date", b"x-amz-content-sha256")
    out = [(n, v) for n, v in headers if n not in replaced]
    out += [
        (b"x-amz-date", amz_date.encode("ascii")),
        (b"x-amz-content-sha256", payload_hash.encode("ascii")),
    ]
    present = {n for n, _ in out}
    if b"host" not in present:
        raise ValueError("a signed request needs a host header")
    if signed_headers is None:
        chosen = present - _UNSIGNABLE
    else:
        wanted = {n.encode("ascii") for n in signed_headers} | set(replaced[1:]) | {b"host"}
        chosen = (wanted & present) | {n for n in present if n.startswith(b"x-amz-")}
    names = sorted(n.decode("ascii") for n in chosen)
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical = canonical_request(method, target, out, names, payload_hash, presigned=False)
    key = signing_key(secret, date, region, service)
    signature = _hmac_hex(key, string_to_sign(amz_date, scope, canonical))
    auth = f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, "
    out.append((b"authorization", f"{auth}Signature={signature}".encode("ascii")))
    return out, signature


# --- aws-chunked signatures ---------------------------------------------------------------


def chunk_string_to_sign(amz_date: str, scope: str, prev_sig: str, chunk_sha256_hex: str) -> bytes:
    return "\n".join(
        ("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev_sig, EMPTY_SHA256, chunk_sha256_hex)
    ).encode("ascii")


def trailer_string_to_sign(amz_date: str, scope: str, prev_sig: str, trailer_bytes: bytes) -> bytes:
    """``trailer_bytes``: the trailing headers as AWS signs them, ``name:value\\n`` each
    (``chunked.trailer_bytes`` builds them)."""
    digest = hashlib.sha256(trailer_bytes).hexdigest()
    return "\n".join(("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev_sig, digest)).encode(
        "ascii"
    )


class ChunkChain:
    """The signature chain of an ``aws-chunked`` body: each chunk's signature covers the
    previous one, starting from the request's (seed) signature. Every call advances it."""

    __slots__ = ("_amz_date", "_key", "_scope", "prev")

    def __init__(self, key: bytes, amz_date: str, scope: str, seed: str) -> None:
        self._key = key
        self._amz_date = amz_date
        self._scope = scope
        self.prev = seed

    def _advance(self, sts: bytes) -> str:
        self.prev = _hmac_hex(self._key, sts)
        return self.prev

    def sign(self, chunk_sha256_hex: str) -> str:
        return self._advance(
            chunk_string_to_sign(self._amz_date, self._scope, self.prev, chunk_sha256_hex)
        )

    def sign_trailer(self, trailer_bytes: bytes) -> str:
        return self._advance(
            trailer_string_to_sign(self._amz_date, self._scope, self.prev, trailer_bytes)
        )

    def verify(self, chunk_sha256_hex: str, signature: str) -> None:
        prev = self.prev
        if not _same(self.sign(chunk_sha256_hex), signature):
            self.prev = prev
            raise SigV4Error("SignatureDoesNotMatch", _MISMATCH)

    def verify_trailer(self, trailer_bytes: bytes, signature: str) -> None:
        prev = self.prev
        if not _same(self.sign_trailer(trailer_bytes), signature):
            self.prev = prev
            raise SigV4Error("SignatureDoesNotMatch", _MISMATCH)
