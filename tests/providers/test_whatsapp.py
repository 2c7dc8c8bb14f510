"""WhatsApp Cloud API: messages, marketing preferences, 131050 failures, X-Hub-Signature-256."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import WHATSAPP, PayloadError, SignatureError, Source
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage, InboundOutcome, ProviderVerdict
from consentkit.providers import ParsedBatch, whatsapp
from tests.providers._support import (
    ACCOUNT,
    ADMIN,
    Recorder,
    ServiceFactory,
    check_batch,
    check_opt_in,
    check_opt_out,
    subscribed,
    unknown,
    with_value,
    without,
)

METADATA = {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}


def webhook(value: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    """A webhook of one change, as the messages and user_preferences references show them."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": {
            "messaging_product": "whatsapp", "metadata": METADATA, **value}, "field": field}]}],
    }


# The text message example of the messages webhook reference.
TEXT = webhook({
    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
    "messages": [{
        "from": "16505551234",
        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "timestamp": "1749416383",
        "type": "text",
        "text": {"body": "Does it come in another color?"},
    }],
})
# The user_preferences reference example (its "resume" example, and "stop" from its table).
RESUME = webhook({
    "contacts": [{"wa_id": "16505551234"}],
    "user_preferences": [{
        "wa_id": "16505551234",
        "detail": "User requested to resume marketing messages",
        "category": "marketing_messages",
        "value": "resume",
        "timestamp": 1731705721,
    }],
}, field="user_preferences")
STOP = with_value(
    with_value(RESUME, "entry.0.changes.0.value.user_preferences.0.value", "stop"),
    "entry.0.changes.0.value.user_preferences.0.detail",
    "User requested to stop marketing messages",
)
# A quick-reply tap on a marketing template's "Stop promotions" button (messages reference,
# button messages).
BUTTON = webhook({
    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
    "messages": [{
        "context": {"from": "15550783881", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUY2Nzk5"},
        "from": "16505551234",
        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTZDMUQ1MkE5NjQ0NzM4NTk4MwA=",
        "timestamp": "1749416400",
        "type": "button",
        "button": {"payload": "Stop promotions", "text": "Stop promotions"},
    }],
})
# A status of a marketing template the user had stopped (error 131050, error codes reference).
FAILED = webhook({
    "statuses": [{
        "id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
        "status": "failed",
        "timestamp": "1750263773",
        "recipient_id": "16505551234",
        "errors": [{
            "code": 131050,
            "title": "Unable to deliver the message. This recipient has chosen to stop receiving "
            "marketing messages on WhatsApp from your business.",
            "message": "Unable to deliver the message. This recipient has chosen to stop "
            "receiving marketing messages on WhatsApp from your business.",
            "error_data": {"details": "Unable to deliver the message."},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }],
    }],
})


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_the_documented_text_message_parses() -> None:
    """A text message: wa_id as an E.164 sender, phone_number_id resolving the account."""
    seen = Recorder()
    (message,) = whatsapp.parse(body(TEXT), seen)
    assert seen == ["106540352242922"]
    assert message == InboundMessage(
        ACCOUNT, WHATSAPP, "+16505551234", "Does it come in another color?",
        "whatsapp:wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        datetime.fromtimestamp(1749416383, UTC), provider="whatsapp",
    )


def test_the_stop_promotions_button_is_an_opt_out(open_service: ServiceFactory) -> None:
    """The button's text reaches the matcher, whose WhatsApp keywords make it an opt-out."""
    (message,) = whatsapp.parse(body(BUTTON), ACCOUNT)
    assert (message.body, message.verdict) == ("Stop promotions", None)
    service = subscribed(open_service, message)
    assert service.handle_inbound(message).outcome is InboundOutcome.OPTED_OUT
    assert service.history(ADMIN, "known", WHATSAPP)[-1].reason == "stop_keyword"


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {
            "id": "unsub", "title": "Unsubscribe"}}}, "Unsubscribe"),
        ({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {
            "id": "x", "title": "Stop", "description": "No more"}}}, "Stop"),
        ({"type": "button", "button": {"payload": "STOP"}}, "STOP"),
        ({"type": "image", "image": {"id": "1", "mime_type": "image/jpeg"}}, ""),
    ],
)
def test_interactive_replies_and_media(message: dict[str, Any], text: str) -> None:
    """Interactive replies give their titles, a button without text its payload, media no text."""
    base = TEXT["entry"][0]["changes"][0]["value"]["messages"][0]
    payload = with_value(TEXT, "entry.0.changes.0.value.messages.0", {
        key: value for key, value in base.items() if key not in ("type", "text")} | message)
    (parsed,) = whatsapp.parse(body(payload), ACCOUNT)
    assert parsed.body == text


