"""Erasure in the in-memory store (:meth:`ErasureTransaction.erase_contact` over its dicts), and
the snapshot that undoes it when the transaction rolls back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from consentkit.model import ActorKind, ConsentEvent, Justification
from consentkit.storage._batch import replaces
from consentkit.storage.base import Erasure, InboundRecord

if TYPE_CHECKING:
    from consentkit.review import ReviewItem

_TABLES = (
    "contacts",
    "subscriptions",
    "events",
    "inbound",
    "review",
    "suppressions",
    "sent",
    "pending",
    "erasures",
)


def snapshot(data: Any) -> dict[str, Any]:
    """Shallow copies of everything an erasure changes (the values are frozen)."""
    copies = {name: type(getattr(data, name))(getattr(data, name)) for name in _TABLES}
    copies["by_address"] = {key: set(ids) for key, ids in data.by_address.items()}
    copies["departures"] = {key: list(rows) for key, rows in data.departures.items()}
    return copies


def restore(data: Any, copies: dict[str, Any]) -> None:
    """Put back what :func:`snapshot` copied."""
    for name in _TABLES:
        table = getattr(data, name)
        table.clear()
        if isinstance(table, dict):
            table.update(copies[name])
        else:
            table.extend(copies[name])
    data.by_address.clear()
    data.by_address.update(copies["by_address"])
    data.departures.clear()
    data.departures.update(copies["departures"])


def _names_contact(record: InboundRecord, erasure: Erasure) -> bool:
    try:
        document = json.loads(record.result)
    except ValueError:
        return False
    if not isinstance(document, dict):
        return False
    sender = document.get("sender")
    return (
        record.sender_key in erasure.address_keys
        or (isinstance(sender, str) and sender.lower() in erasure.senders)
        or erasure.contact_id in (document.get("contact_ids") or ())
        or any(pair and pair[0] == erasure.contact_id for pair in document.get("changed") or ())
    )


def _reviews_contact(item: ReviewItem, erasure: Erasure) -> bool:
    return item.sender.lower() in erasure.senders or erasure.contact_id in item.contact_ids


def _erased_event(event: ConsentEvent, erasure: Erasure) -> ConsentEvent:
    pseudonym = erasure.record.pseudonym
    actor = event.actor
    if actor.kind is ActorKind.CONTACT and actor.id == erasure.contact_id:
        actor = attrs.evolve(actor, id=pseudonym)
    justification = event.justification
    if justification is not None:
        justification = Justification(justification.reason, erasure.marker)
    evidence = event.evidence
    if evidence is not None:
        evidence = attrs.evolve(evidence, location=None, reference=None)
    return attrs.evolve(
        event,
        contact_id=pseudonym,
        actor=actor,
        justification=justification,
        evidence=evidence,
    )


def erase(data: Any, erasure: Erasure) -> None:
    """Apply *erasure* to one account's data (the caller took a :func:`snapshot`)."""
    cid, pseudonym = erasure.contact_id, erasure.record.pseudonym
    contact = data.contacts.pop(cid, None)
    if contact is not None:
        for key in contact.address_keys():
            data.by_address[key].discard(cid)
    for rows in data.departures.values():
        rows[:] = [(left, at) for left, at in rows if left != cid]
    # Index entries left empty (by this erasure or earlier edits) still name an address.
    for table in (data.by_address, data.departures):
        for key in [k for k, v in table.items() if not v]:
            del table[key]
    keys = set(erasure.address_keys)
    for key in [k for k in data.suppressions if k[0] in keys]:
        del data.suppressions[key]
    for suppression in erasure.suppressions:
        key = (suppression.address_key, suppression.channel)
        old = data.suppressions.get(key)
        if old is None or replaces(suppression, old):
            data.suppressions[key] = suppression
    for key in [k for k in data.sent if k[1] in keys]:
        del data.sent[key]
    kept = {k: request for k, request in data.pending.items() if request.contact_id != cid}
    data.pending.clear()
    data.pending.update(kept)
    for key in [k for k, record in data.inbound.items() if _names_contact(record, erasure)]:
        del data.inbound[key]
    for key in [k for k, item in data.review.items() if _reviews_contact(item, erasure)]:
        del data.review[key]
    for key in [k for k in data.subscriptions if k[0] == cid]:
        sub = data.subscriptions.pop(key)
        via = None if sub.opted_out_via is None else erasure.via.get(sub.opted_out_via)
        data.subscriptions[(pseudonym, key[1])] = attrs.evolve(
            sub, contact_id=pseudonym, opted_out_via=via
        )
    data.events[:] = [
        _erased_event(e, erasure) if e.contact_id == cid else e for e in data.events
    ]
    data.erasures.append(erasure.record)
