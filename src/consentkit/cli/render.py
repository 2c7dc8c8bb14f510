"""Everything the command line prints: text tables and lines for people, JSON documents for
programs (the public documents of :mod:`consentkit.documents`).  Functions here build text and
documents and print nothing; they import no other module of the CLI, so the demo shares them
without importing the command line.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from consentkit.documents import to_document
from consentkit.inbound import InboundOutcome, InboundResult
from consentkit.model import ConsentEvent, Contact, Subscription, SubscriptionState
from consentkit.review import ReviewDecision
from consentkit.trends import Change, SpikeWindow, TrendReport, sparkline

if TYPE_CHECKING:
    from consentkit.channels import Channel
    from consentkit.review import ReviewItem
    from consentkit.service import ChangeResult, ContactsResult, PairRef, ReviewResolution

__all__ = [
    "MAX_PAIRS_SHOWN",
    "MAX_TEXT_SHOWN",
    "StatusRow",
    "change_lines",
    "contacts_table",
    "cut",
    "document_text",
    "escape",
    "event_details",
    "history_table",
    "inbound_lines",
    "json_text",
    "next_page_lines",
    "one_line",
    "resolution_lines",
    "review_lines",
    "spike_lines",
    "status_document",
    "status_lines",
    "subscriptions_table",
    "suppressed_lines",
    "table_lines",
    "toggle_lines",
    "trend_lines",
    "trends_heading",
    "unreachable_lines",
    "when",
]

MAX_PAIRS_SHOWN = 100
"""Long listings of pairs are cut here: the counts on the summary line are always complete."""
MAX_TEXT_SHOWN = 60
"""Free text (a message, a note) is cut to this many characters in a table."""

StatusRow = tuple["Channel", Subscription | None, bool | None]
"""One channel of ``status``: the channel, its subscription if any, and can-send (None when the
service does not know the channel, e.g. one recorded before unknown keys were refused)."""


# ---------------------------------------------------------------------- building blocks


def one_line(message: str) -> str:
    """*message* with every run of whitespace (newlines too) folded into one space."""
    return " ".join(message.split())


def escape(text: str) -> str:
    """*text* with control, format and line-separator characters written as escapes (``\\n``,
    ``\\x1b``, ``\\u200b``), so a message cannot break or recolour a terminal line."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")
        else ch
        for ch in text
    )


def cut(text: str, width: int = MAX_TEXT_SHOWN) -> str:
    """*text* escaped and cut to *width* characters, an ellipsis marking a cut."""
    shown = escape(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def table_lines(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Collection[int] = ()
) -> list[str]:
    """Aligned columns; the columns numbered in *right* (figures) are right-aligned."""
    materialised = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in materialised) for i in range(len(headers))]
    lines = []
    for row in materialised:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def json_text(document: Any) -> str:
    """A JSON document as the CLI prints it: indented, keys sorted, non-ASCII kept."""
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True)


def document_text(value: object) -> str:
    """The public JSON document of *value* (:func:`consentkit.documents.to_document`) as the CLI
    prints it."""
    return json_text(to_document(value))


def when(instant: datetime) -> str:
    """An instant to the second, with its UTC offset."""
    return instant.isoformat(timespec="seconds")


def next_page_lines(cursor: str | None) -> list[str]:
    """The line that tells how to get the next page, if there is one."""
    return [] if cursor is None else [f"(more: add --cursor {cursor})"]


# ---------------------------------------------------------------------- changes and contacts


def pair_lines(label: str, pairs: Sequence[PairRef], total: int | None = None) -> list[str]:
    """One line per pair under *label*, cut at :data:`MAX_PAIRS_SHOWN`."""
    lines = [f"  {label:<10} {pair.contact_id} {pair.channel.key}" for pair in pairs]
    del lines[MAX_PAIRS_SHOWN:]
    hidden = (len(pairs) if total is None else total) - min(len(pairs), MAX_PAIRS_SHOWN)
    if hidden > 0:
        lines.append(f"  {label:<10} ... and {hidden:,} more")
    return lines


def change_lines(verb: str, result: ChangeResult, channels: Sequence[Channel]) -> list[str]:
    """What a bulk change did: the counts, then the pairs changed, unchanged and skipped."""
    keys = ", ".join(ch.key for ch in channels)
    summary = (
        f"{verb} on {keys}: {result.changed_count:,} changed, "
        f"{result.unchanged_count:,} unchanged (already {result.new_state.value})"
    )
    if result.skipped:
        summary += f", {len(result.skipped):,} skipped"
    lines = [summary, *pair_lines("changed", result.changed)]
    lines += pair_lines("unchanged", result.unchanged)
    lines += [
        f"  {'skipped':<10} {skipped.contact_id} {skipped.channel.key}: {skipped.reason}"
        for skipped in result.skipped[:MAX_PAIRS_SHOWN]
    ]
    if len(result.skipped) > MAX_PAIRS_SHOWN:
        lines.append(f"  {'skipped':<10} ... and {len(result.skipped) - MAX_PAIRS_SHOWN:,} more")
    return lines


