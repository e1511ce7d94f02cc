"""Running Kafka's own Java programs for the tests and benchmarks: the jars, the JVM
command line, and kcat on a librdkafka that speaks SCRAM to Kafka 4.

`kafka_libs` installs the pinned Kafka jars once (``scripts/install-kafka``, from Maven
Central into a cache directory) and afterwards only returns their path; `java_command`
and `kafka_java_class` run a main class (the broker, kafka-storage, the perf tools) with
them, using the class-data-sharing archive when a cluster has written one; `kcat_env`
points kcat at the librdkafka bundled with confluent-kafka. Must not depend on the
gateway.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import confluent_kafka

from tests.integration.s3server import BackendError

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-kafka"
# A cached install only prints a path; a cold one downloads ~55 MB of jars (about 15 s).
INSTALL_TIMEOUT_S = 600
# Client tools such as ProducerPerformance: keep C2, their throughput is measured.
TOOL_JVM_OPTIONS = ("-Xmx512m", "-XX:+UseSerialGC")
# Class-data sharing: an archive of the classes a broker loads, written once per Kafka
# install and JVM build by the first cluster's node 1 as it stops, cuts every later JVM
# start (one broker: 2.3 s to 1.3 s; kafka-storage format: 0.9 s to 0.5 s). The JVM
# logs each class it cannot archive; that is harmless, so quiet.
_QUIET_CDS = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off")
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_ERR
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
# Every client and server logs its whole configuration at INFO.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


@functools.cache
def kafka_libs() -> Path:
    """The directory of Kafka's jars, installed by scripts/install-kafka when missing."""
    r = subprocess.run(
        [str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if r.returncode != 0:
        raise BackendError(f"scripts/install-kafka failed ({r.returncode}):\n{r.stderr}")
    return Path(r.stdout.strip().splitlines()[-1])


@functools.cache
def cds_archive() -> Path:
    """Where the class-data-sharing archive of this Kafka install for this JVM build is
    kept (it may not exist yet)."""
    java = Path(shutil.which("java") or "java").resolve()
    st = java.stat()
    key = hashlib.sha256(f"{java}\0{st.st_mtime_ns}\0{st.st_size}".encode()).hexdigest()
    return kafka_libs().parent / f"classes-{key[:12]}.jsa"


@functools.cache
def _tool_log_config() -> Path:
    """log4j2 for the tools: warnings and errors only, on stderr."""
    path = Path(tempfile.gettempdir()) / f"lg-kafka-tools-log4j2-{os.getuid()}.properties"
    path.write_text(_LOG4J2.format(level="WARN"))
    return path


def java_command(
    cls: str,
    *args: str,
    jvm_options: Sequence[str] = TOOL_JVM_OPTIONS,
    log_config: Path | None = None,
    cds: bool = True,
) -> list[str]:
    """The command line that runs Kafka's main class ``cls`` (e.g.
    ``org.apache.kafka.tools.ProducerPerformance``) with ``args``, for a Popen. log4j
    writes to stderr (warnings and up unless ``log_config`` says otherwise); ``cds``
    uses the class-data-sharing archive when there is one."""
    archive = cds_archive()
    share = [f"-XX:SharedArchiveFile={archive}", *_QUIET_CDS] if cds and archive.exists() else []
    return [
        "java",
        *jvm_options,
        *share,
        f"-Dlog4j2.configurationFile={log_config or _tool_log_config()}",
        "-cp",
        f"{kafka_libs()}/*",
        cls,
        *args,
    ]


def kafka_java_class(
    cls: str,
    *args: str,
    timeout: float = 300,
    check: bool = True,
    jvm_options: Sequence[str] = TOOL_JVM_OPTIONS,
) -> subprocess.CompletedProcess[str]:
    """Run Kafka's main class ``cls`` to its end and return its output, e.g.
    ``kafka_java_class("org.apache.kafka.tools.ProducerPerformance", "--topic", t,
    …, "--command-config", str(cluster.client_properties(path)))``. With ``check`` a
    non-zero exit raises BackendError with the output's end."""
    r = subprocess.run(
        java_command(cls, *args, jvm_options=jvm_options),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and r.returncode != 0:
        raise BackendError(f"{cls} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r


@functools.cache
def _modern_librdkafka() -> Path | None:
    """A directory holding ``librdkafka.so.1`` that links to the librdkafka bundled in
    the confluent-kafka wheel, or None when the wheel bundles none."""
    bundled = sorted(glob.glob(f"{Path(confluent_kafka.__file__).parent}.libs/librdkafka*.so*"))
    if not bundled:
        return None
    target = Path(bundled[0]).resolve()
    key = hashlib.sha256(str(target).encode()).hexdigest()[:12]
    libdir = Path(tempfile.gettempdir()) / f"lg-librdkafka-{os.getuid()}-{key}"
    libdir.mkdir(exist_ok=True)
    link = libdir / "librdkafka.so.1"
    if not link.exists():
        tmp = libdir / f".{secrets.token_hex(4)}"
        tmp.symlink_to(target)
        tmp.replace(link)
    return libdir


def kcat_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment) with kcat pointed at confluent-kafka's
    librdkafka. Debian 12's librdkafka 2.0.2 sends a SCRAM client-final-message with the
    nonce doubled, which Kafka 4 brokers refuse as invalid credentials (fixed in
    librdkafka 2.6.1); librdkafka's ABI is stable, so kcat runs on the newer one."""
    env = dict(os.environ if base is None else base)
    libdir = _modern_librdkafka()
    if libdir is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(libdir), env.get("LD_LIBRARY_PATH", "")) if p
        )
    return env
