"""Mailgun: unsubscribed and complained events, the signature in the body."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consentkit import EMAIL, PayloadError, SignatureError, Source
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import mailgun
from tests.providers._support import (
    ACCOUNT,
    Recorder,
    ServiceFactory,
    check_complaint,
    check_opt_out,
    with_value,
    without,
)

KEY = "key-signing-123"
TIMESTAMP = "1770920772"
TOKEN = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"
NOW = datetime.fromtimestamp(int(TIMESTAMP), UTC)


def signature(timestamp: str = TIMESTAMP, token: str = TOKEN, key: str = KEY) -> dict[str, str]:
    """The signature object of the "Securing Webhooks" guide, signed with *key*."""
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"token": token, "timestamp": timestamp, "signature": digest}


# The complained event Mailgun's control panel sends as a sample webhook (event structure:
# event, timestamp, id, plus recipient and message).
COMPLAINED: dict[str, Any] = {
    "signature": signature(),
    "event-data": {
        "id": "-Agny091SquKnsrW2NEKUA",
        "timestamp": 1521233123.501324,
        "log-level": "warn",
        "event": "complained",
        "envelope": {"sending-ip": "173.193.210.33"},
        "flags": {"is-test-mode": False},
        "message": {
            "headers": {
                "to": "Alice <alice@example.com>",
                "message-id": "20110215055645.25246.63817@sandbox.mailgun.org",
                "from": "Bob <bob@sandbox.mailgun.org>",
                "subject": "Test complained webhook",
            },
            "attachments": [],
            "size": 111,
        },
        "recipient": "alice@example.com",
        "campaigns": [],
        "tags": ["my_tag_1", "my_tag_2"],
        "user-variables": {"my_var_1": "Mailgun Variable #1", "my-var-2": "awesome"},
    },
}
UNSUBSCRIBED = with_value(COMPLAINED, "event-data.event", "unsubscribed")


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_the_sample_complaint_parses(open_service: ServiceFactory) -> None:
    """complained is a complaint of the recipient (CARRIER, the system's opt-out), keyed by id
    and timestamp."""
    seen = Recorder()
    (message,) = mailgun.parse(body(COMPLAINED), seen)
    assert seen == ["alice@example.com"]
    assert message == InboundMessage(
        ACCOUNT, EMAIL, "alice@example.com", "", "mailgun:-Agny091SquKnsrW2NEKUA:1521233123.501324",
        datetime.fromtimestamp(1521233123.501324, UTC), provider="mailgun",
        verdict=ProviderVerdict.COMPLAINT, source=Source.CARRIER,
    )
    check_complaint(open_service, message)


def test_an_unsubscribe_link_click(open_service: ServiceFactory) -> None:
    """unsubscribed is an opt-out with source UNSUBSCRIBE_LINK; other events give nothing."""
    (message,) = mailgun.parse(body(UNSUBSCRIBED), ACCOUNT)
    assert message.verdict is ProviderVerdict.OPT_OUT
    check_opt_out(open_service, message, Source.UNSUBSCRIBE_LINK)
    for event in ("delivered", "failed", "opened", "clicked"):
        assert mailgun.parse(body(with_value(COMPLAINED, "event-data.event", event)), ACCOUNT) == ()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (without(COMPLAINED, "event-data"), "event-data"),
        (without(COMPLAINED, "event-data.recipient"), "event-data.recipient"),
        (without(COMPLAINED, "event-data.id"), "event-data.id"),
        (without(COMPLAINED, "event-data.timestamp"), "event-data.timestamp"),
        (with_value(COMPLAINED, "event-data.timestamp", "noon"), "event-data.timestamp"),
        (with_value(COMPLAINED, "event-data.recipient", "alice"), "event-data.recipient"),
        (with_value(COMPLAINED, "event-data", "complained"), "event-data"),
    ],
)
def test_malformed_events(payload: dict[str, Any], field: str) -> None:
    """Missing and malformed fields are PayloadErrors naming them."""
    with pytest.raises(PayloadError) as caught:
        mailgun.parse(body(payload), ACCOUNT)
    assert caught.value.field == field


def test_a_signed_webhook_verifies() -> None:
    """HMAC-SHA256(signing key, timestamp + token) verifies within the tolerance."""
    mailgun.verify_signature(body(COMPLAINED), KEY, now=NOW + timedelta(minutes=4))
    numeric = with_value(COMPLAINED, "signature.timestamp", int(TIMESTAMP))
    mailgun.verify_signature(body(numeric), KEY, now=NOW)


@pytest.mark.parametrize(
    ("payload", "now"),
    [
        (with_value(COMPLAINED, "signature", signature(key="other-key")), NOW),
        (with_value(COMPLAINED, "signature.token", TOKEN[:-1] + "4"), NOW),
        (with_value(COMPLAINED, "signature.timestamp", str(int(TIMESTAMP) + 1)), NOW),
        (with_value(COMPLAINED, "signature.signature", "0" * 64), NOW),
        (with_value(COMPLAINED, "signature.signature", "zz"), NOW),
        (COMPLAINED, NOW + timedelta(minutes=6)),
        (without(COMPLAINED, "signature"), NOW),
        (without(COMPLAINED, "signature.token"), NOW),
        (with_value(COMPLAINED, "signature", "signed"), NOW),
        (with_value(COMPLAINED, "signature.timestamp", None), NOW),
    ],
    ids=["key", "token", "timestamp", "signature", "not-hex", "stale", "unsigned", "no-token",
         "not-object", "no-timestamp"],
)
def test_forgeries_are_refused(payload: dict[str, Any], now: datetime) -> None:
    """Another key, a changed token, timestamp or signature, a stale or unsigned request."""
    with pytest.raises(SignatureError):
        mailgun.verify_signature(body(payload), KEY, now=now)


def test_signature_configuration_and_bodies() -> None:
    """An empty key is the host's error; a body that is no JSON object is a PayloadError."""
    with pytest.raises(ValidationError):
        mailgun.verify_signature(body(COMPLAINED), "", now=NOW)
    with pytest.raises(PayloadError):
        mailgun.verify_signature(b"signature=1", KEY, now=NOW)
