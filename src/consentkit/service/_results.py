"""The results a service call returns, and paging."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Generic, NamedTuple, TypeVar

import attrs

from consentkit.channels import (
    Channel,
)
from consentkit.errors import (
    ConsentError,
    ValidationError,
)
from consentkit.model import (
    SubscriptionState,
)
from consentkit.review import (
    ReviewItem,
)

T = TypeVar("T")

_MAX_LIMIT = 10_000
_CURSOR_PREFIX = "ck1:"


class PairRef(NamedTuple):
    """One (contact, channel) pair (a named tuple: bulk results hold one per changed pair).

    Attributes:
        contact_id: the contact.
        channel: the channel.
    """

    contact_id: str
    channel: Channel


@attrs.frozen
class SkippedPair:
    """A pair a bulk opt-in or import left alone on purpose (e.g. the contact had unsubscribed).

    Attributes:
        contact_id: the contact.
        channel: the channel.
        reason: why it was skipped.
    """

    contact_id: str
    channel: Channel
    reason: str


@attrs.frozen
class RefusedPair:
    """A pair the policy refused, in a call made with ``partial=True``.

    Attributes:
        contact_id: the contact.
        channel: the channel.
        error: the error that would have been raised.
    """

    contact_id: str
    channel: Channel
    error: ConsentError = attrs.field(eq=False)


class KnownVersions(dict[PairRef, int]):
    """Versions the change engine read from the store (PairRef keys, versions >= 1): a result
    built with them does not check each again (that cost more than listing the pairs)."""

    __slots__ = ()


def _versions(
    value: Mapping[PairRef, int] | Iterable[tuple[PairRef, int]],
) -> Mapping[PairRef, int]:
    if type(value) is KnownVersions:
        return MappingProxyType(value)
    pairs = value.items() if isinstance(value, Mapping) else value
    try:
        frozen = {PairRef(*pair): version for pair, version in pairs}
    except (TypeError, ValueError):
        raise ValidationError(
            "versions", "expected a mapping {PairRef(contact_id, channel): version}"
        ) from None
    for version in frozen.values():
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValidationError("versions", f"versions are integers >= 1, got {version!r}")
    return MappingProxyType(frozen)


@attrs.frozen
class ChangeResult:
    """What a consent change did.

    Attributes:
        batch_id: the id shared by every event the call wrote.
        new_state: the state the call moved pairs to.
        changed: the pairs that changed (one event each), in the order asked.  Empty unless
            :attr:`detailed`.
        unchanged: the pairs that were already in ``new_state`` (no event).
        skipped: pairs left alone on purpose, with the reason.
        refused: pairs refused by the policy (only with ``partial=True``; otherwise the call
            raises and changes nothing).
        changed_count: number of changed pairs (also when ``details=False``).
        unchanged_count: number of unchanged pairs.
        versions: the version of every pair of ``changed`` and ``unchanged`` once the call
            committed (a read-only mapping: the changed pairs first, then the unchanged ones, in
            the order of those lists).  Pass
            ``versions[PairRef(contact_id, channel)]`` as the next ``expected_version`` of the
            inbox toggle: no second read is needed.  Empty when ``details=False``.
        detailed: whether the pair lists were kept.  The bulk calls (``opt_in``,
            ``unsubscribe``, ``resubscribe``) keep them only when asked (``details=True``), so a
            call over a million pairs costs no Python object per pair; then ``changed``,
            ``unchanged`` and ``versions`` are empty and the counts tell what happened.  The inbox
            toggle always keeps them.  ``skipped`` and ``refused`` are always listed.
    """

    batch_id: str
    new_state: SubscriptionState
    changed: tuple[PairRef, ...] = ()
    unchanged: tuple[PairRef, ...] = ()
    skipped: tuple[SkippedPair, ...] = ()
    refused: tuple[RefusedPair, ...] = ()
    changed_count: int = 0
    unchanged_count: int = 0
    # Excluded from the hash (a mapping is not hashable); equality compares it.
    versions: Mapping[PairRef, int] = attrs.field(
        factory=dict, converter=_versions, hash=False
    )
    detailed: bool = True


@attrs.frozen
class ContactsResult:
    """What :meth:`ConsentService.upsert_contacts` did.

    Attributes:
        created: contacts that were new.
        updated: contacts that existed and were replaced.
        suppressed: pairs unsubscribed because an address that had said STOP joined their
            contact.
        unreachable: subscribed pairs whose contact no longer has an address on their channel
            (its consent stays as it is, but nothing can be sent there).
    """

    created: int
    updated: int
    suppressed: tuple[PairRef, ...] = ()
    unreachable: tuple[PairRef, ...] = ()


@attrs.frozen
class ReviewResolution:
    """What deciding a review item did.

    Attributes:
        item: the item, with its decision.
        changed: the pairs the decision unsubscribed (for an opt-out).
    """

    item: ReviewItem
    changed: tuple[PairRef, ...] = ()


@attrs.frozen
class Page(Generic[T]):
    """One page of a listing.

    Attributes:
        items: the items of this page.
        next_cursor: pass it as ``cursor`` to get the next page; None on the last page.
    """

    items: tuple[T, ...]
    next_cursor: str | None


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{key}".encode()).decode("ascii")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        decoded = base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError, AttributeError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX):
        raise ValidationError(
            "cursor", "is not a cursor returned by this listing; start again without one"
        )
    return text[len(_CURSOR_PREFIX) :]


def review_cursor(item: ReviewItem) -> str:
    return f"{item.received_at.isoformat()}|{item.id}"


def decode_review_cursor(key: str | None) -> tuple[datetime, str] | None:
    if key is None:
        return None
    when, _, item_id = key.partition("|")
    try:
        return datetime.fromisoformat(when), item_id
    except ValueError:
        raise ValidationError(
            "cursor", "is not a cursor returned by this listing; start again without one"
        ) from None


def page_of(items: Sequence[T], limit: int, key: Callable[[T], str]) -> Page[T]:
    """A page of the first *limit* of *items*, fetched as ``limit + 1`` to learn whether more
    follow; the cursor is the sort *key* of the page's last item."""
    page = tuple(items[:limit])
    return Page(page, encode_cursor(key(page[-1])) if len(items) > limit else None)


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {_MAX_LIMIT}, got {limit!r}")
    return limit
