"""The in-memory reference store.

Fast, dependency-free and thread-safe (one lock serialises transactions), for tests and for
host apps' unit tests of their consent rules.  Nothing is kept after the process ends.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import attrs

from consentkit.channels import Channel
from consentkit.confirmation import PendingOptIn, PendingStatus
from consentkit.erasure import ErasureRecord
from consentkit.errors import ConflictError, StorageError
from consentkit.model import (
    ConsentEvent,
    Contact,
    Subscription,
    SubscriptionState,
    Suppression,
    Transition,
    transition_of,
)
from consentkit.retention import PurgeKind
from consentkit.review import ReviewDecision, ReviewItem
from consentkit.sends import SentRecord
from consentkit.storage import _memory_erasure
from consentkit.storage._batch import check_batch, replaces
from consentkit.storage._staging import PairwiseStaging
from consentkit.storage._time import hour_bucket
from consentkit.storage.base import (
    AddressRecords,
    ChangeBatch,
    Erasure,
    InboundRecord,
    PairChange,
    SubscriptionFilter,
)

__all__ = ["InMemoryStore"]

_MISSING: Any = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NESTED_TRANSACTION = (
    "a write transaction is already open on this store in this thread: a consentkit call was made "
    "from inside another one (e.g. from the iterable of ids it is consuming); make the calls one "
    "after the other"
)


@attrs.define
class _Account:
    contacts: dict[str, Contact] = attrs.Factory(dict)
    by_address: dict[str, set[str]] = attrs.Factory(lambda: defaultdict(set))
    subscriptions: dict[tuple[str, Channel], Subscription] = attrs.Factory(dict)
    events: list[ConsentEvent] = attrs.Factory(list)
    inbound: dict[tuple[Channel, str], InboundRecord] = attrs.Factory(dict)
    review: dict[str, ReviewItem] = attrs.Factory(dict)
    departures: dict[str, list[tuple[str, datetime]]] = attrs.Factory(lambda: defaultdict(list))
    suppressions: dict[tuple[str, Channel], Suppression] = attrs.Factory(dict)
    sent: dict[tuple[str, str, str], SentRecord] = attrs.Factory(dict)
    pending: dict[str, PendingOptIn] = attrs.Factory(dict)
    erasures: list[ErasureRecord] = attrs.Factory(list)
    # Roll-ups by UTC hour: state deltas and transition counts, plus the events of each hour so a
    # partial hour at either end of an interval can be counted exactly.
    hour_events: dict[int, list[tuple[datetime, Channel, SubscriptionState, SubscriptionState]]] = (
        attrs.Factory(lambda: defaultdict(list))
    )
    hour_deltas: dict[int, dict[tuple[Channel, SubscriptionState], int]] = attrs.Factory(
        lambda: defaultdict(lambda: defaultdict(int))
    )


class _Transaction(PairwiseStaging):
    """Applies writes directly and keeps an undo log, under the store's lock; bulk changes are
    staged over the per-pair methods (:class:`~consentkit.storage._staging.PairwiseStaging`)."""

    def __init__(self, store: InMemoryStore, account: str) -> None:
        self._store = store
        self._account_id = account
        self._data = store._account(account)
        self._undo: list[tuple[str, Any, Any]] = []
        self._events_before = len(self._data.events)

    def missing_contacts(self, contact_ids: Sequence[str]) -> list[str]:
        contacts = self._data.contacts
        return [cid for cid in dict.fromkeys(contact_ids) if cid not in contacts]

    def get_contacts(self, contact_ids: Sequence[str]) -> dict[str, Contact]:
        contacts = self._data.contacts
        return {cid: contacts[cid] for cid in contact_ids if cid in contacts}

    def put_contacts(self, contacts: Sequence[Contact]) -> None:
        for contact in contacts:
            old = self._data.contacts.get(contact.id, _MISSING)
            self._undo.append(("contact", contact.id, old))
            if old is not _MISSING:
                for key in old.address_keys():
                    self._data.by_address[key].discard(contact.id)
            self._data.contacts[contact.id] = contact
            for key in contact.address_keys():
                self._data.by_address[key].add(contact.id)

    def lock_subscriptions(
        self, contact_ids: Sequence[str], channels: Sequence[Channel]
    ) -> dict[tuple[str, Channel], Subscription]:
        subs = self._data.subscriptions
        found: dict[tuple[str, Channel], Subscription] = {}
        for cid in contact_ids:
            for ch in channels:
                sub = subs.get((cid, ch))
                if sub is not None:
                    found[(cid, ch)] = sub
        return found

    def write_changes(self, batch: ChangeBatch, changes: Sequence[PairChange]) -> None:
        subs = self._data.subscriptions
        for change in changes:
            current = subs.get((change.contact_id, change.channel))
            version = 0 if current is None else current.version
            if version != change.expected_version:
                raise ConflictError(
                    f"subscription of {change.contact_id!r} on {change.channel.key} is at version "
                    f"{version}, not {change.expected_version}: it changed concurrently; "
                    "re-read and retry"
                )
        check_batch(batch, self._account_id)
        bucket = hour_bucket(batch.occurred_at)
        deltas = self._data.hour_deltas[bucket]
        hour_events = self._data.hour_events[bucket]
        reason = batch.reason_code
        unsubscribing = batch.new_state is SubscriptionState.UNSUBSCRIBED
        origins = (
            frozenset({batch.opted_out_by})
            if unsubscribing and batch.opted_out_by is not None
            else frozenset()
        )
        via = batch.opted_out_via if unsubscribing else None
        for change in changes:
            key = (change.contact_id, change.channel)
            current = subs.get(key)
            self._undo.append(("subscription", key, _MISSING if current is None else current))
            last_opt_out = None if current is None else current.last_opt_out_at
            if unsubscribing and (last_opt_out is None or batch.occurred_at > last_opt_out):
                last_opt_out = batch.occurred_at
            subs[key] = Subscription(
                account=batch.account,
                contact_id=change.contact_id,
                channel=change.channel,
                state=batch.new_state,
                version=change.expected_version + 1,
                updated_at=batch.occurred_at,
                changed_by=batch.actor.kind,
                source=batch.source,
                reason=reason,
                opted_out_by=origins,
                opted_out_via=via,
                last_opt_out_at=last_opt_out,
            )
            previous = change.previous_state
            self._data.events.append(
                ConsentEvent(
                    sequence=next(self._store._sequence),
                    account=batch.account,
                    contact_id=change.contact_id,
                    channel=change.channel,
                    previous_state=previous,
                    new_state=batch.new_state,
                    actor=batch.actor,
                    source=batch.source,
                    occurred_at=batch.occurred_at,
                    recorded_at=batch.recorded_at,
                    justification=batch.justification,
                    evidence=batch.evidence,
                    reason=reason,
                    inbound_message_id=batch.inbound_message_id,
                    batch_id=batch.batch_id,
                )
            )
            self._undo.append(("rollup", bucket, (change.channel, previous, batch.new_state)))
            if previous is not SubscriptionState.NEVER_SUBSCRIBED:
                deltas[(change.channel, previous)] -= 1
            deltas[(change.channel, batch.new_state)] += 1
            hour_events.append((batch.occurred_at, change.channel, previous, batch.new_state))

    def note_opt_outs(self, batch: ChangeBatch, pairs: Sequence[tuple[str, Channel]]) -> None:
        subs = self._data.subscriptions
        for key in pairs:
            current = subs.get(key)
            if current is None or current.state is not SubscriptionState.UNSUBSCRIBED:
                continue
            origins = current.opted_out_by
            if batch.opted_out_by is not None:
                origins = origins | {batch.opted_out_by}
            last = current.last_opt_out_at
            if last is None or batch.occurred_at > last:
                last = batch.occurred_at
            self._undo.append(("subscription", key, current))
            subs[key] = attrs.evolve(current, opted_out_by=origins, last_opt_out_at=last)

    def lock_addresses(self, address_keys: Sequence[str]) -> None:
        """Nothing to do: the store's lock serialises every transaction."""

    def get_inbound(self, channel: Channel, message_id: str) -> InboundRecord | None:
        return self._data.inbound.get((channel, message_id))

    def put_inbound(self, record: InboundRecord) -> None:
        key = (record.channel, record.message_id)
        if key in self._data.inbound:
            raise ConflictError(
                f"inbound message {record.message_id!r} on {record.channel.key} was already "
                "handled"
            )
        self._undo.append(("inbound", key, None))
        self._data.inbound[key] = record

    def put_pending(self, request: PendingOptIn) -> None:
        if request.id in self._data.pending:
            raise ConflictError(f"pending opt-in {request.id!r} exists already")
        self._undo.append(("pending", request.id, _MISSING))
        self._data.pending[request.id] = request

    def get_pending(self, request_id: str) -> PendingOptIn | None:
        return self._data.pending.get(request_id)

    def close_pending(self, request_id: str, status: PendingStatus, at: datetime) -> None:
        old = self._data.pending[request_id]
        self._undo.append(("pending", request_id, old))
        self._data.pending[request_id] = attrs.evolve(old, status=status, closed_at=at)

    def open_pending_of(self, contact_ids: Sequence[str]) -> list[PendingOptIn]:
        wanted = set(contact_ids)
        found = [
            p
            for p in self._data.pending.values()
            if p.contact_id in wanted and p.status is PendingStatus.PENDING
        ]
        return sorted(found, key=lambda p: (p.requested_at, p.id))

    def put_review_item(self, item: ReviewItem) -> None:
        if item.id in self._data.review:
            raise ConflictError(f"review item {item.id!r} exists already")
        self._undo.append(("review", item.id, _MISSING))
        self._data.review[item.id] = item

    def get_review_item(self, item_id: str) -> ReviewItem | None:
        return self._data.review.get(item_id)

    def decide_review_item(
        self,
        item_id: str,
        decision: ReviewDecision,
        *,
        decided_by: str,
        decided_at: datetime,
        note: str,
    ) -> None:
        item = self._data.review.get(item_id)
        if item is None or item.decision is not None:
            raise ConflictError(f"review item {item_id!r} is not open")
        self._undo.append(("review", item_id, item))
        self._data.review[item_id] = attrs.evolve(
            item, decision=decision, decided_by=decided_by, decided_at=decided_at, note=note
        )

    def record_address_departures(
        self, departures: Sequence[tuple[str, str]], at: datetime
    ) -> None:
        for key, contact_id in departures:
            self._undo.append(("departure", key, None))
            self._data.departures[key].append((contact_id, at))

    def contacts_that_left(self, address_key: str, since: datetime) -> list[str]:
        return sorted(
            {cid for cid, at in self._data.departures.get(address_key, ()) if at > since}
        )

    def owners_of_address(self, address_key: str, since: datetime) -> list[str]:
        owners = set(self._data.by_address.get(address_key, ()))
        owners.update(self.contacts_that_left(address_key, since))
        return sorted(owners)

    def find_contacts_by_address(self, address_keys: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for key in address_keys:
            ids = self._data.by_address.get(key)
            if ids:
                found[key] = sorted(ids)
        return found

    def get_suppressions(self, address_keys: Sequence[str]) -> list[Suppression]:
        wanted = set(address_keys)
        return [s for (key, _), s in self._data.suppressions.items() if key in wanted]

    def put_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        stored = self._data.suppressions
        for suppression in suppressions:
            key = (suppression.address_key, suppression.channel)
            old = stored.get(key)
            if old is None or replaces(suppression, old):
                self._undo.append(("suppression", key, _MISSING if old is None else old))
                stored[key] = suppression

    def subscriptions_of_contact(self, contact_id: str) -> list[Subscription]:
        subs = self._data.subscriptions
        return sorted(
            (s for (cid, _), s in subs.items() if cid == contact_id), key=lambda s: s.channel.key
        )

    def erase_contact(self, erasure: Erasure) -> None:
        self._undo.append(("erasure", None, _memory_erasure.snapshot(self._data)))
        _memory_erasure.erase(self._data, erasure)

    def rollback(self) -> None:
        data = self._data
        for kind, key, old in reversed(self._undo):
            if kind == "contact":
                current = data.contacts.get(key)
                if current is not None:
                    for address in current.address_keys():
                        data.by_address[address].discard(key)
                if old is _MISSING:
                    data.contacts.pop(key, None)
                else:
                    data.contacts[key] = old
                    for address in old.address_keys():
                        data.by_address[address].add(key)
            elif kind == "subscription":
                if old is _MISSING:
                    data.subscriptions.pop(key, None)
                else:
                    data.subscriptions[key] = old
            elif kind == "rollup":
                ch, previous, new = old
                deltas = data.hour_deltas[key]
                if previous is not SubscriptionState.NEVER_SUBSCRIBED:
                    deltas[(ch, previous)] += 1
                deltas[(ch, new)] -= 1
                data.hour_events[key].pop()
            elif kind == "inbound":
                data.inbound.pop(key, None)
            elif kind == "departure":
                data.departures[key].pop()
            elif kind == "review":
                if old is _MISSING:
                    data.review.pop(key, None)
                else:
                    data.review[key] = old
            elif kind == "pending":
                if old is _MISSING:
                    data.pending.pop(key, None)
                else:
                    data.pending[key] = old
            elif kind == "suppression":
                if old is _MISSING:
                    data.suppressions.pop(key, None)
                else:
                    data.suppressions[key] = old
            elif kind == "erasure":
                _memory_erasure.restore(data, old)
        del data.events[self._events_before :]
        self._undo.clear()


class InMemoryStore:
    """A store in process memory: the reference implementation of the storage protocol."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        self._sequence = itertools.count(1)
        self._writer: int | None = None  # the thread whose transaction is open

    def _account(self, account: str) -> _Account:
        data = self._accounts.get(account)
        if data is None:
            data = self._accounts[account] = _Account()
        return data

    @contextmanager
    def transaction(self, account: str) -> Iterator[_Transaction]:
        """Open a write transaction; transactions of this store run one at a time."""
        with self._lock:
            if self._writer == threading.get_ident():
                # The lock is re-entrant, but an inner transaction's writes would be undone by the
                # outer one's rollback after it reported them committed.
                raise StorageError(_NESTED_TRANSACTION)
            self._writer = threading.get_ident()
            tx = _Transaction(self, account)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise
            finally:
                self._writer = None

    def get_contact(self, account: str, contact_id: str) -> Contact | None:
        with self._lock:
            return self._account(account).contacts.get(contact_id)

    def list_contacts(self, account: str, *, after: str | None, limit: int) -> list[Contact]:
        with self._lock:
            contacts = self._account(account).contacts
            ids = sorted(cid for cid in contacts if after is None or cid > after)[:limit]
            return [contacts[cid] for cid in ids]

    def get_subscription(
        self, account: str, contact_id: str, channel: Channel
    ) -> Subscription | None:
        with self._lock:
            return self._account(account).subscriptions.get((contact_id, channel))

    def get_state(self, account: str, contact_id: str, channel: Channel) -> SubscriptionState:
        sub = self.get_subscription(account, contact_id, channel)
        return SubscriptionState.NEVER_SUBSCRIBED if sub is None else sub.state

    def subscriptions_of(self, account: str, contact_id: str) -> list[Subscription]:
        with self._lock:
            subs = self._account(account).subscriptions
            return sorted(
                (s for (cid, _), s in subs.items() if cid == contact_id),
                key=lambda s: s.channel.key,
            )

    def subscribed_among(
        self, account: str, channel: Channel, contact_ids: Iterable[str]
    ) -> set[str]:
        with self._lock:
            subs = self._account(account).subscriptions
            subscribed = SubscriptionState.SUBSCRIBED
            result: set[str] = set()
            for cid in contact_ids:
                sub = subs.get((cid, channel))
                if sub is not None and sub.state is subscribed:
                    result.add(cid)
            return result

    def list_subscriptions(
        self, account: str, where: SubscriptionFilter, *, after: str | None, limit: int
    ) -> list[Subscription]:
        with self._lock:
            subs = self._account(account).subscriptions
            matching = [
                s
                for (cid, ch), s in subs.items()
                if ch == where.channel
                and s.state is where.state
                and (after is None or cid > after)
                and (where.source is None or s.source is where.source)
                and (where.reason is None or s.reason == where.reason)
            ]
            matching.sort(key=lambda s: s.contact_id)
            return matching[:limit]

    def events(
        self,
        account: str,
        *,
        contact_id: str | None = None,
        channel: Channel | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Iterator[ConsentEvent]:
        with self._lock:
            selected = [
                e
                for e in self._account(account).events
                if (contact_id is None or e.contact_id == contact_id)
                and (channel is None or e.channel == channel)
                and (after is None or e.sequence > after)
            ]
        return iter(selected if limit is None else selected[:limit])

    def totals_at(
        self, account: str, instants: Sequence[datetime]
    ) -> list[dict[tuple[Channel, SubscriptionState], int]]:
        with self._lock:
            data = self._account(account)
            results: list[dict[tuple[Channel, SubscriptionState], int]] = []
            for instant in instants:
                cut = hour_bucket(instant)
                totals: dict[tuple[Channel, SubscriptionState], int] = defaultdict(int)
                for bucket, deltas in data.hour_deltas.items():
                    if bucket < cut:
                        for key, value in deltas.items():
                            totals[key] += value
                for occurred_at, ch, previous, new in data.hour_events.get(cut, ()):
                    if occurred_at < instant:
                        if previous is not SubscriptionState.NEVER_SUBSCRIBED:
                            totals[(ch, previous)] -= 1
                        totals[(ch, new)] += 1
                results.append({k: v for k, v in totals.items() if v})
            return results

    def transition_counts(
        self, account: str, boundaries: Sequence[datetime]
    ) -> list[dict[tuple[Channel, Transition], int]]:
        with self._lock:
            data = self._account(account)
            results: list[dict[tuple[Channel, Transition], int]] = []
            for start, end in itertools.pairwise(boundaries):
                counts: dict[tuple[Channel, Transition], int] = defaultdict(int)
                for bucket in range(hour_bucket(start), hour_bucket(end) + 1):
                    for occurred_at, ch, previous, new in data.hour_events.get(bucket, ()):
                        if start <= occurred_at < end:
                            transition = transition_of(previous, new)
                            if transition is not None:
                                counts[(ch, transition)] += 1
                results.append(dict(counts))
            return results

    def list_review_items(
        self,
        account: str,
        *,
        include_decided: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[ReviewItem]:
        with self._lock:
            items = sorted(
                (
                    item
                    for item in self._account(account).review.values()
                    if (include_decided or item.decision is None)
                    and (after is None or (item.received_at, item.id) > after)
                ),
                key=lambda item: (item.received_at, item.id),
            )
            return items[:limit]

    def close(self) -> None:
        """Nothing to release."""

    def erasures(self, account: str) -> list[ErasureRecord]:
        with self._lock:
            return sorted(
                self._account(account).erasures, key=lambda r: (r.erased_at, r.pseudonym)
            )

    def pending_of(self, account: str, contact_id: str) -> list[PendingOptIn]:
        with self._lock:
            found = [
                p for p in self._account(account).pending.values() if p.contact_id == contact_id
            ]
            return sorted(found, key=lambda p: (p.requested_at, p.id))

    def records_of_addresses(
        self, account: str, address_keys: Sequence[str], addresses: Sequence[str]
    ) -> AddressRecords:
        keys, senders = set(address_keys), set(addresses)
        with self._lock:
            data = self._account(account)
            inbound = sorted(
                (r for r in data.inbound.values() if r.sender_key in keys),
                key=lambda r: (r.received_at or _EPOCH, r.channel, r.message_id),
            )
            review = sorted(
                (i for i in data.review.values() if i.sender.lower() in senders),
                key=lambda i: (i.received_at, i.id),
            )
            suppressions = [s for (key, _), s in data.suppressions.items() if key in keys]
            sent = sorted(
                (r for r in data.sent.values() if r.address_key in keys),
                key=lambda r: (r.sent_at, r.channel, r.sender),
            )
            return AddressRecords(tuple(inbound), tuple(review), tuple(suppressions), tuple(sent))

    def purge_expired(self, account: str, kind: PurgeKind, before: datetime, limit: int) -> int:
        with self._lock:
            data = self._account(account)
            if kind in (PurgeKind.INBOUND_RESULTS, PurgeKind.NON_CONTACT_INBOUND):
                reviewing = {
                    (item.channel, item.message_id)
                    for item in data.review.values()
                    if item.decision is None
                }
                inbound = sorted(
                    (record.received_at, key)
                    for key, record in data.inbound.items()
                    if record.received_at is not None
                    and record.received_at < before
                    and key not in reviewing
                    and (kind is PurgeKind.INBOUND_RESULTS or record.from_contact is False)
                )[:limit]
                for _, key in inbound:
                    del data.inbound[key]
                return len(inbound)
            if kind is PurgeKind.DECIDED_REVIEW_ITEMS:
                items = sorted(
                    (item.received_at, item.id)
                    for item in data.review.values()
                    if item.decision is not None and item.received_at < before
                )[:limit]
                for _, item_id in items:
                    del data.review[item_id]
                return len(items)
            if kind is PurgeKind.SENT_MESSAGES:
                sent = sorted(
                    (record.sent_at, sent_key)
                    for sent_key, record in data.sent.items()
                    if record.sent_at < before
                )[:limit]
                for _, sent_key in sent:
                    del data.sent[sent_key]
                return len(sent)
            departed = sorted(
                (left_at, address, contact_id)
                for address, rows in data.departures.items()
                for contact_id, left_at in rows
                if left_at < before
            )[:limit]
            for left_at, address, contact_id in departed:
                data.departures[address].remove((contact_id, left_at))
            return len(departed)

    def put_sent(self, account: str, records: Sequence[SentRecord]) -> None:
        with self._lock:
            sent = self._account(account).sent
            for record in records:
                key = (record.channel.key, record.address_key, record.sender)
                kept = sent.get(key)
                if kept is None or kept.sent_at <= record.sent_at:
                    sent[key] = record

    def sent_to(
        self, account: str, address_key: str, channels: Sequence[Channel]
    ) -> list[SentRecord]:
        keys = {ch.key for ch in channels}
        with self._lock:
            return [
                record
                for (key, address, _), record in self._account(account).sent.items()
                if key in keys and address == address_key
            ]
