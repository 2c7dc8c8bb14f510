"""The PostgreSQL store, on psycopg 3 (install the ``consentkit[postgres]`` extra).

This is the only module of consentkit that imports psycopg; import it explicitly::

    from consentkit.storage.postgres import PostgresStore

Design notes (the *why*; ``docs/postgres.md`` is the user guide):

* **Schema.**  Every object lives in one schema (``consentkit`` by default), created and migrated
  by the store under a transaction-level advisory lock, so any number of processes may start at
  once.  Applied migrations are recorded in ``<schema>.schema_migrations``.
* **Locking.**  Write transactions run at READ COMMITTED and rely on row locks.
  :meth:`lock_subscriptions` locks every requested pair with one ``INSERT ... ON CONFLICT DO
  UPDATE ... WHERE false`` in (contact id, channel) order: an existing row is locked without
  being changed, an absent pair gets a placeholder row (state ``never_subscribed``, version 0)
  that this transaction holds, so absent pairs are locked too and two transactions never decide
  from the same old state.  One ordered statement per chunk means single-chunk writers cannot
  deadlock; bulk writes, whose chunks are locked by separate statements, take turns per account
  on an advisory lock.  Every read treats placeholder rows as absent.  Key lookups of many ids go
  through ``LATERAL`` subqueries so they stay index probes whatever the statistics say.
* **Set-based changes.**  Transactions are set-based
  :class:`~consentkit.storage.base.StagingTransaction` s: a chunk's ids go into a temporary
  table (one ``INSERT ... SELECT`` of one packed parameter); :meth:`staged_situations` locks
  every staged pair with the ordered statement of :meth:`lock_subscriptions` (placeholders for
  absent pairs; those it creates go straight into a second temporary table, of the chunk's
  pairs), and a second statement copies the other locked pairs there with their row ids and
  returns the grouped situations; the pairs of chosen situations are then listed or changed from
  that table (changes by row id, events staged for COMMIT as any write's), with no Python object
  per pair.  Once a chunk of a call has written absent pairs, the next chunk's absent pairs are
  not inserted as placeholders but as the rows that change writes (a *guess*: same lock, no
  second write); apply_staged confirms the guessed rows it writes that way without touching
  them, and any other guessed row is turned back into a placeholder before anything else of
  the transaction reads or writes subscriptions (at the latest before COMMIT), so what commits,
  and what any statement of the transaction reads, is what the placeholder scheme gives.  (The
  placeholder itself stays: a transaction that read a chunk holds its absent pairs, and a second
  writer waits for it, then sees its result.)  Both tables are created per transaction if
  missing and emptied at COMMIT, so nothing in them crosses transactions (behind PgBouncer in
  transaction mode the next one may run on another server connection).  A chunk of a few pairs
  (a call on one contact) is changed by the per-pair statements instead, which cost less than
  the tables.
* **Addresses.**  Which contacts and suppressions an address has is not a row one could lock, so
  :meth:`lock_addresses` takes a transaction-level advisory lock per address key (scoped to the
  schema and the account, in lock-id order, in one statement); at READ COMMITTED every later
  statement of the transaction sees what the previous holder committed.  The service takes them
  after the contact rows it edits (which :meth:`get_contacts` locks, so the old addresses it
  reads stay current) and before any subscription row, the same order in every transaction, so
  they do not join a cycle.  A transaction locking more than a few hundred keys (an import)
  holds the account's address lock exclusively instead of one lock per key, which would fill
  the server's shared lock table (inbound messages of the account then wait for it).
* **Trends.**  :meth:`totals_at` and :meth:`transition_counts` are counted in Python by
  :mod:`consentkit.storage._trend_counts`, shared with SQLite (which keeps the same roll-up table),
  over two reads that count each range (of hours in the roll-ups, of a partial hour in the
  events) with a ``LATERAL`` aggregate whose bounds come from the outer row: one index range
  scan per interval whatever the statistics say, so the plans stay right after a large
  backdated import, before ANALYZE catches up (see _Queries).
* **Review queue.**  Items are rows keyed by (account, id); :meth:`get_review_item` locks its
  row (``FOR UPDATE``) and a decision updates only an open item, so two reviewers of one item
  take turns and the second finds it decided.  Open items are listed from a partial index in
  (received_at, id) order.
* **Nesting.**  A transaction opened in a thread that already has one open on the store is
  refused: on another pooled connection it could wait forever for the outer one's locks.
* **Event order.**  Events get their ``sequence`` when the transaction commits, under the row
  lock of the account's counter row, so sequences are dense per account and increase in commit
  order: a reader resuming an audit log "after N" never misses an event that commits later with
  a smaller sequence.  Until then the pairs of each write wait in a session temporary table;
  the roll-ups are updated at the same moment, from counts the transaction kept as it wrote (per
  pair for the per-pair writes, per situation for the set-based ones).
* **Errors.**  Driver errors become :class:`~consentkit.errors.ConflictError` (unique
  violations, deadlocks, serialization failures, lock waits past ``lock_timeout``) or
  :class:`~consentkit.errors.StorageError` (everything else), in :func:`_translate`; a wait for a
  pooled connection that timed out is a ConflictError while the pool's connections are all in
  use (a wait that timed out is retryable, as SQLite's busy timeout is), a StorageError when the
  pool cannot connect at all (:func:`_pool_timeout`).  Reads and the store's own migration
  transaction are retried up to ``max_retries`` times on deadlocks, serialization failures
  (also "conflict with recovery" on a replica) and lost connections; a write transaction
  belongs to the caller and cannot be replayed by the store, so a deadlock there is raised as a
  ConflictError asking to retry the call (a dead connection found at BEGIN is still replaced).
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

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
from consentkit.storage import _pending, _postgres_erasure, _trend_counts
from consentkit.storage._batch import check_batch, opt_out_record, replaces
from consentkit.storage._codec import KINDS, SOURCES, STATE_OR_NEVER, STATES, evidence_document
from consentkit.storage._postgres_session import Cursor, Session
from consentkit.storage._rows import (
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
from consentkit.storage._staging import Pair, apply_pairs, pairs_in, situations_of
from consentkit.storage._time import hour_bucket, utc
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

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

SCHEMA_VERSION = 8
"""The schema version this code reads and writes."""

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Two-key advisory locks: the first key is ours ("ck"), the second identifies the schema.
_LOCK_NAMESPACE = 0x636B
_BULK_LOCK_NAMESPACE = 0x636C
# Address locks (see _PostgresTransaction.lock_addresses): one per address key, under the
# account's address lock, which transactions locking a few keys hold shared and one locking more
# than _ADDRESS_LOCKS_MAX keys holds exclusively instead (advisory locks take slots of the
# server's shared lock table, which thousands per transaction would exhaust).
_ADDRESS_LOCK_NAMESPACE = 0x636D
_ADDRESSES_LOCK_NAMESPACE = 0x636E
_ADDRESS_LOCKS_MAX = 256
# A transaction whose first row-locking call covers this many rows is a bulk write (see
# _PostgresTransaction._enter_bulk).
_BULK_ROWS = 200
# A staged chunk of fewer pairs is locked and written by the per-pair statements (see
# _PostgresTransaction.staged_situations): for one contact the temporary tables of the
# set-based statements cost more than the pairs (a one-pair unsubscribe took 4.2 ms against
# 2.7 ms).
_SMALL_STAGE = 200
_READ_CHUNK = 20_000
# At most this many events of a transaction's small writes are held in memory rather than staged
# in the temporary table of pending events (see _PostgresTransaction._held).
_HELD_MAX = 256
# A write of pairs this transaction locked found them changed: nothing of it may commit.
_LOCKED_CHANGED = "a locked subscription changed during the transaction; retry the call"
_PREPARE_MAX_ROWS = 64
# Ids are printable (model.validate_id), so a control or private-use character never occurs.
_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c", "\ue000", "\ue001")
_EVENT_PAGE = 1000
_STATES = STATES
# The pending opt-ins' columns, the evidence read back as JSON text (as the decoder takes it).
_PENDING_SELECT = _pending.PENDING_COLUMNS.replace("evidence", "evidence::text")
_PENDING = "pg_temp.consentkit_pending_changes"
_STAGED = "pg_temp.consentkit_staged"
# Renamed when its columns change: a pooled server session (PgBouncer) may hold the old one.
_STAGED_PAIRS = "pg_temp.consentkit_staged_pairs_2"
_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
# The select lists of the shared row decoder (consentkit.storage._rows), in its order; JSON and
# array columns come as JSON text, empty role lists as NULL, like SQLite's columns.
_CONTACT_COLUMNS = "contact_id, phone, email, handles::text"
_SUBSCRIPTION_COLUMNS = ", ".join(SUBSCRIPTION_COLUMNS)
_EVENT_COLUMNS = (
    ", ".join(EVENT_COLUMNS)
    .replace("actor_roles", "nullif(array_to_json(actor_roles)::text, '[]')")
    .replace("evidence", "evidence::text")
)
_REVIEW_COLUMNS = ", ".join(REVIEW_COLUMNS)
_REVIEW_SELECT = _REVIEW_COLUMNS.replace("contact_ids", "array_to_json(contact_ids)::text")
_SUPPRESSION_COLUMNS = ", ".join(SUPPRESSION_COLUMNS)
_NESTED_TRANSACTION = (
    "a write transaction is already open on this store in this thread: a consentkit call was made "
    "from inside another one (e.g. from the iterable of ids it is consuming); make the calls one "
    "after the other"
)

# Migrations are append-only: never edit a released one, add the next version instead.
# "__S__" stands for the quoted schema name.
_MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "contacts, subscriptions, events, hourly roll-ups, inbound results, suppressions",
        (
            # Thousands of ids travel as one text parameter, the separator first: dumping one
            # string costs a third of dumping a text[] of the same ids (see _pack).
            """CREATE FUNCTION __S__.unpack(packed text) RETURNS text[]
                LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
                AS $$ SELECT (string_to_array(packed, left(packed, 1)))[2:] $$""",
            """CREATE TABLE __S__.accounts (
                account text COLLATE "C" PRIMARY KEY,
                last_sequence bigint NOT NULL
            )""",
            """CREATE TABLE __S__.contacts (
                account text COLLATE "C" NOT NULL,
                contact_id text COLLATE "C" NOT NULL,
                phone text,
                email text,
                handles jsonb NOT NULL DEFAULT '[]',
                PRIMARY KEY (account, contact_id)
            )""",
            """CREATE TABLE __S__.contact_addresses (
                account text COLLATE "C" NOT NULL,
                address_key text COLLATE "C" NOT NULL,
                contact_id text COLLATE "C" NOT NULL,
                PRIMARY KEY (account, address_key, contact_id)
            )""",
            """CREATE INDEX contact_addresses_by_contact
                ON __S__.contact_addresses (account, contact_id)""",
            """CREATE TABLE __S__.subscriptions (
                account text COLLATE "C" NOT NULL,
                contact_id text COLLATE "C" NOT NULL,
                channel text COLLATE "C" NOT NULL,
                state text NOT NULL
                    CHECK (state IN ('subscribed', 'unsubscribed', 'never_subscribed')),
                version bigint NOT NULL,
                updated_at timestamptz,
                changed_by text,
                source text,
                reason text,
                PRIMARY KEY (account, contact_id, channel)
            )""",
            # Partial, so that no lookup by primary key can pick them (a plan that used an index
            # led by (account, channel) for one pair would scan the whole channel) and so that
            # placeholder rows are in neither.
            """CREATE INDEX subscribed_by_channel
                ON __S__.subscriptions (account, channel, contact_id)
                WHERE state = 'subscribed'""",
            """CREATE INDEX unsubscribed_by_channel
                ON __S__.subscriptions (account, channel, contact_id)
                WHERE state = 'unsubscribed'""",
            """CREATE TABLE __S__.events (
                account text COLLATE "C" NOT NULL,
                sequence bigint NOT NULL,
                contact_id text COLLATE "C" NOT NULL,
                channel text COLLATE "C" NOT NULL,
                previous_state text NOT NULL,
                new_state text NOT NULL,
                actor_kind text NOT NULL,
                actor_id text NOT NULL,
                actor_roles text[] NOT NULL,
                source text NOT NULL,
                occurred_at timestamptz NOT NULL,
                recorded_at timestamptz NOT NULL,
                justification_reason text,
                justification_note text,
                evidence jsonb,
                reason text,
                inbound_message_id text,
                batch_id text,
                PRIMARY KEY (account, sequence)
            )""",
            "CREATE INDEX events_by_contact ON __S__.events (account, contact_id, sequence)",
            "CREATE INDEX events_by_time ON __S__.events (account, occurred_at)",
            """CREATE TABLE __S__.hourly_changes (
                account text COLLATE "C" NOT NULL,
                hour bigint NOT NULL,
                channel text COLLATE "C" NOT NULL,
                previous_state text NOT NULL,
                new_state text NOT NULL,
                events bigint NOT NULL,
                PRIMARY KEY (account, hour, channel, previous_state, new_state)
            )""",
            """CREATE TABLE __S__.inbound_messages (
                account text COLLATE "C" NOT NULL,
                message_id text COLLATE "C" NOT NULL,
                result text NOT NULL,
                recorded_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (account, message_id)
            )""",
            """CREATE TABLE __S__.suppressions (
                account text COLLATE "C" NOT NULL,
                address_key text COLLATE "C" NOT NULL,
                channel text COLLATE "C" NOT NULL,
                occurred_at timestamptz NOT NULL,
                source text NOT NULL,
                inbound_message_id text,
                position bigint GENERATED ALWAYS AS IDENTITY,
                PRIMARY KEY (account, address_key, channel)
            )""",
        ),
    ),
    (
        2,
        "who asked for each opt-out and when; suppressions that a START lifted",
        (
            # opted_out_by: the OptOutOrigin values, sorted and comma-joined (NULL when none); a
            # text column rather than text[] because lock_subscriptions reads it for every pair
            # of a bulk call and nearly all are NULL or one origin, which load as cheap strings.
            """ALTER TABLE __S__.subscriptions
                ADD COLUMN opted_out_by text,
                ADD COLUMN opted_out_via text,
                ADD COLUMN last_opt_out_at timestamptz""",
            "ALTER TABLE __S__.suppressions ADD COLUMN active boolean NOT NULL DEFAULT true",
            # Rows unsubscribed before this version: who asked is read off the last change
            # (every actor kind is also an origin), and it happened when that change did.
            """UPDATE __S__.subscriptions
                SET opted_out_by = CASE
                        WHEN source = 'suppression' THEN 'suppression'
                        WHEN changed_by IN ('contact', 'admin', 'member', 'system')
                            THEN changed_by
                    END,
                    last_opt_out_at = updated_at
                WHERE state = 'unsubscribed'""",
        ),
    ),
    (
        3,
        "inbound messages keyed by (account, channel, message id) with the text's digest; the "
        "review queue",
        (
            """ALTER TABLE __S__.inbound_messages
                ADD COLUMN channel text COLLATE "C",
                ADD COLUMN body_sha256 text""",
            # The channel of a message handled before this version is the one its stored result
            # names (InboundResult.to_json always writes it).  A row some other writer left
            # without one gets the empty key, which no channel has: it is kept but never matches,
            # so a redelivery of it is handled afresh instead of blocking the migration.
            """UPDATE __S__.inbound_messages
                SET channel = coalesce(result::jsonb ->> 'channel', '')""",
            """ALTER TABLE __S__.inbound_messages
                ALTER COLUMN channel SET NOT NULL,
                DROP CONSTRAINT inbound_messages_pkey,
                ADD PRIMARY KEY (account, channel, message_id)""",
            """CREATE TABLE __S__.review_items (
                account text COLLATE "C" NOT NULL,
                id text COLLATE "C" NOT NULL,
                kind text NOT NULL,
                channel text COLLATE "C" NOT NULL,
                message_id text NOT NULL,
                sender text NOT NULL,
                text text NOT NULL,
                contact_ids text[] NOT NULL,
                received_at timestamptz NOT NULL,
                honor_by timestamptz NOT NULL,
                decision text CHECK (decision IN ('opt_out', 'not_opt_out')),
                decided_by text,
                decided_at timestamptz,
                note text,
                PRIMARY KEY (account, id)
            )""",
            # The queue as reviewers page through it: open items, oldest first.  Partial, so it
            # holds only what is still to decide however many decided items pile up.
            """CREATE INDEX review_items_open
                ON __S__.review_items (account, received_at, id) WHERE decision IS NULL""",
            # The full history in the same order (include_decided).
            """CREATE INDEX review_items_by_time
                ON __S__.review_items (account, received_at, id)""",
        ),
    ),
    (
        4,
        "address departures: when an address stopped being a contact's",
        (
            """CREATE TABLE __S__.address_departures (
                account text COLLATE "C" NOT NULL,
                address_key text COLLATE "C" NOT NULL,
                left_at timestamptz NOT NULL,
                contact_id text COLLATE "C" NOT NULL,
                PRIMARY KEY (account, address_key, left_at, contact_id)
            )""",
        ),
    ),
    (
        5,
        "sent messages: the last one sent to each address, per channel and sender",
        (
            # record_sent: whose topic a STOP without one answers under the topic opt-out scope
            # ('' is an unknown sender, NULL a message of no topic).
            """CREATE TABLE __S__.sent_messages (
                account text COLLATE "C" NOT NULL,
                channel text COLLATE "C" NOT NULL,
                address_key text COLLATE "C" NOT NULL,
                sender text COLLATE "C" NOT NULL,
                topic text COLLATE "C",
                sent_at timestamptz NOT NULL,
                PRIMARY KEY (account, channel, address_key, sender)
            )""",
        ),
    ),
    (
        6,
        "what retention and exports read of inbound messages: received time, sender, contact",
        (
            """ALTER TABLE __S__.inbound_messages
                ADD COLUMN received_at timestamptz,
                ADD COLUMN sender_key text COLLATE "C",
                ADD COLUMN from_contact boolean""",
            # Rows recorded before: from their result document (a custom phone channel's
            # sender is keyed as a handle: its key was not recorded).  A result that is not
            # JSON, or a time that is not one, leaves NULLs (which no purge deletes) instead of
            # failing the migration: two functions that swallow the cast's error, dropped after.
            """CREATE FUNCTION __S__.consentkit_try_jsonb(value text) RETURNS jsonb
                LANGUAGE plpgsql IMMUTABLE AS $$
                BEGIN RETURN value::jsonb; EXCEPTION WHEN others THEN RETURN NULL; END $$""",
            """CREATE FUNCTION __S__.consentkit_try_timestamptz(value text) RETURNS timestamptz
                LANGUAGE plpgsql IMMUTABLE AS $$
                BEGIN RETURN value::timestamptz; EXCEPTION WHEN others THEN RETURN NULL; END $$""",
            """UPDATE __S__.inbound_messages AS m SET
                received_at = __S__.consentkit_try_timestamptz(p.j ->> 'received_at'),
                sender_key = CASE
                    WHEN m.channel IN ('sms', 'mms', 'rcs', 'whatsapp', 'voice')
                        THEN 'phone:' || (p.j ->> 'sender')
                    WHEN m.channel = 'email' THEN 'email:' || lower(p.j ->> 'sender')
                    ELSE 'handle:' || m.channel || ':' || (p.j ->> 'sender')
                END,
                from_contact = jsonb_array_length(p.j -> 'contact_ids') > 0
            FROM (
                SELECT account, channel, message_id,
                    __S__.consentkit_try_jsonb(result) AS j
                FROM __S__.inbound_messages
            ) AS p
            WHERE p.account = m.account AND p.channel = m.channel
                AND p.message_id = m.message_id
                AND jsonb_typeof(p.j) = 'object'
                AND jsonb_typeof(p.j -> 'received_at') = 'string'
                AND jsonb_typeof(p.j -> 'sender') = 'string'
                AND jsonb_typeof(p.j -> 'contact_ids') = 'array'""",
            "DROP FUNCTION __S__.consentkit_try_jsonb(text)",
            "DROP FUNCTION __S__.consentkit_try_timestamptz(text)",
            """CREATE INDEX inbound_messages_by_time
                ON __S__.inbound_messages (account, received_at)""",
            """CREATE INDEX inbound_messages_by_sender
                ON __S__.inbound_messages (account, sender_key)""",
            # The oldest first, for the bounded deletes of a purge.
            "CREATE INDEX sent_messages_by_time ON __S__.sent_messages (account, sent_at)",
            """CREATE INDEX address_departures_by_time
                ON __S__.address_departures (account, left_at)""",
        ),
    ),
    (7, "the audit records of erasures", _postgres_erasure.MIGRATION),
    _pending.postgres_migration(8),
)


def _pack(values: Iterable[str]) -> str:
    """*values* as one text parameter for the schema's ``unpack()``: a separator none of them
    contains, then the values joined by it."""
    listed = values if isinstance(values, list) else list(values)
    for separator in _SEPARATORS:
        packed = separator + separator.join(listed)
        if packed.count(separator) == len(listed):
            return packed
    raise ValidationError(
        "contact_ids", "contain every separator character consentkit can use; check the ids"
    )


def _prepare(rows: int) -> bool | None:
    """Whether psycopg may prepare a statement handling *rows* input rows.

    A prepared statement ends up with a generic plan, made without knowing the array sizes and
    kept until the next ANALYZE of its tables; one made while a table was still tiny can scan it
    whole for every pair.  Bulk statements are planned afresh (planning costs far less than
    running them); small ones use the connection's prepare threshold.
    """
    return False if rows > _PREPARE_MAX_ROWS else None


def _retryable(error: psycopg.Error, conn: Conn) -> bool:
    """Whether a statement that failed with *error* may simply run again (on a new connection
    when this one is lost): reads and the store's own transactions only."""
    return isinstance(error, _RETRYABLE) or conn.broken or conn.closed


