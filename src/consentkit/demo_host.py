"""The host-integration steps of ``consentkit demo``: provider webhooks, one-click unsubscribe,
JSON documents and error codes, as a host app's endpoints would use them."""

from __future__ import annotations

import json
import textwrap

from consentkit._demo_context import ACCOUNT, WRAP, DemoContext
from consentkit.channels import EMAIL, MMS, SMS, WHATSAPP
from consentkit.documents import to_document
from consentkit.errors import ConsentError, SignatureError
from consentkit.model import Contact, Evidence, Justification, Source, SubscriptionState
from consentkit.providers import sendgrid, twilio
from consentkit.unsubscribe import Keyring, OneClickUnsubscribe, SigningKey, UnsubscribeLinks

__all__ = ["HOST_STEPS"]

_HAL_PHONE, _HAL_EMAIL, _SHOP = "+14155550108", "hal@example.com", "+14155550000"
_TOKEN = "demo-twilio-auth-token"
_URL = "https://host.example/webhooks/twilio"
_UNSUBSCRIBED = SubscriptionState.UNSUBSCRIBED


def _register_hal(ctx: DemoContext) -> None:
    ctx.service.upsert_contacts(
        ctx.admin, [Contact(ACCOUNT, "hal", phone=_HAL_PHONE, email=_HAL_EMAIL)]
    )
    ctx.service.opt_in(
        ctx.admin,
        ["hal"],
        [SMS, MMS, WHATSAPP, EMAIL],
        evidence=Evidence("web_form", "Yes, send me offers by text and email.", "v2"),
    )


def step_provider_webhooks(ctx: DemoContext) -> None:
    """A host app's webhooks: a signed Twilio STOP, a forged one, an email provider's spam report"""
    _register_hal(ctx)
    ctx.say("hal (opted in on sms, mms, whatsapp and email) replies STOP; Twilio posts the form")
    ctx.say("with its signature, and the endpoint is three calls of consentkit.providers.twilio:")
    form = {
        "MessageSid": "SMhal1",
        "AccountSid": "AC1",
        "From": _HAL_PHONE,
        "To": _SHOP,
        "Body": "STOP",
        "NumMedia": "0",
    }
    headers = {"X-Twilio-Signature": twilio.signature(_TOKEN, _URL, form)}
    twilio.verify_signature(_TOKEN, _URL, form, headers)
    message = twilio.parse_message(
        form, {_SHOP: ACCOUNT}.__getitem__, received_at=ctx.service.clock.now()
    )
    result = ctx.service.handle_inbound(message)
    reply = twilio.twiml_reply(result)
    ctx.say(f"-> {result.outcome.value} on {', '.join(c.key for c in result.channels)}; TwiML:")
    for line in textwrap.wrap(reply, WRAP):
        ctx.say(f"   {line}")
    ctx.check(
        ctx.state("hal", SMS) is _UNSUBSCRIBED
        and ctx.state("hal", WHATSAPP) is not _UNSUBSCRIBED
        and "<Message>" in reply,
        "a signed STOP unsubscribes hal's sms group and answers with a confirmation",
    )
    retry = ctx.service.handle_inbound(message)
    ctx.check(
        retry.replayed and twilio.twiml_reply(retry) == reply,
        "a retry is answered with the same TwiML and writes nothing",
    )
    ctx.say("Twilio retries when it gets no answer: the retry gets the same TwiML, nothing new.")
    forged = dict(form, MessageSid="SMhal2", Body="START")
    error = ctx.refused(lambda: twilio.verify_signature(_TOKEN, _URL, forged, headers))
    ctx.check(isinstance(error, SignatureError), "a forged request is refused")
    ctx.say(
        f"A START with the old signature: {type(error).__name__}, code {error.code!r}, "
        f"HTTP {error.http_status}."
    )
    events = json.dumps(
        [
            {
                "email": _HAL_EMAIL,
                "timestamp": int(ctx.service.clock.now().timestamp()),
                "event": "spamreport",
                "sg_event_id": "sg-hal-1",
                "sg_message_id": "m1",
            }
        ]
    ).encode()
    [spam] = sendgrid.parse(events, ACCOUNT)
    done = ctx.service.handle_inbound(spam)
    last = ctx.service.history(ctx.admin, "hal", EMAIL)[-1]
    ctx.check(
        ctx.state("hal", EMAIL) is _UNSUBSCRIBED and last.source is Source.CARRIER,
        "a spam report unsubscribes hal from email, recorded as the provider's report",
    )
    ctx.say(f"SendGrid reports hal's spam complaint: {done.outcome.value} on email, the")
    ctx.say(
        f"provider's verdict recorded (actor {last.actor}, source {last.source.value}, "
        f"reason {last.reason})."
    )


