"""Twilio: incoming messages, OptOutType verdicts, 21610 status callbacks, TwiML, signatures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from consentkit import MMS, RCS, SMS, WHATSAPP, PayloadError, SignatureError, Source
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage, InboundOutcome, InboundResult, ProviderVerdict
from consentkit.providers import twilio
from tests.providers._support import (
    ACCOUNT,
    ADMIN,
    Recorder,
    ServiceFactory,
    check_opt_in,
    check_opt_out,
    subscribed,
    unknown,
)

AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
# The parameters of Twilio's request to an incoming-message webhook, as the webhook-request
# guide lists them (an SMS to a number in a Messaging Service with Advanced Opt-Out on).
INBOUND: dict[str, Any] = {
    "MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "SmsSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "MessagingServiceSid": "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "From": "+14017122661",
    "To": "+15558675310",
    "Body": "STOP",
    "NumMedia": "0",
    "NumSegments": "1",
    "FromCountry": "US",
    "ToCountry": "US",
    "OptOutType": "STOP",
    "ApiVersion": "2010-04-01",
}
# A status callback for a message Twilio refused with error 21610 (the recipient sent STOP).
STATUS: dict[str, Any] = {
    "MessageSid": "SM5f7b1c2e8a1d4e0012c3b4a5a5a5a5a5",
    "MessageStatus": "failed",
    "SmsStatus": "failed",
    "ErrorCode": "21610",
    "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "From": "+15558675310",
    "To": "+14017122661",
    "ApiVersion": "2010-04-01",
}
# The signature example of Twilio's webhook security guide (auth token 12345).
SIGNED_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
SIGNED_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
SIGNED_HEADERS = {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="}


def test_the_documented_request_parses_with_twilios_verdict() -> None:
    """An incoming SMS becomes one InboundMessage: From as sender, To resolving the account,
    the MessageSid prefixed as its id, and OptOutType STOP as the provider's verdict."""
    seen = Recorder()
    message = twilio.parse_message(INBOUND, seen, received_at=AT)
    assert seen == ["+15558675310"]
    assert message == InboundMessage(
        ACCOUNT, SMS, "+14017122661", "STOP", "twilio:SM1f0e8ae6ade43cb3c0ce4525424e404f", AT,
        provider="twilio", verdict=ProviderVerdict.OPT_OUT,
    )


@pytest.mark.parametrize(
    ("changes", "channel", "sender"),
    [
        ({"From": "whatsapp:+14155238886", "To": "whatsapp:+15005550006"}, WHATSAPP,
         "+14155238886"),
        ({"From": "rcs:+14155238886", "To": "rcs:brand_agent"}, RCS, "+14155238886"),
        ({"NumMedia": "2"}, MMS, "+14017122661"),
        ({"From": "whatsapp:+14155238886", "NumMedia": "1"}, WHATSAPP, "+14155238886"),
    ],
)
def test_channel_prefixes_and_media(changes: dict[str, str], channel: object, sender: str) -> None:
    """``whatsapp:`` and ``rcs:`` addresses are on those channels, without the prefix; an SMS
    with media is an MMS."""
    message = twilio.parse_message({**INBOUND, **changes}, ACCOUNT, received_at=AT)
    assert (message.channel, message.sender) == (channel, sender)


@pytest.mark.parametrize(
    ("opt_out_type", "verdict"),
    [("STOP", ProviderVerdict.OPT_OUT), ("start", ProviderVerdict.OPT_IN),
     ("HELP", ProviderVerdict.HELP), ("SOMETHING_NEW", None), (None, None)],
)
def test_opt_out_types(opt_out_type: str | None, verdict: ProviderVerdict | None) -> None:
    """OptOutType STOP/START/HELP is the verdict; an unknown or absent one leaves it to the
    matcher."""
    params = {key: value for key, value in INBOUND.items() if key != "OptOutType"}
    if opt_out_type is not None:
        params["OptOutType"] = opt_out_type
    assert twilio.parse_message(params, ACCOUNT, received_at=AT).verdict is verdict


def test_a_twilio_stop_unsubscribes_and_suppresses(open_service: ServiceFactory) -> None:
    """OptOutType STOP opts the sender out (reason provider_opt_out), and suppresses an address
    nobody has yet."""
    message = twilio.parse_message(INBOUND, ACCOUNT, received_at=AT)
    check_opt_out(open_service, message, Source.INBOUND_KEYWORD)


def test_a_twilio_start_takes_the_stop_back(open_service: ServiceFactory) -> None:
    """OptOutType START (whatever the text) undoes the contact's own STOP."""
    params = {**INBOUND, "Body": "start again", "OptOutType": "START", "MessageSid": "SM2"}
    check_opt_in(open_service, twilio.parse_message(params, ACCOUNT, received_at=AT))


