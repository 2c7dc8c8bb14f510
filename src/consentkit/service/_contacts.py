"""Contacts and their addresses: registration, address updates, and the suppressions that follow
addresses."""

from __future__ import annotations

import functools
import itertools
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import cast

from consentkit.channels import (
    Channel,
)
from consentkit.erasure import hashed_keys
from consentkit.errors import (
    NotAuthorizedError,
    ValidationError,
)
from consentkit.model import (
    Actor,
    Contact,
    OptOutOrigin,
    Source,
    SubscriptionState,
)
from consentkit.service._arguments import check_actor, check_flag, iterate_arg
from consentkit.service._core import ServiceCore
from consentkit.service._engine import ChangeRequest
from consentkit.service._results import ContactsResult, PairRef
from consentkit.storage.base import (
    NewContacts,
    StoreTransaction,
    WrittenSuppressions,
)


class ContactsMixin(ServiceCore):
    """Registering contacts and changing their addresses."""

    def upsert_contacts(
        self,
        actor: Actor,
        contacts: Iterable[Contact],
        *,
        replace_addresses: bool = False,
    ) -> ContactsResult:
        """Register contacts or update their addresses, all or nothing.

        By default an existing contact keeps every address the given one leaves out (``None``
        phone or email, a handle channel not given): only the addresses given change.  With
        ``replace_addresses=True`` its addresses become exactly the given ones, and an address
        left out is removed.  Subscribed pairs whose contact no longer has an address on their
        channel are reported in :attr:`ContactsResult.unreachable`.

        An address that said STOP (an active suppression) applies whenever it joins a contact, new
        or existing: each pair of the suppressed channels is unsubscribed, whatever its state
        (see docs/policy.md, "Addresses are consent-relevant").

        Raises:
            NotAuthorizedError: the policy refuses, or a contact belongs to another account.
            ValidationError: *contacts* is not an iterable of :class:`Contact`, or a contact has a
                handle on a channel the service does not know.
        """
        check_actor(actor)
        check_flag("replace_addresses", replace_addresses)
        refusal = self.policy.check_contact_write(actor)
        if refusal is not None:
            raise refusal
        account = actor.account
        created = updated = 0
        suppressed: list[PairRef] = []
        unreachable: list[PairRef] = []
        iterator = iterate_arg("contacts", contacts, "an iterable of Contact objects")
        with self.store.transaction(account) as tx:
            # The clock is read once the write lock is held, so a call that waited for another
            # writer is never recorded before that writer's changes.
            now = self._now()
            while chunk := list(itertools.islice(iterator, self._chunk_size)):
                by_id = self._checked_contacts(actor, chunk)
                if isinstance(tx, NewContacts):
                    # Tried as new contacts first (an import's): if none is registered, they
                    # are written with no read, every address of theirs joins them, none
                    # leaves, no pair becomes unreachable.
                    joining, _ = address_changes(by_id, {})
                    if tx.put_new_contacts(list(by_id.values()), list(joining)):
                        created += len(by_id)
                        suppressed.extend(
                            self._apply_suppressions(
                                tx, account, functools.partial(joined_keys, by_id, {}), joining, now
                            )
                        )
                        continue
                before = tx.get_contacts(list(by_id))
                if before and not replace_addresses:
                    by_id = {
                        cid: merged(before[cid], c) if cid in before else c
                        for cid, c in by_id.items()
                    }
                # Lock every address that joins or leaves a contact before reading suppressions
                # or writing the address index: an inbound message from one of them waits.
                joining, departures = address_changes(by_id, before)
                touched = joining.union(key for key, _ in departures) if departures else joining
                if touched:
                    # In no particular order: a store that takes a lock per key orders them.
                    tx.lock_addresses(list(touched))
                created += len(by_id) - len(before)
                updated += len(before)
                tx.put_contacts(list(by_id.values()))
                if departures:
                    # A STOP sent from a departing address before now, but delivered later,
                    # still reaches the contact that had it (see handle_inbound).
                    tx.record_address_departures(departures, now)
                suppressed.extend(
                    self._apply_suppressions(
                        tx, account, functools.partial(joined_keys, by_id, before), joining, now
                    )
                )
                unreachable.extend(self._unreachable(tx, before, by_id))
        return ContactsResult(
            created=created,
            updated=updated,
            suppressed=tuple(suppressed),
            unreachable=tuple(unreachable),
        )

    def _checked_contacts(self, actor: Actor, chunk: list[object]) -> dict[str, Contact]:
        """The contacts of *chunk* by id (the last of one id wins), each checked: a
        :class:`Contact` of *actor*'s account whose handles are on channels the service knows.

        The common case (every one of them valid, exactly of class Contact) is checked in bulk;
        otherwise contact by contact, in order, so the first invalid one is reported."""
        account = actor.account
        if set(map(type, chunk)) == {Contact}:
            contacts = cast("list[Contact]", chunk)
            if set(map(_account_of, contacts)) == {account}:
                for with_handles in filter(_handles_of, contacts):
                    for handle_channel, _ in with_handles.handles:
                        self.channels.resolve(handle_channel, "handles")
                return dict(zip(map(_id_of, contacts), contacts, strict=True))
        by_id: dict[str, Contact] = {}
        for contact in chunk:
            if not isinstance(contact, Contact):
                raise ValidationError(
                    "contacts", f"expected Contact objects, got {type(contact).__name__}"
                )
            if contact.account != account:
                raise NotAuthorizedError(
                    f"contact {contact.id!r} belongs to account {contact.account!r}; "
                    f"{actor} acts only in account {account!r}"
                )
            for handle_channel, _ in contact.handles:
                self.channels.resolve(handle_channel, "handles")
            by_id[contact.id] = contact
        return by_id

    def _unreachable(
        self, tx: StoreTransaction, before: Mapping[str, Contact], after: Mapping[str, Contact]
    ) -> list[PairRef]:
        """Subscribed pairs whose contact just lost its address on their channel."""
        lost: dict[str, list[Channel]] = {}
        for cid, old in before.items():
            new = after[cid]
            gone = [
                ch
                for ch in self.channels.known.values()
                if old.address_for(ch) is not None and new.address_for(ch) is None
            ]
            if gone:
                lost[cid] = gone
        found: list[PairRef] = []
        for cid, gone in lost.items():
            current = tx.lock_subscriptions([cid], gone)
            found.extend(
                PairRef(cid, ch)
                for ch in gone
                if (sub := current.get((cid, ch))) is not None
                and sub.state is SubscriptionState.SUBSCRIBED
            )
        return found

    def _apply_suppressions(
        self,
        tx: StoreTransaction,
        account: str,
        joined: Callable[[], Mapping[str, frozenset[str]]],
        joining: set[str],
        now: datetime,
    ) -> list[PairRef]:
        """Apply the active suppressions of the addresses that just joined contacts (*joined*:
        computes the keys that joined each contact, called only if a suppression applies;
        *joining*: all of them)."""
        if not joining:
            return []
        # An erased contact's addresses are suppressed under their keyed hashes: asked for in
        # the same read, and matched back to the plain key that joined.
        plain_of = hashed_keys(self._erasure_key, joining)
        if isinstance(tx, WrittenSuppressions):
            # The store joins the contacts it just wrote with its suppressions: the keys that
            # joined and the ones the contacts kept (whose records are skipped below).
            found = tx.written_suppressions()
            if plain_of:
                found.extend(tx.get_suppressions(list(plain_of)))
        else:
            found = tx.get_suppressions([*joining, *plain_of])
        active = [s for s in found if s.active]
        if not active:
            return []
        asked = [*joining, *plain_of]
        suppressed_keys = {plain_of.get(s.address_key, s.address_key) for s in active}
        by_plain: dict[str, list[str]] = {}
        for cid, keys_ in joined().items():
            for key in keys_ & suppressed_keys:
                by_plain.setdefault(key, []).append(cid)
        joined_by = {
            key: by_plain[plain]
            for key in asked
            if (plain := plain_of.get(key, key)) in by_plain
        }
        applied: list[PairRef] = []
        system = Actor.system(account, "suppression-list")
        for suppression in sorted(active, key=lambda s: (s.address_key, s.channel)):
            targets = joined_by.get(suppression.address_key)
            if not targets:  # a record of a key not asked for
                continue
            # Applied as of the join, whatever the pair's state: the pair was sendable until its
            # contact took the address, so a START received before that never undoes it.
            request = ChangeRequest(
                actor=system,
                channels=(suppression.channel,),
                target=SubscriptionState.UNSUBSCRIBED,
                source=Source.SUPPRESSION,
                occurred_at=now,
                now=now,
                batch_id=uuid.uuid4().hex,
                inbound_message_id=suppression.inbound_message_id,
                origin=OptOutOrigin.SUPPRESSION,
                via=suppression.address_key,
                timing="last_change",
                known_contacts=True,
            )
            applied.extend(self._apply_in_tx(tx, request, targets).changed)
        return applied


