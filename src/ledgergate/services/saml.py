"""SAML 2.0 service provider, gateway side: was this login vouched for by our IdP, for us, now?

Owns the SP's signing key pair (generated when missing), its metadata, the signed
AuthnRequests it sends (HTTP-Redirect) and every check on the Response that comes back to
the assertion consumer service (HTTP-POST), ending in ``Claims``. Signatures and
conditions are checked by pysaml2 with xmlsec1; nothing here does XML crypto by hand.
Every refusal is an ``IdentityError`` with a short reason code; a message never contains
the assertion. pysaml2's exceptions are translated here and do not leave this module.

Rules: the assertion itself must be signed by a key from the IdP's metadata (a signed
Response around an unsigned assertion is refused); the audience must be our entity id;
times allow ``clock_skew`` either way; unsolicited responses are refused: ``InResponseTo``
must name a request this SP sent, still outstanding, and it is consumed by the first
response carrying it, so replaying a response is refused. The provider is shared by
worker threads: one lock guards the outstanding requests and pysaml2's client.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import logging
import os
import shutil
import threading
import time
import traceback
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, SAMLError
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.response import IncorrectlySigned, StatusError, UnsolicitedResponse
from saml2.saml import NAMEID_FORMAT_TRANSIENT, NAMEID_FORMAT_UNSPECIFIED
from saml2.samlp import response_from_string
from saml2.sigver import SignatureError, SigverError
from saml2.time_util import str_to_time
from saml2.validate import ResponseLifetimeExceed, ToEarly
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from ledgergate.core.config import ConfigError, SamlSettings, parse_duration
from ledgergate.core.identity import Claims, IdentityError

# pysaml2 logs NameIDs, attributes and whole response documents (at INFO and ERROR) —
# personal data that does not belong in the gateway's log. What matters is in the
# refusal reasons and the ledger; its own chatter is cut down to nothing.
logging.getLogger("saml2").setLevel(logging.CRITICAL)

__all__ = [
    "MAX_OUTSTANDING",
    "MAX_RESPONSE_BYTES",
    "OUTSTANDING_TTL_NS",
    "SamlServiceProvider",
    "ensure_sp_keypair",
]

# A login started with ``login_url`` must come back within 10 minutes: long enough for a
# person to type a password and answer an MFA prompt, short enough that a stolen request
# id is soon useless.
OUTSTANDING_TTL_NS = 10 * 60 * 10**9
# At most this many logins may be in flight; the oldest is forgotten first, so someone
# opening /saml/login in a loop cannot grow the gateway's memory.
MAX_OUTSTANDING = 1000
# Real responses are a few kB (tens with many groups); anything larger is refused unparsed.
MAX_RESPONSE_BYTES = 512 * 1024
# Fetching the IdP's metadata from a URL gives up after this long (seconds).
HTTP_TIMEOUT_S = 10.0
# The generated SP certificate's lifetime; the IdP only pins it, nothing checks its dates.
SP_CERT_DAYS = 3650

_NS = 10**9
_EMAIL_ATTRIBUTES = ("mail", "email", "emailAddress", "urn:oid:0.9.2342.19200300.100.1.3")


def ensure_sp_keypair(
    key_path: str | os.PathLike[str], cert_path: str | os.PathLike[str], common_name: str
) -> tuple[Path, Path]:
    """The SP's signing key and self-signed certificate, generated when missing (an
    RSA-2048 key written 0600). An existing key without a certificate gets a new one."""
    key_file, cert_file = Path(key_path), Path(cert_path)
    if key_file.exists() and cert_file.exists():
        return key_file, cert_file
    if cert_file.exists():
        raise ConfigError(f"identity.saml.cert {cert_file} exists but its key {key_file} does not")
    if key_file.exists():
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ConfigError(f"identity.saml.key {key_file} is not an RSA private key")
        key = loaded
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or "ledgergate")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SP_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def _instant_ns(text: str) -> int:
    try:
        return calendar.timegm(str_to_time(text)) * _NS
    except (TypeError, ValueError):
        raise IdentityError(
            "the SAML assertion has an unreadable time", "malformed response"
        ) from None


def _refusal(exc: Exception) -> IdentityError:
    """pysaml2's view of a bad response, as the project's error (translated only here)."""
    if isinstance(exc, IdentityError):
        return exc
    text = str(exc)
    if isinstance(exc, SignatureError) and "missing for assertion" in text:
        return IdentityError("the SAML assertion is not signed", "unsigned assertion")
    if isinstance(exc, SigverError | IncorrectlySigned):
        return IdentityError("the SAML signature does not verify", "bad signature")
    if isinstance(exc, ResponseLifetimeExceed):
        return IdentityError("the SAML assertion has expired", "assertion expired")
    if isinstance(exc, ToEarly):
        return IdentityError("the SAML assertion is not valid yet", "not yet valid")
    if isinstance(exc, UnsolicitedResponse):
        return IdentityError(
            "the SAML response answers no login started here", "unsolicited response"
        )
    if isinstance(exc, StatusError):
        return IdentityError("the identity provider refused the login", "idp refused")
    # pysaml2 raises a bare Exception for a failed audience restriction.
    if "AudienceRestrictions" in text:
        return IdentityError("the SAML assertion is meant for another service", "wrong audience")
    return IdentityError("the SAML response cannot be accepted", "malformed response")


class SamlServiceProvider:
    """ledgergate as a SAML SP in front of one IdP (from its metadata file or URL)."""

    def __init__(
        self,
        settings: SamlSettings,
        *,
        base_url: str,
        key_file: str | os.PathLike[str],
        cert_file: str | os.PathLike[str],
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.settings = settings
        base = base_url.rstrip("/")
        self.entity_id = settings.entity_id or f"{base}/saml/metadata"
        self.acs_url = f"{base}/saml/acs"
        self.skew_ns = parse_duration(settings.clock_skew)
        xmlsec = shutil.which("xmlsec1") or shutil.which("xmlsec1", path="/usr/bin:/usr/local/bin")
        if xmlsec is None:
            raise ConfigError("identity.saml needs the xmlsec1 program (Debian: xmlsec1)")
        conf = {
            "entityid": self.entity_id,
            "key_file": str(key_file),
            "cert_file": str(cert_file),
            "xmlsec_binary": xmlsec,
            "metadata": {"inline": [self._idp_metadata(state_dir)]},
            "accepted_time_diff": max(1, self.skew_ns // _NS),
            "allow_unknown_attributes": True,
            "only_use_keys_in_metadata": True,
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)]
                    },
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "want_assertions_or_response_signed": False,
                    "allow_unsolicited": False,
                    "authn_requests_signed": True,
                    "name_id_format": [NAMEID_FORMAT_UNSPECIFIED],
                    "name_id_format_allow_create": True,
                    "signing_algorithm": SIG_RSA_SHA256,
                    "digest_algorithm": DIGEST_SHA256,
                }
            },
        }
        config = SPConfig()
        try:
            config.load(conf)
            idps = list(config.metadata.identity_providers())
        except Exception as e:  # pysaml2 raises anything from XML, schema or key parsing
            raise ConfigError(
                f"identity.saml: the IdP metadata or the SP key is not usable ({type(e).__name__})"
            ) from None
        self._config = config
        if len(idps) != 1:
            raise ConfigError(
                f"identity.saml.idp_metadata must describe exactly one IdP, not {len(idps)}"
            )
        self.idp_entity_id: str = idps[0]
        self._client = Saml2Client(config=config)
        self._lock = threading.Lock()
        # request id -> (sent at, relay state), oldest first; and ids already answered.
        self._outstanding: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._consumed: OrderedDict[str, int] = OrderedDict()

    def _idp_metadata(self, state_dir: str | os.PathLike[str] | None) -> str:
        source = self.settings.idp_metadata
        if not source.startswith(("https://", "http://")):
            try:
                return Path(source).read_text("utf-8")
            except OSError as e:
                raise ConfigError(
                    f"identity.saml.idp_metadata: cannot read {source}: {e}"
                ) from None
        if not source.startswith("https://"):
            raise ConfigError("identity.saml.idp_metadata must be a file or an https:// URL")
        try:
            r = httpx.get(source, timeout=HTTP_TIMEOUT_S, follow_redirects=False)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise ConfigError(f"identity.saml.idp_metadata: cannot fetch {source}: {e}") from None
        if state_dir is not None:  # kept for an administrator to see what was loaded
            d = Path(state_dir)
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            (d / "idp-metadata.xml").write_text(r.text, "utf-8")
        return r.text

    # -- metadata and login ------------------------------------------------------------

    def metadata(self) -> str:
        """The SP's metadata XML, for the IdP's administrator."""
        out = create_metadata_string(None, config=self._config, sign=False)
        return out.decode("utf-8") if isinstance(out, bytes) else str(out)

    def login_url(self, relay_state: str) -> str:
        """Where to send the person's browser: a signed AuthnRequest (HTTP-Redirect) to
        the IdP. The request id is remembered as outstanding."""
        now = time.time_ns()
        with self._lock:
            try:
                req_id, info = self._client.prepare_for_authenticate(
                    entityid=self.idp_entity_id,
                    relay_state=relay_state,
                    binding=BINDING_HTTP_REDIRECT,
                    sign=True,
                    sigalg=SIG_RSA_SHA256,
                    digest_alg=DIGEST_SHA256,
                )
            except (SAMLError, ValueError, OSError) as e:
                raise IdentityError(
                    f"cannot start a SAML login: {type(e).__name__}", "saml error"
                ) from None
            self._expire(now)
            while len(self._outstanding) >= MAX_OUTSTANDING:
                self._outstanding.popitem(last=False)
            self._outstanding[str(req_id)] = (now, relay_state)
        location = dict(info["headers"]).get("Location")
        if not location:
            raise IdentityError("the IdP has no HTTP-Redirect login endpoint", "saml error")
        return str(location)

    def _expire(self, now: int) -> None:
        """Forget requests older than OUTSTANDING_TTL_NS (both maps are oldest first)."""
        while self._outstanding:
            sent, _ = next(iter(self._outstanding.values()))
            if sent + OUTSTANDING_TTL_NS > now:
                break
            self._outstanding.popitem(last=False)
        while self._consumed and (
            len(self._consumed) > MAX_OUTSTANDING
            or next(iter(self._consumed.values())) + OUTSTANDING_TTL_NS <= now
        ):
            self._consumed.popitem(last=False)

    # -- the assertion consumer service ------------------------------------------------

    def acs(self, saml_response_b64: str, relay_state: str | None = None) -> Claims:
        """Check a Response posted to the ACS and return what the IdP vouched for."""
        if len(saml_response_b64) > MAX_RESPONSE_BYTES:
            raise IdentityError("the SAML response is too large", "malformed response")
        try:
            base64.b64decode(saml_response_b64, validate=True)
        except (binascii.Error, ValueError):
            raise IdentityError("the SAML response is not base64", "malformed response") from None
        now = time.time_ns()
        with self._lock:
            self._expire(now)
            outstanding = {k: v[1] for k, v in self._outstanding.items()}
            refusal: IdentityError | None = None
            try:
                resp = self._client.parse_authn_request_response(
                    saml_response_b64, BINDING_HTTP_POST, outstanding=outstanding
                )
            except Exception as e:  # pysaml2 raises bare Exceptions too; see _refusal
                _release(e)
                refusal = _refusal(e)
                if isinstance(e, UnsolicitedResponse) and (
                    _in_response_to(saml_response_b64) in self._consumed
                ):
                    refusal = IdentityError(
                        "this SAML response was already used", "replayed response"
                    )
            if refusal is not None:  # raised here, not chained to pysaml2's exception
                raise refusal
            if resp is None or resp.assertion is None:
                raise IdentityError(
                    "the SAML response is not for this service (destination or request)",
                    "malformed response",
                )
            # Verified and answering an outstanding request: that request is used up now,
            # whatever the checks below conclude.
            request_id = str(resp.in_response_to)
            sent_relay = self._outstanding.pop(request_id, (0, ""))[1]
            self._consumed[request_id] = now
        if (relay_state or "") != sent_relay:
            raise IdentityError(
                "the RelayState differs from the one this login started with",
                "relay state mismatch",
            )
        return self._claims(resp, now)

    def _claims(self, resp: Any, now: int) -> Claims:
        assertion = resp.assertion
        issuer = (assertion.issuer.text or "").strip() if assertion.issuer else ""
        if issuer != self.idp_entity_id:
            raise IdentityError("the SAML assertion comes from another issuer", "wrong issuer")
        name_id = resp.name_id
        sub = (name_id.text or "").strip() if name_id is not None else ""
        if not sub:
            raise IdentityError("the SAML assertion names no subject", "malformed response")
        attrs = _attributes(resp)
        if self.settings.username_attribute:
            values = attrs.get(self.settings.username_attribute) or []
            if not values:
                raise IdentityError(
                    f"the SAML assertion lacks the {self.settings.username_attribute!r} "
                    "attribute naming the identity",
                    "missing attribute",
                )
            subject = values[0]
        elif name_id.format == NAMEID_FORMAT_TRANSIENT:
            raise IdentityError(
                "the IdP sent a transient NameID: set identity.saml.username_attribute",
                "transient nameid",
            )
        else:
            subject = sub
        groups = tuple(dict.fromkeys(attrs.get(self.settings.groups_attribute) or []))
        email = next((attrs[a][0] for a in _EMAIL_ATTRIBUTES if attrs.get(a)), None)
        expires_ns = _expiry_ns(assertion)
        if expires_ns is None:
            raise IdentityError("the SAML assertion has no expiry", "malformed response")
        if expires_ns + self.skew_ns <= now:
            raise IdentityError("the SAML session has expired", "assertion expired")
        return Claims(
            subject=subject,
            sub=sub,
            groups=groups,
            email=email,
            expires_ns=expires_ns,
            issuer=issuer,
            source="saml",
        )


def _attributes(resp: Any) -> dict[str, list[str]]:
    """Attribute values by every name they go by: pysaml2's local name, the SAML Name
    and the FriendlyName."""
    out: dict[str, list[str]] = {}
    for key, values in (resp.ava or {}).items():
        out.setdefault(str(key), [str(v) for v in values if v is not None])
    for statement in resp.assertion.attribute_statement or []:
        for attribute in statement.attribute or []:
            values = [str(v.text).strip() for v in attribute.attribute_value or [] if v.text]
            for key in (attribute.name, attribute.friendly_name):
                if key:
                    out.setdefault(str(key), values)
    return out


def _expiry_ns(assertion: Any) -> int | None:
    """The assertion's SessionNotOnOrAfter, else its Conditions' NotOnOrAfter."""
    for statement in assertion.authn_statement or []:
        if statement.session_not_on_or_after:
            return _instant_ns(statement.session_not_on_or_after)
    if assertion.conditions is not None and assertion.conditions.not_on_or_after:
        return _instant_ns(assertion.conditions.not_on_or_after)
    return None


def _release(exc: BaseException) -> None:
    """Clear the frames a pysaml2 failure (and what it chained) holds: they keep its
    NamedTemporaryFiles alive in reference cycles, which the garbage collector would
    finalize in any order, so "unclosed file" ResourceWarnings would surface later."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def _in_response_to(saml_response_b64: str) -> str | None:
    """The InResponseTo of an (unverified) response, only to name a replay as such."""
    try:
        response = response_from_string(base64.b64decode(saml_response_b64))
    except Exception:
        return None
    irt = getattr(response, "in_response_to", None)
    return str(irt) if irt else None
