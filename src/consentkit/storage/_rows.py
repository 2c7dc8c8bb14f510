"""The one row decoder of the SQL stores: domain values from the columns both stores select.

Both stores select the same columns in the same order (the ``*_COLUMNS`` lists below) and return
the same Python values for them, with one exception: times, which SQLite stores as integer
microseconds and PostgreSQL loads as datetimes, so the decoder is given the store's
``instant`` conversion.  JSON columns come back as JSON text from both (PostgreSQL casts its
``jsonb`` and array columns to text in the select list), and lists of actor roles as NULL when
empty.

A decoder is made per read and shares equal objects within it: a bulk read returns thousands of
rows written by one call, which share their instant, actor and evidence, so each is built once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

from consentkit.channels import Channel, channel
from consentkit.model import (
    Actor,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    Subscription,
    SubscriptionState,
    Suppression,
)
from consentkit.review import ReviewItem
from consentkit.sends import SentRecord
from consentkit.storage._codec import (
    DECISIONS,
    KINDS,
    ORIGINS,
    REASONS,
    REVIEW_KINDS,
    SOURCES,
    STATES,
    evidence_from_document,
)
from consentkit.storage.base import AddressRecords, InboundRecord

__all__ = [
    "CONTACT_COLUMNS",
    "EVENT_COLUMNS",
    "REVIEW_COLUMNS",
    "SUBSCRIPTION_COLUMNS",
    "SUPPRESSION_COLUMNS",
    "RowDecoder",
    "addresses_of",
    "inbound_record",
    "origins",
]

# The select lists, in the order the decoder unpacks them.  A store may qualify the names or
# wrap a column in a cast (PostgreSQL's JSON columns), never reorder them.
CONTACT_COLUMNS: Final = ("id", "phone", "email", "handles")
SUBSCRIPTION_COLUMNS: Final = (
    "contact_id",
    "channel",
    "state",
    "version",
    "updated_at",
    "changed_by",
    "source",
    "reason",
    "opted_out_by",
    "opted_out_via",
    "last_opt_out_at",
)
"""Followed by the row's lock token (PostgreSQL's row id; NULL on SQLite) in
:meth:`RowDecoder.locked_subscriptions`."""
EVENT_COLUMNS: Final = (
    "sequence",
    "contact_id",
    "channel",
    "previous_state",
    "new_state",
    "actor_kind",
    "actor_id",
    "actor_roles",
    "source",
    "occurred_at",
    "recorded_at",
    "justification_reason",
    "justification_note",
    "evidence",
    "reason",
    "inbound_message_id",
    "batch_id",
)
REVIEW_COLUMNS: Final = (
    "id",
    "kind",
    "channel",
    "message_id",
    "sender",
    "text",
    "contact_ids",
    "received_at",
    "honor_by",
    "decision",
    "decided_by",
    "decided_at",
    "note",
)
SUPPRESSION_COLUMNS: Final = (
    "address_key",
    "channel",
    "occurred_at",
    "source",
    "inbound_message_id",
    "active",
)

_NEVER: Final = SubscriptionState.NEVER_SUBSCRIBED.value
_NO_ORIGINS: Final[frozenset[OptOutOrigin]] = frozenset()
# The sets of opt-out origins met so far, by their column value: there are few (at most one per
# subset of OptOutOrigin), and the rows of a bulk read share them.
_origin_sets: dict[str | None, frozenset[OptOutOrigin]] = {None: _NO_ORIGINS}


def origins(text: str | None) -> frozenset[OptOutOrigin]:
    """The set of origins of an ``opted_out_by`` column value (sorted, comma-joined values)."""
    found = _origin_sets.get(text)
    if found is None:
        assert text is not None
        found = _origin_sets[text] = frozenset(ORIGINS[value] for value in text.split(","))
    return found


class RowDecoder:
    """Turns the column values of one read back into domain values.

    Args:
        channels: the store's cache of channels by key (custom channels are built once).
        instant: the store's conversion of a time column to an aware UTC datetime.
    """

    __slots__ = ("_actors", "_channels", "_evidence", "_justifications", "instant")

    def __init__(self, channels: dict[str, Channel], instant: Callable[[Any], datetime]) -> None:
        self._channels = channels
        self.instant = instant
        self._actors: dict[tuple[str, str, str, str | None], Actor] = {}
        self._evidence: dict[str, Evidence] = {}
        self._justifications: dict[tuple[str, str], Justification] = {}

    def channel(self, key: str) -> Channel:
        found = self._channels.get(key)
        if found is None:
            found = self._channels[key] = channel(key)
        return found

    def actor(self, account: str, kind: str, actor_id: str, roles: str | None) -> Actor:
        key = (account, kind, actor_id, roles)
        found = self._actors.get(key)
        if found is None:
            found = self._actors[key] = Actor(
                KINDS[kind],
                actor_id,
                account,
                frozenset() if roles is None else frozenset(json.loads(roles)),
            )
        return found

    def evidence(self, document: str | None) -> Evidence | None:
        if document is None:
            return None
        found = self._evidence.get(document)
        if found is None:
            found = self._evidence[document] = evidence_from_document(json.loads(document))
        return found

    def justification(self, reason: str | None, note: str | None) -> Justification | None:
        if reason is None or note is None:
            return None
        found = self._justifications.get((reason, note))
        if found is None:
            found = self._justifications[(reason, note)] = Justification(REASONS[reason], note)
        return found

    def contact(self, account: str, row: Any) -> Contact:
        contact_id, phone, email, handles = row
        return Contact(
            account=account,
            id=contact_id,
            phone=phone,
            email=email,
            handles=(
                ()
                if handles is None
                else [(self.channel(key), handle) for key, handle in json.loads(handles)]
            ),
        )

    def subscription(self, account: str, row: Any) -> Subscription:
        (
            contact_id,
            key,
            state,
            version,
            updated_at,
            changed_by,
            source,
            reason,
            opted_out_by,
            opted_out_via,
            last_opt_out_at,
        ) = row
        instant = self.instant
        return Subscription(
            account,
            contact_id,
            self.channel(key),
            STATES[state],
            version,
            instant(updated_at),
            KINDS[changed_by],
            SOURCES[source],
            reason,
            origins(opted_out_by),
            opted_out_via,
            None if last_opt_out_at is None else instant(last_opt_out_at),
        )

    def locked_subscriptions(
        self,
        account: str,
        rows: Iterable[Any],
        by_key: dict[str, Channel],
        locked: dict[tuple[str, str], tuple[Any, int]] | None = None,
    ) -> dict[tuple[str, Channel], Subscription]:
        """The subscriptions of the rows of ``lock_subscriptions`` (the subscription columns
        and a lock token) by pair, with the caller's channel objects (*by_key*).

        With *locked* (PostgreSQL, whose lock leaves never-subscribed placeholder rows), every
        row's token and version are recorded in it by (contact id, channel key), and the
        placeholders are left out of the result.  The hottest loop of a bulk
        call (one pass per locked pair), so it is written out rather than calling
        :meth:`subscription`, with every name local.
        """
        instant = self.instant
        states, kinds, sources, never = STATES, KINDS, SOURCES, _NEVER
        origin_sets, no_origins = _origin_sets, _NO_ORIGINS
        found: dict[tuple[str, Channel], Subscription] = {}
        for (
            contact_id,
            key,
            state,
            version,
            updated_at,
            changed_by,
            source,
            reason,
            opted_out_by,
            opted_out_via,
            last_opt_out_at,
            token,
        ) in rows:
            if locked is not None:
                locked[(contact_id, key)] = (token, version)
                if state == never:
                    continue
            ch = by_key[key]
            found[(contact_id, ch)] = Subscription(
                account,
                contact_id,
                ch,
                states[state],
                version,
                instant(updated_at),
                kinds[changed_by],
                sources[source],
                reason,
                (
                    no_origins
                    if opted_out_by is None
                    else origin_sets.get(opted_out_by) or origins(opted_out_by)
                ),
                opted_out_via,
                None if last_opt_out_at is None else instant(last_opt_out_at),
            )
        return found

    def event(self, account: str, row: Any) -> ConsentEvent:
        (
            sequence,
            contact_id,
            key,
            previous_state,
            new_state,
            actor_kind,
            actor_id,
            actor_roles,
            source,
            occurred_at,
            recorded_at,
            justification_reason,
            justification_note,
            evidence,
            reason,
            inbound_message_id,
            batch_id,
        ) = row
        return ConsentEvent(
            sequence=sequence,
            account=account,
            contact_id=contact_id,
            channel=self.channel(key),
            previous_state=STATES[previous_state],
            new_state=STATES[new_state],
            actor=self.actor(account, actor_kind, actor_id, actor_roles),
            source=SOURCES[source],
            occurred_at=self.instant(occurred_at),
            recorded_at=self.instant(recorded_at),
            justification=self.justification(justification_reason, justification_note),
            evidence=self.evidence(evidence),
            reason=reason,
            inbound_message_id=inbound_message_id,
            batch_id=batch_id,
        )

    def review_item(self, account: str, row: Any) -> ReviewItem:
        (
            item_id,
            kind,
            key,
            message_id,
            sender,
            text,
            contact_ids,
            received_at,
            honor_by,
            decision,
            decided_by,
            decided_at,
            note,
        ) = row
        return ReviewItem(
            account=account,
            id=item_id,
            kind=REVIEW_KINDS[kind],
            channel=self.channel(key),
            message_id=message_id,
            sender=sender,
            text=text,
            contact_ids=tuple(json.loads(contact_ids)),
            received_at=self.instant(received_at),
            honor_by=self.instant(honor_by),
            decision=None if decision is None else DECISIONS[decision],
            decided_by=decided_by,
            decided_at=None if decided_at is None else self.instant(decided_at),
            note=note,
        )

    def suppressions(self, account: str, rows: Iterable[Any]) -> list[Suppression]:
        channel_of, instant = self.channel, self.instant
        return [
            Suppression(
                account=account,
                address_key=key,
                channel=channel_of(channel_key),
                occurred_at=instant(occurred_at),
                source=SOURCES[source],
                inbound_message_id=message_id,
                active=bool(active),
            )
            for key, channel_key, occurred_at, source, message_id, active in rows
        ]


def inbound_record(channel: Channel, message_id: str, row: Any) -> InboundRecord | None:
    """The record of a ``SELECT body_sha256, result`` of inbound messages (None: no row)."""
    return None if row is None else InboundRecord(channel, message_id, row[0], str(row[1]))


def addresses_of(rows: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Contact ids per address key, from ``(address key, contact id)`` rows in that order."""
    found: dict[str, list[str]] = {}
    for key, contact_id in rows:
        found.setdefault(key, []).append(contact_id)
    return found


def address_records(
    account: str,
    decoder: RowDecoder,
    time: Callable[[Any], datetime],
    rows: tuple[Iterable[Any], Iterable[Any], Iterable[Any], Iterable[Any]],
) -> AddressRecords:
    """The records of some addresses from the rows of the SQL stores' four export reads:
    inbound ``(channel, message_id, body_sha256, result, received_at, sender_key,
    from_contact)``, review items, suppressions, and sends ``(channel, address_key, sender,
    topic, sent_at)``; *time* reads the store's instants."""
    inbound, review, suppressions, sent = rows
    return AddressRecords(
        inbound=tuple(
            InboundRecord(
                decoder.channel(row[0]),
                row[1],
                row[2],
                str(row[3]),
                received_at=None if row[4] is None else time(row[4]),
                sender_key=row[5],
                from_contact=None if row[6] is None else bool(row[6]),
            )
            for row in inbound
        ),
        review_items=tuple(decoder.review_item(account, row) for row in review),
        suppressions=tuple(decoder.suppressions(account, suppressions)),
        sent=tuple(
            SentRecord(decoder.channel(row[0]), row[1], row[2], row[3], time(row[4]))
            for row in sent
        ),
    )
