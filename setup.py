"""The native modules (DataRow runs under a mask plan; sealing runs of ledger drafts,
with OpenSSL 3's SHA-256 and zlib's CRC-32; Kafka records walked and hashed; the shape of
a statement for the redaction cache: see their headers); everything else is in
pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Werror=implicit-function-declaration"]

setup(
    ext_modules=[
        Extension(
            "ledgergate.wire.pg._datarows",
            ["src/ledgergate/wire/pg/_datarows.c"],
            extra_compile_args=FLAGS,
        ),
        Extension(
            "ledgergate.core.ledger._sealer",
            ["src/ledgergate/core/ledger/_sealer.c"],
            extra_compile_args=FLAGS,
            libraries=["crypto", "z"],
        ),
        Extension(
            "ledgergate.wire.kafka._records",
            ["src/ledgergate/wire/kafka/_records.c"],
            extra_compile_args=FLAGS,
            libraries=["crypto"],
        ),
        Extension(
            "ledgergate.core._sqlshape",
            ["src/ledgergate/core/_sqlshape.c"],
            extra_compile_args=FLAGS,
        ),
    ]
)
