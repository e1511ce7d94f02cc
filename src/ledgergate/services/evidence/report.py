"""The evidence bundle's readable report: what the period holds, mapped to the controls of
SOC 2 (2017 TSC, CC6/CC7/CC8) and ISO/IEC 27001:2022 (Annex A), each row naming the record
files and the ledger ranges and signed checkpoints that prove it.

``Facts`` is filled while the bundle's entries stream by (counters only, never a value
from a result); ``render_html`` turns it into one self-contained HTML file (inline CSS and
SVG charts, no script, nothing fetched). Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ledgergate.services.journal import subject_of

__all__ = [
    "CONTROLS",
    "CSS",
    "FRAMEWORKS",
    "FRAMEWORK_NAMES",
    "ControlRow",
    "Facts",
    "bars_svg",
    "control_rows",
    "html_table",
    "period_text",
    "render_html",
    "summary_rows",
    "when",
]

FRAMEWORKS = ("soc2", "iso27001", "all")
FRAMEWORK_NAMES = {
    "soc2": "SOC 2",
    "iso27001": "ISO/IEC 27001:2022",
    "all": "SOC 2 and ISO/IEC 27001:2022",
}

# control id -> (framework, what it asks, which evidence answers it, the record files)
CONTROLS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "CC6.1": ("soc2", "Logical access security over protected information assets",
              "Every session is tied to a verified identity and a grant; backend credentials "
              "are held by the gateway, never by the people and jobs that connect.",
              ("access", "state/grants", "state/policy")),
    "CC6.2": ("soc2", "Users are registered and authorized before access is issued",
              "Identities and tokens issued in the period, with who issued them; tokens "
              "carry a mandatory expiry.",
              ("changes", "state/identities", "state/tokens")),
    "CC6.3": ("soc2", "Access is granted, changed and removed on least privilege",
              "Grants and policy in force with their digests; revocations and disabled "
              "identities, and how long their last session lasted after deprovisioning; "
              "just-in-time reviews.",
              ("changes", "reviews", "state/grants", "state/identities")),
    "CC6.6": ("soc2", "Logical access from outside the system boundary is restricted",
              "Connections enter through the gateway over TLS; refused and blocked "
              "attempts are recorded with their source.",
              ("access", "blocked")),
    "CC6.7": ("soc2", "Transmission and movement of information is restricted",
              "Sensitive fields masked in flight (which field, which rule, how many), "
              "never the value; blocked commands.",
              ("masking", "blocked")),
    "CC7.2": ("soc2", "System components are monitored for anomalies",
              "The tamper-evident ledger of every command and chunk; authentication "
              "failures, refusals and blocked attempts.",
              ("access", "blocked")),
    "CC7.3": ("soc2", "Security events are evaluated",
              "Guardrail decisions and reviewers' decisions, with their reasons.",
              ("blocked", "reviews")),
    "CC8.1": ("soc2", "Changes are authorized, tested, approved and recorded",
              "Policy and grant changes as ledger entries with their author; risky "
              "commands held for a reviewer's approval.",
              ("changes", "reviews", "state/policy")),
    "A.5.15": ("iso27001", "Access control", "Grants and policy in force; every session "
               "admitted against them.", ("access", "state/grants", "state/policy")),
    "A.5.16": ("iso27001", "Identity management", "Identities, their source and lifecycle "
               "(provisioned, disabled).", ("changes", "state/identities")),
    "A.5.18": ("iso27001", "Access rights", "Tokens issued, rotated, revoked and expired; "
               "access reviews.", ("changes", "reviews", "state/tokens")),
    "A.8.2": ("iso27001", "Privileged access rights", "Commands held for review and their "
              "decisions; blocked privileged commands.", ("reviews", "blocked")),
    "A.8.3": ("iso27001", "Information access restriction", "Guardrails and masking "
              "applied in flight.", ("blocked", "masking", "state/policy")),
    "A.8.5": ("iso27001", "Secure authentication", "Token and IdP authentication, "
              "failures and refusals.", ("access",)),
    "A.8.11": ("iso27001", "Data masking", "What was masked, where, by which rule; the raw "
               "value never.", ("masking",)),
    "A.8.15": ("iso27001", "Logging", "Hash-chained entries, Merkle tree, signed "
               "checkpoints, verifiable offline with verify.py.", ("access", "changes")),
    "A.8.16": ("iso27001", "Monitoring activities", "Authentication failures, blocked "
               "attempts, reviews.", ("access", "blocked", "reviews")),
}  # fmt: skip


def _day(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d")


def when(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _subject(doc: dict[str, Any]) -> str:
    return subject_of(doc.get("identity")) or "-"


@dataclass
class Facts:
    since_ns: int | None
    until_ns: int | None
    generated_ns: int
    framework: str
    kinds: Counter[str] = field(default_factory=Counter)
    sessions_by_identity: Counter[str] = field(default_factory=Counter)
    sessions_by_day: Counter[str] = field(default_factory=Counter)
    blocked_by_rule: Counter[str] = field(default_factory=Counter)
    auth_failures_by_identity: Counter[str] = field(default_factory=Counter)
    masked_by_rule: Counter[str] = field(default_factory=Counter)
    reviews_by_state: Counter[str] = field(default_factory=Counter)
    record_counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def see(self, stream: str, seq: int, doc: dict[str, Any]) -> None:
        """Count one entry of the period (chunks are counted apart, unparsed)."""
        kind = str(doc.get("kind"))
        self.kinds[kind] += 1
        ts = doc.get("ts_ns")
        if kind == "session.open":
            self.sessions_by_identity[_subject(doc)] += 1
            if isinstance(ts, int):
                self.sessions_by_day[_day(ts)] += 1
        elif kind == "decision.block":
            d = doc.get("decision")
            self.blocked_by_rule[str(d.get("rule") if isinstance(d, dict) else "-")] += 1
        elif kind in ("auth.fail", "auth.denied", "login.fail"):
            self.auth_failures_by_identity[_subject(doc)] += 1
        elif kind == "mask":
            for m in doc.get("masking") or []:
                if isinstance(m, dict):
                    rule = str(m.get("detector_or_rule") or m.get("rule") or "-")
                    count = m.get("count")
                    self.masked_by_rule[rule] += count if isinstance(count, int) else 1
        elif kind.startswith("review."):
            self.reviews_by_state[kind.removeprefix("review.")] += 1


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#1d2327}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccd}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border:1px solid #d5d8dc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f3f5}code{font-size:12px}.muted{color:#667}.ok{color:#176b2c}
svg text{font:11px system-ui,sans-serif}
"""


