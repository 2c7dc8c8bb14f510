"""Storage: the protocol stores satisfy, and the stores shipped with consentkit.

``InMemoryStore`` and ``SQLiteStore`` need nothing beyond the standard library;
``consentkit.storage.postgres.PostgresStore`` needs the ``consentkit[postgres]`` extra and is
imported from its own module only.
"""

from consentkit.storage.base import (
    CHUNK_SIZE,
    ChangeBatch,
    PairChange,
    Store,
    StoreTransaction,
    SubscriptionFilter,
)
from consentkit.storage.memory import InMemoryStore

__all__ = [
    "CHUNK_SIZE",
    "ChangeBatch",
    "InMemoryStore",
    "PairChange",
    "Store",
    "StoreTransaction",
    "SubscriptionFilter",
]
