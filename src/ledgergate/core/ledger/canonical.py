"""Canonical JSON: the one byte encoding of anything the ledger hashes.

Sorted keys, compact separators, UTF-8, integers only (floats are refused because
their text form is not canonical across implementations). Pure.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["CanonicalError", "canonical_json"]

_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


class CanonicalError(ValueError):
    """A value that has no canonical encoding (float, bytes, non-string key...)."""


def _check(obj: Any) -> None:
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise CanonicalError(f"non-string key {k!r}")
            _check(v)
        return
    if t is list or t is tuple:
        for v in obj:
            _check(v)
        return
    raise CanonicalError(f"{t.__name__} has no canonical JSON encoding (integers only, no floats)")


def canonical_json(obj: Any) -> bytes:
    _check(obj)
    return _encode(obj).encode("utf-8")
