"""SendGrid Event Webhook: unsubscribes and spam reports; resubscribes and other events skipped;
a batch read event by event."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import EMAIL, PayloadError, Source, SubscriptionState
from consentkit.inbound import InboundMessage, InboundOutcome, ProviderVerdict
from consentkit.providers import ParsedBatch, sendgrid
from tests.providers._support import (
    ACCOUNT,
    ADMIN,
    Recorder,
    ServiceFactory,
    check_batch,
    check_complaint,
    check_opt_out,
    subscribed,
    unknown,
)

_COMMON = {"email": "example@test.com", "timestamp": 1513299569,
           "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "category": "cat facts",
           "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id"}
_AGENT = {"useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET "
                       "CLR 2.0.50727)", "ip": "255.255.255.255"}
# The example of the Event Webhook reference: one event of each type.
EVENTS: list[dict[str, Any]] = [
    {**_COMMON, "event": "processed"},
    {**_COMMON, "event": "deferred", "response": "400 try again later", "attempt": "5"},
    {**_COMMON, "event": "delivered", "response": "250 OK"},
    {**_COMMON, "event": "open", **_AGENT},
    {**_COMMON, "event": "click", **_AGENT, "url": "http://www.sendgrid.com/"},
    {**_COMMON, "event": "bounce", "reason": "500 unknown recipient", "status": "5.0.0"},
    {**_COMMON, "event": "dropped", "reason": "Bounced Address", "status": "5.0.0"},
    {**_COMMON, "event": "spamreport"},
    {**_COMMON, "event": "unsubscribe"},
    {**_COMMON, "event": "group_unsubscribe", **_AGENT, "url": "http://www.sendgrid.com/",
     "asm_group_id": 10},
    {**_COMMON, "event": "group_resubscribe", **_AGENT, "url": "http://www.sendgrid.com/",
     "asm_group_id": 10},
]
AT = datetime.fromtimestamp(1513299569, UTC)


def parsed(events: list[dict[str, Any]]) -> tuple[InboundMessage, ...]:
    return sendgrid.parse(json.dumps(events).encode(), ACCOUNT)


def test_the_documented_batch_gives_its_three_consent_events() -> None:
    """Of the reference's eleven events, spamreport (a complaint), unsubscribe and
    group_unsubscribe are consent events, in order; deliveries, opens, bounces and the
    group_resubscribe are not."""
    seen = Recorder()
    found = sendgrid.parse(json.dumps(EVENTS), seen)
    assert seen == ["example@test.com"] * 3
    assert [(m.verdict, m.source) for m in found] == [
        (ProviderVerdict.COMPLAINT, Source.CARRIER),
        (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
        (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
    ]
    assert found[0] == InboundMessage(
        ACCOUNT, EMAIL, "example@test.com", "", "sendgrid:sg_event_id", AT,
        provider="sendgrid", verdict=ProviderVerdict.COMPLAINT, source=Source.CARRIER,
    )
    assert sendgrid.parse_batch(json.dumps(EVENTS), ACCOUNT) == ParsedBatch(found, ())


# The reference example shares the placeholder "sg_event_id"; real events carry their own ids.
@pytest.mark.parametrize("event", ["unsubscribe", "group_unsubscribe"])
def test_opt_outs_unsubscribe_and_suppress(open_service: ServiceFactory, event: str) -> None:
    """Each unsubscribe event unsubscribes the address from email, the contact's own act."""
    (message,) = parsed([{**_COMMON, "event": event, "sg_event_id": f"id-{event}"}])
    check_opt_out(open_service, message, Source.UNSUBSCRIBE_LINK)


def test_a_spam_report_is_a_complaint(open_service: ServiceFactory) -> None:
    """spamreport is a complaint (source CARRIER): the system's opt-out, which no provider
    opt-in undoes."""
    (message,) = parsed([{**_COMMON, "event": "spamreport", "sg_event_id": "id-spam"}])
    check_complaint(open_service, message)


def _event(kind: str, event_id: str, at: int = 1513299569, **extra: Any) -> dict[str, Any]:
    return {**_COMMON, "event": kind, "sg_event_id": event_id, "timestamp": at, **extra}


