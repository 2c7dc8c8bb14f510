"""Adversarial checks of the PostgreSQL store's queued statements and held events: statements
sent with the next round trip (address locks, suppressions, departures, opt-out notes, inbound
records, writes of locked pairs) and small writes' events kept in Python until ``finish()``.

Needs ``CONSENTKIT_TEST_POSTGRES_DSN``; every store gets a fresh schema, dropped at the end.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import psycopg
import pytest

from consentkit.channels import EMAIL, SMS, Channel
from consentkit.errors import ConflictError, ConsentError
from consentkit.inbound import InboundMessage, InboundOutcome, InboundResult
from consentkit.model import (
    Actor,
    Contact,
    Evidence,
    OptOutOrigin,
    Source,
    SubscriptionState,
    Suppression,
)
from consentkit.review import ReviewItem, ReviewKind
from consentkit.service import ConsentService
from consentkit.storage import InMemoryStore
from consentkit.storage.base import (
    ChangeBatch,
    InboundRecord,
    PairChange,
    StagingTransaction,
    StoreTransaction,
)
from consentkit.storage.postgres import PostgresStore
from consentkit.testing.replay import check_replay
from tests.storage._pg_support import drop_schemas, new_schema, postgres_marks, require_dsn
from tests.storage._races import race

pytestmark = postgres_marks

ACCOUNT = "acme"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("web_form", "Yes, text me.", "v1")
NEVER = SubscriptionState.NEVER_SUBSCRIBED
SUBSCRIBED = SubscriptionState.SUBSCRIBED
UNSUBSCRIBED = SubscriptionState.UNSUBSCRIBED
KEY = b"k" * 32


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas_at_end() -> Iterator[None]:
    """Drops every schema the module's stores created."""
    yield
    drop_schemas()


@pytest.fixture
def schema() -> str:
    """A fresh schema name."""
    return new_schema("q")


@pytest.fixture
def store(schema: str) -> Iterator[PostgresStore]:
    """A store on a fresh schema, closed after the test."""
    made = PostgresStore(require_dsn(), schema=schema)
    try:
        yield made
    finally:
        made.close()


# ---------------------------------------------------------------------------------- helpers


