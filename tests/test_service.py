"""ConsentService behaviour through the public API, on the in-memory store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentkit import (
    EMAIL,
    SMS,
    WHATSAPP,
    Actor,
    ActorKind,
    ConflictError,
    ConsentError,
    ConsentEvent,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    Justification,
    JustificationError,
    NotAuthorizedError,
    PairRef,
    ResubscribeReason,
    Source,
    SubscriptionState,
    Transition,
    UnknownContactError,
    ValidationError,
)
from consentkit.channels import Channel
from consentkit.model import Suppression
from consentkit.storage.sqlite import SQLiteStore
from consentkit.testing import FakeClock, check_replay
from consentkit.testing.strategies import apply_request, change_requests

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
ADMIN = Actor.admin("acme", "alice")
MEMBER = Actor.member("acme", "bob")
EVIDENCE = Evidence("web_form", "Yes, text me order updates.", "v2")
REQUEST = Justification(ResubscribeReason.CONTACT_REQUEST, "asked by email on 1 May")
MISTAKE = Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "clicked the wrong row")
SUB = SubscriptionState.SUBSCRIBED
UNSUB = SubscriptionState.UNSUBSCRIBED
NEVER = SubscriptionState.NEVER_SUBSCRIBED


def make_service(contacts: int = 6, tick: timedelta = timedelta(seconds=1)) -> ConsentService:
    service = ConsentService(InMemoryStore(), clock=FakeClock(T0, tick=tick))
    service.upsert_contacts(
        ADMIN,
        [Contact("acme", f"c{i}", phone=f"+1202555{i:04d}") for i in range(contacts)],
    )
    return service


@pytest.fixture
def service() -> ConsentService:
    """Six registered contacts c0..c5 in account acme."""
    return make_service()


def test_channels_are_independent(service: ConsentService) -> None:
    """Subscribing on SMS leaves WhatsApp alone, and unsubscribing works the same way."""
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
    assert service.state(ADMIN, "c1", SMS) is SUB
    assert service.state(ADMIN, "c1", WHATSAPP) is NEVER
    service.opt_in(ADMIN, ["c1"], [WHATSAPP], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ["c1"], [WHATSAPP])
    assert service.state(ADMIN, "c1", SMS) is SUB
    assert service.state(ADMIN, "c1", WHATSAPP) is UNSUB


def test_bulk_unsubscribe_reports_changed_and_unchanged(service: ConsentService) -> None:
    """The contacts-page modal: many contacts x many channels, no-ops reported, no event."""
    service.opt_in(ADMIN, ["c1", "c2"], [SMS, EMAIL], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ["c2"], [SMS])
    result = service.unsubscribe(ADMIN, ["c1", "c2", "c3"], [SMS, EMAIL], details=True)
    changed = {(p.contact_id, p.channel.key) for p in result.changed}
    assert changed == {("c1", "sms"), ("c1", "email"), ("c2", "email"), ("c3", "sms"),
                       ("c3", "email")}
    assert {(p.contact_id, p.channel.key) for p in result.unchanged} == {("c2", "sms")}
    assert result.changed_count == 5
    assert {e.batch_id for e in service.history(ADMIN, "c3")} == {result.batch_id}


def test_member_is_refused_with_ask_admin_and_nothing_changes(service: ConsentService) -> None:
    """A member's unsubscribe raises NotAuthorizedError telling them to ask an admin."""
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
    with pytest.raises(NotAuthorizedError, match="Ask an admin"):
        service.unsubscribe(MEMBER, ["c1"], [SMS])
    assert service.state(MEMBER, "c1", SMS) is SUB
    assert len(service.history(MEMBER, "c1")) == 1


