"""Twilio Programmable Messaging: incoming-message webhooks, status callbacks, signatures, TwiML.

* Incoming messages are form fields ``MessageSid``, ``AccountSid``, ``MessagingServiceSid``,
  ``From``, ``To``, ``Body``, ``NumMedia`` (MMS when above 0); WhatsApp and RCS addresses carry a
  ``whatsapp:`` / ``rcs:`` prefix.  With Advanced Opt-Out on a Messaging Service, ``OptOutType``
  is ``STOP``, ``START`` or ``HELP`` for a keyword message: Twilio's own classification, honoured
  as the provider's verdict.  The request carries no time: the caller passes ``received_at``.
* A status callback with ``ErrorCode`` 21610 ("Attempt to send to unsubscribed recipient": the
  ``To`` number replied STOP) is an opt-out reported by Twilio (source ``CARRIER``).
* ``X-Twilio-Signature`` is base64(HMAC-SHA1(auth token, URL + each POST parameter's name and
  value, sorted by name)); a request matched by a Webhooks Rule is signed with the rule's shared
  key, the algorithm named by ``X-Twilio-Webhooks-Signature-Settings``.  Only form-encoded
  webhooks are covered (JSON bodies are signed through a ``bodySHA256`` URL parameter).

Sources:
  https://www.twilio.com/docs/messaging/guides/webhook-request
  https://support.twilio.com/hc/en-us/articles/31560110671259 (OptOutType, Advanced Opt-Out)
  https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
  https://www.twilio.com/docs/api/errors/21610
  https://www.twilio.com/docs/usage/webhooks/webhooks-security
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

from consentkit.channels import MMS, RCS, SMS, WHATSAPP, Channel
from consentkit.errors import PayloadError, SignatureError, ValidationError
from consentkit.inbound import InboundMessage, InboundResult, ProviderVerdict
from consentkit.model import Source, ensure_aware
from consentkit.providers._common import (
    AccountResolver,
    Event,
    Node,
    find_header,
    form,
    header,
    hmac_digest,
    message_id,
    phone,
    raw_body,
    resolve_account,
    secret_bytes,
)

__all__ = ["parse_message", "parse_status", "signature", "twiml_reply", "verify_signature"]

PROVIDER = "twilio"
UNSUBSCRIBED_RECIPIENT = "21610"
"""The error code of a message Twilio refused because its ``To`` number opted out."""

_VERDICTS = {
    "STOP": ProviderVerdict.OPT_OUT,
    "START": ProviderVerdict.OPT_IN,
    "HELP": ProviderVerdict.HELP,
}
_PREFIXES: tuple[tuple[str, Channel], ...] = (("whatsapp:", WHATSAPP), ("rcs:", RCS))
_ALGORITHMS = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}


def _address(value: str) -> tuple[Channel, str]:
    """The channel a Twilio address is on and the address without its channel prefix."""
    folded = value.lower()
    for prefix, ch in _PREFIXES:
        if folded.startswith(prefix):
            return ch, value[len(prefix) :]
    return SMS, value


def parse_message(
    params: Mapping[str, object], account: AccountResolver, *, received_at: datetime
) -> InboundMessage:
    """The InboundMessage of an incoming-message webhook.

    Args:
        params: the request's form fields (or query parameters for GET webhooks).
        account: the account, or a resolver called with the ``To`` address without prefix.
        received_at: when the webhook arrived (aware); Twilio sends no time of its own.

    Raises:
        PayloadError: a required field (``MessageSid``, ``From``, ``To``) is missing or malformed,
            ``NumMedia`` is not a count, or the resolver knows no account for ``To``.
        ValidationError: *received_at* is naive.
    """
    fields = form(params)
    ch, sender = _address(fields.ident("From"))
    _, receiver = _address(fields.ident("To"))
    if ch is SMS and _media_count(fields) > 0:
        ch = MMS
    opt_out_type = fields.maybe_text("OptOutType")
    return Event(
        account=resolve_account(account, receiver, "To"),
        channel=ch,
        sender=phone(sender, "From"),
        sender_field="From",
        message_id=message_id(PROVIDER, fields.ident("MessageSid")),
        received_at=ensure_aware("received_at", received_at),
        provider=PROVIDER,
        body=fields.maybe_text("Body") or "",
        # An OptOutType Twilio may add later is no verdict: consentkit's matcher classifies it.
        verdict=_VERDICTS.get((opt_out_type or "").strip().upper()),
    ).message()


def _media_count(fields: Node) -> int:
    count = (fields.maybe_text("NumMedia") or "0").strip()
    if not count.isdigit() or len(count) > 6:
        raise PayloadError("NumMedia", f"{count[:20]!r} is not a count of media items")
    return int(count)


def parse_status(
    params: Mapping[str, object], account: AccountResolver, *, received_at: datetime
) -> tuple[InboundMessage, ...]:
    """The opt-out a status callback reports, if any: ``ErrorCode`` 21610 means Twilio refused
    the message because its ``To`` number had opted out.  Every other callback gives ``()``.

    Args:
        params: the status callback's form fields.
        account: the account, or a resolver called with the sending address (``From`` without
            prefix, or ``MessagingServiceSid`` when there is no ``From``).
        received_at: when the callback arrived (aware).

    Raises:
        PayloadError: a 21610 callback lacks ``MessageSid`` or ``To``, or ``To`` is no number.
        ValidationError: *received_at* is naive.
    """
    fields = form(params)
    if (fields.maybe_text("ErrorCode") or "").strip() != UNSUBSCRIBED_RECIPIENT:
        return ()
    ch, recipient = _address(fields.ident("To"))
    sender_field = "From" if fields.maybe_text("From") else "MessagingServiceSid"
    _, sent_from = _address(fields.ident(sender_field))
    return (
        Event(
            account=resolve_account(account, sent_from, sender_field),
            channel=ch,
            sender=phone(recipient, "To"),
            sender_field="To",
            message_id=message_id(PROVIDER, fields.ident("MessageSid"), UNSUBSCRIBED_RECIPIENT),
            received_at=ensure_aware("received_at", received_at),
            provider=PROVIDER,
            verdict=ProviderVerdict.OPT_OUT,
            source=Source.CARRIER,
        ).message(),
    )


def twiml_reply(result: InboundResult) -> str:
    """The TwiML response for an incoming-message webhook: ``<Message>`` with the result's reply
    (XML-escaped), or an empty ``<Response/>`` when there is nothing to send.

    Answer a redelivery (``result.replayed``) with it too: Twilio retries because it never got
    the first response, so the retry's TwiML is the only reply that reaches the contact.
    """
    if not isinstance(result, InboundResult):
        raise ValidationError("result", f"expected an InboundResult, got {type(result).__name__}")
    declaration = '<?xml version="1.0" encoding="UTF-8"?>'
    if not result.reply:
        return f"{declaration}<Response/>"
    return f"{declaration}<Response><Message>{escape(result.reply)}</Message></Response>"


def _values(params: Mapping[str, object], key: str) -> list[str]:
    getlist = getattr(params, "getlist", None)
    found = getlist(key) if callable(getlist) else params[key]
    values = found if isinstance(found, list | tuple) else [found]
    return [value for value in values if isinstance(value, str)]


def signature(secret: str, url: str, params: Mapping[str, object], algorithm: str = "sha1") -> str:
    """The signature Twilio computes for a request to *url* with *params* (base64 text), with
    the hashlib *algorithm* (``sha1`` for the auth token, ``sha256`` for a Webhooks Rule).

    *params* may be a plain mapping or a multi-dict with ``getlist`` (Starlette, Django,
    Werkzeug); repeated names are signed value by value, sorted, as Twilio does.
    """
    payload = url
    for key in sorted({k for k in params if isinstance(k, str)}):
        for value in sorted(set(_values(params, key))):
            payload += key + value
    digest = hmac_digest(secret_bytes(secret, "secret"), raw_body(payload), algorithm)
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """*url* as given, and with its default port added or removed: Twilio's own validator
    accepts both, since the URL Twilio signs does not always carry the port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    host = parts.netloc.rpartition(":")[0] if port else parts.netloc
    default = 443 if parts.scheme == "https" else 80
    other = host if port else f"{parts.netloc}:{default}"
    return [url, urlunsplit(parts._replace(netloc=other))]