def bars_svg(title: str, data: Counter[str], limit: int = 12) -> str:
    """A horizontal bar chart (inline SVG) of the largest counts."""
    rows = data.most_common(limit)
    if not rows:
        return f"<p class='muted'>{html.escape(title)}: none in the period.</p>"
    top = max(v for _, v in rows) or 1
    h = 22 * len(rows) + 10
    bars = []
    for i, (label, v) in enumerate(rows):
        w = int(360 * v / top)
        y = 22 * i + 5
        bars.append(
            f"<text x='0' y='{y + 13}'>{html.escape(label[:40])}</text>"
            f"<rect x='230' y='{y}' width='{max(w, 1)}' height='16' fill='#4a7bd0'/>"
            f"<text x='{236 + w}' y='{y + 13}'>{v}</text>"
        )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f"<svg role='img' aria-label='{html.escape(title)}' width='660' height='{h}'>"
        + "".join(bars)
        + "</svg></figure>"
    )


def html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class ControlRow:
    cid: str
    asks: str
    answer: str
    counts: list[str]  # "records/x.jsonl: N" per evidence file
    ranges: str  # the ledger ranges and checkpoints, one per line


def _ranges(facts: Facts) -> str:
    """The ledger ranges and checkpoints that prove every row, one stream per line."""
    out = []
    for stream, m in sorted(facts.streams.items()):
        cp = m["checkpoint"]
        out.append(
            f"{stream} {m['period']['first']}..{m['period']['end'] - 1} "
            f"(checkpoint {cp['size']}, root {cp['root'][:16]}\u2026)"
        )
    return "\n".join(out) or "no entries"


def control_rows(facts: Facts) -> list[ControlRow]:
    rows = []
    ranges = _ranges(facts)
    for cid, (fw, asks, answer, files) in CONTROLS.items():
        if facts.framework not in ("all", fw):
            continue
        counts = []
        for f in files:
            if f.startswith("state/"):
                n = len(facts.state.get(f.removeprefix("state/"), {}).get("items", []))
                counts.append(f"{f}.json: {n}")
            else:
                counts.append(f"records/{f}.jsonl: {facts.record_counts.get(f, 0)}")
        rows.append(ControlRow(cid, asks, answer, counts, ranges))
    return rows


