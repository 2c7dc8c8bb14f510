"""The PostgreSQL store's guessed rows (see ``_Queries.lock_staged``): after a chunk of a call
wrote its absent pairs, the next chunk's absent pairs are inserted as the rows that change would
write, locked as placeholders are, and confirmed without a second write when the call writes
them the same way; a wrong or unused guess becomes a placeholder again.  Whatever happens, what
commits is what the placeholder scheme commits.  Needs ``CONSENTKIT_TEST_POSTGRES_DSN``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from consentkit.channels import EMAIL, SMS, Channel
from consentkit.model import (
    Actor,
    ActorKind,
    Contact,
    Evidence,
    OptOutOrigin,
    Source,
    SubscriptionState,
)
from consentkit.service import ConsentService
from consentkit.storage import postgres as postgres_store
from consentkit.storage.base import ChangeBatch, Situation, SituationKey, StagingTransaction
from consentkit.storage.postgres import PostgresStore
from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import check_replay
from tests.storage._pg_support import drop_schemas, new_schema, postgres_marks, require_dsn

pytestmark = postgres_marks

ACCOUNT = "acme"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("web_form", "Yes, text me.", "v1")
NEVER = SubscriptionState.NEVER_SUBSCRIBED


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas_at_end() -> Iterator[None]:
    """Drops every schema the module's stores created."""
    yield
    drop_schemas()


