"""The change feed on stores whose data outlives their objects (a SQLite file, a PostgreSQL
schema): a cursor survives a new store object, and writer processes changing consent while a
consumer restarts from its stored cursor on a new store object lose nothing and repeat nothing.

The PostgreSQL cases need ``CONSENTKIT_TEST_POSTGRES_DSN``; their schemas are dropped at the end.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from consentkit.channels import SMS, WHATSAPP
from consentkit.documents import from_document, to_document
from consentkit.errors import ValidationError
from consentkit.model import Actor, ConsentEvent
from consentkit.service import ConsentService
from tests.storage._feed_workers import (
    ACCOUNT,
    ADMIN,
    CONTACTS,
    EVIDENCE,
    StoreSpec,
    open_spec,
    register,
    write_randomly,
)
from tests.storage._pg_support import drop_schemas, new_schema, postgres_marks, require_dsn

WRITERS = 3
ROUNDS = 40
MAX_PAGES = 2_000  # a feed that never runs dry fails instead of hanging


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas_at_end() -> Iterator[None]:
    """Drops every schema the module's stores created."""
    yield
    drop_schemas()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=postgres_marks),
    ]
)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """Where the store's data lives: a SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "feed.db"))
    return ("postgres", require_dsn(), new_schema("feed"))


def _store_state(path: Path, events: list[ConsentEvent], cursor: str) -> None:
    """The consumer's effects and its cursor, stored together atomically."""
    temporary = path.with_suffix(".tmp")
    document = {"cursor": cursor, "events": [to_document(e) for e in events]}
    temporary.write_text(json.dumps(document), encoding="utf-8")
    os.replace(temporary, path)


def _load_state(path: Path) -> tuple[list[ConsentEvent], str | None]:
    if not path.exists():
        return [], None
    document = json.loads(path.read_text(encoding="utf-8"))
    return [from_document(e, ConsentEvent) for e in document["events"]], document["cursor"]


def test_a_cursor_survives_a_new_store_object(spec: StoreSpec) -> None:
    """A cursor taken from one store object resumes strictly after its event on a new store
    object over the same data, and names its account there too."""
    store = open_spec(spec)
    try:
        service = ConsentService(store)
        register(service)
        service.opt_in(ADMIN, CONTACTS[:3], [SMS, WHATSAPP], evidence=EVIDENCE)
        page = service.changes(ADMIN, limit=4)
        log = list(service.audit_log(ADMIN))
    finally:
        store.close()
    reopened = open_spec(spec)
    try:
        service = ConsentService(reopened)
        rest = service.changes(ADMIN, after=page.next_cursor)
        assert [*page.events, *rest.events] == log
        assert len(rest.events) == 2
        with pytest.raises(ValidationError) as refused:
            service.changes(Actor.admin("globex", "alice"), after=page.next_cursor)
        assert refused.value.field == "after"
    finally:
        reopened.close()


def test_writer_processes_and_a_restarting_consumer_see_every_event_once(
    spec: StoreSpec, tmp_path: Path
) -> None:
    """Writer processes change consent while a consumer reads pages of 1 to 5 events, storing
    each page's effects with its cursor; at random points it crashes (before storing a page it
    read) or restarts on a new store object from what it stored.  At the end the stored effects
    are the account's audit log: every event exactly once, in sequence order."""
    setup = open_spec(spec)
    try:
        register(ConsentService(setup))
    finally:
        setup.close()
    state = tmp_path / "consumer.json"
    rng = random.Random(16)
    store = open_spec(spec)
    restarts = crashes = read_while_writing = 0
    try:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(WRITERS, mp_context=context) as pool:
            writers = [pool.submit(write_randomly, spec, w, ROUNDS) for w in range(WRITERS)]
            for _ in range(MAX_PAGES):
                writing = not all(w.done() for w in writers)
                events, cursor = _load_state(state)
                page = ConsentService(store).changes(ADMIN, after=cursor, limit=rng.randint(1, 5))
                read_while_writing += writing and bool(page.events)
                roll = rng.random()
                if roll < 0.15:
                    crashes += 1  # crashed after reading the page, before storing anything
                    continue
                _store_state(state, [*events, *page.events], page.next_cursor)
                if roll < 0.3:
                    restarts += 1
                    store.close()
                    store = open_spec(spec)
                if not writing and not page.events:
                    break
            else:
                raise AssertionError(f"the feed never ran dry in {MAX_PAGES} pages")
            for writer in writers:
                writer.result(timeout=120)
        delivered, _ = _load_state(state)
        log = list(ConsentService(store).audit_log(ADMIN))
    finally:
        store.close()
    assert delivered == log
    sequences = [e.sequence for e in delivered]
    assert sequences == sorted(set(sequences))
    assert {e.account for e in delivered} == {ACCOUNT}
    assert len(delivered) > WRITERS * 10
    assert crashes
    assert restarts
    assert read_while_writing > 5, "the consumer should have read while the writers ran"
