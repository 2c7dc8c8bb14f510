"""How much does consentkit cost on PostgreSQL next to raw psycopg doing the same work?

Run from the repository root against a scratch database::

    CONSENTKIT_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        PYTHONPATH=src .venv/bin/python bench/bench_postgres.py [--quick]

One schema is built through :class:`~consentkit.service.ConsentService` on a
:class:`~consentkit.storage.postgres.PostgresStore` (``--contacts`` contacts, every even one
opted in on SMS) and copied table by table (``LIKE ... INCLUDING ALL``, so the same columns,
constraints and indexes) into a second schema for the raw baseline; both are vacuumed and
analysed.  Measured, each in the same run for both, single-threaded (the store borrows one
connection at a time from its own pool; the baseline holds one connection):

1. ``can_send`` point lookups of random contacts.  Raw: one primary-key SELECT of the state.
2. The audience filter over every contact id (half are subscribed).  Raw: the same indexed
   ``= ANY(%s)`` query per chunk of 20,000 ids, aggregated to one array per chunk.
3. One bulk unsubscribe of ``--bulk`` subscribed contacts on SMS (``details=False``), and the peak
   Python memory of a second such call (tracemalloc, measured separately because tracing slows
   Python down).  Raw, in one transaction, per chunk of 5,000 ids: one SELECT ... FOR UPDATE that
   checks the contacts exist and reads (and locks) their current state and version, a decision
   per pair in Python, one UPDATE ... FROM unnest() checking every version, one INSERT of the
   events (sequences reserved on the account's counter row) and the hourly roll-up upsert.
4. ``--singles`` inbound-style opt-outs, one contact per call, each its own transaction.  Raw: the
   same statements for one contact.

Reads are timed as the best of ``--repeats`` passes; writes change state, so each repeat works on
fresh contacts and the best is kept.  Targets: ratio <= 1.5 for the bulk and the filter; the
others are reported (a point lookup or a one-pair transaction is a few round trips either way).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from _common import Row, contact_id, peak_memory, print_comparison, slices

from consentkit.channels import SMS
from consentkit.model import Actor, Contact, Evidence, Source
from consentkit.service import ConsentService
from consentkit.storage.postgres import PostgresStore

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
CHUNK = 5000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TABLES = (
    "accounts",
    "contacts",
    "contact_addresses",
    "subscriptions",
    "events",
    "hourly_changes",
    "inbound_messages",
    "suppressions",
)




def build(dsn: str, schema: str, raw_schema: str, contacts: int) -> None:
    """Fill *schema* through the service, then copy it into *raw_schema* for the baseline."""
    with PostgresStore(dsn, schema=schema) as store:
        service = ConsentService(store)
        ids = (contact_id(n) for n in range(contacts))
        service.upsert_contacts(ADMIN, (Contact(ACCOUNT, cid) for cid in ids))
        evidence = Evidence("import", "Yes, text me offers. Reply STOP to stop.", "v1")
        evens = (contact_id(n) for n in range(0, contacts, 2))
        service.opt_in(ADMIN, evens, [SMS], evidence=evidence, details=False)
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


def drop(dsn: str, *schemas: str) -> None:
    """Drop the bench schemas."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


# ---------------------------------------------------------------------------- the raw baseline


