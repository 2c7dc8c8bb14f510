"""What do topics cost?  The same calls on a topic channel and on a plain channel (issue 15).

Run from the repository root (``make bench`` runs it)::

    PYTHONPATH=src .venv/bin/python bench/bench_topics.py --contacts 100000
    PYTHONPATH=src .venv/bin/python bench/bench_topics.py --contacts 100000 \\
        --dsn postgresql://postgres@127.0.0.1:5432/test       # the PostgreSQL store too
                                  # (the default when CONSENTKIT_TEST_POSTGRES_DSN is set)

Set-up: one store (a SQLite file, and with ``--dsn`` a PostgreSQL schema dropped afterwards)
holds N contacts with a phone number each, every one opted in on SMS with evidence, and a
service that declares three marketing topics (default opt-in).  Each figure times the same call
on a channel pair and on a topic pair, the two taking turns (and turns going first), best of
three passes; each pass writes pairs no earlier pass wrote (another channel, another topic):

1. opt-in of the N contacts with evidence (``details=False``): on MMS, RCS and WhatsApp, against
   ``sms/<topic>`` (the topic's opt-in first checks that each contact is subscribed to SMS);
2. unsubscribe of N/2 of them (``details=False``), the same pairs;
3. ``can_send`` of random contacts: ``can_send(c, SMS)`` against ``can_send(c, SMS,
   topic=...)`` (both layers read);
4. the audience filter over every contact: ``audience(SMS, ids)`` against ``audience(SMS, ids,
   topic=...)``.

The ratio is topic / channel; the target (issue 15) is 1.1: topics add at most 10%.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from _common import Row, alternate, code_under_test, contact_id, phone, print_summary

from consentkit import SMS, Actor, ConsentService, Contact, Evidence, MessageClass, Topic
from consentkit.channels import MMS, RCS, WHATSAPP
from consentkit.storage.base import Store
from consentkit.storage.sqlite import SQLiteStore

ACCOUNT = "bench"
ADMIN = Actor.admin(ACCOUNT, "bench")
EVIDENCE = Evidence("import", "Yes, text me offers. Reply STOP to stop.", "v1")
TOPICS = ("promotions", "news", "alerts")
CHANNELS = (MMS, RCS, WHATSAPP)
REPEATS = 3


def build(store: Store, n: int) -> ConsentService:
    """The service over *store*, with N contacts subscribed on SMS."""
    service = ConsentService(
        store, topics=[Topic(key, key.title(), MessageClass.MARKETING) for key in TOPICS]
    )
    service.upsert_contacts(
        ADMIN, (Contact(ACCOUNT, contact_id(k), phone=phone(k)) for k in range(n))
    )
    service.opt_in(ADMIN, [contact_id(k) for k in range(n)], [SMS], evidence=EVIDENCE)
    return service


def figures(service: ConsentService, n: int, lookups: int) -> list[Row]:
    """The four figures (topic side as "store", channel side as "raw" in the printed table)."""
    everyone = [contact_id(k) for k in range(n)]
    half = everyone[: n // 2]
    rows: list[Row] = []

    def pair(
        name: str, topic_run: Callable[[int], object], channel_run: Callable[[int], object]
    ) -> None:
        topic_time, channel_time = alternate(REPEATS, topic_run, channel_run)
        rows.append((name, topic_time, channel_time, 1.1))

    def opt_in_topic(index: int) -> None:
        result = service.opt_in(
            ADMIN, everyone, [SMS], evidence=EVIDENCE, topic=TOPICS[index], details=False
        )
        assert result.changed_count == n

    def opt_in_channel(index: int) -> None:
        result = service.opt_in(ADMIN, everyone, [CHANNELS[index]], evidence=EVIDENCE)
        assert result.changed_count == n

    pair(f"opt-in of {n:,} pairs with evidence", opt_in_topic, opt_in_channel)

    def unsubscribe_topic(index: int) -> None:
        result = service.unsubscribe(ADMIN, half, [SMS], topic=TOPICS[index], details=False)
        assert result.changed_count == len(half)

    def unsubscribe_channel(index: int) -> None:
        result = service.unsubscribe(ADMIN, half, [CHANNELS[index]], details=False)
        assert result.changed_count == len(half)

    pair(f"unsubscribe {len(half):,} pairs", unsubscribe_topic, unsubscribe_channel)

    picks = random.Random(7).choices(everyone, k=lookups)

    def can_send_topic(_: int) -> None:
        for cid in picks:
            service.can_send(ADMIN, cid, SMS, topic="promotions")

    def can_send_channel(_: int) -> None:
        for cid in picks:
            service.can_send(ADMIN, cid, SMS)

    pair(f"can_send x {lookups:,}", can_send_topic, can_send_channel)
    # Half of each topic was unsubscribed above: the answer differs, the work is the same.
    assert len(service.audience(ADMIN, SMS, everyone, topic="promotions")) == n - len(half)
    pair(
        f"audience over {n:,} ids",
        lambda _: service.audience(ADMIN, SMS, everyone, topic="promotions"),
        lambda _: service.audience(ADMIN, SMS, everyone),
    )
    return rows


class _Skip(Exception):
    """The SQLite run is skipped (``--no-sqlite``)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="N (default 100,000)")
    parser.add_argument("--lookups", type=int, default=20_000, help="can_send calls per pass")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("CONSENTKIT_TEST_POSTGRES_DSN"),
        help="also run on the PostgreSQL store at this DSN (default $CONSENTKIT_TEST_POSTGRES_DSN)",
    )
    parser.add_argument(
        "--no-sqlite", action="store_true", help="skip the SQLite store (PostgreSQL only)"
    )
    args = parser.parse_args()
    n = args.contacts
    print(f"{code_under_test()}; N = {n:,}; best of {REPEATS}, alternating")
    print("store = the call on a topic pair; raw = the same call on a channel pair")
    missed = 0
    directory = Path(tempfile.mkdtemp(prefix="consentkit-bench-topics-"))
    try:
        if args.no_sqlite:
            raise _Skip
        store = SQLiteStore(directory / "consent.db")
        try:
            missed += print_summary(
                f"SQLite, N = {n:,}: topic vs channel",
                figures(build(store, n), n, args.lookups),
                [],
            )
        finally:
            store.close()
    except _Skip:
        pass
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.dsn:
        import psycopg

        from consentkit.storage.postgres import PostgresStore

        schema = f"ck_bench_topics_{uuid.uuid4().hex[:8]}"
        try:
            with PostgresStore(args.dsn, schema=schema) as pg:
                missed += print_summary(
                    f"PostgreSQL, N = {n:,}: topic vs channel",
                    figures(build(pg, n), n, args.lookups),
                    [],
                )
        finally:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
