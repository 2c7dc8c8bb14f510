"""The review queue: inbound messages a person must judge, and their decisions.

Pure domain: no I/O.  The FCC lets a consumer revoke consent "by any reasonable means", so a reply
that merely contains an opt-out word ("please stop texting me") is never dropped: when the
account's settings say to review such replies, each one becomes a :class:`ReviewItem` that an admin
decides as an opt-out (applied as the contact's own request, dated when it was received) or not.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from consentkit.channels import Channel

__all__ = ["MAX_REVIEW_TEXT", "ReviewDecision", "ReviewItem", "ReviewKind", "review_item_id"]

MAX_REVIEW_TEXT = 2000
"""At most this many characters of a message's text are kept for review."""


class ReviewKind(enum.Enum):
    """Why a message was queued for a person."""

    __hash__ = object.__hash__

    POSSIBLE_OPT_OUT = "possible_opt_out"
    """An opt-out word inside a longer message: possibly a revocation "by any reasonable means"."""


class ReviewDecision(enum.Enum):
    """What the person who reviewed an item decided."""

    __hash__ = object.__hash__

    OPT_OUT = "opt_out"
    """It is an opt-out: applied as the contact's own request, dated when it was received."""
    NOT_OPT_OUT = "not_opt_out"
    """It is not an opt-out: nothing changes; the note says why."""


def review_item_id(ch: Channel, message_id: str) -> str:
    """The id of the review item of one inbound message (one per channel and message id)."""
    return f"{ch.key}:{message_id}"


@attrs.frozen
class ReviewItem:
    """An inbound message waiting for (or given) a person's decision.

    Attributes:
        account: the account.
        id: ``"<channel>:<message id>"``, see :func:`review_item_id`.
        kind: why it was queued.
        channel: the channel it arrived on.
        message_id: the provider's message id.
        sender: the normalised sender address.
        text: the message text, at most :data:`MAX_REVIEW_TEXT` characters.
        contact_ids: the contacts that had the sender's address when it arrived.
        received_at: when it was received.
        honor_by: the legal deadline for honouring it if it is an opt-out.
        decision: the decision, None while the item is open.
        decided_by: who decided (as ``"kind:id"`` of the actor), None while open.
        decided_at: when it was decided, None while open.
        note: the reviewer's note, None while open.
    """

    account: str
    id: str
    kind: ReviewKind
    channel: Channel
    message_id: str
    sender: str
    text: str
    contact_ids: tuple[str, ...]
    received_at: datetime
    honor_by: datetime
    decision: ReviewDecision | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None

    @property
    def is_open(self) -> bool:
        """True until a decision is recorded."""
        return self.decision is None

    def is_overdue(self, at: datetime) -> bool:
        """True when the item is still open at *at* and its honour-by deadline has passed."""
        return self.decision is None and at > self.honor_by
