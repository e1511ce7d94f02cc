"""Mask functions: what a sensitive value becomes before it leaves the gateway.

Five functions, named by a ``MaskSpec``:

- ``redact``: the constant ``REDACTED`` whatever the input, so not even the length of
  the value leaks (a length tells a 15-digit Amex from a 16-digit Visa, a short name from
  a long one);
- ``partial``: keeps what support staff need to recognise a value and no more. An e-mail
  under ``keep_domain`` keeps the first character of its local part and its domain
  (``j***@example.com``); a grouped number (a card, an SSN, a phone) keeps its last
  ``keep_last`` digits and its separators (``**** **** **** 4242``); anything else keeps
  its last ``keep_last`` characters. A value no longer than ``keep_last`` is masked whole;
- ``tokenize``: ``tok_`` and 16 base32 characters of a keyed HMAC-SHA256, so equal inputs
  give equal tokens (joins, GROUP BY and counts still work) while nobody without the
  gateway's key can test a guess: never reversible;
- ``null``: ``None`` (SQL NULL); ``fixed``: the spec's ``replacement``.

``mask_hits`` applies a function to each detected span of free text. Pure: no I/O,
clock or logging; the key comes in as an argument.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledgergate.core.masking.detectors import Hit

__all__ = [
    "FUNCTIONS",
    "REDACTED",
    "TOKEN_PREFIX",
    "MaskSpec",
    "mask_hits",
    "mask_value",
]

FUNCTIONS = frozenset({"redact", "partial", "tokenize", "null", "fixed"})
# What ``redact`` returns for every value: constant, so the length does not leak.
REDACTED = "****"
MASK_CHAR = "*"
TOKEN_PREFIX = "tok_"
# 16 base32 characters = 80 bits of the HMAC: collisions among 2**32 distinct values
# stay around one in 2**17, enough for joins and counts on real tables.
TOKEN_CHARS = 16
# Same bound as the policy schema (core.policy.rules.MaskAction.keep_last): keeping more
# than 64 characters is not masking.
MAX_KEEP_LAST = 64
# A replacement is a marker, not data; bounded so a policy cannot inflate every row.
MAX_REPLACEMENT = 256
# Tokenizing under a short (or empty) key would let anyone rebuild the table of tokens
# for a small value space such as SSNs: 128 bits or refuse.
MIN_KEY_BYTES = 16
# Domain separation: the masking key yields tokens only through this label.
_TOKEN_CONTEXT = b"ledgergate.mask.tokenize.v1\x00"
# A grouped number: digits with single spaces, dashes or dots between groups, an optional
# leading "+" and area code in parentheses (cards, SSNs, phones, IBAN-less account nos).
_GROUPED_NUMBER = re.compile(
    r"\+?\d{1,3}[ .-]?\(\d+\)[ .-]?\d+(?:[ .-]\d+)*"  # unambiguous: linear on any input
    r"|\+?(?:\(\d+\)[ .-]?)?\d+(?:[ .-]\d+)*",
    re.ASCII,
)

_ASCII_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class MaskSpec:
    """Which mask function to apply and its parameters (see the module docstring)."""

    function: str  # "redact" | "partial" | "tokenize" | "null" | "fixed"
    keep_last: int = 4
    keep_domain: bool = False
    replacement: str = REDACTED

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise ValueError(f"unknown mask function {self.function!r}; known: {known}")
        if (
            not isinstance(self.keep_last, int)
            or isinstance(self.keep_last, bool)
            or not 0 <= self.keep_last <= MAX_KEEP_LAST
        ):
            raise ValueError(
                f"keep_last must be an integer from 0 to {MAX_KEEP_LAST}, got {self.keep_last!r}"
            )
        if not isinstance(self.keep_domain, bool):
            raise ValueError(f"keep_domain must be true or false, got {self.keep_domain!r}")
        if not isinstance(self.replacement, str) or len(self.replacement) > MAX_REPLACEMENT:
            raise ValueError(f"replacement must be a string of at most {MAX_REPLACEMENT} chars")


def mask_value(spec: MaskSpec, value: str, *, key: bytes) -> str | None:
    """``value`` masked by ``spec``; ``None`` for the ``null`` function."""
    f = spec.function
    if f == "redact":
        return REDACTED
    if f == "partial":
        return _partial(value, spec.keep_last, spec.keep_domain)
    if f == "tokenize":
        return _tokenize(value, key)
    if f == "null":
        return None
    return spec.replacement  # "fixed": MaskSpec admits nothing else


def mask_hits(
    text: str, hits: Sequence[Hit], spec_for: Callable[[Hit], MaskSpec], *, key: bytes
) -> str:
    """``text`` with each hit's span replaced by its masked form.

    Hits may come in any order; overlapping hits are merged into one span masked under
    the first one's spec, so no detected character survives. ``null`` inside free text
    (there is no NULL for part of a string) becomes ``REDACTED``.
    """
    if not hits:
        return text
    n = len(text)
    for h in hits:
        if not 0 <= h.start < h.end <= n:
            raise ValueError(f"hit {h.detector} [{h.start}:{h.end}] is outside a text of {n}")
    ordered = sorted(hits, key=lambda h: (h.start, -h.end))
    parts: list[str] = []
    pos = 0
    i = 0
    while i < len(ordered):
        first = ordered[i]
        end = first.end
        i += 1
        while i < len(ordered) and ordered[i].start < end:
            end = max(end, ordered[i].end)
            i += 1
        parts.append(text[pos : first.start])
        masked = mask_value(spec_for(first), text[first.start : end], key=key)
        parts.append(REDACTED if masked is None else masked)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


_ONE_DIGIT = re.compile("[0-9]")


def _partial(value: str, keep_last: int, keep_domain: bool) -> str:
    if keep_domain:
        local, at, domain = value.rpartition("@")
        if at and local and domain:
            return local[0] + "***@" + domain
    if _GROUPED_NUMBER.fullmatch(value):
        return _mask_digits(value, keep_last)
    if len(value) <= keep_last:
        return MASK_CHAR * len(value)
    return MASK_CHAR * (len(value) - keep_last) + value[len(value) - keep_last :]


def _mask_digits(value: str, keep_last: int) -> str:
    """Mask every digit but the last ``keep_last``; separators stay where they were.
    (Counted and replaced in C: this runs once per masked value of a result.)"""
    total = sum(map(value.count, "0123456789"))
    if total <= keep_last:
        keep_last = 0
    return _ONE_DIGIT.sub(MASK_CHAR, value, count=total - keep_last) if total else value


def _tokenize(value: str, key: bytes) -> str:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"tokenize needs a masking key of at least {MIN_KEY_BYTES} bytes")
    # hmac.digest: the one-shot HMAC in C (this runs once per tokenized value).
    mac = hmac.digest(key, _TOKEN_CONTEXT + value.encode("utf-8", "surrogatepass"), "sha256")
    # 10 bytes are exactly 16 base32 characters, no padding.
    digest = mac[: TOKEN_CHARS * 5 // 8]
    return TOKEN_PREFIX + base64.b32encode(digest).decode("ascii").lower()
