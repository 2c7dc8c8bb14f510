"""ConsentService.trends: month-over-month report, series and spike flags from the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consentkit import (
    EMAIL,
    SMS,
    Actor,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    NotAuthorizedError,
)
from consentkit.settings import AccountSettings
from consentkit.testing import FakeClock
from consentkit.trends import Direction, SpikeWindow

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
ADMIN = Actor.admin("acme", "alice")
IMPORTER = Actor.system("acme", "importer")
EVIDENCE = Evidence("web_form", "Text me", "v1")


def history_with_spike(service: ConsentService, *, spike: int) -> None:
    """400 contacts opted in in January; 3 unsubscribes a week since; *spike* in the last days."""
    ids = [f"k{i:03d}" for i in range(400)]
    service.upsert_contacts(ADMIN, [Contact("acme", cid) for cid in ids])
    service.opt_in(IMPORTER, ids, [SMS, EMAIL], evidence=EVIDENCE,
                   occurred_at=datetime(2026, 1, 5, tzinfo=UTC))
    position = 0
    week_start = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
    while week_start < NOW - timedelta(days=7):
        for day in range(3):
            service.unsubscribe(ADMIN, [ids[position]], [SMS],
                                occurred_at=week_start + timedelta(days=day))
            position += 1
        week_start += timedelta(days=7)
    for number in range(spike):
        service.unsubscribe(ADMIN, [ids[position]], [SMS],
                            occurred_at=NOW - timedelta(days=2, minutes=number))
        position += 1


def test_month_over_month_change_and_series() -> None:
    """Totals now vs one month earlier per channel, with a percentage and a monthly series."""
    service = ConsentService(InMemoryStore(), clock=FakeClock(NOW))
    history_with_spike(service, spike=0)
    report = service.trends(ADMIN, months=6)
    assert report.compared_with == datetime(2026, 5, 15, 12, 0, tzinfo=UTC)
    sms = report.trend_of(SMS)
    email = report.trend_of(EMAIL)
    assert sms is not None
    assert email is not None
    assert sms.subscribed.direction is Direction.DOWN
    assert sms.unsubscribed.direction is Direction.UP
    assert sms.subscribed.current + sms.unsubscribed.current == 400
    assert email.subscribed.absolute == 0
    assert email.unsubscribed.percent is None
    assert email.unsubscribed.note is not None
    assert [p.month for p in report.series] == [
        "2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06"
    ]
    subscribed = [total.subscribed for total in report.series_of(SMS)]
    assert subscribed == sorted(subscribed, reverse=True)
    assert report.flagged_spikes == ()


def test_a_spike_of_unsubscribes_is_flagged_with_its_figures() -> None:
    """Thirty unsubscribes in the last week against ~3 a week is flagged, saying why."""
    service = ConsentService(InMemoryStore(), clock=FakeClock(NOW))
    history_with_spike(service, spike=30)
    report = service.trends(ADMIN)
    flagged = [s for s in report.flagged_spikes if s.window is SpikeWindow.LAST_7_DAYS]
    assert [s.channel for s in flagged] == [SMS]
    # The regular cadence adds a couple of its own to the last seven days.
    assert 30 <= flagged[0].observed <= 33
    assert f"{flagged[0].observed} unsubscribes" in flagged[0].reason
    assert not any(s.channel == EMAIL and s.flagged for s in report.spikes)


def test_no_flag_without_enough_history() -> None:
    """A brand-new account's first busy week is not called a spike."""
    service = ConsentService(InMemoryStore(), clock=FakeClock(NOW))
    ids = [f"n{i}" for i in range(50)]
    service.upsert_contacts(ADMIN, [Contact("acme", cid) for cid in ids])
    service.opt_in(IMPORTER, ids, [SMS], evidence=EVIDENCE, occurred_at=NOW - timedelta(days=6))
    service.unsubscribe(ADMIN, ids[:40], [SMS], occurred_at=NOW - timedelta(days=1))
    report = service.trends(ADMIN)
    assert report.flagged_spikes == ()
    assert any("not enough history" in s.reason for s in report.spikes)


def test_months_follow_the_accounts_time_zone() -> None:
    """An event late on the 31st in UTC is already next month in Tokyo."""
    tokyo = AccountSettings(timezone="Asia/Tokyo")
    service = ConsentService(InMemoryStore(), clock=FakeClock(NOW), settings=tokyo)
    service.upsert_contacts(ADMIN, [Contact("acme", "a")])
    service.opt_in(IMPORTER, ["a"], [SMS], evidence=EVIDENCE,
                   occurred_at=datetime(2026, 3, 31, 20, 0, tzinfo=UTC))
    report = service.trends(ADMIN, months=4)
    assert report.timezone == "Asia/Tokyo"
    by_month = {p.month: p.totals_of(SMS).subscribed for p in report.series}
    assert by_month == {"2026-03": 0, "2026-04": 1, "2026-05": 1, "2026-06": 1}


def test_contacts_cannot_read_trends_and_bad_input_is_refused() -> None:
    """Trends are for the account's users; naive as_of and silly months are refused."""
    service = ConsentService(InMemoryStore(), clock=FakeClock(NOW))
    with pytest.raises(NotAuthorizedError):
        service.trends(Actor.contact("acme", "a"))
    with pytest.raises(ValueError, match="as_of"):
        service.trends(ADMIN, as_of=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="months"):
        service.trends(ADMIN, months=0)
