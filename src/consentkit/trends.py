"""Month-over-month subscriber trends: what changed since last month, a monthly series, and spikes.

This module is pure: it reads no clock, does no I/O and keeps no state.  It decides *which* instants
and intervals a store must be asked about, and turns the store's figures into a
:class:`TrendReport`.  :meth:`consentkit.service.ConsentService.trends` does, in outline::

    plan = plan_report(now, "America/New_York")
    totals = ...  # the store's totals at each of plan.totals_instants()
    counts = ...  # the store's transition counts over each of plan.count_intervals()
    report = plan.build(totals=totals, counts=counts)

Two figures come from a store, and both use half-open time so they add up without double counting:

* **totals at an instant** ``t`` (:class:`ChannelTotals` per channel): how many (contact, channel)
  pairs were ``SUBSCRIBED`` and how many ``UNSUBSCRIBED`` after replaying every event with
  ``occurred_at < t``.  Never-subscribed pairs are in neither figure.
* **transition counts over an interval** ``[start, end)`` (:class:`TransitionCounts` per channel):
  events with ``start <= occurred_at < end``, by kind.

Calendar rules, all in the account's time zone:

* "One month earlier" is the same local wall time one calendar month earlier, with the day clamped
  to the end of a shorter month (Mar 31 -> Feb 29 in a leap year, Feb 28 otherwise).
* A local wall time that does not exist (a DST gap) or exists twice (a DST fold) is resolved with
  ``fold=0`` and normalised through UTC: a time in a gap moves forward by the length of the gap
  (02:30 on a spring-forward night becomes 03:30), an ambiguous time means its first occurrence.
* Month boundaries are local midnight on the 1st, so a DST change never moves a boundary off local
  midnight; only its UTC offset differs.  Where midnight itself falls in a gap the boundary is the
  first instant of the day.

Every instant this module returns is an aware datetime in UTC.  Instants it is given must lie in
``[1970-01-01T00:00Z, 9000-01-01T00:00Z)`` (:func:`consentkit.model.ensure_aware`; others raise
ValidationError).  No event can occur before 1970, so where a report's plan reaches back past it
(an ``as_of`` in 1970 or 1971) :func:`plan_report` clamps those instants to 1970-01-01T00:00Z:
the totals there are zero and the windows before it empty, which is what the store would find.
"""

from __future__ import annotations

import calendar
import enum
import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from consentkit.channels import Channel
from consentkit.errors import ValidationError
from consentkit.model import (
    MIN_INSTANT,
    SubscriptionState,
    Transition,
    ensure_aware,
    enum_value,
)

__all__ = [
    "MAX_SERIES_MONTHS",
    "NO_PERCENTAGE_NOTE",
    "Change",
    "ChannelTotals",
    "ChannelTrend",
    "Direction",
    "Interval",
    "MonthEnd",
    "ReportPlan",
    "SeriesPoint",
    "SpikeCheck",
    "SpikeSettings",
    "SpikeWindow",
    "SpikeWindows",
    "TransitionCounts",
    "TrendReport",
    "build_report",
    "change",
    "detect_spike",
    "evaluate_spikes",
    "month_boundaries",
    "month_ends",
    "month_start",
    "months_earlier",
    "one_month_earlier",
    "plan_report",
    "sparkline",
    "spike_windows",
    "totals_by_channel",
    "validate_timezone",
]

MAX_SERIES_MONTHS = 120
"""The longest series :func:`month_boundaries` plans: each month costs the store one lookup."""

NO_PERCENTAGE_NOTE = "no percentage: the total one month earlier was 0"
"""The :attr:`Change.note` of a change whose previous total was 0."""

_WEEK = timedelta(days=7)
_MONTH_LABEL_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_SPARK_BARS = "▁▂▃▄▅▆▇█"


# --- time zones and calendar arithmetic -------------------------------------------------------


def validate_timezone(tz: str | ZoneInfo) -> ZoneInfo:
    """Return the IANA time zone named by *tz* (or *tz* itself if it already is one).

    Raises:
        ValidationError: (field ``timezone``) the name is not a known IANA time zone.
    """
    if isinstance(tz, ZoneInfo):
        if tz.key is None:
            raise ValidationError(
                "timezone", "the ZoneInfo has no IANA key: create it with ZoneInfo('Area/City')"
            )
        return tz
    if not isinstance(tz, str):
        raise ValidationError(
            "timezone",
            f"expected an IANA time zone name such as 'Europe/Berlin', got {type(tz).__name__}",
        )
    try:
        return ZoneInfo(tz)
    # ZoneInfo raises KeyError for unknown keys, ValueError for malformed keys or non-TZif files
    # and OSError for unreadable paths; all of them mean "not a usable zone name" to the caller.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            "timezone",
            f"{tz[:64]!r} is not a known IANA time zone: use a name such as 'Europe/Berlin' "
            "or 'America/New_York' (case matters)",
        ) from None