def test_resubscribe_needs_justification_then_records_it(service: ConsentService) -> None:
    """Resubscribing without a justification is refused; with one it is recorded in the event."""
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ["c1"], [SMS])
    with pytest.raises(JustificationError):
        service.resubscribe(ADMIN, ["c1"], [SMS], justification=None)
    result = service.resubscribe(ADMIN, ["c1"], [SMS], justification=MISTAKE)
    assert result.changed_count == 1
    last = service.history(ADMIN, "c1")[-1]
    assert last.transition is Transition.RESUBSCRIBE
    assert last.justification == MISTAKE
    sub = service.subscription(ADMIN, "c1", SMS)
    assert sub is not None
    assert sub.reason == "mistaken_unsubscribe"


def test_resubscribing_a_never_subscribed_pair_is_refused(service: ConsentService) -> None:
    """A pair that never subscribed needs an opt-in with evidence, not a resubscription."""
    with pytest.raises(ValidationError, match="never subscribed"):
        service.resubscribe(ADMIN, ["c1"], [SMS], justification=REQUEST)


def test_opt_in_skips_unsubscribed_contacts(service: ConsentService) -> None:
    """An import never resubscribes: unsubscribed pairs are skipped and reported."""
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ["c1"], [SMS])
    result = service.opt_in(
        Actor.system("acme", "importer"), ["c1", "c2"], [SMS], evidence=EVIDENCE,
        source=Source.IMPORT, details=True,
    )
    assert [p.contact_id for p in result.changed] == ["c2"]
    assert [(s.contact_id, s.channel) for s in result.skipped] == [("c1", SMS)]
    assert "never resubscribes" in result.skipped[0].reason
    assert service.state(ADMIN, "c1", SMS) is UNSUB


def test_contact_may_change_only_their_own_consent(service: ConsentService) -> None:
    """A contact actor resubscribes themselves but cannot touch another contact."""
    me = Actor.contact("acme", "c1")
    service.unsubscribe(me, "c1", [SMS], source=Source.UNSUBSCRIBE_LINK)
    with pytest.raises(NotAuthorizedError, match="only their own"):
        service.unsubscribe(me, ["c1", "c2"], [SMS])
    with pytest.raises(NotAuthorizedError, match="only read their own"):
        service.state(me, "c2", SMS)
    service.set_subscribed(me, "c1", SMS, True, source=Source.INBOX)
    assert service.state(me, "c1", SMS) is SUB
    assert service.history(ADMIN, "c1")[-1].actor.kind is ActorKind.CONTACT


def test_inbox_toggle_uses_opt_in_or_resubscribe_rules(service: ConsentService) -> None:
    """Toggling on needs evidence for a new pair and a justification for an unsubscribed one."""
    with pytest.raises(ValidationError, match="evidence"):
        service.set_subscribed(ADMIN, "c1", SMS, True)
    service.set_subscribed(ADMIN, "c1", SMS, True, evidence=EVIDENCE)
    service.set_subscribed(ADMIN, "c1", SMS, False)
    with pytest.raises(JustificationError):
        service.set_subscribed(ADMIN, "c1", SMS, True, evidence=EVIDENCE)
    service.set_subscribed(ADMIN, "c1", SMS, True, justification=REQUEST)
    assert [e.source for e in service.history(ADMIN, "c1")] == [Source.INBOX] * 3


def test_stale_expected_version_is_a_conflict(service: ConsentService) -> None:
    """The toggle refuses to act on a subscription someone else changed meanwhile."""
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
    seen = service.subscription(ADMIN, "c1", SMS)
    assert seen is not None
    service.unsubscribe(ADMIN, ["c1"], [SMS])
    with pytest.raises(ConflictError, match="reload"):
        service.set_subscribed(
            ADMIN, "c1", SMS, True, justification=REQUEST, expected_version=seen.version
        )
    assert service.state(ADMIN, "c1", SMS) is UNSUB


def test_streamed_bulk_call_larger_than_a_chunk_is_atomic() -> None:
    """Ids are streamed in chunks inside one transaction: a late unknown id undoes everything."""
    service = ConsentService(InMemoryStore(), clock=FakeClock(T0), chunk_size=7)
    service.upsert_contacts(ADMIN, (Contact("acme", f"k{i}") for i in range(50)))

    def ids() -> Iterator[str]:
        yield from (f"k{i}" for i in range(50))
        yield "k3"
        yield "stranger"

    with pytest.raises(UnknownContactError, match="stranger"):
        service.unsubscribe(ADMIN, ids(), [SMS])
    assert list(service.audit_log(ADMIN)) == []
    result = service.unsubscribe(ADMIN, (f"k{i}" for i in [*range(50), 3]), [SMS], details=False)
    assert (result.changed_count, result.unchanged_count, result.changed) == (50, 1, ())


