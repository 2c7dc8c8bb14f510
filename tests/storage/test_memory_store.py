"""The in-memory store passes the public conformance suite."""

from pathlib import Path

from consentkit.storage import InMemoryStore, Store, StoreTransaction
from consentkit.testing import StoreConformance


class TestInMemoryStoreConformance(StoreConformance):
    """Runs every contract test (their assertions live in the suite) against InMemoryStore."""

    def make_store(self, directory: Path) -> InMemoryStore:
        """A fresh in-memory store (the directory is not used)."""
        return InMemoryStore()


def test_store_and_its_transactions_satisfy_the_protocols() -> None:
    """InMemoryStore and its transactions are structurally a Store and a StoreTransaction."""
    store = InMemoryStore()
    assert isinstance(store, Store)
    with store.transaction("acme") as tx:
        assert isinstance(tx, StoreTransaction)
