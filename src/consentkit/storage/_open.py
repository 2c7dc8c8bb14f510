"""Choosing a store by URL: :func:`open_store`."""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from consentkit.errors import StorageError, ValidationError
from consentkit.storage.base import Store
from consentkit.storage.memory import InMemoryStore

__all__ = ["open_store"]

# The options a URL's query may set, with their types; keyword options may also be the others.
_SQLITE_OPTIONS: dict[str, type] = {"busy_timeout": float, "synchronous": str}
_SQLITE_KEYWORDS = frozenset(_SQLITE_OPTIONS)
_POSTGRES_OPTIONS: dict[str, type] = {"schema": str, "max_retries": int}
_POSTGRES_KEYWORDS = frozenset({*_POSTGRES_OPTIONS, "prepare_threshold", "create_schema"})


def open_store(url: str, **options: Any) -> Store:
    """Open the store a URL names, so a host configures its store with one setting.

    * ``memory:`` — a new :class:`~consentkit.storage.InMemoryStore` (for tests and demos).
    * ``sqlite:///consent.db`` (relative) or ``sqlite:////var/lib/app/consent.db`` (absolute, four
      slashes) — a :class:`~consentkit.storage.sqlite.SQLiteStore`; the query may set
      ``busy_timeout`` and ``synchronous`` (``sqlite:///consent.db?synchronous=NORMAL``).
    * ``postgresql://user@host:5432/db`` (or ``postgres://``) — a
      :class:`~consentkit.storage.postgres.PostgresStore` (needs ``consentkit[postgres]``); the
      query may set ``schema`` and ``max_retries``, which are taken out of the URL; every other
      query parameter (``sslmode``...) goes to libpq.

    Keyword *options* are passed to the store's constructor and win over the URL's query.

    Raises:
        ValidationError: (field ``url``) not a str, an unknown scheme or a malformed URL; or an
            option the store refuses (named by the store).
        StorageError: a PostgreSQL URL without the ``consentkit[postgres]`` extra installed, or a
            store that cannot be opened.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(
            "url", "give the store's URL as a non-empty str, e.g. 'sqlite:///consent.db'"
        )
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme == "memory" and rest in ("", "//"):
        if options:
            raise ValidationError(
                "options", f"InMemoryStore takes no options, got {sorted(options)}"
            )
        return InMemoryStore()
    if scheme == "sqlite":
        return _sqlite(url, options)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url, options)
    raise ValidationError(
        "url",
        f"unknown store URL {_shown(url)}: use memory:, sqlite:///path/to/file.db or "
        "postgresql://user@host/dbname",
    )


def _split(url: str) -> SplitResult:
    """*url* split into its parts, or a ValidationError naming ``url``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range or not a number raises here
    except ValueError as error:
        raise ValidationError(
            "url", f"{_shown(url)} is not a valid URL ({error}): check the host and port"
        ) from None
    return parts


def _shown(url: str) -> str:
    """*url* for a message: its scheme, host and path, never a user, password or query (which
    may hold one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return repr(f"{url.partition(':')[0][:20]}:...")
    return repr(urlunsplit((parts.scheme, host, parts.path, "", ""))[:200])


def _query_options(
    query: list[tuple[str, str]],
    allowed: dict[str, type],
    keywords: frozenset[str],
    options: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The store options the query and *options* set (converted), and the query parameters
    left over."""
    unknown = sorted(set(options) - keywords)
    if unknown:
        raise ValidationError(
            "options", f"unknown option(s) {unknown} for this store: use {sorted(keywords)}"
        )
    chosen: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, value in query:
        kind = allowed.get(name)
        if kind is None:
            rest.append((name, value))
            continue
        try:
            chosen[name] = kind(value)
        except ValueError:
            raise ValidationError(
                "url", f"query parameter {name}={value!r} is not a valid {kind.__name__}"
            ) from None
    return {**chosen, **options}, rest


def _sqlite(url: str, options: dict[str, Any]) -> Store:
    from consentkit.storage.sqlite import SQLiteStore

    parts = _split(url)
    if not url.lower().startswith("sqlite:///") or parts.netloc:
        raise ValidationError(
            "url",
            f"{_shown(url)} names no file: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db",
        )
    path = unquote(parts.path[1:])  # sqlite:///x.db -> "x.db"; sqlite:////x.db -> "/x.db"
    if "\x00" in path:
        raise ValidationError("url", "the file name holds a NUL character (%00)")
    chosen, rest = _query_options(
        parse_qsl(parts.query), _SQLITE_OPTIONS, _SQLITE_KEYWORDS, options
    )
    if rest:
        raise ValidationError(
            "url",
            f"unknown query parameter(s) {[n for n, _ in rest]}: use busy_timeout, synchronous",
        )
    return SQLiteStore(path, **chosen)


def _postgres(url: str, options: dict[str, Any]) -> Store:
    try:
        from consentkit.storage.postgres import PostgresStore
    except ImportError as missing:
        raise StorageError(
            f"a PostgreSQL store needs psycopg ({missing}): pip install 'consentkit[postgres]'"
        ) from None
    parts = _split(url)
    chosen, rest = _query_options(
        parse_qsl(parts.query), _POSTGRES_OPTIONS, _POSTGRES_KEYWORDS, options
    )
    query = urlencode(rest)
    conninfo = urlunsplit(parts._replace(query=query))
    return PostgresStore(conninfo, **chosen)
