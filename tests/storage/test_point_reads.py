"""can_send's fast paths (issues 14 and 15): the checks, the answers and the errors are those of
the general path on every store, however the call is warmed up."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consentkit import (
    SMS,
    Actor,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    MessageClass,
    NotAuthorizedError,
    StorageError,
    Topic,
    TopicDefault,
    UnknownTopicError,
    ValidationError,
)
from consentkit.channels import Channel, UnknownChannelError
from consentkit.errors import ConsentError
from consentkit.policy import AdminOnlyPolicy
from consentkit.service import _reads
from consentkit.storage.base import Store
from consentkit.storage.sqlite import SQLiteStore
from tests.storage._pg_support import DSN, SKIP_REASON, drop_schemas, new_schema

ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("web_form", "Yes, text me.", "v1")
TOPICS = [
    Topic("promotions", "Offers", MessageClass.MARKETING),
    Topic("alerts", "Alerts", MessageClass.INFORMATIONAL, TopicDefault.OPT_OUT),
]


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas_at_end() -> Iterator[None]:
    yield
    drop_schemas()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """A factory of fresh stores of one kind, closed after the test."""
    made: list[Any] = []

    def make() -> Store:
        if request.param == "memory":
            return InMemoryStore()
        if request.param == "sqlite":
            store: Any = SQLiteStore(tmp_path / f"consent{len(made)}.db")
        else:
            if DSN is None:
                pytest.skip(SKIP_REASON)
            from consentkit.storage.postgres import PostgresStore

            store = PostgresStore(DSN, schema=new_schema("pr"))
        made.append(store)
        return store  # type: ignore[no-any-return]

    yield make
    for store in made:
        store.close()


def service_of(store: Store, **options: Any) -> ConsentService:
    service = ConsentService(store, topics=TOPICS, **options)
    service.upsert_contacts(
        ADMIN, [Contact(ACCOUNT, c, phone=f"+1415555010{n}") for n, c in enumerate("abc")]
    )
    service.opt_in(ADMIN, ["a", "b"], [SMS], evidence=EVIDENCE)
    service.opt_in(ADMIN, ["a"], [SMS], evidence=EVIDENCE, topic="promotions")
    return service


def field_of(call: Callable[[], object]) -> str:
    with pytest.raises(ValidationError) as caught:
        call()
    return caught.value.field


class Id(str):
    """An id of a str subclass: validated as a str."""


BAD_CALLS: list[tuple[str, Callable[[ConsentService], object]]] = [
    ("actor", lambda s: s.can_send("alice", "a", SMS)),  # type: ignore[arg-type]
    ("actor", lambda s: s.can_send(None, "a", SMS, topic="promotions")),  # type: ignore[arg-type]
    *[
        ("contact_id", lambda s, bad=bad: s.can_send(ADMIN, bad, SMS))
        for bad in (None, 5, b"a", "", " a", "a ", "x" * 129, "a\x00", "a\u200b", "a\n")
    ],
    ("contact_id", lambda s: s.can_send(ADMIN, "", SMS, topic="promotions")),
    ("channel", lambda s: s.can_send(ADMIN, "a", 5)),  # type: ignore[arg-type]
    ("channel", lambda s: s.can_send(ADMIN, "a", None)),  # type: ignore[arg-type]
    ("channel", lambda s: s.can_send(ADMIN, "a", ["sms"])),  # type: ignore[arg-type]
    ("channel", lambda s: s.can_send(ADMIN, "a", "smss")),
    ("channel", lambda s: s.can_send(ADMIN, "a", "smss", topic="promotions")),
    ("topic", lambda s: s.can_send(ADMIN, "a", SMS, topic=5)),  # type: ignore[arg-type]
    ("topic", lambda s: s.can_send(ADMIN, "a", "sms/promotions", topic="promotions")),
    ("topic", lambda s: s.can_send(ADMIN, "a", "sms/promotions", topic="")),
    ("topic", lambda s: s.can_send(ADMIN, "a", SMS, topic="nope")),
    ("topic", lambda s: s.can_send(ADMIN, "a", "sms/nope")),
]


def test_can_send_checks_every_argument_however_warmed_up(
    make_store: Callable[[], Store],
) -> None:
    """Every bad argument raises the ValidationError naming it, before and after the same call
    with good arguments has been answered (and its resolution kept)."""
    service = service_of(make_store())
    for warm in (False, True):
        if warm:
            for ch, topic in (
                (SMS, None),
                ("sms", None),
                ("sms/promotions", None),
                (SMS, "promotions"),
                ("sms", "promotions"),
            ):
                assert service.can_send(ADMIN, "a", ch, topic=topic)
        for field, call in BAD_CALLS:
            assert field_of(functools.partial(call, service)) == field
    with pytest.raises(UnknownChannelError):
        service.can_send(ADMIN, "a", "smss")
    with pytest.raises(UnknownTopicError):
        service.can_send(ADMIN, "a", SMS, topic="nope")


def test_can_send_answers_follow_the_state_of_every_call(make_store: Callable[[], Store]) -> None:
    """Nothing of the consent state is kept: each answer is the store's at the call, on a plain
    channel, a topic channel (by key or by topic=) and an opt-out topic, by any spelling."""
    service = service_of(make_store())
    spellings: list[tuple[Channel | str, str | None]] = [
        (SMS, "promotions"),
        ("sms", "promotions"),
        ("SMS", "promotions"),
        ("sms/promotions", None),
        ("SMS/Promotions", None),
        (SMS.with_topic("promotions"), None),
    ]
    for _ in range(2):
        assert service.can_send(ADMIN, "a", SMS)
        assert service.can_send(ADMIN, Id("a"), "SMS")
        assert [service.can_send(ADMIN, "a", c, topic=t) for c, t in spellings] == [True] * 6
        assert [service.can_send(ADMIN, "b", c, topic=t) for c, t in spellings] == [False] * 6
        assert service.can_send(ADMIN, "b", SMS, topic="alerts")  # opt-out default
        assert not service.can_send(ADMIN, "c", SMS, topic="alerts")  # channel never subscribed
        assert not service.can_send(ADMIN, "zz", SMS)
    service.unsubscribe(ADMIN, ["a"], [SMS], topic="promotions")
    assert [service.can_send(ADMIN, "a", c, topic=t) for c, t in spellings] == [False] * 6
    assert service.can_send(ADMIN, "a", SMS)
    service.unsubscribe(ADMIN, ["b"], [SMS])
    assert not service.can_send(ADMIN, "b", SMS)
    assert not service.can_send(ADMIN, "b", SMS, topic="alerts")


def test_can_send_scopes_hold_on_the_fast_path(make_store: Callable[[], Store]) -> None:
    """A contact reads only their own pairs, and the policy's read check runs on every call."""
    service = service_of(make_store())
    own = Actor.contact(ACCOUNT, "a")
    assert service.can_send(own, "a", SMS)
    assert service.can_send(own, "a", SMS, topic="promotions")
    for topic in (None, "promotions"):
        with pytest.raises(NotAuthorizedError):
            service.can_send(own, "b", SMS, topic=topic)

    class NoReads(AdminOnlyPolicy):
        def check_read(self, actor: Actor) -> ConsentError | None:
            return NotAuthorizedError(f"{actor} may not read")

    closed = ConsentService(service.store, topics=TOPICS, policy=NoReads())
    for topic in (None, "promotions"):
        with pytest.raises(NotAuthorizedError, match="may not read"):
            closed.can_send(ADMIN, "a", SMS, topic=topic)


