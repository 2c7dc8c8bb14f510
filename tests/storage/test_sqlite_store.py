"""The SQLite store passes the public conformance suite, plus checks of what only SQLite has:
the schema and its version, file handling, pragmas, error translation and threads."""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import random
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from consentkit import (
    EMAIL,
    SMS,
    WHATSAPP,
    Actor,
    ConflictError,
    ConsentError,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    StorageError,
    SubscriptionState,
    ValidationError,
    channel,
)
from consentkit.documents import to_document
from consentkit.model import Suppression
from consentkit.review import ReviewDecision, ReviewItem, ReviewKind
from consentkit.storage import ChangeBatch, PairChange, Store, SubscriptionFilter
from consentkit.storage.base import InboundRecord, Situation, SituationKey, StagingTransaction
from consentkit.storage.sqlite import _LIST_REVIEW_ITEMS, _MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from consentkit.testing import FakeClock, StoreConformance, check_replay

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
T0 = datetime(2026, 1, 31, 22, 30, tzinfo=UTC)
EVIDENCE = Evidence(
    "web_form", "Yes, text me offers. Reply STOP to stop.", "v1", captured_at=T0 - timedelta(1)
)
REQUEST = Justification(ResubscribeReason.CONTACT_REQUEST, "asked by phone")


class TestSQLiteStoreConformance(StoreConformance):
    """Runs every contract test against :class:`SQLiteStore` on a file in a fresh directory."""

    def make_store(self, directory: Path) -> SQLiteStore:
        """A fresh SQLite store in *directory*."""
        return SQLiteStore(directory / "consent.db")

    def stored_text(self, store: Store) -> Iterable[str]:
        """Every column of every table of the file (sqlite_master), as text."""
        assert isinstance(store, SQLiteStore)
        conn = sqlite3.connect(store.path)
        try:
            tables = [
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            return [
                str(value)
                for table in tables
                for row in conn.execute(f'SELECT * FROM "{table}"')
                for value in row
                if value is not None
            ]
        finally:
            conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test's database file goes."""
    return tmp_path / "consent.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    """A fresh store, closed after the test."""
    with SQLiteStore(path) as made:
        yield made


@pytest.fixture
def service(store: SQLiteStore) -> ConsentService:
    """A service on the store with contacts c0..c9 (phones), on a clock that ticks a second."""
    svc = ConsentService(store, clock=FakeClock(T0, tick=timedelta(seconds=1)))
    svc.upsert_contacts(
        ADMIN, [Contact(ACCOUNT, f"c{i}", phone=f"+1415555{i:04d}") for i in range(10)]
    )
    return svc


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to look at the file behind the store's back."""
    return sqlite3.connect(path, isolation_level=None)


def batch(state: SubscriptionState, **fields: object) -> ChangeBatch:
    """A change batch in ACCOUNT by ADMIN at T0."""
    values: dict[str, object] = {
        "account": ACCOUNT,
        "new_state": state,
        "actor": ADMIN,
        "source": Source.API,
        "occurred_at": T0,
        "recorded_at": T0,
        "batch_id": "b1",
        "evidence": EVIDENCE if state is SubscriptionState.SUBSCRIBED else None,
    }
    values.update(fields)
    return ChangeBatch(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- schema and file


def test_store_satisfies_the_protocol(store: SQLiteStore) -> None:
    """SQLiteStore is a Store (statically, through this annotation, and at run time)."""
    as_protocol: Store = store
    assert isinstance(as_protocol, Store)


def test_new_file_gets_the_schema_and_its_version(path: Path, store: SQLiteStore) -> None:
    """A new file holds every table, one schema_version row per migration and consentkit's id."""
    conn = raw(path)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"contacts", "subscriptions", "events", "hourly_changes", "suppressions"} <= tables
    assert "trend_hours" not in tables  # the roll-up of schema versions 1 to 3
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x436B6974
    conn.close()


def test_reopening_keeps_data_and_applies_no_migration_twice(path: Path) -> None:
    """Reopening an existing file keeps its data and leaves the schema version as it was."""
    with SQLiteStore(path) as first:
        service = ConsentService(first, clock=FakeClock(T0))
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "ann", email="ann@example.com")])
        service.opt_in(ADMIN, "ann", EMAIL, evidence=EVIDENCE)
    for _ in range(3):
        with SQLiteStore(path) as again:
            assert again.get_contact(ACCOUNT, "ann") == Contact(
                ACCOUNT, "ann", email="ann@example.com"
            )
            assert [e.contact_id for e in again.events(ACCOUNT)] == ["ann"]
    conn = raw(path)
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _micros(instant: datetime) -> int:
    return (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _version_1_file(path: Path) -> None:
    """A file as consentkit wrote it at schema version 1 (the released migration, run as is),
    with subscriptions unsubscribed by each kind of actor, a resubscribed pair, a subscribed pair
    that never opted out, their events and a suppression."""
    conn = raw(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    t0, t1, t2 = (_micros(T0 + timedelta(hours=h)) for h in (0, 1, 2))
    # contact: its changes as (new state, actor kind, source, time), after an opt-in at t0 (but
    # for the contact registered unsubscribed by a suppression)
    histories = {
        "by-contact": [("unsubscribed", "contact", "inbound_keyword", t1)],
        "by-suppression": [("unsubscribed", "system", "suppression", t0)],
        "by-admin": [("unsubscribed", "admin", "api", t1)],
        "by-system": [("unsubscribed", "system", "carrier", t2)],
        "back": [("unsubscribed", "contact", "inbox", t1), ("subscribed", "admin", "api", t2)],
        "always": [],
    }
    for contact_id, changes in histories.items():
        conn.execute("INSERT INTO contacts (account, id) VALUES (?, ?)", (ACCOUNT, contact_id))
        if contact_id != "by-suppression":
            changes.insert(0, ("subscribed", "admin", "api", t0))
        previous = "never_subscribed"
        for new, kind, source, at in changes:
            conn.execute(
                "INSERT INTO events (account, contact_id, channel, previous_state, new_state, "
                "actor_kind, actor_id, source, occurred_at, recorded_at) "
                "VALUES (?, ?, 'sms', ?, ?, ?, 'x', ?, ?, ?)",
                (ACCOUNT, contact_id, previous, new, kind, source, at, at),
            )
            previous = new
        _, kind, source, at = changes[-1]
        conn.execute(
            "INSERT INTO subscriptions (account, contact_id, channel, state, version, updated_at, "
            "changed_by, source, reason) VALUES (?, ?, 'sms', ?, ?, ?, ?, ?, NULL)",
            (ACCOUNT, contact_id, previous, len(changes), at, kind, source),
        )
    conn.execute(
        "INSERT INTO suppressions (account, address_key, channel, occurred_at, source, "
        "inbound_message_id) VALUES (?, 'phone:+14155550999', 'sms', ?, 'inbound_keyword', 'm1')",
        (ACCOUNT, t0),
    )
    conn.close()


def test_a_version_1_file_is_migrated_without_reinterpreting_its_rows(tmp_path: Path) -> None:
    """Opening a file of schema version 1 adds the opt-out record and the suppression flag:
    unsubscribed pairs are opted out by whoever made their last change (a suppression by
    ``suppression``), at that time, from no known address; a resubscribed pair keeps the time of
    its last opt-out; suppressions stay active; the version is recorded."""
    path = tmp_path / "v1.db"
    _version_1_file(path)
    with SQLiteStore(path) as store:
        records = {
            sub.contact_id: (sub.state, sub.opted_out_by, sub.opted_out_via, sub.last_opt_out_at)
            for sub in store.list_subscriptions(
                ACCOUNT,
                SubscriptionFilter(SMS, SubscriptionState.UNSUBSCRIBED),
                after=None,
                limit=10,
            )
            + store.list_subscriptions(
                ACCOUNT,
                SubscriptionFilter(SMS, SubscriptionState.SUBSCRIBED),
                after=None,
                limit=10,
            )
        }
        with store.transaction(ACCOUNT) as tx:
            locked = tx.lock_subscriptions(list(records), [SMS])
            suppressions = tx.get_suppressions(["phone:+14155550999"])
        check_replay(store, ACCOUNT)
        unsubscribed = SubscriptionState.UNSUBSCRIBED
        at = {h: T0 + timedelta(hours=h) for h in (0, 1, 2)}
        assert records == {
            "by-contact": (unsubscribed, {OptOutOrigin.CONTACT}, None, at[1]),
            "by-suppression": (unsubscribed, {OptOutOrigin.SUPPRESSION}, None, at[0]),
            "by-admin": (unsubscribed, {OptOutOrigin.ADMIN}, None, at[1]),
            "by-system": (unsubscribed, {OptOutOrigin.SYSTEM}, None, at[2]),
            "back": (SubscriptionState.SUBSCRIBED, frozenset(), None, at[1]),
            "always": (SubscriptionState.SUBSCRIBED, frozenset(), None, None),
        }
        for contact_id in records:
            single = store.get_subscription(ACCOUNT, contact_id, SMS)
            assert single is not None
            assert locked[(contact_id, SMS)] == single
            assert store.subscriptions_of(ACCOUNT, contact_id) == [single]
        assert [(s.inbound_message_id, s.active) for s in suppressions] == [("m1", True)]
    conn = raw(path)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    conn.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def _version_2_file(path: Path, inbound: list[tuple[str, str, str]]) -> None:
    """A file as consentkit wrote it at schema version 2 (the released migrations, run as is),
    holding the *inbound* rows (account, message id, result)."""
    conn = raw(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for number in (0, 1):
        for statement in _MIGRATIONS[number]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number + 1,))
    conn.executemany(
        "INSERT INTO inbound_messages (account, message_id, result) VALUES (?, ?, ?)", inbound
    )
    conn.close()


def test_a_version_2_file_keeps_its_inbound_records_under_their_channel(tmp_path: Path) -> None:
    """Opening a file of schema version 2 keys each inbound record by the channel its result
    names (``sms`` when it names none, or is not JSON), with no text digest, and adds an empty
    review queue; the same message id is then free on the other channels."""
    path = tmp_path / "v2.db"
    whatsapp = json.dumps({"message_id": "SM1", "channel": "whatsapp", "sender": "+1415"})
    texted = json.dumps({"message_id": "SM2", "channel": "sms"})
    rows = [
        (ACCOUNT, "SM1", whatsapp),
        (ACCOUNT, "SM2", texted),
        (ACCOUNT, "bare", "{}"),
        (ACCOUNT, "odd", "not json"),
        ("other", "SM1", texted),
    ]
    _version_2_file(path, rows)
    with SQLiteStore(path) as store:
        with store.transaction(ACCOUNT) as tx:
            assert tx.get_inbound(WHATSAPP, "SM1") == InboundRecord(WHATSAPP, "SM1", None, whatsapp)
            assert tx.get_inbound(SMS, "SM1") is None
            assert tx.get_inbound(SMS, "SM2") == InboundRecord(SMS, "SM2", None, texted)
            assert tx.get_inbound(SMS, "bare") == InboundRecord(SMS, "bare", None, "{}")
            assert tx.get_inbound(SMS, "odd") == InboundRecord(SMS, "odd", None, "not json")
            tx.put_inbound(InboundRecord(SMS, "SM1", "0" * 64, "{}"))
            with pytest.raises(ConflictError):
                tx.put_inbound(InboundRecord(WHATSAPP, "SM1", None, "{}"))
        with store.transaction("other") as tx:
            assert tx.get_inbound(SMS, "SM1") == InboundRecord(SMS, "SM1", None, texted)
        assert store.list_review_items(ACCOUNT, include_decided=True, after=None, limit=9) == []
    conn = raw(path)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def _version_3_file(path: Path, history: list[tuple[str, str, str, datetime]]) -> None:
    """A file as consentkit wrote it at schema version 3 (the released migrations, run as is),
    holding the events of *history* (contact, previous state, new state, time) on SMS, the
    subscriptions they leave and a row of the old roll-up table."""
    conn = raw(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for number in (0, 1, 2):
        for statement in _MIGRATIONS[number]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number + 1,))
    for contact_id, previous, new, at in history:
        conn.execute(
            "INSERT INTO events (account, contact_id, channel, previous_state, new_state, "
            "actor_kind, actor_id, source, occurred_at, recorded_at) "
            "VALUES (?, ?, 'sms', ?, ?, 'admin', 'alice', 'api', ?, ?)",
            (ACCOUNT, contact_id, previous, new, _micros(at), _micros(at)),
        )
        conn.execute(
            "INSERT INTO subscriptions (account, contact_id, channel, state, version, updated_at, "
            "changed_by, source) VALUES (?, ?, 'sms', ?, 1, ?, 'admin', 'api') "
            "ON CONFLICT DO UPDATE SET state = excluded.state, version = version + 1, "
            "updated_at = excluded.updated_at",
            (ACCOUNT, contact_id, new, _micros(at)),
        )
    conn.execute("INSERT INTO trend_hours VALUES (?, 0, 'sms', 1, 0, 1, 0, 0)", (ACCOUNT,))
    conn.close()


