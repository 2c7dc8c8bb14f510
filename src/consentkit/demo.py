"""``consentkit demo``: a guided tour of every capability of the seed document, on a fresh database.

The tour is a list of step functions (:data:`STEPS`), run in order.  Each step's docstring's first
line is its title; the step prints what it does and the actual results through
:meth:`DemoContext.say`.  A step that shows a refusal also checks that the refusal happened (and
that nothing changed), so the tour doubles as an end-to-end smoke test.  To add a step, write
``step_xxx(ctx) -> None`` and put it in :data:`STEPS`.

Apart from timestamps, the output is the same on every run.  The trends step generates its history
relative to the clock's now, so its figures depend on where that history falls in calendar months;
two runs in the same hour print the same report.
"""

from __future__ import annotations

import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from consentkit._demo_context import (
    ACCOUNT,
    IMPORTED,
    PEOPLE,
    WRAP,
    DemoCheckError,
    DemoContext,
)
from consentkit.channels import EMAIL, MMS, RCS, SMS, WHATSAPP, Channel
from consentkit.cli.render import (
    event_details,
    inbound_lines,
    resolution_lines,
    review_lines,
    spike_lines,
    trend_lines,
)
from consentkit.clock import Clock, SystemClock
from consentkit.demo_host import HOST_STEPS
from consentkit.demo_lifecycle import LIFECYCLE_STEPS
from consentkit.errors import ConsentError, ValidationError
from consentkit.inbound import InboundMessage, InboundOutcome, InboundResult
from consentkit.model import (
    Actor,
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
    Source,
    Subscription,
    SubscriptionState,
)
from consentkit.review import ReviewDecision
from consentkit.service import ConsentService
from consentkit.storage.base import Store
from consentkit.trends import Direction, SpikeWindow

__all__ = ["STEPS", "DemoCheckError", "DemoContext", "run_demo"]


def _subscription_line(sub: Subscription) -> str:
    reason = f", reason {sub.reason}" if sub.reason else ""
    return (
        f"{sub.contact_id:<6} {sub.channel.key:<9} {sub.state.value:<13} "
        f"by {sub.changed_by.value} via {sub.source.value}{reason}"
    )


# ---------------------------------------------------------------------- the steps


def step_register_contacts(ctx: DemoContext) -> None:
    """Register contacts with their phone numbers and email addresses"""
    contacts = [Contact(ACCOUNT, cid, phone=phone, email=email) for cid, phone, email in PEOPLE]
    result = ctx.service.upsert_contacts(ctx.admin, contacts)
    ctx.say(f"upsert_contacts by {ctx.admin}: {result.created} created, {result.updated} updated")
    for contact in contacts:
        ctx.say(f"  {contact.id:<6} {contact.phone}  {contact.email}")
    ctx.say("Nobody is subscribed yet: every pair starts as never_subscribed (not unsubscribed).")
    ctx.check(ctx.state("ana", SMS) is SubscriptionState.NEVER_SUBSCRIBED, "ana starts never")


SIGNUP_EVIDENCE = Evidence(
    method="web_form",
    wording="Yes, send me offers by text message and email. Reply STOP or click unsubscribe "
    "to opt out.",
    wording_version="2026-01",
    location="https://shop.example.com/signup",
)
WHATSAPP_EVIDENCE = Evidence(
    method="web_form",
    wording="Yes, send me order updates on WhatsApp.",
    wording_version="2026-01-wa",
    location="https://shop.example.com/checkout",
)


