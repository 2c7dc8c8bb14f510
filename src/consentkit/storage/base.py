"""The storage protocol: what a store must do for :class:`~consentkit.service.ConsentService`.

Stores are plain classes that satisfy these :class:`typing.Protocol` s; nothing needs to inherit.
The protocol is shaped for SQL: every service call maps to a constant number of set-based
statements per chunk of input (the service feeds bulk calls in chunks of at most
:data:`CHUNK_SIZE` ids), never one round trip per contact.

Rules every store follows (the conformance suite in :mod:`consentkit.testing` checks them):

* Everything is scoped to one account; nothing ever crosses accounts.
* A write transaction is all-or-nothing: when the ``with`` block raises, nothing of it is visible,
  ever.  Write transactions of one store are serialisable with respect to the rows they touch:
  :meth:`StoreTransaction.lock_subscriptions` locks the pairs it returns *and the pairs it did not
  find*, so two transactions never both decide from the same old state.
* Subscription rows and their events (and the trend roll-ups) are written in the same transaction.
* :meth:`StoreTransaction.write_changes` checks every ``expected_version`` and raises
  :class:`~consentkit.errors.ConflictError` if one does not match (0 means "no record yet").
* Events are append-only and come back in append order (their ``sequence`` increases).
* Driver errors are translated into :class:`~consentkit.errors.ConsentError` subclasses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

import attrs

from consentkit.channels import Channel
from consentkit.confirmation import PendingOptIn, PendingStatus
from consentkit.erasure import ErasureRecord
from consentkit.errors import StorageError
from consentkit.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    Source,
    Subscription,
    SubscriptionState,
    Suppression,
    Transition,
)
from consentkit.retention import PurgeKind
from consentkit.review import ReviewDecision, ReviewItem
from consentkit.sends import SentRecord

__all__ = [
    "CHUNK_SIZE",
    "AddressReads",
    "AddressRecords",
    "ChangeBatch",
    "Erasure",
    "ErasureLog",
    "ErasureTransaction",
    "InboundRecord",
    "PairChange",
    "PendingReads",
    "PendingTransaction",
    "Purging",
    "SentLog",
    "Situation",
    "SituationKey",
    "StagedPair",
    "StagingTransaction",
    "Store",
    "StoreTransaction",
    "SubscriptionFilter",
    "TopicReads",
    "TopicTransaction",
    "missing_capability",
]

CHUNK_SIZE = 5000
"""The largest number of contact ids the service passes to one store call."""


def missing_capability(store: object, capability: type, doing: str) -> StorageError:
    """The error of a call that needs an optional store capability *store* lacks: "*store's
    type* *doing* (it does not implement consentkit.storage.base.*capability*)"."""
    return StorageError(
        f"{type(store).__name__} {doing} (it does not implement "
        f"consentkit.storage.base.{capability.__name__})"
    )


@attrs.frozen
class ChangeBatch:
    """The fields shared by every change of one write (one service call, or one chunk of it).

    Attributes:
        account: the account.
        new_state: the state every pair of the batch moves to.
        actor: who makes the change.
        source: where it comes from.
        occurred_at: when it happened.
        recorded_at: when it is recorded (the service clock's now).
        justification: set for admin resubscriptions.
        evidence: set for opt-ins.
        reason: a reason code.
        inbound_message_id: the inbound message that caused it.
        batch_id: shared by every event of one service call.
        opted_out_by: for unsubscribes (and :meth:`StoreTransaction.note_opt_outs`), who asked
            for the opt-out; stored on the pair as :attr:`Subscription.opted_out_by`.
        opted_out_via: for opt-outs sent from an address (a STOP reply or its suppression), the
            address key; stored on the pair as :attr:`Subscription.opted_out_via`.
    """

    account: str
    new_state: SubscriptionState
    actor: Actor
    source: Source
    occurred_at: datetime
    recorded_at: datetime
    batch_id: str
    justification: Justification | None = None
    evidence: Evidence | None = None
    reason: str | None = None
    inbound_message_id: str | None = None
    opted_out_by: OptOutOrigin | None = None
    opted_out_via: str | None = None

    @property
    def reason_code(self) -> str | None:
        """The reason code stored on the pair and the events: the given reason, else the
        justification's reason."""
        if self.reason is None and self.justification is not None:
            return self.justification.reason.value
        return self.reason


