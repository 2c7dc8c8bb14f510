"""Tests of the month-over-month trend calculator (consentkit.trends)."""

from __future__ import annotations

import calendar
import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentkit.channels import EMAIL, MMS, SMS, WHATSAPP, Channel
from consentkit.errors import ValidationError
from consentkit.trends import (
    NO_PERCENTAGE_NOTE,
    Change,
    ChannelTotals,
    Direction,
    Interval,
    SeriesPoint,
    SpikeCheck,
    SpikeSettings,
    SpikeWindow,
    TransitionCounts,
    build_report,
    change,
    detect_spike,
    evaluate_spikes,
    month_boundaries,
    month_ends,
    month_start,
    months_earlier,
    one_month_earlier,
    plan_report,
    sparkline,
    spike_windows,
    validate_timezone,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
TELEGRAM = Channel("telegram")

# Zones with DST, odd offsets (+05:45, +12:45, -03:30), a 30-minute DST (Lord Howe) and a zone
# whose clocks used to jump at midnight (Sao Paulo).
ZONES = [
    ZoneInfo(key)
    for key in (
        "UTC",
        "America/New_York",
        "Europe/Berlin",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
        "America/St_Johns",
        "Pacific/Chatham",
        "America/Sao_Paulo",
        "Asia/Tokyo",
    )
]
CHANNELS = [SMS, MMS, EMAIL, WHATSAPP, TELEGRAM, Channel("push")]

zones = st.sampled_from(ZONES)
instants = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2060, 12, 31),
    timezones=zones,
    allow_imaginary=False,
)
counts = st.integers(min_value=0, max_value=10**9)
channel_totals = st.builds(ChannelTotals, subscribed=counts, unsubscribed=counts)


def local(tz: ZoneInfo, year: int, month: int, day: int, *time: int) -> datetime:
    """An aware datetime at local wall time in *tz*; *time* is hour, minute, second, microsecond."""
    hour, minute, second, micro = (*time, 0, 0, 0, 0)[:4]
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


def utc(year: int, month: int, day: int, *time: int) -> datetime:
    return local(ZoneInfo("UTC"), year, month, day, *time).astimezone(UTC)


def wall(instant: datetime, tz: ZoneInfo) -> datetime:
    # Through UTC: astimezone() to an instant's own tzinfo would return it unnormalised.
    return instant.astimezone(UTC).astimezone(tz).replace(tzinfo=None)


def is_imaginary(naive: datetime, tz: ZoneInfo) -> bool:
    """Whether *naive* wall time does not exist in *tz* (it falls in a DST gap)."""
    return wall(naive.replace(tzinfo=tz), tz) != naive


# --- time zones -------------------------------------------------------------------------------


def test_validate_timezone_accepts_names_and_zoneinfo() -> None:
    """An IANA name becomes its ZoneInfo and a ZoneInfo passes through unchanged."""
    assert validate_timezone("Europe/Berlin") == BERLIN
    assert validate_timezone(NEW_YORK) is NEW_YORK


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "utc", "zone.tab", 42])
def test_validate_timezone_rejects_unknown_names(name: object) -> None:
    """Unknown, malformed or non-string zone names raise ValidationError on field 'timezone'."""
    with pytest.raises(ValidationError) as caught:
        validate_timezone(name)  # type: ignore[arg-type]
    assert caught.value.field == "timezone"


# --- one month earlier ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (utc(2024, 3, 31, 15, 30), utc(2024, 2, 29, 15, 30)),
        (utc(2023, 3, 31, 15, 30), utc(2023, 2, 28, 15, 30)),
        (utc(2024, 5, 31, 8), utc(2024, 4, 30, 8)),
        (utc(2024, 1, 15, 9, 45, 12, 345), utc(2023, 12, 15, 9, 45, 12, 345)),
    ],
    ids=["mar31-leap", "mar31-common", "may31", "jan15"],
)
def test_one_month_earlier_clamps_the_day_to_the_shorter_month(
    as_of: datetime, expected: datetime
) -> None:
    """Mar 31 compares with Feb 29/28, May 31 with Apr 30, and Jan 15 with the previous Dec 15."""
    assert one_month_earlier(as_of, ZoneInfo("UTC")) == expected


