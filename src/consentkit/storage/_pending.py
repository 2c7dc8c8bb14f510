"""Rows of pending opt-ins (double opt-in, :mod:`consentkit.confirmation`), shared by the SQL
stores: the same columns in the same order, times converted by the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from consentkit.confirmation import PendingOptIn, PendingStatus
from consentkit.storage._codec import evidence_document
from consentkit.storage._rows import RowDecoder

PENDING_COLUMNS: Final = (
    "id, contact_id, channel, evidence, request_wording, actor_kind, actor_id, actor_roles, "
    "requested_at, expires_at, status, closed_at"
)
_STATUS: Final = {s.value: s for s in PendingStatus}


def pending_row(request: PendingOptIn, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The values of *request* in :data:`PENDING_COLUMNS` order (*time* encodes instants)."""
    actor = request.requested_by
    return (
        request.id,
        request.contact_id,
        request.channel.key,
        json.dumps(evidence_document(request.evidence), ensure_ascii=False, sort_keys=True),
        request.request_wording,
        actor.kind.value,
        actor.id,
        json.dumps(sorted(actor.roles)) if actor.roles else None,
        time(request.requested_at),
        time(request.expires_at),
        request.status.value,
        None if request.closed_at is None else time(request.closed_at),
    )


def pending_of(
    account: str, row: Any, decoder: RowDecoder, instant: Callable[[Any], datetime]
) -> PendingOptIn:
    """The request of a row of :data:`PENDING_COLUMNS`."""
    evidence = decoder.evidence(row[3])
    assert evidence is not None  # the column is NOT NULL
    return PendingOptIn(
        id=row[0],
        account=account,
        contact_id=row[1],
        channel=decoder.channel(row[2]),
        evidence=evidence,
        request_wording=row[4],
        requested_by=decoder.actor(account, row[5], row[6], row[7]),
        requested_at=instant(row[8]),
        expires_at=instant(row[9]),
        status=_STATUS[row[10]],
        closed_at=None if row[11] is None else instant(row[11]),
    )


SQLITE_MIGRATION: Final = (
    """
    CREATE TABLE pending_opt_ins (
        account TEXT NOT NULL,
        id TEXT NOT NULL,
        contact_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        evidence TEXT NOT NULL,  -- JSON object
        request_wording TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        actor_roles TEXT,  -- JSON array, NULL when none
        requested_at INTEGER NOT NULL,  -- micros, like every time
        expires_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        closed_at INTEGER,
        PRIMARY KEY (account, id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX pending_opt_ins_by_contact ON pending_opt_ins (account, contact_id)",
)
"""The SQLite store's migration adding the table."""


def postgres_migration(version: int) -> tuple[int, str, tuple[str, ...]]:
    """The PostgreSQL store's migration adding the table, as entry *version*."""
    return (
        version,
        "pending opt-ins: double opt-in requests waiting for the contact's confirmation",
        (
            """CREATE TABLE __S__.pending_opt_ins (
                account text COLLATE "C" NOT NULL,
                id text COLLATE "C" NOT NULL,
                contact_id text COLLATE "C" NOT NULL,
                channel text COLLATE "C" NOT NULL,
                evidence jsonb NOT NULL,
                request_wording text NOT NULL,
                actor_kind text NOT NULL,
                actor_id text NOT NULL,
                actor_roles text,
                requested_at timestamptz NOT NULL,
                expires_at timestamptz NOT NULL,
                status text NOT NULL,
                closed_at timestamptz,
                PRIMARY KEY (account, id)
            )""",
            """CREATE INDEX pending_opt_ins_by_contact
                ON __S__.pending_opt_ins (account, contact_id)""",
        ),
    )
