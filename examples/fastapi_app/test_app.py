"""The example host app, end to end through FastAPI's TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from tests.storage._pg_support import DSN, SKIP_REASON, drop_schemas, new_schema
from twilio.request_validator import RequestValidator

from consentkit import (
    EMAIL,
    MMS,
    SMS,
    WHATSAPP,
    Actor,
    ConsentService,
    Contact,
    Evidence,
    Source,
    SQLiteStore,
    Store,
    SubscriptionState,
)
from consentkit.testing import FakeClock, check_replay
from consentkit.unsubscribe import Keyring, SigningKey
from examples.fastapi_app.app import HostConfig, create_app

T0 = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
ACCOUNT = "acme"
SHOP_NUMBER = "+14155550000"
ANN = "+14155550111"
PUBLIC = "https://host.example"
TOKEN = "twilio-auth-token-0123456789"
APP_SECRET = "whatsapp-app-secret"
ADMIN_H = {"X-User": "alice", "X-Role": "admin"}
MEMBER_H = {"X-User": "bob", "X-Role": "member"}
ADMIN = Actor.admin(ACCOUNT, "alice")
SUB, UNSUB = SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        made: Store = SQLiteStore(tmp_path / "consent.db")
    else:
        if DSN is None:
            pytest.skip(SKIP_REASON)
        from consentkit.storage.postgres import PostgresStore

        made = PostgresStore(DSN, schema=new_schema("app"))
    try:
        yield made
    finally:
        made.close()
        if request.param == "postgres":
            drop_schemas()


@pytest.fixture
def service(store: Store) -> ConsentService:
    svc = ConsentService(store, clock=FakeClock(T0))
    svc.upsert_contacts(ADMIN, [Contact(ACCOUNT, "ann", phone=ANN, email="ann@example.com")])
    svc.opt_in(ADMIN, ["ann"], [SMS, MMS, WHATSAPP, EMAIL], evidence=Evidence("web", "Yes", "v1"))
    return svc


@pytest.fixture
def client(service: ConsentService) -> TestClient:
    config = HostConfig(
        numbers={SHOP_NUMBER: ACCOUNT},
        whatsapp_numbers={"1061": ACCOUNT},
        twilio_auth_token=TOKEN,
        public_url=PUBLIC,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token="verify-me",
        sendgrid_password="sg-pass",
        keyring=Keyring([SigningKey("k1", b"k" * 32)]),
    )
    return TestClient(create_app(service, config))


def twilio_post(
    client: TestClient, path: str, params: dict[str, str], *, forged: bool = False
) -> Any:
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{path}", params)
    if forged:
        signature = base64.b64encode(b"x" * 20).decode()
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def sms(body: str, sid: str, sender: str = ANN) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "AccountSid": "AC1",
        "From": sender,
        "To": SHOP_NUMBER,
        "Body": body,
        "NumMedia": "0",
    }


def state(service: ConsentService, channel: Any) -> SubscriptionState:
    return service.state(ADMIN, "ann", channel)


def test_twilio_stop_unsubscribes_the_group_and_a_retry_gets_the_same_twiml(
    client: TestClient, service: ConsentService, store: Store
) -> None:
    first = twilio_post(client, "/webhooks/twilio", sms("STOP", "SM1"))
    assert first.status_code == 200
    assert "<Message>" in first.text
    assert first.headers["content-type"].startswith("application/xml")
    assert (state(service, SMS), state(service, MMS), state(service, WHATSAPP)) == (
        UNSUB,
        UNSUB,
        SUB,
    )
    retry = twilio_post(client, "/webhooks/twilio", sms("STOP", "SM1"))
    assert retry.text == first.text  # the retry's TwiML is the only reply that arrives
    assert len(service.history(ADMIN, "ann", SMS)) == 2  # opt-in, one opt-out
    check_replay(store, ACCOUNT)


def test_twilio_forged_or_unknown_number_changes_nothing(
    client: TestClient, service: ConsentService
) -> None:
    forged = twilio_post(client, "/webhooks/twilio", sms("STOP", "SM2"), forged=True)
    assert (forged.status_code, forged.json()["code"]) == (403, "invalid_signature")
    params = sms("STOP", "SM3") | {"To": "+19995550000"}
    unknown = twilio_post(client, "/webhooks/twilio", params)
    assert (unknown.status_code, unknown.json()["code"]) == (400, "invalid_payload")
    assert state(service, SMS) is SUB


def test_twilio_advanced_opt_out_and_the_21610_status_callback(
    client: TestClient, service: ConsentService
) -> None:
    params = sms("cancel", "SM4") | {"OptOutType": "STOP", "MessagingServiceSid": "MG1"}
    answer = twilio_post(client, "/webhooks/twilio", params)
    assert "<Message>" not in answer.text  # Twilio answered it itself
    assert state(service, SMS) is UNSUB
    assert service.history(ADMIN, "ann", SMS)[-1].reason == "provider_opt_out"
    status = {
        "MessageSid": "SM5",
        "MessageStatus": "failed",
        "ErrorCode": "21610",
        "From": SHOP_NUMBER,
        "To": ANN,
        "AccountSid": "AC1",
    }
    failed = twilio_post(client, "/webhooks/twilio/status", status)
    assert failed.status_code == 200, failed.text
    assert [r["outcome"] for r in failed.json()] == ["opted_out"]


def whatsapp_post(client: TestClient, payload: dict[str, Any], secret: str = APP_SECRET) -> Any:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post(
        "/webhooks/whatsapp",
        content=body,
        headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
    )


def whatsapp_payload(value: dict[str, Any]) -> dict[str, Any]:
    metadata = {"display_phone_number": SHOP_NUMBER[1:], "phone_number_id": "1061"}
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
                    }
                ],
            }
        ],
    }


def test_whatsapp_subscription_check_and_signed_webhooks(
    client: TestClient, service: ConsentService
) -> None:
    check = {"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "42"}
    assert client.get("/webhooks/whatsapp", params=check).text == "42"
    check["hub.verify_token"] = "guess"
    assert client.get("/webhooks/whatsapp", params=check).status_code == 403
    stop = whatsapp_payload(
        {
            "contacts": [{"wa_id": ANN[1:], "profile": {"name": "Ann"}}],
            "messages": [
                {
                    "from": ANN[1:],
                    "id": "wamid.1",
                    "timestamp": "1780326000",
                    "type": "text",
                    "text": {"body": "STOP"},
                }
            ],
        }
    )
    assert whatsapp_post(client, stop, secret="wrong").status_code == 403
    assert state(service, WHATSAPP) is SUB
    done = whatsapp_post(client, stop)
    assert done.status_code == 200, done.text
    assert [r["outcome"] for r in done.json()["results"]] == ["opted_out"]
    assert done.json()["rejected"] == []
    assert (state(service, WHATSAPP), state(service, SMS)) == (UNSUB, SUB)


def test_whatsapp_an_unreadable_event_does_not_hold_back_the_others(
    client: TestClient, service: ConsentService
) -> None:
    """A webhook with one event consentkit cannot read applies the others, names the bad one
    and answers 200, so Meta does not retry it forever."""
    message = {"from": ANN[1:], "timestamp": "1780326000", "type": "text", "text": {"body": "x"}}
    payload = whatsapp_payload(
        {"messages": [{**message, "id": "wamid.bad", "from": "abc"},
                      {**message, "id": "wamid.2", "text": {"body": "STOP"}}]}
    )
    done = whatsapp_post(client, payload)
    assert done.status_code == 200, done.text
    assert [r["outcome"] for r in done.json()["results"]] == ["opted_out"]
    assert done.json()["rejected"] == ["entry[0].changes[0].value.messages[0]"]
    assert state(service, WHATSAPP) is UNSUB


def test_sendgrid_unsubscribe_event_behind_basic_auth(
    client: TestClient, service: ConsentService
) -> None:
    events = [
        {
            "email": "ann@example.com",
            "timestamp": 1780326000,
            "event": "group_unsubscribe",
            "sg_event_id": "ev-1",
            "sg_message_id": "m1",
            "asm_group_id": 7,
        }
    ]
    wrong = client.post(f"/webhooks/sendgrid/{ACCOUNT}", json=events, auth=("sg", "nope"))
    assert (wrong.status_code, wrong.json()["code"]) == (403, "not_authorized")
    unreadable = {**events[0], "email": '"john doe"@example.com', "sg_event_id": "ev-2"}
    done = client.post(
        f"/webhooks/sendgrid/{ACCOUNT}", json=[unreadable, *events], auth=("sg", "sg-pass")
    )
    assert done.status_code == 200, done.text
    assert (len(done.json()["results"]), done.json()["rejected"]) == (1, ["body[0]"])
    assert state(service, EMAIL) is UNSUB
    assert service.history(ADMIN, "ann", EMAIL)[-1].source is Source.UNSUBSCRIBE_LINK
    no_batch = client.post(f"/webhooks/sendgrid/{ACCOUNT}", json={}, auth=("sg", "sg-pass"))
    assert (no_batch.status_code, no_batch.json()["code"]) == (400, "invalid_payload")


def test_one_click_unsubscribe(client: TestClient, service: ConsentService) -> None:
    headers = client.get(f"/accounts/{ACCOUNT}/contacts/ann/unsubscribe-headers", headers=ADMIN_H)
    assert headers.json()["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers.json()["List-Unsubscribe"].strip("<>")
    token = parse_qs(urlsplit(url).query)["token"][0]
    assert client.get("/unsubscribe", params={"token": token}).status_code == 200
    assert state(service, EMAIL) is SUB  # a GET (a mail scanner) changes nothing
    form = {"List-Unsubscribe": "One-Click"}
    assert client.post("/unsubscribe", params={"token": token}, data=form).status_code == 200
    assert state(service, EMAIL) is UNSUB
    events = len(service.history(ADMIN, "ann", EMAIL))
    assert client.post("/unsubscribe", params={"token": token}, data=form).status_code == 200
    assert len(service.history(ADMIN, "ann", EMAIL)) == events
    bad = client.post("/unsubscribe", params={"token": token[:-2] + "AA"}, data=form)
    assert bad.status_code == 400


def test_the_seed_flows_and_their_errors(client: TestClient, service: ConsentService) -> None:
    base = f"/accounts/{ACCOUNT}"
    put = client.put(f"{base}/contacts/bo", json={"phone": "+14155550122"}, headers=ADMIN_H)
    assert put.status_code == 200, put.text
    evidence = {"method": "web_form", "wording": "Text me", "wording_version": "v1"}
    assert (
        client.post(
            f"{base}/opt-ins",
            headers=ADMIN_H,
            json={"contact_ids": ["bo"], "channels": ["sms"], "evidence": evidence},
        ).json()["changed_count"]
        == 1
    )
    member = client.post(
        f"{base}/unsubscribe", headers=MEMBER_H, json={"contact_ids": ["bo"], "channels": ["sms"]}
    )
    assert (member.status_code, member.json()["code"]) == (403, "not_authorized")
    typo = client.post(
        f"{base}/unsubscribe", headers=ADMIN_H, json={"contact_ids": ["bo"], "channels": ["smss"]}
    )
    assert (typo.status_code, typo.json()["code"], typo.json()["field"]) == (
        422,
        "unknown_channel",
        "channels",
    )
    ghost = client.post(
        f"{base}/unsubscribe", headers=ADMIN_H, json={"contact_ids": ["ghost"], "channels": ["sms"]}
    )
    assert (ghost.status_code, ghost.json()["contact_ids"]) == (404, ["ghost"])
    done = client.post(
        f"{base}/unsubscribe", headers=ADMIN_H, json={"contact_ids": ["bo"], "channels": ["sms"]}
    ).json()
    unsubscribed = client.get(f"{base}/subscriptions", params={"channel": "sms"}, headers=ADMIN_H)
    assert [s["contact_id"] for s in unsubscribed.json()["items"]] == ["bo"]
    no_reason = client.post(
        f"{base}/resubscribe", headers=ADMIN_H, json={"contact_ids": ["bo"], "channels": ["sms"]}
    )
    assert (no_reason.status_code, no_reason.json()["code"]) == (422, "justification_required")
    # The inbox toggle, with the version the last change returned: no second read.
    version = done["versions"][0]["version"]
    toggle = {
        "subscribed": True,
        "expected_version": version,
        "justification": {"reason": "CONTACT_REQUEST", "note": "asked in the inbox"},
    }
    on = client.put(f"{base}/contacts/bo/channels/sms", json=toggle, headers=ADMIN_H)
    assert on.status_code == 200, on.text
    stale = client.put(
        f"{base}/contacts/bo/channels/sms", headers=ADMIN_H, json=toggle | {"subscribed": False}
    )
    assert (stale.status_code, stale.json()["code"]) == (409, "conflict")
    history = client.get(f"{base}/contacts/bo/history", headers=ADMIN_H).json()
    assert [e["new_state"] for e in history["items"]] == [
        "subscribed",
        "unsubscribed",
        "subscribed",
    ]
    consent = client.get(f"{base}/contacts/bo/consent", headers=ADMIN_H).json()
    assert [(s["channel"], s["state"]) for s in consent] == [("sms", "subscribed")]
    trends = client.get(f"{base}/trends", headers=MEMBER_H)
    assert trends.status_code == 200
    assert "channels" in json.dumps(trends.json())
    assert client.get(f"{base}/trends").status_code == 403


def test_a_possible_opt_out_goes_to_the_review_queue(
    client: TestClient, service: ConsentService
) -> None:
    answer = twilio_post(client, "/webhooks/twilio", sms("please stop texting me", "SM9"))
    assert "<Message>" not in answer.text
    queue = client.get(f"/accounts/{ACCOUNT}/review", headers=ADMIN_H).json()
    [item] = queue["items"]
    decided = client.post(
        f"/accounts/{ACCOUNT}/review/{item['id']}",
        headers=ADMIN_H,
        json={"decision": "opt_out", "note": "clearly wants out"},
    )
    assert decided.status_code == 200, decided.text
    assert state(service, SMS) is UNSUB
