"""The topic rules of the conformance suite (docs/topics.md), mixed into
:class:`~consentkit.testing.conformance.StoreConformance`: every store runs them.

The truth table of ``can_send(contact, channel, topic=...)`` is written out here row by row,
independently of :func:`consentkit.topics.topic_sendable`, and checked for every combination of
the channel's state, the topic's state, the topic's default and the survival rule, through the
public API (``can_send`` and the audience filter must agree).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from consentkit.channels import EMAIL, MMS, SMS, WHATSAPP, Channel
from consentkit.errors import ChannelConsentRequiredError, JustificationError, ValidationError
from consentkit.inbound import InboundMessage, InboundSettings
from consentkit.model import (
    Actor,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    SubscriptionState,
)
from consentkit.scopes import OptOutScope, ScopeSchedule
from consentkit.service import ConsentService
from consentkit.settings import AccountSettings
from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import check_replay
from consentkit.topics import MessageClass, Topic, TopicDefault, UnknownTopicError

if TYPE_CHECKING:
    from consentkit.storage.base import Store

_ACCOUNT = "acme"
_ADMIN = Actor.admin(_ACCOUNT, "alice")
_T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_EVIDENCE = Evidence("web_form", "Yes, email me receipts and offers.", "v1")
_ASKED = Justification(ResubscribeReason.CONTACT_REQUEST, "asked at the counter")

# The channel pair's situation: subscribed, unsubscribed by an admin, unsubscribed by a spam
# complaint, or never subscribed.
_CHANNEL_STATES = ("subscribed", "unsubscribed", "complaint", "never")
_TOPIC_STATES = ("subscribed", "unsubscribed", "never")
_DEFAULTS = (TopicDefault.OPT_IN, TopicDefault.OPT_OUT)


def _table(channel: str, topic: str, default: TopicDefault, survives: bool) -> tuple[int, bool]:
    """(row, can_send) of the truth table of docs/topics.md, written out as the page says."""
    if channel == "never":
        return 10, False
    if channel == "subscribed":
        rows = {"subscribed": 1, "never": 2 if default is TopicDefault.OPT_OUT else 3}
        row = rows.get(topic, 4)
        return row, row in (1, 2)
    if not survives or channel == "complaint":  # a complaint stops everything on the channel
        return 5, False
    rows = {"subscribed": 6, "never": 7 if default is TopicDefault.OPT_OUT else 8}
    row = rows.get(topic, 9)
    return row, row in (6, 7)


def _case_id(case: tuple[str, str, TopicDefault, bool]) -> str:
    c, t, d, s = case
    return f"row{_table(c, t, d, s)[0]}-{c}-{t}-{d.value}-{'S' if s else 'noS'}"


_CASES = [
    pytest.param(case, id=_case_id(case))
    for case in itertools.product(_CHANNEL_STATES, _TOPIC_STATES, _DEFAULTS, (False, True))
    # A topic pair can only be subscribed where the channel was (consent to the channel first).
    if not (case[0] == "never" and case[1] == "subscribed")
]


class TopicsContract:
    """Topics inside channels: the truth table, the channel-first rule and unknown topics."""

    def _service(
        self, store: Store, clock: FakeClock, default: TopicDefault, survives: bool
    ) -> ConsentService:
        service = ConsentService(
            store,
            clock=clock,
            topics=[Topic("receipts", "Your receipts", MessageClass.TRANSACTIONAL, default)],
            surviving_classes={EMAIL: {MessageClass.TRANSACTIONAL}} if survives else None,
        )
        service.upsert_contacts(
            _ADMIN,
            [
                Contact(_ACCOUNT, "ann", email="ann@example.com"),
                Contact(_ACCOUNT, "bob", email="bob@example.com"),
            ],
        )
        return service

    @pytest.mark.parametrize("case", _CASES)
    def test_can_send_with_a_topic_follows_the_truth_table(
        self, store: Store, clock: FakeClock, case: tuple[str, str, TopicDefault, bool]
    ) -> None:
        """Every combination of channel state, topic state, default and survival answers as its
        row of docs/topics.md says, in can_send and in the audience filter; the channel layer
        alone answers as without topics."""
        channel, topic, default, survives = case
        service = self._service(store, clock, default, survives)
        receipts = EMAIL.with_topic("receipts")
        if channel != "never":
            service.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE)
        if topic == "subscribed":
            service.opt_in(_ADMIN, ["ann"], [receipts], evidence=_EVIDENCE)
        elif topic == "unsubscribed":
            service.unsubscribe(_ADMIN, ["ann"], [EMAIL], topic="receipts")
        if channel == "unsubscribed":
            service.unsubscribe(_ADMIN, ["ann"], [EMAIL])
        elif channel == "complaint":
            complaint = InboundMessage(
                _ACCOUNT, EMAIL, "ann@example.com", "", "complaint-1", clock.now(),
                provider="sendgrid", verdict="complaint", source="carrier",
            )
            service.handle_inbound(complaint)
            sub = service.subscription(_ADMIN, "ann", EMAIL)
            assert sub is not None
            assert OptOutOrigin.COMPLAINT in sub.opted_out_by
        row, expected = _table(channel, topic, default, survives)
        assert service.can_send(_ADMIN, "ann", EMAIL, topic="receipts") is expected, f"row {row}"
        assert service.can_send(_ADMIN, "ann", "email/receipts") is expected
        audience = service.audience(_ADMIN, EMAIL, ["ann", "bob", "nobody"], topic="receipts")
        assert audience == ({"ann"} if expected else set()), f"row {row}"
        # Row 11: without a topic, the channel layer alone answers.
        assert service.can_send(_ADMIN, "ann", EMAIL) is (channel == "subscribed")
        assert service.audience(_ADMIN, EMAIL, ["ann"]) == (
            {"ann"} if channel == "subscribed" else set()
        )
        check_replay(store, _ACCOUNT)

    def test_topic_pairs_are_their_own_pairs_under_the_same_policy(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A topic pair has its own state, events (naming the topic channel) and evidence; the
        channel's pair and the other channels are untouched; resubscribing it needs a
        justification as any pair does."""
        service = self._service(store, clock, TopicDefault.OPT_IN, False)
        service.opt_in(_ADMIN, ["ann", "bob"], [EMAIL, SMS], evidence=_EVIDENCE, partial=True)
        assert service.opt_in(
            _ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE, topic="receipts"
        ).changed_count == 1
        service.unsubscribe(_ADMIN, ["ann"], ["email/receipts"])
        assert service.state(_ADMIN, "ann", EMAIL, topic="receipts") is (
            SubscriptionState.UNSUBSCRIBED
        )
        assert service.state(_ADMIN, "ann", EMAIL) is SubscriptionState.SUBSCRIBED
        events = service.history(_ADMIN, "ann", EMAIL, topic="receipts")
        assert [e.channel.key for e in events] == ["email/receipts", "email/receipts"]
        assert [e.channel.topic for e in events] == ["receipts", "receipts"]
        assert events[0].evidence == _EVIDENCE
        assert all(e.channel.key == "email" for e in service.history(_ADMIN, "ann", EMAIL))
        # The opt-in of an unsubscribed topic pair is skipped, as for a channel pair.
        again = service.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE, topic="receipts")
        assert (again.changed_count, len(again.skipped)) == (0, 1)
        with pytest.raises(JustificationError):
            service.resubscribe(_ADMIN, ["ann"], [EMAIL], justification=None, topic="receipts")
        service.resubscribe(_ADMIN, ["ann"], [EMAIL], justification=_ASKED, topic="receipts")
        assert service.can_send(_ADMIN, "ann", EMAIL, topic="receipts")
        listed = service.list_subscriptions(
            _ADMIN, EMAIL, SubscriptionState.SUBSCRIBED, topic="receipts"
        )
        assert [s.contact_id for s in listed.items] == ["ann"]
        check_replay(store, _ACCOUNT)

    def test_a_topic_opt_in_needs_the_channel_first(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Opting in to (or resubscribing) a topic of a channel the contact never subscribed to
        is refused and writes nothing; with partial=True the refused pairs are reported and the
        others applied."""
        service = self._service(store, clock, TopicDefault.OPT_IN, False)
        service.opt_in(_ADMIN, ["bob"], [EMAIL], evidence=_EVIDENCE)
        # A call that looked at ann's email pair and changed nothing leaves no record of it (a
        # store may keep a lock row for it, which is no consent).
        refused = service.resubscribe(
            _ADMIN, ["ann"], [EMAIL], justification=_ASKED, partial=True
        )
        assert refused.refused
        with pytest.raises(ChannelConsentRequiredError, match="email") as raised:
            service.opt_in(_ADMIN, ["bob", "ann"], [EMAIL], evidence=_EVIDENCE, topic="receipts")
        assert raised.value.required_channel == "email"
        assert raised.value.to_document()["code"] == "channel_consent_required"
        assert service.state(_ADMIN, "bob", EMAIL, topic="receipts") is (
            SubscriptionState.NEVER_SUBSCRIBED
        )
        # Opting in to the channel and its topic in one call is refused too: two steps.
        with pytest.raises(ChannelConsentRequiredError):
            service.opt_in(_ADMIN, ["ann"], [EMAIL, "email/receipts"], evidence=_EVIDENCE)
        assert service.state(_ADMIN, "ann", EMAIL) is SubscriptionState.NEVER_SUBSCRIBED
        result = service.opt_in(
            _ADMIN, ["bob", "ann"], [EMAIL], evidence=_EVIDENCE, topic="receipts",
            partial=True, details=True,
        )
        assert [(p.contact_id, p.channel.key) for p in result.changed] == [
            ("bob", "email/receipts")
        ]
        assert [(p.contact_id, p.channel.key) for p in result.refused] == [
            ("ann", "email/receipts")
        ]
        assert isinstance(result.refused[0].error, ChannelConsentRequiredError)
        # Leaving a topic never needs anything first.
        assert service.unsubscribe(_ADMIN, ["ann"], [EMAIL], topic="receipts").changed_count == 1
        check_replay(store, _ACCOUNT)

    def test_unknown_topics_and_misplaced_topic_channels_are_refused(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A topic key nobody declared is an UnknownTopicError (with a suggestion) everywhere a
        topic is accepted, and a topic channel is refused where only a channel makes sense;
        nothing is written."""
        service = self._service(store, clock, TopicDefault.OPT_IN, False)
        service.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE)
        with pytest.raises(UnknownTopicError, match="receipts") as raised:
            service.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE, topic="receipt")
        assert (raised.value.field, raised.value.code) == ("topic", "unknown_topic")
        for call in (
            lambda: service.unsubscribe(_ADMIN, ["ann"], ["email/reciepts"]),
            lambda: service.can_send(_ADMIN, "ann", EMAIL, topic="promotions"),
            lambda: service.audience(_ADMIN, EMAIL, ["ann"], topic="promotions"),
            lambda: service.state(_ADMIN, "ann", "email/promotions"),
            lambda: service.history(_ADMIN, "ann", EMAIL, topic="nope"),
        ):
            with pytest.raises(UnknownTopicError):
                call()
        with pytest.raises(ValidationError, match="topic"):
            service.can_send(_ADMIN, "ann", "email/receipts", topic="receipts")
        with pytest.raises(ValidationError, match="topic"):
            service.can_send(_ADMIN, "ann", EMAIL, topic=3)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="topic channel"):
            service.handle_inbound(
                InboundMessage(
                    _ACCOUNT, Channel("email/receipts"), "ann@example.com", "STOP", "m-1",
                    clock.now(),
                )
            )
        with pytest.raises(ValidationError, match="topic channel"):
            ConsentService(store, channels=["telegram/news"])
        assert [e.channel.key for e in service.history(_ADMIN, "ann")] == ["email"]

    def test_declaring_topics_changes_no_channel_consent(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Consent recorded by a service without topics reads the same through one with topics
        (nothing is reinterpreted): channel answers, trends' channel totals and the log."""
        plain = ConsentService(store, clock=clock)
        plain.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "ann", email="ann@example.com")])
        plain.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE)
        before = list(plain.audit_log(_ADMIN))
        with_topics = self._service(store, clock, TopicDefault.OPT_OUT, True)
        assert with_topics.can_send(_ADMIN, "ann", EMAIL)
        assert with_topics.can_send(_ADMIN, "ann", EMAIL, topic="receipts")
        assert list(with_topics.audit_log(_ADMIN))[: len(before)] == before
        with_topics.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE, topic="receipts")
        clock.advance(timedelta(hours=2))
        # The topic pair is not counted as a channel subscriber.
        assert plain.audience(_ADMIN, EMAIL, ["ann"]) == {"ann"}
        subs = {s.channel.key for s in with_topics.subscriptions(_ADMIN, "ann")}
        assert subs == {"email", "email/receipts"}

    @pytest.mark.parametrize(
        ("scope", "message", "expected"),
        [
            pytest.param("group", {}, {"sms", "mms", "rcs"}, id="group"),
            pytest.param("channel", {}, {"sms"}, id="channel"),
            pytest.param(
                "topic", {"topic": "promotions"},
                {"sms/promotions", "mms/promotions", "rcs/promotions"}, id="topic",
            ),
            pytest.param("topic", {}, {"sms", "mms", "rcs"}, id="topic-unknown-falls-back"),
            pytest.param(
                "sender", {"recipient": "+1 415 555 0199"},
                {"sms/promotions", "mms/promotions", "rcs/promotions"}, id="sender",
            ),
            pytest.param(
                "sender", {"recipient": "+14155550111"}, {"sms", "mms", "rcs"},
                id="sender-unmapped-falls-back",
            ),
            pytest.param(
                "revoke_all", {}, {"sms", "mms", "rcs", "whatsapp", "email", "voice", "push"},
                id="revoke_all",
            ),
        ],
    )
    def test_an_sms_stop_changes_exactly_the_pairs_of_its_scope(
        self,
        store: Store,
        clock: FakeClock,
        scope: str,
        message: dict[str, str],
        expected: set[str],
    ) -> None:
        """Ann is subscribed to SMS, MMS, WhatsApp and email, and to promotions and alerts on
        SMS and MMS: a STOP to the SMS number unsubscribes the pairs of the account's scope and
        nothing else (docs/topics.md, "Opt-out scopes")."""
        service = self._scoped(store, clock, scope)
        before = self._states(service)
        result = service.handle_inbound(
            InboundMessage(
                _ACCOUNT, SMS, "+14155550100", "STOP", "stop-1", clock.now(), **message
            )
        )
        assert {ch.key for _, ch in result.changed} == expected
        # The scope that chose the pairs is on the result (the group where none was found).
        fell_back = expected == {"sms", "mms", "rcs"}
        assert result.scope is (OptOutScope.GROUP if fell_back else OptOutScope(scope))
        after = self._states(service)
        moved = {key for key, state in after.items() if state != before.get(key)}
        assert moved == expected
        assert all(after[key] == "unsubscribed" for key in expected)
        sendable = {
            topic: service.can_send(_ADMIN, "ann", SMS, topic=topic)
            for topic in ("promotions", "alerts")
        }
        stopped_channel = "sms" in expected
        assert sendable == {
            "promotions": not stopped_channel and "sms/promotions" not in expected,
            "alerts": not stopped_channel,
        }
        check_replay(store, _ACCOUNT)

    def test_a_scheduled_scope_is_decided_by_when_the_stop_was_received(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A ScopeSchedule switches the scope at its date: a STOP received before it (delivered
        late, after the switch) gets the old scope, one received after it the new one."""
        switch = clock.now() + timedelta(days=1)
        schedule = ScopeSchedule(until=switch, before="group", after="revoke_all")
        service = self._scoped(store, clock, schedule)
        clock.advance(timedelta(days=2))
        late = service.handle_inbound(
            InboundMessage(
                _ACCOUNT, SMS, "+14155550100", "STOP", "old-stop",
                switch - timedelta(minutes=5),
            )
        )
        assert {ch.key for _, ch in late.changed} == {"sms", "mms", "rcs"}
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "cy", phone="+14155550102")])
        service.opt_in(_ADMIN, ["cy"], [SMS, WHATSAPP], evidence=_EVIDENCE)
        fresh = service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, "+14155550102", "STOP", "new-stop", clock.now())
        )
        assert {ch.key for _, ch in fresh.changed} >= {"sms", "whatsapp", "email", "push"}
        assert schedule.at(switch) is OptOutScope.REVOKE_ALL
        assert schedule.at(switch - timedelta(microseconds=1)) is OptOutScope.GROUP

    def _scoped(
        self, store: Store, clock: FakeClock, scope: str | ScopeSchedule
    ) -> ConsentService:
        settings = AccountSettings(
            inbound=InboundSettings(scope=scope, senders={"+14155550199": "promotions"})
        )
        service = ConsentService(
            store,
            clock=clock,
            settings=settings,
            topics=[
                Topic("promotions", "Offers", MessageClass.MARKETING),
                Topic("alerts", "Alerts", MessageClass.INFORMATIONAL, TopicDefault.OPT_OUT),
            ],
        )
        service.upsert_contacts(
            _ADMIN, [Contact(_ACCOUNT, "ann", phone="+14155550100", email="ann@example.com")]
        )
        service.opt_in(_ADMIN, ["ann"], [SMS, MMS, WHATSAPP, EMAIL], evidence=_EVIDENCE)
        service.opt_in(_ADMIN, ["ann"], [SMS, MMS], evidence=_EVIDENCE, topic="promotions")
        service.opt_in(_ADMIN, ["ann"], [SMS, MMS], evidence=_EVIDENCE, topic="alerts")
        clock.advance(timedelta(minutes=1))
        return service

    @staticmethod
    def _states(service: ConsentService) -> dict[str, str]:
        return {s.channel.key: s.state.value for s in service.subscriptions(_ADMIN, "ann")}

    def test_revoke_all_lets_exempt_topics_go_on_until_another_opt_out(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A STOP under revoke_all unsubscribes every channel, recorded as the contact's own
        request (origin REVOKE_ALL): topics of an exempt class keep going on every channel, no
        other send does; a later plain STOP (here after the scope's date) ends the exemption on
        its channels, and MISTAKEN_UNSUBSCRIBE never undoes it."""
        switch = clock.now() + timedelta(days=1)
        service = ConsentService(
            store,
            clock=clock,
            settings=AccountSettings(
                inbound=InboundSettings(
                    scope=ScopeSchedule(until=switch, before="revoke_all", after="group")
                )
            ),
            topics=[
                Topic("promotions", "Offers", MessageClass.MARKETING),
                Topic("alerts", "Alerts", MessageClass.INFORMATIONAL, TopicDefault.OPT_OUT),
            ],
            revoke_all_exempt=[MessageClass.INFORMATIONAL],
        )
        service.upsert_contacts(
            _ADMIN, [Contact(_ACCOUNT, "ann", phone="+14155550100", email="ann@example.com")]
        )
        service.opt_in(_ADMIN, ["ann"], [SMS, WHATSAPP, EMAIL], evidence=_EVIDENCE)
        service.opt_in(_ADMIN, ["ann"], [SMS], evidence=_EVIDENCE, topic="promotions")
        clock.advance(timedelta(minutes=1))
        stop = service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, "+14155550100", "STOP", "revoke-1", clock.now())
        )
        assert {"sms", "whatsapp", "email"} <= {ch.key for _, ch in stop.changed}
        sub = service.subscription(_ADMIN, "ann", WHATSAPP)
        assert sub is not None
        assert sub.opted_out_by == {OptOutOrigin.REVOKE_ALL}
        for ch in (SMS, WHATSAPP, EMAIL):
            assert not service.can_send(_ADMIN, "ann", ch)
            assert service.can_send(_ADMIN, "ann", ch, topic="alerts")
            assert not service.can_send(_ADMIN, "ann", ch, topic="promotions")
            assert service.audience(_ADMIN, ch, ["ann"], topic="alerts") == {"ann"}
        with pytest.raises(JustificationError, match="CONTACT_REQUEST"):
            service.resubscribe(
                _ADMIN, ["ann"], [SMS],
                justification=Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "oops"),
            )
        clock.advance(timedelta(days=2))
        service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, "+14155550100", "STOP", "plain-1", clock.now())
        )
        assert not service.can_send(_ADMIN, "ann", SMS, topic="alerts")
        assert service.audience(_ADMIN, SMS, ["ann"], topic="alerts") == set()
        assert service.can_send(_ADMIN, "ann", WHATSAPP, topic="alerts")  # not in SMS's group
        service.unsubscribe(_ADMIN, ["ann"], [EMAIL])  # an admin's opt-out ends it too
        assert not service.can_send(_ADMIN, "ann", EMAIL, topic="alerts")
        check_replay(store, _ACCOUNT)

    def test_an_opt_out_before_any_consent_is_no_consent_to_the_channel(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A channel pair unsubscribed before it was ever subscribed (an admin's unsubscribe, a
        STOP under revoke_all) answers as never subscribed (row 10): no class survives it, no
        revoke-all exemption applies, and a topic opt-in still needs the channel first."""
        service = ConsentService(
            store,
            clock=clock,
            topics=[
                Topic("receipts", "Receipts", MessageClass.TRANSACTIONAL, TopicDefault.OPT_OUT),
                Topic("alerts", "Alerts", MessageClass.INFORMATIONAL, TopicDefault.OPT_OUT),
            ],
            surviving_classes={EMAIL: {MessageClass.TRANSACTIONAL}},
            revoke_all_exempt=[MessageClass.INFORMATIONAL],
            settings=AccountSettings(inbound=InboundSettings(scope="revoke_all")),
        )
        service.upsert_contacts(
            _ADMIN, [Contact(_ACCOUNT, "ann", phone="+14155550100", email="ann@example.com")]
        )
        service.unsubscribe(_ADMIN, ["ann"], [EMAIL])
        assert not service.can_send(_ADMIN, "ann", EMAIL, topic="receipts")
        assert service.audience(_ADMIN, EMAIL, ["ann"], topic="receipts") == set()
        with pytest.raises(ChannelConsentRequiredError):
            service.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE, topic="receipts")
        service.opt_in(_ADMIN, ["ann"], [SMS], evidence=_EVIDENCE)
        clock.advance(timedelta(minutes=1))
        service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, "+14155550100", "STOP", "revoke-2", clock.now())
        )
        assert service.can_send(_ADMIN, "ann", SMS, topic="alerts")  # SMS had consent
        for ch in (WHATSAPP, EMAIL, Channel("voice")):  # these never had any
            assert not service.can_send(_ADMIN, "ann", ch, topic="alerts")
            assert service.audience(_ADMIN, ch, ["ann"], topic="alerts") == set()

    def test_a_complaint_stops_the_channel_whatever_the_scope(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A spam complaint under the topic scope (with the topic given) still unsubscribes the
        channel group: a complaint stops everything on the channel."""
        service = ConsentService(
            store,
            clock=clock,
            topics=[Topic("promotions", "Offers", MessageClass.MARKETING)],
            settings=AccountSettings(inbound=InboundSettings(scope="topic")),
        )
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "ann", email="ann@example.com")])
        service.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE)
        service.opt_in(_ADMIN, ["ann"], [EMAIL], evidence=_EVIDENCE, topic="promotions")
        clock.advance(timedelta(minutes=1))
        result = service.handle_inbound(
            InboundMessage(
                _ACCOUNT, EMAIL, "ann@example.com", "", "spam-1", clock.now(),
                provider="sendgrid", verdict="complaint", source="carrier", topic="promotions",
            )
        )
        assert [ch.key for ch in result.channels] == ["email"]
        assert not service.can_send(_ADMIN, "ann", EMAIL)

    def test_start_undoes_a_topic_stop_of_a_topic_in_by_default(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Under the topic scope, STOP to an opt-out-default topic the contact was receiving, then
        START, puts them back (their own word both times); for a contact who never subscribed to
        the channel START creates nothing."""
        service = ConsentService(
            store,
            clock=clock,
            topics=[Topic("alerts", "Alerts", MessageClass.INFORMATIONAL, TopicDefault.OPT_OUT)],
            settings=AccountSettings(inbound=InboundSettings(scope="topic")),
        )
        service.upsert_contacts(
            _ADMIN,
            [
                Contact(_ACCOUNT, "ann", phone="+14155550100"),
                Contact(_ACCOUNT, "bob", phone="+14155550101"),
            ],
        )
        service.opt_in(_ADMIN, ["ann"], [SMS], evidence=_EVIDENCE)
        assert service.can_send(_ADMIN, "ann", SMS, topic="alerts")
        for sender, cid in (("+14155550100", "ann"), ("+14155550101", "bob")):
            clock.advance(timedelta(minutes=1))
            service.handle_inbound(
                InboundMessage(
                    _ACCOUNT, SMS, sender, "STOP", f"stop-{cid}", clock.now(), topic="alerts"
                )
            )
            assert not service.can_send(_ADMIN, cid, SMS, topic="alerts")
            clock.advance(timedelta(minutes=1))
            service.handle_inbound(
                InboundMessage(
                    _ACCOUNT, SMS, sender, "START", f"start-{cid}", clock.now(), topic="alerts"
                )
            )
        assert service.can_send(_ADMIN, "ann", SMS, topic="alerts")
        assert not service.can_send(_ADMIN, "bob", SMS, topic="alerts")
        assert service.state(_ADMIN, "bob", SMS) is SubscriptionState.NEVER_SUBSCRIBED
        check_replay(store, _ACCOUNT)
