"""AWS End User Messaging SMS: two-way SMS through an SNS notification."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import SMS, PayloadError
from consentkit.inbound import InboundMessage, InboundOutcome
from consentkit.providers import aws
from tests.providers._sns import ENVELOPE, notification
from tests.providers._support import ACCOUNT, Recorder, ServiceFactory, subscribed

# The two-way SMS payload of the AWS End User Messaging SMS user guide.
PAYLOAD: dict[str, Any] = {
    "originationNumber": "+14255550182",
    "destinationNumber": "+12125550101",
    "messageKeyword": "JOIN",
    "messageBody": "EXAMPLE",
    "inboundMessageId": "cae173d2-66b9-564c-8309-21f858e9fb84",
    "previousPublishedMessageId": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}
PUBLISHED = datetime(2012, 5, 2, 0, 54, 6, 655000, tzinfo=UTC)


def test_the_documented_payload_parses() -> None:
    """originationNumber sent messageBody to destinationNumber; the SNS Timestamp dates it and
    messageKeyword (the number's registered keyword) is no verdict."""
    seen = Recorder()
    message = aws.parse_message(notification(PAYLOAD), seen)
    assert seen == ["+12125550101"]
    assert message == InboundMessage(
        ACCOUNT, SMS, "+14255550182", "EXAMPLE",
        "aws:cae173d2-66b9-564c-8309-21f858e9fb84", PUBLISHED, provider="aws",
    )


def test_the_matcher_reads_the_body(open_service: ServiceFactory) -> None:
    """A STOP body opts the sender out by consentkit's own matcher."""
    message = aws.parse_message(notification({**PAYLOAD, "messageBody": "Stop"}), ACCOUNT)
    service = subscribed(open_service, message)
    result = service.handle_inbound(message)
    assert result.outcome is InboundOutcome.OPTED_OUT
    assert result.reply


def test_subscription_confirmations_are_refused() -> None:
    """Only notifications are parsed: a SubscriptionConfirmation says to confirm it instead."""
    confirmation = json.dumps({**ENVELOPE, "Type": "SubscriptionConfirmation", "Message": "x"})
    with pytest.raises(PayloadError, match="SubscribeURL") as caught:
        aws.parse_message(confirmation.encode(), ACCOUNT)
    assert caught.value.field == "Type"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (notification({k: v for k, v in PAYLOAD.items() if k != "originationNumber"}),
         "Message.originationNumber"),
        (notification({k: v for k, v in PAYLOAD.items() if k != "destinationNumber"}),
         "Message.destinationNumber"),
        (notification({k: v for k, v in PAYLOAD.items() if k != "inboundMessageId"}),
         "Message.inboundMessageId"),
        (notification({**PAYLOAD, "originationNumber": "ABC"}), "Message.originationNumber"),
        (notification(PAYLOAD, Timestamp="later"), "Timestamp"),
        (json.dumps({**ENVELOPE, "Message": "not json"}).encode(), "Message"),
        (json.dumps({**ENVELOPE, "Message": "[1]"}).encode(), "Message"),
        (json.dumps({k: v for k, v in ENVELOPE.items() if k != "Type"}).encode(), "Type"),
        (b"<xml/>", "body"),
    ],
)
def test_malformed_notifications(raw: bytes, field: str) -> None:
    """Missing or malformed fields of the envelope or the message are named."""
    with pytest.raises(PayloadError) as caught:
        aws.parse_message(raw, ACCOUNT)
    assert caught.value.field == field
