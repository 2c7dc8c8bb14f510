"""Argument helpers shared by the commands: the global options, contact ids, channels, sources,
output formats, paging and times."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import attrs

from consentkit.channels import Channel, channel
from consentkit.cli.context import DEFAULT_ACCOUNT, DEFAULT_DB, DEFAULT_READER, Context
from consentkit.errors import ValidationError
from consentkit.model import ActorKind, Source, validate_id

__all__ = [
    "CUSTOM_CHANNELS_AFTER",
    "Ids",
    "actor_spec",
    "add_channels",
    "add_format",
    "add_global_options",
    "add_ids",
    "add_paging",
    "add_progress",
    "add_source",
    "add_topic",
    "channels_of",
    "count_lines",
    "custom_channels_of",
    "ids_of",
    "instant",
    "split_keys",
]

_ACTING_KINDS = ("admin", "member", "system")
CUSTOM_CHANNELS_AFTER = "custom_channels_after"
"""Where the copy of ``--custom-channel`` after the subcommand collects its values."""


def actor_spec(text: str) -> tuple[ActorKind, str]:
    """``--as KIND:ID`` parsed: the kind (never contact) and the id."""
    kind, sep, actor_id = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KIND:ID; write e.g. admin:alice, member:bob or system:importer"
        )
    if kind == "contact":
        raise argparse.ArgumentTypeError(
            "the command line acts for users and processes, not as a contact: record a "
            "contact's own request with resubscribe --reason contact_request"
        )
    if kind not in _ACTING_KINDS:
        raise argparse.ArgumentTypeError(
            f"{kind!r} is not an actor kind; use one of {', '.join(_ACTING_KINDS)}"
        )
    try:
        return ActorKind(kind), validate_id("--as", actor_id)
    except ValidationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``--db``, ``--account``, ``--as`` and ``--custom-channel``, on the top parser or (with
    *suppress*) on a subcommand's."""
    # The copies on the subcommands default to SUPPRESS so that an option given before the
    # subcommand is not reset by the subcommand's parser.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        default=default,
        help=f"the SQLite database (env CONSENTKIT_DB, default ./{DEFAULT_DB})",
    )
    parser.add_argument(
        "--account",
        metavar="ACCOUNT",
        default=default,
        help="the account (tenant) to act in "
        f"(env CONSENTKIT_ACCOUNT, default {DEFAULT_ACCOUNT!r})",
    )
    parser.add_argument(
        "--as",
        dest="acting_as",
        type=actor_spec,
        metavar="KIND:ID",
        default=default,
        help=(
            "who acts: admin:ID, member:ID or system:ID. Required by commands that change "
            "data (except inbound, which acts as the sender); read-only commands default to "
            f"{DEFAULT_READER}"
        ),
    )
    # Appended values of a subcommand's copy would replace those given before the subcommand,
    # so that copy collects them apart and the runner joins both.
    parser.add_argument(
        "--custom-channel",
        dest=CUSTOM_CHANNELS_AFTER if suppress else "custom_channels",
        action="append",
        default=argparse.SUPPRESS if suppress else [],
        metavar="KEY",
        help="a custom channel of the host (e.g. telegram, addressed by handle) that commands "
        "may name besides the built-in ones; repeat it or separate keys with commas (env "
        "CONSENTKIT_CUSTOM_CHANNELS, added to the ones given here)",
    )
    parser.add_argument(
        "--topics",
        dest="topics_file" if not suppress else "topics_file_after",
        type=Path,
        metavar="FILE",
        default=default,
        help="a JSON file declaring the host's topics (key, title, message_class, default) and "
        "the classes surviving a channel unsubscribe (see docs/topics.md; env "
        "CONSENTKIT_TOPICS)",
    )


def add_ids(parser: argparse.ArgumentParser) -> None:
    """Contact ids as arguments and from ``--ids-file``."""
    parser.add_argument("ids", nargs="*", metavar="ID", help="contact ids")
    parser.add_argument(
        "--ids-file",
        type=Path,
        metavar="FILE",
        help="also read contact ids from FILE, one per line ('-' for stdin); streamed, so it "
        "may hold any number",
    )


def add_channels(parser: argparse.ArgumentParser) -> None:
    """The required, repeatable ``--channel``."""
    parser.add_argument(
        "--channel",
        dest="channels",
        action="append",
        required=True,
        metavar="C",
        help="a channel (sms, mms, rcs, whatsapp, email, voice, push or a --custom-channel); "
        "repeat it or separate with commas for several: --channel sms,whatsapp",
    )
    add_topic(parser, "the pairs are that declared topic on each channel (see --topics)")


def add_topic(parser: argparse.ArgumentParser, what: str) -> None:
    """``--topic KEY``: a declared topic on the channel(s) given."""
    parser.add_argument("--topic", metavar="KEY", help=what)


