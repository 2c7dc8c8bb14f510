"""Sinch Conversation API: inbound messages, opt-out notifications, callback signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consentkit import WHATSAPP, PayloadError, SignatureError, Source
from consentkit.channels import Channel
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import sinch
from tests.providers._support import (
    ACCOUNT,
    Recorder,
    ServiceFactory,
    check_opt_out,
    check_unchanged,
    with_value,
    without,
)

# The WhatsApp text reply of Sinch's "WhatsApp channel message support" page (MESSAGE_INBOUND).
INBOUND: dict[str, Any] = {
    "app_id": "01E8RCZPK7HFV70FFDWFFK0EXK",
    "accepted_time": "2020-06-22T10:55:39.534687Z",
    "message": {
        "id": "01EBDTPPG3Q3EH14H7DY8X09MG",
        "direction": "TO_APP",
        "contact_message": {"text_message": {"text": "Hi from contact"}},
        "channel_identity": {"channel": "WHATSAPP", "identity": "46712312312", "app_id": ""},
        "conversation_id": "01EB199XQ2CBY50K6WZD9S1A22",
        "contact_id": "01EB197NDA4W7V15NPRCVV0S79",
        "metadata": "",
        "accept_time": "2020-06-22T10:55:39.521500Z",
    },
}
# An OPT_OUT callback, with the fields of the SDK's OptOutNotification model.
OPT_OUT: dict[str, Any] = {
    "app_id": "01E8RCZPK7HFV70FFDWFFK0EXK",
    "accepted_time": "2024-06-15T15:45:00.456Z",
    "event_time": "2024-06-15T15:45:00.123Z",
    "project_id": "c36f3d3d-1513-4edd-ae42-11995557ff61",
    "opt_out_notification": {
        "request_id": "01H5OPTOUT0000000000000000",
        "contact_id": "01EB197NDA4W7V15NPRCVV0S79",
        "channel": "WHATSAPP",
        "identity": "46712312312",
        "status": "OPT_OUT_SUCCEEDED",
        "processing_mode": "CONVERSATION",
    },
    "message_metadata": "",
}


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_the_documented_inbound_message_parses(open_service: ServiceFactory) -> None:
    """A TO_APP message: the channel identity as sender, the app id resolving the account."""
    seen = Recorder()
    (message,) = sinch.parse(body(INBOUND), seen)
    assert seen == ["01E8RCZPK7HFV70FFDWFFK0EXK"]
    assert message == InboundMessage(
        ACCOUNT, WHATSAPP, "+46712312312", "Hi from contact", "sinch:01EBDTPPG3Q3EH14H7DY8X09MG",
        datetime(2020, 6, 22, 10, 55, 39, 521500, tzinfo=UTC), provider="sinch",
    )
    check_unchanged(open_service, message)


@pytest.mark.parametrize(
    ("contact_message", "text"),
    [
        ({"reply_message": {"message_id": "m", "text_message": {"text": "STOP"}}}, "STOP"),
        ({"choice_response_message": {"message_id": "m", "postback_data": "unsubscribe"}},
         "unsubscribe"),
        ({"media_message": {"url": "https://example.com/a.jpg"}}, ""),
    ],
)
def test_replies_choices_and_media(contact_message: dict[str, Any], text: str) -> None:
    """A quoted reply's text and a choice's postback data are read; media has no text."""
    payload = with_value(INBOUND, "message.contact_message", contact_message)
    (message,) = sinch.parse(body(payload), ACCOUNT)
    assert message.body == text


def test_other_channels_and_directions() -> None:
    """A channel without phone numbers is a custom channel of that name; an app's own message
    (TO_CONTACT) gives nothing; accept_time falls back to accepted_time."""
    payload = with_value(INBOUND, "message.channel_identity", {"channel": "MESSENGER",
                                                               "identity": "2742085512340733"})
    (message,) = sinch.parse(body(without(payload, "message.accept_time")), ACCOUNT)
    assert (message.channel, message.sender) == (Channel("messenger"), "2742085512340733")
    assert message.received_at == datetime(2020, 6, 22, 10, 55, 39, 534687, tzinfo=UTC)
    assert sinch.parse(body(with_value(INBOUND, "message.direction", "TO_CONTACT")), ACCOUNT) == ()


def test_an_opt_out_notification_opts_out(open_service: ServiceFactory) -> None:
    """OPT_OUT_SUCCEEDED is an opt-out reported by Sinch for the identity on its channel."""
    (message,) = sinch.parse(body(OPT_OUT), ACCOUNT)
    assert (message.channel, message.sender, message.verdict, message.source) == (
        WHATSAPP, "+46712312312", ProviderVerdict.OPT_OUT, Source.CARRIER
    )
    check_opt_out(open_service, message, Source.CARRIER)


@pytest.mark.parametrize(
    "payload",
    [
        with_value(OPT_OUT, "opt_out_notification.status", "OPT_OUT_FAILED"),
        {**without(OPT_OUT, "opt_out_notification"),
         "opt_in_notification": {**OPT_OUT["opt_out_notification"], "status": "OPT_IN_SUCCEEDED"}},
        {"app_id": "a", "accepted_time": "2024-06-15T15:45:00Z",
         "message_delivery_report": {"status": "DELIVERED"}},
    ],
    ids=["failed-opt-out", "opt-in", "delivery-report"],
)
def test_other_callbacks_give_nothing(payload: dict[str, Any]) -> None:
    """A failed opt-out registration, an opt-in registration (usually the sender's own API
    call, never the contact's request to resubscribe) and delivery reports change nothing."""
    assert sinch.parse(body(payload), ACCOUNT) == ()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (without(INBOUND, "app_id"), "app_id"),
        (without(INBOUND, "message.id"), "message.id"),
        (without(INBOUND, "message.channel_identity"), "message.channel_identity"),
        (without(INBOUND, "message.channel_identity.identity"),
         "message.channel_identity.identity"),
        (with_value(INBOUND, "message.channel_identity.channel", "Bad Channel!"),
         "message.channel_identity.channel"),
        (with_value(INBOUND, "message.channel_identity.identity", "+0"),
         "message.channel_identity.identity"),
        (without(OPT_OUT, "opt_out_notification.identity"), "opt_out_notification.identity"),
        (without(OPT_OUT, "accepted_time"), "accepted_time"),
        (with_value(INBOUND, "message.contact_message", "Hi"), "message.contact_message"),
    ],
)
def test_malformed_callbacks(payload: dict[str, Any], field: str) -> None:
    """Missing and malformed fields are PayloadErrors naming them."""
    with pytest.raises(PayloadError) as caught:
        sinch.parse(body(payload), ACCOUNT)
    assert caught.value.field == field


