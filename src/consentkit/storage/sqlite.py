"""The SQLite store: the embedded default, durable and safe with several processes writing.

:class:`SQLiteStore` keeps everything in one SQLite file, using only the standard library's
:mod:`sqlite3`.

Concurrency
    The file is in WAL mode: readers never block writers and writers never block readers.  Every
    write transaction starts with ``BEGIN IMMEDIATE``, which takes the single write lock before it
    reads anything, so a transaction never decides from a state another writer is about to change
    (a deferred transaction that reads then writes fails with "database is locked" without waiting,
    cpython#124510).  A writer waits up to ``busy_timeout`` seconds for the lock; web workers, a
    webhook worker and a CLI can all write the same file at once.  That single lock also
    serialises everything that meets on an address (an inbound reply, the registration or edit of
    a contact with that address), so ``lock_addresses`` has nothing to add.

Fork
    A child process opens its own connections.  ``fork()`` waits until no thread of the process
    is inside a write transaction (a child forked during one would inherit SQLite's in-process
    record of the held write lock, and could never write to the file); do not fork from inside a
    transaction: the child cannot commit it.

Durability
    ``synchronous="FULL"`` (the default) syncs the WAL on every commit: a call that returned has
    reached the disk, and a power loss cannot take it back.  Consent records are legal evidence
    (GDPR Art. 7(1), TCPA), so that is the default.  ``synchronous="NORMAL"`` syncs only at
    checkpoints: commits are faster on slow disks, the file is never corrupted, but a power loss
    (not a process crash) may lose the last transactions.  Either way a transaction is atomic:
    a process killed in the middle of one leaves nothing of it behind.

Schema
    The store creates its tables on first use and records the schema version in
    ``schema_version``; a newer consentkit applies its forward migrations when it opens an older
    file, under ``BEGIN IMMEDIATE`` so two processes opening a fresh file at once are safe.  The
    file must belong to consentkit alone: a database with another application id, or that holds
    tables without consentkit's ``schema_version``, is refused before any setting of it (such as
    the journal mode) is changed, so the file is left exactly as it was.  Datetimes are integer
    microseconds since the Unix epoch (UTC); channels, states, sources and actor kinds are
    stored by their key or value.

Read-only files
    A process that may not write the file (or create the ``-wal`` and ``-shm`` files next to it)
    opens it read-only: reads work, write transactions raise StorageError.  It creates no file
    a later writer could not use: it reads through the ``-wal`` and ``-shm`` files of a writer
    that has the database open, or, when none has and nobody (but a superuser) may write the
    file, reads the file as it is; otherwise it refuses to open (see
    :meth:`SQLiteStore._choose_access`).

Trends
    An hourly roll-up (events per account, UTC hour, channel, previous and new state: the table
    design of the PostgreSQL store, since schema version 4) is updated in the same transaction as
    every change, so :meth:`SQLiteStore.totals_at` and :meth:`SQLiteStore.transition_counts` read
    a few rows per hour and channel plus the events of the partial hour at each boundary (through
    an index on the event time), whatever the number of contacts or events; the counting itself
    is shared with PostgreSQL (:mod:`consentkit.storage._trend_counts`).

Bulk changes
    The transactions implement :class:`~consentkit.storage.base.StagingTransaction` inside SQLite:
    a chunk's contact ids and channels go into temporary tables of the connection (created when
    it opens), one grouped query over them joined with the subscriptions gives the distinct
    situations of the pairs, and the admitted pairs are written with one statement each for the
    opt-out requests, the events, the rows (one upsert) and the roll-up, with no Python object
    per pair.  The rows and events are the ones the per-pair methods write.

Errors
    Every driver error goes through one translation (:class:`_Errors`, :meth:`SQLiteStore._error`):
    a lock wait past ``busy_timeout`` and unique violations are ConflictError (retryable, as a
    timed-out wait is in the PostgreSQL store too), anything else StorageError.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import sqlite3
import threading
import time
import warnings
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from datetime import datetime
from types import TracebackType
from typing import Final, Literal

from consentkit.channels import Channel
from consentkit.confirmation import PendingOptIn, PendingStatus
from consentkit.erasure import ErasureRecord
from consentkit.errors import ConflictError, ConsentError, StorageError, ValidationError
from consentkit.model import (
    ConsentEvent,
    Contact,
    Evidence,
    OptOutOrigin,
    Subscription,
    SubscriptionState,
    Suppression,
    Transition,
)
from consentkit.retention import PurgeKind
from consentkit.review import ReviewDecision, ReviewItem
from consentkit.sends import SentRecord
from consentkit.storage import _pending, _sqlite_erasure, _trend_counts
from consentkit.storage._batch import check_batch, opt_out_record
from consentkit.storage._codec import KINDS, SOURCES, STATE_OR_NEVER, STATES, evidence_document
from consentkit.storage._rows import (
    CONTACT_COLUMNS,
    EVENT_COLUMNS,
    REVIEW_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    SUPPRESSION_COLUMNS,
    RowDecoder,
    address_records,
    addresses_of,
    inbound_record,
    origins,
)
from consentkit.storage._time import cached_instants, hour_bucket, instant, micros
from consentkit.storage.base import (
    AddressRecords,
    ChangeBatch,
    Erasure,
    InboundRecord,
    PairChange,
    Situation,
    SituationKey,
    StagedPair,
    SubscriptionFilter,
)

__all__ = ["SQLiteStore"]

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

_APPLICATION_ID: Final = 0x436B6974  # "Ckit": marks the file as a consentkit database
_CACHE_KIB: Final = 16_384  # page cache per connection (SQLite's default is 2 MiB)
_IDS_PER_QUERY: Final = 10_000  # ids bound as one JSON array; bounds memory of streamed reads
_EVENTS_PAGE: Final = 1000
_SHORT_WAIT: Final = 0.005  # seconds of waiting for other threads worth charging to the timeout
_HOUR_US: Final = 3_600_000_000
_MINIMUM_SQLITE: Final = (3, 24, 0)  # INSERT ... ON CONFLICT DO UPDATE
_NESTED_TRANSACTION: Final = (
    "a write transaction is already open on this store in this thread: a consentkit call was made "
    "from inside another one (e.g. from the iterable of ids it is consuming); make the calls one "
    "after the other (transactions do not nest)"
)

_NEVER: Final = SubscriptionState.NEVER_SUBSCRIBED
_SUBSCRIBED: Final = SubscriptionState.SUBSCRIBED
_UNSUBSCRIBED: Final = SubscriptionState.UNSUBSCRIBED
_STATES: Final = STATES
_STATE_VALUES: Final = {s: s.value for s in SubscriptionState}

# Forward migrations: entry i brings the schema from version i to version i + 1.  Never edit a
# released entry; append a new one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"PRAGMA application_id = {_APPLICATION_ID}",
        """
        CREATE TABLE contacts (
            account TEXT NOT NULL,
            id TEXT NOT NULL,
            phone TEXT,
            email TEXT,
            handles TEXT,  -- JSON [[channel key, handle], ...] or NULL
            PRIMARY KEY (account, id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE contact_addresses (
            account TEXT NOT NULL,
            address_key TEXT NOT NULL,
            contact_id TEXT NOT NULL,
            PRIMARY KEY (account, address_key, contact_id)
        ) WITHOUT ROWID
        """,
        # Replacing a contact's addresses deletes its old entries by contact.
        "CREATE INDEX contact_addresses_by_contact ON contact_addresses (account, contact_id)",
        """
        CREATE TABLE subscriptions (
            account TEXT NOT NULL,
            contact_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            state TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            changed_by TEXT NOT NULL,
            source TEXT NOT NULL,
            reason TEXT,
            PRIMARY KEY (account, contact_id, channel)
        ) WITHOUT ROWID
        """,
        # The audience filter and the "unsubscribed contacts" listing, in contact order.
        """
        CREATE INDEX subscriptions_by_state
            ON subscriptions (account, channel, state, contact_id)
        """,
        # "Unsubscribed contacts by reason" (hard bounces, complaints): partial, so the many
        # changes without a reason code cost nothing to index.  A source filter is applied to the
        # rows of subscriptions_by_state instead (few sources, and an index would cost every write).
        """
        CREATE INDEX subscriptions_by_reason
            ON subscriptions (account, channel, state, reason, contact_id)
            WHERE reason IS NOT NULL
        """,
        """
        CREATE TABLE events (
            sequence INTEGER PRIMARY KEY,  -- the rowid: increases with every append
            account TEXT NOT NULL,
            contact_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            previous_state TEXT NOT NULL,
            new_state TEXT NOT NULL,
            actor_kind TEXT NOT NULL,
            actor_id TEXT NOT NULL,
            actor_roles TEXT,  -- JSON array, NULL when none
            source TEXT NOT NULL,
            occurred_at INTEGER NOT NULL,
            recorded_at INTEGER NOT NULL,
            justification_reason TEXT,
            justification_note TEXT,
            evidence TEXT,  -- JSON object, NULL when none
            reason TEXT,
            inbound_message_id TEXT,
            batch_id TEXT
        )
        """,
        "CREATE INDEX events_by_account ON events (account, sequence)",
        "CREATE INDEX events_by_contact ON events (account, contact_id, sequence)",
        # Covers the exact count of the partial hour at a trend boundary.
        """
        CREATE INDEX events_by_time
            ON events (account, occurred_at, channel, previous_state, new_state)
        """,
        """
        CREATE TABLE trend_hours (
            account TEXT NOT NULL,
            hour INTEGER NOT NULL,  -- whole UTC hours since the Unix epoch
            channel TEXT NOT NULL,
            subscribed INTEGER NOT NULL,  -- change of the number of subscribed pairs
            unsubscribed INTEGER NOT NULL,
            opt_ins INTEGER NOT NULL,
            unsubscribes INTEGER NOT NULL,
            resubscribes INTEGER NOT NULL,
            PRIMARY KEY (account, hour, channel)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE inbound_messages (
            account TEXT NOT NULL,
            message_id TEXT NOT NULL,
            result TEXT NOT NULL,
            PRIMARY KEY (account, message_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE suppressions (
            account TEXT NOT NULL,
            address_key TEXT NOT NULL,
            channel TEXT NOT NULL,
            occurred_at INTEGER NOT NULL,
            source TEXT NOT NULL,
            inbound_message_id TEXT,
            UNIQUE (account, address_key, channel)
        )
        """,
    ),
    # 2: who opted a pair out, from which address and when last (Subscription.opted_out_by,
    # opted_out_via, last_opt_out_at), and suppressions that a later START withdrew.
    (
        # Sorted, comma-joined OptOutOrigin values; NULL when none.
        "ALTER TABLE subscriptions ADD COLUMN opted_out_by TEXT",
        "ALTER TABLE subscriptions ADD COLUMN opted_out_via TEXT",  # an address key
        "ALTER TABLE subscriptions ADD COLUMN last_opt_out_at INTEGER",  # micros, like updated_at
        # Rows written before: the opt-out of an unsubscribed pair was asked by whoever made its
        # last change (a suppression applied to a new contact is recorded with its own source),
        # at that change's time.  The address it came from was not recorded: NULL, so no START
        # can undo it.  The latest unsubscribe event of a resubscribed pair gives its time.
        """
        UPDATE subscriptions SET
            opted_out_by = CASE
                WHEN source = 'suppression' THEN 'suppression'
                WHEN changed_by = 'contact' THEN 'contact'
                WHEN changed_by = 'admin' THEN 'admin'
                WHEN changed_by = 'member' THEN 'member'
                WHEN changed_by = 'system' THEN 'system'
            END,
            last_opt_out_at = updated_at
        WHERE state = 'unsubscribed'
        """,
        """
        UPDATE subscriptions SET last_opt_out_at = (
            SELECT max(e.occurred_at) FROM events AS e
            WHERE e.account = subscriptions.account AND e.contact_id = subscriptions.contact_id
                AND e.channel = subscriptions.channel AND e.new_state = 'unsubscribed'
        )
        WHERE state = 'subscribed'
        """,
        "ALTER TABLE suppressions ADD COLUMN active INTEGER NOT NULL DEFAULT 1",
    ),
    # 3: inbound messages keyed by (account, channel, message id), with the digest of their text;
    # the review queue.
    (
        """
        CREATE TABLE inbound_messages_3 (
            account TEXT NOT NULL,
            channel TEXT NOT NULL,
            message_id TEXT NOT NULL,
            body_sha256 TEXT,  -- hex SHA-256 of the text; NULL for rows recorded before
            result TEXT NOT NULL,
            PRIMARY KEY (account, channel, message_id)
        ) WITHOUT ROWID
        """,
        # Rows recorded before: their channel is the one in their result document, which every
        # result the service stored holds.  Only a row whose result has no channel (not written
        # by the service: a host calling put_inbound_result itself) falls back to 'sms', the one
        # channel inbound messages had before channels were recorded.  The text was not kept, so
        # its digest is NULL.  (Unique before under (account, message id), so unique now too.)
        """
        INSERT INTO inbound_messages_3 (account, channel, message_id, body_sha256, result)
        SELECT account,
            coalesce(
                CASE WHEN json_valid(result) THEN
                    CASE json_type(result, '$.channel')
                        WHEN 'text' THEN json_extract(result, '$.channel')
                    END
                END,
                'sms'
            ),
            message_id, NULL, result
        FROM inbound_messages
        """,
        "DROP TABLE inbound_messages",
        "ALTER TABLE inbound_messages_3 RENAME TO inbound_messages",
        """
        CREATE TABLE review_items (
            account TEXT NOT NULL,
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            channel TEXT NOT NULL,
            message_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            text TEXT NOT NULL,
            contact_ids TEXT NOT NULL,  -- JSON array
            received_at INTEGER NOT NULL,  -- micros, like every time
            honor_by INTEGER NOT NULL,
            decision TEXT,  -- NULL while open
            decided_by TEXT,
            decided_at INTEGER,
            note TEXT,
            PRIMARY KEY (account, id)
        ) WITHOUT ROWID
        """,
        # The queue, oldest first: partial, so decided items (most of them, in time) are not
        # walked past to reach the open ones.
        """
        CREATE INDEX review_items_open ON review_items (account, received_at, id)
            WHERE decision IS NULL
        """,
        # The history with decided items, in the same order.
        "CREATE INDEX review_items_by_time ON review_items (account, received_at, id)",
    ),
    # 4: the roll-ups of both SQL stores: events per (hour, channel, previous state, new state),
    # from which the shared trend counting derives both state totals and transitions.
    (
        """
        CREATE TABLE hourly_changes (
            account TEXT NOT NULL,
            hour INTEGER NOT NULL,  -- whole UTC hours since the Unix epoch
            channel TEXT NOT NULL,
            previous_state TEXT NOT NULL,
            new_state TEXT NOT NULL,
            events INTEGER NOT NULL,
            PRIMARY KEY (account, hour, channel, previous_state, new_state)
        ) WITHOUT ROWID
        """,
        # Rebuilt from the events, which trend_hours was derived from in the same transactions
        # (so the counts are the same); the hour is floored, also before 1970 (SQLite's integer
        # division truncates towards zero).
        f"""
        INSERT INTO hourly_changes (account, hour, channel, previous_state, new_state, events)
        SELECT account,
            CASE WHEN occurred_at >= 0 THEN occurred_at / {_HOUR_US}
                ELSE -((-occurred_at - 1) / {_HOUR_US}) - 1 END,
            channel, previous_state, new_state, count(*)
        FROM events
        GROUP BY 1, 2, 3, 4, 5
        """,
        "DROP TABLE trend_hours",
    ),
    # 5: when an address stopped being a contact's (an edit), so a message it sent before can
    # still be matched to that contact.
    (
        """
        CREATE TABLE address_departures (
            account TEXT NOT NULL,
            address_key TEXT NOT NULL,
            left_at INTEGER NOT NULL,
            contact_id TEXT NOT NULL,
            PRIMARY KEY (account, address_key, left_at, contact_id)
        ) WITHOUT ROWID
        """,
    ),
    # 6: the last message sent to each address, per channel and sender, whose topic a STOP
    # without one answers under the topic opt-out scope (record_sent; '' is an unknown sender,
    # NULL a message of no topic).
    (
        """
        CREATE TABLE sent_messages (
            account TEXT NOT NULL,
            channel TEXT NOT NULL,
            address_key TEXT NOT NULL,
            sender TEXT NOT NULL,
            topic TEXT,
            sent_at INTEGER NOT NULL,
            PRIMARY KEY (account, channel, address_key, sender)
        ) WITHOUT ROWID
        """,
    ),
    # 7: what retention and exports read of inbound messages: when each was received, its
    # sender's address key, and whether that was a contact's.  Rows recorded before get them
    # from their result document (its ISO 8601 time: whole seconds with their offset through
    # strftime, then the microseconds; a custom phone channel's sender is keyed as a handle, as
    # its key was not recorded).
    (
        "ALTER TABLE inbound_messages ADD COLUMN received_at INTEGER",
        "ALTER TABLE inbound_messages ADD COLUMN sender_key TEXT",
        "ALTER TABLE inbound_messages ADD COLUMN from_contact INTEGER",
        """
        UPDATE inbound_messages SET
            received_at = CAST(strftime('%s', json_extract(result, '$.received_at')) AS INTEGER)
                * 1000000 + CASE WHEN substr(json_extract(result, '$.received_at'), 20, 1) = '.'
                THEN CAST(substr(json_extract(result, '$.received_at'), 21, 6) AS INTEGER)
                ELSE 0 END,
            sender_key = CASE
                WHEN channel IN ('sms', 'mms', 'rcs', 'whatsapp', 'voice')
                    THEN 'phone:' || json_extract(result, '$.sender')
                WHEN channel = 'email' THEN 'email:' || lower(json_extract(result, '$.sender'))
                ELSE 'handle:' || channel || ':' || json_extract(result, '$.sender')
            END,
            from_contact = json_array_length(result, '$.contact_ids') > 0
        WHERE json_valid(result) AND json_type(result, '$.received_at') = 'text'
            AND json_type(result, '$.sender') = 'text'
            AND json_type(result, '$.contact_ids') = 'array'
        """,
        "CREATE INDEX inbound_messages_by_time ON inbound_messages (account, received_at)",
        "CREATE INDEX inbound_messages_by_sender ON inbound_messages (account, sender_key)",
        # The oldest first, for the bounded deletes of a purge.
        "CREATE INDEX sent_messages_by_time ON sent_messages (account, sent_at)",
        "CREATE INDEX address_departures_by_time ON address_departures (account, left_at)",
    ),
    # 8: the audit records of erasures (erase_contact).
    _sqlite_erasure.MIGRATION,
    # 9: pending opt-ins (double opt-in).
    _pending.SQLITE_MIGRATION,
)

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The schema version this module writes."""


# ---------------------------------------------------------------------------- value conversion

# One encoder for the module: json.dumps() with options builds a new encoder on every call.
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _ids_json(ids: Iterable[str]) -> str:
    return _to_json(list(ids))


def _evidence_json(evidence: Evidence | None) -> str | None:
    return None if evidence is None else _to_json(evidence_document(evidence))


def _contact_row(contact: Contact) -> tuple[str, str | None, str | None, str | None, str]:
    """The row of the staging table ck_contacts of a contact with an email or a handle: id,
    phone, email, handles (JSON), and its address keys other than the phone's (JSON)."""
    phone, handles = contact.phone, contact.handles
    keys = sorted(contact.address_keys() - {f"phone:{phone}"})
    return (
        contact.id,
        phone,
        contact.email,
        _to_json([[ch.key, handle] for ch, handle in handles]) if handles else None,
        _to_json(keys),
    )


# ---------------------------------------------------------------------------- SQL

# The select lists of the shared row decoder (consentkit.storage._rows), in its order.
_CONTACT_COLUMNS: Final = ", ".join(CONTACT_COLUMNS)
_SUBSCRIPTION_COLUMNS: Final = ", ".join(SUBSCRIPTION_COLUMNS)
_EVENT_COLUMNS: Final = ", ".join(EVENT_COLUMNS)
_REVIEW_COLUMNS: Final = ", ".join(REVIEW_COLUMNS)
_SUPPRESSION_COLUMNS: Final = ", ".join(SUPPRESSION_COLUMNS)
# The review listings by (include decided, starting after a position): each walks an index on
# (account, received_at, id) in order.  The open ones name the partial index of open items: with
# no statistics the planner rates it no better than the full one, which would walk past every
# decided item after the position (INDEXED BY also makes a missing index an error, not a scan).
_LIST_REVIEW_ITEMS: Final = {
    (decided, after): (
        f"SELECT {_REVIEW_COLUMNS} FROM review_items "
        + ("" if decided else "INDEXED BY review_items_open ")
        + "WHERE account = ?"
        + ("" if decided else " AND decision IS NULL")
        + (" AND (received_at, id) > (?, ?)" if after else "")
        + " ORDER BY received_at, id LIMIT ?"
    )
    for decided in (False, True)
    for after in (False, True)
}
_GET_SUBSCRIPTION: Final = (
    f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
    "WHERE account = ? AND contact_id = ? AND channel = ?"
)
# lock_subscriptions: the subscription columns and the lock token the shared decoder expects
# (none here: the transaction holds the file's write lock).
_LOCK_COLUMNS: Final = _SUBSCRIPTION_COLUMNS + ", NULL"
_GET_STATE: Final = (
    "SELECT state FROM subscriptions WHERE account = ? AND contact_id = ? AND channel = ?"
)
# write_changes binds the same parameters whatever the new state; the opt-out record follows it:
# an unsubscribe records who and from where (one origin: a column value of one OptOutOrigin) and
# moves last_opt_out_at forward, never back; a subscribe binds NULL for who and from where, and
# keeps last_opt_out_at.
_INSERT_SUBSCRIPTION: Final = {
    state: (
        "INSERT INTO subscriptions (account, contact_id, channel, state, version, updated_at, "
        "changed_by, source, reason, opted_out_by, opted_out_via, last_opt_out_at) "
        f"VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10, {last}) "
        # A row that exists means the expected version 0 is stale: it is left as it is, and the
        # row count coming up short reports the conflict.
        "ON CONFLICT (account, contact_id, channel) DO NOTHING"
    )
    for state, last in ((_UNSUBSCRIBED, "?5"), (_SUBSCRIBED, "NULL"))
}
_UPDATE_SUBSCRIPTION: Final = {
    state: (
        "UPDATE subscriptions SET state = ?1, version = version + 1, updated_at = ?2, "
        f"changed_by = ?3, source = ?4, reason = ?5, opted_out_by = ?6, opted_out_via = ?7{last} "
        "WHERE account = ?8 AND contact_id = ?9 AND channel = ?10 AND version = ?11"
    )
    for state, last in (
        (
            _UNSUBSCRIBED,
            ", last_opt_out_at = CASE WHEN last_opt_out_at >= ?2 THEN last_opt_out_at ELSE ?2 END",
        ),
        (_SUBSCRIBED, ""),
    )
}
# note_opt_outs adds an origin to the sorted, comma-joined set in SQL: one CASE per origin, in
# sorted order, so the result is the canonical column value (NULL stays NULL if nothing is added).
_ADD_ORIGIN: Final = (
    "nullif(rtrim("
    + " || ".join(
        f"CASE WHEN instr(',' || coalesce(opted_out_by, '') || ',', ',{value},') > 0 "
        f"OR ?1 = '{value}' THEN '{value},' ELSE '' END"
        for value in sorted(o.value for o in OptOutOrigin)
    )
    + ", ','), '')"
)
_NOTE_OPT_OUTS_SET: Final = (
    f"UPDATE subscriptions SET opted_out_by = {_ADD_ORIGIN}, "
    "last_opt_out_at = CASE WHEN last_opt_out_at >= ?2 THEN last_opt_out_at ELSE ?2 END "
    "WHERE account = ?3 AND state = 'unsubscribed' AND "
)
_NOTE_OPT_OUT: Final = _NOTE_OPT_OUTS_SET + "contact_id = ?4 AND channel = ?5"
_NOTE_OPT_OUTS: Final = (
    _NOTE_OPT_OUTS_SET + "(contact_id, channel) IN "
    "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?4))"
)
# The per-pair part of the events of one call comes as one JSON array of [contact id, channel,
# previous state] (in the order given, which becomes the sequence order); the fields shared by
# the whole call are bound once.  Measured ~40% faster than executemany with a row per event.
_INSERT_EVENTS: Final = (
    "INSERT INTO events (account, contact_id, channel, previous_state, new_state, actor_kind, "
    "actor_id, actor_roles, source, occurred_at, recorded_at, justification_reason, "
    "justification_note, evidence, reason, inbound_message_id, batch_id) "
    "SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 "
    "FROM json_each(?15) ORDER BY key"
)
# Up to this many pairs, one row per event through executemany instead: the JSON statement above
# pays for parsing and sorting its array, which a call of a few pairs does not win back (an inbound
# STOP writes three events; bench_inbound.py, alternating A/B: median store/raw 1.69-1.70 with this
# path, 1.69-1.83 without it).
_EVENT_ROWS_UP_TO: Final = 8
_INSERT_EVENT_ROWS: Final = (
    "INSERT INTO events (account, contact_id, channel, previous_state, new_state, actor_kind, "
    "actor_id, actor_roles, source, occurred_at, recorded_at, justification_reason, "
    "justification_note, evidence, reason, inbound_message_id, batch_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADD_HOURLY_CHANGES: Final = (
    "INSERT INTO hourly_changes (account, hour, channel, previous_state, new_state, events) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (account, hour, channel, previous_state, new_state) DO UPDATE SET "
    "events = events + excluded.events"
)
# The two reads of the shared trend counting (consentkit.storage._trend_counts): the roll-ups of
# a range of whole hours, and the events of a range of time (through events_by_time).
_HOURS_BETWEEN: Final = (
    "SELECT channel, previous_state, new_state, sum(events) FROM hourly_changes "
    "WHERE account = ? AND hour >= ? AND hour < ? GROUP BY channel, previous_state, new_state"
)
_EVENTS_BETWEEN: Final = (
    "SELECT channel, previous_state, new_state, count(*) FROM events "
    "WHERE account = ? AND occurred_at >= ? AND occurred_at < ? "
    "GROUP BY channel, previous_state, new_state"
)


# put_contacts: one statement per table and chunk, the rows as one JSON array.  A contact that
# is imported again unchanged is not rewritten.
# Contacts are written from the temporary table ck_contacts (one row per contact of the call,
# filled with one executemany): the contacts upsert, then the address index brought to the staged
# addresses set-based, without reading it into Python.
_STAGE_CONTACT_ROWS: Final = (
    "INSERT INTO temp.ck_contacts (id, phone, email, handles, keys) VALUES (?, ?, ?, ?, ?)"
)
_STAGE_PLAIN_CONTACT_ROWS: Final = "INSERT INTO temp.ck_contacts (id, phone) VALUES (?, ?)"
_UPSERT_CONTACTS: Final = (
    "INSERT INTO contacts (account, id, phone, email, handles) "
    "SELECT ?1, id, phone, email, handles FROM temp.ck_contacts WHERE true "
    "ON CONFLICT (account, id) DO UPDATE SET phone = excluded.phone, email = excluded.email, "
    "handles = excluded.handles WHERE contacts.phone IS NOT excluded.phone "
    "OR contacts.email IS NOT excluded.email OR contacts.handles IS NOT excluded.handles"
)
# Every (address key, contact id) the staged contacts have: a phone's key is built here (the
# same text as Contact.address_keys), the other keys come computed in the JSON array `keys`
# (email keys are lower-cased by Python's rules, which SQLite's lower() does not follow).
_STAGED_ADDRESSES: Final = (
    "SELECT 'phone:' || phone AS address_key, id AS contact_id FROM temp.ck_contacts "
    "WHERE phone IS NOT NULL "
    "UNION ALL SELECT k.value, t.id FROM temp.ck_contacts AS t, json_each(t.keys) AS k "
    "WHERE t.keys IS NOT NULL"
)
# The entries of the staged contacts they no longer have (a new contact has none: an index
# look-up by contact each), then the ones they gained.
_DELETE_CONTACT_ADDRESSES: Final = (
    "DELETE FROM contact_addresses WHERE account = ?1 "
    "AND contact_id IN (SELECT id FROM temp.ck_contacts) "
    f"AND (address_key, contact_id) NOT IN ({_STAGED_ADDRESSES})"
)
_INSERT_CONTACT_ADDRESSES: Final = (
    "INSERT INTO contact_addresses (account, address_key, contact_id) "
    f"SELECT ?1, address_key, contact_id FROM ({_STAGED_ADDRESSES}) WHERE true "
    "ON CONFLICT DO NOTHING"
)
# The staged contacts as new ones (put_new_contacts): a registered one fails the statement.
_INSERT_NEW_CONTACTS: Final = (
    "INSERT INTO contacts (account, id, phone, email, handles) "
    "SELECT ?1, id, phone, email, handles FROM temp.ck_contacts"
)
# The same when every staged contact has a phone or nothing (no keys column to expand).
_INSERT_PLAIN_CONTACT_ADDRESSES: Final = (
    "INSERT INTO contact_addresses (account, address_key, contact_id) "
    "SELECT ?1, 'phone:' || phone, id FROM temp.ck_contacts WHERE phone IS NOT NULL "
    "ON CONFLICT DO NOTHING"
)
# The active suppressions of the staged contacts' address keys (written_suppressions), each
# once however many staged contacts share its key: an index look-up per staged key (CROSS JOIN
# keeps the staged rows outside, whatever the planner guesses of the tables' sizes).
_WRITTEN_SUPPRESSIONS: Final = (
    f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE rowid IN ("
    "SELECT s.rowid FROM temp.ck_contacts AS t CROSS JOIN suppressions AS s "
    "ON s.account = ?1 AND s.address_key = 'phone:' || t.phone "
    "WHERE t.phone IS NOT NULL AND s.active "
    "UNION ALL SELECT s.rowid FROM temp.ck_contacts AS t CROSS JOIN json_each(t.keys) AS k "
    "CROSS JOIN suppressions AS s ON s.account = ?1 AND s.address_key = k.value "
    "WHERE t.keys IS NOT NULL AND s.active) ORDER BY rowid"
)

# The states of one contact's pair and its topic pair (can_send with a topic).
# An export's reads of the records of some addresses (records_of_addresses).
_INBOUND_OF: Final = (
    "SELECT channel, message_id, body_sha256, result, received_at, sender_key, from_contact "
    "FROM inbound_messages WHERE account = ? AND sender_key IN (SELECT value FROM json_each(?)) "
    "ORDER BY received_at, channel, message_id"
)
_REVIEW_OF: Final = (
    f"SELECT {_REVIEW_COLUMNS} FROM review_items "
    "WHERE account = ? AND lower(sender) IN (SELECT value FROM json_each(?)) "
    "ORDER BY received_at, id"
)
_SUPPRESSIONS_OF: Final = (
    f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions "
    "WHERE account = ? AND address_key IN (SELECT value FROM json_each(?)) ORDER BY rowid"
)
_SENT_TO: Final = (
    "SELECT channel, address_key, sender, topic, sent_at FROM sent_messages "
    "WHERE account = ? AND address_key IN (SELECT value FROM json_each(?)) "
    "ORDER BY sent_at, channel, sender"
)
# Retention (purge_expired): each a bounded delete of the oldest expired rows of one kind, by
# primary key (the tables have no rowid).  An inbound message with an open review item stays.
_OPEN_REVIEW: Final = (
    "NOT EXISTS (SELECT 1 FROM review_items AS r WHERE r.account = m.account "
    "AND r.channel = m.channel AND r.message_id = m.message_id AND r.decision IS NULL)"
)
_PURGE: Final = {
    PurgeKind.INBOUND_RESULTS: f"""
        DELETE FROM inbound_messages WHERE (account, channel, message_id) IN (
            SELECT account, channel, message_id FROM inbound_messages AS m
            WHERE account = ?1 AND received_at < ?2 AND {_OPEN_REVIEW}
            ORDER BY received_at LIMIT ?3)""",
    PurgeKind.NON_CONTACT_INBOUND: f"""
        DELETE FROM inbound_messages WHERE (account, channel, message_id) IN (
            SELECT account, channel, message_id FROM inbound_messages AS m
            WHERE account = ?1 AND received_at < ?2 AND from_contact = 0 AND {_OPEN_REVIEW}
            ORDER BY received_at LIMIT ?3)""",
    PurgeKind.DECIDED_REVIEW_ITEMS: """
        DELETE FROM review_items WHERE (account, id) IN (
            SELECT account, id FROM review_items
            WHERE account = ?1 AND received_at < ?2 AND decision IS NOT NULL
            ORDER BY received_at LIMIT ?3)""",
    PurgeKind.SENT_MESSAGES: """
        DELETE FROM sent_messages WHERE (account, channel, address_key, sender) IN (
            SELECT account, channel, address_key, sender FROM sent_messages
            WHERE account = ?1 AND sent_at < ?2 ORDER BY sent_at LIMIT ?3)""",
    PurgeKind.ADDRESS_DEPARTURES: """
        DELETE FROM address_departures WHERE (account, address_key, left_at, contact_id) IN (
            SELECT account, address_key, left_at, contact_id FROM address_departures
            WHERE account = ?1 AND left_at < ?2 ORDER BY left_at LIMIT ?3)""",
}
# The sent-message log (record_sent): a later record replaces an earlier one, ties to the last.
_PUT_SENT: Final = """
    INSERT INTO sent_messages (account, channel, address_key, sender, topic, sent_at)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (account, channel, address_key, sender) DO UPDATE
    SET topic = excluded.topic, sent_at = excluded.sent_at
    WHERE excluded.sent_at >= sent_messages.sent_at"""
_SENT_TO_ADDRESS: Final = (
    "SELECT channel, sender, topic, sent_at FROM sent_messages WHERE account = ? "
    "AND address_key = ? AND channel IN (SELECT value FROM json_each(?))"
)
# Two pairs (a topic can_send: the channel's and the topic's) as two scalar subqueries, one row
# whatever is recorded: each a primary-key probe, 1.3x the one probe of a channel's get_state
# where "channel IN (?, ?)" and a fetchall of its rows took twice as long.
_STATES_OF_TWO: Final = (
    "SELECT (SELECT state FROM subscriptions WHERE account = ?1 AND contact_id = ?2 "
    "AND channel = ?3), (SELECT state FROM subscriptions WHERE account = ?1 "
    "AND contact_id = ?2 AND channel = ?4)"
)

# ---------------------------------------------------------------------------- set-based changes
# (the StagingTransaction methods): a chunk's contact ids are staged in a temporary table, its
# channels in another, and every statement joins them with the subscriptions inside SQLite.
# The temporary tables are created once per connection, outside any transaction (a temporary
# table created inside one would go with its rollback); their rows live until replaced.
_CREATE_STAGING: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS ck_staged (ord INTEGER PRIMARY KEY, contact_id TEXT NOT NULL)",
    "CREATE TEMP TABLE IF NOT EXISTS ck_channels (idx INTEGER PRIMARY KEY, key TEXT NOT NULL)",
    # The pairs apply_staged writes, in staging order (the rowid), with their state and version
    # before the change (state NULL: never subscribed).
    "CREATE TEMP TABLE IF NOT EXISTS ck_written "
    "(contact_id TEXT NOT NULL, channel TEXT NOT NULL, state TEXT, version INTEGER NOT NULL)",
    # The contacts put_contacts writes (keys: a JSON array of their non-phone address keys).
    "CREATE TEMP TABLE IF NOT EXISTS ck_contacts "
    "(id TEXT NOT NULL, phone TEXT, email TEXT, handles TEXT, keys TEXT)",
)
_STAGE_CONTACTS: Final = (
    "INSERT INTO temp.ck_staged (contact_id) SELECT value FROM json_each(?) ORDER BY key"
)
_STAGE_CHANNELS: Final = (
    "INSERT INTO temp.ck_channels (idx, key) SELECT key, value FROM json_each(?) ORDER BY key"
)
# Every staged pair, staging position then channel index (the scan order of both integer keys,
# so no sort), with its row (all NULL: never subscribed).  ?1 is the account.
_STAGED_FROM: Final = (
    "FROM temp.ck_staged AS t CROSS JOIN temp.ck_channels AS c "
    "LEFT JOIN subscriptions AS s "
    "ON s.account = ?1 AND s.contact_id = t.contact_id AND s.channel = c.key"
)
# The situations of the pairs (one group each); the same columns identify a situation below.
_STAGED_SITUATIONS: Final = (
    "SELECT c.idx, s.state, s.changed_by, s.source, s.opted_out_by, count(*), max(s.updated_at) "
    f"{_STAGED_FROM} GROUP BY c.idx, s.state, s.changed_by, s.source, s.opted_out_by"
)


def _situations_in(columns: str, parameter: str) -> str:
    """The condition that *columns* (channel key, state, changed by, source, opted out by) are
    one of the situations of the JSON array *parameter* of such 5-arrays: NULL is compared as ''
    (never-subscribed pairs have no row, and no stored value is empty), and the subquery is
    evaluated once, into an index."""
    column_list = ", ".join(
        c if n == 0 else f"coalesce({c}, '')" for n, c in enumerate(columns.split(", "))
    )
    extracted = ", ".join(f"json_extract(value, '$[{n}]')" for n in range(5))
    return f"({column_list}) IN (SELECT {extracted} FROM json_each({parameter}))"


_STAGED_IN_SITUATIONS: Final = _situations_in(
    "c.key, s.state, s.changed_by, s.source, s.opted_out_by", "?2"
)
# ?1 account, ?2 situations, ?3 changed after (NULL: any), ?4 limit (-1: none).
_STAGED_PAIRS: Final = (
    "SELECT t.contact_id, c.idx, coalesce(s.version, 0), s.state, s.changed_by, s.source, "
    f"s.opted_out_by {_STAGED_FROM} WHERE {_STAGED_IN_SITUATIONS} "
    "AND (?3 IS NULL OR s.updated_at > ?3) ORDER BY t.ord, c.idx LIMIT ?4"
)
_SNAPSHOT_WRITTEN: Final = (
    "INSERT INTO temp.ck_written (contact_id, channel, state, version) "
    f"SELECT t.contact_id, c.key, s.state, coalesce(s.version, 0) {_STAGED_FROM} "
    f"WHERE {_STAGED_IN_SITUATIONS} ORDER BY t.ord, c.idx"
)
# The rows of the staged pairs, as the primary key finds them (both lists are read into an index
# once, then each pair is one key lookup).
_STAGED_ROWS: Final = (
    "contact_id IN (SELECT contact_id FROM temp.ck_staged) "
    "AND channel IN (SELECT key FROM temp.ck_channels)"
)
# note_opt_outs over the staged pairs of the situations ?4, which are unsubscribed and share
# their opt-out origins, so the new set of origins ?1 is computed once for them; a pair that
# already says it all is not rewritten.  ?2 occurred at, ?3 account.
_NOTE_STAGED_OPT_OUTS: Final = (
    "UPDATE subscriptions SET opted_out_by = ?1, "
    "last_opt_out_at = CASE WHEN last_opt_out_at >= ?2 THEN last_opt_out_at ELSE ?2 END "
    f"WHERE account = ?3 AND {_STAGED_ROWS} AND state = 'unsubscribed' AND "
    + _situations_in("channel, state, changed_by, source, opted_out_by", "?4")
    + " AND (opted_out_by IS NOT ?1 OR last_opt_out_at IS NULL OR last_opt_out_at < ?2)"
)
# The events of the written pairs in staging order, with the fields of _INSERT_EVENTS and the
# pair's state before the change: from the copy of the written pairs, or (every staged pair is
# written) straight from the pairs, before their rows change.
_INSERT_STAGED_EVENTS: Final = {
    everything: (
        "INSERT INTO events (account, contact_id, channel, previous_state, new_state, "
        "actor_kind, actor_id, actor_roles, source, occurred_at, recorded_at, "
        "justification_reason, justification_note, evidence, reason, inbound_message_id, "
        f"batch_id) SELECT ?1, {pair}, coalesce({state}, 'never_subscribed'), "
        f"?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 {source}"
    )
    for everything, pair, state, source in (
        (False, "contact_id, channel", "state", "FROM temp.ck_written ORDER BY rowid"),
        (True, "t.contact_id, c.key", "s.state", f"{_STAGED_FROM} ORDER BY t.ord, c.idx"),
    )
}
# The rows of the written pairs, as _INSERT_SUBSCRIPTION and _UPDATE_SUBSCRIPTION write them, in
# one upsert: a never-subscribed pair is inserted at version 1, a recorded one updated to version
# + 1 (from the copy: only if it is still at the copy's version, so a row count short of the
# pairs means a pair moved).  ?1 account, ?2 state, ?3 occurred at, ?4 changed by, ?5 source,
# ?6 reason, ?7 opted out by, ?8 opted out via.  Keyed by (new state, every staged pair).
_UPSERT_STAGED: Final = {
    (state, everything): (
        "INSERT INTO subscriptions (account, contact_id, channel, state, version, updated_at, "
        "changed_by, source, reason, opted_out_by, opted_out_via, last_opt_out_at) "
        f"SELECT ?1, {pair}, ?2, {version}, ?3, ?4, ?5, ?6, ?7, ?8, {first} {source} WHERE true "
        "ON CONFLICT (account, contact_id, channel) DO UPDATE SET state = excluded.state, "
        "version = subscriptions.version + 1, updated_at = excluded.updated_at, "
        "changed_by = excluded.changed_by, source = excluded.source, reason = excluded.reason, "
        f"opted_out_by = excluded.opted_out_by, opted_out_via = excluded.opted_out_via{last}"
        + ("" if everything else " WHERE subscriptions.version + 1 = excluded.version")
    )
    for state, first, last in (
        (
            _UNSUBSCRIBED,
            "?3",
            ", last_opt_out_at = CASE WHEN last_opt_out_at >= ?3 THEN last_opt_out_at ELSE ?3 END",
        ),
        (_SUBSCRIBED, "NULL", ""),
    )
    for everything, pair, version, source in (
        (False, "contact_id, channel", "version + 1", "FROM temp.ck_written"),
        (
            True,
            "t.contact_id, c.key",
            "1",
            "FROM temp.ck_staged AS t CROSS JOIN temp.ck_channels AS c",
        ),
    )
}
# The roll-up of the written pairs grouped in SQL (_ADD_HOURLY_CHANGES), when their numbers per
# situation are not known: ?1 account, ?2 hour, ?3 new state.
_ADD_STAGED_HOURLY_CHANGES: Final = (
    "INSERT INTO hourly_changes (account, hour, channel, previous_state, new_state, events) "
    "SELECT ?1, ?2, channel, coalesce(state, 'never_subscribed'), ?3, count(*) "
    "FROM temp.ck_written WHERE true GROUP BY channel, state "
    "ON CONFLICT (account, hour, channel, previous_state, new_state) DO UPDATE SET "
    "events = events + excluded.events"
)


def _in_channels(count: int) -> str:
    return "(" + ", ".join("?" * count) + ")"


# ---------------------------------------------------------------------------- errors


def _is_unique_violation(error: sqlite3.Error) -> bool:
    name = getattr(error, "sqlite_errorname", "")
    if name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return True
    return isinstance(error, sqlite3.IntegrityError) and "UNIQUE constraint failed" in str(error)


def _is_busy(error: sqlite3.Error) -> bool:
    name = getattr(error, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    message = str(error)
    return isinstance(error, sqlite3.OperationalError) and (
        "database is locked" in message or "database table is locked" in message
    )


class _FairLock:
    """A lock granted in request order, with a timeout.

    The writers of one process queue here before ``BEGIN IMMEDIATE``.  SQLite's own busy handler
    polls with sleeps of up to 100 ms and serves waiters in no particular order; this lock hands
    over to the next waiter the moment it is released, and in order, so a thread that read the
    clock earlier also writes earlier.  Other processes still queue on the busy handler.
    """

    __slots__ = ("_mutex", "_owned", "_waiters")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owned = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._owned and not self._waiters:
                self._owned = True
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=timeout):
            return True  # release() handed the lock over
        with self._mutex:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True  # handed over between the timeout and here: we own it now
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._owned = False


class _ForkGate:
    """Keeps ``fork()`` out of this process's write transactions.

    SQLite keeps a process's file locks in process memory, shared by every connection of the
    process to one file.  A child forked while a thread holds a write transaction inherits the
    record "a connection of this process holds the write lock", which nobody in the child can
    ever release (the connection belongs to the parent's thread, and using or closing it in the
    child would write to the shared WAL index): every connection the child opens to the file, in
    any store, then waits for the write lock in vain.  So ``fork()`` waits here (the
    ``os.register_at_fork`` *before* hook) until the write transactions of every store of the
    process have ended, and no new one starts until the fork is done; the child then inherits
    no lock held.  The transactions of the forking thread itself cannot end first, and are not
    waited for (forking inside a transaction leaves it to the parent, see
    :meth:`_TransactionScope.__exit__`).

    A transaction enters the gate after its store's in-process queue, so a thread queued behind
    another is not waited for.  The wait is bounded by the longest busy timeout of the stores
    used: past it the fork goes ahead (with a RuntimeWarning), rather than hang a process
    whose transaction waits for the forking thread.
    """

    __slots__ = ("_condition", "_forking", "_longest", "_mine", "_open")

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._open = 0  # write transactions open in this process
        self._forking = 0  # threads forking now
        self._longest = 0.0  # the longest busy timeout of a transaction so far
        self._mine = _HeldByThread()

    def enter(self, timeout: float) -> bool:
        """Count a write transaction of this thread; False if a fork kept it out *timeout* s."""
        mine = self._mine
        with self._condition:
            # A thread with a transaction open goes through: a fork does not wait for it (it is
            # the one forking, or it nests stores and is counted already).
            if (
                self._forking
                and not mine.held
                and not self._condition.wait_for(lambda: not self._forking, timeout)
            ):
                return False
            self._open += 1
            self._longest = max(self._longest, timeout)
        mine.held += 1
        return True

    def exit(self) -> None:
        """The write transaction counted by :meth:`enter` has ended."""
        self._mine.held -= 1
        with self._condition:
            self._open -= 1
            if self._forking:
                self._condition.notify_all()

    def before_fork(self) -> None:
        own = self._mine.held
        with self._condition:
            self._forking += 1
            if not self._condition.wait_for(lambda: self._open <= own, self._longest):
                warnings.warn(
                    f"fork() went ahead while a thread held a consentkit SQLite write transaction "
                    f"for more than {self._longest:g} s: the child cannot write to that database "
                    "file",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def after_fork_in_parent(self) -> None:
        with self._condition:
            self._forking -= 1
            self._condition.notify_all()

    def after_fork_in_child(self) -> None:
        # Only the forking thread runs in the child: the condition's lock may have been held by
        # another thread at the fork, so it is replaced rather than taken.
        self._condition = threading.Condition(threading.Lock())
        self._open = self._mine.held
        self._forking = 0


class _HeldByThread(threading.local):
    held: int = 0  # write transactions this thread has open (in any store)


_fork_gate: Final = _ForkGate()


class _TransactionScope(AbstractContextManager["_SQLiteTransaction"]):
    """``BEGIN IMMEDIATE`` on enter; ``COMMIT`` on a normal exit, ``ROLLBACK`` on an exception."""

    __slots__ = ("_account", "_conn", "_forks", "_store", "_writer")

    def __init__(self, store: SQLiteStore, account: str) -> None:
        self._store = store
        self._account = account
        self._conn: sqlite3.Connection | None = None
        self._writer: _FairLock | None = None
        self._forks = 0

    def __enter__(self) -> _SQLiteTransaction:
        store = self._store
        if store._read_only is not None:
            raise StorageError(
                f"cannot write to {store.path!r}: the store opened it read-only "
                f"({store._read_only}); open a new store once this process may write it"
            )
        store._forget_parent()
        local = store._local
        if local.open and local.forks == _forks[0]:
            raise StorageError(_NESTED_TRANSACTION)
        timeout = store.busy_timeout
        writer = store._writer
        started = time.monotonic()
        if not writer.acquire(timeout):
            raise ConflictError(
                f"could not start a write transaction: other threads kept {store.path!r} busy "
                f"for more than {timeout:g} s; retry, or raise busy_timeout"
            )
        if not _fork_gate.enter(max(0.0, timeout - (time.monotonic() - started))):
            writer.release()
            raise ConflictError(
                f"could not start a write transaction on {store.path!r}: a fork() of this "
                f"process waited for other transactions for more than {timeout:g} s; retry"
            )
        try:
            # Connect only once in line: a thread's first connection takes I/O, and a thread that
            # read the clock first must not be overtaken while it connects.
            conn = store._connection()
            waited = time.monotonic() - started
            with store._errors("start a write transaction"):
                if waited > _SHORT_WAIT:
                    # The wait for the other threads counts against the same busy timeout.
                    remaining = max(0, int((timeout - waited) * 1000))
                    conn.execute(f"PRAGMA busy_timeout = {remaining}")
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    finally:
                        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                else:
                    conn.execute("BEGIN IMMEDIATE")
        except BaseException:  # a translated driver error, KeyboardInterrupt...
            _fork_gate.exit()
            writer.release()
            raise
        self._conn = conn
        self._writer = writer
        self._forks = _forks[0]
        local.open = True
        return _SQLiteTransaction(store, conn, self._account)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, writer = self._conn, self._writer
        self._conn = self._writer = None
        if conn is None or writer is None:
            return
        self._store._local.open = False
        try:
            if self._forks != _forks[0]:
                # A child forked inside the transaction: it belongs to the parent, which commits
                # or rolls it back.  The child's copy of the connection must not touch the file.
                if exc_type is None:
                    raise StorageError(
                        "the process forked inside a write transaction: the child cannot commit "
                        "it (the parent does); fork outside transactions"
                    )
            elif exc_type is None:
                try:
                    with self._store._errors("commit the transaction"):
                        conn.execute("COMMIT")
                except ConsentError:
                    _rollback_quietly(conn)
                    raise
            else:
                _rollback_quietly(conn)
        finally:
            _fork_gate.exit()
            writer.release()


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (disk full, I/O); a second ROLLBACK would
    # fail and hide the error that matters.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class _Errors(AbstractContextManager[None]):
    """The one place SQLite errors become consentkit errors: a ``with`` block that translates a
    :class:`sqlite3.Error` raised in it (see :meth:`SQLiteStore._error`), naming what it was
    doing.  *exists*, when given, is the message of the ConflictError for a unique violation."""

    __slots__ = ("_doing", "_exists", "_store")

    def __init__(self, store: SQLiteStore, doing: str, exists: str | None = None) -> None:
        self._store = store
        self._doing = doing
        self._exists = exists

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, sqlite3.Error):
            if self._exists is not None and _is_unique_violation(exc):
                raise ConflictError(self._exists) from exc
            raise self._store._error(exc, self._doing) from exc


class _SQLiteTransaction:
    """One ``BEGIN IMMEDIATE`` transaction: holds the write lock of the file until it ends, so
    every pair it reads is locked against other writers (read or absent)."""

    __slots__ = (
        "_account",
        "_channel_keys",
        "_conn",
        "_counts",
        "_errors",
        "_store",
        "_variants",
        "_wrote_contacts",
    )

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection, account: str) -> None:
        self._store = store
        self._conn = conn
        self._account = account
        self._errors = store._errors
        # The channel keys in temp.ck_channels, once this transaction staged them.
        self._channel_keys: tuple[str, ...] | None = None
        # The column values (as _situations_in compares them) of each situation read by
        # staged_situations: one, unless the same set of opt-out origins was stored in two
        # spellings.
        self._variants: dict[SituationKey, set[_SituationColumns]] = {}
        # The number of staged pairs in each situation, from staged_situations, while it holds.
        self._counts: dict[SituationKey, int] | None = None
        # Whether temp.ck_contacts holds the contacts of the last put_contacts.
        self._wrote_contacts = False

    def missing_contacts(self, contact_ids: Sequence[str]) -> list[str]:
        """The ids among *contact_ids* that are not registered, in input order, once each."""
        if not contact_ids:
            return []
        with self._errors("look up contacts"):
            if len(contact_ids) == 1:
                # One contact (an inbound STOP, the inbox toggle): a plain key lookup, no JSON.
                row = self._conn.execute(
                    "SELECT 1 FROM contacts WHERE account = ? AND id = ?",
                    (self._account, contact_ids[0]),
                ).fetchone()
                return [] if row is not None else [contact_ids[0]]
            rows = self._conn.execute(
                "SELECT value FROM json_each(?) AS given WHERE NOT EXISTS "
                "(SELECT 1 FROM contacts WHERE account = ? AND id = given.value) "
                "ORDER BY given.key",
                (_ids_json(dict.fromkeys(contact_ids)), self._account),
            ).fetchall()
        return [row[0] for row in rows]

    def recorded_among(self, contact_ids: Sequence[str], channel: Channel) -> set[str]:
        """The ids among *contact_ids* whose pair on *channel* was ever subscribed (one indexed
        query)."""
        if not contact_ids:
            return set()
        with self._errors("read subscriptions"):
            rows = self._conn.execute(
                "SELECT contact_id FROM subscriptions WHERE account = ? AND channel = ? "
                "AND contact_id IN (SELECT value FROM json_each(?)) "
                "AND NOT (state = 'unsubscribed' AND version <= 1)",
                (self._account, channel.key, _ids_json(contact_ids)),
            ).fetchall()
        return {row[0] for row in rows}

    def get_contacts(self, contact_ids: Sequence[str]) -> dict[str, Contact]:
        """The registered contacts among *contact_ids*, by id."""
        if not contact_ids:
            return {}
        account = self._account
        with self._errors("read contacts"):
            rows = self._conn.execute(
                f"SELECT {_CONTACT_COLUMNS} FROM contacts "
                "WHERE account = ? AND id IN (SELECT value FROM json_each(?))",
                (account, _ids_json(contact_ids)),
            ).fetchall()
        decoder = self._store._decoder()
        return {row[0]: decoder.contact(account, row) for row in rows}

    def put_contacts(self, contacts: Sequence[Contact]) -> None:
        """Insert or replace contacts and their address index entries (the last of one id wins):
        the contacts staged with one ``executemany``, then one statement per table, the address
        entries only where they change."""
        by_id = {contact.id: contact for contact in contacts}
        self._wrote_contacts = False
        if not by_id:
            return
        with self._errors("write contacts"):
            plain = self._stage_contacts(by_id.values())
            account = (self._account,)
            self._conn.execute(_UPSERT_CONTACTS, account)
            self._conn.execute(_DELETE_CONTACT_ADDRESSES, account)
            self._conn.execute(
                _INSERT_PLAIN_CONTACT_ADDRESSES if plain else _INSERT_CONTACT_ADDRESSES, account
            )
        self._wrote_contacts = True

    def put_new_contacts(self, contacts: Sequence[Contact], address_keys: Sequence[str]) -> bool:
        """If none of *contacts* (distinct ids) is registered, insert them and their address
        entries and return True; otherwise write nothing and return False.  Their address keys
        need no lock: the transaction holds the file's write lock.

        No contact is looked up first: the insert itself finds a registered one (its statement
        is undone, the transaction goes on), so a new import's chunk reads nothing back."""
        del address_keys  # locked already (see lock_addresses)
        self._wrote_contacts = False
        if not contacts:
            return True
        conn = self._conn
        with self._errors("write contacts"):
            plain = self._stage_contacts(contacts)
            account = (self._account,)
            try:
                conn.execute(_INSERT_NEW_CONTACTS, account)
            except sqlite3.IntegrityError as error:
                if not _is_unique_violation(error):
                    raise
                return False
            conn.execute(
                _INSERT_PLAIN_CONTACT_ADDRESSES if plain else _INSERT_CONTACT_ADDRESSES, account
            )
        self._wrote_contacts = True
        return True

    def _stage_contacts(self, contacts: Iterable[Contact]) -> bool:
        """Replace the rows of temp.ck_contacts with *contacts*; whether each of them has a
        phone or nothing (no keys column to expand)."""
        conn = self._conn
        conn.execute("DELETE FROM temp.ck_contacts")
        # A phone or nothing is the common case of an import: such rows bind two values.
        plain = [(c.id, c.phone) for c in contacts if c.email is None and not c.handles]
        if plain:
            conn.executemany(_STAGE_PLAIN_CONTACT_ROWS, plain)
        others = [_contact_row(c) for c in contacts if c.email is not None or c.handles]
        if others:
            conn.executemany(_STAGE_CONTACT_ROWS, others)
        return not others

    def written_suppressions(self) -> list[Suppression]:
        """The active suppressions of every address key of the contacts the last put_contacts
        wrote (none if it wrote none), oldest record first: one join of the staged contacts'
        keys with the suppressions, in place of a get_suppressions of those keys."""
        if not self._wrote_contacts:
            return []
        with self._errors("read suppressions"):
            rows = self._conn.execute(_WRITTEN_SUPPRESSIONS, (self._account,)).fetchall()
        return self._store._decoder().suppressions(self._account, rows)

    def lock_subscriptions(
        self, contact_ids: Sequence[str], channels: Sequence[Channel]
    ) -> dict[tuple[str, Channel], Subscription]:
        """The existing subscriptions among ``contact_ids x channels`` (one query).

        The transaction already holds the file's write lock, so these rows, and the pairs that have
        none, cannot change until it ends.
        """
        if not contact_ids or not channels:
            return {}
        by_key = {ch.key: ch for ch in channels}
        with self._errors("read subscriptions"):
            if len(contact_ids) == 1:
                # One contact: its rows are adjacent under the primary key, no JSON needed.
                rows = self._conn.execute(
                    f"SELECT {_LOCK_COLUMNS} FROM subscriptions "
                    f"WHERE account = ? AND contact_id = ? "
                    f"AND channel IN {_in_channels(len(by_key))}",
                    (self._account, contact_ids[0], *by_key),
                ).fetchall()
            else:
                rows = self._conn.execute(
                    f"SELECT {_LOCK_COLUMNS} FROM subscriptions "
                    f"WHERE account = ? AND channel IN {_in_channels(len(by_key))} "
                    "AND contact_id IN (SELECT value FROM json_each(?))",
                    (self._account, *by_key, _ids_json(contact_ids)),
                ).fetchall()
        return self._store._decoder().locked_subscriptions(self._account, rows, by_key)

    def write_changes(self, batch: ChangeBatch, changes: Sequence[PairChange]) -> None:
        """Upsert every pair, append one event per pair in order and add to the hourly roll-up,
        all or nothing.  The opt-out record of each pair follows the new state (see
        :meth:`StoreTransaction.write_changes <consentkit.storage.StoreTransaction.write_changes>`).

        Raises:
            ConflictError: an ``expected_version`` does not match the stored version; nothing of
                this call is applied.
            ValidationError: the batch is for another account, or back to never-subscribed.
        """
        account = self._account
        check_batch(batch, account)
        if not changes:
            return
        self._counts = None  # the rows change
        new_state = batch.new_state
        reason = batch.reason_code
        opted_out_by, opted_out_via = opt_out_record(batch)
        occurred_at = micros(batch.occurred_at)
        state = new_state.value
        changed_by = batch.actor.kind.value
        source = batch.source.value
        # Two statements per chunk check every expected version set-based: an UPDATE that matches
        # the version, and an INSERT that only creates absent rows; a row count short of the number
        # of pairs means a pair moved since it was read.
        updates = [
            (
                state,
                occurred_at,
                changed_by,
                source,
                reason,
                opted_out_by,
                opted_out_via,
                account,
                c.contact_id,
                c.channel.key,
                c.expected_version,
            )
            for c in changes
            if c.expected_version
        ]
        inserts = [
            (
                account,
                c.contact_id,
                c.channel.key,
                state,
                occurred_at,
                changed_by,
                source,
                reason,
                opted_out_by,
                opted_out_via,
            )
            for c in changes
            if not c.expected_version
        ]
        conn = self._conn
        with self._errors("write consent changes"):
            conn.execute("SAVEPOINT write_changes")
            try:
                written = 0
                if updates:
                    written += conn.executemany(_UPDATE_SUBSCRIPTION[new_state], updates).rowcount
                if inserts:
                    written += conn.executemany(_INSERT_SUBSCRIPTION[new_state], inserts).rowcount
                if written != len(changes):
                    raise _VersionMismatch
                values = _STATE_VALUES
                shared = _event_fields(batch)
                if len(changes) <= _EVENT_ROWS_UP_TO:
                    rows = [
                        (account, c.contact_id, c.channel.key, values[c.previous_state], *shared)
                        for c in changes
                    ]
                    conn.executemany(_INSERT_EVENT_ROWS, rows)
                else:
                    pairs_json = _to_json(
                        [[c.contact_id, c.channel.key, values[c.previous_state]] for c in changes]
                    )
                    conn.execute(_INSERT_EVENTS, (account, *shared, pairs_json))
                hour = hour_bucket(batch.occurred_at)
                pairs = Counter((c.channel.key, values[c.previous_state]) for c in changes)
                conn.executemany(
                    _ADD_HOURLY_CHANGES,
                    [
                        (account, hour, key, previous, state, count)
                        for (key, previous), count in pairs.items()
                    ],
                )
            except BaseException as e:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK TO write_changes")
                    conn.execute("RELEASE write_changes")
                if isinstance(e, _VersionMismatch):
                    raise self._conflict(changes) from None
                raise
            conn.execute("RELEASE write_changes")

    def _conflict(self, changes: Sequence[PairChange]) -> ConsentError:
        # Only on the failure path, after the savepoint was undone: name the first stale pair.
        with self._errors("check subscription versions"):
            for change in changes:
                row = self._conn.execute(
                    "SELECT version FROM subscriptions "
                    "WHERE account = ? AND contact_id = ? AND channel = ?",
                    (self._account, change.contact_id, change.channel.key),
                ).fetchone()
                version = 0 if row is None else row[0]
                if version != change.expected_version:
                    return ConflictError(
                        f"subscription of {change.contact_id!r} on {change.channel.key} is at "
                        f"version {version}, not {change.expected_version}: it changed "
                        "concurrently; re-read and retry"
                    )
        # Two changes of one pair in one call: the second finds the version the first wrote.
        return ConflictError(
            "a pair appears twice in one write_changes call, so its second expected_version "
            "cannot match; pass each pair once"
        )

    def note_opt_outs(self, batch: ChangeBatch, pairs: Sequence[tuple[str, Channel]]) -> None:
        """Add ``batch.opted_out_by`` to the opt-out record of the unsubscribed pairs among
        *pairs* and move their ``last_opt_out_at`` forward to ``batch.occurred_at``; no event, no
        new version.  One statement (a keyed one per pair for a few pairs)."""
        if not pairs:
            return
        self._counts = None  # the rows change
        origin = None if batch.opted_out_by is None else batch.opted_out_by.value
        occurred_at = micros(batch.occurred_at)
        account = self._account
        with self._errors("record opt-out requests"):
            if len(pairs) <= _EVENT_ROWS_UP_TO:
                self._conn.executemany(
                    _NOTE_OPT_OUT,
                    [(origin, occurred_at, account, cid, ch.key) for cid, ch in pairs],
                )
            else:
                self._conn.execute(
                    _NOTE_OPT_OUTS,
                    (origin, occurred_at, account, _to_json([[cid, ch.key] for cid, ch in pairs])),
                )

    # ------------------------------------------------------------ set-based changes

    def stage_contacts(self, contact_ids: Sequence[str]) -> None:
        """Make *contact_ids* the staged chunk: the rows of ``temp.ck_staged``, numbered in
        order (one statement over a JSON array)."""
        self._counts = None
        with self._errors("stage contacts"):
            self._conn.execute("DELETE FROM temp.ck_staged")
            if contact_ids:
                self._conn.execute(_STAGE_CONTACTS, (_ids_json(contact_ids),))

    def _stage_channels(self, channels: Sequence[Channel]) -> None:
        """Make *channels* the rows of ``temp.ck_channels`` (numbered in order), unless they are
        already."""
        keys = tuple(ch.key for ch in channels)
        if keys == self._channel_keys:
            return
        self._counts = None
        with self._errors("stage channels"):
            self._conn.execute("DELETE FROM temp.ck_channels")
            self._conn.execute(_STAGE_CHANNELS, (_ids_json(keys),))
        self._channel_keys = keys

    def staged_situations(self, channels: Sequence[Channel]) -> list[Situation]:
        """The situations of the staged pairs: one grouped query over ``staged x channels``
        joined with the subscriptions.  The transaction holds the file's write lock, so they
        cannot change until it ends."""
        if not channels:
            return []
        self._stage_channels(channels)
        with self._errors("read the situations of the staged pairs"):
            rows = self._conn.execute(_STAGED_SITUATIONS, (self._account,)).fetchall()
        found: dict[SituationKey, tuple[int, int | None]] = {}
        keys = self._channel_keys or ()
        for idx, state, changed_by, source, opted_out_by, count, group_latest in rows:
            key = _situation_key(channels[idx], state, changed_by, source, opted_out_by)
            self._variants.setdefault(key, set()).add(
                (keys[idx], state or "", changed_by or "", source or "", opted_out_by or "")
            )
            pairs, latest = found.get(key, (0, None))  # two rows: the origins spelled twice
            if latest is None or (group_latest is not None and group_latest > latest):
                latest = group_latest
            found[key] = (pairs + count, latest)
        # Until the chunk, its channels or its rows change: apply_staged skips the situations
        # with no pair, writes the roll-up from these numbers, and writes every pair without a
        # copy when all of them change.
        self._counts = {key: pairs for key, (pairs, _) in found.items()}
        return [
            Situation(key, pairs, None if latest is None else instant(latest))
            for key, (pairs, latest) in found.items()
        ]

    def _columns_of(self, key: SituationKey) -> set[_SituationColumns]:
        """The column values of the pairs of the situation *key* (as _situations_in compares
        them): as written, and as staged_situations found them."""
        return {_situation_columns(key), *self._variants.get(key, ())}

    def _situations_json(self, keys: Iterable[SituationKey]) -> str:
        """The column values of the situations *keys*, as _situations_in compares them."""
        columns: set[_SituationColumns] = set()
        for key in keys:
            columns |= self._columns_of(key)
        return _to_json(sorted(columns))

    def staged_pairs(
        self,
        channels: Sequence[Channel],
        keys: Sequence[SituationKey],
        *,
        changed_after: datetime | None = None,
        limit: int | None = None,
    ) -> list[StagedPair]:
        """The staged pairs of the situations *keys* in staging order (one query)."""
        if not channels or not keys or limit == 0:
            return []
        self._stage_channels(channels)
        with self._errors("read the staged pairs"):
            rows = self._conn.execute(
                _STAGED_PAIRS,
                (
                    self._account,
                    self._situations_json(keys),
                    None if changed_after is None else micros(changed_after),
                    -1 if limit is None else limit,
                ),
            ).fetchall()
        decoded: dict[tuple[int, str | None, str | None, str | None, str | None], SituationKey] = {}
        found: list[StagedPair] = []
        for contact_id, idx, version, *columns in rows:
            situation = (idx, *columns)
            key = decoded.get(situation)
            if key is None:
                key = decoded[situation] = _situation_key(channels[idx], *columns)
            found.append(StagedPair(contact_id, channels[idx], version, key))
        return found

    def apply_staged(
        self,
        batch: ChangeBatch,
        channels: Sequence[Channel],
        writes: Sequence[SituationKey],
        notes: Sequence[SituationKey],
    ) -> int:
        """Write the staged pairs of the situations *writes* and note opt-out requests on those
        of *notes*, as :meth:`write_changes` and :meth:`note_opt_outs` do, set-based: one
        statement notes the requests (one per resulting set of origins), then one each appends
        the events, upserts the rows and adds the roll-up of the written pairs (read from a copy
        of them taken first, unless every staged pair is written).  All or nothing.

        Raises:
            ConflictError: fewer rows were written than pairs (cannot happen while the
                transaction holds the write lock; nothing of this call is applied).
            ValidationError: the batch is for another account, or back to never-subscribed.
        """
        check_batch(batch, self._account)
        if not channels:
            return 0
        self._stage_channels(channels)
        counts = self._counts
        write_keys = list(dict.fromkeys(writes))
        note_keys = [key for key in dict.fromkeys(notes) if key not in write_keys]  # writes win
        if counts is not None:  # the situations with no staged pair have nothing to change
            write_keys = [key for key in write_keys if key in counts]
            note_keys = [key for key in note_keys if key in counts]
        if not write_keys and not note_keys:
            return 0
        self._counts = None  # the rows change
        conn = self._conn
        with self._errors("write consent changes"):
            conn.execute("SAVEPOINT apply_staged")
            try:
                if note_keys:
                    self._note_staged(batch, note_keys)
                written = self._write_staged(batch, write_keys, counts) if write_keys else 0
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK TO apply_staged")
                    conn.execute("RELEASE apply_staged")
                raise
            conn.execute("RELEASE apply_staged")
        return written

    def _note_staged(self, batch: ChangeBatch, keys: Sequence[SituationKey]) -> None:
        """Note an opt-out request on the staged pairs of the situations *keys*: one statement
        per set of origins they end up with."""
        origin = batch.opted_out_by
        by_origins: dict[str | None, set[_SituationColumns]] = {}
        for key in keys:
            for columns in self._columns_of(key):
                noted = origins(columns[4] or None)
                if origin is not None:
                    noted = noted | {origin}
                value = ",".join(sorted(o.value for o in noted)) or None
                by_origins.setdefault(value, set()).add(columns)
        occurred_at = micros(batch.occurred_at)
        for value, situations in by_origins.items():
            self._conn.execute(
                _NOTE_STAGED_OPT_OUTS,
                (value, occurred_at, self._account, _to_json(sorted(situations))),
            )

    def _write_staged(
        self,
        batch: ChangeBatch,
        keys: Sequence[SituationKey],
        counts: dict[SituationKey, int] | None,
    ) -> int:
        """The events, rows and roll-up of the staged pairs of the situations *keys* (*counts*:
        the number of pairs of each situation of the chunk, when known); the number of pairs
        written."""
        account, conn = self._account, self._conn
        counted = None if counts is None else sum(counts[key] for key in keys)
        everything = counts is not None and len(keys) == len(counts)
        if everything:
            copied = counted
        else:
            conn.execute("DELETE FROM temp.ck_written")
            copied = conn.execute(
                _SNAPSHOT_WRITTEN, (account, self._situations_json(keys))
            ).rowcount
        conn.execute(_INSERT_STAGED_EVENTS[everything], (account, *_event_fields(batch)))
        opted_out_by, opted_out_via = opt_out_record(batch)
        state = batch.new_state.value
        written: int = conn.execute(
            _UPSERT_STAGED[(batch.new_state, everything)],
            (
                account,
                state,
                micros(batch.occurred_at),
                batch.actor.kind.value,
                batch.source.value,
                batch.reason_code,
                opted_out_by,
                opted_out_via,
            ),
        ).rowcount
        if written != copied or (counted is not None and written != counted):
            raise ConflictError(
                f"{copied} pairs were to change but {written} did: they changed concurrently; "
                "re-read and retry"
            )
        hour = hour_bucket(batch.occurred_at)
        if counts is None:
            conn.execute(_ADD_STAGED_HOURLY_CHANGES, (account, hour, state))
            return written
        changes: Counter[tuple[str, str]] = Counter()
        for key in keys:
            changes[(key[0].key, _STATE_VALUES[key[1]])] += counts[key]
        conn.executemany(
            _ADD_HOURLY_CHANGES,
            [(account, hour, ch, previous, state, n) for (ch, previous), n in changes.items()],
        )
        return written

    def lock_addresses(self, address_keys: Sequence[str]) -> None:
        """Nothing to do: the transaction took the file's single write lock at ``BEGIN
        IMMEDIATE``, so no other transaction (of any thread or process) can read or change the
        contacts and suppressions of any address until it ends."""

    def get_inbound(self, channel: Channel, message_id: str) -> InboundRecord | None:
        """The record of an inbound message already handled, keyed by (channel, message id)."""
        with self._errors("read an inbound record"):
            row = self._conn.execute(
                "SELECT body_sha256, result FROM inbound_messages "
                "WHERE account = ? AND channel = ? AND message_id = ?",
                (self._account, channel.key, message_id),
            ).fetchone()
        return inbound_record(channel, message_id, row)

    def put_inbound(self, record: InboundRecord) -> None:
        """Remember an inbound message, the digest of its text and its result.

        Raises:
            ConflictError: the (channel, message id) is already recorded.
        """
        exists = (
            f"inbound message {record.message_id!r} on {record.channel.key} was already handled"
        )
        with _Errors(self._store, "record an inbound message", exists):
            self._conn.execute(
                "INSERT INTO inbound_messages (account, channel, message_id, body_sha256, result, "
                "received_at, sender_key, from_contact) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self._account,
                    record.channel.key,
                    record.message_id,
                    record.body_sha256,
                    record.result,
                    None if record.received_at is None else micros(record.received_at),
                    record.sender_key,
                    record.from_contact,
                ),
            )

    def put_pending(self, request: PendingOptIn) -> None:
        """Record a new pending opt-in."""
        exists = f"pending opt-in {request.id!r} exists already"
        with _Errors(self._store, "record a pending opt-in", exists):
            self._conn.execute(
                f"INSERT INTO pending_opt_ins (account, {_pending.PENDING_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self._account, *_pending.pending_row(request, micros)),
            )

    def get_pending(self, request_id: str) -> PendingOptIn | None:
        """The pending opt-in with this id, or None."""
        with self._errors("read a pending opt-in"):
            row = self._conn.execute(
                f"SELECT {_pending.PENDING_COLUMNS} FROM pending_opt_ins "
                "WHERE account = ? AND id = ?",
                (self._account, request_id),
            ).fetchone()
        if row is None:
            return None
        return _pending.pending_of(self._account, row, self._store._decoder(), instant)

    def close_pending(self, request_id: str, status: PendingStatus, at: datetime) -> None:
        """Record a request's end."""
        with self._errors("close a pending opt-in"):
            self._conn.execute(
                "UPDATE pending_opt_ins SET status = ?, closed_at = ? WHERE account = ? AND id = ?",
                (status.value, micros(at), self._account, request_id),
            )

    def open_pending_of(self, contact_ids: Sequence[str]) -> list[PendingOptIn]:
        """The still pending requests of *contact_ids*, oldest first."""
        with self._errors("read pending opt-ins"):
            rows = self._conn.execute(
                f"SELECT {_pending.PENDING_COLUMNS} FROM pending_opt_ins "
                "WHERE account = ? AND status = 'pending' "
                "AND contact_id IN (SELECT value FROM json_each(?)) ORDER BY requested_at, id",
                (self._account, _ids_json(dict.fromkeys(contact_ids))),
            ).fetchall()
        decoder = self._store._decoder()
        return [_pending.pending_of(self._account, row, decoder, instant) for row in rows]

    def put_review_item(self, item: ReviewItem) -> None:
        """Queue an item for review (its text as is, its contacts as a JSON array).

        Raises:
            ConflictError: an item with the same id exists in the account.
        """
        exists = f"review item {item.id!r} exists already"
        with _Errors(self._store, "queue a review item", exists):
            self._conn.execute(
                f"INSERT INTO review_items (account, {_REVIEW_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self._account,
                    item.id,
                    item.kind.value,
                    item.channel.key,
                    item.message_id,
                    item.sender,
                    item.text,
                    _ids_json(item.contact_ids),
                    micros(item.received_at),
                    micros(item.honor_by),
                    None if item.decision is None else item.decision.value,
                    item.decided_by,
                    None if item.decided_at is None else micros(item.decided_at),
                    item.note,
                ),
            )

    def get_review_item(self, item_id: str) -> ReviewItem | None:
        """One review item; the transaction holds the file's write lock, so it cannot change
        until the transaction ends."""
        with self._errors("read a review item"):
            row = self._conn.execute(
                f"SELECT {_REVIEW_COLUMNS} FROM review_items WHERE account = ? AND id = ?",
                (self._account, item_id),
            ).fetchone()
        return None if row is None else self._store._decoder().review_item(self._account, row)

    def decide_review_item(
        self,
        item_id: str,
        decision: ReviewDecision,
        *,
        decided_by: str,
        decided_at: datetime,
        note: str,
    ) -> None:
        """Record the decision of an open item (one statement, which only matches an open one).

        Raises:
            ConflictError: the item does not exist or was decided already.
        """
        with self._errors("record a review decision"):
            cursor = self._conn.execute(
                "UPDATE review_items SET decision = ?, decided_by = ?, decided_at = ?, note = ? "
                "WHERE account = ? AND id = ? AND decision IS NULL",
                (decision.value, decided_by, micros(decided_at), note, self._account, item_id),
            )
            if cursor.rowcount == 1:
                return
            row = self._conn.execute(
                "SELECT decision FROM review_items WHERE account = ? AND id = ?",
                (self._account, item_id),
            ).fetchone()
        if row is None:
            raise ConflictError(f"review item {item_id!r} does not exist")
        raise ConflictError(f"review item {item_id!r} was decided already ({row[0]})")

    def record_address_departures(
        self, departures: Sequence[tuple[str, str]], at: datetime
    ) -> None:
        """Remember when addresses stopped being contacts' (one row each)."""
        if not departures:
            return
        left_at = micros(at)
        with self._errors("record address departures"):
            self._conn.executemany(
                "INSERT OR IGNORE INTO address_departures "
                "(account, address_key, left_at, contact_id) VALUES (?, ?, ?, ?)",
                [(self._account, key, left_at, cid) for key, cid in departures],
            )

    def contacts_that_left(self, address_key: str, since: datetime) -> list[str]:
        """The contacts that lost *address_key* after *since* (a range of the key)."""
        with self._errors("look up address departures"):
            rows = self._conn.execute(
                "SELECT DISTINCT contact_id FROM address_departures "
                "WHERE account = ? AND address_key = ? AND left_at > ? ORDER BY contact_id",
                (self._account, address_key, micros(since)),
            ).fetchall()
        return [row[0] for row in rows]

    def owners_of_address(self, address_key: str, since: datetime) -> list[str]:
        """The contacts with *address_key* now or that lost it after *since*: one statement."""
        with self._errors("look up the contacts of an address"):
            rows = self._conn.execute(
                "SELECT contact_id FROM contact_addresses WHERE account = ?1 AND address_key = ?2 "
                "UNION SELECT contact_id FROM address_departures "
                "WHERE account = ?1 AND address_key = ?2 AND left_at > ?3 ORDER BY contact_id",
                (self._account, address_key, micros(since)),
            ).fetchall()
        return [row[0] for row in rows]

    def find_contacts_by_address(self, address_keys: Sequence[str]) -> dict[str, list[str]]:
        """Contact ids per address key, for the keys that match any contact (ids sorted)."""
        if not address_keys:
            return {}
        with self._errors("look up addresses"):
            if len(address_keys) == 1:
                # One sender (an inbound reply): a plain key lookup, no JSON.
                rows = self._conn.execute(
                    "SELECT address_key, contact_id FROM contact_addresses "
                    "WHERE account = ? AND address_key = ? ORDER BY contact_id",
                    (self._account, address_keys[0]),
                ).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT address_key, contact_id FROM contact_addresses "
                    "WHERE account = ? AND address_key IN (SELECT value FROM json_each(?)) "
                    "ORDER BY address_key, contact_id",
                    (self._account, _ids_json(address_keys)),
                ).fetchall()
        return addresses_of(rows)

    def get_suppressions(self, address_keys: Sequence[str]) -> list[Suppression]:
        """The suppressions recorded for any of *address_keys*, active and inactive, oldest
        record first."""
        if not address_keys:
            return []
        with self._errors("read suppressions"):
            rows = self._conn.execute(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions "
                "WHERE account = ? AND address_key IN (SELECT value FROM json_each(?)) "
                "ORDER BY rowid",
                (self._account, _ids_json(dict.fromkeys(address_keys))),
            ).fetchall()
        return self._store._decoder().suppressions(self._account, rows)

    def put_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        """Record the last word of addresses: each replaces the suppression of the same
        (address key, channel) only if it occurred later, or at the same instant as an opt-out
        over a withdrawal (in order, so the latest of one call wins too)."""
        if not suppressions:
            return
        account = self._account
        with self._errors("record suppressions"):
            self._conn.executemany(
                "INSERT INTO suppressions (account, address_key, channel, occurred_at, source, "
                "inbound_message_id, active) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (account, address_key, channel) DO UPDATE SET "
                "occurred_at = excluded.occurred_at, source = excluded.source, "
                "inbound_message_id = excluded.inbound_message_id, active = excluded.active "
                "WHERE excluded.occurred_at > suppressions.occurred_at "
                "OR (excluded.occurred_at = suppressions.occurred_at "
                "AND excluded.active AND NOT suppressions.active)",
                [
                    (
                        account,
                        s.address_key,
                        s.channel.key,
                        micros(s.occurred_at),
                        s.source.value,
                        s.inbound_message_id,
                        1 if s.active else 0,
                    )
                    for s in suppressions
                ],
            )

    def subscriptions_of_contact(self, contact_id: str) -> list[Subscription]:
        """Every subscription of one contact (locked: the transaction holds the write lock)."""
        with self._errors("read subscriptions"):
            rows = self._conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
                "WHERE account = ? AND contact_id = ? ORDER BY channel",
                (self._account, contact_id),
            ).fetchall()
        decoder = self._store._decoder()
        return [decoder.subscription(self._account, row) for row in rows]

    def erase_contact(self, erasure: Erasure) -> None:
        """Erase a contact: one statement per table (:mod:`consentkit.storage._sqlite_erasure`),
        then its hashed suppressions."""
        with self._errors("erase a contact"):
            _sqlite_erasure.erase(self._conn, self._account, erasure)
        self.put_suppressions(erasure.suppressions)


