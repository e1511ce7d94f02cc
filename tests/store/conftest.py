"""The store tests run on both engines: ``store_url`` is a fresh, empty store of each
(an SQLite file, a new PostgreSQL database), with its password as ``store_password``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledgergate.store import Store, open_store
from tests.storeserver import ENGINES, fresh_store_url


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url_pw(engine: str, tmp_path: Path) -> tuple[str, str | None]:
    return fresh_store_url(engine, tmp_path if engine == "sqlite" else None)


Opener = Callable[[], Store]


@pytest.fixture
def open_st(store_url_pw: tuple[str, str | None]) -> Iterator[Opener]:
    """Open (another handle on) the test's store; every handle is closed afterwards."""
    url, password = store_url_pw
    opened: list[Store] = []

    def make() -> Store:
        st = open_store(url, password=password)
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()