def test_a_version_3_file_gets_the_shared_roll_up_rebuilt_from_its_events(tmp_path: Path) -> None:
    """Opening a file of schema version 3 replaces the per-hour state deltas
    (``trend_hours``) with the roll-up of both SQL stores (``hourly_changes``), rebuilt from the
    events: totals and transition counts are those of the same history in the memory store, for
    instants on and off the hour and before 1970, and stay so as the store writes on."""
    sms = SMS
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    history = [
        ("pre", "never_subscribed", "subscribed", epoch - timedelta(minutes=90)),
        ("pre", "subscribed", "unsubscribed", epoch - timedelta(minutes=10)),
        ("a", "never_subscribed", "subscribed", T0 + timedelta(minutes=10)),
        ("b", "never_subscribed", "subscribed", T0 + timedelta(minutes=20)),
        ("a", "subscribed", "unsubscribed", T0 + timedelta(minutes=70)),
        ("b", "subscribed", "unsubscribed", T0 + timedelta(minutes=75)),
        ("a", "unsubscribed", "subscribed", T0 + timedelta(hours=3, minutes=5)),
    ]
    path = tmp_path / "v3.db"
    _version_3_file(path, history)
    oracle = InMemoryStore()
    versions: dict[str, int] = {}

    def apply(target: Store, contact_id: str, previous: str, new: str, at: datetime) -> None:
        with target.transaction(ACCOUNT) as tx:
            tx.write_changes(
                batch(SubscriptionState(new), occurred_at=at, recorded_at=at, evidence=None),
                [
                    PairChange(
                        contact_id, sms, SubscriptionState(previous), versions.get(contact_id, 0)
                    )
                ],
            )

    for contact_id, previous, new, at in history:
        apply(oracle, contact_id, previous, new, at)
        versions[contact_id] = versions.get(contact_id, 0) + 1
    instants = [
        epoch - timedelta(hours=2),
        epoch - timedelta(minutes=30),
        epoch,
        T0,
        T0 + timedelta(minutes=15),
        T0 + timedelta(hours=1),
        T0 + timedelta(minutes=72),
        T0 + timedelta(hours=5),
    ]
    with SQLiteStore(path) as store:
        conn = raw(path)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        versions_seen = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
        conn.close()
        assert "hourly_changes" in tables
        assert "trend_hours" not in tables
        assert versions_seen == list(range(1, SCHEMA_VERSION + 1))
        assert store.totals_at(ACCOUNT, instants) == oracle.totals_at(ACCOUNT, instants)
        assert store.transition_counts(ACCOUNT, instants) == oracle.transition_counts(
            ACCOUNT, instants
        )
        assert store.totals_at(ACCOUNT, [T0 + timedelta(hours=5)]) == [
            {(sms, SubscriptionState.SUBSCRIBED): 1, (sms, SubscriptionState.UNSUBSCRIBED): 2}
        ]
        later = T0 + timedelta(hours=3, minutes=30)
        for target in (store, oracle):
            apply(target, "b", "unsubscribed", "subscribed", later)
        assert store.totals_at(ACCOUNT, instants) == oracle.totals_at(ACCOUNT, instants)
        assert store.transition_counts(ACCOUNT, instants) == oracle.transition_counts(
            ACCOUNT, instants
        )