def test_months_earlier_clamps_once_from_as_of() -> None:
    """Two months before Mar 31 is Jan 31, not the Jan 29 that clamping via February would give."""
    assert months_earlier(utc(2024, 3, 31, 12), ZoneInfo("UTC"), 2) == utc(2024, 1, 31, 12)
    assert months_earlier(utc(2024, 3, 31, 12), ZoneInfo("UTC"), 0) == utc(2024, 3, 31, 12)


def test_one_month_earlier_keeps_local_wall_time_across_dst() -> None:
    """Across a DST change the local wall time is kept, so the UTC hour differs."""
    as_of = local(NEW_YORK, 2024, 3, 15, 12)  # EDT, 16:00Z
    earlier = one_month_earlier(as_of, NEW_YORK)
    assert earlier == utc(2024, 2, 15, 17)  # EST
    assert wall(earlier, NEW_YORK) == datetime(2024, 2, 15, 12)
    assert earlier.tzinfo is UTC


def test_one_month_earlier_moves_a_time_in_a_dst_gap_forward() -> None:
    """A wall time that does not exist one month earlier (spring forward) moves ahead by the gap."""
    as_of = local(NEW_YORK, 2024, 4, 10, 2, 30)
    earlier = one_month_earlier(as_of, NEW_YORK)
    assert wall(earlier, NEW_YORK) == datetime(2024, 3, 10, 3, 30)
    assert earlier == utc(2024, 3, 10, 7, 30)


def test_one_month_earlier_takes_the_first_of_two_ambiguous_times() -> None:
    """A wall time that occurs twice one month earlier (fall back) means its first occurrence."""
    as_of = local(NEW_YORK, 2024, 12, 3, 1, 30)
    assert one_month_earlier(as_of, NEW_YORK) == utc(2024, 11, 3, 5, 30)  # 01:30 EDT


def test_one_month_earlier_uses_the_local_month_in_kathmandu() -> None:
    """In Asia/Kathmandu (+05:45) 20:00Z on Mar 31 is already April, so it compares with Mar 1."""
    as_of = utc(2024, 3, 31, 20)  # 01:45 on Apr 1 in Kathmandu
    assert one_month_earlier(as_of, KATHMANDU) == utc(2024, 2, 29, 20)  # 01:45 on Mar 1
    assert month_start(as_of, KATHMANDU) == utc(2024, 3, 31, 18, 15)


@settings(deadline=None)
@given(as_of=instants, tz=zones)
def test_one_month_earlier_is_28_to_31_days_before(as_of: datetime, tz: ZoneInfo) -> None:
    """The result is strictly earlier, 28 to 31 local calendar days back at the same wall time.

    Elapsed time can differ from the wall-clock distance by the DST offset change between the two
    instants (and a gap shift), so it is checked against 28-31 days with a two-hour allowance.
    """
    earlier = one_month_earlier(as_of, tz)
    assert earlier.tzinfo is UTC
    assert earlier < as_of
    elapsed = as_of - earlier
    slack = timedelta(hours=2)
    assert timedelta(days=28) - slack <= elapsed <= timedelta(days=31) + slack

    now_wall = wall(as_of, tz)
    year, month = (
        (now_wall.year, now_wall.month - 1) if now_wall.month > 1 else (now_wall.year - 1, 12)
    )
    last_day = calendar.monthrange(year, month)[1]
    intended = now_wall.replace(year=year, month=month, day=min(now_wall.day, last_day))
    assert timedelta(days=28) <= now_wall - intended <= timedelta(days=31)
    if is_imaginary(intended, tz):
        assert intended < wall(earlier, tz) <= intended + slack
    else:
        assert wall(earlier, tz) == intended


# --- month boundaries and the series -----------------------------------------------------------


def test_month_boundaries_stay_on_local_midnight_in_new_york() -> None:
    """New York month starts stay at local midnight while their UTC offset follows DST."""
    assert month_boundaries(local(NEW_YORK, 2024, 4, 15, 12), NEW_YORK, 3) == (
        utc(2024, 2, 1, 5),
        utc(2024, 3, 1, 5),
        utc(2024, 4, 1, 4),
    )
    assert month_boundaries(local(NEW_YORK, 2024, 12, 10), NEW_YORK, 3) == (
        utc(2024, 10, 1, 4),
        utc(2024, 11, 1, 4),
        utc(2024, 12, 1, 5),
    )


