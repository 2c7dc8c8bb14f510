"""Who may change consent: the policy guard.

Every mutating entry point of :class:`~consentkit.service.ConsentService` asks the policy before it
writes anything.  The default :class:`AdminOnlyPolicy` enforces this table:

=====================================  ================  =======  ===========  ==============
transition                             admin             member   the contact  system
=====================================  ================  =======  ===========  ==============
never -> subscribed (opt-in)           with evidence     no       yes          with evidence
subscribed/never -> unsubscribed       yes               no       yes          yes
unsubscribed -> subscribed (resub.)    with a            no       yes          never
                                       justification
erase a contact (``erase_contact``)    with a reason     no       no           no
=====================================  ================  =======  ===========  ==============

A ``MISTAKEN_UNSUBSCRIBE`` justification is refused when the contact unsubscribed themselves (a
STOP reply, an unsubscribe link): only ``CONTACT_REQUEST`` can undo the contact's own opt-out.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs

from consentkit.channels import Channel
from consentkit.errors import ConsentError, JustificationError, NotAuthorizedError, ValidationError
from consentkit.model import (
    Actor,
    ActorKind,
    Evidence,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    SubscriptionState,
    Transition,
    transition_of,
)

__all__ = [
    "Actor",
    "ActorKind",
    "AdminOnlyPolicy",
    "Justification",
    "Policy",
    "ProposedChange",
    "ResubscribeReason",
]


@attrs.frozen
class ProposedChange:
    """A change the service is about to make, as the policy sees it.

    The service asks once per distinct situation within one call (the same actor, channel, current
    state and target), so a policy must decide from these fields alone.

    Attributes:
        actor: who asks.
        channel: the channel.
        current: the pair's current state.
        current_changed_by: the kind of actor that made the current state (None when never
            subscribed).
        current_source: where the current state came from (None when never subscribed).
        current_opted_out_by: who asked for the pair's current opt-out (see
            :attr:`~consentkit.model.Subscription.opted_out_by`); empty unless unsubscribed.
        target: the requested state.
        source: where the request comes from.
        justification: the justification given, if any.
        evidence: the opt-in evidence given, if any.
    """

    actor: Actor
    channel: Channel
    current: SubscriptionState
    current_changed_by: ActorKind | None
    current_source: Source | None
    target: SubscriptionState
    source: Source
    justification: Justification | None = None
    evidence: Evidence | None = None
    current_opted_out_by: frozenset[OptOutOrigin] = frozenset()

    @property
    def transition(self) -> Transition | None:
        """The transition this change would make (None for a no-op)."""
        return transition_of(self.current, self.target)


@runtime_checkable
class Policy(Protocol):
    """Decides who may do what.  Return None to allow, or the error to raise to refuse."""

    def check_change(self, change: ProposedChange) -> ConsentError | None:
        """Decide on one consent change."""
        ...

    def check_contact_write(self, actor: Actor) -> ConsentError | None:
        """Decide whether *actor* may register or update contacts and their addresses."""
        ...

    def check_read(self, actor: Actor) -> ConsentError | None:
        """Decide whether *actor* may read consent state and history of its account."""
        ...


_CONTACTS_OWN = frozenset(
    {OptOutOrigin.CONTACT, OptOutOrigin.REVOKE_ALL, OptOutOrigin.SUPPRESSION}
)
"""Opt-outs the contact asked for: a mistake is ruled out."""


def _ask_admin(actor: Actor, what: str) -> NotAuthorizedError:
    return NotAuthorizedError(
        f"{actor} is not an admin of account {actor.account!r}: only admins can {what}. "
        "Ask an admin of the account to do it."
    )


@attrs.frozen
class AdminOnlyPolicy:
    """The default policy: the transition table of the module docstring.

    Attributes:
        contact_writers: actor kinds allowed to register or update contacts (admins, members and
            the system by default: contact data is not consent).
    """

    contact_writers: frozenset[ActorKind] = frozenset(
        {ActorKind.ADMIN, ActorKind.MEMBER, ActorKind.SYSTEM}
    )

    def check_change(self, change: ProposedChange) -> ConsentError | None:
        """Apply the admin-only transition table."""
        actor = change.actor
        transition = change.transition
        if change.target is SubscriptionState.NEVER_SUBSCRIBED:
            return ValidationError(
                "state", "a pair cannot be set back to never-subscribed; unsubscribe it instead"
            )
        if actor.kind is ActorKind.MEMBER:
            # Also when the pair is already in the requested state: a member is never told
            # "success" for a change they may not make.
            verb = (
                "unsubscribe"
                if change.target is SubscriptionState.UNSUBSCRIBED
                else "subscribe or resubscribe"
            )
            return _ask_admin(actor, f"{verb} a contact")
        if transition is None:
            return None
        if transition is Transition.UNSUBSCRIBE:
            return None
        if transition is Transition.OPT_IN:
            if actor.kind is ActorKind.CONTACT or change.evidence is not None:
                return None
            return ValidationError(
                "evidence",
                f"an opt-in by {actor.kind.value} {actor.id!r} needs Evidence: how consent was "
                "collected, the exact wording shown and its version",
            )
        # Resubscription: the most dangerous transition, undoing an opt-out.
        if actor.kind is ActorKind.CONTACT:
            return None
        if actor.kind is ActorKind.SYSTEM:
            return NotAuthorizedError(
                f"the system ({actor}) never resubscribes an unsubscribed contact on "
                f"{change.channel.key}: only the contact's own request or an admin with a "
                "justification can"
            )
        justification = change.justification
        if justification is None:
            return JustificationError(
                f"resubscribing on {change.channel.key} needs a justification: "
                "Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE or CONTACT_REQUEST, "
                "note=...) saying what happened and where the request came from"
            )
        if justification.reason is ResubscribeReason.MISTAKEN_UNSUBSCRIBE and (
            change.current_opted_out_by & _CONTACTS_OWN
        ):
            how = (
                "a STOP sent from their address before it was theirs"
                if not change.current_opted_out_by & (_CONTACTS_OWN - {OptOutOrigin.SUPPRESSION})
                else change.current_source.value
                if change.current_source is not None
                and change.current_changed_by is ActorKind.CONTACT
                else "their own request"
            )
            return JustificationError(
                f"the contact unsubscribed themselves from {change.channel.key} (via {how}), so "
                "it was not a mistake: only a CONTACT_REQUEST justification (the contact asked to "
                "be resubscribed) is accepted"
            )
        return None

    def check_contact_write(self, actor: Actor) -> ConsentError | None:
        """Admins, members and the system may maintain contact records."""
        if actor.kind in self.contact_writers:
            return None
        return NotAuthorizedError(
            f"{actor} may not register or update contacts in account {actor.account!r}"
        )

    def check_review(self, actor: Actor) -> ConsentError | None:
        """Only admins decide review items: a decision can unsubscribe contacts.  (Optional for
        custom policies: a policy without this method gets this rule.)"""
        if actor.kind is ActorKind.ADMIN:
            return None
        return _ask_admin(actor, "decide review items")

    def check_erasure(self, actor: Actor) -> ConsentError | None:
        """Only admins erase contacts: an erasure deletes personal data for good.  (Optional for
        custom policies: a policy without this method gets this rule.)"""
        if actor.kind is ActorKind.ADMIN:
            return None
        return _ask_admin(actor, "erase contacts")

    def check_purge(self, actor: Actor) -> ConsentError | None:
        """Admins and the system (a cron job) purge expired message records
        (docs/retention.md).  (Optional for custom policies: without it, this rule.)"""
        if actor.kind in (ActorKind.ADMIN, ActorKind.SYSTEM):
            return None
        return NotAuthorizedError(
            f"{actor} may not purge the records of account {actor.account!r}: only an admin or "
            "the system may"
        )

    def check_read(self, actor: Actor) -> ConsentError | None:
        """Reading is open to every actor of the account except contacts, who see only their own
        records (the service enforces that scope)."""
        return None
