"""The PostgreSQL store passes the public conformance suite, plus checks of what only it has:
migrations, pools, PgBouncer mode, locking of absent pairs, commit-ordered events, error
translation.  Needs ``CONSENTKIT_TEST_POSTGRES_DSN``; every store gets a fresh schema."""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg.abc import Params, Query
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from consentkit.channels import EMAIL, SMS, WHATSAPP
from consentkit.errors import ConflictError, StorageError, ValidationError
from consentkit.model import (
    Actor,
    ActorKind,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    Subscription,
    SubscriptionState,
    Suppression,
)
from consentkit.review import ReviewDecision, ReviewItem, ReviewKind
from consentkit.serialization import make_converter
from consentkit.service import ChangeResult, ConsentService
from consentkit.storage import InMemoryStore, Store
from consentkit.storage import postgres as postgres_store
from consentkit.storage.base import (
    ChangeBatch,
    InboundRecord,
    PairChange,
    Situation,
    SituationKey,
    StagedPair,
    StagingTransaction,
    SubscriptionFilter,
)
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

    def stored_text(self, store: Store) -> Iterable[str]:
        """Every column of every table of the store's schema, as text."""
        return postgres_text(store)


def postgres_text(store: Store) -> list[str]:
    """Every column of every table of a PostgreSQL store's schema (information_schema), cast to
    text (jsonb and arrays as their text form)."""
    assert isinstance(store, PostgresStore)
    with psycopg.connect(require_dsn()) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (store.schema,),
        ).fetchall()
        found: list[str] = []
        for table, column in columns:
            rows = conn.execute(
                f'SELECT "{column}"::text FROM "{store.schema}"."{table}" '
                f'WHERE "{column}" IS NOT NULL'
            ).fetchall()
            found.extend(row[0] for row in rows)
        return found


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


