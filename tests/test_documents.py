"""The public JSON documents (consentkit.documents): round trips, documented keys and refusals."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentkit import (
    EMAIL,
    SMS,
    ChangeResult,
    ConflictError,
    ConsentError,
    ConsentEvent,
    Contact,
    ContactsResult,
    Evidence,
    Justification,
    JustificationError,
    NotAuthorizedError,
    PairRef,
    ReviewDecision,
    ReviewItem,
    ReviewKind,
    ReviewResolution,
    Subscription,
    SubscriptionState,
    UnknownContactError,
    ValidationError,
)
from consentkit.channels import Channel
from consentkit.documents import (
    DOCUMENT_TYPES,
    from_document,
    make_document_converter,
    to_document,
)
from consentkit.inbound import InboundOutcome, InboundResult
from consentkit.keywords import Classification
from consentkit.model import ActorKind, OptOutOrigin, Source
from consentkit.service import ChangesPage, Page, RefusedPair, SkippedPair
from consentkit.testing.strategies import (
    aware_datetimes,
    channels,
    contact_ids,
    evidence,
    justifications,
)
from consentkit.trends import (
    ChannelTotals,
    SeriesPoint,
    SpikeCheck,
    SpikeWindow,
    TrendReport,
    build_report,
)
from tests.test_serialization import contacts_with_handles, events

ACCOUNT = "acme"
NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
SUB = SubscriptionState.SUBSCRIBED
UNSUB = SubscriptionState.UNSUBSCRIBED
words = st.text(string.ascii_letters + string.digits + " .,:'-", min_size=1, max_size=40)
any_text = st.text(max_size=40)
optional_words = st.none() | words


# ---------------------------------------------------------------------- strategies


def pairs() -> st.SearchStrategy[PairRef]:
    """(contact, channel) pairs."""
    return st.builds(PairRef, contact_ids(), channels())


def pair_tuples() -> st.SearchStrategy[tuple[PairRef, ...]]:
    """A few distinct pairs."""
    return st.lists(pairs(), unique=True, max_size=4).map(tuple)


def consent_errors() -> st.SearchStrategy[ConsentError]:
    """One error of each kind a refused pair carries."""
    return st.sampled_from(
        [
            ValidationError("contact_ids", "'zed' was never subscribed to sms"),
            NotAuthorizedError("member:bob is not an admin of account 'acme'"),
            JustificationError("a resubscription needs a justification"),
            UnknownContactError(ACCOUNT, ["zed"]),
            ConflictError("somebody changed it meanwhile"),
        ]
    )


def change_results() -> st.SearchStrategy[ChangeResult]:
    """Change results with every part present or empty."""
    return st.builds(
        ChangeResult,
        batch_id=st.uuids().map(lambda u: u.hex),
        new_state=st.sampled_from([SUB, UNSUB]),
        changed=pair_tuples(),
        unchanged=pair_tuples(),
        skipped=st.lists(st.builds(SkippedPair, contact_ids(), channels(), any_text), max_size=3)
        .map(tuple),
        refused=st.lists(
            st.builds(RefusedPair, contact_ids(), channels(), consent_errors()), max_size=3
        ).map(tuple),
        changed_count=st.integers(0, 2**40),
        unchanged_count=st.integers(0, 2**40),
        versions=st.dictionaries(pairs(), st.integers(1, 2**62), max_size=4),
    )


def contacts_results() -> st.SearchStrategy[ContactsResult]:
    """Results of upsert_contacts."""
    return st.builds(
        ContactsResult,
        created=st.integers(0, 10**6),
        updated=st.integers(0, 10**6),
        suppressed=pair_tuples(),
        unreachable=pair_tuples(),
    )


def subscriptions() -> st.SearchStrategy[Subscription]:
    """Subscriptions in either state, with or without an opt-out record."""
    return st.builds(
        Subscription,
        account=st.just(ACCOUNT),
        contact_id=contact_ids(),
        channel=channels(),
        state=st.sampled_from([SUB, UNSUB]),
        version=st.integers(1, 2**62),
        updated_at=aware_datetimes(),
        changed_by=st.sampled_from(ActorKind),
        source=st.sampled_from(Source),
        reason=st.none() | st.sampled_from(["complaint", "hard_bounce"]),
        opted_out_by=st.frozensets(st.sampled_from(OptOutOrigin)),
        opted_out_via=st.none() | st.just("phone:+14155550100"),
        last_opt_out_at=st.none() | aware_datetimes(),
    )


def review_items() -> st.SearchStrategy[ReviewItem]:
    """Open and decided review items."""
    return st.builds(
        ReviewItem,
        account=st.just(ACCOUNT),
        id=words,
        kind=st.sampled_from(ReviewKind),
        channel=channels(),
        message_id=words,
        sender=words,
        text=any_text,
        contact_ids=st.lists(contact_ids(), max_size=3).map(tuple),
        received_at=aware_datetimes(),
        honor_by=aware_datetimes(),
        decision=st.none() | st.sampled_from(ReviewDecision),
        decided_by=optional_words,
        decided_at=st.none() | aware_datetimes(),
        note=st.none() | any_text,
    )


def review_resolutions() -> st.SearchStrategy[ReviewResolution]:
    """Decisions with the pairs they changed."""
    return st.builds(ReviewResolution, item=review_items(), changed=pair_tuples())


def inbound_results() -> st.SearchStrategy[InboundResult]:
    """Inbound results of every outcome, first deliveries and replays."""
    return st.builds(
        InboundResult,
        account=st.just(ACCOUNT),
        message_id=words,
        channel=channels(),
        sender=words,
        classification=st.sampled_from(Classification),
        keyword=optional_words,
        outcome=st.sampled_from(InboundOutcome),
        contact_ids=st.lists(contact_ids(), max_size=3).map(tuple),
        channels=st.lists(channels(), unique=True, max_size=3).map(tuple),
        changed=st.lists(st.tuples(contact_ids(), channels()), max_size=3).map(tuple),
        reply=st.none() | any_text,
        honor_by=st.none() | aware_datetimes(),
        received_at=aware_datetimes(),
        batch_id=st.none() | st.uuids().map(lambda u: u.hex),
        review_item=optional_words,
        replayed=st.booleans(),
    )


def _totals() -> st.SearchStrategy[dict[Channel, ChannelTotals]]:
    figures = st.builds(ChannelTotals, st.integers(0, 10**6), st.integers(0, 10**6))
    return st.dictionaries(channels(), figures, max_size=3)


finite = st.none() | st.floats(allow_nan=False, allow_infinity=False)


def trend_reports() -> st.SearchStrategy[TrendReport]:
    """Reports as build_report assembles them, with sparse series and every kind of spike."""
    months = st.lists(
        st.tuples(st.integers(2000, 2099), st.integers(1, 12)), unique=True, max_size=4
    )
    series = months.flatmap(
        lambda chosen: st.tuples(
            *(
                st.builds(SeriesPoint, st.just(f"{y:04d}-{m:02d}"), aware_datetimes(), _totals())
                for y, m in chosen
            )
        )
    )
    spikes = st.lists(
        st.builds(
            SpikeCheck,
            channel=channels(),
            window=st.sampled_from(SpikeWindow),
            observed=st.integers(0, 10**6),
            baseline_mean=finite,
            baseline_stdev=finite,
            threshold=finite,
            z_score=finite,
            history_periods=st.integers(0, 52),
            baseline_periods=st.integers(0, 52),
            flagged=st.booleans(),
            reason=any_text,
        ),
        max_size=3,
    )
    return st.builds(
        lambda as_of, tz, now, before, points, checks: build_report(
            as_of=as_of, tz=tz, totals_now=now, totals_previous=before, series=list(points),
            spikes=checks,
        ),
        aware_datetimes(),
        st.sampled_from(["UTC", "America/New_York", "Asia/Tokyo"]),
        _totals(),
        _totals(),
        series,
        spikes,
    )


STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    ChangeResult: change_results(),
    ConsentEvent: events(),
    Contact: contacts_with_handles(),
    ContactsResult: contacts_results(),
    ChangesPage: st.builds(
        ChangesPage, st.lists(events(), max_size=3).map(tuple), words, st.booleans()
    ),
    Evidence: evidence(),
    InboundResult: inbound_results(),
    Justification: justifications(),
    ReviewItem: review_items(),
    ReviewResolution: review_resolutions(),
    Subscription: subscriptions(),
    TrendReport: trend_reports(),
}


def _through_json(document: dict[str, Any]) -> Any:
    return json.loads(json.dumps(document))


# ---------------------------------------------------------------------- round trips


def test_every_documented_type_has_a_round_trip_strategy() -> None:
    """DOCUMENT_TYPES is exactly the strategies here plus Page (tested per item type)."""
    assert set(DOCUMENT_TYPES) == {*STRATEGIES, Page}


@pytest.mark.parametrize("kind", list(STRATEGIES), ids=lambda kind: kind.__name__)
@given(data=st.data())
def test_documents_round_trip_through_json_text(kind: type, data: st.DataObject) -> None:
    """Every value survives to_document, JSON text and from_document unchanged."""
    value = data.draw(STRATEGIES[kind])
    document = to_document(value)
    assert _through_json(document) == document
    assert from_document(_through_json(document), kind) == value


@pytest.mark.parametrize("kind", list(STRATEGIES), ids=lambda kind: kind.__name__)
@given(data=st.data())
def test_pages_round_trip_with_their_item_type(kind: type, data: st.DataObject) -> None:
    """A page of any documented type is its items' documents plus the next cursor, and reads
    back as ``Page[Type]``."""
    items = data.draw(st.lists(STRATEGIES[kind], max_size=3).map(tuple))
    page = Page(items, data.draw(st.none() | words))
    document = to_document(page)
    assert document == {
        "items": [to_document(item) for item in items],
        "next_cursor": page.next_cursor,
    }
    assert from_document(_through_json(document), Page[kind]) == page  # type: ignore[valid-type]


@given(inbound_results())
def test_an_inbound_result_document_is_its_own_to_document(result: InboundResult) -> None:
    """InboundResult.to_document() and documents.to_document give the same document, and
    InboundResult.from_document reads it back, replayed flag included."""
    assert to_document(result) == result.to_document()
    back = InboundResult.from_document(result.to_document())
    assert back == result
    assert back.replayed is result.replayed


@given(change_results())
def test_refused_errors_keep_their_class_and_message(result: ChangeResult) -> None:
    """A refused pair's error comes back as the same class with the same message (errors are
    not part of a result's equality, so the round trip above cannot see them)."""
    back = from_document(_through_json(to_document(result)), ChangeResult)
    assert [(type(r.error), str(r.error)) for r in back.refused] == [
        (type(r.error), str(r.error)) for r in result.refused
    ]
    for before, after in zip(result.refused, back.refused, strict=True):
        if isinstance(before.error, ValidationError):
            assert isinstance(after.error, ValidationError)
            assert after.error.field == before.error.field


