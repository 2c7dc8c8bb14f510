"""What every provider test does with a parsed event: apply it to a real service and check
exactly what changed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import attrs

from consentkit import (
    Actor,
    ActorKind,
    ConsentService,
    Contact,
    Evidence,
    OptOutOrigin,
    Source,
    Store,
    SubscriptionState,
)
from consentkit.channels import AddressKind
from consentkit.inbound import InboundMessage, InboundOutcome, ProviderVerdict
from consentkit.providers import ParsedBatch
from consentkit.testing import FakeClock, check_replay

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("web_form", "Text me offers", "v1")

ServiceFactory = Callable[[datetime], tuple[ConsentService, FakeClock]]


def make_factory(new_store: Callable[[], Store]) -> ServiceFactory:
    """A factory of services on fresh stores, clocks an hour before the time given."""

    def make(at: datetime) -> tuple[ConsentService, FakeClock]:
        clock = FakeClock(at - timedelta(hours=1))
        return ConsentService(new_store(), clock=clock), clock

    return make


def _contact(contact_id: str, message: InboundMessage) -> Contact:
    if message.channel.address_kind is AddressKind.EMAIL:
        return Contact(ACCOUNT, contact_id, email=message.sender)
    return Contact(ACCOUNT, contact_id, phone=message.sender)


def subscribed(open_service: ServiceFactory, message: InboundMessage) -> ConsentService:
    """A service where contact ``known`` has the message's sender address and is subscribed on
    its channel; the clock is a minute after the message was received."""
    service, clock = open_service(message.received_at)
    service.upsert_contacts(ADMIN, [_contact("known", message)])
    service.opt_in(ADMIN, ["known"], [message.channel], evidence=EVIDENCE)
    clock.set(message.received_at + timedelta(minutes=1))
    return service


def check_opt_out(
    open_service: ServiceFactory,
    message: InboundMessage,
    source: Source,
    reason: str = "provider_opt_out",
) -> None:
    """The message unsubscribes the contact that has its sender address, as the contact's own
    act with *source* and *reason*; a redelivery changes nothing; and from an address no contact
    has it is a suppression, so a later registration of that address starts unsubscribed."""
    service = subscribed(open_service, message)
    result = service.handle_inbound(message)
    assert result.outcome is InboundOutcome.OPTED_OUT
    assert service.state(ADMIN, "known", message.channel) is SubscriptionState.UNSUBSCRIBED
    last = service.history(ADMIN, "known", message.channel)[-1]
    assert (last.source, last.reason, last.actor.kind) == (source, reason, ActorKind.CONTACT)
    assert last.inbound_message_id == message.message_id
    events = len(service.history(ADMIN, "known"))
    assert service.handle_inbound(message).replayed
    assert len(service.history(ADMIN, "known")) == events
    check_replay(service.store, ACCOUNT)

    fresh, clock = open_service(message.received_at)
    clock.set(message.received_at + timedelta(minutes=1))
    assert fresh.handle_inbound(message).outcome is InboundOutcome.SUPPRESSED
    fresh.upsert_contacts(ADMIN, [_contact("newcomer", message)])
    assert fresh.state(ADMIN, "newcomer", message.channel) is SubscriptionState.UNSUBSCRIBED
    check_replay(fresh.store, ACCOUNT)


def check_complaint(open_service: ServiceFactory, message: InboundMessage) -> None:
    """The message is a spam complaint: an opt-out (source CARRIER, reason provider_complaint)
    recorded as the system's with origin COMPLAINT, which a later provider opt-in from the same
    address (a preference page's resubscribe) does not undo; otherwise it behaves like
    :func:`check_opt_out`."""
    assert (message.verdict, message.source) == (ProviderVerdict.COMPLAINT, Source.CARRIER)
    check_opt_out(open_service, message, Source.CARRIER, "provider_complaint")
    service = subscribed(open_service, message)
    service.handle_inbound(message)
    sub = service.subscription(ADMIN, "known", message.channel)
    assert sub is not None
    assert sub.opted_out_by == frozenset({OptOutOrigin.COMPLAINT})
    resubscribe = attrs.evolve(
        message, message_id=f"{message.message_id}:back", verdict=ProviderVerdict.OPT_IN,
        source=Source.UNSUBSCRIBE_LINK, received_at=message.received_at + timedelta(seconds=30),
    )
    assert service.handle_inbound(resubscribe).outcome is InboundOutcome.NOTHING_TO_UNDO
    assert service.state(ADMIN, "known", message.channel) is SubscriptionState.UNSUBSCRIBED
    check_replay(service.store, ACCOUNT)


def check_batch(batch: ParsedBatch, ids: list[str], rejected: dict[str, str]) -> None:
    """*batch* has the messages of *ids*, in order, and rejected exactly the events of
    *rejected* (path -> the field its error names)."""
    assert [m.message_id for m in batch.messages] == ids
    assert {r.path: getattr(r.error, "field", None) for r in batch.rejected} == rejected
    assert [r.path for r in batch.rejected] == list(rejected)


def check_opt_in(open_service: ServiceFactory, message: InboundMessage) -> None:
    """The message takes back the contact's own earlier opt-out from the same address."""
    service = subscribed(open_service, message)
    stop = InboundMessage(
        ACCOUNT, message.channel, message.sender, "STOP", "earlier-stop",
        message.received_at - timedelta(seconds=30),
    )
    assert service.handle_inbound(stop).outcome is InboundOutcome.OPTED_OUT
    result = service.handle_inbound(message)
    assert (result.outcome, result.reply) == (InboundOutcome.OPTED_IN, None)
    assert service.state(ADMIN, "known", message.channel) is SubscriptionState.SUBSCRIBED
    assert service.history(ADMIN, "known", message.channel)[-1].reason == "provider_opt_in"
    check_replay(service.store, ACCOUNT)


def check_unchanged(open_service: ServiceFactory, message: InboundMessage) -> None:
    """The message changes nothing: the contact stays subscribed and no event is written."""
    service = subscribed(open_service, message)
    events = len(service.history(ADMIN, "known"))
    service.handle_inbound(message)
    assert service.state(ADMIN, "known", message.channel) is SubscriptionState.SUBSCRIBED
    assert len(service.history(ADMIN, "known")) == events


def expected(message: InboundMessage, **changes: Any) -> InboundMessage:
    """*message* with *changes* (for comparing parsed messages field by field)."""
    return attrs.evolve(message, **changes)


def without(payload: dict[str, Any], path: str) -> dict[str, Any]:
    """A deep copy of *payload* without the key at the dotted *path* (``a.b.0.c``)."""
    return _edit(payload, path, None, delete=True)


def with_value(payload: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of *payload* with *value* at the dotted *path*."""
    return _edit(payload, path, value, delete=False)


def _edit(payload: dict[str, Any], path: str, value: object, *, delete: bool) -> dict[str, Any]:
    result = copy.deepcopy(payload)
    *parents, last = path.split(".")
    node: Any = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if delete:
        del node[int(last) if isinstance(node, list) else last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return result


class Recorder(list[str]):
    """An account resolver that answers ACCOUNT and remembers every key it was asked for."""

    def __call__(self, key: str) -> str:
        self.append(key)
        return ACCOUNT


def unknown(key: str) -> str:
    """An account resolver that knows no account."""
    raise LookupError(key)
