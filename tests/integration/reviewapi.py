"""A reviewer at the REST API, for the review tests of every protocol: lists pending
reviews and approves or denies them with a reason, as a member of a reviewer group."""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import httpx


class ReviewApi:
    def __init__(self, api_port: int, ca: str, token: str) -> None:
        self.c = httpx.Client(
            base_url=f"https://localhost:{api_port}",
            verify=ssl.create_default_context(cafile=ca),
        )
        self.h = {"Authorization": f"Bearer {token}"}

    def __enter__(self) -> ReviewApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.c.close()

    def pending(self, timeout: float = 15.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.c.get("/api/v1/reviews", headers=self.h, params={"state": "pending"})
            if got.json():
                return got.json()[0]  # type: ignore[no-any-return]
            time.sleep(0.1)
        raise AssertionError("no pending review appeared")

    def decide(self, rid: str, verb: str, reason: str) -> None:
        r = self.c.post(f"/api/v1/reviews/{rid}/{verb}", headers=self.h, json={"reason": reason})
        assert r.status_code == 200, r.text


def in_background(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; its result or exception lands in the dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as e:  # the test looks at it
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out
