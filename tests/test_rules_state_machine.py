"""A model-based test of the consent rules of docs/policy.md against every store.

A hypothesis :class:`RuleBasedStateMachine` drives random sequences of every public mutating call
(contacts with shared and changing phone numbers, opt-ins, unsubscribes, resubscriptions, inbox
toggles, inbound STOP/START/HELP/possible opt-outs delivered on time, late and twice) by every kind
of actor of two accounts against a real store, and against :class:`RulesModel`: a small model of
the rules written from docs/policy.md alone (plain dicts, no consentkit logic).  After every step
the store's states, ``can_send``, subscriptions (who opted out, via which address), histories and
audit logs must equal the model's, and ``check_replay`` must pass.

The service declares one topic (``promotions``: marketing, opt-in, surviving no channel
unsubscribe), and the consent calls also pick its topic channel ``sms/promotions``, a pair of its
own under the same rules, plus docs/topics.md's rule that a topic is subscribed only once its
contact has consent to the channel (never-subscribed SMS at the start of the call refuses it with
``ChannelConsentRequiredError``).  Inbound STOP/START (default scope), suppressions and unreachable
reports concern the channels only, and ``can_send`` of the topic channel needs both layers
subscribed.

Readings of docs/policy.md where the text leaves room (each the safer one):

* The suppression of an address that joins a contact is applied at the time of the join (the
  ``upsert_contacts`` call), so a START received before the join never undoes it.
* A STOP honoured after later changes is recorded, for all the pairs of one contact it covers, at
  the latest change of any of them (never earlier than a change it follows; a later record only
  makes a START less likely to undo it).
* A STOP is superseded only when the pair is subscribed by the contact's own change made after
  the STOP was received; an admin's later resubscription does not supersede it.
* An address's last word per channel is the latest-received STOP or START (a START is recorded
  even when the address had no suppression); at equal times the STOP wins ("ties go to the
  opt-out").
* A STOP that changes nothing is ``SUPERSEDED`` (no confirmation) as soon as one pair it reaches
  was answered by the contact's later word, even if other pairs were already unsubscribed: a
  confirmation would be false for that pair.
* A late STOP reaches the contacts that left the sender's number at or after its receipt; a
  START (and any other message) reaches only the contacts that have the number now ("a contact
  that has the sender's address"), so a late START never resubscribes a contact that moved away.
* An opt-in call is judged as an opt-in (evidence needed) also for the unsubscribed pairs it then
  skips.
* When several reasons refuse one call (an unknown contact and a member, say), any of their error
  classes is accepted.

Stores: a fresh in-memory store and a fresh SQLite file per example; one PostgreSQL schema per
run (``CONSENTKIT_TEST_POSTGRES_DSN``; skipped without it), emptied before each example.  Every
example also numbers its two accounts afresh.  By default the in-memory store gets 200 examples of
up to 50 steps, SQLite 80 and PostgreSQL 40 of up to 30; ``CONSENTKIT_SOAK_EXAMPLES`` gives every
store that many examples of up to 50 steps (``make soak`` runs 2,000).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from consentkit.channels import EMAIL, MMS, RCS, SMS, WHATSAPP, Channel
from consentkit.errors import (
    ChannelConsentRequiredError,
    ConflictError,
    ConsentError,
    JustificationError,
    NotAuthorizedError,
    UnknownContactError,
    ValidationError,
)
from consentkit.inbound import InboundMessage, InboundOutcome, InboundResult
from consentkit.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    Subscription,
    SubscriptionState,
)
from consentkit.service import ChangeResult, ConsentService, ContactsResult
from consentkit.storage.base import Store
from consentkit.storage.memory import InMemoryStore
from consentkit.storage.sqlite import SQLiteStore
from consentkit.testing import FakeClock, check_replay
from consentkit.topics import MessageClass, Topic, TopicDefault
from tests.storage._pg_support import DSN, SKIP_REASON, new_schema

R = TypeVar("R")

NEVER = SubscriptionState.NEVER_SUBSCRIBED
SUBSCRIBED = SubscriptionState.SUBSCRIBED
UNSUBSCRIBED = SubscriptionState.UNSUBSCRIBED

_SOAK = os.environ.get("CONSENTKIT_SOAK_EXAMPLES")
# Without CONSENTKIT_SOAK_EXAMPLES each store gets what fits a quick `make test` (the in-memory
# store is cheap, so it explores most); with it, every store gets that many examples.
EXAMPLES = {
    store: int(_SOAK) if _SOAK else default
    for store, default in (("memory", 200), ("sqlite", 80), ("postgres", 40))
}
STEPS = {
    store: 50 if _SOAK and int(_SOAK) > 200 else default
    for store, default in (("memory", 50), ("sqlite", 30), ("postgres", 30))
}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

ACCOUNT_PREFIXES = ("acme", "globex")
CONTACT_IDS = (("a1", "a2", "a3", "a4"), ("b1", "b2", "b3", "b4"))
PHONES = ("+14155550101", "+14155550102", "+14155550103")
UNKNOWN_PHONE = "+14155550199"  # no contact ever has it
EMAILS = ("pat@example.com", "shared@example.com")
# One declared topic: marketing, opt-in by default, and no class survives a channel unsubscribe
# (no surviving_classes), so its topic channel may be sent to only when both layers are
# subscribed (rows 1, 3, 4, 5 and 10 of the truth table of docs/topics.md).
PROMOTIONS = Topic("promotions", "Offers", MessageClass.MARKETING, TopicDefault.OPT_IN)
SMS_PROMOTIONS = SMS.with_topic("promotions")
CHANNEL_OF_TOPIC = {SMS_PROMOTIONS: SMS}
"""The channel pair each topic channel's pair lives under (the master switch)."""
API_CHANNELS = (SMS, MMS, WHATSAPP, EMAIL, SMS_PROMOTIONS)
ALL_CHANNELS = (SMS, MMS, RCS, WHATSAPP, EMAIL)
"""The channels themselves: the only ones addresses, suppressions and inbound messages reach."""
CHECKED_CHANNELS = (*ALL_CHANNELS, SMS_PROMOTIONS)
"""Every pair the invariant compares: the channels and the topic channel."""
INBOUND_CHANNELS = (SMS, MMS, WHATSAPP)
SMS_GROUP = frozenset({SMS, MMS, RCS})
PHONE_CHANNELS = (SMS, MMS, RCS, WHATSAPP)

# Weighted towards the actors that may change consent, so sequences get somewhere.
ACTORS = (
    "admin", "admin", "admin", "contact", "contact", "contact", "system", "system",
    "member", "other_contact", "foreign",
)
WAITS = (0, 1, 1, 20, 60, 60, 300, 900)
BODIES = ("STOP", "START", "STOP", "START", "yes", "HELP", "please stop texting me", "thanks")

