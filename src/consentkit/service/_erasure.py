"""Erasure of a contact (GDPR Art. 17) that keeps its opt-outs, and the audit records of
erasures (docs/privacy.md)."""

from __future__ import annotations

import uuid
from datetime import datetime

import attrs

from consentkit.channels import Channel
from consentkit.erasure import (
    ERASED_MARKER,
    ERASURE_REASON_CODE,
    ErasureRecord,
    hashed_address_key,
    pseudonym_for,
)
from consentkit.errors import UnknownContactError, ValidationError
from consentkit.model import (
    Actor,
    Contact,
    Source,
    SubscriptionState,
    Suppression,
    Transition,
    address_key,
    enum_value,
    validate_id,
    validate_text,
)
from consentkit.policy import AdminOnlyPolicy
from consentkit.service._arguments import check_actor
from consentkit.service._core import ServiceCore
from consentkit.service._engine import ChangeRequest
from consentkit.service._results import PairRef
from consentkit.storage.base import Erasure, ErasureLog, ErasureTransaction, missing_capability

__all__ = ["ErasureMixin", "ErasureResult"]

_MAX_REASON = 2000


@attrs.frozen
class ErasureResult:
    """What :meth:`ErasureMixin.erase_contact` did.

    Attributes:
        pseudonym: the id the contact's subscriptions and events are kept under now.
        erased_at: when it happened (the service clock).
        unsubscribed: the pairs the erasure unsubscribed (those still subscribed), under the
            pseudonym.
        suppressions: how many hashed suppressions (address x channel) were kept.
    """

    pseudonym: str
    erased_at: datetime
    unsubscribed: tuple[PairRef, ...]
    suppressions: int