def _sql(query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run *query* on a connection of its own (autocommit) and return its rows."""
    with psycopg.connect(require_dsn(), autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description is not None else []


def _batch(
    state: SubscriptionState, batch_id: str = "b", occurred_at: datetime = T0
) -> ChangeBatch:
    return ChangeBatch(
        account=ACCOUNT,
        new_state=state,
        actor=ADMIN,
        source=Source.API,
        occurred_at=occurred_at,
        recorded_at=occurred_at,
        batch_id=batch_id,
        evidence=EVIDENCE if state is SUBSCRIBED else None,
    )


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


def _register(store: PostgresStore | InMemoryStore, ids: Sequence[str]) -> None:
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, cid) for cid in ids])


def _lock_and_write(
    tx: StoreTransaction,
    ids: Sequence[str],
    channel: Channel,
    state: SubscriptionState,
    batch_id: str,
    *,
    occurred_at: datetime = T0,
) -> None:
    """Lock the pairs, then write them to *state* at the version read (the locked-row path)."""
    current = tx.lock_subscriptions(list(ids), [channel])
    changes = []
    for cid in ids:
        sub = current.get((cid, channel))
        changes.append(
            PairChange(
                cid, channel, NEVER if sub is None else sub.state, 0 if sub is None else sub.version
            )
        )
    tx.write_changes(_batch(state, batch_id, occurred_at), changes)


def _check_log(store: PostgresStore, schema: str) -> list[Any]:
    """The account's events, after checking: sequences 1..N with no gap or repeat, the state is
    the replay of the events, and the hourly roll-ups count exactly the events."""
    events = list(store.events(ACCOUNT))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    check_replay(store, ACCOUNT)
    rollups = {
        (hour, channel, previous, new): count
        for hour, channel, previous, new, count in _sql(
            "SELECT hour, channel, previous_state, new_state, events "
            f'FROM "{schema}".hourly_changes WHERE account = %s AND events <> 0',
            (ACCOUNT,),
        )
    }
    counted = Counter(
        (
            int((e.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(hours=1)),
            e.channel.key,
            e.previous_state.value,
            e.new_state.value,
        )
        for e in events
    )
    assert rollups == dict(counted)
    return events


def _stop(sender: str, message_id: str, body: str = "STOP") -> InboundMessage:
    return InboundMessage(
        ACCOUNT, SMS, sender, body, message_id, datetime.now(UTC) - timedelta(seconds=1)
    )


def _counts(schema: str, table: str) -> int:
    rows = _sql(f'SELECT count(*) FROM "{schema}".{table}')
    return int(rows[0][0])


# ------------------------------------------------------------- failed deferred checks


def test_a_caught_deferred_inbound_conflict_still_rolls_the_transaction_back(
    store: PostgresStore, schema: str
) -> None:
    """A second put of an inbound record is found out when the results arrive (at the next
    statement).  The transaction is then broken: even if the host catches the ConflictError and
    lets the block end normally, nothing of it may commit."""
    first = InboundRecord(SMS, "SM-1", "a" * 64, '{"n": 1}')
    with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:  # noqa: PT012
        tx.put_inbound(first)
        tx.put_inbound(InboundRecord(SMS, "SM-1", "b" * 64, '{"n": 2}'))
        with contextlib.suppress(ConflictError):  # a careless host swallows it, goes on
            tx.get_inbound(SMS, "SM-1")
    # Nothing of the broken transaction committed.
    assert _counts(schema, "inbound_messages") == 0


def _review_item(message_id: str) -> ReviewItem:
    return ReviewItem(
        account=ACCOUNT,
        id=f"sms:{message_id}",
        kind=ReviewKind.POSSIBLE_OPT_OUT,
        channel=SMS,
        message_id=message_id,
        sender="+14155550100",
        text="please stop texting me",
        contact_ids=(),
        received_at=T0,
        honor_by=T0 + timedelta(days=14),
    )


@pytest.mark.parametrize("then", ["nothing", "review_item", "contacts", "suppression"])
def test_calls_after_a_failed_deferred_check_do_not_commit(
    store: PostgresStore, schema: str, then: str
) -> None:
    """A failed deferred check (here a second put of an inbound record, found out at the next
    statement) breaks the transaction: whatever the host does after catching the ConflictError
    (nothing, a statement that is not queued, one that is, a queued one), leaving the block must
    not commit anything of it: not the suppression queued before, not what came after."""
    with store.transaction(ACCOUNT) as tx:
        tx.put_inbound(InboundRecord(SMS, "SM-0", None, '{"n": 0}'))
    with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:  # noqa: PT012
        tx.put_suppressions(
            [Suppression(ACCOUNT, "phone:+14155550999", SMS, T0, Source.INBOUND_KEYWORD)]
        )
        tx.put_inbound(InboundRecord(SMS, "SM-0", None, '{"n": 1}'))
        with pytest.raises(ConflictError):
            tx.get_inbound(SMS, "SM-0")
        if then == "review_item":
            tx.put_review_item(_review_item("SM-r"))
        elif then == "contacts":
            tx.put_contacts([Contact(ACCOUNT, "b", phone="+14155550998")])
        elif then == "suppression":
            tx.put_suppressions(
                [Suppression(ACCOUNT, "phone:+14155550997", SMS, T0, Source.INBOUND_KEYWORD)]
            )
    assert store.get_contact(ACCOUNT, "b") is None
    assert _counts(schema, "suppressions") == 0
    assert _counts(schema, "review_items") == 0
    assert _counts(schema, "inbound_messages") == 1


def test_a_deferred_inbound_conflict_surfaces_at_the_end_and_rolls_back_the_rest(
    store: PostgresStore, schema: str
) -> None:
    """put_inbound of a recorded message raises at the latest when the transaction ends; the
    suppression, departure and locked write queued with it do not commit."""
    _register(store, ["a"])
    with store.transaction(ACCOUNT) as tx:
        tx.put_inbound(InboundRecord(SMS, "SM-9", None, '{"n": 0}'))
    with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:  # noqa: PT012
        tx.lock_addresses(["phone:+14155550100"])
        _lock_and_write(tx, ["a"], SMS, SUBSCRIBED, "x")
        tx.put_suppressions(
            [Suppression(ACCOUNT, "phone:+14155550100", SMS, T0, Source.INBOUND_KEYWORD)]
        )
        tx.record_address_departures([("phone:+14155550100", "a")], T0)
        tx.put_inbound(InboundRecord(SMS, "SM-9", None, '{"n": 1}'))
    assert _counts(schema, "suppressions") == 0
    assert _counts(schema, "address_departures") == 0
    assert store.get_subscription(ACCOUNT, "a", SMS) is None
    assert list(store.events(ACCOUNT)) == []
    assert _counts(schema, "hourly_changes") == 0


# ------------------------------------------------------------ server errors of queued ones


def _forbid(schema: str, table: str, condition: str) -> None:
    """A careless DBA's constraint that makes the store's queued statement fail on the server."""
    _sql(f'ALTER TABLE "{schema}".{table} ADD CONSTRAINT forbidden CHECK ({condition}) NOT VALID')


@pytest.mark.parametrize(
    ("table", "condition"),
    [
        ("suppressions", "address_key <> 'phone:+14155550100'"),
        ("inbound_messages", "message_id <> 'SM-bad'"),
    ],
)
def test_a_queued_statement_failing_on_the_server_is_a_consent_error_and_commits_nothing(
    store: PostgresStore, schema: str, table: str, condition: str
) -> None:
    """A STOP whose queued suppression (or inbound record) violates a constraint: the error is
    a ConsentError (never a raw psycopg one), the contact stays subscribed, nothing commits, and
    the store goes on working (the connection went back clean)."""
    service = ConsentService(store)
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a", phone="+14155550100")])
    service.opt_in(ADMIN, ["a"], [SMS], evidence=EVIDENCE)
    before = list(store.events(ACCOUNT))
    _forbid(schema, table, condition)
    with pytest.raises(ConsentError) as raised:
        service.handle_inbound(_stop("+14155550100", "SM-bad"))
    assert not isinstance(raised.value, psycopg.Error)
    assert service.can_send(ADMIN, "a", SMS)
    assert list(store.events(ACCOUNT)) == before
    assert _counts(schema, "suppressions") == 0
    assert _counts(schema, "inbound_messages") == 0
    _check_log(store, schema)
    # The next transactions on the pool's connections work.
    for n in range(4):
        service.handle_inbound(_stop("+14155550101", f"SM-ok-{n}"))


def test_a_queued_departure_failing_on_the_server_rolls_back_the_address_edit(
    store: PostgresStore, schema: str
) -> None:
    """An address edit whose queued departure row fails on the server: ConsentError, the contact
    keeps its old number, no suppression is applied, no event."""
    service = ConsentService(store)
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a", phone="+14155550100")])
    service.opt_in(ADMIN, ["a"], [SMS], evidence=EVIDENCE)
    service.handle_inbound(_stop("+14155550200", "SM-1"))  # the new number said STOP
    events = list(store.events(ACCOUNT))
    _forbid(schema, "address_departures", "false")
    with pytest.raises(ConsentError) as raised:
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a", phone="+14155550200")])
    assert not isinstance(raised.value, psycopg.Error)
    contact = store.get_contact(ACCOUNT, "a")
    assert contact is not None
    assert contact.phone == "+14155550100"
    assert list(store.events(ACCOUNT)) == events
    assert service.can_send(ADMIN, "a", SMS)
    _check_log(store, schema)


def test_host_exception_after_queued_writes_commits_nothing(
    store: PostgresStore, schema: str
) -> None:
    """Host code raising inside store.transaction() after queued and held writes: nothing
    commits, no address lock outlives it, and the next transaction is clean."""
    _register(store, _ids("c", 20))
    with pytest.raises(RuntimeError), store.transaction(ACCOUNT) as tx:  # noqa: PT012
        tx.lock_addresses([f"phone:+1415555{n:04d}" for n in range(10)])
        _lock_and_write(tx, _ids("c", 20), SMS, SUBSCRIBED, "x")
        tx.note_opt_outs(_batch(UNSUBSCRIBED), [("c00000", SMS)])
        tx.put_suppressions(
            [Suppression(ACCOUNT, "phone:+14155550000", SMS, T0, Source.INBOUND_KEYWORD)]
        )
        tx.record_address_departures([("phone:+14155550000", "c00001")], T0)
        tx.put_inbound(InboundRecord(SMS, "SM-x", None, "{}"))
        raise RuntimeError("host bug")
    for table in ("suppressions", "address_departures", "inbound_messages", "events"):
        assert _counts(schema, table) == 0, table
    assert _counts(schema, "hourly_changes") == 0
    assert store.get_subscription(ACCOUNT, "c00000", SMS) is None
    # The address locks went with the rollback: another transaction takes them at once.
    done = threading.Event()

    def other() -> None:
        with store.transaction(ACCOUNT) as tx2:
            tx2.lock_addresses([f"phone:+1415555{n:04d}" for n in range(10)])
            tx2.get_inbound(SMS, "none")
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert done.wait(10)
    thread.join()
    # The next transactions start with no held or pending leftovers.
    with store.transaction(ACCOUNT) as tx:
        _lock_and_write(tx, ["c00005"], SMS, SUBSCRIBED, "y")
    events = _check_log(store, schema)
    assert [(e.contact_id, e.batch_id) for e in events] == [("c00005", "y")]


def test_every_queued_write_is_seen_by_the_reads_of_its_transaction(
    store: PostgresStore,
) -> None:
    """Queued statements travel before the next one: each read of the transaction sees them
    (suppressions, departures, inbound records, noted opt-outs, locked writes)."""
    _register(store, ["a", "b"])
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, "a", phone="+14155550100")])
    later = T0 + timedelta(hours=1)
    with store.transaction(ACCOUNT) as tx:
        tx.lock_addresses(["phone:+14155550100"])
        tx.put_suppressions(
            [Suppression(ACCOUNT, "phone:+14155550100", SMS, T0, Source.INBOUND_KEYWORD)]
        )
        assert [s.address_key for s in tx.get_suppressions(["phone:+14155550100"])] == [
            "phone:+14155550100"
        ]
        tx.record_address_departures([("phone:+14155550111", "b")], T0)
        assert tx.contacts_that_left("phone:+14155550111", T0 - timedelta(seconds=1)) == ["b"]
        owners = getattr(tx, "owners_of_address")  # noqa: B009
        assert owners("phone:+14155550111", T0 - timedelta(seconds=1)) == ["b"]
        assert owners("phone:+14155550100", T0) == ["a"]
        tx.put_inbound(InboundRecord(SMS, "SM-1", None, "{}"))
        assert tx.get_inbound(SMS, "SM-1") == InboundRecord(SMS, "SM-1", None, "{}")
        _lock_and_write(tx, ["a", "b"], SMS, UNSUBSCRIBED, "x")
        current = tx.lock_subscriptions(["a", "b"], [SMS])
        assert {k: (v.state, v.version) for k, v in current.items()} == {
            ("a", SMS): (UNSUBSCRIBED, 1),
            ("b", SMS): (UNSUBSCRIBED, 1),
        }
        tx.note_opt_outs(
            attrs.evolve(_batch(UNSUBSCRIBED, "n", later), opted_out_by=OptOutOrigin.SYSTEM),
            [("a", SMS)],
        )
        subs = {s.channel: s for s in tx.subscriptions_of_contact("a")}
        assert subs[SMS].last_opt_out_at == later
        assert OptOutOrigin.SYSTEM in subs[SMS].opted_out_by


# --------------------------------------------------------------------------- held events


def _story(store: PostgresStore | InMemoryStore) -> None:
    """One transaction mixing held small writes, a write that overflows the held events, the
    general path, and small writes after the spill; then transactions at the held boundary."""
    ids = _ids("c", 700)
    _register(store, ids)
    with store.transaction(ACCOUNT) as tx:
        _lock_and_write(tx, ids[:10], SMS, SUBSCRIBED, "small-1")
        _lock_and_write(tx, ids[10:20], EMAIL, SUBSCRIBED, "small-2")
        _lock_and_write(tx, ids[20:320], EMAIL, SUBSCRIBED, "big")  # overflows: spills
        _lock_and_write(tx, ids[:5], SMS, UNSUBSCRIBED, "small-3")
        # The general path: a pair not locked at the expected version.
        tx.write_changes(_batch(SUBSCRIBED, "general"), [PairChange(ids[400], SMS, NEVER, 0)])
        _lock_and_write(tx, ids[5:8], SMS, UNSUBSCRIBED, "small-4")
    # Exactly _HELD_MAX held events, then one more in a second write (the spill boundary).
    with store.transaction(ACCOUNT) as tx:
        _lock_and_write(tx, ids[500:700], SMS, SUBSCRIBED, "edge-1")
        _lock_and_write(tx, ids[444:500], SMS, SUBSCRIBED, "edge-2")
        _lock_and_write(tx, ids[443:444], SMS, SUBSCRIBED, "edge-3")
    # A batch reused by two writes of one transaction, held.
    with store.transaction(ACCOUNT) as tx:
        _lock_and_write(tx, ids[600:603], SMS, UNSUBSCRIBED, "again")
        _lock_and_write(tx, ids[603:606], SMS, UNSUBSCRIBED, "again")
        _lock_and_write(tx, ids[600:602], SMS, SUBSCRIBED, "back")


def _summary(store: PostgresStore | InMemoryStore) -> list[tuple[Any, ...]]:
    return [
        (e.sequence, e.contact_id, e.channel.key, e.previous_state, e.new_state, e.batch_id)
        for e in store.events(ACCOUNT)
    ]


def test_held_and_pending_events_in_one_transaction_match_the_memory_store(
    store: PostgresStore, schema: str
) -> None:
    """Held small writes, an overflow into the pending table, the general path and held writes
    after it, and the _HELD_MAX boundary: the same events, in the same order, with the same
    sequences, as the in-memory store; dense sequences, replay and roll-ups agree."""
    memory = InMemoryStore()
    _story(memory)
    _story(store)
    assert _summary(store) == _summary(memory)
    _check_log(store, schema)


def test_held_writes_then_a_staged_bulk_write_in_one_transaction(
    store: PostgresStore, schema: str
) -> None:
    """Held events followed by the set-based path (which needs the pending table) and more held
    writes: every event is there once, in call order, with dense sequences."""
    ids = _ids("s", 400)
    _register(store, ids)
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        _lock_and_write(tx, ids[:3], SMS, SUBSCRIBED, "held-1")
        tx.stage_contacts(ids)
        situations = tx.staged_situations([SMS])
        never = [s.key for s in situations if s.key[1] is NEVER]
        written = tx.apply_staged(_batch(UNSUBSCRIBED, "staged"), [SMS], never, [])
        assert written == 397
        _lock_and_write(tx, ids[:2], SMS, UNSUBSCRIBED, "held-2")
    events = _check_log(store, schema)
    assert Counter(e.batch_id for e in events) == {"held-1": 3, "staged": 397, "held-2": 2}
    assert [e.batch_id for e in events[:3]] == ["held-1"] * 3
    assert [e.batch_id for e in events[-2:]] == ["held-2"] * 2
    assert {e.contact_id for e in events if e.batch_id == "staged"} == set(ids[3:])


def test_service_bulk_calls_after_small_ones_keep_a_dense_replayable_log(
    store: PostgresStore, schema: str
) -> None:
    """Small service calls (held events) and bulk opt_in/unsubscribe of thousands of contacts
    (staged), with STOPs between: a dense log, equal to the replay, roll-ups that match, and the
    change feed delivering every event once, in order."""
    service = ConsentService(store)
    ids = _ids("p", 3000)
    service.upsert_contacts(
        ADMIN, [Contact(ACCOUNT, cid, phone=f"+1415{n:07d}") for n, cid in enumerate(ids)]
    )
    service.opt_in(ADMIN, ids[:5], [SMS, EMAIL], evidence=EVIDENCE)
    service.opt_in(ADMIN, ids, [SMS, EMAIL], evidence=EVIDENCE)
    service.handle_inbound(_stop("+14150000007", "SM-7"))
    service.unsubscribe(ADMIN, ids[::2], [SMS])
    service.handle_inbound(_stop("+14150000009", "SM-9"))
    service.opt_in(ADMIN, ids[::2], [SMS], evidence=EVIDENCE, partial=True)
    events = _check_log(store, schema)
    assert not service.can_send(ADMIN, ids[7], SMS)
    assert not service.can_send(ADMIN, ids[9], SMS)
    fed: list[int] = []
    cursor: str | None = None
    while True:
        page = service.changes(ADMIN, after=cursor, limit=777)
        fed.extend(e.sequence for e in page.events)
        cursor = page.next_cursor
        if not page.events:
            break
    assert fed == [e.sequence for e in events]


def test_erasure_after_held_events_leaves_no_trace_of_the_id(
    store: PostgresStore, schema: str
) -> None:
    """erase_contact unsubscribes the contact (held events) then erases it in the same
    transaction: those events carry the pseudonym, not the id, and the log stays dense."""
    service = ConsentService(store, erasure_key=KEY)
    service.upsert_contacts(
        ADMIN,
        [
            Contact(ACCOUNT, "victim", phone="+14155550100", email="v@example.com"),
            Contact(ACCOUNT, "other", phone="+14155550101"),
        ],
    )
    service.opt_in(ADMIN, ["victim", "other"], [SMS, EMAIL], evidence=EVIDENCE, partial=True)
    result = service.erase_contact(ADMIN, "victim", reason="request")
    assert len(result.unsubscribed) == 2
    events = _check_log(store, schema)
    assert all(e.contact_id != "victim" for e in events)
    assert all(e.actor.id != "victim" for e in events)
    erased = [e for e in events if e.contact_id == result.pseudonym]
    assert [(e.previous_state, e.new_state) for e in erased] == [
        (NEVER, SUBSCRIBED),
        (NEVER, SUBSCRIBED),
        (SUBSCRIBED, UNSUBSCRIBED),
        (SUBSCRIBED, UNSUBSCRIBED),
    ]
    rows = _sql(f'SELECT count(*) FROM "{schema}".events WHERE contact_id = %s', ("victim",))
    assert rows[0][0] == 0
    # The id is free again, and the erased number is suppressed for a new contact.
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "victim", phone="+14155550100")])
    service.opt_in(ADMIN, ["victim"], [SMS], evidence=EVIDENCE, partial=True)
    assert not service.can_send(ADMIN, "victim", SMS)


# -------------------------------------------------------------------------- concurrency


def _threads(actions: Sequence[Callable[[], object]], timeout: float = 60) -> list[str]:
    """Run *actions* in threads released together; their errors."""
    start = threading.Barrier(len(actions))
    errors: list[str] = []

    def run(action: Callable[[], object]) -> None:
        try:
            start.wait(30)
            action()
        except BaseException as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            errors.append("a thread did not finish")
    return errors


def _handle(service: ConsentService, message: InboundMessage, into: list[InboundResult]) -> None:
    into.append(service.handle_inbound(message))


def test_racing_deliveries_of_one_stop_store_one_result(store: PostgresStore, schema: str) -> None:
    """Six deliveries of one STOP race, round after round: exactly one is not replayed, all
    return its result, one unsubscribe event per pair, one inbound record, one suppression."""
    service = ConsentService(store)
    rounds = 8
    service.upsert_contacts(
        ADMIN,
        [Contact(ACCOUNT, f"r{n}", phone=f"+1415666{n:04d}") for n in range(rounds)],
    )
    service.opt_in(
        ADMIN, [f"r{n}" for n in range(rounds)], [SMS, EMAIL], evidence=EVIDENCE, partial=True
    )
    for n in range(rounds):
        message = _stop(f"+1415666{n:04d}", f"SM-{n}")
        results: list[InboundResult] = []
        errors = _threads([functools.partial(_handle, service, message, results) for _ in range(6)])
        assert errors == []
        assert len(results) == 6
        assert sum(not r.replayed for r in results) == 1
        fresh = next(r for r in results if not r.replayed)
        assert fresh.outcome is InboundOutcome.OPTED_OUT
        assert {attrs.evolve(r, replayed=False) for r in results} == {fresh}
        unsubscribes = [
            e for e in store.events(ACCOUNT, contact_id=f"r{n}") if e.new_state is UNSUBSCRIBED
        ]
        # One event per pair of the group (SMS's and the never-subscribed ones' records).
        assert SMS in {e.channel for e in unsubscribes}
        assert set(Counter(e.channel for e in unsubscribes).values()) == {1}
        assert not service.can_send(ADMIN, f"r{n}", SMS)
    assert _counts(schema, "inbound_messages") == rounds
    _check_log(store, schema)


def test_a_reused_message_id_from_another_sender_racing_commits_only_the_first(
    store: PostgresStore, schema: str
) -> None:
    """Two senders' messages with one id race (the address locks differ, so they do not wait
    for each other there): one is handled, the other is a ConflictError and leaves no trace
    (its suppression and its contact's unsubscribe roll back with its failed check)."""
    service = ConsentService(store)
    for n in range(6):
        a, b = f"+1415777{n:04d}", f"+1415888{n:04d}"
        service.upsert_contacts(
            ADMIN, [Contact(ACCOUNT, f"a{n}", phone=a), Contact(ACCOUNT, f"b{n}", phone=b)]
        )
        service.opt_in(ADMIN, [f"a{n}", f"b{n}"], [SMS], evidence=EVIDENCE)
        results: list[InboundResult] = []
        errors = race(
            functools.partial(_handle, service, _stop(a, f"SM-{n}"), results),
            functools.partial(_handle, service, _stop(b, f"SM-{n}"), results),
        )
        assert len(results) == 1, (results, errors)
        assert len(errors) == 1
        assert "ConflictError" in errors[0]
        winner = results[0].sender
        loser = f"+1415888{n:04d}" if winner.startswith("+1415777") else f"+1415777{n:04d}"
        loser_id = ("b" if loser.startswith("+1415888") else "a") + str(n)
        assert service.can_send(ADMIN, loser_id, SMS)
        keys = {row[0] for row in _sql(f'SELECT address_key FROM "{schema}".suppressions')}
        assert f"phone:{loser}" not in keys
        assert f"phone:{winner}" in keys
    _check_log(store, schema)


def test_stop_racing_registrations_of_its_number_many_threads(
    store: PostgresStore, schema: str
) -> None:
    """Many STOPs from new numbers race the registrations of those numbers (and an address edit
    onto one): afterwards an import's opt-in never makes a STOPped number sendable."""
    service = ConsentService(store)
    importer = Actor.system(ACCOUNT, "importer")
    rounds, width = 6, 5
    for round_ in range(rounds):
        numbers = [f"+1415999{round_:02d}{k:02d}" for k in range(width)]
        moved = f"mv{round_}"
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, moved, phone=f"+1415000{round_:04d}")])
        service.opt_in(ADMIN, [moved], [SMS], evidence=EVIDENCE)
        actions: list[Callable[[], object]] = []
        for k, number in enumerate(numbers):
            actions.append(
                functools.partial(service.handle_inbound, _stop(number, f"S{round_}{k}"))
            )
            actions.append(
                functools.partial(
                    service.upsert_contacts,
                    ADMIN,
                    [Contact(ACCOUNT, f"n{round_}-{k}", phone=number)],
                )
            )
        actions.append(
            functools.partial(
                service.upsert_contacts, ADMIN, [Contact(ACCOUNT, moved, phone=numbers[0])]
            )
        )
        errors = _threads(actions)
        assert errors == []
        ids = [f"n{round_}-{k}" for k in range(width)]
        service.opt_in(importer, ids, [SMS], evidence=EVIDENCE, source=Source.IMPORT, partial=True)
        for cid in [*ids, moved]:
            assert not service.can_send(ADMIN, cid, SMS), (round_, cid)
    _check_log(store, schema)


