"""Consent changes: opt-in, unsubscribe, resubscribe and the inbox toggle."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import attrs

from consentkit.channels import (
    Channel,
)
from consentkit.errors import (
    ValidationError,
)
from consentkit.model import (
    Actor,
    Evidence,
    Justification,
    Source,
    SubscriptionState,
    Transition,
    ensure_aware,
    enum_value,
    validate_reason_code,
)
from consentkit.service._arguments import check_actor, check_flag, contact_ids_of
from consentkit.service._core import ServiceCore
from consentkit.service._engine import ChangeRequest
from consentkit.service._results import ChangeResult


@attrs.frozen
class Asked:
    """What one change call asks for, as its public method received it.

    Attributes:
        target: the state the pairs move to.
        op: the operation (see :class:`~consentkit.service._engine.ChangeRequest`).
        source: where the request comes from.
        justification: for resubscriptions.
        evidence: for opt-ins.
        reason: a reason code.
        occurred_at: when it happened; None for now.
        partial: report refused pairs instead of raising.
        details: list the changed and unchanged pairs.
        expected_version: the inbox toggle's optimistic-concurrency check.
        topic: the declared topic of the channels the pairs are on (None: the channels').
    """

    target: SubscriptionState
    op: Transition | None
    source: Source | str
    justification: Justification | None = None
    evidence: Evidence | None = None
    reason: str | None = None
    occurred_at: datetime | None = None
    partial: bool = False
    details: bool = True
    expected_version: int | None = None
    topic: object = None


class ChangesMixin(ServiceCore):
    """The consent changes a user or process asks for."""

    def opt_in(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        *,
        evidence: Evidence | None,
        source: Source | str = Source.API,
        occurred_at: datetime | None = None,
        partial: bool = False,
        details: bool = False,
        topic: str | None = None,
    ) -> ChangeResult:
        """Record that contacts agreed to receive messages on *channels* (never -> subscribed).

        Pairs that are unsubscribed are **skipped and reported**, never resubscribed: an import or
        a sign-up form cannot undo an opt-out (use :meth:`resubscribe`).  The contact's own
        opt-in (``Actor.contact``) is their explicit request and does resubscribe.

        The result counts the pairs; pass ``details=True`` for the lists of changed and
        unchanged pairs with their versions (see :attr:`ChangeResult.detailed`).
        """
        return self._apply(
            actor,
            contact_ids,
            channels,
            Asked(
                SubscriptionState.SUBSCRIBED,
                op=Transition.OPT_IN,
                source=source,
                evidence=evidence,
                occurred_at=occurred_at,
                partial=partial,
                details=details,
                topic=topic,
            ),
        )

    def unsubscribe(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        *,
        source: Source | str = Source.CONTACTS_PAGE,
        reason: str | None = None,
        occurred_at: datetime | None = None,
        partial: bool = False,
        details: bool = False,
        topic: str | None = None,
    ) -> ChangeResult:
        """Unsubscribe many contacts from many channels in one atomic call.

        Any number of ids may be streamed; they are processed in chunks inside one transaction.
        Pairs already unsubscribed are counted as unchanged and get no event.  The result counts
        the pairs; pass ``details=True`` for the lists of changed and unchanged pairs with their
        versions (see :attr:`ChangeResult.detailed`).

        Raises:
            NotAuthorizedError: the actor may not unsubscribe (e.g. a member): nothing changes.
            UnknownContactError: an id is not a contact of the account: nothing changes.
        """
        return self._apply(
            actor,
            contact_ids,
            channels,
            Asked(
                SubscriptionState.UNSUBSCRIBED,
                op=Transition.UNSUBSCRIBE,
                source=source,
                reason=validate_reason_code(reason),
                occurred_at=occurred_at,
                partial=partial,
                details=details,
                topic=topic,
            ),
        )

    def resubscribe(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        *,
        justification: Justification | None,
        source: Source | str = Source.CONTACTS_PAGE,
        occurred_at: datetime | None = None,
        partial: bool = False,
        details: bool = False,
        topic: str | None = None,
    ) -> ChangeResult:
        """Resubscribe unsubscribed contacts (unsubscribed -> subscribed), all or nothing.

        Admins must give a :class:`~consentkit.model.Justification`; ``MISTAKEN_UNSUBSCRIBE`` is
        refused for pairs the contact unsubscribed themselves.  Pairs that were never subscribed
        are refused: record an opt-in with evidence for those.  The result counts the pairs;
        pass ``details=True`` for their lists (see :attr:`ChangeResult.detailed`).

        Raises:
            JustificationError: no or an unacceptable justification.
            NotAuthorizedError: members and the system may not resubscribe.
        """
        return self._apply(
            actor,
            contact_ids,
            channels,
            Asked(
                SubscriptionState.SUBSCRIBED,
                op=Transition.RESUBSCRIBE,
                source=source,
                justification=justification,
                occurred_at=occurred_at,
                partial=partial,
                details=details,
                topic=topic,
            ),
        )

    def set_subscribed(
        self,
        actor: Actor,
        contact_id: str,
        channel_: Channel | str,
        subscribed: bool,
        *,
        justification: Justification | None = None,
        evidence: Evidence | None = None,
        source: Source | str = Source.INBOX,
        expected_version: int | None = None,
        occurred_at: datetime | None = None,
        topic: str | None = None,
    ) -> ChangeResult:
        """The inbox toggle: set one contact's consent on one channel.

        Turning it on is an opt-in (evidence needed) for a never-subscribed pair and a
        resubscription (justification needed) for an unsubscribed one.  Pass the
        ``expected_version`` of the :class:`Subscription` the user was looking at to refuse the
        change if someone else changed it meanwhile.

        Raises:
            ConflictError: *expected_version* is stale.
        """
        check_flag("subscribed", subscribed)
        target = SubscriptionState.SUBSCRIBED if subscribed else SubscriptionState.UNSUBSCRIBED
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 0
        ):
            raise ValidationError("expected_version", "must be a non-negative integer")
        return self._apply(
            actor,
            [contact_id],
            (channel_,),
            Asked(
                target,
                op=None,
                source=source,
                justification=justification,
                evidence=evidence,
                occurred_at=occurred_at,
                expected_version=expected_version,
                topic=topic,
            ),
        )

    def _apply(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        asked: Asked,
    ) -> ChangeResult:
        source, evidence, justification = asked.source, asked.evidence, asked.justification
        check_actor(actor)
        source = enum_value(Source, "source", source)
        if evidence is not None and not isinstance(evidence, Evidence):
            raise ValidationError(
                "evidence", f"expected an Evidence or None, got {type(evidence).__name__}"
            )
        if justification is not None and not isinstance(justification, Justification):
            raise ValidationError(
                "justification",
                f"expected a Justification or None, got {type(justification).__name__}",
            )
        check_flag("partial", asked.partial)
        check_flag("details", asked.details)
        chosen = self._channels(channels, asked.topic)
        ids = contact_ids_of(contact_ids)
        occurred_at = asked.occurred_at
        if occurred_at is not None:
            ensure_aware("occurred_at", occurred_at)
        with self.store.transaction(actor.account) as tx:
            # Read the clock only once the write lock is held: a call that waited for another
            # writer must not be recorded before that writer's changes.
            now = self._now()
            request = ChangeRequest(
                actor=actor,
                channels=chosen,
                target=asked.target,
                op=asked.op,
                source=source,
                justification=justification,
                evidence=evidence,
                reason=asked.reason,
                occurred_at=self._occurred("occurred_at", occurred_at, now),
                now=now,
                batch_id=uuid.uuid4().hex,
                partial=asked.partial,
                details=asked.details,
                expected_version=asked.expected_version,
                timing="exact" if occurred_at is not None else "clock",
            )
            return self._apply_in_tx(tx, request, ids)
