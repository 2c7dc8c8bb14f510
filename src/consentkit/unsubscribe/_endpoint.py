"""The endpoint: :class:`OneClickUnsubscribe` reads one-click POST bodies, answers a confirmation
page for a GET, and says what it did in an :class:`UnsubscribeResponse`."""

from __future__ import annotations

import email.parser
import email.policy
import enum
import html
import urllib.parse
from collections.abc import Mapping
from typing import Final

import attrs

from consentkit.channels import Channel
from consentkit.errors import (
    ConflictError,
    ConsentError,
    NotAuthorizedError,
    StorageError,
    UnknownContactError,
    ValidationError,
)
from consentkit.model import Actor, Source, SubscriptionState, validate_reason_code
from consentkit.service import ChangeResult, ConsentService
from consentkit.unsubscribe._keys import Keyring
from consentkit.unsubscribe._links import ONE_CLICK_POST
from consentkit.unsubscribe._tokens import (
    ExpiredTokenError,
    InvalidTokenError,
    TokenClaims,
    UnsubscribeTokens,
)

_FIELD_NAME: Final = "List-Unsubscribe"
_FIELD_VALUE: Final = "One-Click"
_MAX_BODY_BYTES: Final = 8192


class UnsubscribeOutcome(enum.Enum):
    """What :meth:`OneClickUnsubscribe.handle` did, with the HTTP status it answers."""

    CONFIRM = "confirm"
    """A GET (or HEAD) with a valid token: nothing changed; the answer is a page whose button
    POSTs the one-click body.  200."""
    UNSUBSCRIBED = "unsubscribed"
    """A POST unsubscribed the pair.  200."""
    ALREADY_UNSUBSCRIBED = "already_unsubscribed"
    """The pair was already unsubscribed (a repeated POST, or a GET): nothing changed.  200."""
    INVALID_TOKEN = "invalid_token"
    """Missing, malformed, altered or unknown-key token, or one naming a channel the service does
    not know.  400."""
    EXPIRED_TOKEN = "expired_token"
    """A genuine token past its expiry.  410."""
    UNKNOWN_CONTACT = "unknown_contact"
    """A genuine token for a contact the account no longer has.  404."""
    INVALID_BODY = "invalid_body"
    """A POST whose body lacks ``List-Unsubscribe=One-Click``.  400."""
    BODY_TOO_LARGE = "body_too_large"
    """A POST body over 8 KiB.  413."""
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """A POST body that is neither form-urlencoded nor multipart/form-data.  415."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """Any method but GET, HEAD and POST.  405, with ``Allow``."""
    REFUSED = "refused"
    """The service's policy refused the contact's unsubscribe (a custom policy).  403."""
    UNAVAILABLE = "unavailable"
    """The store failed or a concurrent writer won: nothing changed; the client may retry.  503,
    with ``Retry-After``."""


_STATUS: Final = {
    UnsubscribeOutcome.CONFIRM: 200,
    UnsubscribeOutcome.UNSUBSCRIBED: 200,
    UnsubscribeOutcome.ALREADY_UNSUBSCRIBED: 200,
    UnsubscribeOutcome.INVALID_TOKEN: 400,
    UnsubscribeOutcome.EXPIRED_TOKEN: 410,
    UnsubscribeOutcome.UNKNOWN_CONTACT: 404,
    UnsubscribeOutcome.INVALID_BODY: 400,
    UnsubscribeOutcome.BODY_TOO_LARGE: 413,
    UnsubscribeOutcome.UNSUPPORTED_MEDIA_TYPE: 415,
    UnsubscribeOutcome.METHOD_NOT_ALLOWED: 405,
    UnsubscribeOutcome.REFUSED: 403,
    UnsubscribeOutcome.UNAVAILABLE: 503,
}


@attrs.frozen
class UnsubscribeResult:
    """What :meth:`OneClickUnsubscribe.unsubscribe` did.

    Attributes:
        claims: what the token said.
        result: the service's result (``unchanged`` names the pair when it was already
            unsubscribed).
    """

    claims: TokenClaims
    result: ChangeResult

    @property
    def changed(self) -> bool:
        """Whether this call unsubscribed the pair (False when it already was)."""
        return self.result.changed_count > 0


@attrs.frozen
class UnsubscribeResponse:
    """The HTTP answer of :meth:`OneClickUnsubscribe.handle`, for any web framework.

    Attributes:
        status: the HTTP status code.
        outcome: what happened.
        message: one sentence for a person (also the plain-text body).
        body: the response body: the confirmation page (HTML) for :attr:`UnsubscribeOutcome.
            CONFIRM`, otherwise :attr:`message`.
        content_type: the body's media type.
        headers: every header to send, ``Content-Type`` included; never a redirect (RFC 8058).
        claims: what the token said, once it was verified.
        result: the service's result, for a POST that reached the service.
        error: the error behind a 4xx/5xx answer, for your logs.
    """

    status: int
    outcome: UnsubscribeOutcome
    message: str
    body: str
    content_type: str
    headers: tuple[tuple[str, str], ...]
    claims: TokenClaims | None = None
    result: ChangeResult | None = None
    error: ConsentError | None = attrs.field(default=None, eq=False)


_CONFIRMATION_PAGE: Final = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="robots" content="noindex"><title>Unsubscribe</title></head>
<body>
<form method="post">
<p>{message}</p>
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>
</body>
</html>
"""


