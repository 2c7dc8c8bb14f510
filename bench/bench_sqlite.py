"""How much does consentkit cost on SQLite next to raw ``sqlite3`` doing the same work?

Run from the repository root::

    PYTHONPATH=src .venv/bin/python bench/bench_sqlite.py [--quick] [--synchronous FULL]

One database is built through :class:`~consentkit.service.ConsentService` on a
:class:`~consentkit.storage.sqlite.SQLiteStore` (``--contacts`` contacts, every even one opted in
on SMS), checkpointed, and copied: the store works on one copy, the raw baseline on the other, so
both see the same tables, indexes, rows and pragmas (WAL, the same ``synchronous``, cache size and
busy timeout, ``BEGIN IMMEDIATE`` transactions).  Measured, each in the same run for both:

1. ``can_send`` point lookups of random contacts.  Raw: one primary-key SELECT of the state.
2. The audience filter over every contact id (half are subscribed).  Raw: the same indexed
   ``json_each`` query per chunk of ids.
3. One bulk unsubscribe of ``--bulk`` subscribed contacts on SMS (``details=False``), and the peak
   Python memory of a second such call (tracemalloc, measured separately because tracing slows
   Python down).  Raw, in one transaction per chunk of 5,000 ids: one SELECT that checks the
   contacts exist and reads their current state and version, an UPDATE per pair checking the
   version, an INSERT per event, and the hourly roll-up upsert.
4. ``--singles`` inbound-style opt-outs, one contact per call, each its own durable transaction.
   Raw: the same statements for one contact between ``BEGIN IMMEDIATE`` and ``COMMIT``.

Each figure is the best of ``--repeats`` passes (at most 3 for writes), the store and the
baseline taking turns so that load from elsewhere on the machine hits both; writes change state,
so each pass works on fresh contacts.  Targets: ratio <= 1.5 for the bulk and the filter, <= 2.0 for
point lookups and single transactions.
"""

from __future__ import annotations

import argparse
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
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from _common import Row, contact_id, peak_memory, print_comparison, slices

from consentkit import SMS, Actor, ConsentService, Contact, Evidence, Source
from consentkit.storage.sqlite import SQLiteStore

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
CHUNK = 5000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000


def micros(instant: datetime) -> int:
    """Microseconds since the epoch, the store's time format."""
    return (instant - EPOCH) // timedelta(microseconds=1)




def build(path: Path, contacts: int, synchronous: Literal["FULL", "NORMAL"]) -> None:
    """Fill *path* through the service: *contacts* contacts, the even ones opted in on SMS."""
    store = SQLiteStore(path, synchronous=synchronous)
    service = ConsentService(store)
    ids = (contact_id(n) for n in range(contacts))
    service.upsert_contacts(ADMIN, (Contact(ACCOUNT, cid) for cid in ids))
    evidence = Evidence("import", "Yes, text me offers. Reply STOP to stop.", "v1")
    evens = (contact_id(n) for n in range(0, contacts, 2))
    service.opt_in(ADMIN, evens, [SMS], evidence=evidence, details=False)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    store.close()


# ---------------------------------------------------------------------------- the raw baseline


class Raw:
    """Hand-written sqlite3 doing what the service and the store do, with nothing in between."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        for pragma in (
            f"synchronous = {synchronous}",
            "cache_size = -32768",
            "journal_size_limit = 67108864",
            "journal_mode = WAL",
        ):
            self.conn.execute(f"PRAGMA {pragma}")

    def can_send(self, cid: str) -> bool:
        """One primary-key lookup of the pair's state."""
        row = self.conn.execute(
            "SELECT state FROM subscriptions WHERE account = ? AND contact_id = ? AND channel = ?",
            (ACCOUNT, cid, "sms"),
        ).fetchone()
        return row is not None and row[0] == "subscribed"

    def audience(self, ids: Sequence[str]) -> set[str]:
        """The subscribed ids, one indexed json_each query per chunk."""
        result: set[str] = set()
        iterator = iter(ids)
        while chunk := list(itertools.islice(iterator, 10_000)):
            rows = self.conn.execute(
                "SELECT contact_id FROM subscriptions WHERE account = ? AND channel = 'sms' "
                "AND state = 'subscribed' AND contact_id IN (SELECT value FROM json_each(?))",
                (ACCOUNT, json.dumps(chunk)),
            )
            result.update(row[0] for row in rows)
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
        occurred = micros(now)
        hour = occurred // HOUR_US
        batch_id = uuid.uuid4().hex
        changed = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                rows = conn.execute(
                    "SELECT given.value, contacts.id, s.state, s.version "
                    "FROM json_each(?) AS given "
                    "LEFT JOIN contacts ON contacts.account = ? AND contacts.id = given.value "
                    "LEFT JOIN subscriptions AS s ON s.account = ? AND s.contact_id = given.value "
                    "AND s.channel = 'sms'",
                    (json.dumps(chunk), ACCOUNT, ACCOUNT),
                ).fetchall()
                updates = []
                inserts = []
                events: list[list[str]] = []
                previous_counts: Counter[str] = Counter()
                for cid, known, state, version in rows:
                    if known is None:
                        raise LookupError(f"no contact {cid!r}")
                    if state == "unsubscribed":
                        continue
                    previous = state or "never_subscribed"
                    previous_counts[previous] += 1
                    if version is None:
                        inserts.append(
                            (
                                ACCOUNT,
                                cid,
                                "sms",
                                "unsubscribed",
                                occurred,
                                actor_kind,
                                source,
                                reason,
                            )
                        )
                    else:
                        updates.append(
                            (
                                "unsubscribed",
                                occurred,
                                actor_kind,
                                source,
                                reason,
                                ACCOUNT,
                                cid,
                                "sms",
                                version,
                            )
                        )
                    events.append([cid, previous])
                written = conn.executemany(
                    "UPDATE subscriptions SET state = ?, version = version + 1, updated_at = ?, "
                    "changed_by = ?, source = ?, reason = ? WHERE account = ? AND contact_id = ? "
                    "AND channel = ? AND version = ?",
                    updates,
                ).rowcount
                if inserts:
                    written += conn.executemany(
                        "INSERT INTO subscriptions (account, contact_id, channel, state, version, "
                        "updated_at, changed_by, source, reason) "
                        "VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                        inserts,
                    ).rowcount
                if written != len(events):
                    raise RuntimeError("version conflict")
                # The per-event values as one JSON array, the shared ones bound once: the
                # fastest way found to append thousands of rows (the store does the same).
                conn.execute(
                    "INSERT INTO events (account, contact_id, channel, previous_state, "
                    "new_state, actor_kind, actor_id, actor_roles, source, occurred_at, "
                    "recorded_at, justification_reason, justification_note, evidence, reason, "
                    "inbound_message_id, batch_id) "
                    "SELECT ?1, json_extract(value, '$[0]'), 'sms', json_extract(value, '$[1]'), "
                    "'unsubscribed', ?2, ?3, NULL, ?4, ?5, ?5, NULL, NULL, NULL, ?6, NULL, ?7 "
                    "FROM json_each(?8) ORDER BY key",
                    (
                        ACCOUNT,
                        actor_kind,
                        actor_id,
                        source,
                        occurred,
                        reason,
                        batch_id,
                        json.dumps(events),
                    ),
                )
                for previous, count in previous_counts.items():
                    conn.execute(
                        "INSERT INTO hourly_changes (account, hour, channel, previous_state, "
                        "new_state, events) VALUES (?, ?, 'sms', ?, 'unsubscribed', ?) "
                        "ON CONFLICT (account, hour, channel, previous_state, new_state) "
                        "DO UPDATE SET events = events + excluded.events",
                        (ACCOUNT, hour, previous, count),
                    )
                changed += len(events)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return changed

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


