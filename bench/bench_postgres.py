"""How far is consentkit on PostgreSQL from the floor: raw psycopg doing the same work set-based?

Run from the repository root against a scratch database (``make bench`` runs the first)::

    PYTHONPATH=src .venv/bin/python bench/bench_postgres.py \\
        --dsn postgresql://postgres@127.0.0.1:5432/test --contacts 100000
    PYTHONPATH=src .venv/bin/python bench/bench_postgres.py \\
        --dsn postgresql://postgres@127.0.0.1:5432/test --contacts 1000000   # many minutes
    PYTHONPATH=src .venv/bin/python bench/bench_postgres.py --dsn ... --quick  # a smoke run

``--dsn`` defaults to ``$CONSENTKIT_TEST_POSTGRES_DSN``.  Every schema the bench creates
(``ck_bench_*``) is dropped at the end, also after a failure (``--keep`` keeps them).

Set-up: one schema is built through :class:`~consentkit.service.ConsentService` on a
:class:`~consentkit.storage.postgres.PostgresStore` (``--contacts`` N contacts with a phone number
each, every even one opted in on SMS with evidence) and copied table by table (``LIKE ...
INCLUDING ALL``: the same columns, constraints and indexes) into a second schema for the raw
floor; both are vacuumed and analysed, and analysed again before every pass of a write figure.
Both sides run single-threaded at READ COMMITTED with the server's default durability
(``synchronous_commit``), one transaction per call; a ``CHECKPOINT`` before every timed write
keeps either side from paying for the other's dirty pages (so each timed write also pays for the
full-page images of the pages it touches first; ``--no-checkpoint`` leaves that to chance).  The
raw session has ``jit = off``: its one plan over every pair passes ``jit_above_cost`` and
compiling it took longer (~0.5 s at 100k pairs) than it saved.

The floor (issue 14): ids go into a temporary table with ``COPY``; then one statement does the
rest inside the database, with data-modifying CTEs: the current state of every pair from the
join (and the existence of its contact), the state with one ``UPDATE ... FROM`` checking each
version (the optimistic check of the store's writes: a pair changed meanwhile makes the count
come up short and the call roll back) plus one ``INSERT ... SELECT ... ON CONFLICT`` for absent
pairs, the events with one ``INSERT ... SELECT`` numbered from the account's counter row (dense
sequences in commit order, as the store's), and the roll-up with one grouped ``INSERT ... SELECT
... ON CONFLICT``.  No Python object per pair; the raw side trusts its input to be distinct and the
policy's answer to be the default one (an admin may opt in never-subscribed pairs and unsubscribe
anything), which the store must work out.  Figures, in order, each the best of several passes
with the two sides taking turns (and turns going first):

1. import: ``upsert_contacts`` of N new contacts with a phone each.  Raw: the ids and numbers
   by ``COPY``, the account's address lock (the store's exclusive lock for large imports, so an
   inbound STOP and the import meet), then one statement: the contacts, the address index and the
   suppression look-up of the numbers as one join.
2. opt-in of those N contacts on SMS with evidence (``details=False``).
3. bulk unsubscribe of N/2 of them (subscribed pairs) on SMS with ``details=True`` (the changed
   pairs listed, the default until issue 14) and ``details=False``.  Raw: the same set-based
   shape (counts only, either way).
4. ``can_send`` point lookups of random contacts.  Raw: one primary-key SELECT each.
5. the audience filter over every base contact id.  Raw: the same indexed ``= ANY`` query per
   chunk of 20,000 ids, aggregated to one array per chunk.
6. ``handle_inbound`` of a STOP from one subscribed contact's number (the default opt-out scope:
   SMS, MMS and RCS, so three pairs and three suppressions), one transaction per message.  Raw: a
   pipeline of BEGIN, the address lock (shared account lock and the number's own, one statement),
   one statement for the state, events, roll-up, suppressions and the inbound record (built in
   SQL; its key is the redelivery check), then COMMIT: two round trips, prepared after the first
   few messages.
7. peak memory of a bulk unsubscribe of 100k and of 1M pairs (``--memory-sizes``), each run in a
   fresh child process: the growth of the peak RSS (``/proc/self/status`` VmHWM after, reset
   first, minus VmRSS before) and, in a second run of the child, the tracemalloc peak; the ids are
   streamed, so input is not counted.  Store: ``details=True`` and ``details=False``; raw: the
   floor above.

After the writes the two schemas are compared (rows per state, events per kind, roll-up sums,
suppressions, inbound records): the raw side must have written what the store wrote.  Targets
(issue 14): writes and ``handle_inbound`` <= 1.5x, ``can_send`` <= 1.5x, the audience filter <=
1.1x, and a 1M-pair default call's (``details=False``) peak within 1.2x of a 100k one's (a
detailed result lists every pair: its peak is shown, not judged).  ``--profile`` prints, after the
table, a cProfile of one more import, opt-in and unsubscribe (``details=True``) of N pairs through
the store.

The raw import does what new contacts need (no old addresses to remove).  To measure a given
commit without touching the working tree, run the bench against an export of it::

    mkdir /tmp/ck-before && git archive <commit> src | tar -x -C /tmp/ck-before
    PYTHONPATH=/tmp/ck-before/src .venv/bin/python bench/bench_postgres.py --dsn ...
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from _common import (
    ALL_MEMORY_CHANNELS,
    MEMORY_CHANNELS,
    MEMORY_KINDS,
    STOP_GROUP,
    Memory,
    Row,
    alternate,
    child_report,
    code_under_test,
    contact_id,
    exit_on_sigterm,
    ids,
    import_id,
    import_phone,
    is_stop,
    phone,
    print_summary,
    profile,
    run_child,
)

from consentkit.channels import SMS
from consentkit.inbound import InboundMessage, InboundOutcome
from consentkit.model import Actor, Contact, Evidence
from consentkit.service import ConsentService
from consentkit.storage.postgres import PostgresStore

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("import", "Yes, text me offers. Reply STOP to stop.", "v1")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)
TABLES = (
    "accounts",
    "contacts",
    "contact_addresses",
    "subscriptions",
    "events",
    "hourly_changes",
    "inbound_messages",
    "suppressions",
    "review_items",
    "address_departures",
)
# The raw side's advisory locks: (namespace, key) pairs of its own, like the store's.
ADDRESSES_LOCK = 0x7261
ADDRESS_LOCK = 0x7262


def build(dsn: str, schema: str, raw_schema: str, contacts: int) -> None:
    """Fill *schema* through the service (*contacts* contacts with a phone number each, the even
    ones opted in on SMS), then copy it into *raw_schema* for the floor."""
    with PostgresStore(dsn, schema=schema) as store:
        service = ConsentService(store)
        service.upsert_contacts(
            ADMIN, (Contact(ACCOUNT, contact_id(n), phone=phone(n)) for n in range(contacts))
        )
        evens = (contact_id(n) for n in range(0, contacts, 2))
        service.opt_in(ADMIN, evens, [SMS], evidence=EVIDENCE, details=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{raw_schema}"')
        for table in TABLES:
            conn.execute(
                f'CREATE TABLE "{raw_schema}".{table} (LIKE "{schema}".{table} INCLUDING ALL)'
            )
            conn.execute(
                f'INSERT INTO "{raw_schema}".{table} OVERRIDING SYSTEM VALUE '
                f'SELECT * FROM "{schema}".{table}'
            )
        for name in (schema, raw_schema):
            for table in TABLES:
                conn.execute(f'VACUUM (ANALYZE) "{name}".{table}')


def analyze(dsn: str, *schemas: str) -> None:
    """Refresh the planner's statistics of the bench tables (the writes grow them)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in schemas:
            for table in TABLES:
                conn.execute(f'ANALYZE "{name}".{table}')


