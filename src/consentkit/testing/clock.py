"""A clock the tests control."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from consentkit.model import ensure_aware

__all__ = ["FakeClock"]


class FakeClock:
    """A thread-safe clock that only moves when told to.

    Args:
        start: the initial time (aware); 2026-01-01T00:00Z by default.
        tick: added after every :meth:`now` call, so consecutive events get distinct times
            (zero by default: time stands still).
    """

    def __init__(
        self,
        start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
        *,
        tick: timedelta = timedelta(0),
    ) -> None:
        self._now = ensure_aware("start", start)
        self._tick = tick
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The current fake time (then advanced by *tick*)."""
        with self._lock:
            current = self._now
            self._now = current + self._tick
            return current

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by *delta* or by ``timedelta(**kwargs)``; returns the new time."""
        step = delta if delta is not None else timedelta(**kwargs)
        if step < timedelta(0):
            raise ValueError("a FakeClock only moves forward; use set() to jump")
        with self._lock:
            self._now += step
            return self._now

    def set(self, instant: datetime) -> None:
        """Jump to *instant* (aware)."""
        with self._lock:
            self._now = ensure_aware("instant", instant)
