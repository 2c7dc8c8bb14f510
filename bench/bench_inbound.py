"""Inbound STOP replies handled per second: ConsentService.handle_inbound on SQLite against raw
sqlite3 doing the same work, each message in its own durable transaction, in the same run.

Per message both sides: check the provider message id was not handled before, find the contacts
with the sender's number, read their SMS/MMS/RCS subscriptions, unsubscribe all three (one event
each, the roll-ups updated) and store the result under the message id, then COMMIT with
synchronous=FULL.  Target (issue 4): ratio <= 2.0.

Each side's figure is its best of many short passes (12 of 250 messages by default), the sides
taking turns to go first: on a noisy machine a short pass is more likely to miss a slow spell than a
long one, and both sides get the same number of chances.  The median of the per-pass ratios is
printed too.

Run: ``PYTHONPATH=src python bench/bench_inbound.py`` (``--messages N``, ``--repeats N``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consentkit import SMS, Actor, ConsentService, Contact, Evidence
from consentkit.inbound import InboundMessage, InboundOutcome
from consentkit.storage.sqlite import SQLiteStore

ACCOUNT = "bench"
ADMIN = Actor.admin(ACCOUNT, "alice")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
GROUP = ("sms", "mms", "rcs")
KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE"})


def phone(number: int) -> str:
    """The phone number of contact *number*."""
    return f"+1202{number:07d}"


def build(path: Path, contacts: int) -> None:
    """*contacts* contacts with phone numbers, all subscribed on SMS, through the service."""
    store = SQLiteStore(path)
    service = ConsentService(store)
    service.upsert_contacts(
        ADMIN, (Contact(ACCOUNT, f"c{n:07d}", phone=phone(n)) for n in range(contacts))
    )
    service.opt_in(
        ADMIN, (f"c{n:07d}" for n in range(contacts)), [SMS],
        evidence=Evidence("web_form", "Text me", "v1"), details=False,
    )
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


class Raw:
    """The same work as handle_inbound, hand-written on sqlite3."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        for pragma in ("synchronous = FULL", "cache_size = -32768", "journal_mode = WAL"):
            self.conn.execute(f"PRAGMA {pragma}")

    def handle(self, sender: str, body: str, message_id: str) -> int:
        """Handle one STOP; returns the number of pairs changed."""
        if body.strip().upper() not in KEYWORDS:
            return 0
        conn = self.conn
        now = datetime.now(UTC)
        occurred = (now - EPOCH) // timedelta(microseconds=1)
        hour = occurred // HOUR_US
        batch_id = uuid.uuid4().hex
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT result FROM inbound_messages "
                "WHERE account = ? AND channel = 'sms' AND message_id = ?",
                (ACCOUNT, message_id),
            ).fetchone()
            if done is not None:
                conn.execute("COMMIT")
                return 0
            contacts = [
                row[0]
                for row in conn.execute(
                    "SELECT contact_id FROM contact_addresses "
                    "WHERE account = ? AND address_key = ?",
                    (ACCOUNT, f"phone:{sender}"),
                )
            ]
            # The address's own last word, whatever contacts have it.
            conn.executemany(
                "INSERT INTO suppressions (account, address_key, channel, occurred_at, source, "
                "inbound_message_id, active) VALUES (?, ?, ?, ?, 'inbound_keyword', ?, 1) "
                "ON CONFLICT (account, address_key, channel) DO UPDATE SET "
                "occurred_at = excluded.occurred_at, source = excluded.source, "
                "inbound_message_id = excluded.inbound_message_id, active = excluded.active "
                "WHERE excluded.occurred_at > suppressions.occurred_at",
                [(ACCOUNT, f"phone:{sender}", ch, occurred, message_id) for ch in GROUP],
            )
            changed = []
            for cid in contacts:
                current = {
                    ch: (state, version)
                    for ch, state, version in conn.execute(
                        "SELECT channel, state, version FROM subscriptions WHERE account = ? "
                        "AND contact_id = ? AND channel IN ('sms', 'mms', 'rcs')",
                        (ACCOUNT, cid),
                    )
                }
                for ch in GROUP:
                    state, version = current.get(ch, ("never_subscribed", 0))
                    if state == "unsubscribed":
                        continue
                    if version:
                        conn.execute(
                            "UPDATE subscriptions SET state = 'unsubscribed', "
                            "version = version + 1, updated_at = ?, changed_by = 'contact', "
                            "source = 'inbound_keyword', reason = 'stop_keyword', "
                            "opted_out_by = 'contact', opted_out_via = ?, "
                            "last_opt_out_at = max(coalesce(last_opt_out_at, ?), ?) "
                            "WHERE account = ? AND contact_id = ? AND channel = ? AND version = ?",
                            (occurred, f"phone:{sender}", occurred, occurred, ACCOUNT, cid, ch,
                             version),
                        )
                    else:
                        conn.execute(
                            "INSERT INTO subscriptions (account, contact_id, channel, state, "
                            "version, updated_at, changed_by, source, reason, opted_out_by, "
                            "opted_out_via, last_opt_out_at) VALUES "
                            "(?, ?, ?, 'unsubscribed', 1, ?, 'contact', 'inbound_keyword', "
                            "'stop_keyword', 'contact', ?, ?)",
                            (ACCOUNT, cid, ch, occurred, f"phone:{sender}", occurred),
                        )
                    conn.execute(
                        "INSERT INTO events (account, contact_id, channel, previous_state, "
                        "new_state, actor_kind, actor_id, actor_roles, source, occurred_at, "
                        "recorded_at, justification_reason, justification_note, evidence, reason, "
                        "inbound_message_id, batch_id) VALUES (?, ?, ?, ?, 'unsubscribed', "
                        "'contact', ?, NULL, 'inbound_keyword', ?, ?, NULL, NULL, NULL, "
                        "'stop_keyword', ?, ?)",
                        (ACCOUNT, cid, ch, state, cid, occurred, occurred, message_id, batch_id),
                    )
                    conn.execute(
                        "INSERT INTO hourly_changes (account, hour, channel, previous_state, "
                        "new_state, events) VALUES (?, ?, ?, ?, 'unsubscribed', 1) "
                        "ON CONFLICT (account, hour, channel, previous_state, new_state) "
                        "DO UPDATE SET events = events + 1",
                        (ACCOUNT, hour, ch, state),
                    )
                    changed.append([cid, ch])
            conn.execute(
                "INSERT INTO inbound_messages (account, channel, message_id, body_sha256, result) "
                "VALUES (?, 'sms', ?, ?, ?)",
                (
                    ACCOUNT,
                    message_id,
                    hashlib.sha256(body.encode()).hexdigest(),
                    json.dumps(
                        {"outcome": "opted_out", "changed": changed, "batch_id": batch_id},
                        separators=(",", ":"),
                    ),
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(changed)

    def count_events(self) -> int:
        """Events in the database."""
        return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args(argv)
    contacts = args.messages * args.repeats * 2 + 1000
    workdir = Path(tempfile.mkdtemp(prefix="consentkit-inbound-bench-"))
    try:
        build(workdir / "store.db", contacts)
        shutil.copyfile(workdir / "store.db", workdir / "raw.db")
        store = SQLiteStore(workdir / "store.db")
        service = ConsentService(store)
        raw = Raw(workdir / "raw.db")
        store_best = raw_best = float("inf")
        round_ratios: list[float] = []
        for repeat in range(args.repeats):
            # Disjoint senders per pass and side, so every message changes three pairs.
            base = repeat * args.messages * 2
            senders = [phone(base + n) for n in range(args.messages)]

            def run_store(senders: list[str] = senders, repeat: int = repeat) -> float:
                start = time.perf_counter()
                for n, sender in enumerate(senders):
                    message = InboundMessage(
                        ACCOUNT, SMS, sender, "STOP", f"S{repeat}-{n}", datetime.now(UTC)
                    )
                    result = service.handle_inbound(message)
                    assert result.outcome is InboundOutcome.OPTED_OUT
                    assert len(result.changed) == 3
                return time.perf_counter() - start

            def run_raw(senders: list[str] = senders, repeat: int = repeat) -> float:
                start = time.perf_counter()
                for n, sender in enumerate(senders):
                    assert raw.handle(sender, "STOP", f"R{repeat}-{n}") == 3
                return time.perf_counter() - start

            # The sides take turns going first, so neither always follows the other's writes.
            if repeat % 2 == 0:
                store_seconds = run_store()
                raw_seconds = run_raw()
            else:
                raw_seconds = run_raw()
                store_seconds = run_store()
            store_best = min(store_best, store_seconds)
            raw_best = min(raw_best, raw_seconds)
            round_ratios.append(store_seconds / raw_seconds)
        store_events = sum(1 for _ in store.events(ACCOUNT))
        assert store_events == raw.count_events(), (store_events, raw.count_events())
        store.close()
        raw.conn.close()
        print(f"inbound STOP, one durable transaction each (synchronous=FULL), best of "
              f"{args.repeats} passes of {args.messages:,} messages")
        print(f"{'':<8}{'seconds':>9}{'msg/s':>10}")
        print(f"{'store':<8}{store_best:>9.3f}{args.messages / store_best:>10,.0f}")
        print(f"{'raw':<8}{raw_best:>9.3f}{args.messages / raw_best:>10,.0f}")
        ratio = store_best / raw_best
        median = statistics.median(round_ratios)
        print(f"median of the {args.repeats} per-pass ratios: {median:.2f}")
        print(f"ratio store/raw: {ratio:.2f} (target <= 2.0)")
        return 0 if ratio <= 2.0 else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
