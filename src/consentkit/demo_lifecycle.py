"""The lifecycle steps of ``consentkit demo``: topics and the record of sends, double opt-in, the
change feed, a contact's export, the purge of expired records and erasure.

The steps build a second service on the tour's store where they need its options (declared
topics and the topic opt-out scope, an erasure key), as a host configures one.
"""

from __future__ import annotations

from datetime import timedelta

from consentkit._demo_context import ACCOUNT, DemoContext
from consentkit.channels import SMS
from consentkit.inbound import InboundMessage, InboundOutcome, InboundSettings
from consentkit.model import Actor, Contact, Evidence, SubscriptionState
from consentkit.retention import RetentionSettings
from consentkit.scopes import OptOutScope
from consentkit.sends import SentMessage
from consentkit.service import ConsentService
from consentkit.settings import AccountSettings
from consentkit.topics import MessageClass, Topic, TopicDefault

__all__ = ["LIFECYCLE_STEPS"]

_TIA, _UMA = "+14155550121", "+14155550122"
_SIGNUP = Evidence("web_form", "Yes, text me offers and alerts from Demo Shop.", "v4")
_PIPELINE = Actor.system(ACCOUNT, "sender")


def _with(ctx: DemoContext, **options: object) -> ConsentService:
    """A service on the tour's store and clock with more options."""
    return ConsentService(ctx.service.store, clock=ctx.service.clock, **options)  # type: ignore[arg-type]


def step_topics_and_sends(ctx: DemoContext) -> None:
    """Topics inside a channel: a STOP answers the topic of the last message sent"""
    svc = _with(
        ctx,
        topics=[
            Topic("promotions", "Offers", MessageClass.MARKETING),
            Topic("alerts", "Order alerts", MessageClass.INFORMATIONAL, TopicDefault.OPT_OUT),
        ],
        settings=AccountSettings(inbound=InboundSettings(scope=OptOutScope.TOPIC)),
    )
    svc.upsert_contacts(ctx.admin, [Contact(ACCOUNT, "tia", phone=_TIA)])
    svc.opt_in(ctx.admin, ["tia"], [SMS], evidence=_SIGNUP)
    svc.opt_in(ctx.admin, ["tia"], [SMS], evidence=_SIGNUP, topic="promotions")
    ctx.say("tia is subscribed to sms, to its 'promotions' topic, and in 'alerts' by default;")
    ctx.say("the account's opt-out scope is 'topic'. The sending pipeline records a promotion:")
    now = svc.clock.now()
    svc.record_sent(_PIPELINE, SentMessage("sms/promotions", _TIA, now - timedelta(minutes=1)))
    ctx.say("  record_sent(system, SentMessage('sms/promotions', tia's number, a minute ago))")
    result = svc.handle_inbound(InboundMessage(ACCOUNT, SMS, _TIA, "STOP", "SM-tia-1", now))
    ctx.say(f"tia replies STOP -> scope {result.scope.value if result.scope else None}, changed:")
    for _, ch in result.changed:
        ctx.say(f"     {ch.key}")
    answers = {
        label: svc.can_send(ctx.admin, "tia", SMS, topic=topic)
        for label, topic in (("sms", None), ("promotions", "promotions"), ("alerts", "alerts"))
    }
    ctx.say(f"can_send: {', '.join(f'{k} {v}' for k, v in answers.items())}")
    ctx.check(
        answers == {"sms": True, "promotions": False, "alerts": True},
        "a topic STOP stops that topic only",
    )


