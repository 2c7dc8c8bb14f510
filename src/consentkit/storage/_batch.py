"""What the stores check and derive of a :class:`~consentkit.storage.base.ChangeBatch` before
they write it (the reason code is the batch's own :attr:`ChangeBatch.reason_code`), and which of
two suppressions is an address's last word."""

from __future__ import annotations

from consentkit.errors import ValidationError
from consentkit.model import SubscriptionState, Suppression
from consentkit.storage.base import ChangeBatch

__all__ = ["check_batch", "opt_out_record", "replaces"]


def check_batch(batch: ChangeBatch, account: str) -> None:
    """Refuse a batch of another account than the transaction's, or one back to never-subscribed.

    Raises:
        ValidationError: either of them.
    """
    if batch.account != account:
        raise ValidationError(
            "batch.account",
            f"{batch.account!r} is not the account of this transaction ({account!r})",
        )
    if batch.new_state is SubscriptionState.NEVER_SUBSCRIBED:
        raise ValidationError("batch.new_state", "a pair cannot be set back to never-subscribed")


def opt_out_record(batch: ChangeBatch) -> tuple[str | None, str | None]:
    """The ``opted_out_by`` and ``opted_out_via`` column values a change of *batch* writes on
    its pairs: who asked (one origin) and from which address when unsubscribing, none when
    subscribing."""
    if batch.new_state is not SubscriptionState.UNSUBSCRIBED:
        return None, None
    return (None if batch.opted_out_by is None else batch.opted_out_by.value), batch.opted_out_via


def replaces(new: Suppression, old: Suppression) -> bool:
    """Whether *new* replaces *old* as the address's last word: it occurred later, or at the same
    instant as an opt-out over a withdrawal (ties go to the opt-out).  The SQL stores say the
    same in their upsert's WHERE clause."""
    if new.occurred_at != old.occurred_at:
        return new.occurred_at > old.occurred_at
    return new.active and not old.active
