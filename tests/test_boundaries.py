"""Boundaries of the public API: enum inputs, built-in channels, invisible characters, instants at
the edges of the supported range, and wrong argument types (issue 10, defects 7, 8 and 13)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentkit import (
    EMAIL,
    SMS,
    Actor,
    ActorKind,
    AddressKind,
    Channel,
    ChannelGroups,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    Justification,
    NotAuthorizedError,
    ResubscribeReason,
    SubscriptionState,
    ValidationError,
)
from consentkit.channels import BUILTIN_CHANNELS
from consentkit.inbound import (
    InboundMessage,
    InboundOutcome,
    InboundSettings,
    OptOutScope,
    PossibleOptOutAction,
    ReplyTemplates,
    WeekdayCalendar,
)
from consentkit.model import ensure_aware
from consentkit.settings import AccountSettings
from consentkit.trends import (
    ChannelTotals,
    Interval,
    SeriesPoint,
    SpikeWindow,
    build_report,
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
)

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
PHONE = "+14155550100"
EVIDENCE = Evidence("web_form", "Text me", "v1")
LA = ZoneInfo("America/Los_Angeles")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14, the earliest local time
PAGO_PAGO = ZoneInfo("Pacific/Pago_Pago")  # UTC-11
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
ZONES = [ZoneInfo("UTC"), LA, KIRITIMATI, PAGO_PAGO]

# datetime.min / datetime.max with the extreme fixed offsets and real zones: arithmetic on any of
# them overflows, so each must be refused up front.
EXTREME_INSTANTS = [
    extreme.replace(tzinfo=tz)
    for extreme in (datetime.min, datetime.max)
    for tz in (
        UTC,
        timezone(timedelta(hours=23, minutes=59)),
        timezone(-timedelta(hours=23, minutes=59)),
        LA,
        KIRITIMATI,
    )
] + [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(9000, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, tzinfo=LA),
]


def bad(value: object) -> Any:
    """*value*, typed Any: these tests pass wrong types on purpose."""
    return value


def field_of(call: Callable[[], object]) -> str:
    """The field named by the ValidationError *call* raises (failing the test otherwise)."""
    with pytest.raises(ValidationError) as caught:
        call()
    return caught.value.field


def make_service() -> ConsentService:
    service = ConsentService(InMemoryStore())
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "c1", phone=PHONE)])
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=EVIDENCE)
    return service


# ---------------------------------------------------------------------------- defect 7: Actor.kind


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("member", ActorKind.MEMBER),
        ("MEMBER", ActorKind.MEMBER),
        ("Admin", ActorKind.ADMIN),
        ("contact", ActorKind.CONTACT),
        ("SYSTEM", ActorKind.SYSTEM),
        (ActorKind.ADMIN, ActorKind.ADMIN),
    ],
)
def test_actor_kind_strings_become_the_enum_member(raw: object, kind: ActorKind) -> None:
    """A kind given as a value or name in any case is stored as the ActorKind member itself."""
    assert Actor(raw, "mallory", ACCOUNT).kind is kind


@pytest.mark.parametrize("raw", ["superuser", "", " member", 1, None, True, ["admin"], b"admin"])
def test_actor_kind_outside_the_enum_is_refused(raw: object) -> None:
    """Anything but an ActorKind or its value/name raises ValidationError("actor.kind") listing
    the allowed kinds."""
    with pytest.raises(ValidationError, match="admin, member, contact, system") as caught:
        Actor(raw, "mallory", ACCOUNT)
    assert caught.value.field == "actor.kind"


def test_member_given_as_a_role_string_cannot_unsubscribe() -> None:
    """Actor("member", ...) (a role string from a JWT) is a member: the policy refuses it."""
    service = make_service()
    with pytest.raises(NotAuthorizedError):
        service.unsubscribe(Actor("member", "mallory", ACCOUNT), ["c1"], [SMS])
    assert service.can_send(ADMIN, "c1", SMS)


def test_admin_given_as_a_role_string_acts_as_admin() -> None:
    """Actor("ADMIN", ...) unsubscribes like Actor.admin, and its events record the enum kind."""
    service = make_service()
    service.unsubscribe(Actor("ADMIN", "alice", ACCOUNT), ["c1"], [SMS])
    assert not service.can_send(ADMIN, "c1", SMS)
    assert service.history(ADMIN, "c1")[-1].actor.kind is ActorKind.ADMIN


@pytest.mark.parametrize("roles", [None, 5, "compliance", object()])
def test_actor_roles_must_be_a_collection(roles: object) -> None:
    """Roles that are not a collection of names raise ValidationError("actor.roles")."""
    assert field_of(lambda: Actor(ActorKind.ADMIN, "a", ACCOUNT, roles=bad(roles))) == "actor.roles"


@pytest.mark.parametrize(
    "raw",
    ["CONTACT_REQUEST", "contact_request", "Contact_Request", ResubscribeReason.CONTACT_REQUEST],
)
def test_justification_reason_accepts_names_and_values(raw: object) -> None:
    """A resubscribe reason given by name or value in any case is the enum member."""
    justification = Justification(raw, "asked on the phone")
    assert justification.reason is ResubscribeReason.CONTACT_REQUEST


@pytest.mark.parametrize("raw", ["please", None, 0, False, ["contact_request"]])
def test_justification_reason_outside_the_enum_is_refused(raw: object) -> None:
    """An unknown reason raises ValidationError("justification.reason")."""
    assert field_of(lambda: Justification(raw, "note")) == "justification.reason"


def test_inbound_enum_settings_accept_names_and_refuse_others() -> None:
    """InboundSettings converts scope / possible_opt_out strings to members; bools are refused."""
    chosen = InboundSettings(scope="CHANNEL", possible_opt_out="apply")
    assert chosen.scope is OptOutScope.CHANNEL
    assert chosen.possible_opt_out is PossibleOptOutAction.APPLY
    assert field_of(lambda: InboundSettings(scope=True)) == "scope"
    assert field_of(lambda: InboundSettings(possible_opt_out="maybe")) == "possible_opt_out"


def test_spike_window_accepts_its_name() -> None:
    """detect_spike takes a window by name in any case, and refuses a bool."""
    assert detect_spike(SMS, "LAST_7_DAYS", 0, []).window is SpikeWindow.LAST_7_DAYS
    assert field_of(lambda: detect_spike(SMS, bad(True), 0, [])) == "window"


# ---------------------------------------------------------------------------- defect 8: Channel


@pytest.mark.parametrize("key", sorted(BUILTIN_CHANNELS))
def test_channel_constructor_with_a_builtin_key_gets_the_builtin_address_kind(key: str) -> None:
    """Channel(key) for a built-in key equals, hashes and is addressed like the built-in."""
    builtin = BUILTIN_CHANNELS[key]
    made = Channel(key)
    assert made == builtin
    assert hash(made) == hash(builtin)
    assert made.address_kind is builtin.address_kind
    assert Channel(key, builtin.address_kind).address_kind is builtin.address_kind


@pytest.mark.parametrize(
    ("key", "kind"),
    [("sms", AddressKind.HANDLE), ("email", AddressKind.PHONE), ("push", AddressKind.EMAIL)],
)
def test_channel_contradicting_a_builtin_address_kind_is_refused(
    key: str, kind: AddressKind
) -> None:
    """A built-in key with another address kind raises ValidationError("channel")."""
    assert field_of(lambda: Channel(key, kind)) == "channel"


def test_custom_channel_address_kind_is_validated() -> None:
    """A custom channel takes an AddressKind or its value/name; anything else is refused."""
    assert Channel("telegram").address_kind is AddressKind.HANDLE
    assert Channel("signal", "PHONE").address_kind is AddressKind.PHONE
    assert field_of(lambda: Channel("signal", 5)) == "channel.address_kind"
    assert field_of(lambda: Channel("signal", None)) == "channel.address_kind"


def test_channels_stay_hashable_and_ordered_by_key() -> None:
    """Channels built either way sort by key and collapse in sets."""
    assert sorted([Channel("sms"), Channel("email"), Channel("telegram")]) == [
        EMAIL,
        SMS,
        Channel("telegram"),
    ]
    assert {Channel("sms"), SMS} == {SMS}


def test_stop_delivered_with_a_constructed_channel_reaches_the_known_contact() -> None:
    """A STOP on Channel("sms") from a contact's phone unsubscribes that contact (no
    suppression)."""
    service = make_service()
    message = InboundMessage(ACCOUNT, Channel("sms"), PHONE, "STOP", "m1", datetime.now(UTC))
    result = service.handle_inbound(message)
    assert result.outcome is InboundOutcome.OPTED_OUT
    assert result.contact_ids == ("c1",)
    assert service.state(ADMIN, "c1", SMS) is SubscriptionState.UNSUBSCRIBED
    assert not service.can_send(ADMIN, "c1", SMS)


# ---------------------------------------------------------------------------- defect 13: text

INVISIBLE = ["\u202a", "\u202e", "\u2066", "\u2069", "\u200b", "\u200e", "\u200f", "\ufeff",
             "\u00ad", "\u2060", "\U000e0041"]

FREE_TEXT: list[tuple[str, Callable[[str], object]]] = [
    ("justification.note", lambda text: Justification("contact_request", text)),
    ("evidence.wording", lambda text: Evidence("web_form", text, "v1")),
    ("evidence.wording_version", lambda text: Evidence("web_form", "Text me", text)),
    ("evidence.location", lambda text: Evidence("web_form", "Text me", "v1", location=text)),
    ("evidence.reference", lambda text: Evidence("web_form", "Text me", "v1", reference=text)),
    ("handles[telegram]", lambda text: Contact(ACCOUNT, "c1", handles={"telegram": text})),
    ("templates", lambda text: ReplyTemplates(opt_out=text)),
    ("templates", lambda text: ReplyTemplates(help=text)),
    ("sender", lambda text: InboundMessage(ACCOUNT, "push", text, "STOP", "m1", EARLIEST)),
]


@pytest.mark.parametrize("char", INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(("field", "make"), FREE_TEXT, ids=[f for f, _ in FREE_TEXT])
def test_bidi_and_invisible_format_characters_are_refused_in_free_text(
    field: str, make: Callable[[str], object], char: str
) -> None:
    """A bidi override, isolate, zero-width or other format character in free text raises
    ValidationError naming the field and the code point."""
    with pytest.raises(ValidationError, match=f"U\\+{ord(char):04X}") as caught:
        make(f"ann{char}gro")
    assert caught.value.field == field


def test_every_format_character_of_this_python_is_refused() -> None:
    """Every Unicode category Cf character the running Python knows, except ZWNJ and ZWJ, is
    refused in a justification note."""
    allowed = {"\u200c", "\u200d"}
    format_chars = [
        chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Cf"
    ]
    assert format_chars
    for char in format_chars:
        if char in allowed:
            continue
        with pytest.raises(ValidationError):
            Justification("contact_request", f"a{char}b")


def test_joiners_newlines_and_ordinary_unicode_stay_allowed() -> None:
    """ZWJ emoji sequences, ZWNJ in Persian, NBSP and accents are kept; newlines only where text
    is multi-line."""
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want", with a ZWNJ
    note = f"Famille 👨\u200d👩\u200d👧 a appelé\u00a0: « réabonnez-moi »\n{persian}"
    assert Justification("contact_request", note).note == note
    assert Evidence("web_form", "line one\nline two", "v1").wording == "line one\nline two"
    assert field_of(lambda: Evidence("web_form", "Text me", "v\n1")) == "evidence.wording_version"
    assert field_of(lambda: Evidence("web_form", "Text me", "v\u20281")) == (
        "evidence.wording_version"
    )


# ---------------------------------------------------------------------------- defect 13: instants


@pytest.mark.parametrize("instant", EXTREME_INSTANTS, ids=lambda d: d.isoformat())
def test_instants_outside_1970_to_9000_are_refused(instant: datetime) -> None:
    """ensure_aware refuses instants before 1970-01-01T00:00Z or from 9000-01-01T00:00Z on, naming
    the field and the allowed range, without overflowing."""
    with pytest.raises(ValidationError, match="1970-01-01T00:00Z") as caught:
        ensure_aware("occurred_at", instant)
    assert caught.value.field == "occurred_at"


@pytest.mark.parametrize("instant", [EARLIEST, LATEST, LATEST.astimezone(KIRITIMATI)])
def test_instants_at_the_edges_of_the_range_are_accepted(instant: datetime) -> None:
    """1970-01-01T00:00Z and the last microsecond before 9000-01-01T00:00Z are accepted."""
    assert ensure_aware("occurred_at", instant) == instant


@given(st.datetimes(timezones=st.timezones()))
def test_any_aware_datetime_is_accepted_exactly_when_in_range(instant: datetime) -> None:
    """Over the whole datetime range and every time zone, ensure_aware accepts an instant if and
    only if it is in [1970, 9000), and otherwise raises ValidationError."""
    try:
        accepted = ensure_aware("at", instant) is instant
    except ValidationError:
        accepted = False
    assert accepted == (EARLIEST <= instant <= LATEST)


def test_evidence_captured_at_in_year_one_is_refused() -> None:
    """Evidence captured in year 1 raises ValidationError("evidence.captured_at")."""
    assert field_of(
        lambda: Evidence("paper", "Text me", "v1", captured_at=datetime(1, 1, 1, tzinfo=UTC))
    ) == "evidence.captured_at"


def test_inbound_message_received_at_datetime_min_is_refused() -> None:
    """InboundMessage(received_at=datetime.min in UTC) raises ValidationError("received_at")."""
    assert field_of(
        lambda: InboundMessage(
            ACCOUNT, SMS, PHONE, "STOP", "m1", datetime.min.replace(tzinfo=UTC)
        )
    ) == "received_at"


@pytest.mark.parametrize("instant", EXTREME_INSTANTS, ids=lambda d: d.isoformat())
@pytest.mark.parametrize("ch", [SMS, EMAIL])
def test_honor_by_refuses_out_of_range_instants(ch: Channel, instant: datetime) -> None:
    """honor_by in a Los Angeles account raises ValidationError("received_at"), not OverflowError,
    for an instant outside the range."""
    settings = InboundSettings()
    assert field_of(lambda: settings.honor_by(ch, instant, "America/Los_Angeles")) == "received_at"


@pytest.mark.parametrize("tz", ["UTC", "America/Los_Angeles", "Pacific/Kiritimati"])
@pytest.mark.parametrize("ch", [SMS, EMAIL])
@pytest.mark.parametrize("instant", [EARLIEST, LATEST])
def test_honor_by_works_at_the_edges_of_the_range(ch: Channel, instant: datetime, tz: str) -> None:
    """The deadline for an opt-out received at either end of the range is computed, after it."""
    assert InboundSettings().honor_by(ch, instant, tz) > instant


@given(st.datetimes(timezones=st.timezones()), st.sampled_from(["America/Los_Angeles", "UTC"]))
def test_inbound_message_and_deadline_never_overflow(instant: datetime, tz: str) -> None:
    """Any aware received_at gives a message and a deadline, or ValidationError("received_at")."""
    if not EARLIEST <= instant <= LATEST:
        assert field_of(
            lambda: InboundMessage(ACCOUNT, SMS, PHONE, "STOP", "m1", instant)
        ) == "received_at"
        return
    message = InboundMessage(ACCOUNT, SMS, PHONE, "STOP", "m1", instant)
    assert InboundSettings().honor_by(message.channel, message.received_at, tz) > instant


@pytest.mark.parametrize("instant", EXTREME_INSTANTS, ids=lambda d: d.isoformat())
def test_trends_functions_refuse_out_of_range_as_of(instant: datetime) -> None:
    """Every trends function taking as_of raises ValidationError("as_of"), never OverflowError."""
    calls: list[Callable[[], object]] = [
        lambda: plan_report(instant, "America/Los_Angeles"),
        lambda: plan_report(instant, "Pacific/Kiritimati"),
        lambda: months_earlier(instant, LA, 1),
        lambda: one_month_earlier(instant, KIRITIMATI),
        lambda: month_start(instant, LA),
        lambda: month_boundaries(instant, KIRITIMATI, 12),
        lambda: month_ends(instant, LA, 12),
        lambda: spike_windows(instant, LA),
        lambda: build_report(
            as_of=instant, tz=LA, totals_now={}, totals_previous={}, series=[], spikes=[]
        ),
    ]
    for call in calls:
        assert field_of(call) == "as_of"


@pytest.mark.parametrize("instant", EXTREME_INSTANTS[:4], ids=lambda d: d.isoformat())
def test_trend_intervals_and_points_refuse_out_of_range_instants(instant: datetime) -> None:
    """Interval and SeriesPoint raise ValidationError naming the instant field, never
    OverflowError."""
    assert field_of(lambda: Interval(instant, instant)) == "start"
    assert field_of(lambda: Interval(EARLIEST, instant)) in ("end", "start")
    assert field_of(lambda: SeriesPoint("2026-01", instant, {})) == "at"


@pytest.mark.parametrize("tz", ZONES, ids=str)
@pytest.mark.parametrize(
    "as_of", [EARLIEST, EARLIEST + timedelta(days=40), LATEST, LATEST - timedelta(days=400)]
)
def test_plan_report_works_at_the_edges_of_the_range(as_of: datetime, tz: ZoneInfo) -> None:
    """A report planned at either end of the range builds, and asks the store only about instants
    in the range (those before 1970 are clamped to 1970-01-01T00:00Z)."""
    plan = plan_report(as_of, tz)
    instants = plan.totals_instants()
    intervals = plan.count_intervals()
    # "As of" instants are asked one microsecond later: they include the changes at as_of.
    assert all(EARLIEST <= at <= as_of + timedelta(microseconds=1) for at in instants)
    assert all(EARLIEST <= i.start <= i.end <= as_of for i in intervals)
    report = plan.build(
        totals={at: {SMS: ChannelTotals(subscribed=1)} for at in instants},
        counts={interval: {} for interval in intervals},
    )
    assert report.as_of == as_of
    assert report.compared_with == plan.compared_with >= EARLIEST
    assert [point.month for point in report.series][-1] == (
        f"{as_of.astimezone(tz).year:04d}-{as_of.astimezone(tz).month:02d}"
    )
    assert not report.flagged_spikes


@given(st.datetimes(timezones=st.timezones()), st.sampled_from(ZONES))
def test_plan_report_never_overflows(instant: datetime, tz: ZoneInfo) -> None:
    """For any aware as_of in any zone, plan_report plans or raises ValidationError("as_of")."""
    if not EARLIEST <= instant <= LATEST:
        assert field_of(lambda: plan_report(instant, tz)) == "as_of"
        return
    plan = plan_report(instant, tz)
    assert all(at >= EARLIEST for at in plan.totals_instants())


# ---------------------------------------------------------------------------- defect 13: types

WRONG_TYPES: list[tuple[str, Callable[[], object]]] = [
    ("matcher", lambda: InboundSettings(matcher=bad(None))),
    ("templates", lambda: InboundSettings(templates=bad({"help": "x"}))),
    ("calendar", lambda: InboundSettings(calendar=bad(5))),
    ("templates", lambda: ReplyTemplates(opt_out=None)),
    ("timezone", lambda: WeekdayCalendar(timezone="Nowhere/City")),
    ("timezone", lambda: WeekdayCalendar(timezone=None)),
    ("holidays", lambda: WeekdayCalendar(holidays=5)),
    ("holidays", lambda: WeekdayCalendar(holidays=[datetime(2026, 1, 1, tzinfo=UTC)])),
    ("holidays", lambda: WeekdayCalendar(holidays=["2026-01-01"])),
    ("days", lambda: WeekdayCalendar().add_business_days(EARLIEST, bad("3"))),
    ("days", lambda: WeekdayCalendar().add_business_days(EARLIEST, -1)),
    ("days", lambda: WeekdayCalendar().add_business_days(EARLIEST, 10**9)),
    ("start", lambda: WeekdayCalendar().add_business_days(bad(None), 1)),
    ("channel", lambda: InboundSettings().honor_by(bad(5), EARLIEST)),
    ("received_at", lambda: InboundSettings().honor_by(SMS, bad("2026-01-01"))),
    ("timezone", lambda: InboundSettings().honor_by(SMS, EARLIEST, "Nowhere/City")),
    ("inbound", lambda: AccountSettings(inbound=bad(None))),
    ("spikes", lambda: AccountSettings(spikes=bad({}))),
    ("channel_groups", lambda: ChannelGroups(bad(None))),
    ("channel_groups", lambda: ChannelGroups([bad(5)])),
    ("channel", lambda: ChannelGroups([(SMS,)]).group_of(bad(5))),
    ("timezone", lambda: month_ends(EARLIEST, bad("Mars/Olympus"), 3)),
    ("timezone", lambda: spike_windows(EARLIEST, bad(None))),
    ("spike_settings", lambda: spike_windows(EARLIEST, LA, settings=bad(5))),
    ("spike_settings", lambda: plan_report(EARLIEST, LA, spike_settings=bad(5))),
    ("as_of", lambda: months_earlier(EARLIEST, LA, 10**6)),
    ("as_of", lambda: months_earlier(datetime(2026, 1, 1, tzinfo=UTC), KIRITIMATI, 24_300)),
    ("totals", lambda: SeriesPoint("2026-01", EARLIEST, bad(None))),
    ("totals", lambda: SeriesPoint("2026-01", EARLIEST, bad([SMS]))),
    ("baseline", lambda: detect_spike(SMS, "last_7_days", 1, bad(None))),
    ("settings", lambda: detect_spike(SMS, "last_7_days", 1, [], settings=bad(5))),
    ("windows", lambda: evaluate_spikes(bad(None), {})),
    ("counts", lambda: evaluate_spikes(spike_windows(EARLIEST, LA), bad(None))),
    ("values", lambda: sparkline(bad(["a", "b"]))),
    ("values", lambda: sparkline(bad(None))),
    (
        "totals_now",
        lambda: build_report(
            as_of=EARLIEST, tz=LA, totals_now=bad(None), totals_previous={}, series=[], spikes=[]
        ),
    ),
    (
        "series",
        lambda: build_report(
            as_of=EARLIEST, tz=LA, totals_now={}, totals_previous={}, series=bad(None), spikes=[]
        ),
    ),
]


@pytest.mark.parametrize(
    ("field", "call"), WRONG_TYPES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(WRONG_TYPES)]
)
def test_wrong_argument_types_raise_validation_error_naming_the_field(
    field: str, call: Callable[[], object]
) -> None:
    """A wrong type or value in a public constructor or function of the domain modules raises
    ValidationError naming the field, never TypeError, AttributeError, KeyError or OverflowError."""
    assert field_of(call) == field


def test_valid_calendars_and_settings_still_work() -> None:
    """Holidays as dates, a zone name and whole-number days give the same deadline as before."""
    calendar = WeekdayCalendar(holidays=[date(2026, 4, 6)], timezone="Europe/Berlin")
    assert calendar.holidays == frozenset({date(2026, 4, 6)})
    friday = datetime(2026, 4, 3, 16, 0, tzinfo=UTC)
    assert calendar.add_business_days(friday, 1) == datetime(2026, 4, 7, 16, 0, tzinfo=UTC)
    assert calendar.add_business_days(friday, 0) == friday
    assert AccountSettings(inbound=InboundSettings(calendar=calendar)).inbound.calendar is calendar
    assert sparkline([]) == ""


# ---------------------------------------------------------------------------- service

class LookAlike:
    """Has .reason and .note like a Justification, but is not one."""

    reason = ResubscribeReason.CONTACT_REQUEST
    note = ""


def unsubscribed_service() -> ConsentService:
    service = make_service()
    service.unsubscribe(ADMIN, ["c1"], [SMS])
    return service


SERVICE_CALLS: list[tuple[str, Callable[[ConsentService], Any]]] = [
    ("subscribed", lambda s: s.set_subscribed(ADMIN, "c1", "sms", bad("false"))),
    ("partial", lambda s: s.unsubscribe(ADMIN, ["c1"], [SMS], partial=bad("no"))),
    ("details", lambda s: s.unsubscribe(ADMIN, ["c1"], [SMS], details=bad("x"))),
    ("contact_ids", lambda s: s.unsubscribe(ADMIN, bad(None), "sms")),
    ("channels", lambda s: s.unsubscribe(ADMIN, ["c1"], bad(None))),
    ("contacts", lambda s: s.upsert_contacts(ADMIN, bad(None))),
    ("justification", lambda s: s.resubscribe(ADMIN, ["c1"], "sms", justification=bad("mistake"))),
    (
        "justification",
        lambda s: s.set_subscribed(ADMIN, "c1", SMS, True, justification=bad(LookAlike())),
    ),
]


@pytest.mark.parametrize(
    ("field", "call"), SERVICE_CALLS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(SERVICE_CALLS)]
)
def test_service_arguments_of_the_wrong_type_raise_validation_error(
    field: str, call: Callable[[ConsentService], Any]
) -> None:
    """Service calls with a wrong flag, id list, channel list, contact list or justification raise
    ValidationError naming the argument and change nothing."""
    service = unsubscribed_service()
    before = service.history(ADMIN, "c1")
    assert field_of(lambda: call(service)) == field
    assert service.history(ADMIN, "c1") == before
    assert service.state(ADMIN, "c1", SMS) is SubscriptionState.UNSUBSCRIBED


CONTACT_READS: list[Callable[[ConsentService, Actor], Any]] = [
    lambda s, a: s.history(a, bad(None)),
    lambda s, a: s.subscriptions(a, bad(None)),
    lambda s, a: s.can_send(a, bad(None), "sms"),
]


@pytest.mark.parametrize("read", CONTACT_READS, ids=["history", "subscriptions", "can_send"])
def test_contact_actor_reading_contact_none_is_refused(
    read: Callable[[ConsentService, Actor], Any],
) -> None:
    """A contact actor passing contact_id=None gets NotAuthorizedError or ValidationError, never
    another contact's records."""
    service = make_service()
    service.upsert_contacts(ADMIN, [Contact(ACCOUNT, "c2", phone="+14155550199")])
    service.opt_in(ADMIN, ["c2"], [SMS], evidence=EVIDENCE)
    with pytest.raises((NotAuthorizedError, ValidationError)):
        read(service, Actor.contact(ACCOUNT, "c1"))


@pytest.mark.parametrize("handles", [5, "tg-1", [("telegram",)], [1], [("telegram", 7)]])
def test_contact_handles_of_the_wrong_shape_raise_validation_error(handles: object) -> None:
    """Handles that are not a mapping or (channel, handle) pairs raise ValidationError naming the
    field, never TypeError or ValueError."""
    with pytest.raises(ValidationError, match="handles"):
        Contact("acme", "c1", handles=handles)  # type: ignore[arg-type]


def test_address_for_accepts_a_channel_key() -> None:
    """Contact.address_for takes a channel key as well as a Channel."""
    contact = Contact("acme", "c1", phone="+14155550100", handles={"telegram": "tg-1"})
    assert contact.address_for("sms") == "+14155550100"
    assert contact.address_for("telegram") == "tg-1"
