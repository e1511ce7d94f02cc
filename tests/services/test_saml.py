"""services.saml without an IdP process: the SP key pair, its metadata, the AuthnRequests
it sends and the refusals that need no IdP (configuration, malformed input, bounds).
Logins through a real IdP are in tests/integration/test_saml.py."""

from __future__ import annotations

import base64
import stat
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ledgergate.core.config import ConfigError, SamlSettings
from ledgergate.core.identity import IdentityError
from ledgergate.services import saml
from ledgergate.services.saml import SamlServiceProvider, ensure_sp_keypair

MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
SAMLP = "{urn:oasis:names:tc:SAML:2.0:protocol}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
IDP_ID = "https://idp.example.com/saml"
IDP_SSO = "https://idp.example.com/sso"
BASE = "https://gw.example.com/api"

_IDP_METADATA = """<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"
      WantAuthnRequestsSigned="true">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>{cert}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="{sso}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"""


def _cert_b64(cert_file: Path) -> str:
    pem = cert_file.read_text()
    return "".join(line for line in pem.splitlines() if "-----" not in line)


@pytest.fixture
def idp_metadata(tmp_path: Path) -> Path:
    _, cert = ensure_sp_keypair(tmp_path / "idp.key", tmp_path / "idp.crt", "idp")
    path = tmp_path / "idp-metadata.xml"
    path.write_text(_IDP_METADATA.format(entity=IDP_ID, cert=_cert_b64(cert), sso=IDP_SSO))
    return path


def _sp(tmp_path: Path, idp_metadata: Path | str, **over: object) -> SamlServiceProvider:
    key, cert = ensure_sp_keypair(tmp_path / "sp" / "sp.key", tmp_path / "sp" / "sp.crt", "gw")
    settings = SamlSettings(idp_metadata=str(idp_metadata), **over)  # type: ignore[arg-type]
    return SamlServiceProvider(settings, base_url=BASE, key_file=key, cert_file=cert)


# -- key pair ------------------------------------------------------------------------------


def test_keypair_is_generated_once_with_a_private_key_file(tmp_path: Path) -> None:
    key, cert = ensure_sp_keypair(tmp_path / "d" / "sp.key", tmp_path / "d" / "sp.crt", "gw-1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-1"
    public = c.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    before = (key.read_bytes(), cert.read_bytes())
    assert ensure_sp_keypair(key, cert, "other") == (key, cert)
    assert (key.read_bytes(), cert.read_bytes()) == before


def test_an_existing_key_gets_a_certificate(tmp_path: Path) -> None:
    key, cert = ensure_sp_keypair(tmp_path / "sp.key", tmp_path / "sp.crt", "gw")
    cert.unlink()
    ensure_sp_keypair(key, cert, "gw")
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private = load_pem_private_key(key.read_bytes(), password=None)
    assert c.public_key() == private.public_key()


def test_a_certificate_without_its_key_is_a_config_error(tmp_path: Path) -> None:
    key, cert = ensure_sp_keypair(tmp_path / "sp.key", tmp_path / "sp.crt", "gw")
    key.unlink()
    with pytest.raises(ConfigError, match="key"):
        ensure_sp_keypair(key, cert, "gw")


# -- metadata ------------------------------------------------------------------------------


def test_metadata_names_entity_acs_cert_and_signing_wishes(
    tmp_path: Path, idp_metadata: Path
) -> None:
    sp = _sp(tmp_path, idp_metadata)
    root = ElementTree.fromstring(sp.metadata())
    assert root.get("entityID") == f"{BASE}/saml/metadata" == sp.entity_id
    spsso = root.find(f"{MD}SPSSODescriptor")
    assert spsso is not None
    assert spsso.get("AuthnRequestsSigned") == "true"
    assert spsso.get("WantAssertionsSigned") == "true"
    acs = spsso.findall(f"{MD}AssertionConsumerService")
    assert [(a.get("Binding"), a.get("Location")) for a in acs] == [
        ("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST", f"{BASE}/saml/acs")
    ]
    certs = [e.text or "" for e in spsso.iter(f"{DS}X509Certificate")]
    ours = _cert_b64(tmp_path / "sp" / "sp.crt")
    assert any("".join(c.split()) == ours for c in certs)
    assert sp.idp_entity_id == IDP_ID


def test_metadata_uses_a_configured_entity_id(tmp_path: Path, idp_metadata: Path) -> None:
    sp = _sp(tmp_path, idp_metadata, entity_id="urn:ledgergate:prod")
    assert ElementTree.fromstring(sp.metadata()).get("entityID") == "urn:ledgergate:prod"


# -- AuthnRequest ----------------------------------------------------------------------


def test_login_url_is_a_signed_redirect_remembered_as_outstanding(
    tmp_path: Path, idp_metadata: Path
) -> None:
    sp = _sp(tmp_path, idp_metadata)
    url = urlsplit(sp.login_url("http://127.0.0.1:7777/cb"))
    assert f"{url.scheme}://{url.netloc}{url.path}" == IDP_SSO
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert q["RelayState"] == "http://127.0.0.1:7777/cb"
    assert q["SigAlg"].endswith("rsa-sha256") and q["Signature"]
    xml = zlib.decompress(base64.b64decode(q["SAMLRequest"]), -15)
    req = ElementTree.fromstring(xml)
    assert req.tag == f"{SAMLP}AuthnRequest"
    assert req.get("Destination") == IDP_SSO
    assert req.get("AssertionConsumerServiceURL") == f"{BASE}/saml/acs"
    assert req.get("ID") in sp._outstanding


def test_outstanding_requests_are_bounded(
    tmp_path: Path, idp_metadata: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(saml, "MAX_OUTSTANDING", 3)
    sp = _sp(tmp_path, idp_metadata)
    for i in range(5):
        sp.login_url(str(i))
    assert [relay for _, relay in sp._outstanding.values()] == ["2", "3", "4"]


# -- refusals without an IdP -----------------------------------------------------------


@pytest.mark.parametrize(
    "posted",
    [
        "not base64 at all!",
        base64.b64encode(b"<html>hello</html>").decode(),
        base64.b64encode(b"\x00\x01garbage").decode(),
        base64.b64encode(b"<x" * 10).decode(),
    ],
)
def test_malformed_responses_are_refused(tmp_path: Path, idp_metadata: Path, posted: str) -> None:
    sp = _sp(tmp_path, idp_metadata)
    with pytest.raises(IdentityError) as e:
        sp.acs(posted)
    assert e.value.reason == "malformed response"


def test_oversized_responses_are_refused_unparsed(tmp_path: Path, idp_metadata: Path) -> None:
    sp = _sp(tmp_path, idp_metadata)
    with pytest.raises(IdentityError) as e:
        sp.acs("A" * (saml.MAX_RESPONSE_BYTES + 4))
    assert e.value.reason == "malformed response"


def test_configuration_errors(tmp_path: Path, idp_metadata: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        _sp(tmp_path, tmp_path / "missing.xml")
    with pytest.raises(ConfigError, match="https"):
        _sp(tmp_path, "http://idp.example.com/metadata")
    two = tmp_path / "two.xml"
    one = idp_metadata.read_text().split("\n", 1)[1]
    two.write_text(
        '<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata">'
        + one
        + one.replace(IDP_ID, IDP_ID + "/2")
        + "</md:EntitiesDescriptor>"
    )
    with pytest.raises(ConfigError, match="exactly one IdP"):
        _sp(tmp_path, two)


def test_unusable_metadata_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<not-metadata/>")
    with pytest.raises(ConfigError):
        _sp(tmp_path, bad)
