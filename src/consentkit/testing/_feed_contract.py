"""The change feed's guarantees (docs/feed.md), mixed into
:class:`~consentkit.testing.conformance.StoreConformance`: every store runs them.

The feed reads ``Store.events(account, after=..., limit=...)`` and nothing else, so what it
delivers rests on one store property: an event becomes visible only with a sequence greater than
every event visible before it (sequences increase in commit order, also when a transaction that
began first commits last).  These tests hold every store to it through the public API: a consumer
that stores its cursor with its effects sees each event exactly once, in order, however often it
restarts and however many writers run.
"""

from __future__ import annotations

import base64
import itertools
import random
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentkit.channels import EMAIL, SMS, WHATSAPP
from consentkit.errors import ConflictError, NotAuthorizedError, ValidationError
from consentkit.model import (
    Actor,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
)
from consentkit.service import ChangesPage, ConsentService
from consentkit.testing.clock import FakeClock

if TYPE_CHECKING:
    from consentkit.storage.base import Store

__all__ = ["FeedContract"]

_ACCOUNT = "acme"
_OTHER = "globex"
_ADMIN = Actor.admin(_ACCOUNT, "alice")
_OTHER_ADMIN = Actor.admin(_OTHER, "olga")
_EVIDENCE = Evidence("web_form", "Yes, text me about my orders.", "v1")
_ASKED = Justification(ResubscribeReason.CONTACT_REQUEST, "asked again at the counter")
_CHANNELS = (SMS, WHATSAPP, EMAIL)
_CONTACTS = tuple(f"f{i}" for i in range(8))
_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[
        # One contract, many stores: every subclass runs the same test on its own store.
        HealthCheck.differing_executors,
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)
_hypothesis_accounts = itertools.count(1)
_MAX_PAGES = 2_000
"""More pages than any test writes events: a feed that never runs dry fails instead of hanging."""
_DEADLINE = 120.0
"""Seconds the concurrent consumer may take to catch up once the writers are done."""


def _register(service: ConsentService, account: str = _ACCOUNT) -> None:
    admin = Actor.admin(account, "alice")
    service.upsert_contacts(
        admin,
        [
            Contact(account, cid, phone=f"+1415556{i:04d}", email=f"{cid}@example.com")
            for i, cid in enumerate(_CONTACTS)
        ],
    )


def _write(service: ConsentService, admin: Actor, rng: random.Random) -> None:
    """One random consent change by *admin* (some change nothing)."""
    targets = rng.sample(_CONTACTS, rng.randint(1, 3))
    channels = rng.sample(_CHANNELS, rng.randint(1, 2))
    kind = rng.randrange(3)
    if kind == 0:
        service.opt_in(admin, targets, channels, evidence=_EVIDENCE, partial=True)
    elif kind == 1:
        service.unsubscribe(admin, targets, channels, partial=True)
    else:
        service.resubscribe(admin, targets, channels, justification=_ASKED, partial=True)


def _drain(service: ConsentService, actor: Actor, after: str | None, limit: int) -> ChangesPage:
    """Every event after *after*, as one page (read *limit* at a time)."""
    events: list[ConsentEvent] = []
    for _ in range(_MAX_PAGES):
        page = service.changes(actor, after=after, limit=limit)
        events.extend(page.events)
        if not page.events:
            return ChangesPage(tuple(events), page.next_cursor)
        after = page.next_cursor
    raise AssertionError(f"the feed never ran dry: {len(events)} events in {_MAX_PAGES} pages")


