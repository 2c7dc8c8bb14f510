"""``consentkit feed``: the account's change feed as JSON Lines, once or following new events.

Each page of :meth:`~consentkit.service.ConsentService.changes` is written (one event document
per line) and flushed before its cursor is stored in ``--cursor-file`` (atomically: a temporary
file renamed over the old one), so a run that stops anywhere resumes at the first page whose
cursor was not stored: an event may be written twice, never skipped (docs/feed.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

from consentkit.cli.context import PROG, Context
from consentkit.documents import to_document
from consentkit.errors import ValidationError
from consentkit.service import ChangesPage

__all__ = ["feed", "feed_arguments", "read_cursor", "write_cursor"]

_MAX_INTERVAL = 86_400.0
_MAX_CURSOR_FILE = 4096


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= _MAX_INTERVAL):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from more than 0 to {_MAX_INTERVAL:.0f}"
        )
    return seconds


def feed_arguments(parser: argparse.ArgumentParser) -> None:
    """Where to start, whether to follow, the page size and the format."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--after",
        metavar="CURSOR",
        help="start after this cursor (printed on stderr at the end of a run without "
        "--cursor-file); from the beginning without it",
    )
    where.add_argument(
        "--cursor-file",
        type=Path,
        metavar="PATH",
        help="read the cursor to start after from PATH (from the beginning when PATH does not "
        "exist) and store the cursor there after each page is written and flushed",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep polling for new events every --interval seconds until interrupted "
        "(Ctrl-C exits with code 130)",
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=5.0,
        metavar="SECONDS",
        help="with --follow, how long to wait when no new event is left (default 5)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=1000,
        metavar="N",
        help="events per page: written and flushed together, then the cursor is stored "
        "(1 to 10,000; default 1000)",
    )
    parser.add_argument(
        "--format",
        choices=["jsonl"],
        default="jsonl",
        help="JSON Lines: one ConsentEvent document (docs/json.md) per line (jsonl)",
    )


def read_cursor(path: Path) -> str | None:
    """The cursor stored in *path*; None when the file does not exist (start at the beginning).

    Raises:
        ValidationError: the file is empty or too large to hold a cursor.
        OSError: it cannot be read.
    """
    try:
        with path.open("r", encoding="utf-8") as stored:
            text = stored.read(_MAX_CURSOR_FILE + 1)
    except FileNotFoundError:
        return None
    except UnicodeError:
        text = "\0"
    cursor = text.strip()
    if not cursor or len(text) > _MAX_CURSOR_FILE or "\0" in cursor:
        raise ValidationError(
            "--cursor-file",
            f"{path} holds no cursor: it should hold the one line a previous run wrote; "
            "delete the file to start from the beginning",
        )
    return cursor


def write_cursor(path: Path, cursor: str) -> None:
    """Store *cursor* in *path* atomically: a reader (or a run that starts after a crash) finds
    the old cursor or the new one, never a part of one."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(cursor + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _lines(page: ChangesPage) -> str:
    return "".join(
        json.dumps(
            to_document(event), ensure_ascii=False, separators=(",", ":"), sort_keys=True
        )
        + "\n"
        for event in page.events
    )


def _page(ctx: Context, args: argparse.Namespace, cursor: str | None) -> ChangesPage:
    try:
        return ctx.svc.changes(ctx.actor, after=cursor, limit=args.limit)
    except ValidationError as e:
        if e.field != "after":
            raise
        option = "--after" if args.cursor_file is None else "--cursor-file"
        where = "" if args.cursor_file is None else f"{args.cursor_file}: "
        raise ValidationError(option, where + str(e).removeprefix("after: ")) from None


def feed(ctx: Context, args: argparse.Namespace) -> int:
    """Write the events after the cursor, page by page; with --follow, keep polling."""
    path: Path | None = args.cursor_file
    cursor = args.after if path is None else read_cursor(path)
    stored = cursor
    try:
        while True:
            page = _page(ctx, args, cursor)
            if page.events:
                ctx.out.write(_lines(page))
                ctx.out.flush()
            cursor = page.next_cursor
            if path is not None and cursor != stored:
                write_cursor(path, cursor)
                stored = cursor
            if page.has_more:
                continue
            if not args.follow:
                break
            ctx.sleep(args.interval)
    except KeyboardInterrupt:
        _resume_hint(ctx, path, cursor)
        raise
    _resume_hint(ctx, path, cursor)
    return 0


def _resume_hint(ctx: Context, path: Path | None, cursor: str | None) -> None:
    # Without a cursor file the cursor would be lost: say it where the events do not go.
    if path is None and cursor is not None:
        ctx.err.write(f"{PROG}: resume with --after {cursor}\n")