def test_stop_and_start_racing_end_in_the_last_word(store: PostgresStore, schema: str) -> None:
    """A STOP and a START from one number race round after round: whatever the order, the pair's
    state follows the order of handling, the suppression is the later-received START's, and the
    log replays."""
    service = ConsentService(store)
    number = "+14155551234"
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "s", phone=number)])
    service.opt_in(ADMIN, ["s"], [SMS], evidence=EVIDENCE)
    for n in range(10):
        received = datetime.now(UTC) - timedelta(seconds=1)
        results: list[InboundResult] = []
        stop_message = InboundMessage(ACCOUNT, SMS, number, "STOP", f"stop-{n}", received)
        start_message = InboundMessage(
            ACCOUNT, SMS, number, "START", f"start-{n}", received + timedelta(milliseconds=1)
        )
        errors = race(
            functools.partial(_handle, service, stop_message, results),
            functools.partial(_handle, service, start_message, results),
        )
        assert errors == []
        sub = store.get_subscription(ACCOUNT, "s", SMS)
        assert sub is not None
        suppression = [
            row[0]
            for row in _sql(
                f'SELECT active FROM "{schema}".suppressions WHERE address_key = %s '
                "AND channel = 'sms'",
                (f"phone:{number}",),
            )
        ]
        # The START was received later: it is the number's last word whichever was handled
        # first (a STOP delivered after it does not override it), and the pair follows the
        # order of handling (a START handled first finds nothing to undo).
        assert suppression == [False]
        assert service.can_send(ADMIN, "s", SMS) is (sub.state is SUBSCRIBED)
        assert {r.outcome for r in results} <= {
            InboundOutcome.OPTED_OUT,
            InboundOutcome.OPTED_IN,
            InboundOutcome.NOTHING_TO_UNDO,
            InboundOutcome.SUPERSEDED,
        }
        # Back to subscribed for the next round.
        if sub.state is UNSUBSCRIBED:
            service.handle_inbound(
                InboundMessage(ACCOUNT, SMS, number, "START", f"fix-{n}", datetime.now(UTC))
            )
        time.sleep(0.002)
    _check_log(store, schema)


