"""The command table (:data:`COMMANDS`) and the argument parser built from it.

Adding a command is local: write ``xxx_arguments(parser)`` and ``xxx(ctx, args) -> int`` in the
module of its group, then add one :class:`~consentkit.cli.context.Command` line here.  A name
with a space (``"contacts add"``) puts the command in a group.
"""

from __future__ import annotations

import argparse
from typing import Any

from consentkit import __version__
from consentkit.cli import (
    changes,
    confirm,
    contacts,
    demo,
    erase,
    feed,
    inbound,
    reads,
    records,
    review,
    topics,
    trends,
)
from consentkit.cli.args import add_global_options
from consentkit.cli.context import DEFAULT_READER, PROG, Command

__all__ = ["COMMANDS", "build_parser"]

COMMANDS: tuple[Command, ...] = (
    Command(
        "contacts add",
        "register a contact (or change its addresses)",
        contacts.contacts_add_arguments,
        contacts.contacts_add,
        access="write",
        creates_db=True,
    ),
    Command(
        "contacts import",
        "register contacts from a CSV file (id,phone,email), all or nothing",
        contacts.contacts_import_arguments,
        contacts.contacts_import,
        access="write",
        creates_db=True,
        description="Register contacts from a CSV file with a header row: id plus optional "
        "phone and email. An existing contact keeps every address the file leaves out (a "
        "missing column or an empty cell), unless --replace-addresses is given. Subscribed "
        "pairs whose contact loses the address of their channel are named in a warning.",
    ),
    Command(
        "contacts list",
        "list contacts by id, a page at a time",
        contacts.contacts_list_arguments,
        contacts.contacts_list,
        access="read",
    ),
    Command(
        "erase",
        "erase a contact for good, keeping its opt-outs as keyed hashes (admins only)",
        erase.erase_arguments,
        erase.erase,
        access="write",
        description="Erase a contact (GDPR Art. 17): its subscribed pairs are unsubscribed, "
        "its addresses are kept only as keyed hashes that still block them, its contact record, "
        "address history, inbound messages and review items are deleted, and its consent "
        "history is kept under a pseudonym without free text. The key comes from "
        "CONSENTKIT_ERASURE_KEY_FILE or CONSENTKIT_ERASURE_KEY, never from the command line; "
        "give every command the same key. See docs/privacy.md.",
    ),
    Command(
        "erasures",
        "list the account's erasures: when, by whom, why, under which pseudonym",
        erase.erasures_arguments,
        erase.erasures,
        access="read",
    ),
    Command(
        "subscribers",
        "list the contacts of one channel in one state (e.g. everyone unsubscribed from sms)",
        reads.subscribers_arguments,
        reads.subscribers,
        access="read",
    ),
    Command(
        "opt-in",
        "record that contacts agreed to receive messages (never subscribed -> subscribed)",
        changes.opt_in_arguments,
        changes.opt_in,
        access="write",
        description="Record opt-ins with evidence. Unsubscribed contacts are skipped and "
        "reported: an opt-in never resubscribes (use resubscribe).",
    ),
    Command(
        "unsubscribe",
        "unsubscribe contacts from channels, all or nothing (members are refused)",
        changes.unsubscribe_arguments,
        changes.unsubscribe,
        access="write",
    ),
    Command(
        "resubscribe",
        "resubscribe unsubscribed contacts (admins only, with a reason and a note)",
        changes.resubscribe_arguments,
        changes.resubscribe,
        access="write",
    ),
    Command(
        "toggle",
        "the inbox toggle: turn one contact's consent on one channel on or off",
        changes.toggle_arguments,
        changes.toggle,
        access="write",
        description="Set one pair on or off, as the inbox toggle of a host app does. Turning "
        "it on is an opt-in (give the evidence options) for a never-subscribed pair and a "
        "resubscription (give --reason and --note) for an unsubscribed one. With "
        "--expected-version N the change is refused (exit code 1) unless the pair is still at "
        "version N; the pair's version after the change is printed, ready for the next "
        "--expected-version.",
    ),
    Command(
        "status",
        "a contact's state and can-send on every channel",
        reads.status_arguments,
        reads.status,
        access="read",
    ),
    Command(
        "history",
        "the audit trail of one contact, oldest first, a page at a time",
        reads.history_arguments,
        reads.history,
        access="read",
    ),
    Command(
        "export",
        "export the account's audit log (JSON Lines or CSV), streamed",
        reads.export_arguments,
        reads.export,
        access="read",
    ),
    Command(
        "signup request",
        "record a sign-up pending the contact's confirmation (double opt-in)",
        confirm.request_arguments,
        confirm.request,
        access="write",
        description="Record a sign-up that waits for the contact's confirmation: the pair does "
        "not change and is not sendable (except for the confirmation request, which you send). "
        "Prints the request's id; see docs/double-opt-in.md.",
    ),
    Command(
        "signup confirm",
        "complete a pending sign-up on the contact's confirmation",
        confirm.confirm_arguments,
        confirm.confirm,
        access="write",
    ),
    Command(
        "signup list",
        "list a contact's sign-up requests (every status)",
        confirm.pending_arguments,
        confirm.pending,
        access="read",
    ),
    Command(
        "export-contact",
        "everything recorded about one contact, as one JSON document (GDPR access/portability)",
        records.export_contact_arguments,
        records.export_contact,
        access="read",
    ),
    Command(
        "purge",
        "delete expired message records (inbound results, decided reviews, sends), in batches",
        records.purge_arguments,
        records.purge,
        access="write",
        description="Delete what has expired of the account's message records, a bounded "
        "batch per transaction, safe to run from cron. Each --keep-* option sets how long one "
        "kind is kept (unset: forever). Consent (pairs, events, suppressions) is never purged. "
        "See docs/retention.md.",
    ),
    Command(
        "feed",
        "the account's change feed as JSON Lines, resumable, optionally following new events",
        feed.feed_arguments,
        feed.feed,
        access="read",
        description="Write the account's consent events after a cursor as JSON Lines (one "
        "ConsentEvent document per line), a page at a time, in the order they committed. "
        "With --cursor-file the cursor is read at start and stored (atomically) after each "
        "page is written and flushed, so a run stopped anywhere resumes without skipping an "
        "event (an event may be written again). --follow keeps polling every --interval "
        "seconds until interrupted. See docs/feed.md for the delivery contract.",
    ),
    Command(
        "inbound",
        "handle one inbound reply (STOP, START, HELP...) as the provider's webhook would",
        inbound.inbound_arguments,
        inbound.inbound,
        access="contact",
        description="Feed one inbound message through the account's keyword rules, e.g. to "
        "replay a provider's log: STOP unsubscribes the sender's contacts from the channel's "
        "group, START undoes the sender's own opt-out, HELP changes nothing; the reply to send "
        "and the opt-out deadline are printed. A possible opt-out (\"please stop texting me\") "
        "is queued for review (consentkit review list). The change is recorded as the sender's "
        "own act (actor contact:ID, source inbound_keyword), so --as is not taken. A message "
        "id that was handled before on the channel changes nothing and prints the stored "
        "result.",
    ),
    Command(
        "review list",
        "list the possible opt-outs waiting for a decision, oldest first",
        review.review_list_arguments,
        review.review_list,
        access="read",
        description="The account's review queue, oldest first: each possible opt-out with "
        "its id, when it was received, channel, sender, contacts, honour-by deadline and text. "
        "Open items past their deadline are marked OVERDUE. --all adds decided items with "
        "the decision, who made it, when and the note.",
    ),
    Command(
        "review resolve",
        "decide a review item: --opt-out or --not-opt-out, with a note (admins only)",
        review.review_resolve_arguments,
        review.review_resolve,
        access="write",
        description="Decide one review item. --opt-out applies the message as the contact's "
        "own opt-out, dated when it was received; --not-opt-out changes nothing. Both record "
        "who decided, when, and the note.",
    ),
    Command(
        "trends",
        "subscribed and unsubscribed totals per channel vs a month earlier, and spikes",
        trends.trends_arguments,
        trends.trends,
        access="read",
        description="Subscriber trends of the account: per channel, subscribed and "
        "unsubscribed totals now and one calendar month earlier with the change and "
        "percentage, a sparkline of each monthly series, and the unsubscribe spikes flagged "
        "against the account's own recent history.",
    ),
    Command(
        "topics",
        "list the declared topics (--topics FILE), their class and default, and what survives",
        topics.topics_arguments,
        topics.topics,
        access="standalone",
    ),
    Command(
        "demo",
        "a guided tour of every capability on a fresh database",
        demo.demo_arguments,
        demo.demo,
        access="standalone",
    ),
)
"""Every subcommand, in the order ``--help`` lists them."""

