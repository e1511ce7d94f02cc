"""The insights report as people read it: Markdown (for a ticket or a post-mortem), one
self-contained HTML file with charts (inline CSS and SVG, no script), or JSON. Built from
``services.insights`` only; every finding keeps its entry reference. Pure: no I/O."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter
from typing import Any

from ledgergate.services.evidence.report import CSS, bars_svg, html_table
from ledgergate.services.insights import Finding, Insights

__all__ = ["render", "render_html", "render_markdown"]


def _when(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "never"
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _findings(fs: list[Finding]) -> list[list[str]]:
    return [[_when(f.ts_ns), f.identity, f.connection or "-", f.what, f.entry] for f in fs]


def _sections(ins: Insights) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, what it means, columns, rows) of each part of the report."""
    secs = sorted(ins.decision_seconds)
    median = f"{secs[len(secs) // 2]:.0f} s" if secs else "-"
    cols = ["when", "identity", "connection", "what", "entry"]
    return [
        ("Privileged commands", "DDL and role changes, writes without WHERE, bucket, topic "
         "and API administration.", cols, _findings(ins.privileged)),
        ("Blocked attempts", "Commands the guardrails refused, with their rule.", cols,
         _findings(ins.blocked)),
        ("Self-approval attempts", "Someone tried to decide on their own request.", cols,
         _findings(ins.self_approval_attempts)),
        ("Reviews", f"Decisions: {sum(ins.decisions_by_reviewer.values())}; median time to "
         f"decision {median}.", ["reviewer", "decisions"],
         [[k, str(v)] for k, v in ins.decisions_by_reviewer.most_common()]),
        ("First-time access", "An identity reached a table, bucket, topic or path it had "
         f"not reached in the {ins.options.baseline_days} days before.", cols,
         _findings(ins.first_access)),
        ("Off-hours sessions", "Sessions opened outside working hours "
         f"({ins.options.work_hours[0]:02d}:00-{ins.options.work_hours[1]:02d}:00 UTC, "
         "Monday to Friday).", cols, _findings(ins.off_hours)),
        ("Long sessions", f"Sessions longer than {ins.options.long_session_hours:g} h.", cols,
         _findings(ins.long_sessions)),
        ("Volume against baseline", f"Bytes moved, above {ins.options.volume_factor:g}x the "
         "identity's own usual rate.", ["identity", "bytes", "usual", "ratio"],
         [[v["identity"], str(v["bytes"]), str(v["usual_bytes"]), f"{v['ratio']}x"]
          for v in ins.volume]),
        ("Stale identities", f"No session in {ins.options.stale_days} days.",
         ["identity", "kind", "last session"],
         [[s["identity"], s["kind"], _when(s["last_session_ns"])] for s in ins.stale_identities]),
        ("Stale tokens", f"Valid, unused for {ins.options.stale_days} days.",
         ["token", "identity", "last used"],
         [[t["id"], t["identity"], _when(t["last_used_ns"])] for t in ins.stale_tokens]),
        ("Long-lived tokens", f"Tokens valid for more than {ins.options.max_token_days} days.",
         ["token", "identity", "days"],
         [[t["id"], t["identity"], str(t["days"])] for t in ins.long_lived_tokens]),
    ]  # fmt: skip


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(ins: Insights, timeline: list[dict[str, Any]] | None = None) -> str:
    o = ins.options
    out = [
        f"# Insights {_when(o.since_ns)} to {_when(o.until_ns)}",
        "",
        f"{ins.sessions} sessions, {ins.commands} commands, "
        f"{sum(ins.privileged_count.values())} privileged, "
        f"{sum(ins.blocked_by_rule.values())} blocked.",
    ]
    for title, means, cols, rows in _sections(ins):
        out += ["", f"## {title}", "", means, ""]
        if not rows:
            out.append("None.")
            continue
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    if timeline is not None:
        out += ["", "## Incident timeline", ""]
        out.append("| when | kind | identity | connection | session | what | entry |")
        out.append("|---|---|---|---|---|---|---|")
        out += [
            "| " + " | ".join(_md_cell(str(c)) for c in (
                _when(e["ts_ns"]), e["kind"], e["identity"] or "-", e["connection"] or "-",
                e["session_id"] or "-", e["what"], e["entry"] or "-")) + " |"
            for e in timeline
        ]  # fmt: skip
    return "\n".join(out) + "\n"


def render_html(ins: Insights, timeline: list[dict[str, Any]] | None = None) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ledgergate insights</title><style>{CSS}</style></head><body>"
        + render_body(ins, timeline)
        + "</body></html>\n"
    )


def render_body(ins: Insights, timeline: list[dict[str, Any]] | None = None) -> str:
    """The report's HTML without its page: headings, charts (inline SVG) and tables,
    every value escaped (the web console shows it inside its own page)."""
    o = ins.options
    e = html.escape
    parts = [
        f"<h1>Insights: {e(_when(o.since_ns))} to {e(_when(o.until_ns))}</h1>",
        f"<p>{ins.sessions} sessions, {ins.commands} commands, "
        f"{sum(ins.privileged_count.values())} privileged, "
        f"{sum(ins.blocked_by_rule.values())} blocked. Each finding names its ledger entry: "
        "<code>ledgergate sessions show</code> and <code>audit prove</code> take it.</p>",
        bars_svg("Privileged commands by category", ins.privileged_count),
        bars_svg("Blocked attempts by rule", ins.blocked_by_rule),
        bars_svg("Blocked attempts by identity", ins.blocked_by_identity),
        bars_svg("Review decisions by reviewer", ins.decisions_by_reviewer),
        bars_svg("Review outcomes", ins.reviews_by_outcome),
        bars_svg("First-time access by identity", Counter(f.identity for f in ins.first_access)),
    ]
    for title, means, cols, rows in _sections(ins):
        parts.append(f"<h2>{e(title)}</h2><p class='muted'>{e(means)}</p>")
        parts.append(
            html_table(cols, [[e(c) for c in r] for r in rows]) if rows else "<p>None.</p>"
        )
    if timeline is not None:
        parts.append("<h2>Incident timeline</h2>")
        parts.append(
            html_table(
                ["when", "kind", "identity", "connection", "session", "what", "entry"],
                [[e(str(c)) for c in (
                    _when(t["ts_ns"]), t["kind"], t["identity"] or "-", t["connection"] or "-",
                    t["session_id"] or "-", t["what"], t["entry"] or "-")]
                 for t in timeline],
            )
        )  # fmt: skip
    return "\n".join(parts)


def render(ins: Insights, fmt: str, timeline: list[dict[str, Any]] | None = None) -> str:
    if fmt == "json":
        doc = ins.as_dict()
        if timeline is not None:
            doc["incident"] = timeline
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if fmt == "md":
        return render_markdown(ins, timeline)
    return render_html(ins, timeline)
