"""Mask functions: each function's output, spec validation, tokenize's determinism and
keying, mask_hits on free text, and properties: nothing raises, and masked output never
holds a detected card number or e-mail local part."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.core.masking import (
    REDACTED,
    Hit,
    MaskSpec,
    mask_hits,
    mask_value,
    scan,
)
from ledgergate.core.masking.functions import MIN_KEY_BYTES, TOKEN_PREFIX

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def m(value: str, function: str, **kw: object) -> str | None:
    return mask_value(MaskSpec(function, **kw), value, key=KEY)  # type: ignore[arg-type]


# --- spec validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"function": "hash"}, r"unknown mask function 'hash'; known: fixed, null"),
        ({"function": "partial", "keep_last": -1}, "keep_last must be an integer from 0 to 64"),
        ({"function": "partial", "keep_last": 65}, "keep_last"),
        ({"function": "partial", "keep_last": True}, "keep_last"),
        ({"function": "partial", "keep_last": "4"}, "keep_last"),
        ({"function": "partial", "keep_domain": "yes"}, "keep_domain must be true or false"),
        ({"function": "fixed", "replacement": "x" * 257}, "at most 256"),
        ({"function": "fixed", "replacement": None}, "replacement must be a string"),
    ],
)
def test_spec_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskSpec(**kw)  # type: ignore[arg-type]


def test_spec_defaults() -> None:
    s = MaskSpec("partial")
    assert (s.keep_last, s.keep_domain, s.replacement) == (4, False, "****")


# --- redact / null / fixed -----------------------------------------------------------


def test_redact_is_constant_and_hides_the_length() -> None:
    assert m("a", "redact") == m("4242 4242 4242 4242", "redact") == REDACTED == "****"
    assert m("", "redact") == REDACTED


def test_null_and_fixed() -> None:
    assert m("ann@example.com", "null") is None
    assert m("ann@example.com", "fixed", replacement="[email]") == "[email]"
    assert m("x", "fixed") == "****"
    assert m("x", "fixed", replacement="") == ""


# --- partial -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kw", "want"),
    [
        ("john.doe@example.com", {"keep_domain": True}, "j***@example.com"),
        ("bob@corp.example.org", {"keep_domain": True}, "b***@corp.example.org"),
        ('"a@b"@example.com', {"keep_domain": True}, '"***@example.com'),
        ("x@y.io", {"keep_domain": True}, "x***@y.io"),
        ("@example.com", {"keep_domain": True}, "********.com"),  # no local part: generic
        ("john.doe@example.com", {}, "****************.com"),  # keep_domain off: generic
        ("4242 4242 4242 4242", {}, "**** **** **** 4242"),
        ("5555-5555-5555-4444", {}, "****-****-****-4444"),
        ("4242424242424242", {}, "************4242"),
        ("3782 822463 10005", {}, "**** ****** *0005"),
        ("4242 4242 4242 4242", {"keep_last": 0}, "**** **** **** ****"),
        ("4242 4242 4242 4242", {"keep_last": 6}, "**** **** **42 4242"),
        ("123-45-6789", {}, "***-**-6789"),
        ("+1 (555) 123-4567", {}, "+* (***) ***-4567"),
        ("GB82WEST12345698765432", {}, "******************5432"),
        ("Ann Lee", {}, "*** Lee"),
        ("Ann Lee", {"keep_last": 2}, "*****ee"),
        ("abcd", {}, "****"),  # no longer than keep_last: masked whole
        ("abc", {}, "***"),
        ("12-34", {}, "**-**"),
        ("", {}, ""),
        ("héllo wörld", {"keep_last": 3}, "********rld"),
    ],
)
def test_partial(value: str, kw: dict[str, object], want: str) -> None:
    assert m(value, "partial", **kw) == want


# --- tokenize ------------------------------------------------------------------------


def test_tokenize_is_deterministic_keyed_and_shaped() -> None:
    a = m("123-45-6789", "tokenize")
    assert a == m("123-45-6789", "tokenize")
    assert a is not None and re.fullmatch(r"tok_[a-z2-7]{16}", a)
    assert a != m("234-56-7890", "tokenize")
    spec = MaskSpec("tokenize")
    assert mask_value(spec, "123-45-6789", key=OTHER_KEY) != a
    assert "6789" not in a
    # the spec's other fields do not change a token
    assert mask_value(MaskSpec("tokenize", keep_last=0), "123-45-6789", key=KEY) == a


def test_tokenize_refuses_a_short_key() -> None:
    spec = MaskSpec("tokenize")
    for key in [b"", b"k" * (MIN_KEY_BYTES - 1)]:
        with pytest.raises(ValueError, match="masking key of at least 16 bytes"):
            mask_value(spec, "x", key=key)
    assert mask_value(spec, "x", key=b"k" * MIN_KEY_BYTES).startswith(TOKEN_PREFIX)  # type: ignore[union-attr]


def test_tokenize_handles_any_string() -> None:
    for v in ["", "\x00", "\ud800", "é" * 1000]:
        assert m(v, "tokenize").startswith("tok_")  # type: ignore[union-attr]
    assert m("\ud800", "tokenize") != m("\ud801", "tokenize")


# --- mask_hits -----------------------------------------------------------------------

SENTENCE = (
    "Ann (ann.lee@example.com, +44 20 7946 0958) paid 4242 4242 4242 4242 from "
    "GB82 WEST 1234 5698 7654 32; ssn 123-45-6789."
)
ALL = ["email", "phone", "payment_card", "iban", "us_ssn"]


def test_mask_hits_redacts_every_item_in_a_sentence() -> None:
    hits = scan(SENTENCE, ALL)
    assert len(hits) == 5
    out = mask_hits(SENTENCE, hits, lambda h: MaskSpec("redact"), key=KEY)
    assert out == "Ann (****, ****) paid **** from ****; ssn ****."


def test_mask_hits_with_a_spec_per_detector() -> None:
    specs = {
        "email": MaskSpec("partial", keep_domain=True),
        "phone": MaskSpec("fixed", replacement="[phone]"),
        "payment_card": MaskSpec("partial"),
        "iban": MaskSpec("tokenize"),
        "us_ssn": MaskSpec("null"),
    }
    out = mask_hits(SENTENCE, scan(SENTENCE, ALL), lambda h: specs[h.detector], key=KEY)
    tok = m("GB82 WEST 1234 5698 7654 32", "tokenize")
    assert out == (
        "Ann (a***@example.com, [phone]) paid **** **** **** 4242 from "
        f"{tok}; ssn ****."  # null has no place in free text: redacted
    )


def test_mask_hits_edge_cases() -> None:
    spec = MaskSpec("redact")
    assert mask_hits("abc", [], lambda h: spec, key=KEY) == "abc"
    # unsorted and overlapping hits: merged, nothing of either span survives
    hits = [Hit("b", 6, 10, 50), Hit("a", 0, 3, 50), Hit("c", 2, 5, 90)]
    assert mask_hits("0123456789xy", hits, lambda h: spec, key=KEY) == "****5****xy"
    nested = [Hit("a", 1, 9, 50), Hit("b", 2, 4, 50)]
    seen: list[str] = []

    def spec_for(h: Hit) -> MaskSpec:
        seen.append(h.detector)
        return MaskSpec("partial", keep_last=1)

    assert mask_hits("0123456789", nested, spec_for, key=KEY) == "0*******89"
    assert seen == ["a"]
    for bad in [Hit("x", 0, 11, 50), Hit("x", -1, 2, 50), Hit("x", 3, 3, 50)]:
        with pytest.raises(ValueError, match="outside a text of 10"):
            mask_hits("0123456789", [bad], lambda h: spec, key=KEY)


# --- properties ----------------------------------------------------------------------

SPECS = st.builds(
    MaskSpec,
    function=st.sampled_from(["redact", "partial", "tokenize", "null", "fixed"]),
    keep_last=st.integers(0, 64),
    keep_domain=st.booleans(),
    replacement=st.text(max_size=20),
)


@given(SPECS, st.text(max_size=200))
def test_mask_value_never_raises(spec: MaskSpec, value: str) -> None:
    out = mask_value(spec, value, key=KEY)
    assert out is None or isinstance(out, str)


CARDS = ["4242424242424242", "5555555555554444", "378282246310005", "6011111111111117"]
# Filler without digits or address characters, so nothing in it repeats what is checked.
FILLER = st.text(alphabet="ABCDEFGH !?,;", max_size=30)
# Lowercase with a letter and at least 5 long: never inside the kept digits of a card,
# the upper-case domain, the kept ".ORG" or the filler.
LOCAL = st.from_regex(r"[a-z][a-z0-9]{2,4}(?:[._]?[a-z0-9]){2,8}", fullmatch=True)


@st.composite
def card(draw: st.DrawFn) -> str:
    digits = draw(st.sampled_from(CARDS))
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep or len(digits) == 15:
        return digits
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


@given(
    FILLER,
    card(),
    FILLER,
    LOCAL,
    FILLER,
    st.sampled_from(["redact", "partial", "tokenize", "fixed", "null"]),
    st.booleans(),
)
def test_masked_text_never_holds_a_detected_card_or_local_part(
    a: str, c: str, b: str, local: str, d: str, function: str, keep_domain: bool
) -> None:
    text = f"{a} {c} {b} {local}@EXAMPLE.ORG {d}"
    hits = scan(text, ["payment_card", "email"])
    assert {h.detector for h in hits} == {"payment_card", "email"}
    spec = MaskSpec(function, keep_domain=keep_domain)
    out = mask_hits(text, hits, lambda h: spec, key=KEY)
    digits = c.replace(" ", "").replace("-", "")
    assert digits not in re.sub(r"[ -]", "", out)
    assert local not in out
    for h in hits:
        alone = mask_value(spec, text[h.start : h.end], key=KEY) or ""
        assert digits not in alone and local not in alone


@given(st.text(max_size=200), SPECS)
def test_scan_then_mask_never_raises(text: str, spec: MaskSpec) -> None:
    names = ["email", "phone", "payment_card", "iban", "us_ssn", "ipv4", "ipv6", "jwt"]
    hits = scan(text, names, min_confidence=0)
    out = mask_hits(text, hits, lambda h: spec, key=KEY)
    assert isinstance(out, str)
    if not hits:
        assert out is text
