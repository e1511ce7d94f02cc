"""The catalog snapshot codec: fed whole, a byte at a time and with trailing bytes."""

from __future__ import annotations

import pytest

from ledgergate.wire.pg import messages as m
from ledgergate.wire.pg.catalog import CATALOG_SQL, CatalogReader, query
from ledgergate.wire.pg.frames import build
from ledgergate.wire.pg.results import build_data_row

ANSWER = (
    build(b"T", b"\x00\x00")  # its columns are not needed
    + build_data_row([b"16400", b"2", b"public", b"customers", b"email"])
    + build_data_row([b"16400", b"3", b"public", b"customers", None])  # skipped
    + build(b"C", b"SELECT 2\x00")
    + build(b"Z", b"I")
)
WANT = {(16400, 2): "public.customers.email"}


def test_the_query_is_one_simple_query() -> None:
    assert query() == build(b"Q", CATALOG_SQL + b"\x00")


@pytest.mark.parametrize("step", [len(ANSWER), 1, 7])
def test_fed_in_pieces_the_snapshot_comes_at_ready_for_query(step: int) -> None:
    r = CatalogReader()
    got = None
    for i in range(0, len(ANSWER), step):
        assert got is None
        got = r.feed(ANSWER[i : i + step])
    assert got == WANT


def test_trailing_bytes_after_ready_for_query_are_left() -> None:
    assert CatalogReader().feed(ANSWER + b"Z\x00") == WANT


def test_an_error_or_a_malformed_row_raises() -> None:
    err = m.error_response("42501", "permission denied for table pg_class", severity="ERROR")
    with pytest.raises(ValueError, match="permission denied"):
        CatalogReader().feed(err + build(b"Z", b"I"))
    with pytest.raises(ValueError, match="unexpected row"):
        CatalogReader().feed(build_data_row([b"1", b"2"]) + build(b"Z", b"I"))