def test_without_advanced_opt_out_the_matcher_decides(open_service: ServiceFactory) -> None:
    """With no OptOutType the text is classified by consentkit: a STOP reply is an opt-out with
    consentkit's own reason and reply."""
    params = {key: value for key, value in INBOUND.items() if key != "OptOutType"}
    message = twilio.parse_message(params, ACCOUNT, received_at=AT)
    service = subscribed(open_service, message)
    result = service.handle_inbound(message)
    assert result.outcome is InboundOutcome.OPTED_OUT
    assert result.reply
    assert service.history(ADMIN, "known", SMS)[-1].reason == "stop_keyword"


def test_a_21610_status_callback_is_a_carrier_opt_out(open_service: ServiceFactory) -> None:
    """ErrorCode 21610 opts the To number out with source CARRIER; the From number resolves
    the account."""
    seen = Recorder()
    (message,) = twilio.parse_status(STATUS, seen,
                                     received_at=AT)
    assert seen == ["+15558675310"]
    assert message == InboundMessage(
        ACCOUNT, SMS, "+14017122661", "", "twilio:SM5f7b1c2e8a1d4e0012c3b4a5a5a5a5a5:21610", AT,
        provider="twilio", verdict=ProviderVerdict.OPT_OUT, source=Source.CARRIER,
    )
    check_opt_out(open_service, message, Source.CARRIER)


@pytest.mark.parametrize("error_code", [None, "", "30003", "21611"])
def test_other_status_callbacks_give_nothing(error_code: str | None) -> None:
    """Delivered messages and other failures are no opt-outs."""
    params = {key: value for key, value in STATUS.items() if key != "ErrorCode"}
    if error_code is not None:
        params["ErrorCode"] = error_code
    assert twilio.parse_status(params, ACCOUNT, received_at=AT) == ()


def test_twiml_escapes_the_reply_and_answers_redeliveries(open_service: ServiceFactory) -> None:
    """The reply is XML-escaped; a redelivered message gets the same reply (its TwiML is the
    only answer that reaches the contact); no reply is an empty Response."""
    params = {key: value for key, value in INBOUND.items() if key != "OptOutType"}
    message = twilio.parse_message(params, ACCOUNT, received_at=AT)
    service = subscribed(open_service, message)
    first = service.handle_inbound(message)
    again = service.handle_inbound(message)
    assert again.replayed
    assert twilio.twiml_reply(again) == twilio.twiml_reply(first)
    assert "<Response><Message>You have been unsubscribed" in twilio.twiml_reply(first)
    tricky = _result(first, reply='Text <STOP> & "quit"')
    assert "<Message>Text &lt;STOP&gt; &amp; \"quit\"</Message>" in twilio.twiml_reply(tricky)
    assert twilio.twiml_reply(_result(first, reply=None)).endswith("<Response/>")
    with pytest.raises(ValidationError):
        twilio.twiml_reply("not a result")  # type: ignore[arg-type]


def _result(result: InboundResult, **changes: Any) -> InboundResult:
    return attrs.evolve(result, **changes)


@pytest.mark.parametrize("field", ["MessageSid", "From", "To"])
def test_missing_required_fields(field: str) -> None:
    """A missing MessageSid, From or To is a PayloadError naming it."""
    params = {key: value for key, value in INBOUND.items() if key != field}
    with pytest.raises(PayloadError, match=field) as caught:
        twilio.parse_message(params, ACCOUNT, received_at=AT)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"From": "not a number"}, "From"),
        ({"From": 14017122661}, "From"),
        ({"Body": ["STOP"]}, "Body"),
        ({"NumMedia": "many"}, "NumMedia"),
        ({"NumMedia": "9" * 5000}, "NumMedia"),
        ({"MessageSid": "  "}, "MessageSid"),
    ],
)
def test_malformed_fields(changes: dict[str, object], field: str) -> None:
    """Wrong types and values are PayloadErrors naming the field, never TypeError/ValueError."""
    with pytest.raises(PayloadError) as caught:
        twilio.parse_message({**INBOUND, **changes}, ACCOUNT, received_at=AT)
    assert caught.value.field == field


def test_bad_arguments() -> None:
    """Params that are no mapping, a naive time and an unknown receiving number are refused."""
    with pytest.raises(PayloadError):
        twilio.parse_message(["From", "To"], ACCOUNT, received_at=AT)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="received_at"):
        twilio.parse_message(INBOUND, ACCOUNT, received_at=datetime(2026, 1, 1))
    with pytest.raises(PayloadError, match="no account") as caught:
        twilio.parse_message(INBOUND, unknown, received_at=AT)
    assert caught.value.field == "To"
    with pytest.raises(PayloadError) as status:
        twilio.parse_status({**STATUS, "To": "nobody"}, ACCOUNT, received_at=AT)
    assert status.value.field == "To"


