"""``consentkit purge|export-contact``: what is kept about messages and contacts
(docs/retention.md)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from consentkit.cli import render
from consentkit.cli.args import add_format, instant
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.retention import PurgeKind, RetentionSettings

__all__ = [
    "export_contact",
    "export_contact_arguments",
    "purge",
    "purge_arguments",
]

# Option -> RetentionSettings field.
_KEEP = {
    "keep_inbound": "inbound_results",
    "keep_non_contact": "non_contact_inbound",
    "keep_review": "review_texts",
    "keep_sent": "sent_messages",
    "keep_departures": "address_departures",
}


def _days(text: str) -> timedelta:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not 0 < days <= 36_500:
        raise argparse.ArgumentTypeError(f"expected 0 < days <= 36500, got {text!r}")
    return timedelta(days=days)


def purge_arguments(parser: argparse.ArgumentParser) -> None:
    """How long each kind is kept, and the batch bounds."""
    for option, what in (
        ("--keep-inbound", "results of inbound messages (at least 1)"),
        ("--keep-non-contact", "results of messages from senders who were no contact (>= 1)"),
        ("--keep-review", "decided review items and their texts"),
        ("--keep-sent", "records of sent messages"),
        ("--keep-departures", "records of addresses leaving contacts"),
    ):
        parser.add_argument(
            option, type=_days, metavar="DAYS", help=f"days to keep {what}; unset: forever"
        )
    parser.add_argument(
        "--as-of",
        metavar="TIME",
        help="count expiry to this instant, ISO 8601 with a UTC offset (default: now)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, metavar="N", help="records per transaction"
    )
    parser.add_argument(
        "--max-batches",
        type=int,
        metavar="N",
        help="stop after N transactions (run again to go on); default: until done",
    )
    add_format(parser)


def purge(ctx: Context, args: argparse.Namespace) -> int:
    """Delete the expired records of the account, in bounded batches."""
    retention = RetentionSettings(
        **{field: getattr(args, option) for option, field in _KEEP.items()}
    )
    result = ctx.svc.purge(
        ctx.actor,
        now=None if args.as_of is None else instant("as_of", "--as-of", args.as_of),
        retention=retention,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
    )
    if args.format == "json":
        ctx.print(
            render.json_text(
                {
                    "account": result.account,
                    "deleted": {kind.value: n for kind, n in result.deleted.items()},
                    "kept_forever": [kind.value for kind in result.kept_forever],
                    "complete": result.complete,
                }
            )
        )
        return 0
    if not result.deleted:
        ctx.print("nothing to purge: every kind is kept forever (give --keep-* periods)")
        return 0
    for kind in PurgeKind:
        if kind in result.deleted:
            ctx.print(f"{kind.value}: deleted {result.deleted[kind]:,}")
    if not result.complete:
        ctx.print(f"stopped after --max-batches {args.max_batches}: run again to go on")
    return 0


def export_contact_arguments(parser: argparse.ArgumentParser) -> None:
    """The contact."""
    parser.add_argument("contact_id", metavar="CONTACT_ID", help="the contact to export")
    parser.add_argument(
        "--format",
        choices=["json"],
        default="json",
        help="json, the export document of docs/retention.md (the only format)",
    )


def export_contact(ctx: Context, args: argparse.Namespace) -> int:
    """Everything recorded about one contact, as one JSON document on stdout."""
    if not args.contact_id.strip():
        raise ValidationError("contact_id", "must not be empty")
    ctx.print(render.json_text(ctx.svc.export_contact(ctx.actor, args.contact_id)))
    return 0
