"""sigv4.py: S3's Signature Version 4, held to two oracles.

- botocore (what boto3 and the AWS CLI send): requests signed by ``S3SigV4Auth`` (header
  auth, payload hash or UNSIGNED-PAYLOAD or a streaming literal) and ``S3SigV4QueryAuth``
  (presigned URLs) for awkward keys and queries must verify, and any one-byte change to
  what they sign must not; ``sign_headers`` must produce botocore's very header.
- AWS's published S3 examples (GET Object with Range, PUT Object, GET Bucket lifecycle,
  GET Bucket list objects, the presigned GET, and the chunked upload's seed and chunk
  signatures), with the example keys and 2013-05-24T00:00:00Z. Every value below was
  confirmed against independent implementations quoting the AWS pages.
"""

from __future__ import annotations

import calendar
import hashlib
from datetime import datetime
from unittest import mock
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.s3 import sigv4
from ledgergate.wire.s3.sigv4 import (
    EMPTY_SHA256,
    ChunkChain,
    SignedRequest,
    SigV4Error,
    canonical_request,
    parse_request,
    sign_headers,
    signing_key,
    strip_presign_query,
    verify,
)

Headers = list[tuple[bytes, bytes]]
AK, SECRET, REGION = "LGTESTKEY2345ABCDEFG", "s3cr3t/with+odd=chars~", "eu-west-3"
FIXED = datetime(2024, 3, 5, 12, 34, 56)  # naive UTC, as botocore's clock gives it
NOW_NS = calendar.timegm(FIXED.timetuple()) * 1_000_000_000
MIN = 60 * 1_000_000_000
ENDPOINT = "http://127.0.0.1:9000"
# sign_headers' keywords but the payload hash: ours, and those of AWS's examples.
OURS = {"access_key": AK, "secret": SECRET, "region": REGION, "service": "s3",
        "amz_date": "20240305T123456Z"}  # fmt: skip

KEYS = [
    "plain.txt",
    "with space and  two.txt",
    "ünïcødé/日本語/🙂.bin",
    "a+b=c~d%e&f.txt",
    "dir/sub dir//double/",
    "!'()*$,;:@[]",
    "tilde~under_score-dash.dot",
]
QUERIES = [
    "",
    "uploads",
    "list-type=2&prefix=a%2Fb",
    "list-type=2&prefix=&delimiter=%2F&max-keys=10&start-after=x%20y%2Bz",
    "partNumber=3&uploadId=abc%2Bdef%3D%3D",
    "tagging&versionId=v1",
    "delete",
    "a=1&a=0&b=",
]


def host_of(url: str) -> bytes:
    return botocore.auth._host_from_url(url).encode()


def as_wire(req: AWSRequest) -> tuple[bytes, bytes, Headers]:
    """What the gateway would see: method, raw target and lower-cased headers."""
    parts = urlsplit(req.url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    headers = [(k.lower().encode(), str(v).encode("latin-1")) for k, v in req.headers.items()]
    if not any(n == b"host" for n, _ in headers):  # the HTTP client adds it
        headers.insert(0, (b"host", host_of(req.url)))
    return req.method.encode(), target.encode(), headers


def botocore_signed(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    presign: int | None = None,
    unsigned_payload: bool = False,
    trailer: bool = False,
    secret: str = SECRET,
) -> tuple[bytes, bytes, Headers]:
    req = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    if unsigned_payload:
        req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    if trailer:
        req.context["checksum"] = {
            "request_algorithm": {"in": "trailer", "name": "x-amz-checksum-crc32"}
        }
    creds = Credentials(AK, secret)
    signer: S3SigV4Auth | S3SigV4QueryAuth
    if presign is not None:
        signer = S3SigV4QueryAuth(creds, "s3", REGION, expires=presign)
    else:
        signer = S3SigV4Auth(creds, "s3", REGION)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=FIXED):
        signer.add_auth(req)
    return as_wire(req)


def check(method: bytes, target: bytes, headers: Headers, now_ns: int = NOW_NS, **kw: str) -> bytes:
    req = parse_request(method, target, headers)
    assert req is not None
    return verify(req, kw.get("secret", SECRET), method, target, headers, now_ns)


def url_for(key: str, query: str = "") -> str:
    return f"{ENDPOINT}/bucket/{quote(key, safe='/~')}" + (f"?{query}" if query else "")


