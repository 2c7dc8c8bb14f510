"""Child processes for the SQLite reliability tests (run as a script, not collected by pytest).

Usage::

    python _sqlite_worker.py churn DB WORKER OPS GO_FILE
    python _sqlite_worker.py bulk DB COUNT SIGNAL_AFTER
    python _sqlite_worker.py open DB NAME GO_FILE

``churn`` makes random consent calls and prints one JSON line: the changes it was told about and
the errors it met.  ``bulk`` unsubscribes contacts ``n0000000``... on SMS in one call, printing
``in-transaction`` once SIGNAL_AFTER ids have been handed to the service (the transaction is then
open and has written the first chunks) and ``done`` when the call returned.  ``open`` opens the
store, registers one contact and prints ``ok``.  The workers wait for GO_FILE to exist so they
start together.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from consentkit import (
    EMAIL,
    SMS,
    WHATSAPP,
    Actor,
    ConsentError,
    ConsentService,
    Contact,
    Evidence,
    Justification,
    JustificationError,
    ResubscribeReason,
    Source,
    ValidationError,
)
from consentkit.storage.sqlite import SQLiteStore

ACCOUNT = "acme"
ADMIN_IDS = ("alice", "bea", "carl", "dina")
CHURN_CONTACTS = 24
EVIDENCE = Evidence("web_form", "Yes, send me texts. Reply STOP to stop.", "v7")


def churn_contact(number: int) -> str:
    """The id of churn contact *number*."""
    return f"c{number:02d}"


def bulk_contact(number: int) -> str:
    """The id of bulk contact *number*."""
    return f"n{number:07d}"


def wait_for(go_file: Path) -> None:
    """Block until *go_file* exists (at most 30 s), so that sibling workers start together."""
    deadline = time.monotonic() + 30
    while not go_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the go file never appeared")
        time.sleep(0.005)


def expected_kind(error: ConsentError) -> str | None:
    """The name of a policy refusal the churn provokes on purpose, or None if unexpected."""
    if isinstance(error, JustificationError):
        return "justification"  # MISTAKEN_UNSUBSCRIBE of a contact's own opt-out
    if isinstance(error, ValidationError) and error.field == "contact_ids":
        return "never-subscribed"  # resubscribing a pair that was never subscribed
    return None


def churn(db: Path, worker: int, operations: int, go_file: Path) -> None:
    """Random unsubscribes, justified resubscribes and opt-ins with evidence on overlapping
    contacts; prints what the service reported."""
    rng = random.Random(worker)
    store = SQLiteStore(db)
    service = ConsentService(store)
    admin = Actor.admin(ACCOUNT, ADMIN_IDS[worker % len(ADMIN_IDS)])
    # Each worker's window of 12 contacts overlaps its neighbours' by 8.
    window = [churn_contact((worker * 4 + k) % CHURN_CONTACTS) for k in range(12)]
    changed = 0
    expected: Counter[str] = Counter()
    unexpected: list[str] = []
    wait_for(go_file)
    for _ in range(operations):
        ids = rng.sample(window, rng.randint(1, 4))
        channels = rng.sample([SMS, EMAIL, WHATSAPP], rng.randint(1, 2))
        roll = rng.random()
        try:
            if roll < 0.3:
                result = service.unsubscribe(admin, ids, channels, reason="complaint")
            elif roll < 0.45:
                result = service.unsubscribe(
                    Actor.contact(ACCOUNT, ids[0]), ids[0], channels, source=Source.INBOX
                )
            elif roll < 0.75:
                result = service.opt_in(admin, ids, channels, evidence=EVIDENCE)
            else:
                reason = (
                    ResubscribeReason.CONTACT_REQUEST
                    if rng.random() < 0.8
                    else ResubscribeReason.MISTAKEN_UNSUBSCRIBE
                )
                result = service.resubscribe(
                    admin,
                    ids,
                    channels,
                    justification=Justification(reason, f"worker {worker} was asked"),
                    partial=rng.random() < 0.5,
                )
            changed += result.changed_count
        except ConsentError as error:
            kind = expected_kind(error)
            if kind is None:
                unexpected.append(f"{type(error).__name__}: {error}")
            else:
                expected[kind] += 1
    store.close()
    print(json.dumps({"changed": changed, "expected": expected, "unexpected": unexpected}))


def bulk(db: Path, count: int, signal_after: int) -> None:
    """Unsubscribe *count* contacts in one call, announcing when the transaction is under way."""
    store = SQLiteStore(db)
    service = ConsentService(store)

    def ids() -> Iterator[str]:
        for number in range(count):
            if number == signal_after:
                # The service pulls ids chunk by chunk inside its one transaction: reaching
                # this id means earlier chunks are written but nothing is committed.
                print("in-transaction", flush=True)
            yield bulk_contact(number)
        if signal_after >= count:
            print("in-transaction", flush=True)

    result = service.unsubscribe(Actor.admin(ACCOUNT, "alice"), ids(), SMS, details=False)
    print(f"done {result.changed_count}", flush=True)
    store.close()


def open_and_write(db: Path, name: str, go_file: Path) -> None:
    """Open (and so create or migrate) the store and register one contact."""
    wait_for(go_file)
    with SQLiteStore(db) as store:
        ConsentService(store).upsert_contacts(
            Actor.admin(ACCOUNT, "alice"), [Contact(ACCOUNT, name)]
        )
    print("ok", flush=True)


def main(argv: list[str]) -> None:
    """Dispatch on the first argument."""
    command, db, *rest = argv
    if command == "churn":
        churn(Path(db), int(rest[0]), int(rest[1]), Path(rest[2]))
    elif command == "bulk":
        bulk(Path(db), int(rest[0]), int(rest[1]))
    elif command == "open":
        open_and_write(Path(db), rest[0], Path(rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
