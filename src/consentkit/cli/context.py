"""What every command runs with: the :class:`Context`, the :class:`Command` record, the store
factory and the progress line.  Imports no command module, so every command module may import it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, TextIO, TypeVar

import attrs

from consentkit.channels import Channel
from consentkit.clock import Clock
from consentkit.errors import ValidationError
from consentkit.model import Actor
from consentkit.topics import UnknownTopicError

if TYPE_CHECKING:
    import cattrs

    from consentkit.service import ConsentService
    from consentkit.storage.base import Store

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_DB",
    "DEFAULT_READER",
    "DEFAULT_TIMEZONE",
    "PROG",
    "Access",
    "Command",
    "Context",
    "Progress",
    "StoreFactory",
    "open_sqlite_store",
]

T = TypeVar("T")

PROG = "consentkit"
DEFAULT_DB = "consentkit.db"
DEFAULT_ACCOUNT = "default"
DEFAULT_READER = "member:cli"
DEFAULT_TIMEZONE = "UTC"
_PROGRESS_INTERVAL = 0.2
# The service's hint names its Python API; on the command line the option is the way.
_API_HINT = "Register a custom channel explicitly"
_CLI_HINT = (
    "Register a custom channel with --custom-channel KEY (or CONSENTKIT_CUSTOM_CHANNELS), "
    "e.g. --custom-channel telegram"
)


class StoreFactory(Protocol):
    """Opens the store of a ``--db`` path.

    ``create`` is False for commands that only make sense on an existing database (reads,
    changes of registered contacts), so a mistyped path is reported instead of silently creating
    an empty database.
    """

    def __call__(self, path: Path, *, create: bool) -> Store:
        """Open (or create, when allowed) the store at *path*."""
        ...


def open_sqlite_store(path: Path, *, create: bool) -> Store:
    """The default :class:`StoreFactory`: a :class:`~consentkit.storage.sqlite.SQLiteStore`.

    Raises:
        ValidationError: *path* does not exist and *create* is False.
    """
    from consentkit.storage.sqlite import SQLiteStore

    if not create and not path.exists():
        raise ValidationError(
            "--db",
            f"there is no consentkit database at {str(path)!r}: check --db or CONSENTKIT_DB, "
            "or create one by registering contacts (consentkit contacts add/import)",
        )
    return SQLiteStore(path)


class Progress:
    """A progress line on stderr, shown when stderr is a terminal or when asked for
    (``--progress``), quiet otherwise.

    Use as a context manager around the work and wrap the stream of items with :meth:`track`.
    When the number of items is known, set :attr:`total` (before the work starts) and the line
    shows it with a percentage: ``import: 1,200 of 5,000 rows (24%)``.  Counting costs a pass
    over the input, so do it only when :attr:`enabled`.
    """

    def __init__(self, stream: TextIO, label: str, unit: str, *, force: bool = False) -> None:
        self._stream = stream
        self._label = label
        self._unit = unit
        self.count = 0
        self.total: int | None = None
        self.enabled = force or _isatty(stream)
        self._last = 0.0

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield *items* unchanged, counting them."""
        for item in items:
            self.count += 1
            if self.enabled:
                now = time.monotonic()
                if now - self._last >= _PROGRESS_INTERVAL:
                    self._last = now
                    self._write()
            yield item

    def line(self) -> str:
        """The progress line as it is now, e.g. ``import: 1,200 of 5,000 rows (24%)``."""
        total = self.total
        if total is None:
            return f"{self._label}: {self.count:,} {self._unit}"
        percent = 100 if total <= 0 else min(100, self.count * 100 // total)
        return f"{self._label}: {self.count:,} of {total:,} {self._unit} ({percent}%)"

    def _write(self, end: str = "") -> None:
        self._stream.write(f"\r{self.line()}{end}")
        self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Always end the line, so an error message that follows starts on a line of its own.
        if self.enabled:
            self._write("\n")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


@attrs.define
class Context:
    """What a command runs with.

    Attributes:
        service: the consent service on the ``--db`` store (None for standalone commands).
        actor: who acts (``--as``, or the read-only default for reads).
        out: where results go (stdout).
        err: where progress and warnings go (stderr).
        converter: the converter of ``export`` (``--format json`` prints the public documents
            of :mod:`consentkit.documents`).
        clock: the clock the service uses.
        store_factory: how stores are opened (the demo opens its own).
        sleep: waits that many seconds (``consentkit feed --follow`` between polls); tests
            pass their own.
    """

    service: ConsentService | None
    actor: Actor
    out: TextIO
    err: TextIO
    converter: cattrs.Converter
    clock: Clock
    store_factory: StoreFactory
    sleep: Callable[[float], None] = time.sleep

    @property
    def svc(self) -> ConsentService:
        """The service (commands that declare ``access="standalone"`` have none)."""
        if self.service is None:  # pragma: no cover - a wiring mistake, not user input
            raise RuntimeError("this command runs without a store")
        return self.service

    def print(self, text: str = "") -> None:
        """Write one line of output."""
        self.out.write(text + "\n")

    def print_lines(self, lines: Iterable[str]) -> None:
        """Write lines of output."""
        for line in lines:
            self.print(line)

    def warn(self, lines: Iterable[str]) -> None:
        """Write a warning to stderr: the first line prefixed like an error, the rest as is."""
        self.out.flush()
        for number, line in enumerate(lines):
            self.err.write(f"{PROG}: warning: {line}\n" if number == 0 else f"{line}\n")

    def progress(self, label: str, unit: str, *, force: bool = False) -> Progress:
        """A progress line for a long operation (see :class:`Progress`); *force* shows it also
        when stderr is not a terminal (``--progress``)."""
        return Progress(self.err, label, unit, force=force)

    def subject(self, key: str, topic: str | None, option: str = "channel") -> Channel:
        """The channel *key* names, or with *topic* (or a key such as ``sms/promotions``) that
        declared topic on it."""
        if topic is None and "/" not in key:
            return self.channel(key, option)
        self.channel(key.partition("/")[0], option)  # the CLI's message for an unknown channel
        try:
            return self.svc.channels.resolve_subject(key, self.svc.topics, option, topic)
        except UnknownTopicError as e:
            raise UnknownTopicError(
                e.key,
                e.known,
                e.suggestion,
                how_to_declare="add it to the --topics FILE (or CONSENTKIT_TOPICS)",
            ) from None

    def channel(self, key: str | Channel, option: str = "channel") -> Channel:
        """The known channel *key* names, refused (naming *option*) when the service does not
        know it, with the command line's way to register a custom one."""
        try:
            return self.svc.channels.resolve(key, option)
        except ValidationError as e:
            message = str(e).removeprefix(f"{option}: ")
            before, found, _ = message.partition(_API_HINT)
            if not found:
                raise
            raise ValidationError(option, before + _CLI_HINT) from None


Access = Literal["read", "write", "contact", "standalone"]


@attrs.frozen
class Command:
    """One subcommand.

    Attributes:
        name: the words that invoke it (``"contacts add"``).
        help: one line for the command list.
        arguments: adds the command's own arguments to its parser.
        run: does the work and returns the exit code.
        access: ``"write"`` needs ``--as``; ``"read"`` defaults the actor to a member;
            ``"contact"`` writes as the contact themselves (an inbound reply), so ``--as`` is
            refused; ``"standalone"`` opens no store and takes no global options.
        creates_db: whether the command may create a missing ``--db`` file.
        description: longer help shown by ``consentkit NAME --help``.
    """

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Context, argparse.Namespace], int]
    access: Access
    creates_db: bool = False
    description: str | None = None
