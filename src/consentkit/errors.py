"""The one error hierarchy of consentkit.

Every error raised on purpose by consentkit derives from :class:`ConsentError`, so a host app can
catch them all in one place.  Messages say what was wrong and what to do about it.  Driver errors
(``sqlite3``, ``psycopg``) never escape a store: they are translated into :class:`StorageError` or
:class:`ConflictError`.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "ConsentError",
    "JustificationError",
    "NotAuthorizedError",
    "StorageError",
    "UnknownContactError",
    "ValidationError",
]


class ConsentError(Exception):
    """Root of every error consentkit raises on purpose."""


class ValidationError(ConsentError, ValueError):
    """Input is malformed: an id, a channel key, an address, a datetime, a limit...

    Attributes:
        field: the name of the offending field or argument.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class NotAuthorizedError(ConsentError):
    """The actor may not make this change (or act in this account)."""


class JustificationError(NotAuthorizedError):
    """A resubscription lacks a justification, or carries one that is not acceptable here."""


class UnknownContactError(ConsentError, LookupError):
    """A contact id does not exist in the account.

    Attributes:
        contact_ids: the ids that were not found (at most the first 20 are named in the message).
    """

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


class ConflictError(ConsentError):
    """A concurrent writer changed the same record first (optimistic concurrency), or a unique key
    (a contact id, an inbound message id) already exists.  Re-read and retry."""


class StorageError(ConsentError):
    """The store failed for a reason that is not the caller's input (disk, connection, schema)."""