def test_month_boundaries_stay_on_local_midnight_in_berlin() -> None:
    """Berlin month starts are local midnight at +01:00 in winter and +02:00 in summer."""
    boundaries = month_boundaries(local(BERLIN, 2024, 11, 20), BERLIN, 10)
    assert boundaries[0] == utc(2024, 1, 31, 23)
    assert boundaries[2] == utc(2024, 3, 31, 22)
    assert boundaries[-1] == utc(2024, 10, 31, 23)
    offsets = {b.astimezone(BERLIN).utcoffset() for b in boundaries}
    assert offsets == {timedelta(hours=1), timedelta(hours=2)}
    assert all(wall(b, BERLIN) == datetime(2024, n, 1) for n, b in enumerate(boundaries, start=2))


def test_month_boundaries_in_kathmandu_are_at_a_quarter_past() -> None:
    """Asia/Kathmandu (+05:45) months start at 18:15 UTC the day before."""
    assert month_boundaries(utc(2024, 6, 15), KATHMANDU, 2) == (
        utc(2024, 4, 30, 18, 15),
        utc(2024, 5, 31, 18, 15),
    )


@settings(deadline=None)
@given(as_of=instants, tz=zones, months=st.integers(min_value=1, max_value=30))
def test_month_boundaries_are_local_month_starts(
    as_of: datetime, tz: ZoneInfo, months: int
) -> None:
    """Boundaries rise and are the 1st at local midnight (or the first instant after its gap)."""
    boundaries = month_boundaries(as_of, tz, months)
    assert len(boundaries) == months
    assert boundaries[-1] == month_start(as_of, tz) <= as_of
    assert list(boundaries) == sorted(set(boundaries))
    for boundary in boundaries:
        start = wall(boundary, tz)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        assert start.day == 1
        if is_imaginary(midnight, tz):
            assert start - midnight <= timedelta(hours=2)
        else:
            assert start == midnight


def test_month_ends_read_complete_months_at_their_end_and_this_month_at_as_of() -> None:
    """Each complete month is read at the next month's start and the current month at as_of."""
    as_of = local(BERLIN, 2024, 4, 10, 9)
    ends = month_ends(as_of, BERLIN, 3)
    assert [end.month for end in ends] == ["2024-02", "2024-03", "2024-04"]
    assert [end.at for end in ends] == [utc(2024, 2, 29, 23), utc(2024, 3, 31, 22), as_of]
    assert month_ends(as_of, BERLIN, 1)[0].at == as_of


@pytest.mark.parametrize("months", [0, -1, 121, True])
def test_month_boundaries_reject_out_of_range_month_counts(months: int) -> None:
    """A series of no months, a negative count or more than 120 months is refused."""
    with pytest.raises(ValidationError) as caught:
        month_boundaries(utc(2024, 1, 1), BERLIN, months)
    assert caught.value.field == "months"


@pytest.mark.parametrize(
    "call",
    [
        lambda naive: one_month_earlier(naive, BERLIN),
        lambda naive: month_start(naive, BERLIN),
        lambda naive: month_boundaries(naive, BERLIN, 3),
        lambda naive: month_ends(naive, BERLIN, 3),
        lambda naive: spike_windows(naive, BERLIN),
        lambda naive: plan_report(naive, BERLIN),
        lambda naive: build_report(
            as_of=naive, tz=BERLIN, totals_now={}, totals_previous={}, series=[], spikes=[]
        ),
    ],
    ids=[
        "one_month_earlier",
        "month_start",
        "month_boundaries",
        "month_ends",
        "spike_windows",
        "plan_report",
        "build_report",
    ],
)
def test_naive_as_of_is_refused(call: Callable[[datetime], object]) -> None:
    """A naive as_of raises ValidationError naming the field 'as_of'."""
    with pytest.raises(ValidationError, match="as_of") as caught:
        call(datetime(2024, 3, 31, 12))
    assert caught.value.field == "as_of"


def test_naive_instants_in_value_objects_are_refused() -> None:
    """Naive datetimes in a series point or an interval name the offending field."""
    with pytest.raises(ValidationError, match="at") as caught:
        SeriesPoint(month="2024-03", at=datetime(2024, 3, 1), totals={})
    assert caught.value.field == "at"
    with pytest.raises(ValidationError) as caught:
        Interval(datetime(2024, 3, 1), utc(2024, 3, 2))
    assert caught.value.field == "start"


