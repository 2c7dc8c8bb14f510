"""Inbound replies: STOP, START, HELP, possible opt-outs, settings and bad input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentkit import (
    EMAIL,
    MMS,
    RCS,
    SMS,
    WHATSAPP,
    Actor,
    ChannelGroups,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    Source,
    SubscriptionState,
    ValidationError,
)
from consentkit.channels import DEFAULT_CHANNEL_GROUPS
from consentkit.inbound import (
    InboundMessage,
    InboundOutcome,
    InboundResult,
    InboundSettings,
    OptOutScope,
    PossibleOptOutAction,
    ReplyTemplates,
    WeekdayCalendar,
)
from consentkit.keywords import Classification, KeywordMatcher
from consentkit.settings import AccountSettings
from consentkit.testing import FakeClock, check_replay

T0 = datetime(2026, 4, 3, 16, 0, tzinfo=UTC)  # a Friday
ADMIN = Actor.admin("acme", "alice")
EVIDENCE = Evidence("web_form", "Text me", "v1")
PHONE = "+14155550100"
SUB = SubscriptionState.SUBSCRIBED
UNSUB = SubscriptionState.UNSUBSCRIBED
NEVER = SubscriptionState.NEVER_SUBSCRIBED


def make_service(
    *,
    settings: AccountSettings | Callable[[str], AccountSettings] | None = None,
    channel_groups: ChannelGroups = DEFAULT_CHANNEL_GROUPS,
) -> ConsentService:
    service = ConsentService(
        InMemoryStore(), clock=FakeClock(T0), settings=settings, channel_groups=channel_groups
    )
    service.upsert_contacts(
        ADMIN,
        [
            Contact("acme", "ann", phone=PHONE, email="ann@example.com"),
            Contact("acme", "ann-work", phone=PHONE),
            Contact("acme", "bo", phone="+14155550101"),
        ],
    )
    service.opt_in(ADMIN, ["ann", "ann-work", "bo"], [SMS, WHATSAPP, EMAIL], evidence=EVIDENCE)
    return service


def reply(
    body: str,
    message_id: str = "SM1",
    sender: str = PHONE,
    channel: object = SMS,
    *,
    account: str = "acme",
    received_at: datetime = T0,
) -> InboundMessage:
    return InboundMessage(account, channel, sender, body, message_id, received_at)


def test_stop_unsubscribes_every_contact_with_the_number_on_the_group() -> None:
    """STOP on SMS covers SMS, MMS and RCS for every contact sharing the number, not WhatsApp."""
    service = make_service()
    result = service.handle_inbound(reply("STOP"))
    assert result.outcome is InboundOutcome.OPTED_OUT
    assert result.classification is Classification.OPT_OUT
    assert result.contact_ids == ("ann", "ann-work")
    assert set(result.channels) == {SMS, MMS, RCS}
    for cid in ("ann", "ann-work"):
        for ch in (SMS, MMS, RCS):
            assert service.state(ADMIN, cid, ch) is UNSUB
        assert service.state(ADMIN, cid, WHATSAPP) is SUB
    assert service.state(ADMIN, "bo", SMS) is SUB
    sub = service.subscription(ADMIN, "ann", SMS)
    assert sub is not None
    assert (sub.source, sub.reason) == (Source.INBOUND_KEYWORD, "stop_keyword")


def test_opt_out_reply_is_one_confirmation_and_deadline_is_ten_business_days() -> None:
    """The result carries the confirmation text and a deadline of 10 business days."""
    service = make_service()
    result = service.handle_inbound(reply("stop"))
    assert result.reply == ReplyTemplates().opt_out
    assert result.honor_by == datetime(2026, 4, 17, 16, 0, tzinfo=UTC)
    email = service.handle_inbound(reply("unsubscribe", "E1", "ann@example.com", EMAIL))
    assert email.honor_by == T0 + timedelta(hours=48)


def test_holidays_push_the_deadline() -> None:
    """A business calendar with holidays moves the deadline past them."""
    holidays = frozenset({date(2026, 4, 6), date(2026, 4, 7)})
    inbound = InboundSettings(calendar=WeekdayCalendar(holidays=holidays))
    service = make_service(settings=AccountSettings(inbound=inbound))
    assert service.handle_inbound(reply("STOP")).honor_by == datetime(
        2026, 4, 21, 16, 0, tzinfo=UTC
    )


def one_day_at_a_time(calendar: WeekdayCalendar, start: datetime, days: int) -> datetime:
    """The deadline counted the plain way: step one local day, count it if it is a business day."""
    local = start.astimezone(ZoneInfo(calendar.timezone))
    while days > 0:
        local += timedelta(days=1)
        if local.weekday() < 5 and local.date() not in calendar.holidays:
            days -= 1
    return local


@given(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
    st.integers(0, 30),
    st.sampled_from(["UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe"]),
    st.frozensets(st.dates(min_value=date(2020, 1, 1), max_value=date(2031, 3, 1)), max_size=40),
)
def test_weekday_calendar_counts_like_stepping_one_day_at_a_time(
    start: datetime, days: int, timezone: str, holidays: frozenset[date]
) -> None:
    """add_business_days equals stepping one local day at a time, across DST changes and
    holidays, keeping the local wall time (and offset) of the start."""
    calendar = WeekdayCalendar(holidays=holidays, timezone=timezone)
    got = calendar.add_business_days(start, days)
    expected = one_day_at_a_time(calendar, start, days)
    assert got == expected
    assert (got.utcoffset(), got.fold, got.tzinfo) == (
        expected.utcoffset(), expected.fold, expected.tzinfo
    )


def test_scope_can_be_the_inbound_channel_only() -> None:
    """With OptOutScope.CHANNEL a STOP on SMS leaves MMS and RCS alone."""
    service = make_service(settings=AccountSettings(inbound=InboundSettings(
        scope=OptOutScope.CHANNEL)))
    result = service.handle_inbound(reply("STOP"))
    assert result.channels == (SMS,)
    assert service.state(ADMIN, "ann", MMS) is NEVER


def test_channel_groups_are_the_services_setting() -> None:
    """A host that groups WhatsApp with SMS gets both unsubscribed by one STOP."""
    service = make_service(channel_groups=ChannelGroups([(SMS, WHATSAPP)]))
    service.handle_inbound(reply("STOP"))
    assert service.state(ADMIN, "ann", WHATSAPP) is UNSUB
    assert service.state(ADMIN, "ann", MMS) is NEVER


def test_start_resubscribes_as_the_contacts_own_request() -> None:
    """START after STOP resubscribes the group, recorded as the contact's own act."""
    service = make_service()
    service.handle_inbound(reply("STOP", "SM1"))
    assert isinstance(service.clock, FakeClock)
    service.clock.advance(timedelta(minutes=1))
    result = service.handle_inbound(reply("Start", "SM2", received_at=T0 + timedelta(minutes=1)))
    assert result.outcome is InboundOutcome.OPTED_IN
    assert result.reply == ReplyTemplates().opt_in
    assert service.state(ADMIN, "ann", SMS) is SUB
    last = service.history(ADMIN, "ann", SMS)[-1]
    assert last.actor == Actor.contact("acme", "ann")
    assert last.inbound_message_id == "SM2"
    assert last.justification is None
    check_replay(service.store, "acme")