def test_many_threads_of_small_writes_keep_commit_ordered_dense_sequences(
    store: PostgresStore, schema: str
) -> None:
    """Twelve threads of small service calls (held events) and two bulk ones at once: the
    sequences are dense and unique, the log replays, the roll-ups match."""
    service = ConsentService(store)
    ids = _ids("m", 600)
    service.upsert_contacts(
        ADMIN, [Contact(ACCOUNT, cid, phone=f"+1416{n:07d}") for n, cid in enumerate(ids)]
    )

    def small(k: int) -> None:
        for j in range(10):
            cid = ids[(k * 37 + j * 11) % len(ids)]
            if j % 3 == 2:
                service.handle_inbound(_stop(f"+1416{ids.index(cid):07d}", f"m-{k}-{j}"))
            elif j % 3 == 1:
                service.unsubscribe(ADMIN, [cid], [SMS])
            else:
                service.opt_in(ADMIN, [cid], [SMS, EMAIL], evidence=EVIDENCE, partial=True)

    def bulk(k: int) -> None:
        for _ in range(2):
            if k:
                service.opt_in(ADMIN, ids, [EMAIL], evidence=EVIDENCE, partial=True)
            else:
                service.unsubscribe(ADMIN, ids[::2], [EMAIL])

    errors = _threads(
        [functools.partial(small, k) for k in range(12)]
        + [functools.partial(bulk, k) for k in range(2)],
        timeout=120,
    )
    assert errors == []
    _check_log(store, schema)


