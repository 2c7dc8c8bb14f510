"""What one inbound opt-out reaches: the opt-out scopes and their schedule (docs/topics.md).

The scope decides which pairs a STOP unsubscribes, never whether a STOP is honoured.  An account
chooses one (``InboundSettings(scope=...)``), or a :class:`ScopeSchedule` that switches on a date
(the FCC's "revoke all" rule, 47 CFR 64.1200(a)(10), applies from 31 January 2027); the scope in
force is the one of the message's ``received_at``, so a late delivery of an old STOP is judged by
the rule of its time.

Pure domain code: no storage, no I/O.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from consentkit.errors import ValidationError

__all__ = ["OptOutScope", "ScopeSchedule"]


class OptOutScope(enum.Enum):
    """Which pairs one inbound STOP covers."""

    GROUP = "group"
    """Every channel of the inbound channel's group (SMS, MMS and RCS together by default): the
    default, and the fallback of the scopes below when they know no topic."""
    CHANNEL = "channel"
    """Only the channel the reply arrived on."""
    TOPIC = "topic"
    """The topic of the message answered (``InboundMessage(topic=...)``), on every channel of the
    group; the channel pairs are left alone.  Without a topic: as :attr:`GROUP`."""
    SENDER = "sender"
    """The topic of the number (brand, messaging service) the reply went to:
    ``InboundMessage(recipient=...)`` looked up in ``InboundSettings(senders={...})``, on every
    channel of the group.  A recipient mapped to no topic: as :attr:`GROUP`."""
    REVOKE_ALL = "revoke_all"
    """Every channel the service knows (the FCC's "revoke all"): each channel pair of the
    contact is unsubscribed; topics whose class survives a channel's unsubscribe (configured per
    channel) keep going, as after any unsubscribe."""


def _scope(value: object) -> OptOutScope:
    from consentkit.model import enum_value

    return enum_value(OptOutScope, "scope", value)


def _aware(value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValidationError(
            "scope.until", f"expected an aware datetime, got {value!r}"
        )
    return value


@attrs.frozen
class ScopeSchedule:
    """An opt-out scope that changes on a date.

    Attributes:
        until: the instant the scope changes (aware): messages received before it get
            *before*, the others *after*.
        before: the scope until then (``"group"``, today's default, say).
        after: the scope from then on (``"revoke_all"``, say).
    """

    until: datetime = attrs.field(converter=_aware)
    before: OptOutScope = attrs.field(converter=_scope)
    after: OptOutScope = attrs.field(converter=_scope)

    def at(self, received_at: datetime) -> OptOutScope:
        """The scope of a message received at *received_at* (aware).

        Raises:
            ValidationError: *received_at* is not an aware datetime.
        """
        if not isinstance(received_at, datetime) or received_at.utcoffset() is None:
            raise ValidationError(
                "received_at", f"expected an aware datetime, got {received_at!r}"
            )
        return self.before if received_at < self.until else self.after


def scope_setting(value: object) -> OptOutScope | ScopeSchedule:
    """An account's scope setting: a scope (or its value), or a :class:`ScopeSchedule`."""
    if isinstance(value, ScopeSchedule):
        return value
    return _scope(value)
