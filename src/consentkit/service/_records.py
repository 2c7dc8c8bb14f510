"""What is kept about a contact and their messages: the purge of what expired (docs/retention.md)
and a contact's export (GDPR Art. 15 and 20)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from consentkit.errors import StorageError, UnknownContactError, ValidationError
from consentkit.inbound import InboundResult
from consentkit.model import Actor, ensure_aware
from consentkit.policy import AdminOnlyPolicy
from consentkit.retention import PurgeKind, PurgeResult, RetentionSettings
from consentkit.serialization import make_converter
from consentkit.service._arguments import check_actor
from consentkit.service._core import ServiceCore
from consentkit.storage.base import (
    AddressReads,
    InboundRecord,
    PendingReads,
    Purging,
    missing_capability,
)

EXPORT_FORMAT = "consentkit.contact_export/1"
"""The ``format`` of :meth:`RecordsMixin.export_contact`'s document."""

_MAX_BATCH = 10_000


def _count(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"expected an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValidationError(field, f"must be from {low} to {high}, got {value}")
    return value


def _result_of(record: InboundRecord) -> InboundResult:
    try:
        return InboundResult.from_json(record.result)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StorageError(
            f"the stored result of inbound message {record.message_id!r} on "
            f"{record.channel.key} is not one consentkit wrote: {e}"
        ) from None


class RecordsMixin(ServiceCore):
    """Purging expired message records, and exporting a contact's records."""

    def purge(
        self,
        actor: Actor,
        *,
        now: datetime | None = None,
        retention: RetentionSettings | None = None,
        batch_size: int = 1000,
        max_batches: int | None = None,
    ) -> PurgeResult:
        """Delete the account's message records that have expired by its
        :class:`~consentkit.retention.RetentionSettings` (``AccountSettings(retention=...)``),
        *batch_size* records per transaction, so a cron job holds no lock for long and can be
        stopped at any point: what was deleted stays deleted, the rest goes next time.

        Consent (pairs, events, suppressions) is never purged.  With nothing configured,
        nothing is deleted and the result lists every kind as kept forever.

        Args:
            now: the instant expiry is counted to (the service's clock by default).
            retention: the periods to apply instead of the account's settings.
            batch_size: records per transaction (1 to 10,000).
            max_batches: stop after this many transactions (``complete`` is then False if
                more had expired); None runs until nothing expired is left.

        Raises:
            NotAuthorizedError: the policy's ``check_purge`` refused (by default only admins
                and the system may purge).
            StorageError: the store cannot purge (it lacks
                :class:`~consentkit.storage.base.Purging`).
        """
        check_actor(actor)
        check = getattr(self.policy, "check_purge", AdminOnlyPolicy().check_purge)
        refusal = check(actor)
        if refusal is not None:
            raise refusal
        instant = self._now() if now is None else ensure_aware("now", now)
        batch_size = _count("batch_size", batch_size, 1, _MAX_BATCH)
        if max_batches is not None:
            max_batches = _count("max_batches", max_batches, 1, 2**31)
        store = self.store
        if not isinstance(store, Purging):
            raise missing_capability(store, Purging, "cannot purge expired records")
        account = actor.account
        if retention is None:
            retention = self.settings_for(account).retention
        elif not isinstance(retention, RetentionSettings):
            raise ValidationError(
                "retention", f"expected RetentionSettings or None, got {retention!r}"
            )
        periods = retention.periods()
        deleted = dict.fromkeys(periods, 0)
        batches = 0
        complete = True
        for kind, period in periods.items():
            before = instant - period
            while True:
                if max_batches is not None and batches >= max_batches:
                    complete = False
                    break
                count = store.purge_expired(account, kind, before, batch_size)
                batches += 1
                deleted[kind] += count
                if count < batch_size:
                    break
            if not complete:
                break
        kept = tuple(kind for kind in PurgeKind if kind not in periods)
        return PurgeResult(account, deleted, kept, complete)

    def export_contact(self, actor: Actor, contact_id: str) -> dict[str, Any]:
        """Everything recorded about one contact, as one JSON document (docs/retention.md):
        the contact, every subscription, every event (with evidence and justifications), the
        inbound messages from its addresses still kept (their results), its review items, the
        suppressions (last words) of its addresses, its pending opt-ins (double opt-in) and
        the record of the last messages sent to them.  A contact actor may export their own.

        Raises:
            UnknownContactError: no such contact in the account.
            StorageError: the store cannot read an address's records (it lacks
                :class:`~consentkit.storage.base.AddressReads`).
        """
        account = self._contact_scope(actor, contact_id)
        store = self.store
        if not isinstance(store, AddressReads):
            raise missing_capability(store, AddressReads, "cannot export a contact's records")
        exported_at = self._now()
        contact = store.get_contact(account, contact_id)
        if contact is None:
            raise UnknownContactError(account, [contact_id])
        # Review items are matched by sender in lower case (an email's local part may differ
        # in case from the contact's address).
        addresses = [
            a.lower()
            for a in (contact.phone, contact.email, *(h for _, h in contact.handles))
            if a
        ]
        records = store.records_of_addresses(account, sorted(contact.address_keys()), addresses)
        # Only what was the contact's: an address that was someone else's before (a recycled
        # number) brings their messages along, which are theirs, not this contact's.
        inbound = [
            result
            for result in (_result_of(record) for record in records.inbound)
            if contact_id in result.contact_ids
        ]
        review_items = [item for item in records.review_items if contact_id in item.contact_ids]
        # The documents of docs/json.md (consentkit.documents builds on this converter).
        to_document = make_converter().unstructure
        return {
            "format": EXPORT_FORMAT,
            "account": account,
            "contact_id": contact_id,
            "exported_at": exported_at.isoformat(),
            "contact": to_document(contact),
            "subscriptions": [to_document(s) for s in store.subscriptions_of(account, contact_id)],
            "events": [to_document(e) for e in store.events(account, contact_id=contact_id)],
            "inbound": [result.to_document() for result in inbound],
            "review_items": [to_document(item) for item in review_items],
            "suppressions": [
                {
                    "address_key": s.address_key,
                    "channel": s.channel.key,
                    "occurred_at": s.occurred_at.isoformat(),
                    "source": s.source.value,
                    "inbound_message_id": s.inbound_message_id,
                    "active": s.active,
                }
                for s in records.suppressions
            ],
            "pending_opt_ins": [
                {
                    "id": p.id,
                    "channel": p.channel.key,
                    "evidence": to_document(p.evidence),
                    "request_wording": p.request_wording,
                    "requested_by": to_document(p.requested_by),
                    "requested_at": p.requested_at.isoformat(),
                    "expires_at": p.expires_at.isoformat(),
                    "status": p.status.value,
                    "closed_at": None if p.closed_at is None else p.closed_at.isoformat(),
                }
                for p in (
                    store.pending_of(account, contact_id) if isinstance(store, PendingReads) else []
                )
            ],
            "sent": [
                {
                    "channel": r.channel.key,
                    "address_key": r.address_key,
                    "sender": r.sender or None,
                    "topic": r.topic,
                    "sent_at": r.sent_at.isoformat(),
                }
                for r in records.sent
            ],
        }