# ---------------------------------------------------------------------- documented keys


def test_change_result_keys_are_the_documented_ones() -> None:
    """A change result's document has the documented keys; versions are pair objects."""
    result = ChangeResult(
        "b1", UNSUB, changed=(PairRef("ana", SMS),), unchanged=(PairRef("ben", EMAIL),),
        refused=(RefusedPair("zed", SMS, UnknownContactError(ACCOUNT, ["zed"])),),
        changed_count=1, unchanged_count=1,
        versions={PairRef("ana", SMS): 4, PairRef("ben", EMAIL): 2},
    )
    document = to_document(result)
    assert document == {
        "batch_id": "b1",
        "new_state": "unsubscribed",
        "changed": [{"contact_id": "ana", "channel": "sms"}],
        "unchanged": [{"contact_id": "ben", "channel": "email"}],
        "skipped": [],
        "refused": [
            {
                "contact_id": "zed",
                "channel": "sms",
                "error": {
                    "type": "UnknownContactError",
                    "code": "unknown_contact",
                    "message": str(result.refused[0].error),
                    "contact_ids": ["zed"],
                },
            }
        ],
        "changed_count": 1,
        "unchanged_count": 1,
        "versions": [
            {"contact_id": "ana", "channel": "sms", "version": 4},
            {"contact_id": "ben", "channel": "email", "version": 2},
        ],
        "detailed": True,
    }