class PairChange(NamedTuple):
    """One (contact, channel) pair of a :class:`ChangeBatch`.

    A named tuple rather than an attrs class: bulk calls make one per pair, and tuples are the
    cheapest thing Python builds.

    Attributes:
        contact_id: the contact.
        channel: the channel.
        previous_state: the state the service saw (recorded in the event).
        expected_version: the version the service saw; 0 when there was no record.
    """

    contact_id: str
    channel: Channel
    previous_state: SubscriptionState
    expected_version: int


SituationKey = tuple[
    Channel, SubscriptionState, ActorKind | None, Source | None, frozenset[OptOutOrigin]
]
"""What the policy decides a pair by: its channel, state, last changer, last source and who
opted it out (``(channel, NEVER_SUBSCRIBED, None, None, frozenset())`` for a pair with no
record)."""


class Situation(NamedTuple):
    """The staged pairs of one :data:`SituationKey` (see :class:`StagingTransaction`).

    Attributes:
        key: the situation.
        pairs: how many staged pairs are in it.
        latest: the latest ``updated_at`` among them (None for never-subscribed pairs).
    """

    key: SituationKey
    pairs: int
    latest: datetime | None


class StagedPair(NamedTuple):
    """One staged pair, as :meth:`StagingTransaction.staged_pairs` lists it.

    Attributes:
        contact_id: the contact.
        channel: the channel.
        version: its version (0 for no record).
        key: its situation.
    """

    contact_id: str
    channel: Channel
    version: int
    key: SituationKey


@attrs.frozen
class SubscriptionFilter:
    """Which subscriptions to list.

    Attributes:
        channel: the channel.
        state: subscribed or unsubscribed.
        source: only pairs whose last change came from this source.
        reason: only pairs whose last change carried this reason code.
    """

    channel: Channel
    state: SubscriptionState
    source: Source | None = None
    reason: str | None = None


@attrs.frozen
class InboundRecord:
    """What a store keeps of an inbound message it handled, for idempotent redelivery.

    Attributes:
        channel: the channel it arrived on; with ``message_id`` the key (two providers, or one
            that numbers per channel, may reuse a message id on another channel).
        message_id: the provider's message id.
        body_sha256: the SHA-256 (hex) of the message text, so a redelivery whose text differs
            from the first delivery is told apart from a true redelivery; None for records kept
            before it was recorded.
        result: the result, as the JSON document of
            :meth:`~consentkit.inbound.InboundResult.to_json` (it holds the sender).
        received_at: what its retention counts from: when the message was handled (for a
            message delivered late, later than the ``received_at`` of its result, so the
            provider's retries of it still find the record); None from a caller that does not
            say, which no purge deletes.  Records kept before it existed count from their
            result's ``received_at``.
        sender_key: the sender's address key (:func:`~consentkit.model.address_key`).
        from_contact: whether the sender was a contact's address when it was handled.
            (The last three are for retention and exports, not part of equality.)
    """

    channel: Channel
    message_id: str
    body_sha256: str | None
    result: str
    received_at: datetime | None = attrs.field(default=None, eq=False)
    sender_key: str | None = attrs.field(default=None, eq=False)
    from_contact: bool | None = attrs.field(default=None, eq=False)


