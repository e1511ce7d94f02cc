"""RefusalBook: a client retrying with a dead token is recorded once per window, and
the next entry says how many refusals were not written."""

from __future__ import annotations

from ledgergate.proxy.kafka.gateway import RefusalBook

S = 10**9


def test_once_per_window_then_the_count() -> None:
    book = RefusalBook(window_ns=10 * S, limit=8)
    key = ("10.0.0.7", "ledgergate: token expired", "tok_1")
    assert book.note(key, 0) == 0  # first: written
    assert [book.note(key, t * S // 10) for t in range(1, 50)] == [None] * 49
    assert book.note(key, 11 * S) == 49  # written, with what was left out
    assert book.note(key, 12 * S) is None
    other = ("10.0.0.8", "ledgergate: token expired", "tok_1")
    assert book.note(other, 12 * S) == 0  # another source is its own


def test_bounded() -> None:
    book = RefusalBook(window_ns=10 * S, limit=4)
    for i in range(100):
        assert book.note((str(i), "r", None), 0) == 0
    assert len(book._seen) == 4