def test_the_kept_topic_channels_are_bounded(
    make_store: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resolved topic channels a service keeps never outgrow their bound, and answers stay
    right when they are dropped."""
    monkeypatch.setattr(_reads, "_PLANS", 4)
    service = service_of(make_store())
    variants = ["sms", "Sms", "sMs", "smS", "SMs", "SmS", "sMS", "SMS"]
    for _ in range(3):
        for key in variants:
            assert service.can_send(ADMIN, "a", key, topic="promotions")
            assert not service.can_send(ADMIN, "b", key, topic="promotions")
            assert len(service._topic_plans) <= 4


def test_closed_stores_refuse_point_reads(make_store: Callable[[], Store]) -> None:
    """A read of a closed SQL store raises StorageError, not a driver error."""
    store = make_store()
    service = service_of(store)
    assert service.can_send(ADMIN, "a", SMS, topic="promotions")
    if isinstance(store, InMemoryStore):
        return
    store.close()
    for topic in (None, "promotions"):
        with pytest.raises(StorageError, match="closed"):
            service.can_send(ADMIN, "a", SMS, topic=topic)


@pytest.mark.skipif(DSN is None, reason=SKIP_REASON)
def test_a_hosts_pool_is_borrowed_as_before() -> None:
    """On a pool the host passes, point reads borrow a connection and give it back set up as the
    host had it."""
    from psycopg_pool import ConnectionPool

    from consentkit.storage.postgres import PostgresStore

    assert DSN is not None
    with ConnectionPool(DSN, min_size=1, max_size=1, open=True) as pool:
        store = PostgresStore(pool=pool, schema=new_schema("pr"))
        try:
            service = service_of(store)
            for _ in range(3):
                assert service.can_send(ADMIN, "a", SMS)
                assert service.can_send(ADMIN, "a", SMS, topic="promotions")
                assert not service.can_send(ADMIN, "b", SMS, topic="promotions")
            with pool.connection() as conn:
                assert not conn.autocommit
        finally:
            store.close()