def test_threads_opening_a_fresh_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Eight stores opened at once on a new file all work and the schema is created once."""
    path = tmp_path / "fresh.db"
    start = threading.Barrier(8)
    errors: list[BaseException] = []
    stores: list[SQLiteStore] = []

    def open_store() -> None:
        try:
            start.wait(5)
            stores.append(SQLiteStore(path))
        except BaseException as error:  # reported below: a thread must not die silently
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(stores) == 8
    for made in stores:
        assert made.list_contacts(ACCOUNT, after=None, limit=1) == []
        made.close()
    conn = raw(path)
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_newer_schema_is_refused(path: Path) -> None:
    """A file written by a newer consentkit is refused with advice to upgrade."""
    SQLiteStore(path).close()
    conn = raw(path)
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StorageError, match="upgrade consentkit"):
        SQLiteStore(path)


def _file_state(path: Path) -> tuple[str, str, list[str]]:
    """The SHA-256 of the file's bytes, its journal mode and the files of its directory."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    conn = raw(path)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    return digest, mode, sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
@pytest.mark.parametrize(
    ("foreign", "message"),
    [
        (["CREATE TABLE orders (id INTEGER PRIMARY KEY)"], "holds other tables"),
        (["PRAGMA application_id = 42"], r"not a consentkit database \(application id 0x2a\)"),
        (
            ["PRAGMA application_id = 7", "CREATE TABLE schema_version (version INTEGER)"],
            "application id 0x7",
        ),
        (["CREATE VIEW answers AS SELECT 42"], "such as 'answers'"),
    ],
)
def test_a_foreign_file_is_refused_and_left_exactly_as_it_was(
    path: Path, journal_mode: str, foreign: list[str], message: str
) -> None:
    """A file of another application (its own application id, or its own tables without
    consentkit's schema_version) is refused with a StorageError naming it, and keeps its bytes,
    its journal mode and its directory unchanged."""
    conn = raw(path)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    for statement in foreign:
        conn.execute(statement)
    conn.close()
    before = _file_state(path)
    with pytest.raises(StorageError, match=message) as caught:
        SQLiteStore(path)
    assert str(path) in str(caught.value)
    assert _file_state(path) == before
    assert before[1] == journal_mode


def test_a_file_that_is_not_a_database_is_a_storage_error(path: Path) -> None:
    """Garbage bytes in the file give a StorageError naming the file, caused by the driver."""
    path.write_bytes(b"this is not a database, just text " * 200)
    with pytest.raises(StorageError, match=r"consent\.db") as caught:
        SQLiteStore(path)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    """A path in a directory that does not exist gives a StorageError, not a driver error."""
    with pytest.raises(StorageError, match="open the database"):
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "consent.db")


@pytest.mark.parametrize("where", [":memory:", "", "file::memory:?cache=shared"])
def test_memory_databases_are_refused(where: str) -> None:
    """An in-memory path is refused with a pointer to InMemoryStore."""
    with pytest.raises(ValidationError, match="InMemoryStore"):
        SQLiteStore(where)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": True}, "busy_timeout"),
        ({"synchronous": "OFF"}, "synchronous"),
    ],
)
def test_bad_options_are_refused(path: Path, options: dict[str, object], field: str) -> None:
    """A negative busy timeout or an unsafe synchronous mode is refused, naming the option."""
    with pytest.raises(ValidationError) as caught:
        SQLiteStore(path, **options)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_connections_use_wal_and_the_chosen_durability(
    path: Path, synchronous: str, level: int
) -> None:
    """Every connection runs in WAL mode with the synchronous level given to the store."""
    with SQLiteStore(path, synchronous=synchronous) as made:  # type: ignore[arg-type]
        seen: list[tuple[str, int]] = []

        def look() -> None:
            conn = made._connection()
            seen.append(
                (
                    conn.execute("PRAGMA journal_mode").fetchone()[0],
                    conn.execute("PRAGMA synchronous").fetchone()[0],
                )
            )

        look()
        thread = threading.Thread(target=look)
        thread.start()
        thread.join(10)
        assert seen == [("wal", level), ("wal", level)]


