"""The one native module (DataRow runs under a mask plan, see its header); everything
else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ledgergate.wire.pg._datarows",
            ["src/ledgergate/wire/pg/_datarows.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        )
    ]
)
