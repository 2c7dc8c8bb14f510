"""Telnyx: message.received with autoresponse_type, 40300 failures, Ed25519 signatures."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nacl.signing import SigningKey

from consentkit import MMS, SMS, PayloadError, SignatureError, Source
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import ParsedBatch, telnyx
from tests.providers._support import (
    ACCOUNT,
    Recorder,
    ServiceFactory,
    check_batch,
    check_opt_in,
    check_opt_out,
    check_unchanged,
    with_value,
    without,
)

# Telnyx's documented inboundMessage callback (API reference, callbacks), with the
# autoresponse_type its Advanced Opt-In/Out guide adds for a keyword message.
RECEIVED: dict[str, Any] = {
    "data": {
        "record_type": "event",
        "id": "bf6307bd-884d-4c1f-b6ea-c62b8c495d3c",
        "event_type": "message.received",
        "occurred_at": "2019-01-23T18:10:02.574Z",
        "payload": {
            "record_type": "message",
            "direction": "inbound",
            "id": "7ee4241c-f127-47e5-9c34-3aac291f8058",
            "type": "SMS",
            "messaging_profile_id": "0f512bda-ae1e-4597-8e11-e5f5686b97d3",
            "organization_id": "b448f9cc-a842-4784-98e9-03c1a5872950",
            "from": {
                "phone_number": "+18665550001",
                "carrier": "T-MOBILE USA, INC.",
                "line_type": "Wireless",
            },
            "to": [
                {
                    "phone_number": "+18445550001",
                    "status": "delivered",
                    "carrier": "TELNYX LLC",
                    "line_type": "VoIP",
                }
            ],
            "cc": [],
            "text": "Hello, World!",
            "subject": "From Telnyx!",
            "media": [],
            "webhook_url": "https://www.example.com/hooks",
            "webhook_failover_url": "https://backup.example.com/hooks",
            "encoding": "GSM-7",
            "parts": 1,
            "tags": ["Greetings"],
            "cost": {"amount": "0.0051", "currency": "USD"},
            "received_at": "2019-01-23T18:10:02.574Z",
        },
    },
    "meta": {"attempt": 1, "delivered_to": "https://www.example.com/hooks"},
}
AT = datetime(2019, 1, 23, 18, 10, 2, 574000, tzinfo=UTC)
# A message.finalized callback (the delivery-status example of the receiving-webhooks guide)
# for a message blocked with error 40300, as the advanced opt-in/out guide describes it.
BLOCKED: dict[str, Any] = {
    "data": {
        "event_type": "message.finalized",
        "id": "4ee8c3a6-4995-4309-a3c6-38e3db9ea4be",
        "occurred_at": "2019-12-09T21:32:14.148+00:00",
        "payload": {
            "completed_at": "2019-12-09T21:32:14.148+00:00",
            "direction": "outbound",
            "errors": [
                {
                    "code": "40300",
                    "title": "Blocked due to STOP message",
                    "detail": "Messages cannot be sent from '+18445550001' to '+18665550001' "
                    "due to an existing block rule.",
                }
            ],
            "from": {"phone_number": "+18445550001", "carrier": "TELNYX LLC"},
            "id": "40385f64-5717-4562-b3fc-2c963f66afa6",
            "to": [{"phone_number": "+18665550001", "status": "delivery_failed"}],
            "type": "SMS",
        },
        "record_type": "event",
    }
}


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_the_documented_callback_parses() -> None:
    """message.received becomes one plain message (no verdict): from, text, the payload id."""
    seen = Recorder()
    (message,) = telnyx.parse(body(RECEIVED), seen)
    assert seen == ["+18445550001"]
    assert message == InboundMessage(
        ACCOUNT, SMS, "+18665550001", "Hello, World!",
        "telnyx:7ee4241c-f127-47e5-9c34-3aac291f8058", AT, provider="telnyx",
    )


def test_media_makes_an_mms_and_occurred_at_dates_it() -> None:
    """A message with media is an MMS; without received_at, occurred_at dates the message."""
    payload = with_value(RECEIVED, "data.payload.media", [{"url": "https://e.com/a.png"}])
    (message,) = telnyx.parse(body(without(payload, "data.payload.received_at")), ACCOUNT)
    assert (message.channel, message.received_at) == (MMS, AT)


def test_autoresponse_stop_unsubscribes(open_service: ServiceFactory) -> None:
    """autoresponse_type stop is Telnyx's verdict: the sender opts out (or is suppressed)."""
    payload = with_value(RECEIVED, "data.payload.autoresponse_type", "stop")
    (message,) = telnyx.parse(body(with_value(payload, "data.payload.text", "stop all")), ACCOUNT)
    assert message.verdict is ProviderVerdict.OPT_OUT
    check_opt_out(open_service, message, Source.INBOUND_KEYWORD)


