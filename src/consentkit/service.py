"""The consent service: the one entry point a host app uses.

It ties a :class:`~consentkit.policy.Policy`, a :class:`~consentkit.storage.Store` and a
:class:`~consentkit.clock.Clock` together.  Every mutating method goes through the policy, runs in
one store transaction (all or nothing) and writes one audit event per changed pair.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final, Generic, Literal, NamedTuple, TypeVar

import attrs

from consentkit.channels import (
    DEFAULT_CHANNEL_GROUPS,
    Channel,
    ChannelGroups,
    ChannelRegistry,
)
from consentkit.clock import Clock, SystemClock
from consentkit.errors import (
    ConflictError,
    ConsentError,
    NotAuthorizedError,
    UnknownContactError,
    ValidationError,
)
from consentkit.inbound import (
    InboundMessage,
    InboundOutcome,
    InboundResult,
    InboundSettings,
    OptOutScope,
    PossibleOptOutAction,
)
from consentkit.keywords import Classification
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
    address_key,
    ensure_aware,
    enum_value,
    validate_id,
    validate_reason_code,
    validate_text,
)
from consentkit.policy import AdminOnlyPolicy, Policy, ProposedChange
from consentkit.review import (
    MAX_REVIEW_TEXT,
    ReviewDecision,
    ReviewItem,
    ReviewKind,
    review_item_id,
)
from consentkit.settings import AccountSettings
from consentkit.storage.base import (
    CHUNK_SIZE,
    ChangeBatch,
    InboundRecord,
    PairChange,
    Store,
    StoreTransaction,
    SubscriptionFilter,
)
from consentkit.trends import (
    ChannelTotals,
    Interval,
    TransitionCounts,
    TrendReport,
    plan_report,
)

__all__ = [
    "ChangeResult",
    "ConsentService",
    "ContactsResult",
    "Page",
    "PairRef",
    "RefusedPair",
    "ReviewResolution",
    "SkippedPair",
]

T = TypeVar("T")

_MAX_LIMIT = 10_000
_INBOUND_ATTEMPTS = 5
_UNDECIDED: ConsentError = ConsentError("placeholder for a policy decision not made yet")
_CURSOR_PREFIX = "ck1:"
_FUTURE_TOLERANCE = timedelta(minutes=5)


class PairRef(NamedTuple):
    """One (contact, channel) pair (a named tuple: bulk results hold one per changed pair).

    Attributes:
        contact_id: the contact.
        channel: the channel.
    """

    contact_id: str
    channel: Channel


@attrs.frozen
class SkippedPair:
    """A pair a bulk opt-in or import left alone on purpose (e.g. the contact had unsubscribed).

    Attributes:
        contact_id: the contact.
        channel: the channel.
        reason: why it was skipped.
    """

    contact_id: str
    channel: Channel
    reason: str


@attrs.frozen
class RefusedPair:
    """A pair the policy refused, in a call made with ``partial=True``.

    Attributes:
        contact_id: the contact.
        channel: the channel.
        error: the error that would have been raised.
    """

    contact_id: str
    channel: Channel
    error: ConsentError = attrs.field(eq=False)


@attrs.frozen
class ChangeResult:
    """What a consent change did.

    Attributes:
        batch_id: the id shared by every event the call wrote.
        new_state: the state the call moved pairs to.
        changed: the pairs that changed (one event each).  Empty when ``details=False``.
        unchanged: the pairs that were already in ``new_state`` (no event).
        skipped: pairs left alone on purpose, with the reason.
        refused: pairs refused by the policy (only with ``partial=True``; otherwise the call
            raises and changes nothing).
        changed_count: number of changed pairs (also when ``details=False``).
        unchanged_count: number of unchanged pairs.
    """

    batch_id: str
    new_state: SubscriptionState
    changed: tuple[PairRef, ...] = ()
    unchanged: tuple[PairRef, ...] = ()
    skipped: tuple[SkippedPair, ...] = ()
    refused: tuple[RefusedPair, ...] = ()
    changed_count: int = 0
    unchanged_count: int = 0


@attrs.frozen
class ContactsResult:
    """What :meth:`ConsentService.upsert_contacts` did.

    Attributes:
        created: contacts that were new.
        updated: contacts that existed and were replaced.
        suppressed: pairs unsubscribed because an address that had said STOP joined their
            contact.
        unreachable: subscribed pairs whose contact no longer has an address on their channel
            (its consent stays as it is, but nothing can be sent there).
    """

    created: int
    updated: int
    suppressed: tuple[PairRef, ...] = ()
    unreachable: tuple[PairRef, ...] = ()


@attrs.frozen
class ReviewResolution:
    """What deciding a review item did.

    Attributes:
        item: the item, with its decision.
        changed: the pairs the decision unsubscribed (for an opt-out).
    """

    item: ReviewItem
    changed: tuple[PairRef, ...] = ()


@attrs.frozen
class Page(Generic[T]):
    """One page of a listing.

    Attributes:
        items: the items of this page.
        next_cursor: pass it as ``cursor`` to get the next page; None on the last page.
    """

    items: tuple[T, ...]
    next_cursor: str | None


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{key}".encode()).decode("ascii")


def _decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        decoded = base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError, AttributeError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX):
        raise ValidationError(
            "cursor", "is not a cursor returned by this listing; start again without one"
        )
    return text[len(_CURSOR_PREFIX) :]


def _review_cursor(item: ReviewItem) -> str:
    return f"{item.received_at.isoformat()}|{item.id}"


def _decode_review_cursor(key: str | None) -> tuple[datetime, str] | None:
    if key is None:
        return None
    when, _, item_id = key.partition("|")
    try:
        return datetime.fromisoformat(when), item_id
    except ValueError:
        raise ValidationError(
            "cursor", "is not a cursor returned by this listing; start again without one"
        ) from None


def _page(items: Sequence[T], limit: int, key: Callable[[T], str]) -> Page[T]:
    """A page of the first *limit* of *items*, fetched as ``limit + 1`` to learn whether more
    follow; the cursor is the sort *key* of the page's last item."""
    page = tuple(items[:limit])
    return Page(page, _encode_cursor(key(page[-1])) if len(items) > limit else None)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {_MAX_LIMIT}, got {limit!r}")
    return limit


def _iterate(field: str, value: object, expected: str) -> Iterator[object]:
    if isinstance(value, (str, bytes)) or value is None:
        raise ValidationError(field, f"expected {expected}, got {type(value).__name__}")
    try:
        return iter(value)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        raise ValidationError(field, f"expected {expected}, got {type(value).__name__}") from None


def _ids(contact_ids: object) -> Iterator[str]:
    """The contact ids of a call (one id, or any iterable of them, consumed lazily)."""
    if isinstance(contact_ids, str):
        return iter([contact_ids])
    return _iterate(  # type: ignore[return-value]
        "contact_ids", contact_ids, "a contact id or an iterable of contact ids"
    )


def _chunks(contact_ids: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(contact_ids)
    while chunk := list(itertools.islice(iterator, size)):
        # Duplicates within a chunk are dropped here; one in a later chunk finds the pair already
        # changed by this transaction and counts as unchanged, so no id set grows with the input.
        yield list(dict.fromkeys(validate_id("contact_ids", cid) for cid in chunk))


def _check_flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, f"expected True or False, got {value!r}")
    return value


