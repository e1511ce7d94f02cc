"""Fuzz targets for the native modules, run under AddressSanitizer and UBSan by atheris.

    python -m tests.native.fuzz TARGET [libFuzzer flags]   # e.g. -runs=20000

started by tests/native/test_fuzz_native.py with the sanitized builds of
``tests/native/sanitized.py`` loaded in place of the installed modules and the sanitizer
runtime preloaded. Each target feeds its C functions whatever the fuzzer makes (a memory
error or undefined behaviour aborts the run with the sanitizer's report) and, on every
input where the Python reference is defined, holds the C result to it byte for byte (a
difference raises ``Mismatch``, which atheris reports with the input that made it).

- ``datarows``: ``walk``, ``skip``, ``gather`` and ``rewrite`` over arbitrary bytes and over runs of
  well-formed rows cut anywhere; the mask plan's native rewrite against the Python codec
  (``RowMasking.rewrite`` vs ``RowMasking.mask`` row by row).
- ``sealer``: runs of drafts with generated fields sealed by ``Chain.seal_run`` against
  ``Chain.seal`` draft by draft: the same journal records, rows and stream state.
- ``sqlshape``: ``shape`` against ``shape_reference`` on generated statements.
- ``records``: Kafka records areas, arbitrary or well-formed with bytes changed and ends
  moved: ``_records.digests`` and ``hex_digests`` against ``digests_reference``, errors
  (their messages) included.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import Any

from tests.native import sanitized

sanitized.install()  # before the project's modules import the installed builds

import atheris  # noqa: E402

from ledgergate.core._sqlshape import shape  # noqa: E402
from ledgergate.core.ledger import Chain, Draft, StreamState  # noqa: E402
from ledgergate.core.sqltext import MAX_SHAPED, shape_reference  # noqa: E402
from ledgergate.store.base import EntryRow  # noqa: E402
from ledgergate.wire.kafka import _records  # noqa: E402
from ledgergate.wire.kafka.records import RecordsError, digests_reference  # noqa: E402
from ledgergate.wire.pg import _datarows  # noqa: E402
from ledgergate.wire.pg.frames import walk_reference  # noqa: E402
from ledgergate.wire.pg.results import build_data_row, parse_data_row  # noqa: E402


class Mismatch(AssertionError):
    """The native function and its Python reference disagree."""


def same(got: object, want: object, what: str) -> None:
    if got != want:
        raise Mismatch(f"{what}: native {got!r} != reference {want!r}")


# -- datarows ---------------------------------------------------------------------------
def skip_reference(buf: bytes, pos: int) -> tuple[int, int]:
    """The run of complete DataRow messages at ``pos`` (its end and row count)."""
    pos = max(pos, 0)
    rows = 0
    while pos + 5 <= len(buf) and buf[pos] == ord("D"):
        (ln,) = struct.unpack_from(">I", buf, pos + 1)
        if ln < 4 or ln > len(buf) - pos - 1:
            break
        pos += 1 + ln
        rows += 1
    return pos, rows


def values(fdp: Any, n: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    for _ in range(n):
        k = fdp.ConsumeIntInRange(0, 3)
        if k == 0:
            out.append(None)
        elif k == 1:
            out.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24)))
        else:
            out.append(
                fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 16)).encode("utf-8", "surrogatepass")
            )
    return out


def actions(fdp: Any, n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        code = fdp.ConsumeIntInRange(0, 4)
        if code == 0:
            out.append(None)
        elif code == 2:
            out.append((2, 0, 0, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))))
        elif code == 3:
            out.append((3, fdp.ConsumeIntInRange(0, 6), fdp.ConsumeIntInRange(0, 1), b""))
        else:
            out.append((code, 0, 0, b""))
    return out


def callback(fdp: Any) -> Callable[[int, bytes], bytes | None]:
    choice = fdp.ConsumeIntInRange(0, 3)

    def call(i: int, v: bytes) -> bytes | None:
        if choice == 0:
            return v
        if choice == 1:
            return None
        if choice == 2:
            return v[::-1] + b"*"
        raise KeyError("the callback refused")  # must reach the caller as it is

    return call


def rewrite_reference(
    buf: bytes, pos: int, acts: list[Any], call: Callable[[int, bytes], bytes | None]
) -> bytes | None:
    """What ``rewrite`` gives for the actions that need no mask function (pass, NULL,
    constant, callback), or None when another action is present."""
    if any(a is not None and a[0] not in (1, 2, 4) for a in acts):
        return None
    end, _ = skip_reference(buf, pos)
    out = []
    p = max(pos, 0)
    while p < end:
        (ln,) = struct.unpack_from(">I", buf, p + 1)
        vals = parse_data_row(buf[p + 5 : p + 1 + ln])
        for i, v in enumerate(vals):
            a = acts[i] if i < len(acts) else None
            if v is None or a is None:
                continue
            vals[i] = None if a[0] == 1 else a[3] if a[0] == 2 else call(i, v)
        out.append(build_data_row(vals))
        p += 1 + ln
    return b"".join(out)


def fuzz_datarows(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        buf = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
        pos = fdp.ConsumeIntInRange(-2, len(buf) + 2)
        well_formed = False
    else:
        width = fdp.ConsumeIntInRange(0, 6)
        rows = [values(fdp, width) for _ in range(fdp.ConsumeIntInRange(1, 4))]
        whole = b"".join(build_data_row(r) for r in rows)
        cut = fdp.ConsumeIntInRange(0, len(whole))
        tail = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)) if cut == len(whole) else b""
        buf, pos, well_formed = whole[:cut] + tail, 0, True
    view = bytearray(buf) if fdp.ConsumeBool() else buf
    same(_datarows.skip(view, pos), skip_reference(buf, pos), "skip")
    if pos >= 0:
        same(_datarows.walk(view, pos), walk_reference(buf, pos), "walk")

    cols = [fdp.ConsumeIntInRange(0, 8) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    try:
        end, n, got = _datarows.gather(view, pos, cols)
    except ValueError:
        if well_formed:
            raise
    else:
        same((end, n), skip_reference(buf, pos), "gather's run")
        p = max(pos, 0)
        want: list[list[bytes | None]] = [[] for _ in cols]
        while p < end:
            (ln,) = struct.unpack_from(">I", buf, p + 1)
            row = parse_data_row(buf[p + 5 : p + 1 + ln])
            for k, c in enumerate(cols):
                want[k].append(row[c] if c < len(row) else None)
            p += 1 + ln
        same(got, want, "gather")

    acts = actions(fdp, fdp.ConsumeIntInRange(0, 7))
    call = callback(fdp)
    try:
        out, end, n, counts, changed = _datarows.rewrite(view, pos, acts, call)
    except KeyError:
        return  # the callback's own error, passed on
    except ValueError:
        if well_formed:
            raise
        return
    same((end, n), skip_reference(buf, pos), "rewrite's run")
    same(len(counts), len(acts), "counts")
    want_out = rewrite_reference(buf, pos, acts, call)
    if want_out is not None:
        same(out, want_out, "rewrite")
    same(changed, out != buf[max(pos, 0) : end], "changed")


# -- sealer -----------------------------------------------------------------------------
STREAM = "gw-fuzz"


def field_value(fdp: Any, depth: int = 0) -> Any:
    k = fdp.ConsumeIntInRange(0, 7 if depth < 2 else 4)
    if k == 0:
        return None
    if k == 1:
        return fdp.ConsumeBool()
    if k == 2:
        return fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if k == 3:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if k == 4:
        return fdp.ConsumeIntInRange(-(2**70), 2**70)  # beyond 64 bits: the checked path
    if k == 5:
        return [field_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if k == 6:
        return {
            fdp.ConsumeUnicodeNoSurrogates(4): field_value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 3))
        }
    return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 6))  # lone surrogates: checked path


def draft(fdp: Any, i: int) -> Draft:
    fields: dict[str, Any] = {
        "session_id": field_value(fdp) if fdp.ConsumeBool() else f"s_{i:04x}",
        "identity": {"kind": "user", "subject": field_value(fdp), "groups": ["g"]},
        "chunk": {"seq": i, "size": fdp.ConsumeIntInRange(0, 1 << 20)},
    }
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        fields[fdp.ConsumeUnicodeNoSurrogates(6)] = field_value(fdp)
    kind = fdp.PickValueInList(["chunk", "command", "session.open", ""])
    ts = fdp.ConsumeIntInRange(-1, 2**64)
    return Draft(ts, kind, fields, (), True)


def fuzz_sealer(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    before = fdp.ConsumeIntInRange(0, 9)
    a, b = StreamState.genesis(STREAM), StreamState.genesis(STREAM)
    for i in range(before):
        seed = Draft(1_700_000_000_000_000_000 + i, "chunk", {"n": i}, (), True)
        Chain(a).seal(seed)
        Chain(b).seal(seed)
    drafts = [draft(fdp, i) for i in range(fdp.ConsumeIntInRange(1, 6))]
    n, records, rows = Chain(a).seal_run(drafts, 0, EntryRow)
    chain = Chain(b)
    want = [chain.seal(d) for d in drafts[:n]]
    same(len(rows), n, "rows")
    same(
        [(r.seq, r.ts_ns, r.kind, r.canonical, r.entry_hash) for r in rows],
        [(e.seq, e.ts_ns, e.kind, e.canonical, e.entry_hash) for e in want],
        "sealed",
    )
    same((a.size, a.head_hash, a.tree.hashes), (b.size, b.head_hash, b.tree.hashes), "state")
    same(len(records) > 0, n > 0, "journal records")


# -- sqlshape ---------------------------------------------------------------------------
def fuzz_sqlshape(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        sql = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, MAX_SHAPED + 8))
    else:
        alphabet = "select from where 0123456789 $'\"-/*\\x_eE.,()=\t\n"
        sql = "".join(
            alphabet[fdp.ConsumeIntInRange(0, len(alphabet) - 1)]
            for _ in range(fdp.ConsumeIntInRange(0, 64))
        )
    same(shape(sql), shape_reference(sql), f"shape of {sql!r}")


# -- records ----------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if u >> 7:
            out.append((u & 0x7F) | 0x80)
            u >>= 7
        else:
            out.append(u)
            return bytes(out)


def kafka_record(fdp: Any) -> bytes:
    """One v2 record with fuzzed deltas, key, value and headers (lengths true)."""

    def blob() -> bytes:
        if fdp.ConsumeIntInRange(0, 5) == 0:
            return _varint(-1)
        b = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
        return _varint(len(b)) + b

    rec = b"\x00" + _varint(fdp.ConsumeIntInRange(-(2**63), 2**63 - 1))
    rec += _varint(fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)) + blob() + blob()
    headers = fdp.ConsumeIntInRange(0, 3)
    rec += _varint(headers)
    for _ in range(headers):
        key = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
        rec += _varint(len(key)) + key + blob()
    return _varint(len(rec)) + rec


def fuzz_records(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    base = fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if fdp.ConsumeBool():
        area = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)))
        count = fdp.ConsumeIntInRange(-2, 12)
    else:  # well-formed records, then bytes changed or the end moved
        count = fdp.ConsumeIntInRange(0, 8)
        area = bytearray(b"".join(kafka_record(fdp) for _ in range(count)))
        for _ in range(fdp.ConsumeIntInRange(0, 3)):
            if area:
                area[fdp.ConsumeIntInRange(0, len(area) - 1)] = fdp.ConsumeIntInRange(0, 255)
        cut = fdp.ConsumeIntInRange(-4, 2)
        area = area[: len(area) + cut] if cut < 0 else area + bytes(cut)
        count += fdp.ConsumeIntInRange(-1, 1)
    try:
        want: object = digests_reference(bytes(area), count, base)
    except RecordsError as e:
        want = str(e)
    try:
        got: object = _records.digests(bytes(area), count, base)
    except ValueError as e:
        got = str(e)
    same(got, want, f"digests of {bytes(area).hex()} (count {count})")
    try:
        hexes, _, _ = _records.hex_digests(area, count)
    except ValueError as e:
        same(str(e), want, "hex_digests error")
    else:
        assert isinstance(want, list)
        same(hexes, [d.hex() for _, d, _ in want], "hex_digests")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "datarows": fuzz_datarows,
    "records": fuzz_records,
    "sealer": fuzz_sealer,
    "sqlshape": fuzz_sqlshape,
}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
