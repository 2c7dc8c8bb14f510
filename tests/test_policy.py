"""The default admin-only policy implements the transition table of domain.md section 2."""

import pytest

from consentkit.channels import SMS
from consentkit.errors import JustificationError, NotAuthorizedError, ValidationError
from consentkit.model import Evidence, OptOutOrigin, Source, SubscriptionState
from consentkit.policy import (
    Actor,
    ActorKind,
    AdminOnlyPolicy,
    Justification,
    Policy,
    ProposedChange,
    ResubscribeReason,
)

NEVER = SubscriptionState.NEVER_SUBSCRIBED
SUB = SubscriptionState.SUBSCRIBED
UNSUB = SubscriptionState.UNSUBSCRIBED
EVIDENCE = Evidence("web_form", "Text me offers", "v1")
MISTAKE = Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "wrong row")
REQUEST = Justification(ResubscribeReason.CONTACT_REQUEST, "asked on the phone")
ACTORS = {
    "admin": Actor.admin("acme", "alice"),
    "member": Actor.member("acme", "bob"),
    "contact": Actor.contact("acme", "c1"),
    "system": Actor.system("acme"),
}


def decide(
    who: str,
    current: SubscriptionState,
    target: SubscriptionState,
    *,
    changed_by: ActorKind | None = ActorKind.ADMIN,
    justification: Justification | None = None,
    evidence: Evidence | None = None,
    opted_out_by: frozenset[OptOutOrigin] | None = None,
) -> Exception | None:
    if opted_out_by is None:
        by_kind = {ActorKind.CONTACT: OptOutOrigin.CONTACT, ActorKind.ADMIN: OptOutOrigin.ADMIN}
        origin = by_kind.get(changed_by) if changed_by is not None else None
        opted_out_by = frozenset({origin}) if current is UNSUB and origin else frozenset()
    return AdminOnlyPolicy().check_change(
        ProposedChange(
            actor=ACTORS[who],
            channel=SMS,
            current=current,
            current_changed_by=None if current is NEVER else changed_by,
            current_source=None if current is NEVER else Source.INBOUND_KEYWORD,
            target=target,
            source=Source.API,
            justification=justification,
            evidence=evidence,
            current_opted_out_by=opted_out_by,
        )
    )


def test_default_policy_satisfies_the_protocol() -> None:
    """AdminOnlyPolicy is a Policy without inheriting from it."""
    assert isinstance(AdminOnlyPolicy(), Policy)


@pytest.mark.parametrize(
    ("current", "target"), [(NEVER, SUB), (NEVER, UNSUB), (SUB, UNSUB), (UNSUB, SUB)]
)
def test_members_can_change_nothing_and_are_told_to_ask_an_admin(
    current: SubscriptionState, target: SubscriptionState
) -> None:
    """Every transition by a member is refused with a message pointing to the account's admin."""
    refusal = decide(
        "member", current, target, justification=REQUEST, evidence=EVIDENCE
    )
    assert isinstance(refusal, NotAuthorizedError)
    assert "Ask an admin of the account" in str(refusal)


@pytest.mark.parametrize("who", ["admin", "contact", "system"])
@pytest.mark.parametrize("current", [NEVER, SUB])
def test_admins_contacts_and_system_may_unsubscribe(who: str, current: SubscriptionState) -> None:
    """Unsubscribing is open to admins, the contact and the system."""
    assert decide(who, current, UNSUB) is None


def test_opt_in_needs_evidence_except_from_the_contact() -> None:
    """Admins and the system need evidence to opt a contact in; the contact does not."""
    assert isinstance(decide("admin", NEVER, SUB), ValidationError)
    assert isinstance(decide("system", NEVER, SUB), ValidationError)
    assert decide("admin", NEVER, SUB, evidence=EVIDENCE) is None
    assert decide("system", NEVER, SUB, evidence=EVIDENCE) is None
    assert decide("contact", NEVER, SUB) is None


def test_admin_resubscribe_needs_a_justification() -> None:
    """An admin resubscription without a justification raises JustificationError."""
    refusal = decide("admin", UNSUB, SUB)
    assert isinstance(refusal, JustificationError)
    assert "needs a justification" in str(refusal)
    assert decide("admin", UNSUB, SUB, justification=MISTAKE) is None
    assert decide("admin", UNSUB, SUB, justification=REQUEST) is None


def test_mistake_is_refused_when_the_contact_unsubscribed_themselves() -> None:
    """Only CONTACT_REQUEST can undo the contact's own opt-out."""
    refusal = decide("admin", UNSUB, SUB, changed_by=ActorKind.CONTACT, justification=MISTAKE)
    assert isinstance(refusal, JustificationError)
    assert "inbound_keyword" in str(refusal)
    assert decide("admin", UNSUB, SUB, changed_by=ActorKind.CONTACT, justification=REQUEST) is None


def test_system_never_resubscribes_even_with_evidence_or_justification() -> None:
    """The system may never turn unsubscribed into subscribed."""
    refusal = decide("system", UNSUB, SUB, justification=REQUEST, evidence=EVIDENCE)
    assert isinstance(refusal, NotAuthorizedError)
    assert "never resubscribes" in str(refusal)


def test_the_contact_may_resubscribe_themselves() -> None:
    """A contact's own request (START, a preference button) resubscribes without justification."""
    assert decide("contact", UNSUB, SUB, changed_by=ActorKind.CONTACT) is None


def test_no_op_needs_permission_and_never_subscribed_cannot_be_targeted() -> None:
    """A no-op is allowed to those who may make the change, refused to a member (who must never
    be told "success"), and setting a pair back to never-subscribed is invalid."""
    assert decide("admin", SUB, SUB) is None
    assert decide("admin", UNSUB, UNSUB) is None
    assert isinstance(decide("member", SUB, SUB), NotAuthorizedError)
    assert isinstance(decide("member", UNSUB, UNSUB), NotAuthorizedError)
    assert isinstance(decide("admin", SUB, NEVER), ValidationError)


def test_mistake_is_refused_for_a_suppressed_stop_whoever_wrote_it() -> None:
    """The origin recorded on the pair decides, not the last actor's kind: a STOP applied through
    the suppression list (written by the system) is the contact's own and no mistake."""
    suppressed = frozenset({OptOutOrigin.SUPPRESSION})
    refusal = decide(
        "admin", UNSUB, SUB, changed_by=ActorKind.SYSTEM, justification=MISTAKE,
        opted_out_by=suppressed,
    )
    assert isinstance(refusal, JustificationError)
    assert "before it was theirs" in str(refusal)
    both = frozenset({OptOutOrigin.ADMIN, OptOutOrigin.CONTACT})
    assert isinstance(
        decide("admin", UNSUB, SUB, justification=MISTAKE, opted_out_by=both), JustificationError
    )
    assert decide(
        "admin", UNSUB, SUB, changed_by=ActorKind.CONTACT, justification=MISTAKE,
        opted_out_by=frozenset({OptOutOrigin.ADMIN}),
    ) is None


def test_contact_writers_are_configurable() -> None:
    """Who may register contacts is a setting of the policy."""
    policy = AdminOnlyPolicy(contact_writers=frozenset({ActorKind.ADMIN}))
    assert policy.check_contact_write(ACTORS["admin"]) is None
    assert isinstance(policy.check_contact_write(ACTORS["member"]), NotAuthorizedError)
    assert isinstance(AdminOnlyPolicy().check_contact_write(ACTORS["contact"]), NotAuthorizedError)
