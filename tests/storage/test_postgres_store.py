"""The PostgreSQL store passes the public conformance suite, plus checks of what only it has:
migrations, pools, PgBouncer mode, locking of absent pairs, commit-ordered events, error
translation.  Needs ``CONSENTKIT_TEST_POSTGRES_DSN``; every store gets a fresh schema."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from consentkit.channels import EMAIL, SMS
from consentkit.errors import ConflictError, StorageError, ValidationError
from consentkit.model import (
    Actor,
    Contact,
    Evidence,
    Source,
    SubscriptionState,
)
from consentkit.service import ConsentService
from consentkit.storage.base import ChangeBatch, PairChange, SubscriptionFilter
from consentkit.storage.postgres import SCHEMA_VERSION, PostgresStore
from consentkit.testing import StoreConformance
from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import check_replay
from tests.storage._pg_support import (
    drop_schemas,
    new_schema,
    postgres_marks,
    require_dsn,
)

pytestmark = postgres_marks

ACCOUNT = "acme"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("web_form", "Yes, text me.", "v1")


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas_at_end() -> Iterator[None]:
    """Drops every schema the module's stores created."""
    yield
    drop_schemas()


@pytest.fixture
def schema() -> str:
    """A fresh schema name."""
    return new_schema("t")


@pytest.fixture
def store(schema: str) -> Iterator[PostgresStore]:
    """A store on a fresh schema, closed after the test."""
    made = PostgresStore(require_dsn(), schema=schema)
    try:
        yield made
    finally:
        made.close()


def _batch(state: SubscriptionState, occurred_at: datetime = T0) -> ChangeBatch:
    return ChangeBatch(
        account=ACCOUNT,
        new_state=state,
        actor=ADMIN,
        source=Source.API,
        occurred_at=occurred_at,
        recorded_at=occurred_at,
        batch_id="b",
        evidence=EVIDENCE if state is SubscriptionState.SUBSCRIBED else None,
    )


def _register(store: PostgresStore, *ids: str) -> None:
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, cid) for cid in ids])


class TestPostgresStoreConformance(StoreConformance):
    """Runs every contract test against :class:`PostgresStore`, each store in a fresh schema."""

    def make_store(self, directory: Path) -> PostgresStore:
        """A fresh PostgreSQL store in a new schema (the directory is not used)."""
        return PostgresStore(require_dsn(), schema=new_schema("c"))


# ---------------------------------------------------------------------- construction


def _migrate_in_process(dsn: str, schema: str, start: object) -> None:
    """Process body: wait for the others, then open (and so migrate) the store."""
    assert hasattr(start, "wait")
    start.wait(30)
    PostgresStore(dsn, schema=schema).close()


