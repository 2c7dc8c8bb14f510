"""How far is consentkit on SQLite from the floor: raw ``sqlite3`` doing the same work set-based?

Run from the repository root (``make bench`` runs the first)::

    PYTHONPATH=src .venv/bin/python bench/bench_sqlite.py --contacts 100000
    PYTHONPATH=src .venv/bin/python bench/bench_sqlite.py --contacts 1000000   # many minutes
    PYTHONPATH=src .venv/bin/python bench/bench_sqlite.py --quick              # a smoke run

Set-up: one database is built through :class:`~consentkit.service.ConsentService` on a
:class:`~consentkit.storage.sqlite.SQLiteStore` (``--contacts`` N contacts with a phone number
each, every even one opted in on SMS with evidence), checkpointed and copied.  The store works
on one copy, the raw floor on the other: the same tables, indexes and rows (the store's own
schema), the store's default pragmas (WAL, ``synchronous=FULL``, its cache size, ``temp_store =
MEMORY``) and one ``BEGIN IMMEDIATE`` transaction per call on both sides.

The floor (issue 14): ids go into a temporary table with one ``executemany``; then, inside the
database, one statement per table: events with one ``INSERT ... SELECT`` from the join of the ids
with the current state, the roll-up with one grouped ``INSERT ... SELECT ... ON CONFLICT`` over the
events just appended (a rowid range: the transaction holds the write lock), and the state with
one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (an opt-out of a pair already unsubscribed adds
the origin to its record and moves ``last_opt_out_at``, as the store does).  No
Python object per pair, no per-pair ``executemany``; the raw side trusts its input to be distinct
and the policy's answer to be the default one (an admin may opt in never-subscribed pairs and
unsubscribe anything), which the store must work out.  Figures, in order, each the best of
several passes with the two sides taking turns (and turns going first):

1. import: ``upsert_contacts`` of N new contacts with a phone each.  Raw: the ids and numbers into
   a temporary table, the suppression look-up of the numbers as one join, one ``INSERT ...
   SELECT`` into contacts and one into the address index.
2. opt-in of those N contacts on SMS with evidence (``details=False``).  Raw: the existence check
   as one ``NOT EXISTS`` count, the events (with the evidence document), the roll-up and the state
   rows, one statement each.
3. bulk unsubscribe of N/2 of them (subscribed pairs) on SMS with ``details=True`` (the changed
   pairs listed, the default until issue 14) and ``details=False``.  Raw: the same set-based
   shape (counts only, either way).
4. ``can_send`` point lookups of random contacts.  Raw: one primary-key SELECT each.
5. the audience filter over every base contact id.  Raw: the same indexed ``json_each`` query per
   chunk of ids.
6. ``handle_inbound`` of a STOP from one subscribed contact's number (the default opt-out scope:
   SMS, MMS and RCS, so three pairs and three suppressions), one durable transaction per message.
   Raw: ``BEGIN IMMEDIATE`` (the lock), the events (``RETURNING`` the changed pairs), the roll-up,
   the state upsert, the suppressions and the inbound record, one statement each; the inbound
   record's key is the redelivery check.
7. peak memory of a bulk unsubscribe of 100k and of 1M pairs (``--memory-sizes``), each run in a
   fresh child process: the growth of the peak RSS (``/proc/self/status`` VmHWM after, reset
   first, minus VmRSS before) and, in a second run of the child, the tracemalloc peak; the ids are
   streamed, so input is not counted.  Store: ``details=True`` and ``details=False``; raw: the
   floor above.

After the writes the two databases are compared (rows per state, events per kind, roll-up sums,
suppressions, inbound records): the raw side must have written what the store wrote.  Targets
(issue 14): writes and ``handle_inbound`` <= 1.5x, ``can_send`` <= 1.5x, the audience filter <=
1.1x, and a 1M-pair default call's (``details=False``) peak within 1.2x of a 100k one's (a
detailed result lists every pair: its peak is shown, not judged).  ``--profile`` prints, after the
table, a cProfile of one more import, opt-in and unsubscribe (``details=True``) of N pairs through
the store.

The raw import does what new contacts need (no old addresses to remove).  The raw side's RSS grows
with the number of pairs: with ``temp_store = MEMORY`` (the store's setting) SQLite keeps the
temporary table and the statement journal of each one-statement write in memory (a 300k-pair
unsubscribe grew the process by 181 MB, by 33 MB with ``temp_store = FILE``), so a set-based store
with flat memory has to bound its statements or keep that on file.  To measure a given commit
without touching the working tree, run the bench against an export of it::

    mkdir /tmp/ck-before && git archive <commit> src | tar -x -C /tmp/ck-before
    PYTHONPATH=/tmp/ck-before/src .venv/bin/python bench/bench_sqlite.py --contacts 100000
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

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

from consentkit import SMS, Actor, ConsentService, Contact, Evidence
from consentkit.inbound import InboundMessage, InboundOutcome
from consentkit.model import OptOutOrigin
from consentkit.storage.sqlite import SQLiteStore

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("import", "Yes, text me offers. Reply STOP to stop.", "v1")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
CACHE_KIB = 16_384  # the store's page cache per connection
Synchronous = Literal["FULL", "NORMAL"]


def micros(instant: datetime) -> int:
    """Microseconds since the epoch, the store's time format."""
    return (instant - EPOCH) // timedelta(microseconds=1)