def test_trend_report_keys_are_the_documented_ones() -> None:
    """A trend report's document: instants with offsets, changes, sparse series totals by
    channel key, spikes with their figures."""
    point = SeriesPoint("2026-02", NOW, {SMS: ChannelTotals(3, 1)})
    spike = SpikeCheck(SMS, SpikeWindow.LAST_7_DAYS, 9, 1.5, 0.5, 4.5, 7.5, 8, 8, True, "why")
    report = build_report(
        as_of=NOW, tz="UTC", totals_now={SMS: ChannelTotals(3, 1)}, totals_previous={},
        series=[point], spikes=[spike],
    )
    document = to_document(report)
    assert set(document) == {"as_of", "compared_with", "timezone", "channels", "series", "spikes"}
    assert document["as_of"] == "2026-03-01T12:30:00+00:00"
    assert document["channels"][0]["subscribed"] == {
        "previous": 0, "current": 3, "absolute": 3, "percent": None, "direction": "up",
        "note": report.channels[0].subscribed.note,
    }
    assert document["series"] == [
        {"month": "2026-02", "at": "2026-03-01T12:30:00+00:00",
         "totals": {"sms": {"subscribed": 3, "unsubscribed": 1}}}
    ]
    assert document["spikes"][0]["window"] == "last_7_days"
    assert document["spikes"][0]["z_score"] == 7.5


