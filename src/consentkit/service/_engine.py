"""The change engine: one request object and the steps every consent change runs through.

A call is admitted chunk by chunk (existence, the contact actor's scope), its time is settled
against the pairs' last changes, the policy decides once per distinct situation, and the writes
are collected per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final, Literal

import attrs

from consentkit.channels import (
    Channel,
)
from consentkit.errors import (
    ChannelConsentRequiredError,
    ConflictError,
    ConsentError,
    NotAuthorizedError,
    UnknownContactError,
    ValidationError,
)
from consentkit.model import (
    Actor,
    ActorKind,
    Evidence,
    Justification,
    OptOutOrigin,
    Source,
    Subscription,
    SubscriptionState,
    Transition,
)
from consentkit.policy import Policy, ProposedChange
from consentkit.service._results import (
    ChangeResult,
    KnownVersions,
    PairRef,
    RefusedPair,
    SkippedPair,
)
from consentkit.storage.base import (
    ChangeBatch,
    PairChange,
    Situation,
    SituationKey,
    StagingTransaction,
    StoreTransaction,
    TopicTransaction,
)
from consentkit.topics import ever_subscribed

_UNDECIDED: ConsentError = ConsentError("placeholder for a policy decision not made yet")


@attrs.frozen
class ChangeRequest:
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

_DecisionKey = SituationKey
_NO_ORIGINS: frozenset[OptOutOrigin] = frozenset()


class ChangeRun:
    """One run of the change engine over the chunks of a call: admit each chunk, settle its time,
    decide each distinct situation once with the policy, and write."""

    def __init__(
        self,
        policy: Policy,
        now: Callable[[], datetime],
        tx: StoreTransaction,
        request: ChangeRequest,
    ) -> None:
        self._policy = policy
        self._now = now
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
        # The version of every pair listed in changed, and in unchanged, after the call.
        self.changed_versions: dict[PairRef, int] = {}
        self.unchanged_versions: dict[PairRef, int] = {}
        self.skipped: list[SkippedPair] = []
        self.refused: list[RefusedPair] = []
        # Subscribing a topic channel needs the contact's consent to the channel first: the
        # channels to look at, and per chunk the (contact, topic channel) pairs that lack it.
        self._topic_bases: tuple[Channel, ...] = (
            tuple(dict.fromkeys(ch.base for ch in request.channels if ch.topic is not None))
            if request.target is SubscriptionState.SUBSCRIBED
            else ()
        )
        self._without_channel: frozenset[tuple[str, Channel]] = frozenset()
        self.changed_count = 0
        self.unchanged_count = 0
        # Set-based when the store can and no pair needs a look at its own record (a keep rule,
        # an expected version): then the policy decides per situation inside the database.
        self._staging: StagingTransaction | None = (
            tx
            if request.keep is None
            and request.expected_version is None
            and isinstance(tx, StagingTransaction)
            else None
        )

    # ---------------------------------------------------------------- steps

    def chunk(self, chunk: list[str]) -> None:
        """Admit, settle, decide and write one chunk of contact ids."""
        chunk = self._admit(chunk)
        if self._topic_bases and chunk:
            self._without_channel = self._lacking_channel(chunk)
        if self._staging is not None and chunk and not self._without_channel:
            self._staged_chunk(self._staging, chunk)
            return
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
                versions = self.changed_versions
                for w in writes:
                    pair = PairRef(w.contact_id, w.channel)
                    self.changed.append(pair)
                    # write_changes stores every pair at expected_version + 1 (or raises).
                    versions[pair] = w.expected_version + 1

    def _staged_chunk(self, tx: StagingTransaction, chunk: list[str]) -> None:
        """One chunk, set-based: the policy decides each situation of the chunk's pairs once,
        and the store writes every admitted pair with set-based statements."""
        channels = self._request.channels
        tx.stage_contacts(chunk)
        situations = tx.staged_situations(channels)
        latest = [s.latest for s in situations if s.latest is not None]
        if latest:
            self._settle_latest(max(latest))
        plan = _Plan()
        for situation in situations:
            plan.add(situation, *self._decide_situation(situation.key))
        if plan.refused:
            self._refuse_staged(tx, plan.refused)
        occurred_at = self._batch.occurred_at
        late = [s.key for s in plan.writes if s.latest is not None and s.latest > occurred_at]
        if late:
            [pair] = tx.staged_pairs(channels, late, changed_after=occurred_at, limit=1)
            raise _out_of_order(occurred_at, pair.contact_id, pair.channel, None)
        self._report_staged(tx, plan)
        write_keys = [s.key for s in plan.writes]
        if not write_keys and not plan.notes:
            return
        written = tx.apply_staged(self._batch, channels, write_keys, plan.notes)
        expected = sum(s.pairs for s in plan.writes)
        if written != expected:
            raise ConflictError(
                f"{expected} pairs were to change but {written} did: they changed concurrently; "
                "re-read and retry"
            )
        self.changed_count += written

    def _report_staged(self, tx: StagingTransaction, plan: _Plan) -> None:
        """Count the unchanged pairs, and list the skipped ones (and with ``details`` the
        changed and unchanged ones with their versions after the call)."""
        channels = self._request.channels
        if plan.skipped:
            self.skipped.extend(
                SkippedPair(p.contact_id, p.channel, _SKIPPED_UNSUBSCRIBED)
                for p in tx.staged_pairs(channels, plan.skipped)
            )
        self.unchanged_count += sum(s.pairs for s in plan.unchanged)
        if not self._request.details:
            return
        listed = (
            (self.unchanged, self.unchanged_versions, [s.key for s in plan.unchanged], 0),
            (self.changed, self.changed_versions, [s.key for s in plan.writes], 1),
        )
        for into, versions, keys, step in listed:
            for pair in tx.staged_pairs(channels, keys) if keys else ():
                ref = PairRef(pair.contact_id, pair.channel)
                into.append(ref)
                versions[ref] = pair.version + step

    def _decide_situation(self, key: SituationKey) -> tuple[str, ConsentError | None]:
        """What to do with the pairs of one situation: ``"write"``, ``"unchanged"`` or
        ``"skip"``, or the error that refuses them (the rules of :meth:`_decide_pair`)."""
        request = self._request
        ch, state = key[0], key[1]
        never = SubscriptionState.NEVER_SUBSCRIBED
        if (
            request.op is Transition.OPT_IN
            and state is SubscriptionState.UNSUBSCRIBED
            and not self._own_request
        ):
            error = self._decision(self._never_keys[ch], never)
            return ("skip", None) if error is None else ("refuse", error)
        error = self._decision(key, state)
        if request.op is Transition.RESUBSCRIBE and state is never and not isinstance(
            error, NotAuthorizedError
        ):
            error = _NEVER_SUBSCRIBED_RESUBSCRIBE
        if error is not None:
            return "refuse", error
        if state is request.target:
            return "unchanged", None
        return "write", None

    def _refuse_staged(
        self, tx: StagingTransaction, refused: list[tuple[SituationKey, ConsentError]]
    ) -> None:
        """Refuse the pairs of the refused situations: raise for the first of them in staging
        order, or (``partial``) report each."""
        channels = self._request.channels
        errors = dict(refused)
        if not self._request.partial:
            [first] = tx.staged_pairs(channels, list(errors), limit=1)
            self._refuse(first.contact_id, first.channel, errors[first.key])
        for pair in tx.staged_pairs(channels, list(errors)):
            self._refuse(pair.contact_id, pair.channel, errors[pair.key])

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

    def _lacking_channel(self, chunk: list[str]) -> frozenset[tuple[str, Channel]]:
        """The (contact, topic channel) pairs of *chunk* whose contact never subscribed to the
        topic's channel: read before the topic pairs are locked (with the store's one-query
        read where it has one, else locked as every writer locks a channel's pair before its
        topics')."""
        tx = self._tx
        if isinstance(tx, TopicTransaction):
            # A pair once subscribed stays so in this sense: no lock needed, one query a channel.
            recorded = {base: tx.recorded_among(chunk, base) for base in self._topic_bases}
            return frozenset(
                (cid, ch)
                for ch in self._request.channels
                if ch.topic is not None
                for cid in chunk
                if cid not in recorded[ch.base]
            )
        current = tx.lock_subscriptions(chunk, self._topic_bases)
        return frozenset(
            (cid, ch)
            for cid in chunk
            for ch in self._request.channels
            if ch.topic is not None
            and ((sub := current.get((cid, ch.base))) is None or not ever_subscribed(sub))
        )

    def _settle_time(self, current: Mapping[tuple[str, Channel], Subscription]) -> None:
        """Move the change past the pairs' last change where the timing allows it."""
        if current:
            self._settle_latest(max(sub.updated_at for sub in current.values()))

    def _settle_latest(self, latest: datetime) -> None:
        """Move the change past *latest*, the pairs' last change, where the timing allows it."""
        timing = self._request.timing
        if timing == "exact":
            return
        batch = self._batch
        if latest <= batch.occurred_at:
            return
        if timing == "clock":
            # Stores that lock rows, not the whole store, let a call read the clock before it
            # waited for another transaction that then changed the pair.
            now = max(self._now(), latest)
            self._batch = attrs.evolve(batch, occurred_at=now, recorded_at=now)
        else:
            self._batch = attrs.evolve(batch, occurred_at=latest)

    def _decision(self, key: _DecisionKey, current: SubscriptionState) -> ConsentError | None:
        decision = self._decisions.get(key, _UNDECIDED)
        if decision is _UNDECIDED:
            request = self._request
            decision = self._decisions[key] = self._policy.check_change(
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
            error = _NEVER_SUBSCRIBED_RESUBSCRIBE
        if (
            self._without_channel
            and (cid, ch) in self._without_channel
            and not isinstance(error, NotAuthorizedError)
        ):
            base = ch.base.key
            error = ChannelConsentRequiredError(base, ch.key, [cid])
        if error is not None:
            self._refuse(cid, ch, error)
            return
        if sub is not None and state is request.target:
            self._unchanged(cid, ch, sub, notes)
            return
        occurred_at = self._batch.occurred_at
        if sub is not None and occurred_at < sub.updated_at:
            raise _out_of_order(occurred_at, cid, ch, sub.updated_at)
        writes.append(PairChange(cid, ch, state, 0 if sub is None else sub.version))

    def _unchanged(
        self, cid: str, ch: Channel, sub: Subscription, notes: list[tuple[str, Channel]]
    ) -> None:
        """Count a pair already in the target state (no event), keeping its version."""
        self.unchanged_count += 1
        if self._request.details:
            pair = PairRef(cid, ch)
            self.unchanged.append(pair)
            self.unchanged_versions[pair] = sub.version
        if sub.state is SubscriptionState.UNSUBSCRIBED:
            notes.append((cid, ch))

    def _refuse(self, cid: str, ch: Channel, error: ConsentError) -> None:
        if not self._request.partial:
            # A member is refused whatever the pair; naming one would mislead.
            if self._request.actor.kind is ActorKind.MEMBER:
                raise error
            raise for_pair(error, cid, ch)
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
            # Changed pairs first, then unchanged ones, as the result lists them (a pair met again
            # in a later chunk, unchanged by then, keeps its place among the changed ones).
            versions=KnownVersions({**self.changed_versions, **self.unchanged_versions}),
            detailed=self._request.details,
        )


