"""Plivo: status callbacks with error 200 (the destination opted out)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consentkit import SMS, WHATSAPP, PayloadError, Source
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.providers import plivo
from tests.providers._support import ACCOUNT, Recorder, ServiceFactory, check_opt_out

# A status callback with the attributes of Plivo's "Message Status Callbacks" reference.
CALLBACK: dict[str, Any] = {
    "MessageUUID": "3c0f3e4a-fb7f-11ed-9f3a-0242ac110004",
    "From": "+14155551234",
    "To": "+14155556789",
    "Type": "sms",
    "Status": "failed",
    "ErrorCode": "200",
    "Units": "1",
    "TotalRate": "0.00500",
    "TotalAmount": "0.00500",
    "MCC": "310",
    "MNC": "150",
    "Sequence": "2",
    "MessageTime": "2026-03-01 10:00:00.123456",
    "QueuedTime": "2026-03-01 10:00:00.234567",
    "PowerpackUUID": "",
}
AT = datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)


def test_error_200_opts_the_recipient_out(open_service: ServiceFactory) -> None:
    """ErrorCode 200 is a CARRIER opt-out of To; From resolves the account."""
    seen = Recorder()
    (message,) = plivo.parse_status(CALLBACK, seen,
                                    received_at=AT)
    assert seen == ["+14155551234"]
    assert message == InboundMessage(
        ACCOUNT, SMS, "+14155556789", "", "plivo:3c0f3e4a-fb7f-11ed-9f3a-0242ac110004:200", AT,
        provider="plivo", verdict=ProviderVerdict.OPT_OUT, source=Source.CARRIER,
    )
    check_opt_out(open_service, message, Source.CARRIER)


def test_channels_and_other_callbacks() -> None:
    """The Type picks the channel; other error codes and deliveries give nothing."""
    (message,) = plivo.parse_status({**CALLBACK, "Type": "whatsapp"}, ACCOUNT, received_at=AT)
    assert message.channel is WHATSAPP
    for code in ("000", "30", "450", None):
        params = {**CALLBACK, "ErrorCode": code} if code else {
            k: v for k, v in CALLBACK.items() if k != "ErrorCode"}
        assert plivo.parse_status(params, ACCOUNT, received_at=AT) == ()


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"MessageUUID": None}, "MessageUUID"), ({"From": ""}, "From"), ({"To": None}, "To"),
     ({"To": "somebody"}, "To"), ({"Type": 3}, "Type")],
)
def test_malformed_callbacks(changes: dict[str, Any], field: str) -> None:
    """Missing and malformed fields of an error-200 callback are named."""
    params = {key: value for key, value in {**CALLBACK, **changes}.items() if value is not None}
    with pytest.raises(PayloadError) as caught:
        plivo.parse_status(params, ACCOUNT, received_at=AT)
    assert caught.value.field == field
    with pytest.raises(ValidationError):
        plivo.parse_status(CALLBACK, ACCOUNT, received_at=datetime(2026, 3, 1))
