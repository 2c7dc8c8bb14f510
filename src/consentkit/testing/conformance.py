"""The public conformance suite every consentkit store must pass.

Subclass :class:`StoreConformance` in a test module, in a class whose name starts with ``Test``,
and say how to build a fresh, empty store::

    from consentkit.testing import StoreConformance

    class TestMyStore(StoreConformance):
        def make_store(self, directory):
            return MyStore(directory / "consent.db")

pytest then runs every contract test against your store.  ``directory`` is a fresh empty directory
for each store; stores that need no files may ignore it.  The suite closes every store it makes.
Property-based tests make a new store per example, so keep ``make_store`` reasonably fast.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentkit.channels import EMAIL, MMS, SMS, WHATSAPP, AddressKind, Channel, ChannelGroups
from consentkit.errors import (
    ConflictError,
    ConsentError,
    JustificationError,
    NotAuthorizedError,
    StorageError,
    UnknownContactError,
    ValidationError,
)
from consentkit.inbound import (
    InboundMessage,
    InboundOutcome,
    InboundSettings,
    KeywordProgramme,
)
from consentkit.model import (
    Actor,
    ActorKind,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    SubscriptionState,
    Suppression,
    Transition,
    transition_of,
)
from consentkit.review import ReviewDecision, ReviewItem, ReviewKind
from consentkit.service import ConsentService
from consentkit.settings import AccountSettings
from consentkit.storage.base import (
    AddressOwners,
    ChangeBatch,
    InboundRecord,
    PairChange,
    Store,
    SubscriptionFilter,
)
from consentkit.testing._confirmation_contract import ConfirmationContract
from consentkit.testing._erasure_contract import ErasureContract
from consentkit.testing._feed_contract import FeedContract
from consentkit.testing._retention_contract import RetentionContract
from consentkit.testing._sends_contract import SendsContract
from consentkit.testing._topics_contract import TopicsContract
from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import check_replay
from consentkit.testing.strategies import apply_request, change_requests

__all__ = ["StoreConformance"]

ACCOUNT = "acme"
OTHER_ACCOUNT = "globex"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVIDENCE = Evidence(
    method="web_form",
    wording="Yes, send me texts about my orders. Reply STOP to stop.",
    wording_version="v3",
    location="https://shop.example/signup",
    captured_at=datetime(2026, 2, 28, 9, 30, tzinfo=UTC),
    reference="submission-42",
)
JUSTIFICATION = Justification(
    ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "unsubscribed the wrong row on the contacts page"
)
ADMIN = Actor.admin(ACCOUNT, "alice")
SUBSCRIBED = SubscriptionState.SUBSCRIBED
UNSUBSCRIBED = SubscriptionState.UNSUBSCRIBED
NEVER = SubscriptionState.NEVER_SUBSCRIBED


class _RolledBack(Exception):
    """Raised inside a transaction to roll it back on purpose."""


class StoreConformance(
    TopicsContract,
    SendsContract,
    FeedContract,
    RetentionContract,
    ErasureContract,
    ConfirmationContract,
):
    """The storage contract as tests.  Subclass it and implement :meth:`make_store`."""

    def make_store(self, directory: Path) -> Store:
        """Return a new, empty store (files, if any, under *directory*)."""
        raise NotImplementedError("subclasses say how to build their store")

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def store(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
        """A fresh store, closed after the test."""
        made = self.make_store(tmp_path_factory.mktemp("store"))
        try:
            yield made
        finally:
            made.close()

    @pytest.fixture
    def clock(self) -> FakeClock:
        """A fake clock at T0 that ticks one second per reading."""
        return FakeClock(T0, tick=timedelta(seconds=1))

    @pytest.fixture
    def service(self, store: Store, clock: FakeClock) -> ConsentService:
        """A service with ten contacts c0..c9 in ACCOUNT (and c0..c2 in OTHER_ACCOUNT)."""
        svc = ConsentService(store, clock=clock)
        svc.upsert_contacts(
            ADMIN,
            [
                Contact(ACCOUNT, f"c{i}", phone=f"+1415555{i:04d}", email=f"c{i}@example.com")
                for i in range(10)
            ],
        )
        other_admin = Actor.admin(OTHER_ACCOUNT, "olga")
        svc.upsert_contacts(
            other_admin,
            [Contact(OTHER_ACCOUNT, f"c{i}", phone=f"+4930555{i:04d}") for i in range(3)],
        )
        return svc

    def _fresh(self, factory: pytest.TempPathFactory) -> Store:
        return self.make_store(factory.mktemp("store"))

    # ------------------------------------------------------------------ contacts

    def test_contacts_round_trip(self, store: Store) -> None:
        """A contact with phone, email and handles reads back equal, and None when unknown."""
        contact = Contact(
            ACCOUNT, "ünïcode-1", phone="+14155550100", email="Ann@Example.com",
            handles={"telegram": "tg-991", "push": "tok:abc"},
        )
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([contact])
        assert store.get_contact(ACCOUNT, "ünïcode-1") == contact
        assert store.get_contact(ACCOUNT, "missing") is None
        assert store.get_contact(OTHER_ACCOUNT, "ünïcode-1") is None

    def test_contacts_replace_and_address_index(self, store: Store) -> None:
        """Replacing a contact updates its addresses and the address index."""
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a", phone="+14155550100")])
            tx.put_contacts([Contact(ACCOUNT, "b", phone="+14155550100")])
        with store.transaction(ACCOUNT) as tx:
            assert tx.find_contacts_by_address(["phone:+14155550100"]) == {
                "phone:+14155550100": ["a", "b"]
            }
            tx.put_contacts([Contact(ACCOUNT, "a", phone="+14155550199")])
            assert tx.find_contacts_by_address(["phone:+14155550100", "phone:+14155550199"]) == {
                "phone:+14155550100": ["b"],
                "phone:+14155550199": ["a"],
            }
            assert tx.missing_contacts(["a", "zz", "b", "yy"]) == ["zz", "yy"]
            assert set(tx.get_contacts(["a", "zz"])) == {"a"}
        with store.transaction(OTHER_ACCOUNT) as tx:
            assert tx.find_contacts_by_address(["phone:+14155550199"]) == {}

    def test_list_contacts_pages_in_id_order(self, store: Store) -> None:
        """Contacts list in id order, resuming after a given id."""
        ids = [f"k{i:03d}" for i in range(25)]
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, cid) for cid in reversed(ids)])
        first = store.list_contacts(ACCOUNT, after=None, limit=10)
        assert [c.id for c in first] == ids[:10]
        rest = store.list_contacts(ACCOUNT, after=first[-1].id, limit=100)
        assert [c.id for c in rest] == ids[10:]
        assert store.list_contacts(OTHER_ACCOUNT, after=None, limit=10) == []

    # ------------------------------------------------------------------ writes

    def _batch(self, state: SubscriptionState, **kwargs: object) -> ChangeBatch:
        fields: dict[str, object] = {
            "account": ACCOUNT,
            "new_state": state,
            "actor": ADMIN,
            "source": Source.API,
            "occurred_at": T0,
            "recorded_at": T0 + timedelta(seconds=5),
            "batch_id": "batch-1",
        }
        fields.update(kwargs)
        return ChangeBatch(**fields)  # type: ignore[arg-type]

    def test_write_changes_round_trips_every_field(self, store: Store) -> None:
        """Subscriptions and events keep every field, with versions starting at 1."""
        actor = Actor(ActorKind.ADMIN, "alice", ACCOUNT, roles=frozenset({"owner", "billing"}))
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a"), Contact(ACCOUNT, "b")])
            tx.write_changes(
                self._batch(
                    SUBSCRIBED, actor=actor, evidence=EVIDENCE, inbound_message_id="SM123"
                ),
                [PairChange("a", SMS, NEVER, 0), PairChange("b", SMS, NEVER, 0)],
            )
        sub = store.get_subscription(ACCOUNT, "a", SMS)
        assert sub is not None
        assert (sub.state, sub.version, sub.updated_at) == (SUBSCRIBED, 1, T0)
        # get_state reads the state alone: NEVER_SUBSCRIBED for a pair or contact without a row.
        assert store.get_state(ACCOUNT, "a", SMS) is SUBSCRIBED
        assert store.get_state(ACCOUNT, "a", EMAIL) is NEVER
        assert store.get_state(ACCOUNT, "nobody", SMS) is NEVER
        assert store.get_state("other-account", "a", SMS) is NEVER
        assert (sub.changed_by, sub.source, sub.reason) == (ActorKind.ADMIN, Source.API, None)
        events = list(store.events(ACCOUNT))
        assert [(e.contact_id, e.channel) for e in events] == [("a", SMS), ("b", SMS)]
        first = events[0]
        assert first.actor == actor
        assert first.evidence == EVIDENCE
        assert first.justification is None
        assert (first.previous_state, first.new_state) == (NEVER, SUBSCRIBED)
        assert first.occurred_at == T0
        assert first.recorded_at == T0 + timedelta(seconds=5)
        assert (first.inbound_message_id, first.batch_id) == ("SM123", "batch-1")
        assert first.transition is Transition.OPT_IN
        assert events[0].sequence < events[1].sequence

        with store.transaction(ACCOUNT) as tx:
            tx.write_changes(
                self._batch(UNSUBSCRIBED, reason="hard_bounce", occurred_at=T0 + timedelta(1)),
                [PairChange("a", SMS, SUBSCRIBED, 1)],
            )
        with store.transaction(ACCOUNT) as tx:
            tx.write_changes(
                self._batch(
                    SUBSCRIBED, justification=JUSTIFICATION, occurred_at=T0 + timedelta(2)
                ),
                [PairChange("a", SMS, UNSUBSCRIBED, 2)],
            )
        sub = store.get_subscription(ACCOUNT, "a", SMS)
        assert sub is not None
        assert (sub.state, sub.version) == (SUBSCRIBED, 3)
        assert sub.reason == ResubscribeReason.MISTAKEN_UNSUBSCRIBE.value
        history = list(store.events(ACCOUNT, contact_id="a"))
        assert [e.new_state for e in history] == [SUBSCRIBED, UNSUBSCRIBED, SUBSCRIBED]
        assert history[1].reason == "hard_bounce"
        assert history[2].justification == JUSTIFICATION
        assert store.subscriptions_of(ACCOUNT, "a") == [sub]

    def test_stale_version_raises_conflict_and_writes_nothing(self, store: Store) -> None:
        """write_changes refuses a stale expected version with ConflictError; the tx rolls back."""
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a"), Contact(ACCOUNT, "b")])
            tx.write_changes(self._batch(SUBSCRIBED), [PairChange("a", SMS, NEVER, 0)])
        with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:
            tx.write_changes(
                self._batch(UNSUBSCRIBED),
                [PairChange("b", SMS, NEVER, 0), PairChange("a", SMS, NEVER, 0)],
            )
        with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:
            tx.write_changes(self._batch(UNSUBSCRIBED), [PairChange("a", SMS, SUBSCRIBED, 7)])
        assert store.get_subscription(ACCOUNT, "b", SMS) is None
        sub = store.get_subscription(ACCOUNT, "a", SMS)
        assert sub is not None
        assert (sub.state, sub.version) == (SUBSCRIBED, 1)
        assert len(list(store.events(ACCOUNT))) == 1

    def test_failed_transaction_leaves_nothing(self, store: Store) -> None:
        """An exception inside a transaction discards every write of it, of every kind."""
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "keep", phone="+14155550100")])

        def write_everything_then_fail() -> None:
            with store.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "keep", phone="+14155550111")])
                tx.put_contacts([Contact(ACCOUNT, "new")])
                tx.write_changes(self._batch(SUBSCRIBED), [PairChange("keep", SMS, NEVER, 0)])
                tx.put_inbound(InboundRecord(SMS, "msg-1", "ab" * 32, '{"ok": true}'))
                tx.put_review_item(self._review_item("msg-1"))
                tx.put_suppressions(
                    [Suppression(ACCOUNT, "phone:+14155550999", SMS, T0, Source.INBOUND_KEYWORD)]
                )
                tx.lock_addresses(["phone:+14155550999"])
                assert tx.get_inbound(SMS, "msg-1") == InboundRecord(
                    SMS, "msg-1", "ab" * 32, '{"ok": true}'
                )
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            write_everything_then_fail()
        assert store.get_contact(ACCOUNT, "keep") == Contact(
            ACCOUNT, "keep", phone="+14155550100"
        )
        assert store.get_contact(ACCOUNT, "new") is None
        assert store.get_subscription(ACCOUNT, "keep", SMS) is None
        assert list(store.events(ACCOUNT)) == []
        assert store.totals_at(ACCOUNT, [T0 + timedelta(days=1)]) == [{}]
        with store.transaction(ACCOUNT) as tx:
            assert tx.get_inbound(SMS, "msg-1") is None
            assert tx.get_review_item("sms:msg-1") is None
            assert tx.get_suppressions(["phone:+14155550999"]) == []
            assert tx.find_contacts_by_address(["phone:+14155550111"]) == {}
        assert store.list_review_items(ACCOUNT, include_decided=True, after=None, limit=10) == []

    def test_transaction_sees_its_own_writes(self, store: Store) -> None:
        """Reads through a transaction see what it wrote before it commits."""
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a")])
            assert tx.missing_contacts(["a"]) == []
            tx.write_changes(self._batch(SUBSCRIBED), [PairChange("a", SMS, NEVER, 0)])
            locked = tx.lock_subscriptions(["a", "b"], [SMS, EMAIL])
            assert list(locked) == [("a", SMS)]
            assert locked[("a", SMS)].version == 1

    def _review_item(self, message_id: str, at: datetime = T0, **kwargs: object) -> ReviewItem:
        fields: dict[str, object] = {
            "account": ACCOUNT,
            "id": f"sms:{message_id}",
            "kind": ReviewKind.POSSIBLE_OPT_OUT,
            "channel": SMS,
            "message_id": message_id,
            "sender": "+14155550100",
            "text": "please stop texting me, ünïcode ok",
            "contact_ids": ("c1", "c2"),
            "received_at": at,
            "honor_by": at + timedelta(days=14),
        }
        fields.update(kwargs)
        return ReviewItem(**fields)  # type: ignore[arg-type]

    def test_inbound_records_are_unique_per_account_and_channel(self, store: Store) -> None:
        """An inbound message is recorded once per (account, channel, message id), with its text's
        digest; a second put is a conflict, the same id on another channel is another message."""
        first = InboundRecord(SMS, "SM1", "0" * 64, '{"n": 1}')
        with store.transaction(ACCOUNT) as tx:
            tx.put_inbound(first)
        with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:
            tx.put_inbound(InboundRecord(SMS, "SM1", "1" * 64, '{"n": 2}'))
        with store.transaction(ACCOUNT) as tx:
            assert tx.get_inbound(SMS, "SM1") == first
            assert tx.get_inbound(WHATSAPP, "SM1") is None
            tx.put_inbound(InboundRecord(WHATSAPP, "SM1", None, '{"n": 3}'))
        with store.transaction(ACCOUNT) as tx:
            assert tx.get_inbound(WHATSAPP, "SM1") == InboundRecord(
                WHATSAPP, "SM1", None, '{"n": 3}'
            )
        with store.transaction(OTHER_ACCOUNT) as tx:
            assert tx.get_inbound(SMS, "SM1") is None
            tx.put_inbound(InboundRecord(SMS, "SM1", "2" * 64, '{"n": 4}'))

    def test_review_items_round_trip_page_and_decide(self, store: Store) -> None:
        """Review items keep every field, list oldest first in pages (open ones only unless asked),
        take one decision each, and stay in their account."""
        later = self._review_item("m-late", T0 + timedelta(hours=2), contact_ids=())
        first = self._review_item("m-b", T0)
        tie = self._review_item("m-a", T0)  # same time: ordered by id
        with store.transaction(ACCOUNT) as tx:
            tx.put_review_item(later)
            tx.put_review_item(first)
            tx.put_review_item(tie)
        with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:
            tx.put_review_item(first)
        listed = store.list_review_items(ACCOUNT, include_decided=False, after=None, limit=10)
        assert listed == [tie, first, later]
        page = store.list_review_items(ACCOUNT, include_decided=False, after=None, limit=2)
        assert page == [tie, first]
        rest = store.list_review_items(
            ACCOUNT, include_decided=False, after=(first.received_at, first.id), limit=2
        )
        assert rest == [later]
        decided_at = T0 + timedelta(days=1)
        with store.transaction(ACCOUNT) as tx:
            assert tx.get_review_item(first.id) == first
            tx.decide_review_item(
                first.id, ReviewDecision.OPT_OUT, decided_by="admin:alice",
                decided_at=decided_at, note="she meant it",
            )
        with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:
            tx.decide_review_item(
                first.id, ReviewDecision.NOT_OPT_OUT, decided_by="admin:bob",
                decided_at=decided_at, note="second opinion",
            )
        with pytest.raises(ConflictError), store.transaction(ACCOUNT) as tx:
            tx.decide_review_item(
                "sms:nope", ReviewDecision.NOT_OPT_OUT, decided_by="admin:bob",
                decided_at=decided_at, note="missing",
            )
        decided = attrs.evolve(
            first, decision=ReviewDecision.OPT_OUT, decided_by="admin:alice",
            decided_at=decided_at, note="she meant it",
        )
        assert store.list_review_items(ACCOUNT, include_decided=False, after=None, limit=10) == [
            tie, later
        ]
        assert store.list_review_items(ACCOUNT, include_decided=True, after=None, limit=10) == [
            tie, decided, later
        ]
        assert store.list_review_items(
            OTHER_ACCOUNT, include_decided=True, after=None, limit=10
        ) == []
        with store.transaction(OTHER_ACCOUNT) as tx:
            assert tx.get_review_item(first.id) is None

    def test_suppressions_keep_the_latest_word(self, store: Store) -> None:
        """Suppressions are stored per (address, channel); the one that occurred last wins, so a
        late delivery never overrides a later word, and inactive ones read back too."""
        key = "phone:+14155550100"
        first = Suppression(ACCOUNT, key, SMS, T0, Source.INBOUND_KEYWORD, "m1")
        other = Suppression(ACCOUNT, key, MMS, T0, Source.INBOUND_KEYWORD, "m1")
        lifted = Suppression(
            ACCOUNT, key, SMS, T0 + timedelta(hours=2), Source.INBOUND_KEYWORD, "m3", active=False
        )
        late = Suppression(ACCOUNT, key, SMS, T0 + timedelta(hours=1), Source.INBOUND_KEYWORD)
        with store.transaction(ACCOUNT) as tx:
            tx.put_suppressions([first, other])
        with store.transaction(ACCOUNT) as tx:
            tx.put_suppressions([lifted])
        with store.transaction(ACCOUNT) as tx:
            tx.put_suppressions([late, first])
            found = tx.get_suppressions([key, "email:x@example.com"])
        assert sorted(found, key=lambda s: s.channel.key) == [other, lifted]
        with store.transaction(OTHER_ACCOUNT) as tx:
            assert tx.get_suppressions([key]) == []

    def test_opt_out_record_follows_the_state(self, store: Store) -> None:
        """Unsubscribing records who asked and from which address; later requests on the
        unsubscribed pair add their origin and time without an event; subscribing clears them."""
        via = "phone:+14155550100"
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a"), Contact(ACCOUNT, "b")])
            tx.write_changes(self._batch(SUBSCRIBED), [PairChange("a", SMS, NEVER, 0)])
            tx.write_changes(
                self._batch(
                    UNSUBSCRIBED,
                    actor=Actor.contact(ACCOUNT, "a"),
                    occurred_at=T0 + timedelta(hours=1),
                    opted_out_by=OptOutOrigin.CONTACT,
                    opted_out_via=via,
                ),
                [PairChange("a", SMS, SUBSCRIBED, 1), PairChange("a", MMS, NEVER, 0)],
            )
        sub = store.get_subscription(ACCOUNT, "a", SMS)
        assert sub is not None
        assert (sub.opted_out_by, sub.opted_out_via, sub.last_opt_out_at) == (
            frozenset({OptOutOrigin.CONTACT}), via, T0 + timedelta(hours=1)
        )
        with store.transaction(ACCOUNT) as tx:
            assert tx.lock_subscriptions(["a"], [SMS])[("a", SMS)] == sub
            note = self._batch(
                UNSUBSCRIBED, occurred_at=T0 + timedelta(hours=3), opted_out_by=OptOutOrigin.ADMIN
            )
            tx.note_opt_outs(note, [("a", SMS), ("b", SMS)])
            earlier = self._batch(
                UNSUBSCRIBED, occurred_at=T0 + timedelta(hours=2), opted_out_by=OptOutOrigin.SYSTEM
            )
            tx.note_opt_outs(earlier, [("a", SMS)])
        noted = store.get_subscription(ACCOUNT, "a", SMS)
        assert noted is not None
        assert noted.opted_out_by == {
            OptOutOrigin.CONTACT, OptOutOrigin.ADMIN, OptOutOrigin.SYSTEM
        }
        assert (noted.opted_out_via, noted.last_opt_out_at) == (via, T0 + timedelta(hours=3))
        assert (noted.version, noted.updated_at, noted.changed_by) == (
            2, T0 + timedelta(hours=1), ActorKind.CONTACT
        )
        assert store.get_subscription(ACCOUNT, "b", SMS) is None
        assert len(list(store.events(ACCOUNT))) == 3

        def note_then_fail() -> None:
            with store.transaction(ACCOUNT) as tx:
                tx.note_opt_outs(
                    self._batch(
                        UNSUBSCRIBED,
                        occurred_at=T0 + timedelta(hours=9),
                        opted_out_by=OptOutOrigin.SUPPRESSION,
                    ),
                    [("a", SMS)],
                )
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            note_then_fail()
        assert store.get_subscription(ACCOUNT, "a", SMS) == noted
        with store.transaction(ACCOUNT) as tx:
            tx.write_changes(
                self._batch(
                    SUBSCRIBED, justification=JUSTIFICATION, occurred_at=T0 + timedelta(hours=4)
                ),
                [PairChange("a", SMS, UNSUBSCRIBED, 2)],
            )
        back = store.get_subscription(ACCOUNT, "a", SMS)
        assert back is not None
        assert (back.opted_out_by, back.opted_out_via, back.last_opt_out_at) == (
            frozenset(), None, T0 + timedelta(hours=3)
        )
        mms = store.get_subscription(ACCOUNT, "a", MMS)
        assert mms is not None
        assert (mms.state, mms.opted_out_by) == (UNSUBSCRIBED, frozenset({OptOutOrigin.CONTACT}))
        assert store.subscriptions_of(ACCOUNT, "a") == [mms, back]

    def test_write_changes_refuses_another_account_and_never_subscribed(
        self, store: Store
    ) -> None:
        """A write batch for another account, or back to never-subscribed, is refused with a
        ValidationError and writes nothing."""
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a")])
        with pytest.raises(ValidationError), store.transaction(ACCOUNT) as tx:
            tx.write_changes(
                self._batch(SUBSCRIBED, account=OTHER_ACCOUNT), [PairChange("a", SMS, NEVER, 0)]
            )
        with pytest.raises(ValidationError), store.transaction(ACCOUNT) as tx:
            tx.write_changes(self._batch(NEVER), [PairChange("a", SMS, NEVER, 0)])
        assert store.get_subscription(ACCOUNT, "a", SMS) is None
        assert store.get_subscription(OTHER_ACCOUNT, "a", SMS) is None
        assert list(store.events(ACCOUNT)) == list(store.events(OTHER_ACCOUNT)) == []

    def test_nested_transaction_is_refused(self, store: Store) -> None:
        """A transaction opened while the same thread has one open on the store raises
        StorageError at once (an inner commit could otherwise be undone by the outer rollback),
        and the outer transaction goes on unharmed."""
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "a")])
            with pytest.raises(StorageError), store.transaction(ACCOUNT) as inner:
                inner.put_contacts([Contact(ACCOUNT, "inner")])
            with pytest.raises(StorageError), store.transaction(OTHER_ACCOUNT) as inner:
                inner.put_contacts([Contact(OTHER_ACCOUNT, "inner")])
            tx.write_changes(self._batch(SUBSCRIBED), [PairChange("a", SMS, NEVER, 0)])
        assert store.get_state(ACCOUNT, "a", SMS) is SUBSCRIBED
        assert store.get_contact(ACCOUNT, "inner") is None
        with store.transaction(ACCOUNT) as tx:
            assert tx.missing_contacts(["a"]) == []

    def test_address_locks_serialise_readers_of_an_address(self, store: Store) -> None:
        """A transaction that locks an address waits for another that locked it first, then sees
        what that one wrote (suppressions of the address, contacts at it).  A lock is in force
        from the transaction's next read on (a server store may send it with that read)."""
        key = "phone:+14155550100"
        locked = threading.Event()
        errors: list[BaseException] = []
        seen: list[object] = []

        def first() -> None:
            try:
                with store.transaction(ACCOUNT) as tx:
                    tx.lock_addresses([key])
                    assert tx.get_suppressions([key]) == []
                    locked.set()
                    time.sleep(0.3)
                    tx.put_suppressions([Suppression(ACCOUNT, key, SMS, T0, Source.CARRIER)])
                    tx.put_contacts([Contact(ACCOUNT, "x", phone="+14155550100")])
            except BaseException as e:  # reported below
                errors.append(e)
                locked.set()

        thread = threading.Thread(target=first)
        thread.start()
        assert locked.wait(10)
        with store.transaction(ACCOUNT) as tx:
            tx.lock_addresses([key, "email:x@example.com"])
            seen.append(tx.get_suppressions([key]))
            seen.append(tx.find_contacts_by_address([key]))
        thread.join(10)
        assert not errors, errors
        assert seen == [[Suppression(ACCOUNT, key, SMS, T0, Source.CARRIER)], {key: ["x"]}]

    # ------------------------------------------------------------------ reads

    def test_events_filter_and_resume(self, service: ConsentService, store: Store) -> None:
        """Events come in append order and can be filtered and resumed by sequence."""
        service.opt_in(ADMIN, ["c1", "c2", "c3"], [SMS, EMAIL], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c2"], [SMS])
        events = list(store.events(ACCOUNT))
        assert len(events) == 7
        sequences = [e.sequence for e in events]
        assert sequences == sorted(sequences)
        assert len(set(sequences)) == 7
        assert [e.new_state for e in store.events(ACCOUNT, contact_id="c2", channel=SMS)] == [
            SUBSCRIBED,
            UNSUBSCRIBED,
        ]
        assert list(store.events(ACCOUNT, after=sequences[2], limit=2)) == events[3:5]
        assert list(store.events(OTHER_ACCOUNT)) == []

    def test_list_subscriptions_filters_and_pages(
        self, service: ConsentService, store: Store
    ) -> None:
        """Listing by channel and state honours source and reason filters and the cursor."""
        ids = [f"c{i}" for i in range(10)]
        service.opt_in(ADMIN, ids, [SMS, EMAIL], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ids[:4], [SMS], reason="complaint")
        service.unsubscribe(
            Actor.system(ACCOUNT, "carrier"), ids[4:6], [SMS], source=Source.CARRIER
        )
        everything = store.list_subscriptions(
            ACCOUNT, SubscriptionFilter(SMS, UNSUBSCRIBED), after=None, limit=100
        )
        assert [s.contact_id for s in everything] == ids[:6]
        page = store.list_subscriptions(
            ACCOUNT, SubscriptionFilter(SMS, UNSUBSCRIBED), after="c1", limit=2
        )
        assert [s.contact_id for s in page] == ["c2", "c3"]
        by_source = store.list_subscriptions(
            ACCOUNT, SubscriptionFilter(SMS, UNSUBSCRIBED, source=Source.CARRIER), after=None,
            limit=100,
        )
        assert [s.contact_id for s in by_source] == ["c4", "c5"]
        by_reason = store.list_subscriptions(
            ACCOUNT, SubscriptionFilter(SMS, UNSUBSCRIBED, reason="complaint"), after=None,
            limit=100,
        )
        assert [s.contact_id for s in by_reason] == ids[:4]
        subscribed_email = store.list_subscriptions(
            ACCOUNT, SubscriptionFilter(EMAIL, SUBSCRIBED), after=None, limit=100
        )
        assert len(subscribed_email) == 10
        assert store.list_subscriptions(
            OTHER_ACCOUNT, SubscriptionFilter(SMS, UNSUBSCRIBED), after=None, limit=100
        ) == []

    def test_subscribed_among_streams_any_number_of_ids(
        self, service: ConsentService, store: Store
    ) -> None:
        """The audience filter takes a generator of many ids, with duplicates and strangers."""
        service.opt_in(ADMIN, ["c1", "c2", "c3"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c2"], [SMS])

        def ids() -> Iterator[str]:
            for i in range(12_000):
                yield f"stranger-{i}"
                if i % 1000 == 0:
                    yield "c1"
                    yield "c2"
            yield "c3"

        assert store.subscribed_among(ACCOUNT, SMS, ids()) == {"c1", "c3"}
        assert store.subscribed_among(ACCOUNT, EMAIL, ["c1"]) == set()
        assert store.subscribed_among(OTHER_ACCOUNT, SMS, ["c1", "c3"]) == set()
        assert store.subscribed_among(ACCOUNT, SMS, iter(())) == set()

    def test_reader_never_sees_a_rolled_back_write(self, service: ConsentService) -> None:
        """A read made while another thread's transaction is open, after that transaction wrote,
        sees the committed state only."""
        store = service.store
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        written = threading.Event()
        release = threading.Event()
        seen: list[SubscriptionState | None] = []
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                with store.transaction(ACCOUNT) as tx:
                    tx.write_changes(
                        self._batch(UNSUBSCRIBED, occurred_at=T0 + timedelta(hours=1)),
                        [PairChange("c1", SMS, SUBSCRIBED, 1)],
                    )
                    written.set()
                    release.wait(5)
                    raise _RolledBack
            except _RolledBack:
                pass
            except BaseException as error:  # reported below
                errors.append(error)
                written.set()

        def reader() -> None:
            try:
                assert written.wait(5), "the writer never wrote"
                sub = store.get_subscription(ACCOUNT, "c1", SMS)
                seen.append(None if sub is None else sub.state)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for thread in threads:
            thread.start()
        # The reader may block until the writer ends (lock-based stores) or read a snapshot
        # (MVCC stores); either way it must not see the uncommitted unsubscribe.
        threads[1].join(0.5)
        release.set()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert written.is_set()
        assert seen == [SUBSCRIBED]
        assert store.get_state(ACCOUNT, "c1", SMS) is SUBSCRIBED

    # ------------------------------------------------------------------ service contract

    def test_bulk_call_is_all_or_nothing(self, service: ConsentService, store: Store) -> None:
        """One refused pair in a bulk resubscribe refuses the whole call and writes nothing."""
        service.opt_in(ADMIN, ["c1", "c2", "c3"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c1", "c2"], [SMS])
        service.unsubscribe(Actor.contact(ACCOUNT, "c3"), ["c3"], [SMS], source=Source.INBOX)
        before = list(store.events(ACCOUNT))
        with pytest.raises(JustificationError, match="CONTACT_REQUEST"):
            service.resubscribe(ADMIN, ["c1", "c2", "c3"], [SMS], justification=JUSTIFICATION)
        assert list(store.events(ACCOUNT)) == before
        assert service.state(ADMIN, "c1", SMS) is UNSUBSCRIBED
        with pytest.raises(UnknownContactError, match="nobody"):
            service.unsubscribe(ADMIN, ["c5", "nobody"], [SMS, EMAIL])
        assert service.state(ADMIN, "c5", SMS) is NEVER
        assert list(store.events(ACCOUNT)) == before

    def test_partial_bulk_reports_refusals(self, service: ConsentService) -> None:
        """With partial=True the allowed pairs change and the refused ones are reported."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c1"], [SMS])
        service.unsubscribe(Actor.contact(ACCOUNT, "c2"), "c2", [SMS], source=Source.INBOX)
        result = service.resubscribe(
            ADMIN, ["c1", "c2", "ghost"], [SMS], justification=JUSTIFICATION, partial=True,
            details=True,
        )
        assert [(p.contact_id, p.channel) for p in result.changed] == [("c1", SMS)]
        assert sorted(r.contact_id for r in result.refused) == ["c2", "ghost"]
        assert service.state(ADMIN, "c2", SMS) is UNSUBSCRIBED

    def test_no_op_writes_no_event(self, service: ConsentService, store: Store) -> None:
        """Setting a pair to the state it is in is reported unchanged and writes no event."""
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c1"], [SMS])
        count = len(list(store.events(ACCOUNT)))
        result = service.unsubscribe(ADMIN, ["c1", "c1"], [SMS])
        assert result.changed == ()
        assert result.unchanged_count == 1
        assert len(list(store.events(ACCOUNT))) == count

    def test_accounts_are_isolated(self, service: ConsentService, store: Store) -> None:
        """The same contact id in two accounts never shares state, events or access."""
        other_admin = Actor.admin(OTHER_ACCOUNT, "olga")
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(other_admin, ["c1"], [SMS])
        assert service.state(ADMIN, "c1", SMS) is SUBSCRIBED
        assert service.state(other_admin, "c1", SMS) is UNSUBSCRIBED
        assert {e.account for e in store.events(ACCOUNT)} == {ACCOUNT}
        assert len(list(store.events(OTHER_ACCOUNT))) == 1
        with pytest.raises(UnknownContactError):
            service.unsubscribe(other_admin, ["c7"], [SMS])
        assert service.state(ADMIN, "c7", SMS) is NEVER

    def test_concurrent_writers_lose_nothing(self, service: ConsentService, store: Store) -> None:
        """Threads changing overlapping contacts never lose or duplicate an event."""
        ids = [f"c{i}" for i in range(10)]
        service.opt_in(ADMIN, ids, [SMS, WHATSAPP], evidence=EVIDENCE)
        baseline = len(list(store.events(ACCOUNT)))
        changed = Counter[str]()
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(worker: int) -> None:
            try:
                for round_ in range(15):
                    targets = ids[(worker + round_) % 10 :][:4] or ids[:4]
                    if (worker + round_) % 2:
                        result = service.unsubscribe(ADMIN, targets, [SMS, WHATSAPP])
                    else:
                        result = service.resubscribe(
                            ADMIN, targets, [SMS, WHATSAPP], justification=JUSTIFICATION,
                            partial=True,
                        )
                    with lock:
                        changed["n"] += result.changed_count
            except BaseException as error:  # reported below: a thread must not die silently
                errors.append(error)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert len(list(store.events(ACCOUNT))) - baseline == changed["n"]
        check_replay(store, ACCOUNT)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[
            # One contract, many stores: every subclass runs the same test on its own store.
            HealthCheck.differing_executors,
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
        ],
    )
    @given(data=st.data())
    def test_state_is_always_the_replay_of_events(
        self, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
    ) -> None:
        """After any sequence of requests by any actors, state equals the replay of the events."""
        store = self._fresh(tmp_path_factory)
        try:
            clock = FakeClock(T0, tick=timedelta(minutes=7))
            service = ConsentService(store, clock=clock)
            pool = ["a", "b", "c"]
            service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid) for cid in pool])
            requests = data.draw(
                st.lists(change_requests(ACCOUNT, pool, [SMS, EMAIL]), max_size=12)
            )
            reported = 0
            for request in requests:
                before = len(list(store.events(ACCOUNT)))
                try:
                    reported += apply_request(service, request).changed_count
                except ConsentError:
                    assert len(list(store.events(ACCOUNT))) == before
            assert len(list(store.events(ACCOUNT))) == reported
            check_replay(store, ACCOUNT)
        finally:
            store.close()

    # ------------------------------------------------------------------ trend roll-ups

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[
            # One contract, many stores: every subclass runs the same test on its own store.
            HealthCheck.differing_executors,
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
        ],
    )
    @given(
        steps=st.lists(
            st.tuples(
                st.integers(0, 4),
                st.sampled_from([SMS, EMAIL]),
                st.booleans(),
                st.integers(0, 200_000),
            ),
            max_size=25,
        ),
        probes=st.lists(st.integers(-3_600, 260_000), min_size=1, max_size=6),
    )
    def test_rollups_match_the_event_log(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        steps: list[tuple[int, Channel, bool, int]],
        probes: list[int],
    ) -> None:
        """totals_at and transition_counts equal a brute-force count over the events."""
        store = self._fresh(tmp_path_factory)
        try:
            clock = FakeClock(T0 + timedelta(days=30))
            service = ConsentService(store, clock=clock)
            service.upsert_contacts(ADMIN, [Contact(ACCOUNT, f"p{i}") for i in range(5)])
            # Events of a pair must be in time order, so offsets only grow per step.
            offset = 0
            for who, ch, subscribe, gap in steps:
                offset += gap
                when = T0 + timedelta(seconds=offset)
                cid = f"p{who}"
                if subscribe:
                    service.set_subscribed(
                        Actor.contact(ACCOUNT, cid), cid, ch, True, occurred_at=when
                    )
                else:
                    service.unsubscribe(ADMIN, [cid], [ch], occurred_at=when)
            events = list(store.events(ACCOUNT))
            instants = sorted(T0 + timedelta(seconds=p) for p in probes)
            expected_totals = []
            for instant in instants:
                state: dict[tuple[str, Channel], SubscriptionState] = {}
                for e in events:
                    if e.occurred_at < instant:
                        state[(e.contact_id, e.channel)] = e.new_state
                expected_totals.append(
                    dict(Counter((ch, st_) for (_, ch), st_ in state.items()))
                )
            assert store.totals_at(ACCOUNT, instants) == expected_totals
            expected_counts = []
            for start, end in itertools.pairwise(instants):
                counted = Counter[tuple[Channel, Transition]]()
                for e in events:
                    transition = transition_of(e.previous_state, e.new_state)
                    if start <= e.occurred_at < end and transition is not None:
                        counted[(e.channel, transition)] += 1
                expected_counts.append(dict(counted))
            assert store.transition_counts(ACCOUNT, instants) == expected_counts
            assert store.totals_at(OTHER_ACCOUNT, instants[:1]) == [{}]
        finally:
            store.close()

    # ------------------------------------------------------------------ inbound replies

    def test_inbound_stop_is_honoured_once(self, service: ConsentService, store: Store) -> None:
        """A STOP unsubscribes the sender's group; redeliveries return the same result, no event."""
        service.opt_in(ADMIN, ["c1"], [SMS, WHATSAPP], evidence=EVIDENCE)
        message = InboundMessage(ACCOUNT, SMS, "+14155550001", " Stop. ", "SM-1", T0)
        first = service.handle_inbound(message)
        assert first.outcome is InboundOutcome.OPTED_OUT
        assert first.reply is not None
        assert {(cid, ch.key) for cid, ch in first.changed} == {
            ("c1", "sms"),
            ("c1", "mms"),
            ("c1", "rcs"),
        }
        events = list(store.events(ACCOUNT))
        for _ in range(3):
            again = service.handle_inbound(message)
            assert again == first
            assert again.replayed
        assert list(store.events(ACCOUNT)) == events
        assert service.state(ADMIN, "c1", WHATSAPP) is SUBSCRIBED
        stop = [e for e in events if e.inbound_message_id == "SM-1"]
        assert {e.actor.kind for e in stop} == {ActorKind.CONTACT}
        assert {e.source for e in stop} == {Source.INBOUND_KEYWORD}

    def test_concurrent_redeliveries_make_one_event(
        self, service: ConsentService, store: Store
    ) -> None:
        """Ten concurrent deliveries of one message id produce one set of events and one result."""
        service.opt_in(ADMIN, ["c2"], [SMS], evidence=EVIDENCE)
        message = InboundMessage(ACCOUNT, SMS, "+14155550002", "STOP", "SM-race", T0)
        results = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(10)

        def deliver() -> None:
            try:
                start.wait(10)
                result = service.handle_inbound(message)
                with lock:
                    results.append(result)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=deliver) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert len(results) == 10
        assert all(r == results[0] for r in results)
        assert sum(not r.replayed for r in results) == 1
        tagged = [e for e in store.events(ACCOUNT) if e.inbound_message_id == "SM-race"]
        assert len(tagged) == 3  # sms, mms, rcs
        check_replay(store, ACCOUNT)

    def test_stop_from_unknown_sender_blocks_a_later_import(self, service: ConsentService) -> None:
        """An opt-out from an unknown address is a suppression a later import cannot override."""
        result = service.handle_inbound(
            InboundMessage(ACCOUNT, SMS, "+14155559999", "unsubscribe", "SM-u", T0)
        )
        assert result.outcome is InboundOutcome.SUPPRESSED
        added = service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "newbie", phone="+14155559999")])
        assert {p.channel.key for p in added.suppressed} == {"sms", "mms", "rcs"}
        imported = service.opt_in(
            Actor.system(ACCOUNT, "importer"), ["newbie"], [SMS, WHATSAPP], evidence=EVIDENCE,
            source=Source.IMPORT, details=True,
        )
        assert [p.channel for p in imported.changed] == [WHATSAPP]
        assert service.state(ADMIN, "newbie", SMS) is UNSUBSCRIBED

    # ------------------------------------------------------------------ guarantees at the edges

    def _inbound(
        self, body: str, message_id: str, sender: str, at: datetime, ch: Channel = SMS
    ) -> InboundMessage:
        return InboundMessage(ACCOUNT, ch, sender, body, message_id, at)

    def test_a_providers_verdict_is_honoured_and_recorded(
        self, service: ConsentService, store: Store, clock: FakeClock
    ) -> None:
        """A provider's own classification (Twilio's OptOutType, an email provider's unsubscribe
        event, an "opted out" send failure) is the contact's word: it opts out or takes an
        opt-out back whatever the text says, with its source; the provider answers it itself."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS, EMAIL], evidence=EVIDENCE)
        stop = InboundMessage(
            ACCOUNT, SMS, "+14155550001", "cancel please", "tw-1", clock.now(),
            provider="twilio", verdict="opt_out",
        )
        result = service.handle_inbound(stop)
        assert (result.outcome, result.reply) == (InboundOutcome.OPTED_OUT, None)
        assert (result.provider, result.verdict) == ("twilio", stop.verdict)
        assert not service.can_send(ADMIN, "c1", SMS)
        last = service.history(ADMIN, "c1", SMS)[-1]
        assert (last.reason, last.source, last.actor.kind) == (
            "provider_opt_out", Source.INBOUND_KEYWORD, ActorKind.CONTACT
        )
        # A retry is the same result, stored; the same id with another verdict is no retry.
        assert service.handle_inbound(stop).replayed
        with pytest.raises(ConflictError):
            service.handle_inbound(attrs.evolve(stop, verdict="opt_in"))
        # The provider's START undoes the contact's own STOP, as START does.
        start = InboundMessage(
            ACCOUNT, SMS, "+14155550001", "", "tw-2", clock.now(),
            provider="twilio", verdict="opt_in",
        )
        assert service.handle_inbound(start).outcome is InboundOutcome.OPTED_IN
        assert service.can_send(ADMIN, "c1", SMS)
        # An email provider's spam report from c2's address, and one from an address nobody has:
        # that one is a suppression, so a later registration of the address starts unsubscribed.
        for sender, message_id in (("c2@example.com", "sg-1"), ("new@example.com", "sg-2")):
            service.handle_inbound(
                InboundMessage(
                    ACCOUNT, EMAIL, sender, "", message_id, clock.now(),
                    provider="sendgrid", verdict="opt_out", source="carrier",
                )
            )
        assert not service.can_send(ADMIN, "c2", EMAIL)
        assert service.history(ADMIN, "c2", EMAIL)[-1].source is Source.CARRIER
        assert service.can_send(ADMIN, "c2", SMS)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "n1", email="new@example.com")])
        assert service.state(ADMIN, "n1", EMAIL) is UNSUBSCRIBED
        check_replay(store, ACCOUNT)

    def test_a_complaint_is_an_opt_out_no_provider_opt_in_undoes(
        self, service: ConsentService, store: Store, clock: FakeClock
    ) -> None:
        """A spam complaint reported by the provider unsubscribes as the system's opt-out: the
        provider's later opt-in from the same address (a preference page) does not undo it."""
        service.opt_in(ADMIN, ["c3"], [EMAIL], evidence=EVIDENCE)
        complaint = InboundMessage(
            ACCOUNT, EMAIL, "c3@example.com", "", "sg-c1", clock.now(),
            provider="sendgrid", verdict="complaint", source="carrier",
        )
        assert service.handle_inbound(complaint).outcome is InboundOutcome.OPTED_OUT
        sub = service.subscription(ADMIN, "c3", EMAIL)
        assert sub is not None
        assert (sub.state, sub.opted_out_by) == (
            UNSUBSCRIBED, frozenset({OptOutOrigin.COMPLAINT})
        )
        assert service.history(ADMIN, "c3", EMAIL)[-1].reason == "provider_complaint"
        resume = InboundMessage(
            ACCOUNT, EMAIL, "c3@example.com", "", "sg-c2", clock.now(),
            provider="sendgrid", verdict="opt_in", source="unsubscribe_link",
        )
        assert service.handle_inbound(resume).outcome is InboundOutcome.NOTHING_TO_UNDO
        assert not service.can_send(ADMIN, "c3", EMAIL)
        check_replay(store, ACCOUNT)

    def test_late_start_never_beats_a_later_stop(
        self, service: ConsentService, store: Store, clock: FakeClock
    ) -> None:
        """A START received before a later STOP (that found the pair already unsubscribed) or a
        later admin unsubscribe, but delivered after them, resubscribes nothing."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
        phone1, phone2 = "+14155550001", "+14155550002"
        stop_at = clock.now()
        service.handle_inbound(self._inbound("STOP", "s1", phone1, stop_at))
        service.handle_inbound(self._inbound("STOP", "s2", phone2, stop_at))
        start_at = clock.now()
        clock.advance(timedelta(minutes=1))
        # c1: a second STOP after the START was sent (a no-op: already unsubscribed).
        service.handle_inbound(self._inbound("STOP", "s3", phone1, clock.now()))
        # c2: an admin unsubscribes after the START was sent (a no-op too).
        assert service.unsubscribe(ADMIN, ["c2"], [SMS]).unchanged_count == 1
        clock.advance(timedelta(minutes=5))
        for cid, phone in (("c1", phone1), ("c2", phone2)):
            late = service.handle_inbound(self._inbound("START", f"late-{cid}", phone, start_at))
            assert late.outcome is InboundOutcome.NOTHING_TO_UNDO
            assert (late.changed, late.reply) == ((), None)
            assert service.state(ADMIN, cid, SMS) is UNSUBSCRIBED
            assert not service.can_send(ADMIN, cid, SMS)
        # A START sent after everything does undo c1's own STOP, but not c2's admin unsubscribe.
        now = clock.now()
        assert service.handle_inbound(self._inbound("START", "on-time-1", phone1, now)).changed
        assert service.can_send(ADMIN, "c1", SMS)
        assert not service.handle_inbound(self._inbound("START", "on-time-2", phone2, now)).changed
        assert not service.can_send(ADMIN, "c2", SMS)
        check_replay(store, ACCOUNT)

    def test_late_stop_is_honoured_unless_the_contact_answered_it(
        self, service: ConsentService, clock: FakeClock
    ) -> None:
        """A STOP delivered late is applied after the pair's last change, except where the
        contact's own later START already answered it."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
        sent = clock.now()
        clock.advance(timedelta(minutes=1))
        # c1's pair changes after the STOP was sent, by an admin: the STOP still applies.
        service.unsubscribe(ADMIN, ["c1"], [SMS])
        service.resubscribe(
            ADMIN, ["c1"], [SMS],
            justification=Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "wrong row"),
        )
        late = service.handle_inbound(self._inbound("STOP", "late-1", "+14155550001", sent))
        assert late.changed
        assert not service.can_send(ADMIN, "c1", SMS)
        # c2 said STOP, then START (both on time), then an older STOP arrives: START stands.
        phone = "+14155550002"
        early = clock.now()
        clock.advance(timedelta(minutes=1))
        service.handle_inbound(self._inbound("STOP", "c2-stop", phone, clock.now()))
        clock.advance(timedelta(minutes=1))
        service.handle_inbound(self._inbound("START", "c2-start", phone, clock.now()))
        assert service.can_send(ADMIN, "c2", SMS)
        older = service.handle_inbound(self._inbound("STOP", "c2-older", phone, early))
        assert older.changed == ()
        assert service.can_send(ADMIN, "c2", SMS)

    def test_an_address_that_said_stop_applies_when_it_joins_a_contact(
        self, service: ConsentService, store: Store
    ) -> None:
        """Moving an existing, subscribed contact to a number that texted STOP unsubscribes it on
        the suppressed channels, also when a member makes the edit; other channels stay."""
        stopped = "+14155559990"
        service.handle_inbound(self._inbound("STOP", "s-unknown", stopped, T0))
        service.opt_in(ADMIN, ["c3", "c4"], [SMS, WHATSAPP, EMAIL], evidence=EVIDENCE)
        member = Actor.member(ACCOUNT, "bob")
        moved = service.upsert_contacts(
            member, [Contact(ACCOUNT, "c3", phone=stopped, email="c3@example.com")]
        )
        assert {(p.contact_id, p.channel.key) for p in moved.suppressed} == {
            ("c3", "sms"), ("c3", "mms"), ("c3", "rcs")
        }
        assert not service.can_send(ADMIN, "c3", SMS)
        assert service.state(ADMIN, "c3", MMS) is UNSUBSCRIBED
        assert service.can_send(ADMIN, "c3", WHATSAPP)  # not in the STOP's channel group
        assert service.can_send(ADMIN, "c3", EMAIL)
        sub = service.subscription(ADMIN, "c3", SMS)
        assert sub is not None
        assert (sub.opted_out_by, sub.opted_out_via) == (
            frozenset({OptOutOrigin.SUPPRESSION}), f"phone:{stopped}"
        )
        # An admin-unsubscribed contact moved there keeps the admin's opt-out and gains the STOP.
        service.unsubscribe(ADMIN, ["c4"], [SMS])
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "c4", phone=stopped)])
        sub = service.subscription(ADMIN, "c4", SMS)
        assert sub is not None
        assert sub.opted_out_by == {OptOutOrigin.ADMIN, OptOutOrigin.SUPPRESSION}
        # Re-saving a contact with the address it already has applies nothing again.
        service.resubscribe(
            ADMIN, ["c3"], [SMS],
            justification=Justification(ResubscribeReason.CONTACT_REQUEST, "called us"),
        )
        again = service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "c3", phone=stopped)])
        assert again.suppressed == ()
        assert service.can_send(ADMIN, "c3", SMS)
        check_replay(store, ACCOUNT)

    def test_one_import_applies_a_suppression_to_every_contact_taking_the_address(
        self, service: ConsentService, store: Store
    ) -> None:
        """Several contacts of one call that take the same suppressed address (new or existing
        ones, beside contacts at other addresses) are each unsubscribed on its channels."""
        stopped, other = "+14155559992", "+14155559993"
        service.handle_inbound(self._inbound("STOP", "s-shared", stopped, T0))
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        result = service.upsert_contacts(
            ADMIN,
            [
                Contact(ACCOUNT, "n1", phone=stopped),
                Contact(ACCOUNT, "n2", phone=other),
                Contact(ACCOUNT, "n3", phone=stopped, email="n3@example.com"),
                Contact(ACCOUNT, "c1", phone=stopped),
            ],
        )
        by_contact = {(p.contact_id, p.channel) for p in result.suppressed}
        assert {cid for cid, _ in by_contact} == {"n1", "n3", "c1"}
        assert ("c1", SMS) in by_contact
        assert ("n3", SMS) in by_contact
        for cid in ("n1", "n3", "c1"):
            assert service.state(ADMIN, cid, SMS) is UNSUBSCRIBED
        assert service.state(ADMIN, "n2", SMS) is SubscriptionState.NEVER_SUBSCRIBED
        check_replay(store, ACCOUNT)

    def test_a_suppressed_stop_is_no_mistake(self, service: ConsentService) -> None:
        """A STOP applied through the suppression list is the contact's own opt-out: an admin's
        MISTAKEN_UNSUBSCRIBE is refused, only CONTACT_REQUEST resubscribes."""
        stopped = "+14155559991"
        service.handle_inbound(self._inbound("STOP", "s-sup", stopped, T0))
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "newbie", phone=stopped)])
        mistake = Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "looks like a mistake")
        with pytest.raises(JustificationError, match="CONTACT_REQUEST"):
            service.resubscribe(ADMIN, ["newbie"], [SMS], justification=mistake)
        asked = Justification(ResubscribeReason.CONTACT_REQUEST, "texted us from the shop")
        assert service.resubscribe(ADMIN, ["newbie"], [SMS], justification=asked).changed_count

    def test_start_undoes_only_the_senders_own_stop(
        self, service: ConsentService, store: Store, clock: FakeClock
    ) -> None:
        """A START from a shared number undoes the STOP of each contact whose own opt-out came
        from it, never an admin's unsubscribe of another contact at that number, and never through
        a number that joined the contact after its opt-out."""
        shared = "+14155550005"
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "c6", phone=shared)])  # c5 and c6 share
        service.opt_in(ADMIN, ["c5", "c6", "c7"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c6"], [SMS], reason="complaint")
        service.handle_inbound(self._inbound("STOP", "s5", shared, clock.now()))
        clock.advance(timedelta(minutes=1))
        start = service.handle_inbound(self._inbound("START", "y5", shared, clock.now()))
        assert start.changed == (("c5", SMS),)
        assert service.can_send(ADMIN, "c5", SMS)
        assert not service.can_send(ADMIN, "c6", SMS)
        sub = service.subscription(ADMIN, "c6", SMS)
        assert sub is not None
        assert sub.opted_out_by == {OptOutOrigin.ADMIN, OptOutOrigin.CONTACT}
        # The chained attack: c7 texts STOP, a member points c7 at their own number, texts START
        # from it, and restores the number.
        c7_phone, mallory = "+14155550007", "+14155550666"
        service.handle_inbound(self._inbound("STOP", "s7", c7_phone, clock.now()))
        member = Actor.member(ACCOUNT, "mallory")
        service.upsert_contacts(member, [Contact(ACCOUNT, "c7", phone=mallory)])
        clock.advance(timedelta(minutes=1))
        attack = service.handle_inbound(self._inbound("START", "y7", mallory, clock.now()))
        assert attack.outcome is InboundOutcome.NOTHING_TO_UNDO
        service.upsert_contacts(member, [Contact(ACCOUNT, "c7", phone=c7_phone)])
        assert not service.can_send(ADMIN, "c7", SMS)
        check_replay(store, ACCOUNT)

    def test_start_and_yes_create_no_consent(
        self, service: ConsentService, clock: FakeClock
    ) -> None:
        """START from a never-subscribed contact subscribes and confirms nothing, and a
        conversational "yes" is no keyword at all: it neither creates consent nor undoes a STOP."""
        for n, body in enumerate(("START", "unstop")):
            result = service.handle_inbound(
                self._inbound(body, f"y-{n}", "+14155550008", T0 + timedelta(seconds=n))
            )
            assert (result.outcome, result.changed, result.reply) == (
                InboundOutcome.NOTHING_TO_UNDO, (), None
            )
        assert service.state(ADMIN, "c8", SMS) is NEVER
        service.opt_in(ADMIN, ["c9"], [SMS], evidence=EVIDENCE)
        service.handle_inbound(self._inbound("STOP", "s-9", "+14155550009", clock.now()))
        clock.advance(timedelta(minutes=1))
        yes = service.handle_inbound(self._inbound("Yes", "y-9", "+14155550009", clock.now()))
        assert (yes.outcome, yes.changed, yes.reply) == (InboundOutcome.NONE, (), None)
        assert not service.can_send(ADMIN, "c9", SMS)

    def test_a_keyword_programme_opts_in_with_its_wording_as_evidence(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Where the account runs a keyword opt-in programme, its keyword subscribes the
        never-subscribed pair of the channel it came on, with Evidence(method="keyword") carrying
        the wording, its version and the message id; other channels and opt-outs stay."""
        programme = KeywordProgramme(
            keywords={"JOIN"}, wording="Text JOIN for weekly offers. Reply STOP to cancel.",
            wording_version="cta-3",
        )
        settings = AccountSettings(inbound=InboundSettings(programme=programme))
        service = ConsentService(store, clock=clock, settings=settings)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "ann", phone="+14155550100")])
        joined = service.handle_inbound(self._inbound("join", "j-1", "+14155550100", T0))
        assert (joined.outcome, joined.changed) == (InboundOutcome.OPTED_IN, (("ann", SMS),))
        assert joined.reply is not None
        assert service.state(ADMIN, "ann", MMS) is NEVER
        event = service.history(ADMIN, "ann", SMS)[-1]
        assert event.evidence == Evidence(
            method="keyword", wording=programme.wording, wording_version="cta-3",
            location="sms:+14155550100", captured_at=T0, reference="j-1",
        )
        assert event.actor == Actor.contact(ACCOUNT, "ann")
        with pytest.raises(ValidationError):
            InboundSettings(programme=KeywordProgramme(keywords={"STOP"}, wording="x",
                                                       wording_version="1"))

    def test_whatsapp_stop_promotions_button_opts_out(self, service: ConsentService) -> None:
        """WhatsApp's "Stop promotions" button reply opts the sender out of WhatsApp."""
        service.opt_in(ADMIN, ["c1"], [WHATSAPP, SMS], evidence=EVIDENCE)
        result = service.handle_inbound(
            self._inbound("Stop promotions", "wa-1", "+14155550001", T0, WHATSAPP)
        )
        assert result.outcome is InboundOutcome.OPTED_OUT
        assert not service.can_send(ADMIN, "c1", WHATSAPP)
        assert service.can_send(ADMIN, "c1", SMS)

    def test_a_contact_reads_only_their_own_records(self, service: ConsentService) -> None:
        """A contact actor cannot read the account by leaving the contact id out."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
        ann = Actor.contact(ACCOUNT, "c1")
        assert [e.contact_id for e in service.history(ann, "c1")] == ["c1"]
        calls = (
            lambda: service.history(ann, None),  # type: ignore[arg-type]
            lambda: service.subscriptions(ann, None),  # type: ignore[arg-type]
            lambda: service.can_send(ann, None, SMS),  # type: ignore[arg-type]
            lambda: service.state(ann, None, SMS),  # type: ignore[arg-type]
            lambda: service.subscription(ann, None, SMS),  # type: ignore[arg-type]
            lambda: service.history(ann, "c2"),
        )
        for call in calls:
            with pytest.raises((NotAuthorizedError, ValidationError)):
                call()

    def test_members_are_refused_also_for_no_ops(self, service: ConsentService) -> None:
        """A member's change is refused whatever the pair's state, never reported as success; a
        role string where the actor kind belongs is a member too."""
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c2"], [SMS])
        from_jwt = Actor("member", "eve", ACCOUNT)
        for member in (Actor.member(ACCOUNT, "bob"), from_jwt):
            with pytest.raises(NotAuthorizedError, match="Ask an admin"):
                service.opt_in(member, ["c1"], [SMS], evidence=EVIDENCE)
            with pytest.raises(NotAuthorizedError, match="Ask an admin"):
                service.unsubscribe(member, ["c2"], [SMS])
            with pytest.raises(NotAuthorizedError, match="Ask an admin"):
                service.set_subscribed(member, "c1", SMS, True)
            with pytest.raises(NotAuthorizedError):
                service.unsubscribe(member, ["c1"], [SMS])
        assert service.can_send(ADMIN, "c1", SMS)

    def test_a_look_alike_justification_is_refused(self, service: ConsentService) -> None:
        """Only a real Justification resubscribes; a look-alike object or a string is a
        ValidationError and changes nothing."""

        class LookAlike:
            reason = ResubscribeReason.MISTAKEN_UNSUBSCRIBE
            note = ""

        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ["c1"], [SMS])
        for fake in (LookAlike(), "mistake"):
            with pytest.raises(ValidationError, match="justification"):
                service.set_subscribed(
                    ADMIN, "c1", SMS, True, justification=fake  # type: ignore[arg-type]
                )
            with pytest.raises(ValidationError, match="justification"):
                service.resubscribe(
                    ADMIN, ["c1"], [SMS], justification=fake  # type: ignore[arg-type]
                )
        assert not service.can_send(ADMIN, "c1", SMS)

    def test_a_channel_built_by_hand_is_the_builtin(self, service: ConsentService) -> None:
        """A STOP delivered with Channel("sms") reaches the contact with that phone, like SMS."""
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        result = service.handle_inbound(
            self._inbound("STOP", "hand", "+14155550001", T0, Channel("sms"))
        )
        assert result.outcome is InboundOutcome.OPTED_OUT
        assert not service.can_send(ADMIN, "c1", SMS)

    def test_a_call_nested_in_another_is_refused_and_nothing_is_lost(
        self, service: ConsentService, store: Store
    ) -> None:
        """A consentkit call made from the id iterable another call is consuming raises
        StorageError; the outer call then fails whole, and no change is half-recorded."""
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)

        def ids() -> Iterator[str]:
            yield "c1"
            service.opt_in(ADMIN, ["c2"], [SMS], evidence=EVIDENCE)
            yield "c2"

        with pytest.raises(StorageError):
            service.unsubscribe(ADMIN, ids(), [SMS], details=False)
        assert service.can_send(ADMIN, "c1", SMS)
        assert service.state(ADMIN, "c2", SMS) is NEVER
        check_replay(store, ACCOUNT)

    def test_a_start_and_a_stop_at_the_same_instant_leave_the_stop(
        self, service: ConsentService, store: Store
    ) -> None:
        """A START and a STOP received at the same instant, START delivered first: the address's
        last word is the STOP (ties go to the opt-out), so a later import of it is not sendable."""
        phone = "+14155559992"
        service.handle_inbound(self._inbound("START", "tie-1", phone, T0))
        service.handle_inbound(self._inbound("STOP", "tie-2", phone, T0))
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "late", phone=phone)])
        service.opt_in(ADMIN, ["late"], [SMS], evidence=EVIDENCE, source=Source.IMPORT)
        assert not service.can_send(ADMIN, "late", SMS)
        with store.transaction(ACCOUNT) as tx:
            tx.put_suppressions(
                [Suppression(ACCOUNT, f"phone:{phone}", MMS, T0, Source.INBOUND_KEYWORD)]
            )
            tx.put_suppressions(
                [Suppression(ACCOUNT, f"phone:{phone}", MMS, T0, Source.INBOUND_KEYWORD,
                             active=False)]
            )
            kept = [s for s in tx.get_suppressions([f"phone:{phone}"]) if s.channel == MMS]
        assert [s.active for s in kept] == [True]

    def test_a_start_stamped_ahead_of_the_clock_does_not_swallow_a_later_stop(
        self, service: ConsentService, clock: FakeClock
    ) -> None:
        """A START whose provider stamped it minutes ahead (within the tolerance) counts as
        received now, so a STOP sent a minute later still unsubscribes, with its confirmation."""
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        phone = "+14155550001"
        service.handle_inbound(self._inbound("STOP", "f-1", phone, clock.now()))
        clock.advance(timedelta(minutes=1))
        start = service.handle_inbound(
            self._inbound("START", "f-2", phone, clock.now() + timedelta(minutes=4))
        )
        assert start.received_at <= clock.now()
        clock.advance(timedelta(minutes=1))
        stop = service.handle_inbound(self._inbound("STOP", "f-3", phone, clock.now()))
        assert stop.changed
        assert not service.can_send(ADMIN, "c1", SMS)

    def test_a_superseded_stop_says_so_and_sends_no_confirmation(
        self, service: ConsentService, clock: FakeClock
    ) -> None:
        """A late STOP that the contact's own later START already answered changes nothing and
        says so (SUPERSEDED, no reply), never "you have been unsubscribed"."""
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        phone = "+14155550001"
        first = clock.now()
        service.handle_inbound(self._inbound("STOP", "s-1", phone, first))
        clock.advance(timedelta(minutes=2))
        service.handle_inbound(self._inbound("START", "s-2", phone, clock.now()))
        late = service.handle_inbound(
            self._inbound("STOP", "s-3", phone, first + timedelta(minutes=1))
        )
        assert (late.outcome, late.changed, late.reply) == (InboundOutcome.SUPERSEDED, (), None)
        assert service.can_send(ADMIN, "c1", SMS)

    def test_a_custom_phone_channel_given_by_key_reaches_the_contact(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A STOP on a registered phone-addressed custom channel, named by its key, reaches the
        contact with that phone (the key means the registered channel, whatever object built it)."""
        signal = Channel("signal", AddressKind.PHONE)
        service = ConsentService(store, clock=clock, channels=[signal])
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "ann", phone="+14155550100")])
        service.opt_in(ADMIN, ["ann"], ["signal"], evidence=EVIDENCE)
        result = service.handle_inbound(
            InboundMessage(ACCOUNT, "signal", "+1 415 555 0100", "STOP", "sig-1", T0)
        )
        assert (result.outcome, result.contact_ids) == (InboundOutcome.OPTED_OUT, ("ann",))
        assert result.sender == "+14155550100"
        assert not service.can_send(ADMIN, "ann", signal)

    def test_audience_and_audit_log_check_their_arguments(self, service: ConsentService) -> None:
        """Wrong types for the audience's ids or the audit log's position raise ValidationError
        naming the field, on every store, before anything is read."""
        service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        for ids in (None, 3, 2.5, [None], ("c1", None), [SMS], b"c1"):
            with pytest.raises(ValidationError, match="contact_ids"):
                service.audience(ADMIN, SMS, ids)  # type: ignore[arg-type]
        assert service.audience(ADMIN, SMS, "c1") == {"c1"}
        for after in ("x", -1, 2**70, 1.5, True):
            with pytest.raises(ValidationError, match="after"):
                service.audit_log(ADMIN, after=after)  # type: ignore[arg-type]

    def test_address_departures_are_remembered_by_time(self, store: Store) -> None:
        """Departures of addresses from contacts are kept per address with their time, listed
        from a given instant on, rolled back with their transaction, and stay in their account."""
        key = "phone:+14155550100"
        with store.transaction(ACCOUNT) as tx:
            tx.record_address_departures([(key, "b"), (key, "a")], T0)
            tx.record_address_departures(
                [(key, "c"), ("email:x@example.com", "a")], T0 + timedelta(1)
            )

        def depart_then_fail() -> None:
            with store.transaction(ACCOUNT) as tx:
                tx.record_address_departures([(key, "d")], T0 + timedelta(2))
                raise _RolledBack

        with pytest.raises(_RolledBack):
            depart_then_fail()
        with store.transaction(ACCOUNT) as tx:
            assert tx.contacts_that_left(key, T0 - timedelta(1)) == ["a", "b", "c"]
            # An address that left at the very instant a message was received was already gone.
            assert tx.contacts_that_left(key, T0) == ["c"]
            assert tx.contacts_that_left(key, T0 + timedelta(hours=1)) == ["c"]
            assert tx.contacts_that_left(key, T0 + timedelta(3)) == []
            assert tx.contacts_that_left("phone:+10000000000", T0) == []
        with store.transaction(OTHER_ACCOUNT) as tx:
            assert tx.contacts_that_left(key, T0) == []

    def test_owners_of_an_address_are_its_present_and_former_contacts(
        self, service: ConsentService, store: Store
    ) -> None:
        """A store's one-read owners_of_address (where it has one) is the union of the contacts
        with the address now and those that lost it after the instant."""
        key = "phone:+14155550100"
        service.upsert_contacts(
            ADMIN,
            [Contact(ACCOUNT, "now", phone="+14155550100")],
        )
        with store.transaction(ACCOUNT) as tx:
            tx.record_address_departures([(key, "gone"), (key, "now")], T0)
            tx.record_address_departures([(key, "early")], T0 - timedelta(1))
        with store.transaction(ACCOUNT) as tx:
            for since in (T0 - timedelta(2), T0 - timedelta(hours=1), T0, T0 + timedelta(1)):
                expected = sorted(
                    set(tx.find_contacts_by_address([key]).get(key, []))
                    | set(tx.contacts_that_left(key, since))
                )
                if isinstance(tx, AddressOwners):
                    assert tx.owners_of_address(key, since) == expected
                    assert tx.owners_of_address("phone:+10000000000", since) == []
            assert expected == ["now"]
        with store.transaction(OTHER_ACCOUNT) as tx:
            if isinstance(tx, AddressOwners):
                assert tx.owners_of_address(key, T0 - timedelta(2)) == []

    def test_a_late_stop_reaches_the_contact_that_had_the_address(
        self, service: ConsentService, clock: FakeClock
    ) -> None:
        """A STOP sent before a contact's number was edited (by a member, even) but delivered
        after the edit still unsubscribes that contact; a message sent after the edit does not
        reach it."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
        old_phone = "+14155550001"
        sent = clock.now()
        clock.advance(timedelta(minutes=1))
        member = Actor.member(ACCOUNT, "bob")
        service.upsert_contacts(member, [Contact(ACCOUNT, "c1", phone="+14155550199")])
        late = service.handle_inbound(self._inbound("STOP", "late-edit", old_phone, sent))
        assert late.contact_ids == ("c1",)
        assert not service.can_send(ADMIN, "c1", SMS)
        # c2 leaves its number; a STOP sent from it afterwards belongs to whoever has it now.
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "c2", phone="+14155550299")])
        clock.advance(timedelta(minutes=1))
        after = service.handle_inbound(
            self._inbound("STOP", "after-edit", "+14155550002", clock.now())
        )
        assert after.outcome is InboundOutcome.SUPPRESSED
        assert service.can_send(ADMIN, "c2", SMS)

    def test_a_reviewed_opt_out_acts_like_a_late_stop(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Deciding a possible opt-out as an opt-out reaches the contacts that have the address by
        then too, records the address's suppression under its real key (a custom phone channel
        included), and a later START from it undoes it."""
        signal = Channel("signal", AddressKind.PHONE)
        service = ConsentService(store, clock=clock, channels=[signal])
        phone = "+14155550100"
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "ann", phone=phone)])
        service.opt_in(ADMIN, ["ann"], [signal], evidence=EVIDENCE)
        queued = service.handle_inbound(
            InboundMessage(ACCOUNT, signal, phone, "please stop texting me", "p-1", clock.now())
        )
        assert queued.review_item is not None
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "bob", phone=phone)])
        service.opt_in(ADMIN, ["bob"], [signal], evidence=EVIDENCE)
        decided = service.decide_review(ADMIN, queued.review_item, "opt_out", note="clear")
        assert {p.contact_id for p in decided.changed} == {"ann", "bob"}
        sub = service.subscription(ADMIN, "ann", signal)
        assert sub is not None
        assert sub.opted_out_via == f"phone:{phone}"
        later = service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "cy", phone=phone)])
        assert [(p.contact_id, p.channel.key) for p in later.suppressed] == [("cy", "signal")]

    def test_every_possible_opt_out_can_be_queued(self, service: ConsentService) -> None:
        """A possible opt-out with a NUL or a lone surrogate in it is queued on every store (shown
        with U+FFFD), never refused by the store."""
        for n, body in enumerate(("please stop\x00 it", "please stop \udcff it")):
            result = service.handle_inbound(
                self._inbound(body, f"odd-{n}", "+14155550001", T0)
            )
            assert result.outcome is InboundOutcome.NEEDS_REVIEW
        texts = [item.text for item in service.review_items(ADMIN).items]
        assert texts == ["please stop\ufffd it", "please stop \ufffd it"]

    def test_a_late_programme_keyword_creates_no_consent(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A programme keyword delivered late (it may come from the number's previous holder)
        subscribes nothing; one delivered promptly does; a programme keyword that contains an
        opt-out word is refused."""
        programme = KeywordProgramme(keywords={"JOIN"}, wording="Text JOIN", wording_version="1")
        settings = AccountSettings(inbound=InboundSettings(programme=programme))
        service = ConsentService(store, clock=clock, settings=settings)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "ann", phone="+14155550100")])
        clock.advance(timedelta(hours=1))
        late = service.handle_inbound(
            self._inbound("JOIN", "j-late", "+14155550100", clock.now() - timedelta(minutes=30))
        )
        assert (late.outcome, late.changed) == (InboundOutcome.NOTHING_TO_UNDO, ())
        prompt = service.handle_inbound(self._inbound("JOIN", "j-now", "+14155550100", clock.now()))
        assert prompt.outcome is InboundOutcome.OPTED_IN
        for words in ({"please stop"}, {"stop now"}, {"Stop promotions!"}):
            with pytest.raises(ValidationError, match=r"programme\.keywords"):
                InboundSettings(
                    programme=KeywordProgramme(keywords=words, wording="x", wording_version="1")
                )

    def test_channel_groups_name_the_services_own_channels(self, store: Store) -> None:
        """A channel group given by key for a registered custom phone channel means that channel,
        so one STOP covers it and reaches contacts by phone."""
        signal = Channel("signal", AddressKind.PHONE)
        service = ConsentService(
            store, channels=[signal], channel_groups=ChannelGroups([("sms", "signal")])
        )
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "ann", phone="+14155550100")])
        service.opt_in(ADMIN, ["ann"], [SMS, signal], evidence=EVIDENCE)
        result = service.handle_inbound(self._inbound("STOP", "g-1", "+14155550100", T0))
        assert {ch.key for _, ch in result.changed} == {"sms", "signal"}

    # ------------------------------------------------------------------ review queue, idempotency

    def test_possible_opt_outs_are_queued_and_decided(
        self, service: ConsentService, clock: FakeClock
    ) -> None:
        """A possible opt-out is queued with its text, sender, contacts and deadline; only an
        admin decides it, once; "opt-out" applies it as the contact's own request dated when it was
        received, "not an opt-out" changes nothing; both record who, when and why."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
        received = clock.now()
        first = service.handle_inbound(
            self._inbound("please stop texting me", "p1", "+14155550001", received)
        )
        second = service.handle_inbound(
            self._inbound("can you stop by at 5?", "p2", "+14155550002", clock.now())
        )
        assert (first.outcome, first.review_item) == (InboundOutcome.NEEDS_REVIEW, "sms:p1")
        assert (second.outcome, second.review_item) == (InboundOutcome.NEEDS_REVIEW, "sms:p2")
        assert service.can_send(ADMIN, "c1", SMS)
        member = Actor.member(ACCOUNT, "bob")
        queue = service.review_items(member, limit=1)
        assert [item.id for item in queue.items] == ["sms:p1"]
        item = queue.items[0]
        assert (item.text, item.sender, item.contact_ids) == (
            "please stop texting me", "+14155550001", ("c1",)
        )
        assert (item.received_at, item.honor_by, item.is_open) == (
            received, first.honor_by, True
        )
        assert not item.is_overdue(received)
        assert item.is_overdue(item.honor_by + timedelta(seconds=1))
        rest = service.review_items(member, cursor=queue.next_cursor)
        assert [i.id for i in rest.items] == ["sms:p2"]
        assert rest.next_cursor is None
        with pytest.raises(NotAuthorizedError, match="Ask an admin"):
            service.decide_review(member, "sms:p1", ReviewDecision.OPT_OUT, note="looks like one")
        with pytest.raises(NotAuthorizedError):
            service.review_items(Actor.contact(ACCOUNT, "c1"))
        clock.advance(timedelta(hours=1))
        decided = service.decide_review(ADMIN, "sms:p1", "opt_out", note="clear revocation")
        assert {(p.contact_id, p.channel.key) for p in decided.changed} == {
            ("c1", "sms"), ("c1", "mms"), ("c1", "rcs")
        }
        assert (decided.item.decision, decided.item.decided_by) == (
            ReviewDecision.OPT_OUT, "admin:alice"
        )
        assert not service.can_send(ADMIN, "c1", SMS)
        event = service.history(ADMIN, "c1", SMS)[-1]
        assert (event.actor, event.occurred_at, event.inbound_message_id) == (
            Actor.contact(ACCOUNT, "c1"), received, "p1"
        )
        with pytest.raises(ConflictError, match="decided already"):
            service.decide_review(ADMIN, "sms:p1", ReviewDecision.NOT_OPT_OUT, note="oops")
        with pytest.raises(ValidationError, match="item_id"):
            service.decide_review(ADMIN, "sms:nope", ReviewDecision.NOT_OPT_OUT, note="x")
        kept = service.decide_review(
            ADMIN, "sms:p2", ReviewDecision.NOT_OPT_OUT, note="asks to stop by the shop"
        )
        assert kept.changed == ()
        assert service.can_send(ADMIN, "c2", SMS)
        assert service.review_items(ADMIN).items == ()
        everything = service.review_items(ADMIN, include_decided=True).items
        assert [(i.id, i.decision, i.note) for i in everything] == [
            ("sms:p1", ReviewDecision.OPT_OUT, "clear revocation"),
            ("sms:p2", ReviewDecision.NOT_OPT_OUT, "asks to stop by the shop"),
        ]

    def test_a_message_id_is_unique_per_channel_not_per_account(
        self, service: ConsentService
    ) -> None:
        """A WhatsApp STOP whose provider id equals an earlier SMS message's id is a message of its
        own and is honoured, not dropped as a redelivery."""
        service.opt_in(ADMIN, ["c1"], [SMS, WHATSAPP], evidence=EVIDENCE)
        service.handle_inbound(self._inbound("thanks", "id-1", "+14155550001", T0))
        stop = service.handle_inbound(
            self._inbound("STOP", "id-1", "+14155550001", T0, WHATSAPP)
        )
        assert (stop.outcome, stop.replayed) == (InboundOutcome.OPTED_OUT, False)
        assert not service.can_send(ADMIN, "c1", WHATSAPP)

    def test_a_reused_message_id_with_other_content_is_a_conflict(
        self, service: ConsentService, store: Store
    ) -> None:
        """A delivery under a handled (channel, message id) whose sender or text differs from the
        first delivery raises ConflictError and changes nothing; a true redelivery replays."""
        service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
        first = service.handle_inbound(self._inbound("hello", "id-9", "+14155550001", T0))
        events = list(store.events(ACCOUNT))
        for body, sender in (("STOP", "+14155550001"), ("hello", "+14155550002")):
            with pytest.raises(ConflictError, match="not a redelivery"):
                service.handle_inbound(self._inbound(body, "id-9", sender, T0))
        assert list(store.events(ACCOUNT)) == events
        assert service.can_send(ADMIN, "c1", SMS)
        assert service.can_send(ADMIN, "c2", SMS)
        again = service.handle_inbound(self._inbound("hello", "id-9", "+14155550001", T0))
        assert again == first
        assert again.replayed

    def test_unknown_channels_are_refused_everywhere(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A channel key that is neither built in nor registered (a typo, "fax", "all") is a
        ValidationError naming the known ones, with a "did you mean" for a near miss, in every
        call; keys match in any case; a registered custom channel works; nothing is written."""
        service = ConsentService(store, clock=clock, channels=["telegram"])
        service.upsert_contacts(
            ADMIN, [Contact(ACCOUNT, "ann", phone="+14155550100", handles={"telegram": "tg-1"})]
        )
        calls: list[Callable[[str], object]] = [
            lambda ch: service.unsubscribe(ADMIN, ["ann"], ch),
            lambda ch: service.opt_in(ADMIN, ["ann"], [ch], evidence=EVIDENCE),
            lambda ch: service.set_subscribed(ADMIN, "ann", ch, False),
            lambda ch: service.can_send(ADMIN, "ann", ch),
            lambda ch: service.state(ADMIN, "ann", ch),
            lambda ch: service.list_subscriptions(ADMIN, ch),
            lambda ch: service.history(ADMIN, "ann", ch),
            lambda ch: service.audience(ADMIN, ch, ["ann"]),
            lambda ch: service.handle_inbound(
                InboundMessage(ACCOUNT, ch, "tg-1", "STOP", f"m-{ch}", T0)
            ),
        ]
        for call in calls:
            with pytest.raises(ValidationError, match="did you mean 'sms'"):
                call("smss")
            for key in ("fax", "all"):
                with pytest.raises(ValidationError, match=r"not a known channel.*Known channels"):
                    call(key)
        assert list(store.events(ACCOUNT)) == []
        assert service.unsubscribe(ADMIN, ["ann"], ["SMS", "Telegram"]).changed_count == 2
        with pytest.raises(ValidationError, match="handles"):
            service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "bo", handles={"signal": "s-1"})])
        with pytest.raises(ValidationError, match="channel_groups"):
            ConsentService(store, channel_groups=ChannelGroups([("sms", "fax")]))

    def test_contact_updates_change_only_the_addresses_given(
        self, service: ConsentService
    ) -> None:
        """By default an update leaves the addresses it does not give alone (a CSV without an
        email column keeps the emails); replacing addresses is explicit and reports the subscribed
        pairs that lost their address."""
        service.opt_in(ADMIN, ["c1"], [SMS, EMAIL], evidence=EVIDENCE)
        kept = service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "c1", phone="+14155550111")])
        assert kept.unreachable == ()
        contact = service.get_contact(ADMIN, "c1")
        assert (contact.phone, contact.email) == ("+14155550111", "c1@example.com")
        # A STOP from the kept email still finds the contact.
        stop = service.handle_inbound(
            InboundMessage(ACCOUNT, EMAIL, "c1@example.com", "unsubscribe", "e-1", T0)
        )
        assert stop.contact_ids == ("c1",)
        service.opt_in(ADMIN, ["c2"], [SMS, EMAIL], evidence=EVIDENCE)
        replaced = service.upsert_contacts(
            ADMIN, [Contact(ACCOUNT, "c2", phone="+14155550002")], replace_addresses=True
        )
        assert [(p.contact_id, p.channel) for p in replaced.unreachable] == [("c2", EMAIL)]
        assert service.get_contact(ADMIN, "c2").email is None
        assert service.state(ADMIN, "c2", EMAIL) is SUBSCRIBED  # consent is not an address
        with pytest.raises(ValidationError, match="replace_addresses"):
            service.upsert_contacts(ADMIN, [], replace_addresses="yes")  # type: ignore[arg-type]

    # ------------------------------------------------------------------ trends

    def test_trends_as_of_an_instant_include_changes_at_it(
        self, service: ConsentService, store: Store
    ) -> None:
        """A trend report as of the instant of a change counts it, in the totals and in the
        series' current point, as state() does; a microsecond earlier it does not."""
        result = service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
        event = next(e for e in store.events(ACCOUNT) if e.batch_id == result.batch_id)
        report = service.trends(ADMIN, as_of=event.occurred_at)
        sms = next(t for t in report.channels if t.channel == SMS)
        assert sms.subscribed.current == 1
        assert report.series[-1].totals_of(SMS).subscribed == 1
        before = service.trends(ADMIN, as_of=event.occurred_at - timedelta(microseconds=1))
        assert [t.subscribed.current for t in before.channels if t.channel == SMS] in ([], [0])


    def test_trend_report_counts_backdated_events_in_their_month(
        self, store: Store
    ) -> None:
        """Month-over-month totals and the series come from occurred_at, not recording time."""
        clock = FakeClock(datetime(2026, 3, 31, 15, 0, tzinfo=UTC))
        service = ConsentService(store, clock=clock)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, f"t{i}") for i in range(6)])
        importer = Actor.system(ACCOUNT, "importer")
        january = datetime(2026, 1, 10, tzinfo=UTC)
        service.opt_in(importer, [f"t{i}" for i in range(4)], [SMS], evidence=EVIDENCE,
                       source=Source.IMPORT, occurred_at=january)
        service.unsubscribe(ADMIN, ["t0"], [SMS], occurred_at=datetime(2026, 2, 20, tzinfo=UTC))
        service.opt_in(importer, ["t4", "t5"], [SMS], evidence=EVIDENCE,
                       occurred_at=datetime(2026, 3, 5, tzinfo=UTC))
        service.unsubscribe(ADMIN, ["t1"], [SMS], occurred_at=datetime(2026, 3, 30, tzinfo=UTC))
        report = service.trends(ADMIN, months=4)
        assert report.compared_with == datetime(2026, 2, 28, 15, 0, tzinfo=UTC)
        sms = report.trend_of(SMS)
        assert sms is not None
        assert (sms.subscribed.previous, sms.subscribed.current) == (3, 4)
        assert (sms.unsubscribed.previous, sms.unsubscribed.current) == (1, 2)
        assert sms.subscribed.percent is not None
        assert round(sms.subscribed.percent, 3) == 33.333
        assert [p.month for p in report.series] == ["2025-12", "2026-01", "2026-02", "2026-03"]
        assert [p.totals_of(SMS).subscribed for p in report.series] == [0, 4, 3, 4]
        assert [p.totals_of(SMS).unsubscribed for p in report.series] == [0, 0, 1, 2]