def _create_version(dsn: str, schema: str, upto: int) -> None:
    """Build *schema* as consentkit's released migrations up to version *upto* left it."""
    quoted = f'"{schema}"'
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE SCHEMA {quoted}")
        conn.execute(
            f"""CREATE TABLE {quoted}.schema_migrations (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
        for version, description, statements in _MIGRATIONS[:upto]:
            for statement in statements:
                conn.execute(statement.replace("__S__", quoted))
            conn.execute(
                f"INSERT INTO {quoted}.schema_migrations (version, description) VALUES (%s, %s)",
                (version, description),
            )


def test_migration_from_version_1_back_fills_opt_out_records(schema: str) -> None:
    """Rows written at schema version 1 read back after the migration with who opted out (from
    the last change's source and actor kind) and when, and suppressions come back active."""
    dsn = require_dsn()
    _create_version(dsn, schema, 1)
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


def test_migration_from_version_2_keys_inbound_by_channel(schema: str) -> None:
    """Inbound rows stored at schema version 2 (keyed by message id only) read back under the
    channel their stored result names, with no digest; the same id on another channel is then
    another message, a row without a channel in its result matches none, and the review queue
    exists."""
    dsn = require_dsn()
    _create_version(dsn, schema, 2)
    results = {
        (ACCOUNT, "SM-1"): json.dumps({"channel": "sms", "sender": "+14155550100"}),
        (ACCOUNT, "WA-1"): json.dumps({"channel": "whatsapp", "sender": "+14155550101"}),
        ("other", "SM-1"): json.dumps({"channel": "sms", "sender": "+14155550102"}),
        (ACCOUNT, "odd"): '{"ok": true}',
    }
    with psycopg.connect(dsn) as conn:
        for (account, message_id), result in results.items():
            conn.execute(
                f"""INSERT INTO "{schema}".inbound_messages (account, message_id, result)
                    VALUES (%s, %s, %s)""",
                (account, message_id, result),
            )
    with PostgresStore(dsn, schema=schema) as store:
        with store.transaction(ACCOUNT) as tx:
            assert tx.get_inbound(SMS, "SM-1") == InboundRecord(
                SMS, "SM-1", None, results[(ACCOUNT, "SM-1")]
            )
            assert tx.get_inbound(WHATSAPP, "WA-1") == InboundRecord(
                WHATSAPP, "WA-1", None, results[(ACCOUNT, "WA-1")]
            )
            assert tx.get_inbound(WHATSAPP, "SM-1") is None
            assert tx.get_inbound(SMS, "odd") is None
            tx.put_inbound(InboundRecord(WHATSAPP, "SM-1", "c" * 64, "{}"))
            tx.put_inbound(InboundRecord(SMS, "odd", "d" * 64, "{}"))
        with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:
            tx.put_inbound(InboundRecord(SMS, "SM-1", "e" * 64, "{}"))
        with store.transaction("other") as tx:
            assert tx.get_inbound(SMS, "SM-1") == InboundRecord(
                SMS, "SM-1", None, results[("other", "SM-1")]
            )
        item = _review_item("SM-1")
        with store.transaction(ACCOUNT) as tx:
            tx.put_review_item(item)
        assert store.list_review_items(ACCOUNT, include_decided=False, after=None, limit=5) == [
            item
        ]
    with psycopg.connect(dsn) as conn:
        versions = conn.execute(
            f'SELECT version FROM "{schema}".schema_migrations ORDER BY version'
        ).fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert versions[-1] == (_MIGRATIONS[-1][0],)


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
                    tx.put_inbound(InboundRecord(SMS, f"m{round_}-{order[0]}", None, "{}"))
            except BaseException as error:  # reported below
                errors.append(error)

        with store.transaction(ACCOUNT) as holder:
            holder.lock_addresses([gate])
            # The lock goes with the transaction's next statement.
            assert holder.get_suppressions([gate]) == []
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
                # The locks go with the transaction's next statement.
                assert tx.get_suppressions([shared]) == []
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


def test_a_contact_registered_after_it_was_read_absent_is_replaced_with_its_entries(
    store: PostgresStore,
) -> None:
    """put_contacts inserts the contacts get_contacts found absent without looking for old
    address entries; one another transaction registered in between is written again as a known
    contact, its entries replaced (not left beside the new ones)."""
    errors: list[BaseException] = []

    def registrar() -> None:
        try:
            with store.transaction(ACCOUNT) as other:
                other.put_contacts([Contact(ACCOUNT, "x", phone="+14155550100")])
        except BaseException as error:  # reported below
            errors.append(error)

    with store.transaction(ACCOUNT) as tx:
        assert tx.get_contacts(["x", "y"]) == {}
        thread = threading.Thread(target=registrar)
        thread.start()
        thread.join(10)
        tx.put_contacts(
            [
                Contact(ACCOUNT, "x", phone="+14155550111"),
                Contact(ACCOUNT, "y", email="Y@example.com"),
            ]
        )
    assert errors == []
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_contacts(["x", "y"]) == {
            "x": Contact(ACCOUNT, "x", phone="+14155550111"),
            "y": Contact(ACCOUNT, "y", email="Y@example.com"),
        }
        assert tx.find_contacts_by_address(
            ["phone:+14155550100", "phone:+14155550111", "email:y@example.com"]
        ) == {"phone:+14155550111": ["x"], "email:y@example.com": ["y"]}


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
    """A second put of an inbound (channel, message id) waits for the first transaction, then is
    a ConflictError, and the first record stands."""
    inserted = threading.Event()
    outcome: list[str] = []
    first = InboundRecord(SMS, "SM-1", "a" * 64, '{"n": 1}')

    def second() -> None:
        inserted.wait(10)
        try:
            with store.transaction(ACCOUNT) as tx:
                tx.put_inbound(InboundRecord(SMS, "SM-1", "b" * 64, '{"n": 2}'))
            outcome.append("stored")
        except ConflictError:
            outcome.append("conflict")

    thread = threading.Thread(target=second)
    thread.start()
    with store.transaction(ACCOUNT) as tx:
        tx.put_inbound(first)
        # The insert goes with the transaction's next statement (or its COMMIT).
        assert tx.get_inbound(SMS, "SM-1") == first
        inserted.set()
        time.sleep(0.3)
        assert outcome == []
    thread.join(10)
    assert outcome == ["conflict"]
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_inbound(SMS, "SM-1") == first


def test_same_message_id_on_another_channel_does_not_wait(store: PostgresStore) -> None:
    """While a transaction holds an uncommitted inbound record, the same message id on another
    channel is another key: it is stored at once, without waiting or conflicting."""
    outcome: list[str] = []

    def other_channel() -> None:
        with store.transaction(ACCOUNT) as tx:
            tx.put_inbound(InboundRecord(WHATSAPP, "SM-3", None, '{"n": 2}'))
        outcome.append("stored")

    with store.transaction(ACCOUNT) as tx:
        tx.put_inbound(InboundRecord(SMS, "SM-3", None, '{"n": 1}'))
        thread = threading.Thread(target=other_channel)
        thread.start()
        thread.join(10)
        assert outcome == ["stored"]
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_inbound(SMS, "SM-3") == InboundRecord(SMS, "SM-3", None, '{"n": 1}')
        assert tx.get_inbound(WHATSAPP, "SM-3") == InboundRecord(
            WHATSAPP, "SM-3", None, '{"n": 2}'
        )


def test_duplicate_inbound_after_rollback_is_stored(store: PostgresStore) -> None:
    """When the first transaction with an inbound key rolls back, the waiting one stores it."""
    inserted = threading.Event()
    outcome: list[str] = []
    kept = InboundRecord(SMS, "SM-2", "b" * 64, '{"n": 2}')

    def second() -> None:
        inserted.wait(10)
        with store.transaction(ACCOUNT) as tx:
            tx.put_inbound(kept)
        outcome.append("stored")

    thread = threading.Thread(target=second)
    thread.start()

    def first() -> None:
        with store.transaction(ACCOUNT) as tx:
            tx.put_inbound(InboundRecord(SMS, "SM-2", "a" * 64, '{"n": 1}'))
            inserted.set()
            time.sleep(0.3)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        first()
    thread.join(10)
    assert outcome == ["stored"]
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_inbound(SMS, "SM-2") == kept


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


# ---------------------------------------------------------------------- review queue


def _review_item(message_id: str, received_at: datetime = T0) -> ReviewItem:
    """An open possible opt-out received at *received_at*."""
    return ReviewItem(
        account=ACCOUNT,
        id=f"sms:{message_id}",
        kind=ReviewKind.POSSIBLE_OPT_OUT,
        channel=SMS,
        message_id=message_id,
        sender="+14155550100",
        text="please stop texting me",
        contact_ids=("a",),
        received_at=received_at,
        honor_by=received_at + timedelta(days=10),
    )


def test_a_review_item_being_decided_is_locked(store: PostgresStore) -> None:
    """get_review_item locks the item: a second reviewer waits for the first one's transaction,
    then reads its decision and cannot decide the item again."""
    item = _review_item("SM-r")
    with store.transaction(ACCOUNT) as tx:
        tx.put_review_item(item)
    read = threading.Event()
    outcome: list[object] = []

    def second_reviewer() -> None:
        read.wait(10)
        try:
            with store.transaction(ACCOUNT) as tx:
                seen = tx.get_review_item(item.id)
                outcome.append(None if seen is None else seen.decision)
                tx.decide_review_item(
                    item.id, ReviewDecision.NOT_OPT_OUT, decided_by="admin:bob",
                    decided_at=T0 + timedelta(hours=2), note="not an opt-out",
                )
        except ConflictError:
            outcome.append("conflict")

    thread = threading.Thread(target=second_reviewer)
    thread.start()
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_review_item(item.id) == item
        read.set()
        time.sleep(0.3)
        assert outcome == []
        tx.decide_review_item(
            item.id, ReviewDecision.OPT_OUT, decided_by="admin:alice",
            decided_at=T0 + timedelta(hours=1), note="she meant it",
        )
    thread.join(10)
    assert outcome == [ReviewDecision.OPT_OUT, "conflict"]
    [decided] = store.list_review_items(ACCOUNT, include_decided=True, after=None, limit=5)
    assert (decided.decision, decided.decided_by, decided.note) == (
        ReviewDecision.OPT_OUT, "admin:alice", "she meant it"
    )


# ---------------------------------------------------------------------- plans

# The tables that grow with the account's history, and the column a bounded read of each ranges
# over.
_BIG_TABLES = {"events": "occurred_at", "hourly_changes": "hour", "review_items": "received_at"}
_INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def _recording_pool(dsn: str) -> tuple[ConnectionPool[Any], list[tuple[str, Any]]]:
    """A pool whose connections record every statement run through ``execute`` with its
    parameters, so a test can EXPLAIN exactly what the store ran; and the record."""
    statements: list[tuple[str, Any]] = []

    class Recording(psycopg.Connection[TupleRow]):
        def execute(
            self,
            query: Query,
            params: Params | None = None,
            *,
            prepare: bool | None = None,
            binary: bool = False,
        ) -> psycopg.Cursor[TupleRow]:
            if isinstance(query, str):
                statements.append((query, params))
            return super().execute(query, params, prepare=prepare, binary=binary)  # type: ignore[arg-type]

    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True, connection_class=Recording)
    return pool, statements


def _plans(dsn: str, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The plans (EXPLAIN (FORMAT JSON), with the same parameters, so the same custom plans)
    of the recorded statements that read one of the big tables."""
    plans: list[dict[str, Any]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for query, params in statements:
            if not any(f".{table}" in query for table in _BIG_TABLES):
                continue
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
            assert row is not None
            plans.append(row[0][0]["Plan"])
    return plans


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _shape(plan: dict[str, Any]) -> str:
    """The plan's node types, with the relation and index each reads (for failure messages)."""
    return " > ".join(
        " ".join(filter(None, (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))))
        for n in _nodes(plan)
    )


def _unbounded_reads(plans: list[dict[str, Any]]) -> list[str]:
    """The reads of a big table in *plans* that are not an index scan whose index condition
    bounds the table's range column: a sequential scan, or an index scan of the account's whole
    history (which a join then matches against every interval)."""
    found: list[str] = []
    for plan in plans:
        for node in _nodes(plan):
            table = node.get("Relation Name")
            if table not in _BIG_TABLES:
                continue
            # A bitmap heap scan's condition is that of the bitmap index scans under it.
            condition = " AND ".join(n["Index Cond"] for n in _nodes(node) if "Index Cond" in n)
            column = _BIG_TABLES[table]
            bounded = re.search(rf"\b{column} (<|<=|>|>=) ", condition) is not None
            if node["Node Type"] not in _INDEX_SCANS or not bounded:
                found.append(f"{table}: {_shape(plan)} [{condition}]")
    return found


def _tables_read(plans: list[dict[str, Any]]) -> set[str]:
    """The big tables *plans* read."""
    return {
        n["Relation Name"]
        for plan in plans
        for n in _nodes(plan)
        if n.get("Relation Name") in _BIG_TABLES
    }


def _analyze(schema: str, *tables: str) -> None:
    """Gather fresh statistics of *tables* of *schema*."""
    with psycopg.connect(require_dsn(), autocommit=True) as conn:
        conn.execute("ANALYZE " + ", ".join(f'"{schema}".{table}' for table in tables))


def _opt_in_at(store: PostgresStore, at: datetime, ids: list[str]) -> None:
    """One bulk write: *ids* opted in on SMS and email at *at*."""
    with store.transaction(ACCOUNT) as tx:
        tx.write_changes(
            _batch(SubscriptionState.SUBSCRIBED, at),
            [
                PairChange(cid, ch, SubscriptionState.NEVER_SUBSCRIBED, 0)
                for cid in ids
                for ch in (SMS, EMAIL)
            ],
        )


def _backdated_import(store: PostgresStore, end: datetime) -> None:
    """A large backdated import through the bulk path, in one transaction: 600 batches of 25
    contacts opted in on SMS and email (30,000 events, 1,200 roll-up rows), one every three
    hours at an odd minute over the 75 days before *end*."""
    batches = 600
    with store.transaction(ACCOUNT) as tx:
        for b in range(batches):
            at = end - timedelta(hours=3 * (batches - b), minutes=b % 60)
            tx.write_changes(
                _batch(SubscriptionState.SUBSCRIBED, at),
                [
                    PairChange(f"i{b:04d}-{n:02d}", ch, SubscriptionState.NEVER_SUBSCRIBED, 0)
                    for n in range(25)
                    for ch in (SMS, EMAIL)
                ],
            )


@pytest.mark.parametrize("analyzed_while_small", [False, True], ids=["never-analyzed", "stale"])
def test_trend_plans_after_a_large_backdated_import_need_no_statistics(
    schema: str, analyzed_while_small: bool
) -> None:
    """After a large backdated import, both before ANALYZE (statistics never gathered, or
    gathered while the tables were nearly empty) and after it, every read of the events or the
    roll-ups that trends() makes is an index scan bounded by its interval, never a sequential
    scan nor a scan of the account's whole history (issue 11, defect 9)."""
    dsn = require_dsn()
    now = T0 + timedelta(days=160, minutes=37, seconds=13)  # partial hours at both ends
    pool, statements = _recording_pool(dsn)
    with pool:
        store = PostgresStore(pool=pool, schema=schema)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in ("events", "hourly_changes"):
                # Statistics change only when this test says so, whatever autovacuum does.
                conn.execute(f'ALTER TABLE "{schema}".{table} SET (autovacuum_enabled = false)')
        if analyzed_while_small:
            _opt_in_at(store, now - timedelta(days=365), ["early"])
            _analyze(schema, "events", "hourly_changes")
        _backdated_import(store, now - timedelta(days=1))
        service = ConsentService(store, clock=FakeClock(now))
        failures: list[str] = []
        for statistics in ("before ANALYZE", "after ANALYZE"):
            statements.clear()
            service.trends(ADMIN)
            plans = _plans(dsn, statements)
            assert _tables_read(plans) == {"events", "hourly_changes"}, statistics
            failures += [f"{statistics}: {read}" for read in _unbounded_reads(plans)]
            _analyze(schema, "events", "hourly_changes")
        store.close()
    assert failures == [], "\n".join(failures)


def test_open_review_items_are_listed_from_their_partial_index(schema: str) -> None:
    """Every page of the open review items, before and after ANALYZE, is an ordered scan of the
    partial index of open items (a resumed page starts at its position in the index), with no
    sort, however many decided items the queue holds."""
    dsn = require_dsn()
    pool, statements = _recording_pool(dsn)
    with pool:
        store = PostgresStore(pool=pool, schema=schema)
        with store.transaction(ACCOUNT) as tx:
            for n in range(3000):
                item = _review_item(f"SM-{n:04d}", T0 + timedelta(minutes=n))
                tx.put_review_item(item)
                if n % 3:
                    tx.decide_review_item(
                        item.id, ReviewDecision.NOT_OPT_OUT, decided_by="admin:alice",
                        decided_at=T0 + timedelta(days=3), note="thanks",
                    )
        after = (T0 + timedelta(minutes=1500), "sms:SM-1500")
        failures: list[str] = []
        for statistics in ("before ANALYZE", "after ANALYZE"):
            for position in (None, after):
                statements.clear()
                page = store.list_review_items(
                    ACCOUNT, include_decided=False, after=position, limit=50
                )
                first = 0 if position is None else 1503
                assert [item.message_id for item in page] == [
                    f"SM-{n:04d}" for n in range(first, first + 150, 3)
                ]
                [plan] = _plans(dsn, statements)
                scans = [n for n in _nodes(plan) if n.get("Index Name") == "review_items_open"]
                ordered = (
                    [n["Node Type"] for n in scans] == ["Index Scan"]
                    and not any(n["Node Type"] == "Sort" for n in _nodes(plan))
                    and (position is None or "received_at" in scans[0].get("Index Cond", ""))
                )
                if not ordered:
                    failures.append(f"{statistics}, after={position}: {_shape(plan)}")
            _analyze(schema, "review_items")
        store.close()
    assert failures == [], "\n".join(failures)


# ---------------------------------------------------------------------- waits that time out
#
# A wait that timed out is a ConflictError in both SQL stores (retryable: the contention may be
# gone on the next try), as SQLite's busy timeout is; see docs/storage-adapters.md.


def test_an_exhausted_pool_is_a_conflict(schema: str) -> None:
    """A call that waits longer than the pool's timeout for a connection, every one of them in
    use, gets a ConflictError chained to the pool's timeout; once one is free it works."""
    dsn = require_dsn()
    with ConnectionPool(dsn, min_size=1, max_size=1, timeout=0.3, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema)
        _register(store, "a")
        with store.transaction(ACCOUNT) as tx:
            tx.lock_subscriptions(["a"], [SMS])
            with pytest.raises(ConflictError, match="stayed in use") as caught:
                store.get_state(ACCOUNT, "a", SMS)
            assert type(caught.value.__cause__).__name__ == "PoolTimeout"
        assert store.get_state(ACCOUNT, "a", SMS) is SubscriptionState.NEVER_SUBSCRIBED
        store.close()


def test_a_lock_timeout_is_a_conflict(schema: str) -> None:
    """A writer whose row lock wait exceeds the session's lock_timeout (set by the host's pool)
    gets a ConflictError, and nothing of its transaction is written."""
    dsn = require_dsn()

    def short_lock_waits(conn: psycopg.Connection[Any]) -> None:
        conn.autocommit = True
        conn.execute("SET lock_timeout = '200ms'")

    with ConnectionPool(dsn, min_size=2, max_size=2, configure=short_lock_waits, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema)
        _register(store, "a", "b")
        holding = threading.Event()
        release = threading.Event()

        def holder() -> None:
            with store.transaction(ACCOUNT) as tx:
                tx.lock_subscriptions(["a"], [SMS])
                holding.set()
                release.wait(10)

        def blocked_writer() -> None:
            with store.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "c")])
                tx.lock_subscriptions(["a"], [SMS])

        thread = threading.Thread(target=holder)
        thread.start()
        try:
            assert holding.wait(10)
            with pytest.raises(ConflictError, match="lock_timeout") as caught:
                blocked_writer()
            assert isinstance(caught.value.__cause__, psycopg.errors.LockNotAvailable)
        finally:
            release.set()
            thread.join(10)
        assert store.get_contact(ACCOUNT, "c") is None
        store.close()


