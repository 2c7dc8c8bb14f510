"""How long what consentkit keeps about messages is kept (docs/retention.md).

Consent itself (pairs, events, suppressions) is evidence and is never purged: it is the proof of
an opt-in and the reason an opt-out holds.  What expires is what messages left behind:

- the stored results of inbound messages (which hold the sender's address and, for redelivered
  webhooks, make handling idempotent),
- sooner if wanted, those of senders who were no contact (a "thanks" from a number nobody has),
- the texts of review items once they are decided (open items are kept until decided),
- the record of sends (:mod:`consentkit.sends`) and the record of address edits that lets a
  late STOP reach the contact that had the address when it was sent.

:meth:`~consentkit.service.ConsentService.purge` deletes what has expired, in bounded batches.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from consentkit.errors import ValidationError

__all__ = ["PurgeKind", "PurgeResult", "RetentionSettings"]

MINIMUM_INBOUND_RETENTION = timedelta(days=1)
"""Inbound results make a provider's retried webhook a no-op; kept less than a day, a retry of
a STOP or START could be handled twice (providers retry for hours)."""


class PurgeKind(enum.Enum):
    """What one purge step deletes."""

    INBOUND_RESULTS = "inbound_results"
    """Results of inbound messages received before the cut-off (none with an open review)."""
    NON_CONTACT_INBOUND = "non_contact_inbound"
    """The same, of messages whose sender was no contact when they were handled."""
    DECIDED_REVIEW_ITEMS = "decided_review_items"
    """Decided review items (with their texts) received before the cut-off."""
    SENT_MESSAGES = "sent_messages"
    """Records of sends sent before the cut-off."""
    ADDRESS_DEPARTURES = "address_departures"
    """Records of an address leaving a contact, older than the cut-off."""


def _period(
    field: str, minimum: timedelta | None = None
) -> Callable[[Any, Any, Any], None]:
    def check(_: object, __: object, value: object) -> None:
        if value is None:
            return
        if not isinstance(value, timedelta):
            raise ValidationError(field, f"expected a timedelta or None, got {value!r}")
        if minimum is None and value <= timedelta(0):
            raise ValidationError(field, "must be positive")
        if minimum is not None and value < minimum:
            raise ValidationError(
                field, f"must be at least {_describe(minimum)} (got {_describe(value)})"
            )
        if value > timedelta(days=365 * 100):
            raise ValidationError(field, "must be at most 100 years (None keeps forever)")

    return check


def _describe(period: timedelta) -> str:
    days = period / timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")


@attrs.frozen
class RetentionSettings:
    """How long each kind of message record is kept; None (the default) keeps it forever.

    Attributes:
        inbound_results: results of inbound messages, counted from when they were handled
            (at least a day: see :data:`MINIMUM_INBOUND_RETENTION`; a message delivered late is
            kept from its delivery, so the provider's retries still find it).  A message whose
            review item is still open is kept until it is decided.
        non_contact_inbound: results of messages from senders who were no contact, if they
            should go sooner (at least a day).
        review_texts: decided review items, with the text of the message, counted from when the
            message was received.  Open items are never purged.
        sent_messages: records of sends (``record_sent``), counted from when they were sent.
            A STOP answering a message whose record was purged covers the channel group.
        address_departures: records of an address leaving a contact (an edit), counted from the
            edit (at least a day, as providers deliver late for hours).  A STOP sent before the
            edit and delivered after this period no longer reaches the contact that had the
            address.
    """

    inbound_results: timedelta | None = attrs.field(
        default=None, validator=_period("inbound_results", MINIMUM_INBOUND_RETENTION)
    )
    non_contact_inbound: timedelta | None = attrs.field(
        default=None, validator=_period("non_contact_inbound", MINIMUM_INBOUND_RETENTION)
    )
    review_texts: timedelta | None = attrs.field(default=None, validator=_period("review_texts"))
    sent_messages: timedelta | None = attrs.field(
        default=None, validator=_period("sent_messages")
    )
    address_departures: timedelta | None = attrs.field(
        default=None, validator=_period("address_departures", MINIMUM_INBOUND_RETENTION)
    )

    def periods(self) -> dict[PurgeKind, timedelta]:
        """The configured period of each kind (kinds kept forever are absent)."""
        periods = {
            PurgeKind.INBOUND_RESULTS: self.inbound_results,
            PurgeKind.NON_CONTACT_INBOUND: self.non_contact_inbound,
            PurgeKind.DECIDED_REVIEW_ITEMS: self.review_texts,
            PurgeKind.SENT_MESSAGES: self.sent_messages,
            PurgeKind.ADDRESS_DEPARTURES: self.address_departures,
        }
        return {kind: period for kind, period in periods.items() if period is not None}


@attrs.frozen
class PurgeResult:
    """What :meth:`~consentkit.service.ConsentService.purge` deleted.

    Attributes:
        account: the account purged.
        deleted: how many records of each kind were deleted (every configured kind is listed,
            with 0 when nothing had expired).
        kept_forever: the kinds the account's settings keep forever (nothing of them deleted).
        complete: False when the call stopped at its ``max_batches`` with more expired: run it
            again.
    """

    account: str
    deleted: dict[PurgeKind, int]
    kept_forever: tuple[PurgeKind, ...]
    complete: bool