ORIGIN_OF = {
    ActorKind.ADMIN: OptOutOrigin.ADMIN,
    ActorKind.SYSTEM: OptOutOrigin.SYSTEM,
    ActorKind.CONTACT: OptOutOrigin.CONTACT,
}
CONTACTS_OWN = frozenset({OptOutOrigin.CONTACT, OptOutOrigin.SUPPRESSION})


def group_of(ch: Channel) -> frozenset[Channel]:
    """The channels one inbound STOP on *ch* covers (SMS, MMS and RCS together, others alone)."""
    return SMS_GROUP if ch in SMS_GROUP else frozenset({ch})


def phone_key(phone: str) -> str:
    """The address key of a phone number."""
    return f"phone:{phone}"


def email_key(email: str) -> str:
    """The address key of an email address."""
    return f"email:{email.lower()}"


# ---------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class EventModel:
    """One expected audit event of a pair."""

    previous: SubscriptionState
    new: SubscriptionState
    kind: ActorKind
    actor_id: str
    at: datetime


@dataclass
class PairModel:
    """What the rules say about one (account, contact, channel) pair."""

    state: SubscriptionState = NEVER
    origins: set[OptOutOrigin] = field(default_factory=set)
    via: str | None = None
    changed_at: datetime | None = None
    changed_by: ActorKind | None = None
    last_opt_out_at: datetime | None = None
    events: list[EventModel] = field(default_factory=list)


@dataclass
class Word:
    """An address's last word on one channel: a STOP (active) or a START, and when."""

    active: bool
    at: datetime


@dataclass
class Expected:
    """What the model predicts of one call: the acceptable errors (empty: it succeeds) and,
    when it succeeds, the pairs that change (get an event) and those only noted."""

    errors: frozenset[type[ConsentError]] = frozenset()
    changed: set[tuple[str, Channel]] = field(default_factory=set)
    noted: set[tuple[str, Channel]] = field(default_factory=set)
    skipped: set[tuple[str, Channel]] = field(default_factory=set)
    unreachable: set[tuple[str, Channel]] = field(default_factory=set)
    created: int = 0
    updated: int = 0


@dataclass
class ExpectedInbound:
    """What the model predicts of one inbound message."""

    outcome: InboundOutcome
    contact_ids: frozenset[str]
    changed: set[tuple[str, Channel]]
    received: datetime


# A pair decision: ("change", new state), ("note", None), ("skip", None), ("none", None), or
# ("error", None) with the error classes beside it.
Decision = tuple[str, SubscriptionState | None, frozenset[type[ConsentError]]]
_NONE: Decision = ("none", None, frozenset())
_NOTE: Decision = ("note", None, frozenset())
_SKIP: Decision = ("skip", None, frozenset())


def _change(state: SubscriptionState) -> Decision:
    return ("change", state, frozenset())


def _error(*classes: type[ConsentError]) -> Decision:
    return ("error", None, frozenset(classes))