# --- botocore as the oracle -----------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("query", QUERIES)
def test_botocore_header_auth_verifies(key: str, query: str) -> None:
    body = b"payload of " + key.encode()
    method, target, headers = botocore_signed("PUT", url_for(key, query), {}, body)
    req = parse_request(method, target, headers)
    assert req is not None and not req.presigned
    assert req.payload_hash == hashlib.sha256(body).hexdigest()
    assert (req.access_key, req.region, req.service) == (AK, REGION, "s3")
    assert req.amz_date == "20240305T123456Z" and req.scope == f"20240305/{REGION}/s3/aws4_request"
    key_bytes = verify(req, SECRET, method, target, headers, NOW_NS)
    assert key_bytes == signing_key(SECRET, "20240305", REGION, "s3")


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("query", QUERIES)
def test_botocore_presigned_url_verifies(key: str, query: str) -> None:
    method, target, headers = botocore_signed("GET", url_for(key, query), presign=900)
    req = parse_request(method, target, headers)
    assert req is not None and req.presigned and req.expires_s == 900
    assert req.payload_hash == "UNSIGNED-PAYLOAD" and req.signed_headers == ("host",)
    verify(req, SECRET, method, target, headers, NOW_NS)


@pytest.mark.parametrize(
    ("kw", "payload"),
    [
        ({"unsigned_payload": True}, "UNSIGNED-PAYLOAD"),
        ({"trailer": True}, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
    ],
)
def test_botocore_unsigned_and_streaming_payloads_verify(kw: dict[str, bool], payload: str) -> None:
    url = "https" + url_for("k", "partNumber=1&uploadId=u")[4:]
    extra = {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==", "x-amz-meta-Owner": "  two   spaces "}
    method, target, headers = botocore_signed("PUT", url, extra, b"", **kw)  # type: ignore[arg-type]
    req = parse_request(method, target, headers)
    assert req is not None and req.payload_hash == payload
    verify(req, SECRET, method, target, headers, NOW_NS)


def test_botocore_with_a_date_header_instead_of_x_amz_date() -> None:
    # botocore signs Date (an HTTP date) when the request has one, and no x-amz-date.
    method, target, headers = botocore_signed(
        "GET", url_for("k"), {"Date": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert not any(n == b"x-amz-date" for n, _ in headers)
    req = parse_request(method, target, headers)
    assert req is not None and req.amz_date == "20240305T123456Z"
    verify(req, SECRET, method, target, headers, NOW_NS)


_key_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
_params = st.dictionaries(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10).filter(
        lambda n: not n.startswith("X-Amz-")
    ),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
    max_size=5,
)


@given(key=_key_text, params=_params, presign=st.booleans())
def test_any_key_and_query_botocore_signs_verifies(
    key: str, params: dict[str, str], presign: bool
) -> None:
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params.items())
    method, target, headers = botocore_signed(
        "GET", url_for(key, query), presign=600 if presign else None
    )
    check(method, target, headers)


# --- what must not verify -------------------------------------------------------------


def signed_samples() -> list[tuple[str, bytes, bytes, Headers]]:
    url = url_for("ü dir/o+bj~1.txt", "list-type=2&prefix=a%2Fb&uploads")
    extra = {"x-amz-meta-color": "blue", "Content-Type": "text/plain"}
    return [
        ("header", *botocore_signed("PUT", url, extra, b"body bytes")),
        ("presigned", *botocore_signed("GET", url, presign=3600)),
    ]


SAMPLES = signed_samples()


def refused(method: bytes, target: bytes, headers: Headers, **kw: int | str) -> SigV4Error:
    with pytest.raises(SigV4Error) as info:
        req = parse_request(method, target, headers)
        assert req is not None
        verify(
            req, str(kw.get("secret", SECRET)), method, target, headers, int(kw.get("now", NOW_NS))
        )
    return info.value


def one_byte_changes(data: bytes) -> list[bytes]:
    return [
        data[:i] + (b"q" if data[i : i + 1] != b"q" else b"r") + data[i + 1 :]
        for i in range(len(data))
    ]


@pytest.mark.parametrize("sample", range(2))
def test_every_one_byte_change_is_refused(sample: int) -> None:
    kind, method, target, headers = SAMPLES[sample]
    check(method, target, headers)
    for bad in one_byte_changes(method):
        assert refused(bad, target, headers).code == "SignatureDoesNotMatch"
    for bad in one_byte_changes(target):
        try:
            anonymous = parse_request(method, bad, headers) is None
        except SigV4Error:
            continue  # refused already
        if not anonymous:  # e.g. the '?' changed: no signature left to check
            refused(method, bad, headers)
    req = parse_request(method, target, headers)
    assert req is not None
    for i, (name, value) in enumerate(headers):
        if name.decode() not in req.signed_headers:
            continue
        for bad in one_byte_changes(value):
            changed = [*headers[:i], (name, bad), *headers[i + 1 :]]
            refused(method, target, changed)
    if kind == "header":
        auth = dict(headers)[b"authorization"]
        at = auth.index(b"Signature=") + len(b"Signature=")
        for i in range(at, len(auth)):
            bad = auth[:i] + (b"0" if auth[i : i + 1] != b"0" else b"1") + auth[i + 1 :]
            changed = [(n, bad if n == b"authorization" else v) for n, v in headers]
            assert refused(method, target, changed).code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("sample", range(2))
def test_wrong_secret_is_refused(sample: int) -> None:
    _, method, target, headers = SAMPLES[sample]
    for secret in (SECRET + "x", SECRET[:-1], "", SECRET.upper()):
        assert refused(method, target, headers, secret=secret).code == "SignatureDoesNotMatch"


def test_clock_skew_of_header_auth() -> None:
    _, method, target, headers = SAMPLES[0]
    for ok in (-15 * MIN, 14 * MIN, 15 * MIN):
        check(method, target, headers, NOW_NS + ok)
    for skew in (-16 * MIN, 16 * MIN, 24 * 60 * MIN):
        err = refused(method, target, headers, now=NOW_NS + skew)
        assert err.code == "RequestTimeTooSkewed"


def test_presigned_url_lifetime() -> None:
    method, target, headers = botocore_signed("GET", url_for("k"), presign=120)
    check(method, target, headers, NOW_NS + 120 * 1_000_000_000)  # the last valid second
    check(method, target, headers, NOW_NS - 15 * MIN)
    err = refused(method, target, headers, now=NOW_NS + 121 * 1_000_000_000)
    assert (err.code, err.message) == ("AccessDenied", "Request has expired")
    assert refused(method, target, headers, now=NOW_NS - 16 * MIN).code == "AccessDenied"


def test_unsigned_amz_header_is_refused() -> None:
    _, method, target, headers = SAMPLES[0]
    err = refused(method, target, [*headers, (b"x-amz-acl", b"public-read")])
    assert err.code == "AccessDenied" and "x-amz-acl" in err.message
    # A header that is not x-amz-* may ride along unsigned, as S3 allows.
    check(method, target, [*headers, (b"user-agent", b"curl/8")])


def test_errors_never_carry_secrets_or_signatures() -> None:
    _, method, target, headers = SAMPLES[0]
    req = parse_request(method, target, headers)
    assert req is not None
    key = signing_key(SECRET, req.date, req.region, req.service)
    canonical = canonical_request(
        method, target, headers, req.signed_headers, req.payload_hash, presigned=False
    )
    good = sigv4._hmac_hex(key, sigv4.string_to_sign(req.amz_date, req.scope, canonical))
    err = refused(method, target, headers, secret="other")
    for leaked in (SECRET, "other", good, key.hex()):
        assert leaked not in str(err) and leaked not in err.message


# --- parse_request: anonymous, and malformed authorization ----------------------------


def test_anonymous_requests() -> None:
    host = [(b"host", b"h")]
    assert parse_request(b"GET", b"/b/k", host) is None
    assert parse_request(b"GET", b"/b?list-type=2&X-Amz-Date=20240305T123456Z", host) is None


GOOD_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AK/20240305/eu-west-3/s3/aws4_request,"
    "SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=" + "a" * 64
)
BASE = [
    (b"host", b"h"),
    (b"x-amz-date", b"20240305T123456Z"),
    (b"x-amz-content-sha256", EMPTY_SHA256.encode()),
]
PRESIGNED = (
    "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20240305%2Feu-west-3%2Fs3"
    "%2Faws4_request&X-Amz-Date=20240305T123456Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=" + "b" * 64
)


def with_auth(value: str, headers: Headers = BASE) -> Headers:
    return [*headers, (b"authorization", value.encode())]


def test_the_well_formed_samples_parse() -> None:
    req = parse_request(b"GET", b"/b/k", with_auth(GOOD_AUTH))
    expected = SignedRequest("AK", "20240305", "eu-west-3", "s3", "20240305T123456Z",
                             ("host", "x-amz-content-sha256", "x-amz-date"), "a" * 64,
                             EMPTY_SHA256, False, None)  # fmt: skip
    assert req == expected
    # botocore's ", " separators and any spacing between the parts are the same.
    assert parse_request(b"GET", b"/b/k", with_auth(GOOD_AUTH.replace(",", " ,  "))) == req
    presigned = parse_request(b"GET", PRESIGNED.encode(), [(b"host", b"h")])
    assert presigned is not None and presigned.presigned and presigned.expires_s == 60


SIGV4A = GOOD_AUTH.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")
AHM, AQP = "AuthorizationHeaderMalformed", "AuthorizationQueryParametersError"
SHA = b"x-amz-content-sha256"
# (name, Authorization values, headers whose values change ([]: removed), code)
HEADER_CASES: list[tuple[str, list[str], dict[bytes, list[bytes]], str]] = [
    ("missing content sha", [GOOD_AUTH], {SHA: []}, "InvalidRequest"),
    ("bad content sha", [GOOD_AUTH], {SHA: [b"abc"]}, "InvalidArgument"),
    ("upper-case digest", [GOOD_AUTH], {SHA: [EMPTY_SHA256.upper().encode()]}, "InvalidArgument"),
    ("ecdsa payload", [GOOD_AUTH], {SHA: [b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"]},
     "InvalidRequest"),
    ("sigv4a", [SIGV4A], {}, "InvalidRequest"),
    ("sigv2", ["AWS AK:c2lnbmF0dXJl"], {}, "InvalidRequest"),
    ("duplicate parameter", [GOOD_AUTH + ",Signature=" + "a" * 64], {}, AHM),
    ("unknown parameter", [GOOD_AUTH + ",Foo=bar"], {}, AHM),
    ("missing parameter", [GOOD_AUTH.split(",Signature")[0]], {}, AHM),
    ("trailing comma", [GOOD_AUTH + ","], {}, AHM),
    ("host unsigned", [GOOD_AUTH.replace("host;", "")], {}, AHM),
    ("upper-case header name", [GOOD_AUTH.replace("host;", "Host;")], {}, AHM),
    ("repeated signed header", [GOOD_AUTH.replace("host;", "host;host;")], {}, AHM),
    ("short signature", [GOOD_AUTH[:-1]], {}, AHM),
    ("upper-case signature", [GOOD_AUTH[:-64] + "A" * 64], {}, AHM),
    ("bad credential", [GOOD_AUTH.replace("aws4_request", "aws5_request")], {}, AHM),
    ("bad credential date", [GOOD_AUTH.replace("/20240305/", "/2024035/")], {}, AHM),
    ("no date", [GOOD_AUTH], {b"x-amz-date": []}, "AccessDenied"),
    ("bad x-amz-date", [GOOD_AUTH], {b"x-amz-date": [b"20241305T123456Z"]}, "AccessDenied"),
    ("bad date", [GOOD_AUTH], {b"x-amz-date": [], b"date": [b"yesterday"]}, "AccessDenied"),
    ("repeated x-amz-date", [GOOD_AUTH], {b"x-amz-date": [b"20240305T123456Z"] * 2},
     "InvalidArgument"),
    ("two authorization headers", [GOOD_AUTH, GOOD_AUTH], {}, "InvalidArgument"),
    ("non-ascii authorization", [GOOD_AUTH + "\xff"], {}, AHM),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "auth", "changes", "code"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES]
)
def test_malformed_header_auth(
    name: str, auth: list[str], changes: dict[bytes, list[bytes]], code: str
) -> None:
    headers = [(n, w) for n, v in BASE for w in changes.get(n, [v])]
    headers += [(n, w) for n, vs in changes.items() if n not in dict(BASE) for w in vs]
    headers += [(b"authorization", a.encode("latin-1")) for a in auth]
    with pytest.raises(SigV4Error) as info:
        parse_request(b"GET", b"/b/k", headers)
    assert info.value.code == code


QUERY_CASES = [
    ("sigv4a", PRESIGNED.replace("=AWS4-HMAC-SHA256", "=AWS4-ECDSA-P256-SHA256"), "InvalidRequest"),
    ("other algorithm", PRESIGNED.replace("=AWS4-HMAC-SHA256", "=AWS4-HMAC-SHA1"), AQP),
    ("repeated parameter", PRESIGNED + "&X-Amz-Expires=60", AQP),
    ("missing expires", PRESIGNED.replace("&X-Amz-Expires=60", ""), AQP),
    ("missing signature", PRESIGNED.split("&X-Amz-Signature")[0], AQP),
    ("expires zero", PRESIGNED.replace("Expires=60", "Expires=0"), AQP),
    ("expires over a week", PRESIGNED.replace("Expires=60", "Expires=604801"), AQP),
    ("expires not a number", PRESIGNED.replace("Expires=60", "Expires=6e1"), AQP),
    ("host unsigned", PRESIGNED.replace("SignedHeaders=host", "SignedHeaders=range"), AQP),
    ("bad date", PRESIGNED.replace("Date=20240305T123456Z", "Date=20240305T12345Z"), AQP),
    ("bad escape", PRESIGNED.replace("%2F", "%zz", 1), "InvalidArgument"),
    ("bad content sha", PRESIGNED + "&X-Amz-Content-Sha256=x", "InvalidArgument"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "target", "code"), QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_malformed_presigned_auth(name: str, target: str, code: str) -> None:
    with pytest.raises(SigV4Error) as info:
        parse_request(b"GET", target.encode(), [(b"host", b"h")])
    assert info.value.code == code


def test_header_and_query_auth_together_are_refused() -> None:
    with pytest.raises(SigV4Error) as info:
        parse_request(b"GET", PRESIGNED.encode(), with_auth(GOOD_AUTH))
    assert info.value.code == "InvalidArgument"


def test_presigned_payload_hash_comes_from_query_then_header() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    host = [(b"host", b"h")]
    with_header = [*host, (b"x-amz-content-sha256", digest.encode())]
    req = parse_request(b"PUT", PRESIGNED.encode(), with_header)
    assert req is not None and req.payload_hash == digest
    req = parse_request(
        b"PUT", (PRESIGNED + "&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD").encode(), with_header
    )
    assert req is not None and req.payload_hash == "UNSIGNED-PAYLOAD"


def test_scope_checks() -> None:
    _, method, target, headers = SAMPLES[0]
    req = parse_request(method, target, headers)
    assert req is not None
    verify(req, SECRET, method, target, headers, NOW_NS, region=REGION)
    with pytest.raises(SigV4Error, match="AuthorizationHeaderMalformed"):
        verify(req, SECRET, method, target, headers, NOW_NS, region="us-east-1")
    with pytest.raises(SigV4Error, match="AuthorizationHeaderMalformed"):
        verify(req, SECRET, method, target, headers, NOW_NS, service="sts")
    other_day = SignedRequest(
        **{**{f: getattr(req, f) for f in req.__dataclass_fields__}, "date": "20240304"}
    )
    with pytest.raises(SigV4Error, match="not the same as X-Amz-Date"):
        verify(other_day, SECRET, method, target, headers, NOW_NS)


_FUZZ_NAMES = [
    b"host",
    b"authorization",
    b"x-amz-date",
    b"date",
    b"x-amz-content-sha256",
    b"x-amz-meta-a",
    b"range",
]


@given(
    target=st.binary(max_size=200),
    headers=st.lists(st.tuples(st.sampled_from(_FUZZ_NAMES), st.binary(max_size=150)), max_size=6),
)
def test_fuzz_random_requests_raise_only_sigv4_errors(target: bytes, headers: Headers) -> None:
    try:
        req = parse_request(b"GET", b"/" + target, headers)
        if req is not None:
            verify(req, SECRET, b"GET", b"/" + target, headers, NOW_NS)
    except SigV4Error as e:
        assert e.code and e.message


@given(
    sample=st.integers(0, 1),
    where=st.sampled_from(["target", "auth"]),
    edits=st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=3)), min_size=1, max_size=3),
)
def test_fuzz_edited_signed_requests_are_refused(
    sample: int, where: str, edits: list[tuple[int, bytes]]
) -> None:
    _, method, target, headers = SAMPLES[sample]
    original = target if where == "target" else dict(headers).get(b"authorization", target)
    buf = bytearray(original)
    for at, what in edits:
        at %= len(buf) + 1
        buf[at : at + 1] = what
    if bytes(buf) == original:
        return
    if where == "target":
        target = bytes(buf)
    else:
        headers = [(n, bytes(buf) if n == b"authorization" else v) for n, v in headers]
    try:
        req = parse_request(method, target, headers)
        if req is not None:  # what is left may be anonymous (say the '?' went)
            # The access key is bound by the secret looked up for it, not by the signature.
            secret = SECRET if req.access_key == AK else "the secret of another key"
            verify(req, secret, method, target, headers, NOW_NS)
            # Only an edit that changes nothing signed may pass: %7E for ~ or %2f for %2F
            # in the target, ", " for "," in the header. The claim and the canonical
            # request are then the very same.
            original_req = parse_request(*SAMPLES[sample][1:])
            assert req == original_req is not None
            assert canonical_request(
                method,
                target,
                headers,
                req.signed_headers,
                req.payload_hash,
                presigned=req.presigned,
            ) == (
                canonical_request(
                    *SAMPLES[sample][1:],
                    original_req.signed_headers,
                    original_req.payload_hash,
                    presigned=original_req.presigned,
                )
            )
    except SigV4Error:
        pass


