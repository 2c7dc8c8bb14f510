"""Postmark: the ``SubscriptionChange`` webhook (an address added to or removed from a Message
Stream's suppression list).

Fields: ``RecordType`` (``SubscriptionChange``), ``Recipient``, ``SuppressSending`` (true: the
address was suppressed; false: reactivated), ``SuppressionReason`` (``HardBounce``,
``SpamComplaint``, ``ManualSuppression``), ``Origin`` (``Recipient``: the recipient's own act;
``Customer``: the sender, through Postmark's UI or API; ``Admin``: Postmark staff), ``ChangedAt``
(ISO 8601) and ``MessageID`` (null, or all zeros, for changes without a message).

* ``SpamComplaint``: a complaint, :attr:`~consentkit.inbound.ProviderVerdict.COMPLAINT` with
  source ``CARRIER``, recorded as the system's opt-out, which no keyword or provider opt-in
  undoes (a later reactivation included).
* ``ManualSuppression`` with ``Origin`` ``Recipient`` (the recipient used the unsubscribe link):
  source ``UNSUBSCRIBE_LINK``, the contact's own opt-out.
* ``HardBounce`` is ignored: it says the address does not work, not that its owner withdrew
  consent; treating it as an opt-out would record an unsubscribe nobody asked for.
* A suppression or reactivation by the ``Customer`` or an ``Admin`` is ignored: it is the
  sender's act, not the contact's; the host records its own unsubscribes as an admin (with
  :meth:`~consentkit.service.ConsentService.unsubscribe`), and a resubscribe needs the
  justification only an admin can give.  A reactivation with ``Origin`` ``Recipient`` (the
  "re-subscribe" of the page Postmark shows after an unsubscribe) is the contact taking their own
  unsubscribe back, and is kept as an opt-in: unlike SendGrid's group resubscribe, it is no
  per-list or per-topic preference.  Postmark has no groups or topics inside a Message Stream;
  its suppression list is per stream and a reactivation removes the address's whole-stream
  suppression, the same unit its unsubscribe created, so the opt-in undoes exactly what the
  opt-out recorded.  With several Broadcast streams per account, a reactivation in one stream
  would undo an unsubscribe from another: point one stream's Subscription Change webhook here.
* Other record types (``Bounce``, ``Delivery``...) give nothing.

Postmark does not sign webhooks: protect the endpoint with the basic-auth credentials Postmark
puts in the webhook URL (and HTTPS), and check them before calling :func:`parse`.  Postmark
events name no sending identity every event carries, so a resolver gets the ``Recipient``.

Sources:
  https://postmarkapp.com/developer/webhooks/subscription-change-webhook
  https://postmarkapp.com/developer/webhooks/webhooks-overview (basic auth, no signature)
  https://postmarkapp.com/support/article/1208-how-to-add-an-unsubscribe-link (re-subscribe)
"""

from __future__ import annotations

from consentkit.channels import EMAIL
from consentkit.errors import PayloadError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    AccountResolver,
    Event,
    instant,
    json_node,
    message_id,
    resolve_account,
)

__all__ = ["parse"]

PROVIDER = "postmark"


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The opt-out or opt-in one Postmark webhook reports, or ``()`` (see the module notes).

    Args:
        body: the raw request body (JSON).
        account: the account, or a resolver called with ``Recipient``.

    Raises:
        PayloadError: the body is not a JSON object, or a SubscriptionChange lacks
            ``Recipient``, ``SuppressSending`` or ``ChangedAt``, or they are malformed.
    """
    record = json_node(body)
    if record.maybe_text("RecordType") != "SubscriptionChange":
        return ()
    suppress = record.raw("SuppressSending")
    if not isinstance(suppress, bool):
        raise PayloadError("SuppressSending", f"expected true or false, got {suppress!r:.40}")
    origin = record.maybe_text("Origin")
    reason = record.maybe_text("SuppressionReason")
    if suppress and reason == "SpamComplaint":
        verdict, source = ProviderVerdict.COMPLAINT, Source.CARRIER
    elif origin == "Recipient" and (reason == "ManualSuppression" or not suppress):
        verdict = ProviderVerdict.OPT_OUT if suppress else ProviderVerdict.OPT_IN
        source = Source.UNSUBSCRIBE_LINK
    else:
        return ()
    recipient = record.ident("Recipient")
    changed_at = record.ident("ChangedAt")
    return (
        Event(
            account=resolve_account(account, recipient, "Recipient"),
            channel=EMAIL,
            sender=recipient,
            sender_field="Recipient",
            message_id=message_id(
                PROVIDER, recipient, changed_at, "suppressed" if suppress else "reactivated"
            ),
            received_at=instant(changed_at, "ChangedAt"),
            provider=PROVIDER,
            verdict=verdict,
            source=source,
        ).message(),
    )