def add_source(parser: argparse.ArgumentParser) -> None:
    """``--source``, recorded in the audit trail."""
    parser.add_argument(
        "--source",
        type=Source,
        choices=list(Source),
        default=Source.CLI,
        metavar="S",
        help="where the change comes from, recorded in the audit trail (default cli; one of "
        f"{', '.join(s.value for s in Source)})",
    )


def add_format(parser: argparse.ArgumentParser) -> None:
    """``--format table|json`` (``text`` is another name for ``table``)."""
    parser.add_argument(
        "--format",
        choices=["table", "text", "json"],
        default="table",
        help="output format: table (also called text) or json, the public JSON document of "
        "the result (docs/json.md) on stdout (default table)",
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--progress``: show the progress line on stderr also when it is not a terminal."""
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal (it is shown on a "
        "terminal anyway); with a total when the input is a file",
    )


def count_lines(path: Path) -> int | None:
    """The number of non-blank lines of the regular file *path* (the total of a progress line),
    or None when it is not a regular file (stdin, a pipe: reading would consume it) or cannot
    be read as UTF-8 (the real pass reports why)."""
    if str(path) == "-" or not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, UnicodeDecodeError):
        return None


def add_paging(parser: argparse.ArgumentParser, default: int = 50) -> None:
    """``--limit`` and ``--cursor`` of a paged listing."""
    parser.add_argument(
        "--limit",
        type=int,
        default=default,
        metavar="N",
        help=f"items per page (default {default})",
    )
    parser.add_argument(
        "--cursor", metavar="C", help="the cursor printed at the end of the previous page"
    )


def split_keys(values: Iterable[str]) -> list[str]:
    """The keys of repeatable, comma-separated options, blanks dropped."""
    return [key.strip() for value in values for key in value.split(",") if key.strip()]


def channels_of(ctx: Context, args: argparse.Namespace) -> list[Channel]:
    """The channels of ``--channel`` (with ``--topic``: that topic on each), each one the
    service knows (else a ValidationError)."""
    topic = getattr(args, "topic", None)
    return [ctx.subject(key, topic) for key in split_keys(args.channels)]


def instant(field: str, option: str, text: str) -> datetime:
    """An aware datetime from an ISO 8601 argument; one without a UTC offset is refused."""
    example = "2026-04-03T16:00:00Z or 2026-04-03T18:00:00+02:00"
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            field, f"{option} {text!r} is not an ISO 8601 time: write e.g. {example}"
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            field,
            f"{option} {text!r} has no UTC offset, so the instant is ambiguous: add one, "
            f"e.g. {example}",
        )
    return value


def _read_ids_file(path: Path, stdin: TextIO) -> Iterator[str]:
    name = "stdin" if str(path) == "-" else str(path)
    if str(path) == "-":
        handle, owned = stdin, False
    else:
        handle, owned = path.open(encoding="utf-8"), True
    try:
        for number, line in enumerate(handle, 1):
            value = line.strip()
            if not value:
                continue
            try:
                yield validate_id("contact_ids", value)
            except ValidationError as e:
                raise ValidationError(f"{name} line {number}", str(e)) from None
    except UnicodeDecodeError:
        raise ValidationError("--ids-file", f"{name} is not UTF-8 text") from None
    finally:
        if owned:
            handle.close()


@attrs.frozen
class Ids:
    """The contact ids of a bulk command: typed ones, then the file's, streamed.

    Attributes:
        items: the ids.
        from_file: whether some come from ``--ids-file``.
        typed: how many were typed as arguments.
        file: the ``--ids-file`` path, if any.
    """

    items: Iterable[str]
    from_file: bool
    typed: int = 0
    file: Path | None = None

    def count(self) -> int | None:
        """How many ids there are, when that is known without consuming them (typed ids and a
        regular file, counted by lines); None otherwise."""
        if self.file is None:
            return self.typed
        lines = count_lines(self.file)
        return None if lines is None else self.typed + lines


def ids_of(args: argparse.Namespace) -> Ids:
    """The contact ids of ``ID...`` and ``--ids-file`` (at least one of them is required)."""
    if not args.ids and args.ids_file is None:
        args.parser.error("give contact ids or --ids-file FILE")
    typed = len(args.ids)
    if args.ids_file is None:
        return Ids(list(args.ids), from_file=False, typed=typed)
    return Ids(
        itertools.chain(args.ids, _read_ids_file(args.ids_file, sys.stdin)),
        True,
        typed=typed,
        file=args.ids_file,
    )


def custom_channels_of(args: argparse.Namespace) -> list[Channel]:
    """The custom channels of CONSENTKIT_CUSTOM_CHANNELS and every ``--custom-channel``."""
    given = [
        *split_keys([os.environ.get("CONSENTKIT_CUSTOM_CHANNELS", "")]),
        *split_keys(args.custom_channels),
        *split_keys(getattr(args, CUSTOM_CHANNELS_AFTER, [])),
    ]
    found: list[Channel] = []
    for key in given:
        try:
            found.append(channel(key))
        except ValidationError as e:
            raise ValidationError(
                "--custom-channel", str(e).removeprefix("channel: ")
            ) from None
    return found
