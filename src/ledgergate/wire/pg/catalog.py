"""The catalog snapshot a masked session reads on its own backend connection before the
client's first byte is relayed: (table OID, column number) -> ``schema.table.column``.

Sans-IO: ``query()`` is the bytes to send; ``CatalogReader.feed(bytes)`` takes the
server's answer in pieces and returns the snapshot once its ReadyForQuery arrives (None
until then). An ErrorResponse raises ValueError with the server's message.
"""

from __future__ import annotations

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.frames import FrameSplitter, build
from ledgergate.wire.pg.results import parse_data_row

__all__ = ["CATALOG_SQL", "CatalogReader", "query"]

CATALOG_SQL = (
    b"SELECT c.oid, a.attnum, n.nspname, c.relname, a.attname "
    b"FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
    b"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    b"WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','v','m','f','p') "
    b"AND n.nspname NOT IN ('pg_catalog','information_schema') "
    b"AND n.nspname NOT LIKE 'pg_toast%'"
)


def query() -> bytes:
    return build(b"Q", CATALOG_SQL + b"\x00")


class CatalogReader:
    def __init__(self) -> None:
        self._split = FrameSplitter()
        self.catalog: dict[tuple[int, int], str] = {}

    def feed(self, data: bytes) -> dict[tuple[int, int], str] | None:
        frames = self._split.feed(data)
        buf = self._split.buf
        done: dict[tuple[int, int], str] | None = None
        for tag, s, e in frames:
            body = bytes(buf[s + 5 : e])
            if tag == ord("D"):
                try:
                    oid, att, nsp, rel, col = parse_data_row(body)
                except ValueError:
                    raise ValueError("the catalog query returned an unexpected row") from None
                if oid and att and nsp and rel and col:
                    name = b".".join((nsp, rel, col)).decode("utf-8", "replace")
                    self.catalog[(int(oid), int(att))] = name
            elif tag == ord("E"):
                raise ValueError(m.parse_error_fields(body).get("M", "error"))
            elif tag == ord("Z"):
                done = self.catalog
                break
        if frames:
            self._split.consume(frames[-1][2])
        return done
