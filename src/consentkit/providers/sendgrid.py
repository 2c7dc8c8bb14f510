"""Twilio SendGrid Event Webhook: a JSON array of email events, some of which are opt-outs.

* ``unsubscribe`` (the global unsubscribe link) and ``group_unsubscribe`` (an unsubscribe
  group's link, SendGrid's usual footer link) opt the recipient out of email: source
  ``UNSUBSCRIBE_LINK``.  ``spamreport`` (the recipient marked the message as spam) is an opt-out
  reported by the provider: source ``CARRIER``.  ``group_resubscribe`` (the recipient's own choice
  on SendGrid's preference page) takes the recipient's unsubscribe back.
* Every other event (``processed``, ``delivered``, ``open``, ``bounce``...) gives nothing: a
  bounce says the address does not work, not that its owner withdrew consent.
* ``sg_event_id`` identifies an event across retries; ``timestamp`` is Unix seconds.

The Signed Event Webhook is an ECDSA (P-256) signature in
``X-Twilio-Email-Event-Webhook-Signature`` over the timestamp header and the raw body.  Checking
it needs an elliptic-curve library that consentkit does not depend on: the host verifies it
(SendGrid's own helper library does, or ``cryptography``), or secures the endpoint with OAuth or
basic auth, before calling :func:`parse`.

SendGrid events name no sending identity, so a resolver is called with the recipient (``email``);
a host with one webhook URL per account simply passes the account id.

Sources:
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
"""

from __future__ import annotations

from consentkit.channels import EMAIL
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    AccountResolver,
    Event,
    as_nodes,
    instant,
    load_json,
    message_id,
    resolve_account,
)

__all__ = ["parse"]

PROVIDER = "sendgrid"
_EVENTS = {
    "unsubscribe": (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
    "group_unsubscribe": (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
    "spamreport": (ProviderVerdict.OPT_OUT, Source.CARRIER),
    "group_resubscribe": (ProviderVerdict.OPT_IN, Source.UNSUBSCRIBE_LINK),
}


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The opt-outs and resubscribes of one Event Webhook POST, in order; other events skipped.

    Args:
        body: the raw request body (a JSON array of events).
        account: the account, or a resolver called with each event's ``email``.

    Raises:
        PayloadError: the body is not a JSON array of objects, or an opt-out event lacks
            ``email``, ``sg_event_id`` or ``timestamp``, or they are malformed.
    """
    found = []
    for event in as_nodes(load_json(body), "body"):
        kind = _EVENTS.get(event.maybe_text("event") or "")
        if kind is None:
            continue
        verdict, source = kind
        email = event.ident("email")
        found.append(
            Event(
                account=resolve_account(account, email, event.name("email")),
                channel=EMAIL,
                sender=email,
                sender_field=event.name("email"),
                message_id=message_id(PROVIDER, event.ident("sg_event_id")),
                received_at=instant(event.raw("timestamp"), event.name("timestamp")),
                provider=PROVIDER,
                verdict=verdict,
                source=source,
            ).message()
        )
    return tuple(found)
