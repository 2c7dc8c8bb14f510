"""``consentkit review list|resolve``: the queue of possible opt-outs a person must decide."""

from __future__ import annotations

import argparse

from consentkit.cli import render
from consentkit.cli.args import add_format, add_paging
from consentkit.cli.context import Context
from consentkit.review import ReviewDecision

__all__ = [
    "review_list",
    "review_list_arguments",
    "review_resolve",
    "review_resolve_arguments",
]


def review_list_arguments(parser: argparse.ArgumentParser) -> None:
    """``--all``, paging and format."""
    parser.add_argument(
        "--all",
        dest="include_decided",
        action="store_true",
        help="also list decided items, with the decision, who made it, when and the note",
    )
    add_paging(parser)
    add_format(parser)


def review_list(ctx: Context, args: argparse.Namespace) -> int:
    """One page of the review queue, oldest first; overdue items stand out."""
    page = ctx.svc.review_items(
        ctx.actor, include_decided=args.include_decided, cursor=args.cursor, limit=args.limit
    )
    if args.format == "json":
        ctx.print(render.document_text(page))
        return 0
    now = ctx.clock.now()
    ctx.print_lines(render.review_lines(page.items, now, decided=args.include_decided))
    ctx.print_lines(render.next_page_lines(page.next_cursor))
    return 0


def review_resolve_arguments(parser: argparse.ArgumentParser) -> None:
    """The item, the decision and the note."""
    parser.add_argument(
        "item_id", metavar="ITEM_ID", help="the item's id, as review list prints it (sms:SM123)"
    )
    decision = parser.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--opt-out",
        dest="decision",
        action="store_const",
        const=ReviewDecision.OPT_OUT,
        help="it is an opt-out: the sender's contacts are unsubscribed as their own request, "
        "dated when the message was received",
    )
    decision.add_argument(
        "--not-opt-out",
        dest="decision",
        action="store_const",
        const=ReviewDecision.NOT_OPT_OUT,
        help="it is not an opt-out: nothing changes",
    )
    parser.add_argument(
        "--note",
        required=True,
        metavar="TEXT",
        help="why you decided so (kept with the decision)",
    )
    add_format(parser)


def review_resolve(ctx: Context, args: argparse.Namespace) -> int:
    """Record a decision on one item and print what it changed."""
    resolution = ctx.svc.decide_review(ctx.actor, args.item_id, args.decision, note=args.note)
    if args.format == "json":
        ctx.print(render.document_text(resolution))
    else:
        ctx.print_lines(render.resolution_lines(resolution))
    return 0
