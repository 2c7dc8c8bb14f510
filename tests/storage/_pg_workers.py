"""Worker bodies of the PostgreSQL concurrency tests, importable by spawned processes.

Each worker opens its own :class:`PostgresStore` on the shared schema and runs several threads
against it; a process returns what its threads did as plain data (picklable).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import attrs

from consentkit.channels import SMS, WHATSAPP, Channel
from consentkit.errors import ConflictError, ConsentError
from consentkit.model import (
    Actor,
    Evidence,
    Justification,
    ResubscribeReason,
    Source,
)
from consentkit.service import ChangeResult, ConsentService
from consentkit.storage.postgres import PostgresStore

__all__ = [
    "ACCOUNT",
    "CHANNELS",
    "Outcome",
    "contact_id",
    "run_process",
]

ACCOUNT = "acme"
CHANNELS: tuple[Channel, ...] = (SMS, WHATSAPP)
ADMIN = Actor.admin(ACCOUNT, "alice")
IMPORTER = Actor.system(ACCOUNT, "importer")
EVIDENCE = Evidence("web_form", "Yes, text me about my orders.", "v2")
REQUESTED = Justification(ResubscribeReason.CONTACT_REQUEST, "asked again on the phone")


def contact_id(number: int) -> str:
    """The id of contact *number* of the concurrency tests."""
    return f"k{number:05d}"


@attrs.define
class Outcome:
    """What the threads of one process did.

    Attributes:
        changed: the sum of ``changed_count`` over every successful call.
        calls: successful calls.
        conflicts: calls that raised ConflictError (a deadlock or a lost race).
        errors: unexpected errors, as ``repr`` strings.
    """

    changed: int = 0
    calls: int = 0
    conflicts: int = 0
    errors: list[str] = attrs.Factory(list)

    def merge(self, other: Outcome) -> None:
        """Add *other*'s counts to this one."""
        self.changed += other.changed
        self.calls += other.calls
        self.conflicts += other.conflicts
        self.errors.extend(other.errors)


def _call(outcome: Outcome, action: Callable[[], ChangeResult]) -> None:
    try:
        result = action()
    except ConflictError as error:
        outcome.conflicts += 1
        outcome.errors.append(repr(error))
    except ConsentError as error:
        outcome.errors.append(repr(error))
    else:
        outcome.changed += result.changed_count
        outcome.calls += 1


def _mixed_round(
    service: ConsentService, rng: random.Random, contacts: int
) -> Callable[[], ChangeResult]:
    """One random request of the mixed scenario: any actor, any direction, overlapping pairs."""
    ids = [contact_id(n) for n in rng.sample(range(contacts), rng.randint(1, 12))]
    channels = rng.sample(CHANNELS, rng.randint(1, len(CHANNELS)))
    kind = rng.randrange(5)
    if kind == 0:
        return lambda: service.unsubscribe(ADMIN, ids, channels, reason="complaint")
    if kind == 1:
        return lambda: service.resubscribe(
            ADMIN, ids, channels, justification=REQUESTED, partial=True
        )
    if kind == 2:
        return lambda: service.opt_in(
            IMPORTER, ids, channels, evidence=EVIDENCE, source=Source.IMPORT, partial=True
        )
    me = ids[0]
    if kind == 3:
        return lambda: service.unsubscribe(
            Actor.contact(ACCOUNT, me), me, channels, source=Source.UNSUBSCRIBE_LINK
        )
    return lambda: service.set_subscribed(
        Actor.contact(ACCOUNT, me), me, channels[0], True, source=Source.INBOUND_KEYWORD
    )


def _bulk_round(
    service: ConsentService, rng: random.Random, contacts: int
) -> Callable[[], ChangeResult]:
    """One bulk request over a large random slice, in random order."""
    ids = [contact_id(n) for n in rng.sample(range(contacts), rng.randint(contacts // 3, contacts))]
    kind = rng.randrange(3)
    if kind == 0:
        return lambda: service.unsubscribe(ADMIN, ids, [SMS], details=False)
    if kind == 1:
        return lambda: service.resubscribe(
            ADMIN, ids, [SMS], justification=REQUESTED, partial=True, details=False
        )
    return lambda: service.opt_in(
        IMPORTER, ids, [SMS], evidence=EVIDENCE, source=Source.IMPORT, partial=True, details=False
    )


def _opt_in_round(
    service: ConsentService, rng: random.Random, contacts: int
) -> Callable[[], ChangeResult]:
    """Everybody opts the same never-subscribed contacts in at once, in random orders."""
    ids = [contact_id(n) for n in range(contacts)]
    rng.shuffle(ids)
    return lambda: service.opt_in(IMPORTER, ids, list(CHANNELS), evidence=EVIDENCE)


SCENARIOS: dict[str, Callable[[ConsentService, random.Random, int], Callable[[], ChangeResult]]] = {
    "mixed": _mixed_round,
    "bulk": _bulk_round,
    "opt_in": _opt_in_round,
}


def run_process(
    dsn: str,
    schema: str,
    scenario: str,
    seed: int,
    *,
    threads: int,
    rounds: int,
    contacts: int,
    chunk_size: int = 5000,
) -> Outcome:
    """Run *threads* threads of *rounds* requests each on a store of its own; what they did."""
    store = PostgresStore(dsn, schema=schema)
    service = ConsentService(store, chunk_size=chunk_size)
    make = SCENARIOS[scenario]
    start = threading.Barrier(threads)
    outcomes = [Outcome() for _ in range(threads)]

    def work(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        outcome = outcomes[index]
        try:
            start.wait(30)
            for _ in range(rounds):
                _call(outcome, make(service, rng, contacts))
        except BaseException as error:  # reported: a thread must not die silently
            outcome.errors.append(repr(error))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    store.close()
    total = Outcome()
    for outcome in outcomes:
        total.merge(outcome)
    return total
