"""Suite-wide settings: hypothesis profiles, chosen with HYPOTHESIS_PROFILE.

``ci`` (the default) keeps the suite fast; ``deep`` is for a hand-run fuzzing session:
``HYPOTHESIS_PROFILE=deep scripts/test tests/wire``. The package is installed editable
into .venv, so no path handling is needed here.
"""

import gc
import os
import warnings

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
pytest_plugins = ["tests.integration.fixtures"]


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Stop the PostgreSQL store server if a test started one (tests/storeserver.py),
    after collecting the store handles tests left open (see ``pytest_configure``)."""
    from tests.storeserver import ENGINE, stop_store_server

    if ENGINE == "postgresql":
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*was deleted while still open", category=ResourceWarning
            )
            gc.collect()
    stop_store_server()


def pytest_configure(config: pytest.Config) -> None:
    """On the PostgreSQL store engine, a store handle a test helper left open shows up as
    psycopg's "deleted while still open" ResourceWarning when it is collected (SQLite's
    handles close silently); the gateway's own handles are closed by their owners and
    counted by the store server's connection limit instead."""
    from tests.storeserver import ENGINE

    if ENGINE == "postgresql":
        config.addinivalue_line(
            "filterwarnings", "ignore:.*was deleted while still open:ResourceWarning"
        )
