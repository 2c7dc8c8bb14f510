"""The ``consentkit`` command line: look at and change consent without writing Python.

Every command goes through :class:`~consentkit.service.ConsentService`, so the same policy applies
as in a host app: a member who tries to unsubscribe someone is refused with the service's message.

Adding a command is local: write ``_xxx_arguments(parser)`` and ``_xxx(ctx, args) -> int``, then
add one :class:`Command` line to :data:`COMMANDS`.  A name with a space (``"contacts add"``) puts
the command in a group.

Exit codes: 0 success; 1 refused or invalid input (one line ``consentkit: error: ...`` on
stderr); 2 usage errors (argparse); 130 interrupted.

Times given on the command line (``--received-at``, ``--as-of``) are ISO 8601 with a UTC offset;
a time without one is refused, as everywhere in consentkit.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TextIO, TypeVar

import attrs
import cattrs

from consentkit.channels import BUILTIN_CHANNELS, Channel, channel
from consentkit.clock import Clock, SystemClock
from consentkit.errors import ConsentError, UnknownContactError, ValidationError
from consentkit.inbound import InboundMessage, InboundOutcome, InboundResult
from consentkit.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
    Source,
    Subscription,
    SubscriptionState,
    validate_id,
)
from consentkit.serialization import (
    EVENT_CSV_FIELDS,
    event_to_csv_row,
    event_to_json,
    make_converter,
)
from consentkit.service import ChangeResult, ConsentService, ContactsResult, PairRef
from consentkit.settings import AccountSettings
from consentkit.storage.base import Store
from consentkit.trends import Change, SpikeCheck, SpikeWindow, TrendReport, sparkline

__all__ = [
    "COMMANDS",
    "Command",
    "Context",
    "StoreFactory",
    "inbound_lines",
    "main",
    "open_sqlite_store",
    "spike_lines",
    "trend_lines",
]

T = TypeVar("T")

PROG = "consentkit"
DEFAULT_DB = "consentkit.db"
DEFAULT_ACCOUNT = "default"
DEFAULT_READER = "member:cli"
DEFAULT_TIMEZONE = "UTC"
_ACTING_KINDS = ("admin", "member", "system")
# Long listings of pairs are cut here: the counts on the summary line are always complete.
_MAX_PAIRS_SHOWN = 100
_PROGRESS_INTERVAL = 0.2


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


# ---------------------------------------------------------------------- plumbing


class Progress:
    """A progress line on stderr, shown only when stderr is a terminal (quiet when piped).

    Use as a context manager around the work and wrap the stream of items with :meth:`track`.
    """

    def __init__(self, stream: TextIO, label: str, unit: str) -> None:
        self._stream = stream
        self._label = label
        self._unit = unit
        self.count = 0
        self._enabled = _isatty(stream)
        self._last = 0.0

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield *items* unchanged, counting them."""
        for item in items:
            self.count += 1
            if self._enabled:
                now = time.monotonic()
                if now - self._last >= _PROGRESS_INTERVAL:
                    self._last = now
                    self._write()
            yield item

    def _write(self, end: str = "") -> None:
        self._stream.write(f"\r{self._label}: {self.count:,} {self._unit}{end}")
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
        if self._enabled:
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
        err: where progress goes (stderr).
        converter: the JSON converter for ``--format json`` and exports.
        clock: the clock the service uses.
        store_factory: how stores are opened (the demo opens its own).
    """

    service: ConsentService | None
    actor: Actor
    out: TextIO
    err: TextIO
    converter: cattrs.Converter
    clock: Clock
    store_factory: StoreFactory

    @property
    def svc(self) -> ConsentService:
        """The service (commands that declare ``access="standalone"`` have none)."""
        if self.service is None:  # pragma: no cover - a wiring mistake, not user input
            raise RuntimeError("this command runs without a store")
        return self.service

    def print(self, text: str = "") -> None:
        """Write one line of output."""
        self.out.write(text + "\n")

    def progress(self, label: str, unit: str) -> Progress:
        """A progress line for a long operation (see :class:`Progress`)."""
        return Progress(self.err, label, unit)


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


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _table_lines(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Collection[int] = ()
) -> list[str]:
    """Aligned columns; the columns numbered in *right* (figures) are right-aligned."""
    materialised = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in materialised) for i in range(len(headers))]
    lines = []
    for row in materialised:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _table(ctx: Context, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    for line in _table_lines(headers, rows):
        ctx.print(line)


def _json(ctx: Context, document: Any) -> None:
    ctx.print(json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True))


def _when(instant: datetime) -> str:
    return instant.isoformat(timespec="seconds")


def _instant(field: str, option: str, text: str) -> datetime:
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


# ---------------------------------------------------------------------- shared arguments


def _actor_spec(text: str) -> tuple[ActorKind, str]:
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


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
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
        type=_actor_spec,
        metavar="KIND:ID",
        default=default,
        help=(
            "who acts: admin:ID, member:ID or system:ID. Required by commands that change "
            "data (except inbound, which acts as the sender); read-only commands default to "
            f"{DEFAULT_READER}"
        ),
    )


def _add_ids(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID", help="contact ids")
    parser.add_argument(
        "--ids-file",
        type=Path,
        metavar="FILE",
        help="also read contact ids from FILE, one per line ('-' for stdin); streamed, so it "
        "may hold any number",
    )


def _add_channels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel",
        dest="channels",
        action="append",
        required=True,
        metavar="C",
        help="a channel (sms, mms, rcs, whatsapp, email, voice, push or a custom key); repeat "
        "it or separate with commas for several: --channel sms,whatsapp",
    )


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        type=Source,
        choices=list(Source),
        default=Source.CLI,
        metavar="S",
        help="where the change comes from, recorded in the audit trail (default cli; one of "
        f"{', '.join(s.value for s in Source)})",
    )


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format (table)"
    )


def _add_paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=int, default=50, metavar="N", help="items per page (default 50)"
    )
    parser.add_argument(
        "--cursor", metavar="C", help="the cursor printed at the end of the previous page"
    )


def _channels_of(args: argparse.Namespace) -> list[Channel]:
    keys = [key.strip() for value in args.channels for key in value.split(",")]
    return [channel(key) for key in keys if key]


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
class _Ids:
    """The contact ids of a bulk command: typed ones, then the file's, streamed."""

    items: Iterable[str]
    from_file: bool


