"""Shared helpers of the PostgreSQL store tests: the DSN, the skip marker and fresh schemas.

Every test run gets its own schema prefix (``ck_test_<random>``) and every store its own schema
under it, so runs and tests never see each other's rows; :func:`drop_schemas` removes them.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid

import pytest

__all__ = [
    "DSN",
    "SKIP_REASON",
    "drop_schemas",
    "new_schema",
    "postgres_marks",
    "require_dsn",
]

SKIP_REASON = (
    "set CONSENTKIT_TEST_POSTGRES_DSN to a PostgreSQL DSN to run the PostgreSQL store tests"
)
DSN = os.environ.get("CONSENTKIT_TEST_POSTGRES_DSN") or None
RUN_PREFIX = f"ck_test_{uuid.uuid4().hex[:10]}"

postgres_marks = [pytest.mark.postgres, pytest.mark.skipif(DSN is None, reason=SKIP_REASON)]
"""Use as a module's ``pytestmark``."""

_counter = itertools.count(1)
_counter_lock = threading.Lock()


def require_dsn() -> str:
    """The test DSN (tests using it are skipped by :data:`postgres_marks` when it is unset)."""
    assert DSN is not None, SKIP_REASON
    return DSN


def new_schema(label: str = "s") -> str:
    """A schema name no other store of this or any other run uses."""
    with _counter_lock:
        number = next(_counter)
    return f"{RUN_PREFIX}_{label}{number}"


def drop_schemas() -> None:
    """Drop every schema this run created."""
    if DSN is None:
        return
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (RUN_PREFIX,)
            )
        ]
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
