"""Kafka's encodings, compiled from the declarations in schema.py into codecs.

Owns the encodings of Kafka's message JSON types (int8…int64, uint16, uint32, float64,
bool, uuid, string, bytes, records, arrays, structs) in both forms: the classic one and
the flexible one of KIP-482 (compact lengths as unsigned varint length+1, and a tagged
field block closing every struct). A ``Message`` declares its fields with version
ranges; ``compile_message`` turns one version of it into a ``Codec`` of closures (each
struct's reader generated as straight-line Python from the declaration, never from
input), so the schema is walked once per version and not once per message.

Rules:
- A decoded struct is a ``dict`` of field name → value holding exactly the fields of that
  version; known tagged fields are decoded by name (absent → their default) and unknown
  ones are kept as raw bytes under ``"_tagged"`` (tag → bytes), re-emitted unchanged.
- ``records`` are never parsed here: they decode to a zero-copy ``memoryview`` slice of
  the input (records.py owns their inside).
- ``encode(decode(b)) == b`` for every canonical input. Inputs Kafka's own writers never
  produce do not round-trip byte for byte: over-long varints, a bool byte other than 0/1,
  tagged fields out of tag order, a known tagged field carrying its default value.
- Decoding raises only ``KafkaCodecError``; allocation is bounded by the input's size
  (an array's count times its elements' least size must fit in the bytes left).
  Encoding a value of the wrong shape raises ``KafkaCodecError`` too.
Pure: no I/O, no logging, no clock; knows no API (messages.py and specs/ do).
"""

from __future__ import annotations

import struct as _struct
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from ledgergate.wire.kafka.schema import (
    MAX_STRING,
    RECORDS,
    STRING,
    TYPE_ZERO,
    UUID,
    Array,
    Field,
    KafkaCodecError,
    Message,
    Primitive,
    Struct,
)

__all__ = ["MAX_UVARINT", "Codec", "compile_message", "read_uvarint", "write_uvarint"]

# An unsigned varint carries at most 32 bits (5 bytes); Kafka refuses longer ones.
MAX_UVARINT: Final = 0xFFFF_FFFF

# --- primitive readers and writers ----------------------------------------------------

Buf = memoryview
Reader = Callable[[Buf, int], tuple[Any, int]]
Writer = Callable[[bytearray, Any], None]

_I8 = _struct.Struct(">b")
_I16 = _struct.Struct(">h")
_I32 = _struct.Struct(">i")
_u_i16 = _I16.unpack_from
_u_i32 = _I32.unpack_from
_p_i16 = _I16.pack
_p_i32 = _I32.pack


def _short(need: int, have: int, what: str) -> KafkaCodecError:
    return KafkaCodecError(f"{what} of {need} bytes but only {have} bytes are left")