def _check_actor(actor: object) -> Actor:
    if not isinstance(actor, Actor):
        raise ValidationError(
            "actor", f"expected an Actor (e.g. Actor.admin(account, user_id)), got {actor!r}"
        )
    return actor


class ConsentService:
    """Records and answers per-channel consent for the contacts of many accounts.

    Args:
        store: where state and events live (see :mod:`consentkit.storage`).
        policy: who may do what; :class:`~consentkit.policy.AdminOnlyPolicy` by default.
        clock: the time source; :class:`~consentkit.clock.SystemClock` by default.
        channel_groups: which channels one inbound STOP covers.
        channels: the host's custom channels (``["telegram"]``); with the built-ins, the only
            channel keys the service accepts: any other key is a ValidationError.
        settings: per-account settings (time zone, inbound keywords and replies, spike
            thresholds): one :class:`~consentkit.settings.AccountSettings` for every account, or a
            function from account id to its settings.
        chunk_size: how many contact ids bulk calls pass to the store at once (bounds memory).
    """

    def __init__(
        self,
        store: Store,
        *,
        policy: Policy | None = None,
        clock: Clock | None = None,
        channel_groups: ChannelGroups = DEFAULT_CHANNEL_GROUPS,
        settings: AccountSettings | Callable[[str], AccountSettings] | None = None,
        chunk_size: int = CHUNK_SIZE,
        channels: Iterable[Channel | str] = (),
    ) -> None:
        if not 1 <= chunk_size <= CHUNK_SIZE:
            raise ValidationError("chunk_size", f"must be from 1 to {CHUNK_SIZE}")
        self.store = store
        self.policy: Policy = policy if policy is not None else AdminOnlyPolicy()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.channels = ChannelRegistry(channels)
        if not isinstance(channel_groups, ChannelGroups):
            raise ValidationError("channel_groups", "expected ChannelGroups")
        for group in channel_groups.groups:
            for member in group:
                self.channels.resolve(member, "channel_groups")
        self.channel_groups = channel_groups
        self._settings = AccountSettings() if settings is None else settings
        self._chunk_size = chunk_size

    def settings_for(self, account: str) -> AccountSettings:
        """The settings of *account*."""
        if isinstance(self._settings, AccountSettings):
            return self._settings
        chosen = self._settings(account)
        if not isinstance(chosen, AccountSettings):
            raise ValidationError(
                "settings", f"the settings function returned {chosen!r}, not AccountSettings"
            )
        return chosen

    # ------------------------------------------------------------------ helpers

    def _channels(self, channels: object) -> tuple[Channel, ...]:
        if isinstance(channels, (str, Channel)):
            channels = [channels]
        items = _iterate("channels", channels, "a channel or an iterable of channels, e.g. [SMS]")
        result = tuple(dict.fromkeys(self.channels.resolve(c, "channels") for c in items))
        if not result:
            raise ValidationError("channels", "name at least one channel, e.g. [SMS]")
        return result

    def _now(self) -> datetime:
        return ensure_aware("clock.now()", self.clock.now())

    def _occurred(self, field: str, occurred_at: datetime | None, now: datetime) -> datetime:
        if occurred_at is None:
            return now
        ensure_aware(field, occurred_at)
        if occurred_at > now + _FUTURE_TOLERANCE:
            raise ValidationError(
                field, f"{occurred_at.isoformat()} is in the future; pass when it happened"
            )
        return occurred_at

    def _read_scope(self, actor: Actor) -> str:
        _check_actor(actor)
        refusal = self.policy.check_read(actor)
        if refusal is not None:
            raise refusal
        return actor.account

    def _contact_scope(self, actor: Actor, contact_id: object) -> str:
        """Scope of a read of one contact's records: a contact actor reads only their own."""
        account = self._read_scope(actor)
        validate_id("contact_id", contact_id)
        if actor.kind is ActorKind.CONTACT and contact_id != actor.id:
            raise NotAuthorizedError(f"contact {actor.id!r} may only read their own consent")
        return account

    def _account_scope(self, actor: Actor, what: str) -> str:
        """Scope of a read over the whole account, which a contact actor may not make."""
        account = self._read_scope(actor)
        if actor.kind is ActorKind.CONTACT:
            raise NotAuthorizedError(f"contacts may not {what}")
        return account

    # ------------------------------------------------------------------ contacts

    def upsert_contacts(
        self,
        actor: Actor,
        contacts: Iterable[Contact],
        *,
        replace_addresses: bool = False,
    ) -> ContactsResult:
        """Register contacts or update their addresses, all or nothing.

        By default an existing contact keeps every address the given one leaves out (``None``
        phone or email, a handle channel not given): only the addresses given change.  With
        ``replace_addresses=True`` its addresses become exactly the given ones, and an address
        left out is removed.  Subscribed pairs whose contact no longer has an address on their
        channel are reported in :attr:`ContactsResult.unreachable`.

        An address that said STOP (an active suppression) applies whenever it joins a contact, new
        or existing: each pair of the suppressed channels is unsubscribed, whatever its state
        (see docs/policy.md, "Addresses are consent-relevant").

        Raises:
            NotAuthorizedError: the policy refuses, or a contact belongs to another account.
            ValidationError: *contacts* is not an iterable of :class:`Contact`, or a contact has a
                handle on a channel the service does not know.
        """
        _check_actor(actor)
        _check_flag("replace_addresses", replace_addresses)
        refusal = self.policy.check_contact_write(actor)
        if refusal is not None:
            raise refusal
        account = actor.account
        created = updated = 0
        suppressed: list[PairRef] = []
        unreachable: list[PairRef] = []
        iterator = _iterate("contacts", contacts, "an iterable of Contact objects")
        with self.store.transaction(account) as tx:
            # The clock is read once the write lock is held, so a call that waited for another
            # writer is never recorded before that writer's changes.
            now = self._now()
            while chunk := list(itertools.islice(iterator, self._chunk_size)):
                by_id: dict[str, Contact] = {}
                for contact in chunk:
                    if not isinstance(contact, Contact):
                        raise ValidationError(
                            "contacts", f"expected Contact objects, got {type(contact).__name__}"
                        )
                    if contact.account != account:
                        raise NotAuthorizedError(
                            f"contact {contact.id!r} belongs to account {contact.account!r}; "
                            f"{actor} acts only in account {account!r}"
                        )
                    for handle_channel, _ in contact.handles:
                        self.channels.resolve(handle_channel, "handles")
                    by_id[contact.id] = contact
                before = tx.get_contacts(list(by_id))
                if not replace_addresses:
                    by_id = {
                        cid: _merged(before[cid], c) if cid in before else c
                        for cid, c in by_id.items()
                    }
                # Lock every address that joins or leaves a contact before reading suppressions
                # or writing the address index: an inbound message from one of them waits.
                joined: dict[str, frozenset[str]] = {}
                touched: set[str] = set()
                for cid, contact in by_id.items():
                    old = before.get(cid)
                    old_keys = frozenset() if old is None else old.address_keys()
                    new_keys = contact.address_keys()
                    joined[cid] = new_keys - old_keys
                    touched |= new_keys ^ old_keys
                if touched:
                    tx.lock_addresses(sorted(touched))
                created += len(by_id) - len(before)
                updated += len(before)
                tx.put_contacts(list(by_id.values()))
                suppressed.extend(self._apply_suppressions(tx, account, joined, now))
                unreachable.extend(self._unreachable(tx, before, by_id))
        return ContactsResult(
            created=created,
            updated=updated,
            suppressed=tuple(suppressed),
            unreachable=tuple(unreachable),
        )

    def _unreachable(
        self, tx: StoreTransaction, before: Mapping[str, Contact], after: Mapping[str, Contact]
    ) -> list[PairRef]:
        """Subscribed pairs whose contact just lost its address on their channel."""
        lost: dict[str, list[Channel]] = {}
        for cid, old in before.items():
            new = after[cid]
            gone = [
                ch
                for ch in self.channels.known.values()
                if old.address_for(ch) is not None and new.address_for(ch) is None
            ]
            if gone:
                lost[cid] = gone
        found: list[PairRef] = []
        for cid, gone in lost.items():
            current = tx.lock_subscriptions([cid], gone)
            found.extend(
                PairRef(cid, ch)
                for ch in gone
                if (sub := current.get((cid, ch))) is not None
                and sub.state is SubscriptionState.SUBSCRIBED
            )
        return found

    def _apply_suppressions(
        self,
        tx: StoreTransaction,
        account: str,
        joined: Mapping[str, frozenset[str]],
        now: datetime,
    ) -> list[PairRef]:
        """Apply the active suppressions of the addresses that just joined contacts."""
        keys = sorted(set().union(*joined.values()))
        if not keys:
            return []
        active = [s for s in tx.get_suppressions(keys) if s.active]
        if not active:
            return []
        applied: list[PairRef] = []
        system = Actor.system(account, "suppression-list")
        for suppression in sorted(active, key=lambda s: (s.address_key, s.channel)):
            targets = [cid for cid, keys_ in joined.items() if suppression.address_key in keys_]
            # Applied as of the join, whatever the pair's state: the pair was sendable until its
            # contact took the address, so a START received before that never undoes it.
            request = _ChangeRequest(
                actor=system,
                channels=(suppression.channel,),
                target=SubscriptionState.UNSUBSCRIBED,
                source=Source.SUPPRESSION,
                occurred_at=now,
                now=now,
                batch_id=uuid.uuid4().hex,
                inbound_message_id=suppression.inbound_message_id,
                origin=OptOutOrigin.SUPPRESSION,
                via=suppression.address_key,
                timing="last_change",
                known_contacts=True,
            )
            applied.extend(self._apply_in_tx(tx, request, targets).changed)
        return applied

    def get_contact(self, actor: Actor, contact_id: str) -> Contact:
        """One contact of the actor's account.

        Raises:
            UnknownContactError: there is no such contact.
        """
        account = self._contact_scope(actor, contact_id)
        contact = self.store.get_contact(account, contact_id)
        if contact is None:
            raise UnknownContactError(account, [contact_id])
        return contact

    def list_contacts(
        self, actor: Actor, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Contact]:
        """Contacts ordered by id, a page at a time."""
        account = self._account_scope(actor, "list the contacts of the account")
        limit = _limit(limit)
        items = self.store.list_contacts(account, after=_decode_cursor(cursor), limit=limit + 1)
        return _page(items, limit, lambda contact: contact.id)

    # ------------------------------------------------------------------ changes

    def opt_in(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        *,
        evidence: Evidence | None,
        source: Source = Source.API,
        occurred_at: datetime | None = None,
        partial: bool = False,
        details: bool = True,
    ) -> ChangeResult:
        """Record that contacts agreed to receive messages on *channels* (never -> subscribed).

        Pairs that are unsubscribed are **skipped and reported**, never resubscribed: an import or
        a sign-up form cannot undo an opt-out (use :meth:`resubscribe`).  The contact's own
        opt-in (``Actor.contact``) is their explicit request and does resubscribe.
        """
        return self._apply(
            actor,
            contact_ids,
            channels,
            SubscriptionState.SUBSCRIBED,
            op=Transition.OPT_IN,
            source=source,
            evidence=evidence,
            occurred_at=occurred_at,
            partial=partial,
            details=details,
        )

    def unsubscribe(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        *,
        source: Source = Source.CONTACTS_PAGE,
        reason: str | None = None,
        occurred_at: datetime | None = None,
        partial: bool = False,
        details: bool = True,
    ) -> ChangeResult:
        """Unsubscribe many contacts from many channels in one atomic call.

        Any number of ids may be streamed; they are processed in chunks inside one transaction.
        Pairs already unsubscribed are reported as unchanged and get no event.

        Raises:
            NotAuthorizedError: the actor may not unsubscribe (e.g. a member): nothing changes.
            UnknownContactError: an id is not a contact of the account: nothing changes.
        """
        return self._apply(
            actor,
            contact_ids,
            channels,
            SubscriptionState.UNSUBSCRIBED,
            op=Transition.UNSUBSCRIBE,
            source=source,
            reason=validate_reason_code(reason),
            occurred_at=occurred_at,
            partial=partial,
            details=details,
        )

    def resubscribe(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        *,
        justification: Justification | None,
        source: Source = Source.CONTACTS_PAGE,
        occurred_at: datetime | None = None,
        partial: bool = False,
        details: bool = True,
    ) -> ChangeResult:
        """Resubscribe unsubscribed contacts (unsubscribed -> subscribed), all or nothing.

        Admins must give a :class:`~consentkit.model.Justification`; ``MISTAKEN_UNSUBSCRIBE`` is
        refused for pairs the contact unsubscribed themselves.  Pairs that were never subscribed
        are refused: record an opt-in with evidence for those.

        Raises:
            JustificationError: no or an unacceptable justification.
            NotAuthorizedError: members and the system may not resubscribe.
        """
        return self._apply(
            actor,
            contact_ids,
            channels,
            SubscriptionState.SUBSCRIBED,
            op=Transition.RESUBSCRIBE,
            source=source,
            justification=justification,
            occurred_at=occurred_at,
            partial=partial,
            details=details,
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
        source: Source = Source.INBOX,
        expected_version: int | None = None,
        occurred_at: datetime | None = None,
    ) -> ChangeResult:
        """The inbox toggle: set one contact's consent on one channel.

        Turning it on is an opt-in (evidence needed) for a never-subscribed pair and a
        resubscription (justification needed) for an unsubscribed one.  Pass the
        ``expected_version`` of the :class:`Subscription` the user was looking at to refuse the
        change if someone else changed it meanwhile.

        Raises:
            ConflictError: *expected_version* is stale.
        """
        _check_flag("subscribed", subscribed)
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
            target,
            op=None,
            source=source,
            justification=justification,
            evidence=evidence,
            occurred_at=occurred_at,
            expected_version=expected_version,
        )

    def _apply(
        self,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Iterable[Channel | str] | Channel | str,
        target: SubscriptionState,
        *,
        op: Transition | None,
        source: Source,
        justification: Justification | None = None,
        evidence: Evidence | None = None,
        reason: str | None = None,
        occurred_at: datetime | None = None,
        partial: bool = False,
        details: bool = True,
        expected_version: int | None = None,
    ) -> ChangeResult:
        _check_actor(actor)
        if not isinstance(source, Source):
            raise ValidationError("source", f"expected a Source, got {source!r}")
        if evidence is not None and not isinstance(evidence, Evidence):
            raise ValidationError(
                "evidence", f"expected an Evidence or None, got {type(evidence).__name__}"
            )
        if justification is not None and not isinstance(justification, Justification):
            raise ValidationError(
                "justification",
                f"expected a Justification or None, got {type(justification).__name__}",
            )
        _check_flag("partial", partial)
        _check_flag("details", details)
        chosen = self._channels(channels)
        ids = _ids(contact_ids)
        if occurred_at is not None:
            ensure_aware("occurred_at", occurred_at)
        with self.store.transaction(actor.account) as tx:
            # Read the clock only once the write lock is held: a call that waited for another
            # writer must not be recorded before that writer's changes.
            now = self._now()
            request = _ChangeRequest(
                actor=actor,
                channels=chosen,
                target=target,
                op=op,
                source=source,
                justification=justification,
                evidence=evidence,
                reason=reason,
                occurred_at=self._occurred("occurred_at", occurred_at, now),
                now=now,
                batch_id=uuid.uuid4().hex,
                partial=partial,
                details=details,
                expected_version=expected_version,
                timing="exact" if occurred_at is not None else "clock",
            )
            return self._apply_in_tx(tx, request, ids)

    def _apply_in_tx(
        self, tx: StoreTransaction, request: _ChangeRequest, contact_ids: Iterable[str]
    ) -> ChangeResult:
        """The heart of every change: check, decide per pair, write, inside *tx*."""
        run = _Run(self, tx, request)
        for chunk in _chunks(contact_ids, self._chunk_size):
            run.chunk(chunk)
        return run.result()

    # ------------------------------------------------------------------ reads

    def subscription(
        self, actor: Actor, contact_id: str, channel_: Channel | str
    ) -> Subscription | None:
        """The recorded subscription of one pair, or None if it was never subscribed."""
        account = self._contact_scope(actor, contact_id)
        return self.store.get_subscription(account, contact_id, self.channels.resolve(channel_))

    def state(self, actor: Actor, contact_id: str, channel_: Channel | str) -> SubscriptionState:
        """The consent state of one pair.

        Raises:
            UnknownContactError: the contact does not exist.
        """
        account = self._contact_scope(actor, contact_id)
        state = self.store.get_state(account, contact_id, self.channels.resolve(channel_))
        if state is SubscriptionState.NEVER_SUBSCRIBED and (
            self.store.get_contact(account, contact_id) is None
        ):
            raise UnknownContactError(account, [contact_id])
        return state

    def subscriptions(self, actor: Actor, contact_id: str) -> list[Subscription]:
        """Every recorded subscription of one contact, ordered by channel."""
        account = self._contact_scope(actor, contact_id)
        return self.store.subscriptions_of(account, contact_id)

    def can_send(self, actor: Actor, contact_id: str, channel_: Channel | str) -> bool:
        """Whether a message may be sent now: only ``SUBSCRIBED`` pairs may be messaged.

        Check it right before sending.  Unknown contacts and never-subscribed pairs give False.
        """
        account = self._contact_scope(actor, contact_id)
        state = self.store.get_state(account, contact_id, self.channels.resolve(channel_))
        return state is SubscriptionState.SUBSCRIBED

    def audience(
        self, actor: Actor, channel_: Channel | str, contact_ids: Iterable[str]
    ) -> set[str]:
        """The subset of *contact_ids* (any number, streamed) that may be messaged on a channel.

        Ids that are not contacts of the account are simply not in the result.
        """
        account = self._account_scope(actor, "filter the audience of the account")
        if isinstance(contact_ids, str):
            contact_ids = [contact_ids]
        return self.store.subscribed_among(account, self.channels.resolve(channel_), contact_ids)

    def list_subscriptions(
        self,
        actor: Actor,
        channel_: Channel | str,
        state: SubscriptionState = SubscriptionState.UNSUBSCRIBED,
        *,
        source: Source | None = None,
        reason: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Subscription]:
        """Pairs of one channel in one state (the "filter for unsubscribed contacts" view),
        optionally only those whose last change came from *source* or carried *reason*, ordered
        by contact id, a page at a time."""
        account = self._account_scope(actor, "list the consent of other contacts")
        if state is SubscriptionState.NEVER_SUBSCRIBED or not isinstance(
            state, SubscriptionState
        ):
            raise ValidationError(
                "state",
                "list SUBSCRIBED or UNSUBSCRIBED pairs; never-subscribed pairs have no record "
                "(list contacts instead)",
            )
        if source is not None and not isinstance(source, Source):
            raise ValidationError("source", f"expected a Source, got {source!r}")
        where = SubscriptionFilter(
            self.channels.resolve(channel_), state, source, validate_reason_code(reason)
        )
        limit = _limit(limit)
        items = self.store.list_subscriptions(
            account, where, after=_decode_cursor(cursor), limit=limit + 1
        )
        return _page(items, limit, lambda sub: sub.contact_id)

    def history(
        self, actor: Actor, contact_id: str, channel_: Channel | str | None = None
    ) -> list[ConsentEvent]:
        """The audit events of one contact (optionally one channel), oldest first."""
        account = self._contact_scope(actor, contact_id)
        ch = None if channel_ is None else self.channels.resolve(channel_)
        events = list(self.store.events(account, contact_id=contact_id, channel=ch))
        if not events and self.store.get_contact(account, contact_id) is None:
            raise UnknownContactError(account, [contact_id])
        return events

    def audit_log(
        self, actor: Actor, *, after: int | None = None, page_size: int = 1000
    ) -> Iterator[ConsentEvent]:
        """Every event of the account in append order, streamed a page at a time.

        Pass the ``sequence`` of the last event you saw as *after* to resume.
        """
        account = self._account_scope(actor, "read the account's audit log, only their history")
        page_size = _limit(page_size)
        position = after
        while True:
            page = list(self.store.events(account, after=position, limit=page_size))
            yield from page
            if len(page) < page_size:
                return
            position = page[-1].sequence

    # ------------------------------------------------------------------ inbound replies

    def handle_inbound(self, message: InboundMessage) -> InboundResult:
        """Act on a contact's reply: STOP unsubscribes, START resubscribes, HELP answers.

        The reply is matched with the account's keyword matcher.  An opt-out unsubscribes every
        contact with the sender's address, as the contact themselves (source inbound keyword), on
        every channel of the inbound channel's group; one from an address no contact has is put on
        the suppression list, so a later import cannot add it.  A possible opt-out ("please stop
        texting me") is applied or queued for review, per the account's settings.  START and
        UNSTOP undo the sender's own STOP from that address (see docs/policy.md); a keyword of the
        account's opt-in programme also subscribes never-subscribed pairs of its channel.

        Handling is idempotent per (account, channel, message id): a redelivered message returns
        the stored result (with ``replayed=True``) and writes nothing, also when deliveries race.

        Raises:
            ConflictError: a message with this channel and id was handled before with another
                sender or text: not a redelivery but a provider reusing ids; nothing changes.
        """
        if not isinstance(message, InboundMessage):
            raise ValidationError("message", f"expected an InboundMessage, got {message!r}")
        self.channels.resolve(message.channel, "message.channel")
        settings = self.settings_for(message.account).inbound
        match = settings.matcher_for(message.channel).classify(message.body)
        digest = hashlib.sha256(message.body.encode("utf-8", "surrogatepass")).hexdigest()
        last_conflict: ConflictError | None = None
        for _ in range(_INBOUND_ATTEMPTS):
            try:
                with self.store.transaction(message.account) as tx:
                    record = tx.get_inbound(message.channel, message.message_id)
                    if record is None:
                        result = self._handle_inbound_in_tx(
                            tx, message, match.classification, match.keyword
                        )
                        tx.put_inbound(
                            InboundRecord(
                                message.channel, message.message_id, digest, result.to_json()
                            )
                        )
                        return result
            except ConflictError as conflict:
                # A concurrent delivery of the same message (or a racing change of the same
                # pairs) committed first; the next attempt finds its result or fresh state.
                last_conflict = conflict
                continue
            return _redelivered(record, message, digest)
        assert last_conflict is not None
        raise last_conflict

    def _handle_inbound_in_tx(
        self,
        tx: StoreTransaction,
        message: InboundMessage,
        classification: Classification,
        keyword: str | None,
    ) -> InboundResult:
        account = message.account
        account_settings = self.settings_for(account)
        settings = account_settings.inbound
        now = self._now()
        received = self._occurred("received_at", message.received_at, now)
        key = address_key(message.channel, message.sender)
        # Locked before anything is read by address: a registration of this address waits, or
        # is waited for, so a STOP and the contact it concerns always meet.
        tx.lock_addresses([key])
        contact_ids = tuple(tx.find_contacts_by_address([key]).get(key, []))
        channels = self._scope(settings, message.channel)
        batch_id = uuid.uuid4().hex
        changed: list[tuple[str, Channel]] = []
        outcome = InboundOutcome.NONE
        reply: str | None = None
        honor_by: datetime | None = None
        review_item: str | None = None
        opt_out = classification is Classification.OPT_OUT or (
            classification is Classification.POSSIBLE_OPT_OUT
            and settings.possible_opt_out is PossibleOptOutAction.APPLY
        )
        if opt_out or classification is Classification.OPT_IN:
            _record_last_word(
                tx, account, key, channels=channels, received=received,
                message_id=message.message_id, opt_out=opt_out,
            )
        if opt_out:
            honor_by = settings.honor_by(message.channel, received, account_settings.timezone)
            reply = settings.templates.opt_out
            outcome = InboundOutcome.OPTED_OUT if contact_ids else InboundOutcome.SUPPRESSED
            reason = (
                "stop_keyword" if classification is Classification.OPT_OUT else "possible_opt_out"
            )
            for cid in contact_ids:
                changed.extend(
                    self._apply_in_tx(
                        tx,
                        _opt_out_request(
                            account, cid, channels=channels, key=key, received=received,
                            now=now, batch_id=batch_id, message_id=message.message_id,
                            reason=reason,
                        ),
                        [cid],
                    ).changed
                )
        elif classification is Classification.POSSIBLE_OPT_OUT:
            outcome = InboundOutcome.NEEDS_REVIEW
            honor_by = settings.honor_by(message.channel, received, account_settings.timezone)
            review_item = review_item_id(message.channel, message.message_id)
            tx.put_review_item(
                ReviewItem(
                    account=account,
                    id=review_item,
                    kind=ReviewKind.POSSIBLE_OPT_OUT,
                    channel=message.channel,
                    message_id=message.message_id,
                    sender=message.sender,
                    text=message.body[:MAX_REVIEW_TEXT],
                    contact_ids=contact_ids,
                    received_at=received,
                    honor_by=honor_by,
                )
            )
        elif classification is Classification.OPT_IN:
            for cid in contact_ids:
                changed.extend(
                    self._apply_in_tx(tx, _ChangeRequest(
                        actor=Actor.contact(account, cid),
                        channels=channels,
                        target=SubscriptionState.SUBSCRIBED,
                        source=Source.INBOUND_KEYWORD,
                        reason="start_keyword",
                        occurred_at=received,
                        now=now,
                        batch_id=batch_id,
                        inbound_message_id=message.message_id,
                        # START undoes only the contact's own opt-out from this address, and
                        # only when nothing happened to the pair since the START was received.
                        keep=lambda sub: _undone_by_start(sub, key, received),
                        known_contacts=True,
                    ), [cid]).changed
                )
            programme = settings.programme
            if programme is not None and keyword in programme.keywords:
                changed.extend(
                    self._programme_opt_in(
                        tx, message, contact_ids, received=received, now=now, batch_id=batch_id
                    )
                )
            if changed:
                outcome = InboundOutcome.OPTED_IN
                reply = settings.templates.opt_in
            elif contact_ids:
                outcome = InboundOutcome.NOTHING_TO_UNDO
            else:
                outcome = InboundOutcome.NO_CONTACT
        elif classification is Classification.HELP:
            outcome = InboundOutcome.HELP
            reply = settings.templates.help
        return InboundResult(
            account=account,
            message_id=message.message_id,
            channel=message.channel,
            sender=message.sender,
            classification=classification,
            keyword=keyword,
            outcome=outcome,
            contact_ids=contact_ids,
            channels=channels,
            changed=tuple(changed),
            reply=reply,
            honor_by=honor_by,
            received_at=received,
            batch_id=batch_id if changed else None,
            review_item=review_item,
        )

    def _programme_opt_in(
        self,
        tx: StoreTransaction,
        message: InboundMessage,
        contact_ids: Sequence[str],
        *,
        received: datetime,
        now: datetime,
        batch_id: str,
    ) -> list[tuple[str, Channel]]:
        """Subscribe the never-subscribed pairs of the channel a programme keyword came on, with
        the programme's wording as the evidence."""
        programme = self.settings_for(message.account).inbound.programme
        assert programme is not None
        evidence = Evidence(
            method="keyword",
            wording=programme.wording,
            wording_version=programme.wording_version,
            location=f"{message.channel.key}:{message.sender}",
            captured_at=received,
            reference=message.message_id,
        )
        changed: list[tuple[str, Channel]] = []
        for cid in contact_ids:
            request = _ChangeRequest(
                actor=Actor.contact(message.account, cid),
                channels=(message.channel,),
                target=SubscriptionState.SUBSCRIBED,
                op=Transition.OPT_IN,
                source=Source.INBOUND_KEYWORD,
                reason="keyword_opt_in",
                evidence=evidence,
                occurred_at=received,
                now=now,
                batch_id=batch_id,
                inbound_message_id=message.message_id,
                keep=lambda sub: sub is None,
                known_contacts=True,
            )
            result = self._apply_in_tx(tx, request, [cid])
            changed.extend((p.contact_id, p.channel) for p in result.changed)
        return changed

    def _scope(self, settings: InboundSettings, ch: Channel) -> tuple[Channel, ...]:
        """The channels an opt-out received on *ch* covers, *ch* first."""
        if settings.scope is OptOutScope.GROUP:
            group = self.channel_groups.group_of(ch)
            return (ch, *sorted(group - {ch}))
        return (ch,)

    # ------------------------------------------------------------------ review queue

    def review_items(
        self,
        actor: Actor,
        *,
        include_decided: bool = False,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[ReviewItem]:
        """The account's review queue, oldest first (open items only unless *include_decided*),
        a page at a time.  Use :meth:`ReviewItem.is_overdue` to make late ones stand out."""
        account = self._account_scope(actor, "read the account's review queue")
        _check_flag("include_decided", include_decided)
        limit = _limit(limit)
        after = _decode_review_cursor(_decode_cursor(cursor))
        items = self.store.list_review_items(
            account, include_decided=include_decided, after=after, limit=limit + 1
        )
        return _page(items, limit, _review_cursor)

    def decide_review(
        self,
        actor: Actor,
        item_id: str,
        decision: ReviewDecision | str,
        *,
        note: str,
    ) -> ReviewResolution:
        """Record an admin's decision on a review item.

        ``OPT_OUT`` applies the message as the contact's own opt-out, like a STOP delivered late
        (docs/policy.md): dated when it was received, or just after the pair's last change if that
        came later, and superseded where the contact's own later word answered it; it also records
        the address's opt-out;
        ``NOT_OPT_OUT`` changes nothing.  Both record who decided, when, and the note.

        Raises:
            NotAuthorizedError: the actor may not decide reviews (only admins, by default).
            ValidationError: no such item, or an invalid decision or note.
            ConflictError: the item was decided already.
        """
        _check_actor(actor)
        # check_review is optional in the Policy protocol: without it, the default's rule.
        check = getattr(self.policy, "check_review", AdminOnlyPolicy().check_review)
        refusal = check(actor)
        if refusal is not None:
            raise refusal
        validate_id("item_id", item_id)
        chosen = enum_value(ReviewDecision, "decision", decision)
        text = validate_text("note", note, max_length=2000, multiline=True)
        account = actor.account
        with self.store.transaction(account) as tx:
            now = self._now()
            item = tx.get_review_item(item_id)
            if item is None:
                raise ValidationError(
                    "item_id", f"{item_id!r} is not a review item of account {account!r}"
                )
            if item.decision is not None:
                when = "" if item.decided_at is None else f" at {item.decided_at.isoformat()}"
                raise ConflictError(
                    f"review item {item_id!r} was decided already ({item.decision.value}, by "
                    f"{item.decided_by}{when}); nothing was changed"
                )
            changed: list[PairRef] = []
            if chosen is ReviewDecision.OPT_OUT:
                changed = self._apply_reviewed_opt_out(tx, item, now)
            tx.decide_review_item(
                item_id, chosen, decided_by=str(actor), decided_at=now, note=text
            )
        decided = attrs.evolve(
            item, decision=chosen, decided_by=str(actor), decided_at=now, note=text
        )
        return ReviewResolution(item=decided, changed=tuple(changed))

    def _apply_reviewed_opt_out(
        self, tx: StoreTransaction, item: ReviewItem, now: datetime
    ) -> list[PairRef]:
        account = item.account
        key = address_key(item.channel, item.sender)
        tx.lock_addresses([key])
        channels = self._scope(self.settings_for(account).inbound, item.channel)
        _record_last_word(
            tx, account, key, channels=channels, received=item.received_at,
            message_id=item.message_id, opt_out=True,
        )
        batch_id = uuid.uuid4().hex
        present = set(item.contact_ids) - set(tx.missing_contacts(list(item.contact_ids)))
        changed: list[PairRef] = []
        for cid in item.contact_ids:
            if cid in present:
                request = _opt_out_request(
                    account, cid, channels=channels, key=key, received=item.received_at,
                    now=now, batch_id=batch_id, message_id=item.message_id,
                    reason="possible_opt_out",
                )
                changed.extend(self._apply_in_tx(tx, request, [cid]).changed)
        return changed

    # ------------------------------------------------------------------ trends

    def trends(
        self,
        actor: Actor,
        *,
        as_of: datetime | None = None,
        months: int = 12,
    ) -> TrendReport:
        """Subscriber trends of the actor's account: per channel, subscribed and unsubscribed
        totals now against one calendar month earlier (in the account's time zone), the monthly
        series for the last *months* months, and unsubscribe spike checks.

        The store answers from roll-ups, so the cost depends on months and channels, not on the
        number of contacts or events.
        """
        account = self._account_scope(actor, "read the account's trends")
        settings = self.settings_for(account)
        when = self._now() if as_of is None else ensure_aware("as_of", as_of)
        plan = plan_report(when, settings.timezone, months=months, spike_settings=settings.spikes)
        instants = plan.totals_instants()
        totals: dict[datetime, dict[Channel, ChannelTotals]] = {}
        for instant, raw in zip(instants, self.store.totals_at(account, instants), strict=True):
            per_channel: dict[Channel, dict[str, int]] = defaultdict(dict)
            for (ch, state), count in raw.items():
                per_channel[ch][state.value] = count
            totals[instant] = {
                ch: ChannelTotals(
                    subscribed=figures.get("subscribed", 0),
                    unsubscribed=figures.get("unsubscribed", 0),
                )
                for ch, figures in per_channel.items()
            }
        # One store call counts every elementary interval between all window edges; each window
        # is then a sum of consecutive elementary intervals.
        intervals = plan.count_intervals()
        edges = sorted({i.start for i in intervals} | {i.end for i in intervals})
        elementary = self.store.transition_counts(account, edges) if len(edges) > 1 else []
        position = {edge: index for index, edge in enumerate(edges)}
        counts: dict[Interval, dict[Channel, TransitionCounts]] = {}
        for interval in intervals:
            summed: dict[Channel, TransitionCounts] = defaultdict(TransitionCounts)
            for index in range(position[interval.start], position[interval.end]):
                for (ch, transition), count in elementary[index].items():
                    summed[ch] = summed[ch] + _counts_of(transition, count)
            counts[interval] = dict(summed)
        return plan.build(totals=totals, counts=counts)


@attrs.frozen
class _ChangeRequest:
    """One change as the engine runs it: who, which channels, to what, when and how.

    Attributes:
        actor: who asks.
        channels: the channels of every contact of the call.
        target: the state the pairs move to.
        op: the operation asked for (an opt-in skips unsubscribed pairs; a resubscription refuses
            never-subscribed ones); None for a plain "set the state" (the inbox toggle, inbound).
        source: where the request comes from.
        occurred_at: when it happened.
        now: the clock reading under the write lock (the events' ``recorded_at``).
        batch_id: shared by every event of the call.
        justification: for resubscriptions.
        evidence: for opt-ins.
        reason: a reason code.
        partial: report refused pairs instead of raising.
        details: list the changed and unchanged pairs in the result.
        expected_version: refuse the change unless the pair is at this version.
        inbound_message_id: the inbound message the change comes from.
        origin: who asks for an opt-out, as recorded on the pair; by default from the actor kind.
        via: the address an opt-out was sent from.
        timing: how ``occurred_at`` meets a pair's later change: ``"exact"`` refuses it (events of
            a pair are recorded in order); ``"clock"`` (no time was given) moves it to a fresh clock
            reading past the change; ``"last_change"`` (a late delivery) moves it to the change.
        known_contacts: the contact ids were read from the store in this transaction.
        keep: pairs for which it returns False are left out of the call entirely (inbound rules
            that depend on what the pair's record says).
    """

    actor: Actor
    channels: tuple[Channel, ...]
    target: SubscriptionState
    source: Source
    occurred_at: datetime
    now: datetime
    batch_id: str
    op: Transition | None = None
    justification: Justification | None = None
    evidence: Evidence | None = None
    reason: str | None = None
    partial: bool = False
    details: bool = True
    expected_version: int | None = None
    inbound_message_id: str | None = None
    origin: OptOutOrigin | None = None
    via: str | None = None
    timing: Literal["exact", "clock", "last_change"] = "exact"
    known_contacts: bool = False
    keep: Callable[[Subscription | None], bool] | None = None


_ORIGIN_OF_KIND: Final = {
    ActorKind.CONTACT: OptOutOrigin.CONTACT,
    ActorKind.ADMIN: OptOutOrigin.ADMIN,
    ActorKind.MEMBER: OptOutOrigin.MEMBER,
    ActorKind.SYSTEM: OptOutOrigin.SYSTEM,
}

_DecisionKey = tuple[
    Channel, SubscriptionState, ActorKind | None, Source | None, frozenset[OptOutOrigin]
]
_NO_ORIGINS: frozenset[OptOutOrigin] = frozenset()


class _Run:
    """One run of the change engine over the chunks of a call: admit each chunk, settle its time,
    decide each distinct situation once with the policy, and write."""

    def __init__(
        self, service: ConsentService, tx: StoreTransaction, request: _ChangeRequest
    ) -> None:
        self._service = service
        self._tx = tx
        self._request = request
        actor = request.actor
        self._own_request = actor.kind is ActorKind.CONTACT
        self._batch = ChangeBatch(
            account=actor.account,
            new_state=request.target,
            actor=actor,
            source=request.source,
            occurred_at=request.occurred_at,
            recorded_at=request.now,
            batch_id=request.batch_id,
            justification=request.justification,
            evidence=request.evidence,
            reason=request.reason,
            inbound_message_id=request.inbound_message_id,
            opted_out_by=(
                (request.origin or _ORIGIN_OF_KIND[actor.kind])
                if request.target is SubscriptionState.UNSUBSCRIBED
                else None
            ),
            opted_out_via=request.via if request.target is SubscriptionState.UNSUBSCRIBED else None,
        )
        self._decisions: dict[_DecisionKey, ConsentError | None] = {}
        # Bulk calls see mostly never-subscribed pairs: their decision keys are built once.
        never = SubscriptionState.NEVER_SUBSCRIBED
        self._never_keys: dict[Channel, _DecisionKey] = {
            ch: (ch, never, None, None, _NO_ORIGINS) for ch in request.channels
        }
        self.changed: list[PairRef] = []
        self.unchanged: list[PairRef] = []
        self.skipped: list[SkippedPair] = []
        self.refused: list[RefusedPair] = []
        self.changed_count = 0
        self.unchanged_count = 0

    # ---------------------------------------------------------------- steps

    def chunk(self, chunk: list[str]) -> None:
        """Admit, settle, decide and write one chunk of contact ids."""
        chunk = self._admit(chunk)
        current = self._tx.lock_subscriptions(chunk, self._request.channels)
        self._settle_time(current)
        writes: list[PairChange] = []
        notes: list[tuple[str, Channel]] = []
        for cid in chunk:
            for ch in self._request.channels:
                self._decide_pair(cid, ch, current.get((cid, ch)), writes, notes)
        if notes:
            self._tx.note_opt_outs(self._batch, notes)
        if writes:
            self._tx.write_changes(self._batch, writes)
            self.changed_count += len(writes)
            if self._request.details:
                self.changed.extend(PairRef(w.contact_id, w.channel) for w in writes)

    def _admit(self, chunk: list[str]) -> list[str]:
        """Refuse a contact acting for another, and unknown contacts (or report them)."""
        request = self._request
        actor = request.actor
        if self._own_request and any(cid != actor.id for cid in chunk):
            raise NotAuthorizedError(
                f"contact {actor.id!r} may change only their own consent, not another contact's"
            )
        missing = [] if request.known_contacts else self._tx.missing_contacts(chunk)
        if not missing:
            return chunk
        error = UnknownContactError(actor.account, missing)
        if not request.partial:
            raise error
        self.refused.extend(
            RefusedPair(cid, ch, error) for cid in missing for ch in request.channels
        )
        missing_set = set(missing)
        return [cid for cid in chunk if cid not in missing_set]

    def _settle_time(self, current: Mapping[tuple[str, Channel], Subscription]) -> None:
        """Move the change past the pairs' last change where the timing allows it."""
        timing = self._request.timing
        if timing == "exact" or not current:
            return
        latest = max(sub.updated_at for sub in current.values())
        batch = self._batch
        if latest <= batch.occurred_at:
            return
        if timing == "clock":
            # Stores that lock rows, not the whole store, let a call read the clock before it
            # waited for another transaction that then changed the pair.
            now = max(self._service._now(), latest)
            self._batch = attrs.evolve(batch, occurred_at=now, recorded_at=now)
        else:
            self._batch = attrs.evolve(batch, occurred_at=latest)

    def _decision(self, key: _DecisionKey, current: SubscriptionState) -> ConsentError | None:
        decision = self._decisions.get(key, _UNDECIDED)
        if decision is _UNDECIDED:
            request = self._request
            decision = self._decisions[key] = self._service.policy.check_change(
                ProposedChange(
                    actor=request.actor,
                    channel=key[0],
                    current=current,
                    current_changed_by=key[2],
                    current_source=key[3],
                    current_opted_out_by=key[4],
                    target=request.target,
                    source=request.source,
                    justification=request.justification,
                    evidence=request.evidence,
                )
            )
        return decision

    def _decide_pair(
        self,
        cid: str,
        ch: Channel,
        sub: Subscription | None,
        writes: list[PairChange],
        notes: list[tuple[str, Channel]],
    ) -> None:
        request = self._request
        if request.keep is not None and not request.keep(sub):
            return
        never = SubscriptionState.NEVER_SUBSCRIBED
        state = never if sub is None else sub.state
        if request.expected_version is not None:
            version = 0 if sub is None else sub.version
            if version != request.expected_version:
                raise ConflictError(
                    f"the subscription of {cid!r} on {ch.key} is at version {version}, not "
                    f"{request.expected_version}: somebody changed it meanwhile; reload it and "
                    "decide again"
                )
        if (
            request.op is Transition.OPT_IN
            and state is SubscriptionState.UNSUBSCRIBED
            and not self._own_request
        ):
            # An opt-in never resubscribes: the request is judged as an opt-in (may this actor
            # opt contacts in at all?) and the pair is then skipped and reported.
            error = self._decision(self._never_keys[ch], never)
            if error is None:
                self.skipped.append(SkippedPair(cid, ch, _SKIPPED_UNSUBSCRIBED))
            else:
                self._refuse(cid, ch, error)
            return
        key = (
            self._never_keys[ch]
            if sub is None
            else (ch, state, sub.changed_by, sub.source, sub.opted_out_by)
        )
        # The policy is asked before the no-op shortcut, so a member is refused whatever the
        # state of the pair.
        error = self._decision(key, state)
        if request.op is Transition.RESUBSCRIBE and state is never and not isinstance(
            error, NotAuthorizedError
        ):
            # Authorization errors come first so a member hears "ask an admin".
            error = ValidationError(
                "contact_ids",
                f"{cid!r} was never subscribed to {ch.key}, so there is nothing to resubscribe: "
                "record an opt-in with evidence instead",
            )
        if error is not None:
            self._refuse(cid, ch, error)
            return
        if state is request.target:
            self.unchanged_count += 1
            if request.details:
                self.unchanged.append(PairRef(cid, ch))
            if state is SubscriptionState.UNSUBSCRIBED:
                notes.append((cid, ch))
            return
        occurred_at = self._batch.occurred_at
        if sub is not None and occurred_at < sub.updated_at:
            raise ValidationError(
                "occurred_at",
                f"{occurred_at.isoformat()} is before the last recorded change of {cid!r} on "
                f"{ch.key} ({sub.updated_at.isoformat()}); events of a pair must be recorded in "
                "the order they happened",
            )
        writes.append(PairChange(cid, ch, state, 0 if sub is None else sub.version))

    def _refuse(self, cid: str, ch: Channel, error: ConsentError) -> None:
        if not self._request.partial:
            # A member is refused whatever the pair; naming one would mislead.
            if self._request.actor.kind is ActorKind.MEMBER:
                raise error
            raise _for_pair(error, cid, ch)
        self.refused.append(RefusedPair(cid, ch, error))

    def result(self) -> ChangeResult:
        """What the run did."""
        return ChangeResult(
            batch_id=self._request.batch_id,
            new_state=self._request.target,
            changed=tuple(self.changed),
            unchanged=tuple(self.unchanged),
            skipped=tuple(self.skipped),
            refused=tuple(self.refused),
            changed_count=self.changed_count,
            unchanged_count=self.unchanged_count,
        )


_SKIPPED_UNSUBSCRIBED = (
    "unsubscribed: an opt-in or import never resubscribes a contact; use resubscribe() with a "
    "justification"
)


_UNDOABLE_BY_START: Final = frozenset({OptOutOrigin.CONTACT, OptOutOrigin.SUPPRESSION})


def _undone_by_start(sub: Subscription | None, sender: str, received_at: datetime) -> bool:
    """Whether a START from *sender* received at *received_at* undoes the pair's opt-out: only one
    that took a subscription away, the contact's own (or its address's), sent from that same
    address, and received after every change and opt-out request of the pair."""
    return (
        sub is not None
        and sub.state is SubscriptionState.UNSUBSCRIBED
        # The opt-out took a subscription away: a pair's first event leaves never-subscribed and
        # states alternate after it, so an unsubscribed pair at version 1 was never subscribed,
        # and START must not turn that into consent.
        and sub.version >= 2
        and bool(sub.opted_out_by)
        and sub.opted_out_by <= _UNDOABLE_BY_START
        and sub.opted_out_via == sender
        and received_at > sub.updated_at
        and (sub.last_opt_out_at is None or received_at > sub.last_opt_out_at)
    )


def _answered_later(sub: Subscription | None, received_at: datetime) -> bool:
    """Whether the contact's own later word (a change the contact made after the message was
    received) already answered an opt-out received at *received_at*."""
    return (
        sub is not None
        and sub.state is SubscriptionState.SUBSCRIBED
        and sub.changed_by is ActorKind.CONTACT
        and sub.updated_at > received_at
    )


def _merged(old: Contact, new: Contact) -> Contact:
    """*old* with the addresses *new* gives (the ones it leaves out stay)."""
    handles = dict(old.handles)
    handles.update(new.handles)
    return Contact(
        new.account,
        new.id,
        phone=new.phone if new.phone is not None else old.phone,
        email=new.email if new.email is not None else old.email,
        handles=handles,
    )


def _record_last_word(
    tx: StoreTransaction,
    account: str,
    key: str,
    *,
    channels: Sequence[Channel],
    received: datetime,
    message_id: str,
    opt_out: bool,
) -> None:
    """Record an address's STOP (or its withdrawal by START), whether or not a contact has it."""
    tx.put_suppressions(
        [
            Suppression(
                account=account,
                address_key=key,
                channel=ch,
                occurred_at=received,
                source=Source.INBOUND_KEYWORD,
                inbound_message_id=message_id,
                active=opt_out,
            )
            for ch in channels
        ]
    )


def _opt_out_request(
    account: str,
    contact_id: str,
    *,
    channels: tuple[Channel, ...],
    key: str,
    received: datetime,
    now: datetime,
    batch_id: str,
    message_id: str,
    reason: str,
) -> _ChangeRequest:
    """The change an opt-out sent from address *key* makes for one contact with the address."""
    return _ChangeRequest(
        actor=Actor.contact(account, contact_id),
        channels=channels,
        target=SubscriptionState.UNSUBSCRIBED,
        op=Transition.UNSUBSCRIBE,
        source=Source.INBOUND_KEYWORD,
        reason=reason,
        occurred_at=received,
        now=now,
        batch_id=batch_id,
        inbound_message_id=message_id,
        via=key,
        # A STOP is honoured however late, after the pair's last change, unless the contact's own
        # later word already answered it.
        timing="last_change",
        keep=lambda sub: not _answered_later(sub, received),
        known_contacts=True,  # found by address in this transaction
    )


def _redelivered(record: InboundRecord, message: InboundMessage, digest: str) -> InboundResult:
    """The stored result of a redelivery, once it is sure to be the same message."""
    stored = InboundResult.from_json(record.result, replayed=True)
    differs = [
        what
        for what, same in (
            ("sender", stored.sender == message.sender),
            ("text", record.body_sha256 is None or record.body_sha256 == digest),
        )
        if not same
    ]
    if differs:
        raise ConflictError(
            f"message id {message.message_id!r} on {message.channel.key} was handled before "
            f"with another {' and '.join(differs)}: this is not a redelivery but a reused id "
            "(two providers, or one that numbers per channel). Nothing was changed; give each "
            "message a unique id, e.g. prefixed with its provider."
        )
    return stored


def _for_pair(error: ConsentError, contact_id: str, ch: Channel) -> ConsentError:
    """A copy of a policy refusal that names the pair it refused (decisions are shared between
    pairs, so the original is not modified)."""
    located = type(error).__new__(type(error))
    located.__dict__.update(error.__dict__)
    located.args = (f"contact {contact_id!r} on {ch.key}: {error}",)
    located.contact_id = contact_id  # type: ignore[attr-defined]
    located.channel = ch  # type: ignore[attr-defined]
    return located


def _counts_of(transition: Transition, count: int) -> TransitionCounts:
    if transition is Transition.OPT_IN:
        return TransitionCounts(opt_ins=count)
    if transition is Transition.UNSUBSCRIBE:
        return TransitionCounts(unsubscribes=count)
    return TransitionCounts(resubscribes=count)
