"""Review notifications, pure part: JSON and Slack bodies, links, what never appears in
them, the HMAC signature and its verification, and the ``notifications`` settings."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from ledgergate.core import notify, review
from ledgergate.core.config import ConfigError, format_duration, parse_config
from ledgergate.core.ledger.canonical import canonical_json
from ledgergate.core.notify import (
    MAX_STATEMENT_CHARS,
    SLACK_SECTION_MAX,
    NotifyError,
    SignatureError,
    json_body,
    request_headers,
    review_links,
    sign,
    slack_message,
    verify_signature,
)
from ledgergate.core.policy.rules import PolicyRule

S = 10**9
T0 = 1_700_000_000 * S
CONSOLE = "https://gw.example:8443"
SECRET = "whsec-test-0123456789"


def command_review(**over: Any) -> dict[str, Any]:
    """A pending command review in ``core.review.Review.as_dict()``'s shape, with the
    fields no notification may carry (parameter values, binding, history)."""
    r: dict[str, Any] = {
        "id": "rev_01",
        "kind": "command",
        "state": "pending",
        "rule_id": "prod-ddl",
        "connection": "prod",
        "requester": {"kind": "user", "subject": "alice@example.com", "groups": ["dev"]},
        "requirement": {"min_approvals": 1, "groups": ["dba"], "all_groups": False},
        "binding": "b" * 64,
        "created_ns": T0,
        "expires_ns": T0 + 3600 * S,
        "justification": "hotfix for INC-42",
        "statement": "DROP TABLE audit_tmp",
        "params": ["4111111111111111"],
        "session_id": "ses_1",
        "approval_valid_ns": 900 * S,
        "valid_until_ns": None,
        "duration_ns": None,
        "window_start_ns": None,
        "window_end_ns": None,
        "decided_ns": None,
        "approvals": 0,
        "decisions": [],
        "executions": [],
        "history": [{"event": "request", "state": "pending", "actor": "alice", "ts_ns": T0}],
    }
    r.update(over)
    return r


def decided(approve: bool = True) -> dict[str, Any]:
    d = {
        "reviewer": "bob",
        "groups": ["dba"],
        "approve": approve,
        "reason": "looks fine" if approve else "not during business hours",
        "ts_ns": T0 + 60 * S,
    }
    return command_review(
        state="approved" if approve else "denied", decisions=[d], decided_ns=T0 + 60 * S
    )


def body_of(event: str, review: dict[str, Any], **kw: Any) -> dict[str, Any]:
    raw = json_body(event, review, console_url=CONSOLE, delivery_id="dlv_1", **kw)
    assert raw == canonical_json(json.loads(raw))  # canonical: sorted, compact, no floats
    out: dict[str, Any] = json.loads(raw)
    return out


# -- the JSON body ----------------------------------------------------------------------


def test_json_body_describes_the_request() -> None:
    b = body_of("requested", command_review())
    assert b["version"] == 1 and b["event"] == "requested" and b["delivery_id"] == "dlv_1"
    assert b["links"] == {
        "review": f"{CONSOLE}/reviews/rev_01",
        "approve": f"{CONSOLE}/reviews/rev_01?action=approve",
        "deny": f"{CONSOLE}/reviews/rev_01?action=deny",
    }
    r = b["review"]
    assert r["id"] == "rev_01" and r["kind"] == "command" and r["state"] == "pending"
    assert r["connection"] == "prod" and r["rule"] == "prod-ddl"
    assert r["requester"] == {"kind": "user", "subject": "alice@example.com", "groups": ["dev"]}
    assert r["statement"] == {
        "text": "DROP TABLE audit_tmp",
        "sha256": hashlib.sha256(b"DROP TABLE audit_tmp").hexdigest(),
        "length": 20,
        "truncated": False,
    }
    assert r["window"] is None and r["justification"] == "hotfix for INC-42"
    assert r["decisions"] == []
    assert (r["created_ns"], r["expires_ns"], r["decided_ns"]) == (T0, T0 + 3600 * S, None)


def test_json_body_of_a_decision() -> None:
    r = body_of("denied", decided(approve=False))["review"]
    assert r["state"] == "denied" and r["decided_ns"] == T0 + 60 * S
    assert r["decisions"] == [
        {
            "reviewer": "bob",
            "groups": ["dba"],
            "decision": "deny",
            "reason": "not during business hours",
            "ts_ns": T0 + 60 * S,
        }
    ]


def test_the_latest_step_says_who_and_why() -> None:
    r = body_of("requested", command_review())["review"]
    assert (r["actor"], r["reason"]) == ("alice", None)  # from the history
    cancelled = command_review(
        state="cancelled",
        history=[
            {"event": "request", "state": "pending", "actor": "alice", "ts_ns": T0},
            {"event": "cancel", "state": "cancelled", "actor": "gateway", "reason": "gone"},
        ],
    )
    r = body_of("cancelled", cancelled)["review"]
    assert (r["actor"], r["reason"]) == ("gateway", "gone")
    text = slack_message("cancelled", cancelled, console_url=CONSOLE)["blocks"][0]["text"]["text"]
    assert "*By:* gateway: gone" in text


def test_the_outbox_notice_shape_is_accepted() -> None:
    """``services.reviews`` queues notices with ``review_id``, ``rule``, a ``window``
    mapping and the step's ``actor``/``reason``."""
    notice = {
        "event": "approved",
        "review_id": "rev_7",
        "kind": "access",
        "state": "approved",
        "rule": "prod-access",
        "connection": "prod",
        "requester": "alice",
        "actor": "bob",
        "reason": "on call",
        "justification": "INC-42",
        "statement": None,
        "window": {"duration_ns": 3600 * S, "start_ns": T0, "end_ns": T0 + 3600 * S},
        "approvals": 1,
        "expires_ns": T0 + 600 * S,
        "path": "/reviews/rev_7",
    }
    b = body_of("approved", notice)
    r = b["review"]
    assert (
        r["id"] == "rev_7" and r["rule"] == "prod-access" and r["requester"] == {"subject": "alice"}
    )
    assert r["window"] == {"duration_ns": 3600 * S, "start_ns": T0, "end_ns": T0 + 3600 * S}
    assert (r["actor"], r["reason"]) == ("bob", "on call")
    assert b["links"]["review"] == f"{CONSOLE}/reviews/rev_7"
    with pytest.raises(NotifyError, match=r"review.window must be a mapping"):
        body_of("approved", {**notice, "window": [1, 2]})