def test_start_restores_only_channels_the_stop_took_away() -> None:
    """START after STOP resubscribes group channels that were subscribed before, never ones the
    STOP merely suppressed (never subscribed -> unsubscribed)."""
    service = make_service()
    service.opt_in(ADMIN, ["ann"], [MMS], evidence=EVIDENCE)
    service.handle_inbound(reply("STOP", "S1"))
    assert {service.state(ADMIN, "ann", ch) for ch in (SMS, MMS, RCS)} == {UNSUB}
    assert isinstance(service.clock, FakeClock)
    service.clock.advance(timedelta(minutes=1))
    result = service.handle_inbound(reply("UNSTOP", "S2", received_at=T0 + timedelta(minutes=1)))
    assert {ch for cid, ch in result.changed if cid == "ann"} == {SMS, MMS}
    assert service.state(ADMIN, "ann", RCS) is UNSUB
    assert service.state(ADMIN, "ann-work", MMS) is UNSUB


def test_deadline_counts_business_days_in_the_accounts_time_zone() -> None:
    """Friday 20:00 in Los Angeles is Saturday in UTC; the deadline counts from the local Friday."""
    friday_evening = datetime(2026, 3, 28, 3, 0, tzinfo=UTC)  # Fri 27 Mar 20:00 PDT
    pacific = make_service(settings=AccountSettings(timezone="America/Los_Angeles"))
    utc = make_service()
    local = pacific.handle_inbound(reply("STOP", received_at=friday_evening)).honor_by
    in_utc = utc.handle_inbound(reply("STOP", received_at=friday_evening)).honor_by
    assert local is not None
    assert in_utc is not None
    assert local == datetime(2026, 4, 10, 20, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert in_utc == datetime(2026, 4, 10, 3, 0, tzinfo=UTC)


def test_help_changes_nothing_and_answers() -> None:
    """HELP and INFO return the help text and write no event."""
    service = make_service()
    before = list(service.audit_log(ADMIN))
    for number, body in enumerate(["HELP", "info"]):
        result = service.handle_inbound(reply(body, f"H{number}"))
        assert (result.outcome, result.reply) == (InboundOutcome.HELP, ReplyTemplates().help)
    assert list(service.audit_log(ADMIN)) == before


def test_possible_opt_out_is_recorded_for_review_by_default() -> None:
    """'please stop texting me' changes nothing by default but is recorded, never dropped."""
    service = make_service()
    result = service.handle_inbound(reply("please stop texting me", "P1"))
    assert result.outcome is InboundOutcome.NEEDS_REVIEW
    assert result.keyword == "stop"
    assert result.honor_by is not None
    assert service.state(ADMIN, "ann", SMS) is SUB
    with service.store.transaction("acme") as tx:
        stored = tx.get_inbound(SMS, "P1")
    assert stored is not None
    assert InboundResult.from_json(stored.result) == result


def test_possible_opt_out_can_be_applied() -> None:
    """With PossibleOptOutAction.APPLY the longer message unsubscribes, with its own reason."""
    inbound = InboundSettings(possible_opt_out=PossibleOptOutAction.APPLY)
    service = make_service(settings=AccountSettings(inbound=inbound))
    result = service.handle_inbound(reply("STOP PLEASE", "P2"))
    assert result.outcome is InboundOutcome.OPTED_OUT
    sub = service.subscription(ADMIN, "ann", SMS)
    assert sub is not None
    assert (sub.state, sub.reason) == (UNSUB, "possible_opt_out")


def test_settings_per_account_pick_locale_and_templates() -> None:
    """Accounts choose their keyword locales and reply templates."""
    french = AccountSettings(inbound=InboundSettings(
        matcher=KeywordMatcher.for_locales(["fr"]),
        templates=ReplyTemplates(opt_out="Vous êtes désabonné(e)."),
    ))
    service = make_service(settings=lambda account: french if account == "acme" else
                           AccountSettings())
    result = service.handle_inbound(reply("Arrêt", "F1"))
    assert (result.outcome, result.reply) == (InboundOutcome.OPTED_OUT, "Vous êtes désabonné(e).")


def test_ordinary_messages_and_unknown_start_change_nothing() -> None:
    """A normal reply is NONE; START from an unknown number has no contact to resubscribe."""
    service = make_service()
    assert service.handle_inbound(reply("see you at 5", "N1")).outcome is InboundOutcome.NONE
    unknown = service.handle_inbound(reply("START", "N2", sender="+14155550999"))
    assert unknown.outcome is InboundOutcome.NO_CONTACT
    assert unknown.reply is None


def test_late_delivery_is_still_honoured_after_a_newer_change() -> None:
    """A STOP received before the pair's last change is recorded at that change's time."""
    service = make_service()
    late = reply("STOP", "L1", received_at=T0 - timedelta(hours=3))
    assert service.handle_inbound(late).outcome is InboundOutcome.OPTED_OUT
    assert service.state(ADMIN, "ann", SMS) is UNSUB
    check_replay(service.store, "acme")


@pytest.mark.parametrize(
    ("field", "build"),
    [
        ("received_at", lambda: reply("STOP", received_at=datetime(2026, 4, 3))),
        ("sender", lambda: reply("STOP", sender="not a number")),
        ("channel", lambda: reply("STOP", channel="S M S")),
        ("message_id", lambda: reply("STOP", message_id="")),
        ("body", lambda: reply(b"STOP")),  # type: ignore[arg-type]
        ("account", lambda: reply("STOP", account="bad\x00account")),
    ],
)
def test_bad_messages_are_refused_naming_the_field(field: str, build: object) -> None:
    """Malformed inbound messages raise ValidationError naming the field, before any write."""
    with pytest.raises(ValidationError, match=rf"^{field}"):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ("", InboundOutcome.NONE),
        ("   ", InboundOutcome.NONE),
        ("STOP\x00", InboundOutcome.OPTED_OUT),
        ("\ud800STOP", InboundOutcome.OPTED_OUT),
        ("s" * 1_000_000, InboundOutcome.NONE),
        ("STOP " * 200_000, InboundOutcome.NEEDS_REVIEW),
        ("🛑", InboundOutcome.NONE),
    ],
)
def test_strange_bodies_never_crash(body: str, outcome: InboundOutcome) -> None:
    """Empty, NUL, lone surrogates and 1 MB bodies are classified without raising, each to what
    its readable part says (a STOP behind a NUL or a lone surrogate is a STOP; a megabyte of STOPs
    is never an exact keyword, so it goes to review)."""
    service = make_service()
    result = service.handle_inbound(reply(body, "W1"))
    assert result.outcome is outcome
    check_replay(service.store, "acme")


