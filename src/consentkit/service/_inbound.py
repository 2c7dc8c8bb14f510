"""Inbound replies: STOP, START, HELP, possible opt-outs and keyword opt-in programmes."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import attrs

from consentkit.channels import (
    Channel,
)
from consentkit.confirmation import ConfirmationMethod
from consentkit.errors import (
    ConflictError,
    ValidationError,
)
from consentkit.inbound import (
    InboundMessage,
    InboundOutcome,
    InboundResult,
    PossibleOptOutAction,
    ProviderVerdict,
    confirm_word,
)
from consentkit.keywords import CONSENT_REQUESTS, Classification, KeywordMatch
from consentkit.model import (
    Actor,
    Evidence,
    OptOutOrigin,
    Source,
    Subscription,
    SubscriptionState,
    Suppression,
    Transition,
    address_key,
    normalize_address,
)
from consentkit.review import (
    MAX_REVIEW_TEXT,
    ReviewItem,
    ReviewKind,
    review_item_id,
)
from consentkit.scopes import OptOutScope
from consentkit.service._confirmation import confirm_in_tx
from consentkit.service._core import ServiceCore
from consentkit.service._engine import ChangeRequest, answered_later, undone_by_start
from consentkit.service._sends import answered_topic
from consentkit.storage.base import (
    InboundRecord,
    PendingTransaction,
    StoreTransaction,
)
from consentkit.topics import TopicDefault

_INBOUND_ATTEMPTS = 5
_PROMPT = timedelta(minutes=5)
_TICK = timedelta(microseconds=1)


class InboundMixin(ServiceCore):
    """Acting on the replies contacts send."""

    def handle_inbound(self, message: InboundMessage) -> InboundResult:
        """Act on a contact's reply: STOP unsubscribes, START resubscribes, HELP answers.

        The reply is matched with the account's keyword matcher.  An opt-out unsubscribes every
        contact with the sender's address, as the contact themselves (source inbound keyword), on
        every channel of the inbound channel's group; one from an address no contact has is put on
        the suppression list, so a later import cannot add it.  A possible opt-out ("please stop
        texting me") is applied or queued for review, per the account's settings.  START and
        UNSTOP undo the sender's own STOP from that address (see docs/policy.md); a keyword of the
        account's opt-in programme also subscribes never-subscribed pairs of its channel.

        Handling is idempotent per (account, channel, message id): a redelivered message returns
        the stored result (with ``replayed=True``) and writes nothing, also when deliveries race.

        Raises:
            ConflictError: a message with this channel and id was handled before with another
                sender or text: not a redelivery but a provider reusing ids; nothing changes.
        """
        if not isinstance(message, InboundMessage):
            raise ValidationError("message", f"expected an InboundMessage, got {message!r}")
        message = self._known_channel(message)
        settings = self.settings_for(message.account).inbound
        match = message.classify(settings.matcher_for(message.channel))
        digest = _digest(message)
        # The topic of the message answered, from the record of sends (after the digest: a
        # redelivery is the same message whatever was sent since).
        message = answered_topic(self, settings, message, match.classification)
        last_conflict: ConflictError | None = None
        for _ in range(_INBOUND_ATTEMPTS):
            try:
                with self.store.transaction(message.account) as tx:
                    # The sender's address is locked first (see _handle_inbound_in_tx): a
                    # delivery of this message racing this one then finds its record.
                    tx.lock_addresses([address_key(message.channel, message.sender)])
                    record = tx.get_inbound(message.channel, message.message_id)
                    if record is None:
                        result = self._handle_inbound_in_tx(tx, message, match)
                        tx.put_inbound(
                            InboundRecord(
                                message.channel,
                                message.message_id,
                                digest,
                                result.to_json(),
                                # Retention counts from when it was handled: a late
                                # delivery is kept from its delivery, for the retries.
                                received_at=self._now(),
                                sender_key=address_key(message.channel, message.sender),
                                from_contact=bool(result.contact_ids),
                            )
                        )
                        return result
            except ConflictError as conflict:
                # A concurrent delivery of the same message (or a racing change of the same
                # pairs) committed first; the next attempt finds its result or fresh state.
                last_conflict = conflict
                continue
            return redelivered(record, message, digest)
        assert last_conflict is not None
        raise last_conflict

    def _in_by_default(self, sub: Subscription | None) -> bool:
        """Whether *sub* is the pair of a declared topic the contact is in until they opt out."""
        if sub is None or sub.channel.topic is None:
            return False
        declared = self.topics.by_key.get(sub.channel.topic)
        return declared is not None and declared.default is TopicDefault.OPT_OUT

    def _known_channel(self, message: InboundMessage) -> InboundMessage:
        """The message on the service's own channel of that key, its sender normalised for it (a
        custom phone-addressed channel given by key gets an E.164 sender)."""
        ch = self.channels.resolve(message.channel.key, "message.channel")
        if ch.address_kind is message.channel.address_kind:
            return message if ch is message.channel else attrs.evolve(message, channel=ch)
        return attrs.evolve(
            message,
            channel=ch,
            sender=normalize_address(ch, message.sender, "sender"),
        )

    def _handle_inbound_in_tx(
        self, tx: StoreTransaction, message: InboundMessage, match: KeywordMatch
    ) -> InboundResult:
        account_settings = self.settings_for(message.account)
        settings = account_settings.inbound
        now = self._now()
        key = address_key(message.channel, message.sender)
        # Locked before anything is read by address: a registration of this address waits, or
        # is waited for, so a STOP and the contact it concerns always meet.
        tx.lock_addresses([key])
        received = self._occurred("received_at", message.received_at, now)
        # The contacts that have the address now; for an opt-out also those that had it when it
        # was received (an edit at that very instant included: ties go to the opt-out), so a
        # late STOP reaches the contact that sent it even after an address edit.  Nothing else
        # reaches a contact that has left the address.
        classification = match.classification
        opt_out = classification is Classification.OPT_OUT or (
            classification is Classification.POSSIBLE_OPT_OUT
            and settings.possible_opt_out is PossibleOptOutAction.APPLY
        )
        contact_ids = (
            opt_out_contacts(tx, key, received)
            if opt_out
            else set(tx.find_contacts_by_address([key]).get(key, []))
        )
        channels, origin, scope = self._scope(settings, message)
        delivery = Delivery(
            message=message,
            key=key,
            channels=channels,
            origin=origin,
            scope=scope,
            contact_ids=tuple(sorted(contact_ids)),
            received=received,
            now=now,
            batch_id=uuid.uuid4().hex,
        )
        if opt_out or classification is Classification.OPT_IN:
            record_last_word(tx, delivery, opt_out=opt_out)
        if opt_out or classification is Classification.POSSIBLE_OPT_OUT:
            honor_by = settings.honor_by(message.channel, received, account_settings.timezone)
            if not opt_out:
                item = self._queue_for_review(tx, delivery, honor_by)
                return attrs.evolve(
                    delivery.result(match, InboundOutcome.NEEDS_REVIEW, []),
                    honor_by=honor_by,
                    review_item=item,
                )
            reason = (
                "possible_opt_out"
                if classification is Classification.POSSIBLE_OPT_OUT
                else "stop_keyword"
                if message.verdict is None
                else "provider_complaint"
                if message.verdict is ProviderVerdict.COMPLAINT
                else "provider_opt_out"
            )
            changed, superseded = self._opt_out(tx, delivery, reason)
            outcome = (
                InboundOutcome.SUPPRESSED
                if not delivery.contact_ids
                else InboundOutcome.SUPERSEDED
                if superseded and not changed
                else InboundOutcome.OPTED_OUT
            )
            return attrs.evolve(
                delivery.result(match, outcome, changed),
                reply=None
                if outcome is InboundOutcome.SUPERSEDED or message.verdict is not None
                else settings.templates.opt_out,
                honor_by=honor_by,
            )
        if classification is Classification.OPT_IN:
            changed = self._opt_in(tx, delivery, match.keyword)
            outcome = (
                InboundOutcome.OPTED_IN
                if changed
                else InboundOutcome.NOTHING_TO_UNDO
                if delivery.contact_ids
                else InboundOutcome.NO_CONTACT
            )
            return attrs.evolve(
                delivery.result(match, outcome, changed),
                reply=settings.templates.opt_in if changed and message.verdict is None else None,
            )
        if classification is Classification.HELP:
            return attrs.evolve(
                delivery.result(match, InboundOutcome.HELP, []),
                reply=None if message.verdict is not None else settings.templates.help,
            )
        if (
            classification is Classification.NONE
            and delivery.contact_ids
            and isinstance(tx, PendingTransaction)
            and confirm_word(message.body[:64]) in settings.confirm_keywords
        ):
            confirmed = self._confirm_by_reply(tx, delivery)
            if confirmed:
                # No reply: the programme's own welcome message is the host's to send.
                return delivery.result(match, InboundOutcome.CONFIRMED, confirmed)
        return delivery.result(match, InboundOutcome.NONE, [])

    def _confirm_by_reply(
        self, tx: PendingTransaction, delivery: Delivery
    ) -> list[tuple[str, Channel]]:
        """Complete the sender's contacts' pending sign-ups on the message's channel (and its
        topics) with a confirmation reply; expired or voided ones are recorded so, not
        completed.  The pairs subscribed."""
        changed: list[tuple[str, Channel]] = []
        for request in tx.open_pending_of(delivery.contact_ids):
            if request.channel.base != delivery.message.channel:
                continue
            refusal, result = confirm_in_tx(
                self,
                tx,
                tx,
                request,
                delivery.now,
                ConfirmationMethod.REPLY,
                delivery.message.message_id,
            )
            if refusal is None and result is not None and result.changed_count:
                changed.append((request.contact_id, request.channel))
        return changed

    def _opt_out(
        self, tx: StoreTransaction, delivery: Delivery, reason: str
    ) -> tuple[list[tuple[str, Channel]], int]:
        """Apply an opt-out to every contact with the address; returns the pairs changed and the
        number of pairs the contact's own later word had already answered."""
        changed: list[tuple[str, Channel]] = []
        superseded = 0
        for cid in delivery.contact_ids:
            request = opt_out_request(delivery, cid, reason)
            result = self._apply_in_tx(tx, request, [cid])
            changed.extend((p.contact_id, p.channel) for p in result.changed)
            superseded += (
                len(delivery.channels)
                - len(result.changed)
                - result.unchanged_count
                - len(result.skipped)
            )
        return changed, superseded

    def _opt_in(
        self, tx: StoreTransaction, delivery: Delivery, keyword: str | None
    ) -> list[tuple[str, Channel]]:
        """START (or a programme keyword): undo the contacts' own STOPs from this address, and
        for a programme keyword also opt in never-subscribed pairs of the channel."""
        changed: list[tuple[str, Channel]] = []
        received, key = delivery.received, delivery.key
        for cid in delivery.contact_ids:
            request = delivery.request(
                cid,
                target=SubscriptionState.SUBSCRIBED,
                reason="start_keyword" if delivery.message.verdict is None else "provider_opt_in",
                # START undoes only the contact's own opt-out from this address, and only when
                # nothing happened to the pair since the START was received.
                keep=lambda sub: undone_by_start(
                    sub, key, received, in_by_default=self._in_by_default(sub)
                ),
            )
            # A topic of a channel the contact never subscribed to is left as it is (consent to
            # the channel comes first), not an error that would lose the START.
            request = attrs.evolve(request, partial=True)
            result = self._apply_in_tx(tx, request, [cid])
            changed.extend((p.contact_id, p.channel) for p in result.changed)
        programme = self.settings_for(delivery.message.account).inbound.programme
        # Consent is created only by a keyword delivered promptly: a late one may come from the
        # number's previous holder (a number joins a contact without a recorded time).
        prompt = delivery.received >= delivery.now - _PROMPT
        if programme is not None and keyword in programme.keywords and prompt:
            evidence = Evidence(
                method="keyword",
                wording=programme.wording,
                wording_version=programme.wording_version,
                location=f"{delivery.message.channel.key}:{delivery.message.sender}",
                captured_at=received,
                reference=delivery.message.message_id,
            )
            for cid in delivery.contact_ids:
                request = attrs.evolve(
                    delivery.request(
                        cid,
                        target=SubscriptionState.SUBSCRIBED,
                        reason="keyword_opt_in",
                        keep=lambda sub: sub is None,
                    ),
                    channels=(delivery.message.channel,),
                    op=Transition.OPT_IN,
                    evidence=evidence,
                )
                result = self._apply_in_tx(tx, request, [cid])
                changed.extend((p.contact_id, p.channel) for p in result.changed)
        return changed

    def _queue_for_review(
        self, tx: StoreTransaction, delivery: Delivery, honor_by: datetime
    ) -> str:
        message = delivery.message
        item_id = review_item_id(message.channel, message.message_id)
        tx.put_review_item(
            ReviewItem(
                account=message.account,
                id=item_id,
                kind=ReviewKind.POSSIBLE_OPT_OUT,
                channel=message.channel,
                message_id=message.message_id,
                sender=message.sender,
                text=_storable(message.body[:MAX_REVIEW_TEXT]),
                contact_ids=delivery.contact_ids,
                received_at=delivery.received,
                honor_by=honor_by,
            )
        )
        return item_id