def drop(dsn: str, *schemas: str) -> None:
    """Drop the bench schemas."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def checkpoint(dsn: str) -> None:
    """Flush dirty pages now (needs superuser or pg_checkpoint; skipped when not allowed)."""
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


# ---------------------------------------------------------------------------- the raw floor

_EVENT_COLUMNS = (
    "account, sequence, contact_id, channel, previous_state, new_state, actor_kind, actor_id, "
    "actor_roles, source, occurred_at, recorded_at, justification_reason, justification_note, "
    "evidence, reason, inbound_message_id, batch_id"
)
_SUBSCRIPTION_COLUMNS = (
    "account, contact_id, channel, state, version, updated_at, changed_by, source, reason, "
    "opted_out_by, opted_out_via, last_opt_out_at"
)


def _queries(s: str) -> dict[str, str]:
    """The floor's statements on schema *s* (quoted)."""

    # A pair already unsubscribed keeps its state, version and last change, but records the
    # request: the origin joins its sorted set of origins, last_opt_out_at moves forward (the
    # store's note_opt_outs).  *pairs* names the CTE of the pairs, *channel* their channel.
    def noted(pairs: str, channel: str) -> str:
        return f"""
        noted AS (
            UPDATE {s}.subscriptions s
            SET opted_out_by = (
                    SELECT string_agg(DISTINCT o.origin, ',' ORDER BY o.origin)
                    FROM unnest(string_to_array(s.opted_out_by, ',') || %(origin)s::text)
                        AS o(origin)
                ),
                last_opt_out_at = GREATEST(s.last_opt_out_at, %(at)s::timestamptz)
            FROM {pairs} p
            WHERE p.state = 'unsubscribed' AND s.account = %(account)s
                AND s.contact_id = p.contact_id AND s.channel = {channel}
        ),"""

    # The writes shared by the bulk calls and the inbound STOP, from the CTE w of the pairs that
    # change (contact_id, channel, previous, version, ord): the version-checked UPDATE, the INSERT
    # of absent pairs, the reserved sequences, the events and the grouped roll-up.
    def writes(channel: str, actor_id: str) -> str:
        return f"""
        updated AS (
            UPDATE {s}.subscriptions s
            SET state = %(target)s, version = s.version + 1, updated_at = %(at)s,
                changed_by = %(by)s, source = %(source)s, reason = %(reason)s,
                opted_out_by = %(origin)s, opted_out_via = %(via)s,
                last_opt_out_at = GREATEST(s.last_opt_out_at, %(opt_out_at)s::timestamptz)
            FROM w
            WHERE w.version IS NOT NULL AND s.account = %(account)s
                AND s.contact_id = w.contact_id AND s.channel = {channel}
                AND s.version = w.version
            RETURNING 1
        ),
        inserted AS (
            INSERT INTO {s}.subscriptions ({_SUBSCRIPTION_COLUMNS})
            SELECT %(account)s, w.contact_id, {channel}, %(target)s, 1, %(at)s, %(by)s,
                %(source)s, %(reason)s, %(origin)s, %(via)s, %(opt_out_at)s::timestamptz
            FROM w WHERE w.version IS NULL
            ON CONFLICT DO NOTHING
            RETURNING 1
        ),
        reserved AS (
            INSERT INTO {s}.accounts AS a (account, last_sequence)
            SELECT %(account)s, count(*) FROM w
            ON CONFLICT (account)
            DO UPDATE SET last_sequence = a.last_sequence + excluded.last_sequence
            RETURNING last_sequence
        ),
        appended AS (
            INSERT INTO {s}.events ({_EVENT_COLUMNS})
            SELECT %(account)s, r.last_sequence - (SELECT count(*) FROM w) + w.ord, w.contact_id,
                {channel}, w.previous, %(target)s, %(by)s, {actor_id}, '{{}}', %(source)s,
                %(at)s, %(recorded)s, NULL, NULL, %(evidence)s::jsonb, %(reason)s,
                %(message)s, %(batch)s
            FROM w CROSS JOIN reserved r
        ),
        rolled AS (
            INSERT INTO {s}.hourly_changes AS h
                (account, hour, channel, previous_state, new_state, events)
            SELECT %(account)s, %(hour)s, {channel}, w.previous, %(target)s, count(*)
            FROM w GROUP BY {channel}, w.previous
            ON CONFLICT (account, hour, channel, previous_state, new_state)
            DO UPDATE SET events = h.events + excluded.events
        )"""

    changes = {
        "subscribed": "coalesce(p.state, 'never_subscribed') = 'never_subscribed'",
        "unsubscribed": "p.state IS DISTINCT FROM 'unsubscribed'",
    }
    queries = {
        "can_send": f"""
            SELECT state FROM {s}.subscriptions
            WHERE account = %s AND contact_id = %s AND channel = %s""",
        "audience": f"""
            SELECT coalesce(array_agg(contact_id), '{{}}') FROM {s}.subscriptions
            WHERE account = %s AND channel = 'sms' AND state = 'subscribed'
                AND contact_id = ANY(%b)""",
        "import": f"""
            WITH t AS MATERIALIZED (
                SELECT contact_id, phone, 'phone:' || phone AS address_key FROM bench_contacts
            ),
            saved AS (
                INSERT INTO {s}.contacts AS c (account, contact_id, phone)
                SELECT %(account)s, contact_id, phone FROM t
                ON CONFLICT (account, contact_id)
                DO UPDATE SET phone = coalesce(excluded.phone, c.phone)
            ),
            indexed AS (
                INSERT INTO {s}.contact_addresses (account, address_key, contact_id)
                SELECT %(account)s, address_key, contact_id FROM t
                ON CONFLICT DO NOTHING
            )
            SELECT count(*) FROM t
            JOIN {s}.suppressions x
                ON x.account = %(account)s AND x.address_key = t.address_key AND x.active""",
        "lock_all_addresses": "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
        "lock_address": (
            "SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s)), "
            "pg_advisory_xact_lock(%s, hashtext(%s))"
        ),
        "stop": f"""
            WITH owners AS (
                SELECT contact_id FROM {s}.contact_addresses
                WHERE account = %(account)s AND address_key = %(via)s
                UNION
                SELECT contact_id FROM {s}.address_departures
                WHERE account = %(account)s AND address_key = %(via)s
                    AND left_at >= %(at)s::timestamptz
            ),
            p AS MATERIALIZED (
                SELECT o.contact_id, g.channel, g.pos, s.state, s.version
                FROM owners o
                CROSS JOIN unnest(%(group)s::text[]) WITH ORDINALITY AS g(channel, pos)
                LEFT JOIN {s}.subscriptions s ON s.account = %(account)s
                    AND s.contact_id = o.contact_id AND s.channel = g.channel
                WHERE NOT coalesce(s.state = 'subscribed' AND s.changed_by = 'contact'
                    AND s.updated_at > %(at)s::timestamptz, false)
            ),
            w AS MATERIALIZED (
                SELECT contact_id, channel, coalesce(state, 'never_subscribed') AS previous,
                    version, row_number() OVER (ORDER BY contact_id, pos) AS ord
                FROM p WHERE state IS DISTINCT FROM 'unsubscribed'
            ),
            {noted("p", "p.channel")}
            {writes("w.channel", "w.contact_id")},
            suppressed AS (
                INSERT INTO {s}.suppressions AS x (account, address_key, channel, occurred_at,
                    source, inbound_message_id, active)
                SELECT %(account)s, %(via)s, g.channel, %(at)s, %(source)s, %(message)s, true
                FROM unnest(%(group)s::text[]) AS g(channel)
                ON CONFLICT (account, address_key, channel) DO UPDATE
                SET occurred_at = excluded.occurred_at, source = excluded.source,
                    inbound_message_id = excluded.inbound_message_id, active = excluded.active
                WHERE excluded.occurred_at > x.occurred_at
                    OR (excluded.occurred_at = x.occurred_at AND excluded.active
                        AND NOT x.active)
            ),
            handled AS (
                INSERT INTO {s}.inbound_messages (account, channel, message_id, body_sha256,
                    result)
                SELECT %(account)s, 'sms', %(message)s, %(digest)s, json_build_object(
                    'account', %(account)s::text, 'message_id', %(message)s::text,
                    'channel', 'sms', 'sender', %(sender)s::text, 'classification', 'opt_out',
                    'keyword', %(keyword)s::text, 'outcome', 'opted_out',
                    'contact_ids', (SELECT coalesce(json_agg(contact_id ORDER BY contact_id),
                        '[]') FROM owners),
                    'channels', to_json(%(group)s::text[]),
                    'changed', (SELECT coalesce(json_agg(json_build_array(contact_id, channel)
                        ORDER BY ord), '[]') FROM w),
                    'reply', %(reply)s::text, 'honor_by', %(at)s::timestamptz,
                    'received_at', %(at)s::timestamptz, 'batch_id', %(batch)s::text,
                    'review_item', NULL, 'provider', NULL, 'verdict', NULL)::text
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM w),
                (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted),
                (SELECT count(*) FROM handled)""",
    }
    for target, change in changes.items():
        queries[target] = f"""
            WITH p AS MATERIALIZED (
                SELECT i.n, i.contact_id, s.state, s.version,
                    EXISTS (SELECT FROM {s}.contacts c
                        WHERE c.account = %(account)s AND c.contact_id = i.contact_id) AS known
                FROM bench_ids i
                LEFT JOIN {s}.subscriptions s ON s.account = %(account)s
                    AND s.contact_id = i.contact_id AND s.channel = %(channel)s
            ),
            w AS MATERIALIZED (
                SELECT contact_id, coalesce(state, 'never_subscribed') AS previous, version,
                    row_number() OVER (ORDER BY n) AS ord
                FROM p WHERE known AND {change}
            ),
            {noted("p", "%(channel)s") if target == "unsubscribed" else ""}
            {writes("%(channel)s", "%(actor_id)s")}
            SELECT (SELECT count(*) FROM p WHERE NOT known), (SELECT count(*) FROM w),
                (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted)"""
    return queries