def _pool_timeout(pool: ConnectionPool[Any], error: PoolTimeout) -> ConsentError:
    """The consentkit error for a wait for a pooled connection that timed out.

    A pool that holds connections, every one of them in use, is busy: like a lock wait that
    timed out (SQLite's busy timeout, PostgreSQL's ``lock_timeout``) that is a ConflictError, and
    retrying later may succeed.  A pool that holds none cannot reach the server: StorageError.
    """
    if pool.get_stats().get("pool_size", 0) > 0:
        return ConflictError(
            f"no PostgreSQL connection became available ({error}): every connection of the pool "
            "stayed in use by other calls; retry, or give the pool more connections"
        )
    return StorageError(
        f"no PostgreSQL connection became available ({error}): the pool could not connect to "
        "the server; check that it is running and reachable"
    )


# The driver errors with a message of their own, in the order they are matched: (the errors,
# the consentkit error, what to say after "<doing>: "; {error} is the driver's message).
_TRANSLATIONS: tuple[tuple[tuple[type[psycopg.Error], ...], type[ConsentError], str], ...] = (
    (
        (pg_errors.LockNotAvailable,),
        ConflictError,
        "a concurrent transaction held a lock this one waited for longer than the session's "
        "lock_timeout; nothing was changed: retry the call",
    ),
    (
        (pg_errors.UniqueViolation,),
        ConflictError,
        "a record with the same key was written concurrently; re-read and retry",
    ),
    (
        (pg_errors.DeadlockDetected,),
        ConflictError,
        "PostgreSQL detected a deadlock with a concurrent transaction and rolled this one back; "
        "nothing was changed: retry the call",
    ),
    (
        (pg_errors.SerializationFailure,),
        ConflictError,
        "a concurrent transaction changed the same rows (serialization failure); nothing was "
        "changed: retry the call",
    ),
    (
        (pg_errors.UndefinedTable, pg_errors.UndefinedColumn),
        StorageError,
        "the consentkit schema is missing or outdated ({error}); create the store with "
        "create_schema=True (or run it once as the schema owner) to migrate it",
    ),
    (
        (pg_errors.InsufficientPrivilege,),
        StorageError,
        "permission denied ({error}); see docs/postgres.md for the privileges the database role "
        "needs",
    ),
)


def _translate(error: psycopg.Error, doing: str) -> ConsentError:
    """The consentkit error for a driver error raised while *doing* something: the one place
    where this store translates driver errors (the pool's own timeout: :func:`_pool_timeout`)."""
    for kinds, translated, message in _TRANSLATIONS:
        if isinstance(error, kinds):
            return translated(f"{doing}: " + message.format(error=error))
    return StorageError(f"{doing}: PostgreSQL error: {error}")


def _backoff(attempt: int) -> None:
    # Jitter spreads retries of transactions that collided with each other.
    time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))


