"""Mailgun webhooks: ``unsubscribed`` and ``complained`` events, and their signature.

A webhook posts JSON with ``signature`` (``timestamp``, ``token``, ``signature``) and
``event-data`` (``event``, ``recipient``, ``id``, ``timestamp`` in Unix seconds with a fraction).

* ``unsubscribed`` (the recipient clicked the unsubscribe link): source ``UNSUBSCRIBE_LINK``,
  the contact's own opt-out.
* ``complained`` (the recipient pressed "spam"; the mailbox provider's feedback loop told
  Mailgun): a complaint, :attr:`~consentkit.inbound.ProviderVerdict.COMPLAINT` with source
  ``CARRIER``, recorded as the system's opt-out, which no keyword or provider opt-in undoes.
* Every other event gives nothing.  Mailgun's ``id`` is unique only within a day, so the key is
  the id and the event's timestamp together.

The signature is hex HMAC-SHA256 of ``timestamp + token`` under the webhook signing key; the
timestamp must be recent (replay protection).  Mailgun events name no sending identity that
every event carries, so a resolver is called with the recipient.

Sources:
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
  https://documentation.mailgun.com/docs/mailgun/user-manual/events
  https://documentation.mailgun.com/docs/mailgun/user-manual/events/event-structure
"""

from __future__ import annotations

from datetime import datetime, timedelta

from consentkit.channels import EMAIL
from consentkit.errors import SignatureError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    DEFAULT_TOLERANCE,
    AccountResolver,
    Event,
    check_fresh,
    decode_signature,
    hmac_digest,
    instant,
    json_node,
    message_id,
    raw_body,
    require_equal,
    resolve_account,
    secret_bytes,
)

__all__ = ["parse", "verify_signature"]

PROVIDER = "mailgun"
_EVENTS = {
    "unsubscribed": (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
    "complained": (ProviderVerdict.COMPLAINT, Source.CARRIER),
}


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The opt-out or complaint one Mailgun webhook reports, or ``()`` for any other event.

    Args:
        body: the raw request body (JSON).
        account: the account, or a resolver called with the event's ``recipient``.

    Raises:
        PayloadError: the body is not JSON, lacks ``event-data``, or an opt-out event lacks
            ``recipient``, ``id`` or ``timestamp``, or they are malformed.
    """
    data = json_node(body).node("event-data")
    kind = _EVENTS.get(data.maybe_text("event") or "")
    if kind is None:
        return ()
    verdict, source = kind
    recipient = data.ident("recipient")
    return (
        Event(
            account=resolve_account(account, recipient, data.name("recipient")),
            channel=EMAIL,
            sender=recipient,
            sender_field=data.name("recipient"),
            message_id=message_id(PROVIDER, data.ident("id"), str(data.raw("timestamp"))),
            received_at=instant(data.raw("timestamp"), data.name("timestamp")),
            provider=PROVIDER,
            verdict=verdict,
            source=source,
        ).message(),
    )


def verify_signature(
    body: bytes | str,
    signing_key: str,
    *,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check the ``signature`` object of a Mailgun webhook body.

    Args:
        body: the raw request body (JSON).
        signing_key: the HTTP webhook signing key from the Mailgun control panel.
        now: the current time (aware); the signed timestamp must be within *tolerance*.
        tolerance: 5 minutes by default.

    Raises:
        SignatureError: the signature object or one of its fields is missing, the timestamp is
            too far from *now*, or the signature does not match.
        PayloadError: the body is not a JSON object.
        ValidationError: *signing_key* is empty, or *now* is naive.
    """
    signature = json_node(body).get("signature")
    fields = signature if isinstance(signature, dict) else {}
    timestamp, token, given = (fields.get(key) for key in ("timestamp", "token", "signature"))
    if not isinstance(token, str) or not isinstance(given, str):
        raise SignatureError("the Mailgun signature object is missing: the webhook is not signed")
    stamp = str(timestamp) if isinstance(timestamp, str | int) else ""
    check_fresh(stamp, now, tolerance, "Mailgun")
    expected = hmac_digest(secret_bytes(signing_key, "signing_key"), raw_body(stamp + token))
    require_equal(expected, decode_signature(given, "hex", "Mailgun"), "Mailgun")
