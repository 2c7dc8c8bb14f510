"""A record of what was sent, for the ``topic`` opt-out scope (docs/topics.md).

Under :attr:`~consentkit.scopes.OptOutScope.TOPIC` a STOP unsubscribes the topic of the message it
answers.  The host can name that topic on the inbound message (``InboundMessage(topic=...)``);
when it does not, the service looks it up here: the host records each message it sends with
:meth:`~consentkit.service.ConsentService.record_sent`, and a STOP answers the last message sent
to the sender's address on that channel (from the number it replied to, when the provider names
it).  Where nothing was recorded, or the last message recorded was sent after the STOP was
received (it cannot be the one answered), or it had no declared topic, the STOP covers the channel
group: the safe side.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from consentkit.channels import Channel, channel
from consentkit.errors import ValidationError
from consentkit.inbound import recipient_key
from consentkit.model import ensure_aware, normalize_address, validate_text
from consentkit.topics import validate_topic_key

__all__ = ["SentMessage", "SentRecord"]


def _channel(value: object) -> Channel:
    if isinstance(value, Channel):
        return value
    if isinstance(value, str):
        return channel(value)
    raise ValidationError("channel", f"expected a channel or a channel key, got {value!r}")


def _topic(value: object) -> str | None:
    return None if value is None else validate_topic_key(value)


def _sender(value: object) -> str | None:
    if value is None:
        return None
    text: str = validate_text("sender", value, max_length=256)
    return text


def _sent_at(value: object) -> datetime:
    return ensure_aware("sent_at", value)


@attrs.frozen
class SentMessage:
    """One message the host sent.

    Attributes:
        channel: the channel it went out on, or its topic channel (``"sms/promotions"``).
        to: the contact's address on the channel (normalised as contacts' addresses are: E.164
            for phone channels).
        sent_at: when it was sent (aware).
        topic: the declared topic it belongs to, if *channel* does not name one.  A message of
            no topic is worth recording too: a STOP that answers it covers the channel group.
        sender: the number, short code, messaging service or address it was sent from, as the
            provider names the recipient of replies (``InboundMessage.recipient``): a STOP sent
            to that number answers this message, not one sent from another number.
    """

    channel: Channel = attrs.field(converter=_channel)
    to: str
    sent_at: datetime = attrs.field(converter=_sent_at)
    topic: str | None = attrs.field(default=None, converter=_topic)
    sender: str | None = attrs.field(default=None, converter=_sender)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "to", normalize_address(self.channel.base, self.to, "to"))
        if self.topic is not None and self.channel.topic is not None:
            raise ValidationError(
                "topic", f"{self.channel.key!r} names a topic already; drop topic="
            )
        if self.sender is not None:
            object.__setattr__(self, "sender", recipient_key(self.sender, (self.channel.base,)))


@attrs.frozen
class SentRecord:
    """What a store keeps of the last message sent to one address, per channel and sender.

    Attributes:
        channel: the plain channel it went out on.
        address_key: the address's index key (:func:`~consentkit.model.address_key`).
        sender: the normalised sender (``InboundMessage.recipient``'s form), ``""`` if unknown.
        topic: the declared topic's key, or None for a message of no topic.
        sent_at: when it was sent.
    """

    channel: Channel
    address_key: str
    sender: str
    topic: str | None
    sent_at: datetime