def step_opt_in_with_evidence(ctx: DemoContext) -> None:
    """Record opt-ins with evidence, channel by channel"""
    signup = Actor.system(ACCOUNT, "signup-form")
    error = ctx.refused(lambda: ctx.service.opt_in(ctx.admin, ["ana"], [SMS], evidence=None))
    ctx.say("An opt-in without proof of consent is refused:")
    ctx.say_refusal(error)
    ctx.say()
    ctx.say(f"The sign-up form ({signup}) opts everyone in to sms and email, with the wording")
    ctx.say(f"version {SIGNUP_EVIDENCE.wording_version!r} they agreed to:")
    all_ids = [cid for cid, _, _ in PEOPLE]
    result = ctx.service.opt_in(
        signup,
        all_ids,
        [SMS, EMAIL],
        evidence=SIGNUP_EVIDENCE,
        source=Source.SIGNUP_FORM,
        details=True,
    )
    ctx.say(f"-> {result.changed_count} pairs subscribed")
    result = ctx.service.opt_in(
        signup,
        ["ana", "ben"],
        [WHATSAPP],
        evidence=WHATSAPP_EVIDENCE,
        source=Source.SIGNUP_FORM,
        details=True,
    )
    ctx.say(f"ana and ben also tick the WhatsApp box -> {result.changed_count} pairs subscribed")
    chloe_whatsapp = ctx.state("chloe", WHATSAPP)
    ctx.say(
        f"chloe on sms: {ctx.state('chloe', SMS).value}; chloe on whatsapp: "
        f"{chloe_whatsapp.value} (channels are independent)"
    )
    ctx.check(chloe_whatsapp is SubscriptionState.NEVER_SUBSCRIBED, "channels are independent")


def step_contacts_unsubscribe_themselves(ctx: DemoContext) -> None:
    """Two contacts click the unsubscribe link in an email"""
    for cid in ("dev", "emma"):
        ctx.service.unsubscribe(
            Actor.contact(ACCOUNT, cid),
            [cid],
            [EMAIL],
            source=Source.UNSUBSCRIBE_LINK,
            details=True,
        )
        ctx.say(
            f"{cid} unsubscribes from email (actor contact:{cid}, source unsubscribe_link) -> "
            f"email {ctx.state(cid, EMAIL).value}, sms still {ctx.state(cid, SMS).value}"
        )


def step_bulk_unsubscribe(ctx: DemoContext) -> None:
    """An admin unsubscribes several contacts from the All contacts page"""
    ctx.say("alice selects chloe, dev and emma, picks sms and email in the confirmation")
    ctx.say("modal, and confirms (one atomic call; reason code 'complaint'):")
    result = ctx.service.unsubscribe(
        ctx.admin,
        ["chloe", "dev", "emma"],
        [SMS, EMAIL],
        source=Source.CONTACTS_PAGE,
        reason="complaint",
        details=True,
    )
    ctx.say_result(result)
    ctx.check(result.changed_count == 4 and result.unchanged_count == 2, "4 changed, 2 unchanged")


def step_inbox_toggle(ctx: DemoContext) -> None:
    """An admin toggles one channel off in the Inbox contact panel"""
    result = ctx.service.set_subscribed(ctx.admin, "ben", WHATSAPP, False, source=Source.INBOX)
    ctx.say(f"alice switches ben's WhatsApp to Unsubscribed -> {result.changed_count} changed")
    for sub in ctx.service.subscriptions(ctx.admin, "ben"):
        ctx.say(f"  {_subscription_line(sub)}")
    ctx.check(ctx.state("ben", SMS) is SubscriptionState.SUBSCRIBED, "ben keeps sms")


def step_member_refused(ctx: DemoContext) -> None:
    """A member (not an admin) tries to unsubscribe a contact"""
    ctx.say(f"{ctx.member} tries to unsubscribe ana from sms on the contacts page:")
    error = ctx.refused(
        lambda: ctx.service.unsubscribe(ctx.member, ["ana"], [SMS], source=Source.CONTACTS_PAGE)
    )
    ctx.say_refusal(error)
    state = ctx.service.state(ctx.member, "ana", SMS)
    ctx.say(f"Nothing changed, and members may still read: ana on sms is {state.value}.")
    ctx.check(state is SubscriptionState.SUBSCRIBED, "a refused request changes nothing")