def test_foreign_contacts_and_actors_are_refused(service: ConsentService) -> None:
    """A contact of another account cannot be registered by this account's admin."""
    with pytest.raises(NotAuthorizedError, match="belongs to account 'globex'"):
        service.upsert_contacts(ADMIN, [Contact("globex", "g1")])
    assert service.store.get_contact("globex", "g1") is None
    with pytest.raises(ValidationError, match="actor"):
        service.state("alice", "c1", SMS)  # type: ignore[arg-type]


def test_times_must_be_aware_ordered_and_not_in_the_future(service: ConsentService) -> None:
    """occurred_at is refused when naive, in the future, or before the pair's last change."""
    with pytest.raises(ValidationError, match="naive"):
        service.unsubscribe(ADMIN, ["c1"], [SMS], occurred_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="future"):
        service.unsubscribe(ADMIN, ["c1"], [SMS], occurred_at=T0 + timedelta(days=1))
    service.unsubscribe(ADMIN, ["c1"], [SMS], occurred_at=T0 - timedelta(days=3))
    with pytest.raises(ValidationError, match="before the last recorded change"):
        service.set_subscribed(
            ADMIN, "c1", SMS, True, justification=REQUEST, occurred_at=T0 - timedelta(days=4)
        )


def test_bad_channel_limit_and_cursor_get_specific_errors(service: ConsentService) -> None:
    """Unknown channel keys, limits out of range and foreign cursors name their field."""
    with pytest.raises(ValidationError, match=r"^channels: 'S M S' is not a known channel"):
        service.unsubscribe(ADMIN, ["c1"], ["S M S"])
    with pytest.raises(ValidationError, match=r"^channels: "):
        service.unsubscribe(ADMIN, ["c1"], [])
    with pytest.raises(ValidationError, match=r"^limit: "):
        service.list_subscriptions(ADMIN, SMS, limit=0)
    with pytest.raises(ValidationError, match=r"^cursor: "):
        service.list_subscriptions(ADMIN, SMS, cursor="%%%")
    with pytest.raises(ValidationError, match=r"^contact_ids: "):
        service.unsubscribe(ADMIN, ["c1", ""], [SMS])
    with pytest.raises(ValidationError, match=r"^reason: "):
        service.unsubscribe(ADMIN, ["c1"], [SMS], reason="Hard Bounce!")
    assert list(service.audit_log(ADMIN)) == []


def test_filter_unsubscribed_contacts_with_cursor_pagination(service: ConsentService) -> None:
    """The "filter for all unsubscribed contacts" view pages through results by cursor."""
    ids = [f"c{i}" for i in range(6)]
    service.opt_in(ADMIN, ids, [SMS], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ids[:5], [SMS], reason="complaint")
    seen: list[str] = []
    cursor = None
    while True:
        page = service.list_subscriptions(ADMIN, SMS, UNSUB, cursor=cursor, limit=2)
        seen.extend(s.contact_id for s in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[:5]
    by_reason = service.list_subscriptions(ADMIN, SMS, reason="complaint")
    assert len(by_reason.items) == 5
    assert service.list_subscriptions(ADMIN, SMS, SUB).items[0].contact_id == "c5"
    with pytest.raises(ValidationError, match="state"):
        service.list_subscriptions(ADMIN, SMS, NEVER)


def test_can_send_and_audience_only_allow_subscribed(service: ConsentService) -> None:
    """Only subscribed pairs may be messaged; unknown ids are never in the audience."""
    service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ["c2"], [SMS])
    assert service.can_send(MEMBER, "c1", SMS)
    assert not service.can_send(MEMBER, "c2", SMS)
    assert not service.can_send(MEMBER, "c3", SMS)
    assert not service.can_send(MEMBER, "ghost", SMS)
    assert service.audience(MEMBER, SMS, iter(["c1", "c2", "c3", "ghost", "c1"])) == {"c1"}
    with pytest.raises(UnknownContactError, match="ghost"):
        service.state(MEMBER, "ghost", SMS)


