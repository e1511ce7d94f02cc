"""Kafka's protocol type system: how a message is declared.

Owns the types of Kafka's message JSON specs (int8…int64, uint16, uint32, float64, bool,
uuid, string, bytes, records, arrays, structs), per-field version ranges (present,
nullable, tagged), defaults, and ``Message`` (valid and flexible versions plus fields).
specs/ declares every API with ``F``, ``struct`` and ``message``; codec.py compiles a
declaration into a codec for one version. Declarations only: no encoding here, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "BOOL",
    "BYTES",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "MAX_STRING",
    "RECORDS",
    "STRING",
    "TYPE_ZERO",
    "UINT16",
    "UINT32",
    "UUID",
    "Array",
    "F",
    "Field",
    "KafkaCodecError",
    "Message",
    "Primitive",
    "Struct",
    "Versions",
    "message",
    "parse_versions",
    "struct",
]

# "N+" in a spec means every version from N on; versions are int16 on the wire.
MAX_VERSION: Final = 0x7FFF
# Kafka's generated readers refuse longer strings (the classic encoding's int16 length),
# compact ones included; we refuse them too so the broker and the gateway agree.
MAX_STRING: Final = 0x7FFF


class KafkaCodecError(ValueError):
    """Bytes (or a value) that are not a valid Kafka message. Safe to show a client."""


# --- declarations -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Versions:
    """An inclusive range of versions; empty when ``lo > hi``."""

    lo: int
    hi: int

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.lo <= version <= self.hi

    def __str__(self) -> str:
        if self.lo > self.hi:
            return "none"
        if self.hi == MAX_VERSION:
            return f"{self.lo}+"
        return f"{self.lo}" if self.lo == self.hi else f"{self.lo}-{self.hi}"


NO_VERSIONS: Final = Versions(1, 0)


def parse_versions(text: str) -> Versions:
    """A spec's version range: ``"3+"``, ``"0-12"``, ``"5"`` or ``"none"``."""
    if text == "none":
        return NO_VERSIONS
    if text.endswith("+"):
        return Versions(int(text[:-1]), MAX_VERSION)
    lo, _, hi = text.partition("-")
    return Versions(int(lo), int(hi or lo))


@dataclass(frozen=True, slots=True)
class Primitive:
    """A scalar type. ``fmt``: its struct format when fixed-width, else ``""``."""

    name: str
    fmt: str
    zero: Any


INT8: Final = Primitive("int8", "b", 0)
INT16: Final = Primitive("int16", "h", 0)
INT32: Final = Primitive("int32", "i", 0)
INT64: Final = Primitive("int64", "q", 0)
UINT16: Final = Primitive("uint16", "H", 0)
UINT32: Final = Primitive("uint32", "I", 0)
FLOAT64: Final = Primitive("float64", "d", 0.0)
BOOL: Final = Primitive("bool", "?", False)
UUID: Final = Primitive("uuid", "16s", bytes(16))
STRING: Final = Primitive("string", "", "")
BYTES: Final = Primitive("bytes", "", b"")
RECORDS: Final = Primitive("records", "", None)


@dataclass(frozen=True, slots=True)
class Struct:
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Array:
    item: Primitive | Struct


Type = Primitive | Array | Struct

# A field's default when its declaration gives none: the type's own zero value.
TYPE_ZERO: Final[Any] = object()


@dataclass(frozen=True, slots=True)
class Field:
    """One field: present in ``versions``, may be null in ``nullable``, tagged (with
    ``tag``) in ``tagged``. ``default`` is the declared default, ``TYPE_ZERO`` for the
    type's own zero value."""

    name: str
    type: Type
    versions: Versions
    nullable: Versions = NO_VERSIONS
    tag: int | None = None
    tagged: Versions = NO_VERSIONS
    default: Any = TYPE_ZERO


@dataclass(frozen=True, slots=True)
class Message:
    """One request or response body: its valid and flexible versions, and its fields."""

    valid: Versions
    flexible: Versions
    body: Struct


def F(
    name: str,
    type_: Type | list[Any],
    versions: str = "0+",
    *,
    nullable: str = "none",
    tag: int | None = None,
    tagged: str | None = None,
    default: Any = TYPE_ZERO,
) -> Field:
    """Declare a field. ``type_`` as a list: ``[INT32]`` is an array of int32,
    ``[F(…), F(…)]`` an array of that struct, ``[SOME_STRUCT]`` an array of it."""
    if isinstance(type_, list):
        if len(type_) == 1 and isinstance(type_[0], Primitive | Struct):
            type_ = Array(type_[0])
        else:
            type_ = Array(Struct(tuple(type_)))
    tagged_v = NO_VERSIONS
    if tag is not None:
        tagged_v = parse_versions(tagged if tagged is not None else versions)
    return Field(
        name, type_, parse_versions(versions), parse_versions(nullable), tag, tagged_v, default
    )


def struct(*fields: Field) -> Struct:
    return Struct(fields)


def message(valid: str, flexible: str, *fields: Field) -> Message:
    return Message(parse_versions(valid), parse_versions(flexible), Struct(fields))
