"""Types of the native DataRow loop (see _datarows.c for what it does)."""

from collections.abc import Callable, Sequence

Action = tuple[int, int, bool, bytes] | None

def skip(buf: bytes | bytearray | memoryview, pos: int, /) -> tuple[int, int]: ...
def gather(
    buf: bytes | bytearray | memoryview, pos: int, cols: Sequence[int], /
) -> tuple[int, int, list[list[bytes | None]]]: ...
def rewrite(
    buf: bytes | bytearray | memoryview,
    pos: int,
    actions: Sequence[Action],
    callback: Callable[[int, bytes], bytes | None],
    feeds: Sequence[list[bytes | None] | None] | None = None,
    /,
) -> tuple[bytes, int, int, list[int], bool]: ...

MAX_TAG: int

def walk(
    buf: bytes | bytearray | memoryview, pos: int, /
) -> tuple[int, int, tuple[bytes, ...], int]: ...
