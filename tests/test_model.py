"""The model's value objects validate and normalise their input."""

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from consentkit.channels import EMAIL, SMS, WHATSAPP, channel
from consentkit.errors import ValidationError
from consentkit.model import (
    Actor,
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
    SubscriptionState,
    Transition,
    address_key,
    ensure_aware,
    normalize_phone,
    transition_of,
    validate_id,
    validate_ids,
)
from consentkit.testing.strategies import contact_ids, phone_numbers


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+1 (415) 555-0100", "+14155550100"),
        ("0049 30 1234567", "+49301234567"),
        ("+44.20.7946.0958", "+442079460958"),
    ],
)
def test_phone_numbers_normalise_to_e164(raw: str, normalised: str) -> None:
    """Decorated numbers and a 00 prefix become E.164."""
    assert normalize_phone(raw) == normalised


@pytest.mark.parametrize("bad", ["4155550100", "+0123456789", "+1 415 CALL NOW", "+123", ""])
def test_malformed_phone_numbers_are_refused(bad: str) -> None:
    """Numbers without a country code, with letters or too short raise ValidationError."""
    with pytest.raises(ValidationError, match=r"phone: .*E\.164"):
        Contact("acme", "c1", phone=bad)


@given(phone_numbers())
def test_normalising_a_phone_twice_changes_nothing(number: str) -> None:
    """Normalisation is idempotent."""
    once = normalize_phone(number)
    assert normalize_phone(once) == once


def test_email_domain_is_lower_cased_and_bad_email_refused() -> None:
    """The domain of an email is lower-cased; a malformed email names the email field."""
    assert Contact("acme", "c1", email=" Ann.Lee@Example.COM ").email == "Ann.Lee@example.com"
    with pytest.raises(ValidationError, match="email"):
        Contact("acme", "c1", email="not-an-email")


@pytest.mark.parametrize(
    "bad",
    ["", " padded", "x" * 129, "tab\there", "nul\x00", "zero\u200bwidth", "bidi\u202e"],
)
def test_bad_ids_are_refused_with_the_field_name(bad: str) -> None:
    """Empty, oversized, padded or control-character ids raise ValidationError naming the field."""
    with pytest.raises(ValidationError, match=r"^contact_id: "):
        Contact("acme", bad)


@given(contact_ids())
def test_generated_ids_are_valid(value: str) -> None:
    """Every id the public strategy generates passes validation unchanged."""
    assert validate_id("contact_id", value) == value


# Ids near every rule's edge: spaces inside, at either end and doubled, empty, 128 and 129
# characters, whitespace other than the space, control and invisible characters, non-strings.
_EDGY_IDS = st.one_of(
    contact_ids(),
    st.text(alphabet=st.sampled_from(["a", " ", "\t", "\u00a0", "\u200b", "\x00", "\u3000"])),
    st.sampled_from(["", " ", "a  b", "a ", " a", "x" * 128, "x" * 129, "\u2028"]),
    st.integers(),
    st.none(),
    st.binary(max_size=3),
)


def _verdict(check: object, *args: object) -> object:
    try:
        return ("ok", check(*args))  # type: ignore[operator]
    except ValidationError as error:
        return ("refused", str(error))


@given(st.lists(_EDGY_IDS, max_size=6))
@example(["a ", "b"])
@example(["a", " b"])
@example(["a", "", "b"])
@example(["a", "b "])
@example([" a", "b"])
@example(["a  b", "c"])
@example(["a", "x" * 129])
@example(["a", "b\tc"])
@example(["a", 7])
def test_validate_ids_agrees_with_validate_id(values: list[object]) -> None:
    """The bulk check accepts exactly the lists whose every id passes validate_id, and refuses
    the others with the first invalid id's own error."""
    one_by_one: object = ("ok", values)
    for value in values:
        verdict = _verdict(validate_id, "contact_ids", value)
        if verdict[0] == "refused":  # type: ignore[index]
            one_by_one = verdict
            break
    assert _verdict(validate_ids, "contact_ids", values) == one_by_one


def test_naive_datetimes_are_refused() -> None:
    """A naive datetime raises ValidationError that says how to fix it."""
    with pytest.raises(ValidationError, match="naive datetime"):
        ensure_aware("occurred_at", datetime(2026, 1, 1))
    assert ensure_aware("x", datetime(2026, 1, 1, tzinfo=UTC)).tzinfo is UTC


def test_addresses_per_channel_and_address_keys() -> None:
    """Phone channels share the phone number; handle channels have their own handles."""
    contact = Contact("acme", "c1", phone="+14155550100", handles={"telegram": "42"})
    assert contact.address_for(SMS) == contact.address_for(WHATSAPP) == "+14155550100"
    assert contact.address_for(EMAIL) is None
    assert contact.address_for(channel("telegram")) == "42"
    assert contact.address_keys() == {"phone:+14155550100", "handle:telegram:42"}
    assert address_key(WHATSAPP, "+14155550100") == "phone:+14155550100"
    with pytest.raises(ValidationError, match="handles"):
        Contact("acme", "c1", handles={"sms": "+14155550100"})


def test_justification_needs_a_known_reason_and_a_note() -> None:
    """A justification needs one of the two reasons and a non-empty note."""
    ok = Justification("contact_request", "  called support on 3 March  ")
    assert ok.reason is ResubscribeReason.CONTACT_REQUEST
    assert ok.note == "called support on 3 March"
    with pytest.raises(ValidationError, match=r"justification\.note"):
        Justification(ResubscribeReason.CONTACT_REQUEST, "   ")
    with pytest.raises(ValidationError, match=r"justification\.reason.*mistaken_unsubscribe"):
        Justification("because", "note")


def test_evidence_requires_method_wording_and_version() -> None:
    """Evidence without its wording or with a naive capture time is refused."""
    Evidence("web_form", "I agree", "v1", captured_at=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValidationError, match=r"evidence\.wording"):
        Evidence("web_form", "", "v1")
    with pytest.raises(ValidationError, match=r"evidence\.method"):
        Evidence("Web Form", "I agree", "v1")
    with pytest.raises(ValidationError, match=r"evidence\.captured_at"):
        Evidence("web_form", "I agree", "v1", captured_at=datetime(2026, 1, 1))


def test_actor_roles_and_account_are_validated() -> None:
    """Actors carry validated ids and role names."""
    actor = Actor.admin("acme", "alice")
    assert str(actor) == "admin:alice"
    with pytest.raises(ValidationError, match=r"actor\.account"):
        Actor.admin("", "alice")
    with pytest.raises(ValidationError, match=r"actor\.roles"):
        Actor(actor.kind, "alice", "acme", roles="owner")


@given(st.sampled_from(SubscriptionState), st.sampled_from(SubscriptionState))
def test_transitions_are_named_for_every_real_change(
    previous: SubscriptionState, new: SubscriptionState
) -> None:
    """Every change into subscribed or unsubscribed has a transition; no-ops have none."""
    transition = transition_of(previous, new)
    if previous is new or new is SubscriptionState.NEVER_SUBSCRIBED:
        assert transition is None
    elif new is SubscriptionState.UNSUBSCRIBED:
        assert transition is Transition.UNSUBSCRIBE
    else:
        expected = (
            Transition.OPT_IN
            if previous is SubscriptionState.NEVER_SUBSCRIBED
            else Transition.RESUBSCRIBE
        )
        assert transition is expected