class Raw:
    """Hand-written psycopg doing the store's work set-based, with nothing in between."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("SET TimeZone TO 'UTC'")
        # The statements of a bulk call are one plan over every pair, whose cost estimate passes
        # jit_above_cost: compiling it took longer (~0.5 s) than running it saves.  The store's
        # statements are planned per chunk and stay under the threshold.
        self.conn.execute("SET jit = off")
        self.schema = schema
        self.q = _queries(f'"{schema}"')
        self._temp = False

    def _temp_tables(self) -> None:
        # Created at the first write, like the store's own temporary table: rows go at COMMIT.
        if self._temp:
            return
        self.conn.execute(
            'CREATE TEMP TABLE bench_ids (n bigint NOT NULL, contact_id text COLLATE "C" '
            "NOT NULL) ON COMMIT DELETE ROWS"
        )
        self.conn.execute(
            'CREATE TEMP TABLE bench_contacts (contact_id text COLLATE "C" NOT NULL, '
            "phone text NOT NULL) ON COMMIT DELETE ROWS"
        )
        self._temp = True

    # ------------------------------------------------------------ reads (as before)

    def can_send(self, cid: str) -> bool:
        """One primary-key lookup of the pair's state."""
        row = self.conn.execute(self.q["can_send"], (ACCOUNT, cid, "sms")).fetchone()
        return row is not None and row[0] == "subscribed"

    def audience(self, contact_ids: Sequence[str]) -> set[str]:
        """The subscribed ids, one indexed query per chunk."""
        result: set[str] = set()
        iterator = iter(contact_ids)
        while chunk := list(itertools.islice(iterator, 20_000)):
            row = self.conn.execute(self.q["audience"], (ACCOUNT, chunk)).fetchone()
            assert row is not None
            result.update(row[0])
        return result

    # ------------------------------------------------------------ writes (the floor)

    def import_contacts(self, rows: Iterable[tuple[str, str]]) -> int:
        """Register contacts ``(id, E.164 number)`` in one transaction; returns how many."""
        self._temp_tables()
        conn = self.conn
        count = 0
        with conn.transaction():
            with conn.cursor().copy("COPY bench_contacts (contact_id, phone) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
            with conn.pipeline():
                conn.execute(
                    self.q["lock_all_addresses"], (ADDRESSES_LOCK, f"{self.schema}:{ACCOUNT}")
                )
                cur = conn.execute(self.q["import"], {"account": ACCOUNT})
            found = cur.fetchone()
            if found is None or found[0]:
                raise RuntimeError("the bench imports no suppressed number")
        return count

    def change(
        self,
        contact_ids: Iterable[str],
        channel: str,
        target: Literal["subscribed", "unsubscribed"],
    ) -> int:
        """Opt in (with the bench's evidence) or unsubscribe *contact_ids* on *channel* as the
        admin, in one transaction; returns the number of changed pairs."""
        self._temp_tables()
        conn = self.conn
        now = datetime.now(UTC)
        subscribing = target == "subscribed"
        params: dict[str, Any] = {
            "account": ACCOUNT,
            "channel": channel,
            "target": target,
            "at": now,
            "recorded": now,
            "hour": (now - EPOCH) // timedelta(hours=1),
            "by": "admin",
            "actor_id": "alice",
            "source": "api" if subscribing else "contacts_page",
            "evidence": evidence_json(EVIDENCE) if subscribing else None,
            "reason": None,
            "message": None,
            "batch": uuid.uuid4().hex,
            "origin": None if subscribing else "admin",
            "via": None,
            "opt_out_at": None if subscribing else now,
        }
        with conn.transaction():
            with conn.cursor().copy("COPY bench_ids (n, contact_id) FROM STDIN") as copy:
                for row in enumerate(contact_ids):
                    copy.write_row(row)
            found = conn.execute(self.q[target], params, prepare=False).fetchone()
            assert found is not None
            unknown, changing, written = found
            if unknown:
                raise LookupError(f"{unknown} unknown contacts")
            if written != changing:
                raise RuntimeError("a pair changed concurrently; nothing was written")
        return int(changing)

    def handle_stop(self, sender: str, body: str, message_id: str, received: datetime) -> int:
        """Handle an inbound SMS from *sender* received at *received*; a STOP unsubscribes every
        contact with the number on the channel group and suppresses the number.  Returns the
        number of changed pairs."""
        if not is_stop(body):
            return 0
        conn = self.conn
        key = f"phone:{sender}"
        now = datetime.now(UTC)
        params: dict[str, Any] = {
            "account": ACCOUNT,
            "group": list(STOP_GROUP),
            "target": "unsubscribed",
            "at": received,
            "recorded": now,
            "hour": (received - EPOCH) // timedelta(hours=1),
            "by": "contact",
            "source": "inbound_keyword",
            "evidence": None,
            "reason": "stop_keyword",
            "message": message_id,
            "batch": uuid.uuid4().hex,
            "origin": "contact",
            "via": key,
            "opt_out_at": received,
            "digest": hashlib.sha256(body.encode()).hexdigest(),
            "sender": sender,
            "keyword": body.strip().lower(),
            "reply": "You have been unsubscribed. Reply START to resubscribe.",
        }
        scope = f"{self.schema}:{ACCOUNT}"
        with conn.pipeline(), conn.transaction():
            conn.execute(self.q["lock_address"], (ADDRESSES_LOCK, scope, ADDRESS_LOCK, scope + key))
            found = conn.execute(self.q["stop"], params).fetchone()
            assert found is not None
            changing, written, handled = found
            if not handled:
                raise RuntimeError(f"message {message_id!r} was handled before")
            if written != changing:
                raise RuntimeError("a pair changed concurrently; nothing was written")
        return int(changing)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def evidence_json(evidence: Evidence) -> str:
    """The evidence document as the store writes it."""
    document = {
        "method": evidence.method,
        "wording": evidence.wording,
        "wording_version": evidence.wording_version,
    }
    return json.dumps(document)


# ---------------------------------------------------------------------------- checks

_FINGERPRINT = {
    "contacts": "SELECT count(*), count(phone) FROM {s}.contacts",
    "contact_addresses": "SELECT count(*) FROM {s}.contact_addresses",
    "subscriptions": (
        "SELECT channel, state, version, changed_by, source, reason, opted_out_by, "
        "opted_out_via IS NULL, last_opt_out_at IS NULL, count(*) FROM {s}.subscriptions "
        "WHERE state <> 'never_subscribed' "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
    ),
    "events": (
        "SELECT channel, previous_state, new_state, actor_kind, actor_id = contact_id, "
        "actor_roles, source, evidence::text, reason, inbound_message_id IS NULL, "
        "occurred_at = recorded_at, count(*), count(DISTINCT batch_id) FROM {s}.events "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
    ),
    "sequences": (
        "SELECT count(*), min(sequence), max(sequence), "
        "(SELECT last_sequence FROM {s}.accounts WHERE account = 'acme') FROM {s}.events"
    ),
    "hourly_changes": (
        "SELECT channel, previous_state, new_state, sum(events) FROM {s}.hourly_changes "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ),
    "suppressions": (
        "SELECT channel, source, active, count(*) FROM {s}.suppressions GROUP BY 1, 2, 3 "
        "ORDER BY 1, 2, 3"
    ),
    "inbound_messages": (
        "SELECT channel, count(*) FROM {s}.inbound_messages GROUP BY 1 ORDER BY 1"
    ),
}


def fingerprint(dsn: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the writes left in *schema*, without ids, times or batch ids."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            name: conn.execute(sql.format(s=f'"{schema}"')).fetchall()
            for name, sql in _FINGERPRINT.items()
        }


def check_same(dsn: str, schema: str, raw_schema: str) -> None:
    """Fail unless the store and the raw floor wrote the same rows."""
    store, raw = fingerprint(dsn, schema), fingerprint(dsn, raw_schema)
    different = [name for name in store if store[name] != raw[name]]
    for name in different:
        print(f"{name} differ:\n  store {store[name]}\n  raw   {raw[name]}", file=sys.stderr)
    if different:
        raise SystemExit("the raw floor did not write what the store wrote")
    print("checked: the store and the raw floor wrote the same rows")


# ---------------------------------------------------------------------------- memory


def build_memory(dsn: str, schema: str, pairs: int) -> None:
    """*pairs* contacts subscribed on every channel of the memory figure: the first through the
    service, the rest copied from it in SQL (only the rows an unsubscribe reads)."""
    first = contact_id(0)
    with PostgresStore(dsn, schema=schema) as store:
        service = ConsentService(store)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, first)])
        service.opt_in(ADMIN, [first], ALL_MEMORY_CHANNELS, evidence=EVIDENCE, details=False)
    s = f'"{schema}"'
    numbers = "generate_series(1, %s) AS g(x)"
    new_id = "'contact-' || lpad(g.x::text, 7, '0')"
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(
                f"INSERT INTO {s}.contacts (account, contact_id, phone, email, handles) "
                f"SELECT account, {new_id}, phone, email, handles "
                f"FROM {numbers} CROSS JOIN {s}.contacts WHERE contact_id = %s",
                (pairs - 1, first),
            )
            conn.execute(
                f"INSERT INTO {s}.subscriptions ({_SUBSCRIPTION_COLUMNS}) "
                f"SELECT account, {new_id}, channel, state, version, updated_at, changed_by, "
                "source, reason, opted_out_by, opted_out_via, last_opt_out_at "
                f"FROM {numbers} CROSS JOIN {s}.subscriptions WHERE contact_id = %s "
                "ORDER BY 2, 3",
                (pairs - 1, first),
            )
        for table in TABLES:
            conn.execute(f"VACUUM (ANALYZE) {s}.{table}")


