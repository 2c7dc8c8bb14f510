"""The error hierarchy: stable codes, suggested HTTP statuses, documents, enum inputs."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import consentkit
from consentkit import (
    SMS,
    Actor,
    ConflictError,
    ConsentError,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    Justification,
    JustificationError,
    NotAuthorizedError,
    ResubscribeReason,
    Source,
    StorageError,
    SubscriptionState,
    UnknownContactError,
    ValidationError,
)
from consentkit.channels import UnknownChannelError
from consentkit.errors import ChannelConsentRequiredError, PayloadError, SignatureError
from consentkit.topics import UnknownTopicError
from consentkit.unsubscribe import (
    ExpiredTokenError,
    InvalidTokenError,
    MalformedTokenError,
    TokenMismatchError,
    TokenSignatureError,
    UnknownTokenKeyError,
)

EXPECTED = {
    ConsentError: ("consent_error", 400),
    ValidationError: ("invalid_input", 422),
    PayloadError: ("invalid_payload", 400),
    NotAuthorizedError: ("not_authorized", 403),
    SignatureError: ("invalid_signature", 403),
    JustificationError: ("justification_required", 422),
    UnknownContactError: ("unknown_contact", 404),
    ConflictError: ("conflict", 409),
    StorageError: ("storage_unavailable", 503),
    UnknownChannelError: ("unknown_channel", 422),
    UnknownTopicError: ("unknown_topic", 422),
    ChannelConsentRequiredError: ("channel_consent_required", 409),
    InvalidTokenError: ("invalid_token", 400),
    MalformedTokenError: ("malformed_token", 400),
    UnknownTokenKeyError: ("unknown_token_key", 400),
    TokenSignatureError: ("invalid_token_signature", 400),
    ExpiredTokenError: ("expired_token", 410),
    TokenMismatchError: ("token_mismatch", 400),
}
ADMIN = Actor.admin("acme", "alice")


def _every_error_class() -> set[type[ConsentError]]:
    for module in pkgutil.walk_packages(consentkit.__path__, "consentkit."):
        if module.name.startswith("consentkit.storage.postgres"):
            continue  # needs the optional psycopg; its errors are the ones above
        importlib.import_module(module.name)
    found: set[type[ConsentError]] = set()
    todo: list[type[ConsentError]] = [ConsentError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize(("cls", "expected"), list(EXPECTED.items()), ids=str)
def test_each_error_has_its_documented_code_and_status(
    cls: type[ConsentError], expected: tuple[str, int]
) -> None:
    assert (cls.code, cls.http_status) == expected


def test_every_error_class_has_a_code_of_its_own() -> None:
    classes = _every_error_class()
    assert set(EXPECTED) <= classes
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), sorted(codes)
    assert all(200 <= cls.http_status < 600 for cls in classes)


def test_a_missing_justification_is_not_an_authorization_error() -> None:
    service = ConsentService(InMemoryStore())
    service.upsert_contacts(ADMIN, [Contact("acme", "c1", phone="+14155550100")])
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=Evidence("web_form", "Text me", "v1"))
    service.unsubscribe(ADMIN, ["c1"], [SMS])
    with pytest.raises(JustificationError) as refused:
        service.resubscribe(ADMIN, ["c1"], [SMS], justification=None)
    assert not isinstance(refused.value, NotAuthorizedError)
    assert refused.value.http_status == 422
    assert refused.value.to_document() == {
        "code": "justification_required",
        "message": str(refused.value),
    }
    # The reason the message names is accepted as written there, in any case.
    named = Justification("CONTACT_REQUEST", "asked at the counter")
    assert named.reason is ResubscribeReason.CONTACT_REQUEST
    assert service.resubscribe(ADMIN, ["c1"], [SMS], justification=named).changed_count == 1


def test_documents_name_the_field_and_the_contacts() -> None:
    service = ConsentService(InMemoryStore())
    with pytest.raises(UnknownContactError) as unknown:
        service.unsubscribe(ADMIN, ["ghost"], [SMS])
    assert unknown.value.to_document()["contact_ids"] == ["ghost"]
    assert unknown.value.http_status == 404
    with pytest.raises(ValidationError) as invalid:
        service.unsubscribe(ADMIN, ["ghost"], ["smss"])
    document = invalid.value.to_document()
    assert (document["code"], document["field"]) == ("unknown_channel", "channels")


def test_enum_inputs_take_their_names_and_values_in_any_case() -> None:
    service = ConsentService(InMemoryStore())
    service.upsert_contacts(ADMIN, [Contact("acme", "c1", phone="+14155550100")])
    service.opt_in(ADMIN, ["c1"], [SMS], evidence=Evidence("web_form", "Text me", "v1"))
    service.unsubscribe(ADMIN, ["c1"], [SMS], source="API")
    assert service.history(ADMIN, "c1")[-1].source is Source.API
    assert service.state(ADMIN, "c1", SMS) is SubscriptionState.UNSUBSCRIBED
    with pytest.raises(ValidationError, match="source"):
        service.unsubscribe(ADMIN, ["c1"], [SMS], source="apii")