# --- totals and changes -----------------------------------------------------------------------


@given(subscribed=st.integers(max_value=-1), unsubscribed=counts)
def test_channel_totals_reject_negative_figures(subscribed: int, unsubscribed: int) -> None:
    """A negative total is refused whichever field it is in."""
    with pytest.raises(ValidationError) as caught:
        ChannelTotals(subscribed=subscribed, unsubscribed=unsubscribed)
    assert caught.value.field == "subscribed"
    with pytest.raises(ValidationError) as caught:
        ChannelTotals(subscribed=unsubscribed, unsubscribed=subscribed)
    assert caught.value.field == "unsubscribed"


def test_transition_counts_add_field_by_field() -> None:
    """Adding transition counts adds each kind separately."""
    total = TransitionCounts(1, 2, 3) + TransitionCounts(opt_ins=10, resubscribes=1)
    assert total == TransitionCounts(opt_ins=11, unsubscribes=2, resubscribes=4)
    with pytest.raises(ValidationError):
        TransitionCounts(unsubscribes=-1)


def test_change_from_zero_has_no_percentage_and_says_why() -> None:
    """A previous total of 0 gives no percentage, a note saying so, and 'n/a (was 0)'."""
    grown = change(0, 12)
    assert grown.percent is None
    assert grown.note == NO_PERCENTAGE_NOTE == "no percentage: the total one month earlier was 0"
    assert grown.absolute == 12
    assert grown.direction is Direction.UP
    assert grown.describe() == "n/a (was 0)"
    assert change(0, 0).direction is Direction.FLAT


@pytest.mark.parametrize(
    ("previous", "current", "label"),
    [(200, 225, "+12.5%"), (100, 97, "-3.0%"), (40, 40, "0.0%"), (3, 4, "+33.3%")],
)
def test_change_describe_formats_a_signed_percentage(
    previous: int, current: int, label: str
) -> None:
    """describe() gives the percentage with a sign and one decimal."""
    assert change(previous, current).describe() == label


@given(previous=counts, current=counts)
def test_change_sign_and_direction_agree(previous: int, current: int) -> None:
    """The percent has the sign of the absolute change and the direction matches it."""
    moved = change(previous, current)
    assert moved.absolute == current - previous
    expected = {1: Direction.UP, -1: Direction.DOWN, 0: Direction.FLAT}
    assert moved.direction is expected[(moved.absolute > 0) - (moved.absolute < 0)]
    if previous == 0:
        assert moved.percent is None
        assert moved.note == NO_PERCENTAGE_NOTE
    else:
        assert moved.percent is not None
        assert moved.note is None
        assert (moved.percent > 0) == (moved.absolute > 0)
        assert (moved.percent < 0) == (moved.absolute < 0)
        assert math.isclose(moved.percent, moved.absolute / previous * 100)


def test_change_refuses_negative_or_inconsistent_figures() -> None:
    """Negative totals and a hand-built Change that contradicts itself are refused."""
    with pytest.raises(ValidationError) as caught:
        change(-1, 3)
    assert caught.value.field == "previous"
    with pytest.raises(ValidationError) as caught:
        Change(10, 12, absolute=5, percent=50.0, direction=Direction.UP, note=None)
    assert caught.value.field == "change"


# --- the report -------------------------------------------------------------------------------


def test_build_report_compares_every_channel_with_one_month_earlier() -> None:
    """Channels are the union of both sides, sorted by key; a missing side counts as 0/0."""
    as_of = local(BERLIN, 2024, 3, 31, 18)
    report = build_report(
        as_of=as_of,
        tz="Europe/Berlin",
        totals_now={SMS: ChannelTotals(120, 10), TELEGRAM: ChannelTotals(5, 0)},
        totals_previous={SMS: ChannelTotals(100, 12), EMAIL: ChannelTotals(40, 2)},
        series=[],
        spikes=[],
    )
    assert report.timezone == "Europe/Berlin"
    assert report.as_of == as_of
    assert report.compared_with == local(BERLIN, 2024, 2, 29, 18)
    assert [trend.channel for trend in report.channels] == [EMAIL, SMS, TELEGRAM]
    email, sms, telegram = report.channels
    assert sms.subscribed.describe() == "+20.0%"
    assert sms.unsubscribed.absolute == -2
    assert email.subscribed == change(40, 0)
    assert telegram.subscribed.percent is None
    assert report.trend_of(WHATSAPP) is None
    assert report.trend_of(SMS) == sms