def memory_child(kind: str, dsn: str, schema: str, pairs: int) -> None:
    """In a child process: one measured bulk unsubscribe of *pairs* pairs per channel of *kind*."""
    rss_channel, traced_channel = MEMORY_CHANNELS[kind]
    if kind == "raw":
        raw = Raw(dsn, schema)
        raw.change([contact_id(0)], "push", "unsubscribed")  # warm up: every statement once
        child_report(
            lambda: raw.change(ids(pairs), rss_channel, "unsubscribed"),
            lambda: raw.change(ids(pairs), traced_channel, "unsubscribed"),
        )
        raw.close()
        return
    with PostgresStore(dsn, schema=schema, create_schema=False) as store:
        service = ConsentService(store)
        details = kind == "store-details"
        service.unsubscribe(ADMIN, [contact_id(0)], ["push"], details=details)  # warm up

        def run(channel: str) -> None:
            result = service.unsubscribe(ADMIN, ids(pairs), [channel], details=details)
            assert result.changed_count == pairs

        child_report(lambda: run(rss_channel), lambda: run(traced_channel))


def measure_memory(dsn: str, prefix: str, sizes: tuple[int, int]) -> list[Memory]:
    """Figure 7: the memory children of every kind at both sizes, one schema per size."""
    peaks: dict[str, list[dict[str, int]]] = {kind: [] for kind in MEMORY_KINDS}
    for size in sizes:
        schema = f"{prefix}_mem_{size}"
        try:
            started = time.perf_counter()
            build_memory(dsn, schema, size)
            print(f"memory set-up: {size:,} contacts in {time.perf_counter() - started:.1f} s")
            for kind in MEMORY_KINDS:
                checkpoint(dsn)
                peaks[kind].append(
                    run_child(
                        [
                            "--memory-child",
                            kind,
                            "--dsn",
                            dsn,
                            "--memory-schema",
                            schema,
                            "--pairs",
                            str(size),
                        ]
                    )
                )
        finally:
            drop(dsn, schema)
    return [
        Memory(
            kind,
            sizes,
            (found[0]["traced"], found[1]["traced"]),
            (found[0]["rss"], found[1]["rss"]),
        )
        for kind, found in peaks.items()
    ]