def test_access_window() -> None:
    pending = command_review(kind="access", statement=None, params=None, duration_ns=2 * 3600 * S)
    r = body_of("requested", pending)["review"]
    assert r["statement"] is None
    assert r["window"] == {"duration_ns": 2 * 3600 * S, "start_ns": None, "end_ns": None}
    approved = {
        **pending,
        "state": "approved",
        "window_start_ns": T0 + 60 * S,
        "window_end_ns": T0 + 60 * S + 2 * 3600 * S,
    }
    w = body_of("approved", approved)["review"]["window"]
    assert w["start_ns"] == T0 + 60 * S and w["end_ns"] == T0 + 7260 * S


def test_statement_text_is_left_out_when_the_recording_level_forbids_it() -> None:
    r = body_of("requested", command_review(), include_statement=False)["review"]
    assert r["statement"]["text"] is None
    assert r["statement"]["sha256"] == hashlib.sha256(b"DROP TABLE audit_tmp").hexdigest()
    raw = json_body(
        "requested", command_review(), console_url=CONSOLE, delivery_id="d", include_statement=False
    )
    assert b"DROP TABLE" not in raw


def test_a_long_statement_is_cut_and_its_digest_covers_all_of_it() -> None:
    text = "SELECT " + "x," * MAX_STATEMENT_CHARS + "1"
    st = body_of("requested", command_review(statement=text))["review"]["statement"]
    assert len(st["text"]) == MAX_STATEMENT_CHARS and st["truncated"] is True
    assert st["length"] == len(text)
    assert st["sha256"] == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_nothing_outside_the_whitelist_reaches_a_body(fmt: str) -> None:
    review = command_review(
        token="lgt_SECRETTOKEN", password="hunter2", credentials={"password": "hunter2"}
    )
    review["requester"] = {**review["requester"], "token": "lgt_SECRETTOKEN"}
    if fmt == "json":
        raw = json_body("requested", review, console_url=CONSOLE, delivery_id="dlv_1")
    else:
        raw = notify.slack_body("requested", review, console_url=CONSOLE)
    for secret in (b"lgt_SECRETTOKEN", b"hunter2", b"4111111111111111", b"b" * 64, b"ses_1"):
        assert secret not in raw


