"""The evidence report as the auditor reads it: the PDF rendered and read back with
pdftotext (every control row is there), the HTML opened in headless Chromium (its DOM
holds every control row and the charts; a screenshot is taken)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from ledgergate.core.config import parse_config
from ledgergate.services.evidence.bundle import export_evidence
from ledgergate.services.evidence.records import state_snapshot
from ledgergate.services.evidence.report import CONTROLS
from tests.services.synth import T0
from tests.services.test_sessions import S, _ledger

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    led = _ledger(tmp_path / "data")
    st = led.store()
    out = tmp_path / "evidence.zip"
    try:
        export_evidence(
            st, led.signer, out, since_ns=None, until_ns=None, framework="all",
            state=state_snapshot(st, parse_config({}), T0 + 1000 * S), now_ns=T0 + 1000 * S,
        )  # fmt: skip
    finally:
        st.close()
    with zipfile.ZipFile(out) as zf:
        zf.extract("report.pdf", tmp_path)
        zf.extract("report.html", tmp_path)
    return out


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs pdftotext (poppler-utils)")
def test_the_pdf_report_has_every_control_row(bundle: Path) -> None:
    pdf = bundle.parent / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for cid in CONTROLS:
        assert cid in text, cid
    assert "Evidence report: SOC 2 and ISO/IEC 27001:2022" in text
    assert "Sessions per identity" in text and "gateway@gw" in text


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_the_html_report_renders_in_a_real_browser(bundle: Path) -> None:
    assert CHROMIUM is not None
    html = bundle.parent / "report.html"
    shot = bundle.parent / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    for cid in CONTROLS:
        assert f"<b>{cid}</b>" in dom, cid
    assert dom.count("<svg") >= 2
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2400", html.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, 2400)
    assert len(png) > 50_000  # a page of tables and charts, not a blank image