def test_migrations_are_idempotent(schema: str) -> None:
    """Opening a store on an existing schema keeps its data and applies no migration twice."""
    dsn = require_dsn()
    with PostgresStore(dsn, schema=schema) as first:
        _register(first, "a")
    with PostgresStore(dsn, schema=schema) as second:
        assert second.get_contact(ACCOUNT, "a") == Contact(ACCOUNT, "a")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_migrations').fetchall()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_concurrent_migrations_from_processes(schema: str) -> None:
    """Four processes creating the same schema at the same moment all succeed, once each."""
    dsn = require_dsn()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    processes = [
        context.Process(target=_migrate_in_process, args=(dsn, schema, start)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_migrations').fetchall()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_create_schema_false_requires_a_migrated_schema(schema: str) -> None:
    """Without create_schema the store refuses a missing schema and accepts a migrated one."""
    dsn = require_dsn()
    with pytest.raises(StorageError, match="create_schema=True"):
        PostgresStore(dsn, schema=schema, create_schema=False)
    PostgresStore(dsn, schema=schema).close()
    with PostgresStore(dsn, schema=schema, create_schema=False) as store:
        assert store.get_contact(ACCOUNT, "a") is None


def test_newer_schema_is_refused(store: PostgresStore, schema: str) -> None:
    """A schema migrated by a newer consentkit is refused with a StorageError."""
    dsn = require_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO "{schema}".schema_migrations (version, description)
                VALUES (%s, 'from the future')""",
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(StorageError, match="upgrade consentkit"):
        PostgresStore(dsn, schema=schema)


def test_bad_arguments_are_refused() -> None:
    """Both or neither of conninfo and pool, or an odd schema name, are validation errors."""
    dsn = require_dsn()
    with pytest.raises(ValidationError, match="exactly one"):
        PostgresStore()
    with (
        ConnectionPool(dsn, min_size=1, open=True) as pool,
        pytest.raises(ValidationError, match="exactly one"),
    ):
        PostgresStore(dsn, pool=pool)
    with pytest.raises(ValidationError, match="schema"):
        PostgresStore(dsn, schema='x"; DROP TABLE y; --')
    with pytest.raises(ValidationError, match="max_retries"):
        PostgresStore(dsn, max_retries=-1)


def test_unreachable_server_is_a_storage_error() -> None:
    """A DSN nobody listens on fails at once with a StorageError, not a driver error."""
    with pytest.raises(StorageError, match="cannot connect"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


def test_store_on_a_host_pool_leaves_the_pool_as_it_was(schema: str) -> None:
    """A store on the host's pool restores each connection's settings and never closes the pool."""
    dsn = require_dsn()
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema)
        service = ConsentService(store)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a")])
        service.opt_in(ADMIN, ["a"], [SMS], evidence=EVIDENCE)
        assert service.can_send(ADMIN, "a", SMS)
        store.close()
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.isolation_level is None
            assert conn.prepare_threshold == 5
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_closed_store_raises_storage_error(schema: str) -> None:
    """Using a store after close() is a StorageError that says so."""
    store = PostgresStore(require_dsn(), schema=schema)
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.get_contact(ACCOUNT, "a")


@pytest.mark.parametrize(("threshold", "prepares"), [(None, False), (0, True)])
def test_prepare_threshold(schema: str, threshold: int | None, prepares: bool) -> None:
    """prepare_threshold=None (PgBouncer transaction mode) never prepares a statement."""
    dsn = require_dsn()
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema, prepare_threshold=threshold)
        service = ConsentService(store)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, f"c{i}") for i in range(3)])
        for i in range(8):
            service.opt_in(ADMIN, [f"c{i % 3}"], [SMS, EMAIL], evidence=EVIDENCE)
            service.unsubscribe(ADMIN, [f"c{i % 3}"], [SMS])
            assert not service.can_send(ADMIN, f"c{i % 3}", SMS)
        assert len(list(store.events(ACCOUNT))) == 9
        with pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert row is not None
        assert (row[0] > 0) is prepares


# ---------------------------------------------------------------------- locking and errors


def test_placeholder_rows_are_invisible(store: PostgresStore) -> None:
    """Pairs locked but never written read as never subscribed everywhere."""
    _register(store, "a", "b")
    with store.transaction(ACCOUNT) as tx:
        assert tx.lock_subscriptions(["a", "b"], [SMS, EMAIL]) == {}
    assert store.get_subscription(ACCOUNT, "a", SMS) is None
    assert store.subscriptions_of(ACCOUNT, "a") == []
    assert store.subscribed_among(ACCOUNT, SMS, ["a", "b"]) == set()
    for state in (SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED):
        where = SubscriptionFilter(SMS, state)
        assert store.list_subscriptions(ACCOUNT, where, after=None, limit=10) == []
    assert store.totals_at(ACCOUNT, [T0 + timedelta(days=400)]) == [{}]
    with store.transaction(ACCOUNT) as tx:
        tx.write_changes(
            _batch(SubscriptionState.SUBSCRIBED),
            [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    sub = store.get_subscription(ACCOUNT, "a", SMS)
    assert sub is not None
    assert sub.version == 1


def test_absent_pair_lock_blocks_a_second_writer(store: PostgresStore) -> None:
    """A transaction locking a never-subscribed pair makes a second locker wait for its outcome."""
    _register(store, "a")
    locked = threading.Event()
    seen: list[int] = []

    def second() -> None:
        locked.wait(10)
        with store.transaction(ACCOUNT) as tx:
            found = tx.lock_subscriptions(["a"], [SMS])
            seen.append(found[("a", SMS)].version)

    thread = threading.Thread(target=second)
    thread.start()
    with store.transaction(ACCOUNT) as tx:
        assert tx.lock_subscriptions(["a"], [SMS]) == {}
        locked.set()
        time.sleep(0.3)
        assert seen == []
        tx.write_changes(
            _batch(SubscriptionState.UNSUBSCRIBED),
            [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    thread.join(10)
    assert seen == [1]


def test_concurrent_duplicate_inbound_blocks_then_conflicts(store: PostgresStore) -> None:
    """A second put of an inbound id waits for the first transaction, then is a ConflictError."""
    inserted = threading.Event()
    outcome: list[str] = []

    def second() -> None:
        inserted.wait(10)
        try:
            with store.transaction(ACCOUNT) as tx:
                tx.put_inbound_result("SM-1", '{"n": 2}')
            outcome.append("stored")
        except ConflictError:
            outcome.append("conflict")

    thread = threading.Thread(target=second)
    thread.start()
    with store.transaction(ACCOUNT) as tx:
        tx.put_inbound_result("SM-1", '{"n": 1}')
        inserted.set()
        time.sleep(0.3)
        assert outcome == []
    thread.join(10)
    assert outcome == ["conflict"]
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_inbound_result("SM-1") == '{"n": 1}'


def test_duplicate_inbound_after_rollback_is_stored(store: PostgresStore) -> None:
    """When the first transaction with an inbound id rolls back, the waiting one stores it."""
    inserted = threading.Event()
    outcome: list[str] = []

    def second() -> None:
        inserted.wait(10)
        with store.transaction(ACCOUNT) as tx:
            tx.put_inbound_result("SM-2", '{"n": 2}')
        outcome.append("stored")

    thread = threading.Thread(target=second)
    thread.start()

    def first() -> None:
        with store.transaction(ACCOUNT) as tx:
            tx.put_inbound_result("SM-2", '{"n": 1}')
            inserted.set()
            time.sleep(0.3)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        first()
    thread.join(10)
    assert outcome == ["stored"]


def test_events_are_numbered_in_commit_order(store: PostgresStore) -> None:
    """A transaction that commits later gets later sequences, even if it wrote first."""
    _register(store, "early", "late")
    written = threading.Event()
    release = threading.Event()

    def slow_writer() -> None:
        with store.transaction(ACCOUNT) as tx:
            tx.lock_subscriptions(["early"], [SMS])
            tx.write_changes(
                _batch(SubscriptionState.UNSUBSCRIBED),
                [PairChange("early", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
            )
            written.set()
            release.wait(10)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    written.wait(10)
    with store.transaction(ACCOUNT) as tx:
        tx.lock_subscriptions(["late"], [SMS])
        tx.write_changes(
            _batch(SubscriptionState.UNSUBSCRIBED),
            [PairChange("late", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    seen_first = [(e.sequence, e.contact_id) for e in store.events(ACCOUNT)]
    release.set()
    thread.join(10)
    assert seen_first == [(1, "late")]
    assert [(e.sequence, e.contact_id) for e in store.events(ACCOUNT, after=1)] == [(2, "early")]


def test_deadlock_between_multi_chunk_writers_is_a_conflict(store: PostgresStore) -> None:
    """Two transactions locking the same pairs in opposite chunk order: one gets ConflictError."""
    _register(store, "a", "b")
    first_locked = threading.Barrier(2)
    outcomes: list[str] = []

    def writer(order: list[str]) -> None:
        try:
            with store.transaction(ACCOUNT) as tx:
                tx.lock_subscriptions([order[0]], [SMS])
                first_locked.wait(10)
                tx.lock_subscriptions([order[1]], [SMS])
            outcomes.append("committed")
        except ConflictError as error:
            outcomes.append("conflict: deadlock" if "deadlock" in str(error) else repr(error))

    threads = [threading.Thread(target=writer, args=(o,)) for o in (["a", "b"], ["b", "a"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["committed", "conflict: deadlock"]


def test_stale_expected_version_is_a_conflict(store: PostgresStore) -> None:
    """The inbox toggle with a stale expected_version raises ConflictError and writes nothing."""
    service = ConsentService(store, clock=FakeClock(T0, tick=timedelta(seconds=1)))
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a")])
    service.opt_in(ADMIN, ["a"], [SMS], evidence=EVIDENCE)
    with pytest.raises(ConflictError):
        service.set_subscribed(ADMIN, "a", SMS, False, expected_version=0)
    service.set_subscribed(ADMIN, "a", SMS, False, expected_version=1)
    assert len(list(store.events(ACCOUNT))) == 2
    check_replay(store, ACCOUNT)


def test_lost_connection_is_retried_for_reads(schema: str) -> None:
    """A read on a connection the server killed is retried on a new one and succeeds."""
    dsn = require_dsn()
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema)
        _register(store, "a")
        with pool.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        with psycopg.connect(dsn, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        assert store.get_contact(ACCOUNT, "a") == Contact(ACCOUNT, "a")


def test_missing_table_is_a_storage_error(store: PostgresStore, schema: str) -> None:
    """A schema damaged behind the store's back gives a StorageError naming the fix."""
    with psycopg.connect(require_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{schema}".contacts')
    with pytest.raises(StorageError, match="create_schema=True"):
        store.get_contact(ACCOUNT, "a")


def test_lost_connection_is_replaced_before_a_write(schema: str) -> None:
    """A write on a pooled connection the server killed begins again on a new one."""
    dsn = require_dsn()
    with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema)
        service = ConsentService(store)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a")])
        with pool.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        with psycopg.connect(dsn, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        assert service.unsubscribe(ADMIN, "a", SMS).changed_count == 1
        assert len(list(store.events(ACCOUNT))) == 1