@pytest.fixture(autouse=True)
def _always_set_based(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every staged chunk, however small, takes the set-based statements."""
    monkeypatch.setattr(postgres_store, "_SMALL_STAGE", 0)


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    """A store on a fresh schema with contacts c0..c9, closed after the test."""
    made = PostgresStore(require_dsn(), schema=new_schema("g"))
    with made.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, f"c{n}") for n in range(10)])
    try:
        yield made
    finally:
        made.close()


def _batch(
    state: SubscriptionState, occurred_at: datetime = T0, source: Source = Source.API
) -> ChangeBatch:
    return ChangeBatch(
        account=ACCOUNT,
        new_state=state,
        actor=ADMIN,
        source=source,
        occurred_at=occurred_at,
        recorded_at=occurred_at,
        batch_id="g",
        evidence=EVIDENCE if state is SubscriptionState.SUBSCRIBED else None,
        opted_out_by=OptOutOrigin.ADMIN if state is SubscriptionState.UNSUBSCRIBED else None,
    )


def _never(ch: Channel) -> SituationKey:
    return (ch, NEVER, None, None, frozenset())


def _updates(tx: StagingTransaction) -> int:
    """Rows of the subscriptions table this transaction updated so far."""
    conn = tx._conn  # type: ignore[attr-defined]
    row = conn.execute(
        "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
        (f'"{tx._store.schema}".subscriptions',),  # type: ignore[attr-defined]
    ).fetchone()
    return 0 if row is None else int(row[0])


def _apply(
    tx: StagingTransaction, ids: list[str], channels: list[Channel], batch: ChangeBatch
) -> int:
    """Stage *ids* and write every never-subscribed pair of them with *batch*."""
    tx.stage_contacts(ids)
    situations = tx.staged_situations(channels)
    assert [s.key for s in situations] == [_never(ch) for ch in channels]
    return tx.apply_staged(batch, channels, [s.key for s in situations], [])


def _rows(store: PostgresStore) -> dict[tuple[str, str], tuple[object, ...]]:
    """Every row of the subscriptions table, placeholders included."""
    with store._borrow() as conn:
        rows = conn.execute(
            f'SELECT contact_id, channel, state, version, changed_by, source, opted_out_by, '
            f'updated_at FROM "{store.schema}".subscriptions'
        ).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def test_later_chunks_write_absent_pairs_once(store: PostgresStore) -> None:
    """The first chunk's absent pairs are placeholders updated by the change; those of the next
    chunks are inserted as the change writes them and not updated again."""
    batch = _batch(SubscriptionState.SUBSCRIBED)
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        assert _apply(tx, ["c0", "c1"], [SMS, EMAIL], batch) == 4
        assert _updates(tx) == 4
        assert _apply(tx, ["c3", "c2"], [SMS, EMAIL], batch) == 4
        assert _apply(tx, ["c4", "c5"], [SMS, EMAIL], batch) == 4
        assert _updates(tx) == 4
    rows = _rows(store)
    assert set(rows.values()) == {("subscribed", 1, "admin", "api", None, T0)}
    assert len(rows) == 12
    events = list(store.events(ACCOUNT))
    assert [(e.contact_id, e.channel, e.previous_state) for e in events] == [
        (cid, ch, NEVER) for cid in ["c0", "c1", "c3", "c2", "c4", "c5"] for ch in (SMS, EMAIL)
    ]
    assert [e.sequence for e in events] == list(range(1, 13))
    check_replay(store, ACCOUNT)


def test_a_wrong_guess_is_written_as_a_placeholder_would_be(store: PostgresStore) -> None:
    """Absent pairs of a chunk guessed from another change (a later time, an unsubscribe) end
    as that other change writes them, with its events."""
    later = T0 + timedelta(minutes=5)
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        _apply(tx, ["c0", "c1"], [SMS], _batch(SubscriptionState.SUBSCRIBED))
        _apply(tx, ["c2", "c3"], [SMS], _batch(SubscriptionState.SUBSCRIBED, later))
        _apply(tx, ["c4", "c5"], [SMS], _batch(SubscriptionState.UNSUBSCRIBED, later))
    rows = _rows(store)
    assert rows[("c1", "sms")] == ("subscribed", 1, "admin", "api", None, T0)
    assert rows[("c2", "sms")] == ("subscribed", 1, "admin", "api", None, later)
    assert rows[("c5", "sms")] == ("unsubscribed", 1, "admin", "api", "admin", later)
    events = {e.contact_id: e for e in store.events(ACCOUNT)}
    assert events["c3"].occurred_at == later
    assert events["c4"].new_state is SubscriptionState.UNSUBSCRIBED
    check_replay(store, ACCOUNT)


def test_unused_guesses_commit_as_placeholders(store: PostgresStore) -> None:
    """Guessed rows the call never writes (not applied, a channel left alone, read by
    lock_subscriptions first) read as never subscribed and leave no event."""
    batch = _batch(SubscriptionState.SUBSCRIBED)
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        _apply(tx, ["c0"], [SMS, EMAIL], batch)
        # Staged and guessed, then another chunk: not applied.
        tx.stage_contacts(["c1"])
        tx.staged_situations([SMS, EMAIL])
        tx.stage_contacts(["c2"])
        # Applied on SMS only: the e-mail pair is left alone.
        assert tx.staged_situations([SMS, EMAIL]) == [
            Situation(_never(SMS), 1, None),
            Situation(_never(EMAIL), 1, None),
        ]
        assert tx.apply_staged(batch, [SMS, EMAIL], [_never(SMS)], []) == 1
        # Guessed again, then locked pair by pair: the per-pair reads see no record.
        tx.stage_contacts(["c3"])
        tx.staged_situations([SMS, EMAIL])
        assert tx.lock_subscriptions(["c3"], [SMS, EMAIL]) == {}
        # And guessed once more when the transaction ends.
        tx.stage_contacts(["c4"])
        tx.staged_situations([SMS, EMAIL])
    rows = _rows(store)
    for cid in ("c1", "c3", "c4"):
        for ch in ("sms", "email"):
            assert rows[(cid, ch)] == ("never_subscribed", 0, None, None, None, None)
    assert rows[("c2", "email")] == ("never_subscribed", 0, None, None, None, None)
    assert rows[("c2", "sms")][:2] == ("subscribed", 1)
    assert [(e.contact_id, e.channel) for e in store.events(ACCOUNT)] == [
        ("c0", SMS), ("c0", EMAIL), ("c2", SMS)
    ]
    assert store.get_subscription(ACCOUNT, "c4", SMS) is None
    check_replay(store, ACCOUNT)


def test_a_guessed_pair_stays_locked(store: PostgresStore) -> None:
    """A second writer locking a guessed absent pair waits until the first transaction ends,
    then sees what it wrote."""
    locked = threading.Event()
    seen: list[int] = []

    def second() -> None:
        locked.wait(10)
        with store.transaction(ACCOUNT) as tx:
            found = tx.lock_subscriptions(["c5"], [SMS])
            seen.append(found[("c5", SMS)].version)

    thread = threading.Thread(target=second)
    thread.start()
    batch = _batch(SubscriptionState.SUBSCRIBED)
    with store.transaction(ACCOUNT) as tx:
        assert isinstance(tx, StagingTransaction)
        _apply(tx, ["c4"], [SMS], batch)
        tx.stage_contacts(["c5"])
        situations = tx.staged_situations([SMS])
        locked.set()
        time.sleep(0.3)
        assert seen == []
        assert tx.apply_staged(batch, [SMS], [s.key for s in situations], []) == 1
    thread.join(10)
    assert seen == [1]


def test_a_bulk_opt_in_in_many_chunks(store: PostgresStore) -> None:
    """Through the service: a call of many chunks over never-subscribed pairs and pairs with a
    record (one unsubscribed, skipped) writes what a call of one chunk writes."""
    clock = FakeClock(T0, tick=timedelta(seconds=1))
    many = ConsentService(store, clock=clock, chunk_size=3)
    ids = [f"c{n}" for n in range(10)]
    many.unsubscribe(ADMIN, ["c4"], [SMS])
    result = many.opt_in(ADMIN, ids, [SMS, EMAIL], evidence=EVIDENCE, partial=True)
    assert result.changed_count == 19
    assert [s.contact_id for s in result.skipped] == ["c4"]
    rows = _rows(store)
    assert sum(1 for r in rows.values() if r[0] == "subscribed") == 19
    assert all(r[1] == 1 for r in rows.values() if r[0] == "subscribed")
    assert {r[2] for r in rows.values() if r[0] == "subscribed"} == {ActorKind.ADMIN.value}
    check_replay(store, ACCOUNT)
