"""The pieces every provider module shares: reading a payload field by field, times, ids,
addresses, signatures, account resolution, and batches read event by event.

Everything here is pure: no I/O, no clock (the caller passes ``now``), no global state.  Every
failure is a :class:`~consentkit.errors.PayloadError` that names the offending field, or a
:class:`~consentkit.errors.SignatureError`; nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Literal, TypeAlias

import attrs

from consentkit.channels import Channel
from consentkit.errors import ConsentError, PayloadError, SignatureError, ValidationError
from consentkit.inbound import InboundMessage, ProviderVerdict
from consentkit.model import MAX_ID_LENGTH, Source, ensure_aware, normalize_phone

AccountResolver: TypeAlias = str | Callable[[str], str]
"""The account an event belongs to: an account id, or a function from the provider's
receiving identity (the number or id that received the message, as each module documents) to
an account id.  A resolver may raise :class:`LookupError` for an identity it does not know; that
becomes a :class:`~consentkit.errors.PayloadError` naming the payload field."""

DEFAULT_TOLERANCE = timedelta(minutes=5)
"""How far a signed timestamp may be from ``now`` before the request counts as a replay."""

# A payload larger than this is no webhook of any provider here; refusing it early bounds the
# work (json.loads of a huge document) done before a signature or a field is even looked at.
MAX_BODY_BYTES = 1_000_000


@attrs.frozen
class Node:
    """A JSON object or form of a payload, with the path that names it in error messages.

    Attributes:
        value: the mapping.
        path: where it sits in the payload (``"entry[0].changes[1].value"``); empty at the top.
    """

    value: Mapping[str, object]
    path: str = ""

    def name(self, key: str) -> str:
        """The full field name of *key* in this node, for error messages."""
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> object:
        """The value of *key*, or None when it is absent."""
        return self.value.get(key)

    def raw(self, key: str) -> object:
        """The value of *key*.  Raises PayloadError when it is absent or null."""
        value = self.value.get(key)
        if value is None:
            raise PayloadError(self.name(key), "is missing from the payload")
        return value

    def text(self, key: str) -> str:
        """The string value of *key* (may be empty).  Raises PayloadError otherwise."""
        return _string(self.raw(key), self.name(key))

    def ident(self, key: str) -> str:
        """A non-empty string value of *key* (an id, an address)."""
        value = self.text(key)
        if not value.strip():
            raise PayloadError(self.name(key), "must not be empty")
        return value

    def maybe_text(self, key: str) -> str | None:
        """The string value of *key*, or None when it is absent or null."""
        value = self.value.get(key)
        return None if value is None else _string(value, self.name(key))

    def node(self, key: str) -> Node:
        """The object value of *key*.  Raises PayloadError when it is absent or not an object."""
        return as_node(self.raw(key), self.name(key))

    def maybe_node(self, key: str) -> Node | None:
        """The object value of *key*, or None when it is absent or null."""
        value = self.value.get(key)
        return None if value is None else as_node(value, self.name(key))

    def texts(self, key: str) -> tuple[tuple[str, str], ...]:
        """``(field name, value)`` of each non-empty string in the list value of *key*."""
        value = self.raw(key)
        field = self.name(key)
        if not isinstance(value, list):
            raise PayloadError(field, f"expected a list, got {type(value).__name__}")
        found: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            name = f"{field}[{index}]"
            if not isinstance(item, str) or not item.strip():
                raise PayloadError(name, "expected a non-empty string")
            found.append((name, item))
        return tuple(found)

    def nodes(self, key: str) -> tuple[Node, ...]:
        """The objects of the list value of *key*; an absent or null key is an empty list."""
        value = self.value.get(key)
        return () if value is None else as_nodes(value, self.name(key))

    def items(self, key: str) -> tuple[tuple[str, object], ...]:
        """``(path, item)`` of each item of the list value of *key*, unchecked (see
        :func:`items`); an absent or null key is an empty list."""
        value = self.value.get(key)
        return () if value is None else items(value, self.name(key))


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(field, f"expected a string, got {type(value).__name__}")
    return value


def as_node(value: object, field: str) -> Node:
    """*value* as a :class:`Node` named *field*.  Raises PayloadError if it is not an object
    with string keys."""
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise PayloadError(field, f"expected an object, got {type(value).__name__}")
    return Node(value, field)


def as_nodes(value: object, field: str) -> tuple[Node, ...]:
    """The items of the list *value*, each a :class:`Node` named ``field[i]``."""
    if not isinstance(value, list):
        raise PayloadError(field, f"expected a list, got {type(value).__name__}")
    return tuple(as_node(item, f"{field}[{index}]") for index, item in enumerate(value))


def items(value: object, field: str) -> tuple[tuple[str, object], ...]:
    """``(path, item)`` of each item of the list *value* named *field* (``field[i]``), the items
    not yet checked, so that a batch can read each one on its own.

    Raises:
        PayloadError: naming *field*: *value* is not a list.
    """
    if not isinstance(value, list):
        raise PayloadError(field, f"expected a list, got {type(value).__name__}")
    return tuple((f"{field}[{index}]", item) for index, item in enumerate(value))


def form(params: object) -> Node:
    """The top :class:`Node` of form fields or query parameters (a mapping of names to values,
    as a web framework gives them).  Raises PayloadError if *params* is not a mapping."""
    return Node(as_node(params, "form").value)


def load_json(body: bytes | str, field: str = "body") -> object:
    """The JSON document in *body* (the raw request body).

    Raises:
        PayloadError: naming *field*: not UTF-8, not JSON, too large or too deeply nested, or a
            number Python refuses (integers of more than 4,300 digits).
    """
    if not isinstance(body, bytes | str):
        raise PayloadError(field, f"expected the raw body as bytes, not {type(body).__name__}")
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(field, f"is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return json.loads(text)
    except UnicodeDecodeError:
        raise PayloadError(field, "is not UTF-8 text") from None
    except RecursionError:
        raise PayloadError(field, "is nested too deeply") from None
    except ValueError as error:  # json.JSONDecodeError and int-digit limits are ValueErrors
        raise PayloadError(field, f"is not valid JSON: {str(error)[:120]}") from None


def json_node(body: bytes | str, field: str = "body") -> Node:
    """The JSON object in *body*, as the top :class:`Node`."""
    node = as_node(load_json(body, field), field)
    return Node(node.value)


def instant(value: object, field: str) -> datetime:
    """A payload time as an aware datetime: Unix seconds (an int, a float or a string of digits,
    with or without a fraction) or ISO 8601 text (``2019-01-23T18:10:02.574Z``,
    ``2016-08-14 10:13:54``); a time without a zone is UTC.

    Raises:
        PayloadError: naming *field*: not a time, or outside 1970-01-01 .. 9000-01-01.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(field, f"expected a time, got {type(value).__name__}")
    if isinstance(value, str) and not _is_number(value):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PayloadError(field, f"{value[:40]!r} is not an ISO 8601 time") from None
        found = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
        if not math.isfinite(seconds) or not 0 <= seconds < 220_000_000_000:
            raise PayloadError(field, f"{str(value)[:40]} is not a Unix time in range")
        found = datetime.fromtimestamp(seconds, UTC)
    try:
        return ensure_aware(field, found)
    except ValidationError as error:
        raise PayloadError(field, str(error).partition(": ")[2]) from None