class Raw:
    """Hand-written psycopg doing what the service and the store do, with nothing in between."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        s = f'"{schema}"'
        self.q_can_send = (
            f"SELECT state FROM {s}.subscriptions "
            "WHERE account = %s AND contact_id = %s AND channel = %s"
        )
        self.q_audience = (
            f"SELECT coalesce(array_agg(contact_id), '{{}}') FROM {s}.subscriptions "
            "WHERE account = %s AND channel = 'sms' AND state = 'subscribed' "
            "AND contact_id = ANY(%b)"
        )
        self.q_known = (
            f"SELECT count(*) FROM {s}.contacts WHERE account = %s AND contact_id = ANY(%b)"
        )
        self.q_lock = f"""
            SELECT contact_id, state, version FROM {s}.subscriptions
            WHERE account = %s AND contact_id = ANY(%b) AND channel = 'sms'
            ORDER BY contact_id
            FOR UPDATE"""
        self.q_update = f"""
            UPDATE {s}.subscriptions s SET state = 'unsubscribed', version = s.version + 1,
                updated_at = %s, changed_by = %s, source = %s, reason = %s
            FROM unnest(%b::text[], %b::bigint[]) AS u(contact_id, version)
            WHERE s.account = %s AND s.contact_id = u.contact_id AND s.channel = 'sms'
                AND s.version = u.version"""
        self.q_insert = f"""
            INSERT INTO {s}.subscriptions (account, contact_id, channel, state, version,
                updated_at, changed_by, source, reason)
            SELECT %s, u.contact_id, 'sms', 'unsubscribed', 1, %s, %s, %s, %s
            FROM unnest(%b::text[]) AS u(contact_id)
            ON CONFLICT DO NOTHING"""
        self.q_sequence = f"""
            INSERT INTO {s}.accounts AS a (account, last_sequence) VALUES (%s, %s)
            ON CONFLICT (account)
            DO UPDATE SET last_sequence = a.last_sequence + excluded.last_sequence
            RETURNING last_sequence"""
        self.q_events = f"""
            INSERT INTO {s}.events (account, sequence, contact_id, channel, previous_state,
                new_state, actor_kind, actor_id, actor_roles, source, occurred_at, recorded_at,
                reason, batch_id)
            SELECT %s, %s + u.n, u.contact_id, 'sms', u.previous, 'unsubscribed', %s, %s,
                '{{}}', %s, %s, %s, %s, %s
            FROM unnest(%b::text[], %b::text[]) WITH ORDINALITY AS u(contact_id, previous, n)"""
        self.q_rollup = f"""
            INSERT INTO {s}.hourly_changes AS h (account, hour, channel, previous_state,
                new_state, events)
            SELECT %s, %s, 'sms', u.previous, 'unsubscribed', u.events
            FROM unnest(%b::text[], %b::bigint[]) AS u(previous, events)
            ON CONFLICT (account, hour, channel, previous_state, new_state)
            DO UPDATE SET events = h.events + excluded.events"""

    def can_send(self, cid: str) -> bool:
        """One primary-key lookup of the pair's state."""
        row = self.conn.execute(self.q_can_send, (ACCOUNT, cid, "sms")).fetchone()
        return row is not None and row[0] == "subscribed"

    def audience(self, ids: Sequence[str]) -> set[str]:
        """The subscribed ids, one indexed query per chunk."""
        result: set[str] = set()
        iterator = iter(ids)
        while chunk := list(itertools.islice(iterator, 20_000)):
            row = self.conn.execute(self.q_audience, (ACCOUNT, chunk)).fetchone()
            assert row is not None
            result.update(row[0])
        return result

    def unsubscribe(
        self,
        ids: Sequence[str],
        *,
        actor: tuple[str, str] = ("admin", "alice"),
        source: str = "contacts_page",
        reason: str | None = None,
    ) -> int:
        """Unsubscribe *ids* on SMS in one transaction; returns the number of changed pairs."""
        actor_kind, actor_id = actor
        conn = self.conn
        now = datetime.now(UTC)
        hour = (now - EPOCH) // timedelta(hours=1)
        batch_id = uuid.uuid4().hex
        changed = 0
        with conn.transaction():
            for start in range(0, len(ids), CHUNK):
                chunk = sorted(set(ids[start : start + CHUNK]))
                with conn.pipeline():
                    known = conn.execute(self.q_known, (ACCOUNT, chunk))
                    locked = conn.execute(self.q_lock, (ACCOUNT, chunk))
                count = known.fetchone()
                if count is None or count[0] != len(chunk):
                    raise LookupError("unknown contacts")
                current = {cid: (state, version) for cid, state, version in locked.fetchall()}
                update_ids: list[str] = []
                update_versions: list[int] = []
                insert_ids: list[str] = []
                event_ids: list[str] = []
                previous_states: list[str] = []
                for cid in chunk:
                    state, version = current.get(cid, ("never_subscribed", None))
                    if state == "unsubscribed":
                        continue
                    previous_states.append(state)
                    if version is None:
                        insert_ids.append(cid)
                    else:
                        update_ids.append(cid)
                        update_versions.append(version)
                    event_ids.append(cid)
                if not event_ids:
                    continue
                written = 0
                if update_ids:
                    written += conn.execute(
                        self.q_update,
                        (now, actor_kind, source, reason, update_ids, update_versions, ACCOUNT),
                    ).rowcount
                if insert_ids:
                    written += conn.execute(
                        self.q_insert, (ACCOUNT, now, actor_kind, source, reason, insert_ids)
                    ).rowcount
                if written != len(event_ids):
                    raise RuntimeError("version conflict")
                row = conn.execute(self.q_sequence, (ACCOUNT, len(event_ids))).fetchone()
                assert row is not None
                first = row[0] - len(event_ids)
                with conn.pipeline():
                    conn.execute(
                        self.q_events,
                        (
                            ACCOUNT,
                            first,
                            actor_kind,
                            actor_id,
                            source,
                            now,
                            now,
                            reason,
                            batch_id,
                            event_ids,
                            previous_states,
                        ),
                    )
                    counts: dict[str, int] = {}
                    for previous in previous_states:
                        counts[previous] = counts.get(previous, 0) + 1
                    conn.execute(
                        self.q_rollup, (ACCOUNT, hour, list(counts), list(counts.values()))
                    )
                changed += len(event_ids)
        return changed

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


