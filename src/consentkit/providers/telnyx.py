"""Telnyx Messaging: ``message.received`` and ``message.finalized`` webhooks, Ed25519 signatures.

* ``message.received``: ``data.payload.from.phone_number`` sent ``text`` to
  ``data.payload.to[0].phone_number`` (``type`` SMS or MMS; ``media`` attachments); ``id`` and
  ``received_at`` identify and date it.  With Advanced Opt-In/Out, ``autoresponse_type`` names the
  keyword Telnyx recognised (``stop``, ``start``, ``help``): honoured as the provider's verdict.
* ``message.finalized`` whose ``errors`` carry code 40300 ("Blocked due to STOP message": the
  recipient opted out of the messaging profile) is an opt-out reported by Telnyx (``CARRIER``)
  for each ``to[]`` number.  Every other event type gives ``()``.
* A finalized message of several recipients (a group MMS) is a batch: :func:`parse_batch` reads
  each ``to[]`` number on its own and reports the ones it cannot read (a number that is no phone
  number consentkit can represent) as rejected while returning the others; :func:`parse`
  refuses the whole webhook for one.  The event's own fields (type, id, the sending number, the
  time) are the batch's frame, and a ``message.received`` is a single event: a webhook without
  them, or a malformed received message, raises PayloadError from both.
* Telnyx signs ``f"{telnyx-timestamp}|{raw body}"`` with Ed25519; the account's public key
  (base64, Mission Control > Keys & Credentials) verifies it.  Checking needs PyNaCl, the
  ``ed25519`` extra (``pip install 'consentkit[ed25519]'``), imported only when verifying.

Sources:
  https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks
  https://developers.telnyx.com/api-reference/callbacks/inbound-message
  https://developers.telnyx.com/docs/messaging/messages/advanced-opt-in-out
  https://developers.telnyx.com/docs/messaging/messages/error-codes
  https://developers.telnyx.com/docs/development/sdk/python/webhooks
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timedelta

from consentkit.channels import MMS, SMS
from consentkit.errors import PayloadError, SignatureError, ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    DEFAULT_TOLERANCE,
    AccountResolver,
    BatchReader,
    Event,
    Node,
    ParsedBatch,
    as_node,
    check_fresh,
    decode_signature,
    header,
    instant,
    json_node,
    message_id,
    phone,
    raw_body,
    resolve_account,
    strict,
)

__all__ = ["parse", "parse_batch", "verify_signature"]

PROVIDER = "telnyx"
BLOCKED_BY_STOP = "40300"
"""The error code of a message Telnyx blocked because its recipient opted out."""

_VERDICTS = {
    "stop": ProviderVerdict.OPT_OUT,
    "start": ProviderVerdict.OPT_IN,
    "help": ProviderVerdict.HELP,
}


def parse_batch(body: bytes | str, account: AccountResolver) -> ParsedBatch:
    """The messages and opt-outs of one Telnyx messaging webhook, and the recipients of a
    finalized message that could not be read (``data.payload.to[i]``).

    Args:
        body: the raw request body (JSON).
        account: the account, or a resolver called with the Telnyx number of the event (the
            ``to`` number of a received message, the ``from`` number of a finalized one).

    Raises:
        PayloadError: the body is not JSON, or a field of the event itself (not of one
            recipient) is missing or malformed.
    """
    data = json_node(body).node("data")
    event_type = data.text("event_type")
    batch = BatchReader()
    if event_type == "message.received":
        batch.add(_received(data, account))
    elif event_type == "message.finalized":
        _blocked(batch, data, account)
    return batch.result()


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The messages of :func:`parse_batch`, or PayloadError for the first recipient it rejects
    (strict: one unreadable recipient refuses the whole webhook).

    Raises:
        PayloadError: the body is not JSON, or a field the event needs is missing or malformed.
    """
    return strict(parse_batch(body, account))