def step_misspelled_channel_refused(ctx: DemoContext) -> None:
    """A misspelled channel is refused, never recorded as a new channel"""
    ctx.say("A script of alice's unsubscribes ana from 'smss' (a typo for 'sms'):")
    before = _audit_length(ctx)
    error = ctx.refused(
        lambda: ctx.service.unsubscribe(ctx.admin, ["ana"], "smss", source=Source.CONTACTS_PAGE)
    )
    lines = textwrap.wrap(f"-> refused ({type(error).__name__}): {error}", WRAP)
    _say_lines(ctx, lines[:1], indent="")
    _say_lines(ctx, lines[1:], indent="   ")
    state = ctx.state("ana", SMS)
    ctx.say(f"No event was written, no 'smss' channel appeared: ana on sms is {state.value}.")
    ctx.check(
        _audit_length(ctx) == before and state is SubscriptionState.SUBSCRIBED,
        "an unknown channel key changes nothing",
    )


def step_resubscribe_from_contacts_page(ctx: DemoContext) -> None:
    """Re-subscribing from the All contacts page: only with a justification"""
    ctx.say("chloe was ticked by mistake in the bulk unsubscribe. alice resubscribes her")
    ctx.say("without giving a reason:")
    ctx.say_refusal(
        ctx.refused(
            lambda: ctx.service.resubscribe(ctx.admin, ["chloe"], [SMS, EMAIL], justification=None)
        )
    )
    ctx.say()
    mistaken = Justification(
        ResubscribeReason.MISTAKEN_UNSUBSCRIBE,
        "chloe was selected by mistake in the bulk unsubscribe of the complaint list",
    )
    ctx.say("She retries with 'mistaken unsubscribe', but also selects dev on email, who")
    ctx.say("unsubscribed himself with the link (so it was no mistake):")
    ctx.say_refusal(
        ctx.refused(
            lambda: ctx.service.resubscribe(
                ctx.admin, ["chloe", "dev"], [EMAIL], justification=mistaken
            )
        )
    )
    chloe_email = ctx.state("chloe", EMAIL)
    ctx.say(f"All or nothing: chloe on email is still {chloe_email.value}.")
    ctx.check(chloe_email is SubscriptionState.UNSUBSCRIBED, "a refused bulk changes nothing")
    ctx.say()
    ctx.say("chloe alone, mistaken unsubscribe, sms and email:")
    ctx.say_result(
        ctx.service.resubscribe(
            ctx.admin, ["chloe"], [SMS, EMAIL], justification=mistaken, details=True
        )
    )
    request = Justification(
        ResubscribeReason.CONTACT_REQUEST,
        "dev called support (ticket 4711) and asked to get email offers again",
    )
    ctx.say("dev asked on the phone to get emails again: contact request, email only:")
    ctx.say_result(
        ctx.service.resubscribe(ctx.admin, ["dev"], [EMAIL], justification=request, details=True)
    )


def step_resubscribe_from_inbox(ctx: DemoContext) -> None:
    """Re-subscribing from the Inbox toggle"""
    request = Justification(
        ResubscribeReason.CONTACT_REQUEST,
        "ben wrote in the inbox conversation that he wants WhatsApp order updates again",
    )
    result = ctx.service.set_subscribed(
        ctx.admin, "ben", WHATSAPP, True, justification=request, source=Source.INBOX
    )
    ctx.say(
        f"alice switches ben's WhatsApp back on, citing his message -> "
        f"{result.changed_count} changed; whatsapp is {ctx.state('ben', WHATSAPP).value}"
    )


IMPORT_EVIDENCE = Evidence(
    method="paper",
    wording="Text me offers. Reply STOP to opt out.",
    wording_version="store-2025-12",
    location="store 12 sign-up sheet",
)


