"""Hypothesis strategies for consentkit values, for host apps' own property tests."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import attrs
from hypothesis import strategies as st

from consentkit.channels import BUILTIN_CHANNELS, Channel
from consentkit.model import (
    Actor,
    ActorKind,
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
    Source,
)
from consentkit.service import ChangeResult, ConsentService

__all__ = [
    "ChangeRequest",
    "actors",
    "apply_request",
    "aware_datetimes",
    "builtin_channels",
    "change_requests",
    "channels",
    "contact_ids",
    "contacts",
    "custom_channels",
    "evidence",
    "justifications",
    "phone_numbers",
]


def builtin_channels() -> st.SearchStrategy[Channel]:
    """One of the built-in channels."""
    return st.sampled_from(sorted(BUILTIN_CHANNELS.values()))


def custom_channels() -> st.SearchStrategy[Channel]:
    """A valid custom channel key (``telegram``, ``x_1``...)."""
    first = st.sampled_from(string.ascii_lowercase)
    rest = st.text(string.ascii_lowercase + string.digits + "_-", max_size=12)
    return st.builds(lambda a, b: a + b, first, rest).filter(
        lambda key: key not in BUILTIN_CHANNELS
    ).map(Channel)


def channels() -> st.SearchStrategy[Channel]:
    """Any channel, mostly built-in ones."""
    return st.one_of(builtin_channels(), builtin_channels(), custom_channels())


def contact_ids() -> st.SearchStrategy[str]:
    """Valid contact ids, including non-ASCII ones."""
    return st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=40
    )


def phone_numbers() -> st.SearchStrategy[str]:
    """E.164 phone numbers."""
    return st.builds(
        lambda first, rest: f"+{first}{rest}",
        st.integers(1, 9),
        st.text(string.digits, min_size=7, max_size=13),
    )


def contacts(account: str) -> st.SearchStrategy[Contact]:
    """Contacts of *account* with an optional phone and email."""
    return st.builds(
        Contact,
        account=st.just(account),
        id=contact_ids(),
        phone=st.none() | phone_numbers(),
        email=st.none()
        | st.builds(
            lambda user, domain: f"{user}@{domain}.example",
            st.text(string.ascii_letters + string.digits, min_size=1, max_size=10),
            st.text(string.ascii_lowercase, min_size=1, max_size=10),
        ),
    )


def aware_datetimes(
    min_value: datetime = datetime(2020, 1, 1),
    max_value: datetime = datetime(2030, 1, 1),
) -> st.SearchStrategy[datetime]:
    """Time-zone-aware datetimes (UTC and fixed offsets)."""
    from datetime import timezone

    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    return st.datetimes(min_value, max_value, timezones=st.just(UTC) | offsets)


def justifications() -> st.SearchStrategy[Justification]:
    """Valid justifications."""
    return st.builds(
        Justification,
        reason=st.sampled_from(ResubscribeReason),
        note=st.text(string.ascii_letters + " .,", min_size=1, max_size=60).filter(str.strip),
    )


def evidence() -> st.SearchStrategy[Evidence]:
    """Valid opt-in evidence."""
    return st.builds(
        Evidence,
        method=st.sampled_from(["web_form", "keyword", "paper", "checkout_checkbox"]),
        wording=st.text(string.ascii_letters + " .,", min_size=1, max_size=80).filter(str.strip),
        wording_version=st.sampled_from(["v1", "v2", "2026-01"]),
        location=st.none() | st.just("https://example.com/signup"),
        captured_at=st.none() | aware_datetimes(),
    )


def actors(account: str, contact_id_pool: list[str] | None = None) -> st.SearchStrategy[Actor]:
    """Actors of *account* of every kind; contact actors are drawn from *contact_id_pool*."""
    user = st.sampled_from(["alice", "bob", "carol"])
    kinds = [
        st.builds(Actor.admin, st.just(account), user),
        st.builds(Actor.member, st.just(account), user),
        st.builds(Actor.system, st.just(account), st.sampled_from(["system", "bounces"])),
    ]
    if contact_id_pool:
        kinds.append(st.builds(Actor.contact, st.just(account), st.sampled_from(contact_id_pool)))
    return st.one_of(kinds)


@attrs.frozen
class ChangeRequest:
    """A random consent request, to be replayed against a service.

    Attributes:
        operation: ``"opt_in"``, ``"unsubscribe"``, ``"resubscribe"`` or ``"toggle"``.
        actor: who asks.
        contact_ids: the contacts.
        channels: the channels.
        justification: given or not.
        evidence: given or not.
        source: where the request comes from.
        subscribed: for toggles, the target.
    """

    operation: str
    actor: Actor
    contact_ids: tuple[str, ...]
    channels: tuple[Channel, ...]
    justification: Justification | None
    evidence: Evidence | None
    source: Source
    subscribed: bool = True

    @property
    def is_admin(self) -> bool:
        """Whether the actor is an admin."""
        return self.actor.kind is ActorKind.ADMIN


def change_requests(
    account: str, contact_id_pool: list[str], channel_pool: list[Channel]
) -> st.SearchStrategy[ChangeRequest]:
    """Random requests of every kind by every kind of actor, over the given contacts/channels."""

    @st.composite
    def build(draw: st.DrawFn) -> ChangeRequest:
        actor = draw(actors(account, contact_id_pool))
        if actor.kind is ActorKind.CONTACT:
            ids: tuple[str, ...] = (actor.id,)
        else:
            ids = tuple(
                draw(st.lists(st.sampled_from(contact_id_pool), min_size=1, max_size=4))
            )
        return ChangeRequest(
            operation=draw(st.sampled_from(["opt_in", "unsubscribe", "resubscribe", "toggle"])),
            actor=actor,
            contact_ids=ids,
            channels=tuple(
                draw(st.lists(st.sampled_from(channel_pool), min_size=1, max_size=3, unique=True))
            ),
            justification=draw(st.none() | justifications()),
            evidence=draw(st.none() | evidence()),
            source=draw(st.sampled_from(Source)),
            subscribed=draw(st.booleans()),
        )

    return build()


def apply_request(service: ConsentService, request: ChangeRequest) -> ChangeResult:
    """Send *request* to *service* with the matching method (errors propagate)."""
    if request.operation == "opt_in":
        return service.opt_in(
            request.actor,
            request.contact_ids,
            request.channels,
            evidence=request.evidence,
            source=request.source,
        )
    if request.operation == "unsubscribe":
        return service.unsubscribe(
            request.actor, request.contact_ids, request.channels, source=request.source
        )
    if request.operation == "resubscribe":
        return service.resubscribe(
            request.actor,
            request.contact_ids,
            request.channels,
            justification=request.justification,
            source=request.source,
        )
    return service.set_subscribed(
        request.actor,
        request.contact_ids[0],
        request.channels[0],
        request.subscribed,
        justification=request.justification,
        evidence=request.evidence,
        source=request.source,
    )
