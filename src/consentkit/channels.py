"""Communication channels and channel groups.

Consent is recorded per channel and channels are independent: subscribing a contact to SMS does
not subscribe them to WhatsApp.  Channel *groups* only matter for inbound replies: one STOP on SMS
covers every channel of the SMS group (SMS, MMS and RCS share opt-outs at carriers since 2026).

A *topic channel* is a declared topic on a channel, ``Channel("sms/promotions")`` or
``SMS.with_topic("promotions")``: consent to it is a pair of its own, under the channel (see
:mod:`consentkit.topics` and docs/topics.md).  Its key is the channel's key and the topic's,
joined by ``/``, which no channel key contains, so stores keep it as they keep any channel.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar

import attrs

from consentkit.errors import ValidationError

if TYPE_CHECKING:
    from consentkit.topics import TopicRules

__all__ = [
    "BUILTIN_CHANNELS",
    "DEFAULT_CHANNEL_GROUPS",
    "EMAIL",
    "MMS",
    "PUSH",
    "RCS",
    "SMS",
    "VOICE",
    "WHATSAPP",
    "AddressKind",
    "Channel",
    "ChannelGroups",
    "ChannelRegistry",
    "UnknownChannelError",
    "channel",
]

# A channel key, or a topic channel's: channel key "/" topic key (the same slug).
_SUBJECT_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}(?:/[a-z][a-z0-9_-]{0,31})?")
TOPIC_SEPARATOR = "/"


class AddressKind(enum.Enum):
    """How a contact is reached on a channel, which decides how addresses are normalised."""

    PHONE = "phone"
    """An E.164 phone number (SMS, MMS, RCS, WhatsApp, voice)."""
    EMAIL = "email"
    """An email address."""
    HANDLE = "handle"
    """An opaque per-channel identifier (a push token, a Telegram chat id...)."""


def _validate_key(_: object, __: object, value: str) -> None:
    if not isinstance(value, str) or not _SUBJECT_RE.fullmatch(value):
        raise ValidationError(
            "channel",
            f"{value!r} is not a valid channel key: use 1-32 characters, lower-case letters, "
            "digits, '_' or '-', starting with a letter (e.g. 'telegram')",
        )


_BUILTIN_ADDRESS_KINDS: Mapping[str, AddressKind] = {
    "sms": AddressKind.PHONE,
    "mms": AddressKind.PHONE,
    "rcs": AddressKind.PHONE,
    "whatsapp": AddressKind.PHONE,
    "voice": AddressKind.PHONE,
    "email": AddressKind.EMAIL,
    "push": AddressKind.HANDLE,
}


def _default_address_kind(self: Channel) -> AddressKind:
    # Runs before the key's validator: a key that is not even a string gets refused by it.
    if not isinstance(self.key, str):
        return AddressKind.HANDLE
    return _BUILTIN_ADDRESS_KINDS.get(_base_key(self.key), AddressKind.HANDLE)


def _base_key(key: str) -> str:
    return key.partition(TOPIC_SEPARATOR)[0]


def _address_kind(value: object) -> AddressKind:
    if isinstance(value, AddressKind):
        return value
    # model imports this module; the built-ins below pass members, so this import only runs once
    # both modules are loaded.
    from consentkit.model import enum_value

    return enum_value(AddressKind, "channel.address_kind", value)


def _validate_address_kind(instance: Channel, _: object, value: AddressKind) -> None:
    builtin = _BUILTIN_ADDRESS_KINDS.get(_base_key(instance.key))
    if builtin is not None and value is not builtin:
        raise ValidationError(
            "channel",
            f"{instance.key!r} is a built-in channel addressed by {builtin.value}, not "
            f"{value.value}: omit address_kind, or pick another key for a custom channel",
        )


@attrs.frozen(order=True, cache_hash=True)
class Channel:
    """A communication channel, identified by its key.

    Attributes:
        key: a lower-case slug such as ``"sms"`` or ``"telegram"``.
        address_kind: how contacts are addressed on it: a built-in key (``"sms"``, ``"email"``...)
            always gets the built-in's kind (giving another raises ValidationError), so
            ``Channel("sms")`` equals :data:`SMS` and is phone-addressed; custom channels
            default to :attr:`AddressKind.HANDLE`.
    """

    key: str = attrs.field(validator=_validate_key)
    address_kind: AddressKind = attrs.field(
        default=attrs.Factory(_default_address_kind, takes_self=True),
        converter=_address_kind,
        validator=_validate_address_kind,
        eq=False,
        order=False,
        repr=False,
    )
    # A topic channel's channel, built once (None for a channel: its base is itself).
    _base: Channel | None = attrs.field(init=False, default=None, eq=False, order=False, repr=False)
    _topic: str | None = attrs.field(init=False, default=None, eq=False, order=False, repr=False)

    def __attrs_post_init__(self) -> None:
        base_key, separator, topic = self.key.partition(TOPIC_SEPARATOR)
        if separator:
            object.__setattr__(self, "_base", Channel(base_key, self.address_kind))
            object.__setattr__(self, "_topic", topic)

    def __str__(self) -> str:
        return self.key

    @property
    def topic(self) -> str | None:
        """The topic of a topic channel (``"promotions"`` for ``sms/promotions``), else None."""
        return self._topic

    @property
    def base(self) -> Channel:
        """The channel itself, or a topic channel's channel (``sms`` for ``sms/promotions``)."""
        return self if self._base is None else self._base

    def with_topic(self, topic: str) -> Channel:
        """The topic channel of *topic* on this channel: ``SMS.with_topic("promotions")`` is
        ``Channel("sms/promotions")`` (whether the topic is declared is the service's check).

        Raises:
            ValidationError: this is a topic channel already, or *topic* is not a topic key.
        """
        from consentkit.topics import validate_topic_key

        if self.topic is not None:
            raise ValidationError("topic", f"{self.key!r} is a topic channel already")
        return Channel(f"{self.key}{TOPIC_SEPARATOR}{validate_topic_key(topic)}", self.address_kind)


