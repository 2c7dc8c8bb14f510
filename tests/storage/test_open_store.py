"""open_store: a store chosen by URL, and the stores reachable from consentkit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import consentkit
from consentkit import (
    SMS,
    Actor,
    ConsentService,
    Contact,
    InMemoryStore,
    StorageError,
    ValidationError,
    open_store,
)
from consentkit.storage.sqlite import SQLiteStore
from tests.storage._pg_support import DSN, SKIP_REASON, drop_schemas, new_schema

ADMIN = Actor.admin("acme", "alice")


def _works(store: consentkit.Store) -> None:
    try:
        service = ConsentService(store)
        service.upsert_contacts(ADMIN, [Contact("acme", "c1", phone="+14155550100")])
        assert service.get_contact(ADMIN, "c1").phone == "+14155550100"
        assert not service.can_send(ADMIN, "c1", SMS)
    finally:
        store.close()


def test_memory() -> None:
    store = open_store("memory:")
    assert isinstance(store, InMemoryStore)
    _works(store)


def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///relative.db?synchronous=NORMAL&busy_timeout=2.5")
    assert isinstance(relative, SQLiteStore)
    _works(relative)
    assert (tmp_path / "relative.db").exists()
    absolute = tmp_path / "sub dir" / "abs.db"
    absolute.parent.mkdir()
    store = open_store(f"sqlite:///{absolute}".replace(" ", "%20"), busy_timeout=1)
    _works(store)
    assert absolute.exists()


@pytest.mark.parametrize(
    ("url", "options", "field"),
    [
        ("", {}, "url"),
        ("mysql://root@localhost/db", {}, "url"),
        ("sqlite://host/consent.db", {}, "url"),
        ("sqlite:consent.db", {}, "url"),
        ("sqlite:///x.db?journal=wal", {}, "url"),
        ("sqlite:///x.db?busy_timeout=soon", {}, "url"),
        ("sqlite:///x.db", {"timeout": 3}, "options"),
        ("sqlite:///x.db", {"busy_timeout": -1}, "busy_timeout"),
        ("sqlite:///x.db?synchronous=SOMETIMES", {}, "synchronous"),
        ("sqlite:///:memory:", {}, "path"),
        ("memory:", {"schema": "x"}, "options"),
        ("postgresql://root@127.0.0.1/test", {"pool_size": 3}, "options"),
        ("postgresql://root@127.0.0.1/test?max_retries=many", {}, "url"),
    ],
)
def test_bad_urls_and_options_name_the_field(
    url: str,
    options: dict[str, object],
    field: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError) as refused:
        open_store(url, **options)
    assert refused.value.field == field
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_not_a_string_is_refused() -> None:
    with pytest.raises(ValidationError, match="url"):
        open_store(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app:s3cret@db/consent",
        "mysql://db/consent?password=s3cret",
        "postgresql://app:s3cret@[::1/db",
        "mysql://app:s3cret@[::1/db",
        "postgresql://app:s3cret@db:99999/consent",
    ],
)
def test_a_password_is_never_shown(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        open_store(url)
    assert refused.value.field == "url"
    assert "s3cret" not in str(refused.value)


def test_a_nul_in_the_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        open_store(f"sqlite:///{tmp_path}/a%00b.db")
    assert refused.value.field == "url"
    with pytest.raises(ValidationError) as direct:
        SQLiteStore(tmp_path / "a\x00b.db")
    assert direct.value.field == "path"


def test_postgres_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        m for m in sys.modules if m.startswith(("psycopg", "consentkit.storage.postgres"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StorageError, match=r"consentkit\[postgres\]"):
        open_store("postgresql://root@127.0.0.1/test")


def test_importing_consentkit_imports_no_store_driver() -> None:
    code = (
        "import sys, consentkit; "
        "assert 'psycopg' not in sys.modules and 'consentkit.storage.sqlite' not in sys.modules; "
        "assert consentkit.SQLiteStore.__name__ == 'SQLiteStore'; "
        "assert consentkit.storage.SQLiteStore is consentkit.SQLiteStore; "
        "assert 'psycopg' not in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
    with pytest.raises(AttributeError):
        consentkit.NoSuchStore  # noqa: B018


@pytest.fixture
def _pg_schemas() -> Iterator[None]:
    yield
    drop_schemas()


@pytest.mark.postgres
@pytest.mark.skipif(DSN is None, reason=SKIP_REASON)
@pytest.mark.usefixtures("_pg_schemas")
def test_postgres_with_the_schema_in_the_query() -> None:
    assert DSN is not None
    schema = new_schema("url")
    joiner = "&" if "?" in DSN else "?"
    store = open_store(f"{DSN}{joiner}schema={schema}&max_retries=2&application_name=ck")
    from consentkit.storage.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    assert (store.schema, store.max_retries) == (schema, 2)
    _works(store)