def read_uvarint(buf: Buf, pos: int) -> tuple[int, int]:
    """An unsigned varint (at most 5 bytes, 32 bits). IndexError when truncated."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 28:
            raise KafkaCodecError("unsigned varint longer than 5 bytes")
    if value > MAX_UVARINT:
        raise KafkaCodecError("unsigned varint beyond 32 bits")
    return value, pos


def write_uvarint(out: bytearray, value: int) -> None:
    if 0 <= value < 0x80:
        out.append(value)
        return
    if not 0 <= value <= MAX_UVARINT:
        raise KafkaCodecError(f"{value} does not fit an unsigned varint")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _length_reader(compact: bool, wide: bool) -> Callable[[Buf, int], tuple[int, int]]:
    """Reads a length prefix; -1 means null. ``wide``: int32 (bytes, arrays) not int16."""
    if compact:

        def read_compact(buf: Buf, pos: int) -> tuple[int, int]:
            b = buf[pos]
            if b < 0x80:
                return b - 1, pos + 1
            n, pos = read_uvarint(buf, pos)
            return n - 1, pos

        return read_compact
    unpack, size = (_u_i32, 4) if wide else (_u_i16, 2)

    def read_classic(buf: Buf, pos: int) -> tuple[int, int]:
        return unpack(buf, pos)[0], pos + size

    return read_classic


def _length_writer(compact: bool, wide: bool) -> Callable[[bytearray, int], None]:
    if compact:

        def write_compact(out: bytearray, n: int) -> None:
            write_uvarint(out, n + 1)

        return write_compact
    pack = _p_i32 if wide else _p_i16

    def write_classic(out: bytearray, n: int) -> None:
        out += pack(n)

    return write_classic


def _bad_length(n: int, what: str) -> KafkaCodecError:
    """The error for a negative length that is not a legitimate null."""
    if n == -1:
        return KafkaCodecError(f"null {what} where the field is not nullable")
    return KafkaCodecError(f"negative {what} length {n}")


def _var_reader(prim: Primitive, compact: bool, nullable: bool) -> Reader:
    """string, bytes or records."""
    read_len = _length_reader(compact, prim is not STRING)
    kind = prim.name

    if prim is STRING:

        def read_string(buf: Buf, pos: int) -> tuple[Any, int]:
            if compact and buf[pos] < 0x80:  # a one-byte length: skip the call
                n = buf[pos] - 1
                pos += 1
            else:
                n, pos = read_len(buf, pos)
            if n < 0:
                if n == -1 and nullable:
                    return None, pos
                raise _bad_length(n, "string")
            if n > MAX_STRING:
                raise KafkaCodecError(f"string of {n} bytes is longer than {MAX_STRING}")
            end = pos + n
            if end > len(buf):
                raise _short(n, len(buf) - pos, "string")
            return str(buf[pos:end], "utf-8"), end

        return read_string

    as_view = prim is RECORDS

    def read_bytes(buf: Buf, pos: int) -> tuple[Any, int]:
        if compact and buf[pos] < 0x80:
            n = buf[pos] - 1
            pos += 1
        else:
            n, pos = read_len(buf, pos)
        if n < 0:
            if n == -1 and nullable:
                return None, pos
            raise _bad_length(n, kind)
        end = pos + n
        if end > len(buf):
            raise _short(n, len(buf) - pos, kind)
        return (buf[pos:end] if as_view else bytes(buf[pos:end])), end

    return read_bytes


def _var_writer(prim: Primitive, compact: bool, nullable: bool, name: str) -> Writer:
    write_len = _length_writer(compact, prim is not STRING)
    is_string = prim is STRING

    def write_var(out: bytearray, value: Any) -> None:
        if value is None:
            if not nullable:
                raise KafkaCodecError(f"{name}: null in a version where it is not nullable")
            write_len(out, -1)
            return
        data = value.encode("utf-8") if is_string else value
        if is_string and len(data) > MAX_STRING:
            raise KafkaCodecError(f"{name}: string longer than {MAX_STRING} bytes")
        write_len(out, len(data))
        out += data

    return write_var


def _fixed_reader(prim: Primitive) -> Reader:
    s = _struct.Struct(">" + prim.fmt)
    unpack, size = s.unpack_from, s.size

    def read_fixed(buf: Buf, pos: int) -> tuple[Any, int]:
        return unpack(buf, pos)[0], pos + size

    return read_fixed


def _fixed_writer(prim: Primitive, name: str) -> Writer:
    if prim is UUID:  # struct's "16s" would pad or cut a wrong-sized value silently

        def write_uuid(out: bytearray, value: Any) -> None:
            if len(value) != 16:
                raise KafkaCodecError(f"{name}: a uuid is 16 bytes, not {len(value)}")
            out += value

        return write_uuid
    pack = _struct.Struct(">" + prim.fmt).pack

    def write_fixed(out: bytearray, value: Any) -> None:
        out += pack(value)

    return write_fixed


# --- compiling a struct for one version ------------------------------------------------


def _default_of(f: Field, version: int) -> Callable[[], Any]:
    """A factory for the field's default value (fresh, so callers may mutate it)."""
    if f.default is not TYPE_ZERO:
        value = f.default
        return lambda: value
    t = f.type
    if isinstance(t, Array):
        return list
    if isinstance(t, Struct):
        makers = [(g.name, _default_of(g, version)) for g in t.fields if version in g.versions]
        template = {name: make() for name, make in makers}
        if all(isinstance(v, int | str | bytes | float | None) for v in template.values()):
            return template.copy
        return lambda: {name: make() for name, make in makers}
    zero = t.zero
    return lambda: zero


