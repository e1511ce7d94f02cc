"""``ledgergate request | reviews`` without a gateway: they act as the logged-in person
only, and say so when nobody is logged in (the commands against a real gateway are in
tests/integration/test_reviews_api.py)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgergate.cli.main import app
from ledgergate.services import client as cl

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["reviews", "list"],
        ["reviews", "show", "rv_1"],
        ["reviews", "approve", "rv_1", "--reason", "ok"],
        ["reviews", "deny", "rv_1", "--reason", "no"],
        ["reviews", "cancel", "rv_1"],
        ["request", "access", "prod", "--for", "30m", "--reason", "INC-1"],
    ],
)
def test_nobody_logged_in(tmp_path: Path, args: list[str]) -> None:
    r = runner.invoke(app, args, env={"LEDGERGATE_CREDENTIALS": str(tmp_path / "none.json")})
    assert r.exit_code == 1 and "not logged in; run ledgergate login" in r.output


def test_an_expired_login_and_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    cl.save(
        cl.Credentials(
            "https://127.0.0.1:1", None, "lgt_x", "tok_1", "erin", (), (), time.time_ns() - 1
        ),
        path,
    )
    env = {"LEDGERGATE_CREDENTIALS": str(path)}
    r = runner.invoke(app, ["reviews", "list"], env=env)
    assert r.exit_code == 1 and "expired; run ledgergate login" in r.output
    r = runner.invoke(app, ["request", "access", "prod", "--for", "a while"], env=env)
    assert r.exit_code == 2 and "not a duration" in r.output
    r = runner.invoke(app, ["reviews", "approve", "rv_1"], env=env)
    assert r.exit_code == 2  # --reason is required


def _logged_in(tmp_path: Path, gateway: str, ca: str | None = None) -> dict[str, str]:
    path = tmp_path / "creds.json"
    cl.save(
        cl.Credentials(gateway, ca, "lgt_x", "tok_1", "erin", (), (), time.time_ns() + 60 * 10**9),
        path,
    )
    return {"LEDGERGATE_CREDENTIALS": str(path)}


@pytest.mark.parametrize(
    "args",
    [
        ["reviews", "approve", "rv_1", "--reason", "x" * 1001],
        ["reviews", "cancel", "rv_1", "--reason", "x" * 1001],
        ["request", "access", "prod", "--for", "30m", "--reason", "x" * 1001],
    ],
)
def test_a_reason_the_gateway_would_refuse_is_refused_here(tmp_path: Path, args: list[str]) -> None:
    r = runner.invoke(app, args, env=_logged_in(tmp_path, "https://127.0.0.1:1"))
    assert r.exit_code == 2 and "longer than 1000 characters" in r.output


@pytest.mark.parametrize("pem", [None, "not a certificate"])
def test_an_unreadable_ca_bundle_is_an_error_not_a_traceback(
    tmp_path: Path, pem: str | None
) -> None:
    ca = tmp_path / "ca.pem"
    if pem is not None:
        ca.write_text(pem)
    r = runner.invoke(app, ["reviews", "list"], env=_logged_in(tmp_path, "https://x", str(ca)))
    assert r.exit_code == 1 and "cannot load the CA bundle" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


class _NotLedgergate(BaseHTTPRequestHandler):
    """Answers every call with 200 and a body that is no review (a proxy's page)."""

    def do_GET(self) -> None:
        body = b"<html>sign in</html>" if "reviews/" in self.path else b'{"items": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("args", [["reviews", "list"], ["reviews", "show", "rv_1"]])
def test_an_answer_that_is_no_review_is_an_error_not_a_traceback(
    tmp_path: Path, args: list[str]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotLedgergate)
    t = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        r = runner.invoke(app, args, env=_logged_in(tmp_path, url))
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)
    assert r.exit_code == 1 and "not a review" in r.output
