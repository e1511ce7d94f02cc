"""Where a publisher stopped: ``stream -> position`` kept in a small JSON file under the
data directory, written atomically (a temporary file, then a rename), so a restart
resumes there. Shared by the witnesses and the SIEM forwarders."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CursorFile"]


class CursorFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.at: dict[str, int] = {}
        if path.exists():
            self.at = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.at, sort_keys=True))
        tmp.replace(self.path)
