"""Content detectors: realistic positives and negatives per detector, the registry with
a plugged-in detector, ``scan``'s overlap resolution, and a fuzz that nothing raises."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.masking import detectors
from ledgergate.core.masking.detectors import DETECTORS, Detector, Hit, get, register, scan

BUILTINS = [
    "email",
    "phone",
    "payment_card",
    "iban",
    "us_ssn",
    "ipv4",
    "ipv6",
    "jwt",
    "aws_access_key",
    "gcp_api_key",
    "github_token",
    "private_key",
    "high_entropy",
]


def found(name: str, text: str, min_confidence: int = 50) -> list[str]:
    return [text[h.start : h.end] for h in scan(text, [name], min_confidence=min_confidence)]


def b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_every_builtin_is_registered_under_its_name() -> None:
    assert set(BUILTINS) <= set(DETECTORS)
    for name in BUILTINS:
        assert get(name).name == name


# --- email ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("mail ann.lee@example.com today", ["ann.lee@example.com"]),
        ("<bob+tag@corp.example.org>", ["bob+tag@corp.example.org"]),
        ("mailto:x_y%z@mail.co.uk.", ["x_y%z@mail.co.uk"]),
        ("a@b.io and c@d.museum", ["a@b.io", "c@d.museum"]),
    ],
)
def test_email_positives(text: str, want: list[str]) -> None:
    assert found("email", text) == want


@pytest.mark.parametrize(
    "text",
    [
        "no at sign here",
        "user@localhost",  # no dot in the domain
        "icon@2x.png",  # a file name, not an address
        "x@example.c",  # one-letter TLD
        "a..b@example.com",
        ".a@example.com",
        "@example.com",
        "price 10 @ 3.50",
    ],
)
def test_email_negatives(text: str) -> None:
    assert found("email", text) == []


# --- phone ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("call +1 415 555 2671 now", ["+1 415 555 2671"]),
        ("+14155552671", ["+14155552671"]),
        ("UK: +44 20 7946 0958", ["+44 20 7946 0958"]),
        ("(555) 123-4567", ["(555) 123-4567"]),
        ("+1 (555) 123-4567", ["+1 (555) 123-4567"]),
        ("office 555-123-4567.", ["555-123-4567"]),
        ("portable 06 12 34 56 78", ["06 12 34 56 78"]),
        ("555.123.4567", ["555.123.4567"]),
    ],
)
def test_phone_positives(text: str, want: list[str]) -> None:
    assert found("phone", text) == want


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15",
        "on 15/01/2024 at noon",
        "2024.01.15",
        "version 10.0.19041.1",
        "v1.2.3.4567",
        "host 192.168.10.12",
        "order 5551234567",  # a bare digit run
        "4242 4242 4242 4242",  # a card
        "3782 822463 10005",  # an Amex card (15 digits, Luhn)
        "pi is 3.14159265358",
        "ext 123",
        "+1 555",  # too short
        "+1 2345 6789 0123 4567",  # longer than E.164
    ],
)
def test_phone_negatives(text: str) -> None:
    assert found("phone", text) == []


# --- payment_card --------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        "4242424242424242",  # Visa
        "4242 4242 4242 4242",
        "4000-0566-5566-5556",  # Visa debit
        "4222222222222",  # Visa, 13 digits
        "5555555555554444",  # Mastercard
        "2223003122003222",  # Mastercard 2-series
        "378282246310005",  # Amex
        "3782 822463 10005",
        "6011111111111117",  # Discover
        "3566002020360505",  # JCB
        "30569309025904",  # Diners, 14 digits
    ],
)
def test_card_positives(card: str) -> None:
    assert found("payment_card", f"card: {card}, thanks") == [card]


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424241",  # Luhn fails
        "5555 5555 5555 4445",
        "1234567890123452",  # Luhn passes, no known brand prefix
        "9999999999999995",
        "42424242424242424242",  # 20 digits
        "378282246310005" + "1",  # an Amex prefix at 16 digits
        "4242 4242-4242 4242",  # mixed separators
        "order 2024000012345678",
        "ts 1700000000000",
        "x4242424242424242",  # inside a token
        "3.4242424242424242",  # a decimal fraction
        "12 digits 123456789012",
    ],
)
def test_card_negatives(text: str) -> None:
    assert found("payment_card", text) == []


def test_two_cards_side_by_side() -> None:
    assert found("payment_card", "4242424242424242 5555555555554444") == [
        "4242424242424242",
        "5555555555554444",
    ]


# --- iban ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "NO9386011117947",
    ],
)
def test_iban_positives(iban: str) -> None:
    assert found("iban", f"IBAN {iban} for refunds") == [iban]


def test_iban_followed_by_another_group_is_cut_at_its_country_length() -> None:
    text = "IBAN BE68 5390 0754 7034 2024 INVOICE 7"
    assert found("iban", text) == ["BE68 5390 0754 7034"]
    assert found("iban", "GB82 WEST 1234 5698 7654 32 ABCD") == ["GB82 WEST 1234 5698 7654 32"]
    assert found("iban", "BE68539007547034 2024") == ["BE68539007547034"]
    assert found("iban", "BE685390075470342024") == []  # no boundary to cut at


@pytest.mark.parametrize(
    "text",
    [
        "GB83WEST12345698765432",  # check digits wrong
        "DE89370400440532013001",  # BBAN changed
        "GB82WEST123456987654",  # too short for GB
        "ZZ82WEST12345698765432",  # no such country
        "ab12cdef34567890",
        "AB12",
    ],
)
def test_iban_negatives(text: str) -> None:
    assert found("iban", text) == []


# --- us_ssn --------------------------------------------------------------------------


def test_ssn_dashed_and_undashed() -> None:
    assert found("us_ssn", "ssn 123-45-6789.") == ["123-45-6789"]
    assert found("us_ssn", "ssn 123456789") == []  # weak: below the default floor
    assert found("us_ssn", "ssn 123456789", min_confidence=20) == ["123456789"]
    (hit,) = get("us_ssn").find("123456789")
    assert hit.confidence < 50


@pytest.mark.parametrize(
    "text",
    [
        *["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567"],
        *["123-45-0000", "123-456789", "1234-56-7890", "a123-45-6789", "123-45-67890"],
    ],
)
def test_ssn_negatives(text: str) -> None:
    assert found("us_ssn", text, min_confidence=0) == []


# --- ipv4 / ipv6 ---------------------------------------------------------------------


def test_ipv4() -> None:
    assert found("ipv4", "from 10.0.0.1 and 255.255.255.255.") == ["10.0.0.1", "255.255.255.255"]
    for bad in ["999.1.1.1", "1.2.3", "1.2.3.4.5", "01.02.03.04", "256.0.0.1", "a1.2.3.4"]:
        assert found("ipv4", bad) == [], bad


def test_ipv6() -> None:
    text = "peers 2001:db8::1, ::1 and fe80::1%eth0; mapped ::ffff:192.0.2.128"
    assert found("ipv6", text) == ["2001:db8::1", "::1", "fe80::1", "::ffff:192.0.2.128"]
    full = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
    assert found("ipv6", full) == [full]
    for bad in ["12:30:45", "00:1a:2b:3c:4d:5e", "std::vector", "::", "1:2:3:4:5:6:7:8:9"]:
        assert found("ipv6", bad) == [], bad


# --- jwt -----------------------------------------------------------------------------


def test_jwt() -> None:
    tok = b64url({"alg": "HS256", "typ": "JWT"}) + "." + b64url({"sub": "ann"}) + ".c2lnbmF0dXJl"
    assert found("jwt", f"Authorization: Bearer {tok}") == [tok]
    unsecured = b64url({"alg": "none"}) + "." + b64url({"sub": "ann"}) + "."
    assert found("jwt", unsecured) == [unsecured]
    no_alg = b64url({"typ": "JWT"}) + "." + b64url({"sub": "ann"}) + ".sig"
    not_json = "eyJub3QganNvbg." + b64url({"sub": "ann"}) + ".sig"
    for bad in [no_alg, not_json, "eyJhbGciOi", "eyJ.eyJ.x"]:
        assert found("jwt", bad) == [], bad


# --- cloud keys and tokens -----------------------------------------------------------


def test_cloud_keys() -> None:
    aws = "AKIAIOSFODNN7EXAMPLE"
    assert found("aws_access_key", f"key={aws}") == [aws]
    assert found("aws_access_key", "ASIAY34FZKBOKMUTVV7A") == ["ASIAY34FZKBOKMUTVV7A"]
    assert found("aws_access_key", "AKIAIOSFODNN7EXAMPL") == []  # 15 after the prefix
    assert found("aws_access_key", "XAKIAIOSFODNN7EXAMPLE") == []
    assert found("aws_access_key", "AKIAiosfodnn7example") == []
    gcp = "AIzaSyD-1234567890abcdefghijklmnopqrstu"
    assert len(gcp) == 39
    assert found("gcp_api_key", f'"{gcp}"') == [gcp]
    assert found("gcp_api_key", gcp[:-1]) == []
    gh = "ghp_" + "A1b2C3d4E5" * 3 + "F6g7H8"
    assert found("github_token", f"token {gh}") == [gh]
    for prefix in ["gho_", "ghu_", "ghs_", "ghr_"]:
        assert found("github_token", prefix + gh[4:]) == [prefix + gh[4:]]
    assert found("github_token", "ghx_" + gh[4:]) == []
    assert found("github_token", gh[:-1]) == []


def test_private_key_blocks() -> None:
    block = (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc==\n-----END RSA PRIVATE KEY-----"
    )
    text = f"cfg:\n{block}\nrest"
    assert found("private_key", text) == [block]
    openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg\n-----END OPENSSH PRIVATE KEY-----"
    assert found("private_key", openssh) == [openssh]
    plain = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"
    assert found("private_key", plain + " and " + plain) == [plain, plain]
    cut = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE"
    assert found("private_key", "x " + cut) == [cut]  # truncated: masked to the end
    assert found("private_key", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----") == []


# --- high_entropy --------------------------------------------------------------------


def test_high_entropy_flags_secrets_not_words() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert found("high_entropy", f"secret={secret}") == [secret]
    hexkey = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
    assert found("high_entropy", hexkey) == [hexkey]
    assert found("high_entropy", "Zm9vYmFyMTIzNDU2Nzg5MGFiY2RlZg==") == [
        "Zm9vYmFyMTIzNDU2Nzg5MGFiY2RlZg=="
    ]
    for benign in [
        "internationalization",
        "ThisIsAVeryLongIdentifierName",
        "/usr/local/lib/python3/site-packages",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "my_long_project_name_here_v2",
        "12345678901234567890123",
        "550e8400-e29b-41d4-a716-446655440000",  # UUIDs are ids, not secrets
        "550E8400-E29B-41D4-A716-446655440000",
        "short1A",
    ]:
        assert found("high_entropy", benign) == [], benign
    (hit,) = get("high_entropy").find(secret)
    assert 50 <= hit.confidence < get("email").find("a@b.co")[0].confidence


# --- registry ------------------------------------------------------------------------


class Employee:
    """A plugged-in detector: employee numbers E-123456."""

    name = "employee_id"

    def find(self, text: str) -> list[Hit]:
        i = text.find("E-")
        if i < 0 or not text[i + 2 : i + 8].isdigit():
            return []
        return [Hit(self.name, i, i + 8, 70)]


@pytest.fixture
def employee() -> Iterator[Detector]:
    d = register(Employee())
    yield d
    del DETECTORS["employee_id"]


def test_plugged_detector_runs_in_scan(employee: Detector) -> None:
    assert get("employee_id") is employee
    hits = scan("E-123456 wrote to a@b.co", ["employee_id", "email"])
    assert [(h.detector, h.start, h.end) for h in hits] == [
        ("employee_id", 0, 8),
        ("email", 18, 24),
    ]
    with pytest.raises(ValueError, match="already registered"):
        register(Employee())
    assert register(Employee(), replace=True) is not employee


def test_register_rejects_bad_names() -> None:
    class Bad:
        name = "no spaces"

        def find(self, text: str) -> list[Hit]:
            return []

    with pytest.raises(ValueError, match="letters, digits"):
        register(Bad())


def test_unknown_detector_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown detector 'credit_card'.*payment_card"):
        get("credit_card")
    with pytest.raises(KeyError, match="credit_card"):
        scan("x", ["email", "credit_card"])


# --- scan ----------------------------------------------------------------------------


class Fixed:
    def __init__(self, name: str, *spans: tuple[int, int, int]) -> None:
        self.name = name
        self.spans = spans

    def find(self, text: str) -> list[Hit]:
        return [Hit(self.name, s, e, c) for s, e, c in self.spans]


def test_scan_overlaps_keep_higher_confidence_then_longer() -> None:
    register(Fixed("t_a", (0, 10, 60), (20, 25, 90)))
    register(Fixed("t_b", (5, 12, 80), (20, 30, 90), (40, 45, 40)))
    register(Fixed("t_c", (11, 14, 70), (30, 31, 55)))
    try:
        hits = scan("x" * 50, ["t_a", "t_b", "t_c"])
        assert [(h.detector, h.start, h.end) for h in hits] == [
            ("t_b", 5, 12),  # beats t_a's 60
            ("t_b", 20, 30),  # same confidence as t_a's, longer
            ("t_c", 30, 31),  # touching is not overlapping
        ]
        assert len(scan("x" * 50, ["t_b"], min_confidence=0)) == 3
    finally:
        for n in ["t_a", "t_b", "t_c"]:
            del DETECTORS[n]


def test_scan_real_overlaps() -> None:
    # "123-45-6789" is an SSN (85) and phone-shaped (65): the SSN wins.
    hits = scan("ssn 123-45-6789", ["phone", "us_ssn"])
    assert [h.detector for h in hits] == ["us_ssn"]
    jwt = b64url({"alg": "HS256"}) + "." + b64url({"sub": "ann", "n": 12345}) + ".Sig1x2Y3z4"
    assert [h.detector for h in scan(jwt, BUILTINS)] == ["jwt"]


def test_scan_all_on_a_sentence() -> None:
    text = (
        "Ann (ann.lee@example.com, +44 20 7946 0958) paid with 4242 4242 4242 4242 "
        "from GB82 WEST 1234 5698 7654 32 at 10.0.0.1 on 2024-01-15, order 5551234567."
    )
    got = [(h.detector, text[h.start : h.end]) for h in scan(text, BUILTINS)]
    assert got == [
        ("email", "ann.lee@example.com"),
        ("phone", "+44 20 7946 0958"),
        ("payment_card", "4242 4242 4242 4242"),
        ("iban", "GB82 WEST 1234 5698 7654 32"),
        ("ipv4", "10.0.0.1"),
    ]


def test_prechecks_skip_texts_that_cannot_match() -> None:
    assert scan("", BUILTINS) == []
    assert scan("plain words only, nothing to see", BUILTINS) == []
    assert detectors._digits(3)("a1b2c3") and not detectors._digits(3)("a1b2")


@given(st.text(max_size=300))
def test_scan_never_raises_and_hits_are_disjoint(text: str) -> None:
    hits = scan(text, BUILTINS, min_confidence=0)
    for a, b in itertools.pairwise(hits):
        assert a.end <= b.start
    for h in hits:
        assert 0 <= h.start < h.end <= len(text) and 0 <= h.confidence <= 100


@given(st.text(alphabet="0123456789 -.+()@:/abcdefABCDEFxyzXYZ_=", max_size=200))
def test_scan_never_raises_on_dense_text(text: str) -> None:
    scan(text, BUILTINS, min_confidence=0)
