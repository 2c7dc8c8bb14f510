"""The consent service: the one entry point a host app uses.

It ties a :class:`~consentkit.policy.Policy`, a :class:`~consentkit.storage.Store` and a
:class:`~consentkit.clock.Clock` together.  Every mutating method goes through the policy, runs in
one store transaction (all or nothing) and writes one audit event per changed pair.

:class:`ConsentService` is a thin front: each group of its methods lives in a module of its own
(contacts, changes, reads, the change feed, inbound replies, the review queue, trends) over a
shared core and the change engine (``_engine``), which every consent change runs through.
"""

from __future__ import annotations

from consentkit.service._changes import ChangesMixin
from consentkit.service._confirmation import ConfirmationMixin
from consentkit.service._contacts import ContactsMixin
from consentkit.service._erasure import ErasureMixin, ErasureResult
from consentkit.service._feed import ChangesPage, FeedMixin
from consentkit.service._inbound import InboundMixin
from consentkit.service._reads import ReadsMixin
from consentkit.service._records import RecordsMixin
from consentkit.service._results import (
    ChangeResult,
    ContactsResult,
    Page,
    PairRef,
    RefusedPair,
    ReviewResolution,
    SkippedPair,
)
from consentkit.service._review import ReviewMixin
from consentkit.service._sends import SendsMixin
from consentkit.service._trends import TrendsMixin

__all__ = [
    "ChangeResult",
    "ChangesPage",
    "ConsentService",
    "ContactsResult",
    "ErasureResult",
    "Page",
    "PairRef",
    "RefusedPair",
    "ReviewResolution",
    "SkippedPair",
]


class ConsentService(
    ContactsMixin,
    ChangesMixin,
    ReadsMixin,
    FeedMixin,
    InboundMixin,
    ReviewMixin,
    TrendsMixin,
    SendsMixin,
    RecordsMixin,
    ErasureMixin,
    ConfirmationMixin,
):
    """Records and answers per-channel consent for the contacts of many accounts.

    Args:
        store: where state and events live (see :mod:`consentkit.storage`).
        policy: who may do what; :class:`~consentkit.policy.AdminOnlyPolicy` by default.
        clock: the time source; :class:`~consentkit.clock.SystemClock` by default.
        channel_groups: which channels one inbound STOP covers.
        channels: the host's custom channels (``["telegram"]``); with the built-ins, the only
            channel keys the service accepts: any other key is a ValidationError.
        settings: per-account settings (time zone, inbound keywords and replies, spike
            thresholds): one :class:`~consentkit.settings.AccountSettings` for every account, or a
            function from account id to its settings.
        chunk_size: how many contact ids bulk calls pass to the store at once (bounds memory).
        topics: the host's topics (:class:`~consentkit.topics.Topic`): consent per topic inside a
            channel, given as ``topic=`` or as the topic channel ``"sms/promotions"``; any other
            topic key is an :class:`~consentkit.topics.UnknownTopicError`.
        surviving_classes: per channel, the message classes whose topics may still be sent after
            the channel is unsubscribed, e.g. ``{EMAIL: {MessageClass.TRANSACTIONAL}}`` (nothing
            by default; see docs/topics.md).
        revoke_all_exempt: the message classes exempt from the FCC's "revoke all" (e.g.
            ``{MessageClass.INFORMATIONAL}``): their topics keep going after a STOP under the
            ``revoke_all`` opt-out scope, while it is the channel pair's only opt-out.
        erasure_key: the host's secret (at least 16 random bytes) under which
            :meth:`erase_contact` keeps an erased contact's addresses as keyed hashes; None (the
            default) refuses erasures.  Every service over one store must be given the same
            key, or erased addresses are no longer recognised (docs/privacy.md).
    """
