"""A host app: provider webhooks, the admin endpoints of the seed's flows, one-click unsubscribe.

Everything consentkit-specific is a few lines per endpoint; the rest is the host's own business
(who its users are, which numbers belong to which account).  Authentication here is a stand-in:
the ``X-User`` and ``X-Role`` headers say who is calling.  A real host takes them from its
session or token, never from the request as given.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from consentkit import (
    Actor,
    ConsentError,
    ConsentService,
    Contact,
    Evidence,
    Justification,
    NotAuthorizedError,
)
from consentkit.documents import from_document, to_document
from consentkit.errors import PayloadError
from consentkit.inbound import InboundMessage
from consentkit.providers import ParsedBatch, sendgrid, twilio, whatsapp
from consentkit.unsubscribe import Keyring, OneClickUnsubscribe, UnsubscribeLinks

__all__ = ["HostConfig", "create_app"]


@attrs.frozen
class HostConfig:
    """The host's own settings.

    Attributes:
        numbers: which account each of the host's numbers belongs to, E.164.
        whatsapp_numbers: which account each WhatsApp business phone number id belongs to.
        twilio_auth_token: signs Twilio's webhooks.
        public_url: the app's public base URL (Twilio signs the URL it called).
        whatsapp_app_secret: signs WhatsApp Cloud API webhooks.
        whatsapp_verify_token: answers the Cloud API's subscription check.
        sendgrid_password: the basic-auth password SendGrid's Event Webhook URL carries.
        keyring: signs one-click unsubscribe tokens.
    """

    numbers: Mapping[str, str]
    whatsapp_numbers: Mapping[str, str]
    twilio_auth_token: str
    public_url: str
    whatsapp_app_secret: str
    whatsapp_verify_token: str
    sendgrid_password: str
    keyring: Keyring


def create_app(service: ConsentService, config: HostConfig) -> FastAPI:  # noqa: PLR0915
    """The app, over *service*."""
    app = FastAPI(title="consentkit example host")
    one_click = OneClickUnsubscribe(service, config.keyring)
    links = UnsubscribeLinks(one_click.tokens, f"{config.public_url}/unsubscribe")

    def account_of(number: str) -> str:
        return config.numbers[number]  # a KeyError is a LookupError: consentkit's PayloadError

    def actor(request: Request, account: str) -> Actor:
        user, role = request.headers.get("x-user"), request.headers.get("x-role")
        if not user or role not in ("admin", "member"):
            raise NotAuthorizedError("sign in first (X-User, X-Role: admin or member)")
        return Actor.admin(account, user) if role == "admin" else Actor.member(account, user)

    @app.exception_handler(ConsentError)
    async def consent_error(_: Request, error: ConsentError) -> JSONResponse:
        return JSONResponse(error.to_document(), status_code=error.http_status)

    def handle_all(messages: tuple[InboundMessage, ...]) -> list[dict[str, Any]]:
        return [to_document(service.handle_inbound(m)) for m in messages]

    def handle_batch(batch: ParsedBatch) -> dict[str, Any]:
        # The readable events apply and the answer is 200, so the provider does not retry the
        # batch forever for an event no retry can fix; a real host logs batch.rejected.
        return {"results": handle_all(batch.messages), "rejected": [r.path for r in batch.rejected]}

    # ------------------------------------------------------------------ provider webhooks

    @app.post("/webhooks/twilio")
    async def twilio_inbound(request: Request) -> Response:
        params = dict(await request.form())
        twilio.verify_signature(
            config.twilio_auth_token, _public(config, request), params, request.headers
        )
        message = twilio.parse_message(params, account_of, received_at=service.clock.now())
        result = service.handle_inbound(message)
        return Response(twilio.twiml_reply(result), media_type="application/xml")

    @app.post("/webhooks/twilio/status")
    async def twilio_status(request: Request) -> list[dict[str, Any]]:
        params = dict(await request.form())
        twilio.verify_signature(
            config.twilio_auth_token, _public(config, request), params, request.headers
        )
        return handle_all(twilio.parse_status(params, account_of, received_at=service.clock.now()))

    @app.get("/webhooks/whatsapp")
    async def whatsapp_subscribe(request: Request) -> Response:
        query = request.query_params
        given = query.get("hub.verify_token", "")
        if query.get("hub.mode") != "subscribe" or not hmac.compare_digest(
            given.encode(), config.whatsapp_verify_token.encode()
        ):
            return Response(status_code=403)
        return Response(query.get("hub.challenge", ""), media_type="text/plain")

    @app.post("/webhooks/whatsapp")
    async def whatsapp_inbound(request: Request) -> dict[str, Any]:
        body = await request.body()
        whatsapp.verify_signature(body, request.headers, config.whatsapp_app_secret)
        return handle_batch(whatsapp.parse_batch(body, config.whatsapp_numbers.__getitem__))

    @app.post("/webhooks/sendgrid/{account}")
    async def sendgrid_events(account: str, request: Request) -> dict[str, Any]:
        _basic_auth(request, config.sendgrid_password)
        return handle_batch(sendgrid.parse_batch(await request.body(), account))

    # ------------------------------------------------------------------ one-click unsubscribe

    @app.api_route("/unsubscribe", methods=["GET", "HEAD", "POST"])
    async def unsubscribe_link(request: Request) -> Response:
        answer = one_click.handle(
            request.method,
            request.query_params.get("token"),
            await request.body(),
            request.headers.get("content-type"),
        )
        return Response(
            answer.body, answer.status, dict(answer.headers), media_type=answer.content_type
        )

    @app.get("/accounts/{account}/contacts/{contact_id}/unsubscribe-headers")
    async def unsubscribe_headers(account: str, contact_id: str, request: Request) -> Any:
        actor(request, account)
        return links.headers(account, contact_id).as_dict()

    # ------------------------------------------------------------------ the seed's admin flows

    @app.put("/accounts/{account}/contacts/{contact_id}")
    async def put_contact(account: str, contact_id: str, request: Request) -> Any:
        body = await _json(request)
        contact = Contact(account, contact_id, phone=body.get("phone"), email=body.get("email"))
        return to_document(service.upsert_contacts(actor(request, account), [contact]))

    @app.post("/accounts/{account}/opt-ins")
    async def opt_in(account: str, request: Request) -> Any:
        body = await _json(request)
        evidence = from_document(body["evidence"], Evidence)
        return to_document(
            service.opt_in(
                actor(request, account),
                body["contact_ids"],
                body["channels"],
                evidence=evidence,
                details=True,  # a page's selection: list the pairs and their versions
            )
        )

    @app.post("/accounts/{account}/unsubscribe")
    async def unsubscribe(account: str, request: Request) -> Any:
        body = await _json(request)
        return to_document(
            service.unsubscribe(
                actor(request, account), body["contact_ids"], body["channels"], details=True
            )
        )

    @app.post("/accounts/{account}/resubscribe")
    async def resubscribe(account: str, request: Request) -> Any:
        body = await _json(request)
        return to_document(
            service.resubscribe(
                actor(request, account),
                body["contact_ids"],
                body["channels"],
                justification=_justification(body),
                details=True,
            )
        )

    @app.put("/accounts/{account}/contacts/{contact_id}/channels/{channel}")
    async def toggle(account: str, contact_id: str, channel: str, request: Request) -> Any:
        body = await _json(request)
        evidence = body.get("evidence")
        return to_document(
            service.set_subscribed(
                actor(request, account),
                contact_id,
                channel,
                body["subscribed"],
                expected_version=body.get("expected_version"),
                justification=_justification(body),
                evidence=None if evidence is None else from_document(evidence, Evidence),
            )
        )

    @app.get("/accounts/{account}/contacts/{contact_id}/consent")
    async def consent(account: str, contact_id: str, request: Request) -> Any:
        subscriptions = service.subscriptions(actor(request, account), contact_id)
        return [to_document(s) for s in subscriptions]

    @app.get("/accounts/{account}/contacts/{contact_id}/history")
    async def history(
        account: str, contact_id: str, request: Request, cursor: str | None = None
    ) -> Any:
        return to_document(service.history_page(actor(request, account), contact_id, cursor=cursor))

    @app.get("/accounts/{account}/subscriptions")
    async def subscriptions(
        account: str,
        channel: str,
        request: Request,
        state: str = "unsubscribed",
        cursor: str | None = None,
    ) -> Any:
        return to_document(
            service.list_subscriptions(actor(request, account), channel, state, cursor=cursor)
        )

    @app.get("/accounts/{account}/review")
    async def review(account: str, request: Request, cursor: str | None = None) -> Any:
        return to_document(service.review_items(actor(request, account), cursor=cursor))

    @app.post("/accounts/{account}/review/{item_id}")
    async def decide(account: str, item_id: str, request: Request) -> Any:
        body = await _json(request)
        return to_document(
            service.decide_review(
                actor(request, account), item_id, body["decision"], note=body["note"]
            )
        )

    @app.get("/accounts/{account}/trends")
    async def trends(account: str, request: Request, as_of: datetime | None = None) -> Any:
        return to_document(service.trends(actor(request, account), as_of=as_of))

    return app


def _public(config: HostConfig, request: Request) -> str:
    """The URL Twilio called: the public base URL and the request's path and query."""
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{config.public_url}{request.url.path}{query}"


def _basic_auth(request: Request, password: str) -> None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded, validate=True).decode().partition(":")[2]
    except ValueError:
        given = ""
    if scheme.lower() != "basic" or not hmac.compare_digest(given.encode(), password.encode()):
        raise NotAuthorizedError("the Event Webhook's basic-auth password does not match")


def _justification(body: _Body) -> Justification | None:
    given = body.get("justification")
    return None if given is None else from_document(given, Justification)


class _Body:
    """A request's JSON object: ``body["x"]`` is required, ``body.get("x")`` optional."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        if key not in self._data:
            raise PayloadError(key, "is required")
        return self._data[key]

    def get(self, key: str) -> Any:
        return self._data.get(key)


async def _json(request: Request) -> _Body:
    try:
        body = await request.json()
    except ValueError:
        raise PayloadError("body", "expected a JSON object") from None
    if not isinstance(body, dict):
        raise PayloadError("body", "expected a JSON object")
    return _Body(body)