def test_stop_racing_the_erasure_of_its_contact(store: PostgresStore, schema: str) -> None:
    """A STOP from a contact's number races the erasure of that contact, round after round: the
    id never survives in the log, the log replays, and a new contact with the number is never
    sendable after an import."""
    service = ConsentService(store, erasure_key=KEY)
    importer = Actor.system(ACCOUNT, "importer")
    for n in range(6):
        cid, number = f"e{n}", f"+1415321{n:04d}"
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid, phone=number)])
        service.opt_in(ADMIN, [cid], [SMS], evidence=EVIDENCE)
        errors = race(
            functools.partial(service.handle_inbound, _stop(number, f"SM-e{n}")),
            functools.partial(service.erase_contact, ADMIN, cid, reason="request"),
        )
        assert errors == []
        assert not any(e.contact_id == cid for e in store.events(ACCOUNT))
        rows = _sql(
            f'SELECT count(*) FROM "{schema}".inbound_messages WHERE result LIKE %s',
            (f'%"{cid}"%',),
        )
        assert rows[0][0] == 0
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, f"new{n}", phone=number)])
        service.opt_in(
            importer, [f"new{n}"], [SMS], evidence=EVIDENCE, source=Source.IMPORT, partial=True
        )
        assert not service.can_send(ADMIN, f"new{n}", SMS)
    _check_log(store, schema)


