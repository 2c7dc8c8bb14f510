"""Double opt-in: recording a pending sign-up and completing it on the contact's confirmation
(docs/double-opt-in.md)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from consentkit.confirmation import (
    DEFAULT_EXPIRY,
    MAX_EXPIRY,
    ConfirmationMethod,
    PendingOptIn,
    PendingStatus,
)
from consentkit.errors import (
    ConflictError,
    NotAuthorizedError,
    UnknownContactError,
    ValidationError,
)
from consentkit.model import (
    Actor,
    ActorKind,
    Evidence,
    Source,
    SubscriptionState,
    Transition,
    enum_value,
    validate_id,
    validate_text,
)
from consentkit.service._arguments import check_actor
from consentkit.service._core import ServiceCore
from consentkit.service._engine import ChangeRequest
from consentkit.service._results import ChangeResult
from consentkit.storage.base import (
    PendingReads,
    PendingTransaction,
    StoreTransaction,
    missing_capability,
)

_SOURCES = {
    ConfirmationMethod.REPLY: Source.INBOUND_KEYWORD,
    ConfirmationMethod.LINK: Source.SIGNUP_FORM,
    ConfirmationMethod.API: Source.API,
}


def _pending_tx(tx: StoreTransaction) -> PendingTransaction:
    if not isinstance(tx, PendingTransaction):
        raise missing_capability(tx, PendingTransaction, "keeps no pending opt-ins")
    return tx


class ConfirmationMixin(ServiceCore):
    """Pending opt-ins and their confirmation."""

    def request_opt_in(  # noqa: PLR0913 - the pair, the evidence and the request's terms
        self,
        actor: Actor,
        contact_id: str,
        channel_: object,
        *,
        evidence: Evidence,
        request_wording: str,
        topic: str | None = None,
        expires_after: timedelta = DEFAULT_EXPIRY,
    ) -> PendingOptIn:
        """Record a sign-up that waits for the contact's confirmation (double opt-in).

        The pair does not change: it is not sendable until confirmed, except for the
        confirmation request itself (*request_wording*, which the host sends).  Give the
        returned request's ``id`` to :meth:`confirm_opt_in` when the contact confirms (put it
        in the link, or look it up with :meth:`pending_opt_ins` when they reply).

        Raises:
            NotAuthorizedError: a member asks, or an admin or the system asks for a pair the
                contact opted out of (the request would message them: only the contact's own
                new sign-up, as ``Actor.contact``, may), or the policy refuses the opt-in.
            ValidationError: the pair is subscribed already, or an argument is invalid.
            UnknownContactError: no such contact.
        """
        check_actor(actor)
        validate_id("contact_id", contact_id)
        if actor.kind is ActorKind.CONTACT and actor.id != contact_id:
            raise NotAuthorizedError(f"contact {actor.id!r} may only sign themselves up")
        if not isinstance(evidence, Evidence):
            raise ValidationError(
                "evidence", f"expected an Evidence, got {type(evidence).__name__}"
            )
        wording = validate_text("request_wording", request_wording, multiline=True)
        if not isinstance(expires_after, timedelta):
            raise ValidationError(
                "expires_after", f"expected a timedelta, got {type(expires_after).__name__}"
            )
        if not timedelta(minutes=1) <= expires_after <= MAX_EXPIRY:
            raise ValidationError(
                "expires_after", f"must be from 1 minute to {MAX_EXPIRY.days} days"
            )
        (subject,) = self._channels(channel_, topic)
        account = actor.account
        with self.store.transaction(account) as tx:
            pending_tx = _pending_tx(tx)
            now = self._now()
            if tx.missing_contacts([contact_id]):
                raise UnknownContactError(account, [contact_id])
            pair = tx.lock_subscriptions([contact_id], [subject]).get((contact_id, subject))
            state = SubscriptionState.NEVER_SUBSCRIBED if pair is None else pair.state
            if state is SubscriptionState.SUBSCRIBED:
                raise ValidationError(
                    "channel", f"{contact_id!r} is subscribed to {subject.key} already"
                )
            if state is SubscriptionState.UNSUBSCRIBED and actor.kind is not ActorKind.CONTACT:
                raise NotAuthorizedError(
                    f"{contact_id!r} opted out of {subject.key}: a confirmation request would "
                    "message them; only their own new sign-up (Actor.contact) may ask"
                )
            if actor.kind is ActorKind.MEMBER:
                raise NotAuthorizedError(
                    f"{actor} may not sign contacts up in account {account!r}: ask an admin"
                )
            request = PendingOptIn(
                id=uuid.uuid4().hex,
                account=account,
                contact_id=contact_id,
                channel=subject,
                evidence=evidence,
                request_wording=wording,
                requested_by=actor,
                requested_at=now,
                expires_at=now + expires_after,
            )
            pending_tx.put_pending(request)
            return request

    def confirm_opt_in(
        self,
        actor: Actor,
        request_id: str,
        *,
        method: ConfirmationMethod | str = ConfirmationMethod.API,
    ) -> ChangeResult:
        """Complete a pending opt-in on the contact's confirmation: the pair is subscribed by
        the contact, with evidence naming the request (``reference="pending:<id>"``, method
        ``double_opt_in_<method>``) and keeping the sign-up's wording.

        Raises:
            NotAuthorizedError: a member asks, or a contact confirms another's request.
            ConflictError: the request is confirmed already, has expired, or an opt-out of the
                pair came after it (a confirmation never overrides an opt-out): sign up again.
            ValidationError: no such request, or an invalid argument.
        """
        check_actor(actor)
        validate_id("request_id", request_id)
        how = enum_value(ConfirmationMethod, "method", method)
        if actor.kind is ActorKind.MEMBER:
            raise NotAuthorizedError(f"{actor} may not confirm sign-ups: ask an admin")
        account = actor.account
        with self.store.transaction(account) as tx:
            pending_tx = _pending_tx(tx)
            now = self._now()
            request = pending_tx.get_pending(request_id)
            if request is None:
                raise ValidationError("request_id", f"no pending opt-in {request_id!r}")
            if actor.kind is ActorKind.CONTACT and actor.id != request.contact_id:
                raise NotAuthorizedError(f"contact {actor.id!r} may only confirm their own")
            if request.status is not PendingStatus.PENDING:
                raise ConflictError(f"pending opt-in {request_id!r} is {request.status.value}")
            refusal, result = confirm_in_tx(self, tx, pending_tx, request, now, how)
        if refusal is not None:  # after the commit: the record of the refusal stays
            raise refusal
        assert result is not None
        return result

    def pending_opt_ins(self, actor: Actor, contact_id: str) -> list[PendingOptIn]:
        """A contact's pending opt-ins (every status), oldest first."""
        account = self._contact_scope(actor, contact_id)
        store = self.store
        if not isinstance(store, PendingReads):
            raise missing_capability(store, PendingReads, "keeps no pending opt-ins")
        return store.pending_of(account, contact_id)