def test_integrity_check_is_clean_after_work(path: Path, service: ConsentService) -> None:
    """After a mix of calls, SQLite's integrity check finds nothing wrong."""
    ids = [f"c{i}" for i in range(10)]
    service.opt_in(ADMIN, ids, [SMS, EMAIL], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ids[:5], [SMS])
    service.resubscribe(ADMIN, ids[:2], [SMS], justification=REQUEST)
    conn = raw(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


# ---------------------------------------------------------------------------- values


def test_imports_apply_suppressions_as_the_memory_store_does(path: Path) -> None:
    """The store reads the suppressions of the contacts it just wrote in one join (a key shared
    by two of them, an email, a key an existing contact keeps) and writes new contacts without
    looking for old entries: the outcome is the in-memory store's, call after call."""
    suppressions = [
        Suppression(ACCOUNT, "phone:+14155550100", SMS, T0, Source.CARRIER),
        Suppression(ACCOUNT, "email:ann@example.com", EMAIL, T0, Source.CARRIER),
        Suppression(ACCOUNT, "phone:+14155550199", SMS, T0, Source.CARRIER, active=False),
    ]
    calls = [
        [Contact(ACCOUNT, "keeps", phone="+14155550100")],
        [
            Contact(ACCOUNT, "a", phone="+14155550100"),
            Contact(ACCOUNT, "b", phone="+14155550100", email="Ann@example.com"),
            Contact(ACCOUNT, "c", phone="+14155550199"),
            Contact(ACCOUNT, "keeps", email="other@example.com"),
        ],
        [Contact(ACCOUNT, "a", phone="+14155550122"), Contact(ACCOUNT, "d")],
    ]
    outcomes = []
    with SQLiteStore(path) as sqlite_store:
        for made in (InMemoryStore(), sqlite_store):
            with made.transaction(ACCOUNT) as tx:
                tx.put_suppressions(suppressions)
            svc = ConsentService(made, clock=FakeClock(T0, tick=timedelta(seconds=1)))
            results = [svc.upsert_contacts(ADMIN, contacts) for contacts in calls]
            with made.transaction(ACCOUNT) as tx:
                owners = tx.find_contacts_by_address(
                    ["phone:+14155550100", "phone:+14155550122", "phone:+14155550199",
                     "email:ann@example.com", "email:other@example.com"]
                )
            outcomes.append((results, owners))
    assert outcomes[0] == outcomes[1]
    first, second, _ = outcomes[1][0]
    assert [tuple(p) for p in first.suppressed] == [("keeps", SMS)]
    assert sorted(tuple(p) for p in second.suppressed) == [("a", SMS), ("b", EMAIL), ("b", SMS)]


def test_contact_with_handles_and_custom_channel_round_trips(path: Path) -> None:
    """Phone, email and handles (also on a host's own channel) survive a reopen unchanged."""
    telegram = channel("telegram")
    contact = Contact(
        ACCOUNT,
        "ann",
        phone="+44 20 7946 0958",
        email="Ann.Lee@Example.COM",
        handles={telegram: "tg:1234", "push": "tok/ü+=="},
    )
    with SQLiteStore(path) as first, first.transaction(ACCOUNT) as tx:
        tx.put_contacts([contact])
    with SQLiteStore(path) as again:
        assert again.get_contact(ACCOUNT, "ann") == contact
        with again.transaction(ACCOUNT) as tx:
            assert tx.find_contacts_by_address(["handle:telegram:tg:1234"]) == {
                "handle:telegram:tg:1234": ["ann"]
            }
            assert tx.get_contacts(["ann"]) == {"ann": contact}


def test_times_come_back_as_aware_utc_to_the_microsecond(store: SQLiteStore) -> None:
    """Datetimes in any zone come back as the same instant, in UTC, to the microsecond."""
    zone = datetime(2026, 1, 1, tzinfo=UTC).astimezone().tzinfo
    when = datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC).astimezone(zone)
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, "a")])
        tx.write_changes(
            batch(SubscriptionState.SUBSCRIBED, occurred_at=when, recorded_at=when),
            [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    (event,) = store.events(ACCOUNT)
    assert event.occurred_at == when
    assert event.occurred_at.tzinfo is UTC
    assert event.evidence == EVIDENCE
    # An instant before 1970 lands in the hour before the epoch, not the one after.
    assert store.totals_at(ACCOUNT, [datetime(1970, 1, 1, tzinfo=UTC)]) == [
        {(SMS, SubscriptionState.SUBSCRIBED): 1}
    ]


# ---------------------------------------------------------------------------- errors


def test_duplicate_key_is_a_conflict_caused_by_the_driver(store: SQLiteStore) -> None:
    """A unique-key violation becomes ConflictError, chained to the sqlite3 error."""
    with store.transaction(ACCOUNT) as tx:
        tx.put_inbound(InboundRecord(SMS, "SM1", None, "{}"))
    with pytest.raises(ConflictError, match="SM1") as caught, store.transaction(ACCOUNT) as tx:
        tx.put_inbound(InboundRecord(SMS, "SM1", None, "{}"))
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)


def test_stale_version_conflict_names_the_pair(store: SQLiteStore) -> None:
    """A version mismatch in a batch names the pair and leaves the whole batch unapplied."""
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, "a"), Contact(ACCOUNT, "b")])
        tx.write_changes(
            batch(SubscriptionState.SUBSCRIBED),
            [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
        )
    with store.transaction(ACCOUNT) as tx:
        with pytest.raises(ConflictError, match=r"'a' on sms is at version 1, not 4"):
            tx.write_changes(
                batch(SubscriptionState.UNSUBSCRIBED, evidence=None),
                [
                    PairChange("b", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0),
                    PairChange("a", SMS, SubscriptionState.SUBSCRIBED, 4),
                ],
            )
        # The failed call left nothing behind, and the transaction is still usable.
        assert tx.lock_subscriptions(["a", "b"], [SMS])[("a", SMS)].version == 1
        assert ("b", SMS) not in tx.lock_subscriptions(["a", "b"], [SMS])
        tx.put_inbound(InboundRecord(SMS, "after-conflict", None, "{}"))
    assert len(list(store.events(ACCOUNT))) == 1
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_inbound(SMS, "after-conflict") == InboundRecord(
            SMS, "after-conflict", None, "{}"
        )


def test_a_locked_database_is_a_conflict_after_the_busy_timeout(path: Path) -> None:
    """A writer that cannot get the lock within busy_timeout gets a ConflictError saying so,
    while reads still see the committed state (WAL); a wait that timed out is retryable in both
    SQL stores (docs/storage-adapters.md)."""
    with SQLiteStore(path, busy_timeout=0.2) as made:
        service = ConsentService(made, clock=FakeClock(T0))
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a")])
        blocker = raw(path)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(ConflictError, match="locked by another writer") as caught:
                service.opt_in(ADMIN, "a", SMS, evidence=EVIDENCE)
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            assert made.get_contact(ACCOUNT, "a") == Contact(ACCOUNT, "a")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert service.opt_in(ADMIN, "a", SMS, evidence=EVIDENCE).changed_count == 1


def test_a_writer_queued_behind_another_thread_is_a_conflict_after_the_busy_timeout(
    path: Path,
) -> None:
    """A writer that waits longer than busy_timeout for another thread of the process (the
    store's own queue, before SQLite's lock) gets a ConflictError too: a wait that timed out is
    retryable in both SQL stores (docs/storage-adapters.md)."""
    with SQLiteStore(path, busy_timeout=0.2) as made:
        holding = threading.Event()
        release = threading.Event()

        def holder() -> None:
            with made.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "a")])
                holding.set()
                release.wait(10)

        def blocked_writer() -> None:
            with made.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "b")])

        thread = threading.Thread(target=holder)
        thread.start()
        try:
            assert holding.wait(10)
            with pytest.raises(ConflictError, match="other threads kept"):
                blocked_writer()
        finally:
            release.set()
            thread.join(10)
        assert made.get_contact(ACCOUNT, "b") is None
        assert made.get_contact(ACCOUNT, "a") == Contact(ACCOUNT, "a")


def test_transactions_do_not_nest(store: SQLiteStore) -> None:
    """Opening a transaction inside another one of the same thread is refused clearly."""
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, "a")])
        with pytest.raises(StorageError, match="do not nest"), store.transaction(ACCOUNT):
            pass
    assert store.get_contact(ACCOUNT, "a") is not None