def _media_type(content_type: str | None) -> tuple[str, str]:
    """The lower-cased media type of a Content-Type value, and the value itself."""
    if content_type is None:
        return "", ""
    return content_type.split(";", 1)[0].strip().lower(), content_type


def _form_value_problem(values: list[str]) -> str | None:
    if not values:
        return f"it has no {_FIELD_NAME} field"
    for value in values:
        if value.strip() != _FIELD_VALUE:
            return f"its {_FIELD_NAME} field is {value[:40]!r}, not {_FIELD_VALUE!r}"
    return None


def _mapping_values(body: Mapping[str, object]) -> list[str] | None:
    # Multi-dicts (Starlette's FormData, Werkzeug's MultiDict) give every value of a repeated field
    # through getlist; a plain mapping holds a value or a list of values.
    getlist = getattr(body, "getlist", None)
    value = getlist(_FIELD_NAME) if callable(getlist) else body.get(_FIELD_NAME)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def _urlencoded_values(data: bytes) -> list[str] | None:
    try:
        text = data.decode("utf-8").strip()
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError):
        return None
    return [value for name, value in pairs if name == _FIELD_NAME]


def _multipart_values(data: bytes, content_type: str) -> list[str] | None:
    if "\r" in content_type or "\n" in content_type:
        return None
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + data
    )
    if not message.is_multipart() or message.defects:
        return None
    values: list[str] = []
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") != _FIELD_NAME:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        try:
            values.append(payload.decode("utf-8"))
        except UnicodeDecodeError:
            return None
    return values


def _body_problem(
    body: bytes | str | Mapping[str, object] | None, content_type: str | None
) -> tuple[UnsubscribeOutcome, str] | None:
    """Why *body* is not a one-click POST body (RFC 8058 3.2: ``List-Unsubscribe=One-Click``,
    sent as multipart/form-data or application/x-www-form-urlencoded), or None."""
    invalid = UnsubscribeOutcome.INVALID_BODY
    if body is None:
        return invalid, "the body is empty"
    if isinstance(body, Mapping):
        values = _mapping_values(body)
    else:
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if len(data) > _MAX_BODY_BYTES:
            return UnsubscribeOutcome.BODY_TOO_LARGE, f"the body is over {_MAX_BODY_BYTES} bytes"
        media_type, raw = _media_type(content_type)
        if media_type in ("", "application/x-www-form-urlencoded"):
            values = _urlencoded_values(data)
        elif media_type == "multipart/form-data":
            values = _multipart_values(data, raw)
        else:
            return (
                UnsubscribeOutcome.UNSUPPORTED_MEDIA_TYPE,
                f"the body is {media_type}; post it as application/x-www-form-urlencoded or "
                "multipart/form-data",
            )
    if values is None:
        return invalid, "the body is not a readable form"
    problem = _form_value_problem(values)
    return None if problem is None else (invalid, problem)


def _check_body_type(body: object, content_type: object) -> None:
    if body is not None and not isinstance(body, bytes | bytearray | memoryview | str | Mapping):
        raise ValidationError(
            "body",
            f"expected the request body as bytes or str, a parsed form (a mapping), or None, got "
            f"{type(body).__name__}",
        )
    if content_type is not None and not isinstance(content_type, str):
        raise ValidationError(
            "content_type",
            f"expected the Content-Type header as a string or None, got "
            f"{type(content_type).__name__}",
        )


