"""The consent service: the one entry point a host app uses.

It ties a :class:`~consentkit.policy.Policy`, a :class:`~consentkit.storage.Store` and a
:class:`~consentkit.clock.Clock` together.  Every mutating method goes through the policy, runs in
one store transaction (all or nothing) and writes one audit event per changed pair.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Generic, Literal, NamedTuple, TypeVar

import attrs

from consentkit.channels import DEFAULT_CHANNEL_GROUPS, Channel, ChannelGroups, channel
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
    Source,
    Subscription,
    SubscriptionState,
    Suppression,
    Transition,
    address_key,
    ensure_aware,
    validate_id,
    validate_reason_code,
)
from consentkit.policy import AdminOnlyPolicy, Policy, ProposedChange
from consentkit.settings import AccountSettings
from consentkit.storage.base import (
    CHUNK_SIZE,
    ChangeBatch,
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
        suppressed: pairs that started unsubscribed because their address had opted out before
            the contact existed.
    """

    created: int
    updated: int
    suppressed: tuple[PairRef, ...] = ()


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


def _page(items: Sequence[T], limit: int, key: Callable[[T], str]) -> Page[T]:
    """A page of the first *limit* of *items*, fetched as ``limit + 1`` to learn whether more
    follow; the cursor is the sort *key* of the page's last item."""
    page = tuple(items[:limit])
    return Page(page, _encode_cursor(key(page[-1])) if len(items) > limit else None)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {_MAX_LIMIT}, got {limit!r}")
    return limit


def _channels(channels: Iterable[Channel | str] | Channel | str) -> tuple[Channel, ...]:
    if isinstance(channels, (str, Channel)):
        channels = [channels]
    result = tuple(dict.fromkeys(channel(c) for c in channels))
    if not result:
        raise ValidationError("channels", "name at least one channel, e.g. [SMS]")
    return result


