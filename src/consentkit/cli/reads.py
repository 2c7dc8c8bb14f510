"""``consentkit subscribers|status|history|export``: reads of the account and of one contact."""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from consentkit.cli import render
from consentkit.cli.args import add_format, add_paging, add_progress, add_topic
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.model import ConsentEvent, Source, SubscriptionState
from consentkit.serialization import EVENT_CSV_FIELDS, event_to_csv_row, event_to_json

__all__ = [
    "export",
    "export_arguments",
    "history",
    "history_arguments",
    "status",
    "status_arguments",
    "subscribers",
    "subscribers_arguments",
]


def subscribers_arguments(parser: argparse.ArgumentParser) -> None:
    """The channel, the state and the filters."""
    parser.add_argument("--channel", required=True, metavar="C", help="the channel")
    add_topic(parser, "list that declared topic's pairs on the channel (see --topics)")
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
    add_paging(parser)
    add_format(parser)


def subscribers(ctx: Context, args: argparse.Namespace) -> int:
    """One page of a channel's pairs in one state."""
    page = ctx.svc.list_subscriptions(
        ctx.actor,
        ctx.subject(args.channel, args.topic),
        SubscriptionState(args.state),
        source=args.source,
        reason=args.reason,
        cursor=args.cursor,
        limit=args.limit,
    )
    if args.format == "json":
        ctx.print(render.document_text(page))
        return 0
    ctx.print_lines(render.subscriptions_table(page.items))
    ctx.print_lines(render.next_page_lines(page.next_cursor))
    return 0


def status_arguments(parser: argparse.ArgumentParser) -> None:
    """The contact id and the format."""
    parser.add_argument("id", metavar="ID", help="the contact id")
    add_format(parser)


def status(ctx: Context, args: argparse.Namespace) -> int:
    """A contact's state and can-send on every known channel (and any other it has a record
    on)."""
    svc = ctx.svc
    contact = svc.get_contact(ctx.actor, args.id)
    recorded = {sub.channel: sub for sub in svc.subscriptions(ctx.actor, contact.id)}
    known = list(svc.channels.known.values())
    rows: list[render.StatusRow] = [
        # can_send is asked per channel, as a sender would right before sending.
        (ch, recorded.get(ch), svc.can_send(ctx.actor, contact.id, ch))
        for ch in known
    ]
    # A declared topic's pair answers by both layers; a record on a channel the service does
    # not know (written before unknown keys were refused) is shown, but nothing can be sent.
    rows += [
        (
            ch,
            recorded[ch],
            svc.can_send(ctx.actor, contact.id, ch)
            if ch.topic in svc.topics.by_key and ch.base.key in svc.channels.known
            else None,
        )
        for ch in sorted(set(recorded) - set(known))
    ]
    if args.format == "json":
        ctx.print(render.json_text(render.status_document(contact, rows)))
    else:
        ctx.print_lines(render.status_lines(contact, rows))
    return 0


def history_arguments(parser: argparse.ArgumentParser) -> None:
    """The contact id, an optional channel, paging and the format."""
    parser.add_argument("id", metavar="ID", help="the contact id")
    parser.add_argument("--channel", metavar="C", help="only this channel")
    add_topic(parser, "only that declared topic on --channel (see --topics)")
    add_paging(parser, default=100)
    add_format(parser)


def history(ctx: Context, args: argparse.Namespace) -> int:
    """One page of a contact's audit trail, oldest first."""
    if args.channel is None and args.topic is not None:
        raise ValidationError("--topic", "name the channel of the topic with --channel too")
    only = None if args.channel is None else ctx.subject(args.channel, args.topic)
    page = ctx.svc.history_page(
        ctx.actor, args.id, only, cursor=args.cursor, limit=args.limit
    )
    if args.format == "json":
        ctx.print(render.document_text(page))
        return 0
    ctx.print_lines(render.history_table(page.items))
    ctx.print_lines(render.next_page_lines(page.next_cursor))
    return 0


def export_arguments(parser: argparse.ArgumentParser) -> None:
    """The format, the output file and where to resume."""
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
    add_progress(parser)


def _write_events(ctx: Context, fmt: str, events: Iterable[ConsentEvent], out: TextIO) -> None:
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EVENT_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for event in events:
            writer.writerow(event_to_csv_row(ctx.converter, event))
    else:
        for event in events:
            out.write(event_to_json(ctx.converter, event) + "\n")


def _write_atomically(
    ctx: Context, fmt: str, events: Iterable[ConsentEvent], target: Path
) -> None:
    # A temporary file in the same directory, renamed at the end: an export that fails half-way
    # never leaves a truncated file that looks complete.
    fd, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".partial", dir=target.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            _write_events(ctx, fmt, events, out)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def export(ctx: Context, args: argparse.Namespace) -> int:
    """The account's audit log, streamed to stdout or a file."""
    events = ctx.svc.audit_log(ctx.actor, after=args.after)
    with ctx.progress("export", "events", force=args.progress) as progress:
        if args.output is None:
            _write_events(ctx, args.format, progress.track(events), ctx.out)
        else:
            _write_atomically(ctx, args.format, progress.track(events), args.output)
    if args.output is not None:
        ctx.print(f"exported {progress.count:,} events to {args.output}")
    return 0
