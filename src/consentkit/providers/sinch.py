"""Sinch Conversation API: ``MESSAGE_INBOUND``, ``OPT_OUT`` and ``OPT_IN`` callbacks, signatures.

* ``message`` (trigger ``MESSAGE_INBOUND``, ``direction`` ``TO_APP``): a contact wrote on
  ``channel_identity.channel`` from ``channel_identity.identity``; the text is in
  ``contact_message.text_message.text`` (or a reply's or choice's text).  No verdict: the matcher
  classifies it.  SMS, MMS, RCS and WhatsApp identities are phone numbers; other channels
  (``MESSENGER``, ``VIBERBM``...) become custom channels keyed by the lower-cased name, addressed
  by the identity as given, and the service must have that channel registered.
* ``opt_out_notification`` with status ``OPT_OUT_SUCCEEDED``: Sinch registered an opt-out of the
  identity on the channel (a channel-native opt-out such as Viber's, or one registered through
  the Opt-out API): honoured as an opt-out reported by the provider (``CARRIER``).
* ``opt_in_notification`` is deliberately ignored: Sinch posts it for opt-ins registered through
  its API, usually by the host itself, and consentkit never lets the sender's own act stand for
  the contact's request to resubscribe (docs/policy.md).  Every other callback gives ``()``.
* With a webhook secret, Sinch sends ``x-sinch-webhook-signature`` =
  base64(HMAC(secret, raw body + "." + nonce + "." + timestamp)), the algorithm in
  ``x-sinch-webhook-signature-algorithm`` (``HmacSHA256`` by default).

Sources:
  https://developers.sinch.com/docs/conversation/callbacks
  https://developers.sinch.com/docs/conversation/channel-support/whatsapp/message-support
  https://developers.sinch.com/docs/conversation/api-reference/conversation/tag/OptIn-and-OptOut
  https://developers.sinch.com/sdk/sinch-sdk-python/2.4.0/api/sinch.domains.conversation.models.v1.sinch_events.opt_in_out.opt_out_notification.html
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from consentkit.channels import MMS, RCS, SMS, WHATSAPP, Channel, channel
from consentkit.errors import PayloadError, SignatureError, ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    DEFAULT_TOLERANCE,
    AccountResolver,
    Event,
    Node,
    check_fresh,
    decode_signature,
    find_header,
    header,
    hmac_digest,
    instant,
    json_node,
    message_id,
    phone,
    raw_body,
    require_equal,
    resolve_account,
    secret_bytes,
)

__all__ = ["parse", "verify_signature"]

PROVIDER = "sinch"
_PHONE_CHANNELS: Mapping[str, Channel] = {"SMS": SMS, "MMS": MMS, "RCS": RCS, "WHATSAPP": WHATSAPP}
_ALGORITHMS = {"HMACSHA256": "sha256", "HMACSHA384": "sha384", "HMACSHA512": "sha512"}


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The messages and opt-outs of one Conversation API callback.

    Args:
        body: the raw request body (JSON).
        account: the account, or a resolver called with the callback's ``app_id``.

    Raises:
        PayloadError: the body is not JSON, or a field the callback needs is missing or
            malformed (a channel name that is no valid channel key included).
    """
    callback = json_node(body)
    message = callback.maybe_node("message")
    if message is not None:
        if message.maybe_text("direction") != "TO_APP":
            return ()
        return (_message(callback, message, account),)
    notice = callback.maybe_node("opt_out_notification")
    if notice is None or notice.maybe_text("status") != "OPT_OUT_SUCCEEDED":
        return ()
    ch, identity = _identity(notice)
    at = _time(callback, "accepted_time")
    request = notice.maybe_text("request_id") or at.isoformat()
    return (
        Event(
            account=resolve_account(account, callback.ident("app_id"), "app_id"),
            channel=ch,
            sender=identity,
            sender_field=notice.name("identity"),
            message_id=message_id(PROVIDER, "opt_out", request, identity),
            received_at=at,
            provider=PROVIDER,
            verdict=ProviderVerdict.OPT_OUT,
            source=Source.CARRIER,
        ).message(),
    )


def _message(callback: Node, message: Node, account: AccountResolver) -> InboundMessage:
    ch, identity = _identity(message.node("channel_identity"))
    return Event(
        account=resolve_account(account, callback.ident("app_id"), "app_id"),
        channel=ch,
        sender=identity,
        sender_field=message.name("channel_identity.identity"),
        message_id=message_id(PROVIDER, message.ident("id")),
        received_at=_time(message, "accept_time", callback),
        provider=PROVIDER,
        body=_text(message.maybe_node("contact_message")),
    ).message()


def _identity(node: Node) -> tuple[Channel, str]:
    """The channel and the contact's address of a ``channel_identity`` or a notification."""
    name = node.ident("channel").strip().upper()
    identity = node.ident("identity").strip()
    found = _PHONE_CHANNELS.get(name)
    if found is not None:
        return found, phone(identity, node.name("identity"))
    try:
        return channel(name.lower()), identity
    except ValidationError as error:
        raise PayloadError(node.name("channel"), str(error).partition(": ")[2]) from None


def _text(contact_message: Node | None) -> str:
    """The text of a contact message: a text, a reply's text, or a choice's postback data."""
    if contact_message is None:
        return ""
    for container in (contact_message, contact_message.maybe_node("reply_message")):
        text = container.maybe_node("text_message") if container is not None else None
        if text is not None:
            return text.maybe_text("text") or ""
    choice = contact_message.maybe_node("choice_response_message")
    return (choice.maybe_text("postback_data") or "") if choice is not None else ""


def _time(node: Node, key: str, fallback: Node | None = None) -> datetime:
    """The time *key* of *node*, or the callback's ``accepted_time`` when *node* has none."""
    source = fallback if node.get(key) is None and fallback is not None else node
    key = "accepted_time" if source is fallback else key
    return instant(source.raw(key), source.name(key))


def verify_signature(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check the ``x-sinch-webhook-signature`` headers of a Conversation API callback.

    Args:
        body: the raw request body, exactly as received.
        headers: the request headers (looked up case-insensitively).
        secret: the webhook's secret, as set on the Conversation API webhook.
        now: the current time (aware), to refuse replays.
        tolerance: how far the signed timestamp may be from *now* (5 minutes by default).

    Raises:
        SignatureError: a header is missing, the algorithm is unknown, the timestamp is too far
            from *now*, or the signature does not match.
        ValidationError: *secret* is empty, or *now* is naive.
    """
    given = decode_signature(header(headers, "x-sinch-webhook-signature"), "base64", "Sinch")
    nonce = header(headers, "x-sinch-webhook-signature-nonce")
    timestamp = header(headers, "x-sinch-webhook-signature-timestamp")
    algorithm = _ALGORITHMS.get(
        (find_header(headers, "x-sinch-webhook-signature-algorithm") or "HmacSHA256").upper()
    )
    if algorithm is None:
        raise SignatureError("unsupported Sinch signature algorithm")
    check_fresh(timestamp, now, tolerance, "Sinch")
    signed = raw_body(body) + f".{nonce}.{timestamp}".encode("utf-8", "surrogatepass")
    expected = hmac_digest(secret_bytes(secret, "secret"), signed, algorithm)
    require_equal(expected, given, "Sinch")
