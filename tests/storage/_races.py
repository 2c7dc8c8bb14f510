"""Racing calls against each other, and the races that meet on an address, for the concurrency
tests of every SQL store."""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from consentkit import (
    MMS,
    SMS,
    Actor,
    ConsentService,
    Contact,
    Evidence,
    Source,
    Store,
    SubscriptionState,
)
from consentkit.inbound import InboundMessage
from consentkit.testing import check_replay


def race(
    first: Callable[[], object], second: Callable[[], object], *, join_timeout: float = 60.0
) -> list[str]:
    """Run *first* and *second* in two threads released together by a barrier; their errors."""
    start = threading.Barrier(2)
    errors: list[str] = []

    def run(action: Callable[[], object]) -> None:
        try:
            start.wait(30)
            action()
        except BaseException as error:  # reported by the caller: a thread must not die silently
            errors.append(repr(error))

    threads = [threading.Thread(target=run, args=(action,)) for action in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_timeout)
        if thread.is_alive():
            errors.append(f"a racing call did not finish within {join_timeout:g} s")
    return errors


# ---------------------------------------------------------------------- calls meeting on an address
# The races both SQL stores' concurrency tests run, through the public service API only.  Each
# returns what went wrong (thread errors and broken rules), so a test asserts it is empty.

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
IMPORTER = Actor.system(ACCOUNT, "importer")
EVIDENCE = Evidence("web_form", "Yes, text me about my orders.", "v2")


def phone(round_: int, offset: int = 0) -> str:
    """A phone number no earlier round used."""
    return f"+1415{offset + round_:07d}"


def stop(service: ConsentService, sender: str, message_id: str) -> Callable[[], object]:
    """A STOP texted from *sender* a moment ago, handled when called."""
    received = datetime.now(UTC) - timedelta(seconds=1)
    message = InboundMessage(ACCOUNT, SMS, sender, "STOP", message_id, received)
    return functools.partial(service.handle_inbound, message)


def stop_racing_registration(
    service: ConsentService, store: Store, rounds: int, *, join_timeout: float = 60.0
) -> list[str]:
    """A STOP from a number races the registration of a new contact with it; an import then
    opts the contact in.  Wrong: the contact is sendable afterwards."""
    problems: list[str] = []
    for round_ in range(rounds):
        number, cid = phone(round_), f"new{round_:04d}"
        register = functools.partial(
            service.upsert_contacts, ADMIN, [Contact(ACCOUNT, cid, phone=number)]
        )
        problems += race(stop(service, number, f"SM-{round_}"), register, join_timeout=join_timeout)
        service.opt_in(
            IMPORTER, [cid], [SMS], evidence=EVIDENCE, source=Source.IMPORT, partial=True
        )
        if service.can_send(ADMIN, cid, SMS):
            problems.append(f"round {round_}: the STOPped number {number} is sendable")
        check_replay(store, ACCOUNT)
    return problems


def two_stops_on_a_shared_number(
    service: ConsentService, store: Store, rounds: int, *, join_timeout: float = 60.0
) -> list[str]:
    """Two STOPs (two message ids) race from a number two subscribed contacts share.  Wrong:
    a contact still sendable, or not exactly one unsubscribe event per pair."""
    problems: list[str] = []
    for round_ in range(rounds):
        number = phone(round_)
        ids = [f"a{round_:04d}", f"b{round_:04d}"]
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid, phone=number) for cid in ids])
        service.opt_in(ADMIN, ids, [SMS], evidence=EVIDENCE)
        problems += race(
            stop(service, number, f"SM-{round_}-1"),
            stop(service, number, f"SM-{round_}-2"),
            join_timeout=join_timeout,
        )
        for cid in ids:
            if service.state(ADMIN, cid, SMS) is not SubscriptionState.UNSUBSCRIBED:
                problems.append(f"round {round_}: {cid} is not unsubscribed on SMS")
            unsubscribes = Counter(
                e.channel
                for e in store.events(ACCOUNT, contact_id=cid)
                if e.new_state is SubscriptionState.UNSUBSCRIBED
            )
            if SMS not in unsubscribes or set(unsubscribes.values()) != {1}:
                problems.append(f"round {round_}: {cid} unsubscribe events {dict(unsubscribes)}")
        check_replay(store, ACCOUNT)
    return problems


def move_to_a_stopped_number(
    service: ConsentService,
    store: Store,
    rounds: int,
    *,
    admin_changes: Sequence[str] = ("opt_in",),
    join_timeout: float = 60.0,
) -> list[str]:
    """A subscribed contact moved to a number that texted STOP races an admin's change of it
    (``"opt_in"`` or ``"unsubscribe"``, taking turns); an import then opts it in.  Wrong: the
    contact is sendable on the number's channels afterwards."""
    problems: list[str] = []
    for round_ in range(rounds):
        cid, stopped = f"m{round_:04d}", phone(round_, offset=500_000)
        service.upsert_contacts(ADMIN, [Contact(ACCOUNT, cid, phone=phone(round_))])
        service.opt_in(ADMIN, [cid], [SMS], evidence=EVIDENCE)
        stop(service, stopped, f"SM-{round_}")()  # a stranger's number says STOP
        move = functools.partial(
            service.upsert_contacts, ADMIN, [Contact(ACCOUNT, cid, phone=stopped)]
        )
        admin: Callable[[], object]
        if admin_changes[round_ % len(admin_changes)] == "opt_in":
            admin = functools.partial(
                service.opt_in, ADMIN, [cid], [SMS, MMS], evidence=EVIDENCE, partial=True
            )
        else:
            admin = functools.partial(service.unsubscribe, ADMIN, [cid], [SMS], reason="complaint")
        problems += race(move, admin, join_timeout=join_timeout)
        service.opt_in(
            IMPORTER, [cid], [SMS, MMS], evidence=EVIDENCE, source=Source.IMPORT, partial=True
        )
        for ch in (SMS, MMS):
            if service.can_send(ADMIN, cid, ch):
                problems.append(f"round {round_}: {cid} is sendable on {ch.key}")
        check_replay(store, ACCOUNT)
    return problems