_FAILURES: Final[tuple[tuple[type[ConsentError], UnsubscribeOutcome, str], ...]] = (
    (
        ExpiredTokenError,
        UnsubscribeOutcome.EXPIRED_TOKEN,
        "This unsubscribe link has expired. Use the link in a more recent message.",
    ),
    (
        InvalidTokenError,
        UnsubscribeOutcome.INVALID_TOKEN,
        "This unsubscribe link is not valid. Copy the whole link from the message, or use the "
        "link in a more recent message.",
    ),
    (
        UnknownContactError,
        UnsubscribeOutcome.UNKNOWN_CONTACT,
        "We have no subscription for this link any more, so nothing is sent to it.",
    ),
    (
        NotAuthorizedError,
        UnsubscribeOutcome.REFUSED,
        "This unsubscribe request was refused. Contact the sender to unsubscribe.",
    ),
)
"""The answer to each error a request may meet, the most specific class first; any other (a store
that failed or lost to a concurrent writer) is :attr:`UnsubscribeOutcome.UNAVAILABLE`."""


class OneClickUnsubscribe:
    """The unsubscribe endpoint, framework-free: verifies the token and records the contact's own
    unsubscribe through the service.

    Serve it at the base URL of :class:`UnsubscribeLinks`, for GET, HEAD and POST, without
    authentication, CSRF checks or cookies (a one-click POST carries none), and send back
    :meth:`handle`'s answer as it is (never a redirect).

    Args:
        service: the consent service; the change goes through its policy, store and clock.
        tokens: verifies the tokens: the :class:`UnsubscribeTokens` that issue them, or their
            :class:`Keyring` (then tokens use the service's clock and channels, see
            :attr:`tokens`).
        reason: the reason code recorded on the unsubscribe event, ``"one_click"`` by default
            (None for none).

    Raises:
        ValidationError: naming the argument that is not usable.
    """

    __slots__ = ("_reason", "_service", "_tokens")

    def __init__(
        self,
        service: ConsentService,
        tokens: UnsubscribeTokens | Keyring,
        *,
        reason: str | None = "one_click",
    ) -> None:
        if not isinstance(service, ConsentService):
            raise ValidationError(
                "service", f"expected a ConsentService, got {type(service).__name__}"
            )
        if isinstance(tokens, Keyring):
            tokens = UnsubscribeTokens(tokens, clock=service.clock, channels=service.channels)
        if not isinstance(tokens, UnsubscribeTokens):
            raise ValidationError(
                "tokens", f"expected UnsubscribeTokens or a Keyring, got {type(tokens).__name__}"
            )
        self._service = service
        self._tokens = tokens
        self._reason = validate_reason_code(reason)

    @property
    def tokens(self) -> UnsubscribeTokens:
        """The tokens this endpoint verifies; issue the links with them
        (``UnsubscribeLinks(handler.tokens, base_url)``)."""
        return self._tokens

    def _verified(self, token: object) -> tuple[TokenClaims, Channel, Actor]:
        claims = self._tokens.verify(token)
        try:
            ch = self._service.channels.resolve(claims.channel.key, "token")
        except ValidationError as error:
            raise InvalidTokenError(
                f"is for channel {claims.channel.key!r}, which this service does not know: "
                f"{error}"
            ) from None
        return claims, ch, Actor.contact(claims.account, claims.contact_id)

    def unsubscribe(self, token: str) -> UnsubscribeResult:
        """Verify *token* and unsubscribe its contact from its channel, as the contact's own
        request (``Source.UNSUBSCRIBE_LINK``).  Idempotent: when the pair already is
        unsubscribed, nothing changes and no event is written.

        Use it for the mailto route, or your own endpoint; :meth:`handle` is the HTTP one.

        Raises:
            InvalidTokenError: (a subclass) the token is not acceptable; nothing changed.
            UnknownContactError: the account no longer has the contact.
            NotAuthorizedError: the service's policy refused.
            StorageError, ConflictError: the store failed; nothing changed, retry.
        """
        return self._unsubscribe(token)

    def _unsubscribe(self, token: object) -> UnsubscribeResult:
        claims, ch, actor = self._verified(token)
        result = self._service.unsubscribe(
            actor,
            [claims.contact_id],
            [ch],
            source=Source.UNSUBSCRIBE_LINK,
            reason=self._reason,
            details=True,  # one pair: the result names it
        )
        return UnsubscribeResult(claims, result)

    def handle(
        self,
        method: str,
        token: str | None,
        body: bytes | str | Mapping[str, object] | None = None,
        content_type: str | None = None,
    ) -> UnsubscribeResponse:
        """Answer one HTTP request to the endpoint.

        Args:
            method: the request method.  POST unsubscribes; GET and HEAD change nothing (mail
                scanners fetch links) and answer a confirmation page whose button POSTs.
            token: the ``token`` query parameter (None when absent).
            body: the POST body: raw bytes (or text), or the form your framework already parsed
                (a mapping of field to value or list of values).  It must hold
                ``List-Unsubscribe=One-Click``.
            content_type: the request's Content-Type for a raw body: form-urlencoded (also
                assumed when absent) or multipart/form-data.

        Returns:
            The answer to send; every failure is an answer too (see
            :class:`UnsubscribeOutcome` for the statuses), nothing is raised for a bad request.

        Raises:
            ValidationError: *method*, *body* or *content_type* has a type no framework gives.
        """
        if not isinstance(method, str):
            raise ValidationError("method", f"expected a string, got {type(method).__name__}")
        _check_body_type(body, content_type)
        verb = method.upper()
        if verb not in ("GET", "HEAD", "POST"):
            return self._answer(
                UnsubscribeOutcome.METHOD_NOT_ALLOWED,
                f"{method[:20]} is not supported here: use POST to unsubscribe",
            )
        if verb == "POST":
            problem = _body_problem(body, content_type)
            if problem is not None:
                outcome, why = problem
                return self._answer(
                    outcome,
                    f"A one-click unsubscribe must post {ONE_CLICK_POST}, but {why}.",
                )
        try:
            if verb == "POST":
                return self._done(self._unsubscribe(token))
            return self._confirm(token)
        except (
            InvalidTokenError,
            UnknownContactError,
            NotAuthorizedError,
            StorageError,
            ConflictError,
        ) as error:
            return attrs.evolve(self._failure(error), error=error)

    def _failure(self, error: ConsentError) -> UnsubscribeResponse:
        for kind, outcome, message in _FAILURES:
            if isinstance(error, kind):
                return self._answer(outcome, message)
        return self._answer(
            UnsubscribeOutcome.UNAVAILABLE,
            "We could not record your request just now. Please try again in a minute.",
        )

    def _confirm(self, token: object) -> UnsubscribeResponse:
        claims, ch, actor = self._verified(token)
        state = self._service.state(actor, claims.contact_id, ch)
        if state is SubscriptionState.UNSUBSCRIBED:
            answer = self._already_unsubscribed(ch.key)
        else:
            message = f"Unsubscribe from {ch.key} messages? Press the button to confirm."
            answer = self._answer(
                UnsubscribeOutcome.CONFIRM,
                message,
                _CONFIRMATION_PAGE.format(message=html.escape(message)),
            )
        return attrs.evolve(answer, claims=claims)

    def _done(self, done: UnsubscribeResult) -> UnsubscribeResponse:
        key = done.claims.channel.key
        if done.changed:
            answer = self._answer(
                UnsubscribeOutcome.UNSUBSCRIBED, f"You are unsubscribed from {key} messages."
            )
        else:
            answer = self._already_unsubscribed(key)
        return attrs.evolve(answer, claims=done.claims, result=done.result)

    def _already_unsubscribed(self, channel_key: str) -> UnsubscribeResponse:
        return self._answer(
            UnsubscribeOutcome.ALREADY_UNSUBSCRIBED,
            f"You are already unsubscribed from {channel_key} messages.",
        )

    def _answer(
        self, outcome: UnsubscribeOutcome, message: str, page: str | None = None
    ) -> UnsubscribeResponse:
        content_type = "text/plain; charset=utf-8" if page is None else "text/html; charset=utf-8"
        headers = [
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            # The URL holds the token: never hand it to another site.
            ("Referrer-Policy", "no-referrer"),
            ("X-Robots-Tag", "noindex"),
        ]
        if outcome is UnsubscribeOutcome.METHOD_NOT_ALLOWED:
            headers.append(("Allow", "GET, HEAD, POST"))
        if outcome is UnsubscribeOutcome.UNAVAILABLE:
            headers.append(("Retry-After", "60"))
        return UnsubscribeResponse(
            status=_STATUS[outcome],
            outcome=outcome,
            message=message,
            body=message if page is None else page,
            content_type=content_type,
            headers=tuple(headers),
        )
