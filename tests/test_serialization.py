"""The cattrs converter: JSON shapes and round trips of the consentkit model."""

from __future__ import annotations

import csv
import io
import json
import string
from datetime import UTC, datetime, timedelta, timezone

import attrs
import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentkit import (
    PUSH,
    SMS,
    Actor,
    ActorKind,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    Subscription,
    SubscriptionState,
    ValidationError,
)
from consentkit.channels import Channel
from consentkit.model import Suppression
from consentkit.serialization import (
    EVENT_CSV_FIELDS,
    event_from_json,
    event_to_csv_row,
    event_to_json,
    make_converter,
)
from consentkit.testing.strategies import (
    actors,
    aware_datetimes,
    channels,
    contact_ids,
    contacts,
    custom_channels,
    evidence,
    justifications,
)

ACCOUNT = "acme"
NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
reason_codes = st.none() | st.sampled_from(["hard_bounce", "complaint", "mistaken_unsubscribe"])


def events() -> st.SearchStrategy[ConsentEvent]:
    """Events with every optional part present or absent, in any time zone."""
    return st.builds(
        ConsentEvent,
        sequence=st.integers(1, 2**62),
        account=st.just(ACCOUNT),
        contact_id=contact_ids(),
        channel=channels(),
        previous_state=st.sampled_from(SubscriptionState),
        new_state=st.sampled_from([SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED]),
        actor=actors(ACCOUNT, ["ana", "ben"]).flatmap(
            lambda actor: st.builds(
                attrs.evolve,
                st.just(actor),
                roles=st.frozensets(st.sampled_from(["owner", "support", "billing"])),
            )
        ),
        source=st.sampled_from(Source),
        occurred_at=aware_datetimes(),
        recorded_at=aware_datetimes(),
        justification=st.none() | justifications(),
        evidence=st.none() | evidence(),
        reason=reason_codes,
        inbound_message_id=st.none() | st.text(string.ascii_letters + string.digits, min_size=1),
        batch_id=st.none() | st.uuids().map(lambda u: u.hex),
    )


def contacts_with_handles() -> st.SearchStrategy[Contact]:
    """Contacts with optional phone, email and handles on push and custom channels."""
    handles = st.dictionaries(
        st.just(PUSH) | custom_channels(),
        st.text(string.ascii_letters + string.digits + ":-_", min_size=1, max_size=30),
        max_size=3,
    )
    return st.builds(
        lambda contact, extra: attrs.evolve(contact, handles=extra),
        contacts(ACCOUNT),
        handles,
    )


@given(events())
def test_events_round_trip(event: ConsentEvent) -> None:
    """Every event survives unstructure then structure unchanged."""
    converter = make_converter()
    assert converter.structure(converter.unstructure(event), ConsentEvent) == event


@given(events())
def test_event_json_is_valid_compact_sorted_json(event: ConsentEvent) -> None:
    """event_to_json writes one line of compact JSON with sorted keys that parses back."""
    converter = make_converter()
    text = event_to_json(converter, event)
    assert "\n" not in text
    document = json.loads(text)
    assert document == converter.unstructure(event)
    assert list(document) == sorted(document)
    assert event_from_json(converter, text) == event


@given(contacts_with_handles())
def test_contacts_round_trip(contact: Contact) -> None:
    """Every contact, handles included, survives unstructure then structure unchanged."""
    converter = make_converter()
    document = converter.unstructure(contact)
    assert json.loads(json.dumps(document)) == document
    assert converter.structure(document, Contact) == contact


@given(aware_datetimes(), channels(), reason_codes)
def test_subscriptions_and_suppressions_round_trip(
    when: datetime, ch: Channel, reason: str | None
) -> None:
    """Subscriptions and suppressions survive a round trip through JSON text."""
    converter = make_converter()
    subscription = Subscription(
        ACCOUNT, "ana", ch, SubscriptionState.UNSUBSCRIBED, 3, when, ActorKind.CONTACT,
        Source.UNSUBSCRIBE_LINK, reason,
        opted_out_by=frozenset({OptOutOrigin.CONTACT, OptOutOrigin.ADMIN}),
        opted_out_via="phone:+14155550100", last_opt_out_at=when,
    )
    suppression = Suppression(ACCOUNT, "phone:+14155550100", ch, when, Source.INBOUND_KEYWORD)
    lifted = Suppression(
        ACCOUNT, "phone:+14155550100", ch, when, Source.INBOUND_KEYWORD, "SM1", active=False
    )
    assert converter.unstructure(subscription)["opted_out_by"] == ["admin", "contact"]
    for value in (subscription, suppression, lifted):
        text = json.dumps(converter.unstructure(value))
        assert converter.structure(json.loads(text), type(value)) == value