def toggle_lines(result: ChangeResult, contact_id: str, ch: Channel) -> list[str]:
    """What the inbox toggle did to one pair, with the pair's version to pass as the next
    ``--expected-version``."""
    pair = next(iter(result.versions), None)
    version = "" if pair is None else f" (version {result.versions[pair]})"
    state = result.new_state.value
    if result.changed_count:
        return [f"toggle {contact_id} {ch.key}: now {state}{version}"]
    return [f"toggle {contact_id} {ch.key}: already {state}, nothing changed{version}"]


def suppressed_lines(result: ContactsResult) -> list[str]:
    """The pairs a registration unsubscribed because their address had opted out before."""
    return [
        f"  suppressed {pair.contact_id} {pair.channel.key}: this address opted out before "
        "the contact was registered, so it starts unsubscribed"
        for pair in result.suppressed[:MAX_PAIRS_SHOWN]
    ]


def unreachable_lines(result: ContactsResult) -> list[str]:
    """The warning about subscribed pairs whose contact lost the address of their channel (empty
    when there are none)."""
    pairs = result.unreachable
    if not pairs:
        return []
    count = f"{len(pairs):,} subscribed pair{'s' if len(pairs) != 1 else ''}"
    return [
        f"{count} lost the address of {'their' if len(pairs) != 1 else 'its'} channel: the "
        "consent is kept, but nothing can be sent there until an address is added",
        *pair_lines("no address", pairs),
    ]


def contacts_table(contacts: Iterable[Contact]) -> list[str]:
    """Contacts as a table: id, phone, email and handles."""
    return table_lines(
        ("ID", "PHONE", "EMAIL", "HANDLES"),
        (
            (
                c.id,
                c.phone or "",
                c.email or "",
                " ".join(f"{ch.key}={escape(handle)}" for ch, handle in c.handles),
            )
            for c in contacts
        ),
    )


# ---------------------------------------------------------------------- reads


def subscriptions_table(subscriptions: Iterable[Subscription]) -> list[str]:
    """Subscriptions as a table: contact, channel, state and the last change."""
    return table_lines(
        ("CONTACT", "CHANNEL", "STATE", "SINCE", "BY", "SOURCE", "REASON"),
        (
            (
                sub.contact_id,
                sub.channel.key,
                sub.state.value,
                when(sub.updated_at),
                sub.changed_by.value,
                sub.source.value,
                sub.reason or "",
            )
            for sub in subscriptions
        ),
    )


def _can_send_text(can_send: bool | None) -> str:
    if can_send is None:
        return "no (unknown channel)"
    return "yes" if can_send else "no"


def status_lines(contact: Contact, rows: Sequence[StatusRow]) -> list[str]:
    """A contact's addresses, then its state and can-send on every channel."""
    addresses = [
        f"phone {contact.phone}" if contact.phone else "",
        f"email {contact.email}" if contact.email else "",
        *(f"{ch.key} {escape(handle)}" for ch, handle in contact.handles),
    ]
    heading = f"contact {contact.id}  " + "  ".join(a for a in addresses if a)
    return [
        heading,
        *table_lines(
            ("CHANNEL", "STATE", "CAN SEND", "SINCE", "BY", "SOURCE", "REASON"),
            (
                (
                    ch.key,
                    "never_subscribed" if sub is None else sub.state.value,
                    _can_send_text(can_send),
                    "" if sub is None else when(sub.updated_at),
                    "" if sub is None else sub.changed_by.value,
                    "" if sub is None else sub.source.value,
                    "" if sub is None else sub.reason or "",
                )
                for ch, sub, can_send in rows
            ),
        ),
    ]


def status_document(contact: Contact, rows: Sequence[StatusRow]) -> dict[str, Any]:
    """``status`` as JSON: the contact's document and, per channel, its state, can-send and the
    subscription's document (null when never subscribed)."""
    return {
        "contact": to_document(contact),
        "channels": [
            {
                "channel": ch.key,
                "state": (SubscriptionState.NEVER_SUBSCRIBED if sub is None else sub.state).value,
                "can_send": bool(can_send),
                "subscription": None if sub is None else to_document(sub),
            }
            for ch, sub, can_send in rows
        ],
    }