@attrs.frozen
class Delivery:
    """One inbound message as the service handles it.

    Attributes:
        message: the message (on the service's own channel).
        key: the sender's address key.
        channels: the channels an opt-out from it covers, its own first.
        contact_ids: the contacts with the sender's address.
        received: when it was received (never later than *now*).
        now: the clock reading under the write lock.
        batch_id: shared by every event it writes.
        origin: the origin its opt-out records on the pairs (None: the contact's, ``CONTACT``;
            ``REVOKE_ALL`` under that scope).
        scope: the opt-out scope that chose *channels* (after its fallback to the group).
    """

    message: InboundMessage
    key: str
    channels: tuple[Channel, ...]
    contact_ids: tuple[str, ...]
    received: datetime
    now: datetime
    batch_id: str
    origin: OptOutOrigin | None = None
    scope: OptOutScope | None = None

    def request(
        self,
        contact_id: str,
        *,
        target: SubscriptionState,
        reason: str,
        keep: Callable[[Subscription | None], bool],
    ) -> ChangeRequest:
        """A change of one contact's pairs on :attr:`channels`, as the contact's own act."""
        return ChangeRequest(
            actor=Actor.contact(self.message.account, contact_id),
            channels=self.channels,
            target=target,
            source=self.message.source,
            reason=reason,
            occurred_at=self.received,
            now=self.now,
            batch_id=self.batch_id,
            inbound_message_id=self.message.message_id,
            keep=keep,
            known_contacts=True,  # found by address in this transaction
        )

    def result(
        self, match: KeywordMatch, outcome: InboundOutcome, changed: Sequence[tuple[str, Channel]]
    ) -> InboundResult:
        """What handling the message did (no reply, deadline or review item: add them with
        :func:`attrs.evolve`)."""
        message = self.message
        return InboundResult(
            account=message.account,
            message_id=message.message_id,
            channel=message.channel,
            sender=message.sender,
            classification=match.classification,
            keyword=match.keyword,
            outcome=outcome,
            contact_ids=self.contact_ids,
            channels=self.channels,
            changed=tuple(changed),
            reply=None,
            honor_by=None,
            received_at=self.received,
            batch_id=self.batch_id if changed else None,
            provider=message.provider,
            verdict=message.verdict,
            # A queued possible opt-out, once applied, covers the channel group.
            scope=None
            if match.classification not in CONSENT_REQUESTS
            else OptOutScope.GROUP
            if outcome is InboundOutcome.NEEDS_REVIEW
            else self.scope,
        )


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    """*text* with what no store can keep (NUL, lone surrogates) shown as U+FFFD, so every
    possible opt-out can be queued for a person to read."""
    return _UNSTORABLE.sub("\ufffd", text)