class _Queries:
    """Every SQL statement of the store, rendered once for one schema."""

    def __init__(self, schema: str) -> None:  # noqa: PLR0915 - one assignment per statement
        s = f'"{schema}"'
        # Key lookups of many ids join the ids to a LATERAL subquery with LIMIT (or OFFSET 0),
        # which PostgreSQL cannot flatten: one index probe per id, whatever the table's size and
        # statistics.  Left to itself the planner prefers a (parallel) sequential scan for a few
        # thousand ids, and inside one long import, where the table grows faster than ANALYZE
        # runs, that scan is repeated for every chunk and the import turns quadratic.
        self.missing_contacts = f"""
            SELECT u.contact_id FROM unnest({s}.unpack(%s)) WITH ORDINALITY AS u(contact_id, n)
            LEFT JOIN LATERAL (
                SELECT 1 AS found FROM {s}.contacts c
                WHERE c.account = %s AND c.contact_id = u.contact_id LIMIT 1
            ) AS c ON true
            WHERE c.found IS NULL
            ORDER BY u.n"""
        self.count_contacts = f"""
            SELECT count(*) FROM unnest({s}.unpack(%s)) AS u(contact_id)
            CROSS JOIN LATERAL (
                SELECT 1 FROM {s}.contacts c
                WHERE c.account = %s AND c.contact_id = u.contact_id LIMIT 1
            ) AS c"""
        contact_columns = _CONTACT_COLUMNS
        # Locks the contacts it returns, in id order (the ids come sorted): what a writer reads
        # of a contact (its old addresses) cannot change before it writes the contact.
        self.get_contacts = f"""
            SELECT c.contact_id, c.phone, c.email, c.handles::text
            FROM unnest({s}.unpack(%s)) WITH ORDINALITY AS u(contact_id, n)
            CROSS JOIN LATERAL (
                SELECT contact_id, phone, email, handles FROM {s}.contacts c
                WHERE c.account = %s AND c.contact_id = u.contact_id LIMIT 1
                FOR NO KEY UPDATE
            ) AS c
            ORDER BY u.n"""
        self.get_contact = f"""
            SELECT {contact_columns} FROM {s}.contacts WHERE account = %s AND contact_id = %s"""
        self.list_contacts = f"""
            SELECT {contact_columns} FROM {s}.contacts
            WHERE account = %s AND contact_id > %s ORDER BY contact_id LIMIT %s"""
        self.list_contacts_first = f"""
            SELECT {contact_columns} FROM {s}.contacts
            WHERE account = %s ORDER BY contact_id LIMIT %s"""
        # Every column as one packed text parameter (a third of the cost of dumping a text[]),
        # the empty string standing for no phone, no email or no handles (none of them is ever
        # empty), so a contact without handles costs no JSON.
        contact_rows = f"""
            INSERT INTO {s}.contacts AS c (account, contact_id, phone, email, handles)
            SELECT %s, u.contact_id, nullif(u.phone, ''), nullif(u.email, ''),
                coalesce(nullif(u.handles, '')::jsonb, '[]')
            FROM unnest({s}.unpack(%s), {s}.unpack(%s), {s}.unpack(%s), {s}.unpack(%s))
                AS u(contact_id, phone, email, handles)
            ORDER BY u.contact_id"""
        self.upsert_contacts = f"""{contact_rows}
            ON CONFLICT (account, contact_id) DO UPDATE
            SET phone = excluded.phone, email = excluded.email, handles = excluded.handles"""
        # The same rows for contacts the transaction found absent: inserted, how many counted;
        # one that another transaction registered since is left alone (put_contacts then
        # writes the chunk again with upsert_contacts).
        self.insert_new_contacts = f"""
            WITH inserted AS ({contact_rows}
                ON CONFLICT (account, contact_id) DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM inserted"""
        # The address entries of contacts: a phone's key built here from the packed phones of
        # upsert_contacts (the same text as Contact.address_keys), the other keys given with
        # their owners (NULL: none).
        self.insert_contact_addresses = f"""
            INSERT INTO {s}.contact_addresses (account, address_key, contact_id)
            SELECT %s, k.address_key, k.contact_id FROM (
                SELECT 'phone:' || u.phone AS address_key, u.contact_id
                FROM unnest({s}.unpack(%s), {s}.unpack(%s)) AS u(contact_id, phone)
                WHERE u.phone <> ''
                UNION ALL
                SELECT u.address_key, u.contact_id
                FROM unnest({s}.unpack(%s), {s}.unpack(%s)) AS u(address_key, contact_id)
            ) AS k
            ORDER BY k.address_key, k.contact_id
            ON CONFLICT DO NOTHING"""
        self.delete_addresses = f"""
            DELETE FROM {s}.contact_addresses WHERE ctid = ANY(ARRAY(
                SELECT a.ctid FROM unnest({s}.unpack(%s)) AS u(contact_id)
                CROSS JOIN LATERAL (
                    SELECT ctid FROM {s}.contact_addresses a
                    WHERE a.account = %s AND a.contact_id = u.contact_id OFFSET 0
                ) AS a
            ))"""
        self.find_by_address = f"""
            SELECT address_key, contact_id FROM {s}.contact_addresses
            WHERE account = %s AND address_key = ANY(%b) ORDER BY address_key, contact_id"""
        # One statement locks every requested pair in key order: rows that exist are locked by
        # ON CONFLICT DO UPDATE (whose WHERE false updates nothing but still locks), absent ones
        # get a placeholder row (never subscribed, version 0) that this transaction holds.  A
        # writer only ever waits for a key smaller than those it holds, so no cycle forms.
        self.lock_pairs = f"""
            INSERT INTO {s}.subscriptions AS s (account, contact_id, channel, state, version)
            SELECT DISTINCT %s, c.contact_id COLLATE "C", ch.channel COLLATE "C",
                'never_subscribed', 0
            FROM unnest({s}.unpack(%s)) AS c(contact_id)
            CROSS JOIN unnest({s}.unpack(%s)) AS ch(channel)
            ORDER BY 2, 3
            ON CONFLICT (account, contact_id, channel) DO UPDATE SET version = s.version
            WHERE false"""
        subscription_columns = _SUBSCRIPTION_COLUMNS
        # LIMIT 1 keeps the subquery from being flattened: one primary-key probe per pair,
        # whatever the planner thinks of the table's size.
        qualified = ", ".join(f"s.{c}" for c in subscription_columns.split(", "))
        # Placeholders come back too, with every row's physical id (the lock token, last): the
        # rows stay locked, so write_changes can address them directly instead of looking each
        # pair up again.
        self.read_pairs = f"""
            SELECT {qualified}, s.ctid::text
            FROM unnest({s}.unpack(%s)) AS c(contact_id)
            CROSS JOIN unnest({s}.unpack(%s)) AS ch(channel)
            CROSS JOIN LATERAL (
                SELECT ctid, {subscription_columns} FROM {s}.subscriptions s
                WHERE s.account = %s AND s.contact_id = c.contact_id AND s.channel = ch.channel
                LIMIT 1
            ) AS s"""
        self.create_pending = f"""
            CREATE TEMP TABLE IF NOT EXISTS {_PENDING.removeprefix("pg_temp.")} (
                batch_no integer NOT NULL,
                ord bigint NOT NULL,
                contact_id text NOT NULL,
                channel text NOT NULL,
                previous_state text NOT NULL
            ) ON COMMIT DELETE ROWS"""
        # The opt-out record follows the new state: %(opted_out_by)s and %(opted_out_via)s are
        # NULL when subscribing, %(opt_out_at)s is the batch's time when unsubscribing, else
        # NULL, which GREATEST ignores (the old last_opt_out_at stays).
        set_change = """state = %(state)s, version = s.version + 1, updated_at = %(at)s,
                    changed_by = %(by)s, source = %(source)s, reason = %(reason)s,
                    opted_out_by = %(opted_out_by)s, opted_out_via = %(opted_out_via)s,
                    last_opt_out_at = GREATEST(s.last_opt_out_at, %(opt_out_at)s::timestamptz)"""
        # One statement checks every expected version first and writes only if all match, so a
        # ConflictError leaves the transaction exactly as it was (like the memory store).
        self.write_changes = f"""
            WITH input AS MATERIALIZED (
                SELECT * FROM unnest({s}.unpack(%(ids)s), {s}.unpack(%(channels)s),
                                     {s}.unpack(%(previous)s), {s}.unpack(%(expected)s)::bigint[])
                    WITH ORDINALITY AS i(contact_id, channel, previous_state, expected, n)
            ),
            current AS MATERIALIZED (
                SELECT i.*, s.version, s.row_id FROM input i
                LEFT JOIN LATERAL (
                    SELECT version, ctid AS row_id FROM {s}.subscriptions s
                    WHERE s.account = %(account)s AND s.contact_id = i.contact_id
                        AND s.channel = i.channel
                    LIMIT 1
                ) AS s ON true
            ),
            mismatch AS MATERIALIZED (
                SELECT contact_id, channel, coalesce(version, 0) AS version, expected
                FROM current WHERE coalesce(version, 0) <> expected LIMIT 1
            ),
            updated AS (
                UPDATE {s}.subscriptions s
                SET {set_change}
                FROM current c
                WHERE NOT EXISTS (SELECT FROM mismatch) AND s.ctid = c.row_id
                RETURNING 1
            ),
            inserted AS (
                INSERT INTO {s}.subscriptions
                    (account, contact_id, channel, state, version, updated_at, changed_by,
                     source, reason, opted_out_by, opted_out_via, last_opt_out_at)
                SELECT DISTINCT ON (c.contact_id, c.channel) %(account)s, c.contact_id, c.channel,
                    %(state)s, 1, %(at)s, %(by)s, %(source)s, %(reason)s, %(opted_out_by)s,
                    %(opted_out_via)s, %(opt_out_at)s::timestamptz
                FROM current c
                WHERE NOT EXISTS (SELECT FROM mismatch) AND c.version IS NULL
                ORDER BY c.contact_id, c.channel
                ON CONFLICT DO NOTHING
                RETURNING 1
            ),
            staged AS (
                INSERT INTO {_PENDING} (batch_no, ord, contact_id, channel, previous_state)
                SELECT %(batch_no)s, %(ord)s + i.n, i.contact_id, i.channel, i.previous_state
                FROM input i WHERE NOT EXISTS (SELECT FROM mismatch)
            )
            SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM inserted),
                m.contact_id, m.channel, m.version, m.expected
            FROM (SELECT 1) AS one LEFT JOIN mismatch m ON true"""
        # The common case: every pair was locked by this transaction's last lock_subscriptions
        # at the expected version, so nobody can have changed it and no check is needed.
        locked_update = f"""
            WITH input AS MATERIALIZED (
                SELECT * FROM unnest({s}.unpack(%(row_ids)s), {s}.unpack(%(ids)s),
                                     {s}.unpack(%(channels)s), {s}.unpack(%(previous)s))
                    WITH ORDINALITY AS i(row_id, contact_id, channel, previous_state, n)
            ),
            updated AS (
                UPDATE {s}.subscriptions s
                SET {set_change}
                FROM input i
                WHERE s.ctid = i.row_id::tid
                RETURNING 1
            )"""
        self.write_locked = f"""{locked_update},
            staged AS (
                INSERT INTO {_PENDING} (batch_no, ord, contact_id, channel, previous_state)
                SELECT %(batch_no)s, %(ord)s + i.n, i.contact_id, i.channel, i.previous_state
                FROM input i
            )
            SELECT count(*) FROM updated"""
        # A small write's events wait in the transaction's memory instead (see
        # _PostgresTransaction._held): no temporary table to create and empty at COMMIT.
        self.write_locked_held = f"""{locked_update}
            SELECT count(*) FROM updated"""
        # Held events moved to the pending table, once a write needs it.
        self.spill_held = f"""
            INSERT INTO {_PENDING} (batch_no, ord, contact_id, channel, previous_state)
            SELECT * FROM unnest(%b::integer[], %b::bigint[], %b::text[], %b::text[], %b::text[])"""
        # Only unsubscribed rows: the origin joins the set (kept sorted and comma-joined) and
        # last_opt_out_at only moves forward.  Version, updated_at and the roll-ups stay.
        set_note = """opted_out_by = CASE WHEN %(origin)s::text IS NULL THEN s.opted_out_by ELSE (
                    SELECT string_agg(DISTINCT o.origin, ',' ORDER BY o.origin)
                    FROM unnest(string_to_array(s.opted_out_by, ',') || %(origin)s::text)
                        AS o(origin)
                ) END,
                last_opt_out_at = GREATEST(s.last_opt_out_at, %(at)s::timestamptz)"""
        self.note_opt_outs = f"""
            UPDATE {s}.subscriptions s
            SET {set_note}
            FROM (
                SELECT DISTINCT r.row_id
                FROM unnest({s}.unpack(%(ids)s), {s}.unpack(%(channels)s))
                    AS p(contact_id, channel)
                CROSS JOIN LATERAL (
                    SELECT ctid AS row_id FROM {s}.subscriptions s
                    WHERE s.account = %(account)s AND s.contact_id = p.contact_id
                        AND s.channel = p.channel AND s.state = 'unsubscribed'
                    LIMIT 1
                ) AS r
            ) AS t
            WHERE s.ctid = t.row_id"""
        # Set-based changes (StagingTransaction).  The staged chunk's ids and, once locked, its
        # pairs (with their row ids and situations) wait in two temporary tables, created per
        # transaction (IF NOT EXISTS is cheap) and emptied at COMMIT, so behind PgBouncer in
        # transaction mode nothing of them outlives the transaction that filled them.
        self.create_staged = f"""
            CREATE TEMP TABLE IF NOT EXISTS {_STAGED.removeprefix("pg_temp.")} (
                pos integer NOT NULL,
                contact_id text COLLATE "C" NOT NULL
            ) ON COMMIT DELETE ROWS"""
        self.create_staged_pairs = f"""
            CREATE TEMP TABLE IF NOT EXISTS {_STAGED_PAIRS.removeprefix("pg_temp.")} (
                pos integer NOT NULL,
                ch integer NOT NULL,
                contact_id text COLLATE "C" NOT NULL,
                channel text COLLATE "C" NOT NULL,
                row_id tid NOT NULL,
                state text NOT NULL,
                version bigint NOT NULL,
                updated_at timestamptz,
                changed_by text,
                source text,
                opted_out_by text,
                guessed boolean NOT NULL DEFAULT false
            ) ON COMMIT DELETE ROWS"""
        self.clear_staged = f"TRUNCATE {_STAGED}, {_STAGED_PAIRS}"
        self.clear_staged_pairs = f"TRUNCATE {_STAGED_PAIRS}"
        # One text parameter unpacked by the server: measured for 5,000 ids (filling the table
        # after a TRUNCATE) at 2.5 ms, against 3.1 ms for COPY of the same rows as one block of
        # text, 4.0 ms for COPY row by row and 5.5-9.5 ms for unnest() of a text[] parameter
        # (psycopg dumps the list in Python); and unlike COPY it can join a pipeline.
        self.stage = f"""
            INSERT INTO {_STAGED} (pos, contact_id)
            SELECT u.n, u.contact_id
            FROM unnest({s}.unpack(%s)) WITH ORDINALITY AS u(contact_id, n)"""
        # lock_pairs over the staged ids: every pair locked (absent ones as new rows) in
        # (contact id, channel) order by one statement.  The rows it created go straight into the
        # pairs table as never subscribed (this transaction holds them, so they are as inserted).
        # A new row is a placeholder, or on the channels %(g_channels)s the row the transaction's
        # last apply_staged wrote for an absent pair (columns g_*): a guess that apply_staged
        # confirms without writing the row again, or that is reverted to a placeholder (see
        # _PostgresTransaction._guess).
        self.lock_staged = f"""
            WITH locked AS (
                INSERT INTO {s}.subscriptions AS s (account, contact_id, channel, state, version,
                    updated_at, changed_by, source, reason, opted_out_by, opted_out_via,
                    last_opt_out_at)
                SELECT DISTINCT %(account)s, st.contact_id, ch.channel COLLATE "C",
                    coalesce(g.state, 'never_subscribed'), coalesce(g.version, 0), g.updated_at,
                    g.changed_by, g.source, g.reason, g.opted_out_by, g.opted_out_via,
                    g.last_opt_out_at
                FROM {_STAGED} st
                CROSS JOIN unnest({s}.unpack(%(channels)s)) AS ch(channel)
                LEFT JOIN (
                    SELECT %(g_state)s::text AS state, 1::bigint AS version,
                        %(g_at)s::timestamptz AS updated_at, %(g_by)s::text AS changed_by,
                        %(g_source)s::text AS source, %(g_reason)s::text AS reason,
                        %(g_opted_out_by)s::text AS opted_out_by,
                        %(g_opted_out_via)s::text AS opted_out_via,
                        %(g_opt_out_at)s::timestamptz AS last_opt_out_at
                ) AS g ON ch.channel = ANY(%(g_channels)s::text[])
                ORDER BY 2, 3
                ON CONFLICT (account, contact_id, channel) DO UPDATE SET version = s.version
                WHERE false
                RETURNING s.contact_id, s.channel, s.ctid, s.version > 0 AS guessed
            )
            INSERT INTO {_STAGED_PAIRS}
                (pos, ch, contact_id, channel, row_id, state, version, guessed)
            SELECT st.pos, ch.n, l.contact_id, l.channel, l.ctid, 'never_subscribed', 0, l.guessed
            FROM locked l
            JOIN {_STAGED} st ON st.contact_id = l.contact_id
            JOIN unnest({s}.unpack(%(channels)s)) WITH ORDINALITY AS ch(channel, n)
                ON ch.channel = l.channel"""
        # The other locked pairs, read by a later statement than the one that locked them (at
        # READ COMMITTED it sees what a transaction it waited for committed), each with its row
        # id (one primary-key probe per pair), join them in the pairs table; what comes back is
        # the situations of all of them, grouped, in the order they first occur.  A
        # placeholder's columns read as those of no record.
        self.read_staged = f"""
            WITH p AS (
                INSERT INTO {_STAGED_PAIRS} (pos, ch, contact_id, channel, row_id, state, version,
                    updated_at, changed_by, source, opted_out_by)
                SELECT st.pos, ch.n, st.contact_id, ch.channel, s.ctid, s.state, s.version,
                    s.updated_at, s.changed_by, s.source, s.opted_out_by
                FROM {_STAGED} st
                CROSS JOIN unnest({s}.unpack(%(channels)s)) WITH ORDINALITY AS ch(channel, n)
                CROSS JOIN LATERAL (
                    SELECT ctid, state, version,
                        CASE WHEN state <> 'never_subscribed' THEN updated_at END AS updated_at,
                        CASE WHEN state <> 'never_subscribed' THEN changed_by END AS changed_by,
                        CASE WHEN state <> 'never_subscribed' THEN source END AS source,
                        CASE WHEN state <> 'never_subscribed' THEN opted_out_by END
                            AS opted_out_by
                    FROM {s}.subscriptions s
                    WHERE s.account = %(account)s AND s.contact_id = st.contact_id
                        AND s.channel = ch.channel
                    LIMIT 1
                ) AS s
                WHERE NOT EXISTS (
                    SELECT FROM {_STAGED_PAIRS} q WHERE q.pos = st.pos AND q.ch = ch.n
                )
                RETURNING pos, ch, channel, state, updated_at, changed_by, source, opted_out_by
            ),
            every AS (
                SELECT pos, ch, channel, state, updated_at, changed_by, source, opted_out_by,
                    false AS guessed
                FROM p
                UNION ALL
                SELECT pos, ch, channel, state, updated_at, changed_by, source, opted_out_by,
                    guessed
                FROM {_STAGED_PAIRS}
            )
            SELECT channel, state, changed_by, source, opted_out_by, count(*), max(updated_at),
                count(*) FILTER (WHERE guessed)
            FROM every
            GROUP BY 1, 2, 3, 4, 5
            ORDER BY min(pos::bigint * %(width)s + ch)"""
        # The situations of the caller, as the column values read_staged returned for them
        # (null-safe: a never-subscribed pair's columns are NULL).
        situations = """
            SELECT * FROM unnest(%(k_channel)s::text[], %(k_state)s::text[], %(k_by)s::text[],
                %(k_source)s::text[], %(k_origins)s::text[], %(k_write)s::bool[])
                AS k(channel, state, changed_by, source, opted_out_by, write)"""
        in_situation = """k.channel = p.channel AND k.state = p.state
                    AND k.changed_by IS NOT DISTINCT FROM p.changed_by
                    AND k.source IS NOT DISTINCT FROM p.source
                    AND k.opted_out_by IS NOT DISTINCT FROM p.opted_out_by"""
        self.staged_pairs = f"""
            SELECT p.contact_id, p.channel, p.version, p.state, p.changed_by, p.source,
                p.opted_out_by
            FROM {_STAGED_PAIRS} p
            WHERE EXISTS (SELECT FROM ({situations}) AS k WHERE {in_situation})
                AND (%(after)s::timestamptz IS NULL OR p.updated_at > %(after)s::timestamptz)
            ORDER BY p.pos, p.ch
            LIMIT %(limit)s"""
        # Every pair of the situations to write or to note, from the pairs table: the notes and
        # the changes by row id (the rows are locked, so they are where read_staged found them),
        # and the changes' events staged in staging order, their previous state the pair's.  A
        # guessed row (see lock_staged) is called here only when the guess is right: it holds
        # the change already and is not written again.
        # Only unsubscribed pairs are noted, as the pairs table says (a condition on the
        # subscriptions' state would let the planner scan the whole partial index of
        # unsubscribed rows instead of fetching the rows by id: a bulk unsubscribe, which adds
        # to that index chunk after chunk, turned quadratic).
        self.apply_staged = f"""
            WITH k AS MATERIALIZED ({situations}),
            hit AS MATERIALIZED (
                SELECT p.pos, p.ch, p.contact_id, p.channel, p.row_id, p.state, p.guessed,
                    k.write
                FROM {_STAGED_PAIRS} p JOIN k ON {in_situation}
            ),
            noted AS (
                UPDATE {s}.subscriptions s
                SET {set_note}
                WHERE s.ctid = ANY(ARRAY(
                    SELECT row_id FROM hit WHERE NOT write AND state = 'unsubscribed'
                ))
            ),
            updated AS (
                UPDATE {s}.subscriptions s
                SET {set_change}
                WHERE s.ctid = ANY(ARRAY(SELECT row_id FROM hit WHERE write AND NOT guessed))
                RETURNING 1
            ),
            staged AS (
                INSERT INTO {_PENDING} (batch_no, ord, contact_id, channel, previous_state)
                SELECT %(batch_no)s, %(ord)s + row_number() OVER (ORDER BY h.pos, h.ch),
                    h.contact_id, h.channel, h.state
                FROM hit h WHERE h.write
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM updated)
                    + (SELECT count(*) FROM hit WHERE write AND guessed),
                (SELECT count(*) FROM staged)"""
        # Guessed rows back to placeholders (then read again: they moved).
        self.revert_guesses = f"""
            UPDATE {s}.subscriptions s
            SET state = 'never_subscribed', version = 0, updated_at = NULL, changed_by = NULL,
                source = NULL, reason = NULL, opted_out_by = NULL, opted_out_via = NULL,
                last_opt_out_at = NULL
            WHERE s.ctid = ANY(ARRAY(SELECT row_id FROM {_STAGED_PAIRS} WHERE guessed))"""
        # Address locks, smallest lock id first (the subquery is sorted before the aggregate
        # takes each lock: a subquery with ORDER BY is never flattened), so two transactions
        # never wait for each other's keys in a cycle.  Different keys may hash to one id; that
        # only makes them wait for each other.
        self.lock_addresses = f"""
            SELECT count(pg_advisory_xact_lock({_ADDRESS_LOCK_NAMESPACE}, k.lock_id))
            FROM (
                SELECT DISTINCT hashtext(%s || u.address_key) AS lock_id
                FROM unnest(%s::text[]) AS u(address_key)
                ORDER BY 1
            ) AS k"""
        self.share_addresses = (
            f"SELECT pg_advisory_xact_lock_shared({_ADDRESSES_LOCK_NAMESPACE}, hashtext(%s))"
        )
        self.own_addresses = (
            f"SELECT pg_advisory_xact_lock({_ADDRESSES_LOCK_NAMESPACE}, hashtext(%s))"
        )
        self.count_pairs = f"""
            SELECT count(*) FROM (
                SELECT DISTINCT * FROM unnest({s}.unpack(%s), {s}.unpack(%s))
            ) AS pairs"""
        # Taking the counter row's lock is the last thing a transaction does before COMMIT, and
        # the lock is held until then: sequences are handed out in commit order per account.
        self.reserve_sequences = f"""
            INSERT INTO {s}.accounts AS a (account, last_sequence) VALUES (%s, %s)
            ON CONFLICT (account)
            DO UPDATE SET last_sequence = a.last_sequence + excluded.last_sequence"""
        event_values = """
            %(account)s, a.last_sequence - %(total)s + p.ord, p.contact_id, p.channel,
            p.previous_state, %(new_state)s, %(actor_kind)s, %(actor_id)s, %(actor_roles)s,
            %(source)s, %(occurred_at)s, %(recorded_at)s, %(justification_reason)s,
            %(justification_note)s, %(evidence)s::jsonb, %(reason)s, %(inbound_message_id)s,
            %(batch_id)s"""
        insert_events = f"""
            INSERT INTO {s}.events (account, sequence, contact_id, channel, previous_state,
                new_state, actor_kind, actor_id, actor_roles, source, occurred_at, recorded_at,
                justification_reason, justification_note, evidence, reason, inbound_message_id,
                batch_id)
            SELECT {event_values}"""
        self.insert_events = f"""{insert_events}
            FROM {_PENDING} p JOIN {s}.accounts a ON a.account = %(account)s
            WHERE p.batch_no = %(batch_no)s"""
        self.insert_held_events = f"""{insert_events}
            FROM unnest(%(ords)s::bigint[], %(contact_ids)s::text[], %(channels)s::text[],
                        %(previous)s::text[]) AS p(ord, contact_id, channel, previous_state)
            JOIN {s}.accounts a ON a.account = %(account)s"""
        # The counts come from Python (see _PostgresTransaction._rollups), one row per key: a
        # GROUP BY over the pending table, which has no statistics, was planned as a sort that
        # spilled to disk (115 ms for 100,000 events).
        self.add_rollups = f"""
            INSERT INTO {s}.hourly_changes AS h
                (account, hour, channel, previous_state, new_state, events)
            SELECT %s, u.hour, u.channel, u.previous_state, u.new_state, u.events
            FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::bigint[])
                AS u(hour, channel, previous_state, new_state, events)
            ORDER BY 2, 3, 4, 5
            ON CONFLICT (account, hour, channel, previous_state, new_state)
            DO UPDATE SET events = h.events + excluded.events"""
        self.get_inbound = f"""
            SELECT body_sha256, result FROM {s}.inbound_messages
            WHERE account = %s AND channel = %s AND message_id = %s"""
        # DO NOTHING waits for a concurrent insert of the same key to commit or roll back, and
        # leaves this transaction usable (a failed statement would abort it).
        self.put_inbound = f"""
            INSERT INTO {s}.inbound_messages (account, channel, message_id, body_sha256, result,
                received_at, sender_key, from_contact)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT DO NOTHING"""
        # Retention: bounded deletes of the oldest expired rows of one kind (an inbound message
        # with an open review item stays).
        open_review = f"""NOT EXISTS (SELECT 1 FROM {s}.review_items AS r
            WHERE r.account = m.account AND r.channel = m.channel
                AND r.message_id = m.message_id AND r.decision IS NULL)"""
        inbound = f"""
            DELETE FROM {s}.inbound_messages WHERE (account, channel, message_id) IN (
                SELECT account, channel, message_id FROM {s}.inbound_messages AS m
                WHERE account = %(account)s AND received_at < %(before)s AND {open_review}
                    __FILTER__
                ORDER BY received_at LIMIT %(limit)s)"""
        self.purge = {
            PurgeKind.INBOUND_RESULTS: inbound.replace("__FILTER__", ""),
            PurgeKind.NON_CONTACT_INBOUND: inbound.replace("__FILTER__", "AND NOT from_contact"),
            PurgeKind.DECIDED_REVIEW_ITEMS: f"""
                DELETE FROM {s}.review_items WHERE (account, id) IN (
                    SELECT account, id FROM {s}.review_items
                    WHERE account = %(account)s AND received_at < %(before)s
                        AND decision IS NOT NULL
                    ORDER BY received_at LIMIT %(limit)s)""",
            PurgeKind.SENT_MESSAGES: f"""
                DELETE FROM {s}.sent_messages
                WHERE (account, channel, address_key, sender) IN (
                    SELECT account, channel, address_key, sender FROM {s}.sent_messages
                    WHERE account = %(account)s AND sent_at < %(before)s
                    ORDER BY sent_at LIMIT %(limit)s)""",
            PurgeKind.ADDRESS_DEPARTURES: f"""
                DELETE FROM {s}.address_departures
                WHERE (account, address_key, left_at, contact_id) IN (
                    SELECT account, address_key, left_at, contact_id
                    FROM {s}.address_departures
                    WHERE account = %(account)s AND left_at < %(before)s
                    ORDER BY left_at LIMIT %(limit)s)""",
        }
        self.put_review_item = f"""
            INSERT INTO {s}.review_items (account, {_REVIEW_COLUMNS})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT DO NOTHING"""
        self.get_review_item = f"""
            SELECT {_REVIEW_SELECT} FROM {s}.review_items WHERE account = %s AND id = %s
            FOR UPDATE"""
        # Only an open item is decided: a concurrent decision commits first and this one, having
        # waited for its row lock, finds the item decided and updates nothing.
        self.decide_review_item = f"""
            UPDATE {s}.review_items
            SET decision = %s, decided_by = %s, decided_at = %s, note = %s
            WHERE account = %s AND id = %s AND decision IS NULL"""
        # Keyset pages in (received_at, id) order, each an ordered range scan of an index: the
        # partial review_items_open for open items (its predicate is spelled out so that even a
        # generic plan can use it), review_items_by_time for the whole history.
        self.list_review_items: dict[tuple[bool, bool], str] = {}
        for include_decided, resuming in itertools.product((False, True), repeat=2):
            where = "account = %(account)s"
            if not include_decided:
                where += " AND decision IS NULL"
            if resuming:
                where += " AND (received_at, id) > (%(after_at)s, %(after_id)s)"
            self.list_review_items[(include_decided, resuming)] = f"""
                SELECT {_REVIEW_SELECT} FROM {s}.review_items WHERE {where}
                ORDER BY received_at, id LIMIT %(limit)s"""
        self.get_suppressions = f"""
            SELECT {_SUPPRESSION_COLUMNS} FROM {s}.suppressions
            WHERE account = %s AND address_key = ANY({s}.unpack(%s)) ORDER BY position"""
        # An export's reads of the records of some addresses (records_of_addresses).
        self.inbound_of = f"""
            SELECT channel, message_id, body_sha256, result, received_at, sender_key,
                from_contact
            FROM {s}.inbound_messages WHERE account = %s AND sender_key = ANY(%s)
            ORDER BY received_at, channel, message_id"""
        self.review_of = f"""
            SELECT {_REVIEW_SELECT} FROM {s}.review_items
            WHERE account = %s AND lower(sender) = ANY(%s) ORDER BY received_at, id"""
        self.suppressions_of = f"""
            SELECT {_SUPPRESSION_COLUMNS} FROM {s}.suppressions
            WHERE account = %s AND address_key = ANY(%s) ORDER BY position"""
        self.sent_to = f"""
            SELECT channel, address_key, sender, topic, sent_at FROM {s}.sent_messages
            WHERE account = %s AND address_key = ANY(%s) ORDER BY sent_at, channel, sender"""
        # The input has one row per (address key, channel) (a second would make ON CONFLICT
        # fail); a stored row is replaced only by a word that occurred later, or at the same instant
        # by an opt-out over a withdrawal (ties go to the opt-out).
        self.put_suppressions = f"""
            INSERT INTO {s}.suppressions AS x
                (account, address_key, channel, occurred_at, source, inbound_message_id, active)
            SELECT %s, u.address_key, u.channel, u.occurred_at, u.source, u.inbound_message_id,
                u.active
            FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::text[],
                        %b::boolean[])
                WITH ORDINALITY AS u(address_key, channel, occurred_at, source,
                                     inbound_message_id, active, n)
            ORDER BY u.n
            ON CONFLICT (account, address_key, channel) DO UPDATE
            SET occurred_at = excluded.occurred_at, source = excluded.source,
                inbound_message_id = excluded.inbound_message_id, active = excluded.active
            WHERE excluded.occurred_at > x.occurred_at
                OR (excluded.occurred_at = x.occurred_at AND excluded.active AND NOT x.active)"""
        self.record_departures = f"""
            INSERT INTO {s}.address_departures (account, address_key, left_at, contact_id)
            SELECT %s, u.address_key, %s, u.contact_id
            FROM unnest(%b::text[], %b::text[]) AS u(address_key, contact_id)
            ON CONFLICT DO NOTHING"""
        self.contacts_that_left = f"""
            SELECT DISTINCT contact_id FROM {s}.address_departures
            WHERE account = %s AND address_key = %s AND left_at > %s ORDER BY contact_id"""
        self.owners_of_address = f"""
            SELECT contact_id FROM {s}.contact_addresses
            WHERE account = %(account)s AND address_key = %(key)s
            UNION
            SELECT contact_id FROM {s}.address_departures
            WHERE account = %(account)s AND address_key = %(key)s AND left_at > %(since)s
            ORDER BY contact_id"""
        self.get_subscription = f"""
            SELECT {subscription_columns} FROM {s}.subscriptions
            WHERE account = %s AND contact_id = %s AND channel = %s
                AND state <> 'never_subscribed'"""
        self.get_state = f"""
            SELECT state FROM {s}.subscriptions
            WHERE account = %s AND contact_id = %s AND channel = %s"""
        self.subscriptions_of = f"""
            SELECT {subscription_columns} FROM {s}.subscriptions
            WHERE account = %s AND contact_id = %s AND state <> 'never_subscribed'
            ORDER BY channel"""
        # A semi-join rather than "= ANY": with a custom plan for a 20,000-element array the
        # planner picks a sequential scan of the whole channel, twice as slow at a million rows.
        # The chunk's smallest and largest id bound the pairs read: with them the planner reads
        # the index range between them when it is narrow (ids near each other, as an export's
        # in key order) and probes the index once per id when it is not.  Measured over
        # 1,000,000 ids in chunks of 20,000: in key order 0.56 s against 2.16 s for the
        # semi-join alone (and 3.8 s for "= ANY" of the array); shuffled, 3.1-3.2 s against
        # 2.9-3.4 s.
        self.subscribed_among = f"""
            SELECT coalesce(array_agg(u.contact_id), '{{}}')
            FROM unnest({s}.unpack(%s)) AS u(contact_id)
            WHERE EXISTS (
                SELECT 1 FROM {s}.subscriptions s
                WHERE s.account = %s AND s.channel = %s AND s.state = 'subscribed'
                    AND s.contact_id = u.contact_id AND s.contact_id BETWEEN %s AND %s
            )"""
        # Topic channels: one contact's two layers in one query.  (Two EXISTS semi-joins over one
        # unnest, for an audience by both layers, got a plan that scanned the table per id; a
        # LATERAL probe per id and layer was four times the channel's semi-join: the audience
        # runs the semi-join once per layer instead.)
        self.states_of = f"""
            SELECT channel, state FROM {s}.subscriptions
            WHERE account = %s AND contact_id = %s AND channel = ANY(%s)"""
        # The sent-message log: one row per (channel, address, sender), a later one replacing
        # an earlier one (the rows of one statement are distinct: the caller keeps the last).
        self.put_sent = f"""
            INSERT INTO {s}.sent_messages AS m
                (account, channel, address_key, sender, topic, sent_at)
            SELECT %s, u.* FROM unnest(
                %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]
            ) AS u
            ON CONFLICT (account, channel, address_key, sender) DO UPDATE
            SET topic = excluded.topic, sent_at = excluded.sent_at
            WHERE excluded.sent_at >= m.sent_at"""
        self.sent_to_address = f"""
            SELECT channel, sender, topic, sent_at FROM {s}.sent_messages
            WHERE account = %s AND address_key = %s AND channel = ANY(%s)"""
        # A topic can_send's two layers: two primary-key probes, one row whatever is recorded,
        # no array to adapt.
        self.states_of_two = f"""
            SELECT (SELECT state FROM {s}.subscriptions
                    WHERE account = %(account)s AND contact_id = %(contact)s
                        AND channel = %(one)s),
                (SELECT state FROM {s}.subscriptions
                    WHERE account = %(account)s AND contact_id = %(contact)s
                        AND channel = %(two)s)"""
        # The ids of a chunk whose pair on a channel is in one state: the semi-join above, for
        # the topic layer of an audience (subscribed, or for an opt-out default unsubscribed).
        self.among_in_state = {
            state: self.subscribed_among.replace("s.state = 'subscribed'", f"s.state = '{state}'")
            for state in ("subscribed", "unsubscribed")
        }
        # The staged ids whose pair on one channel was ever subscribed, in a transaction.
        self.recorded_among = f"""
            SELECT coalesce(array_agg(u.contact_id), '{{}}')
            FROM unnest({s}.unpack(%s)) AS u(contact_id)
            CROSS JOIN LATERAL (
                SELECT 1 FROM {s}.subscriptions s
                WHERE s.account = %s AND s.contact_id = u.contact_id AND s.channel = %s
                    AND s.state <> 'never_subscribed'
                    AND NOT (s.state = 'unsubscribed' AND s.version <= 1)
                LIMIT 1
            ) AS s"""
        # One query per state, with the state spelled out, so even a generic plan can use the
        # partial index of that state.
        self.list_subscriptions: dict[SubscriptionState, str] = {
            state: f"""
            SELECT {subscription_columns} FROM {s}.subscriptions
            WHERE account = %(account)s AND channel = %(channel)s AND state = '{state.value}'
                AND contact_id > %(after)s
                AND (%(source)s::text IS NULL OR source = %(source)s)
                AND (%(reason)s::text IS NULL OR reason = %(reason)s)
            ORDER BY contact_id LIMIT %(limit)s"""
            for state in (SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED)
        }
        self.last_sequence = f"SELECT last_sequence FROM {s}.accounts WHERE account = %s"
        event_columns = _EVENT_COLUMNS
        self.events: dict[tuple[bool, bool], str] = {}
        for by_contact, by_channel in itertools.product((False, True), repeat=2):
            where = "account = %(account)s AND sequence > %(after)s AND sequence <= %(upto)s"
            if by_contact:
                where += " AND contact_id = %(contact_id)s"
            if by_channel:
                where += " AND channel = %(channel)s"
            self.events[(by_contact, by_channel)] = f"""
                SELECT {event_columns} FROM {s}.events WHERE {where}
                ORDER BY sequence LIMIT %(limit)s"""
        # The trend reads.  Each range of the input is counted by its own LATERAL subquery
        # (GROUP BY keeps PostgreSQL from flattening it), so each is one range scan of an index,
        # (account, hour) of the roll-ups' primary key or events_by_time, bounded by the range.
        # Its bounds are values of the outer row, never constants the planner could look up in
        # the statistics: the estimate is the same small default fraction of the table whether
        # the table was analyzed, analyzed while it was small, or never (as right after a large
        # backdated import, before autovacuum catches up), so the plan does not depend on them.
        # A plain join of the ranges to the table, planned from the statistics, read the
        # account's whole event log (a sequential or bitmap scan, joined to every range) after a
        # large import, and a sequential scan of the roll-ups once ANALYZE had run.
        self.rollups_between = f"""
            SELECT r.n, h.channel, h.previous_state, h.new_state, h.events
            FROM unnest(%b::bigint[], %b::bigint[], %b::integer[]) AS r(lo, hi, n)
            CROSS JOIN LATERAL (
                SELECT channel, previous_state, new_state, sum(events) AS events
                FROM {s}.hourly_changes h
                WHERE h.account = %s AND h.hour >= r.lo AND h.hour < r.hi
                GROUP BY 1, 2, 3
            ) AS h"""
        self.events_between = f"""
            SELECT r.n, e.channel, e.previous_state, e.new_state, e.events
            FROM unnest(%b::timestamptz[], %b::timestamptz[], %b::integer[]) AS r(lo, hi, n)
            CROSS JOIN LATERAL (
                SELECT channel, previous_state, new_state, count(*) AS events
                FROM {s}.events e
                WHERE e.account = %s AND e.occurred_at >= r.lo AND e.occurred_at < r.hi
                GROUP BY 1, 2, 3
            ) AS e"""


