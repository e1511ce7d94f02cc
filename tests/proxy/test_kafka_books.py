"""The Kafka gateway's bounded books: a client retrying with a dead token is recorded
once per window (the next entry says how many refusals were not written), and the
producer book keeps only the batches a broker still deduplicates."""

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


def test_producer_book_keeps_the_last_five_batches_per_producer_partition() -> None:
    from ledgergate.proxy.kafka.gateway import ProducerBook

    book = ProducerBook(limit=2)
    for seq in range(0, 100, 10):
        book.remember((7, 0, "t", 0, seq), {"command": seq})
    assert book.get((7, 0, "t", 0, 90)) == {"command": 90}
    assert book.get((7, 0, "t", 0, 50)) == {"command": 50}
    assert book.get((7, 0, "t", 0, 40)) is None  # older than the broker's window
    book.remember((8, 0, "t", 0, 0), {"command": 1})
    book.remember((9, 0, "t", 0, 0), {"command": 2})
    assert book.get((7, 0, "t", 0, 90)) is None  # least recently active producer forgotten
    assert book.get((9, 0, "t", 0, 0)) == {"command": 2}
