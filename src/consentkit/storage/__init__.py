"""Storage: the protocol stores satisfy, and the stores shipped with consentkit.

``InMemoryStore`` and ``SQLiteStore`` need nothing beyond the standard library;
``PostgresStore`` needs the ``consentkit[postgres]`` extra.  ``SQLiteStore`` and ``PostgresStore``
are imported when first used (``consentkit.storage.PostgresStore`` or
``from consentkit.storage.postgres import PostgresStore``), so psycopg stays optional.
:func:`open_store` picks one by URL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from consentkit.storage._open import open_store
from consentkit.storage.base import (
    CHUNK_SIZE,
    ChangeBatch,
    PairChange,
    Store,
    StoreTransaction,
    SubscriptionFilter,
)
from consentkit.storage.memory import InMemoryStore

if TYPE_CHECKING:
    from consentkit.storage.postgres import PostgresStore
    from consentkit.storage.sqlite import SQLiteStore

__all__ = [
    "CHUNK_SIZE",
    "ChangeBatch",
    "InMemoryStore",
    "PairChange",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "StoreTransaction",
    "SubscriptionFilter",
    "open_store",
]

LAZY_STORES = {
    "SQLiteStore": "consentkit.storage.sqlite",
    "PostgresStore": "consentkit.storage.postgres",
}
"""The stores imported when first asked for, and their modules."""


def __getattr__(name: str) -> Any:
    module = LAZY_STORES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