def test_build_report_refuses_two_points_for_one_month() -> None:
    """Two series points for the same month are refused."""
    point = SeriesPoint(month="2024-03", at=utc(2024, 3, 5), totals={})
    with pytest.raises(ValidationError) as caught:
        build_report(
            as_of=utc(2024, 3, 5),
            tz=BERLIN,
            totals_now={},
            totals_previous={},
            series=[point, point],
            spikes=[],
        )
    assert caught.value.field == "series"


def test_series_points_freeze_their_totals() -> None:
    """A series point keeps totals as sorted pairs: mapping order does not matter and it hashes."""
    one = SeriesPoint(
        month="2024-03",
        at=utc(2024, 4, 1),
        totals={SMS: ChannelTotals(1, 0), EMAIL: ChannelTotals(2, 1)},
    )
    two = SeriesPoint(
        month="2024-03",
        at=utc(2024, 4, 1),
        totals=[(EMAIL, ChannelTotals(2, 1)), (SMS, ChannelTotals(1, 0))],
    )
    assert one == two
    assert hash(one) == hash(two)
    assert one.totals_of(WHATSAPP) == ChannelTotals(0, 0)
    with pytest.raises(ValidationError):
        SeriesPoint(month="2024-3", at=utc(2024, 4, 1), totals={})
    with pytest.raises(ValidationError):
        SeriesPoint(
            month="2024-03",
            at=utc(2024, 4, 1),
            totals=[(SMS, ChannelTotals()), (SMS, ChannelTotals())],
        )


totals_maps = st.dictionaries(st.sampled_from(CHANNELS), channel_totals, max_size=len(CHANNELS))


@st.composite
def series_points(draw: st.DrawFn) -> list[SeriesPoint]:
    years = draw(st.lists(st.integers(2000, 2030), max_size=5, unique=True))
    return [
        SeriesPoint(month=f"{year}-01", at=utc(year, 2, 1), totals=draw(totals_maps))
        for year in years
    ]


@st.composite
def spike_checks(draw: st.DrawFn) -> list[SpikeCheck]:
    return [
        detect_spike(
            ch,
            window,
            draw(st.integers(0, 50)),
            draw(st.lists(st.integers(0, 20), max_size=8)),
        )
        for ch in draw(st.sets(st.sampled_from(CHANNELS)))
        for window in SpikeWindow
    ]


@given(
    now=totals_maps,
    previous=totals_maps,
    series=series_points(),
    spikes=spike_checks(),
    data=st.data(),
)
def test_build_report_does_not_depend_on_input_order(
    now: dict[Channel, ChannelTotals],
    previous: dict[Channel, ChannelTotals],
    series: list[SeriesPoint],
    spikes: list[SpikeCheck],
    data: st.DataObject,
) -> None:
    """Shuffling channels, series points and spike checks yields an equal report."""

    def shuffled(mapping: dict[Channel, ChannelTotals]) -> dict[Channel, ChannelTotals]:
        return dict(data.draw(st.permutations(list(mapping.items()))))

    as_of = utc(2031, 5, 31, 12)
    first = build_report(
        as_of=as_of,
        tz=NEW_YORK,
        totals_now=now,
        totals_previous=previous,
        series=series,
        spikes=spikes,
    )
    second = build_report(
        as_of=as_of,
        tz="America/New_York",
        totals_now=shuffled(now),
        totals_previous=shuffled(previous),
        series=data.draw(st.permutations(series)),
        spikes=data.draw(st.permutations(spikes)),
    )
    assert first == second
    assert hash(first) == hash(second)
    assert [trend.channel for trend in first.channels] == sorted(set(now) | set(previous))


# --- spikes -----------------------------------------------------------------------------------