# The callback-signature example of Sinch's .NET SDK tests (secret foo_secret1234).
SIGNED_BODY = (
    b'{"app_id":"","accepted_time":"2021-10-18T17:49:13.813615Z","project_id":'
    b'"e2df3a34-a71b-4448-9db5-a8d2baad28e4","contact_create_notification":{"contact":{"id":'
    b'"01FJA8B466Y0R2GNXD78MD9SM1","channel_identities":[{"channel":"SMS","identity":'
    b'"48123456789","app_id":""}],"display_name":"New Test Contact","email":'
    b'"new.contact@email.com","external_id":"","metadata":"","language":"EN_US"}},'
    b'"message_metadata":""}'
)
SIGNED_HEADERS = {
    "x-sinch-webhook-signature-nonce": "01FJA8B4A7BM43YGWSG9GBV067",
    "x-sinch-webhook-signature-timestamp": "1634579353",
    "x-sinch-webhook-signature": "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE=",
    "x-sinch-webhook-signature-algorithm": "HmacSHA256",
}
SIGNED_AT = datetime.fromtimestamp(1634579353, UTC)


def test_the_documented_signature_verifies() -> None:
    """The SDK's example verifies, headers in any case, within the tolerance."""
    sinch.verify_signature(SIGNED_BODY, SIGNED_HEADERS, "foo_secret1234", now=SIGNED_AT)
    upper = {key.upper(): value for key, value in SIGNED_HEADERS.items()}
    sinch.verify_signature(SIGNED_BODY.decode(), upper, "foo_secret1234",
                           now=SIGNED_AT + timedelta(minutes=4))


def test_sha512_signatures() -> None:
    """The algorithm header picks the HMAC."""
    signed = SIGNED_BODY + b".n.1634579353"
    digest = base64.b64encode(hmac.new(b"k", signed, hashlib.sha512).digest()).decode()
    headers = {**SIGNED_HEADERS, "x-sinch-webhook-signature-nonce": "n",
               "x-sinch-webhook-signature": digest,
               "x-sinch-webhook-signature-algorithm": "HmacSHA512"}
    sinch.verify_signature(SIGNED_BODY, headers, "k", now=SIGNED_AT)


@pytest.mark.parametrize(
    ("raw", "headers", "secret", "now"),
    [
        (SIGNED_BODY.replace(b"New Test", b"Old Test"), SIGNED_HEADERS, "foo_secret1234",
         SIGNED_AT),
        (SIGNED_BODY, {**SIGNED_HEADERS, "x-sinch-webhook-signature-nonce": "other"},
         "foo_secret1234", SIGNED_AT),
        (SIGNED_BODY, {**SIGNED_HEADERS,
                       "x-sinch-webhook-signature": "7bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE="},
         "foo_secret1234", SIGNED_AT),
        (SIGNED_BODY, SIGNED_HEADERS, "foo_secret1235", SIGNED_AT),
        (SIGNED_BODY, SIGNED_HEADERS, "foo_secret1234", SIGNED_AT + timedelta(minutes=6)),
        (SIGNED_BODY, {**SIGNED_HEADERS, "x-sinch-webhook-signature-algorithm": "HmacMD5"},
         "foo_secret1234", SIGNED_AT),
        (SIGNED_BODY, {k: v for k, v in SIGNED_HEADERS.items()
                       if k != "x-sinch-webhook-signature-timestamp"}, "foo_secret1234",
         SIGNED_AT),
        (SIGNED_BODY, {}, "foo_secret1234", SIGNED_AT),
    ],
    ids=["body", "nonce", "signature", "secret", "stale", "algorithm", "no-timestamp",
         "unsigned"],
)
def test_forgeries_are_refused(
    raw: bytes, headers: dict[str, str], secret: str, now: datetime
) -> None:
    """A changed body, nonce, signature or secret, a stale timestamp, an unknown algorithm and
    missing headers are SignatureErrors."""
    with pytest.raises(SignatureError):
        sinch.verify_signature(raw, headers, secret, now=now)


def test_signature_configuration_errors() -> None:
    """An empty secret or a naive now is the host's error."""
    with pytest.raises(ValidationError):
        sinch.verify_signature(SIGNED_BODY, SIGNED_HEADERS, "", now=SIGNED_AT)
    with pytest.raises(ValidationError):
        sinch.verify_signature(SIGNED_BODY, SIGNED_HEADERS, "k", now=datetime(2021, 10, 18))