@pytest.mark.parametrize("first", ["spamreport", "unsubscribe", "group_unsubscribe"])
def test_a_group_resubscribe_is_ignored(open_service: ServiceFactory, first: str) -> None:
    """group_resubscribe takes back one unsubscribe group's suppression only (a per-group
    preference; consentkit has no topics yet): it gives nothing, so neither a spam report nor a
    global or group unsubscribe before it is undone on the email channel."""
    resubscribe = _event("group_resubscribe", "id-re", 1513299629, asm_group_id=10)
    assert sendgrid.parse_batch(json.dumps([resubscribe]), unknown) == ParsedBatch((), ())
    messages = parsed([_event(first, "id-out", asm_group_id=10), resubscribe])
    assert [m.message_id for m in messages] == ["sendgrid:id-out"]
    service = subscribed(open_service, messages[0])
    assert service.handle_inbound(messages[0]).outcome is InboundOutcome.OPTED_OUT
    assert service.state(ADMIN, "known", EMAIL) is SubscriptionState.UNSUBSCRIBED


QUOTED = '"john doe"@example.com'  # valid per RFC 5321, refused by consentkit's email check


def test_one_unreadable_event_does_not_block_the_batch() -> None:
    """parse_batch returns the batch's readable events and names each unreadable one (an
    address consentkit cannot represent, a missing id, an item that is no object); parse
    refuses the whole batch and says that parse_batch applies the others."""
    batch = [
        _event("unsubscribe", "sg-good"),
        _event("spamreport", "sg-quoted", email=QUOTED),
        _event("delivered", "sg-skipped", email=QUOTED),
        {**_event("group_unsubscribe", "sg-x"), "sg_event_id": None},
        7,
        _event("spamreport", "sg-last"),
    ]
    found = sendgrid.parse_batch(json.dumps(batch).encode(), ACCOUNT)
    check_batch(
        found,
        ["sendgrid:sg-good", "sendgrid:sg-last"],
        {"body[1]": "body[1].email", "body[3]": "body[3].sg_event_id", "body[4]": "body[4]"},
    )
    assert all(isinstance(r.error, PayloadError) for r in found.rejected)
    with pytest.raises(PayloadError, match="parse_batch applies") as caught:
        sendgrid.parse(json.dumps(batch), ACCOUNT)
    assert caught.value.field == "body[1].email"


def test_an_unreadable_event_changes_nothing_the_others_apply(
    open_service: ServiceFactory,
) -> None:
    """The readable opt-out of a batch with an unreadable one is applied."""
    batch = [_event("unsubscribe", "sg-good"), _event("spamreport", "sg-bad", email=QUOTED)]
    found = sendgrid.parse_batch(json.dumps(batch), ACCOUNT)
    (message,) = found.messages
    check_opt_out(open_service, message, Source.UNSUBSCRIBE_LINK)


@pytest.mark.parametrize("raw", [b'{"event": "unsubscribe"}', b"null", b"not json", b"\x00"])
def test_a_body_that_is_no_batch_still_raises(raw: bytes) -> None:
    """A body that is no JSON array is no batch at all: parse_batch raises too."""
    with pytest.raises(PayloadError) as caught:
        sendgrid.parse_batch(raw, ACCOUNT)
    assert caught.value.field == "body"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"event": "unsubscribe"}', "body"),
        (b"[1]", "body[0]"),
        (json.dumps([{**_COMMON, "event": "unsubscribe", "email": None}]).encode(),
         "body[0].email"),
        (json.dumps([{**_COMMON, "event": "spamreport", "email": "not an address"}]).encode(),
         "body[0].email"),
        (json.dumps([{**_COMMON, "event": "unsubscribe", "sg_event_id": ""}]).encode(),
         "body[0].sg_event_id"),
        (json.dumps([{**_COMMON, "event": "unsubscribe", "timestamp": "x"}]).encode(),
         "body[0].timestamp"),
        (json.dumps([{**_COMMON, "event": "unsubscribe", "timestamp": 1e300}]).encode(),
         "body[0].timestamp"),
        (json.dumps([{**_COMMON, "event": 5}]).encode(), "body[0].event"),
        (b"\x00\x01", "body"),
    ],
)
def test_malformed_events(raw: bytes, field: str) -> None:
    """A body that is no array of events, and opt-outs missing or misspelling a field."""
    with pytest.raises(PayloadError) as caught:
        sendgrid.parse(raw, ACCOUNT)
    assert caught.value.field == field


def test_skipped_events_need_no_fields() -> None:
    """An event consentkit skips is not checked: SendGrid may add fields and types."""
    assert parsed([{"event": "delivered"}, {"event": "some_new_event", "x": [1, 2]}]) == ()
