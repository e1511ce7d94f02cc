"""What a listener learns when it admits a credential, whatever the protocol.

``Admitted`` is the answer of the access service to "may this token (or access key)
reach this connection now": who it is, until when, under which grant and access window.
PostgreSQL, HTTP, S3 and Kafka listeners all admit through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Admitted"]


@dataclass(frozen=True, slots=True)
class Admitted:
    ok: bool
    identity: dict[str, Any] | None
    token_id: str | None
    reason: str | None
    denied: bool = False
    expires_ns: int = 2**63 - 1
    via: str = "token"
    grant: str | None = None
    window: tuple[str, int] | None = None