def _ids_of(args: argparse.Namespace) -> _Ids:
    if not args.ids and args.ids_file is None:
        args.parser.error("give contact ids or --ids-file FILE")
    if args.ids_file is None:
        return _Ids(list(args.ids), from_file=False)
    return _Ids(itertools.chain(args.ids, _read_ids_file(args.ids_file, sys.stdin)), True)


# ---------------------------------------------------------------------- output of changes


def _pair_lines(
    ctx: Context, label: str, pairs: Sequence[PairRef], total: int | None = None
) -> None:
    for pair in pairs[:_MAX_PAIRS_SHOWN]:
        ctx.print(f"  {label:<10} {pair.contact_id} {pair.channel.key}")
    hidden = (len(pairs) if total is None else total) - min(len(pairs), _MAX_PAIRS_SHOWN)
    if hidden > 0:
        ctx.print(f"  {label:<10} ... and {hidden:,} more")


def _report_change(ctx: Context, verb: str, result: ChangeResult, channels: list[Channel]) -> None:
    already = result.new_state.value
    keys = ", ".join(ch.key for ch in channels)
    summary = (
        f"{verb} on {keys}: {result.changed_count:,} changed, "
        f"{result.unchanged_count:,} unchanged (already {already})"
    )
    if result.skipped:
        summary += f", {len(result.skipped):,} skipped"
    ctx.print(summary)
    _pair_lines(ctx, "changed", result.changed)
    _pair_lines(ctx, "unchanged", result.unchanged)
    for skipped in result.skipped[:_MAX_PAIRS_SHOWN]:
        ctx.print(f"  {'skipped':<10} {skipped.contact_id} {skipped.channel.key}: {skipped.reason}")
    if len(result.skipped) > _MAX_PAIRS_SHOWN:
        ctx.print(f"  {'skipped':<10} ... and {len(result.skipped) - _MAX_PAIRS_SHOWN:,} more")


def _report_suppressed(ctx: Context, result: ContactsResult) -> None:
    for pair in result.suppressed[:_MAX_PAIRS_SHOWN]:
        ctx.print(
            f"  suppressed {pair.contact_id} {pair.channel.key}: this address opted out before "
            "the contact was registered, so it starts unsubscribed"
        )


# ---------------------------------------------------------------------- contacts


def _contacts_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the contact id (unique in the account)")
    parser.add_argument("--phone", help="E.164 phone number, e.g. +14155550100")
    parser.add_argument("--email", help="email address")
    parser.add_argument(
        "--handle",
        dest="handles",
        action="append",
        default=[],
        metavar="CHANNEL=VALUE",
        help="an address on a handle channel (push, or a custom one such as telegram=42); "
        "repeatable",
    )


def _contacts_add(ctx: Context, args: argparse.Namespace) -> int:
    handles: dict[str, str] = {}
    for item in args.handles:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError("--handle", f"{item!r} is not CHANNEL=VALUE, e.g. push=token123")
        handles[key.strip()] = value
    contact = Contact(
        ctx.actor.account, args.id, phone=args.phone, email=args.email, handles=handles
    )
    result = ctx.svc.upsert_contacts(ctx.actor, [contact])
    if result.created:
        ctx.print(f"created contact {contact.id}")
    else:
        ctx.print(f"updated contact {contact.id} (its addresses were replaced)")
    _report_suppressed(ctx, result)
    return 0


_IMPORT_COLUMNS = ("id", "phone", "email")


def _contacts_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, metavar="FILE.csv", help="CSV with a header row: id,phone,email"
    )


def _read_contacts_csv(path: Path, account: str) -> Iterator[Contact]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
            unknown = [name for name in header if name not in _IMPORT_COLUMNS]
            if "id" not in header or unknown:
                raise ValidationError(
                    str(path),
                    f"the header must be id plus optional phone and email, got {header!r}",
                )
            for row in reader:
                if None in row:  # csv puts cells beyond the header under the key None
                    raise ValidationError(
                        f"{path} line {reader.line_num}", "has more cells than the header"
                    )
                try:
                    yield Contact(
                        account,
                        row["id"] or "",
                        phone=(row.get("phone") or "").strip() or None,
                        email=(row.get("email") or "").strip() or None,
                    )
                except ValidationError as e:
                    raise ValidationError(f"{path} line {reader.line_num}", str(e)) from None
        except csv.Error as e:
            raise ValidationError(f"{path} line {reader.line_num}", f"bad CSV: {e}") from None
        except UnicodeDecodeError:
            raise ValidationError(str(path), "is not UTF-8 text") from None