def test_user_preferences_are_verdicts(open_service: ServiceFactory) -> None:
    """stop is the user's opt-out; resume takes it back."""
    (stop,) = whatsapp.parse(body(STOP), ACCOUNT)
    assert (stop.verdict, stop.source) == (ProviderVerdict.OPT_OUT, Source.INBOUND_KEYWORD)
    check_opt_out(open_service, stop, Source.INBOUND_KEYWORD)
    (resume,) = whatsapp.parse(body(RESUME), ACCOUNT)
    assert resume.verdict is ProviderVerdict.OPT_IN
    assert resume.received_at == datetime.fromtimestamp(1731705721, UTC)
    check_opt_in(open_service, resume)


def test_a_131050_failure_opts_out(open_service: ServiceFactory) -> None:
    """A failed status with error 131050 is a CARRIER opt-out of the recipient."""
    (message,) = whatsapp.parse(body(FAILED), ACCOUNT)
    assert (message.sender, message.verdict, message.source) == (
        "+16505551234", ProviderVerdict.OPT_OUT, Source.CARRIER
    )
    check_opt_out(open_service, message, Source.CARRIER)


def test_batches_and_what_is_ignored() -> None:
    """Changes of several entries come in order; other statuses, other failures and other
    preference categories give nothing, and a status-only change of an unknown number is
    never resolved."""
    batch = {
        "object": "whatsapp_business_account",
        "entry": [*TEXT["entry"], *STOP["entry"], *FAILED["entry"]],
    }
    kinds = [m.source for m in whatsapp.parse(body(batch), ACCOUNT)]
    assert kinds == [Source.INBOUND_KEYWORD, Source.INBOUND_KEYWORD, Source.CARRIER]
    delivered = with_value(FAILED, "entry.0.changes.0.value.statuses.0.status", "delivered")
    other = with_value(FAILED, "entry.0.changes.0.value.statuses.0.errors.0.code", 131047)
    category = with_value(STOP, "entry.0.changes.0.value.user_preferences.0.category", "other")
    for payload in (delivered, other, category):
        assert whatsapp.parse(body(payload), unknown) == ()


def _value(payload: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = payload["entry"][0]["changes"][0]["value"]
    return value


def test_one_unreadable_event_does_not_block_the_batch() -> None:
    """parse_batch returns every readable message, preference and failure and names each
    unreadable event, change or entry; parse refuses the whole webhook and says so."""
    message = _value(TEXT)["messages"][0]
    preference = _value(STOP)["user_preferences"][0]
    failure = _value(FAILED)["statuses"][0]
    value = {
        "messaging_product": "whatsapp", "metadata": METADATA,
        "messages": [{**message, "id": "wamid.bad", "from": "abc"}, message],
        "user_preferences": [{**preference, "value": "maybe"}, preference],
        "statuses": [failure, {**failure, "id": None}],
    }
    other_number = {"value": {"metadata": {"phone_number_id": "999"}, "messages": [message]}}
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "1", "changes": [{"field": "messages", "value": value}, {"field": "x"},
                                    other_number]},
            "not an entry",
            {"id": "2", "changes": {"not": "a list"}},
        ],
    }
    found = whatsapp.parse_batch(body(payload), {"106540352242922": ACCOUNT}.__getitem__)
    change = "entry[0].changes[0].value"
    check_batch(
        found,
        [f"whatsapp:{message['id']}",
         "whatsapp:preference:16505551234:1731705721:stop",
         f"whatsapp:{failure['id']}:131050"],
        {
            f"{change}.messages[0]": f"{change}.messages[0].from",
            f"{change}.user_preferences[0]": f"{change}.user_preferences[0].value",
            f"{change}.statuses[1]": f"{change}.statuses[1].id",
            "entry[0].changes[1]": "entry[0].changes[1].value",
            "entry[0].changes[2].value.messages[0]":
                "entry[0].changes[2].value.metadata.phone_number_id",
            "entry[1]": "entry[1]",
            "entry[2]": "entry[2].changes",
        },
    )
    assert [m.verdict for m in found.messages] == [
        None, ProviderVerdict.OPT_OUT, ProviderVerdict.OPT_OUT
    ]
    with pytest.raises(PayloadError, match="parse_batch applies") as caught:
        whatsapp.parse(body(payload), ACCOUNT)
    assert caught.value.field == f"{change}.messages[0].from"


