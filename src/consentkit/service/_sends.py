"""The record of what was sent, whose topic a STOP without one answers (the ``topic`` scope)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from consentkit.errors import NotAuthorizedError, ValidationError
from consentkit.inbound import InboundMessage, InboundSettings
from consentkit.keywords import CONSENT_REQUESTS, Classification
from consentkit.model import ActorKind, address_key
from consentkit.policy import Actor
from consentkit.scopes import OptOutScope
from consentkit.sends import SentMessage, SentRecord
from consentkit.service._arguments import check_actor, iterate_arg
from consentkit.service._core import ServiceCore
from consentkit.storage.base import SentLog, missing_capability

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
        log = self.store
        if not isinstance(log, SentLog):
            raise missing_capability(log, SentLog, "keeps no record of sent messages")
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
    as sent to the sender on any channel of the reply's channel group (an MMS answered by SMS
    is the same thread), from the number it went to when the provider names it (or else from a
    sender not recorded).  Otherwise, as given: the STOP covers the channel group.  That is
    also the answer when nothing was recorded, when the last message had no declared topic,
    when it was sent at or after the reply was received (it cannot be the one answered), and
    when several messages were last sent at the same instant with different topics."""
    store = core.store
    if (
        message.topic is not None
        or classification not in CONSENT_REQUESTS
        or settings.scope_at(message.received_at) is not OptOutScope.TOPIC
        or not isinstance(store, SentLog)
    ):
        return message
    ch = message.channel
    records = store.sent_to(message.account, address_key(ch, message.sender), core._group(ch))
    if message.recipient is not None:
        # Sent from the number replied to; else from a sender nobody recorded.
        records = [r for r in records if r.sender == message.recipient] or [
            r for r in records if r.sender == ""
        ]
    if not records:
        return message
    latest = max(r.sent_at for r in records)
    topics = {r.topic for r in records if r.sent_at == latest}
    if latest >= message.received_at or len(topics) != 1:
        return message
    (topic,) = topics
    if topic is None or topic not in core.topics.by_key:
        return message
    return attrs.evolve(message, topic=topic)
