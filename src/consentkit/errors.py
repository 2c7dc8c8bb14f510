"""The one error hierarchy of consentkit.

Every error raised on purpose by consentkit derives from :class:`ConsentError`, so a host app can
catch them all in one place.  Messages say what was wrong and what to do about it.  Driver errors
(``sqlite3``, ``psycopg``) never escape a store: they are translated into :class:`StorageError` or
:class:`ConflictError`.

Every class has a stable machine-readable :attr:`~ConsentError.code` and a suggested
:attr:`~ConsentError.http_status`, so a host maps errors to responses in one line::

    except ConsentError as error:
        return JSONResponse(error.to_document(), status_code=error.http_status)

===========================  ============================  ======
class                        ``code``                      status
===========================  ============================  ======
ValidationError              ``invalid_input``             422
UnknownChannelError          ``unknown_channel``           422
UnknownTopicError            ``unknown_topic``             422
PayloadError                 ``invalid_payload``           400
NotAuthorizedError           ``not_authorized``            403
SignatureError               ``invalid_signature``         403
JustificationError           ``justification_required``    422
UnknownContactError          ``unknown_contact``           404
ChannelConsentRequiredError  ``channel_consent_required``  409
ConflictError                ``conflict``                  409
StorageError                 ``storage_unavailable``       503
===========================  ============================  ======

The one-click unsubscribe token errors of :mod:`consentkit.unsubscribe` have codes of their own:
``InvalidTokenError`` (a ValidationError, ``invalid_token``, 400) and its subclasses
``MalformedTokenError`` (``malformed_token``), ``UnknownTokenKeyError`` (``unknown_token_key``),
``TokenSignatureError`` (``invalid_token_signature``) and ``TokenMismatchError``
(``token_mismatch``), all 400, and ``ExpiredTokenError`` (``expired_token``, 410).

Codes never change once released; a new subclass gets a code of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ChannelConsentRequiredError",
    "ConflictError",
    "ConsentError",
    "JustificationError",
    "NotAuthorizedError",
    "PayloadError",
    "SignatureError",
    "StorageError",
    "UnknownContactError",
    "ValidationError",
]


class ConsentError(Exception):
    """Root of every error consentkit raises on purpose.

    Attributes:
        code: a stable, machine-readable name of the kind of error (``"not_authorized"``).
        http_status: the HTTP status a web host would answer with.
    """

    code: ClassVar[str] = "consent_error"
    http_status: ClassVar[int] = 400

    def to_document(self) -> dict[str, Any]:
        """A JSON-compatible description: ``{"code": ..., "message": ...}``, plus ``field`` for
        a :class:`ValidationError` and ``contact_ids`` for an :class:`UnknownContactError`."""
        return {"code": self.code, "message": str(self)}


class ValidationError(ConsentError, ValueError):
    """Input is malformed: an id, a channel key, an address, a datetime, a limit...

    Attributes:
        field: the name of the offending field or argument.
    """

    code: ClassVar[str] = "invalid_input"
    http_status: ClassVar[int] = 422

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")

    def to_document(self) -> dict[str, Any]:
        return {**super().to_document(), "field": self.field}


class PayloadError(ValidationError):
    """A provider's webhook payload is malformed or not what the endpoint handles (a missing
    field, a body that is not JSON, an event of another kind).  Nothing was changed."""

    code: ClassVar[str] = "invalid_payload"
    http_status: ClassVar[int] = 400


class NotAuthorizedError(ConsentError):
    """The actor may not make this change (or act in this account)."""

    code: ClassVar[str] = "not_authorized"
    http_status: ClassVar[int] = 403


class SignatureError(NotAuthorizedError):
    """A webhook's signature is missing, forged, for another URL or key, or too old.  Nothing was
    changed; do not retry with the same request."""

    code: ClassVar[str] = "invalid_signature"
    http_status: ClassVar[int] = 403


class JustificationError(ConsentError):
    """A resubscription lacks a justification, or carries one that is not acceptable here.

    Not an authorization error: the actor may resubscribe, but must say why (or give the reason
    that fits), so a host answers 422 and shows the form again.
    """

    code: ClassVar[str] = "justification_required"
    http_status: ClassVar[int] = 422


class UnknownContactError(ConsentError, LookupError):
    """A contact id does not exist in the account.

    Attributes:
        contact_ids: the ids that were not found (at most the first 20 are named in the message).
    """

    code: ClassVar[str] = "unknown_contact"
    http_status: ClassVar[int] = 404

    def __init__(self, account: str, contact_ids: list[str]) -> None:
        self.account = account
        self.contact_ids = tuple(contact_ids)
        shown = ", ".join(repr(c) for c in contact_ids[:20])
        more = f" and {len(contact_ids) - 20} more" if len(contact_ids) > 20 else ""
        super().__init__(
            f"no contact {shown}{more} in account {account!r}: "
            "register the contact first (ConsentService.upsert_contacts) "
            "or check the id and the account"
        )

    def to_document(self) -> dict[str, Any]:
        return {**super().to_document(), "contact_ids": list(self.contact_ids[:20])}


class ChannelConsentRequiredError(ConsentError):
    """A topic opt-in or resubscription of a contact who never subscribed to the topic's channel:
    consent to the channel comes first, with its own evidence (docs/topics.md), so the host does
    it in two explicit steps.

    Attributes:
        contact_ids: the contacts concerned.
        required_channel: the key of the channel they must first be subscribed to.
    """

    code: ClassVar[str] = "channel_consent_required"
    http_status: ClassVar[int] = 409

    def __init__(self, channel: str, topic_channel: str, contact_ids: list[str]) -> None:
        self.required_channel = channel
        self.contact_ids = tuple(contact_ids)
        super().__init__(
            f"never subscribed to {channel}: opt the contact in to {channel} (with its "
            f"evidence) before {topic_channel}"
        )

    def to_document(self) -> dict[str, Any]:
        return {
            **super().to_document(),
            "required_channel": self.required_channel,
            "contact_ids": list(self.contact_ids[:20]),
        }


class ConflictError(ConsentError):
    """A concurrent writer changed the same record first (optimistic concurrency), or a unique key
    (a contact id, an inbound message id) already exists.  Re-read and retry."""

    code: ClassVar[str] = "conflict"
    http_status: ClassVar[int] = 409


class StorageError(ConsentError):
    """The store failed for a reason that is not the caller's input (disk, connection, schema)."""

    code: ClassVar[str] = "storage_unavailable"
    http_status: ClassVar[int] = 503
