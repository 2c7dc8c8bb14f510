"""Inbound replies: the message, what to do with it, and what to send back.

Pure domain: no I/O.  :meth:`consentkit.service.ConsentService.handle_inbound` uses these to turn a
contact's STOP / START / HELP reply into consent changes.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import attrs

from consentkit.channels import EMAIL, WHATSAPP, AddressKind, Channel, channel
from consentkit.channels import SMS as SMS_CHANNEL
from consentkit.errors import ValidationError
from consentkit.keywords import (
    WHATSAPP_KEYWORDS,
    Classification,
    KeywordMatch,
    KeywordMatcher,
    KeywordSet,
)
from consentkit.model import (
    Source,
    _text,
    ensure_aware,
    enum_value,
    normalize_address,
    validate_id,
    validate_reason_code,
    validate_text,
)
from consentkit.scopes import OptOutScope, ScopeSchedule, scope_setting
from consentkit.topics import validate_topic_key
from consentkit.trends import validate_timezone

__all__ = [
    "FCC_OPT_OUT_BUSINESS_DAYS",
    "BusinessCalendar",
    "InboundMessage",
    "InboundOutcome",
    "InboundResult",
    "InboundSettings",
    "KeywordProgramme",
    "OptOutScope",
    "PossibleOptOutAction",
    "ProviderVerdict",
    "ReplyTemplates",
    "WeekdayCalendar",
]

FCC_OPT_OUT_BUSINESS_DAYS = 10
"""FCC (47 CFR 64.1200(a)(10)) and CASL: honour a revocation within 10 business days."""
EMAIL_OPT_OUT_HOURS = 48
"""Gmail/Yahoo bulk-sender rules: process email unsubscribes within two days."""
MAX_BUSINESS_DAYS = 1000
"""The most business days :meth:`WeekdayCalendar.add_business_days` steps (about four years)."""


def _message_id(value: object) -> str:
    return validate_id("message_id", value)


def _account(value: object) -> str:
    return validate_id("account", value)


def _channel(value: object) -> Channel:
    return channel(value)  # type: ignore[arg-type]


def _body(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            "body", f"expected the message text as str, got {type(value).__name__}"
        )
    return value


def _received_at(value: object) -> datetime:
    return ensure_aware("received_at", value)


class ProviderVerdict(enum.Enum):
    """What the messaging provider already decided a message or event is.

    Providers classify some traffic themselves: Twilio's Advanced Opt-Out (``OptOutType``),
    Telnyx's ``autoresponse_type``, WhatsApp's ``user_preferences``, an email provider's
    unsubscribe and complaint events, a send failure that says the recipient opted out.  Such a
    verdict is honoured as the contact's own word and recorded; consentkit's matcher classifies
    everything else.
    """

    OPT_OUT = "opt_out"
    """The contact opted out (a STOP the provider recognised, an unsubscribe, a complaint)."""
    OPT_IN = "opt_in"
    """The contact took back their opt-out (START, a WhatsApp "resume", an email resubscribe)."""
    HELP = "help"
    """The contact asked for help."""
    COMPLAINT = "complaint"
    """The contact reported a message as spam (an email provider's or carrier's complaint
    feed): the system's opt-out, recorded with its own origin
    (:attr:`~consentkit.model.OptOutOrigin.COMPLAINT`), which no keyword or provider opt-in
    undoes (only an admin with the contact's request can) and after which no topic class survives
    the channel's unsubscribe."""


_VERDICT_CLASSIFICATION = {
    ProviderVerdict.COMPLAINT: Classification.OPT_OUT,
    ProviderVerdict.OPT_OUT: Classification.OPT_OUT,
    ProviderVerdict.OPT_IN: Classification.OPT_IN,
    ProviderVerdict.HELP: Classification.HELP,
}

INBOUND_SOURCES = frozenset({Source.INBOUND_KEYWORD, Source.UNSUBSCRIBE_LINK, Source.CARRIER})
"""The sources an inbound message may carry: a reply, an email unsubscribe (link or header, as
an email provider reports it), or a carrier's or provider's report (a complaint, a send failure
that says the recipient opted out)."""


def _optional_topic(value: object) -> str | None:
    return None if value is None else validate_topic_key(value)


def _confirm_keywords(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("confirm_keywords", f"expected a set of words, got {value!r}")
    words = set()
    for word in value:
        if not isinstance(word, str) or not confirm_word(word):
            raise ValidationError("confirm_keywords", f"expected words, got {word!r}")
        words.add(confirm_word(word))
    return frozenset(words)


def confirm_word(text: str) -> str:
    """A reply as a confirmation keyword is compared: upper case, punctuation and extra
    spaces dropped (``"yes!"`` is ``YES``)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text).split()).upper()


def _verdict(value: object) -> ProviderVerdict | None:
    return None if value is None else enum_value(ProviderVerdict, "verdict", value)


def _provider(value: object) -> str | None:
    return validate_reason_code(value, "provider")


def _source(value: object) -> Source:
    source = enum_value(Source, "source", value)
    if source not in INBOUND_SOURCES:
        allowed = ", ".join(sorted(s.value for s in INBOUND_SOURCES))
        raise ValidationError(
            "source", f"{source.value!r} is not a source of inbound messages; use one of: {allowed}"
        )
    return source


@attrs.frozen
class InboundMessage:
    """A reply a contact sent, as delivered by the messaging provider's webhook.

    Attributes:
        account: the account whose number or address received it.
        channel: the channel it arrived on.
        sender: the contact's address (normalised for the channel: E.164 for phone channels).
        body: the text, as received (any length; only its start is examined for keywords inside).
        message_id: the provider's message id: retried deliveries of one message share it.
        received_at: when the provider received it (aware).
        provider: the provider that delivered it, as a code (``"twilio"``), if known.
        verdict: what the provider already decided the message is, if it did (then
            ``provider`` is required): it is honoured instead of consentkit's matcher.
        source: where the message came from: a reply (``INBOUND_KEYWORD``, the default), an
            email provider's unsubscribe event (``UNSUBSCRIBE_LINK``) or a carrier's or
            provider's report (``CARRIER``: a complaint, an "opted out" send failure).
        topic: the topic of the message the contact answered, if the host knows it (the
            ``topic`` opt-out scope unsubscribes that topic).
        recipient: the number or address the reply was sent to (the ``sender`` opt-out scope
            looks it up in ``InboundSettings.senders``), normalised as the sender is.
    """

    account: str = attrs.field(converter=_account)
    channel: Channel = attrs.field(converter=_channel)
    sender: str
    body: str = attrs.field(converter=_body)
    message_id: str = attrs.field(converter=_message_id)
    received_at: datetime = attrs.field(converter=_received_at)
    provider: str | None = attrs.field(default=None, converter=_provider)
    verdict: ProviderVerdict | None = attrs.field(default=None, converter=_verdict)
    source: Source = attrs.field(default=Source.INBOUND_KEYWORD, converter=_source)
    topic: str | None = attrs.field(default=None, converter=_optional_topic)
    recipient: str | None = None

    def __attrs_post_init__(self) -> None:
        normalised = normalize_address(self.channel, self.sender, "sender")
        object.__setattr__(self, "sender", normalised)
        if self.channel.topic is not None:
            raise ValidationError(
                "channel",
                f"{self.channel.key!r} is a topic channel: messages arrive on a channel "
                f"({self.channel.base.key!r}); give the topic as topic=",
            )
        if self.recipient is not None:
            if not isinstance(self.recipient, str):
                raise ValidationError(
                    "recipient", f"expected a string, got {type(self.recipient).__name__}"
                )
            if not self.recipient.strip():
                raise ValidationError("recipient", "must not be empty")
            object.__setattr__(self, "recipient", recipient_key(self.recipient, (self.channel,)))
        if self.verdict is not None and self.provider is None:
            raise ValidationError(
                "provider", "a provider's verdict must name the provider that gave it"
            )

    def classify(self, matcher: KeywordMatcher) -> KeywordMatch:
        """What the message asks for: the provider's verdict where it gave one (with the
        keyword *matcher* found, when the two agree), otherwise what *matcher* finds."""
        match = matcher.classify(self.body)
        if self.verdict is None:
            return match
        classification = _VERDICT_CLASSIFICATION[self.verdict]
        if match.classification is classification:
            return match
        return KeywordMatch(classification, None)


class PossibleOptOutAction(enum.Enum):
    """What to do with a reply that contains an opt-out word inside a longer message.

    The FCC lets consumers revoke consent "by any reasonable means", so such a reply is never
    dropped silently: either it is honoured, or it is recorded for a person to review.
    """

    APPLY = "apply"
    REVIEW = "review"


class InboundOutcome(enum.Enum):
    """What handling an inbound message did."""

    OPTED_OUT = "opted_out"
    """The sender's contacts were unsubscribed (or were already)."""
    SUPPRESSED = "suppressed"
    """No contact has this address: it was put on the suppression list."""
    OPTED_IN = "opted_in"
    """The sender's contacts were resubscribed at their own request."""
    HELP = "help"
    """A HELP/INFO request: nothing changed, the help text is the reply."""
    NEEDS_REVIEW = "needs_review"
    """A possible opt-out recorded for review; nothing changed."""
    NO_CONTACT = "no_contact"
    """An opt-in from an address that matches no contact: nothing to change."""
    SUPERSEDED = "superseded"
    """An opt-out the contact's own later word (a START or opt-in received after it) had already
    answered for at least one pair, and that changed nothing: there is no reply, since an
    unsubscribe confirmation would be untrue."""
    NOTHING_TO_UNDO = "nothing_to_undo"
    """An opt-in keyword that undid no opt-out of the sender's own (the pair was never subscribed,
    was unsubscribed by an admin or the system or from another address, or a later opt-out stands):
    nothing was subscribed, and the reply is not a subscription confirmation."""
    CONFIRMED = "confirmed"
    """A confirmation keyword (``YES``) from a contact with pending sign-ups on the channel
    (double opt-in): they were completed."""
    NONE = "none"
    """An ordinary message: nothing to do."""


# One encoder for the module: json.dumps() with options builds a new encoder on every call.  The
# document's keys come in a fixed order, so the text is the same for equal results unsorted.
_RESULT_ENCODER = json.JSONEncoder(separators=(",", ":"))


@runtime_checkable
class BusinessCalendar(Protocol):
    """Counts business days, for the opt-out deadline."""

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The instant *days* business days after *start*."""
        ...


def _holidays(value: object) -> frozenset[date]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(
            "holidays", f"expected a collection of dates, got {type(value).__name__}"
        )
    days = list(value)
    for day in days:
        # A datetime is a date too, but never equal to one: it would silently match no day.
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValidationError("holidays", f"expected datetime.date values, got {day!r}")
    return frozenset(days)


def _calendar_timezone(value: object) -> str:
    return str(validate_timezone(value).key)  # type: ignore[arg-type]


@attrs.frozen
class WeekdayCalendar:
    """Monday to Friday, minus the given holidays, in one time zone.

    Attributes:
        holidays: dates that are not business days.
        timezone: the IANA name of the zone whose calendar days count.
    """

    holidays: frozenset[date] = attrs.field(default=frozenset(), converter=_holidays)
    timezone: str = attrs.field(default="UTC", converter=_calendar_timezone)

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """Step over weekends and holidays, keeping the local wall time of *start*.

        Raises:
            ValidationError: *start* is naive or out of range (see
                :func:`~consentkit.model.ensure_aware`), or *days* is not a whole number from 0 to
                :data:`MAX_BUSINESS_DAYS`.
        """
        if (
            isinstance(days, bool)
            or not isinstance(days, int)
            or not 0 <= days <= MAX_BUSINESS_DAYS
        ):
            raise ValidationError(
                "days", f"expected a whole number from 0 to {MAX_BUSINESS_DAYS}, got {days!r}"
            )
        local = ensure_aware("start", start).astimezone(ZoneInfo(self.timezone))
        # Count days, then move the wall clock once: adding n days to an aware datetime is
        # wall-clock arithmetic, the same as adding one day n times.
        holidays, first_day = self.holidays, local.date()
        weekday, skipped, remaining = local.weekday(), 0, days
        while remaining > 0:
            weekday = (weekday + 1) % 7
            skipped += 1
            if weekday < 5 and (
                not holidays or first_day + timedelta(days=skipped) not in holidays
            ):
                remaining -= 1
        return local + timedelta(days=skipped) if skipped else local


_DEFAULT_OPT_OUT_REPLY = (
    "You have been unsubscribed and will receive no more messages from us. Reply START to "
    "resubscribe."
)
_DEFAULT_OPT_IN_REPLY = (
    "You have been resubscribed and will receive messages again. Reply STOP to unsubscribe."
)
_DEFAULT_HELP_REPLY = (
    "Reply STOP to unsubscribe, START to resubscribe. Msg & data rates may apply."
)


def _template(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("templates", "reply templates must be non-empty text")
    _text("templates", multiline=True)(value)  # no control or invisible format characters
    return value


@attrs.frozen
class ReplyTemplates:
    """What to send back.  One confirmation per opt-out, with no marketing in it (FCC).

    Attributes:
        opt_out: the opt-out confirmation.
        opt_in: the confirmation of a START/UNSTOP.
        help: the answer to HELP/INFO.
    """

    opt_out: str = attrs.field(default=_DEFAULT_OPT_OUT_REPLY, converter=_template)
    opt_in: str = attrs.field(default=_DEFAULT_OPT_IN_REPLY, converter=_template)
    help: str = attrs.field(default=_DEFAULT_HELP_REPLY, converter=_template)


def _default_matcher() -> KeywordMatcher:
    return KeywordMatcher()


def _programme_keywords(value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(
            "programme.keywords", "expected a collection of keywords, e.g. {'JOIN'}"
        )
    normalized = KeywordSet(opt_in=value).opt_in
    if not normalized:
        raise ValidationError("programme.keywords", "name at least one keyword, e.g. {'JOIN'}")
    return normalized


def _programme_wording(value: object) -> str:
    return validate_text("programme.wording", value, multiline=True)


def _programme_version(value: object) -> str:
    return validate_text("programme.wording_version", value, max_length=64)


@attrs.frozen
class KeywordProgramme:
    """A keyword opt-in programme: texting one of its keywords subscribes a contact who was never
    subscribed, on the channel they wrote from, with the programme's wording as evidence.

    Without one, no inbound keyword creates consent: START and UNSTOP only undo the contact's own
    STOP (docs/policy.md).

    Attributes:
        keywords: the programme's keywords (``{"JOIN"}``; ``"YES"`` only if the call to action
            asks for it); they become opt-in keywords of the account's matcher.
        wording: the exact call to action the contact was shown ("Text JOIN to 12345 for weekly
            offers. Msg & data rates may apply. Reply STOP to cancel.").
        wording_version: the version of that wording.
    """

    keywords: frozenset[str] = attrs.field(converter=_programme_keywords)
    wording: str = attrs.field(converter=_programme_wording)
    wording_version: str = attrs.field(converter=_programme_version)


def _channel_keywords(value: object) -> tuple[tuple[Channel, KeywordSet], ...]:
    if not isinstance(value, Mapping):
        raise ValidationError(
            "channel_keywords", f"expected a mapping {{channel: KeywordSet}}, got {value!r}"
        )
    out: dict[Channel, KeywordSet] = {}
    for key, keywords in value.items():
        if not isinstance(keywords, KeywordSet):
            raise ValidationError(
                "channel_keywords", f"expected KeywordSet values, got {keywords!r}"
            )
        out[channel(key)] = keywords
    return tuple(sorted(out.items()))


def _default_channel_keywords() -> Mapping[Channel, KeywordSet]:
    return {WHATSAPP: WHATSAPP_KEYWORDS}


def _instance_of(kind: type, field: str, example: str) -> Any:
    def check(_: object, __: object, value: object) -> None:
        if not isinstance(value, kind):
            raise ValidationError(
                field, f"expected {example}, got {type(value).__name__}"
            )

    return check


def _possible_opt_out(value: object) -> PossibleOptOutAction:
    return enum_value(PossibleOptOutAction, "possible_opt_out", value)


def _senders(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError(
            "senders",
            f"expected a mapping {{recipient: topic key}}, got {type(value).__name__}",
        )
    out: dict[str, str] = {}
    for recipient, topic in value.items():
        if not isinstance(recipient, str) or not recipient.strip():
            raise ValidationError("senders", f"expected recipient strings, got {recipient!r}")
        out[recipient_key(recipient)] = validate_topic_key(topic, "senders")
    return out


def recipient_key(recipient: str, channels: tuple[Channel, ...] = ()) -> str:
    """A recipient (or a senders key, or the sender of a recorded send) normalised as an address
    of *channels* (by default a phone number in E.164, then an email address), or as given
    without whitespace when it is none of them (a short code such as ``"12 345"``, a messaging
    service's id).  Email addresses are compared whole in lower case: ``News@Acme.com`` is the
    recipient ``news@acme.com`` (a mismatch would narrow a STOP to the wrong topic)."""
    text = recipient.strip()
    for ch in channels or (SMS_CHANNEL, EMAIL):
        try:
            normalised = normalize_address(ch, text, "senders")
        except ValidationError:
            continue
        return normalised.lower() if ch.address_kind is AddressKind.EMAIL else normalised
    if "@" in text:
        try:
            return normalize_address(EMAIL, text, "senders").lower()
        except ValidationError:
            pass
    return "".join(text.split())


def _check_calendar(_: object, __: object, value: BusinessCalendar | None) -> None:
    if value is not None and not isinstance(value, BusinessCalendar):
        raise ValidationError(
            "calendar",
            f"expected None or a BusinessCalendar (e.g. WeekdayCalendar()), got "
            f"{type(value).__name__}",
        )


@attrs.frozen
class InboundSettings:
    """How one account handles inbound replies.

    Attributes:
        matcher: the keyword matcher (``KeywordMatcher.for_locales(["fr"])`` for French words).
        possible_opt_out: apply a possible opt-out, or record it for review (the default).
        confirm_keywords: the replies that confirm a contact's pending sign-ups on the channel
            (double opt-in, docs/double-opt-in.md): ``YES``, ``Y`` and ``CONFIRM`` by default,
            compared in upper case without punctuation.  From a contact with no pending
            sign-up such a reply is an ordinary message: it never creates consent.
        scope: which pairs a STOP covers: an :class:`~consentkit.scopes.OptOutScope`, or a
            :class:`~consentkit.scopes.ScopeSchedule` that changes it on a date.
        senders: for the ``sender`` scope, the topic of each number (brand, messaging service)
            replies go to, by the recipient as the messages give it (E.164 for numbers).
        templates: the replies.
        calendar: business days for the opt-out deadline; None (the default) counts Monday to
            Friday in the account's time zone.
        channel_keywords: extra keywords per channel, on top of the matcher's (by default
            WhatsApp's "Stop promotions" button, :data:`~consentkit.keywords.WHATSAPP_KEYWORDS`);
            a mapping is accepted.
        programme: the account's keyword opt-in programme, if it has one.
    """

    matcher: KeywordMatcher = attrs.field(
        factory=_default_matcher,
        validator=_instance_of(KeywordMatcher, "matcher", "a KeywordMatcher"),
    )
    possible_opt_out: PossibleOptOutAction = attrs.field(
        default=PossibleOptOutAction.REVIEW, converter=_possible_opt_out
    )
    confirm_keywords: frozenset[str] = attrs.field(
        default=frozenset({"YES", "Y", "CONFIRM"}), converter=_confirm_keywords
    )
    scope: OptOutScope | ScopeSchedule = attrs.field(
        default=OptOutScope.GROUP, converter=scope_setting
    )
    templates: ReplyTemplates = attrs.field(
        factory=ReplyTemplates,
        validator=_instance_of(ReplyTemplates, "templates", "ReplyTemplates"),
    )
    calendar: BusinessCalendar | None = attrs.field(default=None, validator=_check_calendar)
    channel_keywords: tuple[tuple[Channel, KeywordSet], ...] = attrs.field(
        factory=_default_channel_keywords, converter=_channel_keywords
    )
    programme: KeywordProgramme | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            _instance_of(KeywordProgramme, "programme", "a KeywordProgramme")
        ),
    )
    senders: Mapping[str, str] = attrs.field(factory=dict, converter=_senders)
    _matchers: dict[Channel | None, KeywordMatcher] = attrs.field(
        init=False, factory=dict, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        # Built now, so a programme keyword that is also an opt-out keyword fails here.
        if self.programme is not None:
            self._check_programme(self.programme)
        self._matchers[None] = self._build_matcher(None)
        for ch, _ in self.channel_keywords:
            self._matchers[ch] = self._build_matcher(ch)

    def scope_at(self, received_at: datetime) -> OptOutScope:
        """The opt-out scope in force for a message received at *received_at*."""
        scope = self.scope
        return scope.at(received_at) if isinstance(scope, ScopeSchedule) else scope

    def _check_programme(self, programme: KeywordProgramme) -> None:
        # A keyword that reads as an opt-out ("please stop") must never create consent.
        opt_outs = self.matcher.keywords
        for _, extra in self.channel_keywords:
            opt_outs = opt_outs.union(KeywordSet(opt_out=extra.opt_out))
        check = KeywordMatcher(KeywordSet(opt_out=opt_outs.opt_out))
        for keyword in sorted(programme.keywords):
            if check.classify(keyword).classification is not Classification.NONE:
                raise ValidationError(
                    "programme.keywords",
                    f"{keyword!r} contains an opt-out keyword: a reply that may be an opt-out "
                    "can never be an opt-in keyword",
                )

    def _build_matcher(self, ch: Channel | None) -> KeywordMatcher:
        keywords = self.matcher.keywords
        if self.programme is not None:
            keywords = keywords.union(KeywordSet(opt_in=self.programme.keywords))
        for candidate, extra in self.channel_keywords:
            if candidate == ch:
                keywords = keywords.union(extra)
        if keywords == self.matcher.keywords:
            return self.matcher
        return KeywordMatcher(keywords)

    def matcher_for(self, ch: Channel | str) -> KeywordMatcher:
        """The matcher for replies on *ch*: the account's, plus the programme's keywords and the
        channel's extra keywords."""
        found = self._matchers.get(channel(ch))
        return self._matchers[None] if found is None else found

    def honor_by(
        self, ch: Channel | str, received_at: datetime, timezone: str = "UTC"
    ) -> datetime:
        """The deadline for honouring an opt-out received at *received_at* on *ch*, counting
        business days in *timezone* when no calendar is set.

        Raises:
            ValidationError: an invalid channel, *received_at* naive or out of range (see
                :func:`~consentkit.model.ensure_aware`), or an unknown *timezone*.
        """
        ch = channel(ch)
        ensure_aware("received_at", received_at)
        if ch == EMAIL:
            return received_at + timedelta(hours=EMAIL_OPT_OUT_HOURS)
        calendar = self.calendar
        if calendar is None:
            calendar = WeekdayCalendar(timezone=timezone)
        return calendar.add_business_days(received_at, FCC_OPT_OUT_BUSINESS_DAYS)


@attrs.frozen
class InboundResult:
    """What handling one inbound message did and what to send back.

    Attributes:
        account: the account.
        message_id: the provider's message id.
        channel: the channel it arrived on.
        sender: the normalised sender address.
        classification: what the text asked for.
        keyword: the keyword that matched, if any.
        outcome: what was done.
        contact_ids: the contacts the sender address belongs to.
        channels: the channels the request covered.
        changed: ``(contact_id, channel)`` pairs whose state changed.
        reply: the text to send back, or None to send nothing.
        honor_by: for opt-outs, the legal deadline for honouring it (it is honoured at once).
        received_at: when the message was received.
        batch_id: the batch id of the events written, if any.
        review_item: the id of the review item a possible opt-out was queued as, if any.
        provider: the provider that delivered the message, if the message named one.
        verdict: the provider's own classification, when it gave one (it was honoured, and
            the provider sends its own answer: ``reply`` is None).
        scope: for an opt-out, a possible opt-out or an opt-in, the opt-out scope that chose
            ``channels`` (docs/topics.md), after its fallback: ``GROUP`` where the ``topic`` or
            ``sender`` scope found no declared topic, and for a complaint.  None for other
            replies, and in results stored before consentkit recorded it.
        replayed: True when this message id had been handled before and this is the stored
            result: nothing was written this time.  A webhook that answers in its response
            (TwiML) must still answer with ``reply``: a provider retries because the first
            response was lost, so the retry's answer is the only one that arrives.  A host that
            sends replies itself through the provider's API sends none for a replayed result.
            Not part of equality.
    """

    account: str
    message_id: str
    channel: Channel
    sender: str
    classification: Classification
    keyword: str | None
    outcome: InboundOutcome
    contact_ids: tuple[str, ...]
    channels: tuple[Channel, ...]
    changed: tuple[tuple[str, Channel], ...]
    reply: str | None
    honor_by: datetime | None
    received_at: datetime
    batch_id: str | None = None
    review_item: str | None = None
    provider: str | None = None
    verdict: ProviderVerdict | None = None
    scope: OptOutScope | None = None
    replayed: bool = attrs.field(default=False, eq=False)

    def to_json(self) -> str:
        """A JSON document of this result (stored for idempotent redelivery; without
        ``replayed``, which describes a delivery, not the result)."""
        return _RESULT_ENCODER.encode(self._document())

    def to_document(self) -> dict[str, Any]:
        """A JSON-compatible dict of this result, including ``replayed``: the document
        :func:`consentkit.documents.to_document` gives for it (see docs/json.md)."""
        return {**self._document(), "replayed": self.replayed}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> InboundResult:
        """Rebuild a result from :meth:`to_document` (``replayed`` is False when absent).

        Raises:
            ValidationError: *document* is not such a document (a key is missing or a value is
                not what the document holds).
        """
        if not isinstance(document, Mapping):
            raise ValidationError(
                "document", f"expected an inbound result object, got {type(document).__name__}"
            )
        fields = dict(document)
        replayed = fields.pop("replayed", False)
        if not isinstance(replayed, bool):
            raise ValidationError("replayed", f"expected true or false, got {replayed!r}")
        try:
            return cls.from_json(json.dumps(fields), replayed=replayed)
        except ValidationError:
            raise
        except KeyError as e:
            raise ValidationError("document", f"the key {e.args[0]!r} is missing") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ValidationError("document", f"is not a valid inbound result: {e}") from None

    def _document(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "message_id": self.message_id,
            "channel": self.channel.key,
            "sender": self.sender,
            "classification": self.classification.value,
            "keyword": self.keyword,
            "outcome": self.outcome.value,
            "contact_ids": list(self.contact_ids),
            "channels": [c.key for c in self.channels],
            "changed": [[cid, ch.key] for cid, ch in self.changed],
            "reply": self.reply,
            "honor_by": None if self.honor_by is None else self.honor_by.isoformat(),
            "received_at": self.received_at.isoformat(),
            "batch_id": self.batch_id,
            "review_item": self.review_item,
            "provider": self.provider,
            "verdict": None if self.verdict is None else self.verdict.value,
            "scope": None if self.scope is None else self.scope.value,
        }

    @classmethod
    def from_json(cls, text: str, *, replayed: bool = False) -> InboundResult:
        """Rebuild a result stored by :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            account=data["account"],
            message_id=data["message_id"],
            channel=channel(data["channel"]),
            sender=data["sender"],
            classification=Classification(data["classification"]),
            keyword=data["keyword"],
            outcome=InboundOutcome(data["outcome"]),
            contact_ids=tuple(data["contact_ids"]),
            channels=tuple(channel(c) for c in data["channels"]),
            changed=tuple((cid, channel(ch)) for cid, ch in data["changed"]),
            reply=data["reply"],
            honor_by=None if data["honor_by"] is None else datetime.fromisoformat(data["honor_by"]),
            received_at=datetime.fromisoformat(data["received_at"]),
            batch_id=data["batch_id"],
            review_item=data.get("review_item"),
            provider=data.get("provider"),
            verdict=None if data.get("verdict") is None else ProviderVerdict(data["verdict"]),
            scope=None if data.get("scope") is None else OptOutScope(data["scope"]),
            replayed=replayed,
        )