def _is_number(text: str) -> bool:
    whole, _, fraction = text.strip().partition(".")
    return 0 < len(whole) <= 15 and whole.isdigit() and (not fraction or fraction.isdigit())


def message_id(provider: str, *parts: str) -> str:
    """The idempotency key of one event: ``provider:part:part``, so two providers never collide.

    A key longer than consentkit allows, or with invisible characters, becomes
    ``provider:sha256:<digest>`` of it: still the same for every redelivery of the event.
    """
    key = ":".join((provider, *parts))
    if len(key) <= MAX_ID_LENGTH and key.isprintable() and key == key.strip():
        return key
    return f"{provider}:sha256:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def phone(value: str, field: str) -> str:
    """*value* as an E.164 number: providers that drop the ``+`` (``16505551234``) get it back.

    Raises:
        PayloadError: naming *field*: not a phone number with its country code.
    """
    candidate = value.strip()
    if candidate.isdigit():
        candidate = "+" + candidate
    try:
        return normalize_phone(candidate, field)
    except ValidationError as error:
        raise PayloadError(field, str(error).partition(": ")[2]) from None


def resolve_account(account: AccountResolver, key: str, field: str) -> str:
    """The account of an event received at *key* (the payload's *field*).

    Raises:
        PayloadError: the resolver raised :class:`LookupError` (no account receives at *key*).
        ValidationError: *account* is neither a string nor callable, or the resolver returned
            something that is not a string.
    """
    if isinstance(account, str):
        return account
    if not callable(account):
        raise ValidationError(
            "account", "expected an account id or a function from the receiving address to one"
        )
    try:
        found = account(key)
    except LookupError:
        raise PayloadError(field, f"no account receives at {key[:80]!r}") from None
    if not isinstance(found, str):
        raise ValidationError(
            "account", f"the account resolver returned {type(found).__name__}, not an account id"
        )
    return found