def test_the_documented_signature_verifies() -> None:
    """The example of Twilio's security guide verifies, and ours equals the official SDK's."""
    twilio.verify_signature("12345", SIGNED_URL, SIGNED_PARAMS, SIGNED_HEADERS)
    twilio.verify_signature("12345", SIGNED_URL, SIGNED_PARAMS, {"x-twilio-signature":
                                                                 "0/KCTR6DLpKmkAf8muzZqo1nDgQ="})
    official = RequestValidator("12345").compute_signature(SIGNED_URL, SIGNED_PARAMS)
    assert twilio.signature("12345", SIGNED_URL, SIGNED_PARAMS) == official


@pytest.mark.parametrize(
    ("token", "url", "params", "headers"),
    [
        ("12345", SIGNED_URL, {**SIGNED_PARAMS, "Digits": "1235"}, SIGNED_HEADERS),
        ("12345", SIGNED_URL, {**SIGNED_PARAMS, "Extra": "x"}, SIGNED_HEADERS),
        ("12346", SIGNED_URL, SIGNED_PARAMS, SIGNED_HEADERS),
        ("12345", SIGNED_URL.replace("bar=2", "bar=3"), SIGNED_PARAMS, SIGNED_HEADERS),
        ("12345", "https://evil.example/myapp.php?foo=1&bar=2", SIGNED_PARAMS, SIGNED_HEADERS),
        ("12345", SIGNED_URL, SIGNED_PARAMS,
         {"X-Twilio-Signature": "1/KCTR6DLpKmkAf8muzZqo1nDgQ="}),
        ("12345", SIGNED_URL, SIGNED_PARAMS, {"X-Twilio-Signature": "not base64 at all"}),
        ("12345", SIGNED_URL, SIGNED_PARAMS, {}),
        ("12345", SIGNED_URL, SIGNED_PARAMS, {"X-Twilio-Signature": "  "}),
        ("12345", SIGNED_URL, SIGNED_PARAMS,
         {**SIGNED_HEADERS, "X-Twilio-Webhooks-Signature-Settings": "key=k,algorithm=HMAC_SHA256"}),
        ("12345", SIGNED_URL, SIGNED_PARAMS,
         {**SIGNED_HEADERS, "X-Twilio-Webhooks-Signature-Settings": "algorithm=ROT13"}),
    ],
    ids=["param", "extra-param", "token", "url-query", "url-host", "signature-byte",
         "signature-junk", "no-header", "empty-header", "other-algorithm", "unknown-algorithm"],
)
def test_forged_requests_are_refused(
    token: str, url: str, params: dict[str, str], headers: dict[str, str]
) -> None:
    """Any change to the parameters, URL, token, signature or algorithm is a SignatureError."""
    with pytest.raises(SignatureError):
        twilio.verify_signature(token, url, params, headers)


def test_ports_and_shared_key_signatures() -> None:
    """Like Twilio's validator, the URL verifies with and without its default port; a Webhooks
    Rule's HMAC-SHA256 signature verifies with the shared key."""
    plain = "https://example.com/sms"
    signed = {"X-Twilio-Signature": twilio.signature("tok", plain, {"A": "1"})}
    twilio.verify_signature("tok", "https://example.com:443/sms", {"A": "1"}, signed)
    ported = {"X-Twilio-Signature": twilio.signature("tok", "https://example.com:443/sms", {})}
    twilio.verify_signature("tok", plain, {}, ported)
    rule = {
        "X-Twilio-Signature": RequestValidator("shared").compute_signature(plain, {"A": "1"},
                                                                          "HMAC_SHA256"),
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
    }
    twilio.verify_signature("shared", plain, {"A": "1"}, rule)
    with pytest.raises(ValidationError):
        twilio.verify_signature("", plain, {}, signed)


class _MultiDict(dict[str, str]):
    """A form with repeated names, as Starlette's FormData or Django's QueryDict give it."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def getlist(self, key: str) -> list[str]:
        return [value for name, value in self._pairs if name == key]


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@given(
    params=st.dictionaries(_text, _text, max_size=6),
    path=_text,
    token=_text.filter(bool),
)
def test_signatures_equal_the_official_validators(
    params: dict[str, str], path: str, token: str
) -> None:
    """For any parameters, path and token, our signature is the twilio package's, and a request
    the package accepts we accept too."""
    url = f"https://example.com/{path}?x=1"
    validator = RequestValidator(token)
    assert twilio.signature(token, url, params) == validator.compute_signature(url, params)
    headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
    twilio.verify_signature(token, url, params, headers)


@given(pairs=st.lists(st.tuples(st.sampled_from(["A", "B", "Body"]), _text), max_size=6))
def test_repeated_names_sign_like_the_official_validator(pairs: list[tuple[str, str]]) -> None:
    """Repeated form names are signed value by value, sorted, as the twilio package does."""
    form = _MultiDict(pairs)
    official = RequestValidator("tok").compute_signature("https://e.com/s", form)
    assert twilio.signature("tok", "https://e.com/s", form) == official
