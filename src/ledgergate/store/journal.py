"""Journal segment files of one ledger stream: the durable point of a gateway's ledger.

Owns the directory ``<root>/<stream>/``: its lock, its segment files and their bytes on
disk. A write returns once the record bytes are in the operating system's page cache (so
they survive a kill -9 of the gateway) and, with ``durable``, on the disk (fdatasync, and
the directory is synced when a segment is created, so they survive power loss too).

Rules:
- One process appends to a stream at a time: ``acquire`` takes an exclusive ``flock`` on
  the stream's lock file and holds it until ``release``; a second gateway configured with
  the same stream waits, then fails with ``JournalBusy`` instead of forking the chain.
- A writer never appends to a segment it did not create: every start begins a new one, so
  a torn record can only ever be the last of a segment.
- A failed write is cut back off the segment (ftruncate to the last whole record); if even
  that fails the journal refuses further writes (the ledger fails closed).
Knows nothing of entries or stores: record bytes come from ``core.ledger.journal``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from urllib.parse import quote

from ledgergate.core.ledger.journal import header

__all__ = ["Journal", "JournalBusy", "journal_dir", "stream_dirs"]

# A new segment is started past this size, so the indexed ones can be deleted while the
# gateway keeps appending (a busy gateway writes tens of MB per minute).
SEGMENT_BYTES = 64 << 20
SUFFIX = ".lgj"
# How long ``acquire`` waits for another process (a CLI recovering a crashed gateway's
# journal holds the lock for the length of one replay).
ACQUIRE_WAIT_S = 30.0


class JournalBusy(RuntimeError):
    """Another process holds the stream's journal."""


def journal_dir(root: Path, stream: str) -> Path:
    return root / quote(stream, safe="@._-")


def stream_dirs(root: Path) -> list[Path]:
    """The stream directories under ``root`` (none if it does not exist)."""
    try:
        return sorted(p for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The journal of one stream, held by this process. Use ``Journal.acquire``."""

    def __init__(self, path: Path, stream: str, lock_fd: int, *, durable: bool) -> None:
        self.path = path
        self.stream = stream
        self.durable = durable
        self._lock_fd: int | None = lock_fd
        self._fd: int | None = None
        self.segment: Path | None = None
        self.offset = 0
        self.broken: str | None = None

    @classmethod
    def acquire(
        cls,
        root: Path,
        stream: str,
        *,
        durable: bool = False,
        wait_s: float | None = None,
    ) -> Journal:
        """Take the stream's journal, waiting up to ``wait_s`` (default
        ``ACQUIRE_WAIT_S``) for another process to let go of it."""
        path = journal_dir(root, stream)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + (ACQUIRE_WAIT_S if wait_s is None else wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise JournalBusy(
                        f"the ledger stream {stream} is in use by another ledgergate process "
                        f"(journal {path})"
                    ) from None
                time.sleep(0.05)
        return cls(path, stream, fd, durable=durable)

    # -- segments -------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        """The segment files, oldest first."""
        return sorted(p for p in self.path.iterdir() if p.name.endswith(SUFFIX))

    def start(self, first_seq: int) -> None:
        """Begin a new segment whose first entry will be ``first_seq``."""
        self._close_segment()
        name = f"{first_seq:020d}.{time.time_ns():020d}{SUFFIX}"
        seg = self.path / name
        fd = os.open(seg, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            head = header(self.stream)
            os.write(fd, head)
            if self.durable:
                os.fdatasync(fd)
                _fsync_dir(self.path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                seg.unlink()
            raise
        self._fd, self.segment, self.offset = fd, seg, len(head)

    @property
    def full(self) -> bool:
        return self.offset >= SEGMENT_BYTES

    def write(self, buf: bytes | bytearray) -> int:
        """Append ``buf`` (whole records) to the current segment; return the end offset."""
        if self.broken is not None:
            raise OSError(f"the journal of {self.stream} is unusable: {self.broken}")
        fd = self._fd
        if fd is None:
            raise OSError(f"the journal of {self.stream} has no open segment")
        start = self.offset
        try:
            n = os.write(fd, buf)
            if n < len(buf):  # a short write (a signal, a full disk): write the rest
                view = memoryview(buf)[n:]
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            if self.durable:
                os.fdatasync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, start)
            except OSError as e2:
                self.broken = f"a failed write could not be cut back ({e2.strerror})"
            raise OSError(e.errno, f"journal write failed: {e.strerror}") from None
        self.offset = start + len(buf)
        return self.offset

    def remove(self, segment: Path) -> None:
        """Delete a segment whose records are all in the store."""
        if segment == self.segment:
            raise ValueError("the open segment cannot be removed")
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.segment = None

    def release(self, *, remove_current: bool = False) -> None:
        """Close the segment (deleting it if ``remove_current``: everything in it is in the
        store) and let another process have the stream."""
        seg = self.segment
        self._close_segment()
        if remove_current and seg is not None:
            with contextlib.suppress(FileNotFoundError):
                seg.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None