# ---------------------------------------------------------------------- set-based changes


class TestPostgresSetBasedConformance(StoreConformance):
    """The contract again with every staged chunk, however small, changed by the set-based
    statements (by default a chunk of a few pairs takes the per-pair ones)."""

    @pytest.fixture(autouse=True)
    def _always_set_based(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(postgres_store, "_SMALL_STAGE", 0)

    def make_store(self, directory: Path) -> PostgresStore:
        """A fresh PostgreSQL store in a new schema (the directory is not used)."""
        return PostgresStore(require_dsn(), schema=new_schema("b"))

    def stored_text(self, store: Store) -> Iterable[str]:
        """Every column of every table of the store's schema, as text."""
        return postgres_text(store)


@pytest.fixture(params=["set-based", "small"])
def staging(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a staged chunk is changed: by the set-based statements over the temporary
    tables (forced here whatever its size), or, for a small one, by the per-pair statements."""
    threshold = 0 if request.param == "set-based" else 10**9
    monkeypatch.setattr(postgres_store, "_SMALL_STAGE", threshold)
    return str(request.param)


def test_transactions_take_the_staged_path(store: PostgresStore) -> None:
    """The store's transactions can stage, so the service changes pairs set-based."""
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)


_BULK = 12_000
_MISTAKE = Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "unsubscribed the wrong list")