def step_double_opt_in(ctx: DemoContext) -> None:
    """Double opt-in: a sign-up counts once the contact replies YES"""
    svc = ctx.service
    svc.upsert_contacts(ctx.admin, [Contact(ACCOUNT, "uma", phone=_UMA)])
    pending = svc.request_opt_in(
        ctx.admin, "uma", SMS, evidence=_SIGNUP, request_wording="Reply YES to confirm."
    )
    ctx.say("uma signs up on the web form; the host sends 'Reply YES to confirm.'")
    until = pending.expires_at.isoformat(timespec="seconds")
    ctx.say(f"-> pending until {until}; can_send: {svc.can_send(ctx.admin, 'uma', SMS)}")
    ctx.check(not svc.can_send(ctx.admin, "uma", SMS), "a pending pair is not sendable")
    now = svc.clock.now()
    result = svc.handle_inbound(InboundMessage(ACCOUNT, SMS, _UMA, "Yes!", "SM-uma-1", now))
    ctx.say(f"uma replies 'Yes!' -> {result.outcome.value}; can_send: "
            f"{svc.can_send(ctx.admin, 'uma', SMS)}")
    ctx.check(result.outcome is InboundOutcome.CONFIRMED, "the YES confirms the sign-up")
    (event,) = svc.history(ctx.admin, "uma")
    assert event.evidence is not None
    ctx.say(f"the opt-in event: by {event.actor.kind.value}, evidence {event.evidence.method}, "
            "reference pending:<the request's id>")


def step_change_feed(ctx: DemoContext) -> None:
    """The change feed: a host system follows every change, resumably"""
    svc = ctx.service
    total, pages, cursor = 0, 0, None
    while True:
        page = svc.changes(ctx.admin, after=cursor, limit=100)
        total, pages, cursor = total + len(page.events), pages + 1, page.next_cursor
        if not page.has_more:
            break
    audit = sum(1 for _ in svc.audit_log(ctx.admin))
    ctx.say(f"changes(after=cursor, limit=100): {total} events in {pages} pages, in commit order")
    ctx.say(f"(the audit log has {audit}); storing the cursor lets a consumer resume after a crash")
    ctx.check(total == audit, "the feed delivers every event once")
    ctx.check(svc.changes(ctx.admin, after=cursor).events == (), "nothing after the end")


def step_export_and_purge(ctx: DemoContext) -> None:
    """A contact's export, and the purge of expired message records"""
    svc = ctx.service
    document = svc.export_contact(ctx.admin, "tia")
    counts = {key: len(document[key]) for key in ("subscriptions", "events", "inbound", "sent")}
    ctx.say(f"export_contact(tia): one JSON document; {counts}")
    later = svc.clock.now() + timedelta(days=31)
    result = svc.purge(
        ctx.admin, now=later, retention=RetentionSettings(inbound_results=timedelta(days=30))
    )
    ctx.say("purge 31 days from now, keeping inbound results 30 days (consent is never purged):")
    ctx.say(f"-> deleted {sum(result.deleted.values())} inbound results, in bounded batches")
    ctx.check(result.complete and svc.export_contact(ctx.admin, "tia")["inbound"] == [],
              "expired inbound results are gone")
    ctx.check(len(svc.export_contact(ctx.admin, "tia")["events"]) == counts["events"],
              "the consent history stays")


def step_erasure(ctx: DemoContext) -> None:
    """Erasure: uma is forgotten, and her opt-out still holds"""
    svc = _with(ctx, erasure_key=b"demo-erasure-key-not-a-secret!!")
    result = svc.erase_contact(ctx.admin, "uma", reason="GDPR Art. 17 request (ticket 42)")
    ctx.say(f"erase_contact(uma) -> {len(result.unsubscribed)} pair unsubscribed, "
            f"{result.suppressions} keyed-hash suppressions kept, history under 'erased-...'")
    svc.upsert_contacts(ctx.admin, [Contact(ACCOUNT, "uma2", phone=_UMA)])
    state = svc.state(ctx.admin, "uma2", SMS)
    ctx.say(f"a later import of uma's number as 'uma2': sms {state.value}")
    ctx.check(state is SubscriptionState.UNSUBSCRIBED, "an erased number stays opted out")


LIFECYCLE_STEPS = [
    step_topics_and_sends,
    step_double_opt_in,
    step_change_feed,
    step_export_and_purge,
    step_erasure,
]
"""Topics, double opt-in, the feed, exports, retention and erasure, after the host steps."""
