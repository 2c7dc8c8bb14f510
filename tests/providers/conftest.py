"""Fixtures of the provider tests: a consent service on each store kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consentkit import InMemoryStore, Store
from consentkit.storage.sqlite import SQLiteStore
from tests.providers._support import ServiceFactory, make_factory


@pytest.fixture(params=["memory", "sqlite"])
def open_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Opens services (each on a new store of the parametrised kind) whose clock starts an hour
    before the time given, so contacts can be set up before a provider event happens."""
    stores: list[Store] = []

    def new_store() -> Store:
        store: Store = (
            InMemoryStore()
            if request.param == "memory"
            else SQLiteStore(tmp_path / f"consent-{len(stores)}.sqlite")
        )
        stores.append(store)
        return store

    yield make_factory(new_store)
    for store in stores:
        if isinstance(store, SQLiteStore):
            store.close()

