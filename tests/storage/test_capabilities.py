"""The shipped stores have every optional capability of ``consentkit.storage.base``: the
conformance suite checks a capability only where a store has it, so this is what keeps those
checks from passing vacuously for the stores consentkit ships."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consentkit.storage import InMemoryStore, Store
from consentkit.storage.base import (
    AddressOwners,
    AddressReads,
    ErasureLog,
    ErasureTransaction,
    NewContacts,
    PendingReads,
    PendingTransaction,
    Purging,
    SentLog,
    StagingTransaction,
    TopicReads,
    TopicTransaction,
    WrittenSuppressions,
)
from consentkit.storage.sqlite import SQLiteStore
from tests.storage._pg_support import drop_schemas, new_schema, postgres_marks, require_dsn

_STORE_CAPABILITIES = (TopicReads, SentLog, Purging, ErasureLog, AddressReads, PendingReads)
_TRANSACTION_CAPABILITIES = (
    StagingTransaction,
    TopicTransaction,
    AddressOwners,
    ErasureTransaction,
    PendingTransaction,
    NewContacts,
    WrittenSuppressions,
)


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas_at_end() -> Iterator[None]:
    """Drops every schema the module's stores created."""
    yield
    drop_schemas()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=postgres_marks),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each kind."""
    if request.param == "memory":
        yield InMemoryStore()
        return
    if request.param == "sqlite":
        with SQLiteStore(tmp_path / "capabilities.db") as opened:
            yield opened
        return
    from consentkit.storage.postgres import PostgresStore

    with PostgresStore(require_dsn(), schema=new_schema("capabilities")) as pg:
        yield pg


def test_the_store_and_its_transactions_have_every_optional_capability(store: Store) -> None:
    """Each shipped store and its write transactions satisfy every optional protocol, but for
    the shortcuts that suit one store only: the in-memory store has no topic read shortcuts
    (its topic reads go through the service's general path, which the suite then checks), and
    only SQLite, whose transaction holds the one write lock, registers new contacts without
    reading them first (NewContacts, WrittenSuppressions)."""
    missing = [c.__name__ for c in _STORE_CAPABILITIES if not isinstance(store, c)]
    with store.transaction("acme") as tx:
        missing += [c.__name__ for c in _TRANSACTION_CAPABILITIES if not isinstance(tx, c)]
    sqlite_only = ["NewContacts", "WrittenSuppressions"]
    expected = (
        []
        if isinstance(store, SQLiteStore)
        else ["TopicReads", "TopicTransaction", *sqlite_only]
        if isinstance(store, InMemoryStore)
        else sqlite_only
    )
    assert missing == expected