def test_history_and_audit_log_are_in_order(service: ConsentService) -> None:
    """History lists a contact's events oldest first; the audit log resumes after a sequence."""
    service.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ["c1"], [SMS])
    service.resubscribe(ADMIN, ["c1"], [SMS], justification=REQUEST)
    history = service.history(ADMIN, "c1")
    assert [e.new_state for e in history] == [SUB, UNSUB, SUB]
    assert [e.occurred_at for e in history] == sorted(e.occurred_at for e in history)
    log = list(service.audit_log(ADMIN, page_size=1))
    assert len(log) == 4
    assert list(service.audit_log(ADMIN, after=log[1].sequence)) == log[2:]


def test_suppressed_address_starts_unsubscribed_and_blocks_imports() -> None:
    """A contact registered with an address that opted out earlier starts unsubscribed, as of its
    registration."""
    service = make_service(contacts=0)
    with service.store.transaction("acme") as tx:
        tx.put_suppressions(
            [Suppression("acme", "phone:+12025550199", SMS, T0 - timedelta(days=2),
                         Source.INBOUND_KEYWORD, "SM-old")]
        )
    result = service.upsert_contacts(ADMIN, [Contact("acme", "late", phone="+1 202 555 0199")])
    assert [(p.contact_id, p.channel) for p in result.suppressed] == [("late", SMS)]
    assert service.state(ADMIN, "late", SMS) is UNSUB
    event = service.history(ADMIN, "late")[0]
    assert (event.source, event.inbound_message_id) == (Source.SUPPRESSION, "SM-old")
    # Dated when the address joined the contact: the pair was not the STOP's until then.
    assert event.occurred_at >= T0
    assert event.actor == Actor.system("acme", "suppression-list")
    imported = service.opt_in(
        Actor.system("acme", "importer"), ["late"], [SMS, WHATSAPP], evidence=EVIDENCE,
        details=True,
    )
    assert [p.channel for p in imported.changed] == [WHATSAPP]
    assert len(imported.skipped) == 1


POOL = ["a", "b", "c"]


def _service_with_pool() -> ConsentService:
    service = ConsentService(InMemoryStore(), clock=FakeClock(T0, tick=timedelta(minutes=1)))
    service.upsert_contacts(ADMIN, [Contact("acme", cid) for cid in POOL])
    return service


@settings(max_examples=60, deadline=None)
@given(
    setup=st.lists(change_requests("acme", POOL, [SMS, EMAIL]), max_size=8),
    attempts=st.lists(change_requests("acme", POOL, [SMS, EMAIL]), min_size=1, max_size=8),
)
def test_members_can_never_change_anything(setup: list, attempts: list) -> None:  # type: ignore[type-arg]
    """Whatever state the account is in, no request by a member writes anything."""
    service = _service_with_pool()
    for request in setup:
        with contextlib.suppress(ConsentError):
            apply_request(service, request)
    before = list(service.audit_log(ADMIN))
    for request in attempts:
        as_member = type(request)(
            operation=request.operation,
            actor=MEMBER,
            contact_ids=request.contact_ids,
            channels=request.channels,
            justification=request.justification,
            evidence=request.evidence,
            source=request.source,
            subscribed=request.subscribed,
        )
        try:
            result = apply_request(service, as_member)
        except NotAuthorizedError:
            continue
        assert result.changed_count == 0
    assert list(service.audit_log(ADMIN)) == before