def opt_out_contacts(tx: StoreTransaction, key: str, received: datetime) -> set[str]:
    """The contacts an opt-out sent from address *key* reaches: those that have it now, and
    those that had it when it was received (an edit at that very instant included: ties go to
    the opt-out)."""
    # The one method AddressOwners adds, looked up directly: a runtime protocol check costs
    # about 20 microseconds, a few percent of a whole STOP on SQLite.
    owners: Callable[[str, datetime], list[str]] | None = getattr(tx, "owners_of_address", None)
    if owners is not None:
        return set(owners(key, received - _TICK))
    found = set(tx.find_contacts_by_address([key]).get(key, []))
    found.update(tx.contacts_that_left(key, received - _TICK))
    return found


def record_last_word(tx: StoreTransaction, delivery: Delivery, *, opt_out: bool) -> None:
    """Record an address's STOP (or its withdrawal by START), whether or not a contact has it."""
    tx.put_suppressions(
        [
            Suppression(
                account=delivery.message.account,
                address_key=delivery.key,
                channel=ch,
                occurred_at=delivery.received,
                source=delivery.message.source,
                inbound_message_id=delivery.message.message_id,
                active=opt_out,
            )
            for ch in delivery.channels
        ]
    )


def opt_out_request(delivery: Delivery, contact_id: str, reason: str) -> ChangeRequest:
    """The change an opt-out from the delivery's address makes for one contact with it."""
    received = delivery.received
    return attrs.evolve(
        delivery.request(
            contact_id,
            target=SubscriptionState.UNSUBSCRIBED,
            reason=reason,
            # A STOP is honoured however late, after the pair's last change, unless the
            # contact's own later word already answered it.
            keep=lambda sub: not answered_later(sub, received),
        ),
        op=Transition.UNSUBSCRIBE,
        via=delivery.key,
        timing="last_change",
        # A complaint is recorded as the system's opt-out of its own origin, which no START
        # undoes and after which no topic class survives the channel's unsubscribe.
        origin=OptOutOrigin.COMPLAINT
        if delivery.message.verdict is ProviderVerdict.COMPLAINT
        else delivery.origin,
    )


