"""Double opt-in: a sign-up that is pending until the contact confirms it (docs/double-opt-in.md).

A pending request changes no pair: the pair stays as it was (never subscribed, or unsubscribed),
so nothing is sendable on it but the confirmation message itself, which the host sends knowing it
is one.  The contact's confirmation (a reply, a link, a host call) completes it: one opt-in event
whose evidence names the request (``reference``) and keeps the sign-up's wording.  A request
expires, and an opt-out of the pair after it was made voids it: a confirmation never overrides
an opt-out.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

import attrs

from consentkit.channels import Channel
from consentkit.model import Actor, Evidence

__all__ = ["ConfirmationMethod", "PendingOptIn", "PendingStatus"]

DEFAULT_EXPIRY = timedelta(hours=48)
"""How long a request waits for its confirmation unless the call says otherwise."""
MAX_EXPIRY = timedelta(days=90)


class PendingStatus(enum.Enum):
    """Where a request stands."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    """Not confirmed in time (recorded when a late confirmation was refused)."""
    VOID = "void"
    """An opt-out of the pair came after the request (recorded when its confirmation was
    refused)."""


class ConfirmationMethod(enum.Enum):
    """How the contact confirmed."""

    REPLY = "reply"
    LINK = "link"
    API = "api"


@attrs.frozen
class PendingOptIn:
    """An opt-in waiting for the contact's confirmation.

    Attributes:
        id: the request's id (give it to :meth:`~consentkit.service.ConsentService.confirm_opt_in`;
            put it in the confirmation link).
        account: the account.
        contact_id: the contact.
        channel: the pair's channel (or topic channel).
        evidence: the sign-up's evidence (how consent was asked, its wording and version).
        request_wording: the confirmation request sent to the contact ("Reply YES to confirm").
        requested_by: who recorded the request.
        requested_at: when.
        expires_at: until when a confirmation is accepted.
        status: where it stands.
        closed_at: when it was confirmed (or found expired or void), else None.
    """

    id: str
    account: str
    contact_id: str
    channel: Channel
    evidence: Evidence
    request_wording: str
    requested_by: Actor
    requested_at: datetime
    expires_at: datetime
    status: PendingStatus = PendingStatus.PENDING
    closed_at: datetime | None = None
