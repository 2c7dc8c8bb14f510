"""Calls that meet on an address race on one SQLite file, round after round, through the public
service API only: an inbound STOP and the registration of its number, two STOPs from a number
two contacts share, and a contact moved to a number that said STOP while an admin opts it in.
Whatever the order the threads get the write lock in, no opt-out is lost, none is recorded twice,
and the audit log replays to the state after every round.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consentkit import (
    MMS,
    SMS,
    Actor,
    ConsentService,
    Contact,
    Evidence,
    Source,
    SubscriptionState,
)
from consentkit.inbound import InboundMessage
from consentkit.storage.sqlite import SQLiteStore
from consentkit.testing import check_replay
from tests.storage._races import race

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
IMPORTER = Actor.system(ACCOUNT, "importer")
EVIDENCE = Evidence("web_form", "Yes, text me about my orders.", "v2")
ROUNDS = 100
JOIN_TIMEOUT = 60.0  # seconds a racing call may take before the round is reported as hung


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A store on a fresh file, closed after the test."""
    with SQLiteStore(tmp_path / "race.db") as made:
        yield made


@pytest.fixture
def service(store: SQLiteStore) -> ConsentService:
    """A service on the store, on the system clock."""
    return ConsentService(store)


def _race(first: Callable[[], object], second: Callable[[], object]) -> list[str]:
    """Race *first* and *second* (see tests/storage/_races.py)."""
    return race(first, second, join_timeout=JOIN_TIMEOUT)


def _phone(round_: int, offset: int = 0) -> str:
    """A phone number no earlier round used."""
    return f"+1415{offset + round_:07d}"


def _stop(service: ConsentService, phone: str, message_id: str) -> Callable[[], object]:
    """A STOP texted from *phone* a moment ago, handled when called."""
    received = datetime.now(UTC) - timedelta(seconds=1)
    message = InboundMessage(ACCOUNT, SMS, phone, "STOP", message_id, received)
    return functools.partial(service.handle_inbound, message)


def test_stop_racing_the_registration_of_its_number_is_never_lost(
    store: SQLiteStore, service: ConsentService
) -> None:
    """A STOP from a number and the registration of a new contact with that number race, 100
    rounds: an import afterwards never makes the contact sendable on SMS."""
    errors: list[str] = []
    sendable: list[int] = []
    for round_ in range(ROUNDS):
        phone, cid = _phone(round_), f"new{round_:04d}"
        register = functools.partial(
            service.upsert_contacts, ADMIN, [Contact(ACCOUNT, cid, phone=phone)]
        )
        errors += _race(_stop(service, phone, f"SM-{round_}"), register)
        service.opt_in(
            IMPORTER, [cid], [SMS], evidence=EVIDENCE, source=Source.IMPORT, partial=True
        )
        if service.can_send(ADMIN, cid, SMS):
            sendable.append(round_)
        check_replay(store, ACCOUNT)
    assert errors == []
    assert sendable == [], f"{len(sendable)} of {ROUNDS} rounds subscribed a STOPped number"


def test_two_stops_from_a_shared_number_unsubscribe_each_contact_once(
    store: SQLiteStore, service: ConsentService
) -> None:
    """Two STOPs (two message ids) from a number two subscribed contacts share race, 100 rounds:
    both contacts end unsubscribed, with exactly one unsubscribe event per pair, and the audit
    log replays to the state."""
    errors: list[str] = []
    wrong: list[str] = []
    for round_ in range(ROUNDS):
        phone = _phone(round_)
        ids = [f"a{round_:04d}", f"b{round_:04d}"]
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid, phone=phone) for cid in ids])
        service.opt_in(ADMIN, ids, [SMS], evidence=EVIDENCE)
        errors += _race(
            _stop(service, phone, f"SM-{round_}-1"), _stop(service, phone, f"SM-{round_}-2")
        )
        for cid in ids:
            if service.state(ADMIN, cid, SMS) is not SubscriptionState.UNSUBSCRIBED:
                wrong.append(f"round {round_}: {cid} is not unsubscribed on SMS")
            unsubscribes = Counter(
                e.channel
                for e in store.events(ACCOUNT, contact_id=cid)
                if e.new_state is SubscriptionState.UNSUBSCRIBED
            )
            if SMS not in unsubscribes or set(unsubscribes.values()) != {1}:
                wrong.append(f"round {round_}: {cid} unsubscribe events {dict(unsubscribes)}")
        check_replay(store, ACCOUNT)
    assert errors == []
    assert wrong == []


def test_moving_a_contact_to_a_stopped_number_racing_an_admin_opt_in(
    store: SQLiteStore, service: ConsentService
) -> None:
    """A subscribed contact moved to a number with an active suppression races an admin's opt-in
    of that contact, 100 rounds: the contact always ends unsendable on the number's channels."""
    errors: list[str] = []
    sendable: list[str] = []
    for round_ in range(ROUNDS):
        cid, stopped = f"m{round_:04d}", _phone(round_, offset=500_000)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid, phone=_phone(round_))])
        service.opt_in(ADMIN, [cid], [SMS], evidence=EVIDENCE)
        _stop(service, stopped, f"SM-{round_}")()  # a stranger's number says STOP
        move = functools.partial(
            service.upsert_contacts, ADMIN, [Contact(ACCOUNT, cid, phone=stopped)]
        )
        opt_in = functools.partial(
            service.opt_in, ADMIN, [cid], [SMS, MMS], evidence=EVIDENCE, partial=True
        )
        errors += _race(move, opt_in)
        for ch in (SMS, MMS):
            if service.can_send(ADMIN, cid, ch):
                sendable.append(f"round {round_}: {cid} on {ch.key}")
        check_replay(store, ACCOUNT)
    assert errors == []
    assert sendable == []
