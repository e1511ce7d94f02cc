"""Masking Kafka record values in flight: a partition's fetched batches, rewritten.

Owns turning the ``records`` of one Fetch response partition into what the client may
see under a session's mask rules: every record value of every data batch goes through
the document masker (JSON by field paths, then detectors on its strings; a value that is
not JSON is scanned as text by detectors). A value that cannot be masked under a field
rule (not JSON, not UTF-8) is replaced whole, never passed raw. A batch whose values
all come out unchanged is passed as the bytes that arrived; one that changed is built
again (``wire.kafka.records.encode_batch``: same offsets, timestamps, producer state,
codec and flags; new CRC). Control batches pass untouched; a trailing partial batch
(fetch size limits) is dropped, as clients drop it. Which records and offsets a
response holds never changes. Pure.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from ledgergate.core.masking.document import DocumentMasker, Unmaskable
from ledgergate.wire.kafka import records as kr

__all__ = ["WITHHELD", "mask_partition"]

# What a value that cannot be masked under a field rule becomes (valid JSON, so
# consumers that parse values see a clear marker rather than a parse error).
WITHHELD = b'{"ledgergate":"value withheld: it cannot be masked under the mask rules"}'


def _mask_value(m: DocumentMasker, value: bytes, counts: Counter[tuple[str, str]]) -> bytes:
    found: Counter[tuple[str, str]]
    try:
        out, found = m.mask("application/json", value)
    except Unmaskable:
        has_fields = any(r.fields for r in m.rules)
        try:
            if has_fields:
                raise
            out, found = m.mask("text/plain", value)
        except Unmaskable:
            for r in m.rules:
                counts[("value withheld", r.rule)] += 1
            return WITHHELD
    if not found:
        return value  # nothing to mask: the bytes as produced (JSON is not re-serialised)
    counts.update(found)
    return out


def mask_partition(
    m: DocumentMasker, data: bytes | memoryview
) -> tuple[bytes | None, Counter[tuple[str, str]]]:
    """(the records as the client may see them, or None if nothing changed; counts of
    what was masked by field or detector and rule). Raises ``RecordsError`` on batches
    that do not parse."""
    walked = kr.read_batches(data, allow_partial=True)
    counts: Counter[tuple[str, str]] = Counter()
    parts: list[bytes | memoryview] = []
    changed = walked.partial is not None
    for b in walked.batches:
        if b.header.is_control or b.header.record_count == 0:
            parts.append(b.data)
            continue
        recs = kr.decode_records(b)
        new = []
        touched = False
        for r in recs:
            if r.value is None:
                new.append(r)
                continue
            v = _mask_value(m, r.value, counts)
            if v is not r.value:
                touched = True
                new.append(dataclasses.replace(r, value=v))
            else:
                new.append(r)
        if touched:
            parts.append(kr.encode_batch(b.header, new))
            changed = True
        else:
            parts.append(b.data)
    if not changed:
        return None, counts
    return b"".join(parts), counts