# --- canonical forms --------------------------------------------------------------------


def canonical_lines(
    target: bytes,
    headers: Headers | None = None,
    signed: tuple[str, ...] = ("host",),
    presigned: bool = False,
) -> list[bytes]:
    hs = headers or [(b"host", b"h")]
    return canonical_request(
        b"GET", target, hs, signed, "UNSIGNED-PAYLOAD", presigned=presigned
    ).split(b"\n")


@pytest.mark.parametrize(
    ("target", "uri", "query"),
    [
        (b"/", b"/", b""),
        (b"/b/a%2Fb", b"/b/a/b", b""),  # decoded once, '/' kept
        (b"/b/a+b", b"/b/a%2Bb", b""),  # '+' in a path is a plus
        (b"/b/%7e%41~", b"/b/~A~", b""),  # unreserved characters are never escaped
        (b"/b//x/../y/.", b"/b//x/../y/.", b""),  # S3 does not normalise
        (b"/b/%c3%bc%20x", b"/b/%C3%BC%20x", b""),
        (b"/b?b=2&a=1&a=0", b"/b", b"a=0&a=1&b=2"),
        (b"/b?uploads", b"/b", b"uploads="),
        (b"/b?p=a+b&q=a%2Bb", b"/b", b"p=a%20b&q=a%2Bb"),  # '+' in a query is a space
        (b"/b?x=%2F/&&y", b"/b", b"x=%2F%2F&y="),
        (b"/b?Z=1&a=1&%5F=1", b"/b", b"Z=1&_=1&a=1"),  # by byte order of the encoded name
    ],
)
def test_canonical_uri_and_query(target: bytes, uri: bytes, query: bytes) -> None:
    assert canonical_lines(target)[1:3] == [uri, query]


