"""Checks of the service's arguments shared by its parts."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator

from consentkit.errors import (
    ValidationError,
)
from consentkit.model import (
    Actor,
    validate_ids,
)


def iterate_arg(field: str, value: object, expected: str) -> Iterator[object]:
    if isinstance(value, (str, bytes)) or value is None:
        raise ValidationError(field, f"expected {expected}, got {type(value).__name__}")
    try:
        return iter(value)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        raise ValidationError(field, f"expected {expected}, got {type(value).__name__}") from None


def contact_ids_of(contact_ids: object) -> Iterator[str]:
    """The contact ids of a call (one id, or any iterable of them, consumed lazily)."""
    if isinstance(contact_ids, str):
        return iter([contact_ids])
    return iterate_arg(  # type: ignore[return-value]
        "contact_ids", contact_ids, "a contact id or an iterable of contact ids"
    )


def chunks(contact_ids: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(contact_ids)
    while chunk := list(itertools.islice(iterator, size)):
        # Duplicates within a chunk are dropped here; one in a later chunk finds the pair already
        # changed by this transaction and counts as unchanged, so no id set grows with the input.
        yield list(dict.fromkeys(validate_ids("contact_ids", chunk)))


_CHECKED_CHUNK = 4096


def checked_ids(contact_ids: Iterable[object]) -> Iterator[str]:
    """The contact ids of a call, each checked (a chunk at a time, in order) as it is consumed.

    Built of C iterators (no Python frame per id): the chunks, their check, their chain.
    """
    iterator = iter(contact_ids)
    pieces = iter(lambda: list(itertools.islice(iterator, _CHECKED_CHUNK)), [])
    checked = map(functools.partial(validate_ids, "contact_ids"), pieces)
    return itertools.chain.from_iterable(checked)


def check_flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, f"expected True or False, got {value!r}")
    return value


def check_actor(actor: object) -> Actor:
    if not isinstance(actor, Actor):
        raise ValidationError(
            "actor", f"expected an Actor (e.g. Actor.admin(account, user_id)), got {actor!r}"
        )
    return actor
