"""Review notifications, pure part: what a webhook receives and how it is signed.

Owns the JSON and Slack bodies describing a just-in-time review event, the links to
the console, the request headers and the HMAC signature with its verification. Pure: no
clock (timestamps arrive as arguments), no I/O, no logging; ``services.notify`` sends.

The review is ``core.review.Review.as_dict()`` (any mapping of that shape). Only these
keys are read, so what else it holds (the parameter values, the binding, the history,
or a credential put there by mistake) never reaches a body::

    id (or review_id), connection      str
    rule_id (or rule)           str or None
    kind                        "command" | "access"
    state                       pending for "requested", else the event's name
    requester                   {"subject": str, "kind": str, "groups": [str]} (or a str)
    statement, justification    str or None
    duration_ns, window_start_ns, window_end_ns      int or None (access); or
    window                      {"duration_ns", "start_ns", "end_ns"}
    actor, reason               who took the latest step and why (str or None); when
                                absent, the last ``history`` item's
    decisions                   [{"reviewer": str, "groups": [str], "approve": bool,
                                  "reason": str | None, "ts_ns": int}]
    created_ns, expires_ns, decided_ns               int (ns since the epoch) or None

The JSON body is canonical JSON (sorted keys, compact, integers only)::

    {"version": 1, "event": "requested", "delivery_id": "dlv_...",
     "links": {"review": "<console>/reviews/<id>",
               "approve": "<console>/reviews/<id>?action=approve", "deny": "...deny"},
     "review": {"id", "kind", "state", "connection", "rule",
                "requester": {"subject", "kind"?, "groups"?},
                "statement": {"text", "sha256", "length", "truncated"} | null,
                "window": {"duration_ns", "start_ns", "end_ns"} | null,
                "justification", "actor", "reason",
                "decisions": [{"reviewer", "groups", "decision": "approve" | "deny",
                               "reason", "ts_ns"}],
                "created_ns", "expires_ns", "decided_ns"}}

``statement.text`` is null when the caller says the connection's recording level
forbids statement text; ``sha256`` (of the UTF-8 text) is always there.

Signature (Stripe-style), sent as ``X-Ledgergate-Signature: t=<unix seconds>,v1=<hex>``
where ``<hex>`` is HMAC-SHA256, keyed with the webhook's secret, of the ASCII timestamp,
a ``.``, then the raw body bytes. A receiver recomputes it over the bytes it received
(before any JSON parsing), compares in constant time, and refuses a timestamp more than
five minutes from its clock (replays). Several ``v1=`` entries may appear (key rotation):
one matching is enough. Each attempt is signed afresh; the body and the
``X-Ledgergate-Delivery`` id stay the same across retries, so receivers deduplicate on it.
``verify_signature`` does all of this.

The Slack body is a Slack incoming-webhook message (``text`` + ``blocks``): a section
describing the review and an actions block of URL buttons (Approve / Deny while it is
requested, Open review afterwards). It carries no secret and no signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ledgergate.core.config import NOTIFY_EVENTS, format_duration
from ledgergate.core.ledger.canonical import CanonicalError, canonical_json

__all__ = [
    "ATTEMPT_HEADER",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "NOTIFY_EVENTS",
    "SCHEMA_VERSION",
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_S",
    "NotifyError",
    "SignatureError",
    "event_view",
    "json_body",
    "request_headers",
    "review_links",
    "review_view",
    "sign",
    "slack_body",
    "slack_message",
    "verify_signature",
]

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Ledgergate-Signature"
EVENT_HEADER = "X-Ledgergate-Event"
DELIVERY_HEADER = "X-Ledgergate-Delivery"  # the idempotency key: same on every retry
ATTEMPT_HEADER = "X-Ledgergate-Attempt"
# Five minutes either way: retries are re-signed, so only clock skew and transit count.
SIGNATURE_TOLERANCE_S = 300
# A signature header is a timestamp and a few 64-digit MACs; anything longer is refused
# before it is parsed.
MAX_SIGNATURE_HEADER = 1024
# Statements can be megabytes (COPY, generated SQL): a notification carries the start
# and the digest of the whole, the console has the rest.
MAX_STATEMENT_CHARS = 16_384
# Slack refuses a section text over 3000 characters; the statement and the free text
# fields are cut well before, and the whole is cut at the limit as a last resort.
SLACK_SECTION_MAX = 3000
SLACK_STATEMENT_CHARS = 1500
SLACK_FIELD_CHARS = 300
SLACK_MAX_DECISIONS = 5

_KINDS = ("command", "access")
# body key (and key of a ``window`` mapping) -> the flat key of ``Review.as_dict()``
_WINDOW = {"duration_ns": "duration_ns", "start_ns": "window_start_ns", "end_ns": "window_end_ns"}
_TIMES = ("created_ns", "expires_ns", "decided_ns")
# The review state an event reports: a request is announced while it is pending.
_EVENT_STATE = {
    "requested": "pending",
    "approved": "approved",
    "denied": "denied",
    "expired": "expired",
    "cancelled": "cancelled",
}
_TITLES = {
    "requested": "Review requested",
    "approved": "Review approved",
    "denied": "Review denied",
    "expired": "Review expired",
    "cancelled": "Review cancelled",
}


class NotifyError(ValueError):
    """The review or event cannot be described (a caller's bug); names the key."""


class SignatureError(ValueError):
    """A webhook signature that does not verify; the message says why, never the MAC."""


# -- the review, whitelisted ------------------------------------------------------------


def _text(
    review: Mapping[str, Any], key: str, *, required: bool = False, where: str = "review"
) -> str | None:
    v = review.get(key)
    if v is None:
        if required:
            raise NotifyError(f"{where}.{key} is required")
        return None
    if not isinstance(v, str):
        raise NotifyError(f"{where}.{key} must be a string")
    return v


def _ns(v: object, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise NotifyError(f"{where} must be an integer (ns) or null")
    return v


def _groups(v: object) -> list[str] | None:
    if isinstance(v, list | tuple) and all(isinstance(g, str) for g in v):
        return list(v)
    return None


def _identity(v: object, where: str) -> dict[str, Any]:
    if isinstance(v, str):
        return {"subject": v}
    if isinstance(v, Mapping) and isinstance(v.get("subject"), str):
        out: dict[str, Any] = {"subject": v["subject"]}
        if isinstance(v.get("kind"), str):
            out["kind"] = v["kind"]
        groups = _groups(v.get("groups"))
        if groups is not None:
            out["groups"] = groups
        return out
    raise NotifyError(f"{where} must be a name or an identity with a subject")


def _statement(text: str | None, include_text: bool) -> dict[str, Any] | None:
    if text is None:
        return None
    return {
        "text": text[:MAX_STATEMENT_CHARS] if include_text else None,
        "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        "length": len(text),
        "truncated": include_text and len(text) > MAX_STATEMENT_CHARS,
    }


def _decision(d: object, where: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise NotifyError(f"{where} must be a mapping")
    if not isinstance(d.get("approve"), bool):
        raise NotifyError(f"{where}.approve must be true or false")
    if not isinstance(d.get("reviewer"), str):
        raise NotifyError(f"{where}.reviewer must be a string")
    return {
        "reviewer": d["reviewer"],
        "groups": _groups(d.get("groups")) or [],
        "decision": "approve" if d["approve"] else "deny",
        "reason": _text(d, "reason", where=where),
        "ts_ns": _ns(d.get("ts_ns"), f"{where}.ts_ns"),
    }


def _first(review: Mapping[str, Any], *keys: str) -> str:
    """The first of ``keys`` present in ``review`` (aliases: the outbox's names)."""
    return next((k for k in keys if review.get(k) is not None), keys[0])


def _window(review: Mapping[str, Any]) -> dict[str, int | None] | None:
    src = review.get("window")
    if src is not None and not isinstance(src, Mapping):
        raise NotifyError("review.window must be a mapping or null")
    if isinstance(src, Mapping):
        w = {k: _ns(src.get(k), f"review.window.{k}") for k in _WINDOW}
    else:
        w = {k: _ns(review.get(flat), f"review.{flat}") for k, flat in _WINDOW.items()}
    return w if any(v is not None for v in w.values()) else None


def _step(review: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Who took the latest step and why: ``actor``/``reason``, else the history's last."""
    if "actor" in review:
        return _text(review, "actor"), _text(review, "reason")
    history = review.get("history")
    if isinstance(history, list | tuple) and history and isinstance(history[-1], Mapping):
        last = history[-1]
        return _text(last, "actor", where="review.history"), _text(
            last, "reason", where="review.history"
        )
    return None, None


def review_view(review: Mapping[str, Any], *, include_statement: bool = True) -> dict[str, Any]:
    """The review as notifications show it: the documented keys only, checked."""
    kind = _text(review, "kind", required=True)
    if kind not in _KINDS:
        raise NotifyError(f"review.kind must be one of {', '.join(_KINDS)}")
    state = _text(review, "state", required=True)
    if review.get("requester") is None:
        raise NotifyError("review.requester is required")
    decisions = review.get("decisions") or []
    if not isinstance(decisions, list | tuple):
        raise NotifyError("review.decisions must be a list")
    actor, reason = _step(review)
    return {
        "id": _text(review, _first(review, "id", "review_id"), required=True),
        "kind": kind,
        "state": state,
        "connection": _text(review, "connection", required=True),
        "requester": _identity(review["requester"], "review.requester"),
        "rule": _text(review, _first(review, "rule_id", "rule")),
        "statement": _statement(_text(review, "statement"), include_statement),
        "window": _window(review),
        "justification": _text(review, "justification"),
        "actor": actor,
        "reason": reason,
        "decisions": [_decision(d, f"review.decisions.{i}") for i, d in enumerate(decisions)],
        **{k: _ns(review.get(k), f"review.{k}") for k in _TIMES},
    }


def review_links(console_url: str, review_id: str) -> dict[str, str]:
    """``review``, ``approve`` and ``deny`` URLs under the console's base URL."""
    base = f"{console_url.rstrip('/')}/reviews/{quote(review_id, safe='')}"
    return {"review": base, "approve": f"{base}?action=approve", "deny": f"{base}?action=deny"}


def event_view(
    event: str, review: Mapping[str, Any], *, include_statement: bool = True
) -> dict[str, Any]:
    """``review_view``, after checking ``event`` is known and is the review's state."""
    if event not in NOTIFY_EVENTS:
        raise NotifyError(f"unknown event {event!r} (one of {', '.join(NOTIFY_EVENTS)})")
    view = review_view(review, include_statement=include_statement)
    if view["state"] != _EVENT_STATE[event]:
        raise NotifyError(
            f"event {event!r} needs review.state {_EVENT_STATE[event]!r}, not {view['state']!r}"
        )
    return view


# -- JSON -------------------------------------------------------------------------------


def json_body(
    event: str,
    review: Mapping[str, Any],
    *,
    console_url: str,
    delivery_id: str,
    include_statement: bool = True,
) -> bytes:
    """The canonical JSON body of a ``json`` webhook (see the module docstring)."""
    view = event_view(event, review, include_statement=include_statement)
    return _encode(
        {
            "version": SCHEMA_VERSION,
            "event": event,
            "delivery_id": delivery_id,
            "links": review_links(console_url, view["id"]),
            "review": view,
        }
    )


def _encode(doc: dict[str, Any]) -> bytes:
    try:
        return canonical_json(doc)
    except CanonicalError as e:  # e.g. a lone surrogate in a statement
        raise NotifyError(f"the review cannot be encoded: {e}") from None


# -- Slack ------------------------------------------------------------------------------


def _esc(s: str, limit: int | None = None) -> str:
    """Slack mrkdwn: escape the three control characters; cut long text."""
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(s: str, limit: int) -> str:
    # A fence inside the text would end the code block: break it with zero-width spaces.
    return "```" + _esc(s, limit).replace("```", "`\u200b`\u200b`") + "```"


def _utc(ns: int) -> str:
    try:
        when = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):  # beyond the calendar: show the number
        return f"{ns} ns"
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _who(ident: Mapping[str, Any]) -> str:
    return _esc(str(ident["subject"]), SLACK_FIELD_CHARS)


def slack_message(
    event: str, review: Mapping[str, Any], *, console_url: str, include_statement: bool = True
) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``{"text": ..., "blocks": [...]}``."""
    v = event_view(event, review, include_statement=include_statement)
    links = review_links(console_url, v["id"])
    rid, conn = _esc(v["id"], SLACK_FIELD_CHARS), _esc(v["connection"], SLACK_FIELD_CHARS)
    what = "statement" if v["kind"] == "command" else "access"
    lines = [
        f"*{_TITLES[event]}*: {what} on `{conn}` (review `{rid}`)",
        f"*Requester:* {_who(v['requester'])}",
    ]
    if v["rule"]:
        lines.append(f"*Rule:* `{_esc(v['rule'], SLACK_FIELD_CHARS)}`")
    w = v["window"]
    if w:
        dur = w.get("duration_ns")
        span = [f"for {format_duration(dur)}"] if dur is not None else []
        span += [f"from {_utc(w['start_ns'])}"] if w.get("start_ns") is not None else []
        span += [f"until {_utc(w['end_ns'])}"] if w.get("end_ns") is not None else []
        lines.append(f"*Window:* {' '.join(span) or 'unspecified'}")
    if v["justification"]:
        lines.append(f"*Justification:* {_esc(v['justification'], SLACK_FIELD_CHARS)}")
    for d in v["decisions"][:SLACK_MAX_DECISIONS]:
        verdict = "Approved" if d["decision"] == "approve" else "Denied"
        reason = f": {_esc(d['reason'], SLACK_FIELD_CHARS)}" if d["reason"] else ""
        lines.append(f"*{verdict}* by {_esc(d['reviewer'], SLACK_FIELD_CHARS)}{reason}")
    if len(v["decisions"]) > SLACK_MAX_DECISIONS:
        lines.append(f"_and {len(v['decisions']) - SLACK_MAX_DECISIONS} more decisions_")
    if event in ("cancelled", "expired") and v["actor"]:
        reason = f": {_esc(v['reason'], SLACK_FIELD_CHARS)}" if v["reason"] else ""
        lines.append(f"*By:* {_esc(v['actor'], SLACK_FIELD_CHARS)}{reason}")
    if v["expires_ns"] is not None and event == "requested":
        lines.append(f"*Expires:* {_utc(v['expires_ns'])}")
    st = v["statement"]
    if st is not None:
        if st["text"] is not None:
            lines.append(_code(st["text"], SLACK_STATEMENT_CHARS))
        else:
            lines.append(f"_Statement text not shown (recording level); sha256 {st['sha256']}_")
    section = "\n".join(lines)
    if len(section) > SLACK_SECTION_MAX:
        section = section[: SLACK_SECTION_MAX - 1] + "…"
    if event == "requested":
        buttons = [
            _button("Approve", links["approve"], "approve", "primary"),
            _button("Deny", links["deny"], "deny", "danger"),
        ]
    else:
        buttons = [_button("Open review", links["review"], "open", None)]
    fallback = f"{_TITLES[event]}: {what} on {conn} by {_who(v['requester'])} (review {rid})"
    return {
        "text": fallback,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "actions", "elements": buttons},
        ],
    }


def _button(label: str, url: str, action_id: str, style: str | None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "url": url,
        "action_id": action_id,
    }
    if style:
        b["style"] = style
    return b


def slack_body(
    event: str, review: Mapping[str, Any], *, console_url: str, include_statement: bool = True
) -> bytes:
    """``slack_message`` encoded as canonical JSON."""
    return _encode(
        slack_message(event, review, console_url=console_url, include_statement=include_statement)
    )


# -- signing ----------------------------------------------------------------------------


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("an empty webhook secret signs nothing")
    return key


def _mac(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Ledgergate-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    return f"t={timestamp},v1={_mac(_key(secret), timestamp, body)}"


def request_headers(
    *,
    event: str,
    delivery_id: str,
    attempt: int,
    body: bytes,
    secret: str | bytes | None,
    timestamp: int,
) -> dict[str, str]:
    """The headers of one attempt; signed when there is a secret."""
    headers = {
        "Content-Type": "application/json",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        ATTEMPT_HEADER: str(attempt),
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body, timestamp)
    return headers


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    now: float,
    tolerance: int = SIGNATURE_TOLERANCE_S,
) -> int:
    """Check an ``X-Ledgergate-Signature`` header against the raw body; return its
    timestamp. Raises ``SignatureError`` when the header is missing or malformed, no
    ``v1`` MAC matches (constant-time compare), or the timestamp is more than
    ``tolerance`` seconds from ``now`` (unix seconds) either way."""
    if not header:
        raise SignatureError("no signature header")
    if len(header) > MAX_SIGNATURE_HEADER:
        raise SignatureError("signature header too long")
    timestamp: int | None = None
    macs: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise SignatureError("malformed signature timestamp")
            timestamp = int(value)
        elif name == "v1":
            macs.append(value)
        # other schemes (a future v2) are ignored, as receivers of Stripe's header do
    if timestamp is None or not macs:
        raise SignatureError("signature header lacks t= or v1=")
    expected = _mac(_key(secret), timestamp, body).encode("ascii")
    matched = False
    for m in macs:  # every candidate is compared: the time taken says nothing
        matched |= hmac.compare_digest(expected, m.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("signature does not match the body")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("signature timestamp outside the tolerance")
    return timestamp