class RulesModel:
    """The rules of docs/policy.md on plain dicts: contacts, pairs, address words, messages."""

    stop_wins_ties = True
    """A STOP received at the same instant as the address's START is its last word."""
    only_stop_reaches_departed = True
    """Only a STOP reaches a contact that left the number after the message was received; a
    START reaches the contacts that have the number ("a contact that has the sender's
    address")."""

    def __init__(self, accounts: tuple[str, ...]) -> None:
        self.contacts: dict[str, dict[str, tuple[str | None, str | None]]] = {
            account: {} for account in accounts
        }
        self.pairs: dict[tuple[str, str, Channel], PairModel] = {}
        self.words: dict[tuple[str, str, Channel], Word] = {}
        self.handled: dict[tuple[str, Channel, str], ExpectedInbound] = {}
        self.departures: dict[tuple[str, str, str], datetime] = {}
        """(account, phone, contact) -> when the contact last left that phone number."""

    def pair(self, account: str, cid: str, ch: Channel) -> PairModel:
        """The model of one pair (a never-subscribed one when nothing happened to it)."""
        key = (account, cid, ch)
        if key not in self.pairs:
            self.pairs[key] = PairModel()
        return self.pairs[key]

    # ---------------------------------------------------------------- writing a pair

    def _unsubscribe(
        self,
        pair: PairModel,
        actor: Actor,
        origin: OptOutOrigin,
        at: datetime,
        *,
        via: str | None = None,
    ) -> None:
        pair.events.append(EventModel(pair.state, UNSUBSCRIBED, actor.kind, actor.id, at))
        pair.state = UNSUBSCRIBED
        pair.origins = {origin}
        pair.via = via
        pair.changed_at = at
        pair.changed_by = actor.kind
        self._asked(pair, at)

    def _note(self, pair: PairModel, origin: OptOutOrigin, at: datetime) -> None:
        pair.origins.add(origin)
        self._asked(pair, at)

    @staticmethod
    def _asked(pair: PairModel, at: datetime) -> None:
        if pair.last_opt_out_at is None or at > pair.last_opt_out_at:
            pair.last_opt_out_at = at

    @staticmethod
    def _subscribe(pair: PairModel, actor: Actor, at: datetime) -> None:
        pair.events.append(EventModel(pair.state, SUBSCRIBED, actor.kind, actor.id, at))
        pair.state = SUBSCRIBED
        pair.origins = set()
        pair.via = None
        pair.changed_at = at
        pair.changed_by = actor.kind

    # ---------------------------------------------------------------- consent calls

    def _decide(
        self,
        op: str,
        kind: ActorKind,
        pair: PairModel,
        evidence: bool,
        reason: ResubscribeReason | None,
    ) -> Decision:
        """One pair's fate under *op* ("opt_in", "unsubscribe", "resubscribe", "set_on",
        "set_off") by an actor of *kind* (never a member: members are refused every call)."""
        state = pair.state
        if op in ("unsubscribe", "set_off"):
            return _NOTE if state is UNSUBSCRIBED else _change(UNSUBSCRIBED)
        if state is SUBSCRIBED:
            return _NONE
        if state is NEVER:
            if op == "resubscribe":  # nothing to resubscribe: an opt-in needs evidence
                if kind is ActorKind.SYSTEM:
                    return _error(ValidationError, NotAuthorizedError)
                return _error(ValidationError)
            if kind is ActorKind.CONTACT or evidence:
                return _change(SUBSCRIBED)
            return _error(ValidationError)
        # Unsubscribed: an opt-in or import never resubscribes, except the contact's own; it
        # is still judged as an opt-in (evidence needed) before the pair is skipped.
        if op == "opt_in":
            if kind is ActorKind.CONTACT:
                return _change(SUBSCRIBED)
            return _SKIP if evidence else _error(ValidationError)
        if kind is ActorKind.CONTACT:
            return _change(SUBSCRIBED)
        if kind is ActorKind.SYSTEM:
            return _error(NotAuthorizedError)
        if reason is None:
            return _error(JustificationError)
        if reason is ResubscribeReason.MISTAKEN_UNSUBSCRIBE and pair.origins & CONTACTS_OWN:
            return _error(JustificationError)
        return _change(SUBSCRIBED)

    @staticmethod
    def _channel_first(op: str, kind: ActorKind, pair: PairModel, decision: Decision) -> Decision:
        """The fate of a topic pair whose contact never subscribed to the topic's channel, given
        its *decision* as a pair of its own (docs/topics.md, "open questions": consent to the
        channel comes first, with its own evidence).

        Subscribing the topic (an opt-in, a resubscription, the toggle turned on) is refused
        with ChannelConsentRequiredError, in place of any other reason the pair had to refuse it
        (no evidence, nothing to resubscribe, no or the wrong justification), except that an
        actor refused as not authorised is told that first.  Leaving a topic needs nothing, and
        an opt-in that meets an unsubscribed topic pair, by anyone but the contact, is judged as
        an opt-in and skipped as for any pair: it asks for no subscription of the topic."""
        if op in ("unsubscribe", "set_off"):
            return decision
        if op == "opt_in" and pair.state is UNSUBSCRIBED and kind is not ActorKind.CONTACT:
            return decision
        what, _, errors = decision
        if what == "error" and errors <= {NotAuthorizedError}:
            return decision
        if what == "error" and NotAuthorizedError in errors:
            # The rules leave the pair's own refusal open between the two (the system asking
            # to resubscribe a never-subscribed pair): either still takes precedence.
            return _error(NotAuthorizedError, ChannelConsentRequiredError)
        return _error(ChannelConsentRequiredError)

    def sendable(self, account: str, cid: str, ch: Channel) -> bool:
        """``can_send`` of one pair: a channel's, when it is subscribed; a topic channel's, by
        the truth table of docs/topics.md for an opt-in topic whose class survives no channel
        unsubscribe: the channel is the master switch (rows 5 and 10) and the topic needs its
        own opt-in (rows 1, 3 and 4), so both layers must be subscribed."""
        pair = self.pair(account, cid, ch)
        under = CHANNEL_OF_TOPIC.get(ch)
        if under is None:
            return pair.state is SUBSCRIBED
        return self.pair(account, cid, under).state is SUBSCRIBED and pair.state is SUBSCRIBED

    def change(
        self,
        actor: Actor,
        ids: list[str],
        channels: list[Channel],
        op: str,
        now: datetime,
        *,
        evidence: bool = False,
        reason: ResubscribeReason | None = None,
    ) -> Expected:
        """Predict (and, when it succeeds, apply) one consent call."""
        account = actor.account
        call_errors: set[type[ConsentError]] = set()
        if actor.kind is ActorKind.CONTACT and any(cid != actor.id for cid in ids):
            call_errors.add(NotAuthorizedError)
        if any(cid not in self.contacts[account] for cid in ids):
            call_errors.add(UnknownContactError)
        if actor.kind is ActorKind.MEMBER:
            call_errors.add(NotAuthorizedError)
        if call_errors:
            return Expected(errors=frozenset(call_errors))
        decisions: dict[tuple[str, Channel], Decision] = {}
        for cid in ids:
            for ch in channels:
                pair = self.pair(account, cid, ch)
                decision = self._decide(op, actor.kind, pair, evidence, reason)
                under = CHANNEL_OF_TOPIC.get(ch)
                # The channel's pair as it was before this call: nothing is applied before every
                # pair of the call is decided, so the call's own opt-in to the channel does not
                # count for a topic of it in the same call.  An opt-out recorded before any
                # consent (a STOP, an admin's unsubscribe) is no consent to the channel either.
                if under is not None and not any(
                    event.new is SUBSCRIBED for event in self.pair(account, cid, under).events
                ):
                    decision = self._channel_first(op, actor.kind, pair, decision)
                decisions[(cid, ch)] = decision
        pair_errors = frozenset().union(*(d[2] for d in decisions.values()))
        if pair_errors:
            return Expected(errors=pair_errors)
        expected = Expected()
        for (cid, ch), (what, new_state, _) in decisions.items():
            pair = self.pair(account, cid, ch)
            if what == "change" and new_state is UNSUBSCRIBED:
                self._unsubscribe(pair, actor, ORIGIN_OF[actor.kind], now)
                expected.changed.add((cid, ch))
            elif what == "change":
                self._subscribe(pair, actor, now)
                expected.changed.add((cid, ch))
            elif what == "note":
                self._note(pair, ORIGIN_OF[actor.kind], now)
                expected.noted.add((cid, ch))
            elif what == "skip":
                expected.skipped.add((cid, ch))
        return expected

    # ---------------------------------------------------------------- contacts

    def upsert(
        self, actor: Actor, contacts: list[Contact], now: datetime, *, replace: bool
    ) -> Expected:
        """Predict (and apply) an ``upsert_contacts`` call: given addresses replace the old ones
        (with *replace*, left-out ones are removed; otherwise kept), and addresses that join
        bring their active suppressions, whatever the pair's state."""
        if actor.kind is ActorKind.CONTACT or any(c.account != actor.account for c in contacts):
            return Expected(errors=frozenset({NotAuthorizedError}))
        account = actor.account
        book = self.contacts[account]
        expected = Expected()
        suppression_list = Actor.system(account, "suppression-list")
        for contact in contacts:
            old = book.get(contact.id)
            if old is None:
                expected.created += 1
            else:
                expected.updated += 1
            old_keys = self._keys(old)
            if old is not None and old[0] is not None:
                # A late STOP still reaches a contact that had the number when it was received.
                self.departures[(account, old[0], contact.id)] = now
            if replace or old is None:
                book[contact.id] = (contact.phone, contact.email)
            else:
                book[contact.id] = (
                    old[0] if contact.phone is None else contact.phone,
                    old[1] if contact.email is None else contact.email,
                )
            for key in sorted(self._keys(book[contact.id]) - old_keys):
                # A suppression reaches the channels of the address, never a topic pair.
                channels = PHONE_CHANNELS if key.startswith("phone:") else (EMAIL,)
                for ch in channels:
                    word = self.words.get((account, key, ch))
                    if word is None or not word.active:
                        continue
                    pair = self.pair(account, contact.id, ch)
                    if pair.state is UNSUBSCRIBED:
                        self._note(pair, OptOutOrigin.SUPPRESSION, now)
                        expected.noted.add((contact.id, ch))
                        continue
                    # As of the join: the pair was sendable until its contact took the address.
                    self._unsubscribe(
                        pair, suppression_list, OptOutOrigin.SUPPRESSION, now, via=key
                    )
                    expected.changed.add((contact.id, ch))
            if old is not None:
                # Subscribed pairs left without an address on their channel (the channels'
                # pairs only: a topic pair is not reported, its channel's pair is).
                phone, email = book[contact.id]
                for ch in ALL_CHANNELS:
                    had = old[1] if ch is EMAIL else old[0]
                    has = email if ch is EMAIL else phone
                    pair = self.pair(account, contact.id, ch)
                    if pair.state is SUBSCRIBED and had is not None and has is None:
                        expected.unreachable.add((contact.id, ch))
        return expected

    @staticmethod
    def _keys(addresses: tuple[str | None, str | None] | None) -> set[str]:
        if addresses is None:
            return set()
        phone, email = addresses
        keys = set()
        if phone is not None:
            keys.add(phone_key(phone))
        if email is not None:
            keys.add(email_key(email))
        return keys

    # ---------------------------------------------------------------- inbound

    def inbound(self, message: InboundMessage, now: datetime) -> ExpectedInbound:
        """Predict (and apply) the first delivery of an inbound message at *now*."""
        account, ch, body = message.account, message.channel, message.body
        received = min(message.received_at, now)  # a time ahead of the clock counts as now
        key = phone_key(message.sender)
        holders = frozenset(
            cid for cid, (phone, _) in self.contacts[account].items() if phone == message.sender
        )
        if body == "STOP" or not self.only_stop_reaches_departed:
            # Also the contacts that had the number when the STOP was received (ties go to the
            # opt-out), whatever they have now.
            holders |= {
                cid
                for (acc, phone, cid), left in self.departures.items()
                if acc == account and phone == message.sender and left >= received
            }
        # The default opt-out scope (channel_group): the channels of the group, never a topic
        # pair on them.
        group = sorted(group_of(ch))
        changed: set[tuple[str, Channel]] = set()
        superseded = 0
        if body == "STOP":
            for gch in group:
                word = self.words.get((account, key, gch))
                # The latest word stands; at equal times the opt-out wins.
                if (
                    word is None
                    or received > word.at
                    or (self.stop_wins_ties and received == word.at and not word.active)
                ):
                    self.words[(account, key, gch)] = Word(True, received)
            for cid in sorted(holders):
                # One STOP is recorded at one time for the pairs of one contact: after the
                # latest change of any of them (never before a change it follows).
                at = max(
                    [received]
                    + [
                        pair.changed_at
                        for gch in group
                        if (pair := self.pair(account, cid, gch)).changed_at is not None
                    ]
                )
                for gch in group:
                    fate = self._stop(account, cid, gch, key=key, received=received, at=at)
                    if fate == "changed":
                        changed.add((cid, gch))
                    superseded += fate == "superseded"
            if not holders:
                outcome = InboundOutcome.SUPPRESSED
            elif superseded and not changed:
                # Nothing changed and a contact's own later word answered it: no confirmation.
                outcome = InboundOutcome.SUPERSEDED
            else:
                outcome = InboundOutcome.OPTED_OUT
        elif body == "START":
            for gch in group:
                word = self.words.get((account, key, gch))
                if word is None or received > word.at:
                    self.words[(account, key, gch)] = Word(False, received)
            for cid in sorted(holders):
                for gch in group:
                    pair = self.pair(account, cid, gch)
                    if (
                        pair.state is UNSUBSCRIBED
                        # the opt-out took a subscription away: START never creates consent
                        and pair.events[-1].previous is SUBSCRIBED
                        and pair.origins
                        and pair.origins <= CONTACTS_OWN
                        and pair.via == key
                        and pair.changed_at is not None
                        and received > pair.changed_at
                        and (pair.last_opt_out_at is None or received > pair.last_opt_out_at)
                    ):
                        self._subscribe(pair, Actor.contact(account, cid), received)
                        changed.add((cid, gch))
            if not holders:
                outcome = InboundOutcome.NO_CONTACT
            elif changed:
                outcome = InboundOutcome.OPTED_IN
            else:
                outcome = InboundOutcome.NOTHING_TO_UNDO
        elif body == "HELP":
            outcome = InboundOutcome.HELP
        elif body == "please stop texting me":
            outcome = InboundOutcome.NEEDS_REVIEW
        else:  # "thanks", and a conversational "yes" (not a keyword: docs/inbound.md)
            outcome = InboundOutcome.NONE
        expected = ExpectedInbound(outcome, holders, changed, received)
        self.handled[(account, ch, message.message_id)] = expected
        return expected

    def _stop(
        self, account: str, cid: str, ch: Channel, *, key: str, received: datetime, at: datetime
    ) -> str:
        """Apply one contact's STOP received at *received*, recorded at *at*, to one pair:
        "changed" (an event), "noted" (already unsubscribed) or "superseded"."""
        pair = self.pair(account, cid, ch)
        if (
            pair.state is SUBSCRIBED
            and pair.changed_by is ActorKind.CONTACT
            and pair.changed_at is not None
            and pair.changed_at > received
        ):
            return "superseded"  # the contact's own later word already answered it
        if pair.state is UNSUBSCRIBED:
            self._note(pair, OptOutOrigin.CONTACT, at)
            return "noted"
        self._unsubscribe(pair, Actor.contact(account, cid), OptOutOrigin.CONTACT, at, via=key)
        return "changed"