def _contacts_import(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.progress("import", "rows") as progress:
        result = ctx.svc.upsert_contacts(
            ctx.actor, progress.track(_read_contacts_csv(args.file, ctx.actor.account))
        )
    ctx.print(
        f"imported {result.created + result.updated:,} contacts: {result.created:,} created, "
        f"{result.updated:,} updated"
    )
    _report_suppressed(ctx, result)
    return 0


def _contacts_list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_paging(parser)
    _add_format(parser)


def _next_page(ctx: Context, cursor: str | None) -> None:
    if cursor is not None:
        ctx.print(f"(more: add --cursor {cursor})")


def _contacts_list(ctx: Context, args: argparse.Namespace) -> int:
    page = ctx.svc.list_contacts(ctx.actor, cursor=args.cursor, limit=args.limit)
    if args.format == "json":
        _json(
            ctx,
            {
                "items": [ctx.converter.unstructure(c, Contact) for c in page.items],
                "next_cursor": page.next_cursor,
            },
        )
        return 0
    _table(
        ctx,
        ("ID", "PHONE", "EMAIL", "HANDLES"),
        (
            (
                c.id,
                c.phone or "",
                c.email or "",
                " ".join(f"{ch.key}={handle}" for ch, handle in c.handles),
            )
            for c in page.items
        ),
    )
    _next_page(ctx, page.next_cursor)
    return 0


# ---------------------------------------------------------------------- subscribers (the filter)


def _subscribers_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel", required=True, metavar="C", help="the channel")
    parser.add_argument(
        "--state",
        choices=["subscribed", "unsubscribed"],
        default="subscribed",
        help="which state to list (default subscribed; 'unsubscribed' is the seed's filter)",
    )
    parser.add_argument(
        "--source",
        type=Source,
        choices=list(Source),
        metavar="S",
        help="only pairs whose last change came from S (e.g. unsubscribe_link)",
    )
    parser.add_argument(
        "--reason", metavar="R", help="only pairs whose last change carried reason code R"
    )
    _add_paging(parser)
    _add_format(parser)


def _subscription_row(sub: Subscription) -> tuple[str, ...]:
    return (
        sub.contact_id,
        sub.channel.key,
        sub.state.value,
        _when(sub.updated_at),
        sub.changed_by.value,
        sub.source.value,
        sub.reason or "",
    )


_SUBSCRIPTION_HEADERS = ("CONTACT", "CHANNEL", "STATE", "SINCE", "BY", "SOURCE", "REASON")


def _subscribers(ctx: Context, args: argparse.Namespace) -> int:
    page = ctx.svc.list_subscriptions(
        ctx.actor,
        channel(args.channel),
        SubscriptionState(args.state),
        source=args.source,
        reason=args.reason,
        cursor=args.cursor,
        limit=args.limit,
    )
    if args.format == "json":
        _json(
            ctx,
            {
                "items": [ctx.converter.unstructure(s, Subscription) for s in page.items],
                "next_cursor": page.next_cursor,
            },
        )
        return 0
    _table(ctx, _SUBSCRIPTION_HEADERS, (_subscription_row(s) for s in page.items))
    _next_page(ctx, page.next_cursor)
    return 0


# ---------------------------------------------------------------------- changes


def _bulk_change(
    ctx: Context,
    args: argparse.Namespace,
    label: str,
    apply: Callable[[Iterable[str], list[Channel], bool], ChangeResult],
) -> int:
    channels = _channels_of(args)
    ids = _ids_of(args)
    if ids.from_file:
        # Per-pair details would grow with the file; the counts are enough for a bulk run.
        with ctx.progress(label, "ids read") as progress:
            result = apply(progress.track(ids.items), channels, False)
    else:
        result = apply(ids.items, channels, True)
    _report_change(ctx, label, result, channels)
    return 0


def _opt_in_arguments(parser: argparse.ArgumentParser) -> None:
    _add_ids(parser)
    _add_channels(parser)
    proof = parser.add_argument_group(
        "evidence",
        "proof of consent (GDPR Art. 7(1), TCPA), required for opt-ins by admins and processes",
    )
    proof.add_argument(
        "--evidence-method",
        metavar="M",
        help="how consent was collected: web_form, keyword, paper...",
    )
    proof.add_argument("--wording", metavar="TEXT", help="the exact consent text shown")
    proof.add_argument("--wording-version", metavar="V", help="the version of that text")
    proof.add_argument(
        "--evidence-location", metavar="WHERE", help="where it was collected (URL, form id, store)"
    )
    proof.add_argument(
        "--evidence-reference",
        metavar="REF",
        help="pointer to the raw proof (submission id, recording id)",
    )
    _add_source(parser)


def _evidence_of(args: argparse.Namespace) -> Evidence | None:
    parts = (args.evidence_method, args.wording, args.wording_version)
    if all(part is None for part in parts) and args.evidence_location is None:
        return None  # the policy decides whether this actor needs evidence
    if any(part is None for part in parts):
        raise ValidationError(
            "evidence", "give --evidence-method, --wording and --wording-version together"
        )
    return Evidence(
        method=args.evidence_method,
        wording=args.wording,
        wording_version=args.wording_version,
        location=args.evidence_location,
        reference=args.evidence_reference,
    )


def _opt_in(ctx: Context, args: argparse.Namespace) -> int:
    evidence = _evidence_of(args)
    try:
        return _bulk_change(
            ctx,
            args,
            "opt-in",
            lambda ids, channels, details: ctx.svc.opt_in(
                ctx.actor, ids, channels, evidence=evidence, source=args.source, details=details
            ),
        )
    except ValidationError as e:
        if evidence is None and e.field == "evidence":
            raise ValidationError(
                "evidence",
                f"{e} (give --evidence-method, --wording and --wording-version)".removeprefix(
                    "evidence: "
                ),
            ) from e
        raise


def _unsubscribe_arguments(parser: argparse.ArgumentParser) -> None:
    _add_ids(parser)
    _add_channels(parser)
    parser.add_argument(
        "--reason", metavar="CODE", help="a reason code kept with the change, e.g. customer_request"
    )
    _add_source(parser)


def _unsubscribe(ctx: Context, args: argparse.Namespace) -> int:
    return _bulk_change(
        ctx,
        args,
        "unsubscribe",
        lambda ids, channels, details: ctx.svc.unsubscribe(
            ctx.actor, ids, channels, source=args.source, reason=args.reason, details=details
        ),
    )


def _resubscribe_arguments(parser: argparse.ArgumentParser) -> None:
    _add_ids(parser)
    _add_channels(parser)
    parser.add_argument(
        "--reason",
        required=True,
        choices=[r.value for r in ResubscribeReason],
        help="why: the contact was unsubscribed by mistake, or asked to be resubscribed "
        "(mistaken_unsubscribe is refused when the contact unsubscribed themselves)",
    )
    parser.add_argument(
        "--note",
        required=True,
        metavar="TEXT",
        help="what happened and where the request came from (kept in the audit trail)",
    )
    _add_source(parser)


def _resubscribe(ctx: Context, args: argparse.Namespace) -> int:
    justification = Justification(args.reason, args.note)
    return _bulk_change(
        ctx,
        args,
        "resubscribe",
        lambda ids, channels, details: ctx.svc.resubscribe(
            ctx.actor,
            ids,
            channels,
            justification=justification,
            source=args.source,
            details=details,
        ),
    )


# ---------------------------------------------------------------------- reads of one contact


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the contact id")
    _add_format(parser)


def _status(ctx: Context, args: argparse.Namespace) -> int:
    svc = ctx.svc
    contact = svc.get_contact(ctx.actor, args.id)
    recorded = {sub.channel: sub for sub in svc.subscriptions(ctx.actor, contact.id)}
    shown = [*BUILTIN_CHANNELS.values(), *sorted(set(recorded) - set(BUILTIN_CHANNELS.values()))]
    rows: list[tuple[Channel, Subscription | None, bool]] = [
        # can_send is asked per channel, as a sender would right before sending.
        (ch, recorded.get(ch), svc.can_send(ctx.actor, contact.id, ch))
        for ch in shown
    ]
    if args.format == "json":
        _json(
            ctx,
            {
                "contact": ctx.converter.unstructure(contact, Contact),
                "channels": [
                    {
                        "channel": ch.key,
                        "state": (
                            SubscriptionState.NEVER_SUBSCRIBED if sub is None else sub.state
                        ).value,
                        "can_send": can_send,
                        "subscription": None
                        if sub is None
                        else ctx.converter.unstructure(sub, Subscription),
                    }
                    for ch, sub, can_send in rows
                ],
            },
        )
        return 0
    addresses = [
        f"phone {contact.phone}" if contact.phone else "",
        f"email {contact.email}" if contact.email else "",
        *(f"{ch.key} {handle}" for ch, handle in contact.handles),
    ]
    ctx.print(f"contact {contact.id}  " + "  ".join(a for a in addresses if a))
    _table(
        ctx,
        ("CHANNEL", "STATE", "CAN SEND", "SINCE", "BY", "SOURCE", "REASON"),
        (
            (
                ch.key,
                "never_subscribed" if sub is None else sub.state.value,
                "yes" if can_send else "no",
                "" if sub is None else _when(sub.updated_at),
                "" if sub is None else sub.changed_by.value,
                "" if sub is None else sub.source.value,
                "" if sub is None else sub.reason or "",
            )
            for ch, sub, can_send in rows
        ),
    )
    return 0


def _history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the contact id")
    parser.add_argument("--channel", metavar="C", help="only this channel")
    _add_format(parser)


def event_details(event: ConsentEvent) -> str:
    """A short human summary of what an event carries (reason, justification, evidence)."""
    parts: list[str] = []
    if event.justification is not None:
        parts.append(f"{event.justification.reason.value}: {_one_line(event.justification.note)}")
    elif event.reason:
        parts.append(f"reason {event.reason}")
    if event.evidence is not None:
        parts.append(f"evidence {event.evidence.method}, wording {event.evidence.wording_version}")
    if event.inbound_message_id:
        parts.append(f"message {event.inbound_message_id}")
    return "; ".join(parts)


def _history(ctx: Context, args: argparse.Namespace) -> int:
    svc = ctx.svc
    # history() of an unknown id is simply empty; say so instead of printing an empty table.
    svc.get_contact(ctx.actor, args.id)
    only = None if args.channel is None else channel(args.channel)
    events = svc.history(ctx.actor, args.id, only)
    if args.format == "json":
        _json(ctx, [ctx.converter.unstructure(e, ConsentEvent) for e in events])
        return 0
    _table(
        ctx,
        ("SEQ", "OCCURRED", "CHANNEL", "CHANGE", "BY", "SOURCE", "DETAILS"),
        (
            (
                str(e.sequence),
                _when(e.occurred_at),
                e.channel.key,
                f"{e.previous_state.value} -> {e.new_state.value}",
                str(e.actor),
                e.source.value,
                event_details(e),
            )
            for e in events
        ),
    )
    return 0


# ---------------------------------------------------------------------- export


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=["jsonl", "csv"],
        default="jsonl",
        help="JSON Lines (one event per line) or CSV with a header (jsonl)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write to FILE (replaced only once the export is complete) instead of stdout",
    )
    parser.add_argument(
        "--after",
        type=int,
        metavar="SEQ",
        help="only events after this sequence number (to resume)",
    )