def confirm_in_tx(  # noqa: PLR0913, PLR0917 - the transaction in both roles, and the request
    core: ServiceCore,
    tx: StoreTransaction,
    pending_tx: PendingTransaction,
    request: PendingOptIn,
    now: datetime,
    how: ConfirmationMethod,
    inbound_message_id: str | None = None,
) -> tuple[ConflictError | None, ChangeResult | None]:
    """Complete *request* in *tx* (the pair locked first), or record why it cannot be: it
    expired, or an opt-out of the pair came after it.  Returns the refusal to raise once the
    transaction has committed (so the record of it stays), or the change's result."""
    subject = request.channel
    pair = tx.lock_subscriptions([request.contact_id], [subject]).get(
        (request.contact_id, subject)
    )
    closing: PendingStatus | None = None
    if now > request.expires_at:
        closing = PendingStatus.EXPIRED
    elif (
        pair is not None
        and pair.last_opt_out_at is not None
        and pair.last_opt_out_at >= request.requested_at
    ):
        closing = PendingStatus.VOID
    if closing is not None:
        pending_tx.close_pending(request.id, closing, now)
        return (
            ConflictError(
                f"pending opt-in {request.id!r} "
                + (
                    f"expired at {request.expires_at.isoformat()}"
                    if closing is PendingStatus.EXPIRED
                    else f"was made before an opt-out of {subject.key}; it is void"
                )
                + ": ask the contact to sign up again"
            ),
            None,
        )
    evidence = Evidence(
        method=f"double_opt_in_{how.value}",
        wording=request.evidence.wording,
        wording_version=request.evidence.wording_version,
        location=request.evidence.location,
        captured_at=now,
        reference=f"pending:{request.id}",
    )
    change = ChangeRequest(
        actor=Actor.contact(request.account, request.contact_id),
        channels=(subject,),
        target=SubscriptionState.SUBSCRIBED,
        op=Transition.OPT_IN,
        source=_SOURCES[how],
        evidence=evidence,
        occurred_at=now,
        now=now,
        batch_id=uuid.uuid4().hex,
        timing="clock",
        inbound_message_id=inbound_message_id,
    )
    result = core._apply_in_tx(tx, change, [request.contact_id])
    pending_tx.close_pending(request.id, PendingStatus.CONFIRMED, now)
    return None, result