def _bulk_story(store: Store) -> tuple[ConsentService, list[tuple[Any, ...]]]:
    """Bulk calls over 12,000 contacts x 2 channels (three chunks each) that meet every kind of
    situation: never subscribed, subscribed, unsubscribed by an admin, by the system and by the
    contact (noted again, skipped, refused, resubscribed); what each call returned, without its
    batch id."""
    service = ConsentService(store, clock=FakeClock(T0, tick=timedelta(seconds=1)))
    ids = [f"b{n:05d}" for n in range(_BULK)]
    service.upsert_contacts(
        ADMIN,
        [Contact(ACCOUNT, cid, phone=f"+1415{n:07d}" if n % 2 else None) for n, cid in
         enumerate(ids)],
    )
    service.opt_in(ADMIN, ids[::3], [SMS], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ids[::5], [EMAIL], reason="complaint")
    service.unsubscribe(Actor.system(ACCOUNT, "bounces"), ids[1::7], [EMAIL, SMS])
    for cid in ids[:300:11]:
        service.unsubscribe(Actor.contact(ACCOUNT, cid), cid, [SMS])
    calls: list[Callable[[], ChangeResult]] = [
        # never -> subscribed, subscribed unchanged, unsubscribed skipped.
        lambda: service.opt_in(ADMIN, ids, [SMS, EMAIL], evidence=EVIDENCE, details=True),
        # subscribed -> unsubscribed; unsubscribed pairs note the admin's request.
        lambda: service.unsubscribe(ADMIN, ids[::2], [EMAIL, SMS]),
        # The contacts' own opt-outs are refused, the others resubscribed.
        lambda: service.resubscribe(
            ADMIN, ids[:3000], [SMS], justification=_MISTAKE, partial=True, details=True
        ),
        lambda: service.unsubscribe(ADMIN, ids[::-3], [SMS, EMAIL], reason="list_cleanup"),
    ]
    results = []
    for call in calls:
        result = call()
        results.append(
            (
                result.changed_count,
                result.unchanged_count,
                result.changed,
                result.unchanged,
                result.skipped,
                [(r.contact_id, r.channel, type(r.error), str(r.error)) for r in result.refused],
                dict(result.versions),
            )
        )
    return service, results


