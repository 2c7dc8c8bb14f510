"""The connection of one PostgreSQL write transaction, with statements that return nothing the
caller needs now queued to travel with the next round trip.

A consent transaction does a few small writes whose results nobody reads before COMMIT (the
address locks, suppressions, the inbound record, the state of pairs already locked).  Sent one
by one, each costs a round trip; queued, they go in the pipeline of the next statement that must
be answered (or of the transaction's last step), in the order they were queued and before that
statement, so every later statement sees them, and a lock is held before anything after it
runs.  A queued statement may carry a check of its outcome (a row count): it runs when the
results arrive, before COMMIT.

A failed check, or any statement the driver or the server refused, marks the session broken:
every later call raises again and the transaction can only roll back.  (A failed statement
aborts a PostgreSQL transaction anyway; one refused before it was sent, such as a parameter
the driver cannot send, would otherwise lose the statements queued after it without a word,
and a host that caught the first error could commit the rest.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from consentkit.errors import ConflictError, ConsentError, StorageError

__all__ = ["Check", "Cursor", "Session"]

Conn = psycopg.Connection[tuple[Any, ...]]
Cursor = psycopg.Cursor[tuple[Any, ...]]
Check = Callable[[Cursor], ConflictError | None]
"""A queued statement's check: the error its outcome means, or None when it is as expected."""


class Session:
    """The transaction's connection: ``execute``, ``pipeline`` and ``cursor`` as psycopg's, each
    sending the queued statements first; :meth:`queue` to add one."""

    __slots__ = ("_checks", "_conn", "_depth", "_queued", "broken")

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._queued: list[tuple[str, Sequence[Any] | dict[str, Any], bool | None, Check | None]]
        self._queued = []
        # Sent with a check, waiting for their results (the end of the pipeline they went in).
        self._checks: list[tuple[Cursor, Check]] = []
        self._depth = 0
        self.broken: ConsentError | None = None
        """Why the transaction must roll back (a failed check, a refused statement), if it
        must."""

    def queue(
        self,
        query: str,
        params: Sequence[Any] | dict[str, Any],
        *,
        prepare: bool | None = None,
        check: Check | None = None,
    ) -> None:
        """Send *query* with the next round trip (before any statement that follows it)."""
        self._queued.append((query, params, prepare, check))

    def execute(
        self,
        query: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        prepare: bool | None = None,
    ) -> Cursor:
        """Run *query* after the queued statements, in one round trip with them."""
        self.check_usable()
        if self._queued and not self._depth:
            with self.pipeline():
                return self._conn.execute(query, params, prepare=prepare)
        self._send()
        try:
            return self._conn.execute(query, params, prepare=prepare)
        except psycopg.Error as error:
            self._break(error)
            raise

    def cursor(self) -> Cursor:
        """A cursor of the connection, the queued statements sent first."""
        self.check_usable()
        if self._queued and not self._depth:
            self.flush()
        self._send()
        return self._conn.cursor()

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """A psycopg pipeline that begins with the queued statements; their checks run when it
        ends."""
        self.check_usable()
        self._depth += 1
        try:
            with self._conn.pipeline():
                self._send()
                yield
        except psycopg.Error as error:
            self._break(error)
            raise
        finally:
            self._depth -= 1
        if not self._depth:
            self._run_checks()

    def flush(self) -> None:
        """Send the queued statements now and check their outcomes (raises if the session is
        broken)."""
        self.check_usable()
        if self._queued or self._checks:
            with self.pipeline():
                pass

    @property
    def info(self) -> psycopg.ConnectionInfo:
        """The connection's information (its backend pid, its status)."""
        return self._conn.info

    def flushed(self) -> Conn:
        """The psycopg connection itself, every queued statement sent and checked."""
        self.flush()
        return self._conn

    def check_usable(self) -> None:
        """Raise why the transaction must roll back, if it must."""
        if self.broken is not None:
            raise self.broken

    def fail(self, error: ConsentError) -> ConsentError:
        """Mark the session broken by *error* (unless it is already); returns the error the
        session now raises, to raise it."""
        if self.broken is None:
            self.broken = error
        return self.broken

    def _break(self, error: psycopg.Error) -> None:
        self.fail(
            StorageError(f"a statement of this transaction failed ({error}); it can only roll back")
        )

    def _send(self) -> None:
        queued, self._queued = self._queued, []
        for query, params, prepare, check in queued:
            try:
                cur = self._conn.execute(query, params, prepare=prepare)
            except psycopg.Error as error:
                self._break(error)
                raise
            if check is not None:
                self._checks.append((cur, check))

    def _run_checks(self) -> None:
        checks, self._checks = self._checks, []
        for cur, check in checks:
            error = check(cur)
            if error is not None:
                self.fail(error)
        self.check_usable()