def test_canonical_query_of_presigned_leaves_the_signature_out() -> None:
    assert canonical_lines(b"/?X-Amz-Signature=ab&z=1", presigned=True)[2] == b"z=1"
    assert canonical_lines(b"/?X-Amz-Signature=ab&z=1")[2] == b"X-Amz-Signature=ab&z=1"


def test_canonical_headers() -> None:
    headers = [(b"host", b"h"), (b"x-amz-meta-a", b"one  two\t three"), (b"x-amz-meta-a", b"4")]
    lines = canonical_lines(b"/", headers, ("host", "x-amz-meta-a"))
    assert lines[3:7] == [b"host:h", b"x-amz-meta-a:one two three,4", b"", b"host;x-amz-meta-a"]
    with pytest.raises(SigV4Error, match="AccessDenied"):
        canonical_lines(b"/", headers, ("host", "range"))


@pytest.mark.parametrize("target", [b"/b/%zz", b"/b/%4", b"/b?x=%g1", b"http://h/b", b"*"])
def test_malformed_targets_are_refused(target: bytes) -> None:
    with pytest.raises(SigV4Error):
        canonical_lines(target)


def test_strip_presign_query() -> None:
    assert strip_presign_query(PRESIGNED.encode()) == b"/b/k"
    t = b"/b/k?partNumber=1&X-Amz-Signature=x&uploadId=a%2Bb&X-Amz-Security-Token=t&x"
    assert strip_presign_query(t) == b"/b/k?partNumber=1&uploadId=a%2Bb&x"
    assert strip_presign_query(b"/b/k") == b"/b/k"