def test_review_and_contacts_keys_are_the_documented_ones() -> None:
    """A review item's document has one key per attribute (enums by value, no derived flags);
    a contacts result lists pairs as objects."""
    item = ReviewItem(
        ACCOUNT, "sms:SM1", ReviewKind.POSSIBLE_OPT_OUT, SMS, "SM1", "+14155550100",
        "please stop", ("ana",), NOW, NOW, ReviewDecision.OPT_OUT, "admin:alice", NOW, "yes",
    )
    assert to_document(ReviewResolution(item, (PairRef("ana", SMS),))) == {
        "item": {
            "account": ACCOUNT, "id": "sms:SM1", "kind": "possible_opt_out", "channel": "sms",
            "message_id": "SM1", "sender": "+14155550100", "text": "please stop",
            "contact_ids": ["ana"], "received_at": NOW.isoformat(), "honor_by": NOW.isoformat(),
            "decision": "opt_out", "decided_by": "admin:alice", "decided_at": NOW.isoformat(),
            "note": "yes",
        },
        "changed": [{"contact_id": "ana", "channel": "sms"}],
    }
    assert to_document(ContactsResult(2, 1, unreachable=(PairRef("ana", EMAIL),))) == {
        "created": 2, "updated": 1, "suppressed": [],
        "unreachable": [{"contact_id": "ana", "channel": "email"}],
    }


# ---------------------------------------------------------------------- refusals