def step_import_skips_unsubscribed(ctx: DemoContext) -> None:
    """A nightly import opts contacts in, but never re-adds an unsubscribed one"""
    importer = Actor.system(ACCOUNT, "importer")
    new = [Contact(ACCOUNT, cid, phone=phone, email=email) for cid, phone, email in IMPORTED]
    created = ctx.service.upsert_contacts(importer, new).created
    ids = ["ana", "dev", "emma", *(c.id for c in new)]
    ctx.say(f"{importer} registers {created} new contacts and imports sms opt-ins (source")
    ctx.say(f"import, paper sign-up sheets) for {', '.join(ids)}:")
    result = ctx.service.opt_in(
        importer, ids, [SMS], evidence=IMPORT_EVIDENCE, source=Source.IMPORT, details=True
    )
    ctx.say_result(result)
    ctx.check(
        {s.contact_id for s in result.skipped} == {"dev", "emma"}
        and ctx.state("dev", SMS) is SubscriptionState.UNSUBSCRIBED,
        "the import skips the unsubscribed contacts",
    )


def step_filter_unsubscribed(ctx: DemoContext) -> None:
    """Filtering for unsubscribed contacts"""
    views: list[tuple[str, Channel, Source | None, str | None]] = [
        ("Unsubscribed on sms:", SMS, None, None),
        (
            "Unsubscribed on email through the unsubscribe link:",
            EMAIL,
            Source.UNSUBSCRIBE_LINK,
            None,
        ),
        ("Unsubscribed on sms with reason 'complaint':", SMS, None, "complaint"),
        ("Unsubscribed on whatsapp:", WHATSAPP, None, None),
    ]
    for title, ch, source, reason in views:
        page = ctx.service.list_subscriptions(
            ctx.admin, ch, SubscriptionState.UNSUBSCRIBED, source=source, reason=reason
        )
        ctx.say(title)
        for sub in page.items:
            ctx.say(f"  {_subscription_line(sub)}")
        if not page.items:
            ctx.say("  (none)")


def step_can_send_before_sending(ctx: DemoContext) -> None:
    """Checking consent right before sending an SMS campaign"""
    everyone = [cid for cid, _, _ in PEOPLE] + [cid for cid, _, _ in IMPORTED]
    audience = ctx.service.audience(ctx.admin, SMS, everyone)
    ctx.say(f"audience(sms) keeps {len(audience)} of {len(everyone)} contacts; per contact:")
    width = max(len(cid) for cid in everyone)
    for cid in everyone:
        # Asked per message, right before it goes out: consent may have changed since the
        # audience was built.
        allowed = ctx.service.can_send(ctx.admin, cid, SMS)
        ctx.check(allowed == (cid in audience), "audience agrees with can_send")
        verdict = "send" if allowed else f"do not send ({ctx.state(cid, SMS).value})"
        ctx.say(f"  can_send({cid + ',':<{width + 1}} sms) = {allowed!s:<5} -> {verdict}")


def step_history_of_one_contact(ctx: DemoContext) -> None:
    """The audit trail of one contact: who changed what, when, how and why"""
    events = ctx.service.history(ctx.admin, "dev")
    ctx.say(f"history(dev): {len(events)} events, oldest first")
    for event in events:
        details = event_details(event)
        ctx.say(
            f"  #{event.sequence:<3} {event.occurred_at.isoformat(timespec='seconds')} "
            f"{event.channel.key:<6} {event.previous_state.value} -> {event.new_state.value} "
            f"by {event.actor} via {event.source.value}"
        )
        if details:
            ctx.say(f"       {details}")
    ctx.say("The refused requests and the skipped import row left no event: nothing happened.")


# The numbers of the inbound step: gus (imported above) replies from his phone; nobody has the
# unknown number until an import tries to add it.
STOP_MESSAGE_ID = "SM0001"
UNKNOWN_NUMBER = "+14155550199"
_PHONES = {cid: phone for cid, phone, _ in (*PEOPLE, *IMPORTED) if phone is not None}


def _audit_length(ctx: DemoContext) -> int:
    return sum(1 for _ in ctx.service.audit_log(ctx.admin))