def _write_events(ctx: Context, fmt: str, events: Iterable[ConsentEvent], out: TextIO) -> None:
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EVENT_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for event in events:
            writer.writerow(event_to_csv_row(ctx.converter, event))
    else:
        for event in events:
            out.write(event_to_json(ctx.converter, event) + "\n")


def _export(ctx: Context, args: argparse.Namespace) -> int:
    events = ctx.svc.audit_log(ctx.actor, after=args.after)
    with ctx.progress("export", "events") as progress:
        if args.output is None:
            _write_events(ctx, args.format, progress.track(events), ctx.out)
        else:
            target: Path = args.output
            # A temporary file in the same directory, renamed at the end: an export that fails
            # half-way never leaves a truncated file that looks complete.
            fd, temporary = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".partial", dir=target.parent
            )
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                    _write_events(ctx, args.format, progress.track(events), out)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
    if args.output is not None:
        ctx.print(f"exported {progress.count:,} events to {args.output}")
    return 0


# ---------------------------------------------------------------------- inbound replies


def _inbound_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel",
        required=True,
        metavar="C",
        help="the channel the message arrived on (sms, mms, rcs, whatsapp, email...)",
    )
    parser.add_argument(
        "--from",
        dest="sender",
        required=True,
        metavar="ADDRESS",
        help="the sender's address: an E.164 number such as +14155550100 on phone channels, "
        "an email address on email",
    )
    parser.add_argument(
        "--message-id",
        required=True,
        metavar="ID",
        help="the provider's message id (e.g. Twilio's MessageSid): a redelivery with the same "
        "id is recognised and changes nothing",
    )
    parser.add_argument(
        "--received-at",
        metavar="TIME",
        help="when the provider received it, ISO 8601 with a UTC offset, e.g. "
        "2026-04-03T16:00:00Z (default: now)",
    )
    body = parser.add_mutually_exclusive_group(required=True)
    body.add_argument("body", nargs="?", metavar="BODY", help="the message text")
    body.add_argument(
        "--body-file",
        type=Path,
        metavar="FILE",
        help="read the message text from FILE ('-' for stdin), exactly as it is",
    )
    _add_format(parser)


