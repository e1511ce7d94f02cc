"""Kafka's framing: every request and response is a 4-byte big-endian size, then that
many bytes.

Owns cutting a byte stream into whole frames, as they arrive, without copying a frame
that arrived in one read, and bounding a frame's size before any of it is buffered.
Knows nothing of what a frame holds (``messages`` reads headers and bodies).
Sans-IO: bytes in, frames out.
"""

from __future__ import annotations

__all__ = ["MAX_FRAME", "FrameError", "FrameReader", "frame"]

# Kafka's own default for socket.request.max.bytes is 100 MiB: a frame larger than that
# is refused by brokers too, so the gateway never buffers more for one request.
MAX_FRAME = 100 * 1024 * 1024


class FrameError(ValueError):
    """The peer sent a frame size that no Kafka peer sends (negative or beyond the cap)."""


def frame(body: bytes) -> bytes:
    """``body`` with its size prefix."""
    return len(body).to_bytes(4, "big") + body


class FrameReader:
    """Feed it reads, take whole frames (the bytes after each size prefix).

    A frame that arrived inside one read is a ``memoryview`` slice of that read (no
    copy); one that spans reads is assembled once. ``limit`` caps a frame's size: the
    first four bytes of an oversized frame raise ``FrameError`` before anything more is
    buffered. ``pending`` is how many bytes of an unfinished frame are held.
    """

    __slots__ = ("_buf", "_need", "limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._need = -1  # size of the frame being assembled, -1: still reading its prefix

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> list[memoryview]:
        out: list[memoryview] = []
        view = memoryview(data)
        pos, end = 0, len(view)
        buf = self._buf
        if buf or self._need >= 0:
            # Finish the frame (or its prefix) left over from the earlier reads.
            if self._need < 0:
                take = min(4 - len(buf), end)
                buf += view[:take]
                pos = take
                if len(buf) < 4:
                    return out
                self._need = self._size(buf)
                buf.clear()
            take = min(self._need - len(buf), end - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) < self._need:
                return out
            out.append(memoryview(bytes(buf)))
            buf.clear()
            self._need = -1
        while pos < end:
            if end - pos < 4:
                buf += view[pos:end]
                return out
            size = self._size(view[pos : pos + 4])
            pos += 4
            if end - pos >= size:
                out.append(view[pos : pos + size])
                pos += size
            else:
                self._need = size
                buf += view[pos:end]
                return out
        return out

    def _size(self, prefix: bytes | bytearray | memoryview) -> int:
        size = int.from_bytes(prefix, "big", signed=True)
        if size < 0 or size > self.limit:
            raise FrameError(f"frame size {size} is outside 0..{self.limit}")
        return size