@attrs.frozen
class Event:
    """What a provider module extracted from one event, before it is an InboundMessage.

    Attributes:
        account: the account id.
        channel: the channel.
        sender: the contact's address (already E.164 for phone channels).
        sender_field: the payload field the sender came from, for errors.
        message_id: the idempotency key (see :func:`message_id`).
        received_at: when the provider received it or reported it.
        provider: the provider code (``"twilio"``).
        body: the text (empty for events without one).
        verdict: the provider's own classification, if it gave one.
        source: where the event came from (a reply, an unsubscribe link, a carrier report).
    """

    account: str
    channel: Channel
    sender: str
    sender_field: str
    message_id: str
    received_at: datetime
    provider: str
    body: str = ""
    verdict: ProviderVerdict | None = None
    source: Source = Source.INBOUND_KEYWORD

    def message(self) -> InboundMessage:
        """The InboundMessage.  Raises PayloadError naming the payload field that was wrong."""
        try:
            return InboundMessage(
                account=self.account,
                channel=self.channel,
                sender=self.sender,
                body=self.body,
                message_id=self.message_id,
                received_at=self.received_at,
                provider=self.provider,
                verdict=self.verdict,
                source=self.source,
            )
        except ValidationError as error:
            field = self.sender_field if error.field == "sender" else error.field
            raise PayloadError(field, str(error).partition(": ")[2]) from None


# ------------------------------------------------------------------------------------ batches


@attrs.frozen
class RejectedEvent:
    """One event of a batch that consentkit could not read, left out of :class:`ParsedBatch`.

    Attributes:
        path: where the event sits in the payload (``"body[3]"``,
            ``"entry[0].changes[1].value.messages[0]"``).
        error: why it was left out, a :class:`~consentkit.errors.PayloadError` whose ``field``
            names the exact field (a missing id, or an address consentkit cannot represent, such
            as the quoted local part of ``"john doe"@example.com``).
    """

    path: str
    error: ConsentError


@attrs.frozen
class ParsedBatch:
    """What a provider module's ``parse_batch`` read from one request of several events.

    Attributes:
        messages: the events that were read, in payload order, ready for
            :meth:`~consentkit.service.ConsentService.handle_inbound`.
        rejected: the events that could not be read, each with its place in the payload and
            its error.  An event whose address consentkit cannot represent can match no contact
            (no contact can be registered with such an address), so leaving it out changes
            nothing; log these and answer the provider with success, or it retries the whole
            batch forever.
    """

    messages: tuple[InboundMessage, ...]
    rejected: tuple[RejectedEvent, ...]


class BatchReader:
    """Collects a batch event by event: :meth:`event` scopes the reading of one event (or of a
    container of events), so that a PayloadError inside it rejects that event only."""

    def __init__(self) -> None:
        self._messages: list[InboundMessage] = []
        self._rejected: list[RejectedEvent] = []

    def event(self, path: str) -> _EventScope:
        """A ``with`` block reading the event at *path*: a PayloadError raised inside it is
        recorded as a :class:`RejectedEvent` and the batch goes on; other errors propagate."""
        return _EventScope(self._rejected, path)

    def add(self, message: InboundMessage) -> None:
        """Add a message read from the batch."""
        self._messages.append(message)

    def result(self) -> ParsedBatch:
        """The batch read so far."""
        return ParsedBatch(tuple(self._messages), tuple(self._rejected))


class _EventScope:
    def __init__(self, rejected: list[RejectedEvent], path: str) -> None:
        self._rejected = rejected
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if isinstance(error, PayloadError):
            self._rejected.append(RejectedEvent(self._path, error))
            return True
        return False


def strict(batch: ParsedBatch) -> tuple[InboundMessage, ...]:
    """The messages of *batch* when every event was read (what a module's ``parse`` returns).

    Raises:
        PayloadError: naming the field of the first rejected event, and saying that
            ``parse_batch`` applies the batch's readable events.
    """
    if not batch.rejected:
        return batch.messages
    first = batch.rejected[0]
    error = first.error
    field = error.field if isinstance(error, ValidationError) else first.path
    reason = str(error).partition(": ")[2] if isinstance(error, ValidationError) else str(error)
    raise PayloadError(
        field,
        f"{reason} (parse refuses the whole batch for it; parse_batch applies the batch's "
        f"{len(batch.messages)} readable event(s) and reports the {len(batch.rejected)} "
        "unreadable one(s) as rejected)",
    )


