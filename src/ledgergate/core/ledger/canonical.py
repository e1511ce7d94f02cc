"""Canonical JSON: the one byte encoding of everything the ledger hashes.

Owns ``canonical_json``: sorted keys, separators ``","`` and ``":"``, UTF-8 without
``\\u`` escapes for non-ASCII text (``ensure_ascii=False``), integers only. Accepted
values: ``dict`` (``str`` keys only), ``list``, ``tuple`` (encoded as a list), ``str``,
``int``, ``bool`` and ``None`` (subclasses of these too). Anything else (``float``,
NaN, ``bytes``, sets, non-string keys, lone surrogates, nesting deeper than
``MAX_DEPTH``) raises ``CanonicalError``: floats are refused because their text form
differs between implementations, so two honest writers could hash one event two ways.

Strings are escaped the way Python's ``json`` escapes them (``"``, ``\\``, and control
characters below U+0020 as ``\\n``/``\\t``/... or ``\\u00XX``; everything else literal).
Integers are written in decimal with no limit; timestamps are nanoseconds, which exceed
2**53, so verifiers in other languages must parse integers as 64-bit or big integers.

Speed: this is on the hot path (every sealed entry). The work is one C-accelerated
``json`` encoder call plus a Python walk that only checks types (~1 µs for a ten-field
chunk entry, about a fifth of the encode). The walk runs first and bounds the depth, so
the encoder's own circular-reference check is switched off.

Must not: do I/O, read the clock, log, or accept a value whose encoding is ambiguous.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = [
    "MAX_DEPTH",
    "TYPED_ENCODER",
    "CanonicalError",
    "canonical_json",
    "canonical_json_typed",
]

# Ledger entries nest three levels (entry -> identity -> groups). A deeper value is a
# bug or an attack (and a cycle would otherwise recurse forever), so refuse it early.
MAX_DEPTH = 32

# orjson with sorted keys produces the same bytes as the json encoder below for every
# value _check accepts (UTF-8 byte order equals code point order; the same minimal
# escaping), ten times faster; tests/core/ledger pins the equivalence. It refuses
# integers beyond 64 bits, which fall back to the json encoder.
_fast = orjson.dumps
_SORT = orjson.OPT_SORT_KEYS
# The encoder ``canonical_json_typed`` tries first, as (function, option) for native
# callers (core/ledger/_sealer.c): ``function(value, option=option)``.
TYPED_ENCODER = (_fast, _SORT)
_encode = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,  # _check bounds the depth, so a cycle never reaches the encoder
).encode


class CanonicalError(ValueError):
    """A value with no canonical encoding (float, bytes, non-string key, ...)."""


class _Bad(Exception):
    """Internal: why a value was refused, and where (keys/indexes, innermost last)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where: list[str] = []


def _reject(obj: object) -> _Bad:
    if isinstance(obj, float):
        return _Bad("floats have no canonical JSON encoding (use integers)")
    return _Bad(f"{type(obj).__name__} has no canonical JSON encoding")


def _check(obj: object, depth: int) -> None:
    """Raise _Bad unless ``obj`` holds only the accepted types. The path is built only
    on failure, so the happy path does no string work."""
    if depth >= MAX_DEPTH:  # depth counts the containers around obj
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) is not str and not isinstance(k, str):
                raise _Bad(f"key {k!r} is not a string")
            tv = type(v)
            if tv is str or tv is int or tv is bool or v is None:
                continue  # the common leaves, checked inline to save a call
            try:
                _check(v, depth + 1)
            except _Bad as e:
                e.where.append(f".{k}")
                raise
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            tv = type(v)
            if tv is str or tv is int or tv is bool or v is None:
                continue
            try:
                _check(v, depth + 1)
            except _Bad as e:
                e.where.append(f"[{i}]")
                raise
    elif not (obj is None or isinstance(obj, str | int)):  # str/int subclasses: enums
        raise _reject(obj)


def canonical_json(obj: Any) -> bytes:
    """The canonical UTF-8 JSON bytes of ``obj``; raises ``CanonicalError`` naming the
    offending value's path (``$.chunk.size``)."""
    try:
        _check(obj, 0)
    except _Bad as e:
        raise CanonicalError(f"${''.join(reversed(e.where))}: {e.reason}") from None
    try:
        return _fast(obj, option=_SORT)
    except orjson.JSONEncodeError:
        pass  # big integers, str subclasses orjson declines, invalid UTF-8: json decides
    try:
        return _encode(obj).encode("utf-8")
    except UnicodeEncodeError:  # the message would quote the value: keep it out
        raise CanonicalError("$: a string is not valid Unicode (lone surrogate)") from None
    except (TypeError, ValueError) as e:  # not expected after _check; never pass one on
        raise CanonicalError(f"$: no canonical JSON encoding ({type(e).__name__})") from None


def canonical_json_typed(obj: dict[str, Any]) -> bytes:
    """``canonical_json`` of a value whose types are known to be accepted (see
    ``Draft.typed``): the same bytes, without the type walk. What the fast encoder
    declines (big integers, lone surrogates) goes through ``canonical_json``."""
    try:
        return _fast(obj, option=_SORT)
    except orjson.JSONEncodeError:
        return canonical_json(obj)