def test_spike_is_flagged_with_the_figures_in_the_reason() -> None:
    """34 unsubscribes against a mean of about 5 is flagged and the reason quotes the figures."""
    check = detect_spike(SMS, "last_7_days", 34, [4, 6, 5, 5, 3, 7, 6, 5])
    assert check.flagged
    assert check.window is SpikeWindow.LAST_7_DAYS
    assert check.baseline_mean == pytest.approx(5.125)
    assert check.baseline_stdev == pytest.approx(1.246, abs=1e-3)
    assert check.threshold is not None
    assert check.threshold == pytest.approx(5.125 + 3 * math.sqrt(5.125))
    assert check.reason == (
        "34 unsubscribes in the last 7 days vs a mean of 5.1 (sd 1.2, floored to 2.3) over the "
        "previous 8 weeks: 12.8 sd above the mean, over the 3 sd threshold of 11.9"
    )


def test_spike_is_not_flagged_with_short_history() -> None:
    """With fewer baseline periods of history than required nothing is flagged, and it says so."""
    check = detect_spike(SMS, SpikeWindow.LAST_7_DAYS, 40, [None, None, None, None, None, 1, 0, 2])
    assert not check.flagged
    assert check.baseline_mean is None
    assert check.threshold is None
    assert check.history_periods == 3
    assert check.reason == "not enough history: 3 of 8 baseline weeks have data (at least 4 needed)"


def test_spike_is_not_flagged_for_small_absolute_numbers() -> None:
    """Four unsubscribes against an all-zero baseline are below min_observed and not flagged."""
    check = detect_spike(EMAIL, "month_to_date", 4, [0, 0, 0, 0, 0, 0])
    assert not check.flagged
    assert check.z_score == pytest.approx(4.0)
    assert "fewer than the 5 unsubscribes needed" in check.reason
    assert "so far this month" in check.reason


def test_one_unsubscribe_on_a_flat_zero_baseline_is_not_a_spike() -> None:
    """The standard-deviation floor keeps 1 unsubscribe after weeks of zeros unflagged."""
    quiet = SpikeSettings(min_observed=1)
    check = detect_spike(SMS, "last_7_days", 1, [0] * 8, quiet)
    assert not check.flagged
    assert check.threshold == pytest.approx(3.0)
    assert "within the 3 sd threshold" in check.reason
    assert detect_spike(SMS, "last_7_days", 4, [0] * 8, quiet).flagged


def test_regular_baseline_uses_a_poisson_floor() -> None:
    """A baseline of exactly 10 every week flags 20 but not 15 (sd floored to sqrt(10))."""
    assert not detect_spike(SMS, "last_7_days", 15, [10] * 8).flagged
    assert detect_spike(SMS, "last_7_days", 20, [10] * 8).flagged


def test_detect_spike_refuses_an_unknown_window() -> None:
    """An unknown window name raises ValidationError on field 'window'."""
    with pytest.raises(ValidationError) as caught:
        detect_spike(SMS, "yesterday", 3, [1, 2, 3, 4])
    assert caught.value.field == "window"


@given(
    observed=st.integers(0, 500),
    baseline=st.lists(st.one_of(st.none(), st.integers(0, 200)), max_size=12),
    window=st.sampled_from(SpikeWindow),
)
def test_spike_flag_is_consistent_with_its_figures(
    observed: int, baseline: list[int | None], window: SpikeWindow
) -> None:
    """A flag needs enough history, at least min_observed and a count above the threshold."""
    spike_settings = SpikeSettings()
    check = detect_spike(SMS, window, observed, baseline, spike_settings)
    history = [b for b in baseline if b is not None]
    assert check.history_periods == len(history)
    if check.flagged:
        assert len(history) >= spike_settings.min_history(window)
        assert observed >= spike_settings.min_observed
        assert check.threshold is not None
        assert check.baseline_mean is not None
        assert observed > check.threshold > check.baseline_mean
        assert str(observed) in check.reason


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("baseline_weeks", {"baseline_weeks": 1}),
        ("min_baseline_weeks", {"baseline_weeks": 4, "min_baseline_weeks": 5}),
        ("z_threshold", {"z_threshold": 0}),
        ("z_threshold", {"z_threshold": float("nan")}),
        ("min_observed", {"min_observed": 0}),
        ("min_baseline_months", {"baseline_months": 3, "min_baseline_months": 4}),
    ],
)
def test_spike_settings_validate_their_ranges(field: str, options: dict[str, Any]) -> None:
    """Out-of-range spike settings name the offending field."""
    with pytest.raises(ValidationError) as caught:
        SpikeSettings(**options)
    assert caught.value.field == field