@runtime_checkable
class StoreTransaction(Protocol):
    """One write transaction in one account, obtained from :meth:`Store.transaction`.

    Reads made through it see its own uncommitted writes.
    """

    def missing_contacts(self, contact_ids: Sequence[str]) -> list[str]:
        """The ids among *contact_ids* that are not registered in the account."""
        ...

    def get_contacts(self, contact_ids: Sequence[str]) -> dict[str, Contact]:
        """The registered contacts among *contact_ids*, by id."""
        ...

    def put_contacts(self, contacts: Sequence[Contact]) -> None:
        """Insert or replace contacts (and their address index entries)."""
        ...

    def lock_subscriptions(
        self, contact_ids: Sequence[str], channels: Sequence[Channel]
    ) -> dict[tuple[str, Channel], Subscription]:
        """The existing subscriptions among ``contact_ids x channels``, locked until the end of
        the transaction (absent pairs are locked too: no other transaction may create them)."""
        ...

    def write_changes(self, batch: ChangeBatch, changes: Sequence[PairChange]) -> None:
        """Apply *changes*: upsert each pair to ``batch.new_state`` with version + 1, append one
        event per pair (in the order given), and update the trend roll-ups.

        The pair's opt-out record follows the new state: unsubscribing sets ``opted_out_by`` to
        ``{batch.opted_out_by}``, ``opted_out_via`` to ``batch.opted_out_via`` and
        ``last_opt_out_at`` to the later of its old value and ``batch.occurred_at``; subscribing
        clears ``opted_out_by`` and ``opted_out_via`` and keeps ``last_opt_out_at``.

        Raises:
            ConflictError: an ``expected_version`` does not match the stored version.
            ValidationError: ``batch.account`` is not the transaction's account, or
                ``batch.new_state`` is never-subscribed.
        """
        ...

    def note_opt_outs(self, batch: ChangeBatch, pairs: Sequence[tuple[str, Channel]]) -> None:
        """Record an opt-out request on pairs that are already unsubscribed (no event, no new
        version, no roll-up): add ``batch.opted_out_by`` to each pair's ``opted_out_by`` and move
        its ``last_opt_out_at`` to ``batch.occurred_at`` if that is later.  Pairs that are not
        unsubscribed are left alone."""
        ...

    def lock_addresses(self, address_keys: Sequence[str]) -> None:
        """Lock address keys until the end of the transaction, so a transaction that reads which
        contacts or suppressions an address has cannot interleave with one that changes them.

        The service calls it before it reads contacts by address or suppressions (inbound
        messages) and before it writes contacts (the old and new keys of each).  A store whose
        write transactions are serialised anyway may do nothing.  The keys come in no particular
        order: a store that takes one lock per key takes them in an order of its own (sorted,
        as the PostgreSQL store does by lock id), or two transactions can deadlock.  The locks
        must be held before
        the transaction's next statement runs; a server store may send them with that statement
        rather than wait for them on their own (the PostgreSQL store does)."""
        ...

    def get_inbound(self, channel: Channel, message_id: str) -> InboundRecord | None:
        """The record of an inbound message already handled, keyed by (channel, message id)."""
        ...

    def put_inbound(self, record: InboundRecord) -> None:
        """Remember that an inbound message was handled, with its result.

        Raises:
            ConflictError: a record with the same (channel, message id) exists.
        """
        ...

    def put_review_item(self, item: ReviewItem) -> None:
        """Queue an item for review.

        Raises:
            ConflictError: an item with the same id exists.
        """
        ...

    def get_review_item(self, item_id: str) -> ReviewItem | None:
        """One review item, locked until the end of the transaction."""
        ...

    def decide_review_item(
        self,
        item_id: str,
        decision: ReviewDecision,
        *,
        decided_by: str,
        decided_at: datetime,
        note: str,
    ) -> None:
        """Record the decision of an open item (the service checks it is open).

        Raises:
            ConflictError: the item does not exist or was decided already.
        """
        ...

    def record_address_departures(
        self, departures: Sequence[tuple[str, str]], at: datetime
    ) -> None:
        """Remember that each ``(address key, contact id)`` of *departures* stopped being the
        contact's address at *at* (an address edit), so a message the address sent before that
        can still be matched to the contact that had it then."""
        ...

    def contacts_that_left(self, address_key: str, since: datetime) -> list[str]:
        """The contact ids that had *address_key* at *since* and lost it later (departures after
        *since*), sorted; a contact that has it again is included too."""
        ...

    def find_contacts_by_address(self, address_keys: Sequence[str]) -> dict[str, list[str]]:
        """Contact ids per address key, for the keys that match any contact (ids sorted)."""
        ...

    def get_suppressions(self, address_keys: Sequence[str]) -> list[Suppression]:
        """The suppressions recorded for any of *address_keys*, active and inactive."""
        ...

    def put_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        """Record the last word of addresses: each suppression replaces the one stored for the
        same (address key, channel) only if it occurred later, or at the same instant as an
        opt-out (active) over a withdrawal (inactive): ties go to the opt-out.  Anything else is
        ignored, so a late delivery never overrides a later word."""
        ...