# --- sign_headers against botocore ------------------------------------------------------


@pytest.mark.parametrize("key", KEYS[:4])
@pytest.mark.parametrize("query", QUERIES[:4])
def test_sign_headers_is_what_botocore_sends(key: str, query: str) -> None:
    extra = {"Content-Type": "text/plain", "x-amz-meta-note": " a  b ", "Content-MD5": "x=="}
    body = b"some body"
    method, target, boto = botocore_signed("PUT", url_for(key, query), extra, body)
    unsigned_input = [
        (n, v)
        for n, v in boto
        if n not in (b"authorization", b"x-amz-date", b"x-amz-content-sha256")
    ]
    out, seed = sign_headers(
        method, target, unsigned_input, **OURS, payload_hash=hashlib.sha256(body).hexdigest()
    )
    assert sorted(out) == sorted(boto)
    assert dict(out)[b"authorization"].endswith(b"Signature=" + seed.encode())
    check(method, target, out)


def test_sign_headers_replaces_and_leaves_hop_headers_unsigned() -> None:
    headers = [
        (b"host", b"backend:9000"),
        (b"authorization", b"AWS4-HMAC-SHA256 old"),
        (b"x-amz-date", b"19990101T000000Z"),
        (b"user-agent", b"client/1"),
        (b"transfer-encoding", b"chunked"),
        (b"x-amz-meta-k", b"v"),
    ]
    out, _ = sign_headers(b"GET", b"/b/k", headers, **OURS, payload_hash=EMPTY_SHA256)
    assert [n for n, _ in out].count(b"authorization") == 1
    assert dict(out)[b"x-amz-date"] == b"20240305T123456Z"
    req = parse_request(b"GET", b"/b/k", out)
    assert req is not None
    assert req.signed_headers == ("host", "x-amz-content-sha256", "x-amz-date", "x-amz-meta-k")
    verify(req, SECRET, b"GET", b"/b/k", out, NOW_NS)