def _say_lines(ctx: DemoContext, lines: list[str], indent: str = "  ") -> None:
    for line in lines:
        ctx.say(f"{indent}{line}" if line else "")


def _inbound(ctx: DemoContext, sender: str, body: str, message_id: str) -> InboundResult:
    message = InboundMessage(
        account=ACCOUNT,
        channel=SMS,
        sender=sender,
        body=body,
        message_id=message_id,
        received_at=ctx.service.clock.now(),
    )
    return ctx.service.handle_inbound(message)


def step_inbound_replies(ctx: DemoContext) -> None:
    """A contact replies STOP to a text message"""
    gus_phone = _PHONES["gus"]
    ctx.say(f'gus replies "Stop." from {gus_phone}; the SMS provider\'s webhook delivers it')
    ctx.say(f"as message {STOP_MESSAGE_ID} and the host calls handle_inbound():")
    stop = _inbound(ctx, gus_phone, "Stop.", STOP_MESSAGE_ID)
    _say_lines(ctx, inbound_lines(stop))
    ctx.check(
        stop.outcome is InboundOutcome.OPTED_OUT
        and set(stop.changed) == {("gus", SMS), ("gus", MMS), ("gus", RCS)}
        and stop.reply is not None
        and ctx.state("gus", SMS) is SubscriptionState.UNSUBSCRIBED,
        "a STOP unsubscribes gus from sms, mms and rcs and returns a confirmation",
    )
    ctx.say("One confirmation goes back, with no marketing in it; the opt-out is recorded as")
    ctx.say("gus's own act (actor contact:gus, source inbound_keyword, reason stop_keyword).")

    ctx.say()
    before = _audit_length(ctx)
    ctx.say(f"The provider did not see the webhook's 200 in time and delivers {STOP_MESSAGE_ID}")
    ctx.say("again:")
    again = _inbound(ctx, gus_phone, "Stop.", STOP_MESSAGE_ID)
    _say_lines(ctx, inbound_lines(again)[:1])
    after = _audit_length(ctx)
    ctx.say(f"audit log: {before} events before the redelivery, {after} after; no second reply.")
    ctx.check(again.replayed and again == stop and after == before, "a redelivery is ignored")

    ctx.say()
    fay_phone = _PHONES["fay"]
    ctx.say('fay writes "please stop texting me": a keyword inside a longer message.')
    maybe = _inbound(ctx, fay_phone, "please stop texting me", "SM0002")
    _say_lines(ctx, inbound_lines(maybe))
    fay_sms = ctx.state("fay", SMS)
    ctx.say(f"fay on sms is still {fay_sms.value}; the account's setting is to record such")
    ctx.say("messages for review (it can be set to apply them), and they are never dropped.")
    ctx.check(
        maybe.outcome is InboundOutcome.NEEDS_REVIEW and fay_sms is SubscriptionState.SUBSCRIBED,
        "a possible opt-out is recorded for review without changing state",
    )

    ctx.say()
    ctx.say('ana texts "HELP":')
    before = _audit_length(ctx)
    helped = _inbound(ctx, _PHONES["ana"], "HELP", "SM0003")
    _say_lines(ctx, inbound_lines(helped))
    ctx.check(
        helped.outcome is InboundOutcome.HELP
        and helped.reply is not None
        and _audit_length(ctx) == before,
        "HELP returns the help text and changes nothing",
    )

    ctx.say()
    ctx.say(f'{UNKNOWN_NUMBER}, a number no contact has, texts "STOP":')
    unknown = _inbound(ctx, UNKNOWN_NUMBER, "STOP", "SM0004")
    _say_lines(ctx, inbound_lines(unknown))
    ctx.check(unknown.outcome is InboundOutcome.SUPPRESSED, "an unknown number is suppressed")
    importer = Actor.system(ACCOUNT, "importer")
    ctx.say(f"A week later {importer} registers hal with that number and imports an sms opt-in:")
    registered = ctx.service.upsert_contacts(importer, [Contact(ACCOUNT, "hal", UNKNOWN_NUMBER)])
    for pair in registered.suppressed:
        ctx.say(f"  suppressed hal {pair.channel.key}: the number opted out before hal existed")
    result = ctx.service.opt_in(
        importer, ["hal"], [SMS], evidence=IMPORT_EVIDENCE, source=Source.IMPORT, details=True
    )
    ctx.say_result(result)
    ctx.check(
        {pair.channel for pair in registered.suppressed} == {SMS, MMS, RCS}
        and [skip.contact_id for skip in result.skipped] == ["hal"]
        and ctx.state("hal", SMS) is SubscriptionState.UNSUBSCRIBED,
        "a later import of a suppressed number is refused",
    )


