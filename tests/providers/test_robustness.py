"""Whatever a provider (or an attacker) posts, the adapters raise only ConsentError: never
KeyError, TypeError, ValueError, AttributeError or a JSON error."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentkit import ConsentError
from consentkit.providers import (
    aws,
    mailgun,
    plivo,
    postmark,
    sendgrid,
    ses,
    sinch,
    telnyx,
    twilio,
    vonage,
    whatsapp,
)
from tests.providers import (
    test_aws,
    test_mailgun,
    test_plivo,
    test_postmark,
    test_sendgrid,
    test_ses,
    test_sinch,
    test_telnyx,
    test_twilio,
    test_vonage,
    test_whatsapp,
)
from tests.providers._sns import notification

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT = "acme"

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", " ", "+", "+0", "00", "STOP", "1e999", "2019-13-01", "\ud800", "9" * 40]),
)
_junk = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutated(document: Any, path: tuple[Any, ...], junk: Any, delete: bool) -> Any:
    copy = json.loads(json.dumps(document))
    node = copy
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = junk
    return copy


def mutations(document: Any) -> st.SearchStrategy[Any]:
    """*document* with one value somewhere replaced by junk, or deleted."""
    paths = _paths(document)
    return st.builds(_mutated, st.just(document), st.sampled_from(paths), _junk, st.booleans())


def _survives(call: Callable[[], object]) -> None:
    with contextlib.suppress(ConsentError):
        call()


_JSON_PARSERS: list[tuple[Callable[[bytes, str], object], Any]] = [
    (telnyx.parse, test_telnyx.RECEIVED),
    (telnyx.parse, test_telnyx.BLOCKED),
    (sinch.parse, test_sinch.INBOUND),
    (sinch.parse, test_sinch.OPT_OUT),
    (whatsapp.parse, test_whatsapp.TEXT),
    (whatsapp.parse, test_whatsapp.STOP),
    (whatsapp.parse, test_whatsapp.FAILED),
    (whatsapp.parse, test_whatsapp.BUTTON),
    (sendgrid.parse, test_sendgrid.EVENTS),
    (sendgrid.parse_batch, test_sendgrid.EVENTS),
    (whatsapp.parse_batch, test_whatsapp.STOP),
    (whatsapp.parse_batch, test_whatsapp.FAILED),
    (telnyx.parse_batch, test_telnyx.BLOCKED),
    (mailgun.parse, test_mailgun.COMPLAINED),
    (postmark.parse, {**test_postmark.DOCUMENTED, "SuppressionReason": "SpamComplaint"}),
]
_SNS_PARSERS: list[tuple[Callable[[bytes, str], object], Any]] = [
    (aws.parse_message, test_aws.PAYLOAD),
    (ses.parse, test_ses.COMPLAINT),
    (ses.parse, test_ses.SUBSCRIPTION),
    (ses.parse_batch, test_ses.COMPLAINT),
    (ses.parse_batch, test_ses.SUBSCRIPTION),
]
_FORM_PARSERS: list[tuple[Callable[[Any, str], object], dict[str, Any]]] = [
    (lambda p, a: twilio.parse_message(p, a, received_at=NOW), test_twilio.INBOUND),
    (lambda p, a: twilio.parse_status(p, a, received_at=NOW), test_twilio.STATUS),
    (vonage.parse_message, test_vonage.INBOUND),
    (vonage.parse_receipt, test_vonage.RECEIPT),
    (lambda p, a: plivo.parse_status(p, a, received_at=NOW), test_plivo.CALLBACK),
]


@pytest.mark.parametrize("which", range(len(_JSON_PARSERS)))
@given(data=st.data())
def test_mutated_json_payloads(data: st.DataObject, which: int) -> None:
    """A documented payload with any value replaced by junk, or removed."""
    parse, document = _JSON_PARSERS[which]
    payload = data.draw(mutations(document))
    _survives(lambda: parse(json.dumps(payload).encode(), ACCOUNT))


@pytest.mark.parametrize("which", range(len(_SNS_PARSERS)))
@given(data=st.data())
def test_mutated_sns_payloads(data: st.DataObject, which: int) -> None:
    """A documented SES/AWS message with any value replaced by junk, inside a real envelope."""
    parse, document = _SNS_PARSERS[which]
    payload = data.draw(mutations(document))
    _survives(lambda: parse(notification(payload), ACCOUNT))


@pytest.mark.parametrize("which", range(len(_FORM_PARSERS)))
@given(data=st.data())
def test_mutated_forms(data: st.DataObject, which: int) -> None:
    """Form fields with any value replaced by junk (non-strings included), or removed."""
    parse, document = _FORM_PARSERS[which]
    params = data.draw(mutations(document))
    _survives(lambda: parse(params, ACCOUNT))


_PARSERS = [parse for parse, _ in _JSON_PARSERS + _SNS_PARSERS]


@pytest.mark.parametrize("which", range(len(_PARSERS)))
@given(raw=st.binary(max_size=200) | _junk.map(lambda v: json.dumps(v).encode()))
def test_random_bodies(raw: bytes, which: int) -> None:
    """Random bytes and random JSON documents."""
    _survives(lambda: _PARSERS[which](raw, ACCOUNT))


_headers = st.dictionaries(
    st.sampled_from([
        "X-Twilio-Signature", "telnyx-signature-ed25519", "telnyx-timestamp",
        "x-sinch-webhook-signature", "x-sinch-webhook-signature-nonce",
        "x-sinch-webhook-signature-timestamp", "x-sinch-webhook-signature-algorithm",
        "X-Hub-Signature-256", "X-Twilio-Webhooks-Signature-Settings",
    ]) | st.text(max_size=5),
    st.text(max_size=60) | _scalar,
    max_size=6,
)
_VERIFIERS: list[Callable[[bytes, Any, Any], object]] = [
    lambda raw, headers, params: twilio.verify_signature("tok", "https://e.com/x", params, headers),
    lambda raw, headers, params: telnyx.verify_signature(raw, headers, test_telnyx.PUBLIC, now=NOW),
    lambda raw, headers, params: sinch.verify_signature(raw, headers, "secret", now=NOW),
    lambda raw, headers, params: whatsapp.verify_signature(raw, headers, "secret"),
    lambda raw, headers, params: mailgun.verify_signature(raw, "key", now=NOW),
    lambda raw, headers, params: vonage.verify_signature(params, "secret", now=NOW),
]


@pytest.mark.parametrize("which", range(len(_VERIFIERS)))
@given(
    raw=st.binary(max_size=100) | _junk.map(lambda v: json.dumps({"signature": v}).encode()),
    headers=_headers,
    params=st.dictionaries(st.text(max_size=6) | st.just("sig") | st.just("timestamp"),
                           _scalar, max_size=5),
)
def test_random_signatures(raw: bytes, headers: Any, params: Any, which: int) -> None:
    """Random bodies, headers and parameters: a verifier raises only ConsentError."""
    _survives(lambda: _VERIFIERS[which](raw, headers, params))