def test_sign_headers_with_a_chosen_set() -> None:
    headers = [
        (b"host", b"h"),
        (b"content-type", b"a/b"),
        (b"x-amz-acl", b"private"),
        (b"range", b"bytes=1-2"),
    ]
    out, _ = sign_headers(
        b"GET", b"/", headers, **OURS, payload_hash=EMPTY_SHA256, signed_headers=["range", "absent"]
    )
    req = parse_request(b"GET", b"/", out)
    assert req is not None  # x-amz-* are always signed, content-type was not asked for
    assert req.signed_headers == (
        "host",
        "range",
        "x-amz-acl",
        "x-amz-content-sha256",
        "x-amz-date",
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"amz_date": "2024-03-05"}, "amz_date"),
        ({"payload_hash": "nope"}, "payload_hash"),
        ({"headers": [(b"x", b"y")]}, "host"),
    ],
)
def test_sign_headers_refuses_bad_input(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "headers": [(b"host", b"h")],
        "access_key": AK,
        "secret": SECRET,
        "region": REGION,
        "service": "s3",
        "amz_date": "20240305T123456Z",
        "payload_hash": EMPTY_SHA256,
    }
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        sign_headers(b"GET", b"/", **args)  # type: ignore[arg-type]


# --- AWS's published examples -------------------------------------------------------------

