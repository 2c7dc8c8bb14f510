"""The review queue: listing possible opt-outs and recording decisions."""

from __future__ import annotations

import uuid
from datetime import datetime

import attrs

from consentkit.errors import (
    ConflictError,
    ValidationError,
)
from consentkit.inbound import InboundMessage
from consentkit.model import (
    Actor,
    address_key,
    enum_value,
    validate_id,
    validate_text,
)
from consentkit.policy import AdminOnlyPolicy
from consentkit.review import (
    ReviewDecision,
    ReviewItem,
)
from consentkit.service._arguments import check_actor, check_flag
from consentkit.service._core import ServiceCore
from consentkit.service._inbound import (
    Delivery,
    opt_out_contacts,
    opt_out_request,
    record_last_word,
)
from consentkit.service._results import (
    Page,
    PairRef,
    ReviewResolution,
    check_limit,
    decode_cursor,
    decode_review_cursor,
    page_of,
    review_cursor,
)
from consentkit.storage.base import (
    StoreTransaction,
)


class ReviewMixin(ServiceCore):
    """The review queue."""

    def review_items(
        self,
        actor: Actor,
        *,
        include_decided: bool = False,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[ReviewItem]:
        """The account's review queue, oldest first (open items only unless *include_decided*),
        a page at a time.  Use :meth:`ReviewItem.is_overdue` to make late ones stand out."""
        account = self._account_scope(actor, "read the account's review queue")
        check_flag("include_decided", include_decided)
        limit = check_limit(limit)
        after = decode_review_cursor(decode_cursor(cursor))
        items = self.store.list_review_items(
            account, include_decided=include_decided, after=after, limit=limit + 1
        )
        return page_of(items, limit, review_cursor)

    def decide_review(
        self,
        actor: Actor,
        item_id: str,
        decision: ReviewDecision | str,
        *,
        note: str,
    ) -> ReviewResolution:
        """Record an admin's decision on a review item.

        ``OPT_OUT`` applies the message as the contact's own opt-out, like a STOP delivered late
        (docs/policy.md): dated when it was received, or just after the pair's last change if that
        came later, and superseded where the contact's own later word answered it; it also records
        the address's opt-out;
        ``NOT_OPT_OUT`` changes nothing.  Both record who decided, when, and the note.

        Raises:
            NotAuthorizedError: the actor may not decide reviews (only admins, by default).
            ValidationError: no such item, or an invalid decision or note.
            ConflictError: the item was decided already.
        """
        check_actor(actor)
        # check_review is optional in the Policy protocol: without it, the default's rule.
        check = getattr(self.policy, "check_review", AdminOnlyPolicy().check_review)
        refusal = check(actor)
        if refusal is not None:
            raise refusal
        validate_id("item_id", item_id)
        chosen = enum_value(ReviewDecision, "decision", decision)
        text = validate_text("note", note, max_length=2000, multiline=True)
        account = actor.account
        with self.store.transaction(account) as tx:
            now = self._now()
            item = tx.get_review_item(item_id)
            if item is None:
                raise ValidationError(
                    "item_id", f"{item_id!r} is not a review item of account {account!r}"
                )
            if item.decision is not None:
                when = "" if item.decided_at is None else f" at {item.decided_at.isoformat()}"
                raise ConflictError(
                    f"review item {item_id!r} was decided already ({item.decision.value}, by "
                    f"{item.decided_by}{when}); nothing was changed"
                )
            changed: list[PairRef] = []
            if chosen is ReviewDecision.OPT_OUT:
                changed = self._apply_reviewed_opt_out(tx, item, now)
            tx.decide_review_item(
                item_id, chosen, decided_by=str(actor), decided_at=now, note=text
            )
        decided = attrs.evolve(
            item, decision=chosen, decided_by=str(actor), decided_at=now, note=text
        )
        return ReviewResolution(item=decided, changed=tuple(changed))

    def _apply_reviewed_opt_out(
        self, tx: StoreTransaction, item: ReviewItem, now: datetime
    ) -> list[PairRef]:
        # The store gives channels back by key: the service's own channel has the address kind.
        ch = self.channels.resolve(item.channel, "item.channel")
        key = address_key(ch, item.sender)
        tx.lock_addresses([key])
        # Like a STOP delivered late: the contacts that had the address when it was received
        # (queued with the item, or since departed) and those that have it now.
        candidates = opt_out_contacts(tx, key, item.received_at) | set(item.contact_ids)
        present = candidates - set(tx.missing_contacts(sorted(candidates)))
        message = InboundMessage(
            item.account, ch, item.sender, item.text, item.message_id, item.received_at
        )
        channels, origin, _ = self._scope(self.settings_for(item.account).inbound, message)
        delivery = Delivery(
            message=message,
            key=key,
            channels=channels,
            origin=origin,
            contact_ids=tuple(sorted(present)),
            received=item.received_at,
            now=now,
            batch_id=uuid.uuid4().hex,
        )
        record_last_word(tx, delivery, opt_out=True)
        changed: list[PairRef] = []
        for cid in delivery.contact_ids:
            request = opt_out_request(delivery, cid, "possible_opt_out")
            changed.extend(self._apply_in_tx(tx, request, [cid]).changed)
        return changed