def _digest(message: InboundMessage) -> str:
    """What identifies a message's content for redelivery checks: its text, and the provider's
    verdict and source, the topic answered and the recipient when there are any (a retry carries
    the same; a message without them keeps the digest it always had)."""
    text = message.body
    if message.verdict is not None or message.source is not Source.INBOUND_KEYWORD:
        verdict = "" if message.verdict is None else message.verdict.value
        text = f"{text}\x00{verdict}\x00{message.source.value}"
    if message.topic is not None or message.recipient is not None:
        text = f"{text}\x00topic={message.topic or ''}\x00to={message.recipient or ''}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def redelivered(record: InboundRecord, message: InboundMessage, digest: str) -> InboundResult:
    """The stored result of a redelivery, once it is sure to be the same message."""
    stored = InboundResult.from_json(record.result, replayed=True)
    differs = [
        what
        for what, same in (
            ("sender", stored.sender == message.sender),
            ("text", record.body_sha256 is None or record.body_sha256 == digest),
        )
        if not same
    ]
    if differs:
        raise ConflictError(
            f"message id {message.message_id!r} on {message.channel.key} was handled before "
            f"with another {' and '.join(differs)}: this is not a redelivery but a reused id "
            "(two providers, or one that numbers per channel). Nothing was changed; give each "
            "message a unique id, e.g. prefixed with its provider."
        )
    return stored