def test_autoresponse_start_and_plain_text(open_service: ServiceFactory) -> None:
    """autoresponse_type start undoes the contact's STOP; a plain text changes nothing."""
    payload = with_value(RECEIVED, "data.payload.autoresponse_type", "START")
    (message,) = telnyx.parse(body(payload), ACCOUNT)
    assert message.verdict is ProviderVerdict.OPT_IN
    check_opt_in(open_service, message)
    (plain,) = telnyx.parse(body(RECEIVED), ACCOUNT)
    check_unchanged(open_service, plain)


def test_a_40300_failure_opts_the_recipient_out(open_service: ServiceFactory) -> None:
    """message.finalized with error 40300 is a CARRIER opt-out of the recipient; the sending
    Telnyx number resolves the account."""
    seen = Recorder()
    (message,) = telnyx.parse(body(BLOCKED), seen)
    assert seen == ["+18445550001"]
    assert (message.sender, message.verdict, message.source) == (
        "+18665550001", ProviderVerdict.OPT_OUT, Source.CARRIER
    )
    assert message.received_at == datetime(2019, 12, 9, 21, 32, 14, 148000, tzinfo=UTC)
    check_opt_out(open_service, message, Source.CARRIER)


def test_one_unreadable_recipient_does_not_block_the_others() -> None:
    """A blocked group message: parse_batch returns the recipients it can read and names the
    others; parse refuses the webhook and says so.  A received message is a single event."""
    recipients = [{"phone_number": "+18665550001"}, {"phone_number": "not a number"},
                  {"phone_number": "+18665550002"}, "+18665550003"]
    payload = with_value(BLOCKED, "data.payload.to", recipients)
    event = "telnyx:40385f64-5717-4562-b3fc-2c963f66afa6:40300"
    check_batch(
        telnyx.parse_batch(body(payload), ACCOUNT),
        [f"{event}:+18665550001", f"{event}:+18665550002"],
        {"data.payload.to[1]": "data.payload.to[1].phone_number",
         "data.payload.to[3]": "data.payload.to[3]"},
    )
    with pytest.raises(PayloadError, match="parse_batch applies") as caught:
        telnyx.parse(body(payload), ACCOUNT)
    assert caught.value.field == "data.payload.to[1].phone_number"
    assert telnyx.parse_batch(body(RECEIVED), ACCOUNT) == ParsedBatch(
        telnyx.parse(body(RECEIVED), ACCOUNT), ()
    )
    untimed = without(without(payload, "data.payload.completed_at"), "data.occurred_at")
    for frame in (without(payload, "data.payload.id"), without(payload, "data.payload.from"),
                  untimed):
        with pytest.raises(PayloadError):
            telnyx.parse_batch(body(frame), ACCOUNT)
    with pytest.raises(PayloadError) as caught:
        telnyx.parse_batch(body(without(RECEIVED, "data.payload.from")), ACCOUNT)
    assert caught.value.field == "data.payload.from"


@pytest.mark.parametrize(
    "payload",
    [
        with_value(BLOCKED, "data.payload.errors", [{"code": "40001", "title": "Not routable"}]),
        with_value(BLOCKED, "data.payload.errors", []),
        with_value(BLOCKED, "data.event_type", "message.sent"),
    ],
    ids=["other-error", "delivered", "other-event"],
)
def test_other_events_give_nothing(payload: dict[str, Any]) -> None:
    """Other failures, successful deliveries and other event types are no opt-outs."""
    assert telnyx.parse(body(payload), ACCOUNT) == ()


@pytest.mark.parametrize(
    ("path", "field"),
    [("data", "data"), ("data.event_type", "data.event_type"), ("data.payload", "data.payload"),
     ("data.payload.id", "data.payload.id"), ("data.payload.from", "data.payload.from"),
     ("data.payload.from.phone_number", "data.payload.from.phone_number"),
     ("data.payload.to", "data.payload.to"),
     ("data.payload.to.0.phone_number", "data.payload.to[0].phone_number")],
)
def test_missing_fields_are_payload_errors(path: str, field: str) -> None:
    """Each field a received message needs is named when it is missing."""
    with pytest.raises(PayloadError) as caught:
        telnyx.parse(body(without(RECEIVED, path)), ACCOUNT)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"\xff\xfe", b"[]", b'{"data": []}', b'{"data": {"event_type": 7}}',
     b'{"data": {"event_type": "message.received", "payload": {"id": 1e999}}}',
     b'{"data": {"event_type": "message.received", "occurred_at": ' + b"9" * 5000 + b"}}",
     b"[" * 100_000, b" " * 2_000_000],
)
def test_malformed_bodies_are_payload_errors(raw: bytes) -> None:
    """Non-JSON, non-UTF-8, wrong shapes, huge numbers, deep nesting and huge bodies."""
    with pytest.raises(PayloadError):
        telnyx.parse(raw, ACCOUNT)


