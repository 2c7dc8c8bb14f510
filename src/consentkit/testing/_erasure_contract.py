"""Erasure of the conformance suite (``erase_contact``, docs/privacy.md), mixed into
:class:`~consentkit.testing.conformance.StoreConformance`.

A store without :class:`~consentkit.storage.base.ErasureTransaction` is held to the fallback:
``erase_contact`` raises ``StorageError`` and changes nothing.  The scan for personal data reads
what :meth:`ErasureContract.stored_text` returns: override it to give every column of every
table of your store (the test is skipped otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentkit.channels import EMAIL, MMS, PUSH, SMS, WHATSAPP
from consentkit.erasure import ERASED_MARKER, HASHED_KEY_PREFIX
from consentkit.errors import (
    ConsentError,
    NotAuthorizedError,
    StorageError,
    UnknownContactError,
    ValidationError,
)
from consentkit.inbound import InboundMessage
from consentkit.model import (
    Actor,
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
    Source,
    SubscriptionState,
    Transition,
)
from consentkit.sends import SentMessage
from consentkit.service import ConsentService
from consentkit.storage.base import PendingReads, SentLog
from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import check_replay
from consentkit.testing.strategies import apply_request, change_requests

if TYPE_CHECKING:
    from consentkit.storage.base import Store

_ACCOUNT = "acme"
_ADMIN = Actor.admin(_ACCOUNT, "alice")
_KEY = b"erasure-contract-secret-32-bytes"
_T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
# Distinctive values, so a scan never finds them by accident in ids, hashes or times.
_ID = "zq-ann-erasable"
_PHONE = "+14155557319"
_EMAIL = "Ann.Zqx@Example.com"
_OLD_EMAIL = "ann.zqx.old@example.org"
_HANDLE = "push-token-zq9931"
_EVIDENCE = Evidence(
    "web_form", "Yes, text me.", "v1", location="https://zq.example/form-zq77",
    reference="zq-ip-203.0.113.77",
)
_BOBS_EVIDENCE = Evidence("paper", "Yes, text me.", "v1", location="shop 12")
_NOTE = "zq Ann phoned from her desk at ZqCorp"
_REASON = "Art. 17 request, ticket 4411"
_SUBSCRIBED = SubscriptionState.SUBSCRIBED
_UNSUBSCRIBED = SubscriptionState.UNSUBSCRIBED
_NEVER = SubscriptionState.NEVER_SUBSCRIBED
_PROPERTY = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[
        HealthCheck.differing_executors,
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)


class _Injected(Exception):
    """The failure injected after the store erased, before the transaction commits."""


class _Forwarding:
    """Forwards everything to *inner*, except what the subclass defines or *hidden* names."""

    def __init__(self, inner: Any, hidden: frozenset[str] = frozenset()) -> None:
        self._inner = inner
        self._hidden = hidden

    def __getattr__(self, name: str) -> Any:
        if name in self._hidden:
            raise AttributeError(name)
        return getattr(self._inner, name)


class _FailingTransaction(_Forwarding):
    def erase_contact(self, erasure: Any) -> None:
        self._inner.erase_contact(erasure)
        raise _Injected


class _WrappedStore(_Forwarding):
    """The store with transactions that fail after erasing, or that cannot erase."""

    def __init__(self, inner: Store, *, fail: bool) -> None:
        super().__init__(inner)
        self._fail = fail

    @contextmanager
    def transaction(self, account: str) -> Iterator[Any]:
        with self._inner.transaction(account) as tx:
            if self._fail:
                yield _FailingTransaction(tx)
            else:
                yield _Forwarding(tx, frozenset({"erase_contact", "subscriptions_of_contact"}))


class ErasureContract:
    """An erased contact's personal data is gone from every table, its opt-outs hold under keyed
    hashes, and the audit trail still replays."""

    def stored_text(self, store: Store) -> Iterable[str]:
        """Every value the store holds, as text (every column of every table, of every
        account).  Override it for your store; the scan for personal data is skipped
        otherwise."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _erasure_service(self, store: Store, clock: FakeClock, **extra: Any) -> ConsentService:
        service = ConsentService(store, clock=clock, erasure_key=_KEY, **extra)
        service.upsert_contacts(
            _ADMIN,
            [
                Contact(_ACCOUNT, _ID, phone=_PHONE, email=_EMAIL, handles={PUSH: _HANDLE}),
                Contact(_ACCOUNT, "bob", phone="+14155550102", email="bob@example.com"),
            ],
        )
        service.opt_in(_ADMIN, _ID, [SMS, MMS, EMAIL, PUSH], evidence=_EVIDENCE)
        service.opt_in(_ADMIN, "bob", [SMS, MMS, EMAIL, PUSH], evidence=_BOBS_EVIDENCE)
        return service

    @staticmethod
    def _snapshot(store: Store) -> tuple[object, ...]:
        contacts = store.list_contacts(_ACCOUNT, after=None, limit=1000)
        return (
            tuple(contacts),
            tuple(tuple(store.subscriptions_of(_ACCOUNT, c.id)) for c in contacts),
            tuple(store.events(_ACCOUNT)),
        )

    # ------------------------------------------------------------------ the opt-out holds

    def test_an_erased_address_is_never_imported_as_subscribed(
        self, store: Store, clock: FakeClock
    ) -> None:
        """After an erasure its addresses start a new contact unsubscribed, an import's opt-in
        skips them, and an edit that gives one to another contact unsubscribes that contact."""
        service = self._erasure_service(store, clock)
        result = service.erase_contact(_ADMIN, _ID, reason=_REASON)
        assert {ch.key for _, ch in result.unsubscribed} == {"sms", "mms", "email", "push"}
        assert store.get_contact(_ACCOUNT, _ID) is None
        clock.advance(timedelta(days=30))
        # The same number written another way, the email in another case.
        added = service.upsert_contacts(
            _ADMIN, [Contact(_ACCOUNT, "newcomer", phone="+1 (415) 555-7319")]
        )
        assert {ch.key for _, ch in added.suppressed} >= {"sms", "mms", "whatsapp"}
        imported = service.opt_in(
            _ADMIN, "newcomer", [SMS, MMS], evidence=_EVIDENCE, source=Source.IMPORT,
            details=True,
        )
        assert imported.changed == ()
        for ch in (SMS, MMS):
            assert store.get_state(_ACCOUNT, "newcomer", ch) is _UNSUBSCRIBED
            assert not service.can_send(_ADMIN, "newcomer", ch)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "bob", email="ANN.ZQX@example.com")])
        assert store.get_state(_ACCOUNT, "bob", EMAIL) is _UNSUBSCRIBED
        assert store.get_state(_ACCOUNT, "bob", SMS) is _SUBSCRIBED
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "pushy", handles={PUSH: _HANDLE})])
        assert store.get_state(_ACCOUNT, "pushy", PUSH) is _UNSUBSCRIBED
        check_replay(store, _ACCOUNT)

    def test_a_service_without_the_key_does_not_recognise_erased_addresses(
        self, store: Store, clock: FakeClock
    ) -> None:
        """The hashes are matched only under the same key (documented: every service over a
        store needs it), and a service without one cannot erase."""
        service = self._erasure_service(store, clock)
        service.erase_contact(_ADMIN, _ID, reason=_REASON)
        other = ConsentService(store, clock=clock, erasure_key=b"another key of 32 bytes, wrong!")
        other.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "n1", phone=_PHONE)])
        assert store.get_state(_ACCOUNT, "n1", SMS) is _NEVER
        keyless = ConsentService(store, clock=clock)
        with pytest.raises(ValidationError) as refused:
            keyless.erase_contact(_ADMIN, "n1", reason=_REASON)
        assert refused.value.field == "erasure_key"
        assert store.get_contact(_ACCOUNT, "n1") is not None
        for bad in ("a string key", b"short", 42):
            with pytest.raises(ValidationError) as invalid:
                ConsentService(store, erasure_key=bad)  # type: ignore[arg-type]
            assert invalid.value.field == "erasure_key"

    def test_a_shared_address_stays_with_the_other_contact(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Erasing one of two contacts with the same phone leaves the other intact (its address,
        consent and history) and still suppresses the phone for newcomers."""
        service = self._erasure_service(store, clock)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "twin", phone=_PHONE)])
        service.opt_in(_ADMIN, "twin", [SMS], evidence=_EVIDENCE)
        before = list(store.events(_ACCOUNT, contact_id="twin"))
        service.erase_contact(_ADMIN, _ID, reason=_REASON)
        assert store.get_contact(_ACCOUNT, "twin") == Contact(_ACCOUNT, "twin", phone=_PHONE)
        assert list(store.events(_ACCOUNT, contact_id="twin")) == before
        assert service.can_send(_ADMIN, "twin", SMS)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "third", phone=_PHONE)])
        assert store.get_state(_ACCOUNT, "third", SMS) is _UNSUBSCRIBED
        # The twin's own STOP still reaches it.
        service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, _PHONE, "STOP", "zq-m9", clock.now())
        )
        assert store.get_state(_ACCOUNT, "twin", SMS) is _UNSUBSCRIBED
        check_replay(store, _ACCOUNT)

    # ------------------------------------------------------------------ nothing personal left

    def test_nothing_personal_of_an_erased_contact_is_left(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Every column of every table is scanned for the erased contact's id, addresses (given,
        normalised and as address keys, a former one too) and free text: none is left."""
        try:
            self.stored_text(store)
        except NotImplementedError:
            pytest.skip("the store's test class does not implement stored_text")
        service = self._erasure_service(store, clock)
        ann = Actor.contact(_ACCOUNT, _ID)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, _ID, email=_OLD_EMAIL)])
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, _ID, email=_EMAIL)])
        if isinstance(store, SentLog):
            service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, clock.now()))
        clock.advance(timedelta(minutes=1))
        service.handle_inbound(InboundMessage(_ACCOUNT, SMS, _PHONE, "STOP", "zq-m1", clock.now()))
        service.resubscribe(
            _ADMIN, _ID, SMS,
            justification=Justification(ResubscribeReason.CONTACT_REQUEST, _NOTE),
        )
        service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, _PHONE, "please stop texting me", "zq-m2", clock.now())
        )
        assert service.review_items(_ADMIN).items
        service.unsubscribe(ann, _ID, EMAIL, source=Source.UNSUBSCRIBE_LINK)
        # A refused pair that was never subscribed (a store may keep a lock row for it).
        refused = service.resubscribe(
            _ADMIN, _ID, [WHATSAPP, EMAIL],
            justification=Justification(ResubscribeReason.CONTACT_REQUEST, _NOTE),
            partial=True,
        )
        assert refused.refused
        needles = {
            _ID, _PHONE, _EMAIL, _EMAIL.lower(), _OLD_EMAIL, _HANDLE, _NOTE,
            "https://zq.example/form-zq77", "zq-ip-203.0.113.77",
        }
        if isinstance(store, PendingReads):  # a double opt-in request waiting for her
            signup = Evidence("web_form", "Yes, WhatsApp me.", "v1", "https://zq.example/dbl-zq88")
            service.request_opt_in(
                _ADMIN, _ID, WHATSAPP, evidence=signup, request_wording="Reply YES"
            )
            needles.add("https://zq.example/dbl-zq88")
        before = "\n".join(self.stored_text(store)).lower()
        assert all(needle.lower() in before for needle in needles)  # the scan sees them
        result = service.erase_contact(_ADMIN, _ID, reason=_REASON)
        after = "\n".join(self.stored_text(store)).lower()
        left = sorted(needle for needle in needles if needle.lower() in after)
        assert left == [], f"personal data left after erasure: {left}"
        assert result.pseudonym.lower() in after
        assert HASHED_KEY_PREFIX in after
        # Bob's data is untouched; the review queue has no item of the erased contact.
        assert "bob@example.com" in after
        assert service.review_items(_ADMIN, include_decided=True).items == ()
        check_replay(store, _ACCOUNT)

    def test_the_trail_replays_under_the_pseudonym_without_free_text(
        self, store: Store, clock: FakeClock
    ) -> None:
        """The events stay, under the pseudonym and in order; notes and evidence details are
        gone; the erasure's unsubscribes are events by the admin that trends count."""
        service = self._erasure_service(store, clock)
        service.unsubscribe(_ADMIN, _ID, SMS)
        service.resubscribe(
            _ADMIN, _ID, SMS,
            justification=Justification(ResubscribeReason.CONTACT_REQUEST, _NOTE),
        )
        own = list(store.events(_ACCOUNT, contact_id=_ID))
        result = service.erase_contact(_ADMIN, _ID, reason=_REASON)
        assert list(store.events(_ACCOUNT, contact_id=_ID)) == []
        kept = list(store.events(_ACCOUNT, contact_id=result.pseudonym))
        assert [e.sequence for e in kept[: len(own)]] == [e.sequence for e in own]
        assert [(e.channel, e.new_state) for e in kept[: len(own)]] == [
            (e.channel, e.new_state) for e in own
        ]
        for event in kept:
            assert event.justification is None or event.justification.note == ERASED_MARKER
            assert event.evidence is None or (
                event.evidence.location is None and event.evidence.reference is None
            )
        erasing = kept[len(own) :]
        assert {e.channel.key for e in erasing} == {"sms", "mms", "email", "push"}
        assert all(e.actor == _ADMIN and e.reason == "erasure" for e in erasing)
        assert all(e.new_state is _UNSUBSCRIBED for e in erasing)
        window = [_T0 - timedelta(days=400), result.erased_at + timedelta(seconds=1)]
        counts = store.transition_counts(_ACCOUNT, window)[0]
        assert counts.get((SMS, Transition.UNSUBSCRIBE), 0) == 2
        for sub in store.subscriptions_of(_ACCOUNT, result.pseudonym):
            assert sub.state is _UNSUBSCRIBED
            assert sub.opted_out_via is None or sub.opted_out_via.startswith(HASHED_KEY_PREFIX)
        assert not service.can_send(_ADMIN, result.pseudonym, SMS)
        check_replay(store, _ACCOUNT)

    # ------------------------------------------------------------------ who, and all or nothing

    def test_only_admins_erase_and_the_record_is_readable(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Members, the contact and the system are refused and change nothing; an admin's
        erasure leaves an audit record (who, when, why, the pseudonym) readers can list."""
        service = self._erasure_service(store, clock)
        before = self._snapshot(store)
        for actor in (
            Actor.member(_ACCOUNT, "bob-the-member"),
            Actor.contact(_ACCOUNT, _ID),
            Actor.system(_ACCOUNT, "cleanup"),
        ):
            with pytest.raises(NotAuthorizedError):
                service.erase_contact(actor, _ID, reason=_REASON)
        assert self._snapshot(store) == before
        assert service.erasures(_ADMIN) == []
        result = service.erase_contact(_ADMIN, _ID, reason=_REASON)
        (record,) = service.erasures(Actor.member(_ACCOUNT, "auditor"))
        assert (record.pseudonym, record.erased_at, record.reason) == (
            result.pseudonym, result.erased_at, _REASON,
        )
        assert (record.actor.kind, record.actor.id, record.account) == (
            _ADMIN.kind, _ADMIN.id, _ACCOUNT,
        )
        assert result.suppressions >= 5 + 1 + 1  # the phone channels, email, push
        assert service.erasures(Actor.admin("globex", "olga")) == []
        with pytest.raises(NotAuthorizedError):
            service.erasures(Actor.contact(_ACCOUNT, "bob"))

    def test_invalid_arguments_are_refused_before_anything_is_written(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Every argument is checked, naming its field; an unknown contact is an
        UnknownContactError; nothing changes."""
        service = self._erasure_service(store, clock)
        before = self._snapshot(store)
        cases: list[tuple[dict[str, Any], type[ConsentError], str | None]] = [
            ({"actor": "admin:alice"}, ValidationError, "actor"),
            ({"contact_id": 7}, ValidationError, "contact_id"),
            ({"contact_id": ""}, ValidationError, "contact_id"),
            ({"reason": ""}, ValidationError, "reason"),
            ({"reason": "   "}, ValidationError, "reason"),
            ({"reason": None}, ValidationError, "reason"),
            ({"reason": "x" * 2001}, ValidationError, "reason"),
            ({"source": "nowhere"}, ValidationError, "source"),
            ({"contact_id": "nobody"}, UnknownContactError, None),
        ]
        for change, error, field in cases:
            arguments: dict[str, Any] = {
                "actor": _ADMIN, "contact_id": _ID, "reason": _REASON, **change
            }
            with pytest.raises(error) as raised:
                service.erase_contact(
                    arguments.pop("actor"), arguments.pop("contact_id"), **arguments
                )
            if field is not None:
                assert getattr(raised.value, "field", None) == field
        assert self._snapshot(store) == before
        assert service.erasures(_ADMIN) == []

    def test_a_failing_erasure_writes_nothing(self, store: Store, clock: FakeClock) -> None:
        """A failure after the store erased rolls everything back (the unsubscribes too), and a
        store that cannot erase says so and changes nothing."""
        self._erasure_service(store, clock)
        service = ConsentService(store, clock=clock, erasure_key=_KEY)
        before = self._snapshot(store)
        suppressions = self._suppressions(store)
        failing = ConsentService(_WrappedStore(store, fail=True), clock=clock, erasure_key=_KEY)
        with pytest.raises(_Injected):
            failing.erase_contact(_ADMIN, _ID, reason=_REASON)
        unable = ConsentService(_WrappedStore(store, fail=False), clock=clock, erasure_key=_KEY)
        with pytest.raises(StorageError, match="cannot erase"):
            unable.erase_contact(_ADMIN, _ID, reason=_REASON)
        assert self._snapshot(store) == before
        assert self._suppressions(store) == suppressions
        assert service.erasures(_ADMIN) == []
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "n2", phone=_PHONE)])
        assert store.get_state(_ACCOUNT, "n2", SMS) is _NEVER
        check_replay(store, _ACCOUNT)

    @staticmethod
    def _suppressions(store: Store) -> list[str]:
        with store.transaction(_ACCOUNT) as tx:
            return sorted(map(repr, tx.get_suppressions([f"phone:{_PHONE}"])))

    def test_an_erased_id_can_be_reused_and_starts_clean(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A new contact with an erased contact's id has no consent and no history; erased
        again, it gets another pseudonym and another record."""
        service = self._erasure_service(store, clock)
        first = service.erase_contact(_ADMIN, _ID, reason=_REASON)
        with pytest.raises(UnknownContactError):
            service.erase_contact(_ADMIN, _ID, reason=_REASON)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, _ID, email="fresh@example.net")])
        assert service.history(_ADMIN, _ID) == []
        assert store.subscriptions_of(_ACCOUNT, _ID) == []
        assert store.get_state(_ACCOUNT, _ID, EMAIL) is _NEVER
        service.opt_in(_ADMIN, _ID, EMAIL, evidence=_EVIDENCE)
        assert service.can_send(_ADMIN, _ID, EMAIL)
        second = service.erase_contact(_ADMIN, _ID, reason="second request, ticket 4412")
        assert second.pseudonym != first.pseudonym
        assert [r.pseudonym for r in service.erasures(_ADMIN)] == [
            first.pseudonym, second.pseudonym,
        ]
        check_replay(store, _ACCOUNT)

    # ------------------------------------------------------------------ property

    @_PROPERTY
    @given(data=st.data())
    def test_any_history_erases_to_a_replayable_unsendable_trail(
        self, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
    ) -> None:
        """After any sequence of requests, erasing any contact leaves a trail that replays, the
        erased pairs unsendable under the pseudonym, and the other contacts as they were."""
        made: Store = self.make_store(tmp_path_factory.mktemp("store"))  # type: ignore[attr-defined]
        try:
            clock = FakeClock(_T0, tick=timedelta(minutes=7))
            service = ConsentService(made, clock=clock, erasure_key=_KEY)
            pool = ["a", "b", "c"]
            service.upsert_contacts(
                _ADMIN,
                [Contact(_ACCOUNT, cid, phone=f"+1415555{i:04d}") for i, cid in enumerate(pool)],
            )
            for request in data.draw(
                st.lists(change_requests(_ACCOUNT, pool, [SMS, EMAIL]), max_size=8)
            ):
                with suppress(ConsentError):
                    apply_request(service, request)
            victim = data.draw(st.sampled_from(pool))
            others = {
                cid: made.subscriptions_of(_ACCOUNT, cid) for cid in pool if cid != victim
            }
            result = service.erase_contact(_ADMIN, victim, reason=_REASON)
            check_replay(made, _ACCOUNT)
            assert made.subscriptions_of(_ACCOUNT, victim) == []
            assert all(
                s.state is not _SUBSCRIBED
                for s in made.subscriptions_of(_ACCOUNT, result.pseudonym)
            )
            assert {cid: made.subscriptions_of(_ACCOUNT, cid) for cid in others} == others
        finally:
            made.close()
