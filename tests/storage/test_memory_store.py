"""The in-memory store passes the public conformance suite."""

from pathlib import Path

from consentkit.storage import InMemoryStore
from consentkit.testing import StoreConformance


class TestInMemoryStoreConformance(StoreConformance):
    """Runs every contract test against :class:`InMemoryStore`."""

    def make_store(self, directory: Path) -> InMemoryStore:
        """A fresh in-memory store (the directory is not used)."""
        return InMemoryStore()