def test_a_closed_store_refuses_use(path: Path) -> None:
    """After close(), every call raises StorageError; closing twice is harmless."""
    made = SQLiteStore(path)
    made.close()
    made.close()
    with pytest.raises(StorageError, match="closed"):
        made.get_contact(ACCOUNT, "a")
    with pytest.raises(StorageError, match="closed"), made.transaction(ACCOUNT):
        pass


def test_rejected_batches_write_nothing(store: SQLiteStore) -> None:
    """A batch for another account or back to never-subscribed is refused before writing."""
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, "a")])
        with pytest.raises(ValidationError, match="account"):
            tx.write_changes(
                batch(SubscriptionState.SUBSCRIBED, account="globex"),
                [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
            )
        with pytest.raises(ValidationError, match="never-subscribed"):
            tx.write_changes(
                batch(SubscriptionState.NEVER_SUBSCRIBED),
                [PairChange("a", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)],
            )
    assert list(store.events(ACCOUNT)) == []


# ---------------------------------------------------------------------------- opt-out record


def _stored_record(path: Path) -> dict[str, tuple[object, ...]]:
    """The raw opt-out columns of every SMS pair, by contact."""
    conn = raw(path)
    try:
        rows = conn.execute(
            "SELECT contact_id, state, opted_out_by, opted_out_via, last_opt_out_at "
            "FROM subscriptions WHERE channel = 'sms'"
        ).fetchall()
    finally:
        conn.close()
    return {row[0]: tuple(row[1:]) for row in rows}


@pytest.mark.parametrize("size", [3, 40], ids=["keyed", "json"])
def test_opt_out_record_columns_in_bulk(path: Path, store: SQLiteStore, size: int) -> None:
    """Bulk unsubscribes, notes and resubscribes (through both the keyed and the JSON statements)
    keep the origins sorted and comma-joined, move last_opt_out_at forward only, leave
    subscribed and absent pairs alone, and read back the same through every reader."""
    ids = [f"p{i:02d}" for i in range(size)]
    half = ids[: size // 2 + 1]
    at = {h: T0 + timedelta(hours=h) for h in range(6)}
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, cid) for cid in ids])
        tx.write_changes(
            batch(SubscriptionState.SUBSCRIBED),
            [PairChange(cid, SMS, SubscriptionState.NEVER_SUBSCRIBED, 0) for cid in ids],
        )
        tx.write_changes(
            batch(
                SubscriptionState.UNSUBSCRIBED,
                occurred_at=at[2],
                opted_out_by=OptOutOrigin.SYSTEM,
                opted_out_via="phone:+14155550100",
            ),
            [PairChange(cid, SMS, SubscriptionState.SUBSCRIBED, 1) for cid in half],
        )
        pairs = [(cid, SMS) for cid in [*ids, "stranger"]]
        for origin, hour in (
            (OptOutOrigin.CONTACT, 1),
            (OptOutOrigin.ADMIN, 4),
            (OptOutOrigin.CONTACT, 3),
            (None, 5),
        ):
            tx.note_opt_outs(
                batch(SubscriptionState.UNSUBSCRIBED, occurred_at=at[hour], opted_out_by=origin),
                pairs,
            )
    record = _stored_record(path)
    assert set(record) == set(ids)
    for cid in ids:
        if cid in half:
            assert record[cid] == (
                "unsubscribed",
                "admin,contact,system",
                "phone:+14155550100",
                _micros(at[5]),
            )
        else:
            assert record[cid] == ("subscribed", None, None, None)
    with store.transaction(ACCOUNT) as tx:
        locked = tx.lock_subscriptions(ids, [SMS])
        # A backdated unsubscribe of a resubscribed pair keeps the later last opt-out.
        tx.write_changes(
            batch(SubscriptionState.SUBSCRIBED, justification=REQUEST, occurred_at=at[5]),
            [PairChange(cid, SMS, SubscriptionState.UNSUBSCRIBED, 2) for cid in half],
        )
        tx.write_changes(
            batch(SubscriptionState.UNSUBSCRIBED, occurred_at=at[1]),
            [PairChange(cid, SMS, SubscriptionState.SUBSCRIBED, 3) for cid in half],
        )
    for cid in ids:
        sub = store.get_subscription(ACCOUNT, cid, SMS)
        assert sub is not None
        assert store.subscriptions_of(ACCOUNT, cid) == [sub]
        if cid in half:
            assert locked[(cid, SMS)].opted_out_by == {
                OptOutOrigin.ADMIN,
                OptOutOrigin.CONTACT,
                OptOutOrigin.SYSTEM,
            }
            assert (sub.opted_out_by, sub.opted_out_via, sub.last_opt_out_at) == (
                frozenset(),
                None,
                at[5],
            )
            assert sub.reason is None  # the backdated unsubscribe had none
        else:
            assert locked[(cid, SMS)] == sub
            assert (sub.opted_out_by, sub.last_opt_out_at) == (frozenset(), None)
    listed = store.list_subscriptions(
        ACCOUNT, SubscriptionFilter(SMS, SubscriptionState.UNSUBSCRIBED), after=None, limit=100
    )
    assert [s.contact_id for s in listed] == half
    assert {s.last_opt_out_at for s in listed} == {at[5]}
    assert _stored_record(path)[half[0]] == ("unsubscribed", None, None, _micros(at[5]))
    check_replay(store, ACCOUNT)


def test_suppressions_store_the_active_flag_and_the_latest_word(
    path: Path, store: SQLiteStore
) -> None:
    """put_suppressions keeps one row per (address, channel): the latest word replaces it in
    place (also within one call, whatever the order), an earlier one is ignored, and at the same
    instant an opt-out replaces a withdrawal but not the reverse."""
    key = "phone:+14155550100"
    stop = Suppression(ACCOUNT, key, SMS, T0, Source.INBOUND_KEYWORD, "m1")
    start = Suppression(
        ACCOUNT, key, SMS, T0 + timedelta(hours=1), Source.INBOUND_KEYWORD, "m2", active=False
    )
    same_time = Suppression(ACCOUNT, key, SMS, T0 + timedelta(hours=1), Source.CARRIER)
    with store.transaction(ACCOUNT) as tx:
        tx.put_suppressions([start, stop, same_time])
    conn = raw(path)
    rows = conn.execute(
        "SELECT address_key, channel, occurred_at, source, inbound_message_id, active "
        "FROM suppressions"
    ).fetchall()
    conn.close()
    assert rows == [(key, "sms", _micros(start.occurred_at), "carrier", None, 1)]
    with store.transaction(ACCOUNT) as tx:
        assert tx.get_suppressions([key]) == [same_time]
        tx.put_suppressions([start])
        assert tx.get_suppressions([key]) == [same_time]


def _review_item(message_id: str, at: datetime, **fields: object) -> ReviewItem:
    """A possible opt-out in ACCOUNT received at *at*."""
    values: dict[str, object] = {
        "account": ACCOUNT,
        "id": f"sms:{message_id}",
        "kind": ReviewKind.POSSIBLE_OPT_OUT,
        "channel": SMS,
        "message_id": message_id,
        "sender": "+14155550100",
        "text": "Please STOP texting me \u2014 ünïcode, 'quotes', \"and\" ; DROP TABLE x",
        "contact_ids": ("c2", "c1"),
        "received_at": at,
        "honor_by": at + timedelta(days=10),
    }
    values.update(fields)
    return ReviewItem(**values)  # type: ignore[arg-type]


