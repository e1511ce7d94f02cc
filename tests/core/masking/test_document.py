"""Whole-document masking: JSON by field paths, CSV by header, text by detectors; what
cannot be masked is refused (``Unmaskable``), never passed raw."""

from __future__ import annotations

import json

import pytest

from ledgergate.core.masking.document import DocumentMasker, FieldRule, Unmaskable, parse_path
from ledgergate.core.masking.functions import MaskSpec


def masker(*fields: str, detectors: tuple[str, ...] = ()) -> DocumentMasker:
    rule = FieldRule("r", MaskSpec("redact"), tuple((f, parse_path(f)) for f in fields), detectors)
    return DocumentMasker([rule], b"k" * 32)


def test_paths_parse() -> None:
    assert parse_path("$.users[*].email") == ("users", "*", "email")
    assert parse_path("$..card") == ("..", "card")
    assert parse_path("email") == ("..", "email")
    assert parse_path("$.a['b c'][0]") == ("a", "b c", 0)
    with pytest.raises(ValueError):
        parse_path("$.a[")


def test_json_fields_and_detectors() -> None:
    doc = {"users": [{"email": "a@example.com", "note": "mail b@example.com"}], "n": 1}
    out, counts = masker("$.users[*].email", detectors=("email",)).mask(
        "application/json; charset=utf-8", json.dumps(doc).encode()
    )
    got = json.loads(out)
    assert got["users"][0]["email"] == "****" and "b@example.com" not in out.decode()
    assert got["n"] == 1
    assert counts[("$.users[*].email", "r")] == 1 and counts[("email", "r")] == 1


def test_csv_by_header_and_text_by_detector() -> None:
    out, _ = masker("email").mask("text/csv", b"id,email\n1,a@example.com\n")
    assert out == b"id,email\n1,****\n"
    out, _ = masker(detectors=("email",)).mask("text/plain", b"to a@example.com now")
    assert b"a@example.com" not in out


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("image/png", b"\x89PNG a@example.com"),
        ("application/json", b"{not json"),
        ("application/json", b"[" * 950 + b"1" + b"]" * 950),
        ("text/plain", b"\xff\xfe bad utf-8"),
        ("", b"untyped"),
    ],
)
def test_what_cannot_be_masked_is_refused(ctype: str, body: bytes) -> None:
    with pytest.raises(Unmaskable):
        masker("email", detectors=("email",)).mask(ctype, body)