# ---------------------------------------------------------------------------------- stores

StoreOpener = Callable[[], tuple[Store, Callable[[], None]]]
_example_numbers = itertools.count(1)


def memory_store() -> tuple[Store, Callable[[], None]]:
    """A fresh in-memory store."""
    store = InMemoryStore()
    return store, store.close


def sqlite_store() -> tuple[Store, Callable[[], None]]:
    """A fresh SQLite store on a new file in a temporary directory, removed afterwards."""
    directory = tempfile.TemporaryDirectory(prefix="ck-rules-")
    store = SQLiteStore(Path(directory.name) / "consent.db", synchronous="NORMAL")

    def close() -> None:
        store.close()
        directory.cleanup()

    return store, close


@contextmanager
def postgres_stores() -> Iterator[StoreOpener]:
    """One PostgreSQL store on a fresh schema (dropped at the end) whose tables are emptied
    before each example: creating and migrating a schema per example would dominate the run."""
    import psycopg

    from consentkit.storage.postgres import PostgresStore

    assert DSN is not None, SKIP_REASON
    dsn = DSN
    schema = new_schema("rules")
    store = PostgresStore(dsn, schema=schema)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s"
                    " AND tablename <> 'schema_migrations'",
                    (schema,),
                )
            ]

            def emptied() -> tuple[Store, Callable[[], None]]:
                with conn.transaction():
                    for table in tables:
                        conn.execute(f'DELETE FROM "{schema}"."{table}"')
                return store, lambda: None

            yield emptied
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---------------------------------------------------------------------------------- the machine