def event_details(event: ConsentEvent) -> str:
    """A short human summary of what an event carries (reason, justification, evidence)."""
    parts: list[str] = []
    if event.justification is not None:
        parts.append(f"{event.justification.reason.value}: {one_line(event.justification.note)}")
    elif event.reason:
        parts.append(f"reason {event.reason}")
    if event.evidence is not None:
        parts.append(f"evidence {event.evidence.method}, wording {event.evidence.wording_version}")
    if event.inbound_message_id:
        parts.append(f"message {event.inbound_message_id}")
    return "; ".join(parts)


def history_table(events: Iterable[ConsentEvent]) -> list[str]:
    """A contact's events as a table, oldest first."""
    return table_lines(
        ("SEQ", "OCCURRED", "CHANNEL", "CHANGE", "BY", "SOURCE", "DETAILS"),
        (
            (
                str(e.sequence),
                when(e.occurred_at),
                e.channel.key,
                f"{e.previous_state.value} -> {e.new_state.value}",
                str(e.actor),
                e.source.value,
                event_details(e),
            )
            for e in events
        ),
    )


# ---------------------------------------------------------------------- inbound replies

_OUTCOME_TEXT = {
    InboundOutcome.OPTED_OUT: "opted out: the sender's contacts are unsubscribed from {channels}",
    InboundOutcome.SUPPRESSED: "suppressed: no contact has this address, so it is on the "
    "suppression list for {channels}; a contact registered with it later starts unsubscribed",
    InboundOutcome.OPTED_IN: "opted in: resubscribed at the contact's own request",
    InboundOutcome.HELP: "help: nothing changed; send the help text",
    InboundOutcome.NEEDS_REVIEW: "needs review: it may be an opt-out, so it is recorded for a "
    "person to review; nothing changed",
    InboundOutcome.NO_CONTACT: "no contact: an opt-in from an address no contact has; nothing "
    "changed",
    InboundOutcome.NOTHING_TO_UNDO: "nothing to undo: an opt-in keyword, but no opt-out of the "
    "sender's own to undo; nothing was subscribed",
    InboundOutcome.NONE: "none: an ordinary message; nothing changed",
}


def _changed_lines(result: InboundResult) -> list[str]:
    new_state = (
        SubscriptionState.SUBSCRIBED
        if result.outcome is InboundOutcome.OPTED_IN
        else SubscriptionState.UNSUBSCRIBED
    )
    if not result.changed:
        if result.outcome in (InboundOutcome.OPTED_OUT, InboundOutcome.OPTED_IN):
            return [f"changed: nothing (already {new_state.value})"]
        return []
    width = max(len(cid) for cid, _ in result.changed)
    key_width = max(len(ch.key) for _, ch in result.changed)
    return [
        "changed at the first delivery:" if result.replayed else "changed:",
        *(
            f"  {cid:<{width}}  {ch.key:<{key_width}} -> {new_state.value}"
            for cid, ch in result.changed
        ),
    ]


def _reply_and_deadline_lines(result: InboundResult) -> list[str]:
    if result.reply is None:
        lines = ["reply to send: none"]
    elif result.replayed:
        lines = ["reply to send: none (it was due for the first delivery)"]
    else:
        lines = [f"reply to send: {result.reply}"]
    if result.honor_by is not None:
        deadline = when(result.honor_by)
        if result.outcome is InboundOutcome.NEEDS_REVIEW:
            lines.append(f"honour by: {deadline}, if a reviewer finds it is an opt-out")
            if result.review_item is not None:
                lines.append(f"review item: {result.review_item} (consentkit review list)")
        else:
            lines.append(f"honour by: {deadline} (the legal deadline; already honoured)")
    return lines


def inbound_lines(result: InboundResult) -> list[str]:
    """What handling one inbound message did, as lines for a person (the CLI and the demo)."""
    keyword = f' (keyword "{result.keyword}")' if result.keyword else ""
    channels = ", ".join(ch.key for ch in result.channels)
    outcome = _OUTCOME_TEXT.get(result.outcome, result.outcome.value)
    lines = ["(duplicate delivery: already handled, nothing changed)"] if result.replayed else []
    lines += [
        f"message {result.message_id} on {result.channel.key} from {result.sender}: "
        f"{result.classification.value}{keyword}",
        f"outcome: {outcome.format(channels=channels)}",
        "contacts: " + (", ".join(result.contact_ids) or "none with this address"),
        *_changed_lines(result),
        *_reply_and_deadline_lines(result),
    ]
    return lines


# ---------------------------------------------------------------------- trends