def _read_body(path: Path) -> str:
    name = "stdin" if str(path) == "-" else str(path)
    if str(path) == "-":
        binary = getattr(sys.stdin, "buffer", None)
        raw: bytes | str = sys.stdin.read() if binary is None else binary.read()
    else:
        raw = path.read_bytes()
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("--body-file", f"{name} is not UTF-8 text") from None


_OUTCOME_TEXT = {
    InboundOutcome.OPTED_OUT: "opted out: the sender's contacts are unsubscribed from {channels}",
    InboundOutcome.SUPPRESSED: "suppressed: no contact has this address, so it is on the "
    "suppression list for {channels}; a contact registered with it later starts unsubscribed",
    InboundOutcome.OPTED_IN: "opted in: resubscribed at the contact's own request",
    InboundOutcome.HELP: "help: nothing changed; send the help text",
    InboundOutcome.NEEDS_REVIEW: "needs review: it may be an opt-out, so it is recorded for a "
    "person to review; nothing changed",
    InboundOutcome.NO_CONTACT: "no contact: an opt-in from an address no contact has; nothing "
    "changed",
    InboundOutcome.NONE: "none: an ordinary message; nothing changed",
}


def inbound_lines(result: InboundResult) -> list[str]:
    """What handling one inbound message did, as lines for a person (the CLI and the demo)."""
    keyword = f' (keyword "{result.keyword}")' if result.keyword else ""
    channels = ", ".join(ch.key for ch in result.channels)
    lines = []
    if result.replayed:
        lines.append("(duplicate delivery: already handled, nothing changed)")
    lines += [
        f"message {result.message_id} on {result.channel.key} from {result.sender}: "
        f"{result.classification.value}{keyword}",
        f"outcome: {_OUTCOME_TEXT[result.outcome].format(channels=channels)}",
        "contacts: " + (", ".join(result.contact_ids) or "none with this address"),
    ]
    new_state = (
        SubscriptionState.SUBSCRIBED
        if result.outcome is InboundOutcome.OPTED_IN
        else SubscriptionState.UNSUBSCRIBED
    )
    if result.changed:
        lines.append("changed at the first delivery:" if result.replayed else "changed:")
        width = max(len(cid) for cid, _ in result.changed)
        key_width = max(len(ch.key) for _, ch in result.changed)
        lines += [
            f"  {cid:<{width}}  {ch.key:<{key_width}} -> {new_state.value}"
            for cid, ch in result.changed
        ]
    elif result.outcome in (InboundOutcome.OPTED_OUT, InboundOutcome.OPTED_IN):
        lines.append(f"changed: nothing (already {new_state.value})")
    if result.reply is None:
        lines.append("reply to send: none")
    elif result.replayed:
        lines.append("reply to send: none (it was due for the first delivery)")
    else:
        lines.append(f"reply to send: {result.reply}")
    if result.honor_by is not None:
        when = _when(result.honor_by)
        if result.outcome is InboundOutcome.NEEDS_REVIEW:
            lines.append(f"honour by: {when}, if a reviewer finds it is an opt-out")
        else:
            lines.append(f"honour by: {when} (the legal deadline; already honoured)")
    return lines