def build(path: Path, contacts: int, synchronous: Synchronous) -> None:
    """Fill *path* through the service: *contacts* contacts with a phone number each, the even
    ones opted in on SMS."""
    store = SQLiteStore(path, synchronous=synchronous)
    service = ConsentService(store)
    service.upsert_contacts(
        ADMIN, (Contact(ACCOUNT, contact_id(n), phone=phone(n)) for n in range(contacts))
    )
    evens = (contact_id(n) for n in range(0, contacts, 2))
    service.opt_in(ADMIN, evens, [SMS], evidence=EVIDENCE, details=False)
    store.close()
    checkpoint(path)


def checkpoint(path: Path) -> None:
    """Move the WAL of *path* into the database and truncate it."""
    conn = sqlite3.connect(path, timeout=30.0)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the raw floor

_EVENT_COLUMNS = (
    "account, contact_id, channel, previous_state, new_state, actor_kind, actor_id, actor_roles, "
    "source, occurred_at, recorded_at, justification_reason, justification_note, evidence, "
    "reason, inbound_message_id, batch_id"
)
_SUBSCRIPTION_COLUMNS = (
    "account, contact_id, channel, state, version, updated_at, changed_by, source, reason, "
    "opted_out_by, opted_out_via, last_opt_out_at"
)
# The origin :origin joins a pair's sorted, comma-joined set of opt-out origins (NULL stays NULL
# when :origin is NULL), as the store's note_opt_outs does.
_ADD_ORIGIN = (
    "nullif(rtrim("
    + " || ".join(
        f"CASE WHEN instr(',' || coalesce(opted_out_by, '') || ',', ',{value},') > 0 "
        f"OR :origin = '{value}' THEN '{value},' ELSE '' END"
        for value in sorted(o.value for o in OptOutOrigin)
    )
    + ", ','), '')"
)
# An opt-out upserts every pair: an absent one is inserted, a changed one moves to unsubscribed
# with a new version, and one already unsubscribed keeps its state, version and last change but
# records the request (the store's note_opt_outs).
_UNSUBSCRIBE_CONFLICT = f"""
    ON CONFLICT (account, contact_id, channel) DO UPDATE SET
        version = CASE WHEN state = 'unsubscribed' THEN version ELSE version + 1 END,
        updated_at = CASE WHEN state = 'unsubscribed' THEN updated_at
            ELSE excluded.updated_at END,
        changed_by = CASE WHEN state = 'unsubscribed' THEN changed_by
            ELSE excluded.changed_by END,
        source = CASE WHEN state = 'unsubscribed' THEN source ELSE excluded.source END,
        reason = CASE WHEN state = 'unsubscribed' THEN reason ELSE excluded.reason END,
        opted_out_by = CASE WHEN state = 'unsubscribed' THEN {_ADD_ORIGIN}
            ELSE excluded.opted_out_by END,
        opted_out_via = CASE WHEN state = 'unsubscribed' THEN opted_out_via
            ELSE excluded.opted_out_via END,
        last_opt_out_at = max(coalesce(last_opt_out_at, excluded.last_opt_out_at),
            excluded.last_opt_out_at),
        state = 'unsubscribed'"""