def _documents(service: ConsentService) -> list[dict[str, Any]]:
    """The audit log as JSON documents, without sequences and batch ids."""
    converter = make_converter()
    documents = []
    for event in service.audit_log(ADMIN):
        document = converter.unstructure(event)
        del document["sequence"], document["batch_id"]
        documents.append(document)
    return documents


def _all_subscriptions(store: Store) -> list[Subscription]:
    """Every subscription of the account, by channel, state and contact id."""
    found: list[Subscription] = []
    for ch in (SMS, EMAIL):
        for state in (SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED):
            after: str | None = None
            while page := store.list_subscriptions(
                ACCOUNT, SubscriptionFilter(ch, state), after=after, limit=5000
            ):
                found.extend(page)
                after = page[-1].contact_id
    return found


def test_bulk_changes_write_what_the_memory_store_writes(store: PostgresStore) -> None:
    """The same bulk calls, several chunks each over mixed situations, return the same results
    and leave the same events, subscriptions and trends on PostgreSQL (set-based) as on the
    in-memory store (the reference, over its per-pair methods)."""
    memory = InMemoryStore()
    service, results = _bulk_story(store)
    reference, expected = _bulk_story(memory)
    assert results == expected
    # Every kind of outcome occurred: changed, skipped, unchanged (noted), refused.
    assert results[0][0] > 0
    assert results[0][4]
    assert results[1][1] > 0
    assert results[2][5]
    assert _documents(service) == _documents(reference)
    assert _all_subscriptions(store) == _all_subscriptions(memory)
    later = T0 + timedelta(days=2)
    instants = [T0, T0 + timedelta(minutes=30), later]
    assert store.totals_at(ACCOUNT, instants) == memory.totals_at(ACCOUNT, instants)
    assert store.transition_counts(ACCOUNT, instants) == memory.transition_counts(
        ACCOUNT, instants
    )
    assert service.trends(ADMIN, as_of=later) == reference.trends(ADMIN, as_of=later)
    check_replay(store, ACCOUNT)


