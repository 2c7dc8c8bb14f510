"""Amazon SES: complaints and whole-list unsubscribes through SNS; bounces ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import EMAIL, PayloadError, Source
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import ses
from tests.providers._sns import notification
from tests.providers._support import (
    ACCOUNT,
    Recorder,
    ServiceFactory,
    check_opt_out,
    with_value,
    without,
)

_MAIL = {
    "timestamp": "2017-08-05T00:40:01.123Z",
    "source": "Sender Name <sender@example.com>",
    "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
    "sendingAccountId": "123456789012",
    "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
    "destination": ["recipient@example.com"],
    "headersTruncated": False,
    "tags": {"ses:configuration-set": ["ConfigSet"]},
}
# The Complaint record of "Examples of event data that Amazon SES publishes to Amazon SNS".
COMPLAINT: dict[str, Any] = {
    "eventType": "Complaint",
    "complaint": {
        "complainedRecipients": [{"emailAddress": "recipient@example.com"}],
        "timestamp": "2017-08-05T00:41:02.669Z",
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/60.0.3112.90 Safari/537.36",
        "complaintFeedbackType": "abuse",
        "arrivalDate": "2017-08-05T00:41:02.669Z",
    },
    "mail": _MAIL,
}
# The Subscription record of the same page.
SUBSCRIPTION: dict[str, Any] = {
    "eventType": "Subscription",
    "mail": {**_MAIL, "timestamp": "2022-01-12T01:00:14.340Z",
             "messageId": "EXAMPLEe4bccb684-777bc8de-afa7-4970-92b0-f515137b1497-000000"},
    "subscription": {
        "contactList": "ContactListName",
        "timestamp": "2022-01-12T01:00:17.910Z",
        "source": "UnsubscribeHeader",
        "newTopicPreferences": {
            "unsubscribeAll": True,
            "topicSubscriptionStatus": [
                {"topicName": "ExampleTopicName", "subscriptionStatus": "OptOut"}
            ],
        },
        "oldTopicPreferences": {
            "unsubscribeAll": False,
            "topicSubscriptionStatus": [
                {"topicName": "ExampleTopicName", "subscriptionStatus": "OptOut"}
            ],
        },
    },
}
# The Bounce record of the same page (shortened to what matters).
BOUNCE: dict[str, Any] = {
    "eventType": "Bounce",
    "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
               "bouncedRecipients": [{"emailAddress": "recipient@example.com"}],
               "timestamp": "2017-08-05T00:41:02.669Z"},
    "mail": _MAIL,
}


def test_the_documented_complaint_opts_out(open_service: ServiceFactory) -> None:
    """Each complained recipient is a CARRIER opt-out keyed by the feedback id."""
    seen = Recorder()
    (message,) = ses.parse(notification(COMPLAINT), seen)
    assert seen == ["recipient@example.com"]
    assert message == InboundMessage(
        ACCOUNT, EMAIL, "recipient@example.com", "",
        "ses:01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000:recipient@example.com",
        datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC),
        provider="ses", verdict=ProviderVerdict.OPT_OUT, source=Source.CARRIER,
    )
    check_opt_out(open_service, message, Source.CARRIER)


def test_identity_notifications_and_several_recipients() -> None:
    """notificationType (identity notifications) works like eventType; each recipient of a
    complaint is its own opt-out."""
    record = {**without(COMPLAINT, "eventType"), "notificationType": "Complaint"}
    record = with_value(record, "complaint.complainedRecipients",
                        [{"emailAddress": "a@example.com"}, {"emailAddress": "b@example.com"}])
    assert [m.sender for m in ses.parse(notification(record), ACCOUNT)] == [
        "a@example.com", "b@example.com"
    ]


def test_the_documented_unsubscribe_opts_out(open_service: ServiceFactory) -> None:
    """unsubscribeAll is an UNSUBSCRIBE_LINK opt-out of the message's destination."""
    (message,) = ses.parse(notification(SUBSCRIPTION), ACCOUNT)
    assert (message.sender, message.received_at) == (
        "recipient@example.com", datetime(2022, 1, 12, 1, 0, 17, 910000, tzinfo=UTC)
    )
    check_opt_out(open_service, message, Source.UNSUBSCRIBE_LINK)


@pytest.mark.parametrize(
    "record",
    [
        BOUNCE,
        with_value(SUBSCRIPTION, "subscription.newTopicPreferences.unsubscribeAll", False),
        without(SUBSCRIPTION, "subscription.newTopicPreferences"),
        with_value(COMPLAINT, "complaint.complaintSubType", "OnAccountSuppressionList"),
        {**COMPLAINT, "eventType": "Delivery"},
    ],
    ids=["bounce", "topic-only", "no-preferences", "suppression-list", "delivery"],
)
def test_what_is_ignored(record: dict[str, Any]) -> None:
    """Bounces, single-topic changes, complaints about already-suppressed addresses and other
    records change nothing."""
    assert ses.parse(notification(record), ACCOUNT) == ()


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (without(COMPLAINT, "complaint"), "Message.complaint"),
        (without(COMPLAINT, "complaint.feedbackId"), "Message.complaint.feedbackId"),
        (without(COMPLAINT, "complaint.timestamp"), "Message.complaint.timestamp"),
        (without(COMPLAINT, "complaint.complainedRecipients"),
         "Message.complaint.complainedRecipients"),
        (with_value(COMPLAINT, "complaint.complainedRecipients", [{"emailAddress": "x"}]),
         "Message.complaint.complainedRecipients[0].emailAddress"),
        (without(SUBSCRIPTION, "mail.destination"), "Message.mail.destination"),
        (with_value(SUBSCRIPTION, "mail.destination", ["ok@example.com", 7]),
         "Message.mail.destination[1]"),
        (with_value(SUBSCRIPTION, "mail.destination", "ok@example.com"),
         "Message.mail.destination"),
        (without(SUBSCRIPTION, "mail"), "Message.mail"),
    ],
)
def test_malformed_records(record: dict[str, Any], field: str) -> None:
    """Missing and malformed fields are named with their path inside the SNS Message."""
    with pytest.raises(PayloadError) as caught:
        ses.parse(notification(record), ACCOUNT)
    assert caught.value.field == field
