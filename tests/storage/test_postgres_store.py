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

import attrs
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from consentkit.channels import EMAIL, SMS
from consentkit.errors import ConflictError, StorageError, ValidationError
from consentkit.model import (
    Actor,
    ActorKind,
    Contact,
    Evidence,
    OptOutOrigin,
    Source,
    SubscriptionState,
    Suppression,
)
from consentkit.service import ConsentService
from consentkit.storage.base import ChangeBatch, PairChange, SubscriptionFilter
from consentkit.storage.postgres import _MIGRATIONS, SCHEMA_VERSION, PostgresStore
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


def _create_version_1(dsn: str, schema: str) -> None:
    """Build *schema* as consentkit's schema version 1 left it (the first released migration)."""
    quoted = f'"{schema}"'
    version, description, statements = _MIGRATIONS[0]
    assert version == 1
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE SCHEMA {quoted}")
        conn.execute(
            f"""CREATE TABLE {quoted}.schema_migrations (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
        for statement in statements:
            conn.execute(statement.replace("__S__", quoted))
        conn.execute(
            f"INSERT INTO {quoted}.schema_migrations (version, description) VALUES (1, %s)",
            (description,),
        )


def test_migration_from_version_1_back_fills_opt_out_records(schema: str) -> None:
    """Rows written at schema version 1 read back after the migration with who opted out (from
    the last change's source and actor kind) and when, and suppressions come back active."""
    dsn = require_dsn()
    _create_version_1(dsn, schema)
    rows = [
        # contact, channel, state, version, at (hours after T0), changed_by, source, reason
        ("stop", "sms", "unsubscribed", 2, 1, "contact", "inbound_keyword", "stop_keyword"),
        ("list", "sms", "unsubscribed", 1, 2, "system", "suppression", None),
        ("admin", "sms", "unsubscribed", 2, 3, "admin", "api", "complaint"),
        ("member", "sms", "unsubscribed", 2, 4, "member", "contacts_page", None),
        ("bounce", "email", "unsubscribed", 1, 5, "system", "system", "hard_bounce"),
        ("fine", "sms", "subscribed", 1, 6, "admin", "import", None),
        ("held", "sms", "never_subscribed", 0, None, None, None, None),
    ]
    with psycopg.connect(dsn) as conn:
        for cid, ch, state, version, hours, by, source, reason in rows:
            conn.execute(
                f"""INSERT INTO "{schema}".subscriptions (account, contact_id, channel, state,
                    version, updated_at, changed_by, source, reason)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    ACCOUNT, cid, ch, state, version,
                    None if hours is None else T0 + timedelta(hours=hours), by, source, reason,
                ),
            )
        conn.execute(
            f"""INSERT INTO "{schema}".suppressions (account, address_key, channel, occurred_at,
                source, inbound_message_id) VALUES (%s, 'phone:+14155550100', 'sms', %s,
                'inbound_keyword', 'SM-1')""",
            (ACCOUNT, T0),
        )
    with PostgresStore(dsn, schema=schema) as store:
        expected = {
            "stop": (frozenset({OptOutOrigin.CONTACT}), T0 + timedelta(hours=1)),
            "list": (frozenset({OptOutOrigin.SUPPRESSION}), T0 + timedelta(hours=2)),
            "admin": (frozenset({OptOutOrigin.ADMIN}), T0 + timedelta(hours=3)),
            "member": (frozenset({OptOutOrigin.MEMBER}), T0 + timedelta(hours=4)),
        }
        for cid, (origins, at) in expected.items():
            sub = store.get_subscription(ACCOUNT, cid, SMS)
            assert sub is not None
            assert (sub.opted_out_by, sub.opted_out_via, sub.last_opt_out_at) == (
                origins, None, at
            )
        bounce = store.get_subscription(ACCOUNT, "bounce", EMAIL)
        assert bounce is not None
        assert (bounce.opted_out_by, bounce.last_opt_out_at, bounce.reason) == (
            frozenset({OptOutOrigin.SYSTEM}), T0 + timedelta(hours=5), "hard_bounce"
        )
        fine = store.get_subscription(ACCOUNT, "fine", SMS)
        assert fine is not None
        assert (fine.opted_out_by, fine.opted_out_via, fine.last_opt_out_at) == (
            frozenset(), None, None
        )
        assert store.get_subscription(ACCOUNT, "held", SMS) is None
        with store.transaction(ACCOUNT) as tx:
            assert tx.get_suppressions(["phone:+14155550100"]) == [
                Suppression(
                    ACCOUNT, "phone:+14155550100", SMS, T0, Source.INBOUND_KEYWORD, "SM-1"
                )
            ]
            # The migrated placeholder row still locks and writes like a new one.
            tx.lock_subscriptions(["held"], [SMS])
            tx.write_changes(
                _batch(SubscriptionState.UNSUBSCRIBED), [
                    PairChange("held", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)
                ]
            )
        held = store.get_subscription(ACCOUNT, "held", SMS)
        assert held is not None
        assert (held.version, held.changed_by, held.last_opt_out_at) == (1, ActorKind.ADMIN, T0)
    with psycopg.connect(dsn) as conn:
        versions = conn.execute(
            f'SELECT version FROM "{schema}".schema_migrations ORDER BY version'
        ).fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


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


def test_nested_transaction_on_a_one_connection_pool_fails_at_once(schema: str) -> None:
    """With every pooled connection in use by the thread's own transaction, opening another one
    raises StorageError instead of waiting for the pool, and the outer one still commits."""
    dsn = require_dsn()
    with ConnectionPool(dsn, min_size=1, max_size=1, timeout=60, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema)
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a")])
            with pytest.raises(StorageError, match="already open"), store.transaction(ACCOUNT):
                pass
            tx.write_changes(
                _batch(SubscriptionState.UNSUBSCRIBED),
                [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
            )
        assert store.get_state(ACCOUNT, "a", SMS) is SubscriptionState.UNSUBSCRIBED
        with store.transaction(ACCOUNT) as tx:
            assert tx.missing_contacts(["a"]) == []
        store.close()


def _waiting_advisory_locks(pids: list[int]) -> int:
    """How many advisory locks the backends *pids* are waiting for."""
    with psycopg.connect(require_dsn(), autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) FROM pg_locks
                WHERE locktype = 'advisory' AND NOT granted AND pid = ANY(%s)""",
            (pids,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_address_locks_are_taken_in_one_order(store: PostgresStore) -> None:
    """Two transactions locking the same addresses, given in opposite orders, both held up in
    the middle by a third that holds one of them, never deadlock once it lets go: every call
    takes its locks in lock-id order, whatever order it was given."""
    keys = [f"phone:+1415555{n:04d}" for n in range(40)]
    gate = "phone:+14155559999"
    given = [*keys[:20], gate, *keys[20:]]
    for round_ in range(5):
        pids: list[int] = []
        errors: list[BaseException] = []

        def locker(
            order: list[str],
            round_: int = round_,
            pids: list[int] = pids,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                with store.transaction(ACCOUNT) as tx:
                    pids.append(tx._conn.info.backend_pid)
                    tx.lock_addresses(order)
                    tx.put_inbound_result(f"m{round_}-{order[0]}", "{}")
            except BaseException as error:  # reported below
                errors.append(error)

        with store.transaction(ACCOUNT) as holder:
            holder.lock_addresses([gate])
            threads = [threading.Thread(target=locker, args=(o,)) for o in (given, given[::-1])]
            for thread in threads:
                thread.start()
            # Both lockers are stuck (on the gate, or on a key the other took first) before the
            # holder commits.
            for _ in range(1000):
                if len(pids) == 2 and _waiting_advisory_locks(pids) == 2:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the two lockers never both waited")
        for thread in threads:
            thread.join(30)
        assert errors == []


@pytest.mark.parametrize("big_first", [True, False])
def test_many_addresses_take_the_account_lock(store: PostgresStore, big_first: bool) -> None:
    """A transaction locking hundreds of addresses holds a few advisory locks, not hundreds, and
    still excludes one locking any of them (in either order)."""
    keys = [f"phone:+1415556{n:04d}" for n in range(300)]
    shared = keys[123]
    first_keys, second_keys = (keys, [shared]) if big_first else ([shared], keys)
    locked = threading.Event()
    held: list[int] = []
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with store.transaction(ACCOUNT) as tx:
                tx.lock_addresses(first_keys)
                pid = tx._conn.info.backend_pid
                with psycopg.connect(require_dsn(), autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                        (pid,),
                    ).fetchone()
                assert row is not None
                held.append(row[0])
                locked.set()
                time.sleep(0.3)
                tx.put_suppressions([Suppression(ACCOUNT, shared, SMS, T0, Source.CARRIER)])
        except BaseException as error:  # reported below
            errors.append(error)
            locked.set()

    thread = threading.Thread(target=first)
    thread.start()
    assert locked.wait(10)
    with store.transaction(ACCOUNT) as tx:
        tx.lock_addresses(second_keys)
        seen = tx.get_suppressions([shared])
    thread.join(10)
    assert errors == []
    assert seen == [Suppression(ACCOUNT, shared, SMS, T0, Source.CARRIER)]
    assert held == [2]


def test_contacts_read_by_a_writer_stay_as_read(store: PostgresStore) -> None:
    """A write transaction that read a contact holds it: another writer reading it waits and
    then sees the first one's edit, so the old addresses it locks are the current ones."""
    _register(store, "x")
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, "x", phone="+14155550100")])
    read = threading.Event()
    errors: list[BaseException] = []

    def editor() -> None:
        try:
            with store.transaction(ACCOUNT) as tx:
                assert tx.get_contacts(["x"])["x"].phone == "+14155550100"
                read.set()
                time.sleep(0.3)
                tx.put_contacts([Contact(ACCOUNT, "x", phone="+14155550111")])
        except BaseException as error:  # reported below
            errors.append(error)
            read.set()

    thread = threading.Thread(target=editor)
    thread.start()
    assert read.wait(10)
    with store.transaction(ACCOUNT) as tx:
        seen = tx.get_contacts(["x", "nobody"])
    thread.join(10)
    assert errors == []
    assert seen == {"x": Contact(ACCOUNT, "x", phone="+14155550111")}


def test_noted_opt_outs_leave_the_other_locked_pairs_writable(store: PostgresStore) -> None:
    """Noting an opt-out moves only that pair's row: the other pairs locked with it are written
    directly, and the noted one through the version-checking statement."""
    _register(store, "a", "b")
    with store.transaction(ACCOUNT) as tx:
        tx.write_changes(
            _batch(SubscriptionState.UNSUBSCRIBED),
            [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
        tx.write_changes(
            _batch(SubscriptionState.SUBSCRIBED),
            [PairChange("b", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    later = T0 + timedelta(hours=1)
    with store.transaction(ACCOUNT) as tx:
        assert set(tx.lock_subscriptions(["a", "b"], [SMS])) == {("a", SMS), ("b", SMS)}
        note = attrs.evolve(
            _batch(SubscriptionState.UNSUBSCRIBED, later), opted_out_by=OptOutOrigin.SYSTEM
        )
        tx.note_opt_outs(note, [("a", SMS), ("b", SMS), ("a", SMS)])
        tx.write_changes(
            _batch(SubscriptionState.UNSUBSCRIBED, later),
            [PairChange("b", SMS, SubscriptionState.SUBSCRIBED, 1)],
        )
        tx.write_changes(
            _batch(SubscriptionState.SUBSCRIBED, later),
            [PairChange("a", SMS, SubscriptionState.UNSUBSCRIBED, 1)],
        )
    a = store.get_subscription(ACCOUNT, "a", SMS)
    b = store.get_subscription(ACCOUNT, "b", SMS)
    assert a is not None
    assert b is not None
    assert (a.state, a.version, a.opted_out_by, a.last_opt_out_at) == (
        SubscriptionState.SUBSCRIBED, 2, frozenset(), later
    )
    assert (b.state, b.version, b.opted_out_by, b.last_opt_out_at) == (
        SubscriptionState.UNSUBSCRIBED, 2, frozenset(), later
    )
    assert len(list(store.events(ACCOUNT))) == 4
    check_replay(store, ACCOUNT)


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
