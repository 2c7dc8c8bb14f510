"""Calls that meet on an address race on one SQLite file, round after round, through the public
service API only: an inbound STOP and the registration of its number, two STOPs from a number
two contacts share, and a contact moved to a number that said STOP while an admin opts it in.
Whatever the order the threads get the write lock in, no opt-out is lost, none is recorded twice,
and the audit log replays to the state after every round.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consentkit import (
    ConsentService,
)
from consentkit.storage.sqlite import SQLiteStore
from tests.storage._races import (
    move_to_a_stopped_number,
    stop_racing_registration,
    two_stops_on_a_shared_number,
)

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


def test_stop_racing_the_registration_of_its_number_is_never_lost(
    store: SQLiteStore, service: ConsentService
) -> None:
    """A STOP from a number and the registration of a new contact with that number race, 100
    rounds: an import afterwards never makes the contact sendable on SMS."""
    assert stop_racing_registration(service, store, ROUNDS, join_timeout=JOIN_TIMEOUT) == []


def test_two_stops_from_a_shared_number_unsubscribe_each_contact_once(
    store: SQLiteStore, service: ConsentService
) -> None:
    """Two STOPs (two message ids) from a number two subscribed contacts share race, 100 rounds:
    both contacts end unsubscribed, with exactly one unsubscribe event per pair, and the audit
    log replays to the state."""
    assert two_stops_on_a_shared_number(service, store, ROUNDS, join_timeout=JOIN_TIMEOUT) == []


def test_moving_a_contact_to_a_stopped_number_racing_an_admin_opt_in(
    store: SQLiteStore, service: ConsentService
) -> None:
    """A subscribed contact moved to a number with an active suppression races an admin's opt-in
    of that contact, 100 rounds: the contact always ends unsendable on the number's channels."""
    assert move_to_a_stopped_number(service, store, ROUNDS, join_timeout=JOIN_TIMEOUT) == []