@pytest.mark.parametrize(
    "event,review,message",
    [
        ("requested", command_review(state="approved"), "needs review.state 'pending'"),
        ("approved", command_review(), "needs review.state 'approved'"),
        ("executed", command_review(), "unknown event"),
        ("requested", command_review(id=None), "review.id is required"),
        ("requested", command_review(kind="query"), "review.kind"),
        ("requested", command_review(requester=None), "review.requester is required"),
        ("requested", command_review(expires_ns=1.5), "review.expires_ns must be an integer"),
        ("requested", command_review(duration_ns=True), "review.duration_ns"),
        ("requested", command_review(decisions=[{"reviewer": "b"}]), "decisions.0.approve"),
        ("requested", command_review(decisions="x"), "review.decisions must be a list"),
        ("requested", command_review(statement=b"DROP"), "review.statement must be a string"),
        ("requested", command_review(justification="\ud800"), "cannot be encoded"),
    ],
)
def test_a_malformed_review_is_refused_naming_the_key(
    event: str, review: dict[str, Any], message: str
) -> None:
    with pytest.raises(NotifyError, match=message):
        json_body(event, review, console_url=CONSOLE, delivery_id="d")
    with pytest.raises(NotifyError, match=message):
        notify.slack_body(event, review, console_url=CONSOLE)


def test_links_quote_the_id_and_ignore_a_trailing_slash() -> None:
    links = review_links("https://gw.example:8443/console/", "rev/1?x=#")
    assert links["review"] == "https://gw.example:8443/console/reviews/rev%2F1%3Fx%3D%23"
    assert links["approve"] == links["review"] + "?action=approve"
    assert links["deny"] == links["review"] + "?action=deny"


def test_a_review_built_by_core_review_is_accepted() -> None:
    rule = PolicyRule.model_validate(
        {
            "id": "prod-ddl",
            "review": {"kind": "command", "when": {"kinds": ["ddl"]}, "reviewers": ["dba"]},
        }
    )
    r = review.new_command(
        "rev_9",
        rule,
        requester="alice",
        requester_kind="user",
        groups=["dev"],
        connection="prod",
        statement="DROP TABLE t",
        params=["secret-param"],
        session_id="ses_1",
        justification=None,
        now_ns=T0,
    )
    raw = json_body("requested", r.as_dict(), console_url=CONSOLE, delivery_id="d")
    assert b"secret-param" not in raw
    r = review.decide(r, "bob", ["dba"], True, "ok", T0 + S)
    b = body_of("approved", r.as_dict())["review"]
    assert b["decisions"][0]["decision"] == "approve" and b["rule"] == "prod-ddl"


# -- Slack ------------------------------------------------------------------------------