def step_one_click_unsubscribe(ctx: DemoContext) -> None:
    """One-click email unsubscribe (RFC 8058): a signed link, a POST, a repeat that does nothing"""
    ctx.service.resubscribe(
        ctx.admin,
        ["hal"],
        [EMAIL],
        justification=Justification("contact_request", "hal asked to get the newsletter back"),
    )
    keyring = Keyring([SigningKey("2026-demo", b"a demo secret of at least 32 bytes!")])
    endpoint = OneClickUnsubscribe(ctx.service, keyring)
    links = UnsubscribeLinks(endpoint.tokens, "https://host.example/unsubscribe")
    headers = links.headers(ACCOUNT, "hal")
    ctx.say("Each newsletter to hal carries:")
    token = headers.url.partition("token=")[2]
    # The token carries its issue time, so it is shown by its size: the tour prints the same
    # text on every run.
    base = headers.list_unsubscribe.partition("token=")[0]
    ctx.say(f"  List-Unsubscribe: {base}token=<a signed token, {len(token)} characters>>")
    ctx.say(f"  List-Unsubscribe-Post: {headers.list_unsubscribe_post}")
    looked = endpoint.handle("GET", token)
    ctx.check(
        ctx.state("hal", EMAIL) is SubscriptionState.SUBSCRIBED,
        "a GET (a mail scanner following the link) changes nothing",
    )
    posted = endpoint.handle(
        "POST", token, b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"
    )
    again = endpoint.handle(
        "POST", token, b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"
    )
    ctx.check(
        ctx.state("hal", EMAIL) is _UNSUBSCRIBED
        and again.status == 200
        and again.result is not None
        and again.result.changed_count == 0,
        "the POST unsubscribes hal from email once; the repeat changes nothing",
    )
    ctx.say(f"A GET answers a confirmation page ({looked.status}) and changes nothing; the mail")
    ctx.say(
        f"client's POST -> {posted.status} {posted.outcome.value}; a second POST -> "
        f"{again.status} {again.outcome.value}, no event written."
    )


def step_json_and_error_codes(ctx: DemoContext) -> None:
    """JSON documents of results and errors, for a host's own API"""
    result = ctx.service.unsubscribe(ctx.admin, ["hal"], [WHATSAPP], details=True)
    document = to_document(result)
    ctx.say("to_document(unsubscribe(..., details=True)), with the next toggle's version:")
    shown = {k: document[k] for k in ("new_state", "changed_count", "versions")}
    for line in textwrap.wrap(json.dumps(shown), WRAP):
        ctx.say(f"  {line}")
    error: ConsentError = ctx.refused(
        lambda: ctx.service.resubscribe(ctx.admin, ["hal"], [WHATSAPP], justification=None)
    )
    ctx.check(error.http_status == 422, "a missing justification is a 422, not a 403")
    ctx.say(f"A resubscription without a justification -> HTTP {error.http_status}:")
    for line in textwrap.wrap(json.dumps(error.to_document()), WRAP):
        ctx.say(f"  {line}")


HOST_STEPS = [step_provider_webhooks, step_one_click_unsubscribe, step_json_and_error_codes]
"""The host-integration part of the tour, after the seed's flows."""