def test_spike_windows_cover_the_last_week_and_the_month_to_date() -> None:
    """The weekly windows are contiguous 7-day spans and month-to-date baselines end at the same
    local wall time of earlier months, day clamped."""
    as_of = local(BERLIN, 2024, 3, 31, 15)
    windows = spike_windows(
        as_of,
        BERLIN,
        SpikeSettings(
            baseline_weeks=3, min_baseline_weeks=2, baseline_months=2, min_baseline_months=2
        ),
    )
    # 168 elapsed hours: Berlin springs forward that morning, so it starts at 14:00 local, not 15.
    assert windows.last_7_days == Interval(utc(2024, 3, 24, 13), as_of)
    weekly = [*windows.weekly_baseline, windows.last_7_days]
    assert all(w.duration == timedelta(days=7) for w in weekly)
    assert all(a.end == b.start for a, b in itertools.pairwise(weekly))
    assert windows.month_to_date == Interval(local(BERLIN, 2024, 3, 1), as_of)
    assert windows.monthly_baseline == (
        Interval(local(BERLIN, 2024, 1, 1), local(BERLIN, 2024, 1, 31, 15)),
        Interval(local(BERLIN, 2024, 2, 1), local(BERLIN, 2024, 2, 29, 15)),
    )
    assert len(windows.intervals()) == 3 + 1 + 2 + 1


def test_spike_windows_are_168_hours_across_dst() -> None:
    """Weekly windows spanning a DST change still last exactly 168 hours."""
    windows = spike_windows(local(NEW_YORK, 2024, 3, 15, 9), NEW_YORK)
    assert {w.duration for w in (*windows.weekly_baseline, windows.last_7_days)} == {
        timedelta(hours=168)
    }
    assert windows.month_to_date.start == utc(2024, 3, 1, 5)


def test_evaluate_spikes_judges_every_channel_and_window() -> None:
    """A steady channel with a burst is flagged, a brand-new channel is not, and missing
    channels count as no transitions."""
    windows = spike_windows(utc(2024, 6, 20, 12), BERLIN)
    counts: dict[Interval, dict[Channel, TransitionCounts]] = {i: {} for i in windows.intervals()}
    for week in windows.weekly_baseline:
        counts[week][SMS] = TransitionCounts(opt_ins=30, unsubscribes=0)
    for month in windows.monthly_baseline:
        counts[month][SMS] = TransitionCounts(opt_ins=100, unsubscribes=6)
    counts[windows.last_7_days] = {
        SMS: TransitionCounts(unsubscribes=12),
        EMAIL: TransitionCounts(unsubscribes=40),
    }
    counts[windows.month_to_date] = {SMS: TransitionCounts(unsubscribes=13)}

    checks = evaluate_spikes(windows, counts, channels=[WHATSAPP])
    assert [(c.channel, c.window) for c in checks] == [
        (EMAIL, SpikeWindow.LAST_7_DAYS),
        (EMAIL, SpikeWindow.MONTH_TO_DATE),
        (SMS, SpikeWindow.LAST_7_DAYS),
        (SMS, SpikeWindow.MONTH_TO_DATE),
        (WHATSAPP, SpikeWindow.LAST_7_DAYS),
        (WHATSAPP, SpikeWindow.MONTH_TO_DATE),
    ]
    by_key = {(c.channel, c.window): c for c in checks}
    sms_week = by_key[SMS, SpikeWindow.LAST_7_DAYS]
    assert sms_week.flagged
    assert sms_week.baseline_mean == 0.0
    assert sms_week.history_periods == 8
    # 13 against exactly 6 every month stays under 6 + 3 * sqrt(6) = 13.3.
    assert not by_key[SMS, SpikeWindow.MONTH_TO_DATE].flagged
    assert not by_key[EMAIL, SpikeWindow.LAST_7_DAYS].flagged
    assert by_key[EMAIL, SpikeWindow.LAST_7_DAYS].reason.startswith("not enough history: 0 of 8")


