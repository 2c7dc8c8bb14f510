"""Reads: contacts, state, can_send, audiences, listings, history and the audit log."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from consentkit.channels import (
    Channel,
)
from consentkit.errors import (
    UnknownContactError,
    ValidationError,
)
from consentkit.model import (
    Actor,
    ConsentEvent,
    Contact,
    Source,
    Subscription,
    SubscriptionState,
    enum_value,
    validate_reason_code,
)
from consentkit.service._arguments import checked_ids, contact_ids_of
from consentkit.service._core import ServiceCore
from consentkit.service._results import Page, check_limit, decode_cursor, page_of
from consentkit.storage.base import (
    SubscriptionFilter,
)
from consentkit.topics import TopicDefault, TopicPlan, topic_sendable

_UNSUBSCRIBED = SubscriptionState.UNSUBSCRIBED


class ReadsMixin(ServiceCore):
    """Everything that reads consent."""

    def get_contact(self, actor: Actor, contact_id: str) -> Contact:
        """One contact of the actor's account.

        Raises:
            UnknownContactError: there is no such contact.
        """
        account = self._contact_scope(actor, contact_id)
        contact = self.store.get_contact(account, contact_id)
        if contact is None:
            raise UnknownContactError(account, [contact_id])
        return contact

    def list_contacts(
        self, actor: Actor, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Contact]:
        """Contacts ordered by id, a page at a time."""
        account = self._account_scope(actor, "list the contacts of the account")
        limit = check_limit(limit)
        items = self.store.list_contacts(account, after=decode_cursor(cursor), limit=limit + 1)
        return page_of(items, limit, lambda contact: contact.id)

    def subscription(
        self,
        actor: Actor,
        contact_id: str,
        channel_: Channel | str,
        *,
        topic: str | None = None,
    ) -> Subscription | None:
        """The recorded subscription of one pair (of a topic on the channel, with *topic*), or
        None if it was never subscribed."""
        account = self._contact_scope(actor, contact_id)
        return self.store.get_subscription(account, contact_id, self._subject(channel_, topic))

    def state(
        self,
        actor: Actor,
        contact_id: str,
        channel_: Channel | str,
        *,
        topic: str | None = None,
    ) -> SubscriptionState:
        """The consent state of one pair (with *topic*: the topic pair's own state, whatever the
        channel's; :meth:`can_send` combines the two).

        Raises:
            UnknownContactError: the contact does not exist.
        """
        account = self._contact_scope(actor, contact_id)
        state = self.store.get_state(account, contact_id, self._subject(channel_, topic))
        if state is SubscriptionState.NEVER_SUBSCRIBED and (
            self.store.get_contact(account, contact_id) is None
        ):
            raise UnknownContactError(account, [contact_id])
        return state

    def subscriptions(self, actor: Actor, contact_id: str) -> list[Subscription]:
        """Every recorded subscription of one contact, ordered by channel."""
        account = self._contact_scope(actor, contact_id)
        return self.store.subscriptions_of(account, contact_id)

    def can_send(
        self,
        actor: Actor,
        contact_id: str,
        channel_: Channel | str,
        *,
        topic: str | None = None,
    ) -> bool:
        """Whether a message may be sent now: only ``SUBSCRIBED`` pairs may be messaged.

        With *topic* (or a topic channel such as ``"sms/promotions"``), both layers answer: the
        channel is the master switch, the topic's own pair and default decide within it, and a
        message class configured to survive the channel's unsubscribe may still go out (never
        after a complaint); see the truth table of docs/topics.md.

        Check it right before sending.  Unknown contacts and never-subscribed pairs give False.
        """
        account = self._contact_scope(actor, contact_id)
        if topic is None:
            ch = self._subject(channel_)
            if ch.topic is None:
                state = self.store.get_state(account, contact_id, ch)
                return state is SubscriptionState.SUBSCRIBED
            plan = self._topic_plan(ch, None)
        else:
            plan = self._topic_plan(channel_, topic)
        rules, _, ch, base, declared, may_survive = plan
        store = self.store
        reads = self._topic_reads
        channel_state, topic_state = (
            reads.states_of(account, contact_id, (base, ch))
            if reads is not None
            else (
                store.get_state(account, contact_id, base),
                store.get_state(account, contact_id, ch),
            )
        )
        survives = False
        if channel_state is _UNSUBSCRIBED and may_survive:
            # Whether the class survives this opt-out (a complaint's, a revoke-all's) is on the
            # channel pair's record.
            record = store.get_subscription(account, contact_id, base)
            survives = rules.survives_opt_out(ch, declared, record)
        return topic_sendable(channel_state, topic_state, declared, survives)

    def _topic_plan(self, channel_: object, topic: object) -> TopicPlan:
        """The topic channel a topic read names, resolved as :meth:`_subject` resolves it, with
        its declared topic: kept by (the channel or its key as given, the topic as given), for
        the service's current channels and topics, at most _PLANS of them (names only, never
        consent state)."""
        given = channel_.key if type(channel_) is Channel else channel_
        cacheable = type(given) is str and (topic is None or type(topic) is str)
        if cacheable:
            plan = self._topic_plans.get((given, topic))  # type: ignore[arg-type]
            if plan is not None and plan.rules is self.topics and plan.channels is self.channels:
                return plan
        ch = self._subject(channel_, topic)
        rules = self.topics
        declared = rules.get(ch.topic or "")
        plan = TopicPlan(
            rules, self.channels, ch, ch.base, declared, rules.may_survive(ch, declared)
        )
        if cacheable:
            if len(self._topic_plans) >= _PLANS:
                self._topic_plans.clear()
            self._topic_plans[(given, topic)] = plan  # type: ignore[index]
        return plan

    def audience(
        self,
        actor: Actor,
        channel_: Channel | str,
        contact_ids: Iterable[str],
        *,
        topic: str | None = None,
    ) -> set[str]:
        """The subset of *contact_ids* (any number, streamed) that may be messaged on a channel
        (with *topic*: that topic on the channel, by the rules of :meth:`can_send`).

        Ids that are not contacts of the account are simply not in the result.  With a topic,
        a store that reads both layers at once (:class:`~consentkit.storage.base.TopicReads`)
        answers in one query per chunk of ids; otherwise, and where the topic's class survives
        the channel's unsubscribe, the ids are held in memory and the account's unsubscribed
        pairs of the topic (and of the channel) are read once, a page at a time.
        """
        account = self._account_scope(actor, "filter the audience of the account")
        ch = self._subject(channel_, topic)
        ids = contact_ids_of(contact_ids)
        valid = checked_ids(ids)
        if ch.topic is None:
            return self.store.subscribed_among(account, ch, valid)
        declared = self.topics.get(ch.topic)
        if self._topic_reads is not None and not self.topics.may_survive(ch, declared):
            # Rows 1 to 5 and 10, in one query per chunk of ids.
            return self._topic_reads.subscribed_in_layers(
                account, ch, valid, opt_out_default=declared.default is TopicDefault.OPT_OUT
            )
        return self._topic_audience(account, ch, list(valid))

    def _topic_audience(self, account: str, ch: Channel, ids: list[str]) -> set[str]:
        """The audience of a topic channel: rows 1 to 10 of the truth table, set-based per layer
        (each layer's subscribed ids among the candidates, and its unsubscribed pairs)."""
        declared = self.topics.get(ch.topic or "")
        rules = self.topics
        eligible = self.store.subscribed_among(account, ch.base, ids)
        if rules.may_survive(ch, declared):
            # Rows 6 to 9: a channel unsubscribed by anything but a complaint lets the class
            # through (never-subscribed channels do not: row 10).
            others = set(ids) - eligible
            if others:
                eligible.update(
                    sub.contact_id
                    for sub in self._all_pairs(account, ch.base, SubscriptionState.UNSUBSCRIBED)
                    if sub.contact_id in others and rules.survives_opt_out(ch, declared, sub)
                )
        if declared.default is TopicDefault.OPT_IN:
            return self.store.subscribed_among(account, ch, eligible)
        left = {
            sub.contact_id for sub in self._all_pairs(account, ch, SubscriptionState.UNSUBSCRIBED)
        }
        return eligible - left

    def _all_pairs(
        self, account: str, ch: Channel, state: SubscriptionState
    ) -> Iterator[Subscription]:
        """Every recorded pair of *ch* in *state*, read a page at a time."""
        where = SubscriptionFilter(ch, state, None, None)
        after: str | None = None
        while True:
            page = self.store.list_subscriptions(account, where, after=after, limit=_PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].contact_id

    def list_subscriptions(
        self,
        actor: Actor,
        channel_: Channel | str,
        state: SubscriptionState | str = SubscriptionState.UNSUBSCRIBED,
        *,
        source: Source | str | None = None,
        reason: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        topic: str | None = None,
    ) -> Page[Subscription]:
        """Pairs of one channel (or of a topic on it) in one state (the "filter for unsubscribed
        contacts" view), optionally only those whose last change came from *source* or carried
        *reason*, ordered by contact id, a page at a time."""
        account = self._account_scope(actor, "list the consent of other contacts")
        state = enum_value(SubscriptionState, "state", state)
        if state is SubscriptionState.NEVER_SUBSCRIBED:
            raise ValidationError(
                "state",
                "list SUBSCRIBED or UNSUBSCRIBED pairs; never-subscribed pairs have no record "
                "(list contacts instead)",
            )
        if source is not None:
            source = enum_value(Source, "source", source)
        where = SubscriptionFilter(
            self._subject(channel_, topic), state, source, validate_reason_code(reason)
        )
        limit = check_limit(limit)
        items = self.store.list_subscriptions(
            account, where, after=decode_cursor(cursor), limit=limit + 1
        )
        return page_of(items, limit, lambda sub: sub.contact_id)

    def history(
        self,
        actor: Actor,
        contact_id: str,
        channel_: Channel | str | None = None,
        *,
        topic: str | None = None,
    ) -> list[ConsentEvent]:
        """The audit events of one contact (optionally one channel, or one topic on it), oldest
        first."""
        account = self._contact_scope(actor, contact_id)
        ch = self._optional_subject(channel_, topic)
        events = list(self.store.events(account, contact_id=contact_id, channel=ch))
        if not events and self.store.get_contact(account, contact_id) is None:
            raise UnknownContactError(account, [contact_id])
        return events

    def history_page(
        self,
        actor: Actor,
        contact_id: str,
        channel_: Channel | str | None = None,
        *,
        cursor: str | None = None,
        limit: int = 100,
        topic: str | None = None,
    ) -> Page[ConsentEvent]:
        """The audit events of one contact (optionally one channel), oldest first, a page at a
        time: pass the page's ``next_cursor`` as *cursor* for the next one.

        A page is read as at most ``limit + 1`` events after the cursor's sequence number, so a
        long history is never loaded at once.  Events recorded after a page was read appear on
        a later page (the cursor is a position in the append order, not a snapshot).

        Raises:
            UnknownContactError: there is no such contact.
            NotAuthorizedError: a contact actor asks for another contact's history.
            ValidationError: a bad *cursor* or *limit* (1 to 10,000).
        """
        account = self._contact_scope(actor, contact_id)
        ch = self._optional_subject(channel_, topic)
        limit = check_limit(limit)
        after = _sequence_of(decode_cursor(cursor))
        events = list(
            self.store.events(
                account, contact_id=contact_id, channel=ch, after=after, limit=limit + 1
            )
        )
        if not events and self.store.get_contact(account, contact_id) is None:
            raise UnknownContactError(account, [contact_id])
        return page_of(events, limit, lambda event: str(event.sequence))

    def _optional_subject(self, channel_: object, topic: object) -> Channel | None:
        if channel_ is None:
            if topic is not None:
                raise ValidationError("topic", "name the channel of the topic too")
            return None
        return self._subject(channel_, topic)

    def audit_log(
        self, actor: Actor, *, after: int | None = None, page_size: int = 1000
    ) -> Iterator[ConsentEvent]:
        """Every event of the account in append order, streamed a page at a time.

        Pass the ``sequence`` of the last event you saw as *after* to resume.

        Raises:
            ValidationError: *after* is not a sequence number, or *page_size* is out of range
                (raised by the call itself, before the first event is read).
        """
        account = self._account_scope(actor, "read the account's audit log, only their history")
        page_size = check_limit(page_size)
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**63
        ):
            raise ValidationError(
                "after", f"expected the sequence number of an event (an int >= 0), got {after!r}"
            )
        return self._audit_pages(account, after, page_size)

    def _audit_pages(
        self, account: str, after: int | None, page_size: int
    ) -> Iterator[ConsentEvent]:
        position = after
        while True:
            page = list(self.store.events(account, after=position, limit=page_size))
            yield from page
            if len(page) < page_size:
                return
            position = page[-1].sequence


_PLANS = 256
"""Topic channels a service keeps resolved for can_send (more are resolved again)."""

_PAGE = 1000
"""Pairs per page when a topic's audience reads the unsubscribed pairs of a layer."""


def _sequence_of(key: str | None) -> int | None:
    """The event sequence number a history cursor holds."""
    if key is None:
        return None
    if key.isascii() and key.isdigit() and len(key) <= 19 and int(key) < 2**63:
        return int(key)
    raise ValidationError(
        "cursor", "is not a cursor returned by this listing; start again without one"
    )