# The pairs of one bulk call: the given ids (in the order given) on :channel, with their state.
_BULK_JOIN = """
    FROM temp.bench_ids AS t
    LEFT JOIN subscriptions AS s
        ON s.account = :account AND s.contact_id = t.id AND s.channel = :channel"""
# Which pairs a bulk call changes: an opt-in only never-subscribed ones (it skips unsubscribed
# pairs and leaves subscribed ones), an unsubscribe every pair not unsubscribed yet.
_CHANGES = {
    "subscribed": "s.state IS NULL",
    "unsubscribed": "s.state IS NOT 'unsubscribed'",
}
_BULK_EVENTS = {
    target: f"""
        INSERT INTO events ({_EVENT_COLUMNS})
        SELECT :account, t.id, :channel, coalesce(s.state, 'never_subscribed'), :target,
            :actor_kind, :actor_id, NULL, :source, :at, :at, NULL, NULL, :evidence, :reason,
            NULL, :batch
        {_BULK_JOIN}
        WHERE {changes}
        ORDER BY t.rowid"""
    for target, changes in _CHANGES.items()
}
# The roll-up of the events a call just appended: one transaction holds the write lock, so they
# are the rowids from :first to :last (an index range, where joining the ids again probes the state
# table once more per pair).
_ROLLUP = """
    INSERT INTO hourly_changes (account, hour, channel, previous_state, new_state, events)
    SELECT account, :hour, channel, previous_state, new_state, count(*)
    FROM events WHERE rowid BETWEEN :first AND :last
    GROUP BY account, channel, previous_state, new_state
    ON CONFLICT (account, hour, channel, previous_state, new_state)
    DO UPDATE SET events = events + excluded.events"""
_BULK_STATE = {
    # Existing pairs are subscribed (unchanged) or unsubscribed (skipped): only absent ones change.
    "subscribed": f"""
        INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS})
        SELECT :account, t.id, :channel, 'subscribed', 1, :at, :actor_kind, :source, :reason,
            NULL, NULL, NULL
        FROM temp.bench_ids AS t WHERE true
        ON CONFLICT (account, contact_id, channel) DO NOTHING""",
    "unsubscribed": f"""
        INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS})
        SELECT :account, t.id, :channel, 'unsubscribed', 1, :at, :actor_kind, :source, :reason,
            :origin, NULL, :at
        FROM temp.bench_ids AS t WHERE true
        {_UNSUBSCRIBE_CONFLICT}""",
}
_UNKNOWN = """
    SELECT count(*) FROM temp.bench_ids AS t
    WHERE NOT EXISTS (SELECT 1 FROM contacts AS c WHERE c.account = ? AND c.id = t.id)"""
# The pairs an inbound STOP from :key reaches: the contacts that have the address, or had it when
# the message was received, on every channel of the group; a pair the contact subscribed again
# after the message was received already has its answer and is left out.
_STOP_PAIRS = f"""
    WITH owners(contact_id) AS (
        SELECT contact_id FROM contact_addresses WHERE account = :account AND address_key = :key
        UNION
        SELECT contact_id FROM address_departures
        WHERE account = :account AND address_key = :key AND left_at >= :received
    ),
    grp(channel, pos) AS (VALUES {", ".join(f"('{ch}', {i})" for i, ch in enumerate(STOP_GROUP))}),
    pairs AS (
        SELECT o.contact_id, g.channel, g.pos, s.state
        FROM owners AS o CROSS JOIN grp AS g
        LEFT JOIN subscriptions AS s
            ON s.account = :account AND s.contact_id = o.contact_id AND s.channel = g.channel
        WHERE NOT coalesce(s.state = 'subscribed' AND s.changed_by = 'contact'
            AND s.updated_at > :received, 0)
    )"""
_STOP_EVENTS = f"""{_STOP_PAIRS}
    INSERT INTO events ({_EVENT_COLUMNS})
    SELECT :account, contact_id, channel, coalesce(state, 'never_subscribed'), 'unsubscribed',
        'contact', contact_id, NULL, 'inbound_keyword', :at, :recorded, NULL, NULL, NULL,
        'stop_keyword', :message, :batch
    FROM pairs WHERE state IS NOT 'unsubscribed'
    ORDER BY contact_id, pos
    RETURNING contact_id, channel"""