# Weighted so that sequences build up on one account; the other mostly checks isolation.
account_indexes = st.sampled_from((0, 0, 0, 1))
actor_choices = st.sampled_from(ACTORS)
waits = st.sampled_from(WAITS)
one_contact = st.integers(0, 3).map(lambda index: [index])
contact_picks = st.one_of(
    one_contact, one_contact, st.lists(st.integers(0, 3), min_size=2, max_size=2, unique=True)
)
api_channels = st.sampled_from((SMS, SMS, MMS, WHATSAPP, EMAIL, SMS_PROMOTIONS, SMS_PROMOTIONS))
channel_picks = st.lists(api_channels, min_size=1, max_size=2, unique=True)
mostly = st.sampled_from((True, True, True, False))
channel_sets = st.lists(
    st.sampled_from((SMS, MMS, RCS, WHATSAPP, EMAIL, SMS_PROMOTIONS)), max_size=4, unique=True
)
reasons = st.sampled_from(
    (None, ResubscribeReason.MISTAKEN_UNSUBSCRIBE, ResubscribeReason.CONTACT_REQUEST)
)
phone_picks = st.sampled_from((0, 1, 2, 0, 1, None))
email_picks = st.one_of(st.none(), st.integers(0, len(EMAILS) - 1))
contact_specs = st.lists(
    st.tuples(st.integers(0, 3), phone_picks, email_picks),
    min_size=1,
    max_size=2,
    unique_by=lambda spec: spec[0],
)
# How many clock readings back the message was received (None: now); negative: that many
# seconds ahead of the clock (up to five minutes is clock skew, counted as now; more is refused).
lateness = st.sampled_from((None, None, None, 1, 2, 3, 5, 8, -60, -299, -301))
FUTURE_TOLERANCE = timedelta(minutes=5)


