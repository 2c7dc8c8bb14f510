"""WhatsApp Business Platform (Cloud API): the ``messages`` and ``user_preferences`` webhooks.

A webhook batches ``entry[].changes[]``; each change's ``value`` carries ``metadata``
(``phone_number_id``, ``display_phone_number``: the business number, for the account) and one of:

* ``messages[]``: ``from`` (the WhatsApp user id, the phone number without ``+``), ``id``,
  ``timestamp`` and ``type``: ``text`` (``text.body``), ``button`` (a template quick-reply:
  ``button.text``, e.g. "Stop promotions", which the WhatsApp keywords of the matcher treat as
  an opt-out), ``interactive`` (``button_reply.title`` / ``list_reply.title``); other types give
  an empty body.  No verdict: the matcher classifies the text.
* ``user_preferences[]`` with ``category`` ``marketing_messages``: ``value`` ``stop`` / ``resume``
  is the user's own choice in WhatsApp, honoured as an opt-out / opt-in verdict.
* ``statuses[]`` of ``status`` ``failed`` with error code 131050 (the user stopped marketing
  messages from the business): an opt-out reported by WhatsApp (``CARRIER``) for
  ``recipient_id``.  Other statuses give nothing.

One webhook may batch several changes, each with several events.  :func:`parse_batch` reads each
event (and each entry and change) on its own and reports the ones it cannot read (a missing
field, an unknown ``phone_number_id``, a user id that is no phone number) as rejected while
returning the others; :func:`parse` is the strict variant, refusing the whole webhook for one.
A webhook endpoint uses :func:`parse_batch`: Meta retries a failed webhook, with the same bad
event, for days, and its valid opt-outs are applied only once the webhook succeeds.

``X-Hub-Signature-256`` is ``sha256=`` + hex HMAC-SHA256 of the raw body under the app secret.

Sources:
  https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages
  https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences
  https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes
  https://developers.facebook.com/docs/messenger-platform/webhook-reference (Meta webhooks' signing)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

from consentkit.channels import WHATSAPP
from consentkit.errors import PayloadError, SignatureError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    AccountResolver,
    BatchReader,
    Event,
    Node,
    ParsedBatch,
    as_node,
    decode_signature,
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
    strict,
)

__all__ = ["parse", "parse_batch", "verify_signature"]

PROVIDER = "whatsapp"
MARKETING_STOPPED = 131050
"""The error code of a marketing message the user had stopped."""

_PREFERENCES = {"stop": ProviderVerdict.OPT_OUT, "resume": ProviderVerdict.OPT_IN}


def parse_batch(body: bytes | str, account: AccountResolver) -> ParsedBatch:
    """Every message, preference change and opted-out failure of one webhook, in order, and the
    events that could not be read.

    Args:
        body: the raw request body (JSON).
        account: the account, or a resolver called with ``metadata.phone_number_id`` of each
            change (the business phone number's id).

    Returns:
        The messages, and as ``rejected`` each event (``entry[i].changes[j].value.messages[k]``,
        ``...user_preferences[k]``, ``...statuses[k]``), or each entry, change or list of events,
        that is malformed or lacks a field it needs.

    Raises:
        PayloadError: the body is not a ``whatsapp_business_account`` webhook, or its ``entry``
            is not a list.
    """
    root = json_node(body)
    if root.text("object") != "whatsapp_business_account":
        raise PayloadError("object", "expected a whatsapp_business_account webhook")
    batch = BatchReader()
    for entry_path, entry in root.items("entry"):
        with batch.event(entry_path):
            for change_path, change in as_node(entry, entry_path).items("changes"):
                with batch.event(change_path):
                    value = _Change(as_node(change, change_path).node("value"), account)
                    _read_change(batch, value)
    return batch.result()


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """The messages of :func:`parse_batch`, or PayloadError for the first event it rejects
    (strict: one unreadable event refuses the whole webhook; endpoints use :func:`parse_batch`).

    Raises:
        PayloadError: the body is not a ``whatsapp_business_account`` webhook, or a message,
            preference or status lacks a field it needs.
    """
    return strict(parse_batch(body, account))


_PLAIN = (None, Source.INBOUND_KEYWORD)
_CARRIER_OPT_OUT = (ProviderVerdict.OPT_OUT, Source.CARRIER)


class _Change:
    """One change's ``value``; its account is resolved only when an event needs it (a
    status-only change of another number must not fail on an unknown ``phone_number_id``)."""

    def __init__(self, value: Node, account: AccountResolver) -> None:
        self.value = value
        self._account = account
        self._resolved: str | None = None

    def account(self) -> str:
        if self._resolved is None:
            metadata = self.value.node("metadata")
            self._resolved = resolve_account(
                self._account, metadata.ident("phone_number_id"), metadata.name("phone_number_id")
            )
        return self._resolved

    def event(
        self,
        node: Node,
        key: str,
        event_id: str,
        *,
        body: str = "",
        kind: tuple[ProviderVerdict | None, Source] = _PLAIN,
    ) -> InboundMessage:
        """One event of *node*: the user's id in *key*, dated by its ``timestamp``."""
        return Event(
            account=self.account(),
            channel=WHATSAPP,
            sender=phone(node.ident(key), node.name(key)),
            sender_field=node.name(key),
            message_id=event_id,
            received_at=instant(node.raw("timestamp"), node.name("timestamp")),
            provider=PROVIDER,
            body=body,
            verdict=kind[0],
            source=kind[1],
        ).message()


