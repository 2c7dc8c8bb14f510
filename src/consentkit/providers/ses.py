"""Amazon SES: complaint and subscription notifications, delivered through Amazon SNS.

SES publishes a JSON record (``notificationType`` for identity notifications, ``eventType`` for
configuration-set event publishing) as the ``Message`` of an SNS notification:

* ``Complaint``: each of ``complaint.complainedRecipients[].emailAddress`` marked the message as
  spam; an opt-out reported by the provider, source ``CARRIER``, dated ``complaint.timestamp``
  and keyed by ``complaint.feedbackId``.  A complaint of sub-type ``OnAccountSuppressionList``
  (SES did not send because the address was already on the account's suppression list, which
  also holds bounces) is no new complaint and is ignored.
* ``Subscription`` with ``subscription.newTopicPreferences.unsubscribeAll`` true: the contact
  unsubscribed from the whole contact list (the one-click ``List-Unsubscribe`` header or SES's
  subscription page); source ``UNSUBSCRIBE_LINK`` for the message's ``mail.destination``.  A
  change of single topics leaves the email channel as it is, since consentkit's consent is per
  channel, not per topic.
* ``Bounce`` and every other record give nothing: a bounce is no withdrawal of consent.

As for :mod:`consentkit.providers.aws`, the host verifies the SNS signature and confirms the
subscription; a resolver is called with the recipient's address.

Sources:
  https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Complaint.html
  https://docs.aws.amazon.com/sns/latest/dg/http-notification-json.html
"""

from __future__ import annotations

from datetime import datetime

import attrs

from consentkit.channels import EMAIL
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    AccountResolver,
    Event,
    Node,
    as_nodes,
    instant,
    message_id,
    resolve_account,
    sns_message,
)

__all__ = ["parse"]

PROVIDER = "ses"


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The opt-outs one SES notification reports (see the module notes), possibly none.

    Args:
        body: the raw request body SNS posted (the JSON notification).
        account: the account, or a resolver called with each recipient's address.

    Raises:
        PayloadError: not an SNS ``Notification``, or a complaint or subscription record lacks
            a field it needs, or it is malformed.
    """
    record, _, _ = sns_message(body)
    kind = record.maybe_text("eventType") or record.maybe_text("notificationType")
    reader = _READERS.get(kind or "")
    report = None if reader is None else reader(record)
    if report is None:
        return ()
    return tuple(
        Event(
            account=resolve_account(account, address, field),
            channel=EMAIL,
            sender=address,
            sender_field=field,
            message_id=message_id(PROVIDER, report.event_id, address),
            received_at=report.at,
            provider=PROVIDER,
            verdict=ProviderVerdict.OPT_OUT,
            source=report.source,
        ).message()
        for field, address in report.recipients
    )


@attrs.frozen
class _Report:
    """The opt-outs of one record: who (``(field, address)`` pairs), when, why, which event."""

    recipients: tuple[tuple[str, str], ...]
    at: datetime
    source: Source
    event_id: str


def _complaint(record: Node) -> _Report | None:
    complaint = record.node("complaint")
    if complaint.maybe_text("complaintSubType") == "OnAccountSuppressionList":
        return None
    listed = as_nodes(complaint.raw("complainedRecipients"), complaint.name("complainedRecipients"))
    recipients = tuple((item.name("emailAddress"), item.ident("emailAddress")) for item in listed)
    at = instant(complaint.raw("timestamp"), complaint.name("timestamp"))
    return _Report(recipients, at, Source.CARRIER, complaint.ident("feedbackId"))


def _unsubscribe(record: Node) -> _Report | None:
    subscription = record.node("subscription")
    preferences = subscription.maybe_node("newTopicPreferences")
    if preferences is None or preferences.get("unsubscribeAll") is not True:
        return None
    mail = record.node("mail")
    at = instant(subscription.raw("timestamp"), subscription.name("timestamp"))
    event_id = f"{mail.ident('messageId')}:{subscription.text('timestamp')}"
    return _Report(mail.texts("destination"), at, Source.UNSUBSCRIBE_LINK, event_id)


_READERS = {"Complaint": _complaint, "Subscription": _unsubscribe}
