"""The topic declarations, topic channels and the survival rule (pure domain, no store)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentkit import (
    EMAIL,
    SMS,
    WHATSAPP,
    AddressKind,
    Channel,
    ConsentService,
    InMemoryStore,
    MessageClass,
    Topic,
    TopicDefault,
    UnknownTopicError,
    ValidationError,
    channel,
)
from consentkit.channels import ChannelRegistry
from consentkit.topics import TopicRules

PROMOTIONS = Topic("promotions", "Offers and sales", MessageClass.MARKETING)
RECEIPTS = Topic("receipts", "Your receipts", "transactional", "opt_out")


def test_a_topic_channel_is_a_channel_with_the_topic_in_its_key() -> None:
    promo = SMS.with_topic("promotions")
    assert promo == Channel("sms/promotions") == channel("SMS/Promotions")
    assert (promo.key, promo.topic, promo.base) == ("sms/promotions", "promotions", SMS)
    assert promo.address_kind is AddressKind.PHONE
    assert Channel("telegram/news").address_kind is AddressKind.HANDLE
    assert (SMS.topic, SMS.base) == (None, SMS)
    assert promo != SMS
    with pytest.raises(ValidationError, match="topic channel already"):
        promo.with_topic("more")
    for bad in ("Promotions", "", "a/b", "x" * 33, "1st"):
        with pytest.raises(ValidationError, match="topic"):
            SMS.with_topic(bad)
    for key in ("sms/", "/promo", "sms/promo/x", "sms//promo"):
        with pytest.raises(ValidationError, match="channel"):
            Channel(key)


def test_topics_are_validated_when_declared() -> None:
    assert (RECEIPTS.message_class, RECEIPTS.default) == (
        MessageClass.TRANSACTIONAL, TopicDefault.OPT_OUT
    )
    assert PROMOTIONS.default is TopicDefault.OPT_IN
    with pytest.raises(ValidationError, match=r"topic\.key"):
        Topic("Promo!", "x", MessageClass.MARKETING)
    with pytest.raises(ValidationError, match=r"topic\.title"):
        Topic("promo", " ", MessageClass.MARKETING)
    with pytest.raises(ValidationError, match=r"topic\.message_class"):
        Topic("promo", "Promo", "spam")
    with pytest.raises(ValidationError, match=r"topic\.default"):
        Topic("promo", "Promo", MessageClass.MARKETING, default="maybe")
    with pytest.raises(ValidationError, match="declared twice"):
        TopicRules([PROMOTIONS, PROMOTIONS])
    with pytest.raises(ValidationError, match="Topic objects"):
        TopicRules(["promotions"])
    with pytest.raises(ValidationError, match="iterable of Topic"):
        TopicRules(PROMOTIONS)


def test_the_survival_rule_is_per_channel_and_never_for_marketing() -> None:
    rules = TopicRules([PROMOTIONS, RECEIPTS], {EMAIL: {"transactional"}})
    assert rules.survives(EMAIL, RECEIPTS)
    assert rules.survives(EMAIL.with_topic("receipts"), RECEIPTS)
    assert not rules.survives(SMS, RECEIPTS)
    assert not rules.survives(EMAIL, PROMOTIONS)
    with pytest.raises(ValidationError, match="marketing messages never survive"):
        TopicRules([PROMOTIONS], {EMAIL: {MessageClass.MARKETING}})
    with pytest.raises(ValidationError, match="names a topic"):
        TopicRules([RECEIPTS], {"email/receipts": {"transactional"}})
    with pytest.raises(ValidationError, match="surviving_classes"):
        TopicRules([RECEIPTS], {EMAIL: {"receipt"}})
    with pytest.raises(ValidationError, match="surviving_classes"):
        ConsentService(InMemoryStore(), surviving_classes=[EMAIL])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not a known channel"):
        ConsentService(InMemoryStore(), surviving_classes={"emial": {"transactional"}})


def test_the_registry_resolves_declared_topics_only() -> None:
    rules = TopicRules([PROMOTIONS])
    registry = ChannelRegistry(["telegram"])
    assert registry.resolve_subject("sms", rules) is SMS
    assert registry.resolve_subject("sms", rules, topic="promotions") == SMS.with_topic(
        "promotions"
    )
    assert registry.resolve_subject(Channel("telegram/promotions"), rules).base == Channel(
        "telegram"
    )
    with pytest.raises(UnknownTopicError) as raised:
        registry.resolve_subject("whatsapp/promotion", rules)
    assert raised.value.suggestion == "promotions"
    assert raised.value.known == ("promotions",)
    assert "did you mean 'promotions'" in str(raised.value)
    with pytest.raises(ValidationError, match="not a known channel"):
        registry.resolve_subject("signal/promotions", rules)
    with pytest.raises(ValidationError, match="topic channel"):
        registry.resolve("sms/promotions")
    with pytest.raises(UnknownTopicError, match="Declared topics: none"):
        registry.resolve_subject(WHATSAPP, TopicRules(), topic="promotions")


@given(st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True))
def test_any_topic_key_round_trips_through_its_channel_key(topic: str) -> None:
    made = EMAIL.with_topic(topic)
    assert channel(made.key) == made
    assert (made.base, made.topic) == (EMAIL, topic)


def test_revoke_all_exemptions_are_validated() -> None:
    rules = TopicRules([RECEIPTS], revoke_all_exempt=["informational"])
    assert rules.revoke_all_exempt == {MessageClass.INFORMATIONAL}
    assert rules.may_survive(SMS, Topic("alerts", "Alerts", "informational"))
    assert not rules.may_survive(SMS, PROMOTIONS)
    with pytest.raises(ValidationError, match="never exempt"):
        TopicRules([PROMOTIONS], revoke_all_exempt=[MessageClass.MARKETING])
    with pytest.raises(ValidationError, match="revoke_all_exempt"):
        TopicRules([PROMOTIONS], revoke_all_exempt="informational")
    with pytest.raises(ValidationError, match="revoke_all_exempt"):
        ConsentService(InMemoryStore(), revoke_all_exempt=["newsletter"])