def summary_rows(facts: Facts) -> list[list[str]]:
    return [
        ["sessions opened", str(facts.kinds.get("session.open", 0))],
        ["commands", str(facts.kinds.get("command", 0))],
        ["data chunks", str(facts.chunks)],
        ["authentication failures", str(sum(facts.auth_failures_by_identity.values()))],
        ["blocked attempts", str(facts.kinds.get("decision.block", 0))],
        ["masking records", str(facts.kinds.get("mask", 0))],
        ["review events", str(sum(facts.reviews_by_state.values()))],
    ]


def _html_controls(facts: Facts) -> list[list[str]]:
    e = html.escape
    return [
        [
            f"<b>{e(r.cid)}</b>",
            e(r.asks),
            e(r.answer) + "<br>" + "<br>".join(f"<code>{e(c)}</code>" for c in r.counts),
            "<br>".join(e(line) for line in r.ranges.split("\n")),
        ]
        for r in control_rows(facts)
    ]


def _lifecycle(facts: Facts) -> str:
    items = facts.state.get("identities", {}).get("items", [])
    rows = [
        [
            html.escape(str(i["name"])),
            html.escape(str(i.get("kind"))),
            when(i.get("disabled_ns")),
            html.escape(str(i.get("disabled_by") or "-")),
            when(i.get("last_session_end_ns")),
            html.escape(str(i.get("deprovisioning_gap") or "-")),
        ]
        for i in items
        if i.get("disabled_ns")
    ]
    if not rows:
        return "<p class='muted'>No identity was disabled.</p>"
    return html_table(
        ["identity", "kind", "disabled", "by", "last session ended", "after disabling"], rows
    )


def period_text(facts: Facts) -> str:
    if facts.since_ns is None and facts.until_ns is None:
        return "the whole recorded history"
    if facts.since_ns is None:
        return f"everything before {when(facts.until_ns)}"
    if facts.until_ns is None:
        return f"{when(facts.since_ns)} to the export"
    return f"{when(facts.since_ns)} to {when(facts.until_ns)}"


def render_html(facts: Facts) -> str:
    period = period_text(facts)
    summary = summary_rows(facts)
    streams = [
        [
            f"<code>{html.escape(s)}</code>",
            f"{m['first']}..{m['end'] - 1}",
            f"{m['period']['first']}..{m['period']['end'] - 1}",
            str(m["checkpoint"]["size"]),
            f"<code>{m['checkpoint']['root'][:32]}…</code>",
            when(m["checkpoint"]["ts_ns"]),
        ]
        for s, m in sorted(facts.streams.items())
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ledgergate evidence {html.escape(period)}</title><style>{CSS}</style></head><body>
<h1>Evidence report: {html.escape(FRAMEWORK_NAMES.get(facts.framework, facts.framework))}</h1>
<p>Period: {html.escape(period)}. Generated {when(facts.generated_ns)}. Every row below is
proved by the ledger ranges it names: run <code>python3 verify.py</code> on this bundle
with the gateway's published key (see README.txt).</p>
<h2>Summary</h2>{html_table(["what", "in the period"], summary)}
<h2>Controls</h2>
{
        html_table(
            ["control", "requirement", "evidence in this bundle", "ledger range (checkpoint)"],
            _html_controls(facts),
        )
    }
<h2>Activity</h2>
{bars_svg("Sessions per day", facts.sessions_by_day)}
{bars_svg("Sessions per identity", facts.sessions_by_identity)}
{bars_svg("Blocked attempts per rule", facts.blocked_by_rule)}
{bars_svg("Authentication failures per identity", facts.auth_failures_by_identity)}
{bars_svg("Masked values per rule", facts.masked_by_rule)}
{bars_svg("Review events per state", facts.reviews_by_state)}
<h2>Deprovisioning</h2>{_lifecycle(facts)}
<h2>Ledger streams</h2>
{html_table(["stream", "entries exported", "period", "checkpoint", "root", "signed"], streams)}
</body></html>
"""
