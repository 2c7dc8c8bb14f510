"""Several processes, each with several threads, change the same contacts on one PostgreSQL
database: no event is lost or duplicated, the state is the replay of the events, the roll-ups
agree with the state, and no deadlock or unique violation reaches the caller.  And calls that meet
on an address (an inbound reply and the registration or edit of a contact with that address, two
replies from a shared number) race round after round without losing an opt-out.

Needs ``CONSENTKIT_TEST_POSTGRES_DSN``; the schemas are fresh and dropped at the end.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from consentkit.channels import SMS
from consentkit.model import (
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
    Source,
    SubscriptionState,
)
from consentkit.service import ConsentService
from consentkit.storage.postgres import PostgresStore
from consentkit.testing.replay import check_replay
from tests.storage._pg_support import drop_schemas, new_schema, postgres_marks, require_dsn
from tests.storage._pg_workers import ACCOUNT, CHANNELS, Outcome, contact_id, run_process
from tests.storage._races import (
    ADMIN,
    EVIDENCE,
    IMPORTER,
    move_to_a_stopped_number,
    phone,
    race,
    stop,
    stop_racing_registration,
    two_stops_on_a_shared_number,
)

pytestmark = postgres_marks

PROCESSES = 3
THREADS = 3
ROUNDS = 150


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


# ---------------------------------------------------------------------- calls meeting on an address


def _fresh_service() -> tuple[PostgresStore, ConsentService]:
    """A store on a new, empty schema and a service on it (the system clock)."""
    store = PostgresStore(require_dsn(), schema=new_schema("addr"))
    return store, ConsentService(store)


def _race(first: Callable[[], object], second: Callable[[], object]) -> list[str]:
    """Race *first* and *second* (see tests/storage/_races.py)."""
    return race(first, second)


def test_stop_racing_the_registration_of_its_number_is_never_lost() -> None:
    """A STOP from a number and the registration of a new contact with that number race, 150
    rounds: the contact always ends unsubscribed, so a later import cannot subscribe it."""
    store, service = _fresh_service()
    try:
        assert stop_racing_registration(service, store, ROUNDS) == []
    finally:
        store.close()


def test_two_stops_from_a_shared_number_unsubscribe_each_contact_once() -> None:
    """Two STOPs (two message ids) from a number two subscribed contacts share race, 150 rounds:
    both contacts end unsubscribed, with one unsubscribe event per pair, and the audit log
    replays to the state."""
    store, service = _fresh_service()
    try:
        assert two_stops_on_a_shared_number(service, store, ROUNDS) == []
    finally:
        store.close()


def test_moving_a_contact_to_a_stopped_number_racing_admin_changes() -> None:
    """A subscribed contact moved to a number that texted STOP races an admin's opt-in (even
    rounds) or unsubscribe (odd rounds) of that contact, 150 rounds: the contact always ends
    unsubscribed on the number's channels, and an import cannot subscribe it again."""
    store, service = _fresh_service()
    try:
        problems = move_to_a_stopped_number(
            service, store, ROUNDS, admin_changes=("opt_in", "unsubscribe")
        )
        assert problems == []
    finally:
        store.close()


def test_two_edits_of_a_contact_apply_the_suppression_of_the_number_it_ends_at() -> None:
    """A contact at a number that texted STOP (then resubscribed on request) is moved away in one
    thread and set back to that number in another, 150 rounds: whichever commits last, a
    contact that ends at the number is unsubscribed (the number joined it again), because the
    second edit reads the contact as the first one left it."""
    store, service = _fresh_service()
    requested = Justification(ResubscribeReason.CONTACT_REQUEST, "asked again on the phone")
    try:
        errors: list[str] = []
        wrong: list[str] = []
        for round_ in range(ROUNDS):
            cid, stopped, other = f"e{round_:04d}", phone(round_), phone(round_, 500_000)
            service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid, phone=stopped)])
            service.opt_in(ADMIN, [cid], [SMS], evidence=EVIDENCE)
            stop(service, stopped, f"SM-{round_}")()
            service.resubscribe(ADMIN, [cid], [SMS], justification=requested)
            errors += _race(
                functools.partial(
                    service.upsert_contacts, ADMIN, [Contact(ACCOUNT, cid, phone=other)]
                ),
                functools.partial(
                    service.upsert_contacts, ADMIN, [Contact(ACCOUNT, cid, phone=stopped)]
                ),
            )
            ends_at = service.get_contact(ADMIN, cid).phone
            if ends_at == stopped and service.can_send(ADMIN, cid, SMS):
                wrong.append(f"round {round_}: {cid} is back at {stopped} and sendable")
        assert errors == []
        assert wrong == [], f"{len(wrong)} of {ROUNDS} rounds"
        check_replay(store, ACCOUNT)
    finally:
        store.close()


def test_stop_racing_a_large_import_of_its_number_is_never_lost() -> None:
    """A STOP from one of 300 numbers an import registers at that moment (enough addresses for
    the import to lock the account's addresses as a whole), 40 rounds: the contact at that
    number always ends unsubscribed, and the import's own opt-in skips it."""
    store, service = _fresh_service()
    try:
        errors: list[str] = []
        sendable: list[int] = []
        for round_ in range(40):
            base = 1_000_000 + round_ * 300
            contacts = [
                Contact(ACCOUNT, f"i{round_:03d}-{n:03d}", phone=phone(n, base))
                for n in range(300)
            ]
            target = contacts[round_ * 7 % 300]
            assert target.phone is not None
            errors += _race(
                stop(service, target.phone, f"SM-{round_}"),
                functools.partial(service.upsert_contacts, ADMIN, contacts),
            )
            service.opt_in(
                IMPORTER,
                [c.id for c in contacts],
                [SMS],
                evidence=EVIDENCE,
                source=Source.IMPORT,
                partial=True,
                details=False,
            )
            if service.can_send(ADMIN, target.id, SMS):
                sendable.append(round_)
        assert errors == []
        assert sendable == [], f"{len(sendable)} of 40 rounds subscribed a STOPped number"
        check_replay(store, ACCOUNT)
    finally:
        store.close()
