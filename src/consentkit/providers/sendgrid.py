"""Twilio SendGrid Event Webhook: a JSON array of email events, some of which are opt-outs.

* ``unsubscribe`` (the global unsubscribe link) and ``group_unsubscribe`` (an unsubscribe
  group's link, SendGrid's usual footer link) opt the recipient out of email: source
  ``UNSUBSCRIBE_LINK``, the contact's own opt-out.  A group unsubscribe stops the whole email
  channel, not just the group: consentkit has no topics yet, and stopping too much is the safe
  side of a withdrawal.
* ``spamreport`` (the recipient marked the message as spam) is a complaint:
  :attr:`~consentkit.inbound.ProviderVerdict.COMPLAINT`, source ``CARRIER``, recorded as the
  system's opt-out, which no keyword or provider opt-in undoes (mailing someone who reported you
  as spam is what mailbox providers punish); only an admin with the contact's request can.
* ``group_resubscribe`` is ignored: it takes back one unsubscribe group's suppression, a
  per-group preference, while SendGrid's global unsubscribe and the other groups' suppressions
  still stand.  Taken as a resubscription of the email channel it would say "may send" to a
  contact who withdrew all email consent.  A later topics feature can map it to its group.
* Every other event (``processed``, ``delivered``, ``open``, ``bounce``...) gives nothing: a
  bounce says the address does not work, not that its owner withdrew consent.
* ``sg_event_id`` identifies an event across retries; ``timestamp`` is Unix seconds.

One POST carries many independent events.  :func:`parse_batch` reads each on its own and reports
the ones it cannot read (a missing field, or an address consentkit cannot represent, such as a
quoted local part) as rejected while returning the others; :func:`parse` is the strict variant,
refusing the whole POST for one bad event.  A webhook endpoint uses :func:`parse_batch`: a POST
that fails is retried with the same bad event forever, and its valid opt-outs never applied.

The Signed Event Webhook is an ECDSA (P-256) signature in
``X-Twilio-Email-Event-Webhook-Signature`` over the timestamp header and the raw body.  Checking
it needs an elliptic-curve library that consentkit does not depend on: the host verifies it
(SendGrid's own helper library does, or ``cryptography``), or secures the endpoint with OAuth or
basic auth, before calling :func:`parse_batch`.

SendGrid events name no sending identity, so a resolver is called with the recipient (``email``);
a host with one webhook URL per account simply passes the account id.

Sources:
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
  https://www.twilio.com/docs/sendgrid/ui/sending-email/group-unsubscribes
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
"""

from __future__ import annotations

from consentkit.channels import EMAIL
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    AccountResolver,
    BatchReader,
    Event,
    ParsedBatch,
    as_node,
    instant,
    items,
    load_json,
    message_id,
    resolve_account,
    strict,
)

__all__ = ["parse", "parse_batch"]

PROVIDER = "sendgrid"
_EVENTS = {
    "unsubscribe": (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
    "group_unsubscribe": (ProviderVerdict.OPT_OUT, Source.UNSUBSCRIBE_LINK),
    "spamreport": (ProviderVerdict.COMPLAINT, Source.CARRIER),
}


def parse_batch(body: bytes | str, account: AccountResolver) -> ParsedBatch:
    """The opt-outs and complaints of one Event Webhook POST, in order, and the events that
    could not be read; other events are skipped unread.

    Args:
        body: the raw request body (a JSON array of events).
        account: the account, or a resolver called with each event's ``email``.

    Returns:
        The messages, and as ``rejected`` each consent event (``body[i]``) that is no object,
        lacks ``email``, ``sg_event_id`` or ``timestamp``, has them malformed, or has an address
        consentkit cannot represent.

    Raises:
        PayloadError: the body is not a JSON array.
    """
    batch = BatchReader()
    for path, item in items(load_json(body), "body"):
        with batch.event(path):
            event = as_node(item, path)
            kind = _EVENTS.get(event.maybe_text("event") or "")
            if kind is None:
                continue
            verdict, source = kind
            email = event.ident("email")
            batch.add(
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
    return batch.result()


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The messages of :func:`parse_batch`, or PayloadError for the first event it rejects
    (strict: one unreadable event refuses the whole POST; endpoints use :func:`parse_batch`).

    Raises:
        PayloadError: the body is not a JSON array of objects, or an opt-out event lacks
            ``email``, ``sg_event_id`` or ``timestamp``, or they are malformed.
    """
    return strict(parse_batch(body, account))
