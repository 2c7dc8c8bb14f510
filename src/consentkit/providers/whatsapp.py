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

``X-Hub-Signature-256`` is ``sha256=`` + hex HMAC-SHA256 of the raw body under the app secret.

Sources:
  https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages
  https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences
  https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes
  https://developers.facebook.com/docs/messenger-platform/webhook-reference (Meta webhooks' signing)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from consentkit.channels import WHATSAPP
from consentkit.errors import PayloadError, SignatureError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import Source
from consentkit.providers._common import (
    AccountResolver,
    Event,
    Node,
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
)

__all__ = ["parse", "verify_signature"]

PROVIDER = "whatsapp"
MARKETING_STOPPED = 131050
"""The error code of a marketing message the user had stopped."""

_PREFERENCES = {"stop": ProviderVerdict.OPT_OUT, "resume": ProviderVerdict.OPT_IN}


def parse(body: bytes | str, account: AccountResolver) -> tuple[InboundMessage, ...]:
    """Every message, preference change and opted-out failure of one webhook, in order.

    Args:
        body: the raw request body (JSON).
        account: the account, or a resolver called with ``metadata.phone_number_id`` of each
            change (the business phone number's id).

    Raises:
        PayloadError: the body is not a ``whatsapp_business_account`` webhook, or a message,
            preference or status lacks a field it needs.
    """
    root = json_node(body)
    if root.text("object") != "whatsapp_business_account":
        raise PayloadError("object", "expected a whatsapp_business_account webhook")
    found: list[InboundMessage] = []
    for entry in root.nodes("entry"):
        for change in entry.nodes("changes"):
            value = _Change(change.node("value"), account)
            found.extend(_messages(value))
            found.extend(_preferences(value))
            found.extend(_failures(value))
    return tuple(found)


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


def _messages(change: _Change) -> Iterator[InboundMessage]:
    for message in change.value.nodes("messages"):
        event_id = message_id(PROVIDER, message.ident("id"))
        yield change.event(message, "from", event_id, body=_text(message))


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


def _preferences(change: _Change) -> Iterator[InboundMessage]:
    for preference in change.value.nodes("user_preferences"):
        if preference.maybe_text("category") != "marketing_messages":
            continue
        choice = preference.text("value").strip().lower()
        verdict = _PREFERENCES.get(choice)
        if verdict is None:
            raise PayloadError(preference.name("value"), f"{choice[:20]!r} is not stop or resume")
        when = str(preference.raw("timestamp"))
        event_id = message_id(PROVIDER, "preference", preference.ident("wa_id"), when, choice)
        yield change.event(preference, "wa_id", event_id, kind=(verdict, Source.INBOUND_KEYWORD))


def _failures(change: _Change) -> Iterator[InboundMessage]:
    for status in change.value.nodes("statuses"):
        if status.maybe_text("status") != "failed":
            continue
        codes = {str(error.get("code")) for error in status.nodes("errors")}
        if str(MARKETING_STOPPED) not in codes:
            continue
        event_id = message_id(PROVIDER, status.ident("id"), str(MARKETING_STOPPED))
        yield change.event(status, "recipient_id", event_id, kind=_CARRIER_OPT_OUT)


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