# ---------------------------------------------------------------------------- measuring


def best_of(repeats: int, run: Callable[[int], object]) -> float:
    """The shortest wall time of *repeats* calls of ``run(repeat_index)``."""
    times = []
    for index in range(repeats):
        started = time.perf_counter()
        run(index)
        times.append(time.perf_counter() - started)
    return min(times)


def best_of_pair(
    repeats: int, dsn: str, first: Callable[[int], object], second: Callable[[int], object]
) -> tuple[float, float]:
    """Best wall times of *first* and *second*, alternating and after a checkpoint each, so
    neither pays for the other's dirty pages or WAL flushes."""
    times: tuple[list[float], list[float]] = ([], [])
    for index in range(repeats):
        for run, spent in ((first, times[0]), (second, times[1])):
            checkpoint(dsn)
            started = time.perf_counter()
            run(index)
            spent.append(time.perf_counter() - started)
    return min(times[0]), min(times[1])


def checkpoint(dsn: str) -> None:
    """Flush dirty pages now (needs superuser or pg_checkpoint; skipped when not allowed)."""
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")






def main(argv: Sequence[str] | None = None) -> int:
    """Build, measure, print the table; exit status 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--contacts", type=int, default=None)
    parser.add_argument("--lookups", type=int, default=None)
    parser.add_argument("--bulk", type=int, default=None)
    parser.add_argument("--singles", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the bench schemas")
    args = parser.parse_args(argv)
    dsn = os.environ.get("CONSENTKIT_TEST_POSTGRES_DSN")
    if not dsn:
        parser.error("set CONSENTKIT_TEST_POSTGRES_DSN to a scratch PostgreSQL database")
    scale = 10 if args.quick else 1
    contacts = args.contacts or 1_000_000 // scale
    lookups = args.lookups or 50_000 // scale
    bulk = args.bulk or 100_000 // scale
    singles = args.singles or 2_000 // scale
    repeats = max(1, args.repeats)
    if (bulk * (repeats + 1) + singles * repeats) * 2 > contacts:
        parser.error("not enough subscribed contacts for these sizes; raise --contacts")

    suffix = uuid.uuid4().hex[:8]
    schema, raw_schema = f"ck_bench_{suffix}", f"ck_bench_raw_{suffix}"
    try:
        with psycopg.connect(dsn) as conn:
            version = conn.info.server_version
        print(
            f"Python {platform.python_version()}, PostgreSQL {version // 10000}."
            f"{version % 10000}, psycopg {psycopg.__version__}, {os.cpu_count()} CPUs, "
            f"schemas {schema} / {raw_schema}"
        )
        started = time.perf_counter()
        build(dsn, schema, raw_schema, contacts)
        print(f"setup: {contacts:,} contacts built in {time.perf_counter() - started:.1f} s\n")

        store = PostgresStore(dsn, schema=schema, create_schema=False)
        service = ConsentService(store)
        raw = Raw(dsn, raw_schema)
        rows: list[Row] = []

        rng = random.Random(7)
        probe = [contact_id(rng.randrange(contacts)) for _ in range(lookups)]

        def service_lookups(_: int) -> None:
            for cid in probe:
                service.can_send(ADMIN, cid, SMS)

        def raw_lookups(_: int) -> None:
            for cid in probe:
                raw.can_send(cid)

        assert sum(service.can_send(ADMIN, c, SMS) for c in probe[:500]) == sum(
            raw.can_send(c) for c in probe[:500]
        )
        rows.append(
            (
                f"can_send x {lookups:,}",
                best_of(repeats, service_lookups),
                best_of(repeats, raw_lookups),
                None,
            )
        )

        everyone = [contact_id(n) for n in range(contacts)]
        assert service.audience(ADMIN, SMS, everyone) == raw.audience(everyone)
        rows.append(
            (
                f"audience over {contacts:,} ids",
                best_of(repeats, lambda _: service.audience(ADMIN, SMS, everyone)),
                best_of(repeats, lambda _: raw.audience(everyone)),
                1.5,
            )
        )

        # Disjoint sets of subscribed (even) contacts, so every write changes every pair.
        evens = iter(range(0, contacts, 2))
        bulk_sets = [slices(evens, bulk) for _ in range(repeats)]
        memory_set = slices(evens, bulk)
        single_sets = [slices(evens, singles) for _ in range(repeats)]
        # The raw baseline works on its own copy of the data, so it gets the same contact sets.

        def service_bulk(index: int) -> None:
            result = service.unsubscribe(ADMIN, bulk_sets[index], [SMS], details=False)
            assert result.changed_count == bulk

        def raw_bulk(index: int) -> None:
            assert raw.unsubscribe(bulk_sets[index]) == bulk

        store_bulk, raw_bulk_time = best_of_pair(repeats, dsn, service_bulk, raw_bulk)
        rows.append((f"bulk unsubscribe of {bulk:,}", store_bulk, raw_bulk_time, 1.5))
        checkpoint(dsn)
        store_peak = peak_memory(
            lambda: service.unsubscribe(ADMIN, memory_set, [SMS], details=False)
        )
        raw_peak = peak_memory(lambda: raw.unsubscribe(memory_set))

        def service_singles(index: int) -> None:
            for cid in single_sets[index]:
                service.unsubscribe(
                    Actor.contact(ACCOUNT, cid),
                    cid,
                    [SMS],
                    source=Source.INBOUND_KEYWORD,
                    reason="stop_keyword",
                )

        def raw_singles(index: int) -> None:
            for cid in single_sets[index]:
                raw.unsubscribe(
                    [cid], actor=("contact", cid), source="inbound_keyword", reason="stop_keyword"
                )

        store_singles, raw_singles_time = best_of_pair(repeats, dsn, service_singles, raw_singles)
        rows.append((f"single opt-outs x {singles:,}", store_singles, raw_singles_time, None))

        missed = print_comparison(rows, store_peak, raw_peak)
        store.close()
        raw.close()
        return 1 if missed else 0
    finally:
        if args.keep:
            print(f"kept schemas {schema} and {raw_schema}")
        else:
            drop(dsn, schema, raw_schema)


if __name__ == "__main__":
    sys.exit(main())