def verify_signature(
    secret: str, url: str, params: Mapping[str, object], headers: Mapping[str, str]
) -> None:
    """Check ``X-Twilio-Signature`` of a form-encoded webhook.

    Args:
        secret: the account's auth token (or a Webhooks Rule's shared key, when the request
            carries ``X-Twilio-Webhooks-Signature-Settings``).
        url: the full URL Twilio requested, with its query string, as configured in Twilio
            (behind a proxy, rebuild the public URL; the local one will not match).
        params: the POST form fields (an empty mapping for GET requests).
        headers: the request headers (looked up case-insensitively).

    Raises:
        SignatureError: the header is missing, the algorithm is unknown, or the signature does
            not match the URL, the parameters and the secret.
        ValidationError: *secret* is empty.
    """
    given = header(headers, "X-Twilio-Signature")
    settings = find_header(headers, "X-Twilio-Webhooks-Signature-Settings") or ""
    algorithm = "HMAC_SHA1"
    for part in settings.split(","):
        name, _, value = part.partition("=")
        if name.strip() == "algorithm" and value.strip():
            algorithm = value.strip().upper()
    hash_name = _ALGORITHMS.get(algorithm)
    if hash_name is None:
        raise SignatureError(f"unsupported Twilio signature algorithm {algorithm[:40]!r}")
    if not isinstance(url, str) or not isinstance(params, Mapping):
        raise SignatureError("the request URL (str) and form fields (mapping) are needed")
    expected = given.encode("utf-8", "replace")
    computed = [signature(secret, candidate, params, hash_name) for candidate in _url_variants(url)]
    if not any(hmac.compare_digest(value.encode(), expected) for value in computed):
        raise SignatureError(
            "the Twilio signature does not match: forged, altered, for another URL, or signed "
            "with another auth token"
        )
