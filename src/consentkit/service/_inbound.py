"""Inbound replies: STOP, START, HELP, possible opt-outs and keyword opt-in programmes."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime

from consentkit.channels import (
    Channel,
)
from consentkit.errors import (
    ConflictError,
    ValidationError,
)
from consentkit.inbound import (
    InboundMessage,
    InboundOutcome,
    InboundResult,
    PossibleOptOutAction,
)
from consentkit.keywords import Classification
from consentkit.model import (
    Actor,
    Evidence,
    Source,
    SubscriptionState,
    Suppression,
    Transition,
    address_key,
)
from consentkit.review import (
    MAX_REVIEW_TEXT,
    ReviewItem,
    ReviewKind,
    review_item_id,
)
from consentkit.service._core import ServiceCore
from consentkit.service._engine import ChangeRequest, answered_later, undone_by_start
from consentkit.storage.base import (
    InboundRecord,
    StoreTransaction,
)

_INBOUND_ATTEMPTS = 5


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
        self.channels.resolve(message.channel, "message.channel")
        settings = self.settings_for(message.account).inbound
        match = settings.matcher_for(message.channel).classify(message.body)
        digest = hashlib.sha256(message.body.encode("utf-8", "surrogatepass")).hexdigest()
        last_conflict: ConflictError | None = None
        for _ in range(_INBOUND_ATTEMPTS):
            try:
                with self.store.transaction(message.account) as tx:
                    record = tx.get_inbound(message.channel, message.message_id)
                    if record is None:
                        result = self._handle_inbound_in_tx(
                            tx, message, match.classification, match.keyword
                        )
                        tx.put_inbound(
                            InboundRecord(
                                message.channel, message.message_id, digest, result.to_json()
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

    def _handle_inbound_in_tx(
        self,
        tx: StoreTransaction,
        message: InboundMessage,
        classification: Classification,
        keyword: str | None,
    ) -> InboundResult:
        account = message.account
        account_settings = self.settings_for(account)
        settings = account_settings.inbound
        now = self._now()
        received = self._occurred("received_at", message.received_at, now)
        key = address_key(message.channel, message.sender)
        # Locked before anything is read by address: a registration of this address waits, or
        # is waited for, so a STOP and the contact it concerns always meet.
        tx.lock_addresses([key])
        contact_ids = tuple(tx.find_contacts_by_address([key]).get(key, []))
        channels = self._scope(settings, message.channel)
        batch_id = uuid.uuid4().hex
        changed: list[tuple[str, Channel]] = []
        outcome = InboundOutcome.NONE
        reply: str | None = None
        honor_by: datetime | None = None
        review_item: str | None = None
        opt_out = classification is Classification.OPT_OUT or (
            classification is Classification.POSSIBLE_OPT_OUT
            and settings.possible_opt_out is PossibleOptOutAction.APPLY
        )
        if opt_out or classification is Classification.OPT_IN:
            record_last_word(
                tx, account, key, channels=channels, received=received,
                message_id=message.message_id, opt_out=opt_out,
            )
        if opt_out:
            honor_by = settings.honor_by(message.channel, received, account_settings.timezone)
            reply = settings.templates.opt_out
            outcome = InboundOutcome.OPTED_OUT if contact_ids else InboundOutcome.SUPPRESSED
            reason = (
                "stop_keyword" if classification is Classification.OPT_OUT else "possible_opt_out"
            )
            for cid in contact_ids:
                changed.extend(
                    self._apply_in_tx(
                        tx,
                        opt_out_request(
                            account, cid, channels=channels, key=key, received=received,
                            now=now, batch_id=batch_id, message_id=message.message_id,
                            reason=reason,
                        ),
                        [cid],
                    ).changed
                )
        elif classification is Classification.POSSIBLE_OPT_OUT:
            outcome = InboundOutcome.NEEDS_REVIEW
            honor_by = settings.honor_by(message.channel, received, account_settings.timezone)
            review_item = review_item_id(message.channel, message.message_id)
            tx.put_review_item(
                ReviewItem(
                    account=account,
                    id=review_item,
                    kind=ReviewKind.POSSIBLE_OPT_OUT,
                    channel=message.channel,
                    message_id=message.message_id,
                    sender=message.sender,
                    text=message.body[:MAX_REVIEW_TEXT],
                    contact_ids=contact_ids,
                    received_at=received,
                    honor_by=honor_by,
                )
            )
        elif classification is Classification.OPT_IN:
            for cid in contact_ids:
                changed.extend(
                    self._apply_in_tx(tx, ChangeRequest(
                        actor=Actor.contact(account, cid),
                        channels=channels,
                        target=SubscriptionState.SUBSCRIBED,
                        source=Source.INBOUND_KEYWORD,
                        reason="start_keyword",
                        occurred_at=received,
                        now=now,
                        batch_id=batch_id,
                        inbound_message_id=message.message_id,
                        # START undoes only the contact's own opt-out from this address, and
                        # only when nothing happened to the pair since the START was received.
                        keep=lambda sub: undone_by_start(sub, key, received),
                        known_contacts=True,
                    ), [cid]).changed
                )
            programme = settings.programme
            if programme is not None and keyword in programme.keywords:
                changed.extend(
                    self._programme_opt_in(
                        tx, message, contact_ids, received=received, now=now, batch_id=batch_id
                    )
                )
            if changed:
                outcome = InboundOutcome.OPTED_IN
                reply = settings.templates.opt_in
            elif contact_ids:
                outcome = InboundOutcome.NOTHING_TO_UNDO
            else:
                outcome = InboundOutcome.NO_CONTACT
        elif classification is Classification.HELP:
            outcome = InboundOutcome.HELP
            reply = settings.templates.help
        return InboundResult(
            account=account,
            message_id=message.message_id,
            channel=message.channel,
            sender=message.sender,
            classification=classification,
            keyword=keyword,
            outcome=outcome,
            contact_ids=contact_ids,
            channels=channels,
            changed=tuple(changed),
            reply=reply,
            honor_by=honor_by,
            received_at=received,
            batch_id=batch_id if changed else None,
            review_item=review_item,
        )

    def _programme_opt_in(
        self,
        tx: StoreTransaction,
        message: InboundMessage,
        contact_ids: Sequence[str],
        *,
        received: datetime,
        now: datetime,
        batch_id: str,
    ) -> list[tuple[str, Channel]]:
        """Subscribe the never-subscribed pairs of the channel a programme keyword came on, with
        the programme's wording as the evidence."""
        programme = self.settings_for(message.account).inbound.programme
        assert programme is not None
        evidence = Evidence(
            method="keyword",
            wording=programme.wording,
            wording_version=programme.wording_version,
            location=f"{message.channel.key}:{message.sender}",
            captured_at=received,
            reference=message.message_id,
        )
        changed: list[tuple[str, Channel]] = []
        for cid in contact_ids:
            request = ChangeRequest(
                actor=Actor.contact(message.account, cid),
                channels=(message.channel,),
                target=SubscriptionState.SUBSCRIBED,
                op=Transition.OPT_IN,
                source=Source.INBOUND_KEYWORD,
                reason="keyword_opt_in",
                evidence=evidence,
                occurred_at=received,
                now=now,
                batch_id=batch_id,
                inbound_message_id=message.message_id,
                keep=lambda sub: sub is None,
                known_contacts=True,
            )
            result = self._apply_in_tx(tx, request, [cid])
            changed.extend((p.contact_id, p.channel) for p in result.changed)
        return changed