def _evidence_to_json(evidence: Evidence | None) -> str | None:
    return None if evidence is None else json.dumps(evidence_document(evidence))


# A situation as the pairs table holds it: channel key, state, changed_by, source and
# opted_out_by column values (NULL but the first two for a never-subscribed pair).
_RawKey = tuple[str, str, str | None, str | None, str | None]
_NO_ORIGINS: frozenset[OptOutOrigin] = frozenset()


# The columns of a pair's row that a change writes (the keys of _row_columns), and the
# parameters of lock_staged that carry a guess of them.
_ROW_COLUMNS = (
    "state", "at", "by", "source", "reason", "opted_out_by", "opted_out_via", "opt_out_at"
)
_GUESS_COLUMNS = tuple(f"g_{name}" for name in _ROW_COLUMNS)


def _never_key(ch: Channel) -> SituationKey:
    """The situation of the never-subscribed pairs of *ch*."""
    return (ch, SubscriptionState.NEVER_SUBSCRIBED, None, None, _NO_ORIGINS)


def _situation_key(ch: Channel, raw: _RawKey) -> SituationKey:
    """The situation of the pairs whose columns read *raw* (channel object *ch*)."""
    _, state, changed_by, source, opted_out_by = raw
    if state == SubscriptionState.NEVER_SUBSCRIBED.value:
        return _never_key(ch)
    return (
        ch,
        STATES[state],
        None if changed_by is None else KINDS[changed_by],
        None if source is None else SOURCES[source],
        origins(opted_out_by),
    )


