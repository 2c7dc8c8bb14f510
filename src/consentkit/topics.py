"""Topics inside channels: kinds of message a contact can leave without leaving the channel.

A host declares its topics once (:class:`Topic`: key, title, message class, default) and passes
them to the service with the per-channel survival rule (:class:`TopicRules`).  Consent to a topic
on a channel is a pair of its own, the *topic channel* ``Channel("sms/promotions")`` (see
:meth:`consentkit.channels.Channel.with_topic`), with the same three states, policy, events and
evidence as a channel pair.  The channel stays the master switch: :func:`topic_sendable` is the
truth table of ``can_send(contact, channel, topic=...)`` (docs/topics.md).

Pure domain code: no storage, no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import attrs

from consentkit.errors import ValidationError
from consentkit.model import OptOutOrigin, SubscriptionState

if TYPE_CHECKING:
    from consentkit.channels import Channel, ChannelRegistry
    from consentkit.model import Subscription

__all__ = [
    "MessageClass",
    "Topic",
    "TopicDefault",
    "TopicRules",
    "UnknownTopicError",
    "after_complaint",
    "ever_subscribed",
    "topic_sendable",
]

TOPIC_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""A topic key: the same slug as a channel key (1-32 characters, lower-case letters, digits,
``_`` or ``-``, starting with a letter)."""


class MessageClass(enum.Enum):
    """What kind of message a topic carries, which decides whether it may survive a channel
    unsubscribe (only where the host configures it, see :class:`TopicRules`)."""

    __hash__ = object.__hash__

    MARKETING = "marketing"
    """Promotional content: needs consent everywhere (sales, newsletters)."""
    INFORMATIONAL = "informational"
    """Content the contact asked for that is not a transaction (appointment reminders, alerts)."""
    TRANSACTIONAL = "transactional"
    """Completes a transaction the contact started (receipts, password resets, shipping)."""


class TopicDefault(enum.Enum):
    """Whether a contact must opt in to a topic, or is in until they opt out of it."""

    __hash__ = object.__hash__

    OPT_IN = "opt_in"
    """Never-subscribed topic pairs send nothing: the contact must opt in to the topic."""
    OPT_OUT = "opt_out"
    """Never-subscribed topic pairs follow the channel: in until the contact leaves the topic."""


class UnknownTopicError(ValidationError):
    """A topic key the service was not configured with (a typo never "succeeds").

    Attributes:
        key: the key given.
        known: every declared topic key, sorted.
        suggestion: the declared key it is closest to, if any.
    """

    code: ClassVar[str] = "unknown_topic"

    def __init__(
        self,
        key: str,
        known: tuple[str, ...],
        suggestion: str | None = None,
        *,
        how_to_declare: str = "ConsentService(store, topics=[Topic(...)])",
    ) -> None:
        self.key = key
        self.known = known
        self.suggestion = suggestion
        hint = f"; did you mean {suggestion!r}?" if suggestion else "."
        declared = ", ".join(known) if known else "none"
        super().__init__(
            "topic",
            f"{key!r} is not a declared topic{hint} Declared topics: {declared}. Declare it: "
            f"{how_to_declare}",
        )