@settings(max_examples=80, deadline=None)
@given(requests=st.lists(change_requests("acme", POOL, [SMS, EMAIL]), max_size=15))
def test_every_resubscription_is_justified_or_the_contacts_own(requests: list) -> None:  # type: ignore[type-arg]
    """In any event log, unsubscribed -> subscribed is the contact's own act or an admin's with a
    valid justification (never MISTAKEN_UNSUBSCRIBE after the contact's own opt-out)."""
    service = _service_with_pool()
    for request in requests:
        with contextlib.suppress(ConsentError):
            apply_request(service, request)
    last_unsubscribed_by: dict[tuple[str, str], ActorKind] = {}
    for event in service.audit_log(ADMIN):
        key = (event.contact_id, event.channel.key)
        if event.transition is Transition.UNSUBSCRIBE:
            last_unsubscribed_by[key] = event.actor.kind
        if event.transition is Transition.RESUBSCRIBE:
            if event.actor.kind is ActorKind.CONTACT:
                assert event.actor.id == event.contact_id
                continue
            assert event.actor.kind is ActorKind.ADMIN
            assert event.justification is not None
            if last_unsubscribed_by[key] is ActorKind.CONTACT:
                assert event.justification.reason is ResubscribeReason.CONTACT_REQUEST
        if event.transition is Transition.OPT_IN and event.actor.kind is not ActorKind.CONTACT:
            assert event.evidence is not None
    check_replay(service.store, "acme")


def test_list_contacts_pages_by_cursor(service: ConsentService) -> None:
    """Contacts page through in id order with no contact skipped or repeated."""
    seen: list[str] = []
    cursor = None
    while True:
        page = service.list_contacts(MEMBER, cursor=cursor, limit=4)
        seen.extend(c.id for c in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"c{i}" for i in range(6)]


# ---------------------------------------------------------------- new versions and history pages


