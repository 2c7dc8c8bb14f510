"""SendGrid Event Webhook: unsubscribes, spam reports and resubscribes; other events skipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import EMAIL, PayloadError, Source
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import sendgrid
from tests.providers._support import (
    ACCOUNT,
    Recorder,
    ServiceFactory,
    check_opt_in,
    check_opt_out,
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


def test_the_documented_batch_gives_its_four_consent_events() -> None:
    """Of the reference's eleven events, spamreport, unsubscribe, group_unsubscribe and
    group_resubscribe are consent events, in order; deliveries, opens and bounces are not."""
    seen = Recorder()
    found = sendgrid.parse(json.dumps(EVENTS), seen)
    assert seen == ["example@test.com"] * 4
    assert [(m.verdict, m.source) for m in found] == [
        (ProviderVerdict.OPT_OUT, Source.CARRIER),
        (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
        (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
        (ProviderVerdict.OPT_IN, Source.UNSUBSCRIBE_LINK),
    ]
    assert found[0] == InboundMessage(
        ACCOUNT, EMAIL, "example@test.com", "", "sendgrid:sg_event_id", AT,
        provider="sendgrid", verdict=ProviderVerdict.OPT_OUT, source=Source.CARRIER,
    )


# The reference example shares the placeholder "sg_event_id"; real events carry their own ids.
@pytest.mark.parametrize(
    ("event", "source"),
    [("unsubscribe", Source.UNSUBSCRIBE_LINK), ("group_unsubscribe", Source.UNSUBSCRIBE_LINK),
     ("spamreport", Source.CARRIER)],
)
def test_opt_outs_unsubscribe_and_suppress(
    open_service: ServiceFactory, event: str, source: Source
) -> None:
    """Each opt-out event unsubscribes the address from email, with its source."""
    (message,) = parsed([{**_COMMON, "event": event, "sg_event_id": f"id-{event}"}])
    check_opt_out(open_service, message, source)


def test_a_group_resubscribe_takes_the_unsubscribe_back(open_service: ServiceFactory) -> None:
    """group_resubscribe (the recipient's own choice) undoes their own opt-out."""
    (message,) = parsed([{**_COMMON, "event": "group_resubscribe", "sg_event_id": "id-re"}])
    check_opt_in(open_service, message)


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
