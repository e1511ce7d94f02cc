"""Load the SFTP vectors (tests/vectors/sftp/*.json) and feed byte streams three ways.

The vectors are real captures of OpenSSH's sftp against its sftp-server (see
tests/vectors/sftp/capture.py): ``reads`` are ``[direction, hex]`` in the order a relay
between them read them. A transcript is a list of ``(direction, bytes)`` steps,
``direction`` "c2s" or "s2c"; ``three_ways`` gives it whole, one byte at a time, and with
every read carrying the first bytes of the next read of its direction (trailing bytes).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DIR = Path(__file__).resolve().parents[2] / "vectors" / "sftp"
Steps = list[tuple[str, bytes]]
# A packet is at least 9 bytes (length, type, id or version): 3 trailing bytes never
# complete the next one early.
TRAIL = 3


@cache
def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DIR / f"{name}.json").read_text())
    return doc


def reads(v: dict[str, Any]) -> Steps:
    return [(d, bytes.fromhex(h)) for d, h in v["reads"]]


def stream(steps: Steps, direction: str) -> bytes:
    return b"".join(b for d, b in steps if d == direction)


def bytewise(steps: Steps) -> Steps:
    return [(d, b[i : i + 1]) for d, b in steps for i in range(len(b))]


def trailing(steps: Steps) -> Steps:
    """Each read with the first ``TRAIL`` bytes of the next read of its direction."""
    whole = {d: stream(steps, d) for d in ("c2s", "s2c")}
    ends, fed = {"c2s": 0, "s2c": 0}, {"c2s": 0, "s2c": 0}
    out: Steps = []
    for d, b in steps:
        ends[d] += len(b)
        stop = min(ends[d] + TRAIL, len(whole[d]))
        out.append((d, whole[d][fed[d] : stop]))
        fed[d] = stop
    return out


def three_ways(steps: Steps) -> dict[str, Steps]:
    return {"whole": steps, "bytewise": bytewise(steps), "trailing": trailing(steps)}