def test_review_items_are_stored_as_documented(path: Path, store: SQLiteStore) -> None:
    """A review item's text is stored as is, its contacts as a JSON array in the given order, its
    times as microseconds, its kind and decision by value; it reads back equal."""
    item = _review_item("m1", T0)
    with store.transaction(ACCOUNT) as tx:
        tx.put_review_item(item)
        tx.decide_review_item(
            item.id,
            ReviewDecision.NOT_OPT_OUT,
            decided_by="admin:alice",
            decided_at=T0 + timedelta(hours=1),
            note="a joke",
        )
    conn = raw(path)
    row = conn.execute(
        "SELECT kind, channel, text, contact_ids, received_at, honor_by, decision, decided_by, "
        "decided_at, note FROM review_items"
    ).fetchone()
    conn.close()
    assert row == (
        "possible_opt_out",
        "sms",
        item.text,
        '["c2","c1"]',
        _micros(T0),
        _micros(T0 + timedelta(days=10)),
        "not_opt_out",
        "admin:alice",
        _micros(T0 + timedelta(hours=1)),
        "a joke",
    )
    (decided,) = store.list_review_items(ACCOUNT, include_decided=True, after=None, limit=5)
    assert decided == attrs.evolve(
        item,
        decision=ReviewDecision.NOT_OPT_OUT,
        decided_by="admin:alice",
        decided_at=T0 + timedelta(hours=1),
        note="a joke",
    )
    assert decided.received_at.tzinfo is UTC


def test_deciding_a_review_item_twice_or_a_missing_one_says_which(store: SQLiteStore) -> None:
    """decide_review_item names the item and says whether it is missing or decided already."""
    item = _review_item("m1", T0)
    with store.transaction(ACCOUNT) as tx:
        tx.put_review_item(item)

        def decide(item_id: str) -> None:
            tx.decide_review_item(
                item_id, ReviewDecision.OPT_OUT, decided_by="admin:alice", decided_at=T0, note="n"
            )

        decide(item.id)
        with pytest.raises(ConflictError, match=r"'sms:m1' was decided already \(opt_out\)"):
            decide(item.id)
        with pytest.raises(ConflictError, match="'sms:nope' does not exist"):
            decide("sms:nope")


@pytest.mark.parametrize("include_decided", [False, True])
@pytest.mark.parametrize("after", [False, True])
def test_review_listings_read_an_index_in_order(
    store: SQLiteStore, include_decided: bool, after: bool
) -> None:
    """Each review listing is one range read of an index on (account, received_at, id), the open
    ones of the partial index of open items, with no sort."""
    with store.transaction(ACCOUNT) as tx:
        for i in range(50):
            tx.put_review_item(_review_item(f"m{i}", T0 + timedelta(minutes=i % 7)))
    sql = _LIST_REVIEW_ITEMS[(include_decided, after)]
    params: list[object] = [ACCOUNT, *([_micros(T0), "sms:m3"] if after else []), 10]
    plan = " ".join(
        row[3] for row in store._connection().execute(f"EXPLAIN QUERY PLAN {sql}", params)
    )
    index = "review_items_by_time" if include_decided else "review_items_open"
    assert f"USING INDEX {index} (account=?" in plan
    assert "TEMP B-TREE" not in plan
    listed = store.list_review_items(
        ACCOUNT,
        include_decided=include_decided,
        after=(T0, "sms:m3") if after else None,
        limit=10,
    )
    positions = [(item.received_at, item.id) for item in listed]
    assert positions == sorted(positions)
    assert len(listed) == 10


# ---------------------------------------------------------------------------- reads


def test_events_are_read_in_pages_without_gaps(service: ConsentService) -> None:
    """Thousands of events iterate completely and in order, also with limits across pages."""
    store = service.store
    contacts = [Contact(ACCOUNT, f"p{i:04d}") for i in range(1300)]
    service.upsert_contacts(ADMIN, contacts)
    ids = [c.id for c in contacts]
    service.opt_in(ADMIN, ids, [SMS, WHATSAPP], evidence=EVIDENCE, details=False)
    everything = list(store.events(ACCOUNT))
    assert len(everything) == 2600
    sequences = [e.sequence for e in everything]
    assert sequences == sorted(set(sequences))
    assert list(store.events(ACCOUNT, after=sequences[99], limit=1500)) == everything[100:1600]
    assert list(store.events(ACCOUNT, limit=0)) == []
    of_one = list(store.events(ACCOUNT, contact_id="p0007", channel=WHATSAPP))
    assert [(e.contact_id, e.channel) for e in of_one] == [("p0007", WHATSAPP)]
    assert [e.contact_id for e in store.events(ACCOUNT, channel=SMS, limit=3)] == ids[:3]


def test_sequences_keep_growing_after_a_reopen(path: Path) -> None:
    """Events appended after a reopen get higher sequence numbers than every earlier one."""
    with SQLiteStore(path) as first:
        service = ConsentService(first, clock=FakeClock(T0, tick=timedelta(seconds=1)))
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a")])
        service.opt_in(ADMIN, "a", [SMS, EMAIL], evidence=EVIDENCE)
    with SQLiteStore(path) as again:
        service = ConsentService(again, clock=FakeClock(T0 + timedelta(1)))
        service.unsubscribe(ADMIN, "a", SMS)
        sequences = [e.sequence for e in again.events(ACCOUNT)]
    assert len(sequences) == 3
    assert sequences == sorted(set(sequences))


# ---------------------------------------------------------------------------- threads, fork


def test_threads_write_through_their_own_connections(service: ConsentService) -> None:
    """Eight threads writing at once through one store lose nothing and keep state == replay."""
    store = service.store
    ids = [f"c{i}" for i in range(10)]
    service.opt_in(ADMIN, ids, [SMS, EMAIL], evidence=EVIDENCE)
    baseline = len(list(store.events(ACCOUNT)))
    changed: list[int] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for _ in range(25):
                targets = rng.sample(ids, 3)
                if rng.random() < 0.5:
                    result = service.unsubscribe(ADMIN, targets, [SMS, EMAIL])
                else:
                    result = service.resubscribe(
                        ADMIN, targets, [SMS, EMAIL], justification=REQUEST, partial=True
                    )
                changed.append(result.changed_count)
                assert service.audience(ADMIN, SMS, ids) <= set(ids)
        except BaseException as error:  # reported below: a thread must not die silently
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(list(store.events(ACCOUNT))) - baseline == sum(changed)
    check_replay(store, ACCOUNT)


def test_connections_of_finished_threads_are_released(store: SQLiteStore) -> None:
    """A thread's connection is closed once the thread is gone, so thread churn leaks nothing."""

    def read() -> None:
        store.get_contact(ACCOUNT, "a")

    for _ in range(20):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join(10)
    gc.collect()
    assert len(store._connections) <= 2  # this thread's, and at most one not yet collected


