"""The consent data model: contacts, subscription states, subscriptions and the audit events.

Everything here is an immutable value object.  Constructors validate and normalise their input and
raise :class:`~consentkit.errors.ValidationError` naming the field, so a value that exists is valid.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs

from consentkit.channels import AddressKind, Channel, channel
from consentkit.errors import ValidationError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_INSTANT",
    "MIN_INSTANT",
    "Actor",
    "ActorKind",
    "ConsentEvent",
    "Contact",
    "Evidence",
    "Justification",
    "OptOutOrigin",
    "ResubscribeReason",
    "Source",
    "Subscription",
    "SubscriptionState",
    "Suppression",
    "Transition",
    "address_key",
    "ensure_aware",
    "enum_value",
    "normalize_address",
    "normalize_email",
    "normalize_phone",
    "transition_of",
    "validate_id",
    "validate_reason_code",
    "validate_text",
]

MAX_ID_LENGTH = 128
_MAX_NOTE_LENGTH = 2000
_MAX_TEXT_LENGTH = 10_000
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
_PHONE_DECORATION = str.maketrans("", "", " -.()\u00a0\t")
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
_CODE_RE = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")


# Unicode category Cf (format characters: bidi embeddings, overrides and isolates, zero-width
# space, word joiner, BOM, soft hyphen, interlinear annotation, tag characters...) of Unicode 14,
# plus U+13439-U+1343F from 15.0; tests/test_boundaries.py checks the list against the running
# Python's unicodedata.  They are invisible and can reorder what an audit trail shows (U+202E), so
# free text refuses them, except ZWNJ and ZWJ (U+200C, U+200D), which Persian and Indic spelling
# and emoji sequences need.
_FORMAT_CHARS = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_TEXT_CONTROL_RE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT_CHARS}]")
_LINE_CONTROL_RE = re.compile(
    f"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029{_FORMAT_CHARS}]"
)


def _control_char(value: str, allow_newlines: bool = False) -> str | None:
    """The first control, surrogate or format character of *value* (line breaks and tabs are
    allowed with *allow_newlines*), or None."""
    pattern = _TEXT_CONTROL_RE if allow_newlines else _LINE_CONTROL_RE
    found = pattern.search(value)
    return None if found is None else found.group()


def _has_control(value: str, allow_newlines: bool = False) -> bool:
    return _control_char(value, allow_newlines) is not None


def validate_id(field: str, value: object) -> str:
    """Check an identifier chosen by the host app (account, contact, actor, message id).

    Ids are non-empty strings of at most 128 characters without control characters or
    surrounding whitespace; they are compared exactly (case-sensitive).

    Raises:
        ValidationError: naming *field*.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string id, got {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(
            field, f"is {len(value)} characters long; ids are at most {MAX_ID_LENGTH} characters"
        )
    if value != value.strip():
        raise ValidationError(field, f"{value!r} has surrounding whitespace; strip it")
    # isprintable() runs in C and refuses control, format (zero-width, bidi override), surrogate,
    # private-use and unassigned characters, and every whitespace but the plain space.
    if not value.isprintable():
        raise ValidationError(
            field, f"{value!r} contains control or invisible characters; remove them"
        )
    return value


def validate_ids(field: str, values: list[Any]) -> list[str]:
    """Check a list of ids by the rules of :func:`validate_id`, with the work done in C for the
    usual list of valid ids; returns *values*.

    Joined by a space, valid ids make a printable string (``isprintable`` refuses every
    whitespace but the space, so no id in it can hold another) in which a double space, or one
    at either end, appears only where an id is empty or has a space at its end, or holds a
    double space of its own (valid, and checked one by one like any doubt); their lengths are
    bounded by ``min`` and ``max``.  Any doubt is settled id by id, raising the error the first
    invalid id gives.

    Raises:
        ValidationError: naming *field*.
    """
    try:
        joined = " ".join(values)
    except TypeError:
        joined = None
    if (
        joined is None
        or not values
        or min(map(len, values)) < 1
        or max(map(len, values)) > MAX_ID_LENGTH
        or not joined.isprintable()
        or "  " in joined
        or joined[0] == " "
        or joined[-1] == " "
    ):
        for value in values:
            validate_id(field, value)
    return values


MIN_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest instant consentkit accepts (inclusive)."""
MAX_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)
"""The first instant consentkit no longer accepts: instants are in ``[MIN_INSTANT, MAX_INSTANT)``,
so time-zone conversion, calendar stepping and stores' epoch integers never overflow."""


def ensure_aware(field: str, value: object) -> datetime:
    """Refuse naive datetimes (consent evidence needs an unambiguous instant) and instants outside
    ``[1970-01-01T00:00Z, 9000-01-01T00:00Z)`` (:data:`MIN_INSTANT`, :data:`MAX_INSTANT`).

    Raises:
        ValidationError: naming *field*: the value is not a datetime, has no time zone, or is out
            of range.
    """
    if not isinstance(value, datetime):
        raise ValidationError(field, f"expected a datetime, got {type(value).__name__}")
    try:
        offset = None if value.tzinfo is None else value.utcoffset()
    except (TypeError, ValueError) as error:  # a tzinfo whose utcoffset() is not a valid offset
        raise ValidationError(field, f"has an unusable time zone: {error}") from None
    if offset is None:
        raise ValidationError(
            field, "is a naive datetime; pass a time-zone-aware one, e.g. datetime.now(UTC)"
        )
    # Comparing aware datetimes subtracts offsets without building an out-of-range datetime.
    if not MIN_INSTANT <= value < MAX_INSTANT:
        raise ValidationError(
            field,
            f"{value.isoformat()} is out of range: instants must be from 1970-01-01T00:00Z "
            "up to (not including) 9000-01-01T00:00Z",
        )
    return value


_E = TypeVar("_E", bound=enum.Enum)


def enum_value(enum_cls: type[_E], field: str, value: object) -> _E:
    """*value* as a member of *enum_cls*: the member itself, or a string equal to a member's value
    or name, case-insensitively (``"member"``, ``"MEMBER"`` -> ``ActorKind.MEMBER``).

    Raises:
        ValidationError: naming *field*, listing the allowed values.
    """
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        folded = value.casefold()
        for member in enum_cls:
            if folded in (member.name.casefold(), str(member.value).casefold()):
                return member
    allowed = ", ".join(str(member.value) for member in enum_cls)
    shown = repr(value) if isinstance(value, str | int | float | None) else type(value).__name__
    raise ValidationError(
        field, f"{shown[:80]} is not a valid {enum_cls.__name__}; use one of: {allowed}"
    )


def _text(field: str, *, max_length: int = _MAX_TEXT_LENGTH, multiline: bool = False) -> Any:
    def convert(value: object) -> str:
        if not isinstance(value, str):
            raise ValidationError(field, f"expected a string, got {type(value).__name__}")
        stripped = value.strip()
        if not stripped:
            raise ValidationError(field, "must not be empty")
        if len(stripped) > max_length:
            raise ValidationError(field, f"is longer than {max_length} characters")
        bad = _control_char(stripped, allow_newlines=multiline)
        if bad is not None:
            raise ValidationError(
                field,
                f"contains control or invisible format characters (U+{ord(bad):04X}, e.g. a "
                "bidi override or zero-width space); remove them",
            )
        return stripped

    return convert


def _optional_text(field: str, *, max_length: int = _MAX_TEXT_LENGTH) -> Any:
    inner = _text(field, max_length=max_length)

    def convert(value: object) -> str | None:
        return None if value is None else str(inner(value))

    return convert


def _code(field: str) -> Any:
    def convert(value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _CODE_RE.fullmatch(value):
            raise ValidationError(
                field,
                f"{value!r} is not a valid code: use 1-64 lower-case letters, digits, "
                "'_', '.', ':' or '-' (e.g. 'hard_bounce')",
            )
        return value

    return convert


def normalize_phone(value: object, field: str = "phone") -> str:
    """Normalise a phone number to E.164 (``+14155550100``).

    Spaces, dashes, dots and parentheses are dropped and a leading ``00`` becomes ``+``.  No
    country is guessed: a number without its country code is refused.

    Raises:
        ValidationError: the value is not an E.164 number.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    compact = value.translate(_PHONE_DECORATION)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not _E164_RE.fullmatch(compact):
        raise ValidationError(
            field,
            f"{value!r} is not an E.164 phone number: give the country code and 7-15 digits, "
            "e.g. '+14155550100'",
        )
    return compact


def normalize_email(value: object, field: str = "email") -> str:
    """Normalise an email address: trimmed, domain lower-cased (the local part is kept as is).

    Raises:
        ValidationError: the value is not a plausible address.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    stripped = value.strip()
    if len(stripped) > 254 or not _EMAIL_RE.fullmatch(stripped) or _has_control(stripped):
        raise ValidationError(
            field, f"{value!r} is not an email address like 'name@example.com'"
        )
    local, _, domain = stripped.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalize_address(ch: Channel, value: object, field: str = "address") -> str:
    """Normalise *value* as an address on channel *ch* (phone, email or opaque handle)."""
    if ch.address_kind is AddressKind.PHONE:
        return normalize_phone(value, field)
    if ch.address_kind is AddressKind.EMAIL:
        return normalize_email(value, field)
    return str(_text(field, max_length=256)(value))


def address_key(ch: Channel, normalized_address: str) -> str:
    """The key under which stores index an address for look-ups of inbound replies.

    Phone channels share one key per number (an SMS STOP and a WhatsApp message come from the same
    number), email has one key per address, and handles are keyed per channel.
    """
    if ch.address_kind is AddressKind.PHONE:
        return f"phone:{normalized_address}"
    if ch.address_kind is AddressKind.EMAIL:
        return f"email:{normalized_address.lower()}"
    return f"handle:{ch.key}:{normalized_address}"


def _handles(value: Mapping[Any, str] | Iterable[tuple[Any, str]] | None) -> tuple[
    tuple[Channel, str], ...
]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (Mapping, Iterable)):
        raise ValidationError(
            "handles",
            f"expected a mapping {{channel: handle}} or (channel, handle) pairs, "
            f"got {type(value).__name__}",
        )
    items = value.items() if isinstance(value, Mapping) else value
    out: dict[Channel, str] = {}
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise ValidationError(
                "handles", f"expected (channel, handle) pairs, got {item!r}"
            )
        raw_channel, raw_handle = item
        ch = channel(raw_channel)
        if ch.address_kind is not AddressKind.HANDLE:
            raise ValidationError(
                "handles",
                f"channel {ch.key!r} is addressed by {ch.address_kind.value}; "
                f"set Contact.{ch.address_kind.value} instead",
            )
        out[ch] = normalize_address(ch, raw_handle, f"handles[{ch.key}]")
    return tuple(sorted(out.items()))


def _account_id(value: object) -> str:
    return validate_id("account", value)


def _contact_id(value: object) -> str:
    return validate_id("contact_id", value)


def _actor_id(value: object) -> str:
    return validate_id("actor.id", value)


def _actor_account(value: object) -> str:
    return validate_id("actor.account", value)


def _evidence_method(value: object) -> str:
    code: str | None = _code("evidence.method")(value)
    if code is None:
        raise ValidationError("evidence.method", "must not be empty (e.g. 'web_form')")
    return code


def _evidence_wording(value: object) -> str:
    text: str = _text("evidence.wording", multiline=True)(value)
    return text


def _evidence_wording_version(value: object) -> str:
    text: str = _text("evidence.wording_version", max_length=64)(value)
    return text


def _evidence_location(value: object) -> str | None:
    text: str | None = _optional_text("evidence.location", max_length=2048)(value)
    return text


def _evidence_captured_at(value: object) -> datetime | None:
    return None if value is None else ensure_aware("evidence.captured_at", value)


def _evidence_reference(value: object) -> str | None:
    text: str | None = _optional_text("evidence.reference", max_length=512)(value)
    return text


def _roles(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(
            "actor.roles",
            f"expected a collection of role names (e.g. {{'compliance'}}), got "
            f"{type(value).__name__}",
        )
    return frozenset(validate_id("actor.roles", role) for role in value)


def _actor_kind(value: object) -> ActorKind:
    return enum_value(ActorKind, "actor.kind", value)


def _optional_phone(value: object) -> str | None:
    return None if value is None else normalize_phone(value)


def _optional_email(value: object) -> str | None:
    return None if value is None else normalize_email(value)


@attrs.frozen
class Contact:
    """A contact of one account, with the addresses it is reached at.

    Attributes:
        account: the account (tenant) the contact belongs to.
        id: the host app's id for the contact, unique within the account.
        phone: E.164 phone number used by SMS, MMS, RCS, WhatsApp and voice.
        email: email address used by the email channel.
        handles: opaque addresses for handle-addressed channels (push tokens, chat ids), as
            ``(channel, handle)`` pairs sorted by channel; a mapping is accepted.
    """

    account: str = attrs.field(converter=_account_id)
    id: str = attrs.field(converter=_contact_id)
    phone: str | None = attrs.field(default=None, converter=_optional_phone)
    email: str | None = attrs.field(default=None, converter=_optional_email)
    handles: tuple[tuple[Channel, str], ...] = attrs.field(default=(), converter=_handles)

    def address_for(self, ch: Channel | str) -> str | None:
        """The contact's address on channel *ch*, or None when it has none."""
        ch = channel(ch)
        if ch.address_kind is AddressKind.PHONE:
            return self.phone
        if ch.address_kind is AddressKind.EMAIL:
            return self.email
        for handle_channel, handle in self.handles:
            if handle_channel == ch:
                return handle
        return None

    def address_keys(self) -> frozenset[str]:
        """Every address key of this contact (see :func:`address_key`)."""
        phone, email = self.phone, self.email
        if not self.handles:  # the common case, on every import: no set to build
            if email is None:
                return frozenset() if phone is None else frozenset((f"phone:{phone}",))
            if phone is None:
                return frozenset((f"email:{email.lower()}",))
            return frozenset((f"phone:{phone}", f"email:{email.lower()}"))
        keys: set[str] = set()
        if phone is not None:
            keys.add(f"phone:{phone}")
        if email is not None:
            keys.add(f"email:{email.lower()}")
        for ch, handle in self.handles:
            keys.add(address_key(ch, handle))
        return frozenset(keys)


class SubscriptionState(enum.Enum):
    """Consent state of one (contact, channel) pair."""

    # Members are singletons compared by identity; the identity hash runs in C, while Enum's
    # default hashes the name in Python, which shows up in bulk paths (millions of dict keys).
    __hash__ = object.__hash__

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    NEVER_SUBSCRIBED = "never_subscribed"
    """No record yet.  Not the same as unsubscribed: an import may opt such a contact in."""


class Transition(enum.Enum):
    """The kind of a state change."""

    # Members are singletons compared by identity; the identity hash runs in C, while Enum's
    # default hashes the name in Python, which shows up in bulk paths (millions of dict keys).
    __hash__ = object.__hash__

    OPT_IN = "opt_in"
    """never subscribed -> subscribed"""
    UNSUBSCRIBE = "unsubscribe"
    """subscribed or never subscribed -> unsubscribed"""
    RESUBSCRIBE = "resubscribe"
    """unsubscribed -> subscribed"""


def transition_of(previous: SubscriptionState, new: SubscriptionState) -> Transition | None:
    """The transition from *previous* to *new*, or None for a no-op or an impossible change."""
    if new is SubscriptionState.UNSUBSCRIBED and previous is not SubscriptionState.UNSUBSCRIBED:
        return Transition.UNSUBSCRIBE
    if new is SubscriptionState.SUBSCRIBED:
        if previous is SubscriptionState.NEVER_SUBSCRIBED:
            return Transition.OPT_IN
        if previous is SubscriptionState.UNSUBSCRIBED:
            return Transition.RESUBSCRIBE
    return None


class Source(enum.Enum):
    """Where a change came from (the page, the channel or the process)."""

    # Members are singletons compared by identity; the identity hash runs in C, while Enum's
    # default hashes the name in Python, which shows up in bulk paths (millions of dict keys).
    __hash__ = object.__hash__

    CONTACTS_PAGE = "contacts_page"
    INBOX = "inbox"
    API = "api"
    CLI = "cli"
    INBOUND_KEYWORD = "inbound_keyword"
    UNSUBSCRIBE_LINK = "unsubscribe_link"
    SIGNUP_FORM = "signup_form"
    IMPORT = "import"
    CARRIER = "carrier"
    SUPPRESSION = "suppression"
    SYSTEM = "system"


class ActorKind(enum.Enum):
    """Who acts: the default policy decides by kind (see :mod:`consentkit.policy`)."""

    # Members are singletons compared by identity; the identity hash runs in C, while Enum's
    # default hashes the name in Python, which shows up in bulk paths (millions of dict keys).
    __hash__ = object.__hash__

    ADMIN = "admin"
    MEMBER = "member"
    CONTACT = "contact"
    """The contact themselves (an inbound reply, an unsubscribe link, a preference button)."""
    SYSTEM = "system"
    """An automatic process (carrier deactivation, bounce handling, a sign-up form import)."""


@attrs.frozen
class Actor:
    """Somebody or something making a change, bound to exactly one account.

    Attributes:
        kind: admin, member, contact or system: an :class:`ActorKind`, or its value or name in
            any case (``"member"``, ``"MEMBER"``); anything else raises ValidationError.
        id: the user id, the contact id (for :attr:`ActorKind.CONTACT`) or the process name.
        account: the only account this actor may read or change.
        roles: the host app's own role names, for custom policies; the default policy ignores them.
    """

    kind: ActorKind = attrs.field(converter=_actor_kind)
    id: str = attrs.field(converter=_actor_id)
    account: str = attrs.field(converter=_actor_account)
    roles: frozenset[str] = attrs.field(default=frozenset(), converter=_roles)

    @classmethod
    def admin(cls, account: str, user_id: str) -> Actor:
        """An admin user of *account*."""
        return cls(ActorKind.ADMIN, user_id, account)

    @classmethod
    def member(cls, account: str, user_id: str) -> Actor:
        """A non-admin user of *account*."""
        return cls(ActorKind.MEMBER, user_id, account)

    @classmethod
    def contact(cls, account: str, contact_id: str) -> Actor:
        """The contact *contact_id* acting on their own consent."""
        return cls(ActorKind.CONTACT, contact_id, account)

    @classmethod
    def system(cls, account: str, process: str = "system") -> Actor:
        """An automatic process of *account*."""
        return cls(ActorKind.SYSTEM, process, account)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"


class ResubscribeReason(enum.Enum):
    """The only two reasons an admin may resubscribe a contact (seed document)."""

    MISTAKEN_UNSUBSCRIBE = "mistaken_unsubscribe"
    """The contact was unsubscribed by mistake (refused when they unsubscribed themselves)."""
    CONTACT_REQUEST = "contact_request"
    """The contact explicitly asked to be resubscribed."""


def _reason(value: object) -> ResubscribeReason:
    return enum_value(ResubscribeReason, "justification.reason", value)


def _note(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            "justification.note",
            "must say what happened and where the request came from (it cannot be empty)",
        )
    return str(_text("justification.note", max_length=_MAX_NOTE_LENGTH, multiline=True)(value))


@attrs.frozen
class Justification:
    """Why an admin resubscribes a contact: required for every admin resubscription.

    Attributes:
        reason: mistaken unsubscribe or contact request: a :class:`ResubscribeReason`, or its
            value or name in any case (``"contact_request"``, ``"CONTACT_REQUEST"``).
        note: what happened and where the request came from (non-empty, at most 2,000 chars,
            without control or invisible format characters).
    """

    reason: ResubscribeReason = attrs.field(converter=_reason)
    note: str = attrs.field(converter=_note)


@attrs.frozen
class Evidence:
    """Proof of an opt-in: who agreed, how, to which wording (GDPR Art. 7(1), CASL s.13, TCPA).

    Attributes:
        method: how consent was collected, as a code (``"web_form"``, ``"keyword"``, ``"paper"``).
        wording: the exact consent text shown to the contact.
        wording_version: the version of that text.
        location: where it was collected (a URL, a store, a form id), if known.
        captured_at: when the contact agreed, if different from the event time.
        reference: a pointer to the raw proof (submission id, recording id, IP address...).
    """

    method: str = attrs.field(converter=_evidence_method)
    wording: str = attrs.field(converter=_evidence_wording)
    wording_version: str = attrs.field(converter=_evidence_wording_version)
    location: str | None = attrs.field(default=None, converter=_evidence_location)
    captured_at: datetime | None = attrs.field(default=None, converter=_evidence_captured_at)
    reference: str | None = attrs.field(default=None, converter=_evidence_reference)


class OptOutOrigin(enum.Enum):
    """Who asked for a pair's opt-out: a fact recorded on the pair, which the policy reads.

    A pair can be unsubscribed for more than one reason at once (a contact's STOP, then an admin's
    unsubscribe after a complaint): :attr:`Subscription.opted_out_by` holds every origin asked
    since the pair last became unsubscribed.
    """

    __hash__ = object.__hash__

    CONTACT = "contact"
    """The contact's own request: a reply keyword, an unsubscribe link, a preference button."""
    SUPPRESSION = "suppression"
    """An opt-out sent from the address before it belonged to this contact (a suppression)."""
    ADMIN = "admin"
    """An admin of the account."""
    MEMBER = "member"
    """A member of the account, where a custom policy lets members unsubscribe."""
    SYSTEM = "system"
    """An automatic process: a bounce, a carrier deactivation."""
    REVOKE_ALL = "revoke_all"
    """The contact's own request, as ``CONTACT``, by an inbound opt-out under the ``revoke_all``
    scope (every channel): while it is the pair's only origin, topics of the classes exempt from
    "revoke all" keep going (``ConsentService(revoke_all_exempt=...)``, docs/topics.md)."""
    COMPLAINT = "complaint"
    """A spam complaint (a provider's complaint feed, ``ProviderVerdict.COMPLAINT``): the
    system's opt-out, which no keyword or provider opt-in undoes, and after which no topic class
    survives the channel's unsubscribe (docs/topics.md)."""


@attrs.frozen
class Subscription:
    """The current consent of one (contact, channel) pair and how it got there.

    Attributes:
        account: the account.
        contact_id: the contact.
        channel: the channel.
        state: subscribed or unsubscribed (pairs without a record are never subscribed).
        version: incremented by every change; used for optimistic concurrency (0 = no record).
        updated_at: when the last change occurred (its ``occurred_at``).
        changed_by: the kind of actor that made the last change.
        source: where the last change came from.
        reason: the reason code of the last change (a resubscribe reason, or the host's code for
            an unsubscribe such as ``"hard_bounce"``), if any.
        opted_out_by: who asked for the current opt-out (empty unless unsubscribed): the
            origin of the change that unsubscribed the pair, plus that of every later opt-out
            request that found it already unsubscribed.
        opted_out_via: the address key of the inbound message whose opt-out unsubscribed the
            pair (a STOP reply, or the suppression of one); only a START from that same address
            can undo it.
        last_opt_out_at: the latest time an opt-out of the pair was asked, also by a request
            that found it already unsubscribed; a START sent before it never applies.
    """

    account: str
    contact_id: str
    channel: Channel
    state: SubscriptionState
    version: int
    updated_at: datetime
    changed_by: ActorKind
    source: Source
    reason: str | None = None
    opted_out_by: frozenset[OptOutOrigin] = frozenset()
    opted_out_via: str | None = None
    last_opt_out_at: datetime | None = None


@attrs.frozen
class ConsentEvent:
    """One entry of the append-only audit trail.  The current state is the replay of these.

    Attributes:
        sequence: position in the store's append order (assigned by the store, increasing).
        account: the account.
        contact_id: the contact.
        channel: the channel.
        previous_state: the state before the change.
        new_state: the state after the change.
        actor: who made the change.
        source: where it came from.
        occurred_at: when it happened (may be earlier than ``recorded_at`` for imports).
        recorded_at: when consentkit recorded it.
        justification: for admin resubscriptions.
        evidence: for opt-ins.
        reason: a reason code (see :attr:`Subscription.reason`).
        inbound_message_id: the provider id of the inbound message that caused it.
        batch_id: the id shared by every event of one service call.
    """

    sequence: int
    account: str
    contact_id: str
    channel: Channel
    previous_state: SubscriptionState
    new_state: SubscriptionState
    actor: Actor
    source: Source
    occurred_at: datetime
    recorded_at: datetime
    justification: Justification | None = None
    evidence: Evidence | None = None
    reason: str | None = None
    inbound_message_id: str | None = None
    batch_id: str | None = None

    @property
    def transition(self) -> Transition | None:
        """The kind of change this event records."""
        return transition_of(self.previous_state, self.new_state)


@attrs.frozen
class Suppression:
    """The last word of an address on a channel: an opt-out (STOP) or its withdrawal (START).

    Every inbound opt-out records one, whether or not a contact has the address.  While it is
    active, any contact the address joins (a new contact, or an address edit) is unsubscribed on
    these channels, whatever the pair's state, so an import, a sign-up or an edit cannot message an
    address that said STOP.  A later START from the address makes it inactive.  Stores keep one per
    (address key, channel): the one that occurred last.

    Attributes:
        account: the account.
        address_key: the address (see :func:`address_key`).
        channel: the channel the opt-out covers.
        occurred_at: when the opt-out was received.
        source: where it came from.
        inbound_message_id: the provider id of the inbound message, if any.
        active: True for an opt-out, False once a later START from the address withdrew it.
    """

    account: str
    address_key: str
    channel: Channel
    occurred_at: datetime
    source: Source
    inbound_message_id: str | None = None
    active: bool = True


def validate_text(
    field: str, value: object, *, max_length: int = _MAX_TEXT_LENGTH, multiline: bool = False
) -> str:
    """Check free text (a note, a message): a non-empty string without control or invisible
    format characters (newlines only if *multiline*), at most *max_length* characters once
    stripped; returns it stripped.

    Raises:
        ValidationError: naming *field*.
    """
    text: str = _text(field, max_length=max_length, multiline=multiline)(value)
    return text


def validate_reason_code(value: object, field: str = "reason") -> str | None:
    """Check an optional reason code (``"hard_bounce"``, ``"complaint"``...)."""
    result: str | None = _code(field)(value)
    return result
