"""The record of sends of the conformance suite (``record_sent`` and the ``topic`` opt-out
scope, docs/topics.md), mixed into :class:`~consentkit.testing.conformance.StoreConformance`.

A store without :class:`~consentkit.storage.base.SentLog` is held to the fallback: ``record_sent``
raises ``StorageError`` and a STOP that names no topic covers the channel group.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from consentkit.channels import MMS, SMS, WHATSAPP, Channel
from consentkit.errors import NotAuthorizedError, StorageError, ValidationError
from consentkit.inbound import InboundMessage, InboundSettings
from consentkit.model import Actor, Contact, Evidence
from consentkit.scopes import OptOutScope
from consentkit.sends import SentMessage
from consentkit.service import ConsentService
from consentkit.settings import AccountSettings
from consentkit.storage.base import SentLog
from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import check_replay
from consentkit.topics import MessageClass, Topic, UnknownTopicError

if TYPE_CHECKING:
    from consentkit.storage.base import Store

_ACCOUNT = "acme"
_ADMIN = Actor.admin(_ACCOUNT, "alice")
_SYSTEM = Actor.system(_ACCOUNT, "sender")
_PHONE = "+14155550100"
_EVIDENCE = Evidence("web_form", "Yes, text me offers and news.", "v1")
_GROUP = {"sms", "mms", "rcs"}
_PROMOTIONS = {"sms/promotions", "mms/promotions", "rcs/promotions"}
_NEWS = {"sms/news", "mms/news", "rcs/news"}


class SendsContract:
    """What was sent decides the topic a STOP without one answers, under the topic scope."""

    def _sends_service(
        self, store: Store, clock: FakeClock, scope: OptOutScope = OptOutScope.TOPIC
    ) -> ConsentService:
        service = ConsentService(
            store,
            clock=clock,
            settings=AccountSettings(inbound=InboundSettings(scope=scope)),
            topics=[
                Topic("promotions", "Offers", MessageClass.MARKETING),
                Topic("news", "News", MessageClass.INFORMATIONAL),
            ],
        )
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "ann", phone=_PHONE)])
        service.opt_in(_ADMIN, ["ann"], [SMS, MMS], evidence=_EVIDENCE)
        for topic in ("promotions", "news"):
            service.opt_in(_ADMIN, ["ann"], [SMS, MMS], evidence=_EVIDENCE, topic=topic)
        clock.advance(timedelta(minutes=5))
        return service

    @staticmethod
    def _sends_stop(
        service: ConsentService, clock: FakeClock, message_id: str, **extra: object
    ) -> set[str]:
        received = extra.pop("received_at", clock.now())
        result = service.handle_inbound(
            InboundMessage(
                _ACCOUNT, SMS, _PHONE, "STOP", message_id, received, **extra  # type: ignore[arg-type]
            )
        )
        changed = {ch.key for _, ch in result.changed}
        # The result records the scope that chose the pairs: the group where none was found.
        assert result.scope is (
            OptOutScope.GROUP
            if changed == _GROUP or service.settings_for(_ACCOUNT).inbound.scope
            is OptOutScope.GROUP
            else OptOutScope.TOPIC
        )
        return changed

    def _needs_log(self, store: Store, service: ConsentService, clock: FakeClock) -> None:
        if not isinstance(store, SentLog):
            with pytest.raises(StorageError, match="SentLog"):
                service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, clock.now()))
            assert self._sends_stop(service, clock, "no-log") == _GROUP
            pytest.skip(f"{type(store).__name__} keeps no record of sends (checked the fallback)")

    def test_a_stop_answers_the_topic_of_the_last_message_sent(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A STOP that names no topic unsubscribes the topic of the last message sent to the
        sender on the channel (on every channel of the group), and nothing else."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        sent = clock.now() - timedelta(minutes=2)
        assert service.record_sent(_SYSTEM, SentMessage("sms/news", _PHONE, sent)) == 1
        service.record_sent(_SYSTEM, [SentMessage(SMS, "+1 (415) 555-0100", sent, "promotions")])
        assert self._sends_stop(service, clock, "stop-1") == _PROMOTIONS
        assert service.can_send(_ADMIN, "ann", SMS)
        assert service.can_send(_ADMIN, "ann", SMS, topic="news")
        assert not service.can_send(_ADMIN, "ann", MMS, topic="promotions")
        check_replay(store, _ACCOUNT)

    @pytest.mark.parametrize(
        "case",
        [
            "nothing-sent",
            "sent-after-the-stop",
            "sent-at-the-same-instant",
            "no-topic",
            "other-channel",
            "tied-topics",
        ],
    )
    def test_a_stop_without_a_known_topic_covers_the_group(
        self, store: Store, clock: FakeClock, case: str
    ) -> None:
        """Nothing recorded, a last message sent at or after the STOP was received (it cannot be
        the one answered), a last message of no topic, a message on a channel outside the
        reply's group, two last messages of different topics at one instant: the group."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        earlier = clock.now() - timedelta(minutes=3)
        if case == "sent-after-the-stop":
            service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, earlier, "news"))
            sent = clock.now()
            service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, sent, "promotions"))
            received = sent - timedelta(microseconds=1)
            assert self._sends_stop(service, clock, "late", received_at=received) == _GROUP
            return
        if case == "no-topic":
            service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, earlier, "promotions"))
            service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, earlier + timedelta(seconds=1)))
        elif case == "other-channel":  # WhatsApp is not in the SMS group
            service.record_sent(_ADMIN, SentMessage(WHATSAPP, _PHONE, earlier, "promotions"))
        elif case == "tied-topics":  # two messages at one instant: which one was answered?
            service.record_sent(
                _ADMIN,
                [
                    SentMessage(SMS, _PHONE, earlier, "promotions", sender="+14155550001"),
                    SentMessage(SMS, _PHONE, earlier, "news", sender="+14155550002"),
                ],
            )
        elif case == "sent-at-the-same-instant":
            sent = clock.now()
            service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, sent, "promotions"))
            assert self._sends_stop(service, clock, "same", received_at=sent) == _GROUP
            return
        assert self._sends_stop(service, clock, "stop-2") == _GROUP

    def test_a_late_record_never_replaces_a_later_one(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Records arrive out of order (a send pipeline's retries): the one sent last is kept,
        in one call or over several."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        t = clock.now() - timedelta(minutes=4)
        service.record_sent(
            _ADMIN,
            [
                SentMessage(SMS, _PHONE, t + timedelta(minutes=2), "news"),
                SentMessage(SMS, _PHONE, t, "promotions"),
            ],
        )
        later = t + timedelta(minutes=1)
        service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, later, "promotions"))
        assert self._sends_stop(service, clock, "stop-3") == _NEWS

    def test_the_sender_the_reply_went_to_picks_its_message(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Two numbers sent to the contact: a STOP naming no recipient answers the latest of
        them, a STOP to one answers that number's last message, and one to a number that sent
        nothing recorded covers the group."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        t = clock.now() - timedelta(minutes=4)
        service.record_sent(
            _ADMIN,
            [
                SentMessage(SMS, _PHONE, t, "promotions", sender="+1 415 555 0199"),
                SentMessage(SMS, _PHONE, t + timedelta(minutes=1), "news", sender="12345"),
            ],
        )
        assert self._sends_stop(service, clock, "to-any") == _NEWS
        stop = self._sends_stop
        assert stop(service, clock, "to-long-code", recipient="+14155550199") == _PROMOTIONS
        assert stop(service, clock, "to-other", recipient="+14155550111") == _GROUP

    def test_a_message_on_another_channel_of_the_group_is_answered(
        self, store: Store, clock: FakeClock
    ) -> None:
        """An MMS promotion, then an SMS STOP: the same thread (the group's channels share the
        number); a later SMS receipt of no topic makes the STOP cover the group."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        t = clock.now() - timedelta(minutes=3)
        service.record_sent(_ADMIN, SentMessage(MMS, _PHONE, t, "promotions"))
        assert self._sends_stop(service, clock, "after-mms") == _PROMOTIONS
        service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, t + timedelta(minutes=1)))
        assert self._sends_stop(service, clock, "after-receipt") == _GROUP

    def test_senders_match_whatever_their_spelling(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A short code with spaces, an email sender in another case: the same sender as the
        reply's recipient, so a receipt of no topic from it is the message answered."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        t = clock.now() - timedelta(minutes=3)
        service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, t, "promotions"))
        receipt = SentMessage(SMS, _PHONE, t + timedelta(minutes=1), sender="12 345")
        service.record_sent(_ADMIN, receipt)
        assert self._sends_stop(service, clock, "to-code", recipient="12345") == _GROUP
        assert SentMessage(SMS, _PHONE, t, sender="News@Acme.COM").sender == "news@acme.com"

    def test_a_record_of_no_sender_answers_a_reply_to_any_number(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A host that records sends without their sender still gets the topic scope when the
        webhook names the number the reply went to (Twilio's ``To`` always does)."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, clock.now(), "news"))
        assert self._sends_stop(service, clock, "to-twilio", recipient="+14155550199") == _NEWS

    def test_record_sent_checks_who_and_what(self, store: Store, clock: FakeClock) -> None:
        """Only admins and the system record sends (what was sent decides how far a STOP
        reaches); topics must be declared, channels known, values of the right type; a refused
        call records nothing."""
        service = self._sends_service(store, clock)
        now = clock.now()
        for actor in (Actor.member(_ACCOUNT, "mo"), Actor.contact(_ACCOUNT, "ann")):
            with pytest.raises(NotAuthorizedError):
                service.record_sent(actor, SentMessage(SMS, _PHONE, now, "promotions"))
        with pytest.raises(UnknownTopicError):
            service.record_sent(
                _ADMIN,
                [SentMessage(SMS, _PHONE, now, "promotions"), SentMessage(SMS, _PHONE, now, "x")],
            )
        with pytest.raises(ValidationError, match="telegram"):
            service.record_sent(_ADMIN, SentMessage(Channel("telegram"), "ann-handle", now))
        with pytest.raises(ValidationError, match="messages"):
            service.record_sent(_ADMIN, ["not a message"])  # type: ignore[list-item]
        with pytest.raises(ValidationError, match="messages"):
            service.record_sent(_ADMIN, None)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="sent_at"):
            SentMessage(SMS, _PHONE, datetime(2026, 1, 1))
        with pytest.raises(ValidationError, match="to"):
            SentMessage(SMS, "not a number", now)
        with pytest.raises(ValidationError, match="topic"):
            SentMessage("sms/news", _PHONE, now, "promotions")
        with pytest.raises(ValidationError, match="sender"):
            SentMessage(SMS, _PHONE, now, sender="  ")
        if isinstance(store, SentLog):
            # Nothing of the refused calls was kept: the STOP covers the group.
            assert self._sends_stop(service, clock, "after-refusals") == _GROUP

    def test_other_scopes_ignore_what_was_sent(self, store: Store, clock: FakeClock) -> None:
        """Only the topic scope reads the record: under the group scope a STOP after a
        promotion covers the group."""
        service = self._sends_service(store, clock, OptOutScope.GROUP)
        self._needs_log(store, service, clock)
        service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, clock.now(), "promotions"))
        assert self._sends_stop(service, clock, "group-stop") == _GROUP

    def test_a_redelivered_stop_returns_its_stored_result(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A STOP redelivered after another message was sent is still the same message: it
        returns the first delivery's result and changes nothing."""
        service = self._sends_service(store, clock)
        self._needs_log(store, service, clock)
        service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, clock.now(), "promotions"))
        first = service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, _PHONE, "STOP", "dup", clock.now())
        )
        clock.advance(timedelta(minutes=1))
        service.record_sent(_ADMIN, SentMessage(SMS, _PHONE, clock.now(), "news"))
        again = service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, _PHONE, "STOP", "dup", first.received_at)
        )
        assert again.replayed
        assert again == first
        assert {ch.key for _, ch in first.changed} == _PROMOTIONS
        assert service.can_send(_ADMIN, "ann", SMS, topic="news")