def _min_size(t: Primitive | Array | Struct, version: int, flexible: bool) -> int:
    """The fewest bytes a value of ``t`` takes: an array count must fit that many."""
    if isinstance(t, Primitive):
        if t.fmt:
            return _struct.calcsize(">" + t.fmt)
        return 1 if flexible else (2 if t is STRING else 4)
    if isinstance(t, Array):
        return 1 if flexible else 4
    size = 1 if flexible else 0  # the tagged-field block
    for f in t.fields:
        if version in f.versions and not (flexible and f.tag is not None and version in f.tagged):
            size += (
                1
                if version in f.nullable and isinstance(f.type, Struct)
                else (_min_size(f.type, version, flexible))
            )
    return size


def _field_codec(f: Field, version: int, flexible: bool, label: str) -> tuple[Reader, Writer]:
    nullable = version in f.nullable
    t = f.type
    if isinstance(t, Primitive):
        if t.fmt:
            return _fixed_reader(t), _fixed_writer(t, label)
        return _var_reader(t, flexible, nullable), _var_writer(t, flexible, nullable, label)
    if isinstance(t, Struct):
        read, write = _struct_codec(t, version, flexible, label)
        if not nullable:
            return read, write
        return _nullable_struct(read, write, label)
    return _array_codec(t, version, flexible, nullable, label)


def _nullable_struct(read: Reader, write: Writer, label: str) -> tuple[Reader, Writer]:
    """A nullable struct is an int8 marker (-1 null, 1 present) then the struct."""

    def read_opt(buf: Buf, pos: int) -> tuple[Any, int]:
        marker = _I8.unpack_from(buf, pos)[0]
        if marker == -1:
            return None, pos + 1
        if marker != 1:
            raise KafkaCodecError(f"nullable struct marker {marker} is neither -1 nor 1")
        return read(buf, pos + 1)

    def write_opt(out: bytearray, value: Any) -> None:
        if value is None:
            out.append(0xFF)
        else:
            out.append(1)
            write(out, value)

    return read_opt, write_opt


def _array_codec(
    t: Array, version: int, flexible: bool, nullable: bool, label: str
) -> tuple[Reader, Writer]:
    read_len = _length_reader(flexible, True)
    write_len = _length_writer(flexible, True)
    item = t.item
    least = max(1, _min_size(item, version, flexible))  # bytes per element, at least

    def count(buf: Buf, pos: int) -> tuple[int, int]:
        if flexible and buf[pos] < 0x80:
            n = buf[pos] - 1
            pos += 1
        else:
            n, pos = read_len(buf, pos)
        if n < 0:
            if n == -1 and nullable:
                return -1, pos
            raise _bad_length(n, "array")
        if n * least > len(buf) - pos:  # refused before anything is allocated
            raise KafkaCodecError(
                f"array of {n} elements cannot fit in the {len(buf) - pos} bytes left"
            )
        return n, pos

    if isinstance(item, Primitive) and item.fmt and item is not UUID:
        fmt, size = item.fmt, _struct.calcsize(">" + item.fmt)

        def read_fixed_array(buf: Buf, pos: int) -> tuple[Any, int]:
            n, pos = count(buf, pos)
            if n < 0:
                return None, pos
            if n * size > len(buf) - pos:
                raise _short(n * size, len(buf) - pos, f"array of {n} {item.name}")
            return list(_struct.unpack_from(f">{n}{fmt}", buf, pos)), pos + n * size

        def write_fixed_array(out: bytearray, value: Any) -> None:
            if value is None:
                if not nullable:
                    raise KafkaCodecError(f"{label}: null in a version where it is not nullable")
                write_len(out, -1)
                return
            write_len(out, len(value))
            out += _struct.pack(f">{len(value)}{fmt}", *value)

        return read_fixed_array, write_fixed_array

    if isinstance(item, Struct):
        read_item, write_item = _struct_codec(item, version, flexible, label)
    elif item.fmt:
        read_item, write_item = _fixed_reader(item), _fixed_writer(item, label)
    else:
        read_item = _var_reader(item, flexible, False)
        write_item = _var_writer(item, flexible, False, label)

    def read_array(buf: Buf, pos: int) -> tuple[Any, int]:
        n, pos = count(buf, pos)
        if n < 0:
            return None, pos
        out: list[Any] = []
        append = out.append
        for _ in range(n):
            value, pos = read_item(buf, pos)
            append(value)
        return out, pos

    def write_array(out: bytearray, value: Any) -> None:
        if value is None:
            if not nullable:
                raise KafkaCodecError(f"{label}: null in a version where it is not nullable")
            write_len(out, -1)
            return
        write_len(out, len(value))
        for v in value:
            write_item(out, v)

    return read_array, write_array


