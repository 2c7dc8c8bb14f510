"""Trend counting of the SQL stores, over two small reads each store makes in its own SQL.

Both stores keep the same roll-up, ``hourly_changes``: the number of events per account, UTC
hour, channel, previous state and new state, updated in the transaction of every change.  A store
answers two questions of ranges, and this module does the rest in Python:

* the roll-ups summed over ranges of whole hours ``[first, last)``;
* the events counted over ranges of time ``[low, high)`` (the partial hours at the ends).

Each answers with rows ``(range index, channel key, previous state, new state, count)``.
:func:`totals_at` turns them into state totals (every event moves one pair out of its previous
state and into its new one), :func:`transition_counts` into transitions.  The cost is bounded
by the number of ranges and channels, never by the number of contacts or events.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from consentkit.channels import Channel
from consentkit.model import SubscriptionState, Transition, transition_of
from consentkit.storage._codec import STATES
from consentkit.storage._time import MIN_HOUR, hour_bucket, hour_start, split_interval

__all__ = ["CountRow", "HourRange", "Read", "TimeRange", "totals_at", "transition_counts"]

HourRange = tuple[int, int, int]
"""Whole hours ``[first, last)`` (hour buckets) and the index of the range."""
TimeRange = tuple[datetime, datetime, int]
"""Instants ``[low, high)`` and the index of the range."""
CountRow = tuple[int, str, str, str, Any]
"""``(range index, channel key, previous state, new state, count)``; the count may be any
integer-like value of the driver (PostgreSQL's sums are decimals)."""
Read = Callable[[list[HourRange], list[TimeRange]], tuple[Iterable[CountRow], Iterable[CountRow]]]
"""A store's two reads: the roll-ups over the hour ranges and the events over the time ranges
(a store makes no query for an empty list)."""

_NEVER: Final = SubscriptionState.NEVER_SUBSCRIBED.value


def totals_at(
    instants: Sequence[datetime], read: Read, channel: Callable[[str], Channel]
) -> list[dict[tuple[Channel, SubscriptionState], int]]:
    """For each instant, the number of pairs per (channel, state) given every event before it
    (zero counts omitted).

    The whole hours below the instants are read once, in ranges that partition them (range k
    holds the hours from the previous distinct instant's hour up to the k-th), and summed
    cumulatively; the partial hour before each instant is counted from the events.
    """
    if not instants:
        return []
    cuts = [hour_bucket(i) for i in instants]
    thresholds = sorted(set(cuts))
    position = {t: k for k, t in enumerate(thresholds)}
    lows = [MIN_HOUR, *thresholds[:-1]]
    hours = [(low, high, k) for k, (low, high) in enumerate(zip(lows, thresholds, strict=True))]
    times = [
        (hour_start(cut), moment, k)
        for k, (cut, moment) in enumerate(zip(cuts, instants, strict=True))
        if hour_start(cut) < moment
    ]
    whole, tail = read(hours, times)
    by_threshold: list[dict[tuple[str, str, str], int]] = [defaultdict(int) for _ in thresholds]
    for k, key, previous, new, count in whole:
        by_threshold[k][(key, previous, new)] += int(count)
    cumulative: list[dict[tuple[str, str, str], int]] = []
    running: dict[tuple[str, str, str], int] = defaultdict(int)
    for deltas in by_threshold:
        for triple, count in deltas.items():
            running[triple] += count
        cumulative.append(dict(running))
    tails: dict[int, list[tuple[str, str, str, int]]] = defaultdict(list)
    for k, key, previous, new, count in tail:
        tails[k].append((key, previous, new, int(count)))
    results: list[dict[tuple[Channel, SubscriptionState], int]] = []
    for k, cut in enumerate(cuts):
        totals: dict[tuple[Channel, SubscriptionState], int] = defaultdict(int)
        counts = [(key, p, n, c) for (key, p, n), c in cumulative[position[cut]].items()]
        for key, previous, new, count in itertools.chain(counts, tails.get(k, ())):
            ch = channel(key)
            if previous != _NEVER:
                totals[(ch, STATES[previous])] -= count
            totals[(ch, STATES[new])] += count
        results.append({pair: v for pair, v in totals.items() if v})
    return results


def transition_counts(
    boundaries: Sequence[datetime], read: Read, channel: Callable[[str], Channel]
) -> list[dict[tuple[Channel, Transition], int]]:
    """For each interval ``[boundaries[i], boundaries[i+1])`` the number of events per
    (channel, transition) in it: whole hours from the roll-ups, the partial hours at both ends
    from the events."""
    intervals = list(itertools.pairwise(boundaries))
    hours: list[HourRange] = []
    times: list[TimeRange] = []
    for n, (start, end) in enumerate(intervals):
        whole, edges = split_interval(start, end)
        if whole is not None:
            hours.append((*whole, n))
        times.extend((low, high, n) for low, high in edges)
    results: list[dict[tuple[Channel, Transition], int]] = [defaultdict(int) for _ in intervals]
    if hours or times:
        rollups, events = read(hours, times)
        for n, key, previous, new, count in itertools.chain(rollups, events):
            transition = transition_of(STATES[previous], STATES[new])
            if transition is not None:
                results[n][(channel(key), transition)] += int(count)
    return [dict(r) for r in results]