def test_evaluate_spikes_starts_history_at_the_first_activity() -> None:
    """Quiet weeks before a channel's first activity are no history; later quiet weeks are zeros."""
    windows = spike_windows(utc(2024, 6, 20, 12), BERLIN)
    counts: dict[Interval, dict[Channel, TransitionCounts]] = {i: {} for i in windows.intervals()}
    counts[windows.weekly_baseline[3]][SMS] = TransitionCounts(opt_ins=1)
    counts[windows.last_7_days][SMS] = TransitionCounts(unsubscribes=9)
    week = evaluate_spikes(windows, counts)[0]
    assert week.history_periods == 5
    assert week.flagged


def test_evaluate_spikes_requires_counts_for_every_interval() -> None:
    """A missing interval raises ValidationError on field 'counts'."""
    windows = spike_windows(utc(2024, 6, 20, 12), BERLIN)
    partial: dict[Interval, dict[Channel, TransitionCounts]] = {
        i: {} for i in windows.intervals()[1:]
    }
    with pytest.raises(ValidationError) as caught:
        evaluate_spikes(windows, partial)
    assert caught.value.field == "counts"


# --- planning a whole report --------------------------------------------------------------------


def test_plan_then_build_produces_the_full_report() -> None:
    """A service plans instants and intervals, asks its store for them and builds the report."""
    as_of = local(NEW_YORK, 2024, 3, 31, 12)
    plan = plan_report(as_of, "America/New_York", months=3)
    assert plan.compared_with == local(NEW_YORK, 2024, 2, 29, 12)
    # "As of" instants include the changes at that instant: asked one microsecond later.
    tick = timedelta(microseconds=1)
    assert plan.totals_instants() == (
        local(NEW_YORK, 2024, 2, 1),
        plan.compared_with + tick,
        local(NEW_YORK, 2024, 3, 1),
        as_of + tick,
    )

    def totals_at(instant: datetime) -> dict[Channel, ChannelTotals]:
        days = (instant - utc(2024, 1, 1)).days
        return {SMS: ChannelTotals(subscribed=100 + days, unsubscribed=days // 10)}

    totals = {t: totals_at(t) for t in plan.totals_instants()}
    counts = {i: {SMS: TransitionCounts(opt_ins=2, unsubscribes=1)} for i in plan.count_intervals()}
    counts[plan.spike_windows.last_7_days] = {SMS: TransitionCounts(unsubscribes=25)}
    report = plan.build(totals=totals, counts=counts)

    assert [point.month for point in report.series] == ["2024-01", "2024-02", "2024-03"]
    assert report.series[-1].at == as_of
    assert report.channels[0].subscribed == change(100 + 59, 100 + 90)
    assert [s.subscribed for s in report.series_of(SMS)] == [131, 160, 190]
    assert sparkline([s.subscribed for s in report.series_of(SMS)]) == "▁▄█"
    assert [(c.channel, c.window) for c in report.flagged_spikes] == [
        (SMS, SpikeWindow.LAST_7_DAYS)
    ]

    with pytest.raises(ValidationError) as caught:
        plan.build(totals={as_of: {}}, counts=counts)
    assert caught.value.field == "totals"


# --- sparklines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], ""),
        ([7], "▄"),
        ([3, 3, 3], "▄▄▄"),
        ([0, 0, 0], "▄▄▄"),
        ([1, 2, 3, 4, 5, 6, 7, 8], "▁▂▃▄▅▆▇█"),
        ([8, 1], "█▁"),
        ([0, 100, 50], "▁█▅"),
        ([-5, 5], "▁█"),
    ],
)
def test_sparkline_shapes(values: list[int], expected: str) -> None:
    """Values are scaled from ▁ (smallest) to █ (largest); constant series are a row of ▄."""
    assert sparkline(values) == expected


@given(st.lists(st.integers(-(10**12), 10**12), max_size=40))
def test_sparkline_is_monotone_and_spans_the_range(values: list[int]) -> None:
    """One bar per value, larger values never get lower bars, and min/max reach ▁/█."""
    line = sparkline(values)
    assert len(line) == len(values)
    bars = "▁▂▃▄▅▆▇█"
    height = {value: bars.index(bar) for value, bar in zip(values, line, strict=True)}
    ordered = sorted(height)
    assert all(height[a] <= height[b] for a, b in itertools.pairwise(ordered))
    if values and min(values) != max(values):
        assert line[values.index(min(values))] == "▁"
        assert line[values.index(max(values))] == "█"
