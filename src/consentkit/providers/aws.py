"""AWS End User Messaging SMS (formerly Pinpoint SMS): two-way SMS delivered through Amazon SNS.

An incoming SMS is published to an SNS topic; an HTTP(S) subscription receives an SNS
``Notification`` whose ``Message`` is the JSON payload ``originationNumber`` (the contact),
``destinationNumber`` (your number), ``messageKeyword`` (the *registered keyword associated with
your number*, not a classification of this message), ``messageBody`` and ``inboundMessageId``.
The payload carries no time, so the notification's ``Timestamp`` dates it.

AWS answers STOP/HELP itself and keeps its own opt-out list unless self-managed opt-outs are on;
the payload does not say whether it did, so consentkit's matcher classifies ``messageBody``.

The SNS signature is an RSA signature whose certificate must be fetched from AWS: that is I/O,
out of scope for these pure functions.  The host verifies it (its AWS SDK, or the SNS message
validator it already uses), confirms ``SubscriptionConfirmation`` requests by visiting their
``SubscribeURL``, and passes only notifications here; anything else is a PayloadError.

Sources:
  https://docs.aws.amazon.com/sms-voice/latest/userguide/two-way-sms-payload.html
  https://docs.aws.amazon.com/sms-voice/latest/userguide/two-way-sms.html
  https://docs.aws.amazon.com/sns/latest/dg/http-notification-json.html
"""

from __future__ import annotations

from consentkit.channels import SMS
from consentkit.inbound import InboundMessage
from consentkit.providers._common import (
    AccountResolver,
    Event,
    message_id,
    phone,
    resolve_account,
    sns_message,
)

__all__ = ["parse_message"]

PROVIDER = "aws"


def parse_message(body: bytes | str, account: AccountResolver) -> InboundMessage:
    """The InboundMessage of an SNS notification carrying one incoming SMS.

    Args:
        body: the raw request body SNS posted (the JSON notification).
        account: the account, or a resolver called with ``destinationNumber`` (your number).

    Raises:
        PayloadError: not an SNS ``Notification``, or the message lacks ``originationNumber``,
            ``destinationNumber`` or ``inboundMessageId``, or they are malformed.
    """
    message, published_at, _ = sns_message(body)
    return Event(
        account=resolve_account(
            account, message.ident("destinationNumber"), message.name("destinationNumber")
        ),
        channel=SMS,
        sender=phone(message.ident("originationNumber"), message.name("originationNumber")),
        sender_field=message.name("originationNumber"),
        message_id=message_id(PROVIDER, message.ident("inboundMessageId")),
        received_at=published_at,
        provider=PROVIDER,
        body=message.maybe_text("messageBody") or "",
    ).message()
