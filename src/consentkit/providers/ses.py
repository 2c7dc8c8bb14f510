"""Amazon SES: complaint and subscription notifications, delivered through Amazon SNS.

SES publishes a JSON record (``notificationType`` for identity notifications, ``eventType`` for
configuration-set event publishing) as the ``Message`` of an SNS notification:

* ``Complaint``: each of ``complaint.complainedRecipients[].emailAddress`` marked the message as
  spam: :attr:`~consentkit.inbound.ProviderVerdict.COMPLAINT`, source ``CARRIER``, recorded as
  the system's opt-out, which no keyword or provider opt-in undoes; dated
  ``complaint.timestamp`` and keyed by ``complaint.feedbackId``.  Only a complaint whose
  ``complaintFeedbackType`` is absent (many feedback loops send none) or one of RFC 5965's
  ``abuse``, ``fraud``, ``virus`` and ``other`` counts: ``not-spam`` is the reporter saying the
  message is *not* spam (say, correcting a misfiled message), and any other value (RFC 6591's
  ``auth-failure``, a report about the sender's authentication, or a type SES may add later) is
  no withdrawal of consent; both are ignored.  A complaint of sub-type
  ``OnAccountSuppressionList`` (SES did not send because the address was already on the
  account's suppression list, which also holds bounces) is no new complaint and is ignored.
* ``Subscription`` with ``subscription.newTopicPreferences.unsubscribeAll`` true: the contact
  unsubscribed from the whole contact list (the one-click ``List-Unsubscribe`` header or SES's
  subscription page); source ``UNSUBSCRIBE_LINK`` for the message's ``mail.destination``.  A
  change of single topics leaves the email channel as it is, since consentkit's consent is per
  channel, not per topic; and nothing SES reports is taken as an opt-in: a resubscription to a
  list or a topic (``unsubscribeAll`` back to false, a topic ``OptIn``) is a per-list or
  per-topic preference, not a resubscription of the email channel.
* ``Bounce`` and every other record give nothing: a bounce is no withdrawal of consent.

A record with several recipients is a batch: :func:`parse_batch` reads each recipient on its own
and reports the ones it cannot read (an address consentkit cannot represent, such as a quoted
local part) as rejected while returning the others; :func:`parse` refuses the whole
notification for one.  The record's own fields (its type, the complaint's id and time, the
recipient list itself) are the batch's frame: a notification without them raises PayloadError
from both.

As for :mod:`consentkit.providers.aws`, the host verifies the SNS signature and confirms the
subscription; a resolver is called with the recipient's address.

Sources:
  https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_Complaint.html
  https://docs.aws.amazon.com/sns/latest/dg/http-notification-json.html
  https://www.rfc-editor.org/rfc/rfc5965 (feedback types), https://www.rfc-editor.org/rfc/rfc6591
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import attrs

from consentkit.channels import EMAIL
from consentkit.errors import PayloadError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    AccountResolver,
    BatchReader,
    Event,
    Node,
    ParsedBatch,
    as_node,
    instant,
    items,
    message_id,
    resolve_account,
    sns_message,
    strict,
)

__all__ = ["parse", "parse_batch"]

PROVIDER = "ses"
COMPLAINT_FEEDBACK_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
"""The ``complaintFeedbackType`` values (RFC 5965) of a complaint that opts out; an absent type
counts too."""


def parse_batch(body: bytes | str, account: AccountResolver) -> ParsedBatch:
    """The opt-outs one SES notification reports (see the module notes), possibly none, and the
    recipients that could not be read.

    Args:
        body: the raw request body SNS posted (the JSON notification).
        account: the account, or a resolver called with each recipient's address.

    Returns:
        The messages, and as ``rejected`` each recipient (``...complainedRecipients[i]``,
        ``...destination[i]``) that is missing, malformed or an address consentkit cannot
        represent.

    Raises:
        PayloadError: not an SNS ``Notification``, or a complaint or subscription record lacks
            a field of its own (type, id, time, the recipient list), or it is malformed.
    """
    record, _, _ = sns_message(body)
    kind = record.maybe_text("eventType") or record.maybe_text("notificationType")
    reader = _READERS.get(kind or "")
    report = None if reader is None else reader(record)
    batch = BatchReader()
    if report is None:
        return batch.result()
    for path, item in report.recipients:
        with batch.event(path):
            field, address = report.address(path, item)
            batch.add(
                Event(
                    account=resolve_account(account, address, field),
                    channel=EMAIL,
                    sender=address,
                    sender_field=field,
                    message_id=message_id(PROVIDER, report.event_id, address),
                    received_at=report.at,
                    provider=PROVIDER,
                    verdict=report.verdict,
                    source=report.source,
                ).message()
            )
    return batch.result()


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The messages of :func:`parse_batch`, or PayloadError for the first recipient it rejects
    (strict: one unreadable recipient refuses the whole notification).

    Raises:
        PayloadError: not an SNS ``Notification``, or a complaint or subscription record lacks
            a field it needs, or it is malformed.
    """
    return strict(parse_batch(body, account))


@attrs.frozen
class _Report:
    """The opt-outs of one record: who (``(path, item)`` pairs, read by *address*), when, why,
    which event."""

    recipients: tuple[tuple[str, object], ...]
    address: Callable[[str, object], tuple[str, str]]
    at: datetime
    verdict: ProviderVerdict
    source: Source
    event_id: str


def _complained(path: str, item: object) -> tuple[str, str]:
    recipient = as_node(item, path)
    return recipient.name("emailAddress"), recipient.ident("emailAddress")


def _destination(path: str, item: object) -> tuple[str, str]:
    if not isinstance(item, str) or not item.strip():
        raise PayloadError(path, "expected a non-empty string")
    return path, item


def _complaint(record: Node) -> _Report | None:
    complaint = record.node("complaint")
    if complaint.maybe_text("complaintSubType") == "OnAccountSuppressionList":
        return None
    feedback = complaint.maybe_text("complaintFeedbackType")
    if feedback is not None and feedback.strip().lower() not in COMPLAINT_FEEDBACK_TYPES:
        return None
    listed = "complainedRecipients"
    recipients = items(complaint.raw(listed), complaint.name(listed))
    at = instant(complaint.raw("timestamp"), complaint.name("timestamp"))
    return _Report(
        recipients, _complained, at, ProviderVerdict.COMPLAINT, Source.CARRIER,
        complaint.ident("feedbackId"),
    )


def _unsubscribe(record: Node) -> _Report | None:
    subscription = record.node("subscription")
    preferences = subscription.maybe_node("newTopicPreferences")
    if preferences is None or preferences.get("unsubscribeAll") is not True:
        return None
    mail = record.node("mail")
    at = instant(subscription.raw("timestamp"), subscription.name("timestamp"))
    event_id = f"{mail.ident('messageId')}:{subscription.text('timestamp')}"
    return _Report(
        items(mail.raw("destination"), mail.name("destination")), _destination, at,
        ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK, event_id,
    )


_READERS = {"Complaint": _complaint, "Subscription": _unsubscribe}