def _write_in_child(made: SQLiteStore) -> None:
    service = ConsentService(made, clock=FakeClock(T0 + timedelta(1)))
    service.unsubscribe(ADMIN, "a", SMS)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork() (POSIX)"
)
def test_a_forked_child_opens_its_own_connection(store: SQLiteStore) -> None:
    """A store used before fork() keeps working in the child and the parent sees the write."""
    service = ConsentService(store, clock=FakeClock(T0))
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "a")])
    service.opt_in(ADMIN, "a", SMS, evidence=EVIDENCE)
    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert service.state(ADMIN, "a", SMS) is SubscriptionState.UNSUBSCRIBED
    assert service.opt_in(ADMIN, "a", EMAIL, evidence=EVIDENCE).changed_count == 1


# ---------------------------------------------------------------------------- vs the reference


def _run_script(store: Store, seed: int) -> list[object]:
    """Random calls through the service, then every read the protocol offers, as plain data."""
    rng = random.Random(seed)
    clock = FakeClock(T0)
    telegram = channel("telegram")
    service = ConsentService(store, clock=clock, chunk_size=7, channels=[telegram])
    service.upsert_contacts(
        ADMIN,
        [
            Contact(
                ACCOUNT,
                f"c{i:02d}",
                phone=f"+1415555{i:04d}",
                email=f"c{i}@example.com" if i % 2 else None,
                handles={telegram: f"t{i}"} if i % 3 == 0 else None,
            )
            for i in range(30)
        ],
    )
    pool = [f"c{i:02d}" for i in range(30)]
    outcomes: list[object] = []
    for _ in range(200):
        clock.advance(minutes=rng.choice([0, 1, 7, 45, 59, 61, 200, 1500]))
        ids = rng.sample(pool, rng.randint(1, 10))
        channels = rng.sample([SMS, EMAIL, WHATSAPP, telegram], rng.randint(1, 2))
        roll = rng.random()
        try:
            if roll < 0.3:
                result = service.unsubscribe(ADMIN, ids, channels, reason="complaint")
            elif roll < 0.4:
                result = service.unsubscribe(
                    Actor.contact(ACCOUNT, ids[0]), ids[0], channels, source=Source.INBOX
                )
            elif roll < 0.7:
                result = service.opt_in(
                    ADMIN, ids, channels, evidence=EVIDENCE, partial=rng.random() < 0.5
                )
            else:
                reason = rng.choice(list(ResubscribeReason))
                result = service.resubscribe(
                    ADMIN,
                    ids,
                    channels,
                    justification=Justification(reason, "asked"),
                    partial=True,
                )
            outcomes.append((result.changed_count, result.unchanged_count, len(result.skipped)))
        except ConsentError as error:
            outcomes.append(type(error).__name__)
    outcomes.append(store.list_contacts(ACCOUNT, after=None, limit=100))
    outcomes.append(
        [
            (
                e.contact_id,
                e.channel,
                e.new_state,
                e.actor,
                e.evidence,
                e.justification,
                e.reason,
                e.occurred_at,
                e.batch_id is not None,
            )
            for e in store.events(ACCOUNT)
        ]
    )
    outcomes.append([store.subscriptions_of(ACCOUNT, cid) for cid in pool])
    for ch in (SMS, EMAIL, telegram):
        outcomes.append(store.subscribed_among(ACCOUNT, ch, [*pool, "stranger"]))
        for state in (SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED):
            where = SubscriptionFilter(ch, state)
            outcomes.append(store.list_subscriptions(ACCOUNT, where, after="c05", limit=8))
            outcomes.append(
                store.list_subscriptions(
                    ACCOUNT,
                    SubscriptionFilter(ch, state, reason="complaint"),
                    after=None,
                    limit=100,
                )
            )
    day = datetime(2026, 1, 31, tzinfo=UTC)
    instants = [day + timedelta(minutes=23 * k) for k in range(0, 600, 7)]
    instants += [day + timedelta(hours=h) for h in range(0, 150, 5)]
    instants.sort()
    outcomes.append(store.totals_at(ACCOUNT, instants))
    outcomes.append(store.transition_counts(ACCOUNT, instants))
    outcomes.append(store.transition_counts(ACCOUNT, [day, day + timedelta(days=400)]))
    return outcomes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_answers_as_the_reference_store(tmp_path: Path, seed: int) -> None:
    """The same random calls give exactly the same results and reads as InMemoryStore,
    trends included."""
    expected = _run_script(InMemoryStore(), seed)
    with SQLiteStore(tmp_path / f"{seed}.db") as made:
        actual = _run_script(made, seed)
    assert len(actual) == len(expected)
    for position, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got == want, f"item {position} differs"


# ---------------------------------------------------------------------------- set-based changes


def test_transactions_stage(store: SQLiteStore) -> None:
    """The store's transactions have the set-based methods, so bulk changes take that path."""
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)