_Reader: TypeAlias = Callable[[_Change, Node], InboundMessage | None]


def _read_change(batch: BatchReader, change: _Change) -> None:
    """Each message, preference and status of *change*, each read on its own."""
    readers: tuple[tuple[str, _Reader], ...] = (
        ("messages", _message),
        ("user_preferences", _preference),
        ("statuses", _failure),
    )
    for key, reader in readers:
        with batch.event(change.value.name(key)):
            for path, item in change.value.items(key):
                with batch.event(path):
                    found = reader(change, as_node(item, path))
                    if found is not None:
                        batch.add(found)


def _message(change: _Change, message: Node) -> InboundMessage:
    event_id = message_id(PROVIDER, message.ident("id"))
    return change.event(message, "from", event_id, body=_text(message))


def _text(message: Node) -> str:
    kind = message.maybe_text("type")
    if kind == "text":
        return message.node("text").maybe_text("body") or ""
    if kind == "button":
        button = message.node("button")
        return button.maybe_text("text") or button.maybe_text("payload") or ""
    if kind == "interactive":
        interactive = message.node("interactive")
        for key in ("button_reply", "list_reply"):
            reply = interactive.maybe_node(key)
            if reply is not None:
                return reply.maybe_text("title") or ""
    return ""


def _preference(change: _Change, preference: Node) -> InboundMessage | None:
    if preference.maybe_text("category") != "marketing_messages":
        return None
    choice = preference.text("value").strip().lower()
    verdict = _PREFERENCES.get(choice)
    if verdict is None:
        raise PayloadError(preference.name("value"), f"{choice[:20]!r} is not stop or resume")
    when = str(preference.raw("timestamp"))
    event_id = message_id(PROVIDER, "preference", preference.ident("wa_id"), when, choice)
    return change.event(preference, "wa_id", event_id, kind=(verdict, Source.INBOUND_KEYWORD))


def _failure(change: _Change, status: Node) -> InboundMessage | None:
    if status.maybe_text("status") != "failed":
        return None
    codes = {str(error.get("code")) for error in status.nodes("errors")}
    if str(MARKETING_STOPPED) not in codes:
        return None
    event_id = message_id(PROVIDER, status.ident("id"), str(MARKETING_STOPPED))
    return change.event(status, "recipient_id", event_id, kind=_CARRIER_OPT_OUT)


def verify_signature(body: bytes | str, headers: Mapping[str, str], app_secret: str) -> None:
    """Check ``X-Hub-Signature-256`` (``sha256=<hex HMAC-SHA256(app secret, raw body)>``).

    Raises:
        SignatureError: the header is missing or malformed, or the signature does not match.
        ValidationError: *app_secret* is empty.
    """
    scheme, _, digest = header(headers, "X-Hub-Signature-256").partition("=")
    if scheme.strip().lower() != "sha256":
        raise SignatureError("the X-Hub-Signature-256 header is not sha256=<hex digest>")
    expected = hmac_digest(secret_bytes(app_secret, "app_secret"), raw_body(body))
    require_equal(expected, decode_signature(digest.strip(), "hex", "WhatsApp"), "WhatsApp")
