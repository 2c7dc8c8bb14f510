"""Opt-out scopes: the settings, the schedule and the inbound message's topic and recipient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consentkit import (
    SMS,
    Actor,
    ConflictError,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    MessageClass,
    Topic,
    ValidationError,
)
from consentkit.inbound import InboundMessage, InboundSettings
from consentkit.scopes import OptOutScope, ScopeSchedule
from consentkit.settings import AccountSettings
from consentkit.testing import FakeClock

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ADMIN = Actor.admin("acme", "alice")


def test_an_inbound_message_carries_a_topic_and_a_recipient() -> None:
    message = InboundMessage(
        "acme", SMS, "+1 415 555 0100", "STOP", "m1", T0, topic="promotions",
        recipient="+1 415 555 0199",
    )
    assert (message.topic, message.recipient) == ("promotions", "+14155550199")
    with pytest.raises(ValidationError, match="topic"):
        InboundMessage("acme", SMS, "+14155550100", "STOP", "m1", T0, topic="Promo!")
    # A short code or a messaging service's id is kept as given.
    short = InboundMessage("acme", SMS, "+14155550100", "STOP", "m1", T0, recipient=" 72345 ")
    assert short.recipient == "72345"
    with pytest.raises(ValidationError, match="recipient"):
        InboundMessage("acme", SMS, "+14155550100", "STOP", "m1", T0, recipient="  ")
    with pytest.raises(ValidationError, match="recipient"):
        InboundMessage("acme", SMS, "+14155550100", "STOP", "m1", T0, recipient=5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="topic channel"):
        InboundMessage("acme", "sms/promotions", "+14155550100", "STOP", "m1", T0)


def test_scope_settings_are_validated() -> None:
    assert InboundSettings(scope="revoke_all").scope_at(T0) is OptOutScope.REVOKE_ALL
    assert InboundSettings().scope_at(T0) is OptOutScope.GROUP
    with pytest.raises(ValidationError, match="scope"):
        InboundSettings(scope="everything")
    with pytest.raises(ValidationError, match="until"):
        ScopeSchedule(until=datetime(2027, 1, 31), before="group", after="revoke_all")
    with pytest.raises(ValidationError, match="scope"):
        ScopeSchedule(until=T0, before="group", after="all")
    with pytest.raises(ValidationError, match="senders"):
        InboundSettings(senders={"+15550100": "Promo!"})
    with pytest.raises(ValidationError, match="senders"):
        InboundSettings(senders=["+15550100"])
    schedule = ScopeSchedule(until=T0, before="group", after="revoke_all")
    assert InboundSettings(scope=schedule).scope_at(T0 - timedelta(seconds=1)) is OptOutScope.GROUP
    with pytest.raises(ValidationError, match="received_at"):
        schedule.at(datetime(2026, 12, 1))


def _service(scope: str) -> ConsentService:
    service = ConsentService(
        InMemoryStore(),
        clock=FakeClock(T0, tick=timedelta(seconds=1)),
        topics=[Topic("promotions", "Offers", MessageClass.MARKETING)],
        settings=AccountSettings(inbound=InboundSettings(scope=scope)),
    )
    service.upsert_contacts(ADMIN, [Contact("acme", "ann", phone="+14155550100")])
    service.opt_in(ADMIN, ["ann"], [SMS], evidence=Evidence("web", "yes", "v1"))
    service.opt_in(ADMIN, ["ann"], [SMS], evidence=Evidence("web", "yes", "v1"), topic="promotions")
    return service


def test_a_topic_nobody_declared_stops_the_channel_group() -> None:
    """The scope decides what a STOP reaches, never whether it is honoured: a message naming an
    undeclared topic unsubscribes the channel group (the safe side)."""
    service = _service("topic")
    result = service.handle_inbound(
        InboundMessage("acme", SMS, "+14155550100", "STOP", "m1", T0, topic="newsletter")
    )
    assert {ch.key for _, ch in result.changed} == {"sms", "mms", "rcs"}
    assert not service.can_send(ADMIN, "ann", SMS)


def test_a_redelivery_with_another_topic_is_a_conflict() -> None:
    service = _service("topic")
    first = InboundMessage("acme", SMS, "+14155550100", "STOP", "m1", T0, topic="promotions")
    assert service.handle_inbound(first).changed
    assert service.handle_inbound(first).replayed
    with pytest.raises(ConflictError, match="another text"):
        service.handle_inbound(
            InboundMessage("acme", SMS, "+14155550100", "STOP", "m1", T0, topic=None)
        )
    assert service.can_send(ADMIN, "ann", SMS)
    assert not service.can_send(ADMIN, "ann", SMS, topic="promotions")


def test_a_topic_stop_from_an_unknown_number_suppresses_only_the_topic() -> None:
    """The address's last word is kept for the pairs the scope covered: a contact who later
    takes the number is unsubscribed from the topic, not from the channel."""
    service = _service("topic")
    stranger = "+14155550177"
    result = service.handle_inbound(
        InboundMessage("acme", SMS, stranger, "STOP", "m9", T0, topic="promotions")
    )
    assert result.changed == ()
    joined = service.upsert_contacts(ADMIN, [Contact("acme", "new", phone=stranger)])
    assert {p.channel.key for p in joined.suppressed} == {
        "sms/promotions", "mms/promotions", "rcs/promotions"
    }
    service.opt_in(ADMIN, ["new"], [SMS], evidence=Evidence("web", "yes", "v1"))
    assert service.can_send(ADMIN, "new", SMS)
    assert not service.can_send(ADMIN, "new", SMS, topic="promotions")


def test_senders_keys_match_as_recipients_are_normalised_and_name_declared_topics() -> None:
    """A senders key written in any phone format matches the recipient; a key mapped to a topic
    nobody declared is refused when the service is built, not silently widened to the group."""
    settings = InboundSettings(scope="sender", senders={"+1 (415) 555-0199": "promotions"})
    assert settings.senders == {"+14155550199": "promotions"}
    service = ConsentService(
        InMemoryStore(),
        clock=FakeClock(T0, tick=timedelta(seconds=1)),
        topics=[Topic("promotions", "Offers", MessageClass.MARKETING)],
        settings=AccountSettings(inbound=settings),
    )
    service.upsert_contacts(ADMIN, [Contact("acme", "ann", phone="+14155550100")])
    service.opt_in(ADMIN, ["ann"], [SMS], evidence=Evidence("web", "yes", "v1"))
    result = service.handle_inbound(
        InboundMessage(
            "acme", SMS, "+14155550100", "STOP", "m1", T0 + timedelta(minutes=1),
            recipient="+14155550199",
        )
    )
    covered = [ch.key for ch in result.channels]
    assert covered == ["sms/promotions", "mms/promotions", "rcs/promotions"]
    with pytest.raises(ValidationError, match="not a declared topic"):
        ConsentService(
            InMemoryStore(),
            topics=[Topic("promotions", "Offers", MessageClass.MARKETING)],
            settings=AccountSettings(
                inbound=InboundSettings(scope="sender", senders={"+15550100": "promotion"})
            ),
        )
