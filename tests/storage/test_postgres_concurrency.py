"""Several processes, each with several threads, change the same contacts on one PostgreSQL
database: no event is lost or duplicated, the state is the replay of the events, the roll-ups
agree with the state, and no deadlock or unique violation reaches the caller.

Needs ``CONSENTKIT_TEST_POSTGRES_DSN``; the schemas are fresh and dropped at the end.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from consentkit.model import Actor, Contact, Evidence, SubscriptionState
from consentkit.service import ConsentService
from consentkit.storage.postgres import PostgresStore
from consentkit.testing.replay import check_replay
from tests.storage._pg_support import drop_schemas, new_schema, postgres_marks, require_dsn
from tests.storage._pg_workers import ACCOUNT, CHANNELS, Outcome, contact_id, run_process

pytestmark = postgres_marks

ADMIN = Actor.admin(ACCOUNT, "alice")
PROCESSES = 3
THREADS = 3


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas_at_end() -> Iterator[None]:
    """Drops every schema the module's stores created."""
    yield
    drop_schemas()


def _prepare(contacts: int, *, opted_in: int = 0) -> tuple[str, PostgresStore]:
    """A fresh schema with *contacts* contacts, the first *opted_in* subscribed on every channel."""
    schema = new_schema("conc")
    store = PostgresStore(require_dsn(), schema=schema)
    service = ConsentService(store)
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, contact_id(n)) for n in range(contacts)])
    if opted_in:
        service.opt_in(
            ADMIN,
            [contact_id(n) for n in range(opted_in)],
            list(CHANNELS),
            evidence=Evidence("paper", "Signed the paper form.", "v1"),
        )
    return schema, store


def _run_everywhere(schema: str, scenario: str, **options: Any) -> Outcome:
    """Run the scenario in PROCESSES processes of THREADS threads each; their merged outcome."""
    context = multiprocessing.get_context("spawn")
    total = Outcome()
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [
            pool.submit(
                run_process, require_dsn(), schema, scenario, seed, threads=THREADS, **options
            )
            for seed in range(PROCESSES)
        ]
        for future in futures:
            total.merge(future.result(timeout=600))
    return total


def _check_consistency(store: PostgresStore, changed: int, baseline: int) -> None:
    """Events == reported changes, state == replay, dense sequences, roll-ups == state."""
    events = list(store.events(ACCOUNT))
    assert len(events) - baseline == changed
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    replayed = check_replay(store, ACCOUNT)
    latest = max(e.occurred_at for e in events)
    expected = Counter((ch, state) for (_, ch), state in replayed.items())
    totals = store.totals_at(ACCOUNT, [latest + timedelta(hours=2)])[0]
    assert totals == {key: n for key, n in expected.items() if n}
    for ch in CHANNELS:
        listed = store.subscribed_among(
            ACCOUNT, ch, (cid for (cid, c), s in replayed.items() if c == ch)
        )
        assert listed == {
            cid for (cid, c), s in replayed.items() if c == ch and s is SubscriptionState.SUBSCRIBED
        }


def test_mixed_changes_from_processes_and_threads() -> None:
    """Unsubscribes, justified resubscribes, imports and contacts' own requests race on 40
    contacts from 3 processes x 3 threads: nothing is lost, nothing deadlocks."""
    schema, store = _prepare(40, opted_in=20)
    try:
        baseline = len(list(store.events(ACCOUNT)))
        outcome = _run_everywhere(schema, "mixed", rounds=40, contacts=40)
        assert outcome.errors == []
        assert outcome.conflicts == 0
        assert outcome.calls == PROCESSES * THREADS * 40
        _check_consistency(store, outcome.changed, baseline)
    finally:
        store.close()


def test_overlapping_bulk_calls() -> None:
    """Bulk unsubscribes and imports of large overlapping slices in random order (one chunk
    each) never deadlock: locks are taken in key order within a chunk."""
    schema, store = _prepare(3000, opted_in=1500)
    try:
        baseline = len(list(store.events(ACCOUNT)))
        outcome = _run_everywhere(schema, "bulk", rounds=4, contacts=3000)
        assert outcome.errors == []
        assert outcome.conflicts == 0
        _check_consistency(store, outcome.changed, baseline)
    finally:
        store.close()


def test_opt_ins_racing_on_never_subscribed_pairs() -> None:
    """Nine writers opting the same never-subscribed pairs in at once write one event per pair
    and never hit a unique violation."""
    schema, store = _prepare(300)
    try:
        outcome = _run_everywhere(schema, "opt_in", rounds=2, contacts=300)
        assert outcome.errors == []
        assert outcome.conflicts == 0
        assert outcome.changed == 300 * len(CHANNELS)
        _check_consistency(store, outcome.changed, 0)
    finally:
        store.close()


def test_multi_chunk_bulk_calls_take_turns() -> None:
    """Bulk calls split into many chunks (each locked by its own statement) overlap in random
    orders without a deadlock: the account's bulk writes are serialised."""
    schema, store = _prepare(3000, opted_in=1500)
    try:
        baseline = len(list(store.events(ACCOUNT)))
        outcome = _run_everywhere(schema, "bulk", rounds=3, contacts=3000, chunk_size=250)
        assert outcome.errors == []
        assert outcome.conflicts == 0
        _check_consistency(store, outcome.changed, baseline)
    finally:
        store.close()


def test_threads_of_one_process_share_a_store() -> None:
    """Twelve threads on one store (one pool) race on the same pairs without losing anything."""
    schema, store = _prepare(30, opted_in=15)
    try:
        baseline = len(list(store.events(ACCOUNT)))
        outcome = run_process(
            require_dsn(), schema, "mixed", 99, threads=12, rounds=25, contacts=30
        )
        assert outcome.errors == []
        assert outcome.conflicts == 0
        _check_consistency(store, outcome.changed, baseline)
    finally:
        store.close()
