"""Content detectors: find sensitive values (e-mails, cards, IBANs, keys, ...) in text.

Each detector is a precompiled candidate regex, a validator that keeps false positives
low (Luhn, mod-97, ``ipaddress``, a decoded JWT header, ...) and a confidence in percent
(an integer: ledger entries carry no floats). Detectors run on every text value of a
masked result, so each one first makes a cheap check (an ``in`` or a digit count done
by the regex engine) and returns before its regex when the text cannot hold a match.

``scan`` runs named detectors and resolves overlaps: higher confidence wins, then the
longer span. The registry is pluggable: anything with a ``name`` and ``find`` can be
registered. Pure: no I/O, clock or logging; the only state is the registry.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DETECTORS",
    "Detector",
    "Hit",
    "RegexDetector",
    "get",
    "joinable",
    "register",
    "scan",
]


@dataclass(frozen=True, slots=True)
class Hit:
    """One detected span ``text[start:end]`` with a confidence in percent (0-100)."""

    detector: str
    start: int
    end: int
    confidence: int


class Detector(Protocol):
    """What the registry holds: a name and a ``find`` over text."""

    @property
    def name(self) -> str: ...

    def find(self, text: str) -> list[Hit]: ...


# Default floor for ``scan``: hits below it (an undashed 9-digit "SSN") are too weak to
# mask by default, yet a caller can lower it.
DEFAULT_MIN_CONFIDENCE = 50


class RegexDetector:
    """A detector from a candidate regex, an optional pre-check and validator.

    ``validate`` gets the match and returns the confidence for it, or ``None`` to drop it
    (so one validator can say "valid, but weak"). Without a validator every match gets
    ``confidence``.

    ``joinable``: the detector finds exactly the same hits in ``"\x00".join(values)`` as
    in each value alone (its pattern never matches a NUL, treats one like the edge of the
    text, needs no anchors, and its precheck holds whenever a match can). A masked
    result then scans a whole read of a column in one call. Off unless a detector says
    so; every built-in one but ``private_key`` (whose block runs on to the end of the
    text) does.
    """

    __slots__ = ("confidence", "joinable", "name", "pattern", "precheck", "validate")

    def __init__(
        self,
        name: str,
        pattern: re.Pattern[str],
        confidence: int,
        *,
        precheck: Callable[[str], bool] | None = None,
        validate: Callable[[re.Match[str]], int | None] | None = None,
        joinable: bool = False,
    ) -> None:
        self.joinable = joinable
        self.name = name
        self.pattern = pattern
        self.confidence = confidence
        self.precheck = precheck
        self.validate = validate

    def find(self, text: str) -> list[Hit]:
        if self.precheck is not None and not self.precheck(text):
            return []
        hits: list[Hit] = []
        for m in self.pattern.finditer(text):
            conf = self.confidence if self.validate is None else self.validate(m)
            if conf is not None:
                hits.append(Hit(self.name, m.start(), m.end(), conf))
        return hits


# --- pre-checks: a C-speed test before the candidate regex ---------------------------


def _digits(n: int) -> Callable[[str], bool]:
    """True when the text holds at least ``n`` digits (the regex engine counts them)."""
    at_least = re.compile(rf"(?:\D*+\d){{{n}}}", re.ASCII)  # possessive: no backtracking
    return lambda text: at_least.match(text) is not None


def _contains(*needles: str) -> Callable[[str], bool]:
    return lambda text: any(n in text for n in needles)


# --- email ---------------------------------------------------------------------------

# The local part is taken possessively: it cannot contain "@", so giving characters
# back could never find one, and a long word would otherwise be retried 64 times.
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# "icon@2x.png" looks like an address; a TLD that is a common file extension is not one.
_FILE_EXTENSIONS = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "json", "xml"}
    | {"html", "htm", "txt", "pdf", "md", "py"}
)


def _email(m: re.Match[str]) -> int | None:
    local, _, domain = m.group().partition("@")
    if local[0] == "." or local[-1] == "." or ".." in local:
        return None
    if domain.rsplit(".", 1)[-1].lower() in _FILE_EXTENSIONS:
        return None
    return 95


# --- phone ---------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d(?:[ .-]?\d){3,17}(?![\w])", re.ASCII
)
# E.164: at most 15 digits with the country code; fewer than 7 is not a full number.
PHONE_MIN_DIGITS, PHONE_MAX_DIGITS = 7, 15
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}", re.ASCII)
_GROUPS = re.compile(r"\d+", re.ASCII)


def _phone(m: re.Match[str]) -> int | None:
    s = m.group()
    groups = _GROUPS.findall(s)
    digits = "".join(groups)
    if not PHONE_MIN_DIGITS <= len(digits) <= PHONE_MAX_DIGITS:
        return None
    international, parens = s[0] == "+", "(" in s
    if not international and not parens and len(groups) == 1:
        return None  # a bare digit run: an order number or id as often as a phone
    if _DATE.search(s):
        return None
    # versions (10.0.19041.1) and addresses (192.168.1.10) are dotted too
    if (
        "." in s
        and not international
        and (
            any(len(g) == 1 for g in groups)
            or (len(groups) == 4 and all(len(g) <= 3 for g in groups))
        )
    ):
        return None
    if len(digits) >= CARD_MIN_DIGITS and not international and _luhn(digits):
        return None  # a card number, for the card detector
    return 90 if international else 80 if parens else 65


# --- payment_card --------------------------------------------------------------------

_CARD = re.compile(
    r"(?<![\w.])(?:"
    r"\d{4}(?P<s>[ -])\d{4}(?P=s)\d{4}(?P=s)\d{1,4}(?:(?P=s)\d{1,3})?"  # 4-4-4-4(-3)
    r"|\d{4}(?P<t>[ -])\d{6}(?P=t)\d{4,5}"  # Amex 4-6-5, Diners 4-6-4
    r"|\d{13,19}"
    r")(?![\w]|[.,]\d)",
    re.ASCII,
)
# ISO/IEC 7812 primary account numbers are 13 to 19 digits.
CARD_MIN_DIGITS = 13
# (first digits range, allowed lengths) per brand; prefixes compared as integers.
_BRANDS: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    # (prefix length, low, high, lengths)
    (1, 4, 4, frozenset({13, 16, 19})),  # Visa
    (2, 51, 55, frozenset({16})),  # Mastercard
    (4, 2221, 2720, frozenset({16})),  # Mastercard 2-series
    (2, 34, 34, frozenset({15})),  # Amex
    (2, 37, 37, frozenset({15})),  # Amex
    (4, 6011, 6011, frozenset({16, 19})),  # Discover
    (2, 65, 65, frozenset({16, 19})),  # Discover
    (3, 644, 649, frozenset({16, 19})),  # Discover
    (4, 3528, 3589, frozenset({16, 17, 18, 19})),  # JCB
    (2, 36, 36, frozenset({14, 16, 19})),  # Diners
    (2, 38, 38, frozenset({14, 16, 19})),  # Diners
    (3, 300, 305, frozenset({14, 16, 19})),  # Diners
)
_SCALE = {k: 10 ** (4 - k) for k in (1, 2, 3, 4)}  # head // _SCALE[k]: its first k digits


# Doubling a digit and summing the result's digits, for Luhn's every second digit.
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def _luhn(digits: str) -> bool:
    doubled = digits[-2::-2].translate(_LUHN_DOUBLED)
    return (sum(map(int, digits[-1::-2])) + sum(map(int, doubled))) % 10 == 0


def _card(m: re.Match[str]) -> int | None:
    digits = m.group().replace(" ", "").replace("-", "")
    n, head = len(digits), int(digits[:4])
    for k, lo, hi, lengths in _BRANDS:
        if n in lengths and lo <= head // _SCALE[k] <= hi:
            return 95 if _luhn(digits) else None
    return None


# --- iban ----------------------------------------------------------------------------

_IBAN = re.compile(
    r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])", re.ASCII
)
# ISO 13616 registry: IBAN length per country.
IBAN_LENGTHS: dict[str, int] = {
    m[1]: int(m[2])
    for m in re.finditer(
        r"([A-Z]{2})(\d\d)",
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 "
        "DE22 DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 "
        "GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 "
        "LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 "
        "PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 "
        "TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30",
    )
}


# ISO 7064 mod 97-10 reads A as 10 ... Z as 35.
_IBAN_LETTERS = str.maketrans({chr(65 + i): str(10 + i) for i in range(26)})


def _iban_ok(compact: str) -> bool:
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 == 1


class _Iban(RegexDetector):
    """The candidate regex may run on into a following group ("BE68 5390 0754 7034 2024"):
    a candidate longer than its country's IBAN is cut at that length when the cut falls
    on a group boundary, and the hit ends there."""

    __slots__ = ()

    def find(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        for m in self.pattern.finditer(text):
            s = m.group()
            compact = s.replace(" ", "")
            want = IBAN_LENGTHS.get(compact[:2], 0)
            if len(compact) > want > 0:
                end = _alnum_end(s, want)
                if s[end : end + 1] != " ":
                    continue
                s, compact = s[:end], compact[:want]
            if _iban_ok(compact):
                hits.append(Hit(self.name, m.start(), m.start() + len(s), self.confidence))
        return hits


def _alnum_end(s: str, n: int) -> int:
    """The index just after the ``n``-th non-space character of ``s``."""
    seen = 0
    for i, ch in enumerate(s):
        if ch != " ":
            seen += 1
            if seen == n:
                return i + 1
    return len(s)


# --- us_ssn --------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w-])(\d{3})(-?)(\d{2})\2(\d{4})(?![\w-])", re.ASCII)


def _ssn(m: re.Match[str]) -> int | None:
    area, dash, group, serial = m.groups()
    a = int(area)
    if a == 0 or a == 666 or a >= 900 or group == "00" or serial == "0000":
        return None
    # An undashed 9-digit run is as often an order number: below the default floor.
    return 85 if dash else 30


# --- ipv4 / ipv6 ---------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)", re.ASCII)
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)",
    re.ASCII,
)


def _ipv4(m: re.Match[str]) -> int | None:
    try:
        ipaddress.IPv4Address(m.group())
    except ValueError:
        return None
    return 80


def _ipv6(m: re.Match[str]) -> int | None:
    s = m.group()
    if s == "::":
        return None
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return None
    return 85


# --- jwt -----------------------------------------------------------------------------

_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*(?![\w-])")
# A JOSE header is a few hundred bytes; a bigger "header" is not worth decoding.
JWT_MAX_HEADER = 4096


def _jwt(m: re.Match[str]) -> int | None:
    head = m.group().split(".", 1)[0]
    if len(head) > JWT_MAX_HEADER:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        return None
    return 95


# --- cloud keys and tokens -----------------------------------------------------------

_AWS = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_GCP = re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")
_GITHUB = re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9_])")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|.*\Z)",
    re.S,
)


def _private_key(m: re.Match[str]) -> int | None:
    # A block cut before its END line (a truncated value) is masked to the end anyway.
    return 99 if m.group().endswith("PRIVATE KEY-----") else 90


# --- high_entropy --------------------------------------------------------------------

_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{20,}={0,2}(?![A-Za-z0-9+/=_-])")
# Shorter tokens carry too little information to tell a secret from a word.
ENTROPY_MIN_LENGTH = 20
# Bits per character. Random base64 of 20 chars measures >= 3.68 in 99 % of draws and
# more when longer; identifiers that also mix upper, lower and digits rarely reach 3.5.
BASE64_MIN_ENTROPY = 3.5
# Random hex of 20 chars measures >= 2.87 in 99 % of draws (the alphabet is 16 symbols).
HEX_MIN_ENTROPY = 2.8
_HEX = re.compile(r"[0-9a-fA-F]+")
# UUIDs are identifiers, not secrets: masking them would break keys and joins.
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _shannon(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in map(s.count, set(s)))


def _high_entropy(m: re.Match[str]) -> int | None:
    s = m.group().rstrip("=")
    if len(s) < ENTROPY_MIN_LENGTH or _UUID.fullmatch(s):
        return None
    has_digit = any(c.isdigit() for c in s)
    if _HEX.fullmatch(s):
        ok = has_digit and not s.isdigit() and _shannon(s) >= HEX_MIN_ENTROPY
    else:
        # Words, paths and identifiers lack one of the three classes far more often than
        # random base64 does (20 random chars lack a digit in 3 % of draws).
        mixed = has_digit and not s.isupper() and not s.islower()
        ok = mixed and _shannon(s) >= BASE64_MIN_ENTROPY
    return 60 if ok else None


# --- registry and scan ---------------------------------------------------------------

DETECTORS: dict[str, Detector] = {}


def register(detector: Detector, *, replace: bool = False) -> Detector:
    """Add a detector under its name; an existing name needs ``replace=True``."""
    name = detector.name
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"detector name {name!r}: letters, digits and '_' only")
    if name in DETECTORS and not replace:
        raise ValueError(f"detector {name!r} is already registered")
    DETECTORS[name] = detector
    return detector


def joinable(names: Iterable[str]) -> bool:
    """Whether all these detectors may scan NUL-joined values at once (``RegexDetector``)."""
    return all(getattr(get(n), "joinable", False) is True for n in names)


def get(name: str) -> Detector:
    """The detector called ``name``; ``KeyError`` lists the known names."""
    try:
        return DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise KeyError(f"unknown detector {name!r}; known detectors: {known}") from None


def scan(
    text: str, names: Iterable[str], *, min_confidence: int = DEFAULT_MIN_CONFIDENCE
) -> list[Hit]:
    """Non-overlapping hits of the named detectors, sorted by start.

    On overlap the higher confidence wins, then the longer span, then the earlier one.
    """
    hits: list[Hit] = []
    sources = 0  # detectors that found something
    ordered = True  # ... all of them RegexDetectors (sorted, disjoint hits)
    for name in names:
        detector = DETECTORS.get(name) or get(name)
        found = [h for h in detector.find(text) if h.confidence >= min_confidence]
        if found:
            sources += 1
            ordered = ordered and isinstance(detector, RegexDetector)
            hits += found
    if len(hits) < 2 or (sources == 1 and ordered):
        # One regex's matches are already disjoint and in order: nothing to resolve
        # (a whole read of a column is scanned at once, with a hit in every row).
        return hits
    hits.sort(key=lambda h: (-h.confidence, h.start - h.end, h.start))
    # Kept spans are disjoint, so sorted by start they are sorted by end too: a new span
    # only has to be checked against its two neighbours (a long value can carry
    # thousands of hits; a pairwise check would be quadratic).
    starts: list[int] = []
    kept: list[Hit] = []
    for h in hits:
        i = bisect_right(starts, h.start)
        if (i and kept[i - 1].end > h.start) or (i < len(kept) and kept[i].start < h.end):
            continue
        starts.insert(i, h.start)
        kept.insert(i, h)
    return kept


for _d in (
    RegexDetector("email", _EMAIL, 95, precheck=_contains("@"), validate=_email, joinable=True),
    RegexDetector(
        "phone", _PHONE, 65, precheck=_digits(PHONE_MIN_DIGITS), validate=_phone, joinable=True
    ),
    RegexDetector(
        "payment_card", _CARD, 95, precheck=_digits(CARD_MIN_DIGITS), validate=_card, joinable=True
    ),
    _Iban("iban", _IBAN, 95, precheck=_digits(2), joinable=True),
    RegexDetector("us_ssn", _SSN, 85, precheck=_digits(9), validate=_ssn, joinable=True),
    RegexDetector(
        "ipv4", _IPV4, 80, precheck=lambda t: t.count(".") >= 3, validate=_ipv4, joinable=True
    ),
    RegexDetector(
        "ipv6", _IPV6, 85, precheck=lambda t: t.count(":") >= 2, validate=_ipv6, joinable=True
    ),
    RegexDetector("jwt", _JWT, 95, precheck=_contains("eyJ"), validate=_jwt, joinable=True),
    RegexDetector("aws_access_key", _AWS, 90, precheck=_contains("AKIA", "ASIA"), joinable=True),
    RegexDetector("gcp_api_key", _GCP, 90, precheck=_contains("AIza"), joinable=True),
    RegexDetector("github_token", _GITHUB, 95, precheck=_contains("gh"), joinable=True),
    RegexDetector(
        "private_key", _PRIVATE_KEY, 99, precheck=_contains("PRIVATE KEY"), validate=_private_key
    ),
    RegexDetector(
        "high_entropy",
        _TOKEN,
        60,
        precheck=lambda t: len(t) >= ENTROPY_MIN_LENGTH,
        validate=_high_entropy,
        joinable=True,
    ),
):
    register(_d)
