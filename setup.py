"""The native modules (DataRow runs under a mask plan; the shape of a statement for the
redaction cache: see their headers); everything else is in pyproject.toml."""

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
            "ledgergate.core._sqlshape",
            ["src/ledgergate/core/_sqlshape.c"],
            extra_compile_args=FLAGS,
        ),
    ]
)