def _received(data: Node, account: AccountResolver) -> InboundMessage:
    payload = data.node("payload")
    receivers = payload.nodes("to")
    if not receivers:
        raise PayloadError(payload.name("to"), "lists no receiving number")
    receiver = receivers[0].ident("phone_number")
    media = payload.get("media")
    is_mms = (payload.maybe_text("type") or "").upper() == "MMS" or bool(media)
    autoresponse = (payload.maybe_text("autoresponse_type") or "").strip().lower()
    return Event(
        account=resolve_account(account, receiver, receivers[0].name("phone_number")),
        channel=MMS if is_mms else SMS,
        sender=phone(payload.node("from").ident("phone_number"), "data.payload.from.phone_number"),
        sender_field="data.payload.from.phone_number",
        message_id=message_id(PROVIDER, payload.ident("id")),
        received_at=_time(payload, data, "received_at"),
        provider=PROVIDER,
        body=payload.maybe_text("text") or "",
        verdict=_VERDICTS.get(autoresponse),
    ).message()


def _time(payload: Node, data: Node, key: str) -> datetime:
    """The payload's own time *key*, or the event's ``occurred_at``."""
    if payload.get(key) is not None:
        return instant(payload.raw(key), payload.name(key))
    return instant(data.raw("occurred_at"), data.name("occurred_at"))


def _blocked(batch: BatchReader, data: Node, account: AccountResolver) -> None:
    payload = data.node("payload")
    codes = {str(error.get("code")) for error in payload.nodes("errors")}
    if BLOCKED_BY_STOP not in codes:
        return
    sent_from = payload.node("from").ident("phone_number")
    owner = resolve_account(account, sent_from, "data.payload.from.phone_number")
    is_mms = (payload.maybe_text("type") or "").upper() == "MMS"
    at = _time(payload, data, "completed_at")
    event_id = payload.ident("id")
    for path, item in payload.items("to"):
        with batch.event(path):
            recipient = as_node(item, path)
            number = phone(recipient.ident("phone_number"), recipient.name("phone_number"))
            batch.add(
                Event(
                    account=owner,
                    channel=MMS if is_mms else SMS,
                    sender=number,
                    sender_field=recipient.name("phone_number"),
                    message_id=message_id(PROVIDER, event_id, BLOCKED_BY_STOP, number),
                    received_at=at,
                    provider=PROVIDER,
                    verdict=ProviderVerdict.OPT_OUT,
                    source=Source.CARRIER,
                ).message()
            )


def verify_signature(
    body: bytes | str,
    headers: Mapping[str, str],
    public_key: str,
    *,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check the ``telnyx-signature-ed25519`` and ``telnyx-timestamp`` headers of a webhook.

    Args:
        body: the raw request body, exactly as received.
        headers: the request headers (looked up case-insensitively).
        public_key: the account's Ed25519 public key, base64 (32 bytes).
        now: the current time (aware), to refuse replays.
        tolerance: how far the signed timestamp may be from *now* (5 minutes by default).

    Raises:
        SignatureError: a header is missing, the timestamp is too far from *now*, the signature
            does not verify, or PyNaCl is not installed.
        ValidationError: *public_key* is not a base64 32-byte key, or *now* is naive.
    """
    signature = decode_signature(header(headers, "telnyx-signature-ed25519"), "base64", "Telnyx")
    timestamp = header(headers, "telnyx-timestamp")
    check_fresh(timestamp, now, tolerance, "Telnyx")
    try:
        from nacl.exceptions import BadSignatureError, CryptoError
        from nacl.signing import VerifyKey
    except ImportError:
        raise SignatureError(
            "cannot check Telnyx signatures: PyNaCl is not installed; "
            "pip install 'consentkit[ed25519]'"
        ) from None
    key = _public_key(public_key)
    try:
        VerifyKey(key).verify(timestamp.encode("ascii") + b"|" + raw_body(body), signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        raise SignatureError(
            "the Telnyx signature does not match: forged, altered, or signed with another key"
        ) from None


def _public_key(public_key: str) -> bytes:
    try:
        key = base64.b64decode(public_key.encode("ascii"), validate=True)
    except (AttributeError, binascii.Error, UnicodeEncodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ValidationError(
            "public_key", "expected the account's base64 Ed25519 public key (32 bytes)"
        )
    return key