def _inbound(ctx: Context, args: argparse.Namespace) -> int:
    body: str = args.body if args.body_file is None else _read_body(args.body_file)
    received = (
        ctx.clock.now()
        if args.received_at is None
        else _instant("received_at", "--received-at", args.received_at)
    )
    message = InboundMessage(
        account=ctx.actor.account,
        channel=args.channel,
        sender=args.sender,
        body=body,
        message_id=args.message_id,
        received_at=received,
    )
    result = ctx.svc.handle_inbound(message)
    if args.format == "json":
        document = json.loads(result.to_json())
        document["replayed"] = result.replayed
        _json(ctx, document)
        return 0
    for line in inbound_lines(result):
        ctx.print(line)
    return 0


# ---------------------------------------------------------------------- trends


def _trends_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--months",
        type=int,
        default=12,
        metavar="N",
        help="months in the monthly series, 1 to 120; the last one is the month to date "
        "(default 12)",
    )
    parser.add_argument(
        "--as-of",
        metavar="TIME",
        help="the instant to report for, ISO 8601 with a UTC offset (default: now)",
    )
    parser.add_argument(
        "--timezone",
        metavar="ZONE",
        help="the account's IANA time zone, e.g. America/New_York: months are its calendar "
        f"months (env CONSENTKIT_TIMEZONE, default {DEFAULT_TIMEZONE})",
    )
    _add_format(parser)


_WINDOW_TEXT = {SpikeWindow.LAST_7_DAYS: "last 7 days", SpikeWindow.MONTH_TO_DATE: "month to date"}


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def spike_lines(report: TrendReport) -> list[str]:
    """The flagged unsubscribe spikes with their reasons, or a line saying there are none."""
    flagged = report.flagged_spikes
    if not flagged:
        return ["no unsubscribe spikes"]
    return [
        f"unsubscribe spike on {check.channel.key} ({_WINDOW_TEXT[check.window]}): {check.reason}"
        for check in flagged
    ]


def trend_lines(report: TrendReport) -> list[str]:
    """The trend table, two rows per channel (subscribed, unsubscribed: now, a month earlier,
    change, percentage and a sparkline of the monthly series), for a person (the CLI and the
    demo)."""
    if not report.channels:
        return ["no subscriptions yet: nothing to compare"]
    first, last = report.series[0].month, report.series[-1].month
    rows: list[tuple[str, ...]] = []
    for trend in report.channels:
        series = report.series_of(trend.channel)
        figures: tuple[tuple[str, Change, list[int]], ...] = (
            ("subscribed", trend.subscribed, [t.subscribed for t in series]),
            ("unsubscribed", trend.unsubscribed, [t.unsubscribed for t in series]),
        )
        for index, (label, moved, values) in enumerate(figures):
            rows.append(
                (
                    trend.channel.key if index == 0 else "",
                    label,
                    f"{moved.current:,}",
                    f"{moved.previous:,}",
                    _signed(moved.absolute),
                    moved.describe(),
                    sparkline(values),
                )
            )
    headers = ("CHANNEL", "TOTAL", "NOW", "MONTH AGO", "CHANGE", "PERCENT", f"{first}..{last}")
    return _table_lines(headers, rows, right={2, 3, 4, 5})


def _change_document(moved: Change) -> dict[str, Any]:
    return {
        "previous": moved.previous,
        "current": moved.current,
        "absolute": moved.absolute,
        "percent": moved.percent,
        "direction": moved.direction.value,
        "note": moved.note,
    }


def _spike_document(check: SpikeCheck) -> dict[str, Any]:
    return {
        "channel": check.channel.key,
        "window": check.window.value,
        "observed": check.observed,
        "baseline_mean": check.baseline_mean,
        "baseline_stdev": check.baseline_stdev,
        "threshold": check.threshold,
        "z_score": check.z_score,
        "history_periods": check.history_periods,
        "baseline_periods": check.baseline_periods,
        "flagged": check.flagged,
        "reason": check.reason,
    }