@attrs.define
class _Plan:
    """What one staged chunk does with each of its situations."""

    writes: list[Situation] = attrs.Factory(list)
    notes: list[SituationKey] = attrs.Factory(list)
    refused: list[tuple[SituationKey, ConsentError]] = attrs.Factory(list)
    skipped: list[SituationKey] = attrs.Factory(list)
    unchanged: list[Situation] = attrs.Factory(list)

    def add(self, situation: Situation, action: str, error: ConsentError | None) -> None:
        key = situation.key
        if error is not None:
            self.refused.append((key, error))
        elif action == "skip":
            self.skipped.append(key)
        elif action == "unchanged":
            self.unchanged.append(situation)
            if key[1] is SubscriptionState.UNSUBSCRIBED:
                self.notes.append(key)
        else:
            self.writes.append(situation)


_NEVER_SUBSCRIBED_RESUBSCRIBE = ValidationError(
    "contact_ids",
    "was never subscribed, so there is nothing to resubscribe: record an opt-in with evidence "
    "instead",
)


def _out_of_order(
    occurred_at: datetime, cid: str, ch: Channel, updated_at: datetime | None
) -> ValidationError:
    when = "" if updated_at is None else f" ({updated_at.isoformat()})"
    return ValidationError(
        "occurred_at",
        f"{occurred_at.isoformat()} is before the last recorded change of {cid!r} on "
        f"{ch.key}{when}; events of a pair must be recorded in the order they happened",
    )


