"""Vonage SMS API: inbound-message webhooks, delivery receipts, signed webhooks.

* An inbound SMS (GET query, POST form or JSON, as configured) carries ``msisdn`` (the sender),
  ``to`` (your virtual number), ``messageId``, ``text``, ``keyword`` (just the first word, so
  no verdict: consentkit's matcher reads the whole text) and ``message-timestamp`` (UTC).  Parts
  of a concatenated message arrive as separate webhooks and are handled one by one.
* A delivery receipt with ``err-code`` 9 means "the user has requested not to receive messages
  from the sending number": an opt-out reported by Vonage (``CARRIER``) for ``msisdn``, which
  in a receipt is the recipient.
* Signed webhooks (enabled by Vonage support) add ``timestamp``, ``nonce`` and ``sig``: every
  other parameter, sorted by name, as ``&name=value`` (``&`` and ``=`` in values replaced by
  ``_``), hashed with the signature secret: ``md5hash`` is MD5(string + secret); ``md5``,
  ``sha1``, ``sha256``, ``sha512`` are HMACs keyed by the secret.  The Messages API signs with a
  JWT instead, which this module does not cover.

Sources:
  https://developer.vonage.com/en/messaging/sms/guides/inbound-sms
  https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts
  https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers
  https://api.support.vonage.com/hc/en-us/articles/204014733 (err-code 9: Illegal Number)
  https://developer.vonage.com/en/getting-started/concepts/signing-messages
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta

from consentkit.channels import SMS
from consentkit.errors import SignatureError, ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    DEFAULT_TOLERANCE,
    AccountResolver,
    Event,
    Node,
    check_fresh,
    decode_signature,
    form,
    hmac_digest,
    instant,
    message_id,
    phone,
    require_equal,
    resolve_account,
    secret_bytes,
)

__all__ = ["parse_message", "parse_receipt", "signature", "verify_signature"]

PROVIDER = "vonage"
OPTED_OUT = "9"
"""The delivery-receipt ``err-code`` of a recipient who asked for no more messages."""

_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")


def _time(fields: Node) -> datetime:
    key = "message-timestamp" if fields.get("message-timestamp") is not None else "timestamp"
    return instant(fields.raw(key), key)


def parse_message(params: Mapping[str, object], account: AccountResolver) -> InboundMessage:
    """The InboundMessage of an inbound-SMS webhook.

    Args:
        params: the query parameters, form fields or JSON object of the request.
        account: the account, or a resolver called with ``to`` (your Vonage number).

    Raises:
        PayloadError: ``msisdn``, ``to``, ``messageId`` or the timestamp is missing or malformed.
    """
    fields = form(params)
    return Event(
        account=resolve_account(account, fields.ident("to"), "to"),
        channel=SMS,
        sender=phone(fields.ident("msisdn"), "msisdn"),
        sender_field="msisdn",
        message_id=message_id(PROVIDER, fields.ident("messageId")),
        received_at=_time(fields),
        provider=PROVIDER,
        # Binary messages carry "data" and no text: nothing for the matcher to read.
        body=fields.maybe_text("text") or "",
    ).message()


def parse_receipt(
    params: Mapping[str, object], account: AccountResolver
) -> tuple[InboundMessage, ...]:
    """The opt-out a delivery receipt reports (``err-code`` 9), or ``()`` for any other receipt.

    Args:
        params: the receipt's query parameters, form fields or JSON object.
        account: the account, or a resolver called with ``to`` (the sender id you used).

    Raises:
        PayloadError: an err-code 9 receipt lacks ``msisdn``, ``to``, ``messageId`` or its time.
    """
    fields = form(params)
    if (fields.maybe_text("err-code") or "").strip() != OPTED_OUT:
        return ()
    return (
        Event(
            account=resolve_account(account, fields.ident("to"), "to"),
            channel=SMS,
            sender=phone(fields.ident("msisdn"), "msisdn"),
            sender_field="msisdn",
            message_id=message_id(PROVIDER, fields.ident("messageId"), "err-code", OPTED_OUT),
            received_at=_time(fields),
            provider=PROVIDER,
            verdict=ProviderVerdict.OPT_OUT,
            source=Source.CARRIER,
        ).message(),
    )


def signature(params: Mapping[str, object], secret: str, method: str = "md5hash") -> str:
    """The lower-case hex signature Vonage computes over *params* (without ``sig``)."""
    if method not in _METHODS:
        raise ValidationError("method", f"{method!r} is not one of: {', '.join(_METHODS)}")
    signed = "".join(
        f"&{key}={str(params[key]).replace('&', '_').replace('=', '_')}"
        for key in sorted(k for k in params if isinstance(k, str) and k != "sig")
    ).encode("utf-8", "surrogatepass")
    key = secret_bytes(secret, "secret")
    if method == "md5hash":
        return hashlib.md5(signed + key, usedforsecurity=False).hexdigest()
    return hmac_digest(key, signed, method).hex()


def verify_signature(
    params: Mapping[str, object],
    secret: str,
    *,
    method: str = "md5hash",
    now: datetime | None = None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check the ``sig`` parameter of a signed SMS API webhook.

    Args:
        params: every parameter of the request, ``sig`` included.
        secret: the account's signature secret.
        method: the signing method chosen in the dashboard (``md5hash`` by default).
        now: if given, the signed ``timestamp`` must also be within *tolerance* of it.
        tolerance: see *now*.

    Raises:
        SignatureError: ``sig`` (or, with *now*, ``timestamp``) is missing, or the signature does
            not match, or the timestamp is too far from *now*.
        ValidationError: *secret* is empty, or *method* is unknown.
    """
    if not isinstance(params, Mapping):
        raise SignatureError("the request parameters (a mapping) are needed")
    given = params.get("sig")
    if not isinstance(given, str) or not given.strip():
        raise SignatureError("the sig parameter is missing: the webhook is not signed")
    if now is not None:
        timestamp = params.get("timestamp")
        if not isinstance(timestamp, str):
            raise SignatureError("the signed timestamp parameter is missing")
        check_fresh(timestamp, now, tolerance, "Vonage")
    expected = bytes.fromhex(signature(params, secret, method))
    require_equal(expected, decode_signature(given.strip(), "hex", "Vonage"), "Vonage")