def _chunks(contact_ids: Iterable[str] | str, size: int) -> Iterator[list[str]]:
    if isinstance(contact_ids, str):
        contact_ids = [contact_ids]
    iterator = iter(contact_ids)
    while chunk := list(itertools.islice(iterator, size)):
        # Duplicates within a chunk are dropped here; one in a later chunk finds the pair already
        # changed by this transaction and counts as unchanged, so no id set grows with the input.
        yield list(dict.fromkeys(validate_id("contact_ids", cid) for cid in chunk))


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
    ) -> None:
        if not 1 <= chunk_size <= CHUNK_SIZE:
            raise ValidationError("chunk_size", f"must be from 1 to {CHUNK_SIZE}")
        self.store = store
        self.policy: Policy = policy if policy is not None else AdminOnlyPolicy()
        self.clock: Clock = clock if clock is not None else SystemClock()
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

    def _now(self) -> datetime:
        return ensure_aware("clock.now()", self.clock.now())

    def _occurred(self, occurred_at: datetime | None, now: datetime) -> datetime:
        if occurred_at is None:
            return now
        ensure_aware("occurred_at", occurred_at)
        if occurred_at > now + _FUTURE_TOLERANCE:
            raise ValidationError(
                "occurred_at", f"{occurred_at.isoformat()} is in the future; pass when it happened"
            )
        return occurred_at

    def _read_scope(self, actor: Actor, contact_id: str | None = None) -> str:
        _check_actor(actor)
        refusal = self.policy.check_read(actor)
        if refusal is not None:
            raise refusal
        if contact_id is not None:
            validate_id("contact_id", contact_id)
            if actor.kind is ActorKind.CONTACT and contact_id != actor.id:
                raise NotAuthorizedError(f"contact {actor.id!r} may only read their own consent")
        return actor.account

    def _account_scope(self, actor: Actor, what: str) -> str:
        """Scope of a read over the whole account, which a contact actor may not make."""
        account = self._read_scope(actor)
        if actor.kind is ActorKind.CONTACT:
            raise NotAuthorizedError(f"contacts may not {what}")
        return account

    # ------------------------------------------------------------------ contacts

    def upsert_contacts(self, actor: Actor, contacts: Iterable[Contact]) -> ContactsResult:
        """Register contacts or replace their addresses, all or nothing.

        A contact whose address opted out before it was registered (a STOP from an unknown
        number) starts unsubscribed on the suppressed channels.

        Raises:
            NotAuthorizedError: the policy refuses, or a contact belongs to another account.
            ValidationError: a contact is not a :class:`Contact`.
        """
        _check_actor(actor)
        refusal = self.policy.check_contact_write(actor)
        if refusal is not None:
            raise refusal
        account = actor.account
        created = updated = 0
        suppressed: list[PairRef] = []
        iterator = iter(contacts)
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
                    by_id[contact.id] = contact
                missing = set(tx.missing_contacts(list(by_id)))
                created += len(missing)
                updated += len(by_id) - len(missing)
                tx.put_contacts(list(by_id.values()))
                suppressed.extend(self._apply_suppressions(tx, actor, list(by_id.values()), now))
        return ContactsResult(created=created, updated=updated, suppressed=tuple(suppressed))

    def _apply_suppressions(
        self, tx: StoreTransaction, actor: Actor, contacts: Sequence[Contact], now: datetime
    ) -> list[PairRef]:
        keys_of = {c.id: c.address_keys() for c in contacts}
        keys = sorted(set().union(*keys_of.values()))
        if not keys:
            return []
        suppressions = tx.get_suppressions(keys)
        if not suppressions:
            return []
        applied: list[PairRef] = []
        system = Actor.system(actor.account, "suppression-list")
        for suppression in suppressions:
            targets = [cid for cid, keys in keys_of.items() if suppression.address_key in keys]
            result = self._apply_in_tx(
                tx,
                system,
                targets,
                (suppression.channel,),
                SubscriptionState.UNSUBSCRIBED,
                op=None,
                source=Source.SUPPRESSION,
                occurred_at=suppression.occurred_at,
                now=now,
                batch_id=uuid.uuid4().hex,
                only_never=True,
                inbound_message_id=suppression.inbound_message_id,
            )
            applied.extend(result.changed)
        return applied

    def get_contact(self, actor: Actor, contact_id: str) -> Contact:
        """One contact of the actor's account.

        Raises:
            UnknownContactError: there is no such contact.
        """
        account = self._read_scope(actor, contact_id)
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
        if justification is not None and not isinstance(justification, Justification):
            raise ValidationError("justification", "expected a Justification")
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
            raise ValidationError("evidence", "expected an Evidence")
        chosen = _channels(channels)
        if occurred_at is not None:
            ensure_aware("occurred_at", occurred_at)
        with self.store.transaction(actor.account) as tx:
            # Read the clock only once the write lock is held: a call that waited for another
            # writer must not be recorded before that writer's changes.
            now = self._now()
            occurred = self._occurred(occurred_at, now)
            return self._apply_in_tx(
                tx,
                actor,
                contact_ids,
                chosen,
                target,
                op=op,
                source=source,
                justification=justification,
                evidence=evidence,
                reason=reason,
                occurred_at=occurred,
                now=now,
                batch_id=uuid.uuid4().hex,
                partial=partial,
                details=details,
                expected_version=expected_version,
                after_last_change="clock" if occurred_at is None else None,
            )

    def _apply_in_tx(
        self,
        tx: StoreTransaction,
        actor: Actor,
        contact_ids: Iterable[str] | str,
        channels: Sequence[Channel],
        target: SubscriptionState,
        *,
        op: Transition | None,
        source: Source,
        occurred_at: datetime,
        now: datetime,
        batch_id: str,
        justification: Justification | None = None,
        evidence: Evidence | None = None,
        reason: str | None = None,
        partial: bool = False,
        details: bool = True,
        expected_version: int | None = None,
        only_never: bool = False,
        inbound_message_id: str | None = None,
        after_last_change: Literal["clock", "last_change"] | None = None,
        known_contacts: bool = False,
    ) -> ChangeResult:
        """The heart of every change: check, decide per pair, write, inside *tx*.

        *known_contacts* skips the check that the contacts exist, for ids the caller read from
        the store in this same transaction.

        Without *after_last_change*, a change that would be recorded before a pair's last change
        fails the order check.  With it, the change's time moves forward instead:

        * ``"clock"`` (the caller gave no time): to a fresh clock reading taken under the locks.
          Stores that lock rows, not the whole store, let a call read the clock before it waited
          for another transaction that then changed the pair.
        * ``"last_change"`` (a provider's late delivery): to the pair's last change, so a reply is
          honoured however late it arrives while each pair's log stays in order.
        """
        account = actor.account
        batch = ChangeBatch(
            account=account,
            new_state=target,
            actor=actor,
            source=source,
            occurred_at=occurred_at,
            recorded_at=now,
            batch_id=batch_id,
            justification=justification,
            evidence=evidence,
            reason=reason,
            inbound_message_id=inbound_message_id,
        )
        decisions: dict[
            tuple[Channel, SubscriptionState, ActorKind | None, Source | None], ConsentError | None
        ] = {}
        changed: list[PairRef] = []
        unchanged: list[PairRef] = []
        skipped: list[SkippedPair] = []
        refused: list[RefusedPair] = []
        changed_count = unchanged_count = 0
        never = SubscriptionState.NEVER_SUBSCRIBED
        unsubscribed = SubscriptionState.UNSUBSCRIBED
        own_request = actor.kind is ActorKind.CONTACT
        # Bulk calls see mostly never-subscribed pairs: their decision keys are built once.
        never_keys = {ch: (ch, never, None, None) for ch in channels}
        for given in _chunks(contact_ids, self._chunk_size):
            chunk = given
            if own_request and any(cid != actor.id for cid in chunk):
                raise NotAuthorizedError(
                    f"contact {actor.id!r} may change only their own consent, not another contact's"
                )
            missing = [] if known_contacts else tx.missing_contacts(chunk)
            if missing:
                error = UnknownContactError(account, missing)
                if not partial:
                    raise error
                missing_set = set(missing)
                refused.extend(
                    RefusedPair(cid, ch, error) for cid in missing for ch in channels
                )
                chunk = [cid for cid in chunk if cid not in missing_set]
            current = tx.lock_subscriptions(chunk, channels)
            if after_last_change is not None and current:
                latest = max(sub.updated_at for sub in current.values())
                if latest > occurred_at:
                    if after_last_change == "clock":
                        now = max(self._now(), latest)
                        occurred_at = now
                        batch = attrs.evolve(batch, occurred_at=now, recorded_at=now)
                    else:
                        occurred_at = latest
                        batch = attrs.evolve(batch, occurred_at=latest)
            writes: list[PairChange] = []
            for cid in chunk:
                for ch in channels:
                    sub = current.get((cid, ch)) if current else None
                    state = never if sub is None else sub.state
                    if only_never and state is not never:
                        continue
                    if expected_version is not None:
                        version = 0 if sub is None else sub.version
                        if version != expected_version:
                            raise ConflictError(
                                f"the subscription of {cid!r} on {ch.key} is at version "
                                f"{version}, not {expected_version}: somebody changed it "
                                "meanwhile; reload it and decide again"
                            )
                    if state is target:
                        unchanged_count += 1
                        if details:
                            unchanged.append(PairRef(cid, ch))
                        continue
                    if op is Transition.OPT_IN and state is unsubscribed and not own_request:
                        skipped.append(
                            SkippedPair(
                                cid,
                                ch,
                                "unsubscribed: an opt-in or import never resubscribes a contact; "
                                "use resubscribe() with a justification",
                            )
                        )
                        continue
                    error_for_pair: ConsentError | None
                    key = (
                        never_keys[ch]
                        if sub is None
                        else (ch, state, sub.changed_by, sub.source)
                    )
                    error_for_pair = decisions.get(key, _UNDECIDED)
                    if error_for_pair is _UNDECIDED:
                        error_for_pair = decisions[key] = self.policy.check_change(
                            ProposedChange(
                                actor=actor,
                                channel=ch,
                                current=state,
                                current_changed_by=key[2],
                                current_source=key[3],
                                target=target,
                                source=source,
                                justification=justification,
                                evidence=evidence,
                            )
                        )
                    if (
                        op is Transition.RESUBSCRIBE
                        and state is never
                        and not isinstance(error_for_pair, NotAuthorizedError)
                    ):
                        # Authorization errors come first so a member hears "ask an admin".
                        error_for_pair = ValidationError(
                            "contact_ids",
                            f"{cid!r} was never subscribed to {ch.key}, so there is nothing to "
                            "resubscribe: record an opt-in with evidence instead",
                        )
                    if error_for_pair is not None:
                        if not partial:
                            # A member is refused whatever the pair; naming one would mislead.
                            if actor.kind is ActorKind.MEMBER:
                                raise error_for_pair
                            raise _for_pair(error_for_pair, cid, ch)
                        refused.append(RefusedPair(cid, ch, error_for_pair))
                        continue
                    if sub is not None and occurred_at < sub.updated_at:
                        raise ValidationError(
                            "occurred_at",
                            f"{occurred_at.isoformat()} is before the last recorded change of "
                            f"{cid!r} on {ch.key} ({sub.updated_at.isoformat()}); events of a "
                            "pair must be recorded in the order they happened",
                        )
                    writes.append(PairChange(cid, ch, state, 0 if sub is None else sub.version))
            if writes:
                tx.write_changes(batch, writes)
                changed_count += len(writes)
                if details:
                    changed.extend(PairRef(w.contact_id, w.channel) for w in writes)
        return ChangeResult(
            batch_id=batch_id,
            new_state=target,
            changed=tuple(changed),
            unchanged=tuple(unchanged),
            skipped=tuple(skipped),
            refused=tuple(refused),
            changed_count=changed_count,
            unchanged_count=unchanged_count,
        )

    # ------------------------------------------------------------------ reads

    def subscription(
        self, actor: Actor, contact_id: str, channel_: Channel | str
    ) -> Subscription | None:
        """The recorded subscription of one pair, or None if it was never subscribed."""
        account = self._read_scope(actor, contact_id)
        return self.store.get_subscription(account, contact_id, channel(channel_))

    def state(self, actor: Actor, contact_id: str, channel_: Channel | str) -> SubscriptionState:
        """The consent state of one pair.

        Raises:
            UnknownContactError: the contact does not exist.
        """
        account = self._read_scope(actor, contact_id)
        state = self.store.get_state(account, contact_id, channel(channel_))
        if state is SubscriptionState.NEVER_SUBSCRIBED and (
            self.store.get_contact(account, contact_id) is None
        ):
            raise UnknownContactError(account, [contact_id])
        return state

    def subscriptions(self, actor: Actor, contact_id: str) -> list[Subscription]:
        """Every recorded subscription of one contact, ordered by channel."""
        account = self._read_scope(actor, contact_id)
        return self.store.subscriptions_of(account, contact_id)

    def can_send(self, actor: Actor, contact_id: str, channel_: Channel | str) -> bool:
        """Whether a message may be sent now: only ``SUBSCRIBED`` pairs may be messaged.

        Check it right before sending.  Unknown contacts and never-subscribed pairs give False.
        """
        account = self._read_scope(actor, contact_id)
        state = self.store.get_state(account, contact_id, channel(channel_))
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
        return self.store.subscribed_among(account, channel(channel_), contact_ids)

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
        where = SubscriptionFilter(channel(channel_), state, source, validate_reason_code(reason))
        limit = _limit(limit)
        items = self.store.list_subscriptions(
            account, where, after=_decode_cursor(cursor), limit=limit + 1
        )
        return _page(items, limit, lambda sub: sub.contact_id)

    def history(
        self, actor: Actor, contact_id: str, channel_: Channel | str | None = None
    ) -> list[ConsentEvent]:
        """The audit events of one contact (optionally one channel), oldest first."""
        account = self._read_scope(actor, contact_id)
        ch = None if channel_ is None else channel(channel_)
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
        texting me") is applied or recorded for review, per the account's settings.  START,
        UNSTOP and YES resubscribe the sender as their own explicit request.

        Handling is idempotent per (account, message id): a redelivered message returns the stored
        result (with ``replayed=True``) and writes nothing, also when deliveries race.
        """
        if not isinstance(message, InboundMessage):
            raise ValidationError("message", f"expected an InboundMessage, got {message!r}")
        settings = self.settings_for(message.account).inbound
        match = settings.matcher.classify(message.body)
        last_conflict: ConflictError | None = None
        for _ in range(_INBOUND_ATTEMPTS):
            try:
                with self.store.transaction(message.account) as tx:
                    stored = tx.get_inbound_result(message.message_id)
                    if stored is not None:
                        return InboundResult.from_json(stored, replayed=True)
                    result = self._handle_inbound_in_tx(tx, message, match.classification,
                                                        match.keyword)
                    tx.put_inbound_result(message.message_id, result.to_json())
                    return result
            except ConflictError as conflict:
                # A concurrent delivery of the same message (or a racing change of the same
                # pairs) committed first; the next attempt finds its result or fresh state.
                last_conflict = conflict
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
        received = self._occurred(message.received_at, now)
        key = address_key(message.channel, message.sender)
        contact_ids = tuple(tx.find_contacts_by_address([key]).get(key, []))
        if settings.scope is OptOutScope.GROUP:
            group = self.channel_groups.group_of(message.channel)
            channels = (message.channel, *sorted(group - {message.channel}))
        else:
            channels = (message.channel,)
        batch_id = uuid.uuid4().hex
        changed: list[tuple[str, Channel]] = []
        outcome = InboundOutcome.NONE
        reply: str | None = None
        honor_by: datetime | None = None
        opt_out = classification is Classification.OPT_OUT or (
            classification is Classification.POSSIBLE_OPT_OUT
            and settings.possible_opt_out is PossibleOptOutAction.APPLY
        )
        if opt_out:
            honor_by = settings.honor_by(message.channel, received, account_settings.timezone)
            reply = settings.templates.opt_out
            reason = (
                "stop_keyword"
                if classification is Classification.OPT_OUT
                else "possible_opt_out"
            )
            if contact_ids:
                outcome = InboundOutcome.OPTED_OUT
                for cid in contact_ids:
                    result = self._apply_in_tx(
                        tx,
                        Actor.contact(account, cid),
                        [cid],
                        channels,
                        SubscriptionState.UNSUBSCRIBED,
                        op=Transition.UNSUBSCRIBE,
                        source=Source.INBOUND_KEYWORD,
                        reason=reason,
                        occurred_at=received,
                        after_last_change="last_change",
                        now=now,
                        batch_id=batch_id,
                        inbound_message_id=message.message_id,
                        known_contacts=True,  # found by address in this transaction
                    )
                    changed.extend((p.contact_id, p.channel) for p in result.changed)
            else:
                outcome = InboundOutcome.SUPPRESSED
                tx.add_suppressions(
                    [
                        Suppression(
                            account=account,
                            address_key=key,
                            channel=ch,
                            occurred_at=received,
                            source=Source.INBOUND_KEYWORD,
                            inbound_message_id=message.message_id,
                        )
                        for ch in channels
                    ]
                )
        elif classification is Classification.POSSIBLE_OPT_OUT:
            outcome = InboundOutcome.NEEDS_REVIEW
            honor_by = settings.honor_by(message.channel, received, account_settings.timezone)
        elif classification is Classification.OPT_IN:
            if not contact_ids:
                outcome = InboundOutcome.NO_CONTACT
            else:
                outcome = InboundOutcome.OPTED_IN
                reply = settings.templates.opt_in
                for cid in contact_ids:
                    # START subscribes the channel the contact wrote from, and undoes the shared
                    # opt-out of the group only where a STOP unsubscribed a pair that was
                    # subscribed before (version >= 2: a pair's only way into UNSUBSCRIBED at
                    # version 1 is from never-subscribed, which START must not turn into consent).
                    current = tx.lock_subscriptions([cid], channels)
                    targets = [
                        ch
                        for ch in channels
                        if ch == message.channel or _undone_by_start(current.get((cid, ch)))
                    ]
                    result = self._apply_in_tx(
                        tx,
                        Actor.contact(account, cid),
                        [cid],
                        targets,
                        SubscriptionState.SUBSCRIBED,
                        op=None,
                        source=Source.INBOUND_KEYWORD,
                        reason="start_keyword",
                        occurred_at=received,
                        after_last_change="last_change",
                        now=now,
                        batch_id=batch_id,
                        inbound_message_id=message.message_id,
                        known_contacts=True,  # found by address in this transaction
                    )
                    changed.extend((p.contact_id, p.channel) for p in result.changed)
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
        )

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


def _undone_by_start(sub: Subscription | None) -> bool:
    return (
        sub is not None
        and sub.state is SubscriptionState.UNSUBSCRIBED
        and sub.version >= 2
        and sub.changed_by is ActorKind.CONTACT
        and sub.source is Source.INBOUND_KEYWORD
    )


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