_SKIPPED_UNSUBSCRIBED = (
    "unsubscribed: an opt-in or import never resubscribes a contact; use resubscribe() with a "
    "justification"
)


_UNDOABLE_BY_START: Final = frozenset(
    {OptOutOrigin.CONTACT, OptOutOrigin.REVOKE_ALL, OptOutOrigin.SUPPRESSION}
)


def undone_by_start(
    sub: Subscription | None, sender: str, received_at: datetime, *, in_by_default: bool = False
) -> bool:
    """Whether a START from *sender* received at *received_at* undoes the pair's opt-out: only one
    that took a subscription away, the contact's own (or its address's), sent from that same
    address, and received after every change and opt-out request of the pair.  *in_by_default*:
    the pair is a topic the contact is in until they opt out (then even its first opt-out took
    something away; the channel stays the master switch)."""
    return (
        sub is not None
        and sub.state is SubscriptionState.UNSUBSCRIBED
        # The opt-out took a subscription away: a pair's first event leaves never-subscribed and
        # states alternate after it, so an unsubscribed pair at version 1 was never subscribed,
        # and START must not turn that into consent.
        and (sub.version >= 2 or in_by_default)
        and bool(sub.opted_out_by)
        and sub.opted_out_by <= _UNDOABLE_BY_START
        and sub.opted_out_via == sender
        and received_at > sub.updated_at
        and (sub.last_opt_out_at is None or received_at > sub.last_opt_out_at)
    )


def answered_later(sub: Subscription | None, received_at: datetime) -> bool:
    """Whether the contact's own later word (a change the contact made after the message was
    received) already answered an opt-out received at *received_at*."""
    return (
        sub is not None
        and sub.state is SubscriptionState.SUBSCRIBED
        and sub.changed_by is ActorKind.CONTACT
        and sub.updated_at > received_at
    )




def for_pair(error: ConsentError, contact_id: str, ch: Channel) -> ConsentError:
    """A copy of a policy refusal that names the pair it refused (decisions are shared between
    pairs, so the original is not modified)."""
    located = type(error).__new__(type(error))
    located.__dict__.update(error.__dict__)
    located.args = (f"contact {contact_id!r} on {ch.key}: {error}",)
    located.contact_id = contact_id  # type: ignore[attr-defined]
    located.channel = ch  # type: ignore[attr-defined]
    return located