# A struct's plan: steps of either a run of fixed-width fields read with one unpack
# (names, Struct) or one variable field (name, reader/writer, default).
_Run = tuple[tuple[str, ...], _struct.Struct, tuple[Any, ...]]


def _struct_codec(st: Struct, version: int, flexible: bool, label: str) -> tuple[Reader, Writer]:
    steps: list[tuple[bool, Any, Any, Any]] = []  # (is_run, key, fn, extra)
    run_names: list[str] = []
    run_fmt: list[str] = []
    run_defaults: list[Any] = []
    tagged: list[tuple[int, str, Reader, Writer, Callable[[], Any]]] = []

    def close_run() -> None:
        if run_names:
            s = _struct.Struct(">" + "".join(run_fmt))
            steps.append((True, tuple(run_names), s, tuple(run_defaults)))
            run_names.clear()
            run_fmt.clear()
            run_defaults.clear()

    for f in st.fields:
        if version not in f.versions:
            continue
        name = f"{label}.{f.name}"
        make_default = _default_of(f, version)
        if flexible and f.tag is not None and version in f.tagged:
            read, write = _field_codec(f, version, True, name)
            tagged.append((f.tag, f.name, read, write, make_default))
            continue
        t = f.type
        if isinstance(t, Primitive) and t.fmt and t is not UUID:
            run_names.append(f.name)
            run_fmt.append(t.fmt)
            run_defaults.append(make_default())
            continue
        close_run()
        read, write = _field_codec(f, version, flexible, name)
        steps.append((False, f.name, (read, write), make_default))
    close_run()
    tagged.sort(key=itemgetter(0))
    return _make_reader(steps, tagged, flexible), _make_writer(steps, tagged, flexible, label)


def _make_reader(
    steps: list[tuple[bool, Any, Any, Any]],
    tagged: list[tuple[int, str, Reader, Writer, Callable[[], Any]]],
    flexible: bool,
) -> Reader:
    """The struct's reader as straight-line code: one unpack per run of fixed-width
    fields, one call per variable field, one dict display. The source is built from
    the declarations only (names go in as ``repr`` literals), never from input."""
    known = {tag: (name, read) for tag, name, read, _, _ in tagged}
    defaults = tuple((name, make) for _, name, _, _, make in tagged)

    def read_tags(buf: Buf, pos: int, d: dict[str, Any]) -> int:
        n, pos = read_uvarint(buf, pos)
        if n > len(buf) - pos:
            raise KafkaCodecError(f"{n} tagged fields cannot fit in {len(buf) - pos} bytes")
        unknown: dict[int, bytes] = {}
        seen: set[int] = set()
        for _ in range(n):
            tag, pos = read_uvarint(buf, pos)
            size, pos = read_uvarint(buf, pos)
            end = pos + size
            if end > len(buf):
                raise _short(size, len(buf) - pos, f"tagged field {tag}")
            if tag in seen:
                raise KafkaCodecError(f"tagged field {tag} appears twice")
            seen.add(tag)
            entry = known.get(tag)
            if entry is None:
                unknown[tag] = bytes(buf[pos:end])
            else:  # read within the field's own bytes, and all of them
                value, after = entry[1](buf[:end], pos)
                if after != end:
                    raise KafkaCodecError(f"tagged field {tag} is not {size} bytes long")
                d[entry[0]] = value
            pos = end
        for name, make in defaults:
            if name not in d:
                d[name] = make()
        if unknown:
            d["_tagged"] = unknown
        return pos

    ns: dict[str, Any] = {"_read_tags": read_tags}
    lines = ["def read_struct(buf, pos):"]
    items: list[str] = []
    for i, (is_run, key, fn, _) in enumerate(steps):
        if is_run:
            ns[f"_u{i}"] = fn.unpack_from
            names = [f"v{i}_{j}" for j in range(len(key))]
            lines.append(f"    {', '.join(names)}, = _u{i}(buf, pos)")
            lines.append(f"    pos += {fn.size}")
            items += [f"{k!r}: {v}" for k, v in zip(key, names, strict=True)]
        else:
            ns[f"_r{i}"] = fn[0]
            lines.append(f"    v{i}, pos = _r{i}(buf, pos)")
            items.append(f"{key!r}: v{i}")
    lines.append(f"    d = {{{', '.join(items)}}}")
    if flexible:
        lines.append("    if buf[pos] == 0:  # no tagged fields: the common case")
        lines.append("        pos += 1")
        for k, (name, make) in enumerate(defaults):
            ns[f"_d{k}"] = make
            lines.append(f"        d[{name!r}] = _d{k}()")
        lines.append("    else:")
        lines.append("        pos = _read_tags(buf, pos, d)")
    lines.append("    return d, pos")
    exec(compile("\n".join(lines), "<kafka struct reader>", "exec"), ns)
    reader: Reader = ns["read_struct"]
    return reader