AWS_AK, AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_NOW = calendar.timegm((2013, 5, 24, 0, 0, 0)) * 1_000_000_000
AWS_HOST = (b"host", b"examplebucket.s3.amazonaws.com")
AWS_DATE = (b"x-amz-date", b"20130524T000000Z")
EMPTY = (b"x-amz-content-sha256", EMPTY_SHA256.encode())
WELCOME = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
AWS = {"access_key": AWS_AK, "secret": AWS_SECRET, "region": "us-east-1", "service": "s3",
       "amz_date": "20130524T000000Z"}  # fmt: skip
AWS_EXAMPLES = [
    (
        "GET Object",
        b"GET",
        b"/test.txt",
        [AWS_HOST, (b"range", b"bytes=0-9"), EMPTY, AWS_DATE],
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    ),
    (
        "PUT Object",
        b"PUT",
        b"/test%24file.text",
        [
            AWS_HOST,
            (b"date", b"Fri, 24 May 2013 00:00:00 GMT"),
            AWS_DATE,
            (b"x-amz-storage-class", b"REDUCED_REDUNDANCY"),
            (b"x-amz-content-sha256", WELCOME.encode()),
        ],
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    ),
    (
        "GET Bucket lifecycle",
        b"GET",
        b"/?lifecycle",
        [AWS_HOST, EMPTY, AWS_DATE],
        "host;x-amz-content-sha256;x-amz-date",
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    ),
    (
        "GET Bucket list objects",
        b"GET",
        b"/?max-keys=2&prefix=J",
        [AWS_HOST, EMPTY, AWS_DATE],
        "host;x-amz-content-sha256;x-amz-date",
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    ),
]


@pytest.mark.parametrize(
    ("name", "method", "target", "headers", "signed", "signature"),
    AWS_EXAMPLES,
    ids=[e[0] for e in AWS_EXAMPLES],
)
def test_aws_examples(
    name: str, method: bytes, target: bytes, headers: Headers, signed: str, signature: str
) -> None:
    auth = (
        f"AWS4-HMAC-SHA256 Credential={AWS_AK}/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders={signed},Signature={signature}"
    )
    req = parse_request(method, target, [*headers, (b"authorization", auth.encode())])
    assert req is not None
    verify(req, AWS_SECRET, method, target, headers, AWS_NOW)
    payload = dict(headers)[b"x-amz-content-sha256"].decode()
    out, seed = sign_headers(method, target, headers, **AWS, payload_hash=payload)
    assert seed == signature
    assert f"SignedHeaders={signed},".replace(",", ", ").encode() in dict(out)[b"authorization"]


