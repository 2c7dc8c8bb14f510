"""``consentkit inbound``: handle one inbound reply as the provider's webhook would."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consentkit.cli import render
from consentkit.cli.args import add_format, instant
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.inbound import InboundMessage

__all__ = ["inbound", "inbound_arguments"]


def inbound_arguments(parser: argparse.ArgumentParser) -> None:
    """The channel, sender, message id, received time and body."""
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
        "channel and id is recognised and changes nothing",
    )
    parser.add_argument(
        "--topic",
        metavar="KEY",
        help="the topic of the message the contact answered (the 'topic' opt-out scope)",
    )
    parser.add_argument(
        "--to",
        dest="recipient",
        metavar="ADDRESS",
        help="the number or address the reply was sent to (the 'sender' opt-out scope)",
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
    add_format(parser)


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


def inbound(ctx: Context, args: argparse.Namespace) -> int:
    """Feed one message through the account's keyword rules and print what it did."""
    ch = ctx.channel(args.channel)
    if args.topic is not None:
        ctx.subject(args.channel, args.topic, "--topic")  # a typo'd topic is refused here
    received = (
        ctx.clock.now()
        if args.received_at is None
        else instant("received_at", "--received-at", args.received_at)
    )
    body: str = args.body if args.body_file is None else _read_body(args.body_file)
    message = InboundMessage(
        account=ctx.actor.account,
        channel=ch,
        sender=args.sender,
        body=body,
        message_id=args.message_id,
        received_at=received,
        topic=args.topic,
        recipient=args.recipient,
    )
    result = ctx.svc.handle_inbound(message)
    if args.format == "json":
        ctx.print(render.document_text(result))
    else:
        ctx.print_lines(render.inbound_lines(result))
    return 0
