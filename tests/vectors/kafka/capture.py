"""Record ``java_batches.json``: record batches written by Apache Kafka's own Java code.

Run by hand (not by pytest) when a vector must be added or re-recorded:

    .venv/bin/python -m tests.vectors.kafka.capture

It needs Java 17+ and the Kafka jars that ``scripts/install-kafka`` resolves (and caches).
``KafkaRecords.java build`` writes each batch with kafka-clients' ``MemoryRecordsBuilder``
(or ``MemoryRecords.withEndTransactionMarker`` for control batches), with the codecs Kafka
ships (snappy-java's xerial framing, Kafka's LZ4 frame writer, zstd-jni, java.util.zip),
and reads it back with Kafka's own reader: that reading is the ``java`` block the tests
compare ledgergate's against.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[2]


def kafka_libs() -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-kafka")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    libs = kafka_libs()
    out = subprocess.run(
        ["java", "-cp", f"{libs}/*", str(HERE / "KafkaRecords.java"), "build"],
        check=True,
        capture_output=True,
        text=True,
    )
    cases = [json.loads(line) for line in out.stdout.splitlines()]
    version = Path(libs).parent.name
    doc = {
        "source": f"Apache {version} kafka-clients, by tests/vectors/kafka/capture.py",
        "cases": cases,
    }
    (HERE / "java_batches.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