def test_documented_shapes() -> None:
    """Datetimes keep their offset, channels are keys, enums are values, roles a sorted list."""
    converter = make_converter()
    plus_two = timezone(timedelta(hours=2))
    actor = Actor(ActorKind.ADMIN, "alice", ACCOUNT, roles={"support", "owner"})
    event = ConsentEvent(
        7, ACCOUNT, "ana", SMS, SubscriptionState.UNSUBSCRIBED, SubscriptionState.SUBSCRIBED,
        actor, Source.CLI, datetime(2026, 3, 1, 14, 0, tzinfo=plus_two), NOW,
        justification=Justification(ResubscribeReason.CONTACT_REQUEST, "asked by phone"),
    )
    document = converter.unstructure(event)
    assert document["channel"] == "sms"
    assert document["occurred_at"] == "2026-03-01T14:00:00+02:00"
    assert document["recorded_at"] == "2026-03-01T12:30:00+00:00"
    assert document["actor"] == {
        "kind": "admin", "id": "alice", "account": ACCOUNT, "roles": ["owner", "support"],
    }
    assert document["justification"] == {"reason": "contact_request", "note": "asked by phone"}
    assert document["previous_state"] == "unsubscribed"
    contact = Contact(ACCOUNT, "ana", phone="+1 415 555 0100", handles={"telegram": "42"})
    assert converter.unstructure(contact)["handles"] == {"telegram": "42"}


def test_structure_validates_like_the_model() -> None:
    """A document with a naive datetime or a bad channel is refused naming the field."""
    converter = make_converter()
    event = ConsentEvent(
        1, ACCOUNT, "ana", SMS, SubscriptionState.NEVER_SUBSCRIBED, SubscriptionState.SUBSCRIBED,
        Actor.admin(ACCOUNT, "alice"), Source.CLI, NOW, NOW,
        evidence=Evidence("web_form", "Yes, text me", "v1"),
    )
    document = converter.unstructure(event)
    with pytest.raises(cattrs.BaseValidationError):
        converter.structure({**document, "occurred_at": "2026-03-01T12:00:00"}, ConsentEvent)
    with pytest.raises(ValidationError, match=r"channel: 'SMS!' is not a valid channel key"):
        event_from_json(converter, json.dumps({**document, "channel": "SMS!"}))
    with pytest.raises(ValidationError, match="naive datetime"):
        event_from_json(converter, json.dumps({**document, "recorded_at": "2026-03-01T12:00"}))
    with pytest.raises(ValidationError, match="is not JSON"):
        event_from_json(converter, "{not json")


def test_converters_are_independent() -> None:
    """A hook registered on one converter does not leak into another (no global converter)."""
    first = make_converter()
    first.register_unstructure_hook(Channel, lambda ch: ch.key.upper())
    assert first.unstructure(SMS) == "SMS"
    assert make_converter().unstructure(SMS) == "sms"


@given(events())
def test_csv_rows_have_every_column_as_text(event: ConsentEvent) -> None:
    """A CSV row has exactly the documented columns, as strings, and survives the csv module."""
    converter = make_converter()
    row = event_to_csv_row(converter, event)
    assert tuple(row) == EVENT_CSV_FIELDS
    assert all(isinstance(value, str) for value in row.values())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EVENT_CSV_FIELDS)
    writer.writeheader()
    writer.writerow(row)
    (read_back,) = csv.DictReader(io.StringIO(buffer.getvalue()))
    assert read_back == row
    assert row["channel"] == event.channel.key
    assert row["occurred_at"] == event.occurred_at.isoformat()
    assert row["transition"] == ("" if event.transition is None else event.transition.value)