SMS = Channel("sms", AddressKind.PHONE)
MMS = Channel("mms", AddressKind.PHONE)
RCS = Channel("rcs", AddressKind.PHONE)
WHATSAPP = Channel("whatsapp", AddressKind.PHONE)
VOICE = Channel("voice", AddressKind.PHONE)
EMAIL = Channel("email", AddressKind.EMAIL)
PUSH = Channel("push", AddressKind.HANDLE)

BUILTIN_CHANNELS: Mapping[str, Channel] = {
    c.key: c for c in (SMS, MMS, RCS, WHATSAPP, EMAIL, VOICE, PUSH)
}


def channel(key: str | Channel) -> Channel:
    """Return the channel for *key*: a built-in one, or a custom channel addressed by handle.

    Raises:
        ValidationError: the key is not a valid channel slug.
    """
    if isinstance(key, Channel):
        return key
    if not isinstance(key, str):
        raise ValidationError("channel", f"expected a channel key string, got {type(key).__name__}")
    folded = key.lower()  # keys are matched case-insensitively here, and only here
    found = BUILTIN_CHANNELS.get(folded)
    if found is not None:
        return found
    if not _SUBJECT_RE.fullmatch(folded):
        _validate_key(None, None, key)  # raises, naming the key as given
    return Channel(folded)


def _custom_channels(value: object) -> tuple[Channel, ...]:
    if isinstance(value, str | bytes | Channel) or not isinstance(value, Iterable):
        raise ValidationError(
            "channels",
            f"expected an iterable of custom channels or keys, got {type(value).__name__}",
        )
    found: dict[str, Channel] = {}
    for item in value:
        ch = channel(item)
        if ch.topic is not None:
            raise ValidationError(
                "channels",
                f"{ch.key!r} is a topic channel: register the channel {ch.base.key!r}, and "
                "declare the topic with topics=TopicRules([...])",
            )
        builtin = BUILTIN_CHANNELS.get(ch.key)
        if builtin is not None and builtin.address_kind is not ch.address_kind:
            raise ValidationError(
                "channels", f"{ch.key!r} is a built-in channel; it needs no registration"
            )
        if builtin is None:
            found[ch.key] = ch
    return tuple(sorted(found.values()))