def step_review_queue(ctx: DemoContext) -> None:
    """A person reviews the possible opt-out"""
    now = ctx.service.clock.now()
    page = ctx.service.review_items(ctx.admin)
    ctx.say("fay's message waits in the account's review queue (review_items, oldest first):")
    _say_lines(ctx, review_lines(page.items, now, decided=False))
    ctx.check(
        [item.text for item in page.items] == ["please stop texting me"],
        "the possible opt-out is queued with its text",
    )
    item = page.items[0]
    ctx.say()
    ctx.say("alice reads it as a request to stop and decides it is an opt-out:")
    resolution = ctx.service.decide_review(
        ctx.admin, item.id, ReviewDecision.OPT_OUT, note="fay asks us to stop texting her"
    )
    _say_lines(ctx, resolution_lines(resolution))
    fay_sms = ctx.state("fay", SMS)
    still_open = ctx.service.review_items(ctx.admin).items
    ctx.say(f"fay on sms is now {fay_sms.value}; the queue has {len(still_open)} open items, and")
    ctx.say("review_items(include_decided=True) keeps who decided, when, and the note.")
    ctx.check(
        fay_sms is SubscriptionState.UNSUBSCRIBED
        and not still_open
        and ("fay", SMS) in resolution.changed,
        "deciding the item as an opt-out unsubscribes fay and closes it",
    )


# The generated history of the trends step, counted back from the clock's now.
TREND_WEEKS = 26
IMPORTED_LIST = 300
SIGNUPS_PER_WEEK = 4
SMS_LEAVERS = (3, 2, 4, 3, 2, 3, 4, 3)  # per week, cycled: an ordinary, slightly uneven trickle
EMAIL_LEAVERS_PER_WEEK = 2
STOP_BURST = 40
LIST_EVIDENCE = Evidence(
    method="import",
    wording="Yes, send me offers by text message and email. Reply STOP to opt out.",
    wording_version="2025-newsletter",
    location="the shop's previous newsletter tool",
)


def _generated(number: int) -> Contact:
    cid = f"g{number:03d}"
    return Contact(ACCOUNT, cid, phone=f"+1415556{number:04d}", email=f"{cid}@example.com")