# ---------------------------------------------------------------------------- measuring


def compare(
    repeats: int, store_run: Callable[[int], object], raw_run: Callable[[int], object]
) -> tuple[float, float]:
    """The shortest wall times of *repeats* calls of each ``run(repeat_index)``.

    The two contestants take turns, so a burst of load from elsewhere on the machine hits both
    rather than one of them.
    """
    store_times: list[float] = []
    raw_times: list[float] = []
    for index in range(repeats):
        for run, times in ((store_run, store_times), (raw_run, raw_times)):
            started = time.perf_counter()
            run(index)
            times.append(time.perf_counter() - started)
    return min(store_times), min(raw_times)






def main(argv: Sequence[str] | None = None) -> int:
    """Build, measure, print the table; exit status 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--contacts", type=int, default=None)
    parser.add_argument("--lookups", type=int, default=None)
    parser.add_argument("--bulk", type=int, default=None)
    parser.add_argument("--singles", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    contacts = args.contacts or 1_000_000 // scale
    lookups = args.lookups or 50_000 // scale
    bulk = args.bulk or 100_000 // scale
    singles = args.singles or 2_000 // scale
    repeats = max(1, args.repeats)
    # Each pass of a write needs fresh subscribed contacts: fewer passes keep the setup small.
    write_repeats = min(repeats, 3)
    if (bulk * (write_repeats + 1) + singles * write_repeats) * 2 > contacts:
        parser.error("not enough subscribed contacts for these sizes; raise --contacts")

    workdir = Path(tempfile.mkdtemp(prefix="consentkit-bench-"))
    try:
        print(
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"synchronous={args.synchronous}, {os.cpu_count()} CPUs, {workdir}"
        )
        started = time.perf_counter()
        build(workdir / "store.db", contacts, args.synchronous)
        shutil.copyfile(workdir / "store.db", workdir / "raw.db")
        print(f"setup: {contacts:,} contacts built in {time.perf_counter() - started:.1f} s\n")

        store = SQLiteStore(workdir / "store.db", synchronous=args.synchronous)
        service = ConsentService(store)
        raw = Raw(workdir / "raw.db", args.synchronous)
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
            (f"can_send x {lookups:,}", *compare(repeats, service_lookups, raw_lookups), 2.0)
        )

        everyone = [contact_id(n) for n in range(contacts)]
        assert service.audience(ADMIN, SMS, everyone) == raw.audience(everyone)
        times = compare(
            repeats,
            lambda _: service.audience(ADMIN, SMS, everyone),
            lambda _: raw.audience(everyone),
        )
        rows.append((f"audience over {contacts:,} ids", *times, 1.5))

        # Disjoint sets of subscribed (even) contacts, so every write changes every pair.
        evens = iter(range(0, contacts, 2))
        bulk_sets = [slices(evens, bulk) for _ in range(write_repeats)]
        memory_set = slices(evens, bulk)
        single_sets = [slices(evens, singles) for _ in range(write_repeats)]

        def service_bulk(index: int) -> None:
            result = service.unsubscribe(ADMIN, bulk_sets[index], [SMS], details=False)
            assert result.changed_count == bulk

        def raw_bulk(index: int) -> None:
            assert raw.unsubscribe(bulk_sets[index]) == bulk

        rows.append(
            (f"bulk unsubscribe of {bulk:,}", *compare(write_repeats, service_bulk, raw_bulk), 1.5)
        )
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

        times = compare(write_repeats, service_singles, raw_singles)
        rows.append((f"single opt-outs x {singles:,}", *times, 2.0))

        missed = print_comparison(rows, store_peak, raw_peak)
        store.close()
        raw.close()
        return 1 if missed else 0
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