_SituationColumns = tuple[str, str, str, str, str]
"""A situation as its pairs' columns: channel key, state, changed by, source and opted out by,
'' for NULL (a never-subscribed pair has no row)."""


def _situation_key(
    ch: Channel,
    state: str | None,
    changed_by: str | None,
    source: str | None,
    opted_out_by: str | None,
) -> SituationKey:
    """The situation of a pair's columns (state None: no row, never subscribed)."""
    if state is None:
        return (ch, _NEVER, None, None, frozenset())
    assert changed_by is not None
    assert source is not None
    return (ch, _STATES[state], KINDS[changed_by], SOURCES[source], origins(opted_out_by))


def _situation_columns(key: SituationKey) -> _SituationColumns:
    """The columns of the pairs of a situation, as written (origins sorted, comma-joined)."""
    ch, state, changed_by, source, opted_out_by = key
    if state is _NEVER:
        return (ch.key, "", "", "", "")
    return (
        ch.key,
        state.value,
        "" if changed_by is None else changed_by.value,
        "" if source is None else source.value,
        ",".join(sorted(o.value for o in opted_out_by)),
    )


def _event_fields(batch: ChangeBatch) -> tuple[object, ...]:
    """The fields every event of *batch* shares, in the order of _INSERT_EVENTS (?2 to ?14)."""
    actor = batch.actor
    justification = batch.justification
    return (
        batch.new_state.value,
        actor.kind.value,
        actor.id,
        _to_json(sorted(actor.roles)) if actor.roles else None,
        batch.source.value,
        micros(batch.occurred_at),
        micros(batch.recorded_at),
        None if justification is None else justification.reason.value,
        None if justification is None else justification.note,
        _evidence_json(batch.evidence),
        batch.reason_code,
        batch.inbound_message_id,
        batch.batch_id,
    )