def validate_topic_key(value: object, field: str = "topic") -> str:
    """Check a topic key's shape (not whether it is declared)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a topic key string, got {type(value).__name__}")
    if not TOPIC_KEY_RE.fullmatch(value):
        raise ValidationError(
            field,
            f"{value!r} is not a valid topic key: use 1-32 characters, lower-case letters, "
            "digits, '_' or '-', starting with a letter (e.g. 'promotions')",
        )
    return value


def _member(kind: type[enum.Enum], field: str, value: object) -> Any:
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    allowed = ", ".join(repr(m.value) for m in kind)
    raise ValidationError(field, f"expected one of {allowed}, got {value!r}")


def _message_class(value: object) -> MessageClass:
    found: MessageClass = _member(MessageClass, "topic.message_class", value)
    return found


def _default(value: object) -> TopicDefault:
    found: TopicDefault = _member(TopicDefault, "topic.default", value)
    return found


def _topic_key(value: object) -> str:
    return validate_topic_key(value, "topic.key")


def _title(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("topic.title", "must be a non-empty string")
    return value


@attrs.frozen
class Topic:
    """One kind of message a contact can leave without leaving the channel.

    Attributes:
        key: the topic's slug (``"promotions"``), as in ``Channel("sms/promotions")``.
        title: what the contact sees (``"Offers and sales"``).
        message_class: marketing, informational or transactional.
        default: :attr:`TopicDefault.OPT_IN` (the contact must opt in to the topic) or
            :attr:`TopicDefault.OPT_OUT` (in until they opt out).
    """

    key: str = attrs.field(converter=_topic_key)
    title: str = attrs.field(converter=_title)
    message_class: MessageClass = attrs.field(converter=_message_class)
    default: TopicDefault = attrs.field(default=TopicDefault.OPT_IN, converter=_default)


def _topics(value: object) -> tuple[Topic, ...]:
    if isinstance(value, str | bytes | Topic) or not isinstance(value, Iterable):
        raise ValidationError(
            "topics", f"expected an iterable of Topic objects, got {type(value).__name__}"
        )
    found: dict[str, Topic] = {}
    for item in value:
        if not isinstance(item, Topic):
            raise ValidationError("topics", f"expected Topic objects, got {type(item).__name__}")
        if item.key in found:
            raise ValidationError("topics", f"topic {item.key!r} is declared twice")
        found[item.key] = item
    return tuple(found.values())


def _surviving(value: object) -> Mapping[str, frozenset[MessageClass]]:
    # Keyed by channel key here; the service resolves the keys against its channels.
    from consentkit.channels import channel

    if not isinstance(value, Mapping):
        raise ValidationError(
            "surviving_classes",
            f"expected a mapping {{channel: message classes}}, got {type(value).__name__}",
        )
    out: dict[str, frozenset[MessageClass]] = {}
    for key, classes in value.items():
        ch = channel(key)
        if ch.topic is not None:
            raise ValidationError(
                "surviving_classes", f"{ch.key!r} names a topic; give the channel ({ch.base.key})"
            )
        given = (
            [classes]
            if isinstance(classes, str | MessageClass) or not isinstance(classes, Iterable)
            else classes
        )
        members = frozenset(_member(MessageClass, "surviving_classes", c) for c in given)
        if MessageClass.MARKETING in members:
            raise ValidationError(
                "surviving_classes",
                f"marketing messages never survive an unsubscribe (channel {ch.key!r})",
            )
        if members:
            out[ch.key] = members
    return out


def _exempt(value: object) -> frozenset[MessageClass]:
    if isinstance(value, str | MessageClass) or not isinstance(value, Iterable):
        raise ValidationError(
            "revoke_all_exempt",
            f"expected a collection of message classes, got {type(value).__name__}",
        )
    members = frozenset(_member(MessageClass, "revoke_all_exempt", c) for c in value)
    if MessageClass.MARKETING in members:
        raise ValidationError(
            "revoke_all_exempt", "marketing messages are never exempt from a revocation"
        )
    return members


@attrs.frozen
class TopicRules:
    """The topics a service knows and the classes that survive a channel unsubscribe.

    Attributes:
        topics: the declared topics (keys unique).
        surviving_classes: per channel, the message classes whose topics may still be sent after
            the channel pair is unsubscribed, e.g. ``{EMAIL: {MessageClass.TRANSACTIONAL}}``
            (email law lets a receipt go out after a marketing unsubscribe; SMS rules do not).
            Marketing never survives, and nothing survives an opt-out that came from a complaint.
        revoke_all_exempt: the classes exempt from the FCC's "revoke all" (typically
            informational): their topics keep going on a channel unsubscribed by a STOP under the
            ``revoke_all`` scope, while that is the pair's only opt-out (a later plain STOP, an
            admin's unsubscribe or a complaint ends it).
    """

    topics: tuple[Topic, ...] = attrs.field(default=(), converter=_topics)
    surviving_classes: Mapping[str, frozenset[MessageClass]] = attrs.field(
        factory=dict, converter=_surviving
    )
    revoke_all_exempt: frozenset[MessageClass] = attrs.field(
        default=frozenset(), converter=_exempt
    )
    _by_key: Mapping[str, Topic] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {t.key: t for t in self.topics})

    @property
    def by_key(self) -> Mapping[str, Topic]:
        """Every declared topic, by key."""
        return self._by_key

    def get(self, key: str) -> Topic:
        """The declared topic *key*.

        Raises:
            UnknownTopicError: it is not declared.
        """
        found = self._by_key.get(key)
        if found is None:
            import difflib

            close = difflib.get_close_matches(key, list(self._by_key), n=1, cutoff=0.6)
            raise UnknownTopicError(key, tuple(sorted(self._by_key)), close[0] if close else None)
        return found

    def survives(self, channel: Channel, topic: Topic) -> bool:
        """Whether *topic*'s class survives an unsubscribe of *channel* (configured per
        channel; before the exceptions of :meth:`survives_opt_out`)."""
        return topic.message_class in self.surviving_classes.get(channel.base.key, ())

    def may_survive(self, channel: Channel, topic: Topic) -> bool:
        """Whether *topic* can survive some unsubscribe of *channel* (configured, or exempt from
        "revoke all"): only then does the channel pair's record matter."""
        return self.survives(channel, topic) or topic.message_class in self.revoke_all_exempt

    def survives_opt_out(self, channel: Channel, topic: Topic, pair: Subscription | None) -> bool:
        """Whether *topic* survives the unsubscribe recorded on *pair* (the channel's pair):
        configured for the channel, or exempt from a "revoke all" that is the pair's only
        opt-out; never after a complaint."""
        if pair is None or not ever_subscribed(pair) or after_complaint(pair):
            return False
        return self.survives(channel, topic) or (
            topic.message_class in self.revoke_all_exempt
            and pair.opted_out_by == {OptOutOrigin.REVOKE_ALL}
        )