@attrs.frozen
class ChannelRegistry:
    """The channels a service knows: the built-ins plus the custom channels the host registers.

    Any other key is refused, so a typo (``"smss"``) is an error, never a phantom channel.

    Attributes:
        custom: the host's own channels (``Channel("telegram")``, or just ``"telegram"``).
    """

    custom: tuple[Channel, ...] = attrs.field(default=(), converter=_custom_channels)
    _known: Mapping[str, Channel] = attrs.field(init=False, repr=False, eq=False)
    # The topic channels resolved so far, by (channel key, topic key): built once each.
    _topic_channels: dict[tuple[str, str], Channel] = attrs.field(
        init=False, repr=False, eq=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        known = dict(BUILTIN_CHANNELS)
        known.update((c.key, c) for c in self.custom)
        object.__setattr__(self, "_known", known)

    @property
    def known(self) -> Mapping[str, Channel]:
        """Every known channel, by key."""
        return self._known

    def resolve(self, value: object, field: str = "channel") -> Channel:
        """The known channel *value* names (a :class:`Channel` or a key, in any case).

        Raises:
            ValidationError: naming *field*: not a channel, not a known one (with the known
                keys and a "did you mean" for a near miss), or a topic channel (see
                :meth:`resolve_subject` where one is allowed).
        """
        if isinstance(value, Channel):
            # A channel is its key (equality is by key): a Channel("signal") built by hand, or
            # read back from a store, means the registered "signal" with its address kind.
            found = self._known.get(value.key)
            if found is not None:
                return found
            key = value.key
        elif isinstance(value, str):
            key = value.lower()
            found = self._known.get(key)
            if found is not None:
                return found
        else:
            raise ValidationError(
                field, f"expected a channel or a channel key, got {type(value).__name__}"
            )
        if TOPIC_SEPARATOR in key:
            raise ValidationError(
                field,
                f"{key!r} is a topic channel; give the channel ({_base_key(key)!r}) here",
            )
        close = difflib.get_close_matches(key, list(self._known), n=1, cutoff=0.6)
        raise UnknownChannelError(
            field,
            key,
            close[0] if close else None,
            tuple(sorted(self._known)),
            given=value if isinstance(value, str) else key,
        )

    def _seen(self, value: object, topics: TopicRules, topic: object) -> Channel | None:
        """A topic channel named before by its channel's key and the topic as given (and
        declared in *topics*), else None."""
        if not isinstance(topic, str) or not isinstance(value, Channel | str):
            return None
        seen = self._topic_channels.get((value if isinstance(value, str) else value.key, topic))
        return seen if seen is not None and topic in topics.by_key else None

    def resolve_subject(
        self, value: object, topics: TopicRules, field: str = "channel", topic: object = None
    ) -> Channel:
        """A known channel, or a declared topic on one: *value* names a channel or a topic
        channel (``"sms/promotions"``), and *topic*, if given, a topic of the channel *value*
        names.

        Raises:
            ValidationError: as :meth:`resolve`, or *topic* given with a topic channel.
            UnknownTopicError: the topic is not declared in *topics*.
        """
        seen = self._seen(value, topics, topic)
        if seen is not None:
            return seen
        if topic is None:  # the common case, a plain channel, found as resolve() finds it
            plain = (
                self._known.get(value.key)
                if isinstance(value, Channel)
                else self._known.get(value)
                if isinstance(value, str)
                else None
            )
            if plain is not None:
                return plain
        if isinstance(value, Channel):
            key = value.key
        elif isinstance(value, str):
            key = value.lower()
        else:
            raise ValidationError(
                field, f"expected a channel or a channel key, got {type(value).__name__}"
            )
        base_key, separator, topic_key = key.partition(TOPIC_SEPARATOR)
        base = self.resolve(base_key if separator else value, field)
        if topic is not None:
            if separator:
                raise ValidationError("topic", f"{key!r} names a topic already; drop topic=")
            if not isinstance(topic, str):
                raise ValidationError(
                    "topic", f"expected a topic key string, got {type(topic).__name__}"
                )
            topic_key, separator = topic, TOPIC_SEPARATOR
        if not separator:
            return base
        found = self._topic_channels.get((base.key, topic_key))
        if found is None:
            found = base.with_topic(topics.get(topic_key).key)
            self._topic_channels[(base.key, topic_key)] = found
        elif topic_key not in topics.by_key:  # another service's rules
            topics.get(topic_key)  # raises
        return found


class UnknownChannelError(ValidationError):
    """A channel key that is neither built in nor registered.

    Attributes:
        key: the key given (folded to lower case).
        suggestion: the known key it is closest to, if any.
        known: every known key, sorted.
    """

    code: ClassVar[str] = "unknown_channel"

    def __init__(
        self,
        field: str,
        key: str,
        suggestion: str | None,
        known: tuple[str, ...],
        *,
        given: str | None = None,
    ) -> None:
        self.key = key
        self.suggestion = suggestion
        self.known = known
        hint = f"; did you mean {suggestion!r}?" if suggestion else "."
        shown = key if given is None else given
        super().__init__(
            field,
            f"{shown!r} is not a known channel{hint} Known channels: {', '.join(known)}. Register "
            "a custom channel explicitly, e.g. ConsentService(store, channels=['telegram'])",
        )


def _collection(value: object, what: str) -> Iterable[object]:
    if isinstance(value, str | bytes | Channel) or not isinstance(value, Iterable):
        raise ValidationError(
            "channel_groups",
            f"expected {what} (e.g. [(SMS, MMS, RCS)]), got {type(value).__name__}",
        )
    return value


def _freeze_groups(groups: Iterable[Iterable[Channel | str]]) -> tuple[frozenset[Channel], ...]:
    frozen: list[frozenset[Channel]] = []
    seen: set[Channel] = set()
    for group in _collection(groups, "a collection of channel groups"):
        members = frozenset(
            channel(c)  # type: ignore[arg-type]
            for c in _collection(group, "each group as a collection of channels")
        )
        overlap = members & seen
        if overlap:
            names = ", ".join(sorted(c.key for c in overlap))
            raise ValidationError(
                "channel_groups", f"channel(s) {names} appear in more than one group"
            )
        seen |= members
        if members:
            frozen.append(members)
    return tuple(frozen)


@attrs.frozen
class ChannelGroups:
    """Which channels share one opt-out when a contact replies STOP.

    A channel that belongs to no group forms a group of its own.

    Attributes:
        groups: disjoint sets of channels.
    """

    groups: tuple[frozenset[Channel], ...] = attrs.field(converter=_freeze_groups)

    def group_of(self, ch: Channel | str) -> frozenset[Channel]:
        """Return every channel that shares opt-outs with *ch* (always including *ch*; a key is
        looked up with :func:`channel`)."""
        ch = channel(ch)
        for group in self.groups:
            if ch in group:
                return group
        return frozenset({ch})


DEFAULT_CHANNEL_GROUPS = ChannelGroups([(SMS, MMS, RCS)])
"""SMS, MMS and RCS together; every other channel alone."""
