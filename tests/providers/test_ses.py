"""Amazon SES: complaints (by feedback type) and whole-list unsubscribes through SNS; bounces
ignored; several recipients read one by one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import EMAIL, PayloadError, Source
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import ParsedBatch, ses
from tests.providers._sns import notification
from tests.providers._support import (
    ACCOUNT,
    Recorder,
    ServiceFactory,
    check_batch,
    check_complaint,
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
    """Each complained recipient is a complaint (CARRIER, the system's opt-out) keyed by the
    feedback id."""
    seen = Recorder()
    (message,) = ses.parse(notification(COMPLAINT), seen)
    assert seen == ["recipient@example.com"]
    assert message == InboundMessage(
        ACCOUNT, EMAIL, "recipient@example.com", "",
        "ses:01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000:recipient@example.com",
        datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC),
        provider="ses", verdict=ProviderVerdict.COMPLAINT, source=Source.CARRIER,
    )
    check_complaint(open_service, message)
    assert ses.parse_batch(notification(COMPLAINT), ACCOUNT) == ParsedBatch((message,), ())


@pytest.mark.parametrize(
    "record",
    [
        *(with_value(COMPLAINT, "complaint.complaintFeedbackType", feedback)
          for feedback in ("abuse", "fraud", "virus", "other", " Abuse", None)),
        without(COMPLAINT, "complaint.complaintFeedbackType"),
    ],
    ids=["abuse", "fraud", "virus", "other", "case", "null", "absent"],
)
def test_complaint_feedback_types_that_opt_out(record: dict[str, Any]) -> None:
    """RFC 5965's abuse, fraud, virus and other (in any case), or no feedback type at all (many
    feedback loops send none), are complaints."""
    (message,) = ses.parse(notification(record), ACCOUNT)
    assert message.verdict is ProviderVerdict.COMPLAINT


@pytest.mark.parametrize("feedback", ["not-spam", "auth-failure", "opt-out", "", "spam"])
def test_other_complaint_feedback_types_are_ignored(feedback: str) -> None:
    """not-spam (the reporter says the message is NOT spam), RFC 6591's auth-failure and any
    other value are no opt-outs."""
    record = with_value(COMPLAINT, "complaint.complaintFeedbackType", feedback)
    assert ses.parse(notification(record), ACCOUNT) == ()
    assert ses.parse_batch(notification(record), ACCOUNT) == ParsedBatch((), ())


def test_identity_notifications_and_several_recipients() -> None:
    """notificationType (identity notifications) works like eventType; each recipient of a
    complaint is its own opt-out."""
    record = {**without(COMPLAINT, "eventType"), "notificationType": "Complaint"}
    record = with_value(record, "complaint.complainedRecipients",
                        [{"emailAddress": "a@example.com"}, {"emailAddress": "b@example.com"}])
    assert [m.sender for m in ses.parse(notification(record), ACCOUNT)] == [
        "a@example.com", "b@example.com"
    ]


QUOTED = '"john doe"@example.com'  # valid per RFC 5321, refused by consentkit's email check


def test_one_unreadable_recipient_does_not_block_the_others() -> None:
    """parse_batch returns the complaint's readable recipients and names each unreadable one;
    parse refuses the notification and says that parse_batch applies the others."""
    record = with_value(COMPLAINT, "complaint.complainedRecipients", [
        {"emailAddress": "a@example.com"}, {"emailAddress": QUOTED}, "b@example.com",
        {"emailAddress": "c@example.com"},
    ])
    feedback = "ses:01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000"
    listed = "Message.complaint.complainedRecipients"
    check_batch(
        ses.parse_batch(notification(record), ACCOUNT),
        [f"{feedback}:a@example.com", f"{feedback}:c@example.com"],
        {f"{listed}[1]": f"{listed}[1].emailAddress", f"{listed}[2]": f"{listed}[2]"},
    )
    with pytest.raises(PayloadError, match="parse_batch applies") as caught:
        ses.parse(notification(record), ACCOUNT)
    assert caught.value.field == f"{listed}[1].emailAddress"
    unsubscribe = with_value(SUBSCRIPTION, "mail.destination", ["a@example.com", QUOTED, 7])
    check_batch(
        ses.parse_batch(notification(unsubscribe), ACCOUNT),
        [f"ses:{SUBSCRIPTION['mail']['messageId']}:2022-01-12T01:00:17.910Z:a@example.com"],
        {"Message.mail.destination[1]": "Message.mail.destination[1]",
         "Message.mail.destination[2]": "Message.mail.destination[2]"},
    )


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (without(COMPLAINT, "complaint.feedbackId"), "Message.complaint.feedbackId"),
        (with_value(COMPLAINT, "complaint.complainedRecipients", {}),
         "Message.complaint.complainedRecipients"),
        (with_value(COMPLAINT, "complaint.complaintFeedbackType", 5),
         "Message.complaint.complaintFeedbackType"),
    ],
)
def test_a_record_without_its_own_fields_still_raises(record: dict[str, Any], field: str) -> None:
    """The record's own fields are the batch's frame: without them parse_batch raises too."""
    with pytest.raises(PayloadError) as caught:
        ses.parse_batch(notification(record), ACCOUNT)
    assert caught.value.field == field


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
