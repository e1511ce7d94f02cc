"""Types of the native sealing of typed draft runs (see _sealer.c)."""

from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R", bound=tuple[Any, ...])

def seal_run(
    stream: str,
    size: int,
    head: bytes,
    tree: list[bytes],
    drafts: list[Any],
    start: int,
    stop: int,
    dumps: Callable[..., bytes],
    option: int,
    row_type: type[R],
    /,
) -> tuple[int, bytes, bytes, list[R]]: ...