def _generate_history(ctx: DemoContext, now: datetime) -> None:
    """Six months of back-dated history for the trends step (see its narrative)."""
    service = ctx.service
    importer = Actor.system(ACCOUNT, "importer")
    signup = Actor.system(ACCOUNT, "signup-form")
    listed = [_generated(n) for n in range(IMPORTED_LIST)]
    signups = [_generated(IMPORTED_LIST + n) for n in range(TREND_WEEKS * SIGNUPS_PER_WEEK)]
    service.upsert_contacts(importer, [*listed, *signups])
    service.opt_in(
        importer,
        [c.id for c in listed],
        [SMS, EMAIL],
        evidence=LIST_EVIDENCE,
        source=Source.IMPORT,
        occurred_at=now - timedelta(weeks=TREND_WEEKS, days=1),
        details=False,
    )
    leavers = iter(listed)
    # Week k is the span from 7k to 7k+7 days before now; events sit half a day or more inside
    # it, so they fall into the same weekly window whenever the report is made in this step.
    for week in range(TREND_WEEKS - 1, -1, -1):
        start = now - timedelta(weeks=week)
        batch = signups[week * SIGNUPS_PER_WEEK : (week + 1) * SIGNUPS_PER_WEEK]
        service.opt_in(
            signup,
            [c.id for c in batch],
            [SMS, EMAIL],
            evidence=SIGNUP_EVIDENCE,
            source=Source.SIGNUP_FORM,
            occurred_at=start - timedelta(days=3, hours=12),
        )
        sms_leavers = SMS_LEAVERS[week % len(SMS_LEAVERS)]
        for day in range(sms_leavers + EMAIL_LEAVERS_PER_WEEK):
            leaver = next(leavers).id
            service.unsubscribe(
                Actor.contact(ACCOUNT, leaver),
                [leaver],
                [SMS if day < sms_leavers else EMAIL],
                source=Source.UNSUBSCRIBE_LINK,
                occurred_at=start - timedelta(days=day, hours=12),
            )
    for number in range(STOP_BURST):
        phone = next(leavers).phone
        assert phone is not None
        service.handle_inbound(
            InboundMessage(
                account=ACCOUNT,
                channel=SMS,
                sender=phone,
                body="STOP",
                message_id=f"SMB{number:04d}",
                received_at=now - timedelta(days=2) + timedelta(minutes=70 * number),
            )
        )


def step_subscriber_trends(ctx: DemoContext) -> None:
    """Subscriber trends: month over month, by month, and an unsubscribe spike"""
    now = ctx.service.clock.now()
    ctx.say("For something to show, the tour writes six months of history, each event")
    ctx.say("back-dated with occurred_at (trends count when things happened, not when they")
    ctx.say("were recorded):")
    ctx.say(f"  - {TREND_WEEKS} weeks ago, system:importer imports an old newsletter list:")
    ctx.say(f"    {IMPORTED_LIST} contacts opted in to sms and email;")
    ctx.say(f"  - every week {SIGNUPS_PER_WEEK} people sign up on the web form (sms and email),")
    ctx.say(
        f"    {min(SMS_LEAVERS)} to {max(SMS_LEAVERS)} leave sms and {EMAIL_LEAVERS_PER_WEEK} "
        "leave email through unsubscribe links;"
    )
    ctx.say(f"  - in the last two days, after three campaigns in a row, {STOP_BURST} people")
    ctx.say("    reply STOP.")
    _generate_history(ctx, now)
    report = ctx.service.trends(ctx.admin, months=6)
    ctx.say()
    ctx.say(f"trends(months=6) as of {report.as_of.isoformat(timespec='seconds')}, against")
    ctx.say(
        f"{report.compared_with.isoformat(timespec='seconds')} (calendar months in "
        f"{report.timezone}); the last column"
    )
    ctx.say("draws each total at the end of every month, the current month to date last:")
    _say_lines(ctx, trend_lines(report))
    ctx.say("A STOP covers the whole SMS group, so the STOP replies also recorded mms and rcs")
    ctx.say("opt-outs for contacts who never subscribed there; a month ago those totals were 0,")
    ctx.say("so they have no percentage.")
    sms = report.trend_of(SMS)
    email = report.trend_of(EMAIL)
    ctx.check(
        sms is not None
        and email is not None
        and sms.subscribed.direction is Direction.DOWN
        and sms.unsubscribed.direction is Direction.UP
        and email.subscribed.direction is Direction.UP,
        "sms subscribers fell over the month and email subscribers grew",
    )
    ctx.say()
    ctx.say("Unsubscribe spikes, each channel against its own previous 8 weeks and 6 months:")
    for line in spike_lines(report):
        _say_lines(ctx, textwrap.wrap(line, WRAP, subsequent_indent="  "))
    flagged = {(check.channel, check.window) for check in report.flagged_spikes}
    ctx.check((SMS, SpikeWindow.LAST_7_DAYS) in flagged, "the STOP burst is flagged on sms")
    ctx.check(all(ch != EMAIL for ch, _ in flagged), "email's ordinary week is not flagged")
    quiet = next(
        check
        for check in report.spikes
        if check.channel == EMAIL and check.window is SpikeWindow.LAST_7_DAYS
    )
    ctx.say("For comparison, email in the last 7 days (not flagged):")
    _say_lines(ctx, textwrap.wrap(quiet.reason, WRAP, subsequent_indent="  "))