def _neutral(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """Event documents without their sequence, and batch ids replaced by their order of first
    appearance (fresh UUIDs on every run)."""
    batches: dict[object, int] = {}
    neutral = []
    for document in events:
        kept = {k: v for k, v in document.items() if k not in ("sequence", "batch_id")}
        kept["batch"] = batches.setdefault(document.get("batch_id"), len(batches))
        neutral.append(kept)
    return neutral


def _bulk_script(store: Store) -> list[object]:
    """Bulk calls over several chunks with every kind of situation, and what they leave."""
    service = ConsentService(store, clock=FakeClock(T0, tick=timedelta(seconds=1)))
    ids = [f"c{i:05d}" for i in range(12_000)]
    service.upsert_contacts(
        ADMIN,
        [
            Contact(ACCOUNT, cid, phone=f"+1415{i:07d}", email=f"{cid}@example.com")
            for i, cid in enumerate(ids)
        ],
    )
    outcomes: list[object] = []

    def rows() -> None:
        for ch in (SMS, EMAIL, WHATSAPP):
            for state in (SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED):
                where = SubscriptionFilter(ch, state)
                outcomes.append(store.list_subscriptions(ACCOUNT, where, after=None, limit=20_000))

    def counts(result: object) -> object:
        fields = ("changed_count", "unchanged_count", "changed", "unchanged", "skipped")
        return (*(getattr(result, name) for name in fields), getattr(result, "versions", None))

    outcomes.append(counts(service.opt_in(ADMIN, ids[:8000], SMS, evidence=EVIDENCE)))
    outcomes.append(counts(service.opt_in(ADMIN, ids[4000:], [EMAIL], evidence=EVIDENCE)))
    for cid in ids[::400]:  # unsubscribed by the contact themselves
        service.unsubscribe(Actor.contact(ACCOUNT, cid), cid, [SMS])
    # Another admin call: subscribed, contact-unsubscribed and never-subscribed pairs.
    outcomes.append(
        counts(
            service.unsubscribe(
                ADMIN, ids[1000:2000], [SMS, EMAIL], source=Source.API, reason="complaint"
            )
        )
    )
    rows()
    # Subscribed (by an opt-in), unsubscribed (by a contact, by an admin) and never subscribed.
    outcomes.append(counts(service.unsubscribe(ADMIN, ids, [SMS, EMAIL])))
    rows()
    # Again: every pair unchanged, an opt-out request noted on each.
    outcomes.append(counts(service.unsubscribe(ADMIN, reversed(ids), [EMAIL, SMS])))
    # Opt-ins skip unsubscribed pairs; details list every pair.
    outcomes.append(
        counts(service.opt_in(ADMIN, ids[::3], [SMS, WHATSAPP], evidence=EVIDENCE, details=True))
    )
    outcomes.append(
        counts(
            service.resubscribe(ADMIN, ids[5:9000:7], [SMS], justification=REQUEST, details=True)
        )
    )
    outcomes.append(_neutral([to_document(e) for e in service.audit_log(ADMIN)]))
    rows()
    # (The reference store's subscriptions_of scans every row, so it is sampled.)
    outcomes.append([store.subscriptions_of(ACCOUNT, cid) for cid in ids[::101]])
    trends = service.trends(ADMIN, as_of=T0 + timedelta(days=2))
    outcomes.append(to_document(trends))
    outcomes.append(store.totals_at(ACCOUNT, [T0 + timedelta(hours=h) for h in range(-1, 30)]))
    return outcomes


def test_bulk_changes_match_the_reference_store(tmp_path: Path) -> None:
    """Bulk calls of several chunks over mixed situations write exactly the events, states and
    roll-ups that the reference store does."""
    expected = _bulk_script(InMemoryStore())
    with SQLiteStore(tmp_path / "bulk.db") as made:
        actual = _bulk_script(made)
        check_replay(made, ACCOUNT)
    assert len(actual) == len(expected)
    for position, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got == want, f"item {position} differs"


def test_staged_situations_merge_spellings_of_one_origin_set(
    path: Path, store: SQLiteStore, service: ConsentService
) -> None:
    """Rows whose opt-out origins are spelled differently are one situation, and every pair of
    it is listed and noted."""
    ids = [f"c{i}" for i in range(4)]
    service.unsubscribe(ADMIN, ids, [SMS])
    conn = raw(path)
    conn.execute("UPDATE subscriptions SET opted_out_by = 'system,admin' WHERE contact_id = 'c1'")
    conn.execute("UPDATE subscriptions SET opted_out_by = 'admin,system' WHERE contact_id = 'c2'")
    conn.close()
    both = frozenset({OptOutOrigin.ADMIN, OptOutOrigin.SYSTEM})
    note = batch(
        SubscriptionState.UNSUBSCRIBED,
        actor=Actor.contact(ACCOUNT, "c0"),
        opted_out_by=OptOutOrigin.CONTACT,
        occurred_at=T0 + timedelta(days=1),
    )
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        tx.stage_contacts(ids)
        situations = {s.key: s.pairs for s in tx.staged_situations([SMS])}
        key = (SMS, SubscriptionState.UNSUBSCRIBED, ADMIN.kind, Source.CONTACTS_PAGE, both)
        assert situations[key] == 2
        assert sum(situations.values()) == 4
        assert [p.contact_id for p in tx.staged_pairs([SMS], [key])] == ["c1", "c2"]
        assert tx.apply_staged(note, [SMS], [], [key]) == 0
    noted = {s.contact_id: s for cid in ids for s in store.subscriptions_of(ACCOUNT, cid)}
    assert noted["c1"].opted_out_by == both | {OptOutOrigin.CONTACT}
    assert noted["c2"].opted_out_by == both | {OptOutOrigin.CONTACT}
    assert noted["c1"].last_opt_out_at == T0 + timedelta(days=1)
    assert noted["c0"].opted_out_by == frozenset({OptOutOrigin.ADMIN})
    conn = raw(path)
    assert conn.execute(
        "SELECT DISTINCT opted_out_by FROM subscriptions WHERE contact_id IN ('c1', 'c2')"
    ).fetchall() == [("admin,contact,system",)]
    conn.close()


def test_apply_staged_after_a_pairwise_write_reads_the_rows_again(
    store: SQLiteStore, service: ConsentService
) -> None:
    """A write through the per-pair methods between reading the situations and applying them
    is seen: only the pairs still in the situation are written, and the roll-ups stay equal
    to the events."""
    ids = [f"c{i}" for i in range(10)]
    never: SituationKey = (SMS, SubscriptionState.NEVER_SUBSCRIBED, None, None, frozenset())
    unsubscribe = batch(SubscriptionState.UNSUBSCRIBED, opted_out_by=OptOutOrigin.ADMIN)
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        tx.stage_contacts(ids)
        assert tx.staged_situations([SMS]) == [Situation(never, 10, None)]
        tx.write_changes(
            unsubscribe, [PairChange("c3", SMS, SubscriptionState.NEVER_SUBSCRIBED, 0)]
        )
        assert tx.apply_staged(unsubscribe, [SMS], [never], []) == 9
    assert [e.contact_id for e in store.events(ACCOUNT)] == ["c3", *(i for i in ids if i != "c3")]
    assert store.totals_at(ACCOUNT, [T0 + timedelta(hours=2)]) == [
        {(SMS, SubscriptionState.UNSUBSCRIBED): 10}
    ]
    check_replay(store, ACCOUNT)


def test_staging_survives_a_rolled_back_transaction(store: SQLiteStore) -> None:
    """The staging tables are the connection's, not a transaction's: a rollback leaves them."""

    def stage_then_fail() -> None:
        with store.transaction(ACCOUNT) as tx:
            assert isinstance(tx, StagingTransaction)
            tx.stage_contacts(["c1"])
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        stage_then_fail()
    service = ConsentService(store, clock=FakeClock(T0))
    service.upsert_contacts(
        ADMIN, [Contact(ACCOUNT, f"c{i}", phone=f"+1415555{i:04d}") for i in range(3)]
    )
    result = service.unsubscribe(ADMIN, ["c0", "c1", "c2"], [SMS, EMAIL])
    assert result.changed_count == 6
    check_replay(store, ACCOUNT)


def test_a_version_6_file_gets_inbound_times_senders_and_contacts_from_its_results(
    tmp_path: Path,
) -> None:
    """Opening a file of schema version 6 fills the columns retention and exports read from
    the stored results (the time to the microsecond); a row whose result lacks them keeps
    NULLs, which no purge deletes."""
    path = tmp_path / "v6.db"
    conn = raw(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for number in range(6):
        for statement in _MIGRATIONS[number]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number + 1,))
    received = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    rows = [
        ("sms", "SM-1", {"sender": "+14155550100", "received_at": received.isoformat(),
                         "contact_ids": ["ann"]}),
        ("email", "EM-1", {"sender": "Ann@Example.com", "received_at": received.isoformat(),
                           "contact_ids": []}),
        ("sms", "odd", {"ok": True}),
        ("whatsapp", "WA-1", {"sender": "+14155550100", "contact_ids": ["ann"],
                              "received_at": "2026-01-02T05:04:05+02:00"}),
    ]
    for key, message_id, result in rows:
        conn.execute(
            "INSERT INTO inbound_messages (account, channel, message_id, body_sha256, result) "
            "VALUES (?, ?, ?, NULL, ?)",
            (ACCOUNT, key, message_id, json.dumps(result)),
        )
    conn.close()
    SQLiteStore(path).close()
    conn = raw(path)
    found = conn.execute(
        "SELECT message_id, received_at, sender_key, from_contact FROM inbound_messages "
        "ORDER BY message_id"
    ).fetchall()
    conn.close()
    micros = (received - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert found == [
        ("EM-1", micros, "email:ann@example.com", 0),
        ("SM-1", micros, "phone:+14155550100", 1),
        ("WA-1", micros - 678000, "phone:+14155550100", 1),
        ("odd", None, None, None),
    ]
