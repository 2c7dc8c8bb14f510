"""The state and helpers every part of the service shares."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from consentkit.channels import (
    DEFAULT_CHANNEL_GROUPS,
    Channel,
    ChannelGroups,
    ChannelRegistry,
)
from consentkit.clock import Clock, SystemClock
from consentkit.erasure import check_erasure_key
from consentkit.errors import (
    NotAuthorizedError,
    ValidationError,
)
from consentkit.inbound import (
    InboundMessage,
    InboundSettings,
    ProviderVerdict,
)
from consentkit.model import (
    Actor,
    ActorKind,
    OptOutOrigin,
    ensure_aware,
    validate_id,
)
from consentkit.policy import AdminOnlyPolicy, Policy
from consentkit.scopes import OptOutScope
from consentkit.service._arguments import check_actor, chunks, iterate_arg
from consentkit.service._engine import ChangeRequest, ChangeRun
from consentkit.service._results import ChangeResult
from consentkit.settings import AccountSettings
from consentkit.storage.base import (
    CHUNK_SIZE,
    Store,
    StoreTransaction,
    TopicReads,
)
from consentkit.topics import MessageClass, Topic, TopicPlan, TopicRules

_FUTURE_TOLERANCE = timedelta(minutes=5)


class ServiceCore:
    """The state every part of the service shares: the store, the policy, the clock, the known
    channels and the settings, with the helpers that check arguments and scopes."""

    def __init__(
        self,
        store: Store,
        *,
        policy: Policy | None = None,
        clock: Clock | None = None,
        channel_groups: ChannelGroups = DEFAULT_CHANNEL_GROUPS,
        settings: AccountSettings | Callable[[str], AccountSettings] | None = None,
        chunk_size: int = CHUNK_SIZE,
        channels: Iterable[Channel | str] = (),
        topics: Iterable[Topic] = (),
        surviving_classes: Mapping[Channel | str, Iterable[MessageClass | str]] | None = None,
        revoke_all_exempt: Iterable[MessageClass | str] = (),
        erasure_key: bytes | None = None,
    ) -> None:
        if not 1 <= chunk_size <= CHUNK_SIZE:
            raise ValidationError("chunk_size", f"must be from 1 to {CHUNK_SIZE}")
        self.store = store
        # Reads of both layers of a topic in one query, where the store has them.
        self._topic_reads: TopicReads | None = store if isinstance(store, TopicReads) else None
        # can_send's resolved topic channels, by (channel key as given, topic key): bounded, and
        # each entry checked against the service's channels and topics (no consent state).
        self._topic_plans: dict[tuple[str, str | None], TopicPlan] = {}
        self.policy: Policy = policy if policy is not None else AdminOnlyPolicy()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.channels = ChannelRegistry(channels)
        if not isinstance(channel_groups, ChannelGroups):
            raise ValidationError("channel_groups", "expected ChannelGroups")
        # Each group names the service's own channels (a key given for a custom phone channel
        # becomes that channel, with its address kind).
        self.channel_groups = ChannelGroups(
            [[self.channels.resolve(m, "channel_groups") for m in g] for g in channel_groups.groups]
        )
        self._settings = AccountSettings() if settings is None else settings
        self._chunk_size = chunk_size
        # The secret of erased addresses' keyed hashes (docs/privacy.md): None, no erasures.
        self._erasure_key = check_erasure_key(erasure_key)
        surviving = {} if surviving_classes is None else surviving_classes
        if not isinstance(surviving, Mapping):
            raise ValidationError(
                "surviving_classes",
                f"expected a mapping {{channel: message classes}}, got {type(surviving).__name__}",
            )
        by_channel: dict[Channel, list[object]] = {}
        for key, classes in surviving.items():  # keys that name one channel are merged
            given = [classes] if isinstance(classes, str | MessageClass) else classes
            by_channel.setdefault(self.channels.resolve(key, "surviving_classes"), []).extend(
                iterate_arg("surviving_classes", given, "message classes")
            )
        self.topics = TopicRules(topics, by_channel, revoke_all_exempt)  # converters check them
        if isinstance(self._settings, AccountSettings):
            # A sender mapped to a topic nobody declared would silently cover the whole group.
            for recipient, topic in self._settings.inbound.senders.items():
                if topic not in self.topics.by_key:
                    raise ValidationError(
                        "senders",
                        f"{recipient!r} is mapped to {topic!r}, which is not a declared topic "
                        f"(declared: {', '.join(sorted(self.topics.by_key)) or 'none'})",
                    )

    def settings_for(self, account: str) -> AccountSettings:
        """The settings of *account*."""
        if isinstance(self._settings, AccountSettings):
            return self._settings
        chosen = self._settings(account)
        if not isinstance(chosen, AccountSettings):
            raise ValidationError(
                "settings", f"the settings function returned {chosen!r}, not AccountSettings"
            )
        return chosen

    # ------------------------------------------------------------------ helpers

    def _channels(self, channels: object, topic: object = None) -> tuple[Channel, ...]:
        """The channels (or topic channels) a change names; *topic* moves each to that topic."""
        if isinstance(channels, (str, Channel)):
            channels = [channels]
        items = iterate_arg(
            "channels", channels, "a channel or an iterable of channels, e.g. [SMS]"
        )
        result = tuple(
            dict.fromkeys(
                self.channels.resolve_subject(c, self.topics, "channels", topic) for c in items
            )
        )
        if not result:
            raise ValidationError("channels", "name at least one channel, e.g. [SMS]")
        return result

    def _subject(self, channel_: object, topic: object = None) -> Channel:
        """The channel, or topic channel, one read names."""
        return self.channels.resolve_subject(channel_, self.topics, "channel", topic)

    def _now(self) -> datetime:
        return ensure_aware("clock.now()", self.clock.now())

    def _occurred(self, field: str, occurred_at: datetime | None, now: datetime) -> datetime:
        if occurred_at is None:
            return now
        ensure_aware(field, occurred_at)
        if occurred_at > now + _FUTURE_TOLERANCE:
            raise ValidationError(
                field, f"{occurred_at.isoformat()} is in the future; pass when it happened"
            )
        # A time a little ahead of this clock is another clock's skew: nothing can have happened
        # after it was received, so it counts as now.  Kept as given, it would outrank changes
        # made in the next minutes (a skewed START would swallow a real STOP).
        return min(occurred_at, now)

    def _read_scope(self, actor: Actor) -> str:
        check_actor(actor)
        refusal = self.policy.check_read(actor)
        if refusal is not None:
            raise refusal
        return actor.account

    def _contact_scope(self, actor: Actor, contact_id: object) -> str:
        """Scope of a read of one contact's records: a contact actor reads only their own."""
        account = self._read_scope(actor)
        validate_id("contact_id", contact_id)
        if actor.kind is ActorKind.CONTACT and contact_id != actor.id:
            raise NotAuthorizedError(f"contact {actor.id!r} may only read their own consent")
        return account

    def _account_scope(self, actor: Actor, what: str) -> str:
        """Scope of a read over the whole account, which a contact actor may not make."""
        account = self._read_scope(actor)
        if actor.kind is ActorKind.CONTACT:
            raise NotAuthorizedError(f"contacts may not {what}")
        return account

    # ------------------------------------------------------------------ contacts

    def _group(self, ch: Channel) -> tuple[Channel, ...]:
        """The channels of *ch*'s group, *ch* first: what a STOP on it covers by default."""
        return (ch, *sorted(self.channel_groups.group_of(ch) - {ch}))

    def _scope(
        self, settings: InboundSettings, message: InboundMessage
    ) -> tuple[tuple[Channel, ...], OptOutOrigin | None, OptOutScope]:
        """What an opt-out in *message* covers, by the account's scope at the message's
        ``received_at`` (docs/topics.md): the pairs' channels, its own channel's first, the
        origin it records (``REVOKE_ALL`` under that scope, the contact's own request which
        exempt topics survive; None for the contact's, ``CONTACT``), and the scope that chose
        them.  A topic nobody declared, or a scope that finds no topic, covers the channel
        group (and says ``GROUP``): the safe side."""
        ch = message.channel
        scope = settings.scope_at(message.received_at)
        if message.verdict is ProviderVerdict.COMPLAINT and scope in (
            OptOutScope.TOPIC,
            OptOutScope.SENDER,
        ):
            scope = OptOutScope.GROUP  # a spam report stops everything on the channel
        if scope is OptOutScope.CHANNEL:
            return (ch,), None, scope
        if scope is OptOutScope.REVOKE_ALL:
            everything = (ch, *sorted(set(self.channels.known.values()) - {ch}))
            return everything, OptOutOrigin.REVOKE_ALL, scope
        group = self._group(ch)
        topic = (
            message.topic
            if scope is OptOutScope.TOPIC
            else settings.senders.get(message.recipient or "")
            if scope is OptOutScope.SENDER
            else None
        )
        if topic is None or topic not in self.topics.by_key:
            return group, None, OptOutScope.GROUP
        return tuple(c.with_topic(topic) for c in group), None, scope

    def _apply_in_tx(
        self, tx: StoreTransaction, request: ChangeRequest, contact_ids: Iterable[str]
    ) -> ChangeResult:
        """The heart of every change: check, decide per pair, write, inside *tx*."""
        run = ChangeRun(self.policy, self._now, tx, request)
        for chunk in chunks(contact_ids, self._chunk_size):
            run.chunk(chunk)
        return run.result()