def test_bad_times_are_payload_errors() -> None:
    """A received_at that is no time, or out of range, names the field."""
    for value in ("yesterday", "10000-01-01T00:00:00Z", -1, True, 10**400, float("nan")):
        with pytest.raises(PayloadError) as caught:
            telnyx.parse(body(with_value(RECEIVED, "data.payload.received_at", value)), ACCOUNT)
        assert caught.value.field == "data.payload.received_at"


KEY = SigningKey(b"\x07" * 32)
PUBLIC = base64.b64encode(bytes(KEY.verify_key)).decode()
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def signed(raw: bytes, at: datetime = NOW, key: SigningKey = KEY) -> dict[str, str]:
    timestamp = str(int(at.timestamp()))
    signature = key.sign(timestamp.encode() + b"|" + raw).signature
    return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": timestamp}


def test_a_signed_webhook_verifies() -> None:
    """An Ed25519 signature of timestamp|body verifies, with headers in any case."""
    raw = body(RECEIVED)
    telnyx.verify_signature(raw, signed(raw), PUBLIC, now=NOW)
    upper = {key.upper(): value for key, value in signed(raw).items()}
    telnyx.verify_signature(raw.decode(), upper, PUBLIC, now=NOW + timedelta(minutes=4))


def _flip(data: bytes, index: int = 10) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


def _forgeries() -> list[tuple[bytes, dict[str, str]]]:
    raw = body(RECEIVED)
    good = signed(raw)
    signature = base64.b64decode(good["telnyx-signature-ed25519"])
    flipped = base64.b64encode(_flip(signature)).decode()
    return [
        (_flip(raw), good),
        (raw, {**good, "telnyx-signature-ed25519": flipped}),
        (raw, signed(raw, key=SigningKey(b"\x08" * 32))),
        (raw, signed(raw, at=NOW - timedelta(minutes=6))),
        (raw, signed(raw, at=NOW + timedelta(minutes=6))),
        (raw, {**good, "telnyx-timestamp": str(int(NOW.timestamp()) + 1)}),
        (raw, {"telnyx-timestamp": good["telnyx-timestamp"]}),
        (raw, {"telnyx-signature-ed25519": good["telnyx-signature-ed25519"]}),
        (raw, {**good, "telnyx-signature-ed25519": "%%%"}),
        (raw, {**good, "telnyx-signature-ed25519": "AAAA"}),
        (raw, {**good, "telnyx-timestamp": "soon"}),
    ]


@pytest.mark.parametrize(("raw", "headers"), _forgeries(),
                         ids=["body", "signature", "key", "old", "future", "timestamp",
                              "no-signature", "no-timestamp", "not-base64", "short", "junk-time"])
def test_forgeries_are_refused(raw: bytes, headers: dict[str, str]) -> None:
    """A changed body, signature, key or timestamp, a stale request, missing or malformed
    headers: SignatureError."""
    with pytest.raises(SignatureError):
        telnyx.verify_signature(raw, headers, PUBLIC, now=NOW)


def test_configuration_errors() -> None:
    """A key that is no base64 32-byte key, or a naive now, is the host's error."""
    raw = body(RECEIVED)
    for key in ("", "not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValidationError, match="public_key"):
            telnyx.verify_signature(raw, signed(raw), key, now=NOW)
    with pytest.raises(ValidationError, match="now"):
        telnyx.verify_signature(raw, signed(raw), PUBLIC, now=datetime(2026, 5, 1))


def test_without_pynacl_signatures_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ed25519 extra nothing verifies, and the error says how to install it."""
    monkeypatch.setitem(sys.modules, "nacl.signing", None)
    raw = body(RECEIVED)
    with pytest.raises(SignatureError, match=r"consentkit\[ed25519\]"):
        telnyx.verify_signature(raw, signed(raw), PUBLIC, now=NOW)