def test_a_late_stop_reaches_the_contact_that_left_the_number(
    store: PostgresStore, schema: str
) -> None:
    """A STOP received before an address edit but delivered after it reaches the contact that
    had the number then (owners_of_address: present and departed contacts in one query), and
    not a contact that took the number later."""
    clock_start = datetime.now(UTC) - timedelta(minutes=10)
    service = ConsentService(store)
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "old", phone="+14155550100")])
    service.opt_in(ADMIN, ["old"], [SMS], evidence=EVIDENCE)
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "old", phone="+14155550200")])
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "new", phone="+14155550100")])
    service.opt_in(ADMIN, ["new"], [SMS], evidence=EVIDENCE, partial=True)
    result = service.handle_inbound(
        InboundMessage(ACCOUNT, SMS, "+14155550100", "STOP", "SM-late", clock_start)
    )
    assert "old" in result.contact_ids
    assert not service.can_send(ADMIN, "old", SMS)
    _check_log(store, schema)


def test_a_write_of_pairs_locked_before_a_staged_read_of_them_is_no_conflict(
    store: PostgresStore, schema: str
) -> None:
    """lock_subscriptions, then a staged read over the same pairs (which locks them again),
    then write_changes at the versions the first lock read: the versions match, nobody else can
    have changed the pairs, so the write must succeed (a ConflictError here, deferred to the
    end of the transaction, would be spurious)."""
    ids = _ids("w", 250)
    _register(store, ids)
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        current = tx.lock_subscriptions(ids[:2], [SMS])
        assert current == {}
        tx.stage_contacts(ids)
        assert sum(s.pairs for s in tx.staged_situations([SMS])) == 250
        tx.write_changes(
            _batch(SUBSCRIBED, "after-staged"),
            [PairChange(cid, SMS, NEVER, 0) for cid in ids[:2]],
        )
    events = _check_log(store, schema)
    assert [(e.contact_id, e.batch_id) for e in events] == [
        (ids[0], "after-staged"),
        (ids[1], "after-staged"),
    ]


def test_a_queued_statement_failing_before_it_is_sent_does_not_drop_the_ones_after_it(
    store: PostgresStore, schema: str
) -> None:
    """A queued statement whose parameters the driver refuses (a NUL character in a message id)
    fails at the next round trip, as a ConsentError.  A host that catches it and goes on must
    not commit a transaction that silently lost the statements queued after the bad one (here
    a suppression: a STOP that would be forgotten)."""
    with pytest.raises(ConsentError), store.transaction(ACCOUNT) as tx:  # noqa: PT012
        tx.put_inbound(InboundRecord(SMS, "bad\x00id", None, "{}"))
        tx.put_suppressions(
            [Suppression(ACCOUNT, "phone:+14155550100", SMS, T0, Source.INBOUND_KEYWORD)]
        )
        with pytest.raises(ConsentError) as raised:
            tx.get_suppressions(["phone:+14155550100"])
        assert not isinstance(raised.value, psycopg.Error)
        # The host goes on; what it wrote must either all commit or the block must raise.
        tx.put_review_item(_review_item("SM-r"))
    assert _counts(schema, "review_items") == 0
