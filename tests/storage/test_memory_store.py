"""The in-memory store passes the public conformance suite."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from consentkit.storage import InMemoryStore, Store, StoreTransaction
from consentkit.storage.base import AddressOwners, StagingTransaction
from consentkit.testing import StoreConformance

_STAGING = frozenset({"stage_contacts", "staged_situations", "staged_pairs", "apply_staged"})
# Also hidden: the one-read address owners, so the suite runs the service's two-read fallback.
_HIDDEN = _STAGING | {"owners_of_address"}


class _PerPairTransaction:
    """A transaction without the staging methods (nor owners_of_address), as a third-party
    store's may be."""

    def __init__(self, tx: StoreTransaction) -> None:
        self._tx = tx

    def __getattr__(self, name: str) -> Any:
        if name in _HIDDEN:
            raise AttributeError(name)
        return getattr(self._tx, name)


class PerPairMemoryStore(InMemoryStore):
    """The in-memory store with transactions that cannot stage: the service changes pairs one
    by one through lock_subscriptions and write_changes."""

    @contextmanager
    def transaction(self, account: str) -> Iterator[Any]:
        with super().transaction(account) as tx:
            yield _PerPairTransaction(tx)


class TestInMemoryStoreConformance(StoreConformance):
    """Runs every contract test (their assertions live in the suite) against InMemoryStore."""

    def make_store(self, directory: Path) -> InMemoryStore:
        """A fresh in-memory store (the directory is not used)."""
        return InMemoryStore()

    def stored_text(self, store: Store) -> Iterable[str]:
        """Everything the store holds: the repr of every account's tables."""
        return memory_text(store)


class TestPerPairPathConformance(StoreConformance):
    """The same contract through the service's per-pair path (a store that cannot stage)."""

    def make_store(self, directory: Path) -> InMemoryStore:
        return PerPairMemoryStore()

    def stored_text(self, store: Store) -> Iterable[str]:
        """Everything the store holds: the repr of every account's tables."""
        return memory_text(store)


def memory_text(store: Store) -> list[str]:
    """The repr of every account's data of an in-memory store (every table, every value)."""
    assert isinstance(store, InMemoryStore)
    return [repr(data) for data in store._accounts.values()]


def test_the_two_paths_are_taken() -> None:
    """The plain store's transactions stage; the wrapper's do not."""
    with InMemoryStore().transaction("acme") as tx:
        assert isinstance(tx, StagingTransaction)
    with PerPairMemoryStore().transaction("acme") as wrapped:
        assert isinstance(wrapped, StoreTransaction)
        assert not isinstance(wrapped, StagingTransaction)
        assert not isinstance(wrapped, AddressOwners)


def test_store_and_its_transactions_satisfy_the_protocols() -> None:
    """InMemoryStore and its transactions are structurally a Store and a StoreTransaction."""
    store = InMemoryStore()
    assert isinstance(store, Store)
    with store.transaction("acme") as tx:
        assert isinstance(tx, StoreTransaction)