def _trends_document(account: str, report: TrendReport) -> dict[str, Any]:
    every = sorted(
        {trend.channel for trend in report.channels}
        | {ch for point in report.series for ch, _ in point.totals}
    )
    return {
        "account": account,
        "as_of": report.as_of.isoformat(),
        "compared_with": report.compared_with.isoformat(),
        "timezone": report.timezone,
        "channels": [
            {
                "channel": trend.channel.key,
                "subscribed": _change_document(trend.subscribed),
                "unsubscribed": _change_document(trend.unsubscribed),
            }
            for trend in report.channels
        ],
        "series": [
            {
                "month": point.month,
                "at": point.at.isoformat(),
                "totals": {
                    ch.key: {
                        "subscribed": point.totals_of(ch).subscribed,
                        "unsubscribed": point.totals_of(ch).unsubscribed,
                    }
                    for ch in every
                },
            }
            for point in report.series
        ],
        "spikes": [_spike_document(check) for check in report.spikes],
    }


def _trends(ctx: Context, args: argparse.Namespace) -> int:
    as_of = None if args.as_of is None else _instant("as_of", "--as-of", args.as_of)
    report = ctx.svc.trends(ctx.actor, as_of=as_of, months=args.months)
    if args.format == "json":
        _json(ctx, _trends_document(ctx.actor.account, report))
        return 0
    ctx.print(
        f"subscriber trends of account {ctx.actor.account!r} as of {_when(report.as_of)}, "
        f"compared with {_when(report.compared_with)} (calendar months in {report.timezone})"
    )
    for line in [*trend_lines(report), "", *spike_lines(report)]:
        ctx.print(line)
    return 0


# ---------------------------------------------------------------------- demo


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        dest="demo_db",
        type=Path,
        metavar="PATH",
        help="keep the tour's database at PATH, which must not exist yet (default: a temporary "
        "one, deleted at the end). The global --db and CONSENTKIT_DB are never used.",
    )


def _demo(ctx: Context, args: argparse.Namespace) -> int:
    from consentkit.demo import run_demo

    factory = ctx.store_factory
    return run_demo(
        args.demo_db, ctx.out, clock=ctx.clock, store_factory=lambda p: factory(p, create=True)
    )


# ---------------------------------------------------------------------- the command table

COMMANDS: tuple[Command, ...] = (
    Command(
        "contacts add",
        "register a contact (or replace its addresses)",
        _contacts_add_arguments,
        _contacts_add,
        access="write",
        creates_db=True,
    ),
    Command(
        "contacts import",
        "register contacts from a CSV file (id,phone,email), all or nothing",
        _contacts_import_arguments,
        _contacts_import,
        access="write",
        creates_db=True,
    ),
    Command(
        "contacts list",
        "list contacts by id, a page at a time",
        _contacts_list_arguments,
        _contacts_list,
        access="read",
    ),
    Command(
        "subscribers",
        "list the contacts of one channel in one state (e.g. everyone unsubscribed from sms)",
        _subscribers_arguments,
        _subscribers,
        access="read",
    ),
    Command(
        "opt-in",
        "record that contacts agreed to receive messages (never subscribed -> subscribed)",
        _opt_in_arguments,
        _opt_in,
        access="write",
        description="Record opt-ins with evidence. Unsubscribed contacts are skipped and "
        "reported: an opt-in never resubscribes (use resubscribe).",
    ),
    Command(
        "unsubscribe",
        "unsubscribe contacts from channels, all or nothing (members are refused)",
        _unsubscribe_arguments,
        _unsubscribe,
        access="write",
    ),
    Command(
        "resubscribe",
        "resubscribe unsubscribed contacts (admins only, with a reason and a note)",
        _resubscribe_arguments,
        _resubscribe,
        access="write",
    ),
    Command(
        "status",
        "a contact's state and can-send on every channel",
        _status_arguments,
        _status,
        access="read",
    ),
    Command(
        "history",
        "the audit trail of one contact, oldest first",
        _history_arguments,
        _history,
        access="read",
    ),
    Command(
        "export",
        "export the account's audit log (JSON Lines or CSV), streamed",
        _export_arguments,
        _export,
        access="read",
    ),
    Command(
        "inbound",
        "handle one inbound reply (STOP, START, HELP...) as the provider's webhook would",
        _inbound_arguments,
        _inbound,
        access="contact",
        description="Feed one inbound message through the account's keyword rules, e.g. to "
        "replay a provider's log: STOP unsubscribes the sender's contacts from the channel's "
        "group, START resubscribes them, HELP changes nothing; the reply to send and the "
        "opt-out deadline are printed. The change is recorded as the sender's own act (actor "
        "contact:ID, source inbound_keyword), so --as is not taken. A message id that was "
        "handled before changes nothing and prints the stored result.",
    ),
    Command(
        "trends",
        "subscribed and unsubscribed totals per channel vs a month earlier, and spikes",
        _trends_arguments,
        _trends,
        access="read",
        description="Subscriber trends of the account: per channel, subscribed and "
        "unsubscribed totals now and one calendar month earlier with the change and "
        "percentage, a sparkline of each monthly series, and the unsubscribe spikes flagged "
        "against the account's own recent history.",
    ),
    Command(
        "demo",
        "a guided tour of every capability on a fresh database",
        _demo_arguments,
        _demo,
        access="standalone",
    ),
)
"""Every subcommand, in the order ``--help`` lists them."""

_GROUP_HELP = {"contacts": "register and list contacts (add, import, list)"}