_account_of = operator.attrgetter("account")
_id_of = operator.attrgetter("id")
_handles_of = operator.attrgetter("handles")


def address_changes(
    after: Mapping[str, Contact], before: Mapping[str, Contact]
) -> tuple[set[str], list[tuple[str, str]]]:
    """The address keys that join the contacts *after* (*before*: those of them that existed,
    as they were), and the (key, contact id) of each key that leaves one, sorted by contact.

    A new contact with a phone alone (every contact of a plain import) costs one string: no
    set of its keys is built."""
    contacts = after.values()
    if not before:
        joining = {
            f"phone:{phone}"
            for c in contacts
            if (phone := c.phone) is not None and c.email is None and not c.handles
        }
        for c in contacts:
            if c.email is not None or c.handles:
                joining.update(c.address_keys())
        return joining, []
    joining = set()
    departures: list[tuple[str, str]] = []
    for cid, contact in after.items():
        new_keys = contact.address_keys()
        old = before.get(cid)
        if old is None:  # a new contact: every address joins it
            joining.update(new_keys)
            continue
        old_keys = old.address_keys()
        joining.update(new_keys - old_keys)
        departures.extend((key, cid) for key in sorted(old_keys - new_keys))
    return joining, departures


def joined_keys(
    after: Mapping[str, Contact], before: Mapping[str, Contact]
) -> dict[str, frozenset[str]]:
    """The address keys that join each of the contacts *after* (all of a new one's)."""
    joined: dict[str, frozenset[str]] = {}
    for cid, contact in after.items():
        keys = contact.address_keys()
        old = before.get(cid)
        joined[cid] = keys if old is None else keys - old.address_keys()
    return joined


def merged(old: Contact, new: Contact) -> Contact:
    """*old* with the addresses *new* gives (the ones it leaves out stay)."""
    handles = dict(old.handles)
    handles.update(new.handles)
    return Contact(
        new.account,
        new.id,
        phone=new.phone if new.phone is not None else old.phone,
        email=new.email if new.email is not None else old.email,
        handles=handles,
    )