def test_aws_presigned_example() -> None:
    target = (
        b"/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F"
        b"20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires="
        b"86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
        b"aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    req = parse_request(b"GET", target, [AWS_HOST])
    assert req is not None and req.expires_s == 86400 and req.access_key == AWS_AK
    verify(req, AWS_SECRET, b"GET", target, [AWS_HOST], AWS_NOW + 86400 * 1_000_000_000)
    with pytest.raises(SigV4Error, match="Request has expired"):
        verify(req, AWS_SECRET, b"GET", target, [AWS_HOST], AWS_NOW + 86401 * 1_000_000_000)
    with pytest.raises(SigV4Error, match="SignatureDoesNotMatch"):
        verify(
            req, AWS_SECRET, b"GET", target.replace(b"test.txt", b"test.txu"), [AWS_HOST], AWS_NOW
        )


STREAM_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
STREAM_CHUNKS = [
    (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]
STREAM_HEADERS = [
    (b"host", b"s3.amazonaws.com"),
    AWS_DATE,
    (b"x-amz-storage-class", b"REDUCED_REDUNDANCY"),
    (b"x-amz-content-sha256", b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
    (b"content-encoding", b"aws-chunked"),
    (b"x-amz-decoded-content-length", b"66560"),
    (b"content-length", b"66824"),
]


def test_aws_chunked_upload_example() -> None:
    auth = (
        f"AWS4-HMAC-SHA256 Credential={AWS_AK}/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        f"x-amz-decoded-content-length;x-amz-storage-class,Signature={STREAM_SEED}"
    )
    target = b"/examplebucket/chunkObject.txt"
    headers = [*STREAM_HEADERS, (b"authorization", auth.encode())]
    req = parse_request(b"PUT", target, headers)
    assert req is not None and req.payload_hash == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    key = verify(req, AWS_SECRET, b"PUT", target, headers, AWS_NOW)
    chain = ChunkChain(key, req.amz_date, req.scope, req.signature)
    for size, signature in STREAM_CHUNKS:
        chain.verify(hashlib.sha256(b"a" * size).hexdigest(), signature)
    # The gateway's side: the same seed and chain from sign_headers and sign().
    _, seed = sign_headers(
        b"PUT", target, STREAM_HEADERS, **AWS, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    )
    assert seed == STREAM_SEED
    out = ChunkChain(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", seed)
    assert [out.sign(hashlib.sha256(b"a" * n).hexdigest()) for n, _ in STREAM_CHUNKS] == [
        s for _, s in STREAM_CHUNKS
    ]


def test_chunk_chain_refuses_and_does_not_advance() -> None:
    key = signing_key(AWS_SECRET, "20130524", "us-east-1", "s3")
    chain = ChunkChain(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", STREAM_SEED)
    first = hashlib.sha256(b"a" * 65536).hexdigest()
    for bad in (STREAM_CHUNKS[1][1], "", "x" * 64, STREAM_CHUNKS[0][1].upper(), "é" * 64):
        with pytest.raises(SigV4Error, match="SignatureDoesNotMatch"):
            chain.verify(first, bad)
        assert chain.prev == STREAM_SEED
    # Chunks out of order break the chain.
    with pytest.raises(SigV4Error):
        chain.verify(hashlib.sha256(b"a" * 1024).hexdigest(), STREAM_CHUNKS[1][1])
    chain.verify(first, STREAM_CHUNKS[0][1])
    assert chain.prev == STREAM_CHUNKS[0][1]


def test_trailer_signature() -> None:
    # Derived with the string to sign written out here (AWS publishes no trailer vector):
    # AWS4-HMAC-SHA256-TRAILER, the date, the scope, the previous signature, and the
    # SHA-256 of the canonical trailing headers, "name:value\n" each.
    key = signing_key(AWS_SECRET, "20130524", "us-east-1", "s3")
    trailer = b"x-amz-checksum-crc32:sOO8/Q==\n"
    sts = "\n".join(
        (
            "AWS4-HMAC-SHA256-TRAILER",
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            STREAM_CHUNKS[2][1],
            hashlib.sha256(trailer).hexdigest(),
        )
    ).encode()
    expected = sigv4._hmac_hex(key, sts)
    chain = ChunkChain(
        key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", STREAM_CHUNKS[2][1]
    )
    with pytest.raises(SigV4Error):
        chain.verify_trailer(trailer.replace(b"Q==", b"R=="), expected)
    chain.verify_trailer(trailer, expected)
    signer = ChunkChain(
        key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", STREAM_CHUNKS[2][1]
    )
    assert signer.sign_trailer(trailer) == expected == chain.prev
