"""The evidence report as a PDF (fpdf2): the same summary, control rows, charts and ledger
ranges as ``report.render_html``, for auditors who file PDFs.

Built from ``report.Facts`` only (counters and the streams' ranges), so it holds nothing the
HTML report does not. The PDF's core fonts cover Latin-1: other characters (a stream or an
identity in another script) are shown as ``?`` rather than dropped silently. Pure: returns
bytes.
"""

from __future__ import annotations

from collections import Counter
from typing import cast

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from ledgergate.services.evidence.report import (
    FRAMEWORK_NAMES,
    Facts,
    control_rows,
    period_text,
    summary_rows,
    when,
)

__all__ = ["render_pdf"]

# Landscape A4 leaves this much width for tables (mm).
_WIDTH = 277.0
_FONT = "Helvetica"


def _t(text: object) -> str:
    """Latin-1 text for the core fonts (typographic marks spelt out, the rest as ``?``)."""
    s = str(text).replace("\u2014", "-").replace("\u2026", "...").replace("\u2019", "'")
    return s.encode("latin-1", "replace").decode("latin-1")


class _Pdf(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FONT, size=8)
        self.cell(0, 8, _t(f"ledgergate evidence report - page {self.page_no()}"), align="C")


def _table(pdf: _Pdf, head: list[str], widths: list[float], rows: list[list[str]]) -> None:
    pdf.set_font(_FONT, "B", 9)
    pdf.set_fill_color(235, 238, 242)
    for h, w in zip(head, widths, strict=True):
        pdf.cell(w, 7, _t(h), border=1, fill=True)
    pdf.ln()
    pdf.set_font(_FONT, size=8)
    for row in rows:
        # each row as tall as its tallest cell
        lines = [
            len(cast(list[str], pdf.multi_cell(width, 4.5, _t(text), dry_run=True, output="LINES")))
            for text, width in zip(row, widths, strict=True)
        ]
        height = 4.5 * max(lines)
        if pdf.get_y() + height > pdf.h - 18:
            pdf.add_page()
        x, y = pdf.get_x(), pdf.get_y()
        for text, width in zip(row, widths, strict=True):
            pdf.rect(x, y, width, height)
            pdf.multi_cell(width, 4.5, _t(text), new_x=XPos.RIGHT, new_y=YPos.TOP)
            x += width
            pdf.set_xy(x, y)
        pdf.set_xy(pdf.l_margin, y + height)


def _bars(pdf: _Pdf, title: str, data: Counter[str], limit: int = 10) -> None:
    rows = data.most_common(limit)
    pdf.set_font(_FONT, "B", 10)
    pdf.cell(0, 7, _t(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FONT, size=8)
    if not rows:
        pdf.cell(0, 5, "none in the period", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        return
    top = max(v for _, v in rows) or 1
    for label, v in rows:
        if pdf.get_y() > pdf.h - 20:
            pdf.add_page()
        y = pdf.get_y()
        pdf.cell(60, 5, _t(label[:40]))
        pdf.set_fill_color(74, 123, 208)
        pdf.rect(pdf.l_margin + 62, y + 1, max(120 * v / top, 0.5), 3.5, style="F")
        pdf.set_x(pdf.l_margin + 62 + 120 * v / top + 2)
        pdf.cell(20, 5, str(v), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)


def render_pdf(facts: Facts) -> bytes:
    pdf = _Pdf(orientation="L", format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title("ledgergate evidence report")
    pdf.set_creator("ledgergate")
    pdf.add_page()
    pdf.set_font(_FONT, "B", 16)
    name = FRAMEWORK_NAMES.get(facts.framework, facts.framework)
    pdf.cell(0, 10, _t(f"Evidence report: {name}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FONT, size=9)
    pdf.multi_cell(
        0,
        5,
        _t(
            f"Period: {period_text(facts)}. Generated "
            f"{when(facts.generated_ns)}. Every row is proved by the ledger ranges it names: "
            "run python3 verify.py on the bundle with the gateway's published key."
        ),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(2)
    _table(pdf, ["what", "in the period"], [80, 40], summary_rows(facts))
    pdf.ln(4)
    pdf.set_font(_FONT, "B", 12)
    pdf.cell(0, 8, "Controls", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    rows = [
        [c.cid, c.asks, c.answer + "\n" + "\n".join(c.counts), c.ranges]
        for c in control_rows(facts)
    ]
    _table(pdf, ["control", "requirement", "evidence in this bundle", "ledger range"],
           [20, 60, 117, 80], rows)  # fmt: skip
    pdf.add_page()
    pdf.set_font(_FONT, "B", 12)
    pdf.cell(0, 8, "Activity", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _bars(pdf, "Sessions per day", facts.sessions_by_day)
    _bars(pdf, "Sessions per identity", facts.sessions_by_identity)
    _bars(pdf, "Blocked attempts per rule", facts.blocked_by_rule)
    _bars(pdf, "Authentication failures per identity", facts.auth_failures_by_identity)
    _bars(pdf, "Masked values per rule", facts.masked_by_rule)
    _bars(pdf, "Review events per state", facts.reviews_by_state)
    pdf.set_font(_FONT, "B", 12)
    pdf.cell(0, 8, "Ledger streams", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    streams = [
        [
            s,
            f"{m['first']}..{m['end'] - 1}",
            f"{m['period']['first']}..{m['period']['end'] - 1}",
            str(m["checkpoint"]["size"]),
            m["checkpoint"]["root"][:32],
            when(m["checkpoint"]["ts_ns"]),
        ]
        for s, m in sorted(facts.streams.items())
    ]
    _table(pdf, ["stream", "entries exported", "period", "checkpoint", "root", "signed"],
           [60, 35, 35, 25, 72, 50], streams)  # fmt: skip
    return bytes(pdf.output())