@pytest.mark.usefixtures("staging")
def test_staged_pairs_in_staging_order(store: PostgresStore) -> None:
    """staged_pairs lists the pairs of the situations asked in staging order (position, then
    channel), filtered by changed_after and cut at limit; staging again replaces the chunk."""
    _register(store, "a", "b", "c", "d")
    with store.transaction(ACCOUNT) as tx:
        tx.write_changes(
            _batch(SubscriptionState.SUBSCRIBED),
            [PairChange("c", EMAIL, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
        tx.write_changes(
            _batch(SubscriptionState.UNSUBSCRIBED, T0 + timedelta(hours=1)),
            [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    never_sms: SituationKey = (SMS, SubscriptionState.NEVER_SUBSCRIBED, None, None, frozenset())
    never_email: SituationKey = (
        EMAIL, SubscriptionState.NEVER_SUBSCRIBED, None, None, frozenset()
    )
    subscribed: SituationKey = (
        EMAIL, SubscriptionState.SUBSCRIBED, ActorKind.ADMIN, Source.API, frozenset()
    )
    unsubscribed: SituationKey = (
        SMS, SubscriptionState.UNSUBSCRIBED, ActorKind.ADMIN, Source.API, frozenset()
    )
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        tx.stage_contacts(["d", "c", "a"])
        situations = tx.staged_situations([SMS, EMAIL])
        assert situations == [
            Situation(never_sms, 2, None),
            Situation(never_email, 2, None),
            Situation(subscribed, 1, T0),
            Situation(unsubscribed, 1, T0 + timedelta(hours=1)),
        ]
        assert tx.staged_pairs([SMS, EMAIL], [never_email, unsubscribed, subscribed]) == [
            StagedPair("d", EMAIL, 0, never_email),
            StagedPair("c", EMAIL, 1, subscribed),
            StagedPair("a", SMS, 1, unsubscribed),
            StagedPair("a", EMAIL, 0, never_email),
        ]
        assert tx.staged_pairs([SMS, EMAIL], [never_email, subscribed], limit=1) == [
            StagedPair("d", EMAIL, 0, never_email)
        ]
        assert tx.staged_pairs(
            [SMS, EMAIL], [subscribed, unsubscribed, never_sms], changed_after=T0
        ) == [StagedPair("a", SMS, 1, unsubscribed)]
        assert tx.staged_pairs([SMS, EMAIL], []) == []
        tx.stage_contacts(["b"])
        assert tx.staged_situations([EMAIL]) == [Situation(never_email, 1, None)]
        assert tx.staged_pairs([EMAIL], [never_email, subscribed]) == [
            StagedPair("b", EMAIL, 0, never_email)
        ]


@pytest.mark.usefixtures("staging")
def test_apply_staged_writes_as_write_changes_does(store: PostgresStore) -> None:
    """apply_staged changes the pairs of the situations to write (events in staging order, the
    previous state the pair's), notes opt-out requests on those to note, leaves the others, and
    a later staged read sees what it wrote."""
    _register(store, "a", "b", "c")
    with store.transaction(ACCOUNT) as tx:
        tx.write_changes(
            attrs.evolve(_batch(SubscriptionState.UNSUBSCRIBED), opted_out_by=OptOutOrigin.ADMIN),
            [PairChange("b", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
        tx.write_changes(
            _batch(SubscriptionState.SUBSCRIBED),
            [PairChange("c", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    later = T0 + timedelta(hours=1)
    batch = attrs.evolve(
        _batch(SubscriptionState.UNSUBSCRIBED, later),
        opted_out_by=OptOutOrigin.SYSTEM,
        opted_out_via="phone:+14155550100",
        reason="bounce",
        batch_id="staged",
    )
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        tx.stage_contacts(["c", "b", "a"])
        keys = {s.key[1]: s.key for s in tx.staged_situations([SMS])}
        written = tx.apply_staged(
            batch,
            [SMS],
            [keys[SubscriptionState.NEVER_SUBSCRIBED], keys[SubscriptionState.SUBSCRIBED]],
            [keys[SubscriptionState.UNSUBSCRIBED]],
        )
        assert written == 2
        # A later read locks and reads the pairs again, as written.
        unsubscribed = (SMS, SubscriptionState.UNSUBSCRIBED, ActorKind.ADMIN, Source.API)
        assert tx.staged_situations([SMS]) == [
            Situation((*unsubscribed, frozenset({OptOutOrigin.SYSTEM})), 2, later),
            Situation((*unsubscribed, frozenset({OptOutOrigin.ADMIN, OptOutOrigin.SYSTEM})), 1, T0),
        ]
    events = [e for e in store.events(ACCOUNT) if e.batch_id == "staged"]
    assert [(e.contact_id, e.previous_state, e.new_state, e.reason) for e in events] == [
        ("c", SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED, "bounce"),
        ("a", SubscriptionState.NEVER_SUBSCRIBED, SubscriptionState.UNSUBSCRIBED, "bounce"),
    ]
    a, b, c = (store.get_subscription(ACCOUNT, cid, SMS) for cid in "abc")
    assert a is not None
    assert b is not None
    assert c is not None
    assert (a.version, a.opted_out_by, a.opted_out_via, a.last_opt_out_at, a.updated_at) == (
        1, frozenset({OptOutOrigin.SYSTEM}), "phone:+14155550100", later, later
    )
    assert (c.version, c.changed_by, c.source, c.reason) == (
        2, ActorKind.ADMIN, Source.API, "bounce"
    )
    # Noted: no new version, the origin joins the set, the time moves forward.
    assert (b.version, b.opted_out_by, b.last_opt_out_at, b.updated_at) == (
        1, frozenset({OptOutOrigin.ADMIN, OptOutOrigin.SYSTEM}), later, T0
    )
    check_replay(store, ACCOUNT)


@pytest.mark.usefixtures("staging")
def test_staged_absent_pairs_stay_locked(store: PostgresStore) -> None:
    """Once staged_situations returned, a second writer locking one of the staged pairs (absent
    or not) waits until the first transaction ends, then sees what it wrote."""
    _register(store, "a", "b")
    with store.transaction(ACCOUNT) as tx:
        tx.write_changes(
            _batch(SubscriptionState.SUBSCRIBED),
            [PairChange("b", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    locked = threading.Event()
    seen: list[tuple[str, int]] = []

    def second(cid: str) -> None:
        locked.wait(10)
        with store.transaction(ACCOUNT) as tx:
            found = tx.lock_subscriptions([cid], [SMS])
            seen.append((cid, found[(cid, SMS)].version))

    threads = [threading.Thread(target=second, args=(cid,)) for cid in "ab"]
    for thread in threads:
        thread.start()
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        tx.stage_contacts(["a", "b"])
        situations = tx.staged_situations([SMS])
        locked.set()
        time.sleep(0.3)
        assert seen == []
        written = tx.apply_staged(
            _batch(SubscriptionState.UNSUBSCRIBED, T0 + timedelta(hours=1)),
            [SMS],
            [s.key for s in situations],
            [],
        )
        assert written == 2
    for thread in threads:
        thread.join(10)
    assert sorted(seen) == [("a", 1), ("b", 2)]


def test_staging_after_a_rolled_back_transaction(schema: str) -> None:
    """On a one-connection pool, a transaction that staged and rolled back (its temporary tables
    gone with it) leaves the next one free to stage and write again."""
    with ConnectionPool(require_dsn(), min_size=1, max_size=1, open=True) as pool:
        store = PostgresStore(pool=pool, schema=schema)
        service = ConsentService(store, clock=FakeClock(T0, tick=timedelta(seconds=1)))
        ids = [f"r{n:03d}" for n in range(300)]
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid) for cid in ids])

        def staged_then_rolled_back() -> None:
            with store.transaction(ACCOUNT) as tx:
                assert isinstance(tx, StagingTransaction)
                tx.stage_contacts(ids)
                tx.staged_situations([SMS])
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            staged_then_rolled_back()
        for _ in range(2):
            result = service.unsubscribe(ADMIN, ids, [SMS, EMAIL])
        assert (result.changed_count, result.unchanged_count) == (0, 600)
        assert len(list(store.events(ACCOUNT))) == 600
        check_replay(store, ACCOUNT)
        store.close()


def test_overlapping_bulk_writers_neither_deadlock_nor_lose_updates(store: PostgresStore) -> None:
    """Two threads repeatedly opt in and unsubscribe overlapping multi-chunk sets of contacts
    (in opposite orders) on two channels: every call commits, nothing deadlocks, and the events
    replay to the state."""
    ids = [f"o{n:05d}" for n in range(8000)]
    service = ConsentService(store)
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid) for cid in ids])
    errors: list[BaseException] = []
    changed: list[int] = []

    def writer(chosen: list[str]) -> None:
        try:
            for _ in range(3):
                changed.append(
                    service.opt_in(ADMIN, chosen, [SMS, EMAIL], evidence=EVIDENCE).changed_count
                )
                changed.append(service.unsubscribe(ADMIN, chosen, [EMAIL, SMS]).changed_count)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [
        threading.Thread(target=writer, args=(ids[:6000],)),
        threading.Thread(target=writer, args=(ids[2000:][::-1],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == []
    events = list(store.events(ACCOUNT))
    assert len(events) == sum(changed)
    replayed = check_replay(store, ACCOUNT)
    assert set(replayed.values()) == {SubscriptionState.UNSUBSCRIBED}


def test_apply_staged_fetches_the_rows_by_id(schema: str) -> None:
    """Whatever the statistics say of the unsubscribed pairs (here: that there are hardly any,
    as at the start of a bulk unsubscribe, which adds to them chunk after chunk), apply_staged
    reads subscriptions only by row id: a scan of the partial index of unsubscribed rows made a
    bulk unsubscribe quadratic."""
    dsn = require_dsn()
    pool, statements = _recording_pool(dsn)
    with pool:
        store = PostgresStore(pool=pool, schema=schema)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{schema}".subscriptions SET (autovacuum_enabled = false)')
        ids = [f"p{n:04d}" for n in range(3000)]
        service = ConsentService(store, clock=FakeClock(T0, tick=timedelta(seconds=1)))
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid) for cid in ids])
        service.opt_in(ADMIN, ids, [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ids[0], [SMS])
        _analyze(schema, "subscriptions")
        service.unsubscribe(ADMIN, ids[:2000], [SMS])
        with store.transaction(ACCOUNT) as tx:
            assert isinstance(tx, StagingTransaction)
            tx.stage_contacts(ids)
            keys = {s.key[1]: s.key for s in tx.staged_situations([SMS])}
            statements.clear()
            written = tx.apply_staged(
                _batch(SubscriptionState.UNSUBSCRIBED, T0 + timedelta(hours=1)),
                [SMS],
                [keys[SubscriptionState.SUBSCRIBED]],
                [keys[SubscriptionState.UNSUBSCRIBED]],
            )
            assert written == 1000
            [(query, params)] = statements
            row = tx._conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
            assert row is not None
        store.close()
    plan = row[0][0]["Plan"]
    scans = [
        n["Node Type"]
        for n in _nodes(plan)
        if n.get("Relation Name") == "subscriptions" and n["Node Type"] != "ModifyTable"
    ]
    assert scans == ["Tid Scan", "Tid Scan"], _shape(plan)


def test_migration_from_version_5_fills_inbound_times_senders_and_contacts(schema: str) -> None:
    """Inbound rows of schema version 5 get the columns retention and exports read from their
    stored results; a row whose result lacks them keeps NULLs, which no purge deletes."""
    dsn = require_dsn()
    _create_version(dsn, schema, 5)
    received = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    rows = [
        ("sms", "SM-1", {"sender": "+14155550100", "received_at": received.isoformat(),
                         "contact_ids": ["ann"]}),
        ("email", "EM-1", {"sender": "Ann@Example.com", "received_at": received.isoformat(),
                           "contact_ids": []}),
        ("sms", "odd", {"ok": True}),
        ("sms", "bad-time", {"sender": "+14155550100", "received_at": "garbage",
                             "contact_ids": []}),
    ]
    with psycopg.connect(dsn) as conn:
        for key, message_id, result in [*rows, ("sms", "not-json", "{oops")]:
            conn.execute(
                f"""INSERT INTO "{schema}".inbound_messages
                    (account, channel, message_id, result) VALUES (%s, %s, %s, %s)""",
                (
                    ACCOUNT,
                    key,
                    message_id,
                    result if isinstance(result, str) else json.dumps(result),
                ),
            )
    PostgresStore(dsn, schema=schema).close()
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            f"""SELECT message_id, received_at, sender_key, from_contact
                FROM "{schema}".inbound_messages ORDER BY message_id"""
        ).fetchall()
    assert found == [
        ("EM-1", received, "email:ann@example.com", False),
        ("SM-1", received, "phone:+14155550100", True),
        ("bad-time", None, "phone:+14155550100", False),
        ("not-json", None, None, None),
        ("odd", None, None, None),
    ]