class ErasureMixin(ServiceCore):
    """Erasing contacts."""

    def erase_contact(
        self,
        actor: Actor,
        contact_id: str,
        *,
        reason: str,
        source: Source | str = Source.API,
    ) -> ErasureResult:
        """Erase a contact and keep its opt-outs, all or nothing (docs/privacy.md).

        In one transaction: every subscribed pair of the contact is unsubscribed (an event by
        *actor* with the reason code ``"erasure"``); each of its addresses is suppressed on every
        channel of its kind under its keyed hash (HMAC-SHA256 with the service's
        ``erasure_key``), so an import, sign-up or address edit that brings it back to any
        contact unsubscribes that contact; the contact, its address index, its address
        departures, the plain suppressions and sent-message records of its addresses, and the
        inbound results and review items from its addresses or naming it are deleted; its
        subscriptions and events are kept under a pseudonym, without their free text (notes,
        evidence location and reference); and an audit record of the erasure is kept with
        *reason* (see :meth:`erasures`), which must not contain personal data.

        The contact id is free afterwards: a new contact with the same id starts with no
        consent and no history (unsubscribed on its channels if it has an erased address).

        Raises:
            NotAuthorizedError: the policy refuses (only admins, by default).
            ValidationError: an invalid argument, or the service has no ``erasure_key``.
            UnknownContactError: the contact does not exist in the actor's account.
            StorageError: the store cannot erase (no :class:`ErasureTransaction`).
        """
        check_actor(actor)
        check = getattr(self.policy, "check_erasure", AdminOnlyPolicy().check_erasure)
        refusal = check(actor)
        if refusal is not None:
            raise refusal
        validate_id("contact_id", contact_id)
        text = validate_text("reason", reason, max_length=_MAX_REASON, multiline=True)
        chosen_source = enum_value(Source, "source", source)
        key = self._erasure_key
        if key is None:
            raise ValidationError(
                "erasure_key",
                "the service has no erasure key: build it with "
                "ConsentService(..., erasure_key=<the host's secret bytes>), the same key for "
                "every service over this store (docs/privacy.md)",
            )
        account = actor.account
        with self.store.transaction(account) as tx:
            if not isinstance(tx, ErasureTransaction):
                raise missing_capability(
                    self.store, ErasureTransaction, "cannot erase contacts; nothing was changed"
                )
            now = self._now()
            contact = tx.get_contacts([contact_id]).get(contact_id)
            if contact is None:
                raise UnknownContactError(account, [contact_id])
            by_key = self._address_channels(contact)
            tx.lock_addresses(sorted(by_key))
            subscriptions = tx.subscriptions_of_contact(contact_id)
            subscribed = tuple(
                s.channel for s in subscriptions if s.state is SubscriptionState.SUBSCRIBED
            )
            changed: tuple[PairRef, ...] = ()
            if subscribed:
                request = ChangeRequest(
                    actor=actor,
                    channels=subscribed,
                    target=SubscriptionState.UNSUBSCRIBED,
                    op=Transition.UNSUBSCRIBE,
                    source=chosen_source,
                    reason=ERASURE_REASON_CODE,
                    occurred_at=now,
                    now=now,
                    batch_id=uuid.uuid4().hex,
                    timing="clock",
                    known_contacts=True,
                )
                changed = self._apply_in_tx(tx, request, [contact_id]).changed
            pseudonym = pseudonym_for(key, account, contact_id, now)
            # Plain suppressions of the addresses (any channel, a topic's too) become hashed.
            for suppression in tx.get_suppressions(sorted(by_key)):
                by_key[suppression.address_key].add(suppression.channel)
            hashed = tuple(
                Suppression(
                    account=account,
                    address_key=hashed_address_key(key, plain),
                    channel=ch,
                    occurred_at=now,
                    source=chosen_source,
                )
                for plain in sorted(by_key)
                for ch in sorted(by_key[plain])
            )
            vias = {s.opted_out_via for s in subscriptions if s.opted_out_via is not None}
            record = ErasureRecord(
                account=account,
                pseudonym=pseudonym,
                erased_at=now,
                actor=Actor(actor.kind, actor.id, account),
                reason=text,
            )
            tx.erase_contact(
                Erasure(
                    record=record,
                    contact_id=contact_id,
                    address_keys=tuple(sorted(by_key)),
                    senders=_senders(contact),
                    suppressions=hashed,
                    via={v: hashed_address_key(key, v) for v in sorted(vias | set(by_key))},
                    marker=ERASED_MARKER,
                )
            )
        return ErasureResult(
            pseudonym=pseudonym,
            erased_at=now,
            unsubscribed=tuple(PairRef(pseudonym, ch) for _, ch in changed),
            suppressions=len(hashed),
        )

    def erasures(self, actor: Actor) -> list[ErasureRecord]:
        """The account's erasure records, oldest first: who erased a contact, when and why,
        under which pseudonym.  Readable by whoever may read the account (not contacts).

        Raises:
            StorageError: the store keeps no erasure records (no :class:`ErasureLog`).
        """
        account = self._account_scope(actor, "read the account's erasures")
        if not isinstance(self.store, ErasureLog):
            raise missing_capability(self.store, ErasureLog, "keeps no erasure records")
        return self.store.erasures(account)

    def _address_channels(self, contact: Contact) -> dict[str, set[Channel]]:
        """Each address key of *contact* with the service's channels of its kind (every phone
        channel for the phone, email for the email, its channel for a handle)."""
        by_key: dict[str, set[Channel]] = {}
        for ch in self.channels.known.values():
            address = contact.address_for(ch)
            if address is not None:
                by_key.setdefault(address_key(ch, address), set()).add(ch)
        for ch, handle in contact.handles:  # a handle of a channel this service lacks
            by_key.setdefault(address_key(ch, handle), set()).add(ch)
        return by_key


def _senders(contact: Contact) -> tuple[str, ...]:
    """The contact's addresses as inbound results and review items name a sender, lower-cased
    (an email's local part may come in another case)."""
    found = {a.lower() for a in (contact.phone, contact.email) if a is not None}
    found.update(handle.lower() for _, handle in contact.handles)
    return tuple(sorted(found))