class _PostgresTransaction:
    """One write transaction on one borrowed connection (see :class:`PostgresStore`)."""

    def __init__(self, store: PostgresStore, conn: Conn, account: str) -> None:
        self._store = store
        # Statements whose results are not needed at once wait there for the next round trip.
        self._conn = Session(conn)
        self._account = account
        self._q = store._queries
        self._batches: dict[ChangeBatch, int] = {}
        self._events = 0
        # Whether the temporary table of pending events exists and holds every event so far;
        # until a write needs it, a small write's events are held here instead, as rows
        # (batch number, ord, contact id, channel key, previous state).
        self._pending_ready = False
        self._held: list[tuple[int, int, str, str, str]] = []
        self._holds_rows = False
        # (contact id, channel key) -> (row id, version) of the pairs the last
        # lock_subscriptions locked; emptied by any write, which moves rows.
        self._locked: dict[tuple[str, str], tuple[str, int]] = {}
        # The address keys this transaction locked, or None once it holds the account's
        # address lock exclusively (every address of the account).
        self._addresses: set[str] | None = set()
        # Staging (see stage_contacts): the staged ids; whether this transaction created the
        # temporary tables, whether the staged table holds the current chunk, and held any
        # chunk; whether the pairs table holds rows; the channel keys of the pairs read (None:
        # not read, or stale after a write); the column values of each situation read; and the
        # pairs of a small chunk, read by lock_subscriptions (None: the chunk is in the tables).
        self._stage_ids: list[str] = []
        self._stage_tables = False
        self._stage_loaded = False
        self._stage_used = False
        self._pairs_filled = False
        self._staged_for: tuple[str, ...] | None = None
        self._situations: dict[SituationKey, list[_RawKey]] = {}
        self._small: list[Pair] | None = None
        # The guess (see _Queries.lock_staged): the channel keys of the call, the row columns of
        # its last apply_staged that wrote absent pairs, and the channels it wrote them on; the
        # channels of the pairs table's guessed rows, unconfirmed (they must be confirmed by
        # apply_staged or reverted before anything else reads or writes subscriptions).
        self._guess: tuple[tuple[str, ...], dict[str, Any], frozenset[str]] | None = None
        self._guessed: frozenset[str] = frozenset()
        # The staged pairs per situation column values, as read_staged counted them.
        self._counts: dict[_RawKey, int] = {}
        # The events written so far per roll-up row (hour, channel, previous state, new state).
        self._rollups: Counter[tuple[int, str, str, str]] = Counter()
        # The ids the last get_contacts looked up when it found none of them (None otherwise),
        # until the next put_contacts (see there).
        self._absent: list[str] | None = None

    @contextmanager
    def _translating(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as e:
            raise _translate(e, doing) from e

    def missing_contacts(self, contact_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(contact_ids))
        if not ids:
            return []
        packed = _pack(ids)
        with self._translating("checking contacts"):
            # Counting is one index-only scan; naming the missing ids is the rare, slower path.
            row = self._conn.execute(
                self._q.count_contacts, (packed, self._account), prepare=_prepare(len(ids))
            ).fetchone()
            if row is not None and row[0] == len(ids):
                return []
            rows = self._conn.execute(
                self._q.missing_contacts, (packed, self._account), prepare=_prepare(len(ids))
            ).fetchall()
        return [row[0] for row in rows]

    def recorded_among(self, contact_ids: Sequence[str], channel: Channel) -> set[str]:
        """The ids among *contact_ids* whose pair on *channel* was ever subscribed (placeholders
        and opt-outs before any consent are not), in one query; no lock is taken: a pair once
        subscribed stays so in this sense."""
        ids = list(dict.fromkeys(contact_ids))
        if not ids:
            return set()
        with self._translating("reading subscriptions"):
            self._revert_guesses()
            row = self._conn.execute(
                self._q.recorded_among,
                (_pack(ids), self._account, channel.key),
                prepare=_prepare(len(ids)),
            ).fetchone()
        return set() if row is None else set(row[0])

    def get_contacts(self, contact_ids: Sequence[str]) -> dict[str, Contact]:
        """The registered contacts among *contact_ids*, locked until the transaction ends (in
        id order, like every row lock of the store), so the addresses read here are those the
        contact has when this transaction writes it; upsert_contacts locks those addresses."""
        if not contact_ids:
            return {}
        # Deduplicated in input order: ids given sorted (an import's, often) sort in one pass.
        ids = sorted(dict.fromkeys(contact_ids))
        with self._translating("reading contacts"), self._conn.pipeline():
            self._enter_bulk(len(ids))
            cur = self._conn.execute(
                self._q.get_contacts, (_pack(ids), self._account), prepare=_prepare(len(ids))
            )
        rows = cur.fetchall()
        # Absent ones are not locked: put_contacts checks that it inserted them all.
        self._absent = None if rows else ids
        decoder = self._store._decoder()
        return {row[0]: decoder.contact(self._account, row) for row in rows}

    def put_contacts(self, contacts: Sequence[Contact]) -> None:
        """Insert or replace contacts and their address index entries.  Contacts the last
        get_contacts found absent (a new import's chunk) are inserted with their entries, no
        old entry looked for; if another transaction registered one of them since, the chunk
        is written again as known contacts are: upserted, their entries replaced."""
        # The last of several contacts with one id wins, as when they are applied in order.
        by_id = {c.id: c for c in contacts}
        absent, self._absent = self._absent, None
        if not by_id:
            return
        ids = sorted(by_id)
        ordered = [by_id[cid] for cid in ids]
        # The address keys other than phones' (insert_contact_addresses builds those).
        keys: list[str] = []
        owners: list[str] = []
        for contact in ordered:
            if contact.email is None and not contact.handles:
                continue
            phone_key = None if contact.phone is None else f"phone:{contact.phone}"
            for key in contact.address_keys():
                if key != phone_key:
                    keys.append(key)
                    owners.append(contact.id)
        account = self._account
        prepare = _prepare(len(ids))
        packed_ids = _pack(ids)
        phones = _pack([c.phone or "" for c in ordered])
        columns = (
            account,
            packed_ids,
            phones,
            _pack([c.email or "" for c in ordered]),
            _pack(
                [
                    json.dumps([[ch.key, h] for ch, h in c.handles]) if c.handles else ""
                    for c in ordered
                ]
            ),
        )
        addresses = (
            account,
            packed_ids,
            phones,
            _pack(keys) if keys else None,
            _pack(owners) if keys else None,
        )
        with self._translating("saving contacts"):
            if absent is not None and by_id.keys() <= set(absent):
                with self._conn.pipeline():
                    self._enter_bulk(len(ids))
                    cur = self._conn.execute(
                        self._q.insert_new_contacts, columns, prepare=prepare
                    )
                    self._conn.execute(
                        self._q.insert_contact_addresses, addresses, prepare=prepare
                    )
                row = cur.fetchone()
                if row is not None and row[0] == len(ids):
                    return
            with self._conn.pipeline():
                self._enter_bulk(len(ids))
                self._conn.execute(self._q.upsert_contacts, columns, prepare=prepare)
                self._conn.execute(
                    self._q.delete_addresses, (packed_ids, account), prepare=prepare
                )
                self._conn.execute(self._q.insert_contact_addresses, addresses, prepare=prepare)

    def _enter_bulk(self, rows: int) -> None:
        """Before this transaction's first row locks: serialise it with the account's other
        bulk writes if it is one.

        Within one statement rows are locked in key order, so single-chunk writers never
        deadlock.  A bulk call spans many chunks, each locked by its own statement, and two such
        calls overlapping in different orders would deadlock again and again, which only
        aborting one of them resolves.  Bulk writes of an account therefore take turns (they
        would mostly wait for each other's rows anyway); small writes never wait for this lock,
        and take their row locks in one ordered statement.
        """
        if self._holds_rows:
            return
        self._holds_rows = True
        if rows >= _BULK_ROWS:
            self._conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (_BULK_LOCK_NAMESPACE, f"{self._store.schema}:{self._account}"),
            )

    def lock_subscriptions(
        self, contact_ids: Sequence[str], channels: Sequence[Channel]
    ) -> dict[tuple[str, Channel], Subscription]:
        if not contact_ids or not channels:
            return {}
        ids = list(contact_ids)
        keys = [ch.key for ch in channels]
        account = self._account
        prepare = _prepare(len(ids) * len(keys))
        with self._translating("locking subscriptions"):
            with self._conn.pipeline():
                self._revert_guesses()
                self._enter_bulk(len(ids) * len(keys))
                packed_ids, packed_keys = _pack(ids), _pack(keys)
                self._conn.execute(
                    self._q.lock_pairs, (account, packed_ids, packed_keys), prepare=prepare
                )
                cur = self._conn.execute(
                    self._q.read_pairs, (packed_ids, packed_keys, account), prepare=prepare
                )
            rows = cur.fetchall()
        locked: dict[tuple[str, str], tuple[str, int]] = {}
        by_key = {ch.key: ch for ch in channels}
        found = self._store._decoder().locked_subscriptions(account, rows, by_key, locked)
        self._locked = locked
        return found

    def _row_columns(self, batch: ChangeBatch) -> dict[str, Any]:
        """The column values (as statement parameters) a change of *batch* writes on a pair
        that had no record."""
        opted_out_by, opted_out_via = opt_out_record(batch)
        unsubscribing = batch.new_state is SubscriptionState.UNSUBSCRIBED
        return {
            "state": batch.new_state.value,
            "at": batch.occurred_at,
            "by": batch.actor.kind.value,
            "source": batch.source.value,
            "reason": batch.reason_code,
            "opted_out_by": opted_out_by,
            "opted_out_via": opted_out_via,
            "opt_out_at": batch.occurred_at if unsubscribing else None,
        }

    def _batch_columns(self, batch: ChangeBatch, batch_no: int) -> dict[str, Any]:
        """The statement parameters every pair of *batch* shares (its pending events are
        numbered from ``ord``)."""
        return {
            "account": self._account,
            **self._row_columns(batch),
            "batch_no": batch_no,
            "ord": self._events,
        }

    def write_changes(self, batch: ChangeBatch, changes: Sequence[PairChange]) -> None:
        check_batch(batch, self._account)
        if not changes:
            return
        batch_no = self._batches.get(batch)
        if batch_no is None:
            batch_no = self._batches[batch] = len(self._batches)
        ids = [c.contact_id for c in changes]
        keys = [c.channel.key for c in changes]
        params = {
            "ids": _pack(ids),
            "channels": _pack(keys),
            "previous": _pack([c.previous_state.value for c in changes]),
            "expected": _pack([str(c.expected_version) for c in changes]),
            **self._batch_columns(batch, batch_no),
        }
        with self._translating("writing changes"):
            self._revert_guesses()
        row_ids = self._locked_rows(changes)
        self._locked = {}
        self._staged_for = None
        with self._translating("writing changes"):
            if row_ids is not None:
                self._write_locked(params, row_ids, changes)
                self._count_changes(batch, changes)
                return
            self._use_pending()
            cur = self._conn.execute(self._q.write_changes, params, prepare=_prepare(len(changes)))
            row = cur.fetchone()
            assert row is not None
            updated, inserted, mismatch_id, mismatch_channel, version, expected = row
            if mismatch_id is not None:
                raise ConflictError(
                    f"subscription of {mismatch_id!r} on {mismatch_channel} is at version "
                    f"{version}, not {expected}: it changed concurrently; re-read and retry"
                )
            if updated + inserted != len(changes):
                distinct = self._conn.execute(
                    self._q.count_pairs, (params["ids"], params["channels"]), prepare=False
                ).fetchone()
                assert distinct is not None
                if updated + inserted != distinct[0]:
                    # Some rows were written already: this transaction must not commit.
                    raise self._conn.fail(
                        ConflictError(
                            "a subscription of this write was created concurrently by a "
                            "transaction that had not locked it; lock pairs before writing them, "
                            "then retry"
                        )
                    )
        self._count_changes(batch, changes)

    def _count_changes(self, batch: ChangeBatch, changes: Sequence[PairChange]) -> None:
        """Count the events of *changes* (one each, staged) in the roll-ups."""
        hour, new_state = hour_bucket(batch.occurred_at), batch.new_state.value
        rollups = self._rollups
        for (key, previous), events in Counter(
            (c.channel.key, c.previous_state.value) for c in changes
        ).items():
            rollups[(hour, key, previous, new_state)] += events
        self._events += len(changes)

    def _locked_rows(self, changes: Sequence[PairChange]) -> list[str] | None:
        """The row ids of *changes* when every pair is locked at its expected version, else
        None (the general statement then checks the versions itself)."""
        locked = self._locked
        if not locked:
            return None
        row_ids: list[str] = []
        for change in changes:
            found = locked.get((change.contact_id, change.channel.key))
            if found is None or found[1] != change.expected_version:
                return None
            row_ids.append(found[0])
        return row_ids

    def _write_locked(
        self, params: dict[str, Any], row_ids: list[str], changes: Sequence[PairChange]
    ) -> None:
        params["row_ids"] = _pack(row_ids)
        prepare = _prepare(len(changes))
        expected = {len(changes), len({(c.contact_id, c.channel) for c in changes})}

        def check(cur: Cursor) -> ConflictError | None:
            row = cur.fetchone()
            if row is not None and row[0] in expected:
                return None
            # Locked rows cannot change under us; if they did, nothing of this may commit.
            return ConflictError(_LOCKED_CHANGED)

        # Sent with the next round trip (the rows are locked: nobody can change them), checked
        # before COMMIT.
        if not self._pending_ready and len(self._held) + len(changes) <= _HELD_MAX:
            first = params["ord"] + 1
            batch_no = params["batch_no"]
            self._held.extend(
                (batch_no, first + i, c.contact_id, c.channel.key, c.previous_state.value)
                for i, c in enumerate(changes)
            )
            self._conn.queue(self._q.write_locked_held, params, prepare=prepare, check=check)
            return
        self._use_pending()
        self._conn.queue(self._q.write_locked, params, prepare=prepare, check=check)

    def _use_pending(self) -> None:
        """Make sure the temporary table of pending events exists (sent with the next round
        trip) and holds the events held so far."""
        if self._pending_ready:
            return
        # Created per transaction (IF NOT EXISTS is cheap): behind PgBouncer in transaction
        # mode the next transaction may run on another server connection.
        self._conn.queue(self._q.create_pending, ())
        if self._held:
            columns = [list(column) for column in zip(*self._held, strict=True)]
            self._conn.queue(self._q.spill_held, columns)
            self._held = []
        self._pending_ready = True

    def finish(self) -> None:
        """Number the staged events and update the roll-ups: the last step before COMMIT."""
        self._conn.check_usable()
        with self._translating("writing staged changes"):
            self._revert_guesses()
            if not self._events:
                self._conn.flush()
                return
        account = self._account
        total = self._events
        batches = [
            self._event_params(batch, batch_no, total) for batch, batch_no in self._batches.items()
        ]
        if self._pending_ready:
            insert_events = self._q.insert_events
        else:
            insert_events = self._q.insert_held_events
            held: dict[int, list[tuple[int, int, str, str, str]]] = {}
            for row in self._held:
                held.setdefault(row[0], []).append(row)
            for params in batches:
                rows = held.get(params["batch_no"], [])
                params["ords"] = [row[1] for row in rows]
                params["contact_ids"] = [row[2] for row in rows]
                params["channels"] = [row[3] for row in rows]
                params["previous"] = [row[4] for row in rows]
        with self._conn.pipeline():
            self._conn.execute(self._q.reserve_sequences, (account, total))
            self._conn.cursor().executemany(insert_events, batches)
            rollups = [(*key, events) for key, events in sorted(self._rollups.items())]
            columns = [list(column) for column in zip(*rollups, strict=True)]
            self._conn.execute(
                self._q.add_rollups, (account, *columns), prepare=_prepare(len(rollups))
            )

    def _event_params(self, batch: ChangeBatch, batch_no: int, total: int) -> dict[str, Any]:
        justification = batch.justification
        return {
            "account": self._account,
            "total": total,
            "batch_no": batch_no,
            "new_state": batch.new_state.value,
            "actor_kind": batch.actor.kind.value,
            "actor_id": batch.actor.id,
            "actor_roles": sorted(batch.actor.roles),
            "source": batch.source.value,
            "occurred_at": batch.occurred_at,
            "recorded_at": batch.recorded_at,
            "justification_reason": None if justification is None else justification.reason.value,
            "justification_note": None if justification is None else justification.note,
            "evidence": _evidence_to_json(batch.evidence),
            "reason": batch.reason_code,
            "inbound_message_id": batch.inbound_message_id,
            "batch_id": batch.batch_id,
        }

    def note_opt_outs(self, batch: ChangeBatch, pairs: Sequence[tuple[str, Channel]]) -> None:
        if not pairs:
            return
        ids = [cid for cid, _ in pairs]
        keys = [ch.key for _, ch in pairs]
        params = {
            "ids": _pack(ids),
            "channels": _pack(keys),
            "account": self._account,
            "origin": None if batch.opted_out_by is None else batch.opted_out_by.value,
            "at": batch.occurred_at,
        }
        self._staged_for = None
        with self._translating("recording opt-out requests"):
            self._revert_guesses()
            self._enter_bulk(len(pairs))
            self._conn.queue(self._q.note_opt_outs, params, prepare=_prepare(len(pairs)))
        # The updated rows moved; the other locked pairs keep their row ids.
        locked = self._locked
        for pair in zip(ids, keys, strict=True):
            locked.pop(pair, None)

    # ------------------------------------------------------------------ staging
    #
    # Set-based changes (StagingTransaction): the staged ids and the locked pairs live in two
    # temporary tables, and every statement works on them inside the database; Python sees the
    # situations (a few rows per chunk) and, when the service asks, the pairs of some of them.

    def stage_contacts(self, contact_ids: Sequence[str]) -> None:
        """Make *contact_ids* the staged chunk.  Nothing is sent yet: staged_situations sends
        the ids with the statements that lock their pairs, in one round trip."""
        self._stage_ids = contact_ids if isinstance(contact_ids, list) else list(contact_ids)
        self._stage_loaded = False
        self._staged_for = None
        self._situations = {}
        self._small = None

    def staged_situations(self, channels: Sequence[Channel]) -> list[Situation]:
        """Lock the staged pairs as :meth:`lock_subscriptions` does (absent ones as
        placeholders, or as guessed rows: see _Queries.lock_staged; in (contact id, channel)
        order, by one statement), copy them with their row ids into the pairs table and return
        their situations: one round trip.  Guessed rows left from the last chunk become
        placeholders first.

        A chunk of fewer than _SMALL_STAGE pairs (a call on one contact) is locked and read by
        :meth:`lock_subscriptions` itself, and its pairs are kept here: the temporary tables
        would cost more than the pairs."""
        with self._translating("locking staged subscriptions"):
            self._revert_guesses()
        keys = tuple(ch.key for ch in channels)
        ids = self._stage_ids
        pairs = len(ids) * len(keys)
        self._staged_for = keys
        self._situations = {}
        self._small = None
        if not pairs:
            return []
        if pairs < _SMALL_STAGE:
            return self._small_situations(ids, channels)
        account = self._account
        packed = _pack(list(keys))
        prepare = _prepare(pairs)
        params = {"channels": packed, "account": account, "width": len(keys)}
        params.update(self._guess_params(keys))
        with self._translating("locking staged subscriptions"):
            with self._conn.pipeline():
                if not self._stage_tables:
                    # The statements of a chunk of 10,000 pairs pass jit_above_cost, and
                    # compiling one took ten times as long as running it (250 ms against 20 ms);
                    # the setting ends with the transaction.
                    self._conn.execute("SET LOCAL jit = off")
                    self._conn.execute(self._q.create_staged)
                    self._conn.execute(self._q.create_staged_pairs)
                    self._use_pending()
                    self._stage_tables = True
                if not self._stage_loaded:
                    if self._stage_used:
                        self._conn.execute(self._q.clear_staged)
                        self._pairs_filled = False
                    self._conn.execute(self._q.stage, (_pack(ids),), prepare=_prepare(len(ids)))
                    self._stage_loaded = self._stage_used = True
                if self._pairs_filled:
                    self._conn.execute(self._q.clear_staged_pairs)
                self._enter_bulk(pairs)
                self._conn.execute(self._q.lock_staged, params, prepare=prepare)
                cur = self._conn.execute(self._q.read_staged, params, prepare=prepare)
            rows = cur.fetchall()
        self._pairs_filled = True
        return self._read_situations(channels, rows)

    def _read_situations(
        self, channels: Sequence[Channel], rows: list[tuple[Any, ...]]
    ) -> list[Situation]:
        """The situations of the rows read_staged returned; notes their column values, and the
        channels with guessed rows."""
        by_key = {ch.key: ch for ch in channels}
        found: dict[SituationKey, tuple[int, datetime | None]] = {}
        raw_of = self._situations
        counts = self._counts = {}
        guessed: set[str] = set()
        for key_, state, changed_by, source, opted_out_by, count, latest, guesses in rows:
            if guesses:
                guessed.add(key_)
            raw: _RawKey = (key_, state, changed_by, source, opted_out_by)
            key = _situation_key(by_key[key_], raw)
            raw_of.setdefault(key, []).append(raw)
            counts[raw] = count
            total, last = found.get(key, (0, None))
            if latest is not None and (last is None or latest > last):
                last = utc(latest)
            found[key] = (total + count, last)
        self._guessed = frozenset(guessed)
        return [Situation(key, total, latest) for key, (total, latest) in found.items()]

    def _guess_params(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """The g_* parameters of lock_staged: the guessed row of an absent pair on the channels
        where the call's last apply_staged wrote absent pairs (none before it has)."""
        guess = self._guess
        if guess is None or guess[0] != keys:
            return dict.fromkeys(_GUESS_COLUMNS, None) | {"g_channels": []}
        columns = guess[1]
        return {f"g_{name}": columns[name] for name in _ROW_COLUMNS} | {
            "g_channels": sorted(guess[2])
        }

    def _revert_guesses(self) -> None:
        """Turn the pairs table's unconfirmed guessed rows back into placeholders; they moved,
        so the staged pairs are read again when next needed."""
        if not self._guessed:
            return
        self._conn.execute(self._q.revert_guesses)
        self._guessed = frozenset()
        self._staged_for = None
        self._locked = {}

    def _small_situations(self, ids: list[str], channels: Sequence[Channel]) -> list[Situation]:
        """staged_situations of a small chunk, over lock_subscriptions."""
        current = self.lock_subscriptions(ids, channels)
        self._small = [(cid, ch, current.get((cid, ch))) for cid in ids for ch in channels]
        return situations_of(self._small)

    def staged_pairs(
        self,
        channels: Sequence[Channel],
        keys: Sequence[SituationKey],
        *,
        changed_after: datetime | None = None,
        limit: int | None = None,
    ) -> list[StagedPair]:
        """The staged pairs of the situations *keys*, read from the pairs table in staging
        order."""
        if limit is not None and limit <= 0:
            return []
        self._ensure_staged(channels)
        if self._small is not None:
            return pairs_in(self._small, keys, changed_after=changed_after, limit=limit)
        params = self._situation_params(keys, frozenset())
        if params is None:
            return []
        params["after"] = changed_after
        params["limit"] = limit
        with self._translating("reading staged subscriptions"):
            rows = self._conn.execute(
                self._q.staged_pairs,
                params,
                prepare=_prepare(len(self._stage_ids) * len(channels)),
            ).fetchall()
        by_key = {ch.key: ch for ch in channels}
        key_of = {raw: key for key in keys for raw in self._situations.get(key, ())}
        return [
            StagedPair(contact_id, by_key[key_], version, key_of[(key_, *situation)])
            for contact_id, key_, version, *situation in rows
        ]

    def apply_staged(
        self,
        batch: ChangeBatch,
        channels: Sequence[Channel],
        writes: Sequence[SituationKey],
        notes: Sequence[SituationKey],
    ) -> int:
        """Write every staged pair of the situations *writes* and note an opt-out request on
        those of *notes*: one statement (the notes, the changes by row id, their events staged in
        staging order for :meth:`finish`, which numbers them and updates the roll-ups)."""
        check_batch(batch, self._account)
        writing = frozenset(writes)
        noting = [key for key in notes if key not in writing]
        self._ensure_staged(channels)
        if self._small is not None:
            return self._apply_small(batch, writing, frozenset(noting))
        columns = self._row_columns(batch)
        if self._guessed:
            guess = self._guess
            by_key = {ch.key: ch for ch in channels}
            if (
                guess is None
                or guess[1] != columns
                or any(_never_key(by_key[key]) not in writing for key in self._guessed)
            ):
                # A wrong guess (another change, or absent pairs left alone): the rows become
                # placeholders again, read again, and are written as any other.
                self._ensure_staged(channels, revert=True)
        params = self._situation_params([*writes, *noting], writing)
        if params is None:
            return 0
        batch_no = -1
        if writing:
            batch_no = self._batches.get(batch, len(self._batches))
            self._batches[batch] = batch_no
        params.update(self._batch_columns(batch, batch_no))
        params["origin"] = None if batch.opted_out_by is None else batch.opted_out_by.value
        with self._translating("writing staged changes"):
            row = self._conn.execute(
                self._q.apply_staged,
                params,
                prepare=_prepare(len(self._stage_ids) * len(channels)),
            ).fetchone()
        # The written and noted rows moved: a later staged read locks and reads them again.
        self._staged_for = None
        self._locked = {}
        self._guessed = frozenset()
        wrote_absent = frozenset(ch.key for ch in channels if _never_key(ch) in writing)
        if wrote_absent:
            self._guess = (tuple(ch.key for ch in channels), columns, wrote_absent)
        assert row is not None
        updated, written = row
        hour, new_state = hour_bucket(batch.occurred_at), batch.new_state.value
        counted: Counter[tuple[int, str, str, str]] = Counter()
        for key in writing:
            for raw in self._situations.get(key, ()):
                counted[(hour, raw[0], raw[1], new_state)] += self._counts[raw]
        if updated != written or counted.total() != written:
            # Locked rows cannot move under us; if they did, nothing of this may commit.
            raise self._conn.fail(ConflictError(_LOCKED_CHANGED))
        self._rollups.update(counted)
        self._events += written
        return int(written)

    def _apply_small(
        self,
        batch: ChangeBatch,
        writing: frozenset[SituationKey],
        noting: frozenset[SituationKey],
    ) -> int:
        """apply_staged of a small chunk, over note_opt_outs and write_changes."""
        assert self._small is not None
        return apply_pairs(self, batch, self._small, writing, noting)

    def _ensure_staged(self, channels: Sequence[Channel], *, revert: bool = False) -> None:
        """Lock and read the staged pairs of *channels* unless the pairs table holds them; with
        *revert*, turn its guessed rows into placeholders first (so they are read again)."""
        if revert:
            with self._translating("writing staged changes"):
                self._revert_guesses()
        if self._staged_for != tuple(ch.key for ch in channels):
            self.staged_situations(channels)

    def _situation_params(
        self, keys: Sequence[SituationKey], writing: frozenset[SituationKey]
    ) -> dict[str, Any] | None:
        """The column values of the situations *keys* (as read), as the array parameters of
        the statements that match pairs to them; None when no staged pair is in any."""
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        for key in dict.fromkeys(keys):
            write = key in writing
            for raw in self._situations.get(key, ()):
                for column, value in zip(columns, (*raw, write), strict=True):
                    column.append(value)
        if not columns[0]:
            return None
        names = ("k_channel", "k_state", "k_by", "k_source", "k_origins", "k_write")
        return dict(zip(names, columns, strict=True))

    def lock_addresses(self, address_keys: Sequence[str]) -> None:
        """Lock *address_keys* until the transaction ends: one transaction-level advisory lock
        per key (scoped to the schema and the account), taken in one statement in lock-id
        order.  A transaction holding them shares the account's address lock; one that would
        hold more than a few hundred takes that lock exclusively instead (waiting for every
        other transaction that locked an address of the account), so the server's lock table is
        never exhausted.  Take address locks before subscription row locks (as the service
        does): taken after, they can deadlock with another writer, which PostgreSQL resolves by
        raising a ConflictError in one of them."""
        held = self._addresses
        if held is None:
            return
        new = [key for key in dict.fromkeys(address_keys) if key not in held]
        if not new:
            return
        scope = f"{self._store.schema}\x1f{self._account}"
        with self._translating("locking addresses"):
            self._enter_bulk(len(new))
            if len(held) + len(new) > _ADDRESS_LOCKS_MAX:
                # Held shared already, this waits for the other sharers (a deadlock if one of
                # them waits for this transaction: PostgreSQL then aborts one of the two).
                self._conn.queue(self._q.own_addresses, (scope,))
                self._addresses = None
                return
            # Taken with the next round trip, before any statement that follows.
            if not held:
                self._conn.queue(self._q.share_addresses, (scope,))
            self._conn.queue(
                self._q.lock_addresses, (f"{scope}\x1f", new), prepare=_prepare(len(new))
            )
        held.update(new)

    def get_inbound(self, channel: Channel, message_id: str) -> InboundRecord | None:
        with self._translating("reading an inbound record"):
            row = self._conn.execute(
                self._q.get_inbound, (self._account, channel.key, message_id)
            ).fetchone()
        return inbound_record(channel, message_id, row)

    def put_inbound(self, record: InboundRecord) -> None:
        def check(cur: Cursor) -> ConflictError | None:
            if cur.rowcount == 1:
                return None
            return ConflictError(
                f"inbound message {record.message_id!r} on {record.channel.key} was already "
                "handled"
            )

        # Checked before COMMIT: a concurrent delivery that recorded it first rolls this one back.
        with self._translating("recording an inbound message"):
            self._conn.queue(
                self._q.put_inbound,
                (
                    self._account,
                    record.channel.key,
                    record.message_id,
                    record.body_sha256,
                    record.result,
                    record.received_at,
                    record.sender_key,
                    record.from_contact,
                ),
                check=check,
            )

    def put_pending(self, request: PendingOptIn) -> None:
        with self._translating("recording a pending opt-in"):
            cur = self._conn.execute(
                f"INSERT INTO {self._store._schema_sql}.pending_opt_ins "
                f"(account, {_pending.PENDING_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (self._account, *_pending.pending_row(request, utc)),
            )
        if cur.rowcount != 1:
            raise ConflictError(f"pending opt-in {request.id!r} exists already")

    def get_pending(self, request_id: str) -> PendingOptIn | None:
        with self._translating("reading a pending opt-in"):
            row = self._conn.execute(
                f"SELECT {_PENDING_SELECT} FROM {self._store._schema_sql}.pending_opt_ins "
                "WHERE account = %s AND id = %s FOR UPDATE",
                (self._account, request_id),
            ).fetchone()
        if row is None:
            return None
        return _pending.pending_of(self._account, row, self._store._decoder(), utc)

    def close_pending(self, request_id: str, status: PendingStatus, at: datetime) -> None:
        with self._translating("closing a pending opt-in"):
            self._conn.execute(
                f"UPDATE {self._store._schema_sql}.pending_opt_ins SET status = %s, "
                "closed_at = %s WHERE account = %s AND id = %s",
                (status.value, at, self._account, request_id),
            )

    def open_pending_of(self, contact_ids: Sequence[str]) -> list[PendingOptIn]:
        with self._translating("reading pending opt-ins"):
            rows = self._conn.execute(
                f"SELECT {_PENDING_SELECT} FROM {self._store._schema_sql}.pending_opt_ins "
                "WHERE account = %s AND status = 'pending' AND contact_id = ANY(%s) "
                "ORDER BY requested_at, id FOR UPDATE",
                (self._account, list(dict.fromkeys(contact_ids))),
            ).fetchall()
        decoder = self._store._decoder()
        return [_pending.pending_of(self._account, row, decoder, utc) for row in rows]

    def put_review_item(self, item: ReviewItem) -> None:
        if item.account != self._account:
            raise ValidationError(
                "item.account",
                f"{item.account!r} is not the account of this transaction ({self._account!r})",
            )
        with self._translating("queueing a review item"):
            cur = self._conn.execute(
                self._q.put_review_item,
                (
                    self._account,
                    item.id,
                    item.kind.value,
                    item.channel.key,
                    item.message_id,
                    item.sender,
                    item.text,
                    list(item.contact_ids),
                    item.received_at,
                    item.honor_by,
                    None if item.decision is None else item.decision.value,
                    item.decided_by,
                    item.decided_at,
                    item.note,
                ),
            )
        if cur.rowcount != 1:
            raise ConflictError(f"review item {item.id!r} exists already")

    def get_review_item(self, item_id: str) -> ReviewItem | None:
        """One review item, its row locked (FOR UPDATE) until the transaction ends: a second
        reviewer of the same item waits, then reads the first one's decision."""
        with self._translating("reading a review item"):
            row = self._conn.execute(
                self._q.get_review_item, (self._account, item_id)
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
        with self._translating("recording a review decision"):
            cur = self._conn.execute(
                self._q.decide_review_item,
                (decision.value, decided_by, decided_at, note, self._account, item_id),
            )
        if cur.rowcount != 1:
            raise ConflictError(
                f"review item {item_id!r} is not open: it does not exist or was decided already"
            )

    def find_contacts_by_address(self, address_keys: Sequence[str]) -> dict[str, list[str]]:
        if not address_keys:
            return {}
        with self._translating("looking up addresses"):
            rows = self._conn.execute(
                self._q.find_by_address, (self._account, list(address_keys))
            ).fetchall()
        return addresses_of(rows)

    def record_address_departures(
        self, departures: Sequence[tuple[str, str]], at: datetime
    ) -> None:
        if not departures:
            return
        with self._translating("recording address departures"):
            self._conn.queue(
                self._q.record_departures,
                (
                    self._account,
                    at,
                    [key for key, _ in departures],
                    [cid for _, cid in departures],
                ),
            )

    def contacts_that_left(self, address_key: str, since: datetime) -> list[str]:
        with self._translating("looking up address departures"):
            rows = self._conn.execute(
                self._q.contacts_that_left, (self._account, address_key, since)
            ).fetchall()
        return [row[0] for row in rows]

    def owners_of_address(self, address_key: str, since: datetime) -> list[str]:
        with self._translating("looking up the contacts of an address"):
            rows = self._conn.execute(
                self._q.owners_of_address,
                {"account": self._account, "key": address_key, "since": since},
            ).fetchall()
        return [row[0] for row in rows]

    def get_suppressions(self, address_keys: Sequence[str]) -> list[Suppression]:
        if not address_keys:
            return []
        with self._translating("reading suppressions"):
            rows = self._conn.execute(
                self._q.get_suppressions,
                (self._account, _pack(list(address_keys))),
                prepare=_prepare(len(address_keys)),
            ).fetchall()
        return self._store._decoder().suppressions(self._account, rows)

    def put_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        # One row per (address key, channel), as if applied one by one: the first of those
        # that occurred last.
        latest: dict[tuple[str, str], Suppression] = {}
        for suppression in suppressions:
            key = (suppression.address_key, suppression.channel.key)
            kept = latest.get(key)
            if kept is None or replaces(suppression, kept):
                latest[key] = suppression
        if not latest:
            return
        rows = list(latest.values())
        with self._translating("recording suppressions"):
            self._conn.queue(
                self._q.put_suppressions,
                (
                    self._account,
                    [s.address_key for s in rows],
                    [s.channel.key for s in rows],
                    [s.occurred_at for s in rows],
                    [s.source.value for s in rows],
                    [s.inbound_message_id for s in rows],
                    [s.active for s in rows],
                ),
            )

    def subscriptions_of_contact(self, contact_id: str) -> list[Subscription]:
        """Every subscription of one contact, locked (``FOR UPDATE``) until the end."""
        with self._translating("reading subscriptions"):
            self._revert_guesses()
            rows = self._conn.execute(
                self._q.subscriptions_of + " FOR UPDATE", (self._account, contact_id)
            ).fetchall()
        decoder = self._store._decoder()
        return [decoder.subscription(self._account, row) for row in rows]

    def erase_contact(self, erasure: Erasure) -> None:
        """Erase a contact: one statement per table, its staged events included
        (:mod:`consentkit.storage._postgres_erasure`), then its hashed suppressions."""
        with self._translating("erasing a contact"):
            self._revert_guesses()
            self._use_pending()
            self._store._erasure_queries.run_erase(
                self._conn.flushed(), self._account, erasure, pending=self._pending_ready
            )
            self._locked = {}
            self._staged_for = None
        self.put_suppressions(erasure.suppressions)


class PostgresStore:
    """A consent store in PostgreSQL (12 or later; tested on 15), for host apps running several
    processes or machines against one database.

    Args:
        conninfo: a libpq connection string or URI; the store opens and owns a small pool.
        pool: a :class:`psycopg_pool.ConnectionPool` of the host app to borrow connections from
            (give either *conninfo* or *pool*).  Connections are returned as they came
            (autocommit, isolation level and prepare threshold are restored); the store never
            closes a pool it did not open.
        schema: the schema holding consentkit's tables (lower-case letters, digits and ``_``).
        prepare_threshold: after how many executions a statement is prepared server-side on a
            connection; ``None`` never prepares, which PgBouncer in transaction mode needs.
        max_retries: how many times a read, or the store's own migration, is retried after a
            deadlock, a serialization failure or a lost connection.
        create_schema: create and migrate the schema when needed; with ``False`` the store only
            checks that it is at :data:`SCHEMA_VERSION` (for roles without DDL rights).

    Raises:
        ValidationError: the arguments are inconsistent or the schema name is not allowed.
        StorageError: the database cannot be reached, or the schema is missing or too new.
    """

    def __init__(  # noqa: PLR0913 - the documented keyword-only options of the store
        self,
        conninfo: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        schema: str = "consentkit",
        prepare_threshold: int | None = 5,
        max_retries: int = 5,
        create_schema: bool = True,
    ) -> None:
        if (conninfo is None) == (pool is None):
            raise ValidationError(
                "conninfo", "give either a connection string or a pool (exactly one of them)"
            )
        if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
            raise ValidationError(
                "schema",
                f"{schema!r} is not allowed: use 1-63 lower-case letters, digits or '_', "
                "starting with a letter or '_' (e.g. 'consentkit')",
            )
        if prepare_threshold is not None and (
            isinstance(prepare_threshold, bool)
            or not isinstance(prepare_threshold, int)
            or prepare_threshold < 0
        ):
            raise ValidationError(
                "prepare_threshold", "must be a non-negative integer, or None to never prepare"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValidationError("max_retries", "must be a non-negative integer")
        self.schema = schema
        self.prepare_threshold = prepare_threshold
        self.max_retries = max_retries
        self._queries = _Queries(schema)
        self._schema_sql = f'"{schema}"'  # quoted, as the queries name it
        self._erasure_queries = _postgres_erasure.ErasureQueries(schema)
        self._channels: dict[str, Channel] = {}  # custom channels are built once
        # Threads with a transaction open on this store (see transaction()).
        self._writers: set[int] = set()
        self._owns_pool = pool is None
        if pool is None:
            assert conninfo is not None
            kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": prepare_threshold}
            dsn = conninfo

            def connect() -> AbstractContextManager[Conn]:
                conn = psycopg.connect(dsn, **kwargs)
                self._configure(conn)
                return conn

            # The migration runs on a connection of its own before the pool opens: a wrong DSN
            # fails now with the server's message, not after the pool's reconnection attempts.
            self._migrate(connect, create_schema)
            pool = ConnectionPool(
                conninfo,
                min_size=1,
                max_size=10,
                open=True,
                kwargs=kwargs,
                configure=self._configure,
                name=f"consentkit-{schema}",
            )
            try:
                # Filling the pool now keeps its connection work (and its use of the global
                # random module for expiry jitter) out of the host's later, timed calls.
                pool.wait(timeout=30.0)
            except PoolTimeout as e:
                pool.close()
                raise StorageError(
                    f"cannot open a connection pool to PostgreSQL ({e}); check the server"
                ) from e
        else:
            self._migrate(self._borrow_from(pool), create_schema)
        self._pool = pool
        self._borrow = self._borrow_from(pool)
        """A connection set up for the store, returned to the pool afterwards."""

    @staticmethod
    def _configure(conn: Conn) -> None:
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        # Timestamps then load as UTC directly instead of being converted row by row; PgBouncer
        # tracks TimeZone per client, so this survives transaction pooling too.
        conn.execute("SET TimeZone TO 'UTC'")

    # ------------------------------------------------------------------ connections

    def _borrow_from(self, pool: ConnectionPool[Any]) -> Callable[[], AbstractContextManager[Conn]]:
        """A factory of borrowed connections, each set up for the store and returned afterwards."""
        owned = self._owns_pool
        threshold = self.prepare_threshold

        @contextmanager
        def borrow() -> Iterator[Conn]:
            try:
                with pool.connection() as conn:
                    if owned:
                        yield conn
                        return
                    saved = (conn.autocommit, conn.isolation_level, conn.prepare_threshold)
                    conn.autocommit = True
                    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
                    conn.prepare_threshold = threshold
                    try:
                        yield conn
                    finally:
                        # A broken connection cannot be reset; the pool discards it anyway.
                        with suppress(psycopg.Error):
                            conn.autocommit, conn.isolation_level, conn.prepare_threshold = saved
            except PoolClosed as e:
                raise StorageError("the store is closed; create a new PostgresStore") from e
            except PoolTimeout as e:
                raise _pool_timeout(pool, e) from e

        return borrow

    def _read(self, doing: str, fn: Callable[[Conn], T]) -> T:
        """Run *fn* (one or more autocommit reads) on a connection, retrying what can be."""
        for attempt in itertools.count():
            with self._borrow() as conn:
                try:
                    return fn(conn)
                except psycopg.Error as e:
                    if not _retryable(e, conn) or attempt >= self.max_retries:
                        raise _translate(e, doing) from e
            _backoff(attempt)
        raise AssertionError("unreachable")

    def _decoder(self) -> RowDecoder:
        return RowDecoder(self._channels, utc)

    # ------------------------------------------------------------------ schema

    def _migrate(
        self, connect: Callable[[], AbstractContextManager[Conn]], create_schema: bool
    ) -> None:
        for attempt in itertools.count():
            try:
                with connect() as conn:
                    try:
                        with conn.transaction():
                            self._migrate_in(conn, create_schema)
                        return
                    except psycopg.Error as e:
                        if not _retryable(e, conn) or attempt >= self.max_retries:
                            raise _translate(e, f"migrating schema {self.schema!r}") from e
            except psycopg.Error as e:
                raise StorageError(
                    f"cannot connect to PostgreSQL ({e}); check the connection string, that the "
                    "server is running and that the role may log in"
                ) from e
            _backoff(attempt)

    def _migrate_in(self, conn: Conn, create_schema: bool) -> None:
        schema = self.schema
        quoted = f'"{schema}"'
        version_table = f"{quoted}.schema_migrations"
        # Serialises migrations of this schema across processes; CREATE ... IF NOT EXISTS alone
        # still fails with a unique violation when two sessions race on the catalog.
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, schema))
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (version_table,)).fetchone()
        current = 0
        if exists is not None and exists[0]:
            row = conn.execute(f"SELECT max(version) FROM {version_table}").fetchone()
            current = 0 if row is None or row[0] is None else int(row[0])
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"schema {schema!r} is at version {current}, newer than this consentkit "
                f"understands ({SCHEMA_VERSION}); upgrade consentkit"
            )
        if current == SCHEMA_VERSION:
            return
        if not create_schema:
            raise StorageError(
                f"schema {schema!r} is at version {current}, not {SCHEMA_VERSION}; create the "
                "store once with create_schema=True as a role that may create tables in it "
                "(see docs/postgres.md)"
            )
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {version_table} (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
        for version, description, statements in _MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement.replace("__S__", quoted))
            conn.execute(
                f"INSERT INTO {version_table} (version, description) VALUES (%s, %s)",
                (version, description),
            )

    # ------------------------------------------------------------------ writes

    @contextmanager
    def transaction(self, account: str) -> Iterator[_PostgresTransaction]:
        """Open a write transaction in *account*: commits when the block ends normally, rolls
        back when it raises.

        A pooled connection found dead when the transaction begins (the server restarted, a
        failover) is replaced, up to ``max_retries`` times; after BEGIN nothing is retried.

        Raises:
            StorageError: this thread has a transaction open on this store already.  The inner
                one would run on another pooled connection: it could wait forever for rows the
                outer one holds, or commit although the outer one rolls back.
        """
        thread = threading.get_ident()
        if thread in self._writers:
            raise StorageError(_NESTED_TRANSACTION)
        self._writers.add(thread)
        try:
            yield from self._transaction(account)
        finally:
            self._writers.discard(thread)

    def _transaction(self, account: str) -> Iterator[_PostgresTransaction]:
        with ExitStack() as stack:
            for attempt in itertools.count():
                conn = stack.enter_context(self._borrow())
                block = conn.transaction()
                try:
                    block.__enter__()
                    break
                except psycopg.Error as e:
                    if not _retryable(e, conn) or attempt >= self.max_retries:
                        raise _translate(e, "starting a consent transaction") from e
                stack.close()  # gives the dead connection back; the pool replaces it
                _backoff(attempt)
            try:
                tx = _PostgresTransaction(self, conn, account)
                yield tx
                tx.finish()
            except BaseException as error:
                block.__exit__(type(error), error, error.__traceback__)  # rolls back
                if isinstance(error, psycopg.Error):
                    raise _translate(error, "writing a consent transaction") from error
                raise
            try:
                block.__exit__(None, None, None)  # commits
            except psycopg.Error as e:
                raise _translate(e, "committing a consent transaction") from e

    # ------------------------------------------------------------------ reads

    def get_contact(self, account: str, contact_id: str) -> Contact | None:
        """One contact, or None."""

        def run(conn: Conn) -> Contact | None:
            row = conn.execute(self._queries.get_contact, (account, contact_id)).fetchone()
            return None if row is None else self._decoder().contact(account, row)

        return self._read("reading a contact", run)

    def list_contacts(self, account: str, *, after: str | None, limit: int) -> list[Contact]:
        """Contacts ordered by id, starting after the id *after*."""

        def run(conn: Conn) -> list[Contact]:
            if after is None:
                cur = conn.execute(self._queries.list_contacts_first, (account, limit))
            else:
                cur = conn.execute(self._queries.list_contacts, (account, after, limit))
            decoder = self._decoder()
            return [decoder.contact(account, row) for row in cur.fetchall()]

        return self._read("listing contacts", run)

    def get_subscription(
        self, account: str, contact_id: str, channel: Channel
    ) -> Subscription | None:
        """The subscription of one pair, or None when it was never subscribed."""

        def run(conn: Conn) -> Subscription | None:
            row = conn.execute(
                self._queries.get_subscription, (account, contact_id, channel.key)
            ).fetchone()
            return None if row is None else self._decoder().subscription(account, row)

        return self._read("reading a subscription", run)

    def get_state(self, account: str, contact_id: str, channel: Channel) -> SubscriptionState:
        """The state of one pair; ``NEVER_SUBSCRIBED`` when it has no row (or a placeholder)."""
        row = self._point_read(
            "reading a subscription state",
            self._queries.get_state,
            (account, contact_id, channel.key),
        )
        return SubscriptionState.NEVER_SUBSCRIBED if row is None else _STATES[row[0]]

    def _point_read(
        self, doing: str, query: str, params: Sequence[object] | dict[str, object]
    ) -> tuple[Any, ...] | None:
        """The first row of one autocommit read (can_send's): :meth:`_read`, with a connection
        of the store's own pool taken and given back directly (``pool.connection()`` and
        ``_borrow()`` are two context managers per call: measured, 15-20% of a raw primary-key
        read's time, on top of getconn/putconn).  The retries and the errors are :meth:`_read`'s;
        a host's pool is borrowed as always (its settings are saved and restored)."""
        if not self._owns_pool:
            return self._read(doing, lambda conn: conn.execute(query, params).fetchone())
        pool = self._pool
        for attempt in itertools.count():
            try:
                conn = pool.getconn()
            except PoolClosed as e:
                raise StorageError("the store is closed; create a new PostgresStore") from e
            except PoolTimeout as e:
                raise _pool_timeout(pool, e) from e
            try:
                row: tuple[Any, ...] | None = conn.execute(query, params).fetchone()
                return row
            except psycopg.Error as e:
                if not _retryable(e, conn) or attempt >= self.max_retries:
                    raise _translate(e, doing) from e
            finally:
                pool.putconn(conn)  # as pool.connection() does; a broken one is discarded
            _backoff(attempt)
        raise AssertionError("unreachable")

    def pending_of(self, account: str, contact_id: str) -> list[PendingOptIn]:
        """Every pending opt-in of the contact, oldest first."""

        def run(conn: Conn) -> list[PendingOptIn]:
            rows = conn.execute(
                f"SELECT {_PENDING_SELECT} FROM {self._schema_sql}.pending_opt_ins "
                "WHERE account = %s AND contact_id = %s ORDER BY requested_at, id",
                (account, contact_id),
            ).fetchall()
            decoder = self._decoder()
            return [_pending.pending_of(account, row, decoder, utc) for row in rows]

        return self._read("listing pending opt-ins", run)

    def records_of_addresses(
        self, account: str, address_keys: Sequence[str], addresses: Sequence[str]
    ) -> AddressRecords:
        """Everything kept about some addresses besides contacts and consent (one repeatable
        read transaction, so the four lists are of one moment)."""
        keys, senders = list(dict.fromkeys(address_keys)), list(dict.fromkeys(addresses))
        q = self._queries

        def run(conn: Conn) -> AddressRecords:
            decoder = self._decoder()
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                inbound = conn.execute(q.inbound_of, (account, keys)).fetchall()
                review = conn.execute(q.review_of, (account, senders)).fetchall()
                suppressions = conn.execute(q.suppressions_of, (account, keys)).fetchall()
                sent = conn.execute(q.sent_to, (account, keys)).fetchall()
            return address_records(account, decoder, utc, (inbound, review, suppressions, sent))

        return self._read("reading the records of addresses", run)

    def purge_expired(self, account: str, kind: PurgeKind, before: datetime, limit: int) -> int:
        """Delete at most *limit* expired records of *kind* (one transaction, one statement:
        the oldest first, by an index on the date)."""
        params = {"account": account, "before": before, "limit": limit}
        with self.transaction(account) as tx:  # its errors are translated there
            return tx._conn.execute(self._queries.purge[kind], params).rowcount

    def put_sent(self, account: str, records: Sequence[SentRecord]) -> None:
        """Keep each record as the last sent to its address on its channel from its sender
        (one statement; a record never replaces one sent later)."""
        latest: dict[tuple[str, str, str], SentRecord] = {}
        for record in records:
            key = (record.channel.key, record.address_key, record.sender)
            kept = latest.get(key)
            if kept is None or kept.sent_at <= record.sent_at:
                latest[key] = record
        if not latest:
            return
        kept_records = list(latest.values())
        params = (
            account,
            [r.channel.key for r in kept_records],
            [r.address_key for r in kept_records],
            [r.sender for r in kept_records],
            [r.topic for r in kept_records],
            [r.sent_at for r in kept_records],
        )
        with self.transaction(account) as tx:  # its errors are translated there
            tx._conn.execute(self._queries.put_sent, params, prepare=False)

    def sent_to(
        self, account: str, address_key: str, channels: Sequence[Channel]
    ) -> list[SentRecord]:
        """The records kept for *address_key* on *channels* (one per channel and sender)."""
        keys = [ch.key for ch in channels]

        def run(conn: Conn) -> list[SentRecord]:
            rows = conn.execute(
                self._queries.sent_to_address, (account, address_key, keys)
            ).fetchall()
            decoder = self._decoder()
            return [
                SentRecord(decoder.channel(row[0]), address_key, row[1], row[2], utc(row[3]))
                for row in rows
            ]

        return self._read("reading the messages sent to an address", run)

    def states_of(
        self, account: str, contact_id: str, channels: Sequence[Channel]
    ) -> list[SubscriptionState]:
        """The states of one contact's pairs on *channels*, in that order (one query)."""
        if len(channels) == 2:  # a topic can_send's two layers
            params: dict[str, object] = {
                "account": account,
                "contact": contact_id,
                "one": channels[0].key,
                "two": channels[1].key,
            }
            row = self._point_read(
                "reading subscription states", self._queries.states_of_two, params
            )
            assert row is not None  # one row whatever is recorded
            return [STATE_OR_NEVER[row[0]], STATE_OR_NEVER[row[1]]]
        keys = [ch.key for ch in channels]

        def run(conn: Conn) -> list[SubscriptionState]:
            rows = conn.execute(self._queries.states_of, (account, contact_id, keys)).fetchall()
            found = {key: _STATES[state] for key, state in rows}
            return [found.get(key, SubscriptionState.NEVER_SUBSCRIBED) for key in keys]

        return self._read("reading subscription states", run)

    def subscribed_in_layers(
        self,
        account: str,
        topic_channel: Channel,
        contact_ids: Iterable[str],
        *,
        opt_out_default: bool,
    ) -> set[str]:
        """The ids among *contact_ids* (streamed) sendable on a topic channel by both layers:
        per chunk of ids, the channel's subscribed ones, then among those the topic's subscribed
        (or, with an opt-out default, all but its unsubscribed) ones: two indexed queries."""
        result: set[str] = set()
        iterator = iter(contact_ids)
        base_query = self._queries.subscribed_among
        topic_query = self._queries.among_in_state[
            "unsubscribed" if opt_out_default else "subscribed"
        ]
        base, topic = topic_channel.base.key, topic_channel.key
        while chunk := list(itertools.islice(iterator, _READ_CHUNK)):

            def run(conn: Conn, chunk: list[str] = chunk) -> set[str]:
                row = conn.execute(
                    base_query,
                    (_pack(chunk), account, base, min(chunk), max(chunk)),
                    prepare=_prepare(len(chunk)),
                ).fetchone()
                eligible = [] if row is None else list(row[0])
                if not eligible:
                    return set()
                row = conn.execute(
                    topic_query,
                    (_pack(eligible), account, topic, min(eligible), max(eligible)),
                    prepare=_prepare(len(eligible)),
                ).fetchone()
                found = set() if row is None else set(row[0])
                return set(eligible) - found if opt_out_default else found

            result.update(self._read("filtering an audience", run))
        return result

    def erasures(self, account: str) -> list[ErasureRecord]:
        """The account's erasure records, oldest first."""
        return self._read(
            "reading erasures", lambda conn: self._erasure_queries.read(conn, account)
        )

    def subscriptions_of(self, account: str, contact_id: str) -> list[Subscription]:
        """Every recorded subscription of one contact, ordered by channel key."""

        def run(conn: Conn) -> list[Subscription]:
            rows = conn.execute(self._queries.subscriptions_of, (account, contact_id)).fetchall()
            decoder = self._decoder()
            return [decoder.subscription(account, row) for row in rows]

        return self._read("reading subscriptions", run)

    def subscribed_among(
        self, account: str, channel: Channel, contact_ids: Iterable[str]
    ) -> set[str]:
        """The ids among *contact_ids* (any number, streamed) subscribed on *channel*."""
        result: set[str] = set()
        iterator = iter(contact_ids)
        query = self._queries.subscribed_among
        key = channel.key
        while chunk := list(itertools.islice(iterator, _READ_CHUNK)):

            def run(conn: Conn, chunk: list[str] = chunk) -> list[str]:
                row = conn.execute(
                    query,
                    (_pack(chunk), account, key, min(chunk), max(chunk)),
                    prepare=_prepare(len(chunk)),
                ).fetchone()
                return [] if row is None else list(row[0])

            result.update(self._read("filtering an audience", run))
        return result

    def list_subscriptions(
        self, account: str, where: SubscriptionFilter, *, after: str | None, limit: int
    ) -> list[Subscription]:
        """Subscriptions matching *where*, ordered by contact id, starting after *after*."""
        query = self._queries.list_subscriptions.get(where.state)
        if query is None:
            return []
        params = {
            "account": account,
            "channel": where.channel.key,
            "after": "" if after is None else after,
            "source": None if where.source is None else where.source.value,
            "reason": where.reason,
            "limit": limit,
        }

        def run(conn: Conn) -> list[Subscription]:
            rows = conn.execute(query, params).fetchall()
            decoder = self._decoder()
            return [decoder.subscription(account, row) for row in rows]

        return self._read("listing subscriptions", run)

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

        The events are those committed when this is called; they are fetched a page at a time.
        """
        query = self._queries.events[(contact_id is not None, channel is not None)]

        def bound(conn: Conn) -> int:
            row = conn.execute(self._queries.last_sequence, (account,)).fetchone()
            return 0 if row is None else int(row[0])

        # Fixing the upper bound now gives the memory store's snapshot semantics; every event up
        # to it is committed, because sequences are handed out in commit order.
        upto = self._read("reading events", bound)
        params: dict[str, Any] = {
            "account": account,
            "contact_id": contact_id,
            "channel": None if channel is None else channel.key,
            "after": -1 if after is None else after,
            "upto": upto,
        }
        return self._event_pages(account, query, params, limit)

    def _event_pages(
        self, account: str, query: str, params: dict[str, Any], limit: int | None
    ) -> Iterator[ConsentEvent]:
        remaining = limit
        while remaining is None or remaining > 0:
            page_size = _EVENT_PAGE if remaining is None else min(_EVENT_PAGE, remaining)
            params["limit"] = page_size

            def run(conn: Conn) -> list[tuple[Any, ...]]:
                return conn.execute(query, params).fetchall()

            rows = self._read("reading events", run)
            decoder = self._decoder()
            for row in rows:
                yield decoder.event(account, row)
            if len(rows) < page_size:
                return
            params["after"] = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def totals_at(
        self, account: str, instants: Sequence[datetime]
    ) -> list[dict[tuple[Channel, SubscriptionState], int]]:
        """For each instant, the number of pairs per (channel, state) given every event with
        ``occurred_at < instant``: whole hours from the roll-ups, the last partial hour counted
        from the events (see :mod:`consentkit.storage._trend_counts`)."""
        return _trend_counts.totals_at(
            instants, self._trend_reads(account, "computing totals"), self._decoder().channel
        )

    def transition_counts(
        self, account: str, boundaries: Sequence[datetime]
    ) -> list[dict[tuple[Channel, Transition], int]]:
        """For each interval ``[boundaries[i], boundaries[i+1])`` the number of events per
        (channel, transition) whose ``occurred_at`` falls in it: whole hours from the roll-ups,
        partial hours at either end counted from the events."""
        return _trend_counts.transition_counts(
            boundaries, self._trend_reads(account, "counting transitions"), self._decoder().channel
        )

    def _trend_reads(self, account: str, doing: str) -> _trend_counts.Read:
        """The two reads of the trend counting, on one connection: one statement each, every
        range counted by its own LATERAL aggregate (see _Queries)."""

        def read(
            hours: list[_trend_counts.HourRange], times: list[_trend_counts.TimeRange]
        ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            def run(conn: Conn) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
                rollups: list[tuple[Any, ...]] = []
                events: list[tuple[Any, ...]] = []
                if hours:
                    rollups = conn.execute(
                        self._queries.rollups_between,
                        (*(list(column) for column in zip(*hours, strict=True)), account),
                        prepare=False,
                    ).fetchall()
                if times:
                    events = conn.execute(
                        self._queries.events_between,
                        (*(list(column) for column in zip(*times, strict=True)), account),
                        prepare=False,
                    ).fetchall()
                return rollups, events

            return self._read(doing, run)

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
        position *after*; only open ones unless *include_decided*."""
        query = self._queries.list_review_items[(include_decided, after is not None)]
        params: dict[str, Any] = {"account": account, "limit": limit}
        if after is not None:
            params["after_at"], params["after_id"] = after

        def run(conn: Conn) -> list[ReviewItem]:
            rows = conn.execute(query, params).fetchall()
            decoder = self._decoder()
            return [decoder.review_item(account, row) for row in rows]

        return self._read("listing review items", run)

    def close(self) -> None:
        """Close the pool if the store opened it (a pool passed in stays open)."""
        if self._owns_pool:
            self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