def _make_writer(
    steps: list[tuple[bool, Any, Any, Any]],
    tagged: list[tuple[int, str, Reader, Writer, Callable[[], Any]]],
    flexible: bool,
    label: str,
) -> Writer:
    plan: list[tuple[bool, Any, Any]] = []
    for is_run, key, fn, extra in steps:
        if is_run:
            plan.append((True, tuple(zip(key, extra, strict=True)), fn.pack))
        else:
            plan.append((False, (key, extra), fn[1]))
    known = [(tag, name, write, make()) for tag, name, _, write, make in tagged]
    known_tags = {tag for tag, _, _, _ in known}

    def write_tags(out: bytearray, d: dict[str, Any]) -> None:
        items: list[tuple[int, Any]] = []
        for tag, name, write, default in known:
            value = d.get(name, default)
            if value != default:
                data = bytearray()
                write(data, value)
                items.append((tag, data))
        unknown = d.get("_tagged")
        if unknown:
            for tag, raw in unknown.items():
                if tag in known_tags:
                    raise KafkaCodecError(f"{label}: tag {tag} is a known field, not raw bytes")
                items.append((tag, raw))
            items.sort(key=itemgetter(0))
        write_uvarint(out, len(items))
        for tag, data in items:
            write_uvarint(out, tag)
            write_uvarint(out, len(data))
            out += data

    def write_struct(out: bytearray, d: Any) -> None:
        get = d.get
        for is_run, key, fn in plan:
            if is_run:
                out += fn(*[get(name, dflt) for name, dflt in key])
            else:
                name, make = key
                fn(out, d[name] if name in d else make())
        if flexible:
            if known or "_tagged" in d:
                write_tags(out, d)
            else:
                out.append(0)

    return write_struct


# --- whole messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """One message in one version: ``decode(bytes) -> dict`` and ``encode(dict) -> bytes``."""

    label: str
    read: Reader
    write: Writer

    def decode(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        buf = data if isinstance(data, memoryview) else memoryview(data)
        if buf.format != "B" or buf.ndim != 1:
            buf = buf.cast("B")
        try:
            value, pos = self.read(buf, 0)
        except KafkaCodecError as exc:
            raise KafkaCodecError(f"{self.label}: {exc}") from None
        except (_struct.error, IndexError):
            raise KafkaCodecError(f"{self.label}: truncated message") from None
        except UnicodeDecodeError:
            raise KafkaCodecError(f"{self.label}: a string is not valid UTF-8") from None
        if pos != len(buf):
            raise KafkaCodecError(f"{self.label}: {len(buf) - pos} bytes after the message body")
        result: dict[str, Any] = value
        return result

    def encode(self, msg: dict[str, Any]) -> bytes:
        out = bytearray()
        try:
            self.write(out, msg)
        except KafkaCodecError:
            raise
        except (_struct.error, TypeError, AttributeError, ValueError, KeyError) as exc:
            raise KafkaCodecError(f"{self.label}: cannot encode: {exc}") from None
        return bytes(out)


def compile_message(msg: Message, version: int, label: str) -> Codec:
    """The codec of ``msg`` at ``version`` (the caller checks the version is valid)."""
    read, write = _struct_codec(msg.body, version, version in msg.flexible, label)
    return Codec(f"{label} v{version}", read, write)