class ConsentRulesMachine(RuleBasedStateMachine):
    """Drives the service over one store and the model side by side, comparing after each step."""

    def __init__(self, opener: StoreOpener) -> None:
        super().__init__()
        number = next(_example_numbers)
        self.accounts = tuple(f"{prefix}{number}" for prefix in ACCOUNT_PREFIXES)
        self.store, self._close = opener()
        self.clock = FakeClock(T0)
        self.service = ConsentService(self.store, clock=self.clock, topics=[PROMOTIONS])
        self.model = RulesModel(self.accounts)
        self.times = [T0]
        self._touched: set[str] = set(self.accounts)
        self._subject = (self.accounts[0], CONTACT_IDS[0][0])
        self.deliveries: list[tuple[InboundMessage, InboundResult]] = []
        self._message_numbers = itertools.count(1)

    def teardown(self) -> None:
        """Close the store (and remove its file or schema)."""
        self._close()

    # ---------------------------------------------------------------- helpers

    def _wait(self, seconds: int, account: str | None = None) -> datetime:
        """Advance the clock before a call; the call may touch *account* (and its actor's)."""
        self._touched = set() if account is None else {account}
        now = self.clock.advance(timedelta(seconds=seconds))
        if now > self.times[-1]:
            self.times.append(now)
        return now

    def _actor(self, account_index: int, choice: str, target: str) -> Actor:
        self._subject = (self.accounts[account_index], target)
        actor = self._make_actor(account_index, choice, target)
        self._touched.add(actor.account)
        return actor

    def _make_actor(self, account_index: int, choice: str, target: str) -> Actor:
        account = self.accounts[account_index]
        if choice == "admin":
            return Actor.admin(account, "alice")
        if choice == "member":
            return Actor.member(account, "bob")
        if choice == "system":
            return Actor.system(account, "bounces")
        if choice == "contact":
            return Actor.contact(account, target)
        if choice == "other_contact":
            pool = CONTACT_IDS[account_index]
            return Actor.contact(account, next(cid for cid in pool if cid != target))
        return Actor.admin(self.accounts[1 - account_index], "mallory")

    @staticmethod
    def _outcome(expected: Expected, call: Callable[[], R], what: str) -> R | None:
        """Run *call*: it must raise exactly when (and what) the model expects; its result when
        it succeeds."""
        refusal: ConsentError | None = None
        try:
            result = call()
        except ConsentError as error:
            refusal = error
        wanted = sorted(e.__name__ for e in expected.errors)
        if refusal is not None:
            assert expected.errors, f"{what}: the model expects success, got {refusal!r}"
            assert type(refusal) in expected.errors, f"{what}: expected {wanted}, got {refusal!r}"
            return None
        assert not expected.errors, f"{what}: the model expects {wanted}, it succeeded: {result!r}"
        return result

    def _call(
        self, expected: Expected, call: Callable[[], ChangeResult], what: str
    ) -> ChangeResult | None:
        """Run a consent change and check its errors and changed pairs against the model."""
        result = self._outcome(expected, call, what)
        if result is None:
            return None
        changed = {(p.contact_id, p.channel) for p in result.changed}
        assert changed == expected.changed, f"{what}: changed {changed}, model {expected.changed}"
        return result

    # ---------------------------------------------------------------- rules

    @initialize(
        first=st.lists(st.tuples(phone_picks, email_picks, channel_sets), min_size=3, max_size=3),
        second=st.lists(st.tuples(phone_picks, email_picks, channel_sets), min_size=3, max_size=3),
    )
    def register_contacts(
        self,
        first: list[tuple[int | None, int | None, list[Channel]]],
        second: list[tuple[int | None, int | None, list[Channel]]],
    ) -> None:
        """Register three contacts per account (the fourth comes later, or never) and opt them
        in on some channels, so later STOPs and STARTs have consent to take and give back, and
        then to the topic where chosen (after its channel, as a host must)."""
        for account, specs in enumerate((first, second)):
            self.upsert_contacts(
                account=account,
                who="admin",
                specs=[(i, phone, email) for i, (phone, email, _) in enumerate(specs)],
                replace=False,
                wait=0,
            )
            for index, (_, _, channels) in enumerate(specs):
                bases = [ch for ch in channels if ch not in CHANNEL_OF_TOPIC]
                topics = [ch for ch in channels if ch in CHANNEL_OF_TOPIC]
                for chosen in (bases, topics):
                    if chosen:
                        self.opt_in(
                            account=account,
                            who="admin",
                            picks=[index],
                            channels=chosen,
                            with_evidence=True,
                            source=Source.IMPORT,
                            wait=0,
                        )
        self._touched = set(self.accounts)

    @rule(
        account=account_indexes,
        who=actor_choices,
        specs=contact_specs,
        replace=st.booleans(),
        wait=waits,
    )
    def upsert_contacts(
        self,
        *,
        account: int,
        who: str,
        specs: list[tuple[int, int | None, int | None]],
        replace: bool,
        wait: int,
    ) -> None:
        """Register contacts or move them between (shared) phone numbers and emails, keeping
        or removing (*replace*) the addresses left out."""
        now = self._wait(wait, self.accounts[account])
        pool = CONTACT_IDS[account]
        actor = self._actor(account, who, pool[specs[0][0]])
        contacts = [
            Contact(
                self.accounts[account],
                pool[index],
                phone=None if phone is None else PHONES[phone],
                email=None if email is None else EMAILS[email],
            )
            for index, phone, email in specs
        ]
        expected = self.model.upsert(actor, contacts, now, replace=replace)
        what = f"upsert_contacts({actor}, {contacts}, replace_addresses={replace})"
        result: ContactsResult | None = self._outcome(
            expected,
            lambda: self.service.upsert_contacts(actor, contacts, replace_addresses=replace),
            what,
        )
        if result is None:
            return
        assert (result.created, result.updated) == (expected.created, expected.updated), what
        suppressed = {(p.contact_id, p.channel) for p in result.suppressed}
        assert expected.changed <= suppressed <= expected.changed | expected.noted, (
            f"{what}: suppressed {suppressed}, model changed {expected.changed} "
            f"and noted {expected.noted}"
        )
        unreachable = {(p.contact_id, p.channel) for p in result.unreachable}
        assert unreachable == expected.unreachable, (
            f"{what}: unreachable {unreachable}, model {expected.unreachable}"
        )

    @rule(
        account=account_indexes,
        who=actor_choices,
        picks=contact_picks,
        channels=channel_picks,
        with_evidence=mostly,
        source=st.sampled_from((Source.API, Source.IMPORT, Source.SIGNUP_FORM)),
        wait=waits,
    )
    def opt_in(
        self,
        *,
        account: int,
        who: str,
        picks: list[int],
        channels: list[Channel],
        with_evidence: bool,
        source: Source,
        wait: int,
    ) -> None:
        """Opt contacts in, with or without evidence; the contact's own never as an import."""
        now = self._wait(wait, self.accounts[account])
        ids = [CONTACT_IDS[account][i] for i in picks]
        actor = self._actor(account, who, ids[0])
        if actor.kind is ActorKind.CONTACT and source is Source.IMPORT:
            source = Source.SIGNUP_FORM
        evidence = Evidence("web_form", "Text me offers", "v1") if with_evidence else None
        expected = self.model.change(actor, ids, channels, "opt_in", now, evidence=with_evidence)
        result = self._call(
            expected,
            lambda: self.service.opt_in(
                actor, ids, channels, evidence=evidence, source=source, details=True
            ),
            f"opt_in({actor}, {ids}, {channels}, evidence={with_evidence})",
        )
        if result is not None:
            skipped = {(s.contact_id, s.channel) for s in result.skipped}
            assert skipped == expected.skipped, f"skipped {skipped}, model {expected.skipped}"

    @rule(
        account=account_indexes,
        who=actor_choices,
        pick=st.integers(min_value=0, max_value=2),
        ch=st.sampled_from((SMS, MMS, WHATSAPP, EMAIL)),
        stop_between=st.booleans(),
        wait=waits,
    )
    def double_opt_in(
        self, *, account: int, who: str, pick: int, ch: Channel, stop_between: bool, wait: int
    ) -> None:
        """A sign-up pending the contact's confirmation (docs/double-opt-in.md): it changes no
        pair; the contact's own unsubscribe between request and confirmation voids it (a
        confirmation never overrides an opt-out); otherwise the confirmation is the contact's
        own opt-in with evidence."""
        now = self._wait(wait, self.accounts[account])
        cid = CONTACT_IDS[account][pick]
        actor = self._actor(account, who, cid)
        model_account = actor.account
        known = cid in self.model.contacts[model_account]
        pair = self.model.pair(model_account, cid, ch) if known else None
        errors: set[type[ConsentError]] = set()
        if actor.kind is ActorKind.CONTACT and actor.id != cid:
            errors.add(NotAuthorizedError)
        elif not known:
            errors.add(UnknownContactError)
        elif pair is not None and pair.state is SUBSCRIBED:
            errors.add(ValidationError)
        elif actor.kind is ActorKind.MEMBER or (
            pair is not None and pair.state is UNSUBSCRIBED and actor.kind is not ActorKind.CONTACT
        ):
            errors.add(NotAuthorizedError)
        request = self._outcome(
            Expected(errors=frozenset(errors)),
            lambda: self.service.request_opt_in(
                actor,
                cid,
                ch,
                evidence=Evidence("web_form", "Text me offers", "v1"),
                request_wording="Reply YES to confirm",
            ),
            f"request_opt_in({actor}, {cid}, {ch.key})",
        )
        if request is None:
            return
        contact = Actor.contact(model_account, cid)
        if stop_between:
            later = self._wait(1, model_account)
            expected = self.model.change(contact, [cid], [ch], "unsubscribe", later)
            self._call(
                expected,
                lambda: self.service.unsubscribe(
                    contact, [cid], [ch], source=Source.UNSUBSCRIBE_LINK, details=True
                ),
                f"unsubscribe({contact}, {cid}, {ch.key}) after a sign-up request",
            )
        confirm_at = self._wait(1, model_account)
        opted_out = self.model.pair(model_account, cid, ch).last_opt_out_at
        if opted_out is not None and opted_out >= now:
            self._outcome(
                Expected(errors=frozenset({ConflictError})),
                lambda: self.service.confirm_opt_in(contact, request.id, method="reply"),
                f"confirm_opt_in of a request voided by an opt-out ({cid}, {ch.key})",
            )
            return
        expected = self.model.change(contact, [cid], [ch], "opt_in", confirm_at, evidence=True)
        self._call(
            expected,
            lambda: self.service.confirm_opt_in(contact, request.id, method="reply"),
            f"confirm_opt_in({cid}, {ch.key})",
        )

    @rule(
        account=account_indexes,
        who=actor_choices,
        picks=contact_picks,
        channels=channel_picks,
        wait=waits,
    )
    def unsubscribe(
        self,
        *, account: int, who: str, picks: list[int], channels: list[Channel], wait: int
    ) -> None:
        """Unsubscribe contacts (an admin, the system, a member, the contact's link)."""
        now = self._wait(wait, self.accounts[account])
        ids = [CONTACT_IDS[account][i] for i in picks]
        actor = self._actor(account, who, ids[0])
        source = Source.UNSUBSCRIBE_LINK if actor.kind is ActorKind.CONTACT else Source.API
        expected = self.model.change(actor, ids, channels, "unsubscribe", now)
        self._call(
            expected,
            lambda: self.service.unsubscribe(actor, ids, channels, source=source, details=True),
            f"unsubscribe({actor}, {ids}, {channels})",
        )

    @rule(
        account=account_indexes,
        who=actor_choices,
        picks=contact_picks,
        channels=channel_picks,
        reason=reasons,
        wait=waits,
    )
    def resubscribe(
        self,
        *,
        account: int,
        who: str,
        picks: list[int],
        channels: list[Channel],
        reason: ResubscribeReason | None,
        wait: int,
    ) -> None:
        """Resubscribe contacts with each justification reason, or none."""
        now = self._wait(wait, self.accounts[account])
        ids = [CONTACT_IDS[account][i] for i in picks]
        actor = self._actor(account, who, ids[0])
        justification = None if reason is None else Justification(reason, "Asked on the phone")
        expected = self.model.change(actor, ids, channels, "resubscribe", now, reason=reason)
        self._call(
            expected,
            lambda: self.service.resubscribe(
                actor, ids, channels, justification=justification, details=True
            ),
            f"resubscribe({actor}, {ids}, {channels}, reason={reason})",
        )

    @rule(
        account=account_indexes,
        who=actor_choices,
        pick=st.integers(0, 3),
        ch=api_channels,
        subscribed=st.booleans(),
        with_evidence=st.booleans(),
        reason=reasons,
        wait=waits,
    )
    def set_subscribed(
        self,
        *,
        account: int,
        who: str,
        pick: int,
        ch: Channel,
        subscribed: bool,
        with_evidence: bool,
        reason: ResubscribeReason | None,
        wait: int,
    ) -> None:
        """Flip the inbox toggle, with or without evidence and justification."""
        now = self._wait(wait, self.accounts[account])
        cid = CONTACT_IDS[account][pick]
        actor = self._actor(account, who, cid)
        evidence = Evidence("inbox", "Agreed in chat", "v2") if with_evidence else None
        justification = None if reason is None else Justification(reason, "Ticket 5521")
        op = "set_on" if subscribed else "set_off"
        expected = self.model.change(
            actor, [cid], [ch], op, now, evidence=with_evidence, reason=reason
        )
        self._call(
            expected,
            lambda: self.service.set_subscribed(
                actor, cid, ch, subscribed, justification=justification, evidence=evidence
            ),
            f"set_subscribed({actor}, {cid!r}, {ch}, {subscribed}, evidence={with_evidence}, "
            f"reason={reason})",
        )

    @rule(
        account=account_indexes,
        ch=st.sampled_from(INBOUND_CHANNELS),
        # -1: the number, channel and account of the previous message (a conversation); -2:
        # the number of the contact the previous call was about (the contact answers back).
        sender=st.sampled_from((0, 1, 2, 3, -1, -1, -2, -2)),
        body=st.sampled_from(BODIES),
        late=lateness,
        wait=waits,
    )
    def inbound(
        self,
        *, account: int, ch: Channel, sender: int, body: str, late: int | None, wait: int
    ) -> None:
        """Deliver a reply from a known or unknown number, now or late (an earlier clock time)."""
        now = self._wait(wait, self.accounts[account])
        if late is None:
            received = now
        elif late < 0:
            received = now + timedelta(seconds=-late)
        else:
            received = self.times[max(0, len(self.times) - 1 - late)]
        phone = UNKNOWN_PHONE if sender == len(PHONES) else PHONES[max(sender, 0)]
        to = self.accounts[account]
        if sender == -1 and self.deliveries:
            previous = self.deliveries[-1][0]
            to, phone, ch = previous.account, previous.sender, previous.channel
        elif sender == -2:
            to, subject = self._subject
            phone = self.model.contacts[to].get(subject, (None, None))[0] or phone
        self._touched.add(to)
        message = InboundMessage(
            account=to,
            channel=ch,
            sender=phone,
            body=body,
            message_id=f"m{next(self._message_numbers)}",
            received_at=received,
        )
        self._deliver(message, now)

    def _deliver(self, message: InboundMessage, now: datetime) -> None:
        """The first delivery of *message*: its result must be the model's."""
        body, ch, received = message.body, message.channel, message.received_at
        what = f"handle_inbound({body!r} on {ch} from {message.sender} at {received:%H:%M:%S})"
        if received > now + FUTURE_TOLERANCE:
            with pytest.raises(ValidationError):
                self.service.handle_inbound(message)
            return
        expected = self.model.inbound(message, now)
        result = self.service.handle_inbound(message)
        assert not result.replayed, what
        assert result.outcome is expected.outcome, (
            f"{what}: outcome {result.outcome}, model {expected.outcome}"
        )
        assert set(result.contact_ids) == expected.contact_ids, (
            f"{what}: contacts {result.contact_ids}, model {sorted(expected.contact_ids)}"
        )
        assert set(result.changed) == expected.changed, (
            f"{what}: changed {set(result.changed)}, model {expected.changed}"
        )
        if expected.outcome in (InboundOutcome.SUPERSEDED, InboundOutcome.NOTHING_TO_UNDO):
            assert result.reply is None, f"{what}: a reply for {expected.outcome}"
        if expected.outcome in (InboundOutcome.OPTED_OUT, InboundOutcome.SUPPRESSED):
            assert result.reply is not None, f"{what}: no opt-out confirmation"
        assert result.received_at == expected.received, (
            f"{what}: received {result.received_at}, model {expected.received}"
        )
        self.deliveries.append((message, result))

    @precondition(lambda self: bool(self.deliveries))
    @rule(
        index=st.integers(0, 1000),
        variant=st.sampled_from(("again", "again", "other_text", "other_channel")),
        wait=waits,
    )
    def redeliver(self, *, index: int, variant: str, wait: int) -> None:
        """Deliver an earlier message again (the stored result comes back, nothing changes),
        its id with another text (refused, nothing changes), or on another channel (a new
        message: ids are unique per channel)."""
        message, first = self.deliveries[index % len(self.deliveries)]
        now = self._wait(wait, message.account)
        if variant == "other_text":
            reused = attrs.evolve(message, body=next(b for b in BODIES if b != message.body))
            with pytest.raises(ConflictError):
                self.service.handle_inbound(reused)
            return
        if variant == "other_channel":
            ch = next(c for c in INBOUND_CHANNELS if c != message.channel)
            if (message.account, ch, message.message_id) not in self.model.handled:
                self._deliver(attrs.evolve(message, channel=ch, received_at=now), now)
                return
            message, first = next(
                (m, r)
                for m, r in self.deliveries
                if (m.account, m.channel, m.message_id)
                == (message.account, ch, message.message_id)
            )
        again = self.service.handle_inbound(message)
        assert again.replayed, f"redelivery of {message.message_id} was handled again"
        assert again == first, f"redelivery of {message.message_id}: {again} != {first}"

    @rule(account=account_indexes, pick=st.integers(0, 3), ch=st.sampled_from(API_CHANNELS))
    def outsiders_see_nothing(self, account: int, pick: int, ch: Channel) -> None:
        """An actor of the other account finds no such contact; another contact is refused."""
        cid = CONTACT_IDS[account][pick]
        self._touched = set()
        foreign = self._make_actor(account, "foreign", cid)
        with pytest.raises(UnknownContactError):
            self.service.state(foreign, cid, ch)
        assert not self.service.can_send(foreign, cid, ch)
        assert self.service.subscriptions(foreign, cid) == []
        assert self.service.subscription(foreign, cid, ch) is None
        with pytest.raises(UnknownContactError):
            self.service.history(foreign, cid)
        other = self._make_actor(account, "other_contact", cid)
        for read in (
            lambda: self.service.state(other, cid, ch),
            lambda: self.service.can_send(other, cid, ch),
            lambda: self.service.history(other, cid),
            lambda: self.service.subscriptions(other, cid),
            lambda: self.service.subscription(other, cid, ch),
            lambda: next(self.service.audit_log(other)),
        ):
            with pytest.raises(NotAuthorizedError):
                read()
        with pytest.raises((NotAuthorizedError, ValidationError)):  # not the account's history
            self.service.history(other, None)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- the comparison

    @invariant()
    def store_agrees_with_model(self) -> None:
        """Every pair's state, can_send, subscription record and history equal the model's (in
        full for the accounts the step may have touched; records and events for the others)."""
        for account_index, account in enumerate(self.accounts):
            if account not in self._touched:
                self._light_check(account_index, account)
                continue
            reader = Actor.admin(account, "auditor")
            log: dict[tuple[str, Channel], list[ConsentEvent]] = {}
            of_contact: dict[str, list[ConsentEvent]] = {}
            for event in self.service.audit_log(reader):
                assert event.account == account
                log.setdefault((event.contact_id, event.channel), []).append(event)
                of_contact.setdefault(event.contact_id, []).append(event)
            expected_pairs = {
                (cid, ch)
                for (acc, cid, ch), pair in self.model.pairs.items()
                if acc == account and pair.events
            }
            assert set(log) == expected_pairs, (
                f"{account}: events for {sorted(set(log) ^ expected_pairs)} differ from the model"
            )
            for cid in CONTACT_IDS[account_index]:
                if cid not in self.model.contacts[account]:
                    with pytest.raises(UnknownContactError):
                        self.service.state(reader, cid, SMS)
                    assert not self.service.can_send(reader, cid, SMS)
                    with pytest.raises(UnknownContactError):
                        self.service.state(reader, cid, SMS_PROMOTIONS)
                    assert not self.service.can_send(reader, cid, SMS_PROMOTIONS)
                    assert self.service.subscriptions(reader, cid) == []
                    continue
                subs = {sub.channel: sub for sub in self.service.subscriptions(reader, cid)}
                history = self.service.history(reader, cid)
                assert history == of_contact.get(cid, []), f"{account}/{cid}: history"
                for ch in CHECKED_CHANNELS:
                    pair = self.model.pair(account, cid, ch)
                    where = f"{account}/{cid}/{ch}"
                    assert self.service.state(reader, cid, ch) is pair.state, (
                        f"{where}: state {self.service.state(reader, cid, ch)}, model {pair}"
                    )
                    sendable = self.model.sendable(account, cid, ch)
                    assert self.service.can_send(reader, cid, ch) is sendable, (
                        f"{where}: can_send {not sendable}, model {sendable}"
                    )
                    sub = self.service.subscription(reader, cid, ch)
                    assert sub == subs.get(ch), f"{where}: subscription() != subscriptions()"
                    self._compare_subscription(where, sub, pair)
                    self._compare_events(where, log.get((cid, ch), []), pair, account)
            check_replay(self.store, account)

    def _light_check(self, account_index: int, account: str) -> None:
        """A step of another account left this one alone: same records, same number of events."""
        reader = Actor.admin(account, "auditor")
        events = sum(len(p.events) for (acc, _, _), p in self.model.pairs.items() if acc == account)
        assert sum(1 for _ in self.service.audit_log(reader)) == events, f"{account}: events"
        for cid in CONTACT_IDS[account_index]:
            subs = {sub.channel: sub for sub in self.service.subscriptions(reader, cid)}
            for ch in CHECKED_CHANNELS:
                pair = self.model.pair(account, cid, ch)
                self._compare_subscription(f"{account}/{cid}/{ch}", subs.get(ch), pair)

    @staticmethod
    def _compare_subscription(where: str, sub: Subscription | None, pair: PairModel) -> None:
        if pair.state is NEVER:
            assert sub is None, f"{where}: a record {sub} for a never-subscribed pair"
            return
        assert sub is not None, f"{where}: no record, model {pair}"
        got = (sub.state, sub.version, sub.changed_by, sub.opted_out_by, sub.opted_out_via)
        want = (
            pair.state,
            len(pair.events),
            pair.changed_by,
            frozenset(pair.origins),
            pair.via,
        )
        assert got == want, f"{where}: store {got}, model {want}"
        assert sub.updated_at == pair.changed_at, (
            f"{where}: changed at {sub.updated_at}, model {pair.changed_at}"
        )
        if pair.state is UNSUBSCRIBED:
            # A START must be received after both to undo the opt-out.
            got_bound = max(sub.updated_at, sub.last_opt_out_at or sub.updated_at)
            assert pair.changed_at is not None
            want_bound = max(pair.changed_at, pair.last_opt_out_at or pair.changed_at)
            assert got_bound == want_bound, (
                f"{where}: a START must be received after {got_bound}, model {want_bound}"
            )

    @staticmethod
    def _compare_events(
        where: str, events: list[ConsentEvent], pair: PairModel, account: str
    ) -> None:
        got = [(e.previous_state, e.new_state, e.actor.kind) for e in events]
        want = [(e.previous, e.new, e.kind) for e in pair.events]
        assert got == want, f"{where}: events {got}, model {want}"
        for event, modelled in zip(events, pair.events, strict=True):
            got_event = (event.actor.account, event.actor.id, event.occurred_at)
            want_event = (account, modelled.actor_id, modelled.at)
            assert got_event == want_event, f"{where}: event {got_event}, model {want_event}"


# ---------------------------------------------------------------------------------- the tests

STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[pytest.mark.postgres, pytest.mark.skipif(DSN is None, reason=SKIP_REASON)],
    ),
]


def machine_on(opener: StoreOpener) -> type[ConsentRulesMachine]:
    """The state machine class running on the stores *opener* makes."""

    class Machine(ConsentRulesMachine):
        """The rules machine on one kind of store."""

        def __init__(self) -> None:
            super().__init__(opener)

    return Machine


def run_rules(opener: StoreOpener, kind: str) -> None:
    """Run the state machine on the stores *opener* makes, as many examples and steps as *kind*
    (a store name) gets."""
    run_state_machine_as_test(
        machine_on(opener),
        settings=settings(
            max_examples=EXAMPLES[kind],
            stateful_step_count=STEPS[kind],
            deadline=None,
            report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.parametrize("kind", STORES)
def test_rules_hold_on_every_store(kind: str) -> None:
    """Random call sequences leave each store exactly where the model of docs/policy.md is."""
    if kind == "postgres":
        with postgres_stores() as opener:
            run_rules(opener, kind)
    else:
        run_rules(memory_store if kind == "memory" else sqlite_store, kind)