def record_last_word(
    tx: StoreTransaction,
    account: str,
    key: str,
    *,
    channels: Sequence[Channel],
    received: datetime,
    message_id: str,
    opt_out: bool,
) -> None:
    """Record an address's STOP (or its withdrawal by START), whether or not a contact has it."""
    tx.put_suppressions(
        [
            Suppression(
                account=account,
                address_key=key,
                channel=ch,
                occurred_at=received,
                source=Source.INBOUND_KEYWORD,
                inbound_message_id=message_id,
                active=opt_out,
            )
            for ch in channels
        ]
    )


def opt_out_request(
    account: str,
    contact_id: str,
    *,
    channels: tuple[Channel, ...],
    key: str,
    received: datetime,
    now: datetime,
    batch_id: str,
    message_id: str,
    reason: str,
) -> ChangeRequest:
    """The change an opt-out sent from address *key* makes for one contact with the address."""
    return ChangeRequest(
        actor=Actor.contact(account, contact_id),
        channels=channels,
        target=SubscriptionState.UNSUBSCRIBED,
        op=Transition.UNSUBSCRIBE,
        source=Source.INBOUND_KEYWORD,
        reason=reason,
        occurred_at=received,
        now=now,
        batch_id=batch_id,
        inbound_message_id=message_id,
        via=key,
        # A STOP is honoured however late, after the pair's last change, unless the contact's own
        # later word already answered it.
        timing="last_change",
        keep=lambda sub: not answered_later(sub, received),
        known_contacts=True,  # found by address in this transaction
    )


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
