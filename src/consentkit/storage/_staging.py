"""Set-based changes (:class:`~consentkit.storage.base.StagingTransaction`) written over the
per-pair methods: the reference implementation, which the in-memory store uses.  The SQL stores
implement the same methods with set-based statements inside the database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from consentkit.channels import Channel
from consentkit.model import Subscription, SubscriptionState
from consentkit.storage.base import (
    ChangeBatch,
    PairChange,
    Situation,
    SituationKey,
    StagedPair,
)

__all__ = ["Pair", "PairwiseStaging", "apply_pairs", "pairs_in", "situation_of", "situations_of"]


def situation_of(ch: Channel, sub: Subscription | None) -> SituationKey:
    """The situation of a pair with record *sub* (None: never subscribed)."""
    if sub is None:
        return (ch, SubscriptionState.NEVER_SUBSCRIBED, None, None, frozenset())
    return (ch, sub.state, sub.changed_by, sub.source, sub.opted_out_by)


class PairWriter(Protocol):
    """The per-pair writes :func:`apply_pairs` goes through (a transaction's)."""

    def write_changes(self, batch: ChangeBatch, changes: Sequence[PairChange]) -> None: ...

    def note_opt_outs(self, batch: ChangeBatch, pairs: Sequence[tuple[str, Channel]]) -> None: ...


Pair = tuple[str, Channel, Subscription | None]
"""A staged pair with its record (None: never subscribed)."""


def situations_of(pairs: Iterable[Pair]) -> list[Situation]:
    """The situations of *pairs*, in the order they first occur."""
    found: dict[SituationKey, tuple[int, datetime | None]] = {}
    for _, ch, sub in pairs:
        key = situation_of(ch, sub)
        total, latest = found.get(key, (0, None))
        if sub is not None and (latest is None or sub.updated_at > latest):
            latest = sub.updated_at
        found[key] = (total + 1, latest)
    return [Situation(key, total, latest) for key, (total, latest) in found.items()]


def pairs_in(
    pairs: Iterable[Pair],
    keys: Sequence[SituationKey],
    *,
    changed_after: datetime | None = None,
    limit: int | None = None,
) -> list[StagedPair]:
    """The pairs of *pairs* in the situations *keys* (changed after *changed_after*), in order,
    at most *limit*."""
    wanted = set(keys)
    found: list[StagedPair] = []
    for cid, ch, sub in pairs:
        if limit is not None and len(found) >= limit:
            break
        key = situation_of(ch, sub)
        if key not in wanted:
            continue
        if changed_after is not None and (sub is None or sub.updated_at <= changed_after):
            continue
        found.append(StagedPair(cid, ch, 0 if sub is None else sub.version, key))
    return found


def apply_pairs(
    tx: PairWriter,
    batch: ChangeBatch,
    pairs: Iterable[Pair],
    writes: Iterable[SituationKey],
    notes: Iterable[SituationKey],
) -> int:
    """Write the pairs of *pairs* in the situations *writes* through ``tx.write_changes`` and
    note opt-out requests on those in *notes* through ``tx.note_opt_outs``; the number written."""
    write_keys, note_keys = set(writes), set(notes)
    changes: list[PairChange] = []
    noted: list[tuple[str, Channel]] = []
    for cid, ch, sub in pairs:
        key = situation_of(ch, sub)
        if key in write_keys:
            changes.append(PairChange(cid, ch, key[1], 0 if sub is None else sub.version))
        elif key in note_keys:
            noted.append((cid, ch))
    if noted:
        tx.note_opt_outs(batch, noted)
    if changes:
        tx.write_changes(batch, changes)
    return len(changes)


class PairwiseStaging:
    """The staging methods over ``lock_subscriptions``, ``write_changes`` and
    ``note_opt_outs`` of the class it is mixed into (a transaction)."""

    _staged: tuple[str, ...] = ()

    # The per-pair methods this mixin builds on (the transaction's own).
    def lock_subscriptions(
        self, contact_ids: Sequence[str], channels: Sequence[Channel]
    ) -> dict[tuple[str, Channel], Subscription]:
        raise NotImplementedError

    def write_changes(self, batch: ChangeBatch, changes: Sequence[PairChange]) -> None:
        raise NotImplementedError

    def note_opt_outs(self, batch: ChangeBatch, pairs: Sequence[tuple[str, Channel]]) -> None:
        raise NotImplementedError

    def stage_contacts(self, contact_ids: Sequence[str]) -> None:
        """Make *contact_ids* the staged chunk."""
        self._staged = tuple(contact_ids)

    def _pairs(self, channels: Sequence[Channel]) -> list[Pair]:
        current = self.lock_subscriptions(self._staged, channels)
        return [(cid, ch, current.get((cid, ch))) for cid in self._staged for ch in channels]

    def staged_situations(self, channels: Sequence[Channel]) -> list[Situation]:
        """The situations of the staged pairs, in the order they first occur."""
        return situations_of(self._pairs(channels))

    def staged_pairs(
        self,
        channels: Sequence[Channel],
        keys: Sequence[SituationKey],
        *,
        changed_after: datetime | None = None,
        limit: int | None = None,
    ) -> list[StagedPair]:
        """The staged pairs of the situations *keys*, in staging order."""
        return pairs_in(self._pairs(channels), keys, changed_after=changed_after, limit=limit)

    def apply_staged(
        self,
        batch: ChangeBatch,
        channels: Sequence[Channel],
        writes: Sequence[SituationKey],
        notes: Sequence[SituationKey],
    ) -> int:
        """Write the pairs of *writes* and note opt-out requests on those of *notes*."""
        return apply_pairs(self, batch, self._pairs(channels), writes, notes)
