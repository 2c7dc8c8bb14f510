"""The ``consentkit`` command line: look at and change consent without writing Python.

Every command goes through :class:`~consentkit.service.ConsentService`, so the same policy applies
as in a host app: a member who tries to unsubscribe someone is refused with the service's message.

The package: :mod:`~consentkit.cli.commands` (the command table and the parser),
:mod:`~consentkit.cli.args` (shared arguments), :mod:`~consentkit.cli.context` (what a command
runs with), :mod:`~consentkit.cli.runner` (one parsed command line, run),
:mod:`~consentkit.cli.render` (everything printed, shared with the demo) and one module per
command group.  This module imports none of them until it is used, so importing the renderer
alone (as the demo does) loads nothing else of the command line.

Exit codes: 0 success; 1 refused or invalid input (one line ``consentkit: error: ...`` on
stderr); 2 usage errors (argparse); 130 interrupted.  ``--format json`` prints one public
document of :mod:`consentkit.documents` on stdout, also for the commands that change data;
``consentkit --version`` prints the version.

Times given on the command line (``--received-at``, ``--as-of``) are ISO 8601 with a UTC offset;
a time without one is refused, as everywhere in consentkit.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from consentkit.errors import ConsentError, UnknownContactError

if TYPE_CHECKING:
    from consentkit.cli.commands import COMMANDS, build_parser
    from consentkit.cli.context import Command, Context, StoreFactory, open_sqlite_store
    from consentkit.cli.render import event_details, inbound_lines, spike_lines, trend_lines
    from consentkit.clock import Clock

__all__ = [
    "COMMANDS",
    "Command",
    "Context",
    "StoreFactory",
    "build_parser",
    "event_details",
    "inbound_lines",
    "main",
    "open_sqlite_store",
    "spike_lines",
    "trend_lines",
]

_PROG = "consentkit"
_EXPORTS = {
    "COMMANDS": "commands",
    "build_parser": "commands",
    "Command": "context",
    "Context": "context",
    "StoreFactory": "context",
    "open_sqlite_store": "context",
    "event_details": "render",
    "inbound_lines": "render",
    "spike_lines": "render",
    "trend_lines": "render",
}


def __getattr__(name: str) -> Any:
    """The re-exported names, imported from their modules on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _unknown_contact(e: UnknownContactError) -> str:
    # The service's message points at the Python API; say what to do on the command line.
    shown = ", ".join(repr(cid) for cid in e.contact_ids[:20])
    more = f" and {len(e.contact_ids) - 20} more" if len(e.contact_ids) > 20 else ""
    return (
        f"no contact {shown}{more} in account {e.account!r}: register it first "
        "(consentkit contacts add/import) or check the id and --account"
    )


def _os_error(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


# The first entry whose type matches says what went wrong, in one line.
_MESSAGES: tuple[tuple[type[Exception], Callable[[Any], str]], ...] = (
    (UnknownContactError, _unknown_contact),
    (ConsentError, str),
    (FileNotFoundError, lambda e: f"{e.filename}: no such file"),
    (IsADirectoryError, lambda e: f"{e.filename}: is a directory"),
    (PermissionError, lambda e: f"{e.filename}: permission denied"),
    (OSError, _os_error),
)


def _error(error: ConsentError | OSError) -> int:
    message = next(say(error) for kind, say in _MESSAGES if isinstance(error, kind))
    sys.stdout.flush()
    sys.stderr.write(f"{_PROG}: error: {' '.join(message.split())}\n")
    return 1


def _silence_stdout() -> None:
    # The reader of a pipe went away (e.g. `| head`): stop writing without a traceback at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(
    argv: Sequence[str] | None = None,
    *,
    store_factory: StoreFactory | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """Run the ``consentkit`` command line and return its exit code.

    Args:
        argv: the arguments (without the program name); ``sys.argv[1:]`` by default.
        store_factory: opens the store of ``--db`` (tests may inject one); SQLite by default.
        clock: the time source; the system clock by default.
        sleep: waits between the polls of ``feed --follow``; ``time.sleep`` by default.
    """
    from consentkit.cli.commands import build_parser
    from consentkit.cli.context import open_sqlite_store
    from consentkit.cli.runner import run
    from consentkit.clock import SystemClock

    try:
        args = build_parser().parse_args(argv)
        return run(
            args,
            store_factory or open_sqlite_store,
            clock or SystemClock(),
            sleep if sleep is not None else time.sleep,
        )
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else 2
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except (ConsentError, OSError) as e:
        return _error(e)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{_PROG}: interrupted\n")
        return 130
