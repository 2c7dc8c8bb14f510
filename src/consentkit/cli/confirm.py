"""``consentkit signup request|confirm|list``: double opt-in (docs/double-opt-in.md)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from consentkit.cli import render
from consentkit.cli.args import add_format, add_topic
from consentkit.cli.changes import evidence_arguments, evidence_of
from consentkit.cli.context import Context
from consentkit.confirmation import PendingOptIn
from consentkit.errors import ValidationError

__all__ = [
    "confirm",
    "confirm_arguments",
    "pending",
    "pending_arguments",
    "request",
    "request_arguments",
]


def _hours(text: str) -> timedelta:
    try:
        return timedelta(hours=float(text))
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a number of hours, got {text!r}") from None


def _document(request: PendingOptIn) -> dict[str, object]:
    return {
        "id": request.id,
        "contact_id": request.contact_id,
        "channel": request.channel.key,
        "status": request.status.value,
        "request_wording": request.request_wording,
        "requested_at": request.requested_at.isoformat(),
        "expires_at": request.expires_at.isoformat(),
        "closed_at": None if request.closed_at is None else request.closed_at.isoformat(),
    }


def request_arguments(parser: argparse.ArgumentParser) -> None:
    """The contact, the channel, the sign-up's evidence and the confirmation request."""
    parser.add_argument("contact_id", metavar="CONTACT_ID", help="who signed up")
    parser.add_argument("--channel", required=True, metavar="C", help="the channel")
    add_topic(parser, "sign up to that declared topic on the channel (see --topics)")
    parser.add_argument(
        "--request-wording",
        required=True,
        metavar="TEXT",
        help="the confirmation request sent to the contact (e.g. 'Reply YES to confirm')",
    )
    parser.add_argument(
        "--expires-after",
        type=_hours,
        default=timedelta(hours=48),
        metavar="HOURS",
        help="how long a confirmation is accepted (default 48)",
    )
    evidence_arguments(parser)
    add_format(parser)


def request(ctx: Context, args: argparse.Namespace) -> int:
    """Record a pending sign-up and print its id (give it to ``signup confirm``)."""
    evidence = evidence_of(args)
    if evidence is None:
        raise ValidationError(
            "evidence", "a sign-up needs --evidence-method, --wording and --wording-version"
        )
    pending_request = ctx.svc.request_opt_in(
        ctx.actor,
        args.contact_id,
        args.channel,
        evidence=evidence,
        request_wording=args.request_wording,
        topic=args.topic,
        expires_after=args.expires_after,
    )
    if args.format == "json":
        ctx.print(render.json_text(_document(pending_request)))
    else:
        ctx.print(
            f"pending {pending_request.id}: {args.contact_id} on "
            f"{pending_request.channel.key} until {pending_request.expires_at.isoformat()}"
        )
    return 0


def confirm_arguments(parser: argparse.ArgumentParser) -> None:
    """The request and how the contact confirmed."""
    parser.add_argument("request_id", metavar="REQUEST_ID", help="the pending request's id")
    parser.add_argument(
        "--method",
        choices=["reply", "link", "api"],
        default="api",
        help="how the contact confirmed (default api)",
    )
    add_format(parser)


def confirm(ctx: Context, args: argparse.Namespace) -> int:
    """Complete a pending sign-up on the contact's confirmation."""
    result = ctx.svc.confirm_opt_in(ctx.actor, args.request_id, method=args.method)
    if args.format == "json":
        ctx.print(render.document_text(result))
    else:
        ctx.print(f"confirmed {args.request_id}: {result.changed_count} pair subscribed")
    return 0


def pending_arguments(parser: argparse.ArgumentParser) -> None:
    """The contact."""
    parser.add_argument("contact_id", metavar="CONTACT_ID", help="the contact")
    add_format(parser)


def pending(ctx: Context, args: argparse.Namespace) -> int:
    """A contact's sign-up requests, oldest first."""
    found = ctx.svc.pending_opt_ins(ctx.actor, args.contact_id)
    if args.format == "json":
        ctx.print(render.json_text([_document(p) for p in found]))
        return 0
    if not found:
        ctx.print(f"no sign-up requests for {args.contact_id}")
    for p in found:
        ctx.print(f"{p.id}  {p.channel.key}  {p.status.value}  until {p.expires_at.isoformat()}")
    return 0