def test_slack_request_has_a_section_and_approve_deny_url_buttons() -> None:
    m = slack_message("requested", command_review(), console_url=CONSOLE)
    assert set(m) == {"text", "blocks"}
    assert "Review requested" in m["text"] and "rev_01" in m["text"]
    section, actions = m["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    for part in ("prod", "alice@example.com", "prod-ddl", "hotfix for INC-42"):
        assert part in text
    assert "```DROP TABLE audit_tmp```" in text and "Expires:" in text
    assert actions["type"] == "actions"
    assert [
        (b["type"], b["text"]["text"], b["url"], b.get("style")) for b in actions["elements"]
    ] == [
        ("button", "Approve", f"{CONSOLE}/reviews/rev_01?action=approve", "primary"),
        ("button", "Deny", f"{CONSOLE}/reviews/rev_01?action=deny", "danger"),
    ]
    assert all(b["text"]["type"] == "plain_text" for b in actions["elements"])


def test_slack_decision_links_to_the_review_and_names_the_reviewer() -> None:
    m = slack_message("approved", decided(), console_url=CONSOLE)
    text = m["blocks"][0]["text"]["text"]
    assert "Review approved" in text and "*Approved* by bob: looks fine" in text
    (button,) = m["blocks"][1]["elements"]
    assert button["text"]["text"] == "Open review" and button["url"] == f"{CONSOLE}/reviews/rev_01"


def test_slack_escapes_mrkdwn_and_cannot_be_broken_out_of_the_code_block() -> None:
    review = command_review(
        justification="<!channel> & <https://evil.example|click>",
        statement="SELECT 1 ``` <@U123>",
    )
    text = slack_message("requested", review, console_url=CONSOLE)["blocks"][0]["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; &lt;https://evil" in text
    assert "<@U123>" not in text
    code = text[text.index("```") :]
    assert code.count("```") == 2  # the statement's own fence is broken up


def test_slack_hides_the_statement_when_told_and_stays_under_the_section_limit() -> None:
    text = slack_message(
        "requested", command_review(), console_url=CONSOLE, include_statement=False
    )["blocks"][0]["text"]["text"]
    assert "DROP TABLE" not in text and hashlib.sha256(b"DROP TABLE audit_tmp").hexdigest() in text
    huge = command_review(
        statement="x" * 100_000,
        justification="j" * 5000,
        connection="c" * 5000,
        decisions=[{"reviewer": "r" * 500, "approve": True, "reason": "y" * 900, "ts_ns": T0}] * 10,
    )
    m = slack_message("requested", huge, console_url=CONSOLE)
    assert len(m["blocks"][0]["text"]["text"]) <= SLACK_SECTION_MAX


def test_slack_survives_a_timestamp_beyond_the_calendar() -> None:
    m = slack_message("requested", command_review(expires_ns=10**30), console_url=CONSOLE)
    assert f"{10**30} ns" in m["blocks"][0]["text"]["text"]


def test_slack_access_window() -> None:
    r = command_review(kind="access", statement=None, duration_ns=5400 * S)
    text = slack_message("requested", r, console_url=CONSOLE)["blocks"][0]["text"]["text"]
    assert "access on `prod`" in text and "*Window:* for 1h30m" in text


@pytest.mark.parametrize(
    "ns,text",
    [(0, "0s"), (999_999_999, "0s"), (45 * S, "45s"), (1800 * S, "30m"), (90061 * S, "1d1h1m1s")],
)
def test_windows_are_shown_to_the_second(ns: int, text: str) -> None:
    assert format_duration(ns) == text


# -- signing ----------------------------------------------------------------------------


BODY = b'{"event":"requested"}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, 1_700_000_000) == f"t=1700000000,v1={expected}"
    assert verify_signature(SECRET, f"t=1700000000,v1={expected}", BODY, 1_700_000_100) == (
        1_700_000_000
    )


def test_request_headers() -> None:
    h = request_headers(
        event="denied", delivery_id="dlv_7", attempt=3, body=BODY, secret=SECRET, timestamp=5
    )
    assert h["Content-Type"] == "application/json"
    assert h["X-Ledgergate-Event"] == "denied" and h["X-Ledgergate-Delivery"] == "dlv_7"
    assert h["X-Ledgergate-Attempt"] == "3" and h["X-Ledgergate-Signature"] == sign(SECRET, BODY, 5)
    unsigned = request_headers(
        event="denied", delivery_id="dlv_7", attempt=1, body=BODY, secret=None, timestamp=5
    )
    assert "X-Ledgergate-Signature" not in unsigned


@pytest.mark.parametrize(
    "secret,body,now,message",
    [
        (SECRET, BODY + b" ", 1000, "does not match"),  # changed body
        (SECRET, b'{"event":"approved"}', 1000, "does not match"),
        ("another-secret", BODY, 1000, "does not match"),  # wrong secret
        (SECRET, BODY, 1000 + 301, "outside the tolerance"),  # old timestamp (replay)
        (SECRET, BODY, 1000 - 301, "outside the tolerance"),  # from the future
    ],
)
def test_tampering_is_detected(secret: str, body: bytes, now: int, message: str) -> None:
    header = sign(SECRET, BODY, 1000)
    assert verify_signature(SECRET, header, BODY, 1000 + 300) == 1000
    with pytest.raises(SignatureError, match=message):
        verify_signature(secret, header, body, now)


def test_a_moved_timestamp_breaks_the_signature() -> None:
    mac = sign(SECRET, BODY, 1000).split("v1=")[1]
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, f"t=2000,v1={mac}", BODY, 2000)


@pytest.mark.parametrize(
    "header,message",
    [
        (None, "no signature header"),
        ("", "no signature header"),
        ("t=1000", "lacks"),
        ("v1=abc", "lacks"),
        ("t=10x0,v1=abc", "malformed signature timestamp"),
        ("t=1000,t=1000,v1=abc", "malformed signature timestamp"),
        ("t=-5,v1=abc", "malformed signature timestamp"),
        ("garbage", "malformed signature header"),
        ("t=1000,v1=" + "a" * 2000, "too long"),
        ("t=1000,v1=é", "does not match"),
    ],
)
def test_malformed_headers_are_refused(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_signature(SECRET, header, BODY, 1000)


def test_any_matching_v1_is_enough_and_unknown_schemes_are_ignored() -> None:
    good = sign(SECRET, BODY, 1000).split(",")[1]
    header = f"t=1000,v0=zzz,v1={'0' * 64},{good}"
    assert verify_signature(SECRET, header, BODY, 1000) == 1000
    assert verify_signature(SECRET.encode(), header, BODY, 1000) == 1000


def test_an_empty_secret_signs_nothing() -> None:
    with pytest.raises(ValueError):
        sign("", BODY, 1000)
    with pytest.raises(ValueError):
        verify_signature(b"", "t=1000,v1=00", BODY, 1000)


# -- settings ---------------------------------------------------------------------------


def settings(*webhooks: dict[str, Any], **top: Any) -> Any:
    return parse_config({"notifications": {"webhooks": list(webhooks), **top}}).notifications


def test_defaults() -> None:
    n = settings({"name": "hook", "url": "https://hooks.example/x", "secret": "env:HOOK"})
    assert n.console_url is None
    (w,) = n.webhooks
    assert w.format == "json" and w.secret == "env:HOOK"
    assert w.events == ["requested", "approved", "denied", "expired", "cancelled"]
    assert w.timeout_ns == 5 * S and w.max_attempts == 6
    assert parse_config({}).notifications.webhooks == []


def test_slack_needs_no_secret_and_a_url_may_be_a_secret_reference() -> None:
    n = settings(
        {"name": "slack", "url": "env:SLACK_URL", "format": "slack", "events": ["requested"]},
        console_url="https://gw.example:8443",
    )
    (w,) = n.webhooks
    assert w.secret is None and w.url == "env:SLACK_URL" and w.events == ["requested"]
    assert "SLACK_URL" not in repr(w) and "hidden" in repr(w)


@pytest.mark.parametrize(
    "hook,top,message",
    [
        ({"url": "ftp://x.example/h"}, {}, "notifications.webhooks.0.url: .*http:// or https://"),
        ({"url": "https:///nohost"}, {}, "notifications.webhooks.0.url: .*with a host"),
        ({"url": "https://x.example:99999/"}, {}, "notifications.webhooks.0.url: .*not a valid"),
        ({"url": "env:"}, {}, "notifications.webhooks.0.url: .*variable name"),
        ({"secret": None}, {}, "notifications.webhooks.0.secret: .*required for format json"),
        ({"format": "teams"}, {}, "notifications.webhooks.0.format"),
        ({"events": []}, {}, "notifications.webhooks.0.events: .*at least one event"),
        ({"events": ["approved", "approved"]}, {}, "events: .*listed twice"),
        ({"events": ["executed"]}, {}, r"notifications.webhooks.0.events.0"),
        ({"timeout": "2m"}, {}, "notifications.webhooks.0.timeout: .*at most 60s"),
        ({"timeout": "0s"}, {}, "notifications.webhooks.0.timeout"),
        ({"timeout": "soon"}, {}, "notifications.webhooks.0.timeout: .*not a duration"),
        ({"max_attempts": 0}, {}, "notifications.webhooks.0.max_attempts"),
        ({"max_attempts": 21}, {}, "notifications.webhooks.0.max_attempts"),
        ({"name": "bad name"}, {}, "notifications.webhooks.0.name"),
        ({"colour": "red"}, {}, "notifications.webhooks.0.colour: unknown key"),
        ({}, {"console_url": "gw.example"}, "notifications.console_url: .*http"),
        ({}, {"console_url": "https://gw/?a=1"}, "notifications.console_url: .*query"),
    ],
)
def test_invalid_settings_name_the_key(
    hook: dict[str, Any], top: dict[str, Any], message: str
) -> None:
    w = {"name": "hook", "url": "https://hooks.example/x", "secret": "env:HOOK", **hook}
    with pytest.raises(ConfigError, match=message):
        settings(w, **top)


def test_webhook_names_are_unique() -> None:
    w = {"name": "hook", "url": "https://hooks.example/x", "secret": "s"}
    with pytest.raises(ConfigError, match="duplicate webhook name 'hook'"):
        settings(w, w)


def test_an_invalid_url_is_never_quoted_in_the_error() -> None:
    url = "ftp://hooks.example/services/T000/B000/SECRETPATH"
    with pytest.raises(ConfigError) as e:
        settings({"name": "hook", "url": url, "format": "slack"})
    assert "SECRETPATH" not in str(e.value)