STEPS: list[Callable[[DemoContext], None]] = [
    step_register_contacts,
    step_opt_in_with_evidence,
    step_contacts_unsubscribe_themselves,
    step_bulk_unsubscribe,
    step_inbox_toggle,
    step_member_refused,
    step_misspelled_channel_refused,
    step_resubscribe_from_contacts_page,
    step_resubscribe_from_inbox,
    step_import_skips_unsubscribed,
    step_inbound_replies,
    step_review_queue,
    step_filter_unsubscribed,
    step_can_send_before_sending,
    step_history_of_one_contact,
    step_subscriber_trends,
    *HOST_STEPS,
    *LIFECYCLE_STEPS,
]
"""The tour, in the order of the seed document, then what a host app's endpoints do, then the
consent lifecycle (topics, double opt-in, the feed, exports, retention, erasure)."""


def _title(step: Callable[[DemoContext], None]) -> str:
    doc = (step.__doc__ or step.__name__).strip()
    return doc.splitlines()[0]


def _open_sqlite(path: Path) -> Store:
    from consentkit.storage.sqlite import SQLiteStore

    return SQLiteStore(path)


@contextmanager
def _database(db_path: Path | None) -> Iterator[Path]:
    if db_path is not None:
        yield db_path
        return
    with tempfile.TemporaryDirectory(prefix="consentkit-demo-") as directory:
        yield Path(directory) / "demo.db"


def run_demo(
    db_path: Path | None,
    out: TextIO,
    *,
    clock: Clock | None = None,
    store_factory: Callable[[Path], Store] | None = None,
) -> int:
    """Run the tour on a fresh database and print it to *out*.

    Args:
        db_path: where to keep the database; it must not exist.  None: a temporary database,
            deleted at the end.
        out: where the narrative goes.
        clock: the time source (the system clock by default).
        store_factory: opens the store of a path (a :class:`SQLiteStore` by default).

    Returns:
        0 when every step behaved as described, 1 when a step's check failed.

    Raises:
        ValidationError: *db_path* already exists.
    """
    if db_path is not None and (db_path.exists() or db_path.is_symlink()):
        raise ValidationError(
            "--db",
            f"{str(db_path)!r} already exists; the demo builds a fresh database: give a path "
            "that does not exist yet, or leave --db out for a temporary one",
        )
    where = "a temporary SQLite database" if db_path is None else f"SQLite database {db_path}"
    open_store = store_factory or _open_sqlite
    with _database(db_path) as path:
        store = open_store(path)
        try:
            ctx = DemoContext(ConsentService(store, clock=clock or SystemClock()), out)
            out.write(f"consentkit demo: per-channel consent, step by step, on {where}.\n")
            out.write(
                f'Account "{ACCOUNT}": {ctx.admin.id} is an admin, {ctx.member.id} a member.\n'
            )
            for number, step in enumerate(STEPS, 1):
                out.write(f"\n{number}. {_title(step)}\n")
                try:
                    step(ctx)
                except (DemoCheckError, ConsentError) as error:
                    out.write(f"\nThe tour stopped at step {number}: {error}\n")
                    return 1
        finally:
            store.close()
    if db_path is None:
        out.write("\nDone. The temporary database has been deleted.\n")
    else:
        out.write(
            f"\nDone. Explore it: consentkit --db {db_path} --account {ACCOUNT} history dev\n"
            f"             or: consentkit --db {db_path} --account {ACCOUNT} trends --months 6\n"
        )
    return 0
