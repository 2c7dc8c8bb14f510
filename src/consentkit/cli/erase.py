"""``consentkit erase`` and ``consentkit erasures``: erase a contact, keeping its opt-outs, and
list the audit records of erasures (docs/privacy.md).

The erasure key is never given on the command line (it would show in the process list and the
shell history): every command reads it from ``CONSENTKIT_ERASURE_KEY_FILE`` (a file holding it)
or ``CONSENTKIT_ERASURE_KEY``, so imports recognise erased addresses too.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consentkit.cli import render
from consentkit.cli.args import add_format
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.model import Source
from consentkit.service import ErasureResult

__all__ = [
    "KEY_FILE_VARIABLE",
    "KEY_VARIABLE",
    "erase",
    "erase_arguments",
    "erasure_key_of",
    "erasures",
    "erasures_arguments",
]

KEY_VARIABLE = "CONSENTKIT_ERASURE_KEY"
KEY_FILE_VARIABLE = "CONSENTKIT_ERASURE_KEY_FILE"


def erasure_key_of(environ: Mapping[str, str]) -> bytes | None:
    """The erasure key: the contents of the file ``CONSENTKIT_ERASURE_KEY_FILE`` names (a final
    newline dropped), else the UTF-8 bytes of ``CONSENTKIT_ERASURE_KEY``, else None.

    Raises:
        ValidationError: the file cannot be read.
    """
    path = environ.get(KEY_FILE_VARIABLE)
    if path:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ValidationError(
                KEY_FILE_VARIABLE, f"cannot read the erasure key file {path!r}: {error.strerror}"
            ) from None
        return data.removesuffix(b"\n").removesuffix(b"\r")
    value = environ.get(KEY_VARIABLE)
    return value.encode() if value else None


def erase_arguments(parser: argparse.ArgumentParser) -> None:
    """The contact and the reason."""
    parser.add_argument("contact_id", metavar="CONTACT_ID", help="the contact to erase")
    parser.add_argument(
        "--reason",
        required=True,
        help="why (kept in the erasure's audit record: no personal data, e.g. a ticket number)",
    )
    add_format(parser)


def _document(result: ErasureResult) -> dict[str, Any]:
    return {
        "pseudonym": result.pseudonym,
        "erased_at": result.erased_at.isoformat(),
        "unsubscribed": [[cid, ch.key] for cid, ch in result.unsubscribed],
        "suppressions": result.suppressions,
    }


def erase(ctx: Context, args: argparse.Namespace) -> int:
    """Erase one contact (the service's key from the environment)."""
    result = ctx.svc.erase_contact(
        ctx.actor, args.contact_id, reason=args.reason, source=Source.CLI
    )
    if args.format == "json":
        ctx.print(render.json_text(_document(result)))
        return 0
    channels = ", ".join(sorted(ch.key for _, ch in result.unsubscribed)) or "none"
    ctx.print_lines(
        [
            f"erased {args.contact_id} at {render.when(result.erased_at)}; its records are kept "
            f"as {result.pseudonym}",
            f"unsubscribed: {channels}",
            f"suppressed addresses (keyed hashes, address x channel): {result.suppressions}",
        ]
    )
    return 0


def erasures_arguments(parser: argparse.ArgumentParser) -> None:
    """Only the output format."""
    add_format(parser)


def erasures(ctx: Context, args: argparse.Namespace) -> int:
    """List the account's erasure records, oldest first."""
    records = ctx.svc.erasures(ctx.actor)
    if args.format == "json":
        ctx.print(
            render.json_text(
                [
                    {
                        "pseudonym": r.pseudonym,
                        "erased_at": r.erased_at.isoformat(),
                        "actor": str(r.actor),
                        "reason": r.reason,
                    }
                    for r in records
                ]
            )
        )
        return 0
    if not records:
        ctx.print("no erasures")
        return 0
    ctx.print_lines(
        render.table_lines(
            ("erased at", "pseudonym", "by", "reason"),
            [
                (render.when(r.erased_at), r.pseudonym, str(r.actor), render.cut(r.reason))
                for r in records
            ],
        )
    )
    return 0