_STOP_STATE = f"""{_STOP_PAIRS}
    INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS})
    SELECT :account, contact_id, channel, 'unsubscribed', 1, :at, 'contact', 'inbound_keyword',
        'stop_keyword', :origin, :key, :at
    FROM pairs WHERE true
    {_UNSUBSCRIBE_CONFLICT}"""
_STOP_SUPPRESSIONS = f"""
    INSERT INTO suppressions (account, address_key, channel, occurred_at, source,
        inbound_message_id, active)
    VALUES {
    ", ".join(f"(:account, :key, '{ch}', :at, 'inbound_keyword', :message, 1)" for ch in STOP_GROUP)
}
    ON CONFLICT (account, address_key, channel) DO UPDATE SET
        occurred_at = excluded.occurred_at, source = excluded.source,
        inbound_message_id = excluded.inbound_message_id, active = excluded.active
    WHERE excluded.occurred_at > suppressions.occurred_at
        OR (excluded.occurred_at = suppressions.occurred_at
            AND excluded.active AND NOT suppressions.active)"""


class Raw:
    """Hand-written sqlite3 doing the store's work set-based, with nothing in between."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        for pragma in (
            f"synchronous = {synchronous}",
            f"cache_size = -{CACHE_KIB}",
            "temp_store = MEMORY",
            "journal_size_limit = 67108864",
            "journal_mode = WAL",
        ):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("CREATE TEMP TABLE bench_ids (id TEXT NOT NULL)")
        self.conn.execute(
            "CREATE TEMP TABLE bench_contacts (id TEXT NOT NULL, phone TEXT NOT NULL)"
        )

    # ------------------------------------------------------------ reads (as before)

    def can_send(self, cid: str) -> bool:
        """One primary-key lookup of the pair's state."""
        row = self.conn.execute(
            "SELECT state FROM subscriptions WHERE account = ? AND contact_id = ? AND channel = ?",
            (ACCOUNT, cid, "sms"),
        ).fetchone()
        return row is not None and row[0] == "subscribed"

    def audience(self, contact_ids: Sequence[str]) -> set[str]:
        """The subscribed ids, one indexed json_each query per chunk."""
        result: set[str] = set()
        iterator = iter(contact_ids)
        while chunk := list(itertools.islice(iterator, 10_000)):
            rows = self.conn.execute(
                "SELECT contact_id FROM subscriptions WHERE account = ? AND channel = 'sms' "
                "AND state = 'subscribed' AND contact_id IN (SELECT value FROM json_each(?))",
                (ACCOUNT, json.dumps(chunk)),
            )
            result.update(row[0] for row in rows)
        return result

    # ------------------------------------------------------------ writes (the floor)

    def import_contacts(self, rows: Iterable[tuple[str, str]]) -> int:
        """Register contacts ``(id, E.164 number)`` in one transaction; returns how many."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM temp.bench_contacts")
            conn.executemany("INSERT INTO temp.bench_contacts (id, phone) VALUES (?, ?)", rows)
            suppressed = conn.execute(
                "SELECT t.id, s.channel FROM temp.bench_contacts AS t "
                "JOIN suppressions AS s ON s.account = ? AND s.address_key = 'phone:' || t.phone "
                "WHERE s.active",
                (ACCOUNT,),
            ).fetchall()
            if suppressed:
                raise RuntimeError("the bench imports no suppressed number")
            written = conn.execute(
                "INSERT INTO contacts (account, id, phone, email, handles) "
                "SELECT ?, id, phone, NULL, NULL FROM temp.bench_contacts WHERE true "
                "ON CONFLICT (account, id) DO UPDATE SET phone = coalesce(excluded.phone, phone)",
                (ACCOUNT,),
            ).rowcount
            conn.execute(
                "INSERT INTO contact_addresses (account, address_key, contact_id) "
                "SELECT ?, 'phone:' || phone, id FROM temp.bench_contacts WHERE true "
                "ON CONFLICT DO NOTHING",
                (ACCOUNT,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(written)

    def change(
        self,
        contact_ids: Iterable[str],
        channel: str,
        target: Literal["subscribed", "unsubscribed"],
    ) -> int:
        """Opt in (with the bench's evidence) or unsubscribe *contact_ids* on *channel* as the
        admin, in one transaction; returns the number of changed pairs."""
        conn = self.conn
        now = datetime.now(UTC)
        occurred = micros(now)
        subscribing = target == "subscribed"
        params = {
            "account": ACCOUNT,
            "channel": channel,
            "target": target,
            "at": occurred,
            "hour": occurred // HOUR_US,
            "actor_kind": "admin",
            "actor_id": "alice",
            "source": "api" if subscribing else "contacts_page",
            "evidence": evidence_json(EVIDENCE) if subscribing else None,
            "reason": None,
            "batch": uuid.uuid4().hex,
            "origin": None if subscribing else "admin",
        }
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM temp.bench_ids")
            conn.executemany(
                "INSERT INTO temp.bench_ids (id) VALUES (?)", ((cid,) for cid in contact_ids)
            )
            unknown = conn.execute(_UNKNOWN, (ACCOUNT,)).fetchone()[0]
            if unknown:
                raise LookupError(f"{unknown} unknown contacts")
            appended = conn.execute(_BULK_EVENTS[target], params)
            changed = appended.rowcount
            if changed:
                last = appended.lastrowid
                assert last is not None
                first = last - changed + 1
                conn.execute(_ROLLUP, {"hour": params["hour"], "first": first, "last": last})
            conn.execute(_BULK_STATE[target], params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(changed)

    def handle_stop(self, sender: str, body: str, message_id: str, received: datetime) -> int:
        """Handle an inbound SMS from *sender* received at *received*; a STOP unsubscribes every
        contact with the number on the channel group and suppresses the number.  Returns the
        number of changed pairs."""
        if not is_stop(body):
            return 0
        conn = self.conn
        now = datetime.now(UTC)
        occurred = micros(received)
        key = f"phone:{sender}"
        batch_id = uuid.uuid4().hex
        params = {
            "account": ACCOUNT,
            "key": key,
            "at": occurred,
            "recorded": micros(now),
            "received": occurred,
            "hour": occurred // HOUR_US,
            "message": message_id,
            "batch": batch_id,
            "origin": "contact",
        }
        conn.execute("BEGIN IMMEDIATE")
        try:
            appended = conn.execute(_STOP_EVENTS, params)
            changed = appended.fetchall()
            if changed:
                last = appended.lastrowid
                assert last is not None
                conn.execute(
                    _ROLLUP,
                    {"hour": params["hour"], "first": last - len(changed) + 1, "last": last},
                )
            conn.execute(_STOP_STATE, params)
            conn.execute(_STOP_SUPPRESSIONS, params)
            order = {ch: i for i, ch in enumerate(STOP_GROUP)}
            pairs = sorted(changed, key=lambda pair: (pair[0], order[pair[1]]))
            result = {
                "account": ACCOUNT,
                "message_id": message_id,
                "channel": "sms",
                "sender": sender,
                "classification": "opt_out",
                "keyword": body.strip().lower(),
                "outcome": "opted_out",
                "contact_ids": sorted({cid for cid, _ in pairs}),
                "channels": list(STOP_GROUP),
                "changed": [list(pair) for pair in pairs],
                "reply": "You have been unsubscribed. Reply START to resubscribe.",
                "honor_by": received.isoformat(),
                "received_at": received.isoformat(),
                "batch_id": batch_id,
                "review_item": None,
                "provider": None,
                "verdict": None,
            }
            # The inbound record's primary key is the redelivery check: a message handled before
            # fails here and the whole transaction rolls back.
            conn.execute(
                "INSERT INTO inbound_messages (account, channel, message_id, body_sha256, result) "
                "VALUES (?, 'sms', ?, ?, ?)",
                (
                    ACCOUNT,
                    message_id,
                    hashlib.sha256(body.encode()).hexdigest(),
                    json.dumps(result, separators=(",", ":")),
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(changed)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def evidence_json(evidence: Evidence) -> str:
    """The evidence document as the store writes it (compact JSON)."""
    document = {
        "method": evidence.method,
        "wording": evidence.wording,
        "wording_version": evidence.wording_version,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------- checks

_FINGERPRINT = {
    "contacts": "SELECT count(*), count(phone) FROM contacts",
    "contact_addresses": "SELECT count(*) FROM contact_addresses",
    "subscriptions": (
        "SELECT channel, state, version, changed_by, source, reason, opted_out_by, "
        "opted_out_via IS NULL, last_opt_out_at IS NULL, count(*) FROM subscriptions "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
    ),
    "events": (
        "SELECT channel, previous_state, new_state, actor_kind, actor_id = contact_id, "
        "actor_roles, source, evidence, reason, inbound_message_id IS NULL, "
        "occurred_at = recorded_at, count(*), count(DISTINCT batch_id) FROM events "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
    ),
    "hourly_changes": (
        "SELECT channel, previous_state, new_state, sum(events) FROM hourly_changes "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ),
    "suppressions": (
        "SELECT channel, source, active, count(*) FROM suppressions GROUP BY 1, 2, 3 "
        "ORDER BY 1, 2, 3"
    ),
    "inbound_messages": "SELECT channel, count(*) FROM inbound_messages GROUP BY 1 ORDER BY 1",
}


def fingerprint(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """What the writes left in *path*, without ids, times or batch ids."""
    conn = sqlite3.connect(path, timeout=30.0)
    try:
        return {name: conn.execute(sql).fetchall() for name, sql in _FINGERPRINT.items()}
    finally:
        conn.close()


def check_same(store_path: Path, raw_path: Path) -> None:
    """Fail unless the store and the raw floor wrote the same rows."""
    store, raw = fingerprint(store_path), fingerprint(raw_path)
    different = [name for name in store if store[name] != raw[name]]
    for name in different:
        print(f"{name} differ:\n  store {store[name]}\n  raw   {raw[name]}", file=sys.stderr)
    if different:
        raise SystemExit("the raw floor did not write what the store wrote")
    print("checked: the store and the raw floor wrote the same rows")


# ---------------------------------------------------------------------------- memory


def build_memory(path: Path, pairs: int) -> None:
    """*pairs* contacts subscribed on every channel of the memory figure: the first through the
    service, the rest copied from it in SQL (only the rows an unsubscribe reads)."""
    store = SQLiteStore(path)
    service = ConsentService(store)
    first = contact_id(0)
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, first)])
    service.opt_in(ADMIN, [first], ALL_MEMORY_CHANNELS, evidence=EVIDENCE, details=False)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        numbers = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
        conn.execute(
            numbers + "INSERT INTO contacts (account, id, phone, email, handles) "
            "SELECT account, printf('contact-%07d', x), phone, email, handles "
            "FROM n CROSS JOIN contacts WHERE id = ?",
            (pairs - 1, first),
        )
        conn.execute(
            numbers + f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) "
            "SELECT account, printf('contact-%07d', x), channel, state, version, updated_at, "
            "changed_by, source, reason, opted_out_by, opted_out_via, last_opt_out_at "
            "FROM n CROSS JOIN subscriptions WHERE contact_id = ? ORDER BY 2, 3",
            (pairs - 1, first),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    checkpoint(path)


def memory_child(kind: str, path: Path, pairs: int) -> None:
    """In a child process: one measured bulk unsubscribe of *pairs* pairs per channel of *kind*."""
    rss_channel, traced_channel = MEMORY_CHANNELS[kind]
    if kind == "raw":
        raw = Raw(path, "FULL")
        raw.change([contact_id(0)], "push", "unsubscribed")  # warm up: every statement once
        child_report(
            lambda: raw.change(ids(pairs), rss_channel, "unsubscribed"),
            lambda: raw.change(ids(pairs), traced_channel, "unsubscribed"),
        )
        raw.close()
        return
    store = SQLiteStore(path)
    service = ConsentService(store)
    details = kind == "store-details"
    service.unsubscribe(ADMIN, [contact_id(0)], ["push"], details=details)  # warm up

    def run(channel: str) -> None:
        result = service.unsubscribe(ADMIN, ids(pairs), [channel], details=details)
        assert result.changed_count == pairs

    child_report(lambda: run(rss_channel), lambda: run(traced_channel))
    store.close()


def measure_memory(workdir: Path, sizes: tuple[int, int]) -> list[Memory]:
    """Figure 7: the memory children of every kind at both sizes."""
    peaks: dict[str, list[dict[str, int]]] = {kind: [] for kind in MEMORY_KINDS}
    for size in sizes:
        path = workdir / f"memory-{size}.db"
        started = time.perf_counter()
        build_memory(path, size)
        print(f"memory set-up: {size:,} contacts in {time.perf_counter() - started:.1f} s")
        for kind in MEMORY_KINDS:
            peaks[kind].append(
                run_child(["--memory-child", kind, "--memory-db", str(path), "--pairs", str(size)])
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
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
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--profile", action="store_true", help="profile the store's bulk paths")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--memory-child", choices=MEMORY_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--memory-db", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return args
    args.contacts = args.contacts or (5_000 if args.quick else 100_000)
    args.lookups = args.lookups or (2_000 if args.quick else 50_000)
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
    if args.memory_child:
        memory_child(args.memory_child, Path(args.memory_db), args.pairs)
        return 0
    exit_on_sigterm()
    n = args.contacts
    half = n // 2
    repeats = max(1, args.repeats)
    write_repeats = max(1, args.write_repeats)
    workdir = Path(tempfile.mkdtemp(prefix="consentkit-bench-"))
    store_db, raw_db = workdir / "store.db", workdir / "raw.db"
    try:
        print(
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"synchronous={args.synchronous}, {os.cpu_count()} CPUs, {workdir}"
        )
        print(code_under_test())
        print(
            f"N = {n:,} contacts; writes best of {write_repeats}, reads and inbound best of "
            f"{repeats} passes, the sides alternating"
        )
        started = time.perf_counter()
        build(store_db, n, args.synchronous)
        shutil.copyfile(store_db, raw_db)
        print(f"set-up: {n:,} contacts built in {time.perf_counter() - started:.1f} s")

        store = SQLiteStore(store_db, synchronous=args.synchronous)
        service = ConsentService(store)
        raw = Raw(raw_db, args.synchronous)
        rows: list[Row] = []

        def settle() -> None:
            checkpoint(store_db)
            checkpoint(raw_db)

        # 1. import: N new contacts with a phone each, a new set per pass.
        contacts_in: dict[int, list[Contact]] = {}
        rows_in: dict[int, list[tuple[str, str]]] = {}

        def prepare_import(index: int) -> None:
            contacts_in.clear()
            rows_in.clear()
            contacts_in[index] = [
                Contact(ACCOUNT, import_id(index, k), phone=import_phone(index, k))
                for k in range(n)
            ]
            rows_in[index] = [(c.id, c.phone or "") for c in contacts_in[index]]

        def store_import(index: int) -> None:
            result = service.upsert_contacts(ADMIN, contacts_in[index])
            assert result.created == n

        def raw_import(index: int) -> None:
            assert raw.import_contacts(rows_in[index]) == n

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
                *alternate(write_repeats, store_opt_in, raw_opt_in, settle),
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
                *alternate(write_repeats, store_unsubscribe, raw_unsubscribe, settle),
                1.5,
            )
        )
        rows.append(
            (
                f"unsubscribe {half:,} pairs (details=False)",
                *alternate(write_repeats, store_unsubscribe_counts, raw_unsubscribe_counts, settle),
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
        store.close()
        raw.close()
        check_same(store_db, raw_db)

        if args.profile:
            run_profiles(store_db, args.synchronous, n, write_repeats)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store_db}{suffix}").unlink(missing_ok=True)
            Path(f"{raw_db}{suffix}").unlink(missing_ok=True)

        # 7. peak memory of a bulk unsubscribe, each run in a child process of its own.
        memory = measure_memory(workdir, args.memory_sizes) if args.memory_sizes else []
        missed = print_summary(
            f"SQLite {sqlite3.sqlite_version}, N = {n:,}, synchronous={args.synchronous}",
            rows,
            memory,
        )
        return 1 if missed else 0
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run_profiles(path: Path, synchronous: Synchronous, n: int, batch: int) -> None:
    """cProfile of one more import, opt-in and default unsubscribe of N pairs via the store."""
    store = SQLiteStore(path, synchronous=synchronous)
    service = ConsentService(store)
    contacts = [
        Contact(ACCOUNT, import_id(batch, k), phone=import_phone(batch, k)) for k in range(n)
    ]
    profile(
        f"upsert_contacts of {n:,} new contacts", lambda: service.upsert_contacts(ADMIN, contacts)
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
    store.close()


if __name__ == "__main__":
    sys.exit(main())
