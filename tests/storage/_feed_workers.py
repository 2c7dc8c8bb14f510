"""Writer processes of the change feed tests, importable by spawned processes.

A store is named by a picklable spec, ``("sqlite", path)`` or ``("postgres", dsn, schema)``, so
each process (and each restart of the consumer) opens a store object of its own on the same data.
"""

from __future__ import annotations

import random

from consentkit.channels import EMAIL, SMS, WHATSAPP
from consentkit.errors import ConflictError
from consentkit.model import Actor, Contact, Evidence, Justification, ResubscribeReason
from consentkit.service import ConsentService
from consentkit.storage.base import Store

__all__ = ["ACCOUNT", "ADMIN", "CONTACTS", "StoreSpec", "open_spec", "register", "write_randomly"]

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
CONTACTS = tuple(f"w{i:02d}" for i in range(12))
EVIDENCE = Evidence("web_form", "Yes, text me about my orders.", "v1")
ASKED = Justification(ResubscribeReason.CONTACT_REQUEST, "asked again on the phone")
CHANNELS = (SMS, WHATSAPP, EMAIL)

StoreSpec = tuple[str, ...]


def open_spec(spec: StoreSpec) -> Store:
    """A new store object on the data *spec* names."""
    if spec[0] == "sqlite":
        from consentkit.storage.sqlite import SQLiteStore

        return SQLiteStore(spec[1])
    from consentkit.storage.postgres import PostgresStore

    return PostgresStore(spec[1], schema=spec[2])


def register(service: ConsentService) -> None:
    """The writers' contacts, in ACCOUNT and in another account."""
    for account in (ACCOUNT, "globex"):
        service.upsert_contacts(
            Actor.admin(account, "alice"),
            [
                Contact(account, cid, phone=f"+1415557{i:04d}", email=f"{cid}@example.com")
                for i, cid in enumerate(CONTACTS)
            ],
        )


def write_randomly(spec: StoreSpec, worker: int, rounds: int) -> int:
    """Process body: *rounds* random consent changes (mostly in ACCOUNT); returns the number
    of calls refused with a ConflictError (a lost race, nothing written)."""
    store = open_spec(spec)
    try:
        service = ConsentService(store)
        rng = random.Random(worker)
        conflicts = 0
        for _ in range(rounds):
            account = ACCOUNT if rng.random() < 0.9 else "globex"
            admin = Actor.admin(account, "alice")
            targets = rng.sample(CONTACTS, rng.randint(1, 4))
            channels = rng.sample(CHANNELS, rng.randint(1, 2))
            try:
                kind = rng.randrange(3)
                if kind == 0:
                    service.opt_in(admin, targets, channels, evidence=EVIDENCE, partial=True)
                elif kind == 1:
                    service.unsubscribe(admin, targets, channels, partial=True)
                else:
                    service.resubscribe(
                        admin, targets, channels, justification=ASKED, partial=True
                    )
            except ConflictError:
                conflicts += 1
        return conflicts
    finally:
        store.close()