@pytest.fixture(params=["memory", "sqlite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsentService]:
    """Six registered contacts c0..c5 in account acme, on the in-memory and the SQLite store."""
    store = InMemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "c.db")
    service = ConsentService(store, clock=FakeClock(T0, tick=timedelta(seconds=1)))
    service.upsert_contacts(
        ADMIN, [Contact("acme", f"c{i}", phone=f"+1202555{i:04d}") for i in range(6)]
    )
    yield service
    store.close()


def _version(service: ConsentService, contact_id: str, ch: Channel) -> int:
    sub = service.subscription(ADMIN, contact_id, ch)
    assert sub is not None
    return sub.version


def test_change_results_carry_the_version_of_every_pair(any_store: ConsentService) -> None:
    """Changed pairs come with their new version and unchanged ones with their current one,
    exactly what a read of the pair says afterwards."""
    service = any_store
    opted = service.opt_in(ADMIN, ["c1", "c2"], [SMS, EMAIL], evidence=EVIDENCE, details=True)
    assert opted.versions == {PairRef(c, ch): 1 for c in ("c1", "c2") for ch in (SMS, EMAIL)}
    service.unsubscribe(ADMIN, ["c2"], [SMS])
    result = service.unsubscribe(ADMIN, ["c1", "c2"], [SMS], details=True)
    assert result.changed == (PairRef("c1", SMS),)
    assert result.unchanged == (PairRef("c2", SMS),)
    assert dict(result.versions) == {PairRef("c1", SMS): 2, PairRef("c2", SMS): 2}
    for pair, version in result.versions.items():
        assert _version(service, pair.contact_id, pair.channel) == version
    again = service.resubscribe(ADMIN, ["c1", "c2"], [SMS], justification=REQUEST, details=True)
    assert dict(again.versions) == {PairRef("c1", SMS): 3, PairRef("c2", SMS): 3}
    assert list(again.versions) == list(again.changed)  # in the order of the pairs


def test_without_details_no_versions_are_kept(any_store: ConsentService) -> None:
    """Bulk calls keep counts only unless asked: no pairs and no versions, and say so."""
    for result in (
        any_store.opt_in(ADMIN, ["c1", "c2"], [SMS], evidence=EVIDENCE, details=False),
        any_store.unsubscribe(ADMIN, ["c1", "c2"], [SMS]),  # the default
    ):
        assert result.changed_count == 2
        assert (result.changed, result.detailed) == ((), False)
        assert dict(result.versions) == {}
    toggled = any_store.set_subscribed(ADMIN, "c1", SMS, False)
    assert toggled.detailed


def test_the_toggle_version_is_the_next_expected_version(any_store: ConsentService) -> None:
    """The inbox toggle chains on the versions it returns with no read in between; a version
    that went stale raises ConflictError and changes nothing."""
    service = any_store
    pair = PairRef("c1", SMS)
    on = service.set_subscribed(ADMIN, "c1", SMS, True, evidence=EVIDENCE, expected_version=0)
    off = service.set_subscribed(ADMIN, "c1", SMS, False, expected_version=on.versions[pair])
    assert off.changed == (pair,)
    same = service.set_subscribed(ADMIN, "c1", SMS, False, expected_version=off.versions[pair])
    assert same.unchanged == (pair,)
    assert same.versions[pair] == off.versions[pair] == 2
    back = service.set_subscribed(
        ADMIN, "c1", SMS, True, justification=REQUEST, expected_version=same.versions[pair]
    )
    assert back.versions[pair] == 3 == _version(service, "c1", SMS)
    with pytest.raises(ConflictError, match="at version 3, not 2"):
        service.set_subscribed(ADMIN, "c1", SMS, False, expected_version=off.versions[pair])
    assert service.state(ADMIN, "c1", SMS) is SUB
    assert len(service.history(ADMIN, "c1", SMS)) == 3


def test_history_pages_oldest_first_by_sequence(any_store: ConsentService) -> None:
    """history_page walks a contact's events in append order, a page at a time, with nothing
    skipped or repeated, the same events history() gives; a channel narrows it."""
    service = any_store
    service.opt_in(ADMIN, ["c1", "c2"], [SMS, EMAIL], evidence=EVIDENCE)
    service.unsubscribe(ADMIN, ["c1", "c2"], [SMS, EMAIL])
    service.resubscribe(ADMIN, ["c1"], [SMS, EMAIL], justification=REQUEST)
    everything = service.history(ADMIN, "c1")
    seen: list[ConsentEvent] = []
    cursor = None
    sizes = []
    while True:
        page = service.history_page(ADMIN, "c1", cursor=cursor, limit=3)
        seen.extend(page.items)
        sizes.append(len(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == everything
    assert sizes == [3, 3]  # 2 opt-ins, 2 unsubscribes, 2 resubscribes of c1; no empty page
    sms = service.history_page(ADMIN, "c1", SMS, limit=100)
    assert sms.items == tuple(service.history(ADMIN, "c1", SMS))
    assert sms.next_cursor is None
    assert all(e.contact_id == "c1" for e in seen)


def test_history_page_refusals(any_store: ConsentService) -> None:
    """Unknown contacts, other contacts' histories for a contact actor, bad cursors and limits
    are refused with the service's errors; an empty history is an empty page."""
    service = any_store
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
    with pytest.raises(UnknownContactError):
        service.history_page(ADMIN, "nobody")
    assert service.history_page(ADMIN, "c3") == service.history_page(ADMIN, "c3", limit=1)
    assert service.history_page(ADMIN, "c3").items == ()
    own = Actor.contact("acme", "c1")
    assert len(service.history_page(own, "c1").items) == 1
    with pytest.raises(NotAuthorizedError):
        service.history_page(own, "c2")
    contacts_cursor = service.list_contacts(ADMIN, limit=1).next_cursor
    for cursor in ("nonsense", contacts_cursor, 17):
        with pytest.raises(ValidationError, match=r"^cursor: "):
            service.history_page(ADMIN, "c1", cursor=cursor)  # type: ignore[arg-type]
    for limit in (0, 10_001, True, "5"):
        with pytest.raises(ValidationError, match=r"^limit: "):
            service.history_page(ADMIN, "c1", limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="channel"):
        service.history_page(ADMIN, "c1", "smss")