@runtime_checkable
class StagingTransaction(StoreTransaction, Protocol):
    """A transaction that can change many pairs set-based (optional: the service uses it for bulk
    changes when a store's transactions have these methods, and the per-pair methods otherwise).

    The service stages one chunk of contact ids (at most :data:`CHUNK_SIZE`, all registered,
    without repeats), reads the distinct situations of ``staged ids x channels`` with one
    grouped query, asks the policy once per situation, and writes every pair of the admitted
    situations with set-based statements: no Python object per pair.  Pairs are ordered by the
    position of their contact id in the staged chunk, then by the position of their channel in
    *channels*.
    """

    def stage_contacts(self, contact_ids: Sequence[str]) -> None:
        """Make *contact_ids* (registered, distinct, in order) the staged chunk, replacing any
        chunk staged before in this transaction."""
        ...

    def staged_situations(self, channels: Sequence[Channel]) -> list[Situation]:
        """The situations of the staged ``contact ids x channels``, with their numbers of pairs,
        locked until the end of the transaction as :meth:`lock_subscriptions` locks them (absent
        pairs too).  The numbers add up to ``len(staged) * len(channels)``."""
        ...

    def staged_pairs(
        self,
        channels: Sequence[Channel],
        keys: Sequence[SituationKey],
        *,
        changed_after: datetime | None = None,
        limit: int | None = None,
    ) -> list[StagedPair]:
        """The staged pairs in the situations *keys* (only those whose ``updated_at`` is later
        than *changed_after*, when given), in staging order, at most *limit*."""
        ...

    def apply_staged(
        self,
        batch: ChangeBatch,
        channels: Sequence[Channel],
        writes: Sequence[SituationKey],
        notes: Sequence[SituationKey],
    ) -> int:
        """Change every staged pair of the situations *writes* as :meth:`write_changes` would
        (state ``batch.new_state`` at version + 1, the opt-out record, one event each in staging
        order with the pair's current state as its previous state, the roll-ups), and record an
        opt-out request on every staged pair of the situations *notes* as :meth:`note_opt_outs`
        does.  Returns the number of pairs written."""
        ...


@runtime_checkable
class AddressOwners(StoreTransaction, Protocol):
    """A transaction that reads an address's present and former contacts in one go (optional:
    without it the service asks :meth:`~StoreTransaction.find_contacts_by_address` and
    :meth:`~StoreTransaction.contacts_that_left`, one round trip each on a server)."""

    def owners_of_address(self, address_key: str, since: datetime) -> list[str]:
        """The contact ids that have *address_key* now or lost it after *since*, sorted: the
        union of ``find_contacts_by_address([address_key])`` and ``contacts_that_left``."""
        ...


@runtime_checkable
class WrittenSuppressions(Protocol):
    """A transaction that reads the suppressions of the contacts it just wrote in one join
    (the SQLite store's, which stages them): no list of their keys is sent back."""

    def written_suppressions(self) -> list[Suppression]:
        """The active suppressions of every address key of the contacts the last
        ``put_contacts`` (or ``put_new_contacts``) wrote, oldest record first."""
        ...


@runtime_checkable
class NewContacts(Protocol):
    """A transaction that registers a chunk of new contacts without reading them first (the
    SQLite store's: its transaction holds the only write lock, so the order of its address
    locks cannot matter)."""

    def put_new_contacts(self, contacts: Sequence[Contact], address_keys: Sequence[str]) -> bool:
        """If none of *contacts* (distinct ids) is registered: lock *address_keys* (all of
        theirs) as ``lock_addresses`` does, insert the contacts and their address entries, and
        return True.  Otherwise write nothing and return False."""
        ...


@runtime_checkable
class TopicTransaction(StoreTransaction, Protocol):
    """A transaction that reads which pairs of one channel were ever subscribed in one query
    (optional: without it the service locks and reads the pairs with :meth:`lock_subscriptions`)."""

    def recorded_among(self, contact_ids: Sequence[str], channel: Channel) -> set[str]:
        """The ids among *contact_ids* whose pair on *channel* was subscribed at some point: a
        record that is not unsubscribed at version 1 (an opt-out recorded before any consent).
        A topic's opt-in needs one on its channel.  A pair once subscribed stays so in this
        sense, so no lock is needed."""
        ...


