"""Record the SFTP vectors in this directory from OpenSSH's own sftp and sftp-server.

Run by hand (not by pytest) when a vector must be added or re-recorded:

    .venv/bin/python -m tests.vectors.sftp.capture

``sftp -b batch -D <relay>`` talks to ``/usr/lib/openssh/sftp-server -d <root>`` through
a small relay (``RELAY``, a Python script run as a subprocess) that copies both
directions and writes every read it made, as it made it, to two files. Nothing of
ledgergate runs in the capture. The ``expect`` blocks are computed here by a minimal
reading of the protocol of this script's own (draft-ietf-secsh-filexfer-02), so the tests
compare the tracker against an independent reading of the bytes; the files' SHA-256s are
of the files on disk. tests/wire/ssh/test_sftp_track.py drives a larger session live
with the same ``run_session``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SFTP = "/usr/bin/sftp"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"

# The relay between sftp (its stdin/stdout) and sftp-server (a child's pipes). Every read
# goes to one log, before it is passed on, as a byte saying whose it is (``c`` the
# client's, ``s`` the server's), its length (4 bytes) and the bytes: since a read is
# logged before the other side can see it, the log's order is one the gateway could see.
RELAY = r"""
import os, subprocess, sys, threading
server, root, log = sys.argv[1:4]
child = subprocess.Popen([server, "-d", root], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
lock = threading.Lock()
out = open(log, "wb")

def pump(src, dst, tag, done):
    while True:
        data = os.read(src, 1 << 16)
        if not data:
            break
        with lock:
            out.write(tag + len(data).to_bytes(4, "big") + data)
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view):]
    done()

up = threading.Thread(target=pump, args=(0, child.stdin.fileno(), b"c", child.stdin.close))
up.start()
pump(child.stdout.fileno(), 1, b"s", lambda: os.close(1))
up.join()
child.wait()
out.close()
"""

Reads = list[tuple[str, bytes]]


def available() -> bool:
    return os.access(SFTP, os.X_OK) and os.access(SFTP_SERVER, os.X_OK)


def _reads(path: Path) -> Reads:
    raw, out, pos = path.read_bytes(), [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from(">I", raw, pos + 1)
        out.append(("c2s" if raw[pos : pos + 1] == b"c" else "s2c", raw[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return out


def run_session(batch: str, local: Path, root: Path, work: Path) -> Reads:
    """Run ``sftp -b`` with ``batch`` in ``local`` against sftp-server rooted at ``root``;
    every read the relay made, in order: ("c2s", the client's bytes) or ("s2c", ...)."""
    relay = work / "relay.py"
    relay.write_text(RELAY)
    log, batchfile = work / "reads.log", work / "batch"
    batchfile.write_text(batch)
    command = f"{sys.executable} {relay} {SFTP_SERVER} {root} {log}"
    subprocess.run(
        [SFTP, "-q", "-b", str(batchfile), "-D", command],
        cwd=local,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return _reads(log)


# --- an independent, minimal reading of the protocol ------------------------------------


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each packet; the stream must end on a packet boundary."""
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        assert pos + 4 + n <= len(data), "stream ends inside a packet"
        out.append((data[pos + 4], data[pos + 5 : pos + 4 + n]))
        pos += 4 + n
    return out


def _string(body: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", body, pos)
    return body[pos + 4 : pos + 4 + n], pos + 4 + n


def expect(c2s: bytes, s2c: bytes) -> dict[str, Any]:
    """Request types and ids, the path arguments of path requests (in wire order),
    extension names, and the status code answering each id (0 for another answer)."""
    two_paths = {18, 20, b"posix-rename@openssh.com", b"hardlink@openssh.com"}
    one_path = {3, 7, 9, 11, 13, 14, 15, 16, 17, 19, b"statvfs@openssh.com"}
    one_path |= {b"expand-path@openssh.com", b"lsetstat@openssh.com"}
    requests: list[dict[str, Any]] = []
    for t, body in packets(c2s)[1:]:  # after INIT
        (rid,) = struct.unpack_from(">I", body)
        entry: dict[str, Any] = {"type": t, "id": rid}
        kind: int | bytes = t
        pos = 4
        if t == 200:
            name, pos = _string(body, pos)
            entry["extension"], kind = name.decode(), name
        if kind in one_path or kind in two_paths:
            path, pos = _string(body, pos)
            entry["path"] = path.decode()
        if kind in two_paths:
            entry["path2"] = _string(body, pos)[0].decode()
        requests.append(entry)
    statuses: dict[str, int] = {}
    for t, body in packets(s2c)[1:]:  # after VERSION
        rid, code = struct.unpack_from(">II", body + b"\0" * 4)
        statuses[str(rid)] = code if t == 101 else 0
    return {"requests": requests, "status_by_id": statuses}


def capture(name: str, description: str, batch: str, files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        local, root, work = top / "local", top / "root", top / "work"
        for d in (local, root, work):
            d.mkdir()
        for fname, content in files.items():
            (local / fname).write_bytes(content)
        reads = run_session(batch, local, root, work)
        c2s = b"".join(r for d, r in reads if d == "c2s")
        s2c = b"".join(r for d, r in reads if d == "s2c")
        version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
        doc = {
            "description": description,
            "source": f"{version} sftp and sftp-server, captured by tests/vectors/sftp/capture.py",
            "reads": [[d, r.hex()] for d, r in reads],
            "expect": {
                **expect(c2s, s2c),
                "files": {
                    f: {"size": len(c), "sha256": hashlib.sha256(c).hexdigest()}
                    for f, c in files.items()
                },
            },
        }
        shutil.rmtree(root)
    (HERE / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")


def main() -> None:
    content = random.Random(7).randbytes(40_000)
    capture(
        "session_openssh",
        "sftp -b: mkdir, put of a 40000-byte file, ls, get, rename (posix-rename), chmod, "
        "symlink, stat of a missing file (fails), rm, rmdir",
        "mkdir d\nput up.bin d/up.bin\nls -l d\nget d/up.bin down.bin\n"
        "rename d/up.bin d/moved.bin\nchmod 600 d/moved.bin\nln -s moved.bin d/link\n"
        "-ls d/missing\nrm d/link\nrm d/moved.bin\nrmdir d\n",
        {"up.bin": content},
    )


if __name__ == "__main__":
    main()