# ---------------------------------------------------------------------------------- signatures


def find_header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header *name*, looked up case-insensitively; None when it is absent, empty
    or not text (or *headers* is not a mapping)."""
    if isinstance(headers, Mapping):
        wanted = name.lower()
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == wanted:
                return (value.strip() or None) if isinstance(value, str) else None
    return None


def header(headers: Mapping[str, str], name: str) -> str:
    """The value of header *name*, looked up case-insensitively.

    Raises:
        SignatureError: the header is missing or empty (or *headers* is not a mapping).
    """
    value = find_header(headers, name)
    if value is None:
        raise SignatureError(f"the {name} header is missing or empty: the request is not signed")
    return value


def secret_bytes(secret: str | bytes, what: str) -> bytes:
    """A configured secret as bytes.  Raises ValidationError if it is empty or not text."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise ValidationError(what, "expected the non-empty secret from the provider's console")
    return secret


def raw_body(body: bytes | str) -> bytes:
    """The request body exactly as received.  Raises SignatureError if it is not bytes or str
    (a parsed and re-serialised body would not match the signature anyway)."""
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if not isinstance(body, bytes):
        raise SignatureError("the raw request body (bytes) is needed to check its signature")
    return body


def hmac_digest(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    """HMAC of *message* under *key* with the hashlib *algorithm* (``"sha1"``, ``"sha256"``...)."""
    return hmac.new(key, message, algorithm).digest()


def decode_signature(text: str, encoding: Literal["hex", "base64"], what: str) -> bytes:
    """A signature as sent (hex or base64 text) as bytes.  Raises SignatureError if malformed."""
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise SignatureError(f"the {what} signature is not {encoding} text") from None


def require_equal(expected: bytes, given: bytes, what: str) -> None:
    """Compare two signatures in constant time.  Raises SignatureError when they differ."""
    if not hmac.compare_digest(expected, given):
        raise SignatureError(
            f"the {what} signature does not match: forged, altered, or signed with another key"
        )


def check_fresh(timestamp: str, now: datetime, tolerance: timedelta, what: str) -> None:
    """A signed Unix *timestamp* must be within *tolerance* of *now* (replay protection).

    Raises:
        SignatureError: the timestamp is not a Unix time, or too far from *now*.
        ValidationError: *now* is naive, or *tolerance* is not a positive timedelta.
    """
    ensure_aware("now", now)
    if not isinstance(tolerance, timedelta) or tolerance <= timedelta(0):
        raise ValidationError("tolerance", "expected a positive timedelta, e.g. 5 minutes")
    try:
        signed_at = instant(timestamp, "timestamp")
    except PayloadError:
        raise SignatureError(f"the {what} timestamp {timestamp[:40]!r} is no Unix time") from None
    if abs(now - signed_at) > tolerance:
        raise SignatureError(
            f"the {what} timestamp {signed_at.isoformat()} is more than {tolerance} from now: "
            "a replayed or delayed request"
        )


# ------------------------------------------------------------------------------ Amazon SNS


def sns_message(body: bytes | str) -> tuple[Node, datetime, str]:
    """The message an Amazon SNS HTTP(S) notification carries: its JSON ``Message`` as a
    :class:`Node`, the notification's ``Timestamp`` and its ``MessageId``.

    The SNS signature (an RSA signature whose certificate must be fetched) is not checked here:
    the host verifies it, e.g. with its AWS SDK, before calling a parse function.

    Raises:
        PayloadError: not an SNS envelope, a ``Type`` other than ``Notification`` (confirm a
            ``SubscriptionConfirmation`` by visiting its ``SubscribeURL`` instead), or a
            ``Message`` that is not a JSON object.
    """
    envelope = json_node(body)
    kind = envelope.text("Type")
    if kind != "Notification":
        raise PayloadError(
            "Type",
            f"{kind[:40]!r} is not a Notification: confirm a SubscriptionConfirmation by "
            "visiting its SubscribeURL, and send only notifications here",
        )
    message = json_node(envelope.text("Message"), "Message")
    return (
        Node(message.value, "Message"),
        instant(envelope.raw("Timestamp"), "Timestamp"),
        envelope.ident("MessageId"),
    )