def _require_aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(field, f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:  # ensure_aware below refuses an offset of None, and the range
        raise ValidationError(
            field,
            f"{value.isoformat()} is naive: pass a timezone-aware datetime "
            "(e.g. datetime.now(UTC)) so the instant is unambiguous",
        )
    return ensure_aware(field, value).astimezone(UTC)


def _clamped(instant: datetime) -> datetime:
    """*instant*, or 1970-01-01T00:00Z if it is earlier: nothing can have happened before it."""
    return max(instant, MIN_INSTANT)


def _local(as_of: datetime, tz: ZoneInfo, field: str) -> datetime:
    """*as_of* as naive local wall time in *tz* (after checking it is aware)."""
    return _require_aware(as_of, field).astimezone(tz).replace(tzinfo=None, fold=0)


def _resolve(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of naive local *wall* time in *tz*, by the gap/fold rule of this module."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    shifted_year, shifted_month = divmod(index, 12)
    # Years 1 and 9999 would overflow when local midnight is converted to UTC.
    if not 2 <= shifted_year <= 9998:
        raise ValidationError(
            "as_of", f"{delta:+d} months from {year:04d}-{month:02d} is out of range"
        )
    return shifted_year, shifted_month + 1


def _month_label(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def months_earlier(as_of: datetime, tz: ZoneInfo, months: int) -> datetime:
    """The same local wall time *months* calendar months before *as_of*, day clamped, in UTC.

    The day is clamped once, from *as_of* itself, so two months before Mar 31 is Jan 31 (not the
    Jan 28/29 that clamping through February twice would give).

    Raises:
        ValidationError: *as_of* is naive (field ``as_of``) or *months* is negative.
    """
    if isinstance(months, bool) or not isinstance(months, int) or months < 0:
        raise ValidationError("months", f"expected a whole number of months >= 0, got {months!r}")
    tz = validate_timezone(tz)
    local = _local(as_of, tz, "as_of")
    year, month = _shift_month(local.year, local.month, -months)
    day = min(local.day, calendar.monthrange(year, month)[1])
    return _resolve(local.replace(year=year, month=month, day=day), tz)


def one_month_earlier(as_of: datetime, tz: ZoneInfo) -> datetime:
    """The instant the current totals are compared with: *as_of*'s local wall time one calendar
    month earlier, day clamped (Mar 31 -> Feb 28/29, May 31 -> Apr 30), as aware UTC.

    Raises:
        ValidationError: (field ``as_of``) *as_of* is naive.
    """
    return months_earlier(as_of, tz, 1)


def month_start(as_of: datetime, tz: ZoneInfo) -> datetime:
    """Local midnight on the 1st of *as_of*'s local month, as aware UTC.

    Raises:
        ValidationError: (field ``as_of``) *as_of* is naive.
    """
    tz = validate_timezone(tz)
    local = _local(as_of, tz, "as_of")
    return _start_of(local.year, local.month, tz)


def _check_months(months: object) -> int:
    if (
        isinstance(months, bool)
        or not isinstance(months, int)
        or not 1 <= months <= MAX_SERIES_MONTHS
    ):
        raise ValidationError(
            "months", f"expected a whole number from 1 to {MAX_SERIES_MONTHS}, got {months!r}"
        )
    return months


def month_boundaries(as_of: datetime, tz: ZoneInfo, months: int) -> tuple[datetime, ...]:
    """The starts (local midnight on the 1st) of the last *months* local months, oldest first.

    The last element is the start of *as_of*'s own month.  Each boundary is computed from the
    calendar, not by adding durations, so it stays on local midnight whatever DST does.

    Raises:
        ValidationError: *as_of* is naive (field ``as_of``) or *months* is not in
            ``1..MAX_SERIES_MONTHS`` (field ``months``).
    """
    tz = validate_timezone(tz)
    local = _local(as_of, tz, "as_of")
    return tuple(_start_of(year, month, tz) for year, month in _last_months(local, months))


def _last_months(local: datetime, months: int) -> list[tuple[int, int]]:
    """The (year, month) of the last *months* months up to *local*'s, oldest first."""
    count = _check_months(months)
    return [_shift_month(local.year, local.month, -back) for back in range(count - 1, -1, -1)]


def _start_of(year: int, month: int, tz: ZoneInfo) -> datetime:
    return _resolve(datetime(year, month, 1), tz)


@attrs.frozen
class MonthEnd:
    """One point of the monthly series to ask the store for: a local month and the instant its
    totals are read at.

    Attributes:
        month: the local month, ``"YYYY-MM"``.
        at: the start of the next local month for a complete month, or ``as_of`` for the current
            (month-to-date) one; aware UTC.
    """

    month: str
    at: datetime

    def point(self, totals: Mapping[Channel, ChannelTotals]) -> SeriesPoint:
        """The series point for this month, given the store's totals at :attr:`at`."""
        return SeriesPoint(month=self.month, at=self.at, totals=totals)


def month_ends(as_of: datetime, tz: ZoneInfo, months: int) -> tuple[MonthEnd, ...]:
    """The instants of a *months*-long monthly series ending with *as_of*'s month, oldest first.

    Every complete month is read at its end (the start of the next local month); the last, current
    month is read at *as_of* itself, so the last point is "month to date" and equals the current
    totals.  ``months=12`` gives 11 complete months and the month to date.  A month that ended
    before 1970-01-01T00:00Z is read at that instant instead (see the module docstring).

    Raises:
        ValidationError: *as_of* is naive or *months* is not in ``1..MAX_SERIES_MONTHS``.
    """
    tz = validate_timezone(tz)
    now = _require_aware(as_of, "as_of")
    months_wanted = _last_months(_local(now, tz, "as_of"), months)
    instants = (
        *(_clamped(_start_of(year, month, tz)) for year, month in months_wanted[1:]),
        now,
    )
    return tuple(
        MonthEnd(month=_month_label(year, month), at=at)
        for (year, month), at in zip(months_wanted, instants, strict=True)
    )


# --- figures from the store -------------------------------------------------------------------


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(
            attribute.name,
            f"expected a whole number >= 0, got {value!r}: a count is never negative",
        )


@attrs.frozen
class ChannelTotals:
    """How many (contact, channel) pairs of a channel are subscribed and unsubscribed at an instant.

    Attributes:
        subscribed: pairs in state ``SUBSCRIBED``.
        unsubscribed: pairs in state ``UNSUBSCRIBED`` (never-subscribed pairs are not counted).
    """

    subscribed: int = attrs.field(default=0, validator=_non_negative)
    unsubscribed: int = attrs.field(default=0, validator=_non_negative)


@attrs.frozen
class TransitionCounts:
    """How many transitions of each kind one channel saw during an interval.

    Attributes:
        opt_ins: never-subscribed -> subscribed.
        unsubscribes: any state -> unsubscribed (including suppression of never-subscribed pairs).
        resubscribes: unsubscribed -> subscribed.
    """

    opt_ins: int = attrs.field(default=0, validator=_non_negative)
    unsubscribes: int = attrs.field(default=0, validator=_non_negative)
    resubscribes: int = attrs.field(default=0, validator=_non_negative)

    def __add__(self, other: TransitionCounts) -> TransitionCounts:
        if not isinstance(other, TransitionCounts):
            return NotImplemented
        return TransitionCounts(
            opt_ins=self.opt_ins + other.opt_ins,
            unsubscribes=self.unsubscribes + other.unsubscribes,
            resubscribes=self.resubscribes + other.resubscribes,
        )

    @property
    def any_activity(self) -> bool:
        """Whether anything at all happened on the channel during the interval."""
        return bool(self.opt_ins or self.unsubscribes or self.resubscribes)


def _aware_start(value: datetime) -> datetime:
    return _require_aware(value, "start")


def _aware_end(value: datetime) -> datetime:
    return _require_aware(value, "end")


def _aware_at(value: datetime) -> datetime:
    return _require_aware(value, "at")


_NO_TOTALS = ChannelTotals()
_NO_TRANSITIONS = TransitionCounts()


@attrs.frozen
class Interval:
    """A half-open span of time ``[start, end)`` to count transitions over.

    Attributes:
        start: first instant included, aware UTC.
        end: first instant excluded, aware UTC; never before :attr:`start` (an empty interval is
            allowed: month to date at exactly midnight on the 1st).
    """

    start: datetime = attrs.field(converter=_aware_start)
    end: datetime = attrs.field(converter=_aware_end)

    def __attrs_post_init__(self) -> None:
        if self.end < self.start:
            raise ValidationError(
                "end", f"{self.end.isoformat()} is before start {self.start.isoformat()}"
            )

    @property
    def duration(self) -> timedelta:
        """Elapsed time from start to end."""
        return self.end - self.start


# --- month-over-month change -----------------------------------------------------------------


class Direction(enum.Enum):
    """Which way a total moved."""

    UP = "up"
    DOWN = "down"
    FLAT = "flat"


@attrs.frozen
class Change:
    """How one total moved between one month earlier and now.  Build it with :func:`change`.

    Attributes:
        previous: the total one month earlier.
        current: the total now.
        absolute: ``current - previous``.
        percent: ``absolute / previous * 100`` at full precision, or ``None`` when *previous* is 0.
        direction: the sign of :attr:`absolute`.
        note: why there is no percentage (:data:`NO_PERCENTAGE_NOTE`), else ``None``.
    """

    previous: int = attrs.field(validator=_non_negative)
    current: int = attrs.field(validator=_non_negative)
    absolute: int
    percent: float | None
    direction: Direction
    note: str | None

    def __attrs_post_init__(self) -> None:
        # Direct construction (or structuring from JSON) must not yield a self-contradicting change.
        derived = _derive(self.previous, self.current)
        if (self.absolute, self.percent, self.direction, self.note) != derived:
            raise ValidationError(
                "change",
                f"inconsistent figures for {self.previous} -> {self.current}: "
                "build a Change with consentkit.trends.change(previous, current)",
            )

    def describe(self) -> str:
        """A short label: ``"+12.5%"``, ``"-3.0%"``, ``"0.0%"``, or ``"n/a (was 0)"``."""
        if self.percent is None:
            return "n/a (was 0)"
        if self.absolute == 0:
            return "0.0%"
        return f"{self.percent:+.1f}%"


def _derive(previous: int, current: int) -> tuple[int, float | None, Direction, str | None]:
    absolute = current - previous
    if absolute > 0:
        direction = Direction.UP
    elif absolute < 0:
        direction = Direction.DOWN
    else:
        direction = Direction.FLAT
    if previous == 0:
        return absolute, None, direction, NO_PERCENTAGE_NOTE
    return absolute, absolute / previous * 100.0, direction, None


def change(previous: int, current: int) -> Change:
    """The change from *previous* to *current*; no percentage (and a note) when *previous* is 0.

    Raises:
        ValidationError: either figure is negative or not a whole number.
    """
    for name, value in (("previous", previous), ("current", current)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(name, f"expected a whole number >= 0, got {value!r}")
    absolute, percent, direction, note = _derive(previous, current)
    return Change(previous, current, absolute, percent, direction, note)


@attrs.frozen
class ChannelTrend:
    """How one channel's subscribed and unsubscribed totals moved since one month earlier.

    Attributes:
        channel: the channel.
        subscribed: change of the subscribed total.
        unsubscribed: change of the unsubscribed total.
    """

    channel: Channel
    subscribed: Change
    unsubscribed: Change


# --- monthly series ---------------------------------------------------------------------------


def _freeze_totals(
    totals: Mapping[Channel, ChannelTotals] | Iterable[tuple[Channel, ChannelTotals]],
) -> tuple[tuple[Channel, ChannelTotals], ...]:
    if isinstance(totals, Mapping):
        pairs = list(totals.items())
    elif isinstance(totals, Iterable) and not isinstance(totals, str | bytes):
        pairs = list(totals)
    else:
        raise ValidationError(
            "totals", f"expected Channel -> ChannelTotals pairs, got {type(totals).__name__}"
        )
    seen: set[Channel] = set()
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValidationError("totals", "expected Channel -> ChannelTotals pairs")
        ch, figures = pair
        if not isinstance(ch, Channel) or not isinstance(figures, ChannelTotals):
            raise ValidationError("totals", "expected Channel -> ChannelTotals pairs")
        if ch in seen:
            raise ValidationError("totals", f"channel {ch.key!r} appears twice")
        seen.add(ch)
    return tuple(sorted(pairs, key=lambda pair: pair[0]))


def _check_month_label(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _MONTH_LABEL_RE.fullmatch(value):
        raise ValidationError("month", f"expected a local month as 'YYYY-MM', got {value!r}")


@attrs.frozen
class SeriesPoint:
    """The totals of every channel at the end of one local month (or at ``as_of`` for the current
    month).

    Attributes:
        month: the local month, ``"YYYY-MM"``.
        at: the instant the totals were read at, aware UTC.
        totals: ``(channel, totals)`` pairs sorted by channel; a mapping is accepted and frozen.
    """

    month: str = attrs.field(validator=_check_month_label)
    at: datetime = attrs.field(converter=_aware_at)
    totals: tuple[tuple[Channel, ChannelTotals], ...] = attrs.field(converter=_freeze_totals)

    def totals_of(self, ch: Channel) -> ChannelTotals:
        """The totals of *ch* at :attr:`at` (zero when the store reported nothing for it)."""
        for candidate, figures in self.totals:
            if candidate == ch:
                return figures
        return _NO_TOTALS


# --- spikes -----------------------------------------------------------------------------------


class SpikeWindow(enum.StrEnum):
    """The recent window whose unsubscribes are checked against a baseline."""

    LAST_7_DAYS = "last_7_days"
    """The 168 hours before ``as_of``, against the 168-hour windows just before it."""
    MONTH_TO_DATE = "month_to_date"
    """Local month start to ``as_of``, against the same span of previous months."""


_WINDOW_ORDER = {window: index for index, window in enumerate(SpikeWindow)}


def _whole(minimum: int, maximum: int) -> Callable[[object, attrs.Attribute[int], object], None]:
    def check(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ValidationError(
                attribute.name,
                f"expected a whole number from {minimum} to {maximum}, got {value!r}",
            )

    return check


def _positive_finite(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(attribute.name, f"expected a finite number > 0, got {value!r}")


@attrs.frozen
class SpikeSettings:
    """How unsubscribe spikes are detected.

    A window is flagged when its unsubscribes reach :attr:`min_observed` and exceed
    ``mean + z_threshold * max(sd, sqrt(mean), 1)`` of its baseline.  The floor on the standard
    deviation stops a quiet, regular baseline (all zeros, or always exactly 5) from turning one
    extra unsubscribe into a spike; ``sqrt(mean)`` is the spread a Poisson count would have.

    Attributes:
        baseline_weeks: how many 7-day windows before the last 7 days form its baseline.
        z_threshold: how many standard deviations above the mean count as a spike.
        min_baseline_weeks: the fewest weekly baseline windows with history needed to judge.
        min_observed: never flag fewer unsubscribes than this, however quiet the baseline.
        baseline_months: how many previous months' same span form the month-to-date baseline.
        min_baseline_months: the fewest monthly baseline periods with history needed to judge.
    """

    baseline_weeks: int = attrs.field(default=8, validator=_whole(2, 52))
    z_threshold: float = attrs.field(default=3.0, validator=_positive_finite)
    min_baseline_weeks: int = attrs.field(default=4, validator=_whole(2, 52))
    min_observed: int = attrs.field(default=5, validator=_whole(1, 1_000_000))
    baseline_months: int = attrs.field(default=6, validator=_whole(2, 24))
    min_baseline_months: int = attrs.field(default=3, validator=_whole(2, 24))

    def __attrs_post_init__(self) -> None:
        if self.min_baseline_weeks > self.baseline_weeks:
            raise ValidationError(
                "min_baseline_weeks",
                f"{self.min_baseline_weeks} exceeds baseline_weeks={self.baseline_weeks}",
            )
        if self.min_baseline_months > self.baseline_months:
            raise ValidationError(
                "min_baseline_months",
                f"{self.min_baseline_months} exceeds baseline_months={self.baseline_months}",
            )

    def baseline_size(self, window: SpikeWindow) -> int:
        """How many baseline periods *window* is compared with."""
        return self.baseline_weeks if window is SpikeWindow.LAST_7_DAYS else self.baseline_months

    def min_history(self, window: SpikeWindow) -> int:
        """How many baseline periods with history *window* needs before it can be flagged."""
        if window is SpikeWindow.LAST_7_DAYS:
            return self.min_baseline_weeks
        return self.min_baseline_months


@attrs.frozen
class SpikeWindows:
    """The intervals whose transitions the store must count for spike detection.

    Attributes:
        as_of: the instant the report is for, aware UTC.
        settings: the settings the windows were planned with (and are evaluated with).
        last_7_days: ``[as_of - 168 hours, as_of)``: elapsed hours, not local days, so every
            weekly window has the same length whatever DST does.
        weekly_baseline: the ``baseline_weeks`` 7-day windows just before :attr:`last_7_days`,
            contiguous, oldest first.
        month_to_date: ``[month_start(as_of), as_of)``.
        monthly_baseline: for each of the ``baseline_months`` previous months, oldest first, from
            its local month start to the same local wall time *k* months before ``as_of`` (day
            clamped): the "same point of the month" in earlier months.  A shorter month (February)
            gives a shorter period; that bias is small next to the spread between months.
    """

    as_of: datetime
    settings: SpikeSettings
    last_7_days: Interval
    weekly_baseline: tuple[Interval, ...]
    month_to_date: Interval
    monthly_baseline: tuple[Interval, ...]

    def intervals(self) -> tuple[Interval, ...]:
        """Every interval to count, each once: weekly baseline, last 7 days, monthly baseline,
        month to date."""
        ordered = (
            *self.weekly_baseline,
            self.last_7_days,
            *self.monthly_baseline,
            self.month_to_date,
        )
        return tuple(dict.fromkeys(ordered))


def spike_windows(
    as_of: datetime, tz: ZoneInfo, settings: SpikeSettings | None = None
) -> SpikeWindows:
    """Plan the intervals whose transition counts spike detection needs (see :class:`SpikeWindows`).

    Interval edges before 1970-01-01T00:00Z are clamped to it (see the module docstring), so a
    baseline period wholly before it is empty.

    Raises:
        ValidationError: (field ``as_of``) *as_of* is naive or out of range; (field
            ``spike_settings``) *settings* is not a SpikeSettings.
    """
    if settings is not None and not isinstance(settings, SpikeSettings):
        raise ValidationError(
            "spike_settings", f"expected SpikeSettings or None, got {type(settings).__name__}"
        )
    chosen = SpikeSettings() if settings is None else settings
    tz = validate_timezone(tz)
    now = _require_aware(as_of, "as_of")

    def span(start: datetime, end: datetime) -> Interval:
        return Interval(_clamped(start), _clamped(end))

    weekly = tuple(
        span(now - _WEEK * (back + 1), now - _WEEK * back)
        for back in range(chosen.baseline_weeks, 0, -1)
    )
    local = _local(now, tz, "as_of")
    monthly = []
    for back in range(chosen.baseline_months, 0, -1):
        start = _start_of(*_shift_month(local.year, local.month, -back), tz)
        same_point = months_earlier(now, tz, back)
        # A wall time in a DST gap resolves one gap-length later, which in a zone whose clocks
        # jump at midnight can land before the month start; an empty period is the honest answer.
        monthly.append(span(start, max(start, same_point)))
    return SpikeWindows(
        as_of=now,
        settings=chosen,
        last_7_days=span(now - _WEEK, now),
        weekly_baseline=weekly,
        month_to_date=span(month_start(now, tz), now),
        monthly_baseline=tuple(monthly),
    )


@attrs.frozen
class SpikeCheck:
    """The verdict on one channel's unsubscribes in one recent window, with the figures behind it.

    Attributes:
        channel: the channel.
        window: which recent window was checked.
        observed: unsubscribes in the window.
        baseline_mean: mean unsubscribes per baseline period with history, or ``None`` when
            there was too little history.
        baseline_stdev: sample standard deviation of those periods (before the floor), or
            ``None`` when there was too little history.
        threshold: the count :attr:`observed` had to exceed to be flagged
            (``mean + z * max(sd, sqrt(mean), 1)``), or ``None`` when there was too little history.
        z_score: how many (floored) standard deviations :attr:`observed` is above the mean, or
            ``None`` when there was too little history.
        history_periods: baseline periods that had history.
        baseline_periods: baseline periods asked for.
        flagged: whether this is a spike worth a look.
        reason: one sentence with the figures that led to the verdict.
    """

    channel: Channel
    window: SpikeWindow
    observed: int
    baseline_mean: float | None
    baseline_stdev: float | None
    threshold: float | None
    z_score: float | None
    history_periods: int
    baseline_periods: int
    flagged: bool
    reason: str


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def detect_spike(
    channel: Channel,
    window: SpikeWindow | str,
    observed: int,
    baseline: Sequence[int | None],
    settings: SpikeSettings | None = None,
) -> SpikeCheck:
    """Judge whether *observed* unsubscribes in *window* are a spike against *baseline*.

    *baseline* holds one unsubscribe count per baseline period; ``None`` marks a period with no
    history yet (the channel had no activity at all by then), which is left out of the statistics.
    Zeros are real history.  Rules, in order:

    1. Fewer periods with history than ``min_baseline_weeks`` / ``min_baseline_months``: not
       flagged, "not enough history".
    2. *observed* below ``min_observed``: not flagged, however quiet the baseline.
    3. Flagged when *observed* exceeds ``mean + z_threshold * max(sd, sqrt(mean), 1)``.

    Raises:
        ValidationError: an unknown *window*, or a negative count.
    """
    if settings is not None and not isinstance(settings, SpikeSettings):
        raise ValidationError(
            "settings", f"expected SpikeSettings or None, got {type(settings).__name__}"
        )
    chosen = SpikeSettings() if settings is None else settings
    which = enum_value(SpikeWindow, "window", window)
    if isinstance(observed, bool) or not isinstance(observed, int) or observed < 0:
        raise ValidationError("observed", f"expected a whole number >= 0, got {observed!r}")
    if isinstance(baseline, str | bytes) or not isinstance(baseline, Sequence):
        raise ValidationError(
            "baseline", f"expected a sequence of counts, got {type(baseline).__name__}"
        )
    history = [count for count in baseline if count is not None]
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in history):
        raise ValidationError("baseline", "expected whole numbers >= 0 (or None for no history)")

    unit = "week" if which is SpikeWindow.LAST_7_DAYS else "month"
    where = "in the last 7 days" if which is SpikeWindow.LAST_7_DAYS else "so far this month"
    size, needed = len(baseline), chosen.min_history(which)

    def verdict(**figures: Any) -> SpikeCheck:
        return SpikeCheck(
            channel=channel,
            window=which,
            observed=observed,
            history_periods=len(history),
            baseline_periods=size,
            **figures,
        )

    if len(history) < needed:
        have = "has" if len(history) == 1 else "have"
        return verdict(
            baseline_mean=None,
            baseline_stdev=None,
            threshold=None,
            z_score=None,
            flagged=False,
            reason=(
                f"not enough history: {len(history)} of {_plural(size, f'baseline {unit}')} "
                f"{have} data (at least {needed} needed)"
            ),
        )

    mean = statistics.fmean(history)
    stdev = statistics.stdev(history) if len(history) >= 2 else 0.0
    spread = max(stdev, math.sqrt(mean), 1.0)
    threshold = mean + chosen.z_threshold * spread
    z_score = (observed - mean) / spread
    over = "the previous " + _plural(size, unit)
    if len(history) < size:
        over += f" ({len(history)} with data)"
    if which is SpikeWindow.MONTH_TO_DATE:
        over += " at the same point of the month"
    sd_text = f"sd {stdev:.1f}" if spread == stdev else f"sd {stdev:.1f}, floored to {spread:.1f}"
    count_text = _plural(observed, "unsubscribe")
    figures = f"{count_text} {where} vs a mean of {mean:.1f} ({sd_text}) over {over}"
    side = "above" if z_score >= 0 else "below"
    distance = f"{abs(z_score):.1f} sd {side} the mean"
    z_text = f"{chosen.z_threshold:g} sd"

    if observed < chosen.min_observed:
        flagged = False
        needed_text = _plural(chosen.min_observed, "unsubscribe")
        reason = f"{figures}: fewer than the {needed_text} needed to flag a spike"
    elif observed > threshold:
        flagged = True
        reason = f"{figures}: {distance}, over the {z_text} threshold of {threshold:.1f}"
    else:
        flagged = False
        reason = f"{figures}: {distance}, within the {z_text} threshold of {threshold:.1f}"
    return verdict(
        baseline_mean=mean,
        baseline_stdev=stdev,
        threshold=threshold,
        z_score=z_score,
        flagged=flagged,
        reason=reason,
    )


def _baseline_history(periods: Sequence[TransitionCounts]) -> list[int | None]:
    """Unsubscribes per period, oldest first, with ``None`` before the channel's first activity.

    A channel's history starts at the oldest baseline period with any transition (opt-in,
    unsubscribe or resubscribe); quiet periods after that are real zeros.  This keeps a new account
    (empty baseline) from being flagged on its first busy week, while a steady channel whose weeks
    had opt-ins but no unsubscribes still gets a baseline of zeros to be judged against.
    """
    history: list[int | None] = []
    started = False
    for counts in periods:
        started = started or counts.any_activity
        history.append(counts.unsubscribes if started else None)
    return history


def evaluate_spikes(
    windows: SpikeWindows,
    counts: Mapping[Interval, Mapping[Channel, TransitionCounts]],
    *,
    channels: Iterable[Channel] = (),
) -> tuple[SpikeCheck, ...]:
    """Spike checks for every channel and both windows, sorted by channel then window.

    *counts* maps each interval of :meth:`SpikeWindows.intervals` to the store's transition counts
    per channel over it; a channel missing from an interval had no transitions in it.  The checked
    channels are those in *counts* plus *channels*.

    Raises:
        ValidationError: (field ``counts``) an interval of *windows* has no counts.
    """
    if not isinstance(windows, SpikeWindows):
        raise ValidationError(
            "windows", f"expected SpikeWindows (see spike_windows()), got {type(windows).__name__}"
        )
    if not isinstance(counts, Mapping):
        raise ValidationError(
            "counts", f"expected a mapping of Interval -> counts, got {type(counts).__name__}"
        )
    for interval in windows.intervals():
        if interval not in counts:
            raise ValidationError(
                "counts",
                f"no transition counts for [{interval.start.isoformat()}, "
                f"{interval.end.isoformat()}): ask the store for every interval of "
                "SpikeWindows.intervals()",
            )
    every = set(channels)
    for per_channel in counts.values():
        every.update(per_channel)

    def of(interval: Interval, ch: Channel) -> TransitionCounts:
        return counts[interval].get(ch, _NO_TRANSITIONS)

    checks: list[SpikeCheck] = []
    for ch in sorted(every):
        for window, observed, baseline in (
            (SpikeWindow.LAST_7_DAYS, windows.last_7_days, windows.weekly_baseline),
            (SpikeWindow.MONTH_TO_DATE, windows.month_to_date, windows.monthly_baseline),
        ):
            history = _baseline_history([of(period, ch) for period in baseline])
            checks.append(
                detect_spike(ch, window, of(observed, ch).unsubscribes, history, windows.settings)
            )
    return tuple(checks)


# --- the report -------------------------------------------------------------------------------


def _spike_key(check: SpikeCheck) -> tuple[Channel, int]:
    return check.channel, _WINDOW_ORDER[check.window]


@attrs.frozen
class TrendReport:
    """Subscriber trends of one account, per channel, as shown at the top of the contacts page.

    Attributes:
        as_of: the instant the report is for, aware UTC.
        compared_with: the same local wall time one calendar month earlier, aware UTC.
        timezone: the IANA name of the account's time zone.
        channels: one trend per channel, sorted by channel key.
        series: monthly points, oldest first; the last is month to date.
        spikes: every spike check, sorted by channel then window.
    """

    as_of: datetime
    compared_with: datetime
    timezone: str
    channels: tuple[ChannelTrend, ...]
    series: tuple[SeriesPoint, ...]
    spikes: tuple[SpikeCheck, ...]

    @property
    def flagged_spikes(self) -> tuple[SpikeCheck, ...]:
        """The spike checks that were flagged."""
        return tuple(check for check in self.spikes if check.flagged)

    def trend_of(self, ch: Channel) -> ChannelTrend | None:
        """The trend of *ch*, or ``None`` when the report has no figures for it."""
        return next((trend for trend in self.channels if trend.channel == ch), None)

    def series_of(self, ch: Channel) -> tuple[ChannelTotals, ...]:
        """*ch*'s totals at every series point, oldest first (feed ``.subscribed`` to
        :func:`sparkline`)."""
        return tuple(point.totals_of(ch) for point in self.series)


def build_report(
    *,
    as_of: datetime,
    tz: str | ZoneInfo,
    totals_now: Mapping[Channel, ChannelTotals],
    totals_previous: Mapping[Channel, ChannelTotals],
    series: Sequence[SeriesPoint],
    spikes: Sequence[SpikeCheck],
) -> TrendReport:
    """Assemble a report from the store's figures.

    *totals_now* are the totals at *as_of*, *totals_previous* those at
    ``one_month_earlier(as_of, tz)``.  The channels are the union of both; a channel missing on one
    side counts as 0 subscribed and 0 unsubscribed there.  *series* and *spikes* may come in any
    order: the report sorts them.

    Raises:
        ValidationError: *as_of* is naive, *tz* is unknown, or two series points share a month.
    """
    zone = validate_timezone(tz)
    now = _require_aware(as_of, "as_of")
    for name, figures in (("totals_now", totals_now), ("totals_previous", totals_previous)):
        if not isinstance(figures, Mapping) or not all(
            isinstance(ch, Channel) and isinstance(t, ChannelTotals) for ch, t in figures.items()
        ):
            raise ValidationError(name, "expected a mapping of Channel -> ChannelTotals")
    for name, items, kind in (("series", series, SeriesPoint), ("spikes", spikes, SpikeCheck)):
        if isinstance(items, str | bytes) or not isinstance(items, Sequence) or not all(
            isinstance(item, kind) for item in items
        ):
            raise ValidationError(name, f"expected a sequence of {kind.__name__}")
    trends = []
    for ch in sorted(set(totals_now) | set(totals_previous)):
        before = totals_previous.get(ch, _NO_TOTALS)
        after = totals_now.get(ch, _NO_TOTALS)
        trends.append(
            ChannelTrend(
                channel=ch,
                subscribed=change(before.subscribed, after.subscribed),
                unsubscribed=change(before.unsubscribed, after.unsubscribed),
            )
        )
    points = sorted(series, key=lambda point: (point.at, point.month))
    months = [point.month for point in points]
    duplicated = sorted({month for month in months if months.count(month) > 1})
    if duplicated:
        raise ValidationError("series", f"month(s) {', '.join(duplicated)} appear more than once")
    return TrendReport(
        as_of=now,
        compared_with=_clamped(one_month_earlier(now, zone)),
        timezone=str(zone.key),
        channels=tuple(trends),
        series=tuple(points),
        spikes=tuple(sorted(spikes, key=_spike_key)),
    )


_RESOLUTION = timedelta(microseconds=1)
_NO_COUNTS = TransitionCounts()


def _counts_of(transition: Transition, count: int) -> TransitionCounts:
    if transition is Transition.OPT_IN:
        return TransitionCounts(opt_ins=count)
    if transition is Transition.UNSUBSCRIBE:
        return TransitionCounts(unsubscribes=count)
    return TransitionCounts(resubscribes=count)


def totals_by_channel(
    states: Mapping[tuple[Channel, SubscriptionState], int],
) -> dict[Channel, ChannelTotals]:
    """A store's pair counts per (channel, state) as :class:`ChannelTotals` per channel."""
    totals: dict[Channel, ChannelTotals] = {}
    for (ch, state), count in states.items():
        current = totals.get(ch, _NO_TOTALS)
        if state is SubscriptionState.SUBSCRIBED:
            totals[ch] = attrs.evolve(current, subscribed=count)
        elif state is SubscriptionState.UNSUBSCRIBED:
            totals[ch] = attrs.evolve(current, unsubscribed=count)
    return totals


def _through(instant: datetime) -> datetime:
    """The exclusive bound that counts every event at or before *instant*."""
    return instant + _RESOLUTION


@attrs.frozen
class ReportPlan:
    """Everything a service must ask its store for to build one :class:`TrendReport`.

    Attributes:
        as_of: the instant the report is for, aware UTC.
        timezone: the account's time zone.
        compared_with: ``one_month_earlier(as_of, timezone)``, or 1970-01-01T00:00Z if that is
            earlier.
        month_ends: the monthly series to read totals for, oldest first.
        spike_windows: the intervals to count transitions over.
    """

    as_of: datetime
    timezone: ZoneInfo
    compared_with: datetime
    month_ends: tuple[MonthEnd, ...]
    spike_windows: SpikeWindows

    def totals_instants(self) -> tuple[datetime, ...]:
        """The instants the store must report :class:`ChannelTotals` at, oldest first, once each.

        A store counts the events *before* an instant; the totals "as of" ``as_of`` and
        ``compared_with`` include the changes made at that very instant (as ``state()`` does), so
        they are asked for one microsecond (the resolution of a datetime) later.  Month ends are
        midnights: a change at midnight belongs to the new month.
        """
        wanted = {
            self._store_instant(self.as_of),
            self._store_instant(self.compared_with),
            *(self._store_instant(end.at) for end in self.month_ends),
        }
        return tuple(sorted(wanted))

    def _store_instant(self, at: datetime) -> datetime:
        # The series' last point is "as of" too; earlier points are month-end midnights.
        return _through(at) if at in (self.as_of, self.compared_with) else at

    def count_intervals(self) -> tuple[Interval, ...]:
        """Every interval the store must report :class:`TransitionCounts` over, each once."""
        return self.spike_windows.intervals()

    def count_edges(self) -> tuple[datetime, ...]:
        """The edges of every interval of :meth:`count_intervals`, sorted: a store counts the
        elementary intervals between consecutive edges once, and each window is a sum of them."""
        intervals = self.count_intervals()
        return tuple(sorted({i.start for i in intervals} | {i.end for i in intervals}))

    def sum_counts(
        self,
        edges: Sequence[datetime],
        elementary: Sequence[Mapping[tuple[Channel, Transition], int]],
    ) -> dict[Interval, dict[Channel, TransitionCounts]]:
        """The counts of every interval of the plan, from the store's counts per elementary
        interval between consecutive *edges* (as :meth:`count_edges` gave them)."""
        position = {edge: index for index, edge in enumerate(edges)}
        counts: dict[Interval, dict[Channel, TransitionCounts]] = {}
        for interval in self.count_intervals():
            summed: dict[Channel, TransitionCounts] = {}
            for index in range(position[interval.start], position[interval.end]):
                for (ch, transition), count in elementary[index].items():
                    summed[ch] = summed.get(ch, _NO_COUNTS) + _counts_of(transition, count)
            counts[interval] = summed
        return counts

    def build(
        self,
        *,
        totals: Mapping[datetime, Mapping[Channel, ChannelTotals]],
        counts: Mapping[Interval, Mapping[Channel, TransitionCounts]],
    ) -> TrendReport:
        """The report, from the store's totals per instant and transition counts per interval.

        Raises:
            ValidationError: (field ``totals`` / ``counts``) an instant or interval of the plan has
                no figures.
        """

        def at(instant: datetime) -> Mapping[Channel, ChannelTotals]:
            try:
                return totals[instant]
            except KeyError:
                raise ValidationError(
                    "totals",
                    f"no totals at {instant.isoformat()}: ask the store for every instant of "
                    "ReportPlan.totals_instants()",
                ) from None

        return build_report(
            as_of=self.as_of,
            tz=self.timezone,
            totals_now=at(self._store_instant(self.as_of)),
            totals_previous=at(self._store_instant(self.compared_with)),
            series=[end.point(at(self._store_instant(end.at))) for end in self.month_ends],
            spikes=evaluate_spikes(self.spike_windows, counts),
        )


def plan_report(
    as_of: datetime,
    tz: str | ZoneInfo,
    *,
    months: int = 12,
    spike_settings: SpikeSettings | None = None,
) -> ReportPlan:
    """Plan a report for *as_of* in the account's time zone *tz* with a *months*-long series.

    *as_of* may be any instant from 1970-01-01T00:00Z up to (not including) 9000-01-01T00:00Z.
    The plan reaches back up to *months* months (the series) and ``baseline_months`` months and
    ``baseline_weeks + 1`` weeks (the spike baselines); every instant it would place before
    1970-01-01T00:00Z is clamped to it rather than refused: no event can precede it, so the totals
    there are zero and the intervals before it empty, and such early periods count as "no history".

    Raises:
        ValidationError: *as_of* is naive or out of range (field ``as_of``), *tz* is unknown,
            *months* is out of range or *spike_settings* is not SpikeSettings.
    """
    zone = validate_timezone(tz)
    now = _require_aware(as_of, "as_of")
    return ReportPlan(
        as_of=now,
        timezone=zone,
        compared_with=_clamped(one_month_earlier(now, zone)),
        month_ends=month_ends(now, zone, months),
        spike_windows=spike_windows(now, zone, spike_settings),
    )


# --- presentation -----------------------------------------------------------------------------


def sparkline(values: Sequence[int]) -> str:
    """One bar per value, scaled from the smallest (``▁``) to the largest (``█``).

    A constant series has no shape to show and is drawn as a row of ``▄``; an empty one as ``""``.

    Raises:
        ValidationError: (field ``values``) not a sequence of whole numbers.
    """
    if (
        isinstance(values, str | bytes)
        or not isinstance(values, Sequence)
        or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
    ):
        raise ValidationError("values", "expected a sequence of whole numbers")
    if not values:
        return ""
    low, high = min(values), max(values)
    if low == high:
        return _SPARK_BARS[3] * len(values)
    span = high - low
    top = len(_SPARK_BARS) - 1
    # Integer round-half-up keeps the bar of each value exact, free of float rounding surprises.
    return "".join(_SPARK_BARS[((v - low) * top * 2 + span) // (span * 2)] for v in values)