def ever_subscribed(pair: Subscription) -> bool:
    """Whether a recorded pair was subscribed at some point: a pair's first change leaves never
    subscribed and its states alternate after that, so an unsubscribed pair at version 1 is an
    opt-out recorded before any consent (a STOP, a suppression, an admin's unsubscribe of a
    contact who never subscribed), which is no consent to the channel (row 10)."""
    return not (pair.state is SubscriptionState.UNSUBSCRIBED and pair.version <= 1)


def after_complaint(pair: Subscription) -> bool:
    """Whether an unsubscribed pair's opt-out came from a spam complaint (recorded as the origin
    ``COMPLAINT``; a complaint recorded before that origin existed is the pair's last change,
    with the reason ``provider_complaint``)."""
    return OptOutOrigin.COMPLAINT in pair.opted_out_by or pair.reason == "provider_complaint"


class TopicPlan(NamedTuple):
    """What a topic read needs of its topic channel, resolved once (the service keeps these,
    checking *rules* and *channels* are still its own before using one)."""

    rules: TopicRules
    channels: ChannelRegistry  # the registry the topic channel was resolved in
    channel: Channel  # the topic channel
    base: Channel  # its channel
    topic: Topic  # the declared topic
    may_survive: bool  # rules.may_survive(channel, topic)


def topic_sendable(
    channel_state: SubscriptionState,
    topic_state: SubscriptionState,
    topic: Topic,
    survives: bool,
) -> bool:
    """The truth table of ``can_send(contact, channel, topic=...)`` (docs/topics.md).

    *channel_state* and *topic_state* are the states of the two layers' pairs, *survives*
    whether the topic's class survives the channel pair's unsubscribe (a complaint's opt-out
    never lets one survive: see :meth:`TopicRules.survives_opt_out`).
    """
    if channel_state is SubscriptionState.NEVER_SUBSCRIBED:  # row 10: no consent to the channel
        return False
    # Rows 5 to 9: the channel is the master switch, unless the class survives (never after a
    # complaint: a spam report stops everything on the channel).
    if channel_state is not SubscriptionState.SUBSCRIBED and not survives:
        return False
    if topic_state is SubscriptionState.NEVER_SUBSCRIBED:  # rows 2, 3, 7, 8: the default decides
        return topic.default is TopicDefault.OPT_OUT
    return topic_state is SubscriptionState.SUBSCRIBED  # rows 1, 4, 6, 9
