"""Vonage SMS API: inbound messages, err-code 9 receipts, signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consentkit import SMS, PayloadError, SignatureError, Source
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage, InboundOutcome, ProviderVerdict
from consentkit.providers import vonage
from tests.providers._support import (
    ACCOUNT,
    Recorder,
    ServiceFactory,
    check_opt_out,
    subscribed,
)

# An inbound SMS with the properties of Vonage's inbound-SMS guide (Vonage's example numbers).
INBOUND: dict[str, Any] = {
    "msisdn": "447700900001",
    "to": "447700900000",
    "messageId": "0A0000000123ABCD1",
    "text": "STOP",
    "type": "text",
    "keyword": "STOP",
    "message-timestamp": "2020-01-01 12:00:00",
    "timestamp": "1577880000",
}
# The delivery receipt of the opt-out-assist guide ("Messaging Opted-out Numbers").
RECEIPT: dict[str, Any] = {
    "msisdn": "447700900000",
    "to": "AcmeInc",
    "network-code": "12345",
    "messageId": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    "price": "0.00000000",
    "status": "failed",
    "scts": "2001011400",
    "err-code": "9",
    "api-key": "abcd1234",
    "message-timestamp": "2020-01-01 12:00:00",
}
AT = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)


def test_an_inbound_sms_is_a_plain_message(open_service: ServiceFactory) -> None:
    """msisdn (with its + restored) sent text to the virtual number; no verdict: the keyword
    field is only the first word, and consentkit's matcher reads the STOP."""
    seen = Recorder()
    message = vonage.parse_message(INBOUND, seen)
    assert seen == ["447700900000"]
    assert message == InboundMessage(
        ACCOUNT, SMS, "+447700900001", "STOP", "vonage:0A0000000123ABCD1", AT, provider="vonage"
    )
    service = subscribed(open_service, message)
    assert service.handle_inbound(message).outcome is InboundOutcome.OPTED_OUT


def test_binary_messages_and_the_unix_timestamp() -> None:
    """A binary message has no text; without message-timestamp the unix timestamp dates it."""
    params = {k: v for k, v in INBOUND.items() if k not in ("text", "message-timestamp")}
    message = vonage.parse_message({**params, "type": "binary", "data": "0102"}, ACCOUNT)
    assert (message.body, message.received_at) == ("", AT)


def test_err_code_9_opts_the_recipient_out(open_service: ServiceFactory) -> None:
    """A receipt with err-code 9 is a CARRIER opt-out of msisdn (the recipient)."""
    (message,) = vonage.parse_receipt(RECEIPT, ACCOUNT)
    assert (message.sender, message.verdict, message.source, message.received_at) == (
        "+447700900000", ProviderVerdict.OPT_OUT, Source.CARRIER, AT
    )
    check_opt_out(open_service, message, Source.CARRIER)


@pytest.mark.parametrize("code", ["0", "6", "99", None])
def test_other_receipts_give_nothing(code: str | None) -> None:
    """Delivered messages and other failures are no opt-outs."""
    params = {k: v for k, v in RECEIPT.items() if k != "err-code"}
    if code is not None:
        params["err-code"] = code
    assert vonage.parse_receipt(params, ACCOUNT) == ()


@pytest.mark.parametrize("field", ["msisdn", "to", "messageId", "timestamp"])
def test_missing_fields(field: str) -> None:
    """A missing sender, number, id or time is a PayloadError naming the field."""
    drop = {field, "message-timestamp"} if field == "timestamp" else {field}
    with pytest.raises(PayloadError) as caught:
        vonage.parse_message({k: v for k, v in INBOUND.items() if k not in drop}, ACCOUNT)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"msisdn": "FROM_NUMBER"}, "msisdn"), ({"msisdn": 447700900001}, "msisdn"),
     ({"message-timestamp": "2020-13-45 99:00:00"}, "message-timestamp"),
     ({"text": {"nested": True}}, "text")],
)
def test_malformed_fields(changes: dict[str, object], field: str) -> None:
    """Wrong values and types are PayloadErrors naming the field."""
    with pytest.raises(PayloadError) as caught:
        vonage.parse_message({**INBOUND, **changes}, ACCOUNT)
    assert caught.value.field == field


# The signing example of Vonage's SDK tests: md5hash of "&a=1&b=2&timestamp=1461605396" + secret.
SIGNED = {"a": "1", "b": "2", "timestamp": "1461605396", "sig": "6af838ef94998832dbfc29020b564830"}


def test_the_documented_md5_hash_signature_verifies() -> None:
    """The md5hash example verifies (hex in either case), with a fresh timestamp check too."""
    vonage.verify_signature(SIGNED, "secret")
    vonage.verify_signature({**SIGNED, "sig": SIGNED["sig"].upper()}, "secret")
    near = datetime.fromtimestamp(1461605396, UTC) + timedelta(minutes=2)
    vonage.verify_signature(SIGNED, "secret", now=near)


@pytest.mark.parametrize("method", ["md5", "sha1", "sha256", "sha512"])
def test_hmac_signatures(method: str) -> None:
    """The HMAC methods sign "&name=value" pairs sorted by name, & and = in values replaced."""
    params = {"to": "447700900000", "text": "a&b=c", "timestamp": "1577880000", "nonce": "n"}
    signed = b"&nonce=n&text=a_b_c&timestamp=1577880000&to=447700900000"
    digest = hmac.new(b"s3cret", signed, getattr(hashlib, method)).hexdigest()
    vonage.verify_signature({**params, "sig": digest.upper()}, "s3cret", method=method)
    assert vonage.signature(params, "s3cret", method) == digest


@pytest.mark.parametrize(
    ("params", "secret", "now"),
    [
        ({**SIGNED, "a": "2"}, "secret", None),
        ({**SIGNED, "c": "3"}, "secret", None),
        (SIGNED, "Secret", None),
        ({**SIGNED, "sig": "7" + SIGNED["sig"][1:]}, "secret", None),
        ({**SIGNED, "sig": "zz"}, "secret", None),
        ({k: v for k, v in SIGNED.items() if k != "sig"}, "secret", None),
        (SIGNED, "secret", datetime(2026, 1, 1, tzinfo=UTC)),
        ({k: v for k, v in SIGNED.items() if k != "timestamp"}, "secret", datetime.now(UTC)),
    ],
    ids=["param", "extra", "secret", "signature", "junk", "unsigned", "stale", "no-timestamp"],
)
def test_forgeries_are_refused(
    params: dict[str, str], secret: str, now: datetime | None
) -> None:
    """Changed parameters, secret or signature, a missing sig and a stale timestamp."""
    with pytest.raises(SignatureError):
        vonage.verify_signature(params, secret, now=now)


def test_signature_configuration_errors() -> None:
    """An unknown method or an empty secret is the host's error; params must be a mapping."""
    with pytest.raises(ValidationError, match="method"):
        vonage.verify_signature(SIGNED, "secret", method="sha3")
    with pytest.raises(ValidationError, match="secret"):
        vonage.verify_signature(SIGNED, "")
    with pytest.raises(SignatureError):
        vonage.verify_signature("sig=1", "secret")  # type: ignore[arg-type]