# ---------------------------------------------------------------------------- the run


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("CONSENTKIT_TEST_POSTGRES_DSN"),
        help="a scratch database (default: $CONSENTKIT_TEST_POSTGRES_DSN)",
    )
    parser.add_argument("--contacts", type=int, default=None, help="N (default 100,000)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (N = 5,000)")
    parser.add_argument("--lookups", type=int, default=None, help="can_send calls per pass")
    parser.add_argument("--messages", type=int, default=None, help="inbound STOPs per pass")
    parser.add_argument("--repeats", type=int, default=5, help="passes of reads and inbound")
    parser.add_argument("--write-repeats", type=int, default=3, help="passes of bulk writes")
    parser.add_argument(
        "--memory-sizes",
        default=None,
        help="the two bulk sizes of the memory figure (default 100000,1000000; 0 skips it)",
    )
    parser.add_argument("--profile", action="store_true", help="profile the store's bulk paths")
    parser.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="no CHECKPOINT before each timed write (full-page images then fall where they may)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench schemas")
    parser.add_argument("--memory-child", choices=MEMORY_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--memory-schema", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set CONSENTKIT_TEST_POSTGRES_DSN (a scratch database)")
    if args.memory_child:
        return args
    args.contacts = args.contacts or (5_000 if args.quick else 100_000)
    args.lookups = args.lookups or (2_000 if args.quick else 20_000)
    args.messages = args.messages or (50 if args.quick else 200)
    sizes = args.memory_sizes or ("10000,100000" if args.quick else "100000,1000000")
    args.memory_sizes = tuple(int(size) for size in sizes.split(",")) if sizes != "0" else ()
    if args.memory_sizes and len(args.memory_sizes) != 2:
        parser.error("--memory-sizes takes two sizes, e.g. 100000,1000000")
    if args.contacts < 1000 or args.contacts % 2:
        parser.error("--contacts must be an even number of at least 1,000")
    if args.repeats * args.messages > args.contacts // 2:
        parser.error("not enough subscribed contacts for the inbound passes; raise --contacts")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Build, measure, print the table; exit status 1 when a target is missed."""
    args = parse(argv)
    dsn: str = args.dsn
    if args.memory_child:
        memory_child(args.memory_child, dsn, args.memory_schema, args.pairs)
        return 0
    exit_on_sigterm()
    n = args.contacts
    half = n // 2
    repeats = max(1, args.repeats)
    write_repeats = max(1, args.write_repeats)
    prefix = f"ck_bench_{uuid.uuid4().hex[:8]}"
    schema, raw_schema = prefix, f"{prefix}_raw"
    try:
        with psycopg.connect(dsn) as conn:
            version = conn.info.server_version
            durability = conn.execute("SHOW synchronous_commit").fetchone()
        print(
            f"Python {platform.python_version()}, PostgreSQL {version // 10000}."
            f"{version % 10000}, psycopg {psycopg.__version__}, {os.cpu_count()} CPUs, "
            f"synchronous_commit={durability[0] if durability else '?'}, "
            f"schemas {schema} / {raw_schema}"
        )
        print(code_under_test())
        print(
            f"N = {n:,} contacts; writes best of {write_repeats}, reads and inbound best of "
            f"{repeats} passes, the sides alternating"
        )
        started = time.perf_counter()
        build(dsn, schema, raw_schema, n)
        print(f"set-up: {n:,} contacts built in {time.perf_counter() - started:.1f} s")

        store = PostgresStore(dsn, schema=schema, create_schema=False)
        service = ConsentService(store)
        raw = Raw(dsn, raw_schema)
        rows: list[Row] = []

        def settle() -> None:
            if not args.no_checkpoint:
                checkpoint(dsn)

        def refresh(_: int) -> None:
            analyze(dsn, schema, raw_schema)

        # 1. import: N new contacts with a phone each, a new set per pass.
        contacts_in: list[Contact] = []
        rows_in: list[tuple[str, str]] = []

        def prepare_import(index: int) -> None:
            refresh(index)
            contacts_in[:] = [
                Contact(ACCOUNT, import_id(index, k), phone=import_phone(index, k))
                for k in range(n)
            ]
            rows_in[:] = [(c.id, c.phone or "") for c in contacts_in]

        def store_import(_: int) -> None:
            result = service.upsert_contacts(ADMIN, contacts_in)
            assert result.created == n

        def raw_import(_: int) -> None:
            assert raw.import_contacts(rows_in) == n

        rows.append(
            (
                f"import of {n:,} contacts (phone each)",
                *alternate(write_repeats, store_import, raw_import, settle, prepare_import),
                1.5,
            )
        )
        contacts_in.clear()
        rows_in.clear()

        # 2. opt-in of every imported contact of each pass (never subscribed) on SMS.
        imported = [[import_id(index, k) for k in range(n)] for index in range(write_repeats)]

        def store_opt_in(index: int) -> None:
            result = service.opt_in(ADMIN, imported[index], [SMS], evidence=EVIDENCE, details=False)
            assert result.changed_count == n

        def raw_opt_in(index: int) -> None:
            assert raw.change(imported[index], "sms", "subscribed") == n

        rows.append(
            (
                f"opt-in of {n:,} pairs with evidence",
                *alternate(write_repeats, store_opt_in, raw_opt_in, settle, refresh),
                1.5,
            )
        )

        # 3. bulk unsubscribe of half of them, the default call and details=False.
        def store_unsubscribe(index: int) -> None:
            result = service.unsubscribe(ADMIN, imported[index][:half], [SMS], details=True)
            assert result.changed_count == half

        def store_unsubscribe_counts(index: int) -> None:
            result = service.unsubscribe(ADMIN, imported[index][half:], [SMS], details=False)
            assert result.changed_count == half

        def raw_unsubscribe(index: int) -> None:
            assert raw.change(imported[index][:half], "sms", "unsubscribed") == half

        def raw_unsubscribe_counts(index: int) -> None:
            assert raw.change(imported[index][half:], "sms", "unsubscribed") == half

        rows.append(
            (
                f"unsubscribe {half:,} pairs (details=True)",
                *alternate(write_repeats, store_unsubscribe, raw_unsubscribe, settle, refresh),
                1.5,
            )
        )
        rows.append(
            (
                f"unsubscribe {half:,} pairs (details=False)",
                *alternate(
                    write_repeats, store_unsubscribe_counts, raw_unsubscribe_counts, settle, refresh
                ),
                1.5,
            )
        )
        imported.clear()

        # 4. can_send point lookups of random base contacts.
        rng = random.Random(7)
        probe = [contact_id(rng.randrange(n)) for _ in range(args.lookups)]
        assert sum(service.can_send(ADMIN, c, SMS) for c in probe[:500]) == sum(
            raw.can_send(c) for c in probe[:500]
        )

        def store_lookups(_: int) -> None:
            for cid in probe:
                service.can_send(ADMIN, cid, SMS)

        def raw_lookups(_: int) -> None:
            for cid in probe:
                raw.can_send(cid)

        rows.append(
            (f"can_send x {args.lookups:,}", *alternate(repeats, store_lookups, raw_lookups), 1.5)
        )

        # 5. the audience filter over every base contact id.
        everyone = [contact_id(k) for k in range(n)]
        assert service.audience(ADMIN, SMS, everyone) == raw.audience(everyone)
        rows.append(
            (
                f"audience over {n:,} ids",
                *alternate(
                    repeats,
                    lambda _: service.audience(ADMIN, SMS, everyone),
                    lambda _: raw.audience(everyone),
                ),
                1.1,
            )
        )
        everyone.clear()

        # 6. handle_inbound of a STOP: a fresh subscribed (even) base contact per message.
        messages = args.messages

        def senders(index: int) -> list[str]:
            return [phone(2 * (index * messages + k)) for k in range(messages)]

        def store_inbound(index: int) -> None:
            for k, sender in enumerate(senders(index)):
                result = service.handle_inbound(
                    InboundMessage(
                        ACCOUNT, SMS, sender, "STOP", f"stop-{index}-{k}", datetime.now(UTC)
                    )
                )
                assert result.outcome is InboundOutcome.OPTED_OUT
                assert len(result.changed) == len(STOP_GROUP)

        def raw_inbound(index: int) -> None:
            for k, sender in enumerate(senders(index)):
                changed = raw.handle_stop(sender, "STOP", f"stop-{index}-{k}", datetime.now(UTC))
                assert changed == len(STOP_GROUP)

        rows.append(
            (
                f"handle_inbound STOP x {messages:,}",
                *alternate(repeats, store_inbound, raw_inbound, settle),
                1.5,
            )
        )
        raw.close()
        check_same(dsn, schema, raw_schema)
        if args.profile:
            run_profiles(service, n, write_repeats)
        store.close()
        if not args.keep:
            drop(dsn, schema, raw_schema)

        # 7. peak memory of a bulk unsubscribe, each run in a child process of its own.
        memory = measure_memory(dsn, prefix, args.memory_sizes) if args.memory_sizes else []
        missed = print_summary(
            f"PostgreSQL {version // 10000}.{version % 10000}, N = {n:,}", rows, memory
        )
        return 1 if missed else 0
    finally:
        if args.keep:
            print(f"kept schemas {schema} and {raw_schema}")
        else:
            drop(dsn, schema, raw_schema)


def run_profiles(service: ConsentService, n: int, batch: int) -> None:
    """cProfile of one more import, opt-in and default unsubscribe of N pairs via the store."""
    contacts = [
        Contact(ACCOUNT, import_id(batch, k), phone=import_phone(batch, k)) for k in range(n)
    ]
    profile(
        f"upsert_contacts of {n:,} new contacts",
        lambda: service.upsert_contacts(ADMIN, contacts),
    )
    contacts.clear()
    chosen = [import_id(batch, k) for k in range(n)]
    profile(
        f"opt_in of {n:,} pairs (details=False)",
        lambda: service.opt_in(ADMIN, chosen, [SMS], evidence=EVIDENCE, details=False),
    )
    profile(
        f"unsubscribe of {n:,} pairs (details=True)",
        lambda: service.unsubscribe(ADMIN, chosen, [SMS], details=True),
    )


if __name__ == "__main__":
    sys.exit(main())
