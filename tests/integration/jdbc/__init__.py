"""The PostgreSQL JDBC driver for tests: its jar fetched once from Maven Central with
Maven into the cache the other fixtures use (``LEDGERGATE_CACHE``, default
``~/.cache/ledgergate``), and small Java clients in this folder run as single-file
source programs on the machine's Java 17."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
VERSION = "42.7.14"
CACHE = Path(
    os.environ.get("LEDGERGATE_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ledgergate"
)


def driver_jar() -> Path:
    """The driver's jar, fetched on first use (``mvn dependency:copy``)."""
    target = CACHE / "jdbc" / f"postgresql-{VERSION}.jar"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
            f"-Dartifact=org.postgresql:postgresql:{VERSION}",
            f"-DoutputDirectory={target.parent}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=target.parent,
    )
    return target


def java_client(name: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """Start ``HERE/<name>.java`` (a single-file program) with the driver on its path."""
    return subprocess.Popen(
        ["java", "-cp", str(driver_jar()), str(HERE / f"{name}.java"), *args],
        text=True,
        **popen,
    )