def test_a_list_of_events_that_is_no_list_is_rejected_alone() -> None:
    """A change whose messages are no list loses those only; its statuses still count."""
    value = {**_value(FAILED), "messages": {"id": "x"}}
    found = whatsapp.parse_batch(body(webhook(value)), ACCOUNT)
    change = "entry[0].changes[0].value"
    check_batch(found, [whatsapp.parse(body(FAILED), ACCOUNT)[0].message_id],
                {f"{change}.messages": f"{change}.messages"})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_value(TEXT, "object", "page"), "object"),
        (with_value(TEXT, "entry", {"id": "x"}), "entry"),
        ([TEXT], "body"),
    ],
)
def test_a_body_that_is_no_webhook_still_raises(payload: Any, field: str) -> None:
    """Another object type, an entry that is no list, a body that is no object: no batch."""
    with pytest.raises(PayloadError) as caught:
        whatsapp.parse_batch(json.dumps(payload), ACCOUNT)
    assert caught.value.field == field
    assert whatsapp.parse_batch(body(TEXT), ACCOUNT) == ParsedBatch(
        whatsapp.parse(body(TEXT), ACCOUNT), ()
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_value(TEXT, "object", "page"), "object"),
        (without(TEXT, "entry.0.changes.0.value.metadata"), "entry[0].changes[0].value.metadata"),
        (without(TEXT, "entry.0.changes.0.value.messages.0.from"),
         "entry[0].changes[0].value.messages[0].from"),
        (without(TEXT, "entry.0.changes.0.value.messages.0.id"),
         "entry[0].changes[0].value.messages[0].id"),
        (with_value(TEXT, "entry.0.changes.0.value.messages.0.timestamp", "soon"),
         "entry[0].changes[0].value.messages[0].timestamp"),
        (with_value(TEXT, "entry.0.changes.0.value.messages.0.text", "hi"),
         "entry[0].changes[0].value.messages[0].text"),
        (with_value(STOP, "entry.0.changes.0.value.user_preferences.0.value", "maybe"),
         "entry[0].changes[0].value.user_preferences[0].value"),
        (with_value(TEXT, "entry", {"id": "x"}), "entry"),
        (with_value(TEXT, "entry.0.changes.0.value.messages.0.from", "1"),
         "entry[0].changes[0].value.messages[0].from"),
    ],
)
def test_malformed_webhooks(payload: dict[str, Any], field: str) -> None:
    """Missing and malformed fields are PayloadErrors with their full path."""
    with pytest.raises(PayloadError) as caught:
        whatsapp.parse(body(payload), ACCOUNT)
    assert caught.value.field == field


def test_an_unknown_business_number() -> None:
    """A resolver that knows no account for the phone_number_id names that field."""
    with pytest.raises(PayloadError, match="no account") as caught:
        whatsapp.parse(body(TEXT), unknown)
    assert caught.value.field == "entry[0].changes[0].value.metadata.phone_number_id"


SECRET = "app-secret"


def signed(raw: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


def test_a_signed_webhook_verifies() -> None:
    """sha256=<hex HMAC of the raw body> verifies, the header looked up in any case."""
    raw = body(TEXT)
    whatsapp.verify_signature(raw, signed(raw), SECRET)
    whatsapp.verify_signature(raw, {"x-hub-signature-256": signed(raw)["X-Hub-Signature-256"]},
                              SECRET)
    with pytest.raises(ValidationError):
        whatsapp.verify_signature(raw, signed(raw), "")


def _flipped(value: str) -> str:
    return value[:-1] + ("1" if value[-1] == "0" else "0")


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (body(TEXT).replace(b"color", b"colour"), signed(body(TEXT))),
        (body(TEXT), signed(body(TEXT), "other-secret")),
        (body(TEXT), {"X-Hub-Signature-256": _flipped(signed(body(TEXT))["X-Hub-Signature-256"])}),
        (body(TEXT), {"X-Hub-Signature-256": "sha1=" + "0" * 40}),
        (body(TEXT), {"X-Hub-Signature-256": "sha256=not-hex"}),
        (body(TEXT), {"X-Hub-Signature": "sha1=abc"}),
    ],
    ids=["body", "secret", "signature", "scheme", "not-hex", "missing"],
)
def test_forgeries_are_refused(raw: bytes, headers: dict[str, str]) -> None:
    """A changed body, secret or signature, another scheme or no header: SignatureError."""
    with pytest.raises(SignatureError):
        whatsapp.verify_signature(raw, headers, SECRET)
