"""Checking that a store's current state is the replay of its audit trail."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from consentkit.channels import Channel
from consentkit.model import ConsentEvent, SubscriptionState

__all__ = ["ReplayMismatch", "check_replay", "replay"]


class ReplayMismatch(AssertionError):
    """The stored state and the replay of the events disagree."""


def replay(events: Iterable[ConsentEvent]) -> dict[tuple[str, Channel], SubscriptionState]:
    """Fold events (in append order) into the state of every pair they touch.

    Raises:
        ReplayMismatch: an event's ``previous_state`` is not the state the earlier events left.
    """
    state: dict[tuple[str, Channel], SubscriptionState] = {}
    for event in events:
        key = (event.contact_id, event.channel)
        before = state.get(key, SubscriptionState.NEVER_SUBSCRIBED)
        if event.previous_state is not before:
            raise ReplayMismatch(
                f"event {event.sequence} of {event.contact_id!r} on {event.channel.key} says it "
                f"changed {event.previous_state.value}, but the earlier events left "
                f"{before.value}"
            )
        if event.new_state is event.previous_state:
            raise ReplayMismatch(f"event {event.sequence} records a no-op")
        state[key] = event.new_state
    return state


def check_replay(store: object, account: str) -> dict[tuple[str, Channel], SubscriptionState]:
    """Assert that every subscription of *account* in *store* equals the replay of its events, and
    that no subscription exists without the events that made it.

    *store* is any :class:`~consentkit.storage.Store`.  Returns the replayed state.
    """
    from consentkit.storage.base import Store

    assert isinstance(store, Store)
    counts: Counter[tuple[str, Channel]] = Counter()

    def counted(events: Iterable[ConsentEvent]) -> Iterator[ConsentEvent]:
        for event in events:
            counts[(event.contact_id, event.channel)] += 1
            yield event

    # One pass over the log: the per-pair event counts come from it too.
    replayed = replay(counted(store.events(account)))
    # Every stored subscription, also one that no event mentions (a write that lost its event).
    after: str | None = None
    while page := store.list_contacts(account, after=after, limit=500):
        for contact in page:
            for stored in store.subscriptions_of(account, contact.id):
                if (contact.id, stored.channel) not in replayed:
                    raise ReplayMismatch(
                        f"{contact.id!r} on {stored.channel.key}: stored {stored.state.value} at "
                        f"version {stored.version}, but no event records it"
                    )
        after = page[-1].id
    for (contact_id, ch), expected in replayed.items():
        sub = store.get_subscription(account, contact_id, ch)
        actual = SubscriptionState.NEVER_SUBSCRIBED if sub is None else sub.state
        if actual is not expected:
            raise ReplayMismatch(
                f"{contact_id!r} on {ch.key}: stored {actual.value}, replay gives {expected.value}"
            )
        state = store.get_state(account, contact_id, ch)
        if state is not expected:
            raise ReplayMismatch(
                f"{contact_id!r} on {ch.key}: get_state gives {state.value}, replay gives "
                f"{expected.value}"
            )
        if sub is not None:
            count = counts[(contact_id, ch)]
            if sub.version != count:
                raise ReplayMismatch(
                    f"{contact_id!r} on {ch.key}: version {sub.version} but {count} events"
                )
    return replayed