_WINDOW_TEXT = {SpikeWindow.LAST_7_DAYS: "last 7 days", SpikeWindow.MONTH_TO_DATE: "month to date"}


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def spike_lines(report: TrendReport) -> list[str]:
    """The flagged unsubscribe spikes with their reasons, or a line saying there are none."""
    flagged = report.flagged_spikes
    if not flagged:
        return ["no unsubscribe spikes"]
    return [
        f"unsubscribe spike on {check.channel.key} ({_WINDOW_TEXT[check.window]}): {check.reason}"
        for check in flagged
    ]


def trends_heading(account: str, report: TrendReport) -> str:
    """The first line of ``trends``: the account, the instants compared and the time zone."""
    return (
        f"subscriber trends of account {account!r} as of {when(report.as_of)}, "
        f"compared with {when(report.compared_with)} (calendar months in {report.timezone})"
    )


def trend_lines(report: TrendReport) -> list[str]:
    """The trend table, two rows per channel (subscribed, unsubscribed: now, a month earlier,
    change, percentage and a sparkline of the monthly series), for a person (the CLI and the
    demo)."""
    if not report.channels:
        return ["no subscriptions yet: nothing to compare"]
    first, last = report.series[0].month, report.series[-1].month
    rows: list[tuple[str, ...]] = []
    for trend in report.channels:
        series = report.series_of(trend.channel)
        figures: tuple[tuple[str, Change, list[int]], ...] = (
            ("subscribed", trend.subscribed, [t.subscribed for t in series]),
            ("unsubscribed", trend.unsubscribed, [t.unsubscribed for t in series]),
        )
        rows += [
            (
                trend.channel.key if index == 0 else "",
                label,
                f"{moved.current:,}",
                f"{moved.previous:,}",
                _signed(moved.absolute),
                moved.describe(),
                sparkline(values),
            )
            for index, (label, moved, values) in enumerate(figures)
        ]
    headers = ("CHANNEL", "TOTAL", "NOW", "MONTH AGO", "CHANGE", "PERCENT", f"{first}..{last}")
    return table_lines(headers, rows, right={2, 3, 4, 5})


# ---------------------------------------------------------------------- the review queue


def _review_status(item: ReviewItem, now: datetime) -> str:
    if item.decision is not None:
        return item.decision.value
    return "OVERDUE" if item.is_overdue(now) else "open"


def _review_row(item: ReviewItem, now: datetime, decided: bool) -> tuple[str, ...]:
    row: tuple[str, ...] = (
        escape(item.id),
        when(item.received_at),
        item.channel.key,
        escape(item.sender),
        ", ".join(item.contact_ids) or "(none)",
        when(item.honor_by),
        _review_status(item, now),
    )
    if decided:
        row += (
            item.decided_by or "",
            "" if item.decided_at is None else when(item.decided_at),
            cut(item.note or "", 40),
        )
    return (*row, cut(item.text))


def review_lines(items: Sequence[ReviewItem], now: datetime, *, decided: bool) -> list[str]:
    """The review queue as a table, oldest first (with the decision columns when *decided*),
    and a closing line that makes overdue items stand out."""
    if not items:
        return ["no decided or open review items" if decided else "no open review items"]
    headers = ["ID", "RECEIVED", "CHANNEL", "SENDER", "CONTACTS", "HONOUR BY", "STATUS"]
    if decided:
        headers += ["DECIDED BY", "DECIDED AT", "NOTE"]
    lines = table_lines([*headers, "TEXT"], (_review_row(item, now, decided) for item in items))
    overdue = sum(1 for item in items if item.is_overdue(now))
    if overdue:
        lines.append(
            f"OVERDUE: {overdue:,} open item{'s are' if overdue != 1 else ' is'} past the "
            "honour-by deadline; decide now with consentkit review resolve ITEM_ID"
        )
    return lines


def resolution_lines(resolution: ReviewResolution) -> list[str]:
    """What deciding a review item did: the decision, and the pairs an opt-out unsubscribed."""
    item = resolution.item
    opt_out = item.decision is ReviewDecision.OPT_OUT
    decided_at = "" if item.decided_at is None else f" at {when(item.decided_at)}"
    lines = [
        f"review item {item.id}: decided {'an opt-out' if opt_out else 'not an opt-out'} "
        f"by {item.decided_by}{decided_at}",
        f"note: {cut(item.note or '', 200)}",
    ]
    count = len(resolution.changed)
    if not opt_out:
        lines.append("changed: nothing")
    elif not count:
        lines.append("changed: nothing (no contact with the address was still subscribed)")
    else:
        lines.append(
            f"unsubscribed {count:,} pair{'s' if count != 1 else ''} as the contact's own "
            f"request (the message was received {when(item.received_at)}):"
        )
        lines += pair_lines("changed", resolution.changed)
    return lines
