"""Plivo Messaging: message status callbacks whose error says the recipient opted out.

Plivo posts a status callback (form fields, or query parameters for GET) on every status change
of a message sent with a callback URL: ``MessageUUID``, ``From``, ``To``, ``Type`` (``sms``,
``mms``, ``whatsapp``), ``Status`` and, for ``failed`` / ``undelivered`` messages, ``ErrorCode``.
Error code 200 means the destination number opted out of messages from the source number: an
opt-out reported by Plivo (``CARRIER``) for ``To``.  Every other callback gives ``()``.  The
callback's times describe the message, not the report, so the caller passes ``received_at``.

Plivo signs callbacks (its V3 signature: a nonce and an HMAC over the URL and parameters, in
request headers); checking it is left to the host, with the ``plivo`` package's validator.

Sources:
  https://www.plivo.com/docs/messaging/api/message/message-status-callbacks
  https://www.plivo.com/docs/messaging/troubleshooting/error-codes
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from consentkit.channels import MMS, SMS, WHATSAPP
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source, ensure_aware
from consentkit.providers._common import (
    AccountResolver,
    Event,
    form,
    message_id,
    phone,
    resolve_account,
)

__all__ = ["parse_status"]

PROVIDER = "plivo"
OPTED_OUT = "200"
"""The error code of a message Plivo did not send because its recipient opted out."""

_CHANNELS = {"sms": SMS, "mms": MMS, "whatsapp": WHATSAPP}


def parse_status(
    params: Mapping[str, object], account: AccountResolver, *, received_at: datetime
) -> tuple[InboundMessage, ...]:
    """The opt-out a status callback reports (``ErrorCode`` 200), or ``()``.

    Args:
        params: the callback's form fields or query parameters.
        account: the account, or a resolver called with ``From`` (your number or sender id).
        received_at: when the callback arrived (aware).

    Raises:
        PayloadError: an error-200 callback lacks ``MessageUUID``, ``From`` or ``To``, or ``To``
            is no phone number.
        ValidationError: *received_at* is naive.
    """
    fields = form(params)
    if (fields.maybe_text("ErrorCode") or "").strip() != OPTED_OUT:
        return ()
    kind = (fields.maybe_text("Type") or "sms").strip().lower()
    return (
        Event(
            account=resolve_account(account, fields.ident("From"), "From"),
            channel=_CHANNELS.get(kind, SMS),
            sender=phone(fields.ident("To"), "To"),
            sender_field="To",
            message_id=message_id(PROVIDER, fields.ident("MessageUUID"), OPTED_OUT),
            received_at=ensure_aware("received_at", received_at),
            provider=PROVIDER,
            verdict=ProviderVerdict.OPT_OUT,
            source=Source.CARRIER,
        ).message(),
    )