_EPILOG = f"""\
who acts:
  --as KIND:ID names the acting user: admin:alice, member:bob or system:importer.
  Commands that change data require it; read-only commands default to {DEFAULT_READER}.
  The account's policy applies as in any host app: only admins unsubscribe and resubscribe.
  inbound takes no --as: a reply is the contact's own act and is recorded as theirs.

exit codes:
  0 success, 1 refused or invalid input (one line on stderr), 2 usage error.

examples:
  consentkit demo
  consentkit --as admin:alice contacts add ana --phone +14155550100 --email ana@example.com
  consentkit --as admin:alice unsubscribe ana ben --channel sms,whatsapp
  consentkit subscribers --channel sms --state unsubscribed
  consentkit inbound --channel sms --from +14155550100 --message-id SM123 STOP
  consentkit trends --months 6 --timezone America/New_York
  consentkit export --format csv --output audit.csv
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Per-channel contact consent: look at and change it from the command line.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, Any] = {}
    for command in COMMANDS:
        *group_words, leaf = command.name.split()
        container = top
        for depth in range(len(group_words)):
            key = " ".join(group_words[: depth + 1])
            if key not in groups:
                group = container.add_parser(
                    group_words[depth], help=_GROUP_HELP.get(key), description=_GROUP_HELP.get(key)
                )
                groups[key] = group.add_subparsers(
                    dest=f"{key}_action", metavar="ACTION", required=True
                )
            container = groups[key]
        sub = container.add_parser(
            leaf,
            help=command.help,
            description=command.description or command.help,
            parents=[] if command.access == "standalone" else [common],
        )
        command.arguments(sub)
        sub.set_defaults(command_spec=command, parser=sub)
    return parser


def _actor_of(args: argparse.Namespace, command: Command) -> Actor:
    account = args.account or os.environ.get("CONSENTKIT_ACCOUNT") or DEFAULT_ACCOUNT
    spec: tuple[ActorKind, str] | None = getattr(args, "acting_as", None)
    if command.access == "contact":
        if spec is not None:
            args.parser.error(
                f"{command.name} takes no --as: the message is recorded as the sender's own "
                "act (actor contact:ID, source inbound_keyword); leave --as out"
            )
        # The placeholder only carries the account: the service acts as the sender.
        spec = _actor_spec(DEFAULT_READER)
    if spec is None:
        if command.access == "write":
            args.parser.error(
                "--as KIND:ID is required for commands that change data, e.g. --as admin:alice"
            )
        spec = _actor_spec(DEFAULT_READER)
    kind, actor_id = spec
    return Actor(kind, actor_id, account)


def _settings_of(args: argparse.Namespace) -> AccountSettings:
    """The account's settings.  Only commands with a ``--timezone`` option read the time zone
    (and CONSENTKIT_TIMEZONE), so a bad value never stops a command that does not use it."""
    if not hasattr(args, "timezone"):
        return AccountSettings()
    given, option = args.timezone, "--timezone"
    if given is None:
        given, option = os.environ.get("CONSENTKIT_TIMEZONE"), "CONSENTKIT_TIMEZONE"
    if not given:
        return AccountSettings(timezone=DEFAULT_TIMEZONE)
    try:
        return AccountSettings(timezone=given)
    except ValidationError as e:
        raise ValidationError(
            "timezone", f"{option} {str(e).removeprefix('timezone: ')}"
        ) from None


def _run(args: argparse.Namespace, store_factory: StoreFactory, clock: Clock) -> int:
    command: Command = args.command_spec
    converter = make_converter()
    if command.access == "standalone":
        # No store and no --as: the actor is a placeholder the command never uses.
        ctx = Context(
            None,
            Actor.system(DEFAULT_ACCOUNT, "cli"),
            sys.stdout,
            sys.stderr,
            converter,
            clock,
            store_factory,
        )
        return command.run(ctx, args)
    actor = _actor_of(args, command)
    settings = _settings_of(args)
    db = args.db or Path(os.environ.get("CONSENTKIT_DB") or DEFAULT_DB)
    store = store_factory(db, create=command.creates_db)
    try:
        service = ConsentService(store, clock=clock, settings=settings)
        ctx = Context(service, actor, sys.stdout, sys.stderr, converter, clock, store_factory)
        return command.run(ctx, args)
    finally:
        store.close()


def _error(message: str) -> int:
    sys.stdout.flush()
    sys.stderr.write(f"{PROG}: error: {_one_line(message)}\n")
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
) -> int:
    """Run the ``consentkit`` command line and return its exit code.

    Args:
        argv: the arguments (without the program name); ``sys.argv[1:]`` by default.
        store_factory: opens the store of ``--db`` (tests may inject one); SQLite by default.
        clock: the time source; the system clock by default.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return _run(args, store_factory or open_sqlite_store, clock or SystemClock())
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else 2
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except UnknownContactError as e:
        # The service's message points at the Python API; say what to do on the command line.
        shown = ", ".join(repr(cid) for cid in e.contact_ids[:20])
        more = f" and {len(e.contact_ids) - 20} more" if len(e.contact_ids) > 20 else ""
        return _error(
            f"no contact {shown}{more} in account {e.account!r}: register it first "
            "(consentkit contacts add/import) or check the id and --account"
        )
    except ConsentError as e:
        return _error(str(e))
    except FileNotFoundError as e:
        return _error(f"{e.filename}: no such file")
    except IsADirectoryError as e:
        return _error(f"{e.filename}: is a directory")
    except PermissionError as e:
        return _error(f"{e.filename}: permission denied")
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _error(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return 130
