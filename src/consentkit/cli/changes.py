"""``consentkit opt-in|unsubscribe|resubscribe|toggle``: consent changes of many contacts at once,
and the inbox toggle of one pair."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable

from consentkit.channels import Channel
from consentkit.cli import render
from consentkit.cli.args import (
    add_channels,
    add_format,
    add_ids,
    add_progress,
    add_source,
    add_topic,
    channels_of,
    ids_of,
)
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.model import Evidence, Justification, ResubscribeReason
from consentkit.service import ChangeResult

__all__ = [
    "opt_in",
    "opt_in_arguments",
    "resubscribe",
    "resubscribe_arguments",
    "toggle",
    "toggle_arguments",
    "unsubscribe",
    "unsubscribe_arguments",
]

Apply = Callable[[Iterable[str], list[Channel], bool], ChangeResult]
"""One bulk change: the ids, the channels, and whether to collect per-pair details."""


def _bulk_arguments(parser: argparse.ArgumentParser) -> None:
    add_ids(parser)
    add_channels(parser)
    add_progress(parser)
    add_format(parser)


def _bulk_change(ctx: Context, args: argparse.Namespace, label: str, apply: Apply) -> int:
    # Every channel is checked before any id is read or anything is written.
    channels = channels_of(ctx, args)
    ids = ids_of(args)
    if ids.from_file:
        # Per-pair details would grow with the file; the counts are enough for a bulk run.
        with ctx.progress(label, "ids read", force=args.progress) as progress:
            if progress.enabled:
                progress.total = ids.count()
            result = apply(progress.track(ids.items), channels, False)
    else:
        result = apply(ids.items, channels, True)
    if args.format == "json":
        ctx.print(render.document_text(result))
    else:
        ctx.print_lines(render.change_lines(label, result, channels))
    return 0


def opt_in_arguments(parser: argparse.ArgumentParser) -> None:
    """Ids, channels, the evidence of consent and the source."""
    _bulk_arguments(parser)
    evidence_arguments(parser)
    add_source(parser)


def evidence_arguments(parser: argparse.ArgumentParser) -> None:
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


def evidence_of(args: argparse.Namespace) -> Evidence | None:
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


def opt_in(ctx: Context, args: argparse.Namespace) -> int:
    """Record opt-ins with evidence; unsubscribed pairs are skipped and reported."""
    evidence = evidence_of(args)
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


def unsubscribe_arguments(parser: argparse.ArgumentParser) -> None:
    """Ids, channels, a reason code and the source."""
    _bulk_arguments(parser)
    parser.add_argument(
        "--reason", metavar="CODE", help="a reason code kept with the change, e.g. customer_request"
    )
    add_source(parser)


def unsubscribe(ctx: Context, args: argparse.Namespace) -> int:
    """Unsubscribe contacts from channels, all or nothing."""
    return _bulk_change(
        ctx,
        args,
        "unsubscribe",
        lambda ids, channels, details: ctx.svc.unsubscribe(
            ctx.actor, ids, channels, source=args.source, reason=args.reason, details=details
        ),
    )


def resubscribe_arguments(parser: argparse.ArgumentParser) -> None:
    """Ids, channels, the justification (reason and note) and the source."""
    _bulk_arguments(parser)
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
    add_source(parser)


def resubscribe(ctx: Context, args: argparse.Namespace) -> int:
    """Resubscribe unsubscribed contacts with a justification."""
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


def toggle_arguments(parser: argparse.ArgumentParser) -> None:
    """The pair, on or off, the version seen, the justification or evidence and the source."""
    parser.add_argument("contact", metavar="CONTACT", help="the contact id")
    parser.add_argument("channel", metavar="CHANNEL", help="the channel, e.g. sms")
    add_topic(parser, "the pair is that declared topic on the channel (see --topics)")
    parser.add_argument(
        "state",
        choices=["on", "off"],
        help="on: subscribe (an opt-in for a never-subscribed pair, which needs the evidence "
        "options; a resubscription for an unsubscribed one, which needs --reason and --note); "
        "off: unsubscribe",
    )
    parser.add_argument(
        "--expected-version",
        type=int,
        metavar="N",
        help="the version of the subscription you were looking at (status/subscribers --format "
        "json show it; 0 when there is no record): the change is refused with exit code 1 if "
        "someone changed the pair meanwhile. The new version is printed",
    )
    why = parser.add_argument_group(
        "justification", "why an unsubscribed pair is turned back on (admins only)"
    )
    why.add_argument(
        "--reason",
        choices=[r.value for r in ResubscribeReason],
        help="the contact asked to be resubscribed, or was unsubscribed by mistake",
    )
    why.add_argument("--note", metavar="TEXT", help="what happened (kept in the audit trail)")
    evidence_arguments(parser)
    add_source(parser)
    add_format(parser)


def _justification_of(args: argparse.Namespace) -> Justification | None:
    if args.reason is None and args.note is None:
        return None  # the policy decides whether this change needs one
    if args.reason is None or args.note is None:
        raise ValidationError("justification", "give --reason and --note together")
    return Justification(args.reason, args.note)


def toggle(ctx: Context, args: argparse.Namespace) -> int:
    """Set one pair on or off, refusing it when ``--expected-version`` is stale."""
    ch = ctx.subject(args.channel, args.topic)
    result = ctx.svc.set_subscribed(
        ctx.actor,
        args.contact,
        ch,
        args.state == "on",
        justification=_justification_of(args),
        evidence=evidence_of(args),
        source=args.source,
        expected_version=args.expected_version,
    )
    if args.format == "json":
        ctx.print(render.document_text(result))
    else:
        ctx.print_lines(render.toggle_lines(result, args.contact, ch))
    return 0
