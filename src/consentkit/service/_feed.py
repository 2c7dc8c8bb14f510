"""The change feed: the account's events after a cursor, a page at a time, for host systems
(an ESP, a CRM, a warehouse) that follow consent changes.

A cursor is an opaque string that names the account and the event it follows: its sequence and
a fingerprint of the event (when it was recorded, its channel, state and batch).  Each page is
read after the cursor's event, which is read again and compared, so a cursor of another
database, of a database restored from an older backup, or edited by hand is refused instead of
silently skipping or repeating events.  The feed relies on one store property, checked by the
conformance suite: an event becomes visible only with a sequence greater than every event
visible before it (sequences increase in commit order).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import attrs

from consentkit.errors import ValidationError
from consentkit.model import Actor, ConsentEvent
from consentkit.service._core import ServiceCore
from consentkit.service._results import check_limit

__all__ = ["ChangesPage", "FeedMixin"]

_PREFIX = "ckf1"
_VERSION = 1
_MAX_CURSOR_LENGTH = 1024
_MAX_SEQUENCE = 2**63
_CHECK_SIZE = 8
_FINGERPRINT_SIZE = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_RESTART = "start again from a cursor this feed returned (or from the beginning, without one)"


@attrs.frozen
class ChangesPage:
    """One page of the change feed (:meth:`FeedMixin.changes`).

    Attributes:
        events: the account's events after the cursor, in sequence order (the order in which
            they committed), at most ``limit``.
        next_cursor: resumes strictly after the last event of the page; the cursor given (or,
            without one, the cursor of the beginning of the feed) when the page is empty, so a
            poller can always store it.  Opaque: store it as given.
        has_more: more events had committed when the page was read: ask again at once instead
            of waiting for the next poll.
    """

    events: tuple[ConsentEvent, ...]
    next_cursor: str
    has_more: bool = False


@attrs.frozen
class _Position:
    """Where a cursor points: after the event *sequence* (None: the beginning)."""

    account: str
    sequence: int | None = None
    fingerprint: str | None = None


class FeedMixin(ServiceCore):
    """The change feed."""

    def changes(
        self, actor: Actor, *, after: str | None = None, limit: int = 1000
    ) -> ChangesPage:
        """The account's events after the cursor *after* (from the beginning without one), at
        most *limit* of them, in sequence order, with the cursor of what follows.

        Store ``next_cursor`` once the page is handled and pass it back as *after*: every
        event is delivered once, in order, including the events of transactions that were
        still running when an earlier page was read (docs/feed.md says how to make the
        delivery exactly-once).  A cursor survives restarts of the process and of the store.

        Raises:
            NotAuthorizedError: the actor is a contact (the feed is the whole account's), or the
                policy refuses the actor reads.
            ValidationError: naming ``after``: not a cursor of this feed, a cursor of another
                account, or one whose event this account's log does not hold (another database,
                or one restored from an older backup); naming ``limit``: not an int from 1 to
                10,000.
        """
        account = self._account_scope(actor, "read the account's change feed, only their history")
        limit = check_limit(limit)
        position = _decode(after, account)
        if position.sequence is None:
            events = list(self.store.events(account, limit=limit + 1))
        else:
            # The cursor's own event is read again: it must be the one the cursor names.
            read = list(
                self.store.events(account, after=position.sequence - 1, limit=limit + 2)
            )
            if not read or read[0].sequence != position.sequence or not hmac.compare_digest(
                _fingerprint(read[0]), position.fingerprint or ""
            ):
                raise ValidationError(
                    "after",
                    f"the cursor names event {position.sequence} of account {account!r}, which "
                    "this store does not hold as the cursor recorded it: it comes from another "
                    "database, or this one was restored from an older backup; resynchronise "
                    "the consumer, then " + _RESTART,
                )
            events = read[1:]
        page = tuple(events[:limit])
        if not page:
            return ChangesPage((), after if after is not None else _encode(position), False)
        last = page[-1]
        cursor = _encode(_Position(account, last.sequence, _fingerprint(last)))
        return ChangesPage(page, cursor, len(events) > limit)


def _fingerprint(event: ConsentEvent) -> str:
    """What a cursor records of its event, to recognise it when the cursor comes back."""
    recorded = (event.recorded_at - _EPOCH) // _MICROSECOND
    text = "|".join(
        (
            str(event.sequence),
            str(recorded),
            event.channel.key,
            event.new_state.value,
            event.batch_id or "",
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=_FINGERPRINT_SIZE).hexdigest()


def _check(payload: bytes) -> str:
    digest = hashlib.blake2b(payload, digest_size=_CHECK_SIZE, person=b"consentkit-feed")
    return _b64(digest.digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    data = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    if _b64(data) != text:  # unused low bits set: another spelling of the same bytes
        raise ValueError("not the canonical encoding")
    return data


def _encode(position: _Position) -> str:
    payload = json.dumps(
        [_VERSION, position.account, position.sequence, position.fingerprint],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return f"{_PREFIX}.{_b64(payload)}.{_check(payload)}"


def _decode(cursor: object, account: str) -> _Position:
    """The position *cursor* names, checked against *account*."""
    if cursor is None:
        return _Position(account)
    if not isinstance(cursor, str):
        raise ValidationError(
            "after", f"expected a cursor string from ChangesPage.next_cursor or None, got "
            f"{type(cursor).__name__}"
        )
    position = _parse(cursor)
    if position is None:
        raise ValidationError(
            "after", f"is not a cursor of the change feed (malformed or altered); {_RESTART}"
        )
    if position.account != account:
        raise ValidationError(
            "after",
            f"is a cursor of account {position.account!r}, not of {account!r}: each account's "
            "feed has its own cursor",
        )
    return position


def _parse(cursor: str) -> _Position | None:
    """The position of a well-formed, unaltered cursor; None for anything else."""
    if len(cursor) > _MAX_CURSOR_LENGTH or not cursor.isascii():
        return None
    prefix, _, rest = cursor.partition(".")
    body, _, check = rest.partition(".")
    if prefix != _PREFIX or not body or not check:
        return None
    try:
        payload = _unb64(body)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(_check(payload), check):
        return None
    try:
        fields = json.loads(payload.decode("utf-8"))
    except (UnicodeError, ValueError):
        return None
    return _position_of(fields)


def _position_of(fields: object) -> _Position | None:
    if not isinstance(fields, list) or len(fields) != 4:
        return None
    version, account, sequence, fingerprint = fields
    if version != _VERSION or isinstance(version, bool) or not isinstance(account, str):
        return None
    if sequence is None and fingerprint is None:
        return _Position(account)
    if (
        isinstance(sequence, bool)
        or not isinstance(sequence, int)
        or not 0 <= sequence < _MAX_SEQUENCE
        or not isinstance(fingerprint, str)
        or len(fingerprint) != 2 * _FINGERPRINT_SIZE
    ):
        return None
    return _Position(account, sequence, fingerprint)
