"""``consentkit demo``: a guided tour of every capability of the seed document, on a fresh database.

The tour is a list of step functions (:data:`STEPS`), run in order.  Each step's docstring's first
line is its title; the step prints what it does and the actual results through
:meth:`DemoContext.say`.  A step that shows a refusal also checks that the refusal happened (and
that nothing changed), so the tour doubles as an end-to-end smoke test.  To add a step, write
``step_xxx(ctx) -> None`` and put it in :data:`STEPS`.

Apart from timestamps, the output is the same on every run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import attrs

from consentkit.channels import EMAIL, SMS, WHATSAPP, Channel
from consentkit.cli import event_details
from consentkit.clock import Clock, SystemClock
from consentkit.errors import ConsentError, ValidationError
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
from consentkit.service import ChangeResult, ConsentService
from consentkit.storage.base import Store

__all__ = ["STEPS", "DemoCheckError", "DemoContext", "run_demo"]

ACCOUNT = "demo"
PEOPLE = (
    ("ana", "+14155550101", "ana@example.com"),
    ("ben", "+14155550102", "ben@example.com"),
    ("chloe", "+14155550103", "chloe@example.com"),
    ("dev", "+14155550104", "dev@example.com"),
    ("emma", "+14155550105", "emma@example.com"),
)
IMPORTED = (("fay", "+14155550106", "fay@example.com"), ("gus", "+14155550107", None))
ADMIN = Actor.admin(ACCOUNT, "alice")
MEMBER = Actor.member(ACCOUNT, "mia")
_INDENT = "   "


class DemoCheckError(AssertionError):
    """The service did not behave as the tour says it does."""


@attrs.define
class DemoContext:
    """What the steps share.

    Attributes:
        service: the consent service on the tour's fresh database.
        out: where the narrative goes.
        admin: alice, an admin of the demo account.
        member: mia, a member (not an admin).
    """

    service: ConsentService
    out: TextIO
    admin: Actor = ADMIN
    member: Actor = MEMBER

    def say(self, text: str = "") -> None:
        """Print one line of the current step (indented under its title)."""
        self.out.write(f"{_INDENT}{text}".rstrip() + "\n")

    def check(self, condition: bool, claim: str) -> None:
        """Stop the tour if *claim* is not true."""
        if not condition:
            raise DemoCheckError(claim)

    def refused(self, action: Callable[[], object]) -> ConsentError:
        """Run *action*, which must be refused, and return the error."""
        try:
            action()
        except ConsentError as error:
            return error
        raise DemoCheckError("the service accepted a request the tour expects it to refuse")

    def say_refusal(self, error: ConsentError) -> None:
        """Print a refusal the way a host app would show it."""
        self.say(f"-> refused ({type(error).__name__}): {error}")

    def state(self, contact_id: str, ch: Channel) -> SubscriptionState:
        """The state of one pair, as the admin sees it."""
        return self.service.state(self.admin, contact_id, ch)

    def say_result(self, result: ChangeResult) -> None:
        """Print what a change did, pair by pair."""
        verb = result.new_state.value
        self.say(
            f"-> {result.changed_count} changed, {result.unchanged_count} already {verb}"
            + (f", {len(result.skipped)} skipped" if result.skipped else "")
        )
        for pair in result.changed:
            self.say(f"     changed    {pair.contact_id:<6} {pair.channel.key}")
        for pair in result.unchanged:
            self.say(f"     unchanged  {pair.contact_id:<6} {pair.channel.key} (no event written)")
        for skip in result.skipped:
            self.say(f"     skipped    {skip.contact_id:<6} {skip.channel.key}: {skip.reason}")


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
        signup, all_ids, [SMS, EMAIL], evidence=SIGNUP_EVIDENCE, source=Source.SIGNUP_FORM
    )
    ctx.say(f"-> {result.changed_count} pairs subscribed")
    result = ctx.service.opt_in(
        signup, ["ana", "ben"], [WHATSAPP], evidence=WHATSAPP_EVIDENCE, source=Source.SIGNUP_FORM
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
            Actor.contact(ACCOUNT, cid), [cid], [EMAIL], source=Source.UNSUBSCRIBE_LINK
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
        ctx.service.resubscribe(ctx.admin, ["chloe"], [SMS, EMAIL], justification=mistaken)
    )
    request = Justification(
        ResubscribeReason.CONTACT_REQUEST,
        "dev called support (ticket 4711) and asked to get email offers again",
    )
    ctx.say("dev asked on the phone to get emails again: contact request, email only:")
    ctx.say_result(ctx.service.resubscribe(ctx.admin, ["dev"], [EMAIL], justification=request))


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
        importer, ids, [SMS], evidence=IMPORT_EVIDENCE, source=Source.IMPORT
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


STEPS: list[Callable[[DemoContext], None]] = [
    step_register_contacts,
    step_opt_in_with_evidence,
    step_contacts_unsubscribe_themselves,
    step_bulk_unsubscribe,
    step_inbox_toggle,
    step_member_refused,
    step_resubscribe_from_contacts_page,
    step_resubscribe_from_inbox,
    step_import_skips_unsubscribed,
    step_filter_unsubscribed,
    step_can_send_before_sending,
    step_history_of_one_contact,
]
"""The tour, in the order of the seed document."""


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
        )
    return 0
