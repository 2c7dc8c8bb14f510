"""The record of what was sent, whose topic a STOP without one answers (the ``topic`` scope)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from consentkit.errors import NotAuthorizedError, StorageError, ValidationError
from consentkit.inbound import InboundMessage, InboundSettings
from consentkit.keywords import Classification
from consentkit.model import ActorKind, address_key
from consentkit.policy import Actor
from consentkit.scopes import OptOutScope
from consentkit.sends import SentMessage, SentRecord
from consentkit.service._arguments import check_actor, iterate_arg
from consentkit.service._core import ServiceCore
from consentkit.storage.base import SentLog

# What a reply can ask of consent: the other classifications change nothing, so they need no topic.
_CHANGES_CONSENT = frozenset(
    {Classification.OPT_OUT, Classification.POSSIBLE_OPT_OUT, Classification.OPT_IN}
)
_RECORDERS = frozenset({ActorKind.ADMIN, ActorKind.SYSTEM})


class SendsMixin(ServiceCore):
    """Recording sent messages, and finding the one a reply answers."""

    def record_sent(self, actor: Actor, messages: SentMessage | Iterable[SentMessage]) -> int:
        """Record messages the host sent (one, or any number), so that under the ``topic``
        opt-out scope a STOP that names no topic unsubscribes the topic of the last message
        sent to its sender (docs/topics.md).  A message of no topic is worth recording too: a
        STOP answering it covers the channel group.  Returns how many were recorded.

        Only the last message per address, channel and sender is kept; a record sent earlier
        than the one kept changes nothing.  All or nothing.

        Raises:
            NotAuthorizedError: the actor is not an admin or the system (what was sent decides
                how far a STOP reaches, so members and contacts may not write it).
            UnknownTopicError: a topic that is not declared.
            ValidationError: a message is not a :class:`~consentkit.sends.SentMessage`, or names
                a channel the service does not know.
            StorageError: the store keeps no record of sends (it lacks
                :class:`~consentkit.storage.base.SentLog`).
        """
        check_actor(actor)
        if actor.kind not in _RECORDERS:
            raise NotAuthorizedError(
                f"{actor} may not record sent messages in account {actor.account!r}: only an "
                "admin or the system (the sending pipeline) may"
            )
        listed = (
            [messages]
            if isinstance(messages, SentMessage)
            else list(iterate_arg("messages", messages, "a SentMessage or an iterable of them"))
        )
        records = [self._sent_record(item) for item in listed]
        log = self.store if isinstance(self.store, SentLog) else None
        if log is None:
            raise StorageError(
                f"{type(self.store).__name__} keeps no record of sent messages (it does not "
                "implement consentkit.storage.base.SentLog); pass the topic on each "
                "InboundMessage instead"
            )
        log.put_sent(actor.account, records)
        return len(records)

    def _sent_record(self, item: object) -> SentRecord:
        if not isinstance(item, SentMessage):
            raise ValidationError("messages", f"expected a SentMessage, got {item!r}")
        subject = self.channels.resolve_subject(item.channel, self.topics, "channel", item.topic)
        base = subject.base
        return SentRecord(
            channel=base,
            address_key=address_key(base, item.to),
            sender=item.sender or "",
            topic=subject.topic,
            sent_at=item.sent_at,
        )


def answered_topic(
    core: ServiceCore,
    settings: InboundSettings,
    message: InboundMessage,
    classification: Classification,
) -> InboundMessage:
    """*message* with the topic of the message it answers, where the ``topic`` scope is in
    force, the reply asks something of consent and names no topic: the last message recorded
    as sent to the sender on the channel (from the number it went to, when the provider names
    it, or else from a sender not recorded), if that one was sent before the reply was received
    and had a declared topic.
    Otherwise, as given (a STOP without a topic covers the channel group)."""
    store = core.store
    if (
        message.topic is not None
        or classification not in _CHANGES_CONSENT
        or settings.scope_at(message.received_at) is not OptOutScope.TOPIC
        or not isinstance(store, SentLog)
    ):
        return message
    key = address_key(message.channel, message.sender)
    last = store.last_sent(message.account, message.channel, key, message.recipient)
    if last is None and message.recipient is not None:
        # Sent from a number nobody recorded: the last message of an unknown sender.
        last = store.last_sent(message.account, message.channel, key, "")
    if (
        last is None
        or last.topic is None
        or last.sent_at > message.received_at
        or last.topic not in core.topics.by_key
    ):
        return message
    return attrs.evolve(message, topic=last.topic)