def test_values_and_kinds_without_a_document_are_refused() -> None:
    """Undocumented values, kinds, and pages without an item type raise ValidationError naming
    the argument."""
    with pytest.raises(ValidationError, match=r"^value: int has no public document"):
        to_document(3)
    with pytest.raises(ValidationError, match=r"^value: a page of str"):
        to_document(Page(("x",), None))
    with pytest.raises(ValidationError, match=r"^kind: .* has no public document"):
        from_document({}, dict)
    with pytest.raises(ValidationError, match=r"^kind: name the type of the page's items"):
        from_document({"items": [], "next_cursor": None}, Page)
    with pytest.raises(ValidationError, match=r"^document: expected a JSON object, got list"):
        from_document([], ChangeResult)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^converter: expected a converter"):
        to_document(Page((), None), converter="mine")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^converter: expected a converter"):
        from_document({}, Contact, converter=object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^document: expected an inbound result object"):
        InboundResult.from_document(["not", "a", "document"])  # type: ignore[arg-type]


def test_malformed_documents_are_refused_naming_the_problem() -> None:
    """Missing keys, bad values and naive datetimes raise ValidationError, never KeyError or
    TypeError."""
    good = to_document(ChangeResult("b1", SUB, versions={PairRef("ana", SMS): 1}))
    with pytest.raises(ValidationError, match=r"required field missing @ document.batch_id"):
        from_document({k: v for k, v in good.items() if k != "batch_id"}, ChangeResult)
    with pytest.raises(ValidationError, match="versions"):
        from_document({**good, "versions": [{"contact_id": "ana", "channel": "sms"}]},
                      ChangeResult)
    with pytest.raises(ValidationError, match="versions are integers >= 1"):
        from_document(
            {**good, "versions": [{"contact_id": "ana", "channel": "sms", "version": 0}]},
            ChangeResult,
        )
    with pytest.raises(ValidationError, match="'SMS!' is not a valid channel key"):
        from_document({**good, "changed": [{"contact_id": "ana", "channel": "SMS!"}]},
                      ChangeResult)
    inbound = InboundResult(
        ACCOUNT, "SM1", SMS, "+14155550100", Classification.OPT_OUT, "STOP",
        InboundOutcome.OPTED_OUT, ("ana",), (SMS,), (("ana", SMS),), "bye", NOW, NOW,
    ).to_document()
    with pytest.raises(ValidationError, match="naive datetime"):
        from_document({**inbound, "received_at": "2026-03-01T12:30:00"}, InboundResult)
    missing = dict(inbound)
    del missing["outcome"]
    with pytest.raises(ValidationError, match="the key 'outcome' is missing"):
        from_document(missing, InboundResult)
    with pytest.raises(ValidationError, match="replayed: expected true or false"):
        from_document({**inbound, "replayed": "yes"}, InboundResult)


def test_document_converters_are_independent() -> None:
    """Each make_document_converter() is new: a hook registered on one changes neither another
    nor to_document's own."""
    mine = make_document_converter()
    mine.register_unstructure_hook(Channel, lambda ch: ch.key.upper())
    result = ChangeResult("b1", SUB, changed=(PairRef("ana", SMS),))
    assert to_document(result, converter=mine)["changed"] == [
        {"contact_id": "ana", "channel": "sms"}  # pairs have their own hook
    ]
    assert to_document(Page((), None), converter=mine) == {"items": [], "next_cursor": None}
    assert make_document_converter().unstructure(SMS) == "sms"
    sub = Subscription(ACCOUNT, "ana", SMS, SUB, 1, NOW, ActorKind.ADMIN, Source.CLI)
    assert to_document(sub, converter=mine)["channel"] == "SMS"
    assert to_document(sub)["channel"] == "sms"


def test_enum_fields_read_their_names_and_values_in_any_case() -> None:
    """Documents a host builds by hand may spell an enum as its name (the error messages do)."""
    for spelling in ("CONTACT_REQUEST", "contact_request", "Contact_Request"):
        read = from_document({"reason": spelling, "note": "asked"}, Justification)
        assert read.reason.value == "contact_request"
    with pytest.raises(ValidationError):
        from_document({"reason": "because", "note": "asked"}, Justification)
