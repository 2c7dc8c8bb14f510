"""Postmark SubscriptionChange: complaints and the recipient's own unsubscribes; bounces and
the sender's own suppressions ignored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import EMAIL, PayloadError, Source
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import postmark
from tests.providers._support import (
    ACCOUNT,
    ServiceFactory,
    check_complaint,
    check_opt_in,
    check_opt_out,
)

# The example of Postmark's subscription change webhook page.
DOCUMENTED: dict[str, Any] = {
    "RecordType": "SubscriptionChange",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "ServerID": 123456,
    "MessageStream": "outbound",
    "ChangedAt": "2020-02-01T10:53:34.416071Z",
    "Recipient": "bounced-address@wildbit.com",
    "Origin": "Recipient",
    "SuppressSending": True,
    "SuppressionReason": "HardBounce",
    "Tag": "my-tag",
    "Metadata": {"example": "value", "example_2": "value"},
}
AT = datetime(2020, 2, 1, 10, 53, 34, 416071, tzinfo=UTC)


def parsed(**changes: Any) -> tuple[InboundMessage, ...]:
    return postmark.parse(json.dumps({**DOCUMENTED, **changes}).encode(), ACCOUNT)


def test_the_documented_hard_bounce_is_ignored() -> None:
    """The documented example is a hard bounce: the address does not work, but nobody withdrew
    consent, so it is no opt-out."""
    assert postmark.parse(json.dumps(DOCUMENTED), ACCOUNT) == ()


def test_a_spam_complaint_opts_out(open_service: ServiceFactory) -> None:
    """SpamComplaint is a complaint of the Recipient (CARRIER, the system's opt-out), dated
    ChangedAt; the Recipient's later reactivation does not undo it."""
    (message,) = parsed(SuppressionReason="SpamComplaint")
    assert message == InboundMessage(
        ACCOUNT, EMAIL, "bounced-address@wildbit.com", "",
        "postmark:bounced-address@wildbit.com:2020-02-01T10:53:34.416071Z:suppressed", AT,
        provider="postmark", verdict=ProviderVerdict.COMPLAINT, source=Source.CARRIER,
    )
    check_complaint(open_service, message)


def test_the_recipients_own_unsubscribe_and_reactivation(open_service: ServiceFactory) -> None:
    """A manual suppression by the Recipient (the unsubscribe link) is an UNSUBSCRIBE_LINK
    opt-out; the Recipient's reactivation (the whole stream's suppression removed: Postmark has
    no groups or topics inside a stream) takes it back."""
    (message,) = parsed(SuppressionReason="ManualSuppression", MessageID=None)
    check_opt_out(open_service, message, Source.UNSUBSCRIBE_LINK)
    (back,) = parsed(SuppressionReason="ManualSuppression", SuppressSending=False)
    assert back.verdict is ProviderVerdict.OPT_IN
    check_opt_in(open_service, back)


@pytest.mark.parametrize(
    "changes",
    [
        {"SuppressionReason": "ManualSuppression", "Origin": "Customer"},
        {"SuppressionReason": "ManualSuppression", "Origin": "Admin"},
        {"SuppressSending": False, "Origin": "Customer", "SuppressionReason": None},
        {"RecordType": "Bounce"},
        {"RecordType": None},
    ],
    ids=["customer", "admin", "customer-reactivation", "bounce-record", "no-record-type"],
)
def test_the_senders_own_acts_and_other_records_are_ignored(changes: dict[str, Any]) -> None:
    """Suppressions and reactivations by the sender (Customer) or Postmark staff (Admin) are not
    the contact's word; other record types are not subscription changes."""
    assert parsed(**changes) == ()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"SuppressSending": "yes"}, "SuppressSending"),
        ({"SuppressSending": None}, "SuppressSending"),
        ({"SuppressionReason": "SpamComplaint", "Recipient": None}, "Recipient"),
        ({"SuppressionReason": "SpamComplaint", "Recipient": "nobody"}, "Recipient"),
        ({"SuppressionReason": "SpamComplaint", "ChangedAt": "Feb 1st"}, "ChangedAt"),
        ({"SuppressionReason": "SpamComplaint", "ChangedAt": None}, "ChangedAt"),
        ({"Origin": 3}, "Origin"),
    ],
)
def test_malformed_changes(changes: dict[str, Any], field: str) -> None:
    """Missing and malformed fields are PayloadErrors naming them."""
    with pytest.raises(PayloadError) as caught:
        parsed(**changes)
    assert caught.value.field == field