class FeedContract:
    """The change feed: order, cursors, restarts and concurrent writers."""

    def make_store(self, directory: Path) -> Store:
        """Return a new, empty store (see StoreConformance)."""
        raise NotImplementedError("subclasses say how to build their store")

    def _feed_service(self, store: Store, clock: FakeClock) -> ConsentService:
        service = ConsentService(store, clock=clock)
        _register(service)
        _register(service, _OTHER)
        return service

    @pytest.mark.parametrize("limit", [1, 2, 3, 1000])
    def test_the_feed_pages_through_the_audit_log_in_order(
        self, store: Store, clock: FakeClock, limit: int
    ) -> None:
        """Pages of any size add up to the account's audit log, in order and once each; a page
        says whether more follow; an empty page keeps the cursor it was given, so a poller that
        started on an empty account still gets every later event."""
        service = self._feed_service(store, clock)
        start = service.changes(_ADMIN)
        assert start.events == ()
        assert not start.has_more
        assert service.changes(_ADMIN, after=start.next_cursor).next_cursor == start.next_cursor
        rng = random.Random(limit)
        for _ in range(6):
            _write(service, _ADMIN, rng)
        _write(service, _OTHER_ADMIN, rng)
        log = list(service.audit_log(_ADMIN))
        assert len(log) >= 6
        delivered: list[ConsentEvent] = []
        cursor = start.next_cursor
        for _ in range(_MAX_PAGES):
            page = service.changes(_ADMIN, after=cursor, limit=limit)
            assert len(page.events) <= limit
            assert page.has_more is (len(delivered) + len(page.events) < len(log))
            if not page.events:
                assert page.next_cursor == cursor
                break
            delivered.extend(page.events)
            cursor = page.next_cursor
        assert delivered == log
        assert [e.sequence for e in delivered] == sorted({e.sequence for e in delivered})
        assert {e.account for e in delivered} == {_ACCOUNT}
        assert list(_drain(service, _ADMIN, None, limit).events) == log

    def test_a_cursor_resumes_on_another_service_object(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A cursor kept by one service object resumes strictly after its event on another one
        over the same store, also once more events were written."""
        first = self._feed_service(store, clock)
        first.opt_in(_ADMIN, _CONTACTS[:3], [SMS], evidence=_EVIDENCE)
        page = first.changes(_ADMIN, limit=2)
        assert len(page.events) == 2
        assert page.has_more
        first.unsubscribe(_ADMIN, _CONTACTS[:2], [SMS])
        second = ConsentService(store, clock=clock)
        rest = _drain(second, _ADMIN, page.next_cursor, 1000)
        assert [e.sequence for e in rest.events] == [
            e.sequence for e in list(first.audit_log(_ADMIN))[2:]
        ]
        assert len(rest.events) == 3

    def test_a_cursor_of_another_account_is_refused(
        self, store: Store, clock: FakeClock
    ) -> None:
        """The cursor names its account: another account's admin cannot use it, not even the
        cursor of the beginning, and each feed holds its own account's events only."""
        service = self._feed_service(store, clock)
        service.opt_in(_ADMIN, ["f1"], [SMS], evidence=_EVIDENCE)
        service.opt_in(_OTHER_ADMIN, ["f1", "f2"], [SMS], evidence=_EVIDENCE)
        for cursor in (service.changes(_ADMIN).next_cursor, service.changes(_ADMIN, limit=1)
                       .next_cursor):
            with pytest.raises(ValidationError) as refused:
                service.changes(_OTHER_ADMIN, after=cursor)
            assert refused.value.field == "after"
            assert repr(_ACCOUNT) in str(refused.value)
        other = _drain(service, _OTHER_ADMIN, None, 1)
        assert [(e.account, e.contact_id) for e in other.events] == [
            (_OTHER, "f1"),
            (_OTHER, "f2"),
        ]

    def test_a_cursor_the_log_does_not_hold_is_refused(
        self, store: Store, clock: FakeClock, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """A well-formed cursor of this account whose event is not in the store (the feed of
        another database, or a database restored from an older backup) is refused, not read
        as a position that would skip the events written since."""
        elsewhere = ConsentService(self.make_store(tmp_path_factory.mktemp("other")), clock=clock)
        try:
            _register(elsewhere)
            elsewhere.opt_in(_ADMIN, _CONTACTS, [SMS, EMAIL], evidence=_EVIDENCE)
            foreign = elsewhere.changes(_ADMIN, limit=3).next_cursor
        finally:
            elsewhere.store.close()
        service = self._feed_service(store, clock)
        with pytest.raises(ValidationError) as refused:
            service.changes(_ADMIN, after=foreign)
        assert refused.value.field == "after"
        service.opt_in(_ADMIN, _CONTACTS, [SMS, EMAIL], evidence=_EVIDENCE)
        # Now an event of that sequence may exist here, but it is not the one the cursor names.
        with pytest.raises(ValidationError) as refused:
            service.changes(_ADMIN, after=foreign)
        assert refused.value.field == "after"

    @_SETTINGS
    @given(
        garbage=st.one_of(
            st.text(max_size=80),
            st.binary(max_size=60).map(lambda data: "ckf1." + data.hex()),
            st.binary(max_size=60).map(
                lambda data: "ckf1." + base64.urlsafe_b64encode(data).decode() + ".AAAAAAAAAAA"
            ),
        )
    )
    def test_garbage_cursors_are_refused(
        self, store: Store, clock: FakeClock, garbage: str
    ) -> None:
        """Any text that is not a cursor the feed returned is a ValidationError naming
        ``after``: never a TypeError, a KeyError or a page read from a wrong position."""
        service = ConsentService(store, clock=clock)
        with pytest.raises(ValidationError) as refused:
            service.changes(_ADMIN, after=garbage)
        assert refused.value.field == "after"

    def test_a_cursor_with_any_character_changed_is_refused(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A valid cursor with any one character replaced by any other (of the cursor
        alphabet, so the result still looks like one), cut short, or extended is refused
        naming ``after``: one spelling per position, nothing read from a wrong position."""
        service = self._feed_service(store, clock)
        service.opt_in(_ADMIN, _CONTACTS, [SMS], evidence=_EVIDENCE)
        valid = service.changes(_ADMIN, limit=2).next_cursor
        alphabet = string.ascii_letters + string.digits + "-_.="
        altered = {
            valid[:at] + char + valid[at + 1 :] for at in range(len(valid)) for char in alphabet
        }
        altered |= {valid[:cut] for cut in range(len(valid))}
        altered |= {valid + "A", valid + "=", " " + valid, valid.upper(), valid.lower()}
        altered.discard(valid)
        for cursor in sorted(altered):
            with pytest.raises(ValidationError) as refused:
                service.changes(_ADMIN, after=cursor)
            assert refused.value.field == "after", cursor
        assert len(service.changes(_ADMIN, after=valid).events) == len(_CONTACTS) - 2

    def test_arguments_are_checked_and_the_policy_applies(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A limit that is not an int from 1 to 10,000 (a bool included) and a cursor that is not
        a string are ValidationErrors naming the argument; members and system actors may read
        the feed, a contact may not."""
        service = self._feed_service(store, clock)
        service.opt_in(_ADMIN, ["f1"], [SMS], evidence=_EVIDENCE)
        for limit in (0, -1, 10_001, True, False, 1.5, "10", None):
            with pytest.raises(ValidationError) as refused:
                service.changes(_ADMIN, limit=limit)  # type: ignore[arg-type]
            assert refused.value.field == "limit"
        assert len(service.changes(_ADMIN, limit=10_000).events) == 1
        for cursor in (5, b"ckf1", ["ckf1"], 1.0, True):
            with pytest.raises(ValidationError) as refused:
                service.changes(_ADMIN, after=cursor)  # type: ignore[arg-type]
            assert refused.value.field == "after"
        with pytest.raises(ValidationError) as refused:
            service.changes("admin:alice")  # type: ignore[arg-type]
        assert refused.value.field == "actor"
        for reader in (Actor.member(_ACCOUNT, "bob"), Actor.system(_ACCOUNT, "sync")):
            assert len(service.changes(reader).events) == 1
        with pytest.raises(NotAuthorizedError):
            service.changes(Actor.contact(_ACCOUNT, "f1"))

    def test_an_event_that_commits_late_is_not_skipped(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A write that began first and commits after another write (concurrent transactions,
        where the store allows them) is delivered after it: a consumer that read the other
        write's event in the meantime still gets it, once."""
        service = self._feed_service(store, clock)
        slow = ConsentService(store, clock=clock, chunk_size=1)
        start = service.changes(_ADMIN).next_cursor
        first_written, reader_done = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def ids() -> Iterator[str]:
            yield "f0"
            first_written.set()  # f0's chunk is written when the next id is asked for
            reader_done.wait(2)
            yield "f1"

        def run(action: object) -> None:
            try:
                assert callable(action)
                action()
            except BaseException as error:  # reported below: a thread must not die silently
                errors.append(error)

        writer = threading.Thread(
            target=run, args=(lambda: slow.opt_in(_ADMIN, ids(), [SMS], evidence=_EVIDENCE),)
        )
        writer.start()
        assert first_written.wait(30)
        quick = threading.Thread(
            target=run, args=(lambda: service.opt_in(_ADMIN, ["f2"], [SMS], evidence=_EVIDENCE),)
        )
        quick.start()
        quick.join(30)  # stores with one writer at a time finish it after the slow one
        first = service.changes(_ADMIN, after=start)
        reader_done.set()
        writer.join(30)
        quick.join(30)
        assert errors == []
        second = service.changes(_ADMIN, after=first.next_cursor)
        delivered = [*first.events, *second.events]
        assert delivered == list(service.audit_log(_ADMIN))
        assert sorted(e.contact_id for e in delivered) == ["f0", "f1", "f2"]

    @_SETTINGS
    @given(plan=st.lists(st.tuples(st.sampled_from("wrcx"), st.integers(1, 4)), max_size=40))
    def test_a_consumer_that_restarts_anywhere_sees_every_event_once(
        self, store: Store, clock: FakeClock, plan: list[tuple[str, int]]
    ) -> None:
        """Writes, page reads of any size, crashes before a page's effects were stored and
        restarts on a new service object, in any order: the effects stored with their cursor
        are the audit log, exactly once and in order."""
        account = f"h{next(_hypothesis_accounts)}"
        admin = Actor.admin(account, "alice")
        writer = ConsentService(store, clock=clock)
        _register(writer, account)
        rng = random.Random(len(plan))
        consumer = ConsentService(store, clock=clock)
        stored: tuple[list[ConsentEvent], str | None] = ([], None)
        for step, size in plan:
            if step == "w":
                _write(writer, admin, rng)
            elif step in "rc":
                page = consumer.changes(admin, after=stored[1], limit=size)
                if step == "r":  # handled: the effects and the cursor are stored together
                    stored = ([*stored[0], *page.events], page.next_cursor)
                # "c": the consumer crashed before storing anything of this page
            else:
                consumer = ConsentService(store, clock=clock)
        rest = _drain(ConsentService(store, clock=clock), admin, stored[1], 3)
        assert [*stored[0], *rest.events] == list(writer.audit_log(admin))

    def test_concurrent_writers_and_a_restarting_consumer_lose_nothing(
        self, store: Store, clock: FakeClock
    ) -> None:
        """Writer threads change consent while a consumer reads small pages, crashes at random
        points and restarts from its last stored cursor on a new service object: in the end it
        has seen every event of the account exactly once, in sequence order."""
        service = self._feed_service(store, clock)
        errors: list[BaseException] = []
        conflicts: list[ConflictError] = []
        done = threading.Event()

        def work(worker: int) -> None:
            rng = random.Random(worker)
            try:
                for _ in range(12):
                    try:
                        _write(service, _ADMIN, rng)
                    except ConflictError as conflict:  # a lost race: retryable, nothing written
                        conflicts.append(conflict)
            except BaseException as error:  # reported below: a thread must not die silently
                errors.append(error)

        writers = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in writers:
            thread.start()
        rng = random.Random(0)
        consumer = ConsentService(store, clock=clock)
        delivered: list[ConsentEvent] = []
        cursor: str | None = None
        pages = 0
        deadline = time.monotonic() + _DEADLINE
        while not done.is_set() and time.monotonic() < deadline:
            done_writing = not any(thread.is_alive() for thread in writers)
            page = consumer.changes(_ADMIN, after=cursor, limit=rng.randint(1, 4))
            pages += 1
            if not page.events:
                time.sleep(0.001)  # caught up: let the writers run
            if rng.random() < 0.2:
                consumer = ConsentService(store, clock=clock)  # crashed: the page is lost
                continue
            delivered.extend(page.events)
            cursor = page.next_cursor
            if done_writing and not page.events:
                done.set()
        for thread in writers:
            thread.join(60)
        assert errors == []
        assert done.is_set(), f"the feed never ran dry in {_DEADLINE} s ({pages} pages)"
        log = list(service.audit_log(_ADMIN))
        assert delivered == log
        assert len({e.sequence for e in delivered}) == len(delivered)
        assert pages > 1