@runtime_checkable
class Store(Protocol):
    """A consent store.  Reads that are not made through a transaction see committed data."""

    def transaction(self, account: str) -> AbstractContextManager[StoreTransaction]:
        """Open a write transaction in *account*; it commits when the block ends normally and rolls
        back when it raises."""
        ...

    def get_contact(self, account: str, contact_id: str) -> Contact | None:
        """One contact, or None."""
        ...

    def list_contacts(self, account: str, *, after: str | None, limit: int) -> list[Contact]:
        """Contacts ordered by id, starting after the id *after*."""
        ...

    def get_subscription(
        self, account: str, contact_id: str, channel: Channel
    ) -> Subscription | None:
        """The subscription of one pair, or None when it was never subscribed."""
        ...

    def get_state(self, account: str, contact_id: str, channel: Channel) -> SubscriptionState:
        """The state of one pair (``NEVER_SUBSCRIBED`` when it has no subscription): what
        ``can_send`` asks before every message, so read no more than the state."""
        ...

    def subscriptions_of(self, account: str, contact_id: str) -> list[Subscription]:
        """Every recorded subscription of one contact, ordered by channel key."""
        ...

    def subscribed_among(
        self, account: str, channel: Channel, contact_ids: Iterable[str]
    ) -> set[str]:
        """The ids among *contact_ids* (any number, streamed) subscribed on *channel*."""
        ...

    def list_subscriptions(
        self, account: str, where: SubscriptionFilter, *, after: str | None, limit: int
    ) -> list[Subscription]:
        """Subscriptions matching *where*, ordered by contact id, starting after *after*."""
        ...

    def events(
        self,
        account: str,
        *,
        contact_id: str | None = None,
        channel: Channel | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Iterator[ConsentEvent]:
        """Events in append order, optionally of one contact or channel, ``sequence > after``."""
        ...

    def totals_at(
        self, account: str, instants: Sequence[datetime]
    ) -> list[dict[tuple[Channel, SubscriptionState], int]]:
        """For each instant, the number of pairs per (channel, state) given every event with
        ``occurred_at < instant`` (zero counts may be omitted).  Cost is bounded by the number of
        instants and channels (roll-ups), not by the number of contacts or events."""
        ...

    def transition_counts(
        self, account: str, boundaries: Sequence[datetime]
    ) -> list[dict[tuple[Channel, Transition], int]]:
        """For each interval ``[boundaries[i], boundaries[i+1])`` the number of events per
        (channel, transition) whose ``occurred_at`` falls in it (zero counts may be omitted)."""
        ...

    def list_review_items(
        self,
        account: str,
        *,
        include_decided: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[ReviewItem]:
        """Review items, oldest first: ordered by ``(received_at, id)``, starting after the
        position *after*; only open ones unless *include_decided*."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


@runtime_checkable
class TopicReads(Protocol):
    """A store that reads both layers of a topic channel in one query (optional: without it the
    service reads each layer with :meth:`Store.get_state` and :meth:`Store.subscribed_among`)."""

    def states_of(
        self, account: str, contact_id: str, channels: Sequence[Channel]
    ) -> list[SubscriptionState]:
        """The states of one contact's pairs on *channels*, in that order (``NEVER_SUBSCRIBED``
        for a pair without a record)."""
        ...

    def subscribed_in_layers(
        self,
        account: str,
        topic_channel: Channel,
        contact_ids: Iterable[str],
        *,
        opt_out_default: bool,
    ) -> set[str]:
        """The ids among *contact_ids* (any number, streamed) subscribed on the topic channel's
        channel (``topic_channel.base``) whose topic pair is subscribed, or, with
        *opt_out_default*, not unsubscribed (never subscribed counts as in)."""
        ...


@runtime_checkable
class SentLog(Protocol):
    """A store that keeps the last message sent to each address, per channel and sender, for
    the ``topic`` opt-out scope (optional: without it ``record_sent`` raises
    :class:`~consentkit.errors.StorageError` and a STOP without a topic covers the group)."""

    def put_sent(self, account: str, records: Sequence[SentRecord]) -> None:
        """Keep each record as the last one sent to its (channel, address key, sender), unless
        one sent later is kept already (a late record never replaces a newer one; of two sent
        at the same instant the one put last is kept).  All or nothing."""
        ...

    def sent_to(
        self, account: str, address_key: str, channels: Sequence[Channel]
    ) -> list[SentRecord]:
        """The records kept for *address_key* on any of *channels* (one per channel and
        sender), in no particular order."""
        ...


@runtime_checkable
class Purging(Protocol):
    """A store that deletes expired message records (optional: without it ``purge`` raises
    :class:`~consentkit.errors.StorageError`)."""

    def purge_expired(self, account: str, kind: PurgeKind, before: datetime, limit: int) -> int:
        """Delete at most *limit* records of *kind* dated before *before* (in one transaction)
        and return how many were deleted: inbound results received before it (not those
        whose review item is open; for ``NON_CONTACT_INBOUND`` only those whose sender was no
        contact), decided review items received before it, sends sent before it, address
        departures that happened before it.  Records without a date are never deleted."""
        ...


@attrs.frozen
class Erasure:
    """What :meth:`ErasureTransaction.erase_contact` removes, rewrites and keeps for one erased
    contact (the service has unsubscribed its subscribed pairs in the same transaction first).

    Attributes:
        record: the audit record to keep (its ``pseudonym`` is the contact's new id).
        contact_id: the erased contact.
        address_keys: the contact's address keys (:func:`~consentkit.model.address_key`).
        senders: the contact's addresses, lower-cased, as inbound results and review items
            name their sender.
        suppressions: the hashed suppressions to keep (address keys ``"hmac:..."``), recorded
            as :meth:`StoreTransaction.put_suppressions` records them.
        via: ``{address key: hashed key}`` for every ``opted_out_via`` of the contact's
            subscriptions (a value it does not map becomes None).
        marker: what replaces the free text of the contact's events (justification notes).
    """

    record: ErasureRecord
    contact_id: str
    address_keys: tuple[str, ...]
    senders: tuple[str, ...]
    suppressions: tuple[Suppression, ...]
    via: Mapping[str, str]
    marker: str


@runtime_checkable
class ErasureTransaction(StoreTransaction, Protocol):
    """A transaction that can erase a contact (optional: without it ``erase_contact`` raises
    :class:`~consentkit.errors.StorageError`).  Set-based: a constant number of statements per
    erasure, whatever the contact's number of events."""

    def subscriptions_of_contact(self, contact_id: str) -> list[Subscription]:
        """Every recorded subscription of one contact (topic pairs included), ordered by channel
        key, locked until the end of the transaction."""
        ...

    def erase_contact(self, erasure: Erasure) -> None:
        """Erase ``erasure.contact_id``: delete its contact row, its address index entries, its
        address departures, the plain suppressions and the sent-message records of its address
        keys, the inbound results whose sender is one of its addresses or that name it among
        their contacts, and the review items of the same; record ``erasure.suppressions``;
        move its subscriptions and events to the pseudonym (``opted_out_via`` through
        ``erasure.via``; in events the justification note becomes ``erasure.marker``, the
        evidence loses its ``location`` and ``reference``, and the contact as actor becomes the
        pseudonym); and keep ``erasure.record``.  Versions, sequences and roll-ups do not
        change."""
        ...


@runtime_checkable
class ErasureLog(Protocol):
    """A store that keeps the audit records of erasures (with :class:`ErasureTransaction`)."""

    def erasures(self, account: str) -> list[ErasureRecord]:
        """The account's erasure records, oldest first (by ``erased_at``, then pseudonym)."""
        ...


@attrs.frozen
class AddressRecords:
    """What a store keeps about some addresses besides contacts and consent (for an export).

    Attributes:
        inbound: the inbound messages received from them, oldest first (their results).
        review_items: the review items of messages from them, oldest first.
        suppressions: their last words (opt-outs and withdrawals).
        sent: the records of the last message sent to them.
    """

    inbound: tuple[InboundRecord, ...]
    review_items: tuple[ReviewItem, ...]
    suppressions: tuple[Suppression, ...]
    sent: tuple[SentRecord, ...]


@runtime_checkable
class AddressReads(Protocol):
    """A store that reads everything kept about some addresses at once (optional: without it
    ``export_contact`` raises :class:`~consentkit.errors.StorageError`)."""

    def records_of_addresses(
        self, account: str, address_keys: Sequence[str], addresses: Sequence[str]
    ) -> AddressRecords:
        """The records of the addresses *address_keys* (inbound messages by their sender's
        key, suppressions, sends) and *addresses* (review items by their sender, compared in
        lower case: *addresses* are given in lower case)."""
        ...


@runtime_checkable
class PendingTransaction(StoreTransaction, Protocol):
    """A transaction that keeps pending opt-ins (double opt-in; optional: without it
    ``request_opt_in`` raises :class:`~consentkit.errors.StorageError`)."""

    def put_pending(self, request: PendingOptIn) -> None:
        """Record a new request (its id is new)."""
        ...

    def get_pending(self, request_id: str) -> PendingOptIn | None:
        """The request with this id in the transaction's account, or None."""
        ...

    def close_pending(self, request_id: str, status: PendingStatus, at: datetime) -> None:
        """Record that a pending request was confirmed, or found expired or void, at *at*."""
        ...

    def open_pending_of(self, contact_ids: Sequence[str]) -> list[PendingOptIn]:
        """The still pending requests of *contact_ids*, oldest first (for a confirmation
        reply)."""
        ...


@runtime_checkable
class PendingReads(Protocol):
    """A store that lists a contact's pending opt-ins (the other half of
    :class:`PendingTransaction`)."""

    def pending_of(self, account: str, contact_id: str) -> list[PendingOptIn]:
        """Every request of the contact, oldest first, whatever its status."""
        ...
