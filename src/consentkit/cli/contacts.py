"""``consentkit contacts add|import|list``: register contacts and list them."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterator
from pathlib import Path

from consentkit.channels import Channel
from consentkit.cli import render
from consentkit.cli.args import add_format, add_paging, add_progress
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.model import Contact
from consentkit.service import ContactsResult

__all__ = [
    "contacts_add",
    "contacts_add_arguments",
    "contacts_import",
    "contacts_import_arguments",
    "contacts_list",
    "contacts_list_arguments",
]

_IMPORT_COLUMNS = ("id", "phone", "email")


def _add_replace_addresses(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--replace-addresses",
        action="store_true",
        help=f"make an existing contact's addresses exactly {what}: an address left out is "
        "removed. Without it, only the addresses given change and the others are kept",
    )


def contacts_add_arguments(parser: argparse.ArgumentParser) -> None:
    """The contact id and its addresses."""
    parser.add_argument("id", metavar="ID", help="the contact id (unique in the account)")
    parser.add_argument("--phone", help="E.164 phone number, e.g. +14155550100")
    parser.add_argument("--email", help="email address")
    parser.add_argument(
        "--handle",
        dest="handles",
        action="append",
        default=[],
        metavar="CHANNEL=VALUE",
        help="an address on a handle channel (push, or a --custom-channel such as "
        "telegram=42); repeatable",
    )
    _add_replace_addresses(parser, "the ones given")
    add_format(parser)


def _handles_of(ctx: Context, items: list[str]) -> dict[Channel, str]:
    handles: dict[Channel, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError("--handle", f"{item!r} is not CHANNEL=VALUE, e.g. push=token123")
        handles[ctx.channel(key.strip(), "--handle")] = value
    return handles


def _report_contacts(
    ctx: Context, args: argparse.Namespace, result: ContactsResult, done: str
) -> None:
    if args.format == "json":
        ctx.print(render.document_text(result))
    else:
        ctx.print_lines([done, *render.suppressed_lines(result)])
    unreachable = render.unreachable_lines(result)
    if unreachable:
        ctx.warn(unreachable)


def contacts_add(ctx: Context, args: argparse.Namespace) -> int:
    """Register one contact or update its addresses."""
    contact = Contact(
        ctx.actor.account,
        args.id,
        phone=args.phone,
        email=args.email,
        handles=_handles_of(ctx, args.handles),
    )
    result = ctx.svc.upsert_contacts(
        ctx.actor, [contact], replace_addresses=args.replace_addresses
    )
    if result.created:
        done = f"created contact {contact.id}"
    elif args.replace_addresses:
        done = f"updated contact {contact.id} (its addresses were replaced)"
    else:
        done = f"updated contact {contact.id} (the addresses given were set, the others kept)"
    _report_contacts(ctx, args, result, done)
    return 0


def contacts_import_arguments(parser: argparse.ArgumentParser) -> None:
    """The CSV file."""
    parser.add_argument(
        "file", type=Path, metavar="FILE.csv", help="CSV with a header row: id,phone,email"
    )
    _add_replace_addresses(parser, "the file's (a column or cell left out removes that address)")
    add_progress(parser)
    add_format(parser)


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
                    # An empty cell or a missing column is None: the address is kept, unless
                    # --replace-addresses says the file is the whole truth.
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


def _count_rows(path: Path) -> int | None:
    """The number of data rows of a CSV file (the total of the progress line), or None when it
    is not a regular file (reading a pipe would consume it) or cannot be parsed: the import
    itself then reports the problem."""
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return max(0, sum(1 for row in csv.reader(handle) if row) - 1)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def contacts_import(ctx: Context, args: argparse.Namespace) -> int:
    """Register or update every contact of a CSV file, all or nothing."""
    with ctx.progress("import", "rows", force=args.progress) as progress:
        if progress.enabled:
            progress.total = _count_rows(args.file)
        result = ctx.svc.upsert_contacts(
            ctx.actor,
            progress.track(_read_contacts_csv(args.file, ctx.actor.account)),
            replace_addresses=args.replace_addresses,
        )
    done = (
        f"imported {result.created + result.updated:,} contacts: {result.created:,} created, "
        f"{result.updated:,} updated"
    )
    _report_contacts(ctx, args, result, done)
    return 0


def contacts_list_arguments(parser: argparse.ArgumentParser) -> None:
    """Paging and format."""
    add_paging(parser)
    add_format(parser)


def contacts_list(ctx: Context, args: argparse.Namespace) -> int:
    """One page of the account's contacts, by id."""
    page = ctx.svc.list_contacts(ctx.actor, cursor=args.cursor, limit=args.limit)
    if args.format == "json":
        ctx.print(render.document_text(page))
        return 0
    ctx.print_lines(render.contacts_table(page.items))
    ctx.print_lines(render.next_page_lines(page.next_cursor))
    return 0