_GROUP_HELP = {
    "contacts": "register and list contacts (add, import, list)",
    "review": "the review queue of possible opt-outs (list, resolve)",
}

_EPILOG = f"""\
who acts:
  --as KIND:ID names the acting user: admin:alice, member:bob or system:importer.
  Commands that change data require it; read-only commands default to {DEFAULT_READER}.
  The account's policy applies as in any host app: only admins unsubscribe and resubscribe.
  inbound takes no --as: a reply is the contact's own act and is recorded as theirs.

channels:
  sms, mms, rcs, whatsapp, email, voice and push are built in; any other key is refused
  unless registered with --custom-channel KEY (or CONSENTKIT_CUSTOM_CHANNELS=KEY,...).

output:
  --format json prints the public JSON document of the result on stdout (docs/json.md),
  for the commands that change data too; errors and warnings stay on stderr.

exit codes:
  0 success, 1 refused or invalid input (one line on stderr), 2 usage error.

examples:
  consentkit demo
  consentkit --as admin:alice contacts add ana --phone +14155550100 --email ana@example.com
  consentkit --as admin:alice unsubscribe ana ben --channel sms,whatsapp
  consentkit --as admin:alice toggle ana sms off --expected-version 1 --format json
  consentkit subscribers --channel sms --state unsubscribed
  consentkit inbound --channel sms --from +14155550100 --message-id SM123 STOP
  consentkit review list
  consentkit trends --months 6 --timezone America/New_York
  consentkit export --format csv --output audit.csv
  consentkit feed --cursor-file feed.cursor --follow
"""


def _leaf_container(top: Any, groups: dict[str, Any], group_words: list[str]) -> Any:
    """The subparsers action that holds a command named by *group_words* plus its leaf word."""
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
    return container


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Per-channel contact consent: look at and change it from the command line.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version"
    )
    add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common, suppress=True)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, Any] = {}
    for command in COMMANDS:
        *group_words, leaf = command.name.split()
        sub = _leaf_container(top, groups, group_words).add_parser(
            leaf,
            help=command.help,
            description=command.description or command.help,
            parents=[] if command.access == "standalone" else [common],
        )
        command.arguments(sub)
        sub.set_defaults(command_spec=command, parser=sub)
    return parser