class _VersionMismatch(Exception):
    """Internal: a version-checked write matched fewer rows than it had pairs."""


def _can_write(path: str, *, directory: bool = False) -> bool:
    """Whether this process may write *path* (create files in it, for a directory)."""
    mode = os.W_OK | os.X_OK if directory else os.W_OK
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _nobody_writes(path: str, directory: str) -> bool:
    """Whether no process but a superuser's can write the database: a read-only file system, no
    write permission on the file, or none on its directory (a WAL database cannot be written
    without creating its -wal and -shm files there)."""
    statvfs = getattr(os, "statvfs", None)
    if statvfs is not None and statvfs(path).f_flag & os.ST_RDONLY:
        return True
    anyone = 0o222
    return not os.stat(path).st_mode & anyone or not os.stat(directory).st_mode & anyone


def _restore_sidecar_permissions(path: str, sidecars: Sequence[str]) -> None:
    """Give the -wal and -shm files of *path* the database file's permissions when they lack
    them, this process owns them and may not write them: SQLite creates them with the database
    file's permissions, so a read-only run left them read-only, and SQLite would open them
    read-only and fail on the first write.  Changing the mode of a file others have open does
    not disturb them."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:
        return  # not POSIX
    wanted = os.stat(path).st_mode & 0o777
    for name in sidecars:
        with suppress(OSError):  # gone meanwhile, or not ours: SQLite reports what it finds
            found = os.stat(name)
            if (
                found.st_uid == geteuid()
                and found.st_mode & 0o777 != wanted
                and not _can_write(name)
            ):
                os.chmod(name, wanted)


class _Connection(sqlite3.Connection):
    """A connection that supports weak references, so the store can find (and close) the
    connections of live threads without keeping those of finished threads open."""


class _ThreadState(threading.local):
    conn: sqlite3.Connection | None = None
    forks: int = 0  # _forks[0] when conn was opened
    open: bool = False  # a transaction of the store is open in this thread


# Bumped in a child process right after fork(): stores compare it with the value they saw, which
# is much cheaper than calling os.getpid() on every read.
_forks = [0]
_inherited: list[sqlite3.Connection] = []  # connections a forked child must neither use nor close


def _forked() -> None:
    _forks[0] += 1
    _fork_gate.after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=_fork_gate.before_fork,
        after_in_parent=_fork_gate.after_fork_in_parent,
        after_in_child=_forked,
    )


class SQLiteStore:
    """A consent store in one SQLite file (see the module docstring for durability and schema).

    Thread and process safety: share one store object between the threads of a process.  Each
    thread gets its own connection, opened on first use; connections of threads that ended are
    closed when their thread is collected, and :meth:`close` closes the rest (call it once no
    thread uses the store any more).  The writers of one process queue for the store in arrival
    order, then for SQLite's write lock with the other processes.  A process that forks opens
    fresh connections in the child (``fork()`` waits for the process's write transactions to
    end, see the module docstring), and any number of processes may open the same file.
    Transactions do not nest within a thread: opening one inside another raises StorageError.

    ``":memory:"`` is refused: each thread's connection would see a different, empty database.  Use
    :class:`~consentkit.storage.memory.InMemoryStore` for a store that lives in memory.

    Args:
        path: the database file; created with its schema if it does not exist.
        busy_timeout: seconds a writer waits for another writer's transaction to finish before
            giving up with :class:`~consentkit.errors.ConflictError`.
        synchronous: ``"FULL"`` (default) makes every commit durable against power loss;
            ``"NORMAL"`` may lose the last commits on power loss but never corrupts the file
            (``bench/bench_sqlite.py --synchronous NORMAL`` shows what it saves on a disk);
            ``"EXTRA"`` is accepted and behaves like ``"FULL"`` in WAL mode.

    Raises:
        ValidationError: the path or an option is not usable.
        StorageError: the file cannot be opened, is not a consentkit database, or was written by a
            newer consentkit.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        synchronous: Synchronous = "FULL",
    ) -> None:
        raw = os.fspath(path)
        if not isinstance(raw, str):
            raise ValidationError("path", "give the database file as a str or a path")
        if "\x00" in raw:
            raise ValidationError("path", "the file name holds a NUL character")
        if raw in ("", ":memory:") or raw.startswith("file::memory:"):
            raise ValidationError(
                "path",
                f"{raw!r} is not a file: SQLiteStore needs a database file shared by its "
                "connections; use InMemoryStore for a store in memory",
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, (int, float))
            or not 0 <= busy_timeout < 86_400
        ):
            raise ValidationError("busy_timeout", "must be a number of seconds from 0 to 86400")
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValidationError("synchronous", "must be 'FULL', 'NORMAL' or 'EXTRA'")
        self.path = raw
        self.busy_timeout = float(busy_timeout)
        self.synchronous: Synchronous = synchronous
        self._closed = False
        self._local = _ThreadState()
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._writer = _FairLock()
        self._forks = _forks[0]
        self._channels: dict[str, Channel] = {}
        self._error_scopes: dict[str, _Errors] = {}
        # Why this process cannot write the file (None: it can), and the URI its read-only
        # connections open (None: they open the path, read-write).
        self._read_only: str | None = None
        self._uri: str | None = None
        try:
            self._choose_access()
            # The first connection checks that the file is consentkit's before it changes any
            # setting of it (the journal mode is stored in the file).
            self._migrate(self._open_for_thread(check=True))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ connections

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        conn = local.conn
        if conn is not None and local.forks == _forks[0] and not self._closed:
            return conn
        return self._open_for_thread()

    def _open_for_thread(self, *, check: bool = False) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"the SQLiteStore of {self.path!r} is closed; open a new one")
        self._forget_parent()
        with self._errors("open the database"):
            conn = sqlite3.connect(
                self.path if self._uri is None else self._uri,
                timeout=self.busy_timeout,
                isolation_level=None,  # explicit BEGIN IMMEDIATE / COMMIT only
                check_same_thread=False,  # used by one thread, but close() may run in another
                cached_statements=256,
                factory=_Connection,
                uri=self._uri is not None,
            )
        try:
            if check:
                self._check_identity(conn)
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            if self._closed:
                conn.close()
                raise StorageError(f"the SQLiteStore of {self.path!r} is closed; open a new one")
            self._connections.add(conn)
        self._local.conn = conn
        self._local.forks = _forks[0]
        return conn

    def _forget_parent(self) -> None:
        # A connection inherited through fork() must not be used (or closed) in the child: SQLite
        # connections do not survive fork.  The child opens its own, and forgets the parent's
        # threads (one of them may have held the writer lock at the fork).
        # Only the forking thread exists in the child at first, so no lock is taken (another
        # thread may have held self._lock at the fork, and would never release it here).
        if self._forks != _forks[0]:
            _inherited.extend(self._connections)  # kept alive: closing them would touch the file
            self._lock = threading.Lock()
            self._connections = weakref.WeakSet()
            self._writer = _FairLock()
            self._forks = _forks[0]

    # ------------------------------------------------------------------ the file

    def _choose_access(self) -> None:
        """Decide, before connecting, whether to open the file read-write or read-only, and how.

        SQLite creates the ``-wal`` and ``-shm`` files of a WAL database with the permissions of
        the database file, and a connection that cannot write the database cannot remove them
        when it closes.  A plain connection to a read-only file would so leave a read-only
        ``-shm`` behind, which every later writer opens read-only and fails on ("attempt to
        write a readonly database"), even once the file is writable again.  So a store that
        cannot write its file creates nothing next to it:

        * when both files exist (a writer has the database open, or left them), it reads
          through them (``mode=ro``), seeing every commit;
        * when they do not and nobody can write the file (no write permission on the file or on
          its directory, or a read-only file system), it reads the file as it is
          (``immutable``: no locks, no wal-index);
        * otherwise it refuses: a write-ahead log that no writer checkpointed holds commits the
          file does not, and a file another user may write could change under an immutable
          read, while reading it normally would create a ``-shm`` that user could not write.

        A store that can write its file first gives ``-wal``/``-shm`` files left read-only by
        an earlier read-only run (of an older consentkit, or of SQLite itself) the database
        file's permissions back, when this process owns them.
        """
        path = self.path
        if not os.path.isfile(path):
            return  # SQLite creates it (or says why it cannot)
        directory = os.path.dirname(os.path.abspath(path))
        sidecars = [path + "-wal", path + "-shm"]
        present = [os.path.exists(name) for name in sidecars]
        if not _can_write(path):
            self._read_only = "this process may not write the file"
        elif not all(present) and not _can_write(directory, directory=True):
            self._read_only = "this process may not create its -wal and -shm files in the directory"
        else:
            _restore_sidecar_permissions(path, sidecars)
            return
        uri = pathlib.Path(os.path.abspath(path)).as_uri()
        if all(present):
            self._uri = uri + "?mode=ro"
            return
        wal = sidecars[0]
        if present[0] and os.path.getsize(wal) > 0:
            raise StorageError(
                f"cannot read {path!r}: {self._read_only}, and its write-ahead log {wal!r} holds "
                "commits that were not written back to it (its last writer did not close it); "
                "open it once with write access"
            )
        if _nobody_writes(path, directory):
            self._uri = uri + "?mode=ro&immutable=1"
            return
        raise StorageError(
            f"cannot read {path!r}: {self._read_only}, and no writer has it open; reading it "
            "now would create a -shm file that the users who may write it could not write (so "
            "they could no longer write the database). Read it while its writer runs, as a user "
            "who may write it, or once nobody may write it"
        )

    def _check_identity(self, conn: sqlite3.Connection) -> None:
        """Refuse a file of another application before anything changes it: only reads."""
        with self._errors("open the database"):
            self._check_application_id(conn)
            objects = conn.execute(
                "SELECT type, name FROM sqlite_master "
                "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
            ).fetchall()
        if objects and ("table", "schema_version") not in objects:
            raise StorageError(
                f"{self.path!r} already holds other tables (such as {objects[0][1]!r}) and is not "
                "a consentkit database; give SQLiteStore a file of its own"
            )

    def _configure(self, conn: sqlite3.Connection) -> None:
        with self._errors("configure the database"):
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            # The statement journal of write_changes' savepoint (and any sorter) stays in memory:
            # in a temporary file it cost every inbound STOP ~15% more wall time in system calls,
            # while a 100,000-pair bulk call grew the process by ~1 MB with it in memory.
            conn.execute("PRAGMA temp_store = MEMORY")
            if self._read_only is not None:
                return  # the file is as its writers left it
            # After a large transaction the WAL is cut back to this size at the next checkpoint.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(
                f"{self.path!r} cannot use write-ahead logging (journal mode is {mode!r}); "
                "put the database on a local file system"
            )
        with self._errors("configure the database"):
            # The staging tables of the set-based changes (in temp_store memory, per connection).
            for statement in _CREATE_STAGING:
                conn.execute(statement)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if sqlite3.sqlite_version_info < _MINIMUM_SQLITE:
            raise StorageError(
                f"SQLite {sqlite3.sqlite_version} is too old for SQLiteStore: it needs "
                f"{'.'.join(map(str, _MINIMUM_SQLITE))} or newer (upserts); use a Python built "
                "with a newer SQLite"
            )
        try:
            conn.execute("SELECT json_valid('[]')")
        except sqlite3.OperationalError as e:
            raise StorageError(
                "this Python's SQLite has no JSON functions, which SQLiteStore uses to pass id "
                "lists; use a Python built with a SQLite that has them (3.38+ always does)"
            ) from e
        with self._errors("create or upgrade the schema"):
            version = self._schema_version(conn)
            if version == SCHEMA_VERSION:
                return
            if self._read_only is not None:
                raise StorageError(self._cannot_migrate(version))
            if not _fork_gate.enter(self.busy_timeout):
                raise ConflictError(
                    f"could not upgrade the schema of {self.path!r}: a fork() of this process "
                    f"waited for other transactions for more than {self.busy_timeout:g} s; retry"
                )
            try:
                conn.execute("BEGIN IMMEDIATE")
                # Read again under the write lock: another process may have migrated meanwhile.
                version = self._schema_version(conn)
                if version is None:
                    self._check_empty(conn)
                    conn.execute(
                        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                        "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
                    )
                    version = 0
                if version > SCHEMA_VERSION:
                    raise StorageError(self._cannot_migrate(version))
                for number in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[number]:
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number + 1,))
                conn.execute("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise
            finally:
                _fork_gate.exit()

    def _cannot_migrate(self, version: int | None) -> str:
        if version is not None and version > SCHEMA_VERSION:
            return (
                f"{self.path!r} has schema version {version}, newer than this consentkit "
                f"supports ({SCHEMA_VERSION}); upgrade consentkit"
            )
        has = "no consentkit schema yet" if version is None else f"schema version {version}"
        return (
            f"{self.path!r} has {has}, and this consentkit cannot bring it to version "
            f"{SCHEMA_VERSION}: {self._read_only}; open it once with write access"
        )

    def _check_application_id(self, conn: sqlite3.Connection) -> None:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if application_id not in (0, _APPLICATION_ID):
            raise StorageError(
                f"{self.path!r} is not a consentkit database (application id "
                f"{application_id:#x}); give SQLiteStore a file of its own"
            )

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        self._check_application_id(conn)
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if exists is None:
            return None
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _check_empty(self, conn: sqlite3.Connection) -> None:
        other = conn.execute(
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' LIMIT 1"
        ).fetchone()
        if other is not None:
            raise StorageError(
                f"{self.path!r} already holds other tables (such as {other[0]!r}) and is not a "
                "consentkit database; give SQLiteStore a file of its own"
            )

    def _error(self, error: sqlite3.Error, doing: str) -> ConsentError:
        """Translate a driver error into a consentkit error (raise it ``from`` the original)."""
        if _is_busy(error):
            return ConflictError(
                f"could not {doing}: the database {self.path!r} stayed locked by another writer "
                f"for more than {self.busy_timeout:g} s; retry, or raise busy_timeout"
            )
        if _is_unique_violation(error):
            return ConflictError(f"could not {doing}: the record already exists ({error})")
        if isinstance(error, sqlite3.ProgrammingError) and self._closed:
            return StorageError(f"the SQLiteStore of {self.path!r} is closed; open a new one")
        return StorageError(f"could not {doing} in {self.path!r}: {error}")

    def _errors(self, doing: str) -> _Errors:
        """The error translation of a block of driver calls (one object per *doing*, reused:
        a ``with`` of it costs less than building one per call)."""
        scope = self._error_scopes.get(doing)
        if scope is None:
            scope = self._error_scopes[doing] = _Errors(self, doing)
        return scope

    def _decoder(self) -> RowDecoder:
        return RowDecoder(self._channels, cached_instants())

    def close(self) -> None:
        """Close every connection of every thread; the store cannot be used afterwards."""
        self._forget_parent()  # in a forked child: the parent's lock and connections are not ours
        with self._lock:
            self._closed = True
            connections = list(self._connections)
            self._connections = weakref.WeakSet()
        for conn in connections:
            _rollback_quietly(conn)
            conn.close()
        self._local.conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the Store protocol

    def transaction(self, account: str) -> AbstractContextManager[_SQLiteTransaction]:
        """Open a write transaction (``BEGIN IMMEDIATE``): it waits up to ``busy_timeout`` for
        other writers, commits when the block ends normally and rolls back when it raises.

        Raises:
            ConflictError: another writer kept the database locked longer than ``busy_timeout``.
        """
        return _TransactionScope(self, account)

    def get_contact(self, account: str, contact_id: str) -> Contact | None:
        """One contact, or None."""
        with self._errors("read a contact"):
            row = (
                self._connection()
                .execute(
                    f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE account = ? AND id = ?",
                    (account, contact_id),
                )
                .fetchone()
            )
        return None if row is None else self._decoder().contact(account, row)

    def list_contacts(self, account: str, *, after: str | None, limit: int) -> list[Contact]:
        """Contacts ordered by id, starting after the id *after*."""
        with self._errors("list contacts"):
            rows = (
                self._connection()
                .execute(
                    f"SELECT {_CONTACT_COLUMNS} FROM contacts "
                    "WHERE account = ? AND id > ? ORDER BY id LIMIT ?",
                    (account, "" if after is None else after, limit),
                )
                .fetchall()
            )
        decoder = self._decoder()
        return [decoder.contact(account, row) for row in rows]

    def get_subscription(
        self, account: str, contact_id: str, channel: Channel
    ) -> Subscription | None:
        """The subscription of one pair, or None when it was never subscribed."""
        with self._errors("read a subscription"):
            row = (
                self._connection()
                .execute(_GET_SUBSCRIPTION, (account, contact_id, channel.key))
                .fetchone()
            )
        if row is None:
            return None
        return RowDecoder(self._channels, instant).subscription(account, row)

    def get_state(self, account: str, contact_id: str, channel: Channel) -> SubscriptionState:
        """The state of one pair; ``NEVER_SUBSCRIBED`` when it has no row."""
        # can_send's read: the error translation of _errors() as a plain try (it costs nothing
        # until it catches; the same errors are raised).
        try:
            cursor = self._connection().execute(_GET_STATE, (account, contact_id, channel.key))
            row = cursor.fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, "read a subscription state") from exc
        return _NEVER if row is None else _STATES[row[0]]

    def pending_of(self, account: str, contact_id: str) -> list[PendingOptIn]:
        """Every pending opt-in of the contact, oldest first."""
        with self._errors("list pending opt-ins"):
            rows = (
                self._connection()
                .execute(
                    f"SELECT {_pending.PENDING_COLUMNS} FROM pending_opt_ins "
                    "WHERE account = ? AND contact_id = ? ORDER BY requested_at, id",
                    (account, contact_id),
                )
                .fetchall()
            )
        decoder = self._decoder()
        return [_pending.pending_of(account, row, decoder, instant) for row in rows]

    def records_of_addresses(
        self, account: str, address_keys: Sequence[str], addresses: Sequence[str]
    ) -> AddressRecords:
        """Everything kept about some addresses besides contacts and consent (one read
        transaction, so the four lists are of one moment)."""
        keys = _ids_json(dict.fromkeys(address_keys))
        senders = _ids_json(dict.fromkeys(addresses))
        decoder = self._decoder()
        conn = self._connection()
        with self._errors("read the records of addresses"):
            conn.execute("BEGIN")
            try:
                inbound = conn.execute(_INBOUND_OF, (account, keys)).fetchall()
                review = conn.execute(_REVIEW_OF, (account, senders)).fetchall()
                suppressions = conn.execute(_SUPPRESSIONS_OF, (account, keys)).fetchall()
                sent = conn.execute(_SENT_TO, (account, keys)).fetchall()
            finally:
                conn.execute("COMMIT")
        return address_records(account, decoder, instant, (inbound, review, suppressions, sent))

    def purge_expired(self, account: str, kind: PurgeKind, before: datetime, limit: int) -> int:
        """Delete at most *limit* expired records of *kind* (one transaction, one statement:
        the oldest first, by an index on the date)."""
        with self.transaction(account) as tx, self._errors("purge expired records"):
            cur = tx._conn.execute(_PURGE[kind], (account, micros(before), limit))
            return cur.rowcount

    def put_sent(self, account: str, records: Sequence[SentRecord]) -> None:
        """Keep each record as the last sent to its address on its channel from its sender
        (one transaction; a record never replaces one sent later)."""
        rows = [
            (account, r.channel.key, r.address_key, r.sender, r.topic, micros(r.sent_at))
            for r in records
        ]
        if not rows:
            return
        with self.transaction(account) as tx, self._errors("record sent messages"):
            tx._conn.executemany(_PUT_SENT, rows)

    def sent_to(
        self, account: str, address_key: str, channels: Sequence[Channel]
    ) -> list[SentRecord]:
        """The records kept for *address_key* on *channels* (one per channel and sender)."""
        params = (account, address_key, _ids_json(c.key for c in channels))
        with self._errors("read the messages sent to an address"):
            rows = self._connection().execute(_SENT_TO_ADDRESS, params).fetchall()
        decoder = self._decoder()
        return [
            SentRecord(decoder.channel(row[0]), address_key, row[1], row[2], instant(row[3]))
            for row in rows
        ]

    def states_of(
        self, account: str, contact_id: str, channels: Sequence[Channel]
    ) -> list[SubscriptionState]:
        """The states of one contact's pairs on *channels* (one range of its rows)."""
        if len(channels) == 2:  # a topic can_send's two layers
            first, second = channels
            try:  # as get_state: _errors() as a plain try
                one, two = self._connection().execute(
                    _STATES_OF_TWO, (account, contact_id, first.key, second.key)
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc, "read subscription states") from exc
            return [STATE_OR_NEVER[one], STATE_OR_NEVER[two]]
        keys = [ch.key for ch in channels]
        sql = (
            "SELECT channel, state FROM subscriptions WHERE account = ? AND contact_id = ? "
            f"AND channel IN {_in_channels(len(keys))}"
        )
        with self._errors("read subscription states"):
            rows = self._connection().execute(sql, (account, contact_id, *keys)).fetchall()
        found = {key: _STATES[state] for key, state in rows}
        return [found.get(key, _NEVER) for key in keys]

    def subscribed_in_layers(
        self,
        account: str,
        topic_channel: Channel,
        contact_ids: Iterable[str],
        *,
        opt_out_default: bool,
    ) -> set[str]:
        """The ids among *contact_ids* sendable on a topic channel by both layers, streamed in
        chunks, each matched with one query joining the channel's rows and the topic's."""
        if isinstance(contact_ids, str):
            contact_ids = [contact_ids]
        topic_rows = (
            "LEFT JOIN subscriptions AS t ON t.account = c.account "
            "AND t.contact_id = c.contact_id AND t.channel = ?3 "
            "WHERE t.state IS NOT 'unsubscribed'"
            if opt_out_default
            else "JOIN subscriptions AS t ON t.account = c.account "
            "AND t.contact_id = c.contact_id AND t.channel = ?3 WHERE t.state = 'subscribed'"
        )
        sql = (
            f"SELECT c.contact_id FROM subscriptions AS c {topic_rows} AND c.account = ?1 "
            "AND c.channel = ?2 AND c.state = 'subscribed' "
            "AND c.contact_id IN (SELECT value FROM json_each(?4))"
        )
        conn = self._connection()
        result: set[str] = set()
        iterator = iter(contact_ids)
        base, topic = topic_channel.base.key, topic_channel.key
        with self._errors("filter the audience"):
            while chunk := list(itertools.islice(iterator, _IDS_PER_QUERY)):
                result.update(
                    row[0] for row in conn.execute(sql, (account, base, topic, _ids_json(chunk)))
                )
        return result

    def erasures(self, account: str) -> list[ErasureRecord]:
        """The account's erasure records, oldest first."""
        with self._errors("read erasures"):
            return _sqlite_erasure.erasures(self._connection(), account)

    def subscriptions_of(self, account: str, contact_id: str) -> list[Subscription]:
        """Every recorded subscription of one contact, ordered by channel key."""
        with self._errors("read subscriptions"):
            rows = (
                self._connection()
                .execute(
                    f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
                    "WHERE account = ? AND contact_id = ? ORDER BY channel",
                    (account, contact_id),
                )
                .fetchall()
            )
        decoder = self._decoder()
        return [decoder.subscription(account, row) for row in rows]

    def subscribed_among(
        self, account: str, channel: Channel, contact_ids: Iterable[str]
    ) -> set[str]:
        """The ids among *contact_ids* subscribed on *channel*.

        The ids are streamed in chunks, each bound as one JSON array and matched in one indexed
        query, so memory holds one chunk besides the result.
        """
        if isinstance(contact_ids, str):
            contact_ids = [contact_ids]
        conn = self._connection()
        sql = (
            "SELECT contact_id FROM subscriptions WHERE account = ? AND channel = ? "
            "AND state = 'subscribed' AND contact_id IN (SELECT value FROM json_each(?))"
        )
        result: set[str] = set()
        iterator = iter(contact_ids)
        with self._errors("filter the audience"):
            while chunk := list(itertools.islice(iterator, _IDS_PER_QUERY)):
                result.update(
                    row[0] for row in conn.execute(sql, (account, channel.key, _ids_json(chunk)))
                )
        return result

    def list_subscriptions(
        self, account: str, where: SubscriptionFilter, *, after: str | None, limit: int
    ) -> list[Subscription]:
        """Subscriptions matching *where*, ordered by contact id, starting after *after*."""
        sql = [
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
            "WHERE account = ? AND channel = ? AND state = ? AND contact_id > ?"
        ]
        params: list[object] = [
            account,
            where.channel.key,
            where.state.value,
            "" if after is None else after,
        ]
        if where.source is not None:
            sql.append("AND source = ?")
            params.append(where.source.value)
        if where.reason is not None:
            sql.append("AND reason = ?")
            params.append(where.reason)
        sql.append("ORDER BY contact_id LIMIT ?")
        params.append(limit)
        with self._errors("list subscriptions"):
            rows = self._connection().execute(" ".join(sql), params).fetchall()
        decoder = self._decoder()
        return [decoder.subscription(account, row) for row in rows]

    def events(
        self,
        account: str,
        *,
        contact_id: str | None = None,
        channel: Channel | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Iterator[ConsentEvent]:
        """Events in append order, optionally of one contact or channel, ``sequence > after``.

        They are read a page at a time by sequence, so iterating over millions of events holds one
        page in memory; the first page is read before this returns.
        """
        sql = [f"SELECT {_EVENT_COLUMNS} FROM events WHERE account = ? AND sequence > ?"]
        params: list[object] = [account]
        if contact_id is not None:
            sql.append("AND contact_id = ?")
            params.append(contact_id)
        if channel is not None:
            sql.append("AND channel = ?")
            params.append(channel.key)
        sql.append("ORDER BY sequence LIMIT ?")
        query = " ".join(sql)
        position = 0 if after is None else after
        remaining = limit
        first = self._event_page(account, query, params, position, remaining)
        return self._more_events(account, query, params, first, remaining)

    def _event_page(
        self,
        account: str,
        query: str,
        params: list[object],
        position: int,
        remaining: int | None,
    ) -> list[ConsentEvent]:
        size = _EVENTS_PAGE if remaining is None else min(remaining, _EVENTS_PAGE)
        if size <= 0:
            return []
        bound = [params[0], position, *params[1:], size]
        with self._errors("read events"):
            rows = self._connection().execute(query, bound).fetchall()
        decoder = self._decoder()
        return [decoder.event(account, row) for row in rows]

    def _more_events(
        self,
        account: str,
        query: str,
        params: list[object],
        page: list[ConsentEvent],
        remaining: int | None,
    ) -> Iterator[ConsentEvent]:
        while page:
            yield from page
            if remaining is not None:
                remaining -= len(page)
            if len(page) < _EVENTS_PAGE or remaining == 0:
                return
            page = self._event_page(account, query, params, page[-1].sequence, remaining)

    def totals_at(
        self, account: str, instants: Sequence[datetime]
    ) -> list[dict[tuple[Channel, SubscriptionState], int]]:
        """For each instant, the number of pairs per (channel, state) given every event that
        occurred before it: the roll-up of the whole hours before it plus the events of its
        partial hour (see :mod:`consentkit.storage._trend_counts`)."""
        with self._errors("read subscriber totals"):
            return _trend_counts.totals_at(
                instants, self._trend_reads(account), self._decoder().channel
            )

    def transition_counts(
        self, account: str, boundaries: Sequence[datetime]
    ) -> list[dict[tuple[Channel, Transition], int]]:
        """For each interval ``[boundaries[i], boundaries[i+1])`` the number of events per
        (channel, transition) in it: whole hours from the roll-up, the partial hours at both ends
        counted exactly from the events."""
        with self._errors("count transitions"):
            return _trend_counts.transition_counts(
                boundaries, self._trend_reads(account), self._decoder().channel
            )

    def _trend_reads(self, account: str) -> _trend_counts.Read:
        """The two reads of the trend counting: one indexed range query per range."""
        conn = self._connection()

        def read(
            hours: list[_trend_counts.HourRange], times: list[_trend_counts.TimeRange]
        ) -> tuple[list[_trend_counts.CountRow], list[_trend_counts.CountRow]]:
            rollups = [
                (n, *row)
                for first, last, n in hours
                for row in conn.execute(_HOURS_BETWEEN, (account, first, last))
            ]
            events = [
                (n, *row)
                for low, high, n in times
                for row in conn.execute(_EVENTS_BETWEEN, (account, micros(low), micros(high)))
            ]
            return rollups, events

        return read

    def list_review_items(
        self,
        account: str,
        *,
        include_decided: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[ReviewItem]:
        """Review items, oldest first: ordered by ``(received_at, id)``, starting after the
        position *after*; only open ones unless *include_decided*.  One indexed range read."""
        params: list[object] = [account]
        if after is not None:
            params += [micros(after[0]), after[1]]
        params.append(limit)
        sql = _LIST_REVIEW_ITEMS[(bool(include_decided), after is not None)]
        with self._errors("list review items"):
            rows = self._connection().execute(sql, params).fetchall()
        decoder = self._decoder()
        return [decoder.review_item(account, row) for row in rows]