@settings(max_examples=60, deadline=None)
@given(body=st.text(max_size=200))
def test_any_text_is_handled_and_state_stays_the_replay(body: str) -> None:
    """Whatever the text, handling it never raises and state remains the replay of events."""
    service = make_service()
    result = service.handle_inbound(reply(body, "X1"))
    assert result == service.handle_inbound(reply(body, "X1"))
    if result.outcome is not InboundOutcome.OPTED_OUT:
        assert service.state(ADMIN, "ann", SMS) is SUB
    check_replay(service.store, "acme")


def test_a_providers_verdict_needs_the_provider_and_a_known_source() -> None:
    with pytest.raises(ValidationError, match="provider"):
        InboundMessage("acme", SMS, PHONE, "", "m1", T0, verdict="opt_out")
    with pytest.raises(ValidationError, match="verdict"):
        InboundMessage("acme", SMS, PHONE, "", "m1", T0, provider="twilio", verdict="maybe")
    with pytest.raises(ValidationError, match="source"):
        InboundMessage("acme", SMS, PHONE, "", "m1", T0, source=Source.IMPORT)
    with pytest.raises(ValidationError, match="provider"):
        InboundMessage("acme", SMS, PHONE, "", "m1", T0, provider="Twilio Inc")


def test_a_providers_help_is_answered_by_the_provider() -> None:
    service = make_service()
    message = InboundMessage(
        "acme", SMS, PHONE, "what is this", "m1", T0, provider="twilio", verdict="HELP"
    )
    result = service.handle_inbound(message)
    assert (result.outcome, result.reply, result.changed) == (InboundOutcome.HELP, None, ())
    # Without the verdict the same text is an ordinary message.
    plain = service.handle_inbound(InboundMessage("acme", SMS, PHONE, "what is this", "m2", T0))
    assert plain.outcome is InboundOutcome.NONE
    assert InboundResult.from_json(result.to_json()) == result
