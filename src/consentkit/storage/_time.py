"""Time for the stores: column encodings of instants, and the UTC hours of the roll-ups.

The trend roll-ups count events per whole UTC hour since the Unix epoch (an integer "hour
bucket"); an interval of time is read as the whole hours it covers from the roll-ups plus the
partial hours at its ends from the events (:func:`split_interval`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "EPOCH",
    "MIN_HOUR",
    "cached_instants",
    "hour_bucket",
    "hour_start",
    "instant",
    "micros",
    "split_interval",
    "utc",
]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MIN_HOUR: Final = -(2**63)  # below every hour bucket (a 64-bit integer column)
_HOUR: Final = timedelta(hours=1)
_MICROSECOND: Final = timedelta(microseconds=1)


def micros(value: datetime) -> int:
    """An instant as integer microseconds since the Unix epoch (how SQLite stores times)."""
    return (value - EPOCH) // _MICROSECOND


def instant(value: int) -> datetime:
    """The instant of :func:`micros`."""
    return EPOCH + timedelta(microseconds=value)


def cached_instants() -> Callable[[int], datetime]:
    """:func:`instant` with a cache, for one read: the rows of one bulk write share their time,
    so each instant is built once."""
    cache: dict[int, datetime] = {}
    get = cache.get

    def cached(value: int) -> datetime:
        found = get(value)
        if found is None:
            found = cache[value] = EPOCH + timedelta(microseconds=value)
        return found

    return cached


def utc(value: datetime) -> datetime:
    """An aware datetime in UTC (how PostgreSQL's timestamptz loads with ``TimeZone`` UTC)."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def hour_bucket(value: datetime) -> int:
    """The whole UTC hours since the Unix epoch before *value* (floored, also before 1970)."""
    return int((value - EPOCH) // _HOUR)


def hour_start(bucket: int) -> datetime:
    """The instant an hour bucket starts."""
    return EPOCH + bucket * _HOUR


def split_interval(
    start: datetime, end: datetime
) -> tuple[tuple[int, int] | None, list[tuple[datetime, datetime]]]:
    """``[start, end)`` as the whole hours it covers, ``(first, last)`` with *last* exclusive
    (None when it covers none), and the non-empty partial-hour edges ``[low, high)`` left over
    (the whole interval when it covers no whole hour)."""
    if not start < end:
        return None, []
    first = hour_bucket(start)
    if hour_start(first) < start:
        first += 1
    last = hour_bucket(end)
    if first >= last:
        return None, [(start, end)]
    edges = [(start, hour_start(first)), (hour_start(last), end)]
    return (first, last), [(low, high) for low, high in edges if low < high]
