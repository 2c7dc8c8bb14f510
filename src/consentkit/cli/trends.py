"""``consentkit trends``: subscribed and unsubscribed totals per channel, and spikes."""

from __future__ import annotations

import argparse

from consentkit.cli import render
from consentkit.cli.args import add_format, instant
from consentkit.cli.context import DEFAULT_TIMEZONE, Context

__all__ = ["trends", "trends_arguments"]


def trends_arguments(parser: argparse.ArgumentParser) -> None:
    """The months, the instant and the time zone."""
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
    add_format(parser)


def trends(ctx: Context, args: argparse.Namespace) -> int:
    """The account's trend report, as a table or JSON."""
    as_of = None if args.as_of is None else instant("as_of", "--as-of", args.as_of)
    report = ctx.svc.trends(ctx.actor, as_of=as_of, months=args.months)
    if args.format == "json":
        ctx.print(render.document_text(report))
        return 0
    ctx.print(render.trends_heading(ctx.actor.account, report))
    ctx.print_lines([*render.trend_lines(report), "", *render.spike_lines(report)])
    return 0
